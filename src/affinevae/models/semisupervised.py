"""Semi-supervised invariant VAEs: the joint model with some labels (or continuous targets) known.

``ssrvae`` (``ssvae`` without pose latents) is the joint rVAE of :mod:`affinevae.models.joint`
trained on images of which some carry a class label and the others ``-1`` (unknown):

- a labelled image is decoded in its class; its ELBO bounds log p(x, y) (the class KL is
  ``-log p(y) = log K``);
- an unlabelled image's class is marginalised under the classifier q(y | x), exactly as in the
  joint model (``discrete``: 'enumerate' or 'gumbel');
- the classifier is also trained on the labelled images: the named term ``'classifier'``,
  ``classifier_weight`` times the mean cross-entropy of q(y | x) with the label, over the
  batch's labelled images (and their copies moved by the random pose of the equivariance
  pass) and ``labelled_batch`` labelled images the model remembers from earlier batches
  (``labelled_memory``), each moved by a random pose.

In evaluation mode (the trainer's validation pass) the model tallies how many labelled images
the classifier gets right; :meth:`SSRVAE.on_epoch_end` reports it as the metric ``val_accuracy``
(and ``val_labelled``, their number) and resets the tally.

``ssregrvae`` (``ssregvae``) is the regression form: instead of a class, ``target_dim`` continuous
targets t (NaN: unknown), a latent with prior N(target_center, target_scale^2) (N(0, I) by default;
``train`` sets them from the known targets) that the decoder sees, standardised, beside the content;
known targets are decoded as given (their ELBO bounds log p(x, t)), unknown ones are sampled
from the regressor q(t | x); the named term ``'regressor'`` is ``regressor_weight`` times the
Gaussian negative log-likelihood -log q(t | x) of the known targets.

Units: nats per image; angles radians; shifts half image widths; targets in their own units
(``target_mean``/``target_std`` too).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any, ClassVar, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import check, check_positive
from ..data.files import read_targets  # noqa: F401 - its former home; the reader is data's
from ..errors import AffineVAEError
from ..nn.affine import render
from ..nn.layers import ENCODERS
from ..nn.spatial import POSE_DECODERS
from ..registry import MODELS
from .base import Encoding, ModelOutput
from .joint import JRVAE, FlatEncoderRVAEConfig, JRVAEConfig
from .rvae import RVAE

UNKNOWN = -1
"""The label of an image whose class is not known."""

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def check_class_labels(y, num_classes: int, n: Optional[int] = None, where: str = "labels") -> Tensor:
    """(N,) int64 labels in [-1, num_classes - 1] (-1: unknown) as a tensor; one-line
    :class:`AffineVAEError` for non-integers, a wrong count (when ``n`` is given) or a value out of range."""
    arr = np.asarray(y) if not isinstance(y, Tensor) else y
    if not isinstance(arr, Tensor) and not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise AffineVAEError(f"{where} must be integers (-1 for unknown), got dtype {arr.dtype}")
    t = torch.as_tensor(arr)
    if t.dim() > 1 and not (t.dim() == 2 and 1 in t.shape):
        raise AffineVAEError(f"{where} must have shape (N,), got {tuple(t.shape)}")
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()) or not bool((t == t.round()).all()):
            raise AffineVAEError(f"{where} must be integers (-1 for unknown)")
    t = t.long().reshape(-1)
    if n is not None and len(t) != n:
        raise AffineVAEError(f"{where}: {len(t)} labels for {n} images")
    if len(t) and (int(t.min()) < UNKNOWN or int(t.max()) >= num_classes):
        raise AffineVAEError(f"{where} must lie in [-1, {num_classes - 1}] (-1: unknown) for {num_classes} classes, "
                             f"got range [{int(t.min())}, {int(t.max())}]")
    return t


def target_values(value: Any, target_dim: int, name: str) -> tuple[float, ...]:
    """``target_center``/``target_scale`` as ``target_dim`` finite floats: ``()`` (the default: None
    here), one number for every target, or one per target; anything else is a one-line error."""
    if value is None or (isinstance(value, (tuple, list)) and len(value) == 0):
        return ()
    items = list(value) if isinstance(value, (tuple, list)) else [value]
    ok = all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v)) for v in items)
    check(ok and len(items) in (1, target_dim),
          f"{name} must hold one finite number" + (f" (for every target) or {target_dim} (one per target)"
                                                   if target_dim > 1 else "") + f", got {value!r}")
    return tuple(float(v) for v in items) * (target_dim if len(items) == 1 else 1)


def target_prior_options(targets) -> dict:
    """``target_center`` and ``target_scale`` for known targets: each column's mean and standard deviation
    over its known (not NaN) values, to 4 significant digits (a column with one known value or none, or
    no spread, keeps 0 and 1 where it has nothing to measure).

    Args:
        targets: (N,) or (N, M) targets in their own units, NaN where unknown.

    Returns:
        ``{'target_center': (M,) floats, 'target_scale': (M,) floats}`` for :class:`SSRegRVAEConfig`.
    """
    t = np.asarray(targets, dtype=np.float64)
    t = t.reshape(len(t), -1)
    center, scale = [], []
    for col in t.T:
        known = col[np.isfinite(col)]
        mean = float(known.mean()) if len(known) else 0.0
        sd = float(known.std()) if len(known) > 1 else 0.0
        center.append(float(f"{mean:.4g}"))
        scale.append(float(f"{sd:.4g}") if sd > 0 else 1.0)
    return {"target_center": tuple(center), "target_scale": tuple(scale)}


def check_targets(t, target_dim: int, n: Optional[int] = None, where: str = "targets") -> Tensor:
    """(N, target_dim) float32 targets (NaN: unknown) from (N,) or (N, target_dim) values; one-line
    :class:`AffineVAEError` for a wrong shape or count, or infinite values."""
    arr = np.asarray(t) if not isinstance(t, Tensor) else t
    if not isinstance(arr, Tensor) and not np.issubdtype(arr.dtype, np.number):
        raise AffineVAEError(f"{where} must be numbers (NaN for unknown), got dtype {arr.dtype}")
    t = torch.as_tensor(arr).float()
    if t.dim() == 1 and target_dim == 1:
        t = t[:, None]
    if t.dim() != 2 or t.shape[1] != target_dim:
        raise AffineVAEError(f"{where} must have shape (N,) or (N, {target_dim}), got {tuple(t.shape)}")
    if n is not None and len(t) != n:
        raise AffineVAEError(f"{where}: {len(t)} targets for {n} images")
    if bool(torch.isinf(t).any()):
        raise AffineVAEError(f"{where} contain infinite values (use NaN for unknown)")
    return t


# ---------------------------------------------------------------------------------------- classes
@dataclasses.dataclass(frozen=True)
class SSRVAEConfig(JRVAEConfig):
    """Semi-supervised rVAE options (see :class:`~affinevae.models.joint.JRVAEConfig`).

    Attributes:
        classifier_net, classifier_hidden: the classifier is a conv net with one hidden layer of
            128 by default (on rotated MNIST with 100 labels: test accuracy 0.86, against 0.80
            for the joint model's MLP classifier).
        classifier_weight: weight of the classifier's mean cross-entropy on labelled images
            (the named term 'classifier', beside the nats/image ELBO).
        labelled_memory: how many labelled training images the model remembers (buffers saved
            with the weights: labelled_memory * C * H * W floats; 0 = none). Filled in training
            from the labelled images of each batch (``fit`` passes their positions), first come
            first kept.
        labelled_batch: remembered labelled images drawn (with replacement, seeded by torch)
            every training step, each moved by a random pose from the pose priors, for the
            classifier term: with 100 labels among 10 000 images a batch of 100 holds one
            labelled image on average, too few to train the classifier in a few epochs.
        pose_anchor: as the rVAE's (:class:`~affinevae.models.rvae.RVAEConfig`): 10 by default with the
            equivariant encoder (``rotation_mode='full'``), where the joint model's is 0: the labels keep
            the classes apart, and the anchor holds the styles of a class in one frame.
        temperature: the relaxed class sample's temperature (0.67 here, as measured below;
            the joint model's default is 0.3).
        class_init: 'none' (the labels start the classifier; the joint model's k-means start
            is an option, 'kmeans').
        jitter_angle, jitter_shift: the classifier's augmentation in training (see
            :class:`~affinevae.models.joint.JRVAEConfig`), on by default here: 0.2 rad and 0.05
            half widths. On rotated MNIST with 1 000 labels (bench_classes.py, seed 0) test
            accuracy 0.943 against 0.918 without it.
    """

    classifier_net: str = "conv"
    classifier_hidden: tuple = (128,)
    classifier_weight: float = 20.0
    labelled_memory: int = 1024
    labelled_batch: int = 64
    temperature: float = 0.67
    jitter_angle: float = 0.2
    jitter_shift: float = 0.05
    class_init: Optional[str] = "none"
    #: In rotation_mode 'full' with the equivariant encoder the pose anchor is on (weight 10, the rVAE's): on
    #: full-circle MNIST (bench_classes.py --max-angle 180, seed 0) angle concentration 0.819 / 0.834 against
    #: 0.636 / 0.689 without it with 1 000 / 100 labels, test accuracy 0.911 / 0.840 against 0.900 / 0.858.
    default_pose_anchor: ClassVar[float] = 10.0

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        super().validate()
        check_positive("classifier_weight", self.classifier_weight, allow_zero=True)
        for name in ("labelled_memory", "labelled_batch"):
            value = getattr(self, name)
            check(isinstance(value, int) and value >= 0, f"{name} must be an integer >= 0, got {value!r}")


@MODELS.register("ssrvae")
class SSRVAE(JRVAE):
    """Joint rVAE trained with partly known labels ``y`` (N,) (-1: unknown): labelled images are
    decoded in their class and train the classifier q(y | x); the others marginalise it.

    ``encode(x).parts['class_prob']`` (N, K) is the classifier's posterior (labels are not used
    to encode). Example::

        y = train.labels.copy(); y[100:] = -1          # 100 labelled digits
        model = SSRVAE(image_shape=(1, 28, 28), latent_dim=2, num_classes=10, invariances=("rotation",))
        fit(model, (train.images, y), TrainConfig(epochs=10, batch_size=100))
    """

    config_class = SSRVAEConfig
    family = "ssrvae"
    semi_supervised: bool = True

    def build(self, encoder=None, decoder=None, classifier=None) -> None:
        """The joint rVAE's networks and the validation tally (not saved)."""
        super().build(encoder=encoder, decoder=decoder, classifier=classifier)
        self.tally = [0, 0]  # labelled images classified right, seen (evaluation mode)
        m = self.config.labelled_memory
        self.register_buffer("memory_images", torch.zeros(m, *self.config.image_shape))
        self.register_buffer("memory_labels", torch.full((m,), UNKNOWN, dtype=torch.int64))
        self.register_buffer("memory_index", torch.full((m,), -1, dtype=torch.int64))

    def remember(self, x: Tensor, y: Tensor, index: Tensor) -> None:
        """Keep the labelled images of a checked batch ``x`` (N, C, H, W), labels ``y`` (N,) and
        positions ``index`` (N,) in the training data that are not remembered yet, while room is left."""
        index = torch.as_tensor(index, device=x.device).long().reshape(-1)
        known = y >= 0
        if len(index) != len(y) or not bool(known.any()) or self.config.labelled_memory == 0:
            return
        new = known & ~torch.isin(index, self.memory_index)
        free = (self.memory_index < 0).nonzero().flatten()[: int(new.sum())]
        if len(free) == 0:
            return
        pick = new.nonzero().flatten()[: len(free)]
        self.memory_images[free] = x[pick].to(self.memory_images.dtype)
        self.memory_labels[free] = y[pick]
        self.memory_index[free] = index[pick]

    def forward(self, x: Tensor, y: Optional[Tensor] = None, sample: bool = True,
                index: Optional[Tensor] = None) -> ModelOutput:
        """As :meth:`LatentModel.forward` (``x`` (N, C, H, W), ``y`` (N,) labels with -1 for unknown,
        ``index`` (N,) positions in the training data); in training the labelled images are
        remembered first (see ``labelled_memory``)."""
        if self.training and torch.is_grad_enabled() and y is not None and index is not None:
            xc, yc = self.check_input(x, y)
            self.remember(xc, yc, index)
        return super().forward(x, y, sample, index)

    def replay(self, device) -> Optional[tuple[Tensor, Tensor]]:
        """``labelled_batch`` remembered labelled images, each moved by a random pose, and their
        labels: ((B, C, H, W), (B,)); None when nothing is remembered."""
        filled = (self.memory_index >= 0).nonzero().flatten()
        b = self.config.labelled_batch
        if len(filled) == 0 or b == 0:
            return None
        pick = filled[torch.randint(len(filled), (b,), device=filled.device)]
        x = self.memory_images[pick]
        if self.config.invariances:
            x = render(x, self.random_pose(b, x.device))
        return x.to(device), self.memory_labels[pick].to(device)

    def check_labels(self, y, n: Optional[int] = None) -> Tensor:
        """(N,) int64 labels in [-1, K-1] (see :func:`check_class_labels`)."""
        return check_class_labels(y, self.config.num_classes, n)

    def check_input(self, x: Tensor, y: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """As :meth:`LatentModel.check_input`, keeping labels ``y`` (N,) in [-1, K-1] (optional)."""
        x, _ = super().check_input(x, None)
        if y is not None:
            y = self.check_labels(y, x.shape[0]).to(x.device)
        return x, y

    def known_labels(self, y: Optional[Tensor], n: int) -> Optional[Tensor]:
        """(N,) labels with -1 where unknown, or None."""
        return y

    def infer_for_loss(self, x: Tensor, y: Optional[Tensor]) -> tuple[Encoding, dict]:
        """The joint model's stage, plus in training the named term 'classifier' (cross-entropy
        of q(y | x) with the known labels, on the image and its moved copy, and on ``labelled_batch``
        remembered labelled images), and in evaluation the tally of labelled images classified right.

        ``x`` (N, C, H, W) checked images; ``y`` (N,) int64 labels in [-1, K-1] (-1: unknown) or
        None. Returns the :class:`Encoding` (``parts`` 'class_weight' (N, K): one-hot where the label
        is known, q(y | x) elsewhere; 'class_known' (N,) bool, when ``y`` is given) and the named terms."""
        enc, moved, terms = self.infer_views(x, y)
        if y is None:
            return enc, terms
        known = y >= 0
        if self.training and torch.is_grad_enabled():
            w = self.config.classifier_weight
            replay = self.replay(x.device) if w > 0 else None
            logits, labels = [], []
            if w > 0 and bool(known.any()):
                for view in [enc] + ([] if moved is None else [moved]):
                    logits.append(view.parts["class_logits"][known])
                    labels.append(y[known])
            if replay is not None:
                xr, yr = replay
                logits.append(self.classify(xr, self.posterior(self.encoder(xr, None))).parts["class_logits"])
                labels.append(yr)
            if logits:
                terms["classifier"] = w * F.cross_entropy(torch.cat(logits), torch.cat(labels))
        elif not self.training:
            self.tally[0] += int((enc.parts["class"][known] == y[known]).sum())
            self.tally[1] += int(known.sum())
        return enc, terms

    def on_epoch_end(self, epoch: int, run_dir) -> dict[str, Any]:
        """``val_accuracy`` (labelled validation images classified right) and ``val_labelled``
        when the validation pass saw labelled images; resets the tally."""
        right, seen = self.tally
        self.tally = [0, 0]
        return {"val_accuracy": right / seen, "val_labelled": seen} if seen else {}


@dataclasses.dataclass(frozen=True)
class SSVAEConfig(SSRVAEConfig):
    """Semi-supervised VAE options: :class:`SSRVAEConfig` without pose latents."""

    invariances: tuple = ()


@MODELS.register("ssvae")
class SSVAE(SSRVAE):
    """Semi-supervised VAE: the ssrVAE with ``invariances=()``."""

    config_class = SSVAEConfig
    family = "ssvae"


# ---------------------------------------------------------------------------------------- regression
@dataclasses.dataclass(frozen=True)
class SSRegRVAEConfig(FlatEncoderRVAEConfig):
    """Semi-supervised regression rVAE options (see :class:`~affinevae.models.rvae.RVAEConfig`).

    Attributes:
        target_dim: number of continuous targets per image (>= 1).
        regressor_weight: weight of -log q(t | x) of the known targets (the named term
            'regressor'; per labelled image, relative to its nats/image ELBO).
        target_center, target_scale: the targets' prior is N(center, scale^2) per target, in the
            targets' own units (one number for every target, or one per target; ``()``: 0 and 1). ``train``
            and the Estimator set them to the known targets' mean and standard deviation (said in one
            line), so targets need not be standardised; the decoder sees (t - center) / scale.
    """

    FORMER_DEFAULTS: ClassVar[dict] = {**FlatEncoderRVAEConfig.FORMER_DEFAULTS, "target_center": (), "target_scale": ()}

    target_dim: int = 1
    regressor_weight: float = 20.0
    target_center: Any = ()
    target_scale: Any = ()

    def __post_init__(self) -> None:
        for name in ("target_center", "target_scale"):  # one number (--set target_center=0.13): for every target
            v = getattr(self, name)
            if isinstance(v, numbers.Real) and not isinstance(v, bool):
                object.__setattr__(self, name, (v,))
        super().__post_init__()

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        super().validate()
        check(isinstance(self.target_dim, int) and self.target_dim >= 1,
              f"target_dim must be an integer >= 1, got {self.target_dim!r}")
        check_positive("regressor_weight", self.regressor_weight, allow_zero=True)
        for name in ("target_center", "target_scale"):
            values = target_values(getattr(self, name), self.target_dim, name)
            if name == "target_scale":
                check(all(v > 0 for v in values), f"target_scale must be > 0, got {getattr(self, name)!r}")


@MODELS.register("ssregrvae")
class SSRegRVAE(RVAE):
    """rVAE with ``target_dim`` continuous targets t (NaN: unknown) as a partly observed latent.

    The decoder sees [z, t]; the encoder also outputs the regressor q(t | x) = N(mean, std^2)
    (``encode(x).parts['target_mean']``, ``['target_std']``, (N, target_dim), in the targets' units); the
    prior is N(target_center, target_scale^2) per target. Training labels are the targets (N,) or (N, target_dim). ``decode(z, t)`` needs t
    (None: the prior mean); ``sample(n)`` draws t from the prior.
    """

    config_class = SSRegRVAEConfig
    family = "ssregrvae"
    semi_supervised: bool = True

    def encoder_out_dim(self) -> int:
        """The rVAE's outputs plus the mean and log-variance of every target."""
        return super().encoder_out_dim() + 2 * self.config.target_dim

    @functools.cached_property
    def _prior_values(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``target_center`` and ``target_scale`` as ``target_dim`` floats each, read once from the (frozen) config."""
        cfg = self.config
        m = cfg.target_dim
        return (target_values(cfg.target_center, m, "target_center") or (0.0,) * m,
                target_values(cfg.target_scale, m, "target_scale") or (1.0,) * m)

    def target_prior(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """The targets' prior mean and standard deviation, (target_dim,) each in the targets' units
        (``target_center``/``target_scale``; 0 and 1 by default), as ``like``'s dtype and device."""
        center, scale = self._prior_values
        return (torch.tensor(center, dtype=like.dtype, device=like.device),
                torch.tensor(scale, dtype=like.dtype, device=like.device))

    def build(self, encoder=None, decoder=None) -> None:
        """The rVAE's networks, the decoder's input widened by the targets."""
        cfg = self.config
        self.encoder = encoder if encoder is not None else ENCODERS.get(cfg.encoder)(
            cfg.image_shape, self.encoder_out_dim(), hidden=cfg.encoder_hidden or cfg.hidden, act=cfg.activation,
            cond_dim=0, channels=cfg.channels, norm=cfg.norm)
        self.decoder = decoder if decoder is not None else POSE_DECODERS.get(cfg.decoder)(
            cfg.latent_dim + cfg.target_dim, cfg.image_shape, hidden=tuple(cfg.hidden), act=cfg.activation,
            channels=tuple(reversed(cfg.channels)), norm=cfg.norm)

    def check_labels(self, y, n: Optional[int] = None) -> Tensor:
        """(N, target_dim) float targets, NaN where unknown (see :func:`check_targets`)."""
        return check_targets(y, self.config.target_dim, n)

    def check_input(self, x: Tensor, y: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """As :meth:`LatentModel.check_input`, keeping targets ``y`` (N,) or (N, target_dim) (optional)."""
        x, _ = super().check_input(x, None)
        if y is not None:
            y = self.check_labels(y, x.shape[0]).to(x.device)
        return x, y

    def posterior(self, h: Tensor) -> Encoding:
        """The rVAE's Encoding with ``parts`` 'target_mean' and 'target_std' (N, target_dim)."""
        m = self.config.target_dim
        post = super().posterior(h[:, :-2 * m])
        mean, logvar = h[:, -2 * m:].float().chunk(2, dim=1)
        center, scale = self.target_prior(mean)  # the network's outputs are standardised: in the targets' units
        post.parts.update(target_mean=center + scale * mean, target_std=scale * torch.exp(0.5 * logvar.clamp(-30, 20)))
        return post

    def infer(self, x: Tensor, y: Optional[Tensor] = None) -> Encoding:
        """Posterior of checked (N, C, H, W) images (the encoder ignores targets)."""
        return self.posterior(self.encoder(x, None))

    def infer_for_loss(self, x: Tensor, y: Optional[Tensor]) -> tuple[Encoding, dict]:
        """The rVAE's stage (with its 'equivariance' term), the known targets put into
        ``parts['target_known']`` (N, target_dim) bool, and in training the named term 'regressor'."""
        post, terms = super().infer_for_loss(x, None)
        m = self.config.target_dim
        known = torch.zeros(x.shape[0], m, dtype=torch.bool, device=x.device) if y is None else ~torch.isnan(y)
        post.parts["target_known"] = known
        post.parts["target_value"] = torch.zeros_like(post.parts["target_mean"]) if y is None else torch.nan_to_num(y)
        w = self.config.regressor_weight
        if self.training and torch.is_grad_enabled() and w > 0 and bool(known.any()):
            mean, std = post.parts["target_mean"], post.parts["target_std"]
            nll = 0.5 * ((post.parts["target_value"] - mean) / std) ** 2 + torch.log(std) + _HALF_LOG_2PI
            terms["regressor"] = w * (nll * known).sum() / x.shape[0]
        return post, terms

    def draw_targets(self, post: Encoding, sample: bool = True) -> Tensor:
        """(N, target_dim) targets to decode: the known ones as given, the others sampled from
        q(t | x) (its mean when ``sample`` is False)."""
        mean, std = post.parts["target_mean"], post.parts["target_std"]
        t = mean + std * torch.randn_like(std) if sample else mean
        known = post.parts.get("target_known")
        return t if known is None else torch.where(known, post.parts["target_value"], t)

    def decode_and_score(self, x: Tensor, y: Optional[Tensor], z: Tensor, pose, post, terms: dict,
                         sample: bool) -> ModelOutput:
        """generate([z, t]) with the targets t (N, target_dim) drawn from their posterior (means when
        not ``sample``), ``z`` (N, D) -> render at ``pose`` -> score against ``x`` (N, C, H, W)."""
        params = self.render(self.generate(z, self.draw_targets(post, sample)), pose)
        return self.score(x, params, post, pose, terms)

    def generate(self, z: Tensor, y: Optional[Tensor] = None):
        """The canonical object of content z (N, D) and targets ``y`` (N, target_dim) in their units (None: the
        prior mean); the decoder sees them standardised, (y - target_center) / target_scale."""
        m = self.config.target_dim
        if y is None:
            t = torch.zeros(z.shape[0], m, device=z.device, dtype=z.dtype)
        else:
            center, scale = self.target_prior(z)
            t = (torch.as_tensor(y, device=z.device, dtype=z.dtype).reshape(z.shape[0], m) - center) / scale
        return self.decoder.generate(torch.cat([z, t], 1))

    def kl(self, post: Encoding) -> Tensor:
        """(N,) KL of content and pose (the rVAE's) plus, per target, KL(q(t | x) || p(t)) where unknown
        and -log p(t) where known, nats; p(t) = N(target_center, target_scale^2) (N(0, 1) by default)."""
        kl = super().kl(post)
        center, scale = self.target_prior(post.parts["target_mean"])
        mean, std = (post.parts["target_mean"] - center) / scale, post.parts["target_std"] / scale
        unknown = 0.5 * (mean**2 + std**2 - 1) - torch.log(std)
        known = post.parts.get("target_known")
        if known is None:
            return kl + unknown.sum(1)
        value = (post.parts["target_value"] - center) / scale
        return kl + torch.where(known, 0.5 * value**2 + torch.log(scale) + _HALF_LOG_2PI, unknown).sum(1)

    @torch.no_grad()
    def sample(self, n: int, y: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` images from the prior: z ~ N(0, I), targets ``y`` (n, target_dim) or t from their prior."""
        n = self.check_draw(n, generator)
        z = torch.randn(n, self.config.latent_dim, generator=generator).to(self.device)
        if y is None:
            center, scale = self.target_prior(z)
            y = center + scale * torch.randn(n, self.config.target_dim, generator=generator).to(self.device)
        return self.decode(z, y)


@dataclasses.dataclass(frozen=True)
class SSRegVAEConfig(SSRegRVAEConfig):
    """Semi-supervised regression VAE options: :class:`SSRegRVAEConfig` without pose latents."""

    invariances: tuple = ()


@MODELS.register("ssregvae")
class SSRegVAE(SSRegRVAE):
    """Semi-supervised regression VAE: the ssregrVAE with ``invariances=()``."""

    config_class = SSRegVAEConfig
    family = "ssregvae"
