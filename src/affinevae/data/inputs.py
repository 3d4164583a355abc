"""The one coercion of in-memory inputs into image tensors, and small argument checks.

:func:`as_images` is what every consumer of images calls (training, sweeps, encoding,
model input checks): it accepts an :class:`~affinevae.data.imageset.ImageSet`, a numpy array
or torch tensor of shape (N, H, W) or (N, C, H, W), or an ``(images, labels)`` pair, and gives
float32 (N, C, H, W) images and int64 (N,) labels or None. It never rescales intensities (file
loaders apply the normalisation rule of :func:`~affinevae.data.imageset.normalise_images`) and
never moves data between devices (callers do). A float32 tensor already in shape is returned
as it is, without a copy.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import AffineVAEError
from .imageset import LABELS_SOURCE, ImageSet, float32_overflow

__all__ = ["as_number", "as_images", "check_image_shape", "check_image_size", "check_int", "check_latents", "MIN_IMAGE_SIZE",
           "real_array"]

#: Smallest image height and width, in pixels, that ``train`` and ``fit`` accept: the equivariant encoder's
#: 5 x 5 lifting convolution needs at least 5 pixels, and the conv encoders halve the grid at each
#: stride-2 layer (two by default), so 8 x 8 still leaves them a 2 x 2 grid; a turn of a smaller
#: image moves few pixels anywhere distinct. 1-D signals (C, 1, L) have their own minimum length
#: (:data:`affinevae.data.spectra.MIN_SIGNAL_LENGTH`), checked when they are read.
MIN_IMAGE_SIZE = 8


def check_int(name: str, value: Any, lo: int) -> int:
    """``value`` as an int if it is an integer >= ``lo`` (bools refused), else :class:`AffineVAEError`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise AffineVAEError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def real_array(value: Any, where: str, *, ndim: Optional[Sequence[int]] = None, min_size: int = 0,
               finite: bool = True, what: str = "an array of real numbers") -> np.ndarray:
    """``value`` (a numpy array, torch tensor, list or number) as a float64 numpy array, checked: real numbers
    (not complex, strings or objects; bools count as 0 and 1), of ``ndim`` dimensions (one of them) when given, at
    least ``min_size`` values, and with ``finite`` none NaN or infinite.

    Raises:
        AffineVAEError: one line starting ``"WHERE: "`` that says what is wrong (``what`` names what was expected).
    """
    v = value.detach().cpu().numpy() if isinstance(value, Tensor) else value
    try:
        arr = np.asarray(v) if not isinstance(v, np.ndarray) else v
    except (TypeError, ValueError):  # ragged nested lists
        raise AffineVAEError(f"{where}: must be {what}, got {type(value).__name__}") from None
    if arr.dtype.kind not in "biuf":
        kind = "complex numbers" if arr.dtype.kind == "c" else f"dtype {arr.dtype}"
        raise AffineVAEError(f"{where}: must be {what}, got {kind}")
    arr = arr.astype(np.float64, copy=False)
    if ndim is not None and arr.ndim not in tuple(ndim):
        want = " or ".join(f"{d}-D" for d in ndim)
        raise AffineVAEError(f"{where}: must be {want}, got shape {arr.shape}")
    if arr.size < min_size:
        raise AffineVAEError(f"{where}: needs at least {min_size} value{'s' if min_size != 1 else ''}, got {arr.size}")
    if finite:
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise AffineVAEError(f"{where}: holds {bad} NaN or infinite value{'s' if bad > 1 else ''}")
    return arr


def as_number(value: Any) -> Optional[float]:
    """``value`` as a float if it is one real number (a Python or numpy number, a 0-d array or a 0-d tensor; not a
    bool, a string or complex), else None."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        return None
    if isinstance(value, Tensor):
        if value.dim() != 0 or value.is_complex() or value.dtype == torch.bool:
            return None
        return float(value.detach().cpu())
    if isinstance(value, np.ndarray):
        if value.ndim != 0 or value.dtype.kind not in "iuf":
            return None
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return None


def check_latents(z: Any, where: str, min_rows: int = 1) -> np.ndarray:
    """Latent codes ``z`` (N, D) (array, tensor or nested lists; e.g. posterior means) as a float64
    numpy array with N >= ``min_rows``, D >= 1 and every value finite.

    Raises:
        AffineVAEError: one line starting ``"WHERE: "`` that says what is wrong (not numbers, the
            shape, or how many values are NaN or infinite).
    """
    try:
        a = np.asarray(z.detach().cpu() if isinstance(z, Tensor) else z, dtype=np.float64)
    except (TypeError, ValueError):
        raise AffineVAEError(f"{where}: latents must be an (N, D) array of numbers, got {type(z).__name__}") from None
    if a.ndim != 2 or a.shape[0] < min_rows or a.shape[1] < 1:
        raise AffineVAEError(f"{where}: latents must have shape (N, D) with N >= {min_rows} and D >= 1, "
                             f"got shape {a.shape}")
    bad = int(a.size - np.isfinite(a).sum())
    if bad:
        raise AffineVAEError(f"{where}: latents hold {bad} NaN or infinite value{'s' if bad > 1 else ''}")
    return a


def _chw(shape: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in shape)


def check_image_shape(shape: Sequence[int], image_shape: Sequence[int], where: str = "images",
                      hint: str = "") -> tuple[int, ...]:
    """Check one image's shape against the (C, H, W) a model expects.

    Args:
        shape: (C, H, W) or, for one channel, (H, W) in pixels.
        image_shape: the expected (C, H, W).
        where: what the images are, for the message. hint: appended to the message (e.g. the fix).

    Returns:
        ``shape`` as (C, H, W).

    Raises:
        AffineVAEError: ``"WHERE: image shape CxHxW (C x H x W) but the model expects CxHxW"``.
    """
    got = tuple(int(v) for v in shape)
    got = (1, *got) if len(got) == 2 else got
    want = tuple(int(v) for v in image_shape)
    if got != want:
        from ..nn.signal import is_signal_shape  # on the error path only: data needs no nn at import

        if not hint and is_signal_shape(want) and len(got) == 3:
            if not is_signal_shape(got):
                hint = (f" (1-D signals of {want[2]} samples: read the data as signals, with --signal-axis on the "
                        "command line or affinevae.data.spectra.load_signals)")
            elif got[0] != want[0]:
                hint = f" (signals of {want[0]} channels: give --signal-channels as training did)"
            else:  # signals of another length: usually another axis read as the signal
                raise AffineVAEError(f"{where}: the signals have {got[2]} samples but the model expects {want[2]}; "
                                     "check --signal-axis")
        raise AffineVAEError(f"{where}: image shape {_chw(got)} (C x H x W) but the model expects {_chw(want)}{hint}")
    return got


def channels_last_hint(shape: Sequence[int]) -> str:
    """A message's ending for images read as (..., C, H, W) whose last axis looks like channels
    (W <= 4 where C and H are at least :data:`MIN_IMAGE_SIZE`: (N, H, W, C) RGB or single-channel
    images given channels last), else "".

    Args:
        shape: the data's shape, (C, H, W) or (N, C, H, W), as read (pixels)."""
    shape = tuple(int(v) for v in shape)
    if len(shape) < 3 or shape[-1] > 4 or min(shape[-3:-1]) < MIN_IMAGE_SIZE:
        return ""
    return (f" (channels last? images of {shape[-3]}x{shape[-2]} pixels with {shape[-1]} channel{'s' * (shape[-1] > 1)} are given as "
            "(N, C, H, W): numpy.moveaxis(X, -1, 1))")


def check_image_size(shape: Sequence[int], where: str = "images", hint: str = "") -> None:
    """Refuse images smaller than :data:`MIN_IMAGE_SIZE` x :data:`MIN_IMAGE_SIZE` pixels (the one rule
    ``train``, ``fit`` and :func:`affinevae.defaults.check_image_size` apply).

    Args:
        shape: the data's shape (N, C, H, W) (or any shape ending in H, W), in pixels.
        where: what the images are, starting the message (e.g. the file).
        hint: appended to the message (e.g. how to read 1-D signals instead).

    Raises:
        AffineVAEError: ``"WHERE: images of HxW pixels (data shape (N, C, H, W), N x C x H x W) are
            too small: the models need at least 8x8"``.
    """
    shape = tuple(int(v) for v in shape)
    h, w = shape[-2:]
    if h < MIN_IMAGE_SIZE or w < MIN_IMAGE_SIZE:
        raise AffineVAEError(f"{where}: images of {h}x{w} pixels (data shape {shape}, N x C x H x W) are too small: the "
                             f"models need at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}{hint or channels_last_hint(shape)}")


def _tensor(data: Any, what: str, where: str) -> Tensor:
    """A tensor view (no copy where possible) of an array-like; numeric only."""
    if isinstance(data, Tensor):
        if data.is_complex():
            raise AffineVAEError(f"{where}: complex-valued {what} ({data.dtype}) are not supported; "
                                 "give their magnitude (abs) or real part")
        return data
    arr = np.asarray(data)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise AffineVAEError(f"{where}: {what} must be numeric, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise AffineVAEError(f"{where}: complex-valued {what} ({arr.dtype}) are not supported; "
                             "give their magnitude (np.abs) or real part")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if not arr.flags.writeable or not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        arr = np.array(arr)  # torch cannot share read-only (memory-mapped) or reversed buffers
    try:
        return torch.from_numpy(arr)
    except TypeError:  # a numpy dtype torch lacks (e.g. uint64): through float64
        return torch.from_numpy(arr.astype(np.float64))


def class_indices(y: Any, n: int, num_classes: int, where: str = "class") -> Tensor:
    """(n,) int64 class indices in [0, num_classes) from one class (given to all ``n`` rows) or
    ``n`` of them (a Python number, list, array or tensor).

    Raises:
        AffineVAEError: one line starting with ``where`` for non-numeric, true/false, fractional
            or non-finite classes, another count, or a class out of range.
    """
    shown = repr(y) if np.ndim(y) == 0 and not isinstance(y, Tensor) else f"values of shape {tuple(np.shape(y))}"
    try:
        t = _tensor(y, "classes", where)
    except (TypeError, ValueError):  # a ragged list
        raise AffineVAEError(f"{where}: the class must be integers, got {shown}") from None
    if t.dtype == torch.bool:
        raise AffineVAEError(f"{where}: the class must be integers, got true/false {shown}")
    t = t.reshape(-1)
    if t.is_floating_point() and (not bool(torch.isfinite(t).all()) or bool((t != torch.round(t)).any())):
        raise AffineVAEError(f"{where}: the class must be integers, got {shown}")
    t = t.to(torch.int64)
    if t.numel() == 1 and n != 1:
        t = t.expand(n)
    if t.numel() != n:
        raise AffineVAEError(f"{where}: {t.numel()} classes for {n} latents (give one, or one per row)")
    if n and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise AffineVAEError(f"{where}: class must lie in [0, {num_classes - 1}], got range "
                             f"[{int(t.min())}, {int(t.max())}]")
    return t


def _labels(labels: Any, n: int, where: str, num_classes: Optional[int], min_label: int = 0) -> Tensor:
    y = _tensor(labels, "labels", where)
    if y.dim() == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.dim() != 1:
        raise AffineVAEError(f"{where}: labels must have shape (N,), got {tuple(y.shape)}")
    if len(y) != n:
        raise AffineVAEError(f"{where}: {len(y)} labels for {n} images")
    if y.is_floating_point() or y.is_complex():
        if not bool(torch.isfinite(y).all()) or bool((y != torch.round(y)).any()):
            raise AffineVAEError(f"{where}: labels must be integers")
    y = y.to(torch.int64)
    if n and int(y.min()) < min_label:
        unknown = (" (-1: unknown)" if min_label == -1 else
                   " (unknown): this model needs every image's class" if int(y.min()) == -1 else "")
        raise AffineVAEError(f"{where}: labels must be >= {min_label}, got {int(y.min())}{unknown}")
    if num_classes is not None and n and int(y.max()) >= num_classes:
        raise AffineVAEError(f"{where}: labels must lie in [{min_label}, {num_classes - 1}], "
                             f"got range [{int(y.min())}, {int(y.max())}]")
    return y


def as_images(data: Any, labels: Any = None, *, image_shape: Optional[Sequence[int]] = None, where: str = "images",
              dtype: Optional[torch.dtype] = torch.float32,
              num_classes: Optional[int] = None, min_label: int = 0) -> tuple[Tensor, Optional[Tensor]]:
    """Turn any accepted image input into an (N, C, H, W) tensor and (N,) labels.

    Args:
        data: an :class:`~affinevae.data.imageset.ImageSet` (its ``labels`` come along), a numpy
            array or torch tensor (N, H, W) (one channel) or (N, C, H, W), anything ``np.asarray``
            reads as such, or an ``(images, labels)`` pair of those. With an ``image_shape`` of
            1-D signals (C, 1, L) also (N, L) and (N, C, L) signals, read as (N, C, 1, L).
        labels: (N,) integer class labels (array, tensor or list); given, they replace those
            that come with ``data``.
        image_shape: the (C, H, W) a model expects; checked when given (an (N, H, W) input
            then needs C = 1).
        where: what the images are, starting every error message (e.g. "training images").
        dtype: floating dtype of the result (default float32); None keeps a floating tensor's
            own dtype (integers and bools still become float32).
        num_classes: when given, labels must lie in [min_label, num_classes).
        min_label: the smallest label accepted: 0 (default) or -1 (unknown labels, as the
            semi-supervised models take, or labels only carried along).

    Returns:
        ``(x, y)``: ``x`` (N, C, H, W) of ``dtype`` on the input's device (a tensor that already
        has the shape and dtype is returned as it is; numpy arrays are shared, not copied, where
        torch can), ``y`` int64 (N,) on the labels' device, or None without labels.

    Raises:
        AffineVAEError: one line starting with ``where`` for a wrong rank, zero images, empty
            images, a shape other than ``image_shape``, non-numeric data, NaN/inf pixels, finite pixels
            too large for ``dtype`` (float64 values beyond float32's 3.4e38), a label
            count other than N, non-integer, negative or (with ``num_classes``) too large labels,
            or a tuple that is not a pair. A label refusal starts with the labels file instead when the
            labels are an ImageSet's read from one (``meta['labels_source']``, :data:`~affinevae.data.imageset.LABELS_SOURCE`).
    """
    label_where = where  # what the labels' refusals name: where they came from, when known
    if isinstance(data, ImageSet):
        images, carried = data.images, data.labels
        if labels is None and carried is not None and data.meta.get(LABELS_SOURCE):
            label_where = str(data.meta[LABELS_SOURCE])  # the labels file they were read from
    elif isinstance(data, tuple):
        if len(data) != 2:
            raise AffineVAEError(f"{where}: a tuple must be (images, labels), got {len(data)} items")
        images, carried = data
    else:
        images, carried = data, None
    labels = carried if labels is None else labels
    x = _tensor(images, "images", where)
    if image_shape is not None and int(image_shape[1]) == 1 and x.dim() in (2, 3):
        x = x.unsqueeze(1) if x.dim() == 2 else x  # 1-D signals: (N, L) -> (N, 1, L); (N, C, L) kept
        x = x.unsqueeze(2)  # -> (N, C, 1, L)
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4:
        raise AffineVAEError(f"{where}: images must have shape (N, H, W) or (N, C, H, W), got {tuple(x.shape)}")
    if len(x) == 0:
        raise AffineVAEError(f"{where}: no images (shape {tuple(x.shape)})")
    if 0 in x.shape[1:]:
        raise AffineVAEError(f"{where}: images are empty (shape {tuple(x.shape)})")
    if image_shape is not None:
        check_image_shape(x.shape[1:], image_shape, where)
    want = dtype if dtype is not None else (x.dtype if x.is_floating_point() else torch.float32)
    given = x
    if x.dtype != want:
        x = x.to(want)
    if not bool(torch.isfinite(x).all()):
        if given is not x and given.is_floating_point() and x.dtype in (torch.float32, torch.float16):
            raw = given.detach().cpu()  # (float64 values float32 cannot hold: float32_overflow tells)
            over = float32_overflow((raw.float() if raw.dtype == torch.bfloat16 else raw).numpy(),  # (numpy has no bfloat16)
                                    x.detach().cpu().numpy(), 0, where)
            if over:
                raise AffineVAEError(f"{where}: {over}")
        first = int((~torch.isfinite(x.reshape(len(x), -1)).all(1)).nonzero()[0, 0])
        raise AffineVAEError(f"{where}: {int((~torch.isfinite(x)).sum())} NaN or infinite pixel values "
                             f"(first in image {first})")
    if min_label not in (0, -1):
        raise AffineVAEError(f"{where}: min_label must be 0 or -1, got {min_label!r}")
    y = None if labels is None else _labels(labels, len(x), label_where, num_classes, min_label)
    return x, y
