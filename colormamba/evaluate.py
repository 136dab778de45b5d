"""Evaluation: colorize a split at full resolution and score every image (PSNR, SSIM, AE, MAE, LPIPS).

`predict_split` is shared by the per-epoch validation inside training and by the final evaluation, so
the numbers in the history and in `metrics.json` are computed the same way. Only the final evaluation
computes LPIPS (a network forward per image); validation leaves it out.
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
from colormamba.lpips_score import LPIPSScore
from colormamba.metrics import AE_DEFINITIONS, METRIC_NAMES, compute_metrics, prepare_target
from colormamba.models import build_model_from_config
from colormamba.storage import RunLocation, Storage

log = logging.getLogger(__name__)


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
    key = where.checkpoint(which)
    state = checkpoint.load(store, key)
    device = resolve_device(cfg.device)
    model = build_model_from_config(state["model_config"]).to(device)
    checkpoint.load_weights(model, state["model"], key)
    split = PairedDataset(list_pairs(cfg.dataset, cfg.report_split, layout=cfg.layout), train=False)

    def on_image(done: int, total: int) -> None:
        if on_progress is not None:
            on_progress({"phase": "evaluate", "step": done, "steps": total})

    lpips = LPIPSScore.load(cfg.lpips_weights).to(device)
    pred = predict_split(
        model, split, cfg.protocol, device, keep_predictions=cfg.num_samples, on_image=on_image, lpips=lpips
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
        "ae_definition": AE_DEFINITIONS[cfg.protocol],
        "mae_unit": "0-255 scale",
        "lpips_net": "alex",
        "missing_metrics": pred.missing,  # metric -> why its values are missing (NaN / null)
    }
    for name, nir, rgb, gt in pred.samples:
        store.put_bytes(where.artifact(f"samples/{name}_nir.png"), encode_png(nir))
        store.put_bytes(where.artifact(f"samples/{name}_pred.png"), encode_png(rgb))
        store.put_bytes(where.artifact(f"samples/{name}_gt.png"), encode_png(gt))
    store.put_bytes(where.artifact("per_image.csv"), per_image_csv(pred))
    store.put_bytes(where.artifact("metrics.json"), json.dumps(record, indent=2).encode())
    return EvalResult(state["epoch"], summary, pred)
