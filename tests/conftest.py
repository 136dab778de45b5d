"""Shared fixtures: small generated datasets (the real VCIP2020 set cannot be downloaded here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from colormamba.data.synthetic import make_synthetic_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training and 3 validation pairs of 32x32 in the VCIP2020 layout (read-only for tests)."""
    root = tmp_path_factory.mktemp("data") / "vcip"
    return make_synthetic_dataset(root, n_train=8, n_val=3, size=32, seed=1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `best.pt` of the tiny preset with seeded random weights, as a run writes it."""
    from dataclasses import asdict

    import torch

    from colormamba import checkpoint
    from colormamba.models import build_model

    torch.manual_seed(0)
    model = build_model("tiny")
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    state = {"model": model.state_dict(), "model_config": asdict(model.config), "epoch": 1, "config": {}}
    path.write_bytes(checkpoint.to_bytes(state))
    return path
