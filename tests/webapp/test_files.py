"""The app's files: it deletes only what it made, wherever the variables point, and downloads within the limit."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from lipsync import LipSyncError
from lipsync.faces import cache
from webapp import files

HOURS_AGO = time.time() - 3 * 3600


def _age(*paths: Path) -> None:
    for path in paths:
        os.utime(path, (HOURS_AGO, HOURS_AGO), follow_symlinks=False)


def _plant(root: Path) -> list[Path]:
    """Someone's files, 3 hours old, where a careless LIPSYNC_OUTPUT_DIR or LIPSYNC_CACHE_DIR points."""
    (root / "Documents").mkdir(parents=True)
    (root / ".ssh").mkdir()
    (root / "Documents" / "notes.txt").write_text("mine")
    (root / ".ssh" / "id_ed25519").write_text("secret")
    (root / "settings.json").write_text("{}")
    planted = [root / "Documents", root / "Documents" / "notes.txt", root / ".ssh", root / ".ssh" / "id_ed25519",
               root / "settings.json"]
    _age(*planted)
    return planted


def test_the_sweep_deletes_only_what_the_app_made(tmp_path, monkeypatch):
    output_root, cache_root = tmp_path / "home", tmp_path / "cache"
    foreign = _plant(output_root) + _plant(cache_root)
    own = files.app_dir(output_root)
    # In the app's own folder: things that look like ours but are not (no mark, a link to someone's folder).
    unmarked = own / ("a" * 32)
    unmarked.mkdir(parents=True)
    (unmarked / "keep.txt").write_text("not the app's")
    link = own / ("b" * 32)
    link.symlink_to(output_root / "Documents", target_is_directory=True)
    (output_root / "Documents" / files.JOB_MARK).touch()  # even with our mark inside, a link is not followed
    foreign += [unmarked, unmarked / "keep.txt", link, output_root / "Documents" / files.JOB_MARK]
    # The app's own: an old finished job, an old running one, a new one.
    old_job, running, new_job = (files.new_job_dir(output_root) for _ in range(3))
    (old_job / "result.mp4").write_bytes(b"x")
    _age(old_job, running, unmarked, link)
    # Gradio's temp folder when it is ours, with an old upload, a new one and an example Gradio keeps.
    gradio = own / files.GRADIO_FOLDER
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    assert files.claim_gradio_temp(output_root) == gradio and os.environ["GRADIO_TEMP_DIR"] == str(gradio)
    for name in ("old", "new", "example"):
        (gradio / name).mkdir()
        (gradio / name / "file.mp4").write_bytes(b"x")
    # Detections: the cache root holds the user's files; our entries live in detections/ inside it.
    monkeypatch.setattr(cache, "CACHE_DIR", cache_root / "detections")
    old_key, new_key = "0" * 32, "1" * 32
    cache.store(old_key, [None], complete=True)
    cache.store(new_key, [None], complete=True)
    (cache_root / "detections" / "notes.json").write_text("{}")  # not named as the cache names its entries
    _age(cache_root / "detections" / f"{old_key}.json", cache_root / "detections" / "notes.json")
    foreign.append(cache_root / "detections" / "notes.json")

    later = time.time() + 1  # the old Gradio upload: its change time is now, so sweep as if an hour passed for it
    removed = files.sweep(output_root, 3600, active={running}, gradio_dir=gradio,
                              kept={str(gradio / "example" / "file.mp4")}, now=later)
    assert cache.prune_detection_cache(3600) == 1

    assert all(p.exists() or p.is_symlink() for p in foreign), [p for p in foreign if not p.exists()]
    assert not old_job.exists() and running.exists() and new_job.exists()
    assert removed == 1  # only the old job: the Gradio files are seconds old by their change time
    assert not (cache_root / "detections" / f"{old_key}.json").exists()
    assert (cache_root / "detections" / f"{new_key}.json").exists()
    hour_later = time.time() + 3601
    files.sweep(output_root, 3600, active={running}, gradio_dir=gradio,
                    kept={str(gradio / "example" / "file.mp4")}, now=hour_later)
    assert not (gradio / "old").exists() and (gradio / "example" / "file.mp4").exists()
    assert (gradio / files.GRADIO_MARK).exists()
    assert all(p.exists() or p.is_symlink() for p in foreign)


def test_gradio_temp_is_ours_only_when_we_chose_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "theirs"))
    assert files.claim_gradio_temp(tmp_path) is None  # the user chose it: never swept
    monkeypatch.delenv("GRADIO_TEMP_DIR")
    folder = files.app_dir(tmp_path) / files.GRADIO_FOLDER
    folder.mkdir(parents=True)
    (folder / "someone.txt").write_text("x")
    assert files.claim_gradio_temp(tmp_path) is None and "GRADIO_TEMP_DIR" not in os.environ
    old = folder / "someone.txt"
    files.sweep(tmp_path, 0, gradio_dir=folder, now=time.time() + 10)
    assert old.exists()  # no mark: not ours


def test_the_app_sweeps_at_start_up(tmp_path, monkeypatch):
    """What a previous run left (an old job folder) goes as the server starts, before any job; the rest stays."""
    foreign = _plant(tmp_path)
    left = files.new_job_dir(tmp_path)
    _age(left)
    stop = threading.Event()
    stop.set()  # one sweep, the one at start-up
    cleaner = files.JobFolders(tmp_path, keep_minutes=60).start_cleaner(set, stop=stop)
    cleaner.join(timeout=60)
    assert not cleaner.is_alive() and not left.exists() and all(p.exists() for p in foreign)


def _serving(size: int, declared: bool = True) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/moved.mp4":
            return httpx.Response(302, headers={"Location": "/clip.mp4"})
        async def chunks():
            for _ in range(size // 65536):
                yield b"\0" * 65536

        headers = {"content-length": str(size)} if declared else {}
        return httpx.Response(200, headers=headers, content=chunks() if not declared else b"\0" * size)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
def test_a_url_input_stops_at_the_upload_limit(tmp_path, declared):
    limit = 5 * 1024 * 1024
    with pytest.raises(files.TooLarge, match=r"larger than the upload limit of 5 MB"):
        asyncio.run(files.capped_download("https://example.com/big.mp4", tmp_path, limit,
                                              transport=_serving(50 * 1024 * 1024, declared)))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing half-downloaded is left
    path = asyncio.run(files.capped_download("https://example.com/moved.mp4", tmp_path, limit,
                                                 transport=_serving(1024 * 1024, declared)))
    assert Path(path).name == "moved.mp4" and Path(path).stat().st_size == 1024 * 1024


def test_the_pages_file_inputs_download_within_the_limit(tmp_path, monkeypatch):
    import gradio as gr

    capped = files.cap_url_downloads(gr.File(label="face"), 1024)
    seen = []

    async def fake(url, cache_dir, limit, transport=None):
        seen.append((url, limit))
        raise files.TooLarge("too big")

    monkeypatch.setattr(files, "capped_download", fake)
    with pytest.raises(gr.Error, match="too big"):
        asyncio.run(capped.async_move_resource_to_block_cache("https://example.com/a.mp4"))
    assert seen == [("https://example.com/a.mp4", 1024)]
    local = tmp_path / "a.txt"
    local.write_text("x")
    assert Path(asyncio.run(capped.async_move_resource_to_block_cache(str(local)))).read_text() == "x"  # Gradio's


def test_upload_sizes_read_as_gradio_reads_them():
    assert files.parse_size("500mb") == 500 * 1024 ** 2 and files.parse_size("5 MB") == 5 * 1024 ** 2
    assert files.parse_size("100") == 100
    with pytest.raises(LipSyncError, match="not a size"):
        files.parse_size("lots")
