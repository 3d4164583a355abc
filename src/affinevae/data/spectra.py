"""1-D signals (spectra) and hyperspectral cubes: reading, checks and synthetic sets.

A set of spectra is carried as an :class:`~affinevae.data.imageset.ImageSet` of 1-D signals,
images of height one (N, C, 1, L) (see :mod:`affinevae.nn.signal`), whose ``meta['kind']`` is
:data:`SPECTRA_KIND`. A hyperspectral cube (H, W, E) is read as its H*W spectra in row-major
order; ``meta['grid_shape']`` = [H, W] says how they lie, so that their latents and shifts can
be drawn back as maps (:mod:`affinevae.analysis.spectra`).

Units: samples (the channels of a spectrum, positions along the signal axis) for every shift.
Intensities: each set is divided by its largest absolute value (``meta['intensity_scale']``),
so it lies in [-1, 1] (in [0, 1] when non-negative); ``meta['noise_sigma']`` is a robust
estimate of the noise in those units (from second differences along the signal), which a
Gaussian likelihood takes as its sigma by default (:mod:`affinevae.defaults`).

Readers (:func:`load_signals`): ``.npy`` (never unpickled), ``.npz`` (array ``key``, else
``spectra``, ``cube`` or ``signals``, else the only array) and HDF5 (``file.h5:dataset``),
always with an explicit signal axis. Synthetic sets (:func:`synthetic_peaks`,
:func:`synthetic_cube`) are the ``--data synthetic-peaks`` / ``synthetic-cube`` sources.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import AffineVAEError, user_stacklevel
from ..limits import check_hdf5_dataset, check_npy_header
from .formats import HDF5_SPEC, NPY_EXTS, NPZ_EXTS, reading
from .imageset import ImageSet
from .inputs import as_number, real_array

__all__ = ["SPECTRA_KIND", "MIN_SIGNAL_LENGTH", "SyntheticSpectra", "SyntheticCube", "as_spectra", "spectra_set",
           "load_signals", "synthetic_peaks", "synthetic_cube", "is_spectra", "spectra_noise_sigma",
           "fill_nonfinite_signals", "CALIBRATION_KEYS", "signal_calibration", "describe_calibration",
           "calibration_differs"]

#: ``ImageSet.meta['kind']`` of a set of spectra.
SPECTRA_KIND = "spectra"
#: Fewest samples a signal may have (a shorter signal axis is taken for a wrong ``signal_axis``).
MIN_SIGNAL_LENGTH = 8
#: Arrays of an ``.npz`` tried in order when no key is given.
SIGNAL_KEYS = ("spectra", "cube", "signals")
#: An ``.npz``'s array of class labels beside its signals (one per signal; (H, W) for a cube).
LABELS_KEY = "labels"
#: Arrays of a file's size held at once while its signals are read (the array read, its float32
#: copy, the normalised set): a file's declared size is checked against the memory limit times this.
SIGNAL_COPIES = 3


def is_spectra(data: ImageSet) -> bool:
    """True when ``data`` is a set of 1-D signals made by this module (``meta['kind'] == 'spectra'``)."""
    return data.meta.get("kind") == SPECTRA_KIND


def as_spectra(array: Any, signal_axis: int = -1, where: str = "array",
               cube: Optional[bool] = None, fill_nan: bool = False) -> tuple[np.ndarray, Optional[tuple[int, int]]]:
    """Check and arrange an array of signals: (N, C, L) float32 and the map grid of a cube.

    Args:
        array: (N, L) spectra; (H, W, E) a hyperspectral cube (the default for rank 3); or,
            with ``cube=False``, (N, C, L) signals of C channels.
        signal_axis: the axis along which each signal runs (negative counts from the end); for
            a cube the other two axes, in order, are the map rows and columns, for (N, C, L)
            the first is N and the other C.
        where: what the array is, starting every error message (e.g. the file name).
        cube: rank-3 input is a cube (True, default) or (N, C, L) signals (False); False for
            rank-2 input is refused (it holds no channels).
        fill_nan: fill NaN/infinite samples (a dead detector channel, masked pixels) with a warning
            instead of refusing them (:func:`fill_nonfinite_signals`).

    Returns:
        ``(signals, grid_shape)``: (N, C, L) float32 and (H, W) for a cube (N = H*W,
        row-major), else None.

    Raises:
        AffineVAEError: one line starting with ``where``: a rank other than 2 or 3, a
            ``signal_axis`` outside the array, fewer than :data:`MIN_SIGNAL_LENGTH` samples
            along it (a wrong axis), non-numeric data, no signals, ``cube=False`` for rank 2, or
            NaN/infinite values without ``fill_nan`` (counting the spectra that hold them).
    """
    arr = np.asarray(array)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise AffineVAEError(f"{where}: signals must be real numbers, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise AffineVAEError(f"{where}: spectra must be (N, L), a cube (H, W, E) or (N, C, L); got rank {arr.ndim} "
                             f"shape {arr.shape}")
    if isinstance(signal_axis, bool) or not isinstance(signal_axis, (int, np.integer)) \
            or not -arr.ndim <= signal_axis < arr.ndim:
        raise AffineVAEError(f"{where}: signal axis {signal_axis!r} outside the {arr.ndim} axes of shape {arr.shape}")
    axis = int(signal_axis) % arr.ndim
    length = arr.shape[axis]
    if length < MIN_SIGNAL_LENGTH:
        raise AffineVAEError(f"{where}: the signal axis (axis {axis} of shape {arr.shape}) has only {length} samples "
                             f"(at least {MIN_SIGNAL_LENGTH}); check --signal-axis")
    grid = None
    if arr.ndim == 2 and cube is False:
        raise AffineVAEError(f"{where}: (N, C, L) signals of several channels (--signal-channels) need a rank-3 array, "
                             f"got (N, L) spectra of shape {arr.shape}")
    if arr.ndim == 2:
        if axis == 0:
            arr = arr.T
        sig = arr[:, None, :]
    elif cube is None or cube:
        moved = np.moveaxis(arr, axis, -1)
        grid = (int(moved.shape[0]), int(moved.shape[1]))
        sig = moved.reshape(-1, 1, length)
    else:
        if axis == 0:
            raise AffineVAEError(f"{where}: (N, C, L) signals: axis 0 counts the signals, the signal axis must be 1 or 2")
        sig = np.moveaxis(arr, axis, -1)
    if sig.shape[0] == 0 or sig.shape[1] == 0:
        raise AffineVAEError(f"{where}: no signals (shape {arr.shape})")
    sig = np.ascontiguousarray(sig, dtype=np.float32)
    bad = ~np.isfinite(sig).all(axis=(1, 2))
    if bad.any() and fill_nan:
        return fill_nonfinite_signals(sig, where, grid), grid
    if bad.any():
        first = int(np.argmax(bad))
        at = f"pixel {divmod(first, grid[1])}" if grid is not None else f"signal {first}"
        raise AffineVAEError(f"{where}: {int(bad.sum())} of {len(sig)} spectra hold NaN or infinite values "
                             f"(first: {at}); fix or drop them, or --fill-nan fills them")
    return sig, grid


def fill_nonfinite_signals(signals: np.ndarray, where: str = "array",
                           grid: Optional[tuple[int, int]] = None) -> np.ndarray:
    """(N, C, L) ``signals`` with their NaN/infinite samples filled, said in one warning naming ``where``:
    each gap is interpolated linearly along the signal between its finite neighbours (the nearest one at
    the ends), so a dead detector channel takes its neighbours' values; a signal (one channel of it) with
    no finite sample at all (a masked pixel of a cube, ``grid`` (H, W) naming it) takes the median of the
    others, sample by sample. Vectorised over the signals. Raises :class:`AffineVAEError` when no signal
    has a finite sample."""
    sig = np.array(signals, dtype=np.float32, copy=True)
    ok = np.isfinite(sig)
    n_bad = int((~ok).sum())
    if not n_bad:
        return sig
    length = sig.shape[-1]
    idx = np.broadcast_to(np.arange(length), sig.shape)
    prev = np.maximum.accumulate(np.where(ok, idx, -1), axis=-1)  # the last finite sample at or before each
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(ok, idx, length), -1), axis=-1), -1)  # the next one
    has_prev, has_next = prev >= 0, nxt < length
    vp = np.take_along_axis(sig, np.clip(prev, 0, length - 1), -1)
    vn = np.take_along_axis(sig, np.clip(nxt, 0, length - 1), -1)
    t = (idx - prev) / np.maximum(nxt - prev, 1)
    with np.errstate(invalid="ignore"):  # (the NaN of vp / vn where has_prev / has_next are False: not taken)
        filled = np.where(has_prev & has_next, vp + t * (vn - vp), np.where(has_prev, vp, np.where(has_next, vn, np.nan)))
    sig = np.where(ok, sig, filled).astype(np.float32)
    empty = ~ok.any(-1)  # (N, C) signal channels without any finite sample
    if empty.all(0).any():
        raise AffineVAEError(f"{where}: no signal holds a finite value in {'some channel' if sig.shape[1] > 1 else 'any sample'}: "
                             "nothing to fill NaN from")
    if empty.any():
        median = np.nanmedian(np.where(empty[..., None], np.nan, sig), axis=0)  # (C, L)
        sig = np.where(empty[..., None], median[None], sig).astype(np.float32)
    rows = np.flatnonzero(empty.any(1))
    what = "signal" if sig.shape[1] == 1 else "signal channel"  # (a channel of a signal of several may be empty)
    n_empty = int(empty.sum())
    whole = (f"; {n_empty} {what}{'s' if n_empty > 1 else ''} without any finite sample (first: "
             f"{f'pixel {divmod(int(rows[0]), grid[1])}' if grid is not None else f'signal {int(rows[0])}'}) "
             f"take{'' if n_empty > 1 else 's'} the others' median") if len(rows) else ""
    warnings.warn(f"{where}: {n_bad} NaN or infinite sample{'s' if n_bad > 1 else ''} in "
                  f"{int((~ok).any(axis=(1, 2)).sum())} of {len(sig)} signals filled along the signal from their "
                  f"neighbours{whole}", stacklevel=user_stacklevel())
    return sig


def spectra_noise_sigma(signals: np.ndarray, max_signals: int = 4096) -> float:
    """Robust noise standard deviation of (N, C, L) signals, in their units: the median absolute
    second difference along the signal / 0.6745 / sqrt(6) (white noise of sigma s gives second
    differences of sigma s*sqrt(6); smooth peaks barely contribute to the median)."""
    d2 = np.diff(np.asarray(signals[:max_signals], dtype=np.float64), n=2, axis=-1)
    return float(np.median(np.abs(d2)) / 0.6745 / np.sqrt(6.0))


def spectra_set(signals: np.ndarray, grid_shape: Optional[tuple[int, int]] = None, source: str = "array",
                normalise: bool = True, **meta: Any) -> ImageSet:
    """An :class:`ImageSet` of 1-D signals (N, C, 1, L) from checked (N, C, L) ``signals``.

    ``normalise``: divide by the largest absolute value (recorded as ``meta['intensity_scale']``).
    ``meta`` gets ``kind`` = :data:`SPECTRA_KIND`, ``noise_sigma`` (after normalising),
    ``grid_shape`` [H, W] for a cube, and any further JSON-able ``meta`` given.
    """
    sig = real_array(signals, f"{source}: signals", ndim=(3,), min_size=1,
                     what="(N, C, L) signals of real numbers").astype(np.float32)
    scale = 1.0
    if normalise:
        peak = float(np.abs(sig).max())
        scale = peak if peak > 0 else 1.0
        sig = sig / scale
        if not peak > 0:  # as the image loaders say of constant images
            warnings.warn(f"{source}: every value is 0: the signals hold no contrast", stacklevel=user_stacklevel())
    info: dict[str, Any] = {"kind": SPECTRA_KIND, "intensity_scale": scale,
                            "noise_sigma": spectra_noise_sigma(sig)}
    if grid_shape is not None:
        info["grid_shape"] = [int(grid_shape[0]), int(grid_shape[1])]
    info.update(meta)
    return ImageSet(sig[:, :, None, :], source=source, meta=info)


def _read_array(path: str, key: Optional[str]) -> tuple[np.ndarray, Optional[np.ndarray], Optional[list], Optional[int]]:
    """The array of a signal file (see :func:`load_signals`), an ``.npz``'s ``labels`` array (None
    when absent, when ``key`` names it, or for other formats) and, for an instrument file, its axes
    (:class:`affinevae.data.microscopy.SignalAxis` each; None otherwise) and the index of its
    spectral axis (None when none or not an instrument file)."""
    from .microscopy import RSCIIO_FORMATS

    if Path(path).suffix.lower() in RSCIIO_FORMATS and Path(path).is_file():  # Gatan, EMD, TIA spectrum images
        from .microscopy import read_rsciio_signal

        arr, axes, spectral = read_rsciio_signal(path, key, copies=SIGNAL_COPIES)
        return arr, None, axes, spectral
    m = HDF5_SPEC.match(path)
    if m:
        file, dataset = m.group(1), m.group(2) or key
        if not Path(file).is_file():
            raise AffineVAEError(f"{path}: no such file")
        try:
            import h5py
        except ImportError:
            raise AffineVAEError(f"{path}: reading HDF5 needs h5py (pip install \"affinevae[hdf5]\")") from None
        with reading(path, "the HDF5 file"), h5py.File(file, "r") as f:
            if dataset is None:
                names = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
                if len(names) != 1:
                    raise AffineVAEError(f"{path}: name the dataset (file.h5:dataset); found {names}")
                dataset = names[0]
            if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
                raise AffineVAEError(f"{path}: no dataset {dataset!r}")
            check_hdf5_dataset(f, dataset, path, copies=SIGNAL_COPIES)  # its declared size, before reading
            return np.asarray(f[dataset][()]), None, None, None
    p = Path(path)
    if not p.is_file():
        raise AffineVAEError(f"{path}: no such file")
    suffix = p.suffix.lower()
    if suffix in NPY_EXTS:
        if key is not None:
            raise AffineVAEError(f"{path}: --key applies to .npz and HDF5 files, not .npy")
        with reading(path, "the .npy file"):
            with open(p, "rb") as fh:
                check_npy_header(fh, path, copies=SIGNAL_COPIES)  # the declared size, before anything is allocated
            return np.load(p, allow_pickle=False), None, None, None
    if suffix in NPZ_EXTS:
        with reading(path, "the .npz archive"), np.load(p, allow_pickle=False) as z:
            names = list(z.files)
            if key is None:
                others = [k for k in names if k != LABELS_KEY]
                key = next((k for k in SIGNAL_KEYS if k in names), others[0] if len(others) == 1 else None)
                if key is None:
                    raise AffineVAEError(f"{path}: name the array with --key; found {names}")
            if key not in names:
                raise AffineVAEError(f"{path}: no array {key!r}; found {names}")
            if f"{key}.npy" in z.zip.namelist():
                with z.zip.open(f"{key}.npy") as fh:
                    check_npy_header(fh, f"{path}:{key}", copies=SIGNAL_COPIES)  # before decompressing
            return z[key], (z[LABELS_KEY] if LABELS_KEY in names and key != LABELS_KEY else None), None, None
    raise AffineVAEError(f"{path}: signals are read from .npy, .npz, HDF5 (file.h5:dataset), .dm3/.dm4, .emd or .ser, "
                         f"not {suffix or 'a file without suffix'}")


def load_signals(path: str, signal_axis: int, key: Optional[str] = None, cube: Optional[bool] = None,
                 normalise: bool = True, labels: Optional[str] = None, fill_nan: bool = False) -> ImageSet:
    """Read spectra or a hyperspectral cube from a file into an :class:`ImageSet` of 1-D signals.

    Args:
        path: ``.npy``, ``.npz`` (array ``key``, else ``spectra``/``cube``/``signals``, else the only
            array other than ``labels``), ``file.h5:dataset`` (``key`` may name the dataset), or an
            instrument file read by rosettasciio, ``.dm3``/``.dm4``/``.emd``/``.ser`` (a spectrum
            image or line scan; ``key``: the signal's index,
            :func:`affinevae.data.microscopy.read_rsciio_signal`; its axes in rosettasciio's order).
        signal_axis: the axis the signals run along (required: a cube's layout is not guessed).
        key: the array or dataset name. cube: see :func:`as_spectra`.
        normalise: see :func:`spectra_set`.
        labels: a labels file (.npy/.txt/.csv, :func:`affinevae.data.files.read_labels`; -1 for
            unknown), one integer class per signal in order; for a cube one per pixel in row-major
            order, or a (H, W) ``.npy``. Without it an ``.npz``'s own ``labels`` array is used.
        fill_nan: fill NaN/infinite samples instead of refusing them (:func:`fill_nonfinite_signals`).

    Returns:
        (N, C, 1, L) signals; a cube (H, W, E) gives its H*W spectra in row-major order and
        ``meta['grid_shape']`` = [H, W]; ``meta['signal_axis']`` records the axis; ``labels``
        (N,) int64 where given; an instrument file's calibrated signal axis gives
        ``meta['sample_size']`` (units per sample), ``meta['sample_offset']`` (the first sample's
        value) and ``meta['sample_unit']`` (e.g. 'eV'); an instrument file's spectrum image whose map
        axes are lengths (square pixels) gives ``meta['pixel_size']`` (the map pixel's edge) and
        ``meta['pixel_unit']`` (e.g. 'nm').

    Raises:
        AffineVAEError: a missing or unreadable file, an unknown key, labels that do not match
            the signals, or what :func:`as_spectra` refuses.
    """
    arr, own_labels, axes, spectral = _read_array(str(path), key)
    if (spectral is not None and isinstance(signal_axis, (int, np.integer)) and not isinstance(signal_axis, bool)
            and -arr.ndim <= signal_axis < arr.ndim and int(signal_axis) % arr.ndim != spectral
            and arr.shape[int(signal_axis)] < MIN_SIGNAL_LENGTH):  # too short to read: say where the spectra are
        raise AffineVAEError(f"{path}: --signal-axis {signal_axis} is {axes[int(signal_axis) % arr.ndim]}, too short "
                             f"for signals; the file's spectra run along axis {spectral} ({axes[spectral]}): "
                             f"--signal-axis {spectral}")
    signals, grid = as_spectra(arr, signal_axis, where=str(path), cube=cube, fill_nan=fill_nan)
    calibration = {}
    if axes is not None:  # an instrument file's: does the chosen axis hold its spectra?
        chosen = int(signal_axis) % arr.ndim
        if spectral is None:
            warnings.warn(f"{path}: its signal {key or 0} is not spectra ({', '.join(map(str, axes))}); read along "
                          f"axis {chosen} as --signal-axis says", stacklevel=user_stacklevel())
        elif chosen != spectral:
            warnings.warn(f"{path}: --signal-axis {signal_axis} reads along {axes[chosen]}; the file's spectra run "
                          f"along axis {spectral} ({axes[spectral]}): --signal-axis {spectral}", stacklevel=user_stacklevel())
    if axes is not None and len(axes) == arr.ndim and axes[int(signal_axis) % arr.ndim].units:
        ax = axes[int(signal_axis) % arr.ndim]  # e.g. 0.5 eV per sample from 50 eV
        calibration = {"sample_size": ax.scale, "sample_offset": ax.offset, "sample_unit": ax.units}
    if axes is not None and grid is not None and len(axes) == arr.ndim:  # a spectrum image's map pixels
        from ..units import square_pixel_size
        from .microscopy import pixel_size_from

        rows, cols = [a for i, a in enumerate(axes) if i != int(signal_axis) % arr.ndim]  # as as_spectra lays them
        size = square_pixel_size(pixel_size_from(cols.scale, cols.units), pixel_size_from(rows.scale, rows.units),
                                 where=str(path))
        if size is not None:  # e.g. 2 nm: maps and scale bars in it
            calibration.update(pixel_size=size.value, pixel_unit=size.unit)
    data = spectra_set(signals, grid, source=str(path), normalise=normalise, signal_axis=int(signal_axis),
                       **calibration)
    if labels is not None:
        from .files import read_labels, set_labels

        noun = ("pixels (row-major)" if grid is not None else
                "signals" if signals.shape[1] == 1 else f"signals of {signals.shape[1]} channels")
        set_labels(data, *read_labels(labels, len(data), str(path), grid=grid, noun=noun, with_names=True), source=labels)
    elif own_labels is not None:
        data.labels = _array_labels(own_labels, len(data), grid, f"{path}: its 'labels' array")
    return data


#: The keys of a signal axis's calibration in ``ImageSet.meta`` (:func:`load_signals`) and in a run's
#: record of its training signals (``train.json``'s ``signal_calibration``).
CALIBRATION_KEYS = ("sample_size", "sample_offset", "sample_unit")
#: Largest difference between two calibrations' first-sample values (``sample_offset``) taken as the same,
#: in samples (of the larger sample size); their sample sizes agree within the pixel sizes' relative
#: tolerance, :data:`affinevae.data.stacks.PIXEL_SIZE_TOLERANCE`.
OFFSET_TOLERANCE_SAMPLES = 0.1


def signal_calibration(meta: Optional[dict]) -> Optional[dict]:
    """The signal axis's calibration that a set of signals' ``meta`` (an :class:`ImageSet`'s, from
    :func:`load_signals`) records: ``{'sample_size': float (units per sample), 'sample_offset': float
    (the first sample's value, units), 'sample_unit': str (e.g. 'eV')}``, or None for signals without one
    (an uncalibrated or non-instrument file, a built-in set, images)."""
    meta = meta or {}
    if meta.get("kind") != SPECTRA_KIND or meta.get("sample_size") is None or not meta.get("sample_unit"):
        return None
    return {"sample_size": float(meta["sample_size"]), "sample_offset": float(meta.get("sample_offset") or 0.0),
            "sample_unit": str(meta["sample_unit"])}


def describe_calibration(calibration: dict) -> str:
    """A calibration (:func:`signal_calibration`) in words: ``'0.25 eV per sample, from 280 eV'``."""
    unit = calibration["sample_unit"]
    return f"{float(calibration['sample_size']):g} {unit} per sample, from {float(calibration['sample_offset']):g} {unit}"


def calibration_differs(recorded: Optional[dict], found: Optional[dict]) -> bool:
    """Whether two calibrations (:func:`signal_calibration`) of a signal axis differ: another unit, sample
    sizes differing by more than :data:`~affinevae.data.stacks.PIXEL_SIZE_TOLERANCE` (relative), or first
    samples more than :data:`OFFSET_TOLERANCE_SAMPLES` of a sample apart. False when either is None
    (nothing to compare: a run from before runs recorded it, uncalibrated data)."""
    from .stacks import PIXEL_SIZE_TOLERANCE

    if not recorded or not found:
        return False

    def in_base(c: dict) -> tuple[float, float, str]:  # (sample size, first sample, unit) without an SI prefix
        size, unit = in_base_unit(float(c["sample_size"]), c["sample_unit"])
        return size, in_base_unit(float(c["sample_offset"]), c["sample_unit"])[0], unit

    (a, offset_a, unit_a), (b, offset_b, unit_b) = in_base(recorded), in_base(found)
    step = max(abs(a), abs(b))
    return unit_a != unit_b or abs(a - b) > PIXEL_SIZE_TOLERANCE * step or abs(offset_a - offset_b) > \
        OFFSET_TOLERANCE_SAMPLES * step


#: SI prefixes :func:`in_base_unit` reads before a signal axis's unit (u for µ too).
SI_PREFIXES = {"G": 1e9, "M": 1e6, "k": 1e3, "m": 1e-3, "u": 1e-6, "µ": 1e-6, "μ": 1e-6, "n": 1e-9, "p": 1e-12}
#: The units a prefix may stand before (energies, frequencies, times, wavelengths): 'keV' is 1000 'eV',
#: and 'cm-1' (a Raman shift) is its own unit.
PREFIXED_UNITS = ("eV", "Hz", "s", "m")


def in_base_unit(value: float, unit: Any) -> tuple[float, str]:
    """``value`` in ``unit`` as (value, unit) without an SI prefix where the unit is one of
    :data:`PREFIXED_UNITS` behind one of :data:`SI_PREFIXES` (0.25 'keV' is (250.0, 'eV')); else as given."""
    text = str(unit).strip()
    if text[:1] in SI_PREFIXES and text[1:] in PREFIXED_UNITS:
        return value * SI_PREFIXES[text[0]], text[1:]
    return value, text


def _array_labels(lab: np.ndarray, n: int, grid: Optional[tuple[int, int]], where: str) -> np.ndarray:
    """(n,) int64 class labels from an array beside the signals: (n,), or (H, W) for a cube's ``grid``."""
    lab = np.asarray(lab)
    if grid is not None and lab.shape == tuple(grid):
        lab = lab.reshape(-1)
    if lab.ndim != 1 or len(lab) != n:
        raise AffineVAEError(f"{where} has shape {lab.shape}, not one label per signal ({n})")
    from .files import label_values

    return label_values(lab, where)


# ------------------------------------------------------------------------------------------
# synthetic sets
# ------------------------------------------------------------------------------------------

def _two_peaks(length: int, shift: np.ndarray, ratio: np.ndarray, separation: float, width: float) -> np.ndarray:
    """(N, L) two Gaussian peaks of height 1 and ``ratio`` at ``centre -+ separation / 2 + shift`` samples."""
    u = np.arange(length, dtype=np.float64)[None, :]
    c = (length - 1) / 2.0 + shift[:, None]
    a = np.exp(-0.5 * ((u - c + separation / 2) / width) ** 2)
    b = np.exp(-0.5 * ((u - c - separation / 2) / width) ** 2)
    return a + ratio[:, None] * b


@dataclasses.dataclass
class SyntheticSpectra:
    """Spectra of :func:`synthetic_peaks` and their truth.

    Attributes:
        spectra: (N, 1, L) float32 signals. shift: (N,) true shift in samples.
        ratio: (N,) height of the second peak relative to the first.
    """

    spectra: np.ndarray
    shift: np.ndarray
    ratio: np.ndarray

    def image_set(self) -> ImageSet:
        """The spectra as an :class:`ImageSet` of 1-D signals (:func:`spectra_set`, normalised)."""
        return spectra_set(self.spectra, source="synthetic-peaks")


def _check_synthetic(where: str, seed, **values: float) -> None:
    """One line naming ``where`` unless ``seed`` is an integer >= 0 and every value a finite number >= 0."""
    from ..config import check_seed

    check_seed(seed, f"{where}: seed")
    for name, v in values.items():
        number = as_number(v)
        if number is None or not (np.isfinite(number) and number >= 0):
            raise AffineVAEError(f"{where}: {name} must be a finite number >= 0, got {v!r}")


def synthetic_peaks(n: int = 2000, length: int = 96, max_shift: float = 12.0, ratio_range=(0.2, 1.0),
                    separation: float = 10.0, width: float = 4.0, noise: float = 0.02, seed: int = 0) -> SyntheticSpectra:
    """Spectra of two overlapping Gaussian peaks, randomly shifted, with a varying peak ratio.

    Args:
        n: spectra. length: samples per spectrum.
        max_shift: shifts are uniform in [-max_shift, max_shift] samples.
        ratio_range: the second peak's height (the first is 1) is uniform in this range.
        separation, width: peak distance and standard deviation, samples (overlapping when
            separation < ~2.5 widths).
        noise: standard deviation of the added white noise, relative to the first peak's height 1. seed: random seed.
    """
    if n < 1 or length < MIN_SIGNAL_LENGTH:
        raise AffineVAEError(f"synthetic-peaks: n must be >= 1 and length >= {MIN_SIGNAL_LENGTH}, got {n}, {length}")
    _check_synthetic("synthetic-peaks", seed, max_shift=max_shift, separation=separation, width=width, noise=noise)
    ratios = real_array(ratio_range, "synthetic-peaks: ratio_range", what="(low, high)")
    if ratios.shape != (2,) or not ratios[0] <= ratios[1]:
        raise AffineVAEError(f"synthetic-peaks: ratio_range must be (low, high) with low <= high, got {ratio_range!r}")
    rng = np.random.default_rng(seed)
    shift = rng.uniform(-max_shift, max_shift, n)
    ratio = rng.uniform(ratio_range[0], ratio_range[1], n)
    x = _two_peaks(length, shift, ratio, separation, width) + noise * rng.standard_normal((n, length))
    return SyntheticSpectra(x[:, None, :].astype(np.float32), shift.astype(np.float32), ratio.astype(np.float32))


@dataclasses.dataclass
class SyntheticCube:
    """A hyperspectral cube of :func:`synthetic_cube` and its truth.

    Attributes:
        cube: (H, W, E) float32, the spectra along the last axis.
        regions: (H, W) int64 planted phase of each pixel, 0..K-1.
        shift: (H, W) true shift of each pixel's spectrum, samples.
        ratios: (K,) peak ratio of each phase.
    """

    cube: np.ndarray
    regions: np.ndarray
    shift: np.ndarray
    ratios: np.ndarray

    def image_set(self) -> ImageSet:
        """The cube's H*W spectra as an :class:`ImageSet` of 1-D signals with ``grid_shape`` (normalised)."""
        signals, grid = as_spectra(self.cube, 2, where="synthetic-cube")
        return spectra_set(signals, grid, source="synthetic-cube", signal_axis=2)


def synthetic_cube(height: int = 32, width: int = 32, length: int = 96, n_regions: int = 3,
                   max_shift: float = 12.0, separation: float = 10.0, peak_width: float = 4.0,
                   noise: float = 0.02, smoothness: float = 4.0, seed: int = 0) -> SyntheticCube:
    """A cube whose pixels belong to planted phase regions, each with its own two-peak spectrum.

    The phases differ only in the peak ratio (evenly spaced in [0.2, 1]); every pixel's spectrum
    is shifted by a random amount uniform in [-max_shift, max_shift] samples (e.g. strain or
    calibration drift) and gets white noise of ``noise``. The regions are the argmax of
    ``n_regions`` smoothed random fields (blobs of about ``smoothness`` pixels). The shifts are
    much larger than the phases' differences, so the first principal components follow the
    shift, not the phase.

    Args: ``height``, ``width`` pixels; ``length`` E samples per spectrum; ``max_shift``, ``separation`` (between
    the two peaks) and ``peak_width`` (a Gaussian's standard deviation) in samples; ``noise`` the white noise's
    standard deviation relative to the peaks' height 1; ``smoothness`` pixels; ``seed`` fixes everything. The
    cube is (H, W, E) in the returned :class:`SyntheticCube`.
    """
    from scipy.ndimage import gaussian_filter

    if n_regions < 2:
        raise AffineVAEError(f"synthetic-cube: n_regions must be >= 2, got {n_regions}")
    _check_synthetic("synthetic-cube", seed, max_shift=max_shift, separation=separation, peak_width=peak_width,
                     noise=noise, smoothness=smoothness)
    rng = np.random.default_rng(seed)
    fields = gaussian_filter(rng.standard_normal((n_regions, height, width)), (0, smoothness, smoothness), mode="wrap")
    regions = fields.argmax(0).astype(np.int64)
    ratios = np.linspace(0.2, 1.0, n_regions)
    shift = rng.uniform(-max_shift, max_shift, (height, width))
    spec = _two_peaks(length, shift.reshape(-1), ratios[regions.reshape(-1)], separation, peak_width)
    spec = spec + noise * rng.standard_normal(spec.shape)
    return SyntheticCube(spec.reshape(height, width, length).astype(np.float32), regions,
                         shift.astype(np.float32), ratios.astype(np.float32))
