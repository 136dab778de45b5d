"""Triton kernels of the selective scan (private: `scan_triton` is the interface).

Math (per batch b, channel d, state n, time t), with dt = softplus(delta + delta_bias):
    a_t = exp(dt_t A[d, n]),  x_t = dt_t u_t B_t[n],  h_t = a_t h_{t-1} + x_t,
    y_t = sum_n C_t[n] h_t[n] + D[d] u_t.
One program owns BLOCK_D channels of one B/C group for one batch element and walks the sequence in chunks
of T steps. Inside a chunk the recurrence is a first-order linear scan, computed with
`tl.associative_scan` on (a, x) pairs; the state entering the chunk is carried in registers from the
previous chunk. So the work is parallel over (batch, channel blocks) x (BLOCK_D x N x T tile) and
sequential over L / T chunks.

Backward, with dy the output gradient and g_t = dLoss/dh_t (the adjoint of the state):
    g_t = C_t dy_t + a_{t+1} g_{t+1}   (a reverse-time linear scan, carried across chunks backwards),
and then, using a_t h_{t-1} = h_t - x_t so that no h_{t-1} (a shifted tile) is needed:
    dC_t[n] = sum_d dy_t h_t[n]              dB_t[n] = sum_d g_t[n] dt_t u_t
    du_t    = dt_t sum_n g_t B_t + D dy_t     ddt_t   = u_t sum_n g_t B_t + sum_n g_t (h_t - x_t) A
    dA      = sum_{b,t} g_t (h_t - x_t) dt_t  dD      = sum_{b,t} dy_t u_t
    ddelta  = ddt * sigmoid(delta + delta_bias) (with softplus), ddelta_bias = sum_{b,t} ddelta.
h_t inside a chunk is recomputed from the chunk's entry state, which the forward stores (one (N,) state
per channel and chunk). a_{t+1} is recomputed from delta loaded one step later. dB and dC sum over the
channel blocks of a group, so they are accumulated with float32 atomics; dA, dD and ddelta_bias are
written per batch element and summed by the caller (deterministic, and small).

Every kernel works under TRITON_INTERPRET=1 on CPU tensors, which is how CI tests them.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _linear_combine(a1, x1, a2, x2):
    """Compose h -> a1 h + x1 then h -> a2 h + x2 (the first pair is the earlier step)."""
    return a1 * a2, a2 * x1 + x2


@triton.jit
def _softplus(v):
    """log(1 + exp(v)) in float32 without overflow for large v or cancellation for very negative v.

    log(w) * x / (w - 1) with w = 1 + x is an accurate log1p(x) (Goldberg's trick): Triton has no log1p.
    """
    x = tl.exp(tl.minimum(v, 20.0))
    w = 1.0 + x
    log1p = tl.where(w == 1.0, x, tl.log(w) * x / (w - 1.0))
    return tl.where(v > 20.0, v, log1p)


@triton.jit
def _step_sizes(delta_ptr, bias, offs, mask, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """dt (0 where masked, so that a masked step is the identity: a = 1, x = 0) and d dt / d delta."""
    v = tl.load(delta_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        v = v + bias[:, None]
    if SOFTPLUS:
        dt = _softplus(v)
        ddt_dv = 1.0 / (1.0 + tl.exp(-v))
    else:
        dt = v
        ddt_dv = tl.full(v.shape, 1.0, tl.float32)
    return tl.where(mask, dt, 0.0), ddt_dv


@triton.jit
def scan_fwd_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    bias_ptr,
    y_ptr,
    states_ptr,
    last_ptr,
    L,
    DIM,
    GROUPS,
    CH_PER_GROUP,
    N_CHUNKS,
    N: tl.constexpr,
    N_P2: tl.constexpr,
    BLOCK_D: tl.constexpr,
    T: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
):
    """y (batch, D, L), chunk entry states (batch, D, N_CHUNKS, N) and the last state (batch, D, N).

    Grid: (batch, GROUPS * blocks per group). u, delta, y: (batch, D, L); B, C: (batch, G, N, L);
    A: (D, N); all contiguous.
    """
    pid_b = tl.program_id(0)
    pid_c = tl.program_id(1)
    blocks_per_group = tl.cdiv(CH_PER_GROUP, BLOCK_D)
    group = pid_c // blocks_per_group
    local = (pid_c % blocks_per_group) * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = local < CH_PER_GROUP
    d = group * CH_PER_GROUP + local  # (BLOCK_D,) channel indices
    n = tl.arange(0, N_P2)
    n_mask = n < N
    tt = tl.arange(0, T)
    dn_mask = d_mask[:, None] & n_mask[None, :]

    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dn_mask, other=0.0).to(tl.float32)  # (BD, N)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=d_mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=d_mask, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros((BLOCK_D,), tl.float32)

    seq_base = pid_b.to(tl.int64) * DIM * L + d.to(tl.int64)[:, None] * L  # (BD, 1)
    bc_base = (pid_b.to(tl.int64) * GROUPS + group) * N * L + n.to(tl.int64)[:, None] * L  # (N, 1)
    state_base = (pid_b.to(tl.int64) * DIM + d.to(tl.int64)[:, None]) * N_CHUNKS * N + n[None, :]

    h = tl.zeros((BLOCK_D, N_P2), tl.float32)
    for c in range(0, N_CHUNKS):
        t = c * T + tt
        t_mask = t < L
        mask = d_mask[:, None] & t_mask[None, :]
        offs = seq_base + t[None, :]
        tl.store(states_ptr + state_base + c * N, h, mask=dn_mask)

        u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)  # (BD, T)
        dt, _ = _step_sizes(delta_ptr, bias, offs, mask, HAS_BIAS, SOFTPLUS)
        bc_mask = n_mask[:, None] & t_mask[None, :]
        Bt = tl.load(B_ptr + bc_base + t[None, :], mask=bc_mask, other=0.0).to(tl.float32)  # (N, T)
        Ct = tl.load(C_ptr + bc_base + t[None, :], mask=bc_mask, other=0.0).to(tl.float32)

        a = tl.exp(dt[:, None, :] * A[:, :, None])  # (BD, N, T)
        x = (dt * u)[:, None, :] * Bt[None, :, :]
        a_cum, x_cum = tl.associative_scan((a, x), 2, _linear_combine)
        hs = a_cum * h[:, :, None] + x_cum  # (BD, N, T): the states of this chunk
        y = tl.sum(hs * Ct[None, :, :], axis=1)
        if HAS_D:
            y = y + Dv[:, None] * u
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
        # Masked (t >= L) steps are identities, so the chunk's last column is the state after step L - 1.
        h = tl.sum(tl.where((tt == T - 1)[None, None, :], hs, 0.0), axis=2)

    last_offs = (pid_b.to(tl.int64) * DIM + d.to(tl.int64)[:, None]) * N + n[None, :]
    tl.store(last_ptr + last_offs, h, mask=dn_mask)


@triton.jit
def scan_bwd_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    bias_ptr,
    states_ptr,
    dy_ptr,
    dlast_ptr,
    du_ptr,
    ddelta_ptr,
    dA_ptr,
    dB_ptr,
    dC_ptr,
    dD_ptr,
    dbias_ptr,
    L,
    DIM,
    GROUPS,
    CH_PER_GROUP,
    N_CHUNKS,
    N: tl.constexpr,
    N_P2: tl.constexpr,
    BLOCK_D: tl.constexpr,
    T: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr,
):
    """Input gradients of one (batch, channel block), walking the chunks from last to first.

    Writes du, ddelta (batch, D, L) in the inputs' dtype; adds into dB, dC (batch, G, N, L) float32
    (zeroed by the caller); writes per-batch partials dA (batch, D, N), dD and dbias (batch, D), float32.
    """
    pid_b = tl.program_id(0)
    pid_c = tl.program_id(1)
    blocks_per_group = tl.cdiv(CH_PER_GROUP, BLOCK_D)
    group = pid_c // blocks_per_group
    local = (pid_c % blocks_per_group) * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = local < CH_PER_GROUP
    d = group * CH_PER_GROUP + local
    n = tl.arange(0, N_P2)
    n_mask = n < N
    tt = tl.arange(0, T)
    dn_mask = d_mask[:, None] & n_mask[None, :]

    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dn_mask, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=d_mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=d_mask, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros((BLOCK_D,), tl.float32)

    seq_base = pid_b.to(tl.int64) * DIM * L + d.to(tl.int64)[:, None] * L
    bc_base = (pid_b.to(tl.int64) * GROUPS + group) * N * L + n.to(tl.int64)[:, None] * L
    state_base = (pid_b.to(tl.int64) * DIM + d.to(tl.int64)[:, None]) * N_CHUNKS * N + n[None, :]
    dn_offs = (pid_b.to(tl.int64) * DIM + d.to(tl.int64)[:, None]) * N + n[None, :]

    # g_next: the adjoint of the state at the first step of the chunk after this one (for the last
    # chunk, the gradient flowing in through the returned last state).
    if HAS_DLAST:
        g_next = tl.load(dlast_ptr + dn_offs, mask=dn_mask, other=0.0).to(tl.float32)
    else:
        g_next = tl.zeros((BLOCK_D, N_P2), tl.float32)
    dA_acc = tl.zeros((BLOCK_D, N_P2), tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), tl.float32)

    for i in range(0, N_CHUNKS):
        c = N_CHUNKS - 1 - i
        t = c * T + tt
        t_mask = t < L
        mask = d_mask[:, None] & t_mask[None, :]
        offs = seq_base + t[None, :]
        bc_mask = n_mask[:, None] & t_mask[None, :]

        u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dt, ddt_dv = _step_sizes(delta_ptr, bias, offs, mask, HAS_BIAS, SOFTPLUS)
        Bt = tl.load(B_ptr + bc_base + t[None, :], mask=bc_mask, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + bc_base + t[None, :], mask=bc_mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)

        # Recompute the chunk's states from its entry state.
        h0 = tl.load(states_ptr + state_base + c * N, mask=dn_mask, other=0.0)
        a = tl.exp(dt[:, None, :] * A[:, :, None])
        x = (dt * u)[:, None, :] * Bt[None, :, :]
        a_cum, x_cum = tl.associative_scan((a, x), 2, _linear_combine)
        hs = a_cum * h0[:, :, None] + x_cum

        # a_{t+1}: the next step's decay (1 past the end, where g_next carries dlast in unchanged).
        next_mask = d_mask[:, None] & (t + 1 < L)[None, :]
        dt_next, _ = _step_sizes(delta_ptr, bias, offs + 1, next_mask, HAS_BIAS, SOFTPLUS)
        a_next = tl.exp(dt_next[:, None, :] * A[:, :, None])
        cy = Ct[None, :, :] * dy[:, None, :]
        g_cum, g_part = tl.associative_scan((a_next, cy), 2, _linear_combine, reverse=True)
        g = g_part + g_cum * g_next[:, :, None]  # (BD, N, T) = dLoss/dh_t
        g_next = tl.sum(tl.where((tt == 0)[None, None, :], g, 0.0), axis=2)

        dC = tl.sum(hs * dy[:, None, :], axis=0)  # (N, T)
        dB = tl.sum(g * (dt * u)[:, None, :], axis=0)
        tl.atomic_add(dC_ptr + bc_base + t[None, :], dC, mask=bc_mask)
        tl.atomic_add(dB_ptr + bc_base + t[None, :], dB, mask=bc_mask)

        gB = tl.sum(g * Bt[None, :, :], axis=1)  # (BD, T)
        decayed = g * (hs - x)  # g_t a_t h_{t-1}
        du = gB * dt
        if HAS_D:
            du = du + Dv[:, None] * dy
            dD_acc += tl.sum(dy * u, axis=1)
        ddt = gB * u + tl.sum(decayed * A[:, :, None], axis=1)
        dA_acc += tl.sum(decayed * dt[:, None, :], axis=2)
        ddelta = tl.where(mask, ddt * ddt_dv, 0.0)
        dbias_acc += tl.sum(ddelta, axis=1)
        tl.store(du_ptr + offs, du.to(du_ptr.dtype.element_ty), mask=mask)
        tl.store(ddelta_ptr + offs, ddelta.to(ddelta_ptr.dtype.element_ty), mask=mask)

    tl.store(dA_ptr + dn_offs, dA_acc, mask=dn_mask)
    bd_offs = pid_b.to(tl.int64) * DIM + d
    if HAS_D:
        tl.store(dD_ptr + bd_offs, dD_acc, mask=d_mask)
    if HAS_BIAS:
        tl.store(dbias_ptr + bd_offs, dbias_acc, mask=d_mask)
