"""The mouth enhancer (--enhance gfpgan) on the calibration clip: the warp's steadiness, its speed, a figure.

    .venv/bin/python bench/enhance_bench.py jitter            # landmarks on every frame; seconds
    .venv/bin/python bench/enhance_bench.py speed [--faces 8] # ms per face on this machine (CPU, and CUDA if any)
    .venv/bin/python bench/enhance_bench.py figure            # docs/enhance_mouth.png

../shared/calibration/ (next to the repository; test data, never committed) holds a real
talking head and the official Wav2Lip output of it.

jitter: the face boxes are this package's on a CPU (BlazeFace, pads 0 10 0 0, the official
smoothing); each frame's five landmarks (lipsync.restore.landmarks) give the similarity warp to the
FFHQ template (lipsync.restore.enhance). The steadiness of a moving square is measured on its four
corners in frame pixels: the mean length of the second difference p(t+1) - 2 p(t) + p(t-1)
(what is left of the motion once a steady velocity is taken out: shimmer), in pixels and
in % of the square's side (the warp's square, the aligned crop mapped into the frame, is
about 2.5 times the face box). Printed for the face box itself, the warp from raw
landmarks, and the warp from the smoothed landmarks (the package's settings, and a few
others), with the smoothing's mean displacement from the raw landmarks (its lag).

speed: GFPGAN v1.4 with random weights (same network and cost as the release file; the
weights cannot be downloaded here) on aligned crops of the calibration clip's official
output: ms per face for OpenVINO fp32 (converted once and cached; the conversion's time is
printed too), eager PyTorch fp32 on the CPU, and PyTorch fp32 on CUDA in batches when a GPU
is present; plus the landmarks (two looks) and the warp there and back per face.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]
import lipsync  # noqa: F401  (first: OMP_WAIT_POLICY set before anything loads torch)

# isort: split
import cv2
import numpy as np
from media import read_all_frames

from lipsync.blend.paste import alpha_map, mouth_mask
from lipsync.geometry import Box
from lipsync.restore.enhance import FFHQ_TEMPLATE, SIDE, aligned_crop, network_input, put_back, similarity
from lipsync.restore.landmarks import Landmarker, Smoother

CALIBRATION = ROOT.parent / "shared" / "calibration"
WORK = ROOT / "bench" / ".work"
SQUARE = np.float64([[0, 0], [SIDE, 0], [0, SIDE], [SIDE, SIDE]])


def our_boxes(frames: list[np.ndarray]) -> list[Box]:
    """The package's final crops on a CPU: BlazeFace, pads 0 10 0 0, the official smoothing."""
    from lipsync.faces.crops import crops_from_detections
    from lipsync.faces.detection import ClipDetection
    from lipsync.faces.detectors import get_detector

    clip = ClipDetection(get_detector("blazeface", "cpu", 16, False).detector)
    found = []
    for i in range(0, len(frames), 16):
        found += clip(frames[i:i + 16])
    height, width = frames[0].shape[:2]
    return crops_from_detections(found, (0, 10, 0, 0), height, width)


def warp_square(five: np.ndarray) -> tuple[np.ndarray, float]:
    """The aligned crop's corners in frame pixels, and its side."""
    inverse = cv2.invertAffineTransform(similarity(five, FFHQ_TEMPLATE))
    corners = SQUARE @ inverse[:, :2].T + inverse[:, 2]
    return corners, float(np.hypot(*(corners[1] - corners[0])))


def box_square(box: Box) -> tuple[np.ndarray, float]:
    return np.float64([[box.x1, box.y1], [box.x2, box.y1], [box.x1, box.y2], [box.x2, box.y2]]), float(
        max(box.width, box.height))


def shimmer(squares: list[tuple[np.ndarray, float]]) -> tuple[float, float]:
    """Mean second difference of the corners: (pixels, % of the side)."""
    corners = np.array([c for c, _ in squares])
    sides = np.array([s for _, s in squares])
    second = np.linalg.norm(corners[2:] - 2 * corners[1:-1] + corners[:-2], axis=2).mean(axis=1)
    return float(second.mean()), float((second / sides[1:-1]).mean() * 100)


def jitter() -> None:
    frames = read_all_frames(CALIBRATION / "talking_head.mp4")
    boxes = our_boxes(frames)
    landmarker = Landmarker()
    t = time.perf_counter()
    raw = [landmarker(frame, box) for frame, box in zip(frames, boxes)]
    ms = (time.perf_counter() - t) * 1000 / len(frames)
    failed = sum(five is None for five, _ in raw)
    points = [five for five, _ in raw]
    eyes = np.mean([np.hypot(*(p[1] - p[0])) for p in points if p is not None])
    print(f"Calibration clip: {len(frames)} frames 640x640, face boxes {np.mean([b.width for b in boxes]):.0f}x"
          f"{np.mean([b.height for b in boxes]):.0f} px, eye distance {eyes:.0f} px; landmarks found in "
          f"{len(frames) - failed} frames ({ms:.1f} ms per frame, two looks)")
    print("| what moves | shimmer: px (% of its side) | mean |smoothed - raw| landmark, px |")
    print("|---|---|---|")
    px, pct = shimmer([box_square(b) for b in boxes])
    print(f"| face box (BlazeFace, official smoothing) | {px:.2f} ({pct:.2f}%) | - |")
    if failed:
        print("(frames without landmarks break the sequences below; figures over the rest)")
    usable = [p for p in points if p is not None]
    px, pct = shimmer([warp_square(p) for p in usable])
    print(f"| warp, raw landmarks | {px:.2f} ({pct:.2f}%) | 0 |")
    defaults = Smoother(25)
    for min_cutoff, beta in ((defaults.min_cutoff, defaults.beta), (1.0, 1.0), (1.0, 10.0), (0.3, 3.0)):
        smoother = Smoother(25, min_cutoff, beta)
        smooth = [smoother(i, p) for i, p in enumerate(points)]
        pairs = [(s, p) for s, p in zip(smooth, points) if p is not None]
        px, pct = shimmer([warp_square(s) for s, _ in pairs])
        lag = np.mean([np.linalg.norm(s - p, axis=1).mean() for s, p in pairs])
        name = " (the package's)" if (min_cutoff, beta) == (defaults.min_cutoff, defaults.beta) else ""
        print(f"| warp, One Euro min_cutoff {min_cutoff:g} Hz, beta {beta:g}{name} | {px:.2f} ({pct:.2f}%) | "
              f"{lag:.2f} |")


def calibration_faces(n: int) -> tuple[list[np.ndarray], list[np.ndarray], list[Box], list[np.ndarray]]:
    """n frames of the official output spread over the clip: frames, landmarks, boxes, aligned crops."""
    frames = read_all_frames(CALIBRATION / "talking_head_official_default_pads.mp4")
    rows = json.loads((CALIBRATION / "talking_head_official_boxes.json").read_text())["default_pads"]
    picks = np.linspace(0, min(len(frames), len(rows)) - 1, n).astype(int)
    landmarker = Landmarker()
    out = ([], [], [], [])
    for i in picks:
        y1, y2, x1, x2 = rows[i]
        box = Box(x1, y1, x2, y2)
        five, _ = landmarker(frames[i], box)
        if five is None:
            continue
        out[0].append(frames[i])
        out[1].append(five)
        out[2].append(box)
        out[3].append(aligned_crop(frames[i], similarity(five, FFHQ_TEMPLATE)))
    return out


def per_face_ms(run, faces: np.ndarray, rounds: int) -> float:
    run(faces[:1])  # warm-up
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        run(faces)
        best = min(best, time.perf_counter() - t)
    return best * 1000 / len(faces)


def speed(n_faces: int, rounds: int) -> None:
    import media
    import torch

    from lipsync.restore import backends as restorer
    from lipsync.runtime.devices import cpu_threads

    WORK.mkdir(parents=True, exist_ok=True)
    weights = WORK / "gfpgan_random.pth"
    if not weights.exists():
        media.make_gfpgan(weights)
    os.environ.setdefault("LIPSYNC_MODEL_CACHE", str(WORK / "models"))
    frames, points, boxes, crops = calibration_faces(max(n_faces, 8))
    faces = network_input(np.stack(crops))
    landmarker = Landmarker()
    t = time.perf_counter()
    for frame, box in zip(frames, boxes):
        landmarker(frame, box)
    landmark_ms = (time.perf_counter() - t) * 1000 / len(frames)
    restored = np.clip(faces[0].transpose(1, 2, 0)[..., ::-1] * 127.5 + 127.5, 0, 255).astype(np.float32)
    t = time.perf_counter()
    for frame, five, box in zip(frames, points, boxes):
        matrix = similarity(five, FFHQ_TEMPLATE)
        aligned_crop(frame, matrix)
        put_back(frame.copy(), restored, matrix, box, 0.7)
    warp_ms = (time.perf_counter() - t) * 1000 / len(frames)
    print(f"{len(frames)} faces of the calibration clip's official output; {cpu_threads()} CPU threads; "
          f"GFPGAN v1.4 with random weights")
    print("| step | ms per face |")
    print("|---|---|")
    print(f"| landmarks (face mesh on OpenVINO, two looks) | {landmark_ms:.1f} |")
    print(f"| align + warp back + blend | {warp_ms:.1f} |")
    cache = restorer.cache_entry(str(weights))
    fresh = not cache.exists()
    t = time.perf_counter()
    ov = restorer.build_restorer(str(weights), "cpu")
    setup = time.perf_counter() - t
    print(f"| OpenVINO fp32 set-up ({'converted now, self-check included' if fresh else 'read from the cache'}) "
          f"| {setup * 1000:.0f} ms once |")
    print(f"| GFPGAN, OpenVINO fp32 ({ov.label}) | {per_face_ms(ov, faces[:n_faces], rounds):.0f} |")
    torch_cpu = restorer.TorchRestorer(str(weights), "cpu")
    print(f"| GFPGAN, PyTorch fp32 eager, {torch.get_num_threads()} threads | "
          f"{per_face_ms(torch_cpu, faces[:2], 1):.0f} |")
    if torch.cuda.is_available():
        gpu = restorer.TorchRestorer(str(weights), "cuda")
        many = np.concatenate([faces] * (64 // len(faces) + 1))[:64]
        for batch in (1, 8, 16, 32):
            gpu.max_batch = batch

            def run(x):
                gpu(x)
                torch.cuda.synchronize()
            print(f"| GFPGAN, PyTorch fp32 on {torch.cuda.get_device_name()}, batches of {batch} | "
                  f"{per_face_ms(run, many, rounds):.1f} |")
    else:
        print("| GFPGAN on CUDA | no GPU here |")


def figure(path: Path, index: int) -> None:
    """Frame `index` of the official output: the landmarks and the aligned square, the 512 crop, the mouth mask,
    and where restored pixels go (the mask x the default strength)."""
    from PIL import Image

    from lipsync.options import Options

    frames = read_all_frames(CALIBRATION / "talking_head_official_default_pads.mp4")
    rows = json.loads((CALIBRATION / "talking_head_official_boxes.json").read_text())["default_pads"]
    y1, y2, x1, x2 = rows[index]
    box = Box(x1, y1, x2, y2)
    frame = frames[index]
    five, _ = Landmarker()(frame, box)
    matrix = similarity(five, FFHQ_TEMPLATE)
    crop = aligned_crop(frame, matrix)
    corners, _ = warp_square(five)
    low, high = np.floor(corners.min(axis=0)).astype(int) - 4, np.ceil(corners.max(axis=0)).astype(int) + 4
    view = (slice(max(0, low[1]), min(frame.shape[0], high[1])), slice(max(0, low[0]), min(frame.shape[1], high[0])))
    scene = frame.copy()
    cv2.polylines(scene, [corners[[0, 1, 3, 2]].astype(np.int32)], True, (0, 220, 255), 2, cv2.LINE_AA)
    cv2.rectangle(scene, (x1, y1), (x2 - 1, y2 - 1), (0, 200, 0), 1, cv2.LINE_AA)
    for x, y in five:
        cv2.circle(scene, (int(round(x)), int(round(y))), 3, (255, 0, 255), -1, cv2.LINE_AA)
    aligned = crop.copy()
    for x, y in FFHQ_TEMPLATE:
        cv2.circle(aligned, (int(round(x)), int(round(y))), 6, (255, 0, 255), -1, cv2.LINE_AA)
    alpha = alpha_map("mouth", box, *frame.shape[:2])
    mask = (np.repeat(alpha[..., None], 3, axis=2) * 255).astype(np.uint8)
    cv2.rectangle(mask, (x1, y1), (x2 - 1, y2 - 1), (0, 200, 0), 1)
    top = y1 + mouth_mask(box.height, box.width)[1]
    share = alpha * Options().enhance_strength
    tinted = frame.astype(np.float32)
    tinted[..., 2] = tinted[..., 2] * (1 - share) + 255 * share  # red where restored pixels go, by their share
    tinted = tinted.astype(np.uint8)
    cv2.line(tinted, (x1, top), (x2 - 1, top), (255, 255, 255), 1)
    panels = [scene[view], cv2.resize(aligned, (scene[view].shape[0],) * 2), mask[view], tinted[view]]
    labels = ["landmarks, face box, aligned square", "the 512 crop the restorer sees", "mouth mask",
              f"restored pixels (x{Options().enhance_strength:g}); line: mask top"]
    for panel, label in zip(panels, labels):
        cv2.putText(panel, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(panel, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    strip = np.concatenate([np.pad(p, ((0, 0), (0, 4), (0, 0)), constant_values=255) for p in panels], axis=1)
    image = Image.fromarray(cv2.cvtColor(strip[:, :-4], cv2.COLOR_BGR2RGB))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    if path.stat().st_size > 300_000:
        image.quantize(256, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)
    print(f"Saved {path.relative_to(ROOT)} (frame {index}, {image.width}x{image.height}, "
          f"{path.stat().st_size / 1000:.0f} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("jitter", "speed", "figure"))
    parser.add_argument("--faces", type=int, default=8, help="faces per timed batch (speed)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds, the best is kept (speed)")
    parser.add_argument("--frame", type=int, default=100, help="frame of the figure")
    args = parser.parse_args()
    if args.what == "jitter":
        jitter()
    elif args.what == "speed":
        speed(args.faces, args.rounds)
    else:
        figure(ROOT / "docs" / "enhance_mouth.png", args.frame)


if __name__ == "__main__":
    main()
