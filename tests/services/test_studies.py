"""Which recorded run states submit (re)starts: the rule select_runs and the queuing loop share."""

import pytest

from services.studies import should_start


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
