"""COLORMAMBA_RUNS_PER_GPU (services.settings), the runs one GPU worker trains at once (its concurrency)."""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import quote

import pytest

from services.settings import parse_runs_per_gpu
from tests.support.servers import REPO


@pytest.mark.parametrize(("value", "runs"), [(None, 1), ("", 1), ("1", 1), ("2", 2), (" 4 ", 4), ("16", 16)])
def test_runs_per_gpu_accepts_integers_from_one(value: str | None, runs: int) -> None:
    assert parse_runs_per_gpu(value) == runs


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", "two", "2 runs"])
def test_runs_per_gpu_refuses_anything_else_naming_the_variable(value: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_runs_per_gpu(value)
    assert str(info.value) == f"COLORMAMBA_RUNS_PER_GPU must be an integer >= 1, got {value!r}"


def app_concurrency(runs_per_gpu: str | None) -> subprocess.CompletedProcess:
    """The Celery app's worker_concurrency in a fresh process with that environment."""
    env = {k: v for k, v in os.environ.items() if k != "COLORMAMBA_RUNS_PER_GPU"}
    if runs_per_gpu is not None:
        env["COLORMAMBA_RUNS_PER_GPU"] = runs_per_gpu
    code = "from services.app import app; print(app.conf.worker_concurrency)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=60)  # fmt: skip


def test_the_worker_takes_its_concurrency_from_the_variable() -> None:
    assert app_concurrency(None).stdout.strip() == "1"
    assert app_concurrency("3").stdout.strip() == "3"
    bad = app_concurrency("many")
    assert bad.returncode != 0
    assert "COLORMAMBA_RUNS_PER_GPU must be an integer >= 1, got 'many'" in bad.stderr


def test_the_app_imports_neither_the_tasks_nor_torch() -> None:
    """The worker's main process (start-up checks, reaper) sends runs by task name: importing the app
    (as submit.py and every worker do) must stay cheap and free of the training code."""
    code = "import sys, services.app; print([m for m in ('services.tasks', 'torch') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_no_setting_that_inspect_conf_or_flower_shows_carries_the_redis_password() -> None:
    """`celery inspect conf` and Flower's worker page show the app's settings censored by Celery, which masks
    the password of broker_url and result_backend only: no other setting may hold the URL."""
    password = "s3cr@t:pw-for-the-conf-test"
    url = f"redis://:{quote(password, safe='')}@localhost:6379/0"
    code = ("from services.app import app; c = app.conf; "
            "print(c.humanize(with_defaults=False, censored=True)); "
            "print(c.table(with_defaults=True))")  # fmt: skip
    env = {**os.environ, "COLORMAMBA_REDIS_URL": url}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "broker_url: 'redis://:********@localhost:6379/0'" in out.stdout, "the URL is there, masked"
    for secret in (password, quote(password, safe=""), "s3cr"):
        assert secret not in out.stdout, [line for line in out.stdout.splitlines() if secret in line]
