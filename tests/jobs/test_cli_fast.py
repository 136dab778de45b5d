"""The command line a researcher meets first: a status table that fits 80 columns, an ETA that does not
jump across a validation pass, a quiet Ctrl-C out of `--watch`, and commands that do not train importing
no torch."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time

import pytest
from rich.console import Console

from services.status_view import StepClock, short_run_id, smoothed_eta, status_table
from tests.suite.records import record_status
from tests.suite.servers import REPO
from tests.suite.test_status_watch import RUNNING, renders, study, watch  # noqa: F401  (fixture)

LONG = {"state": "failed", "run": "histogram-lr0.0001-bs16-seed2-0a1b2c", "epoch": 3, "epochs": 50,
        "worker": "gpu-worker-7@a-very-long-hostname.example.org (pid 123456)",
        "reason": "TrainingDiverged: loss is nan at epoch 3, step 117 (terms: l1=nan, ssim=0.31, "
                  "histogram=0.02, adversarial=nan) " * 2}  # fmt: skip


def render(statuses: list[dict], width: int = 80, **kw) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(status_table(statuses, **kw))
    return console.export_text()


def test_status_table_fits_80_columns_with_every_column():
    succeeded = {"state": "succeeded", "run": "original-seed1-702b8e", "epochs": 2, "epochs_done": 2,
                 "report_split": "test", "metrics": {"psnr": 23.456, "ssim": 0.8123},
                 "select_metrics": {"psnr": 22.9}}  # fmt: skip
    statuses = [
        {**RUNNING, "run": "original-seed0-892bf7", "best_val_psnr": 21.437},
        succeeded,
        {"state": "queued", "run": "histogram-seed0-9d13f1"},
        LONG,
    ]
    text = render(statuses)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    header = lines[0] if lines[0].strip() else lines[1]
    for column in ("run", "state", "phase", "epoch", "sel", "PSNR", "ETA", "worker"):
        assert column in header.split(), (column, text)
    assert "original-seed0 " in text and "892bf7" not in text, "short ids by default"
    assert "PSNR 23.46 dB on test" in text and "22.90" in text, "a succeeded run shows its metrics"
    assert "21.44" in text and "1m15s" in text and "train" in text
    assert "…" in text, "the long worker name ends with an ellipsis"
    assert "adversarial=nan" in text, "the long reason wraps, it is not cut"
    full = render(statuses, full_ids=True)
    assert "original-seed1-702b8e: PSNR" in full and max(len(line) for line in full.splitlines()) <= 80


def test_short_run_id_drops_only_the_hash():
    assert short_run_id("original-seed0-892bf7") == "original-seed0"
    assert short_run_id("lr-sweep-a") == "lr-sweep-a"


def _run(steps: int, epochs: int, step_s: float, validate_s: float, start_s: float):
    """(time, event) pairs of a run: start-up, `epochs` of `steps` steps of `step_s`, a validation pass
    of `validate_s` between epochs."""
    t, events = start_s, []
    for epoch in range(1, epochs + 1):
        for step in range(1, steps + 1):
            t += step_s
            events.append((t, {"phase": "train", "epoch": epoch, "epochs": epochs, "step": step,
                               "steps": steps}))  # fmt: skip
        events.append((t, {"phase": "validate", "epoch": epoch, "epochs": epochs}))
        t += validate_s
    return events


def test_eta_is_steps_left_times_the_step_time_and_does_not_jump_after_validation():
    events = _run(steps=10, epochs=3, step_s=2.0, validate_s=60.0, start_s=300.0)
    etas = smoothed_eta(events)
    train = [(e, eta) for (_, e), eta in zip(events, etas, strict=True) if e["phase"] == "train"]
    assert train[0][1] is None, "one step gives no step time"
    for event, eta in train[1:]:
        left = (10 - event["step"]) + (3 - event["epoch"]) * 10
        assert eta == pytest.approx(2.0 * left), (event, eta)
    # across the 60 s validation pass the countdown goes on by one step (2 s), where a step time taken
    # from the time between two events would count the pass into one step and add 19 x 60 s
    first_of_2 = next(i for i, (e, _) in enumerate(train) if e["epoch"] == 2)
    assert train[first_of_2 - 1][1] - train[first_of_2][1] == pytest.approx(2.0)


def test_eta_smooths_a_noisy_step_time():
    clock = StepClock(alpha=0.1)
    t = 0.0
    for step in range(1, 50):
        t += 1.0 if step % 2 else 3.0  # alternating 1 s / 3 s: the mean is 2 s
        clock.step(1, step, t)
    assert clock.seconds_per_step == pytest.approx(2.0, abs=0.15)
    assert clock.eta(1, 1, 50, 100) == pytest.approx(50 * clock.seconds_per_step)


def test_watch_ctrl_c_exits_0_with_the_report_hint(study, tmp_path):  # noqa: F811
    store, _ = study
    out = tmp_path / "watch.txt"
    proc = watch(store, out, "--interval", "0.2")
    try:
        deadline = time.monotonic() + 30
        while not renders(out) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert renders(out), out.read_text()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(10)
        _, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, err
    assert "Traceback" not in err and "interrupted" not in err
    assert "submit.py report demo -o DIR" in out.read_text().splitlines()[-1]


def test_commands_that_do_not_train_import_no_torch(study):  # noqa: F811
    store, _ = study
    code = (
        "import sys; sys.argv = ['submit.py', 'status', 'demo', '--store', sys.argv[1]];"
        "import jobs.submit as s; rc = s.main(sys.argv[1:]);"
        "s.main(['list', '--store', sys.argv[1]]);"
        "assert rc == 0, rc; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(store.root)], capture_output=True, text=True,
                         cwd=REPO, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout
    help_ = subprocess.run([sys.executable, "-X", "importtime", "jobs/submit.py", "--help"],
                           capture_output=True, text=True, cwd=REPO, timeout=60)  # fmt: skip
    assert help_.returncode == 0 and "status STUDY" in help_.stdout
    assert " torch\n" not in help_.stderr and "| torch" not in help_.stderr


def test_status_of_a_succeeded_run_shows_its_metrics(study):  # noqa: F811
    from tests.suite.test_submit_cli import submit

    store, spec = study
    run = spec.runs[0].run_id
    record_status(store, "demo", run, {"state": "succeeded", "epochs": 2, "epochs_done": 2,
                                       "report_split": "test", "metrics": {"psnr": 24.5}})  # fmt: skip
    out = submit("status", "demo", env={"COLORMAMBA_STORE": str(store.root)})
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith(short_run_id(run) + " "))
    assert " 2/2 " in row and "step" not in row, row
    assert f"{short_run_id(run)}: PSNR 24.50 dB on test" in out.stdout, out.stdout


def test_status_writer_carries_the_smoothed_eta_and_the_best_selection_psnr(tmp_path):
    """StatusWriter.progress: the ETA from its StepClock (not train.py's per-epoch estimate), and the
    best selection-split PSNR over the epochs so far."""
    from colormamba.storage import LocalStorage
    from services import runner
    from services.runs import read_status

    store = LocalStorage(tmp_path)
    record_status(store, "s", "r", {"state": "running"})
    writer = runner.StatusWriter(store, "s", "r", read_status(store, "s", "r"), interval=0.0)
    clock = iter([10.0, 12.0, 100.0])  # two steps 2 s apart, then 88 s of validation and one step
    writer.now = lambda: next(clock)
    base = {"phase": "train", "epochs": 2, "steps": 3, "loss": 0.5, "eta_s": 999.0}
    writer.progress({**base, "epoch": 1, "step": 1})
    writer.progress({**base, "epoch": 1, "step": 2})
    assert read_status(store, "s", "r")["eta_s"] == pytest.approx(2.0 * 4)  # 1 + 3 steps left
    writer.progress({"phase": "epoch_end", "epoch": 1, "epochs": 2, "val_psnr": 21.0})
    writer.progress({**base, "epoch": 2, "step": 1})
    assert read_status(store, "s", "r")["eta_s"] == pytest.approx(2.0 * 2), "the validation is not a step"
    writer.progress({"phase": "epoch_end", "epoch": 2, "epochs": 2, "val_psnr": 20.5})
    assert read_status(store, "s", "r")["best_val_psnr"] == 21.0
