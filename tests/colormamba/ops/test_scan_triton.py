"""Triton selective scan: outputs and every gradient against the reference, in Triton's CPU interpreter.

Triton picks interpreter or compiler when a kernel is decorated, from TRITON_INTERPRET at that moment, and
the variable would leak into every other test of the session (the `triton` backend would then be
available on CPU). So the Triton side runs in one subprocess with TRITON_INTERPRET=1 (this module, run
with `python -m`), on inputs this process made and saved; the reference side and the comparisons run
here, with the tolerance table of tests/support/scan.py. Tiles are tiny (4 channels x 8 steps, see
`pick_config`) so that short sequences cross several chunks and channel blocks.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from colormamba.ops import available_backends, scan_mamba, scan_triton, selective_scan
from tests.support.scan import GRAD_TOL, INPUT_NAMES, TOL, assert_same, make_inputs, run_scan

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")

# bfloat16 inputs: the scan runs in float32 on both sides, so the differences are roundings to bfloat16
# of outputs and gradients (8 bits of mantissa) and of sums taken in a different order.
BF16_TOL = {torch.bfloat16: (2e-2, 2e-2)}
BF16_GRAD_TOL = {torch.bfloat16: (5e-2, 5e-2)}

# name -> (make_inputs arguments, delta_softplus, return_last_state, tile config or None for the default)
CASES: dict[str, tuple[dict, bool, bool, dict | None]] = {
    # 37 steps: 4 chunks of 8 and a partial one; 2 groups of 4 channels.
    "fp32_groups": ({"length": 37, "forms": ("g2", "g2")}, True, True, None),
    # 6 channels a group with blocks of 4: a partial channel block; N = 3 is padded to 4 in the kernel.
    "fp32_partial_block_odd_N": (
        {"length": 21, "dim": 12, "n_state": 3, "forms": ("g2", "g2")}, True, True, None,
    ),
    # (batch, N, L) B and C (G = 1 after the entry point), without D, bias or softplus, no last state.
    "fp32_plain": (
        {"length": 19, "forms": ("g1", "g1"), "with_D": False, "with_bias": False, "softplus": False},
        False, False, None,
    ),
    "fp32_one_step": ({"length": 1, "forms": ("g4", "g4")}, True, True, None),
    # Tiles longer than the default: 3 chunks of 32 steps, 2 channels a block.
    "fp32_long_tiles": (
        {"length": 70, "forms": ("g2", "g2")}, True, True, {"block_d": 2, "chunk": 32, "num_warps": 1},
    ),
    "fp32_strong_decay": ({"length": 50, "forms": ("g2", "g2"), "softplus": False}, False, True, None),
    "bf16_groups": ({"length": 29, "forms": ("g2", "g2"), "dtype": torch.bfloat16}, True, True, None),
}  # fmt: skip


# What Triton 3.6's interpreter raises (seen on the H200 image, 2026-11-30) when a loop bound is a kernel
# argument: it wraps scalars in 1-element arrays, which NumPy >= 2.4 no longer turns into ints.
INTERPRETER_SCALAR_BUG = "only 0-dimensional arrays can be converted to Python scalars"


def case_inputs(name: str) -> dict:
    """The inputs of a case (no gate: the kernels' call pattern), identical on every call."""
    kwargs = CASES[name][0]
    inputs = make_inputs(**{"dtype": torch.float32, **kwargs, "with_z": False})
    if name == "fp32_strong_decay":
        with torch.no_grad():
            inputs["delta"].uniform_(0.5, 1.0)
            inputs["A"].uniform_(-1000.0, -1.0)  # |delta * A| up to 1e3: every chunk decays to nothing
    return inputs


def _worker(inputs_path: str, results_path: str) -> None:
    """In the TRITON_INTERPRET=1 subprocess: the Triton scan of every case, outputs and gradients."""
    from colormamba.ops.scan_triton import selective_scan_triton

    all_inputs = torch.load(inputs_path)
    results = {}
    for name, (_, softplus, last_state, config) in CASES.items():
        results[name] = run_scan(
            all_inputs[name], softplus, last_state, fn=selective_scan_triton, config=config
        )
    # Through the entry point as well (the registration).
    results["entry_point"] = run_scan(all_inputs["fp32_groups"], True, True, backend="triton")
    results["available_on_cpu"] = available_backends("cpu")
    torch.save(results, results_path)


@pytest.fixture(scope="module")
def triton_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Results of every case from one interpreter subprocess (about 20 s on 2 shared cores)."""
    folder = tmp_path_factory.mktemp("triton")
    inputs_path, results_path = folder / "inputs.pt", folder / "results.pt"
    torch.save({name: case_inputs(name) for name in CASES}, inputs_path)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-m", "tests.colormamba.ops.test_scan_triton", str(inputs_path), str(results_path)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0 and INTERPRETER_SCALAR_BUG in done.stderr:
        import numpy
        import triton

        pytest.skip(
            f"Triton {triton.__version__}'s interpreter cannot run with NumPy {numpy.__version__} (it passes "
            "scalar kernel arguments as 1-element arrays; Triton 3.8 runs these cases): the compiled kernel "
            "is checked on CUDA by test_ss2d_call_matches_with_triton_and_torch_on_cuda"
        )
    assert done.returncode == 0, done.stderr[-4000:]
    return torch.load(results_path)


@needs_triton
@pytest.mark.parametrize("name", list(CASES))
def test_triton_matches_reference_in_interpreter(name, triton_results):
    _, softplus, last_state, _ = CASES[name]
    inputs = case_inputs(name)
    dtype = inputs["u"].dtype
    expected = run_scan(inputs, softplus, last_state, backend="reference")
    actual = triton_results[name]
    if dtype == torch.bfloat16:
        tol, grad_tol = {**TOL, **BF16_TOL}, {**GRAD_TOL, **BF16_GRAD_TOL}
        _assert_close_with(actual, expected, tol[dtype], grad_tol[dtype])
    else:
        assert_same(actual, expected, dtype)
    for t in [*actual[0], *actual[1].values()]:
        assert torch.isfinite(t).all()
        assert t.device.type == "cpu"


def _assert_close_with(actual, expected, tol, grad_tol) -> None:
    for a, e in zip(actual[0], expected[0], strict=True):
        assert a.dtype == e.dtype
        torch.testing.assert_close(a.float(), e.float(), rtol=tol[0], atol=tol[1])
    assert actual[1].keys() == expected[1].keys()
    for name in expected[1]:
        assert actual[1][name].dtype == expected[1][name].dtype, name
        torch.testing.assert_close(
            actual[1][name].float(), expected[1][name].float(), rtol=grad_tol[0], atol=grad_tol[1], msg=name
        )


@needs_triton
def test_entry_point_runs_triton_on_cpu_in_the_interpreter(triton_results):
    expected = run_scan(case_inputs("fp32_groups"), True, True, backend="reference")
    assert_same(triton_results["entry_point"], expected, torch.float32)
    # Only under TRITON_INTERPRET=1: the CPU backends then include triton (and auto prefers it there).
    assert "triton" in triton_results["available_on_cpu"]


def test_unavailable_without_cuda_or_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reason = scan_triton.unavailable_reason(torch.device("cpu"), torch.float32)
    assert reason is not None and "TRITON_INTERPRET" in reason
    assert "float64" in scan_triton.unavailable_reason(torch.device("cuda"), torch.float64)
    assert "triton" not in available_backends("cpu")


def test_auto_on_cuda_prefers_mamba_then_triton_then_torch(monkeypatch):
    # No GPU needed: availability comes from the device type, the dtype and the imports.
    monkeypatch.setattr(scan_mamba, "_import_kernel", lambda: object())
    monkeypatch.setattr(scan_triton, "_import_kernels", lambda: object())
    monkeypatch.setattr(scan_triton, "_kernels_interpreted", lambda: False)
    assert available_backends("cuda")[:2] == ["mamba", "triton"]
    monkeypatch.setattr(scan_mamba, "_import_kernel", lambda: "selective_scan_cuda cannot be imported")
    assert available_backends("cuda")[0] == "triton"
    assert available_backends("cuda", torch.bfloat16)[0] == "triton"
    monkeypatch.setattr(scan_triton, "_import_kernels", lambda: "triton cannot be imported")
    assert available_backends("cuda")[0] == "torch"


def test_gate_falls_back_to_torch_with_a_warning(caplog, monkeypatch):
    monkeypatch.setattr(scan_triton, "_warned", set())
    inputs = make_inputs(torch.float32, length=12, forms=("g2", "g2"))  # with a gate z
    with caplog.at_level(logging.WARNING, logger=scan_triton.__name__):
        actual = run_scan(inputs, True, True, fn=scan_triton.selective_scan_triton)
        run_scan(inputs, True, False, fn=scan_triton.selective_scan_triton)
    warnings = [r.getMessage() for r in caplog.records if "gate z" in r.getMessage()]
    assert len(warnings) == 1 and "torch backend" in warnings[0]
    assert_same(actual, run_scan(inputs, True, True, backend="reference"), torch.float32)


def test_time_invariant_B_falls_back_to_torch():
    inputs = {k: v for k, v in make_inputs(torch.float32, length=9, forms=("dn", "g2")).items()}
    inputs["z"] = None
    actual = run_scan(inputs, True, True, fn=scan_triton.selective_scan_triton)
    assert_same(actual, run_scan(inputs, True, True, backend="reference"), torch.float32)


def test_ss2d_call_matches_with_triton_and_torch_on_cuda():
    if not torch.cuda.is_available() or scan_triton.unavailable_reason(torch.device("cuda"), torch.float32):
        pytest.skip("needs a CUDA device and triton")
    inputs = {
        k: (v.detach().cuda().requires_grad_() if v is not None else None)
        for k, v in make_inputs(torch.float32, length=2100, forms=("g4", "g4"), dim=16, with_z=False).items()
    }
    expected = run_scan(inputs, True, True, backend="torch")
    assert_same(run_scan(inputs, True, True, backend="triton"), expected, torch.float32)
    assert set(INPUT_NAMES) - {"z"} == set(expected[1])
    y = selective_scan(
        **{k: v.detach() if v is not None else None for k, v in inputs.items()}, backend="triton"
    )
    assert y.dtype == torch.float32


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
