"""Job-suite benchmark: submit-to-start latency through the real queue, and the aggregator's time for a
study of N finished runs. Prints one JSON object per line (like the other benchmarks).

    python benchmarks/bench_suite.py [--runs 100] [--latency-samples 5]

Starts its own redis-server, SeaweedFS S3 server and one Celery GPU worker on 127.0.0.1 (the same
helpers as the tests). Latency = time from `queue_run` (what `submit.py` calls) until the run's
`status.json` in S3 says it started (polled every 50 ms). The runs point at a dataset that is not in the
store, so each one starts, records `running`, fails at once and frees the worker: what is timed is
queue -> worker -> fresh pool process -> lease -> first status write, not training.
The aggregator figure is `build_report` over N runs with stored metrics, per-image rows, histories and
samples, against S3.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colormamba.storage_s3 import s3_from_env
from services.runs import mark_queued, read_status
from services.spec import parse_spec
from services.studies import save_study
from tests.support.records import fake_outputs
from tests.support.servers import RedisServer, SeaweedS3, Worker


def grid_spec(n_runs: int, dataset: str) -> dict:
    """A study of n_runs runs: one configuration, a learning-rate sweep of n_runs values, one seed."""
    return {
        "study": f"bench{n_runs}",
        "dataset": dataset,
        "model": "tiny",
        "seeds": [0],
        "recipe": {"epochs": 1, "batch_size": 2, "lr": [1e-4 * (1 + i) for i in range(n_runs)]},
        "configurations": {"original": {"loss": "original"}},
    }


def bench_aggregator(store, n_runs: int) -> dict:
    from services.report import build_report

    study = parse_spec(grid_spec(n_runs, "synthetic-none"))
    save_study(store, study)
    fake_outputs(store, study)
    started = time.perf_counter()
    data = build_report(store, study.name)
    seconds = time.perf_counter() - started
    return {
        "bench": "aggregator",
        "runs": n_runs,
        "configurations": len(data["summary"]),
        "seconds": round(seconds, 3),
    }


def bench_latency(env: dict[str, str], samples: int) -> dict:
    os.environ.update(env)
    from services.app import queue_run
    from services.coord import Coordinator, connect, run_key

    store = s3_from_env()
    study = parse_spec({**grid_spec(samples, "no-such-dataset"), "study": "latency"})
    save_study(store, study)
    coord = Coordinator(connect(env["COLORMAMBA_REDIS_URL"]))
    latencies = []
    for run in study.runs:
        mark_queued(store, study.name, run.run_id, None, variant=run.variant, seed=run.seed)  # as submit.py
        coord.mark_queued(run_key(study.name, run.run_id))
        t0 = time.perf_counter()
        queue_run(study.name, run.run_id)
        while not (read_status(store, study.name, run.run_id) or {}).get("started_at"):
            time.sleep(0.05)
        latencies.append(time.perf_counter() - t0)
        while (read_status(store, study.name, run.run_id) or {}).get("state") not in ("failed", "succeeded"):
            time.sleep(0.05)
    return {
        "bench": "submit_to_start",
        "samples": samples,
        "median_s": round(statistics.median(latencies), 2),
        "max_s": round(max(latencies), 2),
        "note": "includes spawning a fresh pool process (torch import)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--latency-samples", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as tmp:
        tmp = Path(tmp)
        redis_server = RedisServer(tmp / "redis").start()
        s3 = SeaweedS3(tmp / "weed").start()
        env = {
            **s3.env(),
            "COLORMAMBA_STORE": "s3://colormamba",
            "COLORMAMBA_REDIS_URL": redis_server.url,
            "COLORMAMBA_DATA_CACHE": str(tmp / "cache"),
        }
        os.environ.update(env)
        worker = Worker("bench", "gpu", env, tmp / "worker.log").start()
        try:
            print(json.dumps(bench_aggregator(s3_from_env(), args.runs)), flush=True)
            print(json.dumps(bench_latency(env, args.latency_samples)), flush=True)
        finally:
            worker.stop()
            s3.stop()
            redis_server.stop()


if __name__ == "__main__":
    main()
