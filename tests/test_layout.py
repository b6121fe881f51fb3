"""The shape of the house: stages never reach back up, the app speaks only to the package's API."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lipsync"


def _module_name(path: Path) -> str:
    """'engine' for lipsync/engine.py, 'generator.runner' for lipsync/generator/runner.py, 'generator' for its
    __init__.py."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _lipsync_imports(path: Path) -> set[str]:
    """Modules of the package imported anywhere in `path` (top level or inside functions), as _module_name names."""
    name = _module_name(path).split(".")
    package = name if path.name == "__init__.py" else name[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                found.add(".".join(base + node.module.split(".")))
            else:
                found.update(".".join(base + [alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lipsync."):
            found.add(node.module.split(".", 1)[1])
    return found


def _graph() -> dict[str, set[str]]:
    """Every module of the package (the top-level __init__, which imports names on first use, aside)."""
    modules = [p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"]
    return {_module_name(p): _lipsync_imports(p) - {_module_name(p)} for p in modules}


def test_no_module_imports_one_that_imports_it_back():
    graph = _graph()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, "import cycle: " + " -> ".join(path + [module])
        if module in done:
            return
        for dependency in sorted(graph.get(module, ())):
            visit(dependency, path + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_stages_do_not_import_the_front_ends():
    graph = _graph()
    # what users call (the batch in its batch_* modules); the stages below never reach up to them
    front = {"engine", "__main__"} | {m for m in graph if m == "batch" or m.startswith("batch_")}
    for module, imports in graph.items():
        if module not in front:
            assert not imports & front, f"lipsync.{module} imports {imports & front}"


@pytest.mark.parametrize("module", ["app.py", "app_live.py", "app_stream.py"])
def test_app_uses_only_the_public_api(module):
    tree = ast.parse((ROOT / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lipsync"):
            assert node.module == "lipsync", f"{module} imports from {node.module}"
        if isinstance(node, ast.Import):
            assert all(not a.name.startswith("lipsync.") for a in node.names)
    import lipsync

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "lipsync":
            assert all(alias.name in lipsync.__all__ for alias in node.names)
