"""Options ``patches`` and ``map`` share for reading microscope images: ``--level``, ``--pixel-size``, ``--stretch``,
``--tile``;
and the expansion of glob patterns in input paths (shells on Windows pass ``*.tif`` on unexpanded)."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ..units import PixelSize, parse_pixel_size

__all__ = ["add_image_options", "add_stretch_option", "open_image", "open_images", "pixel_size_option", "expand_inputs"]


def add_image_options(p: argparse.ArgumentParser, tile: bool = False) -> None:
    """Register ``--level``, ``--pixel-size``, ``--stretch`` and ``--fill-nan`` (and ``--tile`` when ``tile``) on ``p``."""
    from ..data.patches import DEFAULT_TILE

    p.add_argument("--level", type=int, default=None,
                   help="resolution level of a multiscale (OME-Zarr) image; default 0, the full resolution")
    p.add_argument("--pixel-size", metavar="SIZE",
                   help="physical pixel size with its unit, e.g. 0.05nm, 0.5A, 50pm, 0.001um (default: read from "
                        "the file when it records one)")
    add_stretch_option(p)
    p.add_argument("--fill-nan", action="store_true", dest="fill_nan",
                   help="replace NaN/inf pixels (masked regions, bad columns) by the frames' median instead of "
                        "refusing the image")
    if tile:
        p.add_argument("--tile", type=int, default=DEFAULT_TILE,
                       help=f"frames with a side longer than this many pixels are searched in overlapping tiles of "
                            f"this size, read one at a time (default {DEFAULT_TILE}; 0: never tile)")


def add_stretch_option(p: argparse.ArgumentParser) -> None:
    """Register ``--stretch`` (:data:`affinevae.data.imageset.STRETCHES`) on ``p``."""
    from ..data.imageset import STRETCHES

    p.add_argument("--stretch", choices=STRETCHES, default=None,
                   help="how float pixels outside [0, 1] are scaled onto it: auto (default: min-max, or an asinh "
                        "stretch when a few bright pixels such as stars hold most of the range; said when chosen), "
                        "linear (min-max) or asinh (also integer pixels)")


def pixel_size_option(args: argparse.Namespace) -> Optional[PixelSize]:
    """``--pixel-size`` parsed (None when not given); raises the one-line error on a bad unit."""
    return parse_pixel_size(getattr(args, "pixel_size", None), "--pixel-size")


def open_image(args: argparse.Namespace, path: str, given: Optional[PixelSize] = None):
    """Open ``path`` with ``--key``/``--level`` as a :class:`~affinevae.data.stacks.FrameSource`, its
    ``pixel_size`` set from ``given`` (the parsed ``--pixel-size``) when given."""
    from ..data.stacks import open_stack

    src = open_stack(path, key=getattr(args, "key", None), level=getattr(args, "level", None))
    if given is not None:
        src.pixel_size = given
    return _scaled_as_asked(src, args)


def _scaled_as_asked(src, args: argparse.Namespace):
    """``src`` (a :class:`~affinevae.data.stacks.FrameSource`) with ``--stretch``, ``--fill-nan`` and (``patches``)
    ``--invert`` applied."""
    if getattr(args, "stretch", None):
        src.use_stretch(args.stretch)
    if getattr(args, "fill_nan", False):
        src.use_fill_nan()
    if getattr(args, "invert", False):
        src.use_invert()
    return src


def expand_inputs(paths: Sequence[str]) -> list[str]:
    """Input paths with glob patterns (``*``, ``?``, ``[...]``) expanded, each pattern's matches sorted
    by name (:func:`affinevae.data.files.expand_pattern`), in the order the paths were given; a path
    that exists as written is kept as it is.

    Raises:
        AffineVAEError: ``"PATTERN: no file matches this pattern"`` for a pattern that matches nothing.
    """
    from ..data.files import expand_pattern

    return [f for p in paths for f in expand_pattern(p)]


def open_images(args: argparse.Namespace, paths: Sequence[str], given: Optional[PixelSize] = None):
    """Open several images or stacks (already expanded, :func:`expand_inputs`) as one
    :class:`~affinevae.data.stacks.FrameSource` whose frames are theirs one after another
    (:class:`~affinevae.data.stacks.ConcatSource`; one path: :func:`open_image`'s source)."""
    from ..data.stacks import open_joined

    if len(paths) == 1:
        return open_image(args, paths[0], given)
    joined = open_joined(paths, lambda p: open_image(args, p, given))
    try:
        return _scaled_as_asked(joined, args)  # the joined stack normalises its frames
    except BaseException:
        joined.close()
        raise
