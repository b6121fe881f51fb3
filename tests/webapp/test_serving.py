"""The app as a server, started as a careless operator would start it: its output and cache roots pointed at
folders of someone's files, its output outside the temp folder. It deletes only what it made, runs the README's
examples as written, keeps one visitor from filling the queue, and runs nothing past the queue."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import media
import pytest
from app_server import serving

from lipsync.media.ffmpeg import ffmpeg_exe
from lipsync.media.probe import probe_media
from webapp import files

pytestmark = pytest.mark.slow  # a server in a child process, and whole jobs

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
HOURS_AGO = time.time() - 3 * 3600


def _plant(root: Path) -> list[Path]:
    """Someone's files, 3 hours old: what a careless LIPSYNC_OUTPUT_DIR or LIPSYNC_CACHE_DIR points at."""
    planted = [root / "Documents" / "notes.txt", root / ".ssh" / "id_ed25519", root / "settings.json"]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("someone's")
    paths = planted + [root / "Documents", root / ".ssh"]
    for path in paths:
        os.utime(path, (HOURS_AGO, HOURS_AGO))
    return paths


@pytest.fixture(scope="module")
def site(checkpoint, tmp_path_factory):
    """The server, and its roots: output in `home` (outside its temp folder), cache root in `cache`."""
    base = tmp_path_factory.mktemp("site")
    home, cache, temp = base / "home", base / "cache", base / "temp"
    temp.mkdir()
    foreign = _plant(home) + _plant(cache)
    leftover = files.new_job_dir(home)  # a previous run's result, older than the retention
    os.utime(leftover, (HOURS_AGO, HOURS_AGO))
    (cache / "detections").mkdir()
    old_boxes = cache / "detections" / f"{'0' * 32}.json"
    old_boxes.write_text('{"detections": [], "complete": true}')
    os.utime(old_boxes, (HOURS_AGO, HOURS_AGO))
    env = {"TMPDIR": str(temp), "LIPSYNC_CACHE_DIR": str(cache), "GRADIO_TEMP_DIR": "",
           "LIPSYNC_QUEUE_PER_VISITOR": "2"}
    with serving(checkpoint, base / "server.log", home, env=env) as url:
        yield {"url": url, "home": home, "foreign": foreign, "leftover": leftover, "old_boxes": old_boxes,
               "log": base / "server.log"}


def test_at_start_up_only_the_apps_own_leftovers_go(site):
    assert all(path.exists() for path in site["foreign"]), [p for p in site["foreign"] if not p.exists()]
    assert not site["leftover"].exists() and not site["old_boxes"].exists()
    assert (site["home"] / "lipsync-app" / "gradio" / files.GRADIO_MARK).exists()  # Gradio's files: ours


def test_nothing_runs_past_the_queue(site):
    """A direct POST would skip the queue (its limits and lanes); it is refused, by name or by index."""
    for path, body in (("gradio_api/run/lipsync", {"data": []}), ("gradio_api/run/predict", {"data": [],
                                                                                               "fn_index": 0})):
        request = urllib.request.Request(site["url"] + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 404 and b"join the queue" in refused.value.read()


def _job_args(speech: Path) -> dict:
    """One /lipsync job of the bundled photo and `speech`, on the CPU with the Haar detector (fast to start)."""
    from gradio_client import handle_file

    return dict(face=handle_file(str(ROOT / "examples" / "astronaut.jpg")), audio=handle_file(str(speech)),
                device="cpu", detector="haar", api_name="/lipsync")


def _outcomes(jobs: list) -> tuple[list, list]:
    """Every submitted job's result or the ValidationError it was refused with, and the refusals alone."""
    from gradio_client.exceptions import ValidationError

    outcomes = []
    for job in jobs:
        try:
            outcomes.append(job.result(timeout=300))
        except ValidationError as err:
            outcomes.append(err)
    return outcomes, [o for o in outcomes if isinstance(o, ValidationError)]


def test_one_visitor_cannot_fill_the_queue(site, tmp_path):
    """One client sends six jobs at once: it gets one running and two waiting, the rest are refused with a
    sentence; another visitor is still served."""
    from gradio_client import Client

    speech = media.make_speech(tmp_path / "speech.wav", seconds=6.0)  # jobs long enough for all six to arrive
    args = _job_args(speech)
    flood = Client(site["url"], verbose=False, download_files=str(tmp_path / "a"))
    jobs = [flood.submit(**args) for _ in range(6)]
    other = Client(site["url"], verbose=False, download_files=str(tmp_path / "b")).submit(**args)
    outcomes, refused = _outcomes(jobs)
    assert len(refused) >= 3, outcomes
    assert all("the most one visitor may have here" in str(err) for err in refused)
    assert probe_media(other.result(timeout=300)[1]).has_video


def test_a_script_with_a_new_session_per_request_is_capped_by_address_when_the_owner_asks(checkpoint, tmp_path):
    """LIPSYNC_QUEUE_PER_ADDRESS=2: five clients (five sessions, one address) send a job each at once; one runs,
    two wait, the rest are told why. Off by default (test_one_visitor_cannot_fill_the_queue's server)."""
    from gradio_client import Client

    speech = media.make_speech(tmp_path / "speech.wav", seconds=4.0)
    env = {"LIPSYNC_QUEUE_PER_ADDRESS": "2", "TMPDIR": str(tmp_path)}
    with serving(checkpoint, tmp_path / "server.log", tmp_path / "out", env=env) as url:
        args = _job_args(speech)
        jobs = [Client(url, verbose=False, download_files=str(tmp_path / f"c{i}")).submit(**args) for i in range(5)]
        outcomes, refused = _outcomes(jobs)
    assert len(refused) >= 2 and all("Your network address already has" in str(e) for e in refused), outcomes
    assert len(refused) < 5  # the address's own share still runs


def _blocks(language: str, page: Path = README) -> list[str]:
    """The code blocks of one language in the README or a docs page, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), flags=re.M | re.S)


def _readme_files(folder: Path) -> None:
    """The files the README's examples name, small: clips with a face, photos, speech in several formats."""
    face = media.astronaut_bgr()
    for name in ("photo.jpg", "clips/ben.jpg"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), face)
    for name in ("speaker.mp4", "clips/anna.mp4", "clips/carl.mp4", "a.mp4"):
        media.make_face_video(folder / name, seconds=0.8)
    for name in ("speech.wav", "a.wav", "voice/anna_de.wav", "voice/ben_de.wav", "voice/carl_de.wav"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        media.make_speech(folder / name, seconds=1.0)
    for name in ("speech.mp3", "voice.m4a"):
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(folder / "speech.wav"), str(folder / name)],
                       check=True)
    (folder / "jobs.csv").write_text(_blocks("csv", DOCS / "batch.md")[0])  # the docs' own manifest


def _run(command: list[str] | str, folder: Path, env: dict) -> str:
    proc = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600,
                          shell=isinstance(command, str))
    assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc.stdout


def test_the_readme_examples_run_as_written(site, checkpoint, syncnet_files, tmp_path):
    """Every Python example and command line of the README and of the docs pages they link to (batch, Python API),
    in order: the gradio_client example against the served app (its URL the only change), the others on the files
    they name. Not run here: setting up (run.sh, .ci/run, pip install), pushing to a Space, a Ray cluster, the
    benchmark."""
    _readme_files(tmp_path)
    env = dict(os.environ, LIPSYNC_CHECKPOINT=str(checkpoint), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT),
               GRADIO_TEMP_DIR=str(tmp_path / "downloads"))
    python = shlex.quote(sys.executable)
    engine_api, api = _blocks("python")
    out = _run([sys.executable, "-c", api.replace("http://127.0.0.1:7860/", site["url"])], tmp_path, env)
    result = next(word for word in out.split() if word.endswith(".mp4"))  # print(result, stats): the MP4 first
    assert probe_media(result).has_video and "frames" in out
    (cli,) = [b for b in _blocks("bash") if b.startswith(".venv/bin/python -m lipsync")]
    _run("set -e\n" + cli.replace(".venv/bin/python", python), tmp_path, env)
    assert probe_media(str(tmp_path / "result.mp4")).has_video and probe_media(str(tmp_path / "talking.mp4")).has_audio
    out = _run([sys.executable, "-c", engine_api], tmp_path, env)
    assert probe_media(str(tmp_path / "out.mp4")).has_video and "frames" in out

    (batch_cli,) = [b for b in _blocks("bash", DOCS / "batch.md") if b.startswith("python -m lipsync batch jobs.csv")]
    _run("set -e\n" + batch_cli.replace("python -m", f"{python} -m"), tmp_path, env)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["anna_de.mp4", "ben_de.mp4", "carl_de.mp4"]
    assert json.loads((tmp_path / "results.json").read_text())["totals"]["skipped"] == 3  # the rerun skipped all
    (batch_api,) = _blocks("python", DOCS / "batch.md")
    out = _run([sys.executable, "-c", batch_api], tmp_path, env)
    assert "1 done" in out and (tmp_path / "out" / "a.mp4").exists() and (tmp_path / "report.json").exists()

    same_as_readme, score_api, live_api = _blocks("python", DOCS / "python-api.md")
    assert same_as_readme == engine_api
    out = _run([sys.executable, "-c", score_api], tmp_path, {**env, "LIPSYNC_SYNCNET": str(syncnet_files["legacy"])})
    assert "confidence LSE-C" in out and len(out.splitlines()[-1].split()) == 4, out  # random weights: any numbers
    out = _run([sys.executable, "-c", live_api], tmp_path, env)  # a live session: chunks in, frames out
    assert int(out.split()[0]) >= 15 and "0.04 s of audio each" in out, out
    shutil.rmtree(tmp_path / "downloads", ignore_errors=True)
