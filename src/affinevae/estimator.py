"""A scikit-learn estimator around every affinevae model family.

:class:`Estimator` follows scikit-learn's conventions, so an affinevae model can sit in a
``Pipeline`` (e.g. before ``KMeans``), be tuned by ``GridSearchCV`` (it scores by the mean
ELBO) and be cloned::

    from sklearn.cluster import KMeans
    from sklearn.pipeline import make_pipeline
    import affinevae as av

    digits = av.data.rotated_mnist("train", n=2000).images          # (N, 1, 28, 28)
    pipe = make_pipeline(av.Estimator("rvae", latent_dim=2, invariances=("rotation",), epochs=5),
                         KMeans(10, n_init=10))
    clusters = pipe.fit_predict(digits)

Input: images (N, H, W) or (N, C, H, W), or flat rows (N, C*H*W) with ``image_shape``.
Flat rows without ``image_shape`` are taken as one-row images (1, 1, F), which suits tabular
data with ``encoder='mlp', decoder='mlp'``. Unsigned integer images (uint8, a 12-bit camera's
uint16, ...) are divided as ``train`` divides them (255, 4095, ...: ``pixel_divisor_``); other pixel
values must suit the likelihood: [0, 1] for the default Bernoulli likelihood (scale first, e.g. with
``MinMaxScaler``, or choose ``likelihood='gaussian'``).
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Optional

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .analysis.quality import learning_warnings
from .data.files import MISSING_LABEL_TEXTS
from .data.imageset import ImageSet, unsigned_divisor
from .config import unknown_option_message
from .encoding import POSE_FIELDS
from .errors import AffineVAEError, user_stacklevel
from .evaluation import encode_dataset
from .models.base import build_model
from .nn.affine import Pose
from .models.semisupervised import target_prior_options
from .registry import MODELS
from .training import TrainConfig, fit

__all__ = ["Estimator", "NOT_APPLICABLE_CHECKS", "ESTIMATOR_DEFAULTS"]

FLOATS = (np.float64, np.float32)
LIKELIHOODS_IN_UNIT_RANGE = ("bernoulli", "cbernoulli")

NOT_APPLICABLE_CHECKS: dict[str, str] = {}
"""scikit-learn estimator checks (``sklearn.utils.estimator_checks``) that do not apply to
:class:`Estimator`, with the reason; pass it as ``expected_failed_checks``. Empty: every check
that scikit-learn runs for a transformer passes (tests/test_estimator.py runs them all on a
small MLP model with a Gaussian likelihood, which accepts the checks' unscaled tabular data)."""


def _image_shape(value: Any) -> tuple[int, int, int]:
    """``Estimator.image_shape`` (H, W) or (C, H, W) as (C, H, W) integers, or one line naming it."""
    bad = AffineVAEError(f"Estimator image_shape must be (H, W) or (C, H, W) positive integers, got {value!r}")
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise bad
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        raise bad
    shape = tuple(int(v) for v in value)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise bad
    return shape



def one_line(message: str, limit: int = 300) -> str:
    """``message`` (a library's multi-line refusal) as one line: every array it dumps (a bracketed span
    that is long or runs over lines, ``array=[...]``) left out, its lines joined, at most ``limit`` characters."""
    kept, depth, span = [], 0, []
    for ch in message:
        if ch == "[":
            depth += 1
        if depth:
            span.append(ch)
            if ch == "]":
                depth -= 1
                if not depth:
                    text = "".join(span)
                    dump = len(text) > 40 or "\n" in text or "".join(kept[-6:]) == "array="
                    kept.append("\0" if dump else text)
                    span = []
        else:
            kept.append(ch)
    body = "".join(kept) + ("\0" if len("".join(span)) > 40 else "".join(span))
    body = re.sub(r"\s*(array=)?\0\.?", "", body)  # a dropped array, what named it and the period after it
    text = " ".join(ln.strip() for ln in body.splitlines() if ln.strip()) or message.strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


#: The Estimator's content latents and training options when neither they are given nor the data choose them.
ESTIMATOR_DEFAULTS = {"latent_dim": 10, "epochs": 10, "batch_size": 128, "lr": 1e-3}


def missing_label(y: np.ndarray) -> Optional[int]:
    """The index of the first label of ``y`` (N,) of text or objects that is a missing value (None, NaN,
    pandas' NA, or a text of :data:`MISSING_LABEL_TEXTS`), else None (numbers' NaN are checked apart)."""
    if y.dtype.kind not in "OUS":
        return None
    for i, v in enumerate(y.tolist()):
        if isinstance(v, bytes):
            v = v.decode(errors="replace")
        if v is None or (isinstance(v, str) and v.strip().lower() in MISSING_LABEL_TEXTS):
            return i
        if (isinstance(v, (float, np.floating)) and v != v) or type(v).__name__ in ("NAType", "NaTType"):  # NaN, NA
            return i
    return None


def checked_labels(y: Any, n: int, advice: str) -> np.ndarray:
    """``y`` as an (n,) array of labels; one line, ending with ``advice``, for another shape, a NaN or
    infinite number, or a missing value (:func:`missing_label`)."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise AffineVAEError(f"y must hold one label per image ({n}), got shape {y.shape}")
    if y.dtype.kind in "fc" and not np.isfinite(y).all():
        raise AffineVAEError(f"y holds NaN or infinite labels (first at image {int(np.argmax(~np.isfinite(y)))}){advice}")
    gap = missing_label(y)
    if gap is not None:
        raise AffineVAEError(f"y holds a missing label ({y[gap]!r} at image {gap}){advice}")
    return y


def refuse_nonfinite_images(rows: np.ndarray) -> None:
    """One line naming the first image of ``rows`` (N, ...) float that holds a NaN or an infinite value
    (one pass over the pixels); nothing when every value is finite."""
    bad = ~np.isfinite(rows.reshape(len(rows), -1)).all(1)  # (N,)
    if bad.any():
        raise AffineVAEError(f"X holds NaN or infinite values (first in image {int(np.argmax(bad))}); fill them (e.g. "
                             "with the image's median) or leave those images out")


def unsigned_dtype(X: Any) -> Optional[np.dtype]:
    """The unsigned integer dtype of ``X``'s pixels (an array's, or a DataFrame's when every column has
    the same one), else None (floats, signed integers, lists, an :class:`ImageSet`)."""
    if isinstance(X, ImageSet):
        return None
    dtypes = getattr(X, "dtypes", None)
    if dtypes is not None and not hasattr(X, "dtype"):  # a DataFrame: one dtype per column
        kinds = {np.dtype(d) if isinstance(d, np.dtype) else None for d in list(dtypes)}
        dtype = kinds.pop() if len(kinds) == 1 else None
    else:
        dtype = getattr(X, "dtype", None)
        dtype = dtype if isinstance(dtype, np.dtype) else None
    return dtype if dtype is not None and dtype.kind == "u" else None


def unnamed_classes(classes: np.ndarray, k: int) -> np.ndarray:
    """The known labels ``classes`` (C,) extended to ``k`` > C names, for the classes of a semi-supervised
    model that no labelled image names (``num_classes`` above the known labels, or one known label of 2):
    the integers after the largest for numeric labels, else ``'class C'``, ``'class C+1'``, ..."""
    extra = range(len(classes), k)
    if classes.dtype.kind in "iu":  # as int64: uint8 labels up to 255 would wrap
        return np.concatenate([classes.astype(np.int64), int(classes.max()) + 1 + np.arange(len(extra))])
    if classes.dtype.kind == "f":
        return np.concatenate([classes, np.floor(classes.max()) + 1 + np.arange(len(extra), dtype=classes.dtype)])
    return np.asarray([*classes.tolist(), *(f"class {c}" for c in extra)], dtype=object)


def _family_kind(est: "Estimator") -> Optional[str]:
    """What ``est`` predicts: fitted, its ``predicts_``; unfitted, what its ``model`` family would
    ('class', 'target' or None), so that ``predict`` before ``fit`` is scikit-learn's NotFittedError."""
    if hasattr(est, "predicts_"):
        return est.predicts_
    try:
        family = MODELS.get(est.model).labelled_as(getattr(est, "_options", {}))
    except Exception:  # an unknown model name: fit says so in one line
        return None
    if getattr(family, "discrete_classes", False) is True:
        return "class"
    return "target" if getattr(family, "semi_supervised", False) is True else None


def _predicts(est: "Estimator") -> bool:
    """Whether ``est`` predicts: classes (joint, semi-supervised classification) or targets."""
    return _family_kind(est) is not None


def _predicts_classes(est: "Estimator") -> bool:
    return _family_kind(est) == "class"


class Estimator(TransformerMixin, BaseEstimator):
    """scikit-learn transformer: fits an affinevae model, transforms images to their latents.

    Args:
        model: a registered family name (:data:`affinevae.registry.MODELS`: 'ae', 'vae', 'cvae',
            'rvae', 'crvae', 'avae', the joint 'jvae'/'jrvae', the semi-supervised 'ssvae'/'ssrvae'
            (labels -1 for unknown) and their regression forms).
        image_shape: (H, W) or (C, H, W) of flat input rows (N, C*H*W); None: taken from
            (N, H, W) / (N, C, H, W) input, or (1, 1, F) for flat rows.
        latent_dim: content latent variables (the columns of :meth:`transform`); None: what ``train``
            chooses for the data (``data_defaults``: 4 for a patch set), else 10.
        pose: :meth:`transform` also returns the pose columns (angle in radians, shift_x and
            shift_y in half image widths, scale; the ones the model has), and
            :meth:`inverse_transform` takes them.
        epochs, batch_size, lr, seed, device: training options (:class:`~affinevae.TrainConfig`;
            the seed also fixes the initialisation, so refitting gives the same model). ``epochs``,
            ``batch_size``, ``lr`` None: what ``train`` chooses for the data (``data_defaults``), else
            10, 128 and 1e-3 (:data:`ESTIMATOR_DEFAULTS`).
        data_defaults: when ``X`` is an :class:`~affinevae.data.imageset.ImageSet` whose ``meta`` names
            its kind (spectra from :func:`~affinevae.data.spectra.load_signals` or
            :func:`~affinevae.data.spectra.as_spectra`, a patch set's :meth:`~affinevae.data.patches.PatchSet.imageset`,
            float measurements read by :func:`~affinevae.data.files.load_images`), :meth:`fit` takes the
            model and training options that ``train`` chooses for it
            (:func:`affinevae.defaults.chosen_defaults`; the options given always win), prints them in one
            line and keeps them in ``data_defaults_``. Arrays of images, (N, H, W) or (N, C, H, W) (or flat
            rows with ``image_shape``), get what ``train`` chooses for an ``.npy`` of them (e.g. an rVAE's
            ``rotation_mode='full'`` for objects turned over the full circle); other flat rows get none: they
            may be tabular data.
        **options: any other model option (``encoder``, ``hidden``, ``likelihood``, ``beta``,
            ``invariances``, ``transform``, ...) or :class:`~affinevae.TrainConfig` option
            (``weight_decay``, ``schedule``, ``val_split`` (default 0 here), ``loggers``, ...; the
            Estimator writes no run directory, so a logger needs a folder of its own:
            ``loggers=(CSVLogger(directory="logs"),)``; fits that share one write to its ``fit-2``, ...).
            Options are checked when fitting: an unknown one is an :class:`AffineVAEError`.

    Attributes (after :meth:`fit`):
        model_: the trained :class:`~affinevae.models.base.LatentModel` (eval mode).
        history_: per-epoch training records (nats per image).
        image_shape_: (C, H, W) of the images.
        pose_columns_: names of the pose columns the model provides (possibly empty).
        classes_: the class labels of a conditional model (``y`` of :meth:`fit`) or of a semi-supervised
            one (its known labels, sorted; extended by :func:`unnamed_classes` to the model's K classes when
            no labelled image names some), 0..K-1 for a joint one (the classes it discovered), else None.
        predicts_: what :meth:`predict` gives: 'class' (joint and semi-supervised classification
            families; also :meth:`predict_proba`), 'target' (semi-supervised regression), or None (no
            ``predict``).
        data_defaults_: the options :meth:`fit` chose from the data (``data_defaults``; empty when none).
        pixel_divisor_: what unsigned integer images are divided by before the model sees them (1.0 when
            :meth:`fit` saw floats, or without ``data_defaults``; else what ``train`` divides them by: 255 for
            uint8, the largest value of the bits they use for 16 bits or more, e.g. 4095 for a 12-bit camera's
            uint16); floats are taken as given; :meth:`inverse_transform` multiplies by it, so its images are in
            the units of :meth:`fit`'s ``X``.
        intensity_scale_: what a fitted set of spectra (an :class:`ImageSet` from ``spectra_set`` or
            ``load_signals``) was divided by (its ``meta['intensity_scale']``; 1.0 otherwise). Arrays given to
            :meth:`transform` or :meth:`score` are taken as given: divide raw spectra by it (or give an
            ``ImageSet`` made alike) to read them in the units the model was fitted in.
        layout_: the layout :meth:`fit` saw: 'flat', 'nhw' or 'nchw'.
        n_features_in_: C*H*W.

    Methods take images in any accepted layout; :meth:`inverse_transform` returns them in the
    layout :meth:`fit` saw (flat rows, (N, H, W) or (N, C, H, W)), in the input's float dtype.
    """

    def __init__(self, model: str = "vae", *, image_shape: Optional[tuple] = None, latent_dim: Optional[int] = None,
                 pose: bool = False, epochs: Optional[int] = None, batch_size: Optional[int] = None,
                 lr: Optional[float] = None, seed: int = 0, device: str = "auto", data_defaults: bool = True,
                 **options: Any) -> None:
        self.model = model
        self.image_shape = image_shape
        self.latent_dim = latent_dim
        self.pose = pose
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.device = device
        self.data_defaults = data_defaults
        self._options = dict(options)

    # ------------------------------------------------------------------ parameters
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters, the extra ``**options`` included (scikit-learn API)."""
        params = super().get_params(deep=deep)
        params.update(self._options)
        return params

    def set_params(self, **params: Any) -> "Estimator":
        """Set parameters; names other than the constructor's become model/training options
        (checked by :meth:`fit`). Returns ``self``."""
        named = set(self._get_param_names())
        for key, value in params.items():
            if key in named:
                setattr(self, key, value)
            elif "__" in key or key.startswith("_"):
                raise ValueError(f"Invalid parameter {key!r} for estimator {type(self).__name__}")
            else:
                self._options[key] = value
        return self

    def __sklearn_tags__(self):
        """scikit-learn tags: 3-D (N, H, W) input accepted besides 2-D rows; float32 and float64
        preserved by :meth:`transform`; labels required by the class-conditional families."""
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        # a family's class attribute; the AVAE's is a property of its inner model, named by 'inner'
        tags.target_tags.required = any(getattr(MODELS.get(name), "conditional", False) is True
                                        for name in (self.model, self._options.get("inner"))
                                        if isinstance(name, str) and name in MODELS)
        return tags

    # ------------------------------------------------------------------ input
    def _images(self, X: Any, reset: bool) -> tuple[torch.Tensor, np.dtype]:
        """Validated (N, C, H, W) float32 images of ``X`` and its float dtype; ``reset``
        (fit) records the image shape, layout and feature count. scikit-learn's refusals (NaN, a 1-D
        array, complex values) come as one line, without the array dump."""
        try:
            x, dtype = self._checked_images(X, reset)
        except ValueError as exc:
            if isinstance(exc, AffineVAEError):
                raise
            if str(exc).startswith(("Input X contains NaN", "Input X contains infinity")):  # a DataFrame's, a list's
                try:
                    rows = np.asarray(X, dtype=np.float64)
                except (TypeError, ValueError):
                    rows = None
                if rows is not None and rows.ndim and rows.size:
                    refuse_nonfinite_images(rows)
            raise AffineVAEError(one_line(str(exc))) from None
        if not reset:  # fit decides its own (_pixel_divisor)
            divisor = self._pixel_divisor(X, x, fitted=getattr(self, "pixel_divisor_", 1.0))
            x = x if divisor == 1.0 else x / divisor
        return x, dtype

    def _pixel_divisor(self, X: Any, x: torch.Tensor, fitted: Optional[float] = None) -> float:
        """What the images ``x`` (N, C, H, W) read from ``X`` are divided by, 1 for all but unsigned integer
        images (H, W > 1) with ``data_defaults``: fitting (``fitted`` None), ``train``'s divisor for them
        (:func:`unsigned_divisor`: 255 for uint8, 4095 for a 12-bit camera's uint16, said in a warning);
        after, the one ``fit`` took (``fitted``: 1 when it was fitted on floats, whose units unsigned images
        then share; floats are always taken as given)."""
        dtype = unsigned_dtype(X)
        if not self.data_defaults or dtype is None or min(self.image_shape_[1:]) <= 1 or not x.numel():
            return 1.0
        return fitted if fitted is not None else unsigned_divisor(dtype, int(x.max()), "Estimator.fit: X")

    def _checked_images(self, X: Any, reset: bool) -> tuple[torch.Tensor, np.dtype]:
        if isinstance(X, ImageSet):  # as fit and encode_dataset take it: its (N, C, H, W) images
            X = X.images
        if isinstance(X, np.ndarray) and X.dtype.kind == "f" and X.ndim and X.size:
            refuse_nonfinite_images(X)
        ndim = getattr(X, "ndim", None)
        if ndim is None:  # nested lists: their depth; other array-likes are read as 2-D by scikit-learn
            ndim = np.ndim(X) if isinstance(X, (list, tuple)) else 2
        if ndim <= 2:
            flat = validate_data(self, X, reset=reset, dtype=FLOATS)
            layout = "flat"
        else:
            arr = check_array(X, allow_nd=True, dtype=FLOATS, input_name="X")
            if arr.ndim > 4:
                raise AffineVAEError(f"images must be (N, H, W), (N, C, H, W) or flat (N, C*H*W), got shape {arr.shape}")
            layout = "nhw" if arr.ndim == 3 else "nchw"
            shape = (1, *arr.shape[1:]) if arr.ndim == 3 else tuple(arr.shape[1:])
            if not reset and shape != self.image_shape_:
                raise AffineVAEError(f"images have shape {arr.shape[1:]}, the fitted model expects {self.image_shape_}")
            flat = validate_data(self, arr.reshape(len(arr), -1), reset=reset, skip_check_array=True)
        if reset:
            given = None if self.image_shape is None else _image_shape(self.image_shape)
            if layout == "flat":
                shape = given if given is not None else (1, 1, flat.shape[1])
                if int(np.prod(shape)) != flat.shape[1]:
                    raise AffineVAEError(f"flat rows have {flat.shape[1]} values, image_shape {given} has {int(np.prod(shape))}")
            elif given is not None and given != shape:
                raise AffineVAEError(f"images have shape {shape}, image_shape says {given}")
            self.image_shape_, self.layout_ = shape, layout
        x = torch.tensor(np.ascontiguousarray(flat), dtype=torch.float32).reshape(len(flat), *self.image_shape_)
        # (contiguous: a reversed view X[::-1] was torch's 'negative stride' error)
        return x, flat.dtype

    def _labels(self, y: Any, n: int, reset: bool) -> Optional[torch.Tensor]:
        """(N,) class indices of ``y`` for a conditional model (``reset``: learn ``classes_``)."""
        if y is None:
            return None
        y = checked_labels(y, n, ": every image of a conditional model needs its class")
        if reset:
            try:
                self.classes_, idx = np.unique(y, return_inverse=True)
            except TypeError:  # labels of mixed types that do not sort
                raise AffineVAEError("y holds labels of mixed types (e.g. numbers and text) that cannot be "
                                     "ordered") from None
            return torch.as_tensor(idx.reshape(-1), dtype=torch.long)
        return self._class_indices(y)

    def _class_indices(self, y: np.ndarray) -> torch.Tensor:
        """(N,) indices into ``classes_`` of the labels ``y`` (N,); a label not among them is one line."""
        try:
            idx = np.searchsorted(self.classes_, y)
        except TypeError:  # another type than the fitted labels' (text for numbers): not one of them
            idx = None
        if idx is not None:
            idx = np.clip(idx, 0, len(self.classes_) - 1)
        if idx is None or not np.all(self.classes_[idx] == y):
            raise AffineVAEError(f"y holds labels the model was not fitted with (known: {[v.item() if hasattr(v, 'item') else v for v in self.classes_]})")
        return torch.as_tensor(idx, dtype=torch.long)

    def _partial_labels(self, y: Any, n: int) -> torch.Tensor:
        """(N,) class indices of a semi-supervised model's labels ``y``, -1 (unknown; the text '-1' among
        text labels too) kept as -1; ``classes_`` become the known labels' values."""
        y = checked_labels(y, n, ": mark an unknown label with -1 (or the text '-1')")
        # -1 marks an unknown label, also written as text ('-1') among text labels
        unknown = (y == -1) if y.dtype.kind in "iuf" else np.array(
            [v.strip() == "-1" if isinstance(v, str) else v == -1 for v in y.tolist()], dtype=bool)
        try:
            self.classes_, idx = np.unique(y[~unknown], return_inverse=True)
        except TypeError:  # labels of mixed types that do not sort
            raise AffineVAEError("y holds labels of mixed types (e.g. numbers and text) that cannot be ordered") from None
        if not len(self.classes_):
            raise AffineVAEError(f"y holds no known label (all {n} are -1): a semi-supervised model learns its "
                                 "classes from some labelled images")
        out = np.full(n, -1, dtype=np.int64)
        out[~unknown] = idx.reshape(-1)
        return torch.as_tensor(out)

    def _needs_labels(self, y: Any, n: int, what: str) -> Optional[torch.Tensor]:
        """(N,) class indices for a conditional fitted model (an error without ``y``), else None."""
        if not self.model_.conditional:
            return None
        if y is None:
            raise AffineVAEError(f"model '{self.model}' is class-conditional: {what} needs y (the class labels)")
        return self._labels(y, n, reset=False)

    def _rendered(self, y: Any, n: int) -> Optional[torch.Tensor]:
        """What :meth:`inverse_transform` renders for ``y`` (n,): a conditional model's classes (needed); a
        model with discovered classes its class ``y`` (in ``classes_``' values for a semi-supervised one,
        0..K-1 for a joint one; None: the mean over the classes); a regression form's targets (n,) or
        (n, M) in their units (None: the prior's mean). ``y`` given to a model that renders neither is one line."""
        if self.model_.conditional or y is None:
            return self._needs_labels(y, n, "inverse_transform")
        kind = getattr(self, "predicts_", None)
        if kind is None:
            raise AffineVAEError(f"inverse_transform: model '{self.model}' renders no class or target, but y was "
                                 "given (leave y out)")
        y = np.asarray(y)
        if kind == "target":
            try:
                t = torch.as_tensor(y.astype(np.float64), dtype=torch.float32)
            except (TypeError, ValueError):
                raise AffineVAEError("inverse_transform: y must be numeric targets to render") from None
            m = int(self.model_.config.target_dim)
            if tuple(t.shape) not in ({(n,), (n, 1)} if m == 1 else {(n, m)}) or not bool(torch.isfinite(t).all()):
                raise AffineVAEError(f"inverse_transform: y must hold {n} finite targets of {m} value{'s' * (m > 1)} "
                                     f"({(n,) if m == 1 else (n, m)}), got shape {tuple(y.shape)}")
            return t
        if y.shape != (n,):
            raise AffineVAEError(f"inverse_transform: y must hold one class per latent row ({n}), got shape {y.shape}")
        if self.model_.semi_supervised:
            return self._class_indices(y)
        k = self.model_.mixed_classes
        if y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or y.max() >= k)):
            raise AffineVAEError(f"inverse_transform: y must be classes 0..{k - 1} of the joint model, got "
                                 f"{y[:5].tolist()}{' ...' if len(y) > 5 else ''}")
        return torch.as_tensor(y, dtype=torch.long)

    @staticmethod
    def _check_range(model: Any, x: torch.Tensor, what: str, hint: str = "") -> None:
        likelihood = getattr(model.config, "likelihood", None)
        if likelihood in LIKELIHOODS_IN_UNIT_RANGE and len(x) and (float(x.min()) < 0 or float(x.max()) > 1):
            raise AffineVAEError(f"{what}: likelihood '{likelihood}' needs pixel values in [0, 1], got "
                                 f"[{float(x.min()):.3g}, {float(x.max()):.3g}]; scale X (e.g. MinMaxScaler) "
                                 f"or use likelihood='gaussian'{hint}")

    def _spectra_hint(self, X: Any) -> str:
        """What gets 1-D signals ``train``'s spectra defaults (appended to the range refusal): an
        ImageSet of spectra with data_defaults on; for an array, the call that makes one of it."""
        c, h, length = self.image_shape_
        if h != 1:
            return ""
        if isinstance(X, ImageSet):
            return "; for spectra, leave data_defaults=True to get train's spectra defaults" if not self.data_defaults \
                else ""
        return (f"; for spectra, fit affinevae.data.spectra.spectra_set(numpy.reshape(X, (len(X), {c}, {length}))) to "
                "get train's spectra defaults")

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any = None) -> "Estimator":
        """Train a fresh model on the images ``X``: labels ``y`` (N,) for cvae/crvae; for the
        semi-supervised families class labels (N,) with -1 (or the text '-1') for unknown, or targets (N,) / (N, M)
        with NaN for unknown; ignored by the other families. Returns ``self``.

        A fit that fails (bad input, an interrupt) leaves the estimator as it was: unfitted, or
        fitted as before with all its ``*_`` attributes."""
        before = self._fitted_state()
        try:
            return self._fit(X, y)
        except BaseException:
            for k in self._fitted_state():
                delattr(self, k)
            self.__dict__.update(before)
            raise

    def _fitted_state(self) -> dict:
        """The attributes that fitting sets (scikit-learn's ``name_`` convention)."""
        return {k: v for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}

    def _fit(self, X: Any, y: Any) -> "Estimator":
        if "random_state" in self._options:  # scikit-learn's name for it; an unknown model option otherwise
            raise AffineVAEError(f"Estimator: the random seed is the option seed (scikit-learn calls it random_state): "
                                 f"give seed={self._options['random_state']!r}")
        if not isinstance(self.pose, (bool, np.bool_)):  # "no" or 2 were taken for True
            raise AffineVAEError(f"Estimator: pose must be True or False, got {self.pose!r}")
        x, _ = self._images(X, reset=True)
        divisor = self._pixel_divisor(X, x)
        if divisor != 1.0:
            x = x / divisor
        if y is not None and hasattr(y, "__len__") and len(y) != len(x):  # also where the family ignores y: a slip
            raise AffineVAEError(f"Estimator.fit: {len(y)} labels (y) for {len(x)} images (X)")
        labels = None
        train_names = set(TrainConfig.field_names())
        train_opts = {k: v for k, v in self._options.items() if k in train_names}
        model_opts = {k: v for k, v in self._options.items() if k not in train_names}
        model_names = MODELS.get(self.model).config_class.option_names(model_opts)  # an avae's: its inner's too
        for key in model_opts:  # the model's own message would list its options only, not the training ones
            if key not in model_names:
                raise AffineVAEError(unknown_option_message(key, model_names + sorted(train_names),
                                                            f"Estimator('{self.model}')"))
        train_opts.setdefault("val_split", 0.0)
        train_opts.setdefault("progress", False)
        options = {"image_shape": list(self.image_shape_), **model_opts}
        if self.latent_dim is not None:
            options["latent_dim"] = self.latent_dim
        training = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}  # None: chosen below
        self.data_defaults_ = {}
        images = X if isinstance(X, ImageSet) else None
        if images is None and self.data_defaults and min(self.image_shape_[1:]) > 1:  # images (their own shape
            # or image_shape's), not tabular rows nor 1-D signals: what train chooses for an .npy of them
            images = ImageSet(x.detach().cpu().numpy(), source="X")
        if self.data_defaults and images is not None:  # the defaults `train` chooses for this kind of data
            from .defaults import chosen_defaults

            options, _, chosen, line = chosen_defaults(images, self.model, options, self.batch_size, self.epochs,
                                                       self.lr, train_opts.get("kl_warmup"), python=True)
            self.data_defaults_ = dict(chosen)
            training.update({k: v for k, v in chosen.items() if k in training})
            if "kl_warmup" in chosen:
                train_opts["kl_warmup"] = chosen["kl_warmup"]
            if line:
                print(line.replace("affinevae:", "affinevae Estimator:", 1))
        options.setdefault("latent_dim", ESTIMATOR_DEFAULTS["latent_dim"])
        training = {k: ESTIMATOR_DEFAULTS[k] if v is None else v for k, v in training.items()}
        config = TrainConfig.from_dict({**training, "seed": self.seed, "device": self.device, "checkpoint": False,
                                        **train_opts}, what="Estimator training")
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            probe = build_model(self.model, **options)
            if probe.conditional:
                labels = self._labels(y, len(x), reset=True)
                if labels is None:
                    raise AffineVAEError(f"model '{self.model}' is class-conditional: fit needs y (the class labels; "
                                         "it requires y to be passed, but the target y is None)")
                options.setdefault("num_classes", max(2, len(self.classes_)))
            elif probe.semi_supervised:  # partly known labels (-1) or targets (NaN), as scikit-learn's semi-supervised
                if y is None:
                    raise AffineVAEError(f"model '{self.model}' is semi-supervised: fit needs y (class labels with -1 "
                                         "for unknown, or targets with NaN for unknown)")
                if getattr(probe, "discrete_classes", False):
                    labels = self._partial_labels(y, len(x))
                    options.setdefault("num_classes", max(2, len(self.classes_)))
                else:
                    try:
                        labels, self.classes_ = np.asarray(y, dtype=np.float64), None
                    except (TypeError, ValueError):
                        raise AffineVAEError(f"model '{self.model}' is semi-supervised regression: y must be numeric "
                                             "targets (N,) or (N, M), NaN where unknown") from None
                    options.setdefault("target_dim", 1 if labels.ndim == 1 else int(labels.shape[1]))
                    if "target_center" not in options and "target_scale" not in options:  # as train: the prior
                        options.update(target_prior_options(labels))  # on the known targets' mean and spread
            else:
                labels, self.classes_ = None, None
            if self.pose and probe.pose_source == "identity":
                raise AffineVAEError(f"pose=True needs a model with a pose (rvae, crvae, avae); '{self.model}' has none")
            model = build_model(self.model, seed=self.seed, **options)
            self._check_range(model, x, "fit", self._spectra_hint(X))
            result = fit(model, x if labels is None else (x, labels), config, check_learning=False)  # said below
        self.model_ = result.model.eval()
        self.history_ = result.history
        self.pixel_divisor_ = divisor
        self.intensity_scale_ = float(X.meta.get("intensity_scale", 1.0)) if isinstance(X, ImageSet) else 1.0
        for line in learning_warnings(self.model_, x, seed=self.seed, python=True):  # as `train` says: the model learned nothing
            warnings.warn(f"Estimator: {line}", stacklevel=user_stacklevel())
        probe_codes = encode_dataset(self.model_, x[:1], labels[:1] if self.model_.conditional else None, elbo=False,
                                     seed=self.seed)
        self.pose_columns_ = self._pose_names(probe_codes)
        self.predicts_ = "class" if "class_prob" in probe_codes else "target" if "target_mean" in probe_codes else None
        k = self.model_.mixed_classes
        if self.predicts_ == "class" and self.classes_ is not None and k > len(self.classes_):
            self.classes_ = unnamed_classes(self.classes_, k)
        if self.predicts_ == "class" and self.classes_ is None:  # a joint model: the classes it discovered
            self.classes_ = np.arange(k)
        if self.predicts_ == "target":
            self.target_ndim_ = int(np.ndim(labels))
        return self

    @staticmethod
    def _pose_names(codes: dict) -> list[str]:
        names: list[str] = []
        if "angle" in codes:
            names.append("angle")
        if "shift" in codes:  # a 1-D signal model's shift is one column, in samples
            names += ["shift"] if codes["shift"].ndim == 1 else ["shift_x", "shift_y"]
        if "scale" in codes:
            names += ["scale"] if codes["scale"].ndim == 1 else ["scale_u", "scale_v"]
        if "shear" in codes:  # an AVAE's 'rotation-scale-shear' or 'affine' transform
            names.append("shear")
        return names

    # ------------------------------------------------------------------ transform
    def transform(self, X: Any, y: Any = None) -> np.ndarray:
        """(N, latent_dim) posterior means of the content latents of ``X`` (+ the pose columns
        of ``pose_columns_`` when ``pose``), in the input's float dtype. ``y``: labels, needed
        only by conditional models."""
        check_is_fitted(self)
        x, dtype = self._images(X, reset=False)
        labels = self._needs_labels(y, len(x), "transform")
        codes = encode_dataset(self.model_, x, labels, elbo=False, seed=self.seed)
        cols = [codes["z_mean"]]
        if self.pose:
            for key in POSE_FIELDS:
                if key in codes:
                    cols.append(codes[key].reshape(len(x), -1))
        return np.concatenate(cols, axis=1).astype(dtype, copy=False)

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """:meth:`fit` then :meth:`transform` (labels passed on for conditional models).

        Returns, in the input's float dtype, (N, latent_dim) posterior means and, with ``pose``,
        the pose columns after them (``pose_columns_``): ``angle`` in radians, ``shift_x``/``shift_y``
        in half image widths (a 1-D signal model: one shift column, in samples), ``scale`` (or
        ``scale_u``/``scale_v``) zoom factors, ``shear`` (an AVAE's shearing transforms) the shear
        factor along u."""
        if fit_params:
            raise AffineVAEError(f"fit_transform: fit takes only X and y, not {', '.join(sorted(fit_params))}")
        self.fit(X, y)
        return self.transform(X, y if self.model_.conditional else None)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Output column names, a (D + P,) object array: ``z0 ... z{D-1}`` and, with ``pose``, the P
        ``pose_columns_``."""
        check_is_fitted(self)
        names = [f"z{i}" for i in range(self.model_.config.latent_dim)]
        if self.pose:
            names += self.pose_columns_
        return np.asarray(names, dtype=object)

    @torch.no_grad()
    def inverse_transform(self, Z: Any, y: Any = None) -> np.ndarray:
        """Mean images decoded from latents ``Z`` (N, latent_dim), or (N, latent_dim + pose
        columns) with ``pose`` (without them the canonical pose), in the layout and units of :meth:`fit`'s
        input (times ``pixel_divisor_``)."""
        check_is_fitted(self)
        try:
            Z = check_array(Z, dtype=FLOATS, input_name="Z")
        except ValueError as exc:  # scikit-learn's refusal (1-D, NaN) as one line, without the array dump
            raise AffineVAEError(one_line(str(exc))) from None
        d = self.model_.config.latent_dim
        widths = {d, d + len(self.pose_columns_)} if self.pose else {d}
        if Z.shape[1] not in widths:
            raise AffineVAEError(f"Z must have {' or '.join(map(str, sorted(widths)))} columns, got {Z.shape[1]}")
        labels = self._rendered(y, len(Z))
        z = torch.tensor(Z, dtype=torch.float32)
        pose = {}
        if Z.shape[1] > d:
            cols = dict(zip(self.pose_columns_, z[:, d:].T))
            if "shift" in cols:  # 1-D signals: (N,) samples along the signal, as decode takes them there
                pose = {"shift": cols["shift"]}
            else:  # a Pose: decode's keywords take no (N, 2) scale (an AVAE's 'affine') nor a shear
                pose = {"pose": Pose(
                    angle=cols.get("angle"), shear=cols.get("shear"),
                    shift=torch.stack([cols["shift_x"], cols["shift_y"]], 1) if "shift_x" in cols else None,
                    scale=cols.get("scale", torch.stack([cols["scale_u"], cols["scale_v"]], 1)
                                   if "scale_u" in cols else None))}
        out = []
        for i in range(0, len(z), 512):
            part = {k: v.index(slice(i, i + 512)) if isinstance(v, Pose) else v[i:i + 512] for k, v in pose.items()}
            yb = None if labels is None else labels[i:i + 512]
            out.append(self.model_.decode(z[i:i + 512, :d], yb, **part).float().cpu())
        images = torch.cat(out).numpy() if out else np.zeros((0, *self.image_shape_), np.float32)
        divisor = getattr(self, "pixel_divisor_", 1.0)
        if divisor != 1.0:  # back in the units of fit's X
            images = images * np.float32(divisor)
        shapes = {"flat": (len(Z), -1), "nhw": (len(Z), *self.image_shape_[1:]), "nchw": (len(Z), *self.image_shape_)}
        return images.reshape(shapes[self.layout_]).astype(Z.dtype, copy=False)

    # ------------------------------------------------------------------ predict
    @available_if(_predicts)
    def predict(self, X: Any) -> np.ndarray:
        """The class of each image of ``X`` (N,) (the argmax of q(class | image)), in ``classes_``' values for
        a semi-supervised model (the labels ``fit`` was given) and 0..K-1 for a joint one (the classes it
        discovered); for the semi-supervised regression forms the targets' posterior means, (N,) or (N, M)
        as ``fit``'s targets, in their units. Only for those families (``predicts_``)."""
        check_is_fitted(self)
        x, dtype = self._images(X, reset=False)
        codes = encode_dataset(self.model_, x, None, elbo=False, seed=self.seed)
        if self.predicts_ == "class":
            return self.classes_[codes["class"]]
        t = codes["target_mean"].astype(dtype, copy=False)
        return t[:, 0] if getattr(self, "target_ndim_", 2) == 1 else t

    @available_if(_predicts_classes)
    def predict_proba(self, X: Any) -> np.ndarray:
        """q(class | image) of each image of ``X``: (N, K), columns in the order of ``classes_`` (0..K-1 for a
        joint model), in the input's float dtype; rows sum to 1."""
        check_is_fitted(self)
        x, dtype = self._images(X, reset=False)
        codes = encode_dataset(self.model_, x, None, elbo=False, seed=self.seed)
        return codes["class_prob"].astype(dtype, copy=False)

    # ------------------------------------------------------------------ score
    @torch.no_grad()
    def score(self, X: Any, y: Any = None) -> float:
        """Mean ELBO of the images ``X`` in nats per image (one posterior sample, seeded by
        ``seed``; higher is better, so ``GridSearchCV`` maximises it)."""
        check_is_fitted(self)
        x, _ = self._images(X, reset=False)
        self._check_range(self.model_, x, "score")
        labels = self._needs_labels(y, len(x), "score")
        codes = encode_dataset(self.model_, x, labels, elbo=True, seed=self.seed)
        return float(codes["elbo"].mean())
