"""The one checkpoint reader (lipsync.weights.reader), for every model: what torch writes reads as torch reads it
(float16, bfloat16, float64, nn.Parameter; zip and legacy), what it cannot read is named in one sentence, and small
files that ask for gigabytes are refused before any of their data is read: the reading process's peak memory is
measured in a child process (ru_maxrss), since memory is the point."""

from __future__ import annotations

import io
import json
import os
import pickletools
import subprocess
import sys
import zipfile
from pathlib import Path

import crafted
import numpy as np
import pytest
import torch
from torch import nn

from lipsync.errors import LipSyncError
from lipsync.generator.checkpoint import read_weights
from lipsync.generator.layout import state_dict_shapes
from lipsync.generator.network import load_model
from lipsync.weights.formats import PICKLE_BYTES
from lipsync.weights.reader import CheckpointRefused, read_tensors

ROOT = Path(__file__).resolve().parents[1]
EXTRA_PEAK_MB = 5 * PICKLE_BYTES / 2**20  # what refusing a file may add to the process's peak: a few pickle caps


def _pickle_globals(path: Path) -> set[str]:
    """The globals a torch file's pickles name ('torch.HalfStorage', …): what torch wrote, checked, not assumed."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            streams = [io.BytesIO(archive.read(n)) for n in archive.namelist() if n.endswith("/data.pkl")]
    else:
        head = io.BytesIO(path.read_bytes()[:PICKLE_BYTES])
        streams = [head] * 5  # magic, protocol, system info, the object, the storage keys: read one after another
    names = set()
    for stream in streams:
        names |= {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(stream) if op.name == "GLOBAL"}
    return names


def _tagged_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters with an attribute set on them: torch.save writes _rebuild_parameter_with_state for these."""
    params = dict(model.named_parameters())
    for param in params.values():
        param.note = "ema"
    return params


def _small_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model[1].running_mean.uniform_(-1, 1)
    model[1].num_batches_tracked.fill_(5)
    return model


VARIANTS = {  # what people save -> a global torch names for it (what the reader must take)
    "float16 (model.half())": (lambda m: m.half().state_dict(), "torch.HalfStorage"),
    "float16 (every tensor)": (lambda m: {k: v.half() for k, v in m.state_dict().items()}, "torch.HalfStorage"),
    "bfloat16": (lambda m: m.bfloat16().state_dict(), "torch.BFloat16Storage"),
    "float64": (lambda m: m.double().state_dict(), "torch.DoubleStorage"),
    "parameters": (lambda m: dict(m.named_parameters()), "torch._utils._rebuild_parameter"),
    "parameters with attributes": (_tagged_parameters, "torch._utils._rebuild_parameter_with_state"),
}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_what_torch_writes_reads_as_torch_reads_it(tmp_path, variant, legacy):
    """Half precision, bfloat16, float64 and nn.Parameter files (refused as 'code' before): torch.load's values,
    floats as float32 (the backends run float32; bfloat16 and float16 widen exactly), counters as int64."""
    make, written = VARIANTS[variant]
    path = tmp_path / "saved.pth"
    torch.save({"state_dict": make(_small_model())}, path, _use_new_zipfile_serialization=not legacy)
    assert written in _pickle_globals(path)
    theirs = torch.load(path, weights_only=True)["state_dict"]
    ours = read_tensors(str(path), None, select=("state_dict",))
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        expected = tensor.detach().long() if name.endswith("num_batches_tracked") else tensor.detach().float()
        assert ours[name].dtype == expected.numpy().dtype and np.array_equal(ours[name], expected.numpy()), name


def test_a_float16_wav2lip_checkpoint_loads_as_float32(checkpoint, tmp_path):
    """People halve checkpoints to halve their size (every tensor, the counters too): the generator loads it."""
    saved = torch.load(checkpoint, weights_only=True)
    half = {k: v.half() for k, v in saved["state_dict"].items()}
    path = tmp_path / "wav2lip_fp16.pth"
    torch.save({**saved, "state_dict": half}, path)
    assert path.stat().st_size < checkpoint.stat().st_size * 0.55
    weights = read_weights(str(path))
    assert list(weights) == list(state_dict_shapes())
    for key, tensor in half.items():
        name = key.removeprefix("module.")
        assert weights[name].dtype == (np.int64 if name.endswith("tracked") else np.float32)
        assert np.array_equal(weights[name], tensor.numpy().astype(weights[name].dtype)), name
    model = load_model(str(path))
    assert next(model.parameters()).dtype == torch.float32

    saved["state_dict"]["module.output_block.1.bias"] = torch.zeros(3, dtype=torch.int64)  # an integer weight
    torch.save(saved, path)
    with pytest.raises(LipSyncError, match="weight 'output_block.1.bias' is stored as int64, not as floating point"):
        read_weights(str(path))


def test_dtypes_it_cannot_read_are_named_only_when_wanted(tmp_path):
    """int32 or float8 weights get a sentence naming the dtype (not 'holds code'); the same tensors in an optimizer
    state, which is never read, do not stop the weights loading."""
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": {"w": torch.zeros(3, dtype=torch.int32)}}, path)
    with pytest.raises(LipSyncError, match=r"stores its weights as int32 \('w'\): lipsync reads float32"):
        read_tensors(str(path), None, select=("state_dict",))
    torch.save({"state_dict": {"w": torch.zeros(3, dtype=torch.float8_e4m3fn)}}, path)
    assert "torch._utils._rebuild_tensor_v3" in _pickle_globals(path)  # torch's own way for dtypes like these
    with pytest.raises(LipSyncError, match=r"stores its weights as float8_e4m3fn \('w'\)"):
        read_tensors(str(path), None, select=("state_dict",))
    torch.save({"state_dict": {"w": torch.ones(3)}, "optimizer": {"a": torch.zeros(2, dtype=torch.int32),
                                                                   "b": torch.zeros(2, dtype=torch.float8_e5m2),
                                                                   "c": torch.zeros(2, dtype=torch.bool)}}, path)
    assert np.array_equal(read_tensors(str(path), None, select=("state_dict",))["w"], np.ones(3, np.float32))


def test_views_that_repeat_or_sliver_their_storage_are_named(tmp_path):
    """Right names and shapes, wrong views: a stride-0 view (2.4 M floats from one) and a slice whose storage
    is ten times the tensor are refused by their sizes, before the storage is read."""
    path = tmp_path / "views.pth"
    torch.save({"w": torch.zeros(1).expand(512, 512, 3, 3)}, path)
    with pytest.raises(LipSyncError, match=r"tensor 'w' repeats values: 2,359,296 of them from a storage of 1 \("):
        read_tensors(str(path), {"w": (512, 512, 3, 3)})
    torch.save({"w": torch.arange(100.0)[:10]}, path)
    with pytest.raises(LipSyncError, match=r"'w' is 10 values of a storage of 100 .*without \.clone\(\)"):
        read_tensors(str(path), {"w": (10,)})


def test_layouts_and_sentences_are_the_callers(tmp_path):
    """`select`, the prefix, the layout and the sentences' words are the caller's; a pickle naming any other
    global is refused as code, never run."""
    path = tmp_path / "release.pth"
    torch.save({"params": {"module.a": torch.ones(2)}, "other": 1}, path)
    assert list(read_tensors(str(path), {"a": (2,)}, select=("params_ema", "params"))) == ["a"]
    with pytest.raises(LipSyncError, match=r"holds no model weights \(no 'params_ema'\)\. Use X\.$"):
        read_tensors(str(path), None, select=("params_ema",), hint="Use X.")
    with pytest.raises(LipSyncError, match=r"is not the thing: 1 of its 1 weights are missing and 0 have"):
        read_tensors(str(path), {"b": (2,)}, select=("params",), what="the thing")
    torch.save({"params": {"a": torch.ones(2)}, "model": nn.ReLU()}, path)
    with pytest.raises(CheckpointRefused, match="Refused to load .* holds Python objects or code"):
        read_tensors(str(path), None, select=("params",))


# ------------------------------------------------------------------------------------------------ memory

READ_IN_CHILD = """
import json, resource, sys
from lipsync.errors import LipSyncError
from lipsync.generator.checkpoint import read_state_dict, read_weights
read = read_weights if sys.argv[2] == "layout" else read_state_dict
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    said = "read %d arrays" % len(read(sys.argv[1]))
except LipSyncError as err:
    said = str(err)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"said": said, "extra_mb": (peak - before) / 1024}))
"""


def _read_in_child(path: Path, layout: bool) -> dict:
    """Read `path` in a fresh process (numpy and the reader, no torch): what it said and how much its peak
    memory (ru_maxrss) grew while reading."""
    proc = subprocess.run([sys.executable, "-c", READ_IN_CHILD, str(path), "layout" if layout else "none"],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def attacks(tmp_path_factory) -> dict[str, Path]:
    """The files of issue 28, made once: on the code before it, 1.0, 2.0 and 3.0 GB of peak memory."""
    folder = tmp_path_factory.mktemp("attacks")
    return {"stride-0 view, legacy": crafted.stride_zero(folder / "stride0_legacy.pth"),
            "stride-0 view, zip": crafted.stride_zero(folder / "stride0_zip.pth", legacy=False),
            "data.pkl inflating to 1 GiB": crafted.pickle_bomb(folder / "pickle_bomb.pth"),
            "storage deflated from 1 GiB": crafted.storage_bomb(folder / "storage_bomb.pth"),
            "storage inflating past its declared size": crafted.lying_storage(folder / "lying.pth")}


NOT_WAV2LIP = "is not the Wav2Lip generator: 352 of its 352 weights are missing"
DAMAGED = "is not a readable PyTorch checkpoint"
SAID = {  # (attack, read with the generator's layout or without) -> the sentence
    ("stride-0 view, legacy", True): NOT_WAV2LIP,
    ("stride-0 view, legacy", False): "tensor 'w' repeats values: 268,435,456 of them from a storage of 1",
    ("stride-0 view, zip", True): NOT_WAV2LIP,
    ("stride-0 view, zip", False): "tensor 'w' repeats values: 268,435,456 of them from a storage of 1",
    ("data.pkl inflating to 1 GiB", True): DAMAGED,
    ("data.pkl inflating to 1 GiB", False): DAMAGED,
    ("storage deflated from 1 GiB", True): NOT_WAV2LIP,
    ("storage deflated from 1 GiB", False): "declares 1,073,741,824 bytes of weights in a file of",
    ("storage inflating past its declared size", True): NOT_WAV2LIP,
    ("storage inflating past its declared size", False): "read 1 arrays",  # its 16 declared floats, no more
}


@pytest.mark.parametrize("attack,layout", list(SAID), ids=[f"{a}, {'layout' if w else 'no layout'}" for a, w in SAID])
def test_small_files_asking_for_gigabytes_are_refused_before_reading(attacks, attack, layout):
    """Each of issue 28's files, read with the generator's layout and without one: the sentence, with the
    process's peak memory a few MB above where it started (the code before took it up by 1 to 3 GB)."""
    path = attacks[attack]
    assert path.stat().st_size < 2 << 20  # about 1 MB, or 0.4 KB
    got = _read_in_child(path, layout)
    assert SAID[(attack, layout)] in got["said"], got["said"]
    assert got["extra_mb"] < EXTRA_PEAK_MB, got


def test_reading_holds_about_the_weights_own_size(checkpoint):
    """An official-layout file is read into about its state dict's own bytes (145 MB), not a copy more."""
    weights = sum(int(np.prod(shape)) * 4 for shape in state_dict_shapes().values()) / 2**20
    got = _read_in_child(checkpoint, layout=True)
    assert got["said"] == f"read {len(state_dict_shapes())} arrays"
    assert got["extra_mb"] < weights * 1.1 + EXTRA_PEAK_MB, (got, weights)
