"""Loss configurations (term -> weight), the study's presets, and the weighted composite loss.

A configuration is a plain mapping from term name to a non-negative weight; it is a spec field, so it
travels in run specs and checkpoints as JSON. Presets state the study's four configurations; a caller's
overrides win over a preset's weights, and an unknown term is refused rather than ignored.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn

from colormamba.imaging import rgb_to_hsv
from colormamba.losses.adversarial import DiscriminatorOutputs, lsgan_generator_loss
from colormamba.losses.histogram import check_distance, histogram_loss
from colormamba.losses.terms import cosine_loss, hsv_loss, mse_loss, msssim_loss
from colormamba.losses.vgg import DEFAULT_VGG_LAYERS, VGGPerceptualLoss
from colormamba.suggest import unknown

LOSS_TERMS = ("mse", "cosine", "msssim", "vgg", "histogram", "hsv", "adversarial")

# Weights, measured rather than guessed (docs/evaluation.md, "Loss weights"). The reference weighs its RGB
# terms 20x its HSV term (`20 * mse(rgb) + 20 * criterion(rgb) + criterion(hsv)`), so `original` is
# mse + cosine + msssim at 20 each and `hsv` (G_B's supervision, in every configuration) at 1. Every other
# configuration keeps the reference's RGB:HSV balance *in gradient terms*: the weights come from each term's
# gradient norm at the network's output at initialisation on the real data (benchmarks/
# calibrate_loss_weights.py; results in benchmarks/results/2026-12-07_cpu/loss_calibration.json, which
# tests/colormamba/losses/test_calibration.py checks these numbers against). The rule
# (colormamba.losses.calibration): within a configuration the baseline's terms keep 20 each and an added
# term (vgg, histogram) gets the weight that makes its gradient norm the mean of the baseline's weighted
# terms; then one factor scales the configuration's RGB weights so its RGB gradient norm is the reference's.
# MS-SSIM carries 98 % of the reference's RGB gradient at initialisation, hence the large standalone
# weights. The `vgg` weights were measured with a random VGG-19 (the ImageNet file cannot be downloaded on
# this project's machines): rerun the script with the real file where it is (the GPU images bake it in).
# `combined` ("tuned weights" in the seed) is tuned by a sweep on the selection split: its weights here are
# the calibrated starting point, jobs/specs/loss_study.yaml holds the tuned ones.
# The reference's autoencoder-feature and GAN terms are not in any configuration (services/departures.py).
RGB_HSV_RATIO = 20.0  # the reference's weight of each RGB term over its HSV term
HSV_WEIGHT = 1.0  # the reference's, and every configuration's, weight of `hsv`
_HSV = HSV_WEIGHT
_RGB = RGB_HSV_RATIO * HSV_WEIGHT

LOSS_PRESETS: dict[str, dict[str, float]] = {
    "original": {"mse": _RGB, "cosine": _RGB, "msssim": _RGB, "hsv": _HSV},
    "vgg": {"vgg": 264.0, "hsv": _HSV},
    "histogram": {"histogram": 99.8, "hsv": _HSV},
    "original+vgg": {"mse": 18.8, "cosine": 18.8, "msssim": 18.8, "vgg": 86.5, "hsv": _HSV},
    "original+histogram": {"mse": 18.9, "cosine": 18.9, "msssim": 18.9, "histogram": 32.9, "hsv": _HSV},
    "combined": {"vgg": 184.0, "histogram": 69.4, "cosine": 40.0, "hsv": _HSV},
}
# The seed's two readings of its losses (docs/evaluation.md): each on its own, or added to the baseline.
STANDALONE = ("vgg", "histogram", "combined")
ADDITIVE = ("original+vgg", "original+histogram")


def _checked(weights: Mapping[str, float], field: str) -> tuple[dict[str, float], list[str]]:
    """The valid terms of `weights` as floats, and a "field.term: message" line for each bad one."""
    out: dict[str, float] = {}
    problems = []
    for term, weight in weights.items():
        if term not in LOSS_TERMS:
            what = unknown("unknown loss term", term, LOSS_TERMS, listing="known terms")
            problems.append(f"{field}.{term}: {what}")
        elif isinstance(weight, bool) or not isinstance(weight, int | float):
            problems.append(f"{field}.{term}: weight must be a number, got {weight!r}")
        elif not math.isfinite(weight) or weight < 0:
            problems.append(f"{field}.{term}: weight must be finite and >= 0, got {weight!r}")
        else:
            out[term] = float(weight)
    return out, problems


def _resolve(config: object, overrides: object) -> tuple[dict[str, float], list[str]]:
    """The resolved weights and every problem found, in RunConfig's field names (`loss`, `loss_weights`)."""
    problems = []
    if isinstance(config, str):
        if config not in LOSS_PRESETS:
            problems.append("loss: " + unknown(f"unknown preset {config!r}", config, LOSS_PRESETS,
                                               listing="known presets"))  # fmt: skip
        weights = dict(LOSS_PRESETS.get(config, {}))
    elif isinstance(config, Mapping):
        weights, problems = _checked(config, "loss")
    else:
        weights = {}
        problems.append(f"loss: expected a preset name or a term -> weight mapping, got {config!r}")
    if isinstance(overrides, Mapping):
        changed, found = _checked(overrides, "loss_weights")
        weights.update(changed)
        problems += found
    elif overrides is not None:
        problems.append(f"loss_weights: expected a term -> weight mapping, got {overrides!r}")
    if not problems and not any(w > 0 for w in weights.values()):
        field = "loss_weights" if overrides else "loss"
        problems.append(f"{field}: no term has a positive weight in {weights}")
    return {term: weights[term] for term in LOSS_TERMS if term in weights}, problems


def loss_problems(config: object, overrides: object = None) -> list[str]:
    """Every problem of a loss configuration (see `resolve_loss_config`), one "field: message" line each,
    so that a spec lists them all at once: `loss` and `loss.<term>` (the preset or explicit terms),
    `loss_weights.<term>` (the overrides); an unknown name gets the closest known one."""
    return _resolve(config, overrides)[1]


def resolve_loss_config(config: str | Mapping[str, float],
                        overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """Turn a preset name or a term -> weight mapping, plus overrides, into a checked configuration.

    Args:
        config: a name from LOSS_PRESETS or a mapping term -> weight.
        overrides: term -> weight applied on top (a 0 switches a preset's term off).
    Returns:
        term -> weight, in LOSS_TERMS order.
    Raises:
        ValueError: unknown preset or term, a weight that is not a finite number >= 0, or no term with
            a positive weight; the message names the offending field (`loss_problems` lists them).
    """
    weights, problems = _resolve(config, overrides)
    if problems:
        raise ValueError("; ".join(problems))
    return weights


# terms that are functions of (pred_rgb, target_rgb) only (`rgb_term` adds `vgg` and `histogram`)
_PIXEL_TERMS = {"mse": mse_loss, "cosine": cosine_loss, "msssim": msssim_loss}
RGB_TERMS = (*_PIXEL_TERMS, "vgg", "histogram")  # the terms on G_A's RGB output


def rgb_term(term: str, pred_rgb: torch.Tensor, target_rgb: torch.Tensor,
             vgg: VGGPerceptualLoss | None = None, histogram_distance: str = "w1") -> torch.Tensor:
    """The unweighted value of one term of RGB_TERMS: the one place that maps a term's name to its function
    (CompositeLoss sums them; colormamba.losses.calibration differentiates them one by one).

    Raises:
        ValueError: a term that is not an RGB term, or `vgg` without its network.
    """
    if term == "vgg":
        if vgg is None:
            raise ValueError("vgg: the vgg term needs its VGGPerceptualLoss")
        return vgg(pred_rgb, target_rgb)
    if term == "histogram":
        return histogram_loss(pred_rgb, target_rgb, distance=histogram_distance)
    if term not in _PIXEL_TERMS:
        raise ValueError(f"{term!r} is not one of the RGB terms {list(RGB_TERMS)}")
    return _PIXEL_TERMS[term](pred_rgb, target_rgb)


class CompositeLoss(nn.Module):
    """Weighted sum of the configured loss terms for one generator step.

    Terms with weight 0 are not computed; VGG is built only when `vgg` has a positive weight. The module
    has no trainable parameters and an empty state dict.

    Args:
        weights: a loss configuration (see `resolve_loss_config`).
        vgg_weights: "pretrained", "random" (tests only) or a path to the VGG-19 weights file.
        vgg_layers: VGG-19 layers of the perceptual term.
        histogram_distance: the `histogram` term's distance, one of HISTOGRAM_DISTANCES.
    """

    def __init__(self, weights: str | Mapping[str, float], vgg_weights: str | os.PathLike[str] = "pretrained",
                 vgg_layers: Sequence[str] = DEFAULT_VGG_LAYERS, histogram_distance: str = "w1") -> None:
        super().__init__()
        try:  # at construction, naming the field: a run fails before it trains
            check_distance(histogram_distance)
        except ValueError as exc:
            raise ValueError(f"histogram_distance: {exc}") from None
        self.histogram_distance = histogram_distance
        self.weights = resolve_loss_config(weights)
        self.active = {term: w for term, w in self.weights.items() if w > 0}
        self.vgg = VGGPerceptualLoss(vgg_weights, vgg_layers) if "vgg" in self.active else None

    @property
    def needs_discriminator(self) -> bool:
        """Whether `forward` needs discriminator outputs on the generated images."""
        return "adversarial" in self.active

    def extra_repr(self) -> str:
        shown = [f"{term}={w:g}" for term, w in self.active.items()]
        if "histogram" in self.active and self.histogram_distance != "w1":
            shown.append(f"histogram_distance={self.histogram_distance}")
        return ", ".join(shown)

    def forward(self, pred_rgb: torch.Tensor, pred_hsv: torch.Tensor | None, target_rgb: torch.Tensor,
                target_hsv: torch.Tensor | None = None,
                disc_fake_outputs: DiscriminatorOutputs | None = None,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its terms.

        Computed in float32 with autocast off: MS-SSIM's local variances and the histogram's CDF
        differences lose their meaning in half precision.

        Args:
            pred_rgb: (B, 3, H, W) G_A's RGB output in [0, 1].
            pred_hsv: (B, 3, H, W) G_B's HSV output in (-1, 1); needed when `hsv` is active.
            target_rgb: (B, 3, H, W) target RGB (as normalised by the data pipeline).
            target_hsv: (B, 3, H, W) target HSV; default `rgb_to_hsv(target_rgb)`.
            disc_fake_outputs: discriminator outputs on the generated images (RGB and HSV
                discriminators), not detached; needed when `adversarial` is active.
        Returns:
            The weighted total (scalar, with gradient) and term -> unweighted value (detached, for
            logging), for the active terms.
        """
        with torch.autocast(device_type=pred_rgb.device.type, enabled=False):
            pred_rgb, target_rgb = pred_rgb.float(), target_rgb.float()
            values: dict[str, torch.Tensor] = {}
            for term in self.active:
                if term == "hsv":
                    if pred_hsv is None:
                        raise ValueError("pred_hsv: the hsv term is active but no HSV prediction was given")
                    target = rgb_to_hsv(target_rgb) if target_hsv is None else target_hsv.float()
                    values[term] = hsv_loss(pred_hsv.float(), target)
                elif term == "adversarial":
                    if disc_fake_outputs is None:
                        raise ValueError("disc_fake_outputs: the adversarial term is active but no "
                                         "discriminator outputs were given")
                    values[term] = lsgan_generator_loss(disc_fake_outputs)
                else:
                    values[term] = rgb_term(term, pred_rgb, target_rgb, self.vgg, self.histogram_distance)
            total = sum((self.active[t] * v for t, v in values.items()), start=pred_rgb.new_zeros(()))
        return total, {term: value.detach() for term, value in values.items()}



def build_loss(config: str | Mapping[str, float], overrides: Mapping[str, float] | None = None,
               vgg_weights: str | os.PathLike[str] = "pretrained",
               vgg_layers: Sequence[str] = DEFAULT_VGG_LAYERS, histogram_distance: str = "w1",
               ) -> CompositeLoss:
    """The one constructor: resolve a preset or mapping (plus overrides) and build the composite loss.

    Args:
        config: preset name or term -> weight mapping.
        overrides: term -> weight on top of `config`.
        vgg_weights: "pretrained" (looked up locally, never downloaded), "random" (only when a spec says
            so explicitly), or a path to `vgg19-dcbb9e9d.pth`.
        vgg_layers: VGG-19 layers of the perceptual term.
        histogram_distance: the `histogram` term's distance, one of HISTOGRAM_DISTANCES
            (colormamba.losses.histogram); ignored unless `histogram` is active.
    Raises:
        ValueError: bad configuration (see `resolve_loss_config`) or unknown histogram distance.
        VGGWeightsNotFoundError: `vgg` active, pretrained weights asked for and not on this machine.
    """
    return CompositeLoss(resolve_loss_config(config, overrides), vgg_weights, vgg_layers, histogram_distance)
