"""Celery tasks: thin bodies that unpack ids, call plain functions (services.exclusive, services.report)
and turn the outcome into the task's result. Messages carry ids only (study, run); everything else is
read from the store. Senders queue them by name (services.app), without importing this module."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import redis
from celery.exceptions import Reject

from colormamba.env import redact_text
from colormamba.storage import Storage
from colormamba.storage_s3 import open_store
from services.app import app, queue_aggregate
from services.celeryconfig import AGGREGATE_TASK, RUN_TASK
from services.coord import BrokerUnreachable, Coordinator, connect
from services.datasets import CacheFull
from services.exclusive import NotTakenUp, execute_exclusively
from services.runs import State
from services.settings import DATA_CACHE, settings
from services.studies import store_url

log = logging.getLogger(__name__)

PROGRESS_FIELDS = (
    *("state", "phase", "epoch", "epochs", "step", "steps", "loss", "eta_s"),
    *("val_psnr", "worker", "device", "attempt"),
)
REBUILD_WAIT_S = 900  # how long a report rebuild waits for the study's previous one to end
# what the run task returns, of its final status (status.json keeps the whole record)
RESULT_FIELDS = ("attempt", "epochs_done", "best_epoch", "metrics", "reason")


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
    except CacheFull as exc:
        return hand_back(worker, study, run, exc)
    if final.get("state") == State.FAILED:
        raise RunFailed(f"{study}/{run} failed: {redact_text(str(final.get('reason')))}")
    return task_result(study, run, final)


def hand_back(worker: str, study: str, run: str, exc: CacheFull) -> dict[str, Any]:
    """This worker's dataset cache is full: the run was left to the reaper (recorded `lost` with the reason
    and queued again, ahead of fresh runs, for another worker) and this worker stops taking runs (its
    consumer of the run queue cancelled) until it is restarted with room: one line says which folder and
    variable."""
    queue = settings().run_queue
    log.error("worker %s takes no more runs: %s; free space there or set %s to a larger disk, then "
              "restart the worker. %s/%s goes back to the queue.", worker, exc, DATA_CACHE.name, study,
              run)  # fmt: skip
    try:
        app.control.cancel_consumer(queue, destination=[worker])
    except Exception as err:  # the broker is down too: the next run it takes ends the same way
        log.warning("worker %s: could not stop consuming %s (%s)", worker, queue, err)
    return {"state": "handed back", "study": study, "run": run, "reason": str(exc)}


def task_result(study: str, run: str, final: dict[str, Any]) -> dict[str, Any]:
    """The run task's result (the result backend, Flower, and the worker's `Task ... succeeded` line):
    the outcome in a few fields, not the whole status (provenance and all, a kilobyte in every log)."""
    kept = {k: final[k] for k in RESULT_FIELDS if final.get(k) is not None}
    return {"state": final.get("state"), "study": study, "run": run, **kept}


@app.task(name=AGGREGATE_TASK, bind=True)
def aggregate(self, study: str) -> dict[str, Any]:
    """Rebuild the study's report (after each run and on demand); one rebuild per study at a time, under
    a lease (services.coord), so that an aggregator killed mid-rebuild holds up the next one for a lease
    TTL at most."""
    from services.report import build_report

    lease = _coordinator().wait_for(f"report:{study}", self.request.hostname or socket.gethostname(),
                                    timeout=REBUILD_WAIT_S)  # fmt: skip
    try:
        data = build_report(_store(), study)
    finally:
        lease.release()
    return {"study": study, "configurations": len(data["summary"]), "runs": len(data["runs"])}
