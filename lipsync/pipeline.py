"""The stages wired together: audio -> mel windows, frames -> face crops -> model -> paste -> MP4.

The face video is read by two decoders at once, so memory stays flat however long
the clip: a detection thread decodes frames and detects faces, keeping only the
boxes (a CropTrack); the synthesis loop decodes the same frames again a little
behind it, takes each frame's crop as soon as smoothing has settled it, runs the
generator batch by batch and streams the blended frames to the encoder, which runs
in its own process. Decoding, detection, generation and encoding thus all overlap.
Frames loop (i mod n) when the audio outlasts the video, and the video is cut when
the audio is shorter, exactly as in the official inference.py.
"""

from __future__ import annotations

import ctypes
import gc
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional, TypeVar

import cv2
import numpy as np
import torch

from . import audio as audio_mod
from . import cache
from .blend import BLEND_MODES, paste
from .errors import LipSyncError
from .faces import Crop, CropTrack, Detection, FaceDetector, make_detector
from .model import DEFAULT_BATCH, IMG_SIZE, PRECISIONS, Generator, Wav2Lip
from .video import MediaInfo, VideoWriter, choose_encoder, probe_media, read_frames, read_image

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)
T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    """Everything that shapes one job; the CLI flags and the app's controls map onto these fields."""

    static: bool = False  # use only the first frame of the face video
    fps: float = 25.0  # frame rate of the output when the face is a photo
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)  # top, bottom, left, right (pixels)
    face_det_batch_size: int = 16
    wav2lip_batch_size: int = 0  # faces per model call; 0 = the device's default (DEFAULT_BATCH)
    resize_factor: int = 1  # divide width and height by this before anything else
    crop: tuple[int, int, int, int] = (0, -1, 0, -1)  # top, bottom, left, right; -1 = to the edge
    box: tuple[int, int, int, int] = (-1, -1, -1, -1)  # fixed face box top, bottom, left, right; -1 = detect
    rotate: bool = False  # turn frames 90 degrees clockwise
    nosmooth: bool = False  # do not average boxes over 5 frames
    blend: str = "box"
    detector: str = "auto"
    max_seconds: float = 0.0  # refuse audio longer than this (0 = no limit); the app sets one
    allow_silence: bool = False  # sync silent audio anyway (a closed, still mouth)
    precision: str = "fp32"  # the generator's arithmetic: fp32 as the original, fp16/bf16 faster
    det_max_side: int = 0  # S3FD on frames shrunk to this longer side (0 = full resolution, as the original)
    max_side: int = 4096  # refuse frames larger than this (after --resize_factor); 0 = no limit
    encoder: str = "auto"  # H.264 encoder: libx264, h264_nvenc, or auto (NVENC on CUDA when it works)

    def validate(self) -> None:
        if self.blend not in BLEND_MODES:
            raise LipSyncError(f"Unknown blend mode '{self.blend}'. Choose one of: {', '.join(BLEND_MODES)}.")
        if self.resize_factor < 1:
            raise LipSyncError("--resize_factor must be 1 or more (2 halves the width and height).")
        if self.fps <= 0:
            raise LipSyncError("--fps must be a positive number of frames per second, e.g. 25.")
        if self.face_det_batch_size < 1 or self.wav2lip_batch_size < 0:
            raise LipSyncError("Batch sizes must be 1 or more.")
        if self.precision not in PRECISIONS:
            raise LipSyncError(f"Unknown precision '{self.precision}'. Choose one of: {', '.join(PRECISIONS)}.")
        if self.max_seconds < 0 or self.det_max_side < 0 or self.max_side < 0:
            raise LipSyncError("Limits (--max_seconds, --det_max_side, --max_side) must be 0 or more.")
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


FRAME_BUDGET_BYTES = int(float(os.environ.get("LIPSYNC_FRAME_BUDGET_MB", "256")) * 2**20)  # frames held per batch
QUEUE_FRAMES = 4  # frames decoded ahead of each consumer: enough to overlap, few enough to keep memory flat


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


def frames_in_budget(wanted: int, height: int, width: int) -> int:
    """`wanted` capped so that many full BGR frames stay within FRAME_BUDGET_BYTES (at least 1)."""
    return max(1, min(wanted, FRAME_BUDGET_BYTES // (height * width * 3)))


def frames_per_batch(options: Options, height: int, width: int, device: str = "cpu") -> int:
    """The model batch, capped so the full frames waiting for their faces stay within FRAME_BUDGET_BYTES.

    The batch size does not change the output (batch norm runs in eval mode); the cap keeps
    peak memory the same for a 1080p or a 4K clip as for a 720p one.
    """
    return frames_in_budget(options.wav2lip_batch_size or DEFAULT_BATCH.get(device.split(":")[0], 16), height, width)


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

    def first(self) -> np.ndarray:
        """The first prepared frame (its decoder is stopped straight after)."""
        frames = self.frames()
        try:
            return next(frames)
        finally:
            frames.close()

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


def release_memory(device: str) -> None:
    """Hand a finished job's memory back to the system, so a long-running server returns to its baseline.

    Frames and activations are freed when a job ends, but glibc keeps freed heap pages
    and CUDA keeps its cache; both are returned here.
    """
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to trim
        pass


def fixed_crop(options: Options, height: int, width: int) -> Crop:
    y1, y2, x1, x2 = options.box
    if not (0 <= y1 < y2 <= height and 0 <= x1 < x2 <= width):
        raise LipSyncError(f"The face box {' '.join(map(str, options.box))} (top bottom left right) is not inside the "
                           f"{width}x{height} frame. Give 0 <= top < bottom <= {height} and 0 <= left < right <= "
                           f"{width} (--box, or 'Fixed face box' in the app), in pixels after any resize.")
    return (y1, y2, x1, x2)


class FaceDetection:
    """Runs face detection on a thread of its own, feeding a CropTrack the synthesis loop reads.

    Detections are cached by the face file's content and the detection settings
    (lipsync.cache): a second run on the same clip skips this work entirely.
    """

    def __init__(self, source: FaceSource, n_frames: int, options: Options, detector: FaceDetector,
                 height: int, width: int) -> None:
        self.source, self.options, self.detector = source, options, detector
        self.limit = 1 if source.static else n_frames  # the distinct frames the output uses
        self.track = CropTrack(options.pads, height, width, smooth=not options.nosmooth)
        self.batch = frames_in_budget(detector.batch_size, height, width)
        self.key = cache.cache_key(source.info.path, detector.name, options.resize_factor, options.rotate,
                                   options.crop, source.static, options.det_max_side)
        self.cached = cache.load(self.key, self.limit)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> "FaceDetection":
        if self.cached is not None:
            self.track.add(self.cached)
            self.track.finish()
        else:
            self._thread = threading.Thread(target=self._work, name="lipsync-detect", daemon=True)
            self._thread.start()
        return self

    @property
    def expected(self) -> int:
        """How many frames detection will cover (an estimate until it ends)."""
        if self.track.finished:
            return len(self.track.detections)
        info = self.source.info
        return 1 if self.source.static else min(self.limit, max(1, round(info.duration * info.fps)))

    def _work(self) -> None:
        try:
            previous: Detection = None
            batch: list[np.ndarray] = []
            frames = prefetch(self.source.head(self.limit), QUEUE_FRAMES)
            try:
                for frame in frames:
                    batch.append(frame)
                    if len(batch) == self.batch:
                        previous = self._detect(batch, previous)
                        batch = []
                    if self._stop.is_set():
                        return
            finally:
                frames.close()
            if batch:
                self._detect(batch, previous)
            self.track.finish()
            cache.store(self.key, self.track.detections, complete=len(self.track.detections) < self.limit)
        except BaseException as err:  # handed to the synthesis loop, raised there
            self.track.fail(err)

    def _detect(self, frames: list[np.ndarray], previous: Detection) -> Detection:
        """Detect a batch; returns the last face found so far (the next batch's search hint)."""
        start = time.perf_counter()
        found = self.detector.detect(frames, previous)
        self.source.timings.add("detect", time.perf_counter() - start)
        self.track.add(found)
        return next((d for d in reversed(found) if d is not None), previous)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def crop_for(detection: FaceDetection, index: int, progress: ProgressCallback) -> Crop | None:
    """Frame `index`'s crop, reporting detection progress while it is not settled yet."""
    while True:
        try:
            return detection.track.crop(index, timeout=0.5)
        except TimeoutError:
            done = len(detection.track.detections)
            progress("Detecting faces", done, max(done, detection.expected))


def synthesize(source: FaceSource, windows: np.ndarray, crops: FaceDetection | Crop, options: Options,
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
    frames = prefetch(source.looped(n_out), QUEUE_FRAMES)
    try:
        for i, (index, frame) in enumerate(frames):
            batch_size = batch_size or frames_per_batch(options, *frame.shape[:2], device=generator.device)
            crop = crops if isinstance(crops, tuple) else crop_for(crops, index, progress)
            no_face += crop is None
            pending.append((frame, crop, i))
            if len(pending) == batch_size:
                flush()
        if pending:
            flush()
    finally:
        frames.close()
    return no_face


def check_frame_size(height: int, width: int, options: Options, face: str) -> None:
    if options.max_side and max(height, width) > options.max_side:
        factor = -(-max(height, width) // options.max_side)
        raise LipSyncError(f"'{face}' is {width}x{height}, larger than the limit of {options.max_side} px per side. "
                           f"Lower the resolution with the resize option (--resize_factor {factor}), or raise the "
                           "limit (--max_side, LIPSYNC_MAX_SIDE).")


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
    height, width = source.first().shape[:2]
    check_frame_size(height, width, options, face)
    generator = Generator(model, device, options.precision)
    encoder = choose_encoder(options.encoder, device)
    detection: FaceDetection | None = None
    if options.fixed_box:
        crops: FaceDetection | Crop = fixed_crop(options, height, width)
        detector_name = "fixed box (--box)"
    else:
        if detector is None:
            detector, detector_note = make_detector(options.detector, device, options.face_det_batch_size,
                                                    det_max_side=options.det_max_side)
        detection = crops = FaceDetection(source, len(windows), options, detector, height, width).start()
        detector_name = (detector_note or detector.name) + (" [boxes from cache]" if detection.cached else "")

    t1 = time.perf_counter()
    try:
        with VideoWriter(outfile, width, height, fps, audio, video_codec=encoder) as writer:
            no_face = synthesize(source, windows, crops, options, generator, writer, progress)
            progress("Encoding", 0, 1)
    finally:
        if detection is not None:
            detection.stop()
    progress("Encoding", 1, 1)
    timings.add("encode", writer.encode_seconds)
    timings.add("sync pass", time.perf_counter() - t1)
    timings.add("total", time.perf_counter() - t0)
    return SyncResult(outfile=outfile, frames=writer.frames_written, frames_without_face=no_face,
                      detector=detector_name, device=device, fps=fps, width=width, height=height,
                      seconds=timings.seconds)
