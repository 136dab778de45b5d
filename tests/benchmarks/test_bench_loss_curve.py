"""benchmarks/bench_loss_curve.py: the window/gap/verdict logic, and one tiny run of the script on CPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_loss_curve.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_loss_curve", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()

# a decaying curve with a little deterministic wiggle, like a training loss
REFERENCE = [1.0 / (1 + 0.05 * i) + 0.01 * ((i * 7) % 5 - 2) for i in range(100)]
NOISE = [v * (1.03 if i % 2 else 0.99) for i, v in enumerate(REFERENCE)]  # another seed: a few percent off


def test_window_means_cover_every_step_and_keep_the_remainder() -> None:
    assert bench.window_means([1.0, 3.0, 5.0, 7.0, 9.0], 2) == [(1, 2, 2.0), (3, 4, 6.0), (5, 5, 9.0)]
    assert bench.window_means([4.0] * 6, 6) == [(1, 6, 4.0)]
    with pytest.raises(ValueError):
        bench.window_means([1.0], 0)


def test_relative_gap() -> None:
    assert bench.relative_gap(1.5, 1.0) == pytest.approx(0.5)
    assert bench.relative_gap(0.5, 1.0) == pytest.approx(0.5)
    assert bench.relative_gap(0.0, 0.0) == 0.0


def test_a_curve_equal_to_the_reference_is_within_noise() -> None:
    rows = bench.compare_curves(REFERENCE, list(REFERENCE), NOISE, window=10)
    assert len(rows) == 10 and rows[-1]["steps"] == [91, 100]
    assert all(r["gap_fast"] == 0.0 for r in rows)
    assert all(r["gap_noise"] > 0.0 for r in rows)
    result = bench.verdict([r["gap_fast"] for r in rows], [r["gap_noise"] for r in rows])
    assert result["within_noise"] is True
    assert result["gap_fast_mean"] == 0.0
    assert result["windows_judged"] == [5, 9]


def test_a_curve_offset_by_half_is_not_within_noise() -> None:
    offset = [v * 1.5 for v in REFERENCE]
    rows = bench.compare_curves(REFERENCE, offset, NOISE, window=10)
    assert all(r["gap_fast"] == pytest.approx(0.5) for r in rows)
    result = bench.verdict([r["gap_fast"] for r in rows], [r["gap_noise"] for r in rows])
    assert result["within_noise"] is False
    assert result["gap_fast_mean"] == pytest.approx(0.5)
    assert result["gap_noise_mean"] < 0.05


def test_the_verdict_judges_the_last_half_and_applies_the_floor() -> None:
    # early windows do not count: a large early gap with a small late one passes
    assert bench.verdict([0.9, 0.9, 0.01, 0.01], [0.02, 0.02, 0.02, 0.02])["within_noise"] is True
    assert bench.verdict([0.01, 0.01, 0.9, 0.9], [0.02, 0.02, 0.02, 0.02])["within_noise"] is False
    # seed-to-seed noise of 0.1 %: a 1.5 % gap passes under the 2 % floor, a 3 % gap does not
    tiny_noise = [0.001] * 4
    assert bench.verdict([0.015] * 4, tiny_noise, floor=0.02)["within_noise"] is True
    assert bench.verdict([0.03] * 4, tiny_noise, floor=0.02)["within_noise"] is False
    assert bench.verdict([0.015] * 4, tiny_noise, floor=0.0)["within_noise"] is False
    with pytest.raises(ValueError):
        bench.verdict([], [])
    with pytest.raises(ValueError):
        bench.compare_curves([1.0, 2.0], [1.0], [1.0, 2.0], window=1)


def test_epoch_plan_gives_exactly_the_asked_steps() -> None:
    assert bench.epoch_plan(300, 32) == (10, 30)
    assert bench.epoch_plan(20, 64) == (1, 20)
    assert bench.epoch_plan(7, 4) == (7, 1)  # a prime: one step per epoch, still exact
    for steps, cap in [(300, 7), (48, 10), (1, 1)]:
        epochs, per_epoch = bench.epoch_plan(steps, cap)
        assert epochs * per_epoch == steps and per_epoch <= cap


@pytest.mark.slow
def test_script_runs_on_cpu_and_prints_its_json_lines() -> None:
    steps, window = 6, 2
    args = ["--preset", "tiny", "--size", "32", "--batch", "2", "--device", "cpu"]
    args += ["--steps", str(steps), "--window", str(window), "--train-images", "4"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    runs = [line for line in lines if line["bench"] == "loss_curve_run"]
    assert [r["run"] for r in runs] == ["fp32", "fast", "fp32_seed2"]
    assert all(r["steps"] == steps for r in runs), "a line per finished run, with its step count"
    windows = [line for line in lines if line["bench"] == "loss_curve"]
    summary = lines[-1]
    assert len(windows) == steps // window
    for i, row in enumerate(windows):
        assert row["bench"] == "loss_curve" and row["window"] == i
        assert row["steps"] == [i * window + 1, (i + 1) * window]
        for key in ("fp32", "fast", "fp32_seed2", "gap_fast", "gap_noise"):
            assert isinstance(row[key], float) and row[key] >= 0.0, key
    assert summary["bench"] == "loss_curve_summary"
    assert summary["steps"] == steps
    assert summary["epochs"] * summary["steps_per_epoch"] == steps
    assert {"preset": "tiny", "size": 32, "batch": 2, "device": "cpu"}.items() <= summary.items()
    assert isinstance(summary["within_noise"], bool)
    for key in ("gap_fast_mean", "gap_noise_mean", "seconds_fp32", "seconds_fast"):
        assert isinstance(summary[key], float), key
