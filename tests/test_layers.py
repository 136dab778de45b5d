"""The import graph of `colormamba` and `services` has no cycles, and the Celery app never imports the
tasks (the reaper sends tasks by name; docs/system.md).

Every import counts, wherever it is written: at module level, inside a function (deferred, but a
dependency all the same), under `if TYPE_CHECKING:`, and `importlib.import_module("...")` with a literal
name. An import names the most specific module it loads: `from pkg import sub` depends on `pkg.sub` when
that is a module, else on `pkg` (a name from its `__init__`); the parent packages that Python runs on the
way are not counted, so a package's `__init__` may re-export its submodules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

from tests.support.servers import REPO

PACKAGES = ("colormamba", "services")


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under each package folder of `root`."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_modules(path: Path, module: str, modules: set[str]) -> set[str]:
    """The modules among `modules` that the imports of `path` (the file of `module`) load."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from . import x` in a package's module, `from ..y import z`
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:  # a submodule if there is one of that name, else a name of `base`
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
        elif _is_import_module_call(node):
            found.add(node.args[0].value)
    return found & modules


def _is_import_module_call(node: ast.AST) -> bool:
    """`importlib.import_module("literal.name")`."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "import_module"
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def import_graph(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules of `packages` it imports (see the module docstring for what counts)."""
    files = module_files(root, packages)
    return {module: imported_modules(path, module, set(files)) for module, path in files.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of `graph`: each strongly connected component of more than one module, and
    each module that imports itself, sorted (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def describe(cycles: list[list[str]], graph: dict[str, set[str]]) -> str:
    """Each cycle with the imports that close it, one module a line."""
    lines = []
    for cycle in cycles:
        lines.append("cycle: " + ", ".join(cycle))
        lines += [f"  {m} imports {', '.join(sorted(graph[m] & set(cycle)))}" for m in cycle]
    return "\n".join(lines)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_colormamba_and_services_have_no_import_cycles() -> None:
    graph = import_graph(REPO)
    assert {"colormamba.train", "services.tasks", "services.report.collect"} <= graph.keys()
    cycles = find_cycles(graph)
    assert not cycles, describe(cycles, graph)


def test_the_celery_app_never_imports_the_tasks() -> None:
    """The worker's main process imports services.app (the reaper, the signals) and must not load the
    tasks' dependencies (torch); the reaper sends `services.tasks.run` by name."""
    graph = import_graph(REPO)
    assert "services.tasks" not in reachable(graph, "services.app"), sorted(reachable(graph, "services.app"))


def test_no_module_imports_a_test_module_or_a_conftest() -> None:
    """Shared helpers live in tests/support and shared fixtures in tests/conftest.py: a test module that
    imports another runs that module's tests twice over and hides where a helper belongs."""
    graph = import_graph(REPO, ["tests", "benchmarks"])
    assert "tests.support.servers" in graph["tests.conftest"]
    tests = {m for m in graph if m.rpartition(".")[2].startswith("test_") or m.endswith("conftest")}
    wrong = sorted(f"{m} imports {t}" for m, imported in graph.items() for t in imported & tests)
    assert not wrong, "\n".join(wrong)


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_cycle_finder_names_each_cycle_and_nothing_else(tmp_path: Path) -> None:
    """A synthetic package with a cycle through a function-level import, one through a relative import
    and a TYPE_CHECKING block, a self-import, and acyclic imports of every form that must not count."""
    write_package(tmp_path, {
        "pkg/__init__.py": "from pkg.leaf import VALUE\nfrom pkg import sub\n",
        "pkg/leaf.py": "VALUE = 1\n",
        "pkg/a.py": "import pkg.b\n",
        "pkg/b.py": "def f():\n    from pkg.a import g\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import X\n",
        "pkg/d.py": "import importlib\nmod = importlib.import_module('pkg.c')\n",
        "pkg/selfish.py": "import pkg.selfish\n",
        "pkg/sub/__init__.py": "from .inner import thing\n",
        "pkg/sub/inner.py": "from pkg import leaf\nfrom pkg.sub import other\nfrom .. import VALUE\n",
        "pkg/sub/other.py": "import os\nimport pkg.leaf\n",
    })  # fmt: skip
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.sub.inner"] == {"pkg.leaf", "pkg.sub.other", "pkg"}
    assert graph["pkg"] == {"pkg.leaf", "pkg.sub"}
    assert graph["pkg.c"] == {"pkg.d"} and graph["pkg.d"] == {"pkg.c"}
    assert find_cycles(graph) == [
        ["pkg", "pkg.sub", "pkg.sub.inner"],  # `from .. import VALUE` runs pkg/__init__, which imports sub
        ["pkg.a", "pkg.b"],
        ["pkg.c", "pkg.d"],
        ["pkg.selfish"],
    ]
    described = describe(find_cycles(graph), graph)
    assert "cycle: pkg.a, pkg.b\n  pkg.a imports pkg.b\n  pkg.b imports pkg.a" in described


def test_a_package_without_cycles_has_none(tmp_path: Path) -> None:
    write_package(tmp_path, {
        "pkg/__init__.py": "from pkg.a import f\n",
        "pkg/a.py": "from pkg import b\nfrom pkg.b import g\n\ndef f():\n    import pkg.c\n",
        "pkg/b.py": "import json\n\ndef g():\n    return json\n",
        "pkg/c.py": "from . import b\n",
    })  # fmt: skip
    graph = import_graph(tmp_path, ["pkg"])
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b", "pkg.c"}, "pkg.b": set(), "pkg.c": {"pkg.b"}}
    assert find_cycles(graph) == []
    assert reachable(graph, "pkg") == {"pkg.a", "pkg.b", "pkg.c"}
