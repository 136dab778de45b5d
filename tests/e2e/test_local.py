"""`jobs/submit.py --local` as a user runs it (README's first command): the whole study on this machine,
one run at a time or several at once, each in its own process; what it writes and prints."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from colormamba.storage import LocalStorage, RunLocation
from services.epoch_log import epoch_line
from services.spec import load_spec
from services.studies import read_status
from tests.support.submit import DEMO, submit

QUICK = {"epochs": 3, "batch_size": 2, "lr": 1e-3, "max_steps_per_epoch": 2}


def quick_spec(tmp_path: Path, name: str, seeds: list[int]) -> Path:
    spec = yaml.safe_load(DEMO.read_text())
    spec |= {"study": name, "seeds": seeds, "recipe": QUICK}
    spec["dataset"] = {"synthetic": {"n_train": 4, "n_val": 2, "size": 32, "seed": 0}}
    spec["configurations"] = {"original": {"loss": "original"}}
    spec["evaluation"]["num_samples"] = 1
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def epoch_lines(stdout: str, study: str, run: str) -> list[str]:
    """The epoch lines `--local` printed for one run (indented, as services.epoch_log prints them)."""
    return [line[2:] for line in stdout.splitlines() if line.startswith(f"  {study}/{run} epoch ")]


def test_local_study_one_run_at_a_time_writes_the_records_and_the_report(tmp_path: Path) -> None:
    spec = quick_spec(tmp_path, "one", seeds=[0])
    out = submit("--local", str(spec), "--store", str(tmp_path / "store"), timeout=300)
    assert out.returncode == 0, out.stderr
    store = LocalStorage(tmp_path / "store")
    (run,) = load_spec(spec).runs
    status = read_status(store, "one", run.run_id)
    assert status["state"] == "succeeded" and status["worker"] == "local"
    assert f"{run.run_id}: succeeded after epoch 3/3" in out.stdout and "report: " in out.stdout
    # one line per epoch, the one a worker logs, with the values training recorded for that epoch
    history = store.get_bytes(RunLocation("one", run.run_id).artifact("history.csv")).decode()
    events = [{"epochs": 3, **{k: int(v) if k == "epoch" else float(v) for k, v in row.items()}}
              for row in csv.DictReader(io.StringIO(history))]  # fmt: skip
    assert [e["epoch"] for e in events] == [1, 2, 3]
    assert epoch_lines(out.stdout, "one", run.run_id) == [epoch_line(f"one/{run.run_id}", e) for e in events]
    report = json.loads(store.get_bytes("reports/one/report.json"))
    assert [r["state"] for r in report["runs"]] == ["succeeded"]
    assert (tmp_path / "store" / "reports" / "one" / "report.html").is_file()


@pytest.mark.slow  # about 20 s of real processes: keeps README's test command well inside its bound
def test_local_study_with_two_runs_per_gpu_trains_them_at_once(tmp_path: Path) -> None:
    spec = quick_spec(tmp_path, "two", seeds=[0, 1])
    store_dir = tmp_path / "store"
    env = {"COLORMAMBA_RUNS_PER_GPU": "2"}  # what GPU workers read; --local takes it as its default
    out = submit("--local", str(spec), "--store", str(store_dir), env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    store = LocalStorage(store_dir)
    statuses = [read_status(store, "two", r.run_id) for r in load_spec(spec).runs]
    assert [s["state"] for s in statuses] == ["succeeded", "succeeded"]
    assert len({s["worker"] for s in statuses}) == 2  # a process each
    assert all(s["worker"].startswith("local-") for s in statuses)
    # whole seconds: strictly before means both ran during the same second at least
    assert max(s["started_at"] for s in statuses) < min(s["finished_at"] for s in statuses)
    for run in load_spec(spec).runs:  # printed by each run's process
        assert [line.split(":")[0] for line in epoch_lines(out.stdout, "two", run.run_id)] == [
            f"two/{run.run_id} epoch {e}/3" for e in (1, 2, 3)
        ]
    report = json.loads(store.get_bytes("reports/two/report.json"))
    assert sorted(r["state"] for r in report["runs"]) == ["succeeded", "succeeded"]


def test_runs_per_gpu_is_refused_without_local_and_below_one(tmp_path: Path) -> None:
    spec = quick_spec(tmp_path, "bad", seeds=[0])
    store = tmp_path / "store"
    queued = submit(str(spec), "--runs-per-gpu", "2", env={"COLORMAMBA_STORE": str(store)})
    assert queued.returncode == 2 and "--runs-per-gpu is for --local" in queued.stderr
    zero = submit("--local", str(spec), "--runs-per-gpu", "0", "--store", str(store))
    assert zero.returncode == 2 and "--runs-per-gpu must be >= 1" in zero.stderr
    bad_env = submit("--local", str(spec), "--store", str(store), env={"COLORMAMBA_RUNS_PER_GPU": "many"})
    assert bad_env.returncode == 2 and "COLORMAMBA_RUNS_PER_GPU must be an integer" in bad_env.stderr
    assert not store.exists()  # refused before anything was written
