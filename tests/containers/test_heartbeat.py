"""The heartbeat file behind the workers' healthcheck (services.coord.start_reaper): fresh while the
reaper reaches Redis, left to go stale when it cannot. The healthcheck command itself is run too."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import redis

from services.coord import start_reaper
from tests.containers.helpers import config
from tests.support.polling import wait_until


class FakeRedis:
    """Just what the reaper's election round calls; `down` makes every call fail like a lost broker."""

    def __init__(self) -> None:
        self.down = False
        self.rounds = 0

    def set(self, *_args, **_kwargs) -> bool:
        self.rounds += 1
        if self.down:
            raise redis.ConnectionError("connection refused")
        return False  # another worker holds the election: nothing to reap

    def smembers(self, _key: str) -> set[bytes]:
        return set()


def test_heartbeat_is_written_at_start_and_refreshed_while_redis_answers(tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"
    client = FakeRedis()
    stop = start_reaper(client, lambda study, run: None, interval=0.02, heartbeat=str(beat))
    try:
        assert beat.exists(), "written before the first round"
        os.utime(beat, (0, 0))  # pretend it is old
        wait_until("the heartbeat refreshed", lambda: beat.stat().st_mtime > 0, 5.0, 0.01)
        client.down = True
        down_at = client.rounds
        # the round under way when it went down is over
        wait_until("two rounds with Redis down", lambda: client.rounds > down_at + 2, 5.0, 0.01)
        os.utime(beat, (0, 0))
        rounds = client.rounds
        wait_until("three more rounds", lambda: client.rounds > rounds + 3, 5.0, 0.01)
        assert beat.stat().st_mtime == 0, "refreshed although Redis did not answer"
    finally:
        stop.set()


def test_no_heartbeat_file_unless_asked(tmp_path: Path) -> None:
    stop = start_reaper(FakeRedis(), lambda study, run: None, interval=0.02)
    stop.set()
    assert list(tmp_path.iterdir()) == []


def test_compose_healthcheck_command_tells_fresh_from_stale(tmp_path: Path) -> None:
    """The healthcheck's shell command as compose resolves it, run here against a fresh and a stale file."""
    check = config()["services"]["gpu0"]["healthcheck"]["test"]
    assert check[0] == "CMD-SHELL"
    command = check[1].replace("$$", "$")  # `config` output escapes a literal dollar as $$
    beat = tmp_path / "heartbeat"

    def healthy() -> bool:
        env = {"PATH": os.environ["PATH"], "COLORMAMBA_HEARTBEAT_FILE": str(beat)}
        return subprocess.run(["sh", "-c", command], env=env, capture_output=True).returncode == 0

    assert not healthy(), "no file yet"
    beat.touch()
    assert healthy()
    old = time.time() - 180
    os.utime(beat, (old, old))
    assert not healthy(), "three minutes without a heartbeat"
