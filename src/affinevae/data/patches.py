"""From large images and stacks to patches around objects, and streaming encoding.

The pieces, in the order a micrograph goes through them:

1. :func:`open_stack` opens a large image or a stack of frames *lazily*: ``.npy`` (memory
   mapped), ``.npz``, multi-page TIFF (read page by page), HDF5 ``file.h5:dataset`` (sliced),
   PNG/JPEG/GIF (multi-frame GIFs are stacks) and folders of such files (one frame per file,
   sorted by name). A movie is a stack of frames: give it as a multi-page TIFF, a frame folder,
   an ``.npy`` or an HDF5 dataset. :meth:`FrameSource.read` returns float32 frames
   (F, H, W) or (F, C, H, W) under the package's normalisation rule
   (:func:`~affinevae.data.imageset.normalise_images`), computed once for the whole stack.
2. :func:`detect_objects` finds bright objects as local maxima; :func:`read_coordinates`
   reads user coordinates instead.
3. :func:`extract_patches` cuts ``window`` x ``window`` patches around centres with one
   vectorised gather; :func:`grid_centers` lays out a sliding window on a regular grid.
4. :func:`iter_patches` / :func:`cut_patches` do 1-3 chunk by chunk of frames;
   :func:`iter_encode` / :func:`stream_encode` also encode each chunk with a model, so a
   stack larger than memory is mapped with memory bounded by the chunk size.

Conventions: centres are (row, col) in pixels, integer pixel indices; a patch around centre
(r, c) covers rows ``r - window // 2`` to ``r - window // 2 + window - 1`` (likewise columns),
so for an even ``window`` the centre pixel is at index ``window // 2`` of the patch. Angles
from models are radians, counter-clockwise on screen; shifts are (right, down) in units of
half the patch size (:mod:`affinevae.nn.affine`).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import AffineVAEError
from ..io import atomic_write

EDGE_MODES = ("drop", "pad", "reflect")
TIFF_EXTS = (".tif", ".tiff")
HDF5_EXTS = (".h5", ".hdf5", ".hdf")
PIL_EXTS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
FOLDER_EXTS = PIL_EXTS + TIFF_EXTS
_HDF5_SPEC = re.compile(r"^(.*?\.(?:h5|hdf5|hdf))(?::(.*))?$", re.IGNORECASE)


# ============================================================================ frame sources
class FrameSource:
    """Lazy access to the frames of a large image or stack.

    Subclasses implement :meth:`_read_raw`. Attributes:
        path: where the frames come from (for messages).
        n_frames: number of frames F.
        frame_shape: (H, W) for single-channel frames, (C, H, W) otherwise.
        dtype: the stored pixel dtype.
    """

    path: str
    n_frames: int
    frame_shape: tuple
    dtype: np.dtype

    def __init__(self) -> None:
        self._norm: Optional[tuple[str, float, float]] = None

    # ---- to implement
    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` as stored: (f, *frame_shape), channels first."""
        raise NotImplementedError

    # ---- public
    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of every frame, in pixels."""
        return tuple(int(v) for v in self.frame_shape[-2:])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        """C (1 for single-channel frames)."""
        return 1 if len(self.frame_shape) == 2 else int(self.frame_shape[0])

    def __len__(self) -> int:
        return self.n_frames

    def read_raw(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` (clipped to the stack) in their stored dtype, (f, *frame_shape)."""
        start, stop = max(0, int(start)), min(self.n_frames, int(stop))
        if stop <= start:
            return np.zeros((0, *self.frame_shape), dtype=self.dtype)
        try:
            arr = np.asarray(self._read_raw(start, stop))
        except AffineVAEError:
            raise
        except Exception as exc:  # a library failing on a corrupt file
            raise AffineVAEError(f"{self.path}: cannot read frames {start}:{stop} ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        if arr.shape[1:] != tuple(self.frame_shape):
            raise AffineVAEError(f"{self.path}: frames {start}:{stop} have shape {arr.shape[1:]}, "
                                 f"expected {tuple(self.frame_shape)}")
        return arr

    def normalisation(self) -> tuple[str, float, float]:
        """The stack-wide normalisation ``(kind, offset, divisor)``: ``(x - offset) / divisor``.

        Follows :func:`~affinevae.data.imageset.normalise_images` for the whole stack: unsigned
        integers are divided by their dtype maximum; floats (and signed integers) already in
        [0, 1] are kept; others are min-max scaled with a warning. Signed/float stacks need
        one streaming pass over the frames to find their range (memory bounded by one chunk).
        """
        if self._norm is not None:
            return self._norm
        dt = np.dtype(self.dtype)
        if dt == bool:
            self._norm = ("keep", 0.0, 1.0)
        elif np.issubdtype(dt, np.unsignedinteger):
            self._norm = ("divide", 0.0, float(np.iinfo(dt).max))
        elif not np.issubdtype(dt, np.number):
            raise AffineVAEError(f"{self.path}: images must be numeric, got dtype {dt}")
        else:
            lo, hi = math.inf, -math.inf
            step = self._chunk_for_scan()
            for s in range(0, self.n_frames, step):
                a = self.read_raw(s, s + step).astype(np.float32)
                if not np.all(np.isfinite(a)):
                    raise AffineVAEError(f"{self.path}: {int((~np.isfinite(a)).sum())} NaN or infinite pixel values "
                                         f"in frames {s}:{min(s + step, self.n_frames)}")
                lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
            if lo < 0.0 or hi > 1.0:
                warnings.warn(f"{self.path}: values span [{lo:g}, {hi:g}], outside [0, 1]; min-max scaling the data "
                              "set to [0, 1]", stacklevel=2)
                self._norm = ("minmax", lo, hi - lo if hi > lo else 1.0)
            else:
                self._norm = ("keep", 0.0, 1.0)
        return self._norm

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` as float32 (f, H, W) or (f, C, H, W), normalised stack-wide.

        Raises :class:`AffineVAEError` on NaN/inf pixels.
        """
        kind, offset, divisor = self.normalisation()
        raw = self.read_raw(start, stop)
        if kind == "divide":
            out = raw.astype(np.float32)
            out /= np.float32(divisor)  # in place: one float32 copy of the chunk, as normalise_images computes it
            return out
        out = raw.astype(np.float32)
        if not np.all(np.isfinite(out)):
            raise AffineVAEError(f"{self.path}: {int((~np.isfinite(out)).sum())} NaN or infinite pixel values "
                                 f"in frames {start}:{stop}")
        if kind == "minmax":
            out = (out - offset) / divisor
        return out.astype(np.float32, copy=False)

    def _chunk_for_scan(self) -> int:
        per = max(1, int(np.prod(self.frame_shape)) * 4)
        return max(1, min(self.n_frames, (64 << 20) // per))

    def close(self) -> None:
        """Release open files."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, frames={self.n_frames}, frame_shape={tuple(self.frame_shape)})"


def _layout(shape: tuple, where: str) -> tuple[int, tuple, Optional[tuple]]:
    """Interpret an array shape as frames: (n_frames, frame_shape, transpose-or-None).

    (H, W): one frame; (H, W, C) with C in {3, 4} and H, W > 4: one colour frame;
    (F, H, W): F frames; (F, C, H, W) with C <= 4; (F, H, W, C) with C in {1, 3, 4} when the
    second axis is larger (transposed to channels first).
    """
    if len(shape) == 2:
        return 1, tuple(shape), None
    if len(shape) == 3:
        if shape[2] in (3, 4) and shape[0] > 4 and shape[1] > 4:
            return 1, (shape[2], shape[0], shape[1]), (2, 0, 1)
        return shape[0], (shape[1], shape[2]), None
    if len(shape) == 4:
        if shape[1] <= 4:
            fs = (shape[1], shape[2], shape[3])
            return shape[0], (fs[1], fs[2]) if fs[0] == 1 else fs, None
        if shape[3] in (1, 3, 4):
            fs = (shape[3], shape[1], shape[2])
            return shape[0], (fs[1], fs[2]) if fs[0] == 1 else fs, (0, 3, 1, 2)
    raise AffineVAEError(f"{where}: cannot read shape {tuple(shape)} as frames; expected (H, W), (F, H, W), "
                         "(F, C, H, W) or (F, H, W, C)")


class ArraySource(FrameSource):
    """Frames from anything sliceable along its first axis: a numpy array or memmap, an h5py dataset."""

    def __init__(self, array: Any, path: str = "array", owner: Any = None) -> None:
        super().__init__()
        self.array, self.path, self._owner = array, path, owner
        shape = tuple(int(s) for s in array.shape)
        self.n_frames, self.frame_shape, self._perm = _layout(shape, path)
        self._single = len(shape) == 2 or (len(shape) == 3 and self._perm is not None)
        self.dtype = np.dtype(array.dtype)

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        if self._single:
            a = np.asarray(self.array[...])
            a = a if self._perm is None else a.transpose(self._perm)
            return a[None]
        a = np.asarray(self.array[start:stop])
        if self._perm is not None:
            a = a.transpose(self._perm)
        return a.reshape(len(a), *self.frame_shape)

    def close(self) -> None:
        if self._owner is not None:
            self._owner.close()
            self._owner = None


class TiffSource(FrameSource):
    """Frames of a (multi-page) TIFF, read page by page with tifffile; RGB pages give C = 3."""

    def __init__(self, path: str) -> None:
        super().__init__()
        import tifffile

        self.path = path
        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series[0]
            key = series.keyframe
            n = len(series.pages)
            shape, axes = tuple(int(s) for s in key.shape), key.axes
            self.dtype = np.dtype(key.dtype)
        except Exception as exc:
            raise AffineVAEError(f"{path}: cannot read TIFF ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        self.n_frames = n
        self._perm = None
        if axes.endswith("YXS") and len(shape) == 3:
            self.frame_shape = (shape[2], shape[0], shape[1])
            self._perm = (0, 3, 1, 2)
        elif axes.endswith("SYX") and len(shape) == 3:
            self.frame_shape = shape
        elif len(shape) == 2:
            self.frame_shape = shape
        else:
            raise AffineVAEError(f"{path}: unsupported TIFF page layout {axes} {shape}")
        if self.frame_shape[0] == 1 and len(self.frame_shape) == 3:
            self.frame_shape = self.frame_shape[1:]

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        a = self._tif.asarray(key=range(start, stop), series=0)
        if self._perm is not None:  # (f, H, W, S) pages -> (f, S, H, W)
            return a.reshape(stop - start, *a.shape[-3:]).transpose(self._perm)
        return a.reshape(stop - start, *self.frame_shape)

    def close(self) -> None:
        self._tif.close()


def _pil_to_array(im, path: str) -> np.ndarray:
    """A Pillow image as an array: (H, W) grayscale or (3, H, W) colour (alpha dropped)."""
    if im.mode in ("1", "L", "I", "F", "I;16", "I;16B", "I;16L"):
        return np.asarray(im)
    if im.mode in ("LA",):
        return np.asarray(im.convert("L"))
    a = np.asarray(im.convert("RGB"))
    return a.transpose(2, 0, 1)


class PillowSource(FrameSource):
    """Frames of one image file read with Pillow (a multi-frame GIF/TIFF is a stack)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        from PIL import Image

        self.path = path
        try:
            self._im = Image.open(path)
            self.n_frames = int(getattr(self._im, "n_frames", 1))
            first = _pil_to_array(self._im, path)
        except Exception as exc:
            raise AffineVAEError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
        self.frame_shape, self.dtype = first.shape, first.dtype

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        out = []
        for i in range(start, stop):  # one loop step per frame, not per object
            self._im.seek(i)
            out.append(_pil_to_array(self._im, self.path).astype(self.dtype, copy=False))
        return np.stack(out)

    def close(self) -> None:
        self._im.close()


class FolderSource(FrameSource):
    """A folder of image files, one frame per file in name order, read on demand."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in FOLDER_EXTS)
        if not self.files:
            raise AffineVAEError(f"{path}: folder holds no {'/'.join(e[1:] for e in FOLDER_EXTS)} images")
        first = self._one(self.files[0])
        self.n_frames, self.frame_shape, self.dtype = len(self.files), first.shape, first.dtype

    def _one(self, f: Path) -> np.ndarray:
        if f.suffix.lower() in TIFF_EXTS:
            src = TiffSource(str(f))
            try:
                a = src.read_raw(0, 1)[0]
            finally:
                src.close()
        else:
            from PIL import Image
            try:
                with Image.open(f) as im:
                    a = _pil_to_array(im, str(f))
            except Exception as exc:
                raise AffineVAEError(f"{f}: cannot read image ({type(exc).__name__}: {exc})") from None
        return a

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        out = []
        for f in self.files[start:stop]:
            a = self._one(f)
            if a.shape != tuple(self.frame_shape):
                raise AffineVAEError(f"{f}: image shape {a.shape} differs from the first image's {tuple(self.frame_shape)}")
            out.append(a)
        return np.stack(out)


def open_stack(spec: Union[str, Path, np.ndarray, FrameSource], key: Optional[str] = None) -> FrameSource:
    """Open a large image or stack of frames for lazy, chunked reading.

    Args:
        spec: a path: ``.npy`` (memory mapped, never unpickled), ``.npz`` (the array ``key``, else
            ``images``, else ``patches``, else the first), ``.tif``/``.tiff`` (one frame per page),
            ``file.h5:dataset`` (h5py slicing; without a dataset, the file's only dataset),
            ``.png``/``.jpg``/``.gif``/``.bmp`` (Pillow; multi-frame files are stacks) or a
            folder of such files (one frame per file). Also an in-memory array
            (H, W), (F, H, W), (F, C, H, W) or (F, H, W, C), or an open :class:`FrameSource`.
        key: array name in an ``.npz`` or dataset name in an HDF5 file.

    Returns:
        A :class:`FrameSource`; use it as a context manager to close the file.

    Raises:
        AffineVAEError: a missing file, an unsupported suffix or an unreadable layout.
    """
    if isinstance(spec, FrameSource):
        return spec
    if isinstance(spec, np.ndarray):
        return ArraySource(spec, "array")
    s = str(spec)
    p = Path(s)
    if not p.exists():
        m = _HDF5_SPEC.match(s)
        if m and m.group(2) is not None and Path(m.group(1)).is_file():
            return _open_hdf5(m.group(1), m.group(2) or key)
        raise AffineVAEError(f"{s}: file not found")
    if p.is_dir():
        return FolderSource(s)
    suf = p.suffix.lower()
    if suf == ".npy":
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise AffineVAEError(f"{s}: cannot read .npy ({str(exc).splitlines()[0]})") from None
        return ArraySource(arr, s)
    if suf == ".npz":
        try:
            with np.load(p, allow_pickle=False) as f:
                names = f.files
                k = key or next((n for n in ("images", "patches") if n in names), names[0] if names else None)
                if k not in names:
                    raise AffineVAEError(f"{s}: no array '{k}'; arrays: {', '.join(names) or 'none'}")
                return ArraySource(f[k], s)
        except (ValueError, OSError) as exc:
            raise AffineVAEError(f"{s}: cannot read .npz ({str(exc).splitlines()[0]})") from None
    if suf in TIFF_EXTS:
        return TiffSource(s)
    if suf in HDF5_EXTS:
        return _open_hdf5(s, key)
    if suf in PIL_EXTS:
        return PillowSource(s)
    raise AffineVAEError(f"{s}: unsupported image file suffix '{p.suffix}'; use .npy, .npz, .tif, .h5:dataset, "
                         ".png/.jpg/.gif or a folder of images")


def _open_hdf5(path: str, dataset: Optional[str]) -> FrameSource:
    try:
        import h5py
    except ImportError:  # pragma: no cover
        raise AffineVAEError(f"{path}: reading HDF5 needs h5py (pip install affinevae[hdf5])") from None
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise AffineVAEError(f"{path}: cannot read HDF5 ({exc})") from None
    if not dataset:
        names: list[str] = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        if len(names) != 1:
            f.close()
            raise AffineVAEError(f"{path}: name the dataset as {path}:NAME; datasets: {', '.join(names) or 'none'}")
        dataset = names[0]
    if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
        f.close()
        raise AffineVAEError(f"{path}: no dataset '{dataset}'")
    return ArraySource(f[dataset], f"{path}:{dataset}", owner=f)


# ============================================================================ detection
def _check_int(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise AffineVAEError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def detect_objects(frame: np.ndarray, min_distance: int = 5, threshold: float = 0.3, absolute: bool = False,
                   sigma: Optional[float] = None) -> np.ndarray:
    """Centres of bright objects in one frame: local maxima above a threshold.

    Args:
        frame: (H, W) or (C, H, W) image (channels are averaged).
        min_distance: minimum separation of two objects in pixels: a maximum must be the largest
            value in the (2 * min_distance + 1)^2 square around it.
        threshold: with ``absolute`` the minimum (smoothed) pixel value of an object; otherwise a
            fraction of the way from the frame's minimum to its maximum (a fraction of the maximum
            when the background is 0).
        absolute: interpret ``threshold`` as a pixel value.
        sigma: standard deviation (pixels) of a Gaussian smoothing applied first; None or 0 for none.

    Returns:
        (N, 2) int64 centres (row, col) in pixels, sorted by row then column. Flat-topped maxima
        (plateaus) give one centre each.
    """
    from scipy import ndimage

    md = _check_int("min_distance", min_distance, 1)
    if not np.isfinite(threshold):
        raise AffineVAEError(f"threshold must be a finite number, got {threshold!r}")
    if sigma is not None and not sigma >= 0:
        raise AffineVAEError(f"sigma must be >= 0 pixels, got {sigma!r}")
    img = np.asarray(frame, dtype=np.float32)
    if img.ndim == 3:
        img = img.mean(0)
    if img.ndim != 2:
        raise AffineVAEError(f"detect_objects expects an (H, W) or (C, H, W) frame, got shape {img.shape}")
    if sigma:
        img = ndimage.gaussian_filter(img, float(sigma))
    lo, hi = float(img.min()), float(img.max())
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


# ============================================================================ patches
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

    def __len__(self) -> int:
        return len(self.patches)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays written by :meth:`save`."""
        out = {"patches": self.patches, "centers": self.centers, "frames": self.frames,
               "window": np.int64(self.window), "image_shape": np.asarray(self.image_shape, dtype=np.int64),
               "n_frames": np.int64(self.n_frames)}
        if self.grid_shape is not None:
            out["grid_shape"] = np.asarray(self.grid_shape, dtype=np.int64)
            out["stride"] = np.int64(self.stride or 0)
        return out

    def save(self, path: Union[str, Path]) -> Path:
        """Write an uncompressed ``.npz`` atomically (arrays of :meth:`arrays`)."""
        arrays = self.arrays()

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
        except (ValueError, OSError) as exc:
            raise AffineVAEError(f"{p}: cannot read patches ({str(exc).splitlines()[0]})") from None
        n = len(d["patches"])
        if d["centers"].shape != (n, 2) or d["frames"].shape != (n,):
            raise AffineVAEError(f"{p}: centers {d['centers'].shape} / frames {d['frames'].shape} do not match "
                                 f"{n} patches")
        window = int(d["window"]) if "window" in d else int(d["patches"].shape[-1])
        gs = tuple(int(v) for v in d["grid_shape"]) if "grid_shape" in d else None
        return cls(d["patches"], d["centers"].astype(np.int64), d["frames"].astype(np.int64), window,
                   tuple(int(v) for v in d.get("image_shape", (0, 0))), int(d.get("n_frames", 1)), gs,
                   int(d["stride"]) if "stride" in d else None)


def _check_window(window: Any, image_shape: Sequence[int], where: str) -> int:
    w = _check_int("window", window, 2)
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
    c = np.asarray(centers, dtype=np.int64).reshape(-1, 2)
    f = (np.zeros(len(c), dtype=np.int64) if frames is None else np.asarray(frames, dtype=np.int64)) - frame_offset
    if len(f) != len(c):
        raise AffineVAEError(f"extract_patches: {len(f)} frame indices for {len(c)} centres")
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


def grid_centers(image_shape: Sequence[int], window: int, stride: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Centres of a sliding window on a regular grid covering the image.

    Args:
        image_shape: (H, W) in pixels; window: patch size w; stride: grid step in pixels.

    Returns:
        ``(centers, grid_shape)``: (gh * gw, 2) int64 (row, col) centres, row-major, and
        ``(gh, gw)`` with ``gh = (H - w) // stride + 1`` (likewise gw).
    """
    w = _check_window(window, image_shape, "grid")
    s = _check_int("stride", stride, 1)
    rows = np.arange(0, int(image_shape[0]) - w + 1, s) + w // 2
    cols = np.arange(0, int(image_shape[1]) - w + 1, s) + w // 2
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([rr.ravel(), cc.ravel()], 1).astype(np.int64), (len(rows), len(cols))


# ============================================================================ chunked pipeline
def _find_spec(coords, stride) -> str:
    if coords is not None and stride is not None:
        raise AffineVAEError("give either coordinates or a grid stride, not both")
    return "coords" if coords is not None else "grid" if stride is not None else "detect"


def iter_patches(source, window: int, *, coords: Union[None, str, Path, tuple] = None, stride: Optional[int] = None,
                 min_distance: int = 5, threshold: float = 0.3, absolute: bool = False,
                 sigma: Optional[float] = None, edge: str = "drop", chunk_frames: int = 16,
                 progress: bool = False, key: Optional[str] = None) -> Iterator[PatchSet]:
    """Cut patches chunk by chunk of frames; memory is bounded by ``chunk_frames`` frames.

    Objects come from ``coords`` (a file for :func:`read_coordinates` or a ``(frames, centers)``
    pair), a grid with step ``stride`` (pixels), or :func:`detect_objects` on each frame
    (``min_distance``, ``threshold``, ``absolute``, ``sigma``).

    Args:
        source: anything :func:`open_stack` accepts.
        window: patch size in pixels. edge: 'drop', 'pad' or 'reflect' (see :func:`extract_patches`).
        chunk_frames: frames read per step. progress: show a tqdm bar over frames.

    Yields:
        One :class:`PatchSet` per chunk (possibly empty), frame indices global.

    Raises:
        AffineVAEError: an image smaller than the window, coordinates outside the image, bad options.
    """
    from tqdm.auto import tqdm

    mode = _find_spec(coords, stride)
    if edge not in EDGE_MODES:
        raise AffineVAEError(f"edge must be one of {', '.join(EDGE_MODES)}, got {edge!r}")
    chunk = _check_int("chunk_frames", chunk_frames, 1)
    src = open_stack(source, key=key)
    bar = None
    try:
        w = _check_window(window, src.image_shape, src.path)
        if mode == "coords":
            if isinstance(coords, tuple):
                cf, cc = np.asarray(coords[0], dtype=np.int64), np.asarray(coords[1], dtype=np.float64)
                cwhere = "coordinates"
            else:
                cf, cc = read_coordinates(coords)
                cwhere = str(coords)
            cc = check_coordinates(cf, cc, src.n_frames, src.image_shape, cwhere)
            order = np.argsort(cf, kind="stable")
            cf, cc = cf[order], cc[order]
            bounds = np.searchsorted(cf, np.arange(0, src.n_frames + chunk, chunk))
        elif mode == "grid":
            gcent, gshape = grid_centers(src.image_shape, w, stride)
        else:
            _check_int("min_distance", min_distance, 1)
        # progress=True shows the bar on a terminal only (tqdm's disable=None), never in logs or pipes
        bar = tqdm(total=src.n_frames, unit="frame", disable=None if progress else True, desc="patches", leave=False)
        for k, s in enumerate(range(0, src.n_frames, chunk)):
            e = min(s + chunk, src.n_frames)
            if mode == "coords":
                fr, ce = cf[bounds[k]:bounds[k + 1]], cc[bounds[k]:bounds[k + 1]]
                if len(ce) == 0:  # nothing in these frames: do not even read them
                    bar.update(e - s)
                    continue
            stack = src.read(s, e)
            if mode == "grid":
                fr = np.repeat(np.arange(s, e, dtype=np.int64), len(gcent))
                ce = np.tile(gcent, (e - s, 1))
            elif mode == "detect":
                found = [detect_objects(fm, min_distance, threshold, absolute, sigma) for fm in stack]  # per frame
                fr = np.concatenate([np.full(len(d), s + i, dtype=np.int64) for i, d in enumerate(found)])
                ce = np.concatenate(found).reshape(-1, 2)
            patches, keep = extract_patches(stack, ce, w, fr, edge=edge, frame_offset=s)
            bar.update(e - s)
            yield PatchSet(patches, ce[keep], fr[keep], w, src.image_shape, src.n_frames,
                           gshape if mode == "grid" else None, int(stride) if mode == "grid" else None, len(ce))
    finally:
        if bar is not None:
            bar.close()
        if src is not source:
            src.close()


def _concat(parts: list[PatchSet]) -> PatchSet:
    p0 = parts[0]
    return PatchSet(np.concatenate([p.patches for p in parts]), np.concatenate([p.centers for p in parts]),
                    np.concatenate([p.frames for p in parts]), p0.window, p0.image_shape, p0.n_frames,
                    p0.grid_shape, p0.stride, sum(p.n_found or 0 for p in parts))


def _where(source) -> str:
    return "array" if isinstance(source, np.ndarray) else str(getattr(source, "path", source))


def _none_found(source, found_any: bool, window: int, threshold: float, absolute: bool) -> AffineVAEError:
    where = _where(source)
    if not found_any:
        what = f"{threshold:g}" + ("" if absolute else " of the range")
        return AffineVAEError(f"{where}: no objects found above threshold {what}; lower --threshold "
                              "(or --min-distance / --sigma)")
    return AffineVAEError(f"{where}: every object lies within {window // 2} pixels of the edge; use --edge pad "
                          "or a smaller --window")


def cut_patches(source, window: int, **options: Any) -> PatchSet:
    """All patches of ``source`` in one :class:`PatchSet` (see :func:`iter_patches` for options).

    Raises:
        AffineVAEError: when no object is found (suggesting a lower threshold) or every object was
            dropped at the edge, besides the errors of :func:`iter_patches`.
    """
    parts = list(iter_patches(source, window, **options))
    if sum(len(p) for p in parts) == 0:
        raise _none_found(source, any(p.n_found for p in parts), window, options.get("threshold", 0.3),
                          options.get("absolute", False))
    return _concat(parts)


# ============================================================================ encoding
@dataclasses.dataclass
class ObjectEncoding:
    """Per-object model outputs with their places in the stack.

    Attributes:
        z_mean, z_std: (N, D) float32 content posterior.
        angle: (N,) float32 radians (counter-clockwise on screen), NaN for models without a rotation.
        shift: (N, 2) float32 (right, down) in half patch widths, NaN without a translation latent.
        positions: (N, 2) float32 refined object positions (row, col) in pixels: the patch centre moved
            by the inferred shift (equal to ``centers`` when there is no shift).
        centers: (N, 2) int64 patch centres (row, col) pixels; frames: (N,) int64.
        window: patch size; image_shape: (H, W); n_frames: F; grid_shape: (gh, gw) in grid mode.
    """

    z_mean: np.ndarray
    z_std: np.ndarray
    angle: np.ndarray
    shift: np.ndarray
    positions: np.ndarray
    centers: np.ndarray
    frames: np.ndarray
    window: int
    image_shape: tuple = (0, 0)
    n_frames: int = 1
    grid_shape: Optional[tuple] = None
    n_found: Optional[int] = None

    def __len__(self) -> int:
        return len(self.z_mean)

    @property
    def has_angle(self) -> bool:
        """True when the model inferred a rotation angle."""
        return len(self.angle) > 0 and bool(np.isfinite(self.angle).all())

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array (plus ``window``, ``image_shape``, ``n_frames`` and ``grid_shape`` if set)."""
        out = {k: getattr(self, k) for k in ("z_mean", "z_std", "angle", "shift", "positions", "centers", "frames")}
        out.update(window=np.int64(self.window), image_shape=np.asarray(self.image_shape, dtype=np.int64),
                   n_frames=np.int64(self.n_frames))
        if self.grid_shape is not None:
            out["grid_shape"] = np.asarray(self.grid_shape, dtype=np.int64)
        return out

    @staticmethod
    def concat(parts: Sequence["ObjectEncoding"]) -> "ObjectEncoding":
        """Join per-chunk results (in order)."""
        p0 = parts[0]
        cat = {k: np.concatenate([getattr(p, k) for p in parts]) for k in
               ("z_mean", "z_std", "angle", "shift", "positions", "centers", "frames")}
        return ObjectEncoding(**cat, window=p0.window, image_shape=p0.image_shape, n_frames=p0.n_frames,
                              grid_shape=p0.grid_shape, n_found=sum(p.n_found or 0 for p in parts))


def check_model_input(model, patch_shape: Sequence[int], where: str = "patches") -> None:
    """Raise :class:`AffineVAEError` unless ``model`` can encode patches of shape (w, w) or (C, w, w)."""
    want = tuple(model.config.image_shape)
    got = tuple(int(v) for v in patch_shape)
    got = (1, *got) if len(got) == 2 else got
    if got != want:
        raise AffineVAEError(f"{where}: patches are {'x'.join(map(str, got))} (C x w x w) but the model expects "
                             f"{'x'.join(map(str, want))}; cut patches with --window {want[-1]}")
    if getattr(model, "conditional", False):
        raise AffineVAEError(f"model '{model.family}' is class-conditional; mapping needs an unconditional model "
                             "(ae, vae, rvae, avae)")


def encode_patches(model, patches: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Encode (N, w, w) or (N, C, w, w) patches in batches with ``model.encode`` (no gradients).

    Returns:
        dict of float32 arrays: ``z_mean``, ``z_std`` (N, D); ``angle`` (N,) radians and ``shift``
        (N, 2) half patch widths, NaN where the model has no such pose latent.
    """
    import torch

    n = len(patches)
    bs = _check_int("batch_size", batch_size, 1)
    check_model_input(model, patches.shape[1:])
    d = int(model.config.latent_dim)
    out = {"z_mean": np.zeros((n, d), np.float32), "z_std": np.zeros((n, d), np.float32),
           "angle": np.full(n, np.nan, np.float32), "shift": np.full((n, 2), np.nan, np.float32)}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, n, bs):
                enc = model.encode(torch.from_numpy(np.ascontiguousarray(patches[i:i + bs], dtype=np.float32)))
                out["z_mean"][i:i + bs] = enc.z_mean.cpu().numpy()
                out["z_std"][i:i + bs] = enc.z_std.cpu().numpy()
                pose = enc.pose
                if pose is not None and pose.angle is not None:
                    out["angle"][i:i + bs] = pose.angle.reshape(-1).cpu().numpy()
                if pose is not None and pose.shift is not None:
                    out["shift"][i:i + bs] = pose.shift.reshape(-1, 2).cpu().numpy()
    finally:
        model.train(was_training)
    return out


def _encode_set(model, ps: PatchSet, batch_size: int) -> ObjectEncoding:
    if len(ps):
        e = encode_patches(model, ps.patches, batch_size)
    else:
        d = int(model.config.latent_dim)
        e = {"z_mean": np.zeros((0, d), np.float32), "z_std": np.zeros((0, d), np.float32),
             "angle": np.zeros(0, np.float32), "shift": np.zeros((0, 2), np.float32)}
    w = ps.window
    # the patch centre pixel index is w // 2; the normalised origin sits at (w - 1) / 2
    pos = ps.centers.astype(np.float32) - (w // 2) + (w - 1) / 2.0
    sh = np.nan_to_num(e["shift"], nan=0.0)
    pos = pos + np.stack([sh[:, 1], sh[:, 0]], 1) * (w / 2.0)   # shift is (right, down)
    return ObjectEncoding(e["z_mean"], e["z_std"], e["angle"], e["shift"], pos.astype(np.float32),
                          ps.centers, ps.frames, w, ps.image_shape, ps.n_frames, ps.grid_shape)


def encode_patchset(model, ps: PatchSet, batch_size: int = 256) -> ObjectEncoding:
    """Encode a :class:`PatchSet` in batches into an :class:`ObjectEncoding`."""
    if len(ps) == 0:
        raise AffineVAEError("no patches to encode")
    check_model_input(model, ps.patches.shape[1:])
    return _encode_set(model, ps, batch_size)


def iter_encode(model, source, window: int, chunk_frames: int = 8, batch_size: int = 256,
                **options: Any) -> Iterator[ObjectEncoding]:
    """Cut and encode patches chunk by chunk of frames, never holding the whole stack.

    Args:
        model: a trained unconditional model whose ``image_shape`` is (C, window, window).
        source: anything :func:`open_stack` accepts (a path is opened lazily).
        window: patch size in pixels. chunk_frames: frames per chunk. batch_size: patches per forward pass.
        **options: object finding and edge options of :func:`iter_patches` (``coords``, ``stride``,
            ``min_distance``, ``threshold``, ``absolute``, ``sigma``, ``edge``, ``progress``, ``key``).

    Yields:
        One :class:`ObjectEncoding` per chunk (frame indices global).
    """
    src = open_stack(source, key=options.pop("key", None))
    try:
        check_model_input(model, (src.channels, window, window), src.path)
        for ps in iter_patches(src, window, chunk_frames=chunk_frames, **options):
            enc = _encode_set(model, ps, batch_size)
            enc.n_found = ps.n_found
            yield enc
    finally:
        if src is not source:
            src.close()


def stream_encode(model, source, window: int, chunk_frames: int = 8, batch_size: int = 256,
                  **options: Any) -> ObjectEncoding:
    """Collect :func:`iter_encode` into one :class:`ObjectEncoding` (only per-object results are kept).

    Raises:
        AffineVAEError: when no object was found in the whole stack (suggesting a lower threshold),
            besides the errors of :func:`iter_patches` and a model/window mismatch.
    """
    parts = list(iter_encode(model, source, window, chunk_frames, batch_size, **options))
    if sum(len(p) for p in parts) == 0:
        raise _none_found(source, any(p.n_found for p in parts), window, options.get("threshold", 0.3),
                          options.get("absolute", False))
    return ObjectEncoding.concat(parts)
