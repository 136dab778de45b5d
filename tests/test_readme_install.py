"""README's install commands agree with what CI installs and what the CPU image uses: the quick start's
default takes torch from PyTorch's CPU-only index (no CUDA libraries on a CPU machine), the PyPI path
(what `.ci/run` runs) stays documented beside it, and both install the torch pair of requirements-cpu.txt."""

from __future__ import annotations

import re

from tests.containers.test_dockerfiles import CPU, ROOT, args, pins

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
