"""Figures. Every function returns data and/or a matplotlib Figure; nothing is shown on screen."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import atomic_write  # noqa: E402


def image_grid(images, ncol: Optional[int] = None, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tile (N, C, H, W) or (N, H, W) images in [0, 1] into one (rows*H, cols*W[, 3]) array."""
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim == 3:
        imgs = imgs[:, None]
    n, c, h, w = imgs.shape
    ncol = ncol or int(np.ceil(np.sqrt(n)))
    nrow = int(np.ceil(n / ncol))
    grid = np.full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), pad_value, dtype=np.float32)
    for i in range(n):
        r, k = divmod(i, ncol)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = imgs[i]
    grid = np.clip(grid, 0, 1)
    return grid[0] if c == 1 else np.moveaxis(grid[:3], 0, -1)


def save_image(array: np.ndarray, path: str | Path, upscale: int = 1) -> Path:
    """Save a [0, 1] grey (H, W) or RGB (H, W, 3) array as a PNG, atomically."""
    from PIL import Image

    arr = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    img = Image.fromarray(arr)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
    plt.close(fig)
    return out
