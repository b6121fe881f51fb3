"""The web app's queue, in lanes: one visitor cannot fill it for everyone.

Gradio keeps one queue with one size limit for every event of a page, so a visitor who sends 17 face checks (or
scripts them) turns every other visitor away with "Queue is full". Here each kind of work waits in a lane of its
own (a Gradio concurrency group with its own number running at once): jobs, previews, face checks; and in each
lane one visitor (a page, or a client's session) may have only a few events waiting. Each event's validator
(which Gradio runs before it queues the event) checks its lane and refuses with a sentence when it is full: the
page shows it on the face input, a Python client raises it (gradio_client's ValidationError).

What this does not stop: someone who makes a new session for every request. A session is only a name the
client picks; a public server needs a rate limit per address in front of it for that (the proxy's job).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

ADMITTED_SECONDS = 30.0  # an admitted event that never reached the queue (its request failed) is forgotten then


@dataclass(frozen=True)
class Lane:
    """One kind of event: how many run at once, how many may wait in all, and how many from one visitor."""

    name: str  # the Gradio concurrency group
    what: str  # the events, as a visitor calls them ("jobs")
    running: int
    waiting: int
    per_visitor: int
    # Events admitted but not yet in Gradio's queue (validators of simultaneous requests run side by side, and
    # Gradio queues an event only after its validator returns): by their request, with their session and time.
    _admitted: dict = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def events(self) -> dict[str, Any]:
        """The arguments that put an event listener in this lane."""
        return {"concurrency_id": self.name, "concurrency_limit": self.running}

    def admit(self, demo: Any, request: Any) -> str | None:
        """Admit one more event from `request`'s visitor, or say why not (one sentence; the validator refuses the
        event with it).

        Reads Gradio's queue (its per-group lists of waiting events, and the running ones). Should a Gradio
        release move them, the lanes stop limiting rather than the page stop working; tests/test_serving.py and
        tests/test_app_queue.py would then fail.
        """
        session = getattr(request, "session_hash", None)
        key = id(getattr(request, "request", request))  # Gradio keeps this very object on the queued event
        queue = getattr(demo, "_queue", None)
        group = (getattr(queue, "event_queue_per_concurrency_id", None) or {}).get(self.name)
        with self._lock:
            waiting = [getattr(e, "session_hash", None) for e in list(getattr(group, "queue", ()))]
            seen = {id(getattr(e, "request", None)) for e in list(getattr(group, "queue", ()))}
            seen |= {id(getattr(e, "request", None)) for jobs in list(getattr(queue, "active_jobs", ()) or ())
                     for e in (jobs or ())}
            now = time.monotonic()
            for old in [k for k, (_, at) in self._admitted.items() if k in seen or now - at > ADMITTED_SECONDS]:
                del self._admitted[old]
            waiting += [s for s, _ in self._admitted.values()]
            if len(waiting) >= self.waiting:
                return (f"The queue is full ({len(waiting)} {self.what} waiting, the most this server takes). Try "
                        "again in a few minutes.")
            mine = sum(1 for s in waiting if session and s == session)
            if mine >= self.per_visitor:
                return (f"You already have {mine} {self.what} waiting, the most one visitor may have here; wait for "
                        "them to finish.")
            self._admitted[key] = (session, now)
        return None


    def validator(self, demo: Any, check: Callable[[dict[str, Any]], list[dict]] | None = None) -> Callable:
        """A Gradio validator (to wrap in the app's named handler: settings by name, extras, then the request):
        `check(settings)` when given (else every input is fine), then `admit`; a refusal is said on the first
        input (the face), where the page shows it."""
        import gradio as gr

        def validate(settings: dict[str, Any], *rest: Any) -> list[dict]:
            *extras, request = rest
            verdicts = check(settings) if check else [gr.validate(True, "")] * (len(settings) + len(extras))
            if not all(v.get("is_valid", True) for v in verdicts):
                return verdicts  # refused for its inputs: never admitted to the lane
            problem = self.admit(demo, request)
            return [gr.validate(False, problem), *verdicts[1:]] if problem else verdicts

        return validate


def queue_size(lanes: list[Lane]) -> int:
    """Gradio's own limit on all waiting events: the lanes' limits together (each lane keeps to its own)."""
    return sum(lane.waiting for lane in lanes)
