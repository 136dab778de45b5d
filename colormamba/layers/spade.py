"""SPADE (Park et al., 2019): normalisation whose scale and shift are predicted per pixel from a map.

ColorMamba uses it to let G_B's features (and the NIR edge map) steer G_A's decoder: the conditioning
map decides, pixel by pixel, how the normalised activations are rescaled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm  # the reference's algorithm: see SPADEResBlock


class SPADE(nn.Module):
    """`IN(x) * (1 + gamma(s)) + beta(s)`, with s resized to x (nearest) and gamma, beta from convs.

    Args:
        channels: channels of x.
        cond_channels: channels of the conditioning map s.
        hidden: width of the shared convolution (128 in the reference).
    """

    def __init__(self, channels: int, cond_channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, H, W); cond (B, S, h, w), any size. Returns: (B, C, H, W)."""
        cond = F.interpolate(cond, size=x.shape[-2:], mode="nearest")  # (B, S, H, W)
        actv = self.mlp_shared(cond)  # (B, hidden, H, W)
        return self.norm(x) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResBlock(nn.Module):
    """`x + conv1(lrelu(SPADE1(conv0(lrelu(SPADE0(x, s))))))`, both convs spectrally normalised.

    Only the identity-shortcut form (same width in and out) exists in ColorMamba.

    Spectral norm is the forward-pre-hook `torch.nn.utils.spectral_norm`, as in the reference: at every
    training-mode forward one power iteration updates v, then u (`v = W^T u / |.|`, `u = W v / |.|`), and
    u, v start as random unit vectors. `torch.nn.utils.parametrizations.spectral_norm` iterates u then v
    and runs 15 iterations at construction, which makes the train-mode network a different function
    (outputs ~1e-2 apart). Eval mode is the same in both: `W / (u^T W v)` with the stored u, v. The
    state dict holds `conv_k.weight_orig`, `conv_k.weight_u`, `conv_k.weight_v`; checkpoints in the
    parametrization layout load through colormamba.checkpoint.load_weights.

    Args:
        channels: width of x (in and out).
        cond_channels: channels of the conditioning map.
        hidden: SPADE's shared width.
        negative_slope: of the leaky ReLUs (0.2 in the reference).
    """

    def __init__(
        self, channels: int, cond_channels: int, hidden: int = 128, negative_slope: float = 0.2
    ) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.norm_0 = SPADE(channels, cond_channels, hidden)
        self.conv_0 = spectral_norm(nn.Conv2d(channels, channels, 3, padding=1))
        self.norm_1 = SPADE(channels, cond_channels, hidden)
        self.conv_1 = spectral_norm(nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, H, W); cond (B, S, h, w). Returns: (B, C, H, W)."""
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, cond), self.negative_slope))  # (B, C, H, W)
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, cond), self.negative_slope))  # (B, C, H, W)
        return x + dx
