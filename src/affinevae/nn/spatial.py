"""Pose-aware decoders: the spatial (coordinate) decoder and the warp decoder.

Both map a flat latent vector ``h`` (N, in_dim) (content latents, plus a one-hot class for
conditional models) and a :class:`~affinevae.nn.affine.Pose` to per-pixel likelihood
parameters (N, C, H, W) of the image *observed in that pose*. They follow the package
convention ``observed(q) = canonical(T^-1 q)`` (see :mod:`affinevae.nn.affine`).

- :class:`SpatialDecoder` ('spatial') evaluates an MLP at every pixel coordinate ``q``:
  ``f(T^-1 q, h)``. The first layer mixes the transformed coordinates with the latents and
  is factored so that no per-pixel concatenation is built (see :meth:`SpatialDecoder.first_layer`).
- :class:`WarpDecoder` ('warp') renders the canonical image with a convolutional decoder
  and places it in the pose with a differentiable affine warp.

- :class:`BroadcastDecoder` ('broadcast') is the spatial decoder with 3 x 3 convolutions after
  its first layer: the latents broadcast over the pixel grid beside the canonical coordinates
  (the spatial-broadcast decoder of Watters et al. 2019, the rVAE article's convolutional one).

All are registered by name in :data:`POSE_DECODERS` and share the constructor signature
``(in_dim, image_shape, hidden, act, channels)``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..registry import Registry
from .affine import Pose, coordinate_grid, identity_affine, invert_affine, pose_matrix, render
from .layers import ConvDecoder, activation

POSE_DECODERS: Registry = Registry("pose decoder")


def inverse_pose_matrix(pose: Optional[Pose], n: int, device=None, dtype=torch.float32) -> Tensor:
    """(N, 2, 3) matrices [A^-1 | -A^-1 t] mapping observed coordinates to canonical ones.

    ``pose`` None (or all fields None) gives identity matrices for ``n`` images.
    """
    if pose is None or pose.is_identity():
        return identity_affine(n, device, dtype)
    return invert_affine(pose_matrix(pose))


@POSE_DECODERS.register("spatial")
class SpatialDecoder(nn.Module):
    """Coordinate decoder: x(q) = MLP([T^-1 q ; h]) at every pixel centre q in [-1, 1]^2.

    Args:
        in_dim: width of the latent input ``h`` (content latents + one-hot class).
        image_shape: (C, H, W); the MLP has C outputs per pixel (one per channel).
        hidden: widths of the per-pixel MLP (at least one layer).
        act: activation name (see :data:`affinevae.nn.layers.ACTIVATIONS`).
        channels, norm: unused (accepted so every pose decoder has the same signature).

    It has no ``init_output``: a data-mean start of its (per-channel) output bias measurably
    slowed the rVAE's angle learning, so it starts as initialised.

    The first layer ``W1 @ [p; h] + b`` with ``p = A^-1 (q - t)`` is computed as
    ``(W_c @ [A^-1 | -A^-1 t]) @ [q; 1] + (W_z h + b)``: per image, a (H1, 3) matrix applied
    to the fixed (3, H*W) homogeneous grid in one batched matmul, plus a per-image bias.
    The remaining layers are large (N*H*W, width) matmuls. Cost per image is about
    ``H*W*sum(hidden[i] * hidden[i+1])`` multiply-adds, so keep ``hidden`` small.
    """

    def __init__(self, in_dim: int, image_shape: Sequence[int], hidden: Sequence[int] = (48, 48),
                 act: str = "relu", channels: Sequence[int] = (), norm: str = "none") -> None:
        super().__init__()
        if len(hidden) < 1:
            raise ValueError("the spatial decoder needs at least one hidden layer")
        c, h, w = (int(v) for v in image_shape)
        self.image_shape = (c, h, w)
        self.coord = nn.Linear(2, hidden[0], bias=False)  # W_c
        self.latent = nn.Linear(in_dim, hidden[0])  # W_z and the first-layer bias b
        layers: list[nn.Module] = []
        sizes = [*hidden, c]
        for i in range(len(sizes) - 1):
            # In place except on the first layer, whose input is a view (an in-place op on a view
            # would make autograd copy the whole (N*H*W, width) tensor back).
            layers += [activation(act) if i == 0 else _inplace_activation(act), nn.Linear(sizes[i], sizes[i + 1])]
        self.pixel_mlp = nn.Sequential(*layers)
        grid = coordinate_grid(h, w)  # (P, 2) observed pixel coordinates (u, v)
        self.register_buffer("grid", torch.cat([grid, torch.ones(len(grid), 1)], 1), persistent=False)  # (P, 3)

    def generate(self, h: Tensor) -> "CoordinateField":
        """The canonical object of latents ``h`` (N, in_dim): a :class:`CoordinateField` that
        :func:`affinevae.nn.affine.render` evaluates at any pose (no resampling)."""
        return CoordinateField(self, h)

    def first_layer(self, h: Tensor, pose: Optional[Pose] = None, inverse: Optional[Tensor] = None) -> Tensor:
        """Pre-activations of the first layer, (N, H*W, hidden[0]), computed factored.

        The pose is ``pose`` or, when given, the (N, 2, 3) observed -> canonical matrices ``inverse``.

        Per image the (hidden[0], 3) matrix ``W_c @ [A^-1 | -A^-1 t]`` gets the latent term
        ``W_z h + b`` added to its last (homogeneous) column, so one batched matmul with the
        fixed (H*W, 3) grid [u, v, 1] gives the whole layer: no per-pixel concatenation, no
        separate bias pass.
        """
        n = h.shape[0]
        theta = inverse if inverse is not None else inverse_pose_matrix(pose, n, h.device, torch.float32)  # (N, 2, 3)
        m = self.coord.weight @ theta  # (N, H1, 3)
        m = torch.cat([m[:, :, :2], m[:, :, 2:] + self.latent(h).to(m.dtype).unsqueeze(2)], 2)
        return torch.matmul(self.grid.to(m.dtype), m.transpose(1, 2))  # (P, 3) @ (N, 3, H1) -> (N, P, H1)

    def forward(self, h: Tensor, pose: Optional[Pose] = None) -> Tensor:
        """Likelihood parameters (N, C, H, W) of latents ``h`` (N, in_dim) observed in ``pose``."""
        return self.evaluate(h, None if pose is None or pose.is_identity() else invert_affine(pose_matrix(pose)))

    def evaluate(self, h: Tensor, inverse: Optional[Tensor]) -> Tensor:
        """Likelihood parameters (N, C, H, W) of latents ``h`` (N, in_dim) at the pixel grid mapped by
        (N, 2, 3) observed -> canonical matrices ``inverse`` (None: the identity)."""
        if inverse is None:
            inverse = identity_affine(h.shape[0], h.device, torch.float32)
        return self.after_first_layer(self.first_layer(h, inverse=inverse))

    def after_first_layer(self, pre: Tensor) -> Tensor:
        """The layers after the first: its (N, H*W, hidden[0]) pre-activations -> (N, C, H, W) likelihood
        parameters (here the per-pixel MLP)."""
        c, hh, ww = self.image_shape
        n, p, k = pre.shape
        out = self.pixel_mlp(pre.reshape(n * p, k))  # (N*P, C)
        if c == 1:
            return out.view(n, 1, hh, ww)
        return out.view(n, hh, ww, c).permute(0, 3, 1, 2)


@POSE_DECODERS.register("broadcast")
class BroadcastDecoder(SpatialDecoder):
    """Spatial-broadcast decoder: x = CNN([T^-1 q ; h]) over the pixel grid q in [-1, 1]^2.

    The latents ``h`` are broadcast to every pixel beside its canonical coordinates ``T^-1 q``
    (the first layer, factored as :meth:`SpatialDecoder.first_layer`: a 1 x 1 convolution of that
    stack), then every further layer is a 3 x 3 convolution (zero padding) where the spatial
    decoder has a per-pixel linear layer, so each output pixel sees its 3 x 3 neighbourhood per
    layer (Watters et al. 2019, arXiv:1901.07017; the rVAE article's decoder for convolutional
    networks). Like the spatial decoder it renders any pose by evaluating the coordinates there
    (no resampling of a canonical image); its convolutions run on the observed grid, so a turned
    rendering is the turned canonical one up to what the unturned 3 x 3 kernels see differently.

    Args: as :class:`SpatialDecoder` (``hidden``: the feature maps of the layers; at least one).
    Cost per image about ``9 H W sum(hidden[i] * hidden[i+1])`` multiply-adds.
    """

    def __init__(self, in_dim: int, image_shape: Sequence[int], hidden: Sequence[int] = (48, 48),
                 act: str = "relu", channels: Sequence[int] = (), norm: str = "none") -> None:
        super().__init__(in_dim, image_shape, hidden, act, channels, norm)
        sizes = [*hidden, self.image_shape[0]]
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers += [activation(act) if i == 0 else _inplace_activation(act),
                       nn.Conv2d(sizes[i], sizes[i + 1], 3, padding=1)]
        self.pixel_mlp = nn.Sequential(*layers)

    def after_first_layer(self, pre: Tensor) -> Tensor:
        """The first layer's (N, H*W, hidden[0]) pre-activations as (N, hidden[0], H, W) maps through the
        3 x 3 convolutions -> (N, C, H, W) likelihood parameters."""
        _, hh, ww = self.image_shape
        n, _, k = pre.shape
        return self.pixel_mlp(pre.transpose(1, 2).reshape(n, k, hh, ww))


def _inplace_activation(name: str) -> nn.Module:
    """The activation ``name``, in place where autograd allows it (saves one N*H*W*width buffer)."""
    act = activation(name)
    if hasattr(act, "inplace"):
        act.inplace = True
    return act


@POSE_DECODERS.register("warp")
class WarpDecoder(nn.Module):
    """Conv decoder renders the canonical image; a differentiable affine warp applies the pose.

    Args:
        in_dim: width of the latent input ``h``.
        image_shape: (C, H, W).
        hidden: widths of the fully connected head of the conv decoder.
        act: activation name.
        channels: transposed-conv feature maps, coarse -> fine (e.g. (64, 32)).
        norm: normalisation of the transposed-conv feature maps ('group' or 'none').

    The warp is :func:`affinevae.nn.affine.render`'s ``warp(canonical, invert_affine(T))``
    with border padding: pixels brought in from outside the canonical frame repeat its
    (learned, background) edge instead of a zero likelihood parameter, which for Bernoulli
    logits would mean a grey p = 0.5 background.
    """

    def __init__(self, in_dim: int, image_shape: Sequence[int], hidden: Sequence[int] = (256,),
                 act: str = "relu", channels: Sequence[int] = (64, 32), norm: str = "group") -> None:
        super().__init__()
        self.padding = "border"
        self.canonical = ConvDecoder(in_dim, image_shape, hidden=hidden, act=act, channels=channels, norm=norm)

    def init_output(self, params: Tensor) -> None:
        """Start the canonical rendering at the (C, H, W) likelihood parameters ``params``."""
        self.canonical.init_output(params)

    def generate(self, h: Tensor) -> Tensor:
        """The canonical likelihood parameters (N, C, H, W) of latents ``h`` (N, in_dim)."""
        return self.canonical(h)

    def forward(self, h: Tensor, pose: Optional[Pose] = None) -> Tensor:
        """Likelihood parameters (N, C, H, W) of latents ``h`` (N, in_dim) observed in ``pose``."""
        return render(self.generate(h), pose, padding=self.padding)


class CoordinateField:
    """The canonical object of a :class:`SpatialDecoder` for latents ``h`` (N, in_dim): a function
    of the canonical coordinates, rendered exactly at any pose by :func:`affinevae.nn.affine.render`
    (which calls :meth:`at`)."""

    def __init__(self, decoder: SpatialDecoder, h: Tensor) -> None:
        self.decoder, self.h = decoder, h
        self.batch_size, self.device = h.shape[0], h.device

    def at(self, inverse: Optional[Tensor]) -> Tensor:
        """(N, C, H, W) likelihood parameters at the grid mapped by (N, 2, 3) ``inverse`` (None: identity)."""
        return self.decoder.evaluate(self.h, inverse)
