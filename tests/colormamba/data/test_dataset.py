"""PairedDataset: items in [0, 1], training-only augmentation, epochs that survive resume and workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from colormamba.data import AugmentConfig, DatasetError, PairedDataset, list_pairs, load_pair
from colormamba.data.synthetic import make_synthetic_dataset
from colormamba.imaging import save_image


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "ds", n_train=4, n_val=2, size=24, seed=5)


def items(dataset: PairedDataset) -> list[dict]:
    return [dataset[i] for i in range(len(dataset))]


def same(a: list[dict], b: list[dict]) -> bool:
    return all(
        x["name"] == y["name"]
        and all(torch.equal(x[k], y[k]) for k in ("nir", "rgb", "hsv_nir") if k in x and k in y)
        for x, y in zip(a, b, strict=True)
    )  # fmt: skip


def test_validation_items_are_the_files_unchanged(root: Path) -> None:
    pairs = list_pairs(root, "val")
    dataset = PairedDataset(pairs, train=False, augment=AugmentConfig(), seed=0)
    first = items(dataset)
    dataset.set_epoch(3)
    assert same(first, items(dataset))  # never augmented, whatever the epoch
    for item, pair in zip(first, pairs, strict=True):
        nir, rgb = load_pair(pair)
        assert item["name"] == pair.name
        assert item["nir"].shape == (1, 24, 24) and item["rgb"].shape == (3, 24, 24)
        assert item["nir"].dtype == torch.float32
        assert torch.equal(item["nir"], nir) and torch.equal(item["rgb"], rgb)  # preload is lossless


def test_training_items_are_augmented_per_epoch_and_reproducible(root: Path) -> None:
    pairs = list_pairs(root, "train")
    raw = items(PairedDataset(pairs, train=False))
    dataset = PairedDataset(pairs, train=True, seed=1)
    epoch0 = items(dataset)
    assert not same(raw, epoch0)
    assert all(x["nir"].min() >= 0 and x["rgb"].max() <= 1 for x in epoch0)
    assert same(epoch0, items(dataset))
    dataset.set_epoch(1)
    epoch1 = items(dataset)
    assert not any(torch.equal(a["rgb"], b["rgb"]) for a, b in zip(epoch0, epoch1, strict=True))

    resumed = PairedDataset(pairs, train=True, seed=1, preload=False)  # a fresh process after a restart
    resumed.set_epoch(1)
    assert same(epoch1, items(resumed))
    other_seed = PairedDataset(pairs, train=True, seed=2)
    other_seed.set_epoch(1)
    assert not same(epoch1, items(other_seed))


def test_disabled_augmentation_gives_raw_training_items(root: Path) -> None:
    pairs = list_pairs(root, "train")
    dataset = PairedDataset(pairs, train=True, augment=AugmentConfig(enabled=False))
    raw = items(PairedDataset(pairs, train=False))
    for item, plain in zip(items(dataset), raw, strict=True):
        assert torch.equal(item["hsv_nir"], item["nir"])  # nothing jittered: G_B reads G_A's NIR
        assert item["name"] == plain["name"] and torch.equal(item["nir"], plain["nir"])
        assert torch.equal(item["rgb"], plain["rgb"])


def test_set_epoch_reaches_persistent_workers(root: Path) -> None:
    pairs = list_pairs(root, "train")
    dataset = PairedDataset(pairs, train=True, seed=4)
    loader = DataLoader(dataset, batch_size=len(pairs), num_workers=1, persistent_workers=True)
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        (batch,) = list(loader)
        expected = torch.stack([x["rgb"] for x in items(dataset)])
        assert torch.equal(batch["rgb"], expected)


def test_preload_reports_every_bad_file(root: Path, tmp_path: Path) -> None:
    pairs = list_pairs(root, "train")
    broken = tmp_path / "broken.png"
    broken.write_bytes(pairs[1].nir.read_bytes()[:60])
    bad = [pairs[0], type(pairs[1])(pairs[1].name, broken, pairs[1].rgb), pairs[2]]
    with pytest.raises(DatasetError) as err:
        PairedDataset(bad, train=True)
    assert str(broken) in str(err.value)
    lazy = PairedDataset(bad, train=True, preload=False)
    with pytest.raises(DatasetError) as err:
        lazy[1]
    assert str(broken) in str(err.value)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one pair"):
        PairedDataset([], train=True)


def test_uniform_size_names_the_pair_that_differs(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "d", n_train=3, n_val=1, size=16, seed=0, layout="plain")
    pairs = list_pairs(root, "train")
    assert PairedDataset(pairs, train=True).uniform_size() == (16, 16)
    odd = pairs[-1]
    save_image(torch.rand(1, 20, 16), odd.nir)
    save_image(torch.rand(3, 20, 16), odd.rgb)
    with pytest.raises(DatasetError, match=str(odd.nir)):
        PairedDataset(pairs, train=True).uniform_size()
