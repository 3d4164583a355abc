"""The in-memory image collection every loader returns, and the one normalisation rule.

Normalisation rule (documented in the README):
- uint8 (and other unsigned integer) images are divided by their dtype's maximum (255 for uint8);
  wider unsigned images whose values use under 1/8 of the range (a 12-bit camera's uint16) are
  divided by the largest value of the bits they use (4095), with a warning (:func:`unsigned_divisor`),
  recorded as a 'bits' :class:`PixelScaling` that a run applies to its other data;
- float images already in [0, 1] are kept;
- float images outside [0, 1] are min-max scaled per data set to [0, 1] with a warning, or,
  when 99 % of their values lie in the lowest 10 % of the range (a few bright pixels: stars,
  hot pixels), stretched by asinh instead (``stretch='auto'``, said in the warning; 'linear'
  and 'asinh' force one: :func:`choose_scaling`), or, with ``standardise=True`` (for a Gaussian
  likelihood), shifted and scaled to zero mean and unit standard deviation.
Images are float32 (N, C, H, W); (N, H, W) input becomes (N, 1, H, W).

The scaling a data set was given (min-max, asinh or standardised, :class:`PixelScaling`) is
kept in ``ImageSet.meta['pixel_scaling']`` (:class:`PixelScaling` as a dict); a trained run keeps
it, and other data analysed with that run are scaled the same way (``scaling=``), so that the
same particle gives the same pixels, latents and ELBO whichever file it comes in.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import AffineVAEError, user_stacklevel
from .centring import central_crop, centre_images, mean_shift


def summary_repr(obj: Any) -> str:
    """A short ``repr`` of a dataclass holding arrays (for a notebook's display): each field that is not
    None, an array as its shape and dtype (``images=(200, 1, 28, 28) float32``), a dict by its keys, a long
    list by its length, other values as they are; never the arrays' values."""
    parts = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        if isinstance(value, np.ndarray) or hasattr(value, "shape") and hasattr(value, "dtype"):
            text = f"{tuple(value.shape)} {value.dtype}"
        elif isinstance(value, dict):
            text = "{" + ", ".join(map(str, value)) + "}" if value else "{}"
        elif isinstance(value, (list, tuple)) and len(value) > 8:
            text = f"[{len(value)} items]"
        else:
            text = repr(value)
        parts.append(f"{f.name}={text}")
    return f"{type(obj).__name__}({', '.join(parts)})"


#: ``ImageSet.meta`` key of the labels file the set's labels were read from (set by
#: :func:`affinevae.data.files.set_labels`; named when :func:`affinevae.data.inputs.as_images` refuses them).
LABELS_SOURCE = "labels_source"


@dataclasses.dataclass
class ImageSet:
    """Images with optional labels and known transforms.

    Attributes:
        images: (N, C, H, W) float32 in [0, 1] (or standardised).
        labels: (N,) int64 class labels (-1: unknown, for semi-supervised models), or None.
        angle: (N,) true rotation in radians (counter-clockwise on screen), or None.
        shift: (N, 2) true shift (right, down) in half image widths, or None.
        scale: (N,) true zoom factor, or None.
        class_names: names of the label values, or None.
        source: where the images came from (for messages).
        meta: JSON-serialisable facts about how the set was made that are needed to make it again
            (e.g. ``max_angle`` in radians of a ``rotated-mnist`` set loaded with one; ``labels_source``,
            :data:`LABELS_SOURCE`: the labels file its labels were read from); empty by default.
        names: (N,) str, the file each image was read from where images come from several files (a
            folder's, a glob's or a list's image files: the folder's file name, or the path as matched;
            a file holding k > 1 images gives ``name[i]``, i = 0..k-1), or None.
    """

    images: np.ndarray
    labels: Optional[np.ndarray] = None
    angle: Optional[np.ndarray] = None
    shift: Optional[np.ndarray] = None
    scale: Optional[np.ndarray] = None
    class_names: Optional[list] = None
    source: str = "array"
    meta: dict = dataclasses.field(default_factory=dict)
    names: Optional[np.ndarray] = None

    def __repr__(self) -> str:
        return summary_repr(self)

    def __post_init__(self) -> None:
        imgs = np.asarray(self.images)
        if imgs.ndim == 3:
            imgs = imgs[:, None]
        if imgs.ndim != 4:
            raise AffineVAEError(f"{self.source}: images must be (N, H, W) or (N, C, H, W), got shape {imgs.shape}")
        if imgs.shape[0] == 0:
            raise AffineVAEError(f"{self.source}: contains zero images")
        self.images = np.ascontiguousarray(imgs, dtype=np.float32)
        n = len(self.images)
        for name in ("labels", "angle", "shift", "scale"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, self._per_image(name, v, n))
        if self.labels is not None:
            if not np.issubdtype(self.labels.dtype, np.integer):
                if not np.all(np.isfinite(self.labels)) or not np.all(np.mod(self.labels, 1) == 0):
                    raise AffineVAEError(f"{self.source}: labels must be integers")
            self.labels = self.labels.astype(np.int64)
            if self.labels.min() < -1:
                raise AffineVAEError(f"{self.source}: labels must be >= 0 (or -1 for unknown), got {int(self.labels.min())}")
        if self.names is not None:
            names = np.asarray(self.names)
            if names.shape != (n,) or names.dtype.kind not in "US":
                raise AffineVAEError(f"{self.source}: names must be {n} strings (one per image), got "
                                     f"{names.dtype} of shape {names.shape}")
            self.names = names.astype(str)
        if self.scale is not None and not np.all(self.scale > 0):
            raise AffineVAEError(f"{self.source}: scale must be > 0 (a zoom factor), got {float(self.scale.min()):g}")

    def _per_image(self, name: str, value, n: int) -> np.ndarray:
        """The per-image array ``name`` checked: numbers of shape (N,) ((N, 1) is flattened), or
        (N, 2) for ``shift``; finite for the transforms (``angle`` radians, ``shift`` half widths,
        ``scale``); raises :class:`AffineVAEError` naming the field."""
        want = "(N, 2)" if name == "shift" else "(N,)"
        try:
            v = np.asarray(value)
        except (TypeError, ValueError):  # ragged nested sequences
            raise AffineVAEError(f"{self.source}: {name} must be an array of shape {want} (one row per image), "
                                 "got a ragged sequence") from None
        if not (np.issubdtype(v.dtype, np.number) or (v.dtype == bool and name == "labels")):
            raise AffineVAEError(f"{self.source}: {name} must be numbers, got dtype {v.dtype}")
        if name != "shift" and v.ndim == 2 and v.shape[1] == 1:
            v = v[:, 0]
        if v.ndim >= 1 and len(v) != n:
            what = name if name == "labels" else f"values of {name}"
            raise AffineVAEError(f"{self.source}: {len(v)} {what} for {n} images (one per image)")
        if (v.ndim, v.shape[1:]) != ((2, (2,)) if name == "shift" else (1, ())):
            raise AffineVAEError(f"{self.source}: {name} must have shape {want}, got {v.shape}")
        if name != "labels" and not np.all(np.isfinite(v)):
            bad = int(v.size - np.isfinite(v).sum())
            raise AffineVAEError(f"{self.source}: {name} holds {bad} NaN or infinite value{'s' if bad > 1 else ''}")
        return v

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return tuple(int(v) for v in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        """1 + the largest label (0 without labels)."""
        return 0 if self.labels is None else int(self.labels.max()) + 1

    def subset(self, index) -> "ImageSet":
        """A new ImageSet of the selected images (index array, slice or mask)."""
        if not isinstance(index, slice):
            idx, n, where = np.asarray(index), len(self), self.source or "images"
            if idx.dtype == bool and idx.shape != (n,):
                raise AffineVAEError(f"{where}: a subset mask needs {n} entries, got {idx.shape}")
            if idx.dtype != bool and idx.size:
                bad = int(idx.max()) if idx.max() >= n else int(idx.min())
                if not -n <= bad < n:
                    raise AffineVAEError(f"{where}: subset index {bad} outside the {n} images")
        pick = lambda v: None if v is None else v[index]  # noqa: E731
        return ImageSet(self.images[index], pick(self.labels), pick(self.angle), pick(self.shift), pick(self.scale),
                        self.class_names, self.source, dict(self.meta), pick(self.names))

    def binarized(self, threshold: float = 0.5) -> "ImageSet":
        """A copy whose pixels are 1 where brighter than ``threshold`` (in (0, 1)) and 0 elsewhere.

        Binary images have no grey pixels, so a Bernoulli likelihood has no entropy floor to pay
        on them: resampling blur (rotating by an angle that is not a multiple of 90 degrees
        greys the strokes) then no longer raises the loss once the image is thresholded again.
        The copy's ``meta`` has no ``noise_sigma`` (a patch set's pixel-noise estimate, see
        :data:`affinevae.data.formats.META_KEYS`): it no longer describes the pixels.
        """
        check_threshold(threshold, self.source)
        out = self.subset(slice(None))
        out.images = (self.images > threshold).astype(np.float32)
        out.meta.pop("noise_sigma", None)
        return out

    def squared(self, mode: str) -> "ImageSet":
        """A copy whose images are square (:func:`square_images` with ``mode``, 'pad' or 'crop'; square images
        stay as they are), ``meta['square']`` recording it; the true poses (``angle``, ``shift``) are kept as
        given (a shift in half widths of the old side)."""
        out = self.subset(slice(None))
        out.images = square_images(self.images, mode, self.source)
        out.meta["square"] = mode
        return out

    def centred(self, mode) -> "ImageSet":
        """A copy whose objects sit at the image centre (:func:`~affinevae.data.centring.centre_images` with
        ``mode``: 'mean', one whole-pixel move of all images that brings their mean there; a (down, right) pair
        of whole pixels; or 'mass', each image onto its own object's brightness centre), ``meta['centre']``
        recording the move made ('mass', or the [down, right] pixels, so that a run moves its other data
        alike); the true poses are kept as given."""
        if isinstance(mode, str) and mode == "mean":
            mode = mean_shift(self.images)
        out = self.subset(slice(None))
        out.images = centre_images(self.images, mode, self.source)
        out.meta["centre"] = mode if isinstance(mode, str) else [int(v) for v in mode]
        return out

    def save_npz(self, path: str | Path) -> Path:
        """Write the set to a ``.npz`` (arrays images, labels, angle, shift, scale, names where present), atomically;
        :func:`~affinevae.data.load_images` reads it back without ``names`` (the files it names are the record's)."""
        from ..io import atomic_write

        arrays = {k: v for k, v in dataclasses.asdict(self).items()
                  if isinstance(v, np.ndarray)}

        def w(tmp):
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
        return atomic_write(path, w)


#: How :func:`square_images` makes images square ('pad': the short side mirrored outwards; 'crop': the long
#: side cut to the short one about the centre).
SQUARE_MODES = ("pad", "crop")


def square_images(images: np.ndarray, mode: str, where: str = "images") -> np.ndarray:
    """``images`` (N, C, H, W) made square, for models that turn them over the full circle (the equivariant
    encoder needs a square grid): ``mode`` 'pad' extends the short side to the long one on both sides (the
    extra half pixel after) by mirroring the image's own edge outwards (``numpy.pad`` 'reflect': the
    background and its noise continue; a constant band would be a mark every image shares at one place, which
    reads as an upright), 'crop' cuts the long side to the short one about the centre. Square images are
    returned as they are. One :class:`AffineVAEError` line for another mode or 1-D signals (H == 1)."""
    if mode not in SQUARE_MODES:
        raise AffineVAEError(f"{where}: square must be one of {', '.join(SQUARE_MODES)}, got {mode!r}")
    h, w = images.shape[-2:]
    if h == 1:
        raise AffineVAEError(f"{where}: --square applies to images, not to 1-D signals")
    if h == w:
        return images
    if mode == "crop":
        rows, cols, _ = central_crop((h, w), min(h, w))
        return np.ascontiguousarray(images[..., rows, cols])
    side = max(h, w)
    rows, cols = side - h, side - w
    width = [(0, 0)] * (images.ndim - 2) + [(rows // 2, rows - rows // 2), (cols // 2, cols - cols // 2)]
    return np.pad(images, width, mode="reflect" if min(h, w) > 1 else "edge").astype(images.dtype, copy=False)


def check_threshold(threshold: float, where: str = "binarize") -> float:
    """Return ``threshold`` as a float if it lies strictly between 0 and 1, else raise :class:`AffineVAEError`."""
    ok = isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0.0 < float(threshold) < 1.0
    if not ok:
        raise AffineVAEError(f"{where}: the binarize threshold must lie strictly between 0 and 1, got {threshold!r}")
    return float(threshold)


def unsigned_divisor(dtype, largest: int, source: str) -> float:
    """The divisor of unsigned integer pixels of ``dtype`` whose largest value in the data set is
    ``largest``: the dtype's maximum (255 for uint8, 65535 for uint16), or, for 16- to 64-bit values
    that use under 1/8 of it (``largest`` < max / 8: a 12-bit camera's data in uint16), ``2**bits - 1``
    for the ``bits`` they use (4095 for 12 bits), so that they span [0, 1] as 8-bit images do (said in
    a warning naming ``source``). A run records the divisor (:class:`PixelScaling` 'bits') and reads
    its other data with it."""
    dt = np.dtype(dtype)
    full = np.iinfo(dt).max
    if dt.itemsize > 1 and 0 < largest < full / 8:
        bits = max(8, int(largest).bit_length())
        divisor = 2 ** bits - 1
        warnings.warn(f"{source}: {dt} values use {bits} of {dt.itemsize * 8} bits (largest {int(largest)}): divided "
                      f"by {divisor} ({bits}-bit data), not {full}, so that they span [0, 1]", stacklevel=user_stacklevel())
        return float(divisor)
    return float(full)


#: How float pixels outside [0, 1] are brought into it (``stretch`` of the loaders, ``--stretch``):
#: 'auto' (min-max, or the asinh stretch when a few bright pixels hold most of the range:
#: :func:`choose_scaling`), 'linear' (min-max always) or 'asinh' (always; also for integer pixels).
STRETCHES = ("auto", "linear", "asinh")
#: 'auto' stretches when 99 % of the pixel values lie in less than this fraction of their range.
STRETCH_BELOW = 0.1
#: Pixel values :func:`choose_scaling` reads at most for its percentiles (evenly spaced, deterministic).
STRETCH_SAMPLE = 1 << 15


def check_stretch(stretch: str, where: str = "stretch") -> str:
    """``stretch`` if it is one of :data:`STRETCHES`, else one line naming ``where``."""
    if stretch not in STRETCHES:
        raise AffineVAEError(f"{where} must be one of {', '.join(STRETCHES)}, got {stretch!r}")
    return stretch


#: :class:`PixelScaling`'s kind for unsigned integer pixels divided by the largest value of the bits they use.
BITS = "bits"
#: The kinds of :class:`PixelScaling`.
SCALING_KINDS = ("minmax", "standardise", "asinh", "bits")
#: What a :class:`PixelScaling` must be, as its refusals say it.
SCALING_RULE = (f"{', '.join(repr(k) for k in SCALING_KINDS[:-1])} or {SCALING_KINDS[-1]!r} with a finite offset, a "
                "divisor > 0 (and for 'asinh' a softening > 0)")


@dataclasses.dataclass(frozen=True)
class PixelScaling:
    """A data-set-wide scaling of raw pixel values.

    Attributes:
        kind: 'minmax' (the data set's range onto [0, 1]: ``(x - offset) / divisor``),
            'standardise' (zero mean, unit standard deviation: the same map), 'asinh' (the
            astronomers' stretch: ``(asinh((x - offset) / soft) - floor) / divisor``, linear within
            a few ``soft`` of ``offset`` and logarithmic beyond, mapping the data set's range onto
            [0, 1]) or 'bits' (unsigned integer pixels of 16 bits or more: ``x / divisor``, the largest
            value of the bits they use, :func:`unsigned_divisor`; clipped to [0, 1]; other pixels keep
            their own rule).
        offset: the raw value that maps to 0 (the minimum, or the mean; for 'asinh' the median,
            the sky or background level), in the file's units.
        divisor: raw units per unit of the result (the range, or the standard deviation); for
            'asinh' the stretched range. > 0.
        soft: 'asinh' only: the softening, raw units (a robust scale of the background's noise).
        floor: 'asinh' only: the stretched value of the data set's minimum.
    """

    kind: str
    offset: float
    divisor: float
    soft: float = 0.0
    floor: float = 0.0

    def __post_init__(self) -> None:
        """Refuse an unknown kind, a non-finite value, a divisor <= 0 or an 'asinh' softening <= 0 (one line)."""
        values = (self.offset, self.divisor, self.soft, self.floor)
        numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
        if (self.kind not in SCALING_KINDS or not numeric
                or not all(np.isfinite(v) for v in values) or not self.divisor > 0
                or (self.kind == "asinh" and not self.soft > 0)):
            raise AffineVAEError(f"pixel_scaling must be {SCALING_RULE}, got {self!r}")

    def __str__(self) -> str:
        """The map as a user reads it, e.g. ``(x + 20) / 45`` or ``(asinh((x - 200) / 14) + 4.2) / 11.8``."""
        if self == RAW_UNITS:
            return "x (unscaled)"
        if self.kind == BITS:
            return f"x / {self.divisor:g}"
        sign = "+" if self.offset < 0 else "-"
        if self.kind == "asinh":
            fsign = "+" if self.floor < 0 else "-"
            return (f"(asinh((x {sign} {abs(self.offset):g}) / {self.soft:g}) {fsign} {abs(self.floor):g}) / "
                    f"{self.divisor:g}")
        return f"(x {sign} {abs(self.offset):g}) / {self.divisor:g}"

    def to_dict(self) -> dict:
        """``{'kind', 'offset', 'divisor'}`` (and ``soft``, ``floor`` for 'asinh'; JSON-ready;
        ``ImageSet.meta['pixel_scaling']``)."""
        out = {"kind": self.kind, "offset": float(self.offset), "divisor": float(self.divisor)}
        if self.kind == "asinh":
            out.update(soft=float(self.soft), floor=float(self.floor))
        return out

    @classmethod
    def from_value(cls, value, where: str = "pixel_scaling") -> Optional["PixelScaling"]:
        """A :class:`PixelScaling` from itself, its dict (as a run's ``train.json`` keeps it) or None;
        a malformed dict is a one-line error naming ``where``."""
        if value is None or isinstance(value, PixelScaling):
            return value
        try:
            kind, offset, divisor = value["kind"], float(value["offset"]), float(value["divisor"])
            soft, floor = float(value.get("soft", 0.0)), float(value.get("floor", 0.0))
        except (TypeError, KeyError, ValueError, AttributeError):
            raise AffineVAEError(f"{where}: pixel_scaling must be {{'kind', 'offset', 'divisor'}}, got {value!r}") from None
        try:
            return cls(kind, offset, divisor, soft, floor)
        except AffineVAEError:
            raise AffineVAEError(f"{where}: pixel_scaling must be {SCALING_RULE}, got {value!r}") from None


#: The scaling a run records for images given in their own units outside [0, 1] (an array passed to
#: :func:`affinevae.fit`): the identity, so that other data are read in those units too.
RAW_UNITS = PixelScaling("standardise", 0.0, 1.0)


def choose_scaling(lo: float, hi: float, sample: np.ndarray, stretch: str = "auto") -> tuple[PixelScaling, str]:
    """The scaling of float pixels whose values span [``lo``, ``hi``] (``sample``: some of them,
    any shape, e.g. every k-th) onto [0, 1], and the words saying why (for the loaders' warning).

    ``stretch`` 'linear': min-max. 'asinh': ``asinh((x - median) / soft)`` min-max scaled, where
    ``soft`` is the sample's robust spread around its median (1.4826 x its median absolute deviation:
    the background noise of a sparse field), or a tenth of the distance from the median to the 99th
    percentile when that is 0 (a noiseless background). 'auto': 'asinh' when 99 % of the values lie
    in the lowest :data:`STRETCH_BELOW` of the range (a few bright pixels, such as stars or hot
    pixels, hold the rest: min-max would put the objects of interest at a few hundredths), else
    'linear'.
    """
    if not hi > lo:  # one value everywhere: nothing to stretch (every pixel becomes 0)
        return PixelScaling("minmax", lo, 1.0), f"every value is {lo:g}: the images hold no contrast"
    span = hi - lo
    x = np.array(sample, dtype=np.float32).reshape(-1)  # a small copy: the loaders' memory peak is elsewhere
    q50, q99 = (float(v) for v in np.percentile(x, [50.0, 99.0])) if x.size else (lo, hi)
    share = (q99 - lo) / span
    if stretch == "linear" or (stretch == "auto" and share >= STRETCH_BELOW):
        return PixelScaling("minmax", lo, span), ""
    x -= np.float32(q50)
    soft = 1.4826 * float(np.median(np.abs(x, out=x))) if x.size else 0.0
    if not soft > 1e-6 * span:
        soft = max(float(q99 - q50) / 10.0, 1e-3 * span)
    floor, top = float(np.arcsinh((lo - q50) / soft)), float(np.arcsinh((hi - q50) / soft))
    why = (f"99 % of them lie in the lowest {100 * share:.2g} % of that range (a few bright pixels hold the rest)"
           if stretch == "auto" else "asinh asked for")
    return PixelScaling("asinh", float(q50), top - floor if top > floor else 1.0, soft, floor), why


def stretch_sample(values: np.ndarray, most: int = STRETCH_SAMPLE) -> np.ndarray:
    """At most ``most`` of ``values`` (any shape), every k-th in C order (deterministic; only those are
    copied, also from a non-contiguous view such as channels-last images seen channels first)."""
    values = np.asarray(values)
    step = max(1, -(-values.size // most))
    return values.flat[::step]


def normalise_images(arr: np.ndarray, source: str = "array", standardise: bool = False,
                     stretch: str = "auto") -> np.ndarray:
    """Apply the normalisation rule (module docstring) to an image array; returns float32.

    ``arr``: images of any shape, e.g. (N, H, W) or (N, C, H, W) (or one (H, W) frame), of any
    real numeric or bool dtype (bool: 0 and 1). The result has the same shape (no channel axis is
    added: :class:`ImageSet` does that); the min-max scaling, the stretch and the standardisation
    use the whole array's statistics. ``stretch``: :data:`STRETCHES`.

    Raises :class:`AffineVAEError` on non-numeric data, NaN/inf values, finite values too large for float32
    (:func:`float32_overflow`) or an empty array.
    """
    return scale_images(arr, source, standardise, stretch=stretch)[0]


def scale_images(arr: np.ndarray, source: str = "array", standardise: bool = False,
                 scaling: Optional[PixelScaling] = None, stretch: str = "auto",
                 fill_nan: bool = False) -> tuple[np.ndarray, Optional[PixelScaling]]:
    """:func:`normalise_images`, and the data-set-wide scaling it applied (None for unsigned, bool
    and in-range float pixels, whose rule does not depend on the data).

    ``scaling``: apply this scaling (a trained run's, :class:`PixelScaling`) to float and signed
    integer pixels instead of the array's own range or moments (unsigned and bool pixels keep
    their rule, unless it is an 'asinh' one); values a 'minmax' or 'asinh' scaling puts outside
    [0, 1] are clipped there, with a warning naming ``source`` and how many. ``stretch``
    (:data:`STRETCHES`, :func:`choose_scaling`): how float pixels outside [0, 1] are scaled
    ('asinh' also scales integer and in-range pixels that way); a stretch is said in a warning.
    ``fill_nan``: NaN and infinite pixels (masked ones) are replaced by their image's median
    (:func:`fill_nonfinite`) instead of refused (finite values too large for float32 are refused either
    way, :func:`float32_overflow`). Returns ``(float32 array of arr's shape, scaling or None)``.
    """
    check_stretch(stretch)
    arr = np.asarray(arr)
    if arr.size == 0:
        raise AffineVAEError(f"{source}: contains zero images")
    if standardise and stretch == "asinh":
        raise AffineVAEError(f"{source}: standardise and the asinh stretch are two different scalings; choose one")
    asinh = scaling.kind == "asinh" if scaling is not None else stretch == "asinh"  # a run's scaling decides
    if arr.dtype == bool:
        return arr.astype(np.float32), None
    if np.issubdtype(arr.dtype, np.unsignedinteger) and not asinh:
        if scaling is not None and scaling.kind == BITS and arr.dtype.itemsize > 1:  # a run's divisor, for its
            # other data of 16 bits or more (clipped, said); 8-bit pixels keep 255
            return apply_scaling(arr.astype(np.float32), scaling, source, inplace=True), scaling
        divisor = unsigned_divisor(arr.dtype, int(arr.max()), source)
        out = (arr.astype(np.float32) / divisor).astype(np.float32)
        return out, (PixelScaling(BITS, 0.0, divisor) if arr.dtype.itemsize > 1 else None)
    if not np.issubdtype(arr.dtype, np.number):
        raise AffineVAEError(f"{source}: images must be numeric, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise AffineVAEError(f"{source}: complex-valued images ({arr.dtype}) are not supported; "
                             "give their magnitude (np.abs) or real part")
    with np.errstate(over="ignore"):  # float64 values beyond float32's range: refused below, in one line
        out = arr.astype(np.float32)  # the one float32 copy: scaled in place below (peak about 2x the data)
    if not np.all(np.isfinite(out)):
        over = float32_overflow(arr, out, 0, source)  # real values float32 cannot hold: not holes to fill
        if over is not None:
            raise AffineVAEError(f"{source}: {over}")
        if fill_nan:
            fill_nonfinite(out, source)
        if not np.all(np.isfinite(out)):
            raise AffineVAEError(f"{source}: {nonfinite(out, 0, source)}")
    if scaling is not None and scaling.kind != BITS:  # (a 'bits' divisor is for unsigned pixels only)
        return apply_scaling(out, scaling, source, inplace=True), scaling
    if standardise:
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is the error below
            mean32 = out.mean()
            mean, std = float(mean32), float(out.std())
        if not (np.isfinite(mean) and np.isfinite(std)):
            raise AffineVAEError(f"{source}: values too large to standardise in float32 (their mean or standard "
                                 "deviation overflows); rescale them first")
        divisor = std if std > 0 else 1.0
        out -= mean32
        out /= np.float32(divisor)
        return out, PixelScaling("standardise", mean, divisor)
    lo, hi = float(out.min()), float(out.max())
    if lo < 0.0 or hi > 1.0 or stretch == "asinh":
        chosen, why = choose_scaling(lo, hi, stretch_sample(out) if stretch != "linear" else np.zeros(0, np.float32),
                                     stretch)
        say_scaling(source, lo, hi, chosen, why)
        return apply_scaling(out, chosen, source, inplace=True, own=True), chosen
    return out, None


def say_scaling(source: str, lo: float, hi: float, scaling: PixelScaling, why: str) -> None:
    """The one warning a loader gives when it scales a data set's float pixels onto [0, 1] by their
    own range (``why``: :func:`choose_scaling`'s words for a stretch)."""
    if not hi > lo:
        warnings.warn(f"{source}: {why or f'every value is {lo:g}'}; they all read as 0", stacklevel=user_stacklevel())
    elif scaling.kind == "asinh":
        warnings.warn(f"{source}: values span [{lo:g}, {hi:g}]{'' if not why else ' and ' + why}; asinh stretch onto "
                      f"[0, 1]: {scaling} (--stretch linear: min-max scaling)", stacklevel=user_stacklevel())
    else:
        warnings.warn(f"{source}: values span [{lo:g}, {hi:g}], outside [0, 1]; min-max scaling the data set to [0, 1]",
                      stacklevel=user_stacklevel())


def fill_nonfinite(images: np.ndarray, source: str = "array") -> np.ndarray:
    """Replace, in place, the NaN and infinite pixels of float ``images`` (N, ...) by the median of
    their image's finite pixels (masked pixels of an astronomical cut-out, a detector's bad columns:
    the background's level), saying how many in one warning; an image with no finite pixel is
    refused in one line. Returns ``images``."""
    bad = ~np.isfinite(images)
    if not bad.any():
        return images
    rows = np.flatnonzero(bad.reshape(len(images), -1).any(1))
    part = images[rows].reshape(len(rows), -1)  # a copy of the images that need it only
    holes = bad[rows].reshape(len(rows), -1)
    part[holes] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN image: refused just below
        median = np.nanmedian(part, axis=1)
    if not np.all(np.isfinite(median)):
        raise AffineVAEError(f"{source}: image {int(rows[np.argmax(~np.isfinite(median))])} has no finite pixel to fill "
                             "its NaN or infinite ones from")
    part[holes] = np.broadcast_to(median[:, None], part.shape)[holes]
    images[rows] = part.reshape((len(rows), *images.shape[1:]))
    warnings.warn(f"{source}: {int(holes.sum())} NaN or infinite pixel values in {len(rows)} images replaced by their "
                  "image's median (fill_nan)", stacklevel=user_stacklevel())
    return images


def nonfinite(images: np.ndarray, first: Optional[int], where: str) -> str:
    """The message for NaN or infinite values in ``images`` (N, ...) read from ``where``: how many,
    and, when ``first`` (the index of images[0] in the data set) is known, the first image that
    holds one ("3 NaN or infinite pixel values (first in image 57)"); else where they were read."""
    bad = ~np.isfinite(images)
    hint = " (masked pixels? --fill-nan, fill_nan=True, replaces them by a median)"
    if first is None:
        return f"{int(bad.sum())} NaN or infinite pixel values in {where}{hint}"
    index = first + (int(np.argmax(bad.reshape(len(images), -1).any(1))) if images.ndim else 0)
    return f"{int(bad.sum())} NaN or infinite pixel values (first in image {index}){hint}"


def overflow_message(count: int, largest: float, at: str, dtype: str = "float32") -> str:
    """The message for ``count`` finite pixel values too large in magnitude for ``dtype`` (float32: the
    precision the models compute in, magnitudes up to about 3.4e38), whose largest magnitude is
    ``largest``; ``at`` says where ('first in image 57', 'in frames 0:5'). Says to rescale them (dividing
    by a constant keeps their relative values, which the normalisation onto [0, 1] then keeps too), not
    to fill them: they are real values, not NaN/inf holes."""
    top = float(np.finfo(np.dtype(dtype)).max)
    return (f"{count} pixel value{'s' if count != 1 else ''} overflow {dtype}, the models' precision (magnitudes up to "
            f"{top:.3g}; the largest here is {largest:.3g}, {at}): rescale them first, e.g. divide them by a constant "
            f"such as {largest:.0e}")


def float32_overflow(raw: np.ndarray, converted: np.ndarray, first: Optional[int], where: str) -> Optional[str]:
    """The message (:func:`overflow_message`) for the values of ``raw`` (stored pixels, any shape, e.g.
    float64 (N, H, W)) that are finite but too large for ``converted``, their float32 (or float16) copy of
    the same shape, which holds infinities there; None when there are none (``raw`` not a float wider
    than ``converted``, or its non-finite values stored as NaN/inf: :func:`nonfinite`'s case). ``first``:
    the index of ``raw[0]`` in the data set, to name the first image holding one; None: ``where`` names
    the values' place (e.g. 'frame 3 rows 0:64')."""
    raw, converted = np.asarray(raw), np.asarray(converted)
    if (not np.issubdtype(raw.dtype, np.floating) or not np.issubdtype(converted.dtype, np.floating)
            or raw.dtype.itemsize <= converted.dtype.itemsize or raw.shape != converted.shape):
        return None
    over = np.isfinite(raw) & ~np.isfinite(converted)
    count = int(np.count_nonzero(over))
    if not count:
        return None
    largest = float(np.abs(raw[over]).max())
    if first is None or raw.ndim == 0:
        at = f"in {where}"
    else:
        at = f"first in image {first + int(np.argmax(over.reshape(len(raw), -1).any(1)))}"
    return overflow_message(count, largest, at, str(converted.dtype))


#: How far past [0, 1] a scaled value may lie before :func:`apply_scaling` says it lies outside the training data's
#: range (float32 rounding of the range's own ends; the value is clipped either way).
SCALING_TOLERANCE = 1e-5


def apply_scaling(out: np.ndarray, scaling: PixelScaling, source: str = "array", inplace: bool = False,
                  own: bool = False) -> np.ndarray:
    """float32 pixels ``out`` (any shape) under ``scaling``: ``(out - offset) / divisor``, or the
    'asinh' stretch. A 'minmax' or 'asinh' result is clipped to [0, 1]; values of other data than
    the scaling's own that fall outside (a run's scaling on a brighter file) are said in one warning
    naming ``source`` and their share; ``own``: the data the scaling was made from (their rounding
    is clipped silently). ``inplace``: into ``out`` itself (float32), no copy."""
    res = out if inplace else np.array(out, dtype=np.float32)
    res -= np.float32(scaling.offset)
    if scaling.kind == "asinh":
        res /= np.float32(scaling.soft)
        np.arcsinh(res, out=res)
        res -= np.float32(scaling.floor)
    res /= np.float32(scaling.divisor)
    if scaling.kind in ("minmax", "asinh", BITS):
        # float32 rounding puts the training range's own ends a hair outside [0, 1] (the asinh stretch's minimum
        # read -1e-8): only values past it by more than SCALING_TOLERANCE are said
        outside = 0 if own else int(np.count_nonzero((res < -SCALING_TOLERANCE) | (res > 1.0 + SCALING_TOLERANCE)))
        if outside:
            if scaling.kind == "asinh":
                top = scaling.offset + scaling.soft * float(np.sinh(scaling.floor + scaling.divisor))
                bottom = scaling.offset + scaling.soft * float(np.sinh(scaling.floor))
            else:
                bottom, top = scaling.offset, scaling.offset + scaling.divisor
            warnings.warn(f"{source}: {outside} of {res.size} pixel values ({100.0 * outside / res.size:.2g} %) lie "
                          f"outside the training data's range [{bottom:g}, {top:g}]; clipped to it", stacklevel=user_stacklevel())
        np.clip(res, 0.0, 1.0, out=res)
    return res


def noise_sigma(images: np.ndarray, max_images: int = 4096) -> float:
    """Robust estimate of the standard deviation of additive pixel noise, in the images' units.

    Donoho's estimator on the finest diagonal Haar detail: in every 2x2 block the coefficient
    ``(a - b - c + d) / 2`` of the pixels ``[[a, c], [b, d]]`` has the noise's standard
    deviation and cancels constant and linear intensity, so objects bias it little; the
    estimate is ``median(|coefficient|) / 0.6745``. Blocks are taken within each image; images
    are evenly subsampled to at most ``max_images`` (deterministic).

    Args:
        images: (..., H, W) with H, W >= 2, e.g. (N, w, w) or (N, C, w, w) patches.
        max_images: images used at most (along the first axis).

    Returns:
        The estimate (>= 0); 0.0 for noiseless piecewise-flat images.

    Raises:
        AffineVAEError: images smaller than 2x2 pixels or non-finite values.
    """
    x = np.asarray(images)
    if x.ndim < 2 or x.shape[-1] < 2 or x.shape[-2] < 2 or x.size == 0:
        raise AffineVAEError(f"noise_sigma needs images of at least 2x2 pixels, got shape {x.shape}")
    if x.ndim > 2 and len(x) > max_images:
        x = x[np.linspace(0, len(x) - 1, max_images).round().astype(np.int64)]
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w].astype(np.float64)
    d = (x[..., 0::2, 0::2] - x[..., 1::2, 0::2] - x[..., 0::2, 1::2] + x[..., 1::2, 1::2]) / 2.0
    if not np.all(np.isfinite(d)):
        raise AffineVAEError("noise_sigma: images contain NaN or infinite values")
    return float(np.median(np.abs(d)) / 0.6745)

