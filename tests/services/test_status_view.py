"""services/status_view.py: a status table that fits 80 columns, short run ids, and an ETA that does not
jump across a validation pass."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from services.status_view import StepClock, short_run_id, smoothed_eta, status_table
from tests.support.records import RUNNING

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
