"""Every small preset runs, trains and handles any frame size; the registry and config behave."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import colormamba.layers.ss2d as ss2d_module
from colormamba.imaging import pad_to_multiple
from colormamba.models import (
    ColorMamba,
    ModelConfig,
    build_model,
    build_model_from_config,
    list_presets,
    resolve_config,
)

CPU_PRESETS = ["tiny", "small"]
# Gradients that are exactly zero by construction: the agent-side position bias cancels in its softmax,
# and the criss-cross attention's query/key/value paths are multiplied by gamma, which starts at 0.
STRUCTURALLY_ZERO = ("an_bias", "ah_bias", "aw_bias", "cca.query_conv", "cca.key_conv", "cca.value_conv")


@pytest.fixture(scope="module", params=CPU_PRESETS)
def model(request: pytest.FixtureRequest) -> ColorMamba:
    torch.manual_seed(0)
    return build_model(request.param)


def test_registry_lists_presets() -> None:
    assert {"paper", "small", "tiny"} <= set(list_presets())


@pytest.mark.parametrize(("preset", "multiple"), [("paper", 256), ("small", 64), ("tiny", 32)])
def test_size_multiple(preset: str, multiple: int) -> None:
    config = resolve_config(preset)
    assert config.size_multiple == multiple == 2**config.rgb_levels


@pytest.mark.parametrize("size", [(64, 64), (37, 50)])
def test_forward_shapes_and_ranges(model: ColorMamba, size: tuple[int, int]) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        rgb, hsv = model(torch.rand(2, 1, *size))
    assert rgb.shape == hsv.shape == (2, 3, *size)
    assert torch.isfinite(rgb).all() and torch.isfinite(hsv).all()
    assert rgb.min() > 0 and rgb.max() < 1  # sigmoid
    assert hsv.min() > -1 and hsv.max() < 1  # tanh


def test_every_parameter_gets_a_gradient(model: ColorMamba) -> None:
    torch.manual_seed(2)
    model.train()
    model.zero_grad(set_to_none=True)
    rgb, hsv = model(torch.rand(2, 1, 64, 64))
    (rgb.square().mean() + hsv.square().mean()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    zero = [name for name, p in model.named_parameters() if not p.grad.any()]
    assert [name for name in zero if not any(part in name for part in STRUCTURALLY_ZERO)] == []
    assert model.rgb_net.cca.gamma.grad.abs().item() > 0  # gamma starts at 0 but learns


@pytest.mark.parametrize("size", [(200, 200), (300, 457)])
def test_tiny_takes_any_frame_size(size: tuple[int, int]) -> None:
    torch.manual_seed(3)
    model = build_model("tiny").eval()
    with torch.no_grad():
        rgb, hsv = model(torch.rand(1, 1, *size))
    assert rgb.shape == hsv.shape == (1, 3, *size)
    assert torch.isfinite(rgb).all() and torch.isfinite(hsv).all()


def test_padding_then_cropping_is_consistent() -> None:
    """A frame and its reflect-padded version give the same pixels: padding is internal and invisible."""
    torch.manual_seed(4)
    model = build_model("tiny").eval()
    nir = torch.rand(2, 1, 37, 50)
    padded, _ = pad_to_multiple(nir, model.size_multiple)
    assert padded.shape[-2:] == (64, 64)
    with torch.no_grad():
        rgb, hsv = model(nir)
        rgb_p, hsv_p = model(padded)
    torch.testing.assert_close(rgb, rgb_p[..., :37, :50], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(hsv, hsv_p[..., :37, :50], rtol=1e-4, atol=1e-5)


def test_images_of_a_batch_are_independent() -> None:
    """An image's output does not depend on its batch mates (the reference's Laplacian mixed them)."""
    torch.manual_seed(5)
    model = build_model("tiny").eval()
    batch = torch.rand(3, 1, 64, 64)
    altered = batch.clone()  # images 0 and 2 change, image 1 stays
    altered[0] = torch.rand(1, 64, 64)
    altered[2] = 1 - altered[2]
    with torch.no_grad():
        rgb, hsv = model(batch)
        rgb_alone, hsv_alone = model(batch[1:2])
        rgb_alt, hsv_alt = model(altered)
    torch.testing.assert_close(rgb[1:2], rgb_alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(hsv[1:2], hsv_alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rgb_alt[1], rgb[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(hsv_alt[1], hsv[1], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(rgb_alt[0], rgb[0], atol=1e-3)


def test_input_is_normalised_inside() -> None:
    """Callers pass raw [0, 1] images: a darker exposure of the same frame gives the same colours."""
    torch.manual_seed(6)
    model = build_model("tiny").eval()
    # values half-way between the 8-bit steps of the seg map's quantisation (min 0, max 1), so that no
    # pixel sits on a step that the normalisation's epsilon could move it across
    nir = (torch.randint(0, 255, (1, 1, 32, 32)) + 0.5) / 255
    nir[..., 0, 0], nir[..., 0, 1] = 0.0, 1.0
    with torch.no_grad():
        rgb, _ = model(nir)
        rgb_dark, _ = model(nir * 0.4)
    # (x - min) / (max - min + 1e-3 / 255) is invariant to scaling x but for the epsilon (not to a shift:
    # the HSV reading's min is its zero hue and saturation)
    torch.testing.assert_close(rgb, rgb_dark, rtol=0, atol=1e-4)


def test_unknown_preset_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*paper.*small.*tiny"):
        build_model("huge")


def test_unknown_override_is_refused_with_the_known_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown model config keys \['widht'\].*rgb_width"):
        build_model("tiny", widht=3)


@pytest.mark.parametrize(
    "override",
    [{"agent_num": 10}, {"rgb_levels": 4}, {"agent_heads": 3}, {"d_state": 0}, {"rgb_width": 8.5}],
)
def test_invalid_values_are_refused(override: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(override))):
        resolve_config("tiny", **override)


def test_overrides_win_over_the_preset() -> None:
    model = build_model("tiny", d_state=2, hsv_width=8)
    assert model.config.d_state == 2 and model.config.hsv_width == 8
    assert model.config.rgb_width == resolve_config("tiny").rgb_width  # the rest is the preset's
    ss2d = model.rgb_net.encoder[0][1].vss.ss2d
    assert ss2d.A_logs.shape[-1] == 2
    assert model.hsv_net.encoder[0].conv1.out_channels == 8


def test_config_round_trip_rebuilds_the_same_architecture() -> None:
    model = build_model("small", scan_backend="torch")
    stored = json.loads(json.dumps(dataclasses.asdict(model.config)))  # as inside a checkpoint
    rebuilt = build_model_from_config(stored)
    assert rebuilt.config == model.config
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    assert ColorMamba.from_config(model.config).config == model.config
    rebuilt.load_state_dict(model.state_dict())  # strict: same keys, same shapes
    with pytest.raises(ValueError, match=r"unknown ModelConfig keys \['extra'\]"):
        ModelConfig.from_dict({**stored, "extra": 1})


def test_scan_backend_reaches_every_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real_scan = ss2d_module.selective_scan

    def spy(*args, backend: str = "auto", **kwargs):
        seen.append(backend)
        return real_scan(*args, **kwargs)

    monkeypatch.setattr(ss2d_module, "selective_scan", spy)
    model = build_model("tiny", scan_backend="my-backend").eval()
    with torch.no_grad():
        model(torch.rand(1, 1, 32, 32))
    assert seen == ["my-backend"] * 9  # 3 MambaIR blocks in G_A, 6 in G_B


@pytest.mark.slow
def test_paper_forward_at_256() -> None:
    torch.manual_seed(7)
    model = build_model("paper").eval()
    with torch.no_grad():
        rgb, hsv = model(torch.rand(1, 1, 256, 256))
    assert rgb.shape == hsv.shape == (1, 3, 256, 256)
    assert torch.isfinite(rgb).all() and torch.isfinite(hsv).all()


def test_edge_encoder_starts_as_a_copy_and_trains_separately() -> None:
    model = build_model("tiny")
    main, edge = model.hsv_net.encoder, model.hsv_net.edge_encoder
    assert edge[0].conv1.in_channels == 1 and main[0].conv1.in_channels == 5
    for stage in range(1, 5):
        assert torch.equal(main[stage].conv1.weight, edge[stage].conv1.weight)
        assert main[stage].conv1.weight is not edge[stage].conv1.weight
