"""predict_split: batching consecutive same-size images changes nothing but the speed; LPIPS is scored
once per image at evaluation, and a missing LPIPS travels with its reason into metrics.json."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path

import pytest
import torch

from colormamba import checkpoint
from colormamba.config import RunConfig
from colormamba.data import PairedDataset, list_pairs
from colormamba.data.synthetic import make_synthetic_dataset
from colormamba.evaluate import _same_size_batches, evaluate, per_image_csv, predict_split
from colormamba.imaging import save_image
from colormamba.lpips_score import LPIPSScore
from colormamba.metrics import METRIC_NAMES
from colormamba.models import build_model
from colormamba.storage import LocalStorage, RunLocation


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


def test_lpips_is_scored_once_per_image_and_left_out_of_validation(tiny_dataset: Path) -> None:
    pairs = list_pairs(tiny_dataset, "val")
    split = PairedDataset(pairs, train=False)
    torch.manual_seed(0)
    model = build_model("tiny", scan_backend="torch")
    lpips = LPIPSScore.load("random")
    seen: list[int] = []
    forward = lpips.net.forward
    lpips.net.forward = lambda pred, gt, **kw: seen.append(pred.shape[0]) or forward(pred, gt, **kw)
    pred = predict_split(model, split, "colormamba", torch.device("cpu"), lpips=lpips)
    assert sum(seen) == len(split) == 3  # once per image
    assert list(pred.metrics) == list(METRIC_NAMES) and pred.missing == {}
    assert torch.isfinite(pred.metrics["lpips"]).all() and (pred.metrics["lpips"] > 0).all()
    rows = list(csv.DictReader(io.StringIO(per_image_csv(pred).decode())))
    assert list(rows[0]) == ["name", *METRIC_NAMES]
    one = PairedDataset(pairs[:1], train=False)
    validation = predict_split(model, one, "colormamba", torch.device("cpu"))  # as training calls it
    assert "lpips" not in validation.metrics
    assert "lpips" not in per_image_csv(validation).decode().splitlines()[0]


@pytest.mark.parametrize("lpips_weights", ["pretrained", "random"])
def test_evaluation_writes_lpips_or_why_it_is_missing(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lpips_weights: str
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no AlexNet file here
    store, where = LocalStorage(tmp_path / "store"), RunLocation("s", "r")
    model = build_model("tiny", scan_backend="torch")
    best = {"model_config": dataclasses.asdict(model.config), "model": model.state_dict(), "epoch": 1}
    checkpoint.save(store, where.checkpoint("best"), best)
    cfg = RunConfig(dataset=str(tiny_dataset), model="tiny", scan_backend="torch", device="cpu",
                    num_samples=0, lpips_weights=lpips_weights)  # fmt: skip
    evaluate(cfg, store, where)
    record = json.loads(store.get_bytes(where.artifact("metrics.json")))
    rows = list(csv.DictReader(io.StringIO(store.get_bytes(where.artifact("per_image.csv")).decode())))
    lpips_mean = record["metrics"]["lpips"]["mean"]
    assert "+ 1e-6" in record["ae_definition"]  # the colormamba protocol's AE, said in the record
    if lpips_weights == "pretrained":  # absent: no number, and the reason names the file
        assert lpips_mean is None and all(math.isnan(float(r["lpips"])) for r in rows)
        assert "alexnet-owt-7be5be79.pth" in record["missing_metrics"]["lpips"]
    else:
        assert lpips_mean > 0 and record["missing_metrics"] == {}
        assert lpips_mean == pytest.approx(sum(float(r["lpips"]) for r in rows) / len(rows), abs=1e-5)
