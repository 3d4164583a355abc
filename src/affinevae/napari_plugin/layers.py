"""Points-layer data for napari from per-object maps: positions and features (no napari import needed).

A napari "layer data tuple" is ``(data, kwargs, layer_type)``; :func:`points_layer` builds the
one of the objects and :func:`image_layer` the one of the background, both with the same
``scale`` (the pixel size, or 1 per pixel) so that they overlay.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..mapping import ANGLE_CMAP, fold_angle

__all__ = ["object_features", "points_layer", "image_layer"]


def object_features(z_mean: np.ndarray, angle: np.ndarray, cluster: np.ndarray, frames: np.ndarray,
                    symmetry: int = 1, lattice_angle: Optional[np.ndarray] = None,
                    lattice_fold: int = 1) -> dict[str, np.ndarray]:
    """Per-object features: ``angle_deg`` (folded into [0, 360 / symmetry), NaN without a rotation),
    ``cluster`` (int, -1 when not clustered), ``frame`` and ``z0`` ... ``z{D-1}``; each (N,); with
    ``lattice_angle`` also ``lattice_angle_deg`` (folded into [0, 360 / lattice_fold)).

    Inputs: ``z_mean`` (N, D); ``angle`` (N,) in **radians** (as ``maps.npz`` stores it; NaN when
    the model has no rotation), converted to degrees here for display; ``cluster``, ``frames`` (N,)
    ints; ``symmetry`` the n of an n-fold rotational symmetry; ``lattice_angle`` (N,) radians, a grid
    window's lattice angle from its Fourier peaks (``maps.npz``'s, with its ``lattice_fold``)."""
    angle = np.asarray(angle, dtype=np.float64)
    feats: dict[str, np.ndarray] = {
        "angle_deg": np.degrees(fold_angle(angle, symmetry)),  # NaN stays NaN, each finite angle is folded
        "cluster": np.asarray(cluster, dtype=np.int64),
        "frame": np.asarray(frames, dtype=np.int64)}
    if lattice_angle is not None:
        feats["lattice_angle_deg"] = np.degrees(fold_angle(np.asarray(lattice_angle, dtype=np.float64), lattice_fold))
    z = np.asarray(z_mean, dtype=np.float64)
    for d in range(z.shape[1]):
        feats[f"z{d}"] = z[:, d]
    return feats


def points_layer(positions: np.ndarray, features: dict[str, np.ndarray], window: int, n_frames: int = 1,
                 pixel_size: Optional[float] = None, unit: Optional[str] = None,
                 name: str = "objects") -> tuple[np.ndarray, dict[str, Any], str]:
    """The napari points layer of the objects.

    Args:
        positions: (N, 2) (row, col) pixels. features: :func:`object_features`.
        window: patch size in pixels (sets the point size). n_frames: F; with F > 1 the points
            are (frame, row, col). pixel_size, unit: physical pixel size (the layer's scale).

    Returns:
        ``(data, kwargs, "points")``: coloured by ``angle_deg`` when the model has a rotation,
        else by ``cluster`` when clustered, else by ``z0``.
    """
    pos = np.asarray(positions, dtype=np.float64)
    data = np.column_stack([features["frame"], pos]) if n_frames > 1 else pos
    s = float(pixel_size) if pixel_size else 1.0
    scale = (1.0,) * (data.shape[1] - 2) + (s, s)
    if np.isfinite(features["angle_deg"]).all():
        color, cmap = "angle_deg", ANGLE_CMAP
    elif (features["cluster"] >= 0).all():
        color, cmap = "cluster", "turbo"
    else:
        color, cmap = "z0", "viridis"
    kwargs = {"name": name, "features": features, "face_color": color, "face_colormap": cmap,
              "size": max(2.0, 0.5 * window), "scale": scale,
              "metadata": {"pixel_size": pixel_size, "unit": unit, "colour_by": color},
              **layer_units(unit if pixel_size else None, data.shape[1])}
    return data, kwargs, "points"


#: affinevae's unit names (:data:`affinevae.units.UNITS`, :data:`~affinevae.units.ANGLE_UNITS`) as napari's
#: layers (pint) spell them.
NAPARI_UNITS = {"pm": "pm", "Å": "angstrom", "nm": "nm", "µm": "um", "mm": "mm", "mas": "milliarcsecond",
                "arcsec": "arcsec", "arcmin": "arcmin", "deg": "degree"}


def layer_units(unit: Optional[str], ndim: int) -> dict[str, Any]:
    """``{"units": ...}`` for a layer of ``ndim`` data axes whose last two are in ``unit`` (napari's scale
    bar then shows it; earlier axes, frames, have none), or ``{}`` without a unit or where napari's layers
    take no units (before napari 0.6)."""
    import inspect

    from napari.layers import Layer

    if unit not in NAPARI_UNITS or "units" not in inspect.signature(Layer.__init__).parameters:
        return {}
    return {"units": ("pixel",) * (ndim - 2) + (NAPARI_UNITS[unit],) * 2}


def image_layer(image: np.ndarray, step: int = 1, pixel_size: Optional[float] = None,
                name: str = "image", unit: Optional[str] = None) -> tuple[np.ndarray, dict[str, Any], str]:
    """The background image layer: ``image`` (H', W') or (F, H', W'), read every ``step`` pixels of the frame
    (``pixel_size``: the frame's pixel size in ``unit`` per pixel, None for 1; ``unit``: its unit,
    :func:`layer_units`).

    Returns:
        napari's layer-data tuple: the image as an array of the same shape, the layer's keywords
        (``scale``: ``step`` times the pixel size per axis, in ``unit``) and ``'image'``."""
    s = (float(pixel_size) if pixel_size else 1.0) * step
    img = np.asarray(image)
    scale = (1.0,) * (img.ndim - 2) + (s, s)
    return img, {"name": name, "colormap": "gray", "scale": scale, **layer_units(unit if pixel_size else None, img.ndim)}, "image"
