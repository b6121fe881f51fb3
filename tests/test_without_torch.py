"""The CPU install, without torch: checkpoints read, the OpenVINO model built from the weights, the same frames as
with torch, and one sentence wherever torch would be needed. Each test runs Python in a subprocess in which
`import torch` fails (sys.modules['torch'] = None), so nothing can lean on a torch imported by the test session."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import media
import numpy as np
import pytest
import torch

openvino = pytest.importorskip("openvino", reason="the CPU install runs the model on OpenVINO")
ROOT = Path(__file__).resolve().parents[1]
BLOCK_TORCH = "import sys\nsys.modules['torch'] = None  # `import torch` raises ImportError from here on\n"


def run_without_torch(script: str, tmp_path: Path, **env: str) -> dict:
    """Run `script` with torch unimportable; it prints one JSON line last, returned here."""
    environment = dict(os.environ, PYTHONPATH=str(ROOT), LIPSYNC_MODEL_CACHE=str(tmp_path / "model-cache"), **env)
    proc = subprocess.run([sys.executable, "-c", BLOCK_TORCH + script], capture_output=True, text=True,
                          env=environment, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


SAID = """
import json
from lipsync.errors import LipSyncError

def said(call):
    try:
        return call()
    except LipSyncError as err:
        return 'Error: ' + str(err)
"""


def test_checkpoints_are_read_without_torch(checkpoint, tmp_path):
    """Both formats, read with torch blocked, give torch.load's arrays (the SHA256 of every tensor's bytes)."""
    zipped = tmp_path / "zip.pth"
    torch.save({"state_dict": {"module.w": torch.randn(5, 3), "module.n": torch.tensor(4)}, "global_step": 3}, zipped)
    script = f"""
import hashlib, json
from lipsync.generator.checkpoint import read_state_dict, read_weights
legacy = read_weights({str(checkpoint)!r})
small = read_state_dict({str(zipped)!r})
print(json.dumps({{"legacy": {{k: [str(v.dtype), v.shape, hashlib.sha256(v.tobytes()).hexdigest()]
                             for k, v in legacy.items()}},
                  "zip": {{k: v.tolist() for k, v in small.items()}}}}))
"""
    got = run_without_torch(script, tmp_path)
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert got["legacy"] == {k.removeprefix("module."): [str(v.numpy().dtype), list(v.shape),
                                                         hashlib.sha256(v.numpy().tobytes()).hexdigest()]
                             for k, v in saved.items()}
    small = torch.load(zipped, weights_only=True)["state_dict"]
    assert got["zip"] == {k.removeprefix("module."): v.tolist() for k, v in small.items()}


def test_devices_without_torch(tmp_path):
    """auto is the CPU; a GPU asked for, an NVIDIA driver under auto, or S3FD, says what to install."""
    script = SAID + """
from lipsync.runtime import devices
devices.no_gpu_here = lambda: False  # as on a machine with some driver (or macOS): torch would be asked
devices.nvidia_driver_present = lambda: False
out = {"auto": said(lambda: devices.resolve_device("auto")), "cpu": said(lambda: devices.resolve_device("cpu")),
       "cuda": said(lambda: devices.resolve_device("cuda")), "mps": said(lambda: devices.resolve_device("mps"))}
devices.nvidia_driver_present = lambda: True
out["auto, NVIDIA driver"] = said(lambda: devices.resolve_device("auto"))
from lipsync.faces.detectors import make_detector
out["s3fd"] = said(lambda: make_detector("s3fd", "cpu", allow_download=False).name)
print(json.dumps(out))
"""
    got = run_without_torch(script, tmp_path)
    assert got["auto"] == got["cpu"] == "cpu"
    install = "needs PyTorch, which is not installed here. Install it with `pip install -r requirements-gpu.txt`"
    assert got["cuda"] == f"Error: --device cuda {install}, or use --device cpu."
    assert got["mps"] == f"Error: --device mps {install}, or use --device cpu."
    assert got["auto, NVIDIA driver"].startswith("Error: This machine has an NVIDIA GPU, and running on it " + install)
    assert got["s3fd"] == f"Error: The S3FD face detector {install}, or use --detector blazeface or haar."


def test_backends_without_torch_say_what_to_install(checkpoint, tmp_path):
    script = SAID + f"""
import sys
from lipsync.generator import LazyModel, ModelRunner, choice, openvino_backend
network = LazyModel({str(checkpoint)!r})
out = {{"pytorch": said(lambda: ModelRunner(network, "cpu", backend="pytorch").backend_label),
       "fp16 on cuda": said(lambda: choice.choose_backend(network, "cuda", "fp16").label)}}

def broken(*args, **kwargs):
    raise RuntimeError("simulated failure")

real = openvino_backend.load_openvino
openvino_backend.load_openvino = broken
out["openvino fails"] = said(lambda: choice.choose_backend(network, "cpu").label)
openvino_backend.load_openvino = real
runner = ModelRunner(network, "cpu")
out["auto"] = runner.backend_label
openvino_backend.OpenVINOBackend.infer = broken
import numpy as np
out["fails at inference"] = said(lambda: runner(np.zeros((2, 96, 96, 3), np.uint8), np.zeros((2, 80, 16), np.float32)))
sys.modules["openvino"] = None
out["neither"] = said(lambda: choice.choose_backend(LazyModel({str(checkpoint)!r}), "cpu").label)
print(json.dumps(out))
"""
    got = run_without_torch(script, tmp_path)
    install = "Install it with `pip install -r requirements-gpu.txt`"
    assert got["pytorch"] == (f"Error: --backend pytorch needs PyTorch, which is not installed here. {install}, or "
                              "use --backend auto (OpenVINO on a CPU).")
    assert got["fp16 on cuda"].startswith("Error: Running the model on cuda needs PyTorch")
    assert got["openvino fails"] == ("Error: OpenVINO could not run the model (RuntimeError: simulated failure), and "
                                     f"PyTorch, which would take over, is not installed. {install}.")
    assert got["auto"].startswith("openvino (OpenVINO") and got["auto"].endswith(
        "built now, not compared with PyTorch (not installed))"), got["auto"]
    assert got["fails at inference"].startswith("Error: OpenVINO failed at inference (RuntimeError: simulated")
    assert got["neither"].startswith("Error: Neither OpenVINO nor PyTorch is installed")


def test_cpu_job_without_torch_gives_the_frames_of_pytorch(checkpoint, face_photo, tmp_path, captured):
    """End to end with torch blocked and a cold model cache (photo + speech, fixed box): the OpenVINO model is built
    from the checkpoint, and every frame is within 1 level of the eager PyTorch job's."""
    speech = media.write_wav(tmp_path / "speech.wav", media.speech_samples(0.4, seed=4))
    box = (60, 250, 170, 330)
    frames_file = tmp_path / "frames.npy"
    script = f"""
import json, sys
import numpy as np
import lipsync
from lipsync.media import video
frames = []
write = video.VideoWriter.write
video.VideoWriter.write = lambda self, frame: frames.append(frame.copy()) or write(self, frame)
engine = lipsync.LipSync({str(checkpoint)!r}, device="auto", allow_download=False)
result = engine.sync({str(face_photo)!r}, {str(speech)!r}, {str(tmp_path / "lean.mp4")!r}, box={box!r})
np.save({str(frames_file)!r}, np.stack(frames))
print(json.dumps({{"device": engine.device, "backend": result.backend,
                  "torch": sorted(m for m, v in sys.modules.items() if m.split(".")[0] == "torch" and v)}}))
"""
    got = run_without_torch(script, tmp_path)
    assert got["device"] == "cpu" and got["torch"] == []
    assert "built now, not compared with PyTorch (not installed)" in got["backend"], got["backend"]
    lean = np.load(frames_file)
    from lipsync import LipSync

    LipSync(str(checkpoint), device="cpu", allow_download=False).sync(
        str(face_photo), str(speech), str(tmp_path / "torch.mp4"), box=box, backend="pytorch")
    reference = np.stack(captured)
    assert lean.shape == reference.shape and len(lean) >= 5
    top, bottom, left, right = box
    photo = cv2.imread(str(face_photo))
    assert np.abs(reference[0][top:bottom, left:right].astype(int) - photo[top:bottom, left:right]).mean() > 2
    assert np.abs(lean.astype(int) - reference).max() <= 1


@pytest.mark.slow
def test_batch_of_two_workers_without_torch(checkpoint, face_photo, tmp_path):
    """The batch's worker count, GPU pinning and per-worker threads ask torch only when it is there."""
    speech = media.write_wav(tmp_path / "speech.wav", media.speech_samples(0.4, seed=4))
    manifest = tmp_path / "jobs.csv"
    manifest.write_text("face,audio,output,box\n" + "".join(
        f"{face_photo},{speech},{tmp_path / f'out{i}.mp4'},60 250 170 330\n" for i in range(2)))
    script = f"""
import json, sys
from lipsync.batch.worker import default_workers
from lipsync.cli.batch import main
code = main([{str(manifest)!r}, "--workers", "2", "--checkpoint_path", {str(checkpoint)!r}, "--device", "cpu"])
print(json.dumps({{"code": code, "default_workers": default_workers()}}))
"""
    got = run_without_torch(script, tmp_path)
    assert got == {"code": 0, "default_workers": 1}
    assert all((tmp_path / f"out{i}.mp4").stat().st_size > 0 for i in range(2))


# Everything requirements-cpu.txt leaves out, blocked at once: what the CPU install has not got.
BLOCK_LEAN = "import sys\nfor _name in ('torch', 'mediapipe', 'scipy', 'librosa', 'face_alignment', 'skimage'):\n" \
             "    sys.modules[_name] = None  # `import` of any of these raises ImportError from here on\n"


@pytest.mark.slow  # a child process that builds the whole page (about 6 s); the fast lane has the job without torch
def test_cpu_install_builds_the_app_and_runs_a_job(checkpoint, face_photo, tmp_path):
    """With torch, mediapipe, scipy, librosa and face-alignment all unimportable: the app's page is built, a CLI job
    (BlazeFace, the default detector) writes its MP4, and --enhance gfpgan gives the one sentence saying what to
    install (the job still completes, unenhanced), as does the restorer asked for directly."""
    speech = media.write_wav(tmp_path / "speech.wav", media.speech_samples(0.4, seed=4))
    weights = tmp_path / "gfpgan.pth"
    weights.write_bytes(b"not needed: the sentence comes before the file is read")
    script = SAID + f"""
import contextlib, io, sys
sys.path.insert(0, {str(ROOT)!r})
from webapp import AppConfig, WebApp
page = WebApp(AppConfig.from_environment()).build()
from lipsync.cli import main
from lipsync.restore import backends as restorer
said_err = io.StringIO()
with contextlib.redirect_stderr(said_err):
    code = main(["--face", {str(face_photo)!r}, "--audio", {str(speech)!r}, "--outfile", {str(tmp_path / "out.mp4")!r},
                 "--checkpoint_path", {str(checkpoint)!r}, "--enhance", "gfpgan"])
out = {{"events": len(page.fns), "code": code, "stderr": said_err.getvalue(),
       "openvino": said(lambda: restorer.build_restorer({str(weights)!r}, "cpu").label),
       "pytorch": said(lambda: restorer.build_restorer({str(weights)!r}, "cpu", "pytorch").label),
       "blocked": sorted(m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in
                         ("torch", "mediapipe", "scipy", "librosa", "face_alignment", "skimage"))}}
print(json.dumps(out))
"""
    got = run_without_torch(BLOCK_LEAN + script, tmp_path, LIPSYNC_GFPGAN=str(weights), HF_HUB_OFFLINE="1",
                            LIPSYNC_OUTPUT_DIR=str(tmp_path / "app"), LIPSYNC_CACHE_DIR=str(tmp_path / "boxes"))
    sentence = ("The GFPGAN face restorer needs PyTorch, which is not installed here. Install it with "
                "`pip install -r requirements-gpu.txt`, or set enhance to none.")
    assert got["events"] > 0 and got["code"] == 0 and got["blocked"] == []
    assert (tmp_path / "out.mp4").stat().st_size > 0
    assert f"Warning: the mouth was not enhanced. {sentence}" in got["stderr"]
    assert "Traceback" not in got["stderr"]
    assert got["openvino"] == got["pytorch"] == f"Error: {sentence}"
