"""The statistics of a comparison report: the interval of a paired difference and the table's verdicts.

Pure functions on arrays (no store, no report layout); `services/report/collect.py` arranges the
per-image rows into the arrays these take. docs/evaluation.md ("What a comparison report holds",
"Seeds") states what is asked: run-to-run training noise inside the interval, and a correction for the
many verdicts of a table.

What is estimated. `diffs[s, i]` is variant minus baseline for seed s and image i of the reporting split.
The images are the same in every run, so image difficulty (PSNR spreads 2-3 dB over images) cancels. The
target is the mean difference over *these* images, averaged over training seeds: the published tables
compare on a fixed test split, and the question the seeds answer is whether a loss beats the baseline
beyond the luck of one training run.

The interval (two-stage sampling: seeds, then images within them). With several seeds, each seed's mean
difference over the images, m_s = mean_i diffs[s, i], is one independent draw: its spread across seeds
holds both the training noise and the per-image noise of that run (the two stages a hierarchical bootstrap
resamples). The interval is the t interval on the m_s with n_seeds - 1 degrees of freedom,

    mean(m) +- t_{n_seeds-1, 1-alpha/2} * sd(m) / sqrt(n_seeds),

and the p-value is that same t statistic's two-sided p, so a verdict and its interval never disagree. With
one seed, training noise cannot be estimated at all: the t interval is then over the per-image differences
(n_images - 1 df), and the verdicts speak for these two trained networks only (the report says so).

Figures (benchmarks/sim_report_stats.py, output in benchmarks/results_report_stats.jsonl): 3 configurations
against a baseline, 4 metrics correlated 0.5, 3 seeds x 18 images, image difficulty 2.5 dB shared by all
runs, per-run per-image noise 0.35 dB, per-seed offsets of sd 0 / 0.1 / 0.3 dB; 4000 simulated studies for
the t methods (binomial standard error <= 0.4 percentage points), 1000 for the bootstraps (<= 1.6). Share
of studies with at least one false "better"/"worse" among the table's 12 verdicts when nothing differs:

    old: one seed, percentile bootstrap over images, no correction     52 % /  90 % / 100 %
    old code on 3 seeds (the 54 pairs as independent), no correction   41 % /  85 % / 100 %
    hierarchical percentile bootstrap (seeds, then images), Holm        3 % /  21 % /  69 %
    BCa (scipy.stats.bootstrap) on the 3 seed means, per comparison    28 % /  28 % /  28 %
    t on the per-seed mean differences (this module), Holm            4.4 % / 5.1 % / 5.0 %

Why not the bootstrap: 3 seeds give 10 distinct seed resamples; the bootstrap's spread of the seed means is
the plug-in one (times (n-1)/n), read off quantiles that behave like the normal's 1.96 where the exact
2-df quantile is 4.30. The t interval is exact when the per-seed means are normal (means over 18 images).

Pairing by seed. Run s of both configurations shares initialisation, data order and augmentation draws;
the paired t on m_s is exact whatever part of the training noise the two runs share and whatever each
configuration's own noise. The alternative, Welch's t on each configuration's seed means (unpaired), has
up to twice the degrees of freedom, so where the same seed shares little it finds more (a 2 dB effect at
0.3 dB seed noise: 62 % against 24 % paired; with half the noise shared, 66 % against 42 %), but its
estimated degrees of freedom make it liberal when one configuration trains far less reliably than the
baseline (10x the seed noise, a one-variant table: 7.6 % family-wise against 5.6 % paired). A report that
must not call an unstable loss "better" by luck pairs; the cure for power is more seeds, not a looser test.

The question, and what is corrected. A study names one primary metric and the configurations it asks about
(services.spec.Question: default PSNR, every configuration against the baseline). Holm's step-down
adjustment runs over those comparisons only, and holds the family-wise error rate at alpha under any
dependence between them (the variants share the baseline); every other row (other metrics, configurations
outside the question) is exploratory: its verdict uses the raw p-value and the report marks it so. Correcting
the whole table (every variant x every metric, as an earlier report did) asked 3 seeds for |t| > 15.4 on
2 df over 12 comparisons: a real 1 dB gain at 0.3 dB seed noise was called 6 % of the time.

Verdicts: "better"/"worse" when the (adjusted) p-value is below alpha, else "inconclusive", never "no
difference": each row states its minimum detectable effect, the true difference its design finds with 80 %
power (`minimum_detectable_effect`: noncentral t at Holm's first-step level alpha/m for the question), from
the seed and image variance the row observed (`variance_parts`), and how many seeds and images went each way.

Figures of the question rule (benchmarks/sim_report_stats.py, 4000 simulated studies a cell, committed in
benchmarks/results_report_stats.jsonl; 3 variants against a baseline, PSNR the question, 18 images, 0.35 dB
per-image noise; variant 1 better by the effect on every metric). False: share of studies with a false
verdict on the question; found: variant 1 called better on PSNR; MDE: the one stated from the true
variances (the report's own, from 3 seeds' observed variance, has a median 2-25 % lower: three seeds
underestimate a spread more often than not):

    seeds  seed noise   false (effect 0)   found at 0.5 / 1 / 2 dB     MDE
      3     0.05 dB          3.9 %          50 % /  94 % / 100 %     0.77 dB
      3     0.3  dB          4.1 %           8 % /  25 % /  64 %     2.49 dB
      5     0.05 dB          3.6 %          99 % / 100 % / 100 %     0.31 dB
      5     0.3  dB          3.9 %          26 % /  80 % / 100 %     1.01 dB
      8     0.05 dB          4.2 %         100 % / 100 % / 100 %     0.20 dB
      8     0.3  dB          3.4 %          56 % /  99 % / 100 %     0.64 dB

An exploratory row is called falsely in 4.7-5.3 % of studies, as its raw 5 % level says.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats


@dataclass(frozen=True)
class PairedInterval:
    """The interval of a mean paired difference; arrays of the input's leading shape (NaN: not testable)."""

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p_value: np.ndarray  # two-sided, unadjusted, from the same t statistic as the interval
    df: int  # n_seeds - 1, or n_images - 1 with one seed
    n_seeds: int
    n_images: int

    @property
    def seed_noise_included(self) -> bool:
        """Whether run-to-run training noise is inside the interval (it needs two seeds at least)."""
        return self.n_seeds >= 2


def paired_interval(diffs: np.ndarray, level: float) -> PairedInterval:
    """t interval and p-value of the mean of paired differences; the units are seeds (images within them).

    Args:
        diffs: (..., n_seeds, n_images) variant minus baseline, same seed (data order, initialisation) and
            same image in both; finite values only (the caller keeps the seeds and images both have).
            Leading axes are independent tables (the simulations test thousands at once).
        level: confidence level of the interval, e.g. 0.95.

    Returns:
        A PairedInterval. With n_seeds >= 2 the units are the per-seed means over images (df n_seeds-1);
        with one seed they are the per-image differences (df n_images-1). Fewer than two units: NaN.
    """
    diffs = np.asarray(diffs, dtype=np.float64)
    if diffs.ndim < 2:
        raise ValueError(f"diffs must be (..., n_seeds, n_images), got shape {diffs.shape}")
    n_seeds, n_images = diffs.shape[-2:]
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if not np.isfinite(diffs).all():
        raise ValueError("diffs must be finite: keep only the seeds and images both configurations have")
    units = diffs.mean(axis=-1) if n_seeds >= 2 else diffs[..., 0, :]
    n_units = units.shape[-1]
    mean = units.mean(axis=-1) if n_units else np.full(units.shape[:-1], np.nan)
    if n_units < 2:
        nan = np.full(mean.shape, np.nan)
        return PairedInterval(mean, nan, nan.copy(), nan.copy(), 0, n_seeds, n_images)
    with warnings.catch_warnings():  # identical units: scipy warns, and gives t = inf (p 0) or nan (0/0)
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        test = stats.ttest_1samp(units, 0.0, axis=-1)
        ci = test.confidence_interval(confidence_level=level)
    p = np.where(np.isnan(test.pvalue) & (mean == 0), 1.0, test.pvalue)  # all differences exactly 0
    return PairedInterval(mean, np.asarray(ci.low), np.asarray(ci.high), np.asarray(p, dtype=np.float64),
                          n_units - 1, n_seeds, n_images)  # fmt: skip


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values over the last axis (NaN entries are not comparisons).

    With m comparisons sorted p_(1) <= ... <= p_(m), the adjusted p_(k) is
    max_{j <= k} min(1, (m - j + 1) p_(j)): rejecting where it is below alpha is exactly Holm's procedure
    (reject p_(1..k) while p_(j) <= alpha / (m - j + 1)), and controls the family-wise error rate at alpha
    under any dependence. scipy.stats has Benjamini-Hochberg (`false_discovery_control`), not Holm.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    valid = ~np.isnan(p)
    m = valid.sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(valid, p, np.inf), axis=-1, kind="stable")  # NaN last
    ranked = np.take_along_axis(p, order, axis=-1)
    factor = m - np.arange(p.shape[-1])  # m - j + 1 for the 1-based rank j
    adjusted_sorted = np.maximum.accumulate(np.minimum(1.0, ranked * factor), axis=-1)  # NaN stay last
    out = np.empty_like(p)
    np.put_along_axis(out, order, adjusted_sorted, axis=-1)
    return out


VERDICTS = ("better", "worse", "inconclusive")
POWER = 0.8  # the power at which a comparison's minimum detectable effect is stated


def verdict(estimate: float, p: float | None, higher_is_better: bool, alpha: float) -> str:
    """The verdict of one comparison: "better" or "worse" (by the sign of the estimate and the metric's
    direction) when its p-value (Holm-adjusted for the study's question, raw for exploratory rows) is
    below alpha, else "inconclusive": not "no difference", since a design with few seeds misses real
    effects (the row's `mde` says how large an effect it would have found); "not testable" without a
    p-value (one seed and one image)."""
    if p is None or not np.isfinite(p):
        return "not testable"
    if p >= alpha:
        return "inconclusive"
    improved = estimate > 0 if higher_is_better else estimate < 0
    return "better" if improved else "worse"


def detectable_shift(df: int, alpha: float, power: float = POWER) -> float:
    """The true mean, in standard errors, that a two-sided t test at level `alpha` on `df` degrees of freedom
    rejects with probability `power`.

    The t statistic of a true mean delta * se is noncentral t with noncentrality delta; the test rejects
    when |T| > t_{df, 1 - alpha/2}, so delta solves P(T > c) + P(T < -c) = power (scipy.stats.nct). With many
    degrees of freedom this is the familiar z_{1-alpha/2} + z_{power} (2.80 at 5 % and 80 %); with 2 df and
    a Holm threshold it is far larger (the price of three seeds).
    """
    if df < 1 or not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"need df >= 1 and alpha, power in (0, 1); got {df}, {alpha}, {power}")
    crit = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(delta: float) -> float:
        return stats.nct.sf(crit, df, delta) + stats.nct.sf(crit, df, -delta) - power  # P(T < -c) by symmetry

    high = crit + 4.0
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-10))


@dataclass(frozen=True)
class VarianceParts:
    """The two sources of noise in a paired difference, in the metric's units squared.

    seed: the variance of a seed's mean difference beyond what its images explain (run-to-run training
        noise of both configurations); NaN with one seed, where it cannot be estimated.
    image: the variance of one image's difference within a seed (pooled over seeds).
    """

    seed: float
    image: float

    def unit_sd(self, n_seeds: int, n_images: int) -> float:
        """The standard deviation of one unit of the t test for a design: a seed's mean over n_images
        images with several seeds, one image's difference with one seed."""
        if n_seeds >= 2:
            return float(np.sqrt(max(self.seed, 0.0) + self.image / n_images))
        return float(np.sqrt(self.image))


def variance_parts(diffs: np.ndarray) -> VarianceParts:
    """Seed and image variance of (n_seeds, n_images) paired differences (one-way random effects, the
    method of moments): image = mean over seeds of the within-seed sample variance; seed = the variance of
    the seed means minus image / n_images, floored at 0."""
    diffs = np.asarray(diffs, dtype=np.float64)
    n_seeds, n_images = diffs.shape
    image = float(diffs.var(axis=1, ddof=1).mean()) if n_images >= 2 else 0.0
    if n_seeds < 2:
        return VarianceParts(float("nan"), image)
    seed = float(diffs.mean(axis=1).var(ddof=1)) - image / n_images
    return VarianceParts(max(seed, 0.0), image)


def minimum_detectable_effect(parts: VarianceParts, n_seeds: int, n_images: int, alpha: float,
                              power: float = POWER) -> float | None:  # fmt: skip
    """The smallest true difference a design finds with probability `power`, in the metric's units.

    The design is this module's test: the t test on per-seed mean differences (n_seeds - 1 df) with several
    seeds, on per-image differences with one (which leaves training noise out, so the figure then speaks
    for these trained networks only). `alpha` is the level the row is tested at: for the question's
    comparisons under Holm, alpha / m (Holm's first step, so an effect of this size is found at least this
    often whatever the other comparisons do). None where the test has fewer than two units.
    """
    n_units = n_seeds if n_seeds >= 2 else n_images
    if n_units < 2 or not np.isfinite(parts.image):
        return None
    se = parts.unit_sd(n_seeds, n_images) / np.sqrt(n_units)
    return float(detectable_shift(n_units - 1, alpha, power) * se)


def seeds_needed(parts: VarianceParts, n_images: int, effect: float, alpha: float, power: float = POWER,
                 most: int = 100) -> int | None:  # fmt: skip
    """The fewest seeds (>= 2) whose design detects `effect` with probability `power` at level `alpha`;
    None if even `most` seeds do not."""
    for n_seeds in range(2, most + 1):
        mde = minimum_detectable_effect(parts, n_seeds, n_images, alpha, power)
        if mde is not None and mde <= abs(effect):
            return n_seeds
    return None
