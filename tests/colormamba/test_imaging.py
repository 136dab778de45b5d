"""The image conversions the network depends on, against the reference's formulas: the per-image
normalisation (on the 0-255 scale) and G_A's `seg` map (OpenCV's Laplacian, computed per image)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from colormamba.imaging import normalize_per_image, normalized_laplacian


def _reference_nor(img: np.ndarray) -> np.ndarray:
    """The reference's per-image normalisation of an 8-bit image, as written there: shift by the min,
    then divide by the max of the shifted image plus 1e-3 (0-255 scale)."""
    shifted = img.astype(np.float64) - img.min()
    return shifted / (shifted.max() + 1e-3)


def _reference_seg(nir: np.ndarray) -> np.ndarray:
    """The reference's seg map of one normalised NIR image (H, W) float32, given as a 2-D image (its
    batched call is the defect we do not copy): uint8(x * 255), OpenCV's default Laplacian into float64,
    signed min-max."""
    lap = cv2.Laplacian((nir * 255).astype(np.uint8), cv2.CV_64F)
    return (lap - lap.min()) / (lap.max() - lap.min())


def test_normalisation_is_the_reference_min_max_of_8bit_nir() -> None:
    rng = np.random.default_rng(0)
    images = np.stack([rng.integers(lo, 200, size=(1, 9, 11)) for lo in (3, 25)]).astype(np.uint8)
    got = normalize_per_image(torch.from_numpy(images).double() / 255)
    want = np.stack([_reference_nor(img) for img in images])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-15)
    assert normalize_per_image(torch.full((1, 1, 4, 4), 0.3)).abs().max() == 0  # constant: 0, not NaN


@pytest.mark.parametrize(("height", "width"), [(16, 16), (9, 14), (2, 5)])
def test_seg_is_opencvs_laplacian_per_image(height: int, width: int) -> None:
    rng = np.random.default_rng(height * 100 + width)
    raw = rng.integers(0, 256, size=(3, 1, height, width)).astype(np.uint8)
    raw[0, 0, 0, :] = 255  # strong borders: the border rule (reflect-101) matters
    raw[1, 0, :, -1] = 0
    nir = normalize_per_image(torch.from_numpy(raw).float() / 255)  # the network's input, float32
    got = normalized_laplacian(nir)
    assert got.shape == nir.shape and got.dtype == torch.float32
    for i in range(3):
        want = _reference_seg(nir[i, 0].numpy())
        np.testing.assert_allclose(got[i, 0].numpy(), want, atol=1e-6)
        assert torch.equal(normalized_laplacian(nir[i : i + 1])[0], got[i])  # per image: no batch mixing
    assert got.amin(dim=(1, 2, 3)).eq(0).all() and got.amax(dim=(1, 2, 3)).eq(1).all()


def test_seg_of_a_constant_image_is_zero() -> None:
    out = normalized_laplacian(torch.full((2, 1, 6, 7), 0.4))
    assert torch.isfinite(out).all() and out.abs().max() == 0
