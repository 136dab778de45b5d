"""Planning a study before it runs: how large an effect its seeds can find, how many seeds a target effect
needs, and what it costs (`submit.py plan SPEC`, and the plan lines of `submit.py SPEC --dry-run`).

Why: a report can only say "inconclusive" about an effect smaller than its design detects
(services/stats.py); a researcher should learn that before spending the GPU hours. The figures are the
report's own (`minimum_detectable_effect` at Holm's first step over the question's comparisons), from a
noise figure: measured by a finished pilot study (`--noise-from STUDY`: its report's seed and image
variance of the question's paired differences, and its training seconds per epoch), or the stated
assumption below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from services.report.names import ALPHA
from services.spec import Study
from services.stats import POWER, VarianceParts, minimum_detectable_effect, seeds_needed

# The assumption when no pilot is named: one run's PSNR moves 0.3 dB between seeds and each image's by
# 0.35 dB (the simulation's figures, benchmarks/sim_report_stats.py); a paired difference has twice each
# variance. 20 images: the public VCIP2020 copy's test split after its shared pairs are dropped.
ASSUMED_SEED_NOISE = 0.3
ASSUMED_IMAGE_NOISE = 0.35
ASSUMED_IMAGES = 20
SHOWN_SEEDS = (3, 5, 8, 10)


@dataclass(frozen=True)
class Noise:
    """The noise a plan assumes for the question's paired differences, and where it comes from."""

    parts: VarianceParts
    n_images: int
    source: str
    seconds_per_epoch: float | None = None  # one run's training time per epoch (a pilot's), if known

    @classmethod
    def assumed(cls, seed_noise: float = ASSUMED_SEED_NOISE, n_images: int = ASSUMED_IMAGES) -> Noise:
        parts = VarianceParts(2 * seed_noise**2, 2 * ASSUMED_IMAGE_NOISE**2)
        source = (f"assumed: {seed_noise:g} per run between seeds, {ASSUMED_IMAGE_NOISE:g} per image, "
                  f"{n_images} images; measure it with --noise-from PILOT")  # fmt: skip
        return cls(parts, n_images, source)


def noise_from_report(report: dict[str, Any]) -> Noise:
    """The noise a finished pilot measured: the mean seed and image variance over its question's rows.

    Raises:
        ValueError: the pilot has no question row with two seeds (one seed cannot measure seed noise).
    """
    rows = [d for d in report.get("differences", [])
            if d.get("primary") and d.get("seed_variance") is not None]  # fmt: skip
    if not rows:
        raise ValueError(f"pilot study {report.get('study')!r} has no comparison with two or more seeds "
                         "that finished: it cannot measure seed-to-seed noise; run it with >= 2 "
                         "seeds")  # fmt: skip
    parts = VarianceParts(float(np.mean([d["seed_variance"] for d in rows])),
                          float(np.mean([d["image_variance"] for d in rows])))  # fmt: skip
    per_epoch = [r["train_seconds"] / r["epochs"] for r in report.get("summary", [])
                 if r.get("train_seconds") and r.get("epochs")]  # fmt: skip
    n_images = int(np.median([d["n_images"] for d in rows]))
    source = (f"pilot `{report.get('study')}`: {len(rows)} comparison(s), seed sd {np.sqrt(parts.seed):.3g}, "
              f"image sd {np.sqrt(parts.image):.3g} of the paired difference, {n_images} images")  # fmt: skip
    return Noise(parts, n_images, source, float(np.mean(per_epoch)) if per_epoch else None)


def plan_lines(study: Study, noise: Noise, targets: tuple[float, ...] = ()) -> list[str]:
    """What `plan` prints: the runs, the question, the noise, the detectable effect, seeds for targets,
    and the training time."""
    from services.report.render import effect  # the report's units: the plan speaks as the report will

    spec = study.spec
    metric = spec.question.metric
    families = study.families()
    m = len(study.variant_families())  # a sweep point is a comparison of its own
    alpha = ALPHA / max(m, 1)
    seeds = len(spec.seeds)
    configurations = len({r.variant for r in study.runs})
    epochs = sorted({r.config.get("epochs") for r in study.runs})
    named = "; ".join(f"{name}: {', '.join(members)}" for name, members in families.items())
    lines = [
        f"plan {study.name}: {len(study.runs)} run(s) ({configurations} configuration variant(s) x {seeds} "
        f"seed(s)), {'/'.join(map(str, epochs))} epochs each",
        f"question: {metric.upper()}; {m} comparison(s) against `{study.baseline}` ({named}); Holm's first "
        f"step tests at {ALPHA:g}/{m} = {alpha:.4f}",
        f"noise: {noise.source}",
    ]
    detect = [(n, minimum_detectable_effect(noise.parts, n, noise.n_images, alpha))
              for n in dict.fromkeys((seeds, *SHOWN_SEEDS))]  # fmt: skip
    shown = "; ".join(f"{n} seed{'s' * (n > 1)} {effect(v, metric)}" + (" (this spec)" if n == seeds else "")
                      + (" over images only, training noise not in it" if n == 1 else "")
                      for n, v in detect if v is not None)  # fmt: skip
    lines.append(f"smallest true {metric.upper()} difference found with {int(POWER * 100)}% power: {shown}")
    if seeds < 2:
        lines.append("warning: one seed cannot tell a loss effect from run-to-run noise; the report's "
                     "verdicts would be about these trained networks only")  # fmt: skip
    for target in targets:
        needed = seeds_needed(noise.parts, noise.n_images, target, alpha)
        if needed is None:
            lines.append(f"target {effect(target, metric)}: more than 100 seeds")
        else:
            runs = len(study.runs) // seeds * needed
            lines.append(f"target {effect(target, metric)}: {needed} seeds ({runs} runs)")
    lines.append(_time_line(study, noise))
    return lines


def _time_line(study: Study, noise: Noise) -> str:
    epochs = sum(r.config.get("epochs", 0) for r in study.runs)
    if noise.seconds_per_epoch is None:
        return (f"time: {epochs} run-epochs in all; no pilot timing (name one with --noise-from: its seconds "
                "per epoch on the same hardware)")  # fmt: skip
    hours = epochs * noise.seconds_per_epoch / 3600
    return (f"time: {epochs} run-epochs x {noise.seconds_per_epoch:.1f} s (the pilot's) = {hours:.1f} "
            "GPU-hours of training, divided by the runs trained at once")  # fmt: skip

