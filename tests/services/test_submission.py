"""services.submission against a real redis-server and a folder store: the confirmation rule, which runs
a queueing sends (each recorded `queued` before its message goes), what a cancel does to each state, and
a checkpoint download. The command line's messages and exit codes: tests/jobs/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

import services.app
from colormamba.storage import LocalStorage, RunLocation, spec_key
from services.celeryconfig import broker_transport_options
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
from tests.support.servers import REPO, queued_tasks
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
    assert prompts == ["the study has 12 runs, more than 5 (finished ones are not run again); queue it? "
                       "[y/N] "]


def test_queueing_sends_the_runs_still_to_start_each_recorded_queued_before_its_message(
    demo: tuple[LocalStorage, Study], coord: Coordinator, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Of the runs select_runs chose: one a worker holds is left to it, one that ended meanwhile is not
    sent, a failed one under `--rerun failed` is reset (its checkpoint kept: it resumes, ahead of fresh
    runs) and sent, a new one is sent."""
    store, study = demo
    held, ended, fresh, failed = (r.run_id for r in study.runs)
    record_status(store, "demo", failed, {"state": "failed", "reason": "S3", "checkpoint_saved_epoch": 3})
    store.put_bytes(RunLocation("demo", failed).checkpoint("last"), b"weights")
    start, keep = select_runs(store, study, "failed")
    assert (len(start), keep) == (4, [])
    record_status(store, "demo", ended, {"state": "succeeded"})  # it ended after select_runs read it
    lease = Coordinator(connect(redis_url)).acquire(run_key("demo", held), "gpu9")
    assert lease is not None
    sent: list[tuple[str, str | None, dict[str, Any] | None]] = []
    resumed: list[str] = []

    def record_send(study_name: str, run: str, task_id: str | None = None, resumes: bool = False) -> str:
        sent.append((run, task_id, read_status(store, study_name, run)))
        resumed.extend([run] if resumes else [])
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
    assert store.get_bytes(RunLocation("demo", failed).checkpoint("last")) == b"weights", "kept to resume"
    assert resumed == [failed]
    assert store.exists(spec_key("demo"))


def test_a_fresh_rerun_deletes_the_checkpoints_and_results_and_sends_the_run_as_fresh(
    demo: tuple[LocalStorage, Study], coord: Coordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, study = demo
    failed = study.runs[0].run_id
    where = RunLocation("demo", failed)
    record_status(store, "demo", failed, {"state": "failed", "reason": "NaN", "checkpoint_saved_epoch": 3})
    for key in (where.checkpoint("last"), where.artifact("history.csv"), where.artifact("per_image.csv")):
        store.put_bytes(key, b"x")
    resumed: list[bool] = []
    monkeypatch.setattr(services.app, "queue_run", lambda *_, resumes=False, **__: resumed.append(resumes))
    start, _ = select_runs(store, study, "failed")
    assert queue_study(store, coord, study, start, "failed", fresh=True).queued == 4
    assert store.list(where.checkpoint_prefix) == [], "from scratch"
    assert sorted(store.list(where.artifact_prefix)) == [where.plan_key, where.status_key]
    assert resumed == [False] * 4


def test_two_submissions_at_once_send_each_run_once(
    demo: tuple[LocalStorage, Study], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both read every run as unsubmitted, then race: each run is claimed in one Redis call, so exactly
    one of them records and sends it, and the other counts it as queued already."""
    store, study = demo
    sent: list[str] = []
    monkeypatch.setattr(services.app, "queue_run", lambda _study, run, **_: sent.append(run))
    start, _ = select_runs(store, study)
    barrier = threading.Barrier(2)

    def submission() -> Queued:
        coord = Coordinator(connect(redis_url))  # each its own connection, like two processes
        barrier.wait()
        return queue_study(store, coord, study, start, "none")

    with ThreadPoolExecutor(2) as pool:
        results = [f.result(60) for f in [pool.submit(submission) for _ in range(2)]]
    assert sorted(sent) == sorted(r.run_id for r in study.runs), "each run sent exactly once"
    assert sum(r.queued for r in results) == 4 and sum(r.already for r in results) == 4, results
    again = queue_study(store, Coordinator(connect(redis_url)), study, start, "none")
    assert again == Queued(queued=0, running=0, already=4) and len(sent) == 4


def test_a_resumed_run_is_taken_before_fresh_runs_queued_earlier(tmp_path: Path, redis_url: str) -> None:
    """Four fresh runs are queued, then a lost one is queued again (the reaper's send): a worker's next
    message is the resumed run. The messages go through the real app, broker and kombu transport."""
    sender = (
        "from services.app import queue_run\n"
        "for i in range(4): queue_run('s', f'fresh{i}')\n"
        "queue_run('s', 'lost', resumes=True)\n"
    )
    env = {**os.environ, "COLORMAMBA_REDIS_URL": redis_url}
    subprocess.run([sys.executable, "-c", sender], check=True, env=env, cwd=REPO, timeout=120)
    assert [args[1] for _, args in queued_tasks(redis_url, "gpu")] == ["lost", "fresh0", "fresh1", "fresh2",
                                                                       "fresh3"]  # fmt: skip
    from kombu import Connection

    with Connection(redis_url, transport_options=broker_transport_options) as conn:
        taken = conn.SimpleQueue("gpu", no_ack=True).get(timeout=5)
    assert taken.headers["task"] == "services.tasks.run" and json.loads(taken.body)[0] == ["s", "lost"]


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
