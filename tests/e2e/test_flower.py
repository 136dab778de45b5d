"""Flower, the dashboard of compose's `monitor` profile: the real `celery -A services.app flower` against
the test Redis with a real worker, its HTTP API behind basic auth (as compose starts it, the
credentials in FLOWER_BASIC_AUTH)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery import Celery

from tests.support.polling import wait_until
from tests.support.servers import REPO, free_port, stop, wait_for_port
from tests.support.stack import Stack

pytestmark = pytest.mark.slow  # a worker and Flower start: tens of seconds on two busy cores
AUTH = "viewer:flower-test-password"


@dataclass
class Flower:
    port: int
    proc: subprocess.Popen
    log: Path

    def get(self, path: str, auth: str | None = AUTH) -> tuple[int, object]:
        """(HTTP status, the body as JSON, else as text; None for an error) of a GET on 127.0.0.1."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if auth is not None:
            request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, None
        try:
            return response.status, json.loads(body)
        except json.JSONDecodeError:
            return response.status, body


@pytest.fixture
def flower(stack: Stack, tmp_path: Path) -> Iterator[Flower]:
    port = free_port()
    log = tmp_path / "flower.log"
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}  # no unauthenticated API
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "services.app", "flower", f"--port={port}",
             "--address=127.0.0.1"],
            cwd=REPO, env={**base, **stack.env, "FLOWER_BASIC_AUTH": AUTH}, stdout=fh,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_port(port, 120, proc, log)
        yield Flower(port, proc, log)
    finally:
        stop(proc)


def test_flower_lists_the_worker_and_its_tasks_behind_basic_auth(stack: Stack, flower: Flower) -> None:
    worker = stack.worker("flowertest", "aggregate")
    assert flower.get("/api/workers", auth=None)[0] == 401
    assert flower.get("/healthcheck", auth=None) == (200, "OK"), "compose's healthcheck needs no login"
    assert flower.get("/api/workers", auth="viewer:wrong")[0] == 401

    def listed() -> str | None:
        status, body = flower.get("/api/workers?refresh=1")
        assert status == 200, status
        return next((name for name in body or {} if name.startswith("flowertest@")), None)

    try:
        name = wait_until("Flower to list the worker", listed, timeout=180, interval=1)
    except AssertionError as exc:
        logs = worker.log.read_text(errors="replace")[-3000:] + flower.log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"{exc}\n{logs}") from None
    assert flower.get("/api/workers?status=1")[1] == {name: True}, "heartbeat events reach Flower"

    # a task as submit.py sends one (the suite's settings): sent by the client, then received, started
    # and finished by the worker, each an event that Flower records
    client = Celery("probe")
    client.config_from_object("services.celeryconfig")
    client.conf.update(broker_url=stack.env["COLORMAMBA_REDIS_URL"], result_backend=None)
    task_id = client.send_task("celery.accumulate", args=[7], kwargs={"index": 0}).id

    def recorded() -> dict | None:
        task = flower.get(f"/api/task/info/{task_id}")[1]
        return task if task and task.get("state") == "SUCCESS" else None

    task = wait_until("Flower to record the task", recorded, timeout=120, interval=1)
    assert task["worker"] == name and task["result"] == "7"
    assert all(task[event] for event in ("sent", "received", "started", "succeeded")), task
    assert flower.get(f"/api/task/info/{task_id}", auth=None)[0] == 401
