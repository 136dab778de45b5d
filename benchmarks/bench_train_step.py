"""Time one training step (forward, backward, Adam) of a model preset; print JSON lines.

    python benchmarks/bench_train_step.py --preset tiny --batch 2 --size 64
    python benchmarks/bench_train_step.py --preset paper --batch 8 --size 256 --device cuda --reference-ms 265
    python benchmarks/bench_train_step.py --preset paper --batch 8 --size 256 --device cuda --compare-fast \
        --scan-backend triton       # the fp32 path, then the fast path, in one process, and their ratio

The loss is MSE on both outputs, as in performance.md's reference measurement, so the figure isolates
the network. Each case prints {"case", "preset", "batch", "size", "device", "ms_per_step" (median),
"peak_mem_mib", ...}; with --reference-ms a last line gives the ratio to that reference.

The fast path (--fast, or both paths with --compare-fast) changes how the step runs, not what it computes:
bf16 autocast (matmuls and convolutions in bf16, reductions and the scan's state in float32), channels-last
activations and weights (the layout cuDNN's fastest convolutions use), and Adam's fused single-kernel
update (the same update rule as the per-parameter loop). --compile adds torch.compile of the MambaIR,
SPADE and criss-cross blocks (fused norms and elementwise chains); "first_step_s" then shows what
compiling costs once.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from colormamba.models import build_model, compile_blocks


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; whole process


def setup(
    preset: str,
    batch: int,
    size: int,
    device: torch.device,
    scan_backend: str,
    tf32: bool,
    channels_last: bool = False,
    fused_adam: bool = False,
    compile: bool = False,
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    """The model preset on `device` (`compile_blocks` applied if `compile`), its Adam, and one random batch
    (NIR input, RGB target); seeded."""
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(preset, scan_backend=scan_backend).to(device, memory_format=layout)
    if compile:
        compile_blocks(model)
    # fused=None keeps torch's default choice (foreach); True runs one kernel for every parameter.
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999), fused=fused_adam or None)
    nir = torch.rand(batch, 1, size, size, device=device).contiguous(memory_format=layout)
    target = torch.rand(batch, 3, size, size, device=device)
    return model, opt, nir, target


def train_step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, nir: torch.Tensor, target: torch.Tensor, amp: bool
) -> None:
    """One step: forward (under bf16 autocast if `amp`), MSE on both outputs, backward, Adam. Does not
    wait for the GPU: the caller synchronises where it times."""
    with torch.autocast(nir.device.type, dtype=torch.bfloat16, enabled=amp):
        rgb, hsv = model(nir)
        loss = F.mse_loss(rgb.float(), target) + F.mse_loss(hsv.float(), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bench(
    preset: str,
    batch: int,
    size: int,
    device: torch.device,
    steps: int,
    warmup: int,
    scan_backend: str,
    tf32: bool,
    amp: bool,
    channels_last: bool = False,
    fused_adam: bool = False,
    compile: bool = False,
) -> dict[str, object]:
    model, opt, nir, target = setup(
        preset, batch, size, device, scan_backend, tf32, channels_last, fused_adam, compile
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        train_step(model, opt, nir, target, amp)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i == 0:
            first_step_s = time.perf_counter() - t0  # includes compiling, with compile
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    return {
        "case": "train_step",
        "preset": preset,
        "batch": batch,
        "size": size,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "scan_backend": scan_backend,
        "tf32": tf32,
        "bf16_autocast": amp,
        "channels_last": channels_last,
        "fused_adam": fused_adam,
        "compile": compile,
        "first_step_s": round(first_step_s, 2),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "ms_per_step": round(statistics.median(times), 2),
        "ms_min": round(min(times), 2),
        "steps": steps,
        "peak_mem_mib": round(peak_memory_mib(device), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", nargs="+", default=["tiny"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--scan-backend", default="auto")
    parser.add_argument("--no-tf32", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--channels-last", action="store_true", help="channels-last model and input")
    parser.add_argument("--fused-adam", action="store_true", help="Adam(fused=True)")
    parser.add_argument("--fast", action="store_true", help="--bf16 --channels-last --fused-adam together")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile_blocks (torch.compile; of the fast path with --compare-fast)",
    )
    parser.add_argument(
        "--compare-fast",
        action="store_true",
        help="run the fp32 path and then the fast path in this process, and print their ratio",
    )
    parser.add_argument("--reference-ms", type=float, default=None, help="a reference step time to compare")
    args = parser.parse_args()
    device = torch.device(args.device)
    chosen = {
        "amp": args.bf16 or args.fast,
        "channels_last": args.channels_last or args.fast,
        "fused_adam": args.fused_adam or args.fast,
    }
    fast = {**dict.fromkeys(chosen, True), "compile": args.compile}
    reference = dict.fromkeys(chosen, False)
    chosen["compile"] = args.compile
    for preset in args.preset:
        common = (preset, args.batch, args.size, device, args.steps, args.warmup, args.scan_backend)
        if args.compare_fast:
            base_row = bench(*common, not args.no_tf32, **reference)
            print(json.dumps(base_row), flush=True)
            row = bench(*common, not args.no_tf32, **fast)
            print(json.dumps(row), flush=True)
            comparison = {
                "case": "fast_vs_fp32",
                "preset": preset,
                "fp32_ms": base_row["ms_per_step"],
                "fast_ms": row["ms_per_step"],
                "speedup": round(base_row["ms_per_step"] / row["ms_per_step"], 3),
                "fp32_peak_mem_mib": base_row["peak_mem_mib"],
                "fast_peak_mem_mib": row["peak_mem_mib"],
            }
            print(json.dumps(comparison), flush=True)
        else:
            row = bench(*common, not args.no_tf32, **chosen)
            print(json.dumps(row), flush=True)
        if args.reference_ms:
            print(
                json.dumps(
                    {
                        "case": "vs_reference",
                        "preset": preset,
                        "reference_ms": args.reference_ms,
                        "ratio": round(row["ms_per_step"] / args.reference_ms, 3),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
