"""The report's figures, drawn from the collected data (services.report.collect) and the runs' sample
images: curves (each configuration's training loss on its own axis, validation PSNR together), the
per-image scatter of each configuration against the baseline, and the sample grid with error maps.

Each figure is built by a `*_figure` function (tests count its axes) and turned into PNG bytes by `png`.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from colormamba.storage import ObjectNotFound, RunLocation, Storage
from services.report.collect import _mean_std
from services.report.names import LABELS, MAX_PLOTTED_VARIANTS

PANEL_COLUMNS = 4  # curves panels per row
LEGEND = {"fontsize": 7}


def png(fig: Figure | None) -> bytes | None:
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _ranked_variants(data: dict[str, Any]) -> list[str]:
    return [r["variant"] for r in sorted(data["summary"], key=lambda r: (r["rank"] is None, r["rank"] or 0))]


def _plot_variants(data: dict[str, Any], has: set[str]) -> list[str]:
    """The best-ranked variants among `has` (at most MAX_PLOTTED_VARIANTS), plus the baseline if in `has`."""
    chosen = [v for v in _ranked_variants(data) if v in has][:MAX_PLOTTED_VARIANTS]
    if data["baseline"] in has and data["baseline"] not in chosen:
        chosen.append(data["baseline"])
    return chosen


def _runs_of(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["run"]: r for r in data["runs"]}


def _new_figure(n_panels: int, width: float = 3.3, height: float = 2.6) -> tuple[Figure, list[Any]]:
    cols = min(PANEL_COLUMNS, n_panels)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        fig.delaxes(ax)
    return fig, axes[:n_panels]


def curves_figure(data: dict[str, Any]) -> Figure | None:
    """Validation PSNR of every plotted variant on one axis (mean over seeds), then one small axis per
    variant with its runs' training loss: losses of different configurations are different functions,
    so they never share a scale. A running run's curve is drawn so far and labelled as such."""
    runs = _runs_of(data)
    by_variant: dict[str, list[str]] = defaultdict(list)
    for run, hist in data["histories"].items():
        if hist:
            by_variant[runs[run]["variant"]].append(run)
    variants = _plot_variants(data, set(by_variant))
    if not variants:
        return None
    fig, axes = _new_figure(len(variants) + 1)
    ax_psnr = axes[0]
    for variant in variants:
        per_epoch: dict[float, list[float | None]] = defaultdict(list)
        for run in by_variant[variant]:
            for h in data["histories"][run]:
                per_epoch[h["epoch"]].append(h.get("val_psnr"))
        epochs = sorted(e for e in per_epoch if e is not None)
        psnr = [_mean_std(per_epoch[e])[0] for e in epochs]
        ax_psnr.plot(epochs, [np.nan if v is None else v for v in psnr], marker="o", ms=3, label=variant)
    ax_psnr.set(title="validation PSNR (mean over seeds)", xlabel="epoch", ylabel="PSNR (dB)")
    for ax, variant in zip(axes[1:], variants, strict=True):
        for run in sorted(by_variant[variant], key=lambda r: runs[r]["seed"]):
            hist = [h for h in data["histories"][run] if h.get("epoch") is not None]
            label = f"seed {runs[run]['seed']}" + (" (running)" if runs[run]["state"] != "succeeded" else "")
            ax.plot([h["epoch"] for h in hist], [np.nan if h.get("train_loss") is None else h["train_loss"]
                                                 for h in hist], marker="o", ms=3, label=label)  # fmt: skip
        ax.set(title=f"training loss: {variant}", xlabel="epoch", ylabel="loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.title.set_fontsize(9)
        ax.legend(**LEGEND)
    return fig


def scatter_figure(data: dict[str, Any], metric: str = "psnr") -> Figure | None:
    """One panel per variant: each image's `metric` under the baseline (x) against under the variant (y),
    same seed and image; for a higher-is-better metric (PSNR) points above the diagonal are images where
    the variant wins, whatever the means say."""
    base: dict[tuple[int, str], float] = {}
    other: dict[str, dict[tuple[int, str], float]] = defaultdict(dict)
    for p in data["per_image"]:
        if p[metric] is None:
            continue
        key = (p["seed"], p["name"])
        if p["variant"] == data["baseline"]:
            base[key] = p[metric]
        else:
            other[p["variant"]][key] = p[metric]
    paired = {v: sorted(k for k in pts if k in base) for v, pts in other.items()}
    has = {v for v, keys in paired.items() if keys}
    variants = [v for v in _plot_variants(data, has) if v != data["baseline"]]
    if not variants:
        return None
    fig, axes = _new_figure(len(variants), width=3.2, height=3.2)
    for ax, variant in zip(axes, variants, strict=True):
        keys = paired[variant]
        x = np.array([base[k] for k in keys])
        y = np.array([other[variant][k] for k in keys])
        for seed in sorted({s for s, _ in keys}):
            mask = np.array([s == seed for s, _ in keys])
            ax.scatter(x[mask], y[mask], s=10, alpha=0.7, label=f"seed {seed}")
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.4", lw=1, ls="--", label="y = x")
        ax.set(xlim=(lo - pad, hi + pad), ylim=(lo - pad, hi + pad), aspect="equal")
        ax.set(xlabel=f"{data['baseline']}: {LABELS[metric]}", ylabel=f"{variant}: {LABELS[metric]}")
        wins = int((y > x).sum())
        ax.set_title(f"{variant} above the diagonal on {wins}/{len(keys)}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(**LEGEND)
    return fig


def _image(store: Storage, key: str) -> np.ndarray | None:
    from PIL import Image

    try:
        return np.asarray(Image.open(io.BytesIO(store.get_bytes(key))).convert("RGB"))
    except ObjectNotFound:
        return None


def error_map(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """|prediction - truth| per pixel, mean over the RGB channels, on the 0-255 scale of the PNGs."""
    if pred.shape != truth.shape:
        raise ValueError(f"sample shapes differ: prediction {pred.shape}, ground truth {truth.shape}")
    return np.abs(pred.astype(np.float64) - truth.astype(np.float64)).mean(axis=2)


def samples_figure(store: Storage, data: dict[str, Any], max_images: int = 4) -> Figure | None:
    """Per image two rows: NIR, each variant's prediction (its lowest succeeded seed), ground truth; and
    below each prediction its error map, all error maps on one colour scale (the colour bar's)."""
    by_seed = sorted((r for r in data["runs"] if r["state"] == "succeeded"), key=lambda r: r["seed"])
    has = {r["variant"] for r in by_seed}
    run_of = {v: next(r["run"] for r in by_seed if r["variant"] == v) for v in _plot_variants(data, has)}
    if not run_of:
        return None
    first = RunLocation(data["study"], next(iter(run_of.values())))
    sample_keys = store.list(first.artifact("samples"))
    names = sorted({k.rsplit("/", 1)[1].rsplit("_", 1)[0] for k in sample_keys if k.endswith("_nir.png")})
    names = names[:max_images]
    if not names:
        return None
    grid = []  # per image: nir, {variant: pred}, gt
    for name in names:
        preds = {v: _image(store, RunLocation(data["study"], run).artifact(f"samples/{name}_pred.png"))
                 for v, run in run_of.items()}  # fmt: skip
        grid.append((name, _image(store, first.artifact(f"samples/{name}_nir.png")), preds,
                     _image(store, first.artifact(f"samples/{name}_gt.png"))))  # fmt: skip
    errors = {(name, v): error_map(p, gt) for name, _, preds, gt in grid for v, p in preds.items()
              if p is not None and gt is not None}  # fmt: skip
    vmax = max((float(e.max()) for e in errors.values()), default=0.0) or 1.0
    cols = ["NIR", *run_of, "ground truth"]
    fig = Figure(figsize=(1.8 * len(cols) + 0.8, 3.6 * len(names) + 0.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 * len(names), len(cols), squeeze=False)
    shown = None
    for i, (name, nir, preds, gt) in enumerate(grid):
        top, bottom = axes[2 * i], axes[2 * i + 1]
        for j, img in enumerate([nir, *preds.values(), gt]):
            if img is not None:
                top[j].imshow(img, interpolation="nearest")
            if i == 0:
                top[j].set_title(cols[j], fontsize=8)
        for j, variant in enumerate(run_of, 1):
            if (name, variant) in errors:
                shown = bottom[j].imshow(errors[name, variant], cmap="magma", vmin=0, vmax=vmax,
                                         interpolation="nearest")  # fmt: skip
        top[0].set_ylabel(name, fontsize=7)
        bottom[0].set_ylabel("|prediction - truth|", fontsize=7)
        for ax in (*top, *bottom):
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in (bottom[0], bottom[-1]):
            ax.set_frame_on(False)
    if shown is not None:
        bar = fig.colorbar(shown, ax=axes[:, -1].tolist(), shrink=0.6)
        bar.set_label("mean |error| over RGB (0-255)", fontsize=8)
    return fig
