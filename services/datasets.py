"""Datasets in the store: checked upload with a manifest of checksums, and the workers' local cache.

Why a manifest: a worker must know it trains on exactly the uploaded bytes. `datasets/<name>/manifest.json`
lists every file with its size and SHA-256; it is written last, so a dataset without a manifest is an
interrupted upload and is never used. Workers cache a dataset on local disk under the manifest's hash
(the hash of the file list), so a re-uploaded dataset with other content gets a fresh cache entry, and
every downloaded file is verified against its checksum before the cache entry is published (renamed
into place) - a half-downloaded cache is never seen.

Why names can share files: uploading content that the store already holds under another name (same
manifest hash) writes only a manifest for the new name, with `files_of` naming the dataset whose
prefix holds the files; both names read the same objects, and a worker caches them once (by hash).
A dataset whose files another name uses cannot be replaced (that would change the other one).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from colormamba.data import DatasetError, available_splits, check_pairs, detect_layout, list_pairs
from colormamba.storage import DATASETS, ObjectNotFound, Storage, check_name, dataset_prefix, manifest_key
from services.settings import settings

MANIFEST_FORMAT = 1


class DatasetConflict(ValueError):
    """A dataset of that name with other content is already in the store."""


def files_prefix(manifest: dict[str, Any]) -> str:
    """Where a dataset's files are: under its own name, or under `files_of` when it shares them."""
    return dataset_prefix(manifest.get("files_of") or manifest["name"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_hash(files: dict[str, dict[str, Any]]) -> str:
    """The identity of a dataset's content: a hash over (path, size, sha256) of every file."""
    canonical = json.dumps(files, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def check_dataset(root: str | Path) -> dict[str, Any]:
    """Read every pair of every split with the library's reader.

    Returns:
        {"layout": ..., "splits": {split: n_pairs}, "files": [relative paths of every paired file]}.
    Raises:
        DatasetError (a ValueError) listing every bad file; a dataset without train and val is refused.
    """
    root = Path(root)
    layout = detect_layout(root)
    splits = available_splits(root, layout)
    missing = [s for s in ("train", "val") if s not in splits]
    if missing:
        raise DatasetError(
            f"{root}: no {' and no '.join(missing)} split ({layout} layout); a study needs both"
        )
    counts: dict[str, int] = {}
    files: list[str] = []
    problems: list[str] = []
    for split in splits:
        try:
            pairs = list_pairs(root, split, layout)
            check_pairs(pairs)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        counts[split] = len(pairs)
        for pair in pairs:
            files += [
                Path(pair.nir).relative_to(root).as_posix(),
                Path(pair.rgb).relative_to(root).as_posix(),
            ]
    if problems:
        raise DatasetError(f"{root}: the dataset has bad files", problems)
    return {"layout": layout, "splits": counts, "files": sorted(set(files))}


def build_manifest(root: str | Path, name: str) -> dict[str, Any]:
    """Check the dataset and describe it: layout, pair counts and every file's size and checksum."""
    root = Path(root)
    checked = check_dataset(root)
    files = {
        rel: {"size": (root / rel).stat().st_size, "sha256": _sha256(root / rel)} for rel in checked["files"]
    }
    return {
        "format": MANIFEST_FORMAT,
        "name": name,
        "layout": checked["layout"],
        "splits": checked["splits"],
        "files": files,
        "hash": manifest_hash(files),
    }


def read_manifest(store: Storage, name: str) -> dict[str, Any]:
    """The manifest of a dataset in the store.

    Raises:
        ValueError: no such dataset (or an interrupted upload), saying how to upload it.
    """
    try:
        data = json.loads(store.get_bytes(manifest_key(name)))
    except ObjectNotFound:
        names = dataset_names(store)
        there = f"datasets there: {', '.join(names)}" if names else "it holds no datasets"
        raise ValueError(
            f"dataset {name!r} is not in the store {store!r} (no {manifest_key(name)}; {there}); upload it "
            f"with `python jobs/submit.py dataset upload PATH --name {name}`"
        ) from None
    if data.get("format") != MANIFEST_FORMAT or "files" not in data:
        raise ValueError(f"{manifest_key(name)}: not a manifest of format {MANIFEST_FORMAT}")
    return {**data, "name": name}  # the key names it (files_prefix relies on that)


def upload_dataset(store: Storage, root: str | Path, name: str, replace: bool = False) -> dict[str, Any]:
    """Check a dataset folder, upload its paired files, then its manifest (last: the commit point).

    Uploading the same content again is a no-op; other content under an existing name is refused
    unless `replace` (running studies keep their cached copy, keyed by the old hash). Content that the
    store holds under another name is not uploaded again: the manifest names that dataset (`files_of`).

    Returns:
        the manifest.
    Raises:
        DatasetError naming the bad files (nothing is uploaded), DatasetConflict.
    """
    root = Path(root)
    manifest = build_manifest(root, check_name(name, "dataset name"))
    stored = list_datasets(store)
    existing = next((d for d in stored if d["name"] == name), None)
    if existing is not None:
        if existing["hash"] == manifest["hash"]:
            return read_manifest(store, name)
        if not replace:
            raise DatasetConflict(
                f"dataset {name!r} already exists with other content (hash {existing['hash'][:12]} vs "
                f"{manifest['hash'][:12]}); choose another name or pass --replace"
            )
        sharing = sorted(d["name"] for d in stored if d["files_of"] == name and d["name"] != name)
        if sharing:
            raise DatasetConflict(
                f"dataset {name!r} cannot be replaced: its files are also dataset(s) {', '.join(sharing)} "
                "(same content uploaded under another name); upload the new content under another name"
            )
        store.delete(manifest_key(name))  # from here on the old dataset reads as absent, never as mixed
        for key in store.list(dataset_prefix(name)):
            store.delete(key)
    twin = next((d for d in stored if d["hash"] == manifest["hash"] and d["name"] != name), None)
    if twin is not None:
        manifest["files_of"] = twin["files_of"]
    else:
        prefix = dataset_prefix(name)
        for rel in manifest["files"]:
            store.put_bytes(f"{prefix}/{rel}", (root / rel).read_bytes())
    manifest["uploaded_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    store.put_bytes(manifest_key(name), json.dumps(manifest, indent=1).encode())
    return manifest


def dataset_names(store: Storage) -> list[str]:
    """The names of the store's complete datasets (those with a manifest), sorted."""
    return sorted(
        k.split("/")[1] for k in store.list(DATASETS) if k.count("/") == 2 and k.endswith("/manifest.json")
    )


def list_datasets(store: Storage) -> list[dict[str, Any]]:
    """Every complete dataset in the store (one with a manifest): name, layout, pair counts, hash, and
    `files_of`, the dataset whose files it reads (itself, unless it shares another's)."""
    out = []
    for key in store.list(DATASETS):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == "manifest.json":
            m = read_manifest(store, parts[1])
            out.append({"name": parts[1], "layout": m["layout"], "splits": m["splits"], "hash": m["hash"],
                        "files_of": m.get("files_of") or parts[1]})  # fmt: skip
    return out


def default_cache_dir() -> Path:
    """COLORMAMBA_DATA_CACHE (services.settings)."""
    return settings().data_cache


def fetch_dataset(store: Storage, name: str, cache_dir: str | Path | None = None) -> Path:
    """A verified local copy of a stored dataset, downloaded once per manifest hash.

    Returns:
        the local dataset root (`<cache_dir>/<hash>`).
    Raises:
        ValueError: no such dataset, or a downloaded file whose checksum differs from the manifest
            (named; the partial copy is discarded).
    """
    manifest = read_manifest(store, name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = cache / manifest["hash"]
    if (final / ".complete").exists():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{manifest['hash'][:12]}-"))
    try:
        prefix = files_prefix(manifest)
        for rel, meta in manifest["files"].items():
            data = store.get_bytes(f"{prefix}/{rel}")
            if len(data) != meta["size"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
                raise ValueError(
                    f"dataset {name!r}: {prefix}/{rel} does not match its manifest checksum "
                    "(changed or corrupted in the store); upload the dataset again"
                )
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (tmp / ".complete").write_text(manifest["hash"])
        try:
            tmp.rename(final)
        except OSError:  # another worker on this machine published it first: theirs is as good
            if not (final / ".complete").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_synthetic(
    store: Storage, name: str, n_train: int, n_val: int, size: int, seed: int, n_test: int = 0
) -> dict[str, Any]:
    """Generate and upload a synthetic dataset under `name` unless the store already has it.

    Generation is deterministic (colormamba.data.synthetic), so the name (a hash of the parameters, see
    services.spec.dataset_name) identifies the content; this is how `demo.yaml` needs no upload step.
    """
    from colormamba.data.synthetic import make_synthetic_dataset

    try:
        return read_manifest(store, name)
    except ValueError:
        pass
    with tempfile.TemporaryDirectory(prefix="colormamba-synthetic-") as tmp:
        root = make_synthetic_dataset(
            Path(tmp) / name, n_train=n_train, n_val=n_val, n_test=n_test, size=size, seed=seed
        )
        return upload_dataset(store, root, name)
