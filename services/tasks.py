"""Celery tasks: thin wrappers that unpack ids, call plain functions (services.runner, services.report)
and record the outcome. Messages carry ids only (study, run); everything else is read from the store."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

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


def _store():
    return open_store(store_url())


def _coordinator() -> Coordinator:
    return Coordinator(connect(app.conf.broker_url))


def queue_run(study: str, run: str) -> str:
    """Send one run to the GPU queue; returns the task id."""
    result = run_task.apply_async(args=[study, run])
    return result.id


def queue_aggregate(study: str) -> str:
    return aggregate.apply_async(args=[study]).id


@app.task(name="services.tasks.run", bind=True, acks_late=True, reject_on_worker_lost=True)
def run_task(self, study: str, run: str) -> dict[str, Any]:
    """Execute one run if nobody else does and it has not ended; see services.coord for why."""
    store = _store()
    coord = _coordinator()
    key = run_key(study, run)
    worker = self.request.hostname or socket.gethostname()
    lease = coord.acquire(key, worker)
    if lease is None:
        log.info("%s: held by %s; this delivery ends here", key, coord.holder(key))
        return {"state": "skipped", "reason": f"held by {coord.holder(key)}"}
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
            queue_aggregate(study)
            return final
        coord.mark_started(key)
        plan = load_plan(store, study, run)

        def should_cancel() -> bool:
            if lease.lost.is_set():
                raise LeaseLost(f"{key}: lease lost; another worker may own the run now")
            return coord.cancel_requested(key)

        def on_status(status: dict[str, Any]) -> None:
            self.update_state(state="PROGRESS", meta={k: status.get(k) for k in PROGRESS_FIELDS})

        final = execute_run(store, plan, worker=f"{worker} (pid {os.getpid()})", should_cancel=should_cancel,
                            on_status=on_status)  # fmt: skip
        if final.get("state") in DONE:
            coord.mark_done(key)
    finally:
        lease.release()
    queue_aggregate(study)
    return final


@app.task(name="services.tasks.aggregate", bind=True)
def aggregate(self, study: str) -> dict[str, Any]:
    """Rebuild the study's report (after each run and on demand); one rebuild per study at a time."""
    from services.report import build_report

    client = connect(app.conf.broker_url)
    with client.lock(f"colormamba:aggregate:{study}", timeout=900, blocking_timeout=900):
        data = build_report(_store(), study)
    return {"study": study, "configurations": len(data["summary"]), "runs": len(data["runs"])}
