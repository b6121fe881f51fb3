// The live page's client (run by gr.HTML as js_on_load; `element` and `props` come from Gradio).
// The microphone goes up as 16 kHz PCM in small POSTs (20 ms, more while one is on its way); the frames come
// back in one streamed response, each in one message with its own sound (lipsync/live/messages.py). Sound and
// picture are played on the AudioContext's clock: a frame is drawn
// when its sound is heard, so they stay together however late the network is. A short queue (JITTER) absorbs
// uneven arrival; when frames come faster than they play, the queue is cut at MAX_AHEAD so the stream stays live,
// and once a burst has pushed it past JITTER + TRIM, silent idle frames are left out until it is back: otherwise
// every burst (a model batch, a stall) would leave its delay in the stream for good.
const RATE = 16000, CHUNK = 320, JITTER = 0.05, TRIM = 0.04, MAX_AHEAD = 0.3, LOUD = 0.05;
const startButton = element.querySelector(".live-start");
const stopButton = element.querySelector(".live-stop");
const canvas = element.querySelector("canvas");
const status = element.querySelector(".live-status");
const painter = canvas.getContext("2d");
const log = (window.lipsyncLive = window.lipsyncLive || { events: [] }); // read by bench/live_bench.py
let run = null;

function say(text) { status.textContent = text; }

function firstLoud(samples, scale) {
  for (let i = 0; i < samples.length; i++) if (Math.abs(samples[i]) * scale > LOUD) return i;
  return -1;
}

function url(path, params) {
  const root = new URL((window.gradio_config && window.gradio_config.root) || "/", window.location.href);
  const target = new URL(path, root.href.endsWith("/") ? root.href : root.href + "/");
  Object.entries(params).forEach(([k, v]) => target.searchParams.set(k, v));
  return target.href;
}

function stop(reason) {
  if (!run) return;
  const r = run;
  run = null;
  r.abort.abort();
  r.stream.getTracks().forEach((t) => t.stop());
  r.ctx.close();
  startButton.disabled = false;
  stopButton.disabled = true;
  say(reason || "Stopped.");
}

async function start() {
  const ticket = props.value;
  if (!ticket) { say("Upload an avatar first."); return; }
  stop();
  startButton.disabled = true;
  const ctx = new AudioContext({ sampleRate: RATE, latencyHint: "interactive" });
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: true } });
  } catch (err) {
    ctx.close();
    startButton.disabled = false;
    say("The microphone is not available (" + err.message + "). Allow it for this page and try again.");
    return;
  }
  const tapCode = "class Tap extends AudioWorkletProcessor { process(inputs) { const c = inputs[0][0];" +
    " if (c) this.port.postMessage(c.slice(0)); return true; } } registerProcessor('lipsync-tap', Tap);";
  await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([tapCode], { type: "text/javascript" })));
  const tap = new AudioWorkletNode(ctx, "lipsync-tap");
  const mute = ctx.createGain();
  mute.gain.value = 0;
  ctx.createMediaStreamSource(stream).connect(tap);
  tap.connect(mute).connect(ctx.destination); // keeps the tap pulled; nothing of the microphone is heard
  const output = ctx.createGain();
  output.connect(ctx.destination);
  log.ctx = ctx;
  log.output = output;
  const abort = new AbortController();
  const queue = []; // frames scheduled: {time, bitmap, index}
  const r = (run = { abort, stream, ctx, playhead: 0, key: null, posting: false });
  let pending = new Float32Array(0);
  const post = () => { // one post at a time, in order; what the microphone gave meanwhile goes in the next
    if (run !== r || !r.key || r.posting || pending.length < CHUNK) return;
    const pcm = new Int16Array(pending.length);
    for (let i = 0; i < pending.length; i++) pcm[i] = Math.max(-1, Math.min(1, pending[i])) * 32767;
    log.events.push({ k: "sent", t: performance.now(), n: pending.length, loud: firstLoud(pending, 1) });
    pending = new Float32Array(0);
    r.posting = true;
    fetch(url("live/audio", { key: r.key }), { method: "POST", body: pcm.buffer, signal: abort.signal })
      .then((response) => { r.posting = false; if (response.status === 410) stop("The session ended."); else post(); })
      .catch(() => { r.posting = false; });
  };
  tap.port.onmessage = (event) => {
    const joined = new Float32Array(pending.length + event.data.length);
    joined.set(pending);
    joined.set(event.data, pending.length);
    pending = r.key ? joined : new Float32Array(0); // nothing is kept before the session has started
    post();
  };
  const toPerformance = (contextTime) => {
    const stamp = ctx.getOutputTimestamp();
    return stamp.performanceTime + (contextTime - stamp.contextTime) * 1000;
  };
  const handle = async (kind, body) => {
    if (kind === 0) {
      const hello = JSON.parse(new TextDecoder().decode(body));
      if (hello.error) { stop(hello.error); return; }
      r.key = hello.key;
      log.events.push({ k: "hello", fps: hello.fps, fs: hello.faces_per_second, t: performance.now(),
                        origin: performance.timeOrigin, out: (ctx.baseLatency || 0) + (ctx.outputLatency || 0) });
      canvas.width = hello.width;
      canvas.height = hello.height;
      stopButton.disabled = false;
      say("Live at " + hello.fps + " fps. Speak: the avatar follows (headphones keep it from hearing itself).");
      return;
    }
    const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
    const index = view.getUint32(0, true), size = view.getUint32(4, true), weight = view.getFloat32(8, true);
    const pcm = new Int16Array(body.slice(12 + size).buffer);
    const now = ctx.currentTime;
    if (r.playhead < now + 0.01) r.playhead = now + JITTER; // the start, or the network fell behind
    if (r.playhead > now + MAX_AHEAD) { log.events.push({ k: "skip", i: index }); return; }
    if (r.playhead > now + JITTER + TRIM && weight === 0 && firstLoud(pcm, 1 / 32768) < 0) {
      log.events.push({ k: "trim", i: index }); // a silent idle frame left out: the queue drains back to JITTER
      return;
    }
    const sound = ctx.createBuffer(1, pcm.length, RATE);
    const channel = sound.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
    const player = ctx.createBufferSource();
    player.buffer = sound;
    player.connect(output);
    player.start(r.playhead);
    const entry = { time: r.playhead, bitmap: null, index };
    queue.push(entry);
    log.events.push({ k: "play", i: index, w: weight, heard: toPerformance(r.playhead), loud: firstLoud(pcm, 1 / 32768),
                      n: pcm.length, t: performance.now() });
    r.playhead += pcm.length / RATE;
    entry.bitmap = await createImageBitmap(new Blob([body.subarray(12, 12 + size)], { type: "image/jpeg" }));
  };
  (async () => { // read the stream: messages of a 5-byte prefix (length, kind) and a body
    let response;
    try {
      response = await fetch(url("live/stream", { ticket }), { signal: abort.signal, cache: "no-store" });
    } catch (err) { if (run === r) stop("The connection to the server failed."); return; }
    const reader = response.body.getReader();
    let buffer = new Uint8Array(0);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const joined = new Uint8Array(buffer.length + value.length);
        joined.set(buffer);
        joined.set(value, buffer.length);
        buffer = joined;
        while (buffer.length >= 5) {
          const size = new DataView(buffer.buffer, buffer.byteOffset).getUint32(0, true);
          if (buffer.length < 5 + size) break;
          handle(buffer[4], buffer.slice(5, 5 + size));
          buffer = buffer.slice(5 + size);
        }
      }
    } catch (err) { /* stopped */ }
    if (run === r) stop("The session ended.");
  })();
  const draw = () => {
    if (run !== r) return;
    const heard = ctx.getOutputTimestamp().contextTime; // the moment of the sound coming out now
    let shown = null;
    while (queue.length && queue[0].bitmap && queue[0].time <= heard) {
      if (shown) shown.bitmap.close();
      shown = queue.shift();
    }
    if (shown) {
      painter.drawImage(shown.bitmap, 0, 0);
      shown.bitmap.close();
      log.events.push({ k: "draw", i: shown.index, t: performance.now(), due: toPerformance(shown.time) });
    }
    requestAnimationFrame(draw);
  };
  requestAnimationFrame(draw);
}

startButton.addEventListener("click", start);
stopButton.addEventListener("click", () => stop());
