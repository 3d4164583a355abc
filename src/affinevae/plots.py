"""Figures. Every function returns data and/or a matplotlib Figure; nothing is shown on screen.

The figures are pyplot-free (:class:`matplotlib.figure.Figure`, drawn by the canvas of the format
they are saved in), so the package neither imports pyplot nor chooses a backend: a notebook's
inline backend, or a script's interactive one, stays as the user set it."""

from __future__ import annotations

import math
import sys

from pathlib import Path
from typing import Optional

import matplotlib
import numpy as np

from .io import atomic_write


def image_grid(images, ncol: Optional[int] = None, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tile (N, C, H, W) or (N, H, W) images in [0, 1] into one (rows*H, cols*W[, 3]) array (one or two channels:
    grey, two as their mean; three or more: the first three as RGB)."""
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
    if c == 2:  # no colour for two channels: their mean, in grey
        return grid.mean(0)
    return grid[0] if c == 1 else np.moveaxis(grid[:3], 0, -1)


#: Writer options of the image formats :func:`save_image` writes besides PNG.
IMAGE_SAVE_OPTIONS = {"JPEG": {"quality": 95}, "TIFF": {"compression": "tiff_adobe_deflate"}}


def save_image(array: np.ndarray, path: str | Path, upscale: int = 1, fmt: str = "PNG") -> Path:
    """Save a [0, 1] grey (H, W) or RGB (H, W, 3) array atomically as ``fmt`` ('PNG', 'JPEG' at
    quality 95 or 'TIFF' with deflate, which tifffile reads without imagecodecs), each pixel repeated ``upscale`` x ``upscale`` times."""
    from PIL import Image

    arr = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    img = Image.fromarray(arr)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    options = IMAGE_SAVE_OPTIONS.get(fmt, {})
    return atomic_write(path, lambda tmp: img.save(tmp, format=fmt, **options))


def literal_texts(fig):
    """Show every text of ``fig`` literally: mathtext off (a ``$`` in a run name, a title or a
    legend entry is drawn as typed, never parsed as TeX). Returns ``fig``.

    The package draws no mathtext of its own; :func:`save_figure` and :func:`figure_png_bytes`
    call this, so user-supplied names cannot break a figure."""
    from matplotlib.text import Text

    for t in fig.findobj(Text):
        t.set_parse_math(False)
    return fig


def save_figure(fig, path: str | Path, dpi: int = 110, fmt: str = "png") -> Path:
    """Save a matplotlib figure atomically as ``fmt`` (a matplotlib format: 'png', 'jpeg', 'tiff',
    'pdf', 'svg') and close it (texts literal: :func:`literal_texts`)."""
    literal_texts(fig)
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight"))
    close_figure(fig)
    return out


def close_figure(fig) -> None:
    """Release ``fig`` once it is saved: a figure pyplot manages (the caller's own, passed in) is closed
    there; the package's own pyplot-free figures need nothing. Never imports pyplot."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Shared figure style and helpers for the analyses (:mod:`affinevae.analysis`) and the report.

#: Cyclic colormap for angles (so -180 and +180 degrees get the same colour): 0 light,
#: negative blue, positive red, +-180 dark.
ANGLE_CMAP = "twilight_shifted"
#: Diverging colormap for angles confined to less than a half circle (they never wrap).
ANGLE_DIVERGING_CMAP = "coolwarm"
#: Qualitative colormap for classes (10 distinct colours, repeated beyond 10).
CLASS_CMAP = "tab10"

STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "image.interpolation": "nearest",
}


def new_figure(nrows: int = 1, ncols: int = 1, panel: tuple[float, float] = (3.2, 3.0), squeeze: bool = False,
               **kwargs):
    """A pyplot-free Figure with an (nrows, ncols) grid of Axes in the package style.

    ``panel`` is the (width, height) of one panel in inches. Returns ``(fig, axes)`` where
    ``axes`` is an (nrows, ncols) object array (unless ``squeeze``). Layout is constrained
    (no overlapping labels).
    """
    from matplotlib.figure import Figure

    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=squeeze, **kwargs)
    return fig, axes


def styled(fn):
    """Decorator: run a figure-making function inside the package's matplotlib style."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper


def show_images(ax, images, ncol: Optional[int] = None, title: Optional[str] = None, pad: int = 1,
                extent: Optional[tuple] = None, axis_off: bool = True):
    """Draw (N, C, H, W) images in [0, 1] as one tiled grid on ``ax`` (grey for C = 1); 1-D signals
    (H = 1) as tiled curves (:func:`show_signals`).

    ``extent`` (left, right, bottom, top) places the tiles in data coordinates (e.g. the
    latent values of a manifold); otherwise the axes are hidden. Returns the AxesImage.
    """
    if np.ndim(images) == 4 and np.shape(images)[2] == 1:  # 1-D signals (N, C, 1, L): tiled curves
        return show_signals(ax, images, ncol=ncol, title=title, extent=extent, axis_off=axis_off)
    grid = image_grid(images, ncol=ncol, pad=pad, pad_value=1.0)
    kw = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if grid.ndim == 2 else {}
    im = ax.imshow(grid, extent=extent, interpolation="nearest", **kw)
    if axis_off and extent is None:
        ax.set_axis_off()
    if title:
        ax.set_title(title)
    return im


def show_signals(ax, signals, ncol: Optional[int] = None, title: Optional[str] = None,
                 extent: Optional[tuple] = None, axis_off: bool = True):
    """Draw (N, C, 1, L) 1-D signals (the first channel) as curves tiled like :func:`show_images`'
    images: ``ncol`` per row, one common intensity scale; ``extent`` places the tile grid in data
    coordinates. Returns the last Line2D."""
    x = np.asarray(signals, dtype=np.float64)[:, 0, 0, :]
    n, length = x.shape
    ncol = ncol or max(1, math.ceil(math.sqrt(n)))
    nrow = math.ceil(n / ncol)
    lo, hi = float(x.min()), float(x.max())
    y = (x - lo) / (hi - lo if hi > lo else 1.0)
    t = np.linspace(0.05, 0.95, length)
    left, right, bottom, top = extent if extent is not None else (0.0, float(ncol), float(nrow), 0.0)
    w, h = (right - left) / ncol, (bottom - top) / nrow  # h < 0 when rows go down (image order)
    line = None
    for i in range(n):
        r, c = divmod(i, ncol)
        line, = ax.plot(left + (c + t) * w, top + (r + 0.95 - 0.9 * y[i]) * h, color="k", lw=0.8)
    if extent is None:
        ax.set_xlim(0, ncol)
        ax.set_ylim(nrow, 0)
        if axis_off:
            ax.set_axis_off()
    if title:
        ax.set_title(title)
    return line


def angle_ticks(limit: float) -> list[float]:
    """Round tick positions (degrees) over [-limit, limit]: multiples of 90, 45, 30 or 15, about five of them."""
    for step in (90.0, 45.0, 30.0, 15.0):
        if limit / step >= 2:
            break
    k = int(math.floor(limit / step + 1e-9))
    return [step * i for i in range(-k, k + 1)]


def angle_colorbar(fig, mappable, ax, label: str = "angle (degrees)", limit: float = 180.0):
    """A colour bar for angles in degrees over [-limit, limit] with round ticks (see :func:`angle_ticks`)."""
    cb = fig.colorbar(mappable, ax=ax, shrink=0.9)
    cb.set_label(label)
    cb.set_ticks(angle_ticks(limit))
    return cb


def figure_png_bytes(fig, dpi: int = 100, close: bool = True) -> bytes:
    """Render a matplotlib figure to PNG bytes (for embedding in HTML)."""
    import io

    buf = io.BytesIO()
    literal_texts(fig)
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        close_figure(fig)
    return buf.getvalue()
