"""The stages wired together: audio -> mel windows, frames -> face crops -> model -> paste -> MP4.

The face video is read by two decoders at once, so memory stays flat however long the
clip: the detection thread (lipsync.faces.crops) decodes frames and detects faces, keeping
only the boxes; the synthesis loop here decodes the same frames again a little behind
it, takes each frame's crop as soon as smoothing has settled it, runs the model batch
by batch and streams the blended frames to the encoder, which runs in its own process.
Decoding, detection, generation and encoding thus all overlap. Frames loop (i mod n)
when the audio outlasts the video, and the video is cut when the audio is shorter,
exactly as in the official inference.py.

This module only wires; each stage lives in the module named for it.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator, Optional

import cv2
import numpy as np

from .blend import pauses
from .blend.paste import paste
from .faces.crops import FaceDetection, output_boxes
from .faces.detectors import DetectorChoice
from .generator import LazyModel, ModelRunner
from .geometry import IMG_SIZE, Box
from .media import audio as audio_mod
from .media import limits
from .media.probe import probe_media
from .media.segments import SegmentPlan
from .media.source import FaceSource
from .media.video import VideoWriter, choose_encoder
from .options import Options
from .restore.enhance import MouthEnhancer
from .results import SyncResult
from .runtime.concurrency import QUEUE_FRAMES, prefetch
from .runtime.devices import model_batch
from .runtime.timings import StageTimes

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)
CropFor = Callable[[int], Optional[Box]]  # frame index -> its crop, or None without a face


Pending = tuple[np.ndarray, Optional[Box], int]  # frame, its crop (None: no face), mel window index
Generated = tuple[list[Pending], list[Pending], Optional[np.ndarray], Optional[list]]  # + faces, landmarks
GENERATED_AHEAD = 1  # batches the model thread may finish before the paste loop takes them


def synthesize(source: FaceSource, windows: np.ndarray, crop_for: CropFor, options: Options, runner: ModelRunner,
               writer: VideoWriter, timings: StageTimes, progress: ProgressCallback,
               weights: Optional[np.ndarray] = None, enhancer: Optional[MouthEnhancer] = None) -> list[bool]:
    """Stream every output frame through the model into the encoder; returns, per frame, whether it had a face.

    Three threads: decoding (prefetch), the model (collects a batch, crops it, runs the network) and this one
    (pastes and writes). While this thread pastes batch k and waits on the encoder's pipe, the model already
    runs batch k+1: the network, the slowest stage, never idles on the others.
    `weights` (per output frame, in [0, 1]; lipsync.blend.pauses) scale the paste; frames of weight 0 skip the model.
    With an `enhancer` (lipsync.restore.enhance) the model thread also finds each face's landmarks on the original
    frame, and this thread restores the mouth after the paste.
    """
    n_out = len(windows)
    faced: list[bool] = []
    batch_size = model_batch(options.wav2lip_batch_size, source.height, source.width, runner.device)

    def batches() -> Iterator[list[Pending]]:
        frames = prefetch(source.looped(n_out), QUEUE_FRAMES)
        try:
            pending: list[Pending] = []
            for i, (index, frame) in enumerate(frames):
                pending.append((frame, crop_for(index), i))
                if len(pending) == batch_size:
                    yield pending
                    pending = []
            if pending:
                yield pending
        finally:
            frames.close()

    def generate(pending: list[Pending]) -> Generated:
        with_face = [(f, c, w) for f, c, w in pending if c is not None and (weights is None or weights[w] > 0)]
        if not with_face:
            return pending, with_face, None, None
        with timings.stage("crop+blend"):
            crops = np.stack([cv2.resize(f[c.slices()], (IMG_SIZE, IMG_SIZE)) for f, c, _ in with_face])
        points = enhancer.landmarks([(w, f, c) for f, c, w in with_face]) if enhancer else None
        with timings.stage("generate"):
            return pending, with_face, runner(crops, windows[[w for _, _, w in with_face]]), points

    def generated() -> Iterator[Generated]:
        collected = batches()
        try:
            for pending in collected:
                yield generate(pending)
        finally:
            collected.close()

    results = prefetch(generated(), GENERATED_AHEAD)
    try:
        for pending, with_face, faces, points in results:
            if faces is not None:
                with timings.stage("crop+blend"):
                    for (frame, crop, w), face in zip(with_face, faces):
                        paste(options.blend, frame, face, crop, 1.0 if weights is None else float(weights[w]))
                if enhancer is not None:
                    enhancer.apply([(frame, crop, 1.0 if weights is None else float(weights[w]), p)
                                    for (frame, crop, w), p in zip(with_face, points)])
            for frame, crop, _ in pending:
                faced.append(crop is not None)
                writer.write(frame)
            progress("Syncing lips", writer.frames_written, n_out)
    finally:
        results.close()
    return faced


def run(face: str, audio: str, outfile: str, model: LazyModel, device: str, options: Options,
        detector: DetectorChoice | None, progress: ProgressCallback | None = None, restorer: object = None,
        enhance_note: str = "", segment_dir: str | None = None) -> SyncResult:
    """Lip-sync `face` (video or photo) to `audio` and write `outfile`; see the module docstring.

    `detector` may be None only with a fixed box (options.box). `restorer` (lipsync.restore.backends) enhances the
    mouth (options.enhance); `enhance_note` says why a wanted one is missing (the job runs without it). With
    `segment_dir`, the output also goes there in short segments as it is made (lipsync.media.segments).
    """
    progress = limits.with_deadline(progress or (lambda stage, done, total: None), options.time_limit)
    timings = StageTimes()
    t0 = time.perf_counter()

    info = probe_media(face)
    limits.check_face(info, options, face)
    progress("Reading audio", 0, 1)
    with timings.stage("audio"):
        wav = audio_mod.shift(audio_mod.load_audio(audio, options.max_seconds), options.audio_shift_ms / 1000)
        audio_mod.check_audio(wav, audio, options.max_seconds, options.allow_silence)
        fps = limits.job_fps(info, options)
        windows = audio_mod.mel_windows(audio_mod.melspectrogram(wav), fps)
        weights = pauses.frame_weights(wav, fps, len(windows)) if options.keep_silent_mouth else None
    limits.check_work(info, options, len(windows), face)

    source = FaceSource(info, options, timings)
    runner = ModelRunner(model, device, options.precision, options.backend)
    encoder = choose_encoder(options.encoder, device)
    enhancer = MouthEnhancer(restorer, options.enhance_strength, fps, timings) if restorer is not None else None
    fixed = options.fixed_box
    detection: FaceDetection | None = None
    if fixed is not None:
        limits.check_box(fixed, source.height, source.width)
        crop_for: CropFor = lambda index: fixed  # noqa: E731
    else:
        assert detector is not None, "a detector is needed unless the face box is fixed"
        detection = FaceDetection(source, len(windows), options, detector.detector, timings).start()
        crop_for = lambda index: detection.crop(index, progress)  # noqa: E731

    t1 = time.perf_counter()
    try:
        segments = SegmentPlan(segment_dir, len(windows) / fps) if segment_dir else None
        with VideoWriter(outfile, source.width, source.height, fps, audio, video_codec=encoder,
                         segments=segments, audio_shift=options.audio_shift_ms / 1000) as writer:
            faced = synthesize(source, windows, crop_for, options, runner, writer, timings, progress, weights,
                               enhancer)
            progress("Encoding", 0, 1)
    finally:
        if detection is not None:
            detection.stop()
    progress("Encoding", 1, 1)
    timings.add("encode", writer.encode_seconds)
    timings.add("sync pass", time.perf_counter() - t1)
    timings.add("total", time.perf_counter() - t0)
    return SyncResult(outfile=outfile, frames=writer.frames_written, frames_without_face=faced.count(False),
                      detector="fixed box" if fixed else detector.name,
                      detector_reason="--box" if fixed else detector.reason,
                      boxes_from_cache=bool(detection and detection.cached is not None), device=device, fps=fps,
                      width=source.width, height=source.height, seconds=timings.seconds, face_frames=faced,
                      backend=runner.backend_label,
                      frames_kept_in_pauses=0 if weights is None else int((weights == 0).sum()),
                      enhance=f"{options.enhance} at strength {options.enhance_strength:g}, {enhancer.label}"
                      if enhancer else "", enhance_problem=enhance_note,
                      frames_enhanced=enhancer.counts.restored if enhancer else 0,
                      frames_not_enhanced=dict(enhancer.counts.kept) if enhancer else {},
                      face_boxes=[tuple(fixed)] * len(faced) if fixed else output_boxes(detection, len(faced)),
                      audio_offset_ms=options.audio_shift_ms,
                      auto_offset=options.auto_offset)

