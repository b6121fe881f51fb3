"""Pipeline mechanics: detection cache, bounded prefetch, memory-capped batches, stage timings."""

from __future__ import annotations

import threading

import pytest

from lipsync import Options
from lipsync.faces import cache
from lipsync.runtime.concurrency import prefetch
from lipsync.runtime.devices import frame_budget_bytes, model_batch


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    """A detection cache of this test's own: other tests' runs on the same clips must not pre-fill it."""
    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path / "detections")
    return tmp_path / "detections"


@pytest.mark.slow
def test_second_run_reuses_detections(engine, face_video, speech, tmp_path, empty_cache):
    first = engine.sync(str(face_video), str(speech), str(tmp_path / "a.mp4"), Options(detector="haar"))
    second = engine.sync(str(face_video), str(speech), str(tmp_path / "b.mp4"),
                         Options(detector="haar", pads=(0, 30, 0, 0), blend="feather"))
    assert not first.boxes_from_cache and second.boxes_from_cache and "[boxes from cache]" in second.summary()
    assert "detect" in first.seconds and "detect" not in second.seconds
    assert second.frames == first.frames
    assert len(list(empty_cache.glob("*.json"))) == 1


@pytest.mark.slow
def test_other_detection_settings_do_not_hit_the_cache(engine, face_video, speech, tmp_path, empty_cache):
    engine.sync(str(face_video), str(speech), str(tmp_path / "a.mp4"), Options(detector="haar"))
    resized = engine.sync(str(face_video), str(speech), str(tmp_path / "b.mp4"), Options(detector="haar",
                                                                                         resize_factor=2))
    assert not resized.boxes_from_cache


def test_prefetch_keeps_order_and_propagates_errors():
    assert list(prefetch(iter(range(50)), 4)) == list(range(50))

    def broken():
        yield 1
        raise ValueError("decoder died")

    with pytest.raises(ValueError, match="decoder died"):
        list(prefetch(broken(), 2))


def test_prefetch_stops_its_thread_when_abandoned():
    closed = threading.Event()

    def endless():
        try:
            while True:
                yield 0
        finally:
            closed.set()

    before = set(threading.enumerate())
    stream = prefetch(endless(), 2)
    next(stream)
    (reader,) = set(threading.enumerate()) - before
    stream.close()  # joins the reader before it returns: no waiting here
    assert closed.is_set() and not reader.is_alive()


def test_batches_are_capped_by_the_frame_memory_budget():
    assert model_batch(128, 240, 320) == 128
    uhd = model_batch(128, 2160, 3840)
    assert uhd * 2160 * 3840 * 3 <= frame_budget_bytes() and uhd >= 1


def test_result_reports_stage_timings(engine, face_photo, speech, tmp_path):
    result = engine.sync(str(face_photo), str(speech), str(tmp_path / "a.mp4"), Options(detector="haar"))
    for stage in ("audio", "generate", "crop+blend", "encode", "total"):
        assert stage in result.seconds
