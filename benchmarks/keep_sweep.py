"""Keep a finished weight sweep's report and its choice: the top-ranked variant of one configuration on the
selection split, with the weights its runs trained (docs/evaluation.md, "Loss weights").

    python benchmarks/keep_sweep.py --store STORE --study combined_sweep --configuration combined \\
        --out benchmarks/results/2026-12-07_cpu/combined_sweep

Writes under --out: report.md, report.json, report.csv, differences.csv, runs.csv (the sweep's report as
the aggregator wrote it; the figures are left out, the Markdown names them) and choice.json: {study,
configuration, variant, ranked_by, select_psnr, weights, ranking: [{variant, rank, select_psnr, psnr}]}.
The chosen weights go into the study file by hand (tests/jobs/test_loss_study.py checks they match).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colormamba.storage import report_prefix
from services.studies import open_user_store

KEPT = ("report.md", "report.json", "report.csv", "differences.csv", "runs.csv")


def choose(report: dict, configuration: str) -> dict:
    """The configuration's variants ranked on the selection split, and the first one's weights."""
    rows = [r for r in report["summary"] if r["configuration"] == configuration and r["rank"] is not None]
    if not rows:
        raise SystemExit(f"no ranked variant of {configuration!r} in study {report['study']!r}")
    rows.sort(key=lambda r: r["rank"])
    best = rows[0]
    return {
        "study": report["study"],
        "configuration": configuration,
        "variant": best["variant"],
        "ranked_by": f"{report['select_split']} PSNR of each run's evaluated checkpoint",
        "select_psnr": best["select_psnr_mean"],
        "weights": report["recipes"][best["variant"]]["weights"],
        "ranking": [{"variant": r["variant"], "rank": r["rank"], "select_psnr": r["select_psnr_mean"],
                     "psnr": r["psnr_mean"]} for r in rows],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True, help="the store the sweep ran in (a folder or s3://...)")
    ap.add_argument("--study", required=True)
    ap.add_argument("--configuration", required=True, help="the swept configuration whose best is chosen")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    store = open_user_store(args.store)
    prefix = report_prefix(args.study)
    report = json.loads(store.get_bytes(f"{prefix}/report.json"))
    if report.get("partial"):
        runs = len(report["runs"])
        raise SystemExit(f"study {args.study!r} has not finished: {report['finished']} of {runs} runs")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        (args.out / name).write_bytes(store.get_bytes(f"{prefix}/{name}"))
    choice = choose(report, args.configuration)
    (args.out / "choice.json").write_text(json.dumps(choice, indent=1) + "\n")
    shown = {k: choice[k] for k in ("variant", "select_psnr", "weights")}
    print(json.dumps({"bench": "sweep_choice", **shown}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
