"""StatusWriter: which progress events reach status.json, and when (a real LocalStorage folder)."""

from __future__ import annotations

from pathlib import Path

from colormamba.storage import LocalStorage
from services.runner import StatusWriter
from services.studies import read_status


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
