"""napari reader: ``maps.npz`` written by ``affinevae map`` -> the image and a points layer of the objects
(``map --image --patches``), or a hyperspectral cube's maps as image and labels layers (``map --cube``)."""

from __future__ import annotations

import warnings

from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from .layers import image_layer, layer_units, object_features, points_layer

__all__ = ["get_reader", "read_maps", "read_spectral_maps", "check_maps", "MAX_SIDE", "MAX_STACK_BYTES"]

#: The background is read every ``ceil(side / MAX_SIDE)`` pixels so its longer side stays below this.
MAX_SIDE = 4096
#: A stack of more than one frame is shown whole when its frames take at most this many bytes (float32).
MAX_STACK_BYTES = 512 << 20
#: Arrays every ``maps.npz`` of objects holds (what tells it from other ``.npz`` files).
MAPS_KEYS = ("z_mean", "positions", "centers", "frames")
#: Arrays every ``maps.npz`` of a cube (``map --cube``) holds.
SPECTRAL_MAPS_KEYS = ("z_mean", "grid_shape", "shift", "cluster")


def _maps_kind(path: Union[str, list]) -> tuple[Optional[Path], Optional[str]]:
    """(the ``maps.npz``, 'objects' or 'cube') for a maps file or a folder holding one; (None, None) else."""
    p = Path(path[0] if isinstance(path, (list, tuple)) else path)
    if p.is_dir():
        p = p / "maps.npz"
    if p.suffix.lower() != ".npz" or not p.is_file():
        return None, None
    try:
        with np.load(p, allow_pickle=False) as f:
            names = set(f.files)
    except Exception:  # noqa: BLE001 - a truncated or empty archive (BadZipFile, EOFError): not ours to open
        return None, None
    if all(k in names for k in MAPS_KEYS):
        return p, "objects"
    return (p, "cube") if all(k in names for k in SPECTRAL_MAPS_KEYS) else (None, None)


def _load_maps(path: Union[str, list], kind: str, writer: str) -> tuple[Path, dict]:
    """(the ``maps.npz``, its arrays) of a maps file of ``kind`` ('objects' or 'cube'); one line otherwise."""
    from ..errors import AffineVAEError

    p, found = _maps_kind(path)
    if found != kind:
        given = Path(path[0] if isinstance(path, list) and path else path) if isinstance(path, (str, Path, list)) else None
        if given is not None and not given.exists():
            raise AffineVAEError(f"{given}: no such file or folder")
        raise AffineVAEError(f"{path}: not a maps.npz written by {writer}")
    try:
        with np.load(p, allow_pickle=False) as f:
            return p, {k: f[k] for k in f.files}
    except Exception as exc:  # noqa: BLE001 - pickled (object) arrays, a corrupt member
        raise AffineVAEError(f"{p}: cannot read the maps ({type(exc).__name__})") from None


def get_reader(path: Union[str, list]) -> Optional[Callable[[Any], list]]:
    """napari's reader hook: :func:`read_maps` for a ``maps.npz`` of objects, :func:`read_spectral_maps`
    for one of a cube (or a folder holding either), else None."""
    kind = _maps_kind(path)[1]
    return read_maps if kind == "objects" else read_spectral_maps if kind == "cube" else None


def read_spectral_maps(path: Union[str, list]) -> list[tuple]:
    """Layer data tuples of a cube's ``maps.npz`` (``affinevae map --cube``): an image layer (H, W) per
    content latent (the first shown), the shift in samples where the model has one, the baseline's
    loadings where fitted (hidden), and labels layers of the clusters (``--clusters``) and of the
    model's own classes (jrvae, ssvae, ...), each label the cluster or class plus one (0: none). A recorded
    ``pixel_size`` / ``pixel_unit`` (the map pixel's edge) is every layer's scale and unit, as for object maps.

    Raises:
        AffineVAEError: not such a file, or arrays that are not (H, W) maps of its ``grid_shape``.
    """
    from ..errors import AffineVAEError

    p, d = _load_maps(path, "cube", "`affinevae map --cube`")
    grid = tuple(int(v) for v in np.asarray(d["grid_shape"]).reshape(-1)[:2])
    z = np.asarray(d["z_mean"])
    if z.ndim != 3 or z.shape[:2] != grid or np.asarray(d["shift"]).shape != grid:
        raise AffineVAEError(f"{p}: z_mean {z.shape} and shift {np.asarray(d['shift']).shape} are not maps of the "
                             f"grid {grid}")
    size = d.get("pixel_size")  # the map pixel's edge (an instrument's calibration, map --pixel-size): the scale
    unit = str(d["pixel_unit"]) if size is not None and "pixel_unit" in d else None
    size = float(size) if unit and np.isfinite(float(size)) and float(size) > 0 else None
    scaled = {} if size is None else {"scale": (size, size), **layer_units(unit, 2)}
    layers = [(z[:, :, j], {"name": f"z{j}", "colormap": "viridis", "visible": j == 0, **scaled}, "image")
              for j in range(z.shape[2])]
    shift = np.asarray(d["shift"], dtype=np.float32)
    if np.isfinite(shift).any():
        layers.append((shift, {"name": "shift (samples)", "colormap": "PiYG", "visible": False, **scaled}, "image"))
    loads = d.get("baseline_loadings")
    if loads is not None and loads.ndim == 3 and loads.shape[:2] == grid:
        method = str(d.get("baseline_method", "baseline")).upper()
        layers += [(loads[:, :, k], {"name": f"{method} {k + 1}", "colormap": "viridis", "visible": False, **scaled},
                    "image") for k in range(loads.shape[2])]
    for name, title in (("cluster", "clusters"), ("class", "model's classes")):
        values = d.get(name)
        if values is not None and values.shape == grid and (values >= 0).any():
            layers.append(((np.asarray(values, dtype=np.int64) + 1).clip(0), {"name": title, "opacity": 0.5, **scaled},
                           "labels"))
    return layers


def check_maps(d: dict, where) -> None:
    """Refuse (one :class:`~affinevae.errors.AffineVAEError` line naming ``where``) maps whose
    arrays the layers cannot be drawn from: ``z_mean`` (N, D), ``angle`` (N,) radians (NaN for a
    model without rotation) and ``frames`` (N,), ``positions`` (N, 2), all numeric and of one
    length N. Only shapes and types are checked, not the angle's values."""
    from ..errors import AffineVAEError

    if "angle" not in d:
        raise AffineVAEError(f"{where}: maps without 'angle' (not written by `affinevae map`?)")
    shapes = {"z_mean": 2, "angle": 1, "frames": 1, "positions": 2}
    for name, ndim in shapes.items():
        a = d[name]
        if a.ndim != ndim or not np.issubdtype(a.dtype, np.number) or (name == "positions" and a.shape[1] != 2):
            want = "(N, 2)" if name == "positions" else "(N, D)" if ndim == 2 else "(N,)"
            raise AffineVAEError(f"{where}: '{name}' must be a numeric {want} array, got {a.dtype} {a.shape}")
    n = {len(d[k]) for k in shapes}
    if len(n) != 1:
        raise AffineVAEError(f"{where}: arrays of different lengths ({', '.join(f'{k} {len(d[k])}' for k in shapes)})")


def _open_source(source: str, key: Optional[str], level: Optional[int]):
    """The stack a ``maps.npz``'s ``source_image`` names: one file, or a glob pattern's matches one after
    another in name order (as ``map --image PATTERN`` read them)."""
    from ..data.files import expand_pattern
    from ..data.stacks import open_joined, open_stack

    return open_joined(expand_pattern(source), lambda path: open_stack(path, key=key, level=level))


def read_maps(path: Union[str, list]) -> list[tuple]:
    """Layer data tuples of a ``maps.npz``: the image it was mapped on (when ``source_image`` is
    readable) and the points layer of the objects (:func:`~.layers.points_layer`).

    The image is read through :func:`~affinevae.data.stacks.open_stack` (so every format the
    package reads, with ``source_key``/``source_level``); frames larger than :data:`MAX_SIDE` are
    read with a step. Positions and the image share the scale of the pixel size, if known.
    """
    from ..errors import AffineVAEError

    p, d = _load_maps(path, "objects", "`affinevae map`")
    check_maps(d, p)
    n_frames = int(d.get("n_frames", 1))
    pixel = float(d["pixel_size"]) if "pixel_size" in d else None
    unit = str(d["unit"]) if "unit" in d else None
    lattice = d.get("lattice_angle")
    if lattice is not None and np.shape(lattice) != np.shape(d["angle"]):
        raise AffineVAEError(f"{p}: 'lattice_angle' {np.shape(lattice)} does not match {len(d['angle'])} objects")
    feats = object_features(d["z_mean"], d["angle"], d.get("cluster", np.full(len(d["z_mean"]), -1)), d["frames"],
                            int(d.get("symmetry", 1)), lattice, int(d.get("lattice_fold", 1)))
    layers = []
    source = str(d.get("source_image", ""))
    frames_shown = n_frames
    if source:
        level = int(d.get("source_level", -1))
        try:
            with _open_source(source, str(d.get("source_key", "")) or None, None if level < 0 else level) as src:
                step = max(1, -(-max(src.image_shape) // MAX_SIDE))
                rows, cols = slice(None, None, step), slice(None, None, step)
                frame = int(d.get("source_frame", 0))
                whole = n_frames > 1 and np.prod(src.image_shape) * n_frames * 4 / step ** 2 <= MAX_STACK_BYTES
                if whole:
                    img = np.stack([src.read_region(i, rows, cols) for i in range(n_frames)])
                else:
                    img = src.read_region(frame, rows, cols)
                    frames_shown = 1
                    keep = feats["frame"] == frame
                    feats = {k: v[keep] for k, v in feats.items()}
                    d["positions"] = d["positions"][keep]
            if img.ndim == 3 + (1 if whole else 0):  # colour frames: show their mean
                img = img.mean(-3)
            layers.append(image_layer(img, step, pixel, name=f"{Path(source).name}", unit=unit))
        except AffineVAEError as exc:  # the image moved or is unreadable: the points alone, and why
            warnings.warn(f"{p}: its source image is not shown ({exc}); the objects are", UserWarning, stacklevel=2)
    layers.append(points_layer(d["positions"], feats, int(d.get("window", 8)), frames_shown, pixel, unit,
                               name=f"objects ({p.parent.name})"))
    return layers
