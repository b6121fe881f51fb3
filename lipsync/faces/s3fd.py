"""S3FD, the face detector Wav2Lip was trained with: its network and its batch detection, in this package's code.

Why here rather than through the face-alignment package: that package brings numba, llvmlite, scikit-image,
scipy and a second OpenCV wheel (about 250 MB) into every GPU install for one network and a few lines of
box arithmetic.

Faithful to the detection Wav2Lip's inference used (its vendored copy of face-alignment's S3FD) and to
face-alignment 1.5, whose boxes tests/test_s3fd.py compares with these:
- network: S3FD (Zhang et al., ICCV 2017) as ported to PyTorch: a VGG16 trunk, fc6/fc7 as convolutions, two
  extra stride-2 blocks, L2 normalisation with learnt scales (10, 8, 5) on conv3_3/4_3/5_3, and a class and a
  box head on six feature maps. The first class head has four outputs: three background scores merged by
  their maximum ("max-out"), then the face score. Parameter names follow the published checkpoint
  s3fd-619a316812.pth, so it loads unchanged.
- input: the frames cv2 gives (BGR), channels reversed, minus (104, 117, 123), as float32. The Caffe original
  was tested on BGR minus those means; Wav2Lip's face_detection reverses cv2's BGR frames first, in its
  preprocess.py (the training crops) as in inference.py, so the network sees RGB. Kept: Wav2Lip's boxes.
- output: a softmax over each class map; every cell whose face probability exceeds 0.05 in any frame of the
  batch is a candidate for every frame (as the reference does it, duplicates included, so that ties sort the
  same); feature map k (k = 0..5) has stride s = 4 * 2**k and one square anchor of side 4s centred at
  (s/2 + column * s, s/2 + row * s); offsets are decoded with variances 0.1 (centre) and 0.2 (log size) in
  float64, as face-alignment does (the official copy decodes in float32: the boxes differ by under 1e-3 px).
- per frame: greedy NMS at IoU 0.3 (areas with the +1 pixel convention), then the boxes scoring above 0.5, best
  first. Wav2Lip uses the first.

The per-cell Python loops of the reference are numpy operations over all cells at once here (the arithmetic
element by element the same, so the boxes are equal to the bit), and NMS leaves out the boxes the 0.5 filter
would drop after it (they cannot change what it keeps above 0.5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LipSyncError
from ..weights.reader import CheckpointError, CheckpointRefused, layout_of, read_tensors

MEANS = (104.0, 117.0, 123.0)  # subtracted from the channel-reversed frame
VARIANCES = (0.1, 0.2)  # box decoding: centre offsets, log sizes
CANDIDATE_SCORE = 0.05  # a cell above this in any frame of the batch is decoded
NMS_OVERLAP = 0.3
FACE_SCORE = 0.5  # boxes kept after NMS score above this

# The VGG16 trunk: (name, in, out) convolutions, 3x3 with padding 1; "pool" halves the size.
_TRUNK = (("conv1_1", 3, 64), ("conv1_2", 64, 64), "pool",
          ("conv2_1", 64, 128), ("conv2_2", 128, 128), "pool",
          ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), "tap", "pool",
          ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512), "tap", "pool",
          ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512), "tap", "pool")
# After the trunk: (name, in, out, kernel, stride, padding); "tap" marks a feature map the heads read.
_EXTRA = (("fc6", 512, 1024, 3, 1, 3), ("fc7", 1024, 1024, 1, 1, 0), "tap",
          ("conv6_1", 1024, 256, 1, 1, 0), ("conv6_2", 256, 512, 3, 2, 1), "tap",
          ("conv7_1", 512, 128, 1, 1, 0), ("conv7_2", 128, 256, 3, 2, 1), "tap")
# The six feature maps the heads read: (head name prefix, channels, L2 normalisation scale or None).
_SOURCES = (("conv3_3_norm", 256, 10.0), ("conv4_3_norm", 512, 8.0), ("conv5_3_norm", 512, 5.0),
            ("fc7", 1024, None), ("conv6_2", 512, None), ("conv7_2", 256, None))
MAXOUT_BACKGROUND = 3  # the first class head's background scores, merged by their maximum


def _convolutions() -> list[tuple[str, int, int, int, int, int]]:
    """(name, in, out, kernel, stride, padding) of the trunk and the extra layers, in order."""
    trunk = [(layer[0], layer[1], layer[2], 3, 1, 1) for layer in _TRUNK if isinstance(layer, tuple)]
    return trunk + [layer for layer in _EXTRA if isinstance(layer, tuple)]


class ChannelL2Norm(nn.Module):
    """Scales each position's channel vector to unit length, then by a learnt per-channel weight.

    conv3_3 to conv5_3 have very different magnitudes; without this their heads could not share a scale.
    """

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10
        return x / length * self.weight.view(1, -1, 1, 1)


class S3FDNet(nn.Module):
    """The S3FD network; forward gives six (class logits, box offsets) pairs, finest map first."""

    def __init__(self) -> None:
        super().__init__()  # registered in the published checkpoint's order: convolutions, norms, heads
        for name, cin, cout, kernel, stride, padding in _convolutions():
            self.add_module(name, nn.Conv2d(cin, cout, kernel, stride, padding))
        for prefix, channels, scale in _SOURCES:
            if scale is not None:
                self.add_module(prefix, ChannelL2Norm(channels, scale))
        for index, (prefix, channels, _) in enumerate(_SOURCES):
            classes = MAXOUT_BACKGROUND + 1 if index == 0 else 2
            self.add_module(f"{prefix}_mbox_conf", nn.Conv2d(channels, classes, 3, 1, 1))
            self.add_module(f"{prefix}_mbox_loc", nn.Conv2d(channels, 4, 3, 1, 1))

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The six feature maps the heads read, conv3_3 (stride 4) to conv7_2 (stride 128)."""
        taps = []
        for layer in (*_TRUNK, *_EXTRA):
            if layer == "pool":
                x = F.max_pool2d(x, 2, 2)
            elif layer == "tap":
                taps.append(x)
            else:
                x = F.relu(getattr(self, layer[0])(x), inplace=True)  # on the fresh convolution output
        return taps

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        heads = []
        for index, (feature, (prefix, _, scale)) in enumerate(zip(self._features(x), _SOURCES)):
            if scale is not None:
                feature = getattr(self, prefix)(feature)
            logits = getattr(self, f"{prefix}_mbox_conf")(feature)
            if index == 0:  # max-out: the most confident of the three background outputs
                background = logits[:, :MAXOUT_BACKGROUND].amax(dim=1, keepdim=True)
                logits = torch.cat([background, logits[:, MAXOUT_BACKGROUND:]], dim=1)
            heads.append((logits, getattr(self, f"{prefix}_mbox_loc")(feature)))
        return heads


FETCH_AGAIN = "Delete it so that it is downloaded again, or use --detector blazeface or haar."


def load_net(path: str | Path, device: str) -> S3FDNet:
    """The network with the weights of `path` (the published s3fd-619a316812.pth layout), in eval mode. Read by
    lipsync.weights.reader: no code in the file run, names and shapes checked before any weight is read."""
    with torch.device("meta"):
        net = S3FDNet()  # no memory: only its names and shapes, until the file's arrays are assigned
    try:
        weights = read_tensors(str(path), layout_of(net), what="the S3FD face detector", hint=FETCH_AGAIN)
    except CheckpointRefused:
        raise  # "Refused to load …: it holds Python objects or code …"
    except CheckpointError as err:  # a damaged or foreign file: say which and what to do, not a traceback
        raise LipSyncError(f"The S3FD weights file {path} could not be loaded ({err.reason}). {FETCH_AGAIN}") from None
    net.load_state_dict({name: torch.from_numpy(array) for name, array in weights.items()}, assign=True)
    return net.to(device).eval()


def _candidates(heads: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """(frames, candidates, 5) float64: x1, y1, x2, y2, score for every candidate cell, in the reference's order.

    A cell is a candidate when its face probability exceeds CANDIDATE_SCORE in any frame; it is listed once per
    frame in which it does (frame-major, then row, then column), with its box and score in every frame.
    """
    batch = heads[0][0].shape[0]
    found = []
    for level, (logits, offsets) in enumerate(heads):
        scores = F.softmax(logits, dim=1)[:, 1]  # (B, H, W): the face probability
        _, rows, cols = torch.nonzero(scores > CANDIDATE_SCORE, as_tuple=True)
        if len(rows) == 0:
            continue
        score = scores[:, rows, cols].cpu().numpy()  # (B, N) float32
        loc = offsets[:, :, rows, cols].permute(0, 2, 1).cpu().numpy()  # (B, N, 4) float32
        stride = 2 ** (level + 2)
        rows, cols = rows.cpu().numpy(), cols.cpu().numpy()
        centre = np.stack([stride / 2 + cols * stride, stride / 2 + rows * stride], axis=1)  # (N, 2) float64
        side = np.full((len(rows), 2), float(stride * 4))
        # element by element as face-alignment's decode: float32 offsets times the variance, then float64
        xy = centre + loc[..., :2] * VARIANCES[0] * side
        wh = side * np.exp(loc[..., 2:] * VARIANCES[1])
        corner = xy - wh / 2
        found.append(np.concatenate([corner, corner + wh, score[..., None]], axis=2))
    return np.concatenate(found, axis=1) if found else np.zeros((batch, 0, 5))


def _nms_faces(dets: np.ndarray) -> np.ndarray:
    """The rows of `dets` greedy NMS keeps at NMS_OVERLAP that score above FACE_SCORE, best first.

    The reference runs NMS over every candidate, then drops the boxes not above FACE_SCORE. A box only ever
    suppresses boxes sorted after it, which score no higher, so the boxes not above FACE_SCORE (the tail of the
    order) change nothing that is kept: they are left out of the loop. The sort is the reference's, over all
    candidates, so that equal scores come in the same order.
    """
    x1, y1, x2, y2, scores = dets.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1][: np.count_nonzero(scores > FACE_SCORE)]
    keep = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        overlap = w * h / (areas[best] + areas[rest] - w * h)
        keep.append(best)
        order = rest[overlap <= NMS_OVERLAP]
    return dets[keep]


def detect_faces(net: S3FDNet, frames: torch.Tensor) -> list[np.ndarray]:
    """Faces in a batch of BGR frames (B, 3, H, W), any dtype: per frame a (k, 5) array of x1, y1, x2, y2, score,
    best first (k may be 0)."""
    device = next(net.parameters()).device
    x = frames.to(device).to(torch.float32).flip(1)  # BGR to RGB, as the official code does (module docstring)
    x = x - torch.tensor(MEANS, device=device).view(1, 3, 1, 1)
    with torch.no_grad():
        candidates = _candidates(net(x))
    return [_nms_faces(dets) for dets in candidates]
