"""The epoch line (services.epoch_log): its wording, that the runner's status writer logs exactly one per
epoch and none per step, and that `--local`'s set-up prints the lines on stdout only. A worker's log
carrying them is tested with real workers in test_queue.py, `--local`'s output in test_local.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from colormamba.storage import LocalStorage
from services.epoch_log import EPOCH_LOGGER, epoch_line, print_epoch_lines
from services.runner import StatusWriter

# an `epoch_end` event as train.py emits it (keys in its order)
EVENT = {"phase": "epoch_end", "epoch": 2, "epochs": 10, "train_loss": 20.060195922851562,
         "train_mse": 0.0651051476597786, "train_hsv": 0.35778963565826416, "val_psnr": 21.337,
         "val_ssim": 0.812345, "val_ae": 5.1234, "val_mae": 41.3, "val_lpips": 0.2, "lr": 0.0001,
         "seconds": 12.345}  # fmt: skip


def test_the_line_names_the_run_its_losses_metrics_and_time() -> None:
    assert epoch_line("s/r", EVENT) == (
        "s/r epoch 2/10: loss 20.06 (mse 0.06511, hsv 0.3578), "
        "val PSNR 21.34 SSIM 0.8123 AE 5.123 MAE 41.3 LPIPS 0.2, 12.3 s training"
    )


def test_missing_values_show_as_dashes_and_absent_groups_are_left_out() -> None:
    line = epoch_line("s/r", {"epoch": 1, "epochs": 2, "train_loss": float("nan"), "val_psnr": None})
    assert line == "s/r epoch 1/2: loss nan, val PSNR -"


@pytest.fixture
def epoch_logger():
    """The epoch logger, with its handlers, level and propagation restored after the test (an earlier
    `--local` in this process may have set it up to print)."""
    logger = logging.getLogger(EPOCH_LOGGER)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    logger.handlers.clear()
    yield logger
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_status_writer_logs_one_line_per_epoch_and_none_per_step(
    tmp_path: Path, epoch_logger: logging.Logger
) -> None:
    seen = Records()
    epoch_logger.addHandler(seen)
    epoch_logger.setLevel(logging.INFO)
    writer = StatusWriter(LocalStorage(tmp_path), "s", "r", {"state": "running"}, interval=0.0)
    for epoch in (1, 2):
        for step in (1, 2, 3):
            writer.progress({"phase": "train", "epoch": epoch, "epochs": 2, "step": step, "steps": 3,
                             "loss": 0.5})  # fmt: skip
        writer.progress({"phase": "validate", "epoch": epoch, "epochs": 2})
        writer.progress({**EVENT, "epoch": epoch, "epochs": 2, "val_psnr": 20.0 + epoch})
    expected = [epoch_line("s/r", {**EVENT, "epoch": e, "epochs": 2, "val_psnr": 20.0 + e}) for e in (1, 2)]
    assert [r.getMessage() for r in seen.records] == expected
    assert {r.levelno for r in seen.records} == {logging.INFO}


def test_local_prints_the_lines_on_stdout_once_and_not_on_stderr(
    capsys: pytest.CaptureFixture[str], epoch_logger: logging.Logger
) -> None:
    print_epoch_lines()
    print_epoch_lines()  # idempotent: a second set-up adds no second handler
    epoch_logger.info("%s", epoch_line("s/r", EVENT))
    out = capsys.readouterr()
    assert out.out == f"  {epoch_line('s/r', EVENT)}\n" and out.err == ""
