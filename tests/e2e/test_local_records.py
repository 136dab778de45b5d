"""One real `jobs/submit.py --local` run, checked against a recomputation: best.pt is the epoch with the
highest PSNR on the selection split (val), the reported metrics and per-image rows are the test split's,
and the run's provenance is stored with its results and in its checkpoints."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from typing import Any

import pytest
import torch
import yaml

import colormamba
from colormamba import checkpoint
from colormamba.data import PairedDataset, list_pairs
from colormamba.evaluate import predict_split, summarize
from colormamba.models import build_model_from_config
from colormamba.ops import resolve_backend
from colormamba.storage import LocalStorage, RunLocation
from services.datasets import fetch_dataset
from services.spec import load_spec
from services.studies import read_status
from tests.support.servers import REPO
from tests.support.submit import DEMO, submit

pytestmark = pytest.mark.slow  # trains a run: a minute on two busy cores


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("local-records")
    spec = yaml.safe_load(DEMO.read_text())
    spec |= {"study": "records", "seeds": [0], "configurations": {"original": {"loss": "original"}},
             "recipe": {"epochs": 3, "batch_size": 2, "lr": 1e-3, "max_steps_per_epoch": 1}}  # fmt: skip
    spec["dataset"] = {"synthetic": {"n_train": 4, "n_val": 2, "n_test": 3, "size": 16, "seed": 0}}
    spec["evaluation"]["num_samples"] = 1
    path = tmp / "records.yaml"
    path.write_text(yaml.safe_dump(spec))
    cache = tmp / "cache"
    out = submit("--local", str(path), "--store", str(tmp / "store"),
                 env={"COLORMAMBA_DATA_CACHE": str(cache)}, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    store = LocalStorage(tmp / "store")
    study = load_spec(path)
    (run,) = study.runs
    where = RunLocation(study.name, run.run_id)
    return {
        "store": store,
        "where": where,
        "root": fetch_dataset(store, study.to_dict()["dataset"], cache),  # the copy the run read
        "status": read_status(store, study.name, run.run_id),
        "best": checkpoint.load(store, where.checkpoint("best")),
        "last": checkpoint.load(store, where.checkpoint("last")),
    }


def rows(store: LocalStorage, key: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(store.get_bytes(key).decode())))


def test_best_is_chosen_on_val_and_the_reported_metrics_are_tests(finished: dict[str, Any]) -> None:
    store, where, root, best = finished["store"], finished["where"], finished["root"], finished["best"]
    status = finished["status"]
    assert status["state"] == "succeeded"
    assert (status["select_split"], status["report_split"]) == ("val", "test")
    val_psnr = [float(r["val_psnr"]) for r in rows(store, where.artifact("history.csv"))]
    assert best["epoch"] == 1 + val_psnr.index(max(val_psnr)) == status["checkpoint_epoch"]
    assert best["val_psnr"] == pytest.approx(max(val_psnr)) == status["select_metrics"]["psnr"]

    # best.pt's weights, scored again on each split: its recorded PSNR is val's, the report's is test's
    model = build_model_from_config(best["model_config"])
    model.load_state_dict(best["model"])

    def scored(split: str) -> tuple[list[str], float]:
        pred = predict_split(model, PairedDataset(list_pairs(root, split), train=False), "colormamba",
                             torch.device("cpu"))  # fmt: skip
        return pred.names, summarize(pred.metrics)["psnr"]["mean"]

    val_names, val_mean = scored("val")
    test_names, test_mean = scored("test")
    assert val_mean == pytest.approx(best["val_psnr"], abs=1e-4)
    metrics = json.loads(store.get_bytes(where.artifact("metrics.json")))
    assert (metrics["select_split"], metrics["report_split"], metrics["n_images"]) == ("val", "test", 3)
    assert metrics["metrics"]["psnr"]["mean"] == pytest.approx(test_mean, abs=1e-4)
    assert abs(test_mean - val_mean) > 1e-3, "the two splits must be told apart by this check"
    assert [r["name"] for r in rows(store, where.artifact("per_image.csv"))] == test_names
    assert set(test_names).isdisjoint(val_names) and all("_test_" in n for n in test_names)
    report = json.loads(store.get_bytes("reports/records/report.json"))
    assert sorted(p["name"] for p in report["per_image"]) == sorted(test_names)
    assert (report["select_split"], report["report_split"], report["checkpoint"]) == ("val", "test", "best")


def test_the_run_records_its_provenance_with_its_results_and_in_its_checkpoints(
    finished: dict[str, Any],
) -> None:
    store, where, status = finished["store"], finished["where"], finished["status"]
    provenance = status["provenance"]
    assert json.loads(store.get_bytes(where.artifact("provenance.json"))) == provenance
    assert finished["best"]["provenance"] == provenance == finished["last"]["provenance"]
    assert provenance["version"] == colormamba.__version__
    assert (provenance["torch"], provenance["cuda"]) == (torch.__version__, torch.version.cuda)
    assert provenance["scan_backend"] == resolve_backend("auto", "cpu") != "auto"
    assert provenance["device_name"].startswith("CPU")
    assert (provenance["precision"], provenance["compile"]) == ("fp32", False)
    if shutil.which("git") and (REPO / ".git").exists():
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert provenance["git_commit"] == head.stdout.strip()
    report = json.loads(store.get_bytes("reports/records/report.json"))
    (row,) = report["runs"]
    assert {k: row[k] for k in provenance} == provenance
    assert report["provenance_differences"] == {}
    runs_csv = rows(store, "reports/records/runs.csv")
    assert runs_csv[0]["scan_backend"] == provenance["scan_backend"]
    assert provenance["device_name"] in store.get_bytes("reports/records/report.md").decode()


def test_the_trivial_references_are_the_test_splits_and_reach_the_report(finished: dict[str, Any]) -> None:
    """The trained run's NIR-copy reference is the test split's, scored as the test computes it from the
    dataset copy the run read; the report shows the run's references and judges the configuration."""
    from colormamba.imaging import normalize_per_image
    from colormamba.metrics import compute_metrics

    store, where, root = finished["store"], finished["where"], finished["root"]
    metrics = json.loads(store.get_bytes(where.artifact("metrics.json")))
    assert list(metrics["trivial"]) == ["nir", "train_mean"]
    split = PairedDataset(list_pairs(root, "test"), train=False)
    psnr = []
    for item in (split[i] for i in range(len(split))):
        copy = normalize_per_image(item["nir"][None].repeat(1, 3, 1, 1))  # the NIR as R, G and B
        psnr.append(float(compute_metrics(copy, item["rgb"][None], "colormamba")["psnr"][0]))
    assert metrics["trivial"]["nir"]["metrics"]["psnr"]["mean"] == pytest.approx(
        sum(psnr) / len(psnr), abs=1e-6
    )
    nir_rows = [r for r in rows(store, where.artifact("trivial_per_image.csv")) if r["reference"] == "nir"]
    assert [float(r["psnr"]) for r in nir_rows] == pytest.approx(psnr, abs=1e-5)
    report = json.loads(store.get_bytes("reports/records/report.json"))
    assert [t["reference"] for t in report["trivial"]] == ["nir", "train_mean"]
    for t in report["trivial"]:
        assert t["psnr_mean"] == pytest.approx(metrics["trivial"][t["reference"]]["metrics"]["psnr"]["mean"])
        assert t["n_images"] == metrics["n_images"] == 3
    (row,) = report["summary"]
    for reference in ("nir", "train_mean"):
        ref = next(t for t in report["trivial"] if t["reference"] == reference)
        beats = row["psnr_mean"] > ref["psnr_mean"]  # the primary metric decides; SSIM is shown
        assert row["beats_trivial"][reference] is beats
