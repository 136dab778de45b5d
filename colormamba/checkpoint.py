"""Checkpoints: what a run needs to resume exactly, serialised with torch.save and read back with
`weights_only=True` (a checkpoint may come from a shared bucket, so it is never unpickled)."""

from __future__ import annotations

import io
import logging
import pickle
import re
import zipfile
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

from colormamba.storage import Storage

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1  # bump when the layout of the dict below changes
# Spectral-norm state as torch.nn.utils.parametrizations.spectral_norm keeps it (this project's SPADE blocks
# and discriminators used it until they switched to the reference's torch.nn.utils.spectral_norm) and the
# names the hook version gives the same tensors. Eval-mode outputs are the same under both: each computes
# W / (u^T W v) from the stored u and v.
_PARAMETRIZED_SPECTRAL_NORM = {
    ".parametrizations.weight.original": ".weight_orig",
    ".parametrizations.weight.0._u": ".weight_u",
    ".parametrizations.weight.0._v": ".weight_v",
}


def to_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buf)
    return buf.getvalue()


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
_OTHER_FORMATS = {  # leading bytes of files that users pass as --checkpoint by mistake
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"BM": "a BMP image",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
    b"\x80": "a plain pickle (not torch.save's format)",
    b"{": "a JSON file",
}


def _not_a_checkpoint(data: bytes) -> str | None:
    """Why `data` cannot be a torch.save file, told from its first bytes (None when it could be one)."""
    if not data:
        return "the file is empty"
    if data.startswith(_ZIP_MAGIC):
        return None
    kind = next((what for magic, what in _OTHER_FORMATS.items() if data.startswith(magic)), None)
    return f"it is {kind}" if kind else f"it does not start like a zip archive (first bytes {data[:8]!r})"


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")  # in torch's refusal


def _refused(torch_message: str) -> str:
    """Why the weights-only unpickler refused a file, in this project's terms. torch's own message advises
    loading again with the unsafe unpickler, which is the one step never to take with a file of unknown
    origin, so only the name of the object it refused is kept."""
    found = _UNSUPPORTED_GLOBAL.search(torch_message)  # in a damaged file, a garbled name
    what = f" ({found.group(1)})" if found else ""
    return (f"not a checkpoint this project wrote: it holds more than tensors and plain values{what}, or is "
            "damaged; it was not unpickled (a checkpoint is the best.pt or last.pt of a run)")  # fmt: skip


def from_bytes(data: bytes, source: str) -> dict[str, Any]:
    """Load a checkpoint safely (`weights_only=True`); `source` names it in errors, which say what is
    wrong in the user's terms (an image, a truncated download) rather than in torch's."""
    reason = _not_a_checkpoint(data)
    if reason is not None:
        raise ValueError(
            f"{source}: not a checkpoint: {reason} (a checkpoint is the best.pt or last.pt of a run)"
        )
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ValueError(
            f"{source}: truncated or corrupt checkpoint ({len(data)} bytes, the end of its zip archive is "
            "missing); download or copy it again"
        )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # refused by the weights-only unpickler; torch's advice left out
        raise ValueError(f"{source}: {_refused(str(exc))}") from None
    except Exception as exc:  # torch raises several types for a damaged archive
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{source}: not a readable ColorMamba checkpoint: damaged or of another kind ({first[:200]})"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{source}: not a ColorMamba checkpoint of format {CHECKPOINT_FORMAT}")
    return state


def save(store: Storage, key: str, state: dict[str, Any]) -> None:
    store.put_bytes(key, to_bytes(state))


def snapshot(obj: Any) -> Any:
    """A copy of a state (nested dicts, lists, tuples of tensors and plain values) with every tensor
    copied to the CPU: state_dict() returns the live tensors, which the next optimiser step changes in
    place while a background write is still serialising them."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(snapshot(v) for v in obj)
    return obj


class BackgroundWriter:
    """Writes checkpoints on one thread while training goes on.

    A paper-preset `last.pt` (weights and Adam's two moments) is about 1.1 GiB: serialising and uploading
    it takes seconds, as long as a whole epoch of the fast GPU step. One write is in flight at a time, so at
    most one snapshot waits in memory, and writes land in the order submitted (best.pt before the last.pt
    that refers to it). A failed write is raised by the next `submit`, `wait` or `landed`, never lost.
    Only the thread that submits calls these methods.
    """

    def __init__(self, store: Storage) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending: tuple[Future[None], Any] | None = None
        self._landed: list[Any] = []

    def submit(self, items: Sequence[tuple[str, dict[str, Any] | bytes]], label: Any = None) -> None:
        """Write (key, state or raw bytes) pairs in order, after the previous submission has finished;
        `label` (e.g. the epoch) is what `landed` reports once they are stored. States must be snapshots
        (`snapshot`): they are serialised later, on the writer's thread."""
        self.wait()
        self._pending = (self._pool.submit(self._write, list(items)), label)

    def _write(self, items: list[tuple[str, dict[str, Any] | bytes]]) -> None:
        for key, item in items:
            self.store.put_bytes(key, item if isinstance(item, bytes) else to_bytes(item))

    def wait(self) -> None:
        """Block until the submitted writes are stored; raise the error of one that failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            future, label = pending
            future.result()
            self._landed.append(label)

    def landed(self) -> list[Any]:
        """Labels of the submissions stored since the last call (without waiting for one in flight)."""
        if self._pending is not None and self._pending[0].done():
            self.wait()
        out, self._landed = self._landed, []
        return out

    def close(self, raise_errors: bool = True) -> None:
        """Wait for the last writes and stop the thread. A failed write is raised, or only logged with
        `raise_errors=False` (when the caller is already stopping for another error)."""
        try:
            self.wait()
        except Exception:
            if raise_errors:
                raise
            log.exception("checkpoint write failed while the run was stopping")
        finally:
            self._pool.shutdown(wait=True)


def upgrade_state_dict(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A model state dict with older layouts renamed to the current one (spectral norm's parametrization
    keys to the hook's, see _PARAMETRIZED_SPECTRAL_NORM); current keys pass unchanged."""
    out = {}
    for key, value in weights.items():
        for old, new in _PARAMETRIZED_SPECTRAL_NORM.items():
            if key.endswith(old):
                key = key.removesuffix(old) + new
                break
        out[key] = value
    return out


def load_weights(module: nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """`module.load_state_dict` (strict) for weights read from a checkpoint, older layouts included.

    Args:
        source: the checkpoint's file or key, named in the error.
    Raises:
        ValueError: the weights do not fit the module (another architecture or preset).
    """
    try:
        module.load_state_dict(upgrade_state_dict(weights))
    except RuntimeError as exc:
        raise ValueError(f"{source}: the checkpoint's weights do not fit this network ({exc})") from exc


def load(store: Storage, key: str) -> dict[str, Any]:
    return from_bytes(store.get_bytes(key), key)


def load_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint file not found")
    return from_bytes(path.read_bytes(), str(path))


def load_source(source: str | Path) -> dict[str, Any]:
    """A checkpoint from a file or from the object store (`s3://bucket/checkpoints/STUDY/RUN/best.pt`,
    endpoint and credentials from the environment as for the job suite: `colormamba.storage_s3`).

    Raises:
        ValueError: no such file or object, or not a checkpoint; StorageError: the store is unreachable.
    """
    text = str(source)
    if not text.startswith("s3://"):
        return load_file(source)
    from colormamba.storage import ObjectNotFound
    from colormamba.storage_s3 import read_s3_url  # the minio SDK only when a URL asks for it

    try:
        data = read_s3_url(text)
    except ObjectNotFound:
        raise ValueError(f"{text}: no such checkpoint in the store") from None
    return from_bytes(data, text)


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
