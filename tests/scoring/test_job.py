"""A sync job's result scored (lipsync.scoring.job, LipSync.score, the results' text, the sync timeline, the cost):
on the job's own face track, with random SyncNet weights in the release layout (the session's `syncnet_files`)."""

from __future__ import annotations

from pathlib import Path

import media
import numpy as np
import pytest

from lipsync.engine import gpu_seconds, score_seconds
from lipsync.errors import LipSyncError
from lipsync.faces.detectors import get_detector
from lipsync.media.probe import probe_media
from lipsync.options import Options
from lipsync.results import PAPER_LSE_C, PAPER_LSE_D, SyncResult, SyncScore
from lipsync.scoring import score_video
from lipsync.scoring.backends import shared_syncnet
from lipsync.scoring.inputs import face_boxes
from lipsync.scoring.job import boxes_at_25
from lipsync.scoring.timeline import STRONG_RGB, UNSCORED, WEAK, sync_timeline
from lipsync.weights import locate as weights

FAST = dict(box=(50, 200, 60, 200), resize_factor=2)  # the photo at 256x256 with a fixed box: no detection


@pytest.fixture
def syncnet(syncnet_files, monkeypatch) -> str:
    """The random SyncNet as the user's own file ($LIPSYNC_SYNCNET)."""
    monkeypatch.setenv("LIPSYNC_SYNCNET", str(syncnet_files["legacy"]))
    return str(syncnet_files["legacy"])


@pytest.fixture(scope="module")
def clip_30fps(tmp_path_factory) -> tuple[Path, Path]:
    """A moving face at 30 fps (so 25 fps frames fall between the output's) and 1.6 s of speech."""
    folder = tmp_path_factory.mktemp("scored")
    speech = media.write_wav(folder / "speech.wav", media.speech_samples(1.6, seed=9))
    return media.make_face_video(folder / "face.mp4", seconds=1.6, fps=30), speech


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of two (n, 4) x1 y1 x2 y2 arrays, row by row."""
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731 (a one-line helper, read in place)
    return w * h / (area(a) + area(b) - w * h)


@pytest.mark.slow  # a job with detection at 30 fps, its score, and the detector again over the source (about 8 s)
def test_a_job_scores_its_result_on_its_own_face_track(engine, syncnet, clip_30fps, tmp_path, monkeypatch):
    """--score: the result is scored against its own sound, cropped around the job's boxes (no detector runs);
    those boxes, taken at 25 fps, are where the detector finds the face in the source at 25 fps."""
    face, speech = clip_30fps
    import lipsync.faces.detectors

    def no_detector(*args, **kwargs):
        raise AssertionError("the score detected faces again")

    monkeypatch.setattr(lipsync.faces.detectors, "get_detector", no_detector)  # what score_video would call
    stages = []
    result = engine.sync(str(face), str(speech), str(tmp_path / "out.mp4"), Options(score=True, detector="blazeface"),
                         progress=lambda stage, done, total: stages.append(stage))
    score = result.score
    assert score is not None and not result.score_problem and "Scoring lip sync" in stages
    assert score.detector == "the job's own face track, blazeface" and score.crop == "face"
    assert score.frames == round(result.duration * 25) - 5 and len(score.framewise) == score.frames
    assert result.seconds["score"] > 0 and np.isfinite([score.lse_c, score.lse_d]).all()
    monkeypatch.undo()
    ours = np.array(boxes_at_25(result.face_boxes, result.fps), np.float64)
    found, _ = face_boxes(probe_media(str(face)), get_detector("blazeface", "cpu").detector)
    n = min(len(ours), len(found))
    unscaled = np.array(result.face_boxes[:n], np.float64)  # output frame k for 25 fps frame k: the wrong time
    late = slice(n // 2, n)  # where the wrong time has drifted by 3 frames or more
    overlap, wrong = iou(ours[late], found[late]), iou(unscaled[late], found[late])
    assert n >= score.frames and overlap.mean() > 0.85 and overlap.mean() > wrong.mean() + 0.05, \
        (overlap.mean(), wrong.mean())


def test_a_scored_photo_job_has_its_score_in_its_result(engine, syncnet, face_photo, speech, tmp_path):
    """The quick version: a photo with a fixed box, scored on that box (one box for every frame)."""
    result = engine.sync(str(face_photo), str(speech), str(tmp_path / "out.mp4"), Options(score=True, **FAST))
    score = result.score
    assert score is not None and score.detector == "the job's own face track, fixed box" and not result.score_problem
    assert score.frames == result.frames - 5 and score.frames_without_face == 0 and "openvino" in score.backend
    assert "LSE-C" in result.stats_markdown() and f"paper {PAPER_LSE_D}" in result.stats_markdown()


def test_missing_weights_leave_the_video_made_and_one_sentence(engine, face_photo, speech, tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "no weights")
    monkeypatch.delenv("LIPSYNC_SYNCNET", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out.mp4"
    result = engine.sync(str(face_photo), str(speech), str(out), Options(score=True, **FAST))
    assert out.is_file() and probe_media(str(out)).has_video and result.score is None
    assert "syncnet_v2.model" in result.score_problem and "downloads are off" in result.score_problem
    assert f"- Sync not scored: {result.score_problem}" in result.stats_markdown()
    assert f"not scored: {result.score_problem}" in result.summary()


def test_a_job_stopped_while_its_result_is_scored_leaves_no_output(engine, syncnet, face_photo, speech, tmp_path):
    def stop(stage, done, total):
        if stage == "Scoring lip sync":
            raise KeyboardInterrupt

    out = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        engine.sync(str(face_photo), str(speech), str(out), Options(score=True, **FAST),
                    progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_the_time_limit_leaves_the_video_unscored(engine, syncnet, face_photo, speech, tmp_path, monkeypatch):
    """What is left of --time_limit after the job bounds its score: over it, the video stays, without a score."""
    out = tmp_path / "out.mp4"
    from lipsync.media import limits

    real = limits.with_deadline
    monkeypatch.setattr(limits, "with_deadline",  # the job's own deadline as given, the score's already spent
                        lambda progress, seconds, what="The job", **kw: real(progress, seconds if what == "The job"
                                                                              else 1e-9, what, **kw))
    result = engine.sync(str(face_photo), str(speech), str(out), Options(score=True, **FAST,
                                                                         time_limit=600))
    assert out.is_file() and result.score is None
    assert result.score_problem.startswith("The sync score ran longer than the limit")


def test_engine_score_is_score_video_on_the_engines_device(engine, syncnet, clip_30fps):
    face, speech = clip_30fps
    got = engine.score(str(face), str(speech), crop="none", vshift=5)
    want = score_video(str(face), str(speech), crop="none", vshift=5, network=shared_syncnet(None, "cpu"))
    assert (got.offset, got.lse_d, got.lse_c, got.frames) == (want.offset, want.lse_d, want.lse_c, want.frames)
    assert shared_syncnet(None, "cpu") is shared_syncnet(syncnet, "cpu")  # loaded once, whichever way it is named
    with pytest.raises(LipSyncError, match="File not found"):
        engine.score(str(face) + ".missing")


def test_boxes_at_25_take_the_output_frame_nearest_in_time():
    boxes = [(i, 0, i + 10, 10) for i in range(30)]  # one second at 30 fps
    at_25 = boxes_at_25(boxes, 30.0)
    assert len(at_25) == 25 and [b[0] for b in at_25[:7]] == [0, 1, 2, 4, 5, 6, 7]  # k * 30 / 25, rounded
    assert boxes_at_25(boxes[:25], 25.0) == boxes[:25] and len(boxes_at_25(boxes, 50.0)) == 15
    assert boxes_at_25([None, (0, 0, 4, 4)], 25.0) == [None, (0, 0, 4, 4)] and boxes_at_25([], 25.0) == []


def test_sync_timeline_draws_weak_red_and_strong_green_per_output_frame():
    framewise = np.r_[np.full(20, -1.0), np.full(20, 9.0)]  # 45 frames at 25 fps: weak, then strong
    strip = sync_timeline(framewise, 45, 25.0)
    assert strip.shape == (24, 225, 3) and strip.dtype == np.uint8  # 45 columns widened 5x to reach 200 px
    assert (strip[0, 0] == WEAK).all() and (strip[0, -1] == STRONG_RGB).all()
    assert (sync_timeline([], 10, 25.0)[0, 0] == UNSCORED).all()
    assert sync_timeline(np.zeros(5000), 6000, 30.0).shape[1] == 800  # long clips share columns


def score_of(offset: int = 1, lse_c: float = 6.5, lse_d: float = 7.0) -> SyncScore:
    return SyncScore(offset, lse_d, lse_c, 60, np.full(60, lse_c), np.zeros(31), 15, "face", "openvino",
                     "the job's own face track, blazeface")


def test_the_result_says_the_score_beside_the_papers_figures():
    result = SyncResult("out.mp4", 65, 0, "blazeface", "", False, "cpu", 25.0, 320, 240,
                        seconds={"total": 3.0, "score": 1.0}, score=score_of())
    stats, line = result.stats_markdown(), result.summary()
    assert (f"confidence LSE-C **6.50** (paper {PAPER_LSE_C}, higher is better) · distance LSE-D **7.00** (paper "
            f"{PAPER_LSE_D}, lower is better) · offset **+1** frames (+40 ms)") in stats
    assert "Scored on face crops (the job's own face track, blazeface), 60 windows, openvino" in stats
    assert "the stages overlap), then 1.0 s to score the sync" in stats
    assert "LSE-C 6.500 (paper 7.781; higher is better)" in line
    assert score_of().brief() == {"offset": 1, "lse_c": 6.5, "lse_d": 7.0, "frames": 60}
    assert score_of().to_dict()["framewise"][:2] == [6.5, 6.5] and score_of().to_dict()["offset_ms"] == 40


def test_scoring_is_in_the_gpu_request_and_its_cost_is_weighed(face_photo, speech):
    plain = gpu_seconds(str(face_photo), str(speech), Options())
    assert gpu_seconds(str(face_photo), str(speech), Options(score=True)) > plain
    assert gpu_seconds(str(face_photo), str(speech), Options(audio_offset="auto")) > plain
    extra, job = score_seconds(str(face_photo), str(speech), Options(), "cpu")
    assert 0 < extra and 0 < job
    gpu_extra, _ = score_seconds(str(face_photo), str(speech), Options(), "cuda")
    assert gpu_extra < extra
