"""One web app server: its settings, job folders and cleaner, queue lanes, handlers and Live page, made together
in `main()` (nothing at import), then the page built and served.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import gradio as gr

from lipsync import DEFAULT_CHECKPOINT, LipSyncError, fetch_weights, shared_engine

from .config import AppConfig
from .files import JobFolders, app_dir
from .jobs import JobHandlers
from .lanes import Lanes
from .live import LiveServer
from .page import EXAMPLES, build

log = logging.getLogger("lipsync.app")


class WebApp:
    """The server's parts. `spaces` is Hugging Face's ZeroGPU package where it runs (imported by the caller before
    torch), else None."""

    def __init__(self, config: AppConfig, spaces: Any = None, gradio_dir: Any = None) -> None:
        self.config = config
        self.spaces = spaces
        self.folders = JobFolders(config.output_root, config.keep_minutes, gradio_dir)
        self.lanes = Lanes.for_config(config)
        self.jobs = JobHandlers(config, self.folders)
        self.live = LiveServer(config, self.jobs, self.folders, self.lanes)

    def build(self) -> gr.Blocks:
        return build(self)

    def prepare(self, fetch: bool) -> None:
        """Before serving: the weights fetched (on Spaces), and on ZeroGPU the model loaded to CUDA (ZeroGPU emulates
        CUDA outside jobs and moves it in for each). A failure is logged; the page still starts and each job then
        says what is wrong."""
        checkpoint = self.config.custom_checkpoint or DEFAULT_CHECKPOINT
        try:
            if fetch:
                fetched = fetch_weights(checkpoint)
                log.info("Wav2Lip checkpoint: %s; S3FD: %s; GFPGAN: %s; SyncNet: %s", fetched.checkpoint,
                         fetched.s3fd or "not available, the offline detector will be used",
                         fetched.restorer or "not available, jobs run without enhancing the mouth",
                         fetched.syncnet or "not available, jobs run unscored")
            if self.config.zero_gpu:
                shared_engine(checkpoint, "cuda")
        except LipSyncError as err:
            log.error("%s", err)

    def serve(self, host: str, port: int, share: bool = False, mcp: bool = False) -> None:
        """Build the page, start the cleaner, and serve until stopped."""
        self.start(host, port, share=share, mcp=mcp).block_thread()

    def start(self, host: str, port: int, share: bool = False, mcp: bool = False, quiet: bool = False) -> gr.Blocks:
        """Everything `serve` does, returning once the server is up (bench/live_bench.py serves the app this way in
        its own process, to read the sessions' traces)."""
        demo = self.build()
        self.folders.start_cleaner(lambda: kept_files(demo))
        # Every event through the queue (api_open=False: a direct POST would skip it, and its limits, off Spaces).
        demo.queue(default_concurrency_limit=self.config.concurrency, max_size=self.lanes.queue_size(),
                   api_open=False)
        demo.launch(server_name=host, server_port=port, share=share, max_file_size=self.config.max_upload,
                    allowed_paths=[str(EXAMPLES), str(app_dir(self.config.output_root))], mcp_server=mcp,
                    prevent_thread_lock=True, quiet=quiet)
        self.live.mount(demo.app)  # the live page's two routes, on Gradio's own server
        if not self.config.zero_gpu:  # the model ready before the first click (on ZeroGPU, `prepare` loaded it)
            threading.Thread(target=self.warm_up, name="lipsync-warm-up", daemon=True).start()
        return demo

    def warm_up(self) -> None:
        """Load the page's default model and face detector now, so that the first job starts at once: a first
        click otherwise waits for them (about 2 s on a CPU; bench/RESULTS.md, #31). A failure is only logged: the
        job then says what is wrong."""
        try:
            self.jobs.server_engine().detector(self.jobs.options({}))
        except LipSyncError as err:
            log.info("The model is loaded at the first job instead: %s", err)


def kept_files(demo: gr.Blocks) -> set[str]:
    """Files Gradio keeps for as long as it runs (the examples): the cleaner spares them."""
    return {str(p) for block in demo.blocks.values() for p in getattr(block, "keep_in_cache", ())}
