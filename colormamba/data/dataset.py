"""The torch Dataset of NIR/RGB pairs used for training and validation.

Items are in [0, 1]; the reference's per-image normalisation is applied by the model and the training
code (colormamba.imaging.normalize_per_image), not here, so that evaluation can score against either
protocol from the same items.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from colormamba.data.augment import AugmentConfig, augment_pair
from colormamba.data.layouts import DatasetError, Pair, iter_pairs, load_pair


def _to_bytes(image: torch.Tensor) -> torch.Tensor:
    """float in k/255 steps -> uint8; exact, and 4x smaller to keep in memory."""
    return image.mul(255.0).round_().to(torch.uint8)


def sized(image: torch.Tensor, image_size: int) -> torch.Tensor:
    """(C, H, W) in [0, 1] as a run reads it at `image_size` (RunConfig.image_size): area-averaged to
    image_size x image_size (a downscale without aliasing) and rounded to 8 bits, as a resized file would
    be; unchanged for 0 or an image of that size already."""
    if not image_size or image.shape[-2:] == (image_size, image_size):
        return image
    size = (image_size, image_size)
    small = torch.nn.functional.interpolate(image[None], size=size, mode="area")[0].clamp_(0, 1)
    return _to_float(_to_bytes(small))


def _to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1], bit-identical to what load_image returned."""
    return image.float().div_(255.0)


class PairedDataset(Dataset):
    """NIR/RGB pairs; training items are augmented, deterministically in (seed, epoch, index).

    The epoch lives in a shared-memory tensor, so `set_epoch` reaches DataLoader workers even when they
    persist across epochs (`persistent_workers=True`); call it before starting the epoch's iterator.

    Args:
        pairs: the split's pairs (list_pairs).
        train: augment items (validation and test items never are).
        augment: the augmentation; None means the study's recipe (AugmentConfig()).
        seed: the run's seed; with the epoch and the item index it fixes every augmentation.
        preload: read every pair once here (as uint8: 372 pairs of 256x256 take 100 MB), reporting all
            bad files together; otherwise each item is read from disk when asked for.
        image_size: resize every image as it is read to this square side (antialiased area averaging, then
            rounded to 8 bits as a resized file would be); 0 keeps the stored size. A CPU-sized study of
            full-size data trains and scores at the reduced size (RunConfig.image_size).
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        train: bool,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        preload: bool = True,
        image_size: int = 0,
    ) -> None:
        if not pairs:
            raise ValueError("PairedDataset needs at least one pair")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.pairs = list(pairs)
        self.train = train
        self.augment = augment if augment is not None else AugmentConfig()
        self.seed = seed
        self.image_size = image_size
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._images: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        if preload:
            self._images = [
                (_to_bytes(sized(nir, image_size)), _to_bytes(sized(rgb, image_size)))
                for _, nir, rgb in iter_pairs(self.pairs)
            ]

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations the following items get."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self._epoch.fill_(epoch)

    def uniform_size(self) -> tuple[int, int]:
        """The (H, W) every pair shares: a batch needs one frame size, so a training split with mixed
        sizes is an error naming the first pair that differs (instead of a collate error mid-epoch)."""
        return self._common_size([self._bytes(i).shape[-2:] for i in range(len(self))])

    def stacked(self) -> torch.Tensor:
        """Every pair in one uint8 tensor (N, 4, H, W), NIR then RGB channels (exact: pixels are k/255),
        each pair read once.

        Raises:
            DatasetError: the pairs do not share one size (see `uniform_size`).
        """
        images = [self._bytes(i) for i in range(len(self))]
        self._common_size([image.shape[-2:] for image in images])
        return torch.stack(images)

    def _common_size(self, sizes: list[torch.Size]) -> tuple[int, int]:
        for pair, size in zip(self.pairs, sizes, strict=True):
            if size != sizes[0]:
                raise DatasetError(
                    f"training images must share one size: {pair.nir} is {size[0]}x{size[1]}, "
                    f"{self.pairs[0].nir} is {sizes[0][0]}x{sizes[0][1]}"
                )
        return tuple(sizes[0])

    def _bytes(self, index: int) -> torch.Tensor:
        """Pair `index` as uint8 (4, H, W): the preloaded bytes as they are, or read from disk."""
        if self._images is None:
            images = load_pair(self.pairs[index])
            return torch.cat([_to_bytes(sized(image, self.image_size)) for image in images])
        return torch.cat(self._images[index])

    def __len__(self) -> int:
        return len(self.pairs)

    def _read(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._images is None:
            nir, rgb = (sized(image, self.image_size) for image in load_pair(self.pairs[index]))
            return nir, rgb
        nir, rgb = self._images[index]
        return _to_float(nir), _to_float(rgb)

    def __getitem__(self, index: int) -> dict[str, str | torch.Tensor]:
        """One item.

        Returns:
            {"name": pair name, "nir": (1, H, W), "rgb": (3, H, W)}, float32 in [0, 1]; training items
            also have "hsv_nir" (1, H, W), the NIR that G_B reads as HSV (see colormamba.data.augment).
        """
        nir, rgb = self._read(index)
        item = {"name": self.pairs[index].name, "nir": nir, "rgb": rgb}
        if self.train:
            item |= augment_pair(nir, rgb, self.augment, self.seed, self.epoch, index)._asdict()
        return item
