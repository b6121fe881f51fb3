"""joonson/syncnet_python's SyncNet and its evaluation arithmetic, restated as a yardstick for lipsync.scoring.

Read from SyncNetModel.py and SyncNetInstance.py of joonson/syncnet_python (MIT) at commit
6efbb1c305c23f47a62b09cf4215a8ac45e97d49 ("new detector combined") and written again here,
in our own words, with the official structure kept on purpose: the network as four
nn.Sequentials with every layer spelled out (so its state_dict names are the release
file's), the distance search as the official one computes it (torch's pairwise_distance
with its 1e-6 epsilon, the audio embeddings zero-padded by vshift at both ends), and the
evaluate() arithmetic over every frame held in memory at once, with scipy's medfilt.
Only the official I/O is left out (ffmpeg to JPEG files and back, wavfile): the tests
feed both sides the same decoded crops and the same 16-bit samples.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import python_speech_features
import torch
from scipy import signal
from torch import nn


class ReferenceS(nn.Module):
    """SyncNetModel.S(num_layers_in_fc_layers=1024), layer by layer."""

    def __init__(self, fc: int = 1024) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),
            nn.Conv2d(64, 192, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)), nn.BatchNorm2d(192), nn.ReLU(),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),
            nn.Conv2d(192, 384, kernel_size=(3, 3), padding=(1, 1)), nn.BatchNorm2d(384), nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=(3, 3), padding=(1, 1)), nn.BatchNorm2d(256), nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=(3, 3), padding=(1, 1)), nn.BatchNorm2d(256), nn.ReLU(),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),
            nn.Conv2d(256, 512, kernel_size=(5, 4), padding=(0, 0)), nn.BatchNorm2d(512), nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, fc))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, fc))
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0), nn.BatchNorm3d(96), nn.ReLU(),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), nn.BatchNorm3d(256),
            nn.ReLU(), nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0), nn.BatchNorm3d(512), nn.ReLU(),
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.netcnnaud(x)
        return self.netfcaud(mid.view((mid.size()[0], -1)))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.netcnnlip(x)
        return self.netfclip(mid.view((mid.size()[0], -1)))


def random_syncnet(seed: int = 0) -> ReferenceS:
    """The reference network with random weights and batch-norm statistics (made the same way every session)."""
    torch.manual_seed(seed)
    model = ReferenceS()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return model.eval()


def save_random_syncnet(legacy: Path, zipped: Path | None = None) -> None:
    """The same random weights as the release file is saved (legacy format, no batch-norm counters) and, given
    `zipped`, in torch's zip format with them (55 MB each)."""
    state = random_syncnet().state_dict()
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, legacy,
               _use_new_zipfile_serialization=False)
    if zipped is not None:
        torch.save(state, zipped)


def load_reference(path: str) -> ReferenceS:
    """The reference network with a state dict file loaded the official way: each tensor copied by name."""
    model = ReferenceS()
    own = model.state_dict()
    for name, value in torch.load(path, map_location="cpu", weights_only=True).items():
        own[name].copy_(value)
    return model.eval()


def calc_pdist(feat1: torch.Tensor, feat2: torch.Tensor, vshift: int = 10) -> list[torch.Tensor]:
    """For each lip embedding i, its distances to audio embeddings i - vshift .. i + vshift (zeros past the ends)."""
    win = vshift * 2 + 1
    padded = torch.nn.functional.pad(feat2, (0, 0, vshift, vshift))
    return [torch.nn.functional.pairwise_distance(feat1[[i], :].repeat(win, 1), padded[i:i + win, :])
            for i in range(len(feat1))]


def official_mfcc(pcm: np.ndarray) -> np.ndarray:
    """(13, T): python_speech_features.mfcc at 16 kHz with its defaults, transposed as evaluate() stacks it."""
    return np.stack([np.array(row) for row in zip(*python_speech_features.mfcc(pcm, 16000))])


def evaluate(model: ReferenceS, crops: list[np.ndarray], pcm: np.ndarray, vshift: int = 15, batch_size: int = 20):
    """SyncNetInstance.evaluate after its file reads: `crops` are the 224x224 BGR frames it would read back from
    JPEG, `pcm` the 16 kHz int16 samples of its audio.wav. Returns (offset, conf, minval, fconfm, dists)."""
    im = np.transpose(np.expand_dims(np.stack(crops, axis=3), axis=0), (0, 3, 4, 1, 2))
    imtv = torch.from_numpy(im.astype(float)).float()
    cc = np.expand_dims(np.expand_dims(official_mfcc(pcm), axis=0), axis=0)
    cct = torch.from_numpy(cc.astype(float)).float()
    min_length = min(len(crops), math.floor(len(pcm) / 640))
    lastframe = min_length - 5
    im_feat, cc_feat = [], []
    with torch.no_grad():
        for i in range(0, lastframe, batch_size):
            frames = range(i, min(lastframe, i + batch_size))
            im_feat.append(model.forward_lip(torch.cat([imtv[:, :, v:v + 5, :, :] for v in frames], 0)))
            cc_feat.append(model.forward_aud(torch.cat([cct[:, :, :, v * 4:v * 4 + 20] for v in frames], 0)))
    im_feat, cc_feat = torch.cat(im_feat, 0), torch.cat(cc_feat, 0)
    dists = calc_pdist(im_feat, cc_feat, vshift=vshift)
    mdist = torch.mean(torch.stack(dists, 1), 1)
    minval, minidx = torch.min(mdist, 0)
    offset = vshift - minidx
    conf = torch.median(mdist) - minval
    fdist = np.stack([d[minidx].numpy() for d in dists])
    fconf = torch.median(mdist).numpy() - fdist
    fconfm = signal.medfilt(fconf, kernel_size=9)
    return int(offset), float(conf), float(minval), fconfm, np.array([d.numpy() for d in dists])


def crop_track(frames: list[np.ndarray], boxes: np.ndarray, crop_scale: float = 0.4) -> list[np.ndarray]:
    """run_pipeline.crop_video's frames: `boxes` (n, 4) x1 y1 x2 y2 per frame, as its track holds them."""
    dets = {"x": [], "y": [], "s": []}
    for det in boxes:
        dets["s"].append(max((det[3] - det[1]), (det[2] - det[0])) / 2)
        dets["y"].append((det[1] + det[3]) / 2)
        dets["x"].append((det[0] + det[2]) / 2)
    for key in ("s", "x", "y"):
        dets[key] = signal.medfilt(dets[key], kernel_size=13)
    out = []
    for fidx, image in enumerate(frames):
        cs = crop_scale
        bs = dets["s"][fidx]
        bsi = int(bs * (1 + 2 * cs))
        frame = np.pad(image, ((bsi, bsi), (bsi, bsi), (0, 0)), "constant", constant_values=(110, 110))
        my = dets["y"][fidx] + bsi
        mx = dets["x"][fidx] + bsi
        face = frame[int(my - bs):int(my + bs * (1 + 2 * cs)), int(mx - bs * (1 + cs)):int(mx + bs * (1 + cs))]
        out.append(cv2.resize(face, (224, 224)))
    return out
