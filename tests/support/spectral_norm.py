"""The reference's spectral norm written from the math (its power iteration), and the swap of a model's
SPADE convs for it: the oracle of tests/colormamba/layers/test_spade.py and models/test_train_mode.py."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from colormamba.layers import SPADEResBlock


class PowerIterationConv(nn.Module):
    """A 3x3 convolution with spectral norm written from the math, in the reference's order: at each
    training forward v <- W^T u / |W^T u|, then u <- W v / |W v|; the weight used is W / (u^T W v)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight.clone()), nn.Parameter(bias.clone())
        self.register_buffer("u", u.clone())
        self.register_buffer("v", v.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.reshape(self.weight.shape[0], -1)
        if self.training:
            with torch.no_grad():
                v = w.T @ self.u
                self.v = v / v.norm()
                u = w @ self.v
                self.u = u / u.norm()
        sigma = self.u @ w @ self.v
        return F.conv2d(x, self.weight / sigma, self.bias, padding=1)


def from_the_math(model: nn.Module) -> nn.Module:
    """A copy of `model` whose spectrally normalised convs (SPADE blocks) are PowerIterationConv, with
    the same weights and the same u, v."""
    out = copy.deepcopy(model)
    for block in [m for m in out.modules() if isinstance(m, SPADEResBlock)]:
        for name in ("conv_0", "conv_1"):
            conv = getattr(block, name)
            state = (conv.weight_orig.data, conv.bias.data, conv.weight_u, conv.weight_v)
            setattr(block, name, PowerIterationConv(*state))
    return out


def spectral_state(model: nn.Module) -> list[torch.Tensor]:
    """Every SPADE conv's (u, v), in module order, for either kind of model."""
    out = []
    for block in [m for m in model.modules() if isinstance(m, SPADEResBlock)]:
        for conv in (block.conv_0, block.conv_1):
            math = isinstance(conv, PowerIterationConv)
            out += [conv.u, conv.v] if math else [conv.weight_u, conv.weight_v]
    return out
