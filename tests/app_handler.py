"""Calling the web app's click handler (`app.lipsync`) as Gradio does, with named settings."""

from __future__ import annotations

DEFAULTS = dict(pad_top=0, pad_bottom=10, pad_left=0, pad_right=0, resize=1, smooth=True, blend="box",
                device="cpu", detector="haar", box_top=-1, box_bottom=-1, box_left=-1, box_right=-1,
                allow_silence=False)


def call_handler(app, face_video=None, face_photo=None, audio=None, **settings):
    """(original, result, download, stats) of one job on the checkpoint in $LIPSYNC_CHECKPOINT."""
    v = {**DEFAULTS, **settings}
    return app.lipsync(face_video, face_photo, audio, v["pad_top"], v["pad_bottom"], v["pad_left"], v["pad_right"],
                       v["resize"], app.CUSTOM, v["smooth"], v["blend"], v["device"], v["detector"], v["box_top"],
                       v["box_bottom"], v["box_left"], v["box_right"], v["allow_silence"],
                       progress=lambda *a, **k: None)
