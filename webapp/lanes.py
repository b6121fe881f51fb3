"""The web app's queue, in lanes: one visitor cannot fill it for everyone.

Gradio keeps one queue with one size limit for every event of a page, so a visitor who sends 17 face checks (or
scripts them) turns every other visitor away with "Queue is full". Here each kind of work waits in a lane of its
own (a Gradio concurrency group with its own number running at once): jobs, previews, face checks; and in each
lane one visitor (a page, or a client's session) may have only a few events waiting. Each event's validator
(which Gradio runs before it queues the event) checks its lane and refuses with a sentence when it is full: the
page shows it on the face input, a Python client raises it (gradio_client's ValidationError).

A session is only a name the client picks, so a script that makes a new session for every request gets a new
share each time. A public server can also cap what one network address has waiting (`per_address`, from
LIPSYNC_QUEUE_PER_ADDRESS; off by default): that stops such a script, and costs people behind one NAT (a school,
an office, a mobile carrier), who then share one address's allowance.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

ADMITTED_SECONDS = 30.0  # an admitted event that never reached the queue (its request failed) is forgotten then


@dataclass(frozen=True)
class Visitor:
    """Who sent an event: the client's session and, where the server counts them, its network address."""

    session: str | None
    address: str | None


def client_address(request: Any, proxy_hops: int) -> str | None:
    """The network address of the client that sent `request` (a gr.Request or a Starlette request).

    With `proxy_hops` 0 it is the connection's peer (what Gradio itself reports as `request.client.host`). Behind
    proxies (Hugging Face Spaces puts one in front of every Space) the peer is the proxy, and each proxy appends
    the address it saw to X-Forwarded-For: the client is then the entry `proxy_hops` from the right. Entries
    further left were written by the client itself and can be anything, so they are never trusted.
    """
    if proxy_hops > 0:
        headers = getattr(request, "headers", None) or {}
        forwarded = [a.strip() for a in str(headers.get("x-forwarded-for", "")).split(",") if a.strip()]
        if forwarded:
            return forwarded[-min(proxy_hops, len(forwarded))]
    client = getattr(request, "client", None)
    return getattr(client, "host", None) if client is not None else None


def gradio_waiting(demo: Any, group: str) -> tuple[list[Any], set[int]]:
    """The requests of the events waiting in Gradio's concurrency group `group`, and the ids of every queued or
    running event's request (to forget the admissions Gradio has taken over).

    Gradio has no public view of its queue: this reads its internals (`demo._queue`) in this one place. Should a
    Gradio release move them, the lanes stop limiting rather than the page stop working, and
    tests/webapp/test_serving.py::test_one_visitor_cannot_fill_the_queue fails.
    """
    queue = getattr(demo, "_queue", None)
    events = list(getattr((getattr(queue, "event_queue_per_concurrency_id", None) or {}).get(group), "queue", ()))
    running = [e for jobs in list(getattr(queue, "active_jobs", ()) or ()) for e in (jobs or ())]
    return events, {id(getattr(e, "request", None)) for e in events + running}


class Lane:
    """One kind of event: how many run at once, how many may wait in all, how many from one visitor and (when
    not 0) from one network address."""

    def __init__(self, name: str, what: str, running: int, waiting: int, per_visitor: int, per_address: int = 0,
                 proxy_hops: int = 0) -> None:
        self.name = name  # the Gradio concurrency group
        self.what = what  # the events, as a visitor calls them ("jobs")
        self.running, self.waiting, self.per_visitor = running, waiting, per_visitor
        self.per_address, self.proxy_hops = per_address, proxy_hops
        # Events admitted but not yet in Gradio's queue (validators of simultaneous requests run side by side, and
        # Gradio queues an event only after its validator returns): by their request's id, with visitor and time.
        self._admitted: dict[int, tuple[Visitor, float]] = {}
        self._lock = threading.Lock()

    def events(self) -> dict[str, Any]:
        """The arguments that put an event listener in this lane."""
        return {"concurrency_id": self.name, "concurrency_limit": self.running}

    def visitor(self, request: Any) -> Visitor:
        address = client_address(request, self.proxy_hops) if self.per_address else None
        return Visitor(getattr(request, "session_hash", None), address)

    def admit(self, demo: Any, request: Any) -> str | None:
        """Admit one more event from `request`'s visitor, or say why not (one sentence; the validator refuses the
        event with it)."""
        visitor = self.visitor(request)
        key = id(getattr(request, "request", request))  # Gradio keeps this very object on the queued event
        with self._lock:
            queued, seen = gradio_waiting(demo, self.name)
            now = time.monotonic()
            for old in [k for k, (_, at) in self._admitted.items() if k in seen or now - at > ADMITTED_SECONDS]:
                del self._admitted[old]
            waiting = [Visitor(getattr(e, "session_hash", None), self._event_address(e)) for e in queued]
            waiting += [v for v, _ in self._admitted.values()]
            problem = self._refusal(visitor, waiting)
            if problem is None:
                self._admitted[key] = (visitor, now)
        return problem

    def _event_address(self, event: Any) -> str | None:
        request = getattr(event, "request", None)
        return client_address(request, self.proxy_hops) if self.per_address and request is not None else None

    def _refusal(self, visitor: Visitor, waiting: list[Visitor]) -> str | None:
        if len(waiting) >= self.waiting:
            return (f"The queue is full ({len(waiting)} {self.what} waiting, the most this server takes). Try "
                    "again in a few minutes.")
        mine = _count(waiting, lambda v: visitor.session is not None and v.session == visitor.session)
        if mine >= self.per_visitor:
            return (f"You already have {mine} {self.what} waiting, the most one visitor may have here; wait for "
                    "them to finish.")
        from_address = _count(waiting, lambda v: visitor.address is not None and v.address == visitor.address)
        if self.per_address and from_address >= self.per_address:
            return (f"Your network address already has {from_address} {self.what} waiting, the most one address "
                    "may have here (people behind one router share it); wait for them to finish.")
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


def _count(visitors: Iterable[Visitor], match: Callable[[Visitor], bool]) -> int:
    return sum(1 for v in visitors if match(v))


@dataclass(frozen=True)
class Lanes:
    """The server's lanes, one per kind of event (made in main() from the config)."""

    jobs: Lane
    previews: Lane
    scans: Lane
    live: Lane
    live_audio: Lane

    @classmethod
    def for_config(cls, config: Any) -> "Lanes":
        address = {"per_address": config.per_address, "proxy_hops": config.proxy_hops}
        return cls(
            jobs=Lane("lipsync", "jobs", config.concurrency, config.queue_size, config.per_visitor, **address),
            previews=Lane("preview", "previews", 2, 32, 4, **address),  # a visitor's page asks for one at a time
            scans=Lane("scan", "face checks", 1, 8, 1, **address),
            # one live session per engine: its lane holds the compatible mode's session (the page's own client
            # opens its stream outside the queue, and the engine's slot refuses a second)
            live=Lane("live", "live sessions", config.live_sessions, 4, 1, **address),
            live_audio=Lane("live-audio", "microphone pieces", 8, 64, 16))  # one session's: its lane caps it

    def all(self) -> list[Lane]:
        return [self.jobs, self.previews, self.scans, self.live, self.live_audio]

    def queue_size(self) -> int:
        """Gradio's own limit on all waiting events: the lanes' limits together (each lane keeps to its own)."""
        return sum(lane.waiting for lane in self.all())
