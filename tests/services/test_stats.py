"""services/stats.py: the interval against its formula, Holm against its step-down definition, and the
false-verdict rate and power over simulated studies (benchmarks/sim_report_stats.py's model)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from services.stats import (
    VarianceParts,
    detectable_shift,
    holm,
    minimum_detectable_effect,
    paired_interval,
    seeds_needed,
    variance_parts,
    verdict,
)

ROOT = Path(__file__).resolve().parents[2]


def _load_sim():
    path = ROOT / "benchmarks" / "sim_report_stats.py"
    spec = importlib.util.spec_from_file_location("sim_report_stats", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sim = _load_sim()


# --- the interval, from the math -------------------------------------------------------------------------
# Student's t with 2 degrees of freedom has a closed form: F(t) = 1/2 + t / (2 sqrt(t^2 + 2)), so the
# two-sided p of t is 1 - |t| / sqrt(t^2 + 2), and the quantile with two-sided coverage q is
# q sqrt(2 / (1 - q^2)).


def _t2_quantile(level: float) -> float:
    return level * math.sqrt(2 / (1 - level**2))


def _t2_p(t: float) -> float:
    return 1 - abs(t) / math.sqrt(t * t + 2)


def test_interval_is_the_t_interval_on_per_seed_means() -> None:
    diffs = np.array([[1.0, 2.0], [0.0, 1.0], [2.0, 4.0]])  # 3 seeds x 2 images
    seed_means = [1.5, 0.5, 3.0]
    mean = sum(seed_means) / 3
    sd = math.sqrt(sum((m - mean) ** 2 for m in seed_means) / 2)
    se = sd / math.sqrt(3)
    res = paired_interval(diffs, 0.95)
    assert (res.n_seeds, res.n_images, res.df) == (3, 2, 2)
    assert float(res.mean) == pytest.approx(5 / 3)
    assert float(res.low) == pytest.approx(mean - _t2_quantile(0.95) * se, rel=1e-9)
    assert float(res.high) == pytest.approx(mean + _t2_quantile(0.95) * se, rel=1e-9)
    assert float(res.p_value) == pytest.approx(_t2_p(mean / se), rel=1e-9)
    assert _t2_quantile(0.95) == pytest.approx(4.302653, abs=1e-6)  # the t table's value
    # the old way (6 pairs as independent) would be far narrower: seeds are the units here
    pairs_se = np.std(diffs, ddof=1) / math.sqrt(diffs.size)
    assert float(res.high - res.low) > 2 * (2 * 1.96 * pairs_se)
    assert res.seed_noise_included


def test_one_seed_falls_back_to_per_image_differences() -> None:
    diffs = np.array([[0.2, 0.5, 1.1]])  # 1 seed x 3 images: df 2 again, so the closed form applies
    mean = 0.6
    se = math.sqrt(((0.2 - mean) ** 2 + (0.5 - mean) ** 2 + (1.1 - mean) ** 2) / 2) / math.sqrt(3)
    res = paired_interval(diffs, 0.9)
    assert (res.n_seeds, res.n_images, res.df) == (1, 3, 2)
    assert float(res.low) == pytest.approx(mean - _t2_quantile(0.9) * se, rel=1e-9)
    assert float(res.p_value) == pytest.approx(_t2_p(mean / se), rel=1e-9)
    assert not res.seed_noise_included


def test_degenerate_and_bad_inputs() -> None:
    same = paired_interval(np.zeros((3, 4)), 0.95)
    assert float(same.p_value) == 1.0 and float(same.low) == float(same.high) == 0.0
    single = paired_interval(np.array([[0.3]]), 0.95)
    assert float(single.mean) == pytest.approx(0.3) and np.isnan(single.p_value)
    assert verdict(0.3, float(single.p_value), True, 0.05) == "not testable"
    batch = paired_interval(np.ones((5, 2, 3, 4)), 0.95)
    assert batch.mean.shape == batch.p_value.shape == (5, 2)
    with pytest.raises(ValueError, match="finite"):
        paired_interval(np.array([[1.0, np.nan], [0.0, 1.0]]), 0.95)
    with pytest.raises(ValueError, match="n_seeds, n_images"):
        paired_interval(np.array([1.0, 2.0]), 0.95)
    with pytest.raises(ValueError, match="level"):
        paired_interval(np.ones((2, 2)), 95)


# --- Holm and the verdict --------------------------------------------------------------------------------


def _step_down(p: list[float], alpha: float) -> set[int]:
    """Holm's procedure as stated: reject the smallest while p_(k) <= alpha / (m - k + 1), then stop."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    rejected: set[int] = set()
    for k, i in enumerate(order):
        if p[i] > alpha / (len(p) - k):
            break
        rejected.add(i)
    return rejected


def test_holm_adjusted_p_values_reproduce_the_step_down_procedure() -> None:
    assert holm(np.array([0.01, 0.04, 0.03, 0.005])) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    rng = np.random.default_rng(3)
    for _ in range(200):
        p = rng.uniform(0, 0.1, rng.integers(1, 13)) ** 2  # small values
        p[::4] = p[0]  # and ties
        adjusted = holm(p)
        assert (adjusted >= p).all() and (adjusted <= 1).all()
        for alpha in (0.001, 0.01, 0.05, 0.1):
            assert {i for i in range(len(p)) if adjusted[i] <= alpha} == _step_down(list(p), alpha)
    with_nan = holm(np.array([0.01, np.nan, 0.02]))
    assert np.isnan(with_nan[1]) and with_nan[[0, 2]] == pytest.approx([0.02, 0.02]), "NaN: no comparison"
    np.testing.assert_allclose(holm(np.array([[0.01, 0.02], [0.5, 0.001]])), [[0.02, 0.02], [0.5, 0.002]])
    with pytest.raises(ValueError):
        holm(np.array([0.5, 1.5]))


def test_verdict_follows_the_metric_direction() -> None:
    assert verdict(0.4, 0.01, True, 0.05) == "better"
    assert verdict(0.4, 0.01, False, 0.05) == "worse", "a higher AE is worse"
    assert verdict(-0.4, 0.01, False, 0.05) == "better"
    assert verdict(-0.4, 0.2, True, 0.05) == "inconclusive", "no verdict is not 'no difference'"
    assert verdict(0.4, None, True, 0.05) == "not testable"


# --- the minimum detectable effect -----------------------------------------------------------------------


def test_detectable_shift_is_the_normal_formula_with_many_degrees_of_freedom() -> None:
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)  # 2.80
    assert detectable_shift(100_000, 0.05) == pytest.approx(z, rel=1e-3)
    assert detectable_shift(2, 0.05) > detectable_shift(4, 0.05) > detectable_shift(30, 0.05) > z
    assert detectable_shift(2, 0.05 / 3) > detectable_shift(2, 0.05), "a stricter level needs more"
    with pytest.raises(ValueError):
        detectable_shift(0, 0.05)


@pytest.mark.parametrize(("n_seeds", "seed_sd", "alpha"),
                         [(3, 0.3, 0.05 / 3), (5, 0.05, 0.05), (1, 0.0, 0.05)])  # fmt: skip
def test_an_effect_of_the_mde_is_found_with_80_percent_power(n_seeds: int, seed_sd: float, alpha: float):
    """The claim of a report's `detects >=` column, checked by simulation: studies whose true difference is
    the stated MDE reject at the row's level in 80 % of cases (standard error over 20,000 studies: 0.003)."""
    images, image_sd, studies = 18, 0.5, 20_000
    parts = VarianceParts(seed_sd**2, image_sd**2)
    mde = minimum_detectable_effect(parts, n_seeds, images, alpha)
    rng = np.random.default_rng(n_seeds)
    diffs = (mde + seed_sd * rng.standard_normal((studies, n_seeds, 1))
             + image_sd * rng.standard_normal((studies, n_seeds, images)))  # fmt: skip
    found = (paired_interval(diffs, 1 - alpha).p_value < alpha) & (diffs.mean(axis=(1, 2)) > 0)
    assert found.mean() == pytest.approx(0.8, abs=0.015)
    half = (paired_interval(diffs - mde / 2, 1 - alpha).p_value < alpha).mean()
    assert half < 0.6, "half the MDE is found far less often"


def test_variance_parts_recover_the_simulated_seed_and_image_variance() -> None:
    rng = np.random.default_rng(4)
    seed_sd, image_sd, n = 0.4, 0.3, 4000
    diffs = seed_sd * rng.standard_normal((n, 5, 1)) + image_sd * rng.standard_normal((n, 5, 12))
    parts = [variance_parts(d) for d in diffs]
    assert np.mean([p.image for p in parts]) == pytest.approx(image_sd**2, rel=0.02)
    assert np.mean([p.seed for p in parts]) == pytest.approx(seed_sd**2, rel=0.05)
    one = variance_parts(diffs[0, :1])
    assert np.isnan(one.seed) and one.image > 0, "one seed: training noise cannot be estimated"
    assert one.unit_sd(1, 12) == pytest.approx(np.sqrt(one.image))


def test_seeds_needed_is_the_first_design_whose_mde_reaches_the_effect() -> None:
    parts = VarianceParts(2 * 0.3**2, 2 * 0.35**2)
    n = seeds_needed(parts, 18, 1.0, 0.05 / 3)
    assert n is not None and n > 3
    assert minimum_detectable_effect(parts, n, 18, 0.05 / 3) <= 1.0
    assert minimum_detectable_effect(parts, n - 1, 18, 0.05 / 3) > 1.0
    assert seeds_needed(parts, 18, 0.001, 0.05, most=10) is None


# --- simulated studies -----------------------------------------------------------------------------------
# 3 configurations against a baseline, 4 metrics correlated 0.5, 3 seeds x 18 images, image difficulty
# 2.5 dB shared by every run, per-run per-image noise 0.35 dB. 4000 studies: the binomial standard error of
# a family-wise rate near 5 % is 0.34 percentage points, so the 7 % bound sits 6 standard errors above it.

STUDIES = 4000


def _family_wise_rate(method: str, seed_sd: float, seed: int) -> float:
    rng = np.random.default_rng(seed)
    y = sim.simulate(rng, STUDIES, seed_sd=seed_sd)
    p, correct = sim.method_p(method, y, rng, resamples=1000)
    return float(sim.false_verdicts(p, correct).any(axis=1).mean())


@pytest.mark.parametrize("seed_sd", [0.0, 0.1, 0.3])
def test_family_wise_false_verdicts_stay_near_five_percent(seed_sd: float) -> None:
    rate = _family_wise_rate("t_seed_means", seed_sd, seed=int(seed_sd * 10))
    assert rate <= 0.07, f"{rate:.3f} of null studies got a false verdict at {seed_sd} dB seed noise"
    assert rate >= 0.02, "Holm at 5 % over correlated comparisons is conservative, not silent"


def test_the_old_report_calls_false_differences_under_seed_noise() -> None:
    """The contrast: one seed, percentile bootstrap over images, no correction (the report before)."""
    assert _family_wise_rate("old_one_seed", 0.1, seed=11) > 0.5


def test_a_real_effect_is_found() -> None:
    """Configuration 1 better by the effect on every metric, small training noise (0.05 dB)."""
    rng = np.random.default_rng(7)
    two_db = sim.power("t_seed_means", rng, 1000, 0, seeds=3, effect=2.0, seed_sd=0.05)
    one_db = sim.power("t_seed_means", rng, 1000, 0, seeds=3, effect=1.0, seed_sd=0.05)
    one_db_5 = sim.power("t_seed_means", rng, 1000, 0, seeds=5, effect=1.0, seed_sd=0.05)
    assert two_db["found_psnr"] >= 0.9
    assert one_db["found_any"] >= 0.8, "1 dB: found on at least one metric"
    assert 0.3 <= one_db["found_psnr"] <= 0.8, "3 seeds leave 2 df: 1 dB on PSNR alone is a coin toss"
    assert one_db_5["found_psnr"] >= 0.95


def test_simulation_script_prints_its_lines(capsys: pytest.CaptureFixture[str]) -> None:
    sim.main(["--studies", "40", "--bootstrap-studies", "20", "--resamples", "50"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    null = [r for r in lines if r["bench"] == "report_stats_null"]
    assert {r["method"] for r in null} == set(sim.NULL_METHODS)
    assert all(0 <= r["fwer"] <= 1 and r["studies"] in (20, 40) for r in null)
    assert sum(r["bench"] == "report_stats_power" for r in lines) == 3 * len(sim.POWER_CASES)
    question = [r for r in lines if r["bench"] == "report_stats_question"]
    grid = len(sim.QUESTION_SEEDS) * len(sim.QUESTION_SEED_SD) * len(sim.QUESTION_EFFECTS)
    assert len(question) == grid and all(0 <= r["false_question"] <= 1 for r in question)


def test_the_question_rule_holds_its_rate_and_states_the_power_it_has() -> None:
    """Holm over the question's comparisons only: at most 5 % false verdicts on it, 5 % per exploratory row,
    and an effect of the reported MDE found about 80 % of the time."""
    rng = np.random.default_rng(21)
    null = sim.question_rule(rng, 3000, seeds=3, seed_sd=0.3, effect=0.0)
    assert 0.02 <= null["false_question"] <= 0.065 and 0.035 <= null["false_exploratory_row"] <= 0.065
    mde = minimum_detectable_effect(VarianceParts(2 * 0.3**2, 2 * 0.35**2), 5, 18, 0.05 / 3)
    at_mde = sim.question_rule(rng, 3000, seeds=5, seed_sd=0.3, effect=mde)
    assert at_mde["mde_true"] == pytest.approx(mde, abs=1e-3)
    assert at_mde["found_psnr"] == pytest.approx(0.8, abs=0.04)
