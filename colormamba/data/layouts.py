"""Dataset readers: find and check the NIR/RGB pairs of a split, in the VCIP2020 or the plain folder layout.

Pairs are matched by their shared name, never by sorted position: zipping two sorted file lists (as the
reference does) silently shifts every later pair after one missing file, and even a complete VCIP2020 set
sorts differently on the two sides (`x_nir.png` < `x_o_nir.png` but `x_o_rgb_reg.png` < `x_rgb_reg.png`).

Names are matched the way these files are named in the wild: the distributed VCIP2020 test split pairs
`testing_0001_nir_reg.png` with `Testing_0001_rgb_reg.png`. A file's pair name is its stem without a kind
ending (`_nir`, `_nir_reg`; `_rgb`, `_rgb_reg`), compared case-insensitively; in a folder that holds one
kind only (VCIP2020's `NIR/`, the plain layout's `nir/`) the ending may be absent. A pair keeps its NIR
file's name as written.

What is not a pair is *skipped*, listed once with the reason (an image without a partner, a subfolder such
as the distributed `Testing/visual/`, an image named as neither kind in a shared folder), never an error:
real datasets ship extras. What would make a pair ambiguous or a split unusable is an error naming every
file: two files of one kind with one name (`x_nir.png` and `x_NIR.png`, `a.png` and `a.jpg`), a missing
folder, an empty split. Errors are collected and reported at once, because a user fixing a dataset wants
the whole list, not one error per upload.

Hidden files (names starting with '.', such as macOS `._x_nir.png` resource forks) and files without an
image suffix (notes, `Thumbs.db`, a `manifest.json`) are ignored silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where images are read: listing and checking a layout do without it
    import torch

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # matched case-insensitively
# Kind endings of a file's stem, longest first (`x_nir_reg` is NIR "x", not "x_nir"); case-insensitive.
KIND_ENDINGS = {"NIR": ("_nir_reg", "_nir"), "RGB": ("_rgb_reg", "_rgb")}
MAX_LISTED_PROBLEMS = 25  # lines in one error message; the rest are counted


class DatasetError(ValueError):
    """A problem with a dataset; `problems` holds every one found, each naming its file or folder."""

    def __init__(self, summary: str, problems: Sequence[str] = ()) -> None:
        self.summary = summary
        self.problems = list(problems)
        super().__init__(_format_problems(summary, self.problems))


def _format_problems(summary: str, problems: list[str]) -> str:
    if not problems:
        return summary
    lines = [f"{summary} ({len(problems)} problem{'s' if len(problems) > 1 else ''}):"]
    lines += [f"  - {p}" for p in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more")
    return "\n".join(lines)


@dataclass(frozen=True)
class Pair:
    """One NIR image and its RGB partner, matched by `name`."""

    name: str
    nir: Path
    rgb: Path


@dataclass(frozen=True)
class Skipped:
    """A file or folder of a split that is not part of any pair, and why."""

    path: Path
    why: str

    def __str__(self) -> str:
        return f"{self.path}: {self.why}"


@dataclass(frozen=True)
class SplitListing:
    """A split's pairs (sorted by name, never empty) and what was skipped."""

    split: str
    pairs: list[Pair]
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class Layout:
    """Where a folder layout keeps each split and how the synthetic generator names its files.

    Attributes:
        name: the layout's name ("vcip2020" or "plain").
        split_dirs: split -> (NIR folder, RGB folder) relative to the root; one folder for both when NIR
            and RGB images sit side by side (VCIP2020's Validation/ and Testing/).
        written: the (NIR, RGB) file endings the synthetic generator writes (any KIND_ENDINGS and
            IMAGE_SUFFIXES are read).
    """

    name: str
    split_dirs: dict[str, tuple[str, str]]
    written: tuple[str, str]

    def folders(self, root: Path, split: str) -> tuple[Path, Path]:
        """(NIR folder, RGB folder) of `split` under `root`."""
        nir_dir, rgb_dir = self.split_dirs[split]
        return root / nir_dir, root / rgb_dir

    def pair_paths(self, root: Path, split: str, name: str) -> tuple[Path, Path]:
        """(NIR path, RGB path) that the synthetic generator writes for the pair `name` of `split`."""
        nir_dir, rgb_dir = self.folders(root, split)
        return nir_dir / f"{name}{self.written[0]}", rgb_dir / f"{name}{self.written[1]}"


VCIP2020 = Layout(
    name="vcip2020",
    split_dirs={
        "train": ("NIR", "RGB-Registered"),
        "val": ("Validation", "Validation"),
        "test": ("Testing", "Testing"),
    },
    written=("_nir.png", "_rgb_reg.png"),
)
PLAIN = Layout(
    name="plain",
    split_dirs={split: (f"{split}/nir", f"{split}/rgb") for split in SPLITS},
    written=(".png", ".png"),
)
LAYOUTS = {layout.name: layout for layout in (VCIP2020, PLAIN)}


def _existing_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root not found (or not a folder)")
    return root


def _present(root: Path, layout: Layout) -> bool:
    return any(folder.is_dir() for split in SPLITS for folder in layout.folders(root, split))


def detect_layout(root: str | Path) -> str:
    """Name of the layout whose split folders exist under `root`.

    Raises:
        DatasetError: root missing, no known layout, or folders of both layouts (pass the layout explicitly).
    """
    root = _existing_root(root)
    found = [name for name, layout in LAYOUTS.items() if _present(root, layout)]
    if len(found) == 1:
        return found[0]
    if found:
        raise DatasetError(f"{root}: holds folders of several layouts ({', '.join(found)}); choose one")
    expected = "; ".join(
        f"{name}: {' + '.join(dict.fromkeys(lay.split_dirs['train']))} ..." for name, lay in LAYOUTS.items()
    )
    raise DatasetError(f"{root}: no known dataset layout found (expected {expected})")


def get_layout(root: str | Path, layout: str = "auto") -> Layout:
    """The Layout to read `root` with: the named one, or the detected one for "auto"."""
    if layout == "auto":
        return LAYOUTS[detect_layout(root)]
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown dataset layout {layout!r}; expected 'auto' or one of {sorted(LAYOUTS)}")
    return LAYOUTS[layout]


def available_splits(root: str | Path, layout: str = "auto") -> list[str]:
    """The splits (in SPLITS order) that have at least one of their folders under `root`."""
    root = _existing_root(root)
    lay = get_layout(root, layout)
    return [split for split in SPLITS if any(folder.is_dir() for folder in lay.folders(root, split))]


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(IMAGE_SUFFIXES)


def _kind_and_name(stem: str) -> tuple[str | None, str]:
    """("NIR" | "RGB" | None, the stem without its kind ending), matched case-insensitively."""
    lower = stem.lower()
    for kind, endings in KIND_ENDINGS.items():
        for ending in endings:
            if lower.endswith(ending) and len(stem) > len(ending):
                return kind, stem[: -len(ending)]
    return None, stem


def _pair_name(path: Path) -> str:
    """A file's pair name as written: its stem without the kind ending."""
    return _kind_and_name(path.name[: -len(path.suffix)])[1]


def _endings(kind: str) -> str:
    return "/".join(KIND_ENDINGS[kind])


def _scan(folder: Path, kinds: tuple[str, ...], skipped: list[Skipped]) -> dict[str, dict[str, list[Path]]]:
    """Group the images of one folder by kind and case-folded pair name; skip the rest.

    Args:
        folder: an existing folder.
        kinds: the kinds this folder holds; with one kind, a file without a kind ending is of that kind.
        skipped: subfolders and images that cannot be of a kind here are appended.
    Returns:
        kind -> case-folded name -> paths (several paths for one name: ambiguous, reported by the caller).
    """
    found: dict[str, dict[str, list[Path]]] = {kind: {} for kind in kinds}
    for path in sorted(folder.iterdir()):
        if path.is_dir() and not path.name.startswith("."):
            images = sum(1 for p in path.rglob("*") if _is_image(p))
            skipped.append(Skipped(path, f"a subfolder ({images} image(s)); a split's images are not read "
                                         "from subfolders"))  # fmt: skip
            continue
        if not _is_image(path):
            continue
        kind, name = _kind_and_name(path.name[: -len(path.suffix)])
        if kind is None and len(kinds) == 1:
            kind = kinds[0]
        if kind in kinds:
            found[kind].setdefault(name.lower(), []).append(path)
        elif kind is None:
            endings = " or ".join(f"{k} (<name>{_endings(k)}.png)" for k in kinds)
            skipped.append(Skipped(path, f"named as neither {endings}"))
        else:
            skipped.append(Skipped(path, f"named as a {kind} image ({_endings(kind)}) in the folder of "
                                         f"{' and '.join(kinds)} images"))  # fmt: skip
    return found


def _unique(kind: str, by_name: dict[str, list[Path]], problems: list[str]) -> dict[str, Path]:
    """Keep names with exactly one file; report the others (x_nir.png and x_NIR.png) with every path."""
    unique = {}
    for key, paths in by_name.items():
        if len(paths) == 1:
            unique[key] = paths[0]
        else:
            listed = ", ".join(str(p) for p in paths)
            problems.append(f"{len(paths)} {kind} images have the pair name {key!r} (names are matched "
                            f"ignoring case and extension): {listed}")  # fmt: skip
    return unique


def _split_folders(root: Path, lay: Layout, split: str, problems: list[str]) -> tuple[Path, Path]:
    """The split's two folders; a split with neither is an error, one missing folder is a problem."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    nir_dir, rgb_dir = lay.folders(root, split)
    if not nir_dir.is_dir() and not rgb_dir.is_dir():
        where = nir_dir if nir_dir == rgb_dir else f"{nir_dir} and {rgb_dir}"
        raise DatasetError(f"split {split!r} not found in {root} ({lay.name} layout): no folder {where}")
    for kind, folder in (("NIR", nir_dir), ("RGB", rgb_dir)):
        if not folder.is_dir():
            problems.append(f"{folder}: folder missing (holds the {kind} images of split {split!r})")
    return nir_dir, rgb_dir


def _index(
    nir_dir: Path, rgb_dir: Path, problems: list[str], skipped: list[Skipped]
) -> dict[str, dict[str, Path]]:
    """kind -> case-folded name -> file, scanning each existing folder once (both kinds may share one)."""
    where = {"NIR": nir_dir, "RGB": rgb_dir}
    found: dict[str, dict[str, list[Path]]] = {"NIR": {}, "RGB": {}}
    for folder in dict.fromkeys((nir_dir, rgb_dir)):
        if folder.is_dir():
            kinds = tuple(kind for kind, f in where.items() if f == folder)
            for kind, by_name in _scan(folder, kinds, skipped).items():
                found[kind].update(by_name)
    return {kind: _unique(kind, found[kind], problems) for kind in where}


def list_split(root: str | Path, split: str, layout: str = "auto") -> SplitListing:
    """The NIR/RGB pairs of one split, matched by name, and the files and folders skipped.

    Args:
        root: dataset root folder.
        split: "train", "val" or "test".
        layout: "auto" (detect), "vcip2020" or "plain".
    Returns:
        The pairs sorted by name (never empty) and the skipped extras (unpaired images, subfolders, images
        named as neither kind), each with its reason.
    Raises:
        DatasetError: listing every problem of the split (several files of one kind with one pair name, a
            missing folder), or an empty split naming its folder and what was skipped.
    """
    root = _existing_root(root)
    lay = get_layout(root, layout)
    problems: list[str] = []
    skipped: list[Skipped] = []
    nir_dir, rgb_dir = _split_folders(root, lay, split, problems)
    found = _index(nir_dir, rgb_dir, problems, skipped)
    nir, rgb = found["NIR"], found["RGB"]
    summary = f"split {split!r} of {root} ({lay.name} layout)"
    if problems:
        raise DatasetError(summary, problems)
    for key in sorted(set(nir) ^ set(rgb)):
        kind, partner, folder = ("NIR", "RGB", rgb_dir) if key in nir else ("RGB", "NIR", nir_dir)
        path = (nir if key in nir else rgb)[key]
        skipped.append(Skipped(path, f"{kind} image without an {partner} partner in {folder} (<name>"
                                     f"{_endings(partner)}, any case)"))  # fmt: skip
    pairs = sorted(
        (Pair(_pair_name(nir[k]), nir[k], rgb[k]) for k in set(nir) & set(rgb)), key=lambda p: p.name
    )
    if not pairs:
        where = nir_dir if nir_dir == rgb_dir else f"{nir_dir} / {rgb_dir}"
        extra = f"; skipped {len(skipped)}: " + "; ".join(map(str, skipped[:5])) if skipped else ""
        raise DatasetError(f"{summary} is empty: no NIR/RGB image pairs in {where}{extra}")
    return SplitListing(split, pairs, sorted(skipped, key=lambda s: str(s.path)))


def list_pairs(root: str | Path, split: str, layout: str = "auto") -> list[Pair]:
    """The NIR/RGB pairs of one split, matched by name (`list_split` without what it skipped)."""
    return list_split(root, split, layout).pairs


def _read(pair: Pair, problems: list[str]) -> tuple[torch.Tensor, torch.Tensor] | None:
    from colormamba.imaging import load_image

    """Both images of a pair, or None after adding every problem (unreadable, channels, size) to problems."""
    images = []
    for path, channels in ((pair.nir, 1), (pair.rgb, 3)):
        try:
            images.append(load_image(path, channels))
        except ValueError as exc:  # load_image's message names the file
            problems.append(str(exc))
    if len(images) < 2:
        return None
    nir, rgb = images
    if nir.shape[1:] != rgb.shape[1:]:
        (nh, nw), (rh, rw) = nir.shape[1:], rgb.shape[1:]
        problems.append(f"size mismatch: {pair.nir} is {nh}x{nw} (HxW) but {pair.rgb} is {rh}x{rw}")
        return None
    return nir, rgb


def load_pair(pair: Pair) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one pair.

    Returns:
        nir (1, H, W) and rgb (3, H, W), float32 in [0, 1].
    Raises:
        DatasetError: naming the file(s) that cannot be read, have the wrong channel count or size.
    """
    problems: list[str] = []
    images = _read(pair, problems)
    if images is None:
        raise DatasetError(f"pair {pair.name!r}", problems)
    return images


def iter_pairs(pairs: Iterable[Pair]) -> Iterator[tuple[Pair, torch.Tensor, torch.Tensor]]:
    """Read every pair, going on past bad ones so that all problems are reported together.

    Yields:
        (pair, nir (1, H, W), rgb (3, H, W)) for each good pair, in order.
    Raises:
        DatasetError: after the last pair, listing every problem found, if there was any.
    """
    problems: list[str] = []
    count = 0
    for pair in pairs:
        count += 1
        images = _read(pair, problems)
        if images is not None:
            yield pair, *images
    if problems:
        raise DatasetError(f"reading {count} NIR/RGB pairs", problems)


def check_pairs(pairs: Iterable[Pair]) -> dict[str, tuple[int, int]]:
    """Open every file of every pair and verify it: readable, 8-bit, 1-channel NIR, 3-channel RGB, same size.

    Returns:
        name -> (H, W) of each pair (sizes may differ between pairs in the plain layout).
    Raises:
        DatasetError: listing every problem, each naming its file(s).
    """
    return {pair.name: (nir.shape[1], nir.shape[2]) for pair, nir, _ in iter_pairs(pairs)}
