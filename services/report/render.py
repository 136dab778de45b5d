"""Rendering a study's report from its collected data (services.report.collect): the tables, report.md
and report.html (one self-contained page: plots and images inlined as data URIs, no scripts, opens from a
file, uses the window's width; wide tables scroll by themselves).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from collections.abc import Callable
from typing import Any

from services.report.names import (
    ALPHA,
    BEAT_METRICS,
    CI_LEVEL,
    DIGITS,
    LABELS,
    METRICS,
    SHOWN_METRICS,
    TRIVIAL_LABELS,
)
from services.spec import DEFAULT_FAMILY

BEATS_COLUMN = "beats references"  # the configurations table's column on the trivial references
REFERENCE_RANK = "reference"  # the rank cell of a trivial reference's row: shown, never ranked


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def all_failed(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The variants whose every run failed: shown as one line each with the reason, not rows of dashes."""
    return [r for r in data["summary"] if r["runs"] and r["failed"] == r["runs"]]


def _failed_reason(data: dict[str, Any], variant: str) -> str:
    reasons = dict.fromkeys(str(r["reason"]) for r in data["runs"] if r["variant"] == variant)
    return "; ".join(reasons)


def all_failed_lines(data: dict[str, Any]) -> list[str]:
    lines = []
    for row in all_failed(data):
        ids = ", ".join(f"`{r['run']}`" for r in data["runs"] if r["variant"] == row["variant"])
        lines.append(f"`{row['variant']}`: all {row['runs']} run(s) failed ({ids}): "
                     f"{_failed_reason(data, row['variant'])}")  # fmt: skip
    return lines


def table_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-configuration table as printed by submit.py and shown first in every format (a variant
    whose runs all failed is left to `all_failed_lines`), then the trivial references' rows, unranked."""
    gone = {r["variant"] for r in all_failed(data)}
    select = f"{data['select_split']} PSNR (selection)"
    rows = []
    for r in sorted(data["summary"], key=lambda r: (r["rank"] is None, r["rank"] or 0)):
        if r["variant"] in gone:
            continue
        rows.append(
            {
                "rank": r["rank"] if r["rank"] is not None else "-",
                "configuration": r["variant"],
                "runs ok/all": f"{r['succeeded']}/{r['runs']}",
                select: _fmt(r["select_psnr_mean"], 2),
                **{LABELS[m]: _pm(r[f"{m}_mean"], r[f"{m}_std"], DIGITS.get(m, 2)) for m in METRICS},
                "best epoch": r["best_epoch"] or "-",
                "train s": _fmt(r["train_seconds"], 1),
                BEATS_COLUMN: _beats_cell(r),
            }
        )
    for t in data.get("trivial") or []:  # a report.json written before the references has none
        rows.append(
            {
                "rank": REFERENCE_RANK,
                "configuration": f"{_trivial_label(t['reference'])} (reference)",
                "runs ok/all": "-",
                select: "-",
                **{LABELS[m]: _pm(t[f"{m}_mean"], t[f"{m}_std"], DIGITS.get(m, 2)) for m in METRICS},
                "best epoch": "-",
                "train s": "-",
                BEATS_COLUMN: "-",
            }
        )
    return rows


def _trivial_label(reference: str) -> str:
    return TRIVIAL_LABELS.get(reference, reference)


def shortfalls(row: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The trivial references a configuration does not beat, each with the metrics it does not beat it on
    (services.report.collect.beats_trivial), in the report's order."""
    by_metric = row.get("beats_trivial_by_metric") or {}
    return [
        (reference, [m for m in BEAT_METRICS if per.get(m) is False])
        for reference, per in by_metric.items()
        if (row.get("beats_trivial") or {}).get(reference) is False
    ]


def _beats_cell(row: dict[str, Any]) -> str:
    """`yes` (beats every reference), `no: <reference> (<metrics>)` or `-` (not known: a mean is missing)."""
    missed = shortfalls(row)
    if missed:
        named = [f"{_trivial_label(r)} ({', '.join(m.upper() for m in ms)})" for r, ms in missed]
        cell = "no: " + "; ".join(named)
    else:
        verdicts = (row.get("beats_trivial") or {}).values()
        cell = "yes" if verdicts and all(v is True for v in verdicts) else "-"
    below = [(m, r) for r, per in (row.get("beats_trivial_by_metric") or {}).items()
             for m in SHOWN_METRICS if per.get(m) is False]  # fmt: skip
    if below:
        cell += "; below on " + ", ".join(f"{m.upper()}: {_trivial_label(r)}" for m, r in below)
    return cell


def _not_beaten_phrase(missed: list[tuple[str, list[str]]]) -> str:
    """'the NIR copy on PSNR, SSIM and the training mean on PSNR'."""
    parts = [f"the {_trivial_label(r)} on {', '.join(m.upper() for m in ms)}" for r, ms in missed]
    return " and ".join(parts)


def trivial_lines(data: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The lines under the configurations table: (notes, warnings). Notes: what the references are and the
    beat rule, then why references are missing (once per reason); warnings: each configuration that does not
    beat a reference, with the references and metrics."""
    notes = []
    trivial = data.get("trivial") or []
    if trivial:
        what = "; ".join(f"{_trivial_label(t['reference'])}: {t['description']}" for t in trivial)
        metrics = " and ".join(m.upper() for m in BEAT_METRICS)
        shown = " and ".join(m.upper() for m in SHOWN_METRICS)
        notes.append(
            f"References (not ranked): trivial predictions of the same `{data['report_split']}` images, "
            f"scored with the same metrics and protocol. {what}. A configuration beats a reference when its "
            f"mean {metrics} is better than the reference's ({shown} is compared too and shown after the "
            f"verdict, not part of it); one that does not learned nothing usable "
            f"over that trivial prediction (see the `{BEATS_COLUMN}` column)."
        )
    gone = {r["variant"] for r in all_failed(data)}
    warnings = [
        f"`{row['variant']}` does not beat {_not_beaten_phrase(shortfalls(row))}."
        for row in data["summary"]
        if shortfalls(row) and row["variant"] not in gone
    ]
    return notes + list(data.get("trivial_notes") or []), warnings


def summary_csv_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """report.csv's rows: the summary rows with the trivial verdicts flattened into columns
    (`beats_<reference>` True/False/empty, `not_beaten`: the references and metrics a configuration does not
    beat)."""
    out = []
    for row in data["summary"]:
        flat = {k: v for k, v in row.items() if k not in ("beats_trivial", "beats_trivial_by_metric")}
        flat |= {f"beats_{r}": v for r, v in (row.get("beats_trivial") or {}).items()}
        flat["not_beaten"] = "; ".join(f"{r}: {' '.join(ms)}" for r, ms in shortfalls(row))
        out.append(flat)
    return out


def _pm(mean: float | None, std: float | None, digits: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def recipe_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per configuration variant: its loss terms with their weights, and its training recipe."""
    rows = []
    for variant, rec in data.get("recipes", {}).items():
        weights = ", ".join(f"{term} {w:g}" if isinstance(w, float) else f"{term} {w}"
                            for term, w in rec["weights"].items())  # fmt: skip
        sweep = ", ".join(f"{k}={v}" for k, v in rec.get("sweep", {}).items())
        shown = {k: v for k, v in rec.items() if k not in ("loss", "weights", "sweep", "model_config")}
        recipe = {k.replace("_", " "): v for k, v in shown.items()}
        rows.append({"configuration": variant, "loss": rec["loss"], "weights": weights, **recipe,
                     "sweep": sweep or "-"})  # fmt: skip
    return rows


def partial_banner(data: dict[str, Any]) -> str | None:
    """The line a report of a study still running starts with."""
    if not data.get("partial"):
        return None
    running = sum(1 for r in data["runs"] if r["state"] in ("running", "lost"))
    return (f"Partial report: {data['finished']} of {len(data['runs'])} runs finished ({running} training; "
            f"their curves are drawn so far). Numbers and verdicts will change as runs finish.")  # fmt: skip


def to_csv(rows: list[dict[str, Any]], columns: list[str] | None = None) -> bytes:
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


DIFFERENCE_COLUMNS = ["variant", "baseline", "family", "metric", "primary", "n_seeds", "n_images", "estimate",
                      "ci_low", "ci_high", "p_value", "p_adjusted", "verdict", "mde", "seeds_better",
                      "seeds_worse", "images_better", "images_worse", "df", "seed_variance",
                      "image_variance"]  # fmt: skip
EXPLORATORY = "exploratory"  # the role of a row outside the question, and the title of their own table
EFFECT_UNITS = {"psnr": " dB", "ae": " deg"}  # a difference's unit where the metric has one


def difference_csv_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """differences.csv's rows: report.json's, the interval as two columns."""
    return [{**d, "ci_low": (d["ci"] or [None, None])[0], "ci_high": (d["ci"] or [None, None])[1]}
            for d in data["differences"]]  # fmt: skip


def effect(value: float | None, metric: str) -> str:
    """A difference in the metric's unit: `1.23 dB`, `0.0412`."""
    if value is None:
        return "-"
    return f"{value:.{DIGITS.get(metric, 2)}f}{EFFECT_UNITS.get(metric, '')}"


def verdict_text(d: dict[str, Any]) -> str:
    """The verdict in words: `better`, `worse`, or `inconclusive (this design detects >= 1.9 dB; worse on
    3/3 seeds, 17/18 images)`, never "no difference": a design with few seeds misses real effects."""
    if d["verdict"] != "inconclusive":
        return d["verdict"]
    detects = f"this design detects >= {effect(d['mde'], d['metric'])}" if d["mde"] is not None else ""
    worse = (d["seeds_worse"], d["images_worse"]) > (d["seeds_better"], d["images_better"])
    way, seeds, images = ("worse", d["seeds_worse"], d["images_worse"]) if worse else (
        "better", d["seeds_better"], d["images_better"])  # fmt: skip
    went = f"{way} on {seeds}/{d['n_seeds']} seeds, {images}/{d['n_images']} images"
    return f"inconclusive ({'; '.join(x for x in (detects, went) if x)})"


def difference_tables(data: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(title, rows) per family of the study's question, then the exploratory configurations outside it;
    within a configuration the question's metric comes first (services.report.collect.paired_differences)."""
    gone = {r["variant"] for r in all_failed(data)}
    rows = [d for d in data["differences"] if d["variant"] not in gone]
    metric = (data.get("question") or {}).get("metric", "psnr")
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for d in sorted(rows, key=lambda d: not d["primary"]):  # stable: the primary metric's row first
        groups.setdefault(d["family"], []).append(d)
    tables = []
    for family, members in groups.items():
        order = list(dict.fromkeys(d["variant"] for d in members))
        members = sorted(members, key=lambda d: order.index(d["variant"]))
        if family is None:
            title = (f"Exploratory: configurations outside the question (uncorrected), against "
                     f"`{data['baseline']}`")  # fmt: skip
        else:
            named = "Configurations" if family == DEFAULT_FAMILY else f"Family `{family}`"
            title = (f"{named} against `{data['baseline']}`: {metric.upper()} answers the question "
                     f"(Holm-corrected), the other metrics are exploratory")  # fmt: skip
        tables.append((title, [_difference_row(d) for d in members]))
    return tables


def _difference_row(d: dict[str, Any]) -> dict[str, Any]:
    low, high = d["ci"] or (None, None)
    return {
        "configuration": d["variant"],
        "metric": LABELS[d["metric"]],
        "role": "question" if d["primary"] else EXPLORATORY,
        "seeds": d["n_seeds"],
        "images": d["n_images"],
        "difference": _fmt(d["estimate"], 4),
        f"{int(CI_LEVEL * 100)}% CI": f"[{_fmt(low, 4)}, {_fmt(high, 4)}]",
        "p": f"{_fmt_p(d['p_adjusted'])} (Holm)" if d["primary"] else f"{_fmt_p(d['p_value'])} (raw)",
        "verdict": verdict_text(d),
        "detects >=": effect(d["mde"], d["metric"]),
    }


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _difference_notes(data: dict[str, Any]) -> list[str]:
    """How to read the differences tables: what the interval holds, what is corrected, what `detects` is."""
    ci = data["ci"]
    level = int(CI_LEVEL * 100)
    metric = ci.get("primary_metric", "psnr").upper()
    notes = [
        f"Configuration minus baseline `{data['baseline']}`, paired by seed and image; for AE, MAE and LPIPS "
        f"lower is better. {level}% interval: {ci['method']}.",
        f"The question: {metric} of each configuration in a family against the baseline. Verdicts: p-values "
        f"{ci['p_value']}; correction: {ci['correction']}. Every other row is exploratory: its verdict uses "
        f"the raw p-value below {ALPHA:.2f}, so about one exploratory row in twenty may be called by "
        f"chance. The interval beside a verdict is the uncorrected {level}% one.",
        f"`detects >=`: the smallest true difference this design (its seeds and images, the seed and image "
        "variance observed in the row, and the level the row is tested at: Holm's first step alpha/m for "
        f"the question) finds with {int(ci.get('power', 0.8) * 100)}% power. `inconclusive` means no "
        "verdict, not no difference: an effect smaller than that is easily missed, and the counts say which "
        "way the seeds and images went.",
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
    gone = {r["variant"] for r in all_failed(data)}  # one line each above; runs.csv keeps every run
    return [
        {
            "run": r["run"],
            "seed": r["seed"],
            "state": r["state"],
            **{LABELS[m]: _fmt(r.get(m), DIGITS.get(m, 2)) for m in METRICS},
            "best epoch": r["best_epoch"],
            "train s": _fmt(r["train_seconds"], 1),
            **_provenance_cells(r),
            "reason": (r["reason"] or "")[:200],
        }
        for r in data["runs"]
        if r["variant"] not in gone
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
    leakage = (data.get("dataset_info") or {}).get("leakage") or {}
    if leakage.get("status") == "allowed":
        from services.datasets import leakage_line

        lines.append(f"Warning: the dataset was uploaded with --allow-leaks: {leakage_line(leakage)}.")
    differing = data.get("trivial_differences") or []
    if differing:
        runs = ", ".join(dict.fromkeys(d["run"] for d in differing))
        first = differing[0]
        lines.append(
            f"Warning: the trivial references differ between runs, so these runs did not score the same "
            f"images alike (another dataset content, protocol or code): {runs}; e.g. `{first['reference']}` "
            f"{first['metric'].upper()} {_fmt(first['value'], 4)} in {first['run']} against "
            f"{_fmt(first['shown'], 4)} in {first['shown_run']}, whose references the table shows."
        )
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


def _dataset_line(data: dict[str, Any]) -> str:
    """The dataset: its content identity, pairs per split, and what its leak check found and what was done."""
    from services.datasets import leakage_line

    info = data.get("dataset_info") or {}
    if not info:
        return f"Dataset `{data['dataset']}` (recorded before studies recorded their dataset's check)."
    splits = ", ".join(f"{split} {n}" for split, n in (info.get("splits") or {}).items())
    identity = info.get("identity", "")
    content = f"content `{identity[:12]}`, " if identity != info.get("name") else ""
    return (f"Dataset `{info.get('name')}` ({content}pairs {splits}). Pairs shared between splits: "
            f"{leakage_line(info.get('leakage'))}.")  # fmt: skip


def _resolution(data: dict[str, Any]) -> str:
    """Where metrics are computed: every image's own size, or the recipe's `image_size`."""
    sizes = sorted({r.get("image_size") or 0 for r in data.get("recipes", {}).values()})
    if sizes in ([], [0]):
        return "at full resolution"
    shown = ", ".join("as stored" if s == 0 else f"{s}x{s}" for s in sizes)
    return f"at {shown} (`image_size`: every image resized when read, for training and scoring alike)"


def _intro(data: dict[str, Any]) -> list[str]:
    steps = ", ".join(str(n) for n in data.get("generator_steps_per_batch", []))
    return [
        f"Model preset `{data['model']}`, protocol `{data['protocol']}`, seeds {data['seeds']}.",
        _dataset_line(data),
        _splits_line(data),
        f"Metrics per image {_resolution(data)}, then mean ± standard deviation over images and seeds. "
        "AE is the angular error in degrees: under the `colormamba` protocol the published code's formula, "
        "the mean over pixels of arccos(<gt, pred> / (|gt| |pred| + 1e-6)), which scores identical images "
        "slightly above 0 (black pixels 90°); under `plain` the exact angle, 0 for identical pixels. MAE is "
        "the mean absolute error on the 0-255 scale; LPIPS is AlexNet's, empty where its weights are absent.",
        *_missing_metrics(data),
        f"Generator updates per batch: {steps or 'not recorded'} (the reference's fit.py takes 2).",
        _baseline_line(data),
    ]


def _baseline_line(data: dict[str, Any]) -> str:
    """The baseline's loss as its runs resolved it, and where the departures are listed."""
    weights = (data.get("recipes", {}).get(data["baseline"]) or {}).get("weights") or {}
    terms = " + ".join(f"{w:g} {t}" if isinstance(w, float) else f"{w} {t}" for t, w in weights.items())
    return (f"Baseline `{data['baseline']}`: {terms or 'its loss not recorded'}. It is the study's baseline, "
            "not a reproduction of the published ColorMamba (24.56 dB PSNR): the table of departures below "
            "says how every configuration departs from the reference objective and from the seed.")


def _missing_metrics(data: dict[str, Any]) -> list[str]:
    """Why a metric's column is empty, once per reason (each run records it in metrics.json)."""
    reasons: dict[tuple[str, str], int] = {}
    for run in data["runs"]:
        for metric, why in (run.get("missing_metrics") or {}).items():
            reasons[metric, why] = reasons.get((metric, why), 0) + 1
    return [f"{metric.upper()} is empty for {n} run(s): {why}" for (metric, why), n in reasons.items()]


def _failed_runs(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Failed runs of the variants that have some other run (all-failed variants are one line each)."""
    gone = {r["variant"] for r in all_failed(data)}
    return [r for r in data["runs"] if r["state"] == "failed" and r["variant"] not in gone]


def render_markdown(data: dict[str, Any]) -> str:
    failed = _failed_runs(data)
    banner = partial_banner(data)
    parts = [f"# Study `{data['study']}`\n", f"\n**{banner}**\n\n" if banner else "",
             data["description"] + "\n" if data["description"] else "",
             f"Generated {data['generated_at']}.\n", *(s + "\n" for s in _intro(data)),
             *(f"\n**{s}**\n" for s in _warnings(data)),
             f"\n## Configurations (ranked by {data['select_split']} PSNR)\n",
             _md_table(table_rows(data)), *(f"\n**{s}**\n" for s in trivial_lines(data)[1]),
             *(f"\n{s}\n" for s in trivial_lines(data)[0]),
             *(f"\n**Failed configuration** {s}\n" for s in all_failed_lines(data))]  # fmt: skip
    if failed:
        parts += ["\n**Failed runs:** " + "; ".join(f"`{r['run']}`: {r['reason']}" for r in failed) + "\n"]
    parts += ["\n## Departures from the reference objective and from the seed\n",
              _md_table(data.get("departures") or []),
              "\n## Recipes and loss weights\n", _md_table(recipe_rows(data)),
              "\n## Paired differences against the baseline\n",
              *(s + "\n\n" for s in _difference_notes(data)),
              *(f"\n### {title}\n\n{_md_table(rows)}" for title, rows in difference_tables(data)),
              "\n## Curves\n", "![curves](curves.png)\n",
              "\n## Per-image PSNR against the baseline\n", "![scatter](scatter.png)\n",
              "\n## Samples\n", "![samples](samples.png)\n",
              "\n## Runs\n", _md_table(_run_rows(data)),
              "\nPer-image values: `per_image.csv`; everything: `report.json`.\n"]  # fmt: skip
    return "".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;margin:1em 1.5em;color:#222}
.scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;margin:1em 0;font-size:14px}
td:first-child,code{white-space:nowrap}code{background:#f4f4f4;padding:0 2px}
.banner{background:#e6f0ff;border-left:4px solid #2a6fdb;padding:6px 10px;font-weight:600}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
tr.failed td{background:#fde8e8}.note{color:#555;font-size:13px}img{max-width:100%}
.warning{background:#fff4d6;border-left:4px solid #d98c00;padding:6px 10px;font-weight:600}
tr.reference td{background:#f3f6fa;font-style:italic}tr.below-trivial td{background:#fff4d6}
"""


def _html_table(
    rows: list[dict[str, Any]],
    table_id: str,
    failed_key: str | None = None,
    row_class: Callable[[dict[str, Any]], str | None] | None = None,
) -> str:
    if not rows:
        return f'<p id="{table_id}">none</p>'
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        name = (
            "failed" if failed_key and r.get(failed_key) == "failed" else row_class(r) if row_class else None
        )
        cls = f' class="{name}"' if name else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{inline(_fmt(r[c]))}</td>" for c in cols) + "</tr>")
    table = f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def _summary_class(row: dict[str, Any]) -> str | None:
    """A trivial reference's row is marked as such; a configuration that does not beat one stands out."""
    if row["rank"] == REFERENCE_RANK:
        return "reference"
    return "below-trivial" if row[BEATS_COLUMN].startswith("no") else None


def _trivial_html(data: dict[str, Any]) -> str:
    """The lines under the configurations table (trivial_lines): configurations that do not beat a
    reference as warnings, then the notes."""
    notes, warnings = trivial_lines(data)
    out = [f'<p class="warning">{inline(s)}</p>' for s in warnings]
    out += [f'<p class="note">{inline(s)}</p>' for s in notes]
    return f'<div id="trivial">{"".join(out)}</div>' if out else ""


_CODE = re.compile(r"`([^`]+)`")


def inline(text: str) -> str:
    """Plain text with Markdown's `code` spans as HTML: escaped first, so nothing in it becomes markup."""
    return _CODE.sub(r"<code>\1</code>", html.escape(text))


def render_html(data: dict[str, Any], curves: bytes | None = None, samples: bytes | None = None,
                scatter: bytes | None = None) -> str:  # fmt: skip
    """One page with everything inlined: it opens from a file, offline, with no server."""

    def img(png: bytes | None, alt: str, img_id: str) -> str:
        if png is None:
            return f'<p class="note">no {alt} yet</p>'
        b64 = base64.b64encode(png).decode()
        return f'<img id="{img_id}" alt="{alt}" src="data:image/png;base64,{b64}">'

    def paras(lines: list[str], cls: str) -> str:
        return "".join(f'<p class="{cls}">{inline(s)}</p>' for s in lines)

    failed = _failed_runs(data)
    failed_html = ""
    if failed:
        items = "".join(f"<li><code>{html.escape(r['run'])}</code>: {inline(str(r['reason']))}</li>"
                        for r in failed)  # fmt: skip
        failed_html = f'<h3>Failed runs</h3><ul id="failed">{items}</ul>'
    gone = all_failed_lines(data)
    gone_items = "".join(f"<li>{inline(s)}</li>" for s in gone)
    gone_html = (
        f'<h3>Failed configurations</h3><ul id="failed-configurations">{gone_items}</ul>' if gone else ""
    )
    banner = partial_banner(data)
    title = f"Study {html.escape(data['study'])}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title><style>{_CSS}</style></head>
<body>
<h1>{title}</h1>
{paras([banner], "banner") if banner else ""}
<p>{inline(data["description"])}</p>
<p class="note">Generated {html.escape(data["generated_at"])}.</p>
{paras(_intro(data), "note")}{paras(_warnings(data), "warning")}
<h2>Configurations (ranked by {html.escape(data["select_split"])} PSNR)</h2>
{_html_table(table_rows(data), "summary", row_class=_summary_class)}
{_trivial_html(data)}
{gone_html}
{failed_html}
<h2>Departures from the reference objective and from the seed</h2>
{_html_table(data.get("departures") or [], "departures")}
<h2>Recipes and loss weights</h2>
{_html_table(recipe_rows(data), "recipes")}
<h2>Paired differences against the baseline</h2>
{paras(_difference_notes(data), "note")}
<div id="differences">{"".join(f"<h3>{inline(title)}</h3>{_html_table(rows, f'differences-{i}')}"
                               for i, (title, rows) in enumerate(difference_tables(data)))}</div>
<h2>Training and validation curves</h2>
{img(curves, "curves", "curves")}
<h2>Per-image PSNR against the baseline</h2>
<p class="note">Each point is one image of one seed: above the diagonal the configuration scored higher
than the baseline on it.</p>
{img(scatter, "scatter", "scatter")}
<h2>Samples</h2>
{img(samples, "samples", "samples")}
<h2>Runs</h2>
{_html_table(_run_rows(data), "runs", failed_key="state")}
</body></html>
"""
