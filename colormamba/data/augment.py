"""Training-pair augmentation (docs/evaluation.md's recipe): flip, crop-and-resize, contrast jitter.

The geometry (flip, crop) is shared by NIR and RGB: both are stacked into one (4, H, W) tensor and
transformed together, so a pixel of the input always lands where its colour lands.

Contrast jitter applies to the NIR input only. The reference puts torchvision's ColorJitter on the input;
jittering the RGB target as well would make the same NIR content map to randomly stretched colours, i.e.
add noise to the very quantity the losses and PSNR measure, and teach the model to output arbitrary
contrast. Jittering the input alone teaches what it is for: robustness to NIR exposure and sensor gain.

Randomness comes from a torch.Generator seeded from (seed, epoch, index), never from the global RNG, so
an item's augmentation does not depend on worker count, sampling order or how many items came before:
a run resumed at epoch e sees exactly what an uninterrupted run sees at epoch e.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation of training pairs; the defaults are the study's recipe.

    Attributes:
        enabled: False turns every augmentation off.
        hflip_p: probability of a horizontal flip.
        crop_fraction: side of the random crop as a fraction of the image side (200/256: a 200x200 crop of
            a 256x256 image), resized back to the full size; 1.0 disables cropping.
        contrast_range: (low, high) of the uniform contrast factor.
        contrast_p: probability of contrast jitter (NIR only, see the module docstring).
    """

    enabled: bool = True
    hflip_p: float = 0.5
    crop_fraction: float = 200 / 256
    contrast_range: tuple[float, float] = (0.5, 1.5)
    contrast_p: float = 0.5

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
        if problems:
            raise ValueError("AugmentConfig: " + "; ".join(problems))


@dataclass(frozen=True)
class AugmentParams:
    """The random choices for one item: flip, crop box (top, left, height, width), contrast factor or None."""

    flip: bool
    crop: tuple[int, int, int, int]
    contrast: float | None


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator that depends on (seed, epoch, index) only.

    NumPy's SeedSequence mixes the three numbers, so nearby triples give unrelated streams
    (seed + epoch + index would make (0, 1, 0) and (0, 0, 1) identical).
    """
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def sample_params(cfg: AugmentConfig, height: int, width: int, generator: torch.Generator) -> AugmentParams:
    """Draw one item's augmentation.

    Always draws the same five numbers in the same order, so changing one probability in the config does
    not reshuffle the other choices.
    """
    draws = torch.rand(5, generator=generator, dtype=torch.float64).tolist()
    u_flip, u_top, u_left, u_contrast, u_factor = draws
    crop_h = max(1, round(cfg.crop_fraction * height))
    crop_w = max(1, round(cfg.crop_fraction * width))
    top = math.floor(u_top * (height - crop_h + 1))
    left = math.floor(u_left * (width - crop_w + 1))
    low, high = cfg.contrast_range
    contrast = low + (high - low) * u_factor if u_contrast < cfg.contrast_p else None
    return AugmentParams(flip=u_flip < cfg.hflip_p, crop=(top, left, crop_h, crop_w), contrast=contrast)


def augment_batch(
    nir: torch.Tensor, rgb: torch.Tensor, params: Sequence[AugmentParams]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply each item's augmentation to a batch, on whatever device the batch is on.

    One code path for one item and for a batch on the GPU (the training loop keeps the split there), so
    both give the same pixels: a flip, then the crop resized back with bicubic interpolation, antialias
    on (for upsampling that is PIL's bicubic kernel, a = -0.5, which the reference's PIL-based transforms
    use; antialias off would switch to the sharper a = -0.75 kernel), clamped to [0, 1] because bicubic
    overshoots; then contrast jitter on the NIR: a blend with the image's mean (torchvision's
    adjust_contrast for one channel), clamped to [0, 1].

    Args:
        nir: (B, 1, H, W) in [0, 1].
        rgb: (B, 3, H, W) in [0, 1].
        params: B items' choices (sample_params); every crop has the same size, as sample_params gives
            for one frame size.
    Returns:
        nir (B, 1, H, W) and rgb (B, 3, H, W), in [0, 1], new tensors.
    """
    if len(params) != nir.shape[0]:
        raise ValueError(f"augment_batch: {len(params)} params for a batch of {nir.shape[0]}")
    height, width = nir.shape[-2:]
    both = torch.cat([nir, rgb], dim=1)  # (B, 4, H, W): one geometry for input and target
    flipped = [i for i, p in enumerate(params) if p.flip]
    if flipped:
        both[flipped] = both[flipped].flip(-1)
    crop_sizes = {p.crop[2:] for p in params}
    if len(crop_sizes) != 1:
        raise ValueError(f"augment_batch: the items' crops must share one size, got {sorted(crop_sizes)}")
    crop_h, crop_w = crop_sizes.pop()
    if (crop_h, crop_w) != (height, width):
        corners = [p.crop[:2] for p in params]
        crops = [
            item[:, top : top + crop_h, left : left + crop_w]
            for item, (top, left) in zip(both, corners, strict=True)
        ]
        both = F.interpolate(
            torch.stack(crops), size=(height, width), mode="bicubic", align_corners=False, antialias=True
        ).clamp_(0.0, 1.0)
    nir, rgb = both[:, :1], both[:, 1:]
    jittered = [i for i, p in enumerate(params) if p.contrast is not None]
    if jittered:
        factor = torch.tensor([params[i].contrast for i in jittered], dtype=nir.dtype).to(nir.device)
        grey = nir[jittered]
        mean = grey.mean(dim=(1, 2, 3), keepdim=True)
        nir = nir.clone()
        nir[jittered] = ((grey - mean) * factor.view(-1, 1, 1, 1) + mean).clamp_(0.0, 1.0)
    return nir, rgb


def apply_params(
    nir: torch.Tensor, rgb: torch.Tensor, params: AugmentParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one item's augmentation (augment_batch on a batch of one).

    Args:
        nir: (1, H, W) in [0, 1].
        rgb: (3, H, W) in [0, 1], same H, W.
    Returns:
        nir (1, H, W) and rgb (3, H, W), in [0, 1].
    """
    out_nir, out_rgb = augment_batch(nir[None], rgb[None], [params])
    return out_nir[0], out_rgb[0]


def augment_pair(
    nir: torch.Tensor, rgb: torch.Tensor, cfg: AugmentConfig, seed: int, epoch: int, index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment one training pair, deterministically in (seed, epoch, index).

    Args:
        nir: (1, H, W) in [0, 1].
        rgb: (3, H, W) in [0, 1].
        cfg: what to apply; `cfg.enabled` False returns the inputs unchanged.
        seed, epoch, index: non-negative; the run's seed, the epoch and the item's index in the dataset.
    Returns:
        nir (1, H, W) and rgb (3, H, W), in [0, 1].
    """
    if not cfg.enabled:
        return nir, rgb
    params = sample_params(cfg, nir.shape[1], nir.shape[2], item_generator(seed, epoch, index))
    return apply_params(nir, rgb, params)
