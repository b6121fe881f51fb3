"""End to end, whole process: the official Wav2Lip inference.py against `python -m lipsync`, same clip, box, checkpoint.

    .venv/bin/python bench/official_e2e.py [--rounds 3] [--seconds 10] [--size 640x480] [--work /tmp/lipsync-e2e]

The official code is rebuilt from its public source (a bare git mirror, default
/work/.mirror/Rudrabha+Wav2Lip/repo) into the work folder, never into this repository,
with only what today's libraries need patched there (librosa.filters.mel takes keyword
arguments now; an `ffmpeg` on PATH, pointing at imageio-ffmpeg's binary). Both run with the
same interpreter, the same random checkpoint in the official layout (tests/media.py; speed
does not depend on the weights), the same 640x480 clip made with tests/media.py, speech
from media.make_speech, and the same fixed `--box` (no face detection), each with its own
default batch size. Runs alternate (official, ours; then ours, official; ...), each timed
as a whole process from spawn to exit. Our first run starts with an empty model cache, so
the OpenVINO conversion counts in it; it is reported on its own, beside the median of the
others. Prints a Markdown table and the ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]
MIRROR = "/work/.mirror/Rudrabha+Wav2Lip/repo"
BOX = (100, 380, 200, 440)  # top bottom left right, on the face of the 640x480 clip


def build_official(mirror: str, target: Path) -> Path:
    """`git archive` of the official code into target/official, patched for today's librosa; returns its folder."""
    official = target / "official"
    if official.exists():
        shutil.rmtree(official)
    official.mkdir(parents=True)
    archive = subprocess.run(["git", f"--git-dir={mirror}", "archive", "HEAD"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(official)], input=archive.stdout, check=True)
    audio_py = official / "audio.py"
    text = audio_py.read_text()
    old = "librosa.filters.mel(hp.sample_rate, hp.n_fft, n_mels=hp.num_mels,"
    assert old in text, "the official audio.py changed; update the patch"
    audio_py.write_text(text.replace(old, "librosa.filters.mel(sr=hp.sample_rate, n_fft=hp.n_fft, n_mels=hp.num_mels,"))
    (official / "temp").mkdir(exist_ok=True)
    commit = subprocess.run(["git", f"--git-dir={mirror}", "rev-parse", "--short", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    (official / "COMMIT").write_text(commit)
    return official


def ffmpeg_shim(target: Path) -> Path:
    """A folder with `ffmpeg` in it (imageio-ffmpeg's binary), for the official code's shell calls."""
    import imageio_ffmpeg

    shim = target / "bin"
    shim.mkdir(parents=True, exist_ok=True)
    link = shim / "ffmpeg"
    if not link.exists():
        link.symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    return shim


def make_inputs(work: Path, seconds: float, size: tuple[int, int]) -> tuple[Path, Path, Path]:
    import media

    clip = work / f"face_{seconds:g}s_{size[0]}x{size[1]}.mp4"
    speech = work / f"speech_{seconds:g}s.wav"
    checkpoint = work / "random_wav2lip.pth"
    if not clip.exists():
        media.make_face_video(clip, seconds=seconds, fps=25, size=size)
    if not speech.exists():
        media.make_speech(speech, seconds=seconds)
    if not checkpoint.exists():
        media.make_checkpoint(checkpoint)  # the official layout, legacy (non-zip) format like the real files
    return clip, speech, checkpoint


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout + proc.stderr


def frame_count(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--work", default="/tmp/lipsync-e2e")
    ap.add_argument("--mirror", default=MIRROR)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    official = build_official(args.mirror, work)
    clip, speech, checkpoint = make_inputs(work, args.seconds, size)
    box = [str(v) for v in BOX]
    env = dict(os.environ, PATH=f"{ffmpeg_shim(work)}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("PYTHONPATH", None)
    model_cache = work / "model-cache"
    shutil.rmtree(model_cache, ignore_errors=True)  # our first run converts: its cost is in the figures
    ours_env = dict(env, LIPSYNC_MODEL_CACHE=str(model_cache), LIPSYNC_CACHE_DIR=str(work / "det-cache"))
    py = sys.executable
    cmds = {
        "official": ([py, "inference.py", "--checkpoint_path", str(checkpoint), "--face", str(clip), "--audio",
                      str(speech), "--outfile", str(work / "out_official.mp4"), "--box", *box], official, env),
        "ours": ([py, "-m", "lipsync", "--checkpoint_path", str(checkpoint), "--face", str(clip), "--audio",
                  str(speech), "--outfile", str(work / "out_ours.mp4"), "--box", *box, "--device", "cpu"],
                 ROOT, ours_env),
        # the same with fp32 forced: the official numbers exactly (the default, auto, is bf16 where the CPU has it)
        "ours fp32": ([py, "-m", "lipsync", "--checkpoint_path", str(checkpoint), "--face", str(clip), "--audio",
                       str(speech), "--outfile", str(work / "out_fp32.mp4"), "--box", *box, "--device", "cpu",
                       "--precision", "fp32"], ROOT, ours_env),
    }
    times: dict[str, list[float]] = {"official": [], "ours": [], "ours fp32": []}
    first_frame: list[float] = []
    backend = backend_fp32 = ""
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    for r in range(args.rounds):
        order = ("official", "ours", "ours fp32") if r % 2 == 0 else ("ours fp32", "ours", "official")
        for name in order:
            cmd, cwd, e = cmds[name]
            seconds, log = timed(cmd, cwd, e)
            times[name].append(seconds)
            if name == "ours":
                found = re.search(r"First frame after ([\d.]+) s", log)
                first_frame.append(float(found.group(1)) if found else float("nan"))
                found = re.search(r"model backend (.*?); ", log)
                backend = found.group(1) if found else backend
            if name == "ours fp32":
                found = re.search(r"model backend (.*?); ", log)
                backend_fp32 = found.group(1) if found else ""
            print(f"round {r + 1} {name:8s} {seconds:7.1f} s", flush=True)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    n_off, n_ours = frame_count(work / "out_official.mp4"), frame_count(work / "out_ours.mp4")
    ours_warm = times["ours"][1:] or times["ours"]
    official_median = statistics.median(times["official"])
    ratios = [o / u for o, u in zip(times["official"], times["ours"])]
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    print()
    print(f"# {args.seconds:g} s clip, {size[0]}x{size[1]} at 25 fps, fixed --box {' '.join(box)}, random checkpoint "
          f"(official layout); official Wav2Lip {(official / 'COMMIT').read_text()} (librosa.filters.mel patched to "
          f"keywords); {cpu}, {os.cpu_count()} cores, torch {torch.__version__}; {args.rounds} alternating rounds")
    print("| command | runs (s, in order) | median s | output frames |")
    print("|---|---|---:|---:|")
    print(f"| official `inference.py --box` (batch 128) | {', '.join(f'{t:.1f}' for t in times['official'])} | "
          f"{official_median:.1f} | {n_off} |")
    print(f"| ours `python -m lipsync --box --device cpu` | {', '.join(f'{t:.1f}' for t in times['ours'])} | "
          f"{statistics.median(ours_warm):.1f} (cached) / {times['ours'][0]:.1f} (first, converting) | {n_ours} |")
    fp32 = statistics.median(times["ours fp32"])
    print(f"| ours with `--precision fp32` | {', '.join(f'{t:.1f}' for t in times['ours fp32'])} | {fp32:.1f} | "
          f"{frame_count(work / 'out_fp32.mp4')} |")
    print()
    print(f"ratio official / ours, median of the cached runs: {official_median / statistics.median(ours_warm):.2f}x; "
          f"first run (conversion included): {official_median / times['ours'][0]:.2f}x; per round: "
          f"{', '.join(f'{x:.2f}' for x in ratios)}")
    print(f"ratio official / ours with --precision fp32: {official_median / fp32:.2f}x")
    print(f"ours: first frame after {', '.join(f'{t:.1f}' for t in first_frame)} s (from main()); "
          f"model backend {backend}; with --precision fp32: {backend_fp32}")


if __name__ == "__main__":
    main()
