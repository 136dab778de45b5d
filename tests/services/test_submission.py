"""services.submission against a real redis-server and a folder store: the confirmation rule, which runs
a queueing sends (each recorded `queued` before its message goes), what a cancel does to each state, and
a checkpoint download. The command line's messages and exit codes: tests/jobs/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import services.app
from colormamba.storage import LocalStorage, RunLocation, spec_key
from services.coord import Coordinator, connect, run_key
from services.runs import read_status
from services.spec import Study, load_spec, parse_spec
from services.studies import NotFound, save_study, select_runs
from services.submission import (
    Cancel,
    NotConfirmed,
    Queued,
    cancel_runs,
    cancel_targets,
    confirm_queueing,
    download_checkpoint,
    queue_study,
)
from tests.support.records import RUNNING, record_status
from tests.support.submit import DEMO, demo_with_seeds


@pytest.fixture
def demo(tmp_path: Path) -> tuple[LocalStorage, Study]:
    """The demo study with seeds 0 and 1 (its 4 runs), saved in a folder store."""
    store = LocalStorage(tmp_path / "store")
    study = load_spec(demo_with_seeds(tmp_path, [0, 1]))
    save_study(store, study)
    return store, study


@pytest.fixture
def coord(redis_url: str) -> Iterator[Coordinator]:
    yield Coordinator(connect(redis_url))


def test_up_to_the_limit_nobody_is_asked() -> None:
    def never(prompt: str) -> str:
        raise AssertionError(f"asked {prompt!r}")

    confirm_queueing(5, 5, never)
    confirm_queueing(5, 5, None)


def test_over_the_limit_with_nobody_to_ask_is_refused() -> None:
    with pytest.raises(NotConfirmed) as refused:
        confirm_queueing(6, 5, None)
    assert (refused.value.count, refused.value.limit, refused.value.asked) == (6, 5, False)


ANSWERS = [("y", True), (" YES\n", True), ("Yes", True), ("", False), ("n", False), ("yes please", False)]


@pytest.mark.parametrize(("answer", "confirmed"), ANSWERS)
def test_over_the_limit_only_y_or_yes_confirms(answer: str, confirmed: bool) -> None:
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return answer

    if confirmed:
        confirm_queueing(12, 5, ask)
    else:
        with pytest.raises(NotConfirmed) as refused:
            confirm_queueing(12, 5, ask)
        assert refused.value.asked
    assert prompts == ["queue 12 runs? [y/N] "]


def test_queueing_sends_the_runs_still_to_start_each_recorded_queued_before_its_message(
    demo: tuple[LocalStorage, Study], coord: Coordinator, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Of the runs select_runs chose: one a worker holds is left to it, one that ended meanwhile is not
    sent, a failed one under `--rerun failed` is reset (its checkpoint gone) and sent, a new one is sent."""
    store, study = demo
    held, ended, fresh, failed = (r.run_id for r in study.runs)
    record_status(store, "demo", failed, {"state": "failed", "reason": "TrainingDiverged"})
    store.put_bytes(RunLocation("demo", failed).checkpoint("last"), b"weights")
    start, keep = select_runs(store, study, "failed")
    assert (len(start), keep) == (4, [])
    record_status(store, "demo", ended, {"state": "succeeded"})  # it ended after select_runs read it
    lease = Coordinator(connect(redis_url)).acquire(run_key("demo", held), "gpu9")
    assert lease is not None
    sent: list[tuple[str, str | None, dict[str, Any] | None]] = []

    def record_send(study_name: str, run: str, task_id: str | None = None) -> str:
        sent.append((run, task_id, read_status(store, study_name, run)))
        return task_id or ""

    monkeypatch.setattr(services.app, "queue_run", record_send)
    try:
        done = queue_study(store, coord, study, start, "failed")
    finally:
        lease.release()
    assert done == Queued(queued=2, running=1)
    assert [run for run, _, _ in sent] == [fresh, failed]
    for run, task_id, status in sent:
        assert status is not None and status["state"] == "queued" and status["task_id"] == task_id, run
        assert run_key("demo", run) in coord.active()
    assert read_status(store, "demo", ended)["state"] == "succeeded"
    assert read_status(store, "demo", held) is None, "the held run's record is its worker's"
    assert not store.exists(RunLocation("demo", failed).checkpoint("last")), "a rerun starts from scratch"
    assert store.exists(spec_key("demo"))


def test_a_local_folder_dataset_queues_nothing(demo, coord, monkeypatch) -> None:
    store, _ = demo
    local = parse_spec({**yaml.safe_load(DEMO.read_text()), "study": "local", "dataset": "./some/folder"})
    monkeypatch.setattr(services.app, "queue_run", lambda *a, **k: pytest.fail("a message was sent"))
    with pytest.raises(ValueError, match=r"(?s)dataset upload ./some/folder.*\nnothing was queued$"):
        queue_study(store, coord, local, local.runs, "none")
    assert not store.exists(spec_key("local")) and coord.active() == []


def test_cancel_targets_every_run_or_one_the_study_has(demo) -> None:
    _, study = demo
    runs = [r.run_id for r in study.runs]
    assert cancel_targets(study) == cancel_targets(study, "") == runs
    assert cancel_targets(study, runs[1]) == [runs[1]]
    with pytest.raises(NotFound, match=f"study demo has no run 'nope'; runs: {', '.join(runs)}"):
        cancel_targets(study, "nope")


def test_cancel_ends_waiting_runs_at_once_and_asks_a_running_one_to_stop(demo, coord) -> None:
    store, study = demo
    queued, running, lost, succeeded = (r.run_id for r in study.runs)
    record_status(store, "demo", queued, {"state": "queued"})
    record_status(store, "demo", running, RUNNING)
    record_status(store, "demo", lost, {"state": "lost"})
    record_status(store, "demo", succeeded, {"state": "succeeded"})
    lease = coord.acquire(run_key("demo", running), "gpu1")
    assert lease is not None
    try:
        done = cancel_runs(store, coord, "demo", [r.run_id for r in study.runs])
    finally:
        lease.release()
    assert done == [Cancel(queued, "queued"), Cancel(running, None), Cancel(lost, "lost")]
    assert read_status(store, "demo", queued)["reason"] == "cancelled while queued"
    assert read_status(store, "demo", lost)["reason"] == "cancelled while waiting to be taken again"
    assert read_status(store, "demo", running)["state"] == "running", "its worker records the cancel"
    flagged = [r.run_id for r in study.runs if coord.cancel_requested(run_key("demo", r.run_id))]
    assert flagged == [queued, running, lost]


def test_cancel_leaves_runs_without_a_record_alone(demo, coord) -> None:
    store, study = demo
    assert cancel_runs(store, coord, "demo", [r.run_id for r in study.runs]) == []
    assert not any(coord.cancel_requested(run_key("demo", r.run_id)) for r in study.runs)


def test_checkpoint_download_names_the_other_checkpoint_and_writes_into_a_folder(demo, tmp_path) -> None:
    store, study = demo
    run = study.runs[0].run_id
    with pytest.raises(NotFound, match=f"run demo/{run} has no best.pt in ") as missing:
        download_checkpoint(store, "demo", run, "best", tmp_path)
    assert "it has" not in str(missing.value)
    store.put_bytes(RunLocation("demo", run).checkpoint("last"), b"last weights")
    with pytest.raises(NotFound, match=r"; it has a last\.pt \(--last\)$"):
        download_checkpoint(store, "demo", run, "best", tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    done = download_checkpoint(store, "demo", run, "last", out)
    assert done.path == out / f"{run}-last.pt" and done.path.read_bytes() == b"last weights"
    assert (done.key, done.size) == (RunLocation("demo", run).checkpoint("last"), len(b"last weights"))
    assert sorted(p.name for p in out.iterdir()) == [f"{run}-last.pt"], "no .part file left"
    file = download_checkpoint(store, "demo", run, "last", tmp_path / "new" / "w.pt")
    assert file.path.read_bytes() == b"last weights"
