"""Benchmark: stage and end-to-end speed of the engine against the limits of this machine.

    .venv/bin/python bench/benchmark.py            # 10 s 720p and 60 s 1080p clips
    .venv/bin/python bench/benchmark.py --quick    # 4 s 480p only, a smoke run

It makes its own clips (the astronaut photo moved about, with speech), then for each
clip, in one run on the same machine:
- the limits: ffmpeg decoding the clip alone (to BGR frames, as the engine reads them),
  ffmpeg encoding the same number of frames alone (same encoder settings, with audio),
  and the generator alone on random input at the batch size the engine uses; on a CPU
  the host's fp32 peak (bench/hostpeak.py) and the generator's fraction of it; and, since
  on a CPU all stages share the same cores, the "packed" limit: 1 / (the sum of the three
  stages' seconds per frame), the end-to-end rate if no core ever idled;
- the engine with the default settings (fresh face detection), with a fixed --box (no
  detection), and once more with the default settings (boxes from the detection cache);
  each in a child process so its peak RSS (and peak GPU memory) is its own.
It prints frames per second per stage and end to end, peak memory, and the ratio of the
end-to-end rate to the slowest limit and to the packed one. Needs no network: the checkpoint has random
weights (speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]
import lipsync  # noqa: F401  (first: OMP_WAIT_POLICY set before anything loads torch)

CLIPS = {"10s-720p": (10.0, (1280, 720)), "60s-1080p": (60.0, (1920, 1080)), "4s-480p": (4.0, (854, 480))}


def make_inputs(work: Path, name: str) -> tuple[Path, Path]:
    import media

    seconds, size = CLIPS[name]
    speech = work / f"speech-{seconds:.0f}s.wav"
    if not speech.exists():
        media.make_speech(speech, seconds)
    clip = work / f"{name}.mp4"
    if not clip.exists():
        frames = media.pan_zoom_frames(int(seconds * 25), size)
        media.write_video(clip, frames, 25, size, audio=speech,
                          extra=["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"])
    return clip, speech


def limit_decode(clip: Path) -> tuple[int, float]:
    from lipsync.media.probe import probe_media
    from lipsync.media.video import read_frames

    start = time.perf_counter()
    n = sum(1 for _ in read_frames(probe_media(str(clip))))
    return n, time.perf_counter() - start


def limit_encode(clip: Path, speech: Path, n: int, work: Path) -> float:
    from lipsync.media.probe import probe_media
    from lipsync.media.video import VideoWriter, read_frames

    info = probe_media(str(clip))
    frame = next(read_frames(info))
    start = time.perf_counter()
    with VideoWriter(str(work / "encode-only.mp4"), info.width, info.height, info.fps, str(speech)) as writer:
        for _ in range(n):
            writer.write(frame)
    return time.perf_counter() - start


def limit_generator(device: str, batch: int, n: int, checkpoint: Path) -> tuple[float, float, str]:
    """Seconds the generator alone takes for `n` faces (the same checkpoint, batch and backend the engine uses),
    its GFLOP per face, and the backend that ran."""
    import numpy as np
    import torch
    from hostpeak import gflop_per_face

    from lipsync.generator import ModelRunner as Generator
    from lipsync.generator import load_model

    model = load_model(str(checkpoint), device)
    generate = Generator(model, device)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (batch, 96, 96, 3), dtype=np.uint8)
    mels = rng.normal(size=(batch, 80, 16)).astype(np.float32)
    generate(crops, mels)  # warm-up at the measured batch size (kernels are chosen per shape)
    done, start = 0, time.perf_counter()
    while done < n:
        generate(crops, mels)
        done += batch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) * n / done
    return seconds, gflop_per_face(model), generate.backend_label


def precision_check(device: str, work: Path, checkpoint: Path) -> None:
    """How far half precision moves the generated faces, next to the noise of the video codec itself.

    Real face crops (the astronaut, moved about) and real speech mels go through the
    generator in fp32 and in each half precision the device runs; the codec noise is
    the difference between the same frames before and after x264 at the engine's CRF.
    """
    import cv2
    import media
    import numpy as np

    from lipsync.faces.detectors import HaarDetector
    from lipsync.generator import ModelRunner as Generator
    from lipsync.generator import load_model
    from lipsync.media import audio
    from lipsync.media.probe import probe_media
    from lipsync.media.video import VideoWriter, read_frames

    model = load_model(str(checkpoint), device)
    frames = list(media.pan_zoom_frames(32, (640, 360)))
    boxes = HaarDetector().detect(frames)
    crops = np.stack([cv2.resize(f[b[1]:b[3] + 20, b[0]:b[2]], (96, 96)) for f, b in zip(frames, boxes)
                      if b is not None])
    speech = work / "speech-4s.wav"
    if not speech.exists():
        media.make_speech(speech, 4.0)
    mels = audio.mel_windows(audio.melspectrogram(audio.load_audio(str(speech))), 25.0)[:len(crops)]
    reference = Generator(model, device, "fp32")(crops, mels).astype(int)
    print(f"\n## precision on {device} (random-weight checkpoint; uint8 levels, 96x96 faces)")
    print(f"fp32 faces themselves: standard deviation {reference.std():.1f} levels (a flat face makes the "
          "comparison weak; rerun with the official weights via --checkpoint for a real figure)")
    candidates = ["fp16", "bf16"] if device.startswith("cuda") else ["bf16"]
    for precision in candidates:
        try:
            start = time.perf_counter()
            out = Generator(model, device, precision)(crops, mels).astype(int)
            seconds = time.perf_counter() - start
        except Exception as err:  # not supported here
            print(f"{precision}: not available ({type(err).__name__})")
            continue
        diff = np.abs(out - reference)
        print(f"{precision} vs fp32: mean {diff.mean():.2f}, 99th percentile {np.percentile(diff, 99):.0f}, "
              f"max {diff.max()} ({len(crops) / seconds:.1f} faces/s)")
    encoded = work / "codec-noise.mp4"
    with VideoWriter(str(encoded), 640, 360, 25.0, None) as writer:
        for frame in frames:
            writer.write(frame)
    decoded = list(read_frames(probe_media(str(encoded))))
    noise = np.concatenate([np.abs(a.astype(int) - b.astype(int)).ravel() for a, b in zip(frames, decoded)])
    print(f"x264 (crf 18) vs its input: mean {noise.mean():.2f}, 99th percentile {np.percentile(noise, 99):.0f}, "
          f"max {noise.max()}")


def child_run(args: argparse.Namespace) -> None:
    """One engine run in this (child) process; prints a JSON line with its stats.

    torch is imported only for a GPU's memory figures: a CPU job on OpenVINO runs without it,
    as the CLI does, and its objects would otherwise slow every garbage collection of the run being timed.
    """
    from lipsync import LipSync, Options

    engine = LipSync(args.checkpoint, device=args.device, allow_download=False)
    box = tuple(args.box) if args.box else (-1, -1, -1, -1)
    on_cuda = engine.device.startswith("cuda")
    if on_cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = engine.sync(args.face, args.audio, args.outfile, Options(box=box, detector=args.detector))
    wall = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None
    print("RESULT " + json.dumps({"frames": result.frames, "wall": wall, "seconds": result.seconds,
                                  "peak_rss_mb": peak_rss_mb(),
                                  "peak_gpu_mb": gpu, "detector": result.detector, "device": result.device}))


def peak_rss_mb() -> float:
    """This process's peak resident memory.

    Not getrusage's ru_maxrss: a child started by fork + exec inherits its parent's peak there (here the
    benchmark's own, with the generator-alone and host-peak runs loaded), which hid the engine's figure.
    VmHWM belongs to the address space, which exec replaces.
    """
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
    except (OSError, AttributeError):  # not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)


def run_child(clip: Path, speech: Path, work: Path, checkpoint: Path, device: str, detector: str,
              box: list[int] | None, cache_dir: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", "--face", str(clip), "--audio", str(speech),
           "--outfile", str(work / "out.mp4"), "--checkpoint", str(checkpoint), "--device", device,
           "--detector", detector]
    if box:
        cmd += ["--box", *map(str, box)]
    env = dict(os.environ, LIPSYNC_CACHE_DIR=str(cache_dir), HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"engine run failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} (threads {torch.get_num_threads()}){gpu}"


def fps(frames: int, seconds: float) -> str:
    return f"{frames / seconds:8.1f}" if seconds > 0 else "       -"


def bench_clip(name: str, work: Path, checkpoint: Path, device: str, detector: str) -> None:
    from lipsync.runtime.devices import model_batch, resolve_device

    device = resolve_device(device)
    clip, speech = make_inputs(work, name)
    n, t_decode = limit_decode(clip)
    t_encode = limit_encode(clip, speech, n, work)
    height, width = CLIPS[name][1][1], CLIPS[name][1][0]
    batch = model_batch(0, height, width, device)
    t_gen, gflop, backend = limit_generator(device, batch, n, checkpoint)
    generator = f"generator alone (batch {batch})"
    limits = {"decode alone": n / t_decode, "encode alone": n / t_encode, generator: n / t_gen}
    slowest = min(limits, key=limits.get)
    # On a CPU every stage shares the same cores: the rate if their busy times were packed onto them without a gap
    packed = 1 / sum(1 / rate for rate in limits.values())

    print(f"\n## {name}: {n} frames, {width}x{height}, 25 fps, device {device}")
    for label, rate in limits.items():
        print(f"limit  {label:<28} {rate:8.1f} fps")
    print(f"generator: {backend}; {gflop:.2f} GFLOP per face = {limits[generator] * gflop:.0f} GFLOP/s")
    if device == "cpu":
        import torch
        from hostpeak import fp32_peaks

        peaks = fp32_peaks(torch.get_num_threads())
        best = max(peaks, key=peaks.get)
        print("host fp32 peak (4096 x 4096 matmul): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
              + f" GFLOP/s; the generator alone runs at {limits[generator] * gflop / peaks[best]:.0%} of the best "
              f"({best}), ceiling {peaks[best] / gflop:.1f} faces/s")
    cache_dir = Path(tempfile.mkdtemp(prefix="bench-cache-", dir=work))
    box = [int(height * 0.2), int(height * 0.75), int(width * 0.35), int(width * 0.65)]
    runs = [("default (detect)", detector, None), ("fixed --box", detector, box),
            ("default (cached boxes)", detector, None)]
    print(f"limit  all three packed on the cores  {packed:8.1f} fps (1 / the sum of their seconds per frame)")
    print(f"{'run':<24} {'e2e fps':>8} {'decode':>8} {'detect':>8} {'generate':>8} {'blend':>8} {'encode':>8} "
          f"{'audio s':>8} {'RSS MB':>8} {'GPU MB':>8} {'e2e/limit':>9} {'e2e/packed':>10}")
    for label, det, fixed in runs:
        r = run_child(clip, speech, work, checkpoint, device, det, fixed, cache_dir)
        s, frames = r["seconds"], r["frames"]
        e2e = frames / s["total"]
        gpu = f"{r['peak_gpu_mb']:8.0f}" if r["peak_gpu_mb"] is not None else "       -"
        print(f"{label:<24} {e2e:8.1f} {fps(frames, s.get('decode', 0))} {fps(frames, s.get('detect', 0))} "
              f"{fps(frames, s.get('generate', 0))} {fps(frames, s.get('crop+blend', 0))} "
              f"{fps(frames, s.get('encode', 0))} {s.get('audio', 0):8.2f} {r['peak_rss_mb']:8.0f} {gpu} "
              f"{e2e / limits[slowest]:9.2f} {e2e / packed:10.2f}")
    print(f"(slowest limit: {slowest}; stage columns are frames / seconds that stage was busy; "
          f"detector: {r['detector']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one small clip, a smoke run")
    parser.add_argument("--clips", nargs="+", choices=list(CLIPS), default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--detector", default="auto")
    parser.add_argument("--work", default=str(ROOT / "bench" / ".work"), help="where clips and outputs go")
    parser.add_argument("--precision", action="store_true", help="only the half-precision check")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--face", help=argparse.SUPPRESS)
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    parser.add_argument("--outfile", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help="a real checkpoint (e.g. weights/wav2lip_gan.pth) instead of "
                                                 "random weights: same speed, meaningful precision figures")
    parser.add_argument("--box", type=int, nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_run(args)
        return
    import media

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(args.checkpoint) if args.checkpoint else work / "random_wav2lip.pth"
    if not checkpoint.exists():
        media.make_checkpoint(checkpoint)
    clips = args.clips or (["4s-480p"] if args.quick else ["10s-720p", "60s-1080p"])
    print(f"# lipsync benchmark, {time.strftime('%Y-%m-%d')}\nmachine: {machine()}")
    from lipsync.runtime.devices import resolve_device

    precision_check(resolve_device(args.device), work, checkpoint)
    if args.precision:
        return
    for name in clips:
        bench_clip(name, work, checkpoint, args.device, args.detector)


if __name__ == "__main__":
    main()
