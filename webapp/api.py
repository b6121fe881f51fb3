"""What API callers and agents see of the page: handlers whose signatures name the page's controls, and the
/lipsync endpoint's (and MCP tool's) description, made from the settings' own help so it cannot drift.

Gradio reads a handler's parameters for the API's names, and a `gr.Request` or `gr.Progress` parameter by its
annotation or default. The page's handlers take one dict of settings by name, so `by_name` makes the function
Gradio sees: positional values in, the dict out, a signature that names each control. Every forged signature
of the web app is made here (`forge`).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from lipsync import CHECKPOINTS, flat_settings

FILE_HELP = {"face": "a video or a photo with the face to lip-sync",
             "audio": "the speech (any audio file, or a video whose sound to use)"}
PAGE_HELP = {"audio_offset_auto": "true: measure the result's sound offset with SyncNet after the job and, where it "
                                  "is not zero and the confidence is at least 3, shift the sound by it (a remux); "
                                  "overrides audio_offset"}


def forge(call: Callable, params: list[tuple[str, Any]], name: str, doc: str | None,
          request: str | None = None) -> Callable:
    """`call` given the signature `params` ((name, default) in order), the name Gradio and MCP show, its
    description, and which parameter (if any) receives the gr.Request (Gradio passes it by annotation)."""
    import gradio as gr

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    call.__signature__ = inspect.Signature([inspect.Parameter(n, kind, default=d) for n, d in params])
    call.__annotations__ = {request: gr.Request} if request else {}
    call.__name__ = name
    call.__doc__ = doc
    return call


def by_name(names: list[str], handler: Callable, defaults: dict[str, Any], extra: dict[str, Any],
            name: str | None = None, doc: str | None = None) -> Callable:
    """A Gradio handler taking the controls' values positionally, named after the controls for the API, then
    the `extra` parameters (progress, state, request); it calls `handler(values_by_name, *extras)`."""
    if inspect.isgeneratorfunction(handler):  # Gradio (and ZeroGPU) stream what a generator function yields
        def call(*values):
            yield from handler(dict(zip(names, values[: len(names)])), *values[len(names):])
    else:
        def call(*values):
            return handler(dict(zip(names, values[: len(names)])), *values[len(names):])

    params = [(n, defaults.get(n)) for n in names] + list(extra.items())
    return forge(call, params, name or handler.__name__, doc or handler.__doc__,
                 request="request" if "request" in extra else None)


def positional_validator(check: Callable[[dict[str, Any], Any], list[dict]], inputs: int) -> Callable:
    """A Gradio validator for an event of `inputs` unnamed inputs: `check({input0: …}, request)`."""
    def validate(*values: Any) -> list[dict]:
        *given, request = values
        return check({f"input{i}": v for i, v in enumerate(given)}, request)

    params = [(f"input{i}", inspect.Parameter.empty) for i in range(inputs)] + [("request", None)]
    return forge(validate, params, "validate", None, request="request")


def description(names: list[str], custom: str, upload_limit: str) -> str:
    """The /lipsync endpoint's and the MCP tool's description: each parameter with its setting's own help (from
    lipsync.Options), how files are passed and how big they may be."""
    helps = {**FILE_HELP, **PAGE_HELP,
             "checkpoint_path": f"the Wav2Lip weights: one of {', '.join(CHECKPOINTS)}, or '{custom}' for the file "
                                "the server names"}
    flat = flat_settings()
    lines = [f"    {name}: {helps[name] if name in helps else flat[name].help}." for name in names]
    return "\n".join([
        "Make the lips of the face in a video or photo follow an audio track (Wav2Lip).",
        "",
        f"Files (face, audio) are given as https:// URLs, up to {upload_limit} each (LIPSYNC_MAX_UPLOAD), or as "
        "data: URLs (base64); an MCP request may be at most 4 MiB in all, so data: URLs only for files of about 3 "
        "MB together (a larger one is answered with HTTP 413: use a URL).",
        "",
        "Args:", *lines,
        "",
        "Returns:",
        "    the original (for display), the lip-synced MP4, the same file to download, the job's stats (with the",
        "    sync score beside the Wav2Lip paper's figures when scored), the face timeline (an image: one column per",
        "    frame, green where the face was synced), the sync timeline (an image: SyncNet's confidence per frame, red",
        "    weak to green strong; none when not scored) and the score as JSON: {offset, lse_c, lse_d, frames,",
        "    offset_fixed_ms}, or those keys null with a 'reason' when the sync was not scored.",
    ])
