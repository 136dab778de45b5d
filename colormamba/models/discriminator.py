"""The PatchGAN discriminator of the reference (one for RGB, one for HSV), for the optional GAN loss."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN: 4x4 convs in -> 64 -> 128 -> 256 -> 512 -> 1, LeakyReLU 0.2, no normalisation.

    The middle three convolutions are spectrally normalised instead (the reference's choice), which
    keeps the discriminator Lipschitz-bounded without batch statistics.

    Parameters: 2,764,737 trainable at in_channels=3. The reference reports 2,772,801 because its
    SAGAN-style spectral norm registers the power-iteration vectors u and v (8,064 values) as
    (non-trainable) parameters; here they are buffers.

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
