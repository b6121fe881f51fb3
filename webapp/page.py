"""The main page's layout and events: the controls (named after the settings they set), the preview, the players,
and which handler each event runs in which lane. The handlers themselves are in webapp.jobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from lipsync import DEVICES, SYNC_LEGEND, available_checkpoints, default_enhance, default_score, flat_settings

from .api import by_name, description
from .files import CLEAN_EVERY_S, cap_url_downloads, describe_size
from .jobs import CUSTOM, INPUTS, pick_face_point
from .stream import connect_sync_button, players

if TYPE_CHECKING:
    from .server import WebApp

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RESIZE_CHOICES = [("Full resolution", 1), ("Half (1/2)", 2), ("Quarter (1/4)", 4)]
DETECTOR_CHOICES = [("Automatic", "auto"), ("S3FD (as Wav2Lip was trained)", "s3fd"),
                    ("BlazeFace (fast on a CPU, follows one face)", "blazeface"), ("Haar (offline)", "haar")]
BLEND_CHOICES = [("Mouth only (soft, colour-matched)", "mouth"), ("Box (as the original)", "box"),
                 ("Feathered edges", "feather")]
ENHANCE_CHOICES = [("Off (the generated mouth)", "none"), ("GFPGAN v1.4 (sharper lips and teeth)", "gfpgan")]
SCORE_INFO = ("SyncNet's confidence (LSE-C), distance (LSE-D) and the sound's offset, as the Wav2Lip paper measures "
              "them, with a timeline of where the sync is weak (55 MB of weights, downloaded once).")
OFFSET_INFO = "Positive: the sound later than the picture; negative: earlier (40 ms is one frame at 25 fps)."
ENHANCE_INFO = ("Restores the lips and teeth on the aligned face, let in through the mouth mask only. GFPGAN's code is "
                "Apache-2.0; see the docs for its weights' terms (the Wav2Lip weights are non-commercial anyway).")


def default(name: str) -> Any:
    """The declared default of a setting, by the name its control has (`pads_top`, `face_point_x`, `fps`)."""
    return flat_settings()[name].default


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

    def defaults(self) -> dict[str, Any]:
        return {name: getattr(component, "value", None) for name, component in self.components.items()}


def build(web: WebApp) -> gr.Blocks:
    """The whole app: the main page, then the Live page (webapp.live)."""
    config = web.config
    controls = Controls()
    # Gradio deletes its temp files (uploads, copies of results) with the results; webapp.files sweeps the rest.
    with gr.Blocks(title="lipsync", delete_cache=(CLEAN_EVERY_S, max(1, int(config.keep_minutes * 60)))) as demo:
        gr.Markdown("# lipsync\nMake the lips in a video or photo follow any audio, with Wav2Lip. "
                    "Upload a face and an audio track, check the face box, click **Sync lips**.")
        with gr.Row():
            with gr.Column(scale=1):
                run, notes = _inputs(web, controls)
            with gr.Column(scale=1):
                view = View(config.stream_result)
        _connect(web, demo, controls, run, notes, view)
    web.live.build_page(demo)
    return demo


def _inputs(web: WebApp, controls: Controls) -> tuple[gr.Button, dict[str, gr.Markdown]]:
    """The left column: the files, the face box, the advanced settings, the button."""
    add = controls.add
    add("face", gr.File(label="Face: a video or a photo", file_types=["video", "image"], type="filepath", height=120))
    add("audio", gr.Audio(label="Audio (upload any format, or record)", sources=["upload", "microphone"],
                          type="filepath"))
    with gr.Group():
        gr.Markdown("**Face box padding** (pixels added around the detected face; include the chin)")
        for row in (("top", "bottom"), ("left", "right")):
            with gr.Row():
                for side in row:
                    add(f"pads_{side}", gr.Slider(0, 200, value=default(f"pads_{side}"), step=1, label=side.title()))
    add("resize_factor", gr.Radio(RESIZE_CHOICES, value=default("resize_factor"),
                                  label="Resize: lower the resolution first (faster; 720p or 480p often gives the "
                                        "best mouth)"))
    with gr.Accordion("Advanced", open=False):
        choices = web.jobs.checkpoint_choices()
        add("checkpoint_path", gr.Dropdown(choices, value=choices[0], label="Checkpoint",
                                           info=f"In weights/: {', '.join(available_checkpoints()) or 'none'}; "
                                                "others are downloaded on first use"))
        add("nosmooth", gr.Checkbox(value=default("nosmooth"), label="Follow fast motion",
                                    info="Do not average the face box over 5 frames"))
        add("blend", gr.Radio(BLEND_CHOICES, value="mouth", label="Blend"))  # the CLI keeps 'box'
        with gr.Row(equal_height=True):  # on where a GPU runs it; on a CPU off, its cost shown beside
            add("enhance", gr.Radio(ENHANCE_CHOICES, value="gfpgan" if web.config.zero_gpu else default_enhance(),
                                    label="Enhance the mouth", info=ENHANCE_INFO, scale=3))
            add("enhance_strength", gr.Slider(0, 1, value=default("enhance_strength"), step=0.05, label="Strength",
                                              scale=1))
        enhance_note = gr.Markdown()
        with gr.Row(equal_height=True):  # on where it costs little; else off, with the time it would add beside it
            add("score", gr.Checkbox(value=web.config.zero_gpu or default_score(), label="Score the sync (SyncNet)",
                                     info=SCORE_INFO, scale=3))
            score_note = gr.Markdown()
        with gr.Row(equal_height=True):
            add("audio_offset", gr.Number(0, label="Sound offset (ms)", info=OFFSET_INFO, scale=2))
            add("audio_offset_auto", gr.Checkbox(value=False, label="auto: measure the offset after the job and fix "
                                                                    "it (a remux of the sound)", scale=3))
        add("device", gr.Radio(list(DEVICES), value="auto", label="Device"))
        add("detector", gr.Radio(DETECTOR_CHOICES, value=default("detector"), label="Face detector"))
        add("allow_silence", gr.Checkbox(value=default("allow_silence"), label="Allow silent audio",
                                         info="Sync audio with no speech (the mouth stays closed)"))
        add("keep_silent_mouth", gr.Checkbox(value=True, label="Keep the mouth still in pauses",
                                             info="Where nobody speaks for 0.3 s or more, keep the face's own mouth "
                                                  "(the CLI's default is off)"))
        gr.Markdown("Fixed face box instead of detection (pixels; all four, or -1 to detect)")
        with gr.Row():
            for side in ("top", "bottom", "left", "right"):
                add(f"box_{side}", gr.Number(default(f"box_{side}"), label=side.title(), precision=0))
    for axis in ("x", "y"):  # set by a click on the preview (the face to sync), not shown
        add(f"face_point_{axis}", gr.Number(default(f"face_point_{axis}"), precision=0, visible=False))
    return gr.Button("Sync lips", variant="primary"), {"enhance": enhance_note, "score": score_note}


class View:
    """The right column's components."""

    def __init__(self, streaming: bool) -> None:
        self.box_preview = gr.Image(label="Face box preview (first frame; click a face to sync that one)",
                                    interactive=False, height=300)
        self.box_note = gr.Markdown()
        with gr.Row(equal_height=True):
            self.scan_button = gr.Button("Check faces through the clip", size="sm", scale=0)
            self.scan_strip = gr.Image(label="Faces through the clip, before syncing (green: face found, grey: "
                                             "none; those frames would be left unchanged)", interactive=False,
                                       height=60, show_label=True, scale=3)
        with gr.Row():
            self.original = gr.Video(label="Original", interactive=False)
            self.result, self.streamed = players(streaming)
        self.download = gr.File(label="Download the result")
        self.stats = gr.Markdown()
        self.timeline = gr.Image(label="Face timeline (green: face synced, grey: frame left unchanged)",
                                 interactive=False, height=60, show_label=True)
        self.sync_timeline = gr.Image(label=SYNC_LEGEND, interactive=False, height=60, show_label=True)
        with gr.Accordion("Sync score (JSON)", open=False):
            self.score = gr.JSON(label="Sync score", show_label=False)

    @property
    def job_outputs(self) -> list[Any]:
        return [self.original, self.result, self.download, self.stats, self.timeline, self.sync_timeline, self.score]


def _connect(web: WebApp, demo: gr.Blocks, controls: Controls, run: gr.Button, notes: dict[str, gr.Markdown],
             view: View) -> None:
    """Every event of the main page, each queued one in its lane with its validator."""
    config, jobs, lanes = web.config, web.jobs, web.lanes
    for name in INPUTS:  # a file given by URL (API, MCP) is downloaded within the upload limit, not whole
        cap_url_downloads(controls.components[name], config.max_upload_bytes)
    names, defaults = controls.names, controls.defaults()

    def validator(lane: Any, check: Any = None, **extra: Any) -> Any:
        return by_name(names, lane.validator(demo, check), defaults, {**extra, "request": None})

    state = gr.State({}, time_to_live=config.keep_minutes * 60)  # a visitor's preview goes with the results
    redraw = dict(fn=by_name(names, jobs.preview, defaults, {"state": {}}), inputs=[*controls.inputs, state],
                  outputs=[view.box_preview, view.box_note, state], api_visibility="private",
                  **lanes.previews.events(), validator=validator(lanes.previews, state={}))
    for name in ("face", "resize_factor", "detector", "device"):
        controls.components[name].change(**redraw)
    for name in (n for n in names if n.startswith(("pads_", "box_", "face_point_"))):
        controls.components[name].change(**redraw, trigger_mode="always_last", show_progress="hidden")
    point = [controls.components["face_point_x"], controls.components["face_point_y"]]
    # Two cheap answers (no file is read): outside the queue, so they never take a place in it.
    view.box_preview.select(pick_face_point, inputs=[state], outputs=point, api_visibility="private", queue=False)
    controls.components["face"].change(lambda: (-1, -1), outputs=point, api_visibility="private",  # a new clip:
                                       queue=False)  # the most prominent face again

    view.scan_button.click(by_name(names, jobs.scan, defaults, {}), controls.inputs, view.scan_strip,
                           api_visibility="private", **lanes.scans.events(), validator=validator(lanes.scans))
    for name in ("face", "audio", "device", "enhance"):  # reads headers only: a preview's lane
        controls.components[name].change(by_name(names, jobs.enhance_cost, defaults, {}), controls.inputs,
                                         notes["enhance"], api_visibility="private", show_progress="hidden",
                                         **lanes.previews.events(), validator=validator(lanes.previews))
    for name in ("face", "audio", "device", "resize_factor"):  # the score's switch follows what it would cost
        controls.components[name].change(by_name(names, jobs.score_cost, defaults, {}), controls.inputs,
                                         [controls.components["score"], notes["score"]], api_visibility="private",
                                         show_progress="hidden", **lanes.previews.events(),
                                         validator=validator(lanes.previews))
    progress = {"progress": gr.Progress()}
    api_job = by_name(names, jobs.run, defaults, progress, name="lipsync",
                      doc=description(names, CUSTOM, describe_size(config.max_upload_bytes)))
    page_job = by_name(names, jobs.run_streamed, defaults, progress, name="run_job_streamed")
    if web.spaces is not None:  # on ZeroGPU: ask for what this clip needs (a no-op decorator elsewhere)
        duration = by_name(names, lambda settings, progress=None: jobs.gpu_seconds(settings), defaults,
                           {"progress": None}, name="gpu_seconds")
        api_job, page_job = web.spaces.GPU(api_job, duration=duration), web.spaces.GPU(page_job, duration=duration)
    lane = dict(**lanes.jobs.events(), validator=validator(lanes.jobs, jobs.validate))
    outputs = connect_sync_button(run, api_job, page_job, controls.inputs, view.job_outputs, view.streamed, lane,
                                  config.stream_result)
    if EXAMPLES.is_dir():
        gr.Examples(examples=[[str(EXAMPLES / "astronaut.jpg"), str(EXAMPLES / "speech.wav")],
                              [str(EXAMPLES / "astronaut.mp4"), str(EXAMPLES / "speech.wav")]],
                    inputs=[controls.components["face"], controls.components["audio"]],
                    label="Examples (public-domain NASA portrait)",
                    fn=page_job if config.stream_result else api_job, outputs=outputs,
                    cache_examples=config.cache_examples, cache_mode="lazy")
