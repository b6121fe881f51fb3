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
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]
import numpy as np

import lipsync  # noqa: F401  (first: sets the threading environment before torch loads)

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
    import media
    from app_server import serving
    from playwright.sync_api import sync_playwright

    speech = media.make_speech(work / f"speech-{seconds:.0f}s.wav", seconds)
    face = ROOT / "examples" / "astronaut.mp4"
    print(f"## streamed result: {face.name} + {seconds:.0f} s of speech, load average before {load()}")
    for label, stream in (("streamed (this page)", "1"), ("whole file at the end (before)", "0")):
        os.environ["LIPSYNC_STREAM_RESULT"] = stream
        with serving(checkpoint, work / f"server-{stream}.log", work / f"out-{stream}") as url:
            with sync_playwright() as pw:
                page = browser(pw).new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url, wait_until="load", timeout=60_000)
                page.locator("input[type=file][accept*='image']").first.set_input_files(str(face))
                page.locator("input[type=file][accept*='audio']").first.set_input_files(str(speech))
                page.get_by_text("Green: with padding").wait_for(timeout=120_000)
                page.get_by_role("button", name="Sync lips").click()
                start, first, end = time.time(), None, None
                while time.time() - start < 30 * seconds:
                    state = page.evaluate("""() => ({
                        played: Array.from(document.querySelectorAll('video')).some(v => !v.src.includes('original')
                                && v.currentTime > 0),
                        ready: Array.from(document.querySelectorAll('video')).some(v => v.readyState >= 2
                                && !v.src.includes('original')),
                        done: document.body.innerText.includes('without a face')})""")
                    now = time.time() - start
                    if first is None and (state["played"] or (stream == "0" and state["ready"])):
                        first = now
                    if state["done"]:
                        end = now
                        if first is not None:
                            break
                    page.wait_for_timeout(100)
                print(f"{label:32s} first frame {first if first is None else round(first, 1)} s, "
                      f"end {end if end is None else round(end, 1)} s")
                page.close()
    print(f"load average after {load()}")


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


def bench_live(seconds: float, checkpoint: Path, work: Path, compatible: bool, rate: float,
               precision: str = "fp32") -> None:
    from app_server import serving
    from playwright.sync_api import sync_playwright

    wav = work / "bursts.wav"
    planned = bursts_wav(wav, seconds + 5)
    mode = "Gradio's own streaming (compatible mode)" if compatible else "streamed HTTP response (the live view)"
    print(f"## live, {mode}: astronaut photo, {len(planned)} tone bursts in {seconds:.0f} s, "
          f"frame rate {'auto' if not rate else rate}, {precision}; load average before {load()}")
    with serving(checkpoint, work / "server-live.log", work / "out-live") as url:
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
            if precision != "fp32":
                if not rate:
                    page.get_by_role("button", name="Settings ▼").click()
                page.get_by_label("bf16", exact=False).check()
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
            if not compatible and page.locator(".live-stop").is_enabled():  # else the time limit ended it
                page.locator(".live-stop").click()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["streamed", "live"])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--compatible", action="store_true", help="live: Gradio's own streaming instead")
    parser.add_argument("--rate", type=float, default=0.0, help="live: a fixed frame rate (25, 20, 12.5)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="live: the generator's")
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
