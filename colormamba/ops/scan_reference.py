"""The selective scan written straight from its recurrence: the oracle every other backend is tested against.

One Python step per time step, autograd through the loop. Autograd keeps every step's state, so backward
holds O(batch x D x N x L) activations (about 1.4 GB at batch 1, D 768, N 16, L 4096), and on a GPU each
step is a handful of tiny kernel launches; that is why `backend="auto"` never picks it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision the scan is carried in: at least float32, like mamba-ssm's reference and kernel.

    Half-precision inputs would lose the long products of decays; float64 stays float64 so that
    gradcheck and the float64 comparisons measure the algorithm, not float32 rounding.
    """
    return torch.promote_types(dtype, torch.float32)


def _steps_per_channel(M: torch.Tensor, dim: int, length: int) -> list[torch.Tensor]:
    """B or C as one (N,) vector per channel, for each time step.

    Args:
        M: (D, N) time-invariant, or (batch, G, N, L) where channel d reads group d // (D // G).
        dim: D, the number of channels.
        length: L.
    Returns:
        L tensors (D, N) (the same one each step) or (batch, D, N).
    """
    if M.dim() == 2:
        return [M] * length
    group_of_channel = torch.arange(dim, device=M.device) // (dim // M.shape[1])
    # unbind: its backward stacks the step gradients once, where indexing [..., t] per step would build
    # a full-size zero gradient each time (quadratic in L).
    return [M_t[:, group_of_channel] for M_t in M.unbind(-1)]


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t,  y_t = <C_t, h_t> + D u_t,  y *= silu(z).

    Args:
        u, delta: (batch, D, L).
        A: (D, N).
        B, C: (D, N) or (batch, G, N, L) (the entry point has already turned (batch, N, L) into G = 1).
        D: (D,) or None.  z: (batch, D, L) or None.  delta_bias: (D,) or None.
        delta_softplus: apply softplus to delta (after adding delta_bias).
    Returns:
        y (batch, D, L) in u's dtype, and the state after the last step (batch, D, N) in the compute
        dtype (the precision the state is carried in, as mamba-ssm returns it).
    """
    dtype = compute_dtype(u.dtype)
    batch, dim, length = u.shape
    u_f, delta_f, A_f = u.to(dtype), delta.to(dtype), A.to(dtype)
    if delta_bias is not None:
        delta_f = delta_f + delta_bias.to(dtype).unsqueeze(-1)
    if delta_softplus:
        delta_f = F.softplus(delta_f)
    B_steps = _steps_per_channel(B.to(dtype), dim, length)
    C_steps = _steps_per_channel(C.to(dtype), dim, length)
    h = u_f.new_zeros(batch, dim, A.shape[1])  # (batch, D, N)
    ys = []
    for delta_t, u_t, B_t, C_t in zip(delta_f.unbind(-1), u_f.unbind(-1), B_steps, C_steps, strict=True):
        decay = torch.exp(delta_t.unsqueeze(-1) * A_f)  # (batch, D, N)
        h = decay * h + (delta_t * u_t).unsqueeze(-1) * B_t
        ys.append((h * C_t).sum(-1))  # (batch, D)
    y = torch.stack(ys, dim=-1)  # (batch, D, L)
    if D is not None:
        y = y + D.to(dtype).unsqueeze(-1) * u_f
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y.to(u.dtype), h
