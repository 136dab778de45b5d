"""A study's records in the store: its spec, each run's plan and status, and the rules that decide which
runs a submission starts. Shared by `submit.py` (queue and `--local`), the workers and the aggregator, so
that "what is finished" means one thing everywhere. Executing runs is not here: services.runner executes
one, services.local a whole study on this machine.

Keys (colormamba.storage spells them): `studies/<study>/spec.json`, `runs/<study>/<run>/run.json` (the
plan: immutable, its id is a hash of its content), `runs/<study>/<run>/status.json` (the record that
services.runs alone writes: its states and their moves are there).

`succeeded` and `failed` are final: a resubmission does not run them again unless asked
(`--rerun failed|all`), and then resumes them from their last checkpoint (a failed run's finished epochs
are hours of GPU time; a succeeded one is evaluated again); only `--fresh` deletes the checkpoints and
trains from scratch. `cancelled` keeps its checkpoint and is resumed by submitting the study again.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from colormamba.data import available_splits
from colormamba.env import S3_BUCKET, S3_ENDPOINT
from colormamba.storage import STUDIES, ObjectNotFound, RunLocation, Storage, StorageError, spec_key
from colormamba.suggest import closest
from services.datasets import build_manifest, ensure_synthetic, local_view, read_manifest
from services.runs import FINAL, RERUN_CHOICES, State, now, read_status
from services.settings import STORE, settings
from services.spec import (
    NOT_IN_RUN_ID,
    RESOLVED_FIELDS,
    RunPlan,
    SpecError,
    Study,
    SyntheticRef,
    dataset_name,
    is_local_path,
)


def save_study(store: Storage, study: Study) -> None:
    """Record the spec (the report's list of runs) and each run's plan (what a worker executes). The plans
    name the dataset a worker reads: the bound one (`prepare_dataset`), else the spec's."""
    dataset = study.dataset_info.get("ref") or dataset_name(study.spec.dataset)
    for run in study.runs:
        where = RunLocation(study.name, run.run_id)
        plan = {**run.to_dict(), "study": study.name, "dataset": dataset,
                "checkpoint": study.spec.evaluation.checkpoint}  # fmt: skip
        store.put_bytes(where.plan_key, json.dumps(plan, indent=1).encode())
    store.put_bytes(
        spec_key(study.name), json.dumps({**study.to_dict(), "submitted_at": now()}, indent=1).encode()
    )


def new_run_reasons(store: Storage, study: Study) -> dict[str, str]:
    """Why each run of `study` that the study saved under its name does not have is new: for a run of the
    same variant and seed there, what changed (the dataset's content, resolved loss weights or model, the
    recipe); "new in the spec" otherwise. {} for a study never submitted."""
    try:
        before = {(r.variant, r.seed): r for r in load_study(store, study.name).runs}
    except ValueError:
        return {}
    known = {r.run_id for r in before.values()}
    reasons = {}
    for run in study.runs:
        if run.run_id not in known:
            old = before.get((run.variant, run.seed))
            reasons[run.run_id] = "new in the spec" if old is None else describe_change(old, run)
    return reasons


def describe_change(old: RunPlan, new: RunPlan) -> str:
    """What differs between two plans of one variant and seed, in a line."""
    if not old.resolved:
        return "planned by an earlier version, whose run ids hashed preset and dataset names, not content"
    parts = []
    if old.resolved.get("dataset") != new.resolved.get("dataset"):
        parts.append(f"dataset content {str(old.resolved.get('dataset'))[:12]} -> "
                     f"{str(new.resolved.get('dataset'))[:12]}")  # fmt: skip
    for what, key in (("loss weights", "loss_weights"), ("model", "model")):
        diff = _dict_diff(old.resolved.get(key) or {}, new.resolved.get(key) or {})
        if diff:
            parts.append(f"{what} {diff}")
    skip = (*RESOLVED_FIELDS, *NOT_IN_RUN_ID)
    diff = _dict_diff({k: v for k, v in old.config.items() if k not in skip},
                      {k: v for k, v in new.config.items() if k not in skip})  # fmt: skip
    if diff:
        parts.append(f"recipe {diff}")
    return "; ".join(parts) or "the evaluation changed"


def _dict_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """`key old -> new` for each key whose value differs (absent: -)."""
    keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
    return ", ".join(f"{k} {old.get(k, '-')} -> {new.get(k, '-')}" for k in keys)


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


def reset_for_rerun(store: Storage, study: str, run: str, fresh: bool = False) -> None:
    """Forget a finished run's record and results so that it runs again: resumed from its checkpoints
    (kept, with the history of their epochs), or from scratch when `fresh` (checkpoints deleted too)."""
    where = RunLocation(study, run)
    kept = {where.plan_key} if fresh else {where.plan_key, where.artifact("history.csv")}
    prefixes = (where.checkpoint_prefix, where.artifact_prefix) if fresh else (where.artifact_prefix,)
    for prefix in prefixes:
        for key in store.list(prefix):
            if key not in kept:
                store.delete(key)


def prepare_dataset(store: Storage, study: Study, allow_local_path: bool, cache_dir: Any = None,
                    materialize: bool = True) -> dict[str, Any]:  # fmt: skip
    """Check the study's dataset and make it available to the runs; returns what `Study.bind_dataset`
    takes: {"name", "ref" (what a run's plan names: a stored dataset, or the folder a run reads),
    "identity" (the content the run ids hash), "layout", "splits", "leakage", "skipped"}.

    A synthetic dataset is generated and uploaded once (its identity is its parameters: generation is
    deterministic); a stored one must exist (its manifest is read, so that a missing dataset is refused
    before anything is queued); a local folder (only `--local`) is checked like an upload, under the spec's
    `leaks` policy, and runs read a view of exactly the files its check kept (services.datasets.local_view).
    Each must hold the splits the spec trains, selects and reports on (`check_splits`). `materialize`
    False (a dry run) generates, uploads and links nothing.
    """
    ref = study.spec.dataset
    if isinstance(ref, SyntheticRef):
        name = dataset_name(ref)
        s = ref.synthetic
        counts = {"train": s.n_train, "val": s.n_val, "test": s.n_test}
        check_splits(study, name, [split for split, n in counts.items() if n > 0])  # before generating it
        manifest: dict[str, Any] = {"splits": {k: v for k, v in counts.items() if v}, "layout": "vcip2020"}
        if materialize:
            manifest = ensure_synthetic(store, name, n_train=s.n_train, n_val=s.n_val, n_test=s.n_test,
                                        size=s.size, seed=s.seed)  # fmt: skip
        return dataset_info(name, name, name, manifest)
    if is_local_path(ref):
        if not allow_local_path:
            raise ValueError(
                f"dataset: {ref!r} is a local folder, which workers cannot read; upload it with "
                f"`python jobs/submit.py dataset upload {ref} --name NAME` and put `dataset: NAME` in the "
                "spec "
                "(or run the study with --local)"
            )
        root = Path(ref).expanduser()
        layout = study.spec.recipe.layout or "auto"
        check_splits(study, ref, available_splits(root, layout))
        manifest = build_manifest(root, "local", study.spec.leaks)
        check_splits(study, ref, list(manifest["splits"]))  # a split whose pairs were all dropped as leaks
        view = local_view(root, manifest, cache_dir) if materialize else root.resolve()
        return {**dataset_info(ref, str(view), manifest["hash"], manifest), "source": str(root.resolve())}
    manifest = read_manifest(store, ref)
    check_splits(study, ref, list(manifest["splits"]))
    return dataset_info(ref, ref, manifest["hash"], manifest)


def dataset_info(name: str, ref: str, identity: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """What a study records of its dataset (Study.dataset_info), from its manifest."""
    return {"name": name, "ref": ref, "identity": identity, "layout": manifest.get("layout"),
            "splits": manifest.get("splits"), "leakage": manifest.get("leakage"),
            "skipped": len(manifest.get("skipped") or [])}  # fmt: skip


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


class NotFound(LookupError):
    """A study, run, report or checkpoint that the store does not hold; the message says what it does
    hold (the command line's exit code 4)."""


def find_study(store: Storage, name: str) -> Study:
    """The study named `name`, or NotFound naming the studies in the store and the closest one."""
    try:
        return load_study(store, name)
    except ValueError:
        known = list_studies(store)
        listing = f"studies in {store!r}: {', '.join(known)}" if known else f"no studies in {store!r}"
        close = closest(name, known)
        hint = f"did you mean {close!r}? " if close else ""
        raise NotFound(f"unknown study {name!r}; {hint}{listing}") from None


def study_overview(store: Storage) -> list[dict[str, Any]]:
    """One row per study in the store: its name, its number of runs and how many are in each state."""
    rows = []
    for name in list_studies(store):
        study = load_study(store, name)
        counts = Counter(s["state"] for s in study_statuses(store, study))
        rows.append({"study": name, "runs": len(study.runs), **{state: counts[state] for state in State}})
    return rows


def open_user_store(url: str | None = None, *, local: bool = False, create_bucket: bool = False) -> Storage:
    """The store a person's command reaches: `url`, else `store_url(local)`, with the interactive S3 retry
    budget (colormamba.storage_s3.INTERACTIVE_RETRY_SECONDS: "the store is down" within seconds; workers
    wait COLORMAMBA_S3_RETRY_SECONDS). Only writers create the bucket, so that a mistyped bucket is an
    error when reading.

    Raises:
        ValueError: the store is misconfigured (nothing is asked of a server before the first read).
    """
    from colormamba.storage_s3 import open_store

    try:
        return open_store(url or store_url(local=local), create_bucket=create_bucket, interactive=True)
    except StorageError as exc:
        raise ValueError(str(exc)) from None
