"""Dataset readers: layout detection, pairing by name, and every problem reported by file name."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colormamba.data import (
    DatasetError,
    available_splits,
    check_pairs,
    detect_layout,
    list_pairs,
    list_split,
    load_pair,
)
from colormamba.data.layouts import MAX_LISTED_PROBLEMS
from colormamba.data.synthetic import make_synthetic_dataset
from tests.support.real_data import REAL_COPY, REAL_COPY_ABSENT


def write_image(path: Path, channels: int, size: tuple[int, int] = (8, 8), value: int | None = None) -> Path:
    """An 8-bit image: constant `value`, or seeded noise."""
    h, w = size
    shape = (h, w) if channels == 1 else (h, w, channels)
    if value is None:
        data = np.random.default_rng(len(str(path))).integers(0, 256, shape, dtype=np.uint8)
    else:
        data = np.full(shape, value, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data).save(path)
    return path


def plain_pair(root: Path, split: str, name: str, nir_ext: str = ".png", rgb_ext: str = ".png") -> None:
    write_image(root / split / "nir" / f"{name}{nir_ext}", 1)
    write_image(root / split / "rgb" / f"{name}{rgb_ext}", 3)


def vcip_train_pair(root: Path, name: str, **kwargs) -> tuple[Path, Path]:
    nir = write_image(root / "NIR" / f"{name}_nir.png", 1, **kwargs)
    rgb = write_image(root / "RGB-Registered" / f"{name}_rgb_reg.png", 3, **kwargs)
    return nir, rgb


@pytest.mark.parametrize("layout", ["vcip2020", "plain"])
def test_both_layouts_are_detected_and_read(tmp_path: Path, layout: str) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=3, n_val=2, n_test=1, size=(12, 16), layout=layout)
    assert detect_layout(root) == layout
    assert available_splits(root) == ["train", "val", "test"]
    counts = {split: len(list_pairs(root, split)) for split in ("train", "val", "test")}
    assert counts == {"train": 3, "val": 2, "test": 1}
    pairs = list_pairs(root, "train", layout=layout)
    assert [p.name for p in pairs] == sorted(p.name for p in pairs)
    assert all(p.nir.is_file() and p.rgb.is_file() for p in pairs)
    assert check_pairs(pairs) == {p.name: (12, 16) for p in pairs}


def test_vcip_validation_folder_holds_both_kinds(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=1, n_val=2, n_test=0, size=8)
    pairs = list_pairs(root, "val")
    assert available_splits(root) == ["train", "val"]
    assert all(p.nir.parent == p.rgb.parent == root / "Validation" for p in pairs)
    assert all(p.nir.name.endswith("_nir.png") and p.rgb.name.endswith("_rgb_reg.png") for p in pairs)


def test_explicit_layout_overrides_detection(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=2, n_val=1, size=8)
    with pytest.raises(DatasetError, match="not found") as err:
        list_pairs(root, "train", layout="plain")
    assert str(root / "train" / "nir") in str(err.value)


def test_pairs_by_name_not_by_sorted_position(tmp_path: Path) -> None:
    # sorted file lists disagree: x_nir < x_o_nir but x_o_rgb_reg < x_rgb_reg
    names = ["x", "x_o", "a", "a_z", "m"]
    value = {name: 20 * k + 10 for k, name in enumerate(sorted(names))}  # both sides encode the name
    for folder, suffix, channels, order_seed in (("NIR", "_nir", 1, 0), ("RGB-Registered", "_rgb_reg", 3, 1)):
        shuffled = list(names)
        random.Random(order_seed).shuffle(shuffled)
        for name in shuffled:
            write_image(tmp_path / folder / f"{name}{suffix}.png", channels, value=value[name])
    nir_files = [p.name.removesuffix("_nir.png") for p in sorted((tmp_path / "NIR").iterdir())]
    rgb_files = [p.name.removesuffix("_rgb_reg.png") for p in sorted((tmp_path / "RGB-Registered").iterdir())]
    assert nir_files != rgb_files  # pairing by sorted position would mix x and x_o

    pairs = list_pairs(tmp_path, "train")
    assert [p.name for p in pairs] == sorted(names)
    for pair in pairs:
        assert pair.nir.name == f"{pair.name}_nir.png" and pair.rgb.name == f"{pair.name}_rgb_reg.png"
        nir, rgb = load_pair(pair)
        assert nir.shape == (1, 8, 8) and rgb.shape == (3, 8, 8)
        assert round(nir.unique().item() * 255) == round(rgb.unique().item() * 255) == value[pair.name]


def test_plain_layout_accepts_mixed_suffixes_and_ignores_clutter(tmp_path: Path) -> None:
    plain_pair(tmp_path, "train", "b", nir_ext=".PNG", rgb_ext=".tif")
    plain_pair(tmp_path, "train", "a", nir_ext=".bmp", rgb_ext=".jpeg")
    plain_pair(tmp_path, "train", "c", nir_ext=".jpg", rgb_ext=".TIFF")
    (tmp_path / "train" / "nir" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "nir" / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "train" / "rgb" / "._a.png").write_bytes(b"AppleDouble")
    pairs = list_pairs(tmp_path, "train")
    assert detect_layout(tmp_path) == "plain"
    assert [(p.name, p.nir.suffix, p.rgb.suffix) for p in pairs] == [
        ("a", ".bmp", ".jpeg"),
        ("b", ".PNG", ".tif"),
        ("c", ".jpg", ".TIFF"),
    ]


@pytest.mark.parametrize("missing", ["rgb", "nir"])
def test_an_image_without_partner_is_skipped_with_its_reason(tmp_path: Path, missing: str) -> None:
    plain_pair(tmp_path, "val", "ok")
    lonely = write_image(tmp_path / "val" / ("nir" if missing == "rgb" else "rgb") / "lonely.png", 3)
    listing = list_split(tmp_path, "val")
    assert [p.name for p in listing.pairs] == ["ok"]
    assert [s.path for s in listing.skipped] == [lonely]
    assert f"without an {missing.upper()} partner" in listing.skipped[0].why
    assert list_pairs(tmp_path, "val") == listing.pairs


def test_names_in_the_wild_case_endings_and_subfolders(tmp_path: Path) -> None:
    """The distributed VCIP2020 test split: `testing_X_nir_reg.png` + `Testing_X_rgb_reg.png`, and a
    `visual/` subfolder of NIR images without partners."""
    test = tmp_path / "Testing"
    for i in (1, 2):
        write_image(test / f"testing_{i:04d}_nir_reg.png", 1)
        write_image(test / f"Testing_{i:04d}_rgb_reg.png", 3)
    write_image(test / "other_NIR.PNG", 1)
    write_image(test / "OTHER_rgb.jpg", 3)
    for i in range(3):
        write_image(test / "visual" / f"vis_testing_{i:04d}_nir.png", 1)
    neither = write_image(test / "readme_figure.png", 3)
    listing = list_split(tmp_path, "test", layout="vcip2020")
    assert [(p.name, p.nir.name, p.rgb.name) for p in listing.pairs] == [
        ("other", "other_NIR.PNG", "OTHER_rgb.jpg"),
        ("testing_0001", "testing_0001_nir_reg.png", "Testing_0001_rgb_reg.png"),
        ("testing_0002", "testing_0002_nir_reg.png", "Testing_0002_rgb_reg.png"),
    ]
    reasons = {s.path: s.why for s in listing.skipped}
    assert set(reasons) == {test / "visual", neither}
    assert "3 image(s)" in reasons[test / "visual"] and "subfolder" in reasons[test / "visual"]
    assert "neither" in reasons[neither]


def test_an_image_of_the_other_kind_in_a_one_kind_folder_is_skipped(tmp_path: Path) -> None:
    vcip_train_pair(tmp_path, "good")
    wrong_folder = write_image(tmp_path / "NIR" / "good_rgb_reg.png", 3)
    listing = list_split(tmp_path, "train")
    assert [p.name for p in listing.pairs] == ["good"]
    assert [(s.path, "RGB image" in s.why) for s in listing.skipped] == [(wrong_folder, True)]


def test_all_problems_of_a_split_are_listed_together(tmp_path: Path) -> None:
    vcip_train_pair(tmp_path, "good")
    nir_twins = [write_image(tmp_path / "NIR" / name, 1) for name in ("x_nir.png", "x_NIR.png")]
    rgb_names = ("Y_rgb_reg.png", "y_rgb.jpg")
    rgb_twins = [write_image(tmp_path / "RGB-Registered" / name, 3) for name in rgb_names]
    with pytest.raises(DatasetError) as err:
        list_pairs(tmp_path, "train")
    message = str(err.value)
    for path in (*nir_twins, *rgb_twins):
        assert str(path) in message
    assert len(err.value.problems) == 2
    assert "2 problems" in message


def test_long_problem_lists_are_capped_with_a_count(tmp_path: Path) -> None:
    n = MAX_LISTED_PROBLEMS + 7
    for i in range(n):
        write_image(tmp_path / "train" / "nir" / f"n{i:03d}.png", 1, size=(2, 2))
        write_image(tmp_path / "train" / "nir" / f"N{i:03d}_nir.bmp", 1, size=(2, 2))
    (tmp_path / "train" / "rgb").mkdir()
    with pytest.raises(DatasetError) as err:
        list_pairs(tmp_path, "train")
    message = str(err.value)
    assert len(err.value.problems) == n
    assert "... and 7 more" in message
    assert message.count("have the pair name") == MAX_LISTED_PROBLEMS


def test_duplicate_names_list_every_file(tmp_path: Path) -> None:
    plain_pair(tmp_path, "train", "a")
    duplicate = write_image(tmp_path / "train" / "nir" / "a.jpg", 1)
    with pytest.raises(DatasetError, match="have the pair name 'a'") as err:
        list_pairs(tmp_path, "train")
    assert str(duplicate) in str(err.value)
    assert str(tmp_path / "train" / "nir" / "a.png") in str(err.value)


def test_a_split_of_extras_only_is_empty_and_says_what_was_skipped(tmp_path: Path) -> None:
    lonely = write_image(tmp_path / "Validation" / "v_0001_nir.png", 1)
    with pytest.raises(DatasetError, match="is empty") as err:
        list_pairs(tmp_path, "val")
    assert str(lonely) in str(err.value) and "skipped 1" in str(err.value)


@pytest.mark.skipif(not REAL_COPY.is_dir(), reason=REAL_COPY_ABSENT)
def test_the_real_vcip2020_copy_is_read_as_distributed() -> None:
    counts = {split: list_split(REAL_COPY, split) for split in ("train", "val", "test")}
    assert {split: len(lst.pairs) for split, lst in counts.items()} == {"train": 372, "val": 18, "test": 28}
    test = counts["test"]
    assert all(p.nir.name.lower() == f"{p.name}_nir_reg.png" for p in test.pairs)
    assert all(p.rgb.name.lower() == f"{p.name}_rgb_reg.png" for p in test.pairs)
    visual = REAL_COPY / "Testing" / "visual"
    images = len([p for p in visual.iterdir() if p.suffix.lower() == ".png"])
    assert [(s.path, f"{images} image(s)" in s.why) for s in test.skipped] == [(visual, True)]
    assert counts["train"].skipped == counts["val"].skipped == []


def test_size_mismatch_names_both_files_and_sizes(tmp_path: Path) -> None:
    nir = write_image(tmp_path / "NIR" / "a_nir.png", 1, size=(8, 8))
    rgb = write_image(tmp_path / "RGB-Registered" / "a_rgb_reg.png", 3, size=(8, 10))
    with pytest.raises(DatasetError, match="size mismatch") as err:
        check_pairs(list_pairs(tmp_path, "train"))
    message = str(err.value)
    assert str(nir) in message and str(rgb) in message
    assert "8x8" in message and "8x10" in message


def test_wrong_channel_count_names_the_file(tmp_path: Path) -> None:
    vcip_train_pair(tmp_path, "ok")
    rgb_as_nir = write_image(tmp_path / "NIR" / "b_nir.png", 3)
    grey_as_rgb = write_image(tmp_path / "RGB-Registered" / "b_rgb_reg.png", 1)
    with pytest.raises(DatasetError) as err:
        check_pairs(list_pairs(tmp_path, "train"))
    message = str(err.value)
    assert str(rgb_as_nir) in message and "1-channel" in message
    assert str(grey_as_rgb) in message and "3-channel" in message


def test_truncated_png_is_reported_by_name(tmp_path: Path) -> None:
    vcip_train_pair(tmp_path, "ok", size=(32, 32))
    _, corrupt = vcip_train_pair(tmp_path, "broken", size=(32, 32))
    corrupt.write_bytes(corrupt.read_bytes()[: corrupt.stat().st_size // 2])
    pairs = list_pairs(tmp_path, "train")  # listing does not open files
    with pytest.raises(DatasetError, match="cannot read image") as err:
        check_pairs(pairs)
    assert str(corrupt) in str(err.value)
    assert len(err.value.problems) == 1
    with pytest.raises(DatasetError) as single:
        load_pair(pairs[0])
    assert str(corrupt) in str(single.value)


def test_empty_split_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "Validation").mkdir()
    (tmp_path / "Validation" / "readme.txt").write_text("nothing here")
    with pytest.raises(DatasetError, match="empty") as err:
        list_pairs(tmp_path, "val")
    assert str(tmp_path / "Validation") in str(err.value)


def test_missing_split_folder_is_named(tmp_path: Path) -> None:
    vcip_train_pair(tmp_path, "a")
    with pytest.raises(DatasetError, match="not found") as err:
        list_pairs(tmp_path, "test")
    assert str(tmp_path / "Testing") in str(err.value)
    (tmp_path / "RGB-Registered" / "a_rgb_reg.png").unlink()
    (tmp_path / "RGB-Registered").rmdir()
    with pytest.raises(DatasetError, match="folder missing") as err:
        list_pairs(tmp_path, "train")
    assert str(tmp_path / "RGB-Registered") in str(err.value)


def test_missing_root_unknown_layout_and_unknown_split(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError) as err:
        list_pairs(missing, "train")
    assert str(missing) in str(err.value)
    vcip_train_pair(tmp_path, "a")
    with pytest.raises(DatasetError, match="'vcip'"):
        list_pairs(tmp_path, "train", layout="vcip")
    with pytest.raises(DatasetError, match="'validation'"):
        list_pairs(tmp_path, "validation")


def test_undetectable_and_ambiguous_roots(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="no known dataset layout") as err:
        detect_layout(tmp_path)
    assert str(tmp_path) in str(err.value)
    vcip_train_pair(tmp_path, "a")
    plain_pair(tmp_path, "train", "a")
    with pytest.raises(DatasetError, match="several layouts"):
        detect_layout(tmp_path)
    assert [p.name for p in list_pairs(tmp_path, "train", layout="plain")] == ["a"]
