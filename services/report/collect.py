"""Collecting a study's report: everything it shows as plain data keyed by variant (report.json),
read from the store in one pass over the runs (docs/evaluation.md, "The report's statistics").

Why it reads everything from the store: the report must be a pure function of the runs' stored outputs
(`metrics.json`, `per_image.csv`, `history.csv`, `samples/`, `status.json`), so rebuilding it any number
of times, from any machine, gives the same files, and a run counted twice is impossible (rows are keyed
by the spec's run ids). A study still running gives a partial report: the runs that finished, and the
curves so far of those still training (their `history.csv` is written at every checkpoint).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from typing import Any

import numpy as np

from colormamba.config import RunConfig
from colormamba.losses import resolve_loss_config
from colormamba.provenance import COMPARED
from colormamba.storage import ObjectNotFound, RunLocation, Storage
from services.departures import departure_rows, study_departures
from services.report.names import (
    ALPHA,
    BEAT_METRICS,
    CI_LEVEL,
    HIGHER_IS_BETTER,
    METRICS,
    SHOWN_METRICS,
    TRIVIAL_LABELS,
)
from services.runs import DONE, now, read_status
from services.spec import DEFAULT_FAMILY, RunPlan, Study
from services.stats import (
    POWER,
    VarianceParts,
    holm,
    minimum_detectable_effect,
    paired_interval,
    variance_parts,
    verdict,
)

TRAINING_STATES = ("succeeded", "running", "lost")  # runs whose history.csv the curves show
# How far two runs' scores of one trivial reference may differ and still count as the same computation: the
# float64 metrics agree to rounding across devices; LPIPS is a float32 network (TF32 convolutions on a GPU).
TRIVIAL_REL_TOL = {"lpips": 1e-3}
TRIVIAL_REL_TOL_DEFAULT = 1e-6
RECIPE_KEYS = ("image_size", "epochs", "batch_size", "lr", "lr_step_epochs", "lr_gamma", "grad_clip",
               "max_steps_per_epoch", "precision")  # fmt: skip


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


def _run_row(plan: RunPlan, status: dict[str, Any]) -> dict[str, Any]:
    """A run's row from its status.json (metrics are added once it succeeded)."""
    return {
        "run": plan.run_id,
        "variant": plan.variant,
        "configuration": plan.configuration,
        "seed": plan.seed,
        "state": status.get("state"),
        "reason": status.get("reason"),
        "train_seconds": status.get("train_seconds"),
        "epochs": status.get("epochs_done") or status.get("epoch"),
        "best_epoch": status.get("best_epoch"),
        "worker": status.get("worker"),
        "select_split": status.get("select_split"),
        "report_split": status.get("report_split"),
        # the ranking metric: the selection split's numbers of the evaluated checkpoint
        **{f"select_{m}": (status.get("select_metrics") or {}).get(m) for m in METRICS},
        **{k: (status.get("provenance") or {}).get(k) for k in (*COMPARED, "git_dirty")},
    }


def _read_results(
    store: Storage, where: RunLocation, plan: RunPlan, row: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """A succeeded run's metrics into `row`; returns its per-image rows ([] when metrics.json is missing)
    and its metrics.json (None when missing)."""
    try:
        metrics = json.loads(store.get_bytes(where.artifact("metrics.json")))
    except ObjectNotFound:
        return [], None
    # runs evaluated before a metric existed (e.g. LPIPS) show it empty, not a broken report
    row |= {m: metrics["metrics"].get(m, {}).get("mean") for m in METRICS}
    row["missing_metrics"] = metrics.get("missing_metrics")
    row["protocol"] = metrics.get("protocol")
    row["report_split"] = metrics.get("report_split")
    return [
        {"variant": plan.variant, "seed": plan.seed, "run": plan.run_id, "name": img["name"],
         **{m: _num(img.get(m)) for m in METRICS}}
        for img in _csv_rows(store, where.artifact("per_image.csv"))
    ], metrics  # fmt: skip


def recipe(plan: RunPlan) -> dict[str, Any]:
    """What a configuration trains with: its loss terms and weights and its model configuration as the
    plan resolved them when the study was submitted (a preset edited since does not change what the
    report says the runs computed), and the recipe fields a study may vary per configuration or sweep."""
    cfg = plan.config
    weights = plan.resolved.get("loss_weights")
    if weights is None:  # planned before plans recorded it: today's reading of the preset, marked so
        try:
            weights = resolve_loss_config(cfg["loss"], cfg.get("loss_weights"))
            weights = {**weights, "(resolved by today's presets)": ""}
        except (KeyError, ValueError) as exc:
            weights = {"unresolved": str(exc)}
    return {"loss": cfg.get("loss") if isinstance(cfg.get("loss"), str) else "terms", "weights": weights,
            **{k: cfg.get(k) for k in RECIPE_KEYS}, "sweep": plan.sweep,
            "model_config": plan.resolved.get("model")}  # fmt: skip


def collect(store: Storage, study: Study) -> dict[str, Any]:
    """Everything the report shows, as plain data (this is report.json)."""
    runs = []
    provenances: dict[str, list[dict[str, Any]]] = {}  # run -> provenance of each attempt
    per_image: list[dict[str, Any]] = []
    histories: dict[str, list[dict[str, Any]]] = {}
    records: dict[str, dict[str, Any]] = {}  # run -> its metrics.json, for the trivial references
    for plan in study.runs:
        where = RunLocation(study.name, plan.run_id)
        status = read_status(store, study.name, plan.run_id) or {"state": "unsubmitted"}
        row = _run_row(plan, status)
        attempts = [status.get("provenance"), *(status.get("provenance_earlier") or [])]
        provenances[plan.run_id] = [p for p in attempts if p]
        if row["state"] == "succeeded":
            images, record = _read_results(store, where, plan, row)
            per_image += images
            if record is not None:
                records[plan.run_id] = record
        if row["state"] in TRAINING_STATES:
            hist = _csv_rows(store, where.artifact("history.csv"))
            histories[plan.run_id] = [{k: _num(v) for k, v in h.items()} for h in hist]
        runs.append(row)

    variants = list(dict.fromkeys(r.variant for r in study.runs))
    by_variant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    images_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by_variant[r["variant"]].append(r)
    for p in per_image:
        images_of[p["variant"]].append(p)
    summary = [_summary_row(v, by_variant[v], images_of[v]) for v in variants]
    _rank(summary)
    trivial = trivial_references(records)
    for row in summary:
        row |= beats_trivial(row, trivial["rows"])
    baseline_variant = next(p.variant for p in study.runs if p.configuration == study.baseline)
    question = study.spec.question
    differences = paired_differences(per_image, baseline_variant, variants, question.metric,
                                     study.variant_families())  # fmt: skip
    protocols = sorted({r["protocol"] for r in runs if r.get("protocol")})
    evaluation = study.spec.evaluation
    finished = sum(1 for r in runs if r["state"] in DONE)
    return {
        "study": study.name,
        "description": study.spec.description,
        "generated_at": now(),
        "dataset": study.to_dict()["dataset"],
        "dataset_info": study.dataset_info,  # content identity, pair counts, leakage (services.studies)
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
        "finished": finished,
        "partial": finished < len(runs),
        "recipes": {p.variant: recipe(p) for p in study.runs},
        "departures": departure_rows(study_departures(study)),  # services/departures.py
        "summary": summary,
        "trivial": trivial["rows"],
        "trivial_from": trivial["from"],
        "trivial_differences": trivial["differences"],
        "trivial_notes": trivial["notes"],
        "runs": runs,
        "differences": differences,
        "per_image": per_image,
        "histories": histories,
        "question": {"metric": question.metric, "families": study.families()},
        "ci": ci_summary(differences, question.metric),
    }


def _summary_row(variant: str, vruns: list[dict[str, Any]], images: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration variant: metrics pooled over its images and seeds, and how its runs went."""
    states: dict[str, int] = defaultdict(int)
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
        row |= {f"{m}_mean": mean, f"{m}_std": std,
                f"{m}_seed_std": seed_std if seed_mean is not None else None}  # fmt: skip
    row["n_images"] = len(images)
    row["select_psnr_mean"] = _mean_std([r["select_psnr"] for r in vruns if r["state"] == "succeeded"])[0]
    row["train_seconds"] = _mean_std([r["train_seconds"] for r in vruns if r["train_seconds"] is not None])[0]
    row["epochs"] = max((r["epochs"] or 0 for r in vruns), default=0) or None
    best = [r["best_epoch"] for r in vruns if r["best_epoch"] is not None]
    row["best_epoch"] = "/".join(str(b) for b in best) if best else None
    return row


def trivial_references(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The trivial references' rows (report.json's `trivial`) from the succeeded runs' metrics.json.

    Every run of a study scores the same images with the same protocol, so each run's references should be
    the same numbers: the rows are the first run's that has them; a run whose numbers differ (another
    dataset content, protocol or code) is listed in `differences` for the header's warning.

    Args:
        records: run -> its metrics.json, in the study's run order.
    Returns:
        {"rows": one row per reference (`reference`, `description`, `<metric>_mean`, `<metric>_std`,
        `n_images`), "from": {reference: run it was read from}, "differences": [{run, reference, metric,
        value, shown, shown_run}], "notes": why references are missing, once per reason}.
    """
    rows: dict[str, dict[str, Any]] = {}
    shown: dict[str, tuple[str, dict[str, Any]]] = {}  # reference -> (run, its metrics.json summary)
    differences: list[dict[str, Any]] = []
    missing: dict[str, str] = {}
    for run, record in records.items():
        for reference, why in (record.get("trivial_missing") or {}).items():
            missing.setdefault(reference, why)
        for reference, entry in (record.get("trivial") or {}).items():
            metrics = entry.get("metrics") or {}
            if reference not in shown:
                shown[reference] = (run, metrics)
                rows[reference] = _trivial_row(reference, entry)
                continue
            first_run, first = shown[reference]
            differences += [
                {"run": run, "reference": reference, "metric": m, "value": value, "shown": other,
                 "shown_run": first_run}
                for m, value, other in _differing(metrics, first)
            ]  # fmt: skip
    order = [*TRIVIAL_LABELS, *sorted(set(rows) - set(TRIVIAL_LABELS))]
    notes = []
    if not records:
        notes.append("No trivial references yet: no run has finished its evaluation.")
    elif not rows:
        notes.append(
            f"No trivial references: the {len(records)} finished run(s) were evaluated before the evaluation "
            "scored the NIR copy and the training mean (their metrics.json has no `trivial`), so this report "
            "cannot say whether a configuration beats them; runs evaluated from now on carry them."
        )
    without = [run for run, record in records.items() if not record.get("trivial")]
    if rows and without:
        notes.append(
            f"{len(without)} of {len(records)} finished runs have no trivial references (evaluated before "
            f"the evaluation scored them): {', '.join(without)}; the references are the other runs'."
        )
    notes += [f"The `{r}` reference is missing: {why}" for r, why in missing.items() if r not in rows]
    return {
        "rows": [rows[r] for r in order if r in rows],
        "from": {r: shown[r][0] for r in order if r in shown},
        "differences": differences,
        "notes": notes,
    }


def _trivial_row(reference: str, entry: dict[str, Any]) -> dict[str, Any]:
    metrics = entry.get("metrics") or {}
    row: dict[str, Any] = {"reference": reference, "description": entry.get("description")}
    for m in METRICS:
        row |= {
            f"{m}_mean": _num(metrics.get(m, {}).get("mean")),
            f"{m}_std": _num(metrics.get(m, {}).get("std")),
        }
    counts = [v.get("n") for v in metrics.values() if isinstance(v, dict) and v.get("n") is not None]
    row["n_images"] = max(counts, default=None)
    return row


def _differing(
    metrics: dict[str, Any], first: dict[str, Any]
) -> list[tuple[str, float | None, float | None]]:
    """(metric, this run's mean, the shown run's mean) where the two runs' numbers of a reference differ:
    a different image count, or a mean beyond rounding (TRIVIAL_REL_TOL); a metric only one of them has
    (LPIPS without its weights) is no difference."""
    out = []
    for m in METRICS:
        a, b = metrics.get(m) or {}, first.get(m) or {}
        mean_a, mean_b = _num(a.get("mean")), _num(b.get("mean"))
        if mean_a is None or mean_b is None:
            continue
        tol = TRIVIAL_REL_TOL.get(m, TRIVIAL_REL_TOL_DEFAULT)
        if a.get("n") != b.get("n") or not math.isclose(mean_a, mean_b, rel_tol=tol, abs_tol=1e-9):
            out.append((m, mean_a, mean_b))
    return out


def beats_trivial(row: dict[str, Any], trivial: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether a configuration beats each trivial reference (docs/evaluation.md): its mean is better than
    the reference's on every metric of BEAT_METRICS, in HIGHER_IS_BETTER's direction (SHOWN_METRICS are
    compared too, in `beats_trivial_by_metric`, and do not decide).

    Returns:
        {"beats_trivial": {reference: True | False | None}, "beats_trivial_by_metric": {reference: {metric:
        True | False | None}}}: None where a mean is missing; a reference not beaten on one metric is not
        beaten (False) even when another metric's mean is missing. Every reference of TRIVIAL_LABELS gets an
        entry, None when no run recorded it.
    """
    refs = {r["reference"]: r for r in trivial}
    by_metric: dict[str, dict[str, bool | None]] = {}
    verdicts: dict[str, bool | None] = {}
    for reference in dict.fromkeys([*TRIVIAL_LABELS, *refs]):
        ref = refs.get(reference, {})
        per: dict[str, bool | None] = {}
        for m in (*BEAT_METRICS, *SHOWN_METRICS):
            ours, theirs = row.get(f"{m}_mean"), ref.get(f"{m}_mean")
            per[m] = (
                None
                if ours is None or theirs is None
                else (ours > theirs if HIGHER_IS_BETTER[m] else ours < theirs)
            )
        by_metric[reference] = per
        values = [per[m] for m in BEAT_METRICS]
        verdicts[reference] = False if False in values else None if None in values else True
    return {"beats_trivial": verdicts, "beats_trivial_by_metric": by_metric}


def _rank(summary: list[dict[str, Any]]) -> None:
    """Rank on the selection split: ranking on the reported numbers would pick each sweep's luckiest
    variant on the very split it then reports (docs/evaluation.md)."""
    ranked = sorted((r for r in summary if r["select_psnr_mean"] is not None),
                    key=lambda r: -r["select_psnr_mean"])  # fmt: skip
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    for r in summary:
        r.setdefault("rank", None)


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


def paired_differences(per_image: list[dict[str, Any]], baseline: str, variants: list[str],
                       primary_metric: str = "psnr", family_of: dict[str, str] | None = None,
                       ) -> list[dict[str, Any]]:  # fmt: skip
    """Each variant minus the baseline per metric: estimate, interval, p-values, verdict and the smallest
    effect the design detects (services/stats.py).

    Pairs are (seed, image): the seeds both configurations have (the same seed shares initialisation and
    data order), and the images every one of those runs scored. The study's question (`primary_metric`, and
    `family_of`: variant -> its family; default: every variant in one) decides which rows are corrected:
    Holm runs over the primary metric's rows of the variants in a family; every other row is exploratory
    (verdict on its raw p-value, `p_adjusted` None).
    """
    by_variant: dict[str, dict[tuple[int, str], dict[str, Any]]] = defaultdict(dict)
    for p in per_image:
        by_variant[p["variant"]][(p["seed"], p["name"])] = p
    base = by_variant.get(baseline, {})
    if family_of is None:
        family_of = {v: DEFAULT_FAMILY for v in variants if v != baseline}
    out = []
    for variant in variants:
        if variant == baseline:
            continue
        other = by_variant.get(variant, {})
        family = family_of.get(variant)
        for m in METRICS:
            diffs = _paired_matrix(base, other, m)
            row: dict[str, Any] = {"variant": variant, "baseline": baseline, "family": family, "metric": m,
                                   "primary": family is not None and m == primary_metric,
                                   "n_seeds": diffs.shape[0], "n_images": diffs.shape[1]}  # fmt: skip
            out.append(row | _interval_fields(diffs, HIGHER_IS_BETTER[m]))
    question = [r for r in out if r["primary"] and r["p_value"] is not None]
    adjusted = holm(np.asarray([r["p_value"] for r in question], dtype=np.float64))
    for r, p_adj in zip(question, adjusted, strict=True):
        r["p_adjusted"] = float(p_adj)
    for r in out:
        r.setdefault("p_adjusted", None)
        r["exploratory"] = not r["primary"]
        p = r["p_value"] if r["exploratory"] else r["p_adjusted"]
        r["verdict"] = (verdict(r["estimate"], p, HIGHER_IS_BETTER[r["metric"]], ALPHA)
                        if r["n_seeds"] else "no paired images")  # fmt: skip
        # tested at alpha / m by Holm's first step (primary), at alpha (exploratory)
        r["tested_at"] = ALPHA / max(len(question), 1) if r["primary"] else ALPHA
        if r["image_variance"] is None:
            r["mde"] = None
        else:  # from the variances the row stores (a seed variance is None with one seed)
            parts = VarianceParts(_nan_for_none(r["seed_variance"]), r["image_variance"])
            r["mde"] = minimum_detectable_effect(parts, r["n_seeds"], r["n_images"], r["tested_at"])
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


def _interval_fields(diffs: np.ndarray, higher_is_better: bool) -> dict[str, Any]:
    """The interval and p-value, the noise's parts, and how many seeds and images went each way (better:
    in the metric's direction; images by their mean over the seeds)."""
    if not diffs.size:
        return {"estimate": None, "ci": None, "p_value": None, "df": None, "seed_variance": None,
                "image_variance": None, "seeds_better": 0, "seeds_worse": 0, "images_better": 0,
                "images_worse": 0}  # fmt: skip
    res = paired_interval(diffs, CI_LEVEL)
    parts = variance_parts(diffs)
    sign = 1.0 if higher_is_better else -1.0
    seeds, images = sign * diffs.mean(axis=1), sign * diffs.mean(axis=0)
    return {"estimate": float(res.mean), "ci": [_finite(res.low), _finite(res.high)],
            "p_value": _finite(res.p_value), "df": res.df, "seed_variance": _finite(parts.seed),
            "image_variance": _finite(parts.image),
            "seeds_better": int((seeds > 0).sum()), "seeds_worse": int((seeds < 0).sum()),
            "images_better": int((images > 0).sum()), "images_worse": int((images < 0).sum())}  # fmt: skip


def _nan_for_none(value: float | None) -> float:
    return math.nan if value is None else value


def _finite(value: Any) -> float | None:
    out = float(value)
    return out if math.isfinite(out) else None


def ci_summary(differences: list[dict[str, Any]], primary_metric: str = "psnr") -> dict[str, Any]:
    """What the differences tables did, in words and numbers (report.json's `ci`, shown above them)."""
    tested = [d for d in differences if d["p_value"] is not None]
    question = [d for d in tested if d["primary"]]
    families = list(dict.fromkeys(d["family"] for d in question))
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
    plural = "s" * (len(question) != 1)
    named = ", ".join(f"`{f}`" for f in families) or "none"
    correction = (f"Holm over the question's {len(question)} comparison{plural} ({primary_metric.upper()}, "
                  f"families {named}), family-wise error rate {ALPHA:.2f}")  # fmt: skip
    return {
        "level": CI_LEVEL,
        "method": method,
        "p_value": "two-sided, from the same t statistic as the interval",
        "primary_metric": primary_metric,
        "comparisons": len(question),
        "exploratory": len(tested) - len(question),
        "correction": correction,
        "power": POWER,
        "seed_noise_included": bool(tested) and 1 not in seeds,
    }


def generator_steps(study: Study) -> list[int]:
    """The generator updates per batch the study's runs take (several when a spec sweeps them); a run
    planned before the field existed trains with RunConfig's default, as the worker resolves it."""
    default = RunConfig.generator_steps_per_batch
    return sorted({run.config.get("generator_steps_per_batch", default) for run in study.runs})
