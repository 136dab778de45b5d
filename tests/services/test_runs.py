"""services.runs: the run states, the moves between them, and that nothing else writes status.json."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

from colormamba.storage import LocalStorage, RunLocation
from services.runs import (
    DONE,
    FINAL,
    TRANSITIONS,
    IllegalTransition,
    State,
    mark_cancelled,
    mark_failed,
    mark_lost,
    mark_queued,
    mark_running,
    mark_succeeded,
    read_status,
    transition,
)

ROOT = Path(__file__).resolve().parents[2]
STUDY, RUN = "study", "run-1"


def at(store: LocalStorage, state: State) -> dict:
    """A record in `state`, reached by the moves a run really makes."""
    status = mark_queued(store, STUDY, RUN, None, variant="original", seed=0)
    if state is State.QUEUED:
        return status
    status = mark_running(store, STUDY, RUN, status, worker="gpu0", eta_s=60)
    if state is not State.RUNNING:
        status = transition(store, STUDY, RUN, status, state, reason="why")
    return status


@pytest.mark.parametrize(("old", "new"), list(itertools.product(list(State), list(State))), ids=str)
def test_every_move_is_allowed_exactly_when_the_table_says(tmp_path: Path, old: State, new: State) -> None:
    store = LocalStorage(tmp_path)
    before = at(store, old)
    if new in TRANSITIONS[old]:
        after = transition(store, STUDY, RUN, before, new, reason="moved")
        assert read_status(store, STUDY, RUN) == after and after["state"] == new
        return
    with pytest.raises(IllegalTransition) as info:
        transition(store, STUDY, RUN, before, new, reason="moved")
    assert f"run {STUDY}/{RUN}: cannot go from {old} to {new}" in str(info.value)
    assert read_status(store, STUDY, RUN) == before, "an illegal move writes nothing"


def test_a_record_starts_queued_and_final_states_are_final(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    for state in State:
        if state is not State.QUEUED:
            with pytest.raises(IllegalTransition, match="cannot go from no record"):
                transition(store, STUDY, RUN, None, state)
    assert read_status(store, STUDY, RUN) is None
    assert set(FINAL) == {State.SUCCEEDED, State.FAILED}
    assert set(DONE) == {State.SUCCEEDED, State.FAILED, State.CANCELLED}
    for state in FINAL:
        assert TRANSITIONS[state] == frozenset(), f"{state} is never left (a rerun deletes the record)"
    for state in set(State) - FINAL:
        assert State.QUEUED in TRANSITIONS[state] or state is State.QUEUED, f"{state} can be resubmitted"


def test_entering_a_state_sets_what_goes_with_it(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    queued = mark_queued(store, STUDY, RUN, None, variant="original", seed=0)
    assert queued["queued_at"] and queued["reason"] is None
    assert (queued["study"], queued["run"]) == (STUDY, RUN)
    running = mark_running(store, STUDY, RUN, queued, worker="gpu0@host (pid 7)", eta_s=120, epoch=1)
    progress = mark_running(store, STUDY, RUN, running, eta_s=60, epoch=2)
    assert (progress["eta_s"], progress["epoch"], progress["worker"]) == (60, 2, "gpu0@host (pid 7)")
    lost = mark_lost(store, STUDY, RUN, progress, "worker gpu0 stopped")
    assert lost["eta_s"] is None, "a run nobody trains has no ETA"
    assert (lost["reason"], lost["epoch"], lost["worker"]) == ("worker gpu0 stopped", 2, "gpu0@host (pid 7)")
    again = mark_running(store, STUDY, RUN, lost, worker="gpu1", eta_s=30)
    assert again["reason"] is None, "taken up again: the lost reason is gone"
    done = mark_succeeded(store, STUDY, RUN, again, metrics={"psnr": 20.0})
    assert done["finished_at"] and done["eta_s"] is None and done["metrics"] == {"psnr": 20.0}
    assert read_status(store, STUDY, RUN) == done

    other = LocalStorage(tmp_path / "other")
    failed = mark_failed(other, STUDY, RUN, at(other, State.RUNNING), "TrainingDiverged: loss is nan")
    assert failed["state"] == "failed" and failed["reason"] == "TrainingDiverged: loss is nan"
    queued = mark_queued(other, "s2", RUN, None)
    cancelled = mark_cancelled(other, "s2", RUN, queued, "cancelled while queued")
    assert cancelled["finished_at"] and cancelled["reason"] == "cancelled while queued"
    resumed = mark_queued(other, "s2", RUN, cancelled)
    assert resumed["state"] == "queued" and resumed["reason"] is None, "submitted again: it resumes"


def _writers_of_status(path: Path) -> list[str]:
    """Places in a module that spell the status object's key: a string (or f-string part) that is
    `status.json` or ends in `/status.json`, or RunLocation.status_key. Messages that mention the file
    are not keys."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value == "status.json" or node.value.endswith("/status.json"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr == "status_key":
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .status_key")
    return found


def test_only_services_runs_spells_the_status_key() -> None:
    """Every status write goes through services/runs.py: no other module of the job suite, the CLI or
    the library names the status object (colormamba/storage.py defines the key, runs.py uses it)."""
    assert _writers_of_status(ROOT / "services" / "runs.py"), "the check finds the one writer"
    others = [
        hit
        for folder in ("services", "jobs", "colormamba", "benchmarks")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != ROOT / "services" / "runs.py"
        for hit in _writers_of_status(path)
    ]
    defined = [hit for hit in others if hit.startswith("colormamba/storage.py")]
    assert len(defined) == 1 and RunLocation(STUDY, RUN).status_key == f"runs/{STUDY}/{RUN}/status.json"
    assert [hit for hit in others if hit not in defined] == []
