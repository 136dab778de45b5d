"""Selective-scan backends compared: forward + backward time and peak memory, one JSON line per case.

Each (size, backend) runs in a fresh subprocess so that peak memory is that backend's alone: on CPU the
growth of the peak RSS (ru_maxrss) over its value once the inputs exist, on CUDA
torch.cuda.max_memory_allocated over the allocated memory once the inputs exist. After the backends of a
size, one line compares each with the baseline backend measured in the same run (speedup, memory
fraction); with the reference as baseline it also checks the torch backend's target: at least 10x faster
with at most 1/4 of the reference's peak memory (stated at batch 1, D 768, N 16, L 4096).

    python benchmarks/bench_scan.py                       # reference vs torch at 1 x 768 x 16 x 4096, CPU
    python benchmarks/bench_scan.py --l 512 --repeat 2    # a quick check
    python benchmarks/bench_scan.py --sizes ss2d --device cuda --baseline torch   # the SS2D paper sizes
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

# Ratios the torch backend must reach against the reference, and the size they are stated at.
TARGET_SPEEDUP = 10.0
TARGET_MEMORY_FRACTION = 0.25
TARGET_SIZE = {"batch": 1, "d": 768, "n": 16, "l": 4096, "groups": 1}
# The three SS2D calls of docs/benchmarks.md: batch 8, four scan directions of d_inner = 2C channels each
# (D = 4 * 2C), B and C grouped by direction (G = 4), d_state 16.
SS2D_SIZES = [
    {"batch": 8, "d": 4 * 2 * c, "n": 16, "l": length, "groups": 4}
    for c, length in [(64, 16900), (128, 4356), (256, 1156)]
]


def _make_inputs(size: dict, device: torch.device) -> dict:
    """An SS2D-like scan call in float32: S4D-real A, softplus(delta + dt bias), D skip, no gate."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    batch, dim, n_state, length, groups = (size[k] for k in ("batch", "d", "n", "l", "groups"))

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device)

    dt = torch.exp(torch.rand(dim, generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    inputs = {
        "u": randn(batch, dim, length),
        "delta": 0.1 * randn(batch, dim, length),
        "A": -torch.arange(1, n_state + 1, dtype=torch.float32).repeat(dim, 1).to(device),
        "B": randn(batch, groups, n_state, length),
        "C": randn(batch, groups, n_state, length),
        "D": torch.ones(dim, device=device),
        "delta_bias": (dt + torch.log(-torch.expm1(-dt))).to(device),  # inverse softplus of dt
    }
    return {k: v.requires_grad_() for k, v in inputs.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_worker(backend: str, size: dict, device: torch.device, repeat: int, warmup: int) -> dict:
    """Time forward and backward of one backend in this process and measure its peak memory growth."""
    from colormamba.ops import selective_scan

    # A tiny scan first, so that the memory measured below is the scan's working memory and not the code
    # and allocator pools loaded on first use.
    tiny = _make_inputs({**size, "batch": 1, "d": size["groups"], "l": 8}, device)
    selective_scan(**tiny, delta_softplus=True, backend=backend).sum().backward()
    inputs = _make_inputs(size, device)
    dy = torch.randn(size["batch"], size["d"], size["l"], device=device)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2**20
    else:
        base = _rss_mb()
    fwd, bwd = [], []
    for i in range(warmup + repeat):
        for t in inputs.values():
            t.grad = None
        _sync(device)
        t0 = time.perf_counter()
        y = selective_scan(**inputs, delta_softplus=True, backend=backend)
        _sync(device)
        t1 = time.perf_counter()
        y.backward(dy)
        _sync(device)
        t2 = time.perf_counter()
        del y
        if i >= warmup:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _rss_mb()
    total = [f + b for f, b in zip(fwd, bwd, strict=True)]
    return {
        "backend": backend,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        **size,
        "repeat": repeat,
        "fwd_s": statistics.median(fwd),
        "bwd_s": statistics.median(bwd),
        "fwd_bwd_s": statistics.median(total),
        "fwd_bwd_s_min": min(total),
        "peak_mem_mb": round(peak - base, 1),
    }


def _run_in_subprocess(args: argparse.Namespace, backend: str, size: dict) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        backend,
        "--device",
        args.device,
        "--repeat",
        str(args.repeat),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
        *(f"--{k}={v}" for k, v in size.items()),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        error = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return {"backend": backend, **size, "error": error}
    return json.loads(lines[-1])


def _comparison(results: list[dict], baseline: str, size: dict) -> dict | None:
    """Speedup and memory fraction of every backend against the baseline of the same size."""
    by_name = {r["backend"]: r for r in results if "error" not in r}
    if baseline not in by_name:
        return None
    base = by_name[baseline]
    ratios = {
        name: {
            "speedup": round(base["fwd_bwd_s"] / r["fwd_bwd_s"], 2),
            "memory_fraction": round(r["peak_mem_mb"] / base["peak_mem_mb"], 4)
            if base["peak_mem_mb"] > 0
            else None,
        }
        for name, r in by_name.items()
        if name != baseline
    }
    line = {"comparison": True, "baseline": baseline, **size, "ratios": ratios}
    if baseline == "reference" and "torch" in ratios:
        torch_ratios = ratios["torch"]
        line["target"] = {
            "speedup_at_least": TARGET_SPEEDUP,
            "memory_fraction_at_most": TARGET_MEMORY_FRACTION,
            "at_target_size": size == TARGET_SIZE,
            "pass": torch_ratios["speedup"] >= TARGET_SPEEDUP
            and torch_ratios["memory_fraction"] is not None
            and torch_ratios["memory_fraction"] <= TARGET_MEMORY_FRACTION,
        }
    return line


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", help="comma-separated; default reference,torch (ss2d: mamba,torch)")
    parser.add_argument("--baseline", default="reference", help="backend the ratios are taken against")
    parser.add_argument(
        "--sizes",
        choices=["single", "ss2d"],
        default="single",
        help="single: the size given by --batch/--d/--n/--l/--groups; ss2d: the 3 paper sizes",
    )
    parser.add_argument("--batch", type=int, default=TARGET_SIZE["batch"])
    parser.add_argument("--d", type=int, default=TARGET_SIZE["d"])
    parser.add_argument("--n", type=int, default=TARGET_SIZE["n"])
    parser.add_argument("--l", type=int, default=TARGET_SIZE["l"])
    parser.add_argument("--groups", type=int, default=TARGET_SIZE["groups"], help="G of the B and C groups")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per backend (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    # One thread by default: on a CPU shared with other jobs, multi-threaded kernels stall on busy cores
    # and the timings stop meaning anything; every backend gets the same setting either way.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    single = {"batch": args.batch, "d": args.d, "n": args.n, "l": args.l, "groups": args.groups}
    if args.worker:
        print(
            json.dumps(run_worker(args.worker, single, torch.device(args.device), args.repeat, args.warmup))
        )
        return
    sizes = SS2D_SIZES if args.sizes == "ss2d" else [single]
    default_backends = "mamba,torch" if args.sizes == "ss2d" else "reference,torch"
    backends = (args.backends or default_backends).split(",")
    for size in sizes:
        results = []
        for backend in backends:
            results.append(_run_in_subprocess(args, backend, size))
            print(json.dumps(results[-1]), flush=True)
        comparison = _comparison(results, args.baseline, size)
        if comparison is not None:
            print(json.dumps(comparison), flush=True)


if __name__ == "__main__":
    main()
