"""The shape of the house (docs/architecture.md draws it): which package may import which, nothing imports upward,
the web app speaks only to the package's public API, and the environment is read in one place."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lipsync"

# The layers, from the top: a module may import its own layer's and lower layers' modules, never a higher one.
FRONT_ENDS = {"cli", "batch", "__main__"}  # what people run; they call the engine
ENGINE = {"engine"}  # a loaded model and the jobs it runs
WIRING = {"pipeline"}  # the stages of one job, wired together
STAGES = {"media", "faces", "generator", "blend", "restore", "live", "scoring"}
BASE = {"options", "environment", "errors", "results", "geometry", "weights", "runtime", "storage", "assets"}
LAYERS = [FRONT_ENDS, ENGINE, WIRING, STAGES, BASE]
TOP_LEVEL_LIMIT = 10  # modules at lipsync/'s top (the rest in folders by concept); __init__ and __main__ included


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


def _layer(module: str) -> int:
    top = module.split(".")[0]
    found = [i for i, layer in enumerate(LAYERS) if top in layer]
    assert found, f"lipsync.{module} is in no layer of tests/test_layout.py (and of docs/architecture.md)"
    return found[0]


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


def test_nothing_imports_upward():
    """Front ends (cli, batch) -> engine -> pipeline -> stages -> base; a stage may use another stage."""
    for module, imports in _graph().items():
        for imported in imports:
            assert _layer(imported) >= _layer(module), f"lipsync.{module} imports lipsync.{imported}, a layer above it"


def test_the_top_level_stays_small_and_folders_hold_concepts():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= TOP_LEVEL_LIMIT, top
    prefixed = [p for p in top if re.match(r"(batch|face|live|media|restore|score)_", p)]
    assert not prefixed, f"a name prefix where a folder belongs: {prefixed}"
    for folder in (p for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")):
        assert (folder / "__init__.py").is_file(), f"{folder.name}/ is not a package"
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
        assert doc.strip(), f"lipsync/{folder.name}/__init__.py says nothing of what the folder holds"


WEBAPP_ALLOWED = {"lipsync", "lipsync.environment"}  # the public API and its variable declarations


@pytest.mark.parametrize("path", sorted([ROOT / "app.py", *(ROOT / "webapp").rglob("*.py")]), ids=lambda p: p.name)
def test_the_web_app_uses_only_the_public_api(path):
    import lipsync

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lipsync"):
            assert node.module in WEBAPP_ALLOWED, f"{path.name} imports from {node.module}"
            if node.module == "lipsync":
                assert all(alias.name in lipsync.__all__ for alias in node.names), path.name
        if isinstance(node, ast.Import):
            assert all(a.name == "lipsync" for a in node.names if a.name.startswith("lipsync")), path.name


def test_the_public_api_is_visible_to_type_checkers():
    """Every name `lipsync.__getattr__` gives is also imported under TYPE_CHECKING, from the same module."""
    import lipsync

    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    checked = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for item in node.body:
                checked.update({alias.name: item.module for alias in item.names})
    assert checked == dict(lipsync._WHERE)


READS = re.compile(r"os\.environ\.get\(|os\.getenv\(|os\.environ\[[^\]]+\](?!\s*=)|\benviron\.get\(")


def test_the_environment_is_read_in_one_place():
    """Each variable is declared once (lipsync/environment.py, webapp/config.py) and read through it: nowhere else
    reads os.environ (writing it, for a child process or a library read at import, is allowed)."""
    readers = {PACKAGE / "environment.py"}
    for path in [ROOT / "app.py", *PACKAGE.rglob("*.py"), *(ROOT / "webapp").rglob("*.py")]:
        if path in readers:
            continue
        found = [line.strip() for line in path.read_text().splitlines() if READS.search(line)]
        assert not found, f"{path.relative_to(ROOT)} reads the environment itself: {found}"


def test_the_docs_list_every_environment_variable_as_declared():
    import lipsync.environment as environment
    import webapp.config  # noqa: F401  (declares the web app's variables)

    page = (ROOT / "docs" / "limits-and-errors.md").read_text()
    assert environment.describe() in page, "docs/limits-and-errors.md's table differs from the declarations"


def test_the_readme_stays_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which is not there"


@pytest.mark.parametrize("path", sorted((ROOT / "bench").glob("*.py")), ids=lambda p: p.name)
def test_a_benchmark_imports_lipsync_before_anything_that_may_load_torch(path):
    """lipsync sets OMP_WAIT_POLICY, which torch reads once when it loads: a benchmark that imported torch (or
    cv2, numpy or the test helpers, which import torch) first would time a different CPU. The first import
    beyond the standard library is lipsync, or fit_box_map, which imports it first."""
    import sys

    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            tops = {n.split(".")[0] for n in names} - {"__future__"} - set(sys.stdlib_module_names)
            if tops:
                assert tops <= {"lipsync", "fit_box_map"}, f"{path.name} imports {sorted(tops)} before lipsync"
                return
