"""Pixel-space loss terms: `mse`, `cosine`, `msssim` on RGB and `hsv` on G_B's output.

Each term is a pure function of (prediction, target) returning a scalar to minimise, zero (or within
rounding of zero) for identical inputs. Definitions follow docs/evaluation.md; where the spec leaves a
choice open (black pixels, image sizes too small for five MS-SSIM scales, the hue distance), the choice
is stated in the function's docstring.
"""

from __future__ import annotations

import math

import pytorch_msssim
import torch
import torch.nn.functional as F

# Cosine of RGB vectors extended by a constant fourth component sqrt(COSINE_EPS) (see `cosine_loss`).
# 1e-6 makes that component 1e-3, a quarter of one 8-bit grey level: negligible for any visible colour,
# but it bounds the gradient (|v| >= 1e-3) and defines black pixels.
COSINE_EPS = 1e-6

# MS-SSIM as in pytorch-msssim: Gaussian window 11 taps, sigma 1.5, and the per-scale exponents of
# Wang et al. (2003) that it uses by default.
MSSSIM_WIN_SIZE = 11
MSSSIM_WIN_SIGMA = 1.5
MSSSIM_SCALE_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_SSIM_K1, _SSIM_K2 = 0.01, 0.03  # pytorch-msssim's defaults, data range 1


def check_pair(pred: torch.Tensor, target: torch.Tensor, channels: int = 3) -> None:
    """Refuse a prediction that is not (B, channels, H, W) or a target of another shape (ValueError)."""
    if pred.ndim != 4 or pred.shape[1] != channels:
        raise ValueError(f"pred must have shape (B, {channels}, H, W), got {tuple(pred.shape)}")
    if target.shape != pred.shape:
        raise ValueError(f"target shape {tuple(target.shape)} differs from pred shape {tuple(pred.shape)}")


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all pixels, channels and images.

    Args:
        pred, target: (B, 3, H, W) RGB.
    Returns:
        Scalar.
    """
    check_pair(pred, target)
    return F.mse_loss(pred, target)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean per-pixel cosine similarity between predicted and target RGB vectors.

    The cosine is that of the vectors extended by a common fourth component sqrt(COSINE_EPS):
    `(p.t + eps) / sqrt((|p|^2 + eps)(|t|^2 + eps))`. It stays in [-1, 1] (Cauchy-Schwarz on the extended
    vectors), is exactly 1 for identical pixels including black ones, is about 0 (the 90 degrees the
    angular error gives) for a black pixel against a coloured one, and its gradient is bounded for dark
    predictions, where the plain cosine's grows like 1/|p|.

    Args:
        pred, target: (B, 3, H, W) RGB; the cosine is taken along the channel axis.
    Returns:
        Scalar in [0, 2].
    """
    check_pair(pred, target)
    dot = (pred * target).sum(dim=1) + COSINE_EPS  # (B, H, W)
    norms = ((pred.square().sum(dim=1) + COSINE_EPS) * (target.square().sum(dim=1) + COSINE_EPS)).sqrt()
    return 1.0 - (dot / norms).mean()


def msssim_scales(height: int, width: int) -> tuple[int, int]:
    """How many MS-SSIM scales, and which window size, an image of this size allows.

    pytorch-msssim's five scales need min(H, W) > (11 - 1) * 2**4 = 160, so that the 11-tap window
    still fits after four 2x downsamplings. Smaller images use the largest number of scales L for which
    min(H, W) > 10 * 2**(L - 1) (64x64 -> 3 scales, 32x32 -> 2, 11..20 -> 1); below 11 pixels, plain SSIM
    with the largest odd window that fits.

    Returns:
        (number of scales, window size).
    Raises:
        ValueError: min(H, W) < 3, where no SSIM window fits.
    """
    side = min(height, width)
    for levels in range(len(MSSSIM_SCALE_WEIGHTS), 0, -1):
        if side > (MSSSIM_WIN_SIZE - 1) * 2 ** (levels - 1):
            return levels, MSSSIM_WIN_SIZE
    if side < 3:
        raise ValueError(f"image size {height}x{width} is too small for SSIM (min side must be >= 3)")
    return 1, side if side % 2 == 1 else side - 1


def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, (size,), centred on the middle tap."""
    coords = torch.arange(size, device=like.device, dtype=like.dtype) - size // 2
    taps = torch.exp(-coords.square() / (2 * sigma**2))
    return taps / taps.sum()


def _ssim_and_cs(x: torch.Tensor, y: torch.Tensor, taps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel SSIM and contrast-structure terms with a separable Gaussian, no padding.

    Returns:
        Two (B, C) tensors: mean SSIM map and mean cs map per channel.
    """
    c = x.shape[1]
    k = taps.numel()
    kernel_h = taps.view(1, 1, k, 1).expand(c, 1, k, 1)
    kernel_w = taps.view(1, 1, 1, k).expand(c, 1, 1, k)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kernel_h, groups=c), kernel_w, groups=c)

    c1, c2 = _SSIM_K1**2, _SSIM_K2**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.square()
    var_y = blur(y * y) - mu_y.square()
    cov = blur(x * y) - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x.square() + mu_y.square() + c1) * cs_map
    return ssim_map.flatten(2).mean(-1), cs_map.flatten(2).mean(-1)


def _truncated_ms_ssim(x: torch.Tensor, y: torch.Tensor, levels: int) -> torch.Tensor:
    """MS-SSIM over the first `levels` scales, exponents truncated and renormalised to sum to 1.

    Same recipe as pytorch-msssim's `ms_ssim` (relu on cs and on the last SSIM, 2x average pooling
    with padding on odd sides), which refuses images of min side <= 160 whatever the number of scales.

    Returns:
        (B,) MS-SSIM per image (mean over channels).
    """
    weights = x.new_tensor(MSSSIM_SCALE_WEIGHTS[:levels])
    weights = weights / weights.sum()
    taps = _gaussian_window(MSSSIM_WIN_SIZE, MSSSIM_WIN_SIGMA, x)
    factors = []
    for level in range(levels):
        ssim, cs = _ssim_and_cs(x, y, taps)  # (B, C) each
        if level < levels - 1:
            factors.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    factors.append(torch.relu(ssim))
    stacked = torch.stack(factors, dim=0)  # (levels, B, C)
    return torch.prod(stacked ** weights.view(-1, 1, 1), dim=0).mean(dim=1)


def msssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - MS-SSIM on RGB (data range 1), averaged over images.

    Five scales through pytorch-msssim when min(H, W) > 160 (the study's 256x256 images). Smaller images
    (CPU tests and demos) use as many scales as fit, with the scale exponents truncated and renormalised
    (`msssim_scales`); with one scale this is plain SSIM, computed by pytorch-msssim with a window shrunk
    to the image when the 11-tap window does not fit.

    Args:
        pred, target: (B, 3, H, W) RGB in [0, 1].
    Returns:
        Scalar; 0 for identical images.
    """
    check_pair(pred, target)
    levels, win_size = msssim_scales(pred.shape[-2], pred.shape[-1])
    if levels == len(MSSSIM_SCALE_WEIGHTS):
        value = pytorch_msssim.ms_ssim(
            pred, target, data_range=1.0, size_average=False, win_size=win_size,
            win_sigma=MSSSIM_WIN_SIGMA, weights=list(MSSSIM_SCALE_WEIGHTS),
        )
    elif levels == 1:
        value = pytorch_msssim.ssim(
            pred, target, data_range=1.0, size_average=False, win_size=win_size, win_sigma=MSSSIM_WIN_SIGMA
        )
    else:
        value = _truncated_ms_ssim(pred, target, levels)
    return 1.0 - value.mean()


def hsv_loss(pred_hsv: torch.Tensor, target_hsv: torch.Tensor) -> torch.Tensor:
    """Supervision of G_B's HSV prediction: squared errors, hue compared on the circle.

    Per pixel, `(s_t * d_h + (s_p - s_t)^2 + (v_p - v_t)^2) / 3` with the hue distance
    `d_h = (1 - cos(2 pi (h_p - h_t))) / (2 pi^2)`, which equals (h_p - h_t)^2 to first order for small
    differences, is periodic with period 1 (hue 0.99 is close to 0.01; G_B's tanh output -0.01 is the
    same hue as 0.99) and peaks at 1/pi^2 for opposite hues. The hue error is weighted by the target's
    saturation (clamped to [0, 1]) because hue is undefined for grey pixels (rgb_to_hsv sets it to 0
    there), so an unweighted term would pull grey regions towards red. With saturation 1 this is the mean
    squared error over the three channels, the reference's choice for HSV.

    Args:
        pred_hsv: (B, 3, H, W) G_B output (h, s, v) in (-1, 1).
        target_hsv: (B, 3, H, W) target (h, s, v), hue as a fraction of a turn.
    Returns:
        Scalar; 0 for identical inputs.
    """
    check_pair(pred_hsv, target_hsv)
    h_p, s_p, v_p = pred_hsv.unbind(dim=1)
    h_t, s_t, v_t = target_hsv.unbind(dim=1)
    hue = (1.0 - torch.cos(2 * math.pi * (h_p - h_t))) / (2 * math.pi**2)
    per_pixel = s_t.clamp(0.0, 1.0) * hue + (s_p - s_t).square() + (v_p - v_t).square()
    return per_pixel.mean() / 3.0
