"""Data: bundled MNIST, rotated/affine MNIST, user image files, patches."""

from .imageset import ImageSet, normalise_images
from .mnist import load_mnist, rotated_mnist, transform_images
from .sources import load_dataset

__all__ = ["ImageSet", "normalise_images", "load_mnist", "rotated_mnist", "transform_images", "load_dataset"]
