"""Planning a study (services/planning.py, `submit.py plan`): the detectable effect and the seeds a target
needs are the report's own statistics, from an assumed noise or one a finished pilot measured."""

from __future__ import annotations

import numpy as np
import pytest

from colormamba.storage import LocalStorage
from services.planning import Noise, noise_from_report, plan_lines
from services.report import build_report
from services.spec import load_spec
from services.stats import VarianceParts, minimum_detectable_effect, seeds_needed
from services.studies import save_study
from tests.support.records import fake_outputs
from tests.support.submit import DEMO, demo_with_seeds, submit


def test_the_plan_states_the_report_s_mde_and_the_seeds_a_target_needs():
    study = load_spec(DEMO)  # 2 configurations x 3 seeds: one comparison, tested at 0.05
    noise = Noise.assumed(0.3, 20)
    assert noise.parts == VarianceParts(2 * 0.3**2, 2 * 0.35**2)
    lines = plan_lines(study, noise, (1.0,))
    mde = minimum_detectable_effect(noise.parts, 3, 20, 0.05)
    assert lines[0].startswith("plan demo: 6 run(s) (2 configuration variant(s) x 3 seed(s))")
    assert "1 comparison(s) against `original`" in lines[1] and "0.05/1 = 0.0500" in lines[1]
    assert f"3 seeds {mde:.2f} dB (this spec)" in lines[3]
    needed = seeds_needed(noise.parts, 20, 1.0, 0.05)
    assert f"target 1.00 dB: {needed} seeds ({2 * needed} runs)" in lines
    assert "no pilot timing" in lines[-1]


def test_a_pilot_s_report_gives_the_noise_and_the_time(tmp_path):
    store = LocalStorage(tmp_path / "store")
    pilot = load_spec(demo_with_seeds(tmp_path, [0, 1, 2]))
    save_study(store, pilot)
    fake_outputs(store, pilot)
    report = build_report(store, pilot.name)
    noise = noise_from_report(report)
    (row,) = [d for d in report["differences"] if d["primary"]]
    assert noise.parts == VarianceParts(row["seed_variance"], row["image_variance"])
    assert noise.n_images == row["n_images"] and "pilot `demo`" in noise.source
    per_epoch = [r["train_seconds"] / r["epochs"] for r in report["summary"]]
    assert noise.seconds_per_epoch == pytest.approx(np.mean(per_epoch))
    lines = plan_lines(load_spec(DEMO), noise)
    assert "run-epochs x" in lines[-1] and "GPU-hours" in lines[-1]
    one_seed = {**report, "differences": [{**d, "seed_variance": None} for d in report["differences"]]}
    with pytest.raises(ValueError, match="cannot measure seed-to-seed noise"):
        noise_from_report(one_seed)
    # the command line: a pilot in the store, one that is not, a bad figure
    where = str(store.root)
    ok = submit("plan", str(DEMO), "--noise-from", "demo", "--target-effect", "0.5", "--store", where)
    assert ok.returncode == 0, ok.stderr
    assert "noise: pilot `demo`" in ok.stdout and "target 0.50 dB:" in ok.stdout
    missing = submit("plan", str(DEMO), "--noise-from", "demp", "--store", where)
    assert missing.returncode == 4 and "demp" in missing.stderr
    bad = submit("plan", str(DEMO), "--target-effect", "-1")
    assert bad.returncode == 2 and "--target-effect must be positive" in bad.stderr
