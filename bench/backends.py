"""The generator's backends on this CPU, interleaved, against the host's measured fp32 peak; and a cold start.

    .venv/bin/python bench/backends.py [--rounds 7] [--faces 64] [--batch 8] [--cold-runs 2] [--no-speed]

Each backend runs the same real inputs (face crops of the calibration clip at the
official boxes, its mel windows; or the astronaut clip of tests/media.py when the
calibration files are missing) through lipsync.generator.ModelRunner, so pre- and post-
processing are the engine's; only the backend differs. "openvino fp32" is the engine's
(the graph built from the weights); "openvino fp32, converted from torch" is the model
ov.convert_model makes of the PyTorch module (what the engine did before), for comparison.
In every round each backend runs once, in a rotating order, and the host's fp32 peak is measured in the same round
(the best 4096 x 4096 fp32 matrix multiply of torch, numpy and OpenVINO, all threads;
bench/hostpeak.py), so a busy machine slows all of them alike.
The table gives medians over rounds: faces/s, ratio to eager PyTorch in the same round,
the fraction of the peak (7.93 GFLOP per face, counted by FlopCounterMode), and the
largest and mean uint8 difference of every face against eager PyTorch fp32.
ONNX Runtime is added when it is installed (exported once, not used by the engine).

The cold start: a fixed-box CPU job (a photo, 1 s of speech) in a fresh process with an
empty model cache, on a checkpoint of the official size (state dict + Adam moments,
legacy format, 436 MB, in the page cache), with torch importable and with torch blocked
(the CPU install); alternating, `--cold-runs` each. Time to first frame is from the
start of the child's script to the first written frame (interpreter start-up excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]
import lipsync  # noqa: F401  (first: OMP_WAIT_POLICY set before anything loads torch)

# isort: split
import cv2
import numpy as np
import torch
from hostpeak import fp32_peak, gflop_per_face

from lipsync.generator import (
    LazyModel,
    ModelRunner,
    load_model,
    openvino_backend,
)
from lipsync.generator.choice import SafeBackend
from lipsync.geometry import IMG_SIZE
from lipsync.media import audio

CAL = Path("/work/shared/calibration")


def real_inputs(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    boxes_file = CAL / "talking_head_official_boxes.json"
    if boxes_file.exists():
        boxes = json.loads(boxes_file.read_text())["default_pads"]
        cap = cv2.VideoCapture(str(CAL / "talking_head.mp4"))
        crops = []
        while len(crops) < min(n, len(boxes)):
            ok, frame = cap.read()
            if not ok:
                break
            y1, y2, x1, x2 = boxes[len(crops)]
            crops.append(cv2.resize(frame[y1:y2, x1:x2], (IMG_SIZE, IMG_SIZE)))
        cap.release()
        wav = audio.load_audio(str(CAL / "talking_head.wav"))
        source = "calibration talking_head.mp4 at the official boxes"
    else:
        import media

        crops = [cv2.resize(f[20:220, 60:260], (IMG_SIZE, IMG_SIZE)) for f in media.pan_zoom_frames(n)]
        wav = media.speech_samples(n / 25 + 0.5)
        source = "tests/media.py astronaut clip"
    mels = audio.mel_windows(audio.melspectrogram(wav), 25.0)
    k = min(len(crops), len(mels), n)
    reps = -(-n // k)
    crops = np.concatenate([np.stack(crops[:k])] * reps)[:n]
    mels = np.concatenate([mels[:k]] * reps)[:n]
    return crops, np.ascontiguousarray(mels, dtype=np.float32), source


def onnxruntime_runner(model, batch: int, work: Path):
    import onnxruntime as ort

    path = work / "wav2lip.onnx"
    torch.onnx.export(model, (torch.rand(batch, 1, 80, 16), torch.rand(batch, 6, 96, 96)), str(path),
                      input_names=["mels", "faces"], output_names=["out"],
                      dynamic_axes={"mels": {0: "b"}, "faces": {0: "b"}, "out": {0: "b"}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    class OnnxRuntimeBackend:
        name = label = "onnxruntime"

        def __call__(self, mels, faces):
            return session.run(None, {"mels": mels, "faces": faces})[0]
    return OnnxRuntimeBackend()


def torch_converted_backend(model, batch: int) -> openvino_backend.OpenVINOBackend:
    """The generator as ov.convert_model makes it from the PyTorch module (the engine's path before FORMAT 2)."""
    import openvino as ov

    mels, faces = openvino_backend.example_inputs(1)
    with torch.inference_mode():
        converted = ov.convert_model(model.eval(), example_input=(torch.from_numpy(mels), torch.from_numpy(faces)))
    converted.reshape({0: [-1, 1, 80, 16], 1: [-1, 6, 96, 96]})
    backend = openvino_backend.OpenVINOBackend(converted, ov.Core(), LazyModel.of(model).threads)
    backend.requests(-(-batch // backend.streams))
    return backend


COLD_JOB = """
import time
t0 = time.perf_counter()
import sys, json
if {block}:
    sys.modules["torch"] = None
import lipsync
first = []
engine = lipsync.LipSync({checkpoint!r}, device="cpu", allow_download=False)
ready = time.perf_counter() - t0
def progress(stage, done, total):
    if stage == "Syncing lips" and done and not first:
        first.append(time.perf_counter() - t0)
result = engine.sync({face!r}, {speech!r}, {out!r}, box={box!r}, progress=progress)
print(json.dumps({{"ready": ready, "first_frame": first[0], "total": time.perf_counter() - t0,
                  "backend": result.backend, "torch": "torch" in sys.modules and sys.modules["torch"] is not None}}))
"""


def cold_start(work: Path, runs: int) -> None:
    """Time to first frame of a CPU job whose model cache is empty, with and without torch, alternating."""
    import cv2
    import media

    checkpoint = work / "official_size.pth"
    media.make_checkpoint(checkpoint, optimizer_state=True)
    checkpoint.read_bytes()  # in the page cache, as after a download
    face = work / "photo.jpg"
    cv2.imwrite(str(face), media.astronaut_bgr())
    speech = media.write_wav(work / "speech.wav", media.speech_samples(1.0, seed=4))
    results: dict[str, list[dict]] = {"with torch": [], "without torch (CPU install)": []}
    for r in range(runs):
        for name, block in (("with torch", False), ("without torch (CPU install)", True))[:: 1 if r % 2 == 0 else -1]:
            cache = Path(tempfile.mkdtemp(dir=work, prefix="cold-cache-"))
            script = COLD_JOB.format(block=block, checkpoint=str(checkpoint), face=str(face), speech=str(speech),
                                     out=str(cache / "out.mp4"), box=(60, 250, 170, 330))
            env = dict(os.environ, LIPSYNC_MODEL_CACHE=str(cache), PYTHONPATH=str(ROOT))
            proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                                  timeout=600)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-2000:])
            results[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"cold run {r + 1}, {name}: {results[name][-1]}", flush=True)
    print(f"\ncold start, {checkpoint.stat().st_size:,}-byte checkpoint, empty model cache, medians of {runs}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| install | engine ready (s) | first frame (s) | job total (s) | backend |")
    print("|---|---:|---:|---:|---|")
    for name, rows in results.items():
        print(f"| {name} | {statistics.median(r['ready'] for r in rows):.2f} | "
              f"{statistics.median(r['first_frame'] for r in rows):.2f} | "
              f"{statistics.median(r['total'] for r in rows):.2f} | {rows[-1]['backend']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--faces", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8, help="faces per model call (the engine's CPU default: 8)")
    ap.add_argument("--cold-runs", type=int, default=2, help="cold starts with and without torch (0: none)")
    ap.add_argument("--no-speed", action="store_true", help="only the cold start")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lipsync-backends-"))
    if not args.no_speed:
        speed(args, work)
    if args.cold_runs:
        cold_start(work, args.cold_runs)


def speed(args: argparse.Namespace, work: Path) -> None:
    os.environ.setdefault("LIPSYNC_MODEL_CACHE", str(work / "models"))
    import media

    checkpoint = media.make_checkpoint(work / "random_wav2lip.pth")  # random weights: speed does not depend on them
    model = load_model(str(checkpoint))
    crops, mels, source = real_inputs(args.faces)
    gflop = gflop_per_face(model)

    runners: dict[str, ModelRunner] = {}
    oneoff: dict[str, str] = {}
    runners["pytorch eager fp32"] = ModelRunner(model, "cpu", backend="pytorch")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    runners["openvino fp32"] = ModelRunner(model, "cpu", backend="openvino")  # builds into the empty cache now
    openvino = runners["openvino fp32"].backend
    if openvino.name != "openvino":
        raise SystemExit(f"OpenVINO did not load: {openvino.label}")
    oneoff["openvino fp32"] = (f"build + compile + self-check {time.perf_counter() - t:.1f} s; "
                               f"{openvino.backend.reason}")
    t = time.perf_counter()
    openvino_backend.load_openvino(LazyModel(str(checkpoint)), args.batch, timings)
    oneoff["openvino fp32"] += f"; cached start {time.perf_counter() - t:.2f} s"
    t = time.perf_counter()
    converted = ModelRunner(model, "cpu", backend="pytorch")
    converted.backend = SafeBackend(torch_converted_backend(model, args.batch), LazyModel.of(model))
    runners["openvino fp32, converted from torch"] = converted
    oneoff["openvino fp32, converted from torch"] = f"convert + compile {time.perf_counter() - t:.1f} s"
    t = time.perf_counter()
    runners["openvino bf16 (--precision bf16)"] = ModelRunner(model, "cpu", precision="bf16", backend="openvino")
    oneoff["openvino bf16 (--precision bf16)"] = (f"compile {time.perf_counter() - t:.1f} s; "
                                                 f"{runners['openvino bf16 (--precision bf16)'].backend_label}")
    try:
        t = time.perf_counter()
        ort_run = onnxruntime_runner(model, args.batch, work)
        ort_runner = ModelRunner(model, "cpu", backend="pytorch")
        ort_runner.backend = SafeBackend(ort_run, LazyModel.of(model))
        runners["onnxruntime fp32"] = ort_runner
        oneoff["onnxruntime fp32"] = f"export + session {time.perf_counter() - t:.1f} s"
    except ImportError:
        oneoff["(onnxruntime not installed)"] = ""

    def run_all(runner: ModelRunner) -> np.ndarray:
        return np.concatenate([runner(crops[i:i + args.batch], mels[i:i + args.batch])
                               for i in range(0, len(crops), args.batch)])

    reference = run_all(runners["pytorch eager fp32"])
    diffs = {name: np.abs(run_all(r).astype(int) - reference) for name, r in runners.items()}
    names = list(runners)
    rates: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    fractions: dict[str, list[float]] = {n: [] for n in names}
    peaks: list[float] = []
    libraries: list[str] = []
    print(f"{args.faces} faces ({source}), batch {args.batch}, {args.rounds} rounds, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f}", flush=True)
    for r in range(args.rounds):
        peak, library = fp32_peak(torch.get_num_threads())
        peaks.append(peak)
        libraries.append(library)
        order = names[r % len(names):] + names[:r % len(names)]
        seconds = {}
        for name in order:
            t = time.perf_counter()
            run_all(runners[name])
            seconds[name] = time.perf_counter() - t
        for name in names:
            rate = args.faces / seconds[name]
            rates[name].append(rate)
            ratios[name].append(seconds["pytorch eager fp32"] / seconds[name])
            fractions[name].append(rate * gflop / peak)
        print(f"round {r + 1}: peak {peak:.0f} GFLOP/s ({library}), " + ", ".join(f"{n} {args.faces / s:.2f} faces/s"
                                                                     for n, s in seconds.items()), flush=True)
    peak = statistics.median(peaks)
    print(f"\nhost fp32 peak (the best 4096 x 4096 fp32 matmul of torch, numpy and OpenVINO, "
          f"{torch.get_num_threads()} threads, best of 3 per round; reached by "
          f"{max(set(libraries), key=libraries.count)}): "
          f"median {peak:.0f} GFLOP/s; generator {gflop:.2f} GFLOP per face -> ceiling {peak / gflop:.1f} faces/s; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| backend | faces/s | x eager (same round) | fraction of fp32 peak | max diff | mean diff | one-off |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name in names:
        d = diffs[name]
        print(f"| {name} | {statistics.median(rates[name]):.2f} | {statistics.median(ratios[name]):.2f} | "
              f"{statistics.median(fractions[name]):.0%} | {d.max()} | {d.mean():.5f} | {oneoff.get(name, '')} |")
    for name in oneoff:
        if name not in runners:
            print(name)


if __name__ == "__main__":
    main()
