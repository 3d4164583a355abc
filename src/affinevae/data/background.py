"""A frame's smooth background (uneven illumination, a thickness ramp, a vignette, a sky gradient), estimated in boxes.

As SExtractor and photutils' ``Background2D`` begin: the frame is cut into boxes of ``box`` pixels and each box's
sigma-clipped median is its background level (objects are the clipped outliers, as long as they cover less than
about half a box). Then, where ``Background2D`` median-filters the boxes and splines through them, a quadratic
surface is fitted to the levels by least squares, boxes that stand out of it (filled by objects) left out and the
fit made again, as scanning-probe software levels a frame by a fitted polynomial. The spline followed the boxes'
noise: on a field of 250 galaxies it measured a flat sky as uneven and, extrapolated to the edges, added noise peaks
there (precision 0.99 -> 0.87); the surface leaves that sky alone and flattens ramps and vignettes of every field in
``benchmarks/bench_background.py`` back to the flat field's figures (``benchmarks/EXPERIMENTS.md``, "Uneven
backgrounds"). It is written in numpy (vectorised over the boxes), so it runs by default without an extra;
``tests/test_background.py`` compares it with ``Background2D`` where photutils is installed.

:meth:`~affinevae.data.stacks.FrameSource.use_background` applies it to a stack: every frame then reads *flattened*,
its surface less the surface's median level subtracted from the stored values, before the stack's scaling, which
is then taken from the flattened values (an asinh-stretched sky then has the same noise everywhere). Tiles of a large frame read the same flattened values as
the whole frame (one surface per frame, its boxes read band by band).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Sequence

import numpy as np

from ..errors import AffineVAEError

__all__ = ["BOX_FACTOR", "MIN_BOXES", "CLIP_SIGMA", "SURFACE_DEGREE", "MAX_SCATTER", "OUTLIER_BOX", "SMOOTH_RATIO",
           "BACKGROUND_VARIATION", "Background", "background_box", "box_levels", "sample_step", "surface_terms",
           "frame_background", "check_box"]

#: The background's box side when none is given, in windows (:func:`background_box`): objects fit in a
#: window, so a box of four windows holds many of them, or much background, and its median is the background.
BOX_FACTOR = 4
#: A frame must hold at least this many boxes along each side for the background to be told from the
#: objects by default (:func:`~affinevae.data.patches.background_check`).
MIN_BOXES = 3
#: Pixels further than this many (robust) standard deviations from a box's median are clipped, three times.
CLIP_SIGMA = 3.0
_CLIP_ROUNDS = 3
#: The degree of the surface fitted to the box levels: 2 (a plane, a ramp, a vignette's bowl). Degrees up to 4,
#: the lowest that explained the boxes, were tried: their edges swung on grids of 6 x 6 boxes (precision 0.04-0.07
#: under an illumination spot, against 0.27-0.29 at degree 2; ``benchmarks/EXPERIMENTS.md``, "Uneven backgrounds").
SURFACE_DEGREE = 2
#: A box whose level lies further than this many robust spreads from the surface (objects filling it) is left
#: out of the fit, which is made again, up to three times.
OUTLIER_BOX = 3.0
_FIT_ROUNDS = 4
#: ``patches`` flattens by default only where the surface's variation is at least this many times the boxes'
#: scatter about it (:attr:`Background.scatter`): a smooth gradient, not the box-to-box noise of objects'
#: light (see :func:`~affinevae.data.patches.background_check`).
SMOOTH_RATIO = 3.0
#: ... and only where the boxes scatter about the surface by less than this many (smoothed) noise sigma: a
#: background the surface does not follow (an illumination spot, natural vignetting of tens of sigma) would be
#: left with structure as large as what makes a background uneven (:data:`BACKGROUND_VARIATION`).
MAX_SCATTER = 3.0
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
    """The smooth background of one frame: a low-order surface fitted to its box levels (:func:`frame_background`).

    Attributes:
        levels: (C, ny, nx) the boxes' sigma-clipped medians (pixel units).
        row_centres, col_centres: (ny,) and (nx,) the boxes' centres in the frame's pixels.
        image_shape: (H, W) of the frame.
        box: the box side in pixels.
        coeffs: (C, K) the surface's coefficients on :attr:`terms`.
        terms: K exponent pairs (i, j) of the surface's terms ``u**i * v**j``, with ``u`` the row and ``v`` the
            column scaled to [-1, 1] over the frame.
        used: (C, ny, nx) the boxes the fit kept (the others stood out of it: objects filling them).
        spread: (C,) the robust standard deviation of a box level about the surface expected from the pixel
            noise alone (pixel units).
    """

    levels: np.ndarray
    row_centres: np.ndarray
    col_centres: np.ndarray
    image_shape: tuple
    box: int
    coeffs: np.ndarray
    terms: tuple
    used: np.ndarray
    spread: np.ndarray

    def levels_at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(C, len(rows), len(cols)) float64: the surface at the pixel rows x columns (frame coordinates)."""
        u, v = _scaled(np.asarray(rows, np.float64), self.image_shape[0]), _scaled(np.asarray(cols, np.float64),
                                                                                  self.image_shape[1])
        out = np.zeros((self.coeffs.shape[0], len(u), len(v)))
        for k, (i, j) in enumerate(self.terms):
            out += self.coeffs[:, k, None, None] * (u ** i)[None, :, None] * (v ** j)[None, None, :]
        return out

    def _sampled(self) -> np.ndarray:
        """The surface on a 65 x 65 grid spanning the frame, edges included (its extremes lie on it or near)."""
        h, w = self.image_shape
        return self.levels_at(np.linspace(0, h - 1, 65), np.linspace(0, w - 1, 65))

    @property
    def low(self) -> np.ndarray:
        """(C,) the surface's lowest level over the frame (pixel units)."""
        return self._sampled().min(axis=(1, 2))

    @property
    def typical(self) -> np.ndarray:
        """(C,) the surface's median level over the frame (pixel units): the level a flattened frame's
        background is brought to (:meth:`field` ``to='median'``)."""
        return np.median(self._sampled(), axis=(1, 2))

    @property
    def variation(self) -> float:
        """The surface's highest level less its lowest over the frame, the largest over channels (pixel units)."""
        grid = self._sampled()
        return float(np.max(grid.max(axis=(1, 2)) - grid.min(axis=(1, 2))))

    @property
    def scatter(self) -> float:
        """The root mean square of the kept boxes' levels about the surface, the largest over channels (pixel
        units): how much of the box-to-box variation the surface does not explain (objects, structure)."""
        fit = self.levels_at(self.row_centres, self.col_centres)
        res = np.where(self.used, self.levels - fit, 0.0)
        return float(np.max(np.sqrt((res ** 2).sum(axis=(1, 2)) / np.maximum(self.used.sum(axis=(1, 2)), 1))))

    def field(self, rows: slice = slice(None), cols: slice = slice(None), to: str = "low") -> np.ndarray:
        """The background at the pixels ``[rows, cols]`` of the frame (slices may have steps), less one level
        of it over the frame: what :meth:`~affinevae.data.stacks.FrameSource.use_background` subtracts.

        Args:
            to: 'low', the surface's lowest level (:attr:`low`): the flattened background stands at the frame's
                darkest and no pixel rises; or 'median' (:attr:`typical`, what
                :meth:`~affinevae.data.stacks.FrameSource.use_background` subtracts): it stands at the frame's
                typical level, and the flattened values straddle the stored ones.

        Returns:
            (C, h, w) float32 (pixel units; >= 0 for 'low' up to the 65 x 65 grid :attr:`low` is taken on).
        """
        if to not in ("low", "median"):
            raise AffineVAEError(f"to must be 'low' or 'median', got {to!r}")
        h, w = self.image_shape
        r = np.arange(*rows.indices(h), dtype=np.float64)
        c = np.arange(*cols.indices(w), dtype=np.float64)
        level = self.low if to == "low" else self.typical
        return (self.levels_at(r, c) - level[:, None, None]).astype(np.float32)


def _scaled(at: np.ndarray, n: int) -> np.ndarray:
    """Pixel coordinates 0..n-1 onto [-1, 1]."""
    return (2.0 * at - (n - 1)) / max(n - 1, 1)


def surface_terms(ny: int, nx: int, degree: int = SURFACE_DEGREE) -> tuple:
    """The exponent pairs (i, j) of the surface's terms ``u**i * v**j`` (i + j <= ``degree``) that a grid of
    ``ny`` x ``nx`` boxes can fit: powers along a side up to one less than its boxes."""
    return tuple((i, j) for i in range(min(degree, ny - 1) + 1) for j in range(min(degree, nx - 1) + 1)
                 if i + j <= degree)


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
        or right edge holding less than half a box is left out) and the quadratic surface (:func:`surface_terms`)
        fitted to them by least squares, up to four times, each time leaving out the boxes further than
        :data:`OUTLIER_BOX` robust spreads from it (the spread at least what the pixel noise gives a median).
    """
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
    if np.isnan(levels).any():  # boxes with no finite pixel: the frame's median level (a channel with none: 0,
        with warnings.catch_warnings():  # a flat background, nothing subtracted)
            warnings.simplefilter("ignore", RuntimeWarning)
            fill = np.nan_to_num(np.nanmedian(levels, axis=(1, 2), keepdims=True))
        levels = np.where(np.isnan(levels), fill, levels)
        spread = np.where(np.isnan(spread), np.nan_to_num(np.nanmedian(spread)), spread)
    u, v = np.meshgrid(_scaled(rc, h), _scaled(cc, w), indexing="ij")
    # a box level's own spread from the pixel noise: 1.253 sigma / sqrt(pixels) for a median
    noise = 1.2533 * np.nanmedian(spread, axis=(1, 2)) / np.sqrt((box // step) ** 2)  # (C,)
    terms = surface_terms(ny, nx)
    design = np.stack([(u ** i * v ** j).ravel() for i, j in terms], axis=1)  # (ny * nx, K)
    coeffs, used = _robust_fit(design, levels.reshape(len(levels), -1), noise)
    return Background(levels.astype(np.float64), rc, cc, (h, w), int(box), coeffs, terms,
                      used.reshape(levels.shape), noise)


def _robust_fit(design: np.ndarray, y: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares surface ``design`` (B, K) through the box levels ``y`` (C, B), up to :data:`_FIT_ROUNDS`
    times, each leaving out the boxes further than :data:`OUTLIER_BOX` robust spreads (at least ``noise`` (C,),
    a median's own spread) from it. Returns ``(coeffs (C, K), kept (C, B) bool)`` (the kept boxes' scatter is
    :attr:`Background.scatter`)."""
    coeffs = np.empty((len(y), design.shape[1]))
    kept = np.ones(y.shape, bool)
    for ch in range(len(y)):
        keep = kept[ch]
        for _ in range(_FIT_ROUNDS):  # boxes filled by objects stand out of the surface: left out, refitted
            coeffs[ch] = np.linalg.lstsq(design[keep], y[ch][keep], rcond=None)[0]
            res = y[ch] - design @ coeffs[ch]
            mid = np.median(res[keep])
            scale = max(1.4826 * float(np.median(np.abs(res[keep] - mid))), float(noise[ch]), 1e-12)
            new = np.abs(res - mid) <= OUTLIER_BOX * scale
            if new.sum() <= design.shape[1] or np.array_equal(new, keep):
                break
            keep = new
        kept[ch] = keep
    return coeffs, kept
