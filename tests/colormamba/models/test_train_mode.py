"""The whole generator computes the reference's function in train mode too: its SPADE blocks' spectral
norm follows the reference's power iteration over several training forwards."""

from __future__ import annotations

import pytest
import torch

from colormamba.layers import SPADEResBlock
from colormamba.models import build_model
from tests.support.spectral_norm import from_the_math, spectral_state


@pytest.mark.slow  # six forwards of the tiny generator: ~10 s on 2 cores
def test_tiny_generator_in_train_mode_follows_the_reference_power_iteration() -> None:
    torch.manual_seed(0)
    model = build_model("tiny", scan_backend="torch").train()
    ref = from_the_math(model).train()
    blocks = sum(isinstance(m, SPADEResBlock) for m in model.modules())
    assert blocks >= 2 and len(spectral_state(model)) == 4 * blocks  # (u, v) of each block's two convs
    for step in range(3):
        nir = torch.rand(1, 1, 32, 32)
        (rgb, hsv), (rgb_ref, hsv_ref) = model(nir), ref(nir)
        torch.testing.assert_close(hsv, hsv_ref, rtol=0, atol=0)  # G_B has no spectral norm
        torch.testing.assert_close(rgb, rgb_ref, rtol=1e-5, atol=1e-6, msg=f"forward {step}")
        for got, want in zip(spectral_state(model), spectral_state(ref), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
