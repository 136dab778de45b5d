"""The one "did you mean" of the project: every message about an unknown name (a spec key, a loss term, a
preset, a command, a study) proposes the closest known one the same way. Standard library only, so that
the command line can use it without importing torch."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, known: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The known name most like `word` (difflib's ratio at least `cutoff`), or None."""
    matches = difflib.get_close_matches(word, sorted(set(known) - {word}), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def unknown(what: str, word: str, known: Iterable[str], cutoff: float = 0.6, listing: str = "") -> str:
    """`what` followed by "; did you mean 'x'?" when a known name is close to `word`, else by
    "; <listing>: a, b, c" when a `listing` label is given (a short list beats no help at all).

    `unknown("unknown key", "epoch", fields)` -> "unknown key; did you mean 'epochs'?".
    """
    known = list(known)
    match = closest(word, known, cutoff)
    if match:
        return f"{what}; did you mean {match!r}?"
    return f"{what}; {listing}: {', '.join(known)}" if listing else what
