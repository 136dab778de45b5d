"""StatusWriter: which progress events reach status.json, and when (a real LocalStorage folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from colormamba.storage import LocalStorage
from services.runner import StatusWriter
from services.studies import read_status
from tests.support.records import record_status


def test_checkpoint_epochs_come_from_landed_checkpoints_not_epoch_ends(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    writer = StatusWriter(store, "s", "r", {"state": "running", "checkpoint_saved_epoch": 4}, interval=3600)
    writer.progress({"phase": "resume", "epoch": 3})  # the previous attempt saw 4 land; the store holds 3
    status = read_status(store, "s", "r")
    assert (status["resumed_from_epoch"], status["checkpoint_saved_epoch"]) == (3, 3)

    writer.progress({"phase": "epoch_end", "epoch": 4, "epochs": 9, "val_psnr": 20.0, "train_loss": 0.1})
    status = read_status(store, "s", "r")
    assert status["epoch"] == 4 and status["checkpoint_saved_epoch"] == 3  # the write is still in flight

    writer.progress({"phase": "train", "epoch": 5, "step": 1, "loss": 0.2})  # not written: interval
    writer.progress({"phase": "checkpoint", "epoch": 4})
    status = read_status(store, "s", "r")
    assert status["checkpoint_saved_epoch"] == 4 and status["phase"] == "train"  # phase stays the step's


def test_status_writer_carries_the_smoothed_eta_and_the_best_selection_psnr(tmp_path):
    """StatusWriter.progress: the ETA from its StepClock (not train.py's per-epoch estimate), and the
    best selection-split PSNR over the epochs so far."""
    store = LocalStorage(tmp_path)
    record_status(store, "s", "r", {"state": "running"})
    writer = StatusWriter(store, "s", "r", read_status(store, "s", "r"), interval=0.0)
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
