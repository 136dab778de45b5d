"""Parameter counts against the reference's, measured by instantiating the published code."""

from __future__ import annotations

import pytest
from torch import nn

from colormamba.layers import MambaIRBlock
from colormamba.models import build_discriminator, build_model


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("width", "expected"), [(64, 207_941), (128, 653_658), (256, 2_382_981)])
def test_mambair_block(width: int, expected: int) -> None:
    assert _count(MambaIRBlock(width)) == expected


def test_paper_generator() -> None:
    model = build_model("paper")
    assert _count(model.rgb_net) == 72_140_316  # G_A
    assert _count(model.hsv_net) == 28_103_819  # G_B
    assert _count(model) == 100_244_135
    assert sum(isinstance(m, MambaIRBlock) for m in model.rgb_net.modules()) == 3
    assert sum(isinstance(m, MambaIRBlock) for m in model.hsv_net.modules()) == 6


def test_discriminator() -> None:
    """2,772,801 in the reference, whose spectral norm keeps u and v as (frozen) parameters."""
    disc = build_discriminator(3)
    power_vectors = sum(b.numel() for name, b in disc.named_buffers() if name.endswith(("_u", "_v")))
    assert _count(disc) == 2_764_737
    assert power_vectors == 8_064
    assert _count(disc) + power_vectors == 2_772_801
