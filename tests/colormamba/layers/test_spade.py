"""SPADE conditioning and the spectral norm of its residual block (the reference's power iteration)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from colormamba.layers import SPADE, SPADEResBlock
from tests.support.spectral_norm import from_the_math, spectral_state


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
    assert "conv_0.weight_orig" in names
    assert not any(name.endswith(("_u", "_v")) for name in names)
    assert {"conv_0.weight_u", "conv_0.weight_v", "conv_1.weight_u", "conv_1.weight_v"} <= {
        name for name, _ in block.named_buffers()
    }
    out = block(torch.randn(1, 8, 6, 6), torch.randn(1, 8, 3, 3))
    assert out.shape == (1, 8, 6, 6)


def test_train_mode_spectral_norm_is_the_reference_power_iteration() -> None:
    torch.manual_seed(0)
    block = SPADEResBlock(6, 3, hidden=8).train()
    ref = from_the_math(block).train()
    for step in range(5):  # u and v move at every training forward: the outputs must follow them
        x, cond = torch.randn(2, 6, 8, 8), torch.randn(2, 3, 4, 4)
        torch.testing.assert_close(block(x, cond), ref(x, cond), rtol=1e-5, atol=1e-6, msg=f"forward {step}")
        for got, want in zip(spectral_state(block), spectral_state(ref), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    block.eval(), ref.eval()
    u_before = block.conv_0.weight_u.clone()
    x, cond = torch.randn(1, 6, 8, 8), torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(block(x, cond), ref(x, cond), rtol=1e-5, atol=1e-6)
    assert torch.equal(block.conv_0.weight_u, u_before)  # eval mode keeps u and v


def test_spade_block_is_torch_nn_utils_spectral_norm_in_train_mode() -> None:
    """The reference builds its SPADE convs with torch.nn.utils.spectral_norm: the same function over
    several training forwards (outputs and u, v)."""
    torch.manual_seed(1)
    block = SPADEResBlock(4, 2, hidden=8).train()
    ref = copy.deepcopy(block)
    for name in ("conv_0", "conv_1"):
        ours = getattr(block, name)
        conv = nn.Conv2d(4, 4, 3, padding=1)
        conv.load_state_dict({"weight": ours.weight_orig.data, "bias": ours.bias.data})
        conv = torch.nn.utils.spectral_norm(conv)
        conv.weight_u.copy_(ours.weight_u)
        conv.weight_v.copy_(ours.weight_v)
        setattr(ref, name, conv)
    for _ in range(4):
        x, cond = torch.randn(2, 4, 6, 6), torch.randn(2, 2, 6, 6)
        torch.testing.assert_close(block(x, cond), ref(x, cond), rtol=0, atol=0)
        for got, want in zip(spectral_state(block), spectral_state(ref), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
