"""Data: readers of the VCIP2020 and plain folder layouts, training augmentation, the torch Dataset
and the device-resident training batches.

The synthetic dataset generator is imported from its own module, `colormamba.data.synthetic`, which is also
run as a command (`python -m colormamba.data.synthetic`; importing it here would make runpy warn).
"""

from importlib import import_module
from typing import Any

from colormamba.data.augment_config import AugmentConfig
from colormamba.data.layouts import (
    IMAGE_SUFFIXES,
    LAYOUTS,
    SPLITS,
    DatasetError,
    Layout,
    Pair,
    Skipped,
    SplitListing,
    available_splits,
    check_pairs,
    detect_layout,
    get_layout,
    iter_pairs,
    list_pairs,
    list_split,
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
    "Skipped",
    "SplitListing",
    "TrainBatches",
    "augment_batch",
    "augment_pair",
    "available_splits",
    "check_pairs",
    "detect_layout",
    "get_layout",
    "iter_pairs",
    "list_pairs",
    "list_split",
    "load_pair",
]

# The torch-using parts load on first use: the job suite's command line lists and checks datasets through
# this package without paying for torch (tests/jobs/test_cli_fast.py).
_LAZY = {"augment_batch": "augment", "augment_pair": "augment",
         "TrainBatches": "batches", "PairedDataset": "dataset"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"colormamba.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
