"""Scale bars and backgrounds for image axes drawn in pixel coordinates (the map figures).

Axes of the map figures are in pixels (x: column, y: row, rows downwards); these helpers add a
physical scale bar (:class:`~affinevae.units.PixelSize`) and draw a (possibly downsampled)
background image over the frame's full pixel extent.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .units import PixelSize, nice_length

__all__ = ["add_scale_bar", "draw_background", "display_unit", "DISPLAY_LADDERS"]


def add_scale_bar(ax, pixel_size: Optional[PixelSize], image_shape: Sequence[int], color: str = "white"):
    """Add a scale bar of a round physical length (about a fifth of the frame's width) to ``ax``.

    Args:
        ax: matplotlib axes whose data coordinates are pixels. pixel_size: the physical pixel
            size (None: nothing is drawn). image_shape: (H, W) of the frame in pixels.

    The bar is labelled in the largest unit of the pixel size's kind of which the frame spans at least 5
    (:func:`display_unit`: over 256 pixels of 2 arcmin, a 2 deg bar, not 7200 arcsec; 0.05 nm pixels
    recorded in µm, a 2 nm bar, not 0.002 µm).

    Returns:
        The bar's length in ``pixel_size.unit`` (None without a pixel size).
    """
    if pixel_size is None:
        return None
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    shown = pixel_size.to(display_unit(pixel_size, float(image_shape[1])))
    length = nice_length(float(image_shape[1]) * shown.value)
    bar = AnchoredSizeBar(ax.transData, length / shown.value, f"{length:g} {shown.unit}", "lower right",
                          pad=0.4, color=color, frameon=False, size_vertical=max(1.0, image_shape[0] / 150),
                          label_top=True)
    ax.add_artist(bar)
    return float(f"{PixelSize(length, shown.unit).to(pixel_size.unit).value:.12g}")


#: The units a scale bar may be labelled in, smallest first; a pixel size in Å keeps Å in place of nm
#: (cryo-EM's unit).
DISPLAY_LADDERS = (("pm", "nm", "µm", "mm"), ("pm", "Å", "µm", "mm"), ("mas", "arcsec", "arcmin", "deg"))


def display_unit(pixel_size: PixelSize, width: float) -> str:
    """The unit to label a scale bar over ``width`` pixels in: the largest of ``pixel_size``'s kind
    (:data:`DISPLAY_LADDERS`) of which the frame spans at least 5, else the smallest (a 0.05 nm pixel
    recorded in µm: nm; 256 pixels of 2 arcmin: deg)."""
    unit = pixel_size.unit
    ladder = next(step for step in DISPLAY_LADDERS if unit in step)
    return next((u for u in reversed(ladder) if width * pixel_size.to(u).value >= 5), ladder[0])


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
