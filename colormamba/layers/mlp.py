"""The two-layer token MLP of transformer blocks."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Mlp(nn.Module):
    """Linear -> activation -> Linear on the last (channel) dimension.

    Args:
        dim: input and output width.
        hidden_dim: hidden width.
        act_layer: activation building block.
    """

    def __init__(self, dim: int, hidden_dim: int, act_layer: Callable[[], nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (..., dim). Returns: (..., dim)."""
        return self.fc2(self.act(self.fc1(x)))
