"""predict_split: batching consecutive same-size images changes nothing but the speed."""

from __future__ import annotations

from pathlib import Path

import torch

from colormamba.data import PairedDataset, list_pairs
from colormamba.data.synthetic import make_synthetic_dataset
from colormamba.evaluate import _same_size_batches, predict_split
from colormamba.imaging import save_image
from colormamba.models import build_model


def test_batched_predictions_score_like_one_image_at_a_time(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=2, n_val=5, size=32, seed=1)
    pairs = list_pairs(root, "val")
    save_image(torch.rand(1, 32, 64), pairs[2].nir)  # a wider frame in the middle: batches split around it
    save_image(torch.rand(3, 32, 64), pairs[2].rgb)
    split = PairedDataset(pairs, train=False)
    torch.manual_seed(0)
    model = build_model("tiny", scan_backend="torch")
    model.train()
    seen: list[tuple[int, int]] = []
    one = predict_split(model, split, "colormamba", torch.device("cpu"), keep_predictions=2, batch_pixels=1)
    many = predict_split(
        model,
        split,
        "colormamba",
        torch.device("cpu"),
        keep_predictions=2,
        on_image=lambda *a: seen.append(a),
    )
    assert model.training  # left as it was found
    assert one.names == many.names == [p.name for p in pairs]
    for name in one.metrics:
        torch.testing.assert_close(many.metrics[name], one.metrics[name], rtol=1e-5, atol=1e-5)
    assert seen == [(2, 5), (3, 5), (5, 5)]  # [0, 1], the wide one, [3, 4]
    assert [s[0] for s in many.samples] == [p.name for p in pairs[:2]]
    for a, b in zip(one.samples, many.samples, strict=True):
        torch.testing.assert_close(b[2], a[2], rtol=1e-4, atol=1e-5)


def test_same_size_batches_keep_order_and_pixel_budget() -> None:
    shapes = [(1, 4, 4)] * 3 + [(1, 4, 6)] + [(1, 4, 4)] * 2 + [(1, 8, 8)]
    items = [{"nir": torch.zeros(s), "i": i} for i, s in enumerate(shapes)]
    batches = [[item["i"] for item in b] for b in _same_size_batches(items, max_pixels=2 * 16)]
    assert batches == [[0, 1], [2], [3], [4, 5], [6]]  # a frame over the budget still goes, alone
