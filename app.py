"""lipsync web app: upload a face video or photo and an audio track, tune the face box, get the synced video.

This file is the UI and nothing else: components, events, and the translation of their
values into `lipsync.Options`. The work is done by the `lipsync` package.

    python app.py [--host 0.0.0.0] [--port 7860] [--share]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see lipsync/__init__.py

try:  # ZeroGPU on Hugging Face Spaces: imported first (before torch), the GPU is attached only inside decorated calls
    import spaces

    on_gpu = spaces.GPU(duration=180)
except ImportError:  # anywhere else the decorator does nothing
    def on_gpu(fn):
        return fn

import argparse
import logging
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import gradio as gr

from lipsync import LipSync, LipSyncError, Options
from lipsync.faces import make_detector
from lipsync.pipeline import resolve_device
from lipsync.preview import detect_first_frame, draw_boxes
from lipsync.video import browser_copy, probe_media
from lipsync.weights import CHECKPOINT_ENV, CHECKPOINTS, DEFAULT_CHECKPOINT, available_checkpoints

log = logging.getLogger("lipsync.app")
ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "examples"

# Settings, each from the environment with a default; the command line can override the server ones.
MAX_SECONDS = float(os.environ.get("LIPSYNC_MAX_SECONDS", "120"))  # longest audio accepted
MAX_SIDE = int(os.environ.get("LIPSYNC_MAX_SIDE", "4096"))  # largest frame side accepted (after the resize option)
CONCURRENCY = int(os.environ.get("LIPSYNC_CONCURRENCY", "1"))  # jobs run at once (protects the GPU)
QUEUE_SIZE = int(os.environ.get("LIPSYNC_QUEUE_SIZE", "16"))  # jobs waiting before new ones are turned away
MAX_UPLOAD = os.environ.get("LIPSYNC_MAX_UPLOAD", "500mb")
KEEP_MINUTES = float(os.environ.get("LIPSYNC_KEEP_MINUTES", "60"))  # results kept on disk this long
OUTPUT_ROOT = Path(os.environ.get("LIPSYNC_OUTPUT_DIR", Path(tempfile.gettempdir()) / "lipsync-app"))

ZERO_GPU = bool(os.environ.get("SPACES_ZERO_GPU"))  # no GPU outside decorated calls: the preview detects on the CPU
CUSTOM = "custom ($LIPSYNC_CHECKPOINT)"
RESIZE_CHOICES = [("Full resolution", 1), ("Half (1/2)", 2), ("Quarter (1/4)", 4)]
DETECTOR_CHOICES = [("Automatic", "auto"), ("S3FD (as Wav2Lip was trained)", "s3fd"), ("Haar (offline)", "haar")]

_engines: dict[tuple[str, str], LipSync] = {}
_detectors: dict[tuple[str, str], tuple] = {}
_lock = threading.Lock()


def checkpoint_choices() -> list[str]:
    names = [DEFAULT_CHECKPOINT] + [n for n in CHECKPOINTS if n != DEFAULT_CHECKPOINT]
    return ([CUSTOM] if os.environ.get(CHECKPOINT_ENV) else []) + names


def get_engine(checkpoint: str, device: str) -> LipSync:
    """One loaded model per (checkpoint, device), shared by every request."""
    key = (checkpoint, resolve_device(device))
    with _lock:
        if key not in _engines:
            spec = os.environ.get(CHECKPOINT_ENV) if checkpoint == CUSTOM else checkpoint
            _engines[key] = LipSync(spec, device=key[1])
        return _engines[key]


def get_detector(name: str, device: str):
    key = (name, resolve_device(device))
    with _lock:
        if key not in _detectors:
            _detectors[key] = make_detector(name, key[1])
        return _detectors[key]


def build_options(pad_top, pad_bottom, pad_left, pad_right, resize, smooth, blend, detector,
                  box_top, box_bottom, box_left, box_right, allow_silence=False) -> Options:
    box = tuple(int(v if v is not None else -1) for v in (box_top, box_bottom, box_left, box_right))
    return Options(pads=(int(pad_top), int(pad_bottom), int(pad_left), int(pad_right)), resize_factor=int(resize),
                   nosmooth=not smooth, blend=blend, detector=detector,
                   box=box if all(v >= 0 for v in box) else (-1, -1, -1, -1), max_seconds=MAX_SECONDS,
                   max_side=MAX_SIDE, allow_silence=bool(allow_silence))


def clean_old_outputs(now: float | None = None) -> None:
    """Delete per-request folders older than KEEP_MINUTES; run at every job's start and on a schedule."""
    now = now or time.time()
    if not OUTPUT_ROOT.is_dir():
        return
    for folder in OUTPUT_ROOT.iterdir():
        try:
            if now - folder.stat().st_mtime > KEEP_MINUTES * 60:
                shutil.rmtree(folder, ignore_errors=True)
        except FileNotFoundError:
            pass


def start_cleaner(interval_s: float = 600) -> threading.Thread:
    """Clean old results every `interval_s` seconds, so an idle server does not keep them forever."""
    def loop() -> None:
        while True:
            try:
                clean_old_outputs()
            except OSError:
                log.exception("cleaning old results failed")
            time.sleep(interval_s)

    thread = threading.Thread(target=loop, name="lipsync-cleaner", daemon=True)
    thread.start()
    return thread


def user_error(err: Exception) -> gr.Error:
    if isinstance(err, LipSyncError):
        return gr.Error(str(err))
    log.exception("unexpected failure")
    return gr.Error(f"Something went wrong on our side ({type(err).__name__}). The job was stopped; "
                    "please try again, and report it if it happens again.")


@on_gpu
def lipsync(face_video, face_photo, audio, pad_top, pad_bottom, pad_left, pad_right, resize, checkpoint, smooth,
            blend, device, detector, box_top, box_bottom, box_left, box_right, allow_silence=False,
            progress=gr.Progress()):
    """Sync the face to the audio; returns (original, result, download, stats)."""
    face = face_video or face_photo
    if not face:
        raise gr.Error("Upload a face video or a photo first.")
    if not audio:
        raise gr.Error("Upload or record the audio first.")
    clean_old_outputs()
    job_dir = OUTPUT_ROOT / uuid.uuid4().hex
    job_dir.mkdir(parents=True, exist_ok=True)
    try:
        options = build_options(pad_top, pad_bottom, pad_left, pad_right, resize, smooth, blend, detector,
                                box_top, box_bottom, box_left, box_right, allow_silence)
        progress(0, desc="Loading the model")
        engine = get_engine(checkpoint, device)

        def report(stage: str, done: int, total: int) -> None:
            progress(done / max(total, 1), desc=f"{stage} ({done}/{total})")

        outfile = job_dir / f"lipsync_{Path(face).stem[:40]}.mp4"
        result = engine.sync(face, audio, str(outfile), options, progress=report)
        progress(1.0, desc="Preparing the original for display")
        original = browser_copy(probe_media(face), str(job_dir / "original.mp4"), audio,
                                seconds=result.frames / result.fps)
    except Exception as err:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise user_error(err) from None
    s = result.seconds
    stats = (f"**{result.frames} frames** ({result.frames / result.fps:.1f} s at {result.fps:.3f} fps, "
             f"{result.width}x{result.height}) · "
             f"{result.frames_without_face} without a face · detector: {result.detector} · device: {result.device} · "
             f"{s['total']:.1f} s in all (busy: audio {s.get('audio', 0):.1f}, faces {s.get('detect', 0):.1f}, "
             f"model {s.get('generate', 0):.1f}, encoder {s.get('encode', 0):.1f}; the stages overlap)")
    if result.frames_without_face:
        gr.Warning(f"No face was found in {result.frames_without_face} frames; they were left unchanged.")
    return original, str(outfile), str(outfile), stats


def preview(face_video, face_photo, pad_top, pad_bottom, pad_left, pad_right, resize, detector, device,
            box_top, box_bottom, box_left, box_right, cache):
    """Draw the detected and padded boxes on the first frame; detection reruns only for a new face/setting."""
    face = face_video or face_photo
    if not face:
        return None, "", {}
    options = build_options(pad_top, pad_bottom, pad_left, pad_right, resize, True, "box", detector,
                            box_top, box_bottom, box_left, box_right)
    key = f"{face}|{resize}|{detector}|{device}"
    try:
        if cache.get("key") != key:
            found, note = get_detector(detector, "cpu" if ZERO_GPU else device)
            frame, detection = detect_first_frame(face, options, found)
            cache = {"key": key, "frame": frame, "detection": detection, "note": note}
        image = draw_boxes(cache["frame"], cache["detection"], options)
    except Exception as err:
        raise user_error(err) from None
    if options.fixed_box:
        note = "Green: the fixed face box."
    elif cache["detection"] is None:
        note = "No face found in the first frame. Try another clip, or set a fixed face box under Advanced."
    else:
        note = f"Blue: face found by {cache['note'].split(' ')[0]}. Green: with padding, what the model sees."
    return image, note, cache


def build_app() -> gr.Blocks:
    with gr.Blocks(title="lipsync", delete_cache=(1800, 3600)) as demo:
        gr.Markdown("# lipsync\nMake the lips in a video or photo follow any audio, with Wav2Lip. "
                    "Upload a face and an audio track, check the face box, click **Sync lips**.")
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tabs() as face_tabs:
                    with gr.Tab("Video", id="video"):
                        face_video = gr.Video(label="Face video", sources=["upload"])
                    with gr.Tab("Photo", id="photo"):
                        face_photo = gr.Image(label="Face photo", type="filepath", sources=["upload"], image_mode=None)
                audio = gr.Audio(label="Audio (upload any format, or record)", sources=["upload", "microphone"],
                                 type="filepath")
                with gr.Group():
                    gr.Markdown("**Face box padding** (pixels added around the detected face; include the chin)")
                    with gr.Row():
                        pad_top = gr.Slider(0, 200, value=0, step=1, label="Top")
                        pad_bottom = gr.Slider(0, 200, value=10, step=1, label="Bottom")
                    with gr.Row():
                        pad_left = gr.Slider(0, 200, value=0, step=1, label="Left")
                        pad_right = gr.Slider(0, 200, value=0, step=1, label="Right")
                resize = gr.Radio(RESIZE_CHOICES, value=1, label="Resize: lower the resolution first "
                                  "(faster; 720p or 480p often gives the best mouth)")
                with gr.Accordion("Advanced", open=False):
                    choices = checkpoint_choices()
                    present = available_checkpoints()
                    checkpoint = gr.Dropdown(choices, value=choices[0], label="Checkpoint",
                                             info=f"In weights/: {', '.join(present) or 'none'}; others are "
                                                  "downloaded on first use")
                    smooth = gr.Checkbox(value=True, label="Smooth the face box over 5 frames")
                    blend = gr.Radio([("Box (as the original)", "box"), ("Feathered edges", "feather")],
                                     value="box", label="Blend")
                    device = gr.Radio(["auto", "cuda", "cpu", "mps"], value="auto", label="Device")
                    detector = gr.Radio(DETECTOR_CHOICES, value="auto", label="Face detector")
                    allow_silence = gr.Checkbox(value=False, label="Allow silent audio",
                                                info="Sync audio with no speech (the mouth stays closed)")
                    gr.Markdown("Fixed face box instead of detection (pixels; -1 = detect)")
                    with gr.Row():
                        box_top = gr.Number(-1, label="Top", precision=0)
                        box_bottom = gr.Number(-1, label="Bottom", precision=0)
                        box_left = gr.Number(-1, label="Left", precision=0)
                        box_right = gr.Number(-1, label="Right", precision=0)
                run = gr.Button("Sync lips", variant="primary")
            with gr.Column(scale=1):
                box_preview = gr.Image(label="Face box preview (first frame)", interactive=False, height=300)
                box_note = gr.Markdown()
                with gr.Row():
                    original = gr.Video(label="Original", interactive=False)
                    result = gr.Video(label="Lip-synced", interactive=False)
                download = gr.File(label="Download the result")
                stats = gr.Markdown()

        if EXAMPLES.is_dir():
            gr.Examples(examples=[[None, str(EXAMPLES / "astronaut.jpg"), str(EXAMPLES / "speech.wav")],
                                  [str(EXAMPLES / "astronaut.mp4"), None, str(EXAMPLES / "speech.wav")]],
                        inputs=[face_video, face_photo, audio], label="Examples (public-domain NASA portrait)")

        cache = gr.State({})
        preview_inputs = [face_video, face_photo, pad_top, pad_bottom, pad_left, pad_right, resize, detector,
                          device, box_top, box_bottom, box_left, box_right, cache]
        for control in (face_video, face_photo, resize, detector, device):
            control.change(preview, preview_inputs, [box_preview, box_note, cache], api_name=False)
        for control in (pad_top, pad_bottom, pad_left, pad_right, box_top, box_bottom, box_left, box_right):
            control.change(preview, preview_inputs, [box_preview, box_note, cache], api_name=False,
                           trigger_mode="always_last", show_progress="hidden")
        # one face at a time: a new upload in one tab clears the other
        face_video.upload(lambda: None, None, face_photo, api_name=False)
        face_photo.upload(lambda: None, None, face_video, api_name=False)
        # an example fills one of the two tabs: bring that one to the front, so the face in use is the face shown
        face_video.change(lambda v: gr.Tabs(selected="video") if v else gr.Tabs(), face_video, face_tabs,
                          api_name=False, show_progress="hidden")
        face_photo.change(lambda p: gr.Tabs(selected="photo") if p else gr.Tabs(), face_photo, face_tabs,
                          api_name=False, show_progress="hidden")

        run.click(lipsync, [face_video, face_photo, audio, pad_top, pad_bottom, pad_left, pad_right, resize,
                            checkpoint, smooth, blend, device, detector, box_top, box_bottom, box_left, box_right,
                            allow_silence],
                  [original, result, download, stats], api_name="lipsync")
    return demo


def fetch_weights() -> None:
    """Download missing weights before serving, so the first visitor does not wait (on by default on Spaces)."""
    from lipsync.weights import find_s3fd, resolve_checkpoint

    try:
        log.info("Wav2Lip checkpoint: %s", resolve_checkpoint(os.environ.get(CHECKPOINT_ENV) or DEFAULT_CHECKPOINT))
        log.info("S3FD face detector: %s", find_s3fd(download=True) or "not available; the Haar detector will be used")
    except LipSyncError as err:  # the page still starts; each job then shows this message
        log.error("%s", err)


def main() -> None:
    parser = argparse.ArgumentParser(description="Start the lipsync web app.")
    parser.add_argument("--host", default=os.environ.get("LIPSYNC_HOST", os.environ.get("GRADIO_SERVER_NAME",
                                                                                         "127.0.0.1")),
                        help="address to listen on (0.0.0.0 for every interface) [$LIPSYNC_HOST]")
    parser.add_argument("--port", type=int, default=int(os.environ.get("LIPSYNC_PORT",
                                                                      os.environ.get("GRADIO_SERVER_PORT", "7860"))),
                        help="port [$LIPSYNC_PORT]")
    parser.add_argument("--share", action="store_true", default=os.environ.get("LIPSYNC_SHARE") == "1",
                        help="also serve on a public gradio.live link [$LIPSYNC_SHARE=1]")
    parser.add_argument("--fetch-weights", action=argparse.BooleanOptionalAction,
                        default=bool(os.environ.get("SPACE_ID")),
                        help="download missing weights before serving (default: on Hugging Face Spaces only)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    if args.fetch_weights:
        fetch_weights()
    demo = build_app()
    start_cleaner()
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_UPLOAD,
                allowed_paths=[str(EXAMPLES)])


if __name__ == "__main__":
    main()
