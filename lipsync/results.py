"""What a job produced, as data (for code and tests) and as text (for the CLI and the app).

Code reads the fields; only `summary` and `stats_markdown` turn them into sentences, so
the CLI's line and the app's stats never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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

    def summary(self) -> str:
        """One line for the CLI."""
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        return (f"{self.frames} frames ({self.duration:.1f} s at {self.fps:.3f} fps, {self.width}x{self.height}), "
                f"{self.frames_without_face} without a face{self._pauses_clause}; detector {self.detector_label}; "
                f"device {self.device}; "
                f"{f'model backend {self.backend}; ' if self.backend else ''}"
                f"{f'{self.enhance_clause}; ' if self.enhance_clause else ''}"
                f"{stages}")

    def stats_markdown(self) -> str:
        """A few short lines for the app."""
        s = self.seconds
        busy = ", ".join(f"{name} {s[key]:.1f} s" for name, key in
                         (("audio", "audio"), ("faces", "detect"), ("model", "generate"), ("blend", "crop+blend"),
                          ("enhance", "enhance"), ("encoder", "encode"))
                         if key in s)
        return "\n".join([
            f"**{self.frames} frames** · {self.duration:.1f} s at {self.fps:.3f} fps · {self.width}x{self.height}",
            f"- {self.frames_without_face} frames without a face (left unchanged)",
            *([f"- {self.frames_kept_in_pauses} frames in pauses of the speech (own mouth kept)"]
              if self.frames_kept_in_pauses else []),
            f"- Face detector: {self.detector_label}",
            f"- Device: {self.device}" + (f" · model backend: {self.backend}" if self.backend else ""),
            *([f"- {self.enhance_clause[0].upper()}{self.enhance_clause[1:]}"] if self.enhance_clause else []),
            f"- Time: {s.get('total', 0):.1f} s in all (busy: {busy}; the stages overlap)",
        ])
