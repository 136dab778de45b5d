"""The Celery app of the job suite: `celery -A services.app worker -Q gpu` (one per GPU) and
`celery -A services.app worker -Q aggregate` (the aggregator). Settings: services.celeryconfig.

Importing this module touches neither CUDA nor the store: the pool processes import the tasks, and
`jobs/submit.py` imports the app only to send messages. The worker's main process never imports the
tasks either: it checks its surroundings before taking work (services.checks) and runs the reaper, which
sends runs by task name.
"""

from __future__ import annotations

import logging
import sys

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutting_down

from colormamba.storage import Storage
from services.celeryconfig import AGGREGATE_TASK, FRESH_PRIORITY, RESUMED_PRIORITY, RUN_TASK
from services.settings import settings

app = Celery("colormamba", include=["services.tasks"])
app.config_from_object("services.celeryconfig")

log = logging.getLogger(__name__)
_reaper_stop = None


@worker_init.connect
def _check_before_taking_work(sender=None, **_kwargs) -> None:
    """Exit with one line naming what is wrong (Redis, store, cache folder) before any message is taken:
    raising here would be swallowed by Celery and the worker would come up "ready" anyway."""
    from services.checks import STARTUP_FAILED, StartupCheckFailed, startup_checks

    name = getattr(sender, "hostname", None) or "worker"
    queues = list(sender.app.amqp.queues.consume_from) if sender is not None else []
    try:
        startup_checks(settings(), queues, owner=name)
    except StartupCheckFailed as exc:
        print(f"colormamba worker {name} cannot start: {exc}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILED)
    checked = "Redis, store" + (", dataset cache" if settings().run_queue in queues else "")
    print(f"colormamba worker {name}: start-up checks passed ({checked})", file=sys.stderr, flush=True)


@worker_ready.connect
def _start_reaper(sender=None, **_kwargs) -> None:
    """Every worker's main process runs the reaper (one of them acts per interval, elected in Redis)."""
    global _reaper_stop
    from colormamba.storage_s3 import open_store
    from services.coord import Coordinator, connect, start_reaper
    from services.studies import store_url

    client = connect(app.conf.broker_url)
    coord = Coordinator(client)
    store = open_store(store_url())
    _reaper_stop = start_reaper(client, lambda study, run: requeue_lost(store, coord, study, run),
                                heartbeat=settings().heartbeat_file)  # fmt: skip
    log.info("reaper started")


def requeue_lost(store: Storage, coord, study: str, run: str) -> None:
    """The reaper's action on a run whose worker is gone: record it `lost` with the reason (the error the
    last execution left, if any), then send it to the run queue again, by task name, ahead of fresh runs.

    A run that has ended meanwhile is forgotten in Redis and its report rebuilt (its worker could not do
    either: Redis was down as it ended, say). A store that cannot be written raises
    (services.coord.Coordinator.reap tries again next round): no message goes out while the record would
    still show a running run with an ETA.
    """
    from services.coord import run_key
    from services.runs import DONE, lost_reason, mark_lost, read_status

    key = run_key(study, run)
    status = read_status(store, study, run)
    if status is None or status.get("state") in DONE:
        coord.mark_done(key)
        if status is not None:
            queue_aggregate(study)
        return
    mark_lost(store, study, run, status, lost_reason(status.get("worker"), coord.last_error(key)))
    queue_run(study, run, resumes=True)


def queue_run(study: str, run: str, task_id: str | None = None, resumes: bool = False) -> str:
    """Send one run to the GPU queue by task name (the sender needs none of the task's imports); returns
    the task id (chosen by the caller when it records the id before sending, so that nothing is written
    about the run after a worker may have taken it). A run that `resumes` (it was taken up before) goes
    ahead of fresh ones (services.celeryconfig.RESUMED_PRIORITY)."""
    priority = RESUMED_PRIORITY if resumes else FRESH_PRIORITY
    return app.send_task(RUN_TASK, args=[study, run], task_id=task_id, priority=priority).id


def queue_aggregate(study: str) -> str:
    """Ask the aggregator to rebuild the study's report, by task name; returns the task id."""
    return app.send_task(AGGREGATE_TASK, args=[study]).id


@worker_process_init.connect
def _share_cpu_threads(**_kwargs) -> None:
    """A pool process of a worker that trains COLORMAMBA_RUNS_PER_GPU > 1 runs at once takes its share
    of the cores (all of a run's work on the CPU worker; data and loss bookkeeping on a GPU worker)."""
    runs = settings().runs_per_gpu
    if runs > 1:
        from services.runner import share_cpu_threads

        log.info("%d runs at once: %d CPU threads each", runs, share_cpu_threads(runs))


@worker_shutting_down.connect
def _stop_reaper(**_kwargs) -> None:
    if _reaper_stop is not None:
        _reaper_stop.set()
