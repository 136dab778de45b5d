"""What `submit.py status` and `list` show: a study's runs as a table that fits an 80-column terminal,
and the smoothed ETA that the run's status carries.

Kept free of torch (and of everything a command that does not train does not need), so that the command
line answers in a fraction of a second: see tests/jobs/test_cli_fast.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

WORKER_WIDTH = 14  # with the other columns at their widest, the table still fits 80 columns
ETA_SMOOTHING = 0.1  # weight of the newest step time in the exponential moving average
PHASES = {"dataset": "data", "train": "train", "validate": "validate", "epoch_end": "train",
          "evaluate": "evaluate", "evaluation": "evaluate"}  # fmt: skip


@dataclass
class StepClock:
    """Seconds per training step as an exponential moving average, and the ETA it gives.

    Only time between two training steps of the same epoch counts: the first event of an epoch (after
    start-up, a resume or a validation pass) re-anchors the clock without a sample, so neither the data
    download, nor model building, nor validation inflates the step time, and the ETA does not jump
    when a validation pass ends (train.py's own `eta_s` restarts from each epoch's first step)."""

    alpha: float = ETA_SMOOTHING
    seconds_per_step: float | None = None
    _epoch: int | None = None
    _step: int | None = None
    _at: float | None = None

    def step(self, epoch: int, step: int, at: float) -> None:
        """Record that training reached `step` of `epoch` at time `at` (seconds, monotonic)."""
        if self._epoch == epoch and self._step is not None and self._at is not None and step > self._step:
            sample = (at - self._at) / (step - self._step)
            ema = self.seconds_per_step
            self.seconds_per_step = sample if ema is None else self.alpha * sample + (1 - self.alpha) * ema
        self._epoch, self._step, self._at = epoch, step, at

    def eta(self, epoch: int, epochs: int, step: int, steps: int) -> float | None:
        """Seconds of training left after `step` of `epoch` (None until two steps of one epoch were seen)."""
        if self.seconds_per_step is None:
            return None
        left = max(0, steps - step) + max(0, epochs - epoch) * steps
        return self.seconds_per_step * left


def smoothed_eta(
    events: list[tuple[float, dict[str, Any]]], clock: StepClock | None = None
) -> list[float | None]:
    """The ETA after each of the (time, progress event) pairs: what a status shows along a run."""
    clock = clock or StepClock()
    out: list[float | None] = []
    last: float | None = None
    for at, event in events:
        if event.get("phase") == "train" and event.get("step"):
            clock.step(int(event["epoch"]), int(event["step"]), at)
            eta = clock.eta(
                int(event["epoch"]), int(event["epochs"]), int(event["step"]), int(event["steps"])
            )
            last = eta if eta is not None else last
        out.append(last)
    return out


def short_run_id(run_id: str) -> str:
    """`<variant>-seed<seed>` of `<variant>-seed<seed>-<hash6>`: unique within a study (the hash only
    keeps ids unique across studies), and short enough for the table."""
    head, sep, tail = run_id.rpartition("-")
    return head if sep and "-seed" in head and len(tail) == 6 else run_id


def duration(seconds: float) -> str:
    """`4m07s`, `2h05m`: an ETA as a person reads it."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _clip(text: str, width: int) -> str:
    """`text`, ending in "…" when longer than `width` (a worker's `name@host (pid N)`)."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _psnr(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def run_row(s: dict[str, Any], full_ids: bool = False) -> dict[str, str]:
    """One run's cells: what a person needs to follow it (the full record is `status --json`); `note`
    (a failure's reason, a succeeded run's reported metrics) is printed under the table, wrapped."""
    state = s.get("state", "?")
    running = state == "running"
    epoch = (s.get("epochs_done") if state == "succeeded" else None) or s.get("epoch")
    note = s.get("reason") or ""
    metrics = s.get("metrics") or {}
    if state == "succeeded" and metrics.get("psnr") is not None:
        note = f"PSNR {_psnr(metrics.get('psnr'))} dB on {s.get('report_split') or 'the report split'}"
        if metrics.get("ssim") is not None:
            note += f", SSIM {metrics['ssim']:.3f}"
    select = (s.get("select_metrics") or {}).get("psnr") if state == "succeeded" else None
    return {
        "run": s["run"] if full_ids else short_run_id(s["run"]),
        "state": state,
        "phase": PHASES.get(s.get("phase") or "", s.get("phase") or "-") if running else "-",
        "epoch": f"{epoch or '-'}/{s.get('epochs') or '-'}",
        "sel PSNR": _psnr(select if select is not None else s.get("best_val_psnr")),
        "ETA": duration(s["eta_s"]) if running and s.get("eta_s") is not None else "-",
        "worker": _clip(s.get("worker") or "-", WORKER_WIDTH),
        "note": note,
    }


def summary(statuses: list[dict[str, Any]]) -> str:
    """`1 failed, 2 running`: how many runs are in each state."""
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s["state"]] = counts.get(s["state"], 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def status_table(statuses: list[dict[str, Any]], full_ids: bool = False) -> Group:
    """The runs as a rich table that fits 80 columns (long run ids fold, long worker names end in "…"),
    then each run's note (`run: reason` or its metrics), wrapped at the console's width."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    table.add_column("run", overflow="fold", min_width=14)
    for name in ("state", "phase"):
        table.add_column(name, no_wrap=True)
    for name in ("epoch", "sel PSNR", "ETA"):
        table.add_column(name, no_wrap=True, justify="right")
    table.add_column("worker", no_wrap=True)
    notes = []
    for s in statuses:
        row = run_row(s, full_ids)
        table.add_row(*(v for k, v in row.items() if k != "note"))
        if row["note"]:
            notes.append(Text(f"{row['run']}: {row['note']}", overflow="fold"))
    return Group(table, *notes)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """Leave a closed pipe (`status | head`) to the command line, which ends quietly with 0."""
        raise BrokenPipeError


def console() -> Console:
    """The console the command line prints tables to (80 columns when not a terminal)."""
    return _Console(highlight=False, soft_wrap=False)


@dataclass
class StoreOutage:
    """Since when `status --watch` has not reached the store (the wall clock for the line, the monotonic
    clock for how long) and the last error, for the line the watch shows while it retries."""

    since: float
    started: float
    reason: str = ""

    @classmethod
    def begin(cls) -> StoreOutage:
        return cls(time.time(), time.monotonic())

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        """`store unreachable since 14:03:07 (12 s): <the last error, short>; retrying`."""
        clock = time.strftime("%H:%M:%S", time.localtime(self.since))
        return f"store unreachable since {clock} ({self.seconds:.0f} s): {_clip(self.reason, 90)}; retrying"


def heading(study: str, statuses: list[dict[str, Any]]) -> str:
    return f"study {study}: {summary(statuses)}  ({time.strftime('%H:%M:%S')})"
