"""File formats the data readers know: suffixes, the HDF5 ``file.h5:dataset`` spec, read errors.

One place for what both :mod:`~affinevae.data.files` (whole image sets into memory) and
:mod:`~affinevae.data.stacks` (large images and stacks, read lazily) recognise, so the two
cannot drift apart. Suffixes are lower case with the dot.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator, Optional

from ..errors import AffineVAEError

NPY_EXTS = (".npy",)
NPZ_EXTS = (".npz",)
TIFF_EXTS = (".tif", ".tiff")
HDF5_EXTS = (".h5", ".hdf5", ".hdf")
#: Single-image files read with Pillow by :func:`~affinevae.data.files.load_images`.
PIL_EXTS = (".png", ".jpg", ".jpeg")
#: Pillow files :func:`~affinevae.data.stacks.open_stack` also reads (a multi-frame GIF is a stack).
PIL_STACK_EXTS = PIL_EXTS + (".gif", ".bmp")
#: Frame files read from a folder by :func:`~affinevae.data.stacks.open_stack`.
FRAME_FOLDER_EXTS = PIL_STACK_EXTS + TIFF_EXTS
#: Zarr stores (folders) and OME-Zarr images, read by :mod:`~affinevae.data.microscopy`.
ZARR_EXTS = (".zarr",)
#: Electron-microscopy files read by :mod:`~affinevae.data.microscopy` (extra ``[microscopy]``):
#: Gatan DigitalMicrograph, Velox/Berkeley EMD, FEI TIA, MRC.
MICROSCOPY_EXTS = (".dm3", ".dm4", ".emd", ".ser", ".mrc", ".mrcs")
#: MRC files, which also hold image stacks (a cryo-EM particle stack, ``.mrcs``): read by
#: :func:`~affinevae.data.files.load_images` as well (extra ``[microscopy]``).
MRC_EXTS = (".mrc", ".mrcs")
#: Instrument files read through rosettasciio (Gatan DigitalMicrograph, Velox/Berkeley EMD, FEI TIA): also
#: training data for :func:`~affinevae.data.files.load_images`, their image or image stack (``key``: its index).
RSCIIO_EXTS = (".dm3", ".dm4", ".emd", ".ser")
#: FITS files (astronomy), read by :mod:`~affinevae.data.astro` (extra ``[astro]``) as stacks and as
#: training data: also fpack'ed (``.fz``) and gzipped (``.fits.gz``, read by :func:`image_suffix`).
FITS_EXTS = (".fits", ".fit", ".fts", ".fz", ".fits.gz", ".fit.gz", ".fts.gz")
#: Image files read from a folder or a list or glob of files by :func:`~affinevae.data.files.load_images`
#: (FITS files too: one cut-out each, as telescopes' archives deliver them).
FOLDER_EXTS = PIL_EXTS + TIFF_EXTS + FITS_EXTS
#: What to install for the FITS reader.
ASTRO_EXTRA = 'pip install "affinevae[astro]"'
#: What to install for the readers of :data:`MICROSCOPY_EXTS` and :data:`ZARR_EXTS`.
MICROSCOPY_EXTRA = 'pip install "affinevae[microscopy]"'
#: Files marking a folder as a Zarr store (v3, v2 group, v2 array).
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")


def image_suffix(path) -> str:
    """The lower-case suffix that decides how ``path`` is read: its last one (``.tif``), or the two
    of a gzipped FITS file (``.fits.gz``)."""
    from pathlib import Path

    name = Path(path).name.lower()
    two = "".join(Path(name).suffixes[-2:])
    return two if two in FITS_EXTS else Path(name).suffix


#: ``file.fits[SCI]`` / ``file.fits[1]``: astronomers' HDU notation (group 1: the file, group 2: the HDU).
FITS_HDU_SPEC = re.compile(r"^(.*\.(?:fits|fit|fts|fz)(?:\.gz)?)\[([^\[\]]+)\]$", re.IGNORECASE)


def fits_hdu_spec(spec: str, key: Optional[str]) -> tuple[str, Optional[str]]:
    """``(file, key)`` for astronomers' ``file.fits[SCI]`` (the HDU in brackets, when the file exists
    and no other ``key`` is given: both at once is one line), else ``(spec, key)`` unchanged."""
    m = FITS_HDU_SPEC.match(str(spec))
    if m is None or not os.path.isfile(m.group(1)) or os.path.exists(str(spec)):
        return str(spec), key
    if key is not None and str(key) != m.group(2):
        raise AffineVAEError(f"{spec}: the HDU is named twice, [{m.group(2)}] and --key {key}; give one")
    return m.group(1), m.group(2)


def is_zarr_dir(path) -> bool:
    """True when ``path`` is a folder holding a Zarr store (a ``.zarr`` name or a Zarr marker file)."""
    from pathlib import Path

    p = Path(path)
    return p.is_dir() and (p.suffix.lower() in ZARR_EXTS or any((p / m).is_file() for m in ZARR_MARKERS))


#: Single files :func:`~affinevae.data.files.load_images` reads.
SUPPORTED = NPY_EXTS + NPZ_EXTS + TIFF_EXTS + HDF5_EXTS + PIL_EXTS + MRC_EXTS + FITS_EXTS + RSCIIO_EXTS

#: ``file.h5:dataset`` (group 1: the file, group 2: the dataset, None without a colon).
HDF5_SPEC = re.compile(r"^(.*?\.(?:h5|hdf5|hdf))(?::(.*))?$", re.IGNORECASE)


def check_not_empty(path, spec: str) -> None:
    """Refuse a regular file of 0 bytes in one line, ``"SPEC: empty file (0 bytes)"``, before any
    reader gives its own message about a missing header (a folder or a missing path passes)."""
    from pathlib import Path

    p = Path(path)
    if p.is_file() and p.stat().st_size == 0:
        raise AffineVAEError(f"{spec}: empty file (0 bytes)")


def read_failure_reason(exc: BaseException) -> str:
    """A library exception as one short line (at most 200 characters), for user messages."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def cannot_read(spec: str, what: str, exc: BaseException) -> AffineVAEError:
    """The one-line error for a file a library failed on: ``"SPEC: cannot read WHAT: reason"``."""
    return AffineVAEError(f"{spec}: cannot read {what}: {read_failure_reason(exc)}")


@contextlib.contextmanager
def reading(spec: str, what: str) -> Iterator[None]:
    """Turn any library failure inside the block into :func:`cannot_read`'s one-line error.

    :class:`AffineVAEError` (already a user message) and ``MemoryError`` pass through unchanged.
    """
    try:
        yield
    except (AffineVAEError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - any library failure on a file is a user file problem
        raise cannot_read(spec, what, exc) from None


#: Scalar arrays an ``.npz`` may carry about its images (as :meth:`PatchSet.save` writes them):
#: ``kind`` (a string, e.g. :data:`PATCH_SET_KIND`), ``window`` (patch size, pixels) and
#: ``noise_sigma`` (robust pixel-noise estimate in the normalised intensity units, see
#: :func:`~affinevae.data.imageset.noise_sigma`), and when known the physical ``pixel_size`` (a
#: number) in ``unit`` (a string, e.g. 'nm'); for objects found or given (not a grid) their spacing
#: ``spacing`` (pixels: the median distance to their first shell of neighbours,
#: :func:`~affinevae.data.objects.neighbour_spacing`) and ``lattice_order``, how lattice-like their
#: arrangement is (:func:`~affinevae.data.objects.neighbour_order`) and ``lattice_fold``, the n of its n-fold
#: bonds (:func:`~affinevae.data.objects.neighbour_fold`: 4 or 6), or ``objects_per_frame`` when no frame
#: holds enough objects for those (:func:`~affinevae.data.objects.object_arrangement`). ``load_images``
#: puts them in ``ImageSet.meta``.
META_KEYS = ("kind", "window", "noise_sigma", "pixel_size", "unit", "spacing", "lattice_order", "lattice_fold",
             "objects_per_frame")
#: The META_KEYS that hold strings.
META_STRINGS = ("kind", "unit")
#: ``kind`` of a patch set written by ``affinevae patches``.
PATCH_SET_KIND = "patches"


#: Arrays of an ``.npz`` that are ground truth beside the images, not images.
AUX_KEYS = ("labels", "angle", "shift", "scale")
#: Image array names tried in order when no ``key`` is given.
DEFAULT_KEYS = ("images", "patches")


def read_npy_header(fh) -> tuple:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` stream ``fh`` (a binary file object at its start),
    from its header alone: ``fh`` is left at the first data byte."""
    import numpy as np

    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(fh)


def npz_member_headers(path) -> dict:
    """``{name: (shape, dtype)}`` of every array of an ``.npz`` archive, from their headers (no data is
    read or decompressed beyond them). Raises what :mod:`zipfile` and numpy raise on a damaged archive;
    callers wrap it in :func:`reading`."""
    import zipfile

    out = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith(".npy"):
                with archive.open(name) as fh:
                    shape, _, dtype = read_npy_header(fh)
                out[name[:-4]] = (tuple(shape), dtype)
    return out


def npz_image_key(names, key, spec: str) -> str:
    """The image array of an ``.npz`` holding arrays ``names``: ``key`` when given (it must be
    there), else 'images' or 'patches', else the only array that is not ground truth
    (:data:`AUX_KEYS`); otherwise one line naming ``spec`` and listing the arrays."""
    names = list(names)
    if key is not None:
        if key not in names:
            raise AffineVAEError(f"{spec}: no array {key!r}; arrays: {', '.join(names) or '(none)'}")
        return key
    k = next((n for n in DEFAULT_KEYS if n in names), None)
    if k is not None:
        return k
    cands = [n for n in names if n not in AUX_KEYS]
    if len(cands) != 1:
        raise AffineVAEError(f"{spec}: {'no arrays' if not names else 'several arrays'} and none called 'images' or "
                             f"'patches'; pick one with --key (key= in Python), arrays: {', '.join(names) or '(none)'}")
    return cands[0]


#: The first bytes of every NumPy ``.npy`` file.
NPY_MAGIC = b"\x93NUMPY"


def file_magic(path, spec: str) -> bytes:
    """The first 8 bytes of ``path`` (one-line error naming ``spec`` when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(8)
    except OSError as e:
        raise cannot_read(spec, "file", e) from None


def check_npy_magic(path, spec: str) -> None:
    """Refuse a file that is no ``.npy`` (numpy would take it for a pickle) in one line."""
    if not file_magic(path, spec).startswith(NPY_MAGIC):
        raise AffineVAEError(f"{spec}: cannot read .npy: not a NumPy .npy file (bad header)")


def pickled_npy(spec: str) -> AffineVAEError:
    """The one-line error for an ``.npy``/``.npz`` array of Python objects, which is never unpickled."""
    return AffineVAEError(f"{spec}: holds a pickled object array, which is never loaded; "
                          "save a numeric array (e.g. np.save(path, images.astype(np.float32)))")
