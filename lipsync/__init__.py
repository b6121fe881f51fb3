"""lipsync: make the lips of a person in a video or photo follow any audio, with Wav2Lip.

The API loads the model once and syncs many clips:

    from lipsync import LipSync, Options
    engine = LipSync()                      # finds or downloads wav2lip_gan.pth
    result = engine.sync("face.mp4", "speech.wav", "out.mp4",
                         options=Options(pads=(0, 20, 0, 0)),
                         progress=lambda stage, done, total: print(stage, done, total))
    print(result.summary())

Names are imported on first use, so `import lipsync` (and `python -m lipsync --help`)
stays quick: torch, librosa and the detectors load only when a job needs them.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# Idle OpenMP threads in torch spin by default, burning the cores that decoding, detection and encoding need
# at the same time: on 2 CPU cores the whole pipeline ran at 0.55 of the model's own speed that way, 0.68 with
# them sleeping (bench/RESULTS.md). Read when torch loads, so set before it is imported; a user's choice stands.
# This is the one place it is set: the app and the benchmark import lipsync before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import LipSyncError  # noqa: E402  (light: no third-party import)

_EXPORTS = {
    "LipSync": "engine", "shared_engine": "engine", "face_preview": "engine", "display_copy": "engine",
    "fetch_weights": "engine", "FetchedWeights": "engine", "gpu_seconds": "engine", "check_inputs": "engine", "face_scan": "engine",
    "default_enhance": "engine", "enhance_seconds": "engine", "probe_media": "probe",
    "Options": "options", "EngineOptions": "options", "server_limits": "options", "flat_settings": "options",
    "DEVICES": "options",
    "SyncResult": "results", "FacePreview": "preview", "draw_boxes": "preview", "face_timeline": "timeline",
    "Box": "geometry", "load_model": "generator", "resolve_checkpoint": "weights",
    "available_checkpoints": "weights", "prune_detection_cache": "cache", "replacing": "atomic", "CHECKPOINTS": "weights", "DEFAULT_CHECKPOINT": "weights",
    "run_batch": "batch", "load_manifest": "batch_manifest", "BatchReport": "batch_report", "JobResult": "batch_report",
    "Job": "batch_manifest",
    "Avatar": "avatar", "LiveSession": "live", "LiveFrame": "live", "Ended": "live", "read_microphone_piece": "wire", "Progress": "segments",
    "write_live_segment": "segments", "live_hello": "wire", "live_refusal": "wire", "live_frame_message": "wire",
    "live_microphone": "wire",
}

__all__ = ["LipSyncError", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lipsync' has no attribute '{name}'")
