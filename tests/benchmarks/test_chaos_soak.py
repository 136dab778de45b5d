"""benchmarks/chaos_soak.py: its seeded fault schedule and recovery measure (fast), and the short variant of
the soak end to end on real servers and workers (slow: CI's slow tier)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "chaos_soak.py"


def _load_soak():
    spec = importlib.util.spec_from_file_location("chaos_soak", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


soak = _load_soak()


def shape(faults) -> list[tuple[str, dict]]:
    return [(f.kind, f.params) for f in faults]


def test_the_schedule_is_seeded_and_holds_every_fault_of_the_issue() -> None:
    full = soak.schedule(soak.FULL, 1)
    assert shape(full) == shape(soak.schedule(soak.FULL, 1)), "one seed, one schedule"
    assert shape(full) != shape(soak.schedule(soak.FULL, 2))
    assert Counter(f.kind for f in full) == {"kill": 4, "redis_stop": 2, "s3_stop": 2, "cache_full": 1,
                                             "aggregator_restart": 1, "duplicate_submit": 2}  # fmt: skip
    kills = sorted(f.params["phase"] for f in full if f.kind == "kill")
    assert kills == ["mid_epoch"] * 2 + ["mid_upload"] * 2
    profile = soak.FULL
    redis_s = sorted(f.params["seconds"] for f in full if f.kind == "redis_stop")
    s3_s = sorted(f.params["seconds"] for f in full if f.kind == "s3_stop")
    assert all(20 <= s <= 60 for s in redis_s + s3_s), (redis_s, s3_s)
    # one outage each within the budget (a lease renewed every TTL/3 outlives 2/3 TTL), one beyond it
    assert redis_s[0] < profile.lease_ttl * 2 / 3 < profile.lease_ttl < redis_s[1], redis_s
    assert s3_s[0] < profile.s3_retry_s < s3_s[1], s3_s
    assert profile.runs == 12


def test_a_kills_recovery_ends_when_the_run_trains_in_a_new_attempt() -> None:
    fault = soak.Fault("kill", {}, t=10.0, t_end=10.0, affected=["r"], affected_attempts={"r": 1})
    event = {"attempt": 1, "phase": "train", "worker": "gpu1@h (pid 1)"}
    trace = {"r": [
        {**event, "t": 9.0, "state": "running"},
        {**event, "t": 11.0, "state": "running"},  # a write of the dead attempt: not a recovery
        {**event, "t": 40.0, "state": "lost"},
        {**event, "t": 41.0, "state": "running", "attempt": 2, "phase": "dataset"},
        {**event, "t": 43.5, "state": "running", "attempt": 2, "phase": "train"},
    ]}  # fmt: skip
    assert soak.recovery(fault, trace) == 33.5
    trace["r"] = trace["r"][:4]
    assert soak.recovery(fault, trace) == soak.INF, "never trained again"
    outage = soak.Fault("redis_stop", {}, t=5.0, t_end=30.0, affected=["r"], affected_attempts={"r": 1})
    ended = {"r": [{**event, "t": 9.0, "state": "running"}, {**event, "t": 20.0, "state": "succeeded"}]}
    assert soak.recovery(outage, ended) == 0.0, "it ended during the outage: nothing left to recover"


def test_fingerprint_differences_name_the_field() -> None:
    a = {"runs": [{"psnr": 20.0, "ssim": 0.5}], "f": b"x"}
    same = json.loads(json.dumps({"runs": [{"psnr": 20.0, "ssim": 0.5}]})) | {"f": b"x"}
    assert soak.differences(a, same) == []
    assert soak.differences(a, {"runs": [{"psnr": 20.000001, "ssim": 0.5}], "f": b"x"}) == [
        "runs[0].psnr: '20.0' vs '20.000001'"
    ]


@pytest.mark.slow  # minutes of real workers and outages on 2 cores
def test_the_short_soak_holds(tmp_path: Path) -> None:
    out_file = tmp_path / "soak.jsonl"
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--short", "--seed", "3", "--out", str(out_file)],
        capture_output=True, text=True, timeout=1500, cwd=ROOT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.stdout, out.stderr[-4000:]
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert out_file.read_text() == out.stdout
    faults, summary = lines[:-1], lines[-1]
    assert summary["row"] == "summary" and all(f["row"] == "fault" for f in faults)
    failed = {name: summary["checks"][name] for name in summary["failed_checks"]}
    assert summary["holds"] and out.returncode == 0, json.dumps(failed, indent=1)[-6000:]
    kinds = {"kill", "redis_stop", "s3_stop", "aggregator_restart", "duplicate_submit"}
    assert set(summary["faults"]) >= kinds, summary["faults"]
    assert summary["runs"] == 4 and summary["longest_recovery_s"] is not None
