"""The page's streamed result: the lip-synced video plays in the page while the job makes it.

The job writes its MP4 and, from the same encode, MPEG-TS segments (0.5 s, 0.5 s, then a second each:
lipsync.media.segments). They reach Gradio's streamed video (`gr.Video(streaming=True)`, played with hls.js) joined
into chunks by `ChunkPacer`: the first at once, then chunks that grow with the player's lead. Gradio probes,
decodes, re-encodes the sound of and remuxes every chunk it is given (about a quarter of a CPU second each), on the
cores the job needs: one chunk a second would slow a minute's job by about a third on 2 cores, while a dozen chunks
cost little, and a player that is seconds ahead loses nothing by waiting for a bigger one (bench/RESULTS.md, #31).
The MP4 for download is the very file the non-streaming job writes (tests pin it). API and MCP callers keep
/lipsync, which returns the MP4 when it is done.

On ZeroGPU the page's job is still one GPU call: the decorated handler is a generator, and what it yields reaches the
page while the call runs.

LIPSYNC_STREAM_RESULT=0 gives the plain page (the result appears when the job ends); so does a host without ffmpeg
and ffprobe on the PATH, which Gradio's streamed video needs (the job uses its own ffmpeg).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr

from lipsync import Progress, SyncResult, segment_spans

LOW_WATER_SECONDS = 1.0  # the player this little ahead of where it plays: every finished segment goes at once


class ChunkPacer:
    """Which finished segments go to the player now, joined into one chunk (MPEG-TS segments join byte for byte).

    The first segment goes at once (the first frame soon). Later ones wait, joined, while the player is well ahead:
    a chunk goes once what waits is twice the player's lead (so chunks about triple, and their number grows with
    the log of the clip's length), or at once when the lead is under LOW_WATER_SECONDS (Gradio takes a few tenths
    of a second to pass a chunk on), which is what keeps the player fed while chunks wait. The lead is counted from
    when the first chunk went, as if it had started playing then: the player starts later, so it is really further
    ahead than that."""

    def __init__(self, folder: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.folder, self.clock = Path(folder), clock
        self.known = 0  # segments of the folder seen so far
        self.waiting: list[tuple[str, float]] = []  # (path, seconds) not handed over yet
        self.sent_seconds = 0.0
        self.first_sent: float | None = None
        self.chunks = 0

    def lead(self) -> float:
        """Seconds of video handed over beyond where the player is at the latest."""
        return self.sent_seconds - (self.clock() - self.first_sent) if self.first_sent is not None else 0.0

    def ready(self, finished: bool = False) -> list[str]:
        """The chunks to hand over now (paths), given the segments finished so far; all of them when `finished`."""
        spans = segment_spans(str(self.folder))
        self.waiting += [(path, end - start) for path, start, end in spans[self.known:]]
        self.known = len(spans)
        waiting = sum(seconds for _, seconds in self.waiting)
        if not self.waiting or not (finished or self.first_sent is None or self.lead() < LOW_WATER_SECONDS
                                    or waiting >= 2 * self.lead()):
            return []
        return [self._join()]

    def _join(self) -> str:
        paths = [path for path, _ in self.waiting]
        self.sent_seconds += sum(seconds for _, seconds in self.waiting)
        self.first_sent = self.clock() if self.first_sent is None else self.first_sent
        self.waiting = []
        if len(paths) == 1:
            return paths[0]
        chunk = self.folder / f"chunk{self.chunks:05d}.ts"
        self.chunks += 1
        with open(chunk, "wb") as out:
            for path in paths:
                out.write(Path(path).read_bytes())
        return str(chunk)


def players(streaming: bool) -> tuple[gr.Video, gr.Video]:
    """The result's two players: the plain one (the API's output; shown when the page does not stream) and the
    streamed one (shown when it does)."""
    result = gr.Video(label="Lip-synced", interactive=False, visible=not streaming)
    streamed = gr.Video(label="Lip-synced (plays while it is made)", interactive=False, streaming=True, autoplay=True,
                        visible=streaming)
    return result, streamed


def segments_then_result(events: Iterator[Progress | str | SyncResult], progress: Callable,
                         folder: str) -> Iterator[str | SyncResult]:
    """What `LipSync.sync_stream` hands out, for the page: progress reported, the finished segments (written to
    `folder`) passed on to the streamed player in chunks (`ChunkPacer`), the SyncResult last."""
    pacer = ChunkPacer(folder)
    for event in events:
        if isinstance(event, Progress):
            progress((event.done, max(event.total, 1)), desc=event.stage)
            yield from pacer.ready()
        elif isinstance(event, str):
            yield from pacer.ready()
        else:
            yield from pacer.ready(finished=True)
            yield event


def connect_sync_button(run: gr.Button, job: Callable, page_job: Callable, inputs: list[Any], outputs: list[Any],
                        streamed: gr.Video, events: dict[str, Any], streaming: bool) -> list[Any]:
    """The click on Sync lips: streamed to the page when it can be, with /lipsync (API, MCP) kept on the job that
    returns the MP4. `events` are the job lane's arguments and validator. Returns the outputs the page's job fills
    (for the examples)."""
    if not streaming:
        run.click(job, inputs, outputs, api_name="lipsync", show_progress_on=[outputs[3]], **events)
        return outputs
    page_outputs = [outputs[0], streamed, *outputs[2:]]
    run.click(page_job, inputs, page_outputs, api_visibility="private", show_progress_on=[outputs[3]], **events)
    gr.Button(visible=False).click(job, inputs, outputs, api_name="lipsync", **events)
    return page_outputs
