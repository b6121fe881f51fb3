"""Every environment variable lipsync reads, declared once, each read through one parser with one clear error.

A variable is declared here with its kind, its default and what it is for; code reads it
with `VARIABLE.read()`, at the moment it needs the value (so a server or a test can set it
late). Nothing else in the package reads `os.environ`: tests/test_layout.py checks that.
The web app declares its own variables the same way (webapp/config.py), with this class.
The job limits (LIPSYNC_MAX_SECONDS & co.) are declared here too, and named by their
settings in lipsync.options.

    python -c "import lipsync.environment as e; print(e.describe())"   # the table docs/configuration.md holds
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LipSyncError

KINDS = ("number", "integer", "flag", "text", "path")
TRUE_WORDS = ("1", "true", "yes", "y", "on", "t")
FALSE_WORDS = ("0", "false", "no", "n", "off", "f")


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, its kind ('number', 'integer', 'flag', 'text', 'path'), its default
    (returned when it is unset or empty) and its help (the docs' table)."""

    name: str
    kind: str
    default: Any
    help: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS or not self.help.strip():
            raise ValueError(f"{self.name}: a kind from {KINDS} and a help text are needed")

    def read(self, default: Any = None) -> Any:
        """The value now, parsed; `default` overrides the declared one (a default that depends on the host).
        A malformed value is a LipSyncError naming the variable and what it takes."""
        raw = os.environ.get(self.name)
        fallback = self.default if default is None else default
        if raw is None or raw.strip() == "":
            return fallback
        raw = raw.strip()
        try:
            return _PARSERS[self.kind](raw)
        except (ValueError, OverflowError):
            raise LipSyncError(f"The environment variable {self.name}={raw!r} is not {_WHAT[self.kind]}. Unset it "
                               f"or give {_WHAT[self.kind]}.") from None

    def is_set(self) -> bool:
        return bool(os.environ.get(self.name, "").strip())


def _number(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value


def _integer(raw: str) -> int:
    value = _number(raw)
    if value != int(value):
        raise ValueError(raw)
    return int(value)


def parse_bool(value: Any) -> bool:
    """True or False from text ('yes', 'off', '1', …): the one reading of a yes or no written as text, for an
    environment variable, a flag and a manifest's cell alike; ValueError otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(f"expected true or false, not {value!r}")


_PARSERS = {"number": _number, "integer": _integer, "flag": parse_bool, "text": str, "path": Path}
_WHAT = {"number": "a finite number", "integer": "a whole number", "flag": "1 or 0 (true or false)",
         "text": "text", "path": "a path"}

VARIABLES: dict[str, Variable] = {}


def declare(name: str, kind: str, default: Any, help: str) -> Variable:
    """Declare a variable (once per name, in the whole project: a second declaration is an error)."""
    if name in VARIABLES:
        raise ValueError(f"{name} is declared twice")
    VARIABLES[name] = variable = Variable(name, kind, default, help)
    return variable


def env_number(name: str, default: float) -> float:
    """A number from the environment variable `name`, or `default` (its type kept), through the one parser: kept in
    the public API for scripts that used it; the package itself reads only the variables declared here."""
    kind = "integer" if isinstance(default, int) and not isinstance(default, bool) else "number"
    return Variable(name, kind, default, "read by a caller of lipsync.env_number").read()


def describe() -> str:
    """The variables as a Markdown table (name, default, what it does)."""
    rows = ["| variable | default | what it does |", "|---|---|---|"]
    for v in VARIABLES.values():
        rows.append(f"| `{v.name}` | {'' if v.default in (None, '') else f'`{v.default}`'} | {v.help} |")
    return "\n".join(rows)


# --- files: weights, caches ---
CHECKPOINT = declare("LIPSYNC_CHECKPOINT", "path", None,
                     "the Wav2Lip checkpoint used when none is named (a file, taken as it is)")
WEIGHTS_DIR = declare("LIPSYNC_WEIGHTS_DIR", "path", None,
                      "where checkpoints are looked for and downloaded to (default: weights/ in a checkout, "
                      "~/.cache/lipsync/weights for an installed package)")
GFPGAN = declare("LIPSYNC_GFPGAN", "path", None, "a GFPGAN v1.4 file of your own for --enhance gfpgan, used as it is")
SYNCNET = declare("LIPSYNC_SYNCNET", "path", None, "a SyncNet file of your own for the sync score, used as it is")
CACHE_DIR = declare("LIPSYNC_CACHE_DIR", "path", None,
                    "lipsync's cache root (default ~/.cache/lipsync): detections/ and models/ inside it")
MODEL_CACHE = declare("LIPSYNC_MODEL_CACHE", "path", None,
                      "where converted OpenVINO models are kept (default: models/ in the cache root)")
OFFLINE = declare("HF_HUB_OFFLINE", "flag", False, "never download weights (the Hugging Face Hub's own switch)")

# --- running ---
FFMPEG_TIMEOUT = declare("LIPSYNC_FFMPEG_TIMEOUT", "number", 900.0,
                         "seconds ffmpeg may go without moving a byte before it is stopped")
FRAME_BUDGET_MB = declare("LIPSYNC_FRAME_BUDGET_MB", "number", 256.0, "MB of decoded frames a job holds per batch")
THREADS = declare("OMP_NUM_THREADS", "integer", 0, "CPU threads a job's models use (0: one per physical core)")
LIVE_SESSIONS = declare("LIPSYNC_LIVE_SESSIONS", "integer", 1, "live sessions an engine runs at once")
DEBUG = declare("LIPSYNC_DEBUG", "flag", False, "show the traceback of an unexpected error (CLI, batch)")

# --- job limits (lipsync.options names each as a setting's `env`) ---
MAX_SECONDS = declare("LIPSYNC_MAX_SECONDS", "number", None, "--max_seconds: the longest audio a job takes")
MAX_SIDE = declare("LIPSYNC_MAX_SIDE", "integer", None, "--max_side: the largest frame side a job takes")
MAX_FPS = declare("LIPSYNC_MAX_FPS", "number", None, "--max_fps: the highest frame rate a job takes")
MAX_WORK = declare("LIPSYNC_MAX_WORK", "number", None, "--max_work: the most megapixel-frames a job may cost")
TIME_LIMIT = declare("LIPSYNC_TIME_LIMIT", "number", None, "--time_limit: seconds a job may run")
LIVE_SECONDS = declare("LIPSYNC_LIVE_SECONDS", "number", None, "seconds a live session may run")
