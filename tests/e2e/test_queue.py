"""The queue with real parts: redis-server, SeaweedFS S3, real `celery worker` processes, `jobs/submit.py`
as a subprocess. End to end, and the fault tests of docs/system.md's guarantees."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from colormamba import checkpoint
from colormamba.config import RunConfig
from colormamba.data import PairedDataset, list_pairs
from colormamba.evaluate import predict_split
from colormamba.models import build_model_from_config
from colormamba.storage import RunLocation
from services.datasets import fetch_dataset
from services.epoch_log import epoch_line
from tests.support.polling import wait_until
from tests.support.servers import SeaweedS3, Worker, queued_tasks, stop_workers, unacked_task_ids
from tests.support.stack import Stack, make_stack
from tests.support.submit import DEMO, submit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory, redis_server, seaweed) -> Iterator[Stack]:
    """One GPU worker and one aggregator for the tests that only submit to them (each in a study of its
    own): starting a Celery worker costs seconds of two busy cores, so they are started once."""
    s = make_stack(tmp_path_factory.mktemp("shared_stack"), redis_server, seaweed)
    s.worker("gpu1")
    s.worker("agg", "aggregate")
    yield s
    stop_workers(s.workers)


SHORT_DEMO_RECIPE = {"epochs": 2, "batch_size": 4, "lr": 1.0e-3, "lr_step_epochs": 1}
SHORT_DEMO_DATA = {"synthetic": {"n_train": 16, "n_val": 6, "n_test": 6, "size": 32, "seed": 0}}


def write_spec(tmp: Path, name: str, **changes) -> Path:
    spec = yaml.safe_load(DEMO.read_text())
    spec["study"] = name
    for key, value in changes.items():
        spec[key] = value
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))  # keeps the configurations' order
    return path


def history_rows(stack: Stack, study: str, run: str) -> list[dict]:
    """The run's history.csv rows, numbers as numbers (as train.py emitted them)."""
    text = stack.store.get_bytes(RunLocation(study, run).artifact("history.csv")).decode()
    return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()}
            for row in csv.DictReader(io.StringIO(text))]  # fmt: skip


def epoch_lines(logs: str, study: str, run: str) -> list[str]:
    """The epoch lines (services.epoch_log) the workers logged for one run, without Celery's prefix."""
    mark = f"{study}/{run} epoch "
    return [line[line.index(mark) :] for line in logs.splitlines() if mark in line]


def task_lines(logs: str, task_id: str) -> list[str]:
    """What Celery logged about one task (received, succeeded, raised...)."""
    return [line for line in logs.splitlines() if f"Task services.tasks.run[{task_id}]" in line]


def report_json(stack: Stack, study: str) -> dict | None:
    try:
        return json.loads(stack.store.get_bytes(f"reports/{study}/report.json"))
    except KeyError:
        return None


def study_done(stack: Stack, study: str, n_runs: int, states=("succeeded",)):
    """The report lists every run in a final state (the aggregator ran after the last one)."""
    data = report_json(stack, study)
    if data and len(data["runs"]) == n_runs and all(r["state"] in states for r in data["runs"]):
        return data
    return None


# The fault tests' run: eight epochs of eight steps on 16x16 images, about a second an epoch on one core,
# so that a kill or an outage after epoch 1 or 2 lands in the middle of training with epochs to spare.
LONG_DATASET = {"synthetic": {"n_train": 16, "n_val": 2, "size": 16, "seed": 0}}
LONG_RECIPE = {"epochs": 8, "batch_size": 2, "lr": 1e-3}


# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def second_gpu_worker(shared_stack: Stack) -> Iterator[Worker]:
    """A second GPU worker on the shared stack for one test, stopped after it."""
    w = shared_stack.worker("gpu2")
    yield w
    w.stop()
    shared_stack.workers.remove(w)


def test_demo_study_end_to_end_with_duplicate_deliveries_and_two_workers(
    shared_stack, second_gpu_worker, tmp_path
):
    """Submit the demo study (shortened: 2 seeds, 2 epochs) to two GPU workers and an aggregator; every run
    finishes once; the report in S3 has one row per configuration and its metrics equal a recomputation
    from the checkpoints."""
    stack = shared_stack
    demo = write_spec(tmp_path, "demo", seeds=[0, 1], recipe=SHORT_DEMO_RECIPE, dataset=SHORT_DEMO_DATA)
    out = submit(str(demo), "--yes", env=stack.env)
    assert out.returncode == 0, out.stderr
    assert "queued 4 run(s)" in out.stdout
    # submitting again at once sends a second message for every run not yet held by a worker: the
    # lease and the final-state check must keep each run to one execution
    again = submit(str(demo), "--yes", env=stack.env)
    assert again.returncode == 0, again.stderr
    from services.spec import load_spec

    study = load_spec(demo)

    data = wait_until(
        "every run finished and reported", lambda: study_done(stack, "demo", 4), 300, 0.5, stack.logs
    )
    assert [r["variant"] for r in data["summary"]] == ["original", "histogram"]
    for run in study.runs:
        status = stack.status("demo", run.run_id)
        assert status["state"] == "succeeded" and status["attempt"] == 1, status
        rows = history_rows(stack, "demo", run.run_id)
        assert [h["epoch"] for h in rows] == [1, 2]
        # the worker's log: one line per epoch (not per step) with the values training recorded
        expected = [epoch_line(f"demo/{run.run_id}", {"epochs": 2, **h}) for h in rows]
        assert epoch_lines(stack.logs(), "demo", run.run_id) == expected

    # the report's metrics equal a recomputation from the stored checkpoints on the stored dataset
    store = stack.store
    root = fetch_dataset(store, data["dataset"], tmp_path / "verify_cache")
    split = PairedDataset(list_pairs(root, study.spec.evaluation.report_split), train=False)  # test
    for row in data["summary"]:
        values = {m: [] for m in ("psnr", "ssim", "ae", "mae")}
        for run in (r for r in study.runs if r.variant == row["variant"]):
            state = checkpoint.load(store, RunLocation("demo", run.run_id).checkpoint("best"))
            model = build_model_from_config(state["model_config"])
            model.load_state_dict(state["model"])
            cfg = RunConfig.from_dict({**run.config, "dataset": str(root)})
            pred = predict_split(model, split, cfg.protocol, torch.device("cpu"))
            for m in values:
                values[m] += pred.metrics[m].tolist()
        for m, v in values.items():
            assert row[f"{m}_mean"] == pytest.approx(sum(v) / len(v), abs=2e-4), (row["variant"], m)

    # resubmitting the same spec trains nothing again
    out = submit(str(demo), "--yes", env=stack.env)
    assert out.returncode == 0 and "0 to run, 4 already finished" in out.stdout, out.stdout
    assert all(stack.status("demo", r.run_id)["attempt"] == 1 for r in study.runs)

    listing = submit("status", "demo", env=stack.env)
    assert listing.returncode == 0 and listing.stdout.count("succeeded") >= 4
    got = submit("report", "demo", "-o", str(tmp_path / "report"), env=stack.env)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "report" / "report.html").exists()


def test_sigkill_mid_training_resumes_from_the_checkpoint_and_finishes_once(stack):
    spec = write_spec(
        stack.tmp,
        "killed",
        dataset=LONG_DATASET,
        recipe=LONG_RECIPE,
        seeds=[0],
        configurations={"original": {"loss": "original"}},
    )
    first = stack.worker("gpu1")
    stack.worker("agg", "aggregate")
    assert submit(str(spec), "--yes", env=stack.env).returncode == 0
    from services.spec import load_spec

    run = load_spec(spec).runs[0].run_id
    wait_until(
        "two epochs checkpointed",
        lambda: (
            (stack.status("killed", run) or {}).get("checkpoint_saved_epoch", 0)
            and stack.status("killed", run)["checkpoint_saved_epoch"] >= 2
        ),
        240,
        0.2,
        stack.logs,
    )
    killed_at = stack.status("killed", run)
    first.kill()
    started = time.monotonic()
    assert killed_at["state"] == "running" and killed_at["eta_s"] is not None
    # no run worker is up: the run shows as lost within the lease TTL (+ a reaper round) and waits,
    # queued once, not once per reaper round
    lost = wait_until("the run shown lost", lambda: state_is(stack, "killed", run, "lost"), 6 + 2 + 5, 0.1,
                      stack.logs)  # fmt: skip
    assert lost["eta_s"] is None and "waiting to be taken again" in lost["reason"]
    assert first.name in lost["reason"], "the reason names the dead worker"
    lost_after = time.monotonic() - started
    time.sleep(3 * 2)  # three more reaper rounds
    assert queued_tasks(stack.env["COLORMAMBA_REDIS_URL"], "gpu") == [("services.tasks.run", ["killed", run])]
    stack.worker("gpu2")  # a fresh worker (another machine, or the restarted container)
    data = wait_until(
        "the run finished after the kill", lambda: study_done(stack, "killed", 1), 300, 0.5, stack.logs
    )
    status = stack.status("killed", run)
    assert status["state"] == "succeeded"
    assert status["attempt"] == 2
    assert status["resumed_from_epoch"] >= killed_at["checkpoint_saved_epoch"]
    assert "gpu2" in status["worker"]
    history = stack.store.get_bytes(RunLocation("killed", run).artifact("history.csv")).decode()
    epochs = [int(r["epoch"]) for r in csv.DictReader(io.StringIO(history))]
    assert epochs == list(range(1, LONG_RECIPE["epochs"] + 1)), "each epoch once: resumed, not restarted"
    assert len(data["runs"]) == 1 and len(data["summary"]) == 1, "no duplicate report rows"
    print(f"lost {lost_after:.1f} s, resumed {time.monotonic() - started:.1f} s after the kill "
          "(lease TTL 6 s, reaper every 2 s)")  # fmt: skip


def test_cancel_a_queued_and_a_running_run(shared_stack):
    stack = shared_stack
    spec = write_spec(
        stack.tmp,
        "cancelled",
        dataset=LONG_DATASET,
        recipe={**LONG_RECIPE, "epochs": 500},  # runs until cancelled, however fast the machine
        seeds=[0, 1],
        configurations={"original": {"loss": "original"}},
    )
    assert submit(str(spec), "--yes", env=stack.env).returncode == 0
    from services.spec import load_spec

    runs = [r.run_id for r in load_spec(spec).runs]
    running = wait_until(
        "one run running",
        lambda: next(
            (r for r in runs if (stack.status("cancelled", r) or {}).get("checkpoint_saved_epoch")), None
        ),
        240,
        0.2,
        stack.logs,
    )
    queued = next(r for r in runs if r != running)
    assert stack.status("cancelled", queued)["state"] == "queued"

    out = submit("cancel", f"cancelled/{queued}", env=stack.env)
    assert out.returncode == 0 and "cancelled (was queued)" in out.stdout, out.stdout + out.stderr
    assert stack.status("cancelled", queued)["state"] == "cancelled"

    t0 = time.monotonic()
    out = submit("cancel", "cancelled", env=stack.env)
    assert out.returncode == 0 and "cancel requested" in out.stdout
    wait_until(
        "the running run cancelled",
        lambda: stack.status("cancelled", running)["state"] == "cancelled",
        60,
        0.2,
        stack.logs,
    )
    print(f"running run stopped {time.monotonic() - t0:.1f} s after cancel")
    assert stack.store.exists(RunLocation("cancelled", running).checkpoint("last")), "its checkpoint stays"
    # the queued run's message is consumed later (once the worker is free) and must not start it: wait
    # for that delivery itself rather than for a guessed time
    wait_until(
        "the cancelled run's message consumed",
        lambda: "'reason': 'already cancelled'" in stack.logs(),
        90,
        0.5,
        stack.logs,
    )
    assert stack.status("cancelled", queued)["state"] == "cancelled"
    assert "attempt" not in stack.status("cancelled", queued)
    # a cancel is a normal end: the running run's task succeeded in Celery's eyes, it did not fail
    lines = task_lines(stack.logs(), stack.status("cancelled", running)["task_id"])
    succeeded = [x for x in lines if " succeeded " in x]
    assert len(succeeded) == 1 and "'state': 'cancelled'" in succeeded[0], lines
    assert not [x for x in lines if " raised " in x], lines


def test_failing_runs_end_failed_with_their_reason_and_the_rest_finishes(shared_stack):
    stack = shared_stack
    spec = write_spec(
        stack.tmp,
        "failing",
        seeds=[0],
        configurations={
            "original": {"loss": "original"},
            "diverge": {"loss": "original", "recipe": {"lr": 1e30}},
            "vgg": {"loss": "vgg"},  # pretrained VGG weights are absent on this worker
        },
    )
    assert submit(str(spec), "--yes", env=stack.env).returncode == 0
    data = wait_until(
        "all runs ended",
        lambda: study_done(stack, "failing", 3, ("succeeded", "failed")),
        300,
        0.5,
        stack.logs,
    )
    by = {r["variant"]: r for r in data["runs"]}
    assert by["original"]["state"] == "succeeded"
    assert by["diverge"]["state"] == "failed" and "TrainingDiverged: loss is nan" in by["diverge"]["reason"]
    assert by["vgg"]["state"] == "failed" and "VGG-19 ImageNet weights not found" in by["vgg"]["reason"]
    assert_logged_as_failed(stack, "failing", by["diverge"]["run"], "TrainingDiverged: loss is nan")
    assert_logged_as_failed(stack, "failing", by["vgg"]["run"], "VGGWeightsNotFoundError: VGG-19 ImageNet")
    md = stack.store.get_bytes("reports/failing/report.md").decode()
    # a configuration whose runs all failed is one line with its reason
    assert "**Failed configuration** `diverge`" in md and "TrainingDiverged" in md
    assert "**Failed configuration** `vgg`" in md


def assert_logged_as_failed(stack: Stack, study: str, run: str, why: str) -> None:
    """The run's task failed in Celery's eyes: the worker's log says it raised (not "succeeded") with
    the reason, next to the runner's ERROR line; its message was taken once and acknowledged (not held
    for redelivery)."""
    task_id = stack.status(study, run)["task_id"]

    def raised() -> list[str]:
        return [x for x in task_lines(stack.logs(), task_id) if " raised " in x]

    (line,) = wait_until(f"{run}'s task logged as raised", raised, 60, 0.5, stack.logs)
    assert "raised expected: RunFailed(" in line and f"{study}/{run} failed: {why}" in line, line
    lines = task_lines(stack.logs(), task_id)
    assert not [x for x in lines if " succeeded " in x], lines
    assert len([x for x in lines if x.endswith(" received")]) == 1, lines
    assert any("ERROR" in x and f"{study}/{run} failed: {why}" in x for x in stack.logs().splitlines())
    # acknowledged by the worker's main process once the pool process reported the failure
    url = stack.env["COLORMAMBA_REDIS_URL"]
    wait_until(f"{run}'s message acknowledged", lambda: task_id not in unacked_task_ids(url), 10, 0.1,
               stack.logs)  # fmt: skip
    assert not queued_tasks(url, "gpu")


def test_s3_outage_during_training_is_retried_and_the_run_finishes(tmp_path, redis_server):
    """A private S3 server, stopped for a few seconds while the run trains and checkpoints."""
    s3 = SeaweedS3(tmp_path / "weed").start()
    stack = make_stack(tmp_path, redis_server, s3)
    try:
        spec = write_spec(
            tmp_path,
            "outage",
            dataset=LONG_DATASET,
            recipe=LONG_RECIPE,
            seeds=[0],
            configurations={"original": {"loss": "original"}},
        )
        stack.worker("gpu1")
        stack.worker("agg", "aggregate")
        assert submit(str(spec), "--yes", env=stack.env).returncode == 0
        from services.spec import load_spec

        run = load_spec(spec).runs[0].run_id
        wait_until(
            "training started",
            lambda: (stack.status("outage", run) or {}).get("checkpoint_saved_epoch"),
            240,
            0.2,
            stack.logs,
        )
        s3.stop()
        time.sleep(5)
        s3.start()
        data = wait_until("the run finished", lambda: study_done(stack, "outage", 1), 300, 0.5, stack.logs)
        status = stack.status("outage", run)
        assert status["state"] == "succeeded" and status["attempt"] == 1, "ridden out, not restarted"
        assert "retrying" in stack.logs(), "the outage was seen and retried"
        assert data["summary"][0]["psnr_mean"] is not None
    finally:
        stop_workers(stack.workers)
        s3.stop()


def state_is(stack: Stack, study: str, run: str, state: str) -> dict | None:
    status = stack.status(study, run)
    return status if status and status["state"] == state else None


def test_a_store_failure_mid_run_leaves_the_run_lost_with_its_reason_then_it_resumes(tmp_path, redis_server):
    """The S3 server stops mid-run for longer than the workers retry: the run can record nothing (not
    even its failure), so the worker leaves the reason in Redis and the run to the reaper. Once S3 is
    back, the run shows `lost` with that reason (never `queued` or `running` with nobody on it), is
    queued once, and a worker resumes it from its checkpoint."""
    s3 = SeaweedS3(tmp_path / "weed").start()
    stack = make_stack(tmp_path, redis_server, s3)
    stack.env["COLORMAMBA_S3_RETRY_SECONDS"] = "2"
    try:
        spec = write_spec(tmp_path, "storefail", dataset=LONG_DATASET, recipe=LONG_RECIPE, seeds=[0],
                          configurations={"original": {"loss": "original"}})  # fmt: skip
        first = stack.worker("gpu1")
        stack.worker("agg", "aggregate")
        assert submit(str(spec), "--yes", env=stack.env).returncode == 0
        from services.spec import load_spec

        run = load_spec(spec).runs[0].run_id
        wait_until("an epoch checkpointed",
                   lambda: (stack.status("storefail", run) or {}).get("checkpoint_saved_epoch"),
                   240, 0.2, stack.logs)  # fmt: skip
        before = stack.status("storefail", run)["checkpoint_saved_epoch"]
        s3.stop()
        wait_until("the run given up on the store",
                   lambda: "stopped without recording an outcome" in first.log.read_text(),
                   120, 0.2, stack.logs)  # fmt: skip
        first.stop()  # no run worker while S3 comes back: the state the reaper leaves stays visible
        s3.start()
        lost = wait_until("the run shown lost", lambda: state_is(stack, "storefail", run, "lost"), 60, 0.2,
                          stack.logs)  # fmt: skip
        assert "S3Unreachable" in lost["reason"] and "unreachable" in lost["reason"], lost["reason"]
        assert "gpu1" in lost["reason"] and lost["eta_s"] is None
        url = stack.env["COLORMAMBA_REDIS_URL"]
        wait_until("the run queued again", lambda: queued_tasks(url, "gpu"), 10, 0.1, stack.logs)  # at once
        time.sleep(3 * 2)  # three more reaper rounds
        assert queued_tasks(url, "gpu") == [("services.tasks.run", ["storefail", run])], "queued once"
        stack.worker("gpu2")
        wait_until("the run finished", lambda: study_done(stack, "storefail", 1), 300, 0.5, stack.logs)
        status = stack.status("storefail", run)
        assert status["state"] == "succeeded" and status["attempt"] == 2, status
        assert status["resumed_from_epoch"] >= before, (status, before)
    finally:
        stop_workers(stack.workers)
        s3.stop()


def test_a_worker_with_two_runs_per_gpu_trains_two_runs_at_once(stack):
    """COLORMAMBA_RUNS_PER_GPU=2: one worker takes both runs of a study, each in a pool process of its
    own, and their running intervals overlap; both finish."""
    spec = write_spec(
        stack.tmp,
        "pergpu",
        dataset=LONG_DATASET,
        recipe={**LONG_RECIPE, "epochs": 3},  # a few seconds a run: long enough to overlap clearly
        seeds=[0, 1],
        configurations={"original": {"loss": "original"}},
    )
    stack.worker("gpu1", env={"COLORMAMBA_RUNS_PER_GPU": "2"})
    assert submit(str(spec), "--yes", env=stack.env).returncode == 0
    from services.spec import load_spec

    runs = [r.run_id for r in load_spec(spec).runs]
    assert len(runs) == 2

    def states() -> list[str | None]:
        return [(stack.status("pergpu", r) or {}).get("state") for r in runs]

    wait_until("both runs running at once", lambda: states() == ["running", "running"], 120, 0.2, stack.logs)
    wait_until("both runs succeeded", lambda: states() == ["succeeded", "succeeded"], 120, 0.5, stack.logs)
    a, b = (stack.status("pergpu", r) for r in runs)
    # timestamps have whole seconds: a strict inequality means the intervals really overlap
    assert max(a["started_at"], b["started_at"]) < min(a["finished_at"], b["finished_at"]), (a, b)
    assert a["attempt"] == b["attempt"] == 1
    assert a["worker"].split(" (pid ")[0] == b["worker"].split(" (pid ")[0], "one worker took both"
    assert a["worker"] != b["worker"], "each run in a pool process of its own"
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert stack.logs().count(f"2 runs at once: {threads} CPU threads each") >= 2  # the cores shared out


def test_a_worker_whose_dataset_cache_is_full_hands_its_run_back_and_takes_no_more(
    tmp_path, redis_server, seaweed, small_disk
):
    """A GPU worker whose COLORMAMBA_DATA_CACHE is a full disk: the run it takes is handed back (never
    `failed`), it says which folder and variable, and it takes no second run; a worker with room then
    trains both runs."""
    from services.spec import load_spec
    from tests.support.disks import fill

    stack = make_stack(tmp_path, redis_server, seaweed)
    full = small_disk("256k")
    fill(full)
    try:
        spec = write_spec(tmp_path, "cachefull", dataset=LONG_DATASET, recipe={**LONG_RECIPE, "epochs": 1},
                          seeds=[0, 1], configurations={"original": {"loss": "original"}})  # fmt: skip
        stuck = stack.worker("gpufull", env={"COLORMAMBA_DATA_CACHE": str(full)})
        stack.worker("agg", "aggregate")
        assert submit(str(spec), "--yes", env=stack.env).returncode == 0
        runs = [r.run_id for r in load_spec(spec).runs]
        wait_until("the worker gave up its run", lambda: "takes no more runs" in stuck.log.read_text(), 120,
                   0.2, stack.logs)  # fmt: skip
        said = next(line for line in stuck.log.read_text().splitlines() if "takes no more runs" in line)
        assert str(full) in said and "COLORMAMBA_DATA_CACHE" in said, said
        handed = wait_until("the run shown waiting again",
                            lambda: next((s for r in runs if (s := stack.status("cachefull", r) or {})
                                          .get("state") == "lost"), None), 60, 0.2, stack.logs)  # fmt: skip
        assert "CacheFull" in handed["reason"] and str(full) in handed["reason"], handed["reason"]
        time.sleep(2 * 8)  # two reaper periods (lease TTL 6 s + a 2 s round): time to take another run
        received = [line for line in stuck.log.read_text().splitlines() if "Task services.tasks.run[" in line
                    and "received" in line.lower()]  # fmt: skip
        assert len(received) == 1, received
        stack.worker("gpu2")
        data = wait_until("both runs finished", lambda: study_done(stack, "cachefull", 2), 300, 0.5,
                          stack.logs)  # fmt: skip
        assert {r["state"] for r in data["runs"]} == {"succeeded"}
        assert "gpu2" in stack.status("cachefull", handed["run"])["worker"]
    finally:
        stop_workers(stack.workers)
