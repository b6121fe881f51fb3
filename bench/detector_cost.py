"""What BlazeFace costs: a model call against the mediapipe package, a frame of a 4K clip with no face, and the
smallest face it still finds in a large frame.

1. Per model call (short and full range) on the calibration clip's frames and a tracking-sized window on each:
   OpenVINO (lipsync.faces.blazeface) against mediapipe 0.10.14's own graphs, when mediapipe is installed.
2. 4K clips with no face (noise and a flat colour, 3840x2160, 120 fps, 1.5 s, made with ffmpeg): the scan
   ("Check faces through the clip", 120 looks) and a job's detection over every frame, wall and CPU time of
   this process (ffmpeg's decoding runs in its own), and the model runs per frame.
3. The astronaut photo scaled to a face of N px in a 1280x720 and a 3840x2160 frame: whether a clip's first
   frame finds it.

    .venv/bin/python bench/detector_cost.py [--skip-runtimes] [--skip-4k] [--skip-smallest]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]
import lipsync  # noqa: F401  (first: OMP_WAIT_POLICY set before anything loads torch)

# isort: split
import cv2
import media
import numpy as np

WORK = ROOT / "bench" / ".work"
CALIBRATION = ROOT.parent / "shared" / "calibration" / "talking_head.mp4"

from lipsync.faces.blazeface import FULL_RANGE, SHORT_RANGE
from lipsync.faces.blazeface_tracker import BlazeFaceTracker
from lipsync.faces.detection import ClipDetection
from lipsync.media.ffmpeg import ffmpeg_exe


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def best_ms(fn, items, rounds: int = 5) -> float:
    """The fastest of `rounds` passes over `items`, in ms per item (the machine is shared)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - start) * 1000 / len(items))
    return best


def runtimes(tracker: BlazeFaceTracker) -> None:
    try:
        import mediapipe as mp
    except ImportError:
        print("mediapipe is not installed: no runtime comparison\n")
        return
    frames = media.read_all_frames(CALIBRATION)[::6] if CALIBRATION.exists() else [media.astronaut_bgr()]
    print(f"## One BlazeFace call, ms (best of 5 passes over {len(frames)} frames)\n")
    print("| model | image | OpenVINO (lipsync.faces.blazeface) | mediapipe 0.10.14 |")
    print("|---|---|---|---|")
    for selection, model in ((0, SHORT_RANGE), (1, FULL_RANGE)):
        graph = mp.solutions.face_detection.FaceDetection(model_selection=selection)
        for label, images in (("whole frame", frames), ("window", [f[100:500, 150:450] for f in frames])):
            rgb = [np.ascontiguousarray(cv2.cvtColor(i, cv2.COLOR_BGR2RGB)) for i in images]
            ours = best_ms(lambda i, model=model: tracker.model.detect(i, model), images)
            theirs = best_ms(graph.process, rgb)
            print(f"| {model.file} | {label} {images[0].shape[1]}x{images[0].shape[0]} | {ours:.2f} | {theirs:.2f} |")
        graph.close()
    print()


def make_4k_clips() -> dict[str, Path]:
    WORK.mkdir(parents=True, exist_ok=True)
    sources = {"noise": "color=c=0x808080:s=3840x2160:r=120:d=1.5,noise=alls=40:allf=t",
               "flat": "color=c=0x5a6e82:s=3840x2160:r=120:d=1.5"}
    clips = {}
    for name, graph in sources.items():
        path = WORK / f"{name}_4k_120fps.mp4"
        if not path.exists():
            cmd = [ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i", graph, "-c:v", "libx264", "-preset",
                   "ultrafast", "-crf", "35", "-pix_fmt", "yuv420p", str(path)]
            __import__("subprocess").run(cmd, check=True)
        clips[name] = path
    return clips


class CountingRuns:
    """Counts BlazeFace model calls, whichever tracker makes them (the scan builds its own)."""

    def __init__(self) -> None:
        from lipsync.faces.blazeface import BlazeFace

        self.calls, detect = 0, BlazeFace.detect

        def counted(model, *args, **kwargs):
            self.calls += 1
            return detect(model, *args, **kwargs)

        BlazeFace.detect = counted


def cost_4k(tracker: BlazeFaceTracker) -> None:
    from lipsync.faces.preview import scan_faces
    from lipsync.media.probe import probe_media
    from lipsync.media.video import read_frames
    from lipsync.options import Options

    counter = CountingRuns()
    print("## 4K clips with no face (3840x2160, 120 fps, 1.5 s)\n")
    print("| clip | what | frames | faces found | wall s | CPU s (this process) | model runs per frame |")
    print("|---|---|---|---|---|---|---|")
    for name, path in make_4k_clips().items():
        counter.calls, wall, cpu = 0, time.perf_counter(), cpu_seconds()
        found = scan_faces(str(path), Options(detector="blazeface"))
        print(f"| {name} | scan | {len(found)} | {sum(found)} | {time.perf_counter() - wall:.1f} | "
              f"{cpu_seconds() - cpu:.1f} | {counter.calls / len(found):.1f} |", flush=True)
        counter.calls, wall, cpu = 0, time.perf_counter(), cpu_seconds()
        clip, frames, found_job, batch = ClipDetection(tracker), 0, 0, []
        for frame in read_frames(probe_media(str(path))):
            batch.append(frame)
            if len(batch) == 8:
                found_job += sum(d is not None for d in clip(batch))
                frames, batch = frames + len(batch), []
        if batch:
            found_job += sum(d is not None for d in clip(batch))
            frames += len(batch)
        print(f"| {name} | job detection | {frames} | {found_job} | {time.perf_counter() - wall:.1f} | "
              f"{cpu_seconds() - cpu:.1f} | {counter.calls / frames:.1f} |", flush=True)
    print()


def smallest(tracker: BlazeFaceTracker) -> None:
    photo = media.astronaut_bgr()
    print("## Smallest face found on a clip's first frame (the astronaut photo; face width in px)\n")
    print("| frame | face px | found | ms |")
    print("|---|---|---|---|")
    for (width, height), sizes in (((1280, 720), (10, 12, 14, 20, 30, 45)), ((3840, 2160), (30, 36, 42, 60, 90, 135))):
        rng = np.random.default_rng(3)
        background = cv2.GaussianBlur(cv2.resize(rng.integers(40, 200, (height // 16, width // 16, 3), np.uint8),
                                                 (width, height)), (0, 0), 4)
        for face_px in sizes:
            s = face_px / 114  # the face (brows to chin) is 114 px wide in the 512x512 photo
            x0, y0 = width * 0.6, height * 0.55
            matrix = np.array([[s, 0, x0], [0, s, y0]], np.float64)
            frame = background.copy()
            mask = cv2.warpAffine(np.full(photo.shape[:2], 255, np.uint8), matrix, (width, height)) > 0
            frame[mask] = cv2.warpAffine(photo, matrix, (width, height))[mask]
            start = time.perf_counter()
            box = ClipDetection(tracker)([frame])[0]
            ms = (time.perf_counter() - start) * 1000
            hit = box is not None and 168 * s + x0 <= box.centre[0] <= 282 * s + x0 and \
                68 * s + y0 <= box.centre[1] <= 205 * s + y0
            print(f"| {width}x{height} | {face_px} | {'yes' if hit else 'no'} | {ms:.0f} |", flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for part in ("runtimes", "4k", "smallest"):
        parser.add_argument(f"--skip-{part}", action="store_true")
    args = parser.parse_args()
    tracker = BlazeFaceTracker()
    if not args.skip_runtimes:
        runtimes(tracker)
    if not args.skip_smallest:
        smallest(tracker)
    if not args.skip_4k:
        cost_4k(tracker)


if __name__ == "__main__":
    main()
