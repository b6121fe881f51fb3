"""Calling the web app's job handler (`JobHandlers.run`, what /lipsync runs) with settings by control name, as the
page sends them."""

from __future__ import annotations

DEFAULTS = dict(device="cpu", detector="haar")  # tests run on the CPU with the offline detector


def call_handler(web, **settings):
    """(original, result, download, stats, face timeline image, sync timeline image or None, the score as a dict) of
    one job on the server's own checkpoint ($LIPSYNC_CHECKPOINT)."""
    from webapp.jobs import CUSTOM

    return web.jobs.run({"checkpoint_path": CUSTOM, **DEFAULTS, **settings})
