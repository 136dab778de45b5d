"""Criss-cross attention (Huang et al., CCNet) between two maps, as ColorMamba's full-resolution fusion.

Each pixel attends to the pixels of its own row and column (H + W - 1 of them) instead of all H*W, which
keeps attention affordable at full image resolution. In ColorMamba the queries and keys come from G_A's
features and the values from the HSV prediction refined by SPADE, so colour is carried along rows and
columns to where the RGB features say it belongs.
"""

from __future__ import annotations

import torch
from torch import nn

from colormamba.layers.conv_blocks import ConvProjection


class CrissCrossAttention(nn.Module):
    """`gamma * (out_H + out_W) + skip(cat(x, y))`, queries/keys from x and values from y.

    gamma starts at 0, so the block starts as its skip path and learns how much attention to mix in.

    Args:
        channels: channels of x (and of the output).
        value_channels: channels of y.
        reduction: queries and keys have channels // reduction channels.
    """

    def __init__(self, channels: int, value_channels: int, reduction: int = 8) -> None:
        super().__init__()
        qk_channels = channels // reduction
        self.query_conv = ConvProjection(channels, qk_channels)
        self.key_conv = ConvProjection(channels, qk_channels)
        self.value_conv = ConvProjection(value_channels, channels)
        self.conv_skip = ConvProjection(channels + value_channels, channels)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, H, W); y (B, Cy, H, W). Returns: (B, C, H, W)."""
        height = x.shape[-2]
        skip = self.conv_skip(torch.cat([x, y], dim=1))  # (B, C, H, W)
        q = self.query_conv(x)  # (B, c, H, W)
        k = self.key_conv(x)  # (B, c, H, W)
        v = self.value_conv(y)  # (B, C, H, W)
        energy_h = torch.einsum("bchw,bcgw->bhwg", q, k)  # (B, H, W, H): same column
        # A pixel is in its own row and column: count it once, in the row part.
        own = torch.eye(height, dtype=torch.bool, device=x.device).unsqueeze(1)  # (H, 1, H)
        energy_h = energy_h.masked_fill(own, float("-inf"))
        energy_w = torch.einsum("bchw,bchv->bhwv", q, k)  # (B, H, W, W): same row
        attn = torch.softmax(torch.cat([energy_h, energy_w], dim=-1), dim=-1)  # (B, H, W, H+W)
        attn_h, attn_w = attn.split([height, attn.shape[-1] - height], dim=-1)
        out_h = torch.einsum("bhwg,bcgw->bchw", attn_h, v)  # (B, C, H, W)
        out_w = torch.einsum("bhwv,bchv->bchw", attn_w, v)  # (B, C, H, W)
        return self.gamma * (out_h + out_w) + skip
