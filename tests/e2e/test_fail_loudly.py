"""Workers that fail loudly, with real parts: `celery worker` processes of services.app against a real
redis-server and SeaweedFS S3 server.

- A worker that cannot do its job (wrong S3 secret, wrong Redis password, a cache folder it cannot
  write) exits non-zero before it takes any message, with one line naming what is wrong and no password.
- A worker killed mid-run: its run shows as `lost` (no ETA) once its lease has expired, and the reaper
  queues it exactly once per expiry, not once per round.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from colormamba.storage import LocalStorage
from services.coord import Coordinator, connect, run_key
from services.runs import State, mark_queued, read_status
from tests.support.polling import wait_until
from tests.support.servers import REPO, RedisServer, SeaweedS3, Worker, queued_tasks, stop_workers

RUN_QUEUE = "gpu"  # the default of COLORMAMBA_RUN_QUEUE
_db = itertools.count(1)
LOUD_DB = 14  # tests/services/test_coord.py uses 15, tests/support/stack.py's stacks count up from 1


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    stop_workers(started)


def start_worker(workers: list[Worker], tmp: Path, name: str, queue: str, env: dict[str, str]) -> Worker:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COLORMAMBA_", "AWS_"))}
    w = Worker(name, queue, {**clean, "OMP_NUM_THREADS": "1", **env}, tmp / f"{name}.log")
    workers.append(w.start())
    return w


def exit_of(worker: Worker, timeout: float = 120) -> tuple[int, str]:
    """The worker's exit status and everything it printed."""
    assert worker.proc is not None
    try:
        code = worker.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        tail = worker.log.read_text()[-3000:]
        raise AssertionError(f"the worker is still up after {timeout} s:\n{tail}") from None
    return code, worker.log.read_text(errors="replace")


def send_run(redis_url: str, study: str, run: str) -> None:
    """A run's message, sent the way the suite sends it (by task name, through the app's routes)."""
    code = ("import sys; from services.app import app; from services.celeryconfig import RUN_TASK; "
            "app.send_task(RUN_TASK, args=sys.argv[1:])")  # fmt: skip
    env = {**os.environ, "COLORMAMBA_REDIS_URL": redis_url}
    subprocess.run([sys.executable, "-c", code, study, run], cwd=REPO, env=env, check=True, timeout=60)


def assert_one_line_naming(output: str, *words: str) -> str:
    lines = [line for line in output.splitlines() if "cannot start" in line]
    assert len(lines) == 1, output[-3000:]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "ready" not in output, "it must not come up"
    return lines[0]


# -- start-up checks ------------------------------------------------------------------------------------


def test_a_worker_with_a_wrong_s3_secret_exits_naming_the_credentials_and_takes_no_run(
    tmp_path, workers, redis_server, seaweed: SeaweedS3
):
    url = f"redis://127.0.0.1:{redis_server.port}/{LOUD_DB}"
    redis.Redis.from_url(url).flushdb()
    send_run(url, "study", "run-1")
    secret = f"wrong-{uuid.uuid4().hex}"
    env = {**seaweed.env(), "COLORMAMBA_S3_SECRET_KEY": secret, "COLORMAMBA_REDIS_URL": url,
           "COLORMAMBA_S3_BUCKET": f"w-{uuid.uuid4().hex[:8]}",
           "COLORMAMBA_DATA_CACHE": str(tmp_path / "cache")}  # fmt: skip
    code, output = exit_of(start_worker(workers, tmp_path, "gpu1", RUN_QUEUE, env))
    line = assert_one_line_naming(output, "S3 credentials refused", "COLORMAMBA_S3_SECRET_KEY",
                                  seaweed.endpoint)  # fmt: skip
    assert code != 0, output
    assert secret not in output
    assert queued_tasks(url, RUN_QUEUE) == [("services.tasks.run", ["study", "run-1"])], "still queued"
    print(line)


def test_a_worker_with_a_wrong_redis_password_exits_saying_authentication_failed(tmp_path, workers):
    server = RedisServer(tmp_path / "redis", password=f"right-{uuid.uuid4().hex}").start()
    try:
        wrong = f"wrong-{uuid.uuid4().hex}"
        url = f"redis://:{wrong}@127.0.0.1:{server.port}/0"
        env = {"COLORMAMBA_REDIS_URL": url, "COLORMAMBA_STORE": str(tmp_path / "store"),
               "COLORMAMBA_DATA_CACHE": str(tmp_path / "cache")}  # fmt: skip
        code, output = exit_of(start_worker(workers, tmp_path, "gpu1", RUN_QUEUE, env))
    finally:
        server.stop()
    assert code != 0, output
    line = assert_one_line_naming(output, "authentication failed", f"127.0.0.1:{server.port}",
                                  "COLORMAMBA_REDIS_URL")  # fmt: skip
    assert wrong not in output and server.password not in output, "no password in what it prints"
    assert ":***@" in line
    print(line)


def test_a_run_worker_whose_cache_folder_cannot_be_written_exits_naming_it(tmp_path, workers, redis_server):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    url = f"redis://127.0.0.1:{redis_server.port}/{LOUD_DB}"
    env = {"COLORMAMBA_REDIS_URL": url, "COLORMAMBA_STORE": str(tmp_path / "store"),
           "COLORMAMBA_DATA_CACHE": str(blocker / "cache")}  # fmt: skip
    code, output = exit_of(start_worker(workers, tmp_path, "gpu1", RUN_QUEUE, env))
    assert code != 0, output
    assert_one_line_naming(output, "COLORMAMBA_DATA_CACHE", str(blocker / "cache"), "not writable")


# -- a dead worker's run: lost, queued once per expiry ---------------------------------------------------

HOLDER = """
import sys, time
from colormamba.storage import LocalStorage
from services.coord import Coordinator, connect
from services.runs import mark_running, read_status
url, root, study, run, ttl, name = sys.argv[1:]
coord = Coordinator(connect(url), lease_ttl=float(ttl))
key = f"{study}/{run}"
assert coord.acquire(key, name) is not None
coord.mark_started(key)
store = LocalStorage(root)
mark_running(store, study, run, read_status(store, study, run), worker=name, epoch=1, epochs=9, eta_s=600)
print("held", flush=True)
time.sleep(300)
"""


def hold_and_kill(url: str, root: Path, study: str, run: str, ttl: float, name: str) -> float:
    """A worker process that takes the run (lease, started flag, `running` with an ETA), SIGKILLed once it
    holds it; returns when it died."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, url, str(root), study, run, str(ttl), name],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        time.sleep(ttl)  # a few renewals: a dead worker's lease was fresh when it died
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    return time.monotonic()


def lost(store: LocalStorage, study: str, run: str) -> dict | None:
    status = read_status(store, study, run)
    return status if status and status["state"] == State.LOST else None


@pytest.mark.slow  # about 20 s of real processes: keeps README's test command well inside its bound
def test_a_killed_workers_run_shows_lost_within_the_lease_ttl_and_is_queued_once_per_expiry(
    tmp_path, workers, redis_server
):
    """Two deaths of the run's worker, with a real aggregator worker's reaper watching (no run worker
    is up, so the messages stay in the queue to be counted): after each, the run is `lost` without an ETA
    once the lease has expired, and exactly one message more is waiting."""
    ttl, interval = 2.0, 0.5
    url = f"redis://127.0.0.1:{redis_server.port}/{LOUD_DB}"
    redis.Redis.from_url(url).flushdb()
    store = LocalStorage(tmp_path / "store")
    study, run = "study", "run-1"
    mark_queued(store, study, run, None, variant="original", seed=0)  # as submit.py does
    Coordinator(connect(url)).mark_queued(run_key(study, run))
    env = {"COLORMAMBA_REDIS_URL": url, "COLORMAMBA_STORE": str(store.root), "COLORMAMBA_LEASE_TTL": str(ttl),
           "COLORMAMBA_REAP_INTERVAL": str(interval)}  # fmt: skip
    reaper = start_worker(workers, tmp_path, "agg", "aggregate", env)
    wait_until("the reaper started", lambda: "reaper started" in reaper.log.read_text(), 120, 0.2)

    for expiry, name in enumerate(("gpu1@host (pid 1)", "gpu2@host (pid 2)"), start=1):
        died = hold_and_kill(url, store.root, study, run, ttl, name)
        status = wait_until("the run shown lost", lambda: lost(store, study, run), ttl + interval + 10, 0.05)
        took = time.monotonic() - died
        # not before the lease can have expired (it was renewed at most ttl/3 before the kill), and
        # within one TTL plus one reaper round (1.5 s for two busy cores to schedule the processes)
        assert ttl * 2 / 3 - 0.2 <= took <= ttl + interval + 1.5, (expiry, took)
        assert status["eta_s"] is None, "no live ETA for a run nobody trains"
        assert f"worker {name}" in status["reason"] and "waiting to be taken again" in status["reason"]
        assert status["worker"] == name and status["epoch"] == 1, "the rest of the record is kept"
        time.sleep(6 * interval)  # more reaper rounds
        assert queued_tasks(url, RUN_QUEUE) == [("services.tasks.run", [study, run])] * expiry, expiry
        print(f"expiry {expiry}: lost {took:.2f} s after SIGKILL (TTL {ttl} s, reaper every {interval} s)")
    assert read_status(store, study, run)["state"] == State.LOST
    reaper.kill()  # its graceful stop would wait for a pool process still importing torch
