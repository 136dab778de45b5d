"""Checkpoints written before the spectral-norm switch (torch.nn.utils.parametrizations layout) still load,
into networks that now use the reference's torch.nn.utils.spectral_norm, and compute the same eval output."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

from colormamba import checkpoint
from colormamba.layers import SPADEResBlock
from colormamba.models import build_discriminator, build_model
from colormamba.predict import load_generator
from tests.support.hostile import CreatesAFile


def old_layout(model: nn.Module) -> nn.Module:
    """`model` with every spectrally normalised conv rebuilt the way this project did before: the same
    weight and bias under torch.nn.utils.parametrizations.spectral_norm (which draws its own u, v and
    runs 15 power iterations at construction)."""
    for parent in list(model.modules()):
        for name, conv in list(parent.named_children()):
            if isinstance(conv, nn.Conv2d) and hasattr(conv, "weight_orig"):
                shape = (conv.in_channels, conv.out_channels, conv.kernel_size)
                old = nn.Conv2d(*shape, stride=conv.stride, padding=conv.padding)
                old.load_state_dict({"weight": conv.weight_orig.data, "bias": conv.bias.data})
                setattr(parent, name, parametrizations.spectral_norm(old))
    return model


def trained_a_little(model: nn.Module, *inputs: torch.Tensor) -> nn.Module:
    """Two training forwards, so that u and v are not where construction left them; then eval mode."""
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(*inputs)
    return model.eval()


def test_old_spade_state_dict_loads_with_its_eval_output_and_parameter_order() -> None:
    torch.manual_seed(0)
    x, cond = torch.randn(2, 6, 8, 8), torch.randn(2, 3, 8, 8)
    old = trained_a_little(old_layout(SPADEResBlock(6, 3, hidden=8)), x, cond)
    saved = checkpoint.from_bytes(checkpoint.to_bytes({"model": old.state_dict()}), "old.pt")["model"]
    assert {"conv_0.parametrizations.weight.original", "conv_1.parametrizations.weight.0._v"} <= set(saved)
    new = SPADEResBlock(6, 3, hidden=8).eval()
    assert not torch.allclose(new(x, cond), old(x, cond))  # different weights before loading
    checkpoint.load_weights(new, saved, "old.pt")
    torch.testing.assert_close(new(x, cond), old(x, cond), rtol=1e-5, atol=1e-6)
    assert torch.equal(new.conv_0.weight_u, saved["conv_0.parametrizations.weight.0._u"])
    assert torch.equal(new.conv_1.weight_orig, saved["conv_1.parametrizations.weight.original"])
    # Adam's state is saved by parameter position: both layouts list the parameters in the same order
    assert [p.shape for p in old.parameters()] == [p.shape for p in new.parameters()]


def test_old_discriminator_state_dict_loads() -> None:
    torch.manual_seed(1)
    x = torch.rand(1, 3, 64, 64)
    old = trained_a_little(old_layout(build_discriminator(3)), x)
    new = build_discriminator(3).eval()
    checkpoint.load_weights(new, old.state_dict(), "last.pt")
    torch.testing.assert_close(new(x), old(x), rtol=1e-5, atol=1e-6)


def test_predict_loads_an_old_generator_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(2)
    nir = torch.rand(1, 1, 32, 32)
    old = old_layout(build_model("tiny", scan_backend="torch")).eval()  # u, v: 15 iterations from random
    path = tmp_path / "best.pt"
    path.write_bytes(
        checkpoint.to_bytes({"model_config": dataclasses.asdict(old.config), "model": old.state_dict()})
    )
    model = load_generator(path, torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(model(nir)[0], old(nir)[0], rtol=1e-5, atol=1e-6)


def test_weights_of_another_network_are_refused_naming_the_file() -> None:
    weights = SPADEResBlock(6, 3, hidden=8).state_dict()
    with pytest.raises(ValueError, match=r"runs/x/best\.pt: the checkpoint's weights do not fit"):
        checkpoint.load_weights(SPADEResBlock(4, 3, hidden=8), weights, "runs/x/best.pt")


def test_upgrade_leaves_current_keys_alone() -> None:
    weights = SPADEResBlock(4, 2, hidden=8).state_dict()
    assert checkpoint.upgrade_state_dict(weights).keys() == weights.keys()


@pytest.mark.parametrize(
    ("dump", "says"),
    [
        (lambda obj, f: torch.save({"format": checkpoint.CHECKPOINT_FORMAT, "model": obj}, f),
         "not a checkpoint this project wrote: it holds more than tensors and plain values (io.open), or is "
         "damaged; it was not unpickled"),
        (lambda obj, f: pickle.dump(obj, f), "not a checkpoint: it is a plain pickle"),
    ],
    ids=["torch.save", "pickle"],
)  # fmt: skip
def test_a_file_holding_code_is_refused_unpickled_without_torchs_advice(tmp_path: Path, dump, says) -> None:
    created = tmp_path / "created-by-unpickling"
    bad = tmp_path / "best.pt"
    with bad.open("wb") as f:
        dump(CreatesAFile(created), f)
    with pytest.raises(ValueError) as info:
        checkpoint.load_file(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: {says}"), message
    assert "weights_only" not in message and "can still be loaded" not in message and "\x1b" not in message
    chained = info.value.__cause__ or (None if info.value.__suppress_context__ else info.value.__context__)
    assert chained is None, f"torch's advice is not chained either: {chained!r}"
    assert not created.exists()
