"""Celery tasks: thin wrappers that unpack ids, call plain functions (services.runner, services.report)
and record the outcome. Messages carry ids only (study, run); everything else is read from the store."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import redis
from celery.exceptions import Reject

from colormamba.env import redact_text
from colormamba.storage import Storage
from colormamba.storage_s3 import open_store
from services.app import app
from services.celeryconfig import AGGREGATE_TASK, RUN_TASK
from services.coord import BrokerUnreachable, Coordinator, LeaseLost, connect, run_key
from services.runner import execute_run
from services.runs import DONE, State, mark_cancelled, read_status
from services.settings import settings
from services.studies import load_plan, store_url

log = logging.getLogger(__name__)

PROGRESS_FIELDS = (
    *("state", "phase", "epoch", "epochs", "step", "steps", "loss", "eta_s"),
    *("val_psnr", "worker", "device", "attempt"),
)
# what the run task returns, of its final status (status.json keeps the whole record)
RESULT_FIELDS = ("attempt", "epochs_done", "best_epoch", "metrics", "reason")


class NotTakenUp(RuntimeError):
    """Redis failed before the run was taken up: nothing was recorded, the message should be redelivered."""


class RunFailed(Exception):
    """The run ended `failed`, recorded in its status.json (and the aggregator told): the task ends as a
    failure in Celery's eyes (result FAILURE, Flower's "failed"), not "succeeded". Declared in the run
    task's `throws`, so Celery 5 logs one INFO line, `Task services.tasks.run[id] raised expected:
    RunFailed('study/run failed: reason')`, without a traceback of the task's own code; the ERROR line
    is the runner's (`study/run failed: reason`, with the run's own traceback). Like any task failure
    with `acks_late`, the message is acknowledged (`task_acks_on_failure`, services.celeryconfig): a
    failed run is not retried."""


def _store() -> Storage:
    return open_store(store_url())


def _coordinator() -> Coordinator:
    return Coordinator(connect(app.conf.broker_url))


def queue_run(study: str, run: str, task_id: str | None = None) -> str:
    """Send one run to the GPU queue; returns the task id (chosen by the caller when it records the id
    before sending, so that nothing is written about the run after a worker may have taken it)."""
    result = run_task.apply_async(args=[study, run], task_id=task_id)
    return result.id


def queue_aggregate(study: str) -> str:
    return aggregate.apply_async(args=[study]).id


def refresh_key(study: str) -> str:
    return f"colormamba:report-refresh:{study}"


def report_refresh_due(client: redis.Redis, study: str, interval_s: float) -> bool:
    """True for the first caller in each `interval_s` window of a study, over every worker: one SET NX
    with a TTL, so a sweep of many runs ending epochs together rebuilds its report once per window."""
    return bool(client.set(refresh_key(study), "1", nx=True, px=max(1, round(interval_s * 1000))))


class LiveReport:
    """A run's `on_status` hook that keeps the study's report a live view while it trains: when a new
    checkpoint has landed (its `history.csv` with it: the curve the report draws has a new epoch), it asks
    for a rebuild, sent only when `report_refresh_due` says so. The worker's cost: one Redis SET per
    checkpoint; the rebuild runs on the aggregator."""

    def __init__(self, client: redis.Redis, study: str, interval_s: float,
                 send: Callable[[str], object] = queue_aggregate) -> None:  # fmt: skip
        self.client, self.study, self.interval_s, self.send = client, study, interval_s, send
        self._seen: object = None

    def __call__(self, status: dict[str, Any]) -> bool:
        """Returns whether a rebuild was sent."""
        saved = status.get("checkpoint_saved_epoch")
        if saved is None or saved == self._seen:
            return False
        self._seen = saved
        if not report_refresh_due(self.client, self.study, self.interval_s):
            return False
        self.send(self.study)
        return True


@app.task(name=RUN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, throws=(RunFailed,))
def run_task(self, study: str, run: str) -> dict[str, Any]:
    """Execute one run if nobody else does and it has not ended; see services.coord for why. A run that
    this delivery ended `failed` raises RunFailed (after the status and the aggregator); a cancelled one
    returns normally, like a succeeded one."""

    worker = self.request.hostname or socket.gethostname()
    try:
        coord = _coordinator()
        live = LiveReport(coord.client, study, settings().report_interval_s)

        def on_status(status: dict[str, Any]) -> None:  # a failure here is logged, the run goes on
            self.update_state(state="PROGRESS", meta={k: status.get(k) for k in PROGRESS_FIELDS})
            live(status)

        final = execute_exclusively(_store(), coord, study, run, worker, on_status=on_status,
                                    on_end=queue_aggregate)  # fmt: skip
    except (BrokerUnreachable, NotTakenUp) as exc:  # back to the queue, not dropped: nobody took the run up
        raise Reject(str(exc), requeue=True) from exc
    if final.get("state") == State.FAILED:
        raise RunFailed(f"{study}/{run} failed: {redact_text(str(final.get('reason')))}")
    return task_result(study, run, final)


def task_result(study: str, run: str, final: dict[str, Any]) -> dict[str, Any]:
    """The run task's result (the result backend, Flower, and the worker's `Task ... succeeded` line):
    the outcome in a few fields, not the whole status (provenance and all, a kilobyte in every log)."""
    kept = {k: final[k] for k in RESULT_FIELDS if final.get(k) is not None}
    return {"state": final.get("state"), "study": study, "run": run, **kept}


def execute_exclusively(
    store: Storage,
    coord: Coordinator,
    study: str,
    run: str,
    worker: str,
    *,
    on_status: Callable[[dict[str, Any]], None] | None = None,
    on_end: Callable[[str], object] | None = None,
) -> dict[str, Any]:
    """The body of the run task, free of Celery so that tests can race it from several threads with
    their own Redis clients: take the run's lease or end at once, skip a run that has ended, honour a
    cancel that came before the start, else execute it under the lease.

    Returns the final status, or `{"state": "skipped", "reason": ...}` for a delivery that touched
    nothing. Raises LeaseLost when the lease went away mid-run (taken over, or Redis unreachable for a
    whole TTL): the run stops at its next cancel check and records nothing more (no failed or cancelled
    state), leaving the run to its next owner. `on_end(study)` (the task:
    queue the aggregator) is called when this delivery ended the run or found it cancelled.

    Nothing ends silently: once the run is taken up (its `started` flag set, before the store is first
    read), an execution that stops without recording an outcome (the store failing, say) leaves its
    reason in Redis and the run to the reaper, which marks it `lost` with that reason and queues it
    again. Redis failing before that raises NotTakenUp (the task hands the message back to the queue).

    Redis errors while the lease holds do not end the run: the cancel flag is read as "not cancelled"
    and a failing `on_status` (the task's progress goes to the result backend in Redis) is logged, so
    that a Redis restart shorter than the lease TTL costs nothing; a longer outage is the lease's call.
    """
    key = run_key(study, run)
    try:
        lease = coord.acquire(key, worker)
        holder = coord.holder(key) if lease is None else None
    except redis.RedisError as exc:
        raise NotTakenUp(f"{key}: Redis failed before the run was taken up ({exc})") from exc
    if lease is None:
        log.info("%s: held by %s; this delivery ends here", key, holder)
        return {"state": "skipped", "reason": f"held by {holder}"}
    try:
        try:
            coord.mark_started(key)
        except redis.RedisError as exc:
            raise NotTakenUp(f"{key}: Redis failed before the run was taken up ({exc})") from exc
        try:
            final = _execute_leased(store, coord, lease, study, run, worker, on_status)
        except LeaseLost:
            raise
        except Exception as exc:
            _record_error(coord, key, worker, exc)
            raise
    finally:
        lease.release()
    if on_end is not None and final["state"] != "skipped":
        on_end(study)
    return final


def _execute_leased(store: Storage, coord: Coordinator, lease: Any, study: str, run: str, worker: str,
                    on_status: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:  # fmt: skip
    """execute_exclusively's work once the lease is held and the run marked started."""
    key = run_key(study, run)
    status = read_status(store, study, run)
    if status is None:  # a message sent without submit.py's record: nothing to resume, nothing to say
        log.error("%s: no status.json (never submitted?); this delivery ends here", key)
        coord.mark_done(key)
        return {"state": "skipped", "reason": "not submitted (no status.json)"}
    if status.get("state") in DONE:
        coord.mark_done(key)
        return {"state": "skipped", "reason": f"already {status['state']}"}
    if coord.cancel_requested(key):
        final = mark_cancelled(store, study, run, status, "cancelled before it started")
        coord.mark_done(key)
        return final
    plan = load_plan(store, study, run)

    def should_cancel() -> bool:
        if lease.lost.is_set():
            raise LeaseLost(f"{key}: stopped without recording anything: {lease.reason}")
        try:
            return coord.cancel_requested(key)
        except redis.RedisError as exc:
            log.warning("%s: cannot read the cancel flag (%s); going on while the lease holds", key, exc)
            return False

    def report(status: dict[str, Any]) -> None:
        if on_status is None:
            return
        try:
            on_status(status)
        except Exception as exc:  # status.json has been written; the live copy can miss a beat
            log.warning("%s: progress not published (%s)", key, exc)

    final = execute_run(store, plan, worker=f"{worker} (pid {os.getpid()})", should_cancel=should_cancel,
                        on_status=report)  # fmt: skip
    if final.get("state") in DONE:
        coord.mark_done(key)
    return final


def _record_error(coord: Coordinator, key: str, worker: str, exc: BaseException) -> None:
    """Leave why this execution stopped where the reaper finds it (best effort: Redis may be the cause)."""
    reason = redact_text(f"{type(exc).__name__}: {exc}")[:1000]
    log.error("%s: stopped without recording an outcome (%s); the reaper queues it again", key, reason)
    try:
        coord.record_error(key, f"{reason} (on {worker})")
    except redis.RedisError as err:
        log.warning("%s: could not record the error in Redis (%s)", key, err)


@app.task(name=AGGREGATE_TASK, bind=True)
def aggregate(self, study: str) -> dict[str, Any]:
    """Rebuild the study's report (after each run and on demand); one rebuild per study at a time."""
    from services.report import build_report

    client = connect(app.conf.broker_url)
    with client.lock(f"colormamba:aggregate:{study}", timeout=900, blocking_timeout=900):
        data = build_report(_store(), study)
    return {"study": study, "configurations": len(data["summary"]), "runs": len(data["runs"])}
