"""Fixtures of the end-to-end tests (the session's servers are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import RedisServer, SeaweedS3, stop_workers
from tests.support.stack import Stack, make_stack


@pytest.fixture
def stack(tmp_path, redis_server: RedisServer, seaweed: SeaweedS3) -> Iterator[Stack]:
    """A stack of this test alone (its own Redis database, so its own broker, and its own bucket): for
    tests that kill or add workers, whose workers must not be shared."""
    s = make_stack(tmp_path, redis_server, seaweed)
    yield s
    stop_workers(s.workers)
