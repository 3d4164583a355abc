"""Errors raised for bad user input.

Every problem the user can fix (a missing file, a wrong shape, an unknown option, a
mismatched checkpoint) raises :class:`AffineVAEError` with a one-line message that says
what is wrong and where. The CLI prints that line and exits with status 2.
"""

from __future__ import annotations


class AffineVAEError(ValueError):
    """A user error: bad input data, options or files. The message is one line."""


def fail(message: str) -> None:
    """Raise :class:`AffineVAEError` with ``message``."""
    raise AffineVAEError(message)


def refuse_removed_keywords(where: str, given: dict, replaced: dict) -> None:
    """Refuse keyword arguments a function no longer takes (collected by its ``**removed``).

    Args:
        where: the function's name, starting the message (e.g. ``"rotation_sweep"``).
        given: the extra keyword arguments the function received (name -> value).
        replaced: former keyword -> what replaces it, e.g. ``{"angles_deg": "angles_deg (degrees) is
            now angles, in radians (e.g. angles=np.radians(range(0, 360, 30)))"}``.

    Raises:
        AffineVAEError: ``"WHERE: <replaced[name]>"`` for the first former keyword in ``given``
            (a one-line message naming the new keyword and its unit).
        TypeError: any other keyword in ``given``, as Python reports an unexpected keyword.
    """
    for name in given:
        if name in replaced:
            raise AffineVAEError(f"{where}: {replaced[name]}")
    if given:
        raise TypeError(f"{where}() got an unexpected keyword argument {next(iter(given))!r}")
