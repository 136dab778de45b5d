"""VGG perceptual term: weight lookup without downloads, torchvision-compatible trunk, frozen weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from colormamba.losses import build_loss
from colormamba.losses.vgg import (
    VGG_WEIGHTS_ENV,
    VGG_WEIGHTS_FILENAME,
    VGGPerceptualLoss,
    VGGWeightsNotFoundError,
    find_vgg_weights,
    vgg19_layer_names,
)


@pytest.fixture(autouse=True)
def hub_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty torch home and no env override: tests never see a real weights file."""
    monkeypatch.delenv(VGG_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints" / VGG_WEIGHTS_FILENAME


@pytest.fixture(scope="module")
def torchvision_vgg() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vgg19(weights=None).eval()


@pytest.fixture(scope="module")
def fake_weights(torchvision_vgg: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dict in torchvision's format from a randomly initialised vgg19 (trunk only, to keep the
    file small, plus one classifier entry that the loader must ignore)."""
    state = {k: v for k, v in torchvision_vgg.state_dict().items() if k.startswith("features.")}
    state["classifier.6.bias"] = torch.zeros(1000)
    path = tmp_path_factory.mktemp("weights") / VGG_WEIGHTS_FILENAME
    torch.save(state, path)
    return path


def test_layer_names_line_up_with_torchvision(torchvision_vgg: torch.nn.Module) -> None:
    names = vgg19_layer_names()
    assert len(names) == len(torchvision_vgg.features)
    for name, module in zip(names, torchvision_vgg.features, strict=True):
        kind = {"conv": torch.nn.Conv2d, "relu": torch.nn.ReLU, "pool": torch.nn.MaxPool2d}[name[:4]]
        assert isinstance(module, kind), name
    assert names.index("relu5_4") == 35 and names.index("relu1_2") == 3


def test_missing_weights_error_says_where_and_how(hub_file: Path) -> None:
    with pytest.raises(VGGWeightsNotFoundError) as info:
        find_vgg_weights()
    message = str(info.value)
    assert str(hub_file) in message
    assert VGG_WEIGHTS_ENV in message
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
    assert "vgg_weights='random'" in message
    assert isinstance(info.value, FileNotFoundError)


def test_named_but_absent_locations_are_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(VGGWeightsNotFoundError, match=r"nowhere\.pth"):
        find_vgg_weights(missing)
    monkeypatch.setenv(VGG_WEIGHTS_ENV, str(missing))
    with pytest.raises(VGGWeightsNotFoundError, match=f"\\${VGG_WEIGHTS_ENV}"):
        find_vgg_weights()


def test_pretrained_is_never_silently_random() -> None:
    with pytest.raises(VGGWeightsNotFoundError):
        build_loss("vgg")
    with pytest.raises(VGGWeightsNotFoundError):
        build_loss("combined", vgg_weights="pretrained")
    assert build_loss("vgg", vgg_weights="random").vgg is not None
    assert build_loss("original").vgg is None  # no VGG needed, none built, no file asked for


def test_weights_load_through_env_hub_and_path(fake_weights: Path, torchvision_vgg: torch.nn.Module,
                                               hub_file: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    x = torch.rand(1, 3, 32, 32)
    normalised = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = {name: torchvision_vgg.features[: vgg19_layer_names().index(name) + 1](normalised)
                for name in ("relu2_2", "relu3_4")}

    def check(loss: VGGPerceptualLoss) -> None:
        with torch.no_grad():
            got = loss.features(x)
        for name, ref in want.items():
            torch.testing.assert_close(got[name], ref, rtol=1e-4, atol=1e-5)

    check(VGGPerceptualLoss(fake_weights, layers=("relu2_2", "relu3_4")))
    monkeypatch.setenv(VGG_WEIGHTS_ENV, str(fake_weights))
    assert find_vgg_weights() == fake_weights
    check(VGGPerceptualLoss("pretrained", layers=("relu2_2", "relu3_4")))
    monkeypatch.delenv(VGG_WEIGHTS_ENV)
    hub_file.parent.mkdir(parents=True)
    hub_file.write_bytes(fake_weights.read_bytes())
    assert find_vgg_weights() == hub_file
    check(VGGPerceptualLoss("pretrained", layers=("relu2_2", "relu3_4")))


def test_a_file_that_is_not_vgg19_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, path)
    with pytest.raises(RuntimeError, match="not a torchvision VGG-19 state dict"):
        VGGPerceptualLoss(path, layers=("relu1_1",))


def test_trunk_stops_at_the_deepest_requested_layer() -> None:
    loss = VGGPerceptualLoss("random", layers=("relu1_2", "relu2_2"))
    assert len(loss.trunk) == vgg19_layer_names().index("relu2_2") + 1 == 9
    with pytest.raises(ValueError, match="relu9_9"):
        VGGPerceptualLoss("random", layers=("relu9_9",))


def test_vgg_is_frozen_and_not_saved() -> None:
    torch.manual_seed(0)
    loss = VGGPerceptualLoss("random")
    assert list(loss.parameters()) == []
    assert loss.state_dict() == {}
    assert all(not b.requires_grad for b in loss.buffers())
    loss.train()
    assert not loss.trunk.training
    composite = build_loss("combined", vgg_weights="random")
    assert list(composite.parameters()) == [] and composite.state_dict() == {}


def test_vgg_loss_values_and_gradients() -> None:
    torch.manual_seed(0)
    loss = VGGPerceptualLoss("random")
    target = torch.rand(1, 3, 32, 32)
    assert loss(target, target).item() == 0.0
    pred = torch.rand(1, 3, 32, 32, requires_grad=True)
    value = loss(pred, target)
    value.backward()
    assert value.item() > 0 and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # the sum over layers of mean squared feature differences, by hand
    with torch.no_grad():
        fp, ft = loss.features(pred), loss.features(target)
    by_hand = sum(((fp[n] - ft[n]) ** 2).mean() for n in loss.layers)
    assert value.item() == pytest.approx(by_hand.item(), rel=1e-5)
