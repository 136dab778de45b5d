"""colormamba.losses.calibration (the weight rule, the output gradients) and the calibration script."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from colormamba.data.synthetic import make_synthetic_dataset
from colormamba.imaging import normalize_per_image, rgb_to_hsv
from colormamba.losses.calibration import (
    BASELINE_TERMS,
    CONFIGURATIONS,
    REFERENCE,
    GradientSample,
    balanced_weights,
    derive_weights,
    gradient_sample,
    histogram_distance_scales,
    histogram_term,
    output_gradients,
    round_significant,
)
from colormamba.losses.config import CompositeLoss
from colormamba.losses.histogram import HISTOGRAM_DISTANCES
from colormamba.losses.terms import hsv_loss
from colormamba.losses.vgg import VGGPerceptualLoss

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "calibrate_loss_weights.py"
SHAPE = (2, 3, 32, 32)


@pytest.fixture(scope="module")
def vgg() -> VGGPerceptualLoss:
    torch.manual_seed(0)
    return VGGPerceptualLoss("random")


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random outputs (RGB in (0, 1), HSV in (-1, 1)) and a target, as a generator at init gives them."""
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(SHAPE, generator=g)
    hsv = torch.rand(SHAPE, generator=g) * 2 - 1
    target = torch.rand(SHAPE, generator=g)
    return rgb, hsv, target


@pytest.fixture(scope="module")
def batches() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return [_batch(seed) for seed in (1, 2)]


@pytest.fixture(scope="module")
def samples(vgg, batches) -> list[GradientSample]:
    return [gradient_sample(*b, vgg_weights=vgg, histogram_distances=HISTOGRAM_DISTANCES) for b in batches]


def test_mse_gradient_norm_is_the_hand_computed_one() -> None:
    rgb, _, target = _batch(7)
    grads = output_gradients(rgb, None, target, terms=["mse"])
    norms = {t: float(g.double().norm()) for t, g in grads.items()}
    # d mean((p - t)^2) / dp = 2 (p - t) / N, with t the per-image normalised target
    expected = (2 * (rgb - normalize_per_image(target)) / rgb.numel()).double().norm().item()
    assert norms == {"mse": pytest.approx(expected, rel=1e-6)}
    raw_grad = output_gradients(rgb, None, target, terms=["mse"], normalize_target=False)["mse"]
    raw = float(raw_grad.double().norm())
    assert raw == pytest.approx((2 * (rgb - target) / rgb.numel()).double().norm().item(), rel=1e-6)


def test_hsv_gradient_is_taken_against_the_normalised_targets_hsv() -> None:
    rgb, hsv, target = _batch(8)
    leaf = hsv.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(hsv_loss(leaf, rgb_to_hsv(normalize_per_image(target))), leaf)
    grads = output_gradients(rgb, hsv, target, terms=["hsv"])
    assert list(grads) == ["hsv"]
    torch.testing.assert_close(grads["hsv"], expected)


def test_reference_is_the_gradient_of_the_weighted_sum(samples) -> None:
    for sample in samples:
        assert sample.norms()[REFERENCE] == pytest.approx(
            sample.rgb_norm(dict.fromkeys(BASELINE_TERMS, 20.0)), rel=1e-5
        )
        # and not the sum of the terms' norms (the gradients are not parallel)
        assert sample.reference_norm < 20 * sum(sample.norm(t) for t in BASELINE_TERMS) * (1 - 1e-3)


def test_original_is_the_references_weights(samples) -> None:
    weights = balanced_weights(samples)
    assert weights["original"] == {"mse": 20.0, "cosine": 20.0, "msssim": 20.0, "hsv": 1.0}
    assert set(weights) == set(CONFIGURATIONS)
    assert all(w["hsv"] == 1.0 for w in weights.values())
    for name, w in weights.items():
        assert set(w) == {*CONFIGURATIONS[name], "hsv"}
        assert all(v == round_significant(v) > 0 for v in w.values())


def test_every_configuration_keeps_the_references_rgb_to_hsv_balance(vgg, batches, samples) -> None:
    """Recomputed with the project's CompositeLoss and autograd, independently of the Gram matrices."""
    derived = derive_weights(samples)
    hsv_norm = sum(s.hsv_norm for s in samples) / len(samples)
    reference = sum(s.rgb_norm(dict.fromkeys(BASELINE_TERMS, 20.0)) for s in samples) / len(samples)
    assert derived.balance == pytest.approx(reference / hsv_norm, rel=1e-12)
    for name, weights in derived.weights.items():
        rgb_weights = {t: w for t, w in weights.items() if t != "hsv"}
        loss = CompositeLoss(rgb_weights, vgg_weights="random", vgg_layers=("relu1_1",))  # cheap to build ...
        if loss.vgg is not None:
            loss.vgg = vgg  # ... and replaced by the VGG the samples were measured with
        norms = []
        for rgb, _, target in batches:
            leaf = rgb.clone().requires_grad_(True)
            total, _ = loss(leaf, None, normalize_per_image(target))
            (grad,) = torch.autograd.grad(total, leaf)
            norms.append(grad.double().norm().item())
        assert sum(norms) / len(norms) / hsv_norm == pytest.approx(derived.balance, rel=1e-2), name


def test_added_terms_match_the_baselines_mean_weighted_norm(samples) -> None:
    derived = derive_weights(samples)
    baseline_mean = sum(20.0 * derived.mean_norms[t] for t in BASELINE_TERMS) / 3
    for name, terms in CONFIGURATIONS.items():
        for term in set(terms) - set(BASELINE_TERMS):  # before the common factor: exactly
            assert derived.unscaled[name][term] * derived.mean_norms[term] == pytest.approx(baseline_mean)
    # after it, in `combined`: each added term's weighted norm is the common factor (cosine's weight / 20)
    # times the baseline's mean weighted norm
    combined = derived.weights["combined"]
    factor = combined["cosine"] / 20.0
    assert factor == pytest.approx(derived.scale["combined"], rel=1e-2)
    for term in ("vgg", "histogram"):
        assert combined[term] * derived.mean_norms[term] == pytest.approx(factor * baseline_mean, rel=1e-2)


def test_histogram_distance_scales_equalise_the_gradient_norms(samples) -> None:
    scales = histogram_distance_scales(samples)
    assert list(scales) == list(HISTOGRAM_DISTANCES) and scales["w1"] == 1.0

    def mean(term: str) -> float:
        return sum(s.norm(term) for s in samples) / len(samples)

    for d, scale in scales.items():
        assert scale * mean(histogram_term(d)) == pytest.approx(mean(histogram_term("w1")), rel=1e-2)
    # `histogram` is the w1 term at its scale of 1
    assert mean("histogram") == pytest.approx(mean(histogram_term("w1")))


def test_gradient_sample_round_trips_through_json(samples) -> None:
    sample = samples[0]
    again = GradientSample.from_dict(json.loads(json.dumps(sample.to_dict())))
    assert again == sample
    assert again.rgb_norm({"vgg": 3.0, "cosine": 2.0}) == sample.rgb_norm({"vgg": 3.0, "cosine": 2.0})


def test_bad_inputs_are_refused() -> None:
    rgb, _, target = _batch(9)
    with pytest.raises(ValueError, match="unknown terms"):
        output_gradients(rgb, None, target, terms=["nope"])
    with pytest.raises(ValueError, match="pred_hsv"):
        output_gradients(rgb, None, target, terms=["hsv"])
    with pytest.raises(ValueError, match="histogram distances"):
        output_gradients(rgb, None, target, terms=["mse"], histogram_distances=["l7"])
    with pytest.raises(ValueError, match="no gradient samples"):
        derive_weights([])
    assert math.isnan(GradientSample((), (), 1.0).reference_norm)


# ---------------------------------------------------------------------------------------------------
# the script


def _load_script():
    spec = importlib.util.spec_from_file_location("calibrate_loss_weights", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_is_deterministic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _load_script()
    data = make_synthetic_dataset(tmp_path / "vcip", n_train=4, n_val=0, n_test=0, size=32, seed=3)
    out = tmp_path / "cal.json"
    args = ["--data", str(data), "--model", "tiny", "--batches", "1", "--batch-size", "1",
            "--inits", "0", "1", "--vgg-weights", "random", "--out", str(out)]  # fmt: skip
    records = []
    for _ in range(2):
        assert script.main(args) == 0
        records.append(json.loads(out.read_text()))
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [ln["bench"] for ln in lines] == ["loss_calibration"] * 2 + ["loss_calibration_summary"]
    first, second = ({k: v for k, v in r.items() if k != "run"} for r in records)
    assert first == second
    setup = first["setup"]
    assert (setup["model"], setup["dataset"], setup["pairs"]) == ("tiny", "vcip", 4)
    assert setup["vgg_weights"] == "random" and setup["batch_size"] == 1
    assert setup["image_size"] == [32, 32] and setup["inits"] == [0, 1]
    assert first["weights"]["original"] == {"mse": 20.0, "cosine": 20.0, "msssim": 20.0, "hsv": 1.0}
    assert first["norms"]["hsv"]["min"] <= first["norms"]["hsv"]["mean"] <= first["norms"]["hsv"]["max"]
    assert len(first["samples"]) == 2
    assert records[0]["run"]["seconds"] > 0 and "--vgg-weights random" in records[0]["run"]["command"]


def test_script_refuses_missing_vgg_weights_and_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    script = _load_script()
    monkeypatch.setenv("COLORMAMBA_VGG_WEIGHTS", str(tmp_path / "absent.pth"))
    data = make_synthetic_dataset(tmp_path / "vcip", n_train=2, n_val=0, n_test=0, size=32, seed=3)
    assert script.main(["--data", str(data), "--model", "tiny", "--batch-size", "1", "--batches", "1"]) == 2
    assert "--vgg-weights random" in capsys.readouterr().err
    assert script.main(["--data", str(tmp_path / "none"), "--vgg-weights", "random"]) == 2
    assert "dataset folder" in capsys.readouterr().err
    assert script.main(["--data", str(data), "--model", "tiny", "--batches", "2", "--batch-size", "2",
                        "--vgg-weights", "random"]) == 2  # fmt: skip
    assert "need 4 pairs" in capsys.readouterr().err


def test_the_presets_are_the_committed_calibration_s_weights() -> None:
    """LOSS_PRESETS and HISTOGRAM_DISTANCE_SCALE are what the rule derives from the committed measurement
    (its per-batch Gram matrices), so the defaults are measured, and stay so when the rule changes.
    `combined` is the calibrated starting point of the sweep that tunes jobs/specs/loss_study.yaml."""
    from colormamba.losses.config import LOSS_PRESETS
    from colormamba.losses.histogram import HISTOGRAM_DISTANCE_SCALE

    results = json.loads((ROOT / "benchmarks/results/2026-12-07_cpu/loss_calibration.json").read_text())
    samples = [GradientSample.from_dict(s) for s in results["samples"]]
    assert balanced_weights(samples) == LOSS_PRESETS == results["weights"]
    scales = results["histogram_distance_scales"]
    assert histogram_distance_scales(samples) == HISTOGRAM_DISTANCE_SCALE == scales
    assert results["setup"]["model"] == "paper" and results["setup"]["image_size"] == [256, 256]
