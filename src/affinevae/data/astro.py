"""Astronomy image files: FITS (``.fits``, ``.fit``, ``.fts``), through astropy (extra ``[astro]``).

The reader registers itself in :data:`affinevae.data.stacks.READERS`, so
:func:`~affinevae.data.stacks.open_stack` (``patches``, ``map``) opens a FITS image like any
other stack, and :func:`~affinevae.data.files.load_images` (``--data``) reads a FITS cube of
cut-outs (N, H, W) as N training images:

- the image HDU: ``key`` names one (its EXTNAME, e.g. ``SCI``, or its index), else the file's only
  HDU whose data are an image of at least two axes (a primary HDU without data is skipped); a file
  with several image HDUs (a science image and its weight map) needs ``key``, and for training data
  ``key='all'`` stacks a file of one 2-D cut-out per HDU (as cut-out services write them) as N images;
- the data are memory mapped where astropy can (no BSCALE/BZERO scaling); astropy applies the
  scaling otherwise (16-bit unsigned data, stored as int16 with BZERO 32768, come back as uint16),
  and big-endian values are converted when read;
- as a stack (``open_fits``): (H, W) is one frame, (N, H, W) a stack of N frames, (N, C, H, W)
  frames of C <= 4 channels; as training data (``read_fits``): the array, shaped by the rules of
  :func:`~affinevae.data.files.load_images` (so (N, 5, H, W) five-band cut-outs are N images of
  five channels).

The pixel size of a stack (``patches``, ``map``: maps in arcsec, scale bars) is its pixel scale on
the sky in arcseconds (:func:`sky_pixel_size`): from the HDU's celestial WCS (CDELT or CD/PC and
CUNIT), else a ``PIXSCALE`` or ``SECPIX`` keyword (arcsec per pixel); none when the pixels are not
square or the header says neither.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import AffineVAEError, user_stacklevel
from .formats import ASTRO_EXTRA, FITS_EXTS, reading
from .microscopy import require
from ..units import PixelSize, square_pixels
from .stacks import READERS, ArraySource, FrameSource, StackReader

__all__ = ["open_fits", "read_fits", "sky_pixel_size", "fits_contents", "all_hdus_pixel_size", "ALL_HDUS"]

#: Header keywords read as the pixel scale in arcsec per pixel when the header has no celestial WCS.
PIXEL_SCALE_KEYWORDS = ("PIXSCALE", "SECPIX")


def sky_pixel_size(header: Any, where: Optional[str] = None) -> Optional[PixelSize]:
    """The pixel scale on the sky of a FITS image HDU's ``header`` (an ``astropy.io.fits.Header``), in
    arcsec per pixel: from its celestial WCS (the scales along the two celestial axes of the projection
    plane, whatever the rotation), else a :data:`PIXEL_SCALE_KEYWORDS` keyword; None without either, or
    when the two axes' scales differ by more than 1 % (pixels that are not square have no one size).
    With ``where`` (the file, for messages) a scale the header gives but that is not taken (pixels not
    square, a singular CD matrix) is said in one warning, so a map in pixels is not a mystery."""
    from astropy import units as u
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    scales, dropped = None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy's notes on non-standard headers (FITSFixedWarning)
        try:
            wcs = WCS(header)
            # astropy takes 1 degree per pixel where the header gives no scale: only a scale written counts
            if wcs.has_celestial and all(_scale_written(header, a + 1) for a in (wcs.wcs.lng, wcs.wcs.lat)):
                cel = wcs.celestial
                if abs(np.linalg.det(cel.pixel_scale_matrix)) > 0:  # a singular CD matrix maps no area
                    scales = [abs(float(u.Quantity(s, unit).to_value(u.arcsec)))
                              for s, unit in zip(proj_plane_pixel_scales(cel), cel.wcs.cunit)]
                elif where:
                    dropped = "its celestial WCS maps no area (a singular CD matrix)"
        except Exception:  # noqa: BLE001 - a header astropy cannot read as a WCS: then the keywords
            scales = None
    if scales is None:
        values = [_number(header.get(k)) for k in PIXEL_SCALE_KEYWORDS]
        value = next((abs(v) for v in values if v is not None and v != 0), None)
        scales = None if value is None else [value] * 2
    valid = bool(scales) and all(np.isfinite(s) and s > 0 for s in scales)
    if valid and not square_pixels(*scales):
        dropped, valid = f"its pixels are not square ({scales[0]:.4g} x {scales[1]:.4g} arcsec)", False
    if not valid:
        if dropped and where:
            warnings.warn(f"{where}: no pixel size taken: {dropped}; maps and scale bars are in pixels", stacklevel=user_stacklevel())
        return None
    return PixelSize(float(f"{np.mean(scales):.10g}"), "arcsec")  # 0.2 / 3600 degrees read back as 0.2


def _number(value: Any) -> Optional[float]:
    """A header card's value as a finite float, or None (missing, a string, a bool, NaN)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return float(value) if np.isfinite(value) else None


def _scale_written(header: Any, axis: int) -> bool:
    """Whether ``header`` writes a pixel scale for WCS axis ``axis`` (1-based): a non-zero ``CDELTi`` or
    a non-zero ``CDi_j`` (the PC matrix scales CDELT, so CDELT must be written with it)."""
    if _number(header.get(f"CDELT{axis}")):
        return True
    return any(_number(header.get(f"CD{axis}_{j}")) for j in range(1, int(header.get("NAXIS", 2) or 2) + 1))


def open_fits(path: str, key: Optional[str] = None, level: Optional[int] = None) -> FrameSource:
    """Open a FITS file's image HDU (``key``: its EXTNAME or index; default the file's only one with
    image data of >= 2 axes) as a :class:`~affinevae.data.stacks.FrameSource` read lazily.

    Raises:
        AffineVAEError: astropy missing (naming the extra), an unreadable or truncated file, no
            image HDU or several without a ``key``, an unknown ``key``.
    """
    hdul, data = _open(path, key, frames=True)
    try:
        return ArraySource(data, path, owner=hdul, pixel_size=sky_pixel_size(_image_hdu(hdul, path, key, True).header,
                                                                               where=str(path)))
    except BaseException:
        hdul.close()
        raise


def read_fits(path: str, key: Optional[str] = None) -> np.ndarray:
    """The image data of a FITS file's HDU (chosen as :func:`open_fits` does) as an in-memory array
    of the file's shape, native byte order; the file is closed again. ``key='all'``: every image
    HDU, each one 2-D cut-out of one shape (a cut-out service's file), stacked as (N, H, W).

    Raises:
        AffineVAEError: as :func:`open_fits`; for 'all', image HDUs that are not 2-D or differ in shape.
    """
    if key is not None and str(key).strip().lower() == ALL_HDUS:
        return _read_all(path)
    hdul, data = _open(path, key)
    try:
        with reading(path, "FITS"):
            return _native(np.array(data))
    finally:
        hdul.close()


def fits_contents(path: str) -> tuple[str, int]:
    """What a FITS file holds, for ``affinevae info``: ``(listing, n_images)``, the HDUs as the
    error messages list them (e.g. ``0:PRIMARY(PrimaryHDU 64 64), 1:SCI(ImageHDU 64 64)``) and how
    many are images of 2 or more axes (more than one: a ``key`` must name one, or ``'all'`` stack them).

    Raises:
        AffineVAEError: as :func:`open_fits` for an unreadable file.
    """
    hdul, _ = _open(path, None, many=True)
    try:
        return _listing(hdul), len(_image_hdus(hdul))
    finally:
        hdul.close()


def _native(out: np.ndarray) -> np.ndarray:
    """``out`` in the machine's byte order (FITS stores big-endian values)."""
    return out.astype(out.dtype.newbyteorder("="), copy=False)


#: ``key`` that stacks every image HDU of a FITS file (one cut-out per HDU) as training images.
ALL_HDUS = "all"


def _read_all(path: str) -> np.ndarray:
    """Every image HDU of ``path`` (each 2-D, one shape) stacked as (N, H, W), native byte order."""
    hdul, _ = _open(path, None, many=True)
    try:
        hdus = _image_hdus(hdul)
        shapes = {tuple(int(v) for v in h.shape) for h in hdus}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise AffineVAEError(f"{path}: --key all stacks image HDUs that each hold one 2-D cut-out of one shape; "
                                 f"this file holds {_listing(hdul)}")
        with reading(path, "FITS"):
            return _native(np.stack([np.asarray(_checked_data(h, path)) for h in hdus]))
    finally:
        hdul.close()


def all_hdus_pixel_size(path: str) -> Optional[PixelSize]:
    """The pixel scale on the sky (arcsec) that the image HDUs ``key='all'`` stacks record
    (:func:`sky_pixel_size` of each; a cut-out service writes one per HDU), when they agree within
    :data:`~affinevae.data.stacks.PIXEL_SIZE_TOLERANCE`; HDUs that record none take the others', scales
    that differ keep none (said in a warning naming ``path``); None when none records one."""
    from .stacks import agreed_pixel_size

    hdul, _ = _open(path, None, many=True)
    try:
        images = {id(h) for h in _image_hdus(hdul)}
        sizes = [(f"HDU {h.name or i}", size) for i, h in enumerate(hdul)  # named as the listing names them
                 if id(h) in images and (size := sky_pixel_size(h.header, where=str(path))) is not None]
    finally:
        hdul.close()
    return agreed_pixel_size(sizes, str(path), "its cut-outs record different pixel scales")


def _refuse_declared_beyond(fits: Any, path: str) -> None:
    """Raise the one-line "truncated or damaged" error when a header of ``path`` (the primary one or an
    extension's, read in turn) declares more data bytes (BITPIX, NAXISn, PCOUNT, GCOUNT) than the file
    holds after it; return when none does, or when a header cannot be read (the reader's message stands)."""
    size = Path(path).stat().st_size
    offset, index = 0, 0
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            while offset < size:
                f.seek(offset)
                header = fits.Header.fromfile(f)
                start = f.tell()  # the data begin after the header's padded blocks
                naxis = int(header.get("NAXIS", 0))
                shape = tuple(int(header.get(f"NAXIS{i}", 0)) for i in range(naxis, 0, -1))
                itemsize = abs(int(header.get("BITPIX", 8))) // 8
                values = int(np.prod(shape, dtype=np.float64)) if shape else 0
                declared = itemsize * int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + values)
                if start + declared > size:
                    what = "primary header" if index == 0 else f"header of HDU {index}"
                    raise AffineVAEError(f"{path}: truncated or damaged: its {what} declares {shape} values of "
                                         f"{itemsize} bytes ({declared} bytes), the file holds {size} bytes")
                offset, index = start + -(-declared // 2880) * 2880, index + 1
    except AffineVAEError:
        raise
    except Exception:  # noqa: BLE001 - a header that cannot be read: the reader's own message says so
        return


def _open(path: str, key: Optional[str], many: bool = False, frames: bool = False) -> tuple[Any, Any]:
    """(the open HDU list, the chosen HDU's data array, or None with ``many``); astropy's notes on a
    damaged file become the one-line error "truncated or damaged" (with its first note), the others
    are dropped. ``frames``: for a frame source (the messages then offer no ``key='all'``)."""
    fits = require("astropy.io.fits", path, "FITS", extra=ASTRO_EXTRA)
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always")
        with reading(path, "FITS"):
            try:
                hdul = fits.open(path, mode="readonly")
            except OSError:  # e.g. EINVAL seeking past a declared size larger than any file: say the sizes
                _refuse_declared_beyond(fits, path)
                raise
            try:
                len(hdul)  # every header, so that a file cut short in a later one is noticed now
            except BaseException as exc:
                hdul.close()
                if isinstance(exc, OSError):
                    _refuse_declared_beyond(fits, path)
                raise
        damaged = [str(n.message).splitlines() for n in notes
                   if "truncated" in str(n.message) or "Error validating header" in str(n.message)]
        if damaged:
            hdul.close()
            raise AffineVAEError(f"{path}: truncated or damaged: {' '.join(line.strip() for line in damaged[0])}")
        try:
            return hdul, (None if many else _image_data(hdul, path, key, frames))
        except BaseException:
            hdul.close()
            raise


def _image_data(hdul: Any, path: str, key: Optional[str], frames: bool = False) -> Any:
    """The data of the image HDU :func:`_image_hdu` picks (numbers only)."""
    return _checked_data(_image_hdu(hdul, path, key, frames), path)


def _checked_data(hdu: Any, path: str) -> Any:
    """``hdu.data``, numbers only; a file too short for it is one line."""
    shape = tuple(int(v) for v in hdu.shape)
    try:
        data = hdu.data
    except (TypeError, ValueError, OSError) as exc:  # astropy: "buffer is too small for requested array"
        itemsize = abs(int(hdu.header.get("BITPIX", 8))) // 8
        declared = int(np.prod(shape)) * itemsize
        raise AffineVAEError(f"{path}: truncated or damaged: HDU {hdu.name or 0!s} declares {shape} values of "
                             f"{itemsize} bytes ({declared} bytes), the file holds {Path(path).stat().st_size} "
                             f"bytes in all ({exc})") from None
    if not np.issubdtype(data.dtype, np.number):
        raise AffineVAEError(f"{path}: HDU {hdu.name!s} holds {data.dtype} values, not pixel numbers")
    return data


def _image_hdu(hdul: Any, path: str, key: Optional[str], frames: bool = False) -> Any:
    """The HDU ``key`` names (EXTNAME, case-insensitive, or an index), else the file's only image HDU
    with data of at least two axes; one-line errors list what the file holds (also when it holds
    several image HDUs and no ``key`` says which: a science image beside its weight map, or one
    cut-out per HDU, for which ``key='all'`` stacks them as training images)."""
    listing = _listing(hdul)
    if key is not None and str(key).strip().lower() == ALL_HDUS and frames:
        raise AffineVAEError(f"{path}: --key all stacks one-cut-out HDUs as training images (train, encode, ...); "
                             f"a frame for patches or map is one HDU: name it; the file holds {listing}")
    if key is not None:
        text = str(key).strip()
        if text.lstrip("-").isdigit():
            i = int(text)
            if not 0 <= i < len(hdul):
                raise AffineVAEError(f"{path}: no HDU {i}; the file holds {listing}")
            hdu = hdul[i]
        else:  # EXTNAME, or EXTNAME,EXTVER where several HDUs share a name (SCI,2)
            name, _, ver = text.partition(",")
            found = [h for h in hdul if (h.name or "").upper() == name.strip().upper()]
            if ver.strip():
                found = [h for h in found if str(getattr(h, "ver", 1)) == ver.strip()]
            if not found:
                raise AffineVAEError(f"{path}: no HDU named {text!r}; the file holds {listing}")
            if len(found) > 1:
                versions = ", ".join(f"{name.strip().upper()},{getattr(h, 'ver', 1)}" for h in found)
                raise AffineVAEError(f"{path}: {len(found)} HDUs are named {name.strip()!r}: name one with its version "
                                     f"({versions}) or its index; the file holds {listing}")
            hdu = found[0]
        if not getattr(hdu, "is_image", False) or len(getattr(hdu, "shape", ()) or ()) < 2:
            raise AffineVAEError(f"{path}: HDU {text!r} is not an image of 2 or more axes; the file holds {listing}")
        return hdu
    images = _image_hdus(hdul)
    if not images:
        raise AffineVAEError(f"{path}: no image HDU of 2 or more axes (tables only?); the file holds {listing}")
    if len(images) > 1:
        shapes = {tuple(int(v) for v in h.shape) for h in images}
        stack = (" or --key all to stack them as images (one cut-out per HDU)"
                 if not frames and len(shapes) == 1 and len(next(iter(shapes))) == 2 else "")
        raise AffineVAEError(f"{path}: holds {len(images)} image HDUs; name one with --key (EXTNAME or index){stack}; "
                             f"the file holds {listing}")
    return images[0]


def _image_hdus(hdul: Any) -> list:
    """The HDUs of ``hdul`` whose data are an image of at least two axes."""
    return [h for h in hdul if getattr(h, "is_image", False) and len(h.shape or ()) >= 2]


def _listing(hdul: Any, most: int = 8) -> str:
    """What the file holds, e.g. ``0:PRIMARY(PrimaryHDU), 1:SCI(ImageHDU 40 40)``; after ``most``
    HDUs the rest are counted."""
    parts = [f"{i}:{h.name or '-'}({type(h).__name__}{''.join(f' {s}' for s in getattr(h, 'shape', ()) or ())})"
             for i, h in enumerate(hdul[:most])]
    if len(hdul) > most:
        parts.append(f"... {len(hdul) - most} more")
    return ", ".join(parts)


for _suffix in FITS_EXTS:
    READERS.register(_suffix)(StackReader(open_fits, "FITS"))
