"""The aggregator's report from stored run outputs: numbers equal a recomputation from the per-image
rows, paired differences (intervals over seeds, Holm-adjusted verdicts), failed runs marked, every file
written, and the HTML page checked in a real headless browser (Debian's chromium) with a screenshot."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats

from colormamba.losses import LOSS_PRESETS
from colormamba.storage import LocalStorage, RunLocation
from services.departures import departure_rows, study_departures
from services.report import (
    HIGHER_IS_BETTER,
    METRICS,
    REPORT_FILES,
    build_report,
    ci_summary,
    download_report,
    paired_differences,
    render_markdown,
)
from services.report.plots import curves_figure, samples_figure, scatter_figure
from services.spec import Study, load_spec
from services.studies import save_study
from tests.support.records import IMAGES, add_trivial, fake_outputs, record_status
from tests.support.servers import find_binary
from tests.support.submit import demo_with_seeds


@pytest.fixture
def built(tmp_path):
    store = LocalStorage(tmp_path / "store")
    study = load_spec(demo_with_seeds(tmp_path, [0, 1]))
    save_study(store, study)
    failed = next(r.run_id for r in study.runs if r.configuration == "histogram" and r.seed == 1)
    values = fake_outputs(store, study, fail=failed)
    # references well below every configuration (the page shows their rows under the table)
    add_trivial(store, study, {"nir": {"psnr": 8.0, "ssim": 0.2}, "train_mean": {"psnr": 15.0, "ssim": 0.3}})
    data = build_report(store, study.name)
    return store, study, values, data, failed


@pytest.fixture
def built_all_seeds(tmp_path):
    """Every run of the demo study with seeds 0 and 1 (2 configurations x 2 seeds) succeeded."""
    store = LocalStorage(tmp_path / "store")
    study = load_spec(demo_with_seeds(tmp_path, [0, 1]))
    save_study(store, study)
    values = fake_outputs(store, study)
    return store, study, values, build_report(store, study.name)


def _run_id(study, configuration: str, seed: int) -> str:
    return next(r.run_id for r in study.runs if r.configuration == configuration and r.seed == seed)


def test_report_rows_equal_a_recomputation_from_the_per_image_values(built):
    _, study, values, data, _ = built
    assert [r["variant"] for r in data["summary"]] == ["original", "histogram"]
    for row in data["summary"]:
        runs = [r.run_id for r in study.runs if r.variant == row["variant"] and r.run_id in values]
        for m in ("psnr", "ssim", "ae", "mae", "lpips"):
            pooled = np.round(np.concatenate([values[r][m] for r in runs]), 6)
            assert row[f"{m}_mean"] == pytest.approx(pooled.mean(), abs=1e-9)
            assert row[f"{m}_std"] == pytest.approx(pooled.std(ddof=1), abs=1e-9)
        assert row["n_images"] == len(runs) * len(IMAGES)
    hist = next(r for r in data["summary"] if r["variant"] == "histogram")
    assert (hist["succeeded"], hist["failed"], hist["runs"]) == (1, 1, 2)
    assert hist["rank"] == 1  # higher PSNR by construction


def _t_interval(units: np.ndarray) -> tuple[float, float, float]:
    """mean -+ t_{n-1, 0.975} sd / sqrt(n), and the two-sided p of mean / (sd / sqrt(n))."""
    n = units.size
    se = units.std(ddof=1) / np.sqrt(n)
    half = scipy_stats.t.ppf(0.975, n - 1) * se
    return units.mean() - half, units.mean() + half, 2 * scipy_stats.t.sf(abs(units.mean() / se), n - 1)


def _holm(p: list[float]) -> list[float]:
    """Holm's adjusted p-values written out: max over the smaller ones of (m - rank + 1) p, capped at 1."""
    ranked = sorted(p)
    m = len(p)
    return [max(min(1.0, (m - j) * ranked[j]) for j in range(ranked.index(x) + 1)) for x in p]


def test_one_seed_pairs_images_and_says_training_noise_is_out(built, tmp_path):
    store, study, values, data, _ = built
    d = next(x for x in data["differences"] if x["metric"] == "psnr")
    assert d["variant"] == "histogram" and d["baseline"] == "original"
    # only seed 0 has both (seed 1 of histogram failed): one seed, the per-image differences are the units
    diffs = np.round(values[_run_id(study, "histogram", 0)]["psnr"], 6) - np.round(
        values[_run_id(study, "original", 0)]["psnr"], 6
    )
    assert (d["n_seeds"], d["n_images"], d["df"]) == (1, len(IMAGES), len(IMAGES) - 1)
    assert d["estimate"] == pytest.approx(diffs.mean())
    low, high, p = _t_interval(diffs)
    assert (*d["ci"], d["p_value"]) == pytest.approx((low, high, p), rel=1e-6)
    assert d["verdict"] == "better" and d["primary"] and d["p_adjusted"] == pytest.approx(p), "one question"
    ae = next(x for x in data["differences"] if x["metric"] == "ae")
    assert ae["estimate"] < 0 and ae["verdict"] == "better", "lower AE is better"
    assert ae["exploratory"] and ae["p_adjusted"] is None, "AE is not the question's metric"
    lpips = next(x for x in data["differences"] if x["metric"] == "lpips")
    assert lpips["estimate"] < 0 and lpips["verdict"] == "better", "lower LPIPS is better"
    assert not data["ci"]["seed_noise_included"] and "NOT in the interval" in data["ci"]["method"]
    download_report(store, study.name, tmp_path / "dl")
    for name in ("report.md", "report.html"):
        text = (tmp_path / "dl" / name).read_text()
        assert "training noise is not in their intervals" in text, name
        assert "these particular trained networks only" in text, name


def test_several_seeds_resample_seeds_and_correct_only_the_question(built_all_seeds, tmp_path):
    store, study, values, data = built_all_seeds
    rows = data["differences"]
    assert [r["metric"] for r in rows] == list(METRICS)
    for r in rows:
        m = r["metric"]
        per_seed = np.array([
            np.mean(np.round(values[_run_id(study, "histogram", s)][m], 6)
                    - np.round(values[_run_id(study, "original", s)][m], 6))
            for s in (0, 1)
        ])  # fmt: skip
        assert (r["n_seeds"], r["n_images"], r["df"]) == (2, len(IMAGES), 1)
        assert r["estimate"] == pytest.approx(per_seed.mean())
        low, high, p = _t_interval(per_seed)
        assert (*r["ci"], r["p_value"]) == pytest.approx((low, high, p), rel=1e-6)
        sign = 1 if HIGHER_IS_BETTER[m] else -1
        assert r["seeds_better"] == int((sign * per_seed > 0).sum()), m
        assert r["seeds_better"] + r["seeds_worse"] == 2, m
    # the question is PSNR of the one configuration: a family of one comparison, Holm leaves its p as is
    (question,) = [r for r in rows if r["primary"]]
    assert question["metric"] == "psnr" and question["family"] == "against the baseline"
    assert question["p_adjusted"] == pytest.approx(question["p_value"])
    assert question["tested_at"] == pytest.approx(0.05)
    for r in rows:
        p = r["p_adjusted"] if r["primary"] else r["p_value"]
        assert r["exploratory"] is (not r["primary"]) and (r["p_adjusted"] is None) is r["exploratory"]
        improved = r["estimate"] > 0 if HIGHER_IS_BETTER[r["metric"]] else r["estimate"] < 0
        assert r["verdict"] == ("inconclusive" if p >= 0.05 else "better" if improved else "worse")
        assert r["mde"] is not None and r["mde"] > 0
    assert data["ci"]["comparisons"] == 1 and data["ci"]["exploratory"] == len(METRICS) - 1
    assert data["question"] == {"metric": "psnr", "families": {"against the baseline": ["histogram"]}}
    assert data["ci"]["seed_noise_included"]
    download_report(store, study.name, tmp_path / "dl")
    table = list(csv.DictReader(io.StringIO((tmp_path / "dl" / "differences.csv").read_text())))
    assert list(table[0])[:8] == ["variant", "baseline", "family", "metric", "primary", "n_seeds", "n_images",
                                  "estimate"]  # fmt: skip
    assert [float(t["ci_low"]) for t in table] == pytest.approx([r["ci"][0] for r in rows])
    assert [t["p_adjusted"] for t in table][1:] == [""] * (len(METRICS) - 1), "exploratory: uncorrected"
    md = (tmp_path / "dl" / "report.md").read_text()
    assert "Holm over the question's 1 comparison (PSNR, families `against the baseline`)" in md
    assert "training noise is inside the interval" in md and "no clear difference" not in md
    assert "not in their intervals" not in md
    html_text = (tmp_path / "dl" / "report.html").read_text()
    assert 'id="differences"' in html_text and "(Holm)" in html_text and "(raw)" in html_text


def test_every_file_is_written_and_failures_are_marked(built, tmp_path):
    store, study, _, data, failed = built
    names = download_report(store, study.name, tmp_path / "dl")
    assert sorted(names) == sorted(REPORT_FILES)
    md = (tmp_path / "dl" / "report.md").read_text()
    assert "original" in md and "histogram" in md and failed in md and "TrainingDiverged" in md
    assert "angular" in md and "protocol `colormamba`" in md
    assert data["generator_steps_per_batch"] == [2] and "Generator updates per batch: 2 " in md
    assert "not a reproduction of the published ColorMamba" in md
    weights = data["recipes"]["original"]["weights"]
    assert "Baseline `original`: " + " + ".join(f"{w:g} {t}" for t, w in weights.items()) in md, "generated"
    expected = departure_rows(study_departures(study))
    assert data["departures"] == expected and expected[0]["configuration"] == "every configuration"
    assert "## Departures from the reference objective and from the seed" in md
    assert "`histogram` distance W1 between soft CDFs; the seed names KL or chi-squared" in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "dl" / "report.csv").read_text())))
    assert len(rows) == 2, "one row per configuration"
    html_text = (tmp_path / "dl" / "report.html").read_text()
    assert "http://" not in html_text and "https://" not in html_text, "self-contained: nothing fetched"
    assert html_text.count("data:image/png;base64,") == 3, "curves, scatter, samples"
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
  const rows = document.querySelectorAll('#summary tbody tr:not(.reference)').length;
  const refs = document.querySelectorAll('#summary tbody tr.reference').length;
  const ids = [...document.querySelectorAll('#runs tbody td:first-child')];
  const nowrap = ids.length > 0 && ids.every(td => getComputedStyle(td).whiteSpace === 'nowrap');
  const fits = document.documentElement.scrollWidth <= window.innerWidth;
  const shown = `imgs=${imgs.length} decoded=${ok} rows=${rows} refs=${refs}`;
  document.title = `PROBE ${shown} nowrap=${nowrap} fits=${fits}`;
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
            "--window-size=900,2000",  # narrower than the runs table: it must scroll, not the page
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert 'data-probe="PROBE imgs=3 decoded=3 rows=2 refs=2 nowrap=true fits=true"' in run.stdout, (
        run.stdout[-1500:]
    )
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


def test_pairs_keep_shared_seeds_and_images_and_holm_spans_the_table():
    """Three seeds for `a`, one shared seed for `b`, nothing for `c`; one image missing in one run."""
    rng = np.random.default_rng(5)
    rows = []
    for variant, seeds in (("base", (0, 1, 2)), ("a", (0, 1, 2)), ("b", (0, 7))):
        for seed in seeds:
            for name in IMAGES:
                if (variant, seed, name) == ("a", 2, IMAGES[0]):
                    continue  # an image this run did not score
                rows.append({"variant": variant, "seed": seed, "run": f"{variant}{seed}", "name": name,
                             **{m: float(rng.normal()) for m in ("psnr", "ssim", "ae", "mae")}})  # fmt: skip
    diffs = paired_differences(rows, "base", ["base", "a", "b", "c"], "psnr")
    by = {(d["variant"], d["metric"]): d for d in diffs}
    assert (by["a", "psnr"]["n_seeds"], by["a", "psnr"]["n_images"]) == (3, len(IMAGES) - 1)
    assert (by["b", "psnr"]["n_seeds"], by["b", "psnr"]["n_images"]) == (1, len(IMAGES)), "seed 7: no pair"
    assert by["c", "psnr"]["verdict"] == "no paired images" and by["c", "psnr"]["p_adjusted"] is None
    base0 = {r["name"]: r["psnr"] for r in rows if r["run"] == "base0"}
    b0 = {r["name"]: r["psnr"] for r in rows if r["run"] == "b0"}
    assert by["b", "psnr"]["estimate"] == pytest.approx(np.mean([b0[n] - base0[n] for n in IMAGES]))
    tested = [d for d in diffs if d["p_value"] is not None]
    assert len(tested) == 8
    question = [d for d in tested if d["primary"]]
    assert [(d["variant"], d["metric"]) for d in question] == [("a", "psnr"), ("b", "psnr")]
    assert [d["p_adjusted"] for d in question] == pytest.approx(_holm([d["p_value"] for d in question]))
    assert all(d["tested_at"] == pytest.approx(0.025) for d in question), "Holm's first step: 0.05 / 2"
    summary = ci_summary(diffs, "psnr")
    assert (summary["comparisons"], summary["exploratory"]) == (2, 6)
    assert "Holm over the question's 2 comparisons (PSNR" in summary["correction"]
    assert "several seeds (3)" in summary["method"] and "with one seed" in summary["method"]
    assert not summary["seed_noise_included"]


# ---------------------------------------------------------------------------------------------------
# a report while runs are still going, its figures, and the HTML's form


@pytest.fixture
def partial(tmp_path):
    """original seed 0 succeeded; histogram seed 0 is training (one epoch in its history.csv); the other
    two runs have not started."""
    store = LocalStorage(tmp_path / "store")
    study = load_spec(demo_with_seeds(tmp_path, [0, 1]))
    save_study(store, study)
    done, running = _run_id(study, "original", 0), _run_id(study, "histogram", 0)
    fake_outputs(store, Study(study.spec, [r for r in study.runs if r.run_id == done]))
    record_status(store, study.name, running, {"state": "running", "epoch": 1, "checkpoint_saved_epoch": 1})
    store.put_bytes(RunLocation(study.name, running).artifact("history.csv"),
                    b"epoch,train_loss,val_psnr\n1,7.5,17.25\n")  # fmt: skip
    return store, study, build_report(store, study.name), running


def test_partial_report_shows_finished_runs_and_curves_so_far(partial, tmp_path):
    store, study, data, running = partial
    assert (data["partial"], data["finished"]) == (True, 1)
    assert data["histories"][running] == [{"epoch": 1.0, "train_loss": 7.5, "val_psnr": 17.25}]
    hist = next(r for r in data["summary"] if r["variant"] == "histogram")
    assert hist["psnr_mean"] is None and hist["succeeded"] == 0, "no metrics yet, no crash"
    assert {d["verdict"] for d in data["differences"]} == {"no paired images"}
    fig = curves_figure(data)
    loss_axes = {ax.get_title(): ax for ax in fig.axes[1:]}
    assert set(loss_axes) == {"training loss: original", "training loss: histogram"}
    (line,) = loss_axes["training loss: histogram"].get_lines()
    assert line.get_label() == "seed 0 (running)" and list(line.get_ydata()) == [7.5]
    psnr_lines = {ln.get_label(): list(ln.get_ydata()) for ln in fig.axes[0].get_lines()}
    assert psnr_lines["histogram"] == [17.25]
    download_report(store, study.name, tmp_path / "dl")
    for name in ("report.md", "report.html"):
        assert f"1 of {len(study.runs)} runs finished" in (tmp_path / "dl" / name).read_text(), name


def test_finished_study_has_no_banner(built_all_seeds, tmp_path):
    store, study, _, data = built_all_seeds
    assert (data["partial"], data["finished"]) == (False, len(study.runs))
    download_report(store, study.name, tmp_path / "dl")
    assert "runs finished" not in (tmp_path / "dl" / "report.html").read_text()


def test_each_configuration_has_its_own_loss_axis_and_every_panel_a_legend(built_all_seeds):
    _, study, _, data = built_all_seeds
    fig = curves_figure(data)
    variants = {r.variant for r in study.runs}
    assert len(fig.axes) == 1 + len(variants), "one PSNR axis, one loss axis per configuration"
    assert fig.axes[0].get_title().startswith("validation PSNR")
    assert {ln.get_label() for ln in fig.axes[0].get_lines()} == variants
    for ax in fig.axes:
        assert ax.get_legend() is not None, ax.get_title()
    for ax in fig.axes[1:]:
        variant = ax.get_title().removeprefix("training loss: ")
        seeds = sorted(r.seed for r in study.runs if r.variant == variant)
        assert [ln.get_label() for ln in ax.get_lines()] == [f"seed {s}" for s in seeds]
        for ln, seed in zip(ax.get_lines(), seeds, strict=True):
            run = _run_id(study, variant, seed)
            assert list(ln.get_ydata()) == [h["train_loss"] for h in data["histories"][run]]


def test_scatter_pairs_each_image_with_the_baseline(built_all_seeds):
    _, study, values, data = built_all_seeds
    (ax,) = scatter_figure(data).axes
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    expected = np.array([
        [round(values[_run_id(study, "original", s)]["psnr"][i], 6),
         round(values[_run_id(study, "histogram", s)]["psnr"][i], 6)]
        for s in (0, 1) for i in range(len(IMAGES))
    ])  # fmt: skip
    np.testing.assert_allclose(points[np.lexsort(points.T[::-1])], expected[np.lexsort(expected.T[::-1])])
    (diagonal,) = [ln for ln in ax.get_lines() if ln.get_label() == "y = x"]
    assert list(diagonal.get_xdata()) == list(diagonal.get_ydata())
    wins = int((expected[:, 1] > expected[:, 0]).sum())
    assert ax.get_title() == f"histogram above the diagonal on {wins}/{len(expected)}"
    assert ax.get_legend() is not None


def test_sample_grid_has_error_maps_on_one_scale(built_all_seeds):
    from PIL import Image

    store, study, _, data = built_all_seeds
    fig = samples_figure(store, data)
    maps = [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == "magma"]
    assert len(maps) == 3 * 2, "an error map per shown image and configuration"
    assert len({im.get_clim() for im in maps}) == 1, "one colour scale"

    def load(variant: str, kind: str) -> np.ndarray:
        where = RunLocation(study.name, _run_id(study, variant, 0))
        png = store.get_bytes(where.artifact(f"samples/img00_{kind}.png"))
        return np.asarray(Image.open(io.BytesIO(png)), dtype=np.float64)

    # the grid's truth is the first shown run's (histogram ranks first); original's prediction differs
    expected = np.abs(load("original", "pred") - load("histogram", "gt")).mean(axis=2)
    assert expected.max() > 0
    assert any(np.allclose(im.get_array(), expected) for im in maps)
    assert max(im.get_clim()[1] for im in maps) >= expected.max()


def test_html_form_inline_code_nowrap_and_an_all_failed_configuration_as_one_line(tmp_path):
    store = LocalStorage(tmp_path / "store")
    study = load_spec(demo_with_seeds(tmp_path, [0, 1]))
    save_study(store, study)
    fake_outputs(store, Study(study.spec, [r for r in study.runs if r.configuration == "original"]))
    for r in study.runs:
        if r.configuration == "histogram":
            record_status(store, study.name, r.run_id, {"state": "failed", "reason": "TrainingDiverged: nan"})
    build_report(store, study.name)
    download_report(store, study.name, tmp_path / "dl")
    page = (tmp_path / "dl" / "report.html").read_text()
    assert "`" not in page, "inline code is rendered, not shown with its backticks"
    assert "<code>original</code>" in page and "<code>test</code>" in page
    assert "td:first-child,code{white-space:nowrap}" in page and "overflow-x:auto" in page
    assert "max-width:1200px" not in page, "the page uses the window's width"
    failed_block = page.split('<ul id="failed-configurations">', 1)[1].split("</ul>", 1)[0]
    assert failed_block.count("<li>") == 1
    ids = ", ".join(f"<code>{r.run_id}</code>" for r in study.runs if r.configuration == "histogram")
    assert f"<code>histogram</code>: all 2 run(s) failed ({ids}): TrainingDiverged: nan" in failed_block
    summary = page.split('id="summary"', 1)[1].split("</table>", 1)[0]
    assert "histogram" not in summary, "no row of dashes for it"
    differences = page.split("<h2>Paired differences", 1)[1].split("<h2>", 1)[0]
    assert "histogram" not in differences
    runs = page.split('id="runs"', 1)[1]
    assert "histogram" not in runs and runs.count("<tr>") == 1 + 2, "header and the original runs"
    recipes = page.split('id="recipes"', 1)[1].split("</table>", 1)[0]
    for preset in ("original", "histogram"):  # each configuration's weights as the loss presets state them
        weights = ", ".join(f"{term} {w:g}" for term, w in LOSS_PRESETS[preset].items())
        assert weights in recipes, (preset, weights)
    md = (tmp_path / "dl" / "report.md").read_text()
    assert "**Failed configuration** `histogram`: all 2 run(s) failed" in md


def test_refresh_is_sent_once_per_interval_per_study_over_workers(redis_server):
    """Two workers' checkpoints of one study within N s send one report task; another study is not held
    back; after N s the next checkpoint sends again. A status without a new checkpoint asks nothing."""
    import redis

    from services.tasks import LiveReport, refresh_key

    client = redis.Redis.from_url(redis_server.url)
    study, other = f"live-{os.getpid()}", f"live-other-{os.getpid()}"
    sent: list[str] = []
    interval = 0.5
    worker_a, worker_b = (LiveReport(client, study, interval, sent.append) for _ in range(2))
    assert worker_a({"state": "running", "epoch": 1}) is False, "no checkpoint yet: nothing asked"
    assert client.get(refresh_key(study)) is None
    assert worker_a({"checkpoint_saved_epoch": 1}) is True
    assert 0 < client.pttl(refresh_key(study)) <= interval * 1000
    assert worker_b({"checkpoint_saved_epoch": 1}) is False, "within N s of the first: throttled"
    assert worker_a({"checkpoint_saved_epoch": 2}) is False
    assert LiveReport(client, other, interval, sent.append)({"checkpoint_saved_epoch": 1}) is True
    assert sent == [study, other]
    time.sleep(interval + 0.1)
    assert worker_b({"checkpoint_saved_epoch": 2}) is True, "a new window"
    assert worker_b({"checkpoint_saved_epoch": 2}) is False, "the same checkpoint asks once"
    assert sent == [study, other, study]


def test_a_missing_metric_is_explained_once_with_the_reason_the_runs_recorded(tmp_path):
    """Runs whose metrics.json says why a metric is missing (LPIPS without its weights): the header gives
    each distinct reason once, with the number of runs, in Markdown and HTML alike."""
    store = LocalStorage(tmp_path / "store")
    study = load_spec(demo_with_seeds(tmp_path, [0, 1]))
    save_study(store, study)
    fake_outputs(store, study)
    why = "LPIPS not computed: AlexNet weights not found at /nowhere/alexnet.pth"
    for run in study.runs[:3]:
        key = RunLocation(study.name, run.run_id).artifact("metrics.json")
        record = json.loads(store.get_bytes(key)) | {"missing_metrics": {"lpips": why}}
        store.put_bytes(key, json.dumps(record).encode())
    data = build_report(store, study.name)
    line = f"LPIPS is empty for 3 run(s): {why}"
    markdown = store.get_bytes(f"reports/{study.name}/report.md").decode()
    html = store.get_bytes(f"reports/{study.name}/report.html").decode()
    assert markdown.count(line) == 1 and line in html
    assert sum(1 for r in data["runs"] if r.get("missing_metrics")) == 3


# ---------------------------------------------------------------------------------------------------
# the trivial references (the NIR copy, the training mean) and whether each configuration beats them


def _pooled(values, study, configuration: str, metric: str) -> float:
    """The pooled mean over a configuration's images and seeds, as the summary row computes it."""
    runs = [r.run_id for r in study.runs if r.configuration == configuration and r.run_id in values]
    return float(np.round(np.concatenate([values[r][metric] for r in runs]), 6).mean())


@pytest.fixture
def with_trivial(tmp_path):
    """Every run succeeded; the references sit between the two configurations: the NIR copy's PSNR and
    the training mean's SSIM between `original`'s and `histogram`'s, their other metric below both."""
    store = LocalStorage(tmp_path / "store")
    study = load_spec(demo_with_seeds(tmp_path, [0, 1]))
    save_study(store, study)
    values = fake_outputs(store, study)

    def between(metric: str) -> float:
        return (_pooled(values, study, "original", metric) + _pooled(values, study, "histogram", metric)) / 2

    def below(metric: str) -> float:
        return min(_pooled(values, study, c, metric) for c in ("original", "histogram")) - 1.0

    means = {
        "nir": {"psnr": between("psnr"), "ssim": below("ssim"), "ae": 30.0, "mae": 60.0, "lpips": 0.5},
        "train_mean": {
            "psnr": below("psnr"),
            "ssim": between("ssim"),
            "ae": 10.0,
            "mae": 25.0,
            "lpips": None,
        },
    }
    add_trivial(store, study, means)
    return store, study, values, means, build_report(store, study.name)


def test_trivial_rows_are_the_runs_and_each_configuration_is_judged_against_them(with_trivial, tmp_path):
    store, study, _, means, data = with_trivial
    assert [t["reference"] for t in data["trivial"]] == ["nir", "train_mean"]
    for t in data["trivial"]:
        for m in METRICS:
            assert t[f"{m}_mean"] == means[t["reference"]][m]
            assert t[f"{m}_std"] == (0.5 if means[t["reference"]][m] is not None else None)
        assert t["n_images"] == len(IMAGES) and t["description"] == f"the {t['reference']} prediction"
    assert data["trivial_from"] == {"nir": study.runs[0].run_id, "train_mean": study.runs[0].run_id}
    assert data["trivial_differences"] == [] and data["trivial_notes"] == []
    for row in data["summary"]:
        for ref in ("nir", "train_mean"):
            expected = {m: row[f"{m}_mean"] > means[ref][m] for m in ("psnr", "ssim")}  # higher is better
            assert row["beats_trivial_by_metric"][ref] == expected
            assert row["beats_trivial"][ref] is expected["psnr"], "the verdict is the primary metric's"
    by = {r["variant"]: r for r in data["summary"]}
    # the construction puts `original` below the NIR copy on PSNR and below the training mean on SSIM
    assert by["original"]["beats_trivial"] == {"nir": False, "train_mean": True}
    assert by["histogram"]["beats_trivial"] == {"nir": True, "train_mean": True}

    download_report(store, study.name, tmp_path / "dl")
    md = (tmp_path / "dl" / "report.md").read_text()
    table = md.split("## Configurations", 1)[1].split("\n\n", 1)[0].splitlines()[3:]  # after the header
    lines = {line.split(" | ")[1]: line for line in table}
    assert list(lines) == ["histogram", "original", "NIR copy (reference)", "training mean (reference)"]
    assert lines["original"].rstrip(" |").endswith("no: NIR copy (PSNR); below on SSIM: training mean")
    assert lines["histogram"].rstrip(" |").endswith("yes")
    assert lines["NIR copy (reference)"].startswith("| reference |"), "listed, not ranked"
    assert f"{means['nir']['psnr']:.2f} ± 0.50" in lines["NIR copy (reference)"]
    assert "**`original` does not beat the NIR copy on PSNR.**" in md
    assert "does not beat" not in md.replace("`original` does not beat", ""), "only original is marked"
    assert "mean PSNR is better than the reference's (SSIM is compared too" in md
    page = (tmp_path / "dl" / "report.html").read_text()
    summary = page.split('id="summary"', 1)[1].split("</table>", 1)[0]
    assert summary.count('<tr class="reference">') == 2
    (marked,) = [row for row in summary.split("<tr")[1:] if 'class="below-trivial"' in row]
    assert "<td>original</td>" in marked
    assert '<p class="warning"><code>original</code> does not beat the NIR copy on PSNR' in page
    rows = {
        r["variant"]: r for r in csv.DictReader(io.StringIO((tmp_path / "dl" / "report.csv").read_text()))
    }
    assert (rows["original"]["beats_nir"], rows["original"]["beats_train_mean"]) == ("False", "True")
    assert (rows["histogram"]["beats_nir"], rows["histogram"]["beats_train_mean"]) == ("True", "True")
    assert (
        rows["original"]["not_beaten"] == "nir: psnr"
        and rows["histogram"]["not_beaten"] == ""
    )
    assert "beats_trivial" not in rows["original"], "flattened into columns, not a dict's repr"


def test_beating_a_reference_follows_each_metrics_direction_and_missing_means(monkeypatch):
    import importlib

    collect_module = importlib.import_module(
        "services.report.collect"
    )  # the package's `collect` is the function

    refs = [{"reference": "nir", "psnr_mean": 20.0, "ssim_mean": 0.5, "ae_mean": 6.0}]
    row = {"psnr_mean": 21.0, "ssim_mean": 0.6, "ae_mean": 5.0}
    assert collect_module.beats_trivial(row, refs)["beats_trivial"] == {"nir": True, "train_mean": None}
    lower_ssim = collect_module.beats_trivial(row | {"ssim_mean": 0.4}, refs)
    assert lower_ssim["beats_trivial"]["nir"] is True, "SSIM is shown, the verdict is PSNR's"
    assert lower_ssim["beats_trivial_by_metric"]["nir"] == {"psnr": True, "ssim": False}
    assert collect_module.beats_trivial(row | {"psnr_mean": None}, refs)["beats_trivial"]["nir"] is None
    worse = row | {"psnr_mean": 19.0, "ssim_mean": None}
    assert collect_module.beats_trivial(worse, refs)["beats_trivial"]["nir"] is False
    monkeypatch.setattr(collect_module, "BEAT_METRICS", ("psnr", "ae"))  # AE: lower is better
    monkeypatch.setattr(collect_module, "SHOWN_METRICS", ())
    assert not HIGHER_IS_BETTER["ae"]
    assert collect_module.beats_trivial(row, refs)["beats_trivial_by_metric"]["nir"] == {
        "psnr": True,
        "ae": True,
    }
    assert collect_module.beats_trivial(row | {"ae_mean": 7.0}, refs)["beats_trivial"]["nir"] is False


def test_runs_whose_trivial_references_differ_are_named_in_the_header(with_trivial, tmp_path):
    store, study, _, means, _ = with_trivial
    other = study.runs[2].run_id
    add_trivial(
        store, study, {**means, "nir": {**means["nir"], "psnr": means["nir"]["psnr"] + 0.25}}, [other]
    )
    lpips_less = study.runs[1].run_id  # LPIPS missing in one run (no weights there): not a difference
    add_trivial(store, study, {**means, "nir": {**means["nir"], "lpips": None}}, [lpips_less])
    data = build_report(store, study.name)
    assert [(d["run"], d["reference"], d["metric"]) for d in data["trivial_differences"]] == [
        (other, "nir", "psnr")
    ]
    (diff,) = data["trivial_differences"]
    assert (diff["value"], diff["shown"]) == (means["nir"]["psnr"] + 0.25, means["nir"]["psnr"])
    nir = next(t for t in data["trivial"] if t["reference"] == "nir")
    assert nir["psnr_mean"] == means["nir"]["psnr"] and data["trivial_from"]["nir"] == study.runs[0].run_id
    header = render_markdown(data).split("## Configurations")[0]
    assert "**Warning: the trivial references differ between runs" in header
    assert other in header and lpips_less not in header
    assert f"in {other} against {means['nir']['psnr']:.4f} in {study.runs[0].run_id}" in header


def test_runs_evaluated_before_the_references_get_one_note_and_no_verdict(built_all_seeds, tmp_path):
    store, study, _, data = built_all_seeds  # fake_outputs writes no `trivial`, as older evaluations did
    assert data["trivial"] == [] and data["trivial_differences"] == []
    for row in data["summary"]:
        assert row["beats_trivial"] == {"nir": None, "train_mean": None}
    download_report(store, study.name, tmp_path / "dl")
    note = (
        f"No trivial references: the {len(study.runs)} finished run(s) were evaluated before the evaluation"
    )
    for name in ("report.md", "report.html"):
        text = (tmp_path / "dl" / name).read_text()
        assert text.count(note) == 1, name
        assert "(reference)" not in text and "does not beat" not in text, name
    rows = list(csv.DictReader(io.StringIO((tmp_path / "dl" / "report.csv").read_text())))
    assert [(r["beats_nir"], r["beats_train_mean"], r["not_beaten"]) for r in rows] == [("", "", "")] * 2
    # some runs with references, some without: the references are the others', and the report says so
    add_trivial(store, study, {"nir": {"psnr": 5.0, "ssim": 0.1}}, [study.runs[0].run_id])
    again = build_report(store, study.name)
    assert [t["reference"] for t in again["trivial"]] == ["nir"]
    assert any(f"{len(study.runs) - 1} of {len(study.runs)} finished runs have no trivial" in n
               for n in again["trivial_notes"])  # fmt: skip
    assert all(r["beats_trivial"] == {"nir": True, "train_mean": None} for r in again["summary"])


def test_the_report_and_the_evaluation_name_the_same_references():
    from colormamba.evaluate import TRIVIAL_REFERENCES
    from services.report.names import TRIVIAL_LABELS

    assert tuple(TRIVIAL_LABELS) == TRIVIAL_REFERENCES


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("refuse", "no pair in more than one split"), ("drop", "the later copies were dropped (1 from test)"),
     ("allow", "were KEPT")],
)  # fmt: skip
def test_the_header_states_the_datasets_content_counts_and_leakage(tmp_path, policy, expected):
    from colormamba.data import list_pairs
    from colormamba.data.synthetic import make_synthetic_dataset
    from services.studies import prepare_dataset

    root = make_synthetic_dataset(tmp_path / "data", n_train=4, n_val=2, n_test=2, size=16, seed=2)
    if policy != "refuse":  # a test copy of a training pair
        first = list_pairs(root, "train")[0]
        shutil.copyfile(first.nir, root / "Testing" / "again_nir.png")
        shutil.copyfile(first.rgb, root / "Testing" / "again_rgb_reg.png")
    spec = demo_with_seeds(tmp_path, [0])
    changed = {"dataset": str(root), "leaks": policy}
    spec.write_text(yaml.safe_dump(yaml.safe_load(spec.read_text()) | changed))
    store = LocalStorage(tmp_path / "store")
    study = load_spec(spec)
    study = study.bind_dataset(prepare_dataset(store, study, allow_local_path=True, cache_dir=tmp_path / "c"))
    save_study(store, study)
    fake_outputs(store, study)
    data = build_report(store, study.name)
    md = render_markdown(data)
    identity = study.dataset_info["identity"]
    test_pairs = 3 if policy == "allow" else 2
    assert f"Dataset `{root}` (content `{identity[:12]}`, pairs train 4, val 2, test {test_pairs})" in md
    assert expected in md
    assert ("Warning: the dataset was uploaded with --allow-leaks" in md) == (policy == "allow")
    assert data["dataset_info"]["leakage"]["status"] == {"refuse": "clean", "drop": "dropped",
                                                         "allow": "allowed"}[policy]  # fmt: skip


def test_the_recipes_table_shows_the_weights_the_runs_were_planned_with(tmp_path, monkeypatch):
    store = LocalStorage(tmp_path / "store")
    study = load_spec(demo_with_seeds(tmp_path, [0]))
    save_study(store, study)
    fake_outputs(store, study)
    planned = dict(LOSS_PRESETS["original"])
    monkeypatch.setitem(LOSS_PRESETS, "original", {**planned, "mse": planned["mse"] + 5})  # edited since
    data = build_report(store, study.name)
    assert data["recipes"]["original"]["weights"] == planned
    assert data["recipes"]["original"]["model_config"] == study.runs[0].resolved["model"]
