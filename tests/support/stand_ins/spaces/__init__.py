"""A stand-in for Hugging Face's `spaces` package, as it behaves on ZeroGPU: for tests only.

`GPU(fn, duration=...)` calls `duration` with the job's own arguments, as the real
package does before it asks for a GPU, records the request in `calls`, and refuses a
request over `FAKE_ZEROGPU_QUOTA_S` seconds the way ZeroGPU refuses a visitor whose
quota is too small. Put this folder first on sys.path, with SPACES_ZERO_GPU=true.
"""

from __future__ import annotations

import functools
import inspect
import os

calls: list[dict] = []


def GPU(task=None, *, duration=None, size=None):  # the real package's name
    def request(fn, args, kwargs):
        seconds = duration(*args, **kwargs) if callable(duration) else (duration or 60)
        calls.append({"fn": fn.__name__, "duration": seconds, "size": size})
        quota = float(os.environ.get("FAKE_ZEROGPU_QUOTA_S", "0") or 0)
        if quota and seconds > quota:
            import gradio as gr

            raise gr.Error(f"The requested GPU duration ({seconds:.0f}s) is larger than the maximum allowed")

    def decorate(fn):
        if inspect.isgeneratorfunction(fn):  # the real package streams a generator's yields from one GPU call
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                request(fn, args, kwargs)
                yield from fn(*args, **kwargs)
        else:
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                request(fn, args, kwargs)
                return fn(*args, **kwargs)

        wrapper.__signature__ = getattr(fn, "__signature__", None)
        return wrapper

    return decorate(task) if callable(task) else decorate
