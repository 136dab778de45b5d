"""Flower, the dashboard of compose's `monitor` profile: the real `celery -A services.app flower` against
a Redis that requires a password (as compose's does) with a real worker, its HTTP API behind basic auth (as
compose starts it, the credentials in FLOWER_BASIC_AUTH) but for /healthcheck and /metrics."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery import Celery

from tests.support.polling import wait_until
from tests.support.servers import REPO, RedisServer, free_port, stop, stop_workers, wait_for_port
from tests.support.stack import Stack

pytestmark = pytest.mark.slow  # a worker and Flower start: tens of seconds on two busy cores
AUTH = "viewer:flower-test-password"
REDIS_PASSWORD = "flower-redis-password-7d1f"  # Flower's pages must never show it


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
    """Flower on a Redis of its own that requires REDIS_PASSWORD; the stack's workers use it too."""
    redis_server = RedisServer(tmp_path / "redis", password=REDIS_PASSWORD).start()
    stack.env["COLORMAMBA_REDIS_URL"] = redis_server.url
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
        stop_workers(stack.workers)  # before their broker goes
        redis_server.stop()


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

    # the worker's settings (`celery inspect conf`) on its page and in the API: the broker's password masked
    # by Celery, and in no other setting
    status, workers = flower.get(f"/api/workers?refresh=1&workername={urllib.parse.quote(name)}")
    assert status == 200 and workers[name]["conf"]["broker_url"].startswith("redis://:********@"), workers
    page = flower.get(f"/worker/{urllib.parse.quote(name)}")
    assert page[0] == 200 and "broker_url" in page[1], page
    leaked = [key for key, value in workers[name]["conf"].items() if REDIS_PASSWORD in str(value)]
    assert not leaked and REDIS_PASSWORD not in json.dumps(workers) + page[1], f"password in {leaked}"

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
    assert_metrics_are_open_with_what_readme_says(flower, name, task_id)


# what Flower's /metrics holds besides its own process's figures (process_*, python_*), as README says:
# a new one in a Flower upgrade fails the test below until README says what it shows
FLOWER_METRICS = {
    "flower_events_total", "flower_task_runtime_seconds", "flower_task_prefetch_time_seconds",
    "flower_worker_prefetched_tasks", "flower_worker_online",
    "flower_worker_number_of_currently_executing_tasks",
}  # fmt: skip


def assert_metrics_are_open_with_what_readme_says(flower: Flower, worker: str, task_id: str) -> None:
    """Flower 2 serves /metrics (Prometheus) to anyone who reaches its port: it has no setting to put it
    behind basic auth. README says so and what it exposes; this pins both."""
    status, metrics = flower.get("/metrics", auth=None)
    assert status == 200 and isinstance(metrics, str), status
    families = set(re.findall(r"^# TYPE (\S+) ", metrics, flags=re.MULTILINE))
    own = {f for f in families if not f.startswith(("process_", "python_")) and not f.endswith("_created")}
    assert own == FLOWER_METRICS, families  # *_created: prometheus_client's time each series began
    assert f'flower_worker_online{{worker="{worker}"}} 1.0' in metrics
    assert 'task="celery.accumulate"' in metrics and 'type="task-succeeded"' in metrics
    for hidden in (task_id, REDIS_PASSWORD, AUTH.partition(":")[2]):
        assert hidden not in metrics, hidden
    paragraphs = (REPO / "README.md").read_text().split("\n\n")
    paragraph = " ".join(next(p for p in paragraphs if p.startswith("Flower, the Celery dashboard")).split())
    assert "without login" in paragraph and "`/metrics`" in paragraph, paragraph
    assert "the workers' names" in paragraph and "no study, run or task ids" in paragraph, paragraph
