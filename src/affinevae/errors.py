"""Errors raised for bad user input.

Every problem the user can fix (a missing file, a wrong shape, an unknown option, a
mismatched checkpoint) raises :class:`AffineVAEError` with a one-line message that says
what is wrong and where. The CLI prints that line and exits with status 2.
"""

from __future__ import annotations


class AffineVAEError(ValueError):
    """A user error: bad input data, options or files. The message is one line."""


def user_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` in the function that calls this one that points at the
    first frame outside the affinevae package (the user's call, however deep the library's own calls
    go): 1 when that function is itself outside it."""
    import os
    import sys

    root = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(root):
        frame, level = frame.f_back, level + 1
    return level if frame is not None else 1


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
