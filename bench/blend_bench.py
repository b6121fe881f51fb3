"""Benchmark of the paste modes on real Wav2Lip output, and of the pause detection on known pauses.

    .venv/bin/python bench/blend_bench.py                  # all frames, picture to docs/blend_modes.png
    .venv/bin/python bench/blend_bench.py --every 5 --no-picture

Blending: ../shared/calibration/ (next to the repository; test data, never committed) holds a
real talking head, the official Wav2Lip+GAN output of it and the official paste boxes. Inside
each box of the official output is what the real generator painted; resized to 96x96 (as the
pipeline's generated face is), it is pasted into the ORIGINAL frame with each mode. Per mode
it prints, averaged over the frames:
- seam: the gradient across the mask's border in the result over the original frame's own
  gradient there (lipsync.blend.paste.seam_ratio; 1 = no edge added, over 1 = a seam);
- eyes: the sharpness (variance of the Laplacian) of the box's upper third, result over original;
- ms per paste at that box size (one core, after a warm-up).
It saves one frame side by side (original | box | feather | mouth), cropped around the face.

Pauses: a clip of synthetic speech (tests/media.py) and silences of known lengths, with room
tone; frames are "truly quiet" when their whole mel window (0.2 s) holds no speech sample, and a
true pause is a run of those at least lipsync.blend.pauses.MIN_PAUSE long. It prints frame-level
precision and recall of the frames the detection touches (weight < 1) and of those it keeps
fully (weight 0), and how many speech frames lost any of their generated mouth (must be 0).
"""

from __future__ import annotations

import argparse
import json
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

from lipsync.blend import pauses
from lipsync.blend.paste import alpha_map, paste, paste_mouth, seam_ratio
from lipsync.geometry import Box
from lipsync.media.audio import load_audio, mel_windows, melspectrogram

CALIBRATION = ROOT.parent / "shared" / "calibration"
MODES = ("box", "feather", "mouth", "mouth, no colour match")


def sharpness(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def paste_as(mode: str, frame: np.ndarray, face: np.ndarray, crop: Box) -> None:
    if mode == "mouth, no colour match":
        paste_mouth(frame, face, crop, colour=False)
    else:
        paste(mode, frame, face, crop)


def blend_bench(every: int, picture: Path | None, picture_frame: int) -> None:
    originals = read_all_frames(CALIBRATION / "talking_head.mp4")
    official = read_all_frames(CALIBRATION / "talking_head_official_default_pads.mp4")
    boxes = json.loads((CALIBRATION / "talking_head_official_boxes.json").read_text())["default_pads"]
    n = min(len(official), len(boxes))
    stats: dict[str, dict[str, list[float]]] = {m: {"seam": [], "eyes": [], "ms": []} for m in MODES + ("official",)}
    for i in range(0, n, every):
        y1, y2, x1, x2 = boxes[i]
        crop = Box(x1, y1, x2, y2)
        frame = originals[i]
        face = cv2.resize(official[i][crop.slices()], (96, 96))  # what the generator painted, at model size
        eyes = (slice(y1, y1 + crop.height // 3), slice(x1, x2))
        own_sharpness = sharpness(frame[eyes])
        for mode in MODES:
            alpha = alpha_map(mode.split(",")[0], crop, *frame.shape[:2])
            paste_as(mode, frame.copy(), face, crop)  # warm-up (mask cache, allocations)
            out = frame.copy()
            t = time.perf_counter()
            paste_as(mode, out, face, crop)
            stats[mode]["ms"].append((time.perf_counter() - t) * 1000)
            stats[mode]["seam"].append(seam_ratio(out, frame, alpha))
            stats[mode]["eyes"].append(sharpness(out[eyes]) / own_sharpness)
        # the official output itself (its paste of the full-size generated face), for reference
        stats["official"]["seam"].append(seam_ratio(official[i], frame, alpha_map("box", crop, *frame.shape[:2])))
        stats["official"]["eyes"].append(sharpness(official[i][eyes]) / own_sharpness)
    sizes = np.array([[b[1] - b[0], b[3] - b[2]] for b in boxes[:n:every]])
    print(f"Blend modes on the calibration clip: {len(stats['box']['seam'])} frames (every {every}), boxes "
          f"{sizes[:, 1].mean():.0f}x{sizes[:, 0].mean():.0f} px (w x h) on average, 640x640 frames")
    print("| mode | seam (gradient across the border / the frame's own) | eye sharpness (result / original) | "
          "ms per paste |")
    print("|---|---|---|---|")
    for mode, s in stats.items():
        ms = f"{np.mean(s['ms']):.2f}" if s["ms"] else "-"
        name = "official output (full-size box paste)" if mode == "official" else mode
        seam = f"{np.mean(s['seam']):.3f} (worst {np.max(s['seam']):.3f})"
        print(f"| {name} | {seam} | {np.mean(s['eyes']):.3f} | {ms} |")
    if picture is not None:
        save_picture(originals, official, boxes, picture_frame, picture)


def save_picture(originals, official, boxes, i: int, path: Path) -> None:
    from PIL import Image

    y1, y2, x1, x2 = boxes[i]
    crop = Box(x1, y1, x2, y2)
    face = cv2.resize(official[i][crop.slices()], (96, 96))
    margin = 30
    view = (slice(max(0, y1 - margin), y2 + margin), slice(max(0, x1 - margin), x2 + margin))
    panels = []
    for mode in ("original", "box", "feather", "mouth"):
        out = originals[i].copy()
        if mode != "original":
            paste(mode, out, face, crop)
        panel = out[view].copy()
        cv2.putText(panel, mode, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(panel, mode, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        panels.append(panel)
    strip = np.concatenate([np.pad(p, ((0, 0), (0, 4), (0, 0)), constant_values=255) for p in panels], axis=1)
    image = Image.fromarray(cv2.cvtColor(strip[:, :-4], cv2.COLOR_BGR2RGB))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    if path.stat().st_size > 300_000:  # keep the repository small: 256 colours, dithered
        image.quantize(256, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)
    print(f"Saved {path.relative_to(ROOT)} (frame {i}, {image.width}x{image.height}, "
          f"{path.stat().st_size / 1000:.0f} KB)")


def pause_bench() -> None:
    import media

    rate, fps = 16000, 25
    plan = [("silence", 0.5), ("speech", 1.0), ("silence", 0.8), ("speech", 1.5), ("silence", 0.4),
            ("speech", 0.7), ("silence", 0.25), ("speech", 0.9), ("silence", 0.6), ("speech", 1.2),
            ("silence", 1.0)]
    parts = [media.speech_samples(d, seed=k) if kind == "speech" else np.zeros(int(d * rate), np.float32)
             for k, (kind, d) in enumerate(plan)]
    clean = np.concatenate(parts)
    print(f"\nPause detection: {len(clean) / rate:.1f} s clip, silences (s) "
          f"{', '.join(f'{d:g}' for kind, d in plan if kind == 'silence')} between synthetic speech, {fps} fps")
    print("| room tone (dB under the loudest speech) | true pause frames | touched (w<1): precision / recall | "
          "kept (w=0): precision / recall | speech frames touched |")
    print("|---|---|---|---|---|")
    peak_rms = 10 ** (pauses.hop_levels(clean).max() / 20)
    for tone_db in (None, -60, -50, -45, -35):
        wav = clean.copy()
        if tone_db is not None:
            wav += np.random.default_rng(0).normal(0, peak_rms * 10 ** (tone_db / 20), len(wav)).astype(np.float32)
        n = len(mel_windows(melspectrogram(wav), fps))
        w = pauses.frame_weights(wav, fps, n)
        truth = true_pauses(clean, fps, n)
        speech = ~quiet_truth(clean, fps, n)

        def pr(pred: np.ndarray, truth: np.ndarray = truth) -> str:
            tp = int((pred & truth).sum())
            return f"{tp / max(1, pred.sum()):.3f} / {tp / max(1, truth.sum()):.3f}"

        name = "none (digital silence)" if tone_db is None else f"{-tone_db} dB"
        print(f"| {name} | {truth.sum()} of {n} | {pr(w < 1)} | {pr(w == 0)} | {int((speech & (w < 1)).sum())} |")
    wav = load_audio(str(CALIBRATION / "talking_head.wav"))
    w = pauses.frame_weights(wav, fps)
    print(f"\nThe calibration clip's speech (talking_head.wav, {len(wav) / rate:.1f} s, continuous talk): "
          f"{int((w < 1).sum())} of {len(w)} frames touched, {int((w == 0).sum())} kept")


def quiet_truth(clean: np.ndarray, fps: float, n: int) -> np.ndarray:
    """Per frame: its whole mel window (plus the half hop the level measure reaches past it) has no speech."""
    starts = np.array([int(i * 80 / fps) for i in range(n)])
    starts[-1] = min(starts[-1], (len(clean) // 200 + 1) - 16)  # the last window, as audio.window_starts
    voiced = np.concatenate([[0], np.cumsum(clean != 0)])
    a = np.clip(starts * 200 - 200, 0, len(clean))
    b = np.clip((starts + 15) * 200 + 200, 0, len(clean))
    return (voiced[b] - voiced[a]) == 0


def true_pauses(clean: np.ndarray, fps: float, n: int) -> np.ndarray:
    quiet = quiet_truth(clean, fps, n)
    return pauses.pause_weights(quiet, fps) < 1  # runs of at least MIN_PAUSE (fades included)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=1, help="use every Nth frame of the clip")
    parser.add_argument("--frame", type=int, default=20, help="the frame shown in the picture")
    parser.add_argument("--no-picture", action="store_true")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    if not CALIBRATION.is_dir():
        sys.exit(f"{CALIBRATION} is missing: the calibration data lives next to the repository, in ../shared/")
    blend_bench(args.every, None if args.no_picture else ROOT / "docs" / "blend_modes.png", args.frame)
    pause_bench()


if __name__ == "__main__":
    main()
