"""The comparison report of a study (docs/evaluation.md, "The report's statistics"), rebuilt from the
store by the aggregator after every finished run and on demand.

Why it reads everything from the store: the report must be a pure function of the runs' stored outputs
(`metrics.json`, `per_image.csv`, `history.csv`, `samples/`, `status.json`), so rebuilding it any number
of times, from any machine, gives the same files, and a run counted twice is impossible (rows are keyed
by the spec's run ids).

Outputs under `reports/<study>/`: report.json (everything), report.csv (one row per configuration
variant), runs.csv, per_image.csv, differences.csv (paired differences against the baseline with 95%
intervals over seeds and images, Holm-adjusted verdicts: services/stats.py), curves.png, samples.png,
report.md and report.html (one self-contained page: plots and images inlined as data URIs, no scripts,
opens from a file).
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
from colormamba.provenance import COMPARED
from colormamba.storage import ObjectNotFound, RunLocation, Storage
from services.spec import Study
from services.stats import holm, paired_interval, verdict
from services.studies import load_study, now, read_status

METRICS = ("psnr", "ssim", "ae", "mae", "lpips")
LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "ae": "AE (deg, angular)", "mae": "MAE (0-255)",
          "lpips": "LPIPS (AlexNet)"}  # fmt: skip
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "ae": False, "mae": False, "lpips": False}
CI_LEVEL = 0.95  # the intervals' level; verdicts are made at alpha = 1 - CI_LEVEL, family-wise (Holm)
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


def collect(store: Storage, study: Study) -> dict[str, Any]:
    """Everything the report shows, as plain data (this is report.json)."""
    runs = []
    provenances: dict[str, list[dict[str, Any]]] = {}  # run -> provenance of each attempt
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
            "select_split": status.get("select_split"),
            "report_split": status.get("report_split"),
            # the ranking metric: the selection split's numbers of the evaluated checkpoint
            **{f"select_{m}": (status.get("select_metrics") or {}).get(m) for m in METRICS},
            **{k: (status.get("provenance") or {}).get(k) for k in (*COMPARED, "git_dirty")},
        }
        attempts = [status.get("provenance"), *(status.get("provenance_earlier") or [])]
        provenances[plan.run_id] = [p for p in attempts if p]
        if status.get("state") == "succeeded":
            try:
                metrics = json.loads(store.get_bytes(where.artifact("metrics.json")))
            except ObjectNotFound:
                metrics = None
            if metrics is not None:
                # runs evaluated before a metric existed (e.g. LPIPS) show it empty, not a broken report
                row |= {m: metrics["metrics"].get(m, {}).get("mean") for m in METRICS}
                row["missing_metrics"] = metrics.get("missing_metrics")
                row["protocol"] = metrics.get("protocol")
                row["report_split"] = metrics.get("report_split")
                for img in _csv_rows(store, where.artifact("per_image.csv")):
                    per_image.append(
                        {"variant": plan.variant, "seed": plan.seed, "run": plan.run_id, "name": img["name"],
                         **{m: _num(img.get(m)) for m in METRICS}}
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
        row["select_psnr_mean"] = _mean_std([r["select_psnr"] for r in vruns if r["state"] == "succeeded"])[0]
        row["train_seconds"] = _mean_std(
            [r["train_seconds"] for r in vruns if r["train_seconds"] is not None]
        )[0]
        row["epochs"] = max((r["epochs"] or 0 for r in vruns), default=0) or None
        best = [r["best_epoch"] for r in vruns if r["best_epoch"] is not None]
        row["best_epoch"] = "/".join(str(b) for b in best) if best else None
        summary.append(row)
    # Ranked on the selection split: ranking on the reported numbers would pick each sweep's luckiest
    # variant on the very split it then reports (docs/evaluation.md).
    ranked = sorted((r for r in summary if r["select_psnr_mean"] is not None),
                    key=lambda r: -r["select_psnr_mean"])  # fmt: skip
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    for r in summary:
        r.setdefault("rank", None)

    baseline_variant = next(v for v in variants if study.runs[[p.variant for p in study.runs].index(v)]
                            .configuration == study.baseline)  # fmt: skip
    differences = paired_differences(per_image, baseline_variant, variants)
    protocols = sorted({r["protocol"] for r in runs if r.get("protocol")})
    evaluation = study.spec.evaluation
    return {
        "study": study.name,
        "description": study.spec.description,
        "generated_at": now(),
        "dataset": study.to_dict()["dataset"],
        "model": study.spec.model,
        "protocol": ", ".join(protocols) or study.spec.evaluation.protocol,
        "select_split": _joined(runs, "select_split", evaluation.select_split),
        "report_split": _joined(runs, "report_split", evaluation.report_split),
        "checkpoint": evaluation.checkpoint,
        "provenance_differences": provenance_differences(provenances),
        "dirty_runs": sorted(run for run, ps in provenances.items() if any(p.get("git_dirty") for p in ps)),
        "baseline": baseline_variant,
        "seeds": study.spec.seeds,
        "generator_steps_per_batch": generator_steps(study),
        "summary": summary,
        "runs": runs,
        "differences": differences,
        "per_image": per_image,
        "histories": histories,
        "ci": ci_summary(differences),
    }


def _joined(runs: list[dict[str, Any]], key: str, default: str) -> str:
    """The values of `key` over the runs that recorded one (normally one), else the spec's."""
    return ", ".join(sorted({r[key] for r in runs if r.get(key)})) or default


def provenance_differences(provenances: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, list[str]]]:
    """The provenance fields (colormamba.provenance.COMPARED) whose value is not the same for every run
    that recorded one, each as {value: [runs]} (a run resumed elsewhere counts under each of its values)."""
    out = {}
    for field in COMPARED:
        runs_by_value: dict[str, list[str]] = defaultdict(list)
        for run, attempts in provenances.items():
            for value in dict.fromkeys(str(p.get(field)) for p in attempts):
                runs_by_value[value].append(run)
        if len(runs_by_value) > 1:
            out[field] = dict(sorted(runs_by_value.items()))
    return out


def paired_differences(
    per_image: list[dict[str, Any]], baseline: str, variants: list[str]
) -> list[dict[str, Any]]:
    """Each variant minus the baseline per metric: interval, Holm-adjusted p-value and verdict.

    Pairs are (seed, image): the seeds both configurations have (the same seed shares initialisation and
    data order), and the images every one of those runs scored. The interval resamples seeds, then images
    (services/stats.py); the verdicts are corrected over every (variant, metric) row of the table.
    """
    by_variant: dict[str, dict[tuple[int, str], dict[str, Any]]] = defaultdict(dict)
    for p in per_image:
        by_variant[p["variant"]][(p["seed"], p["name"])] = p
    base = by_variant.get(baseline, {})
    out = []
    for variant in variants:
        if variant == baseline:
            continue
        other = by_variant.get(variant, {})
        for m in METRICS:
            diffs = _paired_matrix(base, other, m)
            row: dict[str, Any] = {"variant": variant, "baseline": baseline, "metric": m,
                                   "n_seeds": diffs.shape[0], "n_images": diffs.shape[1]}  # fmt: skip
            out.append(row | _interval_fields(diffs))
    tested = [r for r in out if r["p_value"] is not None]
    adjusted = holm(np.asarray([r["p_value"] for r in tested], dtype=np.float64))
    for r, p_adj in zip(tested, adjusted, strict=True):
        r["p_adjusted"] = float(p_adj)
    for r in out:
        r.setdefault("p_adjusted", None)
        r["verdict"] = (verdict(r["mean_diff"], r["p_adjusted"], HIGHER_IS_BETTER[r["metric"]], 1 - CI_LEVEL)
                        if r["n_seeds"] else "no paired images")  # fmt: skip
    return out


def _paired_matrix(
    base: dict[tuple[int, str], dict[str, Any]], other: dict[tuple[int, str], dict[str, Any]], metric: str
) -> np.ndarray:
    """(n_seeds, n_images) differences other - base on the seeds both have and the images all of them
    scored (a seed that failed in either configuration drops out; the images are the same in every run)."""
    seeds = sorted({s for s, _ in base} & {s for s, _ in other})
    names = sorted({n for _, n in base} | {n for _, n in other})
    names = [
        n for n in names
        if all(t.get((s, n), {}).get(metric) is not None for s in seeds for t in (base, other))
    ]  # fmt: skip
    if not seeds or not names:
        return np.zeros((0, 0))
    return np.asarray(
        [[other[(s, n)][metric] - base[(s, n)][metric] for n in names] for s in seeds], dtype=np.float64
    )


def _interval_fields(diffs: np.ndarray) -> dict[str, Any]:
    if not diffs.size:
        return {"mean_diff": None, "ci_low": None, "ci_high": None, "p_value": None, "df": None}
    res = paired_interval(diffs, CI_LEVEL)
    return {"mean_diff": float(res.mean), "ci_low": _finite(res.low), "ci_high": _finite(res.high),
            "p_value": _finite(res.p_value), "df": res.df}  # fmt: skip


def _finite(value: Any) -> float | None:
    out = float(value)
    return out if math.isfinite(out) else None


def ci_summary(differences: list[dict[str, Any]]) -> dict[str, Any]:
    """What the differences table did, in words and numbers (report.json's `ci`, shown above the table)."""
    tested = [d for d in differences if d["p_adjusted"] is not None]
    variants = len({d["variant"] for d in tested})
    metrics = len({d["metric"] for d in tested})
    seeds = sorted({d["n_seeds"] for d in tested})
    several = [s for s in seeds if s >= 2]
    parts = []
    if several:
        parts.append(
            f"with several seeds ({'/'.join(map(str, several))}): t interval on the per-seed mean "
            "differences (configuration minus baseline, same seed and same images), n_seeds - 1 degrees of "
            "freedom, so run-to-run training noise is inside the interval"
        )
    if 1 in seeds:
        parts.append(
            "with one seed: t interval over the per-image differences, n_images - 1 degrees of freedom; "
            "run-to-run training noise is NOT in the interval, and the verdicts are about these particular "
            "trained networks only"
        )
    method = "; ".join(parts) or "no paired differences yet"
    plural = "s" * (variants != 1)
    correction = (f"Holm over the table's {len(tested)} comparisons ({variants} configuration{plural} x "
                  f"{metrics} metrics), family-wise error rate {1 - CI_LEVEL:.2f}")  # fmt: skip
    return {
        "level": CI_LEVEL,
        "method": method,
        "p_value": "two-sided, from the same t statistic as the interval",
        "comparisons": len(tested),
        "correction": correction,
        "seed_noise_included": bool(tested) and 1 not in seeds,
    }


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
                f"{data['select_split']} PSNR (selection)": _fmt(r["select_psnr_mean"], 2),
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


DIFFERENCE_COLUMNS = ["variant", "baseline", "metric", "n_seeds", "n_images", "mean_diff", "ci_low",
                      "ci_high", "p_value", "p_adjusted", "verdict", "df"]  # fmt: skip


def _difference_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "configuration": d["variant"],
            "metric": LABELS[d["metric"]],
            "seeds": d["n_seeds"],
            "images": d["n_images"],
            "mean difference": _fmt(d["mean_diff"], 4),
            f"{int(CI_LEVEL * 100)}% CI": f"[{_fmt(d['ci_low'], 4)}, {_fmt(d['ci_high'], 4)}]",
            "p (Holm)": _fmt_p(d["p_adjusted"]),
            "verdict": d["verdict"],
        }
        for d in data["differences"]
    ]


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _difference_notes(data: dict[str, Any]) -> list[str]:
    """How to read the differences table: what the interval holds and how the verdicts are corrected."""
    ci = data["ci"]
    notes = [
        f"Configuration minus baseline `{data['baseline']}`, paired by seed and image; for AE and MAE lower "
        f"is better. {int(CI_LEVEL * 100)}% interval: {ci['method']}.",
        f"Verdicts: p-values {ci['p_value']}; correction: {ci['correction']}. A verdict is better or worse "
        f"when the Holm-adjusted p-value is below {1 - CI_LEVEL:.2f}; the interval beside it is the "
        f"uncorrected {int(CI_LEVEL * 100)}% one.",
    ]
    one_seed = sum(1 for d in data["differences"] if d["n_seeds"] == 1)
    if one_seed:
        notes.append(
            f"Warning: {one_seed} of {len(data['differences'])} comparisons rest on one seed per "
            "configuration: run-to-run training noise is not in their intervals, and their verdicts are "
            "about these particular trained networks only, not about the loss configurations."
        )
    return notes


def _run_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "run": r["run"],
            "seed": r["seed"],
            "state": r["state"],
            **{LABELS[m]: _fmt(r.get(m), 4 if m == "ssim" else 2) for m in METRICS},
            "best epoch": r["best_epoch"],
            "train s": _fmt(r["train_seconds"], 1),
            **_provenance_cells(r),
            "reason": (r["reason"] or "")[:200],
        }
        for r in data["runs"]
    ]


def _provenance_cells(run: dict[str, Any]) -> dict[str, str]:
    """A run's provenance in a few short cells (every field is in runs.csv and report.json)."""
    if run.get("version") is None:
        return {"code": "-", "torch / CUDA": "-", "scan": "-", "device": "-", "arithmetic": "-"}
    commit = (run["git_commit"] or "unknown commit")[:10] + ("+dirty" if run["git_dirty"] else "")
    flags = [run["precision"], *(name for name in ("compile", "channels_last", "deterministic") if run[name])]
    return {
        "code": f"{run['version']} @ {commit}",
        "torch / CUDA": f"{run['torch']} / {run['cuda'] or 'none'}",
        "scan": run["scan_backend"],
        "device": run["device_name"],
        "arithmetic": ", ".join(flags),
    }


def _warnings(data: dict[str, Any]) -> list[str]:
    """Header lines about runs that were not computed alike (colormamba.provenance)."""
    lines = []
    differing = data["provenance_differences"]
    if differing:
        fields = "; ".join(
            f"{field}: " + ", ".join(f"{value} ({len(runs)} run{'s' if len(runs) > 1 else ''})"
                                     for value, runs in values.items())
            for field, values in differing.items()
        )  # fmt: skip
        lines.append(f"Warning: the runs of this study were not computed alike, so part of their differences "
                     f"may come from that. They differ in {fields}. See the runs table.")  # fmt: skip
    if data["dirty_runs"]:
        lines.append(f"Note: {len(data['dirty_runs'])} run(s) ran from a working tree with uncommitted "
                     f"changes (`+dirty`), so their commit does not pin their code: "
                     f"{', '.join(data['dirty_runs'])}.")  # fmt: skip
    return lines


def _splits_line(data: dict[str, Any]) -> str:
    """Which split chose the checkpoint, which one the numbers are on, and what ranks the configurations."""
    select, report = data["select_split"], data["report_split"]
    if data["checkpoint"] == "best":
        rule = f"checkpoint `best`: each run's epoch with the highest PSNR on `{select}`"
    else:
        rule = f"checkpoint `last`: each run's final epoch (chosen on no split; `{select}` is validated)"
    line = (f"Selection split `{select}`, reporting split `{report}`; {rule}. The metrics are `{report}`'s; "
            f"configurations are ranked by `{select}` PSNR of the evaluated checkpoint, never by the "
            "reported numbers.")  # fmt: skip
    if select == report:
        line += (f" The metrics are on the selection split itself: no checkpoint was chosen on `{report}`, "
                 "but the ranking was, so the top-ranked configurations are optimistic.")  # fmt: skip
    return line


def generator_steps(study: Study) -> list[int]:
    """The generator updates per batch the study's runs take (several when a spec sweeps them); a run
    planned before the field existed trains with RunConfig's default, as the worker resolves it."""
    default = RunConfig.generator_steps_per_batch
    return sorted({run.config.get("generator_steps_per_batch", default) for run in study.runs})


def _intro(data: dict[str, Any]) -> list[str]:
    steps = ", ".join(str(n) for n in data.get("generator_steps_per_batch", []))
    return [
        f"Dataset `{data['dataset']}`, model preset `{data['model']}`, protocol `{data['protocol']}`, "
        f"seeds {data['seeds']}.",
        _splits_line(data),
        "Metrics per image at full resolution, then mean ± standard deviation over images and seeds. "
        "AE is the angular error in degrees: under the `colormamba` protocol the published code's formula, "
        "the mean over pixels of arccos(<gt, pred> / (|gt| |pred| + 1e-6)), which scores identical images "
        "slightly above 0 (black pixels 90°); under `plain` the exact angle, 0 for identical pixels. MAE is "
        "the mean absolute error on the 0-255 scale; LPIPS is AlexNet's, empty where its weights are absent.",
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
             *(f"\n**{s}**\n" for s in _warnings(data)),
             f"\n## Configurations (ranked by {data['select_split']} PSNR)\n",
             _md_table(table_rows(data))]  # fmt: skip
    if failed:
        parts += ["\n**Failed runs:** " + "; ".join(f"`{r['run']}`: {r['reason']}" for r in failed) + "\n"]
    parts += ["\n## Paired differences against the baseline\n",
              *(s + "\n\n" for s in _difference_notes(data)), _md_table(_difference_rows(data)),
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
.warning{background:#fff4d6;border-left:4px solid #d98c00;padding:6px 10px;font-weight:600}
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
    intro += "".join(f'<p class="warning">{html.escape(s)}</p>' for s in _warnings(data))
    diff_notes = "".join(f'<p class="note">{html.escape(s)}</p>' for s in _difference_notes(data))
    title = f"Study {html.escape(data['study'])}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{_CSS}</style></head>
<body>
<h1>{title}</h1>
<p>{html.escape(data["description"])}</p>
<p class="note">Generated {html.escape(data["generated_at"])}.</p>
{intro}
<h2>Configurations (ranked by {html.escape(data["select_split"])} PSNR)</h2>
{_html_table(table_rows(data), "summary")}
{failed_html}
<h2>Paired differences against the baseline</h2>
{diff_notes}
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
        "differences.csv": _csv(data["differences"], DIFFERENCE_COLUMNS),
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
