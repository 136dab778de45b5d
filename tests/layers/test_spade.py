"""SPADE conditioning and the spectral norm of its residual block."""

from __future__ import annotations

import torch

from colormamba.layers import SPADE, SPADEResBlock


def test_spade_follows_its_condition_at_any_size() -> None:
    torch.manual_seed(0)
    spade = SPADE(4, 2, hidden=8)
    x = torch.randn(2, 4, 8, 8)
    cond = torch.randn(2, 2, 4, 4)  # resized to 8x8 inside
    out = spade(x, cond)
    assert out.shape == x.shape
    assert not torch.allclose(out, spade(x, cond + 1.0))


def test_spade_resblock_spectral_norm_vectors_are_buffers() -> None:
    block = SPADEResBlock(8, 8, hidden=16)
    names = {name for name, _ in block.named_parameters()}
    assert "conv_0.parametrizations.weight.original" in names
    assert not any(name.endswith(("_u", "_v")) for name in names)
    assert {"conv_0.parametrizations.weight.0._u", "conv_1.parametrizations.weight.0._v"} <= {
        name for name, _ in block.named_buffers()
    }
    out = block(torch.randn(1, 8, 6, 6), torch.randn(1, 8, 3, 3))
    assert out.shape == (1, 8, 6, 6)
