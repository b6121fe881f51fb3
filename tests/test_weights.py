"""Where checkpoints are looked for, and what a user is told when they cannot be had."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lipsync.errors import LipSyncError
from lipsync.weights import locate as weights


def test_explicit_path_wins(monkeypatch, tmp_path):
    monkeypatch.setenv(weights.CHECKPOINT_ENV, str(tmp_path / "env.pth"))
    assert weights.resolve_checkpoint(str(tmp_path / "mine.pth")) == str(tmp_path / "mine.pth")


def test_environment_then_weights_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setenv(weights.CHECKPOINT_ENV, "/somewhere/w.pth")
    assert weights.resolve_checkpoint() == "/somewhere/w.pth"
    monkeypatch.delenv(weights.CHECKPOINT_ENV)
    (tmp_path / "wav2lip_gan.pth").write_bytes(b"x")
    assert weights.resolve_checkpoint() == str(tmp_path / "wav2lip_gan.pth")
    (tmp_path / "wav2lip.pth").write_bytes(b"x")
    assert weights.resolve_checkpoint("wav2lip") == str(tmp_path / "wav2lip.pth")
    assert sorted(weights.available_checkpoints()) == ["wav2lip", "wav2lip_gan"]


def test_offline_download_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    monkeypatch.delenv(weights.CHECKPOINT_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LipSyncError) as err:
        weights.resolve_checkpoint()
    text = str(err.value)
    assert "huggingface.co/Nekochu/Wav2Lip/resolve/main/wav2lip_gan.pth" in text and str(tmp_path) in text


def test_download_is_checked_against_sha256(monkeypatch, tmp_path):
    """A download whose bytes differ from the pinned file is deleted, not used."""
    import huggingface_hub

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def fake_download(repo_id, filename, local_dir):
        assert (repo_id, filename) == ("Nekochu/Wav2Lip", "wav2lip_gan.pth")
        path = tmp_path / filename
        path.write_bytes(b"not the real checkpoint")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    with pytest.raises(LipSyncError, match="checksum"):
        weights.resolve_checkpoint()
    assert not (tmp_path / "wav2lip_gan.pth").exists()


def test_good_download_lands_in_weights(monkeypatch, tmp_path):
    import huggingface_hub

    payload = b"pretend checkpoint bytes"
    pinned = weights.HubFile("tiny.pth", "someone/repo", "sub/tiny.pth", hashlib.sha256(payload).hexdigest(),
                             len(payload))
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def fake_download(repo_id, filename, local_dir):
        path = tmp_path / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert weights.download_file(pinned) == tmp_path / "tiny.pth"
    assert (tmp_path / "tiny.pth").read_bytes() == payload


def test_this_checkout_keeps_its_weights_in_its_own_weights_folder():
    """What run.sh, the Space and the README rely on: the package of a checkout finds weights/ beside it."""
    assert weights.default_weights_dir() == Path(__file__).resolve().parents[1] / "weights"


def test_weights_folder_of_a_checkout_and_of_an_installed_package(tmp_path):
    checkout = tmp_path / "repo"
    (checkout / "lipsync").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("[project]\n")
    assert weights.default_weights_dir(checkout / "lipsync") == checkout / "weights"
    site = tmp_path / "site-packages"  # an installed package: never a weights/ folder in site-packages
    (site / "lipsync").mkdir(parents=True)
    assert weights.default_weights_dir(site / "lipsync") == Path.home() / ".cache" / "lipsync" / "weights"
