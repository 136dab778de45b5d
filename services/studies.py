"""A study's records in the store: its spec, each run's plan and status, and the rules that decide which
runs a submission starts. Shared by `submit.py` (queue and `--local`), the workers and the aggregator, so
that "what is finished" means one thing everywhere.

Keys (colormamba.storage spells them): `studies/<study>/spec.json`, `runs/<study>/<run>/run.json` (the
plan: immutable, its id is a hash of its content), `runs/<study>/<run>/status.json` (the record that
services.runs alone writes: its states and their moves are there).

`succeeded` and `failed` are final: a resubmission does not run them again unless asked
(`--rerun failed|all`). `cancelled` keeps its checkpoint and is resumed by submitting the study again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from colormamba.data import available_splits
from colormamba.env import S3_BUCKET, S3_ENDPOINT
from colormamba.storage import STUDIES, ObjectNotFound, RunLocation, Storage, spec_key
from services.datasets import ensure_synthetic, read_manifest
from services.epoch_log import print_epoch_lines
from services.runs import (
    DONE,
    FINAL,
    RERUN_CHOICES,
    mark_cancelled,
    mark_failed,
    mark_queued,
    now,
    read_status,
)
from services.settings import STORE, settings
from services.spec import RunPlan, SpecError, Study, SyntheticRef, dataset_name, is_local_path


def save_study(store: Storage, study: Study) -> None:
    """Record the spec (the report's list of runs) and each run's plan (what a worker executes)."""
    for run in study.runs:
        where = RunLocation(study.name, run.run_id)
        plan = {**run.to_dict(), "study": study.name, "dataset": dataset_name(study.spec.dataset),
                "checkpoint": study.spec.evaluation.checkpoint}  # fmt: skip
        store.put_bytes(where.plan_key, json.dumps(plan, indent=1).encode())
    store.put_bytes(
        spec_key(study.name), json.dumps({**study.to_dict(), "submitted_at": now()}, indent=1).encode()
    )


def load_study(store: Storage, study: str) -> Study:
    try:
        data = json.loads(store.get_bytes(spec_key(study)))
    except ObjectNotFound:
        raise ValueError(
            f"no study {study!r} in {store!r} (no {spec_key(study)}); submit its spec first"
        ) from None
    return Study.from_dict(data)


def list_studies(store: Storage) -> list[str]:
    return sorted({k.split("/")[1] for k in store.list(STUDIES) if k.endswith("/spec.json")})


def load_plan(store: Storage, study: str, run: str) -> dict[str, Any]:
    """A run's plan: RunPlan fields plus study, dataset and checkpoint."""
    key = RunLocation(study, run).plan_key
    try:
        return json.loads(store.get_bytes(key))
    except ObjectNotFound:
        raise ValueError(f"run {study}/{run} has no plan ({key}); was the study submitted?") from None


def study_statuses(store: Storage, study: Study) -> list[dict[str, Any]]:
    """One status per run of the study, in spec order (`state: "unsubmitted"` for runs without one)."""
    out = []
    for run in study.runs:
        status = read_status(store, study.name, run.run_id) or {"state": "unsubmitted"}
        out.append({**status, "run": run.run_id, "variant": run.variant, "seed": run.seed})
    return out


def select_runs(store: Storage, study: Study, rerun: str = "none") -> tuple[list[RunPlan], list[RunPlan]]:
    """Split the study's runs into (to start, to leave alone) by their recorded state.

    A run is started when it has no status, is queued, running (a resumable leftover: the worker's lease
    decides whether it is really running), lost or cancelled; a final one only when `rerun` asks for it.
    """
    if rerun not in RERUN_CHOICES:
        raise ValueError(f"rerun: expected one of {RERUN_CHOICES}, got {rerun!r}")
    start, keep = [], []
    for run in study.runs:
        status = read_status(store, study.name, run.run_id)
        (start if should_start(status, rerun) else keep).append(run)
    return start, keep


def should_start(status: dict[str, Any] | None, rerun: str) -> bool:
    """Whether a run with this recorded status is (re)started under the `rerun` choice."""
    state = status["state"] if status else None
    return state not in FINAL or rerun == "all" or (rerun == "failed" and state == "failed")


def reset_for_rerun(store: Storage, study: str, run: str) -> None:
    """Forget a run's results and checkpoints so that it trains from scratch."""
    where = RunLocation(study, run)
    for prefix in (where.checkpoint_prefix, where.artifact_prefix):
        for key in store.list(prefix):
            if key != where.plan_key:
                store.delete(key)


def prepare_dataset(store: Storage, study: Study, allow_local_path: bool) -> dict[str, Any]:
    """Make the study's dataset available to workers; returns {"name": ...} or {"path": ...}.

    A synthetic dataset is generated and uploaded once; a stored one must exist (its manifest is read so
    that a missing dataset is refused before anything is queued); a local folder is only for `--local`.
    Each must hold the splits the spec trains, selects and reports on (`check_splits`).
    """
    ref = study.spec.dataset
    if isinstance(ref, SyntheticRef):
        name = dataset_name(ref)
        s = ref.synthetic
        counts = {"train": s.n_train, "val": s.n_val, "test": s.n_test}
        check_splits(study, name, [split for split, n in counts.items() if n > 0])  # before generating it
        ensure_synthetic(store, name, n_train=s.n_train, n_val=s.n_val, n_test=s.n_test, size=s.size,
                         seed=s.seed)  # fmt: skip
        return {"name": name}
    if is_local_path(ref):
        if not allow_local_path:
            raise ValueError(
                f"dataset: {ref!r} is a local folder, which workers cannot read; upload it with "
                f"`python jobs/submit.py dataset upload {ref} --name NAME` and put `dataset: NAME` in the "
                "spec "
                "(or run the study with --local)"
            )
        layout = study.spec.recipe.layout or "auto"
        check_splits(study, ref, available_splits(Path(ref).expanduser(), layout))
        return {"path": ref}
    check_splits(study, ref, list(read_manifest(store, ref)["splits"]))
    return {"name": ref}


def check_splits(study: Study, dataset: str, present: list[str]) -> None:
    """Refuse a study whose dataset lacks a split it trains on (train) or names in `evaluation`.

    Raises:
        SpecError: one line per missing split, naming the spec field, the dataset and the splits it has.
    """
    wanted = {"dataset": "train", **{f"evaluation.{f}": getattr(study.spec.evaluation, f)
                                     for f in ("select_split", "report_split")}}  # fmt: skip
    has = ", ".join(present) or "none"
    problems = [
        f"{field}: dataset {dataset!r} has no {split!r} split (it has: {has})"
        for field, split in wanted.items()
        if split not in present
    ]
    if problems:
        raise SpecError(f"study {study.name}", problems)


LOCAL_STORE = "artifacts"  # the --local store: a folder with the bucket's layout


def store_url(local: bool = False) -> str:
    """Where the study's objects live: COLORMAMBA_STORE (an `s3://bucket` URL or a folder), else S3 when
    COLORMAMBA_S3_ENDPOINT is set, else (only with --local) the folder `artifacts`."""
    config = settings()
    if config.store:
        return config.store
    if local:
        return LOCAL_STORE
    if config.s3_endpoint:
        return "s3://" + config.s3_bucket
    raise ValueError(
        f"no store configured: set {S3_ENDPOINT.name} (and credentials) for MinIO/S3, or {STORE.name} "
        f"to a folder or s3://bucket URL ({S3_BUCKET.name} names the bucket), or use --local"
    )


def local_run_study(store: Storage, study: Study, rerun: str = "none", cache_dir: Any = None,
                    on_status: Any = None, runs_at_once: int = 1) -> list[dict[str, Any]]:  # fmt: skip
    """`--local`: the study's runs on this machine, `runs_at_once` at a time, then its report.

    The same records as the queue (spec.json, run.json, status.json) and the same `execute_run`, so the
    folder this writes is exactly what workers would have written to the bucket. One at a time, the runs
    execute in this process; more, each in a spawned process of its own, as a worker's pool processes
    with COLORMAMBA_RUNS_PER_GPU (they share the GPU, or split the CPU's cores between them). Every run
    prints one line per epoch to stdout, the line a worker logs (services.epoch_log).
    """
    from services.report import build_report
    from services.runner import execute_run

    if runs_at_once < 1:
        raise ValueError(f"runs_at_once must be >= 1, got {runs_at_once}")
    print_epoch_lines()
    dataset = prepare_dataset(store, study, allow_local_path=True)
    save_study(store, study)
    if "path" in dataset:  # a local folder: plans carry its absolute path
        for run in study.runs:
            key = RunLocation(study.name, run.run_id).plan_key
            plan = json.loads(store.get_bytes(key))
            plan["dataset"] = str(Path(dataset["path"]).expanduser().resolve())
            store.put_bytes(key, json.dumps(plan, indent=1).encode())
    start, _ = select_runs(store, study, rerun)
    plans = []
    for run in start:
        status = read_status(store, study.name, run.run_id)
        if rerun != "none" and status is not None and status.get("state") in FINAL:
            reset_for_rerun(store, study.name, run.run_id)
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
    from services.runner import execute_run, share_cpu_threads

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
