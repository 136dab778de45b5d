"""What a person's commands do to a study on the queue (`jobs/submit.py`, which only parses, calls these
and prints): queue its runs, cancel them, have its report rebuilt and download it, download a run's
checkpoint. `--local` is services.local; the records are services.studies.

A layer above the records (services.studies, services.runs) and beside services.local; the tasks are
queued by name (services.app), so nothing here imports the task bodies or torch. Errors are typed for
the command line's exit codes: services.studies.NotFound, NotConfirmed, RebuildFailed, ValueError (bad
input), services.coord.BrokerUnreachable and colormamba.storage.StorageError (unreachable).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from colormamba.storage import ObjectNotFound, RunLocation, Storage, write_files_atomically
from services.runs import DONE, FINAL, State, mark_cancelled, mark_queued, read_status
from services.settings import settings
from services.spec import RunPlan, Study
from services.studies import NotFound, prepare_dataset, reset_for_rerun, save_study, should_start

if TYPE_CHECKING:
    from services.coord import Coordinator

AGGREGATE_WAIT_S = 600  # how long `report --rebuild` waits for the aggregator


class NotConfirmed(Exception):
    """More runs than the caller's limit and no yes for them: nothing was queued. `asked`: whether
    someone was asked (and said no) or nobody could be (no terminal)."""

    def __init__(self, count: int, limit: int, asked: bool) -> None:
        super().__init__(f"{count} runs is more than {limit}" + ("; the answer was no" if asked else ""))
        self.count, self.limit, self.asked = count, limit, asked


class RebuildFailed(RuntimeError):
    """The aggregator did not rebuild the report (it failed, or did not answer in time)."""


def user_coordinator() -> Coordinator:
    """Redis at COLORMAMBA_REDIS_URL, checked: raises services.coord.BrokerUnreachable naming the URL
    (without its password) and what to do."""
    from services.coord import Coordinator, connect

    return Coordinator(connect(settings().redis_url))


def confirm_queueing(count: int, limit: int, ask: Callable[[str], str] | None) -> None:
    """A study of more than `limit` runs needs a yes before it is queued (counted before its grid is
    expanded, finished runs included: services.spec.run_count): `ask(prompt)` must answer `y` or `yes`
    (any case). With `ask` None (nobody at a terminal to answer) it is refused. Raises NotConfirmed."""
    if count <= limit:
        return
    if ask is None:
        raise NotConfirmed(count, limit, asked=False)
    if ask(f"the study has {count} runs, more than {limit} (finished ones are not run again); queue it? "
           "[y/N] ").strip().lower() not in ("y", "yes"):  # fmt: skip
        raise NotConfirmed(count, limit, asked=True)


@dataclass(frozen=True)
class Queued:
    """What `queue_study` did: runs sent to the queue, runs left alone because a worker holds them, and
    runs left alone because a message for them is out already (another submission queued them)."""

    queued: int
    running: int
    already: int = 0


def confirm_fresh_start(store: Storage, study: Study, start: Iterable[RunPlan],
                        ask: Callable[[str], str] | None) -> None:  # fmt: skip
    """`--fresh` deletes the checkpoints of the finished runs among `start` (hours of training, maybe):
    it needs a yes, like a large queueing. Raises FreshNotConfirmed."""
    runs = sum(1 for r in start if (read_status(store, study.name, r.run_id) or {}).get("state") in FINAL)
    if runs == 0:
        return
    if ask is None or ask(f"delete the checkpoints of {runs} run(s) and train them from scratch? [y/N] "
                          ).strip().lower() not in ("y", "yes"):  # fmt: skip
        raise FreshNotConfirmed(runs, asked=ask is not None)


class FreshNotConfirmed(Exception):
    """`--fresh` without a yes: nothing was deleted or queued."""

    def __init__(self, runs: int, asked: bool) -> None:
        super().__init__(f"--fresh would delete the checkpoints of {runs} run(s)" + ("; the answer was no"
                         if asked else "; pass --yes to confirm without a terminal"))  # fmt: skip
        self.runs, self.asked = runs, asked


def queue_study(store: Storage, coord: Coordinator, study: Study, start: Iterable[RunPlan],
                rerun: str, fresh: bool = False) -> Queued:  # fmt: skip
    """Queue the runs `start` (services.studies.select_runs' choice) of `study`: the dataset made
    available to workers (a local folder refused), the study's records saved, then each run that no
    worker holds and that `rerun` still starts (its status read afresh: it may have ended since) claimed
    in Redis (services.coord.Coordinator.mark_queued: of two submissions at once, one sends it), reset
    if it had ended (resumed from its checkpoints, or from scratch when `fresh`), recorded `queued` and
    sent, ahead of fresh runs when it resumes.

    `queued` is written before the message goes out: once it is sent, only the worker writes the status,
    so a run that starts and ends at once is never set back to `queued`.

    Raises:
        ValueError: the dataset is missing, a local folder, or lacks a split (nothing was queued).
    """
    from services.coord import run_key

    if not study.dataset_info:  # bound by the caller when it showed the dataset's check already
        try:
            study = study.bind_dataset(prepare_dataset(store, study, allow_local_path=False))
        except ValueError as exc:
            raise ValueError(f"{exc}\nnothing was queued") from None
        chosen = {(r.variant, r.seed) for r in start}  # the same runs, under their bound ids
        start = [r for r in study.runs if (r.variant, r.seed) in chosen]
    save_study(store, study)
    queued = running = already = 0
    for run in start:
        key = run_key(study.name, run.run_id)
        if coord.holder(key) is not None:  # a worker has it right now; nothing to send
            running += 1
            continue
        status = read_status(store, study.name, run.run_id)
        if not should_start(status, rerun):
            continue
        if not coord.mark_queued(key):
            already += 1
            continue
        try:
            _send(store, study.name, run, status, fresh)
        except BaseException:
            coord.unmark_queued(key)
            raise
        queued += 1
    return Queued(queued, running, already)


def _send(store: Storage, study: str, run: RunPlan, status: dict[str, Any] | None, fresh: bool) -> None:
    """Reset a finished run, record the run `queued` and send its message (the caller claimed it)."""
    from services.app import queue_run

    ended = status is not None and status.get("state") in FINAL
    resumes = bool(status and status.get("checkpoint_saved_epoch")) and not (fresh and ended)
    if ended:
        reset_for_rerun(store, study, run.run_id, fresh)
        status = None
    task_id = str(uuid.uuid4())
    mark_queued(store, study, run.run_id, status, task_id=task_id, variant=run.variant, seed=run.seed)
    queue_run(study, run.run_id, task_id=task_id, resumes=resumes)


def cancel_targets(study: Study, run: str | None = None) -> list[str]:
    """The runs a cancel of `study` (every run) or of one `run` of it addresses; NotFound for a run the
    study does not have, naming those it has."""
    runs = [r.run_id for r in study.runs]
    if not run:
        return runs
    if run not in runs:
        raise NotFound(f"study {study.name} has no run {run!r}; runs: {', '.join(runs)}")
    return [run]


@dataclass(frozen=True)
class Cancel:
    """A cancel's effect on one run: `was` the state it was cancelled in at once (queued, or lost: no
    worker on it), or None when only the request went out (a worker stops it within a few steps)."""

    run: str
    was: str | None


def cancel_runs(store: Storage, coord: Coordinator, study: str, runs: Iterable[str]) -> list[Cancel]:
    """Cancel the `runs` of `study` that have a record and have not ended: each gets the cancel flag,
    and one that no worker holds and that waits (queued, or lost) is recorded `cancelled` at once."""
    from services.coord import run_key

    done = []
    for run in runs:
        status = read_status(store, study, run)
        state = status.get("state") if status else None
        if status is None or state in DONE:
            continue
        key = run_key(study, run)
        coord.request_cancel(key)
        if coord.holder(key) is None and state in (State.QUEUED, State.LOST):
            waiting = "queued" if state == State.QUEUED else "waiting to be taken again"
            mark_cancelled(store, study, run, status, f"cancelled while {waiting}")
            coord.mark_done(key)
            done.append(Cancel(run, state))
        else:
            done.append(Cancel(run, None))
    return done


def rebuild_report(store: Storage, study: str, local: bool) -> None:
    """Rebuild the study's report: here (`local`), else by the aggregator, waiting for it (Redis is
    checked first: BrokerUnreachable rather than a wait). Raises RebuildFailed when the aggregator fails or
    does not answer within AGGREGATE_WAIT_S."""
    if local:
        from services.report import build_report

        build_report(store, study)
        return
    user_coordinator()
    from services.app import app, queue_aggregate

    try:
        app.AsyncResult(queue_aggregate(study)).get(timeout=AGGREGATE_WAIT_S)
    except Exception as exc:
        raise RebuildFailed(f"the aggregator did not rebuild the report: {exc}") from None


def download_study_report(store: Storage, study: str, out: Path) -> list[str]:
    """Copy the study's report files into the folder `out`; returns their names. NotFound when the
    study has no report yet."""
    from services.report import download_report

    try:
        return download_report(store, study, out)
    except ValueError as exc:
        raise NotFound(str(exc)) from None


@dataclass(frozen=True)
class Download:
    """A file copied from the store: its key, where it was written, its size in bytes."""

    key: str
    path: Path
    size: int


def download_checkpoint(store: Storage, study: str, run: str, which: str, out: Path) -> Download:
    """A run's `best` or `last` checkpoint (checksum-verified by the store) written atomically to `out`,
    or to `out/RUN-WHICH.pt` when `out` is a folder: a failed write (LocalWriteError, naming the file)
    leaves no partial file. NotFound when the run has no such checkpoint (saying whether it has the other
    one)."""

    location = RunLocation(study, run)
    try:
        data = store.get_bytes(location.checkpoint(which))
    except ObjectNotFound:
        other = "last" if which == "best" else "best"
        hint = f"; it has a {other}.pt (--{other})" if store.exists(location.checkpoint(other)) else ""
        raise NotFound(f"run {study}/{run} has no {which}.pt in {store!r}{hint}") from None
    path = out / f"{run}-{which}.pt" if out.is_dir() else out
    write_files_atomically({path: data})
    return Download(location.checkpoint(which), path, len(data))
