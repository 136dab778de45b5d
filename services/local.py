"""`submit.py --local`: a whole study on this machine, then its report.

A layer above services.studies (the records), services.runner (one run) and services.report, beside the
queue's submission; nothing below imports it (tests/test_layers.py). It writes the same records as the
queue (spec.json, run.json, status.json) through the same `execute_run`, so the folder it writes is
exactly what workers would have written to the bucket.
"""

from __future__ import annotations

import os
from typing import Any

from colormamba.storage import Storage
from services.epoch_log import print_epoch_lines
from services.runner import execute_run, share_cpu_threads
from services.runs import DONE, FINAL, mark_cancelled, mark_failed, mark_queued, read_status
from services.spec import RunPlan, Study
from services.studies import load_plan, prepare_dataset, reset_for_rerun, save_study, select_runs


def local_run_study(store: Storage, study: Study, rerun: str = "none", cache_dir: Any = None,
                    on_status: Any = None, runs_at_once: int = 1,
                    fresh: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """`--local`: the study's runs on this machine, `runs_at_once` at a time, then its report.

    The same records as the queue (spec.json, run.json, status.json) and the same `execute_run`, so the
    folder this writes is exactly what workers would have written to the bucket. One at a time, the runs
    execute in this process; more, each in a spawned process of its own, as a worker's pool processes
    with COLORMAMBA_RUNS_PER_GPU (they share the GPU, or split the CPU's cores between them). Every run
    prints one line per epoch to stdout, the line a worker logs (services.epoch_log). A rerun resumes
    from the run's checkpoints, or starts from scratch with `fresh` (services.studies.reset_for_rerun).
    """
    from services.report import build_report  # here: the spawned run processes need no matplotlib

    if runs_at_once < 1:
        raise ValueError(f"runs_at_once must be >= 1, got {runs_at_once}")
    print_epoch_lines()
    if not study.dataset_info:  # bound by the caller when it showed the dataset's check already
        study = study.bind_dataset(prepare_dataset(store, study, allow_local_path=True, cache_dir=cache_dir))
    save_study(store, study)
    start, _ = select_runs(store, study, rerun)
    plans = []
    for run in start:
        status = read_status(store, study.name, run.run_id)
        if rerun != "none" and status is not None and status.get("state") in FINAL:
            reset_for_rerun(store, study.name, run.run_id, fresh)
            status = None
        if runs_at_once > 1:  # all wait at once; one at a time, each is queued just before it runs
            record_queued(store, study.name, run, status)
        plans.append((run, status))
    if runs_at_once == 1:
        finals = []
        for run, status in plans:
            record_queued(store, study.name, run, status)
            plan = load_plan(store, study.name, run.run_id)
            finals.append(execute_run(store, plan, worker="local", cache_dir=cache_dir, on_status=on_status))
    else:
        loaded = [load_plan(store, study.name, run.run_id) for run, _ in plans]
        finals = _run_in_processes(store, loaded, runs_at_once, cache_dir, on_status)
    build_report(store, study.name)
    return finals


def record_queued(store: Storage, study: str, run: RunPlan, status: dict[str, Any] | None) -> None:
    """A run's status as `queued` (keeping what an earlier attempt recorded)."""
    mark_queued(store, study, run.run_id, status, variant=run.variant, seed=run.seed)


def _execute_in_process(store: Storage, plan: dict[str, Any], cache_dir: Any, runs_at_once: int) -> None:
    """One `--local` run in a process of its own (started by `_run_in_processes`); its outcome is its
    status.json, which `execute_run` writes."""
    share_cpu_threads(runs_at_once)
    print_epoch_lines()  # a spawned process starts without the parent's logging set-up
    try:
        execute_run(store, plan, worker=f"local-{os.getpid()}", cache_dir=cache_dir)
    except KeyboardInterrupt:  # Ctrl-C: the run recorded itself as cancelled
        raise SystemExit(130) from None


def _run_in_processes(store: Storage, plans: list[dict[str, Any]], runs_at_once: int, cache_dir: Any,
                      on_status: Any) -> list[dict[str, Any]]:  # fmt: skip
    """Execute the plans `runs_at_once` at a time, each in a fresh spawned process, and report each run's
    status.json as it changes (read every second) to `on_status`.

    A process is started only when one ends, so Ctrl-C (which reaches the running ones too: they record
    `cancelled` themselves) starts nothing more; the runs that never started are marked `cancelled`, and
    submitting the study again resumes all of them.
    """
    import multiprocessing
    import signal
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    waiting, running = list(plans), {}
    finals: list[dict[str, Any]] = []
    shown: dict[str, dict[str, Any]] = {}

    def report(plan: dict[str, Any], status: dict[str, Any] | None) -> None:
        if on_status is not None and status and status != shown.get(plan["run_id"]):
            shown[plan["run_id"]] = status
            on_status(status)

    try:
        while waiting or running:
            while waiting and len(running) < runs_at_once:
                plan = waiting.pop(0)
                process = context.Process(target=_execute_in_process, name=plan["run_id"],
                                          args=(store, plan, cache_dir, runs_at_once))  # fmt: skip
                process.start()
                running[process] = plan
            ended = wait([p.sentinel for p in running], timeout=1.0)
            for process, plan in list(running.items()):
                if process.sentinel in ended:
                    process.join()
                    del running[process]
                    final = _final_status(store, plan, process.exitcode)
                    finals.append(final)
                    report(plan, final)
                else:
                    report(plan, read_status(store, plan["study"], plan["run_id"]))
    except BaseException as exc:
        for process in running:
            if not isinstance(exc, KeyboardInterrupt):  # Ctrl-C reached them already
                os.kill(process.pid, signal.SIGINT)
        for process in running:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
        for plan in waiting:
            status = read_status(store, plan["study"], plan["run_id"])
            mark_cancelled(store, plan["study"], plan["run_id"], status, "stopped before it started")
        raise
    return finals


def _final_status(store: Storage, plan: dict[str, Any], exitcode: int | None) -> dict[str, Any]:
    """The status a run's process left; if the process died before recording an outcome (killed, out of
    memory), the status set to failed with its exit code as the reason."""
    status = read_status(store, plan["study"], plan["run_id"]) or {}
    if status.get("state") in DONE:
        return status
    reason = f"the run's process ended with exit code {exitcode} before recording an outcome"
    return mark_failed(store, plan["study"], plan["run_id"], status, reason)
