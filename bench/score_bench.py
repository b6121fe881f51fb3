"""What a SyncNet sync score costs on this machine: seconds per second of video, and peak memory, on a long clip.

    python bench/score_bench.py                       # 60 s of 1080p at 25 fps, crop='face', OpenVINO fp32
    python bench/score_bench.py --seconds 10 --size 640x360 --crop none
    python bench/score_bench.py --job                 # also: the same clip synced, then its result scored

SyncNet runs with random weights in the release layout (the cost does not depend on the
values; no download), built into the OpenVINO graph directly. The clip (the astronaut
panned and zoomed, with speech-like sound) is made once into --workdir. Reported:
- the whole score_video call (probe, sound, face boxes, crops, SyncNet, offset search), split
  into its stages, and per second of video;
- SyncNet alone on batches of 20 windows (windows per second: one window per video frame);
- the process's peak resident memory during the call (the kernel's high-water mark, reset
  just before it), against what holding the clip's frames would take;
- with --job: the clip lip-synced by a job (a random Wav2Lip checkpoint in the official layout,
  OpenVINO, the default options: BlazeFace on a CPU) and that result scored as a job scores it (on
  the job's own face track, lipsync.scoring.job), both timed in this one run: the score against the
  job's own time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
import lipsync  # noqa: F401  (first: OMP_WAIT_POLICY set before anything loads torch)

# isort: split
import numpy as np
from benchmark import peak_rss_mb  # VmHWM: this address space's own peak

from lipsync.runtime.devices import cpu_threads
from lipsync.scoring import layout, score_video
from lipsync.scoring.backends import OpenVINOSyncNet, example_inputs
from lipsync.scoring.graph import build_graph


def random_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Weights in the release layout, scaled so activations stay of order one (values do not change the cost)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in layout.state_dict_shapes().items():
        if name.endswith(layout.COUNTER):
            out[name] = np.zeros(shape, np.int64)
        elif name.endswith("running_var"):
            out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif len(shape) > 1:
            out[name] = (rng.normal(size=shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)
        else:
            out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32) if name.endswith("weight") else \
                rng.normal(0, 0.05, shape).astype(np.float32)
    return out


def cpu_facts() -> tuple[str, str]:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor(), "unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    return model, "yes" if "avx512f" in flags.split() else "no"


def reset_peak() -> bool:
    """Reset the kernel's resident high-water mark for this process (Linux), so the next peak is the call's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def make_clip(path: Path, seconds: float, size: tuple[int, int], fps: int) -> Path:
    """The test clip, made once in a child process (tests/media.py imports torch, which this process never loads,
    so the memory measured is the scorer's)."""
    if path.is_file():
        return path
    partial = path.with_suffix(".partial.mp4")  # an interrupted run leaves no clip to be reused half-made
    script = f"""
import sys
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests" / "support")!r}]
from pathlib import Path
import media
speech = media.write_wav(Path({str(path.with_suffix(".wav"))!r}), media.speech_samples({seconds}, seed=3))
media.write_video(Path({str(partial)!r}), media.pan_zoom_frames({int(seconds * fps)}, size={size!r}), {fps}, {size!r},
                  audio=speech, extra=["-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-pix_fmt", "yuv420p"])
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    return partial.replace(path)


def make_checkpoint(path: Path) -> Path:
    """A random Wav2Lip checkpoint in the official layout (145 MB), made once in a child process (torch)."""
    if not path.is_file():
        script = f"""
import sys
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests" / "support")!r}]
from pathlib import Path
import media
media.make_checkpoint(Path({str(path)!r}))
"""
        subprocess.run([sys.executable, "-c", script], check=True)
    return path


def job_then_score(clip: Path, work: Path, net: OpenVINOSyncNet) -> dict:
    """The clip synced by a job, then its result scored as a job scores it; both timed, the score's peak memory."""
    from lipsync import LipSync, Options
    from lipsync.scoring.job import score_result

    engine = LipSync(str(make_checkpoint(work / "random_wav2lip.pth")), "cpu", allow_download=False)
    audio = str(clip.with_suffix(".wav"))
    import tempfile

    from lipsync.faces import cache

    runs = []
    for _ in range(2):  # the first also builds the detector and warms up: the second is the job's cost
        with tempfile.TemporaryDirectory() as fresh:  # no boxes from an earlier run: detection is part of the job
            cache.CACHE_DIR = Path(fresh)
            t = time.perf_counter()
            result = engine.sync(str(clip), audio, str(work / "result.mp4"), Options())
            runs.append(time.perf_counter() - t)
    job_s = runs[-1]
    reset_peak()
    before = peak_rss_mb()
    t = time.perf_counter()
    score_result(result, audio, net)
    score_s = time.perf_counter() - t
    return {"job_s": round(job_s, 2), "job_runs_s": [round(r, 2) for r in runs], "job_frames": result.frames,
            "job_stages_s": {k: round(v, 2) for k, v in result.seconds.items() if k != "score"},
            "job_detector": result.detector, "score_s": round(score_s, 2), "score_over_job": round(score_s / job_s, 3),
            "score_stages_s": {k: round(v, 2) for k, v in result.score.seconds.items()},
            "score_windows": result.score.frames, "score_crops": result.score.crops_label,
            "score_peak_rss_mb": round(peak_rss_mb()), "rss_before_score_mb": round(before)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--crop", default="face", choices=("face", "none"))
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--job", action="store_true", help="also sync the clip and score the result (the job's cost)")
    parser.add_argument("--workdir", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "lipsync-score-bench"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    threads = args.threads or cpu_threads()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    clip = make_clip(work / f"clip_{args.seconds:g}s_{width}x{height}_{args.fps}.mp4", args.seconds, (width, height),
                     args.fps)
    made_s = time.perf_counter() - t

    import openvino as ov

    t = time.perf_counter()
    core = ov.Core()
    net = OpenVINOSyncNet(build_graph(random_weights()), core, threads, args.batch)
    net.request(args.batch)
    net.reason = f"OpenVINO {ov.__version__.split('-')[0]} fp32, {threads} threads, random weights"
    build_s = time.perf_counter() - t
    lips, cc = example_inputs(args.batch)
    net(lips, cc)  # warm
    reps, t = 3, time.perf_counter()
    for _ in range(reps):
        net(lips, cc)
    windows_per_s = reps * args.batch / (time.perf_counter() - t)
    if args.crop == "face":  # the detector is built once per process: not part of a score's cost
        from lipsync.faces.detectors import get_detector

        get_detector("auto", "cpu")
    reset = reset_peak()
    before = peak_rss_mb()
    t = time.perf_counter()
    score = score_video(str(clip), crop=args.crop, network=net, vshift=15)
    total = time.perf_counter() - t
    peak = peak_rss_mb()
    frames = round(args.seconds * 25)
    model, avx512 = cpu_facts()
    result = {
        "clip": f"{args.seconds:g} s {width}x{height} at {args.fps} fps", "crop": args.crop,
        "detector": score.detector, "backend": score.backend, "windows": score.frames,
        "total_s": round(total, 2), "per_video_second_s": round(total / args.seconds, 3),
        "stages_s": {k: round(v, 2) for k, v in score.seconds.items()},
        "syncnet_windows_per_s": round(windows_per_s, 1), "graph_build_compile_s": round(build_s, 2),
        "peak_rss_mb": round(peak), "rss_before_call_mb": round(before), "peak_reset": reset,
        "frames_as_official_float64_mb": round(frames * 224 * 224 * 3 * 8 / 2**20),
        "frames_decoded_uint8_mb": round(frames * width * height * 3 / 2**20),
        "cpu": model, "avx512": avx512, "cores_used": threads, "clip_made_s": round(made_s, 1),
    }
    result["load_average_before"] = os.getloadavg()
    if args.job:
        result["job_then_score"] = job_then_score(clip, work, net)
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))
    print(f"score_bench: {result['clip']}, crop={args.crop}: {total:.1f} s = {total / args.seconds:.2f} s per second "
          f"of video (boxes {score.seconds.get('detect', 0):.1f} s, crops+SyncNet {score.seconds.get('score', 0):.1f}"
          f" s; SyncNet alone {windows_per_s:.0f} windows/s), peak RSS {peak:.0f} MB ({before:.0f} MB before the "
          f"call); {model}, AVX-512 {avx512}, {threads} threads; shared host, one run")
    if args.job:
        js = result["job_then_score"]
        print(f"score_bench: the job {js['job_s']:.1f} s for {js['job_frames']} frames, its score "
              f"{js['score_s']:.1f} s ({js['score_over_job']:.2f} of the job; "
              f"{js['score_s'] / args.seconds:.2f} s per second of video), "
              f"peak RSS while scoring {js['score_peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
