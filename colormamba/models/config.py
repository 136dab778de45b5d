"""The one configuration of the ColorMamba generator: every width, depth and block size lives here.

The defaults are the published network (the `paper` preset); other presets in `registry.py` state only
their deviations. A resolved config is a flat dataclass of JSON types, so it travels inside checkpoints
(`dataclasses.asdict`) and rebuilds the same architecture (`ModelConfig.from_dict`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

HSV_POOLS = 4  # G_B's U-Net has five stages, four 2x max-pools: its inputs must be multiples of 16
# G_A's decoder outputs at 1/16 and 1/8 feed the dense skips, and the 1/16 one must sit above the
# innermost level: five levels is the shallowest G_A with the reference's wiring.
MIN_RGB_LEVELS = 5


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the generator (G_A + G_B).

    G_A, the RGB network (a dense-skip U-Net):
        rgb_width: channels of the first level (64); level i has min(rgb_width * 2**(i-1), rgb_max_width).
        rgb_max_width: channel cap of the deep levels (512).
        rgb_levels: stride-2 levels (8, so the input must be a multiple of 2**8 = 256; at least 5, the
            depth that the four SPADE scales and the dense skips need).
        rgb_mamba_levels: the first levels that end in a MambaIR block (3).
    G_B, the HSV network (a two-encoder U-Net with five stages):
        hsv_width: channels of its first stage (32); stage i has hsv_width * 2**(i-1).
    MambaIR blocks (both networks):
        d_state: SSM state size N (16).  ssm_expand: d_inner = ssm_expand * C (2).
        conv_compress: width divisor of the block's local convolution branch (3).
        agent_heads: heads of the agent attention (8); divides every MambaIR width.
        agent_num: agent tokens (49 = 7 x 7); a square.
        mlp_ratio: hidden width of the transformer MLP (4).
        scan_backend: `colormamba.ops.selective_scan` backend ("auto", or a backend named there).
    Fusion:
        spade_hidden: width of SPADE's shared convolution (128).
        cca_reduction: query/key width of the criss-cross attention is rgb_width // cca_reduction (8).
    """

    # G_A
    rgb_width: int = 64
    rgb_max_width: int = 512
    rgb_levels: int = 8
    rgb_mamba_levels: int = 3
    # G_B
    hsv_width: int = 32
    # MambaIR blocks
    d_state: int = 16
    ssm_expand: int = 2
    conv_compress: int = 3
    agent_heads: int = 8
    agent_num: int = 49
    mlp_ratio: float = 4.0
    scan_backend: str = "auto"
    # fusion
    spade_hidden: int = 128
    cca_reduction: int = 8

    def __post_init__(self) -> None:
        problems = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                problems.append(f"{f.name} must be a positive integer, got {value!r}")
        if problems:
            raise ValueError("; ".join(problems))
        if self.rgb_levels < MIN_RGB_LEVELS:
            problems.append(f"rgb_levels must be >= {MIN_RGB_LEVELS}, got {self.rgb_levels}")
        if self.rgb_mamba_levels >= self.rgb_levels:
            problems.append(f"rgb_mamba_levels must be < rgb_levels, got {self.rgb_mamba_levels}")
        if math.isqrt(self.agent_num) ** 2 != self.agent_num:
            problems.append(f"agent_num must be a square, got {self.agent_num}")
        for width in self.mamba_widths():
            if width % self.agent_heads:
                problems.append(f"agent_heads={self.agent_heads} does not divide MambaIR width {width}")
            if width < self.conv_compress:
                problems.append(f"MambaIR width {width} is narrower than conv_compress={self.conv_compress}")
        if self.rgb_width < self.cca_reduction:
            problems.append(f"rgb_width must be >= cca_reduction={self.cca_reduction}")
        if not isinstance(self.mlp_ratio, int | float) or self.mlp_ratio <= 0:
            problems.append(f"mlp_ratio must be a positive number, got {self.mlp_ratio!r}")
        if not isinstance(self.scan_backend, str):
            problems.append(f"scan_backend must be a string, got {self.scan_backend!r}")
        if problems:
            raise ValueError("; ".join(problems))

    def rgb_level_width(self, level: int) -> int:
        """Channels of G_A's level `level` (1-based; level rgb_levels is the innermost)."""
        return min(self.rgb_width * 2 ** (level - 1), self.rgb_max_width)

    def hsv_stage_width(self, stage: int) -> int:
        """Channels of G_B's stage `stage` (1..5)."""
        return self.hsv_width * 2 ** (stage - 1)

    def mamba_widths(self) -> list[int]:
        """Widths of every MambaIR block (G_A's first levels, G_B's stages 2-4)."""
        rgb = [self.rgb_level_width(i) for i in range(1, self.rgb_mamba_levels + 1)]
        return rgb + [self.hsv_stage_width(s) for s in (2, 3, 4)]

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this (inputs are padded up to it)."""
        return 2 ** max(self.rgb_levels, HSV_POOLS)

    def mamba_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of every `MambaIRBlock`."""
        return {
            "d_state": self.d_state,
            "expand": self.ssm_expand,
            "conv_compress": self.conv_compress,
            "num_heads": self.agent_heads,
            "num_agents": self.agent_num,
            "mlp_ratio": self.mlp_ratio,
            "scan_backend": self.scan_backend,
        }

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Rebuild from `dataclasses.asdict` output (e.g. a checkpoint); unknown keys are refused.

        Raises:
            ValueError: a key that is not a field (the known fields are listed), or an invalid value.
        """
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; known: {cls.field_names()}")
        return cls(**values)
