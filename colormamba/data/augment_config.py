"""The augmentation's settings, apart from the torch code that applies them (colormamba.data.augment), so
that checking a run configuration (colormamba.config) imports no torch: the job suite's command line
validates specs without paying for it."""

from __future__ import annotations

from dataclasses import dataclass


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
        # JSON round-trips give lists; frozen, hence object.__setattr__
        object.__setattr__(self, "contrast_range", tuple(float(v) for v in self.contrast_range))
        problems = []
        for field in ("hflip_p", "contrast_p"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                problems.append(f"{field} must be in [0, 1], got {getattr(self, field)}")
        if not 0.0 < self.crop_fraction <= 1.0:
            problems.append(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        low_high = self.contrast_range
        if len(low_high) != 2 or not 0.0 <= low_high[0] <= low_high[1]:
            problems.append(f"contrast_range must be (low, high) with 0 <= low <= high, got {low_high}")
        for field in ("enabled", "nir_contrast"):
            if not isinstance(getattr(self, field), bool):
                problems.append(f"{field} must be true or false, got {getattr(self, field)!r}")
        if problems:
            raise ValueError("AugmentConfig: " + "; ".join(problems))
