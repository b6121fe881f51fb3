"""The model backends: the OpenVINO graph built from the weights computes PyTorch's model (float rounding, faces
within 1 level), its disk cache is keyed and rebuilt, and any missing or failing backend falls back to PyTorch with
the reason in the result."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import media
import numpy as np
import pytest

from lipsync import Options
from lipsync.errors import LipSyncError
from lipsync.generator import LazyModel, ModelRunner, choice, lazy, load_model
from lipsync.generator import openvino_backend as backend
from lipsync.geometry import IMG_SIZE
from lipsync.media import audio

try:
    import openvino
except ImportError:  # the tests below that need it say so; the others still run
    openvino = None
# requirements.txt installs OpenVINO, so CI always runs these; elsewhere the skip says why
needs_openvino = pytest.mark.skipif(openvino is None,
                                    reason="OpenVINO is not installed (pip install -r requirements.txt)")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(autouse=True)
def _cache_env(model_cache, monkeypatch):
    monkeypatch.setenv("LIPSYNC_MODEL_CACHE", str(model_cache))


@pytest.fixture(scope="module")
def real_inputs():
    """Real face crops (the astronaut, panned and zoomed, resized to 96) and mel windows of speech-like audio."""
    crops = np.stack([cv2.resize(f[20:220, 60:260], (IMG_SIZE, IMG_SIZE)) for f in media.pan_zoom_frames(12)])
    mels = audio.mel_windows(audio.melspectrogram(media.speech_samples(1.2, seed=2)), 25.0)[:12]
    return crops, np.ascontiguousarray(mels)


@needs_openvino
def test_graph_built_from_the_weights_is_the_pytorch_model(checkpoint):
    """fp32 all through: the OpenVINO graph made from the numpy weights (batch norm folded, transposed convolutions
    with their output padding, skips, sigmoid) gives eager PyTorch's [0, 1] output to float rounding: for the
    official-layout checkpoint, and for a model whose batch norms have random scales and shifts too."""
    import torch

    from lipsync.generator.checkpoint import read_weights
    from lipsync.generator.graph import build_graph
    from lipsync.generator.network import Wav2Lip, state_as_numpy
    from lipsync.weights.openvino_cache import compile_cpu

    torch.manual_seed(3)
    varied = Wav2Lip().eval()
    for module in varied.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            for tensor, low, high in ((module.weight, 0.7, 1.3), (module.bias, -0.2, 0.2),
                                      (module.running_mean, -0.2, 0.2), (module.running_var, 0.5, 1.5)):
                tensor.data.uniform_(low, high)
    mels, faces = backend.example_inputs(4)
    for model, weights in ((load_model(str(checkpoint)), read_weights(str(checkpoint))),
                           (varied, state_as_numpy(varied))):
        graph = build_graph(weights)
        graph.reshape({0: [4, 1, 80, 16], 1: [4, 6, 96, 96]})
        compiled, ran = compile_cpu(openvino.Core(), graph, threads=2)
        assert ran == "fp32"
        with torch.inference_mode():
            reference = model(torch.from_numpy(mels), torch.from_numpy(faces)).numpy()
        ours = compiled([mels, faces])[0]
        assert ours.shape == reference.shape == (4, 3, 96, 96)
        assert reference.std() > 0.01  # not a saturated output, where any graph would agree
        assert np.abs(ours - reference).max() <= 1e-6, np.abs(ours - reference).max()


@needs_openvino
def test_openvino_faces_within_one_level_of_pytorch(checkpoint, real_inputs):
    crops, mels = real_inputs
    model = load_model(str(checkpoint))
    fast = ModelRunner(model, "cpu", backend="openvino")
    assert fast.backend.name == "openvino", fast.backend_label
    assert "fp32" in fast.backend_label
    reference = ModelRunner(model, "cpu", backend="pytorch")
    assert reference.backend.name == "pytorch"
    ours = np.concatenate([fast(crops[i:i + 8], mels[i:i + 8]) for i in range(0, 12, 8)])  # 8, then 4 (padded)
    diff = np.abs(ours.astype(int) - reference(crops, mels))
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())
    assert np.abs(fast(crops[:1], mels[:1]).astype(int) - ours[:1]).max() <= 1  # one face, padded


@pytest.mark.slow
@needs_openvino
def test_cache_is_reused_keyed_and_rebuilt(checkpoint, tmp_path, monkeypatch, model_cache):
    model = LazyModel(str(checkpoint))
    backend.load_openvino(model)  # built by the test above, or now
    timings: dict[str, float] = {}
    fresh = LazyModel(str(checkpoint))
    with monkeypatch.context() as m:  # a cached start reads neither the checkpoint's weights nor the PyTorch model
        m.setattr(lazy, "read_weights", lambda path: pytest.fail("the checkpoint was read"))
        cached = backend.load_openvino(fresh, timings=timings)
    assert cached.reason.endswith("cached") and "build_s" not in timings
    assert not fresh.loaded
    entries = [p for p in model_cache.iterdir() if p.is_dir()]
    assert len(entries) == 1 and (entries[0] / backend.IR_NAME).is_file()
    assert entries[0].name.endswith(f"-f{backend.FORMAT}")
    assert not [p for p in model_cache.iterdir() if p.name.startswith(".tmp-")]  # nothing half-written left

    def no_build(*args):
        raise RuntimeError("would build")

    with monkeypatch.context() as m:  # a different checkpoint, or another OpenVINO: not the cached entry
        m.setattr(backend, "build_graph", no_build)
        other = media.make_checkpoint(tmp_path / "other.pth", seed=1)
        with pytest.raises(RuntimeError, match="would build"):
            backend.load_openvino(LazyModel(str(other)))
        m.setattr(openvino, "__version__", "2099.1.0-1-abc")
        with pytest.raises(RuntimeError, match="would build"):
            backend.load_openvino(model)

    sha = entries[0].name.split("-openvino")[0]  # what older versions cached for this checkpoint goes when building
    superseded = [model_cache / f"{sha}-openvino2026.4.1-f1", model_cache / f"{sha}-state-f1.pt"]
    other_version = model_cache / f"{sha}-openvino2099.1.0-f{backend.FORMAT}"
    for path in (superseded[0], other_version):
        path.mkdir()
    superseded[1].write_bytes(b"torch-format copy")
    weights = next(entries[0].glob("*.bin"))  # a damaged entry is built again, not trusted
    weights.write_bytes(weights.read_bytes()[: 1000])
    rebuilt = backend.load_openvino(model)
    assert "the cached copy did not match its hash (wav2lip.bin)" in rebuilt.reason
    assert not any(p.exists() for p in superseded) and other_version.is_dir()
    other_version.rmdir()
    assert weights.stat().st_size > 100_000_000
    assert backend.load_openvino(model).reason.endswith("cached")


@needs_openvino
def test_a_checkpoint_replaced_with_its_mtime_kept_gives_its_own_frames(checkpoint, tmp_path, monkeypatch):
    """Issue 28: another checkpoint of the same size copied over the one a model was cached for, its mtime kept
    (`cp -p`, `rsync -a`), gave the old checkpoint's frames, reported as cached. Now its own, built now."""
    monkeypatch.setenv("LIPSYNC_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(backend, "import_torch", lambda: None)  # no self-check against PyTorch: not the point here
    path = tmp_path / "wav2lip_gan.pth"
    shutil.copyfile(checkpoint, path)
    mels, faces = backend.example_inputs(2)
    old = backend.load_openvino(LazyModel(str(path)))(mels, faces)
    other = media.make_checkpoint(tmp_path / "other.pth", seed=1)
    media.overwrite_keeping_mtime(path, other.read_bytes())
    replaced = backend.load_openvino(LazyModel(str(path)))
    assert "built now" in replaced.reason
    new = replaced(mels, faces)
    assert np.abs(new - old).max() > 0.05
    own = backend.load_openvino(LazyModel(str(other)))  # the other file's own model: the same content, so cached
    assert own.reason.endswith(", cached")
    assert np.array_equal(own(mels, faces), new)


@needs_openvino
def test_a_model_failing_its_self_check_is_not_cached(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("LIPSYNC_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(backend, "self_check", lambda *args: 3 / 255)
    with pytest.raises(RuntimeError, match="differs from PyTorch's by 3.0 levels"):
        backend.load_openvino(LazyModel(str(checkpoint)))
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    chosen = choice.choose_backend(LazyModel(str(checkpoint)), "cpu")  # and the job runs on PyTorch
    assert chosen.name == "pytorch" and "differs from PyTorch's" in chosen.label


@pytest.mark.slow  # a child process (the fast lane runs a job without torch in test_without_torch.py)
@needs_openvino
def test_cpu_job_on_a_cached_model_imports_no_torch(checkpoint, tmp_path, model_cache):
    """The quick start: with the OpenVINO model cached, a fixed-box CPU job never loads the PyTorch model nor
    imports torch (1.3 s), and its frames are those of the PyTorch path."""
    backend.load_openvino(LazyModel(str(checkpoint)))  # the cache entry, as a first run leaves it
    face = media.make_face_video(tmp_path / "face.mp4", seconds=0.4, fps=25)
    speech = media.write_wav(tmp_path / "a.wav", media.speech_samples(0.4, seed=4))
    script = (
        "import sys, lipsync\n"
        f"engine = lipsync.LipSync({str(checkpoint)!r}, device='cpu', allow_download=False)\n"
        f"result = engine.sync({str(face)!r}, {str(speech)!r}, {str(tmp_path / 'fast.mp4')!r}, "
        "box=(40, 200, 90, 230), precision='fp32')\n"  # fp32: the PyTorch path's numbers (auto may be bf16)
        "print(result.backend, '|', 'torch' in sys.modules, engine.network.loaded)\n")
    env = dict(os.environ, LIPSYNC_MODEL_CACHE=str(model_cache), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    label, flags = proc.stdout.strip().splitlines()[-1].split(" | ")
    assert label.startswith("openvino") and label.endswith("cached)"), label
    assert flags == "False False", "torch was imported or the PyTorch model loaded"
    from lipsync import LipSync

    LipSync(str(checkpoint), device="cpu", allow_download=False).sync(
        str(face), str(speech), str(tmp_path / "torch.mp4"), box=(40, 200, 90, 230), backend="pytorch")
    fast, slow = media.read_all_frames(tmp_path / "fast.mp4"), media.read_all_frames(tmp_path / "torch.mp4")
    assert len(fast) == len(slow) > 0
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(fast, slow)) <= 2  # 1 level, then x264


def test_no_gpu_driver_means_cpu_without_asking_torch(tmp_path):
    from lipsync.runtime import devices

    absent, present = str(tmp_path / "no-driver"), str(tmp_path)
    assert devices.no_gpu_here("linux", (absent,))
    assert not devices.no_gpu_here("linux", (absent, present))  # a driver: torch is asked, as before
    assert not devices.no_gpu_here("darwin", (absent,))  # MPS cannot be ruled out without torch
    assert devices.GPU_DRIVER_PATHS[:2] == devices.NVIDIA_DRIVER_PATHS  # what a driver leaves, NVIDIA's first


def test_missing_openvino_falls_back_with_the_reason_in_the_result(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    from lipsync import LipSync

    engine = LipSync(str(checkpoint), device="cpu", allow_download=False)
    face = media.make_face_video(tmp_path / "face.mp4", seconds=0.4, fps=25)
    speech = media.write_wav(tmp_path / "a.wav", media.speech_samples(0.4, seed=4))
    result = engine.sync(str(face), str(speech), str(tmp_path / "out.mp4"), Options(box=(40, 200, 90, 230)))
    assert result.backend.startswith("pytorch (OpenVINO not available ("), result.backend
    assert "model backend pytorch" in result.summary()
    assert "pytorch" in result.stats_markdown()


@needs_openvino
def test_failures_fall_back_to_pytorch(checkpoint, real_inputs, monkeypatch):
    crops, mels = real_inputs
    model = load_model(str(checkpoint))
    reference = ModelRunner(model, "cpu", backend="pytorch")(crops[:4], mels[:4])

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    with monkeypatch.context() as m:  # at building / compilation
        m.setattr(backend, "load_openvino", broken)
        chosen = choice.choose_backend(model, "cpu")
        assert chosen.name == "pytorch" and "OpenVINO failed (RuntimeError: simulated failure)" in chosen.label

    runner = ModelRunner(model, "cpu", backend="openvino")  # at inference: PyTorch takes over, the job goes on
    assert runner.backend.name == "openvino"
    monkeypatch.setattr(backend.OpenVINOBackend, "infer", broken)
    assert np.array_equal(runner(crops[:4], mels[:4]), reference)
    assert runner.backend.name == "pytorch" and "failed at inference" in runner.backend_label


@needs_openvino
def test_bf16_on_a_cpu_runs_on_openvino_and_says_what_it_computed_in(checkpoint, real_inputs):
    crops, mels = real_inputs
    model = load_model(str(checkpoint))
    half = ModelRunner(model, "cpu", precision="bf16")
    assert half.backend.name == "openvino", half.backend_label
    label = half.backend_label
    assert "bf16," in label or "fp32 (this CPU has no bf16 arithmetic)" in label, label
    diff = np.abs(half(crops, mels).astype(int) - ModelRunner(model, "cpu")(crops, mels))
    assert diff.max() <= 8 and diff.mean() < 0.5, (diff.max(), diff.mean())


def test_pytorch_is_forced_or_kept_where_openvino_does_not_apply(checkpoint):
    model = load_model(str(checkpoint))
    assert ModelRunner(model, "cpu", backend="pytorch").backend_label == "pytorch (chosen with --backend pytorch)"
    assert choice.choose_backend(model, "cuda").name == "pytorch"  # CUDA and MPS: PyTorch, always
    assert choice.choose_backend(model, "mps", choice="openvino").name == "pytorch"
    with pytest.raises(LipSyncError, match="Unknown backend"):
        Options(backend="tensorrt")


def test_numpy_audio_path_is_bit_identical_to_librosa():
    """The quick start's numpy STFT, mel filters, pre-emphasis and resampling give librosa's numbers exactly."""
    librosa = pytest.importorskip("librosa")
    from scipy import signal

    wav = media.speech_samples(1.3, rate=44100, seed=5)
    resampled = audio.resample(wav, 44100)
    assert np.array_equal(resampled, librosa.resample(wav, orig_sr=44100, target_sr=16000))
    emphasised = audio.preemphasis(resampled)
    assert np.array_equal(emphasised, signal.lfilter([1, -0.97], [1], resampled))
    assert np.array_equal(audio.stft_magnitude(emphasised),
                          np.abs(librosa.stft(y=emphasised, n_fft=800, hop_length=200, win_length=800)))
    assert np.array_equal(audio._mel_basis(), librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600))


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively(checkpoint, real_inputs):
    """--precision auto (the default): bf16 on a CPU with native bf16 when OpenVINO runs the model, fp32 elsewhere
    (PyTorch on a CPU, GPUs); the label says which ran, and the faces stay within a few levels of fp32's."""
    from lipsync.generator.choice import resolve_precision
    from lipsync.weights.openvino_cache import native_bf16

    expected = "bf16" if native_bf16() else "fp32"
    assert resolve_precision("auto", "cpu") == expected == resolve_precision("auto", "cpu", "openvino")
    assert resolve_precision("auto", "cpu", "pytorch") == "fp32" == resolve_precision("auto", "cuda")
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cuda") == "bf16"
    assert Options().precision == "auto"
    crops, mels = real_inputs
    model = load_model(str(checkpoint))
    auto = ModelRunner(model, "cpu", precision="auto")
    if auto.backend.name == "openvino":
        assert f"OpenVINO {__import__('openvino').__version__.split('-')[0]} {expected}," in auto.backend_label
    diff = np.abs(auto(crops, mels).astype(int) - ModelRunner(model, "cpu", precision="fp32")(crops, mels))
    assert diff.max() <= 8 and diff.mean() < 0.5, (diff.max(), diff.mean())
