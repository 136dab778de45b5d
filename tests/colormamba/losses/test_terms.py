"""Pixel terms (mse, cosine, msssim, hsv) against numpy and pytorch-msssim oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_msssim
import torch
import torch.nn.functional as F

from colormamba.losses.terms import (
    MSSSIM_SCALE_WEIGHTS,
    MSSSIM_WIN_SIGMA,
    MSSSIM_WIN_SIZE,
    _truncated_ms_ssim,
    cosine_loss,
    hsv_loss,
    mse_loss,
    msssim_loss,
    msssim_scales,
)


def _smooth(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def test_mse_matches_numpy() -> None:
    torch.manual_seed(0)
    p, t = torch.rand(2, 3, 5, 6), torch.rand(2, 3, 5, 6)
    assert mse_loss(p, t).item() == pytest.approx(float(((p.numpy() - t.numpy()) ** 2).mean()), rel=1e-6)


def test_cosine_matches_plain_cosine_and_handles_black() -> None:
    torch.manual_seed(0)
    p, t = torch.rand(2, 3, 5, 6) + 0.1, torch.rand(2, 3, 5, 6) + 0.1
    a, b = p.double().numpy(), t.double().numpy()
    plain = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine_loss(p, t).item() == pytest.approx(1 - plain.mean(), abs=1e-5)
    assert cosine_loss(p, p).item() == pytest.approx(0.0, abs=1e-6)
    black = torch.zeros(1, 3, 2, 2)
    assert cosine_loss(black, black).item() == pytest.approx(0.0, abs=1e-6)  # identical black pixels
    red, green = torch.zeros(1, 3, 1, 1), torch.zeros(1, 3, 1, 1)
    red[:, 0], green[:, 1] = 1.0, 1.0
    assert cosine_loss(red, green).item() == pytest.approx(1.0, abs=1e-5)  # orthogonal
    assert cosine_loss(black[..., :1, :1], red).item() == pytest.approx(1.0, abs=2e-3)  # black vs colour


def test_cosine_gradient_is_bounded_for_dark_predictions() -> None:
    pred = torch.full((1, 3, 1, 1), 1e-7, requires_grad=True)
    target = torch.tensor([1.0, 0.2, 0.1]).view(1, 3, 1, 1)
    cosine_loss(pred, target).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().max() < 2e3


@pytest.mark.parametrize(
    ("h", "w", "levels", "win"),
    [(256, 256, 5, 11), (161, 300, 5, 11), (160, 160, 4, 11), (64, 64, 3, 11), (32, 48, 2, 11),
     (16, 16, 1, 11), (11, 40, 1, 11), (10, 10, 1, 9), (8, 9, 1, 7), (3, 3, 1, 3)],
)
def test_msssim_scales(h: int, w: int, levels: int, win: int) -> None:
    assert msssim_scales(h, w) == (levels, win)


def test_msssim_refuses_images_without_room_for_a_window() -> None:
    with pytest.raises(ValueError, match="too small"):
        msssim_scales(2, 50)


def test_five_scales_go_through_pytorch_msssim() -> None:
    p, t = _smooth(2, 176, 170, 0), _smooth(2, 176, 170, 1)
    want = pytorch_msssim.ms_ssim(p, t, data_range=1.0)
    assert msssim_loss(p, t).item() == pytest.approx(1 - want.item(), abs=1e-6)


@pytest.mark.parametrize("levels", [2, 3, 5])
def test_truncated_msssim_is_pytorch_msssim_with_renormalised_weights(levels: int) -> None:
    # pytorch-msssim accepts fewer weights on images > 160 px: the oracle for our truncated recipe
    # (in float64 with a float64 window: its own float32 window alone moves the result by ~1e-5)
    p, t = _smooth(2, 176, 170, 2).double(), _smooth(2, 176, 170, 3).double()
    weights = np.array(MSSSIM_SCALE_WEIGHTS[:levels])
    coords = np.arange(MSSSIM_WIN_SIZE) - MSSSIM_WIN_SIZE // 2
    taps = np.exp(-(coords**2) / (2 * MSSSIM_WIN_SIGMA**2))
    win = torch.from_numpy(taps / taps.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    want = pytorch_msssim.ms_ssim(p, t, data_range=1.0, size_average=False, win=win,
                                  weights=list(weights / weights.sum()))
    torch.testing.assert_close(_truncated_ms_ssim(p, t, levels), want, rtol=0, atol=1e-12)


def test_msssim_single_scale_is_plain_ssim() -> None:
    p, t = _smooth(2, 9, 12, 4), _smooth(2, 9, 12, 5)  # window shrunk to 9 taps
    want = pytorch_msssim.ssim(p, t, data_range=1.0, win_size=9, size_average=True)
    assert msssim_loss(p, t).item() == pytest.approx(1 - want.item(), abs=1e-6)


@pytest.mark.parametrize("size", [64, 32, 16, 8])
def test_msssim_small_images_zero_when_identical_and_finite_gradients(size: int) -> None:
    t = _smooth(2, size, size, 6)
    assert msssim_loss(t, t).item() == pytest.approx(0.0, abs=1e-5)
    p = (0.7 * t + 0.3 * _smooth(2, size, size, 7)).requires_grad_(True)
    loss = msssim_loss(p, t)
    loss.backward()
    assert loss.item() > 1e-3 and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def _hsv(h: float, s: float, v: float) -> torch.Tensor:
    return torch.tensor([h, s, v]).view(1, 3, 1, 1)


def test_hsv_hue_wraps_around() -> None:
    target = _hsv(0.01, 1.0, 0.5)
    near_across_zero = hsv_loss(_hsv(0.99, 1.0, 0.5), target).item()
    near_same_side = hsv_loss(_hsv(0.03, 1.0, 0.5), target).item()
    opposite = hsv_loss(_hsv(0.51, 1.0, 0.5), target).item()
    assert near_across_zero == pytest.approx(near_same_side, rel=1e-3)
    assert near_across_zero < opposite / 100
    # G_B's tanh output -0.01 is hue 0.99
    assert hsv_loss(_hsv(-0.01, 1.0, 0.5), target).item() == pytest.approx(near_across_zero, rel=1e-4)
    # small hue differences cost about (delta h)^2 / 3, like MSE over the three channels
    exact = (1 - math.cos(2 * math.pi * 0.02)) / (2 * math.pi**2) / 3
    assert near_same_side == pytest.approx(exact, rel=1e-4)
    assert near_same_side == pytest.approx(0.02**2 / 3, rel=2e-3)
    assert opposite == pytest.approx((1 / math.pi**2) / 3, rel=1e-5)


def test_hsv_saturation_and_value_errors_and_grey_hue() -> None:
    target = _hsv(0.3, 0.5, 0.4)
    assert hsv_loss(target, target).item() == 0.0
    assert hsv_loss(_hsv(0.3, 0.2, 0.8), target).item() == pytest.approx((0.3**2 + 0.4**2) / 3, rel=1e-5)
    grey = _hsv(0.0, 0.0, 0.4)  # hue is meaningless without saturation
    assert hsv_loss(_hsv(0.5, 0.0, 0.4), grey).item() == 0.0
    half = _hsv(0.0, 0.5, 0.4)  # hue error weighted by the target's saturation
    assert hsv_loss(_hsv(0.5, 0.5, 0.4), half).item() == pytest.approx(0.5 / math.pi**2 / 3, rel=1e-5)


def test_hsv_gradients_are_finite() -> None:
    torch.manual_seed(0)
    pred = (torch.rand(2, 3, 8, 8) * 2 - 1).requires_grad_(True)
    hsv_loss(pred, torch.rand(2, 3, 8, 8)).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


@pytest.mark.parametrize("fn", [mse_loss, cosine_loss, msssim_loss, hsv_loss])
def test_shape_mismatch_is_refused(fn) -> None:
    with pytest.raises(ValueError, match="target shape"):
        fn(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 15))
