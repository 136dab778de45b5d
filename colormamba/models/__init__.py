"""The ColorMamba networks: config, G_B, G_A, the generator, the discriminator and named presets."""

from colormamba.models.compile import compile_blocks
from colormamba.models.config import ModelConfig
from colormamba.models.discriminator import PatchDiscriminator, build_discriminator
from colormamba.models.generator import ColorMamba
from colormamba.models.hsv_net import HSVNet
from colormamba.models.registry import (
    build_model,
    build_model_from_config,
    list_presets,
    register_preset,
    resolve_config,
)
from colormamba.models.rgb_net import RGBNet

__all__ = [
    "ColorMamba",
    "HSVNet",
    "ModelConfig",
    "PatchDiscriminator",
    "RGBNet",
    "build_discriminator",
    "build_model",
    "build_model_from_config",
    "compile_blocks",
    "list_presets",
    "register_preset",
    "resolve_config",
]
