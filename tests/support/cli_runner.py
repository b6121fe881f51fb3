"""The command line in a child process, as a user runs it: one helper for every test that needs it.

Offline (HF_HUB_OFFLINE=1: a missing file is a sentence, never a download attempt), from the checkout (PYTHONPATH),
with the caller's extra environment on top.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment, offline and importing lipsync from the checkout, plus `extra`."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(extra or {})}


def run_lipsync(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m lipsync ARGS` (the batch with "batch" first); stdout and stderr captured as text."""
    return subprocess.run([sys.executable, "-m", "lipsync", *map(str, args)], capture_output=True, text=True,
                          env=child_env(env), cwd=ROOT, timeout=timeout)
