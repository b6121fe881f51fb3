"""The Python API's engine: a loaded model that syncs any number of clips, and what the app needs beside it.

`LipSync` loads the checkpoint once; `sync` runs one job. The functions below serve a
front-end (the web app) that must not reach into the stages: a shared engine per
(checkpoint, device), the face-box preview (which needs a detector but no model, so an
offline first visit draws boxes before any weights exist), the display copy of the
original, and fetching the weights before serving.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterator

from .environment import LIVE_SESSIONS
from .errors import LipSyncError
from .faces.detectors import DetectorChoice, get_detector
from .faces.preview import FacePreview, make_preview, scan_faces
from .generator import LazyModel, backend_for
from .live.avatar import Avatar, prepare_avatar
from .live.session import LiveSession, LiveSlots, start_session
from .media import audio, limits
from .media.probe import probe_media
from .media.segments import Progress, stream_job
from .media.video import display_copy as _display_copy
from .options import Options
from .pipeline import ProgressCallback, run
from .results import SyncResult, SyncScore
from .runtime.concurrency import BuildOnce
from .runtime.devices import release_memory, resolve_device
from .scoring import cost as score_cost
from .scoring.backends import shared_syncnet
from .scoring.job import score_result
from .scoring.score import probe_clip, score_video
from .scoring.windows import Embedder
from .weights.locate import find_s3fd, resolve_checkpoint, resolve_restorer, resolve_syncnet

if TYPE_CHECKING:
    from .generator.network import Wav2Lip

log = logging.getLogger(__name__)


class LipSync:
    """A loaded model (and its face detectors) ready to sync any number of clips, from several threads too."""

    def __init__(self, checkpoint: str | None = None, device: str = "auto", allow_download: bool = True,
                 threads: int = 0) -> None:
        """`threads`: the CPU threads the model's OpenVINO backend uses (0: OMP_NUM_THREADS, else one per physical
        core); a process running several engines gives each its share."""
        self.device = resolve_device(device)
        self.checkpoint_path = resolve_checkpoint(checkpoint, download=allow_download)
        warming = threading.Thread(target=audio.warm_up, name="lipsync-audio-warm-up", daemon=True)
        warming.start()  # builds the mel basis (numpy only now, milliseconds) while the model loads
        self.network = LazyModel(self.checkpoint_path, self.device, threads=threads)
        # The default backend is made ready now, once per engine: on a CPU, OpenVINO read from its cache and compiled
        # (the PyTorch model is then not loaded, torch not even imported) or built from the checkpoint; elsewhere
        # the PyTorch model loaded. Not on a background thread: a process that ends while OpenVINO compiles (a job
        # refused right away) could hang in interpreter shutdown; this costs 0.4-1 s of start-up instead.
        backend_for(self.network, self.device, "auto")  # the default arithmetic (lipsync.options: precision)
        warming.join()
        self.allow_download = allow_download
        self.live_slots = LiveSlots(LIVE_SESSIONS.read())

    @property
    def model(self) -> Wav2Lip:
        """The PyTorch model (loaded now if this engine's jobs have not needed it so far)."""
        return self.network.get()

    def detector(self, options: Options) -> DetectorChoice:
        """The face detector these options ask for, shared with every other job and the preview."""
        return get_detector(options.detector, self.device, options.face_det_batch_size, self.allow_download,
                            options.det_max_side)

    def restorer(self, options: Options) -> tuple[Any, str]:
        """The mouth restorer these options ask for, shared by every job (None for --enhance none), or None and the
        one sentence saying why it cannot run (no weights offline, a damaged file, no landmark model): the job
        then runs without it."""
        if options.enhance == "none" or options.enhance_strength == 0:
            return None, ""
        from .restore.backends import shared_restorer
        from .restore.landmarks import face_mesh

        try:
            face_mesh()
            return shared_restorer(resolve_restorer(download=self.allow_download), self.device, options.backend), ""
        except LipSyncError as err:
            return None, str(err)

    def sync_stream(self, face: str, audio: str, outfile: str, segment_dir: str, options: Options | None = None,
                    **overrides: Any) -> Iterator[Progress | str | SyncResult]:
        """`sync`, handing out the result while it is made: progress reports (`Progress`), the path of each
        finished MPEG-TS segment of the output (in `segment_dir`), then the `SyncResult`. The MP4 at `outfile` is
        the one `sync` writes. Closing the iterator early stops the job."""
        options = replace(options or Options(), **overrides) if overrides else options or Options()
        return stream_job(lambda progress: self._run_job(face, audio, outfile, options, progress, segment_dir),
                          segment_dir)

    def prepare_avatar(self, avatar: str, options: Options | None = None) -> Avatar:
        """A photo or short clip prepared for live sessions (faces found, crops cut); refuses one with no face."""
        options = options or Options()
        detector = self._job_detector(options)
        return prepare_avatar(avatar, options, detector and detector.detector, detector.name if detector else "")

    def live(self, avatar: str | Avatar, options: Options | None = None, wait: float = 0.0) -> LiveSession:
        """Start a live session on `avatar` (a path, or an Avatar from `prepare_avatar`): push audio chunks,
        read synced frames, each with its audio (lipsync.live.session). One session per engine at a time by default
        ($LIPSYNC_LIVE_SESSIONS); waits up to `wait` seconds for a free one, then refuses with a sentence."""
        options = options or Options()
        prepared = avatar if isinstance(avatar, Avatar) else self.prepare_avatar(avatar, options)
        release = self.live_slots.acquire(wait)
        try:
            return start_session(prepared, self.network, self.device, options, release)
        except BaseException:
            release()
            raise

    def sync(self, face: str, audio: str, outfile: str, options: Options | None = None,
             progress: ProgressCallback | None = None, **overrides: Any) -> SyncResult:
        """Lip-sync one clip. `overrides` are Options fields, e.g. pads=(0, 20, 0, 0), blend='feather'."""
        options = replace(options or Options(), **overrides) if overrides else options or Options()
        return self._run_job(face, audio, outfile, options, progress)

    def score(self, video: str, audio: str | None = None, *, crop: str = "face", vshift: int = 15,
              syncnet: str | Embedder | None = None, progress: ProgressCallback | None = None) -> SyncScore:
        """SyncNet's score of any clip (a result, or an original to compare with) against its own sound or `audio`:
        the offset, LSE-D and LSE-C the Wav2Lip paper reports (lipsync.scoring). `syncnet`: the weights' path (None:
        found or downloaded) or a network already loaded; it runs on this engine's device, loaded once and shared
        with the jobs this engine scores. `crop` 'none' scores clips that are already face crops."""
        return score_clip(video, audio, crop=crop, vshift=vshift, syncnet=syncnet, device=self.device,
                          progress=progress, allow_download=self.allow_download)

    def _job_detector(self, options: Options) -> DetectorChoice | None:
        """The shared detector these options need, or None when a fixed box makes detection unneeded."""
        return None if options.fixed_box is not None else self.detector(options)

    def _run_job(self, face: str, audio: str, outfile: str, options: Options, progress: ProgressCallback | None,
                 segment_dir: str | None = None) -> SyncResult:
        """One job, for `sync` and `sync_stream` alike (so both write the same MP4); its memory handed back after."""
        detector = self._job_detector(options)
        if options.enhance != "none" and progress is not None:
            progress("Preparing the face restorer", 0, 1)  # the first time on a CPU: converted, a minute or two
        restorer, problem = self.restorer(options)
        try:
            result = run(face, audio, outfile, self.network, self.device, options, detector, progress, restorer,
                         problem, segment_dir)
            if options.scored:
                self._score_job(result, audio, options, progress)
            return result
        finally:
            release_memory(self.device)

    def _score_job(self, result: SyncResult, audio: str, options: Options, progress: ProgressCallback | None) -> None:
        """--score and --audio_offset auto: the result scored (and its offset fixed) into `result`. Missing weights
        or a clip SyncNet cannot score leave one sentence in `result.score_problem` and the video as it is; what is
        left of the job's time limit bounds the score the same way. A job stopped (or broken) while its result is
        scored leaves no output, as any stopped job."""
        left = options.time_limit - result.seconds.get("total", 0.0) if options.time_limit else 0.0
        report = limits.with_deadline(progress or (lambda stage, done, total: None),
                                      max(left, 1e-3) if options.time_limit else 0.0, what="The sync score",
                                      advice="The video is complete without it; score a shorter clip")
        try:
            network = shared_syncnet(None, self.device, self.allow_download)
        except LipSyncError as err:
            result.score_problem = str(err)
            return
        try:
            score_result(result, audio, network, report)
        except BaseException:
            try:
                os.unlink(result.outfile)
            except OSError:
                pass
            raise


_engines = BuildOnce(lambda checkpoint, device: LipSync(checkpoint, device))


def shared_engine(checkpoint: str | None = None, device: str = "auto") -> LipSync:
    """One loaded engine per (checkpoint, device) in this process, built on first use (for servers)."""
    return _engines.get(checkpoint, resolve_device(device))


def score_clip(video: str, audio: str | None = None, *, crop: str = "face", vshift: int = 15,
               syncnet: str | Embedder | None = None, device: str = "auto", detector: str = "auto",
               progress: ProgressCallback | None = None, allow_download: bool = True) -> SyncScore:
    """SyncNet's score of any clip without a Wav2Lip model loaded (the score command; `LipSync.score` for an
    engine): the network for `syncnet` (a path; None: found or downloaded; or one already loaded) on `device`,
    loaded once per process, the face found by `detector` (crop 'face')."""
    device = resolve_device(device)
    probed = probe_clip(video, audio)  # a file that cannot be scored: its sentence before any weights are fetched
    network = syncnet if syncnet is not None and not isinstance(syncnet, str) else \
        shared_syncnet(syncnet, device, allow_download)
    return score_video(video, audio, crop=crop, vshift=vshift, device=device, detector=detector, network=network,
                       download=allow_download, progress=progress, probed=probed)


def face_preview(face: str, options: Options | None = None, device: str = "cpu") -> FacePreview:
    """The first frame of `face` with its detected face, for drawing boxes (no model is loaded)."""
    return make_preview(face, options or Options(), resolve_device(device))


def face_scan(face: str, options: Options | None = None, device: str = "cpu") -> list[bool]:
    """A face found or not at up to 120 moments through the clip (no model is loaded): the timeline before a job."""
    return scan_faces(face, options or Options(), resolve_device(device))


def display_copy(face: str, outfile: str, audio_path: str | None = None, seconds: float = 0.0) -> str:
    """A browser-playable MP4 of the face input, cut to `seconds` (see lipsync.media.video.display_copy)."""
    return _display_copy(probe_media(face), outfile, audio_path, seconds)


def check_inputs(face: str, audio_path: str, options: Options | None = None) -> None:
    """Refuse bad inputs from their headers alone, before any model is loaded (a quick answer, little memory).

    The same checks run again inside the job; this only moves the common refusals ahead of the model's load.
    """
    options = options or Options()
    limits.check_face(probe_media(face), options, face)
    limits.check_sound(probe_media(audio_path), options.max_seconds, audio_path)


def gpu_seconds(face: str, audio_path: str, options: Options | None = None) -> float:
    """Seconds of GPU time a job on these files is expected to need (headers only; for ZeroGPU's request)."""
    options = options or Options()
    info = probe_media(face)
    limits.check_face(info, options, face)
    sound = probe_media(audio_path)
    extra = 0.0
    if options.enhance != "none":  # the mouth restorer on every synced face
        from .restore.backends import GPU_SECONDS_PER_FACE

        extra += GPU_SECONDS_PER_FACE
    if options.scored:  # SyncNet on the result, 25 windows a second
        extra += score_cost.gpu_seconds_per_frame(limits.job_fps(info, options), limits.megapixels(info, options))
    return limits.gpu_seconds_for(info, sound.duration or options.max_seconds, options, extra)


def default_score(device: str = "auto") -> bool:
    """The app's initial default for scoring the sync: on where a GPU runs SyncNet in milliseconds a window; off on
    a CPU until a clip's cost is known (`score_seconds`), since there it costs about as much as the job itself."""
    return _named(device) != "cpu"


def _named(device: str) -> str:
    """The device an estimate is for: 'auto' is whichever is here; a named one is taken at its word (the app asks
    about a ZeroGPU job's GPU while none is attached)."""
    return resolve_device(device) if device == "auto" else device


def score_seconds(face: str, audio_path: str, options: Options | None = None,
                  device: str = "auto") -> tuple[float, float]:
    """(about how many seconds scoring the result would add, about how many the job itself takes) for these files
    on `device`, from their headers (lipsync.scoring.cost, lipsync.media.limits)."""
    from .runtime.devices import cpu_threads

    options = options or Options()
    device = _named(device)
    info, sound = probe_media(face), probe_media(audio_path)
    seconds = sound.duration or 0.0
    extra = score_cost.seconds(seconds, limits.megapixels(info, options), device)
    job = limits.cpu_seconds_for(info, seconds, options, cpu_threads()) if device == "cpu" else \
        limits.gpu_seconds_for(info, seconds, options)
    return extra, job


def default_enhance(device: str = "auto") -> str:
    """The app's default for --enhance: the restorer where a GPU runs it in milliseconds, none on a CPU (seconds a
    face)."""
    return "none" if resolve_device(device) == "cpu" else "gfpgan"


def enhance_seconds(face: str, audio_path: str, options: Options | None = None, device: str = "auto") -> float:
    """About how many seconds --enhance gfpgan would add to a job on these files on `device` (headers only)."""
    from .restore.backends import seconds_per_face

    options = options or Options()
    info, sound = probe_media(face), probe_media(audio_path)
    return limits.job_frames(info, sound.duration or 0.0, options) * seconds_per_face(resolve_device(device))


@dataclass(frozen=True)
class FetchedWeights:
    checkpoint: str
    s3fd: str | None  # None: not available, the offline detector will be used
    restorer: str | None = None  # GFPGAN v1.4 for --enhance gfpgan; None: not available (jobs run unenhanced)
    syncnet: str | None = None  # SyncNet for the sync score; None: not available (jobs run unscored)


def fetch_weights(checkpoint: str | None = None) -> FetchedWeights:
    """Download what is missing (the Wav2Lip checkpoint, S3FD, GFPGAN, SyncNet) before serving, so no visitor waits
    for it (on ZeroGPU, no GPU lease is spent downloading)."""
    optional: dict[str, str | None] = {}
    for name, resolve in (("restorer", resolve_restorer), ("syncnet", resolve_syncnet)):
        try:
            optional[name] = resolve(download=True)
        except LipSyncError as err:
            log.warning("%s", err)
            optional[name] = None
    return FetchedWeights(resolve_checkpoint(checkpoint), find_s3fd(download=True), **optional)
