"""What a job produced, as data (for code and tests) and as text (for the CLI and the app).

Code reads the fields; only the methods here turn them into sentences (`SyncResult.summary` and
`stats_markdown`, `SyncScore.figures` and `summary`), so the CLI's line and the app's stats never
drift apart. The sync score lives here rather than in lipsync.scoring because a job's result holds
one: the base layer cannot import a stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCORE_FPS = 25  # SyncNet's frame rate: its offsets are in frames of 40 ms
# The Wav2Lip paper's figures for its own model on LRS2 (Table 1, "Wav2Lip"): the yardstick shown beside every score.
PAPER_LSE_D = 6.386
PAPER_LSE_C = 7.781
# The confidence under which a measured offset is not acted on (--audio_offset auto): LatentSync keeps only
# training clips above 3; docs/scoring.md says why, and what random weights give.
CONFIDENT_LSE_C = 3.0


@dataclass(frozen=True, eq=False)
class SyncScore:
    """SyncNet's verdict on one clip, and what produced it (lipsync.scoring.score_video makes it).

    `offset` is in 25 fps frames: positive when the sound comes that many frames before the
    lips that match it (the video is late), negative when after; 0 is in sync. LSE-D is the
    mean embedding distance at the best offset (lower is better; the Wav2Lip paper reports
    6.4 on LRS2), LSE-C the median distance over all offsets minus it (higher is better; 7.8
    there). `framewise[i]` is the confidence of the window of frames i .. i+4 (from i / 25 s).
    """

    offset: int
    lse_d: float
    lse_c: float
    frames: int  # windows scored: one per 25 fps frame, less the five the last window needs
    framewise: np.ndarray
    curve: np.ndarray  # curve[j]: the mean distance at offset vshift - j (j = 0: the sound earliest)
    vshift: int
    crop: str  # 'face' or 'none'
    backend: str  # what ran SyncNet, e.g. 'openvino (OpenVINO 2026.4.1 fp32, 2 threads, cached)'
    detector: str = ""  # with crop='face': the detector and why it was chosen, or where the boxes came from
    frames_without_face: int = 0  # frames whose box was filled in from their neighbours
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage

    @property
    def offset_seconds(self) -> float:
        return self.offset / SCORE_FPS

    def window_times(self) -> np.ndarray:
        """The start time (s) of each framewise window: the x axis of a sync timeline."""
        return np.arange(len(self.framewise)) / SCORE_FPS

    @property
    def crops_label(self) -> str:
        """Which crops were scored, in a few words."""
        if self.crop == "none":
            return "the whole frame (crop none)"
        return f"face crops ({self.detector})" if self.detector else "face crops"

    def figures(self) -> str:
        """The three figures with the paper's beside them: what every front end shows."""
        return (f"confidence LSE-C {self.lse_c:.3f} (paper {PAPER_LSE_C}; higher is better), distance LSE-D "
                f"{self.lse_d:.3f} (paper {PAPER_LSE_D}; lower is better), offset {self.offset:+d} frames "
                f"({self.offset_seconds * 1000:+.0f} ms)")

    def summary(self) -> str:
        return f"{self.figures()} over {self.frames} windows; {self.crops_label}; {self.backend}"

    def brief(self) -> dict[str, Any]:
        """The four numbers a caller needs ({offset, lse_c, lse_d, frames}), as plain JSON values."""
        return {"offset": self.offset, "lse_c": round(self.lse_c, 4), "lse_d": round(self.lse_d, 4),
                "frames": self.frames}

    def to_dict(self) -> dict[str, Any]:
        """Everything, as plain JSON values (the score command's --json)."""
        return {**self.brief(), "offset_ms": round(self.offset_seconds * 1000), "vshift": self.vshift,
                "crop": self.crop, "backend": self.backend, "detector": self.detector,
                "frames_without_face": self.frames_without_face,
                "framewise": [round(float(v), 4) for v in self.framewise],
                "curve": [round(float(v), 4) for v in self.curve],
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "paper": {"lse_c": PAPER_LSE_C, "lse_d": PAPER_LSE_D}}


@dataclass
class SyncResult:
    outfile: str
    frames: int
    frames_without_face: int
    detector: str  # 'haar', 's3fd', or 'fixed box'
    detector_reason: str  # why that detector (shown to the user)
    boxes_from_cache: bool
    device: str
    fps: float
    width: int
    height: int
    seconds: dict[str, float] = field(default_factory=dict)  # busy seconds per stage, and 'total'
    face_frames: list[bool] = field(default_factory=list)  # per output frame: was a face found and synced
    frames_kept_in_pauses: int = 0  # frames left as they were in pauses of the speech (--keep_silent_mouth)
    backend: str = ""  # which library ran the model, and why (lipsync.generator.choice), e.g. 'openvino (… cached)'
    enhance: str = ""  # the mouth restorer that ran (lipsync.restore), e.g. 'gfpgan at strength 0.7, openvino (…)'
    enhance_problem: str = ""  # why an asked-for restorer did not run (one sentence), else ''
    frames_enhanced: int = 0  # frames whose mouth was restored
    frames_not_enhanced: dict[str, int] = field(default_factory=dict)  # faces kept unrestored: 'small', 'turned', …
    # per output frame: the face found (x1, y1, x2, y2, before pads and smoothing) or None; the sync score's crops
    face_boxes: list[tuple[int, int, int, int] | None] = field(default_factory=list, repr=False)
    audio_offset_ms: float = 0.0  # --audio_offset: the sound shifted before syncing (positive: later)
    score: SyncScore | None = None  # SyncNet's score of the result (--score, --audio_offset auto), else None
    score_problem: str = ""  # why an asked-for score is missing (one sentence), else ''
    auto_offset: bool = False  # --audio_offset auto was asked for
    offset_fixed_ms: float = 0.0  # auto: the shift the measured offset led to (a remux of the sound), 0 if none
    offset_problem: str = ""  # auto: why an offset that should have been fixed was not (its remux failed), else ''

    @property
    def duration(self) -> float:
        """Seconds of video written."""
        return self.frames / self.fps if self.fps else 0.0

    @property
    def detector_label(self) -> str:
        cached = " [boxes from cache]" if self.boxes_from_cache else ""
        return f"{self.detector} ({self.detector_reason}){cached}" if self.detector_reason else self.detector + cached

    @property
    def _pauses_clause(self) -> str:
        return f", {self.frames_kept_in_pauses} kept still in pauses" if self.frames_kept_in_pauses else ""

    @property
    def enhance_clause(self) -> str:
        """What the restorer did, in a few words ('' when none was asked for)."""
        if self.enhance_problem:
            return f"mouth not enhanced: {self.enhance_problem}"
        if not self.enhance:
            return ""
        kept = sum(self.frames_not_enhanced.values())
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.frames_not_enhanced.items()))
        return (f"mouth enhanced in {self.frames_enhanced} frames"
                + (f", {kept} kept unenhanced ({why})" if kept else "") + f" ({self.enhance})")

    @property
    def score_clause(self) -> str:
        """The sync score and the offset, in a few words ('' when neither was asked for)."""
        if self.score_problem:
            return f"not scored: {self.score_problem}"
        if self.score is None:
            return ""
        return f"sync {self.score.figures()}, {self.score.crops_label}, {self.score.backend}"

    @property
    def offset_clause(self) -> str:
        """What was done to the sound's timing ('' when nothing was asked)."""
        parts = []
        if self.audio_offset_ms:
            parts.append(f"sound shifted by {self.audio_offset_ms:+.0f} ms before syncing (--audio_offset)")
        if self.auto_offset and self.score is not None:
            if self.offset_fixed_ms:
                parts.append(f"measured offset {self.score.offset:+d} frames fixed: sound shifted by "
                             f"{self.offset_fixed_ms:+.0f} ms in a remux (the figures are from before the fix)")
            elif self.offset_problem:
                parts.append(f"measured offset {self.score.offset:+d} frames not fixed: {self.offset_problem}")
            elif self.score.offset == 0:
                parts.append("measured offset 0: nothing to fix")
            else:
                parts.append(f"measured offset {self.score.offset:+d} frames left as it is: its confidence "
                             f"{self.score.lse_c:.2f} is under {CONFIDENT_LSE_C:g}")
        return "; ".join(parts)

    def summary(self) -> str:
        """One line for the CLI."""
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        return (f"{self.frames} frames ({self.duration:.1f} s at {self.fps:.3f} fps, {self.width}x{self.height}), "
                f"{self.frames_without_face} without a face{self._pauses_clause}; detector {self.detector_label}; "
                f"device {self.device}; "
                f"{f'model backend {self.backend}; ' if self.backend else ''}"
                f"{f'{self.enhance_clause}; ' if self.enhance_clause else ''}"
                f"{f'{self.score_clause}; ' if self.score_clause else ''}"
                f"{f'{self.offset_clause}; ' if self.offset_clause else ''}"
                f"{stages}")

    def stats_markdown(self) -> str:
        """A few short lines for the app."""
        s = self.seconds
        busy = ", ".join(f"{name} {s[key]:.1f} s" for name, key in
                         (("audio", "audio"), ("faces", "detect"), ("model", "generate"), ("blend", "crop+blend"),
                          ("enhance", "enhance"), ("encoder", "encode"))
                         if key in s)
        scored = f", then {s['score']:.1f} s to score the sync" if "score" in s else ""
        return "\n".join([
            f"**{self.frames} frames** · {self.duration:.1f} s at {self.fps:.3f} fps · {self.width}x{self.height}",
            f"- {self.frames_without_face} frames without a face (left unchanged)",
            *([f"- {self.frames_kept_in_pauses} frames in pauses of the speech (own mouth kept)"]
              if self.frames_kept_in_pauses else []),
            f"- Face detector: {self.detector_label}",
            f"- Device: {self.device}" + (f" · model backend: {self.backend}" if self.backend else ""),
            *([f"- {self.enhance_clause[0].upper()}{self.enhance_clause[1:]}"] if self.enhance_clause else []),
            *self._score_lines(),
            f"- Time: {s.get('total', 0):.1f} s in all (busy: {busy}; the stages overlap){scored}",
        ])

    def _score_lines(self) -> list[str]:
        """The stats' lines on the sync: the figures with the paper's beside them, the crops, the offset's fix."""
        lines = []
        if self.score_problem:
            lines.append(f"- Sync not scored: {self.score_problem}")
        elif self.score is not None:
            sc = self.score
            lines += [f"- Sync (SyncNet): confidence LSE-C **{sc.lse_c:.2f}** (paper {PAPER_LSE_C}, higher is better)"
                      f" · distance LSE-D **{sc.lse_d:.2f}** (paper {PAPER_LSE_D}, lower is better) · offset "
                      f"**{sc.offset:+d}** frames ({sc.offset_seconds * 1000:+.0f} ms)",
                      f"- Scored on {sc.crops_label}, {sc.frames} windows, {sc.backend}"]
        if self.offset_clause:
            lines.append(f"- {self.offset_clause[0].upper()}{self.offset_clause[1:]}")
        return lines
