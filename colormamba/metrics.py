"""Evaluation metrics (PSNR, SSIM, angular error, MAE, LPIPS) and the two evaluation protocols.

Every metric takes batches (N, 3, H, W) of RGB and returns one value per image, (N,) float64, on the
inputs' device; the evaluation averages them over a split. All arithmetic is in float64 so that SSIM
matches `skimage.metrics.structural_similarity(gt, pred, data_range=1, channel_axis=-1)` to well
within 1e-4. LPIPS needs a network and weights: colormamba.lpips_score.

Protocols (docs/evaluation.md; every report says which it used):
- `colormamba`: the reference's test code. The raw float prediction is compared with the per-image
  min-max-normalised ground truth `(gt - min) / (max - min + 1e-3 / 255)` (imaging.normalize_per_image);
  the prediction is not clamped (the reference does not, and a sigmoid output is in (0, 1) anyway); AE
  is the reference's formula, `reference_angular_error`. Comparable with the published tables.
- `plain`: the ground truth in [0, 1] as read from the 8-bit file, the prediction clamped to [0, 1], as
  it would be when written to an image file, and the well-defined AE, `angular_error`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from colormamba.imaging import normalize_per_image
from colormamba.vocabulary import METRIC_NAMES as METRIC_NAMES  # re-exported beside the metrics

if TYPE_CHECKING:
    from colormamba.lpips_score import LPIPSScore

PROTOCOLS = ("colormamba", "plain")
AE_REFERENCE_EPS = 1e-6  # in the denominator of the reference's AE, on [0, 1] pixel vectors
# what the `ae` column is under each protocol, in words (metrics.json carries it)
AE_DEFINITIONS = {
    "colormamba": "mean over pixels of degrees(arccos(<gt, pred> / (|gt| |pred| + 1e-6))), the reference's "
    "formula: identical images score a small positive floor, black pixels 90",
    "plain": "mean over pixels of the angle between gt and pred (atan2): identical pixels score 0, a black "
    "pixel against a non-black one 90",
}

DATA_RANGE = 1.0
# skimage.metrics.structural_similarity defaults: uniform 7x7 window, sample covariance, K1, K2
SSIM_WIN_SIZE = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check_images(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a (pred, gt) pair of RGB batches and return both as float64."""
    if pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"pred must have shape (N, 3, H, W), got {tuple(pred.shape)}")
    if gt.shape != pred.shape:
        raise ValueError(f"gt shape {tuple(gt.shape)} differs from pred shape {tuple(pred.shape)}")
    return pred.detach().double(), gt.detach().double()


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio, data range 1, over all pixels and channels of each image.

    `-10 log10(mean((gt - pred)^2))`; identical images give +inf (as skimage's), which the caller has to
    keep out of means (an exact match does not occur for a trained network's float output).

    Args:
        pred, gt: (N, 3, H, W).
    Returns:
        (N,) in dB.
    """
    pred, gt = _check_images(pred, gt)
    mse = (gt - pred).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(DATA_RANGE**2 / mse)


def ssim(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Structural similarity with skimage's defaults, per image.

    Per channel: local means, variances and covariance over a uniform 7x7 window (covariances scaled by
    49/48, the sample estimate), the SSIM map `(2 mu_x mu_y + C1)(2 s_xy + C2) /
    ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))` with C1 = (0.01)^2, C2 = (0.03)^2, averaged over the
    positions where the window lies inside the image (skimage filters with reflection and then crops a
    3-pixel border, which leaves exactly these), then averaged over the three channels.

    Args:
        pred, gt: (N, 3, H, W), H and W >= 7.
    Returns:
        (N,).
    """
    pred, gt = _check_images(pred, gt)
    if min(pred.shape[-2:]) < SSIM_WIN_SIZE:
        raise ValueError(f"pred: SSIM needs H and W >= {SSIM_WIN_SIZE}, got {tuple(pred.shape[-2:])}")

    def local_mean(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, SSIM_WIN_SIZE, stride=1)  # (N, 3, H - 6, W - 6), valid positions only

    n = SSIM_WIN_SIZE**2
    cov_norm = n / (n - 1)
    mu_x, mu_y = local_mean(gt), local_mean(pred)
    var_x = cov_norm * (local_mean(gt * gt) - mu_x.square())
    var_y = cov_norm * (local_mean(pred * pred) - mu_y.square())
    cov = cov_norm * (local_mean(gt * pred) - mu_x * mu_y)
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2)
    )
    return ssim_map.flatten(1).mean(dim=1)  # channels have equal-sized maps: mean of channel means


def angular_error(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean angle in degrees between predicted and ground-truth RGB vectors, per image (`plain` protocol).

    The angle is `atan2(|gt x pred|, gt . pred)`, the same angle as the reference's
    `degrees(arccos(clamp(<gt, pred> / (|gt| |pred|), -1, 1)))` but accurate near 0, where arccos of a
    rounded cosine gives a few hundredths of a degree for identical vectors; identical pixels score
    exactly 0.
    Black pixels: where both vectors are zero the pixel scores 0 (identical images always score 0);
    where exactly one is zero it scores 90 degrees, the value of the reference formula with a small
    epsilon in the denominator, so that predicting black is not rewarded.

    Args:
        pred, gt: (N, 3, H, W), non-negative.
    Returns:
        (N,) in degrees.
    """
    pred, gt = _check_images(pred, gt)
    dot = (gt * pred).sum(dim=1)  # (N, H, W)
    cross = torch.linalg.cross(gt, pred, dim=1).norm(dim=1)
    angle = torch.atan2(cross, dot)
    # a fused multiply-add in the cross product can leave ~1e-16 for identical vectors: pin those to 0
    # (this also covers both-black pixels)
    angle = torch.where((gt == pred).all(dim=1), torch.zeros_like(angle), angle)
    gt_black, pred_black = (gt == 0).all(dim=1), (pred == 0).all(dim=1)
    angle = torch.where(gt_black ^ pred_black, torch.full_like(angle, math.pi / 2), angle)
    return torch.rad2deg(angle).flatten(1).mean(dim=1)


def reference_angular_error(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """The reference's AE, as its test code computes it (`colormamba` protocol), per image.

    Per pixel `degrees(arccos(<gt, pred> / (|gt| |pred| + 1e-6)))` on the [0, 1] RGB vectors (the
    normalised ground truth and the raw prediction), averaged over the pixels. Unlike `angular_error`,
    the epsilon makes identical images score above 0: about `degrees(sqrt(2e-6) / |v|)` for a pixel
    vector v (0.05-0.1 degrees for mid-grey to white, more for dark pixels), and 90 degrees wherever
    either vector is black. The published AE values include that floor, so this is what compares with
    them. The clamp to [-1, 1] only guards against rounding; it never binds for [0, 1] images.

    Args:
        pred, gt: (N, 3, H, W).
    Returns:
        (N,) in degrees.
    """
    pred, gt = _check_images(pred, gt)
    dot = (gt * pred).sum(dim=1)  # (N, H, W)
    norms = gt.norm(dim=1) * pred.norm(dim=1)
    cosine = (dot / (norms + AE_REFERENCE_EPS)).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cosine)).flatten(1).mean(dim=1)


def mae(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean absolute error on the 0-255 scale over all pixels and channels, per image.

    Args:
        pred, gt: (N, 3, H, W) in [0, 1].
    Returns:
        (N,).
    """
    pred, gt = _check_images(pred, gt)
    return (gt - pred).abs().flatten(1).mean(dim=1) * 255.0


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")


def prepare_target(gt: torch.Tensor, protocol: str) -> torch.Tensor:
    """The ground truth a protocol compares against.

    Args:
        gt: (N, 3, H, W) ground truth in [0, 1].
        protocol: "colormamba" (per-image normalised, as the reference) or "plain" (as is).
    Returns:
        (N, 3, H, W).
    """
    _check_protocol(protocol)
    return normalize_per_image(gt) if protocol == "colormamba" else gt


def compute_metrics(
    pred: torch.Tensor, gt: torch.Tensor, protocol: str, lpips: LPIPSScore | None = None
) -> dict[str, torch.Tensor]:
    """All metrics of a batch under one protocol (see the module docstring).

    Args:
        pred: (N, 3, H, W) the network's RGB output.
        gt: (N, 3, H, W) ground truth in [0, 1], not normalised.
        protocol: one of PROTOCOLS.
        lpips: the LPIPS network; None leaves LPIPS out (training's validation skips it: it is the one
            metric that costs a network forward). An unavailable one gives NaN.
    Returns:
        {"psnr", "ssim", "ae", "mae"} and, with `lpips`, "lpips" -> (N,) float64 on the inputs' device.
    """
    pred, gt = _check_images(pred, gt)
    target = prepare_target(gt, protocol)
    if protocol == "plain":
        pred = pred.clamp(0.0, 1.0)
    ae = reference_angular_error if protocol == "colormamba" else angular_error
    metrics = {"psnr": psnr, "ssim": ssim, "ae": ae, "mae": mae}
    out = {name: metric(pred, target) for name, metric in metrics.items()}
    if lpips is not None:
        out["lpips"] = lpips(pred, target)
    return out
