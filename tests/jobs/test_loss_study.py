"""The study file states the study: every loss weight of jobs/specs/loss_study.yaml is written out, equals
the code presets (so neither can drift from the other silently), and keeps the reference's 20:1 balance of
RGB terms to the hsv term."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from colormamba.losses import LOSS_PRESETS, resolve_loss_config
from colormamba.losses.config import RGB_HSV_RATIO, VGG_SCALE
from services.spec import load_spec

SPEC = Path(__file__).resolve().parents[2] / "jobs" / "specs" / "loss_study.yaml"
STUDY = ("original", "vgg", "histogram", "combined")


def _configurations() -> dict[str, dict]:
    return yaml.safe_load(SPEC.read_text())["configurations"]


@pytest.mark.parametrize("name", STUDY)
def test_every_weight_is_written_out_and_equals_the_preset(name: str) -> None:
    conf = _configurations()[name]
    written = conf.get("terms", conf.get("weights"))
    assert written is not None, f"{name}: no explicit weights in {SPEC.name}"
    assert set(written) == set(LOSS_PRESETS[conf.get("loss", name)]), "a term is left to the preset"
    source = conf.get("loss", written)
    resolved = resolve_loss_config(source, written if "loss" in conf else None)
    assert resolved == LOSS_PRESETS[name]


@pytest.mark.parametrize("name", STUDY)
def test_rgb_terms_weigh_twenty_times_the_hsv_term(name: str) -> None:
    weights = LOSS_PRESETS[name]
    assert RGB_HSV_RATIO == 20
    for term, weight in weights.items():
        if term != "hsv":
            scale = VGG_SCALE if term == "vgg" else 1.0
            assert weight == pytest.approx(RGB_HSV_RATIO * scale * weights["hsv"]), term


def test_the_runs_train_the_written_weights() -> None:
    study = load_spec(SPEC)
    assert sorted({r.configuration for r in study.runs}) == sorted(STUDY)
    for run in study.runs:
        loss = resolve_loss_config(run.config["loss"], run.config["loss_weights"])
        assert loss == LOSS_PRESETS[run.configuration]
        assert run.config["generator_steps_per_batch"] == 2  # the reference's two G updates per batch
