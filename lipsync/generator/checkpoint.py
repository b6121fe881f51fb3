"""The Wav2Lip generator's checkpoint: read by lipsync.weights.reader (no torch, no code run, memory bounded by the
generator's own size), its names and shapes checked against the generator's layout (lipsync.generator.layout)
before any weight is read. A file of another model is named as such.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import LipSyncError
from ..weights.reader import COUNTER, ROOT, Weights, read_tensors
from .layout import state_dict_shapes

WHAT = "the Wav2Lip generator"
USE_OFFICIAL = "Use wav2lip.pth or wav2lip_gan.pth (see weights/README.md)."
DOWNLOAD_AGAIN = "Download it again (the official files are about 436 MB); see weights/README.md."
SELECT = ("state_dict", ROOT)  # the official files' 'state_dict', or a bare state dict
OTHERS = {"face_encoder.": "a SyncNet (lip-sync expert) checkpoint"}  # the other network Wav2Lip's authors share


def read_state_dict(path: str) -> Weights:
    """The tensors of a checkpoint's `state_dict` (or of the file itself, when it is a bare state dict), by name,
    with any `module.` prefix removed, whatever their names (no layout). Raises LipSyncError with the sentence for
    each way a file can be wrong."""
    _exists(path)
    return read_tensors(path, None, select=SELECT, what=WHAT, hint=USE_OFFICIAL, redownload=DOWNLOAD_AGAIN)


def read_weights(path: str) -> Weights:
    """The Wav2Lip generator's weights from an official checkpoint (or one saved in float16, bfloat16 or as
    parameters: float32 all the same), every name and shape checked before any is read."""
    _exists(path)
    weights = read_tensors(path, state_dict_shapes(), select=SELECT, what=WHAT, hint=USE_OFFICIAL,
                           redownload=DOWNLOAD_AGAIN, others=OTHERS)
    _check_types(weights, path)
    return weights


def _exists(path: str) -> None:
    if not os.path.isfile(path):
        raise LipSyncError(f"Checkpoint not found: '{path}'. Check --checkpoint_path, or put wav2lip_gan.pth "
                           "in the weights/ folder (see weights/README.md).")


def _check_types(weights: Weights, path: str) -> None:
    """Floating-point weights (read as float32) and integer counters: an integer weight is another file."""
    integers = [name for name, array in weights.items() if array.dtype != np.float32 and not name.endswith(COUNTER)]
    if integers:
        raise LipSyncError(f"'{path}' is not {WHAT}: its weight '{integers[0]}' is stored as "
                           f"{weights[integers[0]].dtype}, not as floating point. {USE_OFFICIAL}")
