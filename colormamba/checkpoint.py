"""Checkpoints: what a run needs to resume exactly, serialised with torch.save and read back with
`weights_only=True` (a checkpoint may come from a shared bucket, so it is never unpickled)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from colormamba.storage import Storage

CHECKPOINT_FORMAT = 1  # bump when the layout of the dict below changes


def to_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buf)
    return buf.getvalue()


def from_bytes(data: bytes, source: str) -> dict[str, Any]:
    """Load a checkpoint safely; `source` names it in errors."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise ValueError(f"{source}: not a readable ColorMamba checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{source}: not a ColorMamba checkpoint of format {CHECKPOINT_FORMAT}")
    return state


def save(store: Storage, key: str, state: dict[str, Any]) -> None:
    store.put_bytes(key, to_bytes(state))


def load(store: Storage, key: str) -> dict[str, Any]:
    return from_bytes(store.get_bytes(key), key)


def load_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint file not found")
    return from_bytes(path.read_bytes(), str(path))


def rng_state() -> dict[str, Any]:
    """Torch RNG states (CPU and every CUDA device): augmentation uses its own seeded generators, but
    anything else random (initialisation of lazily built parts, dropout) must continue identically."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
