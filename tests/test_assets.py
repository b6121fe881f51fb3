"""The bundled MediaPipe models (lipsync.assets): present and checked (tests/test_packaging.py checks that the
wheel carries every file of the package, these included)."""

from __future__ import annotations

import pytest

from lipsync import assets
from lipsync.errors import LipSyncError


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
