"""The page's work, each as a handler of settings by control name: the job (plain for the API and MCP, streamed
for the page), the face-box preview, the face check through the clip, the cost of enhancing and of scoring the
sync, and the checks a job passes before it is queued (and before ZeroGPU is asked for a GPU).

Everything goes through lipsync's public API; what a visitor reads of a failure is one sentence (`user_error`).
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr

from lipsync import (
    CHECKPOINTS,
    DEFAULT_CHECKPOINT,
    LipSyncError,
    Options,
    default_enhance,
    default_score,
    display_copy,
    draw_boxes,
    enhance_seconds,
    face_preview,
    face_scan,
    face_timeline,
    gpu_seconds,
    score_seconds,
    shared_engine,
    sync_timeline,
)

from .config import AppConfig
from .files import JobFolders
from .stream import segments_then_result

log = logging.getLogger("lipsync.app")
INPUTS = ("face", "audio")  # the job's files; every other control is a setting
ENGINE_SETTINGS = ("checkpoint_path", "device")
AUTO_OFFSET = "audio_offset_auto"  # a switch beside the offset's number box: checked, the setting is 'auto'
CUSTOM = "custom ($LIPSYNC_CHECKPOINT)"  # the page's name for the checkpoint the server's environment names
# original, result, download, stats, face timeline, sync timeline (None when not scored), the score as JSON
Outputs = tuple[str, str, str, str, Any, Any, dict]
OUTPUT_COUNT = 7
SCORE_SHARE = 0.25  # on a CPU the score is on by default when it adds at most this share of the job's own time


def hide_server_paths(message: str) -> str:
    """A message with quoted absolute paths cut to their file names: visitors need not see the server's folders."""
    return re.sub(r"'/[^']*/([^'/]+)'", r"'\1'", message)


def user_error(err: Exception) -> gr.Error:
    """What a visitor reads of a failure: the LipSyncError's sentence, or (a bug) that it was ours."""
    if isinstance(err, LipSyncError):
        return gr.Error(hide_server_paths(str(err)))
    log.exception("unexpected failure")
    return gr.Error(f"Something went wrong on our side ({type(err).__name__}). The job was stopped; "
                    "please try again, and report it if it happens again.")


def missing_input(settings: dict[str, Any], audio: bool = True) -> tuple[str, str] | None:
    """(the input, the sentence) when the face (or, for a job, the audio) has not been given."""
    if not settings.get("face"):
        return "face", "Upload a face video or a photo first."
    if audio and not settings.get("audio"):
        return "audio", "Upload or record the audio first."
    return None


@dataclass(frozen=True)
class Job:
    """One job's inputs, folder, settings and engine (what `JobHandlers.job` gives the handlers)."""

    face: str
    audio: str
    folder: Path
    options: Options
    engine: Any

    @property
    def outfile(self) -> Path:
        return self.folder / f"lipsync_{Path(self.face).stem[:40]}.mp4"


class JobHandlers:
    """The page's handlers for one server (its config, its job folders)."""

    def __init__(self, config: AppConfig, folders: JobFolders) -> None:
        self.config = config
        self.folders = folders

    # --- settings ---

    def checkpoint_choices(self) -> list[str]:
        names = [DEFAULT_CHECKPOINT] + [n for n in CHECKPOINTS if n != DEFAULT_CHECKPOINT]
        return ([CUSTOM] if self.config.custom_checkpoint else []) + names

    def options(self, settings: dict[str, Any]) -> Options:
        """Options from the controls' values (by name) and the server's limits."""
        job = {k: v for k, v in settings.items() if k not in INPUTS and k not in ENGINE_SETTINGS and k != AUTO_OFFSET}
        if settings.get(AUTO_OFFSET):
            job["audio_offset"] = "auto"
        elif job.get("audio_offset") is None:  # an emptied number box: no shift
            job.pop("audio_offset", None)
        options = Options.from_flat({**job, **self.config.limits})
        if options.point is not None and options.detector == "auto":  # a clicked face: only BlazeFace follows one
            options = options.with_changes(detector="blazeface")
        return options

    def engine(self, settings: dict[str, Any]) -> Any:
        """The shared engine for the page's checkpoint and device."""
        checkpoint = settings.get("checkpoint_path", DEFAULT_CHECKPOINT)
        return shared_engine(self.config.custom_checkpoint if checkpoint == CUSTOM else checkpoint,
                             settings.get("device", "auto"))

    def server_engine(self) -> Any:
        """The engine of the page's default checkpoint (the server's own, when it names one) on the best device:
        what the Live page runs and what is loaded before the first click."""
        return self.engine({"checkpoint_path": self.checkpoint_choices()[0]})

    def device(self, settings: dict[str, Any], on_zero_gpu: str = "cpu") -> str:
        """Where work outside a job runs: on ZeroGPU there is no GPU outside a job's call (`on_zero_gpu` says
        what to assume there: the CPU to detect on, 'cuda' to estimate a job's cost)."""
        return on_zero_gpu if self.config.zero_gpu else settings.get("device", "auto")

    # --- the job ---

    @contextlib.contextmanager
    def job(self, settings: dict[str, Any], progress: Callable) -> Iterator[Job]:
        """The one way a job starts and ends, plain or streamed: inputs checked, old results swept, a fresh folder
        (spared by the cleaner while the job runs), the options and the engine. A failed job's folder goes, and
        its failure reaches the visitor as one sentence; a stopped one (the page's GeneratorExit, a cancel) goes
        too, so nothing is left behind."""
        missing = missing_input(settings)
        if missing:
            raise gr.Error(missing[1])
        self.folders.clean()
        folder = self.folders.new()
        try:
            options = self.options(settings)
            progress(0, desc="Loading the model")
            yield Job(settings["face"], settings["audio"], folder, options, self.engine(settings))
        except BaseException as err:  # failed, or stopped: the folder goes either way
            self.folders.discard(folder)
            if isinstance(err, Exception):
                raise user_error(err) from None
            raise
        finally:
            self.folders.release(folder)

    def run(self, settings: dict[str, Any], progress: Callable | None = None) -> Outputs:
        """The click on Sync lips for the API and MCP (/lipsync: their description is `api.description`)."""
        progress = progress or _no_progress
        with self.job(settings, progress) as job:
            def report(stage: str, done: int, total: int) -> None:
                progress((done, max(total, 1)), desc=stage)  # a (done, total) pair: MCP clients see the steps too

            result = job.engine.sync(job.face, job.audio, str(job.outfile), job.options, progress=report)
            original = self._original(job, result, progress)
        return self.finish(result, original, job.outfile)

    def run_streamed(self, settings: dict[str, Any], progress: Callable | None = None) -> Iterator[tuple]:
        """`run` for the page: the lip-synced video plays while it is made (webapp.stream), then the original, the
        MP4 (the very file `run` writes), the stats and the face timeline arrive."""
        progress = progress or _no_progress
        with self.job(settings, progress) as job:
            segments = job.folder / "segments"
            segments.mkdir()
            # closed before the folder goes, whatever ends this generator: the job has stopped writing into it then
            with contextlib.closing(job.engine.sync_stream(job.face, job.audio, str(job.outfile), str(segments),
                                                           job.options)) as events:
                for event in segments_then_result(events, progress, str(segments)):
                    if isinstance(event, str):
                        yield gr.skip(), event, *[gr.skip()] * (OUTPUT_COUNT - 2)
                    else:
                        result = event
            original = self._original(job, result, progress)
        outputs = self.finish(result, original, job.outfile)
        yield outputs[0], gr.skip(), *outputs[2:]  # the streamed player keeps what it played

    @staticmethod
    def _original(job: Job, result: Any, progress: Callable) -> str:
        progress(1.0, desc="Preparing the original for display")
        return display_copy(job.face, str(job.folder / "original.mp4"), job.audio, seconds=result.duration)

    @staticmethod
    def finish(result: Any, original: str, outfile: Path) -> Outputs:
        """The job's seven outputs, with a warning for frames left unchanged, a mouth not enhanced or a sync not
        scored."""
        if result.frames_without_face:
            gr.Warning(f"No face was found in {result.frames_without_face} frames; they were left unchanged.")
        if result.enhance_problem:  # the video is complete, without the enhancement
            gr.Warning(f"The mouth was not enhanced: {hide_server_paths(result.enhance_problem)}")
        if result.score_problem:  # the video is complete, without its score
            gr.Warning(f"The sync was not scored: {hide_server_paths(result.score_problem)}")
        if result.offset_problem:  # the video is complete and scored, its sound as it was made
            gr.Warning(f"The measured offset was not fixed: {hide_server_paths(result.offset_problem)}")
        score = result.score
        strip = None if score is None else sync_timeline(score.framewise, result.frames, result.fps)
        return (original, str(outfile), str(outfile), hide_server_paths(result.stats_markdown()),
                face_timeline(result.face_frames), strip, score_json(result))

    # --- before a job ---

    def preview(self, settings: dict[str, Any], state: dict) -> tuple[Any, str, dict]:
        """Draw the detected and padded boxes on the first frame; detection reruns only for a new face or
        setting."""
        face = settings.get("face")
        if not face:
            return None, "", {}
        try:
            options = self.options(settings)
            device = self.device(settings)
            key = (face, options.resize_factor, options.rotate, options.crop, options.detector, device)
            if state.get("key") != key:
                state = {"key": key, "preview": face_preview(face, options, device)}
            image = draw_boxes(state["preview"], options)
        except LipSyncError as err:  # said beside the preview, not as an error badge over it
            return None, f"**Cannot preview this face:** {hide_server_paths(str(err))}", {}
        except Exception as err:
            raise user_error(err) from None
        return image, preview_note(state["preview"], options), state

    def enhance_cost(self, settings: dict[str, Any]) -> str:
        """Beside the enhance choice on a CPU: what enhancing would add to this clip (nothing on a GPU, where it is
        on by default and costs little)."""
        device = self.device(settings, on_zero_gpu="cuda")
        try:
            if default_enhance(device) != "none":
                return ""
            if missing_input(settings):
                return "On this CPU enhancing takes seconds per frame; choose a face and audio to see the time."
            extra = enhance_seconds(settings["face"], settings["audio"], self.options(settings), device)
        except (LipSyncError, OSError):
            return ""
        return f"On this CPU enhancing would add about **{extra / 60:.1f} min** to this clip."

    def score_cost(self, settings: dict[str, Any]) -> tuple[Any, str]:
        """The sync score's switch and the note beside it, for this clip: on where it costs little (a GPU; a CPU
        when it adds at most a quarter of the job's own time), else off with the time it would add."""
        device = self.device(settings, on_zero_gpu="cuda")
        try:
            if default_score(device):
                return gr.update(value=True), ""
            if missing_input(settings):
                return gr.skip(), ("On this CPU scoring costs about as much as the job; choose a face and audio to "
                                   "see the time.")
            extra, job = score_seconds(settings["face"], settings["audio"], self.options(settings), device)
        except (LipSyncError, OSError):
            return gr.skip(), ""
        if extra <= SCORE_SHARE * job:
            return gr.update(value=True), f"Scoring adds about {_duration(extra)} to this clip."
        return gr.update(value=False), (f"On this CPU scoring would add about **{_duration(extra)}** to this clip "
                                         f"(the job itself: about {_duration(job)}).")

    def scan(self, settings: dict[str, Any]) -> Any:
        """The face timeline before a job: a face found or not at up to 120 moments through the clip."""
        missing = missing_input(settings, audio=False)
        if missing:
            raise gr.Error(missing[1])
        try:
            found = face_scan(settings["face"], self.options(settings), self.device(settings))
        except Exception as err:
            raise user_error(err) from None
        if not any(found):
            gr.Warning("No face was found anywhere in the clip: use a fixed face box under Advanced, or another "
                       "clip.")
        return face_timeline(found)

    def gpu_seconds(self, settings: dict[str, Any]) -> float:
        """GPU seconds to ask ZeroGPU for this job: what the clip needs, never more than allowed."""
        try:
            needed = gpu_seconds(settings["face"], settings["audio"], self.options(settings))
            return min(self.config.gpu_max_seconds, needed)
        except (LipSyncError, KeyError, TypeError):
            return 30.0  # the job fails at once with its own message: ask for little

    def problem(self, settings: dict[str, Any]) -> tuple[str, str] | None:
        """What stops this job before it starts: (the input at fault, one sentence), or None."""
        missing = missing_input(settings)
        if missing or not self.config.zero_gpu:
            return missing
        try:
            needed = gpu_seconds(settings["face"], settings["audio"], self.options(settings))
        except LipSyncError:  # a bad file: the job itself says what is wrong, without a GPU
            return None
        if needed > self.config.gpu_max_seconds:
            return "audio", (f"This clip needs about {needed:.0f} s of GPU time, more than the "
                             f"{self.config.gpu_max_seconds:.0f} s a job may ask for here. Use shorter audio (under "
                             "a minute), or the Resize option.")
        return None

    def validate(self, settings: dict[str, Any]) -> list[dict]:
        """Gradio's validator, one verdict per input: runs before the job is queued (and before a GPU is asked
        for)."""
        problem = self.problem(settings)
        return [gr.validate(problem is None or name != problem[0], problem[1] if problem else "")
                for name in settings]


def score_json(result: Any) -> dict[str, Any]:
    """The score for API callers: {offset, lse_c, lse_d, frames}, or the same keys null with the reason."""
    if result.score is not None:
        return {**result.score.brief(), "offset_fixed_ms": result.offset_fixed_ms}
    reason = hide_server_paths(result.score_problem) if result.score_problem else "not asked for (score is off)"
    return {"offset": None, "lse_c": None, "lse_d": None, "frames": None, "reason": reason}


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def preview_note(found: Any, options: Options) -> str:
    """The sentence under the preview: which box is which, or why no face is drawn."""
    if options.fixed_box is not None:
        return "Green: the fixed face box."
    if options.point is not None and not found.can_pick:
        return (f"The {found.detector} detector cannot follow a clicked face: choose BlazeFace or Automatic under "
                "Advanced, or upload a new clip to go back to the most prominent face.")
    if options.point is not None and found.picked(options.point) is None:
        return ("The point you clicked is on no face found by "
                f"{found.detector}: click on a face (grey boxes), or pick another detector.")
    if found.picked(options.point) is None:
        return "No face found in the first frame. Try another clip, or set a fixed face box under Advanced."
    note = f"Blue: face found by {found.detector}. Green: with padding, what the model sees."
    if found.can_pick and len(found.faces) > 1:
        note += " Grey: other faces; click one to sync it instead."
    return note


def pick_face_point(state: dict, evt: gr.SelectData) -> tuple[int, int]:
    """A click on the preview: the point in frame pixels (the preview is a shrunk copy), for face_point."""
    found = state.get("preview") if state else None
    if found is None or evt is None or evt.index is None:
        return -1, -1
    return found.to_frame(*evt.index[:2])


def _no_progress(*args: Any, **kwargs: Any) -> None:
    pass
