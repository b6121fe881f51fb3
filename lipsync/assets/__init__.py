"""Model files shipped inside the package (in this folder), each checked against its SHA256 before use.

Why bundled: MediaPipe's BlazeFace and face-mesh models are small (0.2-1.2 MB) and
Apache-2.0, and the only place they are published for offline use is the mediapipe
0.10.14 wheel, which pulls in ~480 MB of dependencies and pins protobuf below 5.
Shipping the three files lets the package run them without mediapipe (see
NOTICE beside this file for their source and licence).

Why checked: a truncated or altered file would not fail loudly; OpenVINO may read it
and give wrong boxes. A file is hashed once per process.
"""

from __future__ import annotations

import functools
from pathlib import Path

from ..errors import LipSyncError
from ..storage.files import sha256_file

ASSETS_DIR = Path(__file__).resolve().parent

SHA256 = {  # name -> SHA256 of the file as copied from the mediapipe 0.10.14 wheel
    "face_detection_short_range.tflite": "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    "face_detection_full_range_sparse.tflite": "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    "face_landmark.tflite": "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
}


@functools.lru_cache(maxsize=None)
def asset_path(name: str) -> Path:
    """The path of the bundled model `name`, after checking that it is there and intact."""
    if name not in SHA256:
        raise KeyError(f"{name!r} is not a bundled asset (known: {', '.join(SHA256)})")
    path = ASSETS_DIR / name
    if not path.is_file() or sha256_file(str(path)) != SHA256[name]:
        raise LipSyncError(f"The bundled model file {path} is {'damaged' if path.is_file() else 'missing'}; "
                           "reinstall the package (pip install --force-reinstall) to restore it.")
    return path
