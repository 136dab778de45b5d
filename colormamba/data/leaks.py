"""Find pairs that appear in more than one split, by content: the same photo in train and test makes a test
score partly a training score.

Two checks, both on decoded pixels, never on file bytes: the same pixels can be stored as many different
files (another PNG encoder or compression level, a metadata chunk, a re-save by an image viewer), and
a byte comparison would miss every one of them.

- Exact: `pixel_hash`, a SHA-256 over the decoded NIR (8-bit grey) and RGB (8-bit, 3 channels) pixels and
  their shapes. Equal hashes are the same pair whatever the files' bytes.
- Near: a fingerprint per pair built from small band-passed thumbnails of four channels (NIR, RGB
  luminance and two opponent chroma channels), each zero-mean and normalised, compared by normalised
  correlation. It is robust to re-encoding (JPEG quality 60 and up), to resizing to any size (aspect ratio
  included), to horizontal and vertical flips (and both), to crops of up to MAX_CROP of each side
  (anywhere, with or without resizing back), to brightness/contrast changes of a channel, and to rotations
  of a degree or two. It is not robust to larger rotations (5 degrees: mostly found; 90: never), to larger
  crops (15%: found two times in three; 20%: never), to overlapping views of one photo (shifted by a
  quarter of a side they score at most 0.57; the real VCIP2020 copy has such views, and a few other shots
  of the same scene, across its splits, and they are not reported), to an RGB image turned grey (~0.71),
  nor to a copy of only the NIR or only the RGB image of a pair; a flat pair is only found as an exact copy.

The near check runs in two stages. All pairs of two splits are compared at once, by one matrix product,
on coarse COARSE_SIZE thumbnails with a coarse grid of crops; the few pairs that come close to the
threshold are compared again on FINE_SIZE thumbnails with a fine grid of crops, and that score is the one
reported. numpy and PIL only: `dataset check` runs this without torch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from PIL import Image

from colormamba.data.layouts import SPLITS, Pair

WORK_SIZE = 64
"""Both images of a pair are first area-averaged to WORK_SIZE x WORK_SIZE, whatever their size and aspect
ratio (a resized or cropped copy lands on the same grid): the 32 x 32 thumbnails need no more, and every
pair then has arrays of one shape."""

COARSE_SIZE = 16
"""Side of the thumbnails that compare every pair with every pair of the other splits. On the real VCIP2020
copy (418 pairs), at 16 x 16 every copy made of its images (each transformation the module docstring
lists) scores at least 0.93 and different photos at most 0.70 (0.75 within train): enough to pick the
candidates, at a quarter of the cost of 32 x 32. At 12 x 12 different photos already reach 0.75."""

FINE_SIZE = 32
"""Side of the thumbnails that score the candidates, and give the reported score. At 32 x 32 different
photos of the real copy score at most 0.63 across splits (0.69 within train), while copies still score at
least 0.95."""

MAX_CROP = 0.10
"""Largest crop covered, as a fraction of a side, split in any way between its two ends: one side of every
comparison is tried with every crop of a grid up to this much, on both axes."""

COARSE_STEP = 0.05
"""Crop grid step of the coarse stage: 6 crops per axis, 36 in all. A crop between two grid points is off by
at most 2.5% of a side, which blurred 16 x 16 thumbnails tolerate: such copies still scored >= 0.93."""

FINE_STEP = 0.025
"""Crop grid step of the fine stage: 15 crops per axis, 225 in all: copies cropped at random within
MAX_CROP (resized back or not) score >= 0.975 (>= 0.95 after a JPEG re-encode and a resize too)."""

THRESHOLD = 0.80
"""Default score from which two pairs are near copies. Calibrated on the real VCIP2020 copy: the highest
score of two different photos in two splits is 0.628 (0.685 within train: overlapping views cut from one
larger photo), and copies of 80 of its pairs made by every transformation the module docstring lists (and
combinations: crop + JPEG 75 + resize to 128) score at least 0.952. 0.80 leaves more than 0.1 on each
side."""

CANDIDATE_MARGIN = 0.15
"""Pairs whose coarse score is at least `threshold - CANDIDATE_MARGIN` are scored on the fine grid. On the
real copy and on the copies made of it, a fine score never exceeded the coarse one by more than 0.06 (for
copies cropped between two points of the coarse grid)."""

FLAT_RMS = 1.0 / 255.0
"""A channel whose band-passed thumbnail varies by less than one grey level (RMS) is flat: it is not
stretched to unit norm (a grey RGB image has no chroma, and its JPEG noise must not count as some)."""

READ_THREADS = 4
"""Threads that decode images (at most one per core): PIL decodes without holding the GIL, and decoding is
most of the check's time."""


class _Stage(NamedTuple):
    """One stage's thumbnails: side, crop grid step, and the band-pass applied on the thumbnail grid."""

    size: int
    step: float
    blur: float  # sigma in cells: absorbs what a resize, JPEG blocks or an off-grid crop shift (< 1 cell)
    high_pass: float  # sigma in cells of the wide blur subtracted: see _COARSE


_COARSE = _Stage(COARSE_SIZE, COARSE_STEP, blur=1.0, high_pass=4.0)
"""Without the high-pass (a thumbnail minus its wide blur), the bright sky over darker ground that most
landscapes share dominates the correlation: different photos of the real copy scored up to 0.91 and copies
as little as 0.82, and no threshold told them apart."""
_FINE = _Stage(FINE_SIZE, FINE_STEP, blur=1.5, high_pass=8.0)

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_FLIPS = 4  # none, horizontal, vertical, both


@dataclass(frozen=True)
class Duplicate:
    """One pair found in two splits: `splits` (a, b) with a the earlier in SPLITS order, `pairs` their
    names in the same order, `kind` "exact" (same pixels, score 1.0) or "near" (fingerprint score)."""

    splits: tuple[str, str]
    pairs: tuple[str, str]
    kind: str
    score: float

    def to_dict(self) -> dict[str, object]:
        """{"splits": [a, b], "pairs": [name_a, name_b], "kind": ..., "score": float}."""
        return {
            "splits": list(self.splits),
            "pairs": list(self.pairs),
            "kind": self.kind,
            "score": self.score,
        }


def _read(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """The pair's NIR (H, W) and RGB (H, W, 3) as uint8, whatever mode the files are stored in."""
    arrays = []
    for path, mode in ((pair.nir, "L"), (pair.rgb, "RGB")):
        try:
            with Image.open(path) as img:
                arrays.append(np.asarray(img.convert(mode)))
        except (OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read image ({exc})") from exc
    return arrays[0], arrays[1]


def _hash_pixels(nir: np.ndarray, rgb: np.ndarray) -> str:
    digest = hashlib.sha256()
    for label, array in (("nir", nir), ("rgb", rgb)):
        digest.update(f"{label} {'x'.join(map(str, array.shape))} uint8\n".encode())
        digest.update(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def pixel_hash(pair: Pair) -> str:
    """SHA-256 (hex) over the decoded pixels of a pair: NIR as 8-bit grey, RGB as 8-bit RGB, shapes included.

    Two pairs hash alike exactly when their pixels are equal, however their files are encoded.
    Raises:
        ValueError: a file cannot be read, naming it.
    """
    return _hash_pixels(*_read(pair))


def _work_channels(nir: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """(4, WORK_SIZE, WORK_SIZE) float32 in [0, 1] units: NIR, luminance, red-green, yellow-blue."""
    size = (WORK_SIZE, WORK_SIZE)
    n = np.asarray(Image.fromarray(nir).resize(size, Image.Resampling.BOX), np.float32) / 255.0
    c = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX), np.float32) / 255.0
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    return np.stack([n, c @ _LUMA, r - g, 0.5 * (r + g) - b])


def _crop_grid(step: float) -> list[tuple[float, float]]:
    """Crops of one axis, (fraction cut at the start, at the end) totalling at most MAX_CROP; (0, 0) first."""
    n = round(MAX_CROP / step)
    return [(i * step, j * step) for i in range(n + 1) for j in range(n + 1 - i)]


def _gauss(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size)
    k = np.exp(-0.5 * ((x[:, None] - x[None, :]) / sigma) ** 2)
    return k / k.sum(axis=1, keepdims=True)


@lru_cache(maxsize=4)
def _axis_operator(stage: _Stage) -> np.ndarray:
    """(crops * size, WORK_SIZE): per crop of the size's grid, area-average the kept interval into `size`
    cells, then band-pass (blur minus wide blur); applied to both axes, it gives every crop's thumbnail."""
    size = stage.size
    band = _gauss(size, stage.blur)
    band = band - _gauss(size, stage.high_pass) @ band
    pixels = np.arange(WORK_SIZE + 1, dtype=np.float64)  # pixel edges
    blocks = []
    for start, end in _crop_grid(stage.step):
        cells = WORK_SIZE * (start + (1.0 - start - end) * np.arange(size + 1) / size)  # cell edges
        lo = np.maximum(cells[:-1, None], pixels[None, :-1])
        hi = np.minimum(cells[1:, None], pixels[None, 1:])
        area = np.clip(hi - lo, 0.0, None)  # (cell, pixel) overlap
        blocks.append(band @ (area / area.sum(axis=1, keepdims=True)))
    return np.concatenate(blocks).astype(np.float32)


def _normalise(thumbs: np.ndarray) -> np.ndarray:
    """(..., 4, s, s) -> (..., 4 s s): each channel zero-mean, unit norm (flat ones kept small), then the
    whole vector unit norm, so that a dot product is a correlation."""
    size = thumbs.shape[-1]
    thumbs = thumbs - thumbs.mean(axis=(-1, -2), keepdims=True)
    norm = np.sqrt((thumbs**2).sum(axis=(-1, -2), keepdims=True))
    thumbs = thumbs / np.maximum(norm, FLAT_RMS * size)
    flat = thumbs.reshape(*thumbs.shape[:-3], -1)
    return flat / np.maximum(np.linalg.norm(flat, axis=-1, keepdims=True), 1e-6)


def _hash_and_work(pair: Pair) -> tuple[str, np.ndarray]:
    nir, rgb = _read(pair)
    return _hash_pixels(nir, rgb), _work_channels(nir, rgb)


def _both_axes(op: np.ndarray, work: np.ndarray) -> np.ndarray:
    """op @ image @ op.T for every channel of every pair, (n, c, W, W) -> (n, c, k, k), as two large
    matrix products (numpy's stacked matmul of small matrices is several times slower)."""
    n, c, h, w = work.shape
    k = op.shape[0]
    cols = (work.reshape(n * c * h, w) @ op.T).reshape(n * c, h, k)
    rows = op @ cols.transpose(1, 0, 2).reshape(h, n * c * k)
    return rows.reshape(k, n, c, k).transpose(1, 2, 0, 3)


def _crops(work: np.ndarray, stage: _Stage) -> np.ndarray:
    """(n, 4, W, W) work arrays -> (n, crops^2, 4 size^2): the fingerprint of every crop of the grid."""
    size, op = stage.size, _axis_operator(stage)
    k = op.shape[0] // size
    thumbs = _both_axes(op, work).reshape(len(work), 4, k, size, k, size)
    return _normalise(thumbs.transpose(0, 2, 4, 1, 3, 5).reshape(len(work), k * k, 4, size, size))


def _flips(work: np.ndarray, stage: _Stage) -> np.ndarray:
    """(n, 4, W, W) -> (n, 4 flips, 4 size^2): the uncropped fingerprint, as is and flipped."""
    # the grid's first crop is the whole image, and its operator is symmetric: flips commute with it
    base = _both_axes(_axis_operator(stage)[: stage.size], work)
    flips = np.stack([base, base[..., ::-1], base[..., ::-1, :], base[..., ::-1, ::-1]], axis=1)
    return _normalise(flips)


def _best(crops: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """(n, k, d) and (m, 4, d) -> (n, m): the best correlation over the crops of one side and flips of the
    other, by one matrix product."""
    n, k, d = crops.shape
    m = flips.shape[0]
    return (
        (crops.reshape(n * k, d) @ flips.reshape(m * _FLIPS, d).T).reshape(n, k, m, _FLIPS).max(axis=(1, 3))
    )


def _coarse_scores(works: list[np.ndarray], chunk: int = 64) -> dict[tuple[int, int], np.ndarray]:
    """(split index a, b) with a < b -> (n_a, n_b) coarse scores: best over crops of either side."""
    flips = [_flips(w, _COARSE) for w in works]
    directed: dict[tuple[int, int], np.ndarray] = {}
    for a, work in enumerate(works):
        others = [b for b in range(len(works)) if b != a]
        parts: dict[int, list[np.ndarray]] = {b: [] for b in others}
        for start in range(0, len(work), chunk):  # crops take memory: a chunk of pairs at a time
            crops = _crops(work[start : start + chunk], _COARSE)
            for b in others:
                parts[b].append(_best(crops, flips[b]))
        for b in others:
            directed[a, b] = np.concatenate(parts[b])
    return {
        (a, b): np.maximum(directed[a, b], directed[b, a].T)
        for a in range(len(works))
        for b in range(a + 1, len(works))
    }


def _fine_scores(
    works: list[np.ndarray], candidates: list[tuple[int, int, int, int]]
) -> dict[tuple[int, int, int, int], float]:
    """(split a, index i, split b, index j) -> fine score, for the candidate pairs only."""
    keys = sorted({(a, i) for a, i, _, _ in candidates} | {(b, j) for _, _, b, j in candidates})
    flips = {key: _flips(works[key[0]][key[1] : key[1] + 1], _FINE)[0] for key in keys}
    partners: dict[tuple[int, int], list[tuple[int, int]]] = {key: [] for key in keys}
    for a, i, b, j in candidates:
        partners[a, i].append((b, j))
        partners[b, j].append((a, i))
    best: dict[tuple[tuple[int, int], tuple[int, int]], float] = {}
    for key in keys:  # one pair's 225 crops at a time, against the flips of its few candidates
        crops = _crops(works[key[0]][key[1] : key[1] + 1], _FINE)
        scores = _best(crops, np.stack([flips[p] for p in partners[key]]))[0]
        for other, score in zip(partners[key], scores, strict=True):
            best[key, other] = float(score)
    return {(a, i, b, j): max(best[(a, i), (b, j)], best[(b, j), (a, i)]) for a, i, b, j in candidates}


def find_duplicates(
    pairs_by_split: Mapping[str, Sequence[Pair]],
    threshold: float = THRESHOLD,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Duplicate]:
    """The pairs that appear in two splits: same pixels ("exact"), or near copies (score >= threshold).

    Only pairs of different splits are compared (train-val, train-test, val-test).
    Args:
        pairs_by_split: split ("train", "val", "test") -> its pairs; any subset of the splits.
        threshold: fingerprint score from which a pair is a near copy (default THRESHOLD, calibrated).
        on_progress: called as (pairs read, pairs in all) after each pair is read.
    Returns:
        Duplicates sorted by splits (in SPLITS order), then pair names; a pair may appear in several.
    Raises:
        ValueError: an unknown split, a threshold outside (0, 1], or an unreadable file (naming it).
    """
    unknown = sorted(set(pairs_by_split) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; expected some of {list(SPLITS)}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    splits = [s for s in SPLITS if pairs_by_split.get(s)]
    pairs = [list(pairs_by_split[s]) for s in splits]
    flat = [pair for split_pairs in pairs for pair in split_pairs]
    read: list[tuple[str, np.ndarray]] = []
    # PIL decodes without the GIL: reading is most of the time, and threads share it between the cores
    with ThreadPoolExecutor(max_workers=min(READ_THREADS, os.cpu_count() or 1)) as pool:
        for done, item in enumerate(pool.map(_hash_and_work, flat), start=1):
            read.append(item)
            if on_progress is not None:
                on_progress(done, len(flat))
    hashes: list[list[str]] = []
    works: list[np.ndarray] = []
    start = 0
    for split_pairs in pairs:
        items = read[start : start + len(split_pairs)]
        start += len(split_pairs)
        hashes.append([digest for digest, _ in items])
        works.append(np.stack([work for _, work in items]))

    found: list[Duplicate] = []
    candidates: list[tuple[int, int, int, int]] = []
    for (a, b), scores in _coarse_scores(works).items():
        for i, j in zip(*np.nonzero(scores >= threshold - CANDIDATE_MARGIN), strict=True):
            if hashes[a][i] != hashes[b][j]:
                candidates.append((a, int(i), b, int(j)))
        by_hash: dict[str, list[int]] = {}
        for j, digest in enumerate(hashes[b]):
            by_hash.setdefault(digest, []).append(j)
        for i, digest in enumerate(hashes[a]):
            for j in by_hash.get(digest, []):
                found.append(
                    Duplicate((splits[a], splits[b]), (pairs[a][i].name, pairs[b][j].name), "exact", 1.0)
                )
    for (a, i, b, j), score in _fine_scores(works, candidates).items():
        if score >= threshold:
            near = Duplicate(
                (splits[a], splits[b]),
                (pairs[a][i].name, pairs[b][j].name),
                "near",
                round(min(score, 1.0), 4),
            )
            found.append(near)
    return sorted(found, key=lambda d: (SPLITS.index(d.splits[0]), SPLITS.index(d.splits[1]), d.pairs))


_PRIORITY = ("train", "test", "val")  # of two copies, the one in the later split of this order is dropped


def leak_drops(duplicates: Sequence[Duplicate]) -> dict[str, dict[str, str]]:
    """The copies to drop under "drop the later split's copies": test copies of train pairs, val copies of
    train pairs, val copies of test pairs (train is kept whole; test is what studies report).

    Returns:
        split -> {pair name: why}, only splits that lose pairs, in SPLITS order; the why names the kept copy,
        e.g. "near copy (score 0.981) of train pair 'country_0003'". A pair dropped for several copies keeps
        the reason of the first duplicate in the given order.
    """
    drops: dict[str, dict[str, str]] = {}
    for d in duplicates:
        (sa, sb), (na, nb) = d.splits, d.pairs
        (keep_split, keep), (drop_split, drop) = sorted(
            ((sa, na), (sb, nb)), key=lambda s: _PRIORITY.index(s[0])
        )
        what = "exact copy (same pixels)" if d.kind == "exact" else f"near copy (score {d.score:.3f})"
        drops.setdefault(drop_split, {}).setdefault(drop, f"{what} of {keep_split} pair {keep!r}")
    return {split: dict(sorted(drops[split].items())) for split in SPLITS if split in drops}
