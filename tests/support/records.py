"""Run records for tests that need a study in some state: written through services.runs like every
record, by legal moves only (queued, then running, then the state asked for)."""

from __future__ import annotations

from typing import Any

from colormamba.storage import Storage
from services.runs import TRANSITIONS, State, read_status, state_of, transition


def record_status(store: Storage, study: str, run: str, status: dict[str, Any]) -> dict[str, Any]:
    """Bring the run's record to `status["state"]` with the other fields of `status` on top."""
    fields = dict(status)
    target = State(fields.pop("state"))
    current = read_status(store, study, run)
    for step in (State.QUEUED, State.RUNNING):
        if target in TRANSITIONS[state_of(current)]:
            break
        current = transition(store, study, run, current, step)
    return transition(store, study, run, current, target, **fields)
