"""The generator's layout and checkpoint loading: official files load (zip and legacy format, read without torch),
bad files get one clear sentence, and nothing in a file is ever run."""

from __future__ import annotations

import os
import pickle

import media
import numpy as np
import pytest
import torch

from lipsync.errors import LipSyncError
from lipsync.generator import ModelRunner as Generator
from lipsync.generator import checkpoint as reader
from lipsync.generator.layout import state_dict_shapes
from lipsync.generator.network import Wav2Lip, load_model
from lipsync.weights import formats


def test_parameter_names_and_shapes_match_the_official_generator():
    ours = [(k, list(v.shape)) for k, v in Wav2Lip().state_dict().items()]
    assert ours == media.official_key_layout()
    assert [(k, list(v)) for k, v in state_dict_shapes().items()] == media.official_key_layout()  # the torch-free one


def test_official_layout_checkpoint_loads_and_runs(checkpoint):
    model = load_model(str(checkpoint))
    out = model(torch.zeros(2, 1, 80, 16), torch.rand(2, 6, 96, 96))
    assert out.shape == (2, 3, 96, 96)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not model.training
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert torch.equal(model.state_dict()["output_block.1.weight"], saved["module.output_block.1.weight"])


def _torch_state(path) -> dict[str, np.ndarray]:
    saved = torch.load(path, weights_only=True)["state_dict"]
    return {k.removeprefix("module."): v.numpy() for k, v in saved.items()}


def _same(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> bool:
    return list(ours) == list(theirs) and all(
        ours[k].dtype == theirs[k].dtype and ours[k].shape == theirs[k].shape and np.array_equal(ours[k], theirs[k])
        for k in theirs)


def test_both_formats_read_as_torch_reads_them(checkpoint, tmp_path):
    """The torch-free reader gives torch.load's state dict, bit for bit, from a legacy (pre-1.6) and a zip file."""
    assert _same(reader.read_weights(str(checkpoint)), _torch_state(checkpoint))  # legacy, as the official files
    path = media.make_checkpoint(tmp_path / "zip.pth", legacy_format=False)
    assert _same(reader.read_weights(str(path)), _torch_state(path))
    assert isinstance(load_model(str(path)), Wav2Lip)


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_views_strides_and_shared_storages_read_as_torch_reads_them(tmp_path, legacy):
    base = torch.arange(10.0)
    state = {"conv.weight": torch.randn(3, 2, 3, 3), "bn.num_batches_tracked": torch.tensor(7),
             "transposed": torch.arange(24.0).reshape(4, 6).t(), "view": base[3:7], "base": base,
             "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4)}
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": state}, path, _use_new_zipfile_serialization=not legacy)
    ours = reader.read_state_dict(str(path))
    assert _same(ours, {k: v.numpy() for k, v in state.items()})
    assert all(v.flags.c_contiguous and v.flags.writeable for v in ours.values())


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_optimizer_state_is_skipped_not_read(tmp_path, monkeypatch, legacy):
    """Two thirds of an official file are Adam's moments: only the state dict's storages are read from disk."""
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.rand(2, 2, 6, 6)).sum().backward()
    optimizer.step()
    path = tmp_path / "trained.pth"
    torch.save({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "global_step": 1}, path,
               _use_new_zipfile_serialization=not legacy)
    kind = formats.LegacyCheckpoint if legacy else formats.ZipCheckpoint
    read: list[int] = []
    real_read = kind.read
    monkeypatch.setattr(kind, "read", lambda self, storage: read.append(storage.numel) or real_read(self, storage))
    ours = reader.read_state_dict(str(path))
    assert _same(ours, {k: v.numpy() for k, v in model.state_dict().items()})
    assert sorted(read) == sorted(v.numel() for v in model.state_dict().values())  # no optimizer storage read


def test_official_file_size_is_this_layout_with_adam_moments(tmp_path):
    """The official files (435,801,865 and 435,807,851 bytes) are the state dict plus Adam's two moments: a legacy
    file of that content is within 20 kB of them, a zip file 95 kB over. Read without materialising the moments."""
    path = media.make_checkpoint(tmp_path / "full.pth", optimizer_state=True)
    assert abs(path.stat().st_size - 435_801_865) < 20_000
    assert list(reader.read_weights(str(path))) == list(state_dict_shapes())


def test_missing_checkpoint(tmp_path):
    with pytest.raises(LipSyncError, match="not found"):
        load_model(str(tmp_path / "nope.pth"))


def test_truncated_checkpoint(checkpoint, tmp_path):
    path = tmp_path / "truncated.pth"
    path.write_bytes(checkpoint.read_bytes()[: 10_000_000])
    with pytest.raises(LipSyncError, match="truncated, damaged"):
        load_model(str(path))


@pytest.mark.parametrize("cut", [300, 100_000, -1_000], ids=["in the pickle", "in a storage", "near the end"])
def test_truncated_zip_checkpoint(tmp_path, cut):
    whole = tmp_path / "zip.pth"
    torch.save({"state_dict": {"w": torch.randn(256, 256), "b": torch.randn(256)}}, whole)
    path = tmp_path / "truncated.pth"
    path.write_bytes(whole.read_bytes()[:cut])
    with pytest.raises(LipSyncError, match="truncated, damaged"):
        reader.read_state_dict(str(path))


def test_damaged_storage_bytes_are_caught(tmp_path):
    """A flipped byte inside a zip file's tensor data fails its CRC: damaged, not silently wrong weights."""
    path = tmp_path / "flipped.pth"
    torch.save({"state_dict": {"w": torch.zeros(4096)}}, path)
    data = bytearray(path.read_bytes())
    at = data.index(bytes(4096 * 4)) + 1000
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(LipSyncError, match="truncated, damaged"):
        reader.read_state_dict(str(path))


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


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_pickled_code_is_refused_and_never_run(tmp_path, monkeypatch, legacy):
    marker = tmp_path / "payload_ran"
    monkeypatch.setenv("LIPSYNC_TEST_MARKER", str(marker))
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"state_dict": {"x": torch.zeros(1)}, "evil": _Payload()}, f,
                   _use_new_zipfile_serialization=not legacy)
    with pytest.raises(LipSyncError, match="Refused to load .*holds Python objects or code"):
        load_model(str(path))
    assert not marker.exists()


def test_objects_beyond_a_state_dict_are_refused(tmp_path):
    """Torch's own classes are refused too when a state dict does not need them (here a whole pickled module)."""
    path = tmp_path / "module.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "model": torch.nn.ReLU()}, path)
    with pytest.raises(LipSyncError, match="holds Python objects or code"):
        reader.read_state_dict(str(path))


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
    model = load_model(str(checkpoint))
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (4, 96, 96, 3), dtype=np.uint8)
    mels = rng.normal(size=(4, 80, 16)).astype(np.float32)
    expected = Generator(model, "cpu", backend="pytorch")(crops, mels)  # PyTorch: what runs on a GPU
    generator = Generator(model, "cpu", backend="pytorch")
    real_run = generator._run

    def small_memory(c, m):
        if len(c) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(c, m)

    monkeypatch.setattr(generator, "_run", small_memory)
    assert np.array_equal(generator(crops, mels), expected)
    assert generator.max_batch == 1  # 4, then 2, then 1


def test_half_precision_is_refused_on_the_cpu(checkpoint):
    with pytest.raises(LipSyncError, match="fp16 runs on a GPU"):
        Generator(load_model(str(checkpoint)), "cpu", "fp16")
