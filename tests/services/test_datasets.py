"""Dataset upload (checked, with a manifest of checksums) and the workers' cache keyed by manifest hash."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from colormamba.data import DatasetError, list_pairs
from colormamba.data.synthetic import make_synthetic_dataset
from colormamba.storage import LocalStorage
from services.datasets import (
    DatasetConflict,
    DatasetLeak,
    check_dataset,
    ensure_synthetic,
    fetch_dataset,
    leakage_line,
    list_datasets,
    manifest_key,
    read_manifest,
    upload_dataset,
)
from tests.support.real_data import REAL_COPY, REAL_COPY_ABSENT


@pytest.fixture
def dataset(tmp_path):
    return make_synthetic_dataset(tmp_path / "vcip", n_train=4, n_val=2, n_test=1, size=16, seed=3)


def test_upload_writes_files_and_a_manifest_that_a_worker_cache_verifies(dataset, s3_store, tmp_path):
    manifest = upload_dataset(s3_store, dataset, "mini")
    assert manifest["splits"] == {"train": 4, "val": 2, "test": 1}
    assert manifest["layout"] == "vcip2020"
    assert len(manifest["files"]) == 2 * (4 + 2 + 1)
    stored = json.loads(s3_store.get_bytes(manifest_key("mini")))
    assert stored["hash"] == manifest["hash"]
    assert [d["name"] for d in list_datasets(s3_store)] == ["mini"]

    local = fetch_dataset(s3_store, "mini", tmp_path / "cache")
    assert local.name == manifest["hash"]
    assert [p.name for p in list_pairs(local, "val")] == [p.name for p in list_pairs(dataset, "val")]
    for rel in manifest["files"]:
        assert (local / rel).read_bytes() == (dataset / rel).read_bytes()
    # a second fetch uses the cache: it works even with the objects gone
    for key in s3_store.list("datasets/mini"):
        if not key.endswith("manifest.json"):
            s3_store.delete(key)
    assert fetch_dataset(s3_store, "mini", tmp_path / "cache") == local


def test_a_corrupt_image_is_refused_at_upload_naming_the_file(dataset, tmp_path):
    bad = dataset / "NIR" / sorted(p.name for p in (dataset / "NIR").iterdir())[1]
    bad.write_bytes(b"not a png at all")
    store = LocalStorage(tmp_path / "store")
    with pytest.raises(DatasetError) as info:
        upload_dataset(store, dataset, "broken")
    assert str(bad) in str(info.value)
    assert store.list("datasets") == [], "nothing may be uploaded from a refused dataset"


def test_a_dataset_without_a_validation_split_is_refused(dataset, tmp_path):
    shutil.rmtree(dataset / "Validation")
    with pytest.raises(DatasetError, match="no val split"):
        upload_dataset(LocalStorage(tmp_path / "store"), dataset, "noval")


def test_a_tampered_object_fails_the_cache_checksum(dataset, tmp_path):
    store = LocalStorage(tmp_path / "store")
    manifest = upload_dataset(store, dataset, "mini")
    rel = next(iter(manifest["files"]))
    store.put_bytes(f"datasets/mini/{rel}", b"tampered")
    with pytest.raises(ValueError, match=f"datasets/mini/{rel} does not match its manifest checksum"):
        fetch_dataset(store, "mini", tmp_path / "cache")
    assert not (tmp_path / "cache" / manifest["hash"]).exists(), "no half-verified cache entry"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []


def test_same_content_is_a_no_op_other_content_needs_replace(dataset, tmp_path):
    store = LocalStorage(tmp_path / "store")
    first = upload_dataset(store, dataset, "mini")
    assert upload_dataset(store, dataset, "mini")["hash"] == first["hash"]
    other = make_synthetic_dataset(tmp_path / "other", n_train=3, n_val=2, n_test=0, size=16, seed=4)
    with pytest.raises(DatasetConflict, match="--replace"):
        upload_dataset(store, other, "mini")
    second = upload_dataset(store, other, "mini", replace=True)
    assert second["hash"] != first["hash"]
    assert read_manifest(store, "mini")["splits"]["train"] == 3
    assert len([k for k in store.list("datasets/mini") if not k.endswith("manifest.json")]) == 2 * 5
    # a cache keyed by the new hash is a new entry
    assert fetch_dataset(store, "mini", tmp_path / "cache").name == second["hash"]


def test_same_content_under_another_name_shares_the_stored_files(dataset, s3_store, tmp_path):
    first = upload_dataset(s3_store, dataset, "mini")
    before = s3_store.list("datasets")
    assert len(before) == len(first["files"]) + 1
    second = upload_dataset(s3_store, dataset, "mini-copy")
    after = s3_store.list("datasets")
    assert sorted(set(after) - set(before)) == ["datasets/mini-copy/manifest.json"], "no image re-uploaded"
    assert len(after) == len(before) + 1
    assert (second["hash"], second["files_of"]) == (first["hash"], "mini")
    rows = {d["name"]: (d["hash"], d["files_of"]) for d in list_datasets(s3_store)}
    assert rows == {"mini": (first["hash"], "mini"), "mini-copy": (first["hash"], "mini")}
    # either name reads the same verified files (a cache of its own each, so both really download)
    for name in ("mini", "mini-copy"):
        local = fetch_dataset(s3_store, name, tmp_path / f"cache-{name}")
        assert local.name == first["hash"]
        for rel in first["files"]:
            assert (local / rel).read_bytes() == (dataset / rel).read_bytes(), (name, rel)
    # a third name points at the holder of the files, not at the second name (which holds none)
    assert upload_dataset(s3_store, dataset, "mini-3")["files_of"] == "mini"
    assert len(s3_store.list("datasets")) == len(after) + 1


def test_a_dataset_whose_files_are_shared_is_not_replaced_but_its_second_name_can_be(dataset, tmp_path):
    store = LocalStorage(tmp_path / "store")
    upload_dataset(store, dataset, "a")
    upload_dataset(store, dataset, "b")
    other = make_synthetic_dataset(tmp_path / "other", n_train=3, n_val=2, size=16, seed=4)
    with pytest.raises(DatasetConflict, match=r"'a' cannot be replaced: its files are also dataset\(s\) b"):
        upload_dataset(store, other, "a", replace=True)
    assert fetch_dataset(store, "b", tmp_path / "cache-b").is_dir(), "b's files are intact"
    replaced = upload_dataset(store, other, "b", replace=True)
    assert "files_of" not in replaced and read_manifest(store, "b")["splits"]["train"] == 3
    pairs = sum(read_manifest(store, "b")["splits"].values())  # NIR + RGB of every pair, train to test
    assert len([k for k in store.list("datasets/b") if not k.endswith("manifest.json")]) == 2 * pairs
    assert fetch_dataset(store, "a", tmp_path / "cache-a").name == read_manifest(store, "a")["hash"]


def test_a_missing_dataset_says_how_to_upload_it(tmp_path):
    with pytest.raises(ValueError, match="dataset upload PATH --name vcip2020"):
        fetch_dataset(LocalStorage(tmp_path), "vcip2020", tmp_path / "cache")


def test_synthetic_datasets_are_generated_once(tmp_path):
    store = LocalStorage(tmp_path / "store")
    m1 = ensure_synthetic(store, "synthetic-abc", n_train=3, n_val=2, size=16, seed=0)
    m2 = ensure_synthetic(store, "synthetic-abc", n_train=3, n_val=2, size=16, seed=0)
    assert m1["hash"] == m2["hash"]
    assert m1["splits"] == {"train": 3, "val": 2}


# --- pairs shared between splits (colormamba.data.leaks) under the upload's leak policy ---------------


def _plant(root, train_name: str, folder: str, name: str, flip: bool = False) -> None:
    """A copy of train pair `train_name` as pair `name` in `folder` (Validation or Testing): the same
    bytes, or mirrored left-right."""
    from PIL import Image, ImageOps

    for src, suffix in ((root / "NIR" / f"{train_name}_nir.png", "_nir.png"),
                        (root / "RGB-Registered" / f"{train_name}_rgb_reg.png", "_rgb_reg.png")):  # fmt: skip
        target = root / folder / f"{name}{suffix}"
        if flip:
            ImageOps.mirror(Image.open(src)).save(target)
        else:
            shutil.copyfile(src, target)


@pytest.fixture
def leaky(tmp_path):
    """A dataset whose test split holds a byte copy of a training pair and whose val split a mirrored one."""
    root = make_synthetic_dataset(tmp_path / "leaky", n_train=6, n_val=3, n_test=3, size=32, seed=11)
    train = [p.name for p in list_pairs(root, "train")]
    _plant(root, train[0], "Testing", "copy_of_train")
    _plant(root, train[1], "Validation", "mirrored_train", flip=True)
    return root, train


def test_a_leaky_dataset_is_refused_naming_the_pairs_and_nothing_is_uploaded(leaky, tmp_path):
    root, train = leaky
    store = LocalStorage(tmp_path / "store")
    with pytest.raises(DatasetLeak) as info:
        upload_dataset(store, root, "leaky")
    message = str(info.value)
    for name in (train[0], "copy_of_train", train[1], "mirrored_train", "--drop-leaks", "--allow-leaks"):
        assert name in message
    assert store.list("datasets") == []


def test_drop_leaks_drops_the_later_copies_and_records_why(leaky, tmp_path):
    root, train = leaky
    store = LocalStorage(tmp_path / "store")
    manifest = upload_dataset(store, root, "leaky", leaks="drop")
    assert manifest["splits"] == {"train": 6, "val": 3, "test": 3}  # 3 + 1 planted, minus the copy
    leakage = manifest["leakage"]
    assert leakage["status"] == "dropped"
    assert set(leakage["dropped"]["test"]) == {"copy_of_train"}
    assert set(leakage["dropped"]["val"]) == {"mirrored_train"}
    assert train[0] in leakage["dropped"]["test"]["copy_of_train"]
    kinds = {tuple(d["pairs"]): (d["kind"], tuple(d["splits"])) for d in leakage["duplicates"]}
    assert kinds[(train[0], "copy_of_train")] == ("exact", ("train", "test"))
    assert kinds[(train[1], "mirrored_train")] == ("near", ("train", "val"))
    assert not any("copy_of_train" in rel or "mirrored_train" in rel for rel in manifest["files"])
    local = fetch_dataset(store, "leaky", tmp_path / "cache")
    assert "copy_of_train" not in [p.name for p in list_pairs(local, "test")]
    assert read_manifest(store, "leaky")["leakage"] == leakage


def test_allow_leaks_keeps_them_and_says_so(leaky, tmp_path):
    root, _ = leaky
    manifest = upload_dataset(LocalStorage(tmp_path / "store"), root, "leaky", leaks="allow")
    assert manifest["splits"] == {"train": 6, "val": 4, "test": 4}
    assert manifest["leakage"]["status"] == "allowed" and manifest["leakage"]["dropped"] == {}
    assert "KEPT" in leakage_line(manifest["leakage"])


def test_a_clean_dataset_records_a_clean_check(dataset, tmp_path):
    manifest = upload_dataset(LocalStorage(tmp_path / "store"), dataset, "clean")
    assert manifest["leakage"]["status"] == "clean" and manifest["leakage"]["duplicates"] == []
    assert manifest["skipped"] == []


@pytest.mark.skipif(not REAL_COPY.is_dir(), reason=REAL_COPY_ABSENT)
def test_the_real_copy_is_refused_then_uploads_with_its_leaks_dropped(tmp_path):
    check = check_dataset(REAL_COPY)
    assert check.duplicates, "the public copy has pairs in two splits"
    store = LocalStorage(tmp_path / "store")
    with pytest.raises(DatasetLeak):
        upload_dataset(store, REAL_COPY, "vcip2020")
    manifest = upload_dataset(store, REAL_COPY, "vcip2020", leaks="drop")
    dropped = manifest["leakage"]["dropped"]
    for split, listed in check.to_json()["splits"].items():
        assert manifest["splits"][split] == listed - len(dropped.get(split, {}))
    assert manifest["splits"]["train"] == 372
    assert [s["path"] for s in manifest["skipped"]] == ["Testing/visual"]
    assert not any(rel.startswith("Testing/visual") for rel in manifest["files"])
    local = fetch_dataset(store, "vcip2020", tmp_path / "cache")
    kept_test = {p.name for p in list_pairs(local, "test")}
    assert kept_test.isdisjoint(dropped.get("test", {})) and len(kept_test) == manifest["splits"]["test"]


def test_a_split_whose_pairs_are_all_dropped_is_gone_and_a_study_on_it_refused(tmp_path):
    from services.spec import load_spec
    from services.studies import prepare_dataset
    from tests.support.submit import demo_with_seeds

    root = make_synthetic_dataset(tmp_path / "data", n_train=3, n_val=1, n_test=1, size=16, seed=8)
    (val,) = list_pairs(root, "val")
    first = list_pairs(root, "train")[0]
    shutil.copyfile(first.nir, val.nir)
    shutil.copyfile(first.rgb, val.rgb)
    manifest = upload_dataset(LocalStorage(tmp_path / "store"), root, "noval", leaks="drop")
    assert manifest["splits"] == {"train": 3, "test": 1}
    spec = demo_with_seeds(tmp_path, [0])
    changed = {"dataset": str(root), "leaks": "drop"}
    spec.write_text(yaml.safe_dump(yaml.safe_load(spec.read_text()) | changed))
    store = LocalStorage(tmp_path / "s2")
    with pytest.raises(ValueError, match=r"evaluation.select_split: dataset .* has no 'val' split"):
        prepare_dataset(store, load_spec(spec), allow_local_path=True, materialize=False)


# --- what upload reads: images within the pixel limit, files inside the dataset folder ----------------


def test_an_image_whose_header_claims_100000x100000_is_refused_at_upload_naming_it(dataset, tmp_path):
    from colormamba.imaging import MAX_IMAGE_PIXELS
    from tests.support.images import png_claiming

    bomb = png_claiming(sorted((dataset / "NIR").iterdir())[0], 100_000, 100_000)
    store = LocalStorage(tmp_path / "store")
    with pytest.raises(DatasetError) as info:
        upload_dataset(store, dataset, "bomb")
    assert f"{bomb}: 10,000,000,000 pixels is above the limit" in str(info.value)
    assert f"limit of {MAX_IMAGE_PIXELS:,} pixels" in str(info.value)
    assert store.list("datasets") == [], "nothing may be uploaded from a refused dataset"


def test_links_that_leave_the_dataset_folder_are_refused_naming_each_and_nothing_is_uploaded(
    dataset, tmp_path
):
    outside = tmp_path / "elsewhere"  # beside the dataset folder, not under it
    store = LocalStorage(tmp_path / "store")
    first = upload_dataset(store, dataset, "mini")  # a refused --replace must leave this one intact
    shutil.copytree(dataset / "NIR", outside / "NIR")
    shutil.rmtree(dataset / "NIR")
    (dataset / "NIR").symlink_to(outside / "NIR", target_is_directory=True)  # a split folder leaves
    val = sorted((dataset / "Validation").iterdir())[0]
    (outside / "secret.png").write_bytes(val.read_bytes())
    val.unlink()
    val.symlink_to(outside / "secret.png")  # and one file
    with pytest.raises(DatasetError) as info:
        upload_dataset(store, dataset, "mini", replace=True)
    message = str(info.value)
    assert "2 link(s) lead out of the dataset folder" in message, message
    assert f"NIR -> {outside / 'NIR'}" in message
    assert f"Validation/{val.name} -> {outside / 'secret.png'}" in message
    assert sorted(store.list("datasets")) == sorted(
        [f"datasets/mini/{rel}" for rel in first["files"]] + ["datasets/mini/manifest.json"]
    ), "nothing uploaded, nothing replaced"
    assert read_manifest(store, "mini")["hash"] == first["hash"]
    with pytest.raises(DatasetError, match="lead out of the dataset folder"):
        upload_dataset(store, dataset, "other")
    assert not [k for k in store.list("datasets") if k.startswith("datasets/other")]


def test_links_that_stay_inside_the_dataset_folder_are_uploaded_as_their_files(dataset, tmp_path):
    (dataset / "moved").mkdir()
    (dataset / "Testing").rename(dataset / "moved" / "Testing")
    (dataset / "Testing").symlink_to("moved/Testing", target_is_directory=True)
    store = LocalStorage(tmp_path / "store")
    manifest = upload_dataset(store, dataset, "linked")
    assert manifest["splits"]["test"] == 1
    test_files = [rel for rel in manifest["files"] if rel.startswith("Testing/")]
    assert len(test_files) == 2
    for rel in test_files:
        assert store.get_bytes(f"datasets/linked/{rel}") == (dataset / "moved" / rel).read_bytes()


def test_a_dataset_reached_through_a_linked_root_is_not_refused(dataset, tmp_path):
    link = tmp_path / "link-to-dataset"
    link.symlink_to(dataset, target_is_directory=True)
    manifest = upload_dataset(LocalStorage(tmp_path / "store"), link, "via-link")
    assert manifest["splits"] == {"train": 4, "val": 2, "test": 1}


# --- the worker's cache on a real small disk (conftest's small_disk: a tmpfs; mounting one needs root) ---


def test_a_cache_without_room_for_the_dataset_refuses_before_downloading(dataset, small_disk, tmp_path):
    from services.datasets import CacheFull, cache_room_needed
    from services.settings import DATA_CACHE

    store = LocalStorage(tmp_path / "store")
    manifest = upload_dataset(store, dataset, "mini")
    needed = cache_room_needed(manifest)
    assert needed > sum(f["size"] for f in manifest["files"].values())
    disk = small_disk(needed + (4 << 20))
    cache = disk / "cache"
    filler = disk / "filler"
    filler.write_bytes(bytes(shutil.disk_usage(disk).free - needed + 4096))  # one block short
    free = shutil.disk_usage(disk).free
    assert free < needed
    with pytest.raises(CacheFull) as info:
        fetch_dataset(store, "mini", cache)
    message = str(info.value)
    for part in (str(cache), DATA_CACHE.name, f"needs {needed:,} bytes", f"{free:,} bytes are free",
                 "dataset 'mini'", "before downloading"):  # fmt: skip
        assert part in message, (part, message)
    assert isinstance(info.value, OSError) and (info.value.folder, info.value.needed) == (cache, needed)
    assert not cache.exists() or list(cache.iterdir()) == [], "nothing downloaded"
    filler.unlink()  # room again: the same fetch succeeds, so the check asked for no more than it needs
    local = fetch_dataset(store, "mini", cache)
    assert sorted(p.name for p in local.iterdir()) == [".complete", "NIR", "RGB-Registered", "Testing",
                                                        "Validation"]  # fmt: skip


def test_a_write_that_finds_the_disk_full_is_cache_full_and_leaves_no_partial_copy(
    dataset, small_disk, tmp_path
):
    """Room in bytes but not in inodes: the pre-check passes, then creating the files hits ENOSPC."""
    import errno

    from services.datasets import CacheFull
    from services.settings import DATA_CACHE

    store = LocalStorage(tmp_path / "store")
    upload_dataset(store, dataset, "mini")
    disk = small_disk("256m", inodes=8)
    with pytest.raises(CacheFull) as info:
        fetch_dataset(store, "mini", disk)
    message = str(info.value)
    assert str(disk) in message and DATA_CACHE.name in message and "No space left on device" in message
    assert "out of inodes" in message
    assert info.value.errno == errno.ENOSPC
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert list(disk.iterdir()) == [], "the partial copy is removed"


def test_the_start_up_check_warns_of_a_cache_disk_with_no_room_for_any_download(small_disk):
    from services.checks import cache_room_warning
    from services.datasets import CACHE_HEADROOM
    from services.settings import DATA_CACHE

    full = small_disk("1m")
    warning = cache_room_warning(full)
    assert warning is not None and str(full) in warning and DATA_CACHE.name in warning
    assert f"{shutil.disk_usage(full).free:,} bytes free" in warning
    roomy = small_disk(CACHE_HEADROOM + (1 << 20))
    assert cache_room_warning(roomy) is None
