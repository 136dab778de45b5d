"""The run configuration: everything that decides what one training + evaluation run computes.

Plain data (nanoGPT style): defaults are the study's recipe (docs/evaluation.md), a run states only what it
changes, unknown keys are refused, and the resolved configuration travels inside every checkpoint so
that a resumed run or `predict` rebuilds exactly the same network.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from colormamba.data.augment_config import AugmentConfig
from colormamba.data.layouts import LAYOUTS

if TYPE_CHECKING:  # imported by resolve_device: reading and checking a configuration does without torch
    import torch

PROTOCOLS = ("colormamba", "plain")  # evaluation protocols, see colormamba.metrics
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")  # the generator forward's autocast, see `RunConfig.precision`
# The splits a run selects its checkpoint on and reports on (the training split is augmented and trained on)
EvalSplit = Literal["val", "test"]
EVAL_SPLITS: tuple[str, ...] = get_args(EvalSplit)


@dataclass
class RunConfig:
    """One run: model preset x loss configuration x recipe x seed."""

    # data
    dataset: str = ""  # dataset root folder (VCIP2020 or plain layout)
    layout: str = "auto"  # "auto" | "vcip2020" | "plain"
    # Selection and reporting use different splits (docs/evaluation.md): choosing best.pt on the split that
    # is then reported inflates every run by its own best-case pick. The spec refuses equal splits unless
    # the evaluated checkpoint is `last`, which no split chose.
    select_split: str = "val"  # validated every epoch: picks best.pt (and ranks a study's sweeps)
    report_split: str = "test"  # scored by the final evaluation: the metrics a report shows
    augment: dict[str, Any] = field(default_factory=dict)  # overrides of colormamba.data.AugmentConfig
    # model
    model: str = "paper"  # preset name, see colormamba.models.list_presets()
    model_overrides: dict[str, Any] = field(default_factory=dict)
    scan_backend: str = "auto"  # "auto" | "torch" | "mamba" | "reference"
    # loss
    loss: str | dict[str, float] = "original"  # preset name or {term: weight}
    loss_weights: dict[str, float] = field(default_factory=dict)  # per-term overrides of the preset
    vgg_weights: str = "pretrained"  # "pretrained" | "random" | path to vgg19-dcbb9e9d.pth
    # recipe (the reference: Adam 1e-4, betas 0.5/0.999, lr halved every 25 epochs, 50 epochs, batch 8)
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lr_step_epochs: int = 25
    lr_gamma: float = 0.5
    grad_clip: float = 0.0  # 0 disables; the reference does not clip
    # Generator updates per batch, each with its own forward (the reference's fit.py takes two); the
    # discriminators, when the loss has an adversarial term, update once per batch after the last one.
    generator_steps_per_batch: int = 2
    max_steps_per_epoch: int = 0  # 0 = the whole training split; >0 for smoke runs
    # evaluation
    protocol: str = "colormamba"
    num_samples: int = 4  # sample images written by evaluation for the report's grid
    lpips_weights: str = "pretrained"  # LPIPS backbone: "pretrained" | "random" (tests) | alexnet-owt-*.pth
    # execution
    seed: int = 0
    device: str = "auto"
    deterministic: bool = False  # torch deterministic algorithms (slower; exact resume on GPU)
    # speed (the GPU fast path). Defaults are the reference's fp32 step. "bf16" runs the generator's
    # forward under bf16 autocast (the loss stays float32 with autocast off, the scan's state float32);
    # it trains to the same loss curve within noise but not bit-identically, so it is opt-in.
    precision: str = "fp32"  # "fp32" | "bf16"
    channels_last: bool = False  # model weights and NIR batches in channels-last layout (cuDNN's fastest)
    compile: bool = False  # torch.compile of the blocks in colormamba.models.compile: minutes at start
    cancel_check_every: int = 5  # steps between cancel-flag checks
    # Seconds of training between checkpoints (last.pt, best.pt, history.csv); 0 = after every epoch.
    # A crash loses at most this much (plus one epoch); the last epoch always checkpoints.
    checkpoint_interval_s: float = 0.0

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # JSON round-trips give lists
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming every bad field at once."""
        problems = []
        if not self.dataset:
            problems.append("dataset: required (path to the dataset root)")
        for name in (
            "epochs", "batch_size", "lr_step_epochs", "generator_steps_per_batch", "cancel_check_every"
        ):  # fmt: skip
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name}: must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("max_steps_per_epoch", "num_samples", "seed"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                problems.append(f"{name}: must be an integer >= 0, got {getattr(self, name)!r}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"lr: must be a positive number, got {self.lr!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            problems.append(f"betas: must be two numbers in [0, 1), got {self.betas!r}")
        if not 0 < self.lr_gamma <= 1:
            problems.append(f"lr_gamma: must be in (0, 1], got {self.lr_gamma!r}")
        if not (isinstance(self.checkpoint_interval_s, int | float) and self.checkpoint_interval_s >= 0):
            problems.append(
                f"checkpoint_interval_s: must be a number >= 0, got {self.checkpoint_interval_s!r}"
            )
        if self.grad_clip < 0:
            problems.append(f"grad_clip: must be >= 0, got {self.grad_clip!r}")
        if self.protocol not in PROTOCOLS:
            problems.append(f"protocol: must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            problems.append(f"device: must be one of {DEVICES} or 'cuda:N', got {self.device!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision: must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("channels_last", "compile", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name}: must be true or false, got {getattr(self, name)!r}")
        for name in ("select_split", "report_split"):
            if getattr(self, name) not in EVAL_SPLITS:
                problems.append(f"{name}: must be one of {EVAL_SPLITS}, got {getattr(self, name)!r}")
        try:
            AugmentConfig(**self.augment)
        except (TypeError, ValueError) as exc:  # an unknown key is a TypeError naming it
            problems.append(f"augment: {exc}")
        if self.layout != "auto" and self.layout not in LAYOUTS:
            problems.append(f"layout: must be 'auto' or one of {sorted(LAYOUTS)}, got {self.layout!r}")
        if problems:
            raise ValueError("invalid run configuration:\n  " + "\n  ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from plain data, refusing unknown keys (a typo must not silently use a default)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"invalid run configuration: unknown keys {unknown}; known keys: {sorted(known)}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain data (what checkpoints and status files carry)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out


def resolve_device(name: str) -> torch.device:
    """The torch device of a `device` field; "auto" prefers CUDA. An unusable choice is a ValueError, so a
    run asked for a GPU fails at start on a CPU-only machine instead of silently training for days."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} requested but CUDA is not available on this machine")
    return device
