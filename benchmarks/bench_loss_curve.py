"""Does the training fast path train to the same loss curve as the fp32 path, within noise? JSON lines.

    python benchmarks/bench_loss_curve.py                  # paper preset, 256x256, batch 8, 300 steps, auto
    python benchmarks/bench_loss_curve.py --preset tiny --size 64 --batch 4 --steps 80 --window 10
    python benchmarks/bench_loss_curve.py --dataset /data/vcip2020 --device cuda --scan-backend triton

The same run configuration (colormamba.config.RunConfig, trained by colormamba.train.train) is trained
three times for exactly --steps training steps (batches; each takes RunConfig's generator_steps_per_batch
generator updates):

    fp32        precision "fp32", the default layout, seed S           (the reference-faithful path)
    fast        precision "bf16" + channels_last, seed S               (the fast path)
    fp32_seed2  precision "fp32", seed S+1                             (the noise reference: another seed
                                                                        changes the initialisation, the data
                                                                        order and the augmentation)

The per-step training losses come from train()'s on_progress events. The steps are cut into windows of
--window steps (the last one may be shorter) and each curve is smoothed to its mean loss per window. Per
window, relative to the fp32 curve:

    gap_fast  = |fast - fp32| / fp32
    gap_noise = |fp32_seed2 - fp32| / fp32

"Within noise" is decided over the last half of the windows (windows[n // 2:], where the early, fast
descent no longer dominates): with mean_fast and mean_noise the means of gap_fast and gap_noise there,

    within_noise = mean_fast <= max(mean_noise, floor)          (floor: --floor, default 0.02 = 2 %)

i.e. the fast path may differ from fp32 by as much as a change of seed does, or by the floor when the
seed-to-seed noise is tinier than that (a large dataset, a long window). The summary line states the
rule and its numbers.

Output: one line per window {"bench": "loss_curve", "window", "steps": [first, last] (1-based, inclusive),
"fp32", "fast", "fp32_seed2", "gap_fast", "gap_noise"}, then {"bench": "loss_curve_summary", ...} with the
verdict and the training-loop seconds of each run (train()'s train_seconds: the steps only, without the
per-epoch validation and checkpoints).

Steps are spread over epochs: without --dataset a synthetic set of --train-images pairs (default 32
batches) is generated; an epoch has at most ceil(train images / batch) steps, and the largest divisor of
--steps not above that is used as max_steps_per_epoch, with epochs = steps / that. Everything else is
RunConfig's defaults (lr 1e-4 halved every 25 epochs, augmentation, loss preset) unless an option says
otherwise; the three runs share it all but precision, layout and seed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's colormamba

import torch

from colormamba.config import RunConfig, resolve_device
from colormamba.data import list_pairs
from colormamba.data.synthetic import make_synthetic_dataset
from colormamba.storage import LocalStorage, RunLocation
from colormamba.train import train

DEFAULT_FLOOR = 0.02

# ---------------------------------------------------------------------------------------------------
# the comparison (pure functions)


def window_means(losses: Sequence[float], window: int) -> list[tuple[int, int, float]]:
    """Mean loss per window of `window` steps: [(first_step, last_step, mean)], steps 1-based inclusive.

    The last window holds the remainder when len(losses) is not a multiple of `window`.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out = []
    for start in range(0, len(losses), window):
        chunk = losses[start : start + window]
        out.append((start + 1, start + len(chunk), math.fsum(chunk) / len(chunk)))
    return out


def relative_gap(value: float, reference: float) -> float:
    """|value - reference| / |reference| (inf when the reference is 0 and the value is not)."""
    if reference == 0:
        return 0.0 if value == 0 else math.inf
    return abs(value - reference) / abs(reference)


def compare_curves(
    fp32: Sequence[float], fast: Sequence[float], fp32_seed2: Sequence[float], window: int
) -> list[dict[str, Any]]:
    """Per-window rows of the three curves (each a loss per step, all of the same length) and their gaps."""
    if not len(fp32) == len(fast) == len(fp32_seed2):
        raise ValueError(f"curves differ in length: {len(fp32)}, {len(fast)}, {len(fp32_seed2)}")
    rows = []
    windows = zip(
        window_means(fp32, window), window_means(fast, window), window_means(fp32_seed2, window), strict=True
    )
    for i, ((a, b, ref), (_, _, f), (_, _, n)) in enumerate(windows):
        rows.append(
            {
                "window": i,
                "steps": [a, b],
                "fp32": ref,
                "fast": f,
                "fp32_seed2": n,
                "gap_fast": relative_gap(f, ref),
                "gap_noise": relative_gap(n, ref),
            }
        )
    return rows


def verdict(
    gap_fast: Sequence[float], gap_noise: Sequence[float], floor: float = DEFAULT_FLOOR
) -> dict[str, Any]:
    """The within-noise decision over the last half of the windows (windows[n // 2:]).

    within_noise = mean(gap_fast) <= max(mean(gap_noise), floor) over those windows.
    """
    if len(gap_fast) != len(gap_noise) or not gap_fast:
        raise ValueError(f"need equally many (>= 1) gaps, got {len(gap_fast)} and {len(gap_noise)}")
    first = len(gap_fast) // 2
    fast_mean = math.fsum(gap_fast[first:]) / (len(gap_fast) - first)
    noise_mean = math.fsum(gap_noise[first:]) / (len(gap_noise) - first)
    threshold = max(noise_mean, floor)
    return {
        "rule": "mean gap_fast <= max(mean gap_noise, floor) over windows[n//2:]",
        "windows_judged": [first, len(gap_fast) - 1],
        "gap_fast_mean": fast_mean,
        "gap_noise_mean": noise_mean,
        "floor": floor,
        "threshold": threshold,
        "within_noise": fast_mean <= threshold,
    }


def epoch_plan(steps: int, max_steps_per_epoch: int) -> tuple[int, int]:
    """(epochs, steps_per_epoch) with epochs * steps_per_epoch == steps, steps_per_epoch the largest
    divisor of `steps` not above `max_steps_per_epoch`."""
    if steps < 1 or max_steps_per_epoch < 1:
        raise ValueError(f"steps and max_steps_per_epoch must be >= 1, got {steps}, {max_steps_per_epoch}")
    per_epoch = max(d for d in range(1, min(steps, max_steps_per_epoch) + 1) if steps % d == 0)
    return steps // per_epoch, per_epoch


# ---------------------------------------------------------------------------------------------------
# the runs


def train_curve(cfg: RunConfig, store: LocalStorage, name: str) -> tuple[list[float], float]:
    """Train one run from scratch; its per-step training losses and training-loop seconds."""
    losses: list[float] = []

    def record(event: dict[str, Any]) -> None:
        if event.get("phase") == "train":
            losses.append(float(event["loss"]))

    result = train(cfg, store, RunLocation("loss-curve", name), on_progress=record)
    return losses, result.train_seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="paper", help="model preset (colormamba.models.list_presets)")
    parser.add_argument("--size", type=int, default=256, help="side of the generated images")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300, help="training steps (batches) per run")
    parser.add_argument("--window", type=int, default=25, help="steps per smoothing window")
    parser.add_argument("--seed", type=int, default=0, help="S: fp32 and fast use S, the noise run S+1")
    parser.add_argument("--floor", type=float, default=DEFAULT_FLOOR, help="smallest gap tolerated")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--loss", default="original", help="loss preset: original | vgg | histogram | combined"
    )
    parser.add_argument(
        "--vgg-weights",
        default="random",
        help="for the vgg term: random (no download), pretrained, or a path to vgg19-dcbb9e9d.pth",
    )
    parser.add_argument("--dataset", default="", help="dataset root; default: a generated synthetic set")
    parser.add_argument(
        "--train-images", type=int, default=0, help="pairs of the generated set (default 32 batches)"
    )
    parser.add_argument("--scan-backend", default="auto")
    parser.add_argument("--lr", type=float, default=None, help="default: RunConfig's")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.window < 1 or args.batch < 1:
        parser.error("--steps, --window and --batch must be >= 1")
    device = resolve_device(args.device)
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="bench_loss_curve_") as tmp:
        if args.dataset:
            dataset = Path(args.dataset)
            n_train = len(list_pairs(dataset, "train"))
        else:
            n_train = args.train_images or 32 * args.batch
            dataset = make_synthetic_dataset(
                Path(tmp) / "data", n_train=n_train, n_val=2, size=args.size, seed=args.seed
            )
        epochs, per_epoch = epoch_plan(args.steps, math.ceil(n_train / args.batch))
        base = {
            "dataset": str(dataset),
            "model": args.preset,
            "scan_backend": args.scan_backend,
            "loss": args.loss,
            "vgg_weights": args.vgg_weights,
            "epochs": epochs,
            "max_steps_per_epoch": per_epoch,
            "batch_size": args.batch,
            "device": str(device),
            "num_samples": 0,
            **({"lr": args.lr} if args.lr is not None else {}),
        }
        fp32 = RunConfig(**base, seed=args.seed)
        fast = RunConfig(**base, seed=args.seed, precision="bf16", channels_last=True)
        noise = RunConfig(**base, seed=args.seed + 1)
        store = LocalStorage(Path(tmp) / "store")
        curves, seconds = {}, {}
        print(json.dumps({"bench": "loss_curve_setup", "train_images": n_train, "epochs": epochs,
                          "steps_per_epoch": per_epoch, "seconds": round(time.perf_counter() - started, 2)}),
              flush=True)  # fmt: skip
        for name, cfg in (("fp32", fp32), ("fast", fast), ("fp32_seed2", noise)):
            run_started = time.perf_counter()
            curves[name], seconds[name] = train_curve(cfg, store, name)
            if len(curves[name]) != args.steps:
                raise RuntimeError(f"{name}: trained {len(curves[name])} steps, expected {args.steps}")
            # a line per finished run: a benchmark cut short by a time limit still says how far it got
            tail = curves[name][-args.window :]
            print(json.dumps({"bench": "loss_curve_run", "run": name, "steps": len(curves[name]),
                              "train_seconds": round(seconds[name], 2),
                              "wall_seconds": round(time.perf_counter() - run_started, 2),
                              "last_window_loss": round(math.fsum(tail) / len(tail), 6)}),
                  flush=True)  # fmt: skip

    rows = compare_curves(curves["fp32"], curves["fast"], curves["fp32_seed2"], args.window)
    for row in rows:
        print(json.dumps({"bench": "loss_curve", **_rounded(row)}), flush=True)
    decision = verdict([r["gap_fast"] for r in rows], [r["gap_noise"] for r in rows], args.floor)
    summary = {
        "bench": "loss_curve_summary",
        "preset": args.preset,
        "size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "window": args.window,
        "epochs": epochs,
        "steps_per_epoch": per_epoch,
        "train_images": n_train,
        "loss": args.loss,
        "seed": args.seed,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "scan_backend": args.scan_backend,
        **decision,
        "seconds_fp32": round(seconds["fp32"], 2),
        "seconds_fast": round(seconds["fast"], 2),
        "seconds_fp32_seed2": round(seconds["fp32_seed2"], 2),
    }
    print(json.dumps(_rounded(summary)), flush=True)
    return 0


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    """Floats to 6 significant digits for reading; the verdict is computed before rounding."""
    return {k: float(f"{v:.6g}") if isinstance(v, float) and math.isfinite(v) else v for k, v in row.items()}


if __name__ == "__main__":
    sys.exit(main())
