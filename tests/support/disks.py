"""A small disk of a test's own: a tmpfs mounted on a folder (mounting needs root, or CAP_SYS_ADMIN in a
container), so that a write really fails with ENOSPC where a test needs a full disk."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


class MountRefused(RuntimeError):
    """This machine does not let us mount a tmpfs (not root, or a container without the capability)."""


@contextlib.contextmanager
def tmpfs(point: Path, size: int | str, inodes: int | None = None) -> Iterator[Path]:
    """`point` (created) on a fresh tmpfs of `size` bytes (or a mount option such as "64k") and at most
    `inodes` files and folders, while inside; raises MountRefused where mounting is not permitted."""
    point.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (f",nr_inodes={inodes}" if inodes is not None else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise MountRefused(f"cannot mount a tmpfs on {point}: {proc.stderr.strip() or proc.returncode}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(folder: Path) -> int:
    """Write zeros into `folder` until its disk is full; returns the bytes written."""
    written = 0
    with contextlib.suppress(OSError), (folder / "filler").open("wb") as fh:
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()
            written += 4096
    return written
