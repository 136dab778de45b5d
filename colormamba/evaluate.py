"""Evaluation: colorize a split at full resolution and score every image (PSNR, SSIM, AE, MAE, LPIPS).

`predict_split` is shared by the per-epoch validation inside training and by the final evaluation, so
the numbers in the history and in `metrics.json` are computed the same way. Only the final evaluation
computes LPIPS (a network forward per image); validation leaves it out.

The final evaluation also scores two trivial predictions of every image with the same metrics and
protocol (`score_trivial`): the NIR copied to three channels and the training split's mean image. A
configuration that does not beat them learned nothing usable (docs/evaluation.md, "The report's
statistics").
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from colormamba import checkpoint
from colormamba.config import RunConfig, resolve_device
from colormamba.data import Pair, PairedDataset, list_pairs
from colormamba.data.dataset import sized
from colormamba.imaging import encode_png, load_image
from colormamba.lpips_score import LPIPSScore
from colormamba.metrics import AE_DEFINITIONS, METRIC_NAMES, compute_metrics, prepare_target
from colormamba.models import build_model_from_config
from colormamba.storage import RunLocation, Storage

log = logging.getLogger(__name__)

# The trivial predictions the final evaluation scores beside the network's, in the order reports show them.
TRIVIAL_REFERENCES = ("nir", "train_mean")


@dataclass
class Predictions:
    """Per-image scores of a split, and the first few images for the report's sample grid."""

    names: list[str]
    metrics: dict[str, torch.Tensor]  # metric -> (N,), in METRIC_NAMES order
    samples: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    # (name, nir (1,H,W), prediction (3,H,W), target as scored (3,H,W))
    missing: dict[str, str] = field(default_factory=dict)  # metric -> why some or all values are NaN


# predict_split colorizes consecutive same-size images together, up to this many pixels a batch: eight
# 256x256 frames, the training batch, whose activations fit wherever training does; a larger frame goes alone.
PREDICT_BATCH_PIXELS = 8 * 256 * 256


def predict_split(
    model: nn.Module,
    split: PairedDataset,
    protocol: str,
    device: torch.device,
    keep_predictions: int = 0,
    on_image: Callable[[int, int], None] | None = None,
    batch_pixels: int = PREDICT_BATCH_PIXELS,
    lpips: LPIPSScore | None = None,
) -> Predictions:
    """Colorize each pair's NIR image at its own size and score it against its RGB partner.

    Consecutive images of one size go through the network together, up to `batch_pixels` pixels at a time
    (the network treats the images of a batch independently in eval mode, so a split with mixed sizes gets
    the same scores, in smaller batches); scores stay on the device until the end: one sync per split, not
    one per image, as validation runs every epoch.

    Args:
        split: a non-augmenting dataset (`train=False`); training builds it once and validates on it
            every epoch, so the images are read from disk once per run, not once per epoch.
        keep_predictions: keep (name, nir, prediction, target) of the first this-many images.
        on_image: called with (images done, images in the split) after each batch.
        lpips: score LPIPS too (once per image); None leaves it out of `metrics`.
    """
    if split.train:
        raise ValueError("predict_split needs a split without augmentation (PairedDataset(train=False))")
    was_training = model.training
    model.eval()
    names: list[str] = []
    computed = [m for m in METRIC_NAMES if lpips is not None or m != "lpips"]
    scores: dict[str, list[torch.Tensor]] = {m: [] for m in computed}
    missing: dict[str, str] = {}
    samples = []
    items = (split[i] for i in range(len(split)))
    with torch.no_grad():
        for batch in _same_size_batches(items, batch_pixels):
            nir = torch.stack([item["nir"] for item in batch]).to(device)  # (b, 1, H, W)
            gt = torch.stack([item["rgb"] for item in batch]).to(device)  # (b, 3, H, W)
            rgb = model(nir)[0].float()
            values = compute_metrics(rgb, gt, protocol, lpips)
            for m in scores:
                scores[m].append(values[m])
            if lpips is not None and (reason := lpips.reason_for(*gt.shape[-2:])) is not None:
                missing.setdefault("lpips", reason)
            for j, item in enumerate(batch):
                if len(names) < keep_predictions:
                    target = prepare_target(gt[j : j + 1], protocol)[0]
                    samples.append((item["name"], nir[j].cpu(), rgb[j].cpu(), target.cpu()))
                names.append(item["name"])
            if on_image is not None:
                on_image(len(names), len(split))
    model.train(was_training)
    return Predictions(names, {m: torch.cat(v).cpu() for m, v in scores.items()}, samples, missing)


def _same_size_batches(items: Iterable[dict[str, Any]], max_pixels: int) -> Iterator[list[dict[str, Any]]]:
    """Consecutive items grouped while they share one frame size and the group holds at most `max_pixels`
    pixels (one item at least)."""
    batch: list[dict[str, Any]] = []
    for item in items:
        pixels = item["nir"].shape[-2] * item["nir"].shape[-1]
        full = (len(batch) + 1) * pixels > max_pixels
        if batch and (full or item["nir"].shape != batch[0]["nir"].shape):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def summarize(metrics: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Mean, spread and range of each metric over images (infinite PSNRs of perfect images kept)."""
    out = {}
    for name, values in metrics.items():
        v = values.double()
        out[name] = {
            "mean": float(v.mean()),
            "std": float(v.std(unbiased=True)) if v.numel() > 1 else 0.0,
            "median": float(v.median()),
            "min": float(v.min()),
            "max": float(v.max()),
            "n": int(v.numel()),
        }
    return out


def per_image_csv(pred: Predictions) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    columns = [m for m in METRIC_NAMES if m in pred.metrics]
    writer.writerow(["name", *columns])
    for i, name in enumerate(pred.names):
        writer.writerow([name, *(f"{float(pred.metrics[m][i]):.6f}" for m in columns)])
    return buf.getvalue().encode()


def trivial_description(reference: str, protocol: str, train_pairs: int = 0) -> str:
    """What a trivial prediction is, in words (metrics.json carries it, the report shows it)."""
    normalised = protocol == "colormamba"
    if reference == "nir":
        how = ("min-max normalised per image, as the network sees it and as the `colormamba` protocol scores "
               "the ground truth" if normalised else "as read, in [0, 1]")  # fmt: skip
        return f"the NIR image copied to R, G and B ({how})"
    if reference == "train_mean":
        each = ", each min-max normalised per image as the protocol scores it" if normalised else ""
        return (
            f"the training split's mean ground-truth image: each pixel position's mean colour over its "
            f"{train_pairs} pairs{each}, resized (bilinear, antialiased) to an image of another size"
        )
    raise ValueError(f"unknown trivial reference {reference!r}; known: {', '.join(TRIVIAL_REFERENCES)}")


def train_mean_image(pairs: Sequence[Pair], protocol: str, image_size: int = 0) -> torch.Tensor:
    """The mean of the training split's ground truth as `protocol` scores it, per pixel position.

    Streaming: one image in memory at a time and a float64 running sum. Images are read as training
    reads them (`image_size`: colormamba.data.dataset.sized); a pair of another size than the first is
    resized to the first's size (training itself needs one size, so this does not occur for a split a run
    trained on).

    Returns:
        (3, H, W) float64 on the CPU, H x W the first pair's size.
    """
    total: torch.Tensor | None = None
    for pair in pairs:  # the RGB side only, read as a run reads it
        rgb = sized(load_image(pair.rgb, 3), image_size)
        target = prepare_target(rgb.double().unsqueeze(0), protocol)  # (1, 3, H, W)
        if total is None:
            total = torch.zeros_like(target)
        total += resize_image(target, tuple(total.shape[-2:]))
    if total is None:
        raise ValueError("train_mean_image needs at least one pair")
    return total[0] / len(pairs)


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., C, H, W) to (..., C, *size): bilinear, antialiased when shrinking; unchanged at that size."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    batch = image if image.ndim == 4 else image.unsqueeze(0)
    out = F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out if image.ndim == 4 else out[0]


def score_trivial(
    split: PairedDataset,
    mean_image: torch.Tensor | None,
    protocol: str,
    device: torch.device,
    batch_pixels: int = PREDICT_BATCH_PIXELS,
    lpips: LPIPSScore | None = None,
) -> dict[str, Predictions]:
    """Score the trivial predictions of each image of `split` as `predict_split` scores the network's
    (`compute_metrics`, the same protocol, batches and LPIPS scorer).

    - `nir`: the NIR copied to three channels, prepared as the protocol prepares the ground truth
      (min-max normalised per image under `colormamba`, as read under `plain`);
    - `train_mean`: `mean_image` (train_mean_image), resized to each image's size; left out when None.

    Returns:
        reference -> its per-image scores (no samples), in TRIVIAL_REFERENCES order.
    """
    if split.train:
        raise ValueError("score_trivial needs a split without augmentation (PairedDataset(train=False))")
    references = [r for r in TRIVIAL_REFERENCES if r != "train_mean" or mean_image is not None]
    computed = [m for m in METRIC_NAMES if lpips is not None or m != "lpips"]
    scores: dict[str, dict[str, list[torch.Tensor]]] = {r: {m: [] for m in computed} for r in references}
    missing: dict[str, str] = {}
    names: list[str] = []
    means: dict[tuple[int, int], torch.Tensor] = {}  # the mean image at each frame size met, on the device
    items = (split[i] for i in range(len(split)))
    for batch in _same_size_batches(items, batch_pixels):
        nir = torch.stack([item["nir"] for item in batch]).to(device)  # (b, 1, H, W)
        gt = torch.stack([item["rgb"] for item in batch]).to(device)  # (b, 3, H, W)
        size = (gt.shape[-2], gt.shape[-1])
        preds = {"nir": prepare_target(nir.expand(-1, 3, -1, -1), protocol)}
        if mean_image is not None:
            if size not in means:
                means[size] = resize_image(mean_image, size).to(device)
            preds["train_mean"] = means[size].expand(len(batch), -1, -1, -1)
        for reference, pred in preds.items():
            values = compute_metrics(pred, gt, protocol, lpips)
            for m in computed:
                scores[reference][m].append(values[m])
        if lpips is not None and (reason := lpips.reason_for(*size)) is not None:
            missing.setdefault("lpips", reason)
        names += [item["name"] for item in batch]
    return {
        r: Predictions(list(names), {m: torch.cat(v).cpu() for m, v in scores[r].items()}, [], dict(missing))
        for r in references
    }


def trivial_per_image_csv(trivial: dict[str, Predictions]) -> bytes:
    """Per-image values of the trivial predictions: one row per (image, reference)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    columns = [m for m in METRIC_NAMES if any(m in p.metrics for p in trivial.values())]
    writer.writerow(["name", "reference", *columns])
    for reference, pred in trivial.items():
        for i, name in enumerate(pred.names):
            writer.writerow([name, reference, *(f"{float(pred.metrics[m][i]):.6f}" for m in columns)])
    return buf.getvalue().encode()


def _json_summary(summary: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """`summarize`'s numbers as metrics.json stores them: NaN and infinities as null."""
    return {k: {s: (v if math.isfinite(v) else None) for s, v in d.items()} for k, d in summary.items()}


@dataclass
class EvalResult:
    checkpoint_epoch: int
    summary: dict[str, dict[str, float]]
    predictions: Predictions
    trivial: dict[str, Predictions] = field(default_factory=dict)  # reference -> its per-image scores


def evaluate(
    cfg: RunConfig,
    store: Storage,
    where: RunLocation,
    which: str = "best",
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> EvalResult:
    """Score a trained run's checkpoint on the reporting split (`cfg.report_split`) and write metrics.json,
    per_image.csv and samples/ under the run's keys; the trivial predictions (`score_trivial`, with the
    mean image of the training split) go into metrics.json's `trivial` and trivial_per_image.csv.

    Args:
        which: "best" (highest PSNR on the selection split, `cfg.select_split`: the study's choice) or "last".
    """
    key = where.checkpoint(which)
    state = checkpoint.load(store, key)
    device = resolve_device(cfg.device)
    model = build_model_from_config(state["model_config"]).to(device)
    checkpoint.load_weights(model, state["model"], key)
    report_pairs = list_pairs(cfg.dataset, cfg.report_split, layout=cfg.layout)
    split = PairedDataset(report_pairs, train=False, image_size=cfg.image_size)

    def on_image(done: int, total: int) -> None:
        if on_progress is not None:
            on_progress({"phase": "evaluate", "step": done, "steps": total})

    lpips = LPIPSScore.load(cfg.lpips_weights).to(device)
    pred = predict_split(
        model, split, cfg.protocol, device, keep_predictions=cfg.num_samples, on_image=on_image, lpips=lpips
    )
    summary = summarize(pred.metrics)
    trivial, train_pairs, trivial_missing = _trivial_predictions(cfg, split, device, lpips)
    record = {
        "study": where.study,
        "run": where.run,
        "select_split": cfg.select_split,
        "report_split": cfg.report_split,
        "protocol": cfg.protocol,
        "checkpoint": which,
        "checkpoint_epoch": state["epoch"],
        "n_images": len(pred.names),
        "metrics": _json_summary(summary),
        "ae_unit": "degrees (angular error)",
        "ae_definition": AE_DEFINITIONS[cfg.protocol],
        "mae_unit": "0-255 scale",
        "lpips_net": "alex",
        "missing_metrics": pred.missing,  # metric -> why its values are missing (NaN / null)
        # the trivial predictions of the same images, scored alike (docs/evaluation.md)
        "trivial": {
            reference: {
                "description": trivial_description(reference, cfg.protocol, train_pairs),
                "metrics": _json_summary(summarize(p.metrics)),
            }
            for reference, p in trivial.items()
        },
        "trivial_missing": trivial_missing,  # reference -> why it was not scored
    }
    for name, nir, rgb, gt in pred.samples:
        store.put_bytes(where.artifact(f"samples/{name}_nir.png"), encode_png(nir))
        store.put_bytes(where.artifact(f"samples/{name}_pred.png"), encode_png(rgb))
        store.put_bytes(where.artifact(f"samples/{name}_gt.png"), encode_png(gt))
    store.put_bytes(where.artifact("per_image.csv"), per_image_csv(pred))
    store.put_bytes(where.artifact("trivial_per_image.csv"), trivial_per_image_csv(trivial))
    store.put_bytes(where.artifact("metrics.json"), json.dumps(record, indent=2).encode())
    return EvalResult(state["epoch"], summary, pred, trivial)


def _trivial_predictions(
    cfg: RunConfig, split: PairedDataset, device: torch.device, lpips: LPIPSScore
) -> tuple[dict[str, Predictions], int, dict[str, str]]:
    """The trivial predictions' scores on `split`, the number of training pairs the mean image is over,
    and why a reference is missing. A training split that cannot be read (DatasetError, or load_image's
    ValueError naming the file) leaves `train_mean` out with its reason: the evaluation of a trained run
    is not given up for a reference."""
    mean_image, train_pairs, missing = None, 0, {}
    try:
        pairs = list_pairs(cfg.dataset, "train", layout=cfg.layout)
        mean_image, train_pairs = train_mean_image(pairs, cfg.protocol, cfg.image_size), len(pairs)
    except ValueError as exc:
        log.warning("trivial reference train_mean left out: %s", exc)
        missing["train_mean"] = f"the training split could not be read: {exc}"
    return score_trivial(split, mean_image, cfg.protocol, device, lpips=lpips), train_pairs, missing
