"""The departures table (services/departures.py): generated from what runs computed, and the one text that
README.md and docs/evaluation.md hold for the loss study."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.departures import REFERENCE, SEED, departure_rows, departures, markdown, study_departures
from services.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
ORIGINAL = {"mse": 20.0, "cosine": 20.0, "msssim": 20.0, "hsv": 1.0}
STUDY_RECIPE = {"epochs": 50, "batch_size": 8, "lr": 1e-4, "lr_step_epochs": 25,
                "generator_steps_per_batch": 2, "image_size": 0, "histogram_distance": "w1",
                "vgg_weights": "pretrained"}  # fmt: skip


def _what(items: list[tuple[str, str]], against: str) -> str:
    return "; ".join(w for a, w in items if a == against)


def test_departures_follow_the_resolved_terms_and_recipe():
    base = departures(ORIGINAL, STUDY_RECIPE)
    assert "`cosine` compares RGB pixel vectors" in _what(base, REFERENCE)
    assert "no pixel term" not in _what(base, REFERENCE) and _what(base, SEED) == ""
    hist = departures({"histogram": 5.0, "hsv": 1.0}, STUDY_RECIPE)
    assert "no pixel term for G_A" in _what(hist, REFERENCE)
    assert "W1 between soft CDFs; the seed names KL or chi-squared" in _what(hist, SEED)
    kl = departures({"histogram": 5.0, "hsv": 1.0}, {**STUDY_RECIPE, "histogram_distance": "kl"})
    assert _what(kl, SEED) == "", "KL is one of the seed's distances"
    additive = departures({**ORIGINAL, "histogram": 5.0}, STUDY_RECIPE)
    assert "no pixel term" not in _what(additive, REFERENCE), "the published ablation's reading"
    quick = departures({"vgg": 1.0, "hsv": 1.0}, {**STUDY_RECIPE, "vgg_weights": "random", "image_size": 32,
                                                  "epochs": 6, "generator_steps_per_batch": 1})  # fmt: skip
    assert "random VGG-19 weights" in _what(quick, SEED) and "32x32" in _what(quick, SEED)
    assert "epochs 6 (the seed's: 50)" in _what(quick, SEED)
    assert "generator steps per batch 1 (the reference's: 2)" in _what(quick, REFERENCE)
    gan = departures({**ORIGINAL, "adversarial": 1.0}, STUDY_RECIPE)
    assert "no GAN terms" not in _what(gan, REFERENCE)
    no_augment = departures(ORIGINAL, {**STUDY_RECIPE, "augment": {"enabled": False}})
    assert "contrast jitter" not in _what(no_augment, REFERENCE)


def test_the_table_puts_what_every_configuration_shares_in_one_row():
    rows = departure_rows({"a": [(REFERENCE, "x"), (SEED, "y")], "b": [(REFERENCE, "x"), (REFERENCE, "z")]})
    assert rows[0] == {"configuration": "every configuration", "from the reference objective": "x",
                       "from the seed": "-"}  # fmt: skip
    assert rows[1:] == [
        {"configuration": "a", "from the reference objective": "-", "from the seed": "y"},
        {"configuration": "b", "from the reference objective": "z", "from the seed": "-"},
    ]


@pytest.mark.parametrize("doc", ["README.md", "docs/evaluation.md"])
def test_the_docs_hold_the_generated_table_of_the_loss_study(doc):
    """One source: `python -m services.departures jobs/specs/loss_study.yaml` prints what the docs hold."""
    text = (ROOT / doc).read_text()
    found = re.search(r"<!-- departures: loss_study.yaml -->\n(.*?)<!-- /departures -->", text, re.S)
    assert found, f"{doc}: no generated departures table (markers `<!-- departures: loss_study.yaml -->`)"
    study = load_spec(ROOT / "jobs" / "specs" / "loss_study.yaml")
    assert found.group(1) == markdown(departure_rows(study_departures(study))), (
        f"{doc} is out of date: paste `python -m services.departures jobs/specs/loss_study.yaml`"
    )
