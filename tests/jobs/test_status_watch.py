"""`jobs/submit.py status STUDY --watch` as a user runs it (a real subprocess): the live table follows
the runs' status.json files, the command exits by itself once every run has ended, `--timeout` bounds
it for scripts, and an unreachable store is a clear error. `status` reads only the store (never Redis),
so a folder store, whose statuses the test writes as workers would, is all it needs."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from services.status_view import short_run_id
from tests.support.netfaults import TcpFront
from tests.support.polling import wait_until
from tests.support.records import RUNNING, record_status
from tests.support.servers import free_port
from tests.support.submit import renders, submit, wait_for_render, watch


def row_of(render: str, run: str) -> str:
    """`run`'s row in one render, named by its short id (`CONFIG-seedN`); "" when it has none."""
    short = short_run_id(run)
    return next((line for line in render.splitlines() if line.split()[:1] == [short]), "")


@pytest.fixture
def cleanup() -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_watch_follows_the_runs_and_exits_when_every_run_has_ended(study, tmp_path, cleanup):
    store, spec = study
    running, queued = spec.runs[0].run_id, spec.runs[1].run_id
    out = tmp_path / "watch.txt"
    proc = watch(store, out, "--interval", "0.2")
    cleanup.append(proc)

    first = wait_for_render(out, lambda r: "running" in r, proc)
    assert "1 failed, 1 queued, 1 running, 1 succeeded" in first
    for column in ("run", "state", "phase", "epoch", "sel", "PSNR", "ETA", "worker"):
        assert column in first.splitlines()[1].split(), column
    row = row_of(first, running)
    for cell in ("running", "train", "1/2", "1m15s", "gpu1@host"):
        assert cell in row, (cell, row)
    assert "TrainingDiverged: loss is nan" in first

    # the next epoch shows up in a later render: the table is live, not printed once
    record_status(store, "demo", running, {**RUNNING, "epoch": 2, "step": 1, "eta_s": 20})
    later = wait_for_render(out, lambda r: " 2/2 " in row_of(r, running), proc)
    assert "0m20s" in row_of(later, running)
    assert proc.poll() is None, "runs are still going: the watch goes on"

    record_status(store, "demo", running, {"state": "succeeded", "epoch": 2, "epochs": 2})
    record_status(store, "demo", queued, {"state": "cancelled", "reason": "cancelled while queued"})
    rc = proc.wait(10)
    _, err = proc.communicate()
    assert rc == 0, err
    last = renders(out)[-1]
    assert "1 cancelled, 1 failed, 2 succeeded" in last, "it exits after rendering the final states"
    assert "running" not in last and "cancelled while queued" in last
    assert len(renders(out)) >= 3


def test_watch_timeout_gives_up_with_exit_7(study, tmp_path, cleanup):
    store, _ = study
    out = tmp_path / "watch.txt"
    t0 = time.monotonic()
    proc = watch(store, out, "--interval", "0.3", "--timeout", "1")
    cleanup.append(proc)
    rc = proc.wait(30)
    took = time.monotonic() - t0
    _, err = proc.communicate()
    assert rc == 7, err
    assert "--timeout 1 s reached; not every run has ended" in err
    assert "(1 failed, 1 queued, 1 running, 1 succeeded)" in err
    assert "Traceback" not in err
    assert len(renders(out)) >= 3, "it kept refreshing until the deadline"
    assert took < 15, took  # 1 s of watching plus the interpreter's start on a busy machine

    bad = submit("status", "demo", "--watch", "--interval", "0", env={"COLORMAMBA_STORE": str(store.root)})
    assert bad.returncode == 2 and "--interval must be positive" in bad.stderr


def test_status_with_the_store_unreachable_is_a_clear_error(tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {
        "COLORMAMBA_S3_ENDPOINT": f"http://{endpoint}",
        "COLORMAMBA_S3_ACCESS_KEY": "k",
        "COLORMAMBA_S3_SECRET_KEY": "secret-secret",
        "COLORMAMBA_S3_RETRY_SECONDS": "1",
    }
    out = submit("status", "demo", "--watch", env=env, timeout=60)
    assert out.returncode == 3, out.stdout + out.stderr
    assert f"S3Storage(http://{endpoint}" in out.stderr and "unreachable" in out.stderr, out.stderr
    assert "Check that the S3 server is up" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_a_lost_run_shows_no_eta_and_says_it_waits(study):
    """A run whose worker died (the reaper's `lost` record): no live ETA, the note says what happens."""
    from services.runs import lost_reason

    store, spec = study
    running = spec.runs[0].run_id
    record_status(store, "demo", running, {"state": "lost", "reason": lost_reason("gpu1@host (pid 7)", None)})
    out = submit("status", "demo", env={"COLORMAMBA_STORE": str(store.root)})
    assert out.returncode == 0, out.stderr
    row = row_of(out.stdout, running)
    assert row.split()[1] == "lost" and "1m15s" not in row, row
    assert "waiting to be taken" in out.stdout, out.stdout
    assert "1 lost" in out.stdout.splitlines()[0]


OUTAGE = re.compile(r"store unreachable since \d\d:\d\d:\d\d \((\d+) s\): .+; retrying")


@pytest.fixture
def s3_study(study, s3_store, seaweed) -> Iterator[tuple[object, TcpFront, dict[str, str]]]:
    """The `study` fixture's records in the test's S3 bucket, and a TCP front between the command line
    and SeaweedFS that can cut the connection (a network blip) while the store itself stays as it was."""
    local, _ = study
    for key in local.list(""):
        s3_store.put_bytes(key, local.get_bytes(key))
    host, port = seaweed.endpoint.split(":")
    front = TcpFront((host, int(port))).start()
    env = {**seaweed.env(), "COLORMAMBA_S3_ENDPOINT": f"http://{front.endpoint}",
           "COLORMAMBA_S3_BUCKET": s3_store.bucket, "COLORMAMBA_S3_RETRY_SECONDS": "1"}  # fmt: skip
    yield s3_store, front, env
    front.stop()


def test_watch_rides_out_a_store_outage_and_shows_it(study, s3_study, tmp_path, cleanup):
    """S3 gone for a few seconds: the watch says since when and goes on; once the store answers the
    table is back, and the watch ends as usual when every run has ended."""
    _, spec = study
    store, front, env = s3_study
    out = tmp_path / "watch.txt"
    proc = watch(store, out, "--interval", "0.3", env=env)
    cleanup.append(proc)
    wait_for_render(out, lambda r: "running" in r, proc)

    front.set_mode("drop")

    def outage_for(seconds: int) -> bool:
        assert proc.poll() is None, f"exited with {proc.returncode}: {proc.stderr.read()}"
        return any(int(m[1]) >= seconds for m in OUTAGE.finditer(out.read_text()))

    wait_until("an outage line of 3 s or more", lambda: outage_for(3), 30, 0.1, out.read_text)
    before = len(renders(out))
    front.set_mode("forward")
    wait_for_render(out, lambda r: len(renders(out)) > before, proc)

    running, queued = spec.runs[0].run_id, spec.runs[1].run_id
    record_status(store, "demo", running, {"state": "succeeded", "epoch": 2, "epochs": 2})
    record_status(store, "demo", queued, {"state": "cancelled", "reason": "cancelled while queued"})
    rc = proc.wait(30)
    _, err = proc.communicate()
    assert rc == 0, err
    assert "1 cancelled, 1 failed, 2 succeeded" in renders(out)[-1]
    assert not OUTAGE.search(renders(out)[-1]), "the outage line goes once the store answers"


def test_watch_gives_up_after_a_persistent_outage_or_at_its_timeout(study, s3_study, monkeypatch, capsys):
    """In this process, with the outage bound shortened: exit 3 once the store stays unreachable that
    long, exit 7 when --timeout comes first; each names the outage."""
    from jobs import submit as cli

    store, front, env = s3_study
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli, "WATCH_OUTAGE_LIMIT_S", 3.0)
    monkeypatch.setattr(cli.time, "sleep", _cut_after_first(front, cli.time.sleep))
    where = f"s3://{store.bucket}"
    t0 = time.monotonic()
    assert cli.main(["status", "demo", "--watch", "--interval", "0.3", "--store", where]) == 3
    took = time.monotonic() - t0
    printed = capsys.readouterr()
    assert OUTAGE.search(printed.out), printed.out
    assert re.search(r"unreachable for \d+ s, longer than the 3 s a watch waits", printed.err), printed.err
    assert 3 < took < 15, took

    front.set_mode("forward")
    monkeypatch.setattr(cli.time, "sleep", _cut_after_first(front, cli.time.sleep))
    monkeypatch.setattr(cli, "WATCH_OUTAGE_LIMIT_S", 300.0)
    watch_2s = ["status", "demo", "--watch", "--interval", "0.3", "--timeout", "2", "--store", where]
    assert cli.main(watch_2s) == 7
    printed = capsys.readouterr()
    assert "--timeout 2 s reached" in printed.err and "store unreachable since" in printed.err, printed.err


def _cut_after_first(front: TcpFront, sleep: Callable[[float], None]) -> Callable[[float], None]:
    """time.sleep that cuts the store off at the watch's first pause (after its first table)."""

    def cut_then_sleep(seconds: float) -> None:
        front.set_mode("drop")
        sleep(seconds)

    return cut_then_sleep
