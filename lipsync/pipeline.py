"""The stages wired together: audio -> mel windows, frames -> face crops -> model -> paste -> MP4.

Two passes over the face video keep memory flat: the first decodes the frames the
output will use and detects faces (keeping only boxes), the second decodes them again,
runs the generator batch by batch and streams the blended frames into the encoder.
Frames loop (i mod n) when the audio outlasts the video, and the video is cut when
the audio is shorter, exactly as in the official inference.py.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator, Optional, Sequence, TypeVar

import cv2
import numpy as np
import torch

from . import audio as audio_mod
from . import cache
from .blend import BLEND_MODES, paste
from .errors import LipSyncError
from .faces import Crop, FaceDetector, crops_from_detections, make_detector
from .model import IMG_SIZE, Wav2Lip
from .video import MediaInfo, VideoWriter, probe_media, read_frames, read_image

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)
T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    """Everything that shapes one job; the CLI flags and the app's controls map onto these fields."""

    static: bool = False  # use only the first frame of the face video
    fps: float = 25.0  # frame rate of the output when the face is a photo
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)  # top, bottom, left, right (pixels)
    face_det_batch_size: int = 16
    wav2lip_batch_size: int = 128
    resize_factor: int = 1  # divide width and height by this before anything else
    crop: tuple[int, int, int, int] = (0, -1, 0, -1)  # top, bottom, left, right; -1 = to the edge
    box: tuple[int, int, int, int] = (-1, -1, -1, -1)  # fixed face box top, bottom, left, right; -1 = detect
    rotate: bool = False  # turn frames 90 degrees clockwise
    nosmooth: bool = False  # do not average boxes over 5 frames
    blend: str = "box"
    detector: str = "auto"
    max_seconds: float = 0.0  # refuse audio longer than this (0 = no limit); the app sets one
    allow_silence: bool = False  # sync silent audio anyway (a closed, still mouth)

    def validate(self) -> None:
        if self.blend not in BLEND_MODES:
            raise LipSyncError(f"Unknown blend mode '{self.blend}'. Choose one of: {', '.join(BLEND_MODES)}.")
        if self.resize_factor < 1:
            raise LipSyncError("--resize_factor must be 1 or more (2 halves the width and height).")
        if self.fps <= 0:
            raise LipSyncError("--fps must be a positive number of frames per second, e.g. 25.")
        if self.face_det_batch_size < 1 or self.wav2lip_batch_size < 1:
            raise LipSyncError("Batch sizes must be 1 or more.")
        if len(self.pads) != 4 or len(self.crop) != 4 or len(self.box) != 4:
            raise LipSyncError("--pads, --crop and --box each take four numbers: top bottom left right.")

    @property
    def fixed_box(self) -> bool:
        return self.box[0] != -1


@dataclass
class SyncResult:
    """What a job produced, for the CLI's summary line and the app's stats."""

    outfile: str
    frames: int
    frames_without_face: int
    detector: str
    device: str
    fps: float
    width: int
    height: int
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        return (f"{self.frames} frames ({self.frames / self.fps:.1f} s at {self.fps:.3f} fps, {self.width}x{self.height}), "
                f"{self.frames_without_face} without a face; detector {self.detector}; device {self.device}; {stages}")


def resolve_device(name: str = "auto") -> str:
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise LipSyncError("--device cuda was asked for but no CUDA GPU is available. Use --device auto or cpu.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LipSyncError("--device mps was asked for but Apple's MPS is not available. Use --device auto or cpu.")
    if name not in ("cpu", "cuda", "mps"):
        raise LipSyncError(f"Unknown device '{name}'. Choose auto, cuda, cpu or mps.")
    return name


class StageTimes:
    """Seconds each stage was busy, summed over threads: with overlap they add up to more than the wall time."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def timed(self, stage: str, items: Iterable[T]) -> Iterator[T]:
        """Iterate `items`, charging the time spent producing each one to `stage`."""
        iterator = iter(items)
        try:
            while True:
                start = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                finally:
                    self.add(stage, time.perf_counter() - start)
                yield item
        finally:
            close = getattr(iterator, "close", None)
            if close:
                close()


FRAME_BUDGET_BYTES = int(float(os.environ.get("LIPSYNC_FRAME_BUDGET_MB", "256")) * 2**20)  # frames held at once


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """Iterate `items` on a background thread, `depth` ahead, so decoding overlaps the work on each item."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as err:  # handed to the consumer, raised there
            q.put(err)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)
        close = getattr(items, "close", None)
        if close:
            close()


def frames_per_batch(options: Options, height: int, width: int) -> int:
    """The model batch, capped so the full frames waiting for their faces stay within FRAME_BUDGET_BYTES.

    The batch size does not change the output (batch norm runs in eval mode); the cap keeps
    peak memory the same for a 1080p or a 4K clip as for a 720p one.
    """
    return max(1, min(options.wav2lip_batch_size, FRAME_BUDGET_BYTES // (height * width * 3)))


class FaceSource:
    """The face input as a re-readable stream of prepared frames (resized, rotated, cropped)."""

    def __init__(self, info: MediaInfo, options: Options, timings: StageTimes | None = None) -> None:
        self.info = info
        self.options = options
        self.timings = timings or StageTimes()
        self._still = self.prepare(read_image(info.path)) if info.is_image else None
        self.count: Optional[int] = 1 if info.is_image else None  # known once the stream has ended

    @property
    def static(self) -> bool:
        return self.info.is_image or self.options.static

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        o = self.options
        if o.resize_factor > 1:
            frame = cv2.resize(frame, (frame.shape[1] // o.resize_factor, frame.shape[0] // o.resize_factor))
        if o.rotate:
            frame = cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE)
        y1, y2, x1, x2 = o.crop
        if (y1, y2, x1, x2) != (0, -1, 0, -1):
            y2 = frame.shape[0] if y2 == -1 else y2
            x2 = frame.shape[1] if x2 == -1 else x2
            if not (0 <= y1 < y2 <= frame.shape[0] and 0 <= x1 < x2 <= frame.shape[1]):
                raise LipSyncError(f"--crop {' '.join(map(str, o.crop))} lies outside the {frame.shape[1]}x"
                                   f"{frame.shape[0]} frame (after resize/rotate). Give top bottom left right inside it.")
            frame = np.ascontiguousarray(frame[y1:y2, x1:x2])
        return frame

    def frames(self) -> Iterator[np.ndarray]:
        """One pass over the frames, from the first."""
        if self._still is not None:
            yield self._still.copy()
            return
        n = 0
        for frame in self.timings.timed("decode", read_frames(self.info)):
            yield self.prepare(frame)
            n += 1
            if self.options.static:
                break
        if n == 0:
            raise LipSyncError(f"No frame could be decoded from '{self.info.path}'. Re-export the video and try again.")
        if not self.options.static:
            self.count = n

    def looped(self, total: int) -> Iterator[tuple[int, np.ndarray]]:
        """(frame index, frame) for `total` output frames: frames repeat when the audio is longer."""
        produced = 0
        if self.static:
            first = next(self.frames())
            while produced < total:
                yield 0, first.copy()
                produced += 1
            return
        while produced < total:
            for index, frame in enumerate(self.frames()):
                yield index, frame
                produced += 1
                if produced == total:
                    return

    def head(self, limit: int) -> Iterator[np.ndarray]:
        """The first `limit` frames (one when static): those the output will use."""
        for i, frame in enumerate(self.frames()):
            if i >= limit:
                return
            yield frame


def detect_crops(source: FaceSource, n_out: int, options: Options, detector: FaceDetector,
                 progress: ProgressCallback) -> tuple[list[Crop | None], tuple[int, int], bool]:
    """Crop boxes for each distinct frame the output uses, the prepared frame size, and whether the cache served."""
    limit = 1 if source.static else n_out
    key = cache.cache_key(source.info.path, detector.name, options.resize_factor, options.rotate, options.crop,
                          source.static)
    hit = cache.load(key, limit)
    if hit is not None:
        detections, size = hit
        progress("Detecting faces (cached)", len(detections), len(detections))
    else:
        detections, size = _detect_all(source, limit, options, detector, progress)
        cache.store(key, detections, size, complete=len(detections) < limit)
    crops = crops_from_detections(detections, options.pads, size[0], size[1], smooth=not options.nosmooth)
    return crops, size, hit is not None


def _detect_all(source: FaceSource, limit: int, options: Options, detector: FaceDetector,
                progress: ProgressCallback) -> tuple[list, tuple[int, int]]:
    estimate = 1 if source.static else min(limit, max(1, round(source.info.duration * source.info.fps)))
    detections: list = []
    batch: list[np.ndarray] = []
    size = (0, 0)

    def detect(frames: list[np.ndarray]) -> list:
        start = time.perf_counter()
        found = detector.detect(frames)
        source.timings.add("detect", time.perf_counter() - start)
        return found

    for frame in prefetch(source.head(limit), options.face_det_batch_size):
        size = frame.shape[:2]
        batch.append(frame)
        if len(batch) == options.face_det_batch_size:
            detections += detect(batch)
            batch = []
            progress("Detecting faces", len(detections), max(estimate, len(detections)))
    if batch:
        detections += detect(batch)
    progress("Detecting faces", len(detections), len(detections))
    return detections, size


def fixed_crop(options: Options, height: int, width: int) -> Crop:
    y1, y2, x1, x2 = options.box
    if not (0 <= y1 < y2 <= height and 0 <= x1 < x2 <= width):
        raise LipSyncError(f"--box {' '.join(map(str, options.box))} is not inside the {width}x{height} frame. "
                           "Give top bottom left right with 0 <= top < bottom <= height and 0 <= left < right <= width.")
    return (y1, y2, x1, x2)


class Generator:
    """Runs the Wav2Lip model over batches of (face crop, mel window), on any device."""

    def __init__(self, model: Wav2Lip, device: str) -> None:
        self.model = model
        self.device = device

    @torch.inference_mode()
    def __call__(self, crops: np.ndarray, mels: np.ndarray) -> np.ndarray:
        """crops (B, 96, 96, 3) uint8 BGR, mels (B, 80, 16) -> (B, 96, 96, 3) uint8 BGR faces."""
        faces = torch.from_numpy(crops).to(self.device)
        masked = faces.clone()
        masked[:, IMG_SIZE // 2:] = 0
        x = torch.cat((masked, faces), dim=3).permute(0, 3, 1, 2).float() / 255.0
        m = torch.from_numpy(mels).to(self.device).unsqueeze(1)
        pred = self.model(m, x)
        return (pred.permute(0, 2, 3, 1) * 255.0).to(torch.uint8).cpu().numpy()


def synthesize(source: FaceSource, windows: np.ndarray, crops: Sequence[Crop | None] | Crop, options: Options,
               generator: Generator, writer: VideoWriter, progress: ProgressCallback) -> int:
    """Stream every output frame through the model into the encoder; returns the frames without a face."""
    n_out = len(windows)
    pending: list[tuple[np.ndarray, Optional[Crop], int]] = []  # frame, crop, window index
    no_face = 0

    timings = source.timings

    def flush() -> None:
        faced = [(f, c, w) for f, c, w in pending if c is not None]
        if faced:
            start = time.perf_counter()
            batch = np.stack([cv2.resize(f[c[0]:c[1], c[2]:c[3]], (IMG_SIZE, IMG_SIZE)) for f, c, _ in faced])
            timings.add("crop+blend", time.perf_counter() - start)
            start = time.perf_counter()
            faces = generator(batch, windows[[w for _, _, w in faced]])
            timings.add("generate", time.perf_counter() - start)
            start = time.perf_counter()
            for (frame, crop, _), face in zip(faced, faces):
                paste(options.blend, frame, face, crop)
            timings.add("crop+blend", time.perf_counter() - start)
        for frame, _, _ in pending:
            writer.write(frame)
        pending.clear()
        progress("Syncing lips", writer.frames_written, n_out)

    batch_size = 0
    for i, (index, frame) in enumerate(prefetch(source.looped(n_out), 8)):
        batch_size = batch_size or frames_per_batch(options, *frame.shape[:2])
        crop = crops if isinstance(crops, tuple) else crops[index]
        no_face += crop is None
        pending.append((frame, crop, i))
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    return no_face


def run(face: str, audio: str, outfile: str, model: Wav2Lip, device: str, options: Options = Options(),
        detector: FaceDetector | None = None, detector_note: str = "",
        progress: ProgressCallback | None = None) -> SyncResult:
    """Lip-sync `face` (video or photo) to `audio` and write `outfile`; see the module docstring."""
    options.validate()
    progress = progress or (lambda stage, done, total: None)
    timings = StageTimes()
    t0 = time.perf_counter()

    info = probe_media(face)
    if not info.has_video:
        raise LipSyncError(f"'{face}' has no picture (it looks like an audio file). Give a video or a photo "
                           "with a face as the face input.")
    progress("Reading audio", 0, 1)
    wav = audio_mod.load_audio(audio)
    audio_mod.check_audio(wav, audio, options.max_seconds, options.allow_silence)
    fps = options.fps if info.is_image else info.fps
    if not fps or fps <= 0:
        raise LipSyncError(f"Could not read the frame rate of '{face}'. Re-export it as MP4 and try again.")
    windows = audio_mod.mel_windows(audio_mod.melspectrogram(wav), fps)
    timings.add("audio", time.perf_counter() - t0)

    source = FaceSource(info, options, timings)
    t1 = time.perf_counter()
    if options.fixed_box:
        height, width = next(source.frames()).shape[:2]
        crops: Sequence[Crop | None] | Crop = fixed_crop(options, height, width)
        detector_name = "fixed box (--box)"
    else:
        if detector is None:
            detector, detector_note = make_detector(options.detector, device, options.face_det_batch_size)
        crops, (height, width), cached = detect_crops(source, len(windows), options, detector, progress)
        detector_name = (detector_note or detector.name) + (" [boxes from cache]" if cached else "")
    timings.add("detect pass", time.perf_counter() - t1)

    t2 = time.perf_counter()
    with VideoWriter(outfile, width, height, fps, audio) as writer:
        no_face = synthesize(source, windows, crops, options, Generator(model, device), writer, progress)
        progress("Encoding", 0, 1)
    progress("Encoding", 1, 1)
    timings.add("encode", writer.encode_seconds)
    timings.add("sync pass", time.perf_counter() - t2)
    timings.add("total", time.perf_counter() - t0)
    return SyncResult(outfile=outfile, frames=writer.frames_written, frames_without_face=no_face,
                      detector=detector_name, device=device, fps=fps, width=width, height=height,
                      seconds=timings.seconds)
