"""The README's demo: a generated dataset, a tiny model per loss configuration, a metrics table.

Runs on a laptop CPU in a few minutes and exercises the same train/evaluate functions as the job suite.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from colormamba.config import RunConfig
from colormamba.data.synthetic import make_synthetic_dataset
from colormamba.evaluate import evaluate
from colormamba.storage import LocalStorage, RunLocation
from colormamba.train import train

log = logging.getLogger(__name__)

DEMO_LOSSES = ("original", "histogram")  # the study's configurations that need no VGG weights


def format_table(rows: list[dict[str, object]]) -> str:
    """A fixed-width text table of the rows' values, in the rows' key order."""
    columns = list(rows[0])
    cells = [[f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def run_demo(
    out: Path,
    losses: tuple[str, ...] = DEMO_LOSSES,
    epochs: int = 4,
    size: int = 64,
    n_train: int = 48,
    n_val: int = 8,
    preset: str = "tiny",
    device: str = "auto",
    seed: int = 0,
) -> list[dict[str, object]]:
    """Generate the dataset (once), train + evaluate one run per loss configuration, return the table rows."""
    dataset = out / "dataset"
    if not dataset.exists():
        make_synthetic_dataset(dataset, n_train=n_train, n_val=n_val, size=size, seed=seed)
    store = LocalStorage(out / "store")
    rows = []
    for loss in losses:
        cfg = RunConfig(
            dataset=str(dataset),
            model=preset,
            loss=loss,
            epochs=epochs,
            batch_size=4,
            lr=1e-3,
            lr_step_epochs=max(1, epochs // 2),
            seed=seed,
            device=device,
        )
        where = RunLocation("demo", f"{loss}-seed{seed}")
        started = time.perf_counter()

        def progress(event: dict[str, object], loss: str = loss) -> None:
            if event.get("phase") == "epoch_end":
                log.info(
                    "%s: epoch %s/%s  train loss %.4f  val PSNR %.2f dB",
                    loss,
                    event["epoch"],
                    event["epochs"],
                    event["train_loss"],
                    event["val_psnr"],
                )

        result = train(cfg, store, where, on_progress=progress)
        ev = evaluate(cfg, store, where)
        rows.append(
            {
                "loss": loss,
                "PSNR": ev.summary["psnr"]["mean"],
                "SSIM": ev.summary["ssim"]["mean"],
                "AE(deg)": ev.summary["ae"]["mean"],
                "MAE(0-255)": ev.summary["mae"]["mean"],
                "best_epoch": result.best_epoch,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    return rows
