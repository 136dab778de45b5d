"""Loss configurations, presets and the composite loss."""

from __future__ import annotations

import math

import pytest
import torch

from colormamba.imaging import rgb_to_hsv
from colormamba.losses import (
    LOSS_PRESETS,
    LOSS_TERMS,
    CompositeLoss,
    build_loss,
    cosine_loss,
    histogram_loss,
    hsv_loss,
    mse_loss,
    msssim_loss,
    resolve_loss_config,
)

STUDY_TERMS = {
    "original": {"mse", "cosine", "msssim", "hsv"},
    "vgg": {"vgg", "hsv"},
    "histogram": {"histogram", "hsv"},
    "combined": {"vgg", "histogram", "cosine", "hsv"},
    "original+vgg": {"mse", "cosine", "msssim", "vgg", "hsv"},
    "original+histogram": {"mse", "cosine", "msssim", "histogram", "hsv"},
}


@pytest.mark.parametrize("name", sorted(STUDY_TERMS))
def test_presets_resolve_to_the_study_configurations(name: str) -> None:
    weights = resolve_loss_config(name)
    assert set(weights) == STUDY_TERMS[name]
    assert all(w > 0 and math.isfinite(w) for w in weights.values())
    assert list(weights) == [t for t in LOSS_TERMS if t in weights]  # canonical order
    weights["hsv"] = 123.0
    assert resolve_loss_config(name)["hsv"] != 123.0  # callers get a copy, presets stay as they are
    assert set(LOSS_PRESETS) == set(STUDY_TERMS)


def test_overrides_win_and_zero_switches_off() -> None:
    weights = resolve_loss_config("original", {"mse": 2.5, "hsv": 0, "adversarial": 0.01})
    assert weights["mse"] == 2.5 and weights["hsv"] == 0.0 and weights["adversarial"] == 0.01
    assert resolve_loss_config({"mse": 1, "cosine": 0.5}) == {"mse": 1.0, "cosine": 0.5}


@pytest.mark.parametrize(
    ("config", "overrides", "match"),
    [
        ({"perceptual": 1.0}, None, "perceptual"),
        ("original", {"ssim": 1.0}, "ssim"),
        ({"mse": -1.0}, None, r"loss\.mse"),
        ({"mse": float("nan")}, None, r"loss\.mse"),
        ("original", {"cosine": float("inf")}, r"loss_weights\.cosine"),
        ({"mse": True}, None, r"loss\.mse"),
        ({"mse": "1"}, None, r"loss\.mse"),
        ("fancy", None, "fancy"),
        ({"mse": 0.0}, None, "no term has a positive weight"),
        (["mse"], None, "preset name or a term"),
    ],
)
def test_bad_configurations_are_refused_naming_the_field(config, overrides, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_loss_config(config, overrides)


def _batch(seed: int = 0, size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 3, size, size, generator=g)
    pred = torch.rand(2, 3, size, size, generator=g)
    pred_hsv = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    return pred, pred_hsv, target


def test_total_is_the_weighted_sum_of_independently_computed_terms() -> None:
    weights = {"mse": 0.5, "cosine": 2.0, "msssim": 1.5, "histogram": 3.0, "hsv": 0.25}
    loss = build_loss(weights)
    pred, pred_hsv, target = _batch()
    total, terms = loss(pred, pred_hsv, target)
    direct = {"mse": mse_loss(pred, target), "cosine": cosine_loss(pred, target),
              "msssim": msssim_loss(pred, target), "histogram": histogram_loss(pred, target),
              "hsv": hsv_loss(pred_hsv, rgb_to_hsv(target))}
    assert set(terms) == set(weights)
    for term, value in direct.items():
        assert terms[term].item() == pytest.approx(value.item(), rel=1e-6)
        assert not terms[term].requires_grad
    assert total.item() == pytest.approx(sum(weights[t] * direct[t].item() for t in weights), rel=1e-6)


def test_explicit_target_hsv_is_used() -> None:
    loss = build_loss({"hsv": 1.0})
    pred, pred_hsv, target = _batch()
    target_hsv = torch.rand_like(pred_hsv)
    _, terms = loss(pred, pred_hsv, target, target_hsv=target_hsv)
    assert terms["hsv"].item() == pytest.approx(hsv_loss(pred_hsv, target_hsv).item(), rel=1e-6)


TERMS_WITH_IMAGES = [t for t in LOSS_TERMS if t != "adversarial"]


@pytest.mark.parametrize("term", TERMS_WITH_IMAGES)
def test_each_term_zero_for_identical_positive_otherwise_finite_gradients(term: str) -> None:
    torch.manual_seed(0)
    loss = CompositeLoss({term: 1.0}, vgg_weights="random")
    pred, _, target = _batch(seed=1)
    target_hsv = rgb_to_hsv(target)
    same, _ = loss(target, target_hsv, target)
    assert same.item() == pytest.approx(0.0, abs=1e-5)
    pred.requires_grad_(True)
    pred_hsv = (torch.rand_like(target) * 2 - 1).requires_grad_(True)
    total, _ = loss(pred, pred_hsv, target)
    total.backward()
    assert total.item() > 1e-3
    grad = pred_hsv.grad if term == "hsv" else pred.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_adversarial_term_needs_discriminator_outputs() -> None:
    loss = build_loss("original", {"adversarial": 0.1})
    assert loss.needs_discriminator and not build_loss("original").needs_discriminator
    pred, pred_hsv, target = _batch()
    with pytest.raises(ValueError, match="disc_fake_outputs"):
        loss(pred, pred_hsv, target)
    fakes = [torch.zeros(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)]
    total, terms = loss(pred, pred_hsv, target, disc_fake_outputs=fakes)
    assert terms["adversarial"].item() == 2.0
    plain, _ = build_loss("original")(pred, pred_hsv, target)
    assert total.item() == pytest.approx(plain.item() + 0.1 * 2.0, rel=1e-6)


def test_hsv_term_needs_an_hsv_prediction() -> None:
    pred, _, target = _batch()
    with pytest.raises(ValueError, match="pred_hsv"):
        build_loss("histogram")(pred, None, target)
    _, terms = build_loss("histogram", {"hsv": 0})(pred, None, target)
    assert set(terms) == {"histogram"}


def test_computes_in_float32_under_autocast() -> None:
    pred, pred_hsv, target = _batch()
    loss = build_loss("original")
    want, _ = loss(pred, pred_hsv, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, terms = loss(pred.bfloat16(), pred_hsv.bfloat16(), target)
    assert got.dtype == torch.float32 and all(v.dtype == torch.float32 for v in terms.values())
    assert got.item() == pytest.approx(want.item(), rel=2e-2)
