"""Load user image files into an :class:`~affinevae.data.imageset.ImageSet`.

Supported inputs (see :func:`load_images`):

- ``.npy`` arrays (never unpickled);
- ``.npz`` archives (array ``images``, else ``patches``, else the only image array, or ``key``;
  ``labels``, ``angle``, ``shift`` and ``scale`` arrays beside it are picked up);
- TIFF stacks and ImageJ/OME hyperstacks (``.tif``/``.tiff``: images along the T/Z/I/Q axes
  tifffile reads, channels from RGB samples or a C axis of at most 4 planes);
- HDF5 datasets, ``file.h5:dataset`` or ``file.hdf5:/group/dataset`` (needs ``h5py``:
  ``pip install affinevae[hdf5]``);
- MRC files, ``.mrcs``/``.mrc`` (a cryo-EM particle stack (N, H, W), or one image; memory mapped
  through mrcfile: ``pip install affinevae[microscopy]``);
- single ``.png``/``.jpg``/``.jpeg`` images and folders of PNG/JPEG/TIFF files (sorted by name);
- QuickDraw "numpy bitmap" files, (N, 784) uint8 arrays read as (N, 1, 28, 28); several class
  files (a comma-separated list or a glob of ``.npy`` paths) make one labelled set, see
  :func:`load_quickdraw`.

Array shapes accepted: (N, H, W); (N, C, H, W); (N, H, W, C) with C in {1, 3, 4} when the
last axis is that small and the second is not (transposed to channels-first); (H, W), one
image; (N, 784), flattened 28x28 images. Pixel values go through the one normalisation rule
of :func:`~affinevae.data.imageset.normalise_images`: the result is always float32
(N, C, H, W), in [0, 1] unless ``standardise``.

Every problem the user can fix raises :class:`~affinevae.errors.AffineVAEError` with a one-line
message naming the file: a missing file, an unsupported extension, a wrong rank, zero images,
NaN/inf pixels, mixed image sizes, labels that do not match the image count, or a file the
underlying library cannot read ("PATH: cannot read ...: reason").
"""

from __future__ import annotations

import contextvars
import dataclasses
import glob as _glob
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import AffineVAEError, user_stacklevel
from ..limits import check_array, check_hdf5_dataset, check_npy_header
from .formats import (AUX_KEYS, DEFAULT_KEYS, FITS_EXTS, FOLDER_EXTS, HDF5_EXTS, HDF5_SPEC, META_KEYS, META_STRINGS, MRC_EXTS,
                      NPY_EXTS, NPY_MAGIC, NPZ_EXTS, PATCH_SET_KIND, PIL_EXTS, RSCIIO_EXTS, SUPPORTED, TIFF_EXTS, cannot_read,
                      check_not_empty, check_npy_magic, file_magic, fits_hdu_spec, image_suffix, is_zarr_dir, npz_image_key,
                      pickled_npy, reading)
from .imageset import LABELS_SOURCE, ImageSet, PixelScaling, check_stretch, scale_images

QUICKDRAW_PREFIX = "full_numpy_bitmap_"

@dataclasses.dataclass(frozen=True)
class _Reading:
    """How the :func:`load_images` call in progress scales pixels (its ``scaling``, ``stretch`` and
    ``fill_nan``), for the readers below it."""

    scaling: Optional[PixelScaling] = None
    stretch: str = "auto"
    fill_nan: bool = False


_READING: contextvars.ContextVar[_Reading] = contextvars.ContextVar("affinevae_reading", default=_Reading())

_ZIP_MAGIC = b"PK"  # local file header or, for an empty archive, end of directory
_GLOB_CHARS = re.compile(r"[*?\[]")


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------

def load_images(path: str, key: Optional[str] = None, labels: Optional[str] = None,
                standardise: bool = False, n: Optional[int] = None,
                scaling: Optional[PixelScaling] = None, stretch: str = "auto", fill_nan: bool = False) -> ImageSet:
    """Load user images from ``path`` into an :class:`ImageSet`.

    Args:
        path: one of
            - a ``.npy`` file: an array of images (shapes in the module docstring); pickled
              object arrays are refused, never unpickled;
            - a ``.npz`` archive: the array named ``key``, by default ``images``, else
              ``patches``, else the only array that is not ``labels``/``angle``/``shift``/
              ``scale``; those four arrays, where present, become the set's labels (N,),
              true rotation angle (N,) in radians, shift (N, 2) in half image widths and
              zoom factor scale (N,); a patch set written by ``affinevae patches`` (a
              ``kind`` scalar) also gives ``ImageSet.meta`` its ``kind``, ``window`` and
              ``noise_sigma`` (the last only without ``standardise``);
            - a ``.tif``/``.tiff`` file: a (multi-page) TIFF stack or ImageJ/OME hyperstack, read
              by tifffile's axes: every plane along T, Z, I or Q (and a C axis of more than
              :data:`~affinevae.data.stacks.TIFF_MAX_CHANNELS` planes) is an image, RGB samples
              give C=3 and a shorter C axis the channels; a single 2-D page is one image;
            - ``file.h5:dataset`` or ``file.hdf5:/group/dataset``: an HDF5 dataset (``key``
              may name it instead); without a dataset name, the file's only dataset (or one
              called ``images``/``patches`` at the root); ``labels``/``angle``/``shift``/
              ``scale`` datasets in the same group are picked up;
            - a ``.mrcs``/``.mrc`` file: an MRC stack (a cryo-EM particle stack, (N, H, W)) or one
              image, memory mapped through mrcfile (extra ``[microscopy]``);
            - a ``.png``/``.jpg``/``.jpeg`` file: one image;
            - a folder of PNG/JPEG/TIFF files, read in name order (grayscale gives C=1, RGB
              C=3, an alpha channel is dropped; grayscale images are repeated to RGB when the
              folder mixes both); all images must have the same height and width;
            - several ``.npy`` files, as a comma-separated list or a glob pattern such as
              ``"quickdraw/*.npy"``: one class per file, see :func:`load_quickdraw`.
        key: name of the array (``.npz``) or dataset (HDF5) holding the images; a FITS file's HDU; the
            index of the image (or image stack) among a ``.dm3``/``.dm4``/``.emd``/``.ser`` file's signals,
            as ``info`` lists them (default its first image; read by rosettasciio, extra ``[microscopy]``,
            with the pixel size it records).
        labels: path to a ``.npy``, ``.txt`` or ``.csv`` file of non-negative integer class
            labels, one per image, in image order (-1: unknown, for semi-supervised models);
            overrides labels found with the images.
        standardise: scale float pixels to zero mean and unit standard deviation instead of
            min-max scaling values outside [0, 1] (see :func:`normalise_images`).
        n: keep only the first ``n`` images (None: all). From an ``.npy``, ``.npz``, ``.mrc``/``.mrcs``,
            TIFF, HDF5 or FITS stack (without ``standardise``) only those are held in memory: the file
            is memory mapped, sliced, decompressed as a stream or read a few pages at a time, and its pixel range and NaN
            check still cover every image, read in chunks, so the images equal the first ``n``
            of the whole file's bit for bit. Other formats are read whole, then cut. ``labels``
            (and the file's own ``labels``/``angle``/... arrays) still give one value per image
            of the whole file.
        scaling: a trained run's :class:`~affinevae.data.imageset.PixelScaling` (``Run.pixel_scaling``)
            to scale float and signed-integer pixels with, instead of the file's own range, so
            that images give the pixels the model was trained on whichever file holds them
            (min-max values outside the training range are clipped to [0, 1], with a warning).
            The scaling the set got is in ``meta['pixel_scaling']``.
        stretch: how float pixels outside [0, 1] are scaled onto it
            (:data:`~affinevae.data.imageset.STRETCHES`): 'auto' (default: min-max, or an asinh
            stretch when a few bright pixels hold most of the range, said in the warning),
            'linear' (min-max) or 'asinh' (also for integer pixels); see
            :func:`~affinevae.data.imageset.choose_scaling`. Ignored when ``scaling`` is given.
        fill_nan: replace NaN and infinite pixels (masked ones) by their image's median, with a
            warning, instead of refusing the file (:func:`~affinevae.data.imageset.fill_nonfinite`);
            the file is then read whole (``n`` cuts after).

    Returns:
        ImageSet with ``images`` float32 (N, C, H, W) in [0, 1] (or standardised), and
        ``labels`` int64 (N,) where known; ``source`` is ``path``.

    Raises:
        AffineVAEError: one-line message naming the file, for any input problem.
    """
    if not isinstance(path, (str, Path)):  # str() of an array would be taken for a file name
        raise AffineVAEError(f"load_images reads files: path must be a file name, got {type(path).__name__} (arrays "
                             "in memory: affinevae.data.as_images, or ImageSet(normalise_images(array)))")
    path, key = fits_hdu_spec(str(path), key)  # astronomers' file.fits[SCI]
    token = _READING.set(_Reading(PixelScaling.from_value(scaling), check_stretch(stretch), bool(fill_nan)))
    try:
        data, looked_up = _load_images(str(path), key, labels, standardise, n)
    finally:
        _READING.reset(token)
    if "pixel_size" not in data.meta and not looked_up:  # a microscope's or telescope's file: its pixel size
        data = _with_pixel_size(data, recorded_pixel_size(str(path), key))
    return data


def _with_pixel_size(data: ImageSet, size) -> ImageSet:
    """``data`` with the :class:`~affinevae.units.PixelSize` ``size`` its file records in its ``meta``
    (``pixel_size``, ``unit``); as it was for None."""
    if size is not None:
        data.meta.update(pixel_size=size.value, unit=size.unit)
    return data


#: Suffixes of the image files that can record a pixel size (:func:`recorded_pixel_size` reads it).
PIXEL_SIZE_EXTS = MRC_EXTS + TIFF_EXTS + FITS_EXTS + RSCIIO_EXTS


def recorded_pixel_size(spec: str, key: Optional[str] = None):
    """The :class:`~affinevae.units.PixelSize` one image file records (MRC voxel size, TIFF resolution or
    OME metadata, FITS pixel scale, DM/EMD/SER calibration), read from its header; None for other files,
    a file without one, or one the frame reader cannot open (the images were read otherwise)."""
    p = Path(spec)
    if not p.is_file() or image_suffix(p) not in PIXEL_SIZE_EXTS:
        return None
    if image_suffix(p) in FITS_EXTS and key is not None and str(key).strip().lower() == "all":
        from .astro import all_hdus_pixel_size  # every cut-out HDU's, stacked

        try:
            return all_hdus_pixel_size(spec)
        except AffineVAEError:
            return None
    from .stacks import open_stack

    try:
        with open_stack(spec, key=key if image_suffix(p) in FITS_EXTS + RSCIIO_EXTS else None) as src:
            return src.pixel_size
    except AffineVAEError:
        return None


def _load_images(spec: str, key: Optional[str], labels: Optional[str], standardise: bool,
                 n: Optional[int]) -> tuple[ImageSet, bool]:
    """The images :func:`load_images` reads, and whether their file's pixel size was already looked
    up (a stack read lazily through the frame reader, which holds it)."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise AffineVAEError(f"{spec}: n must be an integer >= 1, got {n!r}")
    first = None if n is None or standardise or _READING.get().fill_nan else _load_first(spec, key, int(n))
    if first is not None:
        data, total = first
        if labels is not None:  # one per image of the file, or at least the first n
            lab, names = read_labels(labels, total, spec, at_least=len(data), with_names=True)
            set_labels(data, lab[:len(data)], names, source=labels)
        return data, True  # (its frame reader gave the pixel size)
    p = Path(spec)
    looked_up = False  # whether the pixel size was read with the images (then not looked up again)
    if p.exists():
        if p.is_dir() and is_zarr_dir(p):  # a Zarr / OME-Zarr store (its finest level; key: a group's array)
            from .microscopy import open_zarr

            data = _whole_source(open_zarr(spec, key), spec, standardise)
            looked_up = True
        elif p.is_dir():
            _no_key(spec, key)
            data = _load_folder(p, spec, standardise)
        else:
            data = _load_file(p, spec, key, standardise)
            looked_up = image_suffix(p) in MRC_EXTS + RSCIIO_EXTS  # their readers give it with the frames
    elif "," in spec or _GLOB_CHARS.search(spec):
        _no_key(spec, key)
        data = _load_many(spec, standardise)
    else:
        m = HDF5_SPEC.match(spec)
        if m and m.group(2) is not None:
            if not Path(m.group(1)).is_file():
                raise AffineVAEError(f"{m.group(1)}: file not found")
            data = _load_hdf5(Path(m.group(1)), m.group(2) or key, spec, standardise)
        else:
            raise AffineVAEError(f"{spec}: file not found")
    if n is not None and n > len(data):
        warnings.warn(f"{spec}: n={n} asks for more images than the {len(data)} it holds; all {len(data)} are used",
                      stacklevel=user_stacklevel())
    total = len(data)
    if n is not None and n < total:
        data = data.subset(slice(0, int(n)))
    if labels is not None:  # one per image of the file, or with n at least the first n
        lab, names = read_labels(labels, total, spec, at_least=len(data) if n is not None else None, with_names=True)
        set_labels(data, lab[:len(data)], names, source=labels)
    return data, looked_up


def _load_first(spec: str, key: Optional[str], n: int) -> Optional[tuple[ImageSet, int]]:
    """The first ``n`` images of a stack read lazily, with the whole file's normalisation and its
    recorded pixel size, and the file's image count; None when ``spec`` is not such a stack (another
    format, no more than ``n`` images, or a layout the frame reader reads otherwise): :func:`load_images`
    then reads it whole."""
    p = Path(spec)
    m = HDF5_SPEC.match(spec)
    if not p.exists() and m and m.group(2) is not None and Path(m.group(1)).is_file():
        return _load_hdf5(Path(m.group(1)), m.group(2) or key, spec, False, first=n)
    if p.is_dir() and is_zarr_dir(p):  # a Zarr / OME-Zarr store: its first n frames, chunk by chunk
        from .microscopy import open_zarr

        source = _frame_reader(lambda: open_zarr(spec, key))
        if source is None:
            return None
        with source:  # the frames as the whole read gives them: (F, H, W) or (F, C, H, W) as read
            return _first_frames(source, (source.n_frames, *source.frame_shape), spec, n)
    if not p.is_file():
        return None
    ext = image_suffix(p)
    if ext in HDF5_EXTS:
        check_not_empty(p, spec)
        return _load_hdf5(p, key, spec, False, first=n)
    if ext not in NPY_EXTS + NPZ_EXTS + MRC_EXTS + TIFF_EXTS + FITS_EXTS:
        return None
    check_not_empty(p, spec)
    if ext in TIFF_EXTS:
        return _first_tiff_frames(p, spec, key, n)
    if ext in NPZ_EXTS or (ext in NPY_EXTS and file_magic(p, spec).startswith(_ZIP_MAGIC)):  # or one named .npy
        return _first_npz(p, spec, key, n)
    if ext not in FITS_EXTS:
        _no_key(spec, key)
    from .stacks import open_stack

    source = _frame_reader(lambda: open_stack(spec, key=key if ext in FITS_EXTS else None))
    if source is None:
        return None
    with source:
        return _first_frames(source, source.array.shape, spec, n)


def _first_npz(p: Path, spec: str, key: Optional[str], n: int) -> Optional[tuple[ImageSet, int]]:
    """:func:`_first_frames` of an ``.npz``'s image array read lazily
    (:class:`~affinevae.data.stacks.NpzSource`), with the archive's ground truth and patch-set
    scalars (read whole: one value per image)."""
    from .stacks import NpzSource

    source = _frame_reader(lambda: NpzSource(spec, key))
    if source is None:
        return None
    with source:
        try:
            npz = np.load(p, allow_pickle=False)
        except Exception:  # noqa: BLE001 - the whole read says what is wrong with the file
            return None
        with npz:
            extra, meta = _npz_extras(npz, source.key, spec, False)
        return _first_frames(source, source.array.shape, spec, n, meta=meta, **extra)


def _frame_reader(open_source):
    """``open_source()`` (a FrameSource), or None when the frame reader refuses the file's layout or
    the file (the whole read then takes it, with its own shape rules and messages)."""
    try:
        return open_source()
    except AffineVAEError:
        return None


def _first_tiff_frames(p: Path, spec: str, key: Optional[str], n: int) -> Optional[tuple[ImageSet, int]]:
    """:func:`_first_frames` of a TIFF stack read a few pages at a time, when the frame reader's
    frames are the images :func:`_read_tiff` makes of the whole file (its page series, their axes)."""
    _no_key(spec, key)
    from .stacks import TiffSource

    source = _frame_reader(lambda: TiffSource(spec))
    if source is None:
        return None
    with source:
        shapes = [_nchw_shape(shape, spec, axes) for shape, axes in source.series_layouts]
        if len({s[1:] for s in shapes}) != 1:
            return None  # mixed image sizes: the whole read says so
        return _first_frames(source, None, spec, n, whole=(sum(s[0] for s in shapes), *shapes[0][1:]))


def _first_frames(source, shape: Optional[tuple], spec: str, n: int, whole: Optional[tuple] = None,
                  meta: Optional[dict] = None, **extra) -> Optional[tuple[ImageSet, int]]:
    """``source``'s (a :class:`~affinevae.data.stacks.FrameSource` over an array of raw ``shape``)
    first ``n`` frames as an ImageSet (``extra``: per-image arrays of the whole file, cut to ``n``;
    ``meta``: the set's ``meta``) and the image count, when its frames are the images
    :func:`_to_nchw` makes of the whole array (or the (N, C, H, W) ``whole`` given) and there are
    more than ``n``; else None."""
    whole = _nchw_shape(shape, spec) if whole is None else tuple(whole)
    frames = (source.n_frames, *source.frame_shape)
    if len(frames) == 3:
        frames = (frames[0], 1, *frames[1:])
    if tuple(frames) != tuple(whole) or n >= whole[0]:
        return None
    aux = _check_aux(extra, spec)
    for k, v in aux.items():
        if len(v) != whole[0]:
            raise AffineVAEError(f"{spec}: {len(v)} {k} values for {whole[0]} images")
    check_array((n, *whole[1:]), spec, f"the first {n} images", copies=3)
    source.use_stretch(_READING.get().stretch)
    source.use_scaling(_READING.get().scaling)  # a run's scaling, else the stack's own (one streaming pass)
    data = ImageSet(source.read(0, n), source=spec, meta=dict(meta or {}), **{k: v[:n] for k, v in aux.items()})
    if source.pixel_scaling is not None:
        data.meta["pixel_scaling"] = source.pixel_scaling.to_dict()
    if "pixel_size" not in data.meta:  # the file's own, as recorded_pixel_size reads it: not opened again
        data = _with_pixel_size(data, source.pixel_size)
    return data, int(whole[0])


def _nchw_shape(shape: tuple, spec: str, axes: Optional[str] = None) -> tuple:
    """The (N, C, H, W) shape :func:`_to_nchw` gives an array of ``shape`` (or, with tifffile's
    ``axes``, :func:`_tiff_series`), found without reading one (on a zero-stride view of one
    element); its errors are the same."""
    view = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=tuple(int(v) for v in shape),
                                           strides=(0,) * len(shape), writeable=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the read of the images says them
        return tuple((_to_nchw(view, spec) if axes is None else _tiff_series_view(view, axes, spec)).shape)


def load_quickdraw(paths: Sequence[str], n_per_class: Optional[int] = None,
                   standardise: bool = False) -> ImageSet:
    """Load QuickDraw "numpy bitmap" files, one class per file, into one labelled set.

    Args:
        paths: ``.npy`` files in class order, e.g. ``full_numpy_bitmap_cat.npy``; each holds
            (N_k, 784) uint8 drawings (28x28 pixels, flattened row by row), read as
            (N_k, 1, 28, 28). Any other accepted image array shape works too, as long as all
            files give the same (C, H, W).
        n_per_class: keep at most the first this many images of each file (all by default).
        standardise: as for :func:`load_images`.

    Returns:
        ImageSet with ``images`` float32 (sum N_k, C, H, W) in [0, 1] (uint8 / 255),
        ``labels`` int64 0..K-1 in the order of ``paths``, and ``class_names`` the file
        stems without a ``full_numpy_bitmap_`` prefix (``full_numpy_bitmap_cat.npy`` ->
        ``"cat"``).

    Raises:
        AffineVAEError: no paths, a missing or unreadable file, a bad ``n_per_class`` or
            files of different image sizes.
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise AffineVAEError("QuickDraw: no .npy files given")
    if n_per_class is not None and (isinstance(n_per_class, bool) or int(n_per_class) != n_per_class
                                    or n_per_class < 1):
        raise AffineVAEError(f"QuickDraw: n_per_class must be a positive integer, got {n_per_class!r}")
    arrays, names, counts = [], [], []
    first_shape = None
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise AffineVAEError(f"{path}: file not found")
        if p.suffix.lower() != ".npy":
            raise AffineVAEError(f"{path}: QuickDraw class files must be .npy, got '{p.suffix}'")
        arr = _read_npy(p, path, mmap=n_per_class is not None)
        if n_per_class is not None:
            arr = arr[:n_per_class]
        arr = _to_nchw(np.array(arr), path)
        if first_shape is None:
            first_shape = (arr.shape[1:], path)
        elif arr.shape[1:] != first_shape[0]:
            raise AffineVAEError(f"{path}: images of shape {_chw(arr.shape[1:])} differ from "
                                 f"{_chw(first_shape[0])} in {first_shape[1]}")
        arrays.append(arr)
        counts.append(len(arr))
        stem = p.stem
        names.append(stem[len(QUICKDRAW_PREFIX):] if stem.startswith(QUICKDRAW_PREFIX) else stem)
    source = ",".join(paths)
    labels = np.repeat(np.arange(len(paths), dtype=np.int64), counts)
    return _scaled_set(np.concatenate(arrays), source, standardise, labels=labels, class_names=names)


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------

def _no_key(spec: str, key: Optional[str]) -> None:
    if key is not None:
        raise AffineVAEError(f"{spec}: key {key!r} applies only to .npz, HDF5, FITS and .dm3/.dm4/.emd/.ser files")


def _load_file(p: Path, spec: str, key: Optional[str], standardise: bool) -> ImageSet:
    check_not_empty(p, spec)
    ext = image_suffix(p)
    if ext in NPY_EXTS:
        if file_magic(p, spec).startswith(_ZIP_MAGIC):  # an .npz saved under a .npy name
            return _load_npz(p, spec, key, standardise)
        _no_key(spec, key)
        return _finish(_read_npy(p, spec), spec, standardise)
    if ext in NPZ_EXTS:
        return _load_npz(p, spec, key, standardise)
    if ext in TIFF_EXTS:
        _no_key(spec, key)
        return _finish(_read_tiff(p, spec), spec, standardise)
    if ext in HDF5_EXTS:
        return _load_hdf5(p, key, spec, standardise)
    if ext in PIL_EXTS:
        _no_key(spec, key)
        transparent: list = []
        arr = _read_pil(p, spec, transparent)
        if transparent:
            warnings.warn(f"{spec}: the image's transparency (an alpha channel) is dropped: its colour is read whatever "
                          "its alpha", stacklevel=user_stacklevel())
        return _finish(arr, spec, standardise)
    if ext in MRC_EXTS:  # a particle stack (N, H, W), or one image
        _no_key(spec, key)
        from .microscopy import open_mrc

        return _whole_source(open_mrc(str(p)), spec, standardise)
    if ext in FITS_EXTS:  # a cube of cut-outs (N, H, W) or (N, C, H, W), or one image; key: the HDU
        from .astro import read_fits

        return _finish(read_fits(str(p), key), spec, standardise)
    if ext in RSCIIO_EXTS:  # an instrument's image or image stack (rosettasciio); key: the image's index
        from .microscopy import open_rsciio

        return _whole_source(open_rsciio(str(p), key), spec, standardise)
    kind = f"'{p.suffix}'" if p.suffix else "(no extension)"
    raise AffineVAEError(f"{spec}: unsupported file type {kind}; supported: {', '.join(SUPPORTED)}, "
                         "a folder of images, or a comma-separated list or glob of .npy files")


def _whole_source(source, spec: str, standardise: bool) -> ImageSet:
    """Every frame of an open frame reader (MRC, an instrument file, a Zarr store: closed here) as a set,
    :func:`_finish`-ed, with the pixel size it read with them (load_images does not open the file again)."""
    with source:
        return _with_pixel_size(_finish(source.read_raw(0, source.n_frames), spec, standardise), source.pixel_size)


def _finish(arr: np.ndarray, spec: str, standardise: bool, **extra) -> ImageSet:
    """Shape to (N, C, H, W), then :func:`_scaled_set`."""
    return _scaled_set(_to_nchw(arr, spec), spec, standardise, **extra)


def _scaled_set(arr: np.ndarray, spec: str, standardise: bool, **extra) -> ImageSet:
    """Normalise images ``arr`` as the :func:`load_images` call in progress asks (:class:`_Reading`)
    and wrap them in an ImageSet (``extra``: its other fields) whose ``meta['pixel_scaling']``
    records a data-set-wide scaling (a run keeps it)."""
    how = _READING.get()
    images, used = scale_images(arr, spec, standardise, how.scaling, stretch=how.stretch, fill_nan=how.fill_nan)
    data = ImageSet(images, source=spec, **extra)
    if used is not None:
        data.meta["pixel_scaling"] = used.to_dict()
    return data


def is_pattern(path: str) -> bool:
    """Whether ``path`` is a glob pattern (``*``, ``?``, ``[...]``) rather than a path that exists as written
    or a FITS file's HDU (``file.fits[SCI]``)."""
    path = str(path)
    return bool(_GLOB_CHARS.search(path)) and not Path(path).exists() and fits_hdu_spec(path, None)[0] == path


def expand_pattern(path: str) -> list[str]:
    """The files a glob pattern (``*``, ``?``, ``[...]``) names, sorted by name; a path without
    pattern characters, or one that exists as written, is returned alone (not checked).

    Raises:
        AffineVAEError: ``"PATTERN: no file matches this pattern"`` when a pattern matches nothing.
    """
    path = str(path)
    if not is_pattern(path):
        return [path]  # (file.fits[SCI]: an HDU, not a pattern)
    hits = sorted(_glob.glob(path))
    if not hits:
        raise AffineVAEError(f"{path}: no file matches this pattern")
    return hits


def _load_many(spec: str, standardise: bool) -> ImageSet:
    """A comma-separated list and/or glob patterns of files."""
    files: list[str] = []
    for part in (s.strip() for s in spec.split(",")):
        if not part:
            continue
        hits = expand_pattern(part)
        if hits == [part] and not Path(part).is_file():
            raise AffineVAEError(f"{part}: file not found")
        files.extend(hits)
    if not files:
        raise AffineVAEError(f"{spec}: no files given")
    exts = {image_suffix(f) for f in files}
    if exts <= set(NPY_EXTS):
        return load_quickdraw(files, standardise=standardise)
    if exts <= set(FOLDER_EXTS):
        return _load_image_files([Path(f) for f in files], spec, standardise, name_ordered="," not in spec)
    raise AffineVAEError(f"{spec}: a list or glob of files must be all .npy (one class per file) or all "
                         f"image files ({', '.join(FOLDER_EXTS)}); got {', '.join(sorted(e or '(none)' for e in exts))}")


# --------------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------------

def _chw(shape) -> str:
    return "x".join(str(int(v)) for v in shape)


def _to_nchw(arr: np.ndarray, spec: str) -> np.ndarray:
    """Bring an image array of an accepted shape (module docstring) to (N, C, H, W)."""
    arr = np.asarray(arr)
    shape = arr.shape
    if arr.ndim == 2:
        if shape[1] == 784 and shape[0] != 784:  # QuickDraw / flattened MNIST rows
            arr = arr.reshape(shape[0], 1, 28, 28)
        else:
            arr = arr[None, None]
    elif arr.ndim == 3:
        if shape[2] in (3, 4) and shape[0] > 4 and shape[1] > 4:
            warnings.warn(f"{spec}: shape {shape} read as {shape[0]} images of {shape[1]}x{shape[2]} pixels; "
                          f"save one colour image as (1, H, W, C)", stacklevel=user_stacklevel())
        arr = arr[:, None]
    elif arr.ndim == 4:
        if shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4):
            arr = arr.transpose(0, 3, 1, 2)
    else:
        raise AffineVAEError(f"{spec}: images must have shape (N, H, W), (N, C, H, W), (N, H, W, C) or (H, W); "
                             f"got a rank-{arr.ndim} array of shape {shape}")
    if arr.shape[0] == 0:
        raise AffineVAEError(f"{spec}: contains zero images (array shape {shape})")
    if 0 in arr.shape[1:]:
        raise AffineVAEError(f"{spec}: images are empty (array shape {shape})")
    return arr


# --------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------

def _read_npy(p: Path, spec: str, mmap: bool = False) -> np.ndarray:
    """A .npy file's array, refusing pickles."""
    check_npy_magic(p, spec)
    if not mmap:
        with open(p, "rb") as fh:
            check_npy_header(fh, spec, copies=3)  # the declared size, before anything is allocated
    try:
        arr = np.load(p, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise pickled_npy(spec) from None
        raise cannot_read(spec, ".npy", e) from None
    except Exception as e:  # noqa: BLE001 - any library failure is a user file problem
        if isinstance(e, MemoryError):
            raise
        raise cannot_read(spec, ".npy", e) from None
    if arr.dtype.hasobject:
        raise pickled_npy(spec)
    return arr


def _load_npz(p: Path, spec: str, key: Optional[str], standardise: bool) -> ImageSet:
    magic = file_magic(p, spec)
    if not (magic.startswith(_ZIP_MAGIC) or magic.startswith(NPY_MAGIC)):
        raise AffineVAEError(f"{spec}: cannot read .npz: not a NumPy .npz (zip) archive")
    try:
        npz = np.load(p, allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        if isinstance(e, MemoryError):
            raise
        raise cannot_read(spec, ".npz", e) from None
    if not hasattr(npz, "files"):  # np.load returned a plain array: a .npy with an .npz name
        _no_key(spec, key)
        if npz.dtype.hasobject:
            raise pickled_npy(spec)
        return _finish(npz, spec, standardise)
    with npz:
        k = npz_image_key(list(npz.files), key, spec)

        arr = _npz_array(npz, k, spec)
        extra, meta = _npz_extras(npz, k, spec, standardise)
    return _finish(arr, spec, standardise, meta=meta, **_check_aux(extra, spec))


def _npz_array(npz, name: str, spec: str) -> np.ndarray:
    """Array ``name`` of the open ``np.load`` archive ``npz``: its declared size checked before it is
    decompressed, a pickled object array refused, any failure one line naming ``spec``."""
    try:
        if f"{name}.npy" in npz.zip.namelist():
            with npz.zip.open(f"{name}.npy") as fh:
                check_npy_header(fh, f"{spec}:{name}", copies=3)  # before decompressing
        a = npz[name]
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise AffineVAEError(f"{spec}: array {name!r} is a pickled object array, which is never "
                                 "loaded; save numeric arrays") from None
        raise cannot_read(spec, f"array {name!r}", e) from None
    except Exception as e:  # noqa: BLE001
        if isinstance(e, (MemoryError, AffineVAEError)):
            raise
        raise cannot_read(spec, f"array {name!r}", e) from None
    if a.dtype.hasobject:
        raise AffineVAEError(f"{spec}: array {name!r} is a pickled object array, which is never loaded")
    return a


def _npz_extras(npz, key: str, spec: str, standardise: bool) -> tuple[dict, dict]:
    """The ground-truth arrays (:data:`AUX_KEYS`, unchecked) and ``ImageSet.meta`` (:func:`_read_meta`)
    that the open archive ``npz`` holds beside its image array ``key``."""
    names = list(npz.files)
    extra = {n: _npz_array(npz, n, spec) for n in AUX_KEYS if n in names and n != key}
    meta = _read_meta({n: _npz_array(npz, n, spec) for n in META_KEYS if n in names and n != key}, spec, standardise)
    if (meta.get("kind") == PATCH_SET_KIND and not {"lattice_order", "lattice_fold"} <= meta.keys()
            and "objects_per_frame" not in meta
            and "centers" in names
            and "grid_shape" not in names):  # a patch set written before its arrangement (or its fold) was recorded
        meta.update(_arrangement(npz, names, spec))
    return extra, meta


def _arrangement(npz, names: list, spec: str) -> dict:
    """``spacing``, ``lattice_order`` and ``lattice_fold`` of an older patch set's objects, from its ``positions`` (N, 2)
    (else its ``centers``) and ``frames`` (N,) (:func:`~affinevae.data.objects.object_arrangement`); empty when they do
    not read."""
    from .objects import object_arrangement

    try:
        centers = np.asarray(_npz_array(npz, "positions" if "positions" in names else "centers", spec), dtype=np.float64)
        if centers.ndim != 2 or centers.shape[1:] != (2,) or not np.isfinite(centers).all():
            return {}
        frames = np.asarray(_npz_array(npz, "frames", spec)) if "frames" in names else None
        if frames is not None and frames.shape != (len(centers),):
            return {}
        return object_arrangement(centers, frames)
    except (AffineVAEError, ValueError, TypeError):
        return {}


def _read_meta(found: dict, spec: str, standardise: bool) -> dict:
    """``ImageSet.meta`` from the META_KEYS scalars of an .npz (only when it names its ``kind``).

    ``noise_sigma`` is in the units of the [0, 1] normalisation, so it is left out when the
    images are standardised instead.
    """
    if "kind" not in found:
        return {}
    meta = {}
    for name, v in found.items():
        v = np.asarray(v)
        if v.ndim != 0:
            raise AffineVAEError(f"{spec}: {name} must be a scalar, got shape {v.shape}")
        if name in META_STRINGS:
            if v.dtype.kind != "U":
                raise AffineVAEError(f"{spec}: {name} must be a string, got dtype {v.dtype}")
            meta[name] = str(v)
        elif not np.issubdtype(v.dtype, np.number) or not np.isfinite(v) or (v < 0 and name != "lattice_order"):
            raise AffineVAEError(f"{spec}: {name} must be a finite number >= 0, got {v!r}")
        elif name == "window":
            meta[name] = int(v)
        elif name in ("pixel_size", "spacing", "objects_per_frame", "lattice_fold"):  # pixels, counts: not intensities
            meta[name] = float(v)
        elif name == "lattice_order":  # may be below 0 (less order than chance)
            meta[name] = float(v)
        elif not standardise:
            meta[name] = float(v)
    return meta


def _check_aux(extra: dict, spec: str) -> dict:
    """Validate ground-truth arrays: labels/angle/scale (N,), shift (N, 2)."""
    out = {}
    for name, v in extra.items():
        v = np.asarray(v)
        if not np.issubdtype(v.dtype, np.number) and v.dtype != bool:
            raise AffineVAEError(f"{spec}: {name} must be numeric, got dtype {v.dtype}")
        if name == "shift":
            if v.ndim != 2 or v.shape[1] != 2:
                raise AffineVAEError(f"{spec}: shift must have shape (N, 2), got {v.shape}")
            v = v.astype(np.float32)
        else:
            if v.ndim == 2 and v.shape[1] == 1:
                v = v[:, 0]
            if v.ndim != 1:
                raise AffineVAEError(f"{spec}: {name} must have shape (N,), got {v.shape}")
            if name != "labels":
                v = v.astype(np.float32)
        if name != "labels" and not np.all(np.isfinite(v)):
            raise AffineVAEError(f"{spec}: {name} has NaN or infinite values")
        out[name] = v
    return out


def _read_tiff(p: Path, spec: str) -> np.ndarray:
    """A TIFF file's images as (N, C, H, W) (or an array _to_nchw accepts).

    tifffile's log lines are kept off the console; a truncated or otherwise damaged file is
    refused in one line naming it (see :func:`~affinevae.data.stacks.check_tiff`).
    """
    import tifffile

    from .stacks import check_tiff, tiff_reading

    with tiff_reading(spec) as log, tifffile.TiffFile(p) as tf:
        for s in tf.series:  # declared sizes, before any page is decoded
            check_array(s.shape, spec, "the declared TIFF images", copies=3)
        check_tiff(tf, spec, log)  # zero pages, a broken page chain, data past the end: one line
        types = [np.dtype(s.dtype) for s in tf.series]
        for i, t in enumerate(types[1:], 1):  # joined, one type's values would be scaled by the other's range
            if t != types[0]:
                raise AffineVAEError(f"{spec}: page series {i} holds {t} pixels, the first {types[0]} (mixed pixel "
                                     "types, each scaled by its own rule: write the images as one type)")
        parts = [_tiff_series(s.asarray(), s.axes, spec) for s in tf.series]
    first = parts[0]
    for i, part in enumerate(parts[1:], 1):
        if part.shape[1:] != first.shape[1:]:
            raise AffineVAEError(f"{spec}: page series {i} has images of {_chw(part.shape[1:])}, "
                                 f"the first {_chw(first.shape[1:])} (mixed image sizes)")
    return np.concatenate(parts) if len(parts) > 1 else first


def _tiff_series(arr: np.ndarray, axes: str, spec: str) -> np.ndarray:
    """One TIFF page series (tifffile's ``series.asarray()`` and ``series.axes``) as (N, C, H, W).

    The channels are :func:`~affinevae.data.stacks.tiff_channel_axes`' (samples 'S', or a C axis
    of at most :data:`~affinevae.data.stacks.TIFF_MAX_CHANNELS` planes); every other axis but Y
    and X (T, Z, I, Q, a longer C) counts images, in the series' order. Without Y and X axes the
    array goes through :func:`_to_nchw`.
    """
    return np.ascontiguousarray(_tiff_series_view(arr, axes, spec))


def _tiff_series_view(arr: np.ndarray, axes: str, spec: str) -> np.ndarray:
    """:func:`_tiff_series` before its contiguous copy (a view where numpy can make one)."""
    from .stacks import tiff_channel_axes

    if len(axes) != arr.ndim or "Y" not in axes or "X" not in axes:
        return _to_nchw(arr, spec)
    ch = tiff_channel_axes(axes, arr.shape)
    order = ([i for i, a in enumerate(axes) if a not in ch + "YX"] + [axes.index(a) for a in ch]
             + [axes.index("Y"), axes.index("X")])
    arr = arr.transpose(order)
    c = int(arr.shape[-3]) if ch else 1
    return arr.reshape(-1, c, arr.shape[-2], arr.shape[-1])


def _read_pil(p: Path, spec: str, transparent: Optional[list] = None) -> np.ndarray:
    """One PNG/JPEG image as (1, C, H, W): C=1 grayscale, 3 colour (alpha dropped; ``spec`` is appended
    to ``transparent`` when that alpha was not opaque everywhere)."""
    from PIL import Image

    with reading(spec, "image"), Image.open(p) as im:
        im.load()
        mode = im.mode
        if transparent is not None and ("A" in im.getbands() or "transparency" in im.info):
            alpha = im.convert("RGBA").getchannel("A") if "A" not in im.getbands() else im.getchannel("A")
            if alpha.getextrema()[0] < 255:  # not opaque everywhere
                transparent.append(spec)
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif mode in ("1", "LA", "La", "PA"):
            im = im.convert("L" if mode != "PA" else "RGB")
        elif mode in ("RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        arr = np.array(im)
    if mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        arr = arr.astype(np.uint16)  # 16-bit PNGs open as 32-bit 'I'
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if mode in ("P", "PA") and arr.ndim == 3 and (arr == arr[..., :1]).all():
        arr = arr[..., 0]  # a palette of grays is a grayscale image
    if arr.ndim == 2:
        return arr[None, None]
    if arr.ndim == 3:
        return np.ascontiguousarray(arr.transpose(2, 0, 1)[None])
    raise AffineVAEError(f"{spec}: cannot read image: unexpected pixel array shape {arr.shape}")


def _rgb_file(q: Path) -> bool:
    """Whether the image file ``q`` holds colour (RGB) samples: a PNG or JPEG (PIL reads colour as RGB), or a
    TIFF whose first page is photometric RGB (not three fluorescence channels of 'minisblack' planes)."""
    if q.suffix.lower() not in TIFF_EXTS:
        return True
    import tifffile

    try:
        with tifffile.TiffFile(q) as tif:
            return int(tif.pages[0].photometric) == int(tifffile.PHOTOMETRIC.RGB)
    except Exception:  # noqa: BLE001 - it was read above; a header that cannot tell counts as colour
        return True


def _load_folder(folder: Path, spec: str, standardise: bool) -> ImageSet:
    entries = sorted(q for q in folder.iterdir() if q.is_file() and not q.name.startswith("."))
    files = [q for q in entries if image_suffix(q) in FOLDER_EXTS]
    if not files:
        other = f" ({len(entries)} other files)" if entries else ""
        raise AffineVAEError(f"{spec}: folder has no images ({', '.join(FOLDER_EXTS)}){other}")
    return _load_image_files(files, spec, standardise, folder=True)


def number_order_differs(names: Sequence[str]) -> Optional[tuple[str, str]]:
    """Two neighbouring names of ``names`` (file names in name order) that their numbers would put the other
    way round because the numbers lack leading zeros (``img10.png`` before ``img2.png``), or None. Only names
    alike but for their ASCII digit runs count, whose first differing numbers have different lengths and do
    not follow a point (``0.25`` before ``0.5`` is in order)."""
    for a, b in zip(names, names[1:]):
        ta, tb = re.split(r"([0-9]+)", a), re.split(r"([0-9]+)", b)
        if len(ta) != len(tb) or ta[0::2] != tb[0::2]:  # other text around the numbers: not numbered alike
            continue
        for i in range(1, len(ta), 2):
            if ta[i] != tb[i]:
                if (len(ta[i]) != len(tb[i]) and int(ta[i]) > int(tb[i]) and not ta[i - 1].endswith(".")
                        and not ta[i].startswith("0") and not tb[i].startswith("0")):
                    return a, b
                break
    return None


def name_order_swap(files: Sequence[Path]) -> Optional[tuple[str, str]]:
    """:func:`number_order_differs` within each folder of ``files`` (paths listed in name order, a folder's
    or a pattern's: name order holds within a folder), the first such pair found, or None."""
    folders: dict = {}
    for q in files:
        folders.setdefault(Path(q).parent, []).append(Path(q).name)
    return next(filter(None, map(number_order_differs, folders.values())), None)


def _load_image_files(files: Sequence[Path], spec: str, standardise: bool, name_ordered: bool = True,
                      folder: bool = False) -> ImageSet:
    """Read image files (PNG/JPEG/TIFF/FITS) in the given order into one set, whose ``names`` say each image's
    file (its name in a ``folder``, else the path as given; ``name[i]`` for the pages of a file of several).
    Said in a warning each: files whose numbered names name order does not sort by number (``name_ordered``:
    the files were listed in name order, a folder or one pattern, not a list the user wrote), transparency
    (alpha) dropped, grayscale files repeated into the colour ones' three channels."""
    swapped = name_order_swap(files) if name_ordered else None  # a folder or one pattern, not the user's list
    if swapped:
        warnings.warn(f"{spec}: {len(files)} files read in name order, which puts {swapped[0]} before {swapped[1]} "
                      "(numbers without leading zeros); labels are matched and outputs written in that order",
                      stacklevel=user_stacklevel())
    parts = []
    transparent: list = []
    for q in files:
        if not q.is_file():
            raise AffineVAEError(f"{q}: file not found")
        if image_suffix(q) in FITS_EXTS:  # a cut-out (or a cube of them) in its primary or first image HDU
            from .astro import read_fits

            arr = read_fits(str(q))
        else:
            arr = _read_tiff(q, str(q)) if q.suffix.lower() in TIFF_EXTS else _read_pil(q, str(q), transparent)
        arr = _to_nchw(arr, str(q))
        if parts and arr.shape[2:] != parts[0][1].shape[2:]:
            h, w = arr.shape[2:]
            h0, w0 = parts[0][1].shape[2:]
            raise AffineVAEError(f"{q}: image size {h}x{w} (HxW) differs from {h0}x{w0} of {parts[0][0].name} "
                                 "(mixed image sizes)")
        parts.append((q, arr))
    if transparent:
        warnings.warn(f"{spec}: {len(transparent)} of {len(files)} images have transparency (an alpha channel, e.g. "
                      f"{Path(transparent[0]).name}), which is dropped: their colour is read whatever its alpha",
                      stacklevel=user_stacklevel())
    stacked = [(q, len(a)) for q, a in parts if len(a) > 1]
    if stacked:  # TIFF pages or planes along an axis that is not a named channel axis: images each
        q, k = stacked[0]
        warnings.warn(f"{spec}: {len(stacked)} of {len(files)} files hold several images each (e.g. {q.name}: {k}, read as "
                      f"{q.name}[0] ... [{k - 1}]); planes are channels only where the TIFF names its axis C (ImageJ, "
                      "OME, tifffile's axes='CYX') or holds RGB samples", stacklevel=user_stacklevel())
    chans = {a.shape[1] for _, a in parts}
    if chans == {1, 3}:
        # grayscale among colour (RGB) files: repeated into red, green and blue; among fluorescence channels of
        # another kind (TIFF planes that are not RGB) refused, as other channel counts are
        grey = [q for q, a in parts if a.shape[1] == 1]
        other = next((q for q, a in parts if a.shape[1] == 3 and not _rgb_file(q)), None)
        if other is not None:
            raise AffineVAEError(f"{grey[0]}: 1 channel, {other.name} has 3 (channels that are not RGB colour: a "
                                 "one-channel image is not repeated into them)")
        colour = len(parts) - len(grey)
        warnings.warn(f"{spec}: {len(grey)} grayscale image{'s' if len(grey) > 1 else ''} among {colour} colour "
                      f"one{'s' if colour > 1 else ''} (e.g. {grey[0].name}) repeated into red, green and blue",
                      stacklevel=user_stacklevel())
        parts = [(q, np.repeat(a, 3, axis=1) if a.shape[1] == 1 else a) for q, a in parts]
    elif len(chans) > 1:
        q, a = next((q, a) for q, a in parts if a.shape[1] != parts[0][1].shape[1])
        raise AffineVAEError(f"{q}: {a.shape[1]} channels, {parts[0][0].name} has {parts[0][1].shape[1]}")
    arrays = [a for _, a in parts]
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) > 1 and all(np.issubdtype(d, np.unsignedinteger) for d in dtypes):
        # e.g. 8- and 16-bit files: scale each by its own bit depth first
        arrays = [a.astype(np.float32) / float(np.iinfo(a.dtype).max) for a in arrays]
    label = (lambda q: q.name) if folder else str
    names = [label(q) if len(a) == 1 else f"{label(q)}[{i}]" for q, a in parts for i in range(len(a))]
    data = _finish(np.concatenate(arrays), spec, standardise, names=np.asarray(names, dtype=str))
    from .stacks import files_pixel_size

    return _with_pixel_size(data, files_pixel_size([q for q, _ in parts], spec))


def _load_hdf5(p: Path, dataset: Optional[str], spec: str, standardise: bool, first: Optional[int] = None):
    """The images of an HDF5 dataset (and its group's ``labels``/``angle``/... arrays) as an ImageSet.

    ``first``: only the first so many images, sliced from the dataset, with the whole dataset's
    normalisation; then returns ``(ImageSet, image count)``, or None when :func:`_first_frames`
    does not apply (read the whole dataset instead).
    """
    try:
        import h5py
    except ImportError:
        raise AffineVAEError(f"{spec}: reading HDF5 needs the optional h5py package: "
                             'pip install "affinevae[hdf5]"') from None
    with reading(spec, "HDF5"), h5py.File(p, "r") as f:
        found: list[str] = []
        f.visititems(lambda name, obj: found.append("/" + name) if isinstance(obj, h5py.Dataset) else None)
        listing = ", ".join(found[:20]) + (f", ... ({len(found)} in all)" if len(found) > 20 else "")
        if dataset:
            name = "/" + dataset.strip("/")
            obj = f.get(name)
            if obj is None:
                raise AffineVAEError(f"{spec}: no dataset {name!r}; datasets: {listing or '(none)'}")
            if not isinstance(obj, h5py.Dataset):
                raise AffineVAEError(f"{spec}: {name!r} is a group, not a dataset; datasets: {listing}")
        else:
            cands = [d for d in found if d.rsplit("/", 1)[-1] not in AUX_KEYS]
            root = [d for d in (f"/{k}" for k in DEFAULT_KEYS) if d in found]
            if len(found) == 1:
                name = found[0]
            elif root:
                name = root[0]
            elif len(cands) == 1:
                name = cands[0]
            else:
                raise AffineVAEError(f"{spec}: {'no datasets' if not found else 'several datasets'}; "
                                     f"name one as FILE:DATASET; datasets: {listing or '(none)'}")
        src = f"{p}:{name}"
        check_hdf5_dataset(f, name, src, copies=3, frames=first)  # no external/virtual storage, a size that fits
        group = name.rsplit("/", 1)[0]
        extra = {}
        for k in AUX_KEYS:
            aux = f"{group}/{k}"
            if aux != name and isinstance(f.get(aux), h5py.Dataset):
                check_hdf5_dataset(f, aux, f"{p}:{aux}", copies=3)
                extra[k] = f[aux][()]
        if first is not None:
            from .stacks import ArraySource

            dset = f[name]
            source = None if dset.ndim < 2 else _frame_reader(lambda: ArraySource(dset, src))
            return None if source is None else _first_frames(source, dset.shape, src, first, **extra)
        arr = f[name][()]
    return _finish(np.asarray(arr), src, standardise, **_check_aux(extra, src))


#: Suffixes of the files of one value (or row) per image: labels and targets.
TABLE_EXTS = (".npy", ".txt", ".csv")


def _table_file(path: str, what: str) -> tuple[Path, str]:
    """(path, lower-case suffix) of an existing labels or targets file of :data:`TABLE_EXTS`; one line
    naming ``what`` otherwise (a directory is said to be one, not 'not found')."""
    p = Path(str(path))
    if p.is_dir():
        raise AffineVAEError(f"{path}: a directory, not a {what} file (give the .npy, .txt or .csv file itself)")
    if not p.is_file():
        raise AffineVAEError(f"{path}: {what} file not found")
    ext = p.suffix.lower()
    if ext not in TABLE_EXTS:
        raise AffineVAEError(f"{path}: unsupported {what} file type '{p.suffix}'; use .npy, .txt or .csv")
    return p, ext


def read_labels(path: str, n: Optional[int], images: str, grid: Optional[tuple] = None,
                noun: str = "images", at_least: Optional[int] = None, with_names: bool = False):
    """Integer labels (n,) int64 from a .npy, .txt or .csv file, one label per image of the ``n``
    images of ``images`` (named in the messages; ``n`` None: any count; ``at_least`` m: from m to n
    labels, the first m images' at least, as when only the first m images are read); -1 marks an unknown
    label, as does an empty line between labels of a text file without comments (a spreadsheet's empty
    cell). A text file may name the classes instead ("wt", "mutant"): numbered 0..K-1 in sorted order
    (``with_names``). ``grid`` (H, W): a ``.npy`` of that shape is also taken, in row-major order (one label
    per pixel of a cube's map). ``noun`` names what is labelled in the messages (e.g. 'signals').
    A missing or unreadable file, another count, non-integers or labels under -1 are one-line errors.
    ``with_names``: return ``(labels, names)``, the class names of a file that names them (else None)."""
    p, ext = _table_file(path, "labels")
    names = None
    if ext == ".npy":
        lab = _read_npy(p, str(path))
        if (lab.ndim == 2 and 1 in lab.shape) or (grid is not None and lab.shape == tuple(grid)):
            lab = lab.reshape(-1)
        if lab.ndim != 1:
            cube = (f", or ({grid[0]}, {grid[1]}) for the cube's pixels (its {grid[0] * grid[1]} spectra in row-major "
                    "order)" if grid is not None else "")
            raise AffineVAEError(f"{path}: labels must be a 1-D array{cube}, got shape {lab.shape}")
    else:  # a file of names has a header line when the count says so (n labels, or n + 1 lines)
        lab, names = _parse_label_text(p, str(path), expected=n if at_least is None else None)
    if at_least is not None and n is not None and not at_least <= len(lab) <= n:
        raise AffineVAEError(f"{path}: {len(lab)} labels for the first {at_least} of the {n} {noun} in {images} "
                             f"(give at least {at_least}, at most {n})")
    if at_least is None and n is not None and len(lab) != n:
        raise AffineVAEError(f"{path}: {len(lab)} labels for {n} {noun} in {images}")
    lab = label_values(lab, str(path))
    return (lab, names) if with_names else lab


def label_values(lab: np.ndarray, where: str) -> np.ndarray:
    """1-D class labels ``lab`` as int64, checked: numbers (bool too) that are whole and finite, each
    >= 0 or -1 (unknown); a one-line :class:`AffineVAEError` starting with ``where`` otherwise."""
    lab = np.asarray(lab)
    if not (np.issubdtype(lab.dtype, np.number) or lab.dtype == bool) or np.iscomplexobj(lab):
        raise AffineVAEError(f"{where}: labels must be integers, got dtype {lab.dtype}")
    if lab.dtype.kind not in "iub":
        vals = lab.astype(np.float64)
        if not np.all(np.isfinite(vals)) or not np.all(np.mod(vals, 1) == 0):
            raise AffineVAEError(f"{where}: labels must be integers")
    lab = lab.astype(np.int64)
    if len(lab) and lab.min() < -1:
        raise AffineVAEError(f"{where}: labels must be >= 0 (or -1 for unknown), got {int(lab.min())}")
    return lab


def read_targets(path: str, n: Optional[int] = None) -> np.ndarray:
    """Continuous targets from a ``.npy`` (never unpickled), ``.txt`` or ``.csv`` file: (N,) or
    (N, M) float32, one row per image (text: one line per image, values separated by commas or
    white space, ``nan`` or an empty line/field where unknown, one header line allowed)."""
    p, ext = _table_file(path, "targets")
    if ext == ".npy":
        arr = _read_npy(p, str(path))
    else:
        try:
            lines = p.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise AffineVAEError(f"{path}: cannot read targets ({type(exc).__name__})") from None
        while lines and not lines[-1].strip():
            lines.pop()
        rows = []
        for i, line in enumerate(lines):
            fields = line.split(",") if ext == ".csv" else (line.split() or [""])
            try:
                rows.append([float(f) if f.strip() else np.nan for f in fields])
            except ValueError:
                if i == 0:
                    continue  # a header line
                raise AffineVAEError(f"{path}: line {i + 1}: {line.strip()!r} is not a number") from None
        if len({len(r) for r in rows}) > 1:
            raise AffineVAEError(f"{path}: every line needs the same number of targets")
        arr = np.asarray(rows, dtype=np.float64)
        arr = arr[:, 0] if arr.ndim == 2 and arr.shape[1] == 1 else arr
    if not np.issubdtype(arr.dtype, np.number) or arr.ndim not in (1, 2):
        raise AffineVAEError(f"{path}: targets must be a 1-D or 2-D numeric array, got {arr.dtype} {arr.shape}")
    if n is not None and len(arr) != n:
        raise AffineVAEError(f"{path}: {len(arr)} targets for {n} images")
    if np.isinf(arr).any():
        row = int(np.argwhere(np.isinf(arr.reshape(len(arr), -1)).any(1))[0, 0])
        raise AffineVAEError(f"{path}: row {row + 1} holds an infinite target (use NaN for unknown)")
    return arr.astype(np.float32)


#: The largest class label a labels file may hold (past int64 a label overflowed; a model has a class per label).
MAX_LABEL = 2**31 - 1


def _one_label_per_line(kept: list) -> Optional[np.ndarray]:
    """(N,) int64 labels of ``kept`` (line number, text) rows holding one integer each (after an
    optional header line of one word), converted at once; None when any row is not such a number
    (the line-by-line reader then names it)."""
    texts = [line for _, line in kept]
    if re.match(r"^[A-Za-z_]", texts[0]) and texts[0].lower() not in ("nan", "inf", "infinity"):
        texts = texts[1:]  # a header such as "label"
    try:
        vals = np.array(texts, dtype=np.float64)
    except ValueError:
        return None
    if not np.all(np.isfinite(vals)) or not np.all(vals == np.round(vals)) or np.abs(vals).max() > MAX_LABEL:
        return None  # (a label past int64 wrapped round to -2**63 here)
    return vals.astype(np.int64)


#: Texts that read as a missing value in a table of labels (compared lower-case, stripped): refused as
#: class names, with the hint to mark an unknown label with -1.
MISSING_LABEL_TEXTS = ("", "na", "n/a", "nan", "none", "null", "?")


def _number_word(tok: str) -> bool:
    """Whether ``float()`` reads ``tok`` (nan, inf, infinity too: numbers, not a header's words)."""
    try:
        float(tok)
        return True
    except ValueError:
        return False


def _parse_label_text(p: Path, spec: str, expected: Optional[int] = None) -> tuple[np.ndarray, Optional[list[str]]]:
    """(labels (N,) int64, class names or None) of a text labels file: one label per line (or one line of
    labels), an optional header line, ``#`` comments, fields in quotes or not; an empty line between labels
    is an unknown label (-1) in a file without comments; names instead of numbers are numbered in sorted
    order (``expected``: the number of labels the file must give, which decides whether its first line is
    a header)."""
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise cannot_read(spec, "labels", e) from None
    lines = re.split(r"\r\n|\n|\r", text)  # not splitlines: a form feed or a vertical tab is white space here
    commented = any("#" in ln for ln in lines)
    entries = [(i, text) for i, text in enumerate((ln.split("#", 1)[0].strip() for ln in lines), 1)
               if text or not commented]  # with comments, empty lines are layout
    filled = [k for k, (_, line) in enumerate(entries) if line]
    kept = entries[filled[0]:filled[-1] + 1] if filled else []  # empty lines before and after: none
    if len(kept) > 1 and all(line for _, line in kept) and not re.search(r"[,; \t\f\v]", "\x00".join(
            line for _, line in kept[1:])):
        fast = _one_label_per_line(kept)  # the common file: one number per line, read at numpy's speed
        if fast is not None:
            return fast, None
    rows = [(i, [t for t in (tok.strip("\"'") for tok in re.split(r"[,;\s]+", line)) if t]) for i, line in kept]
    first_words = bool(rows) and all(not _number_word(t) and re.match(r"^[A-Za-z_]", t) for t in rows[0][1])
    rest = {t for _, toks in rows[1:] for t in toks}
    named = [not _number_word(t) for t in rest if t != "-1"]  # -1: unknown among names too
    if (named and all(named)) or (len(rows) == 1 and first_words and len(rows[0][1]) > 1):
        return _named_labels(rows, rest, spec, expected)  # class names ("wt", "mutant"): numbered in sorted order
    if first_words:
        if len(rows) == 1:  # one word and nothing after it: not a header, no labels at all
            raise AffineVAEError(f"{spec}: line {rows[0][0]}: {rows[0][1][0]!r} is not an integer label (the "
                                 "file holds no number)")
        rows = _after_header(rows)  # a header line such as "label"
    tokens = _label_tokens(rows, spec)
    out = []
    for i, t in tokens:
        v = -1 if t == "" else _whole_number(t)  # an empty line: unknown
        if v is None:
            raise AffineVAEError(f"{spec}: line {i}: {t!r} is not an integer label")
        if abs(v) > MAX_LABEL:
            raise AffineVAEError(f"{spec}: line {i}: {t!r} is too large for a class label (at most {MAX_LABEL:,}; "
                                 "number the classes 0..K-1)")
        out.append(v)
    return np.asarray(out, dtype=np.int64), None


def _whole_number(tok: str) -> Optional[int]:
    """The integer ``tok`` writes (``3``, ``3.0``), else None."""
    try:
        v = float(tok)
    except ValueError:
        return None
    return int(v) if np.isfinite(v) and v == int(v) else None


def _after_header(rows: list) -> list:
    """``rows`` of (line, tokens) without their first (a header) and the empty rows right after it (not
    between labels)."""
    rows = rows[1:]
    while rows and not rows[0][1]:
        rows = rows[1:]
    return rows


def _label_tokens(rows: list, spec: str) -> list[tuple[int, str]]:
    """(line, token) of labels ``rows`` of (line, tokens): one row of several labels, or one label per row
    (an empty row: '', unknown); a row of several among rows of one is one line."""
    if len(rows) == 1:
        return [(rows[0][0], t) for t in rows[0][1]]
    bad = next((i for i, toks in rows if len(toks) > 1), None)
    if bad is not None:
        raise AffineVAEError(f"{spec}: line {bad}: expected one label per line")
    return [(i, toks[0] if toks else "") for i, toks in rows]


def _named_labels(rows: list, rest: set, spec: str, expected: Optional[int] = None) -> tuple[np.ndarray, list[str]]:
    """Labels (N,) int64 and class names (K,) of a labels file of class names (``rows`` of (line, tokens),
    ``rest`` the tokens after the first row): the names numbered 0..K-1 in sorted order; -1 and an empty
    line unknown (-1). A first line of one word is a header ('genotype') when ``expected`` labels follow it;
    without a count (``-n``: any number of labels), when no later line repeats it while every class after
    it appears twice or more, said in a warning. A missing-value text (NA, ?, nan, ...) is one line: a
    label is a class, or unknown."""
    first = rows[0][1]
    if len(rows) > 1 and len(first) == 1 and re.match(r"^[A-Za-z_]", first[0]):
        after = _after_header(rows)
        if expected is not None:
            header = len(_label_tokens(after, spec)) == expected and len(_label_tokens(rows, spec)) != expected
        else:
            seen = Counter(t for _, toks in rows[1:] for t in toks if t != "-1")
            header = first[0] not in rest and all(count > 1 for count in seen.values())
            if header:
                warnings.warn(f"{spec}: its first line {first[0]!r} is read as a header (no other line repeats it); "
                              "if it is a label, put a header line such as 'label' before it", stacklevel=user_stacklevel())
        if header:
            rows = after
    tokens = _label_tokens(rows, spec)
    gap = next(((i, t) for i, t in tokens if t and t.lower() in MISSING_LABEL_TEXTS), None)
    if gap is not None:
        raise AffineVAEError(f"{spec}: line {gap[0]}: {gap[1]!r} reads as a missing value: write -1 (or leave the "
                             "line empty) for an unknown label")
    names = sorted({t for _, t in tokens if t not in ("", "-1")})
    index = {name: k for k, name in enumerate(names)}
    return np.asarray([index.get(t, -1) for _, t in tokens], dtype=np.int64), names


def set_labels(data: ImageSet, labels: np.ndarray, names: Optional[list[str]],
               source: Optional[str] = None) -> ImageSet:
    """``data`` with ``labels`` (N,) read from a labels file and, where the file names the classes, its
    ``names`` as ``class_names`` and ``meta['label_names']`` (what ``train`` records and the commands
    number other labels files by). ``source``: the labels file, kept in ``meta['labels_source']`` so that
    a later refusal of the labels (:func:`~affinevae.data.inputs.as_images`: a class out of a model's range)
    names it; None drops an earlier one (the labels no longer come from it)."""
    data.labels = labels
    if source is not None:
        data.meta[LABELS_SOURCE] = str(source)
    else:
        data.meta.pop(LABELS_SOURCE, None)
    if names is not None:
        data.class_names = list(names)
        data.meta["label_names"] = list(names)
    return data
