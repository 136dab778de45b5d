"""Errors of `jobs/submit.py` that say what happened (a real subprocess each): a local file problem is
not "unreachable", a wrong Redis password is "authentication failed" and never printed, a down S3 server
fails within seconds in one line, typos get "did you mean", a missing dataset lists those that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from colormamba.storage import RunLocation
from services.datasets import ensure_synthetic
from services.spec import SpecError, load_spec
from tests.support.netfaults import TcpFront
from tests.support.servers import REPO, RedisServer, free_port
from tests.support.submit import DEMO, SUBMIT, submit


def test_report_into_an_existing_file_is_invalid_input_naming_it(study, tmp_path):
    store, _ = study
    target = tmp_path / "report.html"
    target.write_text("not a folder")
    out = submit("report", "demo", "-o", str(target), env={"COLORMAMBA_STORE": str(store.root)})
    assert out.returncode == 2, out.stderr
    assert str(target) in out.stderr and "folder" in out.stderr
    assert "cannot reach" not in out.stderr and "Traceback" not in out.stderr


def test_checkpoint_under_a_file_is_a_local_file_error_not_unreachable(study, tmp_path):
    store, spec = study
    run = spec.runs[0].run_id
    store.put_bytes(RunLocation("demo", run).checkpoint("best"), b"weights")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = submit("checkpoint", "download", f"demo/{run}", "-o", str(blocker / "best.pt"),
                 env={"COLORMAMBA_STORE": str(store.root)})  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert str(blocker) in out.stderr and "cannot reach" not in out.stderr, out.stderr


def test_a_closed_pipe_ends_quietly(study):
    """`status | head`: the reader went away; no "cannot reach the store", no traceback."""
    store, _ = study
    read, write = os.pipe()
    os.close(read)  # every write to `write` now fails with EPIPE
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLORMAMBA_")}
    env["COLORMAMBA_STORE"] = str(store.root)
    proc = subprocess.run([sys.executable, str(SUBMIT), "status", "demo"], stdout=write,
                          stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=60, env=env)  # fmt: skip
    os.close(write)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr


def test_wrong_redis_password_is_authentication_failed_without_the_password(study, tmp_path):
    store, _ = study
    server = RedisServer(tmp_path / "redis", password="right-pass-123").start()
    try:
        url = f"redis://:wrong-pass-456@127.0.0.1:{server.port}/0"
        out = submit("cancel", "demo", env={"COLORMAMBA_REDIS_URL": url, "COLORMAMBA_STORE": str(store.root)})
    finally:
        server.stop()
    assert out.returncode == 3, out.stderr
    assert "authentication failed" in out.stderr and "unreachable" not in out.stderr, out.stderr
    assert "wrong-pass-456" not in out.stderr + out.stdout and "***" in out.stderr


def test_s3_down_fails_within_seconds_in_one_line():
    """Workers retry S3 for COLORMAMBA_S3_RETRY_SECONDS (60 s by default); a command line does not."""
    endpoint = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {"COLORMAMBA_S3_ENDPOINT": f"http://{endpoint}", "COLORMAMBA_S3_ACCESS_KEY": "k",
           "COLORMAMBA_S3_SECRET_KEY": "secret-secret"}  # fmt: skip
    t0 = time.monotonic()
    out = submit("status", "demo", env=env, timeout=60)
    took = time.monotonic() - t0
    assert out.returncode == 3, out.stderr
    assert took < 10, took
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "unreachable" in out.stderr and "secret-secret" not in out.stderr


@pytest.mark.parametrize(("typo", "meant"), [("lsit", "list"), ("staus", "status"), ("cancle", "cancel")])
def test_a_typo_of_a_command_gets_did_you_mean_and_is_not_read_as_a_spec(typo, meant, tmp_path):
    out = submit(typo, env={"COLORMAMBA_STORE": str(tmp_path)})
    assert out.returncode == 2, out.stderr
    assert f"unknown command {typo!r}; did you mean {meant!r}?" in out.stderr, out.stderr
    assert "spec" not in out.stderr.split(";")[0] and "No such file" not in out.stderr


def test_a_spec_path_still_submits_without_the_word_submit(tmp_path):
    out = submit(str(tmp_path / "missing.yaml"), "--dry-run", env={"COLORMAMBA_STORE": str(tmp_path)})
    assert out.returncode == 2 and "missing.yaml" in out.stderr and "unknown command" not in out.stderr


def test_a_typo_of_a_spec_key_gets_did_you_mean(tmp_path):
    spec = yaml.safe_load(DEMO.read_text())
    spec["recipe"]["epoch"] = 3
    spec["seed"] = 1
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "recipe.epoch: unknown key; did you mean 'epochs'?" in err.value.problems
    assert "seed: unknown key; did you mean 'seeds'?" in err.value.problems


def test_a_missing_dataset_lists_the_datasets_there_and_queues_nothing(tmp_path, redis_server):
    from colormamba.storage import LocalStorage

    store = LocalStorage(tmp_path / "store")
    ensure_synthetic(store, "tiny-one", n_train=2, n_val=1, n_test=1, size=16, seed=0)
    spec = yaml.safe_load(DEMO.read_text())
    spec["dataset"] = "tiny-two"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {"COLORMAMBA_REDIS_URL": redis_server.url, "COLORMAMBA_STORE": str(store.root)}
    out = submit(str(path), "--yes", env=env)
    assert out.returncode == 2, out.stderr
    assert "'tiny-two' is not in the store" in out.stderr and "datasets there: tiny-one" in out.stderr
    assert "nothing was queued" in out.stderr
    assert not any(k.startswith("studies/") for k in store.list("")), "nothing written for the study"


def test_cancel_of_an_unknown_study_says_it_is_unknown(study):
    store, _ = study
    out = submit("cancel", "dmeo", env={"COLORMAMBA_STORE": str(store.root)})
    assert out.returncode == 4, out.stderr
    assert "unknown study 'dmeo'; did you mean 'demo'?" in out.stderr, out.stderr


@pytest.mark.parametrize("command", [("status", "demo"), ("list",)])
def test_a_hung_s3_server_fails_within_seconds_saying_the_true_time(command):
    """A server that accepts connections and never answers: each attempt's timeouts are bounded by the
    command line's budget, and the message's figures are what happened."""
    front = TcpFront(mode="hang").start()
    env = {"COLORMAMBA_S3_ENDPOINT": f"http://{front.endpoint}", "COLORMAMBA_S3_ACCESS_KEY": "k",
           "COLORMAMBA_S3_SECRET_KEY": "secret-secret", "COLORMAMBA_STORE": "s3://colormamba"}  # fmt: skip
    t0 = time.monotonic()
    try:
        out = submit(*command, env=env, timeout=60)
    finally:
        front.stop()
    took = time.monotonic() - t0
    assert out.returncode == 3, out.stderr
    assert took < 20, took
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    figures = re.search(r"failed (\d+) time\(s\) over (\d+\.\d) s", out.stderr)
    assert figures, out.stderr
    assert 1 <= float(figures[2]) <= took, (figures[0], took)  # the interpreter's start is the rest


def test_stdout_on_a_full_disk_is_a_local_write_error_naming_stdout(study):
    """`status demo > /dev/full`: exit 2 naming stdout, not "cannot reach the store" (exit 3)."""
    store, _ = study
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLORMAMBA_")}
    env["COLORMAMBA_STORE"] = str(store.root)
    for command in (["status", "demo"], ["list"]):  # one flushes as it goes, the other at the end
        with open("/dev/full", "w") as full:
            proc = subprocess.run([sys.executable, str(SUBMIT), *command], stdout=full, text=True,
                                  stderr=subprocess.PIPE, cwd=REPO, timeout=60, env=env)  # fmt: skip
        assert proc.returncode == 2, (command, proc.stderr)
        assert proc.stderr == "error: cannot write stdout: No space left on device\n", (command, proc.stderr)


@pytest.fixture
def full_disk(tmp_path) -> Iterator[Path]:
    """A folder on a 64 KiB tmpfs of its own: a write of more than that fails with ENOSPC."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_report_on_a_full_disk_is_exit_2_naming_the_file_and_leaves_the_old_report(study, full_disk):
    store, _ = study
    store.put_bytes("reports/demo/report.csv", b"variant,psnr\n" * 10)
    store.put_bytes("reports/demo/report.html", b"<p>" + b"x" * 200_000)  # more than the disk holds
    out_dir = full_disk / "report"
    out_dir.mkdir()
    (out_dir / "report.html").write_bytes(b"the previous report")
    out = submit("report", "demo", "-o", str(out_dir), env={"COLORMAMBA_STORE": str(store.root)})
    assert out.returncode == 2, out.stderr
    assert f"cannot write {out_dir / 'report.html'}: No space left on device" in out.stderr, out.stderr
    assert "cannot reach" not in out.stderr and "Traceback" not in out.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["report.html"], "no new, partial or temporary file"
    assert (out_dir / "report.html").read_bytes() == b"the previous report"


def test_checkpoint_download_on_a_full_disk_is_exit_2_and_leaves_nothing(study, full_disk):
    store, spec = study
    run = spec.runs[0].run_id
    store.put_bytes(RunLocation("demo", run).checkpoint("best"), b"w" * 200_000)
    target = full_disk / "best.pt"
    out = submit("checkpoint", "download", f"demo/{run}", "-o", str(target),
                 env={"COLORMAMBA_STORE": str(store.root)})  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert f"cannot write {target}: No space left on device" in out.stderr, out.stderr
    assert "cannot reach" not in out.stderr and "Traceback" not in out.stderr
    assert list(full_disk.iterdir()) == [], "no .part or temporary file left"
