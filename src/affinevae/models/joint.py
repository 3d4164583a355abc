"""Joint invariant VAEs: a discrete class latent beside the content and pose latents.

``x = warp(render(z, class), pose)`` with the class *unknown*: the encoder infers, besides the
content latents z (N, D) and the pose, the class posterior q(y | x) (N, K); the decoder renders
z in the class as the crVAE's does (the one-hot class joins the content latents); the prior on
y is uniform over the K classes. ``jrvae`` infers the pose as the rVAE does; ``jvae`` is the
same model without pose latents (``invariances=()``, a joint plain VAE with a spatial decoder).

The expectation over the class in the ELBO,

    ELBO(x) = sum_k q(k | x) E_q(z, pose | x)[log p(x | z, k, pose)] - KL(z, pose) - KL(q(y|x) || U(K)),

is taken in training in one of three ways (``discrete``, registry :data:`CLASS_EXPECTATIONS`):

- ``'gumbel'`` (default): a relaxed one-hot sample of the class (Gumbel-softmax at
  ``temperature``) is decoded in one row per image: the rVAE's cost.
- ``'straight'``: the same sample's one-hot argmax is decoded, with the relaxed sample's
  gradient (straight-through); it did not cluster better on rotated MNIST.
- ``'enumerate'``: exact. One sample of z and of the pose is repeated K times and decoded with
  every one-hot class in a single batched decoder pass of N*K rows; the K log-likelihoods are
  weighted by q(k | x). K times the decoder's cost: on the 2-core CPU with the default spatial
  decoder it trains about 14x slower than 'gumbel' (K = 10), and in short runs on rotated MNIST
  it did not cluster better per step (benchmarks/bench_classes.py, README *Performance*).

Evaluation (``model.eval()``) always enumerates, so the reported ELBO is exact in both modes.

Over the full circle (``rotation_mode='full'``) the joint and semi-supervised models with a
'canonical' classifier take the rVAE's group-equivariant encoder (its bin-and-offset angle
posterior) and warp decoder by default; with its ``rotation_sampler='enumerate'`` every class
row above is rendered at each of the N rotation bins and weighted q(row) q(bin)
(:meth:`JRVAE.render_bins`).

The class posterior q(y | x) comes from a classifier of its own that sees the image
canonicalised at the posterior-mean pose (``classifier='canonical'``), so that the class need
not be told from the observed pose; ``'shared'`` takes K more outputs from the encoder instead.

Training schedule, so that the classes carry the content and do not collapse (the reported
ELBO is never changed; see :class:`JRVAEConfig`): the per-image class KL is left out of the
training loss (``discrete_beta`` 0) and the class usage is kept balanced instead
(``class_balance``, the KL of the batch-mean class posterior from the uniform prior); the class
posterior of each image and of its copy moved by a random pose must agree
(``class_consistency``). A JointVAE capacity schedule is an option (``capacity_weight``).

Units: nats per image; angles radians; shifts half image widths.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, ClassVar, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import check, check_angle_spread, check_choice, check_counts, check_positive
from ..data.inputs import class_indices
from ..errors import AffineVAEError, user_stacklevel
from ..nn.affine import Pose, PoseLike, as_matrix, canonicalise, compose_affine, invert_affine, render, warp
from ..nn.layers import ENCODERS
from ..nn.modes import module_mode
from ..nn.signal import is_signal_shape
from ..nn.spatial import POSE_DECODERS
from ..pose.classes import aligned_kmeans, shift_invariant_features
from ..pose.sync import synchronise_angles, synchronised_kmeans
from ..registry import MODELS, Registry
from .base import Encoding, ModelOutput, add_terms
from .rvae import RVAE, RVAEConfig, repeat_pose

CLASS_EXPECTATIONS: Registry = Registry("class expectation")
"""How the ELBO's expectation over the class is taken in training: name -> function
``(model, post) -> (codes (N, R, K), weights (N, R))``: R class codes per image (one-hot rows,
or relaxed samples) that the decoder renders, and the weight of each row in the reconstruction
term. :meth:`JRVAE.decode_rows` renders them."""


def class_kl(weights: Tensor, log_weights: Optional[Tensor] = None) -> Tensor:
    """(N,) KL(w || uniform) = sum_k w_k log(K w_k) in nats of class distributions ``weights`` (N, K)
    (``log_weights``: their logarithms, e.g. a log-softmax, for gradients that stay finite where
    a probability underflows to 0)."""
    k = weights.shape[1]
    if log_weights is None:
        log_weights = torch.log(weights.clamp_min(1e-30))
    return (weights * torch.where(weights > 0, log_weights, torch.zeros_like(log_weights))).sum(1) + math.log(k)


@CLASS_EXPECTATIONS.register("enumerate")
def enumerate_classes(model: "JRVAE", post: Encoding) -> tuple[Tensor, Tensor]:
    """Exact expectation: each of the K one-hot classes is a row of every image. Returns codes
    (N, K, K) and the class weights (N, K) (``post.parts['class_weight']``)."""
    weight = post.parts["class_weight"]
    n, k = weight.shape
    code = torch.eye(k, device=weight.device, dtype=torch.float32).expand(n, k, k)
    return code, weight


@CLASS_EXPECTATIONS.register("gumbel")
def relaxed_class(model: "JRVAE", post: Encoding) -> tuple[Tensor, Tensor]:
    """A relaxed one-hot class sample (Gumbel-softmax at ``temperature``; known labels keep
    their one-hot), one row per image. Returns codes (N, 1, K) and weights (N, 1) of ones."""
    return known_code(post, gumbel_code(post.parts["class_logits"], model.config.temperature))


@CLASS_EXPECTATIONS.register("straight")
def straight_through_class(model: "JRVAE", post: Encoding) -> tuple[Tensor, Tensor]:
    """As 'gumbel', but the row's code is the one-hot argmax of the relaxed sample (the classes
    decoded in evaluation) while the gradient is the relaxed sample's (straight-through
    Gumbel-softmax). Returns codes (N, 1, K) and weights (N, 1) of ones."""
    soft = gumbel_code(post.parts["class_logits"], model.config.temperature)
    hard = F.one_hot(soft.argmax(1), soft.shape[1]).to(soft.dtype)
    return known_code(post, hard + soft - soft.detach())


def gumbel_code(logits: Tensor, temperature: float) -> Tensor:
    """(N, K) relaxed one-hot sample of class ``logits`` (N, K): softmax((logits + Gumbel noise) /
    temperature), the noise from torch's RNG."""
    u = torch.rand_like(logits, dtype=torch.float32).clamp(1e-6, 1 - 1e-6)
    return torch.softmax((logits.float() - torch.log(-torch.log(u))) / temperature, 1)


def known_code(post: Encoding, code: Tensor) -> tuple[Tensor, Tensor]:
    """One row per image: ``code`` (N, K), where the label is known its one-hot instead. Returns
    codes (N, 1, K) and weights (N, 1) of ones."""
    known = post.parts.get("class_known")
    if known is not None:
        code = torch.where(known[:, None], post.parts["class_weight"], code)
    return code[:, None], torch.ones(code.shape[0], 1, device=code.device, dtype=code.dtype)


#: The least agreement of the views' synchronisation for the 'embedding' start; below it the start is
#: aligned k-means. Particles of three shapes (bench_particles.py, 3 000, seed 0; start accuracy
#: embedding / aligned): agreement 0.98 1.000 / 0.996, 0.88 1.000 / 0.986, 0.80 0.983 / 0.953, 0.73
#: 0.917 / 0.899, 0.68 0.649 / 0.837 (faint particles, peak SNR 0.9); 10 000 digits 0.96.
EMBEDDING_START_AGREEMENT = 0.7


def aligned_start(model, views: Tensor, seed: int) -> tuple[np.ndarray, str]:
    """The 'aligned' start: :func:`aligned_kmeans` of the classifier ``views`` (N, C, H, W) at 2N turns.
    Returns the (N,) classes and the epoch record's suffix 'aligned'."""
    cfg = model.config
    return aligned_kmeans(views, cfg.num_classes, angles=2 * cfg.group_order, components=cfg.class_init_components,
                          n_init=4, seed=seed, fit_on=10000).labels, "aligned"


def embedding_start(model, views: Tensor, seed: int) -> tuple[np.ndarray, str]:
    """The 'embedding' start: :func:`synchronised_kmeans` of the classifier ``views`` (N, C, H, W),
    or :func:`aligned_start` when their synchronisation agrees less than
    :data:`EMBEDDING_START_AGREEMENT` (objects too faint for it). Returns the (N,) classes and the
    record's suffix ('embedded' or 'aligned')."""
    sync = synchronise_angles(views, seed=seed, symmetry=1)
    if sync.agreement < EMBEDDING_START_AGREEMENT:
        return aligned_start(model, views, seed)
    return synchronised_kmeans(views, model.config.num_classes, seed=seed, angles=sync.angles).labels, "embedded"


#: The joint model's k-means start over the full circle (``JRVAEConfig.class_init_space``):
#: ``f(model, views (N, C, H, W), seed) -> ((N,) class of each view, record suffix)``.
CLASS_INIT_SPACES = {"embedding": embedding_start, "aligned": aligned_start}


@dataclasses.dataclass(frozen=True)
class FlatEncoderRVAEConfig(RVAEConfig):
    """Base of the configs whose models may append outputs (class logits, targets) to the
    encoder's flat vector: the joint and semi-supervised families. Where they do
    (:meth:`flat_encoder_needed`) the ``encoder`` defaults to 'mlp' (where :class:`RVAEConfig`
    would pick the group-equivariant encoder in rotation_mode 'full'), and an encoder without a
    flat output is a one-line :class:`AffineVAEError`; where they do not, the defaults are the rVAE's,
    except the equivariant encoder's three layers ``(4, 8, 8)`` and ``pose_anchor`` 0 (the settings
    their full-circle figures were measured with; both can be given)."""

    default_group_channels: ClassVar[tuple] = (4, 8, 8)
    default_pose_anchor: ClassVar[float] = 0.0
    default_content_anchor: ClassVar[float] = 0.0

    def flat_encoder_needed(self) -> bool:
        """True when the encoder's flat output carries more than the content and pose posteriors."""
        return True

    def __post_init__(self) -> None:
        if self.encoder is None and self.flat_encoder_needed():
            object.__setattr__(self, "encoder", "mlp")
        super().__post_init__()

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        super().validate()
        check(self.flow_steps == 0, f"flow_steps {self.flow_steps}: the joint and semi-supervised models have no "
              "content flow (vae, cvae, rvae and crvae have one)")
        check(not self.flat_encoder_needed() or getattr(ENCODERS.get(self.encoder), "flat_output", True),
              f"encoder '{self.encoder}' has no flat output for the class logits or targets that these options put "
              "there (a 'shared' classifier, a regressor); give encoder 'mlp' or 'conv'")


FULL_CIRCLE_INIT_STEPS = 3000
"""The classifier's steps in the k-means start with the group-equivariant encoder (see
:attr:`JRVAEConfig.class_init_steps`)."""


@dataclasses.dataclass(frozen=True)
class JRVAEConfig(FlatEncoderRVAEConfig):
    """Joint rVAE options (see :class:`~affinevae.models.rvae.RVAEConfig` for the shared ones).

    Attributes:
        num_classes: K >= 2 classes of the discrete latent (default 10).
        discrete: how training takes the expectation over the class: 'gumbel' (default: a
            relaxed one-hot sample, one decoder row per image), 'straight' (its one-hot argmax
            decoded, the relaxed gradient) or 'enumerate' (exact, one batched decoder pass of
            N*K rows). Evaluation always enumerates.
        temperature: Gumbel-softmax temperature ('gumbel', 'straight'), > 0 (default 0.3: on
            rotated MNIST, bench_classes.py, cluster accuracy 0.694 / 0.686 / 0.683 / 0.656
            (seeds 0-3) against 0.677 / 0.641 / 0.712 (seeds 0-2) at 0.67, the earlier default:
            about the same on average, with less spread; 0.15: 0.667, seed 0). The 'conv'
            encoder (``encoder='conv'``) clustered better with seed 0 (0.751) but worse on
            average (0.751 / 0.697 / 0.555 / 0.615).
        classifier: 'canonical' (default: a network of its own, ``classifier_net`` with
            ``classifier_hidden``, that sees the image canonicalised at the posterior-mean pose)
            or 'shared' (K more outputs of the encoder, which sees the image as observed).
        classifier_net: 'mlp' or 'conv' (from the encoder registry). Without labels the MLP
            clusters better: on rotated MNIST (10 000 digits, 10 epochs, bench_classes.py) cluster
            accuracy 0.68 with the MLP, 0.39 with the conv net (hidden 128).
        classifier_hidden: widths of the classifier's fully connected layers.
        class_consistency: weight of the named term 'class_consistency': the symmetric KL
            between the class posteriors of each image and of its copy moved by the random pose
            of the equivariance pass (a pose does not change the class); needs invariances.
        class_balance: weight of the named term 'class_balance', KL(mean_batch q(y | x) || U(K)),
            which keeps every class in use (default 30).
        discrete_beta: weight of the per-image class KL, KL(q(y | x) || U(K)), in the training
            loss (default 0). The loss already weighs every KL, this one included, by ``beta``;
            the named term 'discrete_kl_correction' is the difference, f * (discrete_beta - beta)
            * mean KL(q(y | x) || U(K)) (f the trainer's KL warm-up factor), present in training
            when discrete_beta != beta and ``capacity_weight`` is 0: negative with the defaults
            (discrete_beta 0 < beta 1), where it cancels the class KL out of the loss.
            That KL is log K minus the entropy of q(y | x): it rewards uncertain classes and
            penalises the information the class carries, and with weight 1 the classes stay
            near chance (measured); 'class_balance' keeps what it does against collapse onto
            few classes. The reported ELBO always counts it once.
        class_entropy: weight of the named term 'class_entropy', the mean entropy of q(y | x),
            which rewards confident classes (default 0).
        capacity_weight: gamma of a JointVAE-style capacity schedule (Dupont 2018; 0 = off,
            the default): the training loss takes gamma * (|KL_content - C_z| + |KL_class - C_y|)
            instead of the two KLs (named term 'capacity'), with the capacities growing
            linearly from 0 to ``continuous_capacity`` and ``discrete_capacity`` (nats; -1:
            log K) over ``capacity_steps`` training steps. On rotated MNIST (gamma 30, 250
            steps) the classes collapsed onto one or two, so it is off by default. It is a
            schedule itself: the trainer's KL warm-up (``TrainConfig.kl_warmup``) does not
            change it, and otherwise scales ``beta`` and ``discrete_beta`` alike.
        jitter_angle, jitter_shift: in training, the classifier's view (the image canonicalised
            at the inferred pose) is moved by a random pose, angle ~ N(0, jitter_angle^2)
            radians and shift ~ N(0, jitter_shift^2) half image widths, in the same single warp
            (augmentation: the class must not depend on a small error of the inferred pose).
            0 = off. Evaluation never jitters.
        content_warmup: training steps over which the content latents the decoder sees are
            ramped in: z times min(1, step / content_warmup) (0 = off). Early on the decoder
            must then explain the images by class and pose alone, so the classes take the
            digit identity before the content latents take the style. Evaluation and the
            reported ELBO always use z as inferred.
        class_init: the classifier's data-driven start, 'kmeans' or 'none' (None, the default,
            resolves to 'kmeans' with the 'canonical' classifier and to 'none' with 'shared').
            'kmeans': after ``class_init_epochs`` epochs of training, at the start of the next,
            every training image is canonicalised at its inferred pose (the classifier's view,
            no jitter), reduced to ``class_init_components`` principal components and split into
            K clusters by k-means (scikit-learn, seeded by the run's seed; over the full circle,
            with the group-equivariant encoder, as ``class_init_space`` says, so that a class does
            not split by orientation); the classifier is
            then fitted to those clusters (``class_init_steps`` Adam steps on batches of 50,
            cross-entropy), and training goes on. Done once, by :meth:`JRVAE.on_epoch_start`, in a
            run that trains the model from its first step (not when a trained model is trained
            further); a resumed run repeats it exactly. On rotated MNIST (bench_classes.py, 10
            epochs) class accuracy 0.717 / 0.764 / 0.744 / 0.758 / 0.788 (seeds 0-4) against 0.694 /
            0.686 / 0.683 / 0.656 (seeds 0-3) without it; after 1 epoch instead of 2: 0.699 /
            0.729 / 0.704 / 0.780 (seeds 0-3). k-means alone labels 0.56-0.62 of the digits right.
        class_init_epochs: epochs trained before the k-means start (>= 0, default 2; 0: at the
            start, with the untrained encoder's poses).
        class_init_steps: the classifier's Adam steps on the k-means clusters (>= 1; None, the
            default: 200, and 3000 with the group-equivariant encoder, whose classifier sees the
            views of a class at more than one orientation: on full-circle MNIST class accuracy
            0.454 / 0.445 with 200 steps, 0.508 / 0.561 with 1000 and 0.554 / 0.605 / 0.566 with
            3000, seeds 0 / 1 (/ 2), 10 000 digits, 10 epochs).
        class_init_components: principal components the views are reduced to for k-means (>= 1).
        class_init_space: over the full circle (the group-equivariant encoder), what the k-means
            start clusters: 'embedding' (default; :func:`~affinevae.pose.synchronised_kmeans`: the
            views synchronised into one frame, embedded in 2-D by t-SNE there, k-means of that;
            about 50 s for 10 000 digits on one thread) or 'aligned'
            (:func:`~affinevae.pose.classes.aligned_kmeans` at 2N turns of the views, each
            standardised, on ``class_init_components`` principal components). On full-circle MNIST
            (``bench_classes.py --max-angle 180``, 10 epochs, seeds 0 / 1) class accuracy 0.777 /
            0.799 against 0.641 / 0.664 with 'aligned' (whose start labels 0.58-0.63 of the digits
            right, the embedding's 0.88). Views whose synchronisation agrees less than
            :data:`EMBEDDING_START_AGREEMENT` (0.7: faint particles) take the 'aligned' start.
    """

    num_classes: int = 10
    discrete: str = "gumbel"
    temperature: float = 0.3
    classifier: str = "canonical"
    classifier_net: str = "mlp"
    classifier_hidden: tuple = (256, 128)
    class_consistency: float = 3.0
    class_balance: float = 30.0
    discrete_beta: float = 0.0
    class_entropy: float = 0.0
    capacity_weight: float = 0.0
    continuous_capacity: float = 5.0
    discrete_capacity: float = -1.0
    capacity_steps: int = 1000
    jitter_angle: float = 0.0
    jitter_shift: float = 0.0
    content_warmup: int = 0
    class_init: Optional[str] = None
    class_init_epochs: int = 2
    class_init_steps: Optional[int] = None
    class_init_components: int = 50
    class_init_space: str = "embedding"

    #: A run saved before ``class_init_space`` existed started from aligned k-means.
    FORMER_DEFAULTS: ClassVar[dict] = {**RVAEConfig.FORMER_DEFAULTS, "class_init_space": "aligned"}

    def flat_encoder_needed(self) -> bool:
        """Only a 'shared' classifier takes its logits from the encoder; a 'canonical' one is a
        network of its own, so the group-equivariant encoder can infer content and pose."""
        return self.classifier == "shared"

    def __post_init__(self) -> None:
        if self.class_init is None:
            object.__setattr__(self, "class_init", "kmeans" if self.classifier == "canonical" else "none")
        super().__post_init__()
        if self.class_init_steps is None:
            object.__setattr__(self, "class_init_steps", FULL_CIRCLE_INIT_STEPS if self.mixture else 200)

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        super().validate()
        check_choice("class_init", self.class_init, ["kmeans", "none"])
        check_choice("class_init_space", self.class_init_space, list(CLASS_INIT_SPACES))
        check(self.class_init == "none" or self.classifier == "canonical",
              "class_init 'kmeans' fits the 'canonical' classifier; with classifier 'shared' give class_init 'none'")
        for name, low in (("class_init_epochs", 0), ("class_init_steps", 1), ("class_init_components", 1)):
            value = getattr(self, name)
            if name == "class_init_steps" and value is None:  # resolved after validation
                continue
            check(isinstance(value, int) and not isinstance(value, bool) and value >= low,
                  f"{name} must be an integer >= {low}, got {value!r}")
        check(isinstance(self.num_classes, int) and self.num_classes >= 2,
              f"num_classes (--classes) must be an integer >= 2, got {self.num_classes!r}")
        check_choice("discrete", self.discrete, CLASS_EXPECTATIONS.names())
        check_choice("classifier", self.classifier, ["canonical", "shared"])
        check_choice("classifier_net", self.classifier_net, ENCODERS.names())
        check_counts("classifier_hidden", self.classifier_hidden)
        check_positive("temperature", self.temperature)
        for name in ("class_consistency", "class_balance", "discrete_beta", "class_entropy", "capacity_weight",
                     "continuous_capacity", "jitter_shift"):
            check_positive(name, getattr(self, name), allow_zero=True)
        check_angle_spread("jitter_angle", self.jitter_angle, allow_zero=True)
        check(self.discrete_capacity == -1 or (isinstance(self.discrete_capacity, (int, float))
                                              and 0 <= self.discrete_capacity <= math.log(self.num_classes)),
              f"discrete_capacity must be -1 (log K) or lie in [0, log K], got {self.discrete_capacity!r}")
        check(isinstance(self.capacity_steps, int) and self.capacity_steps >= 1,
              f"capacity_steps must be an integer >= 1, got {self.capacity_steps!r}")
        check(isinstance(self.content_warmup, int) and self.content_warmup >= 0,
              f"content_warmup must be an integer >= 0, got {self.content_warmup!r}")


@MODELS.register("jrvae")
class JRVAE(RVAE):
    """rVAE with a discrete class latent inferred beside the content and pose latents.

    ``encode(x)`` returns the content and pose posterior as the rVAE's and, in ``parts``,
    ``class_logits`` and ``class_prob`` (N, K) (q(y | x)) and ``class`` (N,) (its argmax).
    ``decode(z, y)`` renders in class ``y`` ((N,) indices or (N, K) class weights; None: the
    mean image over the K classes under the uniform prior); ``sample(n)`` draws the class from
    the prior. Training needs no labels.

    Example::

        model = JRVAE(image_shape=(1, 28, 28), latent_dim=2, num_classes=10, invariances=("rotation",))
        fit(model, rotated_mnist("train", n=10000), TrainConfig(epochs=10, batch_size=100))
        cls = model.encode(x).parts["class"]      # (N,) inferred classes
    """

    config_class = JRVAEConfig
    family = "jrvae"
    discrete_classes: bool = True
    """A discrete class latent (``num_classes``, the CLI's ``--classes``)."""
    #: Which full-circle start the last :meth:`kmeans_start` made ('embedded' or 'aligned'; None: plain
    #: k-means, or none made yet).
    class_start_used: Optional[str] = None

    # ------------------------------------------------------------------ construction
    def encoder_out_dim(self) -> int:
        """The rVAE's outputs (content and pose posteriors), plus K class logits for a 'shared' classifier."""
        return super().encoder_out_dim() + (self.config.num_classes if self.config.classifier == "shared" else 0)

    def build(self, encoder=None, decoder=None, classifier=None) -> None:
        """As the rVAE's, but the encoder sees no class and the decoder's input is the content
        latents plus the K-wide class code; a 'canonical' classifier is a network of its own."""
        cfg = self.config
        self.encoder = encoder if encoder is not None else self.build_encoder(0)
        self.decoder = decoder if decoder is not None else POSE_DECODERS.get(cfg.decoder)(
            cfg.latent_dim + cfg.num_classes, cfg.image_shape, hidden=tuple(cfg.hidden), act=cfg.activation,
            channels=tuple(reversed(cfg.channels)), norm=cfg.norm)
        if cfg.classifier != "shared":
            self.classifier = classifier if classifier is not None else ENCODERS.get(cfg.classifier_net)(
                cfg.image_shape, cfg.num_classes, hidden=cfg.classifier_hidden, act=cfg.activation, cond_dim=0,
                channels=cfg.channels, norm=cfg.norm)
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.int64))

    # ------------------------------------------------------------------ training hooks
    def on_epoch_start(self, epoch: int, x: Tensor, y: Optional[Tensor], steps_done: int, seed: int) -> dict:
        """The k-means start of the classifier (``class_init`` 'kmeans', see :class:`JRVAEConfig`)
        before epoch ``class_init_epochs + 1`` of a run that trains this model from its first
        step (``train_steps`` equals the run's ``steps_done``) on at least K images. Returns the
        rVAE's record (``pose_sync_agreement`` and ``pose_sync_symmetry`` with a pose anchor) and, in the epoch of the start,
        ``class_kmeans_start`` 1.0 (and, over the full circle, ``class_kmeans_embedded`` 1.0 for the
        'embedding' start or ``class_kmeans_aligned`` 1.0 for aligned k-means, with
        ``class_kmeans_fallback`` 1.0 where the 'embedding' start fell back to it). With fewer training images than classes there is nothing to
        cluster: one warning says so and training goes on without the start.

        ``x`` (N, C, H, W) the training images (CPU; clustered by :meth:`kmeans_start`); ``y`` (N,)
        their labels or None (unused: the classes are discovered)."""
        cfg = self.config
        record = super().on_epoch_start(epoch, x, y, steps_done, seed)
        if cfg.class_init != "kmeans" or epoch != cfg.class_init_epochs + 1 or int(self.train_steps) != steps_done:
            return record
        if len(x) < cfg.num_classes:
            warnings.warn(f"{self.family}: {len(x)} training image{'s' if len(x) != 1 else ''} for {cfg.num_classes} "
                          "classes: no k-means start of the classifier (class_init)", stacklevel=user_stacklevel())
            return record
        self.kmeans_start(x, seed)
        how = {f"class_kmeans_{self.class_start_used}": 1.0} if self.class_start_used else {}
        if cfg.mixture and cfg.class_init_space == "embedding" and self.class_start_used == "aligned":
            how["class_kmeans_fallback"] = 1.0  # the views synchronised too poorly for the embedding
        return {**record, "class_kmeans_start": 1.0, **how}

    def kmeans_start(self, x: Tensor, seed: int = 0, batch_size: int = 512) -> Tensor:
        """Fit the classifier to k-means clusters of the training images ``x`` (N, C, H, W): their
        classifier views at the inferred pose (no jitter), ``class_init_components`` principal
        components (fitted on at most 10 000 of them, a seeded subset), K clusters (scikit-learn,
        ``random_state=seed``; with the group-equivariant encoder the ``class_init_space``'s
        clustering instead; for 1-D signals with a shift latent the views' Fourier magnitudes,
        :func:`~affinevae.pose.classes.shift_invariant_features`), then ``class_init_steps``
        Adam steps (lr 2e-3, batches of 50 drawn with a generator seeded by ``seed``) of
        cross-entropy. Deterministic for a given model, data and seed; leaves torch's global RNG
        alone. Returns the (N,) cluster of each image."""
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA

        cfg = self.config
        with module_mode(self):
            with torch.no_grad():
                views = torch.cat([self.classifier_view(xb, self.infer(xb).pose).cpu()
                                   for xb in (x[i:i + batch_size].to(self.device) for i in range(0, len(x), batch_size))])
            self.class_start_used = None
            if cfg.mixture:  # over the full circle: classes of the views whatever their turn
                labels, self.class_start_used = CLASS_INIT_SPACES[cfg.class_init_space](self, views, seed)
                clusters = torch.as_tensor(labels).long()
            else:
                flat = views.reshape(len(views), -1).numpy()
                if is_signal_shape(cfg.image_shape) and "shift" in (cfg.invariances or ()):
                    # spectra: their classes whatever the shift the encoder has learned so far
                    flat, self.class_start_used = shift_invariant_features(views), "spectrum"
                comps = max(1, min(cfg.class_init_components, flat.shape[0], flat.shape[1]))
                fit_on = (flat if len(flat) <= 10000
                          else flat[np.random.default_rng(seed).choice(len(flat), 10000, replace=False)])
                feats = PCA(comps, random_state=seed).fit(fit_on).transform(flat)
                clusters = torch.as_tensor(KMeans(cfg.num_classes, n_init=4, random_state=seed).fit_predict(feats)).long()
            self.classifier.train()
            opt = torch.optim.Adam(self.classifier.parameters(), 2e-3)
            gen = torch.Generator().manual_seed(seed)
            with torch.enable_grad():
                for _ in range(cfg.class_init_steps):
                    idx = torch.randint(len(views), (min(50, len(views)),), generator=gen)
                    loss = F.cross_entropy(self.classifier(views[idx].to(self.device), None), clusters[idx].to(self.device))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        return clusters

    # ------------------------------------------------------------------ labels
    def known_labels(self, y: Optional[Tensor], n: int) -> Optional[Tensor]:
        """(N,) labels used by the model (None: all unknown). The joint model uses none."""
        return None

    # ------------------------------------------------------------------ stages
    def posterior(self, h: Tensor) -> Encoding:
        """(N, encoder_out_dim) -> the rVAE's Encoding (with the class parts of a 'shared' classifier)."""
        if self.config.classifier != "shared":
            return super().posterior(h)
        k = self.config.num_classes
        return self.with_class(super().posterior(h[:, :-k]), h[:, -k:])

    def with_class(self, post: Encoding, logits: Tensor) -> Encoding:
        """``post`` with ``parts`` 'class_logits', 'class_prob' (= 'class_weight') (N, K) and 'class' (N,)."""
        logits = logits.float()
        prob = torch.softmax(logits, 1)
        post.parts.update(class_logits=logits, class_prob=prob, class_weight=prob)
        post.parts["class"] = prob.argmax(1)
        return post

    def classify(self, x: Tensor, post: Encoding) -> Encoding:
        """The class stage: ``post`` of images ``x`` (N, C, H, W) with the class posterior added; a
        'canonical' classifier sees :meth:`classifier_view`."""
        if self.config.classifier == "shared":
            return post
        return self.with_class(post, self.classifier(self.classifier_view(x, post.pose), None))

    def jitter(self, n: int, device) -> Optional[Pose]:
        """(n,) random poses of the classifier's augmentation in training (angle ~ N(0,
        jitter_angle^2) radians, shift ~ N(0, jitter_shift^2) half widths, torch's RNG); None
        in evaluation or when both are 0."""
        cfg = self.config
        if not self.in_weight_step or (cfg.jitter_angle == 0 and cfg.jitter_shift == 0):
            return None
        return Pose(angle=cfg.jitter_angle * torch.randn(n, device=device) if cfg.jitter_angle > 0 else None,
                    shift=cfg.jitter_shift * torch.randn(n, 2, device=device) if cfg.jitter_shift > 0 else None)

    def classifier_view(self, x: Tensor, pose: PoseLike, jitter: Optional[Pose] = None) -> Tensor:
        """The (N, C, H, W) image a 'canonical' classifier sees: ``x`` canonicalised at ``pose``
        (not differentiated; None: as observed) and, in training, moved by a random :meth:`jitter`
        (or by the given ``jitter``), in one warp: ``render(canonicalise(x, pose), jitter)``; ``x`` is
        :meth:`observe`'d first (the low-pass filter of ``lowpass``, before the turn, as the encoder reads it)."""
        x = self.observe(x)
        n = x.shape[0]
        if jitter is None:
            jitter = self.jitter(n, x.device)
        pose = pose.detach() if isinstance(pose, (Pose, Tensor)) else pose
        theta_j = as_matrix(jitter, n, x.device)
        if theta_j is None:
            return canonicalise(x, pose)
        theta_p = as_matrix(pose, n, x.device)
        inv_j = invert_affine(theta_j)
        return warp(x, inv_j if theta_p is None else compose_affine(inv_j, theta_p))

    def with_labels(self, post: Encoding, y: Optional[Tensor]) -> Encoding:
        """``post`` with 'class_weight' (N, K): one-hot where the label is known, q(y | x) elsewhere,
        and 'class_known' (N,) bool."""
        known = self.known_labels(y, post.z_mean.shape[0])
        if known is None:
            return post
        mask = known >= 0
        onehot = F.one_hot(known.clamp_min(0), self.config.num_classes).to(post.parts["class_prob"].dtype)
        post.parts["class_weight"] = torch.where(mask[:, None], onehot, post.parts["class_prob"])
        post.parts["class_known"] = mask
        return post

    def class_code(self, y: Optional[Tensor], n: int, device, dtype) -> Tensor:
        """(n, K) decoder class code of ``y``: one class or (n,) class indices
        (:func:`~affinevae.data.inputs.class_indices`: integers in [0, K)), or (n, K) class weights
        (finite, >= 0; e.g. the class posterior) as they are."""
        k = self.config.num_classes
        if isinstance(y, (list, tuple)) and np.ndim(y) == 2:  # (n, K) weights as nested lists
            y = np.asarray(y)
        w = torch.as_tensor(y, device=device) if isinstance(y, (Tensor, np.ndarray)) and y.ndim == 2 else None
        if w is not None and w.is_floating_point():
            if w.shape != (n, k):
                raise AffineVAEError(f"class weights must have shape ({n}, {k}), got {tuple(w.shape)}")
            if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise AffineVAEError(f"class weights must be finite and >= 0 (e.g. class probabilities), got "
                                     f"{int((~torch.isfinite(w)).sum())} non-finite and {int((w < 0).sum())} negative")
            return w.to(dtype)
        return F.one_hot(class_indices(y, n, k, f"model '{self.family}'").to(device), k).to(dtype)

    def generate(self, z: Tensor, y: Optional[Tensor] = None):
        """The canonical object of z (N, D) in class ``y`` ((N,) indices or (N, K) weights)."""
        if y is None:
            raise AffineVAEError(f"model '{self.family}' generates in a class: give y")
        return self.decoder.generate(torch.cat([z, self.class_code(y, z.shape[0], z.device, z.dtype)], 1))

    def infer(self, x: Tensor, y: Optional[Tensor] = None) -> Encoding:
        """Posterior of checked (N, C, H, W) images (the encoder ignores labels)."""
        return self.classify(x, self.posterior(self.encoder(x, None)))

    def infer_for_loss(self, x: Tensor, y: Optional[Tensor]) -> tuple[Encoding, dict]:
        """:meth:`infer` and, in training, the rVAE's 'equivariance' term and 'class_consistency'
        (computed from the same second encoding of the images moved by a random pose).

        ``x`` (N, C, H, W) checked images; ``y`` (N,) labels or None (the joint model uses none; the
        semi-supervised one -1 for unknown). Returns the :class:`Encoding` (``z_mean``/``z_std``
        (N, D), pose, ``parts`` 'class_logits'/'class_prob'/'class_weight' (N, K), 'class' (N,))
        and ``{name: lazy weighted scalar}`` (see :meth:`infer_views`)."""
        enc, _, terms = self.infer_views(x, y)
        return enc, terms

    def infer_views(self, x: Tensor, y: Optional[Tensor]) -> tuple[Encoding, Optional[Encoding], dict]:
        """The posterior of checked images ``x`` (N, C, H, W) with the labels ``y`` applied, the
        posterior of the same images moved by a random pose (training with invariances and an
        equivariance or class-consistency weight; else None), and the named terms
        ('equivariance', 'class_consistency') that compare the two, and the rVAE's 'pose_anchor'
        (:meth:`RVAE.anchor_terms`, inside a fit with ``pose_anchor`` > 0)."""
        cfg = self.config
        w, wc = cfg.equivariance_weight, cfg.class_consistency
        if not (self.in_weight_step and (w > 0 or wc > 0) and cfg.invariances):
            enc = self.with_labels(self.infer(x, y), y)
            return enc, None, self.anchor_terms(enc)
        n = x.shape[0]
        delta = self.random_pose(n, x.device)
        xx = torch.cat([x, render(x, delta)])
        both = self.classify(xx, self.posterior(self.encoder(xx, None)))
        enc, moved = self.with_labels(both.index(slice(0, n)), y), both.index(slice(n, 2 * n))
        terms: dict[str, Any] = {}
        if w > 0:
            terms["equivariance"] = lambda: w * self.consistency(enc, moved, delta).mean()
        if wc > 0:
            terms["class_consistency"] = lambda: wc * symmetric_kl(enc.parts["class_logits"],
                                                                   moved.parts["class_logits"]).mean()
        terms.update(self.anchor_terms(enc))
        return enc, moved, terms

    def decode_and_score(self, x: Tensor, y: Optional[Tensor], z: Tensor, pose, post, terms: dict,
                         sample: bool) -> ModelOutput:
        """generate + render in every class (or a relaxed class sample in 'gumbel' training) -> score
        with the class weights.

        ``x`` (N, C, H, W) checked images, ``y`` (N,) labels or None (unused here: the class rows
        come from ``post``), ``z`` (N, D) drawn content, ``pose`` the composed pose; renders
        (N, R, C, H, W) rows (R = K, or 1) weighted (N, R). Returns a :class:`ModelOutput` whose
        ``elbo`` (N,) nats includes the class KL and whose ``x_params`` (N, C, H, W) is each image's
        heaviest row."""
        codes, weights = self.class_rows(post)
        params = self.decode_rows(self.warmed_content(z), codes, pose)
        return self.score(x, params, post, pose, terms, weights=weights)

    def class_rows(self, post: Encoding) -> tuple[Tensor, Tensor]:
        """The class codes the decoder renders for each image and their weights: ``discrete``'s
        rows in training (:data:`CLASS_EXPECTATIONS`), all K classes in evaluation. Returns codes
        (N, R, K) and weights (N, R)."""
        return CLASS_EXPECTATIONS.get(self.config.discrete if self.in_weight_step else "enumerate")(self, post)

    def warmed_content(self, z: Tensor) -> Tensor:
        """The content latents (N, D) the decoder sees: times :meth:`content_scale` in training."""
        if self.in_weight_step and self.config.content_warmup > 0:
            return z * self.content_scale()
        return z

    def decode_rows(self, z: Tensor, codes: Tensor, pose: PoseLike) -> Tensor:
        """Likelihood parameters (N, R, C, H, W) of content ``z`` (N, D) in each class code of
        ``codes`` (N, R, K), every row at its image's ``pose``, in one batched decoder pass."""
        n, r, k = codes.shape
        if r == 1:
            return self.render(self.generate(z, codes[:, 0].to(z.dtype)), pose)[:, None]
        rows = torch.arange(n, device=z.device).repeat_interleave(r)
        params = self.render(self.generate(z[rows], codes.reshape(n * r, k).to(z.dtype)), repeat_pose(pose, rows))
        return params.view(n, r, *params.shape[1:])

    def render_bins(self, z: Tensor, y: Optional[Tensor], post: Encoding, poses: Pose, bin_weights: Tensor
                    ) -> tuple[Tensor, Tensor]:
        """The rVAE's enumeration over the rotation bins (see :meth:`RVAE.render_bins`) times the
        class rows (:meth:`class_rows`): every class code of every image rendered at each of its
        N bins. ``z`` (B, D), ``poses`` (B*N) ordered image-major, ``bin_weights`` (B, N) q(bin).
        Returns params (B, R*N, C, H, W) (row r*N + k: class row r at bin k) and their weights
        (B, R*N), q(class row) * q(bin)."""
        codes, class_weights = self.class_rows(post)
        b, r, k = codes.shape
        n = bin_weights.shape[1]
        params = self.render_rows_at_bins(self.warmed_content(z).repeat_interleave(r, 0),
                                          codes.reshape(b * r, k).to(z.dtype), poses, n, rows=r)
        weights = (class_weights[:, :, None] * bin_weights[:, None, :]).reshape(b, r * n)
        return params.view(b, r * n, *params.shape[1:]), weights

    def score_rows(self, x: Tensor, params: Tensor, post: Encoding, pose: PoseLike, terms: dict,
                   weights: Tensor) -> ModelOutput:
        """:meth:`score` of rows (B, M, C, H, W) weighted by ``weights`` (B, M) (the rVAE's bin enumeration)."""
        return self.score(x, params, post, pose, terms, weights=weights)

    def content_scale(self, step: Optional[int] = None) -> float:
        """Factor in [0, 1] on the content latents the decoder sees in training at ``step``
        (default: the training steps taken, ``train_steps``): min(1, step / content_warmup), 1 when off."""
        w = self.config.content_warmup
        step = int(self.train_steps) if step is None else step
        return 1.0 if w <= 0 else min(1.0, step / w)

    def kl(self, post: Encoding) -> Tensor:
        """(N,) KL of the content and pose posteriors (the rVAE's) plus that of the class
        weights from the uniform prior (log K for a known label: -log p(y)), nats."""
        return super().kl(post) + class_kl(post.parts["class_weight"])

    def training_terms(self, post: Encoding, kl_content: Tensor, kl_class: Tensor) -> dict:
        """The schedule's named terms of a training step (weighted scalars, see
        :class:`JRVAEConfig`): 'capacity' or 'discrete_kl_correction', 'class_entropy' and
        'class_balance'. 'discrete_kl_correction' is not a KL but the correction that turns the
        class KL's weight in the loss from ``beta`` into ``discrete_beta``: f * (discrete_beta -
        beta) * kl_class.mean(), f = :meth:`loss_kl_factor` (negative with the defaults).
        ``kl_content`` (N,): KL of content and pose; ``kl_class`` (N,): KL of the class weights."""
        cfg = self.config
        terms: dict = {}
        f = self.loss_kl_factor()  # the trainer's KL warm-up: on both KL weights
        if cfg.capacity_weight > 0:
            t = min(1.0, float(self.train_steps) / cfg.capacity_steps)
            c_y = (math.log(cfg.num_classes) if cfg.discrete_capacity == -1 else cfg.discrete_capacity) * t
            c_z = cfg.continuous_capacity * t
            terms["capacity"] = (cfg.capacity_weight * ((kl_content.mean() - c_z).abs() + (kl_class.mean() - c_y).abs())
                                 - f * cfg.beta * (kl_content.mean() + kl_class.mean()))
        elif cfg.discrete_beta != cfg.beta:
            terms["discrete_kl_correction"] = f * (cfg.discrete_beta - cfg.beta) * kl_class.mean()
        if cfg.class_entropy > 0:
            logp = torch.log_softmax(post.parts["class_logits"], 1)
            terms["class_entropy"] = -cfg.class_entropy * (logp.exp() * logp).sum(1).mean()
        if cfg.class_balance > 0:
            terms["class_balance"] = cfg.class_balance * class_kl(post.parts["class_prob"].mean(0, keepdim=True))[0]
        return terms

    def score(self, x: Tensor, params: Tensor, post: Encoding, pose: PoseLike = None,
              terms: Optional[dict] = None, weights: Optional[Tensor] = None) -> ModelOutput:
        """Likelihood of ``x`` under per-row params (N, R, C, H, W) weighted by ``weights`` (N, R)
        (R = K classes, or 1 relaxed sample), plus the KL of content, pose and class; the
        schedule's named terms (:meth:`training_terms`) join ``terms`` in training."""
        if params.dim() == 4:  # one row per image, e.g. from decode_params: the class weights are q
            params = params[:, None]
        n, r = params.shape[:2]
        if weights is None:
            weights = torch.ones(n, r, device=params.device)
        recon_i, x_params = self.row_likelihood(x, params, weights)
        kl_cont = super().kl(post)
        kl_disc = class_kl(post.parts["class_weight"])
        kl_i = kl_cont + kl_disc
        recon, kl = recon_i.mean(), kl_i.mean()
        loss = recon + self.loss_beta() * kl
        terms = dict(terms or {})
        if self.in_weight_step:  # not in a pose search's scoring passes (an AVAE around this model)
            terms.update(self.training_terms(post, kl_cont, kl_disc))
            self.train_steps += 1
        loss, terms = add_terms(loss, terms)
        return ModelOutput(loss=loss, recon=recon, kl=kl, elbo=-(recon_i + kl_i), z_mean=post.z_mean,
                           z_logvar=post.z_logvar, pose=pose, x_params=x_params, terms=terms)

    # ------------------------------------------------------------------ public API
    def decode_params(self, z: Tensor, y: Optional[Tensor] = None, pose=None) -> Tensor:
        """Likelihood parameters (N, C, H, W) of content latents ``z`` (N, D) in class ``y``
        ((N,) or scalar indices, or (N, K) weights; required) and ``pose``."""
        z = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise AffineVAEError(f"latents must have shape (N, {self.config.latent_dim}), got {tuple(z.shape)}")
        if y is None:
            raise AffineVAEError(f"model '{self.family}' decodes in a class: give y")
        return self.render(self.generate(z, y), pose)



def symmetric_kl(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """(N,) symmetric KL, KL(a || b) + KL(b || a), between class distributions given by logits (N, K)."""
    la, lb = torch.log_softmax(logits_a.float(), 1), torch.log_softmax(logits_b.float(), 1)
    return ((la.exp() - lb.exp()) * (la - lb)).sum(1)


@dataclasses.dataclass(frozen=True)
class JVAEConfig(JRVAEConfig):
    """Joint VAE options: :class:`JRVAEConfig` without pose latents (``invariances=()``)."""

    invariances: tuple = ()


@MODELS.register("jvae")
class JVAE(JRVAE):
    """Joint VAE: a discrete class latent beside the content latents, no pose (the jrVAE with
    ``invariances=()``; a spatial decoder by default, 'warp' for a conv one)."""

    config_class = JVAEConfig
    family = "jvae"
