"""Augmentation: shared geometry, NIR-only contrast, determinism in (seed, epoch, index)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from colormamba.data.augment import (
    AugmentConfig,
    AugmentParams,
    apply_params,
    augment_pair,
    item_generator,
    sample_params,
)

GEOMETRY_ONLY = AugmentConfig(contrast_p=0.0)


def random_pair(h: int = 32, w: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, h, w, generator=g), torch.rand(3, h, w, generator=g)


def test_nir_and_rgb_share_the_geometry() -> None:
    nir, _ = random_pair()
    rgb = nir.repeat(3, 1, 1)  # every RGB channel is a copy of the NIR
    changed = 0
    for index in range(12):
        out_nir, out_rgb = augment_pair(nir, rgb, GEOMETRY_ONLY, seed=3, epoch=0, index=index)
        assert out_nir.shape == (1, 32, 40) and out_rgb.shape == (3, 32, 40)
        for c in range(3):
            torch.testing.assert_close(out_rgb[c : c + 1], out_nir, rtol=0, atol=0)
        changed += not torch.equal(out_nir, nir)
    assert changed == 12  # the crop always moves pixels, so the check above was not vacuous


def test_flip_only_mirrors_both_images_exactly() -> None:
    nir, rgb = random_pair()
    cfg = AugmentConfig(hflip_p=1.0, crop_fraction=1.0, contrast_p=0.0)
    out_nir, out_rgb = augment_pair(nir, rgb, cfg, seed=0, epoch=0, index=0)
    assert torch.equal(out_nir, nir.flip(-1)) and torch.equal(out_rgb, rgb.flip(-1))


def test_crop_is_resized_back_with_antialiased_bicubic_and_clamped() -> None:
    nir, rgb = random_pair(16, 16)
    params = AugmentParams(flip=False, crop=(2, 5, 10, 10), contrast=None)
    out_nir, out_rgb = apply_params(nir, rgb, params)
    crop = torch.cat([nir, rgb])[None, :, 2:12, 5:15]
    expected = F.interpolate(crop, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)[0]
    torch.testing.assert_close(torch.cat([out_nir, out_rgb]), expected.clamp(0, 1))
    assert expected.min() < 0 or expected.max() > 1  # random noise overshoots, so the clamp mattered
    assert out_nir.min() >= 0 and out_rgb.max() <= 1


def test_contrast_jitter_changes_the_nir_only() -> None:
    g = torch.Generator().manual_seed(1)
    nir = 0.3 + 0.4 * torch.rand(1, 16, 16, generator=g)  # stays in [0, 1] for factors up to 1.5
    rgb = torch.rand(3, 16, 16, generator=g)
    cfg = AugmentConfig(hflip_p=0.0, crop_fraction=1.0, contrast_p=1.0)
    for index in range(5):
        params = sample_params(cfg, 16, 16, item_generator(0, 0, index))
        out_nir, out_rgb = augment_pair(nir, rgb, cfg, seed=0, epoch=0, index=index)
        assert torch.equal(out_rgb, rgb)
        assert 0.5 <= params.contrast <= 1.5
        torch.testing.assert_close(out_nir.mean(), nir.mean())
        torch.testing.assert_close(out_nir.std() / nir.std(), torch.tensor(params.contrast))


def test_same_seed_epoch_index_gives_the_same_augmentation() -> None:
    nir, rgb = random_pair()
    cfg = AugmentConfig()
    first = augment_pair(nir, rgb, cfg, seed=7, epoch=3, index=5)
    torch.manual_seed(123)  # the global RNG plays no part
    again = augment_pair(nir, rgb, cfg, seed=7, epoch=3, index=5)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_epochs_indices_and_seeds_change_the_augmentation() -> None:
    cfg = AugmentConfig()

    def params(seed: int, epoch: int, index: int) -> AugmentParams:
        return sample_params(cfg, 256, 256, item_generator(seed, epoch, index))

    base = params(0, 0, 0)
    assert params(0, 1, 0) != base and params(0, 0, 1) != base and params(1, 0, 0) != base
    assert params(0, 1, 0) != params(0, 0, 1)  # the triple is mixed, not summed


def test_sampled_choices_follow_the_recipe() -> None:
    cfg = AugmentConfig()
    draws = [sample_params(cfg, 256, 256, item_generator(0, 0, i)) for i in range(400)]
    assert {p.crop[2:] for p in draws} == {(200, 200)}
    assert all(0 <= p.crop[0] <= 56 and 0 <= p.crop[1] <= 56 for p in draws)
    assert len({p.crop[0] for p in draws}) > 50 and len({p.crop[1] for p in draws}) > 50  # of 57 positions
    flips = sum(p.flip for p in draws) / len(draws)
    factors = [p.contrast for p in draws if p.contrast is not None]
    assert 0.4 < flips < 0.6 and 0.4 < len(factors) / len(draws) < 0.6
    assert min(factors) >= 0.5 and max(factors) <= 1.5 and max(factors) - min(factors) > 0.8


def test_disabled_config_returns_the_inputs() -> None:
    nir, rgb = random_pair()
    out_nir, out_rgb = augment_pair(nir, rgb, AugmentConfig(enabled=False), seed=0, epoch=4, index=2)
    assert out_nir is nir and out_rgb is rgb


def test_config_validation_and_json_lists() -> None:
    assert AugmentConfig(contrast_range=[0.8, 1.2]).contrast_range == (0.8, 1.2)
    with pytest.raises(ValueError, match="hflip_p") as err:
        AugmentConfig(hflip_p=1.5, crop_fraction=0.0)
    assert "crop_fraction" in str(err.value)  # every bad field at once
    with pytest.raises(ValueError, match="contrast_range"):
        AugmentConfig(contrast_range=(1.5, 0.5))
