"""`dataset check` and the leak policy of `dataset upload` and `submit --local` as a user runs them (a
real subprocess): what is printed, the exit codes, and what reaches the store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from colormamba.data import list_pairs
from colormamba.data.synthetic import make_synthetic_dataset
from colormamba.storage import LocalStorage
from tests.support.real_data import REAL_COPY, REAL_COPY_ABSENT
from tests.support.submit import DEMO, submit


@pytest.fixture
def leaky(tmp_path: Path) -> Path:
    """A dataset whose test split holds a byte copy of a training pair, and an extra unpaired NIR image."""
    root = make_synthetic_dataset(tmp_path / "leaky", n_train=5, n_val=2, n_test=2, size=32, seed=4)
    first = list_pairs(root, "train")[0]
    shutil.copyfile(first.nir, root / "Testing" / "again_nir.png")
    shutil.copyfile(first.rgb, root / "Testing" / "again_rgb_reg.png")
    shutil.copyfile(first.nir, root / "Testing" / "lonely_nir_reg.png")
    return root


def test_dataset_check_json_needs_no_store_and_lists_what_it_found(leaky: Path) -> None:
    out = submit("dataset", "check", str(leaky), "--json")  # no COLORMAMBA_ variable at all
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert set(found) == {"layout", "splits", "skipped", "duplicates"}
    assert found["layout"] == "vcip2020" and found["splits"] == {"train": 5, "val": 2, "test": 3}
    assert [s["path"] for s in found["skipped"]] == ["Testing/lonely_nir_reg.png"]
    first = list_pairs(leaky, "train")[0].name
    assert found["duplicates"] == [{"splits": ["train", "test"], "pairs": [first, "again"], "kind": "exact",
                                    "score": 1.0}]  # fmt: skip
    human = submit("dataset", "check", str(leaky))
    assert human.returncode == 0 and "1 pair(s) are in two splits (train-test 1)" in human.stdout


def test_upload_refuses_leaks_by_default_then_drops_them_when_told(leaky: Path, tmp_path: Path) -> None:
    env = {"COLORMAMBA_STORE": str(tmp_path / "store")}
    out = submit("dataset", "upload", str(leaky), "--name", "leaky", env=env)
    assert out.returncode == 2, out.stdout
    assert "'again'" in out.stderr and "--drop-leaks" in out.stderr
    assert LocalStorage(tmp_path / "store").list("datasets") == []
    out = submit("dataset", "upload", str(leaky), "--name", "leaky", "--drop-leaks", env=env)
    assert out.returncode == 0, out.stderr
    assert "pairs train 5, val 2, test 2" in out.stdout and "dropped (1 from test)" in out.stdout


def test_local_dry_run_with_another_dataset_shows_every_split_and_the_leak_policy(
    leaky: Path, tmp_path: Path
) -> None:
    spec = yaml.safe_load(DEMO.read_text()) | {"seeds": [0]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {"COLORMAMBA_STORE": str(tmp_path / "store")}
    refused = submit("--local", str(path), "--dataset", str(leaky), "--dry-run", env=env)
    assert refused.returncode == 2 and "'again'" in refused.stderr and "nothing was queued" in refused.stderr
    path.write_text(yaml.safe_dump(spec | {"leaks": "drop"}, sort_keys=False))
    out = submit("--local", str(path), "--dataset", str(leaky), "--dry-run", env=env)
    assert out.returncode == 0, out.stderr
    assert f"dataset {leaky}: vcip2020 layout, pairs train 5, val 2, test 2" in out.stdout
    assert "1 file(s)/folder(s) skipped" in out.stdout and "dropped (1 from test)" in out.stdout
    assert LocalStorage(tmp_path / "store").list("runs") == [], "a dry run records nothing"


@pytest.mark.skipif(not REAL_COPY.is_dir(), reason=REAL_COPY_ABSENT)
def test_the_quick_study_plans_on_the_real_copy(tmp_path: Path) -> None:
    quick = DEMO.parent / "vcip2020_quick.yaml"
    env = {"COLORMAMBA_STORE": str(tmp_path / "store")}
    out = submit("--local", str(quick), "--dataset", str(REAL_COPY), "--dry-run", env=env)
    assert out.returncode == 0, out.stderr
    dataset = out.stdout.splitlines()[0]
    assert "vcip2020 layout, pairs train 372" in dataset and "skipped" in dataset and "dropped" in dataset


def test_upload_refuses_an_image_above_the_pixel_limit_and_links_out_of_the_folder(tmp_path: Path) -> None:
    from colormamba.imaging import MAX_IMAGE_PIXELS
    from tests.support.images import png_claiming

    root = make_synthetic_dataset(tmp_path / "data", n_train=3, n_val=2, size=16, seed=5)
    bomb = png_claiming(list_pairs(root, "val")[0].nir, 100_000, 100_000)
    env = {"COLORMAMBA_STORE": str(tmp_path / "store")}
    out = submit("dataset", "upload", str(root), "--name", "bomb", env=env)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert f"{bomb}: 10,000,000,000 pixels is above the limit of {MAX_IMAGE_PIXELS:,} pixels" in out.stderr
    assert "Traceback" not in out.stderr and "DecompressionBomb" not in out.stderr
    shutil.copyfile(list_pairs(root, "val")[1].nir, bomb)  # a good image again; then a link that leaves
    outside = tmp_path / "outside.png"
    shutil.copyfile(list_pairs(root, "train")[0].rgb, outside)
    linked = list_pairs(root, "train")[0].rgb
    linked.unlink()
    linked.symlink_to(outside)
    out = submit("dataset", "upload", str(root), "--name", "linked", env=env)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert f"RGB-Registered/{linked.name} -> {outside}" in out.stderr and "nothing was uploaded" in out.stderr
    assert LocalStorage(tmp_path / "store").list("datasets") == []
