"""The selective scan on mamba-ssm's fused CUDA kernel, through our own thin autograd Function.

The kernel is the compiled extension module `selective_scan_cuda`, installed by mamba-ssm's wheel or
built from its `csrc/selective_scan/` sources with `torch.utils.cpp_extension.load(name=
"selective_scan_cuda", ...)`. It is imported lazily, on first use, so that importing colormamba never
needs CUDA or mamba-ssm. Its interface (mamba-ssm 2.3.2):
    fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus) -> [out, x, *([out_z] if z is given)]
    bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, delta_softplus, recompute_out_z)
        -> [du, ddelta, dA, dB, dC, dD, ddelta_bias, *([dz] if z is given)]
where x (batch, D, n_chunks, 2N) holds per-chunk scan states: the last state is x[:, :, -1, 1::2]
(times B when B is time-invariant: the kernel then leaves B out of the scanned state).
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any

import torch

_INSTALL_HINT = (
    "install mamba-ssm's kernel (`pip install --no-build-isolation mamba-ssm`, with MAMBA_FORCE_BUILD=TRUE "
    "where its prebuilt wheels cannot be downloaded), or build its csrc/selective_scan sources with "
    "torch.utils.cpp_extension.load(name='selective_scan_cuda', ...) and put the result on sys.path"
)
# What the kernel's input-type dispatch accepts (its weights, A, D and delta_bias, are always float32).
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@functools.cache
def _import_kernel() -> ModuleType | str:
    """The extension module, or why it cannot be imported (cached: the answer does not change)."""
    try:
        return importlib.import_module("selective_scan_cuda")
    except ImportError as err:
        return f"selective_scan_cuda cannot be imported ({err}); {_INSTALL_HINT}"


def unavailable_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """None if the kernel can scan `dtype` tensors on `device`, else why not."""
    if device.type != "cuda":
        return f"the mamba-ssm kernel runs on CUDA tensors only, these are on {device.type}"
    if dtype not in _KERNEL_DTYPES:
        return f"the mamba-ssm kernel takes float32, float16 or bfloat16 inputs, not {dtype}"
    kernel = _import_kernel()
    return kernel if isinstance(kernel, str) else None


def _kernel() -> ModuleType:
    kernel = _import_kernel()
    if isinstance(kernel, str):
        raise RuntimeError(kernel)
    return kernel


class _MambaScanFn(torch.autograd.Function):
    """Inputs already in the kernel's dtypes and layouts; returns (y, last_state)."""

    @staticmethod
    def forward(
        ctx: Any,
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
        out, x, *rest = _kernel().fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        ctx.delta_softplus = delta_softplus
        # out (before the gate) is only needed by the kernel's backward when there is a gate.
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, x, out if z is not None else None)
        # (batch, D, N), float32, copied out of x. With a time-invariant B the kernel scans delta * u and
        # folds B into C at the readout, so its stored state lacks the factor B (mamba-ssm's own
        # selective_scan_fn returns it without).
        last_state = x[:, :, -1, 1::2] * B if B.dim() == 2 else x[:, :, -1, 1::2].clone()
        ctx.mark_non_differentiable(last_state)  # the kernel computes no gradient for it
        return (rest[0] if z is not None else out), last_state

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor, _dlast: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        u, delta, A, B, C, D, z, delta_bias, x, out = ctx.saved_tensors
        du, ddelta, dA, dB, dC, dD, ddelta_bias, *rest = _kernel().bwd(
            u, delta, A, B, C, D, z, delta_bias, dout.contiguous(), x, out, None, ctx.delta_softplus, False
        )
        return (
            du,
            ddelta,
            dA,
            dB,
            dC,
            dD if D is not None else None,
            rest[0] if z is not None else None,
            ddelta_bias if delta_bias is not None else None,
            None,
        )


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    """The kernel reads every sequence with unit stride along L."""
    return t if t.stride(-1) == 1 else t.contiguous()


def selective_scan_mamba(
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
    """The selective scan on the mamba-ssm CUDA kernel (CUDA tensors, float32/float16/bfloat16 u).

    Args:
        u, delta: (batch, D, L).
        A: (D, N).
        B, C: (D, N) or (batch, G, N, L).
        D: (D,) or None.  z: (batch, D, L) or None.  delta_bias: (D,) or None.
        delta_softplus: apply softplus to delta (after adding delta_bias).
    Returns:
        y (batch, D, L) in u's dtype, and the last state (batch, D, N) in float32, without gradient.
    Raises:
        RuntimeError: the extension is not importable (with how to install it).
    """
    _kernel()  # fail with the install hint before converting anything
    itype = u.dtype

    # The kernel wants the sequences in u's dtype, the weights (A, D, delta_bias and a time-invariant
    # B or C) in float32. Converting here keeps the casts in autograd, so gradients come back in the
    # caller's dtypes.
    def sequence(t: torch.Tensor) -> torch.Tensor:
        return _last_dim_contiguous(t.to(itype))

    def weight(t: torch.Tensor) -> torch.Tensor:
        return t.float().contiguous()

    return _MambaScanFn.apply(
        _last_dim_contiguous(u),
        sequence(delta),
        weight(A),
        sequence(B) if B.dim() == 4 else weight(B),
        sequence(C) if C.dim() == 4 else weight(C),
        None if D is None else weight(D),
        None if z is None else sequence(z),
        None if delta_bias is None else weight(delta_bias),
        delta_softplus,
    )
