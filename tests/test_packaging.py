"""The wheel that `pip install .` builds: the lipsync package with its data and the licence notes, and the
`lipsync` command; no tests, benchmarks, notebooks, examples or app.

The wheel is built as pip builds it for a user (`pip wheel .`), from a copy of the project's files (what git
tracks, plus new files it does not ignore) in a temporary folder, so a build never writes into the checkout
and stray local files (weights, caches) cannot leak into it. Offline: no index, the environment's setuptools.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LICENCE_PATTERNS = ("LICEN[CS]E*", "COPYING*", "NOTICE*")  # what setuptools puts in a wheel's dist-info
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


def project_files() -> list[str]:
    """The files a fresh clone of this checkout (with its uncommitted new files) would hold."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return sorted(name for name in listed if name and (ROOT / name).is_file())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know the project's files")
    version = tuple(int(p) for p in importlib.metadata.version("setuptools").split(".")[:2])
    if version < (70, 1):
        pytest.fail(f"Building the wheel offline needs setuptools 70.1 or later here (this environment has "
                    f"{'.'.join(map(str, version))}): pip install -r requirements-dev.txt")
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in project_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    built = subprocess.run([*PIP, "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out)],
                           cwd=src, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    wheels = list(out.glob("lipsync_studio-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def wheel_names(wheel: Path) -> tuple[set[str], dict[str, str]]:
    """(files of the package, {dist-info name: text}) of a wheel."""
    with zipfile.ZipFile(wheel) as z:
        meta = {n.split("/", 1)[1]: z.read(n).decode("utf-8", "replace") for n in z.namelist()
                if n.split("/", 1)[0].endswith(".dist-info")}
        return {n for n in z.namelist() if not n.split("/", 1)[0].endswith(".dist-info")}, meta


def test_wheel_holds_the_package_and_all_its_files_only(wheel):
    files, _ = wheel_names(wheel)
    expected = {name for name in project_files() if name.startswith("lipsync/")}
    assert not {n for n in files if n.split("/")[0] in ("tests", "bench", "notebooks", "examples", "scripts",
                                                        "weights", "docs")} | ({"app.py"} & files)
    assert files == expected, (f"missing from the wheel (add them as package data in pyproject.toml): "
                               f"{sorted(expected - files)}; not in the package: {sorted(files - expected)}")


def test_wheel_carries_the_licence_notes_and_the_command(wheel):
    _, meta = wheel_names(wheel)
    notes = [name for name in os.listdir(ROOT) if any(fnmatch.fnmatch(name, p) for p in LICENCE_PATTERNS)]
    assert "NOTICE" in notes
    for name in notes:  # setuptools >= 77 files them under licenses/, older ones beside METADATA
        shipped = meta.get(f"licenses/{name}", meta.get(name))
        assert shipped == (ROOT / name).read_text(), f"{name} is not in the wheel's dist-info"
    assert "Name: lipsync-studio" in meta["METADATA"]
    assert "lipsync = lipsync.cli:console_main" in meta["entry_points.txt"]



def test_wheel_depends_on_the_cpu_set_with_a_gpu_extra(wheel):
    """`pip install .` installs requirements-cpu.txt; `pip install ".[gpu]"` adds requirements-gpu.txt."""
    from packaging.requirements import Requirement
    from test_requirements import requirements

    _, meta = wheel_names(wheel)
    plain, gpu = set(), set()
    for line in meta["METADATA"].splitlines():
        if line.startswith("Requires-Dist: "):
            requirement = Requirement(line.removeprefix("Requires-Dist: "))
            marker, requirement.marker = requirement.marker, None
            (plain if marker is None else gpu).add(str(requirement))
            assert marker is None or str(marker) == 'extra == "gpu"', line
    assert plain == {str(r) for r in requirements("requirements-cpu.txt").values()}
    assert gpu == {str(r) for r in requirements("requirements-gpu.txt").values()}

@pytest.mark.slow  # installs the wheel and runs two child processes
def test_lipsync_command_runs_from_the_installed_wheel(wheel, tmp_path):
    """Installed with --no-deps into a folder of its own (its dependencies are this environment's), run from
    elsewhere so the checkout's package cannot be the one imported."""
    target = tmp_path / "site"
    installed = subprocess.run([*PIP, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    env.pop("LIPSYNC_WEIGHTS_DIR", None)
    command = target / "bin" / "lipsync"
    helped = subprocess.run([str(command), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert helped.returncode == 0, helped.stderr
    assert "--face" in helped.stdout and "--pads" in helped.stdout
    where = subprocess.run([sys.executable, "-c", "import lipsync, lipsync.weights.locate as w; "
                                                  "print(lipsync.__file__); print(w.WEIGHTS_DIR)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    package_file, weights_dir = where.stdout.split("\n")[:2]
    assert Path(package_file).is_relative_to(target)
    assert not Path(weights_dir).is_relative_to(target), "an installed package must not download into site-packages"
