#!/usr/bin/env python3
"""How fast the command line answers the commands that do not train: `--help`, `status STUDY` and `list`
against a local (folder) store, each a fresh interpreter as a person runs it, median of `--repeat` runs.

Before the CLI imported only what each command needs, every command paid for `import torch`; a before
and after cannot run in one checkout, so the same run times `python -c "import torch"` as the baseline
(what the old CLI paid on top of its own work). Prints one JSON line per command:

    {"bench": "cli", "command": "status", "median_s": 0.31, "min_s": 0.29, "repeat": 5, "cpus": 2}

    python benchmarks/bench_cli.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBMIT = REPO / "jobs" / "submit.py"
DEMO = REPO / "jobs" / "specs" / "demo.yaml"


def seed_store(root: Path) -> None:
    """A folder store holding the demo study, its runs spread over four states in turn."""
    sys.path.insert(0, str(REPO))
    from colormamba.storage import LocalStorage
    from services.runs import State, transition
    from services.spec import load_spec
    from services.studies import save_study

    store = LocalStorage(root)
    study = load_spec(DEMO)
    save_study(store, study)
    paths = {State.QUEUED: [State.QUEUED], State.RUNNING: [State.QUEUED, State.RUNNING],
             State.SUCCEEDED: [State.QUEUED, State.RUNNING, State.SUCCEEDED],
             State.FAILED: [State.QUEUED, State.RUNNING, State.FAILED]}  # fmt: skip
    for run, steps in zip(study.runs, itertools.cycle(paths.values())):
        status = None
        for state in steps:
            status = transition(store, study.name, run.run_id, status, state, epoch=1, epochs=2)


def timed(argv: list[str], env: dict[str, str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLORMAMBA_")}
    with tempfile.TemporaryDirectory() as tmp:
        seed_store(Path(tmp))
        env["COLORMAMBA_STORE"] = tmp
        cases = {
            "import torch (baseline: what the old CLI paid)": [sys.executable, "-c", "import torch"],
            "--help": [sys.executable, str(SUBMIT), "--help"],
            "status": [sys.executable, str(SUBMIT), "status", "demo"],
            "list": [sys.executable, str(SUBMIT), "list"],
        }
        for name, argv in cases.items():
            times = timed(argv, env, args.repeat)
            print(json.dumps({"bench": "cli", "command": name, "median_s": round(statistics.median(times), 3),
                              "min_s": round(min(times), 3), "repeat": args.repeat,
                              "cpus": os.cpu_count()}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
