"""A Gaussian low-pass filter for noisy images and signals (``ModelConfig.lowpass``).

Low-SNR data (cryo-EM particles, faint objects: a signal-to-noise of a few per pixel or less)
leave a VAE's content latents unused: the per-pixel noise hides what tells the objects apart
from the mean image. A Gaussian blur of a pixel or two averages the noise down by its noise gain
(:func:`noise_gain`) while it keeps the objects' shapes, which are larger than the filter; single-
particle cryo-EM low-passes its particles before 2-D classification for the same reason.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GaussianLowpass", "gaussian_kernel", "noise_gain"]


def _weights(sigma: float) -> list[float]:
    """The 2r + 1 weights of the normalised 1-D Gaussian, r = max(1, ceil(3 sigma)), as plain floats (so
    that :func:`noise_gain` works also while models are planned on PyTorch's meta device)."""
    r = max(1, math.ceil(3.0 * sigma))
    k = [math.exp(-0.5 * (t / sigma) ** 2) for t in range(-r, r + 1)]
    total = sum(k)
    return [v / total for v in k]


def gaussian_kernel(sigma: float) -> Tensor:
    """The normalised 1-D Gaussian of standard deviation ``sigma`` (pixels, > 0), (2r + 1,) float32
    weights summing to 1 with radius ``r = max(1, ceil(3 sigma))``."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    return torch.tensor(_weights(sigma), dtype=torch.float64).float()


def noise_gain(sigma: float, dims: int = 2) -> float:
    """Standard deviation of white pixel noise after the filter, per unit of it before: the root of
    the sum of the squared weights of the ``dims``-D kernel (about ``1 / (2 sqrt(pi) sigma)`` in 2-D:
    0.28 at ``sigma`` 1, 0.19 at 1.5, 0.14 at 2). 1 for ``sigma`` 0 (no filter)."""
    if sigma == 0:
        return 1.0
    return sum(v * v for v in _weights(sigma)) ** (dims / 2)


class GaussianLowpass(nn.Module):
    """Blur (N, C, H, W) images with a Gaussian of standard deviation ``sigma`` pixels, each channel on
    its own (separable; edges mirrored, so a flat image stays flat and the mean is kept). 1-D
    signals (H = 1) are blurred along their length only. The kernel is a non-persistent buffer: it
    comes from the config, not the saved weights."""

    def __init__(self, sigma: float):
        super().__init__()
        self.sigma = float(sigma)
        self.register_buffer("kernel", gaussian_kernel(self.sigma), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W) blurred, in ``x``'s dtype."""
        n, c, h, w = x.shape
        k = self.kernel.to(x.dtype)
        r = (len(k) - 1) // 2
        y = x.reshape(n * c, 1, h, w)
        if w > 1:
            y = F.conv2d(_mirror(y, r, 3), k.view(1, 1, 1, -1))
        if h > 1:
            y = F.conv2d(_mirror(y, r, 2), k.view(1, 1, -1, 1))
        return y.reshape(n, c, h, w)

    def extra_repr(self) -> str:
        """The filter's width in ``repr``: ``sigma=1.5`` (pixels)."""
        return f"sigma={self.sigma:g}"


def _mirror(y: Tensor, r: int, dim: int) -> Tensor:
    """Pad ``y`` by ``r`` on both sides of ``dim`` (2 or 3) by mirroring ('symmetric': the edge pixel
    repeated, as scipy.ndimage's 'reflect'), repeated as often as a kernel wider than the image needs."""
    size = y.shape[dim]
    idx = torch.arange(-r, size + r, device=y.device)
    period = 2 * size
    idx = torch.remainder(idx, period)
    idx = torch.where(idx >= size, period - 1 - idx, idx)
    return y.index_select(dim, idx)
