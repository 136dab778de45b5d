"""The aggregator's report from stored run outputs: numbers equal a recomputation from the per-image
rows, paired differences and their intervals, failed runs marked, every file written, and the HTML page
checked in a real headless browser (Debian's chromium) with a screenshot."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from colormamba.imaging import encode_png
from colormamba.storage import LocalStorage, RunLocation
from services.report import REPORT_FILES, bootstrap_ci, build_report, download_report
from services.spec import load_spec
from services.studies import save_study, write_status
from tests.suite.servers import find_binary

SPECS = Path(__file__).resolve().parents[2] / "jobs" / "specs"
IMAGES = [f"img{i:02d}" for i in range(6)]


def fake_outputs(store: LocalStorage, study, fail: str | None = None) -> dict[str, dict[str, list[float]]]:
    """Write what evaluate() and train() write for each run, with known per-image values."""
    rng = np.random.default_rng(0)
    values: dict[str, dict[str, list[float]]] = {}
    for k, run in enumerate(study.runs):
        where = RunLocation(study.name, run.run_id)
        if run.run_id == fail:
            write_status(
                store, study.name, run.run_id, {"state": "failed", "reason": "TrainingDiverged: loss is nan"}
            )
            continue
        offset = 1.0 if run.configuration == "histogram" else 0.0
        per = {
            "psnr": list(20 + offset + rng.normal(0, 0.5, len(IMAGES))),
            "ssim": list(0.6 + offset / 20 + rng.normal(0, 0.01, len(IMAGES))),
            "ae": list(5 - offset + rng.normal(0, 0.2, len(IMAGES))),
            "mae": list(20 - offset + rng.normal(0, 1, len(IMAGES))),
        }
        values[run.run_id] = per
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["name", "psnr", "ssim", "ae", "mae"])
        for i, name in enumerate(IMAGES):
            w.writerow([name, *(f"{per[m][i]:.6f}" for m in ("psnr", "ssim", "ae", "mae"))])
        store.put_bytes(where.artifact("per_image.csv"), buf.getvalue().encode())
        metrics = {m: {"mean": float(np.mean(np.round(v, 6)))} for m, v in per.items()}
        store.put_bytes(
            where.artifact("metrics.json"),
            json.dumps({"metrics": metrics, "protocol": "colormamba", "split": "val"}).encode(),
        )
        store.put_bytes(
            where.artifact("history.csv"),
            f"epoch,train_loss,val_psnr\n1,0.5,{18 + offset}\n2,0.3,{19 + offset}\n".encode(),
        )
        for name in IMAGES[:3]:
            for kind, ch in (("nir", 1), ("pred", 3), ("gt", 3)):
                img = torch.rand(ch, 16, 16, generator=torch.Generator().manual_seed(k))
                store.put_bytes(where.artifact(f"samples/{name}_{kind}.png"), encode_png(img))
        write_status(
            store,
            study.name,
            run.run_id,
            {"state": "succeeded", "train_seconds": 10.0 + k, "epochs_done": 2, "best_epoch": 2},
        )
    return values


@pytest.fixture
def built(tmp_path):
    store = LocalStorage(tmp_path / "store")
    study = load_spec(SPECS / "demo.yaml")
    save_study(store, study)
    failed = next(r.run_id for r in study.runs if r.configuration == "histogram" and r.seed == 1)
    values = fake_outputs(store, study, fail=failed)
    data = build_report(store, study.name)
    return store, study, values, data, failed


def test_report_rows_equal_a_recomputation_from_the_per_image_values(built):
    _, study, values, data, _ = built
    assert [r["variant"] for r in data["summary"]] == ["original", "histogram"]
    for row in data["summary"]:
        runs = [r.run_id for r in study.runs if r.variant == row["variant"] and r.run_id in values]
        for m in ("psnr", "ssim", "ae", "mae"):
            pooled = np.round(np.concatenate([values[r][m] for r in runs]), 6)
            assert row[f"{m}_mean"] == pytest.approx(pooled.mean(), abs=1e-9)
            assert row[f"{m}_std"] == pytest.approx(pooled.std(ddof=1), abs=1e-9)
        assert row["n_images"] == len(runs) * len(IMAGES)
    hist = next(r for r in data["summary"] if r["variant"] == "histogram")
    assert (hist["succeeded"], hist["failed"], hist["runs"]) == (1, 1, 2)
    assert hist["rank"] == 1  # higher PSNR by construction


def test_paired_differences_pair_by_seed_and_image(built):
    _, study, values, data, _ = built
    d = next(x for x in data["differences"] if x["metric"] == "psnr")
    assert d["variant"] == "histogram" and d["baseline"] == "original"
    # only seed 0 has both (seed 1 of histogram failed)
    hist0 = next(r.run_id for r in study.runs if r.configuration == "histogram" and r.seed == 0)
    orig0 = next(r.run_id for r in study.runs if r.configuration == "original" and r.seed == 0)
    diffs = np.round(values[hist0]["psnr"], 6) - np.round(values[orig0]["psnr"], 6)
    assert d["n_pairs"] == len(IMAGES)
    assert d["mean_diff"] == pytest.approx(diffs.mean())
    assert d["ci_low"] < d["mean_diff"] < d["ci_high"]
    assert d["verdict"] == "better"
    ae = next(x for x in data["differences"] if x["metric"] == "ae")
    assert ae["mean_diff"] < 0 and ae["verdict"] == "better", "lower AE is better"


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.normal(1.0, 1.0, 10)
    large = rng.normal(1.0, 1.0, 1000)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s
    assert lo_l < 1.0 < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 4
    assert bootstrap_ci(small) == (lo_s, hi_s), "seeded: the report is reproducible"


def test_every_file_is_written_and_failures_are_marked(built, tmp_path):
    store, study, _, data, failed = built
    names = download_report(store, study.name, tmp_path / "dl")
    assert sorted(names) == sorted(REPORT_FILES)
    md = (tmp_path / "dl" / "report.md").read_text()
    assert "original" in md and "histogram" in md and failed in md and "TrainingDiverged" in md
    assert "angular" in md and "protocol `colormamba`" in md
    assert data["generator_steps_per_batch"] == [2] and "Generator updates per batch: 2 " in md
    assert "not a reproduction of the published ColorMamba" in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "dl" / "report.csv").read_text())))
    assert len(rows) == 2, "one row per configuration"
    html_text = (tmp_path / "dl" / "report.html").read_text()
    assert "http://" not in html_text and "https://" not in html_text, "self-contained: nothing fetched"
    assert html_text.count("data:image/png;base64,") == 2
    # rebuilding gives the same rows: no duplicates however often the aggregator runs
    again = build_report(store, study.name)
    assert [r["variant"] for r in again["summary"]] == [r["variant"] for r in data["summary"]]
    assert len(again["runs"]) == len(study.runs)


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


def chromium() -> str:
    binary = find_binary("chromium") or find_binary("chromium-browser")
    if binary is None:
        pytest.fail("chromium not installed: apt-get install chromium (.ci/run installs it)")
    return binary


def test_html_report_renders_in_headless_chromium(built, tmp_path):
    """Load the page from a file: the DOM has the table and both images decoded, and no console errors."""
    store, study, _, _, _ = built
    download_report(store, study.name, tmp_path / "report")
    page = (tmp_path / "report" / "report.html").resolve()
    # an instrumented copy: a script appended at the end records what the page shows into the title
    probe = page.with_name("probe.html")
    probe.write_text(
        page.read_text().replace(
            "</body>",
            """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const rows = document.querySelectorAll('#summary tbody tr').length;
  document.title = `PROBE imgs=${imgs.length} decoded=${ok} rows=${rows}`;
  document.body.setAttribute('data-probe', document.title);
});
</script></body>""",
        )
    )
    profile = tmp_path / "profile"
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert 'data-probe="PROBE imgs=2 decoded=2 rows=2"' in run.stdout, run.stdout[-1500:]
    console_errors = [
        line for line in run.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()
    ]
    assert not console_errors, console_errors
    # the screenshot of the page itself, kept in the test's output folder
    shot = out / "report.png"
    run = subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--window-size=1280,2000",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert run.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, run.stderr[-2000:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[1] == 1280
    assert (img < 250).any(axis=2).mean() > 0.02, "the screenshot shows content, not a blank page"
    keep = os.environ.get("COLORMAMBA_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report_screenshot.png")
