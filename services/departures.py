"""How a study's configurations depart from the reference ColorMamba objective and from the seed study:
the one source of the report header's table, README's and docs/evaluation.md's (tests/services/
test_departures.py keeps the docs equal to what this module generates for jobs/specs/loss_study.yaml).

Why generated: a departure is a fact about what a run computed (its resolved loss weights and recipe), so it
is read from the run's plan, never typed as prose beside numbers it may no longer describe.

    python -m services.departures jobs/specs/loss_study.yaml    # the Markdown table the docs hold
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

REFERENCE = "reference"  # the published ColorMamba objective and training code
SEED = "seed"  # the seed study's text (docs/evaluation.md)

# Every configuration: what the study computes differently from the reference whatever its loss terms.
COMMON = (
    (REFERENCE, "no autoencoder-feature term: the reference's pretrained autoencoder is not available"),
    (REFERENCE, "G_B's edge map is a per-image 2-D Laplacian (the reference's OpenCV call mixes a batch's "
                "images)"),
)
JITTER = (REFERENCE, "contrast jitter before the crop as in the reference, but the resized crop keeps "
                     "floats where PIL rounds to 8 bits after each resize pass (0.29 levels apart, mean)")
# Per active loss term.
TERM_DEPARTURES = {
    "cosine": ((REFERENCE, "`cosine` compares RGB pixel vectors; the reference's compares its autoencoder's "
                           "features"),),
    "msssim": ((REFERENCE, "`msssim` is pytorch-msssim's (fewer scales below 161 px), not the reference's "
                           "implementation"),),
    "hsv": ((REFERENCE, "`hsv`: G_B's HSV target and loss are ours (hue on the circle weighted by "
                        "saturation); the reference's HSV conversion gives other saturations (up to 0.17 "
                        "apart on average)"),),
}
# The recipe the reference trains with and the seed describes; a run that differs departs from it.
RECIPE = {"epochs": (SEED, 50), "batch_size": (SEED, 8), "lr": (REFERENCE, 1e-4),
          "lr_step_epochs": (SEED, 25), "generator_steps_per_batch": (REFERENCE, 2)}  # fmt: skip


def departures(weights: Mapping[str, float], config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(against, what) for each way a run departs from the reference objective (`reference`) and from the
    seed (`seed`), the common ones first.

    Args:
        weights: the run's resolved loss weights (RunPlan.resolved["loss_weights"]).
        config: the run's RunConfig as a dict (RunPlan.config).
    """
    active = {term for term, weight in weights.items() if weight > 0}
    out = list(COMMON)
    if (config.get("augment") or {}).get("enabled", True):
        out.append(JITTER)
    if "adversarial" not in active:
        out.append((REFERENCE, "no GAN terms (the reference trains two PatchGAN discriminators)"))
    if not active & {"mse", "msssim"}:
        out.append((REFERENCE, "no pixel term for G_A (neither mse nor msssim): the seed's standalone "
                               "reading; the published ablation adds the loss to the baseline"))
    for term in sorted(active):
        out += TERM_DEPARTURES.get(term, ())
    if "histogram" in active:
        distance = config.get("histogram_distance", "w1")
        if distance == "w1":
            out.append((SEED, "`histogram` distance W1 between soft CDFs; the seed names KL or chi-squared"))
    if "vgg" in active and config.get("vgg_weights") == "random":
        out.append((SEED, "`vgg` with random VGG-19 weights, not ImageNet's: a random-feature loss"))
    if config.get("image_size"):
        size = config["image_size"]
        out.append((SEED, f"images read at {size}x{size}, not 256x256, for training and the metrics"))
    for field, (against, value) in RECIPE.items():
        if field in config and config[field] != value:
            out.append((against, f"{field.replace('_', ' ')} {config[field]} (the {against}'s: {value})"))
    return out


def departure_rows(per_configuration: Mapping[str, list[tuple[str, str]]]) -> list[dict[str, str]]:
    """The table: one row for what every configuration shares, then a row per configuration for the rest
    (columns: configuration, from the reference objective, from the seed)."""
    lists = list(per_configuration.values())
    shared = [d for d in lists[0] if all(d in other for other in lists[1:])] if lists else []

    def row(name: str, items: list[tuple[str, str]]) -> dict[str, str]:
        return {"configuration": name,
                "from the reference objective": "; ".join(w for a, w in items if a == REFERENCE) or "-",
                "from the seed": "; ".join(w for a, w in items if a == SEED) or "-"}  # fmt: skip

    rows = [row("every configuration", shared)] if shared and len(lists) > 1 else []
    for name, items in per_configuration.items():
        rows.append(row(name, [d for d in items if d not in shared or len(lists) == 1]))
    return rows


def study_departures(study: Any) -> dict[str, list[tuple[str, str]]]:
    """Each configuration variant's departures, from its first run's plan (services.spec.Study)."""
    from services.spec import resolved_loss_weights

    out: dict[str, list[tuple[str, str]]] = {}
    for plan in study.runs:
        if plan.variant not in out:
            weights = plan.resolved.get("loss_weights") or resolved_loss_weights(plan.config)
            out[plan.variant] = departures(weights, plan.config)
    return out


def markdown(rows: list[dict[str, str]]) -> str:
    """The rows as a Markdown table (the form README and docs/evaluation.md hold)."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(r[c].replace("|", "\\|") for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from services.spec import load_spec

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m services.departures SPEC.yaml", file=sys.stderr)
        return 2
    print(markdown(departure_rows(study_departures(load_spec(args[0])))), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
