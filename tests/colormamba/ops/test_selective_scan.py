"""Selective scan: every backend against the sequential reference, plus dispatch, validation and memory."""

from __future__ import annotations

import importlib
import itertools
import logging
import math

import pytest
import torch

from colormamba.ops import (
    ScanBackend,
    available_backends,
    register_backend,
    scan_mamba,
    scan_triton,
    selective_scan,
)
from colormamba.ops.scan_reference import selective_scan_reference
from colormamba.ops.scan_torch import SCAN_SIZES, selective_scan_torch
from tests.support.scan import (
    BATCH,
    DIM,
    INPUT_NAMES,
    N_STATE,
    assert_same,
    make_inputs,
    run_scan,
)

# The module, not the function of the same name that colormamba.ops exports.
selective_scan_module = importlib.import_module("colormamba.ops.selective_scan")

CPU_CHUNK, CPU_BLOCK = SCAN_SIZES["cpu"]


DTYPES = [torch.float32, torch.float64]
FORMS = [("dn", "dn"), ("bnl", "bnl"), ("g2", "g2"), ("g4", "g4"), ("bnl", "dn"), ("dn", "g2"), ("g4", "dn")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("forms", FORMS, ids=lambda f: f"B_{f[0]}-C_{f[1]}")
def test_torch_matches_reference_for_every_B_C_form(dtype, forms):
    inputs = make_inputs(dtype, forms=forms)
    expected = run_scan(inputs, True, True, backend="reference")
    assert_same(run_scan(inputs, True, True, backend="torch"), expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "with_D,with_z,with_bias,softplus,last_state",
    list(itertools.product([False, True], repeat=5)),
    ids=lambda flag: "on" if flag else "off",
)
def test_torch_matches_reference_for_every_option(dtype, with_D, with_z, with_bias, softplus, last_state):
    inputs = make_inputs(
        dtype, length=70, with_D=with_D, with_z=with_z, with_bias=with_bias, softplus=softplus
    )
    expected = run_scan(inputs, softplus, last_state, backend="reference")
    assert_same(run_scan(inputs, softplus, last_state, backend="torch"), expected, dtype)


# 1 step; shorter than a block; shorter than a chunk and not whole blocks; exactly one chunk; several
# chunks ending in a partial chunk and a partial block.
LENGTHS = [1, CPU_BLOCK - 1, CPU_CHUNK // 2 + 1, CPU_CHUNK, 2 * CPU_CHUNK + CPU_BLOCK + 2]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("length", LENGTHS)
def test_torch_matches_reference_for_any_length(dtype, length):
    inputs = make_inputs(dtype, length=length, forms=("g4", "dn"))
    expected = run_scan(inputs, True, True, backend="reference")
    assert_same(run_scan(inputs, True, True, backend="torch"), expected, dtype)


@pytest.mark.parametrize("chunk_size,block", [(2, 1), (6, 3), (8, 8), (12, 4), SCAN_SIZES["cuda"]])
@pytest.mark.parametrize("forms", [("g2", "dn"), ("dn", "g4")], ids=lambda f: f"B_{f[0]}-C_{f[1]}")
def test_torch_chunk_and_block_sizes_do_not_change_the_result(chunk_size, block, forms):
    # Direct calls take B and C as (D, N) or (batch, G, N, L) only, the forms the entry point produces.
    inputs = make_inputs(torch.float64, length=300, forms=forms)
    expected = run_scan(inputs, True, True, fn=selective_scan_reference)
    actual = run_scan(inputs, True, True, fn=selective_scan_torch, chunk_size=chunk_size, block=block)
    assert_same(actual, expected, torch.float64)


@pytest.mark.parametrize("forms", [("g2", "g2"), ("dn", "dn")], ids=lambda f: f"B_{f[0]}-C_{f[1]}")
def test_torch_custom_backward_passes_gradcheck(forms):
    # Chunks of 4 and blocks of 2 over 7 steps: several chunks, a partial chunk, a partial block.
    inputs = make_inputs(torch.float64, length=7, forms=forms, batch=1, dim=4, n_state=2)

    def scan(*args):
        return selective_scan_torch(*args, True, chunk_size=4, block=2)

    assert torch.autograd.gradcheck(scan, tuple(inputs[k] for k in INPUT_NAMES))


def test_non_contiguous_inputs_give_the_same_result():
    inputs = make_inputs(torch.float32, length=33, forms=("dn", "g2"))
    strided = {
        k: (
            v.detach().transpose(-1, -2).contiguous().transpose(-1, -2)
            if v is not None and v.dim() > 1
            else v
        )
        for k, v in inputs.items()
    }
    assert not strided["u"].is_contiguous() and not strided["B"].is_contiguous()
    expected = run_scan(inputs, True, True, backend="reference")
    assert_same(run_scan(strided, True, True, backend="torch"), expected, torch.float32)


def test_strong_decay_stays_finite_and_matches_reference():
    inputs = make_inputs(torch.float32, length=100, softplus=False)
    with torch.no_grad():
        inputs["delta"].uniform_(0.5, 1.0)
        inputs["A"].uniform_(-1000.0, -1.0)  # |delta * A| up to 1e3: exp(-cumsum) would overflow
    expected = run_scan(inputs, False, True, backend="reference")
    actual = run_scan(inputs, False, True, backend="torch")
    for t in [*actual[0], *actual[1].values()]:
        assert torch.isfinite(t).all()
    assert_same(actual, expected, torch.float32)


def test_half_precision_input_gives_output_in_input_dtype():
    inputs = make_inputs(torch.float32, length=40)
    half = {
        k: (v.detach().to(torch.bfloat16).requires_grad_() if v is not None else None)
        for k, v in inputs.items()
    }
    y, last = selective_scan(**half, delta_softplus=True, return_last_state=True, backend="torch")
    assert y.dtype == torch.bfloat16
    assert last.dtype == torch.float32  # the state is carried in float32
    y_ref, last_ref = selective_scan(**half, delta_softplus=True, return_last_state=True, backend="reference")
    torch.testing.assert_close(y, y_ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(last, last_ref, rtol=1e-4, atol=1e-5)


def test_auto_on_cpu_uses_torch_and_logs_the_choice_once(monkeypatch, caplog):
    monkeypatch.setattr(selective_scan_module, "_logged_choices", set())
    inputs = make_inputs(torch.float32, length=20)
    with caplog.at_level(logging.INFO, logger=selective_scan_module.__name__):
        y_auto = run_scan(inputs, True, False, backend="auto")
        run_scan(inputs, True, False)  # the default is auto
    choices = [r.getMessage() for r in caplog.records if "backend 'auto' uses" in r.getMessage()]
    assert choices == ["selective_scan: backend 'auto' uses 'torch' on cpu"]
    y_torch = run_scan(inputs, True, False, backend="torch")
    torch.testing.assert_close(y_auto[0][0], y_torch[0][0], rtol=0, atol=0)


def test_available_backends_on_cpu():
    names = available_backends("cpu")
    assert names[0] == "torch"
    assert "reference" in names
    assert "mamba" not in names


def test_auto_prefers_mamba_on_cuda_when_importable_and_falls_back_to_torch(monkeypatch):
    # No GPU needed: availability is decided from the device type, the dtype and the import.
    monkeypatch.setattr(scan_triton, "_import_kernels", lambda: "triton cannot be imported")
    monkeypatch.setattr(scan_mamba, "_import_kernel", lambda: "selective_scan_cuda cannot be imported")
    assert available_backends("cuda")[0] == "torch"
    monkeypatch.setattr(scan_mamba, "_import_kernel", lambda: object())
    assert available_backends("cuda")[0] == "mamba"
    assert available_backends("cuda", torch.float64)[0] == "torch"  # the kernel has no float64
    assert available_backends("cpu")[0] == "torch"


def test_registering_a_backend_is_one_call_and_auto_honours_its_priority(monkeypatch):
    monkeypatch.setattr(selective_scan_module, "_BACKENDS", dict(selective_scan_module._BACKENDS))
    calls = []

    def fake(u, *args):
        calls.append(u.shape)
        return u * 0, u.new_zeros(u.shape[0], u.shape[1], 1)

    register_backend(ScanBackend("fake", fake, lambda device, dtype: None, auto_priority=1000))
    inputs = make_inputs(torch.float32, length=5)
    y = selective_scan(**{k: v.detach() if v is not None else None for k, v in inputs.items()})
    assert calls == [inputs["u"].shape]
    assert (y == 0).all()
    assert available_backends("cpu")[0] == "fake"


def test_unknown_backend_is_a_value_error_listing_the_known_ones():
    inputs = make_inputs(torch.float32, length=5)
    with pytest.raises(ValueError, match=r"unknown backend 'cuda'.*mamba.*reference.*torch.*triton"):
        selective_scan(**inputs, backend="cuda")


def test_mamba_on_cpu_tensors_is_a_runtime_error():
    inputs = make_inputs(torch.float32, length=5)
    with pytest.raises(RuntimeError, match=r"'mamba' is unavailable.*CUDA"):
        selective_scan(**inputs, backend="mamba")


def _bad(name: str):
    """Inputs with one argument broken, for the validation tests."""
    inputs = {
        k: (v.detach() if v is not None else None)
        for k, v in make_inputs(length=10, forms=("g2", "g2")).items()
    }
    L = 10
    broken = {
        "u": torch.randn(DIM, L),
        "delta": torch.randn(BATCH, DIM, L + 1),
        "A": torch.randn(DIM + 1, N_STATE),
        "A complex": torch.randn(DIM, N_STATE, dtype=torch.complex64),
        "B": torch.randn(BATCH, N_STATE + 1, L),
        "B groups": torch.randn(BATCH, 3, N_STATE, L),
        "B rank": torch.randn(N_STATE),
        "C": torch.randn(DIM, N_STATE + 1),
        "C groups": torch.randn(BATCH, 4, N_STATE, L),  # B has 2
        "D": torch.randn(DIM + 1),
        "z": torch.randn(BATCH, DIM, L - 1),
        "delta_bias": torch.randn(DIM, 1),
    }[name]
    inputs[name.split()[0]] = broken.to(torch.float64) if not broken.is_complex() else broken
    return inputs


@pytest.mark.parametrize(
    "name",
    ["u", "delta", "A", "A complex", "B", "B groups", "B rank", "C", "C groups", "D", "z", "delta_bias"],
)
def test_bad_shapes_are_value_errors_naming_the_argument(name):
    argument = name.split()[0]
    with pytest.raises(ValueError, match=rf"\b{argument}\b"):
        selective_scan(**_bad(name), backend="reference")


def _saved_bytes(backend: str, inputs: dict) -> int:
    """Bytes kept alive for backward by one scan: each distinct storage once (views share one)."""
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend=backend)
    return sum(storages.values())


def test_torch_saves_inputs_and_chunk_states_not_every_state():
    batch, dim, n_state, length = BATCH, 32, 64, 4 * CPU_CHUNK
    inputs = make_inputs(
        torch.float32, length=length, batch=batch, dim=dim, n_state=n_state, forms=("bnl", "bnl")
    )
    input_bytes = sum(v.numel() * v.element_size() for v in inputs.values() if v is not None)
    chunk_state_bytes = math.ceil(length / CPU_CHUNK) * batch * dim * n_state * 4
    # O(batch x D x L): the inputs and a few elementwise intermediates (softplus, gate), plus chunk states.
    bound = 3 * input_bytes + chunk_state_bytes
    all_states_bytes = batch * dim * n_state * length * 4
    assert bound < all_states_bytes / 2  # at this size the bound tells the two apart
    assert _saved_bytes("torch", inputs) <= bound
    assert _saved_bytes("reference", inputs) > all_states_bytes  # what the bound rules out


cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _to_cuda(inputs: dict) -> dict:
    return {k: (v.detach().cuda().requires_grad_() if v is not None else None) for k, v in inputs.items()}


@cuda_only
@pytest.mark.parametrize(
    "forms", [("bnl", "bnl"), ("g4", "g4"), ("dn", "dn")], ids=lambda f: f"B_{f[0]}-C_{f[1]}"
)
@pytest.mark.parametrize("length", [300, 2100])  # 2100 crosses the kernel's own 2048-step chunks
def test_mamba_matches_torch_on_cuda(forms, length):
    if scan_mamba.unavailable_reason(torch.device("cuda"), torch.float32) is not None:
        pytest.skip("selective_scan_cuda is not importable")
    inputs = _to_cuda(make_inputs(torch.float32, length=length, forms=forms, dim=16))
    expected = run_scan(inputs, True, False, backend="torch")
    assert_same(run_scan(inputs, True, False, backend="mamba"), expected, torch.float32)
    no_grad = {k: (v.detach() if v is not None else None) for k, v in inputs.items()}
    _, last = selective_scan(**no_grad, delta_softplus=True, return_last_state=True, backend="mamba")
    _, last_ref = selective_scan(**no_grad, delta_softplus=True, return_last_state=True, backend="torch")
    torch.testing.assert_close(last, last_ref, rtol=1e-4, atol=1e-5)


@cuda_only
def test_torch_matches_reference_on_cuda():
    inputs = _to_cuda(make_inputs(torch.float32, length=600, forms=("g4", "g4"), dim=16))
    expected = run_scan(inputs, True, True, backend="reference")
    assert_same(run_scan(inputs, True, True, backend="torch"), expected, torch.float32)
