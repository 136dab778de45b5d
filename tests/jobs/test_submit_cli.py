"""`jobs/submit.py` as a user runs it (a real subprocess): exit codes and messages of the refusals, and
that a refused submission leaves nothing behind (no objects, no messages)."""

from __future__ import annotations

import time
from pathlib import Path

import redis
import yaml

from colormamba.data.synthetic import make_synthetic_dataset
from colormamba.storage import LocalStorage
from services.runs import read_status
from services.spec import MAX_STUDY_RUNS, load_spec
from tests.support.servers import free_port, queued_tasks
from tests.support.submit import DEMO, submit


def test_invalid_spec_exits_2_listing_every_problem_and_queues_nothing(tmp_path, redis_server):
    spec = yaml.safe_load(DEMO.read_text())
    spec["recipe"]["epochs"] = 0
    spec["recipe"]["lr"] = "fast"
    spec["configurations"]["typo"] = {"loss": "orignal"}
    spec["colour"] = "blue"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    store = tmp_path / "store"
    env = {"COLORMAMBA_REDIS_URL": redis_server.url, "COLORMAMBA_STORE": str(store)}
    before = redis.Redis.from_url(redis_server.url).dbsize()
    out = submit(str(path), env=env)
    assert out.returncode == 2, out.stderr
    for field in ("recipe.epochs", "recipe.lr", "configurations.typo", "colour"):
        assert field in out.stderr, (field, out.stderr)
    assert "nothing was queued" in out.stderr
    assert "Traceback" not in out.stderr
    assert not store.exists()
    assert redis.Redis.from_url(redis_server.url).dbsize() == before


def test_a_spec_a_worker_would_refuse_exits_2_naming_the_paths_and_nothing_reaches_redis_or_s3(
    tmp_path, redis_server, s3_env, s3_store
):
    s3_store.put_bytes("sentinel", b"the bucket exists")
    spec = yaml.safe_load(DEMO.read_text())
    spec["recipe"]["model_overrides"] = {"rgb_widht": 8}
    spec["recipe"]["augment"] = {"flipp": True}
    spec["configurations"]["histogram"]["weights"] = {"vggg": 1.0}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    before = redis.Redis.from_url(redis_server.url).dbsize()
    out = submit(str(path), "--yes", env={**s3_env, "COLORMAMBA_REDIS_URL": redis_server.url})
    assert out.returncode == 2, out.stderr
    for problem in (
        "recipe.model_overrides.rgb_widht: unknown key; did you mean 'rgb_width'?",
        "recipe.augment.flipp: unknown key; did you mean 'hflip_p'?",
        "configurations.histogram.weights.vggg: unknown loss term; did you mean 'vgg'?",
    ):
        assert f"  - {problem}\n" in out.stderr, (problem, out.stderr)
    assert "nothing was queued" in out.stderr and "Traceback" not in out.stderr
    assert queued_tasks(redis_server.url, "gpu") == []
    assert redis.Redis.from_url(redis_server.url).dbsize() == before
    assert s3_store.list("") == ["sentinel"], "no studies/demo/ object, no dataset"


def test_redis_unreachable_at_submit_is_a_clear_error_and_nothing_is_half_queued(tmp_path):
    store = tmp_path / "store"
    url = f"redis://127.0.0.1:{free_port()}/0"
    out = submit(str(DEMO), "--yes", env={"COLORMAMBA_REDIS_URL": url, "COLORMAMBA_STORE": str(store)})
    assert out.returncode == 3, out.stderr
    assert f"Redis unreachable at {url}" in out.stderr
    assert "--local" in out.stderr
    assert "Traceback" not in out.stderr
    assert LocalStorage(store).list("") == [], "no spec, status or dataset may be written"


def test_dry_run_lists_the_runs(tmp_path):
    out = submit(str(DEMO), "--dry-run", env={"COLORMAMBA_STORE": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    runs = load_spec(DEMO).runs
    assert f"{len(runs)} run(s); {len(runs)} to run" in out.stdout
    dataset, _, *rest = out.stdout.splitlines()
    assert dataset.startswith("dataset synthetic-") and "pairs train 32, val 8, test 16" in dataset
    listed, plan = rest[: len(runs)], rest[len(runs) :]
    assert [line.strip() for line in listed] == [r.run_id for r in runs]
    # then the plan with the assumed noise: the question and the smallest effect the seeds detect
    assert plan[0].startswith("question: PSNR; 1 comparison(s) against `original`")
    assert any(line.startswith("smallest true PSNR difference found with 80% power: 3 seeds")
               for line in plan)
    assert plan[-1].startswith("plan with a measured noise: python jobs/submit.py plan")


def test_dataset_upload_refuses_a_corrupt_image_naming_it(tmp_path):
    root = make_synthetic_dataset(tmp_path / "ds", n_train=3, n_val=2, size=16, seed=0)
    bad = sorted((root / "RGB-Registered").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:40])  # a truncated PNG
    store = tmp_path / "store"
    out = submit("dataset", "upload", str(root), "--name", "ds", env={"COLORMAMBA_STORE": str(store)})
    assert out.returncode == 2, out.stderr
    assert str(bad) in out.stderr
    assert LocalStorage(store).list("datasets") == []


def test_dataset_upload_and_list(tmp_path):
    root = make_synthetic_dataset(tmp_path / "ds", n_train=3, n_val=2, size=16, seed=0)
    env = {"COLORMAMBA_STORE": str(tmp_path / "store")}
    out = submit("dataset", "upload", str(root), "--name", "ds", env=env)
    assert out.returncode == 0, out.stderr
    assert "pairs train 3, val 2" in out.stdout
    out = submit("dataset", "upload", str(root), "--name", "ds-again", env=env)
    assert out.returncode == 0, out.stderr
    assert "same content as dataset ds: its files are shared, none uploaded" in out.stdout
    out = submit("dataset", "list", env=env)
    assert out.returncode == 0, out.stderr
    header, *rows = [line.split() for line in out.stdout.splitlines()]
    assert header[:2] == ["name", "layout"] and header[-2:] == ["files", "of"], header
    table = {row[0]: row for row in rows}
    assert set(table) == {"ds", "ds-again"}
    assert table["ds"][1] == table["ds-again"][1] == "vcip2020"
    assert table["ds"][-1] == table["ds-again"][-1] == "ds", "both names read ds's files"


def test_a_local_folder_dataset_is_refused_for_the_queue(tmp_path, redis_server):
    spec = yaml.safe_load(DEMO.read_text())
    spec["dataset"] = "./some/folder"
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = submit(
        str(path), env={"COLORMAMBA_REDIS_URL": redis_server.url, "COLORMAMBA_STORE": str(tmp_path / "st")}
    )
    assert out.returncode == 2, out.stderr
    assert "dataset upload ./some/folder --name NAME" in out.stderr


def test_unknown_study_is_exit_4(tmp_path):
    out = submit("status", "nope", env={"COLORMAMBA_STORE": str(tmp_path)})
    assert out.returncode == 4 and "unknown study 'nope'" in out.stderr


def test_no_store_configured_says_what_to_set(tmp_path):
    out = submit("list")
    assert out.returncode == 2
    assert "COLORMAMBA_S3_ENDPOINT" in out.stderr and "--local" in out.stderr


def test_many_runs_need_confirmation(tmp_path, redis_server):
    spec = yaml.safe_load(DEMO.read_text())
    spec["recipe"]["lr"] = [1e-3, 1e-4, 1e-5]
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {"COLORMAMBA_REDIS_URL": redis_server.url, "COLORMAMBA_STORE": str(tmp_path / "st")}
    out = submit(str(path), "--max-runs", "5", env=env)
    assert out.returncode == 5, out.stderr
    n = 3 * len(load_spec(DEMO).runs)
    assert f"{n} runs is more than --max-runs 5; pass --yes" in out.stderr
    assert not Path(tmp_path / "st" / "studies").exists()


def test_rerun_fresh_deletes_checkpoints_only_when_confirmed(tmp_path, redis_url):
    """`--rerun failed` resumes a failed run (its checkpoint kept); `--fresh` deletes the checkpoint, and
    only with a yes: with nobody at a terminal and no --yes it changes nothing and exits 5."""
    from colormamba.storage import RunLocation
    from services.coord import Coordinator, connect, run_key
    from tests.support.records import record_status

    env = {"COLORMAMBA_REDIS_URL": redis_url, "COLORMAMBA_STORE": str(tmp_path / "store")}
    assert submit(str(DEMO), "--yes", env=env).returncode == 0
    store, run = LocalStorage(tmp_path / "store"), load_spec(DEMO).runs[0].run_id
    record_status(store, "demo", run, {"state": "failed", "reason": "S3 down", "checkpoint_saved_epoch": 2})
    Coordinator(connect(redis_url)).mark_done(run_key("demo", run))  # what the worker that failed it did
    last = RunLocation("demo", run).checkpoint("last")
    store.put_bytes(last, b"epoch 2")

    out = submit(str(DEMO), "--fresh", env=env)
    assert out.returncode == 2 and "--fresh is for --rerun" in out.stderr
    out = submit(str(DEMO), "--rerun", "failed", "--fresh", env=env)
    assert out.returncode == 5, out.stderr
    assert "--fresh would delete the checkpoints of 1 run(s)" in out.stderr and "--yes" in out.stderr
    assert store.exists(last) and read_status(store, "demo", run)["state"] == "failed", "nothing changed"
    out = submit(str(DEMO), "--rerun", "failed", env=env)
    assert out.returncode == 0 and "queued 1 run(s)" in out.stdout, out.stdout + out.stderr
    assert store.get_bytes(last) == b"epoch 2", "resumed, not retrained"
    assert queued_tasks(redis_url, "gpu")[0] == ("services.tasks.run", ["demo", run]), "ahead of the rest"


def _grid(tmp_path: Path, lrs: int, epochs: int = 1, seeds: int = 3) -> Path:
    """The demo spec (two configurations) swept over `lrs` learning rates and `epochs` epoch counts."""
    spec = yaml.safe_load(DEMO.read_text())
    spec["seeds"] = list(range(seeds))
    spec["recipe"]["lr"] = [1e-4 * (i + 1) for i in range(lrs)]
    spec["recipe"]["epochs"] = list(range(1, epochs + 1))
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_dry_run_above_max_runs_gives_the_count_and_lists_nothing(tmp_path):
    path, store = _grid(tmp_path, lrs=4), tmp_path / "st"  # 2 configurations x 4 x 3 seeds
    out = submit(str(path), "--dry-run", env={"COLORMAMBA_STORE": str(store)})
    assert out.returncode == 5, out.stderr
    assert "24 runs is more than --max-runs 20; pass --yes (or --max-runs 24)" in out.stderr
    assert "-seed" not in out.stdout and "Traceback" not in out.stderr
    assert not store.exists(), "refused before the store or the dataset were touched"
    out = submit(str(path), "--dry-run", "--max-runs", "24", env={"COLORMAMBA_STORE": str(store)})
    assert out.returncode == 0, out.stderr
    assert "24 run(s); 24 to run" in out.stdout and out.stdout.count("-seed") >= 24


def test_a_grid_of_1e8_runs_is_refused_at_once_whatever_the_flags(tmp_path):
    path = _grid(tmp_path, lrs=1000, epochs=500, seeds=100)  # 2 x 1000 x 500 x 100 = 10**8
    env = {"COLORMAMBA_STORE": str(tmp_path / "st"), "COLORMAMBA_REDIS_URL": "redis://127.0.0.1:9/0"}
    for flags in (["--dry-run"], ["--dry-run", "--yes"], ["--yes", "--max-runs", str(10**9)], ["--local"]):
        start = time.monotonic()
        out = submit(str(path), *flags, env=env, timeout=90)
        took = time.monotonic() - start
        assert out.returncode == 2, (flags, out.stderr[:2000])
        assert "configurations: 100000000 runs" in out.stderr, (flags, out.stderr[:2000])
        assert f"a study holds at most {MAX_STUDY_RUNS}" in out.stderr and len(out.stderr) < 1000
        assert took < 15, (flags, took)  # the interpreter and imports; the refusal itself: test_spec.py
    assert not (tmp_path / "st").exists()
