"""`report STUDY --rebuild` on the queue: the command line asks the aggregator (a real Celery worker) by
task name, waits for it, and downloads what it wrote."""

from __future__ import annotations

import pytest

from services.spec import load_spec
from services.studies import save_study
from tests.support.records import fake_outputs
from tests.support.submit import DEMO, submit


@pytest.mark.slow
def test_report_rebuild_waits_for_the_aggregator_and_downloads_its_report(stack, tmp_path):
    store = stack.store
    study = load_spec(DEMO)
    save_study(store, study)
    fake_outputs(store, study)
    assert store.list("reports/demo") == [], "no report until the aggregator builds one"
    stack.worker("aggregator", queues="aggregate")
    folder = (tmp_path / "report").resolve()
    out = submit("report", "demo", "--rebuild", "-o", str(folder), env=stack.env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (folder / "report.html").exists()
    assert "2/2" in out.stdout and f"open {folder / 'report.html'}" in out.stdout, out.stdout
