"""The benchmarks run: tiny CPU passes of benchmarks/bench_train_step.py, bench_runs_per_gpu.py and
bench_pipeline.py as a user runs them (subprocesses), checking their JSON lines, and that a failing run
ends bench_runs_per_gpu with the run's error, not a hang."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNS_PER_GPU = REPO / "benchmarks" / "bench_runs_per_gpu.py"
TINY = ("--batch", "1", "--size", "32", "--device", "cpu", "--steps", "2", "--warmup", "1",
        "--threads-per-run", "1", "--runs-per-device", "1,2")  # fmt: skip


def bench_runs_per_gpu(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RUNS_PER_GPU), *args], capture_output=True, text=True, timeout=timeout,
        cwd=REPO, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.slow  # about 20 s of real processes: keeps README's test command well inside its bound
def test_runs_per_gpu_benchmark_prints_one_line_per_k() -> None:
    out = bench_runs_per_gpu("--preset", "tiny", *TINY)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["k"] for r in rows] == [1, 2]
    for row in rows:
        assert row["bench"] == "runs_per_device"
        assert (row["preset"], row["batch"], row["size"], row["device"]) == ("tiny", 1, 32, "cpu")
        assert row["steps_per_s_total"] > 0
        assert row["ms_per_step_per_run"] > 0 and len(row["ms_per_step_runs"]) == row["k"]
        assert row["peak_mem_mib_per_run"] > 0
        assert row["speedup_vs_k1"] > 0
    assert rows[0]["speedup_vs_k1"] == 1.0


def test_runs_per_gpu_benchmark_reports_a_failing_run_and_exits() -> None:
    out = bench_runs_per_gpu("--preset", "no-such-preset", *TINY, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "k=1: run0 failed" in out.stderr and "no-such-preset" in out.stderr, out.stderr
    assert out.stdout == ""


def test_pipeline_benchmark_compares_each_way_with_its_baseline() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_pipeline.py"), "--pairs", "6", "--size", "32",
         "--batch", "4", "--epochs", "1", "--preset", "tiny", "--repeat", "1", "--device", "cpu"],
        capture_output=True, text=True, timeout=120, cwd=REPO, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    cases = [(r["bench"], r["case"]) for r in rows]
    assert cases == [
        ("data", "dataloader_per_item"),
        ("data", "train_batches_on_device"),
        ("data", "ratio"),
        ("checkpoint", "synchronous_save"),
        ("checkpoint", "snapshot_background_write"),
        ("checkpoint", "ratio"),
    ]
    data, ckpt = rows[:3], rows[3:]
    assert all(r["ms_per_batch"] > 0 for r in data[:2])
    speedup = data[0]["ms_per_batch"] / data[1]["ms_per_batch"]
    assert data[2]["speedup"] == pytest.approx(speedup, rel=0.05)  # of the unrounded times
    assert ckpt[0]["mib"] > 1 and ckpt[1]["write_ms"] >= ckpt[1]["blocked_ms"] > 0


def test_train_step_benchmark_times_trainings_step_per_generator_step_count() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_train_step.py"), "--preset", "tiny", "--batch", "1",
         "--size", "32", "--device", "cpu", "--steps", "1", "--warmup", "1", "--generator-steps", "1", "2"],
        capture_output=True, text=True, timeout=120, cwd=REPO, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["case"] for r in rows] == ["train_step", "train_step", "generator_steps"]
    one, two, ratio = rows
    assert one["loss"] == two["loss"] == "original"
    assert (one["generator_steps_per_batch"], two["generator_steps_per_batch"]) == (1, 2)
    assert not one["fused_adam"] and one["bf16_autocast"] is False  # training's CPU Adam: foreach
    assert one["ms_per_step"] > 0 and two["ms_per_step"] > 0
    assert ratio["ratio_to_first"]["2"] == pytest.approx(two["ms_per_step"] / one["ms_per_step"], abs=2e-3)


def test_cli_benchmark_prints_a_line_per_command_over_the_demo_study() -> None:
    """bench_cli.py seeds a store with the shipped demo study (whatever its run count) and times the
    commands that must not train; each line names its command and a positive time."""
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_cli.py"), "--repeat", "1"],
        capture_output=True, text=True, timeout=240, cwd=REPO, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["command"] for r in rows][1:] == ["--help", "status", "list"]
    assert all(r["bench"] == "cli" and r["median_s"] > 0 and r["repeat"] == 1 for r in rows)


@pytest.mark.slow  # four real training processes: about 40 s
def test_quick_study_benchmark_prints_configurations_references_and_the_margin(tmp_path: Path) -> None:
    from colormamba.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", n_train=8, n_val=2, n_test=3, size=16, seed=1)
    smoke = ("--set", "epochs=1", "--set", "image_size=16", "--set", "max_steps_per_epoch=2")
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_quick_study.py"), "--dataset", str(data),
         "--vgg-weights", "random", *smoke], capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    configurations = [r for r in rows if r["row"] == "configuration"]
    references = {r["name"]: r for r in rows if r["row"] == "reference"}
    (summary,) = [r for r in rows if r["row"] == "summary"]
    assert {r["name"] for r in configurations} == {"original", "vgg", "histogram", "combined"}
    assert set(references) == {"nir", "train_mean"}
    best = max(configurations, key=lambda r: r["psnr_mean"])
    assert summary["best"] == best["name"]
    for name, ref in references.items():
        assert summary["margin_db"][name] == pytest.approx(best["psnr_mean"] - ref["psnr_mean"], abs=1e-3)
    assert summary["wall_s"] > 0 and summary["within_budget"] == (summary["wall_s"] <= summary["budget_s"])
    assert summary["dataset"]["splits"] == {"train": 8, "val": 2, "test": 3}
    assert summary["vgg_weights"] == "random" and summary["overrides"] == list(smoke[1::2])
