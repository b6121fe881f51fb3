"""Padding, smoothing and missing faces, as the official code does them (and better for missing faces)."""

from __future__ import annotations

import media
import numpy as np
import pytest

from lipsync.errors import LipSyncError
from lipsync.faces.crops import crops_from_detections, smooth_boxes
from lipsync.faces.detectors import HaarDetector
from lipsync.geometry import Box


def test_pads_are_clipped_to_the_frame():
    assert Box(5, 8, 90, 95).padded((10, 10, 10, 10), height=100, width=96) == Box(0, 0, 96, 100)
    assert Box(20, 20, 60, 60).padded((0, 10, 0, 0), height=100, width=100) == Box(20, 20, 60, 70)


def test_smoothing_is_the_official_in_place_integer_mean():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [2, 2, 12, 12], [3, 3, 13, 13],
                      [4, 4, 14, 14], [9, 9, 19, 19], [20, 20, 30, 30]])
    out = smooth_boxes(boxes)
    assert out[0].tolist() == [2, 2, 12, 12]  # mean of rows 0..4
    assert out[1].tolist() == [3, 3, 13, 13]  # mean(1,2,3,4,9) = 3.8, truncated
    # rows 3.. use the last five rows, which by then include smoothed values (in place)
    tail = boxes.copy()
    for i in range(len(tail)):
        window = tail[len(tail) - 5:] if i + 5 > len(tail) else tail[i: i + 5]
        tail[i] = np.mean(window, axis=0)
    assert out.tolist() == tail.tolist()
    assert out.dtype == boxes.dtype


def test_frames_without_a_face_pass_through():
    """Before the first face, after the last and in long gaps, frames pass through and are not smoothed with."""
    gone = [None] * 4
    detections = [None, Box(10, 10, 50, 50), *gone, Box(12, 10, 52, 50), None]
    crops = crops_from_detections(detections, (0, 0, 0, 0), 100, 100)
    assert crops[0] is None and crops[2:6] == [None] * 4 and crops[7] is None
    assert crops[1] == crops[6] == Box.from_tblr(10, 50, 11, 51)  # smoothed over the two frames that have a face


def test_a_detector_blinking_for_a_few_frames_is_bridged():
    """A gap of up to three frames between two faces gets boxes on the line between them."""
    detections = [Box(10, 10, 50, 50), None, None, None, Box(14, 10, 54, 50)]
    crops = crops_from_detections(detections, (0, 0, 0, 0), 100, 100, smooth=False)
    assert [c.tblr for c in crops] == [(10, 50, 10, 50), (10, 50, 11, 51), (10, 50, 12, 52), (10, 50, 13, 53),
                                      (10, 50, 14, 54)]


def test_no_face_anywhere_is_a_clear_error():
    with pytest.raises(LipSyncError, match="No face was found"):
        crops_from_detections([None, None], (0, 10, 0, 0), 100, 100)


def test_haar_finds_the_astronaut_face_and_not_a_blank_frame():
    x1, y1, x2, y2 = HaarDetector().detect_one(media.astronaut_bgr())
    assert 165 <= x1 <= 190 and 60 <= y1 <= 95 and 255 <= x2 <= 285 and 155 <= y2 <= 190  # brows to chin
    assert HaarDetector().detect_one(np.full((240, 320, 3), 128, np.uint8)) is None


def test_streamed_crops_equal_the_official_smoothing_as_soon_as_they_settle():
    """Crops read while detections still arrive equal those of the whole list smoothed at the end."""
    from lipsync.faces.crops import CropTrack

    rng = np.random.default_rng(7)
    detections = []
    for _ in range(40):
        if rng.random() < 0.2:
            detections.append(None)
        else:
            x, y = rng.integers(20, 60, 2)
            detections.append(Box(int(x), int(y), int(x + rng.integers(30, 40)), int(y + rng.integers(30, 40))))
    expected = crops_from_detections(detections, (3, 10, 2, 4), 120, 160)
    track = CropTrack((3, 10, 2, 4), 120, 160)
    early = {}
    for start in range(0, 40, 3):
        track.add(detections[start: start + 3])
        for i in range(len(track.detections)):
            try:
                early[i] = track.crop(i, timeout=0)
            except TimeoutError:
                pass
    assert len(early) >= 30  # most crops settle before the stream ends
    track.finish()
    assert all(early[i] == expected[i] for i in early)
    assert [track.crop(i) for i in range(40)] == expected


def test_a_waiting_crop_gets_the_detection_error():
    from lipsync.faces.crops import CropTrack

    track = CropTrack((0, 10, 0, 0), 100, 100)
    track.add([Box(10, 10, 50, 50)])
    with pytest.raises(TimeoutError):
        track.crop(0, timeout=0.01)  # four more faces or the end of the stream are needed
    track.fail(LipSyncError("decoder died"))
    with pytest.raises(LipSyncError, match="decoder died"):
        track.crop(0)


def test_pads_larger_than_the_frame_are_refused():
    from lipsync.faces.crops import CropTrack

    with pytest.raises(LipSyncError, match="bottom padding .* larger than the 160x120 frame"):
        CropTrack((0, 500, 0, 0), 120, 160)


def test_haar_follows_a_moving_face_near_its_full_frame_box():
    """Searching near the previous face gives boxes within a few pixels of a full-frame scan."""
    frames = list(media.pan_zoom_frames(20, (640, 360)))
    haar = HaarDetector()
    tracked = haar.detect(frames)
    alone = [haar.detect_one(f) for f in frames]
    pairs = [(a, b) for a, b in zip(tracked, alone) if a is not None and b is not None]
    assert len(pairs) >= 15
    assert np.median([np.abs(np.subtract(a, b)).max() for a, b in pairs]) <= 12


def test_s3fd_sees_the_input_the_official_code_gives_it(tmp_path, monkeypatch):
    """The official vendored S3FD gets frame[..., ::-1] - (104, 117, 123); ours must give the network the same."""
    import torch

    from lipsync.faces.detectors import S3FDDetector
    from lipsync.faces.s3fd import S3FDNet

    weights = tmp_path / "s3fd_random.pth"
    torch.manual_seed(0)
    torch.save(S3FDNet().state_dict(), weights)
    detector = S3FDDetector(str(weights), "cpu", batch_size=2)
    seen = []
    net = detector._net
    original_forward = net.forward
    monkeypatch.setattr(net, "forward", lambda x: seen.append(x.clone()) or original_forward(x))
    frames = [np.ascontiguousarray(f) for f in media.pan_zoom_frames(3, (64, 48))]
    found = detector.detect(frames)
    assert len(found) == 3
    official = np.stack(frames)[..., ::-1] - np.array([104, 117, 123])
    ours = torch.cat(seen).numpy()
    assert np.array_equal(ours, official.transpose(0, 3, 1, 2).astype(np.float32))


def test_auto_picks_the_fast_offline_detector_on_a_cpu():
    pytest.importorskip("openvino", reason="BlazeFace, the CPU detector 'auto' picks, runs on OpenVINO, which is "
                                           "not installed")
    from lipsync.faces.detectors import make_detector

    choice = make_detector("auto", "cpu", allow_download=False)
    assert choice.name == "blazeface" and "--detector s3fd" in choice.reason


def test_s3fd_without_weights_offline_says_what_to_do(monkeypatch, tmp_path):
    from lipsync.faces.detectors import make_detector
    from lipsync.weights import locate as weights

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(LipSyncError, match="--detector haar"):
        make_detector("s3fd", "cpu", allow_download=False)
