"""Fixtures of the tests of `jobs/submit.py`'s command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from colormamba.storage import LocalStorage
from services.spec import Study, load_spec
from services.studies import save_study
from tests.support.records import RUNNING, record_status
from tests.support.submit import demo_with_seeds


@pytest.fixture
def study(tmp_path: Path) -> tuple[LocalStorage, Study]:
    """The demo study with seeds 0 and 1 (its 4 runs), recorded in a folder store: one run running, one
    queued, one succeeded, one failed."""
    store = LocalStorage(tmp_path / "store")
    study = load_spec(demo_with_seeds(tmp_path, [0, 1]))
    save_study(store, study)
    running, queued, succeeded, failed = (r.run_id for r in study.runs)
    record_status(store, "demo", running, RUNNING)
    record_status(store, "demo", queued, {"state": "queued"})
    record_status(store, "demo", succeeded, {"state": "succeeded", "epoch": 2, "epochs": 2, "worker": "gpu2"})
    record_status(store, "demo", failed, {"state": "failed", "reason": "TrainingDiverged: loss is nan"})
    return store, study
