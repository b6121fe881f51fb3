"""lipsync: make the lips of a person in a video or photo follow any audio, with Wav2Lip.

The API loads the model once and syncs many clips:

    from lipsync import LipSync, Options
    engine = LipSync()                      # finds or downloads wav2lip_gan.pth
    result = engine.sync("face.mp4", "speech.wav", "out.mp4",
                         options=Options(pads=(0, 20, 0, 0)),
                         progress=lambda stage, done, total: print(stage, done, total))
    print(result.summary())
"""

from __future__ import annotations

import os

# Idle OpenMP threads in torch spin by default, burning the cores that decoding, detection and encoding need
# at the same time: on 2 CPU cores the whole pipeline ran at 0.55 of the model's own speed that way, 0.68 with
# them sleeping (bench/RESULTS.md). Read when torch loads, so set before it is imported; a user's choice stands.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import threading  # noqa: E402
from dataclasses import replace  # noqa: E402

from . import audio  # noqa: E402
from .errors import LipSyncError  # noqa: E402
from .faces import FaceDetector, make_detector  # noqa: E402
from .model import Wav2Lip, load_model  # noqa: E402
from .pipeline import Options, ProgressCallback, SyncResult, release_memory, resolve_device, run  # noqa: E402
from .weights import resolve_checkpoint  # noqa: E402

__all__ = ["LipSync", "LipSyncError", "Options", "SyncResult", "load_model", "resolve_checkpoint"]


class LipSync:
    """A loaded model (and its face detectors) ready to sync any number of clips."""

    def __init__(self, checkpoint: str | None = None, device: str = "auto", allow_download: bool = True) -> None:
        self.device = resolve_device(device)
        self.checkpoint_path = resolve_checkpoint(checkpoint, download=allow_download)
        warming = threading.Thread(target=audio.warm_up, name="lipsync-audio-warm-up", daemon=True)
        warming.start()  # overlaps librosa's one-off set-up with loading the checkpoint
        self.model: Wav2Lip = load_model(self.checkpoint_path, self.device)
        warming.join()
        self.allow_download = allow_download
        self._detectors: dict[tuple[str, int, int], tuple[FaceDetector, str]] = {}
        self._lock = threading.Lock()

    def detector(self, name: str = "auto", batch_size: int = 16, det_max_side: int = 0) -> tuple[FaceDetector, str]:
        """The face detector for `name`, built once and reused by later jobs (detectors keep no per-clip state)."""
        key = (name, batch_size, det_max_side)
        with self._lock:
            if key not in self._detectors:
                self._detectors[key] = make_detector(name, self.device, batch_size, self.allow_download,
                                                     det_max_side)
            return self._detectors[key]

    def sync(self, face: str, audio: str, outfile: str, options: Options | None = None,
             progress: ProgressCallback | None = None, **overrides) -> SyncResult:
        """Lip-sync one clip. `overrides` are Options fields, e.g. pads=(0, 20, 0, 0), blend='feather'."""
        options = replace(options or Options(), **overrides)
        options.validate()
        detector, note = (None, "") if options.fixed_box else self.detector(
            options.detector, options.face_det_batch_size, options.det_max_side)
        try:
            return run(face, audio, outfile, self.model, self.device, options, detector, note, progress)
        finally:
            release_memory(self.device)
