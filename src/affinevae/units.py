"""Physical pixel sizes: ``--pixel-size 0.05nm`` parsed, unit names normalised, sizes converted.

A :class:`PixelSize` is the edge of one pixel as a length (nm, Å, pm, µm, mm: a micrograph) or as
an angle on the sky (mas, arcsec, arcmin, deg: a telescope image). Instrument files carry one (read
by :mod:`affinevae.data.microscopy`; a FITS image's celestial WCS by :mod:`affinevae.data.astro`);
the ``patches`` and ``map`` commands take ``--pixel-size`` to set or override it, and ``maps.npz``
stores positions and shifts in that unit next to the pixel ones. Lengths and angles never convert
into each other.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from typing import Optional

import numpy as np

from .errors import AffineVAEError, user_stacklevel

__all__ = ["UNITS", "ANGLE_UNITS", "PixelSize", "parse_pixel_size", "same_pixel_size", "unit_name", "nice_length",
           "SQUARE_TOLERANCE", "square_pixels", "square_pixel_size"]

#: Length units: canonical name -> size in nanometres.
UNITS: dict[str, float] = {"pm": 1e-3, "Å": 0.1, "nm": 1.0, "µm": 1e3, "mm": 1e6}
#: Angular units (a telescope's pixel scale on the sky): canonical name -> size in arcseconds.
ANGLE_UNITS: dict[str, float] = {"mas": 1e-3, "arcsec": 1.0, "arcmin": 60.0, "deg": 3600.0}

#: Spellings accepted for each unit (lower case), including those instrument files use.
_ALIASES: dict[str, str] = {
    "pm": "pm", "picometer": "pm", "picometre": "pm",
    "å": "Å", "a": "Å", "angstrom": "Å", "ångström": "Å", "Å": "Å", "\u212b": "Å",  # U+212B ANGSTROM SIGN
    "nm": "nm", "nanometer": "nm", "nanometre": "nm",
    "µm": "µm", "μm": "µm", "um": "µm", "micron": "µm", "micrometer": "µm", "micrometre": "µm",
    "mm": "mm", "millimeter": "mm", "millimetre": "mm",
    "mas": "mas", "milliarcsec": "mas", "milliarcsecond": "mas", "milliarcseconds": "mas",
    "arcsec": "arcsec", "as": "arcsec", "asec": "arcsec", '"': "arcsec", "arcsecond": "arcsec", "arcseconds": "arcsec",
    "arcmin": "arcmin", "amin": "arcmin", "'": "arcmin", "\u2032": "arcmin", "\u2033": "arcsec", "arcminute": "arcmin", "arcminutes": "arcmin",
    "deg": "deg", "degree": "deg", "degrees": "deg", "°": "deg",
}


def _size(unit: str) -> tuple[str, float]:
    """(``'length'`` or ``'angle'``, the size of one ``unit`` in nm or arcsec) of a canonical unit name."""
    return ("length", UNITS[unit]) if unit in UNITS else ("angle", ANGLE_UNITS[unit])


#: Spellings read only as written: their capitalised forms name other units (Mm, PM).
CASE_SENSITIVE = ("mm", "pm")


def unit_name(text: str, where: str = "unit") -> str:
    """The canonical unit name (a key of :data:`UNITS`) for a spelling such as 'A', 'um', 'nanometer'.

    Raises:
        AffineVAEError: an unknown unit, naming ``where`` and the accepted units.
    """
    key = str(text).strip()
    # any case, but for the one-letter prefixes whose capital is another unit (Mm: megametre, Pm: petametre)
    unit = _ALIASES.get(key) or (_ALIASES.get(key.lower()) if key.lower() not in CASE_SENSITIVE else None)
    if unit is None:
        raise AffineVAEError(f"{where}: unknown unit {text!r}; use a length: {', '.join(UNITS)} "
                             f"(also A, um), or an angle on the sky: {', '.join(ANGLE_UNITS)}")
    return unit


@dataclasses.dataclass(frozen=True)
class PixelSize:
    """The edge of one (square) pixel: a length, or an angle on the sky.

    Attributes:
        value: size of one pixel in ``unit`` (> 0, finite).
        unit: a key of :data:`UNITS` ('pm', 'Å', 'nm', 'µm', 'mm') or of :data:`ANGLE_UNITS` ('mas',
            'arcsec', 'arcmin', 'deg').
    """

    value: float
    unit: str

    def __post_init__(self) -> None:
        if not (isinstance(self.value, numbers.Real) and not isinstance(self.value, (bool, np.bool_))
                and math.isfinite(self.value) and self.value > 0):
            raise AffineVAEError(f"pixel size must be a finite number > 0, got {self.value!r}")
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "unit", unit_name(self.unit, "pixel size"))

    @property
    def dimension(self) -> str:
        """``'length'`` (a micrograph's pixel) or ``'angle'`` (a telescope's pixel scale on the sky)."""
        return _size(self.unit)[0]

    def to(self, unit: str) -> "PixelSize":
        """The same size in another unit of its :attr:`dimension`.

        Raises:
            AffineVAEError: ``unit`` is unknown, or an angle for a length (or the other way round).
        """
        u = unit_name(unit)
        (mine, size), (theirs, other) = _size(self.unit), _size(u)
        if mine != theirs:
            article = {"angle": "an angle", "length": "a length"}
            raise AffineVAEError(f"a pixel size of {self} ({article[mine]}) has no value in {u} ({article[theirs]})")
        return PixelSize(self.value * size / other, u)

    def length(self, pixels):
        """``pixels`` (a number or array) as a length in :attr:`unit`."""
        return pixels * self.value

    def __str__(self) -> str:
        return f"{self.value:g} {self.unit}"


_SPEC = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([^\s0-9.].*?)?\s*(?:/\s*(?:px|pix|pixel))?\s*$")


def same_pixel_size(a: PixelSize, b: PixelSize, rel: float = 1e-3) -> bool:
    """True when pixel sizes ``a`` and ``b`` agree within ``rel`` (relative to the larger; 0.1 %, as stacks
    read together, :data:`affinevae.data.stacks.PIXEL_SIZE_TOLERANCE`) in a common unit; a length and an angle
    never agree."""
    if a.dimension != b.dimension:
        return False
    other = b.to(a.unit).value
    return abs(a.value - other) <= rel * max(a.value, other)


def parse_pixel_size(text: Optional[str], where: str = "--pixel-size") -> Optional[PixelSize]:
    """Parse ``'0.05nm'``, ``'0.5 Å'``, ``'50pm'``, ``'0.001um'``, ``'0.2arcsec'`` (optionally ``/px``) into a :class:`PixelSize`.

    None gives None. The unit is required.

    Raises:
        AffineVAEError: not a number followed by a unit, a value <= 0, or an unknown unit.
    """
    if text is None:
        return None
    m = _SPEC.match(str(text))
    if not m or not m.group(2):
        raise AffineVAEError(f"{where}: expected a number and a unit such as 0.05nm, 0.5A, 50pm or (on the sky) "
                             f"0.2arcsec, got {text!r}")
    try:
        return PixelSize(float(m.group(1)), unit_name(m.group(2), where))
    except AffineVAEError as exc:  # a value of 0 or beyond float range: said under the option's name
        if str(exc).startswith(where):
            raise
        raise AffineVAEError(f"{where}: {exc}") from None


def nice_length(span: float) -> float:
    """A round length (1, 2 or 5 times a power of ten) close to ``span / 5``, for scale bars."""
    if not span > 0:
        return 1.0
    target = span / 5.0
    p = 10.0 ** math.floor(math.log10(target))
    return min((m * p for m in (1.0, 2.0, 5.0, 10.0)), key=lambda v: abs(math.log(v / target)))


#: Pixels whose two sides a file gives differ by more than this share have no one size (no pixel size is taken).
SQUARE_TOLERANCE = 0.01


def square_pixels(side_a: float, side_b: float) -> bool:
    """Whether two pixel sides (> 0, one unit) are one size: the larger at most 1 + :data:`SQUARE_TOLERANCE`
    times the smaller (the rule for every format's pixel size: :func:`square_pixel_size`, FITS scales)."""
    return max(side_a, side_b) <= (1.0 + SQUARE_TOLERANCE) * min(side_a, side_b)


def square_pixel_size(along_x: Optional[PixelSize], along_y: Optional[PixelSize],
                      where: Optional[str] = None) -> Optional[PixelSize]:
    """The pixel size of a file that gives one along x (columns) and one along y (rows): ``along_x`` when the
    two agree within :data:`SQUARE_TOLERANCE` (or y is not given or not comparable), None when they differ
    (pixels that are not square have no one size; with ``where``, the file, one warning says so, as FITS
    files with non-square pixels get), None without ``along_x``."""
    import warnings

    if along_x is None or along_y is None or along_y.dimension != along_x.dimension:
        return along_x
    y = along_y.to(along_x.unit).value
    if square_pixels(along_x.value, y):
        return along_x
    if where:
        warnings.warn(f"{where}: no pixel size taken: its pixels are not square ({along_x.value:.4g} x {y:.4g} "
                      f"{along_x.unit}); maps and scale bars are in pixels", stacklevel=user_stacklevel())
    return None
