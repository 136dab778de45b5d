"""The `histogram` term: 1-D Wasserstein distance between soft colour histograms, per image and channel.

Each pixel value spreads a Gaussian of standard deviation one bin width over the 64 bins of [0, 1]; the
cumulative histogram at a bin edge e is then `mean_i Phi((e - x_i) / sigma)` (Phi the standard normal
CDF), computed exactly with erf rather than by summing sampled kernel values. Mass falling outside
[0, 1] is counted in the first and last bins, so every histogram sums to 1. The distance is the mean
absolute difference of the two cumulative histograms over the bins, which is the Riemann sum of
`integral |F_pred - F_target| dt`, i.e. W1 in intensity units (two constant images a and b score about
|a - b|).

Unlike KL, L1 or intersection of soft histograms, this distance keeps a gradient of the right sign when
predicted and target colours do not overlap: the cumulative histograms differ over the whole gap, and
moving any predicted value towards the target shrinks it.
"""

from __future__ import annotations

import math

import torch

from colormamba.losses.terms import check_pair

HISTOGRAM_BINS = 64
HISTOGRAM_BANDWIDTH_BINS = 1.0  # Gaussian sigma in bin widths
# Pixels per image entering the histogram: a 4096 x 63 edge x 3 channel tensor per image keeps memory
# and time bounded at any resolution; 256x256 images are sampled every 4th row and column.
HISTOGRAM_MAX_PIXELS = 4096


def subsample_stride(height: int, width: int, max_pixels: int = HISTOGRAM_MAX_PIXELS) -> int:
    """Smallest stride s with ceil(H / s) * ceil(W / s) <= max_pixels."""
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    stride = max(1, math.ceil(math.sqrt(height * width / max_pixels)))
    while math.ceil(height / stride) * math.ceil(width / stride) > max_pixels:
        stride += 1
    return stride


def subsample_pixels(x: torch.Tensor, max_pixels: int = HISTOGRAM_MAX_PIXELS) -> torch.Tensor:
    """A fixed regular lattice of at most `max_pixels` pixels per image, as (B, C, N).

    Deterministic (the same pixels for prediction and target, every call) and, unlike area averaging,
    it leaves the colour distribution unchanged in expectation. Only the sampled pixels receive the
    term's gradient; the generator is convolutional, so its weights still learn from them.

    Args:
        x: (B, C, H, W).
    Returns:
        (B, C, N), N <= max_pixels.
    """
    stride = subsample_stride(x.shape[-2], x.shape[-1], max_pixels)
    offset = stride // 2  # the lattice's cells are centred rather than hugging the top-left border
    return x[..., offset::stride, offset::stride].flatten(2)


def soft_cdf(values: torch.Tensor, bins: int = HISTOGRAM_BINS,
             bandwidth_bins: float = HISTOGRAM_BANDWIDTH_BINS) -> torch.Tensor:
    """Cumulative soft histogram at the bins' interior upper edges.

    Args:
        values: (B, C, N) samples, nominally in [0, 1].
        bins: number of equal bins of [0, 1].
        bandwidth_bins: Gaussian standard deviation in bin widths.
    Returns:
        (B, C, bins - 1): the fraction of mass below edges 1/bins .. (bins-1)/bins (the last bin's upper
        edge is omitted: every histogram has all its mass below it).
    """
    edges = torch.arange(1, bins, device=values.device, dtype=values.dtype) / bins  # (bins - 1,)
    sigma = bandwidth_bins / bins
    z = (edges - values.unsqueeze(-1)) / (sigma * math.sqrt(2.0))  # (B, C, N, bins - 1)
    return (0.5 * (1.0 + torch.erf(z))).mean(dim=2)


def histogram_loss(pred: torch.Tensor, target: torch.Tensor, bins: int = HISTOGRAM_BINS,
                   max_pixels: int = HISTOGRAM_MAX_PIXELS) -> torch.Tensor:
    """Mean over images and channels of the W1 distance between soft colour histograms.

    Args:
        pred, target: (B, 3, H, W) RGB in [0, 1]; each image and channel has its own histogram.
        bins: histogram bins over [0, 1].
        max_pixels: pixels per image entering each histogram (`subsample_pixels`).
    Returns:
        Scalar in [0, 1]; 0 for identical images.
    """
    check_pair(pred, target)
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    cdf_pred = soft_cdf(subsample_pixels(pred, max_pixels), bins)  # (B, 3, bins - 1)
    cdf_target = soft_cdf(subsample_pixels(target, max_pixels), bins)
    # sum over edges times the bin width 1/bins: W1 per image and channel; then mean over those
    return (cdf_pred - cdf_target).abs().sum(dim=-1).mean() / bins
