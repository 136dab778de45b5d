"""Compiling the blocks that compile quickly: where the step's time goes in small memory-bound kernels.

The published step spends 190 of its 265 ms outside the scan (docs/benchmarks.md), mostly in chains of small
kernels that eager PyTorch runs one by one: a MambaIR block's layer norms, permutes, gates and residual
scalings around the scan; SPADE's instance norm and per-pixel scale and shift; criss-cross attention's
reshapes and softmax. Inductor fuses those chains without changing what is computed beyond float
rounding (spectral norm's power iteration included). The scan itself stays outside the compiled graphs:
its backends are hand-written kernels already, so each SS2D of a compiled block calls it through
`torch.compiler.disable` (a graph break). That wrapper is made here, not where the scan is defined:
making it imports torch._dynamo, about 1.7 s that every eager run (each CPU run process) would pay.
The plain convolution stacks (DoubleConv, UpConv) are left eager: cuDNN does their work, and each of
their 18 shapes would add a compile.

Each block compiles once per input shape with static shapes (`dynamic=False`): training shapes do not
change (an epoch's last, smaller batch compiles once more), and symbolic shapes make inductor fail on the
scan's padded map sizes. Compiling the paper preset's blocks takes minutes on the first steps, paid once
per run (inductor's on-disk cache shortens it for the next runs of the same machine). Validation runs the
blocks eagerly (`torch.compiler.set_stance("force_eager")` in colormamba.train): its images may come in
sizes that would each cost a compile.
"""

from __future__ import annotations

from torch import nn

from colormamba.layers import SS2D, CrissCrossAttention, MambaIRBlock, SPADEResBlock

COMPILED_BLOCKS: tuple[type[nn.Module], ...] = (MambaIRBlock, SPADEResBlock, CrissCrossAttention)


def compile_blocks(model: nn.Module) -> int:
    """Compile every block of COMPILED_BLOCKS inside `model`, in place.

    In place (`nn.Module.compile`) rather than `torch.compile(model)`: the module tree and its state-dict
    keys stay those of the eager model, so checkpoints load into either.

    Returns:
        How many blocks were compiled.
    """
    import torch._dynamo.config  # here: importing dynamo costs seconds that eager runs need not pay

    blocks = [m for m in model.modules() if isinstance(m, COMPILED_BLOCKS)]
    for mixer in model.modules():
        if isinstance(mixer, SS2D):
            mixer.scan = torch.compiler.disable(mixer.scan)
    # Blocks of one class share their code, and dynamo keeps one compiled graph per (code, input shape
    # and layout): a network with more block shapes than the default limit (8) would silently run the
    # rest eagerly. Each block gets room for a few layouts (train, eval, channels-last).
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 4 * len(blocks))
    for block in blocks:
        block.compile(dynamic=False)
    return len(blocks)
