"""Training one run: `train` reads top to bottom (data, parts, resume, then the epoch loop); the pieces
it calls are below it: `build_parts` (model, loss, optimisers, scheduler, discriminators), `train_step`
(one batch, also what benchmarks/bench_train_step.py times), `validate`, and `to_state` / `load_state`
(the one list of what a checkpoint holds).

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
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from colormamba import checkpoint
from colormamba.config import RunConfig, resolve_device
from colormamba.data import AugmentConfig, PairedDataset, TrainBatches, list_pairs
from colormamba.evaluate import predict_split, summarize
from colormamba.imaging import normalize_per_image, rgb_to_hsv
from colormamba.losses import CompositeLoss, build_loss, lsgan_discriminator_loss
from colormamba.models import ColorMamba, build_discriminator, build_model, compile_blocks
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
class Progress:
    """Where a run stands after `epoch` epochs; travels in last.pt (`to_state`)."""

    epoch: int = 0
    best_epoch: int = -1
    best_psnr: float = -math.inf
    train_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


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
    batches, val_set, steps_per_epoch = _data(cfg, device)
    parts = build_parts(cfg, device)
    progress = _resume(parts, store, where, on_progress)
    best_weights: dict[str, torch.Tensor] | None = None  # the best epoch's, until best.pt is written
    last_saved = time.monotonic()
    writer = checkpoint.BackgroundWriter(store)
    try:
        for epoch in range(progress.epoch, cfg.epochs):
            epoch_start = time.perf_counter()
            sums = _train_epoch(
                parts, batches, epoch, steps_per_epoch, where, writer, on_progress, should_cancel
            )
            parts.scheduler.step()
            epoch_seconds = time.perf_counter() - epoch_start
            _emit(on_progress, phase="validate", epoch=epoch + 1, epochs=cfg.epochs)
            row = {
                "epoch": epoch + 1,
                **{f"train_{k}": v / steps_per_epoch for k, v in sums.items()},
                **{f"val_{k}": v for k, v in validate(parts.model, val_set, cfg.protocol, device).items()},
                "lr": parts.optimizer.param_groups[0]["lr"],
                "seconds": round(epoch_seconds, 3),
            }
            progress.epoch, progress.train_seconds = epoch + 1, progress.train_seconds + epoch_seconds
            progress.history.append(row)
            if row["val_psnr"] > progress.best_psnr:
                progress.best_epoch, progress.best_psnr = epoch + 1, row["val_psnr"]
                best_weights = checkpoint.snapshot(parts.model.state_dict())
            if epoch + 1 == cfg.epochs or time.monotonic() - last_saved >= cfg.checkpoint_interval_s:
                writer.submit(_checkpoint_writes(parts, progress, best_weights, where), label=epoch + 1)
                best_weights, last_saved = None, time.monotonic()
            row_fields = {k: v for k, v in row.items() if k != "epoch"}
            _emit(on_progress, phase="epoch_end", epoch=epoch + 1, epochs=cfg.epochs, **row_fields)
        writer.close()
    except BaseException:
        # The write in flight still lands (it is what a resume starts from); the error that stopped the
        # run is the one raised, a failed write or progress report at this point only logged.
        writer.close(raise_errors=False)
        with contextlib.suppress(Exception):
            _report_checkpoints(writer, on_progress)
        raise
    _report_checkpoints(writer, on_progress)
    return TrainResult(cfg.epochs, progress.best_epoch, progress.best_psnr, progress.train_seconds,
                       progress.history)  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# the parts of a run and one training step


@dataclass
class TrainingParts:
    """Everything a training step updates, built once per run (`build_parts`)."""

    cfg: RunConfig
    model: ColorMamba
    loss_fn: CompositeLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.StepLR
    discriminators: nn.ModuleDict | None = None  # "rgb" and "hsv", when the loss is adversarial
    optimizer_d: torch.optim.Optimizer | None = None
    provenance: dict[str, Any] = field(default_factory=dict)  # what computes the run (colormamba.provenance)

    @property
    def layout(self) -> torch.memory_format:
        """The memory format of the model's weights and of the NIR batches it is fed."""
        return torch.channels_last if self.cfg.channels_last else torch.contiguous_format


def build_parts(cfg: RunConfig, device: torch.device) -> TrainingParts:
    """The run's model (channels-last and compiled blocks as `cfg` asks), loss, Adam, lr schedule and,
    for an adversarial loss, the two PatchGAN discriminators with their Adam. Draws the initial weights
    from torch's global RNG (seed it first)."""
    model = build_model(cfg.model, scan_backend=cfg.scan_backend, **cfg.model_overrides).to(device)
    if cfg.channels_last:  # the weights' layout, not their values (checkpoints load into either layout)
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        log.info("compiled %d blocks", compile_blocks(model))
    loss_fn = build_loss(cfg.loss, cfg.loss_weights, vgg_weights=cfg.vgg_weights,
                         histogram_distance=cfg.histogram_distance).to(device)
    optimizer = make_adam(model.parameters(), cfg, device)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)
    parts = TrainingParts(cfg, model, loss_fn, optimizer, scheduler, provenance=run_provenance(cfg, device))
    if loss_fn.needs_discriminator:
        parts.discriminators = nn.ModuleDict({"rgb": build_discriminator(3), "hsv": build_discriminator(3)})
        parts.discriminators.to(device)
        parts.optimizer_d = make_adam(parts.discriminators.parameters(), cfg, device)
    return parts


def train_step(
    parts: TrainingParts, nir: torch.Tensor, target_rgb: torch.Tensor, hsv_nir: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """One batch: `cfg.generator_steps_per_batch` generator updates, each with its own forward (the
    reference's fit.py takes two), then, for an adversarial loss, one discriminator update on the last
    forward's images. Nothing waits for the device.

    Args:
        nir: (B, 1, H, W) in [0, 1], the NIR G_A reads.
        target_rgb: (B, 3, H, W) in [0, 1]; normalised per image here, as the reference's targets are.
        hsv_nir: (B, 1, H, W), the NIR G_B reads as HSV (the batch's `hsv_nir`); default `nir`.
    Returns:
        The logged values, detached scalars: "loss" and each loss term of the last generator update
        (its forward came after the batch's earlier updates), and "discriminator" when there is one.
    """
    nir = nir.contiguous(memory_format=parts.layout)  # (B, 1, H, W); a no-op by default
    hsv_nir = nir if hsv_nir is None else hsv_nir.contiguous(memory_format=parts.layout)
    target = normalize_per_image(target_rgb)  # (B, 3, H, W)
    for _ in range(parts.cfg.generator_steps_per_batch):
        loss, terms, rgb, hsv = _generator_update(parts, nir, hsv_nir, target)
    if parts.discriminators is not None:
        terms = {**terms, "discriminator": _discriminator_update(parts, rgb, hsv, target)}
    return {"loss": loss.detach(), **terms}


def _generator_update(
    parts: TrainingParts, nir: torch.Tensor, hsv_nir: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Forward, loss, backward, (clip), Adam step of the generator; returns loss, terms, rgb, hsv."""
    # Autocast covers the generator only: the loss turns it off itself (float32 statistics) and the
    # discriminators, optimisers and metrics see float32 tensors; `.float()` is a no-op in fp32.
    with torch.autocast(nir.device.type, dtype=torch.bfloat16, enabled=parts.cfg.precision == "bf16"):
        rgb, hsv = parts.model(nir, hsv_nir)
    rgb, hsv = rgb.float(), hsv.float()
    fake_scores = None
    if parts.discriminators is not None:
        fake_scores = (parts.discriminators["rgb"](rgb), parts.discriminators["hsv"](hsv))
    loss, terms = parts.loss_fn(rgb, hsv, target, disc_fake_outputs=fake_scores)
    parts.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if parts.cfg.grad_clip:
        nn.utils.clip_grad_norm_(parts.model.parameters(), parts.cfg.grad_clip)
    parts.optimizer.step()
    return loss, terms, rgb, hsv


def _discriminator_update(
    parts: TrainingParts, rgb: torch.Tensor, hsv: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """One least-squares GAN step of both discriminators: real targets against the generated images."""
    d_rgb, d_hsv = parts.discriminators["rgb"], parts.discriminators["hsv"]
    d_loss = lsgan_discriminator_loss(
        [d_rgb(target), d_hsv(rgb_to_hsv(target))], [d_rgb(rgb.detach()), d_hsv(hsv.detach())]
    )
    parts.optimizer_d.zero_grad(set_to_none=True)
    d_loss.backward()
    parts.optimizer_d.step()
    return d_loss.detach()


# ---------------------------------------------------------------------------------------------------
# the loop's pieces


def _data(cfg: RunConfig, device: torch.device) -> tuple[TrainBatches, PairedDataset, int]:
    """The training split on the training device (augmented there, colormamba.data.batches), the
    validation split, and the steps of an epoch."""
    train_pairs = list_pairs(cfg.dataset, "train", layout=cfg.layout)
    batches = TrainBatches(train_pairs, device, AugmentConfig(**cfg.augment), seed=cfg.seed,
                           image_size=cfg.image_size)  # fmt: skip
    val_pairs = list_pairs(cfg.dataset, cfg.select_split, layout=cfg.layout)
    val_set = PairedDataset(val_pairs, train=False, image_size=cfg.image_size)
    steps_per_epoch = batches.steps_per_epoch(cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    return batches, val_set, steps_per_epoch


def _train_epoch(
    parts: TrainingParts,
    batches: TrainBatches,
    epoch: int,
    steps_per_epoch: int,
    where: RunLocation,
    writer: checkpoint.BackgroundWriter,
    on_progress: ProgressFn | None,
    should_cancel: CancelFn | None,
) -> dict[str, float]:
    """One epoch of training steps, with cancel checks and a progress event per step; returns the sum
    of each logged value over the epoch."""
    cfg = parts.cfg
    parts.model.train()
    start = time.perf_counter()
    sums: dict[str, float] = {}
    for step, batch in enumerate(batches.epoch(epoch, cfg.batch_size)):
        if step >= steps_per_epoch:
            break
        if should_cancel is not None and step % cfg.cancel_check_every == 0 and should_cancel():
            raise RunCancelled(f"{where.study}/{where.run} cancelled in epoch {epoch + 1}, step {step}")
        values = _checked(train_step(parts, batch.nir, batch.rgb, batch.hsv_nir), epoch, step)
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value
        steps_left = (steps_per_epoch - step - 1) + (cfg.epochs - epoch - 1) * steps_per_epoch
        _emit(
            on_progress,
            phase="train",
            epoch=epoch + 1,
            epochs=cfg.epochs,
            step=step + 1,
            steps=steps_per_epoch,
            loss=values["loss"],
            eta_s=(time.perf_counter() - start) / (step + 1) * steps_left,
            device=str(batches.device),
        )
        _report_checkpoints(writer, on_progress)
    return sums


def _checked(logged: dict[str, torch.Tensor], epoch: int, step: int) -> dict[str, float]:
    """The logged values as floats: one device sync per step, for every value at once. A non-finite loss
    is caught here, after the update it spoiled: the run stops and the last checkpoint is untouched."""
    values = dict(zip(logged, torch.stack([v.float() for v in logged.values()]).tolist(), strict=True))
    if not math.isfinite(values["loss"]):
        raise TrainingDiverged(
            f"loss is {values['loss']} at epoch {epoch + 1}, step {step} "
            f"(terms: {', '.join(f'{k}={v:.4g}' for k, v in values.items() if k != 'loss')})"
        )
    return values


def _eager() -> contextlib.AbstractContextManager[Any]:
    """Compiled blocks run eagerly inside. Without torch._dynamo imported nothing can have been compiled,
    and importing it (set_stance does) costs about 1.7 s that an eager run need not pay."""
    if "torch._dynamo" in sys.modules:
        return torch.compiler.set_stance("force_eager")
    return contextlib.nullcontext()


def validate(
    model: ColorMamba, val_set: PairedDataset, protocol: str, device: torch.device
) -> dict[str, float]:
    """Mean of each metric over the validation split.

    Validation runs in float32 and eagerly whatever `precision` and `compile` say: the study's metrics
    must not depend on a speed setting, they equal what `evaluate` reproduces from best.pt, the split is
    small, and its images may come in sizes that would each cost a compile.
    """
    with _eager():
        metrics = predict_split(model, val_set, protocol, device, keep_predictions=0).metrics
    return {name: value["mean"] for name, value in summarize(metrics).items()}


# ---------------------------------------------------------------------------------------------------
# checkpoints


def _stateful(parts: TrainingParts) -> dict[str, Any]:
    """What last.pt holds besides the progress, by key: modules, optimisers and the lr schedule."""
    items = {"model": parts.model, "optimizer": parts.optimizer, "scheduler": parts.scheduler}
    if parts.discriminators is not None:
        items |= {"discriminators": parts.discriminators, "optimizer_d": parts.optimizer_d}
    return items


def _about(parts: TrainingParts) -> dict[str, Any]:
    """What every checkpoint says about itself: the run's and its network's configuration, and what
    computed it."""
    return {"config": parts.cfg.to_dict(), "model_config": asdict(parts.model.config),
            "provenance": parts.provenance}  # fmt: skip


def to_state(parts: TrainingParts, progress: Progress) -> dict[str, Any]:
    """last.pt's contents (live tensors: `checkpoint.snapshot` it before a background write)."""
    state = {**_about(parts), **asdict(progress), "rng": checkpoint.rng_state()}
    return state | {key: item.state_dict() for key, item in _stateful(parts).items()}


def load_state(parts: TrainingParts, state: dict[str, Any], source: str = "last.pt") -> Progress:
    """Restore what `to_state` saved into `parts` and torch's RNGs; returns the run's progress.

    Weights go through `checkpoint.load_weights` (older spectral-norm layouts converted; a mismatch is a
    ValueError naming `source`, the checkpoint's key)."""
    for key, item in _stateful(parts).items():
        if isinstance(item, torch.optim.Optimizer):
            load_optimizer_state(item, state[key])
        elif isinstance(item, nn.Module):
            checkpoint.load_weights(item, state[key], source)
        else:
            item.load_state_dict(state[key])
    checkpoint.set_rng_state(state["rng"])
    return Progress(**{f.name: state[f.name] for f in fields(Progress)})


def _resume(
    parts: TrainingParts, store: Storage, where: RunLocation, on_progress: ProgressFn | None
) -> Progress:
    """The progress of `where`'s last.pt, loaded into `parts`, or a fresh start when there is none."""
    key = where.checkpoint("last")
    try:
        state = checkpoint.load(store, key)
    except ObjectNotFound:
        return Progress()
    progress = load_state(parts, state, key)
    log.info("%s/%s: resuming after epoch %d", where.study, where.run, progress.epoch)
    _emit(on_progress, phase="resume", epoch=progress.epoch)
    return progress


def _checkpoint_writes(
    parts: TrainingParts, progress: Progress, best_weights: dict[str, torch.Tensor] | None, where: RunLocation
) -> list[tuple[str, dict[str, Any] | bytes]]:
    """Snapshots for the background writer: best.pt first (when the best epoch changed since the last
    write), so a last.pt never names a best epoch that best.pt does not hold; then last.pt, history.csv."""
    writes: list[tuple[str, dict[str, Any] | bytes]] = []
    if best_weights is not None:
        best = {**_about(parts), "epoch": progress.best_epoch, "model": best_weights,
                "val_psnr": progress.best_psnr}  # fmt: skip
        writes.append((where.checkpoint("best"), best))
    writes.append((where.checkpoint("last"), checkpoint.snapshot(to_state(parts, progress))))
    writes.append((where.artifact("history.csv"), history_csv(progress.history)))
    return writes
