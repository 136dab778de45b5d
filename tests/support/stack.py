"""A job-suite stack of the end-to-end tests: its own Redis database (so its own broker) and its own
bucket on the session's servers, and the Celery workers started on it."""

from __future__ import annotations

import itertools
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis

from colormamba.storage import RunLocation
from colormamba.storage_s3 import s3_from_env
from tests.support.servers import RedisServer, SeaweedS3, Worker

# stacks use Redis databases 1, 2, ... (modulo 16); tests/services/test_coord.py uses 15,
# tests/e2e/test_fail_loudly.py 14
_db = itertools.count(1)


@dataclass
class Stack:
    env: dict[str, str]
    tmp: Path
    workers: list[Worker] = field(default_factory=list)

    def worker(self, name: str, queues: str = "gpu", env: dict[str, str] | None = None) -> Worker:
        """Start a worker with the stack's environment, and `env` on top (a worker setting)."""
        w = Worker(name, queues, {**self.env, **(env or {})}, self.tmp / f"{name}.log").start()
        self.workers.append(w)
        return w

    @property
    def store(self):
        return s3_from_env_with(self.env)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.env["COLORMAMBA_REDIS_URL"])

    def status(self, study: str, run: str) -> dict | None:
        try:
            return json.loads(self.store.get_bytes(RunLocation(study, run).artifact("status.json")))
        except KeyError:
            return None

    def logs(self) -> str:
        return "\n".join(w.log.read_text(errors="replace") for w in self.workers if w.log.exists())


def s3_from_env_with(env: dict[str, str]):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return s3_from_env()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_stack(tmp: Path, redis_server: RedisServer, s3: SeaweedS3) -> Stack:
    bucket = f"q-{uuid.uuid4().hex[:10]}"
    env = {
        **s3.env(),
        "COLORMAMBA_S3_BUCKET": bucket,
        "COLORMAMBA_STORE": f"s3://{bucket}",
        "COLORMAMBA_S3_RETRY_SECONDS": "60",
        "COLORMAMBA_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/{next(_db) % 16}",
        "COLORMAMBA_DATA_CACHE": str(tmp / "cache"),
        "COLORMAMBA_LEASE_TTL": "6",
        "COLORMAMBA_REAP_INTERVAL": "2",
        "COLORMAMBA_STATUS_INTERVAL": "0.5",
        "TORCH_HOME": str(tmp / "torch_home"),  # no VGG weights there: the vgg configuration must fail
        # one intra-op thread per pool process: two workers and an aggregator share two cores here, and
        # torch's default of one thread per core would have them fight over both (a speed setting only)
        "OMP_NUM_THREADS": "1",
    }
    redis.Redis.from_url(env["COLORMAMBA_REDIS_URL"]).flushdb()
    return Stack(env, tmp)
