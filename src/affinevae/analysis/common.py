"""Helpers shared by the analyses: data coercion, index checks, seeded picks, encoding, image strips.

Everything here is public so that the theme modules of :mod:`affinevae.analysis` share it
without reaching into each other's private names.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import numpy as np
import torch

from ..data.imageset import ImageSet
from ..errors import AffineVAEError
from ..evaluation import encode_dataset
from ..nn.affine import wrap_angle
from ..nn.modes import module_mode
from ..plots import new_figure, show_images, styled

__all__ = ["as_imageset", "in_eval_mode", "take", "labels_for", "check_indices", "pick_indices", "rendered_classes", "model_classes", "one_or_more",
           "to_numpy", "has_learned_angle", "model_label", "encode", "wrap_angles", "image_strips", "styled", "class_name",
           "class_title"]


def as_imageset(data, labels=None) -> ImageSet:
    """An :class:`ImageSet` from an ImageSet or an (N, C, H, W) / (N, H, W) array (with optional labels)."""
    if isinstance(data, ImageSet):
        if labels is not None:
            return ImageSet(data.images, labels, data.angle, data.shift, data.scale, data.class_names, data.source)
        return data
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    kind = np.asarray(data).dtype.kind
    if kind not in "biuf":
        what = "complex numbers" if kind == "c" else f"dtype {np.asarray(data).dtype}"
        raise AffineVAEError(f"images must be real numbers, got {what}")
    return ImageSet(np.asarray(data, dtype=np.float32), labels)


def take(data: ImageSet, n: Optional[int]) -> ImageSet:
    """The first ``n`` images of ``data`` (all of them for None or ``n >= len(data)``); ``n < 1`` is an error."""
    if n is None or n >= len(data):
        return data
    if n < 1:
        raise AffineVAEError(f"n must be >= 1, got {n}")
    return data.subset(slice(0, n))


def labels_for(model, data: ImageSet, idx) -> Optional[torch.Tensor]:
    """(k,) long tensor of the labels of images ``idx`` when the model is conditional (else None)."""
    if not model.conditional:
        return None
    if data.labels is None:
        raise AffineVAEError(f"model '{model.family}' is class-conditional: the data need labels")
    return torch.as_tensor(data.labels[idx]).long()


def check_indices(indices, n_data: int, what: str) -> np.ndarray:
    """``indices`` as a non-empty (k,) int64 array, each in [0, n_data); ``what`` names the analysis in errors."""
    idx = np.asarray(list(indices), dtype=np.int64).reshape(-1)
    if len(idx) == 0:
        raise AffineVAEError(f"{what}: no indices given")
    bad = idx[(idx < 0) | (idx >= n_data)]
    if len(bad):
        raise AffineVAEError(f"{what}: index {int(bad[0])} is out of range for {n_data} images")
    return idx


def pick_indices(n_data: int, n: int, indices: Optional[Sequence[int]], rng: np.random.Generator,
                 what: str) -> np.ndarray:
    """The images an analysis shows: ``indices`` (checked) or ``min(n, n_data)`` distinct ones drawn
    with ``rng``, sorted; returns a (k,) int64 array."""
    if indices is not None:
        return check_indices(indices, n_data, what)
    if n < 1:
        raise AffineVAEError(f"n must be >= 1, got {n}")
    return np.sort(rng.choice(n_data, size=min(n, n_data), replace=False))


def rendered_classes(model) -> int:
    """K, the classes ``model`` renders by index: a class-conditional model's ``num_classes``, a
    joint or semi-supervised classification model's discovered ones (``mixed_classes``); 0 for
    the others."""
    return int(model.config.num_classes) if model.conditional else int(model.mixed_classes)


def model_classes(model, classes: Optional[Sequence[int]], what: str) -> Optional[list]:
    """The classes ``model`` renders for an analysis: ``classes`` each checked in [0, K); for a
    class-conditional model all K by default, for one with discovered classes (joint,
    semi-supervised, :attr:`~affinevae.models.base.LatentModel.mixed_classes`) None by default
    (it draws them). A model that renders no classes takes none (``what`` names the analysis in
    that error, e.g. 'generation by class')."""
    k = rendered_classes(model)
    if not k:
        if classes is not None:
            raise AffineVAEError(f"model '{model.family}' renders no classes: {what} needs a cvae/crvae or a joint "
                                 "or semi-supervised classification model")
        return None
    if classes is None and not model.conditional:
        return None
    out = list(range(k)) if classes is None else [int(c) for c in classes]
    bad = [c for c in out if not 0 <= c < k]
    if bad:
        raise AffineVAEError(f"class {bad[0]} is out of range [0, {k - 1}]")
    return out


def class_name(c: int, names: Optional[Sequence[str]] = None) -> str:
    """Class ``c`` (an int in 0..K-1) as a plot shows it: its name when the labels named the classes
    (``names``: the K names of :attr:`~affinevae.data.ImageSet.class_names` or a run's ``class_names``,
    numbered in sorted order), else its number."""
    c = int(c)
    return str(names[c]) if names is not None and 0 <= c < len(names) else str(c)


def class_title(c: int, names: Optional[Sequence[str]] = None) -> str:
    """A panel's title for class ``c``: ``"class 3"``, or ``"wt (class 0)"`` when ``names`` name it otherwise
    than its number."""
    name = class_name(c, names)
    return f"class {int(c)}" if name == str(int(c)) else f"{name} (class {int(c)})"


def one_or_more(items, cls: type, where: str) -> list:
    """``items`` (one ``cls`` instance or a sequence of them) as a non-empty list; raises :class:`AffineVAEError`."""
    out = [items] if isinstance(items, cls) else list(items)
    if not out:
        raise AffineVAEError(f"{where} needs at least one {cls.__name__}")
    return out


def to_numpy(t) -> np.ndarray:
    """A tensor (any device/dtype, as float32) or array-like as a numpy array, same shape."""
    return t.detach().cpu().float().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def has_learned_angle(model) -> bool:
    """True if ``model.encode`` returns a rotation angle (rVAE/crVAE with rotation, AVAE with an
    angle): :attr:`~affinevae.models.base.LatentModel.learns_angle`."""
    return bool(model.learns_angle)


def model_label(model) -> str:
    """Short display name of a model: its family, with the latent size (e.g. 'vae (d=10)')."""
    return f"{model.family} (d={model.config.latent_dim})"


def encode(model, data: ImageSet, elbo: bool = False, seed: int = 0) -> dict:
    """:func:`affinevae.evaluation.encode_dataset` of ``data`` without gradients: ``z_mean`` (N, D),
    ``angle`` (N,) radians for pose models, ``elbo`` (N,) nats when asked (seeded sample)."""
    with torch.no_grad():
        return encode_dataset(model, data.images, data.labels, elbo=elbo, seed=seed)


def wrap_angles(angle) -> np.ndarray:
    """Angles (radians, any shape) wrapped into [-pi, pi), as float64 (:func:`affinevae.nn.affine.wrap_angle`)."""
    return wrap_angle(torch.as_tensor(np.asarray(angle, dtype=np.float64))).numpy()


def image_strips(strips: Sequence[tuple[np.ndarray, str]], title: str):
    """One figure of labelled rows of images: ``strips`` is [((n, C, H, W) images, row label), ...]."""
    n = len(strips[0][0])
    fig, axes = new_figure(len(strips), 1, panel=(max(3.0, 0.55 * n), 0.75))
    for ax, (images, label) in zip(axes[:, 0], strips):
        show_images(ax, images, ncol=n)
        ax.set_title(label, fontsize=8, loc="left")
    fig.suptitle(title)
    return fig


def in_eval_mode(fn):
    """Decorator for an analysis ``fn(model, ...)``: it runs with the model (all its submodules) in
    eval mode, and each gets back its own mode afterwards (:func:`affinevae.nn.modes.module_mode`)."""
    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        with module_mode(model):
            return fn(model, *args, **kwargs)
    return wrapper
