"""Benchmark: batch dubbing against running the CLI once per clip.

    .venv/bin/python bench/batch_bench.py                 # 8 clips of 1.5 s, 256x192
    .venv/bin/python bench/batch_bench.py --clips 4 --no-ray

It makes its own clips (tests/media.py: the astronaut panned about, speech-like sound)
and a random checkpoint in the official layout, then times, each as a fresh process the
way a user runs it:
- `python -m lipsync` once per clip (the model and detector are loaded for every clip);
- `python -m lipsync batch` locally with one worker (the default on a CPU) and with two
  (one thread each; the measurement behind that default);
- `python -m lipsync batch --ray`, which starts a local Ray instance and one actor.
It prints wall seconds, clips per minute and the speed-up over the per-clip CLI.
Detector: Haar, device: CPU unless --device says otherwise. Needs no network.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]
import lipsync  # noqa: F401  (first: OMP_WAIT_POLICY set before anything loads torch)


def make_clips(work: Path, clips: int, seconds: float, size: tuple[int, int]) -> tuple[Path, Path]:
    """`clips` face videos and speech files, a manifest listing them and a random checkpoint."""
    import media

    rows = []
    for i in range(clips):
        face = media.write_video(work / f"face{i}.mp4", media.pan_zoom_frames(int(seconds * 25), size, seed=i), 25,
                                 size)
        speech = media.write_wav(work / f"speech{i}.wav", media.speech_samples(seconds, seed=i))
        rows.append({"face": face.name, "audio": speech.name, "output": f"out/clip{i}.mp4"})
    manifest = work / "jobs.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["face", "audio", "output"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest, media.make_checkpoint(work / "random_wav2lip.pth")


def run(cmd: list[str]) -> float:
    """Wall seconds of one command, which must succeed."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return seconds


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import torch

    return (f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 192), metavar=("W", "H"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lipsync-batch-bench-") as tmp:
        work = Path(tmp)
        manifest, checkpoint = make_clips(work, args.clips, args.seconds, tuple(args.size))
        common = ["--checkpoint_path", str(checkpoint), "--detector", "haar", "--device", args.device]
        py = [sys.executable, "-m", "lipsync"]
        print(f"# {args.clips} clips of {args.seconds} s, {args.size[0]}x{args.size[1]} at 25 fps; {machine()}")
        print(f"# load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        results: list[tuple[str, float]] = []
        per_clip = 0.0
        with open(manifest) as f:
            rows = list(csv.DictReader(f))
        (work / "cli").mkdir()
        for i, row in enumerate(rows):
            per_clip += run([*py, "--face", str(work / row["face"]), "--audio", str(work / row["audio"]),
                             "--outfile", str(work / "cli" / f"clip{i}.mp4"), "--quiet", *common])
        results.append(("CLI once per clip", per_clip))
        runs = [("batch, local, 1 worker", ["--workers", "1"]), ("batch, local, 2 workers", ["--workers", "2"])]
        if not args.no_ray:
            runs.append(("batch --ray (local Ray, 1 actor)", ["--ray"]))
        for label, extra in runs:
            results.append((label, run([*py, "batch", str(manifest), "--force", "--quiet", *common, *extra])))
        print(f"{'run':<36}{'wall s':>9}{'clips/min':>11}{'speed-up':>10}")
        for label, seconds in results:
            print(f"{label:<36}{seconds:>9.1f}{60 * args.clips / seconds:>11.1f}{per_clip / seconds:>9.2f}x")
        print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
