"""The library's shape (docs/architecture.md): imports run down the layers (import-linter's contracts in
pyproject.toml), no module-level import cycle, one optimizer step, no sys.path edits, documented packages."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("utils", "task2vec")
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


# ----------------------------------------------------------------------------- layers and cycles

def test_import_linter_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache", "--config", str(REPO_ROOT / "pyproject.toml")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout, result.stdout


def test_no_module_is_in_an_import_cycle():
    # grimp (import-linter's graph) records every import statement, function-level ones too.
    graph = grimp.build_graph(*PACKAGES)
    cycles = sorted(f"{importer} -> {imported} -> ... -> {importer}"
                    for importer in graph.modules for imported in graph.find_modules_directly_imported_by(importer)
                    if imported != importer and graph.chain_exists(importer=imported, imported=importer))
    assert not cycles, cycles


def test_gradient_clipping_lives_in_one_module():
    clipping = sorted(str(path.relative_to(REPO_ROOT)) for package in PACKAGES
                      for path in (REPO_ROOT / package).rglob("*.py") if "clip_grad_norm_" in path.read_text())
    assert clipping == ["utils/training/optim.py"], clipping


# ----------------------------------------------------------------------------- sys.path

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


# ----------------------------------------------------------------------------- packages

@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_has_a_documented_init_without_re_exports(package):
    folders = sorted({path.parent for path in (REPO_ROOT / package).rglob("*.py") if "__pycache__" not in path.parts})
    assert folders
    problems = []
    for folder in folders:
        init = folder / "__init__.py"
        tree = ast.parse(init.read_text(encoding="utf-8")) if init.is_file() else None
        if tree is None or not ast.get_docstring(tree):
            problems.append(f"{folder.relative_to(REPO_ROOT)}: no __init__.py docstring")
        elif any(isinstance(node, (ast.Import, ast.ImportFrom)) for node in tree.body):
            problems.append(f"{folder.relative_to(REPO_ROOT)}: __init__.py imports (a reader of any module "
                            "would have to open them)")
    assert not problems, problems
