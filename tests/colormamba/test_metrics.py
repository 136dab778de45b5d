"""Metrics against independent oracles: skimage for PSNR/SSIM, numpy and hand computations for AE/MAE,
the reference's formulas (written here from the math, on the 0-255 scale) for the `colormamba` protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from colormamba.metrics import (
    AE_DEFINITIONS,
    METRIC_NAMES,
    PROTOCOLS,
    angular_error,
    compute_metrics,
    mae,
    prepare_target,
    psnr,
    reference_angular_error,
    ssim,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="no GPU"))]


def _pair(kind: str, h: int, w: int, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, gt) float32 batches: independent noise ("random") or smooth images with a smooth error."""
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        gt = torch.rand(n, 3, h, w, generator=g)
        pred = (gt + 0.2 * torch.randn(n, 3, h, w, generator=g)).clamp(0, 1)
    else:
        def smooth() -> torch.Tensor:
            coarse = torch.rand(n, 3, 3, 4, generator=g)
            return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True).clamp(0, 1)
        gt = smooth()
        pred = (0.8 * gt + 0.2 * smooth()).clamp(0, 1)
    return pred, gt


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).double().cpu().numpy()


SIZES = [(7, 9), (9, 7), (16, 16), (33, 50), (64, 48)]


@pytest.mark.parametrize("kind", ["random", "smooth"])
@pytest.mark.parametrize(("h", "w"), SIZES)
def test_psnr_and_ssim_match_skimage(kind: str, h: int, w: int) -> None:
    pred, gt = _pair(kind, h, w)
    got_psnr, got_ssim = psnr(pred, gt), ssim(pred, gt)
    for i in range(pred.shape[0]):
        want_ssim = structural_similarity(_hwc(gt[i]), _hwc(pred[i]), data_range=1, channel_axis=-1)
        want_psnr = peak_signal_noise_ratio(_hwc(gt[i]), _hwc(pred[i]), data_range=1)
        assert abs(got_ssim[i].item() - want_ssim) < 1e-4
        assert abs(got_psnr[i].item() - want_psnr) < 1e-6
    assert 0.0 < got_ssim.min() < got_ssim.max() < 1.0  # not a degenerate case


def test_identical_images_score_perfectly() -> None:
    _, gt = _pair("smooth", 16, 20)
    assert torch.isinf(psnr(gt, gt)).all() and (psnr(gt, gt) > 0).all()
    assert torch.allclose(ssim(gt, gt), torch.ones(2, dtype=torch.float64), atol=1e-12)
    assert (angular_error(gt, gt) == 0).all()
    assert (angular_error(gt.double(), gt.double().clone()) == 0).all()
    assert (mae(gt, gt) == 0).all()


def test_angular_error_hand_cases() -> None:
    def ae(p: tuple[float, ...], g: tuple[float, ...]) -> float:
        pred = torch.tensor(p, dtype=torch.float64).view(1, 3, 1, 1)
        gt = torch.tensor(g, dtype=torch.float64).view(1, 3, 1, 1)
        return angular_error(pred, gt).item()

    assert ae((1, 0, 0), (0, 1, 0)) == pytest.approx(90.0, abs=1e-12)
    assert ae((1, 1, 0), (1, 0, 0)) == pytest.approx(45.0, abs=1e-12)
    assert ae((0.2, 0.4, 0.6), (0.1, 0.2, 0.3)) == pytest.approx(0.0, abs=1e-12)  # same direction
    assert ae((0.3, 0.7, 0.1), (0.3, 0.7, 0.1)) == 0.0  # exact, where arccos(rounded cosine) is not
    assert ae((1, 0, 0), (-1, 0, 0)) == pytest.approx(180.0, abs=1e-12)
    assert ae((0, 0, 0), (0, 0, 0)) == 0.0  # both black: identical
    assert ae((0, 0, 0), (0.5, 0.2, 0.1)) == 90.0  # exactly one black
    assert ae((0.5, 0.2, 0.1), (0, 0, 0)) == 90.0


def test_angular_error_is_the_mean_of_per_pixel_angles() -> None:
    # pixel 1 at 90 degrees, pixel 2 at 0 -> 45 for the image
    pred = torch.tensor([[1.0, 0.5], [0.0, 0.5], [0.0, 0.5]]).view(1, 3, 1, 2)
    gt = torch.tensor([[0.0, 0.5], [1.0, 0.5], [0.0, 0.5]]).view(1, 3, 1, 2)
    assert angular_error(pred, gt).item() == pytest.approx(45.0, abs=1e-12)


def test_angular_error_matches_the_arccos_formula() -> None:
    pred, gt = _pair("random", 12, 10)
    pred, gt = pred + 0.05, gt + 0.05  # no black pixels: the arccos formula is defined everywhere
    p, g = pred.double().numpy(), gt.double().numpy()
    cos = (p * g).sum(1) / (np.linalg.norm(p, axis=1) * np.linalg.norm(g, axis=1))
    want = np.degrees(np.arccos(np.clip(cos, -1, 1))).reshape(2, -1).mean(1)
    np.testing.assert_allclose(angular_error(pred, gt).numpy(), want, atol=1e-6)


def test_mae_on_the_255_scale() -> None:
    pred = torch.full((1, 3, 4, 5), 0.5)
    gt = torch.full((1, 3, 4, 5), 0.25)
    assert mae(pred, gt).item() == pytest.approx(63.75, abs=1e-9)
    pred, gt = _pair("random", 9, 11)
    want = np.abs(pred.double().numpy() - gt.double().numpy()).reshape(2, -1).mean(1) * 255
    np.testing.assert_allclose(mae(pred, gt).numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_batched_equals_one_by_one(protocol: str) -> None:
    pred, gt = _pair("smooth", 20, 24, n=3, seed=2)
    gt = 0.1 + 0.8 * gt  # so that the colormamba normalisation changes something
    batched = compute_metrics(pred, gt, protocol)
    assert set(batched) == set(METRIC_NAMES) - {"lpips"}  # LPIPS only with its network
    for i in range(3):
        single = compute_metrics(pred[i:i + 1], gt[i:i + 1], protocol)
        for name in batched:
            assert batched[name].shape == (3,)
            assert batched[name][i].item() == pytest.approx(single[name].item(), rel=1e-12, abs=1e-12)


def _reference_nor(img: np.ndarray) -> np.ndarray:
    """The reference's per-image normalisation of an 8-bit image, as it writes it: shift by the min, then
    divide by the max of the shifted image plus 1e-3 (all on the 0-255 scale)."""
    shifted = img.astype(np.float64) - img.min()
    return shifted / (shifted.max() + 1e-3)


def _dark_8bit_images(n: int = 3, seed: int = 5) -> np.ndarray:
    """(n, 3, H, W) uint8 RGB whose darkest values are 2, 17 and 40, never 0: where `(x - min) / max`
    and the reference's `(x - min) / (max - min)` differ."""
    rng = np.random.default_rng(seed)
    out = np.stack([rng.integers(lo, 230, size=(3, 12, 14)) for lo in (2, 17, 40)][:n]).astype(np.uint8)
    assert sorted(out.reshape(n, -1).min(1)) == [2, 17, 40][:n]
    return out


def test_colormamba_target_is_the_reference_min_max_on_the_255_scale() -> None:
    images = _dark_8bit_images()
    want = np.stack([_reference_nor(img) for img in images])
    gt = torch.from_numpy(images).double() / 255  # what the dataset hands over
    np.testing.assert_allclose(prepare_target(gt, "colormamba").numpy(), want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(prepare_target(gt.float(), "colormamba").numpy(), want, atol=1e-6)  # float32
    # the formula this replaced, (x - min) / (max + 1e-3), is far from it on these images
    flat = gt.flatten(1)
    old = (gt - flat.amin(1).view(-1, 1, 1, 1)) / (flat.amax(1).view(-1, 1, 1, 1) + 1e-3)
    assert np.abs(old.numpy() - want).max() > 0.03
    assert torch.equal(prepare_target(gt, "plain"), gt)


def test_colormamba_protocol_scores_the_reference_target_as_perfect() -> None:
    images = _dark_8bit_images()
    gt = torch.from_numpy(images).double() / 255
    pred = torch.from_numpy(np.stack([_reference_nor(img) for img in images]))  # the reference's target
    got = compute_metrics(pred, gt, "colormamba")
    assert (got["psnr"] > 250).all()  # equal up to float64 rounding (inf where bit-identical)
    assert torch.allclose(got["ssim"], torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert (got["mae"] < 1e-10).all()
    # the reference's AE does not give 0 for identical images: its epsilon leaves a floor per pixel
    p = pred.numpy()
    floor = np.degrees(np.arccos((p * p).sum(1) / ((p * p).sum(1) + 1e-6))).reshape(3, -1).mean(1)
    np.testing.assert_allclose(got["ae"].numpy(), floor, rtol=1e-9)
    assert (got["ae"] > 0).all()


def _reference_ae(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """The reference's AE per image, written from its formula: per pixel
    degrees(arccos(<a, b> / (|a| |b| + 1e-6))), mean over the pixels (no clamp, no special cases)."""
    dot = (pred * gt).sum(1)
    norms = np.sqrt((pred * pred).sum(1)) * np.sqrt((gt * gt).sum(1))
    return np.degrees(np.arccos(dot / (norms + 1e-6))).reshape(pred.shape[0], -1).mean(1)


def test_reference_angular_error_is_the_reference_formula_where_the_two_aes_differ() -> None:
    g = torch.Generator().manual_seed(6)
    gt = torch.rand(2, 3, 8, 7, generator=g, dtype=torch.float64)  # SSIM (in compute_metrics) needs 7x7
    pred = (gt + 0.1 * torch.rand(2, 3, 8, 7, generator=g, dtype=torch.float64)).clamp(0, 1)
    gt[0, :, :2] *= 1e-3  # near-black pixels: the +1e-6 dominates the product of the norms
    pred[0, :, :2] = gt[0, :, :2]  # ... and identical there
    gt[1, :, 0, 0] = 0.0  # black in the ground truth only
    gt[1, :, 1, 1] = pred[1, :, 1, 1] = 0.0  # black in both
    want = _reference_ae(pred.numpy(), gt.numpy())
    np.testing.assert_allclose(reference_angular_error(pred, gt).numpy(), want, rtol=1e-12)
    assert (np.abs(want - angular_error(pred, gt).numpy()) > 1.0).all()  # the definitions differ here
    target = prepare_target(gt, "colormamba")
    assert set(AE_DEFINITIONS) == set(PROTOCOLS)  # metrics.json says which AE it holds
    cm_ae = compute_metrics(pred, gt, "colormamba")["ae"]
    assert cm_ae.tolist() == reference_angular_error(pred, target).tolist()
    plain = compute_metrics(pred, gt, "plain")["ae"]
    assert plain.tolist() == angular_error(pred, gt).tolist()  # inputs in [0, 1]: the clamp changes nothing


def test_protocols_differ_as_documented() -> None:
    _, gt = _pair("smooth", 16, 16, n=1, seed=3)
    gt = 0.2 + 0.6 * gt
    target = prepare_target(gt.double(), "colormamba")
    ref = compute_metrics(target, gt, "colormamba")  # a perfect prediction of the normalised target
    assert torch.isinf(ref["psnr"]).all() and ref["mae"].item() == 0.0
    plain = compute_metrics(target, gt, "plain")
    assert torch.isfinite(plain["psnr"]).all() and plain["mae"].item() > 1.0
    assert compute_metrics(gt, gt, "plain")["ae"].item() == 0.0  # the plain AE: identical images score 0
    # plain clamps the prediction to [0, 1]; colormamba compares the raw float output
    over = gt + 0.3
    assert compute_metrics(over, gt, "plain")["mae"].item() == pytest.approx(
        mae(over.clamp(0, 1), gt).item(), rel=1e-12)
    assert compute_metrics(over, gt, "colormamba")["mae"].item() == pytest.approx(
        mae(over, target).item(), rel=1e-12)


def test_bad_inputs_are_refused() -> None:
    pred, gt = _pair("random", 8, 8)
    with pytest.raises(ValueError, match="protocol"):
        compute_metrics(pred, gt, "vcip")
    with pytest.raises(ValueError, match="gt shape"):
        psnr(pred, gt[:, :, :7])
    with pytest.raises(ValueError, match="pred must have shape"):
        mae(pred[:, :1], gt[:, :1])
    with pytest.raises(ValueError, match="H and W >= 7"):
        ssim(pred[..., :6, :], gt[..., :6, :])


@pytest.mark.parametrize("device", DEVICES)
def test_metrics_stay_on_the_inputs_device(device: str) -> None:
    pred, gt = _pair("smooth", 32, 40, n=2, seed=4)
    cpu = compute_metrics(pred, gt, "colormamba")
    got = compute_metrics(pred.to(device), gt.to(device), "colormamba")
    for name in cpu:
        assert got[name].device.type == device and got[name].dtype == torch.float64
        assert torch.allclose(got[name].cpu(), cpu[name], rtol=1e-9, atol=1e-9)
    assert math.isfinite(got["psnr"][0].item())
