"""predict_split: batching consecutive same-size images changes nothing but the speed; LPIPS is scored
once per image at evaluation, and a missing LPIPS travels with its reason into metrics.json; the trivial
references (the NIR copy, the training mean) score as an independent computation from the files does."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colormamba import checkpoint
from colormamba.config import RunConfig
from colormamba.data import PairedDataset, list_pairs
from colormamba.data.synthetic import make_synthetic_dataset
from colormamba.evaluate import _same_size_batches, evaluate, per_image_csv, predict_split, train_mean_image
from colormamba.imaging import save_image
from colormamba.lpips_score import LPIPSScore
from colormamba.metrics import METRIC_NAMES, compute_metrics
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


# --- the trivial references ------------------------------------------------------------------------------


def _read(path: Path) -> np.ndarray:
    """An 8-bit PNG as float64 in [0, 1]: (H, W) or (H, W, 3)."""
    return np.asarray(Image.open(path), dtype=np.float64) / 255.0


def _as_scored(image: np.ndarray, protocol: str) -> np.ndarray:
    """The protocol's ground truth, written out: min-max over the whole image under `colormamba`."""
    if protocol == "plain":
        return image
    return (image - image.min()) / (image.max() - image.min() + 1e-3 / 255)


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL's bilinear resize (antialiased when shrinking) of each channel, in float32."""
    if image.shape[:2] == (height, width):
        return image
    channels = [Image.fromarray(image[..., c].astype(np.float32), mode="F") for c in range(image.shape[2])]
    return np.stack([np.asarray(c.resize((width, height), Image.BILINEAR)) for c in channels], axis=2)


def _evaluate_with(cfg: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lpips: LPIPSScore):
    """evaluate() of a random tiny network scored with `lpips`: (result, metrics.json, store, where)."""
    monkeypatch.setattr(LPIPSScore, "load", staticmethod(lambda weights="pretrained": lpips))
    store, where = LocalStorage(tmp_path / "store"), RunLocation("s", "r")
    torch.manual_seed(0)
    model = build_model("tiny", scan_backend="torch")
    best = {"model_config": dataclasses.asdict(model.config), "model": model.state_dict(), "epoch": 1}
    checkpoint.save(store, where.checkpoint("best"), best)
    result = evaluate(cfg, store, where)
    return result, json.loads(store.get_bytes(where.artifact("metrics.json"))), store, where


@pytest.mark.parametrize(("protocol", "train_size"), [("colormamba", (40, 48)), ("plain", None)])
def test_trivial_references_score_like_an_independent_computation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: str, train_size: tuple[int, int] | None
) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=3, n_val=1, n_test=3, size=32, seed=2)
    if train_size is not None:  # training images of another size than the test images: the mean is resized
        other = make_synthetic_dataset(
            tmp_path / "big", n_train=3, n_val=0, n_test=0, size=train_size, seed=3
        )
        for small, big in zip(list_pairs(root, "train"), list_pairs(other, "train"), strict=True):
            small.nir.write_bytes(big.nir.read_bytes())
            small.rgb.write_bytes(big.rgb.read_bytes())
    lpips = LPIPSScore.load("random")
    cfg = RunConfig(dataset=str(root), model="tiny", scan_backend="torch", device="cpu", num_samples=0,
                    protocol=protocol, report_split="test")  # fmt: skip
    result, record, store, where = _evaluate_with(cfg, tmp_path, monkeypatch, lpips)

    train = [_as_scored(_read(p.rgb), protocol) for p in list_pairs(root, "train")]
    assert train[0].shape[:2] == (train_size or (32, 32))
    mean = np.mean(train, axis=0)  # (H, W, 3) over the training pairs
    test = list_pairs(root, "test")
    expected: dict[str, dict[str, list[float]]] = {"nir": {}, "train_mean": {}}
    for pair in test:
        gt = _read(pair.rgb)
        preds = {"nir": _as_scored(np.repeat(_read(pair.nir)[..., None], 3, axis=2), protocol),
                 "train_mean": _resize(mean, *gt.shape[:2])}  # fmt: skip
        for reference, pred in preds.items():
            as_batch = [torch.from_numpy(x).permute(2, 0, 1)[None] for x in (pred, gt)]
            scores = compute_metrics(*as_batch, protocol, lpips)
            for m, v in scores.items():
                expected[reference].setdefault(m, []).append(float(v[0]))

    assert list(record["trivial"]) == ["nir", "train_mean"] and record["trivial_missing"] == {}
    assert "3 pairs" in record["trivial"]["train_mean"]["description"]
    csv_rows = list(
        csv.DictReader(io.StringIO(store.get_bytes(where.artifact("trivial_per_image.csv")).decode()))
    )
    assert list(csv_rows[0]) == ["name", "reference", *METRIC_NAMES]
    for reference, values in expected.items():
        scored = result.trivial[reference]
        assert scored.names == [p.name for p in test]
        for m in METRIC_NAMES:
            torch.testing.assert_close(scored.metrics[m], torch.tensor(values[m], dtype=torch.float64),
                                       rtol=1e-5, atol=1e-5)  # fmt: skip
            summary = record["trivial"][reference]["metrics"][m]
            assert summary["mean"] == pytest.approx(np.mean(values[m]), abs=1e-5)
            assert summary["std"] == pytest.approx(np.std(values[m], ddof=1), abs=1e-5)
            assert summary["n"] == len(test)
            rows = [float(r[m]) for r in csv_rows if r["reference"] == reference]
            assert rows == pytest.approx(values[m], abs=1e-5)
    # the references are not the network: the record's own metrics are its predictions', unchanged
    assert record["metrics"]["psnr"]["mean"] == pytest.approx(
        float(result.predictions.metrics["psnr"].mean())
    )
    assert record["metrics"]["psnr"]["mean"] != pytest.approx(
        record["trivial"]["nir"]["metrics"]["psnr"]["mean"]
    )


def test_the_training_mean_is_a_float64_running_mean_of_the_scored_ground_truth(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=4, n_val=0, n_test=0, size=(12, 20), seed=4)
    pairs = list_pairs(root, "train")
    got = train_mean_image(pairs, "colormamba")
    assert got.dtype == torch.float64 and tuple(got.shape) == (3, 12, 20)
    expected = np.mean([_as_scored(_read(p.rgb), "colormamba") for p in pairs], axis=0).transpose(2, 0, 1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-7)  # images are read as float32
    assert not np.allclose(expected, _read(pairs[0].rgb).transpose(2, 0, 1), atol=1e-3), (
        "a mean, not one image"
    )


def test_an_unreadable_training_split_leaves_the_training_mean_out_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=2, n_val=1, n_test=2, size=32, seed=5)
    broken = list_pairs(root, "train")[1].rgb
    broken.write_bytes(b"not a png")
    cfg = RunConfig(dataset=str(root), model="tiny", scan_backend="torch", device="cpu", num_samples=0)
    result, record, _, _ = _evaluate_with(cfg, tmp_path, monkeypatch, LPIPSScore.load("random"))
    assert list(record["trivial"]) == ["nir"] and list(result.trivial) == ["nir"]
    assert str(broken) in record["trivial_missing"]["train_mean"]
    assert record["trivial"]["nir"]["metrics"]["psnr"]["n"] == record["n_images"] == 2
