"""`jobs/submit.py` as a user runs it: a real subprocess, with none of this process's COLORMAMBA_
variables unless a test passes them, and `status --watch` in the background with its renders read back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from colormamba.storage import LocalStorage
from tests.support.polling import wait_until
from tests.support.servers import REPO

SUBMIT = REPO / "jobs" / "submit.py"
DEMO = REPO / "jobs" / "specs" / "demo.yaml"


def demo_with_seeds(tmp: Path, seeds: list[int]) -> Path:
    """The demo spec with other seeds, written under `tmp`: for tests that pin a study's shape (which run
    is running, which failed) rather than follow the demo's seeds."""
    import yaml

    spec = yaml.safe_load(DEMO.read_text()) | {"seeds": seeds}
    path = tmp / "demo.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))  # keeps the configurations' order
    return path

def submit(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("COLORMAMBA_")}
    return subprocess.run(
        [sys.executable, str(SUBMIT), *args], capture_output=True, text=True, timeout=timeout,
        env={**base, **(env or {})}, cwd=REPO, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def watch(store: Any, out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`status demo --watch` in the background, its stdout going to a file the test can read meanwhile;
    `store` is a folder store, or an S3 store that `env`'s COLORMAMBA_S3_* variables reach."""
    where = str(store.root) if isinstance(store, LocalStorage) else f"s3://{store.bucket}"
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLORMAMBA_")}
    env |= {"COLORMAMBA_STORE": where, "PYTHONUNBUFFERED": "1", **extra}
    with out.open("w") as fh:
        return subprocess.Popen(
            [sys.executable, str(SUBMIT), "status", "demo", "--watch", *args], cwd=REPO, env=env,
            stdout=fh, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip


def renders(out: Path) -> list[str]:
    """The tables printed so far, one string each (every render starts with its summary line)."""
    text = out.read_text()
    return ["study demo:" + block for block in text.split("study demo:")[1:]]


def wait_for_render(out: Path, predicate: Any, proc: subprocess.Popen, timeout: float = 30) -> str:
    """The latest render of `watch` that satisfies `predicate`; fails at once if the command exits."""

    def found() -> str | None:
        matching = [r for r in renders(out) if predicate(r)]
        if matching:
            return matching[-1]
        assert proc.poll() is None, f"exited early with {proc.returncode}: {out.read_text()}"
        return None

    return wait_until("such a render", found, timeout, 0.05, out.read_text)
