"""One line per epoch of a run: what a GPU worker's log (`docker compose logs gpu0`) and `submit.py --local`
both show while a run trains, written by the runner (services.runner.StatusWriter) from train.py's
`epoch_end` event, so that the two never disagree.

The lines go to the logger `services.epochs`: in a Celery worker they reach the worker's log through the
root logger Celery sets up; `--local` prints them to stdout (`print_epoch_lines`). Kept free of torch.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

EPOCH_LOGGER = "services.epochs"
log = logging.getLogger(EPOCH_LOGGER)


def _number(value: Any, fmt: str = ".4g") -> str:
    """`value` formatted; "-" when it is missing (a metric not computed)."""
    return format(value, fmt) if isinstance(value, int | float) else "-"


def epoch_line(run: str, event: dict[str, Any]) -> str:
    """`study/run epoch 2/10: loss 0.412 (mse 0.0651, hsv 0.358), val PSNR 21.34 SSIM 0.8123 AE 5.12
    MAE 41.3, 12.3 s training`: the training losses (the total, then each term) averaged over the
    epoch's steps, the selection split's metrics, and the epoch's training time (validation not
    included), from train.py's `epoch_end` event (`train_*`, `val_*`, `seconds`) in its order."""
    terms = [f"{k.removeprefix('train_')} {_number(v)}" for k, v in event.items()
             if k.startswith("train_") and k != "train_loss"]  # fmt: skip
    metrics = [f"{k.removeprefix('val_').upper()} {_number(v, '.2f' if k == 'val_psnr' else '.4g')}"
               for k, v in event.items() if k.startswith("val_")]  # fmt: skip
    line = f"{run} epoch {event.get('epoch', '?')}/{event.get('epochs', '?')}"
    line += f": loss {_number(event.get('train_loss'))}"
    if terms:
        line += f" ({', '.join(terms)})"
    if metrics:
        line += f", val {' '.join(metrics)}"
    if isinstance(event.get("seconds"), int | float):
        line += f", {event['seconds']:.1f} s training"
    return line


def log_epoch(run: str, event: dict[str, Any]) -> None:
    """Log the epoch line of an `epoch_end` event (INFO, logger `services.epochs`)."""
    log.info("%s", epoch_line(run, event))


class _StdoutLines(logging.Handler):
    """Prints each record to the stdout of the moment (not the one at set-up: pytest swaps it).

    One `write` of the whole line, newline included: the runs of `--local --runs-per-gpu K` share one
    stdout, and unbuffered (PYTHONUNBUFFERED, as submit.py runs) `print` writes the text and its newline
    separately, so two processes' lines could join on one line and the next be left empty; a single write
    of a line under the pipe's atomic size is never split."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(f"  {self.format(record)}\n")
            sys.stdout.flush()
        except Exception:
            self.handleError(record)


def print_epoch_lines() -> None:
    """Show the epoch lines on stdout, indented, and only there (not also on stderr through the root
    logger): what `--local` prints, in its own process and in each run's spawned process. Idempotent."""
    if not any(isinstance(h, _StdoutLines) for h in log.handlers):
        log.addHandler(_StdoutLines())
    log.setLevel(logging.INFO)
    log.propagate = False
