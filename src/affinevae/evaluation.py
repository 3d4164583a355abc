"""Evaluation metrics: circular correlation of angles, mean ELBO, PSNR.

:func:`encode_dataset` lives in :mod:`affinevae.encoding` and is re-exported here for
compatibility (``affinevae.evaluation.encode_dataset`` keeps working).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .config import check_symmetry
from .data.imageset import ImageSet
from .data.inputs import as_number, real_array
from .encoding import encode_dataset
from .errors import AffineVAEError

__all__ = ["circular_correlation", "class_offset_concentration", "encode_dataset", "mean_elbo", "mirror_note",
           "symmetry_note", "labelled_concentration",
           "offset_concentration",
           "psnr"]


def circular_correlation(a, b, symmetry: int = 1) -> float:
    """Circular correlation coefficient (Jammalamadaka & SenGupta) of two angle arrays (N,) in radians.

    1 means the angles move together, -1 opposite, ~0 unrelated. ``symmetry``: k for objects with
    k-fold rotational symmetry: the correlation of ``k a`` and ``k b`` (angles known modulo 2 pi / k).
    """
    k = check_symmetry(symmetry)
    a = k * real_array(a, "circular_correlation: angles", what="angles in radians").ravel()
    b = k * real_array(b, "circular_correlation: angles", what="angles in radians").ravel()
    if a.shape != b.shape or a.size < 2:
        raise AffineVAEError(f"circular_correlation needs two equal-length angle arrays, got {a.shape} and {b.shape}")
    ma = np.angle(np.mean(np.exp(1j * a)))
    mb = np.angle(np.mean(np.exp(1j * b)))
    sa, sb = np.sin(a - ma), np.sin(b - mb)
    den = np.sqrt((sa**2).sum() * (sb**2).sum())
    return float((sa * sb).sum() / den) if den > 0 else 0.0


def offset_concentration(a, b, symmetry: int = 1) -> float:
    """``|mean(exp(i k (a - b)))|`` of two angle arrays (N,) in radians, k = ``symmetry``: 1 when
    ``a = b + c`` for one constant offset c (up to multiples of 2 pi / k: objects with k-fold
    rotational symmetry look the same turned by them), about 0 when unrelated. Unlike
    :func:`circular_correlation`, it stays meaningful for angles spread uniformly over the full
    circle (whose mean direction is undefined)."""
    k = check_symmetry(symmetry)
    a = real_array(a, "offset_concentration: angles", what="angles in radians").ravel()
    b = real_array(b, "offset_concentration: angles", what="angles in radians").ravel()
    if a.shape != b.shape or a.size < 1:
        raise AffineVAEError(f"offset_concentration needs two equal-length angle arrays, got {a.shape} and {b.shape}")
    return float(np.abs(np.mean(np.exp(1j * k * (a - b)))))


#: How much better the learned angles must fit the true ones mirrored (learned + true) than as given
#: (learned - true) for :func:`mirror_note` to say so.
MIRROR_MARGIN = 0.3


def labelled_concentration(a: np.ndarray, b: np.ndarray, labels=None, symmetry: int = 1) -> float:
    """:func:`class_offset_concentration` of angles ``a`` and ``b`` (N,) radians with ``labels`` (N,) where
    some class has two images, else the pooled :func:`offset_concentration` (the notes' score)."""
    if labels is not None:
        value = class_offset_concentration(a, b, labels, symmetry)
        if not np.isnan(value):
            return value
    return offset_concentration(a, b, symmetry)


def mirror_note(learned, true, labels=None, symmetry: int = 1) -> Optional[str]:
    """A sentence when learned angles (N,) radians follow the true ones (N,) radians mirrored: the offset
    concentration (per class with ``labels``) of learned + true beats that of learned - true by
    :data:`MIRROR_MARGIN` and exceeds 0.5: the true angles then turn clockwise on screen, where
    affinevae's (and rotated-mnist's) turn counter-clockwise. None otherwise."""
    learned = real_array(learned, "mirror_note: angles", what="angles in radians").ravel()
    true = real_array(true, "mirror_note: angles", what="angles in radians").ravel()
    given, mirrored = (labelled_concentration(learned, b, labels, symmetry) for b in (true, -true))
    if mirrored > 0.5 and mirrored > given + MIRROR_MARGIN:
        return (f"the learned angles follow the true ones mirrored (concentration of learned + true {mirrored:.2f}, "
                f"of learned - true {given:.2f}): do the true angles turn clockwise on screen? affinevae's turn "
                "counter-clockwise (negate them)")
    return None


#: The rotational symmetries :func:`symmetry_note` tries: those of rods and galaxies, triangles, squares, hexagons.
NOTED_SYMMETRIES = (2, 3, 4, 6)


def symmetry_note(learned, true, labels=None, symmetry: int = 1) -> Optional[str]:
    """A sentence when learned angles (N,) radians agree with the true ones (N,) radians only modulo a
    k-fold symmetry that was not given: with ``symmetry`` 1, the offset concentration (per class with
    ``labels``) counted modulo 2 pi / k, for k in :data:`NOTED_SYMMETRIES`, beats the full turn's by
    :data:`MIRROR_MARGIN` and exceeds 0.5 (the smallest such k is named: objects that look the same
    turned by 360 / k degrees have angles known modulo that). None otherwise, or with ``symmetry`` > 1."""
    if symmetry != 1:
        return None
    learned = real_array(learned, "symmetry_note: angles", what="angles in radians").ravel()
    true = real_array(true, "symmetry_note: angles", what="angles in radians").ravel()
    whole = labelled_concentration(learned, true, labels)
    for k in NOTED_SYMMETRIES:
        folded = labelled_concentration(learned, true, labels, k)
        if folded > 0.5 and folded > whole + MIRROR_MARGIN:
            return (f"the learned angles agree with the true ones modulo {360 / k:g} degrees (concentration {folded:.2f} "
                    f"so, {whole:.2f} over the full turn): if the objects look the same turned by {360 / k:g} degrees, "
                    f"give --symmetry {k} (symmetry={k})")
    return None


def class_offset_concentration(a, b, labels, symmetry: int = 1) -> float:
    """The mean over the classes of ``labels`` (N,) of :func:`offset_concentration` of angles ``a``
    and ``b`` (N,) radians within each class (each class weighted alike): 1 when every class has one
    constant offset of its own. A model of objects with no preferred orientation keeps one frame per
    class (its canonical pose of each shape is arbitrary), so this, not the pooled
    :func:`offset_concentration`, says how well it recovers their angles. Unknown labels (< 0) and
    classes of a single image (which would score 1 whatever the angles) are left out; NaN when no
    class has two images. ``symmetry``: k for objects with k-fold rotational symmetry (offsets
    counted modulo 2 pi / k), as :func:`offset_concentration`. Labels may also be strings (all known)."""
    a = real_array(a, "class_offset_concentration: angles", what="angles in radians").ravel()
    b = real_array(b, "class_offset_concentration: angles", what="angles in radians").ravel()
    labels = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels).ravel()
    if labels.dtype.kind in "biuf":
        labels = real_array(labels, "class_offset_concentration: labels", what="class labels")
    elif labels.dtype.kind not in "US":
        raise AffineVAEError(f"class_offset_concentration: labels must be integers or strings, got dtype {labels.dtype}")
    if a.shape != b.shape or a.shape != labels.shape or a.size < 1:
        raise AffineVAEError(f"class_offset_concentration needs equal-length angle and label arrays, got {a.shape}, "
                             f"{b.shape} and {labels.shape}")
    check_symmetry(symmetry)
    known = labels >= 0 if labels.dtype.kind == "f" else np.ones(labels.shape, dtype=bool)
    classes = [c for c in np.unique(labels[known]) if int((labels == c).sum()) >= 2]
    if not classes:
        return float("nan")
    return float(np.mean([offset_concentration(a[labels == c], b[labels == c], symmetry) for c in classes]))


def mean_elbo(model, data: ImageSet, batch_size: int = 512, seed: int = 0) -> float:
    """Mean per-image ELBO (nats) of ``model`` on ``data`` (one seeded posterior sample)."""
    return float(encode_dataset(model, data, batch_size=batch_size, seed=seed)["elbo"].mean())


def psnr(clean, other, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB between two image arrays of equal shape (any shape, at least one value;
    finite real numbers) whose values span ``data_range`` (a finite number > 0, in the images' units); inf for
    identical images."""
    clean = real_array(clean, "psnr: images", min_size=1)
    other = real_array(other, "psnr: images", min_size=1)
    span = as_number(data_range)
    if span is None or not (np.isfinite(span) and span > 0):
        raise AffineVAEError(f"psnr: data_range must be a finite number > 0, got {data_range!r}")
    data_range = span
    if clean.shape != other.shape:
        raise AffineVAEError(f"psnr: the two image arrays differ in shape, {clean.shape} and {other.shape}")
    mse = float(np.mean((clean - other) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))
