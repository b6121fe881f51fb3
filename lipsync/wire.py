"""The live page's messages over plain HTTP: microphone audio up in small POSTs, frames down one streamed response.

No WebSocket: uvicorn serves those only with an extra library, and a streamed response
passes the proxies Gradio's own event stream passes (Spaces included).

Up: raw 16 kHz mono int16 PCM, little-endian, any length (the page posts 20-40 ms at a
time, more when a post is still on its way).
Down: a sequence of messages, each a 5-byte prefix (its length as uint32, then its kind,
0 for JSON text and 1 for a frame) and its body. The first is JSON: the session's frame
rate, size and sample rate and the key its audio posts carry, or an error sentence. Each
frame's body is a 12-byte header (frame index and JPEG length as uint32, the mouth's
weight as float32, little-endian), the JPEG, then the frame's own audio as int16 PCM. A
frame and its sound travel in one message, so the page schedules both on one clock and
they stay together.
"""

from __future__ import annotations

import json
import struct

import cv2
import numpy as np

from .audio import SAMPLE_RATE
from .live import LiveFrame, LiveSession

HEADER = struct.Struct("<IIf")  # index, JPEG bytes, weight
PREFIX = struct.Struct("<IB")  # message length, kind
TEXT, FRAME = 0, 1
JPEG_QUALITY = 80


def _message(kind: int, body: bytes) -> bytes:
    return PREFIX.pack(len(body), kind) + body


def live_hello(session: LiveSession, key: str) -> bytes:
    """The first message: what the page needs to play the frames, and the key its audio posts carry."""
    return _message(TEXT, json.dumps({
        "key": key, "fps": session.fps, "width": session.avatar.width, "height": session.avatar.height,
        "sample_rate": SAMPLE_RATE, "time_limit": session.time_limit,
        "faces_per_second": round(session.sync.faces_per_second, 1)}).encode())


def live_refusal(sentence: str) -> bytes:
    """A message that ends the session (or refuses it), with the reason a person reads."""
    return _message(TEXT, json.dumps({"error": sentence}).encode())


def live_frame_message(frame: LiveFrame) -> bytes:
    """One frame, JPEG-encoded, with its audio."""
    ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    pcm = (np.clip(frame.audio, -1.0, 1.0) * 32767).astype("<i2")
    return _message(FRAME, HEADER.pack(frame.index, len(jpeg), frame.weight) + jpeg.tobytes() + pcm.tobytes())


def read_live_messages(data: bytes) -> list[tuple[int, bytes]]:
    """The (kind, body) messages in a stretch of the stream (what the page does, for tests and tools)."""
    messages, offset = [], 0
    while offset + PREFIX.size <= len(data):
        size, kind = PREFIX.unpack_from(data, offset)
        messages.append((kind, data[offset + PREFIX.size: offset + PREFIX.size + size]))
        offset += PREFIX.size + size
    return messages


def read_live_frame(body: bytes) -> tuple[int, float, np.ndarray, np.ndarray]:
    """(index, weight, BGR image, float audio) of a frame message's body."""
    index, size, weight = HEADER.unpack_from(body)
    jpeg = np.frombuffer(body, np.uint8, size, HEADER.size)
    pcm = np.frombuffer(body[HEADER.size + size:], "<i2").astype(np.float32) / 32767
    return index, weight, cv2.imdecode(jpeg, cv2.IMREAD_COLOR), pcm


def live_microphone(data: bytes) -> np.ndarray:
    """An uploaded microphone message as float samples (an odd trailing byte is dropped)."""
    return np.frombuffer(data[: len(data) // 2 * 2], "<i2").astype(np.float32) / 32768
