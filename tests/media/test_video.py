"""Probing, streaming decode, and the atomic, browser-playable MP4 writer."""

from __future__ import annotations

import os
import shutil

import cv2
import media
import numpy as np
import pytest

from lipsync.errors import LipSyncError
from lipsync.media.probe import probe_media
from lipsync.media.video import VideoWriter, read_frames


def test_probe_reads_exact_ntsc_rate(tmp_path):
    clip = media.make_face_video(tmp_path / "ntsc.mp4", seconds=0.5, fps="30000/1001")
    info = probe_media(str(clip))
    assert info.has_video and not info.is_image and (info.width, info.height) == (320, 240)
    assert info.fps == pytest.approx(30000 / 1001, abs=1e-9)


def test_photos_are_recognised_by_content_not_name(tmp_path, face_photo, face_video):
    disguised_photo = tmp_path / "photo.mp4"
    shutil.copy(face_photo, disguised_photo)
    assert probe_media(str(disguised_photo)).is_image
    disguised_video = tmp_path / "clip.jpg"
    shutil.copy(face_video, disguised_video)
    assert not probe_media(str(disguised_video)).is_image


def test_decoded_frames_match_opencv(face_video):
    ours = list(read_frames(probe_media(str(face_video))))
    cap = cv2.VideoCapture(str(face_video))
    theirs = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        theirs.append(frame)
    assert len(ours) == len(theirs) == 30
    assert max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(ours, theirs)) <= 2


def test_rotated_phone_video_comes_out_upright(tmp_path):
    plain = media.make_face_video(tmp_path / "plain.mp4", seconds=0.2, size=(320, 240))
    rotated = tmp_path / "rotated.mp4"
    import subprocess

    from lipsync.media.ffmpeg import ffmpeg_exe
    subprocess.run([ffmpeg_exe(), "-v", "error", "-display_rotation", "90", "-i", str(plain), "-c", "copy",
                    str(rotated)], check=True)
    info = probe_media(str(rotated))
    assert (info.width, info.height) == (240, 320)
    frame = next(read_frames(info))
    assert frame.shape == (320, 240, 3)


@pytest.mark.parametrize("size", [(161, 121), (160, 120)])
def test_writer_handles_odd_sizes_and_muxes_audio(tmp_path, speech, size):
    out = tmp_path / "odd.mp4"
    with VideoWriter(str(out), size[0], size[1], 25.0, str(speech)) as writer:
        for frame in media.pan_zoom_frames(10, size):
            writer.write(frame)
    info = probe_media(str(out))
    assert info.has_audio and info.fps == 25.0
    assert (info.width, info.height) == (size[0] + size[0] % 2, size[1] + size[1] % 2)
    assert len(list(read_frames(info))) == 10


def test_failed_job_leaves_no_file(tmp_path, speech):
    out = tmp_path / "never.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(str(out), 64, 64, 25.0, str(speech)) as writer:
            writer.write(np.zeros((64, 64, 3), np.uint8))
            raise RuntimeError("stopped half way")
    assert os.listdir(tmp_path) == []


def test_unreadable_inputs_get_clear_errors(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(LipSyncError, match="empty"):
        probe_media(str(empty))
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    with pytest.raises(LipSyncError, match="cannot|can not|not a video"):
        probe_media(str(text))
    with pytest.raises(LipSyncError, match="not found"):
        probe_media(str(tmp_path / "missing.mp4"))


def test_browser_copy_reuses_a_video_browsers_already_play(tmp_path, face_video, speech):
    from lipsync.media.video import display_copy as browser_copy

    playable = probe_media(str(face_video))
    assert playable.plays_in_browsers
    assert browser_copy(playable, str(tmp_path / "copy.mp4")) == str(face_video)
    odd = tmp_path / "full_chroma.mp4"
    media.write_video(odd, media.pan_zoom_frames(5), 25, (320, 240),
                      extra=["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p"])
    converted = browser_copy(probe_media(str(odd)), str(tmp_path / "copy.mp4"), str(speech))
    info = probe_media(converted)
    assert converted == str(tmp_path / "copy.mp4") and info.plays_in_browsers
