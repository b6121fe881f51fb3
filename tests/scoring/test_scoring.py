"""lipsync.scoring: SyncNet's LSE-D, LSE-C and AV offset, against the official code restated (syncnet_reference).

Random weights in the release file's layout stand in for syncnet_v2.model (no download here): the network,
the MFCCs, the offset search and the crops are each compared with the official arithmetic on the same
inputs; a stand-in network whose embeddings match at a known shift pins the search's direction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import subprocess
import tracemalloc
import wave
from pathlib import Path

import media
import numpy as np
import pytest
import syncnet_reference as official
import torch

from lipsync.errors import LipSyncError
from lipsync.faces.detectors import get_detector
from lipsync.media.ffmpeg import ffmpeg_exe
from lipsync.media.probe import probe_media
from lipsync.scoring import backends, layout, mfcc, score_video
from lipsync.scoring import windows as streamed
from lipsync.scoring.checkpoint import read_syncnet_weights
from lipsync.scoring.crops import crop_face, smooth_track
from lipsync.scoring.distances import medfilt
from lipsync.scoring.inputs import face_boxes, frames_at_25, read_pcm16
from lipsync.scoring.score import face_crops
from lipsync.scoring.windows import audio_batch, window_count
from lipsync.weights import locate as weights

# ------------------------------------------------------------------------------------------------ test data


@pytest.fixture(scope="session")
def reference(syncnet_files) -> official.ReferenceS:
    return official.load_reference(str(syncnet_files["legacy"]))


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def nets(syncnet_files, model_cache) -> dict:
    """Our network on both CPU backends, from the legacy file (OpenVINO cached in a folder of its own)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIPSYNC_MODEL_CACHE", str(model_cache))
        return {name: backends.load_syncnet(str(syncnet_files["legacy"]), "cpu", backend=name, batch_size=8)
                for name in ("openvino", "pytorch")}


def pcm_of(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1, 1) * 32767).astype(np.int16)


def crops_of(n: int, seed: int = 0) -> list[np.ndarray]:
    return list(media.pan_zoom_frames(n, size=(224, 224), seed=seed))


def embed_reference(model, lips: np.ndarray, cc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        return (model.forward_lip(torch.from_numpy(lips)).numpy(), model.forward_aud(torch.from_numpy(cc)).numpy())


# ------------------------------------------------------------------------------------------------ network


def test_layout_is_the_official_state_dict():
    """Every name and shape of the official S(1024), in its order, from the layout tables alone; our module too."""
    from lipsync.scoring.network import SyncNet

    want = [(k, tuple(v.shape)) for k, v in official.ReferenceS().state_dict().items()]
    assert list(layout.state_dict_shapes().items()) == want
    assert [(k, tuple(v.shape)) for k, v in SyncNet().state_dict().items()] == want
    assert layout.parameter_count() * 4 < weights.SYNCNET_SIZE < layout.parameter_count() * 4 + 20_000


def test_both_file_formats_read_the_same_weights(syncnet_files):
    legacy = read_syncnet_weights(str(syncnet_files["legacy"]))
    zipped = read_syncnet_weights(str(syncnet_files["zip"]))
    assert legacy.keys() == zipped.keys() == layout.state_dict_shapes().keys()  # counters filled in when absent
    assert all(np.array_equal(legacy[k], zipped[k]) for k in legacy)


def test_files_that_are_not_syncnet_are_refused_in_one_sentence(tmp_path):
    generator = tmp_path / "wav2lip.pth"
    torch.save({"face_encoder_blocks.0.0.conv_block.0.weight": torch.zeros(16, 6, 7, 7)}, generator)
    with pytest.raises(LipSyncError, match="is a Wav2Lip checkpoint .*not SyncNet.*syncnet_v2.model"):
        read_syncnet_weights(str(generator))
    state = official.random_syncnet().state_dict()
    state["netfcaud.3.weight"] = torch.zeros(512, 512)  # a 512-d SyncNet, not the release's 1024
    odd = tmp_path / "narrow.model"
    torch.save(state, odd)
    with pytest.raises(LipSyncError, match="is not SyncNet: 0 of its 102 weights are missing and 1 have the wrong"):
        read_syncnet_weights(str(odd))
    cut = tmp_path / "cut.model"
    cut.write_bytes(odd.read_bytes()[:100_000])
    with pytest.raises(LipSyncError) as err:
        read_syncnet_weights(str(cut))
    assert "not a readable PyTorch checkpoint" in str(err.value) and "436 MB" not in str(err.value)
    with pytest.raises(LipSyncError, match="do not exist"):
        read_syncnet_weights(str(tmp_path / "nothing.model"))


@pytest.mark.parametrize("backend", ["openvino", "pytorch"])
def test_embeddings_match_the_official_network(nets, reference, backend):
    """Both towers within 1e-5 of the official module's, on real-looking crops and MFCC windows."""
    lips = streamed.lip_batch(np.stack(crops_of(9)))  # 5 windows
    cc = audio_batch(mfcc(pcm_of(media.speech_samples(1.0))).T.astype(np.float32), 0, 5)
    got, want = nets[backend](lips, cc), embed_reference(reference, lips, cc)
    for ours, theirs in zip(got, want):
        assert ours.shape == theirs.shape == (5, 1024)
        assert np.abs(ours - theirs).max() <= 1e-5 * max(1.0, float(np.abs(theirs).max()))


def test_openvino_model_is_cached_by_the_weights_sha256(nets, syncnet_files, model_cache, monkeypatch):
    monkeypatch.setenv("LIPSYNC_MODEL_CACHE", str(model_cache))
    assert "fp32" in nets["openvino"].label
    again = backends.load_syncnet(str(syncnet_files["zip"]), "cpu", batch_size=8)  # other bytes, other entry
    assert again.name == "openvino" and "built now" in again.label
    cached = backends.load_syncnet(str(syncnet_files["legacy"]), "cpu", batch_size=8)
    assert "cached" in cached.label
    entries = [p.name for p in model_cache.iterdir() if p.name.startswith("syncnet-")]
    sha = hashlib.sha256(syncnet_files["legacy"].read_bytes()).hexdigest()
    assert len(entries) == 2 and any(sha in e for e in entries)


# ------------------------------------------------------------------------------------------------ MFCC


@pytest.mark.parametrize("kind", ["speech", "noise", "silence"])
def test_mfcc_matches_python_speech_features(kind):
    import python_speech_features

    rng = np.random.default_rng(1)
    for seconds in (0.01, 0.025, 0.0251, 0.5, 3.3):
        n = int(seconds * 16000)
        samples = {"speech": pcm_of(media.speech_samples(max(seconds, 0.1), seed=2)[:n]),
                   "noise": rng.normal(0, 6000, n).clip(-32768, 32767).astype(np.int16),
                   "silence": np.zeros(n, np.int16)}[kind]
        want = python_speech_features.mfcc(samples, 16000)
        got = mfcc(samples)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-6


@pytest.mark.filterwarnings("ignore:kernel_size exceeds volume extent")
def test_median_filter_is_scipys():
    from scipy import signal

    rng = np.random.default_rng(0)
    for n in (1, 5, 9, 12, 40):
        values = rng.normal(size=n).astype(np.float32)
        for kernel in (9, 13):
            assert np.array_equal(medfilt(values, kernel), signal.medfilt(values.astype(np.float64), kernel))


# ------------------------------------------------------------------------------------------------ scores


@pytest.mark.parametrize("backend, vshift", [("openvino", 15), ("pytorch", 6)])
def test_scores_equal_the_official_evaluate_on_the_same_crops(nets, reference, backend, vshift):
    """Offset, LSE-D, LSE-C and the framewise confidence as SyncNetInstance.evaluate gives them: 36 frames against
    1.6 s of sound (the sound is longer: the official trims it to the video)."""
    crops = crops_of(36, seed=3)
    pcm = pcm_of(media.speech_samples(1.6, seed=4))
    offset, conf, minval, fconfm, dists = official.evaluate(reference, crops, pcm, vshift=vshift)
    assert len(fconfm) == window_count(36, len(pcm)) == 31
    gap = np.diff(np.sort(dists.mean(axis=0))[:2])[0]
    assert gap > 1e-4 * minval  # ten times the tolerance on LSE-D: float noise cannot move the offset
    got, windows = streamed.evaluate(iter(crops), pcm, nets[backend], vshift=vshift)
    assert (windows, got.offset) == (31, offset)
    assert got.lse_d == pytest.approx(minval, rel=1e-5) and got.lse_c == pytest.approx(conf, abs=1e-4)
    np.testing.assert_allclose(got.framewise, fconfm, atol=2e-4)
    np.testing.assert_allclose(got.curve, dists.mean(axis=0), rtol=1e-5)


def test_video_longer_than_the_sound_is_trimmed_to_the_sound(nets, reference):
    crops = crops_of(40, seed=5)
    pcm = pcm_of(media.speech_samples(1.0, seed=6))  # 25 frames' worth
    offset, _, minval, fconfm, _ = official.evaluate(reference, crops, pcm, vshift=15)
    read = []
    got, windows = streamed.evaluate((read.append(c) or c for c in crops), pcm, nets["pytorch"], vshift=15)
    assert windows == len(fconfm) == 20 and len(read) == 25  # frames past the sound are never decoded
    assert (got.offset, got.lse_d) == (offset, pytest.approx(minval, rel=1e-5))


class ShiftedStandIn:
    """A stand-in network whose lip embedding of the window at frame t is the audio embedding of the clean sound's
    window t: frames carry their index in two pixel values, the audio embedding is a random projection of the MFCC
    window. Scored against the clean sound delayed by k frames, lip t meets its audio at window t + k."""

    label = "stand-in"

    def __init__(self, clean: np.ndarray, batch_size: int = 8) -> None:
        self.cc = mfcc(clean).T.astype(np.float32)
        self.projection = np.random.default_rng(0).normal(size=(13 * 20, 64)).astype(np.float32)
        self.batch_size = batch_size

    def __call__(self, lips: np.ndarray, cc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = lips[:, 0, 0, 0, 0].astype(int) + 256 * lips[:, 1, 0, 0, 0].astype(int)
        clean = np.concatenate([audio_batch(self.cc, int(t), 1) for t in index])
        return clean.reshape(len(index), -1) @ self.projection, cc.reshape(len(cc), -1) @ self.projection


def indexed_frames(n: int):
    for t in range(n):
        frame = np.zeros((224, 224, 3), np.uint8)
        frame[..., 0], frame[..., 1] = t % 256, t // 256
        yield frame


@pytest.mark.parametrize("delay", [-6, -1, 0, 2, 9])
def test_offset_search_finds_a_known_delay(delay):
    """Sound delayed by k frames (late) gives offset -k; sound early gives +k: the official sign."""
    clean = pcm_of(media.speech_samples(4.0, seed=7))
    shift = 640 * delay
    heard = np.concatenate([np.zeros(shift, np.int16), clean])[:len(clean)] if delay >= 0 else \
        np.concatenate([clean[-shift:], np.zeros(-shift, np.int16)])
    got, _ = streamed.evaluate(indexed_frames(100), heard, ShiftedStandIn(clean), vshift=10)
    assert got.offset == -delay
    assert got.lse_d < got.lse_c / 10  # exact matches at that shift but for the frames whose sound is cut off


def test_memory_stays_bounded_on_a_long_clip():
    """Two minutes at 25 fps (3000 frames) through the scorer: the official would hold every frame as float64
    (3000 x 224 x 224 x 3 x 8 bytes = 3.6 GB); the peak here is a few batches."""
    frames, clean = 3000, pcm_of(media.speech_samples(121.0, seed=8))
    tracemalloc.start()
    try:
        got, windows = streamed.evaluate(indexed_frames(frames), clean, ShiftedStandIn(clean, 8), vshift=15)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert windows == frames - 5 and got.offset == 0
    assert peak < 64 * 2**20 < frames * 224 * 224 * 3 * 8 / 50, f"peak {peak / 2**20:.0f} MiB"


def test_too_short_clips_say_so():
    net = ShiftedStandIn(pcm_of(media.speech_samples(1.0)))
    with pytest.raises(LipSyncError, match="video is too short to score \\(5 frames"):
        streamed.evaluate(indexed_frames(5), pcm_of(media.speech_samples(1.0)), net)
    with pytest.raises(LipSyncError, match="sound is too short to score"):
        streamed.evaluate(indexed_frames(50), np.zeros(3000, np.int16), net)


# ------------------------------------------------------------------------------------------------ crops and input


def test_face_crops_are_run_pipelines(tmp_path):
    """crop_video's crops, pixel for pixel, on a track that wanders off the frame's edges and shrinks."""
    rng = np.random.default_rng(0)
    frames = list(media.pan_zoom_frames(30, size=(320, 240), seed=1))
    t = np.arange(30)
    cx, cy, half = 160 + 150 * np.sin(t / 5), 120 + 110 * np.cos(t / 4), 40 + 30 * np.sin(t / 7)
    boxes = np.stack([cx - half, cy - half * 1.2, cx + half, cy + half * 1.2], 1) + rng.normal(0, 3, (30, 4))
    want = official.crop_track(frames, boxes)
    track = smooth_track(boxes)
    got = [crop_face(f, track.size[i], track.x[i], track.y[i]) for i, f in enumerate(frames)]
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("rate", ["30", "24", "50", "30000/1001"])
def test_frames_at_25_are_the_official_conversion(tmp_path, rate):
    """The official runs `ffmpeg -i clip -qscale:v 2 -async 1 -r 25 video.avi`: the same frames, repeated or
    dropped at the same places (each frame carries its index as its grey level)."""
    n = 40
    frames = (np.full((48, 64, 3), 5 * i, np.uint8) for i in range(n))
    clip = media.write_video(tmp_path / "clip.mp4", frames, rate, (64, 48),
                             extra=["-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p"])
    avi = tmp_path / "video.avi"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(clip), "-qscale:v", "2", "-async", "1", "-r", "25",
                    str(avi)], check=True)
    want = [round(float(f.mean()) / 5) for f in media.read_all_frames(avi)]
    got = [round(float(f.mean()) / 5) for f in frames_at_25(probe_media(str(clip)))]
    assert got == want and len(got) != n


def test_sound_is_ffmpegs_16_khz_mono(tmp_path):
    stereo = media.write_wav(tmp_path / "stereo.wav", media.speech_samples(1.3), rate=44100, channels=2)
    official_wav = tmp_path / "audio.wav"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(stereo), "-ac", "1", "-vn", "-acodec", "pcm_s16le",
                    "-ar", "16000", str(official_wav)], check=True)
    with wave.open(str(official_wav)) as w:
        want = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert np.array_equal(read_pcm16(str(stereo)), want)


# ------------------------------------------------------------------------------------------------ the whole clip


@pytest.fixture(scope="session")
def talking_clip(data_dir) -> Path:
    speech = media.write_wav(data_dir / "score_speech.wav", media.speech_samples(2.4, seed=9))
    return media.make_face_video(data_dir / "score_face.mp4", seconds=2.4, fps=30, audio=speech)


def test_score_video_equals_the_official_on_its_crops(nets, reference, talking_clip):
    """A 30 fps clip with sound, its face found by BlazeFace: the result is the official evaluate()'s on the crops
    made from those boxes and on the same samples."""
    seen = []
    score = score_video(str(talking_clip), network=nets["openvino"], detector="blazeface",
                        progress=lambda stage, done, total: seen.append(stage))
    info = probe_media(str(talking_clip))
    boxes, missing = face_boxes(info, get_detector("blazeface", "cpu").detector)
    crops = list(face_crops(info, boxes))
    pcm = read_pcm16(str(talking_clip))
    offset, conf, minval, fconfm, _ = official.evaluate(reference, crops, pcm)
    assert (score.offset, score.frames, score.frames_without_face) == (offset, len(fconfm), missing)
    assert score.lse_d == pytest.approx(minval, rel=1e-5) and score.lse_c == pytest.approx(conf, abs=1e-4)
    np.testing.assert_allclose(score.framewise, fconfm, atol=2e-4)
    assert "blazeface" in score.detector and "openvino" in score.backend and score.crop == "face"
    assert {"Finding the face", "Scoring lip sync"} <= set(seen)
    assert len(score.window_times()) == score.frames and "LSE-D" in score.summary()


def test_score_video_whole_frame_and_separate_sound(nets, talking_clip, tmp_path):
    speech = media.write_wav(tmp_path / "other.wav", media.speech_samples(1.5, seed=10))
    score = score_video(str(talking_clip), str(speech), crop="none", network=nets["pytorch"], vshift=5)
    assert score.frames == 1.5 * 25 // 1 - 5 and len(score.curve) == 11 and score.detector == ""
    with pytest.raises(LipSyncError, match="Unknown crop"):
        score_video(str(talking_clip), crop="mouth", network=nets["pytorch"])
    silent = media.make_face_video(tmp_path / "silent.mp4", seconds=0.5)
    with pytest.raises(LipSyncError, match="has no sound"):
        score_video(str(silent), network=nets["pytorch"])


# ------------------------------------------------------------------------------------------------ weights


@pytest.fixture
def weights_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(weights, "WEIGHTS_DIR", folder)
    monkeypatch.setenv("LIPSYNC_MODEL_CACHE", str(tmp_path / "models"))
    monkeypatch.delenv("LIPSYNC_SYNCNET", raising=False)
    return folder


def test_offline_without_weights_is_one_sentence(weights_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LipSyncError) as err:
        weights.resolve_syncnet()
    text = str(err.value)
    assert "syncnet_v2.model" in text and weights.SYNCNET_URL in text and str(weights_dir) in text
    assert "downloads are off" in text and text.count(". ") == 1 and "LIPSYNC_SYNCNET" in text
    with pytest.raises(LipSyncError, match="downloads are off"):
        weights.resolve_syncnet(download=False)


def test_a_file_under_the_name_must_match_the_sha256(weights_dir, syncnet_files, monkeypatch):
    (weights_dir / "syncnet_v2.model").write_bytes(syncnet_files["legacy"].read_bytes())  # not the release's bytes
    with pytest.raises(LipSyncError, match="does not match its SHA256"):
        weights.resolve_syncnet(download=False)
    monkeypatch.setenv("LIPSYNC_SYNCNET", str(syncnet_files["legacy"]))  # a file of your own is taken as it is
    assert weights.resolve_syncnet(download=False) == str(syncnet_files["legacy"])
    assert backends.load_syncnet(None, "cpu", backend="pytorch", download=False).name == "pytorch"
    monkeypatch.setenv("LIPSYNC_SYNCNET", str(weights_dir / "missing.model"))
    with pytest.raises(LipSyncError, match="names .* which is not a file"):
        weights.resolve_syncnet()


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()


def test_a_download_is_kept_only_when_its_sha256_matches(weights_dir, monkeypatch):
    import urllib.request

    body = b"syncnet bytes" * 1000
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: FakeResponse(body))
    with pytest.raises(LipSyncError, match="downloaded but its SHA256 does not match"):
        weights.resolve_syncnet()
    assert list(weights_dir.iterdir()) == []  # nothing left behind, not even the partial file
    monkeypatch.setattr(weights, "SYNCNET", dataclasses.replace(weights.SYNCNET,
                                                                sha256=hashlib.sha256(body).hexdigest()))
    path = Path(weights.resolve_syncnet())
    assert path == weights_dir / "syncnet_v2.model" and path.read_bytes() == body

    def unreachable(url, timeout):
        raise OSError("no network")

    path.unlink()
    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    with pytest.raises(LipSyncError, match="could not be downloaded \\(OSError\\)"):
        weights.resolve_syncnet()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_embeddings_match_the_cpu(syncnet_files, reference):
    net = backends.load_syncnet(str(syncnet_files["legacy"]), "cuda")
    lips = streamed.lip_batch(np.stack(crops_of(12)))
    cc = audio_batch(mfcc(pcm_of(media.speech_samples(1.0))).T.astype(np.float32), 0, 8)
    for ours, theirs in zip(net(lips, cc), embed_reference(reference, lips, cc)):
        assert np.abs(ours - theirs).max() <= 1e-4 * max(1.0, float(np.abs(theirs).max()))


LEAN = ("torch", "scipy", "python_speech_features", "librosa", "mediapipe", "skimage")


@pytest.mark.slow  # a child process that builds the graph and scores a clip (about 6 s)
def test_the_cpu_install_scores_with_openvino_alone(syncnet_files, talking_clip, nets, tmp_path):
    """With torch, scipy and python_speech_features unimportable (the lean CPU install): the OpenVINO graph is
    built from the file with a cold cache (unchecked, and saying so), and the whole clip scores as in-process.
    Without OpenVINO either, one sentence says what to install."""
    import json
    import os
    import sys

    block = f"import sys\nfor _n in {LEAN!r}:\n    sys.modules[_n] = None\n"
    script = block + f"""
import json
from lipsync.errors import LipSyncError
from lipsync.scoring import load_syncnet, score_video
net = load_syncnet({str(syncnet_files["legacy"])!r}, "cpu", batch_size=8)
score = score_video({str(talking_clip)!r}, crop="none", network=net)
sys.modules["openvino"] = None
try:
    load_syncnet({str(syncnet_files["legacy"])!r}, "cpu")
    missing = ""
except LipSyncError as err:
    missing = str(err)
print(json.dumps({{"label": net.label, "offset": score.offset, "lse_d": score.lse_d, "missing": missing,
                  "loaded": sorted(m for m in sys.modules
                                   if sys.modules[m] is not None and m.split(".")[0] in {LEAN!r})}}))
"""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root), LIPSYNC_MODEL_CACHE=str(tmp_path / "cold"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    here = score_video(str(talking_clip), crop="none", network=nets["openvino"])
    assert "built now, not compared with PyTorch (not installed)" in got["label"] and got["loaded"] == []
    assert got["offset"] == here.offset and got["lse_d"] == pytest.approx(here.lse_d, rel=1e-6)
    assert "needs PyTorch" in got["missing"] and "pip install openvino" in got["missing"]
