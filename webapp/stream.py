"""The page's streamed result: the lip-synced video plays in the page while the job makes it.

The job writes its MP4 and, from the same encode, MPEG-TS segments (keyframes at 1, 3, 5 s, then every 2 s); each
finished segment is handed to Gradio's streamed video (`gr.Video(streaming=True)`), which plays them in order with
hls.js. The MP4 for download is the very file the non-streaming job writes (tests pin it). API and MCP callers keep
/lipsync, which returns the MP4 when it is done.

On ZeroGPU the page's job is still one GPU call: the decorated handler is a generator, and what it yields reaches the
page while the call runs.

LIPSYNC_STREAM_RESULT=0 gives the plain page (the result appears when the job ends); so does a host without ffmpeg
and ffprobe on the PATH, which Gradio's streamed video needs (the job uses its own ffmpeg).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import gradio as gr

from lipsync import Progress, SyncResult


def players(streaming: bool) -> tuple[gr.Video, gr.Video]:
    """The result's two players: the plain one (the API's output; shown when the page does not stream) and the
    streamed one (shown when it does)."""
    result = gr.Video(label="Lip-synced", interactive=False, visible=not streaming)
    streamed = gr.Video(label="Lip-synced (plays while it is made)", interactive=False, streaming=True, autoplay=True,
                        visible=streaming)
    return result, streamed


def segments_then_result(events: Iterator[Progress | str | SyncResult],
                         progress: Callable) -> Iterator[str | SyncResult]:
    """What `LipSync.sync_stream` hands out, for the page: progress reported, each segment's path passed on to
    the streamed player, the SyncResult last."""
    for event in events:
        if isinstance(event, Progress):
            progress((event.done, max(event.total, 1)), desc=event.stage)
        else:
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
