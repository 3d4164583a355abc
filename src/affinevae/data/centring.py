"""Where objects sit in their images, and moving them to the centre: the brightness centre of a stack's
mean (:func:`mean_offset`), each object's own (:func:`mass_offsets`), and the moves (:func:`shift_images`,
whole pixels, what leaves one side coming back on the other; :func:`roll_each`, each image by its own).

Turns are about the image centre ((H - 1) / 2, (W - 1) / 2), so objects that sit off it read as upright to the
orientation rules and a model over the full circle finds angles that are not theirs (particles 5 px off in
40-px crops: angle concentration 0.07; moved back by the mean's offset in whole pixels: 0.99,
benchmarks/EXPERIMENTS.md "Off-centre stacks"). ``train --centre`` and :meth:`ImageSet.centred
<affinevae.data.imageset.ImageSet.centred>` use it; :mod:`.patches` cuts objects around their brightness centres
with :func:`mass_offsets`.

A leaf of :mod:`affinevae.data`: numpy and scipy only, so that :mod:`.imageset` and :mod:`.patches` both use it.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from ..errors import AffineVAEError

__all__ = ["CENTRE_MODES", "MASS_CENTRE_REACH", "MASS_NOISE_CUT", "brightness_centre", "mean_offset", "mean_shift", "whole_pixel_move",
           "shift_images", "roll_each", "mass_offsets", "centre_images", "central_crop", "offset_words"]

#: How :func:`centre_images` moves a stack's objects to the image centre: 'mean' moves every image by the same
#: whole pixels (:func:`mean_shift`, the stack's mean onto the centre), 'mass' each image onto its own object's
#: brightness centre (:func:`mass_offsets`, in whole pixels). ``train --centre`` adds 'auto' (mean where the objects sit off the
#: centre, :func:`affinevae.defaults.centring_default`) and 'none'.
CENTRE_MODES = ("mean", "mass")

#: :func:`mass_offsets` finds each object's brightness centre within this share of the window's width
#: (a disc of radius 3/8 of it): a 40-px window reaches a particle's centre 15 px from the lobe it was cut
#: around, and a lattice's window of two spacings stays clear of its neighbours (it is not used there).
MASS_CENTRE_REACH = 0.75

#: :func:`mass_offsets` weighs only the brightness this many noise sigma above each patch's median (its noise read
#: from the lower half of its smoothed values), so that a patch of noise (a noise peak found on an empty field)
#: stays where it was cut rather than wandering to the centroid of its noise.
MASS_NOISE_CUT = 2.0


def brightness_centre(mean: np.ndarray) -> Optional[tuple[float, float]]:
    """(row, column) pixels of the (H, W) image ``mean``'s brightness centre, its pixels weighted by their
    distance from the border's median; None for an image without contrast."""
    mean = np.asarray(mean)
    h, w = mean.shape
    border = np.concatenate([mean[0], mean[-1], mean[:, 0], mean[:, -1]])
    weight = np.abs(mean - np.median(border)).astype(np.float64)
    total = weight.sum()
    if not np.isfinite(total) or total <= 0:
        return None
    rows, cols = np.mgrid[0:h, 0:w]
    return float((weight * rows).sum() / total), float((weight * cols).sum() / total)


def mean_offset(x) -> Optional[tuple[float, float]]:
    """How far the objects of the images ``x`` ((N, C, H, W) or (N, H, W), array or tensor) sit from the
    image centre on average: the (down, right) pixels from the centre ((H - 1) / 2, (W - 1) / 2) to the
    brightness centre (:func:`brightness_centre`) of their mean (channels averaged); None for a mean
    without contrast."""
    arr = x.detach().cpu().float().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float32)
    mean = np.nanmean(arr, 0, dtype=np.float64) if np.isnan(arr).any() else arr.mean(0, dtype=np.float64)
    mean = mean.mean(0) if mean.ndim == 3 else mean
    centre = brightness_centre(mean)
    if centre is None or not all(np.isfinite(centre)):
        return None
    h, w = mean.shape
    return centre[0] - (h - 1) / 2, centre[1] - (w - 1) / 2


def mean_shift(x) -> tuple[int, int]:
    """The whole-pixel (down, right) move that brings the mean of the images ``x`` ((N, C, H, W) or (N, H, W))
    onto the image centre: minus :func:`mean_offset`, rounded; (0, 0) for a mean without contrast. Whole pixels
    keep the pixels' values and noise (a bilinear move by a fraction averages neighbours: measured, it cost the
    particles of benchmarks/EXPERIMENTS.md "Off-centre stacks" 0.99 -> 0.70 in angle concentration)."""
    offset = mean_offset(x)
    return (0, 0) if offset is None else whole_pixel_move(offset)


def whole_pixel_move(offset: Sequence[float]) -> tuple[int, int]:
    """The whole-pixel (down, right) move that cancels a (down, right) ``offset`` in pixels: minus it, rounded."""
    return -int(round(offset[0])), -int(round(offset[1]))


def shift_images(images: np.ndarray, down: int, right: int) -> np.ndarray:
    """``images`` (..., H, W) moved ``down`` and ``right`` whole pixels (negative: up, left), the pixels moved out
    on one side coming back on the other (``numpy.roll``): for objects moved to the centre those are the
    background of the side they moved away from, so no object is copied and the noise keeps its statistics
    (mirroring the near edge copied the objects' own edge into every image, and the stack's mean then read
    as an upright: isotropy 3.1-5.0 against 0.3-1.6 rolled, tests/test_centring.py's lobed objects). Same
    shape and dtype. One :class:`AffineVAEError` line for a move of the whole side or more."""
    images = np.asarray(images)
    h, w = images.shape[-2:]
    down, right = int(down), int(right)
    if abs(down) >= h or abs(right) >= w:
        raise AffineVAEError(f"a shift of ({down}, {right}) px does not fit images of {h} x {w} pixels")
    if down == 0 and right == 0:
        return images
    return np.ascontiguousarray(np.roll(images, (down, right), axis=(-2, -1)))


def roll_each(images: np.ndarray, moves: np.ndarray) -> np.ndarray:
    """Each of ``images`` (N, C, H, W) moved by its own row of ``moves`` (N, 2) whole (down, right) pixels, what
    leaves one side coming back on the other (:func:`shift_images` per image, in one vectorised gather); same
    shape and dtype."""
    images = np.asarray(images)
    n, _, h, w = images.shape
    moves = np.asarray(moves, dtype=np.int64).reshape(n, 2)
    rows = (np.arange(h)[None, :] - moves[:, :1]) % h  # (N, H): the source row of each output row
    cols = (np.arange(w)[None, :] - moves[:, 1:]) % w
    out = np.take_along_axis(images, rows[:, None, :, None], axis=2)
    return np.ascontiguousarray(np.take_along_axis(out, cols[:, None, None, :], axis=3))


def mass_offsets(patches: np.ndarray, iterations: int = 5) -> Optional[np.ndarray]:
    """Where each object's brightness centre lies, (N, 2) (row, col) pixels from the window's centre pixel
    ``w // 2``, by mean shift: the centroid of each patch's lightly smoothed brightness above its median plus
    :data:`MASS_NOISE_CUT` noise sigma,
    within a disc of radius ``MASS_CENTRE_REACH / 2`` times the window around the current centre,
    ``iterations`` times. None for patches of another shape than (N, w, w) / (N, C, w, w), w >= 7
    (channels summed). NaN pixels (past a frame's border) weigh nothing and are left out of the smoothing and
    the noise estimate. Objects cut around one of their lobes (the brightest point of a dumbbell or a trimer
    under a small detection smoothing: 9 px off their centre in 40-px windows) are found at their centre;
    not for dense lattices, whose neighbours pull the centroid."""
    from scipy import ndimage

    p = np.asarray(patches, dtype=np.float64)
    p = p[:, None] if p.ndim == 3 else p
    if p.ndim != 4 or min(p.shape[-2:]) < 7:
        return None
    n, ch, h, w = p.shape
    if n == 0:
        return np.zeros((0, 2), dtype=np.float64)
    finite = np.isfinite(p).all(1)  # (n, h, w)
    if finite.all():
        q = ndimage.gaussian_filter(p.sum(1), (0, 1.5, 1.5)).reshape(n, -1)
        low, mid = np.percentile(q, [15.87, 50.0], axis=1)  # the background's level and (its lower side) noise
    else:  # normalised smoothing of the pixels there are; the rest left out
        num = ndimage.gaussian_filter(np.where(finite, p.sum(1), 0.0), (0, 1.5, 1.5))
        den = ndimage.gaussian_filter(finite.astype(np.float64), (0, 1.5, 1.5))
        q = np.where(finite, num / np.maximum(den, 1e-12), np.nan).reshape(n, -1)
        low, mid = np.nanpercentile(q, [15.87, 50.0], axis=1)
        q = np.nan_to_num(q, nan=-np.inf)
    q = np.clip(q - (mid + MASS_NOISE_CUT * (mid - low))[:, None], 0.0, None).reshape(n, h, w)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    cy, cx = np.full(n, float(h // 2)), np.full(n, float(w // 2))
    reach2 = (MASS_CENTRE_REACH * min(h, w) / 2) ** 2
    for _ in range(iterations):
        inside = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2 <= reach2
        weight = q * inside
        total = weight.sum((1, 2))
        ok = total > 0
        cy = np.where(ok, (weight * yy).sum((1, 2)) / np.maximum(total, 1e-300), cy)
        cx = np.where(ok, (weight * xx).sum((1, 2)) / np.maximum(total, 1e-300), cx)
    return np.stack([cy - h // 2, cx - w // 2], 1)


def centre_images(images: np.ndarray, mode: Union[str, Sequence[int]], where: str = "images") -> np.ndarray:
    """``images`` (N, C, H, W) with their objects moved to the image centre, same shape and dtype: ``mode``
    'mean' by :func:`mean_shift` of these images (one whole-pixel move for all), a (down, right) pair of whole
    pixels (a move measured before, e.g. on a run's training images), or 'mass' each image onto its own
    object's brightness centre (:func:`mass_offsets`, rounded to whole pixels: :func:`roll_each`; images of at least
    7 x 7 pixels). Whole pixels keep the values (binary images stay binary) and the noise. One
    :class:`AffineVAEError` line, naming ``where``, for another mode or 1-D signals (H == 1)."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise AffineVAEError(f"{where}: centring takes (N, C, H, W) images, got shape {images.shape}")
    h, w = images.shape[-2:]
    if h == 1:
        raise AffineVAEError(f"{where}: --centre applies to images, not to 1-D signals")
    if isinstance(mode, str):
        if mode not in CENTRE_MODES:
            raise AffineVAEError(f"{where}: centre must be one of {', '.join(CENTRE_MODES)} or a (down, right) shift "
                                 f"in whole pixels, got {mode!r}")
        if mode == "mass":
            if min(h, w) < 7:
                raise AffineVAEError(f"{where}: --centre mass needs images of at least 7 x 7 pixels, got {h} x {w}")
            offsets = mass_offsets(images)  # from pixel (h // 2, w // 2); the turn centre is ((h - 1) / 2, (w - 1) / 2)
            centre = np.array([h // 2 - (h - 1) / 2, w // 2 - (w - 1) / 2])
            return roll_each(images, -np.round(offsets + centre).astype(np.int64))
        mode = mean_shift(images)
    try:
        down, right = (int(v) for v in mode)
        ok = all(float(v) == int(v) and not isinstance(v, bool) for v in mode)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise AffineVAEError(f"{where}: a centring shift must be two whole pixels (down, right), got {mode!r}")
    return shift_images(images, down, right)


def central_crop(image_shape: Sequence[int], side: int, frame: int = 0) -> tuple[slice, slice, str]:
    """The central part of at most ``side`` x ``side`` pixels of a frame of ``image_shape`` (H, W) that the
    checks read: ``(rows, cols, region)``, ``region`` naming it in words ('frame 0', or its central crop)."""
    h, w = int(image_shape[-2]), int(image_shape[-1])
    ch, cw = min(h, side), min(w, side)
    r0, c0 = (h - ch) // 2, (w - cw) // 2
    region = f"frame {frame}" if (ch, cw) == (h, w) else f"the central {ch} x {cw} pixels of frame {frame}"
    return slice(r0, r0 + ch), slice(c0, c0 + cw), region


def offset_words(down: float, right: float) -> str:
    """'4.2 px down, 3.2 px right' for a (down, right) offset in pixels (parts under 0.05 px left out; whole
    pixels given as ints read '4 px')."""
    parts = [f"{abs(v) if isinstance(v, (int, np.integer)) else f'{abs(v):.1f}'} px {pos if v > 0 else neg}"
             for v, pos, neg in ((down, "down", "up"), (right, "right", "left")) if abs(v) >= 0.05]
    return ", ".join(parts) or "0 px"
