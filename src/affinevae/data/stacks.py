"""Large images and stacks of frames, opened lazily and read chunk by chunk.

:func:`open_stack` opens ``.npy`` (memory mapped), ``.npz``, TIFF stacks and ImageJ hyperstacks
(read a few pages at a time, frames along tifffile's T/Z/I/Q axes), HDF5 ``file.h5:dataset``
(sliced), PNG/JPEG/GIF/BMP (multi-frame GIFs are stacks) and folders of such files (one frame
per file, sorted by name), in-memory numpy/dask/zarr arrays, and whatever :data:`READERS` adds
(electron-microscopy files, Zarr/OME-Zarr: see :mod:`~affinevae.data.microscopy`). A movie is a stack of frames: give
it as a multi-page TIFF, a frame folder, an ``.npy`` or an HDF5 dataset.
:meth:`FrameSource.read` returns float32 frames (F, H, W) or (F, C, H, W) under the package's
normalisation rule (:func:`~affinevae.data.imageset.normalise_images`), computed once for the
whole stack. :meth:`FrameSource.read_region` reads part of one frame, so a frame larger than
memory can be processed in tiles. A source may know its physical :attr:`FrameSource.pixel_size`.
Suffixes come from :mod:`~affinevae.data.formats`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import threading
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np

from ..errors import AffineVAEError, user_stacklevel
from ..limits import check_array, check_hdf5_dataset, memory_limit
from ..registry import Registry
from ..units import PixelSize, same_pixel_size, square_pixel_size
from .imageset import (BITS, STRETCH_SAMPLE, PixelScaling, apply_scaling, check_stretch, choose_scaling, float32_overflow,
                       nonfinite, say_scaling, unsigned_divisor)
from .formats import (FRAME_FOLDER_EXTS, check_not_empty, read_npy_header, fits_hdu_spec, image_suffix, check_npy_magic, npz_image_key, pickled_npy, HDF5_EXTS, HDF5_SPEC, NPY_EXTS, NPZ_EXTS, PIL_STACK_EXTS, TIFF_EXTS, FITS_EXTS,
                      ZARR_EXTS, is_zarr_dir, reading)

if TYPE_CHECKING:
    from .background import Background

__all__ = ["PIXEL_SIZE_TOLERANCE", "native_dtype", "open_joined", "FrameSource", "ArraySource", "NpySource", "NpzSource", "TiffSource", "PillowSource", "FolderSource", "ConcatSource",
           "open_stack", "READERS", "StackReader", "is_array_like", "tiff_reading", "check_tiff", "corrupt_tiff",
           "tiff_channel_axes", "TIFF_MAX_CHANNELS", "stored_holes", "agreed_pixel_size", "files_pixel_size",
           "scan_bytes", "SCAN_BYTES", "READ_COPIES"]

#: Bytes of raw pixels read at a time when a whole-stack pass (the normalisation range) scans frames
#: (at most: under a lower memory limit the pass reads less at a time, :func:`scan_bytes`).
SCAN_BYTES = 64 << 20
#: Float32 copies of a chunk that :meth:`FrameSource.read_raw` counts against the memory limit (the stored
#: values, their float32 copy, and the pass's or normalisation's working array).
READ_COPIES = 3


def scan_bytes() -> int:
    """Bytes (as float32 pixels) one step of a whole-stack pass reads: :data:`SCAN_BYTES`, or, under a lower
    memory limit (:func:`~affinevae.limits.memory_limit`: ``--max-memory``), half the limit over
    :data:`READ_COPIES` (half: room for what else the process holds, and for the available memory
    shrinking while the pass runs), so that a stack larger than the limit is still scanned chunk by chunk;
    at least 1."""
    return max(1, min(SCAN_BYTES, memory_limit() // (2 * READ_COPIES)))


class FrameSource:
    """Lazy access to the frames of a large image or stack.

    Subclasses implement :meth:`_read_raw`. Attributes:
        path: where the frames come from (for messages).
        n_frames: number of frames F.
        frame_shape: (H, W) for single-channel frames, (C, H, W) otherwise.
        dtype: the stored pixel dtype.
        pixel_size: the physical size of a pixel (:class:`~affinevae.units.PixelSize`) when the
            file records one, else None.
    """

    path: str
    n_frames: int
    frame_shape: tuple
    dtype: np.dtype
    pixel_size: Optional[PixelSize] = None

    #: How the stack's own scaling treats float pixels outside [0, 1] (:meth:`use_stretch`).
    stretch: str = "auto"
    #: Replace NaN/inf pixels by the stack's median (:meth:`use_fill_nan`).
    fill_nan: bool = False
    #: Read every pixel as 1 minus its normalised value (:meth:`use_invert`).
    invert: bool = False
    #: Flatten every frame with boxes of this many pixels (:meth:`use_background`); None: off.
    background_box: Optional[int] = None
    _backgrounds: Optional[dict] = None
    _given: Optional[PixelScaling] = None
    _own: Optional[PixelScaling] = None
    _fill: Optional[float] = None

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
        check_array((stop - start, *self.frame_shape), self.path, "the declared frames", copies=READ_COPIES)
        with reading(self.path, f"frames {start}:{stop}"):
            arr = np.asarray(self._read_raw(start, stop))
        if arr.shape[1:] != tuple(self.frame_shape):
            raise AffineVAEError(f"{self.path}: frames {start}:{stop} have shape {arr.shape[1:]}, "
                                 f"expected {tuple(self.frame_shape)}")
        return arr

    def read_raw_region(self, frame: int, rows: slice, cols: slice) -> np.ndarray:
        """Part of one frame as stored: ``frame[..., rows, cols]`` (slices may have steps).

        Returns (h, w) or (C, h, w). The base class reads the whole frame; array-backed sources
        (:class:`ArraySource`) read only the region.
        """
        if not 0 <= int(frame) < self.n_frames:
            raise AffineVAEError(f"{self.path}: frame {frame} outside 0..{self.n_frames - 1}")
        with reading(self.path, f"frame {frame}"):
            return np.asarray(self._read_region(int(frame), rows, cols))

    def _read_region(self, frame: int, rows: slice, cols: slice) -> np.ndarray:
        return self.read_raw(frame, frame + 1)[0][..., rows, cols]

    def read_region(self, frame: int, rows: slice, cols: slice) -> np.ndarray:
        """Part of one frame as float32 (h, w) or (C, h, w), normalised stack-wide like :meth:`read`
        (and flattened like it, :meth:`use_background`)."""
        return self._region_values(self.read_raw_region(frame, rows, cols), frame, rows, cols)

    def read_region_masked(self, frame: int, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`read_region` and, from the same read of the stored values, where they are NaN or infinite
        (:func:`stored_holes`: the pixels :meth:`use_fill_nan` fills; bool, the stored region's shape)."""
        raw = self.read_raw_region(frame, rows, cols)
        return self._region_values(raw, frame, rows, cols), stored_holes(raw)

    def _region_values(self, raw: np.ndarray, frame: int, rows: slice, cols: slice) -> np.ndarray:
        """:meth:`read_region` of the stored region ``raw`` (left as it is)."""
        if self.background_box is None:
            return self._normalise(raw, f"frame {frame}")
        field = self.background(frame).field(rows, cols, "median")
        flat = raw.astype(np.float32)  # a float32 copy of its own (bool, integer and float pixels alike)
        flat -= field if raw.ndim == 3 else field[0]
        return self._normalised_flat(flat, f"frame {frame}")

    def _flatten_raw(self, a: np.ndarray, first: Optional[int], band: Optional[tuple]) -> np.ndarray:
        """A chunk of :meth:`_scan` (stored values as float32) less each frame's background field: whole frames
        from ``first`` (None: a band), or the band ``(frame, first row)``."""
        if band is not None:
            f, r = band
            field = self.background(f).field(slice(r, r + a.shape[-2]), slice(None), "median")
            return a - (field if a.ndim == 3 else field[0])
        out = np.empty_like(a)
        for i in range(len(a)):
            field = self._background_of(first + i, a[i]).field(to="median")
            out[i] = a[i] - (field if a.ndim == 4 else field[0])
        return out

    def _normalised_flat(self, flat: np.ndarray, where: str, first: Optional[int] = None) -> np.ndarray:
        """Flattened stored values (float32, their background already subtracted) normalised as :meth:`_normalise`
        does and clipped to [0, 1]: the flattening happens before the stack's scaling, so an asinh stretch sees a
        flat sky (its noise the same everywhere), not a ramp it compresses unevenly."""
        out = self._normalise(flat, where, first)
        return np.clip(out, np.float32(0), np.float32(1), out=out)

    def normalisation(self) -> tuple[str, float, float]:
        """The stack-wide normalisation ``(kind, offset, divisor)``: 'keep' (as stored) or 'divide'
        (``x / divisor``), or 'scaling' for a :class:`PixelScaling` (the stack's own min-max or asinh
        stretch, or a run's, :meth:`use_scaling`) applied by :func:`~affinevae.data.imageset.apply_scaling`.

        Follows :func:`~affinevae.data.imageset.normalise_images` for the whole stack (with
        :attr:`stretch`): unsigned integers are divided by their dtype maximum, or for 16 bits or more
        that use few of them by the largest value of the bits they use
        (:func:`~affinevae.data.imageset.unsigned_divisor`: one pass over the raw values finds it); floats (and
        signed integers) already in [0, 1] are kept; others are min-max scaled or stretched
        (:func:`~affinevae.data.imageset.choose_scaling`, from every k-th pixel of the pass) with a
        warning; with :meth:`use_fill_nan` the range and the sample skip NaN/inf pixels and their fill
        value (the sample's median) is kept. Signed/float stacks need one streaming pass over the
        frames to find their range (memory bounded by one chunk).
        """
        if self._norm is not None:
            return self._norm
        dt = np.dtype(self.dtype)
        asinh = self.stretch == "asinh"
        if dt == bool:
            self._norm = ("keep", 0.0, 1.0)
        elif np.issubdtype(dt, np.unsignedinteger) and not asinh:
            largest = 0
            if dt.itemsize > 1:  # the bits the whole stack uses decide the divisor: one pass over its raw values
                largest = max((int(a.max()) for a, _, _ in self._scan() if a.size), default=0)
            self._norm = ("divide", 0.0, unsigned_divisor(dt, largest, self.path))
        elif not real_pixels(dt):
            raise not_real_error(self.path, dt)
        else:
            # the fill's median needs every chunk's sample, the stretch too (min-max needs none)
            lo, hi, whole = self._value_pass(sample=self.stretch != "linear" or self.fill_nan)
            if lo < 0.0 or hi > 1.0 or asinh:
                chosen, why = choose_scaling(lo, hi, whole if self.stretch != "linear" else np.zeros(0), self.stretch)
                say_scaling(self.path if self.background_box is None else f"{self.path} (flattened)", lo, hi, chosen, why)
                self._own = chosen
                self._norm = ("scaling", chosen.offset, chosen.divisor)
            else:
                self._norm = ("keep", 0.0, 1.0)
        return self._norm

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` as float32 (f, H, W) or (f, C, H, W), normalised stack-wide (and each
        flattened, :meth:`use_background`).

        Raises :class:`AffineVAEError` on NaN/inf pixels, unless :meth:`use_fill_nan` fills them, and on finite
        pixels too large for float32 (float64 values beyond about 3.4e38,
        :func:`~affinevae.data.imageset.float32_overflow`), filled or not.
        """
        return self._frame_values(self.read_raw(start, stop), start, stop)

    def read_masked(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`read` and, from the same read of the stored values, where they are NaN or infinite
        (:func:`stored_holes`: the pixels :meth:`use_fill_nan` fills; bool (f, *frame_shape))."""
        raw = self.read_raw(start, stop)
        return self._frame_values(raw, start, stop), stored_holes(raw)

    def _frame_values(self, raw: np.ndarray, start: int, stop: int) -> np.ndarray:
        """:meth:`read` of the stored frames ``raw`` (left as they are)."""
        where, first = f"frames {start}:{stop}", max(0, int(start))
        if self.background_box is None:
            return self._normalise(raw, where, first)
        return self._normalised_flat(self._flatten_raw(raw.astype(np.float32, copy=False), first, None), where, first)

    def use_background(self, box: Optional[int]) -> None:
        """Flatten every frame from the next read on: its smooth background (a quadratic surface through the
        sigma-clipped medians of ``box`` x ``box`` pixel boxes, :func:`~affinevae.data.background.frame_background`),
        less the surface's median level, is subtracted from the stored values, before the stack's scaling, so
        uneven illumination, a thickness ramp or a sky gradient no longer decides which objects a threshold
        keeps. The stack's own scaling (:meth:`normalisation`: min-max or asinh for float pixels, kept for floats
        in [0, 1]) is then taken from the flattened values, so nothing flattened leaves its range (an asinh
        stretch centres on the flattened sky); unsigned integers keep their dtype's divisor and a run's scaling
        (:meth:`use_scaling`) is kept, values clipped to [0, 1]. Each frame's surface is computed once (a small
        grid). ``box`` None: off."""
        from .background import check_box

        box = None if box is None else check_box(box, self.image_shape)
        if box == self.background_box and self._backgrounds is not None:
            return
        self.background_box = box
        self._backgrounds = {}
        if self._given is None:  # the stack's own scaling is taken again, from the flattened values
            self._norm = None

    def background(self, frame: int) -> "Background":
        """The :class:`~affinevae.data.background.Background` of ``frame`` under :meth:`use_background`
        (its box grid, computed once per frame, read band by band of ``box`` rows)."""
        if self.background_box is None:
            raise AffineVAEError(f"{self.path}: no background box set (use_background)")
        return self._background_of(frame)

    def _background_of(self, frame: int, whole: Optional[np.ndarray] = None) -> "Background":
        """:meth:`background`, from the stored frame ``whole`` (h, w) or (C, h, w) when it is at hand (the
        background is estimated, and subtracted, in the stored units, before the stack's scaling)."""
        from .background import frame_background

        frame = int(frame)
        cached = self._backgrounds.get(frame)
        if cached is None:
            if whole is not None:
                def part(rows: slice, cols: slice) -> np.ndarray:
                    return whole[..., rows, cols]
            else:
                def part(rows: slice, cols: slice) -> np.ndarray:
                    return self.read_raw_region(frame, rows, cols).astype(np.float32)
            cached = self._backgrounds[frame] = frame_background(part, self.image_shape, self.background_box)
        return cached

    def _normalise(self, raw: np.ndarray, where: str, first: Optional[int] = None) -> np.ndarray:
        """Raw pixels -> float32 under :meth:`normalisation` (one float32 copy; NaN/inf refused, naming
        the first bad frame when ``raw`` holds whole frames from frame ``first`` on, or filled,
        :meth:`use_fill_nan`), then 1 minus that with :meth:`use_invert`."""
        out = self._scaled(raw, where, first)  # a float32 copy of its own
        if self.invert:
            np.subtract(np.float32(1), out, out=out)
        return out

    def use_invert(self, invert: bool = True) -> None:
        """Read every pixel as 1 minus its normalised value in [0, 1], from the next read on: dark
        objects on a bright background (particles in raw cryo-EM contrast, holes) become the bright
        maxima that object detection looks for (``patches --invert``)."""
        self.invert = bool(invert)

    def _scaled(self, raw: np.ndarray, where: str, first: Optional[int] = None) -> np.ndarray:
        """:meth:`_normalise` before its inversion."""
        kind, offset, divisor = self.normalisation()
        if kind == "divide":
            out = raw.astype(np.float32)
            out /= np.float32(divisor)  # in place: one float32 copy of the chunk, as normalise_images computes it
            return out
        with np.errstate(over="ignore"):  # float64 values beyond float32's range: refused below, in one line
            out = raw.astype(np.float32)
        if not np.all(np.isfinite(out)):
            over = float32_overflow(raw, out, first, where)  # real values float32 cannot hold: not holes to fill
            if over is not None:
                raise AffineVAEError(f"{self.path}: {over}")
            if not self.fill_nan:
                raise AffineVAEError(f"{self.path}: {nonfinite(out, first, where)}")
            out[~np.isfinite(out)] = np.float32(self._fill_value())
        if kind == "scaling" and self._given is not None:  # a run's scaling (use_scaling): clipped where it says so
            return apply_scaling(out, self._given, f"{self.path} ({where})", inplace=True)
        if kind == "scaling":  # the stack's own: min-max or stretched, exactly as the whole array's
            return apply_scaling(out, self._own, self.path, inplace=True, own=True)
        return out

    def use_scaling(self, scaling: Optional[PixelScaling]) -> None:
        """Scale float and signed-integer pixels with ``scaling`` (a trained run's
        :class:`~affinevae.data.imageset.PixelScaling`) instead of the stack's own range, from the
        next read on (unsigned and bool pixels keep their rule unless it is an 'asinh' one; None: no
        change). No pass over the stack is then made."""
        if scaling is None:
            return
        self.stretch = "auto"  # a run's scaling decides, as in scale_images (a stretch asked for does not apply)
        self._norm = None
        dt = np.dtype(self.dtype)
        unsigned = np.issubdtype(dt, np.unsignedinteger)
        if (dt == bool or (unsigned and scaling.kind not in ("asinh", BITS))
                or (scaling.kind == BITS and not (unsigned and dt.itemsize > 1))):
            return  # (a 'bits' divisor is for unsigned pixels of 16 bits or more; others keep their own rule)
        self._given = scaling
        self._norm = ("scaling", float(scaling.offset), float(scaling.divisor))

    def use_fill_nan(self, fill: bool = True) -> None:
        """Replace NaN and infinite pixels (masked ones, a detector's bad columns) by the stack's median
        of its finite values instead of refusing them (one value for the whole stack, so that tiles
        and frames agree; a frame with no finite pixel becomes that value throughout), from the next
        read on, said in a warning."""
        self.fill_nan = bool(fill)
        if self._given is None:
            self._norm = None

    @property
    def filled(self) -> bool:
        """Whether NaN/inf pixels were found in the stack and filled (:meth:`use_fill_nan`; known once a
        frame has been read)."""
        return bool(self.fill_nan and self._fill is not None)

    def _fill_value(self) -> float:
        """The raw value that NaN/inf pixels take under :meth:`use_fill_nan`: the median of the
        stack's finite values (from the normalisation's pass, or, under a run's scaling, which makes
        none, one pass of its own)."""
        if self._fill is None:
            self._value_pass(sample=True)
        return self._fill

    def _value_pass(self, sample: bool) -> tuple[float, float, np.ndarray]:
        """One pass over the stack's values as float32: ``(lo, hi, sample)``, their finite range and,
        when ``sample``, every k-th value in the stack's order (:meth:`_sampled`; at most about
        :data:`~affinevae.data.imageset.STRETCH_SAMPLE`; of the finite ones only where a chunk has
        holes). NaN/inf values are refused in one line naming the first bad frame, or, with
        :meth:`use_fill_nan`, counted and given the sample's median as their fill (said in a warning); finite
        values too large for float32 are refused in one line either way
        (:func:`~affinevae.data.imageset.float32_overflow`)."""
        lo, hi, holes, parts = math.inf, -math.inf, 0, []
        step = max(1, -(-self.n_frames * int(np.prod(self.frame_shape)) // STRETCH_SAMPLE))
        for raw, where, first, band in self._scan(bands=True):
            with np.errstate(over="ignore"):  # float64 values beyond float32's range: refused below, in one line
                a = raw.astype(np.float32, copy=False)
            if self.background_box is not None:  # the range and sample of the flattened values
                a = self._flatten_raw(a, first, band)
            finite = np.isfinite(a)
            if not finite.all():
                # real values float32 cannot hold (float64 pixels beyond 3.4e38): not holes to fill
                with np.errstate(over="ignore"):
                    over = float32_overflow(raw, raw.astype(np.float32), first, where) if raw.dtype.itemsize > 4 else None
                if over is not None:
                    raise AffineVAEError(f"{self.path}: {over}")
                if not self.fill_nan:
                    raise AffineVAEError(f"{self.path}: {nonfinite(a, first, where)}")
                holes += int(a.size - np.count_nonzero(finite))
                if not finite.any():
                    continue
                a = a[finite]  # (the range and the sample of the finite values only)
                band, first = None, 0
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
            if sample:
                parts += self._sampled(a, first, band, step)
        if lo > hi:
            raise AffineVAEError(f"{self.path}: no finite pixel value")
        whole = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if holes:  # the holes take the stack's median (one value, so that tiles and frames agree)
            self._fill = float(np.median(whole)) if whole.size else lo
            warnings.warn(f"{self.path}: {holes} NaN or infinite pixel values replaced by the stack's median "
                          f"{self._fill:g} (fill_nan)", stacklevel=user_stacklevel())
        return lo, hi, whole

    def use_stretch(self, stretch: str) -> None:
        """How the stack's own scaling treats float pixels outside [0, 1] (:data:`STRETCHES`,
        :func:`~affinevae.data.imageset.choose_scaling`), from the next read on (default 'auto')."""
        self.stretch = check_stretch(stretch)
        if self._given is None:
            self._norm = None

    @property
    def given_scaling(self) -> Optional[PixelScaling]:
        """A trained run's scaling set by :meth:`use_scaling` (kept as it is: never taken from the frames), or None."""
        return self._given

    @property
    def pixel_scaling(self) -> Optional[PixelScaling]:
        """The stack-wide scaling :meth:`read` applies to float (and signed integer) pixels, the 'bits'
        divisor of unsigned pixels of 16 bits or more, or None when the rule needs none (8-bit, bool, or
        float pixels already in [0, 1])."""
        kind, _, divisor = self.normalisation()
        if kind == "divide" and np.dtype(self.dtype).itemsize > 1:  # 16 bits or more: the divisor their bits gave
            return PixelScaling(BITS, 0.0, float(divisor))
        if kind != "scaling":
            return None
        return self._given if self._given is not None else self._own

    def _scan(self, bands: bool = False):
        """Yield ``(raw pixels, where, first)`` covering the stack, about :func:`scan_bytes` at a time
        (:data:`SCAN_BYTES`, less under a lower memory limit): several frames per step (``first``: the index
        of the step's first frame), or row bands of one frame when a frame is larger than
        :data:`SCAN_BYTES` (``first`` None: ``where`` names the frame). ``bands``: a fourth item,
        ``(frame, first row)`` of a band, else None. A memory limit too small for one frame (of at most
        :data:`SCAN_BYTES`) is refused in one line naming the file (:meth:`read_raw`)."""
        per = max(1, int(np.prod(self.frame_shape)) * 4)
        chunk = scan_bytes()
        if per <= SCAN_BYTES:
            step = max(1, min(self.n_frames, chunk // per))
            for s in range(0, self.n_frames, step):
                item = self.read_raw(s, s + step), f"frames {s}:{min(s + step, self.n_frames)}", s
                yield (*item, None) if bands else item
            return
        h, w = self.image_shape
        band = max(1, chunk // max(1, per // h))
        for f in range(self.n_frames):
            for r in range(0, h, band):
                item = self.read_raw_region(f, slice(r, r + band), slice(0, w)), f"frame {f} rows {r}:{r + band}", None
                yield (*item, (f, r)) if bands else item

    def _sampled(self, a: np.ndarray, first: Optional[int], band: Optional[tuple], step: int) -> list:
        """The values of a chunk ``a`` of :meth:`_scan` whose index in the stack's (F, C, H, W) order is
        a multiple of ``step``: the same sample :func:`~affinevae.data.imageset.stretch_sample` takes
        from the whole array, whether the chunk holds frames (from frame ``first``) or a row band
        ``band`` = (frame, first row) of one frame ((C, rows, W) or (rows, W))."""
        size = int(np.prod(self.frame_shape))
        if band is None:
            start = (-first * size) % step
            return [a.flat[start::step]]
        f, r0 = band
        h, w = self.image_shape
        rows = a.reshape(-1, a.shape[-2], w)  # (C, rows, W)
        out = []
        for c in range(rows.shape[0]):  # one slice per row: a pass over a frame larger than memory
            for i in range(rows.shape[1]):
                g = f * size + c * h * w + (r0 + i) * w
                # a copy: a view would keep the whole band alive, and every band of the pass with it (a 1 GiB
                # frame's range pass peaked at 1.1 GiB of bands instead of one band)
                out.append(rows[c, i, (-g) % step::step].copy())
        return out

    def close(self) -> None:
        """Release open files."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, frames={self.n_frames}, frame_shape={tuple(self.frame_shape)})"


def real_pixels(dtype) -> bool:
    """Whether pixels of ``dtype`` are real numbers (bool, integers, floats; not complex, not text)."""
    dt = np.dtype(dtype)
    return dt == bool or (np.issubdtype(dt, np.number) and not np.issubdtype(dt, np.complexfloating))


def not_real_error(where, dtype) -> AffineVAEError:
    """The one-line refusal of pixels of ``dtype`` that are not real numbers (complex ones: what to give)."""
    dt = np.dtype(dtype)
    return AffineVAEError(f"{where}: images must be real numbers, got dtype {dt}"
                          + (" (complex: give np.abs or the real part)" if dt.kind == "c" else ""))


def _layout(shape: tuple, where: str) -> tuple[int, tuple, Optional[tuple]]:
    """Interpret an array shape as frames: (n_frames, frame_shape, transpose-or-None).

    (H, W): one frame; (H, W, C) with C in {3, 4} and H, W > 4: one colour frame;
    (F, H, W): F frames; (F, C, H, W) with C <= 4, or C fewer than the pixels of either side (a
    spectral map's many channels); (F, H, W, C) with C in {1, 3, 4} when the second axis is larger,
    or C fewer than the pixels of either side (transposed to channels first).
    """
    if len(shape) == 2:
        return 1, tuple(shape), None
    if len(shape) == 3:
        if shape[2] in (3, 4) and shape[0] > 4 and shape[1] > 4:
            return 1, (shape[2], shape[0], shape[1]), (2, 0, 1)
        return shape[0], (shape[1], shape[2]), None
    if len(shape) == 4:
        first = shape[1] <= 4 or (shape[3] not in (1, 3, 4) and shape[1] < min(shape[2], shape[3]))
        if first:
            fs = (shape[1], shape[2], shape[3])
            return shape[0], (fs[1], fs[2]) if fs[0] == 1 else fs, None
        if shape[3] in (1, 3, 4) or shape[3] < min(shape[1], shape[2]):
            fs = (shape[3], shape[1], shape[2])
            return shape[0], (fs[1], fs[2]) if fs[0] == 1 else fs, (0, 3, 1, 2)
    raise AffineVAEError(f"{where}: cannot read shape {tuple(shape)} as frames; expected (H, W), (F, H, W), "
                         "(F, C, H, W) or (F, H, W, C) with fewer channels C than pixels on either side")


def stored_holes(raw: np.ndarray) -> np.ndarray:
    """Where stored values ``raw`` (any shape) are NaN or infinite: bool of ``raw``'s shape (all False for integer
    and bool values, which cannot be)."""
    raw = np.asarray(raw)
    return ~np.isfinite(raw) if np.issubdtype(raw.dtype, np.inexact) else np.zeros(raw.shape, dtype=bool)


class ArraySource(FrameSource):
    """Frames from anything sliceable along its first axis: a numpy array or memmap, an h5py
    dataset, a dask or zarr array (read lazily: only the frames or regions asked for).

    ``pixel_size``: the physical pixel size, when known.
    """

    def __init__(self, array: Any, path: str = "array", owner: Any = None,
                 pixel_size: Optional[PixelSize] = None) -> None:
        super().__init__()
        self.array, self.path, self._owner, self.pixel_size = array, path, owner, pixel_size
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

    def _read_region(self, frame: int, rows: slice, cols: slice) -> np.ndarray:
        if self._perm is not None:  # channels last: (.., H, W, C)
            idx = (rows, cols, slice(None)) if self._single else (frame, rows, cols, slice(None))
            a = np.asarray(self.array[idx])
            return np.moveaxis(a, -1, 0).reshape(*self.frame_shape[:-2], *a.shape[-3:-1])
        if self._single:
            return np.asarray(self.array[rows, cols])
        a = np.asarray(self.array[(frame,) + (slice(None),) * (len(self.array.shape) - 3) + (rows, cols)])
        return a.reshape(*self.frame_shape[:-2], *a.shape[-2:])

    def close(self) -> None:
        """Release the file this source reads (its handle or memory map)."""
        if self._owner is not None:
            self._owner.close()
            self._owner = None
            self.array = None  # the file's memory map too (an open FITS/MRC map holds the file open)


class NpySource(ArraySource):
    """An ``.npy`` file, memory mapped afresh for every read (never unpickled).

    Each read maps the file, copies what it needs and drops the mapping, so the pages it touched
    leave the process's resident memory: a pass over a frame larger than memory (tile by tile)
    keeps the resident memory at about a tile. :attr:`array` is a fresh ``np.memmap`` each time.
    """

    def __init__(self, path: str) -> None:
        check_npy_magic(path, path)  # numpy would read another file as a pickle (and refuse it so)
        try:
            with reading(path, ".npy"):
                first = np.load(path, mmap_mode="r", allow_pickle=False)
        except AffineVAEError as exc:
            if "object" in str(exc).lower() or "pickle" in str(exc).lower():
                raise pickled_npy(path) from None
            raise
        super().__init__(first, path)

    @property
    def array(self) -> np.ndarray:
        """A new read-only memory map of the file: the stored array, (F, H, W) or (F, C, H, W) / (F, H, W, C)."""
        with reading(self.path, ".npy"):
            return np.load(self.path, mmap_mode="r", allow_pickle=False)

    @array.setter
    def array(self, value: Any) -> None:  # ArraySource.__init__ assigns it; the map is made per read instead
        """Ignored: the memory map is made for each read instead (so no open map holds the file)."""
        pass

    def _read_region(self, frame: int, rows: slice, cols: slice) -> np.ndarray:
        """Read the region's rows with plain file reads (one per row: the columns wanted, contiguous on
        disk), so exactly the region is copied into memory; a memory map would also make resident the
        neighbouring pages the kernel maps around each fault. Other layouts: through the memory map."""
        mm = self.array
        if self._perm is not None or not mm.flags.c_contiguous or len(self.frame_shape) != 2:
            return super()._read_region(frame, rows, cols)
        h, w = self.image_shape
        r = range(*rows.indices(h))
        c0, c1, cs = cols.indices(w)
        if cs < 1 or c1 <= c0:
            return np.asarray(mm[frame, rows, cols] if not self._single else mm[rows, cols])
        width = c1 - c0
        out = np.empty((len(r), len(range(c0, c1, cs))), dtype=self.dtype)
        item = self.dtype.itemsize
        base = int(mm.offset) + frame * h * w * item
        del mm
        with open(self.path, "rb") as f:
            for i, row in enumerate(r):  # one read per row (I/O, not per object)
                f.seek(base + (row * w + c0) * item)
                line = np.fromfile(f, dtype=self.dtype, count=width)
                out[i] = line[::cs]
        return out


# ---- .npz: one member read lazily

#: Bytes a compressed ``.npz`` member is decompressed and skipped at a time on the way to a frame.
_SKIP_BYTES = 16 << 20
#: A compressed member read backwards (a frame's overlapping tiles) of at most this many bytes is
#: decompressed whole once and kept, instead of again from its start for every tile.
_KEEP_BYTES = 512 << 20


def _zip_data_offset(path: str, info: zipfile.ZipInfo) -> int:
    """Byte offset in the file at ``path`` of the (stored) data of zip member ``info``: after its
    local header (30 bytes, the name and the local extra field, whose lengths it holds)."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise AffineVAEError(f"{path}: damaged .npz: member {info.filename!r} has no local header")
    name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len


class _DeflatedMember:
    """A compressed ``.npz`` member as a read-only array: ``shape``, ``dtype`` and indexing whose first
    index is an int, a slice or ``...``. The rows asked for are decompressed from the member's start,
    or from where the last read stopped when it lies before them, so a forward pass over the
    member decompresses it once; only the rows asked for are kept, until a read goes back: then a
    member of at most :data:`_KEEP_BYTES` is decompressed whole once and kept."""

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, header: int, shape: tuple,
                 dtype: np.dtype, where: str) -> None:
        self._zip, self._info, self._header, self._where = archive, info, header, where
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)
        self._row = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fh, self._pos = None, 0
        self._whole: Optional[np.ndarray] = None

    def _rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of the first axis (0 <= start <= stop <= shape[0])."""
        if self._whole is not None:
            return self._whole[start:stop]
        begin, end = start * self._row, stop * self._row
        if self._fh is not None and begin < self._pos and self._row * self.shape[0] <= min(_KEEP_BYTES,
                                                                                            memory_limit() // 3):
            # read backwards again (overlapping tiles of a frame): decompress it all once and keep it
            self.close()
            self._whole = self._rows(0, self.shape[0])
            self.close()
            return self._whole[start:stop]
        if self._fh is None or begin < self._pos:
            self.close()
            self._fh = self._zip.open(self._info)
            self._fh.read(self._header)
            self._pos = 0
        while self._pos < begin:
            got = len(self._fh.read(min(_SKIP_BYTES, begin - self._pos)))
            if got == 0:
                raise AffineVAEError(f"{self._where}: truncated: the array ends before row {start}")
            self._pos += got
        buf = self._fh.read(end - begin)
        if len(buf) != end - begin:
            raise AffineVAEError(f"{self._where}: truncated: the array holds fewer rows than its header's "
                                 f"{self.shape[0]}")
        self._pos = end
        return np.frombuffer(buf, self.dtype).reshape(stop - start, *self.shape[1:])

    def __getitem__(self, idx: Any) -> np.ndarray:
        idx = idx if isinstance(idx, tuple) else (idx,)
        first, rest = idx[0], idx[1:]
        if first is Ellipsis:
            return self._rows(0, self.shape[0])[idx]
        if isinstance(first, slice):
            start, stop, step = first.indices(self.shape[0])
            if step < 1:
                raise IndexError("a compressed .npz member is read forward only")
            rows = self._rows(start, max(start, stop))[::step]
            return rows[(slice(None),) + rest]
        i = int(first)
        i = i + self.shape[0] if i < 0 else i
        if not 0 <= i < self.shape[0]:
            raise IndexError(f"index {first} outside 0..{self.shape[0] - 1}")
        return self._rows(i, i + 1)[0][rest]

    def close(self) -> None:
        """Close the member's decompression stream (the archive stays open)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class NpzSource(ArraySource):
    """One array of an ``.npz`` archive (``key``, else ``images``, else ``patches``, else the only
    image array: :func:`~affinevae.data.formats.npz_image_key`), read lazily and never unpickled.

    A stored member (``np.savez``, as ``affinevae patches`` writes) is memory mapped where it lies
    in the archive, like an ``.npy``; a compressed one (``np.savez_compressed``) is decompressed as a
    stream up to the frames asked for (:class:`_DeflatedMember`), or read whole when it is kept in
    Fortran order. :attr:`key` names the member.
    """

    def __init__(self, path: str, key: Optional[str] = None) -> None:
        with reading(path, ".npz"):
            archive = zipfile.ZipFile(path)
        try:
            self.key = npz_image_key([n[:-4] for n in archive.namelist() if n.endswith(".npy")], key, path)
            where = f"{path}:{self.key}"
            info = archive.getinfo(f"{self.key}.npy")
            with reading(where, ".npy in the .npz"), archive.open(info) as fh:
                shape, fortran, dtype = read_npy_header(fh)
                header = fh.tell()
            if dtype.hasobject:
                raise pickled_npy(where)
            if info.compress_type == zipfile.ZIP_STORED:
                offset = _zip_data_offset(path, info) + header
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if offset + nbytes > Path(path).stat().st_size or info.file_size != header + nbytes:
                    raise AffineVAEError(f"{where}: truncated: the archive holds fewer bytes than the array's "
                                         f"header declares ({tuple(shape)} {dtype})")
                array: Any = np.memmap(path, dtype, "r", offset, tuple(shape), order="F" if fortran else "C")
            elif fortran:
                check_array(shape, where, "the declared array", itemsize=max(1, dtype.itemsize))
                with reading(where, ".npy in the .npz"), archive.open(info) as fh:
                    array = np.lib.format.read_array(fh, allow_pickle=False)
            else:
                array = _DeflatedMember(archive, info, header, shape, dtype, where)
        except BaseException:
            archive.close()
            raise
        self._member = array if isinstance(array, _DeflatedMember) else None
        super().__init__(array, path, owner=archive)

    def close(self) -> None:
        """Release the file this source reads (its handle or memory map)."""
        if self._member is not None:
            self._member.close()
            self._member = None
        super().close()


# ---- TIFF: tifffile's log silenced, a damaged file refused in one line

#: Substrings of what tifffile logs when the chain of pages (IFDs) is broken: it then stops at
#: the last page it could reach, so the file would silently look shorter than it is.
TIFF_BROKEN_CHAIN = ("page offset", "offset to page", "offset to first page", "tag list of page",
                     "circular reference", "invalid next page")

_TIFF_LOG_LOCK = threading.Lock()
_tiff_log_depth = 0
_tiff_log_propagate = True


class _TiffLogRecorder(logging.Handler):
    """Keeps the messages tifffile logs in this thread (instead of printing them)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Record ``record``'s message, without tifffile's ``<tifffile.Class @offset>`` prefix."""
        if record.thread != self.thread:
            return
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed log call must not break the read
            msg = str(record.msg)
        self.messages.append(re.sub(r"^(<[^>]*>\s*)+", "", " ".join(msg.split())))


def corrupt_tiff(spec: str, reason: str) -> AffineVAEError:
    """The one-line error for a damaged TIFF: ``"SPEC: cannot read TIFF: corrupt or truncated file (reason)"``
    (a file that is no TIFF at all: ``"SPEC: cannot read TIFF: not a TIFF file ..."``)."""
    reason = " ".join(str(reason).split()) or "unknown reason"
    if len(reason) > 200:
        reason = reason[:197] + "..."
    if reason.startswith("not a TIFF file"):
        return AffineVAEError(f"{spec}: cannot read TIFF: {reason}")
    if "[Errno 13]" in reason or "Permission denied" in reason:  # not damage: the file may not be read
        return AffineVAEError(f"{spec}: cannot read: permission denied")
    codec = re.search(r"<COMPRESSION\.([A-Z0-9_]+)[^>]*> requires the 'imagecodecs' package", reason)
    if codec or "requires the 'imagecodecs' package" in reason:  # not damage: a codec that is not installed
        what = f"{codec.group(1)}-compressed" if codec else "compressed with a codec tifffile reads through imagecodecs"
        return AffineVAEError(f"{spec}: its pixels are {what}, which needs the imagecodecs package: "
                              "pip install 'affinevae[microscopy]' (or pip install imagecodecs)")
    return AffineVAEError(f"{spec}: cannot read TIFF: corrupt or truncated file ({reason})")


@contextlib.contextmanager
def tiff_reading(spec: str) -> Iterator[list[str]]:
    """Read a TIFF with tifffile inside this block: its log lines are kept, not printed.

    Yields the list the messages tifffile logs in this thread go to (for :func:`check_tiff`).
    Any library failure inside the block becomes :func:`corrupt_tiff`'s one-line error naming
    ``spec`` (the reason: the exception, or for an index error the broken page chain tifffile
    logged); :class:`AffineVAEError` and ``MemoryError`` pass through unchanged.
    """
    global _tiff_log_depth, _tiff_log_propagate
    log = logging.getLogger("tifffile")  # the name tifffile.logger() uses
    recorder = _TiffLogRecorder()
    with _TIFF_LOG_LOCK:
        if _tiff_log_depth == 0:
            _tiff_log_propagate = log.propagate
        _tiff_log_depth += 1
        log.propagate = False  # also keeps logging's last-resort handler from printing them
        log.addHandler(recorder)
    try:
        yield recorder.messages
    except (AffineVAEError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - any tifffile failure on a file is a user file problem
        broken = [m for m in recorder.messages if any(k in m for k in TIFF_BROKEN_CHAIN)]
        reason = broken[0] if broken and isinstance(exc, (IndexError, KeyError)) else (
            " ".join(str(exc).split()) or type(exc).__name__)
        raise corrupt_tiff(spec, reason) from None
    finally:
        with _TIFF_LOG_LOCK:
            log.removeHandler(recorder)
            _tiff_log_depth -= 1
            if _tiff_log_depth == 0:
                log.propagate = _tiff_log_propagate


def check_tiff(tif: Any, spec: str, messages: list[str], series: Optional[list] = None) -> None:
    """Refuse a damaged TIFF before its pixels are read, from its structure alone (cheap: no pixel data is read).

    Args:
        tif: an open ``tifffile.TiffFile``.
        spec: the file, for messages.
        messages: what tifffile logged while opening it (from :func:`tiff_reading`).
        series: the page series that will be read (default: all of ``tif.series``).

    Raises:
        AffineVAEError: "SPEC: cannot read TIFF: corrupt or truncated file (reason)" when the file
            has no readable page, when a page's (or a contiguous series') image data would lie
            past the end of the file, when tifffile found the chain of pages broken (it would
            otherwise read only the pages before the break), or when an ImageJ file holds fewer
            image planes than its description declares (e.g. a one-header stack cut short).
    """
    broken = [m for m in messages if any(k in m for k in TIFF_BROKEN_CHAIN)]
    all_series = list(tif.series) if series is None else list(series)
    if not all_series:
        if broken or not len(tif.pages):
            raise corrupt_tiff(spec, broken[0] if broken else "no image pages")
        raise AffineVAEError(f"{spec}: contains zero images")
    size = int(tif.filehandle.size)
    for s in all_series:
        offset = getattr(s, "dataoffset", None)
        if offset is not None:  # one contiguous block: one comparison
            end = int(offset) + int(s.nbytes)
            if end > size:
                raise corrupt_tiff(spec, f"image data ends at byte {end}, the file has {size} bytes")
            continue
        for i, page in enumerate(s.pages):  # the page index only (offsets and byte counts), no pixels
            if page is None:
                continue
            for off, count in zip(page.dataoffsets, page.databytecounts):
                if int(off) + int(count) > size:
                    raise corrupt_tiff(spec, f"page {i} data ends at byte {int(off) + int(count)}, "
                                             f"the file has {size} bytes")
    if broken:
        raise corrupt_tiff(spec, broken[0])
    declared, found = _imagej_planes(tif)
    if declared is not None and found < declared:  # tifffile then falls back to the pages it finds
        raise corrupt_tiff(spec, f"the ImageJ header declares {declared} images, {found} can be read")


def _imagej_planes(tif: Any) -> tuple[Optional[int], int]:
    """(images the ImageJ description declares or None, image planes of the first series)."""
    try:
        meta = tif.imagej_metadata if tif.is_imagej else None
        declared = int(meta["images"]) if meta and "images" in meta else None
    except (TypeError, ValueError, KeyError, AttributeError):
        return None, 0
    if declared is None or not tif.series:
        return None, 0
    s = tif.series[0]
    return declared, math.prod(s.shape) // max(1, math.prod(s.keyframe.shape))


#: Most planes a TIFF's C axis (ImageJ or OME channels) may have to be read as the channels of
#: one image, as an array's (F, C, H, W) (:func:`_layout`); a longer C axis is read as frames:
#: tifffile saves a (T, Y, X) array written with ``imagej=True`` and no axes as C channels.
TIFF_MAX_CHANNELS = 4
#: Page shapes (tifffile axis codes) a TIFF frame may have: grey, samples last (RGB), planar samples.
TIFF_PAGE_AXES = ("YX", "YXS", "SYX")


def tiff_channel_axes(axes: str, shape: tuple) -> str:
    """The axes of a TIFF page series read as the channels of one image.

    Args:
        axes: tifffile's axis codes of the series (``TiffPageSeries.axes``, e.g. 'TCYX', 'QYXS').
        shape: the series' shape, one entry per axis.

    Returns:
        'S' (samples, e.g. RGB) when the series has them; else 'C' when it has a C axis of at most
        :data:`TIFF_MAX_CHANNELS` planes; else ''. Every other axis but Y and X (T time, Z depth,
        I/Q pages, a longer C, C beside S ...) counts frames.
    """
    if "S" in axes:
        return "S"
    if "C" in axes and int(shape[axes.index("C")]) <= TIFF_MAX_CHANNELS:
        return "C"
    return ""


class TiffSource(FrameSource):
    """Frames of a TIFF, read a few pages at a time with tifffile.

    Frames follow tifffile's axes of the first page series (``series[0].axes``): samples (S, e.g.
    RGB pages) are channels, and so is a C axis of at most :data:`TIFF_MAX_CHANNELS` planes
    (:func:`tiff_channel_axes`); every other axis (T, Z, I, Q, a longer C) counts frames, so an
    ImageJ hyperstack (T, Z, C, Y, X) gives T x Z frames of C channels and a single 2-D page one
    frame. An ImageJ file written with a single page header (the pixels of all its planes stored
    contiguously after it) is read by offset from the file. Pages written one by one as separate
    series of one page each are one frame each; series that differ from the first (a page of another
    size) are not read, said in a warning. A damaged file (truncated, a broken chain of
    pages, not a TIFF) is refused when opened, in one line naming it (:func:`check_tiff`), with
    tifffile's own log lines kept off the console.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        import tifffile

        self.path = path
        self._tif = None
        with tiff_reading(path) as log:
            self._tif = tifffile.TiffFile(path)
            try:
                if not self._tif.series:
                    check_tiff(self._tif, path, log)
                series = self._tif.series[0]
                key = series.keyframe
                pages = _frame_pages(self._tif.series)
                check_tiff(self._tif, path, log, [series] if pages is None else self._tif.series)
                self.dtype = np.dtype(key.dtype)
                self.pixel_size = tiff_pixel_size(self._tif, path)
                self._key_axes, self._key_shape = str(key.axes), tuple(int(v) for v in key.shape)
                if self._key_axes not in TIFF_PAGE_AXES or len(self._key_shape) != len(self._key_axes):
                    raise AffineVAEError(f"{path}: unsupported TIFF page layout {key.axes} {tuple(key.shape)}")
                if pages is not None:  # several series of one page per frame: global page indices
                    self._table, self._mode, channel_planes = np.asarray(pages, dtype=np.int64)[:, None], "pages", 1
                else:
                    if len(self._tif.series) > 1:  # series that differ (a page of another size): said, not dropped silently
                        others = self._tif.series[1:]
                        warnings.warn(f"{path}: reads its first page series ({'x'.join(map(str, series.shape))} "
                                      f"{series.axes}); {len(others)} other series (e.g. "
                                      f"{'x'.join(map(str, others[0].shape))} {others[0].axes}) differ in page shape, "
                                      "type or axes and are not read", stacklevel=user_stacklevel())
                    self._table, channel_planes = self._series_table(series)
                    self._mode = "series" if self._pages_complete(series) else "memmap"
                    if self._mode == "memmap" and getattr(series, "dataoffset", None) is None:
                        raise corrupt_tiff(path, f"{len(self._table) * channel_planes} image planes declared, "
                                                 f"{len(series.pages)} page(s) found")
                    self._offset = None if self._mode == "series" else int(series.dataoffset)
            except BaseException:
                self._tif.close()
                raise
        self.n_frames = len(self._table)
        samples = self._key_shape[self._key_axes.index("S")] if "S" in self._key_axes else 1
        y, x = self._key_shape[self._key_axes.index("Y")], self._key_shape[self._key_axes.index("X")]
        c = channel_planes * samples
        self.frame_shape = (y, x) if c == 1 else (c, y, x)

    @property
    def series_layouts(self) -> list[tuple[tuple[int, ...], str]]:
        """Each page series of the file as tifffile declares it: ``(shape, axes)``, e.g.
        ``((10, 3, 64, 64), 'TCYX')``; nothing is read."""
        return [(tuple(int(v) for v in s.shape), str(s.axes)) for s in self._tif.series]

    def _series_table(self, series) -> tuple[np.ndarray, int]:
        """Plane indices of the series (its pages, in order) per frame: (F, P) with the P planes of one
        frame's channels in channel order, and P (1 unless a C axis holds the channels)."""
        axes, shape = str(series.axes), tuple(int(v) for v in series.shape)
        ka = self._key_axes
        if not axes.endswith(ka) or shape[len(axes) - len(ka):] != self._key_shape:
            raise AffineVAEError(f"{self.path}: unsupported TIFF layout {axes} {shape} (pages {ka} {self._key_shape})")
        page_axes, page_shape = axes[:len(axes) - len(ka)], shape[:len(axes) - len(ka)]
        index = np.arange(math.prod(page_shape), dtype=np.int64).reshape(page_shape)
        if tiff_channel_axes(axes, shape) == "C":
            index = np.moveaxis(index, page_axes.index("C"), -1)
            return index.reshape(-1, index.shape[-1]), int(index.shape[-1])
        return index.reshape(-1, 1), 1

    def _pages_complete(self, series) -> bool:
        """Whether every plane of ``series`` has its own page (not an ImageJ file written with one header)."""
        return len(series.pages) == self._table.size

    def _planes(self, keys: np.ndarray) -> np.ndarray:
        """Planes ``keys`` (indices of :attr:`_table`) as stored: (len(keys), *page shape)."""
        if self._mode == "memmap":  # one page header, the planes contiguous after it
            dt = np.dtype(self.dtype).newbyteorder(self._tif.byteorder)
            mm = np.memmap(self.path, dtype=dt, mode="r", offset=self._offset,
                           shape=(self._table.size, *self._key_shape))
            out = np.array(mm[keys])
            del mm
            return out.astype(out.dtype.newbyteorder("="), copy=False)
        with tiff_reading(self.path):
            if self._mode == "pages":  # frames spread over several page series: by page index
                a = self._tif.asarray(key=keys.tolist())
            else:
                a = self._tif.asarray(key=keys.tolist(), series=0)
        return np.asarray(a).reshape(len(keys), *self._key_shape)

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        rows = self._table[start:stop]
        a = self._planes(rows.ravel()).reshape(len(rows), rows.shape[1], *self._key_shape)
        if self._key_axes == "YXS":  # (f, P, H, W, S) -> (f, P, S, H, W)
            a = np.moveaxis(a, -1, 2)
        return np.ascontiguousarray(a.reshape(len(rows), *self.frame_shape))

    def close(self) -> None:
        """Release the file this source reads (its handle or memory map)."""
        self._tif.close()


def _frame_pages(series: list) -> Optional[list[int]]:
    """Page indices of the frames when a TIFF's pages form several series of one page per frame,
    all with the first series' page shape, dtype and axes and no C axis of channels (e.g. pages
    written one by one as separate series), so the stack holds every page, as
    :func:`~affinevae.data.files.load_images` reads it; None for one series, or series that differ
    (then only the first series is read)."""
    if len(series) < 2:
        return None
    key = series[0].keyframe
    out: list[int] = []
    for s in series:
        k, pages = s.keyframe, list(s.pages)
        if (k.shape != key.shape or k.dtype != key.dtype or k.axes != key.axes
                or tiff_channel_axes(str(s.axes), tuple(s.shape)) == "C"
                or len(pages) * math.prod(k.shape) != math.prod(s.shape)
                or any(p is None or not isinstance(p.index, int) for p in pages)):
            return None
        out.extend(int(p.index) for p in pages)
    return out


def tiff_pixel_size(tif, where: Optional[str] = None) -> Optional[PixelSize]:
    """The pixel size an open ``tifffile.TiffFile`` records: OME-XML ``PhysicalSizeX`` (with
    ``PhysicalSizeXUnit``, default µm), else ImageJ's ``unit`` with the X resolution; None otherwise,
    and None when the Y size (``PhysicalSizeY``, the Y resolution) differs from it: pixels that are not
    square have no one size (:func:`~affinevae.units.square_pixel_size`; with ``where``, one warning)."""
    try:
        xml = tif.ome_metadata
        if xml:
            m = re.search(r'PhysicalSizeX="([^"]+)"', xml)
            if m:
                u = re.search(r'PhysicalSizeXUnit="([^"]+)"', xml)
                my, uy = re.search(r'PhysicalSizeY="([^"]+)"', xml), re.search(r'PhysicalSizeYUnit="([^"]+)"', xml)
                x = PixelSize(float(m.group(1)), u.group(1) if u else "µm")
                y = PixelSize(float(my.group(1)), uy.group(1) if uy else "µm") if my else None
                return square_pixel_size(x, y, where)
        ij = tif.imagej_metadata
        if ij and ij.get("unit"):
            res = tif.pages[0].tags.get("XResolution")
            if res is not None:
                num, den = res.value
                if num > 0:
                    unit = str(ij["unit"]).replace("\\u00B5", "µ")
                    yres = tif.pages[0].tags.get("YResolution")
                    ynum, yden = yres.value if yres is not None else (0, 1)
                    y = PixelSize(yden / ynum, unit) if ynum > 0 else None
                    return square_pixel_size(PixelSize(den / num, unit), y, where)
    except (AffineVAEError, ValueError, TypeError, KeyError, AttributeError):
        return None  # an unreadable or non-length unit: no pixel size
    return None


def _pil_to_array(im) -> np.ndarray:
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
        with reading(path, "image"):
            self._im = Image.open(path)
            self.n_frames = int(getattr(self._im, "n_frames", 1))
            first = _pil_to_array(self._im)
        self.frame_shape, self.dtype = first.shape, first.dtype

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        out = []
        for i in range(start, stop):  # one loop step per frame, not per object
            self._im.seek(i)
            out.append(_pil_to_array(self._im).astype(self.dtype, copy=False))
        return np.stack(out)

    def close(self) -> None:
        """Release the file this source reads (its handle or memory map)."""
        self._im.close()


class FolderSource(FrameSource):
    """A folder of image files, one frame per file in name order, read on demand."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        # hidden files (macOS ._name resource forks, .DS_Store) are skipped, as load_images does
        self.files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in FRAME_FOLDER_EXTS
                            and not p.name.startswith(".") and p.is_file())
        if not self.files:
            raise AffineVAEError(f"{path}: folder holds no {'/'.join(e[1:] for e in FRAME_FOLDER_EXTS)} images")
        first = self._one(self.files[0])
        self.n_frames, self.frame_shape, self.dtype = len(self.files), first.shape, first.dtype
        self.pixel_size = files_pixel_size(self.files, path)  # the TIFF files' own, as load_images reads them

    def _one(self, f: Path) -> np.ndarray:
        if f.suffix.lower() in TIFF_EXTS:
            src = TiffSource(str(f))
            try:
                a = src.read_raw(0, 1)[0]
            finally:
                src.close()
        else:
            from PIL import Image

            with reading(str(f), "image"), Image.open(f) as im:
                a = _pil_to_array(im)
        return a

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        out = []
        for f in self.files[start:stop]:
            a = self._one(f)
            if a.shape != tuple(self.frame_shape):
                raise AffineVAEError(f"{f}: image shape {a.shape} differs from the first image's {tuple(self.frame_shape)}")
            first = np.dtype(self.dtype)
            if a.dtype != first:
                if np.issubdtype(a.dtype, np.unsignedinteger) and np.issubdtype(first, np.unsignedinteger):
                    # 8- and 16-bit files: each by its own bit depth, as load_images reads a folder
                    a = a.astype(np.float64) * (np.iinfo(first).max / np.iinfo(a.dtype).max)
                else:
                    raise AffineVAEError(f"{f}: pixels of dtype {a.dtype}, but the first image ({self.files[0].name}) "
                                         f"has {first} (the frames of a folder share one normalisation; convert "
                                         "them to one type)")
            out.append(a)
        return np.stack(out)


def open_joined(paths: Sequence[str], open_one: Callable[[str], FrameSource]) -> FrameSource:
    """``open_one(path)`` of each of ``paths`` (one or more) as one source: the only one, or their
    :class:`ConcatSource` (frames one after another); the sources already open are closed again when
    one fails to open or they do not go together."""
    if len(paths) == 1:
        return open_one(paths[0])
    sources: list = []
    try:
        for path in paths:
            sources.append(open_one(path))
        return ConcatSource(sources)
    except BaseException:
        for src in sources:
            src.close()
        raise


#: Relative difference under which the pixel sizes of stacks read together count as one (exposures of one
#: instrument whose WCS solutions differ in the fourth digit).
PIXEL_SIZE_TOLERANCE = 1e-3


def agreed_pixel_size(found: Sequence[tuple[str, PixelSize]], where: str, differ: str, hint: str = "") -> Optional[PixelSize]:
    """The first of the pixel sizes ``found`` ((name, size) pairs: the files or HDUs read together that record
    one) when the others agree with it within :data:`PIXEL_SIZE_TOLERANCE`; None when there are none, or
    when one differs: then a warning ``'{where}: {differ} ({name} {size}, {name} {size}): none is kept{hint}'``."""
    if not found:
        return None
    name, first = found[0]
    other = next((f for f in found[1:] if not same_pixel_size(first, f[1], rel=PIXEL_SIZE_TOLERANCE)), None)
    if other is not None:
        warnings.warn(f"{where}: {differ} ({name} {first}, {other[0]} {other[1]}): none is kept{hint}", stacklevel=user_stacklevel())
        return None
    return first


def files_pixel_size(files: Sequence[Path], where: str):
    """The one :class:`~affinevae.units.PixelSize` that image ``files`` read together (a folder's, a glob's: PNG,
    JPEG, TIFF, FITS) record in their TIFF metadata (OME, ImageJ, resolution tags) or FITS sky scale (WCS), or
    None. Files that record none take the others' size and sizes that differ by more than
    :data:`PIXEL_SIZE_TOLERANCE` keep none, each said in a warning naming ``where``. Reads the TIFF and FITS
    files' headers only."""
    sizes = []
    for q in files:
        kind = image_suffix(q)
        if kind not in TIFF_EXTS + FITS_EXTS:
            continue
        try:
            src = TiffSource(str(q)) if kind in TIFF_EXTS else open_stack(str(q))
        except AffineVAEError:
            continue
        try:
            if src.pixel_size is not None:
                sizes.append((Path(q), src.pixel_size))
        finally:
            src.close()
    first = agreed_pixel_size([(q.name, size) for q, size in sizes], where, "the files record different pixel sizes",
                              " (give --pixel-size where a command takes it)")
    if first is None:
        return None
    first_file = sizes[0][0]
    if len(sizes) < len(files):
        have = {q for q, _ in sizes}
        missing = next(Path(q) for q in files if Path(q) not in have)
        warnings.warn(f"{where}: {len(files) - len(sizes)} of {len(files)} files record no pixel size (e.g. "
                      f"{missing.name}): they take {first_file.name}'s, {first}", stacklevel=user_stacklevel())
    return first


def native_dtype(dtype) -> np.dtype:
    """``dtype`` in the machine's byte order (a FITS file's big-endian ``>f4`` is float32)."""
    return np.dtype(dtype).newbyteorder("=")


class ConcatSource(FrameSource):
    """The frames of several sources one after another (e.g. the files a glob pattern matched):
    frame ``i`` of the second source is frame ``len(first) + i`` here.

    All sources must have the same frame shape (C, H, W) and pixel dtype (so that one
    normalisation, computed over all their frames, applies) and, where known, the same pixel
    size. Closing it closes them all.
    """

    def __init__(self, sources: list, path: Optional[str] = None) -> None:
        super().__init__()
        if not sources:
            raise AffineVAEError("no image sources to read")
        first = sources[0]
        for src in sources[1:]:
            if tuple(src.frame_shape) != tuple(first.frame_shape):
                raise AffineVAEError(f"{src.path}: frames of shape {tuple(src.frame_shape)}, but {first.path} has "
                                     f"{tuple(first.frame_shape)} (the images read together must match)")
            if native_dtype(src.dtype) != native_dtype(first.dtype):  # FITS files hold big-endian values
                raise AffineVAEError(f"{src.path}: pixels of dtype {native_dtype(src.dtype)}, but {first.path} has "
                                     f"{native_dtype(first.dtype)} (the images read together share one normalisation)")
        sizes = [s for s in sources if s.pixel_size is not None]
        for src in sizes[1:]:
            if not same_pixel_size(sizes[0].pixel_size, src.pixel_size, rel=PIXEL_SIZE_TOLERANCE):
                raise AffineVAEError(f"{src.path}: pixel size {src.pixel_size}, but {sizes[0].path} has "
                                     f"{sizes[0].pixel_size} (give --pixel-size to set one for all)")
        if sizes and len(sizes) < len(sources):
            missing = next(s for s in sources if s.pixel_size is None)
            warnings.warn(f"{missing.path} records no pixel size: it takes {sizes[0].path}'s, {sizes[0].pixel_size} "
                          "(give --pixel-size to set one for all)", stacklevel=user_stacklevel())
        self.sources = list(sources)
        self.path = path or (first.path if len(sources) == 1 else f"{first.path} and {len(sources) - 1} more")
        self.frame_shape, self.dtype = tuple(first.frame_shape), native_dtype(first.dtype)
        self.pixel_size = sizes[0].pixel_size if sizes else None
        self._starts = np.cumsum([0] + [s.n_frames for s in sources])
        self.n_frames = int(self._starts[-1])

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        parts = []
        for i, src in enumerate(self.sources):  # one step per source file
            lo, hi = max(start, int(self._starts[i])), min(stop, int(self._starts[i + 1]))
            if lo < hi:
                parts.append(src.read_raw(lo - int(self._starts[i]), hi - int(self._starts[i])))
        return np.concatenate(parts)

    def _read_region(self, frame: int, rows: slice, cols: slice) -> np.ndarray:
        i = int(np.searchsorted(self._starts, frame, side="right")) - 1
        return self.sources[i].read_raw_region(frame - int(self._starts[i]), rows, cols)

    def close(self) -> None:
        """Release the file this source reads (its handle or memory map)."""
        for src in self.sources:
            src.close()


@dataclasses.dataclass(frozen=True)
class StackReader:
    """A reader :func:`open_stack` dispatches to by suffix (entries of :data:`READERS`).

    Attributes:
        open: ``open(path, key, level) -> FrameSource``; ``level`` is the resolution level of a
            multiscale image (None: the first, full resolution).
        what: the format's name, for messages.
        levels: True when the format has resolution levels (``level`` is refused otherwise).
    """

    open: Callable[[str, Optional[str], Optional[int]], FrameSource]
    what: str
    levels: bool = False


#: Suffix (lower case, with the dot) -> :class:`StackReader`; :mod:`~affinevae.data.microscopy`
#: registers the electron-microscopy and Zarr readers here.
READERS: Registry = Registry("image format")


def is_array_like(obj: Any) -> bool:
    """True for an in-memory or lazy array (numpy, dask, zarr, h5py dataset): it has ``shape``,
    ``dtype`` and ``__getitem__`` and at least 2 dimensions."""
    return (not isinstance(obj, (str, Path)) and hasattr(obj, "shape") and hasattr(obj, "dtype")
            and hasattr(obj, "__getitem__") and len(getattr(obj, "shape", ())) >= 2)


def open_stack(spec: Union[str, Path, np.ndarray, FrameSource], key: Optional[str] = None,
               level: Optional[int] = None) -> FrameSource:
    """Open a large image or stack of frames for lazy, chunked reading.

    Args:
        spec: a path: ``.npy`` (memory mapped, never unpickled), ``.npz`` (the array ``key``, else
            ``images``, else ``patches``, else the only image array; memory mapped or decompressed
            as a stream, :class:`NpzSource`), ``.tif``/``.tiff`` (frames along the
            T/Z/I/Q axes tifffile reads, see :class:`TiffSource`),
            ``file.h5:dataset`` (h5py slicing; without a dataset, the file's only dataset),
            ``.png``/``.jpg``/``.gif``/``.bmp`` (Pillow; multi-frame files are stacks) or a
            folder of such files (one frame per file); ``.dm3``/``.dm4``/``.emd``/``.ser``/
            ``.mrc``/``.mrcs`` and Zarr/OME-Zarr stores through :data:`READERS`. Also an
            in-memory or lazy array (numpy, dask, zarr; read as needed; a torch tensor) (H, W), (F, H, W),
            (F, C, H, W) or (F, H, W, C), or an open :class:`FrameSource`.
        key: array name in an ``.npz``, dataset name in an HDF5 file, array path in a Zarr store.
        level: resolution level of a multiscale image (OME-Zarr); None for the first (full) one.

    Returns:
        A :class:`FrameSource`; use it as a context manager to close the file.

    Raises:
        AffineVAEError: a missing file, an unsupported suffix, an unreadable layout, a missing
            optional dependency, ``level`` for a format without levels, or a stack without pixels
            (no frames, or frames of zero width or height).
    """
    if isinstance(spec, FrameSource):
        return spec
    src = _open(spec, key, level)
    h, w = src.image_shape
    if src.n_frames == 0 or h == 0 or w == 0:
        src.close()
        raise AffineVAEError(f"{src.path}: holds no pixels ({src.n_frames} frame(s) of {h}x{w})")
    return src


def _open(spec: Union[str, Path, np.ndarray], key: Optional[str], level: Optional[int]) -> FrameSource:
    """:func:`open_stack` without its check for pixels."""
    if type(spec).__module__.startswith("torch") and hasattr(spec, "detach"):  # a tensor: its values, on the CPU
        spec = spec.detach().cpu().numpy()
    if isinstance(spec, np.ndarray) or is_array_like(spec):
        if level is not None:
            raise AffineVAEError("level applies to multiscale files (OME-Zarr), not to an in-memory array")
        return ArraySource(spec, "array" if isinstance(spec, np.ndarray) else type(spec).__name__)
    s, key = fits_hdu_spec(str(spec), key)  # astronomers' file.fits[SCI]
    p = Path(s)
    if not p.exists():
        m = HDF5_SPEC.match(s)
        if m and m.group(2) is not None and Path(m.group(1)).is_file():
            return _open_hdf5(m.group(1), m.group(2) or key)
        raise AffineVAEError(f"{s}: file not found")
    check_not_empty(p, s)
    suf = ZARR_EXTS[0] if is_zarr_dir(p) else image_suffix(p)
    if suf in READERS:
        reader = READERS.get(suf)
        if level is not None and not reader.levels:
            raise AffineVAEError(f"{s}: --level applies to multiscale images (OME-Zarr), not to {reader.what} files")
        return reader.open(s, key, level)
    if level is not None:
        raise AffineVAEError(f"{s}: --level applies to multiscale images (OME-Zarr) only")
    if key is not None and (p.is_dir() or suf in NPY_EXTS + TIFF_EXTS + PIL_STACK_EXTS):
        raise AffineVAEError(f"{s}: key {key!r} applies only to .npz, HDF5, Zarr, FITS and .dm3/.dm4/.emd/.ser files")
    if p.is_dir():
        return FolderSource(s)
    if suf in NPY_EXTS:
        return NpySource(s)
    if suf in NPZ_EXTS:
        return NpzSource(s, key)
    if suf in TIFF_EXTS:
        return TiffSource(s)
    if suf in HDF5_EXTS:
        return _open_hdf5(s, key)
    if suf in PIL_STACK_EXTS:
        return PillowSource(s)
    raise AffineVAEError(f"{s}: unsupported image file suffix '{p.suffix}'; use .npy, .npz, .tif, .h5:dataset, "
                         ".png/.jpg/.gif, a folder of images, "
                         f"{'/'.join(sorted(READERS.names()))} or a .zarr store")


def _open_hdf5(path: str, dataset: Optional[str]) -> FrameSource:
    try:
        import h5py
    except ImportError:  # pragma: no cover
        raise AffineVAEError(f"{path}: reading HDF5 needs h5py (pip install \"affinevae[hdf5]\")") from None
    with reading(path, "HDF5"):
        f = h5py.File(path, "r")
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
    try:
        check_hdf5_dataset(f, dataset, f"{path}:{dataset}", frames=1)  # no external/virtual storage
    except AffineVAEError:
        f.close()
        raise
    return ArraySource(f[dataset], f"{path}:{dataset}", owner=f)
