"""The bundled MediaPipe models (lipsync.assets): present, checked, and shipped in the wheel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lipsync import assets
from lipsync.errors import LipSyncError

ROOT = Path(__file__).resolve().parents[1]


def test_every_bundled_model_is_there_and_intact():
    for name in assets.SHA256:
        path = assets.asset_path(name)
        assert path.is_file() and path.parent == assets.ASSETS_DIR
    assert (assets.ASSETS_DIR / "NOTICE").read_text().count("Apache License 2.0") == 1


def test_a_damaged_or_missing_model_is_one_sentence(tmp_path, monkeypatch):
    name = "face_detection_short_range.tflite"
    damaged = tmp_path / name
    damaged.write_bytes((assets.ASSETS_DIR / name).read_bytes()[:-1] + b"x")
    monkeypatch.setattr(assets, "ASSETS_DIR", tmp_path)
    assets.asset_path.cache_clear()
    try:
        with pytest.raises(LipSyncError, match="is damaged; reinstall") as raised:
            assets.asset_path(name)
        assert str(raised.value).count(". ") == 0
        with pytest.raises(LipSyncError, match="is missing; reinstall"):
            assets.asset_path("face_landmark.tflite")
    finally:
        assets.asset_path.cache_clear()
    with pytest.raises(KeyError):
        assets.asset_path("nothing.tflite")


def test_the_wheel_carries_the_models_and_their_licence(tmp_path):
    """setuptools' build_py gives the package's files as a wheel holds them (pip wheel itself needs the network
    here for its build backend)."""
    subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "egg_info", "--egg-base",
                    str(tmp_path), "build_py", "--build-lib", str(tmp_path / "lib")],
                   check=True, cwd=ROOT, capture_output=True)
    shipped = {p.name for p in (tmp_path / "lib" / "lipsync" / "assets").iterdir()}
    assert shipped >= {*assets.SHA256, "NOTICE", "LICENSE-2.0.txt", "__init__.py"}
