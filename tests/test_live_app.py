"""The page's live mode and streamed result: the live routes over real HTTP, and both in headless Chromium."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

import app_stream
import media
from app_server import free_port
from lipsync.wire import FRAME, PREFIX, TEXT, read_live_frame

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-quic", "--autoplay-policy=no-user-gesture-required",
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture(scope="module")
def app_module(checkpoint):
    mp = pytest.MonkeyPatch()
    mp.setenv("LIPSYNC_CHECKPOINT", str(checkpoint))
    import app

    yield app
    mp.undo()


def test_an_avatar_without_a_face_gets_no_ticket(app_module, tmp_path):
    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.full((240, 320, 3), 180, np.uint8))
    note, ticket = app_module.LIVE.ticket(str(wall), 0.0, "fp32")
    assert ticket == "" and "No face found" in note
    note, ticket = app_module.LIVE.ticket(str(EXAMPLES / "astronaut.jpg"), 25.0, "fp32")
    assert len(ticket) == 32 and note.startswith("Face found")


def test_the_live_page_says_what_a_zero_gpu_visitor_can_do(app_module, monkeypatch):
    monkeypatch.setattr(app_module.LIVE.host, "zero_gpu", True)
    config = json.dumps(app_module.build_app().get_config_file(), default=str)
    assert "Live mode does not run on this Space" in config and "plays while it is made" in config


@pytest.fixture(scope="module")
def live_server(app_module):
    demo = app_module.build_app()
    demo.queue()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    app_module.LIVE.mount(demo.app)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


class Stream:
    """The page's side of a live stream, read in Python."""

    def __init__(self, url: str, ticket: str) -> None:
        self.response = urllib.request.urlopen(f"{url}live/stream?ticket={ticket}", timeout=60)

    def message(self) -> tuple[int, bytes]:
        size, kind = PREFIX.unpack(self.response.read(PREFIX.size))
        return kind, self.response.read(size)

    def close(self) -> None:
        self.response.close()


def post(url: str, key: str, samples: np.ndarray) -> int:
    request = urllib.request.Request(f"{url}live/audio?key={key}", data=(samples * 32767).astype("<i2").tobytes(),
                                     method="POST")
    try:
        return urllib.request.urlopen(request, timeout=30).status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.slow
def test_live_over_http_frames_with_their_sound_one_session_at_a_time(app_module, live_server):
    _, ticket = app_module.LIVE.ticket(str(EXAMPLES / "astronaut.jpg"), 25.0, "fp32")
    first = Stream(live_server, ticket)
    kind, body = first.message()
    hello = json.loads(body)
    assert kind == TEXT and hello["fps"] == 25 and (hello["width"], hello["height"]) == (512, 512)
    speech = media.speech_samples(1.5)
    for chunk in np.array_split(speech, 15):
        assert post(live_server, hello["key"], chunk) == 204
    frames = []
    while len(frames) < 20:
        kind, body = first.message()
        assert kind == FRAME
        frames.append(read_live_frame(body))
    indices = [f[0] for f in frames]  # a slow host skips frames it cannot make in time, never reorders them
    assert indices[0] == 0 and indices == sorted(set(indices)) and all(len(f[3]) == 640 for f in frames)
    assert any(f[1] > 0 for f in frames)  # the mouth moved for the speech
    second = Stream(live_server, ticket)  # one session at a time: the second is told why
    kind, body = second.message()
    assert kind == TEXT and "already running" in json.loads(body)["error"]
    second.close()
    first.close()  # the page went away: its session ends and frees the slot
    assert post(live_server, "not-a-key", speech[:320]) == 410
    deadline = time.monotonic() + 30
    while True:
        again = Stream(live_server, ticket)
        kind, body = again.message()
        if "error" not in json.loads(body) or time.monotonic() > deadline:
            break
        again.close()
    assert "key" in json.loads(body), body
    again.close()
    stale = Stream(live_server, "0" * 32)
    assert "reload it" in json.loads(stale.message()[1])["error"]


def fake_microphone(path: Path) -> Path:
    """Tone bursts of 0.3 s after 1.7 s of silence, at 48 kHz: what the bench plays, shorter."""
    t = np.arange(8 * 48000) / 48000
    x = np.where(((t - 1.7) % 2.0 < 0.3) & (t > 1.7), 0.3 * np.sin(2 * np.pi * 220 * t), 0.0)
    return media.write_wav(path, x.astype(np.float32), rate=48000)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM, reason="Debian's chromium is not installed")
def test_the_live_page_in_chromium_with_a_fake_microphone(app_module, live_server, tmp_path):
    from playwright.sync_api import sync_playwright

    microphone = fake_microphone(tmp_path / "mic.wav")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=[*BROWSER_ARGS, f"--use-file-for-fake-audio-capture={microphone}%noloop"])
        page = browser.new_context(permissions=["microphone"]).new_page()
        page.goto(live_server + "live", wait_until="load", timeout=60_000)
        page.locator("input[type=file]").first.set_input_files(str(EXAMPLES / "astronaut.jpg"))
        page.get_by_text("Face found").wait_for(timeout=60_000)
        page.locator(".live-start").click()
        page.get_by_text("Live at").wait_for(timeout=60_000)
        page.wait_for_function("() => window.lipsyncLive.events.filter(e => e.k === 'play' && e.w > 0).length > 3",
                               timeout=120_000)
        events = page.evaluate("() => window.lipsyncLive.events")
        page.locator(".live-stop").click()
        page.get_by_text("Stopped.").wait_for(timeout=10_000)
        browser.close()
    plays = [e for e in events if e["k"] == "play"]
    draws = [e for e in events if e["k"] == "draw"]
    assert sum(e["k"] == "sent" for e in events) > 20 and len(plays) > 10 and draws
    assert any(e["loud"] >= 0 for e in plays)  # the bursts came back as sound, with their frames
    offsets = [d["t"] - d["due"] for d in draws]  # +: the sound came first
    # each frame drawn with its sound (ITU-R BT.1359: the sound at most 90 ms early, 185 ms late); a busy host may
    # delay a drawing now and then, so the rule is held by the 95th percentile
    assert min(offsets) > -185 and np.percentile(offsets, 95) < 90, offsets


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM, reason="Debian's chromium is not installed")
def test_the_result_plays_in_chromium_before_the_job_ends(app_module, live_server, tmp_path):
    from playwright.sync_api import sync_playwright

    if not app_stream.STREAM_RESULT:
        pytest.skip("Gradio's streamed video needs ffmpeg and ffprobe on the PATH")
    speech = media.make_speech(tmp_path / "speech.wav", seconds=6.0)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(live_server, wait_until="load", timeout=60_000)
        page.locator("input[type=file][accept*='image']").first.set_input_files(str(EXAMPLES / "astronaut.jpg"))
        page.locator("input[type=file][accept*='audio']").first.set_input_files(str(speech))
        page.get_by_text("Green: with padding").wait_for(timeout=60_000)
        page.get_by_role("button", name="Sync lips").click()
        # the streamed player (hls.js, a blob: source) plays; the job's timing is test_segments' business
        page.wait_for_function("() => Array.from(document.querySelectorAll('video')).some(v => v.currentTime > 0 "
                               "&& v.src.startsWith('blob:'))", timeout=240_000)
        page.get_by_text("without a face").wait_for(timeout=240_000)
        assert page.locator("a[download]").count() >= 1  # the MP4 to download
        browser.close()
