"""Patches cut around objects (or on a grid) out of large images and stacks.

The pieces, in the order a micrograph goes through them:

1. :func:`~affinevae.data.stacks.open_stack` opens a large image or stack lazily
   (:mod:`affinevae.data.stacks`).
2. :func:`~affinevae.data.objects.detect_objects` finds bright objects as local maxima;
   :func:`~affinevae.data.objects.read_coordinates` reads user coordinates instead
   (:mod:`affinevae.data.objects`).
3. :func:`extract_patches` cuts ``window`` x ``window`` patches around centres with one
   vectorised gather; :func:`grid_centers` lays out a sliding window on a regular grid.
4. :func:`iter_patches` / :func:`cut_patches` do 1-3 chunk by chunk of frames, so memory is
   bounded by the chunk; a frame larger than ``tile`` pixels is read and searched in
   overlapping tiles (:func:`tile_grid`), each object found once, with the same centres and
   patches as the whole frame gives. Encoding patches with a model is :mod:`affinevae.encoding`'s job.

Conventions: centres are (row, col) in pixels, integer pixel indices; a patch around centre
(r, c) covers rows ``r - window // 2`` to ``r - window // 2 + window - 1`` (likewise columns),
so for an even ``window`` the centre pixel is at index ``window // 2`` of the patch.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import AffineVAEError, user_stacklevel
from ..io import atomic_write
from .formats import PATCH_SET_KIND
from .centring import MASS_CENTRE_REACH, MASS_NOISE_CUT, central_crop, mass_offsets  # noqa: F401  (public here too)
from .imageset import ImageSet, noise_sigma, normalise_images, summary_repr
from .inputs import as_number, check_int, real_array
from .background import BACKGROUND_VARIATION, MAX_SCATTER, MIN_BOXES, SMOOTH_RATIO, background_box, check_box, frame_background
from .objects import (DETECT_THRESHOLD, PERIODIC_RATIO, REFINE_REACH, check_coordinates, check_noise_floor,
                      detect_objects, find_objects, frame_periodicity, frame_points, level_samples,
                      level_step, noise_level, object_arrangement, read_coordinates, smoothed_pair,
                      smoothing_radius)
from .stacks import open_stack

__all__ = ["CENTRE_MODES", "CENTRING_ISOLATION", "CENTRING_SHIFT_FRACTION", "CentringCheck", "centring_check", "resolve_centring", "mass_offsets", "mass_centred",
           "MASS_CENTRE_REACH", "MASS_CENTRE_MIN_SHIFT", "PatchSet", "BackgroundCheck", "background_check", "resolve_background", "BACKGROUND_MODES", "central_crop",
           "DetectionCheck", "detection_check", "default_noise_floor", "default_threshold", "detection_levels", "sparse_field", "SPARSE_NOISE_FLOOR", "EDGE_MODES", "extract_patches", "grid_centers", "iter_patches", "cut_patches", "patch_min_distance",
           "patch_smoothing", "SMOOTHING_FRACTION",
           "concat_chunks", "nothing_found", "tile_grid", "DEFAULT_TILE", "LATTICE_ORDER", "scattered_objects",
           "lattice_patches"]

#: A patch set whose objects' bond-orientational order stays under this (``meta["lattice_order"]``,
#: :func:`affinevae.data.objects.neighbour_order`: the order of the directions to each object's nearest
#: neighbours above what random placement gives) holds scattered objects, not a lattice's atoms: its
#: full-circle rVAE takes the equivariant encoder. Measured (``synthetic_micrograph``, the default
#: detection): lattices 0.26-0.50 (atoms 3-6 px apart); under heavy noise (0.3-0.5 of an atom) with
#: 10-20 % vacancies, whose detections are partly noise peaks, -0.03-0.17; scattered objects about 0
#: (a Poisson scatter -0.01, particles kept 34 px apart -0.01 and a cryo-EM audit's picks -0.01,
#: an astronomer audit's galaxy field -0.01). The spread of the neighbour distances, tried first,
#: took particles with a minimum distance between them (0.16) for a lattice.
LATTICE_ORDER = 0.15


def scattered_objects(meta: Mapping[str, Any]) -> bool:
    """Whether a patch set's ``meta`` (``ImageSet.meta``, or :meth:`~affinevae.data.patches.PatchSet.arrangement`)
    records scattered objects rather than a lattice's atoms: a ``lattice_order`` under :data:`LATTICE_ORDER`,
    or too few objects in every frame for a lattice (``objects_per_frame``, at most 4: one particle or
    cell per frame). False for a grid, a patch set written before either was recorded, other data."""
    order = meta.get("lattice_order")
    if order is None:
        return meta.get("objects_per_frame") is not None
    return order < LATTICE_ORDER


def lattice_patches(meta: Mapping[str, Any]) -> bool:
    """Whether ``meta`` (``ImageSet.meta``) is a patch set whose objects share their grain's angle: a
    lattice's atoms, or windows on a grid (``patches --stride``, a texture or lattice); not scattered
    objects (:func:`scattered_objects`), nor other data."""
    return meta.get("kind") == PATCH_SET_KIND and not scattered_objects(meta)


#: Frames with a side longer than this many pixels are processed in tiles by default (``--tile``).
DEFAULT_TILE = 4096

EDGE_MODES = ("drop", "pad", "reflect")


@dataclasses.dataclass
class PatchSet:
    """Patches cut from a stack, with where they came from.

    Attributes:
        patches: (N, w, w) float32 for single-channel frames, (N, C, w, w) otherwise.
        centers: (N, 2) int64 (row, col) of each patch's centre pixel in its frame.
        frames: (N,) int64 frame index of each patch.
        window: w, patch size in pixels.
        image_shape: (H, W) of the frames.
        n_frames: F, frames in the stack.
        grid_shape: (rows, cols) of the patch grid per frame in grid mode (patches are ordered
            frame by frame, row-major), else None.
        stride: grid step in pixels (grid mode), else None.
        n_found: objects found before edge patches were dropped (not saved), or None.
        pixel_size: physical size of a pixel of the frames (:class:`~affinevae.units.PixelSize`),
            or None when unknown; saved as ``pixel_size`` (float, in ``unit``) and ``unit``.
        positions: (N, 2) float64 (row, col) of each object in pixels, to a fraction of a pixel: the
            detected maxima refined by :func:`~affinevae.data.objects.refine_positions`, or the
            coordinates as given (before rounding to ``centers``); None for a grid (and patch sets
            written before they were recorded). The arrangement (:meth:`arrangement`) is measured
            on them.
        background_box: the box side (pixels) of the background the frames were flattened by before the
            patches were cut (:meth:`~affinevae.data.stacks.FrameSource.use_background`), or None when they
            were not; saved as ``background_box``.
        n_masked: patches left out because their window held a masked (NaN) pixel (``drop_masked``; not
            saved), or None.
        fill_nan: the frames held NaN/inf pixels, filled when the patches were cut (``fill_nan`` or
            ``drop_masked``; :attr:`~affinevae.data.stacks.FrameSource.filled`), so ``map`` reads them alike; saved as
            ``fill_nan`` when True.
        recentred: the detected objects were cut around their brightness centres (:func:`iter_patches`'
            ``centre``, :func:`mass_offsets`) rather than their peaks, ``centers`` and ``positions`` being
            those centres; saved as ``recentred`` when True.
        n_merged: peaks merged into another's object when re-centred (the lobes of one particle; not saved),
            or None.

    A saved patch set also records that it is one (``kind``) and a robust estimate of its pixel
    noise (``noise_sigma``, see :meth:`arrays`), which ``affinevae train`` uses for its
    patch-set defaults (:func:`affinevae.defaults.data_defaults`).
    """

    patches: np.ndarray
    centers: np.ndarray
    frames: np.ndarray
    window: int
    image_shape: tuple = (0, 0)
    n_frames: int = 1
    grid_shape: Optional[tuple] = None
    stride: Optional[int] = None
    n_found: Optional[int] = None
    pixel_size: Any = None
    positions: Optional[np.ndarray] = None
    background_box: Optional[int] = None
    n_masked: Optional[int] = None
    fill_nan: bool = False
    recentred: bool = False
    n_merged: Optional[int] = None

    def __repr__(self) -> str:
        return summary_repr(self)

    def __len__(self) -> int:
        return len(self.patches)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays written by :meth:`save` (shapes and units as the attributes above).

        ``patches``, ``centers``, ``frames``, ``window``, ``image_shape``, ``n_frames``; ``positions``
        when known; ``background_box`` when the frames were flattened; ``fill_nan`` (True) when their NaN
        pixels were filled; ``recentred`` (True) when the objects were cut around their brightness centres; in grid mode ``grid_shape`` and ``stride``; with at least one patch ``kind`` (the string
        ``"patches"``) and ``noise_sigma`` (:meth:`noise_sigma`, a float64 scalar); for objects (not
        a grid) with neighbours ``spacing``, ``lattice_order`` and ``lattice_fold``, or ``objects_per_frame``
        (:meth:`arrangement`).
        """
        out = {"patches": self.patches, "centers": self.centers, "frames": self.frames,
               "window": np.int64(self.window), "image_shape": np.asarray(self.image_shape, dtype=np.int64),
               "n_frames": np.int64(self.n_frames)}
        if len(self):
            out["kind"] = np.asarray(PATCH_SET_KIND)
            out["noise_sigma"] = np.float64(self.noise_sigma())
        if self.grid_shape is not None:
            out["grid_shape"] = np.asarray(self.grid_shape, dtype=np.int64)
            out["stride"] = np.int64(self.stride or 0)
        if self.pixel_size is not None:
            out["pixel_size"] = np.float64(self.pixel_size.value)
            out["unit"] = np.asarray(self.pixel_size.unit)
        if self.positions is not None:
            out["positions"] = np.asarray(self.positions, dtype=np.float64)
        if self.background_box is not None:
            out["background_box"] = np.int64(self.background_box)
        if self.fill_nan:
            out["fill_nan"] = np.bool_(True)
        if self.recentred:
            out["recentred"] = np.bool_(True)
        out.update({k: np.float64(v) for k, v in self.arrangement().items()})
        return out

    def arrangement(self) -> dict[str, float]:
        """How the objects lie (at :attr:`positions`, else ``centers``), for ``train``'s patch-set defaults:
        ``spacing``, the median distance in pixels to the first shell of neighbours in the same frame
        (:func:`~affinevae.data.objects.neighbour_spacing`),
        ``lattice_order``, how lattice-like their arrangement is
        (:func:`~affinevae.data.objects.neighbour_order`: lattices 0.26-0.50, scattered objects about 0), and
        ``lattice_fold``, the n of their n-fold bonds (:func:`~affinevae.data.objects.neighbour_fold`: 4 or 6);
        ``objects_per_frame`` instead without a frame of more than 4 objects; empty for a grid."""
        if self.grid_shape is not None or len(self) < 2:
            return {}
        return object_arrangement(self.centers if self.positions is None else self.positions, self.frames)

    def noise_sigma(self) -> float:
        """Robust pixel-noise estimate (:func:`~affinevae.data.imageset.noise_sigma`) of
        :meth:`normalised_patches`: in the intensity units ``train`` sees (needs a patch)."""
        return noise_sigma(self.normalised_patches())

    def normalised_patches(self) -> np.ndarray:
        """The patches as ``load_images`` reads them back: float32, under the normalisation rule,
        the shape of :attr:`patches`: (N, w, w), or (N, C, w, w) for multi-channel frames.

        Patches cut by :func:`cut_patches` are already float32 in [0, 1] and are returned as they
        are (no copy); others go through :func:`~affinevae.data.imageset.normalise_images`.
        """
        p = self.patches
        if p.dtype == np.float32 and p.size and float(p.min()) >= 0.0 and float(p.max()) <= 1.0:
            return p
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # load_images warns about the scaling when the file is read
            return normalise_images(p, "patches")

    def imageset(self, source: str = "patches") -> ImageSet:
        """The patches as ``train`` reads a saved patch set back: an
        :class:`~affinevae.data.imageset.ImageSet` of :meth:`normalised_patches` whose ``meta``
        (``kind``, ``window``, ``noise_sigma``, ``pixel_size`` and ``unit`` when known, ``spacing``,
        ``lattice_order`` and ``lattice_fold``, :meth:`arrangement`) makes
        :func:`affinevae.defaults.data_defaults` choose the patch-set defaults, as it does for the file.

        Args:
            source: names the set in messages.

        Raises:
            AffineVAEError: a patch set without patches.
        """
        if not len(self):
            raise AffineVAEError(f"{source}: holds no patches")
        meta = {"kind": PATCH_SET_KIND, "window": int(self.window), "noise_sigma": float(self.noise_sigma())}
        if self.pixel_size is not None:
            meta.update(pixel_size=float(self.pixel_size.value), unit=str(self.pixel_size.unit))
        meta.update(self.arrangement())
        return ImageSet(self.normalised_patches(), source=source, meta=meta)

    @staticmethod
    def concat(parts: Sequence["PatchSet"]) -> "PatchSet":
        """Join per-chunk patch sets (in order) into one (:func:`concat_chunks`)."""
        return concat_chunks(parts)

    def save(self, path: Union[str, Path], arrays: Optional[dict] = None) -> Path:
        """Write an uncompressed ``.npz`` atomically: ``arrays``, what :meth:`arrays` gave (for a caller that
        also reads them: its noise estimate and arrangement are not computed twice), else :meth:`arrays`."""
        arrays = self.arrays() if arrays is None else arrays

        def w(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        return atomic_write(path, w)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "PatchSet":
        """Read a file written by :meth:`save` (never unpickled)."""
        p = Path(path)
        if not p.is_file():
            raise AffineVAEError(f"{p}: patches file not found")
        try:
            f = np.load(p, allow_pickle=False)
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise AffineVAEError(f"{p}: not a patches file (an .npz from `affinevae patches` is needed)")
            with f:
                miss = [k for k in ("patches", "centers", "frames") if k not in f.files]
                if miss:
                    raise AffineVAEError(f"{p}: not a patches file (missing {', '.join(miss)}); "
                                         "make one with `affinevae patches`")
                d = {k: f[k] for k in f.files}
        except (AffineVAEError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a corrupt or truncated archive (BadZipFile, EOFError ...)
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise AffineVAEError(f"{p}: cannot read patches ({first})") from None
        n = len(d["patches"])
        if d["centers"].shape != (n, 2) or d["frames"].shape != (n,):
            raise AffineVAEError(f"{p}: centers {d['centers'].shape} / frames {d['frames'].shape} do not match "
                                 f"{n} patches")
        for name in ("centers", "frames"):  # cast to integers below: a NaN would become -2**63
            v = d[name]
            if not np.issubdtype(v.dtype, np.number) or np.iscomplexobj(v):
                raise AffineVAEError(f"{p}: {name} must be real numbers, got {v.dtype}")
            bad = int(np.size(v) - np.count_nonzero(np.isfinite(v)))
            if bad:
                raise AffineVAEError(f"{p}: {bad} of its {name} are NaN or infinite")
            fractional = np.flatnonzero(v.reshape(-1) % 1)  # frame 0.5 was taken as frame 0
            if fractional.size:
                raise AffineVAEError(f"{p}: its {name} must be whole numbers (pixels, frame indices), got "
                                     f"{float(v.reshape(-1)[fractional[0]]):g}")
        side = int(d["patches"].shape[-1]) if d["patches"].ndim >= 2 else 0
        window = int(d["window"]) if "window" in d else side
        if n and window != side:
            raise AffineVAEError(f"{p}: window {window} does not match its {side}x{side} px patches")
        image_shape = tuple(int(v) for v in d.get("image_shape", (0, 0)))
        n_frames = int(d.get("n_frames", 1))
        centers, frames = d["centers"].astype(np.int64), d["frames"].astype(np.int64)
        if n and image_shape != (0, 0):  # a centre outside the image it was cut from: refused
            h, w = image_shape
            out = (centers[:, 0] < 0) | (centers[:, 0] >= h) | (centers[:, 1] < 0) | (centers[:, 1] >= w)
            if out.any():
                i = int(np.flatnonzero(out)[0])
                raise AffineVAEError(f"{p}: {int(out.sum())} patch centre(s) outside the {h}x{w} image, e.g. patch {i} "
                                     f"at (row {centers[i, 0]}, col {centers[i, 1]})")
            if ((frames < 0) | (frames >= n_frames)).any():
                raise AffineVAEError(f"{p}: patch frame indices outside 0..{n_frames - 1}")
        gs = tuple(int(v) for v in d["grid_shape"]) if "grid_shape" in d else None
        positions = None
        if "positions" in d:
            positions = d["positions"]
            if (positions.shape != (n, 2) or not np.issubdtype(positions.dtype, np.number)
                    or not np.isfinite(positions).all()):
                raise AffineVAEError(f"{p}: positions {positions.shape} must be (N, 2) finite numbers for {n} patches")
            positions = positions.astype(np.float64)
        pixel = None
        if "pixel_size" in d and "unit" in d:
            from ..units import PixelSize

            pixel = PixelSize(float(d["pixel_size"]), str(d["unit"]))
        box = None
        if "background_box" in d:
            b = d["background_box"]
            if b.shape != () or not np.issubdtype(b.dtype, np.integer) or int(b) < 1:
                raise AffineVAEError(f"{p}: background_box must be one whole number of pixels >= 1, got {b!r}")
            box = int(b)
        flags = {}
        for name in ("fill_nan", "recentred"):
            flag = d.get(name, np.bool_(False))
            if flag.shape != () or flag.dtype != np.bool_:
                raise AffineVAEError(f"{p}: {name} must be one true/false value, got {flag!r}")
            flags[name] = bool(flag)
        return cls(d["patches"], d["centers"].astype(np.int64), d["frames"].astype(np.int64), window,
                   tuple(int(v) for v in d.get("image_shape", (0, 0))), int(d.get("n_frames", 1)), gs,
                   int(d["stride"]) if "stride" in d else None, pixel_size=pixel, positions=positions,
                   background_box=box, **flags)


def _check_window(window: Any, image_shape: Sequence[int], where: str) -> int:
    w = check_int("window", window, 2)
    if len(image_shape) < 2:
        raise AffineVAEError(f"{where}: the image shape must be (H, W) (or (..., H, W)), got {tuple(image_shape)}")
    h_img, w_img = int(image_shape[-2]), int(image_shape[-1])
    if h_img < w or w_img < w:
        raise AffineVAEError(f"{where}: the {h_img}x{w_img} image is smaller than the {w}x{w} window")
    return w


def extract_patches(stack: np.ndarray, centers: np.ndarray, window: int, frames: Optional[np.ndarray] = None,
                    edge: str = "drop", frame_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``window`` x ``window`` patches around integer centres, in one vectorised gather.

    Args:
        stack: (H, W), (F, H, W) or (F, C, H, W) frames.
        centers: (N, 2) int (row, col) pixel centres, inside the image.
        window: patch size w in pixels (>= 2).
        frames: (N,) frame index of each centre (global indices; default all 0).
        edge: patches reaching past the border are dropped ('drop'), zero-padded ('pad') or
            filled by mirror reflection ('reflect').
        frame_offset: global index of ``stack[0]`` (frames are looked up as ``frames - frame_offset``).

    Returns:
        ``(patches, keep)``: (M, w, w) or (M, C, w, w) float32 patches and the (M,) int64 indices
        of the centres they belong to (all of them unless ``edge='drop'``).
    """
    if edge not in EDGE_MODES:
        raise AffineVAEError(f"edge must be one of {', '.join(EDGE_MODES)}, got {edge!r}")
    stack = np.asarray(stack)
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim not in (3, 4):
        raise AffineVAEError(f"extract_patches expects (H, W), (F, H, W) or (F, C, H, W) frames, got {stack.shape}")
    w = _check_window(window, stack.shape, "extract_patches")
    H, W = stack.shape[-2:]
    cf = real_array(centers, "extract_patches: centres", what="(N, 2) integer (row, col) pixels")
    if cf.size == 0 or cf.shape == (2,):  # none, or one centre
        cf = cf.reshape(-1, 2)
    if cf.ndim != 2 or cf.shape[1] != 2:
        raise AffineVAEError(f"extract_patches: centres must be (N, 2) (row, col) pixels, got shape {cf.shape}")
    c = cf.astype(np.int64)
    if frames is None:
        f = np.zeros(len(c), dtype=np.int64)
    else:
        ff = real_array(frames, "extract_patches: frame indices", ndim=(1,), what="whole numbers")
        if len(ff) != len(c):
            raise AffineVAEError(f"extract_patches: {len(ff)} frame indices for {len(c)} centres")
        f = ff.astype(np.int64) - frame_offset
        if len(f) and (f.min() < 0 or f.max() >= stack.shape[0]):
            raise AffineVAEError(f"extract_patches: frame indices must lie in {frame_offset}.."
                                 f"{frame_offset + stack.shape[0] - 1} (the frames given), got "
                                 f"{int(ff[(f < 0) | (f >= stack.shape[0])][0])}")
    half = w // 2
    r0, c0 = c[:, 0] - half, c[:, 1] - half
    inside = (r0 >= 0) & (c0 >= 0) & (r0 + w <= H) & (c0 + w <= W)
    keep = np.arange(len(c), dtype=np.int64)
    src = stack
    if edge == "drop":
        keep = keep[inside]
        r0, c0, f = r0[inside], c0[inside], f[inside]
    elif not inside.all():
        pad = [(0, 0)] * (stack.ndim - 2) + [(half, w - 1 - half), (half, w - 1 - half)]
        used = np.unique(f[~inside])
        # pad only the frames that need it; the others are read from the unpadded stack
        padded = np.pad(stack[used], pad, mode="constant" if edge == "pad" else "reflect")
        pos = np.searchsorted(used, f)
        out_patches = _gather(src, f, r0, c0, w, ~inside)
        out_patches[~inside] = _gather(padded, pos[~inside], r0[~inside] + half, c0[~inside] + half, w)
        return out_patches, keep
    return _gather(src, f, r0, c0, w), keep


def _gather(stack: np.ndarray, f: np.ndarray, r0: np.ndarray, c0: np.ndarray, w: int,
            skip: Optional[np.ndarray] = None) -> np.ndarray:
    """Patches ``stack[f, ..., r0:r0+w, c0:c0+w]`` for every index (skipped rows left at 0)."""
    n = len(f)
    if skip is not None:
        out = np.zeros((n, *stack.shape[1:-2], w, w), dtype=np.float32)
        take = ~skip
        if take.any():
            out[take] = _gather(stack, f[take], r0[take], c0[take], w)
        return out
    if n == 0:
        return np.zeros((0, *stack.shape[1:-2], w, w), dtype=np.float32)
    view = sliding_window_view(stack, (w, w), axis=(-2, -1))       # (F, [C,] H-w+1, W-w+1, w, w), no copy
    if stack.ndim == 3:
        p = view[f, r0, c0]                                          # (N, w, w)
    else:
        p = view[f, :, r0, c0]                                       # (N, C, w, w)
    return np.ascontiguousarray(p, dtype=np.float32)


def touches_mask(mask: np.ndarray, centers: np.ndarray, window: int, frames: Optional[np.ndarray] = None,
                 frame_offset: int = 0) -> np.ndarray:
    """Which ``window`` x ``window`` patches (placed as :func:`extract_patches` places them) hold a masked pixel.

    Args:
        mask: (H, W) or (F, H, W) bool, True where a pixel is masked (NaN as stored,
            :func:`~affinevae.data.stacks.stored_holes`).
        centers: (N, 2) int (row, col) pixel centres. frames: (N,) frame indices (default all 0), looked up
            as ``frames - frame_offset``.

    Returns:
        (N,) bool. The part of a window past the frame's edge holds no masked pixel (what ``edge='pad'``
        or ``'reflect'`` puts there comes from inside the window). Counted with one summed-area table per
        frame that holds a masked pixel, so the cost does not grow with the window.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == 2:
        mask = mask[None]
    c = np.asarray(centers, dtype=np.int64).reshape(-1, 2)
    f = (np.zeros(len(c), dtype=np.int64) if frames is None else np.asarray(frames, dtype=np.int64)) - frame_offset
    out = np.zeros(len(c), dtype=bool)
    H, W = mask.shape[-2:]
    half = int(window) // 2
    r0, c0 = np.clip(c[:, 0] - half, 0, H), np.clip(c[:, 1] - half, 0, W)
    r1, c1 = np.clip(c[:, 0] - half + int(window), 0, H), np.clip(c[:, 1] - half + int(window), 0, W)
    for k in np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1)):
        sel = np.flatnonzero(f == k)
        if not len(sel):
            continue
        table = np.zeros((H + 1, W + 1), dtype=np.int64)
        np.cumsum(np.cumsum(mask[k], axis=0), axis=1, out=table[1:, 1:])
        a, b, cc, d = r0[sel], r1[sel], c0[sel], c1[sel]
        out[sel] = (table[b, d] - table[a, d] - table[b, cc] + table[a, cc]) > 0
    return out


def grid_centers(image_shape: Sequence[int], window: int, stride: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Centres of a sliding window on a regular grid covering the image.

    Args:
        image_shape: (H, W) in pixels; window: patch size w; stride: grid step in pixels.

    Returns:
        ``(centers, grid_shape)``: (gh * gw, 2) int64 (row, col) centres, row-major, and
        ``(gh, gw)`` with ``gh = (H - w) // stride + 1`` (likewise gw).
    """
    w = _check_window(window, image_shape, "grid")
    s = check_int("stride", stride, 1)
    rows = np.arange(0, int(image_shape[0]) - w + 1, s) + w // 2
    cols = np.arange(0, int(image_shape[1]) - w + 1, s) + w // 2
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([rr.ravel(), cc.ravel()], 1).astype(np.int64), (len(rows), len(cols))


# ============================================================================ tiles
def tile_grid(image_shape: Sequence[int], tile: int, margin: int) -> list[tuple[slice, slice, slice, slice]]:
    """Overlapping tiles covering an (H, W) frame.

    The frame is cut into non-overlapping ``tile`` x ``tile`` cores (the last ones smaller); each
    tile is its core grown by ``margin`` pixels on every side, clipped to the frame.

    Returns:
        ``[(rows, cols, core_rows, core_cols), ...]`` row-major: the tile's slices in the frame
        and its core's slices in the frame.
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    t = check_int("tile", tile, 2)
    out = []
    for r in range(0, h, t):
        for c in range(0, w, t):
            rows = slice(max(0, r - margin), min(h, r + t + margin))
            cols = slice(max(0, c - margin), min(w, c + t + margin))
            out.append((rows, cols, slice(r, min(h, r + t)), slice(c, min(w, c + t))))
    return out


def _in_core(centers: np.ndarray, core_rows: slice, core_cols: slice) -> np.ndarray:
    return ((centers[:, 0] >= core_rows.start) & (centers[:, 0] < core_rows.stop)
            & (centers[:, 1] >= core_cols.start) & (centers[:, 1] < core_cols.stop))


def _tiled_frame(src, frame: int, w: int, tile: int, edge: str, centers: Optional[np.ndarray],
                 detect: dict, positions: Optional[np.ndarray] = None, drop_masked: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, int, Optional[np.ndarray], int]:
    """Patches of one large frame, tile by tile (only a tile of raw pixels in memory at a time).

    ``centers``: (N, 2) frame centres (grid or coordinates) with their (N, 2) float ``positions`` (or
    None), or None to detect objects with the :func:`~affinevae.data.objects.detect_objects` options
    ``detect`` (and refine them, :func:`~affinevae.data.objects.find_objects`). Every tile reaches ``margin`` pixels past its
    core, enough for the smoothing, the maxima search, the sub-pixel fit and a whole patch, so an object is found
    (and its patch cut) exactly as in the whole frame, by the one tile whose core holds it.

    Returns:
        ``(patches, centers, n_found, positions, n_masked)`` in the whole frame's order: detections sorted by row
        then column (as :func:`~affinevae.data.objects.detect_objects`), given centres in their order; edge patches dropped
        as ``edge`` says, and with ``drop_masked`` those holding a pixel stored as NaN/inf (:func:`touches_mask`;
        ``n_masked`` of them); n_found before dropping; positions None when none were given or found.
    """
    sigma = detect.get("sigma")
    md = int(detect.get("min_distance", 5))
    radius = smoothing_radius(sigma)
    margin = w + (max(md + radius, REFINE_REACH) if centers is None else 0)
    tiles = tile_grid(src.image_shape, tile, margin)
    value_range = level = None
    floor = detect.get("noise_floor") or 0.0
    if centers is None and not detect.get("absolute", False):
        lo, hi = np.inf, -np.inf
        step, values, details = level_step(src.image_shape), [], []
        reach = max(radius, 1)  # the noise level's 2 x 2 blocks reach a pixel past the core
        for rows, cols, cr, cc in tiles:  # the whole frame's (smoothed) range and noise level, tile by tile
            rr = slice(max(0, cr.start - reach), min(src.image_shape[0], cr.stop + reach))
            rc = slice(max(0, cc.start - reach), min(src.image_shape[1], cc.stop + reach))
            core = (slice(cr.start - rr.start, cr.stop - rr.start), slice(cc.start - rc.start, cc.stop - rc.start))
            raw, smooth = smoothed_pair(src.read_region(frame, rr, rc), sigma)
            lo, hi = min(lo, float(smooth[core].min())), max(hi, float(smooth[core].max()))
            if floor:
                v, d = level_samples(raw, smooth, step, core, (rr.start, rc.start), src.image_shape)
                values.append(v)
                details.append(d)
        value_range = (lo, hi)
        if floor:
            level = noise_level(np.concatenate(values), np.concatenate(details), sigma)
    keys, parts, cents, posits, n_found, n_masked = [], [], [], [], 0, 0
    for rows, cols, cr, cc in tiles:
        if centers is not None:
            idx = np.flatnonzero(_in_core(centers, cr, cc))
            if len(idx) == 0:
                continue
            local = centers[idx]
            if positions is not None:
                local_pos = positions[idx]
        if drop_masked:  # the stored values read once: their holes too
            region, holes = src.read_region_masked(frame, rows, cols)
        else:
            region = src.read_region(frame, rows, cols)
        off = np.array([rows.start, cols.start], dtype=np.int64)
        if centers is None:
            found, found_pos = find_objects(region, md, detect.get("threshold", DETECT_THRESHOLD),
                                            detect.get("absolute", False), sigma, value_range=value_range,
                                            noise_floor=floor, level=level, origin=off)
            core = _in_core(found + off, cr, cc)
            found, local_pos = found[core] + off, found_pos[core]
            idx, local = found[:, 0] * src.image_shape[1] + found[:, 1], found
        n_found += len(local)
        # a region of C channels (C, h, w) is one frame, not C frames
        patches, keep = extract_patches(region[None] if region.ndim == 3 else region, local - off, w, edge=edge)
        if drop_masked:
            clean = ~touches_mask(holes.any(axis=0) if holes.ndim == 3 else holes, local[keep] - off, w)
            n_masked += int(len(clean) - clean.sum())
            patches, keep = patches[clean], keep[clean]
        keys.append(idx[keep])
        parts.append(patches)
        cents.append(local[keep])
        if centers is None or positions is not None:
            posits.append(local_pos[keep])
    with_positions = centers is None or positions is not None
    if not parts:
        shape = (0, *src.frame_shape[:-2], w, w)
        return (np.zeros(shape, np.float32), np.zeros((0, 2), np.int64), n_found,
                np.zeros((0, 2), np.float64) if with_positions else None, n_masked)
    # Put each tile's patches straight into their places in the frame's order (one output array;
    # each tile's block is freed once copied, so the peak is about twice the frame's patches, not thrice).
    rank = np.empty(sum(len(k) for k in keys), dtype=np.int64)
    rank[np.argsort(np.concatenate(keys), kind="stable")] = np.arange(len(rank))
    out = np.empty((len(rank), *parts[0].shape[1:]), dtype=np.float32)
    start = 0
    for i in range(len(parts)):
        block, parts[i] = parts[i], None
        out[rank[start:start + len(block)]] = block
        start += len(block)
    centers_out = np.empty((len(rank), 2), dtype=np.int64)
    centers_out[rank] = np.concatenate(cents)
    positions_out = None
    if with_positions:
        positions_out = np.empty((len(rank), 2), dtype=np.float64)
        positions_out[rank] = np.concatenate(posits)
    return out, centers_out, n_found, positions_out, n_masked


# ============================================================================ chunked pipeline
def _find_spec(coords, stride) -> str:
    if coords is not None and stride is not None:
        raise AffineVAEError("give either coordinates or a grid stride, not both")
    return "coords" if coords is not None else "grid" if stride is not None else "detect"


#: The detection's threshold on a sparse field (asinh-stretched frames), in (smoothed) noise sigma above the
#: frame's median, with no fraction of the range beside it (:func:`default_threshold`): on an audit's six
#: sparse fields of spots and two fields of 250 galaxies among saturated stars, precision 0.99-1.00 and recall
#: 0.97-1.00, where 0.3 of the range (and the floor 3) lost the faint ones after the default smoothing
#: (recall 0.27-0.94) and found noise maxima without it (`benchmarks/EXPERIMENTS.md`, "Detection on sparse fields").
SPARSE_NOISE_FLOOR = 5.0


def sparse_field(source) -> bool:
    """Whether an open stack ``source`` is a sparse field: its pixels are asinh-stretched
    (:attr:`~affinevae.data.stacks.FrameSource.pixel_scaling` of kind 'asinh': a few bright sources held
    the range: a sky with stars, a sparse fluorescence field)."""
    scaling = getattr(source, "pixel_scaling", None)
    return scaling is not None and scaling.kind == "asinh"


def default_threshold(source, noise_floor: Optional[float] = None) -> float:
    """The detection's relative threshold (:func:`~affinevae.data.objects.detect_objects`) when none is
    given, for an open stack ``source``: 0 on a sparse field (:func:`sparse_field`), where the noise floor
    alone decides (:data:`SPARSE_NOISE_FLOOR`, or the ``noise_floor`` given), else
    :data:`~affinevae.data.objects.DETECT_THRESHOLD` (0.3 of the way from the frame's minimum to its
    maximum), also on a sparse field whose floor is turned off (``noise_floor`` 0: no threshold at all
    would keep every local maximum)."""
    if noise_floor is not None and noise_floor <= 0:
        return DETECT_THRESHOLD
    return 0.0 if sparse_field(source) else DETECT_THRESHOLD


def default_noise_floor(source) -> float:
    """The detection's noise floor (:func:`~affinevae.data.objects.detect_objects`) for an open stack
    ``source``: :data:`SPARSE_NOISE_FLOOR` (5 noise sigma above the median) on a sparse field
    (:func:`sparse_field`: 0.3 of the range can lie in the noise, or above faint objects), else 0 (off: a
    dense lattice's fine structure would count as noise)."""
    return SPARSE_NOISE_FLOOR if sparse_field(source) else 0.0


def detection_levels(source, threshold: Optional[float] = None, noise_floor: Optional[float] = None,
                     absolute: bool = False) -> tuple[float, float]:
    """``(threshold, noise_floor)`` the detection uses on an open stack ``source``: the ones given, else
    :func:`default_threshold` (given the floor it goes with; a pixel value of
    :data:`~affinevae.data.objects.DETECT_THRESHOLD` with ``absolute``) and :func:`default_noise_floor`."""
    floor = default_noise_floor(source) if noise_floor is None else noise_floor
    if threshold is None:
        threshold = DETECT_THRESHOLD if absolute else default_threshold(source, floor)
    return threshold, floor


#: The smallest central crop (pixels a side) :func:`detection_check` judges: below it a noisy lattice's
#: spectrum has too few cells to tell from objects placed at random (128 x 128: hexagonal lattices 41-56).
CHECK_MIN_SIDE = 256
# The side of the first frame's central crop detection_check reads at most (pixels).
_CHECK_CROP = 1024
#: :func:`detection_check` advises the sparse field's threshold when more than this share of the objects
#: found at the default threshold stand below its noise floor (noise peaks on a sparse field) ...
NOISE_PEAK_SHARE = 0.5
#: ... or when more than this share of those the noise floor alone keeps stand under the default threshold
#: (faint objects beside bright ones).
FAINT_SHARE = 0.2


@dataclasses.dataclass(frozen=True)
class DetectionCheck:
    """What :func:`detection_check` measured on the first frame of a stack (its central crop).

    Attributes:
        found: objects found there at the default threshold (:data:`~affinevae.data.objects.DETECT_THRESHOLD`
            of the range, no noise floor).
        below_floor: how many of those stand less than :data:`SPARSE_NOISE_FLOOR` (smoothed) noise sigma
            above the frame's median.
        floor_only: objects the noise floor alone finds (threshold 0, floor :data:`SPARSE_NOISE_FLOOR`).
        faint: how many of those the default threshold drops.
        periodicity: :func:`~affinevae.data.objects.frame_periodicity` of the crop.
        region: the part of the frame searched, in words ('frame 0', or its central crop).
    """

    found: int
    below_floor: int
    floor_only: int
    faint: int
    periodicity: float
    region: str = "frame 0"

    @property
    def lattice(self) -> bool:
        """Whether the frame is periodic (:data:`~affinevae.data.objects.PERIODIC_RATIO`): its atoms stand
        within the noise estimate, which takes the lattice's structure for noise, so no advice applies."""
        return self.periodicity >= PERIODIC_RATIO

    @property
    def advice(self) -> Optional[str]:
        """One sentence for the user when the frame does not look like a lattice and either more than
        :data:`NOISE_PEAK_SHARE` of the objects found are below the noise floor or more than
        :data:`FAINT_SHARE` of those the floor finds were dropped; else None. It names the command
        line's options (:meth:`advice_for` names others)."""
        return self.advice_for(f"--threshold 0 --noise-floor {SPARSE_NOISE_FLOOR:g}")

    def advice_for(self, remedy: str) -> Optional[str]:
        """:attr:`advice` with ``remedy`` (the settings that give threshold 0 and the noise floor
        :data:`SPARSE_NOISE_FLOOR`, as the caller's interface spells them) in place of the command line's."""
        if self.lattice or not self.found:
            return None
        noise = self.below_floor / self.found
        faint = self.faint / self.floor_only if self.floor_only else 0.0
        if noise > NOISE_PEAK_SHARE:
            what = (f"{noise:.0%} of the {self.found} objects found in {self.region} stand less than "
                    f"{SPARSE_NOISE_FLOOR:g} noise sigma above its median: on a sparse field (spots or particles on an "
                    "empty background) they are noise peaks")
        elif faint > FAINT_SHARE:
            what = (f"{self.faint} of the {self.floor_only} objects standing {SPARSE_NOISE_FLOOR:g} noise sigma above "
                    f"the median of {self.region} lie below 0.3 of its range: on a sparse field they are faint "
                    "objects left out")
        else:
            return None
        return f"{what}, and {remedy} keeps the objects above the noise; on a dense field of objects, keep the default"


def detection_check(source, window: int, min_distance: Optional[int] = None, sigma: Optional[float] = None,
                    key: Optional[str] = None) -> Optional[DetectionCheck]:
    """How the default detection fares on the first frame of ``source`` against a sparse field's
    threshold, for the ``patches`` command's advice (:attr:`DetectionCheck.advice`).

    The frame's central crop of at most 1024 x 1024 pixels is smoothed once and its local maxima found
    once (``min_distance`` and ``sigma`` pixels, None: as :func:`iter_patches` takes them for ``window``);
    their heights tell which the default relative threshold keeps and which the noise floor alone at
    :data:`SPARSE_NOISE_FLOOR` keeps. On an audit's sparse fields of spots and particle micrographs the
    default found noise peaks (precision 0.01-0.06) or dropped faint spots (recall 0.68) where the floor
    alone gave precision and recall 0.98-1.00; on dense fields (lattices, atoms placed at random) the floor
    loses most atoms, so the choice is left to the user (``benchmarks/EXPERIMENTS.md``, "Detection on
    sparse fields").

    Args:
        source: anything :func:`open_stack` accepts. window: the patch size (pixels).
        min_distance: pixels. sigma: pixels (0: none). key: as :func:`open_stack`.

    Returns:
        :class:`DetectionCheck`, or None on a sparse field whose floor is already the default
        (:func:`sparse_field`), where the crop is smaller than :data:`CHECK_MIN_SIDE` a side (too small to
        tell a lattice), or where the frame is constant.
    """
    min_distance = patch_min_distance(window) if min_distance is None else min_distance
    sigma = patch_smoothing(window) if sigma is None else sigma
    src = open_stack(source, key=key)
    try:
        h, w = src.image_shape
        if sparse_field(src) or min(h, w) < CHECK_MIN_SIDE:
            return None
        rows, cols, region = central_crop((h, w), _CHECK_CROP)
        crop = src.read_region(0, rows, cols)
    finally:
        if src is not source:
            src.close()
    raw, img = smoothed_pair(crop, sigma)
    level = noise_level(*level_samples(raw, img, level_step(raw.shape)), sigma)
    lo, hi = float(img.min()), float(img.max())
    if not level[1] > 0 or not hi > lo:
        return None
    # every local maximum of the smoothed crop above its minimum; a threshold only keeps the higher ones
    maxima = detect_objects(img, min_distance, 0.0)
    height = img[maxima[:, 0], maxima[:, 1]]
    cut = level[0] + SPARSE_NOISE_FLOOR * level[1]         # the noise floor alone
    default_cut = lo + DETECT_THRESHOLD * (hi - lo)        # the default: 0.3 of the range
    found, floor_only = height > default_cut, height > max(lo, cut)
    return DetectionCheck(found=int(found.sum()), below_floor=int((found & ~floor_only).sum()),
                          floor_only=int(floor_only.sum()), faint=int((floor_only & ~found).sum()),
                          periodicity=frame_periodicity(raw), region=region)


#: How :func:`iter_patches` treats the frames' background: 'auto' flattens them where one of up to five evenly spaced
#: frames' background is uneven (:func:`checked_frames`, :func:`background_check`), 'off' never; a number of pixels
#: flattens with boxes of that side.
BACKGROUND_MODES = ("auto", "off")
# The side of the first frame's central crop background_check reads at most (pixels).
_BACKGROUND_CROP = 2048


@dataclasses.dataclass(frozen=True)
class BackgroundCheck:
    """What :func:`background_check` measured on the first frame of a stack (its central crop).

    Attributes:
        box: the box side (pixels) the background was estimated with.
        variation: its surface's highest level less its lowest over the crop, in units of the (smoothed) pixel
            noise the detection's noise floor uses (:func:`~affinevae.data.objects.noise_level`).
        scatter: the boxes' root-mean-square scatter about the surface, in the same units
            (:attr:`~affinevae.data.background.Background.scatter`).
        region: the part of the frame measured, in words.
    """

    box: int
    variation: float
    scatter: float = 0.0
    region: str = "frame 0"

    @property
    def uneven(self) -> bool:
        """Whether the background's surface varies by more than
        :data:`~affinevae.data.background.BACKGROUND_VARIATION` noise sigma (enough to move which objects a
        threshold keeps: a 1-sigma ramp of the raw pixels is 2-9 smoothed sigma) and by at least
        :data:`~affinevae.data.background.SMOOTH_RATIO` times the boxes' scatter about it (a smooth gradient,
        not the box-to-box light of dense or extended objects), the boxes scattering about it by less than
        :data:`~affinevae.data.background.MAX_SCATTER` sigma (a surface that does not follow the background
        would leave structure as large as an uneven background's)."""
        return (self.variation > BACKGROUND_VARIATION and self.variation >= SMOOTH_RATIO * self.scatter
                and self.scatter < MAX_SCATTER)

    def sentence(self, off: str = "--background off", force: Optional[str] = None) -> str:
        """One line for the user saying what was measured and chosen (``off``: how the caller's interface
        turns the flattening off; ``force``: how it flattens anyway, None: ``--background BOX``)."""
        if self.uneven:
            return (f"the background of {self.region} (a smooth surface through its {self.box}-pixel boxes) varies "
                    f"by {self.variation:.1f} noise sigma: every frame is flattened (its own surface "
                    f"subtracted) before objects are found and cut ({off} keeps the frames as they are)")
        force = f"--background {self.box}" if force is None else force
        tail = f"; {force} flattens it anyway" if self.variation > BACKGROUND_VARIATION else ""
        return (f"the background of {self.region} (a smooth surface through its {self.box}-pixel boxes) varies "
                f"by {self.variation:.1f} noise sigma, its boxes by {self.scatter:.1f} about it: left as it is{tail}")


def background_check(source, window: int, sigma: Optional[float] = None, box: Optional[int] = None,
                     key: Optional[str] = None, frame: int = 0) -> Optional[BackgroundCheck]:
    """How uneven the background of one frame of ``source`` (``frame``, default the first) is, for
    :func:`iter_patches`' 'auto' (:func:`resolve_background`).

    The frame's central crop of at most 2048 x 2048 pixels is cut into boxes of ``box`` pixels (None:
    :func:`~affinevae.data.background.background_box` of the window, four windows) and its background
    estimated there (:func:`~affinevae.data.background.frame_background`: a quadratic surface through the boxes);
    the surface's variation and the boxes' scatter about it are measured in the pixel noise after the detection's
    smoothing ``sigma`` (None: :func:`patch_smoothing` of the window), the unit of the noise floor. Measured
    (``benchmarks/EXPERIMENTS.md``, "Uneven backgrounds"): flat fields of spots, particles, lattices, atoms placed
    at random and galaxies 0.0-2.0; a ramp or a vignette of 3 raw noise sigma 4.8-52, of 10 sigma 16-104.

    Args:
        source: anything :func:`open_stack` accepts. window: the patch size (pixels).
        sigma: pixels (0: none). box: pixels. key: as :func:`open_stack`. frame: the frame's index.

    Returns:
        :class:`BackgroundCheck`, or None where the crop holds fewer than
        :data:`~affinevae.data.background.MIN_BOXES` boxes along a side (the background cannot be told from
        the objects) or has no noise (a rendering, a constant frame).
    """
    sigma = patch_smoothing(window) if sigma is None else sigma
    box = background_box(window) if box is None else box
    src = open_stack(source, key=key)
    try:
        h, w = src.image_shape
        if min(h, w) < MIN_BOXES * box:
            return None
        rows, cols, region = central_crop((h, w), _BACKGROUND_CROP, frame)
        prev = src.background_box
        src.use_background(None)
        try:
            crop, holes = src.read_region_masked(frame, rows, cols)  # (NaN pixels: refused unless filled)
            finite = ~holes
        finally:
            src.use_background(prev)
    finally:
        if src is not source:
            src.close()
    ch, cw = crop.shape[-2:]
    if min(ch, cw) < MIN_BOXES * box:
        return None
    raw, img = smoothed_pair(crop, sigma)
    # pixels that were NaN (filled, use_fill_nan) are left out of the noise and the boxes, as the flattening
    # leaves them out (a filled region has no noise, and a step at its edge)
    fin = finite if finite.ndim == 2 else finite.all(axis=0)
    values, details = level_samples(raw if fin.all() else np.where(fin, raw, np.nan), img, level_step(raw.shape))
    noise = noise_level(values, details[np.isfinite(details)], sigma)[1]
    if not noise > 0:
        return None
    gapped = np.where(finite, crop, np.nan) if not finite.all() else crop
    bg = frame_background(lambda rows, cols: gapped[..., rows, cols], (ch, cw), box)
    return BackgroundCheck(box=int(box), variation=bg.variation / noise, scatter=bg.scatter / noise, region=region)


#: How many frames, evenly spaced from the first to the last, 'auto' checks at most (:func:`checked_frames`).
CHECKED_FRAMES = 5


def checked_frames(n_frames: int) -> list[int]:
    """The frames :func:`resolve_background`'s 'auto' checks in a stack of ``n_frames``: at most
    :data:`CHECKED_FRAMES` evenly spaced from the first to the last (0, a quarter, the middle, three
    quarters, the last), in order."""
    return sorted({round(i * (n_frames - 1) / (CHECKED_FRAMES - 1)) for i in range(CHECKED_FRAMES)})


def resolve_background(source, window: int, background: Union[None, str, int] = "auto",
                       sigma: Optional[float] = None) -> tuple[Optional[int], Optional[BackgroundCheck]]:
    """The box (pixels) :func:`iter_patches` flattens the frames of an open stack ``source`` with, or None.

    Args:
        background: 'auto' (:func:`background_check` of up to five evenly spaced frames, :func:`checked_frames`,
            from the first to the last: every frame is
            flattened where one of them is uneven, since flattening a flat frame changes nothing measurable; a
            source already flattened, :meth:`~affinevae.data.stacks.FrameSource.use_background`, keeps its
            box), 'off' or None (never), or a box side in pixels (always).
        window, sigma: as :func:`background_check`.

    Returns:
        ``(box, check)``: the box or None, and the check 'auto' decided by (the first uneven frame's, else the
        one whose background varies most; None otherwise).

    Raises:
        AffineVAEError: a mode that is none of these, or a box under 4 pixels or larger than the frames.
    """
    if background is None or (isinstance(background, str) and background == "off"):
        return None, None
    if isinstance(background, str):
        if background not in BACKGROUND_MODES:
            raise AffineVAEError(f"background must be 'auto', 'off' or a box side in pixels, got {background!r}")
        if source.background_box is not None:
            return source.background_box, None
        n, checks, chosen = source.n_frames, [], None
        # The checks read the frames unflattened, and their scaling warns as it is taken; when the frames are then
        # flattened it is taken again from the flattened values and warns again: the first warnings are dropped.
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            for f in checked_frames(n):  # the first uneven one decides
                check = background_check(source, window, sigma, frame=f)
                if check is not None and check.uneven:
                    chosen = check
                    break
                checks += [check] if check is not None else []
        if chosen is not None and source.given_scaling is None:
            return chosen.box, chosen
        for w in said:  # left as they are (or a run's scaling, not taken again): said once, as without the check
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if chosen is not None:
            return chosen.box, chosen
        return None, max(checks, key=lambda c: c.variation, default=None)
    return check_box(background, source.image_shape, "background box"), None


def check_smoothing(sigma: Optional[float], window: int, name: str = "sigma") -> None:
    """Refuse a detection smoothing ``sigma`` (pixels; None: the default, 0: none) that is not a finite number >= 0 or is
    wider than the ``window`` (pixels): the smoothing must stay below the objects' size (a huge one would
    only spend minutes blurring the frames away), in one line naming ``name``."""
    if sigma is None:
        return
    if isinstance(sigma, (bool, np.bool_)) or not isinstance(sigma, (int, float, np.integer, np.floating)) \
            or not (np.isfinite(sigma) and sigma >= 0):
        raise AffineVAEError(f"{name} must be a number >= 0 pixels (the detection's smoothing), got {sigma!r}")
    if sigma > window:
        raise AffineVAEError(f"{name} {float(sigma):g} pixels is wider than the window ({window} pixels): the "
                             "detection's smoothing must stay below the objects' size")


#: The detection's Gaussian smoothing when none is given, as a fraction of the window
#: (:func:`patch_smoothing`).
SMOOTHING_FRACTION = 1.0 / 16.0


def patch_smoothing(window: int) -> float:
    """The detection's Gaussian smoothing (pixels) when none is given (``patches --sigma``,
    :func:`iter_patches`' ``sigma`` None): a sixteenth of the ``window`` (pixels), about a third of an
    atom's width on lattices cut with windows of two spacings, half an object's width for spots cut
    with windows of eight widths. Measured on ``synthetic_micrograph`` lattices (square and hexagonal,
    atoms 3-8 px apart, noise 0.05-0.3 of an atom's peak) it finds what no smoothing found (precision and
    recall the same within 0.02 or better: atoms 4 px apart at noise 0.3, 0.95 / 0.85 -> 0.97 / 0.87 square,
    0.96 / 0.83 -> 0.97 / 0.84 hexagonal), and on sparse fields of 60
    Gaussian spots in 512 x 512 pixels of unit noise (spots 4 px wide, peaks 5-10: 0.07 / 0.93 ->
    0.96 / 0.93; 2 px wide, peak 10: 0.02 / 0.98 -> 1.00 / 0.98) it keeps noise maxima from counting as
    objects. Fainter or smaller spots need more (``--sigma`` about the spots' width, and ``--noise-floor``)."""
    w = as_number(window)
    if w is None or not (np.isfinite(w) and w >= 1):
        raise AffineVAEError(f"window must be a number >= 1 pixels, got {window!r}")
    return float(w) * SMOOTHING_FRACTION


def patch_min_distance(window: int) -> int:
    """The detection distance (pixels) when none is given (``patches --min-distance``,
    :func:`iter_patches`' ``min_distance``): a quarter of the ``window`` (pixels), at least 1. A
    local maximum is kept only if it is the brightest pixel within that distance, so the distance
    must stay under half the spacing of neighbouring objects, or a dim object beside bright ones is
    lost (atoms 8 px apart, ``window`` 16: 4 keeps every atom where the former fixed 5 lost 25-66 %
    of the half-bright ones); a window is usually 1.5-2 object spacings wide."""
    return max(1, int(window) // 4)


#: Patches are re-centred on their objects' brightness (``centre`` 'auto' of :func:`iter_patches`, and
#: ``map``'s symmetry estimate) only when those centres lie at least this far (pixels, the median) from
#: where the objects were found: lobed particles cut around a lobe (7-9 px), not atoms cut at their peak
#: (their centre is where they were cut; in windows too narrow to show the lattice, every order then scores
#: alike on round atoms, and a re-centred estimate would be arbitrary).
MASS_CENTRE_MIN_SHIFT = 2.0


def mass_centred(patches: np.ndarray, offsets: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """Patches moved so that each object's brightness centre (:func:`mass_offsets`, or the (N, 2) ``offsets``
    given, pixels) lies at the window's centre pixel ``w // 2``: (N, C, w, w) float64 (bilinear, edges
    continued), or None for patches of another shape. ``map``'s symmetry estimate reads lobed objects so
    (patch sets cut before :func:`iter_patches` re-centred them)."""
    from scipy import ndimage

    if offsets is None:
        offsets = mass_offsets(patches)
        if offsets is None:
            return None
    p = np.asarray(patches, dtype=np.float64)
    p = p[:, None] if p.ndim == 3 else p
    if p.ndim != 4:
        return None
    n, ch, h, w = p.shape
    offsets = real_array(offsets, "mass_centred: offsets", what="(N, 2) (row, col) pixels")
    if offsets.shape != (n, 2):
        raise AffineVAEError(f"mass_centred: offsets must be ({n}, 2) (row, col) pixels for {n} patches, got shape "
                             f"{offsets.shape}")
    dy, dx = offsets[:, 0], offsets[:, 1]  # every patch sampled at its own offset in one call: (4, N, C, h, w)
    grid = np.indices((n, ch, h, w), dtype=np.float64)
    grid[2] += dy[:, None, None, None]
    grid[3] += dx[:, None, None, None]
    return ndimage.map_coordinates(p, grid, order=1, mode="nearest")


#: Where :func:`iter_patches` centres each detected object's patch: 'auto' (re-centred on the objects' brightness
#: where :func:`centring_check` finds scattered objects whose brightness centres lie off their peaks), 'peak' (the
#: maximum found, always), 'mass' (the brightness centre, always).
CENTRE_MODES = ("auto", "peak", "mass")
#: 'auto' re-centres only objects that, re-centred, lie at least this many windows from their nearest neighbour
#: (the median; :attr:`CentringCheck.isolation`): fields of lobed particles 1.05-1.8, atoms placed at random 10 px
#: apart and cut with windows of 30-40 px 0.39-0.41 (their brightness centres lie between the atoms).
CENTRING_ISOLATION = 0.6
#: ... and whose brightness centres lie at least this share of the window from their peaks (the median; at
#: least :data:`MASS_CENTRE_MIN_SHIFT` px): lobed particles 0.12-0.28 of it, an audit's field of exponential
#: galaxies cut with 64-px windows 0.05 (faint neighbours the detection left out pull the centre).
CENTRING_SHIFT_FRACTION = 0.1
# The side of a checked frame's central crop centring_check reads at most (pixels).
_CENTRING_CROP = 1024


@dataclasses.dataclass(frozen=True)
class CentringCheck:
    """What :func:`centring_check` measured on the objects detected in up to five evenly spaced frames.

    Attributes:
        shift: the median distance (pixels) from the peaks found to their objects' brightness centres
            (:func:`mass_offsets`); NaN where the first frame is periodic (a lattice: not measured).
        scattered: whether the objects found lie scattered rather than on a lattice (:func:`scattered_objects`).
        periodicity: the first frame's :func:`~affinevae.data.objects.frame_periodicity` (a lattice: at least
            :data:`~affinevae.data.objects.PERIODIC_RATIO`, also where the detection, with a minimum distance
            above half the atoms' spacing, found only some atoms, which then lie scattered).
        objects: how many objects were found there.
        frames: how many frames were read (their central crops of at most 1024 x 1024 pixels).
        window: the patch size (pixels).
        isolation: the median distance from each object, re-centred and merged as :func:`iter_patches` would
            cut it, to its nearest neighbour in its frame, in windows (inf with none; NaN where not measured):
            isolated particles 1 or more, a dense field of atoms placed at random and cut with windows of three
            or four spacings about 0.4 (their brightness centres lie between the atoms).
    """

    shift: float
    scattered: bool
    periodicity: float
    objects: int
    frames: int = 1
    isolation: float = float("inf")
    window: int = 0

    @property
    def least_shift(self) -> float:
        """The median shift (pixels) from which 'auto' re-centres: :data:`MASS_CENTRE_MIN_SHIFT`, or
        :data:`CENTRING_SHIFT_FRACTION` of the window where that is more."""
        return max(MASS_CENTRE_MIN_SHIFT, CENTRING_SHIFT_FRACTION * self.window)

    @property
    def recentre(self) -> bool:
        """Whether 'auto' re-centres: scattered objects whose brightness centres lie a median
        :attr:`least_shift` pixels or more from their peaks (lobed objects, a dumbbell or a trimer,
        detected on a lobe; cells or particles with a bright spot off their centre), on frames that are not
        periodic, and that once re-centred lie apart (:attr:`isolation` at least :data:`CENTRING_ISOLATION`). A
        lattice's atoms and a dense field's keep their peaks: in a window wider than their spacing the neighbours
        pull the brightness centre."""
        return (self.scattered and self.periodicity < PERIODIC_RATIO and self.shift >= self.least_shift
                and self.isolation >= CENTRING_ISOLATION)

    def sentence(self, keep: str = "--centre peak") -> str:
        """One line saying what was measured and chosen, naming ``keep``, the setting that keeps the peaks."""
        if self.recentre:
            return (f"the objects' brightness centres lie a median {self.shift:.1f} px from the peaks found (objects "
                    f"detected on a lobe or a bright spot off their centre): each patch is cut around its object's "
                    f"brightness centre, peaks of one object merged ({keep} cuts around the peaks)")
        return f"the objects' brightness centres lie a median {self.shift:.1f} px from the peaks found: patches cut there"


def _re_centred(patches: np.ndarray, centers: np.ndarray, frames: np.ndarray,
                min_distance: int, offsets: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Brightness centres (:func:`mass_offsets`) of the objects cut as ``patches`` (N, w, w) / (N, C, w, w) around
    ``centers`` (N, 2) int pixels of ``frames`` (N,), and which to keep: of the centres that fall within
    ``min_distance`` pixels of each other in one frame (the lobes of one particle), the one whose patch is brightest
    at its centre (``offsets``: their :func:`mass_offsets`, when known). Returns ``(positions, keep)``: (N, 2)
    float64 pixels and (M,) sorted indices."""
    from scipy.spatial import cKDTree

    offsets = mass_offsets(patches) if offsets is None else offsets
    pos = np.asarray(centers, dtype=np.float64) + (0.0 if offsets is None else offsets)
    if len(pos) < 2:
        return pos, np.arange(len(pos))
    w = patches.shape[-1]
    # (the centre pixels only, then float64: a float64 copy of every patch cost 460 MB at 100 000 patches)
    peak = np.asarray(patches).reshape(len(pos), -1, w, w)[:, :, w // 2, w // 2].astype(np.float64).sum(1)
    pairs = cKDTree(frame_points(pos, frames, min_distance)[0]).query_pairs(float(min_distance), output_type="ndarray")
    keep = np.ones(len(pos), dtype=bool)
    if len(pairs):
        rank = np.empty(len(pos), dtype=np.int64)
        rank[np.lexsort((np.arange(len(pos)), -peak))] = np.arange(len(pos))  # brightest first, ties in order
        neighbours: dict[int, list[int]] = {}
        for a, b in pairs.tolist():
            neighbours.setdefault(a, []).append(b)
            neighbours.setdefault(b, []).append(a)
        for i in np.argsort(rank).tolist():  # greedy: a kept object removes its dimmer neighbours
            if keep[i]:
                for j in neighbours.get(i, ()):
                    if rank[j] > rank[i]:
                        keep[j] = False
    return pos, np.flatnonzero(keep)


def _mass_centres(cut: np.ndarray, centers: np.ndarray, frames: np.ndarray, min_distance: int,
                  image_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The objects cut as ``cut`` (N, w, w) / (N, C, w, w) around ``centers`` (N, 2) int pixels of ``frames`` (N,),
    moved onto their brightness centres and merged (:func:`_re_centred`), in frame, row, column order:
    ``(centers, positions, frames, merged)``, (M, 2) int64 and (M, 2) float64 pixels inside the
    ``image_shape`` (H, W), (M,) int64, and how many of the N were merged into another."""
    h, w = int(image_shape[-2]), int(image_shape[-1])
    c, side = np.asarray(centers, dtype=np.int64), cut.shape[-1]
    steps = np.arange(side) - side // 2  # pixels past the frame's border (cut as 'pad') are no brightness: NaN
    rows = (c[:, :1] + steps >= 0) & (c[:, :1] + steps < h)
    cols = (c[:, 1:] + steps >= 0) & (c[:, 1:] + steps < w)
    inside = rows[:, :, None] & cols[:, None, :]
    if not inside.all():
        cut = np.where(inside[:, None] if cut.ndim == 4 else inside, cut, np.float32(np.nan))
    pos, keep = _re_centred(cut, centers, frames, min_distance)
    pos = np.clip(pos[keep], 0.0, [h - 1.0, w - 1.0])
    fr = np.asarray(frames, dtype=np.int64)[keep]
    ce = np.rint(pos).astype(np.int64)
    order = np.lexsort((ce[:, 1], ce[:, 0], fr))
    return ce[order], pos[order], fr[order], int(len(centers) - len(keep))


def centring_check(source, window: int, min_distance: Optional[int] = None, threshold: Optional[float] = None,
                   absolute: bool = False, sigma: Optional[float] = None, noise_floor: Optional[float] = None,
                   key: Optional[str] = None) -> Optional[CentringCheck]:
    """Whether the detected objects of ``source`` should be cut around their brightness centres
    (:attr:`CentringCheck.recentre`), measured on up to five evenly spaced frames (:func:`checked_frames`; each
    frame's central crop of at most 1024 x 1024 pixels), detected as :func:`iter_patches` detects them; on a
    periodic first frame (a lattice, :func:`~affinevae.data.objects.frame_periodicity`) nothing more is read.

    Args:
        source: anything :func:`open_stack` accepts. window: the patch size (pixels).
        min_distance, threshold, absolute, sigma, noise_floor: the detection's (None: as :func:`iter_patches`
            takes them). key: as :func:`open_stack`.

    Returns:
        :class:`CentringCheck`, or None where those frames hold fewer than two objects with a whole window.
    """
    min_distance = patch_min_distance(window) if min_distance is None else min_distance
    sigma = patch_smoothing(window) if sigma is None else sigma
    src = open_stack(source, key=key)
    try:
        window = _check_window(window, src.image_shape, src.path)  # a frame smaller than it: said naming the file
        threshold, noise_floor = detection_levels(src, threshold, noise_floor, absolute)
        cuts, found, where, frames, periodicity = [], [], [], checked_frames(src.n_frames), 0.0
        for f in frames:
            rows, cols, _ = central_crop(src.image_shape, _CENTRING_CROP, f)
            crop = src.read_region(f, rows, cols)
            if f == frames[0] and min(crop.shape[-2:]) >= 16:
                periodicity = frame_periodicity(crop)
                if periodicity >= PERIODIC_RATIO:  # a lattice's atoms keep their peaks
                    return CentringCheck(shift=float("nan"), scattered=False, periodicity=periodicity, objects=0,
                                         frames=1, isolation=float("nan"), window=window)
            centers, _ = find_objects(crop, min_distance, threshold, absolute, sigma, noise_floor=noise_floor)
            patches, keep = extract_patches(crop[None], centers, window, edge="drop")
            cuts.append(patches)
            found.append(centers[keep])
            where.append(np.full(len(keep), f, dtype=np.int64))
    finally:
        if src is not source:
            src.close()
    centers, fr = np.concatenate(found).reshape(-1, 2), np.concatenate(where)
    if len(centers) < 2:
        return None
    from scipy.spatial import cKDTree

    cut = np.concatenate(cuts)
    offsets = mass_offsets(cut)
    shift = 0.0 if offsets is None else float(np.median(np.hypot(offsets[:, 0], offsets[:, 1])))
    pos, kept = _re_centred(cut, centers, fr, min_distance, offsets)  # the objects as they would be cut
    pts, span = frame_points(pos[kept], fr[kept])
    nn = cKDTree(pts).query(pts, k=2)[0][:, 1] if len(pts) > 1 else np.full(1, np.inf)
    nn = nn[nn < 0.75 * span]  # objects alone in their frame have no neighbour (the nearest is another frame's)
    isolation = float(np.median(nn)) / window if len(nn) else float("inf")
    return CentringCheck(shift=shift, scattered=scattered_objects(object_arrangement(centers, fr)),
                         periodicity=periodicity, objects=len(centers), frames=len(frames), isolation=isolation,
                         window=window)


def resolve_centring(source, window: int, centre: str = "auto", **detection: Any) -> tuple[str, Optional[CentringCheck]]:
    """How :func:`iter_patches` centres the detected objects of an open stack ``source``: ``('mass' | 'peak', check)``.

    Args:
        centre: 'auto' (:func:`centring_check`: 'mass' where it re-centres, else 'peak'), 'peak' or 'mass'.
        window, **detection: as :func:`centring_check` (min_distance, threshold, absolute, sigma, noise_floor).

    Returns:
        The mode, and the check 'auto' decided by (None for a mode given, or too few objects to tell).

    Raises:
        AffineVAEError: a mode that is none of :data:`CENTRE_MODES`.
    """
    if not isinstance(centre, str) or centre not in CENTRE_MODES:
        raise AffineVAEError(f"centre must be one of {', '.join(CENTRE_MODES)}, got {centre!r}")
    if centre != "auto":
        return centre, None
    check = centring_check(source, window, **detection)
    return ("mass" if check is not None and check.recentre else "peak"), check


def iter_patches(source, window: int, *, coords: Union[None, str, Path, tuple] = None, stride: Optional[int] = None,
                 min_distance: Optional[int] = None, threshold: Optional[float] = None, absolute: bool = False,
                 sigma: Optional[float] = None, noise_floor: Optional[float] = None, edge: str = "drop",
                 chunk_frames: int = 16, progress: bool = False, key: Optional[str] = None,
                 tile: Optional[int] = DEFAULT_TILE, background: Union[None, str, int] = "auto",
                 drop_masked: bool = False, centre: str = "auto") -> Iterator[PatchSet]:
    """Cut patches chunk by chunk of frames; memory is bounded by ``chunk_frames`` frames.

    A frame with a side longer than ``tile`` pixels is read and searched tile by tile
    (:func:`tile_grid`; the memory bound is then a tile plus the frame's patches), giving the
    same centres and patches as the whole frame; ``tile=None`` never tiles.

    Objects come from ``coords`` (a file for :func:`read_coordinates`, a ``(frames, centers)``
    pair, or an (N, 2) (row, col) / (N, 3) (frame, row, col) array of pixels), a grid with step ``stride`` (pixels), or :func:`~affinevae.data.objects.detect_objects` on each frame
    (``min_distance``, ``threshold``, ``absolute``, ``sigma``, ``noise_floor``; ``min_distance`` None:
    :func:`patch_min_distance` of the window, as the ``patches`` command takes it; ``sigma`` None:
    :func:`patch_smoothing` of the window, 0 for none; ``threshold`` None: :func:`default_threshold` of the
    source (a pixel value of 0.3 with ``absolute``); ``noise_floor`` None: :func:`default_noise_floor`
    of the source).

    ``background`` (:func:`resolve_background`): 'auto' (default) flattens every frame
    (:meth:`~affinevae.data.stacks.FrameSource.use_background`, boxes of four windows) where one of up to five
    evenly spaced frames' (:func:`checked_frames`) background surface varies by more than :data:`~affinevae.data.background.BACKGROUND_VARIATION` noise sigma
    and follows its boxes (:attr:`BackgroundCheck.uneven`), and says so in one warning; 'off' or None never; a
    number of pixels always, with boxes of that side. Objects are then found and cut on the flattened frames,
    and the patch sets record the box.

    ``drop_masked``: leave out every patch whose window holds a pixel stored as NaN or infinite (a masked
    region, a mosaic's empty border, a detector's gap; :func:`touches_mask`), counted in each
    :attr:`PatchSet.n_masked`; the frames are read with those pixels filled
    (:meth:`~affinevae.data.stacks.FrameSource.use_fill_nan`) for the detection, as under ``fill_nan``.
    Without it a masked pixel is refused unless the source fills it, and a filled patch is kept.

    ``centre`` (:func:`resolve_centring`): where a detected object's patch is cut. 'auto' (default) cuts around
    the objects' brightness centres (:func:`mass_offsets`) where :func:`centring_check` of up to five evenly
    spaced frames finds objects scattered on a frame that is not periodic, lying apart once re-centred, whose
    centres lie a median :attr:`CentringCheck.least_shift` or more from the peaks found (lobed particles found
    on a lobe: 7-9 px off in 40-px windows, one peak per lobe), and says so in one warning; else around the
    peaks. 'mass' always (also for given coordinates: rough picks; the patches then come in frame, row, column
    order), 'peak' never. Re-centred peaks that fall within ``min_distance`` of each other in one frame are one
    object (the brightest peak's, :attr:`PatchSet.n_merged` counts the others), and the patch sets are marked
    :attr:`PatchSet.recentred`; pixels past the frame's border count for nothing in the brightness centre. Grid
    windows are never moved.

    Args:
        source: anything :func:`open_stack` accepts.
        window: patch size in pixels. edge: 'drop', 'pad' or 'reflect' (see :func:`extract_patches`).
        chunk_frames: frames read per step. progress: show a tqdm bar over frames.
        tile: tile size in pixels (>= 2 * window), or None.

    Yields:
        One :class:`PatchSet` per chunk (possibly empty; one per frame when tiling), frame
        indices global, with the source's ``pixel_size``.

    Raises:
        AffineVAEError: an image smaller than the window, coordinates outside the image, bad options.
    """
    from tqdm.auto import tqdm

    mode = _find_spec(coords, stride)
    if edge not in EDGE_MODES:
        raise AffineVAEError(f"edge must be one of {', '.join(EDGE_MODES)}, got {edge!r}")
    chunk = check_int("chunk_frames", chunk_frames, 1)
    src = open_stack(source, key=key)
    bar = None
    before, filled = src.background_box, src.fill_nan
    try:
        if drop_masked and not filled:
            src.use_fill_nan()
        w = _check_window(window, src.image_shape, src.path)
        if min_distance is None:
            min_distance = patch_min_distance(w)
        if sigma is None and mode == "detect":
            sigma = patch_smoothing(w)
        tiled = tile is not None and max(src.image_shape) > check_int("tile", tile, 2 * w)
        if tiled:
            chunk = 1
        if mode == "coords":
            if not isinstance(coords, (tuple, str, Path)):  # an (N, 2) / (N, 3) array or nested list, as a file holds
                arr = real_array(coords, "coordinates", what="(N, 2) (row, col) or (N, 3) (frame, row, col) pixels")
                if arr.ndim != 2 or arr.shape[1] not in (2, 3):
                    raise AffineVAEError(f"coordinates must be (N, 2) (row, col) or (N, 3) (frame, row, col) pixels, "
                                         f"got shape {arr.shape}")
                coords = (np.zeros(len(arr)), arr) if arr.shape[1] == 2 else (arr[:, 0], arr[:, 1:])
            if isinstance(coords, tuple):
                if len(coords) != 2:
                    raise AffineVAEError(f"coordinates as a tuple must be (frames, centers), got {len(coords)} items")
                cf, cc = coords
                cwhere = "coordinates"
            else:
                cf, cc = read_coordinates(coords)
                cwhere = str(coords)
            given_centres = cc
            cc = check_coordinates(cf, cc, src.n_frames, src.image_shape, cwhere)  # first: whole frames, N of each
            cpos = real_array(given_centres, cwhere).reshape(-1, 2)
            cf = real_array(cf, cwhere).astype(np.int64)
            order = np.argsort(cf, kind="stable")
            cf, cc, cpos = cf[order], cc[order], cpos[order]
            bounds = np.searchsorted(cf, np.arange(0, src.n_frames + chunk, chunk))
        elif mode == "grid":
            gcent, gshape = grid_centers(src.image_shape, w, stride)
        else:
            check_int("min_distance", min_distance, 1)
            check_smoothing(sigma, w)
            threshold, noise_floor = detection_levels(
                src, threshold, None if noise_floor is None else check_noise_floor(noise_floor), absolute)
        box, check = resolve_background(src, w, background, sigma if mode == "detect" else patch_smoothing(w))
        if check is not None and check.uneven:
            said = check.sentence('background="off"')
            warnings.warn(f"{src.path}: {said}", stacklevel=user_stacklevel())
        src.use_background(box)
        if mode != "detect":
            resolve_centring(src, w, "peak" if centre == "auto" else centre)  # the mode checked, nothing measured
            if mode == "grid" and centre == "mass":
                raise AffineVAEError("centre='mass' moves detected objects or given coordinates onto their brightness "
                                     "centres; grid windows stay where the grid puts them")
            centring = "mass" if centre == "mass" else "peak"  # given positions are the user's: moved only when asked
        else:
            centring, ccheck = resolve_centring(src, w, centre, min_distance=min_distance, threshold=threshold,
                                                absolute=absolute, sigma=sigma, noise_floor=noise_floor)
            if ccheck is not None and ccheck.recentre:
                said = ccheck.sentence('centre="peak"')
                warnings.warn(f"{src.path}: {said}", stacklevel=user_stacklevel())
        moved = centring == "mass"
        detect_options = {"min_distance": min_distance, "threshold": threshold, "absolute": absolute, "sigma": sigma,
                          "noise_floor": noise_floor}
        # progress=True shows the bar on a terminal only (tqdm's disable=None), never in logs or pipes
        bar = tqdm(total=src.n_frames, unit="frame", disable=None if progress else True, desc="patches", leave=False)
        for k, s in enumerate(range(0, src.n_frames, chunk)):
            e = min(s + chunk, src.n_frames)
            if mode == "coords":
                fr, ce, pos = cf[bounds[k]:bounds[k + 1]], cc[bounds[k]:bounds[k + 1]], cpos[bounds[k]:bounds[k + 1]]
                if len(ce) == 0:  # nothing in these frames: do not even read them
                    bar.update(e - s)
                    continue
            if tiled:
                given = None if mode == "detect" else (gcent if mode == "grid" else ce)
                given_pos, merged = pos if mode == "coords" else None, None
                if moved:  # the objects found (or given) first, cut whole ('pad'), then cut around their centres
                    cut, found, _, _, _ = _tiled_frame(src, s, w, tile, "pad", given, detect_options, given_pos)
                    given, given_pos, _, merged = _mass_centres(cut, found, np.full(len(found), s, dtype=np.int64),
                                                                min_distance, src.image_shape)
                patches, kept, n_found, kept_pos, n_masked = _tiled_frame(
                    src, s, w, tile, edge, given, detect_options, given_pos, drop_masked)
                bar.update(e - s)
                yield PatchSet(patches, kept, np.full(len(kept), s, dtype=np.int64), w, src.image_shape,
                               src.n_frames, gshape if mode == "grid" else None,
                               int(stride) if mode == "grid" else None, n_found, src.pixel_size, kept_pos, box,
                               n_masked if drop_masked else None, src.filled, moved, merged)
                continue
            if drop_masked:  # the stored values read once: their holes too
                stack, holes = src.read_masked(s, e)
            else:
                stack = src.read(s, e)
            if mode == "grid":
                fr = np.repeat(np.arange(s, e, dtype=np.int64), len(gcent))
                ce, pos = np.tile(gcent, (e - s, 1)), None
            elif mode == "detect":
                found = [find_objects(fm, min_distance, threshold, absolute, sigma, noise_floor=noise_floor)
                         for fm in stack]  # per frame: (centres, sub-pixel positions)
                fr = np.concatenate([np.full(len(d), s + i, dtype=np.int64) for i, (d, _) in enumerate(found)])
                ce = np.concatenate([d for d, _ in found]).reshape(-1, 2)
                pos = np.concatenate([p for _, p in found]).reshape(-1, 2)
            merged = None
            if moved:
                cut, _ = extract_patches(stack, ce, w, fr, edge="pad", frame_offset=s)
                ce, pos, fr, merged = _mass_centres(cut, ce, fr, min_distance, src.image_shape)
            patches, keep = extract_patches(stack, ce, w, fr, edge=edge, frame_offset=s)
            n_masked = None
            if drop_masked:
                clean = ~touches_mask(holes.any(axis=1) if holes.ndim == 4 else holes, ce[keep], w, fr[keep],
                                      frame_offset=s)
                n_masked = int(len(clean) - clean.sum())
                patches, keep = patches[clean], keep[clean]
            bar.update(e - s)
            yield PatchSet(patches, ce[keep], fr[keep], w, src.image_shape, src.n_frames,
                           gshape if mode == "grid" else None, int(stride) if mode == "grid" else None, len(ce),
                           src.pixel_size, None if pos is None else pos[keep], box, n_masked, src.filled, moved, merged)
    finally:
        if bar is not None:
            bar.close()
        if src is not source:
            src.close()
        else:  # the caller's source reads as it did
            if src.background_box != before:
                src.use_background(before)
            if src.fill_nan != filled:
                src.use_fill_nan(filled)


def concat_chunks(parts: Sequence[Any]) -> Any:
    """Join per-chunk results of one dataclass type (in order), e.g. :class:`PatchSet` chunks.

    Every field holding a numpy array is per object and is concatenated along its first axis;
    ``n_found`` is summed (None counts 0), ``n_masked`` and ``n_merged`` too (None when every part's is None);
    every other field (window, image_shape, ...) is the first part's.
    """
    p0 = parts[0]
    counts = {"n_found": sum(p.n_found or 0 for p in parts)}
    for name in ("n_masked", "n_merged"):
        if hasattr(p0, name):
            given = [getattr(p, name) for p in parts if getattr(p, name) is not None]
            counts[name] = sum(given) if given else None
    if len(parts) == 1:  # nothing to join: no copy (a single huge frame's patches are not duplicated)
        return dataclasses.replace(p0, **counts)
    values = {}
    for f in dataclasses.fields(p0):
        v = getattr(p0, f.name)
        values[f.name] = np.concatenate([getattr(p, f.name) for p in parts]) if isinstance(v, np.ndarray) else v
    values.update(counts)
    return type(p0)(**values)


def _where(source) -> str:
    return "array" if isinstance(source, np.ndarray) else str(getattr(source, "path", source))


def nothing_found(source, parts: Sequence[Any], window: int, options: dict) -> AffineVAEError:
    """The error for a stack in which no patch was kept, given the per-chunk results ``parts``.

    ``parts`` are chunk results with ``n_found`` (:class:`PatchSet` or
    :class:`~affinevae.encoding.ObjectEncoding`); ``window`` the patch side in pixels; ``options`` those of
    :func:`iter_patches`.
    Says to lower the threshold when no object was found at all, else that every object lay
    too close to the edge. The advice names the settings, not one interface's spelling of them
    (``--threshold`` on the command line, ``threshold=`` in Python, the napari widget's field).
    """
    where = _where(source)
    found_any = any(p.n_found for p in parts)
    threshold, absolute = options.get("threshold"), options.get("absolute", False)
    floor = 0.0 if absolute else options.get("noise_floor")
    if floor is None or threshold is None:  # the defaults: what iter_patches took for this stack
        try:
            src = open_stack(source, key=options.get("key"))
            try:
                threshold, floor = detection_levels(src, threshold, floor, absolute)
            finally:
                if src is not source:
                    src.close()
        except AffineVAEError:
            floor = 0.0 if floor is None else floor
            threshold = DETECT_THRESHOLD if threshold is None else threshold
    if not found_any and not absolute and threshold <= 0:
        return AffineVAEError(f"{where}: no objects found even at threshold 0: no pixel rises above the frame's "
                              "minimum as a local maximum (a constant image?)"
                              + (f" or {floor:g} noise sigma above its median (noise floor 0 turns that off)"
                                 if floor else ""))
    if not found_any:
        what = f"{threshold:g}" + ("" if absolute else " of the range")
        what += f" and {floor:g} noise sigma above the median" if floor else ""
        return AffineVAEError(f"{where}: no objects found above threshold {what}; lower the threshold "
                              + ("(or the noise floor, the min distance / sigma)" if floor else
                                 "(or the min distance / sigma)"))
    masked = sum(p.n_masked or 0 for p in parts)
    if masked:
        return AffineVAEError(f"{where}: every patch was left out: {masked} of the objects' windows hold masked (NaN) "
                              "pixels (drop masked off keeps them, filled with the median)"
                              + (f", the others lie within {window // 2} pixels of the edge"
                                 if masked < sum(p.n_found or 0 for p in parts) else ""))
    return AffineVAEError(f"{where}: every object lies within {window // 2} pixels of the edge; pad the edges "
                          "(--edge pad, edge='pad' in Python) or use a smaller window")


def cut_patches(source, window: int, **options: Any) -> PatchSet:
    """All patches of ``source`` (a path or an open stack) in one :class:`PatchSet`, ``window`` x ``window`` pixels
    (see :func:`iter_patches` for options).

    Raises:
        AffineVAEError: when no object is found (suggesting a lower threshold) or every object was
            dropped at the edge, besides the errors of :func:`iter_patches`.
    """
    src = open_stack(source, key=options.get("key"))  # opened once: the error below reads what the cutting did
    try:
        parts = list(iter_patches(src, window, **{k: v for k, v in options.items() if k != "key"}))
        if sum(len(p) for p in parts) == 0:
            raise nothing_found(src, parts, window, options)
    finally:
        if src is not source:
            src.close()
    return PatchSet.concat(parts)
