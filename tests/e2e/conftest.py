"""Fixtures of the job-suite tests: real servers on 127.0.0.1 (see servers.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.suite.servers import RedisServer, SeaweedS3


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
