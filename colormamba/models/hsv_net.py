"""G_B: the HSV colour-prediction network, whose prediction and features guide G_A.

A U-Net with two encoders of the same shape: one reads the NIR image with its edge map and its HSV
reading, the other reads the edge map alone, so that structure has its own path into the decoder.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from colormamba.imaging import laplacian
from colormamba.layers import DoubleConv, MambaIRBlock, UpConv
from colormamba.models.config import ModelConfig

NUM_STAGES = 5
MAMBA_STAGES = (2, 3, 4)


class HSVNet(nn.Module):
    """G_B (28,103,819 parameters at the paper width 32).

    Main encoder input: `[nir, e, nir_hsv]` (5 channels), edge encoder input: `e`, where e is the
    8-neighbour Laplacian of the NIR image (zero padding; per image, as the reference's torch convolution
    already was). Stages 2-4 end their second convolution with a MambaIR block; 2x max-pool between
    stages. The edge encoder's stages 2-5 start as copies of the main encoder's and train separately.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        widths = [config.hsv_stage_width(s) for s in range(1, NUM_STAGES + 1)]  # 32, 64, ..., 512

        def stage(i: int, in_channels: int) -> DoubleConv:
            mixer = MambaIRBlock(widths[i], **config.mamba_kwargs()) if i + 1 in MAMBA_STAGES else None
            return DoubleConv(in_channels, widths[i], mixer=mixer)

        main = [stage(0, 5)] + [stage(i, widths[i - 1]) for i in range(1, NUM_STAGES)]
        self.encoder = nn.ModuleList(main)
        self.edge_encoder = nn.ModuleList([stage(0, 1)] + [copy.deepcopy(s) for s in main[1:]])
        # Decoder: upsample, then concatenate the main and the edge skip of that scale.
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        in_channels = 2 * widths[-1]
        for i in reversed(range(NUM_STAGES - 1)):
            out_channels = 2 * widths[i]  # as wide as the two skips it meets
            self.ups.append(UpConv(in_channels, out_channels))
            self.decoder.append(DoubleConv(2 * out_channels, out_channels))
            in_channels = out_channels
        self.head = nn.Conv2d(in_channels, 3, 3, padding=1)

    @staticmethod
    def _encode(stages: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, stage in enumerate(stages):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))  # (B, width_i, H / 2**i, W / 2**i)
            features.append(x)
        return features

    def forward(self, nir: torch.Tensor, nir_hsv: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Predict HSV from NIR.

        Args:
            nir: (B, 1, H, W), normalised; H and W multiples of 16.
            nir_hsv: (B, 3, H, W), the NIR image read as HSV, normalised.
        Returns:
            hsv (B, 3, H, W) in (-1, 1) (tanh), and the main encoder's stage 2-5 features
            [(B, 2w, H/2, W/2), (B, 4w, H/4, W/4), (B, 8w, H/8, W/8), (B, 16w, H/16, W/16)].
        """
        edges = laplacian(nir)  # (B, 1, H, W)
        main = self._encode(self.encoder, torch.cat([nir, edges, nir_hsv], dim=1))
        edge = self._encode(self.edge_encoder, edges)
        x = torch.cat([main[-1], edge[-1]], dim=1)  # (B, 2 * 16w, H/16, W/16)
        for j, (up, conv) in enumerate(zip(self.ups, self.decoder, strict=True)):
            skip = NUM_STAGES - 2 - j
            x = conv(torch.cat([up(x), main[skip], edge[skip]], dim=1))  # (B, ..., H / 2**skip, W / 2**skip)
        return torch.tanh(self.head(x)), main[1:]
