"""What a training run spends outside the network: producing batches and writing checkpoints.

    python benchmarks/bench_pipeline.py                      # 372 pairs of 256x256, batch 8, paper preset
    python benchmarks/bench_pipeline.py --device cuda

Two comparisons, each against its baseline in the same run, one JSON line per case and one per ratio:
- data: one epoch of augmented batches from `PairedDataset(train=True)` through a DataLoader (items
  augmented one by one on the CPU, then copied to the device; the baseline) against `TrainBatches` (the
  split kept on the device as bytes, each batch gathered and augmented there), ms per batch.
- checkpoint: how long the training loop is blocked by an end-of-epoch checkpoint of the preset's model
  and Adam state (last.pt): a synchronous `checkpoint.save` (the baseline) against
  `checkpoint.snapshot` + `BackgroundWriter.submit`, and how long the background write itself takes.
The dataset is synthetic (written to a temporary folder); the store is a temporary LocalStorage folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's colormamba

import torch
from torch.utils.data import DataLoader

from colormamba import checkpoint
from colormamba.data import AugmentConfig, PairedDataset, TrainBatches, list_pairs
from colormamba.data.synthetic import make_synthetic_dataset
from colormamba.models import build_model
from colormamba.storage import LocalStorage


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_data(root: Path, device: torch.device, batch: int, epochs: int) -> list[dict]:
    pairs = list_pairs(root, "train")
    per_item = PairedDataset(pairs, train=True, seed=0)
    resident = TrainBatches(pairs, device, AugmentConfig(), seed=0)

    def time_epochs(batches_of_epoch) -> float:
        times = []
        for epoch in range(epochs):
            _sync(device)
            t0 = time.perf_counter()
            n = 0
            for batch in batches_of_epoch(epoch):  # nir, rgb, hsv_nir
                batch = [t.to(device, non_blocking=True) for t in batch]
                n += 1
            _sync(device)
            times.append((time.perf_counter() - t0) * 1000 / n)
        return statistics.median(times)

    def loader_epoch(epoch: int):
        per_item.set_epoch(epoch)
        gen = torch.Generator().manual_seed(epoch)
        for item in DataLoader(per_item, batch_size=batch, shuffle=True, generator=gen):
            yield item["nir"], item["rgb"], item["hsv_nir"]

    base = time_epochs(loader_epoch)
    ours = time_epochs(lambda epoch: resident.epoch(epoch, batch))
    common = {"bench": "data", "pairs": len(pairs), "batch": batch, "device": str(device)}
    return [
        {**common, "case": "dataloader_per_item", "ms_per_batch": round(base, 2)},
        {**common, "case": "train_batches_on_device", "ms_per_batch": round(ours, 2)},
        {**common, "case": "ratio", "speedup": round(base / ours, 2)},
    ]


def bench_checkpoint(preset: str, device: torch.device, tmp: Path, repeat: int) -> list[dict]:
    model = build_model(preset, scan_backend="torch").to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # creates Adam's moments: last.pt holds weights + 2 moments
    store = LocalStorage(tmp / "store")

    def state() -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict()}

    sync_ms, blocked_ms, write_ms = [], [], []
    for i in range(repeat):
        t0 = time.perf_counter()
        checkpoint.save(store, f"checkpoints/b/sync{i}/last.pt", state())
        sync_ms.append((time.perf_counter() - t0) * 1000)
    writer = checkpoint.BackgroundWriter(store)
    for i in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        writer.submit([(f"checkpoints/b/bg{i}/last.pt", checkpoint.snapshot(state()))])
        blocked_ms.append((time.perf_counter() - t0) * 1000)
        writer.wait()
        write_ms.append((time.perf_counter() - t0) * 1000)
    writer.close()
    size_mib = (tmp / "store" / "checkpoints/b/sync0/last.pt").stat().st_size / 2**20
    common = {"bench": "checkpoint", "preset": preset, "device": str(device), "mib": round(size_mib)}
    return [
        {**common, "case": "synchronous_save", "blocked_ms": round(statistics.median(sync_ms))},
        {
            **common,
            "case": "snapshot_background_write",
            "blocked_ms": round(statistics.median(blocked_ms)),
            "write_ms": round(statistics.median(write_ms)),
        },
        {
            **common,
            "case": "ratio",
            "blocked_fraction": round(statistics.median(blocked_ms) / statistics.median(sync_ms), 3),
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pairs", type=int, default=372, help="training pairs (the study's split has 372)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed for the data case (median)")
    parser.add_argument("--preset", default="paper", help="model whose checkpoint is written")
    parser.add_argument("--repeat", type=int, default=2, help="checkpoints timed per way (median)")
    parser.add_argument("--only", choices=["data", "checkpoint"], help="run one comparison")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        tmp = Path(tmp)
        rows: list[dict] = []
        if args.only in (None, "data"):
            root = make_synthetic_dataset(tmp / "ds", n_train=args.pairs, n_val=1, size=args.size, seed=0)
            rows += bench_data(root, device, args.batch, args.epochs)
        if args.only in (None, "checkpoint"):
            rows += bench_checkpoint(args.preset, device, tmp, args.repeat)
        for row in rows:
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
