"""lipsync web app: upload a face video or photo and an audio track, tune the face box, get the synced video.

This file is the UI and nothing else: components, events, and the translation of their
values into `lipsync.Options`, by name. The work is done by the `lipsync` package,
through its public API only.

    python app.py [--host 0.0.0.0] [--port 7860] [--share]
"""

from __future__ import annotations

import lipsync  # noqa: F401  (first: sets the threading environment before torch loads)

import os
import tempfile
from pathlib import Path

import app_files

# Results go into the app's own folder under this root (app_files); Gradio's temp files too, so they can be swept:
# it reads GRADIO_TEMP_DIR when imported, and `spaces` imports it.
OUTPUT_ROOT = Path(os.environ.get("LIPSYNC_OUTPUT_DIR") or tempfile.gettempdir())
GRADIO_TEMP = app_files.claim_gradio_temp(OUTPUT_ROOT)

try:  # ZeroGPU on Hugging Face Spaces: imported before torch, the GPU is attached only inside decorated calls
    import spaces
except ImportError:  # anywhere else there is no GPU decorator
    spaces = None

import argparse
import contextlib
import dataclasses
import inspect
import logging
import re
import shutil
import threading
import time
from typing import Any, Callable, Iterator

import gradio as gr

import app_live
import app_queue
import app_stream

from lipsync import (CHECKPOINTS, DEFAULT_CHECKPOINT, DEVICES, EngineOptions, LipSyncError, Options,
                     available_checkpoints, default_enhance, display_copy, draw_boxes, enhance_seconds, env_number,
                     face_preview, face_scan, face_timeline, fetch_weights, gpu_seconds, prune_detection_cache,
                     server_limits, shared_engine)

log = logging.getLogger("lipsync.app")
ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "examples"

# Server settings, each from the environment with a default; the command line can override the network ones.
CONCURRENCY = int(env_number("LIPSYNC_CONCURRENCY", 1))  # jobs run at once (protects the GPU)
QUEUE_SIZE = int(env_number("LIPSYNC_QUEUE_SIZE", 16))  # jobs waiting before new ones are turned away
PER_VISITOR = int(env_number("LIPSYNC_QUEUE_PER_VISITOR", 4))  # of them from one visitor (a page, a client session)
# Each kind of work waits in its own lane (app_queue): previews and face checks never take a job's place.
JOBS = app_queue.Lane("lipsync", "jobs", CONCURRENCY, QUEUE_SIZE, PER_VISITOR, **app_queue.address_limits())
PREVIEWS = app_queue.Lane("preview", "previews", 2, 32, 4,  # a visitor's page asks for one at a time
                          **app_queue.address_limits())
SCANS = app_queue.Lane("scan", "face checks", 1, 8, 1, **app_queue.address_limits())
MAX_UPLOAD = os.environ.get("LIPSYNC_MAX_UPLOAD", "500mb")
MAX_UPLOAD_BYTES = app_files.parse_size(MAX_UPLOAD)  # uploads (Gradio checks them) and files given by URL (we do)
KEEP_MINUTES = env_number("LIPSYNC_KEEP_MINUTES", 60.0)  # results kept on disk this long
CLEAN_EVERY_S = 600  # how often the app's old files are swept
# Limits of a public server that differ from the CLI's (audio length, job time, work): declared with the settings.
APP_LIMITS = server_limits()

# ZeroGPU marks itself as the `spaces` package reads it; there is no GPU outside decorated calls, so the preview
# detects on the CPU, and each job asks for the GPU time its clip needs (a fixed request would lock visitors out).
ZERO_GPU = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")
# Examples are run once, on the first click, and kept (on Spaces by default: never at start-up, which on ZeroGPU
# would spend GPU quota before anyone asked).
CACHE_EXAMPLES = os.environ.get("LIPSYNC_CACHE_EXAMPLES", "1" if os.environ.get("SPACE_ID") else "0") == "1"
GPU_QUOTA_SECONDS = env_number("LIPSYNC_GPU_MAX_SECONDS", 110.0)  # under the 2-minute quota of anonymous visitors
CUSTOM = "custom ($LIPSYNC_CHECKPOINT)"
RESIZE_CHOICES = [("Full resolution", 1), ("Half (1/2)", 2), ("Quarter (1/4)", 4)]
DETECTOR_CHOICES = [("Automatic", "auto"), ("S3FD (as Wav2Lip was trained)", "s3fd"),
                    ("BlazeFace (fast on a CPU, follows one face)", "blazeface"), ("Haar (offline)", "haar")]
BLEND_CHOICES = [("Mouth only (soft, colour-matched)", "mouth"), ("Box (as the original)", "box"),
                 ("Feathered edges", "feather")]
ENHANCE_CHOICES = [("Off (the generated mouth)", "none"), ("GFPGAN v1.4 (sharper lips and teeth)", "gfpgan")]
ENHANCE_INFO = ("Restores the lips and teeth on the aligned face, let in through the mouth mask only. GFPGAN's code is "
                "Apache-2.0; see the README for its weights' terms (the Wav2Lip weights are non-commercial anyway).")
DEFAULTS = Options()


def default(name: str) -> Any:
    """The declared default of a setting; `pads_top` and the like are one side of a rectangle, `face_point_x`
    one axis of a point."""
    field, _, side = name.rpartition("_")
    if side in ("top", "bottom", "left", "right") and hasattr(DEFAULTS, field):
        return getattr(DEFAULTS, field)[("top", "bottom", "left", "right").index(side)]
    if side in ("x", "y") and hasattr(DEFAULTS, field):
        return getattr(DEFAULTS, field)[("x", "y").index(side)]
    return getattr(DEFAULTS, name)


class Controls:
    """The page's inputs in the order the click's API takes them: one `add` per control, by setting name."""

    def __init__(self) -> None:
        self.components: dict[str, gr.components.Component] = {}

    def add(self, name: str, component: gr.components.Component) -> gr.components.Component:
        self.components[name] = component
        return component

    @property
    def names(self) -> list[str]:
        return list(self.components)

    @property
    def inputs(self) -> list[gr.components.Component]:
        return list(self.components.values())


INPUTS = ("face", "audio")  # the job's files; every other control is a setting
ENGINE_SETTINGS = ("checkpoint_path", "device")


def checkpoint_choices() -> list[str]:
    names = [DEFAULT_CHECKPOINT] + [n for n in CHECKPOINTS if n != DEFAULT_CHECKPOINT]
    return ([CUSTOM] if os.environ.get("LIPSYNC_CHECKPOINT") else []) + names


def build_options(settings: dict[str, Any]) -> Options:
    """Options from the controls' values (by name) and the server's limits."""
    job = {k: v for k, v in settings.items() if k not in INPUTS and k not in ENGINE_SETTINGS}
    options = Options.from_flat({**job, **APP_LIMITS})
    if options.point is not None and options.detector == "auto":  # a clicked face: only BlazeFace can follow one
        options = options.with_changes(detector="blazeface")
    return options


_active_jobs: set[Path] = set()  # folders of running jobs: the cleaner never touches them
_active_lock = threading.Lock()


def clean_old_outputs(kept: set[str] | None = None) -> None:
    """Delete the app's own files older than KEEP_MINUTES (app_files.sweep: finished jobs' folders, and with `kept`,
    what Gradio keeps for as long as it runs, Gradio's temp files) and old cached face boxes; run at start-up, on a
    schedule and at every job's start. Nothing the app did not make is touched."""
    prune_detection_cache(KEEP_MINUTES * 60)  # visitors' face boxes go with their results
    with _active_lock:
        active = set(_active_jobs)
    app_files.sweep(OUTPUT_ROOT, KEEP_MINUTES * 60, active, GRADIO_TEMP if kept is not None else None, kept or ())


def start_cleaner(demo: gr.Blocks, interval_s: float = CLEAN_EVERY_S,
                  stop: threading.Event | None = None) -> threading.Thread:
    """Sweep now (what a previous run left) and every `interval_s` seconds until `stop`, so an idle server keeps
    nothing long."""
    stop = stop or threading.Event()

    def kept() -> set[str]:  # files Gradio keeps for as long as it runs (the examples)
        return {str(p) for block in demo.blocks.values() for p in getattr(block, "keep_in_cache", ())}

    def loop() -> None:
        while True:
            try:
                clean_old_outputs(kept())
            except OSError:
                log.exception("cleaning old results failed")
            if stop.wait(interval_s):
                return

    thread = threading.Thread(target=loop, name="lipsync-cleaner", daemon=True)
    thread.start()
    return thread


def _hide_server_paths(message: str) -> str:
    """A message with quoted absolute paths cut to their file names: visitors need not see the server's folders."""
    return re.sub(r"'/[^']*/([^'/]+)'", r"'\1'", message)


def user_error(err: Exception) -> gr.Error:
    if isinstance(err, LipSyncError):
        return gr.Error(_hide_server_paths(str(err)))
    log.exception("unexpected failure")
    return gr.Error(f"Something went wrong on our side ({type(err).__name__}). The job was stopped; "
                    "please try again, and report it if it happens again.")


def engine_for(settings: dict[str, Any]) -> Any:
    """The shared engine for the page's checkpoint and device."""
    checkpoint = settings.get("checkpoint_path", DEFAULT_CHECKPOINT)
    return shared_engine(os.environ.get("LIPSYNC_CHECKPOINT") if checkpoint == CUSTOM else checkpoint,
                         settings.get("device", "auto"))


def claim_folder(folder: Path) -> None:
    with _active_lock:
        _active_jobs.add(folder)


def release_folder(folder: Path) -> None:
    with _active_lock:
        _active_jobs.discard(folder)


@contextlib.contextmanager
def job_folder(settings: dict[str, Any]) -> Iterator[tuple[str, Path]]:
    """The face file and a fresh folder for one job, kept from the cleaner while the job runs and removed if it
    fails (the failure then reaches the visitor as one sentence)."""
    face = settings.get("face")
    if not face:
        raise gr.Error("Upload a face video or a photo first.")
    if not settings.get("audio"):
        raise gr.Error("Upload or record the audio first.")
    clean_old_outputs()
    with _active_lock:
        job_dir = app_files.new_job_dir(OUTPUT_ROOT)
        _active_jobs.add(job_dir)
    try:
        yield face, job_dir
    except BaseException as err:  # failed, or stopped: a cancelled page's GeneratorExit, an asyncio cancel
        shutil.rmtree(job_dir, ignore_errors=True)
        if isinstance(err, Exception):
            raise user_error(err) from None
        raise
    finally:
        release_folder(job_dir)


def run_job(settings: dict[str, Any], progress: Callable | None = None) -> tuple[str, str, str, str, Any]:
    """The click on Sync lips (and the /lipsync endpoint, the MCP tool: their description is `api_description`)."""
    progress = progress or (lambda *args, **kwargs: None)
    with job_folder(settings) as (face, job_dir):
        options = build_options(settings)
        progress(0, desc="Loading the model")
        engine = engine_for(settings)

        def report(stage: str, done: int, total: int) -> None:
            progress((done, max(total, 1)), desc=stage)  # a (done, total) pair: MCP clients see the steps too

        outfile = job_dir / f"lipsync_{Path(face).stem[:40]}.mp4"
        result = engine.sync(face, settings["audio"], str(outfile), options, progress=report)
        progress(1.0, desc="Preparing the original for display")
        original = display_copy(face, str(job_dir / "original.mp4"), settings["audio"], seconds=result.duration)
    return finish(result, original, outfile)


def run_job_streamed(settings: dict[str, Any], progress: Callable | None = None) -> Iterator[tuple]:
    """`run_job` for the page: the lip-synced video plays while it is made (app_stream), then the original, the MP4
    (the very file `run_job` writes), the stats and the face timeline arrive."""
    progress = progress or (lambda *args, **kwargs: None)
    with job_folder(settings) as (face, job_dir):
        options = build_options(settings)
        progress(0, desc="Loading the model")
        engine = engine_for(settings)
        outfile, segments = job_dir / f"lipsync_{Path(face).stem[:40]}.mp4", job_dir / "segments"
        segments.mkdir()
        # closed before the folder goes, whatever ends this generator: the job has stopped writing into it then
        with contextlib.closing(engine.sync_stream(face, settings["audio"], str(outfile), str(segments),
                                                   options)) as events:
            for event in app_stream.segments_then_result(events, progress):
                if isinstance(event, str):
                    yield gr.skip(), event, gr.skip(), gr.skip(), gr.skip()
                else:
                    result = event
        progress(1.0, desc="Preparing the original for display")
        original = display_copy(face, str(job_dir / "original.mp4"), settings["audio"], seconds=result.duration)
    outputs = finish(result, original, outfile)
    yield outputs[0], gr.skip(), *outputs[2:]  # the streamed player keeps what it played


def finish(result: Any, original: str, outfile: Path) -> tuple[str, str, str, str, Any]:
    """The job's five outputs, with a warning for frames left unchanged or a mouth not enhanced."""
    if result.frames_without_face:
        gr.Warning(f"No face was found in {result.frames_without_face} frames; they were left unchanged.")
    if result.enhance_problem:  # the video is complete, without the enhancement
        gr.Warning(f"The mouth was not enhanced: {_hide_server_paths(result.enhance_problem)}")
    return original, str(outfile), str(outfile), result.stats_markdown(), face_timeline(result.face_frames)


def preview(settings: dict[str, Any], state: dict) -> tuple[Any, str, dict]:
    """Draw the detected and padded boxes on the first frame; detection reruns only for a new face or setting."""
    face = settings.get("face")
    if not face:
        return None, "", {}
    try:
        options = build_options(settings)
        device = "cpu" if ZERO_GPU else settings.get("device", "auto")
        key = (face, options.resize_factor, options.rotate, options.crop, options.detector, device)
        if state.get("key") != key:
            state = {"key": key, "preview": face_preview(face, options, device)}
        image = draw_boxes(state["preview"], options)
    except LipSyncError as err:  # said beside the preview, not as an error badge over it
        return None, f"**Cannot preview this face:** {_hide_server_paths(str(err))}", {}
    except Exception as err:
        raise user_error(err) from None
    found = state["preview"]
    if options.fixed_box is not None:
        note = "Green: the fixed face box."
    elif options.point is not None and not found.can_pick:
        note = (f"The {found.detector} detector cannot follow a clicked face: choose BlazeFace or Automatic under "
                "Advanced, or upload a new clip to go back to the most prominent face.")
    elif options.point is not None and found.picked(options.point) is None:
        note = ("The point you clicked is on no face found by "
                f"{found.detector}: click on a face (grey boxes), or pick another detector.")
    elif found.picked(options.point) is None:
        note = "No face found in the first frame. Try another clip, or set a fixed face box under Advanced."
    else:
        note = f"Blue: face found by {found.detector}. Green: with padding, what the model sees."
        if found.can_pick and len(found.faces) > 1:
            note += " Grey: other faces; click one to sync it instead."
    return image, note, state


def enhance_cost(settings: dict[str, Any]) -> str:
    """Beside the enhance choice on a CPU: what enhancing would add to this clip (nothing on a GPU, where it is
    on by default and costs little)."""
    device = "cuda" if ZERO_GPU else settings.get("device", "auto")
    try:
        if default_enhance(device) != "none":
            return ""
        face, audio = settings.get("face"), settings.get("audio")
        if not face or not audio:
            return "On this CPU enhancing takes seconds per frame; choose a face and audio to see the time."
        extra = enhance_seconds(face, audio, build_options(settings), device)
    except (LipSyncError, OSError):
        return ""
    return f"On this CPU enhancing would add about **{extra / 60:.1f} min** to this clip."


def scan(settings: dict[str, Any]) -> Any:
    """The face timeline before a job: a face found or not at up to 120 moments through the clip."""
    face = settings.get("face")
    if not face:
        raise gr.Error("Upload a face video or a photo first.")
    try:
        device = "cpu" if ZERO_GPU else settings.get("device", "auto")
        found = face_scan(face, build_options(settings), device)
    except Exception as err:
        raise user_error(err) from None
    if not any(found):
        gr.Warning("No face was found anywhere in the clip: use a fixed face box under Advanced, or another clip.")
    return face_timeline(found)


def pick_face_point(state: dict, evt: gr.SelectData) -> tuple[int, int]:
    """A click on the preview: the point in frame pixels (the preview is a shrunk copy), for face_point."""
    found = state.get("preview") if state else None
    if found is None or evt is None or evt.index is None:
        return -1, -1
    return found.to_frame(*evt.index[:2])


def job_seconds(settings: dict[str, Any]) -> float:
    """GPU seconds to ask ZeroGPU for this job: what the clip needs (lipsync.gpu_seconds), never more than allowed."""
    try:
        return min(GPU_QUOTA_SECONDS, gpu_seconds(settings["face"], settings["audio"], build_options(settings)))
    except (LipSyncError, KeyError, TypeError):
        return 30.0  # the job fails at once with its own message: ask for little


def job_problem(settings: dict[str, Any]) -> tuple[str, str] | None:
    """What stops this job before it starts: (the input at fault, one sentence), or None."""
    face, audio = settings.get("face"), settings.get("audio")
    if not face:
        return "face", "Upload a face video or a photo first."
    if not audio:
        return "audio", "Upload or record the audio first."
    if ZERO_GPU:
        try:
            needed = gpu_seconds(face, audio, build_options(settings))
        except LipSyncError:  # a bad file: the job itself says what is wrong, without a GPU
            return None
        if needed > GPU_QUOTA_SECONDS:
            return "audio", (f"This clip needs about {needed:.0f} s of GPU time, more than the "
                             f"{GPU_QUOTA_SECONDS:.0f} s a job may ask for here. Use shorter audio (under a minute), "
                             "or the Resize option.")
    return None


def validate_job(settings: dict[str, Any]) -> list[dict]:
    """Gradio's validator, one verdict per input: runs before the job is queued (and before a GPU is asked for)."""
    problem = job_problem(settings)
    return [gr.validate(problem is None or name != problem[0], problem[1] if problem else "") for name in settings]


FILE_HELP = {"face": "a video or a photo with the face to lip-sync",
             "audio": "the speech (any audio file, or a video whose sound to use)",
             "checkpoint_path": f"the Wav2Lip weights: one of {', '.join(CHECKPOINTS)}, or '{CUSTOM}' for the file "
                                "the server names"}


def api_description(names: list[str]) -> str:
    """The /lipsync endpoint's and the MCP tool's description: each parameter with its setting's own help (from
    lipsync.Options), so it cannot drift from the settings; how files are passed and how big they may be."""
    helps = {f.name: f.metadata.get("help", "") for cls in (Options, EngineOptions) for f in dataclasses.fields(cls)}
    lines = []
    for name in names:
        field, _, part = name.rpartition("_")
        if name in FILE_HELP:
            text = FILE_HELP[name]
        elif name not in helps and field in helps:  # one side of a rectangle, one axis of a point
            text = f"{helps[field]} (this parameter: the {part} {'coordinate' if part in ('x', 'y') else 'side'})"
        else:
            text = helps[name]
        lines.append(f"    {name}: {text}.")
    limit = app_files.describe_size(MAX_UPLOAD_BYTES)
    return "\n".join([
        "Make the lips of the face in a video or photo follow an audio track (Wav2Lip).",
        "",
        f"Files (face, audio) are given as https:// URLs, up to {limit} each (LIPSYNC_MAX_UPLOAD), or as data: "
        "URLs (base64); an MCP request may be at most 4 MiB in all, so data: URLs only for files of about 3 MB "
        "together (a larger one is answered with HTTP 413: use a URL).",
        "",
        "Args:", *lines,
        "",
        "Returns:",
        "    the original (for display), the lip-synced MP4, the same file to download, the job's stats, and the",
        "    face timeline (an image: one column per frame, green where the face was synced).",
    ])


def named_handler(names: list[str], handler: Callable, defaults: dict[str, Any], extra: dict[str, Any],
                  name: str | None = None, doc: str | None = None) -> Callable:
    """A Gradio handler taking the controls' values positionally, named after the controls for the API.

    Its signature lists the controls by setting name (so API callers can pass them by
    name) followed by `extra` parameters (e.g. progress); it calls `handler(values_by_name, *extras)`.
    """
    if inspect.isgeneratorfunction(handler):  # Gradio (and ZeroGPU) stream what a generator function yields
        def call(*values):
            yield from handler(dict(zip(names, values[: len(names)])), *values[len(names):])
    else:
        def call(*values):
            return handler(dict(zip(names, values[: len(names)])), *values[len(names):])

    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults.get(n)) for n in names]
    params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=v) for n, v in extra.items()]
    call.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    call.__annotations__ = {"request": gr.Request} if "request" in extra else {}  # Gradio passes it by annotation
    call.__name__ = name or handler.__name__  # the MCP tool's name
    call.__doc__ = doc or handler.__doc__  # the API's and the MCP tool's description
    return call


LIVE = app_live.LiveServer(app_live.LiveHost(
    engine=lambda: engine_for({"checkpoint_path": checkpoint_choices()[0]}), options=build_options,
    user_error=user_error, output_root=OUTPUT_ROOT, claim=claim_folder, release=release_folder, zero_gpu=ZERO_GPU,
    ticket_seconds=KEEP_MINUTES * 60))  # the Live page (app_live): the server's checkpoint on the best device


def build_app() -> gr.Blocks:
    controls = Controls()
    add = controls.add
    # Gradio deletes its temp files (uploads, copies of results) with the results; app_files sweeps the rest.
    with gr.Blocks(title="lipsync", delete_cache=(CLEAN_EVERY_S, max(1, int(KEEP_MINUTES * 60)))) as demo:
        gr.Markdown("# lipsync\nMake the lips in a video or photo follow any audio, with Wav2Lip. "
                    "Upload a face and an audio track, check the face box, click **Sync lips**.")
        with gr.Row():
            with gr.Column(scale=1):
                face = add("face", gr.File(label="Face: a video or a photo", file_types=["video", "image"],
                                           type="filepath", height=120))
                add("audio", gr.Audio(label="Audio (upload any format, or record)", sources=["upload", "microphone"],
                                      type="filepath"))
                with gr.Group():
                    gr.Markdown("**Face box padding** (pixels added around the detected face; include the chin)")
                    with gr.Row():
                        add("pads_top", gr.Slider(0, 200, value=default("pads_top"), step=1, label="Top"))
                        add("pads_bottom", gr.Slider(0, 200, value=default("pads_bottom"), step=1, label="Bottom"))
                    with gr.Row():
                        add("pads_left", gr.Slider(0, 200, value=default("pads_left"), step=1, label="Left"))
                        add("pads_right", gr.Slider(0, 200, value=default("pads_right"), step=1, label="Right"))
                add("resize_factor", gr.Radio(RESIZE_CHOICES, value=default("resize_factor"),
                                              label="Resize: lower the resolution first (faster; 720p or 480p "
                                                    "often gives the best mouth)"))
                with gr.Accordion("Advanced", open=False):
                    choices = checkpoint_choices()
                    add("checkpoint_path", gr.Dropdown(choices, value=choices[0], label="Checkpoint",
                                                       info=f"In weights/: {', '.join(available_checkpoints()) or 'none'}; "
                                                            "others are downloaded on first use"))
                    add("nosmooth", gr.Checkbox(value=default("nosmooth"), label="Follow fast motion",
                                                info="Do not average the face box over 5 frames"))
                    add("blend", gr.Radio(BLEND_CHOICES, value="mouth", label="Blend"))  # the CLI keeps 'box'
                    with gr.Row(equal_height=True):  # on where a GPU runs it; on a CPU off, its cost shown beside
                        add("enhance", gr.Radio(ENHANCE_CHOICES, value="gfpgan" if ZERO_GPU else default_enhance(),
                                                label="Enhance the mouth", info=ENHANCE_INFO, scale=3))
                        add("enhance_strength", gr.Slider(0, 1, value=default("enhance_strength"), step=0.05,
                                                          label="Strength", scale=1))
                    enhance_note = gr.Markdown()
                    add("device", gr.Radio(list(DEVICES), value="auto", label="Device"))
                    add("detector", gr.Radio(DETECTOR_CHOICES, value=default("detector"), label="Face detector"))
                    add("allow_silence", gr.Checkbox(value=default("allow_silence"), label="Allow silent audio",
                                                     info="Sync audio with no speech (the mouth stays closed)"))
                    add("keep_silent_mouth", gr.Checkbox(value=True, label="Keep the mouth still in pauses",
                                                         info="Where nobody speaks for 0.3 s or more, keep the "
                                                              "face's own mouth (the CLI's default is off)"))
                    gr.Markdown("Fixed face box instead of detection (pixels; all four, or -1 to detect)")
                    with gr.Row():
                        for side in ("top", "bottom", "left", "right"):
                            add(f"box_{side}", gr.Number(default(f"box_{side}"), label=side.title(), precision=0))
                for axis in ("x", "y"):  # set by a click on the preview (the face to sync), not shown
                    add(f"face_point_{axis}", gr.Number(default(f"face_point_{axis}"), precision=0, visible=False))
                run = gr.Button("Sync lips", variant="primary")
            with gr.Column(scale=1):
                box_preview = gr.Image(label="Face box preview (first frame; click a face to sync that one)",
                                       interactive=False, height=300)
                box_note = gr.Markdown()
                with gr.Row(equal_height=True):
                    scan_button = gr.Button("Check faces through the clip", size="sm", scale=0)
                    scan_strip = gr.Image(label="Faces through the clip, before syncing (green: face found, grey: "
                                                "none; those frames would be left unchanged)", interactive=False,
                                          height=60, show_label=True, scale=3)
                with gr.Row():
                    original = gr.Video(label="Original", interactive=False)
                    result, streamed = app_stream.players()
                download = gr.File(label="Download the result")
                stats = gr.Markdown()
                timeline = gr.Image(label="Face timeline (green: face synced, grey: frame left unchanged)",
                                    interactive=False, height=60, show_label=True)

        for name in INPUTS:  # a file given by URL (API, MCP) is downloaded within the upload limit, not whole
            app_files.cap_url_downloads(controls.components[name], MAX_UPLOAD_BYTES)
        names = controls.names
        defaults = {name: getattr(component, "value", None) for name, component in controls.components.items()}
        state = gr.State({}, time_to_live=KEEP_MINUTES * 60)  # a visitor's preview is forgotten with the results
        preview_handler = named_handler(names, preview, defaults, {"state": {}})
        redraw = dict(fn=preview_handler, inputs=[*controls.inputs, state], outputs=[box_preview, box_note, state],
                      api_visibility="private", **PREVIEWS.events(), validator=named_handler(
                          names, PREVIEWS.validator(demo), defaults, {"state": {}, "request": None}))
        for name in ("face", "resize_factor", "detector", "device"):
            controls.components[name].change(**redraw)
        for name in (n for n in names if n.startswith(("pads_", "box_", "face_point_"))):
            controls.components[name].change(**redraw, trigger_mode="always_last", show_progress="hidden")
        point = [controls.components["face_point_x"], controls.components["face_point_y"]]
        # Two cheap answers (no file is read): outside the queue, so they never take a place in it.
        box_preview.select(pick_face_point, inputs=[state], outputs=point, api_visibility="private", queue=False)
        face.change(lambda: (-1, -1), outputs=point, api_visibility="private",  # a new clip: the most prominent face
                    queue=False)

        scan_button.click(named_handler(names, scan, defaults, {}), controls.inputs, scan_strip,
                          api_visibility="private", **SCANS.events(),
                          validator=named_handler(names, SCANS.validator(demo), defaults, {"request": None}))
        for name in ("face", "audio", "device", "enhance"):  # reads headers only: a preview's lane
            controls.components[name].change(named_handler(names, enhance_cost, defaults, {}), controls.inputs,
                                             enhance_note, api_visibility="private", show_progress="hidden",
                                             **PREVIEWS.events(), validator=named_handler(
                                                 names, PREVIEWS.validator(demo), defaults, {"request": None}))
        job = named_handler(names, run_job, defaults, {"progress": gr.Progress()}, name="lipsync",
                            doc=api_description(names))
        page_job = named_handler(names, run_job_streamed, defaults, {"progress": gr.Progress()})
        if spaces is not None:  # on ZeroGPU: ask for what this clip needs (a no-op decorator elsewhere)
            duration = named_handler(names, lambda settings, progress=None: job_seconds(settings), defaults,
                                     {"progress": None})
            job, page_job = spaces.GPU(job, duration=duration), spaces.GPU(page_job, duration=duration)
        lane = dict(**JOBS.events(), validator=named_handler(names, JOBS.validator(demo, validate_job), defaults,
                                                                {"request": None}))
        outputs = app_stream.wire(run, job, page_job, controls.inputs, [original, result, download, stats, timeline],
                                  streamed, lane)
        if EXAMPLES.is_dir():
            gr.Examples(examples=[[str(EXAMPLES / "astronaut.jpg"), str(EXAMPLES / "speech.wav")],
                                  [str(EXAMPLES / "astronaut.mp4"), str(EXAMPLES / "speech.wav")]],
                        inputs=[face, controls.components["audio"]], label="Examples (public-domain NASA portrait)",
                        fn=page_job if app_stream.STREAM_RESULT else job, outputs=outputs,
                        cache_examples=CACHE_EXAMPLES, cache_mode="lazy")
    LIVE.build_page(demo, PREVIEWS)
    return demo


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
    parser.add_argument("--mcp", action=argparse.BooleanOptionalAction,
                        default=os.environ.get("LIPSYNC_MCP", os.environ.get("GRADIO_MCP_SERVER", "")).lower()
                        in ("1", "true"),
                        help="also serve the lip sync as an MCP tool at /gradio_api/mcp/ (needs gradio[mcp]) "
                             "[$LIPSYNC_MCP=1]")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up requests are not news
    if args.fetch_weights:
        try:
            fetched = fetch_weights(os.environ.get("LIPSYNC_CHECKPOINT") or DEFAULT_CHECKPOINT)
            log.info("Wav2Lip checkpoint: %s; S3FD: %s; GFPGAN: %s", fetched.checkpoint,
                     fetched.s3fd or "not available, the offline detector will be used",
                     fetched.restorer or "not available, jobs run without enhancing the mouth")
        except LipSyncError as err:  # the page still starts; each job then shows this message
            log.error("%s", err)
    if ZERO_GPU:  # load the model to CUDA at start-up: ZeroGPU emulates CUDA outside jobs and moves it in for each
        try:
            shared_engine(os.environ.get("LIPSYNC_CHECKPOINT") or DEFAULT_CHECKPOINT, "cuda")
        except LipSyncError as err:
            log.error("%s", err)
    demo = build_app()
    start_cleaner(demo)
    # Every event through the queue (api_open=False: a direct POST would skip it, and its limits, off Spaces).
    lanes = [JOBS, PREVIEWS, SCANS, app_live.LIVE, app_live.LIVE_AUDIO]
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=app_queue.queue_size(lanes),
               api_open=False)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_UPLOAD,
                allowed_paths=[str(EXAMPLES), str(app_files.app_dir(OUTPUT_ROOT))], mcp_server=args.mcp,
                prevent_thread_lock=True)
    LIVE.mount(demo.app)  # the live page's two routes, on Gradio's own server
    demo.block_thread()


if __name__ == "__main__":
    main()
