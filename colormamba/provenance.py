"""Provenance: which code, software stack, kernels and device computed a run.

Numbers of one study are comparable only when its runs were computed alike: the same code (package version,
git commit), numerical stack (torch, CUDA), scan implementation (the backends agree to float tolerance, not
bit for bit), device, and the settings that change the arithmetic (precision, compile, channels-last,
deterministic algorithms). Every run records this dict with its results and in its checkpoints; a study's
report compares it across runs (`COMPARED`) and warns when they differ.

The commit comes from git when the package is imported from a git checkout, else from the environment
variable `GIT_COMMIT_ENV`, which the images bake in at build time (they carry no `.git`); neither is an
error: the commit is then recorded as unknown (None).
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from colormamba import __version__
from colormamba.env import GIT_COMMIT
from colormamba.ops import resolve_backend

if TYPE_CHECKING:
    from colormamba.config import RunConfig

GIT_COMMIT_ENV = GIT_COMMIT.name  # "<sha>", or "<sha>-dirty" as `git describe --dirty` writes it
DIRTY_SUFFIX = "-dirty"
GIT_TIMEOUT_S = 10
_PACKAGE_DIR = Path(__file__).resolve().parent

# The fields a report compares across runs: all but `git_dirty`. A dirty flag says nothing by itself about
# whether two runs ran the same code (two dirty trees of one commit may differ, a dirty and a clean one may
# not), so the report names the runs of modified trees on a line of its own instead.
COMPARED = (
    "version",
    "git_commit",
    "python",
    "torch",
    "cuda",
    "scan_backend",
    "device_name",
    "precision",
    "compile",
    "channels_last",
    "deterministic",
)


def _git(*args: str) -> str | None:
    """Output of a git command run in the package's folder, or None (no git, not a checkout, an error)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(_PACKAGE_DIR), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the code that runs.

    From git when this package is the `colormamba/` folder of a git checkout (an installed copy inside
    some other repository, e.g. a virtual environment in it, is not); dirty means tracked files differ
    from the commit (untracked files are ignored, as `git describe --dirty` does). Otherwise from
    COLORMAMBA_GIT_COMMIT; otherwise (None, None).
    """
    top = _git("rev-parse", "--show-toplevel")
    if top is not None and (Path(top) / "colormamba").resolve() == _PACKAGE_DIR:
        commit = _git("rev-parse", "HEAD")
        changes = _git("status", "--porcelain", "--untracked-files=no")
        if commit:
            return commit, None if changes is None else bool(changes)
    baked = GIT_COMMIT.read()
    if baked:
        return baked.removesuffix(DIRTY_SUFFIX), baked.endswith(DIRTY_SUFFIX)
    return None, None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU ({line.split(':', 1)[1].strip()})"
    except OSError:
        pass
    return f"CPU ({platform.processor() or platform.machine()})"


def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device, else the CPU's model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_name()


def run_provenance(cfg: RunConfig, device: torch.device) -> dict[str, Any]:
    """What computes a run of `cfg` on `device` in this process (plain JSON-ready values).

    `scan_backend` is the backend that runs, "auto" resolved: SS2D hands the scan float32 tensors whatever
    the precision, so it is resolved for float32 on `device`.
    """
    commit, dirty = git_state()
    return {
        "version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # a str subclass that weights_only loading refuses
        "cuda": torch.version.cuda,  # None for a CPU build of torch
        "scan_backend": resolve_backend(cfg.scan_backend, device, torch.float32),
        "device_name": device_name(device),
        "precision": cfg.precision,
        "compile": cfg.compile,
        "channels_last": cfg.channels_last,
        "deterministic": cfg.deterministic,
    }
