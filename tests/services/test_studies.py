"""Which recorded run states submit (re)starts (the rule select_runs and the queuing loop share), an
unknown study's message, and the overview `list` prints."""

import pytest

from colormamba.storage import LocalStorage
from services.runs import State
from services.spec import load_spec
from services.studies import NotFound, find_study, save_study, should_start, study_overview
from tests.support.records import record_status
from tests.support.submit import DEMO


@pytest.mark.parametrize(
    ("state", "rerun", "expected"),
    [
        (None, "none", True),
        ("queued", "none", True),
        ("running", "none", True),  # a leftover; the lease decides whether it really runs
        ("cancelled", "none", True),
        ("succeeded", "none", False),
        ("failed", "none", False),
        ("failed", "failed", True),
        ("succeeded", "failed", False),  # --rerun failed must never reset a finished success
        ("succeeded", "all", True),
    ],
)
def test_should_start(state: str | None, rerun: str, expected: bool) -> None:
    status = None if state is None else {"state": state}
    assert should_start(status, rerun) is expected


def test_an_unknown_study_names_the_closest_and_those_in_the_store(tmp_path) -> None:
    store = LocalStorage(tmp_path)
    with pytest.raises(NotFound, match=r"^unknown study 'demo'; no studies in "):
        find_study(store, "demo")
    save_study(store, load_spec(DEMO))
    assert find_study(store, "demo").name == "demo"
    with pytest.raises(NotFound, match=r"^unknown study 'dmeo'; did you mean 'demo'\? studies in .*: demo$"):
        find_study(store, "dmeo")
    with pytest.raises(NotFound) as far:
        find_study(store, "zzzzzz")
    assert "did you mean" not in str(far.value)


def test_the_overview_counts_each_studys_runs_by_state(tmp_path) -> None:
    store = LocalStorage(tmp_path)
    assert study_overview(store) == []
    study = load_spec(DEMO)
    save_study(store, study)
    first, second, third, *rest = (r.run_id for r in study.runs)  # the others have no record yet
    assert rest
    record_status(store, "demo", first, {"state": "failed"})
    record_status(store, "demo", second, {"state": "failed"})
    record_status(store, "demo", third, {"state": "running"})
    [row] = study_overview(store)
    assert row == {"study": "demo", "runs": len(study.runs), "queued": 0, "running": 1, "lost": 0,
                   "succeeded": 0, "failed": 2, "cancelled": 0}  # fmt: skip
    assert list(row)[2:] == [s.value for s in State], "the columns in the states' order"
