"""The streamed result: segments while the job runs, and the same MP4 at the end as an ordinary job writes."""

from __future__ import annotations

import os
import subprocess

import media
import numpy as np
import pytest

from lipsync import Options, Progress, SyncResult
from lipsync.media.ffmpeg import ffmpeg_exe
from lipsync.media.segments import (
    SegmentPlan,
    finished_segments,
    keyframe_args,
    segment_spans,
    segment_times,
    tee_output,
)


def decoded(path: str) -> np.ndarray:
    """Every frame of a video (or of an MPEG-TS concatenation), as raw grey bytes: what a player shows."""
    proc = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", path, "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt",
                           "gray", "-"], capture_output=True, check=True)
    return np.frombuffer(proc.stdout, np.uint8)


@pytest.fixture(scope="module")
def speech2(data_dir):
    """2.2 s: two segments (cut at 1 s; where later cuts fall: test_segment_cut_points_follow_the_keyframes)."""
    return media.make_speech(data_dir / "speech2.wav", seconds=2.2)


def test_a_streamed_job_hands_out_segments_then_the_very_file_an_ordinary_job_writes(engine, face_video, speech2,
                                                                                      tmp_path):
    options = Options(detector="haar")
    plain = engine.sync(str(face_video), str(speech2), str(tmp_path / "plain.mp4"), options)
    streamed_out, folder = tmp_path / "streamed.mp4", tmp_path / "segments"
    folder.mkdir()
    events = []
    for event in engine.sync_stream(str(face_video), str(speech2), str(streamed_out), str(folder), options):
        if isinstance(event, str) and not any(isinstance(e, str) for e in events):
            assert os.path.getsize(event) > 0 and not streamed_out.exists()  # the first plays before the MP4 is there
        events.append(event)
    segments = [e for e in events if isinstance(e, str)]
    assert isinstance(events[-1], SyncResult) and events[-1].frames == plain.frames == 52  # 2.2 s: 177 mel frames
    assert any(isinstance(e, Progress) and e.stage == "Syncing lips" for e in events)
    # keyframes at 0.5, 1, 2, 3, ... s: four segments for 2.08 s (0.5, 0.5, 1 and the last 0.08 s)
    assert [os.path.basename(s) for s in segments] == [f"part{i:05d}.ts" for i in range(4)]
    assert streamed_out.read_bytes() == (tmp_path / "plain.mp4").read_bytes()
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(open(s, "rb").read() for s in segments))
    assert np.array_equal(decoded(str(joined)), decoded(str(streamed_out)))  # the stream shows the file's frames


@pytest.mark.slow  # a second streamed job; the fast lane checks the same in the test above
def test_the_first_segment_comes_while_the_job_still_runs(engine, face_video, speech2, tmp_path):
    out = tmp_path / "out.mp4"
    stream = engine.sync_stream(str(face_video), str(speech2), str(out), str(tmp_path), Options(detector="haar"))
    first = next(e for e in stream if isinstance(e, str))
    assert os.path.getsize(first) > 0 and not out.exists()  # the MP4 is written only at the end
    assert isinstance(list(stream)[-1], SyncResult) and out.exists()


def test_a_stream_nobody_reads_stops_the_job_and_leaves_no_file(engine, face_video, speech2, tmp_path):
    out = tmp_path / "out.mp4"
    stream = engine.sync_stream(str(face_video), str(speech2), str(out), str(tmp_path), Options(detector="haar"))
    next(e for e in stream if isinstance(e, Progress) and e.stage == "Syncing lips")
    stream.close()  # returns once the job has stopped
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".partial.mp4")]


def test_segment_cut_points_follow_the_keyframes(tmp_path):
    """The boundaries (0.5, 1, 2, 3, ...) and the keyframes ffmpeg forces agree: the segments ffmpeg cuts have exactly
    those lengths, and their listing says so."""
    assert segment_times(4.5) == [0.5, 1.0, 2.0, 3.0, 4.0] and segment_times(0.5) == []
    out, folder = tmp_path / "out.mp4", tmp_path / "segments"
    folder.mkdir()
    cmd = [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=s=64x48:r=25:d=16", "-map", "0:v:0",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", *keyframe_args(), *tee_output(str(out),
                                                                                   SegmentPlan(str(folder), 16.0))]
    subprocess.run(cmd, check=True, capture_output=True)
    frames = [len(decoded(path)) // (64 * 48) for path in finished_segments(str(folder))]  # grey frames
    assert frames == [13, 12] + [25] * 15, frames  # at 25 fps the first cut is frame 13 (0.52 s)
    spans = segment_spans(str(folder))  # the listing counts from 0 to the first cut as the encoder timed it (it
    # delays its timestamps by its two B-frames, 0.08 s here), then each segment's own length
    assert [round(end - start, 2) for _, start, end in spans[1:]] == [n / 25 for n in frames[1:]]
    assert 0.5 <= spans[0][2] - spans[0][1] <= 0.6


@pytest.mark.parametrize("name", ["o'u t[1]|x:y\\z.mp4", "plain.mp4", "100%d.mp4"])
def test_any_file_or_folder_name_survives_the_tee_muxer(tmp_path, name):
    folder = tmp_path / "se g's:x%d]|"
    folder.mkdir()
    out = tmp_path / name
    cmd = [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=s=64x48:r=25:d=4", "-map", "0:v:0",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", *keyframe_args(), *tee_output(str(out), SegmentPlan(str(folder),
                                                                                                         4.0))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert out.stat().st_size > 0 and len(finished_segments(str(folder))) == 5  # 0.5, 0.5, 1, 1, 1 s


def test_a_live_segment_holds_its_frames_and_their_sound(tmp_path):
    """What the compatible live mode hands Gradio's streamed video: half a second of frames with their audio."""
    from lipsync import write_live_segment

    frames = [np.full((101, 130, 3), 10 * i, np.uint8) for i in range(12)]  # odd sides are padded
    path = write_live_segment(frames, 0.3 * np.sin(np.arange(12 * 640) / 10).astype(np.float32), 25.0,
                              str(tmp_path / "live.ts"))
    assert decoded(path).size == 12 * 130 * 102  # every frame, at the padded size
    sound = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", path, "-map", "0:a:0", "-f", "s16le", "-ac", "1",
                            "-ar", "16000", "-"], capture_output=True, check=True).stdout
    assert abs(len(sound) // 2 - 12 * 640) < 2048  # its sound, within an AAC frame or two
