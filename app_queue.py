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

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Lane:
    """One kind of event: how many run at once, how many may wait in all, and how many from one visitor."""

    name: str  # the Gradio concurrency group
    what: str  # the events, as a visitor calls them ("jobs")
    running: int
    waiting: int
    per_visitor: int

    def events(self) -> dict[str, Any]:
        """The arguments that put an event listener in this lane."""
        return {"concurrency_id": self.name, "concurrency_limit": self.running}

    def problem(self, demo: Any, session: str | None) -> str | None:
        """Why one more event may not wait in this lane now (one sentence), or None.

        Reads Gradio's queue (its per-group lists of waiting events). Should a Gradio release move them, the lanes
        stop limiting rather than the page stop working; tests/test_serving.py would then fail.
        """
        groups = getattr(getattr(demo, "_queue", None), "event_queue_per_concurrency_id", None) or {}
        group = groups.get(self.name)
        waiting = list(getattr(group, "queue", ()))
        if len(waiting) >= self.waiting:
            return (f"The queue is full ({len(waiting)} {self.what} waiting, the most this server takes). Try again "
                    "in a few minutes.")
        mine = sum(1 for event in waiting if session and getattr(event, "session_hash", None) == session)
        if mine >= self.per_visitor:
            return (f"You already have {mine} {self.what} waiting, the most one visitor may have here; wait for "
                    "them to finish.")
        return None

    def admit(self, demo: Any, request: Any) -> str | None:
        """`problem` for `request`'s visitor (a validator then refuses the event with that sentence)."""
        return self.problem(demo, getattr(request, "session_hash", None))


def queue_size(lanes: list[Lane]) -> int:
    """Gradio's own limit on all waiting events: the lanes' limits together (each lane keeps to its own)."""
    return sum(lane.waiting for lane in lanes)
