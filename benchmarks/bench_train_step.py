"""Time one training step (forward, backward, Adam) of a model preset; print JSON lines.

    python benchmarks/bench_train_step.py --preset tiny --batch 2 --size 64
    python benchmarks/bench_train_step.py --preset paper --batch 8 --size 256 --device cuda --reference-ms 265

The loss is MSE on both outputs, as in performance.md's reference measurement, so the figure isolates
the network. Each case prints {"case", "preset", "batch", "size", "device", "ms_per_step" (median),
"peak_mem_mib", ...}; with --reference-ms a last line gives the ratio to that reference.
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

from colormamba.models import build_model


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; whole process


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
) -> dict[str, object]:
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    model = build_model(preset, scan_backend=scan_backend).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))
    nir = torch.rand(batch, 1, size, size, device=device)
    target = torch.rand(batch, 3, size, size, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            rgb, hsv = model(nir)
            loss = F.mse_loss(rgb.float(), target) + F.mse_loss(hsv.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
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
    parser.add_argument("--reference-ms", type=float, default=None, help="a reference step time to compare")
    args = parser.parse_args()
    device = torch.device(args.device)
    for preset in args.preset:
        row = bench(
            preset,
            args.batch,
            args.size,
            device,
            args.steps,
            args.warmup,
            args.scan_backend,
            not args.no_tf32,
            args.bf16,
        )
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
