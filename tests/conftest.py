"""Session-wide test data, made once: a random checkpoint in the official layout, clips, speech."""

from __future__ import annotations

import gc
import os
import sys
import tempfile
from pathlib import Path

import cv2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))  # the tests' helpers: media, ...
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# detections cached by the tests stay out of the user's cache (~/.cache/lipsync)
os.environ.setdefault("LIPSYNC_CACHE_DIR", tempfile.mkdtemp(prefix="lipsync-test-cache-"))
# and the app imported by the tests keeps its results and Gradio's temp files out of the machine's temp folder
os.environ.setdefault("LIPSYNC_OUTPUT_DIR", tempfile.mkdtemp(prefix="lipsync-test-output-"))

import media


def pytest_collection_finish(session) -> None:
    """Every test module is imported by now (torch, gradio, mediapipe, OpenVINO: hundreds of thousands of objects
    that live as long as the run). Frozen out of the garbage collector's view, so the gc.collect() that ends every
    job (lipsync.runtime.devices.release_memory) walks only what the tests made since: it cost 0.4 s a job, about
    21 s of the fast lane, before."""
    gc.freeze()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def checkpoint(data_dir) -> Path:
    return media.make_checkpoint(data_dir / "random_wav2lip.pth")


@pytest.fixture(scope="session")
def gfpgan_weights(data_dir) -> Path:
    """GFPGAN v1.4 with random weights in the release file's layout ({'params_ema': …}, ~350 MB), made once."""
    return media.make_gfpgan(data_dir / "random_gfpgan.pth")


@pytest.fixture(scope="session")
def syncnet_files(data_dir) -> dict[str, Path]:
    """SyncNet with random weights (syncnet_reference.random_syncnet) twice: in the release file's legacy format,
    without the batch-norm counters, and in torch's zip format with them (55 MB each), made once."""
    import syncnet_reference

    legacy, zipped = data_dir / "syncnet_legacy.model", data_dir / "syncnet_zip.model"
    syncnet_reference.save_random_syncnet(legacy, zipped)
    return {"legacy": legacy, "zip": zipped}


@pytest.fixture(scope="session")
def speech(data_dir) -> Path:
    return media.make_speech(data_dir / "speech.wav", seconds=1.0)


@pytest.fixture(scope="session")
def face_video(data_dir) -> Path:
    return media.make_face_video(data_dir / "face.mp4", seconds=1.2, fps=25)


@pytest.fixture(scope="session")
def face_photo(data_dir) -> Path:
    path = data_dir / "astronaut.jpg"
    cv2.imwrite(str(path), media.astronaut_bgr())
    return path


@pytest.fixture(scope="session")
def engine(checkpoint):
    from lipsync import LipSync

    return LipSync(str(checkpoint), device="cpu", allow_download=False)


@pytest.fixture(scope="module")
def web(checkpoint):
    """One web app server's parts (webapp.WebApp, not served): the random checkpoint is the server's own
    (LIPSYNC_CHECKPOINT, the page's "custom" choice), its files under the tests' output folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LIPSYNC_CHECKPOINT", str(checkpoint))
    from webapp import AppConfig, WebApp

    yield WebApp(AppConfig.from_environment())
    mp.undo()


@pytest.fixture
def captured(monkeypatch):
    """Frames handed to the encoder, in order (copies), while the file is still written for real."""
    from lipsync.media import video

    frames: list = []
    original = video.VideoWriter.write

    def write(self, frame):
        frames.append(frame.copy())
        original(self, frame)

    monkeypatch.setattr(video.VideoWriter, "write", write)
    return frames
