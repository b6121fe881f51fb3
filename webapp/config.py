"""The web app's settings, read from the environment once, in `main()`: each variable declared here, once.

`AppConfig.from_environment()` is the only place the web app reads the environment
(through lipsync.environment's one parser, so a malformed value is one sentence). The
job limits a public server keeps (shorter audio, a time limit) are the settings' own
`server` defaults (lipsync.Options), read with the same variables as the CLI's.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipsync import LipSyncError, server_limits
from lipsync.environment import CHECKPOINT, LIVE_SESSIONS, declare

OUTPUT_DIR = declare("LIPSYNC_OUTPUT_DIR", "path", None,
                     "where the web app keeps results and Gradio's temp files, in lipsync-app/ (default: the temp "
                     "folder)")
CONCURRENCY = declare("LIPSYNC_CONCURRENCY", "integer", 1, "web app: jobs run at once (protects the GPU)")
QUEUE_SIZE = declare("LIPSYNC_QUEUE_SIZE", "integer", 16, "web app: jobs waiting before new ones are turned away")
PER_VISITOR = declare("LIPSYNC_QUEUE_PER_VISITOR", "integer", 4,
                      "web app: jobs one visitor (a page, a client session) may have waiting")
PER_ADDRESS = declare("LIPSYNC_QUEUE_PER_ADDRESS", "integer", 0,
                      "web app: events one network address may have waiting in each lane (0: not counted; people "
                      "behind one NAT share it)")
PROXY_HOPS = declare("LIPSYNC_PROXY_HOPS", "integer", None,
                     "web app: proxies in front that append to X-Forwarded-For (default 1 on Spaces, else 0)")
MAX_UPLOAD = declare("LIPSYNC_MAX_UPLOAD", "text", "500mb", "web app: the largest file a visitor may upload or "
                                                            "give by URL")
KEEP_MINUTES = declare("LIPSYNC_KEEP_MINUTES", "number", 60.0, "web app: minutes results are kept on disk")
CACHE_EXAMPLES = declare("LIPSYNC_CACHE_EXAMPLES", "flag", None,
                         "web app: run the examples once on first click and keep them (default: on Spaces only)")
GPU_MAX_SECONDS = declare("LIPSYNC_GPU_MAX_SECONDS", "number", 110.0,
                          "ZeroGPU: the most GPU seconds a job may ask for")
STREAM_RESULT = declare("LIPSYNC_STREAM_RESULT", "flag", True,
                        "web app: play the result while it is made (needs ffmpeg and ffprobe on the PATH)")
LIVE_CHUNK = declare("LIPSYNC_LIVE_CHUNK", "number", 0.25,
                     "Live page, compatible mode: seconds of microphone audio Gradio sends at once")
LIVE_SEGMENT = declare("LIPSYNC_LIVE_SEGMENT", "number", 0.5,
                       "Live page, compatible mode: seconds of video sent back at once")
HOST = declare("LIPSYNC_HOST", "text", None, "web app: address to listen on (else GRADIO_SERVER_NAME, 127.0.0.1)")
PORT = declare("LIPSYNC_PORT", "integer", None, "web app: port (else GRADIO_SERVER_PORT, 7860)")
SHARE = declare("LIPSYNC_SHARE", "flag", False, "web app: also serve on a public gradio.live link")
MCP = declare("LIPSYNC_MCP", "flag", None, "web app: also serve the MCP tool (else GRADIO_MCP_SERVER)")
# Variables of the platforms the app runs on, read here and nowhere else.
GRADIO_HOST = declare("GRADIO_SERVER_NAME", "text", "127.0.0.1", "Gradio's own address variable, when "
                                                                "LIPSYNC_HOST is unset")
GRADIO_PORT = declare("GRADIO_SERVER_PORT", "integer", 7860, "Gradio's own port variable, when LIPSYNC_PORT is "
                                                            "unset")
GRADIO_MCP = declare("GRADIO_MCP_SERVER", "flag", False, "Gradio's own MCP switch, when LIPSYNC_MCP is unset")
GRADIO_TEMP = declare("GRADIO_TEMP_DIR", "path", None, "Gradio's temp folder: set by you, it is Gradio's alone "
                                                       "(the app then sweeps only its own folder)")
SPACE_ID = declare("SPACE_ID", "text", None, "set by Hugging Face Spaces: examples cached, weights fetched at "
                                             "start, one proxy in front")
ZERO_GPU = declare("SPACES_ZERO_GPU", "flag", False, "set by Hugging Face ZeroGPU: a GPU only inside each job")


@dataclass(frozen=True)
class AppConfig:
    """Everything the web app takes from its environment, read once."""

    output_root: Path
    concurrency: int = 1
    queue_size: int = 16
    per_visitor: int = 4
    per_address: int = 0
    proxy_hops: int = 0
    max_upload: str = "500mb"
    keep_minutes: float = 60.0
    zero_gpu: bool = False
    on_space: bool = False
    cache_examples: bool = False
    gpu_max_seconds: float = 110.0
    stream_result: bool = True
    live_chunk_seconds: float = 0.25
    live_segment_seconds: float = 0.5
    live_sessions: int = 1
    custom_checkpoint: str | None = None  # LIPSYNC_CHECKPOINT: offered on the page as the "custom" checkpoint
    limits: dict[str, float] = field(default_factory=dict)  # the job limits a public server keeps

    @classmethod
    def from_environment(cls) -> "AppConfig":
        """Read every variable now; a malformed one is a LipSyncError (main() prints its sentence)."""
        on_space = SPACE_ID.is_set()
        has_ffmpeg = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
        checkpoint = CHECKPOINT.read()
        config = cls(
            output_root=OUTPUT_DIR.read() or Path(tempfile.gettempdir()),
            concurrency=CONCURRENCY.read(), queue_size=QUEUE_SIZE.read(), per_visitor=PER_VISITOR.read(),
            per_address=max(0, PER_ADDRESS.read()), proxy_hops=max(0, PROXY_HOPS.read(1 if on_space else 0)),
            max_upload=MAX_UPLOAD.read(), keep_minutes=KEEP_MINUTES.read(), zero_gpu=ZERO_GPU.read(),
            on_space=on_space, cache_examples=CACHE_EXAMPLES.read(on_space), gpu_max_seconds=GPU_MAX_SECONDS.read(),
            stream_result=STREAM_RESULT.read() and has_ffmpeg, live_chunk_seconds=LIVE_CHUNK.read(),
            live_segment_seconds=LIVE_SEGMENT.read(), live_sessions=LIVE_SESSIONS.read(),
            custom_checkpoint=str(checkpoint) if checkpoint else None, limits=server_limits())
        config.check()
        return config

    def check(self) -> None:
        from .files import parse_size

        if min(self.concurrency, self.queue_size, self.per_visitor) < 1:
            raise LipSyncError("LIPSYNC_CONCURRENCY, LIPSYNC_QUEUE_SIZE and LIPSYNC_QUEUE_PER_VISITOR must be 1 or "
                               "more.")
        parse_size(self.max_upload)  # its own sentence when it is not a size

    @property
    def max_upload_bytes(self) -> int:
        from .files import parse_size

        return parse_size(self.max_upload)

    def with_changes(self, **changes: Any) -> "AppConfig":
        """A copy with some settings changed (tests: a ZeroGPU page, a streamed one)."""
        from dataclasses import replace

        return replace(self, **changes)


def network_defaults() -> dict[str, Any]:
    """The command line's defaults for where to listen and what to serve, from the environment."""
    return {"host": HOST.read() or GRADIO_HOST.read(), "port": PORT.read() or GRADIO_PORT.read(),
            "share": SHARE.read(), "mcp": MCP.read() if MCP.is_set() else GRADIO_MCP.read(),
            "fetch_weights": SPACE_ID.is_set()}
