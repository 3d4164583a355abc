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
