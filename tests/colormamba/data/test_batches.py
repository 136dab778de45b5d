"""TrainBatches: the same pixels as PairedDataset(train=True), whatever the batching or residency."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from colormamba.data import AugmentConfig, DatasetError, PairedDataset, TrainBatches, list_pairs
from colormamba.data.augment import AugmentParams, augment_batch
from colormamba.data.batches import shuffle_generator
from colormamba.data.synthetic import make_synthetic_dataset
from colormamba.imaging import save_image

N_TRAIN = 5


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("data") / "ds", n_train=N_TRAIN, n_val=1, size=24, seed=2
    )


def flatten(
    batches: TrainBatches, epoch: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, list[int], torch.Tensor]:
    nirs, rgbs, sizes, hsv_nirs = [], [], [], []
    for nir, rgb, hsv_nir in batches.epoch(epoch, batch_size):
        nirs.append(nir)
        rgbs.append(rgb)
        sizes.append(nir.shape[0])
        hsv_nirs.append(hsv_nir)
    return torch.cat(nirs), torch.cat(rgbs), sizes, torch.cat(hsv_nirs)


def test_batches_are_the_datasets_augmented_items_in_the_shuffled_order(root: Path) -> None:
    pairs = list_pairs(root, "train")
    batches = TrainBatches(pairs, torch.device("cpu"), seed=3)
    items = PairedDataset(pairs, train=True, seed=3)
    orders = []
    for epoch in (0, 2):
        items.set_epoch(epoch)
        nir, rgb, sizes, hsv_nir = flatten(batches, epoch, batch_size=2)
        assert sizes == [2, 2, 1] and batches.steps_per_epoch(2) == 3
        order = torch.randperm(N_TRAIN, generator=shuffle_generator(3, epoch)).tolist()
        orders.append(order)
        expected = [items[i] for i in order]
        assert torch.equal(nir, torch.stack([e["nir"] for e in expected]))
        assert torch.equal(rgb, torch.stack([e["rgb"] for e in expected]))
        assert torch.equal(hsv_nir, torch.stack([e["hsv_nir"] for e in expected]))
        assert nir.dtype == torch.float32 and nir.min() >= 0 and rgb.max() <= 1
    assert orders[0] != orders[1]  # each epoch has its own order


def test_every_item_once_per_epoch_and_epochs_differ(root: Path) -> None:
    pairs = list_pairs(root, "train")
    raw = PairedDataset(pairs, train=False)
    plain = TrainBatches(pairs, torch.device("cpu"), AugmentConfig(enabled=False), seed=0)
    _, rgb, _, _ = flatten(plain, 0, batch_size=4)
    seen = sorted(next(i for i in range(N_TRAIN) if torch.equal(raw[i]["rgb"], x)) for x in rgb)
    assert seen == list(range(N_TRAIN))  # a permutation: no item repeated or left out

    augmented = TrainBatches(pairs, torch.device("cpu"), seed=0)
    first, again = flatten(augmented, 1, 4), flatten(augmented, 1, 4)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])  # replayable (resume)
    other = flatten(augmented, 2, 4)
    assert not torch.equal(first[1], other[1])


def test_a_split_too_large_to_keep_on_the_device_gives_the_same_batches(root: Path) -> None:
    pairs = list_pairs(root, "train")
    resident = TrainBatches(pairs, torch.device("cpu"), seed=1)
    streamed = TrainBatches(pairs, torch.device("cpu"), seed=1, resident_limit_bytes=0)
    assert resident.resident and not streamed.resident
    a, b = flatten(resident, 4, 3), flatten(streamed, 4, 3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[3], b[3])


def test_mixed_sizes_are_refused_naming_the_file(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=3, n_val=1, size=16, seed=0)
    pairs = list_pairs(root, "train")
    save_image(torch.rand(1, 20, 16), pairs[1].nir)
    save_image(torch.rand(3, 20, 16), pairs[1].rgb)
    with pytest.raises(DatasetError, match=pairs[1].nir.name):
        TrainBatches(pairs, torch.device("cpu"))


def test_augment_batch_refuses_mismatched_params() -> None:
    nir, rgb = torch.rand(2, 1, 8, 8), torch.rand(2, 3, 8, 8)
    one = AugmentParams(flip=False, crop=(0, 0, 6, 6), contrast=None)
    other = AugmentParams(flip=False, crop=(0, 0, 5, 5), contrast=None)
    with pytest.raises(ValueError, match="1 params for a batch of 2"):
        augment_batch(nir, rgb, [one])
    with pytest.raises(ValueError, match="share one size"):
        augment_batch(nir, rgb, [one, other])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_batches_match_the_cpu_ones(root: Path) -> None:
    pairs = list_pairs(root, "train")
    cpu = flatten(TrainBatches(pairs, torch.device("cpu"), seed=5), 1, 2)
    gpu = flatten(TrainBatches(pairs, torch.device("cuda"), seed=5), 1, 2)
    assert gpu[0].is_cuda
    # the contrast jitter (target and hsv_nir) works on the 8-bit input before the resize, the same
    # integer and float32 operations on both devices: only the bicubic resize's float rounding differs
    for on_gpu, on_cpu in zip(gpu[:2] + gpu[3:], cpu[:2] + cpu[3:], strict=True):
        torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-5, rtol=0)
