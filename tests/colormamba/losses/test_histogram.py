"""Histogram term: W1 against scipy, gradients when colours do not overlap, bounded pixel count."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from colormamba.losses.histogram import (
    HISTOGRAM_MAX_PIXELS,
    histogram_loss,
    subsample_pixels,
    subsample_stride,
)


def test_identical_images_score_zero() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 24, 20)
    assert histogram_loss(x, x).item() == 0.0


@pytest.mark.parametrize(("a", "b"), [(0.1, 0.9), (0.3, 0.35), (0.5, 0.2)])
def test_constant_images_score_their_distance(a: float, b: float) -> None:
    # W1 between two point masses is |a - b|; the soft binning is accurate to about a bin (1/64)
    pred, target = torch.full((1, 3, 8, 8), a), torch.full((1, 3, 8, 8), b)
    assert histogram_loss(pred, target).item() == pytest.approx(abs(a - b), abs=1 / 64)


def test_matches_scipy_wasserstein_on_random_images() -> None:
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(2, 3, 32, 32, generator=g) ** 2  # skewed towards dark
    target = 0.2 + 0.6 * torch.rand(2, 3, 32, 32, generator=g)
    want = np.mean([
        wasserstein_distance(pred[i, c].flatten().numpy(), target[i, c].flatten().numpy())
        for i in range(2) for c in range(3)
    ])
    got = histogram_loss(pred, target).item()
    assert want > 0.1 and got == pytest.approx(want, abs=0.01)


def test_gradient_when_colours_do_not_overlap() -> None:
    pred = torch.full((2, 3, 16, 16), 0.1, requires_grad=True)
    target = torch.full((2, 3, 16, 16), 0.9)
    loss = histogram_loss(pred, target)
    loss.backward()
    # W1 ~ target - pred: d loss / d (uniform shift of pred) = -1, carried by the sampled pixels
    assert pred.grad.sum().item() == pytest.approx(-1.0, rel=0.05)
    assert (pred.grad <= 0).all()
    with torch.no_grad():
        stepped = histogram_loss(pred - 0.05 * pred.grad / pred.grad.abs().max(), target)
    assert stepped.item() < loss.item() - 0.04


def test_moving_towards_the_target_reduces_the_loss_on_textured_images() -> None:
    g = torch.Generator().manual_seed(2)
    target = 0.6 + 0.3 * torch.rand(1, 3, 32, 32, generator=g)
    pred = (0.1 * torch.rand(1, 3, 32, 32, generator=g)).requires_grad_(True)
    losses = []
    for _ in range(5):
        loss = histogram_loss(pred, target)
        losses.append(loss.item())
        (grad,) = torch.autograd.grad(loss, pred)
        assert torch.isfinite(grad).all()
        with torch.no_grad():
            pred -= 0.1 * grad / grad.abs().max()
    assert all(b < a for a, b in itertools.pairwise(losses))


@pytest.mark.parametrize(("h", "w"), [(256, 256), (257, 300), (64, 64), (65, 64), (10, 7), (1080, 1920)])
def test_pixel_count_is_bounded(h: int, w: int) -> None:
    stride = subsample_stride(h, w)
    count = math.ceil(h / stride) * math.ceil(w / stride)
    assert count <= HISTOGRAM_MAX_PIXELS
    assert stride == 1 or math.ceil(h / (stride - 1)) * math.ceil(w / (stride - 1)) > HISTOGRAM_MAX_PIXELS
    x = torch.zeros(1, 1, h, w)
    assert subsample_pixels(x).shape[-1] <= HISTOGRAM_MAX_PIXELS


def test_256_images_use_every_fourth_pixel_deterministically() -> None:
    x = torch.arange(256 * 256, dtype=torch.float32).view(1, 1, 256, 256)
    sampled = subsample_pixels(x)
    assert sampled.shape == (1, 1, 4096)
    assert torch.equal(sampled, subsample_pixels(x))
    assert sampled[0, 0, 0].item() == 2 * 256 + 2 and sampled[0, 0, 1].item() == 2 * 256 + 6
