"""A stand-in for `google.colab.files`, behaving as Colab's does (googlecolab/colabtools, google/colab/files.py).

`upload()`: Colab shows a file picker and, once the person has chosen, saves each file into the
working folder (under a name made unique: "clip (1).mp4" when "clip.mp4" exists) and returns
{original name: bytes}; a cancelled picker returns {}. Here each call takes the next batch of
paths from $COLAB_STAND_IN_UPLOADS, a JSON list of lists (one list per call, [] = cancelled;
calls past the end are cancelled too).

`download(path)`: Colab sends the file to the browser; a missing file is FileNotFoundError.
Here the call is recorded as a JSON line {"download": absolute path, "bytes": size} in the file
named by $COLAB_STAND_IN_LOG.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

_calls = 0


def _unique(name: str) -> str:
    if not os.path.lexists(name):
        return name
    stem, ext = os.path.splitext(name)
    counter = 1
    while os.path.lexists(f"{stem} ({counter}){ext}"):
        counter += 1
    return f"{stem} ({counter}){ext}"


def upload() -> dict[str, bytes]:
    global _calls
    batches = json.loads(os.environ.get("COLAB_STAND_IN_UPLOADS", "[]"))
    batch = batches[_calls] if _calls < len(batches) else []
    _calls += 1
    uploaded = {}
    for path in batch:
        name, data = Path(path).name, Path(path).read_bytes()
        local = _unique(name)
        print(f"Saving {name} to {local}")
        with open(local, "ab") as f:
            f.write(data)
        uploaded[name] = data
    return uploaded


def download(filename: str) -> None:
    if not os.path.exists(filename):
        raise FileNotFoundError(f"Cannot find file: {filename}")
    log = os.environ.get("COLAB_STAND_IN_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"download": os.path.abspath(filename), "bytes": os.path.getsize(filename)}) + "\n")
