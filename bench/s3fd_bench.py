"""S3FD through lipsync.faces.s3fd against face-alignment's SFDDetector: the same frames, weights and CPU, one run.

Times the whole batch detection (network, softmax, decoding, NMS) and, apart, the part after the network
(candidate decoding and NMS from the same network outputs), where the two differ: face-alignment loops over the
candidate cells in Python, lipsync.faces.s3fd decodes them all at once. Checks that the boxes are the same.

Frames: the first frames of ../shared/calibration/talking_head.mp4 (640x640), shrunk to --side px. Weights: the
published s3fd-619a316812.pth when weights/ or torch's cache holds it, else random ones rescaled to find boxes
(tests/media.random_s3fd; they give far more candidates than the real weights on a real face).

    .venv/bin/python bench/s3fd_bench.py [--frames 8] [--side 320] [--repeats 3] [--face-logit -4.5]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fit_box_map as fit  # first: puts the repository and tests/ on the path, imports lipsync before torch loads

# isort: split
import cv2
import media
import numpy as np
import torch
import torch.nn.functional as F

from lipsync.faces import s3fd
from lipsync.weights.locate import find_s3fd


def _best_of(repeats: int, work) -> tuple[float, object]:
    """The shortest of `repeats` runs of `work()` in seconds, and its last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--side", type=int, default=320, help="frames shrunk to this many px (the clip is 640)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--face-logit", type=float, default=-4.5,
                        help="random weights: mean face logit (lower: fewer candidates and faces)")
    args = parser.parse_args()
    from face_alignment.detection.sfd.detect import get_predictions
    from face_alignment.detection.sfd.sfd_detector import SFDDetector

    frames = [cv2.resize(f, (args.side, args.side), interpolation=cv2.INTER_AREA)
              for f in fit.calibration_frames()[: args.frames]]
    path = find_s3fd(download=False)
    if path:
        net, source = s3fd.load_net(path, "cpu"), f"published weights {path}"
        reference = SFDDetector("cpu", path_to_detector=path)
    else:
        net = media.random_s3fd(frames, face_logit=(args.face_logit, 2.0))
        source = f"random weights rescaled to find boxes (tests/media.random_s3fd, face logit {args.face_logit})"
        with tempfile.TemporaryDirectory() as folder:  # face-alignment reads its weights from a file
            torch.save(net.state_dict(), f"{folder}/s3fd_random.pth")
            reference = SFDDetector("cpu", path_to_detector=f"{folder}/s3fd_random.pth")
    batch = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    print(f"# {len(frames)} frames {args.side}x{args.side}, {source}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"# load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    theirs_s, theirs = _best_of(args.repeats, lambda: reference.detect_from_batch(batch))
    ours_s, ours = _best_of(args.repeats, lambda: s3fd.detect_faces(net, batch))
    same = all(np.array_equal(a, np.array(b).reshape(-1, 5)) for a, b in zip(ours, theirs))

    x = batch.float().flip(1) - torch.tensor(s3fd.MEANS).view(1, 3, 1, 1)
    with torch.no_grad():
        heads = net(x)
    maps = [t.numpy() for logits, offsets in heads for t in (F.softmax(logits, dim=1), offsets)]
    candidates = len(get_predictions(maps, len(frames))[0])
    post_theirs, _ = _best_of(args.repeats, lambda: [reference._filter_bboxes(b)
                                                     for b in get_predictions(maps, len(frames))])
    post_ours, _ = _best_of(args.repeats, lambda: [s3fd._nms_faces(b) for b in s3fd._candidates(heads)])

    print(f"candidates per frame {candidates}, faces per frame {[len(b) for b in ours]}, boxes equal: {same}")
    print(f"whole batch: face-alignment {theirs_s:.3f} s, lipsync.faces.s3fd {ours_s:.3f} s, "
          f"ratio {theirs_s / ours_s:.2f}x")
    print(f"after the network (decode + NMS): face-alignment {post_theirs * 1000:.1f} ms, lipsync.faces.s3fd "
          f"{post_ours * 1000:.1f} ms, ratio {post_theirs / post_ours:.1f}x")
    print(f"# load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
