"""S3Storage against a real SeaweedFS S3 server: credentials, checksums, retries across a server restart,
and a clear bounded error when the server stays down (the Storage contract, which both stores follow:
test_storage.py)."""

from __future__ import annotations

import threading
import time

import pytest

from colormamba import checkpoint
from colormamba.storage import LocalStorage, StorageError
from colormamba.storage_s3 import S3CredentialsRefused, S3Storage, open_store, s3_from_env
from tests.support.servers import S3_ACCESS_KEY, SeaweedS3, free_port


def test_a_checkpoint_round_trips_through_s3(s3_store):
    import torch

    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3}
    checkpoint.save(s3_store, "checkpoints/s/r/last.pt", state)
    back = checkpoint.load(s3_store, "checkpoints/s/r/last.pt")
    assert back["epoch"] == 3
    assert torch.equal(back["model"]["w"], state["model"]["w"])


def test_reads_verify_the_stored_checksum(s3_store):
    s3_store.put_bytes("runs/s/r/metrics.json", b"good bytes")
    # overwrite the object behind the store's back with other bytes but the old checksum
    import hashlib
    import io

    digest = hashlib.sha256(b"good bytes").hexdigest()
    s3_store.client.put_object(
        s3_store.bucket, "runs/s/r/metrics.json", io.BytesIO(b"evil bytes"), 10, metadata={"sha256": digest}
    )
    with pytest.raises(StorageError, match=r"runs/s/r/metrics.json: checksum mismatch"):
        s3_store.get_bytes("runs/s/r/metrics.json")


def test_prefix_keeps_deployments_apart(s3_env):
    a = s3_from_env(prefix="team-a")
    b = s3_from_env(prefix="team-b")
    a.put_bytes("runs/s/r/x.json", b"a")
    b.put_bytes("runs/s/r/x.json", b"b")
    assert a.get_bytes("runs/s/r/x.json") == b"a"
    assert a.list("runs") == ["runs/s/r/x.json"]
    assert b.get_bytes("runs/s/r/x.json") == b"b"


def test_wrong_credentials_fail_at_once_with_the_reason(seaweed, s3_env):
    store = S3Storage(
        seaweed.endpoint, S3_ACCESS_KEY, "not-the-secret", s3_env["COLORMAMBA_S3_BUCKET"], retry_seconds=30
    )
    started = time.monotonic()
    with pytest.raises(S3CredentialsRefused, match="S3 credentials refused") as info:
        store.put_bytes("runs/s/r/x.json", b"x")
    assert time.monotonic() - started < 10, "a permanent error must not be retried for the whole bound"
    message = str(info.value)
    assert "COLORMAMBA_S3_ACCESS_KEY" in message and "COLORMAMBA_S3_SECRET_KEY" in message
    assert "not-the-secret" not in message and isinstance(info.value, StorageError)


def test_an_unreachable_endpoint_ends_in_a_clear_error_within_the_bound():
    store = S3Storage(f"127.0.0.1:{free_port()}", "k", "s", "b", retry_seconds=2)
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"unreachable: bucket check failed \d+ time\(s\) over 2 s"):
        store.put_bytes("runs/s/r/x.json", b"x")
    elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 10


def test_an_outage_of_a_few_seconds_is_ridden_out(tmp_path):
    """Stop the S3 server, start a write, bring the server back: the write completes, data intact."""
    server = SeaweedS3(tmp_path / "weed").start()
    try:
        store = S3Storage(server.endpoint, S3_ACCESS_KEY, server.env()["COLORMAMBA_S3_SECRET_KEY"], "outage",
                          retry_seconds=90)  # fmt: skip
        store.put_bytes("checkpoints/s/r/last.pt", b"epoch-1")
        server.stop()
        errors: list[BaseException] = []

        def write() -> None:
            try:
                store.put_bytes("checkpoints/s/r/last.pt", b"epoch-2")
            except BaseException as exc:
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(3)
        assert writer.is_alive(), "the write must wait for the server, not give up"
        server.start()
        writer.join(120)
        assert not writer.is_alive() and not errors, errors
        assert store.get_bytes("checkpoints/s/r/last.pt") == b"epoch-2"
    finally:
        server.stop()


def test_open_store_chooses_the_implementation(tmp_path, s3_env):
    assert isinstance(open_store(str(tmp_path)), LocalStorage)
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStorage)
    s3 = open_store("s3://other-bucket/some/prefix")
    assert isinstance(s3, S3Storage)
    assert (s3.bucket, s3.prefix) == ("other-bucket", "some/prefix")


def test_missing_environment_is_named(monkeypatch):
    monkeypatch.delenv("COLORMAMBA_S3_ENDPOINT", raising=False)
    with pytest.raises(StorageError, match="COLORMAMBA_S3_ENDPOINT"):
        s3_from_env()


def test_a_pickled_store_reaches_the_same_bucket_with_its_own_client(s3_store):
    """What `--local --runs-per-gpu K` hands each run's spawned process."""
    import pickle

    s3_store.put_bytes("runs/p/r/status.json", b"{}")
    copy = pickle.loads(pickle.dumps(s3_store))
    assert copy.client is not s3_store.client
    assert (copy.endpoint, copy.bucket, copy.prefix) == (s3_store.endpoint, s3_store.bucket, s3_store.prefix)
    assert copy.get_bytes("runs/p/r/status.json") == b"{}"
    copy.put_bytes("runs/p/r/other.json", b"[]")
    assert s3_store.get_bytes("runs/p/r/other.json") == b"[]"
