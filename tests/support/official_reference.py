"""The official inference.py's data path, restated step by step as a yardstick for the tests.

It mirrors the official script's choices on purpose (cv2 decoding, every frame in a
list, librosa.load, the in-place integer smoothing, the float64 batch built with
numpy) so that our streaming engine can be compared with it frame by frame. Face
detection is injected (the tests have no S3FD weights): `detect` maps a list of BGR
frames to one (x1, y1, x2, y2) or None each, as the official get_detections_for_batch does.
"""

from __future__ import annotations

import cv2
import librosa
import numpy as np
import torch
from scipy import signal


def official_mel(path: str) -> np.ndarray:
    wav = librosa.core.load(path, sr=16000)[0]
    stft = librosa.stft(y=signal.lfilter([1, -0.97], [1], wav), n_fft=800, hop_length=200, win_length=800)
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(np.exp(-100 / 20 * np.log(10)), np.dot(basis, np.abs(stft)))) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4)


def official_chunks(mel: np.ndarray, fps: float) -> list[np.ndarray]:
    chunks, i = [], 0
    while True:
        start = int(i * (80.0 / fps))
        if start + 16 > len(mel[0]):
            chunks.append(mel[:, len(mel[0]) - 16:])
            return chunks
        chunks.append(mel[:, start: start + 16])
        i += 1


def official_frames(face: str, audio: str, model, detect=None, box=(-1, -1, -1, -1), pads=(0, 10, 0, 0),
                    resize_factor=1, crop=(0, -1, 0, -1), rotate=False, static=False, fps=25.0,
                    batch_size=128, nosmooth=False) -> list[np.ndarray]:
    image = cv2.imread(face)
    if image is not None and face.rsplit(".", 1)[-1] in ("jpg", "png", "jpeg"):
        full_frames, static = [image], True
    else:
        cap = cv2.VideoCapture(face)
        fps = cap.get(cv2.CAP_PROP_FPS)
        full_frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if resize_factor > 1:
                frame = cv2.resize(frame, (frame.shape[1] // resize_factor, frame.shape[0] // resize_factor))
            if rotate:
                frame = cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE)
            y1, y2, x1, x2 = crop
            x2 = frame.shape[1] if x2 == -1 else x2
            y2 = frame.shape[0] if y2 == -1 else y2
            full_frames.append(frame[y1:y2, x1:x2])
    mel_chunks = official_chunks(official_mel(audio), fps)
    full_frames = full_frames[: len(mel_chunks)]
    frames = full_frames.copy()

    if box[0] == -1:
        targets = [frames[0]] if static else frames
        results = []
        for rect, image in zip(detect(targets), targets):
            y1 = max(0, rect[1] - pads[0])
            y2 = min(image.shape[0], rect[3] + pads[1])
            x1 = max(0, rect[0] - pads[2])
            x2 = min(image.shape[1], rect[2] + pads[3])
            results.append([x1, y1, x2, y2])
        boxes = np.array(results)
        if not nosmooth:
            for i in range(len(boxes)):
                window = boxes[len(boxes) - 5:] if i + 5 > len(boxes) else boxes[i: i + 5]
                boxes[i] = np.mean(window, axis=0)
        face_det = [[im[y1:y2, x1:x2], (y1, y2, x1, x2)] for im, (x1, y1, x2, y2) in zip(targets, boxes)]
    else:
        y1, y2, x1, x2 = box
        face_det = [[f[y1:y2, x1:x2], (y1, y2, x1, x2)] for f in frames]

    out = []
    for start in range(0, len(mel_chunks), batch_size):
        imgs, mels, fr, coords = [], [], [], []
        for i in range(start, min(start + batch_size, len(mel_chunks))):
            idx = 0 if static else i % len(frames)
            face_img, c = face_det[idx]
            imgs.append(cv2.resize(face_img, (96, 96)))
            mels.append(mel_chunks[i])
            fr.append(frames[idx].copy())
            coords.append(c)
        imgs, mels = np.asarray(imgs), np.asarray(mels)
        masked = imgs.copy()
        masked[:, 48:] = 0
        imgs = np.concatenate((masked, imgs), axis=3) / 255.
        mels = np.reshape(mels, [len(mels), mels.shape[1], mels.shape[2], 1])
        with torch.no_grad():
            pred = model(torch.FloatTensor(np.transpose(mels, (0, 3, 1, 2))),
                         torch.FloatTensor(np.transpose(imgs, (0, 3, 1, 2))))
        pred = pred.cpu().numpy().transpose(0, 2, 3, 1) * 255.
        for p, f, (y1, y2, x1, x2) in zip(pred, fr, coords):
            f[y1:y2, x1:x2] = cv2.resize(p.astype(np.uint8), (x2 - x1, y2 - y1))
            out.append(f)
    return out
