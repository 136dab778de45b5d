"""Selection and reporting splits: a spec selects its checkpoint on one split and reports another, is
refused when they coincide under `checkpoint: best` or when its dataset lacks a split it names (stored,
local and synthetic datasets alike), and the report ranks on the selection split and says which is which."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from colormamba.data import check_pairs, list_pairs
from colormamba.data.synthetic import make_synthetic_dataset
from colormamba.storage import LocalStorage, RunLocation
from services.datasets import ensure_synthetic, upload_dataset
from services.report import build_report, render_html, render_markdown
from services.spec import SpecError, load_spec, parse_spec
from services.studies import prepare_dataset, save_study
from tests.support.records import record_status
from tests.support.submit import DEMO, submit

SPECS = Path(__file__).resolve().parents[2] / "jobs" / "specs"


def demo(**evaluation: object) -> dict:
    data = yaml.safe_load(DEMO.read_text())
    data["evaluation"] |= evaluation
    return data


def test_shipped_specs_select_on_val_and_report_on_test() -> None:
    for name in ("demo.yaml", "loss_study.yaml"):
        study = load_spec(SPECS / name)
        assert study.spec.evaluation.checkpoint == "best"
        assert {(r.config["select_split"], r.config["report_split"]) for r in study.runs} == {("val", "test")}
    omitted = demo()
    del omitted["evaluation"]
    assert {r.config["report_split"] for r in parse_spec(omitted).runs} == {"test"}, "the default: test"


def test_run_ids_change_with_the_splits() -> None:
    def ids(**evaluation: object) -> set[str]:
        return {r.run_id for r in parse_spec(demo(**evaluation)).runs}

    assert ids().isdisjoint(ids(select_split="test", report_split="val"))
    assert ids(checkpoint="last").isdisjoint(ids(checkpoint="last", report_split="val"))
    assert ids() == ids(select_split="val", report_split="test"), "the defaults, spelled out"


def test_reporting_the_selection_split_with_the_best_checkpoint_is_refused() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(demo(select_split="test", report_split="test"), "demo.yaml")
    (problem,) = info.value.problems
    assert problem.startswith("evaluation: report_split and select_split are both 'test'")
    assert "checkpoint: last" in problem  # says how to fix it
    with pytest.raises(SpecError) as info:
        parse_spec(demo(report_split="train"))
    assert any(p.startswith("evaluation.report_split:") for p in info.value.problems)


def test_reporting_the_selection_split_with_the_last_checkpoint_is_allowed_and_the_report_says_so(
    tmp_path: Path,
) -> None:
    study = parse_spec(demo(report_split="val", checkpoint="last"))
    assert {(r.config["select_split"], r.config["report_split"]) for r in study.runs} == {("val", "val")}
    store = LocalStorage(tmp_path)
    save_study(store, study)
    data = build_report(store, study.name)  # no run has finished: the header comes from the spec
    assert (data["select_split"], data["report_split"], data["checkpoint"]) == ("val", "val", "last")
    text = render_markdown(data)
    assert "Selection split `val`, reporting split `val`; checkpoint `last`" in text
    assert "The metrics are on the selection split itself" in text
    assert "The metrics are on the selection split itself" in render_html(data, None, None)


def test_the_report_header_names_both_splits_and_the_checkpoint_rule(tmp_path: Path) -> None:
    study = parse_spec(demo())
    store = LocalStorage(tmp_path)
    save_study(store, study)
    data = build_report(store, study.name)
    text = render_markdown(data)
    assert "Selection split `val`, reporting split `test`; checkpoint `best`: each run's epoch with the " \
           "highest PSNR on `val`" in text  # fmt: skip
    assert "selection split itself" not in text
    assert "## Configurations (ranked by val PSNR)" in text


# --- the dataset must hold the splits ---------------------------------------------------------------


def test_a_stored_dataset_without_the_reported_split_is_refused_naming_it_and_its_splits(
    tmp_path: Path,
) -> None:
    store = LocalStorage(tmp_path / "store")
    root = make_synthetic_dataset(tmp_path / "ds", n_train=2, n_val=1, n_test=0, size=8)
    upload_dataset(store, root, "mini")
    data = demo()
    data["dataset"] = "mini"
    study = parse_spec(data)
    with pytest.raises(SpecError) as info:
        prepare_dataset(store, study, allow_local_path=False)
    assert info.value.problems == [
        "evaluation.report_split: dataset 'mini' has no 'test' split (it has: train, val)"
    ]
    prepare_dataset(store, parse_spec({**data, "evaluation": {"report_split": "val", "checkpoint": "last"}}),
                    allow_local_path=False)  # fmt: skip


def test_a_local_folder_without_the_split_is_refused(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=2, n_val=1, n_test=0, size=8, layout="plain")
    data = demo(select_split="test", report_split="val")
    data["dataset"] = str(root)
    with pytest.raises(SpecError) as info:
        prepare_dataset(LocalStorage(tmp_path / "store"), parse_spec(data), allow_local_path=True)
    assert info.value.problems == [
        f"evaluation.select_split: dataset {str(root)!r} has no 'test' split (it has: train, val)"
    ]


def test_a_synthetic_dataset_without_the_split_is_refused_at_submit_before_anything_is_written(
    tmp_path: Path,
) -> None:
    data = demo()
    data["dataset"] = {"synthetic": {"n_train": 2, "n_val": 1, "n_test": 0, "size": 8}}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data))
    store = tmp_path / "store"
    out = submit("--local", str(spec), "--store", str(store))
    assert out.returncode == 2, out.stderr
    name = parse_spec(data).to_dict()["dataset"]
    assert f"evaluation.report_split: dataset '{name}' has no 'test' split (it has: train, val)" in out.stderr
    assert "nothing was queued" in out.stderr and "Traceback" not in out.stderr
    assert not store.exists() or LocalStorage(store).list("") == [], "no dataset, spec or status written"


def test_the_synthetic_generator_writes_a_readable_testing_split(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=1, n_val=2, size=8, seed=5)  # default n_test
    test = list_pairs(root, "test")
    assert len(test) == 8 and {p.nir.parent.name for p in test} == {"Testing"}
    assert all("_test_" in p.name for p in test)
    assert set(check_pairs(test).values()) == {(8, 8)}
    assert {p.name for p in test}.isdisjoint(p.name for p in list_pairs(root, "val"))
    # through the spec and the store: n_test reaches the manifest, and changes the dataset's name
    study = load_spec(SPECS / "demo.yaml")
    s = study.spec.dataset.synthetic
    assert s.n_test > 0, "the demo reports its test split"
    manifest = ensure_synthetic(LocalStorage(tmp_path / "store"), "syn", n_train=2, n_val=1, n_test=3,
                                size=8, seed=0)  # fmt: skip
    assert manifest["splits"] == {"train": 2, "val": 1, "test": 3}
    other = demo()
    other["dataset"]["synthetic"]["n_test"] = s.n_test + 1
    assert parse_spec(other).to_dict()["dataset"] != study.to_dict()["dataset"]


# --- ranking -----------------------------------------------------------------------------------------


def write_finished_run(
    store: LocalStorage, study: str, run: str, reported: list[float], selected: float
) -> None:
    """What a finished run leaves: reported (test) per-image PSNRs and the selection (val) PSNR of its
    checkpoint in its status."""
    where = RunLocation(study, run)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["name", "psnr", "ssim", "ae", "mae"])
    for i, psnr in enumerate(reported):
        writer.writerow([f"img{i}", psnr, 0.5, 5.0, 20.0])
    store.put_bytes(where.artifact("per_image.csv"), buf.getvalue().encode())
    mean = sum(reported) / len(reported)
    metrics = {m: {"mean": v} for m, v in (("psnr", mean), ("ssim", 0.5), ("ae", 5.0), ("mae", 20.0))}
    record = {"metrics": metrics, "protocol": "colormamba", "select_split": "val", "report_split": "test"}
    store.put_bytes(where.artifact("metrics.json"), json.dumps(record).encode())
    record_status(store, study, run, {"state": "succeeded", "epochs_done": 2, "best_epoch": 2,
                                     "select_split": "val", "report_split": "test",
                                     "select_metrics": {"psnr": selected}})  # fmt: skip


def test_sweeps_are_ranked_by_the_selection_split_never_by_the_reported_numbers(tmp_path: Path) -> None:
    data = demo()
    data["seeds"] = [0]
    data["configurations"] = {"original": {"loss": "original", "weights": {"mse": [0.5, 1.0, 2.0]}}}
    study = parse_spec(data)
    store = LocalStorage(tmp_path)
    save_study(store, study)
    # reported PSNR rises with the weight, selection PSNR falls: the ranking must follow the latter
    by_weight = {0.5: (20.0, 30.0), 1.0: (21.0, 29.0), 2.0: (22.0, 28.0)}
    for run in study.runs:
        reported, selected = by_weight[run.sweep["mse"]]
        write_finished_run(store, study.name, run.run_id, [reported - 0.5, reported + 0.5], selected)
    report = build_report(store, study.name)
    ranks = {r["variant"]: r["rank"] for r in report["summary"]}
    assert ranks == {"original+mse=0.5": 1, "original+mse=1": 2, "original+mse=2": 3}
    top = next(r for r in report["summary"] if r["rank"] == 1)
    assert (top["select_psnr_mean"], top["psnr_mean"]) == (30.0, 20.0)
    assert [r["select_psnr"] for r in report["runs"]] == [30.0, 29.0, 28.0]
