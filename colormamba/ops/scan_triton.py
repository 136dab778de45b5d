"""The selective scan in Triton, forward and backward: a fast path that needs no compiled extension.

Covers the SS2D call pattern: B and C grouped (batch, G, N, L) (a (batch, N, L) pair arrives as G = 1),
delta_bias, optional softplus and D, no gate z; float32, float16 or bfloat16 sequences, the state always
float32. Other argument patterns (a gate, time-invariant (D, N) B or C) go to the `torch` backend with a
one-time warning, so that `backend="auto"` never fails on a call the kernels do not cover.

Triton and the kernels are imported on first use, so importing colormamba needs neither. On CUDA tensors
the kernels are compiled; with TRITON_INTERPRET=1 in the environment *before triton is imported* they run
on CPU tensors in Triton's interpreter (slow, for tests).
"""

from __future__ import annotations

import functools
import importlib
import logging
from types import ModuleType
from typing import Any

import torch

from colormamba.env import TRITON_INTERPRET

logger = logging.getLogger(__name__)

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_warned: set[str] = set()


def _interpret_requested() -> bool:
    return TRITON_INTERPRET.flag()


@functools.cache
def _import_kernels() -> ModuleType | str:
    """The kernel module, or why it cannot be imported (cached: the answer does not change)."""
    try:
        return importlib.import_module("colormamba.ops._triton_kernels")
    except ImportError as err:
        return f"triton cannot be imported ({err}); install it (`pip install triton`, Linux)"


def _kernels_interpreted() -> bool:
    """Whether the kernels were decorated in interpreter mode (triton decides at decoration time)."""
    from triton.runtime.interpreter import InterpretedFunction

    kernels = _import_kernels()
    return not isinstance(kernels, str) and isinstance(kernels.scan_fwd_kernel, InterpretedFunction)


def unavailable_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """None if the Triton scan can run on `dtype` tensors on `device`, else why not.

    CUDA tensors need a GPU build of triton; CPU tensors run only in Triton's interpreter, which must be
    switched on (TRITON_INTERPRET=1) before triton is first imported.
    """
    if dtype not in _DTYPES:
        return f"the Triton scan takes float32, float16 or bfloat16 inputs, not {dtype}"
    if device.type not in ("cuda", "cpu"):
        return f"the Triton scan runs on CUDA tensors, these are on {device.type}"
    if device.type == "cpu" and not _interpret_requested():
        return "the Triton scan runs on CUDA tensors (or on CPU tensors under TRITON_INTERPRET=1)"
    kernels = _import_kernels()
    if isinstance(kernels, str):
        return kernels
    interpreted = _kernels_interpreted()
    if device.type == "cpu" and not interpreted:
        return "TRITON_INTERPRET=1 was set after triton compiled the scan kernels; set it before importing"
    if device.type == "cuda" and interpreted:
        return "triton runs in interpreter mode (TRITON_INTERPRET=1): CUDA tensors are not scanned there"
    return None


def unsupported_reason(B: torch.Tensor, C: torch.Tensor, z: torch.Tensor | None) -> str | None:
    """None if the kernels cover these operands, else why (the caller then uses the torch backend)."""
    if z is not None:
        return "a gate z is not implemented in the Triton scan (SS2D gates outside the scan)"
    if B.dim() != 4 or C.dim() != 4:
        return "time-invariant (D, N) B or C is not implemented in the Triton scan, only (batch, G, N, L)"
    return None


def _kernels() -> ModuleType:
    kernels = _import_kernels()
    if isinstance(kernels, str):
        raise RuntimeError(kernels)
    return kernels


def pick_config(ch_per_group: int, n_state: int, device: torch.device) -> dict[str, int]:
    """Tile sizes: BLOCK_D channels x N states x T steps per program.

    About 4K float32 elements a tile keeps the scan's operands in registers with 4 warps. Wider channel
    blocks mean fewer atomics for dB and dC (they sum over the channels of a group). Measured on an H200
    (benchmarks/results/2026-11-30_h200/scan.jsonl, forward + backward at the paper's three SS2D sizes),
    16 steps x 16 channels beat 32 x 8 and 64 x 4 at every size (21.7 / 12.2 / 6.2 ms against 26.6 / 13.4
    / 7.0 for 32 x 8): the backward, two thirds of the time, gains more from wide channel blocks than from
    long chunks. In the interpreter tiles are small, so that tests cover several chunks and channel blocks
    cheaply.
    """
    if device.type != "cuda":
        return {"block_d": 4, "chunk": 8, "num_warps": 1}
    n_p2 = triton_next_power_of_2(n_state)
    chunk = 16
    block_d = max(1, min(triton_next_power_of_2(ch_per_group), 4096 // (n_p2 * chunk)))
    return {"block_d": block_d, "chunk": chunk, "num_warps": 4}


def triton_next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (tl.arange needs power-of-two extents)."""
    return 1 << max(0, (n - 1).bit_length())


class _TritonScanFn(torch.autograd.Function):
    """u, delta, B, C contiguous in their input dtype; A, D, delta_bias float32. Returns (y, last_state)."""

    @staticmethod
    def forward(
        ctx: Any,
        u: torch.Tensor,
        delta: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        D: torch.Tensor | None,
        delta_bias: torch.Tensor | None,
        delta_softplus: bool,
        config: dict[str, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        kernels = _kernels()
        batch, dim, length = u.shape
        groups, n_state = B.shape[1], B.shape[2]
        ch_per_group = dim // groups
        block_d, chunk, num_warps = config["block_d"], config["chunk"], config["num_warps"]
        n_chunks = max(1, -(-length // chunk))
        y = torch.empty_like(u)
        # The state entering each chunk, for the backward's recomputation: O(L / chunk), not O(L).
        states = u.new_empty(batch, dim, n_chunks, n_state, dtype=torch.float32)
        last = u.new_empty(batch, dim, n_state, dtype=torch.float32)
        grid = (batch, groups * -(-ch_per_group // block_d))
        kernels.scan_fwd_kernel[grid](
            u, delta, A, B, C,
            A if D is None else D,  # any pointer where the operand is absent (the flag skips the load)
            A if delta_bias is None else delta_bias,
            y, states, last,
            length, dim, groups, ch_per_group, n_chunks,
            N=n_state, N_P2=triton_next_power_of_2(n_state), BLOCK_D=block_d, T=chunk,
            HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
            num_warps=num_warps,
        )  # fmt: skip
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, states)
        ctx.delta_softplus = delta_softplus
        ctx.config = config
        return y, last

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor, dlast: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        kernels = _kernels()
        u, delta, A, B, C, D, delta_bias, states = ctx.saved_tensors
        batch, dim, length = u.shape
        groups, n_state = B.shape[1], B.shape[2]
        ch_per_group = dim // groups
        block_d, chunk, num_warps = ctx.config["block_d"], ctx.config["chunk"], ctx.config["num_warps"]
        n_chunks = states.shape[2]
        dy = dy.contiguous()
        du = torch.empty_like(u)
        ddelta = torch.empty_like(delta)
        f32 = {"dtype": torch.float32, "device": u.device}
        # dB, dC sum over the channel blocks of a group (atomics); the weights' gradients sum over batch.
        dB = torch.zeros(B.shape, **f32)
        dC = torch.zeros(C.shape, **f32)
        dA = torch.empty(batch, dim, n_state, **f32)
        dD = torch.empty(batch, dim, **f32) if D is not None else None
        dbias = torch.empty(batch, dim, **f32) if delta_bias is not None else None
        grid = (batch, groups * -(-ch_per_group // block_d))
        kernels.scan_bwd_kernel[grid](
            u, delta, A, B, C,
            A if D is None else D,
            A if delta_bias is None else delta_bias,
            states, dy,
            A if dlast is None else dlast.float().contiguous(),
            du, ddelta, dA, dB, dC,
            A if dD is None else dD,
            A if dbias is None else dbias,
            length, dim, groups, ch_per_group, n_chunks,
            N=n_state, N_P2=triton_next_power_of_2(n_state), BLOCK_D=block_d, T=chunk,
            HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=ctx.delta_softplus,
            HAS_DLAST=dlast is not None,
            num_warps=num_warps,
        )  # fmt: skip
        return (
            du,
            ddelta,
            dA.sum(0),
            dB.to(B.dtype),
            dC.to(C.dtype),
            None if dD is None else dD.sum(0),
            None if dbias is None else dbias.sum(0),
            None,
            None,
        )


def selective_scan_triton(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    *,
    config: dict[str, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The selective scan on Triton kernels (CUDA tensors, or CPU tensors in the interpreter).

    Args:
        u, delta: (batch, D, L), float32, float16 or bfloat16.
        A: (D, N).
        B, C: (batch, G, N, L) grouped (channel d reads group d // (D // G)); (D, N) goes to the torch
            backend.
        D: (D,) or None.  z: must be None (otherwise the torch backend runs).  delta_bias: (D,) or None.
        delta_softplus: apply softplus to delta (after adding delta_bias).
        config: tile sizes {"block_d", "chunk", "num_warps"} (default: `pick_config`), for tests and
            benchmarks.
    Returns:
        y (batch, D, L) in u's dtype, and the last state (batch, D, N) in float32, with gradients through
        both.
    Raises:
        RuntimeError: triton is not importable.
    """
    reason = unsupported_reason(B, C, z)
    if reason is not None:
        if reason not in _warned:
            _warned.add(reason)
            logger.warning("selective_scan: %s; using the torch backend for this call", reason)
        from colormamba.ops.scan_torch import selective_scan_torch

        return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    _kernels()  # fail with the install hint before converting anything
    itype = u.dtype
    dim = u.shape[1]
    if config is None:
        config = pick_config(dim // B.shape[1], A.shape[1], u.device)

    # Sequences in u's dtype (the kernels read them with unit stride along L), weights in float32.
    # Casting here keeps the casts in autograd, so the gradients come back in the callers' dtypes.
    def sequence(t: torch.Tensor) -> torch.Tensor:
        return t.to(itype).contiguous()

    def weight(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.float().contiguous()

    return _TritonScanFn.apply(
        u.contiguous(),
        sequence(delta),
        weight(A),
        sequence(B),
        sequence(C),
        weight(D),
        weight(delta_bias),
        delta_softplus,
        config,
    )
