"""Celery tasks: thin wrappers that unpack ids, call plain functions (services.runner, services.report)
and record the outcome. Messages carry ids only (study, run); everything else is read from the store."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import redis

from colormamba.storage import Storage
from colormamba.storage_s3 import open_store
from services.app import app
from services.coord import Coordinator, LeaseLost, connect, run_key
from services.runner import execute_run
from services.studies import DONE, load_plan, now, read_status, store_url, write_status

log = logging.getLogger(__name__)

PROGRESS_FIELDS = (
    *("state", "phase", "epoch", "epochs", "step", "steps", "loss", "eta_s"),
    *("val_psnr", "worker", "device", "attempt"),
)


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


@app.task(name="services.tasks.run", bind=True, acks_late=True, reject_on_worker_lost=True)
def run_task(self, study: str, run: str) -> dict[str, Any]:
    """Execute one run if nobody else does and it has not ended; see services.coord for why."""

    def on_status(status: dict[str, Any]) -> None:
        self.update_state(state="PROGRESS", meta={k: status.get(k) for k in PROGRESS_FIELDS})

    worker = self.request.hostname or socket.gethostname()
    return execute_exclusively(_store(), _coordinator(), study, run, worker, on_status=on_status,
                               on_end=queue_aggregate)  # fmt: skip


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

    Redis errors while the lease holds do not end the run: the cancel flag is read as "not cancelled"
    and a failing `on_status` (the task's progress goes to the result backend in Redis) is logged, so
    that a Redis restart shorter than the lease TTL costs nothing; a longer outage is the lease's call.
    """
    key = run_key(study, run)
    lease = coord.acquire(key, worker)
    if lease is None:
        holder = coord.holder(key)
        log.info("%s: held by %s; this delivery ends here", key, holder)
        return {"state": "skipped", "reason": f"held by {holder}"}
    try:
        status = read_status(store, study, run)
        if status is not None and status.get("state") in DONE:
            coord.mark_done(key)
            return {"state": "skipped", "reason": f"already {status['state']}"}
        if coord.cancel_requested(key):
            final = write_status(
                store,
                study,
                run,
                {
                    **(status or {}),
                    "state": "cancelled",
                    "reason": "cancelled before it started",
                    "finished_at": now(),
                },
            )
            coord.mark_done(key)
            if on_end is not None:
                on_end(study)
            return final
        coord.mark_started(key)
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
    finally:
        lease.release()
    if on_end is not None:
        on_end(study)
    return final


@app.task(name="services.tasks.aggregate", bind=True)
def aggregate(self, study: str) -> dict[str, Any]:
    """Rebuild the study's report (after each run and on demand); one rebuild per study at a time."""
    from services.report import build_report

    client = connect(app.conf.broker_url)
    with client.lock(f"colormamba:aggregate:{study}", timeout=900, blocking_timeout=900):
        data = build_report(_store(), study)
    return {"study": study, "configurations": len(data["summary"]), "runs": len(data["runs"])}
