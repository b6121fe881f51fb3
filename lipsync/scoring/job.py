"""A sync job's own result scored: the job's face track reused at 25 fps, and the offset fixed (--audio_offset auto).

Scoring a job's result needs no detector. The job found the face in every frame it synced, and
its output shows each source frame where the source had it (only the mouth is repainted), so
the result's 25 fps frames are cropped around the job's own boxes (the detector's, before pads
and smoothing: what a detector run on the output would give), each 25 fps frame taking the box of
the output frame nearest in time. That saves the detector's pass and a decode of the output;
`score_video`'s detector path stays for any other video (`LipSync.score`, the score command).

With --audio_offset auto the measured offset is then acted on, where it is not zero and the
confidence is at least CONFIDENT_LSE_C: the result's sound is replaced by the job's audio shifted
by the offset (positive offsets mean the sound comes early, so it is delayed), the picture
copied as it is (lipsync.media.video.remux_shifted_sound). The score describes the result before
that fix; scoring again would cost as much once more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import LipSyncError
from ..media.video import remux_shifted_sound
from ..results import CONFIDENT_LSE_C, SCORE_FPS, SyncResult
from .score import score_video
from .windows import Embedder, Progress

Box4 = tuple[int, int, int, int]


def boxes_at_25(face_boxes: Sequence[Box4 | None], fps: float) -> list[Box4 | None]:
    """One box per 25 fps frame of an output of `fps` (ffmpeg's -r 25 shows, at 25 fps frame k, about the output
    frame nearest k / 25 s; one frame off either way moves a box by one frame's motion, which the 13-frame median
    of the crops smooths out)."""
    count = len(face_boxes)
    if count == 0 or fps <= 0:
        return []
    frames = math.ceil(count * SCORE_FPS / fps - 1e-9)
    return [face_boxes[min(count - 1, int(k * fps / SCORE_FPS + 0.5))] for k in range(frames)]


def score_result(result: SyncResult, audio: str, network: Embedder, progress: Progress | None = None) -> None:
    """Score `result` (its MP4 against its own sound, as a viewer hears it) into `result.score`; a score that cannot
    be made leaves its one sentence in `result.score_problem`, and the video as it is. Then, with
    --audio_offset auto, fix the offset it measured (`audio` is the job's sound file)."""
    boxes = boxes_at_25(result.face_boxes, result.fps) if result.face_boxes else None
    try:
        result.score = score_video(result.outfile, network=network, progress=progress, boxes=boxes,
                                   boxes_from=f"the job's own face track, {result.detector}")
    except LipSyncError as err:
        result.score_problem = str(err)
        return
    result.seconds["score"] = result.score.seconds.get("total", 0.0)
    if result.auto_offset:
        fix_offset(result, audio)


def fix_offset(result: SyncResult, audio: str) -> None:
    """--audio_offset auto: where the measured offset is not zero and the confidence is at least CONFIDENT_LSE_C,
    write the result again with its sound shifted by that offset (no second synthesis)."""
    score = result.score
    if score is None or score.offset == 0 or score.lse_c < CONFIDENT_LSE_C:
        return
    shift_ms = score.offset * 1000 / SCORE_FPS  # positive: the sound came early, so it is delayed
    try:
        remux_shifted_sound(result.outfile, audio, shift_ms / 1000)
    except LipSyncError as err:
        result.offset_problem = str(err)  # the score stands; only the fix is missing
        return
    result.offset_fixed_ms = shift_ms
