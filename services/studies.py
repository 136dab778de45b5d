"""A study's records in the store: its spec, each run's plan and status, and the rules that decide which
runs a submission starts. Shared by `submit.py` (queue and `--local`), the workers and the aggregator, so
that "what is finished" means one thing everywhere.

Keys (system.md): `studies/<study>/spec.json`, `runs/<study>/<run>/run.json` (the plan: immutable, its
id is a hash of its content), `runs/<study>/<run>/status.json` (the state machine below).

States: queued -> running -> succeeded | failed | cancelled. `succeeded` and `failed` are final: a
resubmission does not run them again unless asked (`--rerun failed|all`). `cancelled` keeps its
checkpoint and is resumed by submitting the study again.
"""

from __future__ import annotations

import json
import time
from typing import Any

from colormamba.storage import ObjectNotFound, RunLocation, Storage
from services.datasets import ensure_synthetic, read_manifest
from services.spec import RunPlan, Study, SyntheticRef, dataset_name, is_local_path

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL = ("succeeded", "failed")
DONE = ("succeeded", "failed", "cancelled")  # nothing is running or waiting
RERUN_CHOICES = ("none", "failed", "all")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def spec_key(study: str) -> str:
    return f"studies/{study}/spec.json"


def save_study(store: Storage, study: Study) -> None:
    """Record the spec (the report's list of runs) and each run's plan (what a worker executes)."""
    for run in study.runs:
        where = RunLocation(study.name, run.run_id)
        plan = {**run.to_dict(), "study": study.name, "dataset": dataset_name(study.spec.dataset),
                "checkpoint": study.spec.evaluation.checkpoint}  # fmt: skip
        store.put_bytes(where.artifact("run.json"), json.dumps(plan, indent=1).encode())
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
    return sorted({k.split("/")[1] for k in store.list("studies") if k.endswith("/spec.json")})


def load_plan(store: Storage, study: str, run: str) -> dict[str, Any]:
    """A run's plan: RunPlan fields plus study, dataset and checkpoint."""
    key = RunLocation(study, run).artifact("run.json")
    try:
        return json.loads(store.get_bytes(key))
    except ObjectNotFound:
        raise ValueError(f"run {study}/{run} has no plan ({key}); was the study submitted?") from None


def read_status(store: Storage, study: str, run: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.get_bytes(RunLocation(study, run).artifact("status.json")))
    except ObjectNotFound:
        return None


def write_status(store: Storage, study: str, run: str, status: dict[str, Any]) -> dict[str, Any]:
    status = {**status, "study": study, "run": run, "updated_at": now()}
    store.put_bytes(RunLocation(study, run).artifact("status.json"), json.dumps(status, indent=1).encode())
    return status


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
    decides whether it is really running), or cancelled; a final one only when `rerun` asks for it.
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
    for prefix in (f"checkpoints/{study}/{run}", f"runs/{study}/{run}"):
        for key in store.list(prefix):
            if key != where.artifact("run.json"):
                store.delete(key)


def prepare_dataset(store: Storage, study: Study, allow_local_path: bool) -> dict[str, Any]:
    """Make the study's dataset available to workers; returns {"name": ...} or {"path": ...}.

    A synthetic dataset is generated and uploaded once; a stored one must exist (its manifest is read so
    that a missing dataset is refused before anything is queued); a local folder is only for `--local`.
    """
    ref = study.spec.dataset
    if isinstance(ref, SyntheticRef):
        name = dataset_name(ref)
        s = ref.synthetic
        ensure_synthetic(store, name, n_train=s.n_train, n_val=s.n_val, size=s.size, seed=s.seed)
        return {"name": name}
    if is_local_path(ref):
        if not allow_local_path:
            raise ValueError(
                f"dataset: {ref!r} is a local folder, which workers cannot read; upload it with "
                f"`python jobs/submit.py dataset upload {ref} --name NAME` and put `dataset: NAME` in the "
                "spec "
                "(or run the study with --local)"
            )
        return {"path": ref}
    read_manifest(store, ref)
    return {"name": ref}


LOCAL_STORE = "artifacts"  # the --local store: a folder with the bucket's layout


def store_url(local: bool = False) -> str:
    """Where the study's objects live: COLORMAMBA_STORE (an `s3://bucket` URL or a folder), else S3 when
    COLORMAMBA_S3_ENDPOINT is set, else (only with --local) the folder `artifacts`."""
    import os

    url = os.environ.get("COLORMAMBA_STORE")
    if url:
        return url
    if local:
        return LOCAL_STORE
    if os.environ.get("COLORMAMBA_S3_ENDPOINT"):
        return "s3://" + os.environ.get("COLORMAMBA_S3_BUCKET", "colormamba")
    raise ValueError(
        "no store configured: set COLORMAMBA_S3_ENDPOINT (and credentials) for MinIO/S3, or COLORMAMBA_STORE "
        "to a folder or s3://bucket URL, or use --local"
    )


def local_run_study(store: Storage, study: Study, rerun: str = "none", cache_dir: Any = None,
                    on_status: Any = None) -> list[dict[str, Any]]:  # fmt: skip
    """`--local`: the study's runs one after another in this process, then its report.

    The same records as the queue (spec.json, run.json, status.json) and the same `execute_run`, so the
    folder this writes is exactly what workers would have written to the bucket.
    """
    from services.report import build_report
    from services.runner import execute_run

    dataset = prepare_dataset(store, study, allow_local_path=True)
    save_study(store, study)
    if "path" in dataset:  # a local folder: plans carry its absolute path
        import json as _json
        from pathlib import Path

        for run in study.runs:
            key = RunLocation(study.name, run.run_id).artifact("run.json")
            plan = _json.loads(store.get_bytes(key))
            plan["dataset"] = str(Path(dataset["path"]).expanduser().resolve())
            store.put_bytes(key, _json.dumps(plan, indent=1).encode())
    start, _ = select_runs(store, study, rerun)
    finals = []
    for run in start:
        status = read_status(store, study.name, run.run_id)
        if rerun != "none" and status is not None and status.get("state") in FINAL:
            reset_for_rerun(store, study.name, run.run_id)
            status = None
        queued = {**(status or {}), "state": "queued", "queued_at": now(), "variant": run.variant}
        queued["seed"] = run.seed
        write_status(store, study.name, run.run_id, queued)
        plan = load_plan(store, study.name, run.run_id)
        finals.append(execute_run(store, plan, worker="local", cache_dir=cache_dir, on_status=on_status))
    build_report(store, study.name)
    return finals
