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


# --- the pixel limit of every image a user gives (colormamba.imaging.open_image) ------------------------


def test_a_header_claiming_100000x100000_is_refused_naming_the_file_its_size_and_the_limit(tmp_path) -> None:
    from colormamba import imaging
    from tests.support.images import png_claiming

    bomb = png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    assert bomb.stat().st_size < 1000
    for channels, convert in ((1, False), (1, True), (3, True)):
        with pytest.raises(ValueError) as info:
            imaging.load_image(bomb, channels, convert=convert)
        message = str(info.value)
        # PIL's own guard fires first this far up: it tells the pixel count, not the width and height
        assert message.startswith(f"{bomb}: 10,000,000,000 pixels is above the limit"), message
        assert f"limit of {imaging.MAX_IMAGE_PIXELS:,} pixels" in message
        assert isinstance(info.value, imaging.ImageTooLarge)


def test_a_header_between_our_limit_and_pils_is_refused_before_decoding_without_pils_warning(
    tmp_path, recwarn: pytest.WarningsRecorder
) -> None:
    """12000x12000 (144 MP): PIL only warns up to 179 MP, then decodes it (4.2 GB for a frame of this size
    read as RGB floats); 8000x8000 (64 MP) PIL opens without a word."""
    from colormamba import imaging
    from tests.support.images import png_claiming

    for side in (12_000, 8_000):
        frame = png_claiming(tmp_path / f"frame{side}.png", side, side)
        refused = rf"{side}x{side} = {side * side:,} pixels is above the limit"
        with pytest.raises(imaging.ImageTooLarge, match=refused):
            imaging.load_image(frame, 1)
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]


def test_the_limit_is_checked_on_the_header_of_real_images(tmp_path, monkeypatch) -> None:
    from PIL import Image

    from colormamba import imaging

    Image.new("RGB", (30, 20), (10, 200, 30)).save(tmp_path / "real.png")
    rgb = imaging.load_image(tmp_path / "real.png", 3)
    assert rgb.shape == (3, 20, 30) and abs(float(rgb[1, 0, 0]) - 200 / 255) < 1e-6
    with imaging.open_image(tmp_path / "real.png") as img:
        assert img.size == (30, 20)
    monkeypatch.setattr(imaging, "MAX_IMAGE_PIXELS", 599)  # one pixel fewer than the frame's 600
    refused = r"real.png: 30x20 = 600 pixels is above the limit of 599 pixels"
    with pytest.raises(imaging.ImageTooLarge, match=refused):
        imaging.load_image(tmp_path / "real.png", 3)
