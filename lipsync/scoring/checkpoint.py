"""Reading syncnet_v2.model into numpy arrays (no torch, no code run from the file) and checking its layout.

The release file is a bare state dict saved by an old torch (no `num_batches_tracked`
counters: they are optional here, and zero when absent, as they do not enter an
evaluation-mode forward). The bytes are read by the project's one safe checkpoint reader
(lipsync.weights.reader); what is SyncNet's own (the names and shapes, the sentences) is here.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import LipSyncError
from ..weights.locate import SYNCNET_SIZE, SYNCNET_URL
from ..weights.reader import Weights, read_tensors
from .layout import COUNTER, state_dict_shapes

ADVICE = f"Use the official syncnet_v2.model ({SYNCNET_SIZE:,} bytes, from {SYNCNET_URL})."
WAV2LIP = "a Wav2Lip checkpoint (its generator or lip-sync expert), not SyncNet"
OTHERS = {"face_encoder": WAV2LIP, "audio_encoder": WAV2LIP}  # Wav2Lip's names (SyncNet's are netcnnaud, ...)


def read_syncnet_weights(path: str) -> Weights:
    """SyncNet's weights by state-dict name (float32; counters int64, filled in when the file lacks them), every
    name and shape checked against the layout before any weight is read (lipsync.weights.reader: no torch, no code
    run, memory bounded by the weights' own size). Raises LipSyncError with one sentence and the fix."""
    if not os.path.isfile(path):
        raise LipSyncError(f"The SyncNet weights '{path}' do not exist. {ADVICE}")
    shapes = state_dict_shapes()
    state = read_tensors(path, shapes, what="SyncNet", hint=ADVICE, others=OTHERS,
                         optional=[name for name in shapes if name.endswith(COUNTER)])
    for name, shape in shapes.items():
        if name.endswith(COUNTER) and name not in state:
            state[name] = np.zeros(shape, np.int64)
    return state
