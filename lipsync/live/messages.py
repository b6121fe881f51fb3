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
import os
import struct

import cv2
import numpy as np

from ..errors import LipSyncError
from ..media.audio import SAMPLE_RATE
from .session import LiveFrame, LiveSession, check_push

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


MAX_PIECE_BYTES = 1 << 20  # a microphone piece of the compatible mode (0.25 s sent at once): far under a MiB


def read_microphone_piece(path: str, max_bytes: int = MAX_PIECE_BYTES) -> tuple[np.ndarray, int]:
    """(samples, rate) of a WAV piece from Gradio's streaming microphone: (n, channels) samples, checked as a push
    would check them (rate 8-192 kHz, 1-8 channels, length), from a file of at most `max_bytes`.

    Read here rather than by Gradio's decoder, which loads any file of up to the upload limit whole and takes
    the rate its header declares: one small piece saying 1 Hz would be resampled 16000-fold."""
    size = os.path.getsize(path)
    if size > max_bytes:
        raise LipSyncError(f"A microphone piece of {size:,} bytes is more than the {max_bytes:,} a live session "
                           "takes at once: send the microphone in pieces of a second or less.")
    with open(path, "rb") as f:
        data = f.read(size)  # within max_bytes, checked above
    samples, rate = _parse_wav(data)
    check_push(samples, rate)
    return samples, rate


def _parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """The samples (n, channels) and rate of a RIFF/WAVE file held in `data` (PCM 8/16/24/32-bit or float)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise LipSyncError("A microphone piece must be a WAV file (what the page's microphone sends).")
    fmt, samples, offset = None, None, 12
    while offset + 8 <= len(data) and samples is None:
        tag, size = data[offset:offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        end = offset + 8 + size
        if tag == b"data" and not _chunk_follows(data, end):
            end = len(data)  # a streamed piece's header, written once for the first piece: the samples run to the end
        body = data[offset + 8: end]
        if tag == b"fmt " and len(body) >= 16:
            fmt = struct.unpack_from("<HHIIHH", body)
            if fmt[0] == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real format opens the GUID
                fmt = (struct.unpack_from("<H", body, 24)[0], *fmt[1:])
        elif tag == b"data" and fmt is not None:
            samples = _wav_samples(body, fmt)
        offset += 8 + size + (size & 1)
    if fmt is None or samples is None:
        raise LipSyncError("This microphone piece is not a readable WAV file (no format or no samples).")
    return samples, fmt[2]


def _chunk_follows(data: bytes, offset: int) -> bool:
    """Whether another RIFF chunk (a four-character id and a size) starts exactly at `offset`."""
    return offset + 8 <= len(data) and all(32 <= c < 127 for c in data[offset:offset + 4])


def _wav_samples(body: bytes, fmt: tuple[int, ...]) -> np.ndarray:
    kind, channels, _, _, _, bits = fmt
    dtypes = {(1, 8): "u1", (1, 16): "<i2", (1, 32): "<i4", (3, 32): "<f4", (3, 64): "<f8"}
    if not 1 <= channels <= 64:
        raise LipSyncError(f"This microphone piece declares {channels} channels; a microphone has 1 to 8.")
    if (kind, bits) == (1, 24):  # three bytes a sample, widened to int32
        raw = np.frombuffer(body[: len(body) // (3 * channels) * 3 * channels], np.uint8).reshape(-1, 3)
        values = (raw[:, 0].astype(np.int32) | raw[:, 1].astype(np.int32) << 8 | raw[:, 2].astype(np.int32) << 16)
        values = (values << 8).astype(np.int32)
        return values.reshape(-1, channels)
    dtype = dtypes.get((kind, bits))
    if dtype is None:
        raise LipSyncError(f"This microphone piece is WAV with {bits}-bit samples of format {kind}, which live mode "
                           "does not read: send 16-bit PCM.")
    width = np.dtype(dtype).itemsize * channels
    samples = np.frombuffer(body[: len(body) // width * width], dtype).reshape(-1, channels)
    return (samples.astype(np.int16) - 128) * 256 if dtype == "u1" else samples
