"""Instrument and pipeline image files: Gatan, Velox/Berkeley EMD, FEI TIA, MRC, Zarr and OME-Zarr.

Each reader registers itself in :data:`affinevae.data.stacks.READERS` (suffix -> reader), so
:func:`~affinevae.data.stacks.open_stack` (and with it ``affinevae patches`` and ``map``) opens
these files like any other stack, lazily, with the physical pixel size the file records
(:attr:`FrameSource.pixel_size`):

- ``.dm3`` / ``.dm4`` (Gatan DigitalMicrograph), ``.emd`` (Velox and Berkeley/NCEM EMD),
  ``.ser`` (FEI TIA): through rosettasciio (``rsciio``), read lazily as dask arrays; the first
  image signal of the file (``key``: its index among the file's images);
- ``.mrc`` / ``.mrcs``: through mrcfile, memory mapped; the pixel size from the voxel size (Å);
- Zarr stores (a ``.zarr`` folder or any folder with Zarr marker files): through zarr. An
  OME-Zarr image (``multiscales`` metadata, NGFF 0.4 or 0.5) gives its first resolution level
  unless ``level`` names another, with the pixel size from the level's scale transform and the
  axes' unit; singleton non-spatial axes (t, c, z of size 1) are dropped. A plain Zarr array is
  read as it is; a group without ``multiscales`` needs ``key`` unless it holds a single array.

The libraries come with the optional extra ``[microscopy]``; without them a read fails in one
line saying what to install (:data:`~affinevae.data.formats.MICROSCOPY_EXTRA`).
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import AffineVAEError
from ..limits import check_array
from ..units import PixelSize, square_pixel_size, unit_name
from .formats import MICROSCOPY_EXTRA, ZARR_EXTS, reading
from .stacks import READERS, ArraySource, FrameSource, StackReader

__all__ = ["require", "pixel_size_from", "open_rsciio", "read_rsciio_signal", "SignalAxis", "open_mrc", "open_zarr",
           "zarr_levels", "lazy_signals", "spectra_note", "image_listing"]


def require(module: str, path: str, what: str, extra: str = MICROSCOPY_EXTRA) -> Any:
    """Import ``module`` or raise the one-line error naming the extra to install (``extra``: the
    pip command, by default the ``[microscopy]`` one).

    Raises:
        AffineVAEError: ``"PATH: reading WHAT files needs MODULE (pip install "affinevae[microscopy]")"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise AffineVAEError(f"{path}: reading {what} files needs the Python package '{module.split('.')[0]}' "
                             f"({extra})") from None


def pixel_size_from(scale: Any, unit: Any) -> Optional[PixelSize]:
    """A :class:`PixelSize` from a file's axis scale and unit, or None when either is not a usable
    length (no unit, a reciprocal unit such as ``1/nm``, an angle, a scale <= 0)."""
    try:
        value = float(scale)
        name = unit_name(str(unit)) if unit not in (None, "") else None
    except (TypeError, ValueError):  # AffineVAEError is a ValueError: an unknown unit means no pixel size
        return None
    if name is None or not np.isfinite(value) or value <= 0 or PixelSize(1.0, name).dimension != "length":
        return None
    return PixelSize(value, name)


# ============================================================================ rosettasciio
#: Suffix -> (rsciio plugin module, format name).
RSCIIO_FORMATS = {".dm3": ("rsciio.digitalmicrograph", "Gatan DigitalMicrograph"),
                  ".dm4": ("rsciio.digitalmicrograph", "Gatan DigitalMicrograph"),
                  ".emd": ("rsciio.emd", "EMD (Velox/Berkeley)"),
                  ".ser": ("rsciio.tia", "FEI TIA .ser")}


@dataclasses.dataclass(frozen=True)
class SignalAxis:
    """One axis of an instrument file's array, as rosettasciio describes it.

    Attributes:
        name: e.g. 'Energy loss', 'x' ('' when unnamed). size: samples along it.
        scale: physical size of one sample (``units`` per sample). offset: the first sample's
            value in ``units``. units: e.g. 'eV', 'keV', 'nm' ('' when uncalibrated).
    """

    name: str
    size: int
    scale: float
    offset: float
    units: str

    def __str__(self) -> str:
        return f"{self.name or '?'} {self.size}" + (f" x {self.scale:g} {self.units}" if self.units else "")


def _axes(sig: dict) -> list:
    """The :class:`SignalAxis` of each axis of an rsciio signal's data, in the data's order."""
    out = []
    for a in sig.get("axes", []):
        name = a.get("name")
        units = a.get("units")
        out.append(SignalAxis("" if name is None or not isinstance(name, str) else name, int(a.get("size", 0)),
                              float(a.get("scale", 1.0) or 1.0), float(a.get("offset", 0.0) or 0.0),
                              units if isinstance(units, str) else ""))
    return out


def _key_index(path: str, key: Any, count: int, what: str, listing: str = "") -> int:
    """``key`` as an index 0..count-1 of the file's ``what`` (signals, images); a one-line
    :class:`AffineVAEError` otherwise (``listing``: what the file holds, appended)."""
    try:
        idx = int(str(key).strip())
    except ValueError:
        idx = -1
    if not 0 <= idx < count:
        raise AffineVAEError(f"{path}: --key must be {'an' if what[0] in 'aeiou' else 'a'} {what} index 0..{count - 1}, "
                             f"got {key!r}{listing}")
    return idx


def _describe(signals: list, indices: Optional[Sequence[int]] = None) -> str:
    """The file's signals as the messages list them: ``0: (64, 6, 5) [Energy loss 64 x 0.5 eV, ...]``,
    numbered by ``indices`` (their places among the file's signals; default 0, 1, ...)."""
    indices = range(len(signals)) if indices is None else indices
    return "; ".join(f"{i}: {tuple(s['data'].shape)} [{', '.join(map(str, _axes(s)))}]" for i, s in zip(indices, signals))


def read_rsciio_signal(path: str, key: Optional[str] = None,
                       copies: float = 3.0) -> tuple[np.ndarray, list, Optional[int]]:
    """The array of a ``.dm3``/``.dm4``/``.emd``/``.ser`` file's signal for reading it as spectra
    (a spectrum image, a line scan; :func:`affinevae.data.spectra.load_signals`), with its axes.

    Args:
        path: the file. key: the signal's index among the file's signals (default: the only
            one, else the only one that is not a 2-D image).
        copies: arrays of a signal's size (as float32, or its own wider type) the caller holds at
            once: each signal's declared size times this is checked against the memory limit
            (:func:`affinevae.limits.check_array`, ``--max-memory``) from the file's header before
            anything is read.

    Returns:
        ``(array, axes, spectral)``: the data in memory in rosettasciio's axis order (a Gatan
        spectrum image (E, H, W), a Velox one (H, W, E)), one :class:`SignalAxis` per axis, so that
        the caller's signal axis has its calibration (e.g. 0.5 eV per sample), and the index of the
        file's spectral axis (:func:`spectral_axis`; None when the signal is not spectra).

    Raises:
        AffineVAEError: rosettasciio missing, an unreadable file, a bad ``key``, several signals
            and none chosen (listing each one's shape and axes), or a declared size over the memory limit.
    """
    module, what = RSCIIO_FORMATS[Path(path).suffix.lower()]
    plugin = require(module, path, what)
    for declared in lazy_signals(path) or []:  # the header's sizes (a lazy read), before the data are read
        data = declared.get("data")
        if getattr(data, "ndim", 0) >= 1:
            check_array(data.shape, path, "the declared array", itemsize=max(4, np.dtype(data.dtype).itemsize),
                        copies=copies)
    with reading(path, what):
        signals = [s for s in plugin.file_reader(path, lazy=False) if getattr(s.get("data"), "ndim", 0) >= 1]
    if not signals:
        raise AffineVAEError(f"{path}: holds no data")
    if key is not None:
        idx = _key_index(path, key, len(signals), "signal", f"; the file holds {_describe(signals)}")
    else:
        choices = [i for i, s in enumerate(signals) if s["data"].ndim != 2 or len(signals) == 1]
        if len(choices) != 1:
            raise AffineVAEError(f"{path}: holds {len(signals)} signals; name one with --key INDEX: {_describe(signals)}")
        idx = choices[0]
    sig = signals[idx]
    with reading(path, what):
        data = np.asarray(sig["data"])
    return data, _axes(sig), spectral_axis(sig)


#: Names and units rosettasciio gives the axis of a spectrum (EELS, EDS, CL).
SPECTRAL_AXIS_NAMES = ("Energy loss", "Energy", "Wavelength")
SPECTRAL_UNITS = ("eV", "keV")


def _is_spectrum_image(sig: dict) -> bool:
    """A Gatan spectrum image: rosettasciio returns it with the energy as a navigation axis (HyperSpy
    turns it afterwards), its ``Meta Data`` format tag says what it is."""
    info: Any = sig.get("original_metadata", {})
    for key in ("ImageList", "TagGroup0", "ImageTags", "Meta Data", "Format"):
        info = info.get(key) if isinstance(info, dict) else None
    return info == "Spectrum image"


def _unsorted_axes(sig: dict) -> bool:
    """Whether an rsciio signal of 3 axes or more marks none as a navigation axis: the Berkeley (NCEM) EMD
    reader gives image stacks and spectrum images so; what they hold is then told by the axes' names and units."""
    axes = sig.get("axes", [])
    return len(axes) >= 3 and not any(a.get("navigate", False) for a in axes)


def _named_spectral(axes: list) -> Optional[int]:
    """The index of the first axis named like a spectrum's (energy, wavelength) or in eV/keV, or None."""
    return next((i for i, a in enumerate(axes)
                 if a.get("name") in SPECTRAL_AXIS_NAMES or a.get("units") in SPECTRAL_UNITS), None)


def spectral_axis(sig: dict) -> Optional[int]:
    """The index, in an rsciio signal's data, of its spectral axis (named energy or wavelength, or in
    eV/keV), when it is a spectrum image or spectra (one signal axis, or a Berkeley EMD's unsorted axes
    one of which is spectral); None otherwise."""
    axes = sig.get("axes", [])
    if _unsorted_axes(sig):
        return _named_spectral(axes)
    if not (_is_spectrum_image(sig) or sum(1 for a in axes if not a.get("navigate", False)) == 1):
        return None
    found = _named_spectral(axes)
    if found is not None:
        return found
    if _is_spectrum_image(sig):  # uncalibrated: rosettasciio gives a Gatan spectrum image as (E, H, W)
        return 0
    return next(i for i, a in enumerate(axes) if not a.get("navigate", False))


def spectra_note(path: str, key: Optional[str] = None, signals: Optional[list] = None) -> Optional[str]:
    """For a ``.dm3``/``.dm4``/``.emd``/``.ser`` file holding spectra (a spectrum image, a line scan):
    which ``--signal-axis`` (and ``--key``) reads them, with the file's signals described; None when it
    holds none (or cannot be read: the reading command says why). A ``key`` that is no signal index
    of a file holding spectra is a one-line :class:`AffineVAEError`, as reading it would be. ``signals``:
    the file's :func:`lazy_signals`, when the caller has read them (None: read here)."""
    signals = lazy_signals(path) if signals is None else signals
    if signals is None:
        return None
    found = [(i, spectral_axis(s)) for i, s in enumerate(signals)]
    found = [(i, k) for i, k in found if k is not None and _ndim(signals[i]) >= 2]
    if not found:
        return None
    if key is not None:
        _key_index(path, key, len(signals), "signal", f"; the file holds {_describe(signals)}")
    where = ", ".join(f"--signal-axis {k}" + (f" --key {i}" if len(signals) > 1 else "") for i, k in found)
    return (f"read as 1-D signals with {where} (info FILE {where.split(', ')[0]} describes them); the file's "
            f"signals by index: {_describe(signals)}")


def image_listing(path: str, signals: Optional[list] = None) -> Optional[str]:
    """For a ``.dm3``/``.dm4``/``.emd``/``.ser`` file holding several images (or image stacks): the images
    by the index ``--key`` takes (``0: (2, 96, 120) [...]; 1: (40, 50) [...]``); None when it holds one or
    none, or cannot be read (the reading command says why). Read lazily: no pixel is loaded. ``signals``:
    the file's :func:`lazy_signals`, when the caller has read them (None: read here)."""
    signals = (lazy_signals(path) if signals is None else signals) or []
    places = _image_indices(signals)
    return _describe([signals[i] for i in places], places) if len(places) > 1 else None


def lazy_signals(path: str) -> Optional[list]:
    """The signals of a ``.dm3``/``.dm4``/``.emd``/``.ser`` file as rosettasciio reads them lazily; None when
    rosettasciio is missing or the file cannot be read (the reading command says why)."""
    module, what = RSCIIO_FORMATS[Path(path).suffix.lower()]
    try:
        plugin = require(module, path, what)
        with reading(path, what):
            return plugin.file_reader(path, lazy=True)
    except AffineVAEError:
        return None


def _ndim(sig: dict) -> int:
    """Axes of an rsciio signal's data."""
    return len(getattr(sig.get("data"), "shape", ()))


def _is_image(sig: dict) -> bool:
    """Whether an rsciio signal is an image (or image stack): two signal (non-navigation) axes, and not a
    Gatan spectrum image (whose raw axes look like an image stack along the energy)."""
    n_sig = sum(1 for a in sig.get("axes", []) if not a.get("navigate", False))
    if _unsorted_axes(sig):  # a Berkeley EMD image stack (F, H, W): no spectral axis among its three
        return _ndim(sig) == 3 and spectral_axis(sig) is None
    return n_sig == 2 and _ndim(sig) >= 2 and not _is_spectrum_image(sig)


def _image_indices(signals: list) -> list[int]:
    """The places among a file's signals (the index ``--key`` takes) of those that are images."""
    return [i for i, sig in enumerate(signals) if _is_image(sig)]


def _dm_stored_bytes(sig: dict) -> Optional[int]:
    """Bytes stored in a Gatan image's ``ImageData.Data`` tag (rsciio's original metadata), or None
    when the signal is not a DM image or its data are complex (packed storage)."""
    info: Any = sig.get("original_metadata", {})
    for key in ("ImageList", "TagGroup0", "ImageData", "Data"):
        info = info.get(key) if isinstance(info, dict) else None
    if not isinstance(info, dict) or "size_bytes" not in info or np.issubdtype(sig["data"].dtype, np.complexfloating):
        return None
    return int(info["size_bytes"])


def open_rsciio(path: str, key: Optional[str] = None, level: Optional[int] = None) -> FrameSource:
    """Open a ``.dm3``/``.dm4``/``.emd``/``.ser`` file through rosettasciio, lazily (dask).

    Args:
        path: the file. key: index (0, 1, ...) of the image among the file's signals, as ``info``
            lists them and the spectra reader takes it (default the first image; a signal that is not
            an image is refused, naming the file's images). level: unused (no resolution levels).

    Returns:
        An :class:`ArraySource` of (H, W) or (F, H, W) frames (navigation axes become frames),
        with the pixel size of the last signal axis when it is a length.

    Raises:
        AffineVAEError: rosettasciio missing, an unreadable file, no image in it, a bad ``key``, a
            Gatan image whose dimensions disagree with the size of its stored data.
    """
    module, what = RSCIIO_FORMATS[Path(path).suffix.lower()]
    plugin = require(module, path, what)
    require("dask", path, what)
    with reading(path, what):
        signals = plugin.file_reader(path, lazy=True)
    places = _image_indices(signals)
    if not places:
        axes = [spectral_axis(s) for s in signals if _ndim(s) >= 2]
        hint = (f"; spectra are read as 1-D signals with --signal-axis {next(k for k in axes if k is not None)}"
                if any(k is not None for k in axes) else "")
        raise AffineVAEError(f"{path}: holds no 2-D image (signals: {_describe(signals) or 'none'}){hint}")
    # --key counts the file's signals, as `info` lists them and the spectra reader takes it
    idx = places[0] if key is None else _key_index(path, key, len(signals), "signal",
                                                   f"; the file holds {_describe(signals)}")
    if idx not in places:
        k = spectral_axis(signals[idx])
        what = f"spectra (read them with --signal-axis {k} --key {idx})" if k is not None else "not an image"
        raise AffineVAEError(f"{path}: signal {idx} {tuple(signals[idx]['data'].shape)} is {what}; its images: "
                             f"{_describe([signals[i] for i in places], places)}")
    sig = signals[idx]
    data = sig["data"]
    stored = _dm_stored_bytes(sig)
    if stored is not None and stored != data.size * data.dtype.itemsize:  # else pixels read from other tags
        raise AffineVAEError(f"{path}: the image's dimensions {tuple(data.shape)} do not match its stored data "
                             f"({stored} bytes of {data.dtype})")
    sig_axes = [a for a in sig.get("axes", []) if not a.get("navigate", False)]  # a Berkeley stack's: all three
    ps = pixel_size_from(sig_axes[-1].get("scale"), sig_axes[-1].get("units")) if sig_axes else None
    if data.ndim > 3:  # several navigation axes: one frame each
        data = data.reshape(-1, *data.shape[-2:])
    return ArraySource(data, path, pixel_size=ps)


# ============================================================================ MRC
def open_mrc(path: str, key: Optional[str] = None, level: Optional[int] = None) -> FrameSource:
    """Open an ``.mrc``/``.mrcs`` file memory mapped with mrcfile: (Y, X) one frame, (Z, Y, X) a stack.

    The pixel size comes from the header's voxel size (Å) when it is set (> 0).

    Raises:
        AffineVAEError: mrcfile missing, an unreadable file, ``key`` given.
    """
    mrcfile = require("mrcfile", path, "MRC")
    if key is not None:
        raise AffineVAEError(f"{path}: --key does not apply to MRC files")
    _check_mrc_size(mrcfile, path)
    with reading(path, "MRC"):
        mrc = mrcfile.mmap(path, mode="r", permissive=False)
        data = mrc.data
        if data is None:
            mrc.close()
            raise AffineVAEError(f"{path}: the MRC file holds no data")
        voxel = mrc.voxel_size
        order = tuple(int(v) for v in (mrc.header.mapc, mrc.header.mapr, mrc.header.maps))
    if order == (2, 1, 3):  # columns along Y, rows along X: each section stored transposed
        data = np.swapaxes(data, -1, -2)
    elif order != (1, 2, 3) and order != (0, 0, 0):  # (0, 0, 0): an old writer's unset header, read as standard
        mrc.close()
        raise AffineVAEError(f"{path}: its axes are stored in the order MAPC/MAPR/MAPS = {'/'.join(map(str, order))}; "
                             "only images stored section by section (MAPS = 3) are read: reorder it (e.g. "
                             "mrcfile, relion_image_handler) to 1/2/3")
    pixel = square_pixel_size(pixel_size_from(voxel.x, "Å"), pixel_size_from(voxel.y, "Å"), path)
    return ArraySource(data, path, owner=mrc, pixel_size=pixel)


def _check_mrc_size(mrcfile: Any, path: str) -> None:
    """One line when an MRC file holds fewer bytes than its header declares (a truncated copy or
    download) or declares no pixels, from the header alone; other header problems are left to the reader."""
    try:
        with warnings.catch_warnings():  # the permissive read's notes on a file that is no MRC: the reader says it
            warnings.simplefilter("ignore")
            with mrcfile.open(path, header_only=True, permissive=True) as m:
                h = m.header
                nx, ny, nz, extra = int(h.nx), int(h.ny), int(h.nz), int(h.nsymbt)
                itemsize = np.dtype(mrcfile.utils.data_dtype_from_header(h)).itemsize
    except Exception:  # noqa: BLE001 - not a readable header: the reader's own message says so
        return
    if min(nx, ny, nz) == 0:  # (mrcfile's voxel size would divide by it, with a numpy warning first)
        raise AffineVAEError(f"{path}: holds no pixels ({nz} frame(s) of {ny}x{nx})")
    if min(nx, ny, nz) < 1 or extra < 0:
        return
    declared = 1024 + extra + nx * ny * nz * itemsize
    size = Path(path).stat().st_size
    if size < declared:
        raise AffineVAEError(f"{path}: truncated: the header declares {nz} image{'s' if nz != 1 else ''} of {ny} x {nx} "
                             f"pixels ({declared} bytes with the header), the file holds {size} bytes")


# ============================================================================ Zarr / OME-Zarr
class _AxesView:
    """A lazy view of an array whose axes are some of the wrapped array's, in another order, plus
    new axes of length 1: ``axes[i]`` is the wrapped axis that view axis ``i`` slices, or None
    for a new one. Wrapped axes not in ``axes`` must have length 1 (they are read at index 0).
    """

    def __init__(self, array: Any, axes: tuple) -> None:
        self.array, self.axes = array, tuple(axes)
        self.shape = tuple(1 if a is None else int(array.shape[a]) for a in self.axes)
        self.dtype = array.dtype

    def __getitem__(self, idx: Any) -> np.ndarray:
        idx = idx if isinstance(idx, tuple) else (idx,)
        if any(i is Ellipsis for i in idx):
            e = idx.index(Ellipsis)
            idx = idx[:e] + (slice(None),) * (len(self.axes) - len(idx) + 1) + idx[e + 1:]
        idx = idx + (slice(None),) * (len(self.axes) - len(idx))
        full: list[Any] = [0] * len(self.array.shape)
        for a, i in zip(self.axes, idx):
            if a is not None:
                full[a] = i
        out = np.asarray(self.array[tuple(full)])
        kept = [not isinstance(i, (int, np.integer)) for i in idx]  # the view axes the result keeps
        # the result's axes are the sliced wrapped axes in wrapped order: put them in view order
        order = [v for _, v in sorted((a, v) for v, a in enumerate(self.axes) if a is not None and kept[v])]
        out = np.transpose(out, np.argsort(order)) if len(order) > 1 else out
        for v, a in enumerate(self.axes):  # the new axes, where they stand in the view
            if a is None and kept[v]:
                out = np.expand_dims(out, sum(kept[:v]))
        return out


def _ome_axes_view(arr: Any, axes: list, where: str) -> Optional[_AxesView]:
    """The (F, C, Y, X) view of an OME-Zarr level by its axis names (NGFF ``axes``): one
    non-spatial axis other than 'c' (t or z) gives the frames, 'c' the channels; singleton axes
    are dropped. None when the names are missing or the plain shape rule already applies."""
    names = [a.get("name") if isinstance(a, dict) else a for a in axes]
    shape = tuple(int(s) for s in arr.shape)
    if len(names) != len(shape) or not all(isinstance(n, str) for n in names) or len(shape) < 3:
        return None
    c = names.index("c") if "c" in names and shape[names.index("c")] > 1 else None
    others = [i for i in range(len(shape) - 2) if i != c and shape[i] > 1]
    if len(others) > 1:
        raise AffineVAEError(f"{where}: an OME-Zarr image with {' and '.join(f'{names[i]} ({shape[i]})' for i in others)}"
                             "; read one of them as frames, e.g. a single time point")
    y, x = len(shape) - 2, len(shape) - 1
    if c is None:  # t or z planes are frames, whatever their number (4 z-planes are not 4 channels)
        return _AxesView(arr, (others[0], y, x)) if others else None
    if shape[c] > 4:
        raise AffineVAEError(f"{where}: an OME-Zarr image of {shape[c]} channels; at most 4 are read as channels")
    return _AxesView(arr, (others[0] if others else None, c, y, x))


def _multiscales(attrs: dict) -> Optional[list]:
    """The ``multiscales`` list of an OME-Zarr group's attributes (NGFF 0.4 or 0.5), or None."""
    if "multiscales" in attrs:
        return attrs["multiscales"]
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return ome["multiscales"]
    return None


def zarr_levels(path: str) -> list[str]:
    """The resolution levels (array paths) of the OME-Zarr image at ``path``, finest first.

    Raises:
        AffineVAEError: zarr missing, not a Zarr store, or no ``multiscales`` metadata.
    """
    zarr = require("zarr", path, "Zarr")
    with reading(path, "Zarr"):
        root = zarr.open(path, mode="r")
    ms = _multiscales(dict(getattr(root, "attrs", {})))
    if not ms:
        raise AffineVAEError(f"{path}: not an OME-Zarr image (no multiscales metadata)")
    return [str(d["path"]) for d in ms[0].get("datasets", [])]


def _ome_pixel_size(ms: dict, level: int, ndim: int) -> Optional[PixelSize]:
    """The x pixel size of level ``level`` of a ``multiscales`` entry (scale transform x axis unit)."""
    axes = ms.get("axes") or []
    unit = None
    if axes and isinstance(axes[-1], dict):
        unit = axes[-1].get("unit")
    scale = None
    for t in list(ms["datasets"][level].get("coordinateTransformations", [])) + list(
            ms.get("coordinateTransformations", []) or []):
        if t.get("type") == "scale" and "scale" in t:
            s = float(t["scale"][-1])
            scale = s if scale is None else scale * s
    if scale is None or unit is None:
        return None
    return pixel_size_from(scale, unit)


def open_zarr(path: str, key: Optional[str] = None, level: Optional[int] = None) -> FrameSource:
    """Open a Zarr array, or level ``level`` (default 0, full resolution) of an OME-Zarr image.

    Reads lazily: each frame or region asked for is read from its chunks. Singleton axes other
    than the last two (e.g. the t, c, z of a single OME-Zarr plane) are dropped.

    Args:
        path: the store folder. key: the array's path inside a group (plain Zarr groups with
            several arrays). level: resolution level of an OME-Zarr image (0 = finest).

    Raises:
        AffineVAEError: zarr missing, an unreadable store, ``level`` outside the image's levels or
            given for a plain array, a group without a readable array.
    """
    zarr = require("zarr", path, "Zarr")
    with reading(path, "Zarr"):
        root = zarr.open(path, mode="r")
    pixel = None
    if hasattr(root, "shape") and hasattr(root, "dtype"):      # a plain array
        if level is not None:
            raise AffineVAEError(f"{path}: --level applies to OME-Zarr images; this store is a single array")
        if key is not None:  # (it was ignored: a name given for another store read this one's array)
            raise AffineVAEError(f"{path}: --key {key!r} names an array in a Zarr group; this store is a single array")
        arr, where = root, path
    else:
        ms = _multiscales(dict(root.attrs))
        if ms and key is None:
            datasets = ms[0].get("datasets", [])
            lv = 0 if level is None else level
            if not isinstance(lv, (int, np.integer)) or not 0 <= lv < len(datasets):
                raise AffineVAEError(f"{path}: no resolution level {level!r}; the image has levels "
                                     f"0..{len(datasets) - 1}")
            with reading(path, f"level {lv}"):
                arr = root[str(datasets[lv]["path"])]
            pixel = _ome_pixel_size(ms[0], int(lv), len(arr.shape))
            where = f"{path} (level {lv})"
            view = _ome_axes_view(arr, ms[0].get("axes") or [], where)  # its channel axis by name
            if view is not None:
                return ArraySource(view, where, pixel_size=pixel)
        else:
            if level is not None:
                raise AffineVAEError(f"{path}: --level applies to OME-Zarr images; this store has no "
                                     "multiscales metadata")
            names = sorted(str(n) for n, _ in root.arrays())
            name = key if key is not None else (names[0] if len(names) == 1 else None)
            if key is not None and key not in root:
                raise AffineVAEError(f"{path}: no array {key!r}; arrays: {', '.join(names) or 'none'}")
            if name is None or name not in root:
                raise AffineVAEError(f"{path}: name the array with --key; arrays: {', '.join(names) or 'none'}")
            arr, where = root[name], f"{path}:{name}"
    shape = tuple(int(s) for s in arr.shape)
    if len(shape) > 2:
        keep = tuple(a for a in range(len(shape)) if shape[a] != 1 or a >= len(shape) - 2)
        if len(keep) != len(shape):
            arr = _AxesView(arr, keep)
    return ArraySource(arr, where, pixel_size=pixel)


# ============================================================================ registration
for _suffix in RSCIIO_FORMATS:
    READERS.register(_suffix)(StackReader(open_rsciio, RSCIIO_FORMATS[_suffix][1]))
for _suffix in (".mrc", ".mrcs"):
    READERS.register(_suffix)(StackReader(open_mrc, "MRC"))
for _suffix in ZARR_EXTS:
    READERS.register(_suffix)(StackReader(open_zarr, "Zarr", levels=True))
