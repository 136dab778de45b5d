"""Augmentation: the reference's contrast jitter (PIL's, on the target and on G_B's HSV reading of the NIR)
on the full-size images, then the shared geometry; determinism in (seed, epoch, index)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance

from colormamba.data.augment import (
    AugmentConfig,
    AugmentParams,
    apply_params,
    augment_batch,
    augment_pair,
    item_generator,
    pil_contrast,
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
        out_nir, out_rgb, out_hsv_nir = augment_pair(nir, rgb, GEOMETRY_ONLY, seed=3, epoch=0, index=index)
        assert torch.equal(out_hsv_nir, out_nir)  # no jitter: G_B reads the NIR that G_A reads
        assert out_nir.shape == (1, 32, 40) and out_rgb.shape == (3, 32, 40)
        for c in range(3):
            torch.testing.assert_close(out_rgb[c : c + 1], out_nir, rtol=0, atol=0)
        changed += not torch.equal(out_nir, nir)
    assert changed == 12  # the crop always moves pixels, so the check above was not vacuous


def test_flip_only_mirrors_both_images_exactly() -> None:
    nir, rgb = random_pair()
    cfg = AugmentConfig(hflip_p=1.0, crop_fraction=1.0, contrast_p=0.0)
    out_nir, out_rgb, _ = augment_pair(nir, rgb, cfg, seed=0, epoch=0, index=0)
    assert torch.equal(out_nir, nir.flip(-1)) and torch.equal(out_rgb, rgb.flip(-1))


def test_crop_is_resized_back_with_antialiased_bicubic_and_clamped() -> None:
    nir, rgb = random_pair(16, 16)
    params = AugmentParams(flip=False, crop=(2, 5, 10, 10), contrast=None)
    out_nir, out_rgb, _ = apply_params(nir, rgb, params)
    crop = torch.cat([nir, rgb])[None, :, 2:12, 5:15]
    expected = F.interpolate(crop, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)[0]
    torch.testing.assert_close(torch.cat([out_nir, out_rgb]), expected.clamp(0, 1))
    assert expected.min() < 0 or expected.max() > 1  # random noise overshoots, so the clamp mattered
    assert out_nir.min() >= 0 and out_rgb.max() <= 1


def _contrast_from_the_math(image: np.ndarray, factor: float) -> np.ndarray:
    """PIL's Contrast written out: blend the 8-bit image with the rounded mean of its luma L (ITU-R 601-2,
    PIL's 16-bit fixed point), in float32, clip to [0, 255], truncate."""
    levels = image.astype(np.int64)  # (H, W, 3) or (H, W)
    luma = (levels @ np.array([19595, 38470, 7471]) + 32768) >> 16 if image.ndim == 3 else levels
    mean = np.float32(int(luma.mean() + 0.5))
    blended = mean + np.float32(factor) * (levels.astype(np.float32) - mean)
    return np.trunc(np.clip(blended, 0, 255)).astype(np.uint8)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) or (H, W, 3) -> (1, C, H, W) in [0, 1]."""
    t = torch.from_numpy(image).float() / 255
    return t[None, None] if image.ndim == 2 else t.permute(2, 0, 1)[None]


def _to_bytes(t: torch.Tensor) -> np.ndarray:
    out = (t[0] * 255).round().to(torch.uint8)
    return out[0].numpy() if out.shape[0] == 1 else out.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_pil_contrast_is_pils_image_enhance_contrast(mode: str) -> None:
    rng = np.random.default_rng(0)
    changed = 0
    for factor in (0.5, 0.73, 1.0, 1.21, 1.5):  # above 1, wide images clip at 0 and 255
        for low, high in ((0, 255), (40, 200), (90, 110)):
            shape = (19, 23, 3) if mode == "RGB" else (19, 23)
            image = rng.integers(low, high + 1, shape, dtype=np.uint8)
            expected = np.asarray(ImageEnhance.Contrast(Image.fromarray(image, mode)).enhance(factor))
            np.testing.assert_array_equal(_contrast_from_the_math(image, factor), expected)
            ours = _to_bytes(pil_contrast(_to_tensor(image), torch.tensor([factor])))
            np.testing.assert_array_equal(ours, expected)
            changed += not np.array_equal(expected, image)
    assert changed >= 10


def test_the_nir_read_as_rgb_jitters_like_the_grey_nir() -> None:
    """The reference jitters the NIR read as RGB: its luma is the grey itself, so each channel of the
    result is the jittered grey image (what `hsv_nir` holds)."""
    grey = np.random.default_rng(1).integers(10, 240, (16, 20), dtype=np.uint8)
    as_rgb = Image.fromarray(grey, "L").convert("RGB")
    expected = np.asarray(ImageEnhance.Contrast(as_rgb).enhance(0.6))
    ours = _to_bytes(pil_contrast(_to_tensor(grey), torch.tensor([0.6])))
    for c in range(3):
        np.testing.assert_array_equal(expected[..., c], ours)
    assert not np.array_equal(ours, grey)


def test_contrast_jitter_reaches_the_target_and_gbs_hsv_input_not_the_grey_nir() -> None:
    g = torch.Generator().manual_seed(1)
    nir = torch.randint(20, 230, (1, 16, 16), generator=g) / 255
    rgb = torch.randint(0, 256, (3, 16, 16), generator=g) / 255
    cfg = AugmentConfig(hflip_p=0.0, crop_fraction=1.0, contrast_p=1.0)
    for index in range(5):
        factor = sample_params(cfg, 16, 16, item_generator(0, 0, index)).contrast
        assert 0.5 <= factor <= 1.5
        out = augment_pair(nir, rgb, cfg, seed=0, epoch=0, index=index)
        assert torch.equal(out.nir, nir)  # G_A's input: never jittered by the reference
        as_bytes = (rgb * 255).round().byte().permute(1, 2, 0).numpy()
        expected_rgb = _contrast_from_the_math(as_bytes, factor)  # one factor for both
        np.testing.assert_array_equal(_to_bytes(out.rgb[None]), expected_rgb)
        expected_hsv_nir = _contrast_from_the_math((nir[0] * 255).round().byte().numpy(), factor)
        np.testing.assert_array_equal(_to_bytes(out.hsv_nir[None]), expected_hsv_nir)
        stronger = augment_pair(nir, rgb, AugmentConfig(**{**vars(cfg), "nir_contrast": True}), 0, 0, index)
        assert torch.equal(stronger.nir, out.hsv_nir) and torch.equal(stronger.hsv_nir, out.hsv_nir)
        assert torch.equal(stronger.rgb, out.rgb)


def _flip_crop_resize(image: torch.Tensor, flip: bool, crop: tuple[int, int, int, int]) -> torch.Tensor:
    """The documented geometry, written out: (C, H, W) -> flipped, cropped, resized back with antialiased
    bicubic interpolation, clamped to [0, 1]."""
    top, left, crop_h, crop_w = crop
    image = image.flip(-1) if flip else image
    region = image[None, :, top : top + crop_h, left : left + crop_w]
    size = image.shape[-2:]
    return F.interpolate(region, size, mode="bicubic", align_corners=False, antialias=True)[0].clamp(0, 1)


def test_the_jitter_uses_the_whole_images_mean_luma_before_the_crop() -> None:
    """The reference jitters the full-size image, then crops and resizes: PIL's mean luma is the whole
    image's, not the crop's. The crop here is dark and the rest bright, so the two means differ."""
    h = w = 32
    params = AugmentParams(flip=True, crop=(2, 3, 24, 24), contrast=0.6)
    in_crop = torch.zeros(h, w, dtype=torch.bool)
    in_crop[2:26, 3:27] = True  # where the crop lies in the flipped image
    in_crop = in_crop.flip(-1)
    g = torch.Generator().manual_seed(4)
    dark = torch.randint(20, 80, (3, h, w), generator=g)
    bright = torch.randint(170, 240, (3, h, w), generator=g)
    rgb_bytes = torch.where(in_crop, dark, bright).to(torch.uint8)  # (3, H, W)
    nir_bytes = torch.where(in_crop, dark[:1], bright[:1]).to(torch.uint8)
    luma = (rgb_bytes.long() * torch.tensor([19595, 38470, 7471]).view(3, 1, 1)).sum(0).add(32768) >> 16
    assert luma.float().mean() - luma[in_crop].float().mean() > 50  # the whole image's mean vs the crop's

    out = apply_params(nir_bytes / 255, rgb_bytes / 255, params)
    jittered_rgb = _to_tensor(_contrast_from_the_math(rgb_bytes.permute(1, 2, 0).numpy(), 0.6))[0]
    jittered_nir = _to_tensor(_contrast_from_the_math(nir_bytes[0].numpy(), 0.6))[0]
    torch.testing.assert_close(out.rgb, _flip_crop_resize(jittered_rgb, True, params.crop))
    torch.testing.assert_close(out.hsv_nir, _flip_crop_resize(jittered_nir, True, params.crop))
    torch.testing.assert_close(out.nir, _flip_crop_resize(nir_bytes / 255, True, params.crop))

    # the other order (crop, then jitter with the crop's mean) is off by (1 - 0.6) x the means' gap
    factor = torch.tensor([0.6])
    old_rgb = pil_contrast(_flip_crop_resize(rgb_bytes / 255, True, params.crop)[None], factor)[0]
    old_hsv_nir = pil_contrast(_flip_crop_resize(nir_bytes / 255, True, params.crop)[None], factor)[0]
    assert (out.rgb - old_rgb).abs().mean() > 20 / 255
    assert (out.hsv_nir - old_hsv_nir).abs().mean() > 20 / 255


def test_the_flip_commutes_with_the_jitter() -> None:
    """The reference flips, then jitters; we jitter, then flip: a mirror keeps the mean luma, so both
    orders give the same pixels (here without a crop, and with clipping: factor above 1)."""
    g = torch.Generator().manual_seed(5)
    nir = torch.randint(0, 256, (1, 16, 20), generator=g) / 255
    rgb = torch.randint(0, 256, (3, 16, 20), generator=g) / 255
    cfg = AugmentConfig(hflip_p=1.0, crop_fraction=1.0, contrast_p=1.0)
    params = sample_params(cfg, 16, 20, item_generator(0, 0, 0))
    assert params.flip and params.crop == (0, 0, 16, 20)
    params = AugmentParams(flip=True, crop=params.crop, contrast=1.3)
    out = apply_params(nir, rgb, params)

    def jitter(image: torch.Tensor) -> torch.Tensor:
        return pil_contrast(image[None], torch.tensor([1.3]))[0]

    for got, image in ((out.rgb, rgb), (out.hsv_nir, nir)):
        assert torch.equal(got, jitter(image).flip(-1)) and torch.equal(got, jitter(image.flip(-1)))
        assert not torch.equal(got, jitter(image))  # the flip did something
    assert torch.equal(out.nir, nir.flip(-1))


@pytest.mark.parametrize("nir_contrast", [False, True])
def test_a_batch_is_its_items_and_unjittered_items_give_gb_the_grey_nir(nir_contrast: bool) -> None:
    g = torch.Generator().manual_seed(6)
    nir = torch.randint(0, 256, (4, 1, 24, 24), generator=g) / 255
    rgb = torch.randint(0, 256, (4, 3, 24, 24), generator=g) / 255
    params = [
        AugmentParams(flip=False, crop=(0, 0, 18, 18), contrast=None),
        AugmentParams(flip=True, crop=(6, 2, 18, 18), contrast=0.7),
        AugmentParams(flip=True, crop=(3, 6, 18, 18), contrast=None),
        AugmentParams(flip=False, crop=(1, 4, 18, 18), contrast=1.4),
    ]
    out = augment_batch(nir, rgb, params, nir_contrast)
    for i, p in enumerate(params):
        item = apply_params(nir[i], rgb[i], p, nir_contrast)
        assert all(torch.equal(batched[i], alone) for batched, alone in zip(out, item, strict=True))
        if p.contrast is None:
            assert torch.equal(out.hsv_nir[i], out.nir[i])
            assert torch.equal(out.nir[i], _flip_crop_resize(nir[i], p.flip, p.crop))
        else:
            assert torch.equal(out.hsv_nir[i], out.nir[i]) == nir_contrast
    unjittered = augment_batch(nir, rgb, [params[0], params[2], params[0], params[2]], nir_contrast)
    assert unjittered.hsv_nir is unjittered.nir


def test_min_max_normalisation_undoes_the_targets_jitter_but_not_gbs() -> None:
    """Why the reference's jitter matters for G_B only: a factor <= 1 is an affine change of the 8-bit
    image, which the per-image min-max `(x - min) / (max - min + eps)` undoes up to PIL's rounding; G_B's
    HSV reading (0, 0, v) has min 0 over its channels, so its normalisation is v / max and keeps it."""

    def min_max(x: torch.Tensor) -> torch.Tensor:
        lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
        return (x - lo) / (hi - lo + 1e-3 / 255)

    g = torch.Generator().manual_seed(2)
    rgb = torch.randint(10, 246, (4, 3, 32, 32), generator=g) / 255
    nir = torch.randint(10, 246, (4, 1, 32, 32), generator=g) / 255
    factors = torch.tensor([0.5, 0.7, 0.9, 1.0])
    target_change = (min_max(pil_contrast(rgb, factors)) - min_max(rgb)).abs().amax()
    assert target_change < 0.02

    def hsv_value(x: torch.Tensor) -> torch.Tensor:
        hsv = torch.cat([torch.zeros_like(x), torch.zeros_like(x), x], dim=1)
        return min_max(hsv)[:, 2:]

    hsv_change = (hsv_value(pil_contrast(nir, factors)) - hsv_value(nir)).abs().amax(dim=(1, 2, 3))
    assert hsv_change[0] > 0.2 and hsv_change[-1] < 0.01  # factor 0.5 vs 1


def test_same_seed_epoch_index_gives_the_same_augmentation() -> None:
    nir, rgb = random_pair()
    cfg = AugmentConfig()
    first = augment_pair(nir, rgb, cfg, seed=7, epoch=3, index=5)
    torch.manual_seed(123)  # the global RNG plays no part
    again = augment_pair(nir, rgb, cfg, seed=7, epoch=3, index=5)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


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
    out_nir, out_rgb, out_hsv_nir = augment_pair(nir, rgb, AugmentConfig(enabled=False), 0, 4, 2)
    assert out_nir is nir and out_rgb is rgb and out_hsv_nir is nir


def test_config_validation_and_json_lists() -> None:
    assert AugmentConfig(contrast_range=[0.8, 1.2]).contrast_range == (0.8, 1.2)
    with pytest.raises(ValueError, match="hflip_p") as err:
        AugmentConfig(hflip_p=1.5, crop_fraction=0.0)
    assert "crop_fraction" in str(err.value)  # every bad field at once
    with pytest.raises(ValueError, match="contrast_range"):
        AugmentConfig(contrast_range=(1.5, 0.5))
    with pytest.raises(ValueError, match="nir_contrast"):
        AugmentConfig(nir_contrast="yes")
    assert not AugmentConfig().nir_contrast  # the reference never jitters the grey NIR
