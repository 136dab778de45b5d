"""Where a run's artifacts go: a small key/value storage interface and its local-folder implementation.

Training and evaluation only ever see this interface, so the same code writes to a folder (`--local`,
tests) or to S3/MinIO (the job suite adds that implementation). Keys follow the bucket layout of
docs/system.md, e.g. `checkpoints/<study>/<run>/last.pt`; this module is the one place that spells them
(the prefixes below, `RunLocation` for a run's keys), for the library and the job suite alike.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}$")


class StorageError(RuntimeError):
    """A storage operation failed for a reason other than a missing object."""


class LocalWriteError(OSError):
    """Writing a local file failed (a full disk, a folder that may not be written, a file where a folder
    should be). It names the file, so that a command line tells "cannot write PATH" apart from a store it
    cannot reach; `errno` and `strerror` are the cause's."""

    def __init__(self, path: str | Path, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def write_files_atomically(files: Mapping[Path, bytes]) -> None:
    """Write every file or none: each goes to a hidden temporary name beside its target, flushed to disk,
    and only once all are written are they renamed over their targets (os.replace, atomic on POSIX). On
    a failure (a full disk) the temporary files are removed and the targets are as they were, so that a
    reader never sees a partial file nor a mix of new and old files.

    Raises:
        LocalWriteError: naming the target that could not be written.
    """
    staged: list[tuple[str, Path]] = []
    target = Path()
    try:
        for target, data in files.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            staged.append((tmp, target))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        for tmp, target in staged:
            os.replace(tmp, target)
    except BaseException as exc:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, LocalWriteError):
            raise LocalWriteError(target, exc) from exc
        raise


class ObjectNotFound(KeyError):
    """The key does not exist in the store."""

    def __str__(self) -> str:
        return f"object not found: {self.args[0]}"


def check_name(name: str, what: str) -> str:
    """Validate a study/run/dataset name that becomes part of an object key.

    Names are one path segment: letters, digits and `._=+-`, not starting with a dot, at most 128
    characters, so that no name can escape its prefix (`..`, `/`) or collide with the layout.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"invalid {what} {name!r}: use 1-128 characters from letters, digits and '._=+-', "
            "starting with a letter or digit, without '..' or '/'"
        )
    return name


def check_key(key: str) -> str:
    """Validate an object key: relative, '/'-separated, no empty, '.' or '..' segments."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid storage key {key!r}")
    return key


@runtime_checkable
class Storage(Protocol):
    """Objects addressed by '/'-separated keys. Writes are atomic: a reader sees the old or the new
    object, never a partial one (checkpoints are read back after crashes)."""

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...


class LocalStorage:
    """A folder as the store: key `a/b/c` is the file `<root>/a/b/c`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """The file behind a key (for callers that want to show the user where an artifact is)."""
        return self.root / check_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        write_files_atomically({self.path(key): data})  # hidden temporary names: `list` skips them

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageError(f"cannot read {self.path(key)}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix.rstrip("/") if prefix else self.root
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if not Path(k).name.startswith("."))

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)


# The top-level prefixes of the layout (docs/system.md).
DATASETS, STUDIES, RUNS, CHECKPOINTS, REPORTS = "datasets", "studies", "runs", "checkpoints", "reports"
# The checkpoints a run keeps (best.pt: best on the selection split; last.pt), the ones it can be scored with
CHECKPOINT_KINDS = ("best", "last")
PROBES = "probes"  # a worker's start-up check writes and deletes one object here


def dataset_prefix(name: str) -> str:
    """`datasets/<name>`: a dataset's files and its manifest."""
    return f"{DATASETS}/{check_name(name, 'dataset name')}"


def manifest_key(name: str) -> str:
    return f"{dataset_prefix(name)}/manifest.json"


def spec_key(study: str) -> str:
    """`studies/<study>/spec.json`: the validated spec a study was submitted with."""
    return f"{STUDIES}/{check_name(study, 'study name')}/spec.json"


def report_prefix(study: str) -> str:
    """`reports/<study>`: the aggregator's report files."""
    return f"{REPORTS}/{check_name(study, 'study name')}"


def probe_key(owner: str) -> str:
    """A throw-away object that proves the store takes writes and deletes (a worker's start-up check)."""
    return check_key(f"{PROBES}/{owner}")


@dataclass(frozen=True)
class RunLocation:
    """The keys of one run's artifacts (docs/system.md's layout)."""

    study: str
    run: str

    def __post_init__(self) -> None:
        check_name(self.study, "study name")
        check_name(self.run, "run name")

    @property
    def checkpoint_prefix(self) -> str:
        return f"{CHECKPOINTS}/{self.study}/{self.run}"

    @property
    def artifact_prefix(self) -> str:
        return f"{RUNS}/{self.study}/{self.run}"

    def checkpoint(self, which: str) -> str:
        """`which` is one of CHECKPOINT_KINDS."""
        if which not in CHECKPOINT_KINDS:
            raise ValueError(f"checkpoint: must be one of {', '.join(CHECKPOINT_KINDS)}, got {which!r}")
        return f"{self.checkpoint_prefix}/{which}.pt"

    def artifact(self, name: str) -> str:
        """A file of the run's results: status.json, metrics.json, history.csv, per_image.csv, samples/..."""
        return check_key(f"{self.artifact_prefix}/{name}")

    @property
    def status_key(self) -> str:
        """The run's public record (written only through services.runs)."""
        return self.artifact("status.json")

    @property
    def plan_key(self) -> str:
        """What a worker executes (immutable once submitted)."""
        return self.artifact("run.json")
