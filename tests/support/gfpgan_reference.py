"""TencentARC/GFPGAN's GFPGANv1Clean, restated step by step as a yardstick for lipsync.restore.gfpgan.

Read from gfpgan/archs/gfpganv1_clean_arch.py and gfpgan/archs/stylegan2_clean_arch.py
(TencentARC/GFPGAN, master as fetched in December 2026) and written again here in the same
structure and names, with the official constructor's options, so that its state_dict keys are
the release file's and its forward is the official arithmetic, including what lipsync.restore.gfpgan
does differently on purpose:
- the modulated convolution as the official code runs it: a per-sample weight (style times
  weight, demodulated) applied as a grouped convolution over the batch;
- noise drawn fresh per call (`randomize_noise=True`, GFPGANer's default) or the stored noise
  buffers (`randomize_noise=False`).
basicsr's weight initialisation is not restated: the tests load the same random weights into
both networks.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def stylegan_channels(narrow: float, multiplier: int) -> dict[int, int]:
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * multiplier, 128: 128 * multiplier, 256: 64 * multiplier,
            512: 32 * multiplier, 1024: 16 * multiplier}
    return {k: int(v * narrow) for k, v in base.items()}


class NormStyleCode(nn.Module):
    def forward(self, x):
        return x * torch.rsqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """Official: weight (1, out, in, k, k) times the style per input channel, demodulated per (sample, out),
    reshaped to (b*out, in, k, k) and run as a grouped convolution (groups = batch) on (1, b*in, h, w)."""

    def __init__(self, in_ch, out_ch, k, style_dim, demodulate=True, sample_mode=None, eps=1e-8):
        super().__init__()
        self.in_ch, self.out_ch, self.k = in_ch, out_ch, k
        self.demodulate, self.sample_mode, self.eps = demodulate, sample_mode, eps
        self.modulation = nn.Linear(style_dim, in_ch, bias=True)
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, k, k) / math.sqrt(in_ch * k ** 2))
        self.padding = k // 2

    def forward(self, x, style):
        b, c, h, w = x.shape
        s = self.modulation(style).view(b, 1, c, 1, 1)
        weight = self.weight * s
        if self.demodulate:
            d = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + self.eps)
            weight = weight * d.view(b, self.out_ch, 1, 1, 1)
        weight = weight.view(b * self.out_ch, c, self.k, self.k)
        if self.sample_mode == "upsample":
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        elif self.sample_mode == "downsample":
            x = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        b, c, h, w = x.shape
        out = F.conv2d(x.view(1, b * c, h, w), weight, padding=self.padding, groups=b)
        return out.view(b, self.out_ch, *out.shape[2:4])


class StyleConv(nn.Module):
    def __init__(self, in_ch, out_ch, k, style_dim, demodulate=True, sample_mode=None):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_ch, out_ch, k, style_dim, demodulate, sample_mode)
        self.weight = nn.Parameter(torch.zeros(1))
        self.bias = nn.Parameter(torch.zeros(1, out_ch, 1, 1))
        self.activate = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x, style, noise=None):
        out = self.modulated_conv(x, style) * 2 ** 0.5
        if noise is None:
            b, _, h, w = out.shape
            noise = out.new_empty(b, 1, h, w).normal_()
        out = out + self.weight * noise
        out = out + self.bias
        return self.activate(out)


class ToRGB(nn.Module):
    def __init__(self, in_ch, style_dim, upsample=True):
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            if self.upsample:
                skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    def __init__(self, ch, size):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, ch, size, size))

    def forward(self, batch):
        return self.weight.repeat(batch, 1, 1, 1)


class StyleGAN2GeneratorCSFT(nn.Module):
    """StyleGAN2GeneratorClean's layers with the CSFT forward (conditions modulate each level's first conv)."""

    def __init__(self, out_size, num_style_feat=512, num_mlp=8, channel_multiplier=2, narrow=1, sft_half=False):
        super().__init__()
        self.num_style_feat = num_style_feat
        layers = [NormStyleCode()]
        for _ in range(num_mlp):
            layers += [nn.Linear(num_style_feat, num_style_feat, bias=True),
                       nn.LeakyReLU(negative_slope=0.2, inplace=True)]
        self.style_mlp = nn.Sequential(*layers)
        ch = stylegan_channels(narrow, channel_multiplier)
        self.channels = ch
        self.constant_input = ConstantInput(ch[4], size=4)
        self.style_conv1 = StyleConv(ch[4], ch[4], 3, num_style_feat, demodulate=True, sample_mode=None)
        self.to_rgb1 = ToRGB(ch[4], num_style_feat, upsample=False)
        self.log_size = int(math.log(out_size, 2))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.num_latent = self.log_size * 2 - 2
        self.style_convs, self.to_rgbs, self.noises = nn.ModuleList(), nn.ModuleList(), nn.Module()
        for idx in range(self.num_layers):
            res = 2 ** ((idx + 5) // 2)
            self.noises.register_buffer(f"noise{idx}", torch.randn(1, 1, res, res))
        in_ch = ch[4]
        for i in range(3, self.log_size + 1):
            out_ch = ch[2 ** i]
            self.style_convs.append(StyleConv(in_ch, out_ch, 3, num_style_feat, True, "upsample"))
            self.style_convs.append(StyleConv(out_ch, out_ch, 3, num_style_feat, True, None))
            self.to_rgbs.append(ToRGB(out_ch, num_style_feat, upsample=True))
            in_ch = out_ch
        self.sft_half = sft_half

    def forward(self, styles, conditions, input_is_latent=False, randomize_noise=True):
        if not input_is_latent:
            styles = [self.style_mlp(s) for s in styles]
        if randomize_noise:
            noise = [None] * self.num_layers
        else:
            noise = [getattr(self.noises, f"noise{i}") for i in range(self.num_layers)]
        assert len(styles) == 1  # GFPGAN passes one style code (no mixing)
        latent = styles[0] if styles[0].ndim >= 3 else styles[0].unsqueeze(1).repeat(1, self.num_latent, 1)
        out = self.constant_input(latent.shape[0])
        out = self.style_conv1(out, latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv1, conv2, n1, n2, to_rgb in zip(self.style_convs[::2], self.style_convs[1::2], noise[1::2],
                                                noise[2::2], self.to_rgbs):
            out = conv1(out, latent[:, i], noise=n1)
            if i < len(conditions):
                if self.sft_half:
                    same, sft = torch.split(out, int(out.size(1) // 2), dim=1)
                    sft = sft * conditions[i - 1] + conditions[i]
                    out = torch.cat([same, sft], dim=1)
                else:
                    out = out * conditions[i - 1] + conditions[i]
            out = conv2(out, latent[:, i + 1], noise=n2)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip


class ResBlock(nn.Module):
    def __init__(self, in_ch, out_ch, mode="down"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.scale_factor = 0.5 if mode == "down" else 2

    def forward(self, x):
        out = F.leaky_relu_(self.conv1(x), negative_slope=0.2)
        out = F.interpolate(out, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        out = F.leaky_relu_(self.conv2(out), negative_slope=0.2)
        x = F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        return out + self.skip(x)


class GFPGANv1Clean(nn.Module):
    def __init__(self, out_size, num_style_feat=512, channel_multiplier=1, num_mlp=8, input_is_latent=False,
                 different_w=False, narrow=1, sft_half=False):
        super().__init__()
        self.input_is_latent, self.different_w, self.num_style_feat = input_is_latent, different_w, num_style_feat
        unet = {k: int(v * 0.5) for k, v in stylegan_channels(narrow, channel_multiplier).items()}
        self.log_size = int(math.log(out_size, 2))
        first = 2 ** self.log_size
        self.conv_body_first = nn.Conv2d(3, unet[first], 1)
        in_ch = unet[first]
        self.conv_body_down = nn.ModuleList()
        for i in range(self.log_size, 2, -1):
            self.conv_body_down.append(ResBlock(in_ch, unet[2 ** (i - 1)], mode="down"))
            in_ch = unet[2 ** (i - 1)]
        self.final_conv = nn.Conv2d(in_ch, unet[4], 3, 1, 1)
        in_ch = unet[4]
        self.conv_body_up = nn.ModuleList()
        for i in range(3, self.log_size + 1):
            self.conv_body_up.append(ResBlock(in_ch, unet[2 ** i], mode="up"))
            in_ch = unet[2 ** i]
        self.toRGB = nn.ModuleList([nn.Conv2d(unet[2 ** i], 3, 1) for i in range(3, self.log_size + 1)])
        linear_out = (self.log_size * 2 - 2) * num_style_feat if different_w else num_style_feat
        self.final_linear = nn.Linear(unet[4] * 4 * 4, linear_out)
        self.stylegan_decoder = StyleGAN2GeneratorCSFT(out_size, num_style_feat, num_mlp, channel_multiplier, narrow,
                                                       sft_half)
        self.condition_scale, self.condition_shift = nn.ModuleList(), nn.ModuleList()
        for i in range(3, self.log_size + 1):
            ch = unet[2 ** i]
            sft_ch = ch if sft_half else ch * 2
            for branch in (self.condition_scale, self.condition_shift):
                branch.append(nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2, True),
                                            nn.Conv2d(ch, sft_ch, 3, 1, 1)))

    def forward(self, x, return_rgb=True, randomize_noise=True):
        conditions, skips, rgbs = [], [], []
        feat = F.leaky_relu_(self.conv_body_first(x), negative_slope=0.2)
        for i in range(self.log_size - 2):
            feat = self.conv_body_down[i](feat)
            skips.insert(0, feat)
        feat = F.leaky_relu_(self.final_conv(feat), negative_slope=0.2)
        style = self.final_linear(feat.view(feat.size(0), -1))
        if self.different_w:
            style = style.view(style.size(0), -1, self.num_style_feat)
        for i in range(self.log_size - 2):
            feat = feat + skips[i]
            feat = self.conv_body_up[i](feat)
            conditions.append(self.condition_scale[i](feat).clone())
            conditions.append(self.condition_shift[i](feat).clone())
            if return_rgb:
                rgbs.append(self.toRGB[i](feat))
        image = self.stylegan_decoder([style], conditions, input_is_latent=self.input_is_latent,
                                      randomize_noise=randomize_noise)
        return image, rgbs


def as_gfpganer_builds_it() -> GFPGANv1Clean:
    """GFPGANer(arch='clean', channel_multiplier=2): the network GFPGANv1.4.pth's params_ema belong to."""
    return GFPGANv1Clean(out_size=512, num_style_feat=512, channel_multiplier=2, num_mlp=8, input_is_latent=True,
                         different_w=True, narrow=1, sft_half=True)
