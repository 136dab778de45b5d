"""Run records for tests that need a study in some state: written through services.runs like every
record, by legal moves only (queued, then running, then the state asked for); and a study's run outputs
with known per-image values, as evaluate() and train() write them (for the report's tests and benchmark)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import torch

from colormamba.imaging import encode_png
from colormamba.storage import RunLocation, Storage
from services.runs import TRANSITIONS, State, read_status, state_of, transition

# a running run's status as a worker records it mid-epoch
RUNNING = {"state": "running", "phase": "train", "epoch": 1, "epochs": 2, "step": 3, "steps": 4,
           "loss": 0.1234, "eta_s": 75, "worker": "gpu1@host (pid 7)", "device": "cpu"}  # fmt: skip


def record_status(store: Storage, study: str, run: str, status: dict[str, Any]) -> dict[str, Any]:
    """Bring the run's record to `status["state"]` with the other fields of `status` on top."""
    fields = dict(status)
    target = State(fields.pop("state"))
    current = read_status(store, study, run)
    for step in (State.QUEUED, State.RUNNING):
        if target in TRANSITIONS[state_of(current)]:
            break
        current = transition(store, study, run, current, step)
    return transition(store, study, run, current, target, **fields)


IMAGES = [f"img{i:02d}" for i in range(6)]


def fake_outputs(store: Storage, study, fail: str | None = None) -> dict[str, dict[str, list[float]]]:
    """Write what evaluate() and train() write for each run, with known per-image values."""
    rng = np.random.default_rng(0)
    values: dict[str, dict[str, list[float]]] = {}
    for k, run in enumerate(study.runs):
        where = RunLocation(study.name, run.run_id)
        if run.run_id == fail:
            record_status(
                store, study.name, run.run_id, {"state": "failed", "reason": "TrainingDiverged: loss is nan"}
            )
            continue
        offset = 1.0 if run.configuration == "histogram" else 0.0
        per = {
            "psnr": list(20 + offset + rng.normal(0, 0.5, len(IMAGES))),
            "ssim": list(0.6 + offset / 20 + rng.normal(0, 0.001, len(IMAGES))),
            "ae": list(5 - offset + rng.normal(0, 0.2, len(IMAGES))),
            "mae": list(20 - offset + rng.normal(0, 1, len(IMAGES))),
            "lpips": list(0.3 - offset / 10 + rng.normal(0, 0.01, len(IMAGES))),
        }
        values[run.run_id] = per
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["name", *per])
        for i, name in enumerate(IMAGES):
            w.writerow([name, *(f"{per[m][i]:.6f}" for m in per)])
        store.put_bytes(where.artifact("per_image.csv"), buf.getvalue().encode())
        metrics = {m: {"mean": float(np.mean(np.round(v, 6)))} for m, v in per.items()}
        store.put_bytes(
            where.artifact("metrics.json"),
            json.dumps({"metrics": metrics, "protocol": "colormamba", "report_split": "test"}).encode(),
        )
        store.put_bytes(
            where.artifact("history.csv"),
            f"epoch,train_loss,val_psnr\n1,0.5,{18 + offset}\n2,0.3,{19 + offset}\n".encode(),
        )
        for name in IMAGES[:3]:
            for kind, ch in (("nir", 1), ("pred", 3), ("gt", 3)):
                img = torch.rand(ch, 16, 16, generator=torch.Generator().manual_seed(k))
                store.put_bytes(where.artifact(f"samples/{name}_{kind}.png"), encode_png(img))
        record_status(
            store,
            study.name,
            run.run_id,
            {
                "state": "succeeded",
                "train_seconds": 10.0 + k,
                "epochs_done": 2,
                "best_epoch": 2,
                "select_metrics": {"psnr": 19 + offset},
            },
        )
    return values


def add_trivial(
    store: Storage, study, means: dict[str, dict[str, float | None]], runs: list[str] | None = None
) -> None:
    """Add the trivial references to the metrics.json of the study's runs that have one (`runs`: only
    these), as evaluate() writes them: reference -> {"description", "metrics": {metric: summary}} with
    the given means (None: the metric is missing), over the images of `fake_outputs`."""
    for run in study.runs:
        key = RunLocation(study.name, run.run_id).artifact("metrics.json")
        if (runs is not None and run.run_id not in runs) or not store.exists(key):
            continue
        record = json.loads(store.get_bytes(key))
        record["trivial"] = {
            reference: {"description": f"the {reference} prediction",
                        "metrics": {m: _summary(v) for m, v in values.items()}}
            for reference, values in means.items()
        }  # fmt: skip
        store.put_bytes(key, json.dumps(record).encode())


def _summary(mean: float | None) -> dict[str, Any]:
    """A metric's summary in metrics.json; a missing metric (NaN) is null in every field but the count."""
    spread = None if mean is None else 0.5
    return {"mean": mean, "std": spread, "median": mean, "min": mean, "max": mean, "n": len(IMAGES)}
