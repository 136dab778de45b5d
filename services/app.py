"""The Celery app of the job suite: `celery -A services.app worker -Q gpu` (one per GPU) and
`celery -A services.app worker -Q aggregate` (the aggregator). Settings: services.celeryconfig.

Importing this module touches neither CUDA nor the store: the pool processes import the tasks, and
`jobs/submit.py` imports the app only to send messages.
"""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutting_down

app = Celery("colormamba", include=["services.tasks"])
app.config_from_object("services.celeryconfig")

log = logging.getLogger(__name__)
_reaper_stop = None


@worker_ready.connect
def _start_reaper(sender=None, **_kwargs) -> None:
    """Every worker's main process runs the reaper (one of them acts per interval, elected in Redis)."""
    global _reaper_stop
    from services.coord import connect, start_reaper
    from services.tasks import queue_run

    client = connect(app.conf.broker_url)
    heartbeat = os.environ.get("COLORMAMBA_HEARTBEAT_FILE") or None  # read by compose's healthcheck
    _reaper_stop = start_reaper(client, lambda study, run: queue_run(study, run), heartbeat=heartbeat)
    log.info("reaper started")


@worker_process_init.connect
def _share_cpu_threads(**_kwargs) -> None:
    """A pool process of a worker that trains COLORMAMBA_RUNS_PER_GPU > 1 runs at once takes its share
    of the cores (all of a run's work on the CPU worker; data and loss bookkeeping on a GPU worker)."""
    from services.celeryconfig import RUNS_PER_GPU

    if RUNS_PER_GPU > 1:
        from services.runner import share_cpu_threads

        log.info("%d runs at once: %d CPU threads each", RUNS_PER_GPU, share_cpu_threads(RUNS_PER_GPU))


@worker_shutting_down.connect
def _stop_reaper(**_kwargs) -> None:
    if _reaper_stop is not None:
        _reaper_stop.set()
