"""G_A: the RGB reconstruction network, a dense-skip U-Net on the NIR image steered by G_B.

G_B guides it twice: G_B's encoder features modulate four decoder scales (1/16 .. 1/2) through SPADE,
and G_B's HSV prediction enters once at full resolution through a criss-cross attention whose values
come from that prediction (refined by a SPADE block conditioned on the NIR edges).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colormamba.imaging import normalized_laplacian
from colormamba.layers import CrissCrossAttention, MambaIRBlock, SPADEResBlock
from colormamba.models.config import ModelConfig

SPADE_LEVELS = 4  # decoder outputs at levels 1..4 (1/2 .. 1/16) are conditioned on G_B stages 2..5
DENSE_LEVELS = (4, 3)  # decoder outputs re-used, upsampled, by the level-1 decoder and the head


def _down(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1)


def _up(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1)


class SPADEDecoderStage(nn.Module):
    """ReLU -> ConvTranspose 4x4 stride 2 -> SPADE residual block (conditioned on a G_B feature) -> IN."""

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, spade_hidden: int) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.ReLU(), _up(in_channels, out_channels))
        self.spade = SPADEResBlock(out_channels, cond_channels, spade_hidden)
        self.norm = nn.InstanceNorm2d(out_channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Args: x (B, in, h, w); cond (B, S, 2h, 2w). Returns: (B, out, 2h, 2w)."""
        return self.norm(self.spade(self.up(x), cond))


class RGBNet(nn.Module):
    """G_A (72,140,316 parameters in the paper configuration).

    Levels are numbered by resolution: level i works at 1/2**i. Encoder level i (1 .. L-1) is a 4x4
    stride-2 convolution, then a MambaIR block on the first `rgb_mamba_levels` levels, then IN (not on
    level 1). The innermost level goes down to 1/2**L and back. Decoder stage k takes
    concat(skip_k, y_k) and produces y_{k-1}; the stages producing levels 4..1 add a SPADE residual
    block conditioned on G_B's features. Level 1's decoder also reads y_4 (upsampled), and the
    full-resolution head reads skip_1, y_4, y_3 and y_1.

    Skips carry the LeakyReLU-activated encoder outputs: in the reference every next stage starts with
    an in-place LeakyReLU, which also overwrites the tensor kept for the skip. We apply that activation
    once at the end of each encoder level, which computes the same thing without in-place tricks.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        levels = config.rgb_levels
        width = [1] + [config.rgb_level_width(i) for i in range(1, levels + 1)]  # level i; 0: the NIR
        mamba = config.mamba_kwargs()

        self.encoder = nn.ModuleList()
        for i in range(1, levels):
            layers: list[nn.Module] = [_down(width[i - 1], width[i])]
            if i <= config.rgb_mamba_levels:
                layers.append(MambaIRBlock(width[i], **mamba))
            if i > 1:
                layers.append(nn.InstanceNorm2d(width[i]))
            self.encoder.append(nn.Sequential(*layers))
        self.innermost = nn.Sequential(
            _down(width[levels - 1], width[levels]),
            nn.ReLU(),
            _up(width[levels], width[levels - 1]),
            nn.InstanceNorm2d(width[levels - 1]),
        )
        # decoder[j] is stage k = levels - 1 - j, producing level k - 1.
        self.decoder = nn.ModuleList()
        for k in range(levels - 1, 1, -1):
            in_channels = 2 * width[k] + (width[DENSE_LEVELS[0]] if k == 2 else 0)
            if k - 1 > SPADE_LEVELS:
                stage: nn.Module = nn.Sequential(
                    nn.ReLU(), _up(in_channels, width[k - 1]), nn.InstanceNorm2d(width[k - 1])
                )
            else:
                cond = config.hsv_stage_width(k)  # level k - 1 (1/2**(k-1)) reads G_B's stage k
                stage = SPADEDecoderStage(in_channels, width[k - 1], cond, config.spade_hidden)
            self.decoder.append(stage)

        head_in = 2 * width[1] + sum(width[level] for level in DENSE_LEVELS)
        self.head_up = nn.Sequential(nn.ReLU(), _up(head_in, width[1]))
        self.fusion = SPADEResBlock(3, 1, config.spade_hidden)
        self.cca = CrissCrossAttention(width[1], 3, reduction=config.cca_reduction)
        self.out_conv = nn.Conv2d(width[1], 3, 3, padding=1)

    def forward(self, nir: torch.Tensor, hsv: torch.Tensor, hsv_features: list[torch.Tensor]) -> torch.Tensor:
        """Colorize.

        Args:
            nir: (B, 1, H, W), normalised; H and W multiples of 2**rgb_levels.
            hsv: (B, 3, H, W), G_B's prediction.
            hsv_features: G_B's stage 2..5 features, at 1/2 .. 1/16 resolution.
        Returns:
            rgb (B, 3, H, W) in (0, 1).
        """
        skips = [nir]  # skips[i]: activated output of encoder level i (index 0: the input)
        for level in self.encoder:
            skips.append(F.leaky_relu(level(skips[-1]), 0.2))  # (B, width_i, H / 2**i, W / 2**i)
        y = self.innermost(skips[-1])  # (B, width_{L-1}, H / 2**(L-1), W / 2**(L-1))

        k = len(skips) - 1
        outputs = {k: y}  # y_level by level, for the dense skips (with 5 levels, y_4 is the innermost's)
        for stage in self.decoder:
            parts = [skips[k], y]
            if k == 2:
                parts.insert(1, _resize(outputs[DENSE_LEVELS[0]], skips[2]))
            x = torch.cat(parts, dim=1)  # (B, in_k, H / 2**k, W / 2**k)
            level = k - 1
            y = stage(x) if level > SPADE_LEVELS else stage(x, hsv_features[level - 1])
            outputs[level] = y  # (B, width_{k-1}, H / 2**(k-1), W / 2**(k-1))
            k -= 1

        dense = [_resize(outputs[level], skips[1]) for level in DENSE_LEVELS]
        feature = self.head_up(torch.cat([skips[1], *dense, y], dim=1))  # (B, width_1, H, W)
        seg = normalized_laplacian(nir).detach()  # (B, 1, H, W): edges condition the HSV refinement
        seg_hsv = self.fusion(hsv, seg)  # (B, 3, H, W)
        return torch.sigmoid(self.out_conv(self.cca(feature, seg_hsv)))  # (B, 3, H, W)


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear (align_corners, as the reference) to the spatial size of `like`."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)
