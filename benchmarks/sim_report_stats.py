"""How often does a comparison report call a difference that is not there, and find one that is? JSON lines.

    python benchmarks/sim_report_stats.py                 # the figures quoted in services/stats.py
    python benchmarks/sim_report_stats.py --studies 500   # quicker, coarser

Simulated studies, each a table like the report's: a baseline and --variants configurations, --metrics
metrics, --seeds seeds, --images images of the reporting split. One value per (configuration, seed, image,
metric), in dB-like units (every method here is scale-free per metric, so one scale serves all):

    y[c, s, i, k] = difficulty[i, k] + effect[c, k] + seed_sd * u[c, s, k] + noise_sd * e[c, s, i, k]

difficulty: the image's own level (sd --image-sd, 2.5 dB: PSNR's spread over images), shared by every run;
u: the run's offset (training noise), mixed with a part shared by the same seed of every configuration
(--shared-seed-corr: same initialisation and data order); e: the run's per-image noise. Each of
difficulty, u and e is correlated --metric-corr across metrics (PSNR, SSIM, AE and MAE move together).

Methods, each giving one verdict per (variant, metric) at alpha 0.05:

    old_one_seed      seed 0 only, percentile bootstrap over the (seed, image) pairs, no correction
                      (the report before services/stats.py)
    old_pooled        the same over all seeds' pairs pooled (the old code run on a 3-seed study)
    hier_percentile   seeds resampled, then images within each drawn seed; percentile p, Holm
    bca_seed_means    scipy.stats.bootstrap BCa on the per-seed means; per-comparison rate only
    welch_unpaired    Welch t on each configuration's per-seed means (seeds not paired), Holm
    t_seed_means      services.stats.paired_interval (t on per-seed mean differences), Holm

The study's question (services/report/collect.py, the rule reports use): Holm over the primary metric's
comparisons only (each variant against the baseline on PSNR), every other metric exploratory at the raw
p < 0.05. For seeds 3 / 5 / 8 x seed noise 0.05 / 0.3 dB x effect 0 / 0.5 / 1 / 2 dB (variant 1 better by
the effect on every metric, the others equal to the baseline): the share of studies with a false verdict
on the question, the share in which variant 1 is called better on PSNR (power), and the minimum detectable
effect the report states for variant 1's PSNR row (median over studies) beside the one computed from the
true variances.

Lines: {"bench": "report_stats_null", method, variants, seed_sd, shared_seed_corr, noisy_factor, fwer
(share of studies with at least one false verdict), fwer_se (its binomial standard error), per_comparison
(share of false verdicts among all), studies}, then {"bench": "report_stats_power", method, seeds, effect,
seed_sd, shared_seed_corr, found_psnr (variant 1 called better on its first metric), found_any (on at
least one metric), studies}, then {"bench": "report_stats_question", seeds, seed_sd, effect,
false_question (share of studies with a false verdict among the question's rows: a non-effect variant
called better or worse, or variant 1 called worse), false_exploratory_row (share of the other metrics'
rows of the non-effect variants with a verdict), found_psnr, mde_reported_median, mde_true, studies}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.stats import VarianceParts, holm, minimum_detectable_effect, paired_interval, variance_parts

ALPHA = 0.05


def _correlated(rng: np.random.Generator, shape: tuple[int, ...], corr: float) -> np.ndarray:
    """Standard normals over shape whose last axis (metrics) is equicorrelated `corr`."""
    common = rng.standard_normal((*shape[:-1], 1))
    return np.sqrt(corr) * common + np.sqrt(1 - corr) * rng.standard_normal(shape)


def simulate(rng: np.random.Generator, studies: int, *, variants: int = 3, metrics: int = 4, seeds: int = 3,
             images: int = 18, seed_sd: float = 0.0, noise_sd: float = 0.35, image_sd: float = 2.5,
             metric_corr: float = 0.5, shared_seed_corr: float = 0.0, effect: float = 0.0,
             noisy_factor: float = 1.0) -> np.ndarray:  # fmt: skip
    """Per-image values (studies, 1 + variants, metrics, seeds, images); configuration 0 is the baseline,
    configuration 1 is `effect` better on every metric and has `noisy_factor` times the training noise
    (its own part), the others equal the baseline."""
    n, c = studies, 1 + variants
    difficulty = image_sd * _correlated(rng, (n, 1, 1, images, metrics), metric_corr)
    shared = _correlated(rng, (n, 1, seeds, 1, metrics), metric_corr)
    own = _correlated(rng, (n, c, seeds, 1, metrics), metric_corr)
    own[:, 1] *= noisy_factor
    offset = seed_sd * (np.sqrt(shared_seed_corr) * shared + np.sqrt(1 - shared_seed_corr) * own)
    noise = noise_sd * _correlated(rng, (n, c, seeds, images, metrics), metric_corr)
    y = difficulty + offset + noise
    y[:, 1] += effect
    return np.moveaxis(y, -1, 2)  # (studies, configurations, metrics, seeds, images)


def differences(y: np.ndarray) -> np.ndarray:
    """(studies, variants, metrics, seeds, images): each configuration minus the baseline, paired."""
    return y[:, 1:] - y[:, :1]


def _bootstrap_p(d: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Two-sided percentile p of the bootstrap means (the test the percentile interval inverts).

    d: (..., seeds, images); weights: (resamples, seeds * images), each row summing to 1."""
    flat = d.reshape(*d.shape[:-2], -1)
    means = flat @ weights.T
    below, above = (means <= 0).mean(axis=-1), (means >= 0).mean(axis=-1)
    return np.minimum(1.0, 2 * np.minimum(below, above))


def pair_weights(rng: np.random.Generator, seeds: int, images: int, resamples: int) -> np.ndarray:
    """Resampling the (seed, image) pairs as if independent (the old report)."""
    n = seeds * images
    return rng.multinomial(n, np.full(n, 1 / n), size=resamples) / n


def hierarchical_weights(rng: np.random.Generator, seeds: int, images: int, resamples: int) -> np.ndarray:
    """Seeds drawn with replacement, then images with replacement within each drawn seed."""
    w = np.zeros((resamples, seeds, images))
    drawn = rng.integers(0, seeds, size=(resamples, seeds))
    counts = rng.multinomial(images, np.full(images, 1 / images), size=(resamples, seeds))
    for j in range(seeds):
        np.add.at(w, (np.arange(resamples), drawn[:, j]), counts[:, j])
    return w.reshape(resamples, -1) / (seeds * images)


def false_verdicts(p: np.ndarray, correct: bool) -> np.ndarray:
    """(studies, comparisons) booleans under the null: a verdict made (Holm-adjusted if `correct`)."""
    flat = p.reshape(p.shape[0], -1)
    return (holm(flat) if correct else flat) < ALPHA


def method_p(name: str, y: np.ndarray, rng: np.random.Generator, resamples: int) -> tuple[np.ndarray, bool]:
    """Per-comparison p-values (studies, variants, metrics) of a method, and whether it applies Holm."""
    d = differences(y)
    seeds, images = d.shape[-2:]
    if name == "old_one_seed":
        return _bootstrap_p(d[..., :1, :], pair_weights(rng, 1, images, resamples)), False
    if name == "old_pooled":
        return _bootstrap_p(d, pair_weights(rng, seeds, images, resamples)), False
    if name == "hier_percentile":
        return _bootstrap_p(d, hierarchical_weights(rng, seeds, images, resamples)), True
    if name == "bca_seed_means":
        res = stats.bootstrap((d.mean(axis=-1),), np.mean, axis=-1, n_resamples=resamples, method="BCa",
                              confidence_level=1 - ALPHA, random_state=rng, vectorized=True)  # fmt: skip
        low, high = res.confidence_interval
        return np.where((low > 0) | (high < 0), 0.0, 1.0), False  # the interval's verdict, as a p
    if name == "welch_unpaired":
        seed_means = y.mean(axis=-1)  # (studies, configurations, metrics, seeds)
        test = stats.ttest_ind(seed_means[:, 1:], seed_means[:, :1], axis=-1, equal_var=False)
        return test.pvalue, True
    if name == "t_seed_means":
        return paired_interval(d, 1 - ALPHA).p_value, True
    raise ValueError(f"unknown method {name!r}")


NULL_METHODS = ("old_one_seed", "old_pooled", "hier_percentile", "bca_seed_means", "welch_unpaired",
                "t_seed_means")  # fmt: skip
# (simulate's arguments, methods): every method at 0 / 0.1 / 0.3 dB training noise; then paired against
# unpaired seeds with a part of the noise shared by the same seed, and in a one-variant table whose
# variant trains 10x less reliably than the baseline
PAIRING = ("welch_unpaired", "t_seed_means")
NULL_CASES = (*(({"seed_sd": sd}, NULL_METHODS) for sd in (0.0, 0.1, 0.3)),
              *(({"seed_sd": sd, "shared_seed_corr": 0.5}, PAIRING) for sd in (0.1, 0.3)),
              ({"seed_sd": 0.1, "noisy_factor": 10.0, "variants": 1}, PAIRING))  # fmt: skip
# (method, seeds, seed_sd, shared_seed_corr): small training noise with 3 and 5 seeds; then paired against
# unpaired seeds where training noise matters, with and without a part shared by the same seed
POWER_CASES = (("t_seed_means", 3, 0.05, 0.0), ("t_seed_means", 5, 0.05, 0.0),
               ("t_seed_means", 3, 0.3, 0.0), ("welch_unpaired", 3, 0.3, 0.0),
               ("t_seed_means", 3, 0.3, 0.5), ("welch_unpaired", 3, 0.3, 0.5))  # fmt: skip
BOOTSTRAPS = {"old_one_seed", "old_pooled", "hier_percentile", "bca_seed_means"}


def null_rates(method: str, rng: np.random.Generator, studies: int, resamples: int, **sim) -> dict:
    """The family-wise and per-comparison false-verdict rates with no true difference."""
    y = simulate(rng, studies, **sim)
    p, correct = method_p(method, y, rng, resamples)
    made = false_verdicts(p, correct)
    fwer = float(made.any(axis=1).mean())
    return {"fwer": round(fwer, 4), "fwer_se": round(float(np.sqrt(fwer * (1 - fwer) / studies)), 4),
            "per_comparison": round(float(made.mean()), 4), "studies": studies}  # fmt: skip


def power(method: str, rng: np.random.Generator, studies: int, resamples: int, **sim) -> dict:
    """How often configuration 1 (better by sim['effect'] on every metric) is called better."""
    y = simulate(rng, studies, **sim)
    p, correct = method_p(method, y, rng, resamples)
    flat = p.reshape(studies, -1)
    adjusted = (holm(flat) if correct else flat).reshape(p.shape)
    better = (adjusted[:, 0] < ALPHA) & (differences(y)[:, 0].mean(axis=(-1, -2)) > 0)  # (studies, metrics)
    return {"found_psnr": round(float(better[:, 0].mean()), 4),
            "found_any": round(float(better.any(axis=1).mean()), 4), "studies": studies}  # fmt: skip


QUESTION_SEEDS = (3, 5, 8)
QUESTION_SEED_SD = (0.05, 0.3)
QUESTION_EFFECTS = (0.0, 0.5, 1.0, 2.0)


def question_rule(rng: np.random.Generator, studies: int, *, seeds: int, seed_sd: float, effect: float,
                  noise_sd: float = 0.35, images: int = 18) -> dict:  # fmt: skip
    """The report's rule on simulated studies: Holm over the variants' PSNR rows (metric 0), the other
    metrics exploratory at raw p < ALPHA; variant 1 is `effect` better on every metric."""
    y = simulate(rng, studies, seeds=seeds, seed_sd=seed_sd, effect=effect, noise_sd=noise_sd, images=images)
    d = differences(y)  # (studies, variants, metrics, seeds, images)
    res = paired_interval(d, 1 - ALPHA)
    question = holm(res.p_value[:, :, 0]) < ALPHA  # (studies, variants)
    up = res.mean[:, :, 0] > 0
    false_question = (question[:, 1:].any(axis=1)) | (question[:, 0] & ~up[:, 0])
    exploratory = res.p_value[:, 1:, 1:] < ALPHA  # the non-effect variants' other metrics
    m = d.shape[1]
    reported = [minimum_detectable_effect(variance_parts(study[0, 0]), seeds, images, ALPHA / m)
                for study in d[: min(studies, 400)]]  # fmt: skip
    # the true parts of a paired difference: each run's offset and per-image noise, twice
    true = VarianceParts(2 * seed_sd**2, 2 * noise_sd**2)
    return {"false_question": round(float(false_question.mean()), 4),
            "false_exploratory_row": round(float(exploratory.mean()), 4),
            "found_psnr": round(float((question[:, 0] & up[:, 0]).mean()), 4),
            "mde_reported_median": round(float(np.median(reported)), 3),
            "mde_true": round(minimum_detectable_effect(true, seeds, images, ALPHA / m), 3),
            "studies": studies}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=4000, help="simulated studies (t and Welch methods)")
    ap.add_argument("--bootstrap-studies", type=int, default=1000, help="simulated studies (bootstraps)")
    ap.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    for sim, methods in NULL_CASES:
        case = {"variants": 3, "shared_seed_corr": 0.0, "noisy_factor": 1.0, **sim}
        for method in methods:
            n = args.bootstrap_studies if method in BOOTSTRAPS else args.studies
            out = null_rates(method, rng, n, args.resamples, **case)
            print(json.dumps({"bench": "report_stats_null", "method": method, **case, **out}), flush=True)
    for method, seeds, seed_sd, shared in POWER_CASES:
        for effect in (0.5, 1.0, 2.0):
            out = power(method, rng, args.studies, args.resamples, seeds=seeds, effect=effect,
                        seed_sd=seed_sd, shared_seed_corr=shared)  # fmt: skip
            print(json.dumps({"bench": "report_stats_power", "method": method, "seeds": seeds,
                              "effect": effect, "seed_sd": seed_sd, "shared_seed_corr": shared, **out}),
                  flush=True)  # fmt: skip
    for seeds in QUESTION_SEEDS:
        for seed_sd in QUESTION_SEED_SD:
            for effect in QUESTION_EFFECTS:
                out = question_rule(rng, args.studies, seeds=seeds, seed_sd=seed_sd, effect=effect)
                print(json.dumps({"bench": "report_stats_question", "seeds": seeds, "seed_sd": seed_sd,
                                  "effect": effect, **out}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
