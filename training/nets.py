"""Encoder and decoder networks for image inputs [C, H, W]: an MLP and a convolutional pair.

The encoder maps x to a vector of 2Z numbers (mu and logvar side by side); the decoder maps z to
per-pixel parameters [C, H, W] (logits or means). Sizes come from the data, widths from config.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "elu": nn.ELU}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r} ({', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]()


def mlp(sizes: list[int], act: str = "relu") -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation(act))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    def __init__(self, shape: list[int], hidden: list[int], out: int, act: str = "relu"):
        super().__init__()
        self.net = mlp([math.prod(shape), *hidden, out], act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    def __init__(self, shape: list[int], hidden: list[int], latent: int, act: str = "relu"):
        super().__init__()
        self.shape = list(shape)
        self.net = mlp([latent, *reversed(hidden), math.prod(shape)], act)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.shape)


def _conv_sizes(h: int, w: int, depth: int) -> list[tuple[int, int]]:
    """Spatial sizes after each stride-2 conv (kernel 4, padding 1): floor(s / 2)."""
    sizes = [(h, w)]
    for _ in range(depth):
        h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"{depth} stride-2 convolutions are too many for {sizes[0]}")
        sizes.append((h, w))
    return sizes


def _refine(ch: int, blocks: int, act: str) -> list[nn.Module]:
    """`blocks` extra 3x3 conv + activation layers at one resolution: depth without losing
    size."""
    return [m for _ in range(blocks) for m in (nn.Conv2d(ch, ch, 3, padding=1), activation(act))]


class ConvEncoder(nn.Module):
    """Stride-2 convs (each halves H and W), each followed by `blocks` 3x3 convs, then an MLP."""

    def __init__(self, shape: list[int], channels: list[int], hidden: list[int], out: int,
                 blocks: int = 0, act: str = "relu"):
        super().__init__()
        c, h, w = shape
        layers: list[nn.Module] = []
        for a, b in zip([c, *channels[:-1]], channels, strict=True):
            layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), activation(act),
                       *_refine(b, blocks, act)]
        self.conv = nn.Sequential(*layers)
        fh, fw = _conv_sizes(h, w, len(channels))[-1]
        self.head = mlp([channels[-1] * fh * fw, *hidden, out], act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).flatten(1))


def _up(a: int, b: int, size: tuple[int, int], pad: tuple[int, int], how: str) -> list[nn.Module]:
    """One doubling of H and W to `size`: a stride-2 transposed conv (output_padding restores an
    odd size), or nearest-neighbour upsampling then a 3x3 conv. The second has no checkerboard
    artefacts, and onnxruntime's CPU Conv uses its intra-op threads where its ConvTranspose
    does not (docs/BENCHMARKS.md, P1)."""
    if how == "transpose":
        return [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1, output_padding=pad)]
    if how == "nearest":
        return [nn.Upsample(size=size, mode="nearest"), nn.Conv2d(a, b, 3, padding=1)]
    if how == "shuffle":  # sub-pixel conv: 4b channels at the low resolution, then rearranged
        extra = [nn.ReplicationPad2d((0, pad[1], 0, pad[0]))] if any(pad) else []
        return [nn.Conv2d(a, 4 * b, 3, padding=1), nn.PixelShuffle(2), *extra]
    raise ValueError(f"unknown upsampling {how!r} (transpose, nearest or shuffle)")


class ConvDecoder(nn.Module):
    """The encoder mirrored: an MLP to a small feature map, then doublings back to [C, H, W]."""

    def __init__(self, shape: list[int], channels: list[int], hidden: list[int], latent: int,
                 blocks: int = 0, upsample: str = "transpose", act: str = "relu"):
        super().__init__()
        c, h, w = shape
        sizes = _conv_sizes(h, w, len(channels))
        self.fmap = (channels[-1], *sizes[-1])
        self.head = nn.Sequential(mlp([latent, *reversed(hidden), math.prod(self.fmap)], act),
                                  activation(act))
        outs = [*reversed(channels[:-1]), c]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(reversed(channels), outs, strict=True)):
            (sh, sw), (th, tw) = sizes[-1 - i], sizes[-2 - i]
            pad = (th - 2 * sh, tw - 2 * sw)  # 0 or 1: what floor-halving lost
            layers += _up(a, b, (th, tw), pad, upsample)
            if i < len(channels) - 1:
                layers += [activation(act), *_refine(b, blocks, act)]
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.head(z).view(-1, *self.fmap))


def build(arch: str, shape: list[int], latent: int, hidden: list[int], channels: list[int],
          blocks: int = 0, upsample: str = "transpose", act: str = "relu"
          ) -> tuple[nn.Module, nn.Module]:
    if arch == "mlp":
        return MLPEncoder(shape, hidden, 2 * latent, act), MLPDecoder(shape, hidden, latent, act)
    if arch == "conv":
        return (ConvEncoder(shape, channels, hidden, 2 * latent, blocks, act),
                ConvDecoder(shape, channels, hidden, latent, blocks, upsample, act))
    raise ValueError(f"unknown architecture {arch!r} (mlp or conv)")
