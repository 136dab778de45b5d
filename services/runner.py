"""One run's lifecycle, independent of how it was scheduled: the Celery task and `--local` both call
`execute_run`, so a run behaves the same on a GPU worker and on a laptop.

The run's `status.json` is its public record: state, reason of a failure, progress (epoch, step, loss,
ETA, worker, device) refreshed every few seconds, and the final metrics. Exclusive execution (the
Redis lease) is services.exclusive's; this module assumes it is the only executor of the run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from colormamba.config import RunConfig, resolve_device
from colormamba.env import redact_text
from colormamba.evaluate import METRIC_NAMES, evaluate
from colormamba.provenance import run_provenance
from colormamba.storage import RunLocation, Storage, StorageError
from colormamba.train import RunCancelled, train
from services.coord import LeaseLost
from services.datasets import CacheFull, fetch_dataset
from services.epoch_log import log_epoch
from services.runs import DONE, now, read_status, transition
from services.settings import settings
from services.spec import is_local_path
from services.status_view import StepClock

log = logging.getLogger(__name__)


def share_cpu_threads(runs_at_once: int) -> int:
    """Give this process its share of the machine's cores when `runs_at_once` runs train side by side
    (each in a process of its own): torch's default, every core for every process, makes them fight.
    Returns the thread count set."""
    import torch

    threads = max(1, (os.cpu_count() or 1) // runs_at_once)
    torch.set_num_threads(threads)
    return threads


class StatusWriter:
    """Merges progress events into the run's status and writes it at most every `interval` seconds (and
    at every epoch end), so a long run costs a few small PUTs a minute, not one per step; logs one line
    per epoch (services.epoch_log). `status` is the record as this writer last saw it: its `state` is
    where the first write moves from (services.runs)."""

    def __init__(self, store: Storage, study: str, run: str, status: dict[str, Any], interval: float,
                 also: Callable[[dict[str, Any]], None] | None = None) -> None:  # fmt: skip
        self.store, self.study, self.run = store, study, run
        self.status = status
        self.interval = interval
        self.also = also
        self._last = 0.0
        self.clock = StepClock()  # the ETA: smoothed seconds per training step
        self.now: Callable[[], float] = time.monotonic  # the step times' source (a test sets its own)

    def write(self, **fields: Any) -> dict[str, Any]:
        """Record `fields` (a `state` among them moves the run: services.runs checks the move)."""
        state = fields.pop("state", None) or self.status.get("state")
        self.status = transition(self.store, self.study, self.run, self.status, state, **fields)
        self._last = time.monotonic()
        if self.also is not None:
            self.also(self.status)
        return self.status

    def progress(self, event: dict[str, Any]) -> None:
        phase = event.get("phase")
        if phase in ("resume", "checkpoint"):
            # train() reports the epoch it resumed after, and each checkpoint once it is in the store:
            # the epoch a run restarted now would resume after, written at once.
            saved = {"checkpoint_saved_epoch": event["epoch"]}
            if phase == "resume":
                saved["resumed_from_epoch"] = event["epoch"]
            self.status = {**self.status, **saved}
            self.write()
            return
        fields = {k: v for k, v in event.items() if k in ("phase", "epoch", "epochs", "step", "steps")}
        if "loss" in event:
            fields["loss"] = round(float(event["loss"]), 6)
        if phase == "train" and event.get("step"):
            fields["eta_s"] = self._eta(event)
        if phase == "epoch_end":
            log_epoch(f"{self.study}/{self.run}", event)
            fields |= {"val_psnr": event.get("val_psnr"), "train_loss": event.get("train_loss"), "step": None}
            fields["best_val_psnr"] = _best(self.status.get("best_val_psnr"), event.get("val_psnr"))
        self.status = {**self.status, **fields}
        if phase == "epoch_end" or time.monotonic() - self._last >= self.interval:
            self.write()

    def _eta(self, event: dict[str, Any]) -> float | None:
        """The smoothed ETA (services.status_view.StepClock); train.py's own until two steps were timed."""
        epoch, step = int(event["epoch"]), int(event["step"])
        self.clock.step(epoch, step, self.now())
        eta = self.clock.eta(epoch, int(event.get("epochs") or epoch), step, int(event.get("steps") or step))
        eta = event.get("eta_s") if eta is None else eta
        return None if eta is None else round(float(eta), 1)


def _best(best: float | None, value: float | None) -> float | None:
    """The higher of two PSNRs, either of which may be missing."""
    return max((v for v in (best, value) if v is not None), default=None)


def local_dataset(store: Storage, dataset: str, cache_dir: str | Path | None) -> Path:
    """The folder a run reads: a local path as it is (`--local`), a stored dataset through the cache."""
    if is_local_path(dataset):
        return Path(dataset).expanduser().resolve()
    return fetch_dataset(store, dataset, cache_dir)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def execute_run(
    store: Storage,
    plan: dict[str, Any],
    *,
    worker: str | None = None,
    cache_dir: str | Path | None = None,
    should_cancel: Callable[[], bool] | None = None,
    on_status: Callable[[dict[str, Any]], None] | None = None,
    status_interval: float | None = None,
) -> dict[str, Any]:
    """Train, then evaluate one run, resuming from its last checkpoint; returns its final status.

    A run that is already done (succeeded, failed or cancelled) is returned untouched. A failure of the
    run itself (bad data, NaN loss, missing VGG weights...) ends as `failed` with its reason; a cancel
    ends as `cancelled` with the checkpoint kept. Exceptions raised by `should_cancel` other than a
    plain True (e.g. a lost lease) propagate without touching the status: someone else owns the run.
    `status_interval`: seconds between progress writes (default: COLORMAMBA_STATUS_INTERVAL).
    """
    study, run = plan["study"], plan["run_id"]
    where = RunLocation(study, run)
    previous = read_status(store, study, run) or {}
    if previous.get("state") in DONE:
        return previous
    # the last checkpoint the previous attempt saw land; train() reports the one it really resumes from
    resumed_from = previous.get("checkpoint_saved_epoch")
    import torch  # the device is worth recording: which GPU ran it

    device = plan["config"].get("device", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name()})"
    writer = StatusWriter(
        store,
        study,
        run,
        {
            "state": previous.get("state"),  # where the first write moves from
            "variant": plan["variant"],
            "seed": plan["seed"],
            "attempt": int(previous.get("attempt", 0)) + 1,
            "queued_at": previous.get("queued_at"),
            "task_id": previous.get("task_id"),
            "resumed_from_epoch": resumed_from,
            "checkpoint_saved_epoch": resumed_from,
        },
        settings().status_interval_s if status_interval is None else status_interval,
        on_status,
    )
    writer.write(state="running", phase="dataset", worker=worker or socket.gethostname(), device=device,
                 started_at=now(), reason=None)  # fmt: skip
    started = time.monotonic()
    try:
        root = local_dataset(store, plan["dataset"], cache_dir)
        cfg = RunConfig.from_dict({**plan["config"], "dataset": str(root)})
        record_provenance(writer, where, previous, run_provenance(cfg, resolve_device(cfg.device)))
        result = train(cfg, store, where, on_progress=writer.progress, should_cancel=should_cancel)
        writer.write(phase="evaluate", step=None, eta_s=None)
        ev = evaluate(cfg, store, where, which=plan.get("checkpoint", "best"),
                      on_progress=_stoppable(writer.progress, should_cancel, f"{study}/{run}"))  # fmt: skip
    except RunCancelled as exc:
        return writer.write(state="cancelled", reason=str(exc), finished_at=now(), eta_s=None)
    except (Exception, KeyboardInterrupt) as exc:
        if _not_the_runs_fault(exc):
            raise
        if isinstance(exc, KeyboardInterrupt):
            log.warning("%s/%s interrupted", study, run)
        else:
            log.error("%s/%s failed: %s", study, run, redact_text(_reason(exc)), exc_info=exc)
        tail = "".join(traceback.format_exception(exc)[-3:])
        state = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
        try:
            writer.write(state=state, reason=_reason(exc) if state == "failed" else "interrupted",
                         traceback=tail, finished_at=now(), eta_s=None)  # fmt: skip
        except Exception as write_error:
            if isinstance(write_error, LeaseLost):  # the lease went while it failed: the run is not ours
                raise write_error from None
            # the store itself is down: leave the run unfinished, to be taken up again
            log.exception("%s/%s: could not record the failure", study, run)
            raise exc from None
        if isinstance(exc, KeyboardInterrupt):
            raise
        return writer.status
    return writer.write(
        state="succeeded",
        phase=None,
        finished_at=now(),
        eta_s=None,
        step=None,
        wall_seconds=round(time.monotonic() - started, 2),
        train_seconds=round(result.train_seconds, 2),
        epochs_done=result.epochs_done,
        best_epoch=result.best_epoch,
        checkpoint_epoch=ev.checkpoint_epoch,
        select_split=cfg.select_split,
        report_split=cfg.report_split,
        select_metrics=selection_metrics(result.history, ev.checkpoint_epoch),
        metrics={k: v["mean"] for k, v in ev.summary.items()},
    )


def _stoppable(progress: Callable[[dict[str, Any]], None], should_cancel: Callable[[], bool] | None,
               name: str) -> Callable[[dict[str, Any]], None]:  # fmt: skip
    """Evaluation's progress hook that also honours a cancel (and a lost lease) after each image, as
    training does every few steps: a cancel that comes while the run evaluates stops it `cancelled`
    (nothing of the evaluation written; submitting again resumes after the last epoch and evaluates)."""

    def hook(event: dict[str, Any]) -> None:
        progress(event)
        if should_cancel is not None and should_cancel():
            raise RunCancelled(f"{name} cancelled while evaluating, after image {event.get('step')} of "
                               f"{event.get('steps')}")  # fmt: skip

    return hook


def selection_metrics(history: list[dict[str, Any]], epoch: int) -> dict[str, float | None]:
    """The selection split's metrics of the evaluated checkpoint (`epoch`), as training recorded them in
    its history (`val_*`): what a report ranks sweeps by, never the reporting split's numbers."""
    row = next((h for h in history if h["epoch"] == epoch), {})
    return {m: row.get(f"val_{m}") for m in METRIC_NAMES}


def record_provenance(
    writer: StatusWriter, where: RunLocation, previous: dict[str, Any], provenance: dict[str, Any]
) -> None:
    """Store this attempt's provenance as the artifact `provenance.json` and in the status. A resumed run
    whose earlier attempt ran elsewhere keeps that attempt's provenance too (`provenance_earlier`), so
    that a report can tell that its epochs were not all computed alike."""
    earlier = list(previous.get("provenance_earlier") or [])
    before = previous.get("provenance")
    if before and before != provenance and before not in earlier:
        earlier.append(before)
    writer.store.put_bytes(where.artifact("provenance.json"), json.dumps(provenance, indent=1).encode())
    writer.write(provenance=provenance, provenance_earlier=earlier or None)


def _not_the_runs_fault(exc: BaseException) -> bool:
    """Errors recorded by nobody here, since the run itself is fine: "not yours any more" (a lost lease:
    the new owner writes the status), "this worker cannot take runs" (its dataset cache is full: the run
    is handed back, services.tasks stops this one taking more), and the store unreachable past its retry
    budget (an outage: recording `failed` once it answers again would end a run that only has to wait).
    The execution stops without an outcome; the reaper records the run `lost` with the reason and queues
    it again, and it resumes from its last checkpoint."""
    return isinstance(exc, LeaseLost | CacheFull | StorageError)
