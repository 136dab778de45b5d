"""What a worker checks before it takes any work: Redis (reachable, password accepted), the store
(endpoint, credentials, bucket: a probe object written, read back and deleted), and, on a run worker, its
dataset cache folder and heartbeat file (writable).

Why at start: a worker that comes up "ready" with a wrong S3 secret takes runs and fails each one; one
that cannot write its cache fails every run at its first download. Checked before the first message is
consumed, the worker exits instead, with one line naming what is wrong and a non-zero status, which
compose's restart policy and `docker compose ps`/`logs` show (services.app calls `startup_checks` from
Celery's `worker_init`).

A cache disk with too little room is a warning line only: which datasets the runs will need (and their
sizes) is not known here, and those the cache holds still serve; `fetch_dataset` refuses each download
that does not fit (services.datasets.CacheFull), and the run is handed back.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

from colormamba.env import redact_url
from colormamba.storage import StorageError, probe_key
from colormamba.storage_s3 import S3CredentialsRefused, open_store
from services.coord import BrokerUnreachable, connect
from services.datasets import CACHE_HEADROOM
from services.settings import DATA_CACHE, HEARTBEAT_FILE, Settings
from services.studies import store_url

STARTUP_FAILED = 3  # the worker's exit status when a check fails (as submit.py's "unreachable")


class StartupCheckFailed(RuntimeError):
    """A worker must not take work: the message says what is wrong and which setting to look at."""


def check_broker(url: str) -> None:
    try:
        connect(url).close()
    except BrokerUnreachable as exc:
        raise StartupCheckFailed(str(exc)) from None


def check_store(url: str, owner: str) -> None:
    """Write, read back and delete a probe object: proves endpoint, credentials, bucket and permissions."""
    key = probe_key(f"{owner}-{uuid.uuid4().hex[:12]}")
    payload = f"start-up check of {owner}".encode()
    try:
        store = open_store(url)
        store.put_bytes(key, payload)
        if store.get_bytes(key) != payload:
            raise StorageError(f"{store!r}: the probe object {key} read back different bytes")
        store.delete(key)
    except S3CredentialsRefused as exc:  # its message names the credentials and their variables
        raise StartupCheckFailed(str(exc)) from None
    except (StorageError, KeyError) as exc:
        raise StartupCheckFailed(f"store {redact_url(url)} unusable: {exc}") from None
    except OSError as exc:  # a folder store that cannot be written
        raise StartupCheckFailed(f"store {redact_url(url)} not writable: {exc}") from None


def check_writable_folder(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".colormamba-check-"):
            pass
    except OSError as exc:
        raise StartupCheckFailed(f"{what} {folder} is not writable ({exc})") from None


def cache_room_warning(folder: Path) -> str | None:
    """A line when the cache's disk has less room than any download leaves free (CACHE_HEADROOM), so that
    every dataset it does not hold yet will be refused; None otherwise."""
    free = shutil.disk_usage(folder).free
    if free >= CACHE_HEADROOM:
        return None
    return (f"the dataset cache {folder} ({DATA_CACHE.name}) has {free:,} bytes free, less than the "
            f"{CACHE_HEADROOM:,} a download leaves free: runs on a dataset it does not hold yet will be "
            "handed back; free space there or point the variable at a larger disk")  # fmt: skip


def startup_checks(config: Settings, queues: Iterable[str], owner: str) -> None:
    """All checks of a worker consuming `queues`, in the order a user would fix them.

    Raises:
        StartupCheckFailed: the first failed check, in one line.
    """
    check_broker(config.redis_url)
    try:
        url = store_url()
    except ValueError as exc:
        raise StartupCheckFailed(str(exc)) from None
    check_store(url, owner)
    if config.run_queue in set(queues):
        check_writable_folder(config.data_cache, f"the dataset cache ({DATA_CACHE.name})")
        warning = cache_room_warning(config.data_cache)
        if warning:  # one line on stderr, as services.app prints its start-up lines
            print(f"colormamba worker {owner}: warning: {warning}", file=sys.stderr, flush=True)
    if config.heartbeat_file:
        check_writable_folder(Path(config.heartbeat_file).parent, f"the folder of {HEARTBEAT_FILE.name}")
