"""The VSS block and the MambaIR block (one residual state-space group) used in both ColorMamba networks.

The block mixes three ways: the four-direction scan (long range, linear cost), a small convolution
(local detail) and agent attention (global, through a few agent tokens).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from colormamba.layers.agent_attention import AgentBlock
from colormamba.layers.ss2d import SS2D


class VSSBlock(nn.Module):
    """`x = s1*t + SS2D(pad1(LN1(t)))`, `h = AgentBlock(conv(LN2(x)))`, output `s2*x + h`.

    The scan runs on the map zero-padded by one pixel on every side (and cropped back), as in the
    reference: the border positions then see a zero neighbour through the scan's depthwise convolution
    like every interior position sees real ones, and the four scans start and end on zeros.

    Args:
        dim: width C.
        d_state, expand, scan_backend: see `SS2D`.
        conv_compress: the local branch narrows C to C // conv_compress (CAB-style).
        num_heads, num_agents, mlp_ratio: see `AgentBlock`.
        norm_layer, act_layer: building blocks (LayerNorm and GELU in the reference).
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        expand: float = 2.0,
        conv_compress: int = 3,
        num_heads: int = 8,
        num_agents: int = 49,
        mlp_ratio: float = 4.0,
        scan_backend: str = "auto",
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        act_layer: Callable[[], nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        hidden = dim // conv_compress
        self.ln_1 = norm_layer(dim)
        self.ss2d = SS2D(dim, d_state=d_state, expand=expand, scan_backend=scan_backend)
        self.skip_scale = nn.Parameter(torch.ones(dim))
        self.ln_2 = norm_layer(dim)
        self.conv = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, padding=1), act_layer(), nn.Conv2d(hidden, dim, 3, padding=1)
        )
        self.attn_block = AgentBlock(
            dim,
            num_heads=num_heads,
            num_agents=num_agents,
            mlp_ratio=mlp_ratio,
            norm_layer=norm_layer,
            act_layer=act_layer,
        )
        self.skip_scale2 = nn.Parameter(torch.ones(dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Args: t (B, H, W, C) tokens laid out as a map. Returns: (B, H, W, C)."""
        padded = F.pad(self.ln_1(t), (0, 0, 1, 1, 1, 1))  # (B, H+2, W+2, C)
        x = t * self.skip_scale + self.ss2d(padded)[:, 1:-1, 1:-1]  # (B, H, W, C)
        h = self.conv(self.ln_2(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H, W, C)
        return x * self.skip_scale2 + self.attn_block(h)


class MambaIRBlock(nn.Module):
    """One residual state-space group on a (B, C, H, W) map: `conv3x3(LN(t + VSS(t)))`.

    There is deliberately no outer residual: the reference's block ends with the convolution.

    Args:
        dim: width C.
        **vss_kwargs: passed to `VSSBlock` (d_state, heads, agents, scan_backend, ...).
    """

    def __init__(self, dim: int, norm_layer: Callable[[int], nn.Module] = nn.LayerNorm, **vss_kwargs) -> None:
        super().__init__()
        self.vss = VSSBlock(dim, norm_layer=norm_layer, **vss_kwargs)
        self.norm = norm_layer(dim)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, H, W). Returns: (B, C, H, W)."""
        t = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        t = self.norm(t + self.vss(t))  # (B, H, W, C)
        return self.conv(t.permute(0, 3, 1, 2))  # (B, C, H, W)
