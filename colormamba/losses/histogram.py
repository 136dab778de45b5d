"""The `histogram` term: a distance between soft colour histograms, per image and channel.

Each pixel value spreads a Gaussian of standard deviation one bin width over the 64 bins of [0, 1]; the
cumulative histogram at a bin edge e is then `mean_i Phi((e - x_i) / sigma)` (Phi the standard normal
CDF), computed exactly with erf rather than by summing sampled kernel values. Mass falling outside
[0, 1] is counted in the first and last bins, so every histogram sums to 1; a bin's mass is the difference
of the cumulative histogram at its edges.

The distance is a run option (`RunConfig.histogram_distance`, one of HISTOGRAM_DISTANCES):

- `w1` (the default): the mean absolute difference of the two cumulative histograms over the bins, which
  is the Riemann sum of `integral |F_pred - F_target| dt`, i.e. W1 in intensity units (two constant images
  a and b score about |a - b|). It keeps a gradient of the right sign when predicted and target colours
  do not overlap: the cumulative histograms differ over the whole gap, and moving any predicted value
  towards the target shrinks it.
- `kl` and `chi2`: the divergences the study's seed names ("Kullback-Leibler or Chi-squared"), on the
  bins' masses (`histogram_distance` gives the formulas). Both compare bins one by one, so when the colours
  do not overlap they saturate (KL near log(1 / HISTOGRAM_SMOOTHING), chi2 at 2) and their gradient is
  near zero: a predicted value that moves within the bins where only the prediction has mass changes
  nothing, and the target's bins, where the prediction has no mass, have no derivative either. They can
  only refine colour distributions that already overlap; a study running them measures that.

`histogram_loss` multiplies the raw distance by HISTOGRAM_DISTANCE_SCALE, so that one `histogram` weight
serves every distance.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from colormamba.losses.terms import check_pair
from colormamba.suggest import unknown
from colormamba.vocabulary import HISTOGRAM_DISTANCES

HISTOGRAM_BINS = 64
HISTOGRAM_BANDWIDTH_BINS = 1.0  # Gaussian sigma in bin widths
# Pixels per image entering the histogram: a 4096 x 63 edge x 3 channel tensor per image keeps memory
# and time bounded at any resolution; 256x256 images are sampled every 4th row and column.
HISTOGRAM_MAX_PIXELS = 4096
# Added to every bin's mass by `kl` (both histograms, then renormalised) and to `chi2`'s denominators.
# Soft histograms have near-zero bins: a bin a few bandwidths away from every pixel holds ~1e-7 of the
# mass, one further away underflows to 0, and log(t / 0) is infinite. 1e-5 is far above float32's rounding
# of a bin's mass (`soft_histogram`: ~1e-8 where the mass is large, relative precision where it is small)
# and far below the mass of one sampled pixel (1 / 4096 = 2.4e-4), so it removes the infinities without
# hiding any colour that is there; it caps `kl` at about log(1 / 1e-5) = 11.5 per image and channel.
HISTOGRAM_SMOOTHING = 1e-5
# The raw distance times this scale is the term's value, so that one `histogram` weight (LOSS_PRESETS)
# serves every distance: each scale makes the distance's gradient norm at the network's output equal to
# w1's, measured at initialisation on the real data (benchmarks/calibrate_loss_weights.py, results in
# benchmarks/results/2026-12-07_cpu/loss_calibration.json; tests/colormamba/losses/test_calibration.py
# checks these equal that file's). kl's is the least certain: its gradient moved 21 % between two inits.
HISTOGRAM_DISTANCE_SCALE: dict[str, float] = {"w1": 1.0, "kl": 0.00348, "chi2": 0.0922}


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


def soft_histogram(values: torch.Tensor, bins: int = HISTOGRAM_BINS,
                   bandwidth_bins: float = HISTOGRAM_BANDWIDTH_BINS) -> torch.Tensor:
    """The soft histogram's bin masses: p_k = F(e_k) - F(e_{k-1}) with F = `soft_cdf`, the first bin open
    below and the last open above (the mass outside [0, 1] is theirs), so each histogram sums to 1.

    Not computed as differences of `soft_cdf`, which in float32 carry an absolute error of ~1e-7 (CDF values
    near 1) into every bin: 1% of HISTOGRAM_SMOOTHING, and `kl` divides by the small masses (it moved `kl` by
    1e-4 relative against a float64 reference). Each
    pixel's mass in a bin comes instead from the tail masses T(e) = P(beyond e, away from the pixel) =
    erfc(|e - x| / (sigma sqrt 2)) / 2 at the bin's edges, which float32 holds to its relative precision:
    T(lo) - T(hi) for a bin above the pixel, T(hi) - T(lo) below it, 1 - T(lo) - T(hi) for the bin that holds
    it. The same numbers as the CDF differences, without the cancellation.

    Args:
        values: (B, C, N) samples, nominally in [0, 1].
        bins: number of equal bins of [0, 1].
        bandwidth_bins: Gaussian standard deviation in bin widths.
    Returns:
        (B, C, bins), each >= 0 and summing to 1 (up to rounding) over the last dimension.
    """
    edges = torch.arange(1, bins, device=values.device, dtype=values.dtype) / bins  # (bins - 1,)
    sigma = bandwidth_bins / bins
    gap = edges - values.unsqueeze(-1)  # (B, C, N, bins - 1)
    tail = 0.5 * torch.erfc(gap.abs() / (sigma * math.sqrt(2.0)))
    above = gap >= 0  # the edge is at or above the pixel
    # the open ends: no mass beyond them; the lowest edge is below every pixel, the highest above
    tail = nn.functional.pad(tail, (1, 1))  # (B, C, N, bins + 1)
    above = nn.functional.pad(above, (1, 0), value=False)
    above = nn.functional.pad(above, (0, 1), value=True)
    lo, hi, above_lo, above_hi = tail[..., :-1], tail[..., 1:], above[..., :-1], above[..., 1:]
    mass = torch.where(above_lo, lo - hi, torch.where(above_hi, 1 - lo - hi, hi - lo))  # (B, C, N, bins)
    return mass.mean(dim=2)


def check_distance(distance: str) -> None:
    """Refuse a distance that is not one of HISTOGRAM_DISTANCES (ValueError, the closest name suggested)."""
    if distance not in HISTOGRAM_DISTANCES:
        known = ", ".join(HISTOGRAM_DISTANCES)
        raise ValueError(unknown(f"unknown histogram distance {distance!r} (known: {known})", distance,
                                 HISTOGRAM_DISTANCES))  # fmt: skip


def histogram_distance(pred: torch.Tensor, target: torch.Tensor, distance: str = "w1",
                       bins: int = HISTOGRAM_BINS, max_pixels: int = HISTOGRAM_MAX_PIXELS) -> torch.Tensor:
    """The raw (unscaled) distance between soft colour histograms, mean over images and channels.

    With F, T the cumulative soft histograms at the interior bin edges, p, t the bins' masses
    (`soft_histogram`), K = bins and s = HISTOGRAM_SMOOTHING:

    - `w1`: sum_e |F_e - T_e| / K, the 1-D Wasserstein distance in intensity units; in [0, 1].
    - `kl`: KL(target || pred) = sum_k t'_k log(t'_k / p'_k) with p' = (p + s) / (1 + K s) and t' likewise:
      the divergence of the prediction from the target, the direction that is infinite where the target
      has colour and the prediction has none (a missing colour costs most; an extra colour of the
      prediction costs through the mass it takes from the target's bins). Smoothing both keeps them
      distributions, so the value is >= 0 and 0 only for equal histograms; in [0, log(1 / s)].
    - `chi2`: the symmetric chi-squared distance sum_k (p_k - t_k)^2 / (p_k + t_k + s), rather than Pearson's
      sum (p - t)^2 / t: symmetric in its arguments, and bounded (in [0, 2], ~2 for disjoint histograms)
      where Pearson's is infinite wherever the target has an empty bin, as soft histograms have. Here s
      only keeps bins that are empty in both from dividing 0 by 0.

    Args:
        pred, target: (B, 3, H, W) RGB in [0, 1]; each image and channel has its own histogram.
        distance: one of HISTOGRAM_DISTANCES.
        bins: histogram bins over [0, 1].
        max_pixels: pixels per image entering each histogram (`subsample_pixels`).
    Returns:
        Scalar >= 0; 0 for identical images.
    Raises:
        ValueError: unknown distance, bins < 2, or a bad pair of images.
    """
    check_distance(distance)
    check_pair(pred, target)
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    pred_px, target_px = subsample_pixels(pred, max_pixels), subsample_pixels(target, max_pixels)
    if distance == "w1":
        cdf_pred, cdf_target = soft_cdf(pred_px, bins), soft_cdf(target_px, bins)  # (B, 3, bins - 1)
        # sum over edges times the bin width 1/bins: W1 per image and channel; then mean over those
        return (cdf_pred - cdf_target).abs().sum(dim=-1).mean() / bins
    p, t = soft_histogram(pred_px, bins), soft_histogram(target_px, bins)  # (B, 3, bins)
    s = HISTOGRAM_SMOOTHING
    if distance == "kl":
        # (p + s) / (1 + K s) and (t + s) / (1 + K s): the normalisation cancels inside the log
        p_s, t_s = p + s, t + s
        return (t_s * (t_s.log() - p_s.log())).sum(dim=-1).mean() / (1 + bins * s)
    return ((p - t) ** 2 / (p + t + s)).sum(dim=-1).mean()  # chi2


def histogram_loss(pred: torch.Tensor, target: torch.Tensor, bins: int = HISTOGRAM_BINS,
                   max_pixels: int = HISTOGRAM_MAX_PIXELS, distance: str = "w1") -> torch.Tensor:
    """The `histogram` term: HISTOGRAM_DISTANCE_SCALE[distance] times `histogram_distance`.

    Args:
        pred, target: (B, 3, H, W) RGB in [0, 1]; each image and channel has its own histogram.
        bins: histogram bins over [0, 1].
        max_pixels: pixels per image entering each histogram (`subsample_pixels`).
        distance: one of HISTOGRAM_DISTANCES (`histogram_distance` gives each formula).
    Returns:
        Scalar >= 0; 0 for identical images (`w1`: in [0, 1]).
    Raises:
        ValueError: unknown distance, bins < 2, or a bad pair of images.
    """
    value = histogram_distance(pred, target, distance, bins, max_pixels)
    return HISTOGRAM_DISTANCE_SCALE[distance] * value
