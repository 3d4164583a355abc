"""Poses, affine matrices and differentiable warps: the ``warp`` in x = warp(render(z), pose).

Coordinates are normalised as in :func:`torch.nn.functional.affine_grid`
(``align_corners=False``): ``u`` runs left -> right and ``v`` top -> bottom, both in
[-1, 1] across the image, so a shift of 1.0 is half the image width (height).

A *pose* is the forward transform ``T`` that carries the canonical (upright, centred)
object to the observed image: ``observed(q) = canonical(T^-1 q)``. With
``T(p) = A p + t`` and ``A = R(angle) @ Shear(shear) @ diag(scale_x, scale_y)``:

- ``angle`` (radians) rotates the object counter-clockwise *as seen on screen*;
- ``scale`` > 1 enlarges it; ``shear`` is the shear factor along u;
- ``shift`` (t_u, t_v) moves it right / down, in units of half the image size.

All matrices here are batched, shape (N, 2, 3), and follow ``affine_grid``'s meaning:
the matrix maps *output* pixel coordinates to the *input* coordinates to sample.
Hence ``render(canonical, pose) = warp(canonical, invert_affine(pose_matrix(pose)))``
and ``canonicalise(observed, pose) = warp(observed, pose_matrix(pose))``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Protocol, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import AffineVAEError


@dataclasses.dataclass
class Pose:
    """A batch of poses; any field may be ``None`` (identity for that part).

    Attributes:
        angle: (N,) rotation in radians, counter-clockwise on screen.
        shift: (N, 2) translation (right, down) in units of half the image size.
        scale: (N,) or (N, 2) zoom factor (> 0); (N, 2) scales u and v separately.
        shear: (N,) shear factor along u.
    """

    angle: Optional[Tensor] = None
    shift: Optional[Tensor] = None
    scale: Optional[Tensor] = None
    shear: Optional[Tensor] = None

    def batch_size(self) -> Optional[int]:
        """N, or ``None`` when every field is ``None``."""
        for v in (self.angle, self.shift, self.scale, self.shear):
            if v is not None:
                return v.shape[0]
        return None

    def is_identity(self) -> bool:
        """True when no field is set."""
        return self.batch_size() is None

    def detach(self) -> "Pose":
        """A copy with every tensor detached."""
        return Pose(**{k: (v.detach() if v is not None else None) for k, v in self.items()})

    def items(self):
        """(name, tensor-or-None) pairs."""
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]

    def index(self, idx) -> "Pose":
        """Select a sub-batch with ``idx`` (slice, index tensor or mask)."""
        return Pose(**{k: (v[idx] if v is not None else None) for k, v in self.items()})

    def to(self, device) -> "Pose":
        """Move every tensor to ``device``."""
        return Pose(**{k: (v.to(device) if v is not None else None) for k, v in self.items()})


def rotation_matrix(angle: Tensor) -> Tensor:
    """(N,) radians -> (N, 2, 2) matrices rotating counter-clockwise on screen (v points down)."""
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)


def pose_matrix(pose: Pose, n: Optional[int] = None, device=None, dtype=torch.float32) -> Tensor:
    """Forward transform ``T`` of ``pose`` as (N, 2, 3) matrices [A | t].

    ``n``/``device``/``dtype`` are used when ``pose`` is the identity (all fields None).
    """
    n = pose.batch_size() or n
    if n is None:
        raise ValueError("pose_matrix needs n for an identity pose")
    ref = next((v for _, v in pose.items() if v is not None), None)
    if ref is not None:
        device, dtype = ref.device, ref.dtype
    A = torch.eye(2, device=device, dtype=dtype).expand(n, 2, 2)
    if pose.scale is not None:
        s = pose.scale
        s = torch.stack([s, s], -1) if s.dim() == 1 else s
        A = A * s[:, None, :]  # A @ diag(s): scale columns
    if pose.shear is not None:
        sh = torch.zeros(n, 2, 2, device=device, dtype=dtype)
        sh[:, 0, 0] = 1.0
        sh[:, 1, 1] = 1.0
        sh[:, 0, 1] = pose.shear
        A = sh @ A
    if pose.angle is not None:
        A = rotation_matrix(pose.angle) @ A
    t = pose.shift if pose.shift is not None else torch.zeros(n, 2, device=device, dtype=dtype)
    return torch.cat([A, t[:, :, None]], -1)


def invert_affine(theta: Tensor) -> Tensor:
    """Exact inverse of (N, 2, 3) affine matrices: [A | t] -> [A^-1 | -A^-1 t]."""
    A, t = theta[:, :, :2], theta[:, :, 2:]
    a, b, c, d = A[:, 0, 0], A[:, 0, 1], A[:, 1, 0], A[:, 1, 1]
    det = a * d - b * c
    Ainv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[:, None, None]
    return torch.cat([Ainv, -Ainv @ t], -1)


def compose_affine(first: Tensor, second: Tensor) -> Tensor:
    """Matrix of ``second(first(p))`` for (N, 2, 3) matrices (applies ``first`` then ``second``)."""
    A1, t1 = first[:, :, :2], first[:, :, 2:]
    A2, t2 = second[:, :, :2], second[:, :, 2:]
    return torch.cat([A2 @ A1, A2 @ t1 + t2], -1)


def identity_affine(n: int, device=None, dtype=torch.float32) -> Tensor:
    """(n, 2, 3) identity matrices."""
    return torch.eye(2, 3, device=device, dtype=dtype).expand(n, 2, 3).clone()


def coordinate_grid(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """(H*W, 2) pixel-centre coordinates (u, v) in [-1, 1], row-major, as ``affine_grid`` uses."""
    v = (torch.arange(height, device=device, dtype=dtype) * 2 + 1) / height - 1
    u = (torch.arange(width, device=device, dtype=dtype) * 2 + 1) / width - 1
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], -1).reshape(-1, 2)


def transform_grid(theta: Tensor, height: int, width: int) -> Tensor:
    """Apply (N, 2, 3) ``theta`` to the pixel grid: (N, H*W, 2) sampling coordinates."""
    grid = coordinate_grid(height, width, theta.device, theta.dtype)
    return grid @ theta[:, :, :2].transpose(1, 2) + theta[:, None, :, 2]


#: The (2, 3) pose a NaN entry of a warp's theta is replaced from: every pixel sampled at (2, 2).
_OUTSIDE = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 2.0]])


def warp(images: Tensor, theta: Tensor, padding_mode: str = "zeros", mode: str = "bilinear") -> Tensor:
    """Differentiable affine warp of (N, C, H, W) images by (N, 2, 3) ``theta``.

    Output pixel at coordinate q takes the input value at ``theta @ [q, 1]`` (bilinear,
    zeros outside). Gradients flow to both ``images`` and ``theta``. A non-finite ``theta``
    (a diverged pose) is made finite first (a NaN entry takes the value of a pose that samples
    only outside the image, zero matrix and shift 2; inf is clamped to 1e4), with zero gradient
    there: torch's grid_sample backward crashes the process on NaN coordinates with border
    padding (torch 2.x, CPU).
    """
    if images.dim() != 4 or theta.shape[1:] != (2, 3) or theta.shape[0] != images.shape[0]:
        raise ValueError(f"warp expects (N,C,H,W) images and (N,2,3) theta, got {tuple(images.shape)} and {tuple(theta.shape)}")
    theta = theta.to(images.dtype)
    # NaN entries -> the pose "outside" (zero matrix, shift 2), inf clamped: a (N, 2, 3) op, not a grid-sized one
    theta = torch.where(torch.isnan(theta), _OUTSIDE.to(theta.device, theta.dtype), theta).clamp(-1e4, 1e4)
    grid = affine_grid(theta, images.shape[-2], images.shape[-1])
    return F.grid_sample(images, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def affine_grid(theta: Tensor, height: int, width: int) -> Tensor:
    """(N, H, W, 2) sampling grid of (N, 2, 3) ``theta``: the same values as
    ``F.affine_grid(theta, (N, C, H, W), align_corners=False)``, about 5x faster on a CPU
    (three broadcast products instead of a batched (H*W, 3) @ (3, 2) matrix product).

    Pixel centres lie at u = (2 j + 1) / W - 1 (j = 0..W-1) and v = (2 i + 1) / H - 1;
    the grid holds ``theta @ [u, v, 1]`` as (u, v) input coordinates. Differentiable in ``theta``.
    """
    u = torch.arange(width, device=theta.device, dtype=theta.dtype).mul_(2 / width).add_(1 / width - 1)
    v = torch.arange(height, device=theta.device, dtype=theta.dtype).mul_(2 / height).add_(1 / height - 1)
    t = theta[:, :, :, None, None]  # (N, 2, 3, 1, 1)
    # (N, 2, H, W): row r of theta applied to every pixel centre
    grid = t[:, :, 0] * u + t[:, :, 1] * v[:, None] + t[:, :, 2]
    return grid.permute(0, 2, 3, 1)


PoseLike = Union[Pose, Tensor, None]
"""A pose given as a :class:`Pose`, as (N, 2, 3) forward matrices ``T`` = [A | t], or None (identity)."""


def as_matrix(pose: PoseLike, n: int, device=None, dtype=torch.float32) -> Optional[Tensor]:
    """(N, 2, 3) forward matrices of ``pose`` (a :class:`Pose` or matrices), or None for the identity."""
    if pose is None:
        return None
    if isinstance(pose, Pose):
        if pose.is_identity():
            return None
        return pose_matrix(pose, n, device, dtype)
    if pose.dim() != 3 or pose.shape[1:] != (2, 3):
        raise ValueError(f"a pose matrix must have shape (N, 2, 3), got {tuple(pose.shape)}")
    return pose


def compose_poses(outer: PoseLike, inner: PoseLike, n: int, device=None) -> PoseLike:
    """The pose ``outer o inner`` (``inner`` applied first): a :class:`Pose` when only one is set,
    else (N, 2, 3) matrices. ``n``/``device``: batch size and device when building matrices."""
    a, b = as_matrix(outer, n, device), as_matrix(inner, n, device)
    if a is None:
        return inner
    if b is None:
        return outer
    return compose_affine(b, a)


class Canonical(Protocol):
    """A canonical object that is not an image: it renders itself at any pose.

    ``at(inverse)`` takes (N, 2, 3) matrices ``T^-1`` (observed -> canonical coordinates; None
    for the identity) and returns the (N, C, H, W) likelihood parameters observed there, e.g. a
    coordinate decoder evaluated at the transformed pixel grid (no resampling).
    """

    def at(self, inverse: Optional[Tensor]) -> Tensor:
        """(N, C, H, W) likelihood parameters observed through ``inverse`` (N, 2, 3) matrices
        ``T^-1`` (observed -> canonical coordinates, in half image widths); None: the identity."""
        ...


def render(canonical: Union[Tensor, Canonical], pose: PoseLike, padding: str = "zeros",
           mode: str = "bilinear") -> Tensor:
    """Place a canonical object in ``pose``: the observed (N, C, H, W) image (the one warp).

    ``canonical`` is an (N, C, H, W) image (warped by ``T^-1`` with grid sampling: ``padding``
    'zeros' or 'border' fills what comes from outside the frame, ``mode`` 'bilinear', 'bicubic'
    or 'nearest') or a :class:`Canonical` (evaluated exactly at the transformed coordinates).
    ``pose``: :class:`Pose`, (N, 2, 3) forward matrices, or None (identity).
    """
    if isinstance(canonical, Tensor):
        theta = as_matrix(pose, canonical.shape[0], canonical.device, torch.float32)
        if theta is None:
            return canonical
        return warp(canonical, invert_affine(theta), padding_mode=padding, mode=mode)
    n = getattr(canonical, "batch_size", None)
    theta = as_matrix(pose, n, getattr(canonical, "device", None), torch.float32)
    return canonical.at(None if theta is None else invert_affine(theta))


def canonicalise(observed: Tensor, pose: PoseLike, padding: str = "zeros", mode: str = "bilinear") -> Tensor:
    """Undo ``pose`` on observed (N, C, H, W) images: the canonical images, ``warp(observed, T)``.

    ``pose``: :class:`Pose`, (N, 2, 3) forward matrices ``T``, or None (identity: returned as is);
    ``padding``/``mode`` as in :func:`render`.
    """
    theta = as_matrix(pose, observed.shape[0], observed.device, torch.float32)
    if theta is None:
        return observed
    return warp(observed, theta, padding_mode=padding, mode=mode)


def wrap_angle(angle: Tensor) -> Tensor:
    """Wrap ``angle`` (radians) to [-pi, pi) (closed at -pi, open at pi: pi maps to -pi),
    element-wise: a tensor of any shape -> the same shape."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


FULL_TURN = 2 * math.pi
"""The largest angle magnitude (radians) the public functions that take angles accept (the sweeps,
``rotate_images``, a model's ``decode``): one full turn."""


def check_angle(angle, where: str) -> float:
    """One angle ``angle`` (radians) as a float: a finite number within one full turn
    (:func:`check_full_turn`), else one :class:`AffineVAEError` line starting with ``where``."""
    try:
        value = float(angle)
    except (TypeError, ValueError):
        raise AffineVAEError(f"{where}: angle must be a number (radians), got {angle!r}") from None
    if not math.isfinite(value):
        raise AffineVAEError(f"{where}: angle must be finite (radians), got {angle!r}")
    check_full_turn(value, where, "angle")
    return value


def check_full_turn(radians, where: str, what: str = "angles") -> None:
    """Refuse angles (scalar or (A,) radians) beyond one full turn (|angle| > 2 pi), in one line:
    such a value is nearly always degrees given where radians are taken (30 for 30 degrees), which
    would otherwise turn the images silently by 30 radians (1719 degrees)."""
    values = np.asarray(radians, dtype=np.float64).reshape(-1)
    worst = float(values[np.argmax(np.abs(values))]) if len(values) else 0.0
    if abs(worst) > FULL_TURN + 1e-6:
        verb = "is" if what == "angle" else "are"
        raise AffineVAEError(f"{where}: an angle of {worst:g} is more than a full turn in radians (2 pi = 6.283); "
                             f"{what} {verb} taken in radians (degrees? use np.radians)")
