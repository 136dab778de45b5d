"""SS2D: the 2-D selective-scan mixer of VMamba/MambaIR, as used inside ColorMamba's MambaIR blocks.

A 2-D map has no single natural order, so the map is read four ways (row-major, column-major and both
reversed) and the four causal scans are summed: every position then sees context from every direction.
All four directions go through one `selective_scan` call (channels stacked, B and C grouped per
direction), which is what makes a fused GPU kernel worthwhile.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from colormamba.ops import selective_scan

NUM_DIRECTIONS = 4  # row-major, column-major, and both reversed


class SS2D(nn.Module):
    """Four-direction selective scan over a channels-last 2-D map.

    Args:
        dim: model width C.
        d_state: state size N per channel.
        expand: d_inner = expand * C.
        dt_rank: rank of the delta projection; None -> ceil(C / 16) as in Mamba.
        d_conv: depthwise convolution size before the scan.
        dt_min, dt_max, dt_init_floor: range of the initial step sizes (see `_init_dt_bias`).
        scan_backend: passed to `colormamba.ops.selective_scan` ("auto" picks the fastest available).
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        expand: float = 2.0,
        dt_rank: int | None = None,
        d_conv: int = 3,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.d_state = d_state
        self.d_inner = int(expand * dim)
        self.dt_rank = math.ceil(dim / 16) if dt_rank is None else dt_rank
        self.scan_backend = scan_backend
        # what forward calls: colormamba.models.compile swaps in a graph-breaking wrapper when it compiles
        # the block (the scan's backends are hand-written kernels with their own autograd)
        self.scan = selective_scan
        d_inner, k = self.d_inner, NUM_DIRECTIONS

        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner)
        # Per-direction projections stored stacked, so each is one batched matmul over directions.
        self.x_proj_weight = nn.Parameter(torch.empty(k, self.dt_rank + 2 * d_state, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, self.dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner))
        # S4D-real initialisation: A = -(1..N) for every channel, kept as log so A stays negative.
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(k * d_inner, 1)  # (K*d_inner, N)
        self.A_logs = nn.Parameter(torch.log(a))
        self.Ds = nn.Parameter(torch.ones(k * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

        # nn.Linear's default (uniform +-1/sqrt(fan_in)), as the reference's stacked Linear layers had.
        bound = d_inner**-0.5
        nn.init.uniform_(self.x_proj_weight, -bound, bound)
        # Preserve the variance of delta at initialisation (Mamba's dt_init="random", dt_scale=1).
        dt_std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_projs_weight, -dt_std, dt_std)
        with torch.no_grad():
            self.dt_projs_bias.copy_(_init_dt_bias((k, d_inner), dt_min, dt_max, dt_init_floor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, H, W, C). Returns: (B, H, W, C)."""
        batch, height, width, _ = x.shape
        length, d_inner, k = height * width, self.d_inner, NUM_DIRECTIONS
        xz = self.in_proj(x)  # (B, H, W, 2*d_inner)
        x, z = xz.chunk(2, dim=-1)  # (B, H, W, d_inner) each
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))  # (B, d_inner, H, W)

        rows = x.flatten(2)  # (B, d_inner, L) row-major
        cols = x.transpose(2, 3).flatten(2)  # (B, d_inner, L) column-major
        xs = torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)  # (B, K, d_inner, L)
        x_dbl = torch.matmul(self.x_proj_weight, xs)  # (B, K, R + 2N, L)
        dts, bs, cs = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.matmul(self.dt_projs_weight, dts)  # (B, K, d_inner, L)

        # The scan runs in float32 whatever the surrounding autocast (long products of decays).
        y = self.scan(
            xs.reshape(batch, k * d_inner, length).float(),  # (B, K*d_inner, L)
            dts.reshape(batch, k * d_inner, length).float(),  # (B, K*d_inner, L)
            -torch.exp(self.A_logs.float()),  # (K*d_inner, N)
            bs.float(),  # (B, K, N, L): one group per direction
            cs.float(),  # (B, K, N, L)
            self.Ds.float(),  # (K*d_inner,)
            delta_bias=self.dt_projs_bias.float().flatten(),  # (K*d_inner,)
            delta_softplus=True,
            backend=self.scan_backend,
        ).view(batch, k, d_inner, length)  # (B, K, d_inner, L)

        # Undo the reversals, then the transpose of the column-major pair, and sum the directions.
        y_rows = y[:, 0] + y[:, 2].flip(-1)  # (B, d_inner, L) in row-major order
        y_cols = y[:, 1] + y[:, 3].flip(-1)  # (B, d_inner, L) in column-major order
        y_cols = y_cols.view(batch, d_inner, width, height).transpose(2, 3).reshape(batch, d_inner, length)
        y = (y_rows + y_cols).transpose(1, 2).view(batch, height, width, d_inner)  # (B, H, W, d_inner)
        y = self.out_norm(y) * F.silu(z)  # (B, H, W, d_inner)
        return self.out_proj(y)  # (B, H, W, C)


def _init_dt_bias(shape: tuple[int, ...], dt_min: float, dt_max: float, floor: float) -> torch.Tensor:
    """Bias whose softplus is a log-uniform step size in [dt_min, dt_max] (floored), as in Mamba.

    Spreading the initial step sizes over two decades gives each channel a different memory length.
    """
    dt = torch.exp(torch.rand(shape) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus
