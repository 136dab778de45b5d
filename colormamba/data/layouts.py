"""Dataset readers: find and check the NIR/RGB pairs of a split, in the VCIP2020 or the plain folder layout.

Pairs are matched by their shared name, never by sorted position: zipping two sorted file lists (as the
reference does) silently shifts every later pair after one missing file, and even a complete VCIP2020 set
sorts differently on the two sides (`x_nir.png` < `x_o_nir.png` but `x_o_rgb_reg.png` < `x_rgb_reg.png`).
Every problem a split has is collected and reported at once, each line naming its file or folder, because a
user fixing a dataset wants the whole list, not one error per upload.

Hidden files (names starting with '.', such as macOS `._x_nir.png` resource forks) and files without an
image suffix (notes, `Thumbs.db`, a `manifest.json`) are ignored; an image whose name does not follow the
layout is a problem, not silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where images are read: listing and checking a layout do without it
    import torch

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # matched case-insensitively
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
class Layout:
    """Where a folder layout keeps each split and how its image names end.

    Attributes:
        name: the layout's name ("vcip2020" or "plain").
        split_dirs: split -> (NIR folder, RGB folder) relative to the root; one folder for both when NIR
            and RGB images sit side by side (VCIP2020's Validation/ and Testing/).
        nir_suffixes: accepted endings of NIR file names (case-insensitive); the pair name is what precedes
            the ending. The first one is what the synthetic generator writes.
        rgb_suffixes: the same for RGB file names.
    """

    name: str
    split_dirs: dict[str, tuple[str, str]]
    nir_suffixes: tuple[str, ...]
    rgb_suffixes: tuple[str, ...]

    def folders(self, root: Path, split: str) -> tuple[Path, Path]:
        """(NIR folder, RGB folder) of `split` under `root`."""
        nir_dir, rgb_dir = self.split_dirs[split]
        return root / nir_dir, root / rgb_dir

    def pair_paths(self, root: Path, split: str, name: str) -> tuple[Path, Path]:
        """(NIR path, RGB path) of the pair `name` of `split` in this layout, with the first suffixes."""
        nir_dir, rgb_dir = self.folders(root, split)
        return nir_dir / f"{name}{self.nir_suffixes[0]}", rgb_dir / f"{name}{self.rgb_suffixes[0]}"


VCIP2020 = Layout(
    name="vcip2020",
    split_dirs={
        "train": ("NIR", "RGB-Registered"),
        "val": ("Validation", "Validation"),
        "test": ("Testing", "Testing"),
    },
    nir_suffixes=("_nir.png",),
    rgb_suffixes=("_rgb_reg.png",),
)
PLAIN = Layout(
    name="plain",
    split_dirs={split: (f"{split}/nir", f"{split}/rgb") for split in SPLITS},
    nir_suffixes=IMAGE_SUFFIXES,
    rgb_suffixes=IMAGE_SUFFIXES,
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


def _strip_suffix(filename: str, suffixes: tuple[str, ...]) -> str | None:
    """The pair name of `filename`, or None when it has none of `suffixes` (or nothing before it)."""
    lower = filename.lower()
    for suffix in suffixes:
        if lower.endswith(suffix) and len(filename) > len(suffix):
            return filename[: -len(suffix)]
    return None


def _is_candidate(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(IMAGE_SUFFIXES)


def _scan(
    folder: Path, kinds: list[tuple[str, tuple[str, ...]]], problems: list[str]
) -> dict[str, dict[str, list[Path]]]:
    """Group the images of one folder by kind ("NIR"/"RGB") and pair name.

    Args:
        folder: an existing folder.
        kinds: the kinds stored in this folder, each with its accepted suffixes.
        problems: images that match no kind are reported here.
    Returns:
        kind -> name -> paths (several paths for one name are duplicates, reported by the caller).
    """
    found: dict[str, dict[str, list[Path]]] = {kind: {} for kind, _ in kinds}
    for path in sorted(folder.iterdir()):
        if not _is_candidate(path):
            continue
        for kind, suffixes in kinds:
            name = _strip_suffix(path.name, suffixes)
            if name is not None:
                found[kind].setdefault(name, []).append(path)
                break
        else:
            wanted = " or ".join(f"<name>{suffixes[0]}" for _, suffixes in kinds)
            problems.append(f"{path}: image name does not follow the layout (expected {wanted})")
    return found


def _expected_name(name: str, suffixes: tuple[str, ...]) -> str:
    return f"{name}{suffixes[0]}" if len(suffixes) == 1 else f"{name} with one of {', '.join(suffixes)}"


def _unique(kind: str, folder: Path, by_name: dict[str, list[Path]], problems: list[str]) -> dict[str, Path]:
    """Keep names with exactly one file; report the others (e.g. a.png and a.jpg) with every path."""
    unique = {}
    for name, paths in by_name.items():
        if len(paths) == 1:
            unique[name] = paths[0]
        else:
            listed = ", ".join(str(p) for p in paths)
            problems.append(f"{folder}: {len(paths)} {kind} images share the name {name!r}: {listed}")
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


def _index(lay: Layout, nir_dir: Path, rgb_dir: Path, problems: list[str]) -> dict[str, dict[str, Path]]:
    """kind ("NIR"/"RGB") -> name -> file, scanning each existing folder once (both kinds may share one)."""
    kinds = {"NIR": (nir_dir, lay.nir_suffixes), "RGB": (rgb_dir, lay.rgb_suffixes)}
    found: dict[str, dict[str, list[Path]]] = {"NIR": {}, "RGB": {}}
    for folder in dict.fromkeys((nir_dir, rgb_dir)):
        if folder.is_dir():
            in_folder = [(kind, suffixes) for kind, (where, suffixes) in kinds.items() if where == folder]
            for kind, by_name in _scan(folder, in_folder, problems).items():
                found[kind].update(by_name)
    return {kind: _unique(kind, kinds[kind][0], found[kind], problems) for kind in kinds}


def _report_unpaired(
    files: dict[str, Path],
    partners: dict[str, Path],
    partner_kind: str,
    partner_dir: Path,
    partner_suffixes: tuple[str, ...],
    problems: list[str],
) -> None:
    """Add a problem for each file of `files` whose name has no partner."""
    for name in sorted(set(files) - set(partners)):
        expected = _expected_name(name, partner_suffixes)
        problems.append(f"{files[name]}: no {partner_kind} partner in {partner_dir} (expected {expected})")


def list_pairs(root: str | Path, split: str, layout: str = "auto") -> list[Pair]:
    """The NIR/RGB pairs of one split, matched by name.

    Args:
        root: dataset root folder.
        split: "train", "val" or "test".
        layout: "auto" (detect), "vcip2020" or "plain".
    Returns:
        Pairs sorted by name; never empty.
    Raises:
        DatasetError: listing every problem of the split (missing partner on either side, duplicate names,
            misnamed images, missing folder), or an empty split naming its folder.
    """
    root = _existing_root(root)
    lay = get_layout(root, layout)
    problems: list[str] = []
    nir_dir, rgb_dir = _split_folders(root, lay, split, problems)
    found = _index(lay, nir_dir, rgb_dir, problems)
    nir, rgb = found["NIR"], found["RGB"]
    if nir_dir.is_dir() and rgb_dir.is_dir():  # a missing folder is reported once, not once per file
        _report_unpaired(nir, rgb, "RGB", rgb_dir, lay.rgb_suffixes, problems)
        _report_unpaired(rgb, nir, "NIR", nir_dir, lay.nir_suffixes, problems)
    summary = f"split {split!r} of {root} ({lay.name} layout)"
    if problems:
        raise DatasetError(summary, problems)
    if not nir:
        where = nir_dir if nir_dir == rgb_dir else f"{nir_dir} / {rgb_dir}"
        raise DatasetError(f"{summary} is empty: no NIR/RGB image pairs in {where}")
    return [Pair(name, nir[name], rgb[name]) for name in sorted(nir)]


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
