"""Triton selective scan on the GPU: errors against mamba-ssm's kernel (or torch) and fwd+bwd time.

At the three SS2D calls of the paper preset (batch 8, G = 4, N = 16; C = 64/128/256 at L = 16900/4356/1156,
D = 4 * 2C), for each size: one line per triton tile config (time), the baseline backends' times, and
error lines (max abs and max relative error, relative to the baseline's largest magnitude, of y and every
gradient) for the fastest triton config in float32 and bfloat16. One JSON object a line. The baseline is
`mamba` when `selective_scan_cuda` imports (put the build folder of benchmarks/build_mamba_kernel.py on
PYTHONPATH), else `torch`. All in one process: about a minute on an H100, most of it Triton compiling
the configs and the torch backend's slow runs.

    python benchmarks/bench_triton_gpu.py                          # CUDA, the paper sizes
    TRITON_INTERPRET=1 python benchmarks/bench_triton_gpu.py --device cpu --sizes tiny --repeat 1 --warmup 0
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colormamba.ops import available_backends, scan_triton, selective_scan

SIZES = {
    "ss2d": [
        {"batch": 8, "d": 4 * 2 * c, "n": 16, "l": length, "groups": 4, "C": c}
        for c, length in [(64, 16900), (128, 4356), (256, 1156)]
    ],
    "tiny": [{"batch": 2, "d": 16, "n": 4, "l": 45, "groups": 4, "C": 2}],
}
# Tile configs tried per size: (channels, steps, warps); about 4K-8K float32 elements a tile.
CONFIGS = {
    "cuda": [(4, 32, 4), (8, 32, 4), (4, 64, 4), (16, 16, 4), (16, 32, 8)],
    "cpu": [(4, 8, 1), (2, 16, 1)],
}
INPUT_NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")


def make_inputs(size: dict, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """An SS2D scan call: S4D-real A, dt bias = inverse softplus of log-uniform [1e-3, 0.1], D = 1."""
    gen = torch.Generator().manual_seed(0)
    batch, dim, n, length, groups = (size[k] for k in ("batch", "d", "n", "l", "groups"))
    dt = torch.exp(torch.rand(dim, generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    seq = {
        "u": torch.randn(batch, dim, length, generator=gen),
        "delta": 0.1 * torch.randn(batch, dim, length, generator=gen),
        "B": torch.randn(batch, groups, n, length, generator=gen),
        "C": torch.randn(batch, groups, n, length, generator=gen),
    }
    weights = {
        "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(dim, 1),
        "D": torch.ones(dim),
        "delta_bias": dt + torch.log(-torch.expm1(-dt)),
    }
    inputs = {k: v.to(device, dtype) for k, v in seq.items()} | {k: v.to(device) for k, v in weights.items()}
    return {k: v.requires_grad_() for k, v in inputs.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def scan(inputs: dict, backend: str, config: dict | None) -> torch.Tensor:
    """y of one forward: the triton backend called directly with a tile config, the others by name."""
    if backend == "triton":
        return scan_triton.selective_scan_triton(
            *(inputs[k] for k in ("u", "delta", "A", "B", "C", "D")), None, inputs["delta_bias"], True,
            config=config,
        )[0]  # fmt: skip
    return selective_scan(**inputs, delta_softplus=True, backend=backend)


def run_once(inputs: dict, dy: torch.Tensor, backend: str, config: dict | None) -> tuple[float, float]:
    """Seconds of one forward and one backward (gradients land in the inputs' .grad)."""
    for t in inputs.values():
        t.grad = None
    device = dy.device
    _sync(device)
    t0 = time.perf_counter()
    y = scan(inputs, backend, config)
    _sync(device)
    t1 = time.perf_counter()
    y.backward(dy)
    _sync(device)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def time_backend(
    inputs: dict, dy: torch.Tensor, backend: str, config: dict | None, repeat: int, warmup: int
) -> dict:
    """Median forward, backward and total milliseconds, and the peak memory above the inputs."""
    device = dy.device
    for _ in range(warmup):
        run_once(inputs, dy, backend, config)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    runs = [run_once(inputs, dy, backend, config) for _ in range(repeat)]
    line = {
        "fwd_ms": round(1e3 * statistics.median(f for f, _ in runs), 3),
        "bwd_ms": round(1e3 * statistics.median(b for _, b in runs), 3),
        "fwd_bwd_ms": round(1e3 * statistics.median(f + b for f, b in runs), 3),
        "fwd_bwd_ms_min": round(1e3 * min(f + b for f, b in runs), 3),
    }
    if device.type == "cuda":
        line["peak_mem_mb"] = round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)
    return line


def outputs_and_grads(inputs: dict, dy: torch.Tensor, backend: str, config: dict | None) -> dict:
    """y and every input gradient of one fwd+bwd, detached, in float32."""
    for t in inputs.values():
        t.grad = None
    y = scan(inputs, backend, config)
    y.backward(dy)
    result = {"y": y.detach().float()}
    result.update({f"d{k}": inputs[k].grad.detach().float() for k in INPUT_NAMES})
    return result


def errors(actual: dict, expected: dict) -> dict:
    """Per tensor: max |a - e| and that over max |e| (a relative error that tolerates zeros)."""
    out = {}
    for name, e in expected.items():
        diff = (actual[name] - e).abs().max().item()
        scale = e.abs().max().item()
        out[name] = {"max_abs": float(f"{diff:.3g}"), "max_rel": float(f"{diff / max(scale, 1e-30):.3g}")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", choices=sorted(SIZES), default="ss2d")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs of triton and mamba")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--torch-repeat", type=int, default=1, help="timed runs of the (slow) torch backend")
    parser.add_argument(
        "--configs", help="triton tile configs to try, 'block_d:chunk:warps,...' (default: a built-in set)"
    )
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 error check")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False

    def emit(line: dict) -> None:
        print(json.dumps(line), flush=True)

    reason = scan_triton.unavailable_reason(device, torch.float32)
    if reason is not None:
        emit({"error": f"triton backend unavailable: {reason}"})
        sys.exit(1)
    if args.configs:
        configs = [tuple(int(v) for v in c.split(":")) for c in args.configs.split(",")]
    else:
        configs = CONFIGS["cuda" if device.type == "cuda" else "cpu"]
    backends = available_backends(device, torch.float32)
    baseline = "mamba" if "mamba" in backends else "torch"
    emit(
        {
            "case": "setup",
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "triton": __import__("triton").__version__,
            "baseline": baseline,
            "backends": backends,
        }
    )
    for size in SIZES[args.sizes]:
        bench_size(size, device, configs, baseline, args, emit)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def bench_size(
    size: dict, device: torch.device, configs: list[tuple[int, ...]], baseline: str, args, emit
) -> None:
    """All lines of one size; a step that fails (compile error, out of memory) emits an error line."""
    shape = {k: size[k] for k in ("C", "batch", "d", "n", "l", "groups")}

    def attempt(what: dict, fn):
        try:
            return fn()
        except Exception as err:  # one failing case must not end the benchmark
            emit({**what, **shape, "error": repr(err)[:400]})
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return None

    inputs = make_inputs(size, device, torch.float32)
    gen = torch.Generator().manual_seed(1)
    dy = torch.randn(size["batch"], size["d"], size["l"], generator=gen).to(device)
    timings: dict[str, float] = {}
    for block_d, chunk, warps in configs:
        config = {"block_d": block_d, "chunk": chunk, "num_warps": warps}
        what = {"case": "scan", "backend": "triton", "config": config}
        started = time.perf_counter()
        if attempt(what, lambda c=config: outputs_and_grads(inputs, dy, "triton", c)) is None:  # compiles
            continue
        first_call_s = round(time.perf_counter() - started, 2)
        line = attempt(what, lambda c=config: time_backend(inputs, dy, "triton", c, args.repeat, args.warmup))
        if line is not None:
            timings[json.dumps(config)] = line["fwd_bwd_ms"]
            emit({**what, **shape, "first_call_s": first_call_s, **line})
    for backend in dict.fromkeys([baseline, "torch"]):
        repeat, warmup = (args.torch_repeat, 0) if backend == "torch" else (args.repeat, args.warmup)
        if device.type == "cpu":
            repeat, warmup = 1, 0
        what = {"case": "scan", "backend": backend}
        line = attempt(what, lambda b=backend, r=repeat, w=warmup: time_backend(inputs, dy, b, None, r, w))
        if line is not None:
            timings[backend] = line["fwd_bwd_ms"]
            emit({**what, **shape, **line})
    configs_timed = [k for k in timings if k.startswith("{")]
    if not configs_timed:
        return
    best = min(configs_timed, key=timings.__getitem__)
    config = json.loads(best)
    if baseline in timings:
        ratio = round(timings[best] / timings[baseline], 3)
        emit({"case": "triton_vs_baseline", **shape, "baseline": baseline, "config": config,
              "triton_ms": timings[best], "baseline_ms": timings[baseline], "ratio": ratio,
              "target_ratio_at_most": 1.5 if baseline == "mamba" else None})  # fmt: skip
    what = {"case": "errors", "dtype": "float32", "vs": baseline, "config": config}
    expected = attempt(what, lambda: outputs_and_grads(inputs, dy, baseline, None))
    actual = attempt(what, lambda: outputs_and_grads(inputs, dy, "triton", config))
    if expected is not None and actual is not None:
        emit({**what, **shape, **errors(actual, expected)})
    actual = None
    inputs.clear()  # frees the float32 inputs (the lambdas above keep the name bound)
    if args.no_bf16:
        return
    half = make_inputs(size, device, torch.bfloat16)
    dy_half = dy.bfloat16()
    what = {"case": "errors", "dtype": "bfloat16 inputs", "vs": f"{baseline} float32", "config": config}
    actual = attempt(what, lambda: outputs_and_grads(half, dy_half, "triton", config))
    if expected is not None and actual is not None:
        emit({**what, **shape, **errors(actual, expected)})
    actual = expected = None
    for backend in dict.fromkeys(["triton", baseline if baseline == "mamba" else "triton"]):
        cfg = config if backend == "triton" else None
        what = {"case": "scan", "backend": backend, "dtype": "bfloat16", "config": cfg}
        line = attempt(
            what, lambda b=backend, c=cfg: time_backend(half, dy_half, b, c, args.repeat, args.warmup)
        )
        if line is not None:
            emit({**what, **shape, **line})


if __name__ == "__main__":
    main()
