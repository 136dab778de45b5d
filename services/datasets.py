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

Why links are checked: an upload copies what the folder's paths lead to, so a link (a file, or a split
folder) that leads out of the folder would upload a file the user never put in the dataset. Such links
are refused, all named, before anything reaches the store; a link that stays inside the folder uploads
the file it leads to (a split kept in a subfolder and linked into place is still the dataset's own).

Why the cache's room is checked: a worker whose cache disk is full fails every run it takes, at the
first download. `fetch_dataset` compares the free space with the manifest's sizes before downloading,
and turns a full disk met during the download into CacheFull, naming the folder and its variable, so
that the worker hands the run back instead of failing it (services.runner).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from colormamba.data import DatasetError, Pair, available_splits, check_pairs, detect_layout, list_split
from colormamba.storage import DATASETS, ObjectNotFound, Storage, check_name, dataset_prefix, manifest_key
from services.settings import DATA_CACHE, settings

if TYPE_CHECKING:
    from colormamba.data.leaks import Duplicate

MANIFEST_FORMAT = 1


class DatasetConflict(ValueError):
    """A dataset of that name with other content is already in the store."""


class CacheFull(OSError):
    """The worker's dataset cache has no room for a dataset: the run is handed back, not failed, and the
    worker takes no more runs until the disk is freed (services.runner). Its message names the dataset,
    the cache folder and its variable (COLORMAMBA_DATA_CACHE), the bytes needed and the bytes free;
    `folder`, `needed` and `free` hold them. `errno` is ENOSPC, whatever the write met (ENOSPC, EDQUOT)."""

    def __init__(self, message: str, folder: Path | None = None, needed: int = 0, free: int = 0) -> None:
        super().__init__(message)  # args == (message,): pickled and rebuilt from its message alone
        self.errno = errno.ENOSPC
        self.folder, self.needed, self.free = folder, needed, free


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


LEAK_POLICIES = ("refuse", "drop", "allow")  # what a dataset with a pair in two splits gets (LEAK_HELP)
LEAK_HELP = (
    "--drop-leaks drops the later split's copies (test copies of train, val copies of train, val copies "
    "of test) and records them in the manifest; --allow-leaks keeps them, and every report on the dataset "
    "says so"
)


class DatasetLeak(DatasetError):
    """A dataset whose splits share pairs (by content), refused under the `refuse` leak policy."""


@dataclass
class DatasetCheck:
    """What `dataset check` finds in a folder: its layout, each split's pairs, what was skipped, and the
    pairs that appear in more than one split (colormamba.data.leaks)."""

    root: Path
    layout: str
    pairs: dict[str, list[Pair]]
    skipped: list[dict[str, str]]
    duplicates: list[Duplicate]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """The `dataset check --json` document."""
        return {
            "layout": self.layout,
            "splits": {split: len(pairs) for split, pairs in self.pairs.items()},
            "skipped": self.skipped,
            "duplicates": [d.to_dict() for d in self.duplicates],
        }


def check_dataset(root: str | Path) -> DatasetCheck:
    """Read every pair of every split with the library's reader, and compare the splits by content.

    Raises:
        DatasetError (a ValueError) listing every bad file; a dataset without train and val is refused.
    """
    from colormamba.data.leaks import find_duplicates

    started = time.monotonic()
    root = Path(root)
    layout = detect_layout(root)
    splits = available_splits(root, layout)
    missing = [s for s in ("train", "val") if s not in splits]
    if missing:
        raise DatasetError(
            f"{root}: no {' and no '.join(missing)} split ({layout} layout); a study needs both"
        )
    pairs: dict[str, list[Pair]] = {}
    skipped: list[dict[str, str]] = []
    problems: list[str] = []
    for split in splits:
        try:
            listing = list_split(root, split, layout)
            check_pairs(listing.pairs)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        pairs[split] = listing.pairs
        skipped += [{"split": split, "path": _relative(s.path, root), "why": s.why} for s in listing.skipped]
    if problems:
        raise DatasetError(f"{root}: the dataset has bad files", problems)
    duplicates = find_duplicates(pairs)
    return DatasetCheck(root, layout, pairs, skipped, duplicates, time.monotonic() - started)


def _relative(path: Path, root: Path) -> str:
    return Path(path).relative_to(root).as_posix()


def leak_record(check: DatasetCheck) -> dict[str, Any]:
    """What a check found between splits, before any policy: {"policy": None, "status": "clean"|"found",
    "duplicates": [...], "dropped": {}, "counts": {"train-test": n, ...}}; `apply_leak_policy` completes
    it."""
    counts: dict[str, int] = {}
    for d in check.duplicates:
        key = "-".join(d.splits)
        counts[key] = counts.get(key, 0) + 1
    duplicates = [d.to_dict() for d in check.duplicates]
    return {"policy": None, "status": "found" if duplicates else "clean", "duplicates": duplicates,
            "dropped": {}, "counts": counts}  # fmt: skip


def apply_leak_policy(check: DatasetCheck, policy: str) -> tuple[dict[str, list[Pair]], dict[str, Any]]:
    """The pairs a dataset keeps under a leak policy, and the record of it that its manifest stores.

    Returns:
        (split -> kept pairs, `leak_record` with the policy, the status ("clean"|"dropped"|"allowed") and
        what was dropped: {split: {pair: reason}}).
    Raises:
        DatasetLeak: `refuse` and some pair is in two splits, naming every such pair.
    """
    from colormamba.data.leaks import leak_drops

    if policy not in LEAK_POLICIES:
        raise ValueError(f"leak policy: expected one of {LEAK_POLICIES}, got {policy!r}")
    found = check.duplicates
    record = leak_record(check)
    if found and policy == "refuse":
        listed = [f"{a} {pa!r} and {b} {pb!r}: {d.kind} copy (score {d.score:.3f})"
                  for d in found for (a, b), (pa, pb) in [(d.splits, d.pairs)]]  # fmt: skip
        totals = ", ".join(f"{k} {v}" for k, v in record["counts"].items())
        raise DatasetLeak(
            f"{check.root}: {len(found)} pair(s) appear in more than one split ({totals}), so a test score "
            f"would be partly a training score and the selection could pick on test; {LEAK_HELP}",
            listed,
        )
    drops = leak_drops(found) if policy == "drop" else {}
    kept = {
        split: [p for p in pairs if p.name not in drops.get(split, {})]
        for split, pairs in check.pairs.items()
    }
    status = "clean" if not found else ("dropped" if policy == "drop" else "allowed")
    return kept, record | {"policy": policy, "status": status, "dropped": drops}


def leakage_line(leakage: dict[str, Any] | None) -> str:
    """One sentence on a dataset's leakage status, for the command line and the report's header."""
    if not leakage:
        return "not checked for pairs shared between splits (uploaded before the check existed)"
    if leakage["status"] == "clean":
        return "no pair in more than one split (same pixels, or near: re-encoded, resized, flipped, cropped)"
    totals = ", ".join(f"{k} {v}" for k, v in leakage["counts"].items())
    n = len(leakage["duplicates"])
    if leakage["status"] == "found":
        return (f"{n} pair(s) are in two splits ({totals}); `dataset upload` refuses the dataset unless told "
                f"what to do: {LEAK_HELP}")  # fmt: skip
    if leakage["status"] == "dropped":
        dropped = ", ".join(f"{len(v)} from {k}" for k, v in leakage["dropped"].items() if v)
        return f"{n} pair(s) were found in two splits ({totals}); the later copies were dropped ({dropped})"
    return (f"{n} pair(s) are in two splits ({totals}) and were KEPT (--allow-leaks): scores on a split that "
            "shares pairs with the training split are partly training scores")  # fmt: skip


def dataset_line(info: dict[str, Any]) -> str:
    """A dataset as a submission or upload shows it: layout, pairs per split, skipped files, leakage."""
    splits = ", ".join(f"{split} {n}" for split, n in (info.get("splits") or {}).items())
    skipped = f"; {info['skipped']} file(s)/folder(s) skipped" if info.get("skipped") else ""
    return (f"dataset {info['name']}: {info.get('layout')} layout, pairs {splits}{skipped}; "
            f"{leakage_line(info.get('leakage'))}")  # fmt: skip


def build_manifest(root: str | Path, name: str, leaks: str = "refuse") -> dict[str, Any]:
    """Check the dataset and describe it: layout, pair counts, what was skipped, the leak check and its
    outcome, and every kept file's size and checksum (dropped and skipped files are not in it)."""
    root = Path(root)
    check = check_dataset(root)
    kept, leakage = apply_leak_policy(check, leaks)
    rels = sorted(
        {_relative(path, root) for pairs in kept.values() for p in pairs for path in (p.nir, p.rgb)}
    )
    files = {rel: {"size": (root / rel).stat().st_size, "sha256": _sha256(root / rel)} for rel in rels}
    return {
        "format": MANIFEST_FORMAT,
        "name": name,
        "layout": check.layout,
        "splits": {split: len(pairs) for split, pairs in kept.items() if pairs},  # all dropped: no split
        "files": files,
        "hash": manifest_hash(files),
        "skipped": check.skipped,
        "leakage": leakage,
        "check_seconds": round(check.seconds, 2),
    }


def local_view(root: str | Path, manifest: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    """A folder of links to exactly the manifest's files of a local dataset (`--local`), so that a run
    reads what the check kept (no dropped leak, no skipped extra), as a worker reads its cached copy.
    Keyed by the manifest's hash under `<cache>/views/`."""
    root = Path(root).expanduser().resolve()

    def link(tmp: Path) -> None:
        for rel in manifest["files"]:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).symlink_to(root / rel)

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _published(cache / "views", manifest["hash"], link)


def _published(parent: Path, key: str, fill: Callable[[Path], None]) -> Path:
    """`parent/key`, filled by `fill(folder)` in a folder beside it and renamed into place once complete,
    so that nobody ever reads a half-built one; a copy another process published first is as good."""
    final = parent / key
    if (final / ".complete").exists():
        return final
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{key[:12]}-"))
    try:
        fill(tmp)
        (tmp / ".complete").write_text(key)
        try:
            tmp.rename(final)
        except OSError:  # another process published it first
            if not (final / ".complete").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


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


def upload_dataset(
    store: Storage, root: str | Path, name: str, replace: bool = False, leaks: str = "refuse"
) -> dict[str, Any]:
    """Check a dataset folder, upload its paired files, then its manifest (last: the commit point).

    Uploading the same content again is a no-op; other content under an existing name is refused
    unless `replace` (running studies keep their cached copy, keyed by the old hash). Content that the
    store holds under another name is not uploaded again: the manifest names that dataset (`files_of`).

    `leaks` is what a pair found in two splits gets (LEAK_POLICIES): refused (DatasetLeak, nothing is
    uploaded), its later copy dropped, or kept and flagged; the manifest records the check and the outcome.

    Returns:
        the manifest.
    Raises:
        DatasetError naming the bad files or the links that lead out of the folder (`check_links`;
        nothing is uploaded), DatasetLeak, DatasetConflict.
    """
    root = Path(root)
    manifest = build_manifest(root, check_name(name, "dataset name"), leaks)
    check_links(root, manifest["files"])
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


def check_links(root: Path, rels: Iterable[str]) -> None:
    """Refuse to upload through links that lead out of `root`: for each file, the first link on its path
    (a split folder, a file) whose target resolves outside the folder, named once as `rel -> target`.
    Links that stay inside are followed (the module's docstring says why).

    Raises:
        DatasetError: listing every such link.
    """
    top = root.resolve()
    leaving: dict[str, Path] = {}
    for rel in rels:
        parts = Path(rel).parts
        for depth in range(1, len(parts) + 1):
            path = root.joinpath(*parts[:depth])
            if path.is_symlink() and not path.resolve().is_relative_to(top):
                leaving[Path(*parts[:depth]).as_posix()] = path.resolve()
                break
    if leaving:
        raise DatasetError(
            f"{root}: {len(leaving)} link(s) lead out of the dataset folder; an upload would copy files "
            "that are not the dataset's. Copy them into the folder (or link inside it); nothing was uploaded",
            [f"{rel} -> {target}" for rel, target in sorted(leaving.items())],
        )


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


BLOCK = 4096  # a file takes whole blocks of the disk (ext4's and most others' size)
CACHE_HEADROOM = 64 << 20  # left free after a download, for what else the worker writes on that disk


def cache_room_needed(manifest: dict[str, Any]) -> int:
    """The free bytes a download of the dataset asks for: its files rounded up to whole blocks, and
    CACHE_HEADROOM (which also covers the folders)."""
    return sum(-(-meta["size"] // BLOCK) * BLOCK for meta in manifest["files"].values()) + CACHE_HEADROOM


def _free_bytes(folder: Path) -> int:
    """Free bytes of the disk that holds `folder` (or would: its nearest existing parent)."""
    return shutil.disk_usage(next(p for p in (folder, *folder.parents) if p.exists())).free


def _cache_full(cache: Path, name: str, needed: int, why: str) -> CacheFull:
    """CacheFull for dataset `name` in `cache`, with the free space measured now."""
    free = _free_bytes(cache)
    return CacheFull(
        f"the dataset cache {cache} ({DATA_CACHE.name}) has no room for dataset {name!r}: {why}; it needs "
        f"{needed:,} bytes and {free:,} bytes are free. Free space there or set {DATA_CACHE.name} to a "
        "folder on a larger disk; the run is handed back, not failed",
        folder=cache, needed=needed, free=free,
    )  # fmt: skip


def _check_room(cache: Path, name: str, needed: int) -> None:
    """Raise CacheFull when the disk of `cache` has fewer than `needed` bytes free."""
    if _free_bytes(cache) < needed:
        raise _cache_full(cache, name, needed, "checked before downloading")


def fetch_dataset(store: Storage, name: str, cache_dir: str | Path | None = None) -> Path:
    """A verified local copy of a stored dataset, downloaded once per manifest hash.

    Returns:
        the local dataset root (`<cache_dir>/<hash>`).
    Raises:
        ValueError: no such dataset, or a downloaded file whose checksum differs from the manifest
            (named; the partial copy is discarded).
        CacheFull: the cache's disk has less room than `cache_room_needed` before downloading, or a write
            of the download met a full disk (ENOSPC) or quota (EDQUOT); the partial copy is removed.
    """
    manifest = read_manifest(store, name)
    prefix = files_prefix(manifest)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    needed = cache_room_needed(manifest)

    def download(tmp: Path) -> None:
        _check_room(cache, name, needed)
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

    try:
        return _published(cache, manifest["hash"], download)  # removes its partial folder on any error
    except OSError as exc:
        if isinstance(exc, CacheFull) or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        why = (f"a write of the download failed ({os.strerror(exc.errno)}; with bytes free, the disk is out "
               "of inodes or the quota is reached)")  # fmt: skip
        raise _cache_full(cache, name, needed, why) from exc


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
