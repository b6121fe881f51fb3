"""The generator's backends on this CPU, interleaved, against the host's measured fp32 peak.

    .venv/bin/python bench/backends.py [--rounds 7] [--faces 64] [--batch 8]

Each backend runs the same real inputs (face crops of the calibration clip at the
official boxes, its mel windows; or the astronaut clip of tests/media.py when the
calibration files are missing) through lipsync.runner.ModelRunner, so pre- and post-
processing are the engine's; only the backend differs. In every round each backend runs
once, in a rotating order, and the host's fp32 peak is measured in the same round
(the best 4096 x 4096 fp32 matrix multiply of torch, numpy and OpenVINO, all threads;
bench/hostpeak.py), so a busy machine slows all of them alike.
The table gives medians over rounds: faces/s, ratio to eager PyTorch in the same round,
the fraction of the peak (7.93 GFLOP per face, counted by FlopCounterMode), and the
largest and mean uint8 difference of every face against eager PyTorch fp32.
ONNX Runtime is added when it is installed (exported once, not used by the engine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import lipsync  # noqa: E402,F401  (first: OMP_WAIT_POLICY before torch loads)
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from lipsync import audio, backends  # noqa: E402
from lipsync.model import IMG_SIZE, load_model  # noqa: E402
from lipsync.backends import LazyModel  # noqa: E402
from lipsync.runner import ModelRunner  # noqa: E402

from hostpeak import fp32_peak, gflop_per_face  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--faces", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8, help="faces per model call (the engine's CPU default: 8)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lipsync-backends-"))
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
    runners["openvino fp32"] = ModelRunner(model, "cpu", backend="openvino")  # converts into the empty cache now
    openvino = runners["openvino fp32"].backend
    if openvino.name != "openvino":
        raise SystemExit(f"OpenVINO did not load: {openvino.label}")
    oneoff["openvino fp32"] = f"convert + compile {time.perf_counter() - t:.1f} s; {openvino.backend.reason}"
    t = time.perf_counter()
    backends.load_openvino(LazyModel.of(model), args.batch, timings)
    oneoff["openvino fp32"] += f"; cached start {time.perf_counter() - t:.2f} s"
    t = time.perf_counter()
    runners["openvino bf16 (--precision bf16)"] = ModelRunner(model, "cpu", precision="bf16", backend="openvino")
    oneoff["openvino bf16 (--precision bf16)"] = (f"compile {time.perf_counter() - t:.1f} s; "
                                                 f"{runners['openvino bf16 (--precision bf16)'].backend_label}")
    try:
        t = time.perf_counter()
        ort_run = onnxruntime_runner(model, args.batch, work)
        ort_runner = ModelRunner(model, "cpu", backend="pytorch")
        ort_runner.backend = backends.SafeBackend(ort_run, LazyModel.of(model))
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
          f"{torch.get_num_threads()} threads, best of 3 per round; reached by {max(set(libraries), key=libraries.count)}): "
          f"median {peak:.0f} GFLOP/s; generator {gflop:.2f} GFLOP per face -> ceiling {peak / gflop:.1f} faces/s; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| backend | faces/s | x eager (same round) | fraction of fp32 peak | max diff | mean diff | one-off |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name in names:
        d = diffs[name]
        print(f"| {name} | {statistics.median(rates[name]):.2f} | {statistics.median(ratios[name]):.2f} | "
              f"{statistics.median(fractions[name]):.0%} | {d.max()} | {d.mean():.5f} | {oneoff.get(name, '')} |")
    for name, text in oneoff.items():
        if name not in runners:
            print(name)


if __name__ == "__main__":
    main()
