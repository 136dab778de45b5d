"""S3Storage against a real SeaweedFS S3 server: credentials, checksums, retries across a server restart,
and a clear bounded error when the server stays down (the Storage contract, which both stores follow:
test_storage.py)."""

from __future__ import annotations

import logging
import os
import random
import re
import subprocess
import sys
import threading
import time

import pytest

from colormamba import checkpoint
from colormamba.storage import LocalStorage, StorageError
from colormamba.storage_s3 import S3CredentialsRefused, S3Storage, open_store, s3_from_env
from tests.support.netfaults import TcpFront
from tests.support.servers import REPO, S3_ACCESS_KEY, SeaweedS3, free_port


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
    store = S3Storage(f"127.0.0.1:{free_port()}", "k", "s", "colormamba", retry_seconds=2)
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"unreachable: bucket check failed \d+ time\(s\) over 2\.\d s"):
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


# -- timeouts: a server that accepts connections and never answers -----------------------------------------

FIGURES = re.compile(r"failed (\d+) time\(s\) over (\d+\.\d) s")


def test_a_server_that_never_answers_fails_within_the_bound_with_the_true_figures():
    """urllib3's read timeout (120 s) used to block one attempt far past the retry budget, and the
    message said the budget, not the time it took."""
    front = TcpFront(mode="hang").start()
    try:
        store = S3Storage(front.endpoint, "k", "s", "colormamba", retry_seconds=2)
        started = time.monotonic()
        with pytest.raises(StorageError, match="unreachable") as info:
            store.get_bytes("runs/s/r/x.json")
        elapsed = time.monotonic() - started
    finally:
        front.stop()
    assert elapsed < 6, f"each attempt's timeouts are bounded by what is left of the budget: {elapsed:.1f} s"
    figures = FIGURES.search(str(info.value))
    assert figures, str(info.value)
    assert int(figures[1]) >= 1 and abs(float(figures[2]) - elapsed) < 0.5, (str(info.value), elapsed)


def test_a_transfer_longer_than_the_budget_goes_through_while_bytes_flow(seaweed, s3_env):
    """The budget bounds waiting for a silent server, not a transfer that makes progress: 6 MiB over a
    link of 2 MiB/s each way takes ~3 s per direction, longer than the 1 s budget (an upload of several
    parts, each a request of its own, and a download of one long response)."""
    host, port = seaweed.endpoint.split(":")
    front = TcpFront((host, int(port)), rate=2 * 2**20).start()
    try:
        secret = s3_env["COLORMAMBA_S3_SECRET_KEY"]
        store = S3Storage(front.endpoint, S3_ACCESS_KEY, secret, s3_env["COLORMAMBA_S3_BUCKET"],
                          retry_seconds=1)  # fmt: skip
        data = random.Random(0).randbytes(6 * 2**20)
        started = time.monotonic()
        store.put_bytes("checkpoints/s/r/last.pt", data)
        uploaded = time.monotonic() - started
        assert store.get_bytes("checkpoints/s/r/last.pt") == data
        took = time.monotonic() - started
    finally:
        front.stop()
    assert uploaded > 2 and took > 4, "the link was slow enough to outlast the budget"


def test_retries_log_at_most_one_warning_per_operation(caplog):
    store = S3Storage(f"127.0.0.1:{free_port()}", "k", "s", "colormamba", retry_seconds=2)
    with caplog.at_level(logging.DEBUG, logger="colormamba.storage_s3"), pytest.raises(StorageError):
        store.exists("runs/s/r/x.json")
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) >= 3, "the budget allows several attempts (each logged at DEBUG)"
    assert [r.levelno for r in retries].count(logging.WARNING) == 1, [r.getMessage() for r in retries]


@pytest.mark.parametrize("server", ["hung", "absent"])
def test_predict_with_the_store_down_fails_in_one_line_within_seconds(server, tmp_path):
    """`predict --checkpoint s3://...` is a person at a command line: the short budget, one line."""
    from PIL import Image

    front = TcpFront(mode="hang").start() if server == "hung" else None
    endpoint = front.endpoint if front else f"127.0.0.1:{free_port()}"
    Image.new("L", (8, 8), 90).save(tmp_path / "a.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLORMAMBA_", "AWS_"))}
    env |= {"COLORMAMBA_S3_ENDPOINT": f"http://{endpoint}", "COLORMAMBA_S3_ACCESS_KEY": "k",
            "COLORMAMBA_S3_SECRET_KEY": "secret-secret"}  # fmt: skip
    started = time.monotonic()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "colormamba", "predict", "--checkpoint", "s3://colormamba/checkpoints/s/r/best.pt",
             str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--device", "cpu"],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=90,
        )  # fmt: skip
    finally:
        if front:
            front.stop()
    took = time.monotonic() - started
    assert out.returncode == 3, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "unreachable" in out.stderr and "secret-secret" not in out.stderr
    figures = FIGURES.search(out.stderr)
    assert figures and float(figures[2]) < 8, out.stderr  # the command line's budget, not the workers' 60 s
    assert took < 60, took  # the rest is importing torch, seconds on a loaded machine
