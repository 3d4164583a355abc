"""MNIST (bundled, offline) and rotated / affine MNIST with the true transforms.

MNIST: Y. LeCun, C. Cortes and C. J. C. Burges, CC BY-SA 3.0. The 28x28 digits ship in the
package (``affinevae/data/_files/mnist.npz``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources
from typing import Optional, Sequence

import numpy as np
import torch

from ..config import check_seed
from ..errors import AffineVAEError
from .imageset import ImageSet


@lru_cache(maxsize=1)
def _mnist_arrays() -> dict[str, np.ndarray]:
    ref = resources.files("affinevae.data") / "_files" / "mnist.npz"
    with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def load_mnist(split: str = "train", n: Optional[int] = None, digits: Optional[Sequence[int]] = None,
               seed: Optional[int] = None) -> ImageSet:
    """The bundled MNIST digits as an :class:`ImageSet` of (N, 1, 28, 28) floats in [0, 1].

    Args:
        split: 'train' (60 000 images) or 'test' (10 000).
        n: keep the first ``n`` images (after the digit filter and optional shuffle).
        digits: keep only these labels.
        seed: if given, shuffle with this seed before taking ``n``.
    """
    if split not in ("train", "test"):
        raise AffineVAEError(f"MNIST split must be 'train' or 'test', got {split!r}")
    arr = _mnist_arrays()
    x, y = arr[f"x_{split}"], arr[f"y_{split}"].astype(np.int64)
    idx = np.arange(len(x))
    if digits is not None:
        idx = idx[np.isin(y, list(digits))]
    if seed is not None:
        check_seed(seed)
        idx = np.random.default_rng(seed).permutation(idx)
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise AffineVAEError(f"n must be an integer >= 1, got {n!r}")
        if n < 1:
            raise AffineVAEError(f"n must be >= 1, got {n}")
        idx = idx[:n]
    return ImageSet((x[idx].astype(np.float32) / 255.0)[:, None], y[idx], class_names=[str(i) for i in range(10)],
                    source=f"mnist-{split}")


def check_max_angle(max_angle: float, where: str = "max_angle", lower_inclusive: bool = False) -> float:
    """Return ``max_angle`` (radians) as a float if it lies in (0, pi] ([0, pi] with ``lower_inclusive``),
    else raise :class:`AffineVAEError` naming ``where`` and the bounds in radians and degrees."""
    ok = isinstance(max_angle, (int, float, np.integer, np.floating)) and not isinstance(max_angle, bool)
    v = float(max_angle) if ok else float("nan")
    if not ((0.0 <= v if lower_inclusive else 0.0 < v) and v <= math.pi):
        lo = "[" if lower_inclusive else "("
        raise AffineVAEError(f"{where} must lie in {lo}0, pi] radians ({lo}0, 180] degrees), got {max_angle!r}")
    return v


def transform_images(images: np.ndarray, angle: Optional[np.ndarray] = None, shift: Optional[np.ndarray] = None,
                     scale: Optional[np.ndarray] = None, batch_size: int = 4096) -> np.ndarray:
    """Place canonical images (N, C, H, W) in the given poses with :func:`affinevae.nn.render`.

    ``angle`` (N,) radians counter-clockwise, ``shift`` (N, 2) half-widths (right, down),
    ``scale`` (N,) zoom. Uses the same convention as every model in the package.
    """
    from ..nn.affine import Pose, check_full_turn, render

    n = len(images)
    fields = {}
    for name, value, shape in (("angle", angle, (n,)), ("shift", shift, (n, 2)), ("scale", scale, (n,))):
        if value is None:
            continue
        v = np.asarray(value, dtype=np.float64)
        if v.shape in ((), shape[1:]) and v.shape != shape:  # one pose for every image
            v = np.array(np.broadcast_to(v, shape))
        if v.shape != shape or not np.all(np.isfinite(v)) or (name == "scale" and not np.all(v > 0)):
            raise AffineVAEError(f"transform_images: {name} must be finite{' and > 0' if name == 'scale' else ''}, "
                                 f"of shape {shape} (or one value for every image), got shape {v.shape}")
        fields[name] = v
    if "angle" in fields:
        check_full_turn(fields["angle"], "transform_images", "angle")
    angle, shift, scale = (fields.get(k) for k in ("angle", "shift", "scale"))
    out = np.empty_like(images, dtype=np.float32)
    t = lambda v, s: None if v is None else torch.as_tensor(v[s], dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            s = slice(i, i + batch_size)
            pose = Pose(angle=t(angle, s), shift=t(shift, s), scale=t(scale, s))
            out[s] = render(torch.as_tensor(images[s], dtype=torch.float32), pose).numpy()
    return out


#: rotated-mnist's angle range when none is given: digits turned uniformly within +-60 degrees (radians).
ROTATED_MNIST_MAX_ANGLE = math.radians(60)


def rotated_mnist(split: str = "train", n: Optional[int] = None, max_angle: float = ROTATED_MNIST_MAX_ANGLE,
                  max_shift: float = 0.0, scale_range: tuple[float, float] = (1.0, 1.0), seed: int = 0,
                  digits: Optional[Sequence[int]] = None, full_circle: bool = False) -> ImageSet:
    """MNIST digits placed in random poses, with the true transforms attached.

    Args:
        split, n, digits: as :func:`load_mnist` (the first ``n`` images, reproducible).
        max_angle: angles uniform in [-max_angle, max_angle] radians (default 60 degrees), in
            [0, pi]; ``pi`` turns the digits uniformly over the full circle (the same draws as
            ``full_circle=True``).
        full_circle: angles uniform in [-pi, pi) instead.
        max_shift: shifts uniform in [-max_shift, max_shift] half-widths per axis.
        scale_range: zoom uniform (in log space) between the two bounds.
        seed: fixes the angles, shifts and scales.

    Returns:
        :class:`ImageSet` with ``angle`` (N,) radians, ``shift`` (N, 2), ``scale`` (N,).

    Raises:
        AffineVAEError: on a ``max_angle`` outside [0, pi] or an invalid ``scale_range``.
    """
    check_max_angle(max_angle, "rotated_mnist: max_angle", lower_inclusive=True)
    check_seed(seed, "rotated_mnist: seed")
    base = load_mnist(split, n=n, digits=digits)
    rng = np.random.default_rng(seed)
    N = len(base)
    if full_circle:
        angle = rng.uniform(-math.pi, math.pi, N)
    else:
        angle = rng.uniform(-max_angle, max_angle, N)
    shift = rng.uniform(-max_shift, max_shift, (N, 2)) if max_shift > 0 else np.zeros((N, 2))
    lo, hi = scale_range
    if not (0 < lo <= hi):
        raise AffineVAEError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    scale = np.exp(rng.uniform(math.log(lo), math.log(hi), N)) if hi > lo else np.full(N, lo)
    imgs = transform_images(base.images, angle, shift if max_shift > 0 else None, scale if hi > lo else None)
    return ImageSet(np.clip(imgs, 0, 1), base.labels, angle.astype(np.float32), shift.astype(np.float32),
                    scale.astype(np.float32), base.class_names, source=f"rotated-mnist-{split}")
