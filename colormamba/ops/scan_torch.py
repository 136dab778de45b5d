"""Chunked selective scan in pure PyTorch, stable for any decay, with a hand-written, memory-lean backward.

The recurrence h_t = a_t h_{t-1} + x_t (a_t = exp(delta_t A), x_t = delta_t B_t u_t) is solved in chunks,
each cut into blocks (sizes in SCAN_SIZES):
1. every block is scanned from a zero state, one position at a time but all blocks of the chunk at once
   (a handful of tensor operations per block position, each over all the chunk's blocks: no Python loop
   over the sequence's steps);
2. the state entering each block is carried from block to block with the block's total decay;
3. every block is scanned again with its entering state folded into its first input.
The decays come from the log-decays delta * A <= 0 through one exp() per step and are only ever
multiplied, never divided: every factor is <= 1, so a strong decay (|delta * A| of 1e3 and more) gives 0,
where the cumulative-sum closed form needs exp(-cumsum(delta * A)) and overflows.

Memory: forward saves only its inputs and the state at each chunk start, O(batch x D x (L + N x L /
chunk)). Backward walks the chunks in reverse, recomputes one chunk's states from its start state, runs
the adjoint recurrence g_t = C_t dy_t + a_{t+1} g_{t+1} (the same block scan, in reversed time) and hands
the start-state gradient to the chunk before, so the O(batch x D x N x chunk) work tensors exist for one
chunk at a time and O(batch x D x N x L) never does.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F

from colormamba.ops.scan_reference import compute_dtype

# (steps per chunk, steps per block) by device type. A chunk is the checkpoint unit: backward recomputes
# one chunk at a time, so its work tensors, about ten of (batch, D, chunk, N), bound the transient memory.
# Blocks are scanned one position at a time, vectorised over the chunk's chunk / block blocks.
# CPU: small work tensors stay near the cache, which matters more than the number of operations
# ((64, 4) was the fastest of 32..256 x 4..32 at batch 1, D 768, N 16, L 1024 on 2 shared cores).
# CUDA: every operation is a kernel launch over all the work; (256, 8) was the fastest of 64..256 x 4..16
# over the three SS2D sizes on an H100 (0.38 / 0.17 / 0.09 s forward + backward; (256, 16): 0.47 / 0.23 /
# 0.12 s), with a peak of 3.5 GB at the largest, inputs and gradients included.
SCAN_SIZES = {"cpu": (64, 4), "cuda": (256, 8)}


def _block_scan(
    decay: torch.Tensor, x: torch.Tensor, h0: torch.Tensor, block: int, reverse: bool = False
) -> torch.Tensor:
    """States of h_t = decay_t h_{t-1} + x_t along dim 2 (or h_t = decay_t h_{t+1} + x_t if reverse).

    Args:
        decay: (batch, G, T, N, H), in [0, 1], T a multiple of block.
        x: (batch, G, T, N, H) inputs; overwritten with the states.
        h0: (batch, G, N, H), the state before step 0 (after step T - 1 if reverse).
        block: steps per block.
        reverse: run from the last step to the first (the adjoint recurrence of backward).
    Returns:
        x, holding the states (batch, G, T, N, H).
    """
    batch, groups, length, n_state, per_group = x.shape
    shape = (batch, groups, length // block, block, n_state, per_group)
    decay = decay.view(shape)
    h = x.view(shape)
    order = range(block - 1, -1, -1) if reverse else range(block)
    steps = list(itertools.pairwise(order))  # (previous, current) positions in scan order
    # 1. Every block's end state from a zero entering state, all blocks at once.
    local = h.clone()
    for prev, j in steps:
        local[:, :, :, j].addcmul_(decay[:, :, :, j], local[:, :, :, prev])
    # 2. The state entering each block, block by block. Rescanning in 3. instead of adding
    # "entering state x running product of decays" avoids those products, which run through the slow
    # subnormal range on their way to 0.
    block_decay = decay[:, :, :, 0].clone()  # (batch, G, K, N, H); a loop beats prod() over a middle dim
    for j in range(1, block):
        block_decay.mul_(decay[:, :, :, j])
    entering = []
    carry = h0
    for k in reversed(range(shape[2])) if reverse else range(shape[2]):
        entering.append(carry)
        carry = torch.addcmul(local[:, :, k, order[-1]], block_decay[:, :, k], carry)
    if reverse:
        entering.reverse()
    # 3. Rescan with each block's entering state folded into its first input.
    h[:, :, :, order[0]].addcmul_(decay[:, :, :, order[0]], torch.stack(entering, dim=2))
    for prev, j in steps:
        h[:, :, :, j].addcmul_(decay[:, :, :, j], h[:, :, :, prev])
    return x


def _time_major(M: torch.Tensor, s: int, e: int, padded: int) -> torch.Tensor:
    """Steps s..e of (..., X, L), zero-padded to `padded` steps, time before X: (..., padded, X).

    Zero padding is a no-op step for the scan: delta = 0 gives decay 1 and input 0, so the state passes
    through unchanged and the padded outputs and gradients are simply dropped.
    """
    return F.pad(M[..., s:e], (0, padded - (e - s))).transpose(-1, -2)


class _Chunk:
    """One chunk's inputs, time-major and padded to whole blocks, shaped to broadcast against the
    (batch, G, T, N, H) work tensors: channels innermost, so that every elementwise operation runs over
    long contiguous rows and sums over the state dimension N are sums of whole rows.
    Channel d = g * H + h reads group g of B and C."""

    def __init__(
        self,
        u: torch.Tensor,
        delta: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        s: int,
        e: int,
        block: int,
    ) -> None:
        self.s, self.e = s, e
        self.padded = -(-(e - s) // block) * block
        self.delta = _time_major(delta, s, e, self.padded).unsqueeze(-2)  # (batch, G, T, 1, H)
        self.u = _time_major(u, s, e, self.padded).unsqueeze(-2)
        self.A = A.transpose(-1, -2).unsqueeze(1)  # (G, 1, N, H)
        self.B = self._state_operand(B)
        self.C = self._state_operand(C)

    def _state_operand(self, M: torch.Tensor) -> torch.Tensor:
        """(batch, G, N, L) -> (batch, G, T, N, 1); time-invariant (D, N) -> (G, 1, N, H)."""
        if M.dim() == 4:
            return _time_major(M, self.s, self.e, self.padded).unsqueeze(-1)
        return M.reshape(self.A.shape[0], -1, M.shape[-1]).transpose(-1, -2).unsqueeze(1)

    def decay(self) -> torch.Tensor:
        """exp(delta_t A) (batch, G, T, N, H): the only exp() of the scan, of delta * A <= 0."""
        return torch.exp(self.delta * self.A)

    def inputs(self) -> torch.Tensor:
        return (self.delta * self.u) * self.B  # (batch, G, T, N, H)

    def untime(self, t: torch.Tensor) -> torch.Tensor:
        """(batch, G, T, X) padded and time-major -> (batch, G, X, e - s)."""
        return t[:, :, : self.e - self.s].transpose(-1, -2)


def _contract_state(t: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """sum_n t[..., n, h] M[n]: (batch, G, T, N, H) with B, C or A as (batch, G, T, N, 1) or (G, 1, N, H)
    -> (batch, G, T, H)."""
    if M.dim() == 5:  # one (1, N) @ (N, H) product per step, BLAS instead of a multiply and a sum
        # (contiguous: the CPU bmm copies every strided matrix one by one)
        return torch.matmul(M.transpose(-1, -2).contiguous(), t).squeeze(-2)
    return (t * M).sum(-2)


def _contract_channels(t: torch.Tensor, v: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """The gradient of B or C: sum over channels h of t[..., n, h] v[..., h], per step if M varies in time
    ((batch, G, T, N, 1) -> (batch, G, T, N)), else also over batch and time ((G, 1, N, H) -> (G, N, H))."""
    product = t * v.unsqueeze(-2)
    return product.sum(-1) if M.dim() == 5 else product.sum((0, 2))


class _ChunkedScan(torch.autograd.Function):
    """The scan without the D skip term and z gate; inputs already in the compute dtype.

    Inputs: u, delta (batch, G, H, L); A (G, H, N); B, C (batch, G, N, L) or (D, N); chunk and block sizes.
    Outputs: y (batch, G, H, L) and the last state (batch, G, N, H).
    """

    @staticmethod
    def forward(
        ctx: Any,
        u: torch.Tensor,
        delta: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        chunk_size: int,
        block: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, groups, per_group, length = u.shape
        h = u.new_zeros(batch, groups, A.shape[-1], per_group)
        starts = range(0, length, chunk_size)
        chunk_states = u.new_empty(len(starts), *h.shape)  # the only activations beyond the inputs
        y = u.new_empty(u.shape)
        for i, s in enumerate(starts):
            chunk_states[i] = h
            chunk = _Chunk(u, delta, A, B, C, s, min(s + chunk_size, length), block)
            states = _block_scan(chunk.decay(), chunk.inputs(), h, block)
            y[..., s : chunk.e] = chunk.untime(_contract_state(states, chunk.C))
            h = states[:, :, -1].clone()  # padding steps keep the state, so the padded end is the end
        ctx.sizes = (chunk_size, block)
        ctx.save_for_backward(u, delta, A, B, C, chunk_states)
        return y, h

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor, dh_last: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        u, delta, A, B, C, chunk_states = ctx.saved_tensors
        chunk_size, block = ctx.sizes
        length = u.shape[-1]
        grads = {
            name: torch.zeros_like(t)
            for name, t, need in zip(
                ("u", "delta", "A", "B", "C"), (u, delta, A, B, C), ctx.needs_input_grad[:5], strict=True
            )
            if need
        }
        dh = dh_last  # zeros when the caller did not use the last state (autograd materialises them)
        for i in reversed(range(chunk_states.shape[0])):
            s = i * chunk_size
            chunk = _Chunk(u, delta, A, B, C, s, min(s + chunk_size, length), block)
            dy_chunk = _time_major(dy, s, chunk.e, chunk.padded)  # (batch, G, T, H)
            dh = _chunk_backward(chunk, chunk_states[i], dy_chunk, dh, grads, block)
        return grads.get("u"), grads.get("delta"), grads.get("A"), grads.get("B"), grads.get("C"), None, None


def _chunk_backward(
    chunk: _Chunk,
    h0: torch.Tensor,
    dy: torch.Tensor,
    dh_end: torch.Tensor,
    grads: dict[str, torch.Tensor],
    block: int,
) -> torch.Tensor:
    """Gradients of one chunk, added into `grads`; returns the gradient of its start state.

    Args:
        chunk: the chunk's inputs.
        h0: (batch, G, N, H) its start state.
        dy: (batch, G, T, H) gradient of its outputs, time-major and padded.
        dh_end: (batch, G, N, H) gradient of its end state (from the next chunk or the caller).
        grads: the full-sequence gradients being filled, by input name.
        block: steps per block.
    Returns:
        (batch, G, N, H) gradient of h0.
    """
    decay = chunk.decay()
    x = chunk.inputs()
    h = _block_scan(decay, x.clone(), h0, block)
    # Adjoint recurrence g_t = C_t dy_t + a_{t+1} g_{t+1}, g_{T-1} = C_{T-1} dy_{T-1} + dh_end: the same
    # scan run backwards, each step decayed by the step after it.
    next_decay = torch.empty_like(decay)
    next_decay[:, :, :-1] = decay[:, :, 1:]
    next_decay[:, :, -1] = 1.0
    g = _block_scan(next_decay, dy.unsqueeze(-2) * chunk.C, dh_end, block, reverse=True)
    dh0 = decay[:, :, 0] * g[:, :, 0]
    if "C" in grads:
        _add_grad(grads, "C", chunk, _contract_channels(h, dy, chunk.C))
    # dL/d(delta_t A) = g_t * a_t h_{t-1} = g_t * (h_t - x_t); reuses h's buffer.
    d_log_decay = h.sub_(x).mul_(g)
    g_dot_B = _contract_state(g, chunk.B)  # (batch, G, T, H): dL/d(delta_t u_t)
    delta, u = chunk.delta.squeeze(-2), chunk.u.squeeze(-2)  # (batch, G, T, H)
    if "u" in grads:
        _add_grad(grads, "u", chunk, g_dot_B * delta)
    if "delta" in grads:
        _add_grad(grads, "delta", chunk, g_dot_B * u + _contract_state(d_log_decay, chunk.A))
    if "A" in grads:
        grads["A"] += (d_log_decay * chunk.delta).sum((0, 2)).transpose(-1, -2)
    if "B" in grads:
        _add_grad(grads, "B", chunk, _contract_channels(g, delta * u, chunk.B))
    return dh0


def _add_grad(grads: dict[str, torch.Tensor], name: str, chunk: _Chunk, grad: torch.Tensor) -> None:
    """Put a chunk's gradient into the full one: its time slice for a time-varying input ((batch, G, T, X)
    into (batch, G, X, L)), accumulated for time-invariant B or C ((G, N, H) into (D, N))."""
    full = grads[name]
    if full.dim() == 4:
        full[..., chunk.s : chunk.e] = chunk.untime(grad)
    else:
        full += grad.transpose(-1, -2).reshape(full.shape)


def selective_scan_torch(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    chunk_size: int | None = None,
    block: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The selective scan as chunked pure PyTorch (any device, any float dtype).

    Args:
        u, delta: (batch, D, L).
        A: (D, N), real, <= 0 for a decaying state.
        B, C: (D, N) or (batch, G, N, L); channel d reads group d // (D // G).
        D: (D,) or None.  z: (batch, D, L) or None.  delta_bias: (D,) or None.
        delta_softplus: apply softplus to delta (after adding delta_bias).
        chunk_size, block: steps per checkpointed chunk and per sequential block, SCAN_SIZES for the
            device by default (tests shrink them to cover many chunks and blocks on short sequences).
    Returns:
        y (batch, D, L) in u's dtype, and the last state (batch, D, N) in the compute dtype.
    Raises:
        ValueError: chunk_size is not a multiple of block (only the last chunk may end mid-block).
    """
    default_chunk, default_block = SCAN_SIZES.get(u.device.type, SCAN_SIZES["cuda"])
    chunk_size = chunk_size or default_chunk
    block = block or default_block
    if chunk_size % block:
        raise ValueError(f"chunk_size ({chunk_size}) must be a multiple of block ({block})")
    dtype = compute_dtype(u.dtype)
    batch, dim, length = u.shape
    groups = next((M.shape[1] for M in (B, C) if M.dim() == 4), 1)
    u_f = u.to(dtype)
    delta_f = delta.to(dtype)
    if delta_bias is not None:
        delta_f = delta_f + delta_bias.to(dtype).unsqueeze(-1)
    if delta_softplus:
        delta_f = F.softplus(delta_f)
    # (batch, D, L) -> (batch, G, H, L): channel d = g * H + h reads group g.
    y, last = _ChunkedScan.apply(
        u_f.reshape(batch, groups, -1, length),
        delta_f.reshape(batch, groups, -1, length),
        A.to(dtype).reshape(groups, -1, A.shape[-1]),
        B.to(dtype),
        C.to(dtype),
        chunk_size,
        block,
    )
    y = y.reshape(batch, dim, length)
    if D is not None:
        y = y + D.to(dtype).unsqueeze(-1) * u_f
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y.to(u.dtype), last.transpose(-1, -2).reshape(batch, dim, -1)
