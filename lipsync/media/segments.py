"""Short MPEG-TS segments, for players that play a video while it is made: a job's streamed result and live output.

A job's streamed result costs no second encode: the one H.264 stream the job encodes goes
through ffmpeg's tee muxer both into the MP4 and, cut at its keyframes, into segments.
Every job writes its MP4 this same way, streamed or not, so the file a streamed job leaves
is byte for byte the one an ordinary job writes. The keyframes are forced at 1 s, 3 s,
5 s, …: a first segment of one second plays soon, later ones of two seconds keep the
player's requests few (a segment holds no frame past its keyframes, so the keyframe
spacing is the segment length).

`stream_job` runs a job on a thread and hands out what a page needs, in order: progress,
each segment as soon as ffmpeg closes it, then the job's result. Closing the iterator
(a visitor who left) stops the job at its next progress report.
"""

from __future__ import annotations

import os
import queue
import subprocess
import tempfile
import threading
import wave
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator, Union

import numpy as np

from ..errors import LipSyncError
from . import ffmpeg

# Segment boundaries, seconds into the video: 0.5, 1, 2, 3, 4, ... The first is short, so a player has something to
# play soon; the rest are a second each, so whoever hands them on can join as many as suits it (the web app joins
# them into chunks that grow with the player's lead: webapp.stream.ChunkPacer).
LIST_NAME = "segments.csv"
POLL_SECONDS = 0.1  # how often a streaming job looks for a new segment when the job reports nothing


def boundary(n: int) -> float:
    """The n-th segment boundary (n >= 1): 0.5, 1, 2, 3, 4, ..."""
    return 0.5 * n if n <= 2 else float(n - 1)


def keyframe_args() -> list[str]:
    """ffmpeg output options that put a keyframe at 0 and at every segment boundary: `boundary` as an ffmpeg
    expression of n_forced, the keyframes forced so far (frame 0 is the first); a test checks they agree."""
    return ["-force_key_frames", "expr:gte(t,if(lte(n_forced,2),0.5*n_forced,n_forced-1))"]


def segment_times(seconds: float) -> list[float]:
    """Where segments end, within a video of `seconds`."""
    times, n = [], 1
    while boundary(n) < seconds:
        times.append(boundary(n))
        n += 1
    return times


@dataclass(frozen=True)
class SegmentPlan:
    """Segments of a job's output: the folder they go to and the video's length (for the cut points)."""

    folder: str
    seconds: float

    @property
    def list_path(self) -> str:
        return os.path.join(self.folder, LIST_NAME)


def _escape(text: str, special: str) -> str:
    for char in "\\" + special.replace("\\", ""):
        text = text.replace(char, "\\" + char)
    return text


def _slave(options: dict[str, str], filename: str) -> str:
    """One output of the tee muxer. Its list is unescaped once (\\ ' | are special), then each option value a
    second time (\\ ' : ] are special there); the file name after the options is taken as it is."""
    spec = ":".join(key + "=" + _escape(value, ":]'") for key, value in options.items())
    return _escape(f"[{spec}]{filename}", "|'")


def tee_output(mp4: str, plan: SegmentPlan | None) -> list[str]:
    """The output part of an encoder's command: the MP4 (fast start), and the segments when `plan` asks."""
    slaves = [_slave({"f": "mp4", "movflags": "+faststart"}, mp4)]
    if plan is not None:
        cuts = ",".join(f"{t:g}" for t in segment_times(plan.seconds)) or f"{plan.seconds + 1:g}"
        pattern = os.path.join(plan.folder.replace("%", "%%"), "part%05d.ts")  # the segment muxer's own pattern
        slaves.append(_slave({"f": "segment", "segment_format": "mpegts", "segment_times": cuts,
                              "segment_list_type": "csv", "segment_list": plan.list_path}, pattern))
    return ["-f", "tee", "|".join(slaves)]


def finished_segments(folder: str) -> list[str]:
    """The segments ffmpeg has closed so far in `folder`, in order (it lists each one once it is complete)."""
    return [path for path, _, _ in segment_spans(folder)]


def segment_spans(folder: str) -> list[tuple[str, float, float]]:
    """(path, start, end in seconds) of each segment ffmpeg has closed so far in `folder`, in order."""
    try:
        with open(os.path.join(folder, LIST_NAME), encoding="utf-8") as listing:
            rows = [line.split(",") for line in listing.read().splitlines() if line.strip()]
    except FileNotFoundError:
        return []
    return [(os.path.join(folder, name), float(start), float(end)) for name, start, end, *_ in rows]


@dataclass(frozen=True)
class Progress:
    stage: str
    done: int
    total: int


Event = Union[Progress, str, object]  # a progress report, a finished segment's path, or (last) the job's result


class Stopped(LipSyncError):
    """The streamed job was stopped because nobody reads it any more."""


def stream_job(job: Callable[[Callable[[str, int, int], None]], object], folder: str) -> Iterator[Event]:
    """Run `job(progress)` on a thread; yield its progress, each segment it finishes in `folder`, then its result.

    The job's own errors are raised here. Closing this iterator stops the job at its next progress report.
    """
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    outcome: dict[str, object] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stop.is_set():
            raise Stopped("The streamed job was stopped: nobody is watching it any more.")
        events.put(Progress(stage, done, total))

    def work() -> None:
        try:
            outcome["result"] = job(report)
        except BaseException as err:  # raised in the reader's thread
            outcome["error"] = err
        events.put(None)

    thread = threading.Thread(target=work, name="lipsync-streamed-job", daemon=True)
    thread.start()
    sent = 0
    try:
        while True:
            try:
                event = events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                event = Progress("", -1, -1)  # nothing reported: only look for segments
            segments = finished_segments(folder)
            for path in segments[sent:]:
                yield path
            sent = len(segments)
            if event is None:
                break
            if event.done >= 0:
                yield event
        thread.join()
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        yield outcome["result"]
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()


def write_live_segment(frames: list[np.ndarray], audio: np.ndarray, fps: float, path: str,
                       sample_rate: int = 16000) -> str:
    """Encode frames and their audio (float mono) as one MPEG-TS segment that starts with a keyframe."""
    height, width = frames[0].shape[:2]
    even = ((0, height % 2), (0, width % 2), (0, 0))  # yuv420p needs even sides
    if height % 2 or width % 2:
        frames = [np.pad(f, even, mode="edge") for f in frames]
        height, width = height + height % 2, width + width % 2
    rate = Fraction(fps).limit_denominator(1001)
    with tempfile.NamedTemporaryFile(suffix=".wav", dir=os.path.dirname(path) or None) as wav:
        with wave.open(wav.name, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(sample_rate)
            out.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
        cmd = ffmpeg.command("-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}",
                             "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "-",
                             *ffmpeg.input_args(wav.name), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "libx264",
                             "-preset", "ultrafast", "-tune", "zerolatency", "-crf", "23", "-pix_fmt", "yuv420p",
                             "-g", str(len(frames)), "-c:a", "aac", "-b:a", "96k", "-f", "mpegts", path)
        with tempfile.TemporaryFile() as errors:  # a file, not a pipe: ffmpeg never waits on us to read it
            proc = ffmpeg.popen(cmd, stdin=subprocess.PIPE, stderr=errors)
            try:  # through the watchdog's writer: a stalled ffmpeg is stopped
                for frame in frames:
                    proc.stdin.write(np.ascontiguousarray(frame).tobytes())
                proc.stdin.close()
                proc.wait()
            finally:
                ffmpeg.stop(proc)
            errors.seek(0)
            if proc.returncode != 0:
                raise LipSyncError(f"Encoding a live segment failed ({ffmpeg.failure(proc, errors.read())}).")
    return path
