"""Throughput of k training runs sharing one device (COLORMAMBA_RUNS_PER_GPU=k); print JSON lines.

    python benchmarks/bench_runs_per_gpu.py                        # paper preset, batch 8, 256x256, k=1,2,4
    python benchmarks/bench_runs_per_gpu.py --preset tiny --batch 8 --size 256 --precision bf16
    python benchmarks/bench_runs_per_gpu.py --preset tiny --batch 2 --size 64 --device cpu --steps 10 \
        --warmup 2 --threads-per-run 1 --runs-per-device 1,2

For each k of --runs-per-device, k processes (multiprocessing "spawn", as the worker's pool processes are
started) each build training's parts for the model preset and one random batch, take --warmup steps, wait
for each other at a barrier, then take --steps timed steps together: colormamba.train.train_step with the
`original` loss and RunConfig's generator updates per batch (benchmarks/bench_train_step.py's step). Each
process times its own window (one GPU synchronisation at its end, none per step, so its queue stays full
as in training); the study's throughput is all steps over the span from the first start to the last end.
Per k it prints {"bench": "runs_per_device", "k", "preset", "batch", "size", "device", "steps_per_s_total",
"ms_per_step_per_run" (median over the runs), "peak_mem_mib_per_run" (the largest:
torch.cuda.max_memory_allocated on CUDA, the process's peak RSS on the CPU), "speedup_vs_k1"
(steps_per_s_total over k=1's; null without k=1), ...}.

--precision bf16 runs the forward under bf16 autocast (RunConfig.precision="bf16"); Adam is fused on CUDA,
as training makes it. On the CPU give --threads-per-run: k processes with torch's default thread count
each would fight over every core. A failing process is reported with its traceback and ends the
benchmark (exit 1); the others are stopped, nothing waits longer than --timeout.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.bench_train_step import peak_memory_mib, setup
from colormamba.train import train_step


class ChildFailed(RuntimeError):
    """A benchmark process failed or vanished; the message carries its traceback or exit code."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_one(rank: int, opts: dict[str, Any], barrier: threading.Barrier, results: mp.Queue) -> None:
    """One run in a spawned process: set up, warm up, meet the others, time `steps` steps, report."""
    try:
        if opts["threads_per_run"]:
            torch.set_num_threads(opts["threads_per_run"])
        device = torch.device(opts["device"])
        if device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device)
        parts, nir, target = setup(
            opts["preset"], opts["batch"], opts["size"], device, opts["scan_backend"], opts["tf32"],
            precision=opts["precision"],
        )  # fmt: skip
        for _ in range(opts["warmup"]):
            train_step(parts, nir, target)
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        barrier.wait(opts["timeout"])  # every run's timed window starts together
        start = time.monotonic()  # CLOCK_MONOTONIC: comparable between processes of this machine
        for _ in range(opts["steps"]):
            train_step(parts, nir, target)
        _sync(device)
        end = time.monotonic()
        results.put(
            {
                "rank": rank,
                "ok": True,
                "start": start,
                "end": end,
                "steps": opts["steps"],
                "peak_mem_mib": peak_memory_mib(device),
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            }
        )
    except BaseException:
        results.put({"rank": rank, "ok": False, "error": traceback.format_exc()})
        barrier.abort()  # the others' wait ends at once with BrokenBarrierError instead of a timeout
        raise SystemExit(1) from None


def measure(k: int, opts: dict[str, Any]) -> list[dict[str, Any]]:
    """Start k runs, collect their reports; raise ChildFailed on the first failure, stop every process."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(k)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=run_one, args=(rank, opts, barrier, results), name=f"run{rank}", daemon=True)
        for rank in range(k)
    ]
    try:
        for p in procs:
            p.start()
        reports: list[dict[str, Any]] = []
        deadline = time.monotonic() + opts["timeout"]
        while len(reports) < k:
            report = _get(results, 1.0)
            if report is None:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:  # its report, if it wrote one, may still be in the pipe: one more look
                    report = _get(results, 1.0)
                    if report is None:  # killed before it could report (OOM killer, a crash in a kernel)
                        p = dead[0]
                        raise ChildFailed(f"k={k}: {p.name} exited with code {p.exitcode} without a report")
                elif time.monotonic() > deadline:
                    raise ChildFailed(f"k={k}: no result after --timeout {opts['timeout']} s")
                else:
                    continue
            if not report["ok"]:
                raise ChildFailed(first_cause(k, report, procs, results))
            reports.append(report)
        return reports
    finally:
        barrier.abort()  # a run still waiting there (another one died) stops now; the others passed it
        for p in procs:
            p.join(5)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
        results.close()
        results.join_thread()


def _get(results: mp.Queue, timeout: float) -> dict[str, Any] | None:
    try:
        return results.get(timeout=timeout) if timeout > 0 else results.get_nowait()
    except queue.Empty:
        return None


def first_cause(k: int, report: dict[str, Any], procs: list, results: mp.Queue) -> str:
    """The failure to show: one run's own error rather than the BrokenBarrierError it caused in the
    others (their reports can arrive first)."""
    failures = [report]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(p.is_alive() for p in procs):
        failures.append(_get(results, 0.2))
    while (more := _get(results, 0.0)) is not None:
        failures.append(more)
    failures = [f for f in failures if f is not None and not f["ok"]]
    own = [f for f in failures if "BrokenBarrierError" not in f["error"]] or failures
    return f"k={k}: run{own[0]['rank']} failed:\n{own[0]['error']}"


def summarise(k: int, reports: list[dict[str, Any]], opts: dict[str, Any]) -> dict[str, Any]:
    span = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    total_steps = sum(r["steps"] for r in reports)
    per_run_ms = [(r["end"] - r["start"]) * 1000 / r["steps"] for r in reports]
    return {
        "bench": "runs_per_device",
        "k": k,
        "preset": opts["preset"],
        "batch": opts["batch"],
        "size": opts["size"],
        "device": opts["device"],
        "gpu": reports[0]["gpu"],
        "precision": opts["precision"],
        "scan_backend": opts["scan_backend"],
        "threads_per_run": opts["threads_per_run"] or None,
        "steps": opts["steps"],
        "steps_per_s_total": round(total_steps / span, 3),
        "ms_per_step_per_run": round(statistics.median(per_run_ms), 2),
        "ms_per_step_runs": [round(ms, 2) for ms in per_run_ms],
        "peak_mem_mib_per_run": round(max(r["peak_mem_mib"] for r in reports), 1),
    }


def parse_counts(text: str) -> list[int]:
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers >= 1, got {text!r}")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scan-backend", default="auto")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per run before the barrier")
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast forward"
    )
    parser.add_argument("--no-tf32", action="store_true")
    parser.add_argument(
        "--threads-per-run",
        type=int,
        default=0,
        help="torch.set_num_threads in each run (0: torch's default)",
    )
    parser.add_argument(
        "--runs-per-device", type=parse_counts, default=[1, 2, 4], help="k values, e.g. 1,2,4"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900,
        help="seconds a k may take, and the barrier's wait (default 900)",
    )
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    opts = {
        "preset": args.preset,
        "batch": args.batch,
        "size": args.size,
        "device": args.device,
        "scan_backend": args.scan_backend,
        "steps": args.steps,
        "warmup": args.warmup,
        "precision": args.precision,
        "tf32": not args.no_tf32,
        "threads_per_run": args.threads_per_run,
        "timeout": args.timeout,
    }
    base = None
    for k in args.runs_per_device:  # ascending: k=1, when asked for, comes first
        try:
            row = summarise(k, measure(k, opts), opts)
        except ChildFailed as exc:
            print(f"bench_runs_per_gpu: {exc}", file=sys.stderr, flush=True)
            return 1
        if k == 1:
            base = row["steps_per_s_total"]
        row["speedup_vs_k1"] = round(row["steps_per_s_total"] / base, 3) if base else None
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
