"""Calling the web app's click handler (`app.run_job`) with settings by control name, as the page sends them."""

from __future__ import annotations

DEFAULTS = dict(device="cpu", detector="haar")  # tests run on the CPU with the offline detector


def call_handler(app, **settings):
    """(original, result, download, stats, face timeline image) of one job on the checkpoint in $LIPSYNC_CHECKPOINT."""
    return app.run_job({"checkpoint_path": app.CUSTOM, **DEFAULTS, **settings})
