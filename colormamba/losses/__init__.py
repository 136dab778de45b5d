"""Loss terms of the study and their weighted combinations.

`build_loss(config)` is the one constructor; `resolve_loss_config` checks a configuration; the
adversarial functions serve the training loop's discriminator step.
"""

from colormamba.losses.adversarial import lsgan_discriminator_loss, lsgan_generator_loss
from colormamba.losses.config import (
    LOSS_PRESETS,
    LOSS_TERMS,
    CompositeLoss,
    build_loss,
    loss_problems,
    resolve_loss_config,
)
from colormamba.losses.histogram import histogram_loss
from colormamba.losses.terms import cosine_loss, hsv_loss, mse_loss, msssim_loss
from colormamba.losses.vgg import (
    DEFAULT_VGG_LAYERS,
    VGG_WEIGHTS_ENV,
    VGGPerceptualLoss,
    VGGWeightsNotFoundError,
    find_vgg_weights,
)

__all__ = [
    "DEFAULT_VGG_LAYERS",
    "LOSS_PRESETS",
    "LOSS_TERMS",
    "VGG_WEIGHTS_ENV",
    "CompositeLoss",
    "VGGPerceptualLoss",
    "VGGWeightsNotFoundError",
    "build_loss",
    "cosine_loss",
    "find_vgg_weights",
    "histogram_loss",
    "hsv_loss",
    "loss_problems",
    "lsgan_discriminator_loss",
    "lsgan_generator_loss",
    "mse_loss",
    "msssim_loss",
    "resolve_loss_config",
]
