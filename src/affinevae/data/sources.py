"""Resolve a ``--data`` spec to an :class:`ImageSet`: built-in names (MNIST, rotated MNIST, the
synthetic spectra ``synthetic-peaks`` and ``synthetic-cube``) or user files."""

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


def _synthetic_peaks(split: str, n: Optional[int], seed: int) -> ImageSet:
    """synthetic-peaks: 2000 two-peak spectra (or ``n``); the test split draws with ``seed + 1``."""
    from .spectra import synthetic_peaks

    return synthetic_peaks(2000 if n is None else n, seed=seed + (0 if split == "train" else 1)).image_set()


def _synthetic_cube(split: str, n: Optional[int], seed: int) -> ImageSet:
    """synthetic-cube: a 32x32x96 cube of three planted phases (its 1024 spectra); the test split
    draws with ``seed + 1``; ``n`` keeps the first n spectra (then no map grid)."""
    from .spectra import synthetic_cube

    data = synthetic_cube(seed=seed + (0 if split == "train" else 1)).image_set()
    if n is not None and n < len(data):
        data = data.subset(slice(0, n))
        data.meta.pop("grid_shape", None)
    return data


BUILTIN: dict[str, BuiltinSet] = {
    "mnist": BuiltinSet(lambda split, n, seed: load_mnist(split, n=n)),
    "rotated-mnist": BuiltinSet(_rotated, options=("max_angle",)),
    "synthetic-peaks": BuiltinSet(_synthetic_peaks),
    "synthetic-cube": BuiltinSet(_synthetic_cube),
}

#: How each option is checked: name -> check(value, where) returning the value to use.
_OPTION_CHECKS: dict[str, Callable] = {"max_angle": check_max_angle}


def load_dataset(spec: str, split: str = "train", n: Optional[int] = None, seed: int = 0,
                 key: Optional[str] = None, labels: Optional[str] = None,
                 binarize: Optional[float] = None, max_angle: Optional[float] = None,
                 signal_axis: Optional[int] = None, signal_cube: Optional[bool] = None,
                 scaling=None, stretch: str = "auto", fill_nan: bool = False,
                 square: Optional[str] = None, centre=None) -> ImageSet:
    """Load ``spec``: 'mnist', 'rotated-mnist' (split/n/seed apply) or a path to user images.

    For paths see :func:`affinevae.data.files.load_images` (``key`` applies there only; a built-in
    set ignores it, and the command line refuses ``--key`` with one).
    ``labels``: a labels file (:func:`affinevae.data.files.read_labels`) replacing the set's own
    (e.g. -1 for unknown); for a built-in set one per image of the split in order, or with ``n``
    at least the first ``n``.
    ``binarize``: threshold in (0, 1); pixels above it become 1, the others 0 (after any
    rotation of a built-in set), see :meth:`ImageSet.binarized`.
    ``signal_axis``: read the file as 1-D signals (spectra (N, L) or a hyperspectral cube
    (H, W, E)) along that axis, :func:`affinevae.data.spectra.load_signals` (not for built-ins);
    ``signal_cube=False`` reads a rank-3 array as (N, C, L) signals of C channels instead of a cube.
    ``max_angle``: 'rotated-mnist' only: digits turned uniformly in [-max_angle, max_angle]
    radians, in (0, pi] (pi: the full circle; None: the default 60 degrees). It is recorded in
    the returned set's ``meta['max_angle']`` (radians) so that a run can load the same set again.
    ``scaling``: a trained run's pixel scaling for image files (:func:`affinevae.data.files.load_images`;
    a built-in set and signal files keep their own). ``stretch``: how an image file's float pixels
    outside [0, 1] are scaled ('auto', 'linear', 'asinh': :func:`affinevae.data.files.load_images`);
    ``fill_nan``: an image file's NaN/inf pixels are replaced by their image's median (ibid.); a signal
    file's NaN/inf samples are interpolated along the signal (:func:`affinevae.data.spectra.fill_nonfinite_signals`).
    ``square``: 'pad' or 'crop' makes images that are not square square (:meth:`ImageSet.squared`, recorded in
    ``meta['square']``; for the full circle's equivariant encoder); None leaves them.
    ``centre``: the objects moved to the image centre after that (:meth:`ImageSet.centred`: 'mean', 'mass' or
    a (down, right) move in whole pixels, e.g. a run's ``meta['centre']``; recorded in ``meta['centre']``);
    None leaves them.

    Raises:
        AffineVAEError: on an option the data set does not take, or an invalid value.
    """
    if split not in ("train", "test"):
        raise AffineVAEError(f"split must be 'train' or 'test', got {split!r}")
    if binarize is not None:
        check_threshold(binarize, "--binarize")
    given = {k: v for k, v in {"max_angle": max_angle}.items() if v is not None}
    builtin = BUILTIN.get(spec)
    for name, value in given.items():
        if builtin is None or name not in builtin.options:
            takers = ", ".join(repr(s) for s, b in BUILTIN.items() if name in b.options)
            raise AffineVAEError(f"{name} only applies to {takers}, not to the data {spec!r}")
        given[name] = _OPTION_CHECKS[name](value, name)
    if signal_cube is not None and signal_axis is None:
        raise AffineVAEError("--signal-channels needs --signal-axis")
    if signal_axis is not None:
        if builtin is not None:
            raise AffineVAEError(f"--signal-axis applies to signal files (.npy/.npz/HDF5), not to the data {spec!r}")
        from .spectra import load_signals

        data = load_signals(spec, signal_axis, key=key, cube=signal_cube, labels=labels, fill_nan=fill_nan)
        if n is not None and n < len(data):
            data = data.subset(slice(0, n))
            data.meta.pop("grid_shape", None)
    elif builtin is not None:
        data = builtin.load(split, n, seed, **given)
        data.meta.update(given)
        if labels is not None:  # e.g. partial labels (-1: unknown) for a semi-supervised model
            from .files import read_labels, set_labels

            lab, names = read_labels(labels, None, spec, with_names=True)
            # -n keeps the first n images of the split: a file of the split's labels gives their first n
            if len(lab) < len(data) or (n is None and len(lab) != len(data)):
                raise AffineVAEError(f"{labels}: {len(lab)} labels for {len(data)} images in {spec} ({split} split"
                                     + (f", -n {n}: the first {n} labels are used" if n is not None else "") + ")")
            set_labels(data, lab[:len(data)], names, source=labels)
    else:
        from .files import load_images

        data = load_images(spec, key=key, labels=labels, n=n, scaling=scaling,  # a stack's first n only are read
                           stretch=stretch, fill_nan=fill_nan)
    if square is not None:
        data = data.squared(square)
    if centre is not None:
        data = data.centred(centre)
    return data if binarize is None else data.binarized(binarize)
