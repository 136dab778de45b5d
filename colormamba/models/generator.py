"""The ColorMamba generator: G_B predicts HSV from NIR, G_A reconstructs RGB guided by G_B.

The generator owns everything between a raw NIR frame and the two predictions (per-image normalisation,
padding to the networks' stride, cropping back), so that training, evaluation and services all call it
the same way with raw [0, 1] images of any size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from colormamba.imaging import gray_to_hsv, normalize_per_image, pad_to_multiple
from colormamba.models.config import ModelConfig
from colormamba.models.hsv_net import HSVNet
from colormamba.models.rgb_net import RGBNet


class ColorMamba(nn.Module):
    """G_A (`rgb_net`) and G_B (`hsv_net`) with their input handling.

    Args:
        config: the architecture; kept as `self.config` so that checkpoints can carry it
            (`dataclasses.asdict(model.config)`) and `from_config` can rebuild the network.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.hsv_net = HSVNet(config)
        self.rgb_net = RGBNet(config)

    @classmethod
    def from_config(cls, config: ModelConfig | dict[str, Any]) -> ColorMamba:
        """Rebuild from a config or its `dataclasses.asdict` form (e.g. read from a checkpoint)."""
        return cls(config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config))

    @property
    def size_multiple(self) -> int:
        """The networks see H and W padded up to a multiple of this (2**rgb_levels)."""
        return self.config.size_multiple

    def forward(
        self, nir: torch.Tensor, hsv_nir: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Colorize NIR frames of any size.

        The reference normalises NIR and its HSV reading separately, per image, with its min-max
        (imaging.normalize_per_image); this happens here, so callers pass raw images. Frames are then
        reflect-padded up to `size_multiple` and both outputs cropped back. Padding after normalising
        changes nothing in the normalisation (reflect padding repeats existing values).

        Args:
            nir: (B, 1, H, W) in [0, 1].
            hsv_nir: (B, 1, H, W) in [0, 1], the NIR that G_B reads as HSV when it differs from `nir`
                (training: the reference contrast-jitters the NIR read as RGB, which only G_B sees;
                colormamba.data.augment); default `nir`.
        Returns:
            rgb (B, 3, H, W) in (0, 1) and hsv (B, 3, H, W) in (-1, 1), G_B's prediction.
        """
        if nir.dim() != 4 or nir.shape[1] != 1:
            raise ValueError(f"nir must be (batch, 1, H, W), got shape {tuple(nir.shape)}")
        # (B, 3, H, W): (0, 0, v / (max v + eps)): H, S = 0
        nir_hsv = normalize_per_image(gray_to_hsv(nir if hsv_nir is None else hsv_nir))
        nir = normalize_per_image(nir)  # (B, 1, H, W)
        nir, (height, width) = pad_to_multiple(nir, self.size_multiple)  # (B, 1, H', W')
        nir_hsv, _ = pad_to_multiple(nir_hsv, self.size_multiple)  # (B, 3, H', W')
        hsv, features = self.hsv_net(nir, nir_hsv)  # (B, 3, H', W'), 4 feature maps
        rgb = self.rgb_net(nir, hsv, features)  # (B, 3, H', W')
        return rgb[..., :height, :width], hsv[..., :height, :width]
