"""Training-pair augmentation (docs/evaluation.md's recipe): contrast jitter, then flip and crop-and-resize.

The order is the reference's (its `data_loader.py`): the contrast jitter of the full-size images first,
then the geometry (flip, crop resized back), shared by the NIR, the RGB and the NIR G_B reads as HSV: they
are stacked into one tensor and transformed together, so a pixel of the input always lands where its
colour lands. Jittering first makes PIL's mean luma the whole image's, not the crop's, and puts its 8-bit
rounding before the resize. The reference flips before its jitter; a mirror keeps the mean luma, so the
two commute. What remains different: the reference crops and resizes 8-bit PIL images, and PIL's bicubic
resampling rounds and clips to 8 bits after each of its two passes (horizontal, then vertical), so its
results lie on the 8-bit grid and its overshoot next to saturated pixels is clipped between the passes
(G_B's HSV image is PIL's 8-bit conversion of that result); ours resizes the floats in one go and keeps
them, clamped to [0, 1] at the end.

Contrast jitter as the reference does it (docs/evaluation.md, docs/architecture.md): PIL's
`ImageEnhance.Contrast` with one factor per item, applied to the target RGB and to the NIR *read as RGB*,
which is what G_B converts to its HSV input, and never to the grey NIR that G_A reads. A grey image read
as RGB is that grey in every channel and its luma is the grey itself, so the jittered "NIR read as RGB"
is the jittered grey NIR, and its HSV reading is (0, 0, jittered NIR). Our model derives G_B's HSV input
from the NIR it is given, so an augmented item carries that jittered NIR separately as `hsv_nir`, and the
training step hands it to G_B only (`ColorMamba.forward`'s `hsv_nir`). After the per-image min-max
normalisation the target's jitter changes little (an affine change of contrast is undone; clipping at
factors above 1 and PIL's 8-bit rounding remain), whereas G_B's HSV input keeps it: its hue and saturation
channels are 0, so its normalisation divides the value channel by its maximum and does not undo the shift
towards the mean. `AugmentConfig.nir_contrast` jitters the grey NIR as well, beyond the reference.

Randomness comes from a torch.Generator seeded from (seed, epoch, index), never from the global RNG, so
an item's augmentation does not depend on worker count, sampling order or how many items came before:
a run resumed at epoch e sees exactly what an uninterrupted run sees at epoch e.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from colormamba.data.augment_config import AugmentConfig


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


class AugmentedPair(NamedTuple):
    """An augmented item or batch; tensors in [0, 1], batched (B, C, H, W) or not (C, H, W).

    Attributes:
        nir: (1, H, W) the grey NIR that G_A reads (and G_B as its grey channel and edge map).
        rgb: (3, H, W) the target.
        hsv_nir: (1, H, W) the NIR that G_B reads as HSV: the reference's contrast-jittered "NIR read as
            RGB"; `nir` itself where no jitter was drawn.
    """

    nir: torch.Tensor
    rgb: torch.Tensor
    hsv_nir: torch.Tensor


# PIL's RGB -> L conversion: ITU-R 601-2 luma in 16-bit fixed point, L = (R*19595 + G*38470 + B*7471
# + 0x8000) >> 16. The weights sum to 65536, so a grey pixel read as RGB has the grey level as its luma.
_PIL_LUMA_WEIGHTS = (19595, 38470, 7471)


def pil_contrast(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """PIL's `ImageEnhance.Contrast(image).enhance(factor)` for each image of a batch, on its device.

    PIL blends the 8-bit image with a flat image of its mean luma: m = int(mean(L) + 0.5) with L the
    image's greyscale (luma) version, out = m + factor * (image - m) in float32, clipped to [0, 255] and
    truncated to 8 bits. Inputs are rounded to the 8-bit grid first, as PIL holds bytes.

    Args:
        images: (B, C, H, W) in [0, 1]; C = 1 (a grey "L" image) or 3 (RGB).
        factors: (B,) contrast factors (1 keeps the image, 0 gives the flat mean).
    Returns:
        (B, C, H, W) float32 in [0, 1], on the 8-bit grid.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"pil_contrast: images must be (B, 1 or 3, H, W), got {tuple(images.shape)}")
    levels = images.float().mul(255.0).round_().clamp_(0.0, 255.0)  # (B, C, H, W): PIL's bytes
    if images.shape[1] == 3:
        weights = torch.tensor(_PIL_LUMA_WEIGHTS, dtype=torch.int64, device=images.device).view(1, 3, 1, 1)
        luma = ((levels.long() * weights).sum(dim=1) + 0x8000) >> 16  # (B, H, W)
    else:
        luma = levels[:, 0].long()
    mean = luma.flatten(1).sum(dim=1).double() / luma[0].numel()  # exact: PIL's ImageStat mean
    mean = (mean + 0.5).floor().float().view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    factor = factors.to(device=images.device, dtype=torch.float32).view(-1, 1, 1, 1)
    blended = mean + factor * (levels - mean)  # float32, as PIL's blend computes it
    return blended.clamp_(0.0, 255.0).trunc_().div_(255.0)


def augment_batch(
    nir: torch.Tensor, rgb: torch.Tensor, params: Sequence[AugmentParams], nir_contrast: bool = False
) -> AugmentedPair:
    """Apply each item's augmentation to a batch, on whatever device the batch is on.

    One code path for one item and for a batch on the GPU (the training loop keeps the split there), so
    both give the same pixels. In the reference's order (its `data_loader.py`): first the contrast jitter
    (`pil_contrast`, one factor per item) of the full-size images, on the target and on the NIR that G_B
    reads as HSV, and on the grey NIR only with `nir_contrast` (see the module docstring), so that PIL's
    mean luma is the whole image's and its 8-bit rounding comes before the resize; then one geometry for
    all of them, stacked: a flip, then the crop resized back with bicubic interpolation, antialias on (for
    upsampling that is PIL's bicubic kernel, a = -0.5, which the reference's PIL-based transforms use;
    antialias off would switch to the sharper a = -0.75 kernel), clamped to [0, 1] because bicubic
    overshoots. The flip commutes with the jitter (a mirror keeps the mean luma), so flipping after it
    is still the reference's result, which flips first.

    Args:
        nir: (B, 1, H, W) in [0, 1].
        rgb: (B, 3, H, W) in [0, 1].
        params: B items' choices (sample_params); every crop has the same size, as sample_params gives
            for one frame size.
        nir_contrast: jitter the grey NIR too (AugmentConfig.nir_contrast).
    Returns:
        AugmentedPair of (B, 1, H, W), (B, 3, H, W), (B, 1, H, W) in [0, 1], new tensors.
    """
    if len(params) != nir.shape[0]:
        raise ValueError(f"augment_batch: {len(params)} params for a batch of {nir.shape[0]}")
    jittered = [i for i, p in enumerate(params) if p.contrast is not None]
    # G_B's NIR needs channels of its own only where it differs from the grey NIR G_A reads
    separate = bool(jittered) and not nir_contrast
    stack = torch.cat([nir, rgb, nir] if separate else [nir, rgb], dim=1)  # (B, 5 or 4, H, W), a new tensor
    if jittered:
        factors = torch.tensor([params[i].contrast for i in jittered], dtype=torch.float32)
        stack[jittered, 1:4] = pil_contrast(rgb[jittered], factors)
        hsv_channel = 4 if separate else 0  # with nir_contrast, the grey NIR is G_B's jittered one
        stack[jittered, hsv_channel : hsv_channel + 1] = pil_contrast(nir[jittered], factors)
    stack = _geometry(stack, params)
    nir = stack[:, :1]
    return AugmentedPair(nir, stack[:, 1:4], stack[:, 4:] if separate else nir)


def _geometry(images: torch.Tensor, params: Sequence[AugmentParams]) -> torch.Tensor:
    """The flips and crops of `augment_batch` on (B, C, H, W) images (NIR, RGB and G_B's NIR stacked, so
    one geometry for input and target), in place where it can; returns the result."""
    height, width = images.shape[-2:]
    flipped = [i for i, p in enumerate(params) if p.flip]
    if flipped:
        images[flipped] = images[flipped].flip(-1)
    crop_sizes = {p.crop[2:] for p in params}
    if len(crop_sizes) != 1:
        raise ValueError(f"augment_batch: the items' crops must share one size, got {sorted(crop_sizes)}")
    crop_h, crop_w = crop_sizes.pop()
    if (crop_h, crop_w) != (height, width):
        corners = [p.crop[:2] for p in params]
        crops = [
            item[:, top : top + crop_h, left : left + crop_w]
            for item, (top, left) in zip(images, corners, strict=True)
        ]
        images = F.interpolate(
            torch.stack(crops), size=(height, width), mode="bicubic", align_corners=False, antialias=True
        ).clamp_(0.0, 1.0)
    return images


def apply_params(
    nir: torch.Tensor, rgb: torch.Tensor, params: AugmentParams, nir_contrast: bool = False
) -> AugmentedPair:
    """Apply one item's augmentation (augment_batch on a batch of one).

    Args:
        nir: (1, H, W) in [0, 1].
        rgb: (3, H, W) in [0, 1], same H, W.
        params: the item's choices.
        nir_contrast: jitter the grey NIR too.
    Returns:
        AugmentedPair of (1, H, W), (3, H, W), (1, H, W) in [0, 1].
    """
    out = augment_batch(nir[None], rgb[None], [params], nir_contrast)
    return AugmentedPair(*(t[0] for t in out))


def augment_pair(
    nir: torch.Tensor, rgb: torch.Tensor, cfg: AugmentConfig, seed: int, epoch: int, index: int
) -> AugmentedPair:
    """Augment one training pair, deterministically in (seed, epoch, index).

    Args:
        nir: (1, H, W) in [0, 1].
        rgb: (3, H, W) in [0, 1].
        cfg: what to apply; `cfg.enabled` False returns the inputs unchanged (and `nir` as `hsv_nir`).
        seed, epoch, index: non-negative; the run's seed, the epoch and the item's index in the dataset.
    Returns:
        AugmentedPair of (1, H, W), (3, H, W), (1, H, W) in [0, 1].
    """
    if not cfg.enabled:
        return AugmentedPair(nir, rgb, nir)
    params = sample_params(cfg, nir.shape[1], nir.shape[2], item_generator(seed, epoch, index))
    return apply_params(nir, rgb, params, cfg.nir_contrast)
