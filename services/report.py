"""The comparison report of a study (evaluation.md, "What a comparison report holds"), rebuilt from the
store by the aggregator after every finished run and on demand.

Why it reads everything from the store: the report must be a pure function of the runs' stored outputs
(`metrics.json`, `per_image.csv`, `history.csv`, `samples/`, `status.json`), so rebuilding it any number
of times, from any machine, gives the same files, and a run counted twice is impossible (rows are keyed
by the spec's run ids).

Outputs under `reports/<study>/`: report.json (everything), report.csv (one row per configuration
variant), runs.csv, per_image.csv, differences.csv (paired differences against the baseline with 95%
bootstrap confidence intervals over images), curves.png, samples.png, report.md and report.html (one
self-contained page: plots and images inlined as data URIs, no scripts, opens from a file).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections import defaultdict
from typing import Any

import numpy as np

from colormamba.config import RunConfig
from colormamba.storage import ObjectNotFound, RunLocation, Storage
from services.spec import Study
from services.studies import load_study, now, read_status

METRICS = ("psnr", "ssim", "ae", "mae")
LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "ae": "AE (deg, angular)", "mae": "MAE (0-255)"}
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "ae": False, "mae": False}
BOOTSTRAP_RESAMPLES = 5000
CI_LEVEL = 0.95
MAX_PLOTTED_VARIANTS = 8  # curves and the sample grid show the best-ranked variants (plus the baseline)
REPORT_FILES = ("report.json", "report.csv", "runs.csv", "per_image.csv", "differences.csv", "curves.png",
                "samples.png", "report.md", "report.html")  # fmt: skip


def report_prefix(study: str) -> str:
    return f"reports/{study}"


# ---------------------------------------------------------------------------------------------------
# gathering


def _csv_rows(store: Storage, key: str) -> list[dict[str, str]]:
    try:
        text = store.get_bytes(key).decode()
    except ObjectNotFound:
        return []
    return list(csv.DictReader(io.StringIO(text)))


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, None
    arr = np.asarray(finite, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def bootstrap_ci(diffs: np.ndarray, level: float = CI_LEVEL, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """Percentile bootstrap interval of the mean of `diffs` (seeded: the report is reproducible).

    Why bootstrap: per-image differences of PSNR/AE are skewed and validation sets are small (18 images in
    VCIP2020's public copy), where a normal approximation is poor; no SciPy is needed either.
    """
    if diffs.size == 1:
        return float(diffs[0]), float(diffs[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diffs.size, size=(resamples, diffs.size))
    means = diffs[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def collect(store: Storage, study: Study) -> dict[str, Any]:
    """Everything the report shows, as plain data (this is report.json)."""
    runs = []
    per_image: list[dict[str, Any]] = []
    histories: dict[str, list[dict[str, Any]]] = {}
    for plan in study.runs:
        where = RunLocation(study.name, plan.run_id)
        status = read_status(store, study.name, plan.run_id) or {"state": "unsubmitted"}
        row = {
            "run": plan.run_id,
            "variant": plan.variant,
            "configuration": plan.configuration,
            "seed": plan.seed,
            "state": status.get("state"),
            "reason": status.get("reason"),
            "train_seconds": status.get("train_seconds"),
            "epochs": status.get("epochs_done"),
            "best_epoch": status.get("best_epoch"),
            "worker": status.get("worker"),
        }
        if status.get("state") == "succeeded":
            try:
                metrics = json.loads(store.get_bytes(where.artifact("metrics.json")))
            except ObjectNotFound:
                metrics = None
            if metrics is not None:
                row |= {m: metrics["metrics"][m]["mean"] for m in METRICS}
                row["protocol"] = metrics.get("protocol")
                row["split"] = metrics.get("split")
                for img in _csv_rows(store, where.artifact("per_image.csv")):
                    per_image.append(
                        {"variant": plan.variant, "seed": plan.seed, "run": plan.run_id, "name": img["name"],
                         **{m: _num(img[m]) for m in METRICS}}
                    )  # fmt: skip
            hist = _csv_rows(store, where.artifact("history.csv"))
            histories[plan.run_id] = [{k: _num(v) for k, v in h.items()} for h in hist]
        runs.append(row)

    variants = list(dict.fromkeys(r.variant for r in study.runs))
    summary = []
    for variant in variants:
        vruns = [r for r in runs if r["variant"] == variant]
        images = [p for p in per_image if p["variant"] == variant]
        states = defaultdict(int)
        for r in vruns:
            states[r["state"]] += 1
        row: dict[str, Any] = {
            "variant": variant,
            "configuration": vruns[0]["configuration"],
            "runs": len(vruns),
            "succeeded": states.get("succeeded", 0),
            "failed": states.get("failed", 0),
            "other": len(vruns) - states.get("succeeded", 0) - states.get("failed", 0),
        }
        for m in METRICS:
            mean, std = _mean_std([p[m] for p in images])
            seed_mean, seed_std = _mean_std([r.get(m) for r in vruns if r.get(m) is not None])
            row |= {
                f"{m}_mean": mean,
                f"{m}_std": std,
                f"{m}_seed_std": seed_std if seed_mean is not None else None,
            }
        row["n_images"] = len(images)
        row["train_seconds"] = _mean_std(
            [r["train_seconds"] for r in vruns if r["train_seconds"] is not None]
        )[0]
        row["epochs"] = max((r["epochs"] or 0 for r in vruns), default=0) or None
        best = [r["best_epoch"] for r in vruns if r["best_epoch"] is not None]
        row["best_epoch"] = "/".join(str(b) for b in best) if best else None
        summary.append(row)
    ranked = sorted((r for r in summary if r["psnr_mean"] is not None), key=lambda r: -r["psnr_mean"])
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    for r in summary:
        r.setdefault("rank", None)

    baseline_variant = next(v for v in variants if study.runs[[p.variant for p in study.runs].index(v)]
                            .configuration == study.baseline)  # fmt: skip
    differences = paired_differences(per_image, baseline_variant, variants)
    protocols = sorted({r["protocol"] for r in runs if r.get("protocol")})
    splits = sorted({r["split"] for r in runs if r.get("split")})
    return {
        "study": study.name,
        "description": study.spec.description,
        "generated_at": now(),
        "dataset": study.to_dict()["dataset"],
        "model": study.spec.model,
        "protocol": ", ".join(protocols) or study.spec.evaluation.protocol,
        "split": ", ".join(splits) or study.spec.evaluation.split,
        "checkpoint": study.spec.evaluation.checkpoint,
        "baseline": baseline_variant,
        "seeds": study.spec.seeds,
        "generator_steps_per_batch": generator_steps(study),
        "summary": summary,
        "runs": runs,
        "differences": differences,
        "per_image": per_image,
        "histories": histories,
        "ci": {
            "level": CI_LEVEL,
            "method": f"percentile bootstrap over images, {BOOTSTRAP_RESAMPLES} resamples",
        },
    }


def paired_differences(
    per_image: list[dict[str, Any]], baseline: str, variants: list[str]
) -> list[dict[str, Any]]:
    """Each variant minus the baseline, paired by (seed, image), with a bootstrap CI over the pairs."""
    by_key: dict[str, dict[tuple[int, str], dict[str, Any]]] = defaultdict(dict)
    for p in per_image:
        by_key[p["variant"]][(p["seed"], p["name"])] = p
    base = by_key.get(baseline, {})
    out = []
    for variant in variants:
        if variant == baseline:
            continue
        other = by_key.get(variant, {})
        keys = sorted(set(base) & set(other))
        for m in METRICS:
            pairs = [
                (other[k][m], base[k][m]) for k in keys if other[k][m] is not None and base[k][m] is not None
            ]
            row: dict[str, Any] = {
                "variant": variant,
                "baseline": baseline,
                "metric": m,
                "n_pairs": len(pairs),
            }
            if pairs:
                diffs = np.asarray([a - b for a, b in pairs], dtype=np.float64)
                low, high = bootstrap_ci(diffs)
                row |= {"mean_diff": float(diffs.mean()), "ci_low": low, "ci_high": high}
                sign = 1 if HIGHER_IS_BETTER[m] else -1
                lo, hi = sorted((low * sign, high * sign))  # the interval of the improvement
                row["verdict"] = "better" if lo > 0 else "worse" if hi < 0 else "no clear difference"
            else:
                row |= {"mean_diff": None, "ci_low": None, "ci_high": None, "verdict": "no paired images"}
            out.append(row)
    return out


# ---------------------------------------------------------------------------------------------------
# rendering


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-configuration table as printed by submit.py and shown first in every format."""
    rows = []
    for r in sorted(data["summary"], key=lambda r: (r["rank"] is None, r["rank"] or 0)):
        rows.append(
            {
                "rank": r["rank"] if r["rank"] is not None else "-",
                "configuration": r["variant"],
                "runs ok/all": f"{r['succeeded']}/{r['runs']}",
                **{LABELS[m]: _pm(r[f"{m}_mean"], r[f"{m}_std"], 4 if m == "ssim" else 2) for m in METRICS},
                "best epoch": r["best_epoch"] or "-",
                "train s": _fmt(r["train_seconds"], 1),
            }
        )
    return rows


def _pm(mean: float | None, std: float | None, digits: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def _plot_variants(data: dict[str, Any]) -> list[str]:
    ranked = [
        r["variant"] for r in sorted(data["summary"], key=lambda r: (r["rank"] is None, r["rank"] or 0))
    ]
    chosen = [v for v in ranked if any(h for run, h in data["histories"].items()
                                       if _variant_of(data, run) == v)][:MAX_PLOTTED_VARIANTS]  # fmt: skip
    if data["baseline"] not in chosen and any(
        _variant_of(data, run) == data["baseline"] for run in data["histories"]
    ):
        chosen.append(data["baseline"])
    return chosen


def _variant_of(data: dict[str, Any], run: str) -> str:
    return next(r["variant"] for r in data["runs"] if r["run"] == run)


def plot_curves(data: dict[str, Any]) -> bytes:
    """Training loss and validation PSNR per epoch, averaged over seeds, one line per variant."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_psnr = fig.subplots(1, 2)
    for variant in _plot_variants(data):
        per_epoch: dict[float, list[tuple[float | None, float | None]]] = defaultdict(list)
        for run, hist in data["histories"].items():
            if _variant_of(data, run) != variant:
                continue
            for h in hist:
                per_epoch[h["epoch"]].append((h.get("train_loss"), h.get("val_psnr")))
        epochs = sorted(per_epoch)
        loss = [_mean_std([a for a, _ in per_epoch[e]])[0] for e in epochs]
        psnr = [_mean_std([b for _, b in per_epoch[e]])[0] for e in epochs]
        ax_loss.plot(epochs, [np.nan if v is None else v for v in loss], marker="o", label=variant)
        ax_psnr.plot(epochs, [np.nan if v is None else v for v in psnr], marker="o", label=variant)
    ax_loss.set(title="training loss (mean over seeds)", xlabel="epoch", ylabel="loss")
    ax_psnr.set(title="validation PSNR (mean over seeds)", xlabel="epoch", ylabel="PSNR (dB)")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_psnr):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_psnr.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _image(store: Storage, key: str) -> np.ndarray | None:
    from PIL import Image

    try:
        return np.asarray(Image.open(io.BytesIO(store.get_bytes(key))).convert("RGB"))
    except ObjectNotFound:
        return None


def plot_samples(store: Storage, data: dict[str, Any], max_images: int = 4) -> bytes | None:
    """Rows: validation images; columns: NIR, each variant's prediction (its lowest seed), ground truth."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    chosen = _plot_variants(data)
    run_of = {}
    for v in chosen:
        ok = sorted((r for r in data["runs"] if r["variant"] == v and r["state"] == "succeeded"),
                    key=lambda r: r["seed"])  # fmt: skip
        if ok:
            run_of[v] = ok[0]["run"]
    if not run_of:
        return None
    first = next(iter(run_of.values()))
    sample_keys = store.list(RunLocation(data["study"], first).artifact("samples"))
    names = sorted({k.rsplit("/", 1)[1].rsplit("_", 1)[0] for k in sample_keys if k.endswith("_nir.png")})
    names = names[:max_images]
    if not names:
        return None
    cols = ["NIR", *run_of, "ground truth"]
    fig = Figure(figsize=(1.8 * len(cols), 1.9 * len(names) + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(names), len(cols), squeeze=False)
    for i, name in enumerate(names):
        cells = [RunLocation(data["study"], first).artifact(f"samples/{name}_nir.png")]
        cells += [
            RunLocation(data["study"], run).artifact(f"samples/{name}_pred.png") for run in run_of.values()
        ]
        cells += [RunLocation(data["study"], first).artifact(f"samples/{name}_gt.png")]
        for j, key in enumerate(cells):
            ax = axes[i][j]
            img = _image(store, key)
            if img is not None:
                ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=8)
            if j == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _csv(rows: list[dict[str, Any]], columns: list[str] | None = None) -> bytes:
    buf = io.StringIO()
    columns = columns or (list(dict.fromkeys(k for r in rows for k in r)) if rows else ["empty"])
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue().encode()


def _md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_none_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]).replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _difference_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "configuration": d["variant"],
            "metric": LABELS[d["metric"]],
            "mean difference": _fmt(d["mean_diff"], 4),
            f"{int(CI_LEVEL * 100)}% CI": f"[{_fmt(d['ci_low'], 4)}, {_fmt(d['ci_high'], 4)}]",
            "pairs": d["n_pairs"],
            "verdict": d["verdict"],
        }
        for d in data["differences"]
    ]


def _run_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "run": r["run"],
            "seed": r["seed"],
            "state": r["state"],
            **{LABELS[m]: _fmt(r.get(m), 4 if m == "ssim" else 2) for m in METRICS},
            "best epoch": r["best_epoch"],
            "train s": _fmt(r["train_seconds"], 1),
            "reason": (r["reason"] or "")[:200],
        }
        for r in data["runs"]
    ]


def generator_steps(study: Study) -> list[int]:
    """The generator updates per batch the study's runs take (several when a spec sweeps them); a run
    planned before the field existed trains with RunConfig's default, as the worker resolves it."""
    default = RunConfig.generator_steps_per_batch
    return sorted({run.config.get("generator_steps_per_batch", default) for run in study.runs})


def _intro(data: dict[str, Any]) -> list[str]:
    steps = ", ".join(str(n) for n in data.get("generator_steps_per_batch", []))
    return [
        f"Dataset `{data['dataset']}`, model preset `{data['model']}`, split `{data['split']}`, checkpoint "
        f"`{data['checkpoint']}`, protocol `{data['protocol']}`, seeds {data['seeds']}.",
        "Metrics per image at full resolution, then mean ± standard deviation over images and seeds. "
        "AE is the angular error in degrees; MAE is the mean absolute error on the 0-255 scale.",
        f"Paired differences: configuration minus baseline `{data['baseline']}` on the same (seed, image), "
        f"{int(CI_LEVEL * 100)}% {data['ci']['method']}; for AE and MAE lower is better.",
        f"Generator updates per batch: {steps or 'not recorded'} (the reference's fit.py takes 2).",
        "`original` (MSE + cosine + MS-SSIM on RGB, each weighted 20x the hsv term as the reference weighs "
        "RGB against HSV) is the study's baseline, not a reproduction of the published ColorMamba "
        "(24.56 dB PSNR): the reference's objective also has an autoencoder-feature term and GAN terms, "
        "which the study leaves out.",
    ]


def render_markdown(data: dict[str, Any]) -> str:
    failed = [r for r in data["runs"] if r["state"] == "failed"]
    parts = [f"# Study `{data['study']}`\n", data["description"] + "\n" if data["description"] else "",
             f"Generated {data['generated_at']}.\n", *(s + "\n" for s in _intro(data)),
             "\n## Configurations (ranked by PSNR)\n", _md_table(table_rows(data))]  # fmt: skip
    if failed:
        parts += ["\n**Failed runs:** " + "; ".join(f"`{r['run']}`: {r['reason']}" for r in failed) + "\n"]
    parts += ["\n## Paired differences against the baseline\n", _md_table(_difference_rows(data)),
              "\n## Curves\n", "![curves](curves.png)\n", "\n## Samples\n", "![samples](samples.png)\n",
              "\n## Runs\n", _md_table(_run_rows(data)),
              "\nPer-image values: `per_image.csv`; everything: `report.json`.\n"]  # fmt: skip
    return "".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
tr.failed td{background:#fde8e8}.note{color:#555;font-size:13px}img{max-width:100%}
"""


def _html_table(rows: list[dict[str, Any]], table_id: str, failed_key: str | None = None) -> str:
    if not rows:
        return f'<p id="{table_id}">none</p>'
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cls = ' class="failed"' if failed_key and r.get(failed_key) == "failed" else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in cols) + "</tr>")
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def render_html(data: dict[str, Any], curves: bytes | None, samples: bytes | None) -> str:
    """One page with everything inlined: it opens from a file, offline, with no server."""

    def img(png: bytes | None, alt: str, img_id: str) -> str:
        if png is None:
            return f'<p class="note">no {alt} yet</p>'
        b64 = base64.b64encode(png).decode()
        return f'<img id="{img_id}" alt="{alt}" src="data:image/png;base64,{b64}">'

    failed = [r for r in data["runs"] if r["state"] == "failed"]
    failed_html = ""
    if failed:
        items = "".join(f"<li><code>{html.escape(r['run'])}</code>: {html.escape(str(r['reason']))}</li>"
                        for r in failed)  # fmt: skip
        failed_html = f'<h3>Failed runs</h3><ul id="failed">{items}</ul>'
    intro = "".join(f'<p class="note">{html.escape(s)}</p>' for s in _intro(data))
    title = f"Study {html.escape(data['study'])}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{_CSS}</style></head>
<body>
<h1>{title}</h1>
<p>{html.escape(data["description"])}</p>
<p class="note">Generated {html.escape(data["generated_at"])}.</p>
{intro}
<h2>Configurations (ranked by PSNR)</h2>
{_html_table(table_rows(data), "summary")}
{failed_html}
<h2>Paired differences against the baseline</h2>
{_html_table(_difference_rows(data), "differences")}
<h2>Training and validation curves</h2>
{img(curves, "curves", "curves")}
<h2>Samples</h2>
{img(samples, "samples", "samples")}
<h2>Runs</h2>
{_html_table(_run_rows(data), "runs", failed_key="state")}
</body></html>
"""


def build_report(store: Storage, study_name: str) -> dict[str, Any]:
    """Rebuild and write every report file of a study; returns the report's data (report.json)."""
    study = load_study(store, study_name)
    data = collect(store, study)
    curves = plot_curves(data) if data["histories"] else None
    samples = plot_samples(store, data)
    prefix = report_prefix(study_name)
    files: dict[str, bytes] = {
        "report.json": json.dumps(data, indent=1, default=str).encode(),
        "report.csv": _csv(data["summary"]),
        "runs.csv": _csv(data["runs"]),
        "per_image.csv": _csv(data["per_image"], ["variant", "seed", "run", "name", *METRICS]),
        "differences.csv": _csv(data["differences"]),
        "report.md": render_markdown(data).encode(),
        "report.html": render_html(data, curves, samples).encode(),
    }
    if curves is not None:
        files["curves.png"] = curves
    if samples is not None:
        files["samples.png"] = samples
    for name, payload in files.items():  # each object is replaced atomically; report.html last
        if name != "report.html":
            store.put_bytes(f"{prefix}/{name}", payload)
    store.put_bytes(f"{prefix}/report.html", files["report.html"])
    return data


def download_report(store: Storage, study: str, out_dir: Any) -> list[str]:
    """Copy `reports/<study>/` to a local folder; returns the file names."""
    from pathlib import Path

    out = Path(out_dir)
    keys = store.list(report_prefix(study))
    if not keys:
        raise ValueError(
            f"no report for study {study!r} yet in {store!r}; `report` builds one when runs finished"
        )
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for key in keys:
        name = key[len(report_prefix(study)) + 1 :]
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(store.get_bytes(key))
        names.append(name)
    return names
