"""The web app: its handler in-process, over real HTTP with gradio_client, and in headless Chromium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from app_handler import call_handler
from app_server import serving

from lipsync.media.probe import probe_media
from lipsync.media.video import read_frames

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
ARTIFACTS = Path(os.environ.get("LIPSYNC_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))


def test_app_builds_with_named_endpoint(web):
    demo = web.build()
    config = demo.get_config_file()
    assert any(dep.get("api_name") == "lipsync" for dep in config["dependencies"])


def test_the_docs_name_every_parameter_of_the_lipsync_endpoint(web):
    """The docs' list of /lipsync parameter names is the endpoint's own, in its order (no drift)."""
    import re

    info = web.build().get_api_info()
    served = [p["parameter_name"] for p in info["named_endpoints"]["/lipsync"]["parameters"]]
    text = (ROOT / "docs" / "web-app.md").read_text()
    listed = re.search(r"^The names: (.*?)(?: \(|\.\n)", text, flags=re.M | re.S).group(1)
    assert re.findall(r"`(\w+)`", listed) == served


@pytest.mark.slow
def test_handler_runs_end_to_end_on_a_photo(web):
    original, result, download, stats, timeline, sync_strip, score = call_handler(
        web, face=str(EXAMPLES / "astronaut.jpg"), audio=str(EXAMPLES / "speech.wav"))
    info = probe_media(result)
    assert info.has_audio and (info.width, info.height) == (512, 512)
    assert probe_media(original).has_video and download == result
    assert "without a face" in stats and "haar" in stats
    assert timeline.ndim == 3 and timeline.shape[2] == 3 and timeline.dtype.name == "uint8"  # the face timeline
    assert sync_strip is None and score == {"offset": None, "lse_c": None, "lse_d": None, "frames": None,
                                            "reason": "not asked for (score is off)"}  # off on a CPU by default


def test_handler_turns_bad_input_into_gr_error(web, tmp_path):
    import gradio as gr

    with pytest.raises(gr.Error, match="Upload a face"):
        call_handler(web, audio=str(EXAMPLES / "speech.wav"))
    silent = tmp_path / "silence.wav"
    import media
    import numpy as np
    media.write_wav(silent, np.zeros(16000, np.float32))
    with pytest.raises(gr.Error, match="silent"):
        call_handler(web, face=str(EXAMPLES / "astronaut.jpg"), audio=str(silent))
    # a failed job does not break the next one (0.6 s of speech: the job, not its length, is what is tested)
    short = media.write_wav(tmp_path / "short.wav", media.speech_samples(0.6))
    _, result, *_ = call_handler(web, face=str(EXAMPLES / "astronaut.mp4"), audio=str(short))
    assert len(list(read_frames(probe_media(result)))) > 0


def test_preview_draws_the_padded_box(web):
    settings = {"face": str(EXAMPLES / "astronaut.jpg"), "detector": "haar", "device": "cpu"}
    image, note, state = web.jobs.preview(settings, {})
    assert image.shape == (512, 512, 3) and "haar" in note
    again, _, state2 = web.jobs.preview({**settings, "pads_bottom": 60}, state)
    assert state2 is state  # no second detection when only the pads change
    assert (again != image).any()


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    with serving(checkpoint, tmp_path_factory.mktemp("server") / "server.log",
                 tmp_path_factory.mktemp("app_out")) as url:
        yield url


@pytest.mark.slow
def test_http_api_with_gradio_client(server, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False, download_files=str(tmp_path))
    original, result, download, stats, timeline, sync_strip, score = client.predict(
        face=handle_file(str(EXAMPLES / "astronaut.jpg")), audio=handle_file(str(EXAMPLES / "speech.wav")),
        checkpoint_path="custom ($LIPSYNC_CHECKPOINT)", device="cpu", detector="haar", score=True,
        api_name="/lipsync")
    path = result["video"] if isinstance(result, dict) else result
    info = probe_media(path)
    assert info.has_audio and info.has_video and (info.width, info.height) == (512, 512)
    assert len(list(read_frames(info))) == 72  # 3.0 s of speech: 241 mel frames, 72 windows at 25 fps
    assert "72 frames" in stats
    # no SyncNet weights on this server (offline): the video is made, the score's absence said in one sentence
    assert score["lse_c"] is None and "syncnet_v2.model" in score["reason"] and "Sync not scored" in stats


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"), reason="Debian's chromium is not installed")
def test_browser_upload_click_and_watch(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server, wait_until="load", timeout=60_000)
        page.get_by_role("button", name="Sync lips").wait_for(timeout=60_000)
        assert page.locator("input[type=file]").count() >= 2  # the face and the audio drop zones
        # one face drop zone takes a photo as well as a video; then the audio
        page.locator("input[type=file][accept*='image']").first.set_input_files(str(EXAMPLES / "astronaut.jpg"))
        page.locator("input[type=file][accept*='audio']").first.set_input_files(str(EXAMPLES / "speech.wav"))
        page.get_by_text("Green: with padding").wait_for(timeout=60_000)  # the box preview appeared
        page.get_by_role("button", name="Sync lips").click()
        page.get_by_text("without a face").wait_for(timeout=240_000)
        videos = page.locator("video")
        assert videos.count() >= 2  # original and result, side by side
        page.screenshot(path=str(ARTIFACTS / "app_result.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "app_result.png").stat().st_size > 10_000


@pytest.mark.slow
def test_five_clients_at_once_all_answered_and_a_bad_one_hurts_no_other(server, tmp_path):
    """Jobs queue behind the concurrency limit; a failing request does not disturb the others."""
    import threading

    import media
    from gradio_client import Client, handle_file

    speech = media.make_speech(tmp_path / "short.wav", seconds=0.6)
    bad = tmp_path / "bad.mp4"
    bad.write_text("this is not a video\n" * 20)
    answers: dict[str, object] = {}

    def call(name: str, video: Path | None, photo: Path | None) -> None:
        client = Client(server, verbose=False, download_files=str(tmp_path / name))
        try:
            answers[name] = client.predict(
                face=handle_file(str(video or photo)), audio=handle_file(str(speech)),
                checkpoint_path="custom ($LIPSYNC_CHECKPOINT)", device="cpu", detector="haar", api_name="/lipsync")
        except Exception as err:  # the client raises the app's gr.Error as an exception
            answers[name] = err

    jobs = [(f"good{i}", None, EXAMPLES / "astronaut.jpg") for i in range(3)]
    jobs += [("video", EXAMPLES / "astronaut.mp4", None), ("bad", bad, None)]
    threads = [threading.Thread(target=call, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert "not a video, photo or audio file" in str(answers["bad"])
    for name in ("good0", "good1", "good2", "video"):
        assert not isinstance(answers[name], Exception), answers[name]
        result = answers[name][1]
        info = probe_media(result["video"] if isinstance(result, dict) else result)
        assert info.has_video and info.has_audio


def _rss_mb() -> float:
    import re

    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


@pytest.mark.slow
def test_memory_returns_to_its_baseline_after_each_job(web):
    face, audio = str(EXAMPLES / "astronaut.mp4"), str(EXAMPLES / "speech.wav")
    call_handler(web, face=face, audio=audio)  # the first job loads the model and warms the caches
    baseline = _rss_mb()
    growth = []
    for _ in range(3):
        call_handler(web, face=face, audio=audio)
        growth.append(_rss_mb() - baseline)
    print(f"RSS baseline {baseline:.0f} MB, growth after jobs 2-4: {[round(g) for g in growth]} MB")
    assert max(growth) < 150, growth


def test_the_whole_clip_is_scanned_for_faces_before_the_job(web, tmp_path):
    """Before syncing, the page shows where the face is missing (here: a grey card for frames 8-13)."""
    import media

    from lipsync import face_scan

    clip = media.make_video_with_gap(tmp_path / "gap.mp4", frames=25, gap=range(8, 14))
    found = face_scan(str(clip), __import__("lipsync").Options(detector="haar"))
    assert len(found) == 25 and not any(found[8:14]) and all(found[:6]) and all(found[16:])
    strip = web.jobs.scan({"face": str(clip), "detector": "haar", "device": "cpu"})
    assert strip.ndim == 3 and strip.shape[2] == 3 and len({tuple(c) for c in strip[0]}) >= 2  # green and grey


def test_enhance_choice_is_off_on_a_cpu_with_this_clips_cost_beside_it(web):
    config = web.build().get_config_file()
    choice = [c["props"] for c in config["components"] if c.get("props", {}).get("label") == "Enhance the mouth"]
    from lipsync import default_enhance
    from webapp.page import ENHANCE_CHOICES

    # on where a GPU runs it in milliseconds, off on a CPU (seconds a face): whichever this machine is
    assert len(choice) == 1 and choice[0]["value"] == default_enhance()
    assert default_enhance("cpu") == "none"
    assert [v for _, v in ENHANCE_CHOICES] == ["none", "gfpgan"]
    note = web.jobs.enhance_cost({"device": "cpu", "face": str(EXAMPLES / "astronaut.mp4"),
                                    "audio": str(EXAMPLES / "speech.wav")})
    assert note.startswith("On this CPU enhancing would add about") and "min" in note
    assert "choose a face and audio" in web.jobs.enhance_cost({"device": "cpu"})


def test_a_cancelled_streamed_job_leaves_nothing_behind(web, tmp_path):
    """The visitor stops the page's job (Gradio closes its generator: GeneratorExit at a yield): the job stops and
    its folder (segments, the partial MP4) is gone at once, not at the next sweep."""
    import dataclasses
    import threading

    import media

    speech = media.write_wav(tmp_path / "speech.wav", media.speech_samples(4.0))
    from webapp import WebApp
    from webapp.files import app_dir
    from webapp.jobs import CUSTOM

    # a server of its own output folder: the shared one also holds the jobs of tests running in other workers
    own = WebApp(dataclasses.replace(web.config, output_root=tmp_path / "out"))
    settings = {"checkpoint_path": CUSTOM, "device": "cpu", "detector": "haar",
                "face": str(EXAMPLES / "astronaut.jpg"), "audio": str(speech)}
    job = own.jobs.run_streamed(settings)
    next(job)  # the first segment plays: the job is under way
    folders = set(app_dir(own.config.output_root).glob("*"))
    assert len(folders) == 1 and any(next(iter(folders)).rglob("*.ts"))
    job.close()
    assert not next(iter(folders)).exists()
    assert not [t for t in threading.enumerate() if t.name == "lipsync-streamed-job"]


def test_the_score_switch_is_off_on_a_cpu_with_its_cost_beside_it(web):
    """On where it costs little (a GPU; on a CPU when it adds at most a quarter of the job's own time), else off with
    the time it would add; the switch follows the clip."""
    from lipsync import default_score

    config = web.build().get_config_file()
    switch = [c["props"] for c in config["components"] if c.get("props", {}).get("label") == "Score the sync (SyncNet)"]
    assert len(switch) == 1 and switch[0]["value"] == default_score() and default_score("cpu") is False
    settings = {"device": "cpu", "face": str(EXAMPLES / "astronaut.mp4"), "audio": str(EXAMPLES / "speech.wav")}
    value, note = web.jobs.score_cost(settings)
    extra, job = __import__("lipsync").score_seconds(settings["face"], settings["audio"], device="cpu")
    assert value["value"] is (extra <= job / 4)
    assert ("would add about" in note and "the job itself" in note) if extra > job / 4 else "adds about" in note
    value, note = web.jobs.score_cost({**settings, "device": "cuda"})  # a GPU (as on ZeroGPU): on, nothing to say
    assert value["value"] is True and note == ""
    assert "choose a face and audio" in web.jobs.score_cost({"device": "cpu"})[1]


def test_the_offsets_switch_and_number_make_one_setting(web):
    assert web.jobs.options({"audio_offset": 80, "audio_offset_auto": False}).audio_offset == 80
    assert web.jobs.options({"audio_offset": 80, "audio_offset_auto": True}).audio_offset == "auto"
    assert web.jobs.options({"audio_offset": None}).audio_offset == 0


def test_a_scored_job_returns_its_sync_timeline_and_score(web, syncnet_files, monkeypatch):
    """The page's outputs after a scored job: the stats with the paper's figures, the sync timeline (one column per
    frame) and the score as JSON, as /lipsync and the MCP tool return them."""
    monkeypatch.setenv("LIPSYNC_SYNCNET", str(syncnet_files["legacy"]))
    *_, stats, timeline, strip, score = call_handler(web, face=str(EXAMPLES / "astronaut.jpg"),
                                                     audio=str(EXAMPLES / "speech.wav"), score=True, resize_factor=4,
                                                     box_top=20, box_bottom=100, box_left=30, box_right=100)
    assert set(score) == {"offset", "lse_c", "lse_d", "frames", "offset_fixed_ms"} and score["frames"] == 72 - 5
    assert "confidence LSE-C" in stats and "paper 7.781" in stats and "paper 6.386" in stats
    assert strip.shape[2] == 3 and strip.shape[1] == timeline.shape[1]  # both strips: one column per frame


def test_the_endpoints_description_says_what_it_returns(web):
    demo = web.build()
    doc = next(fn for fn in demo.fns.values() if fn.api_name == "lipsync").fn.__doc__
    returns = doc.split("Returns:")[1]
    assert "sync timeline" in returns and "{offset, lse_c, lse_d, frames" in returns and "'reason'" in returns
    assert "audio_offset_auto: true: measure the result's sound offset" in doc
