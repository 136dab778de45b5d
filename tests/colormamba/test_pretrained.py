"""The weight files' names and URLs, written out as text so that a run need not import torchvision, are
torchvision's own."""

from __future__ import annotations

from torchvision.models import AlexNet_Weights, VGG19_Weights

from colormamba.losses.vgg import IMAGENET_MEAN, IMAGENET_STD, VGG19_FILE
from colormamba.lpips_score import ALEXNET_FILE


def test_weight_files_match_torchvision() -> None:
    pairs = ((VGG19_FILE, VGG19_Weights.IMAGENET1K_V1), (ALEXNET_FILE, AlexNet_Weights.IMAGENET1K_V1))
    for spec, member in pairs:
        assert spec.weights == str(member)
        assert spec.url == member.url
        assert spec.filename == member.url.rsplit("/", 1)[-1]


def test_vgg_input_normalisation_is_torchvisions() -> None:
    transform = VGG19_Weights.IMAGENET1K_V1.transforms()
    assert tuple(transform.mean) == IMAGENET_MEAN and tuple(transform.std) == IMAGENET_STD
