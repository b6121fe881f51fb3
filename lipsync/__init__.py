"""lipsync: make the lips of a person in a video or photo follow any audio, with Wav2Lip.

The API loads the model once and syncs many clips:

    from lipsync import LipSync, Options
    engine = LipSync()                      # finds or downloads wav2lip_gan.pth
    result = engine.sync("face.mp4", "speech.wav", "out.mp4",
                         options=Options(pads=(0, 20, 0, 0)),
                         progress=lambda stage, done, total: print(stage, done, total))
    print(result.summary())

Names are imported on first use, so `import lipsync` (and `python -m lipsync --help`)
stays quick: torch, OpenVINO and the detectors load only when a job needs them. Type
checkers see every name through the TYPE_CHECKING imports below (the same table).
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# Idle OpenMP threads in torch spin by default, burning the cores that decoding, detection and encoding need
# at the same time: on 2 CPU cores the whole pipeline ran at 0.55 of the model's own speed that way, 0.68 with
# them sleeping (bench/RESULTS.md). Read when torch loads, so set before it is imported; a user's choice stands.
# This is the one place it is set: the app and the benchmark import lipsync before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import LipSyncError

# The public API: {module: the names it gives}. The web app, the CLI's users and the README use only these.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "engine": ("LipSync", "shared_engine", "face_preview", "face_scan", "display_copy", "fetch_weights",
               "FetchedWeights", "gpu_seconds", "check_inputs", "default_enhance", "enhance_seconds", "score_clip",
               "default_score", "score_seconds"),
    "options": ("Options", "EngineOptions", "server_limits", "flat_settings", "DEVICES"),
    "results": ("SyncResult", "SyncScore", "PAPER_LSE_C", "PAPER_LSE_D"),
    "scoring.timeline": ("sync_timeline", "SYNC_LEGEND"),
    "geometry": ("Box",),
    "weights.locate": ("resolve_checkpoint", "available_checkpoints", "CHECKPOINTS", "DEFAULT_CHECKPOINT"),
    "storage.atomic": ("replacing",),
    "environment": ("env_number",),
    "generator": ("load_model",),
    "media.probe": ("probe_media",),
    "media.segments": ("Progress", "write_live_segment", "segment_spans"),
    "faces.preview": ("FacePreview", "draw_boxes"),
    "faces.timeline": ("face_timeline",),
    "faces.cache": ("prune_detection_cache",),
    "batch.run": ("run_batch",),
    "batch.manifest": ("load_manifest", "Job"),
    "batch.report": ("BatchReport", "JobResult"),
    "live.avatar": ("Avatar",),
    "live.session": ("LiveSession", "LiveFrame", "Ended"),
    "live.messages": ("read_microphone_piece", "live_hello", "live_refusal", "live_frame_message",
                      "live_microphone"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["LipSyncError", *_WHERE]

if TYPE_CHECKING:  # what `__getattr__` gives, for type checkers and editors (tests/test_layout.py: the same names)
    from .batch.manifest import Job, load_manifest
    from .batch.report import BatchReport, JobResult
    from .batch.run import run_batch
    from .engine import (
        FetchedWeights,
        LipSync,
        check_inputs,
        default_enhance,
        default_score,
        display_copy,
        enhance_seconds,
        face_preview,
        face_scan,
        fetch_weights,
        gpu_seconds,
        score_clip,
        score_seconds,
        shared_engine,
    )
    from .environment import env_number
    from .faces.cache import prune_detection_cache
    from .faces.preview import FacePreview, draw_boxes
    from .faces.timeline import face_timeline
    from .generator import load_model
    from .geometry import Box
    from .live.avatar import Avatar
    from .live.messages import live_frame_message, live_hello, live_microphone, live_refusal, read_microphone_piece
    from .live.session import Ended, LiveFrame, LiveSession
    from .media.probe import probe_media
    from .media.segments import Progress, segment_spans, write_live_segment
    from .options import DEVICES, EngineOptions, Options, flat_settings, server_limits
    from .results import PAPER_LSE_C, PAPER_LSE_D, SyncResult, SyncScore
    from .scoring.timeline import SYNC_LEGEND, sync_timeline
    from .storage.atomic import replacing
    from .weights.locate import CHECKPOINTS, DEFAULT_CHECKPOINT, available_checkpoints, resolve_checkpoint


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lipsync' has no attribute '{name}'")
