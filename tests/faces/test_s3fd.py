"""lipsync.faces.s3fd against the code Wav2Lip's boxes came from: face-alignment's S3FD (the reference the test
environment installs) and the official Wav2Lip's vendored copy of it (restated below where it differs).

The weights are random (the published file is not downloaded in tests) but rescaled by media.random_s3fd so that
each frame has confident boxes, overlapping ones for NMS to remove, and candidates below the final threshold.
"""

from __future__ import annotations

import json
from pathlib import Path

import media
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lipsync.errors import LipSyncError
from lipsync.faces.s3fd import S3FDNet, detect_faces, load_net

LAYOUT = Path(__file__).resolve().parents[1] / "data" / "s3fd_state_dict.json"  # the published checkpoint's keys


def _face_alignment():
    return pytest.importorskip("face_alignment.detection.sfd.sfd_detector",
                               reason="face-alignment's S3FD is the reference these boxes are compared with")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Four different views of the astronaut (pan_zoom_frames' first and last frames are the same view)."""
    return [np.ascontiguousarray(f) for f in media.pan_zoom_frames(5, (192, 144))][:4]


@pytest.fixture(scope="module")
def net(frames) -> S3FDNet:
    return media.random_s3fd(frames)


@pytest.fixture(scope="module")
def weights(net, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("s3fd") / "s3fd_random.pth"
    torch.save(net.state_dict(), path)
    return path


def _batch(frames: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)


def _layout(state: dict[str, torch.Tensor]) -> list[list]:
    return [[name, list(value.shape)] for name, value in state.items()]


def test_the_network_has_the_published_checkpoints_keys_and_shapes():
    assert _layout(S3FDNet().state_dict()) == json.loads(LAYOUT.read_text())


def test_the_recorded_layout_is_face_alignments():
    _face_alignment()
    from face_alignment.detection.sfd.net_s3fd import s3fd

    assert _layout(s3fd().state_dict()) == json.loads(LAYOUT.read_text())


def test_the_network_computes_what_face_alignments_does(frames, net):
    _face_alignment()
    from face_alignment.detection.sfd.net_s3fd import s3fd

    theirs = s3fd().eval()
    theirs.load_state_dict(net.state_dict())
    x = _batch(frames).float().flip(1) - torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected, got = theirs(x), [t for pair in net(x) for t in pair]
    assert len(got) == len(expected) == 12
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


@pytest.mark.slow  # the same network twice; the fast lane compares with the official code below
def test_boxes_and_scores_equal_face_alignments(frames, net, weights):
    """Bit for bit, every box face-alignment keeps, in its order; a flat grey frame (ties everywhere) too."""
    sfd = _face_alignment()
    reference = sfd.SFDDetector("cpu", path_to_detector=str(weights))
    grey = np.full_like(frames[0], 128)
    for batch in (frames, [frames[1], grey, frames[2]]):
        expected = reference.detect_from_batch(_batch(batch))
        got = detect_faces(net, _batch(batch))
        assert len(got) == len(batch)
        for ours, theirs in zip(got, expected):
            assert ours.dtype == np.float64 and np.array_equal(ours, np.array(theirs).reshape(-1, 5))
    counts = [len(found) for found in detect_faces(net, _batch(frames))]
    assert min(counts) >= 3, counts  # the weights give NMS and the thresholds something to do


def _official_nms(dets: np.ndarray, overlap: float) -> list[int]:
    """Greedy NMS as the official bbox.nms: by score, best first; IoU with +1 pixel areas."""
    x1, y1, x2, y2, scores = (dets[:, i] for i in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = scores.argsort()[::-1], []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        order = rest[w * h / (areas[i] + areas[rest] - w * h) <= overlap]
    return keep


def official_detections(net: torch.nn.Module, frames: list[np.ndarray]) -> list[list[np.ndarray]]:
    """The official Wav2Lip's face_detection package on a batch of cv2 frames, restated.

    api.get_detections_for_batch reverses the channels, sfd/detect.batch_detect subtracts the means in numpy
    (float64, then float32 for the network), decodes each candidate cell for every frame in torch float32
    (face-alignment decodes in float64: the one difference that reaches the boxes), stacks the candidates as a
    float32 (cells, frames, 5) array, and sfd_detector.detect_from_batch runs NMS at 0.3 per frame and keeps
    the boxes scoring above 0.5. Its network file is face-alignment's but for in-place ReLUs.
    """
    images = np.stack(frames)[..., ::-1].copy()
    x = torch.from_numpy((images - np.array([104, 117, 123])).transpose(0, 3, 1, 2)).float()
    with torch.no_grad():
        heads = net(x)
    rows = []
    for level, (logits, offsets) in enumerate(heads):
        probs = F.softmax(logits, dim=1)
        stride = 2 ** (level + 2)
        for _, h, w in zip(*np.where(probs[:, 1].numpy() > 0.05)):
            prior = torch.tensor([stride / 2 + w * stride, stride / 2 + h * stride, stride * 4.0, stride * 4.0],
                                 dtype=torch.float32)
            loc = offsets[:, :, h, w]
            centre = prior[:2] + loc[:, :2] * 0.1 * prior[2:]
            size = prior[2:] * torch.exp(loc[:, 2:] * 0.2)
            corner = centre - size / 2
            rows.append(torch.cat([corner, corner + size, probs[:, 1, h, w, None]], dim=1).numpy())
    candidates = np.array(rows) if rows else np.zeros((1, len(frames), 5))
    kept = [candidates[_official_nms(candidates[:, i], 0.3), i] for i in range(len(frames))]
    return [[box for box in boxes if box[-1] > 0.5] for boxes in kept]


def test_boxes_match_the_official_wav2lip_code(frames, net, weights):
    """Same boxes in the same order, scores equal, coordinates within 1e-3 px (float32 against float64
    decoding), and the detector's integer face box the one the official inference takes."""
    from lipsync.faces.detectors import S3FDDetector
    from lipsync.geometry import Box

    official = official_detections(net, frames)
    ours = detect_faces(net, _batch(frames))
    worst = 0.0
    for theirs, mine in zip(official, ours):
        theirs = np.array(theirs).reshape(-1, 5)
        assert theirs.dtype == np.float32 and len(theirs) == len(mine) >= 3
        assert np.array_equal(theirs[:, 4].astype(np.float64), mine[:, 4])
        worst = max(worst, float(np.abs(theirs[:, :4] - mine[:, :4]).max()))
    assert worst < 1e-3
    faces = S3FDDetector(str(weights), "cpu", batch_size=3).detect(frames)  # two batches: 3 + 1 frames
    assert faces == [Box(*map(int, np.clip(boxes[0], 0, None)[:4])) for boxes in official]


def test_frames_without_a_confident_box_have_no_face(frames, net, tmp_path):
    from lipsync.faces.detectors import S3FDDetector

    timid = S3FDNet()
    timid.load_state_dict(net.state_dict())
    with torch.no_grad():
        for name, head in timid.named_children():
            if name.endswith("_conf"):
                head.bias[-1] -= 6.0  # every face probability below 0.5, a few still candidates
    assert all(len(found) == 0 for found in detect_faces(timid, _batch(frames[:2])))
    torch.save(timid.state_dict(), tmp_path / "timid.pth")
    assert S3FDDetector(str(tmp_path / "timid.pth"), "cpu").detect(frames[:2]) == [None, None]


def test_a_damaged_weights_file_is_one_sentence(tmp_path):
    bad = tmp_path / "s3fd-619a316812.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(LipSyncError, match="could not be loaded .* Delete it"):
        load_net(bad, "cpu")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_weights_load_through_the_shared_reader(net, tmp_path, legacy):
    """lipsync.weights.reader reads S3FD's file too: float16 and parameter files load (as float32); a file naming
    other objects is refused as code; another network's file or a stride-0 view is the detector's sentence."""
    save = {"_use_new_zipfile_serialization": not legacy}
    half, params = tmp_path / "s3fd_fp16.pth", tmp_path / "s3fd_params.pth"
    torch.save({k: v.half() for k, v in net.state_dict().items()}, half, **save)
    torch.save(dict(net.named_parameters()), params, **save)
    for path, expected in ((half, lambda v: v.half().float()), (params, lambda v: v)):
        loaded = load_net(path, "cpu").state_dict()
        assert all(torch.equal(loaded[k], expected(v)) for k, v in net.state_dict().items()), path.name
    evil = tmp_path / "s3fd_with_an_object.pth"
    torch.save({**net.state_dict(), "model": torch.nn.ReLU()}, evil, **save)
    with pytest.raises(LipSyncError, match="Refused to load .* holds Python objects or code.* --detector blazeface"):
        load_net(evil, "cpu")
    foreign = tmp_path / "stride0.pth"
    torch.save({"w": torch.zeros(1).expand(1 << 28)}, foreign, **save)
    with pytest.raises(LipSyncError, match=r"could not be loaded \(not the S3FD face detector: \d+ of its \d+ "
                                           r"weights are missing.*\)\. Delete it"):
        load_net(foreign, "cpu")
