"""Parameterisations of the affine pose searched by the affine VAE.

A *parameterisation* maps a batch of unconstrained-ish parameter vectors ``params`` (N, P)
to a :class:`~affinevae.nn.affine.Pose` and to the (N, 2, 3) forward matrix ``T`` that
carries the canonical object to the observed image (conventions of
:mod:`affinevae.nn.affine`: angles in radians counter-clockwise on screen, shifts in half
image widths, log-scales natural-log of the zoom factor). Every parameterisation is the
identity at ``params == 0``.

Registered parameterisations (:data:`TRANSFORMS`):

===================== ====================================================================
name                  parameters (in order)
===================== ====================================================================
rotation              angle
rotation-scale        angle, log_scale
rotation-scale-shear  angle, log_scale, shear
translation           shift_u, shift_v
similarity            angle, log_scale, shift_u, shift_v
affine                angle, log_scale_u, log_scale_v, shear, shift_u, shift_v
===================== ====================================================================

With ``canonical = canonicalise(observed, params)`` (a grid-sampling warp by ``T``) and
``render(canonical, params)`` (the warp by the exact inverse ``T^-1``), rendering undoes
canonicalising up to interpolation error.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional

import torch
from torch import Tensor

from ..errors import AffineVAEError
from ..registry import Registry
from .affine import Pose, canonicalise, compose_affine, invert_affine, pose_matrix, render, rotation_matrix, wrap_angle

TRANSFORMS: Registry = Registry("transform")

#: Which search range (bounds for random restarts) applies to each parameter kind.
RANGE_OF_KIND = {
    "angle": "angle",
    "log_scale": "log_scale",
    "log_scale_u": "log_scale",
    "log_scale_v": "log_scale",
    "shear": "shear",
    "shift_u": "shift",
    "shift_v": "shift",
}

#: Default bounds per range name: angle in radians, log-scale in nats of zoom, shear factor,
#: shift in half image widths.
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "angle": (-math.pi, math.pi),
    "log_scale": (-0.3, 0.3),
    "shear": (-0.3, 0.3),
    "shift": (-0.2, 0.2),
}


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _MIX1, _MIX2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shr(z: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 ``z`` by ``s`` bits (torch's is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix64(z: Tensor) -> Tensor:
    """SplitMix64's finaliser on an int64 tensor of any shape, element by element (wrapping
    arithmetic; the result has ``z``'s shape): a bijection of 64-bit integers whose outputs look
    independent for neighbouring inputs (counter-based random numbers)."""
    z = z ^ _shr(z, 30)
    z = z * _MIX1
    z = z ^ _shr(z, 27)
    z = z * _MIX2
    return z ^ _shr(z, 31)


def image_keys(x: Tensor) -> Tensor:
    """(N,) int64 keys of images ``x`` (N, ...): a hash of each image's float32 values (their bits), equal
    for equal images and, in practice, different otherwise; computed on the CPU, vectorised."""
    flat = x.detach().to("cpu", torch.float32).contiguous().reshape(len(x), -1)
    bits = flat.view(torch.int32).long() & 0xFFFFFFFF
    where = torch.arange(flat.shape[1], dtype=torch.int64) * _GOLDEN
    return mix64(mix64(bits + where).sum(1) + flat.shape[1])


def keyed_uniform(keys: Tensor, k: int, base: int) -> Tensor:
    """(N, k) float32 uniform numbers in [0, 1): row i from ``keys[i]`` (int64) and ``base`` alone."""
    counter = mix64(torch.arange(k, dtype=torch.int64) * _GOLDEN + _signed(base % (1 << 64)))
    z = mix64(keys.long()[:, None] * _MIX1 ^ counter[None, :])
    return (_shr(z, 11).double() / float(1 << 53)).float()


@dataclasses.dataclass(frozen=True)
class Parameterisation:
    """A named list of pose parameters and how they build a :class:`Pose`.

    Attributes:
        name: registry name ('rotation', 'similarity', 'affine', ...).
        kinds: the parameter kinds in column order (keys of :data:`RANGE_OF_KIND`).
    """

    name: str
    kinds: tuple[str, ...]

    def __post_init__(self) -> None:
        for k in self.kinds:
            if k not in RANGE_OF_KIND:
                raise ValueError(f"unknown parameter kind {k!r}")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"repeated parameter kinds in {self.kinds}")

    # ------------------------------------------------------------------ structure
    @property
    def dim(self) -> int:
        """P, the number of parameters."""
        return len(self.kinds)

    @property
    def has_angle(self) -> bool:
        """Whether the first-class rotation angle is a parameter."""
        return "angle" in self.kinds

    def column(self, kind: str) -> Optional[int]:
        """Column of parameter ``kind`` in ``params``, or ``None`` if absent."""
        return self.kinds.index(kind) if kind in self.kinds else None

    def check(self, params: Tensor, where: str = "params") -> Tensor:
        """Validate ``params`` of shape (N, P); raises :class:`AffineVAEError`."""
        params = torch.as_tensor(params)
        if params.dim() != 2 or params.shape[1] != self.dim:
            raise AffineVAEError(f"{where}: transform '{self.name}' needs shape (N, {self.dim}), got {tuple(params.shape)}")
        return params

    # ------------------------------------------------------------------ conversions
    def identity(self, n: int, device=None, dtype=torch.float32) -> Tensor:
        """(n, P) parameters of the identity pose (all zeros)."""
        return torch.zeros(n, self.dim, device=device, dtype=dtype)

    def to_pose(self, params: Tensor) -> Pose:
        """(N, P) parameters -> :class:`Pose` (angle rad, shift half-widths, scale, shear)."""
        params = self.check(params)
        col = {k: params[:, i] for i, k in enumerate(self.kinds)}
        scale = None
        if "log_scale" in col:
            scale = torch.exp(col["log_scale"])
        elif "log_scale_u" in col or "log_scale_v" in col:
            zero = torch.zeros_like(params[:, 0])
            scale = torch.exp(torch.stack([col.get("log_scale_u", zero), col.get("log_scale_v", zero)], -1))
        shift = None
        if "shift_u" in col or "shift_v" in col:
            zero = torch.zeros_like(params[:, 0])
            shift = torch.stack([col.get("shift_u", zero), col.get("shift_v", zero)], -1)
        return Pose(angle=col.get("angle"), shift=shift, scale=scale, shear=col.get("shear"))

    def matrix(self, params: Tensor) -> Tensor:
        """(N, P) parameters -> (N, 2, 3) forward matrices ``T`` (canonical -> observed)."""
        params = self.check(params)
        return pose_matrix(self.to_pose(params), n=params.shape[0], device=params.device, dtype=params.dtype)

    def inverse_matrix(self, params: Tensor) -> Tensor:
        """(N, P) parameters -> (N, 2, 3) exact inverses ``T^-1``."""
        return invert_affine(self.matrix(params))

    def angle(self, params: Tensor) -> Tensor:
        """(N,) rotation angle in radians (zeros when the parameterisation has none)."""
        params = self.check(params)
        c = self.column("angle")
        return params[:, c] if c is not None else params.new_zeros(len(params))

    # ------------------------------------------------------------------ images
    def canonicalise(self, images: Tensor, params: Tensor, padding: str = "zeros", mode: str = "bilinear") -> Tensor:
        """Undo the pose ``params`` (N, P): (N, C, H, W) observed -> canonical images
        (:func:`affinevae.nn.affine.canonicalise`, ``warp(images, T)``)."""
        return canonicalise(images, self.matrix(params.to(images.dtype)), padding=padding, mode=mode)

    def render(self, images: Tensor, params: Tensor, padding: str = "zeros", mode: str = "bilinear") -> Tensor:
        """Apply the pose ``params`` (N, P): (N, C, H, W) canonical -> observed images
        (:func:`affinevae.nn.affine.render`, ``warp(images, T^-1)``)."""
        return render(images, self.matrix(params.to(images.dtype)), padding=padding, mode=mode)

    # ------------------------------------------------------------------ search helpers
    def bounds(self, ranges: Mapping[str, tuple[float, float]], device=None) -> tuple[Tensor, Tensor]:
        """(P,) lower and upper bounds from ``ranges`` (range name -> (low, high), in each kind's units: see
        :meth:`sample`)."""
        lo = [float(ranges[RANGE_OF_KIND[k]][0]) for k in self.kinds]
        hi = [float(ranges[RANGE_OF_KIND[k]][1]) for k in self.kinds]
        return torch.tensor(lo, device=device), torch.tensor(hi, device=device)

    def sample(self, n: int, r: int, ranges: Mapping[str, tuple[float, float]], generator: Optional[torch.Generator] = None,
               stratify: bool = True, keys: Optional[Tensor] = None) -> Tensor:
        """(n, r, P) random parameters uniform within ``ranges``.

        ``ranges``: range name -> (low, high) (:data:`DEFAULT_RANGES`): 'angle' in radians,
        'log_scale' in natural log of the zoom factor, 'shear' a shear factor, 'shift' in half image
        widths. The P columns follow :attr:`kinds` in the same units (angle radians, log_scale /
        log_scale_u / log_scale_v log zoom, shear factor, shift_u / shift_v half image widths).

        With ``stratify`` the angles of each image's ``r`` draws are evenly spaced over the
        angle range with one random offset per image (better coverage than i.i.d. draws).
        Drawn on the CPU with ``generator`` (``None``: the global generator). ``keys`` (n,) int64 (e.g.
        :func:`image_keys`): each row's draws then come from one number drawn from ``generator`` and its
        own key alone (a counter-based hash), so an image gets the same draws whatever batch it is in.
        """
        lo, hi = self.bounds(ranges)
        if keys is None:
            u = torch.rand(n, r, self.dim, generator=generator)
            offset = torch.rand(n, 1, generator=generator) if stratify and r > 1 else None
        else:
            base = int(torch.randint(0, 2**62, (1,), generator=generator))
            u = keyed_uniform(keys.cpu().reshape(n), r * self.dim + 1, base)
            offset, u = u[:, -1:], u[:, :-1].reshape(n, r, self.dim)
        c = self.column("angle")
        if stratify and c is not None and r > 1:
            u[:, :, c] = (torch.arange(r, dtype=u.dtype)[None, :] + offset) / r
        return lo + (hi - lo) * u

    def project(self, params: Tensor, ranges: Mapping[str, tuple[float, float]]) -> Tensor:
        """Clamp every parameter into its range: (N, P) -> (N, P); ``ranges`` as :meth:`sample` (range name ->
        (low, high) in each kind's units).

        A full-circle angle range (width >= 2 pi) wraps the angle to [-pi, pi) instead.
        """
        lo, hi = self.bounds(ranges, device=params.device)
        out = torch.maximum(torch.minimum(params, hi.to(params.dtype)), lo.to(params.dtype))
        c = self.column("angle")
        if c is not None and float(hi[c] - lo[c]) >= 2 * math.pi - 1e-6:
            out[:, c] = wrap_angle(params[:, c])
        return out

    def rotate(self, params: Tensor, phi: Tensor) -> Tensor:
        """Parameters of ``R(phi) o T(params)``: the pose after rotating the observed image by ``phi``.

        If ``params`` canonicalise image x, ``rotate(params, phi)`` canonicalise
        ``render(x, Pose(angle=phi))``. Needs an angle parameter; shifts rotate with the image.
        ``params`` (N, P), ``phi`` (N,) radians -> (N, P).
        """
        c = self.column("angle")
        if c is None:
            raise AffineVAEError(f"transform '{self.name}' has no angle: cannot rotate its parameters")
        out = params.clone()
        out[:, c] = wrap_angle(params[:, c] + phi)
        cu, cv = self.column("shift_u"), self.column("shift_v")
        if cu is not None and cv is not None:
            shift = torch.stack([params[:, cu], params[:, cv]], -1)
            shift = (rotation_matrix(phi.to(params.dtype)) @ shift[:, :, None])[:, :, 0]
            out[:, cu], out[:, cv] = shift[:, 0], shift[:, 1]
        return out

    def compose(self, first: Tensor, second: Tensor) -> Tensor:
        """(N, 2, 3) matrix of ``T(second) o T(first)`` (apply pose ``first`` then ``second``)."""
        return compose_affine(self.matrix(first), self.matrix(second))


for _name, _kinds in [
    ("rotation", ("angle",)),
    ("rotation-scale", ("angle", "log_scale")),
    ("rotation-scale-shear", ("angle", "log_scale", "shear")),
    ("translation", ("shift_u", "shift_v")),
    ("similarity", ("angle", "log_scale", "shift_u", "shift_v")),
    ("affine", ("angle", "log_scale_u", "log_scale_v", "shear", "shift_u", "shift_v")),
]:
    TRANSFORMS.register(_name)(Parameterisation(_name, _kinds))


def get_transform(name: str) -> Parameterisation:
    """The registered :class:`Parameterisation` called ``name`` (raises :class:`AffineVAEError`)."""
    return TRANSFORMS.get(name)
