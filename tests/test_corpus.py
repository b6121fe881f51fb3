"""Bad and awkward inputs, made on the spot, each with the answer it must get, through the CLI and the app.

Every case runs twice: through the command line (`lipsync.cli.main`, its exit code
and stderr) and through the web app's job handler (what /lipsync runs: its `gr.Error` or result).
A failure must be one sentence naming the problem, with no traceback, no output file
and no temporary file left; a success must be a complete MP4 with picture and sound.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import media
import numpy as np
import pytest
import torch
from app_handler import call_handler

from lipsync.media.ffmpeg import ffmpeg_exe
from lipsync.media.probe import probe_media
from lipsync.media.video import read_frames

SPEECH_SECONDS = 1.0
FACE_SIZE = (240, 180)


class _Payload:
    """A pickle that would create a file if it were ever unpickled as code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, checkpoint) -> dict[str, Path]:
    """The inputs, named by what they are. Small: a fraction of a second to a few seconds each."""
    d = tmp_path_factory.mktemp("corpus")
    files: dict[str, Path] = {"checkpoint": checkpoint}
    speech = files["speech"] = media.make_speech(d / "speech.wav", seconds=SPEECH_SECONDS)
    face = files["face"] = media.make_face_video(d / "face.mp4", seconds=0.8, size=FACE_SIZE)
    files["photo"] = d / "photo.jpg"
    cv2.imwrite(str(files["photo"]), media.astronaut_bgr())

    # --- inputs that must be refused
    (d / "empty.mp4").write_bytes(b"")
    files["empty face"] = d / "empty.mp4"
    (d / "empty.wav").write_bytes(b"")
    files["empty audio"] = d / "empty.wav"
    files["text named mp4"] = d / "notes.mp4"
    files["text named mp4"].write_text("These are my notes, not a video.\n" * 40)
    whole = face.read_bytes()
    files["truncated mp4"] = d / "truncated.mp4"
    files["truncated mp4"].write_bytes(whole[: len(whole) // 2])
    faststart = media.convert(face, d / "faststart.mp4", "-c", "copy", "-movflags", "+faststart")
    files["truncated faststart mp4"] = d / "truncated_faststart.mp4"
    files["truncated faststart mp4"].write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])
    files["silence"] = media.write_wav(d / "silence.wav", np.zeros(16000, np.float32))
    rng = np.random.default_rng(0)
    files["near silence"] = media.write_wav(d / "hiss.wav", rng.normal(0, 10 ** (-70 / 20), 16000).astype(np.float32))
    files["blip"] = media.write_wav(d / "blip.wav", media.speech_samples(0.5)[:320])  # 20 ms: under one frame
    files["blank photo"] = d / "blank.png"
    cv2.imwrite(str(files["blank photo"]), np.full((240, 320, 3), 90, np.uint8))
    files["blank video"] = media.write_video(d / "blank.mp4", (np.full((180, 240, 3), 90, np.uint8) for _ in range(10)),
                                             25, FACE_SIZE)
    files["truncated checkpoint"] = d / "truncated.pth"
    files["truncated checkpoint"].write_bytes(checkpoint.read_bytes()[:5_000_000])
    files["syncnet checkpoint"] = d / "lipsync_expert.pth"
    torch.save({"state_dict": {"module.face_encoder.0.conv_block.0.weight": torch.zeros(32, 15, 7, 7)},
                "global_step": 0}, files["syncnet checkpoint"])
    files["payload marker"] = d / "payload_ran"
    files["pickled code checkpoint"] = d / "evil.pth"
    with open(files["pickled code checkpoint"], "wb") as f:
        torch.save({"state_dict": {"x": torch.zeros(1)}, "extra": _Payload(files["payload marker"])}, f)
    files["raw pickle checkpoint"] = d / "evil_raw.pth"
    files["raw pickle checkpoint"].write_bytes(pickle.dumps(_Payload(files["payload marker"])))

    # --- awkward inputs that must work
    # a phone stores the frames sideways and a display rotation (90 degrees counter-clockwise) that turns them upright
    sideways = (cv2.rotate(f, cv2.ROTATE_90_CLOCKWISE) for f in media.pan_zoom_frames(20, FACE_SIZE))
    stored = media.write_video(d / "sideways.mp4", sideways, 25, FACE_SIZE[::-1])
    files["rotated phone video"] = d / "rotated.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-display_rotation", "90", "-i", str(stored), "-c", "copy",
                    str(files["rotated phone video"])], check=True)
    files["odd size video"] = media.write_video(  # 4:4:4, since 4:2:0 H.264 cannot have odd sides
        d / "odd.mp4", media.pan_zoom_frames(20, (241, 181)), 25, (241, 181),
        extra=["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p"])
    files["29.97 fps video"] = media.make_face_video(d / "ntsc.mp4", seconds=0.8, fps="30000/1001", size=FACE_SIZE)
    files["variable frame rate video"] = media.make_vfr_video(d / "vfr.mp4")
    files["4K video"] = media.make_face_video(d / "uhd.mp4", seconds=0.2, size=(3840, 2160))
    for kind in ("grey_png", "rgba_png", "cmyk_jpeg", "webp"):
        files[kind] = media.write_image(d / f"photo_{kind}.{kind.split('_')[-1]}", kind)
    files["mp3"] = media.convert(speech, d / "speech.mp3", "-c:a", "libmp3lame", "-b:a", "96k")
    files["m4a"] = media.convert(speech, d / "speech.m4a", "-c:a", "aac", "-b:a", "96k")
    files["opus"] = media.convert(speech, d / "speech.ogg", "-c:a", "libopus", "-b:a", "48k")
    files["flac"] = media.convert(speech, d / "speech.flac", "-c:a", "flac")
    files["wav 8 kHz"] = media.convert(speech, d / "speech_8k.wav", "-ar", "8000")
    files["wav 48 kHz stereo"] = media.convert(speech, d / "speech_48k.wav", "-ar", "48000", "-ac", "2")
    files["video with sound"] = media.make_face_video(d / "talking.mp4", seconds=1.0, size=FACE_SIZE, audio=speech)
    files["long speech"] = media.make_speech(d / "long.wav", seconds=3.0)
    files["short speech"] = media.make_speech(d / "short.wav", seconds=0.4)
    files["long video"] = media.make_face_video(d / "long.mp4", seconds=2.0, size=FACE_SIZE)
    files["video with a gap"] = media.make_video_with_gap(d / "gap.mp4")
    odd = d / "odd names"
    odd.mkdir()
    files["odd face name"] = odd / "my face; 'it''s' \"me\" $(touch pwned) ñandú.mp4"
    files["odd face name"].write_bytes(face.read_bytes())
    files["odd audio name"] = odd / "voix d'été; $(rm -rf x) `id`.wav"
    files["odd audio name"].write_bytes(speech.read_bytes())
    return files


@dataclass
class Case:
    """One input and the answer it must get. `expect` is the message for a refusal, None for a success."""

    name: str
    face: str = "face"
    audio: str = "speech"
    expect: str | None = None
    cli: list[str] = field(default_factory=list)  # extra command-line flags
    app: dict = field(default_factory=dict)  # the app handler's settings that differ from the defaults
    app_limits: dict = field(default_factory=dict)  # app module settings (limits) for this case
    checkpoint: str = "checkpoint"
    size: tuple[int, int] | None = None  # (width, height) the result must have
    fps: float | None = None
    seconds: float = SPEECH_SECONDS  # how long the result must last (the audio's length)
    check: Callable[[str], None] | None = None  # more checks on the CLI's stderr


REFUSED = [
    Case("zero-byte face", face="empty face", expect=r"is empty \(0 bytes\)"),
    Case("zero-byte audio", audio="empty audio", expect=r"is empty \(0 bytes\)"),
    Case("text file named .mp4", face="text named mp4", expect="not a video, photo or audio file"),
    Case("truncated MP4", face="truncated mp4", expect="damaged, truncated"),
    Case("truncated MP4 with its index first", face="truncated faststart mp4", expect="is truncated"),
    Case("audio file as the face", face="speech", expect="has no picture"),
    Case("video without sound as the audio", audio="face", expect="has no sound track"),
    Case("silent audio", audio="silence", expect=r"is silent \(digital silence\)"),
    Case("near-silent audio", audio="near silence", expect=r"is silent \(peak -\d+ dBFS\)"),
    Case("audio shorter than a frame", audio="blip", expect="is too short"),
    Case("photo without a face", face="blank photo", expect="No face was found"),
    Case("video without a face", face="blank video", expect="No face was found"),
    Case("missing checkpoint", checkpoint="nowhere.pth", expect="Checkpoint not found"),
    Case("truncated checkpoint", checkpoint="truncated checkpoint", expect="truncated, damaged"),
    Case("wrong checkpoint", checkpoint="syncnet checkpoint", expect="SyncNet"),
    Case("checkpoint carrying pickled code", checkpoint="pickled code checkpoint",
         expect="holds Python objects or code"),
    Case("raw pickle as checkpoint", checkpoint="raw pickle checkpoint", expect="holds Python objects|not a readable"),
    Case("pads outside the frame", cli=["--pads", "0", "5000", "0", "0"], app={"pads_bottom": 5000},
         expect="bottom padding .* larger than the 240x180 frame"),
    Case("box outside the frame", cli=["--box", "0", "500", "0", "100"],
         app={"box_top": 0, "box_bottom": 500, "box_left": 0, "box_right": 100}, expect="is not inside the 240x180"),
    Case("audio over the length limit", audio="long speech", cli=["--max_seconds", "2"],
         app_limits={"max_seconds": 2.0}, expect="over the limit of 2 s"),
    Case("frame over the size limit", cli=["--max_side", "200"], app_limits={"max_side": 200},
         expect="larger than the limit of 200 px"),
]

ACCEPTED = [
    Case("phone video with rotation metadata", face="rotated phone video", size=FACE_SIZE),
    Case("odd width and height", face="odd size video", size=(242, 182)),
    Case("29.97 fps", face="29.97 fps video", fps=30000 / 1001),
    Case("variable frame rate", face="variable frame rate video"),
    Case("4K clip", face="4K video", audio="short speech", size=(3840, 2160), seconds=0.4),
    Case("greyscale PNG", face="grey_png", size=(512, 512)),
    Case("RGBA PNG", face="rgba_png", size=(512, 512)),
    Case("CMYK JPEG", face="cmyk_jpeg", size=(512, 512)),
    Case("WebP", face="webp", size=(512, 512)),
    Case("MP3 audio", audio="mp3"),
    Case("M4A/AAC audio", audio="m4a"),
    Case("OGG/Opus audio", audio="opus"),
    Case("FLAC audio", audio="flac"),
    Case("WAV at 8 kHz", audio="wav 8 kHz"),
    Case("WAV at 48 kHz stereo", audio="wav 48 kHz stereo"),
    Case("sound track of a video", audio="video with sound"),
    Case("audio much longer than the video", audio="long speech", seconds=3.0),
    Case("audio much shorter than the video", face="long video", audio="short speech", seconds=0.4),
    Case("faces lost for some frames", face="video with a gap",
         check=lambda err: _assert(int(re.search(r"(\d+) (?:frames )?without a face", err).group(1)) >= 6)),
    Case("names with spaces, quotes, ;, $() and accents", face="odd face name", audio="odd audio name"),
]


def _assert(condition: bool) -> None:
    assert condition


def _path(corpus: dict[str, Path], key: str, tmp_path: Path) -> str:
    return str(corpus[key]) if key in corpus else str(tmp_path / key)


def _check_result(path: Path, case: Case, fps: float) -> None:
    info = probe_media(str(path))
    assert info.has_video and info.has_audio
    if case.size:
        assert (info.width, info.height) == case.size
    if case.fps:
        assert info.fps == pytest.approx(case.fps, abs=1e-3)
    frames = sum(1 for _ in read_frames(info))
    # one frame per mel window: the windows stop 0.2 s (16 mel frames) before the audio's end, then one more
    expected = (case.seconds - 0.2) * fps + 2
    assert abs(frames - expected) <= 2, (frames, case.seconds, fps)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _app_leftovers(root: Path) -> list[str]:
    """What the app keeps under its output root: its own folder's entries (app_files)."""
    from webapp.files import app_dir

    folder = app_dir(root)
    return _leftovers(folder) if folder.is_dir() else []


# --- the command line ------------------------------------------------------------------------------------------


def _run_cli(case: Case, corpus, tmp_path, capsys) -> tuple[int, str, Path]:
    from lipsync.cli import main

    out_dir = tmp_path / "out dir"
    out_dir.mkdir()
    outfile = out_dir / ("résultat; 'final' $(x).mp4" if "names" in case.name else "result.mp4")
    argv = ["--face", _path(corpus, case.face, tmp_path), "--audio", _path(corpus, case.audio, tmp_path),
            "--outfile", str(outfile), "--checkpoint_path", _path(corpus, case.checkpoint, tmp_path),
            "--detector", "haar", "--device", "cpu", *case.cli]
    code = main(argv)
    return code, capsys.readouterr().err, outfile


# Refused only once the job has loaded the model and read the files (about 0.7 s each through the command line):
# in the fast lane through the app below (its engine already loaded), and two of them here; all of them in CI.
REFUSED_IN_THE_JOB = {"truncated MP4 with its index first", "near-silent audio", "audio shorter than a frame",
                      "video without a face", "pads outside the frame", "box outside the frame",
                      "audio over the length limit"}
CLI_REFUSED = [pytest.param(c, marks=pytest.mark.slow) if c.name in REFUSED_IN_THE_JOB else c for c in REFUSED]


@pytest.mark.parametrize("case", CLI_REFUSED, ids=[c.name for c in REFUSED])
def test_cli_refuses_with_one_clear_sentence(case, corpus, tmp_path, capsys):
    code, err, outfile = _run_cli(case, corpus, tmp_path, capsys)
    assert code == 1, err
    message = err.strip().splitlines()[-1]
    assert message.startswith("Error: ") and re.search(case.expect, message), err
    assert "Traceback" not in err
    assert _leftovers(outfile.parent) == []  # no output, no partial file
    assert not corpus["payload marker"].exists()  # a pickled payload never ran


def test_cli_refuses_an_output_that_is_a_folder(corpus, tmp_path, capsys):
    from lipsync.cli import main

    folder = tmp_path / "results"
    folder.mkdir()
    code = main(["--face", str(corpus["face"]), "--audio", str(corpus["speech"]), "--outfile", str(folder),
                 "--checkpoint_path", str(corpus["checkpoint"]), "--detector", "haar"])
    err = capsys.readouterr().err
    assert code == 1 and "is a folder. Give a file name" in err and "Traceback" not in err
    assert list(folder.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("case", ACCEPTED, ids=[c.name for c in ACCEPTED])
def test_cli_handles_awkward_input(case, corpus, tmp_path, capsys):
    code, err, outfile = _run_cli(case, corpus, tmp_path, capsys)
    assert code == 0, err
    assert _leftovers(outfile.parent) == [outfile.name]
    fps = float(re.search(r"at ([\d.]+) fps", err).group(1))
    _check_result(outfile, case, fps)
    if case.check:
        case.check(err)
    assert not (Path.cwd() / "pwned").exists()


# --- the web app's handler -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(web, tmp_path_factory):
    """The web app's parts, its results in a folder of their own."""
    from webapp import WebApp

    return WebApp(web.config.with_changes(output_root=tmp_path_factory.mktemp("app_results")))


def _run_app(app, case: Case, corpus, tmp_path, monkeypatch):
    from webapp import WebApp, jobs

    for name, value in case.app_limits.items():
        monkeypatch.setitem(app.config.limits, name, value)
    if case.checkpoint != "checkpoint":  # the server's own checkpoint is this one: a fresh engine, the shared one
        app = WebApp(app.config.with_changes(custom_checkpoint=_path(corpus, case.checkpoint, tmp_path)))  # untouched
        monkeypatch.setattr(jobs, "shared_engine", lambda checkpoint, device: __import__("lipsync").LipSync(
            checkpoint, device, allow_download=False))
    return call_handler(app, face=_path(corpus, case.face, tmp_path), audio=_path(corpus, case.audio, tmp_path),
                        **case.app)


@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
def test_app_refuses_with_one_clear_sentence(case, app, corpus, tmp_path, monkeypatch):
    import gradio as gr

    before = _app_leftovers(app.config.output_root)
    with pytest.raises(gr.Error) as raised:
        _run_app(app, case, corpus, tmp_path, monkeypatch)
    assert re.search(case.expect, raised.value.message), raised.value.message
    assert "Traceback" not in raised.value.message
    assert _app_leftovers(app.config.output_root) == before  # the failed job's folder is gone
    assert not corpus["payload marker"].exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", ACCEPTED, ids=[c.name for c in ACCEPTED])
def test_app_handles_awkward_input(case, app, corpus, tmp_path, monkeypatch):
    original, result, download, stats, *_ = _run_app(app, case, corpus, tmp_path, monkeypatch)
    assert download == result and probe_media(original).has_video
    fps = float(re.search(r"at ([\d.]+) fps", stats).group(1))
    _check_result(Path(result), case, fps)
    if case.check:
        case.check(stats)


def test_app_syncs_silence_when_asked(app, corpus, tmp_path, monkeypatch):
    case = Case("silence allowed", audio="silence", app={"allow_silence": True})
    _, result, *_ = _run_app(app, case, corpus, tmp_path, monkeypatch)
    assert probe_media(result).has_audio
