"""Resolve a ``--data`` spec to an :class:`ImageSet`: built-in names or user files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import AffineVAEError
from .imageset import ImageSet, check_threshold
from .mnist import load_mnist, rotated_mnist

BUILTIN = {
    "mnist": lambda split, n, seed: load_mnist(split, n=n),
    "rotated-mnist": lambda split, n, seed: rotated_mnist(split, n=n, seed=seed + (0 if split == "train" else 1)),
}


def load_dataset(spec: str, split: str = "train", n: Optional[int] = None, seed: int = 0,
                 key: Optional[str] = None, labels: Optional[str] = None,
                 binarize: Optional[float] = None) -> ImageSet:
    """Load ``spec``: 'mnist', 'rotated-mnist' (split/n/seed apply) or a path to user images.

    For paths see :func:`affinevae.data.files.load_images` (``key`` and ``labels`` apply there).
    ``binarize``: threshold in (0, 1); pixels above it become 1, the others 0 (after any
    rotation of a built-in set), see :meth:`ImageSet.binarized`.
    """
    if binarize is not None:
        check_threshold(binarize, "--binarize")
    if spec in BUILTIN:
        data = BUILTIN[spec](split, n, seed)
    else:
        from .files import load_images

        data = load_images(spec, key=key, labels=labels)
        if n is not None:
            data = data.subset(slice(0, n))
    return data if binarize is None else data.binarized(binarize)
