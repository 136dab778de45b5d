"""LPIPS: the plumbing with a random backbone (opt-in by name), the AlexNet file loaded as torchvision's,
and, without the file, a missing value with its reason and no download attempted."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torchvision

from colormamba.lpips_score import ALEXNET_FILE, LPIPS_MIN_SIZE, LPIPSScore


@pytest.fixture(autouse=True)
def no_weights_no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty torch home, and every torch hub download refused: a test that downloads fails."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"download attempted: {args}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tmp_path / "torch_home" / "hub" / "checkpoints" / ALEXNET_FILE.filename


@pytest.fixture(scope="module")
def random_lpips() -> LPIPSScore:
    torch.manual_seed(0)
    return LPIPSScore.load("random")


def _images(n: int = 3, size: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(n, 3, size, size, generator=g, dtype=torch.float64)
    pred = (gt + 0.3 * torch.randn(n, 3, size, size, generator=g, dtype=torch.float64)).clamp(0, 1)
    return pred, gt


def test_identical_images_score_zero_and_different_ones_more(random_lpips: LPIPSScore) -> None:
    pred, gt = _images()
    same = random_lpips(gt, gt)
    assert same.dtype == torch.float64 and same.shape == (3,) and (same == 0).all()
    differ = random_lpips(pred, gt)
    assert (differ > 0).all() and torch.isfinite(differ).all()
    assert random_lpips(pred[1:2], gt[1:2]).item() == pytest.approx(differ[1].item(), rel=1e-5)  # per image


def test_frames_below_alexnets_minimum_are_missing_with_a_reason(random_lpips: LPIPSScore) -> None:
    pred, gt = _images(n=2, size=LPIPS_MIN_SIZE - 1)
    assert torch.isnan(random_lpips(pred, gt)).all()
    assert "smaller than AlexNet's minimum" in random_lpips.reason_for(*gt.shape[-2:])
    assert random_lpips.reason_for(LPIPS_MIN_SIZE, LPIPS_MIN_SIZE) is None


def test_without_the_alexnet_file_lpips_is_missing_with_a_reason() -> None:
    score = LPIPSScore.load("pretrained")  # the fixture refuses any download
    assert not score.available
    assert ALEXNET_FILE.filename in score.reason and "never downloads" in score.reason
    pred, gt = _images(n=2)
    assert torch.isnan(score(pred, gt)).all()
    missing = LPIPSScore.load(Path("/nonexistent/alexnet.pth"))
    assert not missing.available and "/nonexistent/alexnet.pth" in missing.reason


def test_the_alexnet_file_is_loaded_as_torchvisions_features(
    no_weights_no_network: Path, random_lpips: LPIPSScore
) -> None:
    torch.manual_seed(1)
    alexnet = torchvision.models.alexnet(weights=None).eval()
    no_weights_no_network.parent.mkdir(parents=True)
    trunk = {k: v for k, v in alexnet.state_dict().items() if k.startswith("features.")}  # small file
    torch.save(trunk | {"classifier.6.bias": torch.zeros(1000)}, no_weights_no_network)
    score = LPIPSScore.load("pretrained")
    assert score.available and score.reason is None
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        got = score.net.net(x).relu5  # the last tapped layer of the LPIPS trunk
        want = alexnet.features[:12](x)
    torch.testing.assert_close(got, want)
    pred, gt = _images(n=2, size=64)
    assert (score(gt, gt) == 0).all() and (score(pred, gt) > 0).all()
    assert not math.isclose(score(pred, gt)[0].item(), random_lpips(pred, gt)[0].item())  # other weights


def test_a_file_that_is_not_alexnet_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match=r"other\.pth: not a torchvision AlexNet state dict"):
        LPIPSScore.load(path)
