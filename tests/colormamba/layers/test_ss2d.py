"""SS2D against a direct four-direction computation with the sequential reference scan."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from colormamba.layers import SS2D
from colormamba.ops.scan_reference import selective_scan_reference


def _orders(height: int, width: int) -> list[torch.Tensor]:
    """Flat (row-major) index visited at each step of the four scans."""
    grid = torch.arange(height * width).view(height, width)
    rows, cols = grid.flatten(), grid.t().flatten()
    return [rows, cols, rows.flip(0), cols.flip(0)]


def _ss2d_direct(m: SS2D, x: torch.Tensor) -> torch.Tensor:
    """SS2D written direction by direction: gather in scan order, scan, scatter back, sum."""
    b, h, w, _ = x.shape
    xs, z = m.in_proj(x).chunk(2, dim=-1)
    xs = F.silu(m.conv2d(xs.permute(0, 3, 1, 2))).flatten(2)  # (B, d_inner, L) row-major
    d_inner, n = m.d_inner, m.d_state
    total = torch.zeros_like(xs)
    for k, order in enumerate(_orders(h, w)):
        u = xs[:, :, order]
        dt, bs, cs = (m.x_proj_weight[k] @ u).split([m.dt_rank, n, n], dim=1)
        sl = slice(k * d_inner, (k + 1) * d_inner)
        y, _ = selective_scan_reference(
            u,
            m.dt_projs_weight[k] @ dt,
            -torch.exp(m.A_logs[sl]),
            bs.unsqueeze(1),
            cs.unsqueeze(1),
            m.Ds[sl],
            None,
            m.dt_projs_bias[k],
            True,
        )
        total[:, :, order] += y
    y = m.out_norm(total.transpose(1, 2).reshape(b, h, w, d_inner)) * F.silu(z)
    return m.out_proj(y)


def test_ss2d_matches_direction_by_direction_reference() -> None:
    torch.manual_seed(0)
    m = SS2D(8, d_state=4)
    x = torch.randn(2, 3, 5, 8)  # H != W, so a mixed-up transpose would show
    torch.testing.assert_close(m(x), _ss2d_direct(m, x), rtol=1e-4, atol=1e-5)


def test_ss2d_initialisation() -> None:
    torch.manual_seed(0)
    m = SS2D(32, d_state=16)
    assert m.d_inner == 64 and m.dt_rank == 2
    assert torch.allclose(-torch.exp(m.A_logs[5]), -torch.arange(1.0, 17.0))  # S4D-real
    assert torch.all(m.Ds == 1)
    dt = F.softplus(m.dt_projs_bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    assert m.x_proj_weight.shape == (4, 2 + 32, 64) and m.dt_projs_weight.shape == (4, 64, 2)
