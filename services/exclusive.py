"""A run executed exclusively: the run's Redis lease (services.coord) around services.runner's
`execute_run`, which knows nothing of Redis (`--local` runs it with no lease). What the run task does
with each delivery of a run's message (services.tasks), as a plain function."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import redis

from colormamba.env import redact_text
from colormamba.storage import Storage
from services.coord import Coordinator, Lease, LeaseLost, run_key
from services.runner import execute_run
from services.runs import DONE, mark_cancelled, read_status
from services.studies import load_plan

log = logging.getLogger(__name__)


class NotTakenUp(RuntimeError):
    """Redis failed before the run was taken up: nothing was recorded, the message should be redelivered."""


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
        try:
            on_end(study)
        except Exception as exc:  # the outcome is recorded: Redis was down too (the reaper's tidy-up asks
            # for the rebuild), else the next run's end or `report --rebuild` does
            log.warning("%s: ended; no report rebuild asked for (%s)", key, redact_text(str(exc)))
    return final


def _execute_leased(store: Storage, coord: Coordinator, lease: Lease, study: str, run: str, worker: str,
                    on_status: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:  # fmt: skip
    """execute_exclusively's work once the lease is held and the run marked started."""
    key = run_key(study, run)
    store = FencedStore(store, lease)
    status = read_status(store, study, run)
    if status is None:  # a message sent without submit.py's record: nothing to resume, nothing to say
        log.error("%s: no status.json (never submitted?); this delivery ends here", key)
        _forget(coord, key)
        return {"state": "skipped", "reason": "not submitted (no status.json)"}
    if status.get("state") in DONE:
        _forget(coord, key)
        return {"state": "skipped", "reason": f"already {status['state']}"}
    if coord.cancel_requested(key):
        final = mark_cancelled(store, study, run, status, "cancelled before it started")
        _forget(coord, key)
        return final
    plan = load_plan(store, study, run)

    def should_cancel() -> bool:
        lease.check()
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

    final = execute_run(store, plan, worker=f"{worker} (pid {os.getpid()})",
                        should_cancel=should_cancel, on_status=report)  # fmt: skip
    if final.get("state") in DONE:
        _forget(coord, key)
    return final


def _forget(coord: Coordinator, key: str) -> None:
    """The run's outcome is recorded in the store: forget it in Redis. If Redis is down, the outcome
    stands all the same (the error is no reason to requeue anything): the run keeps its `started` flag,
    so once Redis answers the reaper finds it ended and forgets it (services.app.requeue_lost)."""
    try:
        coord.mark_done(key)
    except redis.RedisError as exc:
        log.warning("%s: ended and recorded; Redis unreachable to forget it (%s): the reaper will", key, exc)


class FencedStore:
    """The store as a leased execution sees it: every write (its status.json, checkpoints, results) is
    made only after `Lease.confirm` found the lease still ours, so a worker that lost its run never
    writes over the record or the checkpoints of the run's next owner (or over the reaper's `lost`); it
    raises LeaseLost instead, which ends the execution without recording anything. Reads pass through."""

    def __init__(self, store: Storage, lease: Lease) -> None:
        self.store, self.lease = store, lease

    def put_bytes(self, key: str, data: bytes) -> None:
        self.lease.confirm()
        self.store.put_bytes(key, data)

    def delete(self, key: str) -> None:
        self.lease.confirm()
        self.store.delete(key)

    def get_bytes(self, key: str) -> bytes:
        return self.store.get_bytes(key)

    def exists(self, key: str) -> bool:
        return self.store.exists(key)

    def list(self, prefix: str) -> list[str]:
        return self.store.list(prefix)

    def __getattr__(self, name: str) -> Any:  # the store's own extras (a folder store's `path`...)
        return getattr(self.store, name)

    def __repr__(self) -> str:
        return repr(self.store)


def _record_error(coord: Coordinator, key: str, worker: str, exc: BaseException) -> None:
    """Leave why this execution stopped where the reaper finds it (best effort: Redis may be the cause)."""
    reason = redact_text(f"{type(exc).__name__}: {exc}")[:1000]
    log.error("%s: stopped without recording an outcome (%s); the reaper queues it again", key, reason)
    try:
        coord.record_error(key, f"{reason} (on {worker})")
    except redis.RedisError as err:
        log.warning("%s: could not record the error in Redis (%s)", key, err)
