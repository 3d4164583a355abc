"""1-D signals (spectra) as images of height one, their shift pose and a 1-D conv encoder.

A signal of C channels and L samples is carried through every stage as a (C, 1, L) image, so
the stages of :mod:`affinevae.models.base`, the likelihoods and the trainer need no 1-D copy.
Its pose is a shift ``s`` along the signal, **in samples** (channels of a spectrum): the
signal observed at sample ``u`` is the canonical one at ``u - s``. The pose decoders of
:mod:`affinevae.nn.spatial` then are the 1-D decoders: on a (C, 1, L) grid the vertical
coordinate is the constant 0, so the spatial decoder evaluates ``f(u - s, z)`` at every sample
(a coordinate MLP over shifted coordinates) and the warp decoder resamples its canonical signal
at ``u - s``.

The :class:`~affinevae.nn.affine.Pose` that renders a shift holds it in the package's image
units, half widths: ``shift = (2 s / L, 0)``. :func:`shift_pose` and :func:`pose_shift` convert.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..errors import AffineVAEError
from .affine import Pose
from .layers import ENCODERS, activation, feature_norm, mlp


def is_signal_shape(image_shape: Sequence[int]) -> bool:
    """True when ``image_shape`` (C, H, W) is that of 1-D signals: height one (C, 1, L)."""
    return len(image_shape) == 3 and int(image_shape[1]) == 1


def item_noun(image_shape: Sequence[int]) -> str:
    """What one item of data of ``image_shape`` (C, H, W) is called in messages and captions: ``'signal'``
    for 1-D signals (C, 1, L), else ``'image'``."""
    return "signal" if is_signal_shape(image_shape) else "image"


def shift_pose(shift: Tensor, length: int) -> Pose:
    """The :class:`Pose` of shifts ``shift`` (N,) in samples along signals of ``length`` samples
    (its ``shift`` (N, 2) in half widths: ``(2 s / L, 0)``)."""
    s = shift.reshape(-1) * (2.0 / length)
    return Pose(shift=torch.stack([s, torch.zeros_like(s)], 1))


def pose_shift(pose: Optional[Pose], length: int) -> Optional[Tensor]:
    """The shifts (N,) in samples of a pose of signals of ``length`` samples (None without a shift):
    the horizontal component of ``pose.shift`` (half widths) times ``L / 2``."""
    if pose is None or pose.shift is None:
        return None
    return pose.shift[:, 0] * (length / 2.0)


@ENCODERS.register("conv1d")
class Conv1dEncoder(nn.Module):
    """Encoder of (N, C, 1, L) signals: stride-2 1-D convolutions of width 5 (``channels``, each
    normalised by ``norm``) -> flatten -> MLP(hidden) -> (N, out_dim); ``cond`` (N, K) joins after
    the convolutions. Refuses image shapes whose height is not one.
    """

    def __init__(self, image_shape: Sequence[int], out_dim: int, hidden: Sequence[int] = (256,),
                 act: str = "relu", cond_dim: int = 0, channels: Sequence[int] = (16, 32), norm: str = "group") -> None:
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        if h != 1:
            raise AffineVAEError(f"encoder 'conv1d' is for 1-D signals (C, 1, L); got image shape {c}x{h}x{w}")
        layers: list[nn.Module] = []
        for ch in channels:
            layers += [nn.Conv1d(c, ch, 5, stride=2, padding=2), *feature_norm(norm, ch), activation(act)]
            c, w = ch, (w + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.head = mlp([c * w + cond_dim, *hidden, out_dim], act)

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        """(N, C, 1, L) signals (and (N, K) one-hot classes) -> (N, out_dim)."""
        h = self.conv(x.flatten(1, 2) if x.dim() == 4 else x).flatten(1)
        if cond is not None:
            h = torch.cat([h, cond.to(h.dtype)], 1)
        return self.head(h)
