"""Where the objects are: bright local maxima found in a frame, or coordinates read from a file.

Centres are (row, col) in pixels, integer pixel indices once checked against a stack
(:func:`check_coordinates`); frame indices are global (0 = the stack's first frame).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import AffineVAEError
from .inputs import check_int

__all__ = ["DETECT_THRESHOLD", "detect_objects", "smoothing_radius", "smoothed_range", "read_coordinates", "check_coordinates"]


#: Default detection threshold: a fraction of the way from a (smoothed) frame's minimum to its
#: maximum (``detect_objects``, ``iter_patches``, ``patches --threshold``, the napari pipeline).
DETECT_THRESHOLD = 0.3


def detect_objects(frame: np.ndarray, min_distance: int = 5, threshold: float = DETECT_THRESHOLD,
                   absolute: bool = False, sigma: Optional[float] = None, value_range: Optional[tuple[float, float]] = None) -> np.ndarray:
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
            when the background is 0).
        absolute: interpret ``threshold`` as a pixel value.
        sigma: standard deviation (pixels) of a Gaussian smoothing applied first; None or 0 for none.
        value_range: ``(lo, hi)`` the relative threshold is measured in, instead of this frame's
            (smoothed) minimum and maximum: for a tile of a larger frame, the whole frame's range
            (:func:`smoothed_range`), so tiles find what the whole frame would.

    Returns:
        (N, 2) int64 centres (row, col) in pixels, sorted by row then column. Flat-topped maxima
        (plateaus) give one centre each.
    """
    from scipy import ndimage

    md = check_int("min_distance", min_distance, 1)
    if not np.isfinite(threshold):
        raise AffineVAEError(f"threshold must be a finite number, got {threshold!r}")
    if not absolute and not 0 <= threshold <= 1:
        raise AffineVAEError(f"threshold must lie in 0..1 (a fraction of the way from the frame's minimum to its "
                             f"maximum), got {threshold!r}; absolute=True reads it as a pixel value")
    if sigma is not None and not sigma >= 0:
        raise AffineVAEError(f"sigma must be >= 0 pixels, got {sigma!r}")
    img = np.asarray(frame, dtype=np.float32)
    if img.ndim == 3:
        img = img.mean(0)
    if img.ndim != 2:
        raise AffineVAEError(f"detect_objects expects an (H, W) or (C, H, W) frame, got shape {img.shape}")
    if sigma:
        img = ndimage.gaussian_filter(img, float(sigma))
    lo, hi = (float(img.min()), float(img.max())) if value_range is None else map(float, value_range)
    thr = float(threshold) if absolute else lo + float(threshold) * (hi - lo)
    peak = (img == ndimage.maximum_filter(img, size=2 * md + 1, mode="nearest")) & (img > thr)
    if hi <= lo:
        peak[:] = False
    labels, n = ndimage.label(peak)
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if n == int(peak.sum()):  # no plateaus: every peak pixel is its own object
        return np.argwhere(peak).astype(np.int64)
    # one centre per plateau: its centre of mass, rounded to a pixel
    com = np.rint(np.asarray(ndimage.center_of_mass(peak, labels, np.arange(1, n + 1)))).astype(np.int64)
    return com[np.lexsort((com[:, 1], com[:, 0]))]


def smoothing_radius(sigma: Optional[float]) -> int:
    """Pixels a Gaussian smoothing of ``sigma`` reaches (scipy's default truncation, 4 sigma); 0 for none."""
    return int(4.0 * float(sigma) + 0.5) if sigma else 0


def smoothed_range(frame: np.ndarray, sigma: Optional[float] = None,
                   core: Optional[tuple[slice, slice]] = None) -> tuple[float, float]:
    """(min, max) of a frame (channels averaged) after the Gaussian smoothing :func:`detect_objects` applies.

    ``core``: (rows, cols) slices of the part to measure, when ``frame`` is a tile read with a
    margin of at least :func:`smoothing_radius` pixels around it (the margin makes the smoothed
    core equal to the whole frame's there).
    """
    from scipy import ndimage

    img = np.asarray(frame, dtype=np.float32)
    if img.ndim == 3:
        img = img.mean(0)
    if sigma:
        img = ndimage.gaussian_filter(img, float(sigma))
    if core is not None:
        img = img[core]
    return float(img.min()), float(img.max())


# ============================================================================ coordinates
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
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if not lines:
            raise AffineVAEError(f"{p}: no coordinates")
        dialect_delim = "," if "," in lines[0] else None
        rows = [next(csv.reader([ln], delimiter=dialect_delim)) if dialect_delim else ln.split() for ln in lines]
        rows = [[c.strip() for c in r] for r in rows]
        header = None
        try:
            [float(c) for c in rows[0]]
        except ValueError:
            header, rows = [c.lower() for c in rows[0]], rows[1:]
        widths = {len(r) for r in rows}
        ncol = len(header) if header is not None else (widths.pop() if len(widths) == 1 else -1)
        if ncol not in (2, 3) or any(len(r) != ncol for r in rows):
            got = sorted({len(r) for r in rows} | ({len(header)} if header else set()))
            raise AffineVAEError(f"{p}: coordinates need 2 columns (row,col) or 3 (frame,row,col), got "
                                 f"{'/'.join(map(str, got))} columns")
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
        try:
            arr = np.array([[float(c) for c in r] for r in rows], dtype=np.float64).reshape(len(rows), ncol)
        except ValueError as exc:
            raise AffineVAEError(f"{p}: non-numeric coordinate ({exc})") from None
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
        AffineVAEError: a frame index >= F, or a centre outside the image.
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    c = np.rint(np.asarray(centers, dtype=np.float64)).astype(np.int64)
    fr = np.asarray(frames, dtype=np.int64)
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
