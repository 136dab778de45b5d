"""Loss-weight calibration: each term's gradient at the network's outputs, and the weights derived from them.

The reference weighs its RGB terms 20x its HSV term (`20 * mse(rgb) + 20 * criterion(rgb) + criterion(hsv)`).
That ratio of weights means something only for the reference's own terms: a configuration that swaps in
other RGB terms (VGG features, colour histograms) with the same weight of 20 changes the balance between
G_A's and G_B's supervision by however much those terms' gradients differ in size. What the optimiser
sees of a loss term is its gradient, and at the network's output that gradient is the same whatever the
network is: so the balance is measured there, once, at initialisation on real data, and the weights are
set so that every configuration keeps the reference's RGB:HSV balance in gradient terms.

Measured (`output_gradients`): for each term, d(term) / d(output), where the output is G_A's RGB tensor
for the RGB terms (`mse`, `cosine`, `msssim`, `vgg`, `histogram`, and `histogram:<distance>`, the raw
value of each histogram distance) and G_B's HSV tensor for `hsv`; the target is normalised per image as
`train_step` does. Only the term is differentiated, not the network: the outputs are leaves.

Derived (`derive_weights`, the rule; norms are means over the measured batches and initialisations):

(a) `hsv` weighs 1 in every configuration;
(b) the reference's RGB:HSV balance is R = |grad (20 mse + 20 cosine + 20 msssim)| / |grad hsv|;
(c) within a configuration the baseline's terms (mse, cosine, msssim) keep the reference's weight 20, and
    every other RGB term (vgg, histogram) gets the weight that makes its weighted gradient norm equal to
    the mean weighted gradient norm of the baseline's three terms, 20 |grad t| averaged over mse, cosine
    and msssim (whether or not the configuration has them);
(d) then all RGB weights of the configuration are multiplied by one factor so that the norm of the
    gradient of its weighted RGB sum equals the reference's: its RGB:HSV balance is R.

`original` is then exactly mse 20, cosine 20, msssim 20, hsv 1. Weights are rounded to 3 significant
figures. (c) makes the terms of a mixed configuration count alike (none drowns the others), (d) keeps G_B's
share of the generator's supervision what the reference gives it. Since `hsv` weighs 1 everywhere, (d) is
the same as giving every configuration's RGB gradient the reference's norm: |grad hsv| cancels, so the
weights do not depend on it (G_B's initialisation moves it a lot); R is reported, as the balance kept.

The gradient of a weighted sum is the weighted sum of the terms' gradients, so the norm that (d) needs is
sqrt(w^T G w) with G the Gram matrix of the per-term gradient tensors of one batch: a `GradientSample`
keeps that matrix (exact, and small enough to store with the results), not the tensors. Norms are taken
per batch and then averaged, as a training run sees them batch by batch.

`histogram_distance_scales` gives each histogram distance the factor that makes its gradient norm equal to
w1's (HISTOGRAM_DISTANCE_SCALE), so that one `histogram` weight serves every distance.

benchmarks/calibrate_loss_weights.py runs this on the real data and writes the results.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from colormamba.imaging import normalize_per_image, rgb_to_hsv
from colormamba.losses.config import HSV_WEIGHT, LOSS_PRESETS, RGB_TERMS, rgb_term
from colormamba.losses.config import RGB_HSV_RATIO as REFERENCE_RGB_WEIGHT
from colormamba.losses.histogram import HISTOGRAM_DISTANCES, histogram_distance
from colormamba.losses.terms import hsv_loss
from colormamba.losses.vgg import VGGPerceptualLoss

BASELINE_TERMS = ("mse", "cosine", "msssim")  # the reference's RGB terms, the study's `original`
TERMS = (*RGB_TERMS, "hsv")
REFERENCE = "reference"  # key of the reference RGB objective's gradient, 20 (mse + cosine + msssim)
HISTOGRAM_PREFIX = "histogram:"  # `histogram:<distance>`: that distance's raw value (scale 1)
SIGNIFICANT_DIGITS = 3

# The configurations whose weights are derived: each preset's RGB terms (each also has `hsv`).
CONFIGURATIONS: dict[str, tuple[str, ...]] = {
    name: tuple(term for term in weights if term != "hsv") for name, weights in LOSS_PRESETS.items()
}


def histogram_term(distance: str) -> str:
    """The name under which a histogram distance's raw gradient is measured, e.g. `histogram:kl`."""
    return HISTOGRAM_PREFIX + distance


def _rgb_term_value(term: str, pred: torch.Tensor, target: torch.Tensor,
                    vgg: VGGPerceptualLoss | None) -> torch.Tensor:
    """One RGB term's value as training computes it (`rgb_term`, `histogram` at its default w1), or a
    histogram distance's raw value (`histogram:<distance>`, no HISTOGRAM_DISTANCE_SCALE)."""
    if term.startswith(HISTOGRAM_PREFIX):
        return histogram_distance(pred, target, term.removeprefix(HISTOGRAM_PREFIX))
    return rgb_term(term, pred, target, vgg)


def _vgg_module(vgg_weights: str | os.PathLike[str] | VGGPerceptualLoss,
                device: torch.device) -> VGGPerceptualLoss:
    if isinstance(vgg_weights, VGGPerceptualLoss):
        return vgg_weights.to(device)
    return VGGPerceptualLoss(vgg_weights).to(device)


def output_gradients(
    pred_rgb: torch.Tensor,
    pred_hsv: torch.Tensor | None,
    target_rgb: torch.Tensor,
    terms: Iterable[str] = TERMS,
    vgg_weights: str | os.PathLike[str] | VGGPerceptualLoss = "pretrained",
    histogram_distances: Sequence[str] = (),
    normalize_target: bool = True,
) -> dict[str, torch.Tensor]:
    """Each term's gradient with respect to the output it supervises, unweighted.

    The outputs are detached and made leaves: only the terms are differentiated, so the network's
    forward may run under `torch.no_grad()`. Computed in float32, as CompositeLoss computes the terms.

    Args:
        pred_rgb: (B, 3, H, W) G_A's RGB output.
        pred_hsv: (B, 3, H, W) G_B's HSV output; needed when `hsv` is in `terms`.
        target_rgb: (B, 3, H, W) target RGB in [0, 1], as read from the data.
        terms: names from TERMS; `hsv` is differentiated w.r.t. `pred_hsv`, the others w.r.t. `pred_rgb`.
        vgg_weights: for `vgg`: a built VGGPerceptualLoss, or its weights ("pretrained", "random", a path;
            a module built here from "random" draws from torch's global RNG).
        histogram_distances: distances from HISTOGRAM_DISTANCES to measure as `histogram:<distance>`, the
            raw distance (`histogram_distance`, no HISTOGRAM_DISTANCE_SCALE).
        normalize_target: normalise the target per image first, as `train_step` does.
    Returns:
        term -> detached gradient tensor of its output's shape, in the order asked for; with the three
        baseline terms asked for, also REFERENCE: the gradient of 20 mse + 20 cosine + 20 msssim, taken
        as the gradient of that weighted sum (autograd), not assembled from the terms' gradients.
    Raises:
        ValueError: an unknown term or distance, or `hsv` without `pred_hsv`.
    """
    terms = list(dict.fromkeys(terms))
    unknown = [t for t in terms if t not in TERMS]
    if unknown:
        raise ValueError(f"unknown terms {unknown}; known: {list(TERMS)}")
    bad = [d for d in histogram_distances if d not in HISTOGRAM_DISTANCES]
    if bad:
        raise ValueError(f"unknown histogram distances {bad}; known: {list(HISTOGRAM_DISTANCES)}")
    if "hsv" in terms and pred_hsv is None:
        raise ValueError("pred_hsv: the hsv term is asked for but no HSV prediction was given")
    target = target_rgb.detach().float()
    if normalize_target:
        target = normalize_per_image(target)
    rgb = pred_rgb.detach().float().requires_grad_(True)
    vgg = _vgg_module(vgg_weights, rgb.device) if "vgg" in terms else None
    rgb_terms = [t for t in terms if t != "hsv"] + [histogram_term(d) for d in histogram_distances]
    with_reference = all(t in terms for t in BASELINE_TERMS)

    grads: dict[str, torch.Tensor] = {}
    values: dict[str, torch.Tensor] = {}
    with torch.autocast(device_type=rgb.device.type, enabled=False):
        for term in rgb_terms:
            value = _rgb_term_value(term, rgb, target, vgg)
            keep = with_reference and term in BASELINE_TERMS  # its graph serves the reference below
            (grads[term],) = torch.autograd.grad(value, rgb, retain_graph=keep)
            if keep:
                values[term] = value
        if with_reference:
            reference = sum(REFERENCE_RGB_WEIGHT * values[t] for t in BASELINE_TERMS)
            (grads[REFERENCE],) = torch.autograd.grad(reference, rgb)
        if "hsv" in terms:
            assert pred_hsv is not None
            hsv = pred_hsv.detach().float().requires_grad_(True)
            (grads["hsv"],) = torch.autograd.grad(hsv_loss(hsv, rgb_to_hsv(target)), hsv)
    order = [*rgb_terms, REFERENCE, "hsv"]
    return {term: grads[term].detach() for term in order if term in grads}


@dataclass(frozen=True)
class GradientSample:
    """One batch's output gradients, kept as what the rule needs of them.

    Attributes:
        rgb_terms: the RGB terms measured (histogram distances as `histogram:<distance>`).
        gram: their gradients' Gram matrix (float64): gram[i][j] = <grad i, grad j> over the RGB output.
        hsv_norm: |grad hsv| over the HSV output.
        reference_norm: |grad (20 mse + 20 cosine + 20 msssim)| by autograd (a check on the Gram matrix:
            equal to `rgb_norm` of those weights up to rounding); nan when not measured.
    """

    rgb_terms: tuple[str, ...]
    gram: tuple[tuple[float, ...], ...]
    hsv_norm: float
    reference_norm: float = math.nan

    @classmethod
    def from_gradients(cls, grads: Mapping[str, torch.Tensor]) -> GradientSample:
        """From `output_gradients`' result (it must have `hsv`)."""
        if "hsv" not in grads:
            raise ValueError("a gradient sample needs the hsv term's gradient")
        names = tuple(t for t in grads if t not in ("hsv", REFERENCE))
        flat = torch.stack([grads[t].double().flatten() for t in names]) if names else None
        gram = (flat @ flat.T).tolist() if flat is not None else []
        reference = float(grads[REFERENCE].double().norm()) if REFERENCE in grads else math.nan
        return cls(names, tuple(tuple(row) for row in gram), float(grads["hsv"].double().norm()), reference)

    def norm(self, term: str) -> float:
        """|grad term| (an RGB term, or `hsv`)."""
        if term == "hsv":
            return self.hsv_norm
        i = self._index(term)
        return math.sqrt(max(self.gram[i][i], 0.0))

    def rgb_norm(self, weights: Mapping[str, float]) -> float:
        """|grad sum_t w_t term_t| over the RGB output: sqrt(w^T G w) (the gradient of a weighted sum is
        the weighted sum of the gradients). `hsv` in `weights` is ignored (it has another output)."""
        pairs = [(self._index(t), w) for t, w in weights.items() if t != "hsv" and w != 0]
        total = sum(wi * wj * self.gram[i][j] for i, wi in pairs for j, wj in pairs)
        return math.sqrt(max(total, 0.0))

    def norms(self) -> dict[str, float]:
        """Every measured term's norm, REFERENCE (by autograd) and `hsv`."""
        out = {t: self.norm(t) for t in self.rgb_terms}
        if not math.isnan(self.reference_norm):
            out[REFERENCE] = self.reference_norm
        return out | {"hsv": self.hsv_norm}

    def _index(self, term: str) -> int:
        if term not in self.rgb_terms:
            raise KeyError(f"term {term!r} was not measured (measured: {list(self.rgb_terms)})")
        return self.rgb_terms.index(term)

    def to_dict(self) -> dict[str, Any]:
        return {"rgb_terms": list(self.rgb_terms), "gram": [list(r) for r in self.gram],
                "hsv_norm": self.hsv_norm, "reference_norm": self.reference_norm}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GradientSample:
        return cls(tuple(data["rgb_terms"]), tuple(tuple(float(v) for v in r) for r in data["gram"]),
                   float(data["hsv_norm"]), float(data.get("reference_norm", math.nan)))  # fmt: skip


def gradient_sample(pred_rgb: torch.Tensor, pred_hsv: torch.Tensor, target_rgb: torch.Tensor,
                    terms: Iterable[str] = TERMS,
                    vgg_weights: str | os.PathLike[str] | VGGPerceptualLoss = "pretrained",
                    histogram_distances: Sequence[str] = ()) -> GradientSample:
    """`output_gradients` of one batch as a GradientSample (`hsv` is always measured)."""
    terms = list(dict.fromkeys([*terms, "hsv"]))
    grads = output_gradients(pred_rgb, pred_hsv, target_rgb, terms, vgg_weights, histogram_distances)
    return GradientSample.from_gradients(grads)


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def round_significant(x: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """`x` rounded to `digits` significant figures (0 stays 0)."""
    return float(f"{x:.{digits}g}")


@dataclass(frozen=True)
class WeightDerivation:
    """The rule's numbers (see the module docstring).

    Attributes:
        mean_norms: term -> |grad term| averaged over the samples (RGB terms, REFERENCE and `hsv`; the
            REFERENCE here is sqrt(w^T G w) of the reference's weights, the one the rule uses).
        balance: R, the reference's RGB:HSV gradient-norm ratio.
        unscaled: configuration -> RGB weights after step (c).
        scale: configuration -> the common factor of step (d).
        weights: configuration -> the final weights, `hsv` included, rounded.
    """

    mean_norms: dict[str, float]
    balance: float
    unscaled: dict[str, dict[str, float]]
    scale: dict[str, float]
    weights: dict[str, dict[str, float]]


def derive_weights(samples: Sequence[GradientSample],
                   configurations: Mapping[str, Sequence[str]] = CONFIGURATIONS,
                   digits: int = SIGNIFICANT_DIGITS) -> WeightDerivation:
    """Every configuration's weights by the rule (a)-(d) of the module docstring.

    Args:
        samples: one per measured batch (and initialisation); each must have the baseline's terms and
            every RGB term of `configurations`.
        configurations: name -> its RGB terms.
        digits: significant figures of the final weights.
    Raises:
        ValueError: no samples, or a zero hsv or baseline gradient (nothing to balance against).
    """
    if not samples:
        raise ValueError("no gradient samples to derive weights from")
    reference_weights = dict.fromkeys(BASELINE_TERMS, REFERENCE_RGB_WEIGHT)

    def mean_rgb_norm(weights: Mapping[str, float]) -> float:
        return _mean(s.rgb_norm(weights) for s in samples)

    used = list(dict.fromkeys([*BASELINE_TERMS, *(t for ts in configurations.values() for t in ts)]))
    mean_norms = {t: _mean(s.norm(t) for s in samples) for t in used}
    mean_norms[REFERENCE] = reference = mean_rgb_norm(reference_weights)
    mean_norms["hsv"] = hsv = _mean(s.hsv_norm for s in samples)
    if hsv <= 0 or reference <= 0:
        raise ValueError(f"cannot balance against zero gradients (|grad hsv| {hsv}, reference {reference})")
    balance = reference / hsv  # (b)
    # (c): the mean weighted norm of the baseline's three terms, which every other term is matched to
    target = _mean(REFERENCE_RGB_WEIGHT * mean_norms[t] for t in BASELINE_TERMS)
    unscaled, scale, weights = {}, {}, {}
    for name, terms in configurations.items():
        unscaled[name] = {
            t: REFERENCE_RGB_WEIGHT if t in BASELINE_TERMS else target / mean_norms[t] for t in terms
        }
        scale[name] = reference / mean_rgb_norm(unscaled[name])  # (d)
        weights[name] = {t: round_significant(scale[name] * w, digits) for t, w in unscaled[name].items()}
        weights[name]["hsv"] = HSV_WEIGHT  # (a)
    return WeightDerivation(mean_norms, balance, unscaled, scale, weights)


def balanced_weights(samples: Sequence[GradientSample],
                     configurations: Mapping[str, Sequence[str]] = CONFIGURATIONS,
                     digits: int = SIGNIFICANT_DIGITS) -> dict[str, dict[str, float]]:
    """Configuration -> term -> weight by the rule of the module docstring, restated:

    (a) `hsv` weighs 1; (b) R = |grad (20 mse + 20 cosine + 20 msssim)| / |grad hsv|; (c) the baseline's terms
    weigh 20 and every other RGB term is weighted so that its gradient norm is the mean of the baseline's
    three weighted gradient norms; (d) the configuration's RGB weights are then scaled by one factor so
    that its weighted RGB sum's gradient norm over |grad hsv| is R. Norms are averaged over the samples;
    weights are rounded to `digits` significant figures. `original` comes out as 20/20/20/1.
    """
    return derive_weights(samples, configurations, digits).weights


def histogram_distance_scales(samples: Sequence[GradientSample],
                              distances: Sequence[str] = HISTOGRAM_DISTANCES,
                              digits: int = SIGNIFICANT_DIGITS) -> dict[str, float]:
    """distance -> the factor that gives its raw value w1's mean gradient norm: |grad w1| / |grad d|.

    The samples must have `histogram:<d>` for w1 and every distance; w1's scale is 1 by construction.
    """
    base = _mean(s.norm(histogram_term("w1")) for s in samples)
    out = {}
    for d in distances:
        norm = _mean(s.norm(histogram_term(d)) for s in samples)
        out[d] = round_significant(base / norm, digits) if norm > 0 else math.inf
    return out
