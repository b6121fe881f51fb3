"""How our SyncNet crops differ from the official pipeline's on the calibration clip, and what that does to a score.

    python bench/score_calibration.py                 # ../shared/calibration (or --folder), random weights

The official evaluation (joonson/syncnet_python's run_pipeline.py) finds the face with S3FD and
its own tracker; we use the project's detector (BlazeFace on a CPU, S3FD on a GPU) with missing
frames filled in. The calibration folder holds a real talking head (talking_head.mp4, 25 fps),
what the official Wav2Lip inference.py made of it (talking_head_official_default_pads.mp4, with the
real weights and S3FD) and the official S3FD paste boxes read back from it
(talking_head_official_boxes.json: y1, y2, x1, x2 per frame, pads 0 10 0 0 included, smoothed over
5 frames). Reported, over the clip's 25 fps frames:
- the IoU of our face boxes with the official S3FD boxes (the pads taken off), frame by frame;
- the IoU of the 224x224 crop windows both make (median-filtered over 13 frames, crop_scale 0.4):
  what SyncNet actually sees;
- the scores (offset, LSE-D, LSE-C) of the official Wav2Lip output with our crops and with crops from
  the official boxes, on the same random SyncNet weights (the release layout, seeded): how far the
  crops alone move the numbers. With random weights the numbers mean nothing on their own;
- LSE-C of the same random network against silence and against the clip's own sound, for the
  --audio_offset auto floor (docs/scoring.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import lipsync  # noqa: F401  (first: OMP_WAIT_POLICY set before anything loads torch)

# isort: split
import numpy as np

from lipsync.faces.detectors import get_detector
from lipsync.media.probe import probe_media
from lipsync.scoring import score_video
from lipsync.scoring.crops import CROP_SCALE, smooth_track
from lipsync.scoring.inputs import face_boxes

OFFICIAL_PADS = (0, 10, 0, 0)  # top, bottom, left, right: inference.py's defaults, in the boxes read back


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return w * h / (area - w * h)


def crop_windows(boxes: np.ndarray) -> np.ndarray:
    """The frame region each 224x224 crop covers (x1, y1, x2, y2), as lipsync.scoring.crops cuts it."""
    track = smooth_track(boxes)
    s, x, y = track.size, track.x, track.y
    return np.stack([x - s * (1 + CROP_SCALE), y - s, x + s * (1 + CROP_SCALE), y + s * (1 + 2 * CROP_SCALE)], 1)


def official_boxes(path: Path) -> np.ndarray:
    """The official S3FD boxes (x1, y1, x2, y2) per frame, the default pads taken off."""
    rows = np.array(json.loads(path.read_text())["default_pads"], np.float64)  # y1, y2, x1, x2 (end-exclusive)
    top, bottom, left, right = OFFICIAL_PADS
    return np.stack([rows[:, 2] + left, rows[:, 0] + top, rows[:, 3] - right, rows[:, 1] - bottom], 1)


def stats(values: np.ndarray) -> dict[str, float]:
    return {"median": round(float(np.median(values)), 3), "mean": round(float(values.mean()), 3),
            "p5": round(float(np.percentile(values, 5)), 3), "min": round(float(values.min()), 3)}


def silence_like(path: str, folder: Path) -> str:
    """A silent 16 kHz WAV as long as `path`'s sound."""
    out = folder / "silence.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(int(probe_media(path).duration * 16000), np.int16).tobytes())
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=str(ROOT.parent / "shared" / "calibration"))
    parser.add_argument("--detector", default="blazeface")
    parser.add_argument("--weights", default=None,
                        help="a SyncNet file (e.g. the tests' seeded random one, or the real syncnet_v2.model); "
                             "default: score_bench's random weights, built straight into OpenVINO")
    args = parser.parse_args()
    folder = Path(args.folder)
    clip, result = folder / "talking_head.mp4", folder / "talking_head_official_default_pads.mp4"
    theirs = official_boxes(folder / "talking_head_official_boxes.json")
    choice = get_detector(args.detector, "cpu")
    ours, missing = face_boxes(probe_media(str(result)), choice.detector)
    ours_source, _ = face_boxes(probe_media(str(clip)), choice.detector)
    n = min(len(ours), len(theirs))
    report = {"detector": f"{choice.name} ({choice.reason})", "frames": n, "frames_without_face": missing,
              "box_iou_on_the_result": stats(iou(ours[:n], theirs[:n])),
              "box_iou_on_the_source": stats(iou(ours_source[:n], theirs[:n])),
              "crop_window_iou": stats(iou(crop_windows(ours[:n]), crop_windows(theirs[:n]))),
              "mean_box_size_px": {"ours": round(float(np.mean(ours[:n, 2] - ours[:n, 0])), 1),
                                   "official": round(float(np.mean(theirs[:n, 2] - theirs[:n, 0])), 1)},
              "mean_centre_shift_px": np.round(((ours[:n, :2] + ours[:n, 2:]) / 2
                                                - (theirs[:n, :2] + theirs[:n, 2:]) / 2).mean(0), 1).tolist()}

    import openvino as ov
    from score_bench import random_weights

    from lipsync.runtime.devices import cpu_threads
    from lipsync.scoring.backends import OpenVINOSyncNet
    from lipsync.scoring.graph import build_graph

    if args.weights:
        from lipsync.scoring import load_syncnet

        net = load_syncnet(args.weights, "cpu", download=False)
    else:
        net = OpenVINOSyncNet(build_graph(random_weights()), ov.Core(), cpu_threads(), 20)
        net.reason = "random weights"
    report["weights"] = args.weights or "score_bench.random_weights()"
    scores = {}
    for name, boxes in (("our crops", None), ("official boxes", theirs)):
        score = score_video(str(result), network=net, detector=args.detector, boxes=boxes)
        scores[name] = {"offset": score.offset, "lse_d": round(score.lse_d, 4), "lse_c": round(score.lse_c, 4),
                        "windows": score.frames}
    with tempfile.TemporaryDirectory() as work:
        silent = score_video(str(result), silence_like(str(result), Path(work)), network=net, boxes=theirs)
    scores["official boxes, against silence"] = {"offset": silent.offset, "lse_d": round(silent.lse_d, 4),
                                                 "lse_c": round(silent.lse_c, 4)}
    a, b = scores["our crops"], scores["official boxes"]
    report["scores"] = scores
    report["score_difference"] = {key: round(a[key] - b[key], 4) for key in ("lse_d", "lse_c", "offset")}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
