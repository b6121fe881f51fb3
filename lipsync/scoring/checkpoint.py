"""Reading syncnet_v2.model into numpy arrays (no torch, no code run from the file) and checking its layout.

The release file is a bare state dict saved by an old torch (no `num_batches_tracked`
counters: they are optional here, and zero when absent, as they do not enter an
evaluation-mode forward). The bytes are read by the project's safe checkpoint reader;
everything SyncNet-specific (what the names and shapes must be, what the user is told)
lives here, so that reader can be swapped without touching the rest.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import LipSyncError
from ..weights import SYNCNET_SIZE, SYNCNET_URL
from .layout import COUNTER, state_dict_shapes

Weights = dict[str, np.ndarray]
ADVICE = f"Use the official syncnet_v2.model ({SYNCNET_SIZE:,} bytes, from {SYNCNET_URL})."


def read_syncnet_weights(path: str) -> Weights:
    """SyncNet's weights by state-dict name (float32; counters int64, filled in when the file lacks them), every
    name and shape checked against the layout before use. Raises LipSyncError with one sentence and the fix."""
    if not os.path.isfile(path):
        raise LipSyncError(f"The SyncNet weights '{path}' do not exist. {ADVICE}")
    from ..generator.checkpoint import read_state_dict

    try:
        state = read_state_dict(path)
    except LipSyncError as err:  # its first sentence says what is wrong with the file; its advice is Wav2Lip's
        first = str(err).split(". ", 1)[0].rstrip(".")
        raise LipSyncError(f"{first}. {ADVICE}") from None
    check_layout(state, path)
    for name, shape in state_dict_shapes().items():
        if name.endswith(COUNTER) and name not in state:
            state[name] = np.zeros(shape, np.int64)
    return state


def layout_problems(state: Weights) -> tuple[list[str], list[str], list[str]]:
    """(missing, wrong shape or type, unexpected) names of `state` against SyncNet's layout."""
    expected = state_dict_shapes()
    missing = [k for k in expected if k not in state and not k.endswith(COUNTER)]
    wrong = [k for k in expected if k in state and (tuple(state[k].shape) != expected[k] or state[k].dtype !=
                                                    (np.int64 if k.endswith(COUNTER) else np.float32))]
    unexpected = [k for k in state if k not in expected]
    return missing, wrong, unexpected


def check_layout(state: Weights, path: str) -> None:
    """One clear sentence when `state` is not SyncNet's (a Wav2Lip checkpoint, another model, a damaged file)."""
    missing, wrong, unexpected = layout_problems(state)
    if not (missing or wrong or unexpected):
        return
    total = sum(1 for k in state_dict_shapes() if not k.endswith(COUNTER))
    wav2lip = any(k.startswith(("face_encoder", "audio_encoder")) for k in state)
    kind = "a Wav2Lip checkpoint (its generator or lip-sync expert), not SyncNet" if wav2lip else "not SyncNet"
    raise LipSyncError(f"'{path}' is {kind}: {len(missing)} of its {total} weights are missing, {len(wrong)} have the "
                       f"wrong shape and {len(unexpected)} are unknown. {ADVICE}")
