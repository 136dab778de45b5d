"""A run's states, the transitions allowed between them, and the only code that writes a run's
`status.json` (its public record: state, reason, progress, final metrics).

Why one module: the record is written by `submit.py` (queued, cancelled), the worker (running, progress,
the outcome), the reaper (lost) and `--local`. Each writer used to build the dict by hand, so "what a
state means" (which fields it clears, which moves are legal) lived in ten places. Here a move is checked
against the writer's last view of the record, and entering a state sets the fields that go with it.

States:
- queued: submitted, waiting in the run queue.
- running: a worker holds the run's lease and trains or evaluates it (progress, ETA).
- lost: the worker that took it stopped renewing its lease (killed, out of memory, cut off from Redis, or
  its store failed): the run waits to be taken again, the reaper having queued it once. No ETA.
- succeeded, failed: final (`failed` says why). A rerun deletes the record first.
- cancelled: stopped on request, checkpoint kept; submitting the study again resumes it.
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from typing import Any

from colormamba.storage import ObjectNotFound, RunLocation, Storage


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    LOST = "lost"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


RERUN_CHOICES = ("none", "failed", "all")  # `submit --rerun`: which finished runs run again
FINAL = frozenset({State.SUCCEEDED, State.FAILED})  # never executed again unless a rerun is asked for
DONE = FINAL | {State.CANCELLED}  # nothing is running or waiting

# state -> the states a writer may move it to (None: the run has no record yet)
TRANSITIONS: dict[State | None, frozenset[State]] = {
    None: frozenset({State.QUEUED}),
    # lost: a worker took it and stopped before it could record it running; failed: --local's process
    # died before recording its outcome
    State.QUEUED: frozenset({State.QUEUED, State.RUNNING, State.LOST, State.CANCELLED, State.FAILED}),
    # queued: a resubmitted leftover that no worker holds (services.studies.select_runs)
    State.RUNNING: frozenset(
        {State.RUNNING, State.SUCCEEDED, State.FAILED, State.CANCELLED, State.LOST, State.QUEUED}
    ),
    # lost again: the next execution stopped before recording it running (its store failing, say)
    State.LOST: frozenset({State.RUNNING, State.QUEUED, State.LOST, State.CANCELLED}),
    State.CANCELLED: frozenset({State.QUEUED}),
    State.SUCCEEDED: frozenset(),
    State.FAILED: frozenset(),
}


class IllegalTransition(ValueError):
    """A writer asked for a move the state machine does not allow (a bug, or a stale view of the run)."""


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def state_of(status: dict[str, Any] | None) -> State | None:
    """The state of a record (None for no record); an unknown state is refused with its value."""
    if not status or status.get("state") is None:
        return None
    try:
        return State(status["state"])
    except ValueError:
        raise IllegalTransition(f"unknown run state {status['state']!r}") from None


def check_transition(old: State | None, new: State, where: str = "run") -> None:
    allowed = TRANSITIONS[old]
    if new not in allowed:
        options = ", ".join(sorted(allowed)) or "none: it is final"
        raise IllegalTransition(f"{where}: cannot go from {old or 'no record'} to {new} (allowed: {options})")


def read_status(store: Storage, study: str, run: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.get_bytes(RunLocation(study, run).status_key))
    except ObjectNotFound:
        return None


def _entering(state: State) -> dict[str, Any]:
    """The fields that go with entering `state` (the caller's fields come on top)."""
    if state is State.QUEUED:
        return {"queued_at": now(), "reason": None}
    if state is State.RUNNING:
        return {"reason": None}
    if state is State.LOST:
        return {"eta_s": None, "step": None}
    if state in DONE:
        return {"finished_at": now(), "eta_s": None}
    return {}


def transition(store: Storage, study: str, run: str, previous: dict[str, Any] | None, state: State | str,
               **fields: Any) -> dict[str, Any]:  # fmt: skip
    """Write the run's record in `state`, moved from `previous` (the writer's last view of it, whose
    other fields are kept) with `fields` on top; returns the record written.

    Raises:
        IllegalTransition: the move is not in TRANSITIONS.
    """
    state = State(state)
    old = state_of(previous)
    check_transition(old, state, f"run {study}/{run}")
    base = dict(previous or {})
    if old is not state:
        base |= _entering(state)
    status = {**base, **fields, "state": state.value, "study": study, "run": run, "updated_at": now()}
    store.put_bytes(RunLocation(study, run).status_key, json.dumps(status, indent=1).encode())
    return status


def mark_queued(store: Storage, study: str, run: str, previous: dict[str, Any] | None,
                **fields: Any) -> dict[str, Any]:  # fmt: skip
    return transition(store, study, run, previous, State.QUEUED, **fields)


def mark_running(store: Storage, study: str, run: str, previous: dict[str, Any] | None,
                 **fields: Any) -> dict[str, Any]:  # fmt: skip
    """Taken up by a worker, or a progress update of the running run."""
    return transition(store, study, run, previous, State.RUNNING, **fields)


def mark_succeeded(store: Storage, study: str, run: str, previous: dict[str, Any] | None,
                   **fields: Any) -> dict[str, Any]:  # fmt: skip
    return transition(store, study, run, previous, State.SUCCEEDED, **fields)


def mark_failed(store: Storage, study: str, run: str, previous: dict[str, Any] | None, reason: str,
                **fields: Any) -> dict[str, Any]:  # fmt: skip
    return transition(store, study, run, previous, State.FAILED, reason=reason, **fields)


def mark_cancelled(store: Storage, study: str, run: str, previous: dict[str, Any] | None, reason: str,
                   **fields: Any) -> dict[str, Any]:  # fmt: skip
    return transition(store, study, run, previous, State.CANCELLED, reason=reason, **fields)


def mark_lost(store: Storage, study: str, run: str, previous: dict[str, Any] | None, reason: str,
              **fields: Any) -> dict[str, Any]:  # fmt: skip
    return transition(store, study, run, previous, State.LOST, reason=reason, **fields)


def lost_reason(worker: str | None, error: str | None) -> str:
    """What a `lost` record says: what happens next first (`submit.py status` shows the start of it),
    then who lost it and why, if known."""
    who = f"worker {worker}" if worker else "its worker"
    why = f"stopped: {error}" if error else "stopped renewing its lease (killed, crashed or cut off)"
    return f"waiting to be taken again (it resumes from its last checkpoint): {who} {why}"
