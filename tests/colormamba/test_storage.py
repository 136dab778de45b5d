from pathlib import Path

import pytest

from colormamba.storage import LocalStorage, ObjectNotFound, RunLocation, Storage, check_key, check_name


def test_local_storage_round_trip_and_listing(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    assert isinstance(store, Storage)
    store.put_bytes("runs/s/r/metrics.json", b"{}")
    store.put_bytes("runs/s/r/samples/a.png", b"png")
    store.put_bytes("runs/s/other/x", b"1")
    assert store.get_bytes("runs/s/r/metrics.json") == b"{}"
    assert store.list("runs/s/r") == ["runs/s/r/metrics.json", "runs/s/r/samples/a.png"]
    assert store.list("nothing/here") == []
    assert store.exists("runs/s/other/x") and not store.exists("runs/s/other/y")
    store.delete("runs/s/other/x")
    with pytest.raises(ObjectNotFound, match="runs/s/other/x"):
        store.get_bytes("runs/s/other/x")


def test_overwrite_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    store.put_bytes("a/b", b"old")
    store.put_bytes("a/b", b"new")
    assert store.get_bytes("a/b") == b"new"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]


def test_failed_write_keeps_the_old_object(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    store.put_bytes("a/b", b"old")

    with pytest.raises(TypeError):  # the write itself fails, after the temporary file exists
        store.put_bytes("a/b", object())  # type: ignore[arg-type]
    assert store.get_bytes("a/b") == b"old"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a\\b"])
def test_bad_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        check_key(key)
    with pytest.raises(ValueError):
        LocalStorage(tmp_path).put_bytes(key, b"x")


@pytest.mark.parametrize("name", ["..", "a/b", "", ".hidden", "x" * 129, "a..b", "sp ace"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid study name"):
        check_name(name, "study name")


def test_run_location_spells_the_layout() -> None:
    where = RunLocation("study1", "original-seed0")
    assert where.checkpoint("last") == "checkpoints/study1/original-seed0/last.pt"
    assert where.artifact("samples/x.png") == "runs/study1/original-seed0/samples/x.png"
    with pytest.raises(ValueError, match="run name"):
        RunLocation("study1", "../escape")
