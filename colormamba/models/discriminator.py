"""The PatchGAN discriminator of the reference (one for RGB, one for HSV), for the optional GAN loss."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import spectral_norm


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN: 4x4 convs in -> 64 -> 128 -> 256 -> 512 -> 1, LeakyReLU 0.2, no normalisation.

    The middle three convolutions are spectrally normalised instead (the reference's choice), which
    keeps the discriminator Lipschitz-bounded without batch statistics.

    The reference wraps them in a SAGAN-style `SpectralNorm` module: one power iteration (v, then u) at
    every forward, and u, v kept as non-trainable parameters, which is why it counts 2,772,801
    parameters (8,064 of them u and v) where this one has 2,764,737 trainable ones and u, v as buffers.
    `torch.nn.utils.spectral_norm` (used here, and by the reference's SPADE blocks) runs the same
    iteration in the same order at every training-mode forward; it differs only in eval mode, where it
    keeps u and v, and the discriminators are only ever run in training.

    Args:
        in_channels: image channels.
        width: channels of the first convolution (64).
    """

    def __init__(self, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        first = nn.Conv2d(in_channels, widths[0], 4, stride=2, padding=1)
        layers: list[nn.Module] = [first, nn.LeakyReLU(0.2)]
        for i in range(1, len(widths)):
            stride = 2 if i < len(widths) - 1 else 1
            conv = nn.Conv2d(widths[i - 1], widths[i], 4, stride=stride, padding=1)
            layers += [spectral_norm(conv), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, H, W). Returns: patch logits (B, 1, H/8 - 2, W/8 - 2)."""
        return self.model(x)


def build_discriminator(in_channels: int = 3) -> PatchDiscriminator:
    """The reference's discriminator for `in_channels`-channel images (RGB or HSV)."""
    return PatchDiscriminator(in_channels)
