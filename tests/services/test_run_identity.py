"""Runs are named by what they compute (services.spec._plan, services.studies.prepare_dataset): a run id
hashes the resolved loss weights and model config and the dataset's content, so that an edited preset, a
replaced stored dataset or a changed local folder gives new runs (and says why), while an unchanged run
keeps its id and its results."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from PIL import Image

from colormamba.data.synthetic import make_synthetic_dataset
from colormamba.losses import LOSS_PRESETS
from colormamba.models import registry
from colormamba.storage import LocalStorage
from services.datasets import upload_dataset
from services.spec import load_spec
from services.studies import new_run_reasons, prepare_dataset, save_study
from tests.support.submit import DEMO


def _spec(tmp: Path, dataset: str) -> Path:
    spec = yaml.safe_load(DEMO.read_text()) | {"dataset": dataset, "seeds": [0]}
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_synthetic_dataset(tmp_path / "data", n_train=4, n_val=2, n_test=2, size=16, seed=5)


def _bound(store: LocalStorage, spec: Path, local: bool = True):
    study = load_spec(spec)
    return study.bind_dataset(prepare_dataset(store, study, allow_local_path=local, materialize=False))


def _ids(study) -> dict[tuple[str, int], str]:
    return {(r.variant, r.seed): r.run_id for r in study.runs}


def test_an_unchanged_study_keeps_its_ids_and_has_nothing_new(tmp_path: Path, folder: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    first = _bound(store, _spec(tmp_path, str(folder)))
    save_study(store, first)
    again = _bound(store, _spec(tmp_path, str(folder)))
    assert _ids(again) == _ids(first)
    assert new_run_reasons(store, again) == {}
    plan = first.runs[0]
    assert plan.resolved["loss_weights"] == LOSS_PRESETS[plan.config["loss"]]
    assert plan.resolved["model"] == dataclasses.asdict(registry.resolve_config("tiny", scan_backend="auto"))


def test_a_changed_local_folder_gives_new_runs_saying_the_content_changed(
    tmp_path: Path, folder: Path
) -> None:
    store = LocalStorage(tmp_path / "store")
    first = _bound(store, _spec(tmp_path, str(folder)))
    save_study(store, first)
    image = sorted((folder / "NIR").iterdir())[0]
    pixels = Image.open(image)
    pixels.putpixel((0, 0), (pixels.getpixel((0, 0)) + 1) % 256)
    pixels.save(image)
    changed = _bound(store, _spec(tmp_path, str(folder)))
    assert set(_ids(changed).values()).isdisjoint(_ids(first).values())
    reasons = new_run_reasons(store, changed)
    assert set(reasons) == {r.run_id for r in changed.runs}
    before, after = first.dataset_info["identity"][:12], changed.dataset_info["identity"][:12]
    assert all(why == f"dataset content {before} -> {after}" for why in reasons.values())


def test_an_edited_preset_gives_new_runs_of_that_preset_only(
    tmp_path: Path, folder: Path, monkeypatch
) -> None:
    store = LocalStorage(tmp_path / "store")
    first = _bound(store, _spec(tmp_path, str(folder)))
    save_study(store, first)
    was = LOSS_PRESETS["histogram"]["histogram"]
    monkeypatch.setitem(LOSS_PRESETS, "histogram", {**LOSS_PRESETS["histogram"], "histogram": was + 1})
    edited = _bound(store, _spec(tmp_path, str(folder)))
    old, new = _ids(first), _ids(edited)
    assert new[("original", 0)] == old[("original", 0)]
    assert new[("histogram", 0)] != old[("histogram", 0)]
    reasons = new_run_reasons(store, edited)
    assert reasons == {new[("histogram", 0)]: f"loss weights histogram {was} -> {was + 1}"}
    assert edited.runs[1].resolved["loss_weights"]["histogram"] == was + 1


def test_an_edited_model_preset_gives_new_runs(tmp_path: Path, folder: Path, monkeypatch) -> None:
    store = LocalStorage(tmp_path / "store")
    first = _bound(store, _spec(tmp_path, str(folder)))
    save_study(store, first)
    tiny = registry._PRESETS["tiny"]
    monkeypatch.setitem(registry._PRESETS, "tiny", lambda: {**tiny(), "d_state": 8})
    edited = _bound(store, _spec(tmp_path, str(folder)))
    assert set(_ids(edited).values()).isdisjoint(_ids(first).values())
    assert set(new_run_reasons(store, edited).values()) == {"model d_state 4 -> 8"}


def test_a_replaced_stored_dataset_gives_new_runs(tmp_path: Path, folder: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    upload_dataset(store, folder, "mini")
    first = _bound(store, _spec(tmp_path, "mini"), local=False)
    save_study(store, first)
    other = make_synthetic_dataset(tmp_path / "other", n_train=4, n_val=2, n_test=2, size=16, seed=6)
    upload_dataset(store, other, "mini", replace=True)
    replaced = _bound(store, _spec(tmp_path, "mini"), local=False)
    assert set(_ids(replaced).values()).isdisjoint(_ids(first).values())
    assert all(why.startswith("dataset content ") for why in new_run_reasons(store, replaced).values())


def test_a_study_planned_by_an_earlier_version_says_so(tmp_path: Path, folder: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    unbound = load_spec(_spec(tmp_path, str(folder)))
    old = type(unbound)(unbound.spec, [type(r)(**{**r.__dict__, "resolved": {}}) for r in unbound.runs])
    save_study(store, old)
    reasons = new_run_reasons(store, _bound(store, _spec(tmp_path, str(folder))))
    assert reasons and all("earlier version" in why for why in reasons.values())
