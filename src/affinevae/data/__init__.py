"""Data: bundled MNIST, rotated/affine MNIST, user image files, large stacks and their patches.

Modules: :mod:`.imageset` (the in-memory set and the normalisation rule), :mod:`.inputs`
(:func:`as_images`, the one coercion of in-memory inputs), :mod:`.files` (user image files),
:mod:`.formats` (suffixes and read errors), :mod:`.stacks` (large images and stacks, lazily),
:mod:`.objects` (object detection, coordinates), :mod:`.background` (uneven backgrounds, flattened), :mod:`.patches` (patch sets), :mod:`.mnist`,
:mod:`.micrograph` (synthetic micrographs), :mod:`.microscopy` (instrument files, Zarr/OME-Zarr)
and :mod:`.astro` (FITS; both imported here so that :func:`~.stacks.open_stack` knows them) and
:mod:`.sources` (``--data`` specs).
"""

from .files import load_images
from .imageset import ImageSet, PixelScaling, normalise_images
from .inputs import as_images
from . import microscopy  # noqa: F401  (registers the instrument-file and Zarr readers)
from . import astro  # noqa: F401  (registers the FITS reader)
from .mnist import load_mnist, rotated_mnist, transform_images
from .sources import load_dataset

__all__ = ["ImageSet", "PixelScaling", "normalise_images", "as_images", "load_mnist", "rotated_mnist",
           "transform_images", "load_dataset", "load_images"]
