"""services.settings: every environment variable in one place, README's table true to it, nothing read
around it, and passwords never shown (colormamba.env.redact_url)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from colormamba.env import LIBRARY_VARIABLES, EnvVar, redact_text, redact_url
from services.settings import VARIABLES, Settings
from tests.containers.helpers import env_reads, env_reads_in_source

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| `(?P<name>[A-Z0-9_]+)` \| (?P<default>[^|]*?) \| (?P<meaning>.*) \|$")


def readme_environment() -> dict[str, str]:
    """The rows of README's table of `submit.py`'s and the workers' environment (header
    `| variable | default | meaning |`): variable -> default as written."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("| variable | default | meaning |")
    rows: dict[str, str] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        match = ROW.match(line)
        assert match, f"README environment table: not `| \\`NAME\\` | default | meaning |`: {line!r}"
        assert match["name"] not in rows, f"README lists {match['name']} twice"
        rows[match["name"]] = match["default"]
    return rows


def written(default: str) -> str:
    return f"`{default}`" if default else "(unset)"


def test_readme_table_lists_every_variable_with_its_default_and_nothing_else() -> None:
    table = readme_environment()
    declared = {v.name: written(v.default) for v in VARIABLES}
    assert sorted(set(declared) - set(table)) == [], "in services/settings.py, missing from README"
    assert sorted(set(table) - set(declared)) == [], "in README, not in services/settings.py"
    assert {k: table[k] for k in declared} == declared, "README's defaults differ from the settings'"


def test_variables_are_declared_once_with_a_meaning() -> None:
    names = [v.name for v in VARIABLES]
    assert len(names) == len(set(names))
    assert set(LIBRARY_VARIABLES) <= set(VARIABLES), "the library's variables are listed with the suite's"
    for var in VARIABLES:
        assert var.name.startswith("COLORMAMBA_") or var.name == "TRITON_INTERPRET", var.name
        assert len(var.meaning) > 10, var.name


def test_nothing_reads_a_variable_around_the_settings() -> None:
    """No `os.environ.get("COLORMAMBA_...")` anywhere in the suite, the library or the CLI: every read
    goes through a declared EnvVar, so its default lives in one place."""
    direct = env_reads("services", "colormamba", "jobs")
    assert sorted(direct) == [], f"read directly (declare it in services/settings.py): {direct}"
    # the scan would see one: the check is not blind
    assert env_reads_in_source('import os\nx = os.environ.get("COLORMAMBA_LEASE_TTL", "30")\n') == {
        "COLORMAMBA_LEASE_TTL"
    }


def test_settings_come_from_the_environment_with_the_declared_defaults() -> None:
    defaults = Settings.from_env({})
    assert defaults.redis_url == "redis://localhost:6379/0" and defaults.run_queue == "gpu"
    assert (defaults.lease_ttl_s, defaults.reap_interval_s, defaults.status_interval_s) == (30, 10, 5)
    assert defaults.runs_per_gpu == 1 and defaults.visibility_timeout_s == 6 * 3600
    assert defaults.heartbeat_file is None and defaults.store == ""
    assert defaults.data_cache == Path("~/.cache/colormamba/datasets").expanduser()
    env = {"COLORMAMBA_LEASE_TTL": "6", "COLORMAMBA_RUNS_PER_GPU": "2", "COLORMAMBA_RUN_QUEUE": "",
           "COLORMAMBA_HEARTBEAT_FILE": "/run/hb", "COLORMAMBA_S3_BUCKET": "b"}  # fmt: skip
    got = Settings.from_env(env)
    assert (got.lease_ttl_s, got.runs_per_gpu, got.heartbeat_file, got.s3_bucket) == (6.0, 2, "/run/hb", "b")
    assert got.run_queue == "gpu", "an empty value is the default (compose writes NAME: \"\")"
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.lease_ttl_s = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value"),
    [("COLORMAMBA_LEASE_TTL", "soon"), ("COLORMAMBA_REAP_INTERVAL", "0"),
     ("COLORMAMBA_STATUS_INTERVAL", "-5"), ("COLORMAMBA_VISIBILITY_TIMEOUT", "6h"),
     ("COLORMAMBA_RUNS_PER_GPU", "two")],
)  # fmt: skip
def test_a_value_that_does_not_parse_is_refused_with_its_name(name: str, value: str) -> None:
    with pytest.raises(ValueError) as info:
        Settings.from_env({name: value})
    assert name in str(info.value) and repr(value) in str(info.value)


def test_fallback_spellings_are_read_only_when_the_primary_is_unset() -> None:
    var = EnvVar("COLORMAMBA_S3_ACCESS_KEY", "", "key", fallback="AWS_ACCESS_KEY_ID")
    assert var.read({"AWS_ACCESS_KEY_ID": "aws"}) == "aws"
    assert var.read({"AWS_ACCESS_KEY_ID": "aws", "COLORMAMBA_S3_ACCESS_KEY": "own"}) == "own"
    assert var.read({}) == ""


def test_passwords_are_redacted_from_urls_and_messages() -> None:
    assert redact_url("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact_url("redis://user:s3cret@redis:6379/0") == "redis://user:***@redis:6379/0"
    assert redact_url("http://minio:9000") == "http://minio:9000"
    assert redact_url("redis://redis:6379/0") == "redis://redis:6379/0"
    message = "Error connecting to redis://:pa55@10.0.0.1:6379/0 and http://key:sec@minio:9000/x"
    assert redact_text(message) == "Error connecting to redis://:***@10.0.0.1:6379/0 and http://key:***@minio:9000/x"
    shown = repr(Settings.from_env({"COLORMAMBA_REDIS_URL": "redis://:pa55@host:6379/0"}))
    assert "pa55" not in shown and "redis://:***@host:6379/0" in shown


def test_the_broker_error_does_not_show_the_password() -> None:
    from services.coord import BrokerUnreachable, connect
    from tests.support.servers import free_port

    with pytest.raises(BrokerUnreachable) as info:
        connect(f"redis://:pa55word@127.0.0.1:{free_port()}/0")  # nothing listens there
    assert "pa55word" not in str(info.value) and ":***@127.0.0.1" in str(info.value)
