"""The import rules of the package layout, checked on the source and in fresh interpreters.

* no import cycle between the project's modules (imports inside functions count too);
* nothing under ``kernels/`` (installed as ``satloss_gpu.kernels``) imports the rest of
  ``satloss_gpu``: kernels are leaves;
* the library (``persistence``, ``matching``, ``losses``, ``metrics``) imports nothing from the
  training application (``satloss_gpu.training``);
* ``import satloss_gpu`` loads none of matplotlib, tqdm and imageio, and importing the losses
  loads none of them beyond what ``import torch`` loads itself.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAINING_ONLY = ("matplotlib", "tqdm", "imageio")
LIBRARY = ("satloss_gpu.persistence", "satloss_gpu.matching", "satloss_gpu.losses",
           "satloss_gpu.metrics")


def _module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for the package and its kernels."""
    modules = {}
    for root, prefix in ((REPO / "satloss_gpu", "satloss_gpu"), (REPO / "kernels", "satloss_gpu.kernels")):
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([prefix, *parts])] = path
    return modules


MODULES = _module_files()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> set[str]:
    """Project modules imported anywhere in module ``name`` (module level or inside functions)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if _is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_source_tree_is_found():
    assert "satloss_gpu.persistence" in MODULES and "satloss_gpu.kernels.cpu.matching_sap" in MODULES
    assert GRAPH["satloss_gpu.matching._cpu"] >= {"satloss_gpu.kernels.cpu.matching_sap"}


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_kernels_import_nothing_of_the_package():
    offending = {
        name: sorted(t for t in targets if not t.startswith("satloss_gpu.kernels"))
        for name, targets in GRAPH.items() if name.startswith("satloss_gpu.kernels")
    }
    assert {name: t for name, t in offending.items() if t} == {}


def test_kernels_never_name_the_package():
    """A kernel reaches its siblings by relative imports only (the folder is installed under a prefix)."""
    for path in (REPO / "kernels").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and not node.level:
                assert not (node.module or "").startswith("satloss_gpu"), path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("satloss_gpu") for a in node.names), path


@pytest.mark.parametrize("library", LIBRARY)
def test_library_imports_nothing_from_training(library):
    members = [n for n in GRAPH if n == library or n.startswith(library + ".")]
    assert members
    reached = {t for n in members for t in GRAPH[n] if t.startswith("satloss_gpu.training")}
    assert reached == set()


def _loaded_after(statement: str) -> list[str]:
    """Top-level names among TRAINING_ONLY loaded by ``statement`` in a fresh interpreter."""
    code = (f"import sys, json; {statement}; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(TRAINING_ONLY)!r})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_satloss_gpu_loads_no_training_dependency():
    assert _loaded_after("import satloss_gpu") == []


def test_import_losses_loads_nothing_beyond_torch():
    assert set(_loaded_after("import satloss_gpu.losses, satloss_gpu.metrics")) <= set(
        _loaded_after("import torch"))


def test_the_loaded_module_check_sees_a_training_import():
    assert "matplotlib" in _loaded_after("import satloss_gpu.training.plotting as p; p._plt()")
