"""The study file states the study: both readings of the seed's losses, every loss weight written out and
equal to the measured presets (so neither can drift from the other silently), `combined` at the weights its
sweep chose, and the question asked in two families against the baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from colormamba.losses import LOSS_PRESETS, resolve_loss_config
from colormamba.losses.config import ADDITIVE, STANDALONE
from services.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "jobs" / "specs" / "loss_study.yaml"
SWEEP_CHOICE = ROOT / "benchmarks" / "results" / "2026-12-07_cpu" / "combined_sweep" / "choice.json"
STUDY = ("original", *ADDITIVE, *STANDALONE)
TUNED = "combined"  # its weights come from its sweep, not from the calibrated preset


def _configurations() -> dict[str, dict]:
    return yaml.safe_load(SPEC.read_text())["configurations"]


@pytest.mark.parametrize("name", STUDY)
def test_every_weight_is_written_out_and_equals_the_measured_one(name: str) -> None:
    conf = _configurations()[name]
    written = conf.get("weights")
    assert written is not None and conf["loss"] == name, f"{name}: explicit weights on its own preset"
    assert set(written) == set(LOSS_PRESETS[name]), "a term is left to the preset"
    resolved = resolve_loss_config(name, written)
    if name == TUNED:
        choice = json.loads(SWEEP_CHOICE.read_text())
        assert resolved == resolve_loss_config(name, choice["weights"]), "the sweep's choice"
        assert set(choice["weights"]) <= set(LOSS_PRESETS[name])
    else:
        assert resolved == LOSS_PRESETS[name]
    assert resolved["hsv"] == 1.0, "G_B's supervision weighs 1 in every configuration"


def test_both_readings_are_families_of_the_question() -> None:
    study = load_spec(SPEC)
    assert study.baseline == "original" and study.spec.question.metric == "psnr"
    assert study.families() == {"additive": list(ADDITIVE), "standalone": list(STANDALONE)}
    assert all(LOSS_PRESETS[c].keys() > LOSS_PRESETS["original"].keys() - {"hsv"} for c in ADDITIVE)


def test_the_runs_train_the_written_weights() -> None:
    study = load_spec(SPEC)
    assert sorted({r.configuration for r in study.runs}) == sorted(STUDY)
    written = _configurations()
    for run in study.runs:
        loss = resolve_loss_config(run.config["loss"], run.config["loss_weights"])
        assert loss == resolve_loss_config(run.configuration, written[run.configuration]["weights"])
        assert run.config["generator_steps_per_batch"] == 2  # the reference's two G updates per batch
        assert run.seed in (0, 1, 2) and run.config["epochs"] == 50
