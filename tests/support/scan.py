"""Inputs, one run and the comparison of a selective scan, with the tolerance table: shared by the tests
of every scan backend (tests/colormamba/ops/)."""

from __future__ import annotations

import torch

from colormamba.ops import selective_scan

# (rtol, atol) per dtype for outputs; gradients sum over batch and time, so they get looser ones.
TOL = {torch.float32: (1e-4, 1e-5), torch.float64: (1e-10, 1e-12)}
GRAD_TOL = {torch.float32: (1e-3, 1e-4), torch.float64: (1e-8, 1e-10)}

BATCH, DIM, N_STATE = 2, 8, 4
INPUT_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _state_operand(form: str, batch: int, dim: int, n_state: int, length: int, dtype: torch.dtype):
    """B or C in one of the accepted forms: "dn" (D, N), "bnl" (batch, N, L), "gK" (batch, K, N, L)."""
    if form == "dn":
        return torch.randn(dim, n_state, dtype=dtype)
    if form == "bnl":
        return torch.randn(batch, n_state, length, dtype=dtype)
    return torch.randn(batch, int(form[1:]), n_state, length, dtype=dtype)


def make_inputs(
    dtype: torch.dtype = torch.float64,
    length: int = 150,
    forms: tuple[str, str] = ("g2", "g2"),
    with_D: bool = True,
    with_z: bool = True,
    with_bias: bool = True,
    softplus: bool = True,
    batch: int = BATCH,
    dim: int = DIM,
    n_state: int = N_STATE,
    seed: int = 0,
) -> dict:
    """Leaf tensors that require grad, keyed like selective_scan's arguments (None where left out)."""
    torch.manual_seed(seed)
    # Without softplus, delta must already be a positive step size.
    delta = 0.5 * torch.randn(batch, dim, length, dtype=dtype)
    if not softplus:
        delta = 0.1 + 0.5 * torch.rand(batch, dim, length, dtype=dtype)
    inputs = {
        "u": torch.randn(batch, dim, length, dtype=dtype),
        "delta": delta,
        "A": -(0.1 + torch.rand(dim, n_state, dtype=dtype)),
        "B": _state_operand(forms[0], batch, dim, n_state, length, dtype),
        "C": _state_operand(forms[1], batch, dim, n_state, length, dtype),
        "D": torch.randn(dim, dtype=dtype) if with_D else None,
        "z": torch.randn(batch, dim, length, dtype=dtype) if with_z else None,
        "delta_bias": 0.5 * torch.rand(dim, dtype=dtype) if with_bias else None,
    }
    return {k: (v.requires_grad_() if v is not None else None) for k, v in inputs.items()}


def run_scan(inputs: dict, softplus: bool, return_last_state: bool, **call) -> tuple[list, dict]:
    """Outputs and input gradients of one scan on fresh copies of `inputs` (so runs cannot interfere).

    `call` is either backend=<name> (through the entry point) or fn=<backend function> (called directly,
    with any extra keyword arguments). The loss weights every output element differently, so each
    gradient is a full vector-Jacobian product, including one through the last state when returned.
    """
    leaves = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in inputs.items()}
    fn = call.pop("fn", None)
    if fn is None:
        out = selective_scan(**leaves, delta_softplus=softplus, return_last_state=return_last_state, **call)
        outs = list(out) if return_last_state else [out]
    else:
        y, last = fn(*(leaves[k] for k in INPUT_NAMES), softplus, **call)
        outs = [y, last] if return_last_state else [y]
    gen = torch.Generator().manual_seed(123)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype).to(o.device)).sum() for o in outs)
    loss.backward()
    return [o.detach() for o in outs], {k: v.grad for k, v in leaves.items() if v is not None}


def assert_same(actual: tuple[list, dict], expected: tuple[list, dict], dtype: torch.dtype) -> None:
    rtol, atol = TOL[dtype]
    for a, e in zip(actual[0], expected[0], strict=True):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol)
    rtol, atol = GRAD_TOL[dtype]
    assert actual[1].keys() == expected[1].keys()
    for name in expected[1]:
        torch.testing.assert_close(actual[1][name], expected[1][name], rtol=rtol, atol=atol, msg=name)
