"""Hugging Face Spaces and agents: the page on ZeroGPU (with a stand-in `spaces`), and the MCP tool on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import media
import pytest
from app_server import serving

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
STAND_INS = Path(__file__).resolve().parents[1] / "support" / "stand_ins"

pytestmark = pytest.mark.slow  # each test starts the app in a child process or a server

ZERO_GPU_SCRIPT = """
import json, sys
import spaces
from webapp import AppConfig, WebApp
from webapp.jobs import CUSTOM
web = WebApp(AppConfig.from_environment(), spaces)
demo = web.build()
job = next(f for f in demo.fns.values() if f.api_name == "lipsync")
defaults = {n: p.default for n, p in __import__("inspect").signature(job.fn).parameters.items() if n != "progress"}
names = list(defaults)
out = {}
for name, audio in (("short", sys.argv[1]), ("long", sys.argv[2])):
    values = dict(defaults, face=sys.argv[3], audio=audio, checkpoint_path=CUSTOM, detector="haar")
    out[name + "_problem"] = web.jobs.problem(values)
    if out[name + "_problem"] is None:
        job.fn(*[values[n] for n in names], None)
out["calls"] = spaces.calls
out["zero_gpu"] = web.config.zero_gpu
print("RESULT " + json.dumps(out))
"""


def test_on_zero_gpu_the_request_follows_the_clip_and_long_jobs_are_refused_first(checkpoint, tmp_path):
    short = media.make_speech(tmp_path / "short.wav", seconds=1.0)
    long = media.write_wav(tmp_path / "long.wav", media.speech_samples(400.0))  # needs ~180 s of GPU: over 110
    env = dict(os.environ, PYTHONPATH=f"{STAND_INS}{os.pathsep}{ROOT}", SPACES_ZERO_GPU="true",
               LIPSYNC_CHECKPOINT=str(checkpoint), HF_HUB_OFFLINE="1", LIPSYNC_OUTPUT_DIR=str(tmp_path / "out"),
               FAKE_ZEROGPU_QUOTA_S="120")
    face = str(EXAMPLES / "astronaut.mp4")
    proc = subprocess.run([sys.executable, "-c", ZERO_GPU_SCRIPT, str(short), str(long), face], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["zero_gpu"] and result["short_problem"] is None
    assert result["long_problem"][0] == "audio" and "GPU time" in result["long_problem"][1]
    (call,) = result["calls"]  # only the short job asked for a GPU
    assert 10 < call["duration"] < 60, call  # 1 s of 320x240 video: far under a visitor's quota, not a fixed 180 s


@pytest.fixture(scope="module")
def mcp_server(checkpoint, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("mcp") / "server.log"
    with serving(checkpoint, log_path, tmp_path_factory.mktemp("mcp_out"), "--mcp") as url:
        yield url, log_path


def _data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def test_the_mcp_tool_is_listed_and_syncs_a_clip(mcp_server, tmp_path):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    url, _ = mcp_server
    speech = media.make_speech(tmp_path / "speech.wav", seconds=0.6)

    async def session():
        async with streamable_http_client(url + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as client:
                await client.initialize()
                tools = (await client.list_tools()).tools
                tool = next(t for t in tools if t.name == "lipsync")
                answer = await client.call_tool("lipsync", {
                    "face": _data_url(EXAMPLES / "astronaut.jpg", "image/jpeg"),
                    "audio": _data_url(speech, "audio/wav"),
                    "checkpoint_path": "custom ($LIPSYNC_CHECKPOINT)", "device": "cpu", "detector": "haar",
                    "score": True})
                return tools, tool, answer

    tools, tool, answer = asyncio.run(session())
    assert "face" in tool.inputSchema["properties"] and "lip" in (tool.description or "").lower()
    assert [t.name for t in tools].count("lipsync") == 1
    text = " ".join(getattr(c, "text", "") for c in answer.content)
    assert not answer.isError, text
    assert ".mp4" in text and "frames" in text
    assert "lse_c" in text and "syncnet_v2.model" in text  # the score's JSON: no weights on this server, the reason


def test_the_server_starts_without_warnings(mcp_server):
    _, log_path = mcp_server
    lines = [line for line in log_path.read_text().splitlines() if "warn" in line.lower() or "deprecat" in line.lower()]
    assert lines == [], lines


ZERO_GPU_STREAM_SCRIPT = """
import inspect, json, sys
import spaces
from webapp import AppConfig, WebApp
from webapp.jobs import CUSTOM
demo = WebApp(AppConfig.from_environment(), spaces).build()
job = next((f for f in demo.fns.values() if f.name == "run_job_streamed"), None)
if job is None:
    print("RESULT " + json.dumps({"generator": False}))
    sys.exit(0)
values = {n: p.default for n, p in inspect.signature(job.fn).parameters.items() if n != "progress"}
values.update(face=sys.argv[2], audio=sys.argv[1], checkpoint_path=CUSTOM, detector="haar")
outputs = list(job.fn(*values.values(), None))
print("RESULT " + json.dumps({"calls": spaces.calls, "generator": inspect.isgeneratorfunction(job.fn),
                              "segments": [o[1] for o in outputs if isinstance(o[1], str)],
                              "final": outputs[-1][2]}))
"""


def test_on_zero_gpu_the_streamed_result_is_one_gpu_call(checkpoint, tmp_path):
    speech = media.make_speech(tmp_path / "speech.wav", seconds=4.0)
    env = dict(os.environ, PYTHONPATH=f"{STAND_INS}{os.pathsep}{ROOT}", SPACES_ZERO_GPU="true",
               LIPSYNC_CHECKPOINT=str(checkpoint), HF_HUB_OFFLINE="1", LIPSYNC_OUTPUT_DIR=str(tmp_path / "out"),
               FAKE_ZEROGPU_QUOTA_S="120", LIPSYNC_STREAM_RESULT="1", PATH=os.environ["PATH"])
    proc = subprocess.run([sys.executable, "-c", ZERO_GPU_STREAM_SCRIPT, str(speech), str(EXAMPLES / "astronaut.jpg")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    if result["generator"] is False:
        pytest.skip("ffmpeg and ffprobe are not on the PATH here, so the page does not stream")
    (call,) = result["calls"]  # one GPU call for the whole job, its segments streamed out of it
    # several chunks came out of the one call while it ran (how many depends on the pace: webapp.stream.ChunkPacer)
    assert call["fn"] == "run_job_streamed" and len(result["segments"]) >= 2 and result["final"].endswith(".mp4")
