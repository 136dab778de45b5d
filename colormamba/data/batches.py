"""Training batches drawn from the split kept as one uint8 tensor on the training device.

A DataLoader decodes and augments item by item in CPU workers, then copies every batch to the GPU. The
study's training split is small (372 pairs of 256x256 are 97 MB as bytes), so it is read once, kept on the
GPU, and every batch is gathered, converted and augmented there in a handful of kernels: the only host
work per step is drawing each item's five random numbers. A split larger than `resident_limit_bytes`
stays in (pinned) host memory and each batch is copied over, with the same result.

The pixels are exactly those of `PairedDataset(train=True)` for the same (seed, epoch, index): both go
through `augment_batch`, and each item's choices come from its own generator, so neither the batch it
lands in nor the device changes them (up to the device's float rounding of the bicubic resize).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from colormamba.data.augment import (
    AugmentConfig,
    AugmentedPair,
    augment_batch,
    item_generator,
    sample_params,
)
from colormamba.data.dataset import PairedDataset
from colormamba.data.layouts import Pair

RESIDENT_LIMIT_BYTES = 4 * 2**30  # splits up to this size live on the training device


def shuffle_generator(seed: int, epoch: int) -> torch.Generator:
    """The shuffling RNG of one epoch: a function of (seed, epoch) only, so resuming replays it."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class TrainBatches:
    """The training split, shuffled and augmented per epoch, deterministically in (seed, epoch).

    Args:
        pairs: the training split's pairs; every pair must have the same size (a batch has one frame size;
            a split with mixed sizes is a DatasetError naming the first odd pair).
        device: where batches are produced (the training device).
        augment: the augmentation; None means the study's recipe.
        seed: the run's seed.
        resident_limit_bytes: keep the split on `device` when it is at most this large.
        image_size: read every image resized to this square side (RunConfig.image_size; 0: as stored).
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        device: torch.device,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        resident_limit_bytes: int = RESIDENT_LIMIT_BYTES,
        image_size: int = 0,
    ) -> None:
        split = PairedDataset(pairs, train=False, image_size=image_size)
        images = split.stacked()  # (N, 4, H, W) uint8: NIR, then RGB
        self.device = torch.device(device)
        self.augment = augment if augment is not None else AugmentConfig()
        self.seed = seed
        self.resident = images.nbytes <= resident_limit_bytes
        if self.resident:
            images = images.to(self.device)
        elif self.device.type == "cuda":
            images = images.pin_memory()  # lets the per-batch copy run asynchronously
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches in one epoch (the last one may be smaller)."""
        return math.ceil(len(self) / batch_size)

    def epoch(self, epoch: int, batch_size: int) -> Iterator[AugmentedPair]:
        """The epoch's batches, in its shuffled order.

        Yields:
            AugmentedPair: nir (b, 1, H, W), rgb (b, 3, H, W) and hsv_nir (b, 1, H, W) (the NIR that G_B
            reads as HSV), float32 in [0, 1] on `device`.
        """
        height, width = self.images.shape[-2:]
        order = torch.randperm(len(self), generator=shuffle_generator(self.seed, epoch))
        for indices in order.split(batch_size):
            batch = self.images[indices.to(self.images.device)]
            batch = batch.to(self.device, non_blocking=True).float().div_(255.0)
            nir, rgb = batch[:, :1], batch[:, 1:]
            if not self.augment.enabled:
                yield AugmentedPair(nir, rgb, nir)
                continue
            params = [
                sample_params(self.augment, height, width, item_generator(self.seed, epoch, index))
                for index in indices.tolist()
            ]
            yield augment_batch(nir, rgb, params, self.augment.nir_contrast)
