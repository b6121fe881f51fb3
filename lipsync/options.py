"""Every setting of a job, declared once: name, default, choices, help and checks.

The command line (`lipsync.cli.sync`) builds its flags from these declarations, the web
app maps its controls onto the fields by name, and the README's flag table is checked
against them by a test. Adding a setting is one `setting(...)` line here (plus, if it has
a control in the app, one line in the app's list of controls).

Field names are the official Wav2Lip `inference.py` flag names where one exists.
Rectangles keep the official top, bottom, left, right order here, at the edge; inside the
package they become `Box` objects (lipsync.geometry).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Iterator

from . import environment
from .environment import Variable
from .errors import LipSyncError
from .geometry import Box

SIDES = ("top", "bottom", "left", "right")
AXES = ("x", "y")  # the parts of a point, as `from_flat` takes them
NO_POINT = (-1, -1)
BLEND_MODES = ("box", "feather", "mouth")
ENHANCERS = ("none", "gfpgan")  # lipsync.restore.enhance
DETECTORS = ("auto", "s3fd", "blazeface", "haar")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
BACKENDS = ("auto", "openvino", "pytorch")  # lipsync.generator.choice
ENCODERS = ("auto", "libx264", "h264_nvenc")
DEVICES = ("auto", "cuda", "cpu", "mps")
NO_BOX = (-1, -1, -1, -1)
MAX_AUDIO_OFFSET_MS = 10_000.0  # a shift beyond 10 s is a mistake, not an offset (and its silence costs memory)
FULL_FRAME = (0, -1, 0, -1)


def setting(default: Any, help: str, *, choices: tuple[str, ...] | None = None, metavar: Any = None,
            flag: str | None = None, env: Variable | None = None, server: float | None = None, cli: bool = True,
            words: tuple[str, ...] = ()) -> Any:
    """A dataclass field carrying what the CLI and the app need to offer it.

    `words`: for a number setting, the words it also takes instead of a number (`--audio_offset auto`).

    `env` is the environment variable (lipsync.environment) that overrides the default; it
    is read each time an Options is made, so a server or a test can set it late. `server` is a limit's default
    in the web app, where visitors share the machine (see `server_limits`); the same variable
    overrides it. `flag` is the CLI spelling when it is not `--<name>`.
    """
    if not help.strip():
        raise ValueError("every setting needs a help text: the CLI, the app and the API description show it")
    if server is not None and env is None:
        raise ValueError("a server default needs the environment variable that overrides it")
    meta = {"help": help, "choices": choices, "metavar": metavar, "flag": flag, "env": env, "server": server,
            "cli": cli, "words": words}
    if env is not None:
        return field(default_factory=lambda: env.read(default), metadata=meta)
    return field(default=default, metadata=meta)



def server_limits() -> dict[str, float]:
    """The limits of the web app, where visitors share one machine: each setting's `server` default unless its
    environment variable says otherwise. Read here only, so the app and the CLI cannot disagree on a variable."""
    return {f.name: f.metadata["env"].read(f.metadata["server"]) for f in fields(Options)
            if f.metadata.get("server") is not None}

@dataclass(frozen=True)
class Options:
    """Everything that shapes one job. Checked when made: a bad value is a `LipSyncError` at once."""

    static: bool = setting(False, "use only the first frame of the face video (always so for a photo)")
    fps: float = setting(25.0, "frame rate of the output when the face is a photo")
    pads: tuple[int, int, int, int] = setting(
        (0, 10, 0, 0), "pixels added to the detected face box; raise BOTTOM until the chin is inside",
        metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"))
    face_det_batch_size: int = setting(16, "frames per face-detection batch (S3FD); halved on out-of-memory")
    wav2lip_batch_size: int = setting(
        0, "faces per Wav2Lip model batch; 0 picks by device (128 on CUDA, 8 on a CPU, where small batches run "
           "faster). The result does not depend on it")
    resize_factor: int = setting(1, "divide the resolution by this first (2 turns 1080p into 540p); often better "
                                    "and faster")
    crop: tuple[int, int, int, int] = setting(
        FULL_FRAME, "keep only this region of the frame (after resize and rotate); -1 means to the edge. Useful "
                    "when several faces are visible", metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"))
    box: tuple[int, int, int, int] = setting(
        NO_BOX, "use this fixed face box instead of detection (pads are not added); for a face that is not "
                "detected and hardly moves. All four numbers, or -1 -1 -1 -1 to detect",
        metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"))
    rotate: bool = setting(False, "turn frames 90 degrees clockwise first (phone videos that come out sideways)")
    nosmooth: bool = setting(False, "do not average face boxes over 5 frames (for fast motion)")
    blend: str = setting("box", "how the generated mouth is pasted: 'box' exactly as the original; 'feather' "
                                "fades the box edges into the frame; 'mouth' takes only the lower face, through a "
                                "soft mask, colour-matched to the skin around it (eyes and forehead stay the "
                                "frame's own)", choices=BLEND_MODES)
    enhance: str = setting("none", "restore the synced mouth's detail: 'gfpgan' runs GFPGAN v1.4 on the face aligned "
                                   "by five landmarks and lets it in through the mouth mask only (eyes and forehead "
                                   "stay the frame's own; 332 MB of weights, downloaded once; about 20x the lip-sync "
                                   "model's work per face: fast on a GPU, seconds per face on a CPU); 'none' keeps "
                                   "the generated mouth (the official output)", choices=ENHANCERS)
    enhance_strength: float = setting(0.7, "how much of the restored mouth replaces the generated one, 0 to 1 (full "
                                           "strength can make teeth look painted)")
    detector: str = setting("auto", "face detector: 's3fd' (what Wav2Lip was trained with; downloads 90 MB "
                                    "once), 'blazeface' (MediaPipe's, bundled, on OpenVINO; a few ms per frame on a "
                                    "CPU; finds turned, covered and small faces and follows one person), 'haar' "
                                    "(OpenCV, no download, frontal faces only), 'auto' (s3fd on a GPU when "
                                    "available; on a CPU blazeface, since s3fd takes seconds per frame there, or "
                                    "haar when OpenVINO is missing)",
                            choices=DETECTORS)
    face_point: tuple[int, int] = setting(
        (-1, -1), "a point in the first frame (pixels after resize, rotate and crop) on the face to sync, when "
                  "several are visible; that face is followed for the whole clip (blazeface detector). -1 -1: "
                  "the most prominent face", metavar=("X", "Y"))
    precision: str = setting("auto", "the model's arithmetic: 'auto' is bf16 where the CPU computes it natively "
                                     "(AVX512-BF16 or AMX, as OpenVINO reports: about 1.6-2x faster, the mouth within "
                                     "a few levels of fp32's) and fp32 elsewhere, GPUs included; fp32 gives the "
                                     "official numbers exactly; fp16 (GPU) and bf16 force the faster arithmetic (the "
                                     "stats say which ran)",
                             choices=PRECISIONS)
    backend: str = setting("auto", "library that runs the model on a CPU: 'openvino' (about 1.7x faster in fp32; "
                                   "built from the weights once and cached under ~/.cache/lipsync/models or "
                                   "$LIPSYNC_MODEL_CACHE), 'pytorch', or 'auto' (OpenVINO when installed). GPUs and "
                                   "fp16 always use PyTorch; if OpenVINO fails, PyTorch takes over",
                           choices=BACKENDS)
    det_max_side: int = setting(0, "run S3FD on frames shrunk to this longer side, boxes mapped back (0: full "
                                   "resolution, as the original); e.g. 640 makes detection of 1080p several "
                                   "times faster")
    encoder: str = setting("auto", "H.264 encoder: 'auto' uses NVIDIA's h264_nvenc when the models run on CUDA "
                                   "and it works there, else libx264", choices=ENCODERS)
    allow_silence: bool = setting(False, "sync silent or near-silent audio instead of stopping with an error")
    keep_silent_mouth: bool = setting(False, "in pauses of the speech (0.3 s or more of frames whose audio is "
                                             "40 dB under the clip's loudest), keep the frame's own mouth, "
                                             "cross-faded over 3 frames; the model is skipped there")
    max_seconds: float = setting(1800.0, "refuse audio longer than this many seconds, read from its header before "
                                         "decoding (0: no limit)", env=environment.MAX_SECONDS, server=120.0)
    max_side: int = setting(4096, "refuse a video or photo whose longer side exceeds this many pixels, read from "
                                  "its header before --resize_factor (0: no limit)", env=environment.MAX_SIDE)
    max_fps: float = setting(120.0, "refuse a video of more frames per second than this (0: no limit)",
                             env=environment.MAX_FPS)
    max_work: float = setting(0.0, "refuse a job of more than this many megapixel-frames (output frames x "
                                   "source pixels / 1e6; 0: no limit)", env=environment.MAX_WORK,
                            server=10000.0)  # in the app: 2 min of 1080p at 40 fps
    time_limit: float = setting(0.0, "stop a job that runs longer than this many seconds (0: no limit)",
                                env=environment.TIME_LIMIT, server=900.0)
    score: bool = setting(False, "score the result's lip sync with SyncNet, as the Wav2Lip paper measures it: "
                                 "confidence (LSE-C), distance (LSE-D) and the sound's offset, in the stats (55 MB of "
                                 "weights, downloaded once; $LIPSYNC_SYNCNET for a file of your own). Missing weights "
                                 "leave the result unscored, never unmade")
    audio_offset: float | str = setting(
        0.0, "shift the sound against the video by this many milliseconds before syncing (positive: the sound "
             "later; negative: earlier); the model hears it and the output carries it so shifted. 'auto': after the "
             "job, measure the result's offset with SyncNet and, where it is not zero and the confidence is at least "
             "3, write the result again with the sound shifted by it (a remux of the sound; the video is not made "
             "again)", metavar="MS|auto", words=("auto",))
    live_fps: float = setting(0.0, "live mode: frames per second; 0 picks the fastest of 25, 20, 12.5 and 10 that "
                                   "the generator holds here with room to spare (timed when the session starts)",
                              cli=False)
    live_seconds: float = setting(300.0, "live mode: a session ends after this many seconds (0: no limit)",
                                  env=environment.LIVE_SECONDS, cli=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            _normalise(self, f)
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise LipSyncError(f"Unknown {f.name} '{getattr(self, f.name)}'. Choose one of: {', '.join(choices)}.")
        if self.resize_factor < 1:
            raise LipSyncError("--resize_factor must be 1 or more (2 halves the width and height).")
        if not 0.0 <= self.enhance_strength <= 1.0:
            raise LipSyncError(f"--enhance_strength must be between 0 and 1, not {self.enhance_strength:g}.")
        if self.fps <= 0:
            raise LipSyncError("--fps must be a positive number of frames per second, e.g. 25.")
        if self.max_fps and self.fps > self.max_fps:
            raise LipSyncError(f"--fps {self.fps:g} is over the limit of {self.max_fps:g} frames per second; give e.g. "
                               "25, or raise the limit (--max_fps, LIPSYNC_MAX_FPS).")
        if self.face_det_batch_size < 1 or self.wav2lip_batch_size < 0:
            raise LipSyncError("Batch sizes must be 1 or more.")
        negative = [f.name for f in fields(self) if f.name.startswith(("max_", "det_max", "time_limit", "live_"))
                    and getattr(self, f.name) < 0]
        if negative:
            raise LipSyncError(f"Limits must be 0 (no limit) or more: {', '.join('--' + n for n in negative)}.")
        if self.box != NO_BOX and min(self.box) < 0:
            raise LipSyncError(f"The fixed face box {' '.join(map(str, self.box))} is only partly given. Give all "
                               "four numbers (top bottom left right, in pixels), or -1 -1 -1 -1 to detect the face.")

        if not self.auto_offset and abs(float(self.audio_offset)) > MAX_AUDIO_OFFSET_MS:
            raise LipSyncError(f"--audio_offset {float(self.audio_offset):g} ms is beyond the limit of "
                               f"±{MAX_AUDIO_OFFSET_MS:g} ms: an offset is a few frames (40 ms each at 25 fps); give "
                               "one, or 'auto' to measure it.")
        if self.face_point != NO_POINT and min(self.face_point) < 0:
            raise LipSyncError(f"The face point {' '.join(map(str, self.face_point))} is only partly given. Give "
                               "both numbers (x y, in pixels of the first frame), or -1 -1 for the most prominent "
                               "face.")

    @property
    def auto_offset(self) -> bool:
        """--audio_offset auto: the offset measured after the job and fixed in a remux."""
        return self.audio_offset == "auto"

    @property
    def audio_shift_ms(self) -> float:
        """The fixed shift of the sound before syncing, in milliseconds (0 with 'auto'), whole samples at 16 kHz."""
        return 0.0 if self.auto_offset else round(float(self.audio_offset) * 16) / 16

    @property
    def scored(self) -> bool:
        """Whether the job scores its result (asked for, or needed to measure the offset)."""
        return self.score or self.auto_offset

    @property
    def point(self) -> tuple[int, int] | None:
        """The face point (x, y) in first-frame pixels, or None for the most prominent face."""
        return None if self.face_point == NO_POINT else self.face_point

    @property
    def fixed_box(self) -> Box | None:
        """The fixed face box, or None when the face is to be detected."""
        return None if self.box == NO_BOX else Box.from_tblr(*self.box)

    def with_changes(self, **changes: Any) -> "Options":
        """A copy with some fields changed (checked again)."""
        return replace(self, **changes)

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> "Options":
        """Options from a flat mapping, where a rectangle may come as `<name>_top`, `<name>_bottom`, … and a
        point as `<name>_x`, `<name>_y` (`flat_settings`): what the app's controls give, one number per slider.
        Keys that are not settings are an error."""
        values = dict(values)
        flat = flat_settings((cls,))
        for f in fields(cls):
            parts = [s for s in flat.values() if s.field == f.name and s.part is not None]
            if any(p.name in values for p in parts):
                values[f.name] = tuple(values.pop(p.name, p.default) for p in parts)
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise LipSyncError(f"Unknown setting(s): {', '.join(sorted(unknown))}. Known: "
                               f"{', '.join(f.name for f in fields(cls))}.")
        return cls(**values)


@dataclass(frozen=True)
class FlatSetting:
    """One setting as the page's controls and the API name it: a rectangle's side (`pads_top`) or a point's axis
    (`face_point_x`) on its own, everything else as itself."""

    name: str
    field: str  # the Options (or EngineOptions) field it belongs to
    part: int | None  # its index in the field's tuple, or None for a whole field
    default: Any
    help: str


def flat_settings(classes: tuple[type, ...] | None = None) -> dict[str, FlatSetting]:
    """Every setting of `classes` (default: Options and EngineOptions), flattened, by flat name, in order."""
    flat: dict[str, FlatSetting] = {}
    for cls in classes or (Options, EngineOptions):
        for f in fields(cls):
            default, help = field_default(f), f.metadata.get("help", "")
            if not isinstance(default, tuple):
                flat[f.name] = FlatSetting(f.name, f.name, None, default, help)
                continue
            parts, what = (AXES, "coordinate") if len(default) == 2 else (SIDES, "side")
            for i, part in enumerate(parts):
                flat[f"{f.name}_{part}"] = FlatSetting(f"{f.name}_{part}", f.name, i, default[i],
                                                       f"{help} (this parameter: the {part} {what})")
    return flat


def field_default(f: Any) -> Any:
    """A dataclass field's default, made now when it is a factory (a limit read from the environment)."""
    return f.default if f.default is not MISSING else f.default_factory()


def _normalise(options: Options, f) -> None:
    """Coerce a value to its field's type (the app gives floats for sliders, lists for rectangles)."""
    value = getattr(options, f.name)
    default = field_default(f)
    words = f.metadata.get("words") or ()
    if words and isinstance(value, str) and value.strip().lower() in words:
        object.__setattr__(options, f.name, value.strip().lower())
        return
    try:
        if isinstance(default, bool):
            value = bool(value)
        elif isinstance(default, tuple):
            value = tuple(int(-1 if v is None else _finite(v) if isinstance(v, float) else v) for v in value)
            if len(value) != len(default):
                parts = " ".join(f.metadata.get("metavar") or SIDES).lower()
                raise LipSyncError(f"--{f.name} takes {len(default)} numbers: {parts}.")
        elif isinstance(default, int):
            value = int(_finite(value))
        elif isinstance(default, float):
            value = _finite(value)
    except (TypeError, ValueError, OverflowError):
        what = f"{len(default)} finite numbers" if isinstance(default, tuple) else "a finite number"
        what += "".join(f" or '{word}'" for word in words)
        raise LipSyncError(f"The setting {f.name} must be {what}, not {value!r}.") from None
    object.__setattr__(options, f.name, value)


def _finite(value: Any) -> float:
    """A number as a float, refusing NaN and infinity (JSON's 1e400, a 'nan' in a CSV cell) with ValueError."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


@dataclass(frozen=True)
class EngineOptions:
    """What a loaded engine is made of: the checkpoint and the device (fixed for its lifetime)."""

    checkpoint_path: str | None = setting(
        None, "Wav2Lip checkpoint file, or a name (wav2lip_gan, wav2lip). When omitted: $LIPSYNC_CHECKPOINT, then "
              "weights/wav2lip_gan.pth, then a download from the Hugging Face Hub")
    device: str = setting("auto", "where the models run", choices=DEVICES)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise LipSyncError(f"Unknown device '{self.device}'. Choose one of: {', '.join(DEVICES)}.")


def declared(cls: type = Options) -> Iterator[tuple[str, Any, dict]]:
    """(name, default, metadata) of each setting, in declaration order: what the CLI and docs are built from."""
    for f in fields(cls):
        yield f.name, field_default(f), dict(f.metadata)
