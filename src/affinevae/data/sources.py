"""Resolve a ``--data`` spec to an :class:`ImageSet`: built-in names or user files."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from ..errors import AffineVAEError
from .imageset import ImageSet, check_threshold
from .mnist import check_max_angle, load_mnist, rotated_mnist


@dataclasses.dataclass(frozen=True)
class BuiltinSet:
    """A built-in data set of :func:`load_dataset`.

    Attributes:
        load: ``load(split, n, seed, **options) -> ImageSet``.
        options: names of the :func:`load_dataset` keywords it takes (beyond split, n, seed);
            they are recorded in the returned set's ``meta`` so the same set can be loaded again.
    """

    load: Callable[..., ImageSet]
    options: tuple[str, ...] = ()


def _rotated(split: str, n: Optional[int], seed: int, max_angle: Optional[float] = None) -> ImageSet:
    """rotated-mnist: the test split draws its poses with ``seed + 1``; ``max_angle`` radians (default 60 degrees)."""
    extra = {} if max_angle is None else {"max_angle": max_angle}
    return rotated_mnist(split, n=n, seed=seed + (0 if split == "train" else 1), **extra)


BUILTIN: dict[str, BuiltinSet] = {
    "mnist": BuiltinSet(lambda split, n, seed: load_mnist(split, n=n)),
    "rotated-mnist": BuiltinSet(_rotated, options=("max_angle",)),
}

#: How each option is checked: name -> check(value, where) returning the value to use.
_OPTION_CHECKS: dict[str, Callable] = {"max_angle": check_max_angle}


def load_dataset(spec: str, split: str = "train", n: Optional[int] = None, seed: int = 0,
                 key: Optional[str] = None, labels: Optional[str] = None,
                 binarize: Optional[float] = None, max_angle: Optional[float] = None) -> ImageSet:
    """Load ``spec``: 'mnist', 'rotated-mnist' (split/n/seed apply) or a path to user images.

    For paths see :func:`affinevae.data.files.load_images` (``key`` and ``labels`` apply there).
    ``binarize``: threshold in (0, 1); pixels above it become 1, the others 0 (after any
    rotation of a built-in set), see :meth:`ImageSet.binarized`.
    ``max_angle``: 'rotated-mnist' only: digits turned uniformly in [-max_angle, max_angle]
    radians, in (0, pi] (pi: the full circle; None: the default 60 degrees). It is recorded in
    the returned set's ``meta['max_angle']`` (radians) so that a run can load the same set again.

    Raises:
        AffineVAEError: on an option the data set does not take, or an invalid value.
    """
    if binarize is not None:
        check_threshold(binarize, "--binarize")
    given = {k: v for k, v in {"max_angle": max_angle}.items() if v is not None}
    builtin = BUILTIN.get(spec)
    for name, value in given.items():
        if builtin is None or name not in builtin.options:
            takers = ", ".join(repr(s) for s, b in BUILTIN.items() if name in b.options)
            raise AffineVAEError(f"{name} only applies to {takers}, not to the data {spec!r}")
        given[name] = _OPTION_CHECKS[name](value, name)
    if builtin is not None:
        data = builtin.load(split, n, seed, **given)
        data.meta.update(given)
    else:
        from .files import load_images

        data = load_images(spec, key=key, labels=labels)
        if n is not None:
            data = data.subset(slice(0, n))
    return data if binarize is None else data.binarized(binarize)
