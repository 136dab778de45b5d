"""The augmentation's settings, apart from the torch code that applies them (colormamba.data.augment), so
that checking a run configuration (colormamba.config) imports no torch: the job suite's command line
validates specs without paying for it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from colormamba.suggest import unknown


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation of training pairs; the defaults are the study's recipe.

    Attributes:
        enabled: False turns every augmentation off.
        hflip_p: probability of a horizontal flip.
        crop_fraction: side of the random crop as a fraction of the image side (200/256: a 200x200 crop of
            a 256x256 image), resized back to the full size; 1.0 disables cropping.
        contrast_range: (low, high) of the uniform contrast factor.
        contrast_p: probability of contrast jitter (target RGB and G_B's HSV reading of the NIR, see the
            module docstring).
        nir_contrast: jitter the grey NIR that G_A reads too (with the item's factor): a stronger
            augmentation than the reference's, off by default.
    """

    enabled: bool = True
    hflip_p: float = 0.5
    crop_fraction: float = 200 / 256
    contrast_range: tuple[float, float] = (0.5, 1.5)
    contrast_p: float = 0.5
    nir_contrast: bool = False

    def __post_init__(self) -> None:
        problems = _value_problems({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        if problems:
            raise ValueError("AugmentConfig: " + "; ".join(problems))
        # JSON round-trips give lists; frozen, hence object.__setattr__
        object.__setattr__(self, "contrast_range", tuple(float(v) for v in self.contrast_range))


def augment_problems(overrides: Mapping[str, Any]) -> list[str]:
    """Every problem of a run's `augment` overrides, one "key: message" line each: an unknown key (with
    the closest known one: a typo must not silently train the default) or a bad value."""
    defaults = {f.name: f.default for f in dataclasses.fields(AugmentConfig)}
    problems = [f"{key}: {unknown('unknown key', key, defaults)}" for key in overrides if key not in defaults]
    return problems or _value_problems({**defaults, **overrides})


def _value_problems(values: Mapping[str, Any]) -> list[str]:
    """A "field: message" line for each bad value, of any type (a spec may hold anything)."""
    problems = []
    for field in ("enabled", "nir_contrast"):
        if not isinstance(values[field], bool):
            problems.append(f"{field}: must be true or false, got {values[field]!r}")
    for field in ("hflip_p", "contrast_p"):
        if not (_is_number(values[field]) and 0.0 <= values[field] <= 1.0):
            problems.append(f"{field}: must be in [0, 1], got {values[field]!r}")
    if not (_is_number(values["crop_fraction"]) and 0.0 < values["crop_fraction"] <= 1.0):
        problems.append(f"crop_fraction: must be in (0, 1], got {values['crop_fraction']!r}")
    low_high = values["contrast_range"]
    if not (isinstance(low_high, tuple | list) and len(low_high) == 2 and all(map(_is_number, low_high))
            and 0.0 <= low_high[0] <= low_high[1]):  # fmt: skip
        problems.append(f"contrast_range: must be [low, high] with 0 <= low <= high, got {low_high!r}")
    return problems


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
