"""The Storage contract (colormamba.storage.Storage), run against both stores: LocalStorage on a folder
and S3Storage on a real SeaweedFS S3 server (tests/conftest.py); then what only LocalStorage promises
(its temporary files), key and name checks, and the layout. S3-only behaviour (credentials, checksums,
retries): test_storage_s3.py."""

from pathlib import Path

import pytest

from colormamba.storage import LocalStorage, ObjectNotFound, RunLocation, Storage, check_key, check_name

BAD_KEYS = ["", "/abs", "a/../b", "a//b", "./a", "a\\b"]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Each store of the contract, empty: a folder, or a bucket of this test's own."""
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    return request.getfixturevalue("s3_store")


def test_round_trip_listing_overwrite_and_delete(store: Storage) -> None:
    assert isinstance(store, Storage)
    every_byte = bytes(range(256))
    store.put_bytes("runs/s/r/status.json", b'{"state": "queued"}')
    store.put_bytes("runs/s/r/samples/a_pred.png", every_byte)
    store.put_bytes("runs/s/r/empty", b"")
    store.put_bytes("runs/s/other/metrics.json", b"{}")
    store.put_bytes("runs/s2/r/metrics.json", b"{}")  # shares the string prefix "runs/s", not the folder
    assert store.get_bytes("runs/s/r/status.json") == b'{"state": "queued"}'
    assert store.get_bytes("runs/s/r/samples/a_pred.png") == every_byte
    assert store.get_bytes("runs/s/r/empty") == b""
    assert store.exists("runs/s/r/status.json") and store.exists("runs/s/r/empty")
    assert not store.exists("runs/s/r/nothing.json") and not store.exists("runs/s/r")  # a folder is no object

    assert store.list("runs/s/r") == ["runs/s/r/empty", "runs/s/r/samples/a_pred.png", "runs/s/r/status.json"]
    assert store.list("runs/s/r/") == store.list("runs/s/r")
    assert store.list("runs/s") == [*store.list("runs/s/other"), *store.list("runs/s/r")]  # sorted, recursive
    assert store.list("runs/none") == []

    store.put_bytes("runs/s/r/status.json", b'{"state": "running"}')  # overwrite
    assert store.get_bytes("runs/s/r/status.json") == b'{"state": "running"}'
    store.delete("runs/s/r/status.json")
    store.delete("runs/s/r/status.json")  # idempotent
    assert not store.exists("runs/s/r/status.json")
    assert "runs/s/r/status.json" not in store.list("runs/s/r")
    with pytest.raises(ObjectNotFound, match=r"runs/s/r/status\.json"):
        store.get_bytes("runs/s/r/status.json")


def test_names_starting_with_a_dot_are_not_listed(store: Storage) -> None:
    """LocalStorage writes through `.name.tmp` files; neither store lists such names."""
    store.put_bytes("runs/s/r/.partial", b"x")
    store.put_bytes("runs/s/r/kept", b"x")
    assert store.list("runs/s") == ["runs/s/r/kept"]


def test_a_failed_write_keeps_the_old_object(store: Storage) -> None:
    store.put_bytes("a/b", b"old")
    with pytest.raises(TypeError):  # not bytes: the write fails part way
        store.put_bytes("a/b", object())  # type: ignore[arg-type]
    assert store.get_bytes("a/b") == b"old"
    assert store.list("a") == ["a/b"]


def test_bad_keys_are_refused_by_the_store(store: Storage) -> None:
    for key in BAD_KEYS:
        with pytest.raises(ValueError, match="invalid storage key"):
            store.put_bytes(key, b"x")
        with pytest.raises(ValueError, match="invalid storage key"):
            store.get_bytes(key)


def test_overwrite_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    store.put_bytes("a/b", b"old")
    store.put_bytes("a/b", b"new")
    assert store.get_bytes("a/b") == b"new"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]


def test_failed_local_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    store.put_bytes("a/b", b"old")

    with pytest.raises(TypeError):  # the write itself fails, after the temporary file exists
        store.put_bytes("a/b", object())  # type: ignore[arg-type]
    assert store.get_bytes("a/b") == b"old"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]


@pytest.mark.parametrize("key", BAD_KEYS)
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
