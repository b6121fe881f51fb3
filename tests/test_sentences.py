"""Odd values where settings are read: each gets one sentence (and exit status 2 from a manifest), never a traceback
or "something went wrong". None of these runs a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lipsync import Options
from lipsync.cli import batch as batch_cli
from lipsync.errors import LipSyncError
from lipsync.faces import cache
from lipsync.geometry import Box

ROOT = Path(__file__).resolve().parents[1]
PHOTO, SPEECH = ROOT / "examples" / "astronaut.jpg", ROOT / "examples" / "speech.wav"


def _row(**values) -> dict:
    return {"face": str(PHOTO), "audio": str(SPEECH), "output": "out.mp4", **values}


@pytest.mark.parametrize("case, text, expected", [
    ("nested 100000 deep", "[" * 100000 + "]" * 100000 + "\n", "is nested too deeply to be a job"),
    ("1e400", json.dumps(_row()).replace('"output"', '"fps": 1e400, "output"') + "\n",
     "The setting fps must be a finite number, not inf"),
    ("NaN", json.dumps(_row(fps=float("nan"))) + "\n", "The setting fps must be a finite number, not nan"),
    ("NUL in a path", json.dumps(_row(face=f"{PHOTO}\0.mp4")) + "\n", "a file name contains a NUL character"),
    ("fps 100000", json.dumps(_row(fps=100000)) + "\n", "--fps 100000 is over the limit of 120 frames per second"),
    ("infinite pads", json.dumps(_row(pads=[0, 1e400, 0, 0])) + "\n", "pads must be 4 finite numbers"),
])
def test_a_manifest_value_is_one_sentence_and_exit_2(case, text, expected, tmp_path, capsys):
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(text)
    code = batch_cli.main([str(manifest), "--checkpoint_path", "unused.pth"])
    err = capsys.readouterr().err
    assert code == 2 and expected in err, err
    assert err.startswith("Error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("flags, expected", [
    (["--resize_factor", "100000"], "--resize_factor 100000 would shrink the 512x512 picture"),
    (["--fps", "100000"], "--fps 100000 is over the limit of 120 frames per second"),
    (["--fps", "nan"], "The setting fps must be a finite number"),
])
def test_a_cli_value_is_one_sentence_before_the_model_loads(flags, expected, tmp_path, capsys):
    from lipsync.cli import main

    code = main(["--face", str(PHOTO), "--audio", str(SPEECH), "--outfile", str(tmp_path / "o.mp4"),
                 "--checkpoint_path", str(tmp_path / "missing.pth"), *flags])
    err = capsys.readouterr().err
    assert code == 1 and expected in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_non_finite_limit_in_the_environment_is_one_sentence(monkeypatch):
    monkeypatch.setenv("LIPSYNC_MAX_SECONDS", "inf")
    with pytest.raises(LipSyncError, match="LIPSYNC_MAX_SECONDS='inf' is not a finite number"):
        Options()
    monkeypatch.setenv("LIPSYNC_MAX_WORK", "nan")
    monkeypatch.delenv("LIPSYNC_MAX_SECONDS")
    with pytest.raises(LipSyncError, match="LIPSYNC_MAX_WORK='nan' is not a finite number"):
        Options()


def test_the_app_limits_are_read_where_the_settings_are_declared(monkeypatch):
    """One variable, one meaning: LIPSYNC_MAX_SECONDS sets the CLI's limit and the app's, and the app's own
    defaults (no variable) are declared beside the setting, not in the web app."""
    from lipsync.options import server_limits

    for name in ("LIPSYNC_MAX_SECONDS", "LIPSYNC_TIME_LIMIT", "LIPSYNC_MAX_WORK"):
        monkeypatch.delenv(name, raising=False)
    assert server_limits() == {"max_seconds": 120.0, "max_work": 10000.0, "time_limit": 900.0}
    assert Options().max_seconds == 1800.0 and Options().time_limit == 0.0
    monkeypatch.setenv("LIPSYNC_MAX_SECONDS", "30")
    assert server_limits()["max_seconds"] == 30.0 == Options().max_seconds
    monkeypatch.setenv("LIPSYNC_TIME_LIMIT", "inf")
    with pytest.raises(LipSyncError, match="LIPSYNC_TIME_LIMIT='inf' is not a finite number"):
        server_limits()


@pytest.mark.parametrize("settings, expected", [
    ({"box_top": 0, "box_bottom": 10 ** 12, "box_left": 0, "box_right": 100}, "is not inside the 512x512 frame"),
    ({"box_top": 0, "box_bottom": float("inf"), "box_left": 0, "box_right": 100}, "must be 4 finite numbers"),
    ({"box_top": float("nan"), "box_bottom": 100, "box_left": 0, "box_right": 100}, "must be 4 finite numbers"),
    ({"face_point_x": 9999, "face_point_y": 10}, "face point 9999 10 is outside the 512x512 first frame"),
    ({"face_point_x": 2 ** 40, "face_point_y": 2 ** 40}, "is outside the 512x512 first frame"),
    ({"face_point_x": float("-inf"), "face_point_y": 1}, "must be 2 finite numbers"),
    ({"pads_bottom": float("nan")}, "must be 4 finite numbers"),
])
def test_the_preview_answers_odd_boxes_and_points_with_a_sentence(web, settings, expected):
    base = {"face": str(PHOTO), "detector": "haar", "device": "cpu"}
    _, _, state = web.jobs.preview(base, {})  # detected once, then redrawn with the odd values, as the page does
    image, note, _ = web.jobs.preview({**base, **settings}, state)
    assert image is None and note.startswith("**Cannot preview this face:**") and expected in note, note


def test_a_damaged_face_box_cache_entry_is_detected_again(tmp_path, monkeypatch):
    """An inverted or negative box in the cache is a miss (detected again and overwritten), not an error forever."""
    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path)
    cache.store("a" * 32, [Box(10, 10, 50, 60), Box(50, 60, 10, 10)], complete=True)
    assert cache.load("a" * 32, 2) is None
    cache.store("b" * 32, [Box(-5, 10, 50, 60)], complete=True)
    assert cache.load("b" * 32, 1) is None
    cache.store("c" * 32, [Box(10, 10, 50, 60), None], complete=True)
    assert cache.load("c" * 32, 2) == [Box(10, 10, 50, 60), None]


def test_the_face_check_and_the_preview_keep_to_the_time_and_work_limits(tmp_path):
    """Before a job, the face check through the clip and the preview obey the job's limits: stopped with a
    sentence (the app applies its own limits to both)."""
    import media

    from lipsync import face_preview, face_scan

    clip = media.make_face_video(tmp_path / "clip.mp4", seconds=1.0)
    with pytest.raises(LipSyncError, match="Checking the faces through the clip ran longer than the limit of 0 s"):
        face_scan(str(clip), Options(detector="haar", time_limit=1e-6))
    with pytest.raises(LipSyncError, match=r"too large: 25 frames of 320x240"):
        face_scan(str(clip), Options(detector="haar", max_work=1))
    with pytest.raises(LipSyncError, match="The face-box preview ran longer than the limit"):
        face_preview(str(clip), Options(detector="haar", time_limit=1e-6))
    with pytest.raises(LipSyncError, match=r"too large: 1 frame of 320x240"):
        face_preview(str(clip), Options(detector="haar", max_work=0.01))
    assert len(face_scan(str(clip), Options(detector="haar", time_limit=60, max_work=100))) == 25
