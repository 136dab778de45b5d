"""Training one run, read top to bottom: data, model, loss, optimiser, resume, then the epoch loop.

Every epoch ends with a validation pass on the selection split (`cfg.select_split`; the history's `val_*`
columns) and a checkpoint (`last.pt`, and `best.pt` when validation PSNR improves), so a crash loses at
most one epoch, and a resumed run ends with exactly the weights of an uninterrupted one: shuffling and
augmentation are seeded from (seed, epoch), and the optimiser, scheduler and RNG states travel in the
checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from colormamba import checkpoint
from colormamba.config import RunConfig, resolve_device
from colormamba.data import AugmentConfig, PairedDataset, TrainBatches, list_pairs
from colormamba.evaluate import predict_split, summarize
from colormamba.imaging import normalize_per_image, rgb_to_hsv
from colormamba.losses import build_loss, lsgan_discriminator_loss
from colormamba.models import build_discriminator, build_model, compile_blocks
from colormamba.provenance import run_provenance
from colormamba.storage import ObjectNotFound, RunLocation, Storage

log = logging.getLogger(__name__)

ProgressFn = Callable[[dict[str, Any]], None]
CancelFn = Callable[[], bool]


class RunCancelled(Exception):
    """The cancel check said stop. The last checkpoint stays, so the run can be resumed."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says where."""


@dataclass
class TrainResult:
    epochs_done: int
    best_epoch: int
    best_psnr: float
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# small pure helpers


def history_csv(rows: list[dict[str, Any]]) -> bytes:
    if not rows:
        return b""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def make_adam(params: Iterable[nn.Parameter], cfg: RunConfig, device: torch.device) -> torch.optim.Adam:
    """The recipe's Adam, with the fastest implementation for `device`.

    On CUDA the fused kernel (one launch for every parameter instead of a dozen per tensor) computes the
    same update as the per-tensor algorithm, up to float rounding; elsewhere foreach, which on the CPU is
    bit-identical to torch's per-tensor default.
    """
    kernel = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, **kernel)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load a checkpoint's optimiser state, keeping this optimiser's implementation flags.

    A state dict carries its groups' `fused`/`foreach`, and torch would restore them with it (and place
    Adam's step counters for them): a run checkpointed on a GPU and resumed on a CPU, or the reverse,
    must use the implementation of the device it runs on now.
    """
    flags = ("fused", "foreach")
    groups = [
        {**old, **{k: new[k] for k in flags if k in new}}
        for old, new in zip(saved["param_groups"], optimizer.param_groups, strict=True)
    ]
    optimizer.load_state_dict({**saved, "param_groups": groups})


def _emit(on_progress: ProgressFn | None, **event: Any) -> None:
    if on_progress is not None:
        on_progress(event)


def _report_checkpoints(writer: checkpoint.BackgroundWriter, on_progress: ProgressFn | None) -> None:
    """A "checkpoint" event for each epoch whose checkpoint has landed in the store (what a resume would
    start from; epoch_end comes earlier, while the write is still in flight)."""
    for epoch in writer.landed():
        _emit(on_progress, phase="checkpoint", epoch=epoch)


# ---------------------------------------------------------------------------------------------------


def train(
    cfg: RunConfig,
    store: Storage,
    where: RunLocation,
    *,
    on_progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> TrainResult:
    """Train one run, resuming from `where`'s `last.pt` when it exists.

    Args:
        cfg: the run configuration.
        store: where checkpoints and history go.
        where: the run's keys in the store.
        on_progress: called with a dict per logged step and per epoch (phase, epoch, step, loss, eta_s...).
        should_cancel: polled every `cfg.cancel_check_every` steps; True raises RunCancelled.
    Returns:
        TrainResult with the best epoch and the full history.
    """
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    # data ------------------------------------------------------------------------------------------
    # The training split lives on the training device and is augmented there (colormamba.data.batches).
    train_pairs = list_pairs(cfg.dataset, "train", layout=cfg.layout)
    batches = TrainBatches(train_pairs, device, AugmentConfig(**cfg.augment), seed=cfg.seed)
    val_set = PairedDataset(list_pairs(cfg.dataset, cfg.select_split, layout=cfg.layout), train=False)
    steps_per_epoch = batches.steps_per_epoch(cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)

    # model, loss, optimiser -------------------------------------------------------------------------
    model = build_model(cfg.model, scan_backend=cfg.scan_backend, **cfg.model_overrides).to(device)
    # channels-last changes the weights' layout, not their values (checkpoints load into either layout)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    if cfg.channels_last:
        model = model.to(memory_format=layout)
    if cfg.compile:
        log.info("%s/%s: compiled %d blocks", where.study, where.run, compile_blocks(model))
    bf16 = cfg.precision == "bf16"
    provenance = run_provenance(cfg, device)  # travels in every checkpoint (colormamba.provenance)
    loss_fn = build_loss(cfg.loss, cfg.loss_weights, vgg_weights=cfg.vgg_weights)
    loss_fn = loss_fn.to(device)
    optimizer = make_adam(model.parameters(), cfg, device)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)
    discriminators: nn.ModuleDict | None = None
    optimizer_d: torch.optim.Optimizer | None = None
    if loss_fn.needs_discriminator:
        discriminators = nn.ModuleDict({"rgb": build_discriminator(3), "hsv": build_discriminator(3)}).to(
            device
        )
        optimizer_d = make_adam(discriminators.parameters(), cfg, device)

    # resume -----------------------------------------------------------------------------------------
    start_epoch, best_epoch, best_psnr, train_seconds, history = 0, -1, -math.inf, 0.0, []
    last_key = where.checkpoint("last")
    try:
        state = checkpoint.load(store, last_key)
    except ObjectNotFound:
        state = None
    if state is not None:
        checkpoint.load_weights(model, state["model"], last_key)
        load_optimizer_state(optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if discriminators is not None:
            checkpoint.load_weights(discriminators, state["discriminators"], last_key)
            load_optimizer_state(optimizer_d, state["optimizer_d"])
        checkpoint.set_rng_state(state["rng"])
        start_epoch, best_epoch, best_psnr = state["epoch"], state["best_epoch"], state["best_psnr"]
        train_seconds, history = state["train_seconds"], state["history"]
        log.info("%s/%s: resuming after epoch %d", where.study, where.run, start_epoch)
        _emit(on_progress, phase="resume", epoch=start_epoch)

    # the loop ---------------------------------------------------------------------------------------
    best_weights: dict[str, torch.Tensor] | None = None  # the best epoch's, until best.pt is written
    last_saved = time.monotonic()
    writer = checkpoint.BackgroundWriter(store)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            epoch_start = time.perf_counter()
            sums: dict[str, float] = {}
            for step, (nir, target_rgb) in enumerate(batches.epoch(epoch, cfg.batch_size)):
                if step >= steps_per_epoch:
                    break
                if should_cancel is not None and step % cfg.cancel_check_every == 0 and should_cancel():
                    raise RunCancelled(
                        f"{where.study}/{where.run} cancelled in epoch {epoch + 1}, step {step}"
                    )
                nir = nir.contiguous(memory_format=layout)  # (B, 1, H, W) in [0, 1]; a no-op by default
                target = normalize_per_image(target_rgb)  # (B, 3, H, W)

                # Autocast covers the generator only: the loss turns it off itself (float32 statistics)
                # and the discriminators, optimisers and metrics see float32 tensors; `.float()` is a
                # no-op in fp32.
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    rgb, hsv = model(nir)
                rgb, hsv = rgb.float(), hsv.float()
                fake_scores = None
                if discriminators is not None:
                    fake_scores = (discriminators["rgb"](rgb), discriminators["hsv"](hsv))
                loss, parts = loss_fn(rgb, hsv, target, disc_fake_outputs=fake_scores)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()

                if discriminators is not None:
                    d_rgb, d_hsv = discriminators["rgb"], discriminators["hsv"]
                    d_loss = lsgan_discriminator_loss(
                        [d_rgb(target), d_hsv(rgb_to_hsv(target))],
                        [d_rgb(rgb.detach()), d_hsv(hsv.detach())],
                    )
                    optimizer_d.zero_grad(set_to_none=True)
                    d_loss.backward()
                    optimizer_d.step()
                    parts = {**parts, "discriminator": d_loss.detach()}

                # One device sync per step, for every logged value at once. A non-finite loss is caught
                # here, after the update it spoiled: the run stops and the last checkpoint is untouched.
                logged = {"loss": loss.detach(), **parts}
                values = dict(
                    zip(logged, torch.stack([v.float() for v in logged.values()]).tolist(), strict=True)
                )
                if not math.isfinite(values["loss"]):
                    raise TrainingDiverged(
                        f"loss is {values['loss']} at epoch {epoch + 1}, step {step} "
                        f"(terms: {', '.join(f'{k}={v:.4g}' for k, v in values.items() if k != 'loss')})"
                    )
                for name, value in values.items():
                    sums[name] = sums.get(name, 0.0) + value
                elapsed = time.perf_counter() - epoch_start
                steps_left = (steps_per_epoch - step - 1) + (cfg.epochs - epoch - 1) * steps_per_epoch
                _emit(
                    on_progress,
                    phase="train",
                    epoch=epoch + 1,
                    epochs=cfg.epochs,
                    step=step + 1,
                    steps=steps_per_epoch,
                    loss=values["loss"],
                    eta_s=elapsed / (step + 1) * steps_left,
                    device=str(device),
                )
                _report_checkpoints(writer, on_progress)
            scheduler.step()
            epoch_seconds = time.perf_counter() - epoch_start
            train_seconds += epoch_seconds

            # validate, record, checkpoint ---------------------------------------------------------------
            _emit(on_progress, phase="validate", epoch=epoch + 1, epochs=cfg.epochs)
            # Validation runs in float32 and eagerly whatever `precision` and `compile` say: the study's
            # metrics must not depend on a speed setting, they equal what `evaluate` reproduces from
            # best.pt, the split is small, and its images may come in sizes that would each cost a compile.
            with torch.compiler.set_stance("force_eager"):
                val = predict_split(model, val_set, cfg.protocol, device, keep_predictions=0).metrics
            val = summarize(val)
            row = {
                "epoch": epoch + 1,
                **{f"train_{k}": v / steps_per_epoch for k, v in sums.items()},
                **{f"val_{k}": v["mean"] for k, v in val.items()},
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": round(epoch_seconds, 3),
            }
            history.append(row)
            if row["val_psnr"] > best_psnr:
                best_epoch, best_psnr = epoch + 1, row["val_psnr"]
                best_weights = checkpoint.snapshot(model.state_dict())

            # Checkpoints are snapshots written on a thread while the next epoch trains; best.pt goes first,
            # so a last.pt never names a best epoch that best.pt does not hold.
            if epoch + 1 == cfg.epochs or time.monotonic() - last_saved >= cfg.checkpoint_interval_s:
                about = {"config": cfg.to_dict(), "model_config": asdict(model.config)}
                about["provenance"] = provenance
                writes: list[tuple[str, dict[str, Any] | bytes]] = []
                if best_weights is not None:
                    best = {**about, "epoch": best_epoch, "model": best_weights, "val_psnr": best_psnr}
                    writes.append((where.checkpoint("best"), best))
                last = {
                    **about,
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": checkpoint.rng_state(),
                    "best_epoch": best_epoch,
                    "best_psnr": best_psnr,
                    "train_seconds": train_seconds,
                    "history": history,
                }
                if discriminators is not None:
                    last |= {
                        "discriminators": discriminators.state_dict(),
                        "optimizer_d": optimizer_d.state_dict(),
                    }
                writes.append((where.checkpoint("last"), checkpoint.snapshot(last)))
                writes.append((where.artifact("history.csv"), history_csv(history)))
                writer.submit(writes, label=epoch + 1)
                best_weights, last_saved = None, time.monotonic()
            _emit(
                on_progress,
                phase="epoch_end",
                epoch=epoch + 1,
                epochs=cfg.epochs,
                **{k: v for k, v in row.items() if k != "epoch"},
            )
        writer.close()
    except BaseException:
        # The write in flight still lands (it is what a resume starts from); the error that stopped the
        # run is the one raised, a failed write or progress report at this point only logged.
        writer.close(raise_errors=False)
        with contextlib.suppress(Exception):
            _report_checkpoints(writer, on_progress)
        raise
    _report_checkpoints(writer, on_progress)

    return TrainResult(cfg.epochs, best_epoch, best_psnr, train_seconds, history)
