"""The one polling helper of the tests: every wait for something to happen (a port to open, a run to
finish, a table to render) goes through `wait_until`, so that a timeout always says what was awaited and
shows what the test knows about why (a server's or worker's log, the last error, the output so far)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

CONTEXT_CHARS = 6000  # the tail of the context shown on a timeout: enough for a traceback, not a whole log


def wait_until(
    what: str,
    predicate: Callable[[], Any],
    timeout: float,
    interval: float = 0.05,
    context: Callable[[], str] | None = None,
) -> Any:
    """Poll `predicate` until it returns something truthy (returned), or fail the test after `timeout` s.

    `predicate` may raise (an AssertionError when the process it waits on has exited, say): that ends
    the wait at once with its own message. On a timeout the failure names `what` and ends with the last
    CONTEXT_CHARS characters of `context()`, e.g. the workers' logs.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    message = f"timed out after {timeout} s waiting for {what}"
    if context is not None:
        message += f"\n--- context ---\n{context()[-CONTEXT_CHARS:]}"
    raise AssertionError(message)
