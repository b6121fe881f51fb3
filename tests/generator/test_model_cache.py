"""The model cache is keyed by content and verified (issue 28, item 5): a checkpoint replaced in place by another
of the same size, its mtime put back, is hashed again (its inode or ctime moved); a cached OpenVINO model whose
files no longer match the hashes in its meta.json is built again, with a line saying so. The generator's and the
restorer's caches both go through lipsync.weights.openvino_cache; the generator's is replayed end to end in
test_backends.py."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import media
import numpy as np
import pytest

from lipsync.storage import files
from lipsync.weights import openvino_cache as ovmodels

openvino = pytest.importorskip("openvino", reason="the model cache holds OpenVINO models")


def _counting_hashes(monkeypatch) -> list[Path]:
    """Every file lipsync.storage.files hashes from here on (the memo's misses)."""
    hashed: list[Path] = []
    real = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda path: hashed.append(Path(path)) or real(path))
    return hashed


def test_a_checkpoint_replaced_with_its_mtime_kept_is_hashed_again(tmp_path, monkeypatch):
    """Same path, size, mtime and inode: only the ctime tells, and the user cannot set it back. A rename over the
    file (a new inode) is seen too; an untouched file is hashed once."""
    hashed = _counting_hashes(monkeypatch)
    path = tmp_path / "wav2lip_gan.pth"
    path.write_bytes(b"A" * 4096)
    first = files.checkpoint_sha256(path, tmp_path)
    assert files.checkpoint_sha256(path, tmp_path) == first and len(hashed) == 1  # remembered
    media.overwrite_keeping_mtime(path, b"B" * 4096)
    assert files.checkpoint_sha256(path, tmp_path) == files.sha256_file(path) != first

    other = tmp_path / "unpacked.pth"
    other.write_bytes(b"C" * 4096)
    mtime = path.stat().st_mtime_ns
    os.utime(other, ns=(mtime, mtime))
    os.replace(other, path)  # as an archive unpacks: a new file renamed over the old, mtime kept
    assert files.checkpoint_sha256(path, tmp_path) == files.sha256_file(path)
    memo = json.loads((tmp_path / "sha256.json").read_text())
    assert list(memo) == [os.path.realpath(path)]  # one entry per file, not one per version of it


def _tiny_model():
    """An OpenVINO model whose output is its input plus a constant kept in the .bin (1, 2, 3, 4)."""
    import openvino.opset13 as ops

    x = ops.parameter([1, 4], np.float32, name="x")
    return openvino.Model([ops.add(x, ops.constant(np.arange(1, 5, dtype=np.float32).reshape(1, 4)))], [x])


def _load(folder: Path):
    core = openvino.Core()
    return ovmodels.load_or_build(folder, "tiny.xml", build=_tiny_model,
                                  prepare=lambda model: core.compile_model(model, "CPU"), core=core)


def _run(made) -> np.ndarray:
    return made.value(np.zeros((1, 4), np.float32))[0][0]


def test_a_same_size_corrupted_bin_is_built_again_with_a_line(tmp_path, monkeypatch, caplog):
    """The .bin's bytes changed, its size not: it still reads and compiles (into wrong numbers), so only its hash
    tells. A verified entry is not hashed again at the next start; a changed one is."""
    folder = tmp_path / "tiny-entry"
    assert _load(folder).state == "built now"
    assert set(json.loads((folder / "meta.json").read_text())["sha256"]) == {"tiny.xml", "tiny.bin"}
    hashed = _counting_hashes(monkeypatch)
    cached = _load(folder)
    assert cached.state == "cached" and hashed == []  # remembered when it was saved
    assert np.array_equal(_run(cached), [1, 2, 3, 4])

    weights = folder / "tiny.bin"
    media.overwrite_keeping_mtime(weights, weights.read_bytes()[::-1])  # the floats' bytes reversed: same size
    wrong = openvino.Core().compile_model(str(folder / "tiny.xml"), "CPU")(np.zeros((1, 4), np.float32))[0][0]
    assert not np.array_equal(wrong, [1, 2, 3, 4])  # it still loads and runs, silently wrong
    with caplog.at_level(logging.WARNING, logger="lipsync.weights.openvino_cache"):
        rebuilt = _load(folder)
    assert rebuilt.state == "built again, the cached copy did not match its hash (tiny.bin)"
    assert f"Cached OpenVINO model at {folder} did not match its hash (tiny.bin); building it again" in caplog.text
    assert np.array_equal(_run(rebuilt), [1, 2, 3, 4]) and weights in hashed
    assert _load(folder).state == "cached"


def test_an_entry_without_hashes_is_built_again_once(tmp_path):
    """An entry an older version wrote (no hashes in its meta.json) cannot be verified: built again, once."""
    folder = tmp_path / "tiny-entry"
    _load(folder)
    meta = json.loads((folder / "meta.json").read_text())
    del meta["sha256"]
    (folder / "meta.json").write_text(json.dumps(meta))
    assert _load(folder).state == "built again, the cached copy had no hash of its files (an older version's)"
    assert _load(folder).state == "cached"
    shutil.rmtree(folder)
    assert _load(folder).state == "built now"
