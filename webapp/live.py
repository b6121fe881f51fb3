"""The web app's Live page: a photo or short clip as an avatar, the visitor's microphone moves its mouth.

Two transports, chosen by measurement (bench/RESULTS.md, #23):
- the page's own client (static/live.js): microphone audio up in small POSTs to /live/audio, every frame down with its
  own sound in one streamed response from /live/stream (lipsync.live.messages), played on the AudioContext clock. Two
  plain routes on Gradio's server: nothing more to install or run, and they pass the proxies Gradio's event stream
  passes;
- the compatible mode, Gradio's own streaming (a streaming microphone, a streamed video of short segments): slower
  (about two seconds behind), kept for a page where the first stays blank.

Bounded: a session ends at its time limit (LIPSYNC_LIVE_SECONDS), one runs per engine at a time (others are told
why), a closed tab or a stopped stream frees everything at once, and frames are handed to the response one at a
time, so a page that stops reading never makes the server buffer more than one (the session skips what it missed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr
import numpy as np

from lipsync import (
    Ended,
    LipSyncError,
    LiveSession,
    Options,
    face_preview,
    live_hello,
    live_microphone,
    live_refusal,
    read_microphone_piece,
    write_live_segment,
)

from . import live_transport as transport
from .api import positional_validator
from .config import AppConfig
from .files import JobFolders
from .jobs import JobHandlers, user_error
from .lanes import Lane, Lanes

log = logging.getLogger("lipsync.app")
STATIC = Path(__file__).resolve().parent / "static"
SEGMENTS_KEPT = 40  # Gradio reads each segment after it is yielded, on its own time: the older ones go
MAX_POST_BYTES = 2 * 16000  # a second of 16 kHz int16 audio in one post, at most
RATES = [("Automatic (what this machine holds)", 0.0), ("25 fps", 25.0), ("20 fps", 20.0), ("12.5 fps", 12.5)]
PRECISIONS = [("Automatic (bf16 where the CPU computes it natively, else fp32)", "auto"), ("fp32 (exact)", "fp32"),
              ("bf16 (faster where the CPU has it)", "bf16")]
EXAMPLE_AVATAR = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"
ZERO_GPU_NOTE = (
    "**Live mode does not run on this Space.** ZeroGPU lends a GPU for one call of a minute or two, and a live "
    "session holds the model for as long as you speak. What you can do here: the first page, whose result plays "
    "while it is made. For live mode, duplicate this Space onto dedicated hardware (a GPU, or a CPU upgrade at a "
    "lower frame rate), or run it on your own machine (`python app.py`, then open /live).")
TEMPLATE = """<div class="lipsync-live">
  <div><button class="live-start lg primary">Start</button>
  <button class="live-stop lg secondary" disabled>Stop</button>
  <span class="live-status">Upload an avatar, then press Start and allow the microphone.</span></div>
  <canvas width="512" height="512" style="max-width:100%;background:#111;margin-top:8px"></canvas>
</div>"""


class LiveServer:
    """The live page's state: tickets (an avatar with a face, and its settings), running streams by key, and the
    compatible mode's sessions by Gradio session. One per server, made in main()."""

    def __init__(self, config: AppConfig, jobs: JobHandlers, folders: JobFolders, lanes: Lanes) -> None:
        self.config, self.jobs, self.folders, self.lanes = config, jobs, folders, lanes
        self.ticket_seconds = config.keep_minutes * 60  # a ticket (an uploaded avatar) is forgotten after this
        self.tickets: dict[str, dict[str, Any]] = {}
        self.streams: dict[str, LiveSession] = {}
        self.traces: deque = deque(maxlen=4)  # the last sessions' latency traces (bench/live_bench.py reads them)
        self.gradio_sessions: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="lipsync-live")

    def options(self, rate: float, precision: str) -> Options:
        return self.jobs.options({"blend": "mouth", "live_fps": rate or 0.0, "precision": precision or "auto"})

    def avatar_check(self, avatar: str | None) -> tuple[bool, str]:
        """Whether the avatar has a face, and the note that says so, as soon as it is uploaded (the session would
        refuse it anyway)."""
        if not avatar:
            return False, ""
        try:
            found = face_preview(avatar, Options(), "cpu")
        except LipSyncError as err:
            return False, f"**Cannot use this avatar:** {user_error(err).message}"
        if found.detection is None:
            return False, ("**No face found** in this avatar: use a photo or a short clip where one face is "
                           "clearly visible and frontal.")
        return True, (f"Face found by {found.detector}. Press Start and allow the microphone: the avatar follows "
                      "your voice.")

    def ticket(self, avatar: str | None, rate: float, precision: str) -> tuple[str, str]:
        """The note on the avatar, and the ticket the page's client opens the live stream with (empty: none)."""
        usable, note = self.avatar_check(avatar)
        if not usable:
            return note, ""
        ticket, now = uuid.uuid4().hex, time.time()
        with self.lock:
            for old in [k for k, v in self.tickets.items() if now - v["made"] > self.ticket_seconds]:
                del self.tickets[old]
            self.tickets[ticket] = {"avatar": avatar, "options": self.options(rate, precision), "made": now}
        return note, ticket

    # --- the page's own client: two routes on Gradio's server ---

    async def stream(self, request: Any) -> Any:
        """GET live/stream?ticket=…: one live session, its frames streamed back as they are made
        (lipsync.live.messages).

        The frames are made on a thread that hands over one message at a time: a page that stops reading holds
        that thread, and the session skips the frames it missed when the page reads again (it never queues them).
        The session ends, and frees its slot, when the page stops the stream, the tab goes away, the time limit
        is reached, or a frame cannot be sent for transport.READER_STALL_SECONDS (a page that stopped reading,
        whatever it does next: its connection is closed then too).
        """
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import Response

        with self.lock:
            ticket = self.tickets.get(request.query_params.get("ticket", ""))
        if ticket is None:
            return Response(live_refusal("This page is out of date: reload it and upload the avatar again."),
                            media_type="application/octet-stream")
        try:
            session = await run_in_threadpool(self.jobs.server_engine().live, ticket["avatar"], ticket["options"])
        except Exception as err:
            return Response(live_refusal(user_error(err).message), media_type="application/octet-stream")
        key = uuid.uuid4().hex
        with self.lock:
            self.streams[key] = session

        def end(why: Ended = Ended.CLOSED) -> None:  # every way the stream ends comes here: the slot is freed now
            session.close(why)
            with self.lock:
                if self.streams.pop(key, None) is not None:
                    self.traces.append(session.trace)
                    log.info("Live session ended (%s) after %.0f s at %g fps: %d frames made, %d late, %d skipped; "
                             "server steps, median ms: %s", session.ended.value, session.elapsed(), session.fps,
                             session.sync.next_frame, session.sync.late_frames, session.sync.dropped_frames,
                             ", ".join(f"{k} {v:.0f}" for k, v in session.trace.steps().items()))

        handover: queue.Queue = queue.Queue(maxsize=1)  # the bound: one frame between the session and the page
        producer = self.pool.submit(transport.produce, session, handover, end)

        def next_message() -> tuple[int, bytes]:
            while True:
                try:
                    return handover.get(timeout=0.25)
                except queue.Empty:
                    if session.closed and producer.done():
                        return -1, b""

        async def body():
            try:
                yield live_hello(session, key)
                while True:
                    index, message = await run_in_threadpool(next_message)
                    if not message:
                        break
                    yield message
                    session.trace.mark(index, "sent")  # resumed once the connection has taken it
            finally:  # the page stopped reading, or went away: everything is freed now
                end()

        return transport.session_response(body(), lambda: end(Ended.READER_STOPPED))

    async def audio(self, request: Any) -> Any:
        """POST live/audio?key=…: microphone audio for a running session (16 kHz int16 PCM, at most a second).

        Everything a client declares is checked before the body is read: the key (410 for no running session),
        the length (413 over MAX_POST_BYTES); then the body is read in pieces, stopped at MAX_POST_BYTES whatever
        the headers said (413) and at POST_SECONDS (408: a body trickled in holds nothing for long)."""
        from starlette.responses import Response

        with self.lock:
            session = self.streams.get(request.query_params.get("key", ""))
        if session is None:
            return Response(status_code=410)  # ended: the page stops sending
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_POST_BYTES:
            return Response(status_code=413)
        try:
            body = await asyncio.wait_for(transport.read_body(request, MAX_POST_BYTES), transport.POST_SECONDS)
        except transport.TooLarge:
            return Response(status_code=413)
        except asyncio.TimeoutError:
            return Response(status_code=408)
        try:
            session.push(live_microphone(body))
        except LipSyncError:
            return Response(status_code=410)
        return Response(status_code=204)

    def mount(self, app: Any) -> None:
        """Serve the two routes on Gradio's own server (after launch): no other service, nothing to install."""
        from starlette.routing import Route

        app.router.routes[:0] = [Route("/live/stream", self.stream, methods=["GET"]),
                                 Route("/live/audio", self.audio, methods=["POST"])]

    # --- the compatible mode: Gradio's streaming microphone and streamed video ---

    def run(self, avatar: str | None, rate: float, precision: str, request: gr.Request) -> Iterator[tuple[Any, str]]:
        """The session, from the microphone's start to its stop: the avatar's frames (idle while nobody speaks), a
        short video segment at a time, each with the audio it plays with."""
        if not avatar:
            raise gr.Error("Upload an avatar first: a photo or a short clip with one face.")
        self.stop(request)  # a session left from before (a second start) ends first
        try:
            session = self.jobs.server_engine().live(avatar, self.options(rate, precision))
        except Exception as err:
            raise user_error(err) from None
        folder = self.folders.new()
        with self.lock:
            self.gradio_sessions[request.session_hash or "local"] = {"session": session, "folder": folder}
        try:
            yield from self._segments(session, folder)
        finally:
            self.stop(request)

    def _segments(self, session: Any, folder: Path) -> Iterator[tuple[Any, str]]:
        sent: list[Path] = []
        batch: list[Any] = []
        per_segment = max(1, round(self.config.live_segment_seconds * session.fps))
        for frame in session.frames(grace=self.config.live_chunk_seconds + 0.25):
            batch.append(frame)
            if len(batch) < per_segment:
                continue
            path = folder / f"{batch[0].index:07d}.ts"
            write_live_segment([f.image for f in batch], np.concatenate([f.audio for f in batch]), session.fps,
                               str(path))
            batch = []
            sent.append(path)
            for old in sent[:-SEGMENTS_KEPT]:  # long since read into Gradio's stream
                old.unlink(missing_ok=True)
            del sent[:-SEGMENTS_KEPT]
            yield str(path), (f"Live at {session.fps:g} fps (the model makes {session.sync.faces_per_second:.0f} "
                              f"faces/s here); {session.elapsed():.0f} s of {session.time_limit:.0f} s.")
        yield gr.skip(), session.reason if session.ended is Ended.TIME_LIMIT else "Session ended."

    def push(self, audio: str | None, request: gr.Request) -> None:
        """A piece of microphone audio (the WAV file Gradio received), into this visitor's running session (dropped
        when none runs yet). Read within bounds, never as a whole file on trust: its size, rate, layout and length
        are checked before its samples are (lipsync.live.messages.read_microphone_piece)."""
        with self.lock:
            live = self.gradio_sessions.get(request.session_hash or "local")
        if live is None or not audio:
            return
        try:
            samples, rate = read_microphone_piece(audio)
        except LipSyncError as err:  # a piece no microphone sends: said, and the session goes on
            raise gr.Error(str(err)) from None
        try:
            live["session"].push(samples, rate)
        except LipSyncError:  # the session has just ended; its own stream says why
            pass

    def stop(self, request: gr.Request) -> str:
        """The microphone stopped, or the tab closed: end this visitor's session and free everything at once."""
        with self.lock:
            live = self.gradio_sessions.pop(getattr(request, "session_hash", None) or "local", None)
        if live is None:
            return ""
        live["session"].close()
        self.folders.discard(live["folder"])
        return "Session ended. Start the microphone again for a new one."

    def build_page(self, demo: gr.Blocks) -> None:
        """The /live page: an avatar, the microphone, and the avatar speaking back as it is made."""
        with demo.route("Live", "/live"):
            gr.Markdown("# Live\nA photo or a short clip as an avatar; your microphone moves its mouth. The picture "
                        "and your voice come back together: under a second after you speak on a small CPU, "
                        "less on a GPU.")
            if self.config.zero_gpu:
                gr.Markdown(ZERO_GPU_NOTE)
                return
            with gr.Row():
                with gr.Column(scale=1):
                    avatar = gr.File(label="Avatar: a photo, or a short clip (it loops back and forth)",
                                     file_types=["image", "video"], type="filepath", height=120)
                    avatar_note = gr.Markdown()
                    if EXAMPLE_AVATAR.is_file():  # something to click before you have a photo of your own
                        gr.Examples([[str(EXAMPLE_AVATAR)]], inputs=[avatar],
                                    label="Example avatar (public-domain NASA portrait)")
                    with gr.Accordion("Settings", open=False):
                        rate = gr.Radio(RATES, value=0.0, label="Frame rate (lower holds up on a slow machine)")
                        precision = gr.Radio(PRECISIONS, value="auto", label="Arithmetic")
                with gr.Column(scale=1):
                    client = gr.HTML("", html_template=TEMPLATE, js_on_load=(STATIC / "live.js").read_text())
            with gr.Accordion("Compatible mode: through Gradio's own streaming, if the view above stays blank "
                              "(about two seconds behind)", open=False):
                with gr.Row():
                    mic = gr.Audio(label="Microphone", sources=["microphone"], streaming=True, type="filepath",
                                   format=None)  # the file as sent, read within bounds by `push`
                    output = gr.Video(label="Avatar", streaming=True, autoplay=True, interactive=False)
                status = gr.Markdown()
            self._connect(demo, avatar, rate, precision, avatar_note, client, mic, output, status)
        demo.unload(self.unload)

    def unload(self, request: gr.Request) -> None:
        """The tab closed: its session ends and everything it held is freed at once."""
        self.stop(request)

    def _connect(self, demo: gr.Blocks, avatar: Any, rate: Any, precision: Any, avatar_note: Any, client: Any,
                 mic: Any, output: Any, status: Any) -> None:
        """The page's events, each queued one in its lane with the lane's validator."""
        lanes = self.lanes
        gr.on([avatar.change, rate.change, precision.change], self.ticket, [avatar, rate, precision],
              [avatar_note, client], api_visibility="private", **lanes.previews.events(),
              validator=_lane_validator(lanes.previews, demo, 3))
        mic.start_recording(self.run, [avatar, rate, precision], [output, status], api_visibility="private",
                            **lanes.live.events(), validator=_lane_validator(lanes.live, demo, 3))
        mic.stream(self.push, [mic], None, stream_every=self.config.live_chunk_seconds, api_visibility="private",
                   time_limit=int(Options().live_seconds) or None, **lanes.live_audio.events(),
                   validator=_lane_validator(lanes.live_audio, demo, 1))
        mic.stop_recording(self.stop, None, status, api_visibility="private", queue=False)  # cheap: frees it
        avatar.change(self.stop, None, status, api_visibility="private", queue=False)  # a new avatar: a new session


def _lane_validator(lane: Lane, demo: gr.Blocks, inputs: int) -> Callable:
    """Gradio's validator for an event of `inputs` inputs in `lane` (the lane's own; no setting to check)."""
    return positional_validator(lane.validator(demo), inputs)
