"""A frame's smooth background (uneven illumination, a thickness ramp, a sky gradient), estimated in boxes.

The method is SExtractor's and photutils' ``Background2D``: the frame is cut into boxes of ``box`` pixels, each
box's sigma-clipped median is its background level (objects are the clipped outliers, as long as they cover
less than about half a box), a box that stands out of its 3 x 3 neighbours' median by more than
:data:`OUTLIER_BOX` noise sigma (filled by an object) takes that median, and a bicubic spline through the boxes'
centres, carried on along its tangent beyond the outermost ones, gives the level of every pixel. Those two
departures from ``Background2D`` (which median-filters every box) keep a vignette's curvature: on sparse fields
under a ramp or a vignette of 3 noise sigma the rms error is 0.05 noise sigma here, 0.11-0.21 with
``Background2D``'s defaults and the same boxes (``benchmarks/EXPERIMENTS.md``, "Uneven backgrounds"). It is
written in numpy/scipy (vectorised over the boxes and channels), so it runs by default without an extra;
``tests/test_background.py`` compares it with ``Background2D`` where photutils is installed.

:meth:`~affinevae.data.stacks.FrameSource.use_background` applies it to a stack: every frame then reads
*flattened*, its background less the background's lowest level subtracted, so the background everywhere
stands at its darkest level and the pixel values stay within the frame's range. Tiles of a large frame read
the same flattened values as the whole frame (one grid of box levels per frame, read band by band).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Sequence

import numpy as np

from ..errors import AffineVAEError

__all__ = ["BOX_FACTOR", "MIN_BOXES", "CLIP_SIGMA", "OUTLIER_BOX", "BACKGROUND_VARIATION", "Background",
           "background_box", "box_levels", "sample_step", "frame_background", "check_box"]

#: The background's box side when none is given, in windows (:func:`background_box`): objects fit in a
#: window, so a box of four windows holds many of them, or much background, and its median is the background.
BOX_FACTOR = 4
#: A frame must hold at least this many boxes along each side for the background to be told from the
#: objects by default (:func:`~affinevae.data.patches.background_check`).
MIN_BOXES = 3
#: Pixels further than this many (robust) standard deviations from a box's median are clipped, three times.
CLIP_SIGMA = 3.0
_CLIP_ROUNDS = 3
#: A box whose level stands more than this many pixel-noise sigma (the boxes' median spread) from its 3 x 3
#: neighbours' median takes that median (SExtractor's and photutils' filter, applied to such boxes only).
OUTLIER_BOX = 2.0
#: ``patches`` flattens the frames by default when frame 0's background varies by more than this many
#: (smoothed) noise sigma from its lowest box to its highest (see
#: :func:`~affinevae.data.patches.background_check`, where it was measured).
BACKGROUND_VARIATION = 3.0


def check_box(box, image_shape: Sequence[int], where: str = "background box") -> int:
    """Return ``box`` (pixels, an integer >= 4 and at most the frame's longer side) or raise one line."""
    if isinstance(box, (bool, np.bool_)) or not isinstance(box, (int, np.integer)) or box < 4:
        raise AffineVAEError(f"{where} must be a whole number of pixels >= 4, got {box!r}")
    if box > max(int(image_shape[-2]), int(image_shape[-1])):
        raise AffineVAEError(f"{where} {int(box)} pixels is larger than the frames ({int(image_shape[-2])} x "
                             f"{int(image_shape[-1])} pixels)")
    return int(box)


def background_box(window: int) -> int:
    """The background's box side (pixels) for patches of ``window`` pixels: :data:`BOX_FACTOR` windows."""
    return BOX_FACTOR * int(window)


def box_levels(block: np.ndarray, box: int) -> tuple[np.ndarray, np.ndarray]:
    """Sigma-clipped medians of the ``box`` x ``box`` boxes of a band of rows.

    Args:
        block: (C, h, W) pixels, h <= ``box`` (one band of boxes; the last band and column of boxes may
            be partial).
        box: the box side in pixels.

    Returns:
        ``(levels, spreads)``: (C, nx) the boxes' clipped medians and the robust standard deviations of their
        clipped pixels (1.4826 times the median absolute deviation), both in pixel units (NaN where a box has
        no finite pixel), nx = ceil(W / box).
    """
    c, h, w = block.shape
    nx = -(-w // box)
    pad = nx * box - w
    a = block.astype(np.float32, copy=True)
    if pad:
        a = np.concatenate([a, np.full((c, h, pad), np.nan, np.float32)], axis=2)
    # (C, nx, h * box): each box's pixels on the last axis
    a = a.reshape(c, h, nx, box).transpose(0, 2, 1, 3).reshape(c, nx, h * box)
    a[~np.isfinite(a)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a box with no finite pixel stays NaN
        for _ in range(_CLIP_ROUNDS):
            med = np.nanmedian(a, axis=-1, keepdims=True)
            dev = np.abs(a - med)
            spread = 1.4826 * np.nanmedian(dev, axis=-1, keepdims=True)
            out = dev > CLIP_SIGMA * np.maximum(spread, 1e-12)
            if not out.any():
                break
            a[out] = np.nan
        med = np.nanmedian(a, axis=-1, keepdims=True)
        spread = 1.4826 * np.nanmedian(np.abs(a - med), axis=-1)
        return med[..., 0], spread


@dataclasses.dataclass(frozen=True)
class Background:
    """The smooth background of one frame, as a grid of box levels (:func:`frame_background`).

    Attributes:
        levels: (C, ny, nx) the boxes' levels after the 3 x 3 median filter (pixel units).
        row_centres, col_centres: (ny,) and (nx,) the boxes' centres in the frame's pixels.
        image_shape: (H, W) of the frame.
        box: the box side in pixels.
    """

    levels: np.ndarray
    row_centres: np.ndarray
    col_centres: np.ndarray
    image_shape: tuple
    box: int

    @property
    def variation(self) -> float:
        """The highest box level less the lowest, over channels (pixel units)."""
        return float(np.max(self.levels.max(axis=(1, 2)) - self.levels.min(axis=(1, 2))))

    def field(self, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """The background level at the pixels ``[rows, cols]`` of the frame (slices may have steps), less its
        lowest level over the frame (:attr:`low`): what :meth:`~affinevae.data.stacks.FrameSource.use_background`
        subtracts.

        Returns:
            (C, h, w) float32, >= 0 (up to a spline's overshoot between the sampled points of :attr:`low`).
            A bicubic spline through the box centres (of a lower degree where there are fewer than four boxes
            along a side), carried on to the frame's edges by the end boxes' polynomial.
        """
        h, w = self.image_shape
        r = np.arange(*rows.indices(h), dtype=np.float64)
        c = np.arange(*cols.indices(w), dtype=np.float64)
        return (self.levels_at(r, c) - self.low[:, None, None]).astype(np.float32)

    @property
    def low(self) -> np.ndarray:
        """(C,) the background's lowest level over the frame: the smallest value of the spline at the frame's
        edges, the box centres and halfway between them."""
        h, w = self.image_shape

        def points(centres: np.ndarray, n: int) -> np.ndarray:
            mid = (centres[1:] + centres[:-1]) / 2.0
            return np.unique(np.concatenate([[0.0, n - 1.0], centres, mid]))

        return self.levels_at(points(self.row_centres, h), points(self.col_centres, w)).min(axis=(1, 2))

    def levels_at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(C, len(rows), len(cols)) float64: the background at the pixel rows x columns (frame coordinates)."""
        from scipy.interpolate import RectBivariateSpline

        h, w = self.image_shape
        ny, nx = self.levels.shape[1:]
        out = np.empty((self.levels.shape[0], len(rows), len(cols)), np.float64)
        for ch, grid in enumerate(self.levels):  # channels: a few at most
            if ny == 1 and nx == 1:
                out[ch] = grid[0, 0]
            elif ny == 1:  # one row or column of boxes: along the other side only
                out[ch] = _line(cols, self.col_centres, grid[0])[None, :]
            elif nx == 1:
                out[ch] = _line(rows, self.row_centres, grid[:, 0])[:, None]
            else:
                spline = RectBivariateSpline(self.row_centres, self.col_centres, grid,
                                             kx=min(3, ny - 1), ky=min(3, nx - 1), s=0)
                # inside the box centres the spline; beyond them carried on along its tangent at the outermost
                # centres (a cubic's own extrapolation swings with the levels' noise)
                rc, cc = self.row_centres, self.col_centres
                r_in, c_in = np.clip(rows, rc[0], rc[-1]), np.clip(cols, cc[0], cc[-1])
                out[ch] = spline(r_in, c_in, grid=True)
                for sel, end in ((rows < rc[0], rc[:1]), (rows > rc[-1], rc[-1:])):
                    if sel.any():  # along the spline's tangent at the end row of centres: (1, n_cols)
                        slope = spline(end, c_in, dx=1, grid=True)[0]
                        out[ch][sel] += (rows[sel] - r_in[sel])[:, None] * slope[None, :]
                for sel, end in ((cols < cc[0], cc[:1]), (cols > cc[-1], cc[-1:])):
                    if sel.any():
                        slope = spline(r_in, end, dy=1, grid=True)[:, 0]
                        out[ch][:, sel] += slope[:, None] * (cols[sel] - c_in[sel])[None, :]
        return out


def _line(at: np.ndarray, centres: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation of ``levels`` at the ``centres`` (both (n,), n >= 2), carried on
    linearly beyond the outermost two."""
    out = np.interp(at, centres, levels)
    lo, hi = at < centres[0], at > centres[-1]
    out[lo] = levels[0] + (at[lo] - centres[0]) * (levels[1] - levels[0]) / (centres[1] - centres[0])
    out[hi] = levels[-1] + (at[hi] - centres[-1]) * (levels[-1] - levels[-2]) / (centres[-1] - centres[-2])
    return out


def sample_step(box: int) -> int:
    """The pixel step :func:`frame_background` samples a box of ``box`` pixels with: the largest divisor of
    ``box`` up to ``box // 32``, so a box gives at least about a thousand pixels (each level a median of
    them: within 0.04 noise sigma) at a fraction of the cost."""
    return max(d for d in range(1, max(1, box // 32) + 1) if box % d == 0)


def frame_background(read: Callable[[slice, slice], np.ndarray], image_shape: Sequence[int], box: int) -> Background:
    """The background of one frame, read band by band (a band of ``box`` rows at a time in memory).

    Args:
        read: ``read(rows, cols)`` returns the frame's pixels ``[..., rows, cols]`` (the slices have steps:
            :func:`sample_step`) as (h, w) or (C, h, w).
        image_shape: (H, W) of the frame. box: the box side in pixels (:func:`check_box`).

    Returns:
        :class:`Background`: the sigma-clipped medians of the boxes' sampled pixels (a partial box at the bottom
        or right edge holding less than half a box is left out); a box that stands out of its 3 x 3 neighbours'
        median by more than :data:`OUTLIER_BOX` pixel-noise sigma takes that median.
    """
    from scipy import ndimage

    h, w = int(image_shape[-2]), int(image_shape[-1])
    ny = -(-h // box)
    step = sample_step(box)
    rows, spreads = [], []
    for i in range(ny):
        block = np.asarray(read(slice(i * box, min(h, (i + 1) * box), step), slice(0, w, step)))
        if block.ndim == 2:
            block = block[None]
        lv, sp = box_levels(block, box // step)
        rows.append(lv)
        spreads.append(sp)
    levels, spread = np.stack(rows, axis=1), np.stack(spreads, axis=1)  # (C, ny, nx) each
    nx = levels.shape[2]
    rc = np.arange(ny) * box + box / 2.0 - 0.5
    cc = np.arange(nx) * box + box / 2.0 - 0.5
    rc[-1], cc[-1] = (h + (ny - 1) * box) / 2.0 - 0.5, (w + (nx - 1) * box) / 2.0 - 0.5  # partial end boxes
    if ny > 1 and h - (ny - 1) * box < box / 2:  # an end box under half a box: too few pixels, left out
        levels, spread, rc, ny = levels[:, :-1], spread[:, :-1], rc[:-1], ny - 1
    if nx > 1 and w - (nx - 1) * box < box / 2:
        levels, spread, cc, nx = levels[:, :, :-1], spread[:, :, :-1], cc[:-1], nx - 1
    if np.isnan(levels).all(axis=(1, 2)).any():
        raise AffineVAEError("a frame channel has no finite pixel: no background to estimate")
    if np.isnan(levels).any():  # boxes with no finite pixel: the frame's median level
        fill = np.nanmedian(levels, axis=(1, 2), keepdims=True)
        levels = np.where(np.isnan(levels), fill, levels)
    if ny >= 3 or nx >= 3:
        # A box that stands more than OUTLIER_BOX pixel-noise sigma from its 3 x 3 neighbours' median (objects
        # filling it) takes that median; the others keep their own level, so a smooth background keeps its
        # curvature (a median filter everywhere would flatten the peak of a vignetted frame).
        filtered = ndimage.median_filter(levels, size=(1, min(3, ny), min(3, nx)), mode="nearest")
        noise = np.nanmedian(spread, axis=(1, 2), keepdims=True)
        levels = np.where(np.abs(levels - filtered) > OUTLIER_BOX * noise, filtered, levels)
    return Background(levels.astype(np.float64), rc, cc, (h, w), int(box))
