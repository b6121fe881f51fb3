"""Scoring a clip's lip sync as the Wav2Lip paper does: SyncNet's AV offset, LSE-D and LSE-C, and their timeline.

    score = score_video("result.mp4")              # weights found or downloaded, OpenVINO on a CPU
    score.offset, score.lse_d, score.lse_c        # frames (25 fps), lower is better, higher is better
    score.framewise                               # confidence per 0.2 s window, one per frame

Stages, each streamed: sound -> MFCC (lipsync.scoring.mfcc); frames at 25 fps ->
face boxes (the project's detector) -> official crops (lipsync.scoring.crops) -> SyncNet
windows and the offset search (lipsync.scoring.windows and .distances). The video is decoded twice with
crop='face' (once for the boxes, once for the crops), so memory never holds the clip.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from ..errors import LipSyncError
from ..media.probe import MediaInfo, probe_media
from .backends import load_syncnet
from .crops import CROP_SCALE, crop_face, crop_whole, smooth_track
from .inputs import FPS, expected_frames, face_boxes, frames_at_25, read_pcm16
from .windows import Embedder, Progress, evaluate

CROPS = ("face", "none")


@dataclass(frozen=True, eq=False)
class SyncScore:
    """SyncNet's verdict on one clip, and what produced it.

    `offset` is in 25 fps frames: positive when the sound comes that many frames before the
    lips that match it (the video is late), negative when after; 0 is in sync. LSE-D is the
    mean embedding distance at the best offset (lower is better; the Wav2Lip paper reports
    6.4 on LRS2), LSE-C the median distance over all offsets minus it (higher is better; 7.8
    there). `framewise[i]` is the confidence of the window of frames i .. i+4 (from i / 25 s).
    """

    offset: int
    lse_d: float
    lse_c: float
    frames: int  # windows scored: one per 25 fps frame, less the five the last window needs
    framewise: np.ndarray
    curve: np.ndarray  # curve[j]: the mean distance at offset vshift - j (j = 0: the sound earliest)
    vshift: int
    crop: str  # 'face' or 'none'
    backend: str  # what ran SyncNet, e.g. 'openvino (OpenVINO 2026.4.1 fp32, 2 threads, cached)'
    detector: str = ""  # with crop='face': the detector and why it was chosen
    frames_without_face: int = 0  # frames whose box was filled in from their neighbours
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage

    @property
    def offset_seconds(self) -> float:
        return self.offset / FPS

    def window_times(self) -> np.ndarray:
        """The start time (s) of each framewise window: the x axis of a sync timeline."""
        return np.arange(len(self.framewise)) / FPS

    def summary(self) -> str:
        return (f"AV offset {self.offset:+d} frames ({self.offset_seconds * 1000:+.0f} ms), LSE-D {self.lse_d:.3f}, "
                f"LSE-C {self.lse_c:.3f} over {self.frames} frames ({self.backend})")


def face_crops(info: MediaInfo, boxes: np.ndarray,
               crop_scale: float = CROP_SCALE) -> Generator[np.ndarray, None, None]:
    """The official 224x224 face crops of the clip at 25 fps, one per box, streamed."""
    track = smooth_track(boxes)
    for index, frame in enumerate(frames_at_25(info)):
        if index >= len(track):
            return
        yield crop_face(frame, track.size[index], track.x[index], track.y[index], crop_scale)


def score_video(video: str, audio: str | None = None, *, weights: str | None = None, crop: str = "face",
                vshift: int = 15, device: str = "cpu", detector: str = "auto", network: Embedder | None = None,
                batch_size: int = 0, download: bool = True, progress: Progress | None = None) -> SyncScore:
    """SyncNet's AV offset, LSE-D and LSE-C for `video`, against its own sound or the file `audio`.

    `crop` 'face' crops the face as the official evaluation does (found by `detector`, as the sync
    jobs find it); 'none' scores the whole frame (a clip that is already a face crop). `vshift`: the
    offsets searched each way, in frames (the official run_syncnet's default, 15). `network`: a
    SyncNet loaded once by load_syncnet (then `weights`, `device` and `batch_size` are its own);
    else one is loaded from `weights` (None: found or downloaded) on `device`.
    Raises LipSyncError with one sentence for a clip it cannot score.
    """
    if crop not in CROPS:
        raise LipSyncError(f"Unknown crop '{crop}' for scoring. Choose one of: {', '.join(CROPS)}.")
    if vshift < 0:
        raise LipSyncError(f"vshift must be 0 or more frames, not {vshift}.")
    progress = progress or (lambda stage, done, total: None)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    info = probe_media(video)
    if info.is_image or not info.has_video:
        raise LipSyncError(f"'{video}' is not a video: lip sync is scored on a clip of a talking face.")
    sound = probe_media(audio) if audio else info
    if not sound.has_audio:
        raise LipSyncError(f"'{sound.path}' has no sound to score the lips against. Give the audio file as well.")
    pcm = read_pcm16(sound.path)
    t = time.perf_counter()
    if network is None:
        network = load_syncnet(weights, device, batch_size=batch_size, download=download)
    seconds["load"] = time.perf_counter() - t
    chosen, missing = "", 0
    t = time.perf_counter()
    if crop == "face":
        from ..devices import resolve_device
        from ..faces.detectors import get_detector

        choice = get_detector(detector, resolve_device(device), allow_download=download)
        boxes, missing = face_boxes(info, choice.detector, progress)
        chosen = f"{choice.name} ({choice.reason})"
        crops: Generator[np.ndarray, None, None] = face_crops(info, boxes)
    else:
        crops = (crop_whole(frame) for frame in frames_at_25(info))
    seconds["detect"] = time.perf_counter() - t
    t = time.perf_counter()
    try:
        offsets, windows = evaluate(crops, pcm, network, vshift, progress, expected_frames(info))
    finally:
        crops.close()  # stops the decoder when the sound ended first
    seconds["score"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - started
    return SyncScore(offsets.offset, offsets.lse_d, offsets.lse_c, windows, offsets.framewise, offsets.curve, vshift,
                     crop, network.label, chosen, missing, seconds)
