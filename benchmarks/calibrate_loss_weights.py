"""Calibrate the loss weights: each term's gradient at the network's outputs, at initialisation, on real data.

    python benchmarks/calibrate_loss_weights.py --vgg-weights random \\
        --out benchmarks/results/2026-12-07_cpu/loss_calibration.json \\
        > benchmarks/results/2026-12-07_cpu/loss_calibration.jsonl     # the committed run (no ImageNet VGG)
    python benchmarks/calibrate_loss_weights.py --data /data/vcip2020 --device cuda --inits 0 1 2 3 4 \\
        --batches 8 --out loss_calibration.json          # with the ImageNet VGG-19 file in place

What it measures (colormamba.losses.calibration): the generator of --model is built at initialisation with
torch.manual_seed(init) for each of --inits seeds, untrained, in training mode (its BatchNorm layers use the
batch's statistics, as in training); it runs forward under torch.no_grad() on --batches batches of
--batch-size training pairs, and its two outputs are then made leaf tensors, so that only the loss terms
are differentiated, not the network. For each term the L2 norm of d(term)/d(output) is taken: G_A's RGB
output for mse, cosine, msssim, vgg, histogram (w1) and each histogram distance's raw value
(`histogram:w1`, `histogram:kl`, `histogram:chi2`), G_B's HSV output for hsv; the target is normalised per
image as train_step does. Also the norm of the reference RGB objective's gradient, d(20 mse + 20 cosine +
20 msssim)/d(rgb).

The rule (colormamba.losses.calibration.derive_weights): (a) hsv weighs 1 everywhere; (b) R = |grad (20 mse
+ 20 cosine + 20 msssim)| / |grad hsv| is the reference's RGB:HSV balance; (c) in a configuration the
baseline's terms weigh 20 and each other RGB term (vgg, histogram) gets the weight that makes its gradient
norm the mean of the baseline's three weighted gradient norms; (d) the configuration's RGB weights are
then scaled by one factor so that the norm of its weighted RGB sum's gradient over |grad hsv| is R. Norms
are means over batches x inits; weights have 3 significant figures; `original` is 20/20/20/1. The
histogram distances' scales make each raw distance's gradient norm equal to w1's: |grad w1| / |grad d|.

Data: the training split of --data (default: $COLORMAMBA_VCIP2020), its
pairs sorted by name, then --batches x --batch-size of them drawn without replacement by a permutation
seeded with --seed; every init sees the same batches. Pairs are read as stored (or resized to
--image-size as a run reads them), without augmentation.

--vgg-weights: "pretrained" (the default) needs the ImageNet VGG-19 file (colormamba.losses.vgg; never
downloaded) and fails, saying so, without it; "random" (asked for explicitly) measures with a randomly
initialised VGG-19 (seeded), which the output records: its vgg norms then say nothing about the
pretrained network's, and the vgg weights derived from them are provisional.

Output: one JSON line per init x batch (the norms), then a summary line (R, weights, scales), on stdout;
--out gets the whole record: setup, per-term norm statistics (mean, sd, min, max over batches x inits),
R, the derived weights (and the unscaled weights and the factor of step (d)), the histogram distance
scales, each sample's Gram matrix of RGB gradients (the weights of any other rule can be recomputed from
it), and a `run` block (date, seconds, command: the only part that changes between two runs with the same
arguments).

Time: on 2 idle CPU cores the paper preset's forward on 8 images of 256x256 takes 85-92 s and the terms'
gradients (the random VGG-19 most of it) about 10 s, so the defaults (2 inits x 1 batch of 8) took 3 min 21 s
(6.4 CPU-minutes, 5.8 GB of memory) for the committed run, benchmarks/results/2026-12-07_cpu/; with the
cores shared by other work a forward took up to 340 s. Each further init or batch adds one forward. On a
GPU it takes seconds, so use more there (e.g. --inits 0 1 2 3 4 --batches 8). The tiny preset on 32x32
images takes a few seconds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's colormamba

import torch

from colormamba.data import DatasetError, detect_layout, list_split
from colormamba.data.dataset import PairedDataset
from colormamba.losses.calibration import (
    REFERENCE,
    TERMS,
    GradientSample,
    derive_weights,
    gradient_sample,
    histogram_distance_scales,
)
from colormamba.losses.histogram import HISTOGRAM_DISTANCES
from colormamba.losses.vgg import VGGPerceptualLoss, VGGWeightsNotFoundError
from colormamba.models import build_model, list_presets

DATA_ENV = "COLORMAMBA_VCIP2020"
VGG_SEED = 0  # the random VGG-19's initialisation, when --vgg-weights random


def default_data() -> str | None:
    return os.environ.get(DATA_ENV) or None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--data", default=None,
                        help=f"dataset root (default: ${DATA_ENV})")  # fmt: skip
    parser.add_argument("--model", default="paper", choices=list_presets(),
                        help="model preset (default paper)")
    parser.add_argument("--image-size", type=int, default=0, help="resize to NxN as read; 0: as stored")
    parser.add_argument("--batches", type=int, default=1, help="batches per init (default 1)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per batch (default 8, the study's)")
    parser.add_argument("--inits", type=int, nargs="+", default=[0, 1],
                        help="initialisation seeds of the model (default 0 1)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the batches' draw from the split")
    parser.add_argument("--vgg-weights", default="pretrained",
                        help='"pretrained" (default; fails if the file is absent), "random", or a path')
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON record here")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.batch_size < 1 or args.image_size < 0 or args.seed < 0:
        parser.error("--batches and --batch-size must be >= 1, --image-size and --seed >= 0")
    if len(set(args.inits)) != len(args.inits) or min(args.inits) < 0:
        parser.error(f"--inits must be distinct non-negative seeds, got {args.inits}")
    return args


class CalibrationError(RuntimeError):
    """A setup problem the script reports in one line (data or VGG weights absent)."""


def select_batches(n_pairs: int, batches: int, batch_size: int, seed: int) -> list[list[int]]:
    """Indices of the sorted pairs per batch: a seeded permutation, cut into batches (no repeats)."""
    needed = batches * batch_size
    if needed > n_pairs:
        raise CalibrationError(f"{batches} batches of {batch_size} need {needed} pairs; "
                               f"the split has {n_pairs}")
    order = torch.randperm(n_pairs, generator=torch.Generator().manual_seed(seed))[:needed].tolist()
    return [sorted(order[i * batch_size:(i + 1) * batch_size]) for i in range(batches)]


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}  # fmt: skip


def _build_vgg(weights: str, device: torch.device) -> VGGPerceptualLoss:
    torch.manual_seed(VGG_SEED)
    try:
        return VGGPerceptualLoss(weights).to(device)
    except VGGWeightsNotFoundError as exc:
        raise CalibrationError(f"{exc}\nTo calibrate without them, pass --vgg-weights random explicitly "
                               "(the output records it; its vgg weights are then provisional).") from None


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def calibrate(args: argparse.Namespace, emit: Callable[[str], Any] = print,
              command: str = "") -> dict[str, Any]:
    """Measure, derive, and return the record (`emit` gets each JSON line; `command` goes into `run`).

    Seeds torch (a forked RNG: the caller's is left as it was) and asks for deterministic algorithms
    while it runs, so that two runs with the same arguments on one machine write the same numbers.
    """
    device = torch.device(args.device)
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())  # fmt: skip
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return _calibrate(args, device, emit, command)
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])


def _calibrate(args: argparse.Namespace, device: torch.device, emit: Callable[[str], Any],
               command: str) -> dict[str, Any]:
    started, started_cpu = time.perf_counter(), time.process_time()
    where = args.data or default_data()
    if where is None:
        raise CalibrationError(f"no dataset: pass --data or set ${DATA_ENV} to the VCIP2020 copy")
    data = Path(where)
    if not data.is_dir():
        raise CalibrationError(f"dataset folder {data} not found: pass --data or set ${DATA_ENV} to the "
                               "VCIP2020 copy (NIR/, RGB-Registered/, ...)")  # fmt: skip
    vgg = _build_vgg(args.vgg_weights, device)  # first: a missing file fails before the slow part
    try:
        layout = detect_layout(data)
        listing = list_split(data, "train", layout)
    except DatasetError as exc:
        raise CalibrationError(f"{data}: {exc}") from None
    pairs = listing.pairs
    chosen = select_batches(len(pairs), args.batches, args.batch_size, args.seed)
    split = PairedDataset([pairs[i] for b in chosen for i in b], train=False, preload=False,
                          image_size=args.image_size)  # fmt: skip
    batches = []
    for b in range(args.batches):
        items = [split[b * args.batch_size + k] for k in range(args.batch_size)]
        batches.append((torch.stack([it["nir"] for it in items]), torch.stack([it["rgb"] for it in items]),
                        [it["name"] for it in items]))  # fmt: skip
    height, width = batches[0][0].shape[-2:]
    distances = list(HISTOGRAM_DISTANCES)

    samples: list[GradientSample] = []
    lines = []
    for init in args.inits:
        torch.manual_seed(init)
        model = build_model(args.model).to(device).train()  # training mode: BatchNorm on batch statistics
        for b, (nir, rgb, names) in enumerate(batches):
            t0, cpu0 = time.perf_counter(), time.process_time()
            with torch.no_grad():
                pred_rgb, pred_hsv = model(nir.to(device))
            forward_s = time.perf_counter() - t0
            sample = gradient_sample(pred_rgb, pred_hsv, rgb.to(device), TERMS, vgg, distances)
            samples.append(sample)
            line = {"bench": "loss_calibration", "init": init, "batch": b, "pairs": names,
                    "norms": sample.norms()}  # fmt: skip
            lines.append(line)
            timing = {"forward_s": round(forward_s, 2), "seconds": round(time.perf_counter() - t0, 2),
                      "cpu_s": round(time.process_time() - cpu0, 1)}  # fmt: skip
            emit(json.dumps(line | timing))
        del model

    derived = derive_weights(samples)
    scales = histogram_distance_scales(samples, distances)
    norm_keys = list(samples[0].norms())
    record = {
        "setup": {
            "model": args.model, "image_size": [int(height), int(width)], "resized_to": args.image_size,
            "batches": args.batches, "batch_size": args.batch_size, "inits": list(args.inits),
            "batch_seed": args.seed, "dataset": data.name, "layout": layout,
            "split": "train", "pairs": len(pairs), "augmentation": "none", "model_mode": "train",
            "vgg_weights": "random" if args.vgg_weights == "random" else
            ("pretrained" if args.vgg_weights == "pretrained" else f"file {Path(args.vgg_weights).name}"),
            "vgg_random_seed": VGG_SEED if args.vgg_weights == "random" else None,
            "histogram_distances": distances, "device": device.type, "torch": torch.__version__,
        },
        "rule": RULE,
        "norms": {k: _stats([s.norms()[k] for s in samples]) for k in norm_keys},
        "balance_R": derived.balance,
        "weights": derived.weights,
        "unscaled_weights": derived.unscaled,
        "scale": derived.scale,
        "histogram_distance_scales": scales,
        "samples": [
            {"init": ln["init"], "batch": ln["batch"], "pairs": ln["pairs"], **s.to_dict()}
            for ln, s in zip(lines, samples, strict=True)
        ],
    }
    seconds = time.perf_counter() - started
    record["run"] = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                     "seconds": round(seconds, 1), "cpu_seconds": round(time.process_time() - started_cpu, 1),
                     "threads": torch.get_num_threads(), "command": command}  # fmt: skip
    emit(json.dumps({"bench": "loss_calibration_summary", "balance_R": derived.balance,
                     "reference_norm": record["norms"][REFERENCE]["mean"],
                     "hsv_norm": record["norms"]["hsv"]["mean"], "weights": derived.weights,
                     "histogram_distance_scales": scales, "vgg_weights": record["setup"]["vgg_weights"],
                     "seconds": round(seconds, 1)}))  # fmt: skip
    return record


RULE = ("(a) hsv weighs 1; (b) R = |grad(20 mse + 20 cosine + 20 msssim)| / |grad hsv|; (c) baseline terms "
        "(mse, cosine, msssim) weigh 20, every other RGB term gets the weight that makes its gradient norm "
        "the mean of the baseline's three weighted gradient norms; (d) the configuration's RGB weights are "
        "scaled by one factor so that |grad(weighted RGB sum)| / |grad hsv| = R. Gradients at G_A's RGB "
        "and G_B's HSV outputs; norms averaged over batches x inits; 3 significant figures.")


def _command(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in ["python", "benchmarks/calibrate_loss_weights.py", *argv])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        record = calibrate(args, command=_command(argv))
    except CalibrationError as exc:
        _log(f"calibrate_loss_weights: {exc}")
        return 2
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        _log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
