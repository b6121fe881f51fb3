"""GFPGAN v1.4's network (the "clean" GFPGANv1Clean), written here, and loading its release file.

Why our own code: the `gfpgan`, `basicsr` and `facexlib` packages (2022) break on current
torchvision, and only the network is needed. Its module and parameter names reproduce
TencentARC/GFPGAN's `GFPGANv1Clean` as `GFPGANer` builds it (out_size 512, 512 style
features, channel multiplier 2, 8 MLP layers, input_is_latent, different_w, narrow 1,
sft_half), so the release file `GFPGANv1.4.pth` (`{"params_ema": state_dict}`) loads with no
key renamed; tests/test_gfpgan.py compares it with a restatement of the official code.

Two deliberate differences in how the same arithmetic is run, neither changing the result
beyond float rounding:
- a modulated convolution scales the input's channels by the style and the output's by the
  demodulation, around one convolution with the layer's own fixed weight, instead of
  building a per-face weight and running a grouped convolution. The same sums, but the
  weight stays a constant: batches of faces run as one plain convolution, and OpenVINO can
  pre-pack it (the CPU path);
- the noise added in each style layer is the network's stored noise (its `noises` buffers,
  `randomize_noise=False`), not fresh random noise per call as `GFPGANer` draws it: the
  same face gives the same pixels, so a video's restored mouth does not sparkle from frame
  to frame.

The "clean" architecture is the one without NVIDIA's StyleGAN2 CUDA ops (non-commercial);
its code is Apache-2.0 (TencentARC/GFPGAN).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..weights.reader import Layout, layout_of, read_tensors

SIZE = 512  # the restorer's square input and output, in pixels
STYLE = 512  # style features
MULTIPLIER = 2  # StyleGAN2's channel multiplier for GFPGAN v1.3/v1.4
MLP_LAYERS = 8


def decoder_channels(resolution: int) -> int:
    """StyleGAN2's channels at a resolution (narrow 1, multiplier 2); the U-Net uses half of these."""
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * MULTIPLIER, 128: 128 * MULTIPLIER,
            256: 64 * MULTIPLIER, 512: 32 * MULTIPLIER, 1024: 16 * MULTIPLIER}[resolution]


def unet_channels(resolution: int) -> int:
    return decoder_channels(resolution) // 2


class NormStyleCode(nn.Module):
    """x / rms(x): the first step of the (unused here, kept for its weights' names) style MLP."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution (no bias), optionally on a 2x bilinear upsampling of the input.

    Run as scale-conv-scale (see the module docstring): input channels times the style, a
    convolution with the shared weight, output channels times the demodulation
    rsqrt(sum over inputs and taps of (weight x style)^2 + eps).
    """

    def __init__(self, cin: int, cout: int, kernel: int, demodulate: bool = True, upsample: bool = False,
                 eps: float = 1e-8) -> None:
        super().__init__()
        self.modulation = nn.Linear(STYLE, cin, bias=True)
        self.weight = nn.Parameter(torch.randn(1, cout, cin, kernel, kernel) / math.sqrt(cin * kernel ** 2))
        self.demodulate, self.upsample, self.eps, self.padding = demodulate, upsample, eps, kernel // 2

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        scale = self.modulation(style)  # (b, cin)
        weight = self.weight[0]  # (cout, cin, k, k)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        out = F.conv2d(x * scale[:, :, None, None], weight, padding=self.padding)
        if self.demodulate:
            energy = (scale * scale) @ weight.pow(2).sum(dim=(2, 3)).t()  # (b, cout)
            out = out * torch.rsqrt(energy + self.eps)[:, :, None, None]
        return out


class StyleConv(nn.Module):
    """Modulated convolution x sqrt(2), plus the weighted stored noise and a bias, then leaky ReLU."""

    def __init__(self, cin: int, cout: int, upsample: bool) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(cin, cout, 3, demodulate=True, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # the noise's strength
        self.bias = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = self.modulated_conv(x, style) * 2 ** 0.5 + self.weight * noise + self.bias
        return F.leaky_relu(out, 0.2)


class ToRGB(nn.Module):
    """A 1x1 modulated convolution to RGB (not demodulated), added to the upsampled image so far."""

    def __init__(self, cin: int, upsample: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(cin, 3, 1, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            if self.upsample:
                skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, size, size))


class StyleDecoder(nn.Module):
    """StyleGAN2's generator (clean) whose features are modulated by the U-Net's conditions (SFT on half of
    the channels): GFPGAN's 'StyleGAN2GeneratorCSFT', run with one latent per layer and the stored noise."""

    def __init__(self) -> None:
        super().__init__()
        mlp: list[nn.Module] = [NormStyleCode()]
        for _ in range(MLP_LAYERS):
            mlp += [nn.Linear(STYLE, STYLE), nn.LeakyReLU(0.2)]
        self.style_mlp = nn.Sequential(*mlp)  # not run: the encoder gives latents directly (input_is_latent)
        self.constant_input = ConstantInput(decoder_channels(4), 4)
        self.style_conv1 = StyleConv(decoder_channels(4), decoder_channels(4), upsample=False)
        self.to_rgb1 = ToRGB(decoder_channels(4), upsample=False)
        self.log_size = int(math.log2(SIZE))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.style_convs, self.to_rgbs, self.noises = nn.ModuleList(), nn.ModuleList(), nn.Module()
        for layer in range(self.num_layers):
            side = 2 ** ((layer + 5) // 2)
            self.noises.register_buffer(f"noise{layer}", torch.randn(1, 1, side, side))
        cin = decoder_channels(4)
        for level in range(3, self.log_size + 1):
            cout = decoder_channels(2 ** level)
            self.style_convs.append(StyleConv(cin, cout, upsample=True))
            self.style_convs.append(StyleConv(cout, cout, upsample=False))
            self.to_rgbs.append(ToRGB(cout))
            cin = cout

    def forward(self, latent: torch.Tensor, conditions: list[torch.Tensor]) -> torch.Tensor:
        """latent (b, 16, 512): one style per layer; conditions: (scale, shift) per level, 8x8 up to 512x512."""
        noise = [getattr(self.noises, f"noise{i}") for i in range(self.num_layers)]
        out = self.constant_input.weight.expand(latent.shape[0], -1, -1, -1)
        out = self.style_conv1(out, latent[:, 0], noise[0])
        image = self.to_rgb1(out, latent[:, 1])
        for level, to_rgb in enumerate(self.to_rgbs):
            i = 2 * level + 1  # the latent and noise index of this level's first layer
            out = self.style_convs[2 * level](out, latent[:, i], noise[i])
            kept, modulated = torch.split(out, out.shape[1] // 2, dim=1)  # SFT on the second half only
            out = torch.cat([kept, modulated * conditions[2 * level] + conditions[2 * level + 1]], dim=1)
            out = self.style_convs[2 * level + 1](out, latent[:, i + 1], noise[i + 1])
            image = to_rgb(out, latent[:, i + 2], image)
        return image


class ResBlock(nn.Module):
    """Two 3x3 convolutions around a 2x bilinear resampling (down or up), plus a 1x1 skip."""

    def __init__(self, cin: int, cout: int, factor: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1)
        self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), 0.2)
        out = F.interpolate(out, scale_factor=self.factor, mode="bilinear", align_corners=False)
        out = F.leaky_relu(self.conv2(out), 0.2)
        return out + self.skip(F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False))


def _condition(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(channels, channels, 3, 1, 1))


class GFPGAN(nn.Module):
    """GFPGANv1Clean at 512x512: a U-Net encoder gives 16 latents and per-level (scale, shift) maps; the
    StyleGAN2 decoder draws the face from them. (b, 3, 512, 512) RGB in [-1, 1] -> the same, unclipped."""

    def __init__(self) -> None:
        super().__init__()
        log_size = int(math.log2(SIZE))
        self.log_size = log_size
        self.conv_body_first = nn.Conv2d(3, unet_channels(SIZE), 1)
        self.conv_body_down = nn.ModuleList()
        cin = unet_channels(SIZE)
        for level in range(log_size, 2, -1):
            self.conv_body_down.append(ResBlock(cin, unet_channels(2 ** (level - 1)), 0.5))
            cin = unet_channels(2 ** (level - 1))
        self.final_conv = nn.Conv2d(cin, unet_channels(4), 3, 1, 1)
        # registered in the official order, so the state dict lists its keys as the release file does
        self.conv_body_up, self.toRGB = nn.ModuleList(), nn.ModuleList()  # toRGB: kept for the names, not run
        cin = unet_channels(4)
        for level in range(3, log_size + 1):
            self.conv_body_up.append(ResBlock(cin, unet_channels(2 ** level), 2))
            self.toRGB.append(nn.Conv2d(unet_channels(2 ** level), 3, 1))
            cin = unet_channels(2 ** level)
        self.latents = log_size * 2 - 2
        self.final_linear = nn.Linear(unet_channels(4) * 4 * 4, self.latents * STYLE)
        self.stylegan_decoder = StyleDecoder()
        self.condition_scale = nn.ModuleList([_condition(unet_channels(2 ** lv)) for lv in range(3, log_size + 1)])
        self.condition_shift = nn.ModuleList([_condition(unet_channels(2 ** lv)) for lv in range(3, log_size + 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.leaky_relu(self.conv_body_first(x), 0.2)
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.append(feat)
        feat = F.leaky_relu(self.final_conv(feat), 0.2)
        latent = self.final_linear(feat.flatten(1)).view(feat.shape[0], self.latents, STYLE)
        conditions: list[torch.Tensor] = []
        for up, scale, shift, skip in zip(self.conv_body_up, self.condition_scale, self.condition_shift,
                                          reversed(skips)):
            feat = up(feat + skip)
            conditions += [scale(feat), shift(feat)]
        return self.stylegan_decoder(latent, conditions)


WHAT = "GFPGAN v1.4 (the clean 512x512 network)"
USE_RELEASE = "Use GFPGANv1.4.pth (GFPGANv1.3.pth has the same layout)."
DOWNLOAD_AGAIN = "Download GFPGANv1.4.pth again (see weights/README.md)."


def read_weights(path: str, layout: Layout) -> dict[str, np.ndarray]:
    """The `params_ema` (else `params`) of a GFPGAN release file as float32 arrays, read by lipsync.weights.reader:
    no code in the file run, every name and shape checked against `layout` before any weight is read."""
    return read_tensors(path, layout, select=("params_ema", "params"), what=WHAT, hint=USE_RELEASE,
                        redownload=DOWNLOAD_AGAIN)


def load_gfpgan(path: str, device: str = "cpu") -> GFPGAN:
    """GFPGAN v1.4 from its release file, in eval mode on `device`; a file of another network is refused."""
    with torch.device("meta"):
        model = GFPGAN()  # no memory: only its names and shapes, until the file's arrays are assigned
    weights = read_weights(path, layout_of(model))
    model.load_state_dict({name: torch.from_numpy(array) for name, array in weights.items()}, assign=True)
    model.checkpoint_path = path
    return model.to(device).eval()
