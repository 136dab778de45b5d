#!/bin/sh
# One-shot setup of MinIO (compose service `minio-init`, image quay.io/minio/mc): the job suite's bucket
# and the user that workers and submit.py log in with, allowed that bucket only (the root user stays with
# MinIO). Safe to run again: every step is "create or update".
#
# Environment: MINIO_ROOT_USER, MINIO_ROOT_PASSWORD, COLORMAMBA_S3_BUCKET, COLORMAMBA_S3_ACCESS_KEY,
# COLORMAMBA_S3_SECRET_KEY. MinIO asks for secrets of 8 characters or more.
#
# No secret goes on an mc command line (every user of the host sees those in `ps`): `mc alias set ALIAS URL`
# and `mc admin user add ALIAS ACCESSKEY` read the keys they are not given from standard input, a line each
# (mc's "piped keys" form), here from a here-document. Not MC_HOST_<alias>: mc splits that URL with a regular
# expression, no %-decoding, and reads a second ":" as the start of a session token.
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${COLORMAMBA_S3_BUCKET:?}"
: "${COLORMAMBA_S3_ACCESS_KEY:?}" "${COLORMAMBA_S3_SECRET_KEY:?}"
if [ "$COLORMAMBA_S3_ACCESS_KEY" = "$MINIO_ROOT_USER" ]; then
    echo "minio-init: COLORMAMBA_S3_ACCESS_KEY must differ from MINIO_ROOT_USER" >&2
    exit 1
fi
one_line() { # NAME VALUE: mc reads each key as one line
    case "$2" in
        *'
'*) echo "minio-init: $1 must be one line" >&2; exit 1 ;;
    esac
}
one_line MINIO_ROOT_USER "$MINIO_ROOT_USER"
one_line MINIO_ROOT_PASSWORD "$MINIO_ROOT_PASSWORD"
one_line COLORMAMBA_S3_ACCESS_KEY "$COLORMAMBA_S3_ACCESS_KEY"
one_line COLORMAMBA_S3_SECRET_KEY "$COLORMAMBA_S3_SECRET_KEY"

mc alias set store http://minio:9000 <<EOF
$MINIO_ROOT_USER
$MINIO_ROOT_PASSWORD
EOF
mc mb --ignore-existing "store/$COLORMAMBA_S3_BUCKET"

policy_file=${TMPDIR:-/tmp}/colormamba-policy.json
cat >"$policy_file" <<EOF
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:*"],
      "Resource": ["arn:aws:s3:::$COLORMAMBA_S3_BUCKET", "arn:aws:s3:::$COLORMAMBA_S3_BUCKET/*"]
    }
  ]
}
EOF
mc admin policy create store colormamba-bucket "$policy_file"
mc admin user add store "$COLORMAMBA_S3_ACCESS_KEY" <<EOF
$COLORMAMBA_S3_SECRET_KEY
EOF
# attaching a policy that is already attached is an error for mc; that one is fine here
if ! out=$(mc admin policy attach store colormamba-bucket --user "$COLORMAMBA_S3_ACCESS_KEY" 2>&1); then
    case "$out" in
        *already*) ;;
        *) echo "$out" >&2; exit 1 ;;
    esac
fi
echo "minio-init: bucket $COLORMAMBA_S3_BUCKET and user $COLORMAMBA_S3_ACCESS_KEY ready"
