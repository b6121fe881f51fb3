"""Lip-sync scores as the Wav2Lip paper measures them: SyncNet's AV offset, LSE-D and LSE-C.

    layout.py      SyncNet's architecture as data: names and shapes of the release file's state dict
    checkpoint.py  reading syncnet_v2.model into numpy (no torch, no code run) and checking its layout
    network.py     the PyTorch module made from the layout (imports torch)
    graph.py       the OpenVINO graph built from the numpy weights, batch norms folded (no torch)
    backends.py    OpenVINO fp32 on a CPU (cached by the weights' SHA256), PyTorch on a GPU; load_syncnet
    mfcc.py        python_speech_features' MFCCs restated in numpy
    distances.py   the offset search, streamed; LSE-D, LSE-C, offset, framewise confidence
    windows.py     the official windows (5 frames, 20 MFCC steps), fed batch by batch
    crops.py       the official 224x224 face crops (boxes median-filtered over 13 frames, crop_scale 0.4)
    inputs.py      16 kHz int16 sound, frames at 25 fps, one face box per frame
    score.py       score_video (its result, SyncScore, lives in lipsync.results: a job's result holds one)
    job.py         a sync job's result scored on the job's own face track; --audio_offset auto's remux
    timeline.py    the sync timeline: the framewise confidence as a strip, one column per output frame
    cost.py        what a score costs, from the files' headers (the app's switch, ZeroGPU's request)

Importing this package imports neither torch nor OpenVINO.
"""

from __future__ import annotations

from ..results import SyncScore
from .backends import load_syncnet
from .distances import Offsets, summarise
from .mfcc import mfcc
from .score import score_video
from .windows import Embedder, evaluate

__all__ = ["Embedder", "Offsets", "SyncScore", "evaluate", "load_syncnet", "mfcc", "score_video", "summarise"]
