#!/bin/sh
# One-shot setup of MinIO (compose service `minio-init`, image quay.io/minio/mc): the job suite's bucket
# and the user that workers and submit.py log in with, allowed that bucket only (the root user stays with
# MinIO). Safe to run again: every step is "create or update".
#
# Environment: MINIO_ROOT_USER, MINIO_ROOT_PASSWORD, COLORMAMBA_S3_BUCKET, COLORMAMBA_S3_ACCESS_KEY,
# COLORMAMBA_S3_SECRET_KEY. MinIO asks for secrets of 8 characters or more.
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${COLORMAMBA_S3_BUCKET:?}"
: "${COLORMAMBA_S3_ACCESS_KEY:?}" "${COLORMAMBA_S3_SECRET_KEY:?}"
if [ "$COLORMAMBA_S3_ACCESS_KEY" = "$MINIO_ROOT_USER" ]; then
    echo "minio-init: COLORMAMBA_S3_ACCESS_KEY must differ from MINIO_ROOT_USER" >&2
    exit 1
fi

mc alias set store http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "store/$COLORMAMBA_S3_BUCKET"

policy_file=/tmp/colormamba-policy.json
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
mc admin user add store "$COLORMAMBA_S3_ACCESS_KEY" "$COLORMAMBA_S3_SECRET_KEY"
# attaching a policy that is already attached is an error for mc; that one is fine here
if ! out=$(mc admin policy attach store colormamba-bucket --user "$COLORMAMBA_S3_ACCESS_KEY" 2>&1); then
    case "$out" in
        *already*) ;;
        *) echo "$out" >&2; exit 1 ;;
    esac
fi
echo "minio-init: bucket $COLORMAMBA_S3_BUCKET and user $COLORMAMBA_S3_ACCESS_KEY ready"
