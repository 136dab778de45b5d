"""Exclusive execution, the reaper and Redis outages, in seconds: the run task's body
(`services.exclusive.execute_exclusively`: the lease of services.coord around services.runner) called from
threads that each hold their own Redis connection, against a real redis-server, on a run small enough to
train in a second or two (16x16 images, one step per epoch) in a folder store.

The queue tests (tests/e2e/test_queue.py) show the same guarantees through Celery worker processes, but
in minutes; these pin each guarantee down on its own, with tight time bounds, so that a regression names
itself.
"""

from __future__ import annotations

import contextlib
import csv
import io
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from colormamba.data.synthetic import make_synthetic_dataset
from colormamba.storage import LocalStorage, RunLocation, StorageError
from services.coord import PREFIX, Coordinator, Lease, LeaseLost, connect, run_key, start_reaper
from services.exclusive import execute_exclusively
from services.runs import mark_lost, mark_queued, read_status
from services.spec import parse_spec
from services.studies import save_study
from tests.support.polling import wait_until
from tests.support.servers import REPO, RedisServer


@dataclass
class Run:
    """One run of a one-run study in a folder store, and how to reach its Redis database."""

    store: LocalStorage
    study: str
    run: str
    redis_url: str

    @property
    def key(self) -> str:
        return run_key(self.study, self.run)

    def status(self) -> dict[str, Any]:
        status = read_status(self.store, self.study, self.run)
        assert status is not None, "the run has no status.json"
        return status

    def epochs_in_history(self) -> list[int]:
        text = self.store.get_bytes(RunLocation(self.study, self.run).artifact("history.csv")).decode()
        return [int(row["epoch"]) for row in csv.DictReader(io.StringIO(text))]

    def coordinator(self, lease_ttl: float) -> Coordinator:
        """A worker's own connection: each contender talks to Redis like a separate process would."""
        return Coordinator(connect(self.redis_url), lease_ttl=lease_ttl)

    def execute(self, coord: Coordinator, worker: str, **kwargs: Any) -> dict[str, Any]:
        return execute_exclusively(self.store, coord, self.study, self.run, worker, **kwargs)


def make_run(tmp: Path, redis_url: str, study: str, epochs: int) -> Run:
    """Submit a one-run study the way `submit.py` does (plan, queued status, active in Redis), with its
    dataset as a local folder so that no S3 server is needed."""
    root = make_synthetic_dataset(tmp / "ds", n_train=2, n_val=1, size=16, seed=0)
    spec = parse_spec({
        "study": study, "dataset": str(root), "model": "tiny", "seeds": [0],
        "recipe": {"epochs": epochs, "batch_size": 2, "lr": 1e-3, "cancel_check_every": 1},
        "evaluation": {"report_split": "val", "checkpoint": "last", "num_samples": 1},
        "configurations": {"original": {"loss": "original"}},
    })  # fmt: skip
    store = LocalStorage(tmp / "store")
    save_study(store, spec)
    run = spec.runs[0].run_id
    mark_queued(store, study, run, None, variant="original", seed=0)
    Coordinator(connect(redis_url)).mark_queued(run_key(study, run))
    return Run(store, study, run, redis_url)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Train on one intra-op thread: on two cores shared with servers, workers and other jobs, torch's
    default of a thread per core spins in its barriers and an epoch of this tiny run goes from a tenth
    of a second to seconds (the queue tests set OMP_NUM_THREADS=1 in their workers for the same reason)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def checkpointed(run: Run, at_least: int = 1) -> Callable[[], bool]:
    def check() -> bool:
        status = read_status(run.store, run.study, run.run) or {}
        return (status.get("checkpoint_saved_epoch") or 0) >= at_least

    return check


class Paced:
    """An `on_status` that makes every status write (each epoch's end) take `seconds`: a run that lasts
    long enough to span an outage on a fast machine too, yet stays seconds long on a slow one. It notes
    when each write happened, so that time bounds can allow for one epoch of a busy machine."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.times: list[float] = [time.monotonic()]

    def __call__(self, _status: dict[str, Any]) -> None:
        time.sleep(self.seconds)
        self.times.append(time.monotonic())

    def longest_epoch(self) -> float:
        return max(b - a for a, b in zip(self.times, self.times[1:], strict=False))


# -- never two workers on one run ------------------------------------------------------------------


def test_racing_deliveries_execute_the_run_exactly_once_and_never_again(tmp_path, redis_url):
    """Four deliveries of one run released at the same instant: one trains it, the others end at once
    without touching it; a delivery while it runs and one after it ended are no-ops too."""
    run = make_run(tmp_path, redis_url, "race", epochs=3)
    contenders = 4
    barrier = threading.Barrier(contenders)
    late: dict[str, Any] = {}

    def deliver(i: int) -> dict[str, Any]:
        coord = run.coordinator(lease_ttl=5)
        barrier.wait()
        return run.execute(coord, f"w{i}", on_status=on_status)

    def on_status(status: dict[str, Any]) -> None:
        # only the winner's fires: a delivery that comes while it trains (a redelivery after the
        # visibility timeout, a resubmission) must end at once, after one Redis round trip
        if status.get("phase") == "epoch_end" and not late:
            t0 = time.monotonic()
            late["result"] = run.execute(run.coordinator(lease_ttl=5), "late")
            late["seconds"] = time.monotonic() - t0

    with ThreadPoolExecutor(contenders) as pool:
        results = list(pool.map(deliver, range(contenders)))

    executed = [r for r in results if r["state"] != "skipped"]
    skipped = [r for r in results if r["state"] == "skipped"]
    assert len(executed) == 1 and len(skipped) == contenders - 1, results
    status = run.status()
    assert status["state"] == "succeeded" and status["attempt"] == 1, status
    winner = status["worker"].split(" ")[0]
    for r in skipped:
        assert r["reason"].startswith(f"held by {winner}:"), (r, winner)
    assert run.epochs_in_history() == [1, 2, 3], "trained once: each epoch recorded once"
    assert late["result"]["state"] == "skipped", late
    assert late["result"]["reason"].startswith(f"held by {winner}:") and late["seconds"] < 2, late
    assert "late" not in status["worker"]

    coord = run.coordinator(lease_ttl=5)
    assert coord.holder(run.key) is None, "the lease is released when the run ends"
    assert run.key not in coord.active(), "an ended run is not active (nothing for the reaper)"
    assert not coord.client.exists(PREFIX + "started:" + run.key)

    # a delivery after the end (a resubmission's message, a requeue) must not execute it again
    again = run.execute(coord, "after")
    assert again == {"state": "skipped", "reason": "already succeeded"}
    assert run.status() == status, "the ended run's status is untouched"
    assert run.epochs_in_history() == [1, 2, 3]


def test_a_worker_whose_lease_is_taken_over_stops_without_recording_anything(tmp_path, redis_url):
    """When the lease expires under a worker (a long GC pause, a frozen VM) another one may own the run:
    the first one must stop at its next cancel check and leave the run's record to the new owner."""
    run = make_run(tmp_path, redis_url, "lost", epochs=30)
    ttl = 1.5
    with ThreadPoolExecutor(1) as pool:
        pace = Paced(0.2)
        future: Future = pool.submit(run.execute, run.coordinator(ttl), "old", on_status=pace)
        wait_until("an epoch checkpointed", checkpointed(run), 60)
        client = redis.Redis.from_url(redis_url)
        # what the lease looks like after it expired and another worker took it
        client.set(PREFIX + "lease:" + run.key, "new:token", px=60_000)
        taken = time.monotonic()
        with pytest.raises(LeaseLost) as lost:
            future.result(60)
        took = time.monotonic() - taken
    # one renewal period, then the next cancel check: at most an epoch later (one step per epoch)
    bound = ttl / 3 + 2 * pace.longest_epoch() + 0.5
    assert took < bound, f"stopped {took:.1f} s after the takeover; bound {bound:.1f} s"
    assert "taken over" in str(lost.value) and "without recording anything" in str(lost.value)
    status = run.status()
    assert status["state"] == "running" and status.get("reason") is None, "no failed/cancelled written"
    assert client.get(PREFIX + "lease:" + run.key) == b"new:token", "the new owner's lease is left alone"
    assert run.key in Coordinator(client).active(), "still the new owner's active run"
    assert client.exists(PREFIX + "started:" + run.key)


def test_a_worker_that_lost_its_lease_never_writes_over_the_next_state_or_checkpoint(tmp_path, redis_url):
    """The takeover happens between two heartbeats (a TTL of 30 s: the next renewal is seconds away) and
    the reaper writes `lost` at once: the old worker's next write (an epoch's status, a checkpoint) finds
    the lease not its own and stops there, so `lost` and the checkpoints stay as they were."""
    run = make_run(tmp_path, redis_url, "fenced", epochs=40)
    last = RunLocation(run.study, run.run).checkpoint("last")
    with ThreadPoolExecutor(1) as pool:
        pace = Paced(0.2)
        future: Future = pool.submit(run.execute, run.coordinator(30.0), "old", on_status=pace)
        wait_until("an epoch checkpointed", checkpointed(run), 60)
        client = redis.Redis.from_url(redis_url)
        client.set(PREFIX + "lease:" + run.key, "new:token", px=60_000)  # expired, then taken
        lost = mark_lost(run.store, run.study, run.run, run.status(), "the reaper's view")
        epochs, checkpoint = run.epochs_in_history(), run.store.get_bytes(last)
        taken = time.monotonic()
        with pytest.raises(LeaseLost) as stopped:
            future.result(60)
        took = time.monotonic() - taken
    assert "taken over" in str(stopped.value)
    assert took < 2 * pace.longest_epoch() + 1.0, f"stopped {took:.1f} s after the takeover, not at once"
    assert run.status() == lost, "the old worker wrote over the reaper's `lost`"
    assert run.epochs_in_history() == epochs and run.store.get_bytes(last) == checkpoint, "nor a checkpoint"
    assert client.get(PREFIX + "lease:" + run.key) == b"new:token"


def test_a_cancel_while_the_run_evaluates_ends_it_cancelled_and_a_resubmit_evaluates(tmp_path, redis_url):
    """`cancel` while a run evaluates: it stops `cancelled` (not `succeeded`, as `submit.py cancel` says),
    writes no results, and the resubmitted run resumes after its last epoch: it only evaluates."""
    run = make_run(tmp_path, redis_url, "evalcancel", epochs=2)
    coord = run.coordinator(30.0)

    def cancel_when_evaluating(status: dict[str, Any]) -> None:
        if status.get("phase") == "evaluate":
            coord.request_cancel(run.key)

    final = run.execute(coord, "w", on_status=cancel_when_evaluating)
    assert final["state"] == "cancelled" and "while evaluating" in final["reason"], final
    assert not run.store.exists(RunLocation(run.study, run.run).artifact("metrics.json"))
    mark_queued(run.store, run.study, run.run, final)  # what a resubmit does (services.submission)
    coord.mark_queued(run.key)
    final = run.execute(coord, "w")
    assert final["state"] == "succeeded" and final["resumed_from_epoch"] == 2, final
    assert run.epochs_in_history() == [1, 2], "no epoch trained again"


class OutageAfterCheckpoint(LocalStorage):
    """A folder store whose next status write, once `armed`, fails like an S3 server down past the retry
    budget; the writes after it (the failure the runner would record, once the server is back) land."""

    armed = fired = False

    def put_bytes(self, key: str, data: bytes) -> None:
        if self.armed and not self.fired and key.endswith("/status.json"):
            self.fired = True
            raise StorageError(f"S3Storage(http://s3:9000) unreachable: upload of {key} failed 9 time(s)")
        super().put_bytes(key, data)


def test_a_store_outage_past_the_retry_budget_leaves_the_run_to_resume_never_failed(tmp_path, redis_url):
    """The run cannot record its progress (the store down longer than the retries): it is not the run's
    fault, so it must not end `failed` when the store answers again; it stops without an outcome, its
    reason left for the reaper, and the next execution resumes it to `succeeded`."""
    run = make_run(tmp_path, redis_url, "outage", epochs=4)
    run.store = OutageAfterCheckpoint(run.store.root)
    coord = run.coordinator(30.0)

    def arm(status: dict[str, Any]) -> None:
        if status.get("checkpoint_saved_epoch"):
            run.store.armed = True

    with pytest.raises(StorageError):
        run.execute(coord, "first", on_status=arm)
    assert run.status()["state"] == "running", "not failed"
    assert "StorageError" in (coord.last_error(run.key) or "") and coord.orphans() == [run.key]
    final = run.execute(coord, "second")  # what the reaper's requeue leads to
    assert final["state"] == "succeeded" and final["attempt"] == 2 and final["resumed_from_epoch"] >= 1, final


class RedisGoneAtTheEnd(Coordinator):
    def mark_done(self, key: str) -> None:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


def test_redis_down_as_the_run_ends_leaves_its_recorded_outcome_standing(tmp_path, redis_url):
    """The run has recorded `succeeded` when Redis goes: the execution ends normally (no "stopped without
    recording an outcome", no failed task), and the run keeps its `started` flag for the reaper, which
    forgets it once Redis is back (services.app.requeue_lost)."""
    run = make_run(tmp_path, redis_url, "gone", epochs=1)
    final = run.execute(RedisGoneAtTheEnd(connect(redis_url), lease_ttl=30.0), "w")
    assert final["state"] == "succeeded" and run.status()["state"] == "succeeded"
    assert Coordinator(connect(redis_url)).orphans() == [run.key], "left for the reaper to forget"


# -- the reaper ------------------------------------------------------------------------------------

HOLDER = """
import sys, time
from services.coord import Coordinator, connect
coord = Coordinator(connect(sys.argv[1]), lease_ttl=float(sys.argv[3]))
lease = coord.acquire(sys.argv[2], "holder")
assert lease is not None
coord.mark_started(sys.argv[2])
print("held", flush=True)
time.sleep(120)
"""


def test_the_reaper_requeues_a_dead_workers_run_in_time_and_leaves_live_ones_alone(tmp_path, redis_url):
    """A worker process holds a run's lease (renewed by its heartbeat) and is then SIGKILLed. Two
    reapers (two workers' threads) watch: nothing is requeued while the lease lives, nor a run that is
    only queued or has ended; the dead worker's run is requeued once, within TTL + reaper interval, and
    not again in later rounds while it waits for a worker."""
    ttl, interval = 1.0, 0.3
    client = redis.Redis.from_url(redis_url)
    coord = Coordinator(client)
    dead, queued, ended = "s/dead", "s/queued", "s/ended"
    for key in (dead, queued, ended):
        coord.mark_queued(key)
    coord.mark_started(ended)
    coord.mark_done(ended)

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_url, dead, str(ttl)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    requeued: list[tuple[str, float]] = []
    lock = threading.Lock()

    def requeue(study: str, run: str) -> None:
        with lock:
            requeued.append((f"{study}/{run}", time.monotonic()))

    stops = []
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        stops = [start_reaper(connect(redis_url), requeue, interval=interval) for _ in range(2)]
        time.sleep(3 * ttl + 2 * interval)  # several TTLs: the heartbeat keeps the lease alive
        assert requeued == [], "a run with a live lease was requeued"
        assert coord.holder(dead) is not None and coord.holder(dead).startswith("holder:")

        holder.kill()
        holder.wait(10)
        killed = time.monotonic()
        wait_until("the dead worker's run requeued", lambda: requeued, ttl + interval + 5, 0.02)
        took = requeued[0][1] - killed
        time.sleep(3 * interval)  # more rounds of both reapers
    finally:
        for stop in stops:
            stop.set()
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
    print(f"requeued {took:.2f} s after SIGKILL (lease TTL {ttl} s, reaper every {interval} s)")
    assert [key for key, _ in requeued] == [dead], "only the orphan, once, across both reapers"
    # the bound README states (TTL + interval), with 1 s for two busy cores to schedule the threads
    assert took <= ttl + interval + 1.0, took
    assert dead in coord.active(), "requeued, not dropped: still active until a worker ends it"
    assert coord.orphans() == [], "queued once per expiry: not an orphan again until an execution takes it"


REAPER_DIES = """
import os, sys
from services.coord import Coordinator, connect
Coordinator(connect(sys.argv[1]), lease_ttl=float(sys.argv[2])).reap(lambda study, run: os._exit(3))
"""


def test_a_reaper_killed_while_it_requeues_a_run_leaves_it_to_the_next_reaper(redis_url):
    """The worker whose reaper has taken an orphan in hand is killed before the run is queued again (its
    store retrying, say): the run is not lost with it; another reaper takes it once the first one's hold
    lapses (two lease TTLs), and queues it once."""
    ttl = 1.0
    coord = Coordinator(connect(redis_url), lease_ttl=ttl)
    key = run_key("s", "orphan")
    coord.mark_queued(key)
    coord.mark_started(key)  # taken up once, and no lease now: its worker died
    died = subprocess.run([sys.executable, "-c", REAPER_DIES, redis_url, str(ttl)], cwd=REPO, timeout=120)
    assert died.returncode == 3, "the reaper died inside its requeue"
    requeued: list[str] = []

    def requeue(study: str, run: str) -> None:
        requeued.append(f"{study}/{run}")

    assert coord.reap(requeue) == [], "still in the dead reaper's hands"
    wait_until("another reaper queued it again", lambda: coord.reap(requeue), 2 * ttl + 5, 0.1)
    assert requeued == [key] and coord.reap(requeue) == [] and coord.orphans() == []


def test_a_lease_whose_holder_was_killed_is_free_within_a_ttl(redis_url):
    """What the aggregator's rebuild of a study waits on (services.tasks.aggregate): one killed mid-rebuild
    holds up the next for at most a lease TTL, not for a lock's fixed timeout."""
    ttl = 1.5
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, redis_url, "report:s", str(ttl)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        coord = Coordinator(connect(redis_url), lease_ttl=ttl)
        with pytest.raises(TimeoutError, match="still held by holder:"):
            coord.wait_for("report:s", "agg", timeout=ttl + 0.5)  # a live holder keeps it past a TTL
        holder.kill()
        holder.wait(10)
        killed = time.monotonic()
        lease = coord.wait_for("report:s", "agg", timeout=30)
        took = time.monotonic() - killed
        lease.release()
    finally:
        if holder.poll() is None:
            holder.kill()
    assert took <= ttl + 1.0, took


# -- Redis unreachable while a run trains ------------------------------------------------------------


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone: the test shuts it down and starts it again on the same port."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def shut_down(server: RedisServer) -> float:
    """Stop Redis, saving its keys first as the stack's appendonly Redis keeps them over a restart;
    returns the moment it was gone. Clients get "connection refused" until `server.start()`."""
    with contextlib.suppress(redis.ConnectionError):  # the server hangs up as it goes
        redis.Redis.from_url(server.url).shutdown(save=True)
    assert server.proc is not None
    server.proc.wait(10)
    return time.monotonic()


def test_a_redis_restart_shorter_than_the_lease_ttl_does_not_disturb_the_run(tmp_path, private_redis):
    """Cancel checks fail and the lease cannot be renewed for a moment: the run goes on (a blip in the
    broker must not fail hours of training) and ends succeeded in its first attempt."""
    run = make_run(tmp_path, private_redis.url, "blip", epochs=12)
    progress = redis.Redis.from_url(private_redis.url)
    published: list[str] = []

    def on_status(status: dict[str, Any]) -> None:
        """Like the Celery task, publish progress through Redis: it fails while Redis is down."""
        progress.set("progress", status["state"])
        published.append(status["state"])

    # long enough for two epochs of a busy machine inside the outage, which must end while the lease has
    # more than its write margin left (services.coord.Lease: TTL - renewal period - margin: 7 s here)
    ttl = 15.0
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(run.execute, run.coordinator(ttl), "w", on_status=on_status)
        wait_until("an epoch checkpointed", checkpointed(run), 60)
        before = run.status()["checkpoint_saved_epoch"]
        down = shut_down(private_redis)
        # two more epochs: the second one's cancel check surely ran while Redis was down
        wait_until("epochs trained while Redis is down", checkpointed(run, before + 2), 4.5, 0.02)
        private_redis.start()
        outage = time.monotonic() - down
        final = future.result(60)
    bound = ttl - ttl / 3 - min(ttl / 3, Lease.WRITE_MARGIN_S)
    assert outage < bound, f"the outage ({outage:.1f} s) must be shorter than {bound:.1f} s here"
    assert final["state"] == "succeeded" and final["attempt"] == 1, final
    assert run.epochs_in_history() == list(range(1, 13))
    coord = run.coordinator(ttl)
    assert coord.holder(run.key) is None and run.key not in coord.active(), "ended normally in Redis too"
    assert published[-1] == "succeeded" and progress.get("progress") == b"succeeded"


def test_redis_unreachable_for_a_whole_ttl_stops_the_run_which_resumes_after(tmp_path, private_redis):
    """Redis gone for longer than the lease TTL: the worker cannot know whether another one took the
    run, so it stops at its next cancel check without recording anything, saying why. When Redis is
    back (with its data), the reaper requeues the run and the next execution resumes from the last
    checkpoint: every epoch trained once."""
    ttl = 2.0
    epochs = 16
    run = make_run(tmp_path, private_redis.url, "outage", epochs=epochs)
    with ThreadPoolExecutor(2) as pool:
        pace = Paced(0.3)
        first = pool.submit(run.execute, run.coordinator(ttl), "first", on_status=pace)
        wait_until("an epoch checkpointed", checkpointed(run), 60)
        down = shut_down(private_redis)
        with pytest.raises(LeaseLost) as lost:
            first.result(ttl + 10)
        stopped = time.monotonic() - down
        at_stop = run.status()
        message = str(lost.value)
        assert "Redis unreachable" in message and f"lease's TTL ({ttl:g} s)" in message, message
        assert "resumes from its last checkpoint" in message
        # the last renewal was at most TTL/3 before the shutdown; after a TTL without one, the next
        # renewal attempt (TTL/3 later at most) gives up, and the next cancel check an epoch later stops it
        bound = ttl + ttl / 3 + 2 * pace.longest_epoch() + 0.5
        assert ttl * 2 / 3 - 0.1 <= stopped < bound, f"stopped {stopped:.1f} s after; bound {bound:.1f} s"
        assert at_stop["state"] == "running" and at_stop.get("reason") is None, "nothing recorded"
        assert at_stop["checkpoint_saved_epoch"] < epochs

        private_redis.start()  # with the active set and the started flag it saved
        second: list[Future] = []

        def requeue(study: str, run_id: str) -> None:  # the next free worker takes the message
            second.append(pool.submit(run.execute, run.coordinator(ttl), "second"))

        stop = start_reaper(connect(private_redis.url), requeue, interval=0.3)
        try:
            wait_until("the reaper requeued the run", lambda: second, ttl + 5)
            final = second[0].result(120)
        finally:
            stop.set()
    assert final["state"] == "succeeded" and final["attempt"] == 2, final
    # a checkpoint that landed while the lease held may be newer than the record says: the status write
    # announcing it came too late to be made (services.exclusive.FencedStore)
    assert final["resumed_from_epoch"] >= at_stop["checkpoint_saved_epoch"], (final, at_stop)
    assert "second" in final["worker"]
    assert run.epochs_in_history() == list(range(1, epochs + 1)), "resumed, each epoch trained once"
