"""Attacks on a public instance, each reproduced with a small file made here, each answered in seconds.

Every case checks the clear sentence and, where the attack was about resources, the
time and the peak memory (of a child process running the CLI, so the figure is its own).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import media
import pytest
from app_handler import call_handler
from cli_runner import child_env

from lipsync.errors import LipSyncError
from lipsync.media.ffmpeg import ffmpeg_exe
from lipsync.media.probe import probe_media

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PEAK = re.compile(r"PEAK_RSS_MB (\d+)")


def huge_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A ~100-byte PNG whose header declares width x height pixels (its data is one row; decoders try it all)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\x00" + b"\x80" * (width * 3), 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", row) + chunk(b"IEND", b""))
    return path


def long_opus(path: Path, hours: float = 3.0) -> Path:
    """Hours of low-bitrate Opus in a few MB: ten seconds encoded once, then copied end to end (fast)."""
    piece = path.with_suffix(".piece.ogg")
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "sine=f=220:d=10:r=48000", "-c:a",
                    "libopus", "-b:a", "6k", str(piece)], check=True)
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", str(int(hours * 360) - 1), "-i", str(piece),
                    "-c", "copy", str(path)], check=True)
    piece.unlink()
    return path


def run_cli(*args: str, env: dict | None = None) -> tuple[int, str, float, float]:
    """(exit code, stderr, seconds, peak RSS in MB) of the CLI in a child process of its own."""
    # The peak is reset first (writing 5 to clear_refs): a child started by vfork inherits the high-water mark
    # of its parent, here the test process, and ru_maxrss would report that instead of the CLI's own peak.
    code = ("import re, sys; open('/proc/self/clear_refs', 'w').write('5'); from lipsync.cli import main; "
            "c = main(sys.argv[1:]); status = open('/proc/self/status').read(); "
            "print('PEAK_RSS_MB', int(re.search(r'VmHWM:\\s+(\\d+)', status).group(1)) // 1024, file=sys.stderr); "
            "sys.exit(c)")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=child_env(env))
    peak = PEAK.search(proc.stderr)
    return proc.returncode, proc.stderr, time.perf_counter() - start, float(peak.group(1)) if peak else 0.0


@pytest.fixture(scope="module")
def attacks(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("attacks")
    files = {"huge png": huge_png(d / "huge.png"), "long opus": long_opus(d / "three_hours.ogg")}
    files["speech"] = media.make_speech(d / "speech.wav", seconds=1.0)
    target = media.make_face_video(d / "private.mp4", seconds=0.4)  # a local media file an attacker names
    files["hls"] = d / "clip.mp4"
    files["hls"].write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{target}\n#EXT-X-ENDLIST\n")
    files["hls m3u8"] = d / "list.m3u8"
    files["hls m3u8"].write_text(files["hls"].read_text())
    files["dash"] = d / "manifest.mp4"
    files["dash"].write_text(
        '<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'mediaPresentationDuration="PT1S" minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">'
        f'<Period><AdaptationSet mimeType="video/mp4"><Representation id="1" bandwidth="1"><BaseURL>{target}'
        '</BaseURL></Representation></AdaptationSet></Period></MPD>\n')
    files["percent photo"] = d / "face%03d.png"  # a JPEG under a name ffmpeg would read as a pattern
    shutil.copy(EXAMPLES / "astronaut.jpg", files["percent photo"])
    files["one frame"] = media.write_video(d / "one_frame.mp4", media.pan_zoom_frames(1, (320, 240)), 25, (320, 240))
    files["240 fps"] = media.make_face_video(d / "fast.mp4", seconds=0.1, fps=240)
    files["3.0 audio"] = d / "three_channels.wav"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "sine=f=300:d=1", "-filter_complex",
                    "[0:a]asplit=3[a][b][c];[a][b][c]join=inputs=3:channel_layout=3.0", "-c:a", "pcm_s16le",
                    str(files["3.0 audio"])], check=True)
    files["long original"] = media.write_video(d / "long_444.mp4", media.pan_zoom_frames(125), 25, (320, 240),
                                               extra=["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p"])
    return files


@pytest.mark.slow
def test_a_png_that_declares_30000_pixels_a_side_is_refused_from_its_header(attacks, checkpoint, tmp_path):
    assert attacks["huge png"].stat().st_size < 200_000
    code, err, seconds, peak = run_cli("--face", str(attacks["huge png"]), "--audio", str(attacks["speech"]),
                                       "--outfile", str(tmp_path / "out.mp4"), "--checkpoint_path", str(checkpoint))
    assert code == 1 and "30000x30000, larger than the limit of 4096 px" in err, err
    print(f"huge PNG: refused in {seconds:.1f} s, peak RSS {peak:.0f} MB")
    assert seconds < 60 and peak < 1500
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.slow
def test_hours_of_opus_in_a_few_mb_are_refused_before_decoding(attacks, checkpoint, tmp_path):
    assert attacks["long opus"].stat().st_size < 10_000_000
    code, err, seconds, peak = run_cli("--face", str(EXAMPLES / "astronaut.jpg"), "--audio", str(attacks["long opus"]),
                                       "--outfile", str(tmp_path / "out.mp4"), "--checkpoint_path", str(checkpoint))
    assert code == 1 and "over the limit of 1800 s" in err, err
    print(f"3 h of Opus: refused in {seconds:.1f} s, peak RSS {peak:.0f} MB")
    assert seconds < 60 and peak < 1500


@pytest.mark.slow
def test_a_lying_duration_is_still_cut_at_the_limit(attacks):
    """The decode itself stops just past the limit (`-t`), whatever the header said."""
    from lipsync.media import audio

    with pytest.raises(LipSyncError, match="over the limit of 5 s"):
        audio.check_audio(audio.load_audio(str(attacks["long opus"]), max_seconds=20000), "x", max_seconds=5)
    samples = audio._decode_mono(
        [ffmpeg_exe(), "-v", "error", "-i", str(attacks["long opus"]), "-t", "6", "-ac", "1", "-f", "f32le", "-"],
        1, "x")
    assert len(samples) == pytest.approx(6 * 48000, rel=0.01)


@pytest.mark.parametrize("kind", ["hls", "hls m3u8", "dash"])
def test_playlists_and_manifests_are_refused(attacks, kind):
    with pytest.raises(LipSyncError, match="playlist, manifest"):
        probe_media(str(attacks[kind]))


def test_opencv_never_follows_a_manifest(attacks):
    import cv2

    import lipsync.media.ffmpeg  # noqa: F401  (sets OpenCV's whitelists)

    assert not cv2.VideoCapture(str(attacks["dash"])).isOpened()
    assert not cv2.VideoCapture(str(attacks["hls m3u8"])).isOpened()


def test_an_unknown_channel_layout_is_not_taken_for_mono(attacks):
    from lipsync.media import audio

    info = probe_media(str(attacks["3.0 audio"]))
    assert info.audio_channels == 3
    assert len(audio.load_audio(str(attacks["3.0 audio"]))) == pytest.approx(16000, abs=200)  # 1 s, not 3


def test_frame_size_limit_applies_to_the_source_before_resizing(attacks, engine, tmp_path):
    from lipsync import Options

    with pytest.raises(LipSyncError, match="320x240, larger than the limit of 200 px"):
        engine.sync(str(attacks["one frame"]), str(attacks["speech"]), str(tmp_path / "o.mp4"),
                    Options(max_side=200, resize_factor=4, detector="haar"))


def test_frame_rate_over_the_limit_is_refused(attacks, engine, tmp_path):
    from lipsync import Options

    with pytest.raises(LipSyncError, match="240 frames per second, over the limit of 120"):
        engine.sync(str(attacks["240 fps"]), str(attacks["speech"]), str(tmp_path / "o.mp4"), Options(detector="haar"))


@pytest.mark.slow
def test_a_one_frame_video_is_decoded_once_however_long_the_audio(attacks, engine, tmp_path, monkeypatch):
    from lipsync import Options
    from lipsync.media import source

    calls = []
    real = source.read_frames
    monkeypatch.setattr(source, "read_frames", lambda *a, **k: calls.append(1) or real(*a, **k))
    audio = media.write_wav(tmp_path / "three.wav", media.speech_samples(3.0))
    result = engine.sync(str(attacks["one frame"]), str(audio), str(tmp_path / "o.mp4"),
                         Options(box=(40, 200, 90, 230)))
    assert result.frames > 60 and len(calls) <= 2  # the synthesis pass, and at most the detection's first look


def test_work_and_time_limits_stop_a_job_with_a_sentence(attacks, engine, tmp_path):
    from lipsync import Options

    with pytest.raises(LipSyncError, match="too large.*megapixel-frames"):
        engine.sync(str(EXAMPLES / "astronaut.jpg"), str(attacks["speech"]), str(tmp_path / "o.mp4"),
                    Options(max_work=1, detector="haar"))
    with pytest.raises(LipSyncError, match="ran longer than the limit of"):
        engine.sync(str(EXAMPLES / "astronaut.jpg"), str(attacks["speech"]), str(tmp_path / "o.mp4"),
                    Options(time_limit=0.01, detector="haar"))
    assert not (tmp_path / "o.mp4").exists() and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def app(web, tmp_path_factory):
    """The web app's parts, its results in a folder of their own."""
    from webapp import WebApp

    return WebApp(web.config.with_changes(output_root=tmp_path_factory.mktemp("hardening_results")))


def test_a_percent_in_a_photo_name_does_not_hang_the_display_copy(app, attacks):
    start = time.perf_counter()
    original, result, *_ = call_handler(app, face=str(attacks["percent photo"]), audio=str(attacks["speech"]))
    assert probe_media(original).has_video and probe_media(result).has_video
    assert time.perf_counter() - start < 120


def test_the_app_refuses_the_attacks_with_sentences(app, attacks):
    import gradio as gr

    with pytest.raises(gr.Error, match="over the limit of 120 s"):
        call_handler(app, face=str(EXAMPLES / "astronaut.jpg"), audio=str(attacks["long opus"]))
    with pytest.raises(gr.Error, match="larger than the limit"):
        call_handler(app, face=str(attacks["huge png"]), audio=str(attacks["speech"]))
    with pytest.raises(gr.Error, match="playlist, manifest") as raised:
        call_handler(app, face=str(attacks["dash"]), audio=str(attacks["speech"]))
    assert str(attacks["dash"].parent) not in raised.value.message  # no server folders in what visitors read


def test_the_preview_keeps_a_small_copy_and_applies_the_limits(app, attacks, tmp_path):
    import cv2

    big = tmp_path / "big.png"
    cv2.imwrite(str(big), cv2.resize(media.astronaut_bgr(), (2400, 2400)))
    _, _, state = app.jobs.preview({"face": str(big), "detector": "haar", "device": "cpu"}, {})
    assert max(state["preview"].image.shape[:2]) <= 640
    image, note, state = app.jobs.preview({"face": str(attacks["huge png"]), "detector": "haar", "device": "cpu"},
                                          {})
    assert image is None and state == {} and "larger than the limit" in note  # said beside it, nothing kept


def test_the_display_copy_of_a_long_original_is_cut_to_the_result(attacks, tmp_path):
    from lipsync import display_copy

    copy = display_copy(str(attacks["long original"]), str(tmp_path / "shown.mp4"), seconds=1.0)
    assert probe_media(copy).duration == pytest.approx(1.0, abs=0.15)


def test_the_cleaner_spares_running_jobs_and_old_face_boxes_go(monkeypatch, tmp_path):
    from lipsync.faces import cache
    from webapp.files import JobFolders, new_job_dir

    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path / "boxes")
    folders = JobFolders(tmp_path / "results", keep_minutes=60)
    running, finished = folders.new(), new_job_dir(tmp_path / "results")
    key = "0123456789abcdef" * 2
    cache.store(key, [None], complete=True)
    old = time.time() - 3 * 3600
    for path in (running, finished, tmp_path / "boxes" / f"{key}.json"):
        os.utime(path, (old, old))
    folders.clean()
    assert running.exists() and not finished.exists()
    assert not (tmp_path / "boxes" / f"{key}.json").exists()
