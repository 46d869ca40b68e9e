"""The library's shape: short modules, no import cycles, no sys.path edits, documented packages.

Everything here reads files (and parses Python with `ast`); nothing is imported or run.
"""
from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("utils", "task2vec")
MAX_MODULE_LINES = 400
# sys.path changed in code: a method call on it, an assignment to it or to an item or slice of
# it, or an augmented assignment. Built from parts so that this file does not match itself.
_SYS_PATH = r"\bsys\s*\.\s*path\b"
SYS_PATH_EDIT = re.compile(_SYS_PATH + r"(\s*\.\s*(insert|append|extend|remove|pop|clear)\s*\("
                           r"|\s*\[[^\]]*\]\s*=(?!=)|\s*[+]?=(?!=))")
SKIPPED_DIRS = {".venv", ".git", "__pycache__", ".pytest_cache", "node_modules", "build", "dist"}


def _repo_files(*suffixes: str) -> list[Path]:
    """The repository's files with these suffixes, outside virtual environments and caches."""
    found = []
    for folder, subfolders, names in os.walk(REPO_ROOT):
        subfolders[:] = [name for name in subfolders if name not in SKIPPED_DIRS and not name.endswith(".egg-info")]
        found += [Path(folder) / name for name in names if Path(name).suffix in suffixes]
    return sorted(found)


def _library_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages (a package is its __init__)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _top_level_scripts() -> list[Path]:
    return sorted(REPO_ROOT.glob("*.py"))


# ----------------------------------------------------------------------------- (a) module length

def test_no_module_is_longer_than_the_limit():
    files = [*_library_modules().values(), *_top_level_scripts()]
    assert len(files) > 20, "the library modules were not found"
    lengths = {str(path.relative_to(REPO_ROOT)): len(path.read_text(encoding="utf-8").splitlines())
               for path in files}
    too_long = {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES}
    assert not too_long, (f"modules over {MAX_MODULE_LINES} lines (split them by concept): "
                          f"{dict(sorted(too_long.items(), key=lambda item: -item[1]))}")


# ----------------------------------------------------------------------------- (b) import cycles

def _is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` / `if typing.TYPE_CHECKING:`: imports that never run."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Import statements run when the module is imported: at module level, also inside if / try /
    with / loops and class bodies, but not inside functions or `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                found += _import_time_imports(node.body)
            found += _import_time_imports(node.orelse)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                found += _import_time_imports(block)
        elif isinstance(node, (ast.With, ast.For, ast.While, ast.ClassDef)):
            found += _import_time_imports(node.body)
            found += _import_time_imports(getattr(node, "orelse", []))
    return found


def _resolve(module: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The project modules an import statement of `module` loads (`from p import m` with p.m a
    module counts as importing p.m)."""
    targets = set()
    if isinstance(node, ast.Import):
        targets = {alias.name for alias in node.names}
    else:
        if node.level:
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            base = package[:len(package) - (node.level - 1)]
            source = ".".join([*base, node.module] if node.module else base)
        else:
            source = node.module or ""
        targets.add(source)
        targets |= {f"{source}.{alias.name}" for alias in node.names}
    return {target for target in targets if target in known and target != module}


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports at import time."""
    modules = _library_modules()
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = set().union(*(_resolve(name, path, node, known)
                                    for node in _import_time_imports(tree.body)))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None when the graph is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_find_cycle_reports_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_sees_module_level_imports_only(tmp_path):
    source = ("from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
              "import utils.run.errors\nfrom utils.data import registry\n"
              "if TYPE_CHECKING:\n    from utils.data.loading import TaskData\n"
              "try:\n    from task2vec.io import load_task_embedding\nexcept ImportError:\n    pass\n"
              "def f():\n    from utils.training import loop\n")
    path = tmp_path / "probe.py"
    path.write_text(source)
    known = {"utils.run.errors", "utils.data", "utils.data.registry", "utils.data.loading", "task2vec.io",
             "utils.training.loop", "utils.training"}
    found = set().union(*(_resolve("utils.probe", path, node, known)
                          for node in _import_time_imports(ast.parse(source).body)))
    assert found == {"utils.run.errors", "utils.data", "utils.data.registry", "task2vec.io"}


def test_library_has_no_import_cycles():
    graph = import_graph()
    assert "utils.data.loading" in graph and "task2vec.fisher" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle among the library modules: " + " -> ".join(cycle)


# ----------------------------------------------------------------------------- (c) sys.path

def _code_of(path: Path) -> str:
    """A file's code: a notebook's code cells, else the whole text."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".ipynb":
        return text
    cells = json.loads(text).get("cells", [])
    return "\n".join("".join(cell.get("source", [])) for cell in cells if cell.get("cell_type") == "code")


def test_the_pattern_catches_sys_path_edits():
    sp = "sys" + ".path"  # spelled in parts so that the scan of the repository does not find these examples
    edits = [f"{sp}.insert(0, ROOT)", f"{sp}.append('..')", f"{sp} = ['x']", f"{sp}[:0] = [p]", f"{sp} += [p]",
             sp.replace(".", " . ") + " . extend(paths)"]
    fine = [f"print({sp})", f"if p in {sp}:", f"paths == {sp}", f"# without {sp} edits"]
    assert all(SYS_PATH_EDIT.search(line) for line in edits)
    assert not any(SYS_PATH_EDIT.search(line) for line in fine)


def test_nothing_edits_sys_path():
    files = _repo_files(".py", ".ipynb", ".sh")
    assert any(path.name == "ComputeTaskEmbedding.ipynb" for path in files)
    offenders = [f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
                 for path in files for number, line in enumerate(_code_of(path).splitlines(), start=1)
                 if SYS_PATH_EDIT.search(line)]
    assert not offenders, ("sys.path is changed (the project is installed; import it as a package): "
                           + "; ".join(offenders))


# ----------------------------------------------------------------------------- (d) packages

def _packages_under(root: Path) -> list[Path]:
    """Folders under `root` (and itself) that hold Python modules."""
    return sorted({path.parent for path in root.rglob("*.py") if "__pycache__" not in path.parts})


@pytest.mark.parametrize("package", ["utils", "task2vec"])
def test_every_package_has_a_documented_init(package):
    folders = _packages_under(REPO_ROOT / package)
    assert folders
    undocumented = []
    for folder in folders:
        init = folder / "__init__.py"
        if not init.is_file() or not ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))):
            undocumented.append(str(folder.relative_to(REPO_ROOT)))
    assert not undocumented, f"packages without an __init__.py that has a docstring: {undocumented}"
