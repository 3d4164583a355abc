"""Scale bars and backgrounds for image axes drawn in pixel coordinates (the map figures).

Axes of the map figures are in pixels (x: column, y: row, rows downwards); these helpers add a
physical scale bar (:class:`~affinevae.units.PixelSize`) and draw a (possibly downsampled)
background image over the frame's full pixel extent.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .units import PixelSize, nice_length

__all__ = ["add_scale_bar", "draw_background"]


def add_scale_bar(ax, pixel_size: Optional[PixelSize], image_shape: Sequence[int], color: str = "white"):
    """Add a scale bar of a round physical length (about a fifth of the frame's width) to ``ax``.

    Args:
        ax: matplotlib axes whose data coordinates are pixels. pixel_size: the physical pixel
            size (None: nothing is drawn). image_shape: (H, W) of the frame in pixels.

    Returns:
        The bar's length in ``pixel_size.unit`` (None without a pixel size).
    """
    if pixel_size is None:
        return None
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    width = float(image_shape[1]) * pixel_size.value
    length = nice_length(width)
    bar = AnchoredSizeBar(ax.transData, length / pixel_size.value, f"{length:g} {pixel_size.unit}", "lower right",
                          pad=0.4, color=color, frameon=False, size_vertical=max(1.0, image_shape[0] / 150),
                          label_top=True)
    ax.add_artist(bar)
    return length


def draw_background(ax, image: np.ndarray, image_shape: Sequence[int]) -> None:
    """Draw a grayscale (H', W') or (C, H', W') background stretched over an (H, W) frame's pixel extent.

    ``image`` may be a downsampled copy of the frame (read with a step); it is drawn behind
    everything else, with the same percentile contrast the map figures use.
    """
    img = np.asarray(image, dtype=np.float32)
    img = img.mean(0) if img.ndim == 3 else img
    lo, hi = np.percentile(img, [1, 99.5]) if img.size else (0, 1)
    h, w = int(image_shape[0]), int(image_shape[1])
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, extent=(-0.5, w - 0.5, h - 0.5, -0.5),
              interpolation="antialiased", alpha=0.6, zorder=0)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
