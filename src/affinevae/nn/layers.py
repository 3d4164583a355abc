"""Encoders and decoders for (N, C, H, W) images.

Encoders map an image (plus an optional condition vector, e.g. a one-hot class) to a flat
vector; decoders map a flat vector to per-pixel likelihood parameters of shape (N, C, H, W).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..registry import Registry

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU, "softplus": nn.Softplus, "elu": nn.ELU,
               "selu": nn.SELU}
#: Normalisations of the convolutional feature maps ('group': GroupNorm with up to 8 groups,
#: per image, so a result never depends on the other images of a batch).
NORMS = ("group", "none")
ENCODERS: Registry = Registry("encoder")
DECODERS: Registry = Registry("decoder")


def activation(name: str) -> nn.Module:
    """A fresh activation module by name (relu, tanh, gelu, silu, softplus, elu, selu)."""
    return ACTIVATIONS[name]()


def feature_norm(kind: str, channels: int) -> list[nn.Module]:
    """``[GroupNorm(gcd(8, channels), channels)]`` for ``kind='group'``, ``[]`` for 'none'."""
    if kind == "none":
        return []
    if kind != "group":
        raise ValueError(f"unknown norm {kind!r}; choose from {NORMS}")
    return [nn.GroupNorm(math.gcd(8, channels), channels)]


def mlp(sizes: Sequence[int], act: str, final_act: bool = False) -> nn.Sequential:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]`` with ``act`` between them."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or final_act:
            layers.append(activation(act))
    return nn.Sequential(*layers)


@ENCODERS.register("mlp")
class MLPEncoder(nn.Module):
    """Flatten (N, C, H, W) -> MLP(hidden) -> (N, out_dim); ``cond`` (N, K) joins the input."""

    def __init__(self, image_shape: Sequence[int], out_dim: int, hidden: Sequence[int] = (512, 256),
                 act: str = "relu", cond_dim: int = 0, channels: Sequence[int] = (), norm: str = "none") -> None:
        super().__init__()
        n_in = int(math.prod(image_shape)) + cond_dim
        self.net = mlp([n_in, *hidden, out_dim], act)

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        """(N, C, H, W) images (and optional (N, K) condition) -> (N, out_dim) outputs."""
        h = x.flatten(1)
        if cond is not None:
            h = torch.cat([h, cond.to(h.dtype)], 1)
        return self.net(h)


@ENCODERS.register("conv")
class ConvEncoder(nn.Module):
    """Stride-2 3x3 convolutions (``channels``; each normalised by ``norm``) -> flatten -> MLP(hidden) -> (N, out_dim).

    ``cond`` (N, K) is concatenated after the convolutions.
    """

    def __init__(self, image_shape: Sequence[int], out_dim: int, hidden: Sequence[int] = (256,),
                 act: str = "relu", cond_dim: int = 0, channels: Sequence[int] = (32, 64), norm: str = "group") -> None:
        super().__init__()
        c, h, w = image_shape
        layers: list[nn.Module] = []
        for ch in channels:
            layers += [nn.Conv2d(c, ch, 3, stride=2, padding=1), *feature_norm(norm, ch), activation(act)]
            c, h, w = ch, (h + 1) // 2, (w + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.head = mlp([c * h * w + cond_dim, *hidden, out_dim], act)

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        """(N, C, H, W) images (and optional (N, K) condition) -> (N, out_dim) outputs."""
        h = self.conv(x).flatten(1)
        if cond is not None:
            h = torch.cat([h, cond.to(h.dtype)], 1)
        return self.head(h)


@DECODERS.register("mlp")
class MLPDecoder(nn.Module):
    """(N, in_dim) -> MLP(hidden) -> (N, C, H, W) likelihood parameters."""

    def __init__(self, in_dim: int, image_shape: Sequence[int], hidden: Sequence[int] = (256, 512),
                 act: str = "relu", channels: Sequence[int] = (), norm: str = "none") -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = mlp([in_dim, *hidden, int(math.prod(image_shape))], act)

    def forward(self, z: Tensor) -> Tensor:
        """(N, in_dim) inputs -> (N, C, H, W) likelihood parameters."""
        return self.net(z).view(-1, *self.image_shape)

    @torch.no_grad()
    def init_output(self, params: Tensor) -> None:
        """Start at the (C, H, W) likelihood parameters ``params``: the output layer's bias."""
        self.net[-1].bias.copy_(params.reshape(-1).to(self.net[-1].bias))


@DECODERS.register("conv")
class ConvDecoder(nn.Module):
    """(N, in_dim) -> MLP -> (c0, h0, w0) -> stride-2 transposed convs -> crop to (C, H, W) -> + per-pixel bias.

    ``channels`` lists the feature maps from coarse to fine (e.g. (64, 32) for 7->14->28);
    every transposed convolution but the last is normalised by ``norm``. The per-pixel output
    bias (C, H, W) lets the decoder start at the data's mean image (:meth:`init_output`).
    """

    def __init__(self, in_dim: int, image_shape: Sequence[int], hidden: Sequence[int] = (256,),
                 act: str = "relu", channels: Sequence[int] = (64, 32), norm: str = "group") -> None:
        super().__init__()
        c, h, w = image_shape
        self.image_shape = (c, h, w)
        k = len(channels)
        self.h0, self.w0 = math.ceil(h / 2**k), math.ceil(w / 2**k)
        self.c0 = channels[0]
        self.head = mlp([in_dim, *hidden, self.c0 * self.h0 * self.w0], act, final_act=True)
        layers: list[nn.Module] = []
        chans = list(channels) + [c]
        for i in range(k):
            layers.append(nn.ConvTranspose2d(chans[i], chans[i + 1], 4, stride=2, padding=1))
            if i < k - 1:
                layers += [*feature_norm(norm, chans[i + 1]), activation(act)]
        self.deconv = nn.Sequential(*layers)
        self.out_bias = nn.Parameter(torch.zeros(c, h, w))

    def forward(self, z: Tensor) -> Tensor:
        """(N, in_dim) inputs -> (N, C, H, W) likelihood parameters."""
        c, h, w = self.image_shape
        out = self.deconv(self.head(z).view(-1, self.c0, self.h0, self.w0))
        return out[:, :, :h, :w] + self.out_bias

    @torch.no_grad()
    def init_output(self, params: Tensor) -> None:
        """Start at the (C, H, W) likelihood parameters ``params``: the per-pixel bias (the last
        convolution's own bias is zeroed so that the two do not add up)."""
        self.deconv[-1].bias.zero_()
        self.out_bias.copy_(params.reshape(self.out_bias.shape).to(self.out_bias))
