"""The one selective-scan entry point, and the registry of backends it dispatches to.

`selective_scan` takes mamba-ssm's `selective_scan_fn` arguments, checks their shapes, and hands them to
a backend by name, or to the fastest one available for the tensors' device and dtype with
`backend="auto"`. A backend is a function with the normalised signature of `ScanFn` plus a predicate
saying why it cannot run on a device/dtype; registering one is a single `register_backend(...)` call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from colormamba.ops import scan_mamba, scan_triton
from colormamba.ops.scan_reference import selective_scan_reference
from colormamba.ops.scan_torch import selective_scan_torch

logger = logging.getLogger(__name__)

# (u, delta, A, B, C, D, z, delta_bias, delta_softplus) -> (y, last_state); B and C are (D, N) or
# (batch, G, N, L) by the time a backend sees them.
ScanFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ScanBackend:
    """A named selective-scan implementation.

    Attributes:
        name: what `backend=` selects it by.
        fn: the implementation.
        unavailable: (device, dtype) -> None if it can run there, else the reason it cannot.
        auto_priority: `backend="auto"` takes the available backend with the highest priority; None
            keeps it out of auto (the reference: correct, but slow and memory-hungry).
    """

    name: str
    fn: ScanFn
    unavailable: Callable[[torch.device, torch.dtype], str | None]
    auto_priority: int | None = None


_BACKENDS: dict[str, ScanBackend] = {}
_logged_choices: set[tuple[str, str]] = set()


def register_backend(backend: ScanBackend) -> None:
    """Make a backend selectable by name (and by auto if it has a priority); a same-named one is replaced."""
    _BACKENDS[backend.name] = backend


def _always_available(device: torch.device, dtype: torch.dtype) -> str | None:
    return None


register_backend(ScanBackend("reference", selective_scan_reference, _always_available))
register_backend(ScanBackend("torch", selective_scan_torch, _always_available, auto_priority=0))
register_backend(
    ScanBackend("mamba", scan_mamba.selective_scan_mamba, scan_mamba.unavailable_reason, auto_priority=100)
)
register_backend(ScanBackend("triton", scan_triton.selective_scan_triton, scan_triton.unavailable_reason, 50))


def backend_names() -> list[str]:
    """Every name `backend=` accepts: "auto" and the registered backends, whether or not they can run
    on this machine (a run configuration names the backend of the worker that will train it)."""
    return ["auto", *sorted(_BACKENDS)]


def available_backends(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> list[str]:
    """Names of the backends that can run on `device` for `dtype` inputs, the one auto picks first.

    Args:
        device: where the tensors live.
        dtype: the dtype of u.
    Returns:
        Backend names, auto-eligible ones by decreasing priority, then the others by name.
    """
    device = torch.device(device)
    usable = [b for b in _BACKENDS.values() if b.unavailable(device, dtype) is None]
    usable.sort(key=lambda b: (b.auto_priority is None, -(b.auto_priority or 0), b.name))
    return [b.name for b in usable]


def _resolve(name: str, device: torch.device, dtype: torch.dtype) -> ScanBackend:
    """The backend to run: the named one if it can run here, or the best available for "auto"."""
    if name == "auto":
        candidates = [
            b
            for b in _BACKENDS.values()
            if b.auto_priority is not None and b.unavailable(device, dtype) is None
        ]
        if not candidates:
            raise RuntimeError(f"selective_scan: no backend can run on {device.type} with {dtype}")
        chosen = max(candidates, key=lambda b: b.auto_priority or 0)
        if (chosen.name, device.type) not in _logged_choices:
            _logged_choices.add((chosen.name, device.type))
            logger.info("selective_scan: backend 'auto' uses %r on %s", chosen.name, device.type)
        return chosen
    if name not in _BACKENDS:
        known = ", ".join(backend_names())
        raise ValueError(f"selective_scan: unknown backend {name!r}; known backends: {known}")
    backend = _BACKENDS[name]
    reason = backend.unavailable(device, dtype)
    if reason is not None:
        raise RuntimeError(f"selective_scan: backend {name!r} is unavailable: {reason}")
    return backend


def resolve_backend(name: str, device: torch.device | str, dtype: torch.dtype = torch.float32) -> str:
    """The name of the backend `selective_scan(..., backend=name)` runs for `dtype` tensors on `device`:
    "auto" resolved the way the call resolves it (what a run records as the backend it used).

    Raises:
        ValueError: an unknown name. RuntimeError: the named backend cannot run there.
    """
    return _resolve(name, torch.device(device), dtype).name


def _check_shape(name: str, t: torch.Tensor | None, expected: tuple[int, ...]) -> None:
    if t is not None and tuple(t.shape) != expected:
        raise ValueError(f"selective_scan: {name} must have shape {expected}, got {tuple(t.shape)}")


def _normalise_state_operand(
    name: str, M: torch.Tensor, batch: int, dim: int, n_state: int, length: int
) -> torch.Tensor:
    """B or C as (D, N) or (batch, G, N, L), the two forms every backend takes.

    Raises:
        ValueError: naming `name` if M has none of the shapes (D, N), (batch, N, L), (batch, G, N, L) with
            G dividing D.
    """
    if M.is_complex():
        raise ValueError(f"selective_scan: {name} must be real, got {M.dtype}")
    if M.dim() == 2:
        _check_shape(name, M, (dim, n_state))
        return M
    if M.dim() == 3:
        _check_shape(name, M, (batch, n_state, length))
        return M.unsqueeze(1)
    if M.dim() == 4:
        groups = M.shape[1]
        _check_shape(name, M, (batch, groups, n_state, length))
        if groups < 1 or dim % groups:
            raise ValueError(f"selective_scan: {name} has {groups} groups, which must divide D = {dim}")
        return M
    raise ValueError(
        f"selective_scan: {name} must be (D, N), (batch, N, L) or (batch, G, N, L), got {tuple(M.shape)}"
    )


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mamba's selective scan, with mamba-ssm's `selective_scan_fn` arguments and semantics.

    With delta' = softplus(delta + delta_bias) (softplus only if delta_softplus):
    h_t = exp(delta'_t A) h_{t-1} + delta'_t B_t u_t,  y_t = <C_t, h_t> + D u_t,  y = y * silu(z).
    Computed in at least float32 whatever the input dtype.

    Args:
        u: (batch, D, L) input sequence.
        delta: (batch, D, L) step sizes.
        A: (D, N) real state matrix (diagonal per channel); negative for a decaying state.
        B, C: (D, N) time-invariant, (batch, N, L) shared by all channels, or (batch, G, N, L) grouped:
            channel d reads group d // (D // G).
        D: (D,) skip connection, or None.
        z: (batch, D, L) gate, or None.
        delta_bias: (D,) added to delta before the softplus, or None.
        delta_softplus: apply softplus to delta.
        return_last_state: also return the state after the last step.
        backend: "auto" (the fastest available for the device and dtype), or a registered name:
            "reference", "torch", "mamba".
    Returns:
        y (batch, D, L) in u's dtype; with return_last_state, (y, last_state (batch, D, N)), the state in
        the precision it was carried in (float32, or float64 for float64 inputs). With the "mamba"
        backend the last state carries no gradient (the kernel does not compute one).
    Raises:
        ValueError: a tensor with the wrong shape (the message names it) or an unknown backend name.
        RuntimeError: the named backend cannot run on these tensors (missing extension, wrong device).
    """
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, D, L), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan: A must have shape ({dim}, N), got {tuple(A.shape)}")
    if A.is_complex():
        raise ValueError(f"selective_scan: A must be real, got {A.dtype}")
    n_state = A.shape[1]
    _check_shape("delta", delta, (batch, dim, length))
    _check_shape("D", D, (dim,))
    _check_shape("z", z, (batch, dim, length))
    _check_shape("delta_bias", delta_bias, (dim,))
    B = _normalise_state_operand("B", B, batch, dim, n_state, length)
    C = _normalise_state_operand("C", C, batch, dim, n_state, length)
    if B.dim() == 4 and C.dim() == 4 and B.shape[1] != C.shape[1]:
        raise ValueError(f"selective_scan: B has {B.shape[1]} groups but C has {C.shape[1]}; they must match")
    operands = {"delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}
    for name, t in operands.items():
        if t is not None and t.device != u.device:
            raise ValueError(f"selective_scan: {name} is on {t.device}, u on {u.device}")

    chosen = _resolve(backend, u.device, u.dtype)
    y, last_state = chosen.fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return (y, last_state) if return_last_state else y
