"""The shared model base: x = warp(render(z, class), pose).

Every family (AE, VAE, cVAE, rVAE, crVAE, AVAE) subclasses :class:`LatentModel`, and every
model's :meth:`~LatentModel.forward` is the same pass of public stages::

    found  = find_pose(x, y)              # pose source 'searched' (AVAE); None otherwise
    canon  = canonicalise(x, found)       # the image with the found pose undone
    post   = infer(canon, y)              # posterior of the content (and inferred pose) latents
    z, p   = draw(post)                   # a sample (or the means); p: the inferred pose (rVAE)
    params = render(generate(z, y), found o p)   # canonical likelihood parameters, put in the pose
    out    = score(x, params, post)       # -log p(x | params), KL, ELBO, named extra loss terms

In code: :meth:`~LatentModel.forward` = ``find_pose``, then :meth:`~LatentModel.run_stages`
(``canonicalise``, :meth:`~LatentModel.infer_for_loss` (``infer`` plus the named inference terms of
a training step), ``draw``, :func:`~affinevae.nn.affine.compose_poses`, then
:meth:`~LatentModel.decode_and_score` (``generate`` -> ``render`` -> ``score``)), then
:meth:`~LatentModel.pose_terms` added with :meth:`ModelOutput.with_terms`.

Families differ only in their stages' choices (:attr:`LatentModel.pose_source`): the pose is
fixed at the identity (AE, VAE, cVAE), inferred by the encoder (rVAE, crVAE) or searched to
maximise the ELBO (AVAE, which composes the stages of the model it wraps).

Units: losses are nats per image (summed over pixels, averaged over the batch); angles in
radians; shifts in half image widths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import numbers
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config, check, check_choice, check_counts, check_positive, check_seed
from ..data.inputs import MIN_IMAGE_SIZE, as_images, channels_last_hint, check_int, class_indices
from ..errors import AffineVAEError
from ..limits import check_allocation
from ..nn.affine import Canonical, Pose, PoseLike, canonicalise, check_full_turn, compose_poses, render
from ..nn.flows import flow_kl, flow_parameter_count, planar_flow, split_flow_parameters
from ..nn.layers import ACTIVATIONS, DECODERS, ENCODERS, NORMS
from ..nn.likelihoods import LIKELIHOODS, gaussian_kl  # gaussian_kl: the families' KL, re-exported here
from ..nn.lowpass import GaussianLowpass, noise_gain
from ..nn.modes import module_mode
from ..nn.signal import is_signal_shape
from ..registry import MODELS
from ..rng import seeded

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ModelConfig(Config):
    """Options shared by every model family.

    Attributes:
        image_shape: (C, H, W) of the images.
        latent_dim: number of content latent variables.
        num_classes: classes for conditional models (0 = unconditional).
        encoder: 'conv' or 'mlp'.
        decoder: 'conv' or 'mlp' (rVAE adds 'spatial' and 'warp').
        hidden: widths of the fully connected layers.
        channels: conv feature maps, fine -> coarse for the encoder (reversed for the decoder).
        activation: relu, tanh, gelu, silu, softplus or elu.
        norm: normalisation of the conv feature maps: 'group' (GroupNorm, per image) or 'none'.
        likelihood: 'bernoulli', 'cbernoulli', 'gaussian' (or 'mse' for the AE).
        sigma: Gaussian pixel standard deviation (initial value when learned).
        learn_sigma: learn the Gaussian sigma.
        sigma_radius: (Gaussian likelihood) 0: every pixel has the standard deviation ``sigma``.
            R > 0: a Gaussian window on the pixel precision, centred on the image: a pixel at
            distance r from the centre (in half-widths of the image, 1 at the middle of an edge)
            has standard deviation sigma * exp(r^2 / (2 R^2)). The image centre is then trusted
            most: for patches centred on objects the model describes the centre object before its
            neighbours. Still a normalised density (the ELBO stays in nats).
        beta: weight of the KL term in the training loss (the reported ELBO uses 1).
        lowpass: standard deviation, in pixels, of a Gaussian low-pass filter applied to every image
            the model sees (the encoder's and classifier's input and the likelihood's target), with the
            contrast scaled so that white pixel noise keeps its level (see :meth:`LatentModel.observe`);
            0 (default): none. For noisy data (a signal-to-noise of a few per pixel or less, such as
            cryo-EM particles), whose per-pixel noise otherwise leaves the content latents unused
            (``benchmarks/bench_particles.py``). Needs a Gaussian likelihood; its ``sigma`` stays the
            raw pixel noise. The ELBO is then of the filtered images. 1-D signals are filtered along
            their length.
    """

    image_shape: tuple = (1, 28, 28)
    latent_dim: int = 10
    num_classes: int = 0
    encoder: str = "conv"
    decoder: str = "conv"
    hidden: tuple = (256,)
    channels: tuple = (32, 64)
    activation: str = "relu"
    norm: str = "group"
    likelihood: str = "bernoulli"
    sigma: float = 1.0
    learn_sigma: bool = False
    sigma_radius: float = 0.0
    beta: float = 1.0
    lowpass: float = 0.0

    #: Runs saved before ``lowpass`` existed had no filter.
    FORMER_DEFAULTS: ClassVar[dict] = {"lowpass": 0.0}
    #: The decoders this family builds by name (``decoder`` is checked against it at construction);
    #: the pose families build theirs from :data:`affinevae.nn.spatial.POSE_DECODERS`, and a config
    #: that mirrors an inner model's fields (the AVAE's) leaves the check to that model's config (None).
    DECODER_NAMES: ClassVar[Any] = DECODERS

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        check(len(self.image_shape) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                 for v in self.image_shape),
              f"image_shape must be (C, H, W) positive integers, got {self.image_shape}")
        check(isinstance(self.latent_dim, int) and self.latent_dim >= 1, f"latent_dim must be an integer >= 1, got {self.latent_dim!r}")
        check(isinstance(self.num_classes, int) and self.num_classes >= 0, f"num_classes must be an integer >= 0, got {self.num_classes!r}")
        check_choice("encoder", self.encoder, ENCODERS.names())
        if self.DECODER_NAMES is not None:
            check_choice("decoder", self.decoder, self.DECODER_NAMES.names())
        check_choice("activation", self.activation, list(ACTIVATIONS))
        check_choice("norm", self.norm, list(NORMS))
        check_choice("likelihood", self.likelihood, LIKELIHOODS.names())
        check_counts("hidden", self.hidden)
        check_counts("channels", self.channels, at_least=1)
        check_positive("sigma", self.sigma)
        check_positive("sigma_radius", self.sigma_radius, allow_zero=True)
        check(self.sigma_radius == 0 or self.likelihood == "gaussian",
              f"sigma_radius applies to the gaussian likelihood, not '{self.likelihood}'")
        check_positive("beta", self.beta, allow_zero=True)
        check_positive("lowpass", self.lowpass, allow_zero=True)
        check(self.lowpass <= max(self.image_shape[1:]),
              f"lowpass must be at most the image size ({max(self.image_shape[1:])} px), got {self.lowpass}")
        check(self.lowpass == 0 or self.likelihood not in ("bernoulli", "cbernoulli"),
              f"lowpass needs a real-valued likelihood ('gaussian'; the AE's 'mse'), not '{self.likelihood}': the "
              "filtered images keep the pixel noise's level, so their values leave [0, 1]")

    def check_new(self) -> None:
        """Rules for a model built anew (:func:`build_model`, ``train``) that a saved config need not
        meet, so that runs saved before a rule still load; one line each (:class:`AffineVAEError`).
        None here."""


def pixel_sigma_window(size: tuple, radius: float) -> Tensor:
    """Log of the pixel-sigma window of ``ModelConfig.sigma_radius``: (H, W) r^2 / (2 R^2), r the
    distance of each pixel centre from the image centre in half-widths (of H and of W, so
    1 at the middle of every edge); a 0-d zero for ``radius`` 0 (no window)."""
    if radius <= 0:
        return torch.zeros(())
    h, w = size
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h) if h > 1 else torch.zeros(1)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w) if w > 1 else torch.zeros(1)
    r2 = ys[:, None] ** 2 + xs[None, :] ** 2
    return r2 / (2 * radius ** 2)


@dataclasses.dataclass
class Encoding:
    """The posterior of a batch: the output of the ``infer`` stage.

    Attributes:
        z_mean: (N, D) posterior means of the content latents.
        z_std: (N, D) posterior standard deviations (zeros for the deterministic AE).
        pose: posterior mean pose (angle rad, shift half-widths, scale), or ``None``.
        pose_std: posterior standard deviations of the pose latents, or ``None``.
        parts: further named posterior tensors of a family (e.g. the rotation-bin
            probabilities of an equivariant encoder), empty by default.
    """

    z_mean: Tensor
    z_std: Tensor
    pose: Optional[Pose] = None
    pose_std: Optional[Pose] = None
    parts: dict = dataclasses.field(default_factory=dict)

    @property
    def z_logvar(self) -> Tensor:
        """(N, D) log-variance of the content posterior."""
        return 2 * torch.log(self.z_std.clamp_min(1e-12))

    def index(self, idx) -> "Encoding":
        """The sub-batch ``idx`` (slice, index tensor or mask)."""
        return Encoding(self.z_mean[idx], self.z_std[idx], None if self.pose is None else self.pose.index(idx),
                        None if self.pose_std is None else self.pose_std.index(idx),
                        {k: v[idx] for k, v in self.parts.items()})


Posterior = Encoding
"""The ``infer`` stage's output (the same class as :class:`Encoding`)."""

POSE_SOURCES = ("identity", "inferred", "searched")
"""How a family obtains the pose: fixed identity, inferred by the encoder, or searched per image."""


@dataclasses.dataclass
class LossParts:
    """Batch-mean loss terms in nats per image: ``loss = recon + beta * kl + sum(terms)``."""

    loss: Tensor
    recon: Tensor
    kl: Tensor
    terms: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ModelOutput:
    """Everything one forward pass computes.

    Attributes:
        loss: scalar training loss: recon + beta * kl + the sum of ``terms``.
        recon: scalar mean reconstruction term -E[log p(x|z)], nats/image.
        kl: scalar mean KL term, nats/image.
        elbo: (N,) per-image ELBO (beta = 1), nats; never includes ``terms``.
        z_mean, z_logvar: (N, D) content posterior.
        pose: the pose used to render (a :class:`Pose`, (N, 2, 3) matrices when a searched and
            an inferred pose were composed, or None for the identity).
        x_params: (N, C, H, W) decoder output (logits for Bernoulli likelihoods).
        terms: named extra training-loss terms, each a weighted scalar already in ``loss``
            (e.g. 'equivariance' of the rVAE, 'pose_head' of the AVAE); empty for most models.
    """

    loss: Tensor
    recon: Tensor
    kl: Tensor
    elbo: Tensor
    z_mean: Tensor
    z_logvar: Tensor
    pose: Optional[Pose]
    x_params: Tensor
    terms: dict = dataclasses.field(default_factory=dict)

    def with_terms(self, terms: Mapping[str, Tensor]) -> "ModelOutput":
        """This output with the named weighted scalar ``terms`` added to ``loss`` (in order) and kept
        (checked by :func:`check_terms`)."""
        self.loss, added = add_terms(self.loss, terms)
        self.terms.update(added)
        return self


#: Names of the loss's own parts in outputs and metrics (``train_kl``, ``val_loss``): no named term takes one.
RESERVED_TERMS = ("loss", "recon", "kl", "elbo")


def check_terms(terms: Mapping[str, Any]) -> None:
    """Refuse in one :class:`AffineVAEError` line named extra loss ``terms`` that would be lost or
    misread: a name that is not a non-empty string or is one of :data:`RESERVED_TERMS` (its metric
    would overwrite the loss's own part), or a value that is not a scalar (0-d) tensor (e.g. a
    per-image (N,) term whose mean was not taken)."""
    for name, value in terms.items():
        if not isinstance(name, str) or not name or name in RESERVED_TERMS:
            raise AffineVAEError(f"loss term {name!r}: a term needs a name of its own, not empty or one of the loss's "
                                 f"parts ({', '.join(RESERVED_TERMS)})")
        if not isinstance(value, Tensor) or value.dim() != 0:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise AffineVAEError(f"loss term {name!r} must be a scalar tensor (the batch's weighted mean), got {shape}")


def add_terms(loss: Tensor, terms: Optional[Mapping[str, Any]]) -> tuple[Tensor, dict]:
    """``(loss + the named terms, in order; the terms)``: ``terms`` maps names to weighted scalar tensors or to
    zero-argument callables that compute them (called here, after the likelihood and KL), checked by
    :func:`check_terms`; ``loss`` a scalar tensor (nats per image)."""
    resolved = {name: value() if callable(value) else value for name, value in (terms or {}).items()}
    check_terms(resolved)
    for value in resolved.values():
        loss = loss + value
    return loss, resolved


class LatentModel(nn.Module):
    """Base of every model family. Subclasses set ``config_class`` and register with ``MODELS``.

    Args:
        config: the family's config (or None: built from ``options``).
        networks: injected networks by name (``encoder``, ``decoder``; the AVAE: ``vae``),
            used instead of building them from the config (their shapes are the caller's business).
        **options: config fields (when ``config`` is None) or changes to ``config``.

    The public stages (see the module docstring) are ``find_pose``, ``canonicalise``, ``infer``,
    ``draw``, ``generate``, ``render`` and ``score``; :meth:`forward` runs them in that order through
    :meth:`run_stages`, :meth:`infer_for_loss`, :meth:`decode_and_score` and :meth:`pose_terms`.
    A subclass registered with ``MODELS`` takes the registered name as its ``family``.
    """

    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    family: ClassVar[str] = "base"
    conditional: ClassVar[bool] = False
    semi_supervised: ClassVar[bool] = False
    """Trained with partly known labels or targets (the ss* families), which they take as ``y``."""
    variational: ClassVar[bool] = True
    pose_source: ClassVar[str] = "identity"
    render_padding: ClassVar[str] = "zeros"
    """How :meth:`render` fills pixels brought in from outside a canonical image ('zeros' or 'border')."""
    render_mode: ClassVar[str] = "bilinear"
    """The interpolation of :meth:`render`'s warp ('bilinear' or 'bicubic'; an AVAE renders its inner model
    with its own, :meth:`rendering`)."""
    kl_factor: float = 1.0
    """Factor in [0, 1] on every KL weight of the training loss, set per step by the trainer's KL
    warm-up (:meth:`set_kl_factor`); runtime state, never saved. 1: the config's weights."""
    _search_pass: bool = False  # inside search_passes(): runtime state, never saved

    def __init__(self, config: Optional[ModelConfig] = None, *, networks: Optional[Mapping[str, nn.Module]] = None,
                 **options: Any) -> None:
        super().__init__()
        if config is None:
            config = self.config_class.from_dict(options, what=f"model '{self.family}'")
        elif options:
            config = config.replace(**options)
        if not isinstance(config, self.config_class):
            raise AffineVAEError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        given = self.check_networks(networks)
        # the networks the caller built (an AVAE's inner model is described by its config instead)
        self._injected = tuple(sorted(k for k, v in given.items() if not isinstance(v, LatentModel)))
        self.build_observation()
        self.build(**given)
        self.install_observation()

    def check_networks(self, networks: Optional[Mapping[str, nn.Module]]) -> dict[str, nn.Module]:
        """``networks`` as a dict, each name one that :meth:`build` takes and each value a
        ``torch.nn.Module`` (a one-line :class:`AffineVAEError` otherwise)."""
        given = dict(networks or {})
        params = inspect.signature(self.build).parameters.values()
        takes = [q.name for q in params if q.kind in (q.POSITIONAL_OR_KEYWORD, q.KEYWORD_ONLY)]
        open_ended = any(q.kind == q.VAR_KEYWORD for q in params)
        stray = None if open_ended else next((k for k in given if k not in takes), None)
        if stray is not None:
            raise AffineVAEError(f"networks: model '{self.family}' builds {', '.join(takes) or 'none'}, not {stray!r}")
        bad = next((k for k, v in given.items() if not isinstance(v, nn.Module)), None)
        if bad is not None:
            raise AffineVAEError(f"networks[{bad!r}] must be a torch.nn.Module, got {type(given[bad]).__name__}")
        return given

    @property
    def injected_networks(self) -> tuple[str, ...]:
        """Names of the networks given to the constructor (``networks=``) instead of built from the
        config, sorted; () for a model built from its config alone. ``model.json`` records them, and
        :func:`affinevae.load` needs the same networks again to load such a model."""
        return self._injected

    # ------------------------------------------------------------------ construction
    @property
    def cond_dim(self) -> int:
        """Width of the one-hot class vector fed to encoder and decoder (0 if unconditional)."""
        return self.config.num_classes if self.conditional else 0

    def encoder_out_dim(self) -> int:
        """Number of encoder outputs (means and log-variances of all latents)."""
        return 2 * self.config.latent_dim

    def build_observation(self) -> None:
        """The likelihood, its pixel sigma (a parameter or buffer ``log_sigma``) and the
        ``data_initialised`` flag (1 once :meth:`init_from_data` ran; saved with the weights)."""
        cfg = self.config
        self.likelihood = LIKELIHOODS.get(cfg.likelihood)()
        log_sigma = torch.tensor(math.log(cfg.sigma))
        if cfg.learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)
        self.register_buffer("data_initialised", torch.zeros((), dtype=torch.int64))
        # (H, W) log of the pixel-sigma window (config-derived: not saved with the weights)
        self.register_buffer("sigma_window", pixel_sigma_window(cfg.image_shape[1:], cfg.sigma_radius), persistent=False)
        # the low-pass filter of ModelConfig.lowpass (its kernel is config-derived: not saved with the weights)
        self.lowpass_filter = GaussianLowpass(cfg.lowpass) if getattr(cfg, "lowpass", 0) > 0 else None
        signal = is_signal_shape(cfg.image_shape)  # 1-D signals are filtered along their length only
        self.lowpass_contrast = (1.0 / noise_gain(cfg.lowpass, dims=1 if signal else 2)
                                 if self.lowpass_filter is not None else 1.0)

    def install_observation(self) -> None:
        """With ``lowpass`` > 0: the encoder receives its first argument, (N, C, H, W) images, through
        :meth:`observe` (a forward pre-hook: every pass that reads images sees them filtered once,
        whichever method calls the encoder; a joint model's classifier views are observed where they
        are made). Called once by ``__init__`` after :meth:`build`."""
        if self.lowpass_filter is not None and isinstance(getattr(self, "encoder", None), nn.Module):
            self.encoder.register_forward_pre_hook(self._observe_first)

    def _observe_first(self, module: nn.Module, args: tuple) -> tuple:
        return (self.observe(args[0]), *args[1:])

    def unobserve(self, x: Tensor) -> Tensor:
        """The contrast scaling of :meth:`observe` undone on (N, C, H, W) images in the observed space
        (the decoder's mean images): ``m + (x - m) * noise_gain(lowpass)`` around each image's mean ``m``,
        so that :meth:`decode`, :meth:`reconstruct` and :meth:`sample` give images in the data's units
        (low-passed: the model describes the filtered images). ``x`` itself when ``lowpass`` is 0."""
        if self.lowpass_filter is None:
            return x
        mean = x.mean((-2, -1), keepdim=True)
        return mean + (x - mean) / self.lowpass_contrast

    def observe(self, x: Tensor) -> Tensor:
        """The images as the model sees them: (N, C, H, W) ``x`` low-passed by a Gaussian of
        ``config.lowpass`` pixels (:class:`~affinevae.nn.lowpass.GaussianLowpass`), its contrast around
        each image's (and channel's) mean scaled by ``1 / noise_gain(lowpass)`` (5.3 at 1.5 px) so that
        white pixel noise keeps its level while objects larger than the filter stand out that much more;
        ``x`` itself when ``lowpass`` is 0. Linear in ``x``. What the encoder reads and what the
        likelihood scores (a Gaussian ``sigma`` stays the raw pixel noise)."""
        if self.lowpass_filter is None:
            return x
        if not (isinstance(x, Tensor) and x.dim() == 4):  # a caller's array or (N, H, W): checked as any input
            x = as_images(x, image_shape=self.config.image_shape)[0].to(self.device)
        with torch.autocast(x.device.type, enabled=False):  # the likelihood's target stays float32 under bf16
            x = x.float()
            mean = x.mean((-2, -1), keepdim=True)
            return mean + (self.lowpass_filter(x) - mean) * self.lowpass_contrast

    @torch.no_grad()
    def observe_cpu(self, x: Tensor, batch_size: int = 1024) -> Tensor:
        """:meth:`observe` of (N, C, H, W) CPU images (a training set), in batches on the model's device;
        returns CPU float32 images (``x`` itself when ``lowpass`` is 0). For the data-driven starts
        (the pose anchor's synchronisation, the joint model's k-means), which read the images as the
        networks will."""
        if self.lowpass_filter is None:
            return x
        return torch.cat([self.observe(x[i:i + batch_size].to(self.device, torch.float32)).cpu()
                          for i in range(0, len(x), batch_size)]) if len(x) else x

    def pixel_log_sigma(self) -> Tensor:
        """Natural log of the Gaussian pixel standard deviation: a scalar, or (H, W) with
        ``sigma_radius`` (``log_sigma`` plus the window); what the likelihood is scored with."""
        return self.log_sigma + self.sigma_window if self.sigma_window.ndim else self.log_sigma

    def build(self, encoder: Optional[nn.Module] = None, decoder: Optional[nn.Module] = None) -> None:
        """Create ``self.encoder`` and ``self.decoder`` from the config (or take the given ones)."""
        cfg = self.config
        check(encoder is not None or getattr(ENCODERS.get(cfg.encoder), "flat_output", True),
              f"encoder '{cfg.encoder}' is for the rvae/crvae in rotation_mode 'full'; model '{self.family}' takes 'mlp' or 'conv'")
        self.encoder = encoder if encoder is not None else ENCODERS.get(cfg.encoder)(
            cfg.image_shape, self.encoder_out_dim(), hidden=cfg.hidden, act=cfg.activation, cond_dim=self.cond_dim,
            channels=cfg.channels, norm=cfg.norm)
        self.decoder = decoder if decoder is not None else DECODERS.get(cfg.decoder)(
            cfg.latent_dim + self.cond_dim, cfg.image_shape, hidden=tuple(reversed(cfg.hidden)), act=cfg.activation,
            channels=tuple(reversed(cfg.channels)), norm=cfg.norm)
        if encoder is None:
            self.start_flow_near_identity()

    @property
    def device(self) -> torch.device:
        """Device of the model parameters."""
        return next(self.parameters()).device

    # ------------------------------------------------------------------ input checks
    @property
    def takes_labels(self) -> bool:
        """Whether the public methods (:meth:`encode`, :meth:`elbo`, :meth:`loss`,
        :meth:`reconstruct`, :meth:`decode`, :meth:`sample`) take labels ``y``: the
        class-conditional families (which need them) and the semi-supervised ones (partly known
        labels or targets). The joint models discover their classes and take none here (their
        ``decode``/``sample`` take the class to render)."""
        return bool(self.conditional or self.semi_supervised)

    @property
    def renders_classes(self) -> bool:
        """Whether :meth:`decode` and :meth:`sample` take a class ``y`` to render: the models that
        take labels (:attr:`takes_labels`) and the joint ones (``discrete_classes``: the classes
        they discover), also inside an AVAE."""
        return bool(self.takes_labels or getattr(self, "discrete_classes", False))

    @classmethod
    def labelled_as(cls, options: Mapping[str, Any]) -> type:
        """The family class whose label rules (``conditional``, ``semi_supervised``,
        ``discrete_classes``) a model of this class built with ``options`` follows, before it is
        built (e.g. to ask for ``--labels``): the class itself here; an AVAE its inner family's."""
        return cls

    @property
    def learns_angle(self) -> bool:
        """Whether :meth:`encode` gives a rotation angle (radians): a pose with an angle, inferred
        (``invariances`` holding 'rotation') or searched (an AVAE's transform with an angle)."""
        return "rotation" in tuple(getattr(self.config, "invariances", ()) or ())

    @property
    def full_circle(self) -> bool:
        """Whether the model infers its angle over the whole circle with the group-equivariant encoder
        (``rotation_mode='full'``, encoder 'equivariant'): turning an image by a group element turns
        its inferred angle alike and leaves its content, exactly; other turns to within the offset's
        accuracy and the interpolation. A pose search around it has little to add (the MLP encoder
        in full mode is not counted: a search checks its angles)."""
        cfg = self.config
        return (self.learns_angle and getattr(cfg, "rotation_mode", None) == "full"
                and getattr(cfg, "encoder", None) == "equivariant")

    @property
    def family_label(self) -> str:
        """The family as messages name it: ``family`` (an AVAE adds its inner model's)."""
        return self.family

    @property
    def mixed_classes(self) -> int:
        """K for a model with discovered classes (``discrete_classes``: the joint and
        semi-supervised classification families, also inside an AVAE), else 0: :meth:`decode`
        without a class averages over the K classes and :meth:`sample` draws one uniformly."""
        return int(self.config.num_classes) if getattr(self, "discrete_classes", False) else 0

    def refuse_labels(self, y: Any, where: str, render: bool = False) -> None:
        """Raise :class:`AffineVAEError` (one line) when labels ``y`` are given to ``where`` (a
        public method's name) of a model that takes none (:attr:`takes_labels` False), instead of
        ignoring them. ``render``: ``where`` decodes or samples, where the class to render is
        taken by every model that :attr:`renders_classes`. The trainer's ``model(x, y)`` keeps
        passing the data's labels (pose records)."""
        if y is not None and not (self.renders_classes if render else self.takes_labels):
            takers = ("cvae/crvae, the semi-supervised and the joint models take a class to render" if render
                      else "cvae/crvae and the semi-supervised models take labels")
            raise AffineVAEError(f"{where}: model '{self.family}' takes no class labels, but y was given "
                                 f"(leave y out; only {takers})")

    def check_input(self, x: Tensor, y: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """Validate and convert inputs (:func:`affinevae.data.as_images`): x -> (N, C, H, W) float32 on
        the model device, y -> (N,) int64 class labels for conditional models (None otherwise).

        Accepts (N, H, W) for single-channel models. Raises :class:`AffineVAEError` (one line).
        """
        if self.conditional and y is None:
            raise AffineVAEError(f"model '{self.family_label}' is class-conditional: labels are required "
                                 "(--labels on the command line)")
        x, y = as_images(x, y if self.conditional else None, image_shape=self.config.image_shape,
                         num_classes=self.config.num_classes if self.conditional else None)
        self.check_pixels(x)
        return x.to(self.device), None if y is None else y.to(self.device)

    def check_pixels(self, x: Tensor, where: str = "images") -> None:
        """Refuse (one line) (N, C, H, W) pixel values outside the likelihood's support: the
        Bernoulli kinds need [0, 1] (uint8 pixels 0..255 would give a meaningless ELBO)."""
        support = self.likelihood.support
        if support is None or x.numel() == 0:
            return
        lo, hi = (float(v) for v in torch.aminmax(x.detach()))
        if lo < support[0] - 1e-6 or hi > support[1] + 1e-6:
            if is_signal_shape(x.shape[1:]):  # 1-D signals (C, 1, L): spectra are real-valued
                raise AffineVAEError(f"{where}: signal values span [{lo:g}, {hi:g}], but the {self.likelihood.name} "
                                     f"likelihood needs them in [{support[0]:g}, {support[1]:g}]: use a gaussian "
                                     "likelihood (--likelihood gaussian), as the spectra defaults of vae/rvae/ae do")
            raise AffineVAEError(f"{where}: pixel values span [{lo:g}, {hi:g}], but the {self.likelihood.name} "
                                 f"likelihood needs them in [{support[0]:g}, {support[1]:g}]: scale them (uint8: "
                                 "divide by 255, as affinevae.data's loaders do) or use a gaussian likelihood")

    def onehot(self, y: Optional[Tensor]) -> Optional[Tensor]:
        """(N,) class indices -> (N, num_classes) one-hot floats, or None if unconditional."""
        if not self.conditional or y is None:
            return None
        return F.one_hot(y.long(), self.config.num_classes).float()

    # ------------------------------------------------------------------ stages
    def find_pose(self, x: Tensor, y: Optional[Tensor], index: Optional[Tensor] = None,
                  labels: Optional[Tensor] = None) -> Any:
        """Pose source 'searched': the pose of each of the checked (N, C, H, W) images ``x`` found
        before inference, in the family's own form (:meth:`pose_of` turns it into a pose); None:
        the identity, for every family that does not search. ``index`` (N,): the images'
        positions in the training data; ``labels``: their labels as given (kept by pose records
        even for unconditional models)."""
        return None

    def pose_of(self, found: Any) -> PoseLike:
        """The pose (:class:`Pose`, (N, 2, 3) matrices or None) of what :meth:`find_pose` returned."""
        return found

    def inference_pose(self, x: Tensor, y: Optional[Tensor]) -> PoseLike:
        """The searched pose used by :meth:`encode` (reproducible; None for families that do not search).

        ``x`` (N, C, H, W) and ``y`` ((N,) labels or None) already checked. The AVAE returns its
        :class:`~affinevae.pose.search.SearchResult` (``params`` (N, P); :meth:`pose_of` makes the pose)."""
        return None

    def canonicalise(self, x: Tensor, pose: PoseLike) -> Tensor:
        """(N, C, H, W) images with ``pose`` undone (:func:`affinevae.nn.affine.canonicalise`); ``x`` itself for None."""
        return canonicalise(x, pose)

    def posterior(self, h: Tensor) -> Encoding:
        """Encoder output (N, encoder_out_dim) -> :class:`Encoding` (families with pose latents override)."""
        mean, logvar = h.chunk(2, dim=1)
        return Encoding(mean, torch.exp(0.5 * logvar.clamp(-30, 20)))

    def infer(self, x: Tensor, y: Optional[Tensor] = None) -> Encoding:
        """Posterior of checked (N, C, H, W) images ``x`` (labels ``y`` (N,) if conditional)."""
        return self.posterior(self.encoder(x, self.onehot(y)))

    def infer_for_loss(self, x: Tensor, y: Optional[Tensor]) -> tuple[Encoding, dict]:
        """:meth:`infer` and the named extra loss terms of this stage (scalars, weighted; none by
        default; the rVAE's 'equivariance' in training).

        ``x`` (N, C, H, W) checked (canonicalised) images; ``y`` (N,) labels or None (the
        semi-supervised families: -1 for unknown, or (N, M) targets). Returns ``(post, terms)``:
        the :class:`Encoding` (``z_mean``/``z_std`` (N, D)) and ``{name: scalar tensor, or a
        zero-argument callable that computes it}``."""
        return self.infer(x, y), {}

    def draw(self, post: Encoding, sample: bool = True) -> tuple[Tensor, Optional[Pose]]:
        """Content latents (N, D) and inferred pose: a reparameterised sample, or the means when
        ``sample`` is False (or the model is not variational), pushed through the image's flow where
        the posterior has one (:meth:`draw_content`). The pose is None unless inferred."""
        return self.draw_content(post, sample and self.variational), post.pose

    # ------------------------------------------------------------------ the content posterior's flow
    def flow_outputs(self) -> int:
        """Encoder outputs per image for the planar flow on the content posterior: ``K * (2 D + 1)``
        for a config's ``flow_steps`` K > 0 (families that have one: vae, cvae, rvae, crvae), else 0.
        They are the encoder's last outputs (its invariant ones for the equivariant encoder)."""
        return flow_parameter_count(getattr(self.config, "flow_steps", 0), self.config.latent_dim)

    def start_flow_near_identity(self) -> None:
        """Scale the rows and biases of the built encoder's last linear layer that give the flow's
        parameters by 0.01, so the flow starts near the identity (a random flow at the start slowed the
        posterior's training; exactly zero is a saddle where no flow parameter gets a gradient). For an
        encoder built from the config; nothing without a flow."""
        k = self.flow_outputs()
        if not k:  # (every model without a flow: nothing to look for)
            return
        out = self.encoder_out_dim()
        linear = [m for m in self.encoder.modules() if isinstance(m, nn.Linear) and m.out_features == out]
        if linear:
            with torch.no_grad():
                linear[-1].weight[out - k:] *= 0.01
                linear[-1].bias[out - k:] *= 0.01

    def with_flow(self, post: Encoding, raw: Tensor) -> Encoding:
        """``post`` with its content flow: ``raw`` (N, :meth:`flow_outputs`) encoder outputs -> the K
        planar maps of each image ('flow_u', 'flow_w' (N, K, D) and 'flow_b' (N, K) in ``post.parts``);
        ``z_mean`` (N, D) becomes the base mean pushed through them (the latent the decoder reads for the
        posterior's centre: decoding it reconstructs), kept as 'base_mean'; ``z_std`` stays the base
        Gaussian's (the flowed posterior is not Gaussian). ``post`` itself is returned, changed."""
        cfg = self.config
        u, w, b = split_flow_parameters(raw.float(), cfg.flow_steps, cfg.latent_dim)
        base = post.z_mean
        post.z_mean = planar_flow(base, u, w, b)[0]
        post.parts.update(base_mean=base, flow_u=u, flow_w=w, flow_b=b)
        return post

    def draw_content(self, post: Encoding, sample: bool = True) -> Tensor:
        """The content latents (N, D) the decoder sees: a reparameterised sample of the Gaussian (its
        mean when ``sample`` is False); with a flow the base sample pushed through the image's maps, the
        draw's KL estimate (:func:`affinevae.nn.flows.flow_kl`, (N,) nats) kept in
        ``post.parts['flow_kl']`` for :meth:`content_kl` to score and the draw in 'flow_z'."""
        if "flow_u" not in post.parts:
            return post.z_mean + post.z_std * torch.randn_like(post.z_std) if sample else post.z_mean
        mean, std = post.parts["base_mean"], post.z_std
        z0 = mean + std * torch.randn_like(std) if sample else mean
        zk, logdet = planar_flow(z0, post.parts["flow_u"], post.parts["flow_w"], post.parts["flow_b"])
        post.parts["flow_kl"] = flow_kl(z0, mean, std, zk, logdet)
        post.parts["flow_z"] = zk
        return zk

    def content_kl(self, post: Encoding) -> Tensor:
        """(N,) KL of the content posterior from the N(0, I) prior, nats: exact for the Gaussian; with a
        flow the estimate on the pass's draw (:meth:`draw_content`), or on the base mean when nothing
        was drawn."""
        if "flow_u" not in post.parts:
            return gaussian_kl(post.z_mean, post.z_logvar)
        if "flow_kl" not in post.parts:
            self.draw_content(post, sample=False)
        return post.parts["flow_kl"]

    def check_latest_draw(self, post: Encoding, z: Tensor) -> None:
        """With a flow, ``z`` (N, D) must be the latest draw from ``post`` (its KL estimate is that
        draw's): a one-line :class:`AffineVAEError` otherwise (draw once per :class:`Encoding` when
        composing the stages by hand, or infer again)."""
        drawn = post.parts.get("flow_z")
        if "flow_u" in post.parts and drawn is not None and drawn is not z:
            raise AffineVAEError("decode_and_score: z is not the latest draw from this posterior, whose KL "
                                 "estimate is that draw's; draw once per Encoding (or infer again)")

    def generate(self, z: Tensor, y: Optional[Tensor] = None) -> Union[Tensor, Canonical]:
        """The canonical object of latents ``z`` (N, D) (class ``y``): likelihood parameters
        (N, C, H, W), or a :class:`~affinevae.nn.affine.Canonical` that renders itself at any pose."""
        cond = self.onehot(y)
        return self.decoder(z if cond is None else torch.cat([z, cond.to(z.dtype)], 1))

    def render(self, canonical: Union[Tensor, Canonical], pose: PoseLike) -> Tensor:
        """Likelihood parameters (N, C, H, W) of ``canonical`` observed in ``pose`` (the one warp,
        :func:`affinevae.nn.affine.render`, with this family's padding)."""
        return render(canonical, pose, padding=self.render_padding, mode=self.render_mode)

    @contextlib.contextmanager
    def rendering(self, padding: str, mode: str):
        """Context manager: inside it :meth:`render` warps with ``padding`` ('zeros' or 'border') and
        interpolation ``mode`` ('bilinear' or 'bicubic'), the family's own again on leaving (an AVAE
        runs its inner model's pass rendering as the AVAE does). For the families that render with
        this class's :meth:`render` (every family an AVAE wraps); the AVAE's own renders with its config's."""
        before = {k: self.__dict__[k] for k in ("render_padding", "render_mode") if k in self.__dict__}
        self.render_padding, self.render_mode = padding, mode
        try:
            yield self
        finally:
            for k in ("render_padding", "render_mode"):
                if k in before:
                    setattr(self, k, before[k])
                else:
                    delattr(self, k)

    def kl(self, post: Encoding) -> Tensor:
        """(N,) KL divergence of the posterior from the prior, nats (:meth:`content_kl`)."""
        return self.content_kl(post)

    def pose_terms(self, x: Tensor, found: Any) -> dict:
        """Named extra loss terms of the pose stage, given what :meth:`find_pose` found (weighted
        scalars; the AVAE's 'pose_head'); added by :meth:`forward` after :meth:`run_stages`.

        ``x`` (N, C, H, W) checked images. Returns ``{name: scalar tensor}``; empty by default."""
        return {}

    def score(self, x: Tensor, params: Tensor, post: Encoding, pose: PoseLike = None,
              terms: Optional[Mapping[str, Tensor]] = None) -> ModelOutput:
        """Combine the likelihood of ``x`` under ``params`` (N, C, H, W) with the KL of ``post``;
        ``terms`` (named weighted scalars, or zero-argument callables that compute them after the
        likelihood and KL) are added to ``loss`` in order and kept by name."""
        recon_i = -self.likelihood.log_prob(params.float(), self.observe(x), self.pixel_log_sigma())
        kl_i = self.kl(post) if self.variational else torch.zeros_like(recon_i)
        recon, kl = recon_i.mean(), kl_i.mean()
        loss, terms = add_terms(recon + self.loss_beta() * kl, terms)
        return ModelOutput(loss=loss, recon=recon, kl=kl, elbo=-(recon_i + kl_i), z_mean=post.z_mean,
                           z_logvar=post.z_logvar, pose=pose, x_params=params, terms=terms)

    def run_stages(self, x: Tensor, y: Optional[Tensor], found: PoseLike = None, sample: bool = True,
                   canon: Optional[Tensor] = None) -> ModelOutput:
        """The pass after the pose source: canonicalise -> infer -> draw -> generate -> render -> score.

        ``x`` (N, C, H, W) and ``y`` already checked; ``found``: the searched pose (None: identity);
        ``canon``: ``canonicalise(x, found)`` when already computed.
        """
        found_pose = self.pose_of(found)
        if canon is None:
            canon = self.canonicalise(x, found_pose)
        post, terms = self.infer_for_loss(canon, y)
        z, inferred = self.draw(post, sample)
        pose = compose_poses(found_pose, inferred, x.shape[0], x.device)
        return self.decode_and_score(x, y, z, pose, post, terms, sample)

    def decode_and_score(self, x: Tensor, y: Optional[Tensor], z: Tensor, pose, post: Encoding, terms: dict,
                         sample: bool) -> ModelOutput:
        """The tail of :meth:`run_stages`: generate -> render at ``pose`` -> score.

        ``z`` (N, D) drawn content, ``pose`` the composed pose (a :class:`Pose`, (N, 2, 3) matrices
        or None), ``post`` and ``terms`` from :meth:`infer_for_loss`, ``sample`` as in
        :meth:`run_stages`. Families that decode differently (a class expectation, drawn targets)
        override this, not the whole pass. With a content flow ``z`` must be ``post``'s latest draw
        (:meth:`check_latest_draw`).
        """
        self.check_latest_draw(post, z)
        params = self.render(self.generate(z, y), pose)
        return self.score(x, params, post, pose, terms)

    def forward(self, x: Tensor, y: Optional[Tensor] = None, sample: bool = True,
                index: Optional[Tensor] = None) -> ModelOutput:
        """Full pass: check the input, find the pose (searched families), then :meth:`run_stages`.

        ``y`` (N,): labels; a model that takes none (:attr:`takes_labels`) ignores them here, as
        the trainer passes the data's labels to every model (the AVAE keeps them in its pose
        record); the public methods refuse them. ``sample`` False takes the posterior means.
        ``index`` (N,) are the images' positions in the data given to :func:`affinevae.fit` (before
        any validation split); the trainer passes them so that models which keep per-image state
        (the AVAE's found poses) can use them.
        """
        labels = y
        x, y = self.check_input(x, y)
        found = self.find_pose(x, y, index, labels)
        out = self.run_stages(x, y, found, sample)
        return out.with_terms(self.pose_terms(x, found))

    # ------------------------------------------------------------------ public API
    def encode(self, x: Tensor, y: Optional[Tensor] = None) -> Encoding:
        """Posterior of (N, C, H, W) images: content ``z_mean``/``z_std`` (N, D) and ``pose``
        (the searched pose for the AVAE, which replaces any pose its inner model infers).
        ``y`` (N,): labels, for the models that take them (:attr:`takes_labels`; required by the
        class-conditional ones); refused (one line) by the others."""
        self.refuse_labels(y, "encode")
        x, y = self.check_input(x, y)
        found = self.pose_of(self.inference_pose(x, y))
        post = self.infer(self.canonicalise(x, found), y)
        if found is not None:
            post.pose = found
        return post

    def decode_params(self, z: Tensor, y: Optional[Tensor] = None, pose: Optional[Pose] = None) -> Tensor:
        """Likelihood parameters (N, C, H, W) of content latents ``z`` (N, D) in ``pose``."""
        z = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise AffineVAEError(f"latents must have shape (N, {self.config.latent_dim}), got {tuple(z.shape)}")
        if not bool(torch.isfinite(z).all()):
            raise AffineVAEError(f"decode: {int((~torch.isfinite(z)).any(1).sum())} of {len(z)} latent rows hold NaN "
                                 "or infinite values")
        if pose is not None and not isinstance(pose, (Pose, Tensor)):
            raise AffineVAEError(f"decode: pose must be a Pose or (N, 2, 3) matrices, got {type(pose).__name__} "
                                 "(angle, shift and scale are keyword arguments: decode(z, angle=...))")
        self.refuse_labels(y, "decode", render=True)
        if self.conditional:
            if y is None:
                raise AffineVAEError(f"model '{self.family}' is class-conditional: decoding needs a class")
            y = class_indices(y, z.shape[0], self.config.num_classes, "decode").to(self.device)
        return self.render(self.generate(z, y), pose)

    def decode(self, z: Tensor, y: Optional[Tensor] = None, pose: Optional[Pose] = None, *,
               angle: Optional[Tensor] = None, shift: Optional[Tensor] = None,
               scale: Optional[Tensor] = None) -> Tensor:
        """Mean image (N, C, H, W) of content latents ``z`` (N, D).

        The pose is ``pose`` or built from ``angle`` (N,) radians, ``shift`` (N, 2) half-widths
        and ``scale`` (N,); default canonical (identity). A model with discovered classes
        (:attr:`mixed_classes`) given no class ``y`` returns the mean image over its K classes
        (the uniform class prior), also inside an AVAE.
        """
        k = self.mixed_classes
        if y is None and k:
            n = torch.as_tensor(z).shape[0]
            return torch.stack([self.decode(z, torch.full((n,), c, device=self.device), pose, angle=angle, shift=shift,
                                            scale=scale) for c in range(k)], 1).mean(1)
        if pose is None and any(v is not None for v in (angle, shift, scale)):
            n = z.shape[0]

            def bt(v, shape, name):
                if v is None:
                    return None
                try:
                    t = torch.as_tensor(v, dtype=torch.float32, device=self.device)
                except (TypeError, ValueError, RuntimeError):
                    raise AffineVAEError(f"decode: {name} must be numbers, got {v!r}") from None
                if tuple(t.shape) not in ((), shape[1:], shape):
                    want = " or ".join(repr(s) for s in dict.fromkeys(((), shape[1:], shape)))
                    raise AffineVAEError(f"decode: {name} must have shape {want} for {n} latents, got {tuple(t.shape)}")
                if not bool(torch.isfinite(t).all()) or (name == "scale" and not bool((t > 0).all())):
                    raise AffineVAEError(f"decode: {name} must be finite" + (" and > 0" if name == "scale" else "")
                                         + f", got {v!r}")
                return t.expand(*shape).clone()

            pose = Pose(angle=bt(angle, (n,), "angle"), shift=bt(shift, (n, 2), "shift"), scale=bt(scale, (n,), "scale"))
            if pose.angle is not None:
                check_full_turn(pose.angle.detach().cpu().numpy(), "decode", "angle")
        return self.unobserve(self.likelihood.mean(self.decode_params(z, y, pose)))

    def loss(self, x: Tensor, y: Optional[Tensor] = None) -> LossParts:
        """Batch-mean training loss and its parts (nats/image) of (N, C, H, W) images ``x``
        (labels ``y`` (N,) only for the models that take them, :attr:`takes_labels`)."""
        self.refuse_labels(y, "loss")
        out = self(x, y)
        return LossParts(out.loss, out.recon, out.kl, out.terms)

    def elbo(self, x: Tensor, y: Optional[Tensor] = None, n_samples: int = 1,
             generator: Optional[torch.Generator] = None) -> Tensor:
        """(N,) per-image ELBO in nats of (N, C, H, W) images ``x`` (Monte Carlo over ``n_samples``
        posterior samples; labels ``y`` (N,) only for the models that take them, :attr:`takes_labels`).

        ``generator``: a :class:`torch.Generator` that fixes the posterior samples (and any
        other random draw of the pass): one seed is drawn from it and the pass runs on a forked,
        seeded torch RNG (the CPU generator and, on a GPU, the model's device's), so torch's global
        generators are left as they were (those of other GPUs are not touched) and equally seeded
        generators give identical estimates. None: the global generator is used (and advanced).

        Computed in eval mode whatever the model's mode (left as it was): the exact class expectation
        of the joint models, the AVAE's test-time pose search, no dropout, and no training step
        counted (a fresh model is in train mode: a look at its ELBO before :func:`affinevae.fit` changes
        nothing of the fit). Gradients flow as the caller's grad mode says.
        """
        self.refuse_labels(y, "elbo")
        n_samples = check_int("elbo: n_samples", n_samples, 1)
        check_generator(generator, "elbo")
        fork = contextlib.nullcontext()
        if generator is not None:
            fork = seeded(int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)), self.device)
        with fork, module_mode(self):
            total = 0.0
            for _ in range(n_samples):
                total = total + self(x, y).elbo
        return total / n_samples

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """Mean reconstruction (N, C, H, W) of (N, C, H, W) images ``x`` from the posterior mean
        (labels ``y`` (N,) only for the models that take them, :attr:`takes_labels`)."""
        self.refuse_labels(y, "reconstruct")
        out = self(x, y, sample=False)
        return self.unobserve(self.likelihood.mean(out.x_params))

    @staticmethod
    def check_draw(n: Any, generator: Any, where: str = "sample") -> int:
        """``n`` (an integer >= 1: images to draw) as an int, and ``generator`` a
        :class:`torch.Generator` or None; else one :class:`AffineVAEError` line starting ``where``."""
        n = check_int(f"{where}: n", n, 1)
        check_generator(generator, where)
        return n

    @torch.no_grad()
    def sample(self, n: int, y: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` images (n, C, H, W) decoded from the prior N(0, I) (class ``y`` if conditional;
        refused by a model that takes no labels)."""
        self.refuse_labels(y, "sample", render=True)
        n = self.check_draw(n, generator)
        z = torch.randn(n, self.config.latent_dim, generator=generator).to(self.device)
        if self.conditional and y is None:
            raise AffineVAEError(f"model '{self.family}' is class-conditional: sampling needs a class")
        if y is None and self.mixed_classes:  # discovered classes: drawn from the uniform prior
            y = torch.randint(self.mixed_classes, (n,), generator=generator).to(self.device)
        return self.decode(z, y)

    @torch.no_grad()
    def init_from_data(self, x: Tensor) -> None:
        """Start the decoder at the mean image of the (N, C, H, W) training images ``x``.

        The decoder's output bias takes the likelihood parameters whose mean is that image
        (logits for the Bernoulli kinds), so training starts from the average instead of a
        grey p = 0.5 image; the early "decode the average, ignore z" plateau is then left in
        a few steps. :func:`affinevae.fit` calls it before the first epoch of a fresh run; it
        does nothing on a model that was initialised (or trained) before.
        """
        init = getattr(self.decoder, "init_output", None)
        if init is None or len(x) == 0 or int(self.data_initialised):
            return
        mean = torch.as_tensor(x, dtype=torch.float32).mean(0).to(self.device)
        init(self.likelihood.params_for_mean(self.observe(mean[None])[0]))  # the filter is linear: the filtered mean
        self.data_initialised.fill_(1)

    def compile_targets(self) -> list[nn.Module]:
        """The modules where training spends its time, compiled by ``TrainConfig(compile=True)``."""
        return [self.encoder, self.decoder]

    def on_epoch_start(self, epoch: int, x: Tensor, y: Optional[Tensor], steps_done: int, seed: int) -> dict[str, Any]:
        """Trainer hook before epoch ``epoch`` (1-based, counted over the run, resumes included):
        ``x`` (N, C, H, W) the training images (CPU), ``y`` (N,) their labels or None,
        ``steps_done`` the optimiser steps the run took before this epoch, ``seed`` the run's
        seed. May change the model (a data-driven start, e.g. the joint model's k-means start of
        its classifier); the trainer then drops the optimiser's moments of every parameter the
        hook changed in place (they belong to the old values). Returns extra metrics for the
        epoch's record. Default: nothing."""
        return {}

    def fit_context(self, x: Tensor, y: Optional[Tensor], index: Tensor, seed: int, store=None):
        """Trainer hook around one :func:`affinevae.fit` call (resumed runs included): a context
        manager entered before the first epoch and left after the last (or on an error). ``x``
        (N, C, H, W) the training images (CPU), ``y`` their labels or None, ``index`` (N,) their
        positions in the data given to fit (the ``index`` that ``forward`` then receives), ``seed``
        the run's seed, ``store`` the run directory's :class:`~affinevae.io.TargetStore` (None
        without a run directory). Families that derive per-image training targets from the data
        (the rVAE's pose anchor) set them up here (read from ``store`` on a resume, saved to it
        otherwise, in the order of ``x``) and drop them on leaving. Default: nothing."""
        return contextlib.nullcontext()

    def on_epoch_end(self, epoch: int, run_dir: Optional[Path]) -> dict[str, Any]:
        """Trainer hook after each epoch; may write files to ``run_dir`` and return extra metrics."""
        return {}

    def set_kl_factor(self, factor: float) -> None:
        """Scale every KL weight of the training loss (``beta``, and the joint models' class KL
        weight) by ``factor`` in [0, 1], in this model and the models inside it (the AVAE's), until
        set again: the trainer's KL warm-up. Evaluation mode and the reported ELBO ignore it."""
        for m in self.modules():
            if isinstance(m, LatentModel):
                m.kl_factor = float(factor)

    @property
    def in_weight_step(self) -> bool:
        """Whether the pass being computed is a training weight step's: training mode with gradients
        enabled, outside a pose search's scoring passes (:meth:`search_passes`). The named training
        terms and step counters of a family follow it."""
        return self.training and torch.is_grad_enabled() and not self._search_pass

    @contextlib.contextmanager
    def search_passes(self):
        """Context manager: the passes inside score poses for a search (their gradient may move the
        pose, not the weights), so :attr:`in_weight_step` is False in this model and the models
        inside it; the previous state is restored on leaving."""
        models = [m for m in self.modules() if isinstance(m, LatentModel)]
        before = [m._search_pass for m in models]
        for m in models:
            m._search_pass = True
        try:
            yield self
        finally:
            for m, b in zip(models, before):
                m._search_pass = b

    def loss_kl_factor(self) -> float:
        """The factor on the KL weights of the loss being computed: :attr:`kl_factor` in training
        (with gradients), 1 otherwise, so a validation loss always has the full weights."""
        return self.kl_factor if self.training and torch.is_grad_enabled() else 1.0

    def loss_beta(self) -> float:
        """Weight of the KL term in the loss being computed: ``config.beta`` times
        :meth:`loss_kl_factor` (0 for a model without a KL)."""
        return self.config.beta * self.loss_kl_factor() if self.variational else 0.0

    def training_state(self) -> dict[str, Tensor]:
        """Training state that is not part of the saved model (e.g. the AVAE's per-image pose
        cache, sized by the data): name -> tensor. The trainer keeps it in each checkpoint so that
        a resumed run continues exactly. Default: none."""
        return {}

    def load_training_state(self, state: dict[str, Tensor]) -> None:
        """Restore what :meth:`training_state` returned (from a checkpoint). Default: nothing to restore."""

    # ------------------------------------------------------------------ persistence
    def describe(self) -> dict[str, Any]:
        """JSON-able description: model name, config and format version, and ``networks``: the names of
        the networks the caller gave (:attr:`injected_networks`), when any (the config does not build them)."""
        desc = {"model": self.family, "config": self.config.to_dict(), "format_version": FORMAT_VERSION}
        if self.injected_networks:
            desc["networks"] = list(self.injected_networks)
        return desc

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write ``model.json`` and ``model.safetensors`` into ``directory`` (atomically); returns it.

        Refused (one-line :class:`AffineVAEError`) where ``directory`` is a file, holds a training run
        (``train.json``: its model is the one its training wrote; ``train --resume`` and
        :meth:`affinevae.Run.model` rely on it), or already holds a saved model and ``overwrite`` is False.
        A data record there (``data.json``, the replaced model's: :meth:`affinevae.Run.copy_data_record`)
        is removed."""
        from ..io import DATA_JSON, MODEL_JSON, MODEL_WEIGHTS, TRAIN_JSON, save_model

        path = Path(directory)
        if path.exists() and not path.is_dir():
            raise AffineVAEError(f"{path}: a file, not a directory (save writes model.json and model.safetensors "
                                 "into a folder)")
        if (path / TRAIN_JSON).is_file():
            raise AffineVAEError(f"{path}: holds a training run, whose model is the one its training wrote; save "
                                 "this model into another directory")
        if not overwrite and any((path / name).exists() for name in (MODEL_JSON, MODEL_WEIGHTS)):
            raise AffineVAEError(f"{path}: already holds a saved model; pass overwrite=True to replace it")
        saved = save_model(self, path)
        (saved / DATA_JSON).unlink(missing_ok=True)
        return saved

    @classmethod
    def from_config_dict(cls, config: dict[str, Any], networks: Optional[Mapping[str, nn.Module]] = None
                         ) -> "LatentModel":
        """Build a fresh model from a saved config dict (unknown keys raise; fields the file predates take
        their former values, :attr:`~affinevae.config.Config.FORMER_DEFAULTS`); ``networks`` as
        :meth:`with_networks` takes them."""
        return cls.with_networks(cls.config_class.from_saved(config, what=f"model '{cls.family}'"), networks)

    @classmethod
    def with_networks(cls, config: ModelConfig, networks: Optional[Mapping[str, nn.Module]] = None) -> "LatentModel":
        """The model of ``config``, built with ``networks`` of the caller's own (encoder, decoder, ...) where
        given, for the families whose constructor takes them (a one-line :class:`AffineVAEError` for the
        others: the AVAE wraps a model built with them)."""
        if networks is None:
            return cls(config)
        if "networks" not in inspect.signature(cls.__init__).parameters:
            raise AffineVAEError(f"networks: model '{cls.family}' takes none (an AVAE wraps a model: build that model "
                                 "with its networks and wrap it, AVAE(model))")
        return cls(config, networks=networks)

    @classmethod
    def from_options(cls, options: dict[str, Any], networks: Optional[Mapping[str, nn.Module]] = None) -> "LatentModel":
        """Build from flat user options (CLI / :func:`build_model`); unknown options raise, and so does
        a config that breaks a rule for new models (:meth:`ModelConfig.check_new`); ``networks`` as
        :meth:`with_networks` takes them.
        """
        config = cls.config_class.from_dict(options, what=f"model '{cls.family}'")
        config.check_new()
        return cls.with_networks(config, networks)



def check_model(model: Any, where: str = "model") -> None:
    """Refuse in one :class:`AffineVAEError` line, ``"WHERE must be a trained affinevae model, got TYPE"``,
    anything but a :class:`LatentModel` (one of :func:`build_model`, ``affinevae.load``, an AVAE)."""
    if not isinstance(model, LatentModel):
        raise AffineVAEError(f"{where} must be a trained affinevae model, got {type(model).__name__}")


def planned_state(build, where: str, copies: float = 1.0) -> Optional[dict[str, tuple[int, ...]]]:
    """Build a model with ``build()`` on PyTorch's meta device (no memory is allocated), refuse it in
    one line when its parameters and buffers times ``copies`` (4 for training: weights, gradients
    and Adam's two moments) exceed the memory limit (:func:`affinevae.limits.check_allocation`),
    and return its state-dict shapes (name -> shape); None when the family cannot be built on the
    meta device (the real build then goes ahead unchecked). ``where`` starts the message.
    """
    try:
        with torch.device("meta"):
            planned = build()
        shapes = {k: tuple(int(d) for d in v.shape) for k, v in planned.state_dict().items()}
        nbytes = sum(v.numel() * v.element_size() for v in planned.state_dict().values())
    except AffineVAEError:
        raise
    except Exception:  # noqa: BLE001 - an op without a meta kernel: no estimate
        return None
    count = sum(math.prod(v) for v in shapes.values())
    check_allocation(nbytes * copies, f"a model of {count:,} parameters", where)
    return shapes


def check_generator(generator: Any, where: str) -> None:
    """Refuse (one :class:`AffineVAEError` line starting ``where``) a ``generator`` that is neither a
    :class:`torch.Generator` nor None."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise AffineVAEError(f"{where}: generator must be a torch.Generator or None, got {type(generator).__name__}")


def build_model(name: str, *, seed: Optional[int] = None, networks: Optional[Mapping[str, nn.Module]] = None,
                **options: Any) -> LatentModel:
    """Build a registered model by ``name`` ('ae', 'vae', 'cvae', ...) with validated options.

    Its size is checked on the meta device first (:func:`planned_state`, memory for training),
    so that a huge ``latent_dim`` or layer width is one line, not an allocation failure.
    Images under :data:`~affinevae.data.inputs.MIN_IMAGE_SIZE` pixels a side are refused (1-D
    signals, ``image_shape`` (C, 1, L), are not images); a model saved with such a shape still loads.
    ``seed`` (an integer >= 0) fixes the initial weights (drawn from a forked RNG: torch's global
    generator is left as it was); None draws them from torch's global generator, as
    ``torch.manual_seed`` set it. ``networks``: networks of the caller's own by name (``encoder``,
    ``decoder``, ...: :meth:`LatentModel.check_networks`), used instead of those the config builds (the size
    check then covers the config's part only); ``model.json`` records their names and
    :func:`affinevae.load` takes them again.
    """
    cls = MODELS.get(name)
    if seed is not None:
        check_seed(seed)
    shape = options.get("image_shape")
    if isinstance(shape, (list, tuple)) and len(shape) == 3 and all(isinstance(v, numbers.Integral) for v in shape):
        h, w = shape[1:]  # 1-D signals (C, 1, L): any length; models saved before this rule still load
        check(is_signal_shape(shape) or min(h, w) >= MIN_IMAGE_SIZE, f"image_shape {tuple(shape)}: images of {h}x{w} pixels are "
              f"too small: the models need at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}{channels_last_hint(shape)}")
    kind = cls.labelled_as(options)  # an avae follows its inner family's label rules
    classes = options.get("num_classes")
    check(not classes or getattr(kind, "conditional", False) is True or getattr(kind, "discrete_classes", False) is True,
          f"num_classes applies to the families with classes (cvae, crvae, jvae, jrvae, ssvae, ssrvae), not '{name}'"
          f"{' around a ' + kind.family if kind is not cls else ''}: it would be ignored")
    if networks is None:  # (the caller's networks are built already: not on the meta device)
        planned_state(lambda: cls.from_options(options), f"model '{name}'", copies=4)
    if seed is None:
        return cls.from_options(options, networks)
    with seeded(seed):
        return cls.from_options(options, networks)
