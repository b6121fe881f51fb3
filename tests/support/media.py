"""Test and benchmark data made on the spot: a random checkpoint, face clips, speech.

Nothing here touches the network. The face is scikit-image's astronaut photo (a
public-domain NASA portrait), panned and zoomed so the face moves with known geometry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import wave
from pathlib import Path

import cv2
import numpy as np
import torch

from lipsync.media.ffmpeg import ffmpeg_exe

OFFICIAL_LAYOUT = Path(__file__).resolve().parents[1] / "data" / "wav2lip_state_dict.json"  # names and shapes


def astronaut_bgr() -> np.ndarray:
    import skimage.data

    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


def make_checkpoint(path: Path, seed: int = 0, legacy_format: bool = True, optimizer_state: bool = False) -> Path:
    """A Wav2Lip checkpoint with random weights in the official layout.

    {'state_dict': {'module.<name>': tensor}, 'optimizer': …, 'global_step': …, 'global_epoch': …},
    saved in torch's legacy (pre-1.6, non-zip) format by default, like the official files.
    With `optimizer_state`, the optimizer holds Adam's two moments of every parameter, as the
    official files do (two thirds of their 436 MB); without, it is empty (145 MB).
    """
    from lipsync.generator.network import Wav2Lip

    torch.manual_seed(seed)
    model = Wav2Lip()
    for module in model.modules():  # random but sane batch-norm statistics, so outputs are not saturated
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    params = [p.detach() for p in model.parameters()]
    moments = {i: {"step": 1, "exp_avg": torch.randn_like(p), "exp_avg_sq": torch.rand_like(p)}
               for i, p in enumerate(params)} if optimizer_state else {}
    groups = [{"lr": 1e-4, "betas": (0.5, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
               "params": list(range(len(params)))}]
    checkpoint = {"state_dict": state, "optimizer": {"state": moments, "param_groups": groups},
                  "global_step": 1, "global_epoch": 1}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy_format)
    return path


def overwrite_keeping_mtime(path: Path, content: bytes) -> None:
    """Overwrite `path` in place (same inode) with `content` of the same size, its mtime put back, as `cp -p` or
    `rsync -a --inplace` leave a replaced file: only its ctime tells."""
    before = path.stat()
    assert len(content) == before.st_size
    with open(path, "r+b") as f:
        f.write(content)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)


def random_s3fd(frames: list[np.ndarray], seed: int = 0, face_logit: tuple[float, float] = (-4.5, 2.0)):
    """An S3FD network (lipsync.faces.s3fd) with random weights that find 'faces' in `frames` (BGR, one size).

    Plain random weights give face probabilities near 0.5 everywhere (every cell a candidate, none confident)
    and box offsets near 0 on the coarse maps. Here each class head is rescaled so that, on these frames, the
    background logit is 0 and the face logit has the given mean and spread (a few cells per frame above 0.5,
    a few more above 0.05), and each box head so that its offsets spread about 0.5: thresholds, NMS and the
    decoding all have work to do.
    """
    from lipsync.faces.s3fd import S3FDNet, detect_faces

    torch.manual_seed(seed)
    net = S3FDNet().eval()
    heads = {name: m for name, m in net.named_children() if name.endswith(("_mbox_conf", "_mbox_loc"))}
    seen: dict[torch.nn.Module, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, _, out: seen.__setitem__(m, out)) for m in heads.values()]
    detect_faces(net, torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2))
    for hook in hooks:
        hook.remove()
    mean, spread = face_logit
    with torch.no_grad():
        for name, head in heads.items():
            out = seen[head]
            if name.endswith("_conf"):  # a class head: the background outputs zero, the last one the face
                face = out[:, -1]
                gain = spread / face.std()
                head.weight[-1] *= gain
                head.bias[-1] = (head.bias[-1] - face.mean()) * gain + mean
                head.weight[:-1] = 0
                head.bias[:-1] = 0
            else:  # a box head
                gain = 0.5 / out.std()
                head.weight *= gain
                head.bias.copy_((head.bias - out.mean(dim=(0, 2, 3))) * gain)
    return net


def official_key_layout() -> list[tuple[str, list[int]]]:
    return [(k, s) for k, s in json.loads(OFFICIAL_LAYOUT.read_text())["state_dict"]]


def pan_zoom_frames(n: int, size: tuple[int, int] = (320, 240), seed: int = 0):
    """Frames of the astronaut seen through a moving, zooming window (BGR, width x height = size)."""
    photo = astronaut_bgr()
    width, height = size
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi)
    for i in range(n):
        t = i / max(1, n - 1)
        zoom = 1.0 + 0.15 * np.sin(2 * np.pi * t + phase)
        cx = 223 + 12 * np.sin(4 * np.pi * t)
        cy = 150 + 8 * np.cos(4 * np.pi * t)
        half_w = 170 / zoom
        half_h = half_w * height / width
        matrix = np.array([[width / (2 * half_w), 0, -(cx - half_w) * width / (2 * half_w)],
                           [0, height / (2 * half_h), -(cy - half_h) * height / (2 * half_h)]])
        yield cv2.warpAffine(photo, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def read_all_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video as OpenCV decodes it (BGR), for checks against what OpenCV-based code sees."""
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            capture.release()
            return frames
        frames.append(frame)


def write_video(path: Path, frames, fps: str | float, size: tuple[int, int], audio: Path | None = None,
                extra: list[str] | None = None) -> Path:
    """Encode BGR frames to a file with ffmpeg (H.264 unless `extra` says otherwise)."""
    width, height = size
    cmd = [ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}",
           "-framerate", str(fps), "-i", "-"]
    if audio is not None:
        cmd += ["-i", str(audio), "-map", "0:v", "-map", "1:a", "-c:a", "aac", "-shortest"]
    cmd += (extra or ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "12", "-pix_fmt", "yuv420p"]) + [str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    for frame in frames:
        proc.stdin.write(np.ascontiguousarray(frame).tobytes())
    proc.stdin.close()
    assert proc.wait() == 0, f"ffmpeg failed writing {path}"
    return path


def make_face_video(path: Path, seconds: float = 2.0, fps: str | float = 25, size=(320, 240),
                    audio: Path | None = None) -> Path:
    n = int(round(seconds * float(eval(str(fps)) if isinstance(fps, str) else fps)))
    return write_video(path, pan_zoom_frames(n, size), fps, size, audio)


def speech_samples(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Speech-like sound without a TTS engine: voiced syllables (harmonics of a moving pitch) and pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = (np.sin(2 * np.pi * 3.5 * t + rng.uniform(0, 6)) > -0.2).astype(float)
    envelope = np.convolve(syllables, np.ones(400) / 400, mode="same")
    noise = rng.normal(0, 0.02, size=t.shape)
    return (0.3 * voice / 3 * envelope + noise * envelope).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000, channels: int = 1) -> Path:
    data = np.clip(samples, -1, 1)
    if channels > 1:
        data = np.repeat(data[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((data * 32767).astype("<i2").tobytes())
    return path


def make_speech(path: Path, seconds: float = 2.0, rate: int = 16000) -> Path:
    """Real synthetic speech from espeak-ng when installed, else speech-like tones; always `seconds` long."""
    espeak = shutil.which("espeak-ng")
    if espeak:
        raw = path.with_suffix(".espeak.wav")
        text = "The quick brown fox jumps over the lazy dog while we test lip sync. " * 6
        subprocess.run([espeak, "-s", "150", "-w", str(raw), text], check=True, capture_output=True)
        subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-i", str(raw), "-t", f"{seconds}", "-ar", str(rate),
                        "-ac", "1", "-af", "apad", str(path)], check=True)
        raw.unlink()
        return path
    return write_wav(path, speech_samples(seconds, rate), rate)


def convert(source: Path, target: Path, *args: str) -> Path:
    """Re-encode `source` into `target` with ffmpeg (format from the name, codec options in `args`)."""
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-i", str(source), *args, str(target)], check=True)
    return target


def make_vfr_video(path: Path, frames: int = 30, size=(240, 180)) -> Path:
    """A variable-frame-rate clip: 25 fps for the first half, 10 fps after (what phones and screen recorders make)."""
    half = frames // 2
    expr = f"if(lt(N,{half}),N/25,{half}/25+(N-{half})/10)/TB"
    return write_video(path, pan_zoom_frames(frames, size), 25, size,
                       extra=["-vf", f"setpts='{expr}'", "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast",
                              "-pix_fmt", "yuv420p"])


def make_video_with_gap(path: Path, frames: int = 25, gap: range = range(8, 14), size=(240, 180)) -> Path:
    """A face clip in which some frames show no face (a flat grey card), as when someone walks out of shot."""
    def frames_with_gap():
        for i, frame in enumerate(pan_zoom_frames(frames, size)):
            yield np.full_like(frame, 120) if i in gap else frame
    return write_video(path, frames_with_gap(), 25, size)


def write_image(path: Path, kind: str) -> Path:
    """The astronaut photo as a greyscale PNG, an RGBA PNG, a CMYK JPEG or a WebP."""
    from PIL import Image

    rgb = cv2.cvtColor(astronaut_bgr(), cv2.COLOR_BGR2RGB)
    if kind == "grey_png":
        Image.fromarray(rgb).convert("L").save(path, format="PNG")
    elif kind == "rgba_png":
        image = Image.fromarray(rgb).convert("RGBA")
        image.putalpha(200)
        image.save(path, format="PNG")
    elif kind == "cmyk_jpeg":
        Image.fromarray(rgb).convert("CMYK").save(path, format="JPEG", quality=92)
    elif kind == "webp":
        Image.fromarray(rgb).save(path, format="WEBP", quality=90)
    else:
        raise ValueError(kind)
    return path


def random_gfpgan_state(seed: int = 0) -> dict:
    """Random GFPGAN v1.4 weights whose activations stay sane (output of order 1, no NaN or overflow) and whose
    output depends on the input (so a comparison of two implementations means something).

    PyTorch's default initialisation shrinks activations layer by layer (the latents would be their biases,
    whatever the face), so: the plain convolutions and linear layers variance-preserving for leaky ReLU 0.2 (each
    branch of a residual sum at half the variance), biases small; each modulation's bias at 1 (as basicsr
    initialises it); the SFT conditions near a scale of 1 and a shift of 0 (their last layer at a tenth); the
    noise strengths at 0.1.
    """
    import math

    from lipsync.restore.gfpgan import GFPGAN

    torch.manual_seed(seed)
    model = GFPGAN()
    gain = math.sqrt(2 / (1 + 0.2 ** 2))
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("modulation"):
                module.bias.fill_(1.0)
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and "style_mlp" not in name:
                std = gain / math.sqrt(module.weight[0].numel()) / (math.sqrt(2) if name.endswith(("conv2", "skip"))
                                                                    else 1)
                module.weight.normal_(0, std)
                if module.bias is not None:
                    module.bias.normal_(0, 0.1)
        for scale, shift in zip(model.condition_scale, model.condition_shift):
            scale[2].weight.mul_(0.1)
            shift[2].weight.mul_(0.1)
            scale[2].bias.add_(1.0)
        for name, param in model.named_parameters():
            if name.endswith(".weight") and param.ndim == 1:  # StyleConv's noise strength
                param.fill_(0.1)
    return model.state_dict()


def make_gfpgan(path: Path, seed: int = 0) -> Path:
    """A GFPGAN release file with random weights in the official layout: {'params_ema': state_dict} (~350 MB)."""
    torch.save({"params_ema": random_gfpgan_state(seed)}, path)
    return path
