#!/usr/bin/env python3
"""The quick real-data study (`jobs/specs/vcip2020_quick.yaml`) end to end, as the README runs it:
`submit.py --local SPEC --dataset PATH --runs-per-gpu 2` in a fresh folder store, timed as a whole, then
its report's numbers. The baseline, measured in the same run, is the report's two trivial references (the
NIR copied to three channels, the training set's mean image): a configuration is worth something only by
its margin over them. Prints JSON lines:

    {"bench": "quick_study", "row": "configuration", "name": "original", "psnr_mean": ..., "ssim_mean": ...,
     "beats_trivial": {...}}                                        one per configuration
    {"bench": "quick_study", "row": "reference", "name": "nir", "psnr_mean": ..., ...}   one per reference
    {"bench": "quick_study", "row": "summary", "wall_s": ..., "budget_s": 1200, "best": "original",
     "margin_db": {"nir": ..., "train_mean": ...}, "dataset": {...pairs, leakage...}, "cpus": 2}

    python benchmarks/bench_quick_study.py [--dataset PATH] [--vgg-weights random] [--set KEY=VALUE ...]

--dataset defaults to COLORMAMBA_VCIP2020 (the real copy). --vgg-weights random trains the vgg terms
with random VGG-19 weights where the ImageNet file is absent (stated in the summary line); --set overrides
recipe fields (e.g. `--set epochs=1`, for a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SUBMIT = REPO / "jobs" / "submit.py"
QUICK = REPO / "jobs" / "specs" / "vcip2020_quick.yaml"
BUDGET_S = 20 * 60  # the quick study's promise: at most 20 minutes on 2 CPU cores
METRICS = ("psnr", "ssim", "ae", "mae")


def _spec(work: Path, vgg_weights: str | None, overrides: list[str]) -> Path:
    """The quick spec, with the recipe's `vgg_weights` and `--set` overrides applied."""
    spec = yaml.safe_load(QUICK.read_text())
    if vgg_weights:
        spec["recipe"]["vgg_weights"] = vgg_weights
    for item in overrides:
        key, _, value = item.partition("=")
        spec["recipe"][key] = yaml.safe_load(value)
    path = work / QUICK.name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _metrics(row: dict) -> dict:
    return {f"{m}_mean": row.get(f"{m}_mean") for m in METRICS}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=os.environ.get("COLORMAMBA_VCIP2020"))
    p.add_argument("--vgg-weights", default=None, help="the recipe's vgg_weights (e.g. random)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a recipe override")
    p.add_argument("--runs-per-gpu", type=int, default=2)
    args = p.parse_args()
    if not args.dataset:
        raise SystemExit("no dataset: pass --dataset PATH or set COLORMAMBA_VCIP2020")
    with tempfile.TemporaryDirectory(prefix="bench-quick-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("COLORMAMBA_")}
        env |= {"COLORMAMBA_DATA_CACHE": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, str(SUBMIT), "--local", str(_spec(work, args.vgg_weights, args.set)),
                "--dataset", str(Path(args.dataset).resolve()), "--runs-per-gpu", str(args.runs_per_gpu),
                "--store", str(work / "store")]  # fmt: skip
        started = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
        wall = time.perf_counter() - started
        if out.returncode not in (0, 6):  # 6: finished, some runs failed (their rows say so)
            raise SystemExit(f"the quick study failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr}")
        report = json.loads((work / "store" / "reports" / "vcip2020_quick" / "report.json").read_text())
    for row in report["summary"]:
        print(json.dumps({"bench": "quick_study", "row": "configuration", "name": row["variant"],
                          **_metrics(row), "succeeded": row["succeeded"],
                          "beats_trivial": row.get("beats_trivial")}))  # fmt: skip
    for ref in report["trivial"]:
        line = {"bench": "quick_study", "row": "reference", "name": ref["reference"], **_metrics(ref)}
        print(json.dumps(line))
    scored = [r for r in report["summary"] if r.get("psnr_mean") is not None]
    best = max(scored, key=lambda r: r["psnr_mean"]) if scored else None
    margins = {ref["reference"]: round(best["psnr_mean"] - ref["psnr_mean"], 3)
               for ref in report["trivial"] if best and ref.get("psnr_mean") is not None}  # fmt: skip
    print(json.dumps({"bench": "quick_study", "row": "summary", "wall_s": round(wall, 1),
                      "budget_s": BUDGET_S, "within_budget": wall <= BUDGET_S,
                      "best": best["variant"] if best else None, "margin_db": margins,
                      "vgg_weights": args.vgg_weights or "pretrained", "overrides": args.set,
                      "dataset": report.get("dataset_info"),
                      "cpus": os.cpu_count()}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
