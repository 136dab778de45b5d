"""compile_blocks: the compiled MambaIR blocks compute what the eager ones do, with the same state dict."""

from __future__ import annotations

import torch

from colormamba.layers import MambaIRBlock
from colormamba.models import build_model, compile_blocks


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


def test_compile_blocks_finds_every_mamba_block() -> None:
    model = build_model("tiny", scan_backend="torch")
    expected = sum(isinstance(m, MambaIRBlock) for m in model.modules())
    assert expected > 0
    assert compile_blocks(model) == expected
    assert torch._dynamo.config.recompile_limit >= expected  # every block shape gets compiled, not skipped
