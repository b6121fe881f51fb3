"""The requirement files agree: requirements.txt (what Hugging Face Spaces installs) is exactly the CPU set and the
GPU set together, the CPU set is lean (no torch, mediapipe, librosa or scipy; one OpenCV wheel), every OpenCV wheel
is the same build, and every package that lipsync and the app import is installed by the CPU set, or is one of the
few optional ones whose import is guarded (tests/test_without_torch.py runs jobs with them blocked)."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# Imported by lipsync or the app, but not installed by requirements-cpu.txt: where each comes from, and why a CPU
# install never needs it (each import is inside a function, or guarded).
OPTIONAL = {
    "torch": "requirements-gpu.txt (lipsync.runtime.devices.torch_missing says so where it is needed)",
    "ray": "requirements-ray.txt (batch --ray says so)",
    "spaces": "Hugging Face Spaces' own package (app.py: try/except ImportError)",
}
LEAN_WITHOUT = {"torch", "mediapipe", "face-alignment", "librosa", "scipy", "jax", "opencv-python",
                "opencv-contrib-python"}


def lines(name: str) -> list[str]:
    return [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()
            if line.split("#")[0].strip()]


def requirements(name: str) -> dict[str, Requirement]:
    """{canonical name: requirement} of a requirements file, following its `-r` lines."""
    found: dict[str, Requirement] = {}
    for line in lines(name):
        if line.startswith("-r "):
            found.update(requirements(line.split(None, 1)[1]))
        else:
            requirement = Requirement(line)
            found[canonicalize_name(requirement.name)] = requirement
    return found


def test_requirements_txt_is_the_cpu_and_the_gpu_set_in_one_flat_file():
    cpu, gpu = requirements("requirements-cpu.txt"), requirements("requirements-gpu.txt")
    assert not set(cpu) & set(gpu), "a package in both sets could get two different specifiers"
    for name in ("requirements.txt", "requirements-cpu.txt", "requirements-gpu.txt"):
        assert not [line for line in lines(name) if line.startswith("-")], \
            f"{name} must stay flat (Spaces and setuptools' file directive take plain requirements only)"
    assert {k: str(v) for k, v in requirements("requirements.txt").items()} == \
           {k: str(v) for k, v in {**cpu, **gpu}.items()}


def test_the_cpu_set_is_lean_with_one_opencv_wheel():
    cpu = requirements("requirements-cpu.txt")
    assert not LEAN_WITHOUT & set(cpu)
    assert [name for name in cpu if name.startswith("opencv")] == ["opencv-python-headless"]
    gpu = requirements("requirements-gpu.txt")
    assert "torch" in gpu
    assert not [name for name in gpu if name.startswith("opencv") or name == "face-alignment"], \
        "the GPU install keeps one OpenCV wheel too (S3FD is lipsync/s3fd.py, not face-alignment)"


def test_every_opencv_wheel_is_the_same_build():
    """They all install the same `cv2` package: two builds would leave a mismatched mix of files."""
    pins = {str(r.specifier) for name in ("requirements-dev.txt", "requirements-gpu.txt")
            for key, r in requirements(name).items() if key.startswith("opencv")}
    assert len(pins) == 1 and next(iter(pins)).startswith("=="), pins


def imported_modules() -> dict[str, set[str]]:
    """{top-level module: files importing it} for every import in lipsync/, webapp/ and app.py, in functions too."""
    found: dict[str, set[str]] = {}
    for path in [ROOT / "app.py", *(ROOT / "lipsync").rglob("*.py"), *(ROOT / "webapp").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def installed_by(top: dict[str, Requirement]) -> set[str]:
    """The distributions that installing `top` brings (with their extras), as installed here."""
    seen: set[str] = set()
    todo = [(name, set(r.extras)) for name, r in top.items()]
    while todo:
        name, extras = todo.pop()
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here (an optional dependency of a dependency)
        seen.add(name)
        for line in requires:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if requirement.marker is None or any(requirement.marker.evaluate(e) for e in environments):
                key = canonicalize_name(requirement.name)
                if key not in seen:
                    todo.append((key, set(requirement.extras)))
    return seen


def test_everything_lipsync_imports_comes_with_the_cpu_set():
    owners = metadata.packages_distributions()
    cpu = requirements("requirements-cpu.txt")
    lean = installed_by(cpu)
    absent = sorted(set(cpu) - lean)
    assert not absent, f"not installed here: {absent} (the test environment: pip install -r requirements-dev.txt)"
    missing = {}
    for module, files in imported_modules().items():
        ours = module in ("lipsync", "webapp")  # the package and the web app
        if module in sys.stdlib_module_names or ours or module in OPTIONAL:
            continue
        distributions = {canonicalize_name(d) for d in owners.get(module, [])}
        if not distributions:
            pytest.fail(f"{module} (imported by {sorted(files)}) is not installed in the test environment")
        if not distributions & lean:
            missing[module] = sorted(files)
    assert not missing, f"imported, but not installed by requirements-cpu.txt: {missing}"


@pytest.mark.slow  # child processes (bash)
def test_setup_picks_the_gpu_install_where_an_nvidia_driver_is(tmp_path):
    """`bash run.sh` installs what `scripts/setup.sh` picks: requirements.txt where nvidia-smi lists a GPU (or the
    driver's files exist), requirements-cpu.txt elsewhere; LIPSYNC_INSTALL overrides; a wrong value is one sentence."""
    import os
    import shutil
    import subprocess

    if any(os.path.exists(p) for p in ("/proc/driver/nvidia", "/dev/nvidiactl")):
        pytest.skip("this machine has an NVIDIA driver: the no-driver case cannot be made here")
    without = tmp_path / "without"  # a PATH with bash but no nvidia-smi
    without.mkdir()
    for tool in ("bash", "dirname", "cat"):
        os.symlink(shutil.which(tool), without / tool)
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: Fake GPU (UUID: GPU-0)'\n")
    (fake / "nvidia-smi").chmod(0o755)

    def which(path: Path, **env: str) -> tuple[int, str]:
        done = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), "which"], capture_output=True, text=True,
                              env={"PATH": str(path), **env}, timeout=30)
        return done.returncode, (done.stdout + done.stderr).strip()

    assert which(without) == (0, "requirements-cpu.txt (no NVIDIA driver found)")
    assert which(Path(f"{fake}{os.pathsep}{without}")) == (0, "requirements.txt (an NVIDIA driver is present)")
    assert which(without, LIPSYNC_INSTALL="gpu") == (0, "requirements.txt (asked for)")
    assert which(Path(f"{fake}{os.pathsep}{without}"), LIPSYNC_INSTALL="cpu") == (0, "requirements-cpu.txt (asked for)")
    assert which(without, LIPSYNC_INSTALL="cuda") == (
        2, "Unknown install 'cuda': use cpu, gpu, dev or nothing (chosen by the machine).")
