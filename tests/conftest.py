"""Shared fixtures, all in this one file: small generated datasets (the real VCIP2020 set cannot be
downloaded here), a checkpoint, and the real servers of the job-suite tests on 127.0.0.1 (started once
per session, on first use; see tests/support/servers.py)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from colormamba.data.synthetic import make_synthetic_dataset
from tests.support.servers import RedisServer, SeaweedS3


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training and 3 validation pairs of 32x32 in the VCIP2020 layout (read-only for tests)."""
    root = tmp_path_factory.mktemp("data") / "vcip"
    return make_synthetic_dataset(root, n_train=8, n_val=3, size=32, seed=1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `best.pt` of the tiny preset with seeded random weights, as a run writes it."""
    from dataclasses import asdict

    import torch

    from colormamba import checkpoint
    from colormamba.models import build_model

    torch.manual_seed(0)
    model = build_model("tiny")
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    state = {"model": model.state_dict(), "model_config": asdict(model.config), "epoch": 1, "config": {}}
    path.write_bytes(checkpoint.to_bytes(state))
    return path


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS S3 server for the session (it takes seconds to start)."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment of a test that uses S3: its own bucket, so tests do not see each other's objects."""
    env = {
        **seaweed.env(),
        "COLORMAMBA_S3_BUCKET": f"t-{uuid.uuid4().hex[:12]}",
        "COLORMAMBA_S3_RETRY_SECONDS": "20",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def s3_store(s3_env: dict[str, str]):
    from colormamba.storage_s3 import s3_from_env

    return s3_from_env()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """An empty database of the session's redis-server for a test that talks to Redis without a stack:
    the one the stacks of tests/support/stack.py (numbered from 1) reach last."""
    import redis

    url = f"redis://127.0.0.1:{redis_server.port}/15"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """`small_disk(size, inodes=None)`: a fresh folder on a tmpfs of `size` bytes (or "64k"), unmounted
    after the test: a real full disk (tests/support/disks.py). Skips where mounting is refused (not root)."""
    from tests.support.disks import MountRefused, tmpfs

    with contextlib.ExitStack() as mounts:

        def mount(size: int | str, inodes: int | None = None) -> Path:
            try:
                return mounts.enter_context(tmpfs(tmp_path / f"disk{uuid.uuid4().hex[:6]}", size, inodes))
            except MountRefused as exc:
                pytest.skip(str(exc))

        yield mount
