"""Small convolution blocks shared by the ColorMamba networks."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

LeakyReLU02: Callable[[], nn.Module] = partial(nn.LeakyReLU, 0.2)


class DoubleConv(nn.Module):
    """conv3x3 -> norm -> act -> conv3x3 -> [mixer] -> norm -> act: one stage of G_B's U-Net.

    The optional mixer (a MambaIR block in G_B's middle stages) sits between the second convolution
    and its normalisation, where the reference puts it.

    Args:
        in_channels, out_channels: widths.
        mixer: a width-preserving module applied after the second convolution, or None.
        norm_layer, act_layer: building blocks (InstanceNorm without affine and LeakyReLU 0.2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mixer: nn.Module | None = None,
        norm_layer: Callable[[int], nn.Module] = nn.InstanceNorm2d,
        act_layer: Callable[[], nn.Module] = LeakyReLU02,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm1 = norm_layer(out_channels)
        self.act1 = act_layer()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.mixer = mixer if mixer is not None else nn.Identity()
        self.norm2 = norm_layer(out_channels)
        self.act2 = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, in, H, W). Returns: (B, out, H, W)."""
        x = self.act1(self.norm1(self.conv1(x)))
        return self.act2(self.norm2(self.mixer(self.conv2(x))))


class UpConv(nn.Sequential):
    """ConvTranspose 2x2 stride 2 -> norm -> act: G_B's decoder upsampling."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm_layer: Callable[[int], nn.Module] = nn.InstanceNorm2d,
        act_layer: Callable[[], nn.Module] = LeakyReLU02,
    ) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2), norm_layer(out_channels), act_layer()
        )


class ConvProjection(nn.Sequential):
    """conv3x3 -> ReLU -> BatchNorm -> conv3x3 -> ReLU: the projections of the criss-cross attention."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.ReLU(),
            nn.BatchNorm2d(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.ReLU(),
        )
