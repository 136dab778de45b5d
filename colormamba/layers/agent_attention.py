"""Agent attention (Han et al., 2024) over a whole feature map, and the transformer block around it.

Full softmax attention over H*W tokens costs O((HW)^2); agent attention routes it through a few agent
tokens (the queries average-pooled to a p x p grid): agents attend to all keys, then every query attends
to the agents. Cost O(HW * agents), so it can run on the 128 x 128 maps of ColorMamba's first level.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from colormamba.layers.mlp import Mlp


class AgentAttention(nn.Module):
    """Agent attention on a channels-last map, plus a depthwise 3x3 convolution of the values.

    Position biases: the reference builds the agent module with a 1 x 1 "window" (the whole map is one
    window), so its interpolated biases are a single value per head and agent, broadcast over all tokens.
    We keep the reference's parameters (so parameter counts match) and compute the effective biases the
    same way: `an_bias`/`na_bias` (heads, agents, p, p) are resized bilinearly to 1 x 1, which reads their
    centre, and `ah_bias + aw_bias` / `ha_bias + wa_bias` add one more scalar per head and agent. The rest
    of each p x p grid gets a zero gradient. The agent-side bias (`an`, `ah`, `aw`) is constant along its
    softmax axis (the keys), so it cancels there and its gradient is zero as well; the query-side bias
    (`na`, `ha`, `wa`) is a real learnable preference of every query for each agent.

    Args:
        dim: width C (divisible by num_heads).
        num_heads: attention heads.
        num_agents: agent tokens; a square (the pooled grid is sqrt(num_agents) on a side).
        qkv_bias: bias of the q/k/v projection (the reference has none).
    """

    def __init__(self, dim: int, num_heads: int = 8, num_agents: int = 49, qkv_bias: bool = False) -> None:
        super().__init__()
        grid = math.isqrt(num_agents)
        if grid * grid != num_agents:
            raise ValueError(f"num_agents must be a square, got {num_agents}")
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.num_agents = num_agents
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.an_bias = nn.Parameter(torch.empty(num_heads, num_agents, grid, grid))
        self.na_bias = nn.Parameter(torch.empty(num_heads, num_agents, grid, grid))
        self.ah_bias = nn.Parameter(torch.empty(num_heads, num_agents, 1))
        self.aw_bias = nn.Parameter(torch.empty(num_heads, num_agents, 1))
        self.ha_bias = nn.Parameter(torch.empty(num_heads, 1, num_agents))
        self.wa_bias = nn.Parameter(torch.empty(num_heads, 1, num_agents))
        for bias in (self.an_bias, self.na_bias, self.ah_bias, self.aw_bias, self.ha_bias, self.wa_bias):
            nn.init.trunc_normal_(bias, std=0.02)

    def position_biases(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Effective biases: agent->key (heads, agents, 1) and query->agent (heads, 1, agents)."""
        an = F.interpolate(self.an_bias, size=(1, 1), mode="bilinear").flatten(1)  # (heads, agents)
        na = F.interpolate(self.na_bias, size=(1, 1), mode="bilinear").flatten(1)  # (heads, agents)
        agent_bias = an.unsqueeze(-1) + self.ah_bias + self.aw_bias  # (heads, agents, 1)
        query_bias = na.unsqueeze(1) + self.ha_bias + self.wa_bias  # (heads, 1, agents)
        return agent_bias, query_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, H, W, C). Returns: (B, H, W, C)."""
        b, h, w, c = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, H, W, C) each
        agents = self.pool(q.permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)  # (B, A, C)

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, -1, heads, c // heads).transpose(1, 2)  # (B, heads, tokens, C/heads)

        q, k, v, agents = split_heads(q), split_heads(k), split_heads(v), split_heads(agents)
        agent_bias, query_bias = self.position_biases()
        agent_logits = (agents * self.scale) @ k.transpose(-2, -1) + agent_bias  # (B, heads, A, HW)
        agent_v = torch.softmax(agent_logits, dim=-1) @ v  # (B, heads, A, C/heads)
        query_logits = (q * self.scale) @ agents.transpose(-2, -1) + query_bias  # (B, heads, HW, A)
        out = (torch.softmax(query_logits, dim=-1) @ agent_v).transpose(1, 2).reshape(b, h, w, c)  # (B,H,W,C)
        v_map = v.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)  # (B, C, H, W)
        out = out + self.dwc(v_map).permute(0, 2, 3, 1)  # (B, H, W, C)
        return self.proj(out)


class AgentBlock(nn.Module):
    """Pre-norm transformer block: `x + attn(norm(x))`, then `x + mlp(norm(x))`.

    Args:
        dim: width C.
        num_heads, num_agents: see `AgentAttention`.
        mlp_ratio: hidden width of the MLP, as a multiple of C.
        norm_layer, act_layer: building blocks (LayerNorm and GELU in the reference).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        num_agents: int = 49,
        mlp_ratio: float = 4.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        act_layer: Callable[[], nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = AgentAttention(dim, num_heads=num_heads, num_agents=num_agents)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, H, W, C). Returns: (B, H, W, C)."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
