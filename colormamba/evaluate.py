"""Evaluation: colorize a split at full resolution and score every image (PSNR, SSIM, AE, MAE).

`predict_split` is shared by the per-epoch validation inside training and by the final evaluation, so
the numbers in the history and in `metrics.json` are computed the same way.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from colormamba import checkpoint
from colormamba.config import RunConfig, resolve_device
from colormamba.data import PairedDataset, list_pairs
from colormamba.imaging import encode_png
from colormamba.metrics import compute_metrics, prepare_target
from colormamba.models import build_model_from_config
from colormamba.storage import RunLocation, Storage

log = logging.getLogger(__name__)

METRIC_NAMES = ("psnr", "ssim", "ae", "mae")


@dataclass
class Predictions:
    """Per-image scores of a split, and the first few images for the report's sample grid."""

    names: list[str]
    metrics: dict[str, torch.Tensor]  # metric -> (N,)
    samples: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    # (name, nir (1,H,W), prediction (3,H,W), target as scored (3,H,W))


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
    """
    if split.train:
        raise ValueError("predict_split needs a split without augmentation (PairedDataset(train=False))")
    was_training = model.training
    model.eval()
    names: list[str] = []
    scores: dict[str, list[torch.Tensor]] = {m: [] for m in METRIC_NAMES}
    samples = []
    items = (split[i] for i in range(len(split)))
    with torch.no_grad():
        for batch in _same_size_batches(items, batch_pixels):
            nir = torch.stack([item["nir"] for item in batch]).to(device)  # (b, 1, H, W)
            gt = torch.stack([item["rgb"] for item in batch]).to(device)  # (b, 3, H, W)
            rgb = model(nir)[0].float()
            values = compute_metrics(rgb, gt, protocol)
            for m in METRIC_NAMES:
                scores[m].append(values[m])
            for j, item in enumerate(batch):
                if len(names) < keep_predictions:
                    target = prepare_target(gt[j : j + 1], protocol)[0]
                    samples.append((item["name"], nir[j].cpu(), rgb[j].cpu(), target.cpu()))
                names.append(item["name"])
            if on_image is not None:
                on_image(len(names), len(split))
    model.train(was_training)
    return Predictions(names, {m: torch.cat(v).cpu() for m, v in scores.items()}, samples)


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
    writer.writerow(["name", *METRIC_NAMES])
    for i, name in enumerate(pred.names):
        writer.writerow([name, *(f"{float(pred.metrics[m][i]):.6f}" for m in METRIC_NAMES)])
    return buf.getvalue().encode()


@dataclass
class EvalResult:
    checkpoint_epoch: int
    summary: dict[str, dict[str, float]]
    predictions: Predictions


def evaluate(
    cfg: RunConfig,
    store: Storage,
    where: RunLocation,
    which: str = "best",
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> EvalResult:
    """Score a trained run's checkpoint on the reporting split (`cfg.report_split`) and write metrics.json,
    per_image.csv and samples/ under the run's keys.

    Args:
        which: "best" (highest PSNR on the selection split, `cfg.select_split`: the study's choice) or "last".
    """
    state = checkpoint.load(store, where.checkpoint(which))
    device = resolve_device(cfg.device)
    model = build_model_from_config(state["model_config"]).to(device)
    model.load_state_dict(state["model"])
    split = PairedDataset(list_pairs(cfg.dataset, cfg.report_split, layout=cfg.layout), train=False)

    def on_image(done: int, total: int) -> None:
        if on_progress is not None:
            on_progress({"phase": "evaluate", "step": done, "steps": total})

    pred = predict_split(
        model, split, cfg.protocol, device, keep_predictions=cfg.num_samples, on_image=on_image
    )
    summary = summarize(pred.metrics)
    record = {
        "study": where.study,
        "run": where.run,
        "select_split": cfg.select_split,
        "report_split": cfg.report_split,
        "protocol": cfg.protocol,
        "checkpoint": which,
        "checkpoint_epoch": state["epoch"],
        "n_images": len(pred.names),
        "metrics": {
            k: {s: (v if math.isfinite(v) else None) for s, v in d.items()} for k, d in summary.items()
        },
        "ae_unit": "degrees (angular error)",
        "mae_unit": "0-255 scale",
    }
    for name, nir, rgb, gt in pred.samples:
        store.put_bytes(where.artifact(f"samples/{name}_nir.png"), encode_png(nir))
        store.put_bytes(where.artifact(f"samples/{name}_pred.png"), encode_png(rgb))
        store.put_bytes(where.artifact(f"samples/{name}_gt.png"), encode_png(gt))
    store.put_bytes(where.artifact("per_image.csv"), per_image_csv(pred))
    store.put_bytes(where.artifact("metrics.json"), json.dumps(record, indent=2).encode())
    return EvalResult(state["epoch"], summary, pred)
