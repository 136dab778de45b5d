"""compile_blocks: the compiled blocks compute what the eager ones do, with the same state dict."""

from __future__ import annotations

import copy

import torch

from colormamba.layers import CrissCrossAttention, MambaIRBlock, SPADEResBlock
from colormamba.models import build_model, compile_blocks
from colormamba.models.compile import COMPILED_BLOCKS
from colormamba.ops import selective_scan


def test_compiled_block_matches_eager_forward_and_backward() -> None:
    torch.manual_seed(0)
    block = MambaIRBlock(8, d_state=4, num_heads=2, num_agents=4, scan_backend="torch")
    compiled = MambaIRBlock(8, d_state=4, num_heads=2, num_agents=4, scan_backend="torch")
    compiled.load_state_dict(block.state_dict())
    keys = list(compiled.state_dict())
    holder = torch.nn.Sequential(compiled)
    assert compile_blocks(holder) == 1
    assert list(compiled.state_dict()) == keys  # in place: checkpoints load into either

    x = torch.randn(2, 8, 6, 6)
    x_compiled = x.clone().requires_grad_(True)
    x.requires_grad_(True)
    eager_out, compiled_out = block(x), holder(x_compiled)
    torch.testing.assert_close(compiled_out, eager_out, rtol=1e-4, atol=1e-5)
    grad = torch.randn_like(eager_out)
    eager_out.backward(grad)
    compiled_out.backward(grad)
    torch.testing.assert_close(x_compiled.grad, x.grad, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(block.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)
    assert compiled._compiled_call_impl is not None  # it really is the compiled module that ran


def test_compiled_spade_block_matches_eager_with_its_spectral_norm_state() -> None:
    torch.manual_seed(0)
    eager = SPADEResBlock(8, 3, hidden=8)
    compiled = copy.deepcopy(eager)
    assert compile_blocks(torch.nn.Sequential(compiled)) == 1
    x, cond = torch.randn(2, 8, 8, 8), torch.randn(2, 3, 16, 16)
    for _ in range(2):  # the power iteration updates u and v in place at every training forward
        out_e, out_c = eager(x, cond), compiled(x, cond)
        torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-5)
        out_e.square().mean().backward()
        out_c.square().mean().backward()
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-4, msg=name)


def test_compile_blocks_finds_every_block_of_the_compiled_kinds() -> None:
    model = build_model("tiny", scan_backend="torch")
    counts = {kind: sum(isinstance(m, kind) for m in model.modules()) for kind in COMPILED_BLOCKS}
    assert counts[MambaIRBlock] > 0 and counts[SPADEResBlock] > 0 and counts[CrissCrossAttention] == 1
    expected = sum(counts.values())
    assert compile_blocks(model) == expected
    assert torch._dynamo.config.recompile_limit >= expected  # every block shape gets compiled, not skipped


def test_compiled_blocks_call_the_scan_outside_their_graphs() -> None:
    """The scan's backends are hand-written kernels with their own autograd: compile_blocks puts a graph
    break around each SS2D's scan, so the scan runs as Python at every call, never traced by dynamo."""
    from colormamba.layers import SS2D

    torch.manual_seed(0)
    block = MambaIRBlock(8, d_state=4, num_heads=2, num_agents=4, scan_backend="torch")
    mixer = next(m for m in block.modules() if isinstance(m, SS2D))
    tracing = []

    def scan(*args, **kwargs):
        tracing.append(torch.compiler.is_compiling())
        return selective_scan(*args, **kwargs)

    mixer.scan = scan
    assert compile_blocks(torch.nn.Sequential(block)) == 1
    for _ in range(3):
        block(torch.randn(2, 8, 6, 6)).sum().backward()
    assert block._compiled_call_impl is not None
    assert tracing == [False, False, False]  # traced by dynamo, each call would record True
