"""Synthetic dataset: deterministic files, a learnable NIR/RGB relation, the layouts and the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from colormamba.data import check_pairs, iter_pairs, list_pairs
from colormamba.data.synthetic import main, make_synthetic_dataset


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a = files(make_synthetic_dataset(tmp_path / "a", n_train=3, n_val=2, n_test=1, size=16, seed=3))
    b = files(make_synthetic_dataset(tmp_path / "b", n_train=3, n_val=2, n_test=1, size=16, seed=3))
    c = files(make_synthetic_dataset(tmp_path / "c", n_train=3, n_val=2, n_test=1, size=16, seed=4))
    assert len(a) == 12 and a == b
    assert sum(a.get(k) != v for k, v in c.items()) == 12  # another seed: every file differs


def test_split_counts_do_not_change_other_splits(tmp_path: Path) -> None:
    small = files(make_synthetic_dataset(tmp_path / "s", n_train=1, n_val=2, size=16))
    large = files(make_synthetic_dataset(tmp_path / "l", n_train=5, n_val=2, size=16))
    val = {k: v for k, v in small.items() if k.startswith("Validation")}
    assert len(val) == 4 and all(large[k] == v for k, v in val.items())


@pytest.mark.parametrize("layout", ["vcip2020", "plain"])
def test_non_square_images_in_both_layouts(tmp_path: Path, layout: str) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=2, n_val=1, size=(20, 36), layout=layout)
    sizes = check_pairs(list_pairs(root, "train", layout=layout) + list_pairs(root, "val", layout=layout))
    assert len(sizes) == 3 and set(sizes.values()) == {(20, 36)}


def test_nir_is_bright_where_the_rgb_is_green(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=8, n_val=0, size=48, seed=0)
    nir_all, green_all = [], []
    for _, nir, rgb in iter_pairs(list_pairs(root, "train")):
        nir_all.append(nir.flatten())
        green_all.append((rgb[1] - (rgb[0] + rgb[2]) / 2).flatten())  # green-ness: vegetation
    nir, green = torch.cat(nir_all).numpy(), torch.cat(green_all).numpy()
    assert np.corrcoef(nir, green)[0, 1] > 0.5
    assert nir[green > 0.1].mean() > 0.6 > 0.3 > nir[green < -0.1].mean()  # vegetation vs sky/water


def test_refuses_a_non_empty_folder_and_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="not an empty folder") as err:
        make_synthetic_dataset(tmp_path, n_train=1, n_val=1)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(ValueError, match="at least 8x8"):
        make_synthetic_dataset(tmp_path / "tiny", size=(4, 16))
    with pytest.raises(ValueError, match="unknown layout"):
        make_synthetic_dataset(tmp_path / "x", layout="auto")
    with pytest.raises(ValueError, match="non-negative"):
        make_synthetic_dataset(tmp_path / "y", n_val=-1)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main([str(tmp_path / "ds"), "--n-train", "2", "--n-val", "1", "--size", "12x16", "--layout", "plain"])
        == 0
    )
    assert "2 train, 1 val" in capsys.readouterr().out
    assert len(list_pairs(tmp_path / "ds", "train")) == 2
    assert set(check_pairs(list_pairs(tmp_path / "ds", "val")).values()) == {(12, 16)}


@pytest.mark.slow  # a fresh interpreter imports torch
def test_runs_as_a_module(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    cmd = [
        sys.executable,
        "-m",
        "colormamba.data.synthetic",
        str(out),
        "--n-train",
        "1",
        "--n-val",
        "1",
        "--size",
        "8",
        "--seed",
        "2",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr
    assert files(out) == files(make_synthetic_dataset(tmp_path / "same", n_train=1, n_val=1, size=8, seed=2))


def test_every_scene_has_sky_above_the_ground(tmp_path: Path) -> None:
    """A frame without sky leaves a small network no cue where the ground starts (docs/evaluation.md,
    "The demo"): the top row of every image is mostly sky (blue above red, dark in NIR), the bottom row
    is not."""
    root = make_synthetic_dataset(tmp_path / "ds", n_train=40, n_val=0, n_test=0, size=32, seed=1)
    scenes = set()
    for pair, nir, rgb in iter_pairs(list_pairs(root, "train")):
        name = pair.name
        scenes.add(name.split("_")[0])
        sky = (rgb[2] > rgb[0] + 0.1) & (nir[0] < 0.3)  # (H, W)
        assert sky[0].float().mean() > 0.5, name
        assert sky[-1].float().mean() < 0.5, name
    assert scenes == {"country", "field", "forest", "mountain"}
