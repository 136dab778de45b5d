"""Pairs in two splits (colormamba.data.leaks): planted copies of every kind are found, with the right kind,
splits and names; different scenes are not; the later split's copies are the ones dropped; the real
VCIP2020 copy's exact duplicates are the ones a brute-force pixel comparison finds."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from colormamba.data.layouts import Pair, list_pairs
from colormamba.data.leaks import THRESHOLD, Duplicate, find_duplicates, leak_drops, pixel_hash
from colormamba.data.synthetic import SCENES, render_scene
from tests.support.real_data import REAL_COPY, REAL_COPY_ABSENT

SIZE = 128  # planted copies are resized to 64 and 100, or cropped by up to 10% of a side


def scene(seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like NIR (H, W) and RGB (H, W, 3) uint8 pair: sky, horizon, fields, shading, texture."""
    rng = np.random.default_rng(seed)
    rgb, nir = render_scene(rng, size, size, sorted(SCENES)[seed % len(SCENES)])
    return (nir * 255).round().astype(np.uint8), (rgb * 255).round().astype(np.uint8)


def save(array: np.ndarray, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def write_pair(
    root: Path, split: str, name: str, nir: np.ndarray, rgb: np.ndarray, ext: str = ".png", **options
) -> Pair:
    """Write a pair (in the plain layout's folders) and return it."""
    nir_path = save(nir, root / split / "nir" / f"{name}{ext}", **options)
    rgb_path = save(rgb, root / split / "rgb" / f"{name}{ext}", **options)
    return Pair(name, nir_path, rgb_path)


def both(transform, pair: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The same transformation applied to the NIR and the RGB image of a pair."""
    return tuple(np.ascontiguousarray(transform(a)) for a in pair)


def resize(size: tuple[int, int]):
    return lambda a: np.asarray(Image.fromarray(a).resize(size, Image.Resampling.BICUBIC))


def crop(left: float, right: float, top: float, bottom: float):
    def apply(a: np.ndarray) -> np.ndarray:
        h, w = a.shape[:2]
        return a[round(top * h) : h - round(bottom * h), round(left * w) : w - round(right * w)]

    return apply


SPLIT_ORDER = ("train", "val", "test")


@pytest.fixture(scope="module")
def planted(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, list[Pair]], set[tuple], list[Duplicate]]:
    """A dataset with a copy of every kind planted across splits.

    Returns:
        (split -> pairs, {(splits, names, kind)} expected, the duplicates found).
    """
    root = tmp_path_factory.mktemp("planted")
    base = {f"t{i}": scene(100 + i) for i in range(10)}
    splits: dict[str, list[Pair]] = {"train": [write_pair(root, "train", n, *p) for n, p in base.items()]}
    splits["val"] = [write_pair(root, "val", f"v_own{i}", *scene(200 + i)) for i in range(2)]
    splits["test"] = []
    expected: set[tuple] = set()

    def plant(
        split: str, name: str, source: tuple[str, str], kind: str, pair, ext: str = ".png", **kw
    ) -> None:
        """Add the copy `name` of pair `source` (split, name) to `split`; `pair` is a Pair or two arrays."""
        if not isinstance(pair, Pair):
            pair = write_pair(root, split, name, *pair, ext=ext, **kw)
        splits[split].append(pair)
        expected.add(((source[0], split), (source[1], name), kind))

    # train -> val: byte-identical files, the same pixels in other bytes, a JPEG re-encode
    t0 = splits["train"][0]
    copy = Pair("v_bytes", root / "val" / "nir" / "v_bytes.png", root / "val" / "rgb" / "v_bytes.png")
    shutil.copyfile(t0.nir, copy.nir)
    shutil.copyfile(t0.rgb, copy.rgb)
    plant("val", "v_bytes", ("train", "t0"), "exact", copy)
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "re-saved by an image viewer")
    plant("val", "v_resave", ("train", "t1"), "exact", base["t1"], compress_level=0, pnginfo=info)
    plant("val", "v_jpeg", ("train", "t2"), "near", base["t2"], ext=".jpg", quality=75)
    # train -> test: resized, flipped, cropped (kept smaller, or resized back)
    plant("test", "s_half", ("train", "t3"), "near", both(resize((64, 64)), base["t3"]))
    plant("test", "s_100", ("train", "t4"), "near", both(resize((100, 100)), base["t4"]))
    plant("test", "s_hflip", ("train", "t5"), "near", both(lambda a: a[:, ::-1], base["t5"]))
    plant("test", "s_vflip", ("train", "t6"), "near", both(lambda a: a[::-1], base["t6"]))
    plant("test", "s_crop", ("train", "t7"), "near", both(crop(0.08, 0.02, 0.05, 0.03), base["t7"]))
    back = both(lambda a: resize((SIZE, SIZE))(crop(0.02, 0.06, 0, 0.08)(a)), base["t8"])
    plant("test", "s_cropback", ("train", "t8"), "near", back)
    # the other way round: the train pair is the cropped one, the test pair the whole photo
    splits["train"].append(write_pair(root, "train", "t_cropped", *both(crop(0.1, 0, 0, 0.1), scene(110))))
    plant("test", "s_whole", ("train", "t_cropped"), "near", scene(110))
    # val -> test: an exact copy, and a JPEG of another val pair flipped both ways
    plant("test", "s_valcopy", ("val", "v_own0"), "exact", scene(200))
    flipped = both(lambda a: a[::-1, ::-1], scene(201))
    plant("test", "s_valjpeg", ("val", "v_own1"), "near", flipped, ext=".jpg", quality=80)
    # different scenes of the same generator in val and test (and t9 in train): never flagged
    splits["val"] += [write_pair(root, "val", f"v_other{i}", *scene(300 + i)) for i in range(3)]
    splits["test"] += [write_pair(root, "test", f"s_other{i}", *scene(400 + i)) for i in range(3)]
    return splits, expected, find_duplicates(splits)


def dropped_copy(d: Duplicate) -> tuple[str, str]:
    """(split, name) of the copy the policy drops: the later split's, except test beats val."""
    return (d.splits[0], d.pairs[0]) if d.splits == ("val", "test") else (d.splits[1], d.pairs[1])


def test_every_planted_copy_is_found_with_its_kind_splits_and_names(planted) -> None:
    splits, expected, found = planted
    assert {(d.splits, d.pairs, d.kind) for d in found} == expected
    assert len(found) == len(expected)  # each once
    for d in found:
        if d.kind == "exact":
            assert d.score == 1.0
            a, b = ({p.name: p for p in splits[s]}[n] for s, n in zip(d.splits, d.pairs, strict=True))
            assert pixel_hash(a) == pixel_hash(b)
        else:
            assert THRESHOLD <= d.score <= 1.0
    keys = [(SPLIT_ORDER.index(d.splits[0]), SPLIT_ORDER.index(d.splits[1]), d.pairs) for d in found]
    assert keys == sorted(keys)
    assert all(a < b for a, b, _ in keys)  # the earlier split first
    assert found[0].to_dict() == {
        "splits": list(found[0].splits),
        "pairs": list(found[0].pairs),
        "kind": found[0].kind,
        "score": found[0].score,
    }
    assert all(json.loads(json.dumps(d.to_dict())) == d.to_dict() for d in found)  # plain JSON types


def test_files_of_the_byte_copy_are_identical_and_of_the_resave_are_not(planted) -> None:
    splits, _, _ = planted
    by_name = {p.name: p for pairs in splits.values() for p in pairs}
    assert by_name["v_bytes"].rgb.read_bytes() == by_name["t0"].rgb.read_bytes()
    assert by_name["v_resave"].rgb.read_bytes() != by_name["t1"].rgb.read_bytes()  # exact by pixels only
    assert by_name["v_resave"].nir.read_bytes() != by_name["t1"].nir.read_bytes()


def test_a_stricter_threshold_drops_the_weakest_near_copy_and_keeps_exact_ones(planted) -> None:
    splits, _, found = planted
    near = sorted((d for d in found if d.kind == "near"), key=lambda d: d.score)
    stricter = find_duplicates(splits, threshold=min(1.0, near[0].score + 1e-3))
    assert near[0] not in stricter
    assert [d for d in found if d.kind == "exact"] == [d for d in stricter if d.kind == "exact"]


def test_different_scenes_are_not_flagged_even_at_a_lower_threshold(planted) -> None:
    splits, expected, _ = planted
    copies = {name for _, names, _ in expected for name in names}
    distinct = {s: [p for p in pairs if p.name not in copies] for s, pairs in splits.items()}
    assert sum(map(len, distinct.values())) >= 7
    assert find_duplicates(distinct, threshold=THRESHOLD - 0.1) == []


def test_leak_drops_the_later_split_copy_of_every_split_combination(planted) -> None:
    _, expected, found = planted
    drops = leak_drops(found)
    should = {(sb, nb) if (sa, sb) != ("val", "test") else (sa, na) for (sa, sb), (na, nb), _ in expected}
    assert {(split, name) for split, names in drops.items() for name in names} == should
    assert "train" not in drops and drops["val"] and drops["test"]
    for d in found:
        keep = 0 if d.splits != ("val", "test") else 1
        split, name = d.splits[1 - keep], d.pairs[1 - keep]
        reason = drops[split][name]
        assert f"{d.splits[keep]} pair {d.pairs[keep]!r}" in reason
        assert ("same pixels" in reason) == (d.kind == "exact")
        assert d.kind != "near" or f"score {d.score:.3f}" in reason


def test_leak_drops_keeps_train_over_test_over_val_and_the_first_reason() -> None:
    t_v = Duplicate(("train", "val"), ("a", "x"), "near", 0.91)
    t_s = Duplicate(("train", "test"), ("a", "y"), "exact", 1.0)
    v_s = Duplicate(("val", "test"), ("x", "y"), "exact", 1.0)  # the same photo in all three splits
    v_s2 = Duplicate(("val", "test"), ("z", "w"), "near", 0.853)
    drops = leak_drops([t_v, t_s, v_s, v_s2])
    assert list(drops) == ["val", "test"]  # SPLITS order; train never loses a pair
    assert drops["val"] == {
        "x": "near copy (score 0.910) of train pair 'a'",  # the first duplicate's reason, not val-test's
        "z": "near copy (score 0.853) of test pair 'w'",
    }
    assert drops["test"] == {"y": "exact copy (same pixels) of train pair 'a'"}
    assert leak_drops([]) == {}
    for a, b in itertools.combinations(("train", "val", "test"), 2):
        (split,) = leak_drops([Duplicate((a, b), ("p", "q"), "exact", 1.0)])
        assert split == (b if (a, b) != ("val", "test") else a)


def test_pixel_hash_is_of_pixels_and_shapes_not_bytes(tmp_path: Path) -> None:
    nir, rgb = scene(7, size=32)
    a = write_pair(tmp_path, "a", "p", nir, rgb)
    b = write_pair(tmp_path, "b", "p", nir, rgb, compress_level=1)
    c = write_pair(tmp_path, "c", "p", nir, rgb, ext=".bmp")
    assert a.nir.read_bytes() != b.nir.read_bytes()
    assert pixel_hash(a) == pixel_hash(b) == pixel_hash(c)
    for which in ("nir", "rgb"):
        changed = {"nir": nir.copy(), "rgb": rgb.copy()}
        changed[which][5, 9] ^= 1  # one pixel, one bit
        d = write_pair(tmp_path, f"d_{which}", "p", changed["nir"], changed["rgb"])
        assert pixel_hash(d) != pixel_hash(a)
    # the same bytes in another shape: shapes are part of the hash
    e = write_pair(tmp_path, "e", "p", nir.reshape(16, 64), rgb.reshape(16, 64, 3))
    assert pixel_hash(e) != pixel_hash(a)
    assert len(pixel_hash(a)) == 64 and int(pixel_hash(a), 16) >= 0


def test_progress_counts_every_pair_and_bad_input_is_refused(tmp_path: Path) -> None:
    pairs = {s: [write_pair(tmp_path, s, f"{s}{i}", *scene(500 + i + 10 * k, size=32)) for i in range(2)]
             for k, s in enumerate(("train", "test"))}  # fmt: skip
    calls: list[tuple[int, int]] = []
    assert find_duplicates(pairs, on_progress=lambda done, total: calls.append((done, total))) == []
    assert calls == [(i, 4) for i in range(1, 5)]
    with pytest.raises(ValueError, match="unknown split"):
        find_duplicates({"train": pairs["train"], "holdout": pairs["test"]})
    with pytest.raises(ValueError, match="threshold"):
        find_duplicates(pairs, threshold=0.0)
    broken = Pair("x", tmp_path / "missing_nir.png", pairs["test"][0].rgb)
    with pytest.raises(ValueError, match=r"missing_nir\.png"):
        find_duplicates({"train": pairs["train"], "test": [broken]})


def test_the_module_imports_no_torch() -> None:
    code = "import sys, colormamba.data.leaks; assert 'torch' not in sys.modules, 'torch imported'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(not REAL_COPY.is_dir(), reason=REAL_COPY_ABSENT)
def test_the_real_copy_exact_duplicates_are_those_of_a_brute_force_comparison() -> None:
    pairs = {split: list_pairs(REAL_COPY, split) for split in SPLIT_ORDER}
    found = find_duplicates(pairs)
    pixels = {}
    for split, split_pairs in pairs.items():
        for p in split_pairs:
            with Image.open(p.nir) as nir, Image.open(p.rgb) as rgb:
                pixels[split, p.name] = (np.asarray(nir.convert("L")), np.asarray(rgb.convert("RGB")))
    order = SPLIT_ORDER
    brute = set()
    for (sa, na), (sb, nb) in itertools.combinations(pixels, 2):
        if sa != sb and all(
            np.array_equal(x, y) for x, y in zip(pixels[sa, na], pixels[sb, nb], strict=True)
        ):
            brute.add(((sa, sb), (na, nb)) if order.index(sa) < order.index(sb) else ((sb, sa), (nb, na)))
    exact = [d for d in found if d.kind == "exact"]
    assert {(d.splits, d.pairs) for d in exact} == brute
    for d in found:
        a, b = (pixels[s, n] for s, n in zip(d.splits, d.pairs, strict=True))
        same = all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        assert same == (d.kind == "exact")  # a near copy is never pixel-equal
        assert d.splits[0] != d.splits[1] and order.index(d.splits[0]) < order.index(d.splits[1])
    drops = leak_drops(found)
    assert "train" not in drops
    assert {(s, n) for s, names in drops.items() for n in names} == {dropped_copy(d) for d in found}
