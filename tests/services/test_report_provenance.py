"""The report shows each run's provenance and warns, in its header, when the runs of a study were not
computed alike (run records written directly, as a worker writes them)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml

from colormamba.storage import LocalStorage
from services.report import build_report, render_html, render_markdown
from services.spec import parse_spec
from services.studies import save_study
from tests.support.records import record_status
from tests.support.submit import DEMO

WARNING = "Warning: the runs of this study were not computed alike"
BASE = {
    "version": "0.1.0", "git_commit": "a" * 40, "git_dirty": False, "python": "3.12.3", "torch": "2.10.0",
    "cuda": "12.8", "scan_backend": "mamba", "device_name": "NVIDIA H100 80GB HBM3", "precision": "fp32",
    "compile": False, "channels_last": False, "deterministic": False,
}  # fmt: skip


Provenance = dict[str, Any]


def build(tmp_path: Path, provenances: list[Provenance], earlier: dict[int, Provenance] | None = None):
    """A two-configuration, two-seed study whose runs finished with the given provenances (in run order);
    `earlier` adds an earlier attempt's provenance to the run of that index."""
    study = parse_spec(yaml.safe_load(DEMO.read_text()) | {"seeds": [0, 1]})
    store = LocalStorage(tmp_path)
    save_study(store, study)
    for i, (run, provenance) in enumerate(zip(study.runs, provenances, strict=True)):
        buf = io.StringIO()
        csv.writer(buf).writerows([["name", "psnr", "ssim", "ae", "mae"], ["img0", 20, 0.5, 5, 20]])
        store.put_bytes(f"runs/{study.name}/{run.run_id}/per_image.csv", buf.getvalue().encode())
        metrics = {m: {"mean": v} for m, v in (("psnr", 20), ("ssim", 0.5), ("ae", 5), ("mae", 20))}
        record = json.dumps({"metrics": metrics}).encode()
        store.put_bytes(f"runs/{study.name}/{run.run_id}/metrics.json", record)
        status = {"state": "succeeded", "select_metrics": {"psnr": 19.0 + i}, "provenance": provenance}
        if earlier and i in earlier:
            status["provenance_earlier"] = [earlier[i]]
        record_status(store, study.name, run.run_id, status)
    return study, build_report(store, study.name)


def test_runs_computed_alike_get_no_warning_and_show_their_provenance(tmp_path: Path) -> None:
    _, data = build(tmp_path, [BASE] * 4)
    assert data["provenance_differences"] == {} and data["dirty_runs"] == []
    text = render_markdown(data)
    assert WARNING not in text and "uncommitted" not in text
    row = data["runs"][0]
    assert {k: row[k] for k in BASE} == BASE  # runs.csv and report.json carry every field
    assert f"0.1.0 @ {'a' * 10}" in text and "2.10.0 / 12.8" in text and "NVIDIA H100 80GB HBM3" in text


def test_runs_that_differ_are_named_in_a_warning_in_the_header(tmp_path: Path) -> None:
    other_gpu = {**BASE, "device_name": "NVIDIA A100-SXM4-80GB", "torch": "2.9.1"}
    dirty = {**BASE, "git_dirty": True}  # the same commit, modified: not a difference by itself
    study, data = build(tmp_path, [BASE, other_gpu, dirty, BASE])
    runs = [r.run_id for r in study.runs]
    alike = [runs[0], runs[2], runs[3]]
    assert data["provenance_differences"] == {
        "torch": {"2.10.0": alike, "2.9.1": [runs[1]]},
        "device_name": {"NVIDIA A100-SXM4-80GB": [runs[1]], "NVIDIA H100 80GB HBM3": alike},
    }
    assert data["dirty_runs"] == [runs[2]]
    text = render_markdown(data)
    header = text.split("## Configurations")[0]  # the warning is in the header, before any table
    assert f"**{WARNING}" in header
    assert "torch: 2.10.0 (3 runs), 2.9.1 (1 run)" in header
    assert "device_name: NVIDIA A100-SXM4-80GB (1 run), NVIDIA H100 80GB HBM3 (3 runs)" in header
    assert f"uncommitted changes (`+dirty`), so their commit does not pin their code: {runs[2]}" in header
    page = render_html(data, None, None)
    assert page.index('<p class="warning">Warning: the runs') < page.index('id="summary"')


def test_a_run_resumed_under_another_provenance_differs_from_itself(tmp_path: Path) -> None:
    study, data = build(tmp_path, [BASE] * 4, earlier={3: {**BASE, "scan_backend": "torch"}})
    last = study.runs[3].run_id
    assert data["provenance_differences"] == {
        "scan_backend": {"mamba": [r.run_id for r in study.runs], "torch": [last]}
    }
    assert WARNING in render_markdown(data)
