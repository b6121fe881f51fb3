"""Where a live frame's time goes, step by step, for the latency budget (bench/live_bench.py, bench/RESULTS.md).

A session records, on the wall clock (time.time(), so a page on the same host can be
compared with it): when each piece of audio arrived and how many samples there were then,
and for each frame the sample it starts at, the sample it had to wait for (its window's
end, the look-ahead), when it was planned (taken for the model), rendered (model and paste),
encoded (JPEG) and handed to the connection. Bounded: the last MAX_FRAMES frames and pushes,
a tuple each. `steps()` gives the server's share of the budget as medians; the page's share
(capture, the post, the transport back, its play queue) is measured by its client.
"""

from __future__ import annotations

import bisect
import statistics
import time
from collections import deque
from dataclasses import dataclass, field

MAX_FRAMES = 5000


@dataclass
class FrameTrace:
    """One frame's steps (wall-clock seconds; 0 where not reached)."""

    index: int
    first_sample: int  # the input sample its picture and sound start at
    needed_sample: int  # the last input sample its mel window needs (the look-ahead's end)
    speaking: bool
    planned: float
    rendered: float = 0.0
    encoded: float = 0.0
    sent: float = 0.0


@dataclass
class LiveTrace:
    """A session's record of audio arrivals and frame steps (see the module docstring)."""

    # (arrived, samples after it, samples of silence filled in so far): silence stands in for audio that came late,
    # so a client's sample n is the session's sample n + the silence filled before it
    pushes: deque = field(default_factory=lambda: deque(maxlen=MAX_FRAMES * 4))
    frames: dict[int, FrameTrace] = field(default_factory=dict)

    def pushed(self, samples_after: int, filled: int = 0) -> None:
        """Audio arrived (`filled`: this many samples of it are silence the session put in for late audio)."""
        before = self.pushes[-1][2] if self.pushes else 0
        self.pushes.append((time.time(), samples_after, before + filled))

    def counts(self) -> list[int]:
        """The pushes' sample counts (session samples after each), for a caller that looks up many samples."""
        return [n for _, n, _ in self.pushes]

    def source(self, sample: int, counts: list[int] | None = None) -> tuple[float, int] | None:
        """(when the push holding session sample `sample` arrived, the client's index of that sample), or None
        when it is not there yet or was silence filled in. `counts`: self.counts(), when looking up many."""
        at = self._push_at(sample, counts)
        if at >= len(self.pushes):
            return None
        arrived, after, filled = self.pushes[at]
        before = self.pushes[at - 1] if at else (0.0, 0, 0)
        if filled > before[2]:  # that push was silence
            return None
        return arrived, sample - filled

    def planned(self, index: int, first_sample: int, needed_sample: int, speaking: bool) -> None:
        self.frames[index] = FrameTrace(index, first_sample, needed_sample, speaking, time.time())
        while len(self.frames) > MAX_FRAMES:  # the oldest planned go first: a dict keeps its insertion order
            del self.frames[next(iter(self.frames))]

    def mark(self, index: int, step: str) -> None:
        """Record `step` ('rendered', 'encoded', 'sent') of frame `index` now (ignored for a forgotten frame)."""
        frame = self.frames.get(index)
        if frame is not None:
            setattr(frame, step, time.time())

    def arrival(self, sample: int, counts: list[int] | None = None) -> float | None:
        """When the audio holding input sample `sample` arrived (the first push that reached it), or None.
        `counts`: self.counts(), when looking up many samples."""
        at = self._push_at(sample, counts)
        return self.pushes[at][0] if at < len(self.pushes) else None

    def _push_at(self, sample: int, counts: list[int] | None) -> int:
        """The index of the first push that reached session sample `sample` (len(pushes): none yet)."""
        return bisect.bisect_right(counts if counts is not None else self.counts(), sample)

    def steps(self) -> dict[str, float]:
        """Medians, in ms, of the server's steps over the frames that went all the way: the audio it waited for
        arriving -> taken for the model (a batch, or the model busy with the one before), -> rendered (model and
        paste), -> JPEG encoded, -> handed to the connection."""
        rows: dict[str, list[float]] = {"ready -> planned": [], "planned -> rendered": [], "rendered -> encoded": [],
                                        "encoded -> sent": []}
        counts = self.counts()
        for frame in list(self.frames.values()):
            ready = self.arrival(frame.needed_sample, counts)
            if ready is None or not frame.sent:
                continue
            marks = (ready, frame.planned, frame.rendered, frame.encoded, frame.sent)
            for values, a, b in zip(rows.values(), marks, marks[1:]):
                values.append(1000 * (b - a))
        return {name: statistics.median(values) for name, values in rows.items() if values}
