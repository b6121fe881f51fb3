"""The generator's layout and checkpoint loading: official files load, bad files get one clear sentence."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

import media
from lipsync.errors import LipSyncError
from lipsync.model import Wav2Lip, load_model


def test_parameter_names_and_shapes_match_the_official_generator():
    ours = [(k, list(v.shape)) for k, v in Wav2Lip().state_dict().items()]
    assert ours == media.official_key_layout()


def test_official_layout_checkpoint_loads_and_runs(checkpoint):
    model = load_model(str(checkpoint))
    out = model(torch.zeros(2, 1, 80, 16), torch.rand(2, 6, 96, 96))
    assert out.shape == (2, 3, 96, 96)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not model.training
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert torch.equal(model.state_dict()["output_block.1.weight"], saved["module.output_block.1.weight"])


def test_zip_format_checkpoint_loads(tmp_path):
    path = media.make_checkpoint(tmp_path / "zip.pth", legacy_format=False)
    assert isinstance(load_model(str(path)), Wav2Lip)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(LipSyncError, match="not found"):
        load_model(str(tmp_path / "nope.pth"))


def test_truncated_checkpoint(checkpoint, tmp_path):
    path = tmp_path / "truncated.pth"
    path.write_bytes(checkpoint.read_bytes()[: 10_000_000])
    with pytest.raises(LipSyncError, match="truncated, damaged"):
        load_model(str(path))


def test_text_file_as_checkpoint(tmp_path):
    path = tmp_path / "page.pth"
    path.write_text("<html>this is the page a /blob/ URL returns</html>")
    with pytest.raises(LipSyncError, match="not a readable PyTorch checkpoint"):
        load_model(str(path))


def test_syncnet_checkpoint_is_named(tmp_path):
    state = {"module.face_encoder.0.conv_block.0.weight": torch.zeros(32, 15, 7, 7),
             "module.audio_encoder.0.conv_block.0.weight": torch.zeros(32, 1, 3, 3)}
    path = tmp_path / "lipsync_expert.pth"
    torch.save({"state_dict": state, "global_step": 0}, path)
    with pytest.raises(LipSyncError, match="SyncNet"):
        load_model(str(path))


def test_wrong_shapes_are_refused(checkpoint, tmp_path):
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["state_dict"]["module.output_block.1.weight"] = torch.zeros(4, 32, 1, 1)
    path = tmp_path / "wrong.pth"
    torch.save(ckpt, path)
    with pytest.raises(LipSyncError, match="wrong shape"):
        load_model(str(path))


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['LIPSYNC_TEST_MARKER']}",))


def test_pickled_code_is_refused_and_never_run(tmp_path, monkeypatch):
    marker = tmp_path / "payload_ran"
    monkeypatch.setenv("LIPSYNC_TEST_MARKER", str(marker))
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"state_dict": {"x": torch.zeros(1)}, "evil": _Payload()}, f)
    with pytest.raises(LipSyncError, match="holds Python objects or code"):
        load_model(str(path))
    assert not marker.exists()


def test_raw_pickle_payload_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "payload_ran"
    monkeypatch.setenv("LIPSYNC_TEST_MARKER", str(marker))
    path = tmp_path / "evil_raw.pth"
    path.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(LipSyncError):
        load_model(str(path))
    assert not marker.exists()


def test_generator_halves_the_batch_after_running_out_of_memory(checkpoint, monkeypatch):
    """A batch too big for the GPU is retried in halves, and the output is the same."""
    import numpy as np

    from lipsync.runner import ModelRunner as Generator

    model = load_model(str(checkpoint))
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (8, 96, 96, 3), dtype=np.uint8)
    mels = rng.normal(size=(8, 80, 16)).astype(np.float32)
    expected = Generator(model, "cpu")(crops, mels)
    generator = Generator(model, "cpu")
    real_run = generator._run

    def small_memory(c, m):
        if len(c) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(c, m)

    monkeypatch.setattr(generator, "_run", small_memory)
    assert np.array_equal(generator(crops, mels), expected)
    assert generator.max_batch == 2


def test_half_precision_is_refused_on_the_cpu(checkpoint):
    from lipsync.runner import ModelRunner as Generator

    with pytest.raises(LipSyncError, match="fp16 runs on a GPU"):
        Generator(load_model(str(checkpoint)), "cpu", "fp16")
