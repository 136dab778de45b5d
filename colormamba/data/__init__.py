"""Data: readers of the VCIP2020 and plain folder layouts, training augmentation, the torch Dataset
and the device-resident training batches.

The synthetic dataset generator is imported from its own module, `colormamba.data.synthetic`, which is also
run as a command (`python -m colormamba.data.synthetic`; importing it here would make runpy warn).
"""

from colormamba.data.augment import AugmentConfig, augment_batch, augment_pair
from colormamba.data.batches import TrainBatches
from colormamba.data.dataset import PairedDataset
from colormamba.data.layouts import (
    IMAGE_SUFFIXES,
    LAYOUTS,
    SPLITS,
    DatasetError,
    Layout,
    Pair,
    available_splits,
    check_pairs,
    detect_layout,
    get_layout,
    iter_pairs,
    list_pairs,
    load_pair,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "SPLITS",
    "AugmentConfig",
    "DatasetError",
    "Layout",
    "Pair",
    "PairedDataset",
    "TrainBatches",
    "augment_batch",
    "augment_pair",
    "available_splits",
    "check_pairs",
    "detect_layout",
    "get_layout",
    "iter_pairs",
    "list_pairs",
    "load_pair",
]
