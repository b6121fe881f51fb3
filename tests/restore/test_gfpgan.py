"""GFPGAN v1.4 written here (lipsync.restore.gfpgan) against the official architecture restated in gfpgan_reference.py.

Both are built with the same deterministic random weights (media.random_gfpgan_state: sane
activations, no NaN or overflow) and compared in fp32: the same keys and shapes as the
official `params_ema`, the same output up to float rounding, layer by layer (fast) and
for the whole network at 512x512 (slow: seconds per face on a CPU).
"""

from __future__ import annotations

import os

import gfpgan_reference as official
import media
import pytest
import torch

from lipsync.errors import LipSyncError
from lipsync.restore.gfpgan import GFPGAN, ModulatedConv2d, StyleConv, ToRGB, load_gfpgan

TOLERANCE = 1e-4  # fp32, layer outputs of order 1: differences of summation order only
RELATIVE = 2e-5  # the whole network: the largest difference over the largest output (float rounding, ~30 layers)


@pytest.fixture(scope="module")
def state():
    return media.random_gfpgan_state(seed=3)


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    return float((a - b).abs().max())


def test_our_network_has_exactly_the_official_keys_and_shapes():
    with torch.device("meta"):
        ours, theirs = GFPGAN().state_dict(), official.as_gfpganer_builds_it().state_dict()
    assert list(ours) == list(theirs)  # names, and their order
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert len(ours) == 285 and sum(v.numel() for v in ours.values()) == 87_143_276


@pytest.mark.parametrize("demodulate,upsample", [(True, False), (True, True), (False, False)])
def test_modulated_convolution_is_the_official_arithmetic(demodulate, upsample):
    """Scale-conv-scale (ours) against a per-sample weight and a grouped convolution (official), batch of 3."""
    torch.manual_seed(0)
    theirs = official.ModulatedConv2d(32, 24, 3 if demodulate else 1, 512, demodulate=demodulate,
                                      sample_mode="upsample" if upsample else None)
    ours = ModulatedConv2d(32, 24, 3 if demodulate else 1, demodulate=demodulate, upsample=upsample)
    ours.load_state_dict(theirs.state_dict())
    x, style = torch.randn(3, 32, 16, 16), torch.randn(3, 512)
    with torch.no_grad():
        assert _max_difference(ours(x, style), theirs(x, style)) < TOLERANCE


def test_style_layers_match_the_official_with_the_stored_noise():
    torch.manual_seed(1)
    conv_theirs, rgb_theirs = official.StyleConv(64, 32, 3, 512, sample_mode="upsample"), official.ToRGB(32, 512)
    with torch.no_grad():
        conv_theirs.weight.fill_(0.3)  # a visible noise strength
    conv_ours, rgb_ours = StyleConv(64, 32, upsample=True), ToRGB(32)
    conv_ours.load_state_dict(conv_theirs.state_dict())
    rgb_ours.load_state_dict(rgb_theirs.state_dict())
    x, style, noise, skip = torch.randn(2, 64, 8, 8), torch.randn(2, 512), torch.randn(1, 1, 16, 16), \
        torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        a, b = conv_ours(x, style, noise), conv_theirs(x, style, noise=noise)
        assert _max_difference(a, b) < TOLERANCE
        assert _max_difference(rgb_ours(a, style, skip), rgb_theirs(b, style, skip)) < TOLERANCE


@pytest.mark.slow
def test_whole_network_matches_the_official_at_512(state):
    """GFPGANer's forward (return_rgb=False) with the stored noise (randomize_noise=False), two faces, fp32."""
    theirs = official.as_gfpganer_builds_it().eval()
    theirs.load_state_dict(state)
    ours = GFPGAN().eval()
    ours.load_state_dict(state)
    x = torch.from_numpy(__import__("lipsync.restore.backends", fromlist=["example_faces"]).example_faces(2))
    x[1] = x[1].flip(-1) * 0.8  # two different faces in one batch: the per-face modulation must not mix
    with torch.inference_mode():
        expected = theirs(x, return_rgb=False, randomize_noise=False)[0]
        got = ours(x)
    assert torch.isfinite(expected).all() and 0.3 < float(expected.std()) < 10  # sane activations, not saturated
    scale = float(expected.abs().max())
    assert _max_difference(got, expected) < RELATIVE * scale, (_max_difference(got, expected), scale)
    assert float((expected[0] - expected[1]).abs().mean()) > 0.1  # the output depends on the face


def test_release_file_layout_loads_without_running_code(tmp_path, state):
    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": state, "params": state}, path)
    model = load_gfpgan(str(path))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert not model.training


def test_a_float16_release_file_loads_as_float32(tmp_path, state):
    """Through the shared reader (lipsync.weights.reader), as torch.load(weights_only=True) read it: half the size."""
    path = tmp_path / "GFPGANv1.4_fp16.pth"
    torch.save({"params_ema": {k: v.half() for k, v in state.items()}}, path)
    model = load_gfpgan(str(path))
    assert all(v.dtype == torch.float32 and torch.equal(v, state[k].half().float())
               for k, v in model.state_dict().items())


def test_wrong_or_dangerous_files_are_refused_with_one_sentence(tmp_path, state):
    wrong = tmp_path / "wav2lip_as_gfpgan.pth"
    torch.save({"params_ema": {k: v for k, v in list(state.items())[:10]}}, wrong)
    with pytest.raises(LipSyncError, match="not GFPGAN v1.4"):
        load_gfpgan(str(wrong))
    damaged = tmp_path / "truncated.pth"
    damaged.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(LipSyncError, match="not a readable PyTorch checkpoint"):
        load_gfpgan(str(damaged))

    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch '{marker}'",))

    evil = tmp_path / "evil.pth"
    torch.save({"params_ema": state, "evil": Payload()}, evil)
    with pytest.raises(LipSyncError, match="holds Python objects or code"):
        load_gfpgan(str(evil))
    assert not marker.exists()
