"""Benchmark: the page in headless Chromium: the streamed result, and live mode's latency and frame rate.

    .venv/bin/python bench/live_bench.py streamed [--seconds 60]    # click -> first played frame -> end
    .venv/bin/python bench/live_bench.py live [--seconds 60]        # mouth-to-ear latency, A/V offset, frame rate
    .venv/bin/python bench/live_bench.py live --compatible          # the same through Gradio's own streaming

`streamed` serves the app twice (with the streamed result, and with LIPSYNC_STREAM_RESULT=0,
as the page was before), uploads the astronaut clip and a speech track of `--seconds`, clicks
Sync lips and times, from the click: the first frame the result's player plays (its
currentTime past 0), and the end (the MP4 offered for download). Without streaming the first
frame can play only once the job is over, so there the time the player has the file is taken.

`live` plays a WAV as Chromium's microphone (--use-file-for-fake-audio-capture): tone bursts
of 0.3 s after 1.7 s of silence, over and over. The page's client logs (window.lipsyncLive)
each piece of microphone audio it posts (time, first loud sample) and each frame it plays
(when its sound is heard, by the AudioContext's output clock; its first loud sample; the mouth's
weight) and draws. Mouth-to-ear latency = when a burst's first loud sample is heard, minus when
it was captured (the post's time less the samples after it). A/V offset = when a frame is drawn
minus when its sound is heard (positive: the sound comes first; ITU-R BT.1359 allows the sound
90 ms early and 185 ms late). Frame rate = frames played per second of the session; gaps in
the frame indices are frames not played: skipped by the page after a stall (the queue past
MAX_AHEAD), silent idle ones it left out to drain its queue, or ones the server skipped (a
reader more than 0.5 s behind). Backlog = whether the latency grows: its median by third of
the session. `--compatible` measures the fallback (Gradio's
microphone stream and streamed video) with analysers on the microphone and on the player's sound.

The checkpoint has random weights unless --checkpoint is given (speed does not depend on them).
Note the load average: on a shared machine the figures move with it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]
import lipsync  # noqa: F401  (first: OMP_WAIT_POLICY set before anything loads torch)

# isort: split
import numpy as np

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--autoplay-policy=no-user-gesture-required",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
BURST_EVERY, BURST_LENGTH, LOUD = 2.0, 0.3, 0.05


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bursts_wav(path: Path, seconds: float, rate: int = 48000) -> list[float]:
    """A microphone recording of tone bursts (220 + 660 Hz) every BURST_EVERY s; returns their onsets."""
    import media

    t = np.arange(int(seconds * rate)) / rate
    x = np.zeros_like(t)
    onsets = list(np.arange(1.7, seconds - 0.5, BURST_EVERY))
    for on in onsets:
        m = (t >= on) & (t < on + BURST_LENGTH)
        x[m] = 0.3 * np.sin(2 * np.pi * 220 * t[m]) + 0.15 * np.sin(2 * np.pi * 660 * t[m])
    media.write_wav(path, x.astype(np.float32), rate=rate)
    return onsets


def browser(pw, extra: list[str] = ()):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    return pw.chromium.launch(executable_path=chromium, args=[*CHROMIUM_ARGS, *extra])


def bench_streamed(seconds: float, checkpoint: Path, work: Path) -> None:
    """Click -> first frame played -> end, for the streamed page and for the plain one, and where the streamed
    page's first seconds go: the handler starting, the job's first segment, Gradio's copy of it, the browser's
    first playlist that lists it, its fetch, the first frame played."""
    import media
    from playwright.sync_api import sync_playwright

    from webapp import jobs

    speech = media.make_speech(work / f"speech-{seconds:.0f}s.wav", seconds)
    face = ROOT / "examples" / "astronaut.mp4"
    print(f"## streamed result: {face.name} + {seconds:.0f} s of speech, load average before {load()}")
    marks: dict[str, float] = {}
    original_segments = jobs.segments_then_result

    def segments_then_result(events, progress, folder):  # the handler's side of the timeline
        marks.setdefault("handler started", time.time())
        chunks = 0
        for event in original_segments(events, progress, folder):
            if isinstance(event, str):
                marks.setdefault("first segment handed to Gradio", time.time())
                marks["last chunk handed to Gradio"] = time.time()
                chunks += 1
            else:
                marks["the job's result"] = time.time()
                print(f"chunks handed to Gradio: {chunks}")
            yield event

    jobs.segments_then_result = segments_then_result
    for label, stream in (("streamed (this page)", True), ("whole file at the end (before)", False)):
        marks.clear()
        with serving_here(checkpoint, work, stream_result=stream) as (url, _), sync_playwright() as pw:
            page = browser(pw).new_page(viewport={"width": 1400, "height": 1000})
            page.on("response", lambda r: _note_stream_response(r, marks))
            page.goto(url, wait_until="load", timeout=60_000)
            page.locator("input[type=file][accept*='image']").first.set_input_files(str(face))
            page.locator("input[type=file][accept*='audio']").first.set_input_files(str(speech))
            page.get_by_text("Green: with padding").wait_for(timeout=120_000)
            page.wait_for_timeout(2000)  # the page settled: previews done, the model warm
            cpu_before = cpu_seconds_by_program()
            page.get_by_role("button", name="Sync lips").click()
            start, first, end = time.time(), None, None
            marks["click"] = start
            while time.time() - start < 30 * seconds:
                state = page.evaluate("""() => ({
                    played: Array.from(document.querySelectorAll('video')).some(v => !v.src.includes('original')
                            && v.currentTime > 0),
                    ready: Array.from(document.querySelectorAll('video')).some(v => v.readyState >= 2
                            && !v.src.includes('original')),
                    done: document.body.innerText.includes('without a face')})""")
                now = time.time() - start
                if first is None and (state["played"] or (not stream and state["ready"])):
                    first = now
                    marks["first frame played"] = time.time()
                if state["done"]:
                    end = now
                    marks.setdefault("the stats shown (the end)", time.time())
                    if first is not None:
                        break
                page.wait_for_timeout(50)
            print(f"{label:32s} first frame {first if first is None else round(first, 1)} s, "
                  f"end {end if end is None else round(end, 1)} s")
            cpu_after = cpu_seconds_by_program()
            spent = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_after.items()}
            print("  CPU seconds from the click to the end: " + ", ".join(
                f"{k} {v:.1f}" for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v >= 0.2))
            if stream:
                print("| step (streamed page) | seconds after the click |")
                print("|---|---:|")
                for name, at in sorted(marks.items(), key=lambda kv: kv[1]):
                    print(f"| {name} | {at - start:.2f} |")
            page.close()
    jobs.segments_then_result = original_segments
    print(f"load average after {load()}")


def cpu_seconds_by_program() -> dict[str, float]:
    """CPU seconds used so far by every live process on the host, by program name (from /proc): who took the
    cores during a run (the job's process, its ffmpeg children, Gradio's ffmpeg calls, Chromium)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1: text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        # its own time and that of its children it has waited for (ffmpeg calls that have ended)
        used[name] = used.get(name, 0.0) + sum(int(v) for v in fields[11:15]) / ticks
    return used


def _note_stream_response(response, marks: dict[str, float]) -> None:
    """The browser's side of the streamed result's timeline: the first playlist listing a segment, its fetch."""
    url = response.url
    if "playlist.m3u8" in url and "first playlist listing a segment" not in marks:
        try:
            if "#EXTINF" in response.text():
                marks["first playlist listing a segment"] = time.time()
        except Exception:  # a response the browser dropped: no text to read
            pass
    elif "/stream/" in url and url.split("?")[0].endswith(".ts"):
        marks.setdefault("first segment fetched by the player", time.time())


def onsets(times: list[tuple[float, float]], quiet: float = 0.5) -> list[float]:
    """Onset times from (time, loud?) samples in order: loud after at least `quiet` s without."""
    found, last_loud = [], -1e9
    for t, loud in times:
        if loud:
            if t - last_loud > quiet * 1000:
                found.append(t)
            last_loud = t
    return found


def pair(captured: list[float], heard: list[float]) -> list[float]:
    """Latencies (ms): each captured onset with the first heard onset after it (each heard one used once)."""
    out, j = [], 0
    for c in captured:
        while j < len(heard) and heard[j] < c:
            j += 1
        if j < len(heard) and heard[j] - c < 5000:
            out.append(heard[j] - c)
            j += 1
    return out


def summary(name: str, values: list[float], unit: str = "ms") -> str:
    if not values:
        return f"{name}: none"
    q = np.percentile(values, [50, 90]) if len(values) > 1 else [values[0], values[0]]
    return (f"{name}: median {q[0]:.0f} {unit}, 90th percentile {q[1]:.0f}, min {min(values):.0f}, "
            f"max {max(values):.0f} (n={len(values)})")


ANALYSERS = """
window.__onsets = {cap: [], out: []};
const tapInto = (ctx, node, list) => {
  const proc = ctx.createScriptProcessor(256, 1, 1);
  let last = -1e9;
  proc.onaudioprocess = (e) => {
    const x = e.inputBuffer.getChannelData(0);
    for (let i = 0; i < x.length; i++) if (Math.abs(x[i]) > 0.05) {
      const t = performance.now() - (x.length - i) / ctx.sampleRate * 1000;
      if (t - last > 500) list.push(t);
      last = t; break;
    }
  };
  node.connect(proc); proc.connect(ctx.destination);
};
const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = async (c) => {
  const stream = await original(c);
  const ctx = new AudioContext();
  tapInto(ctx, ctx.createMediaStreamSource(stream.clone()), window.__onsets.cap);
  return stream;
};
setInterval(() => document.querySelectorAll('video').forEach(v => {
  if (v.__tapped || !v.src) return;
  v.__tapped = true;
  const ctx = new AudioContext();
  const src = ctx.createMediaElementSource(v);
  src.connect(ctx.destination);
  tapInto(ctx, src, window.__onsets.out);
}), 200);
"""


PRECISION_LABELS = {"auto": "Automatic", "fp32": "fp32 (exact)", "bf16": "bf16 (faster"}


@contextlib.contextmanager
def serving_here(checkpoint: Path, work: Path, stream_result: bool = True) -> Iterator[tuple[str, object]]:
    """The web app served from this process (WebApp.start: as `python app.py` serves it), so its live sessions'
    traces and its handlers' timings can be read: (url, the WebApp). Measured once its warm-up is done."""
    from app_server import free_port

    os.environ.update(LIPSYNC_CHECKPOINT=str(checkpoint), LIPSYNC_OUTPUT_DIR=str(work / "out-here"),
                      GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    from webapp import AppConfig, WebApp

    config = AppConfig.from_environment()
    web = WebApp(config.with_changes(stream_result=config.stream_result and stream_result))
    port = free_port()
    demo = web.start("127.0.0.1", port, quiet=True)
    web.warm_up()  # waits for the models the server's own warm-up thread is loading (built once, shared)
    try:
        yield f"http://127.0.0.1:{port}/", web
    finally:
        demo.close()


def bench_live(seconds: float, checkpoint: Path, work: Path, compatible: bool, rate: float,
               precision: str = "auto") -> None:
    from app_server import serving
    from playwright.sync_api import sync_playwright

    wav = work / "bursts.wav"
    planned = bursts_wav(wav, seconds + 5)
    mode = "Gradio's own streaming (compatible mode)" if compatible else "streamed HTTP response (the live view)"
    print(f"## live, {mode}: astronaut photo, {len(planned)} tone bursts in {seconds:.0f} s, "
          f"frame rate {'auto' if not rate else rate}, {precision}; load average before {load()}")
    server = serving(checkpoint, work / "server-live.log", work / "out-live") if compatible else \
        serving_here(checkpoint, work)
    with server as served:
        url, web = served if isinstance(served, tuple) else (served, None)
        with sync_playwright() as pw:
            b = browser(pw, [f"--use-file-for-fake-audio-capture={wav}%noloop"])
            page = b.new_context(permissions=["microphone"], viewport={"width": 1400, "height": 1100}).new_page()
            if compatible:
                page.add_init_script(ANALYSERS)
            page.goto(url + "live", wait_until="load", timeout=60_000)
            page.locator("input[type=file]").first.set_input_files(str(ROOT / "examples" / "astronaut.jpg"))
            page.get_by_text("Face found").wait_for(timeout=120_000)
            if rate:
                page.get_by_role("button", name="Settings ▼").click()
                page.get_by_label(f"{rate:g} fps").check()
            if precision != "auto":
                if not rate:
                    page.get_by_role("button", name="Settings ▼").click()
                page.get_by_label(PRECISION_LABELS[precision], exact=False).check()
            page.wait_for_timeout(1000)
            if compatible:
                page.get_by_text("Compatible mode").click()
                page.get_by_role("button", name="Record").click()
            else:
                page.locator(".live-start").click()
            page.wait_for_timeout(int(seconds * 1000))
            if compatible:
                result = page.evaluate("() => window.__onsets")
                latencies = pair(result["cap"], result["out"])
                print(summary("mouth-to-ear latency", latencies))
            else:
                events = page.evaluate("() => window.lipsyncLive.events")
                kept = Path(tempfile.gettempdir()) / f"lipsync-live-events-{int(time.time())}.json"
                kept.write_text(json.dumps(events))  # for a closer look; the work folder goes
                print(f"events: {kept}")
                report_live(events, seconds)
                if page.locator(".live-stop").is_enabled():  # else the time limit ended it
                    page.locator(".live-stop").click()  # the session ends: the server keeps its trace
                page.wait_for_timeout(1500)
                if web is not None and web.live.traces:
                    report_budget(events, web.live.traces[-1])
            b.close()
    print(f"load average after {load()}")


def report_live(events: list[dict], seconds: float) -> None:
    hello = next((e for e in events if e["k"] == "hello"), {})
    print(f"session: {hello.get('fps')} fps, the generator timed at {hello.get('fs')} faces/s at its start")
    sent = [e for e in events if e["k"] == "sent"]
    play = [e for e in events if e["k"] == "play"]
    draws = [e for e in events if e["k"] == "draw"]
    captured = onsets([(e["t"] - (e["n"] - max(e["loud"], 0)) / 16.0, e["loud"] >= 0) for e in sent])
    heard = onsets([(e["heard"] + max(e["loud"], 0) / 16.0, e["loud"] >= 0) for e in play])
    latencies = pair(captured, heard)
    print(summary("mouth-to-ear latency", latencies))
    thirds = np.array_split(np.array(latencies), 3) if len(latencies) >= 3 else []
    if len(thirds):
        print("  by third of the session (ms, median): " + ", ".join(f"{np.median(t):.0f}" for t in thirds))
    offsets = [d["t"] - d["due"] for d in draws]
    print(summary("A/V offset (picture drawn - sound heard; + = sound first)", offsets))
    if play:
        span = (play[-1]["heard"] - play[0]["heard"]) / 1000
        indices = [e["i"] for e in play]
        gaps = sum(b - a - 1 for a, b in zip(indices, indices[1:]) if b > a + 1)
        fps_seen = (len(play) - 1) / span if span > 0 else 0
        per_second = np.bincount(((np.array([e["heard"] for e in play]) - play[0]["heard"]) / 1000).astype(int))
        print(f"frames played: {len(play)} in {span:.1f} s ({fps_seen:.1f} fps; per second min {per_second[:-1].min()}"
              f" max {per_second[:-1].max()}), index gaps: {gaps}, skipped by the page: "
              f"{sum(e['k'] == 'skip' for e in events)}, silent ones left out to drain the queue: "
              f"{sum(e['k'] == 'trim' for e in events)}, speaking frames: {sum(e['w'] > 0 for e in play)}")
    first_post = sent[0]["t"] if sent else 0
    print(f"posts: {len(sent)} in {(sent[-1]['t'] - first_post) / 1000 if sent else 0:.1f} s "
          f"(mean {statistics.mean(e['n'] for e in sent) / 16 if sent else 0:.0f} ms of audio each)")


def report_budget(events: list[dict], trace) -> None:
    """Where the time goes, step by step, from a frame's first sample captured to its sound heard (medians over the
    session's frames; ms): the page's client log and the server's trace, on the host's one wall clock."""
    hello = next(e for e in events if e["k"] == "hello")
    epoch = lambda perf_ms: (hello["origin"] + perf_ms) / 1000  # noqa: E731  (the page's clock to time.time())
    sent = [e for e in events if e["k"] == "sent"]
    cumulative = np.cumsum([e["n"] for e in sent])

    def captured(sample: int) -> tuple[float, float]:
        """(when input sample `sample` was captured, when the post holding it left), epoch seconds."""
        k = int(np.searchsorted(cumulative, sample, side="right"))
        post = sent[min(k, len(sent) - 1)]
        return epoch(post["t"] - (cumulative[min(k, len(sent) - 1)] - sample) / 16.0), epoch(post["t"])

    rows: dict[str, list[float]] = {name: [] for name in BUDGET_STEPS}
    speaking: dict[str, list[float]] = {name: [] for name in BUDGET_STEPS}
    played = {e["i"]: e for e in events if e["k"] == "play"}
    counts = trace.counts()
    for index, frame in list(trace.frames.items()):
        play, source = played.get(index), trace.source(frame.needed_sample, counts)
        if play is None or source is None or not frame.sent:  # source None: silence stood in for late audio
            continue
        ready, needed_sample = source
        first_sample = needed_sample - (frame.needed_sample - frame.first_sample)
        if needed_sample >= cumulative[-1] or first_sample < 0:
            continue
        start, _ = captured(first_sample)
        needed, posted = captured(needed_sample)
        arrived, heard = epoch(play["t"]), epoch(play["heard"])
        marks = [start, needed, posted, ready, frame.planned, frame.rendered, frame.encoded, frame.sent, arrived,
                 heard]
        for table in (rows, speaking) if frame.speaking else (rows,):
            for values, a, b in zip(table.values(), marks, marks[1:]):
                values.append(1000 * (b - a))
            table[BUDGET_STEPS[-1]].append(1000 * (heard - start))
    print("| step | all frames: median ms | 90th percentile | speaking frames: median ms | 90th percentile |")
    print("|---|---:|---:|---:|---:|")
    for name in BUDGET_STEPS:
        cells = [f"{np.median(t[name]):.0f} | {np.percentile(t[name], 90):.0f}" if t[name] else "- | -"
                 for t in (rows, speaking)]
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    print(f"(frames traced: {len(rows[BUDGET_STEPS[-1]])}, speaking {len(speaking[BUDGET_STEPS[-1]])}; the page's "
          f"audio output latency it reports: {1000 * hello.get('out', 0):.0f} ms, inside the last step)")


BUDGET_STEPS = (
    "look-ahead: the window's last sample captured (Wav2Lip's 0.2 s + the STFT's half window)",
    "capture chunk: that sample posted (AudioWorklet blocks, posts of 20 ms, one at a time)",
    "post: to the server",
    "waiting for the model (a batch, or the model busy with the one before)",
    "model and paste",
    "JPEG",
    "hand-over to the connection",
    "response: to the page",
    "the page's play queue and audio output (JITTER, backlog)",
    "total: first sample captured -> its sound heard",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["streamed", "live"])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--compatible", action="store_true", help="live: Gradio's own streaming instead")
    parser.add_argument("--rate", type=float, default=0.0, help="live: a fixed frame rate (25, 20, 12.5)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="live: the generator's")
    parser.add_argument("--checkpoint", help="a real checkpoint instead of random weights")
    args = parser.parse_args()
    import media

    work = Path(tempfile.mkdtemp(prefix="lipsync-live-bench-"))
    checkpoint = Path(args.checkpoint) if args.checkpoint else work / "random_wav2lip.pth"
    if not checkpoint.exists():
        media.make_checkpoint(checkpoint)
    try:
        if args.what == "streamed":
            bench_streamed(args.seconds, checkpoint, work)
        else:
            bench_live(args.seconds, checkpoint, work, args.compatible, args.rate, args.precision)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
