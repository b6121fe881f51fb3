"""Serving the web app in a child process on a free loopback port, for the HTTP, browser and MCP tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(checkpoint: Path, log_path: Path, output_dir: Path, *flags: str,
            env: dict[str, str] | None = None) -> Iterator[str]:
    """The app on http://127.0.0.1:PORT/ (yielded) with a random-weight checkpoint, its output in `log_path`;
    `env`: more variables for it."""
    port = free_port()
    env = dict(os.environ, LIPSYNC_CHECKPOINT=str(checkpoint), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               LIPSYNC_OUTPUT_DIR=str(output_dir), **(env or {}))
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), *flags],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert proc.poll() is None, f"the app exited at start-up: {log_path.read_text()[-2000:]}"
                time.sleep(0.5)
        else:
            raise AssertionError("the app did not start within 120 s")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
