"""Where the objects are: bright local maxima found in a frame, or coordinates read from a file.

Centres are (row, col) in pixels, integer pixel indices once checked against a stack
(:func:`check_coordinates`); frame indices are global (0 = the stack's first frame).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import AffineVAEError
from .inputs import as_number, check_int, real_array

__all__ = ["DETECT_THRESHOLD", "NOISE_FLOOR", "detect_objects", "find_objects", "REFINE_SIGMA", "REFINE_REACH",
           "refine_positions",
           "smoothing_radius", "smoothed_pair", "smoothed_range",
           "check_noise_floor", "level_step",
           "level_samples", "noise_level", "PERIODIC_RATIO", "frame_periodicity", "BOND_ORDERS", "SHELL_FACTOR", "neighbour_spacing", "neighbour_order", "neighbour_fold", "bond_orders", "object_arrangement", "read_coordinates", "check_coordinates", "frame_points"]


#: Default detection threshold: a fraction of the way from a (smoothed) frame's minimum to its
#: maximum (``detect_objects``, ``iter_patches``, ``patches --threshold``, the napari pipeline).
DETECT_THRESHOLD = 0.3
#: The noise floor of that threshold where it applies, in units of the (smoothed) pixel noise above
#: the frame's median (``detect_objects``' ``noise_floor``, ``patches --noise-floor``): on a sparse field
#: (a sky, an empty support film) 0.3 of the range can lie within the noise, and every noise peak is an
#: "object". Measured without smoothing: a sky field of 1000 x 1000 pixels with 250 faint galaxies
#: (asinh-stretched; 0.3 of the range lay 1.9 noise sigma above the median), ``patches --window 40``:
#: 947 noise peaks beside the 235 galaxies found, 31 at K = 3 (some of them galaxy substructure; all
#: maxima of the frame, edges included, 1 153 and 22, none at 3.5 to 5); a lattice under heavy noise (noise 0.3 of
#: an atom, ``synthetic_micrograph``): precision / recall 0.54 / 0.94 without, 0.93 / 0.90 at 3,
#: 0.97 / 0.67 at 3.5, 0.01 recall at 5 (its atoms stand about 5 sigma above the median, so a
#: higher floor needs smoothing, ``sigma``). But the noise estimate takes a dense lattice's own fine
#: structure for noise: atoms 3 px apart lost up to 80 % of their detections at K = 3 (4 px: 1-7 %,
#: 5-6 px: 0-4 %), so the floor is on by default only for sparse fields
#: (:func:`~affinevae.data.patches.default_noise_floor`), where ``patches`` now takes 5 with no fraction of the
#: range beside it (:data:`~affinevae.data.patches.SPARSE_NOISE_FLOOR`, after the default smoothing); this K = 3
#: was that default before.
NOISE_FLOOR = 3.0
# Samples of a frame that noise_level takes at most (about; a regular subgrid of the pixels).
_LEVEL_SAMPLES = 1 << 20


def detect_objects(frame: np.ndarray, min_distance: int = 5, threshold: float = DETECT_THRESHOLD,
                   absolute: bool = False, sigma: Optional[float] = None, value_range: Optional[tuple[float, float]] = None,
                   noise_floor: float = 0.0, level: Optional[tuple[float, float]] = None) -> np.ndarray:
    """Centres of bright objects in one frame: local maxima above a threshold.

    Args:
        frame: (H, W) or (C, H, W) image (channels are averaged).
        min_distance: minimum separation of two objects in pixels: a maximum must be the largest
            value in the (2 * min_distance + 1)^2 square around it. Keep it under half the
            objects' spacing, or a dim object beside bright ones is lost; this function knows no
            window, so its default is a fixed 5, where :func:`~affinevae.data.patches.cut_patches`
            and the ``patches`` command take a quarter of the window
            (:func:`~affinevae.data.patches.patch_min_distance`).
        threshold: with ``absolute`` the minimum (smoothed) pixel value of an object; otherwise a
            fraction of the way from the frame's minimum to its maximum (a fraction of the maximum
            when the background is 0), raised to the noise floor where that is higher.
        absolute: interpret ``threshold`` as a pixel value (no noise floor).
        sigma: standard deviation (pixels) of a Gaussian smoothing applied first; None or 0 for none.
        value_range: ``(lo, hi)`` the relative threshold is measured in, instead of this frame's
            (smoothed) minimum and maximum: for a tile of a larger frame, the whole frame's range
            (:func:`smoothed_range`), so tiles find what the whole frame would.
        noise_floor: K >= 0: a relative threshold is raised to at least the (smoothed) frame's
            median plus K times its pixel noise (:func:`noise_level`), so that noise peaks on a
            sparse field (a sky, an empty support film) do not count as objects (``patches`` takes
            :data:`~affinevae.data.patches.SPARSE_NOISE_FLOOR`, 5, there with the threshold 0: the floor
            alone; :data:`NOISE_FLOOR`, 3, beside 0.3 of the range was its former choice); 0 (default)
            turns it off, and a noiseless frame (noise 0) has none.
        level: ``(median, noise)`` of the whole frame for a tile (:func:`noise_level`), as
            ``value_range``; None: measured on this frame.

    Returns:
        (N, 2) int64 centres (row, col) in pixels, sorted by row then column. Flat-topped maxima
        (plateaus) give one centre each.
    """
    return _detect(frame, min_distance, threshold, absolute, sigma, value_range, noise_floor, level)[0]


def _detect(frame, min_distance, threshold, absolute, sigma, value_range, noise_floor,
            level) -> tuple[np.ndarray, np.ndarray]:
    """:func:`detect_objects`' centres, with the (H, W) float32 frame it found them on (after its smoothing)."""
    from scipy import ndimage

    md = check_int("min_distance", min_distance, 1)
    given, threshold = threshold, as_number(threshold)
    if threshold is None or not np.isfinite(threshold):
        raise AffineVAEError(f"threshold must be a finite number, got {given!r}")
    if not absolute and not 0 <= threshold <= 1:
        raise AffineVAEError(f"threshold must lie in 0..1 (a fraction of the way from the frame's minimum to its "
                             f"maximum), got {threshold!r}; absolute=True reads it as a pixel value")
    sigma = _smoothing(sigma)
    check_noise_floor(noise_floor)
    if np.ndim(frame) not in (2, 3) or min(np.shape(frame)[-2:]) < 1:
        raise AffineVAEError(f"detect_objects expects an (H, W) or (C, H, W) frame, got shape {np.shape(frame)}")
    if np.asarray(frame).dtype.kind not in "biuf":
        raise AffineVAEError(f"detect_objects: the frame must hold real numbers, got dtype {np.asarray(frame).dtype}")
    if value_range is not None:
        vr = real_array(value_range, "detect_objects: value_range", ndim=(1,), what="(lo, hi) pixel values")
        if vr.shape != (2,) or not vr[0] <= vr[1]:
            raise AffineVAEError(f"detect_objects: value_range must be (lo, hi) with lo <= hi, got {value_range!r}")
    raw, img = smoothed_pair(frame, sigma)
    if not np.isfinite(img).all():  # NaN or inf pixels would hide every object
        raise AffineVAEError("detect_objects: the frame holds NaN or infinite pixels (fill them first, as "
                             "`patches --fill-nan` does)")
    lo, hi = (float(img.min()), float(img.max())) if value_range is None else map(float, value_range)
    thr = float(threshold) if absolute else lo + float(threshold) * (hi - lo)
    if not absolute and noise_floor > 0:
        if level is None:
            level = noise_level(*level_samples(raw, img, level_step(raw.shape)), sigma)
        if level[1] > 0:  # a noiseless frame (a rendering, a constant) keeps the relative threshold
            thr = max(thr, level[0] + noise_floor * level[1])
    peak = (img == ndimage.maximum_filter(img, size=2 * md + 1, mode="nearest")) & (img > thr)
    if hi <= lo:
        peak[:] = False
    labels, n = ndimage.label(peak)
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64), img
    if n == int(peak.sum()):  # no plateaus: every peak pixel is its own object
        return np.argwhere(peak).astype(np.int64), img
    # one centre per plateau: its centre of mass, rounded to a pixel
    com = np.rint(np.asarray(ndimage.center_of_mass(peak, labels, np.arange(1, n + 1)))).astype(np.int64)
    return com[np.lexsort((com[:, 1], com[:, 0]))], img


def find_objects(frame: np.ndarray, min_distance: int = 5, threshold: float = DETECT_THRESHOLD,
                 absolute: bool = False, sigma: Optional[float] = None,
                 value_range: Optional[tuple[float, float]] = None, noise_floor: float = 0.0,
                 level: Optional[tuple[float, float]] = None,
                 origin: Sequence[int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """:func:`detect_objects` and :func:`refine_positions` in one: the frame is smoothed once where the two
    smoothings agree (a detection ``sigma`` of :data:`REFINE_SIGMA` or more, as ``patches``' default of a
    sixteenth of a window of 16 px or more).

    Args:
        frame, min_distance, threshold, absolute, sigma, value_range, noise_floor, level: as
            :func:`detect_objects`. origin: as :func:`refine_positions`.

    Returns:
        ``(centers, positions)``: (N, 2) int64 centres (row, col) in pixels of ``frame`` (sorted by row
        then column), and their (N, 2) float64 sub-pixel positions in the larger frame's pixels (``origin``).
    """
    centers, img = _detect(frame, min_distance, threshold, absolute, sigma, value_range, noise_floor, level)
    shared = img if sigma is not None and sigma >= REFINE_SIGMA else None
    return centers, refine_positions(frame, centers, origin, sigma, smoothed=shared)


#: Gaussian smoothing (pixels) of the frame on which :func:`refine_positions` fits each peak.
REFINE_SIGMA = 1.0
#: Pixels around a centre that :func:`refine_positions` reads at its own smoothing: the smoothing's reach plus
#: the 3 x 3 fit (at a wider detection smoothing, that smoothing's reach plus one, which a tile's margin holds).
REFINE_REACH = int(4.0 * REFINE_SIGMA + 0.5) + 1


def refine_positions(frame: np.ndarray, centers: np.ndarray, origin: Sequence[int] = (0, 0),
                     sigma: Optional[float] = None, smoothed: Optional[np.ndarray] = None) -> np.ndarray:
    """Sub-pixel positions of bright objects found at integer ``centers``, in one vectorised fit.

    The frame (channels averaged) is smoothed by a Gaussian of :data:`REFINE_SIGMA` pixels (or the
    detection's ``sigma`` where that is wider: on blobs 30 px across found after a 2.75-px smoothing, the
    integer maxima lay 0.67 px from the truth, a fit at 1 px 0.74, at 2.75 px 0.60), and a
    quadratic surface is fitted by least squares to the 3 x 3 pixels around each centre; its
    maximum is the position. A fit that is not a maximum, or whose maximum lies more than a pixel
    away, keeps the centre (moved at most one pixel along each axis). Measured on
    ``synthetic_micrograph`` lattices (spacing 6-12 px, noise 0.05-0.2 of an atom): the mean error
    to the true atoms drops from 0.45-0.97 px (the integer maxima) to 0.06-0.41 px, the median
    nearest-neighbour distance's bias from 3-12 % to 1-4 % (and :func:`neighbour_spacing`'s to 0.3 %).

    Args:
        frame: (H, W) or (C, H, W) image. centers: (N, 2) integer (row, col) pixels inside it.
        origin: (row, col) of ``frame[0, 0]`` in a larger frame (a tile's place), added to the
            centres before their sub-pixel offsets, so a tile gives the whole frame's positions (to float
            rounding: an audit saw one of 1 719 differ by 6e-14 px, the smoothing's sums taken in another
            order). sigma: the detection's smoothing in pixels (None or 0: none).
        smoothed: the (H, W) frame already smoothed as this function would (channels averaged, float32,
            a Gaussian of max(:data:`REFINE_SIGMA`, ``sigma``) pixels), e.g. the detection's; None: smoothed here.

    Returns:
        (N, 2) float64 positions (row, col) in pixels (of the larger frame, with ``origin``); pixel
        (r, c)'s centre is at (r, c).
    """
    from scipy import ndimage

    if np.ndim(frame) not in (2, 3):
        raise AffineVAEError(f"refine_positions expects an (H, W) or (C, H, W) frame, got shape {np.shape(frame)}")
    cf = real_array(centers, "refine_positions: centres", what="(N, 2) integer (row, col) pixels")
    if cf.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if cf.shape == (2,):  # one centre
        cf = cf.reshape(1, 2)
    if cf.ndim != 2 or cf.shape[1] != 2:
        raise AffineVAEError(f"refine_positions: centres must be (N, 2) (row, col) pixels, got shape {cf.shape}")
    h0, w0 = np.shape(frame)[-2:]
    outside = (cf[:, 0] < 0) | (cf[:, 0] > h0 - 1) | (cf[:, 1] < 0) | (cf[:, 1] > w0 - 1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise AffineVAEError(f"refine_positions: {int(outside.sum())} centres outside the {h0}x{w0} frame (first: row "
                             f"{cf[i, 0]:g}, col {cf[i, 1]:g})")
    c = cf.astype(np.int64)
    if smoothed is None:  # float32 (as detection smooths): a tile of a huge frame is not copied to float64
        img = ndimage.gaussian_filter(smoothed_pair(frame)[0], max(REFINE_SIGMA, float(sigma or 0.0)))
    else:
        img = smoothed
    h, w = img.shape
    off = np.arange(-1, 2)
    rows = np.clip(c[:, 0, None, None] + off[None, :, None], 0, h - 1)
    cols = np.clip(c[:, 1, None, None] + off[None, None, :], 0, w - 1)
    values = img[rows, cols].reshape(len(c), 9).astype(np.float64)
    if not np.isfinite(values).all():
        raise AffineVAEError("refine_positions: the frame holds NaN or infinite pixels around a centre")
    y, x = (v.ravel().astype(np.float64) for v in np.meshgrid(off, off, indexing="ij"))
    design = np.stack([np.ones(9), y, x, y * y, x * y, x * x], 1)
    _, b, e, d, g, f = (values @ np.linalg.pinv(design).T).T   # I = a + b y + e x + d y^2 + g x y + f x^2
    det = 4.0 * d * f - g * g
    ok = (d < 0) & (f < 0) & (det > 0)
    safe = np.where(ok, det, 1.0)
    dy = np.where(ok, (g * e - 2.0 * f * b) / safe, 0.0)
    dx = np.where(ok, (g * b - 2.0 * d * e) / safe, 0.0)
    return (c + np.asarray(origin, dtype=np.int64)) + np.clip(np.stack([dy, dx], 1), -1.0, 1.0)


def check_noise_floor(noise_floor) -> float:
    """Return ``noise_floor`` (K >= 0, a finite number of noise standard deviations) or raise one line."""
    if isinstance(noise_floor, bool) or not isinstance(noise_floor, (int, float, np.integer, np.floating)) \
            or not (np.isfinite(noise_floor) and noise_floor >= 0):
        raise AffineVAEError(f"noise_floor must be a finite number >= 0 (noise standard deviations above the "
                             f"frame's median; 0: off), got {noise_floor!r}")
    return float(noise_floor)


def level_step(shape: Sequence[int]) -> int:
    """The step of the pixel subgrid :func:`level_samples` takes for a frame of ``shape`` (..., H, W):
    1 up to about a million pixels, then the smallest step that keeps about that many."""
    if len(shape) < 2:
        raise AffineVAEError(f"level_step: a frame shape (..., H, W) is needed, got {tuple(shape)}")
    h, w = int(shape[-2]), int(shape[-1])
    return max(1, int(np.ceil(np.sqrt(h * w / _LEVEL_SAMPLES))))


def level_samples(raw: np.ndarray, smoothed: np.ndarray, step: int, core: Optional[tuple[slice, slice]] = None,
                  origin: tuple[int, int] = (0, 0), frame_shape: Optional[Sequence[int]] = None) -> tuple[np.ndarray, np.ndarray]:
    """What :func:`noise_level` measures, from one frame or one tile of it.

    Args:
        raw, smoothed: (h, w) the channel-averaged pixels before and after the detection's smoothing.
        step: the subgrid step (:func:`level_step` of the whole frame).
        core: (rows, cols) slices of the part this tile stands for (None: all of it).
        origin: the frame coordinates (row, col) of ``raw[0, 0]``.
        frame_shape: (H, W) of the whole frame (default: ``raw``'s).

    Returns:
        ``(values, details)``: (n,) the smoothed values at the pixels whose frame coordinates are
        both multiples of ``step``, and (m,) the diagonal Haar details ``(a - b - c + d) / 2`` of the raw
        2 x 2 blocks whose top-left frame coordinates are both multiples of ``2 step`` (the block
        inside the frame; a tile must then reach a pixel past its core). A frame cut into tiles
        gives the same samples, in another order, as the whole frame.
    """
    fh, fw = (raw.shape if frame_shape is None else tuple(frame_shape))[-2:]
    rows, cols = core if core is not None else (slice(0, raw.shape[0]), slice(0, raw.shape[1]))
    r0, c0 = origin

    def grid(sl: slice, start: int, every: int, limit: int) -> np.ndarray:
        idx = np.arange(sl.start, sl.stop)
        glob = idx + start
        return idx[(glob % every == 0) & (glob < limit)]

    vr, vc = grid(rows, r0, step, fh), grid(cols, c0, step, fw)
    values = smoothed[np.ix_(vr, vc)].ravel()
    br, bc = grid(rows, r0, 2 * step, fh - 1), grid(cols, c0, 2 * step, fw - 1)
    a, b = raw[np.ix_(br, bc)], raw[np.ix_(br + 1, bc)]
    c, d = raw[np.ix_(br, bc + 1)], raw[np.ix_(br + 1, bc + 1)]
    details = ((a.astype(np.float64) - b - c + d) / 2.0).ravel()
    return values.astype(np.float64), details


#: A frame whose :func:`frame_periodicity` is at least this is a lattice (measured on 512 x 512 crops:
#: ``synthetic_micrograph`` lattices, square, hexagonal and rectangular, atoms 3-8 px apart, noise 0.05-0.3
#: of an atom: 2 300-118 000; the same atoms on a grid jittered by 0.3 spacings: 98-324; sparse spots, particle
#: micrographs and atoms placed at random 3.4-6 px apart: 15-21, the largest of so many speckles).
PERIODIC_RATIO = 50.0
# The side of the central crop frame_periodicity reads at most (pixels).
_PERIODIC_CROP = 512


def frame_periodicity(frame: np.ndarray) -> float:
    """How periodic a frame is: its power spectrum's strongest peak over the median power at that frequency.

    The frame's central crop of at most 512 x 512 pixels (channels averaged), mean removed and
    Hann-tapered, is Fourier transformed; every frequency from 4 cycles per crop to the Nyquist
    frequency is divided by the median power of its ring (the same radius in whole cycles), and the
    largest ratio is returned. A lattice's Bragg peaks stand thousands of times above their ring; a
    frame of objects placed at random has a speckled spectrum whose largest ratio is about
    ``log(M) / log(2)`` for M frequencies (17 at 512 x 512). :data:`PERIODIC_RATIO` separates the two.

    Args:
        frame: (H, W) or (C, H, W) pixels, H and W >= 16.

    Returns:
        The ratio (dimensionless, >= 0); 0 for a constant frame.
    """
    x = np.asarray(frame, dtype=np.float64)
    if x.ndim == 3:
        x = x.mean(0)
    if x.ndim != 2 or min(x.shape) < 16:
        raise AffineVAEError(f"frame_periodicity expects an (H, W) or (C, H, W) frame of at least 16 x 16 pixels, "
                             f"got shape {np.shape(frame)}")
    c = min(_PERIODIC_CROP, *x.shape)
    r0, c0 = (x.shape[0] - c) // 2, (x.shape[1] - c) // 2
    x = x[r0:r0 + c, c0:c0 + c]
    x = (x - x.mean()) * np.outer(np.hanning(c), np.hanning(c))
    power = np.abs(np.fft.rfft2(x)) ** 2
    ring = np.rint(np.hypot(np.fft.fftfreq(c)[:, None] * c, np.fft.rfftfreq(c)[None, :] * c)).astype(np.int64)
    keep = (ring >= 4) & (ring <= c // 2)
    r, p = ring[keep], power[keep]
    order = np.lexsort((p, r))  # by ring, and within each ring by power: each ring's median is its middle
    r, p = r[order], p[order]
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    counts = np.diff(np.r_[starts, len(r)])
    median = np.repeat(0.5 * (p[starts + (counts - 1) // 2] + p[starts + counts // 2]), counts)
    if not (median > 0).any():
        return 0.0
    return float(np.max(np.where(median > 0, p / np.where(median > 0, median, 1.0), 0.0)))


def noise_level(values: np.ndarray, details: np.ndarray, sigma: Optional[float] = None) -> tuple[float, float]:
    """``(median, noise)`` of a frame for :func:`detect_objects`' noise floor, from its
    :func:`level_samples` (concatenated over tiles): the median of the (smoothed) values, and the
    standard deviation of the pixel noise after the smoothing: Donoho's robust estimate
    ``median(|details|) / 0.6745`` of the raw noise (as :func:`~affinevae.data.imageset.noise_sigma`;
    ``mean(|details|) sqrt(pi / 2)`` when most details are exactly 0, as in low-count or coarsely
    quantised frames) times the Gaussian kernel's noise gain (the root of its squared weights: 0.28 at ``sigma`` 1, 0.14
    at 2). ``values`` (M,) and ``details`` (M',) are 1-D samples; ``sigma`` the smoothing in pixels. Both results
    in the frame's pixel units; (0, 0) without samples."""
    if len(values) == 0 or len(details) == 0:
        return 0.0, 0.0
    gain = 1.0
    if sigma:
        from scipy import ndimage

        r = smoothing_radius(sigma)
        delta = np.zeros(2 * r + 1)
        delta[r] = 1.0
        gain = float((ndimage.gaussian_filter1d(delta, float(sigma)) ** 2).sum())  # 2-D: the product of two axes
    spread = np.abs(details)
    sd = float(np.median(spread)) / 0.6745
    if sd == 0.0:  # most details exactly 0 (low counts, quantised data): the mean absolute detail instead
        sd = float(spread.mean()) * math.sqrt(math.pi / 2)
    return float(np.median(values)), sd * gain


def _smoothing(sigma) -> Optional[float]:
    """A Gaussian smoothing ``sigma`` (pixels; None: none) as a float, or one line unless it is a finite number >= 0
    (:func:`~affinevae.data.inputs.as_number`: a 0-d array or tensor too)."""
    value = None if sigma is None else as_number(sigma)
    if sigma is not None and (value is None or not (math.isfinite(value) and value >= 0)):
        raise AffineVAEError(f"sigma must be a finite number >= 0 pixels, got {sigma!r}")
    return value


def smoothing_radius(sigma: Optional[float]) -> int:
    """Pixels a Gaussian smoothing of ``sigma`` (a finite number >= 0 pixels) reaches (scipy's default truncation,
    4 sigma); 0 for none (None or 0)."""
    sigma = _smoothing(sigma)
    return int(4.0 * sigma + 0.5) if sigma else 0


def smoothed_pair(frame: np.ndarray, sigma: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
    """A frame (H, W) or (C, H, W) as :func:`detect_objects` sees it: ``(raw, smoothed)``, both (H, W)
    float32, the channels averaged, the second after the Gaussian smoothing of ``sigma`` pixels (the
    same array when there is none)."""
    from scipy import ndimage

    raw = np.asarray(frame, dtype=np.float32)
    if raw.ndim == 3:
        raw = raw.mean(0)
    return raw, (ndimage.gaussian_filter(raw, float(sigma)) if sigma else raw)


def smoothed_range(frame: np.ndarray, sigma: Optional[float] = None,
                   core: Optional[tuple[slice, slice]] = None) -> tuple[float, float]:
    """(min, max) of a frame (channels averaged) after the Gaussian smoothing :func:`detect_objects` applies.

    ``frame``: (H, W) or (C, H, W); ``sigma``: the smoothing's standard deviation in pixels (None: the
    detection's default). ``core``: (rows, cols) slices of the part to measure, when ``frame`` is a tile read with a
    margin of at least :func:`smoothing_radius` pixels around it (the margin makes the smoothed
    core equal to the whole frame's there).
    """
    if np.ndim(frame) < 2 or np.size(frame) == 0:
        raise AffineVAEError(f"smoothed_range expects a non-empty (H, W) or (C, H, W) frame, got shape {np.shape(frame)}")
    img = smoothed_pair(frame, sigma)[1]
    if core is not None:
        img = img[core]
    return float(img.min()), float(img.max())


# ============================================================================ arrangement
def frame_points(centers: np.ndarray, frames: np.ndarray, reach: float = 0.0) -> tuple[np.ndarray, float]:
    """Objects of several frames as points of one k-d tree: ``(points, span)``, (N, 3) float64 points
    (frame * span, row, col) for ``centers`` (N, 2) pixels and ``frames`` (N,) frame indices (or ranks), with
    ``span`` = 2 * the largest extent of the centres + 2 * ``reach`` + 1 pixels: an object of another frame lies at
    least ``span`` away, farther than any object of the same frame (at most 1.42 extents) and than a query radius
    of ``reach`` pixels."""
    c = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    span = 2.0 * (float(np.ptp(c, axis=0).max()) if len(c) else 0.0) + 2.0 * float(reach) + 1.0
    return np.column_stack([np.asarray(frames, dtype=np.float64).reshape(-1) * span, c]), span


def _frame_neighbours(centers: np.ndarray, frames: Optional[np.ndarray], k: int, where: str,
                      least: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each object's ``k`` nearest neighbours in its own frame, for every frame at once.

    ``centers`` (N, 2) pixels, ``frames`` (N,) frame indices (None: one frame). One k-d tree holds
    every object at (frame * L, row, col), L more than twice any frame's extent, so that an object of
    another frame is always farther than every object of the same frame.

    Args:
        least: keep the objects whose frame holds more than ``least`` objects (default ``k``); where
            a kept frame holds ``k`` or fewer, its missing neighbours read ``inf``.

    Returns:
        ``(points, dist, index)`` for the M objects kept: (M, 2) their centres, (M, k) distances
        in pixels and (M, k) indices into ``points`` (nearest first, the object itself left out).
    """
    from scipy.spatial import cKDTree

    c = real_array(centers, f"{where}: centers", what="(N, 2) (row, col) pixels")
    if c.ndim != 2 or c.shape[1] != 2:
        raise AffineVAEError(f"{where}: centers must be (N, 2) (row, col) pixels, got shape {c.shape}")
    f = np.zeros(len(c), dtype=np.int64) if frames is None else np.asarray(frames).reshape(-1)
    if len(f) != len(c):
        raise AffineVAEError(f"{where}: {len(f)} frame indices for {len(c)} centers")
    _, inverse, counts = np.unique(f, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    keep = counts[inverse] > (k if least is None else least)
    pts = c[keep]
    if not len(pts):
        return pts, np.zeros((0, k)), np.zeros((0, k), dtype=np.int64)
    tree_pts, span = frame_points(pts, inverse[keep])
    dist, index = cKDTree(tree_pts).query(tree_pts, k=min(k + 1, len(pts)))
    dist, index = dist.reshape(len(pts), -1)[:, 1:], index.reshape(len(pts), -1)[:, 1:]
    if dist.shape[1] < k:       # fewer kept objects than k + 1 in all
        dist = np.pad(dist, ((0, 0), (0, k - dist.shape[1])), constant_values=np.inf)
        index = np.pad(index, ((0, 0), (0, k - index.shape[1])), constant_values=len(pts))
    if least is not None and least < k:
        other = dist >= 0.75 * span         # another frame's object (same frame: at most 1.42 extents)
        dist[other], index[other] = np.inf, len(pts)
    return pts, dist, index


#: Neighbours within this factor of the median nearest-neighbour distance are the first shell that
#: :func:`neighbour_spacing` takes the median of.
SHELL_FACTOR = 1.25
# Neighbours per object that the shell is looked for among (a hexagonal lattice's six).
_SHELL_NEIGHBOURS = 6


def neighbour_spacing(centers: np.ndarray, frames: Optional[np.ndarray] = None) -> Optional[float]:
    """The objects' spacing: the median distance in pixels to the neighbours of their first shell.

    The first shell of an object is its neighbours (of the 6 nearest, in the same frame) closer
    than :data:`SHELL_FACTOR` times the median nearest-neighbour distance. The nearest neighbour
    alone reads short wherever positions are noisy (the least of several noisy distances: 3-12 %
    short on noisy ``synthetic_micrograph`` lattices even at sub-pixel positions), the shell's median
    does not (within 0.3 % at :func:`refine_positions`' positions, 0.3-3 % at integer ones). Frames of
    at most 6 objects give the nearest-neighbour median. A rectangular lattice's spacing is its
    short side where the long one is more than 1.25 times it.

    Args:
        centers: (N, 2) object positions (row, col) in pixels.
        frames: (N,) frame index of each object (None: one frame).

    Returns:
        The spacing; None when no object has a neighbour.
    """
    # One query: every object with a neighbour, its 6 nearest (inf where its frame has fewer).
    dist = _frame_neighbours(centers, frames, _SHELL_NEIGHBOURS, "neighbour_spacing", least=1)[1]
    if not len(dist):
        return None
    nearest = float(np.median(dist[:, 0]))
    full = np.isfinite(dist[:, -1])     # objects whose frame holds more than 6 (as the shell asks)
    shell = dist[full][dist[full] < SHELL_FACTOR * nearest]
    return float(np.median(shell)) if len(shell) else nearest


#: (n, k): the bond-orientational orders :func:`neighbour_order` measures, n-fold over each object's k
#: nearest neighbours (square and rectangular lattices: 4 over 4; hexagonal: 6 over 6).
BOND_ORDERS = ((4, 4), (6, 6))
# E|mean of k independent unit phasors|: what objects placed at random give (Monte Carlo, 10^6 draws).
_RANDOM_ORDER = {4: 0.4495, 6: 0.3656}


def neighbour_order(centers: np.ndarray, frames: Optional[np.ndarray] = None) -> Optional[float]:
    """How lattice-like the objects' arrangement is: the bond-orientational order above chance.

    For each object, the directions theta_j to its k nearest neighbours in the same frame give
    ``|mean_j exp(i n theta_j)|`` (1 when the bonds lie n-fold, as in a lattice); its mean over the
    objects, less what objects placed at random give, for each (n, k) of :data:`BOND_ORDERS`, and the
    larger of the two. Measured (``synthetic_micrograph``, spacing 6 and 8 px, the default detection and
    its sub-pixel positions, :func:`refine_positions`): lattices 0.40-0.56 under noise up to 0.15 of an
    atom (0.35-0.51 at the integer maxima), under heavy noise (0.3) with 10-20 % vacancies (noise peaks among
    the atoms) 0.07-0.28 (0.03-0.19 at the integer maxima); scattered objects about 0 (a Poisson scatter -0.01, particles kept 34 px apart -0.01, an audit's galaxy field -0.01).

    Args:
        centers: (N, 2) object positions (row, col) in pixels.
        frames: (N,) frame index of each object (None: one frame).

    Returns:
        The order (at most 1 minus chance), or None when no frame holds more than 4 objects.
    """
    orders = bond_orders(centers, frames, "neighbour_order")
    return max(orders.values()) if orders else None


def neighbour_fold(centers: np.ndarray, frames: Optional[np.ndarray] = None) -> Optional[int]:
    """The n of the n-fold bonds of the objects' arrangement: the n of :data:`BOND_ORDERS` whose order
    above chance is the largest (4: a square or rectangular lattice, 6: a hexagonal one). ``centers``
    (N, 2) pixels, ``frames`` (N,) frame indices. None when no frame holds more than 4 objects."""
    orders = bond_orders(centers, frames, "neighbour_fold")
    return max(orders, key=orders.get) if orders else None


def bond_orders(centers: np.ndarray, frames: Optional[np.ndarray] = None, where: str = "bond_orders") -> dict[int, float]:
    """``{n: order above chance}`` for each (n, k) of :data:`BOND_ORDERS` that some frame has more than k
    objects for: the mean over the objects of ``|mean_j exp(i n theta_j)|`` over the directions theta_j to
    their k nearest neighbours in the same frame, less its value for objects placed at random.
    ``centers`` (N, 2) pixels, ``frames`` (N,); ``where`` starts error messages."""
    out = {}
    for n, k in BOND_ORDERS:
        pts, _, j = _frame_neighbours(centers, frames, k, where)
        if len(pts):
            bond = pts[j] - pts[:, None]  # (m, k, 2) to the k nearest neighbours
            out[n] = float(np.abs(np.exp(1j * n * np.arctan2(bond[..., 0], bond[..., 1])).mean(1)).mean()) \
                - _RANDOM_ORDER[n]
    return out


def object_arrangement(centers: np.ndarray, frames: Optional[np.ndarray] = None) -> dict[str, float]:
    """How objects at ``centers`` (N, 2) pixels in ``frames`` (N,) lie: ``spacing``
    (:func:`neighbour_spacing`, pixels), ``lattice_order`` (:func:`neighbour_order`) and ``lattice_fold``
    (:func:`neighbour_fold`, 4 or 6, as a float); when either of the first two is
    undefined (no frame of more than 4 objects: no lattice, e.g. one particle or cell per frame)
    ``objects_per_frame`` instead, the most objects in one frame; empty without objects."""
    spacing, orders = neighbour_spacing(centers, frames), bond_orders(centers, frames, "object_arrangement")
    if spacing is not None and orders:
        return {"spacing": spacing, "lattice_order": max(orders.values()),
                "lattice_fold": float(max(orders, key=orders.get))}
    if not len(centers):
        return {}
    f = np.zeros(len(centers), dtype=np.int64) if frames is None else np.asarray(frames).reshape(-1)
    return {"objects_per_frame": float(np.unique(f, return_counts=True)[1].max())}


# ============================================================================ coordinates
def _is_number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_coordinates(path: Union[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """Read object coordinates from a CSV/text file or an ``.npy`` array.

    Accepted: 2 columns ``row,col`` (all in frame 0) or 3 columns ``frame,row,col``, in pixels;
    one header line is allowed (a header naming ``row``, ``col`` and optionally ``frame`` in any
    order is honoured; ``y``/``x`` are read as ``row``/``col``). ``.npy``: (N, 2) or (N, 3) in the
    same column order, never unpickled.

    Returns:
        ``(frames, centers)``: (N,) int64 frame indices and (N, 2) float64 (row, col) pixels.

    Raises:
        AffineVAEError: a missing file, wrong column count, non-numeric values, NaN, non-integer
            or negative frame indices.
    """
    p = Path(path)
    if not p.is_file():
        raise AffineVAEError(f"{p}: coordinate file not found")
    if p.suffix.lower() == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise AffineVAEError(f"{p}: cannot read coordinates ({str(exc).splitlines()[0]})") from None
        if arr.ndim != 2 or arr.shape[1] not in (2, 3):
            raise AffineVAEError(f"{p}: coordinates must be (N, 2) row,col or (N, 3) frame,row,col, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.number):
            raise AffineVAEError(f"{p}: coordinates must be numeric, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
        order = [0, 1, 2][: arr.shape[1]]
    else:
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            raise AffineVAEError(f"{p}: not a text CSV file") from None
        numbered = [(i + 1, ln) for i, ln in enumerate(text.splitlines())
                    if ln.strip() and not ln.lstrip().startswith("#")]
        if not numbered:
            raise AffineVAEError(f"{p}: no coordinates")
        line_no, lines = [i for i, _ in numbered], [ln for _, ln in numbered]
        dialect_delim = "," if "," in lines[0] else None
        rows = list(csv.reader(lines, delimiter=dialect_delim)) if dialect_delim else [ln.split() for ln in lines]
        header = None
        try:
            [float(c) for c in rows[0]]
        except ValueError:
            header, rows, line_no = [c.strip().lower() for c in rows[0]], rows[1:], line_no[1:]
        widths = {len(r) for r in rows}
        ncol = len(header) if header is not None else (widths.pop() if len(widths) == 1 else len(rows[0]))
        wrong = next((i for i, r in enumerate(rows) if len(r) != ncol), None)
        if ncol not in (2, 3) or wrong is not None:
            at = f"line {line_no[wrong]}: " if wrong is not None else (f"line {line_no[0]}: " if rows else "")
            got = len(rows[wrong]) if wrong is not None else ncol
            raise AffineVAEError(f"{p}: {at}{got} columns; coordinates need 2 (row,col) or 3 (frame,row,col)")
        order = list(range(ncol))
        if header is not None:
            alias = {"y": "row", "x": "col", "column": "col", "r": "row", "c": "col", "f": "frame", "t": "frame"}
            names = [alias.get(h, h) for h in header]
            want = ["row", "col"] if ncol == 2 else ["frame", "row", "col"]
            if sorted(names) == sorted(want):
                order = [names.index(n) for n in want]
            elif any(n in ("row", "col", "frame") for n in names):
                raise AffineVAEError(f"{p}: header {','.join(header)} must name the columns "
                                     f"{','.join(want)}")
        try:  # every row at once (numpy reads the numbers' text, spaces around them included)
            arr = np.array(rows, dtype=np.float64).reshape(len(rows), ncol)
        except ValueError:  # then name the first line that is not numbers
            n, bad = next((n, c) for n, r in zip(line_no, rows) for c in r if not _is_number_text(c))
            raise AffineVAEError(f"{p}: line {n}: {bad.strip()!r} is not a number") from None
    arr = arr[:, order]
    if len(arr) == 0:
        raise AffineVAEError(f"{p}: no coordinates")
    if not np.all(np.isfinite(arr)):
        raise AffineVAEError(f"{p}: {int((~np.isfinite(arr)).any(1).sum())} coordinates are NaN or infinite")
    if arr.shape[1] == 3:
        fr = arr[:, 0]
        if np.any(fr != np.round(fr)) or np.any(fr < 0):
            raise AffineVAEError(f"{p}: frame indices (first column) must be integers >= 0")
        return fr.astype(np.int64), arr[:, 1:].copy()
    return np.zeros(len(arr), dtype=np.int64), arr.copy()


def check_coordinates(frames: np.ndarray, centers: np.ndarray, n_frames: int, image_shape: Sequence[int],
                      where: str = "coordinates") -> np.ndarray:
    """Validate coordinates against a stack and round them to pixel centres.

    Args:
        frames: (N,) int frame indices; centers: (N, 2) (row, col) pixels (float).
        n_frames: F of the stack; image_shape: (H, W).

    Returns:
        (N, 2) int64 rounded centres.

    Raises:
        AffineVAEError: centres that are not (N, 2) finite numbers, frame indices that are not N whole numbers,
            a frame index outside 0..F-1, or a centre outside the image.
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    cf = real_array(centers, f"{where}: centres", what="(N, 2) (row, col) pixels")
    if cf.ndim != 2 or cf.shape[1] != 2:
        raise AffineVAEError(f"{where}: centres must be (N, 2) (row, col) pixels, got shape {cf.shape}")
    ff = real_array(frames, f"{where}: frame indices", what="whole numbers")
    ff = ff.reshape(-1) if ff.size == len(cf) else ff  # (N,), (N, 1) or one frame for one centre
    if ff.ndim != 1 or len(ff) != len(cf):
        raise AffineVAEError(f"{where}: {len(ff)} frame indices for {len(cf)} centres")
    if (ff != np.rint(ff)).any():
        raise AffineVAEError(f"{where}: frame indices must be whole numbers, got {ff[ff != np.rint(ff)][0]:g}")
    c = np.rint(cf).astype(np.int64)
    fr = ff.astype(np.int64)
    badf = (fr < 0) | (fr >= n_frames)
    if badf.any():
        raise AffineVAEError(f"{where}: {int(badf.sum())} frame indices outside 0..{n_frames - 1} "
                             f"(first: {int(fr[badf][0])})")
    bad = (c[:, 0] < 0) | (c[:, 0] >= h) | (c[:, 1] < 0) | (c[:, 1] >= w)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AffineVAEError(f"{where}: {int(bad.sum())} coordinates outside the {h}x{w} image "
                             f"(first: row {centers[i][0]:g}, col {centers[i][1]:g})")
    return c
