"""Resource limits checked before allocation: declared array sizes, model sizes, search sizes.

Also one bound on compute: :data:`MAX_SEARCH_EVALUATIONS_PER_IMAGE`, the most model passes a pose
search may spend on each image (checked by :func:`affinevae.pose.search.check_search_work`).

A file's header (a TIFF page, an HDF5 dataset's shape, a ``.npy`` header, ``model.json``) can
declare far more data than the machine holds. Every reader calls :func:`check_allocation` (or
:func:`check_array`) with the declared size *before* reading, and a request larger than the
memory limit is refused with one line naming the size instead of an out-of-memory crash.

The limit is the memory available now (``MemAvailable`` of ``/proc/meminfo``, else
``os.sysconf``), lowered by ``--max-memory SIZE`` on the command line, by :func:`memory_limit_set`
in Python, or by the ``AFFINEVAE_MAX_MEMORY`` environment variable (e.g. ``4G``, ``512M``,
``1500000000``).

A leaf of the package: it imports nothing of affinevae but :mod:`affinevae.errors`.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from typing import Any, Iterator, Optional, Sequence

from .errors import AffineVAEError

__all__ = ["available_memory", "memory_limit", "memory_limit_set", "parse_size", "format_size",
           "check_allocation", "check_array", "check_hdf5_dataset", "ENV_MAX_MEMORY",
           "MAX_SEARCH_EVALUATIONS_PER_IMAGE", "MANIFOLD_GRID_SIDE", "ANGLE_HISTOGRAM_BINS"]

#: Environment variable holding a memory limit (same forms as ``--max-memory``).
ENV_MAX_MEMORY = "AFFINEVAE_MAX_MEMORY"

#: Most model passes (one image through the model; a backward pass counts as two) that a pose
#: search may spend per image: its restarts, its Adam refinement (``keep`` x ``steps``), the pose
#: head's views and ``align``'s ELBO samples (:func:`affinevae.pose.search.search_evaluations`).
#: Normal use stays far below it: the default search costs 79 passes per image (16 restarts, the
#: 2 best refined for 10 steps, one head view), the benchmarks' largest, exhaustive one 1 860
#: (30 restarts all refined for 20 steps), a one-degree grid of 360 restarts with 10 refined for
#: 100 steps about 3 400. A search beyond it is a typing slip (``--restarts 100000000``: hours on
#: 5 images, after passing the memory check) and is refused in one line before anything runs.
MAX_SEARCH_EVALUATIONS_PER_IMAGE = 1_000_000
#: Images per side of a latent-manifold grid (:func:`affinevae.analysis.latent.latent_manifold`,
#: ``plot manifold --d``): (smallest, largest); the rVAE article draws 100 x 100.
MANIFOLD_GRID_SIDE = (2, 128)
#: Angle bins over 360 degrees of the rotation histograms
#: (:func:`affinevae.analysis.pose.rotation_histograms`, ``plot rotation-histograms --bins``): (smallest, largest).
ANGLE_HISTOGRAM_BINS = (2, 720)

_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024 ** 2, "MB": 1024 ** 2, "MIB": 1024 ** 2,
          "G": 1024 ** 3, "GB": 1024 ** 3, "GIB": 1024 ** 3, "T": 1024 ** 4, "TB": 1024 ** 4, "TIB": 1024 ** 4}
_limit_override: Optional[int] = None
#: An HDF5 dataset declaring more than this many bytes ...
SPARSE_MIN_BYTES = 1 << 30
#: ... but storing less than 1/SPARSE_RATIO of them (unwritten chunks read as fill values) is refused.
SPARSE_RATIO = 1000


def parse_size(text: str | int, what: str = "--max-memory") -> int:
    """'4G', '512M', '1.5GiB', '1000000' -> bytes (binary units); an :class:`AffineVAEError` otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
        if not m or m.group(2).upper() not in _UNITS:
            raise AffineVAEError(f"{what} must be a size such as 4G, 512M or a number of bytes, got {text!r}")
        value, unit = float(m.group(1)), m.group(2).upper()
    size = value * _UNITS[unit]
    if not math.isfinite(size) or size < 1:
        raise AffineVAEError(f"{what} must be a positive size, got {text!r}")
    return int(size)


def format_size(nbytes: float) -> str:
    """Bytes as a short human-readable string ('13.4 GiB')."""
    for unit, scale in (("TiB", 1024 ** 4), ("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} B"


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (``MemAvailable``, else free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no sysconf: no limit known
        return 1 << 62


def memory_limit() -> int:
    """The memory limit in bytes: the smallest of the available memory, ``--max-memory`` /
    :func:`memory_limit_set` and ``$AFFINEVAE_MAX_MEMORY``."""
    limit = available_memory()
    env = os.environ.get(ENV_MAX_MEMORY)
    if env:
        limit = min(limit, parse_size(env, f"${ENV_MAX_MEMORY}"))
    if _limit_override is not None:
        limit = min(limit, _limit_override)
    return limit


@contextlib.contextmanager
def memory_limit_set(size: Optional[str | int]) -> Iterator[None]:
    """Context manager: lower the memory limit to ``size`` (bytes or '4G') inside the block (None: no change)."""
    global _limit_override
    old = _limit_override
    if size is not None:
        _limit_override = parse_size(size)
    try:
        yield
    finally:
        _limit_override = old


def check_allocation(nbytes: float, what: str, where: str) -> None:
    """Raise a one-line :class:`AffineVAEError` when ``nbytes`` exceed :func:`memory_limit`.

    Args:
        nbytes: the bytes the caller is about to allocate.
        what: what would be allocated ('a 60000x60000 TIFF page as float32').
        where: the file or option responsible (starts the message).
    """
    limit = memory_limit()
    if nbytes > limit:
        raise AffineVAEError(f"{where}: {what} would need {format_size(nbytes)}, more than the "
                             f"{format_size(limit)} of memory available (--max-memory / ${ENV_MAX_MEMORY})")


def check_array(shape: Sequence[int], where: str, what: str = "the declared images", itemsize: int = 4,
                copies: float = 1.0) -> None:
    """Check a declared array ``shape`` (read from a header, nothing allocated yet) against the limit.

    ``itemsize`` bytes per element (4: the float32 the images become), ``copies``: how many such
    arrays the caller holds at once.
    """
    count = 1
    for s in shape:
        s = int(s)
        if s < 0:
            raise AffineVAEError(f"{where}: negative dimension in the declared shape {tuple(shape)}")
        count *= s
    shape_text = "x".join(str(int(s)) for s in shape)
    check_allocation(count * itemsize * copies, f"{what} ({shape_text})", where)


def check_npy_header(f: Any, where: str, itemsize: int = 4, copies: float = 1.0) -> None:
    """Check the array an ``.npy`` stream declares (its header only is read from the binary file
    object ``f``, positioned at the start) against the memory limit, as ``itemsize``-byte elements
    (4: float32), ``copies`` at once. A stream that is not an ``.npy`` is left to the reader."""
    import numpy as np

    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except Exception:  # noqa: BLE001 - not an .npy header: the reader reports it
        return
    check_array(shape, where, "the declared array", itemsize=max(itemsize, dtype.itemsize), copies=copies)


def check_hdf5_dataset(h5file: Any, name: str, where: str, itemsize: int = 4, copies: float = 1.0,
                       frames: Optional[int] = None) -> None:
    """Refuse the dataset ``name`` of an open ``h5py.File`` when its data would come from outside the
    file or would not fit in memory; nothing of its data is read.

    Refused: a link to another file on the dataset's path (``h5py.ExternalLink``), *external raw
    storage* (``dset.external``: bytes read from another file of the machine), a *virtual
    dataset* (``dset.is_virtual``: mapped from other files), a declared size over 1 GiB of which
    less than 1/1000 is stored (unwritten chunks read as fill values: a crafted file that would
    take hours to stream), and a declared shape larger than the memory limit (``frames``: only
    that many leading entries are held at a time; ``itemsize`` bytes per element, ``copies``
    arrays held at once).
    """
    import h5py

    parts = [p for p in str(name).split("/") if p]
    for i in range(1, len(parts) + 1):
        link = h5file.get("/" + "/".join(parts[:i]), getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise AffineVAEError(f"{where}: '/{'/'.join(parts[:i])}' is a link to another file ({link.filename}); "
                                 "refused: copy the data into the file")
    dset = h5file[name]
    if getattr(dset, "external", None):
        raise AffineVAEError(f"{where}: the dataset's data are stored outside the file (HDF5 external storage); "
                             "refused: copy the data into the file")
    if getattr(dset, "is_virtual", False):
        raise AffineVAEError(f"{where}: a virtual HDF5 dataset (mapped from other files); refused: copy the data "
                             "into the file")
    shape = tuple(int(s) for s in (dset.shape or ()))
    declared = math.prod(shape) * int(dset.dtype.itemsize)
    try:
        stored = int(dset.id.get_storage_size())
    except Exception:  # noqa: BLE001 - no storage information: no ratio check
        stored = declared
    if declared > SPARSE_MIN_BYTES and stored * SPARSE_RATIO < declared:
        raise AffineVAEError(f"{where}: declares {format_size(declared)} of data but stores only {format_size(stored)} "
                             f"(never written, or compressed over {SPARSE_RATIO}x); refused")
    if frames is not None and shape:
        shape = (min(shape[0], frames),) + shape[1:]
    check_array(shape, where, "the declared dataset", itemsize=itemsize, copies=copies)
