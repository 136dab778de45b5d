"""The run configuration: everything that decides what one training + evaluation run computes.

Plain data (nanoGPT style): defaults are the study's recipe (docs/evaluation.md), a run states only what it
changes, unknown keys are refused, and the resolved configuration travels inside every checkpoint so
that a resumed run or `predict` rebuilds exactly the same network.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from colormamba.data.augment_config import augment_problems
from colormamba.data.layouts import LAYOUTS, SPLITS
from colormamba.suggest import unknown
from colormamba.vocabulary import HISTOGRAM_DISTANCES

if TYPE_CHECKING:  # imported by resolve_device; reading a configuration does without torch
    import torch

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")  # the generator forward's autocast, see `RunConfig.precision`
# The splits a run selects its checkpoint on and reports on (the training split is augmented and trained on)
EVAL_SPLITS = tuple(split for split in SPLITS if split != "train")
MAX_SAMPLES = 64  # sample images a run writes for the report's grid


class ConfigError(ValueError):
    """An invalid run configuration. `problems` holds one "field: message" line per problem in RunConfig's
    own field names (`lr`, `augment.flipp`, `loss_weights.vggg`), so that a caller can say where its user
    wrote the value (a study spec maps them to its own paths)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid run configuration:\n  " + "\n  ".join(problems))


@dataclass
class RunConfig:
    """One run: model preset x loss configuration x recipe x seed."""

    # data
    dataset: str = ""  # dataset root folder (VCIP2020 or plain layout)
    layout: str = "auto"  # "auto" or a layout of colormamba.data.layouts.LAYOUTS
    # Selection and reporting use different splits (docs/evaluation.md): choosing best.pt on the split that
    # is then reported inflates every run by its own best-case pick. The spec refuses equal splits unless
    # the evaluated checkpoint is `last`, which no split chose.
    select_split: str = "val"  # validated every epoch: picks best.pt (and ranks a study's sweeps)
    report_split: str = "test"  # scored by the final evaluation: the metrics a report shows
    augment: dict[str, Any] = field(default_factory=dict)  # overrides of colormamba.data.AugmentConfig
    # 0: images as stored; N: every image of every split resized to NxN when read (training, selection and
    # the reported metrics alike), so that a CPU can study full-size data; the metrics are then NxN's
    image_size: int = 0
    # model
    model: str = "paper"  # preset name, see colormamba.models.list_presets()
    model_overrides: dict[str, Any] = field(default_factory=dict)
    scan_backend: str = "auto"  # "auto" or a backend of colormamba.ops (colormamba.ops.backend_names())
    # loss
    loss: str | dict[str, float] = "original"  # preset name or {term: weight}
    loss_weights: dict[str, float] = field(default_factory=dict)  # per-term overrides of the preset
    vgg_weights: str = "pretrained"  # "pretrained" | "random" | path to vgg19-dcbb9e9d.pth
    histogram_distance: str = "w1"  # the `histogram` term's distance: one of HISTOGRAM_DISTANCES
    # recipe (the reference: Adam 1e-4, betas 0.5/0.999, lr halved every 25 epochs, 50 epochs, batch 8)
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lr_step_epochs: int = 25
    lr_gamma: float = 0.5
    grad_clip: float = 0.0  # 0 disables; the reference does not clip
    max_steps_per_epoch: int = 0  # 0 = the whole training split; >0 for smoke runs
    # Generator updates per batch, each with its own forward (the reference's fit.py takes two); the
    # discriminators, when the loss has an adversarial term, update once per batch after the last one.
    # (Field order is the order of a study's sweep axes in its run names: keep it.)
    generator_steps_per_batch: int = 2
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
        if isinstance(self.betas, list):  # JSON round-trips give lists
            self.betas = tuple(self.betas)
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError listing every problem at once (see `problems`)."""
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    def problems(self) -> list[str]:
        """Every problem of this configuration, one "field: message" line each: the one place that checks
        what a run will build, so that a study spec refuses at submit what a worker would fail on.

        Types come from the annotations; ranges and choices from the tables below and from the modules
        that own each list (evaluation protocols: colormamba.metrics; scan backends: colormamba.ops; model
        presets and ModelConfig: colormamba.models; loss presets and terms: colormamba.losses). Those
        import torch (seconds, once per process), hence imported here and not at module level.
        """
        problems = [
            f"{name}: must be {_describe(hint)}, got {getattr(self, name)!r}"
            for name, hint in field_types().items()
            if not _has_type(getattr(self, name), hint)
        ]
        typed = set(field_types()) - {p.split(":", 1)[0] for p in problems}
        if "dataset" in typed and not self.dataset:
            problems.append("dataset: required (path to the dataset root)")
        for name, (ok, requirement) in _RANGES.items():
            if name in typed and not ok(getattr(self, name)):
                problems.append(f"{name}: must be {requirement}, got {getattr(self, name)!r}")
        for name, choices in _choices().items():
            if name in typed and getattr(self, name) not in choices:
                problems.append(f"{name}: must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if "device" in typed and not _is_device(self.device):
            problems.append(f"device: must be one of {', '.join(DEVICES)} or 'cuda:N', got {self.device!r}")
        if "augment" in typed:
            problems += [f"augment.{p}" for p in augment_problems(self.augment)]
        if {"loss", "loss_weights"} <= typed:
            from colormamba.losses import loss_problems

            problems += loss_problems(self.loss, self.loss_weights)
        if {"model", "model_overrides", "scan_backend"} <= typed:
            problems += self._model_problems()
        return problems

    def _model_problems(self) -> list[str]:
        """The preset, each override key (did you mean), and the resolved ModelConfig's own checks."""
        from colormamba.models import ModelConfig, list_presets, resolve_config

        presets = list_presets()
        if self.model not in presets:
            what = unknown(f"unknown preset {self.model!r}", self.model, presets, listing="known presets")
            return [f"model: {what}"]
        known = ModelConfig.field_names()
        clash = "the scan backend is the run's own `scan_backend` field: set it there"
        problems = [
            f"model_overrides.{key}: {clash if key == 'scan_backend' else unknown('unknown key', key, known)}"
            for key in self.model_overrides
            if key == "scan_backend" or key not in known
        ]
        if problems or self.scan_backend not in _choices()["scan_backend"]:  # (that one is reported above)
            return problems
        try:
            resolve_config(self.model, scan_backend=self.scan_backend, **self.model_overrides)
        except ValueError as exc:  # the architecture's own rules (widths, heads, levels)
            problems.append(f"{'model_overrides' if self.model_overrides else 'model'}: {exc}")
        return problems

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from plain data, refusing unknown keys (a typo must not silently use a default)."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown_keys = [key for key in data if key not in known]
        if unknown_keys:
            raise ConfigError([f"{key}: {unknown('unknown key', key, known, listing='known keys')}"
                               for key in unknown_keys])  # fmt: skip
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain data (what checkpoints and status files carry)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out


# field -> (test, requirement): the range of each numeric field, tested once its type is right
_RANGES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    **dict.fromkeys(
        ("epochs", "batch_size", "lr_step_epochs", "generator_steps_per_batch", "cancel_check_every"),
        (lambda v: v >= 1, ">= 1"),
    ),
    **dict.fromkeys(("max_steps_per_epoch", "seed"), (lambda v: v >= 0, ">= 0")),
    "image_size": (lambda v: v == 0 or 8 <= v <= 4096, "0 (as stored) or in [8, 4096]"),
    "num_samples": (lambda v: 0 <= v <= MAX_SAMPLES, f"in [0, {MAX_SAMPLES}]"),
    "lr": (lambda v: v > 0, "> 0"),
    "betas": (lambda v: all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "lr_gamma": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "grad_clip": (lambda v: v >= 0, ">= 0 (0: no clipping)"),
    "checkpoint_interval_s": (lambda v: v >= 0, ">= 0 (0: after every epoch)"),
}


def _choices() -> dict[str, tuple[str, ...]]:
    """The fields that name one of a list, each list from the module that owns it."""
    from colormamba.metrics import PROTOCOLS
    from colormamba.ops import backend_names

    return {
        "layout": ("auto", *LAYOUTS),
        "select_split": EVAL_SPLITS,
        "report_split": EVAL_SPLITS,
        "scan_backend": tuple(backend_names()),
        "protocol": PROTOCOLS,
        "precision": PRECISIONS,
        "histogram_distance": HISTOGRAM_DISTANCES,
    }


def _is_device(name: str) -> bool:
    return name in DEVICES or (name.startswith("cuda:") and name[5:].isdigit())


@functools.cache
def field_types() -> dict[str, Any]:
    """RunConfig's fields and their annotations, resolved (what a study spec's recipe is derived from)."""
    return typing.get_type_hints(RunConfig)


def _has_type(value: Any, hint: Any) -> bool:
    """Whether `value` is plain data of the annotation `hint`. A mapping's values are left to the module
    that reads them (the loss, the augmentation, the model), which names the offending key."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, a) for a in args)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if origin is tuple:
        return isinstance(value, tuple | list) and len(value) == len(args) and all(
            map(_has_type, value, args))
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    """An annotation in words, for "must be ..." messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is dict:
        return "a mapping"
    if origin is tuple:
        return f"a list of {len(args)} numbers" if set(args) == {float} else f"a list of {len(args)} values"
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}.get(
        hint, str(hint)
    )


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
