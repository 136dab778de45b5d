"""Training and evaluation end to end on a tiny model and a generated dataset (CPU, deterministic)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from colormamba import checkpoint
from colormamba.config import RunConfig
from colormamba.data.augment import pil_contrast
from colormamba.evaluate import evaluate
from colormamba.imaging import gray_to_hsv, normalize_per_image, pad_to_multiple
from colormamba.models import build_model
from colormamba.models.compile import COMPILED_BLOCKS
from colormamba.storage import LocalStorage, RunLocation, StorageError
from colormamba.train import (
    Progress,
    RunCancelled,
    TrainingDiverged,
    TrainingParts,
    build_parts,
    load_state,
    to_state,
    train,
    train_step,
)


def _config(dataset: Path, **overrides: object) -> RunConfig:
    base = dict(
        dataset=str(dataset),
        model="tiny",
        loss="original",
        epochs=3,
        batch_size=4,
        lr=1e-3,
        lr_step_epochs=2,
        device="cpu",
        seed=7,
        deterministic=True,
        cancel_check_every=1,
        generator_steps_per_batch=1,  # half the time; the resume test takes the reference's 2
    )
    return RunConfig(**{**base, **overrides})


def _weights(store: LocalStorage, where: RunLocation) -> dict[str, torch.Tensor]:
    return checkpoint.load(store, where.checkpoint("last"))["model"]


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    cfg = _config(tiny_dataset, generator_steps_per_batch=2)  # the reference's two updates per batch
    store = LocalStorage(tmp_path / "store")
    straight, resumed = RunLocation("s", "straight"), RunLocation("s", "resumed")
    train(cfg, store, straight)

    epochs_seen: list[int] = []

    def cancel_in_epoch_2(event: dict) -> None:
        epochs_seen.append(event.get("epoch", 0))

    with pytest.raises(RunCancelled):
        train(
            cfg,
            store,
            resumed,
            on_progress=cancel_in_epoch_2,
            should_cancel=lambda: max(epochs_seen, default=0) >= 2,
        )
    interrupted = checkpoint.load(store, resumed.checkpoint("last"))
    assert interrupted["epoch"] == 1  # the checkpoint of the finished epoch stays after a cancel

    events: list[dict] = []
    result = train(cfg, store, resumed, on_progress=events.append)
    assert events[0] == {"phase": "resume", "epoch": 1}
    assert result.epochs_done == 3 and len(result.history) == 3
    a, b = _weights(store, straight), _weights(store, resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # the resumed run's history equals the uninterrupted one's, except wall-clock seconds
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in result.history]
    ref = checkpoint.load(store, straight.checkpoint("last"))["history"]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in ref]


def test_history_best_checkpoint_and_evaluation_outputs(tiny_dataset: Path, tmp_path: Path) -> None:
    # reporting the selection split, so that evaluating best.pt must reproduce its validation PSNR
    cfg = _config(tiny_dataset, epochs=2, num_samples=2, report_split="val")
    store = LocalStorage(tmp_path / "store")
    where = RunLocation("s", "r")
    result = train(cfg, store, where)
    best = checkpoint.load(store, where.checkpoint("best"))
    assert best["epoch"] == result.best_epoch
    assert best["val_psnr"] == max(row["val_psnr"] for row in result.history)
    rows = list(csv.DictReader(io.StringIO(store.get_bytes(where.artifact("history.csv")).decode())))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "train_mse", "val_psnr", "val_ssim", "val_ae", "val_mae", "lr"} <= set(rows[0])

    ev = evaluate(cfg, store, where)
    metrics = json.loads(store.get_bytes(where.artifact("metrics.json")))
    assert metrics["protocol"] == "colormamba" and metrics["n_images"] == 3
    assert metrics["checkpoint_epoch"] == result.best_epoch
    per_image = list(csv.DictReader(io.StringIO(store.get_bytes(where.artifact("per_image.csv")).decode())))
    assert len(per_image) == 3
    mean_psnr = sum(float(r["psnr"]) for r in per_image) / 3
    assert mean_psnr == pytest.approx(metrics["metrics"]["psnr"]["mean"], abs=1e-5)
    # the best epoch's validation PSNR is what evaluation of best.pt reproduces
    assert ev.summary["psnr"]["mean"] == pytest.approx(best["val_psnr"], abs=1e-4)
    samples = store.list(where.artifact("samples"))
    assert len(samples) == 2 * 3  # nir, pred, gt for each of num_samples images


def test_nan_loss_fails_the_run_with_its_reason(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = _config(tiny_dataset, lr=float("1e30"), epochs=2)
    with pytest.raises(TrainingDiverged, match="epoch"):
        train(cfg, LocalStorage(tmp_path), RunLocation("s", "r"))


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="nowhere"):
        train(cfg, LocalStorage(tmp_path / "store"), RunLocation("s", "r"))
    assert not (tmp_path / "store").exists()  # nothing written for a run that could not start


def test_bf16_channels_last_fast_path_trains_like_fp32(tiny_dataset: Path, tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    fp32 = train(_config(tiny_dataset, epochs=2), store, RunLocation("s", "fp32"))
    where = RunLocation("s", "fast")
    fast = train(_config(tiny_dataset, epochs=2, precision="bf16", channels_last=True), store, where)
    assert fast.epochs_done == 2
    losses = [v for row in fast.history for k, v in row.items() if k.startswith("train_")]
    assert losses and all(math.isfinite(v) for v in losses)
    a, b = fp32.history[0]["train_loss"], fast.history[0]["train_loss"]
    assert b == pytest.approx(a, rel=0.1)
    assert b != a  # bf16 autocast did run: the same seed in fp32 gives bit-identical losses
    weights = _weights(store, where)
    convs = [w for w in weights.values() if w.dim() == 4 and w.shape[1] > 1 and w.shape[2] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())


def test_optimizer_state_keeps_this_devices_adam_implementation() -> None:
    from colormamba.train import load_optimizer_state

    param = torch.nn.Parameter(torch.ones(3))
    fused = torch.optim.Adam([param], lr=0.1, fused=True)  # as a CUDA run saves it
    param.grad = torch.ones(3)
    fused.step()
    other = torch.nn.Parameter(param.detach().clone())
    foreach = torch.optim.Adam([other], lr=0.1, foreach=True)
    load_optimizer_state(foreach, fused.state_dict())
    group = foreach.param_groups[0]
    assert group["foreach"] is True and not group["fused"]
    assert foreach.state[other]["step"].item() == 1  # the state itself did come along
    other.grad = torch.ones(3)
    foreach.step()
    assert torch.all(other < param)


class RecordingStore(LocalStorage):
    """Keeps every version of last.pt written. `delay_s` slows down each best.pt write: a best.pt goes out
    just before its last.pt, so that last.pt is serialised while the next epoch already trains."""

    def __init__(self, root: Path, delay_s: float = 0.0, fail: bool = False) -> None:
        super().__init__(root)
        self.delay_s, self.fail = delay_s, fail
        self.versions: list[bytes] = []

    def put_bytes(self, key: str, data: bytes) -> None:
        if key.endswith("best.pt"):
            time.sleep(self.delay_s)
        if key.endswith("last.pt"):
            if self.fail:
                raise StorageError(f"{key}: disk full (test)")
            self.versions.append(data)
        super().put_bytes(key, data)


def _epochs_written(store: RecordingStore) -> list[int]:
    return [checkpoint.from_bytes(v, "test")["epoch"] for v in store.versions]


def test_checkpoints_written_in_the_background_hold_their_epochs_state(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    cfg = _config(tiny_dataset)
    fast = RecordingStore(tmp_path / "fast")
    slow = RecordingStore(tmp_path / "slow", delay_s=2.0)  # the next epoch trains while last.pt waits
    train(cfg, fast, RunLocation("s", "r"))
    train(cfg, slow, RunLocation("s", "r"))
    assert _epochs_written(fast) == _epochs_written(slow) == [1, 2, 3]
    for a, b in zip(fast.versions, slow.versions, strict=True):
        sa, sb = checkpoint.from_bytes(a, "a"), checkpoint.from_bytes(b, "b")
        for name in sa["model"]:
            assert torch.equal(sa["model"][name], sb["model"][name]), name  # a snapshot, not live weights
        assert sa["optimizer"]["state"][0]["step"] == sb["optimizer"]["state"][0]["step"]


def test_checkpoint_interval_skips_epochs_but_always_saves_the_last(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    store = RecordingStore(tmp_path / "store")
    events: list[dict] = []
    result = train(
        _config(tiny_dataset, checkpoint_interval_s=3600),
        store,
        RunLocation("s", "r"),
        on_progress=events.append,
    )
    assert _epochs_written(store) == [3]
    assert [e["epoch"] for e in events if e["phase"] == "checkpoint"] == [3]  # reported once it landed
    assert [e["phase"] for e in events].index("checkpoint") > [e["phase"] for e in events].index("epoch_end")
    best = checkpoint.load(store, RunLocation("s", "r").checkpoint("best"))
    assert best["epoch"] == result.best_epoch and best["val_psnr"] == result.best_psnr
    every_epoch = RecordingStore(tmp_path / "every")
    events.clear()
    train(_config(tiny_dataset), every_epoch, RunLocation("s", "r"), on_progress=events.append)
    assert _epochs_written(every_epoch) == [1, 2, 3]
    assert [e["epoch"] for e in events if e["phase"] == "checkpoint"] == [1, 2, 3]
    a, b = _weights(store, RunLocation("s", "r")), _weights(every_epoch, RunLocation("s", "r"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # fewer checkpoints, the same training


def test_a_failed_checkpoint_write_fails_the_run(tiny_dataset: Path, tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "store", fail=True)
    with pytest.raises(StorageError, match="disk full"):
        train(_config(tiny_dataset, epochs=2), store, RunLocation("s", "r"))


@pytest.mark.slow  # compiling the blocks: about a minute and a half on 2 cores without inductor's cache
def test_compiled_fast_path_trains_and_validates_eagerly(
    tiny_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _config(
        tiny_dataset, epochs=1, max_steps_per_epoch=2, precision="bf16", channels_last=True, compile=True
    )
    store, where = LocalStorage(tmp_path / "store"), RunLocation("s", "r")
    with caplog.at_level(logging.INFO, logger="colormamba.train"):
        result = train(cfg, store, where)
    expected = sum(isinstance(m, COMPILED_BLOCKS) for m in build_model("tiny").modules())
    assert any(f"compiled {expected} blocks" in r.getMessage() for r in caplog.records)
    assert math.isfinite(result.history[0]["train_loss"])
    # validation ran eagerly in float32: evaluating best.pt (an uncompiled model) on the selection split
    # reproduces it
    ev = evaluate(dataclasses.replace(cfg, report_split=cfg.select_split), store, where)
    assert ev.summary["psnr"]["mean"] == pytest.approx(result.best_psnr, abs=1e-4)


# ---------------------------------------------------------------------------------------------------
# the pieces of train(): one batch, G_B's HSV input, checkpoint state


def _parts(seed: int = 0, **overrides: object) -> TrainingParts:
    torch.manual_seed(seed)
    cfg = RunConfig(dataset="-", model="tiny", device="cpu", lr=1e-3, **overrides)
    return build_parts(cfg, torch.device("cpu"))


def _batch(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.rand(2, 1, size, size, generator=g), torch.rand(2, 3, size, size, generator=g)


def _adam_steps(optimizer: torch.optim.Optimizer) -> set[int]:
    return {int(state["step"]) for state in optimizer.state.values()}


def test_a_batch_takes_two_generator_updates_and_logs_the_last() -> None:
    nir, rgb = _batch()
    two, one = _parts(), _parts(generator_steps_per_batch=1)
    assert two.cfg.generator_steps_per_batch == 2  # the default: the reference's fit.py
    logged = train_step(two, nir, rgb)
    first, second = train_step(one, nir, rgb), train_step(one, nir, rgb)
    assert _adam_steps(two.optimizer) == {2}
    weights_one = one.model.state_dict()
    for name, weight in two.model.state_dict().items():
        assert torch.equal(weight, weights_one[name]), name  # = two batches of one update on the same data
    assert logged.keys() == second.keys() == {"loss", "mse", "cosine", "msssim", "hsv"}
    assert all(torch.equal(logged[k], second[k]) for k in logged)  # the last update's forward
    assert not torch.equal(first["loss"], second["loss"])


def test_the_discriminators_update_once_per_batch() -> None:
    parts = _parts(loss={"mse": 20.0, "hsv": 1.0, "adversarial": 1.0})
    logged = train_step(parts, *_batch())
    assert {"adversarial", "discriminator"} <= logged.keys()
    assert _adam_steps(parts.optimizer) == {2} and _adam_steps(parts.optimizer_d) == {1}


def test_gb_reads_its_hsv_input_from_hsv_nir_and_g_a_never_does() -> None:
    torch.manual_seed(0)
    model = build_model("tiny").eval()  # eval: spectral norm's power iteration would change the weights
    nir = torch.rand(2, 1, 24, 40)  # not a multiple of the network's stride: padding and cropping
    with torch.no_grad():
        plain = model(nir)
        assert all(torch.equal(a, b) for a, b in zip(plain, model(nir, nir), strict=True))
    inputs: dict[str, tuple] = {}
    model.hsv_net.register_forward_pre_hook(lambda _, args: inputs.update(hsv_net=args))
    model.rgb_net.register_forward_pre_hook(lambda _, args: inputs.update(rgb_net=args))
    jittered = pil_contrast(nir, torch.tensor([0.5, 1.4]))
    with torch.no_grad():
        rgb, _ = model(nir, jittered)
    expected_nir = pad_to_multiple(normalize_per_image(nir), model.size_multiple)[0]
    expected_hsv = pad_to_multiple(normalize_per_image(gray_to_hsv(jittered)), model.size_multiple)[0]
    assert torch.equal(inputs["hsv_net"][0], expected_nir) and torch.equal(inputs["rgb_net"][0], expected_nir)
    assert torch.equal(inputs["hsv_net"][1], expected_hsv)
    assert not torch.equal(rgb, plain[0])  # the jitter reaches the colours through G_B's guidance


def test_checkpoint_state_round_trips_through_one_list_of_keys() -> None:
    parts = _parts(loss={"mse": 20.0, "hsv": 1.0, "adversarial": 1.0})
    train_step(parts, *_batch())
    progress = Progress(epoch=3, best_epoch=2, best_psnr=21.5, train_seconds=4.25, history=[{"epoch": 1}])
    saved = checkpoint.from_bytes(checkpoint.to_bytes(checkpoint.snapshot(to_state(parts, progress))), "t")
    fresh = _parts(seed=1, loss={"mse": 20.0, "hsv": 1.0, "adversarial": 1.0})
    assert load_state(fresh, saved) == progress
    again = to_state(fresh, progress)
    assert again.keys() == to_state(parts, progress).keys() and again.keys() <= saved.keys()
    for key in ("model", "discriminators"):
        assert all(torch.equal(v, again[key][k]) for k, v in saved[key].items()), key
    assert _adam_steps(fresh.optimizer) == {2} and _adam_steps(fresh.optimizer_d) == {1}
    assert again["scheduler"] == saved["scheduler"] and again["config"] == saved["config"]


def test_the_loop_hands_gb_the_jittered_nir_and_g_a_the_plain_one(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import colormamba.train as training

    seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def recording_step(parts, nir, target_rgb, hsv_nir=None):  # the real step, its inputs recorded
        seen.append((nir, hsv_nir))
        return train_step(parts, nir, target_rgb, hsv_nir)

    monkeypatch.setattr(training, "train_step", recording_step)
    for run, contrast_p in (("jitter", 1.0), ("none", 0.0)):
        augment = {"contrast_p": contrast_p, "hflip_p": 0.0, "crop_fraction": 1.0}
        cfg = _config(tiny_dataset, epochs=1, max_steps_per_epoch=1, augment=augment)
        train(cfg, LocalStorage(tmp_path), RunLocation("s", run))
    (nir, hsv_nir), (plain_nir, plain_hsv_nir) = seen
    assert torch.equal(nir, plain_nir)  # G_A's NIR does not depend on the jitter
    assert torch.equal(plain_hsv_nir, plain_nir) and not torch.equal(hsv_nir, nir)  # G_B's does


def test_an_eager_run_imports_neither_dynamo_nor_torchvision() -> None:
    """Each `--local` run is a fresh process: importing torch._dynamo (1.7 s) or torchvision.models (which
    imports dynamo) for a run that compiles nothing and needs no pretrained file would cost every run."""
    code = (
        "import sys, torch; import services.runner; from colormamba import train;"
        "from colormamba.models import build_model;"
        "model = build_model('tiny'); model(torch.rand(1, 1, 32, 32));"
        "ctx = train._eager(); ctx.__enter__(); ctx.__exit__(None, None, None);"
        "print(sorted(m for m in ('torch._dynamo', 'torchvision') if m in sys.modules))"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
