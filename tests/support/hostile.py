"""Hostile input for the tests that show it is refused without harm."""

from __future__ import annotations

from pathlib import Path


class CreatesAFile:
    """Unpickled, this object creates the file at `path`: what a hostile "checkpoint" could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))
