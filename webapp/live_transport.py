"""The Live page's transport helpers: frames handed to the streamed response one at a time, a microphone POST's
body read within its limit and deadline, and a response that gives up on a reader who stopped reading.

Used by webapp.live's two routes; each bounds what one client can make the server hold or wait for.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from typing import Any, AsyncIterator, Callable

from lipsync import Ended, LiveSession, live_frame_message, live_refusal

log = logging.getLogger("lipsync.app")
POST_SECONDS = 5.0  # a post's body must arrive within this (the page sends 20-40 ms of audio at a time)
READER_STALL_SECONDS = 3.0  # a frame the page's connection has not taken for this long: the page stopped reading
STREAM_GRACE = 0.1  # s a frame waits for late microphone audio before it goes out idle


def produce(session: LiveSession, handover: queue.Queue, end: Callable[[], None]) -> None:
    """Make the session's frames and hand them over one at a time (the stream's only buffer); `end` when done."""
    try:
        for frame in session.frames(grace=STREAM_GRACE):
            message = live_frame_message(frame)
            session.trace.mark(frame.index, "encoded")
            while not session.end_if_expired():  # the time limit holds even while the page does not read
                try:
                    handover.put((frame.index, message), timeout=0.25)
                    break
                except queue.Full:
                    continue
    finally:  # the last words, unless the page has stopped reading (it then ends on the closed session)
        last = [live_refusal(session.reason)] if session.ended is Ended.TIME_LIMIT else []
        for message in [*last, b""]:
            try:
                handover.put((-1, message), timeout=1.0)
            except queue.Full:
                break
        end()


class TooLarge(Exception):
    """A request body past its route's limit."""


async def read_body(request: Any, limit: int) -> bytes:
    """The request's body, read in pieces and refused (TooLarge) as soon as it passes `limit` bytes."""
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise TooLarge
    return bytes(body)


def session_response(body: AsyncIterator[bytes], stalled: Callable[[], None]) -> Any:
    """A streamed response that gives up on a reader who stopped reading: a message the connection has not taken
    within READER_STALL_SECONDS calls `stalled` (the session ends, its slot is free) and the connection is closed
    (uvicorn logs that the response was left incomplete). A page that goes away is seen as Starlette sees it."""
    from starlette.responses import StreamingResponse

    class SessionResponse(StreamingResponse):
        async def stream_response(self, send: Any) -> None:
            try:
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                async for message in self.body_iterator:
                    await asyncio.wait_for(send({"type": "http.response.body", "body": message, "more_body": True}),
                                           READER_STALL_SECONDS)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except asyncio.TimeoutError:
                log.info("A live stream's reader took no frame for %.0f s: its session ended", READER_STALL_SECONDS)
                stalled()
            finally:  # also when cancelled (the page went away): the session ends now, not when collected
                await self.body_iterator.aclose()  # type: ignore[attr-defined]

    return SessionResponse(body, media_type="application/octet-stream",
                           headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


