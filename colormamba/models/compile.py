"""Compiling the blocks that compile quickly: the MambaIR blocks, where the time goes in small kernels.

A MambaIR block is a chain of layer norms, permutes, elementwise gates and small projections around the
scan; eager PyTorch runs each as its own kernel. Inductor fuses those chains (a norm with the gate after
it, the residual adds and scalings) without changing what is computed beyond float rounding. The scan
itself stays outside the compiled graphs (`colormamba.ops.selective_scan` is excluded from tracing):
its backends are hand-written kernels already.

Each block compiles once per input shape with static shapes (`dynamic=False`): training shapes do not
change (an epoch's last, smaller batch compiles once more), and symbolic shapes make inductor fail on the
scan's padded map sizes. Compiling the paper preset's blocks takes minutes on the first steps, paid once
per run (inductor's on-disk cache shortens it for the next runs of the same machine). Validation runs the
blocks eagerly (`torch.compiler.set_stance("force_eager")` in colormamba.train): its images may come in
sizes that would each cost a compile.
"""

from __future__ import annotations

import torch
import torch._dynamo.config
from torch import nn

from colormamba.layers import MambaIRBlock

COMPILED_BLOCKS: tuple[type[nn.Module], ...] = (MambaIRBlock,)


def compile_blocks(model: nn.Module) -> int:
    """Compile every block of COMPILED_BLOCKS inside `model`, in place.

    In place (`nn.Module.compile`) rather than `torch.compile(model)`: the module tree and its state-dict
    keys stay those of the eager model, so checkpoints load into either.

    Returns:
        How many blocks were compiled.
    """
    blocks = [m for m in model.modules() if isinstance(m, COMPILED_BLOCKS)]
    # Blocks of one class share their code, and dynamo keeps one compiled graph per (code, input shape
    # and layout): a network with more block shapes than the default limit (8) would silently run the
    # rest eagerly. Each block gets room for a few layouts (train, eval, channels-last).
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 4 * len(blocks))
    for block in blocks:
        block.compile(dynamic=False)
    return len(blocks)
