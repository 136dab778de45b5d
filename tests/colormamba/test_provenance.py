"""Provenance: the commit from git in a checkout, else from the image's variable, else unknown (never an
error); the scan backend as it runs ("auto" resolved); plain values that a checkpoint can carry."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import colormamba
from colormamba import checkpoint
from colormamba.config import RunConfig
from colormamba.ops import available_backends
from colormamba.provenance import COMPARED, GIT_COMMIT_ENV, git_state, run_provenance

ROOT = Path(__file__).resolve().parents[2]


def test_the_commit_comes_from_git_in_a_checkout() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()

    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    assert git_state() == (git("rev-parse", "HEAD"), dirty)


def test_without_git_the_commit_comes_from_the_environment_or_is_unknown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable: as in the images
    monkeypatch.delenv(GIT_COMMIT_ENV, raising=False)
    assert git_state() == (None, None)
    monkeypatch.setenv(GIT_COMMIT_ENV, "0123abcd")
    assert git_state() == ("0123abcd", False)
    monkeypatch.setenv(GIT_COMMIT_ENV, "0123abcd-dirty")  # as `git describe --always --dirty` writes it
    assert git_state() == ("0123abcd", True)


def test_auto_is_resolved_to_the_backend_that_runs_and_the_record_loads_safely(tmp_path: Path) -> None:
    cfg = RunConfig(dataset="-", scan_backend="auto", precision="bf16", compile=True)
    record = run_provenance(cfg, torch.device("cpu"))
    assert record["scan_backend"] == available_backends("cpu", torch.float32)[0] != "auto"
    assert run_provenance(RunConfig(dataset="-", scan_backend="reference"), torch.device("cpu"))[
        "scan_backend"
    ] == "reference"
    assert record["version"] == colormamba.__version__
    assert record["torch"] == torch.__version__ and record["cuda"] == torch.version.cuda
    assert record["device_name"].startswith("CPU")
    assert (record["precision"], record["compile"], record["channels_last"]) == ("bf16", True, False)
    assert set(COMPARED) | {"git_dirty"} == set(record)
    # checkpoints are read with weights_only=True: the record must be plain values
    again = checkpoint.from_bytes(checkpoint.to_bytes({"provenance": record}), "test")
    assert again["provenance"] == record
    with pytest.raises(ValueError, match="scan_backend: must be one of auto, "):  # before anything runs
        RunConfig(dataset="-", scan_backend="fastest")
