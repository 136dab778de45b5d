"""Histogram term: each distance (W1, KL, chi2) against its formula and scipy, gradients when colours do not
overlap, bounded pixel count, the run option that picks the distance."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm, wasserstein_distance

from colormamba.config import ConfigError, RunConfig
from colormamba.losses import build_loss
from colormamba.losses.histogram import (
    HISTOGRAM_BINS,
    HISTOGRAM_DISTANCE_SCALE,
    HISTOGRAM_DISTANCES,
    HISTOGRAM_MAX_PIXELS,
    HISTOGRAM_SMOOTHING,
    histogram_distance,
    histogram_loss,
    soft_cdf,
    soft_histogram,
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


# --- the distance option: w1, kl, chi2 -------------------------------------------------------------------


def _reference(pred: np.ndarray, target: np.ndarray, distance: str, bins: int = HISTOGRAM_BINS) -> float:
    """The distance written from the math in float64, independent of the torch code: each pixel a Gaussian
    of one bin width, bin masses from norm.cdf at the interior edges (first and last bins open-ended)."""
    edges = np.arange(1, bins) / bins

    def masses(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # (cdf at the interior edges, masses)
        cdf = norm.cdf(edges[None, :], loc=x.reshape(-1, 1), scale=1 / bins).mean(axis=0)
        return cdf, np.diff(np.concatenate([[0.0], cdf, [1.0]]))

    s = HISTOGRAM_SMOOTHING
    values = []
    for i in range(pred.shape[0]):
        for c in range(pred.shape[1]):
            (cdf_p, p), (cdf_t, t) = masses(pred[i, c]), masses(target[i, c])
            if distance == "w1":
                values.append(np.abs(cdf_p - cdf_t).sum() / bins)
            elif distance == "kl":
                p_s, t_s = (p + s) / (1 + bins * s), (t + s) / (1 + bins * s)
                values.append(np.sum(t_s * np.log(t_s / p_s)))
            else:
                values.append(np.sum((p - t) ** 2 / (p + t + s)))
    return float(np.mean(values))


def _pairs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Image pairs (16x16: every pixel enters the histogram) whose distances differ from each other."""
    g = torch.Generator().manual_seed(3)
    dark, bright, mid, skewed, wide = (torch.rand(2, 3, 16, 16, generator=g) for _ in range(5))
    dark = 0.05 + 0.1 * dark
    return {
        "disjoint": (dark, 0.8 + 0.1 * bright),
        "partly overlapping": (dark, 0.1 + 0.2 * mid),
        "skewed": (skewed**2, 0.2 + 0.6 * wide),
    }


@pytest.mark.parametrize("pair", ["disjoint", "partly overlapping", "skewed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_distance_matches_its_formula(pair: str, dtype: torch.dtype) -> None:
    pred, target = _pairs()[pair]
    got = {d: histogram_distance(pred.to(dtype), target.to(dtype), d).item() for d in HISTOGRAM_DISTANCES}
    want = {d: _reference(pred.double().numpy(), target.double().numpy(), d) for d in HISTOGRAM_DISTANCES}
    for d in HISTOGRAM_DISTANCES:
        assert got[d] == pytest.approx(want[d], rel=1e-5, abs=1e-6), d
    # the inputs tell the distances apart (a formula swapped for another would fail)
    assert min(abs(a - b) for a, b in itertools.combinations(want.values(), 2)) > 0.05, want


def test_soft_histogram_masses_are_the_cdf_differences_and_sum_to_one() -> None:
    x = torch.rand(2, 3, 50, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    masses, cdf = soft_histogram(x), soft_cdf(x)
    assert masses.shape == (2, 3, HISTOGRAM_BINS)
    assert torch.allclose(masses.sum(-1), torch.ones(2, 3, dtype=torch.float64))
    assert torch.allclose(masses.cumsum(-1)[..., :-1], cdf) and (masses >= 0).all()


@pytest.mark.parametrize("distance", HISTOGRAM_DISTANCES)
def test_every_distance_is_zero_for_identical_images_and_positive_otherwise(distance: str) -> None:
    x = torch.rand(2, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    assert histogram_distance(x, x, distance).item() == 0.0
    assert histogram_loss(x, x, distance=distance).item() == 0.0
    for pred, target in _pairs().values():
        assert histogram_distance(pred, target, distance).item() > 0
        assert histogram_loss(pred, target, distance=distance).item() == pytest.approx(
            HISTOGRAM_DISTANCE_SCALE[distance] * histogram_distance(pred, target, distance).item())


def test_w1_still_pulls_disjoint_colours_together_where_kl_and_chi2_barely_move() -> None:
    # The module docstring's claim: all pixels at 0.1 against a target at 0.9. W1's gradient moves every
    # value up; KL and chi2 are saturated and their gradients are orders of magnitude smaller (measured
    # ratios of gradient norms: 2.2e4 for KL, 6.1e3 for chi2; their tiny gradients even point away from
    # the target)
    norms = {}
    for distance in HISTOGRAM_DISTANCES:
        pred = torch.full((2, 3, 16, 16), 0.1, requires_grad=True)
        histogram_distance(pred, torch.full((2, 3, 16, 16), 0.9), distance).backward()
        assert torch.isfinite(pred.grad).all()
        norms[distance] = pred.grad.norm().item()
        if distance == "w1":
            assert (pred.grad < 0).all()  # descent raises every value, towards the target
    assert norms["w1"] > 1000 * norms["kl"] and norms["w1"] > 1000 * norms["chi2"], norms


def test_an_unknown_distance_is_refused_naming_the_known_ones() -> None:
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"'kll'.*w1, kl, chi2.*did you mean 'kl'"):
        histogram_loss(x, x, distance="kll")
    with pytest.raises(ValueError, match=r"'emd'.*w1, kl, chi2"):
        histogram_distance(x, x, "emd")
    with pytest.raises(ValueError, match=r"histogram_distance.*'kll'"):
        build_loss("histogram", histogram_distance="kll")


def test_the_run_option_is_checked_by_the_run_config() -> None:
    assert RunConfig(dataset="d").histogram_distance == "w1"
    assert RunConfig(dataset="d", histogram_distance="kl").histogram_distance == "kl"
    with pytest.raises(ConfigError) as exc:
        RunConfig(dataset="d", histogram_distance="kll")
    (problem,) = exc.value.problems
    assert problem.startswith("histogram_distance:") and "w1, kl, chi2" in problem and "'kll'" in problem


def test_the_composite_loss_computes_the_chosen_distance() -> None:
    g = torch.Generator().manual_seed(5)
    pred, target = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g) ** 3
    loss = build_loss("histogram", {"hsv": 0}, histogram_distance="chi2")
    total, terms = loss(pred, None, target)
    want = histogram_loss(pred, target, distance="chi2")
    assert terms["histogram"].item() == pytest.approx(want.item(), rel=1e-6)
    assert want.item() != pytest.approx(histogram_loss(pred, target).item(), rel=0.05)
    assert total.item() == pytest.approx(loss.active["histogram"] * want.item(), rel=1e-6)
    assert "histogram_distance=chi2" in repr(loss)
    assert "histogram_distance" not in repr(build_loss("histogram"))  # w1, the default, is not shown
    assert "histogram_distance" not in repr(build_loss("original", histogram_distance="kl"))  # no histogram
