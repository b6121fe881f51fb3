"""The app's queue lanes: every queued event of the page has a lane and a validator that keeps to it."""

from __future__ import annotations

from types import SimpleNamespace

from webapp import lanes as queue_lanes


def _demo_waiting(lane: str, sessions: list[str]) -> SimpleNamespace:
    """A stand-in for Gradio's queue: the sessions of the events waiting in `lane`."""
    events = [SimpleNamespace(session_hash=s, request=object()) for s in sessions]
    return SimpleNamespace(_queue=SimpleNamespace(active_jobs=[], event_queue_per_concurrency_id={
        lane: SimpleNamespace(queue=events)}))


def _request(session: str) -> SimpleNamespace:
    return SimpleNamespace(session_hash=session, request=object())


def test_a_lane_turns_away_a_visitor_with_enough_waiting_and_everyone_when_full():
    lane = queue_lanes.Lane("scan", "face checks", running=1, waiting=4, per_visitor=2)
    demo = _demo_waiting("scan", ["a", "a", "b"])
    assert "You already have 2 face checks waiting" in lane.admit(demo, _request("a"))
    assert lane.admit(demo, _request("b")) is None  # admitted: counted until Gradio queues it
    assert "The queue is full (4 face checks waiting" in lane.admit(demo, _request("c"))
    assert queue_lanes.Lane("x", "jobs", 1, 4, 2).admit(SimpleNamespace(), _request("a")) is None  # no queue: admit


def test_a_burst_of_simultaneous_requests_is_counted_before_gradio_queues_any():
    """Validators of requests that arrive together run side by side, before any of their events is queued: the
    lane counts what it admitted, so a burst gets no more than its share; once queued, an event counts once."""
    lane = queue_lanes.Lane("lipsync", "jobs", running=1, waiting=16, per_visitor=2)
    demo = _demo_waiting("lipsync", [])
    burst = [_request("a") for _ in range(17)]
    verdicts = [lane.admit(demo, r) for r in burst]
    assert verdicts[:2] == [None, None] and all("You already have 2 jobs" in v for v in verdicts[2:])
    queued = demo._queue.event_queue_per_concurrency_id["lipsync"].queue
    queued += [SimpleNamespace(session_hash="a", request=r.request) for r in burst[:2]]  # Gradio queues them
    assert "You already have 2 jobs" in lane.admit(demo, _request("a"))  # not 4: each counted once
    queued.clear()  # both started running
    demo._queue.active_jobs = [[SimpleNamespace(session_hash="a", request=r.request) for r in burst[:2]]]
    assert lane.admit(demo, _request("a")) is None


def test_every_queued_event_of_the_page_waits_in_a_lane_with_its_validator(web):
    """Previews, face checks and jobs each have their lane; the two cheap events skip the queue; nothing can be
    called past the queue (api_open is off in WebApp.serve)."""
    demo = web.build()
    lanes = {lane.name: lane for lane in web.lanes.all()}
    # the tab's closing (unload) runs when Gradio sees the page go, outside the queue whatever its flag
    events = [fn for fn in demo.fns.values() if fn.fn is not None and not any(t[1] == "unload" for t in fn.targets)]
    queued = [fn for fn in events if fn.queue]
    assert {fn.concurrency_id for fn in queued} == set(lanes)
    for fn in queued:
        assert fn.validator is not None and fn.concurrency_limit == lanes[fn.concurrency_id].running, fn.name


def test_the_api_and_mcp_description_is_made_from_the_settings_own_help(web):
    """Every parameter of /lipsync (and of the MCP tool) is described by its setting's help, and the size limits
    of files (the upload limit for URLs, the MCP request's 4 MiB for data: URLs) are stated."""
    import dataclasses
    import inspect

    from lipsync import Options

    demo = web.build()
    job = next(fn for fn in demo.fns.values() if fn.api_name == "lipsync").fn
    doc = job.__doc__
    names = [n for n in inspect.signature(job).parameters if n != "progress"]
    described = {line.split(":", 1)[0].strip() for line in doc.split("Args:")[1].split("Returns:")[0].splitlines()
                 if ":" in line}
    assert described == set(names)
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(Options)}
    assert f"pads_bottom: {helps['pads']}" in doc and f"blend: {helps['blend']}." in doc
    assert "up to 500 MB each (LIPSYNC_MAX_UPLOAD)" in doc and "at most 4 MiB" in doc


def _from(address: str, session: str, forwarded: str = "") -> SimpleNamespace:
    """A request from `address` (the connection's peer), with X-Forwarded-For when given."""
    return SimpleNamespace(session_hash=session, request=object(), client=SimpleNamespace(host=address),
                           headers={"x-forwarded-for": forwarded} if forwarded else {})


def test_a_client_making_a_new_session_per_request_is_capped_by_its_address_when_asked():
    """The issue's script: a new session for every request filled the job queue (16) alone. Off by default (people
    behind one NAT share an address); LIPSYNC_QUEUE_PER_ADDRESS turns it on."""
    plain = queue_lanes.Lane("lipsync", "jobs", running=1, waiting=16, per_visitor=4)
    demo = _demo_waiting("lipsync", [])
    script = [_from("203.0.113.9", f"s{i}") for i in range(16)]  # kept alive, as Gradio keeps queued requests
    assert all(plain.admit(demo, r) is None for r in script)
    capped = queue_lanes.Lane("lipsync", "jobs", running=1, waiting=16, per_visitor=4, per_address=3)
    verdicts = [capped.admit(demo, r) for r in script[:5]]
    assert verdicts[:3] == [None] * 3 and all("Your network address already has 3 jobs" in v for v in verdicts[3:])
    assert capped.admit(demo, _from("198.51.100.7", "other")) is None  # another address still gets its share
    # what is waiting in Gradio's queue counts too, by the address of its request
    queued = _demo_waiting("lipsync", [])
    queued._queue.event_queue_per_concurrency_id["lipsync"].queue = [
        SimpleNamespace(session_hash=f"q{i}", request=_from("192.0.2.1", f"q{i}")) for i in range(3)]
    lane = queue_lanes.Lane("lipsync", "jobs", running=1, waiting=16, per_visitor=4, per_address=3)
    assert "already has 3 jobs" in lane.admit(queued, _from("192.0.2.1", "new"))


def test_behind_proxies_the_address_is_the_one_the_nearest_proxy_saw():
    """On Spaces the peer is Hugging Face's proxy; each proxy appends what it saw to X-Forwarded-For, and what a
    client writes there itself (left of it) is never trusted."""
    spoofed = _from("10.16.3.80", "s", forwarded="1.2.3.4, 203.0.113.9")
    assert queue_lanes.client_address(spoofed, proxy_hops=0) == "10.16.3.80"
    assert queue_lanes.client_address(spoofed, proxy_hops=1) == "203.0.113.9"
    assert queue_lanes.client_address(spoofed, proxy_hops=2) == "1.2.3.4"
    assert queue_lanes.client_address(_from("10.0.0.1", "s"), proxy_hops=1) == "10.0.0.1"  # no header: the peer
    lane = queue_lanes.Lane("lipsync", "jobs", running=1, waiting=16, per_visitor=4, per_address=1, proxy_hops=1)
    demo = _demo_waiting("lipsync", [])
    first, second = (_from("10.16.3.80", "a", forwarded="9.9.9.9, 203.0.113.9"),
                     _from("10.16.3.81", "b", forwarded="8.8.8.8, 203.0.113.9"))
    assert lane.admit(demo, first) is None
    assert "address" in lane.admit(demo, second)


def test_the_address_cap_is_read_from_the_environment(monkeypatch):
    from webapp import AppConfig

    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("LIPSYNC_QUEUE_PER_ADDRESS", raising=False)
    lanes = queue_lanes.Lanes.for_config(AppConfig.from_environment())
    assert (lanes.jobs.per_address, lanes.jobs.proxy_hops) == (0, 0)
    monkeypatch.setenv("LIPSYNC_QUEUE_PER_ADDRESS", "2")
    monkeypatch.setenv("SPACE_ID", "someone/lipsync")
    lanes = queue_lanes.Lanes.for_config(AppConfig.from_environment())
    assert all((lane.per_address, lane.proxy_hops) == (2, 1) for lane in (lanes.jobs, lanes.previews, lanes.live))
    assert lanes.queue_size() == 16 + 32 + 8 + 4 + 64
