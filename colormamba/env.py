"""The environment variables the library reads, each declared once with its default and meaning, and
the one helper that hides passwords in URLs before they are printed.

Why declared objects and not `os.environ.get(name, default)` at each use: the job suite's settings module
(services.settings) lists every variable of the project with its default and meaning, README's table is
tested against that list, and compose's environment too. The library does not import the job suite, so
the variables it reads itself (S3 access in storage_s3, the VGG weights file in losses.vgg, Triton's
interpreter switch in ops.scan_triton) are declared here, in a module that imports nothing heavy, and
services.settings lists them with its own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"


@dataclass(frozen=True)
class EnvVar:
    """One environment variable: an empty value counts as unset (compose writes `NAME: ""` for "the
    default"), and `fallback` names another variable read when this one is unset."""

    name: str
    default: str
    meaning: str
    fallback: str | None = None

    def read(self, env: Mapping[str, str] | None = None) -> str:
        """The value in `env` (the process environment when None), else the fallback's, else the default."""
        env = os.environ if env is None else env
        value = env.get(self.name, "").strip()
        if not value and self.fallback:
            value = env.get(self.fallback, "").strip()
        return value or self.default

    def flag(self, env: Mapping[str, str] | None = None) -> bool:
        """The value read as a yes/no switch (1, true, yes, on)."""
        return self.read(env).lower() in ("1", "true", "yes", "on")


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<password>[^@/\s]*)@")


def redact_url(url: str) -> str:
    """`url` with the password of its user part replaced by `***` (`redis://:secret@host:6379/0` ->
    `redis://:***@host:6379/0`); a URL without a password comes back unchanged. Every message or log
    line that shows a broker or store address goes through this."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}"))


def redact_text(text: str) -> str:
    """Every `scheme://user:password@` inside a longer text (an exception's message) with the password
    replaced by `***`."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)


# S3 access (storage_s3.s3_from_env).
S3_ENDPOINT = EnvVar("COLORMAMBA_S3_ENDPOINT", "", "S3/MinIO endpoint, `host:port` or `http(s)://host:port`; "
                     "set, it makes the store `s3://COLORMAMBA_S3_BUCKET`")  # fmt: skip
S3_ACCESS_KEY = EnvVar("COLORMAMBA_S3_ACCESS_KEY", "", "S3 access key (else `AWS_ACCESS_KEY_ID`)",
                       fallback="AWS_ACCESS_KEY_ID")  # fmt: skip
S3_SECRET_KEY = EnvVar("COLORMAMBA_S3_SECRET_KEY", "", "S3 secret key (else `AWS_SECRET_ACCESS_KEY`)",
                       fallback="AWS_SECRET_ACCESS_KEY")  # fmt: skip
S3_BUCKET = EnvVar("COLORMAMBA_S3_BUCKET", "colormamba", "the store's bucket (compose's minio-init "
                   "creates it)")  # fmt: skip
S3_SECURE = EnvVar("COLORMAMBA_S3_SECURE", "0", "1: TLS when the endpoint has no scheme")
S3_REGION = EnvVar("COLORMAMBA_S3_REGION", "", "S3 region (AWS needs it; MinIO ignores it)")
S3_RETRY_SECONDS = EnvVar("COLORMAMBA_S3_RETRY_SECONDS", "60", "seconds S3 outages are retried (with "
                          "backoff) before an operation fails with \"unreachable\"")  # fmt: skip
S3_VARIABLES = (S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY, S3_BUCKET, S3_SECURE, S3_REGION, S3_RETRY_SECONDS)

VGG_WEIGHTS = EnvVar("COLORMAMBA_VGG_WEIGHTS", "", "the VGG-19 ImageNet weights file of the `vgg` loss term "
                     "(unset: torch hub's checkpoint folder under `$TORCH_HOME`)")  # fmt: skip
# Triton's own switch, read by ops.scan_triton too (to explain why the scan refuses CUDA tensors under it)
TRITON_INTERPRET = EnvVar("TRITON_INTERPRET", "0", "1: Triton's CPU interpreter (tests); the `triton` scan "
                          "then refuses CUDA tensors")  # fmt: skip

# Provenance (colormamba.provenance): the images have no .git, so their build bakes the commit in.
GIT_COMMIT = EnvVar("COLORMAMBA_GIT_COMMIT", "", "the commit the image was built from (`<sha>` or "
                    "`<sha>-dirty`), for runs' provenance where no git checkout is at hand; baked in by "
                    "the images' build argument `GIT_COMMIT`, never set by compose")  # fmt: skip

LIBRARY_VARIABLES = (*S3_VARIABLES, VGG_WEIGHTS, TRITON_INTERPRET, GIT_COMMIT)
