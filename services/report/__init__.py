"""The comparison report of a study (docs/evaluation.md, "The report's statistics"), rebuilt from
the store by the aggregator after every finished run, at most every COLORMAMBA_REPORT_INTERVAL seconds
while runs train (services.tasks), and on demand.

Two halves: `collect` (services/report/collect.py) reads the store once per run into plain data keyed by
variant (report.json); the renderers (render.py: tables, Markdown, HTML; plots.py: figures) only read that
data and the runs' sample images. A study still running gives a partial report, marked as such.

Outputs under `reports/<study>/` (colormamba.storage.report_prefix): report.json (everything, the trivial
references' rows included), report.csv (one row per configuration variant, with whether it beats each
trivial reference), runs.csv, per_image.csv, differences.csv (paired differences against
the baseline with 95% intervals over seeds and images, verdicts Holm-adjusted over the study's question,
minimum detectable effects: services/stats.py),
curves.png, scatter.png, samples.png, report.md and report.html (one self-contained page).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from colormamba.storage import Storage, report_prefix, write_files_atomically
from services.report.collect import ci_summary, collect, paired_differences
from services.report.names import CI_LEVEL, HIGHER_IS_BETTER, LABELS, METRICS, REPORT_FILES
from services.report.plots import curves_figure, png, samples_figure, scatter_figure
from services.report.render import (
    DIFFERENCE_COLUMNS,
    difference_csv_rows,
    render_html,
    render_markdown,
    summary_csv_rows,
    table_rows,
    to_csv,
)
from services.studies import load_study

__all__ = [
    "CI_LEVEL", "HIGHER_IS_BETTER", "LABELS", "METRICS", "REPORT_FILES", "build_report", "ci_summary",
    "collect", "download_report", "paired_differences", "render_html", "render_markdown", "report_prefix",
    "table_rows",
]  # fmt: skip


def build_report(store: Storage, study_name: str) -> dict[str, Any]:
    """Rebuild and write every report file of a study; returns the report's data (report.json)."""
    study = load_study(store, study_name)
    data = collect(store, study)
    figures = {"curves.png": png(curves_figure(data)), "scatter.png": png(scatter_figure(data)),
               "samples.png": png(samples_figure(store, data))}  # fmt: skip
    files: dict[str, bytes] = {
        "report.json": json.dumps(data, indent=1, default=str).encode(),
        "report.csv": to_csv(summary_csv_rows(data)),
        "runs.csv": to_csv(data["runs"]),
        "per_image.csv": to_csv(data["per_image"], ["variant", "seed", "run", "name", *METRICS]),
        "differences.csv": to_csv(difference_csv_rows(data), DIFFERENCE_COLUMNS),
        "report.md": render_markdown(data).encode(),
        **{name: payload for name, payload in figures.items() if payload is not None},
    }
    prefix = report_prefix(study_name)
    for name, payload in files.items():  # each object is replaced atomically; report.html last
        store.put_bytes(f"{prefix}/{name}", payload)
    page = render_html(data, figures["curves.png"], figures["samples.png"], figures["scatter.png"])
    store.put_bytes(f"{prefix}/report.html", page.encode())
    return data


def download_report(store: Storage, study: str, out_dir: Any) -> list[str]:
    """Copy `reports/<study>/` to a local folder; returns the file names. All files are read first, then
    written together (`write_files_atomically`): a failed download (the store, or a full disk:
    LocalWriteError) leaves the folder as it was, never a partial file or half of a new report."""
    out = Path(out_dir)
    prefix = report_prefix(study)
    keys = store.list(prefix)
    if not keys:
        raise ValueError(
            f"no report for study {study!r} yet in {store!r}; `report` builds one when runs finished"
        )
    names = [key[len(prefix) + 1 :] for key in keys]
    write_files_atomically({out / name: store.get_bytes(key) for name, key in zip(names, keys, strict=True)})
    return names
