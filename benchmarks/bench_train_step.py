"""Time one training step of a model preset, the step training takes; print JSON lines.

    python benchmarks/bench_train_step.py --preset tiny --batch 2 --size 64
    python benchmarks/bench_train_step.py --preset small --batch 2 --size 64 --generator-steps 1 2
    python benchmarks/bench_train_step.py --preset paper --batch 8 --size 256 --device cuda --reference-ms 265
    python benchmarks/bench_train_step.py --preset paper --batch 8 --size 256 --device cuda --compare-fast \
        --scan-backend triton       # the fp32 path, then the fast path, in one process, and their ratio

The step is colormamba.train's own: `build_parts` (the model, the loss, Adam as training makes it: fused
on CUDA, foreach elsewhere) and `train_step` (RunConfig.generator_steps_per_batch generator updates, each
a forward, the loss, backward and Adam; a discriminator update when the loss is adversarial) on one random
batch. --loss names the loss configuration, a preset of colormamba.losses, by default `original` (the
study's baseline: MSE, cosine, MS-SSIM and hsv); VGG-19 has random weights (the pretrained ones cannot be
downloaded here and cost the same). --generator-steps gives the updates per batch (default: RunConfig's,
the reference's 2); with several values, each is timed and a last line gives their ratio to the first.
Each case prints {"case", "preset", "batch", "size", "device", "loss", "generator_steps_per_batch",
"ms_per_step" (median, one batch), "peak_mem_mib", ...}; with --reference-ms a last line gives the ratio to
that reference (measured with MSE on both outputs and one generator update: see performance.md).

The fast path (--fast, or both paths with --compare-fast) changes how the step runs, not what it computes:
bf16 autocast of the generator's forward (RunConfig.precision "bf16": matmuls and convolutions in bf16,
the loss, reductions and the scan's state in float32) and channels-last weights and inputs (the layout
cuDNN's fastest convolutions use). --compile adds torch.compile of the MambaIR, SPADE and criss-cross
blocks (fused norms and elementwise chains); "first_step_s" then shows what compiling costs once.
TF32 matmuls and convolutions are on unless --no-tf32 (as in the reference measurement).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's colormamba

import torch

from colormamba.config import RunConfig
from colormamba.train import TrainingParts, build_parts, train_step

DEFAULT_GENERATOR_STEPS = RunConfig(dataset="-").generator_steps_per_batch


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
    *,
    loss: str = "original",
    generator_steps: int = DEFAULT_GENERATOR_STEPS,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
) -> tuple[TrainingParts, torch.Tensor, torch.Tensor]:
    """Training's parts for the preset on `device` (`colormamba.train.build_parts`) and one random batch
    (NIR input, RGB target); seeded."""
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    cfg = RunConfig(
        dataset="(a random batch)", model=preset, scan_backend=scan_backend, loss=loss, vgg_weights="random",
        generator_steps_per_batch=generator_steps, precision=precision, channels_last=channels_last,
        compile=compile, device=device.type,
    )  # fmt: skip
    parts = build_parts(cfg, device)
    nir = torch.rand(batch, 1, size, size, device=device)
    target = torch.rand(batch, 3, size, size, device=device)
    return parts, nir, target


def bench(
    preset: str,
    batch: int,
    size: int,
    device: torch.device,
    steps: int,
    warmup: int,
    scan_backend: str,
    tf32: bool,
    loss: str,
    generator_steps: int,
    amp: bool,
    channels_last: bool = False,
    compile: bool = False,
) -> dict[str, object]:
    parts, nir, target = setup(
        preset, batch, size, device, scan_backend, tf32, loss=loss, generator_steps=generator_steps,
        precision="bf16" if amp else "fp32", channels_last=channels_last, compile=compile,
    )  # fmt: skip
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        train_step(parts, nir, target)
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
        "loss": loss,
        "generator_steps_per_batch": generator_steps,
        "tf32": tf32,
        "bf16_autocast": amp,
        "channels_last": channels_last,
        "fused_adam": parts.optimizer.defaults.get("fused") is True,
        "compile": compile,
        "first_step_s": round(first_step_s, 2),
        "params_m": round(sum(p.numel() for p in parts.model.parameters()) / 1e6, 3),
        "ms_per_step": round(statistics.median(times), 2),
        "ms_min": round(min(times), 2),
        "steps": steps,
        "peak_mem_mib": round(peak_memory_mib(device), 1),
    }


def _print(row: dict[str, object]) -> None:
    print(json.dumps(row), flush=True)


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
    parser.add_argument("--loss", default="original", help="a loss preset of colormamba.losses")
    parser.add_argument(
        "--generator-steps",
        type=int,
        nargs="+",
        default=[DEFAULT_GENERATOR_STEPS],
        help="generator updates per batch (several: each is timed, then their ratio to the first)",
    )
    parser.add_argument("--no-tf32", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (precision bf16)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last model and input")
    parser.add_argument("--fast", action="store_true", help="--bf16 --channels-last together")
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
    if min(args.generator_steps) < 1:
        parser.error("--generator-steps: every value must be >= 1")
    device = torch.device(args.device)
    chosen = {"amp": args.bf16 or args.fast, "channels_last": args.channels_last or args.fast}
    fast = {**dict.fromkeys(chosen, True), "compile": args.compile}
    reference = dict.fromkeys(chosen, False)
    chosen["compile"] = args.compile
    for preset in args.preset:
        by_steps = {}
        for generator_steps in args.generator_steps:
            common = (preset, args.batch, args.size, device, args.steps, args.warmup, args.scan_backend,
                      not args.no_tf32, args.loss, generator_steps)  # fmt: skip
            if args.compare_fast:
                base_row = bench(*common, **reference)
                _print(base_row)
                row = bench(*common, **fast)
                _print(row)
                _print({
                    "case": "fast_vs_fp32",
                    "preset": preset,
                    "generator_steps_per_batch": generator_steps,
                    "fp32_ms": base_row["ms_per_step"],
                    "fast_ms": row["ms_per_step"],
                    "speedup": round(base_row["ms_per_step"] / row["ms_per_step"], 3),
                    "fp32_peak_mem_mib": base_row["peak_mem_mib"],
                    "fast_peak_mem_mib": row["peak_mem_mib"],
                })  # fmt: skip
            else:
                row = bench(*common, **chosen)
                _print(row)
            by_steps[generator_steps] = row["ms_per_step"]
            if args.reference_ms:
                _print({
                    "case": "vs_reference",
                    "preset": preset,
                    "generator_steps_per_batch": generator_steps,
                    "reference_ms": args.reference_ms,
                    "ratio": round(row["ms_per_step"] / args.reference_ms, 3),
                })  # fmt: skip
        if len(by_steps) > 1:
            first = args.generator_steps[0]
            _print({
                "case": "generator_steps",
                "preset": preset,
                "ms_per_step": {str(k): v for k, v in by_steps.items()},
                "ratio_to_first": {str(k): round(v / by_steps[first], 3) for k, v in by_steps.items()},
            })  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
