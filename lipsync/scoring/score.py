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
from collections.abc import Generator, Sequence

import numpy as np

from ..errors import LipSyncError
from ..media.probe import MediaInfo, probe_media
from ..results import SyncScore
from .backends import load_syncnet
from .crops import CROP_SCALE, crop_face, crop_whole, smooth_track
from .inputs import expected_frames, face_boxes, fill_gaps, frames_at_25, read_pcm16
from .windows import Embedder, Progress, evaluate

CROPS = ("face", "none")


def face_crops(info: MediaInfo, boxes: np.ndarray,
               crop_scale: float = CROP_SCALE) -> Generator[np.ndarray, None, None]:
    """The official 224x224 face crops of the clip at 25 fps, one per box, streamed."""
    track = smooth_track(boxes)
    for index, frame in enumerate(frames_at_25(info)):
        if index >= len(track):
            return
        yield crop_face(frame, track.size[index], track.x[index], track.y[index], crop_scale)


def probe_clip(video: str, audio: str | None = None) -> tuple[MediaInfo, MediaInfo]:
    """The clip and the sound to score it against, from their headers; one sentence when there is nothing to score
    (checked before any weights are fetched)."""
    info = probe_media(video)
    if info.is_image or not info.has_video:
        raise LipSyncError(f"'{video}' is not a video: lip sync is scored on a clip of a talking face.")
    sound = probe_media(audio) if audio else info
    if not sound.has_audio:
        raise LipSyncError(f"'{sound.path}' has no sound to score the lips against. Give the audio file as well.")
    return info, sound


def score_video(video: str, audio: str | None = None, *, weights: str | None = None, crop: str = "face",
                vshift: int = 15, device: str = "cpu", detector: str = "auto", network: Embedder | None = None,
                batch_size: int = 0, download: bool = True, progress: Progress | None = None,
                boxes: Sequence[Sequence[float] | None] | None = None, boxes_from: str = "",
                probed: tuple[MediaInfo, MediaInfo] | None = None) -> SyncScore:
    """SyncNet's AV offset, LSE-D and LSE-C for `video`, against its own sound or the file `audio`.

    `crop` 'face' crops the face as the official evaluation does (found by `detector`, as the sync
    jobs find it); 'none' scores the whole frame (a clip that is already a face crop). `vshift`: the
    offsets searched each way, in frames (the official run_syncnet's default, 15). `network`: a
    SyncNet loaded once by load_syncnet (then `weights`, `device` and `batch_size` are its own);
    else one is loaded from `weights` (None: found or downloaded) on `device`. `boxes`: with crop 'face',
    the face box (x1, y1, x2, y2, or None where unknown) of each 25 fps frame, when the caller knows them
    (a sync job's own track, lipsync.scoring.job): no detector runs then; `boxes_from` says where they came from.
    `probed`: probe_clip's answer for these files, when the caller has it already. Raises LipSyncError with one
    sentence for a clip it cannot score.
    """
    if crop not in CROPS:
        raise LipSyncError(f"Unknown crop '{crop}' for scoring. Choose one of: {', '.join(CROPS)}.")
    if vshift < 0:
        raise LipSyncError(f"vshift must be 0 or more frames, not {vshift}.")
    progress = progress or (lambda stage, done, total: None)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    info, sound = probed or probe_clip(video, audio)
    pcm = read_pcm16(sound.path)
    t = time.perf_counter()
    if network is None:
        network = load_syncnet(weights, device, batch_size=batch_size, download=download)
    seconds["load"] = time.perf_counter() - t
    chosen, missing = "", 0
    t = time.perf_counter()
    if crop == "face" and boxes is not None:
        known, missing = fill_gaps([None if box is None else np.asarray(box, np.float64) for box in boxes])
        chosen = boxes_from or "boxes given"
        crops: Generator[np.ndarray, None, None] = face_crops(info, known)
    elif crop == "face":
        from ..faces.detectors import get_detector
        from ..runtime.devices import resolve_device

        choice = get_detector(detector, resolve_device(device), allow_download=download)
        found, missing = face_boxes(info, choice.detector, progress)
        chosen = f"{choice.name} ({choice.reason})"
        crops = face_crops(info, found)
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
