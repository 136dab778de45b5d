"""The weight files' names and URLs, written out as text so that a run need not import torchvision, are
torchvision's own."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import AlexNet_Weights, VGG19_Weights

from colormamba.losses.vgg import IMAGENET_MEAN, IMAGENET_STD, VGG19_FILE
from colormamba.lpips_score import ALEXNET_FILE
from colormamba.pretrained import load_weights
from tests.support.hostile import CreatesAFile


def test_weight_files_match_torchvision() -> None:
    pairs = ((VGG19_FILE, VGG19_Weights.IMAGENET1K_V1), (ALEXNET_FILE, AlexNet_Weights.IMAGENET1K_V1))
    for spec, member in pairs:
        assert spec.weights == str(member)
        assert spec.url == member.url
        assert spec.filename == member.url.rsplit("/", 1)[-1]


def test_vgg_input_normalisation_is_torchvisions() -> None:
    transform = VGG19_Weights.IMAGENET1K_V1.transforms()
    assert tuple(transform.mean) == IMAGENET_MEAN and tuple(transform.std) == IMAGENET_STD


@pytest.mark.parametrize("what", ["torchvision VGG-19", "torchvision AlexNet"])
def test_a_weights_file_holding_code_is_refused_unpickled_without_torchs_advice(tmp_path: Path, what) -> None:
    """The VGG and AlexNet files come from a download folder anyone may have written to: one that holds
    code is refused, nothing of it runs, and the message never suggests loading it unsafely."""
    created = tmp_path / "created-by-unpickling"
    bad = tmp_path / "weights.pth"
    torch.save({"features.0.weight": CreatesAFile(created)}, bad)
    with pytest.raises(ValueError) as info:
        load_weights(bad, what)
    message = str(info.value)
    assert message.startswith(f"{bad}: not a {what} weights file") and "not unpickled" in message, message
    assert "weights_only" not in message and info.value.__cause__ is None
    assert not created.exists()
