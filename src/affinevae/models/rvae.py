"""The rotation-/translation-/scale-invariant VAE (rVAE) and its class-conditional form (crVAE).

The encoder infers, besides the content latents z, the pose of each image as latent
variables with their own priors; the decoder renders z *in that pose*. Content is thus
learned in a canonical frame: ``x = warp(render(z, class), pose)`` with the pose inferred.

Pose latents (each only when named in ``invariances``):

- ``rotation``: the angle in radians (counter-clockwise on screen).
  ``rotation_mode='gaussian'``: prior N(0, rotation_prior^2), posterior Gaussian; the
  encoder outputs the mean directly. ``rotation_mode='full'`` (objects with no preferred
  orientation): the prior is uniform on the circle and the encoder outputs the mean as a
  2-D vector (its direction, ``atan2``, is the angle, so the mean can go all the way
  round without a jump). The posterior is a wrapped normal whose KL from the uniform is
  approximated by that of the unwrapped normal, ``log(2 pi) - 0.5 log(2 pi e sigma^2)``,
  floored at 0 (exact as sigma -> 0, and 0 where the posterior is as wide as the circle).
  The KL therefore does not depend on the mean angle. This is the path of ``encoder='mlp'`` or
  ``'conv'``; over the full circle it learns little (see below).
  With ``encoder='equivariant'`` (the default in 'full' mode) the encoder is a group-equivariant
  CNN over the rotations C_N (:mod:`affinevae.nn.equivariant`) and the angle posterior is a
  mixture (:mod:`affinevae.nn.circular`): a categorical over N bins of 360/N degrees, times a
  Gaussian offset inside the chosen bin, with a uniform prior on the bins and N(0, (pi/N)^2) on
  the offset; the ELBO holds the exact KL of that (bin, offset) pair. Turning an image by
  360/N degrees rolls the bin probabilities by one and leaves the content latents unchanged
  by construction. ``encode(x).pose.angle`` is the most probable bin plus its offset mean.
  The decoder is then 'warp' by default: training renders each image's canonical image once
  and warps it to all N bins.
- ``translation``: the shift (right, down) in half image widths, prior N(0, translation_prior^2)
  per axis.
- ``scale``: the log of the zoom factor, prior N(0, scale_prior^2); ``pose.scale`` is exp of it.
- ``shift``: 1-D signals (image shape (C, 1, L), :mod:`affinevae.nn.signal`) only, and their only
  invariance: the shift along the signal **in samples**, prior N(0, shift_prior^2). The signal
  is rendered at ``u - s``; ``encode(x).parts['shift']`` (N,) holds its posterior mean in
  samples (``pose.shift`` holds it as (2 s / L, 0) half widths, for rendering).

The pose latents are parameterised in units of their prior: the encoder's raw outputs are
multiplied by the prior standard deviation (means) or offset by its log-variance, so a fresh
model starts with a posterior of the prior's scale, whatever the units.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import ClassVar, Optional

import torch
from torch import Tensor, nn

from ..config import check, check_angle_spread, check_choice, check_counts, check_positive, check_symmetry
from ..errors import AffineVAEError
from ..nn.affine import Pose, PoseLike, compose_poses, pose_matrix, render, rotation_matrix, wrap_angle
from ..nn.circular import SAMPLERS, RotationPosterior
from ..nn.equivariant import CONTENT_SOURCES, DOWNSAMPLING, EquivariantFeatures, check_group
from ..nn.flows import check_flow_steps
from ..nn.signal import is_signal_shape, pose_shift, shift_pose
from ..nn.layers import ENCODERS
from ..nn.likelihoods import density_likelihoods
from ..nn.spatial import POSE_DECODERS
from ..pose.classes import EMBEDDING_MAX_DIM, aligned_components, aligned_embedding
from ..pose.sync import synchronise_angles
from ..registry import MODELS
from .base import Encoding, LatentModel, ModelConfig, ModelOutput, gaussian_kl

INVARIANCES = ("rotation", "translation", "scale")
#: Every pose latent by name, in stored order: the image ones, then the 1-D signals' ``shift``.
ALL_INVARIANCES = INVARIANCES + ("shift",)
_LOG_2PI = math.log(2 * math.pi)
# The initial posterior width of a pose latent, relative to its prior (exp(-1) ~ 0.37): the
# decoder first sees poses near the encoder's guess, which speeds up the first epoch.
_POSE_LOGVAR_OFFSET = -2.0
#: The least agreement (:attr:`~affinevae.pose.SynchronisedAngles.agreement`) of a fit's angular
#: synchronisation for its angles to anchor the encoder (``RVAEConfig.pose_anchor``); 10 000 full-circle
#: digits measure 0.957 (1 000 of them 0.88), pure noise 0.35-0.38, a 4-fold symmetric toy shape 0.37 over
#: the full circle and 1.00 modulo 90 degrees, the symmetry the synchronisation then takes (tests/test_sync.py).
MIN_SYNC_AGREEMENT = 0.5

#: The content anchor's targets (``RVAEConfig.content_targets``): ``f(images (N, C, H, W), angles (N,)
#: radians, k, seed=...) -> (N, k)`` in the frame the angles turn the images back to.
CONTENT_TARGETS = {
    "embedding": aligned_embedding,
    "components": lambda images, angles, k, seed=0: aligned_components(images, angles, k),
}
#: ``content_anchor`` (None) where ``content_targets`` is given: the weight each kind of target was
#: measured best at (t-SNE: full-circle MNIST; principal components: bench_particles.py).
CONTENT_TARGET_WEIGHTS = {"embedding": 100.0, "components": 10.0}
#: The epoch record's key suffix for each kind of target (``content_anchor_<suffix>``).
CONTENT_TARGET_RECORDS = {"embedding": "embedded", "components": "components"}


@dataclasses.dataclass(frozen=True)
class RVAEConfig(ModelConfig):
    """rVAE options (see :class:`ModelConfig` for the shared ones).

    Attributes:
        invariances: which pose latents to infer: any subset of ('rotation', 'translation',
            'scale'), stored in that order; () gives a plain VAE with a spatial decoder.
            A comma-separated string ('rotation,translation') is accepted. 1-D signals (image
            shape (C, 1, L)) take only ('shift',) or (). None (default): all three for images,
            ('shift',) for 1-D signals.
        rotation_mode: 'gaussian' (prior N(0, rotation_prior^2), for objects with a preferred
            orientation) or 'full' (uniform prior on the circle; the KL ignores the mean angle).
        rotation_prior: prior standard deviation of the angle, radians (default pi/4).
        translation_prior: prior standard deviation of the shift, half image widths (default 0.1).
        scale_prior: prior standard deviation of the log zoom factor (default 0.1, i.e. about +-10 %).
        shift_prior: 1-D signals: prior standard deviation of the shift along the signal, in samples
            (default 5).
        decoder: 'spatial' (coordinate MLP), 'broadcast' (the coordinates and latents broadcast over
            the grid, then 3 x 3 convolutions: the spatial-broadcast decoder, ``hidden`` its feature
            maps) or 'warp' (conv decoder + affine warp); None (default)
            picks by encoder: 'warp' with the 'equivariant' encoder (its canonical image is rendered
            once per image and only warped to each of the N rotation bins, where the spatial decoder
            evaluates its per-pixel MLP N times: 6x faster training on full-circle digits at C_8,
            benchmarks/bench_full_circle.py), else 'spatial'. Stored in the config at construction.
        encoder: 'mlp', 'conv' or 'equivariant'; None (default) picks by mode: 'equivariant' when
            the model infers the rotation with rotation_mode 'full', else 'mlp'. The choice is
            stored in the config at construction (so a saved model keeps it). 'equivariant'
            needs rotation_mode 'full', the rotation invariance and square images.
        group_order: 'equivariant' encoder only: N, the number of rotation bins (4, 8 or 16;
            default 8: measured best, benchmarks/bench_full_circle.py).
        group_channels: 'equivariant' encoder only: fields per group-conv layer (each field has
            N channels; the cost grows as the product of neighbouring widths times N^2). None
            (default): (4, 8, 8, 8, 8) for the rVAE and crVAE, whose two extra layers at the
            7 x 7 grid widen what the rotation heads see from 20 to 36 pixels (trained on the
            true angles of full-circle digits, the encoder reaches a concentration of 0.95
            against 0.74 with three layers); (4, 8, 8) for the joint and semi-supervised models.
        rotation_sampler: 'equivariant' encoder only: how training takes the expectation over the
            rotation bin: 'enumerate' (default: all N bins per image, weighted by their
            probability: exact in the bin; with the 'warp' decoder the canonical image is still
            rendered once per image) or 'gumbel' (one straight-through Gumbel-softmax draw per image).
        group_downsample: 'equivariant' encoder only: how its layers halve the grid: 'pool'
            (default; same-size convolutions and a 2 x 2 max-pool) or 'stride' (stride-2 convolutions
            placed symmetrically: a training step 1.4x faster, the clustering and angle measured
            lower), see :class:`~affinevae.nn.equivariant.EquivariantEncoder`.
        group_content: 'equivariant' encoder only: where the content latents are read:
            'canonical' (default: an MLP of the image turned back by the posterior-mean angle,
            which also reads the shift, in that frame) or 'pooled' (the group features pooled over
            positions, read from each bin and weighted by its probability; the shift is then the
            soft-argmax of the encoder's position map).
        hidden: widths of the spatial decoder's per-pixel MLP (and of the conv decoder's head
            for 'warp'); the per-pixel cost grows as the product of neighbouring widths. The
            default (48, 48) trains 1.5x faster than (64, 64) on rotated MNIST at a -ELBO about
            1 nat higher and with better-separated content latents (benchmarks/bench_rvae.py).
        encoder_hidden: widths of the encoder's fully connected layers (() = same as ``hidden``).
        pose_anchor: 'equivariant' encoder only: weight of the named training term
            'pose_anchor', the mean of ``-log q(a_i)`` over the batch, where ``a_i`` is training
            image i's angle in the common frame that :func:`affinevae.pose.synchronise_angles`
            finds for the training images (computed when :func:`affinevae.fit` starts, resumes
            included, with the run's seed). It holds the encoder's frame the same across the styles
            of a class, where the ELBO alone lets each style keep its own (a third of the 5s and
            8s of full-circle digits turned by 180 degrees, their content latents encoding the
            turn). None (default): 10 for the rVAE and crVAE with the equivariant encoder, else 0
            (off). It is left off for a fit whose synchronisation's agreement is below
            0.5 (objects whose turns cannot be told apart, such as pure noise); the
            epoch records hold ``pose_sync_agreement`` and ``pose_sync_symmetry``. The reported ELBO
            never includes it. Objects with n-fold rotational symmetry are anchored modulo 360 / n
            degrees (``anchor_symmetry``).
        anchor_symmetry: with ``pose_anchor`` > 0: the n of the objects' n-fold rotational symmetry
            (1..12; 1: none). The training images are synchronised modulo 360 / n degrees and the
            term becomes ``-log sum_m q(a_i + 2 pi m / n)``: any of the n turns that look alike
            satisfies it. None (default): n is chosen by the synchronisation (1, 2, 3, 4 or 6; see
            :func:`affinevae.pose.synchronise_angles`), 1 for digits, 2 for rods and galaxies.
        content_anchor: with a pose anchor: weight of the named training term 'content_anchor',
            ``0.5 * mean_i |z_mean_i - t_i|^2``, where ``t_i`` are training image i's targets in the
            frame the pose anchor synchronised the training images to (``content_targets``): it holds
            the content latents to where images that look alike once turned gather, which the ELBO
            alone does not find for objects too faint (particles) or for a few latents over the full
            circle (digits of a 2-latent model share a dense centre). None (default): 100 for the
            rVAE whose targets are 'embedding' and that has a pose anchor (full-circle MNIST, 2
            latents, seeds 0 / 1 / 2: k-means accuracy of the content latents 0.58 / 0.59 / 0.58 ->
            0.823 / 0.805 / 0.828, 10-NN 0.77 / 0.77 / 0.78 -> 0.843 / 0.825 / 0.851, test -ELBO 155.5 /
            156.0 / 157.3 -> 156.4 / 156.9 / 156.3 nats; ``benchmarks/bench_full_circle.py``), else 0 (off;
            the crVAE, whose content is the style within a given class, and the joint and
            semi-supervised models); where ``content_targets`` is given, the weight measured for them
            (100 for 'embedding', 10 for 'components': :data:`CONTENT_TARGET_WEIGHTS`). The ``train``
            command's float-image and faint-particle defaults give 10 with 'components' targets for
            more than 3 latents (and for the crVAE with any). The reported ELBO never includes it.
        content_targets: what the content anchor holds the content means to: 'embedding' (the
            images turned into the synchronised frame, embedded in ``latent_dim`` dimensions by t-SNE,
            :func:`~affinevae.pose.classes.aligned_embedding`: about 50 s for 10 000 images on one
            thread, at most 10 000 embedded, the others placed by their neighbours; 1 to 3 latents) or
            'components' (their first ``latent_dim`` principal components,
            :func:`~affinevae.pose.classes.aligned_components`), each scaled to unit variance as the
            prior. None (default): 'embedding' for 1 to 3 latents, else 'components' ('embedding'
            with more than 3 latents is refused while the anchor is on).
        equivariance: weight of the pose-consistency term added to the training loss (0 = off;
            None = auto: 10 with rotation_mode 'gaussian', 0 with 'full'). Each training batch
            is also encoded after a random extra pose drawn from the pose priors, and the squared
            mismatch between the encoded poses and their expected composition (and between the
            two content encodings), in prior units, is added: turning an image by d should turn
            its angle by d. On the rotated-MNIST benchmark it lifts the learned-vs-true angle
            correlation from 0.77 to 0.87 for about 10 % of the training speed. It is off by
            default in 'full' mode, whose objects are often symmetric (a lattice turned by 180
            degrees looks the same, so its angle cannot follow a turn of 180). The reported ELBO
            never includes it.
        flow_steps: K amortised planar flow steps on the content posterior (0..64; default 0, the
            Gaussian with its exact KL): the encoder also gives each image K planar maps (its last
            outputs; invariant ones with the equivariant encoder), the decoder renders the Gaussian
            sample pushed through them, and the content KL is the one-sample estimate on that draw
            (:meth:`LatentModel.with_flow`; the rVAE article's "(r)VAE with normalising flows"). The
            pose posterior keeps its own form. rvae and crvae only.
    """

    encoder: Optional[str] = None
    decoder: Optional[str] = None
    hidden: tuple = (48, 48)
    encoder_hidden: tuple = (256, 128)
    activation: str = "relu"
    invariances: Optional[tuple] = None
    rotation_mode: str = "gaussian"
    rotation_prior: float = math.pi / 4
    translation_prior: float = 0.1
    scale_prior: float = 0.1
    shift_prior: float = 5.0
    equivariance: Optional[float] = None
    group_order: int = 8
    group_channels: Optional[tuple] = None
    rotation_sampler: str = "enumerate"
    group_content: str = "canonical"
    group_downsample: str = "pool"
    pose_anchor: Optional[float] = None
    anchor_symmetry: Optional[int] = None
    content_anchor: Optional[float] = None
    content_targets: Optional[str] = None
    flow_steps: int = 0

    #: The defaults of ``group_channels`` and ``pose_anchor`` (None) resolve to these with the
    #: equivariant encoder; the joint and semi-supervised configs override them.
    DECODER_NAMES: ClassVar = POSE_DECODERS  # 'spatial', 'broadcast' and 'warp'
    default_group_channels: ClassVar[tuple] = (4, 8, 8, 8, 8)
    default_pose_anchor: ClassVar[float] = 10.0
    #: ``content_anchor`` (None) resolves to this with a pose anchor and 'embedding' targets.
    default_content_anchor: ClassVar[float] = 100.0
    #: A run saved before ``anchor_symmetry`` existed anchored over the full circle, and one saved before
    #: ``pose_anchor`` existed had no anchor.
    FORMER_DEFAULTS: ClassVar[dict] = {**ModelConfig.FORMER_DEFAULTS, "anchor_symmetry": 1, "pose_anchor": 0.0,
                                       "content_anchor": 0.0, "content_targets": "components", "flow_steps": 0}

    def __post_init__(self) -> None:
        inv = self.invariances
        if inv is None:  # the default: every image pose latent, or the shift of 1-D signals
            inv = ("shift",) if is_signal_shape(self.image_shape) else INVARIANCES
        if isinstance(inv, str):
            inv = tuple(s.strip() for s in inv.split(",") if s.strip())
        if isinstance(inv, (list, tuple)) and all(isinstance(s, str) for s in inv):
            check(len(set(inv)) == len(inv), f"invariances must not repeat a name, got {tuple(inv)}")
            for s in inv:
                check_choice("invariances entry", s, ALL_INVARIANCES)
            inv = tuple(s for s in ALL_INVARIANCES if s in inv)
        object.__setattr__(self, "invariances", inv)
        if self.encoder is None:
            full = self.rotation_mode == "full" and isinstance(inv, tuple) and "rotation" in inv
            object.__setattr__(self, "encoder", "equivariant" if full else "mlp")
        if self.decoder is None:
            object.__setattr__(self, "decoder", "warp" if self.encoder == "equivariant" else "spatial")
        if self.group_channels is None:
            object.__setattr__(self, "group_channels", tuple(self.default_group_channels))
        if self.pose_anchor is None:
            object.__setattr__(self, "pose_anchor", self.default_pose_anchor if self.encoder == "equivariant" else 0.0)
        targets_given = self.content_targets is not None
        if self.content_targets is None:
            small = isinstance(self.latent_dim, int) and self.latent_dim <= EMBEDDING_MAX_DIM
            object.__setattr__(self, "content_targets", "embedding" if small else "components")
        if self.content_anchor is None:
            anchored = isinstance(self.pose_anchor, (int, float)) and self.pose_anchor > 0
            weight = (self.default_content_anchor if self.content_targets == "embedding" else 0.0) if not targets_given \
                else CONTENT_TARGET_WEIGHTS.get(self.content_targets, 0.0)  # targets asked for: their anchor on
            object.__setattr__(self, "content_anchor", weight if anchored else 0.0)
        super().__post_init__()

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        super().validate()
        check(isinstance(self.invariances, tuple) and all(isinstance(s, str) for s in self.invariances),
              f"invariances must be a tuple of names from {list(ALL_INVARIANCES)}, got {self.invariances!r}")
        if is_signal_shape(self.image_shape):
            check(set(self.invariances) <= {"shift"},
                  f"1-D signals (image shape {self.image_shape}) take only the 'shift' invariance, got {self.invariances}")
        else:
            check("shift" not in self.invariances,
                  "the 'shift' invariance is for 1-D signals (image shape (C, 1, L)); images take 'translation'")
        check_choice("likelihood", self.likelihood, density_likelihoods())
        check_choice("rotation_mode", self.rotation_mode, ["gaussian", "full"])
        check(len(self.hidden) >= 1, "hidden must list at least one width")
        check_counts("encoder_hidden", self.encoder_hidden)
        check_angle_spread("rotation_prior", self.rotation_prior)
        check_positive("translation_prior", self.translation_prior)
        check_positive("scale_prior", self.scale_prior)
        check_positive("shift_prior", self.shift_prior)
        if self.equivariance is not None:
            check_positive("equivariance", self.equivariance, allow_zero=True)
        check_positive("pose_anchor", self.pose_anchor, allow_zero=True)
        if self.anchor_symmetry is not None:
            check_symmetry(self.anchor_symmetry, "anchor_symmetry")
        check(self.pose_anchor == 0 or self.encoder == "equivariant",
              f"pose_anchor {self.pose_anchor:g} needs encoder 'equivariant' (its angle posterior); give pose_anchor=0")
        check_positive("content_anchor", self.content_anchor, allow_zero=True)
        check(self.content_anchor == 0 or self.pose_anchor > 0,
              f"content_anchor {self.content_anchor:g} needs the pose anchor (pose_anchor > 0): its frame")
        check_choice("content_targets", self.content_targets, list(CONTENT_TARGETS))
        check(self.content_targets != "embedding" or self.content_anchor == 0 or self.latent_dim <= EMBEDDING_MAX_DIM,
              f"content_targets 'embedding' embeds in 1 to {EMBEDDING_MAX_DIM} dimensions (t-SNE), but latent_dim is "
              f"{self.latent_dim}: give content_targets=components")
        check_counts("group_channels", self.group_channels, at_least=1)
        check_choice("rotation_sampler", self.rotation_sampler, list(SAMPLERS))
        check_choice("group_content", self.group_content, list(CONTENT_SOURCES))
        check_choice("group_downsample", self.group_downsample, list(DOWNSAMPLING))
        check_flow_steps(self.flow_steps)
        if self.encoder == "equivariant":
            check(self.rotation_mode == "full" and "rotation" in self.invariances,
                  "encoder 'equivariant' needs rotation_mode 'full' and the rotation invariance")
            check_group(self.group_order, self.image_shape)
        else:
            check(isinstance(self.group_order, int) and not isinstance(self.group_order, bool) and self.group_order > 0,
                  f"group_order must be a positive integer, got {self.group_order!r}")

    def check_new(self) -> None:
        """A new model refuses ``rotation_mode='full'`` without a rotation to infer (the mode is the
        angle's prior: without the angle it did nothing, and it chose the full-circle training
        defaults); a saved config with it still loads."""
        super().check_new()
        if self.rotation_mode == "full" and "rotation" not in self.invariances:
            hint = ("1-D signals take no rotation: leave rotation_mode out" if is_signal_shape(self.image_shape) else
                    "add 'rotation' to the invariances (--invariances) or leave rotation_mode out")
            raise AffineVAEError(f"rotation_mode 'full' is the prior of the angle, but invariances {self.invariances} "
                                 f"infer no rotation: {hint}")

    @property
    def mixture(self) -> bool:
        """True when the angle posterior is the bin-and-offset mixture (encoder 'equivariant')."""
        return self.encoder == "equivariant"

    @property
    def equivariance_weight(self) -> float:
        """The pose-consistency weight in use (``equivariance``, or its mode-dependent default)."""
        if self.equivariance is not None:
            return float(self.equivariance)
        return 10.0 if self.rotation_mode == "gaussian" else 0.0


@MODELS.register("rvae")
class RVAE(LatentModel):
    """VAE whose encoder also infers each image's pose (angle, shift, scale) as latent variables.

    The decoder renders content latents z (N, latent_dim) in any pose, so z describes the
    object in a canonical frame. ``encode(x).pose`` holds the posterior-mean pose
    (``angle`` (N,) radians, ``shift`` (N, 2) half-widths, ``scale`` (N,) zoom; fields the
    model does not infer are None) and ``encode(x).pose_std`` the posterior standard
    deviations (for ``scale``: of the log zoom). ``decode(z, angle=..., shift=..., scale=...)``
    renders any pose (default: canonical).

    Example::

        model = RVAE(image_shape=(1, 28, 28), latent_dim=2, invariances=("rotation",))
        fit(model, rotated_mnist("train", n=20000), TrainConfig(epochs=10, batch_size=100))
        enc = model.encode(x)                  # enc.pose.angle: (N,) radians
        upright = model.decode(enc.z_mean)     # (N, 1, 28, 28) canonical images
    """

    config_class = RVAEConfig
    family = "rvae"
    pose_source = "inferred"
    render_padding = "border"  # a warped canonical image's background edge comes in, not a zero parameter
    #: The agreement of the last fit's angular synchronisation (``pose_anchor``), None before any.
    pose_sync_agreement: Optional[float] = None
    #: The n-fold symmetry the last fit's synchronisation took (``anchor_symmetry``), None before any.
    pose_sync_symmetry: Optional[int] = None
    _anchor_table: Optional[Tensor] = None  # synchronised angle by training-data index, during a fit
    _batch_anchor: Optional[Tensor] = None  # the current training batch's, during a forward pass
    _content_table: Optional[Tensor] = None  # (index, D) content targets (content_anchor), during a fit
    _batch_content: Optional[Tensor] = None

    # ------------------------------------------------------------------ construction
    @property
    def _rot_mean_dim(self) -> int:
        return 2 if self.config.rotation_mode == "full" else 1

    def _pose_layout(self) -> list[tuple[str, int, int]]:
        """(name, number of mean outputs, number of log-variance outputs) per inferred pose part.

        With the equivariant encoder the rotation comes from its own heads; with its 'pooled'
        content the shift's mean comes from its position map, so only its log-variances remain here.
        """
        if self.config.mixture:
            shift_means = 2 if self.config.group_content == "canonical" else 0
            sizes = {"rotation": (0, 0), "translation": (shift_means, 2), "scale": (1, 1), "shift": (1, 1)}
        else:
            sizes = {"rotation": (self._rot_mean_dim, 1), "translation": (2, 2), "scale": (1, 1), "shift": (1, 1)}
        return [(name, *sizes[name]) for name in self.config.invariances if sum(sizes[name])]

    def encoder_out_dim(self) -> int:
        """2 * latent_dim + the pose outputs (means and log-variances of each pose latent) + the
        content flow's parameters (:meth:`LatentModel.flow_outputs`; 0 without a flow)."""
        return 2 * self.config.latent_dim + sum(m + v for _, m, v in self._pose_layout()) + self.flow_outputs()

    def build(self, encoder=None, decoder=None) -> None:
        """Encoder from ENCODERS (input: image + one-hot class); decoder from POSE_DECODERS (or the given ones)."""
        cfg = self.config
        self.encoder = encoder if encoder is not None else self.build_encoder(self.cond_dim)
        if encoder is None:
            self.start_flow_near_identity()
        self.decoder = decoder if decoder is not None else POSE_DECODERS.get(cfg.decoder)(
            cfg.latent_dim + self.cond_dim, cfg.image_shape, hidden=tuple(cfg.hidden), act=cfg.activation,
            channels=tuple(reversed(cfg.channels)), norm=cfg.norm)

    def build_encoder(self, cond_dim: int) -> nn.Module:
        """The configured encoder (ENCODERS[``encoder``]) with ``encoder_out_dim()`` outputs and a
        condition of ``cond_dim`` (a one-hot class; 0: none); the group-equivariant one takes its
        own field widths and group order."""
        cfg = self.config
        enc_hidden = cfg.encoder_hidden or cfg.hidden
        if cfg.mixture:
            return ENCODERS.get(cfg.encoder)(cfg.image_shape, self.encoder_out_dim(), hidden=enc_hidden,
                                             act=cfg.activation, cond_dim=cond_dim, channels=cfg.group_channels,
                                             norm=cfg.norm, group_order=cfg.group_order, content=cfg.group_content,
                                             downsample=cfg.group_downsample)
        return ENCODERS.get(cfg.encoder)(cfg.image_shape, self.encoder_out_dim(), hidden=enc_hidden,
                                         act=cfg.activation, cond_dim=cond_dim, channels=cfg.channels, norm=cfg.norm)

    def _prior_std(self, name: str) -> float:
        cfg = self.config
        return {"rotation": cfg.rotation_prior, "translation": cfg.translation_prior, "scale": cfg.scale_prior,
                "shift": cfg.shift_prior}[name]

    # ------------------------------------------------------------------ hooks
    def posterior(self, h: Tensor | EquivariantFeatures) -> Encoding:
        """(N, encoder_out_dim) -> Encoding with content z and the posterior-mean pose.

        The equivariant encoder's :class:`EquivariantFeatures` give a :class:`MixtureEncoding`
        instead (see :meth:`_split_features`). With ``flow_steps`` > 0 the last
        :meth:`~LatentModel.flow_outputs` outputs (of the invariant ones) are the content flow's
        (:meth:`LatentModel.with_flow`: ``z_mean`` is then the flowed mean).
        """
        k = self.flow_outputs()
        if k:
            raw = h.content if isinstance(h, EquivariantFeatures) else h
            return self.with_flow(self._pose_posterior(h), raw[:, raw.shape[1] - k:])
        return self._pose_posterior(h)

    def _pose_posterior(self, h: Tensor | EquivariantFeatures) -> Encoding:
        """:meth:`posterior` without the content flow."""
        if isinstance(h, EquivariantFeatures):
            return self._split_features(h)
        h = h.float()
        d = self.config.latent_dim
        z_mean, z_logvar = h[:, :d], h[:, d:2 * d]
        i = 2 * d
        means: dict[str, Tensor] = {}
        stds: dict[str, Tensor] = {}
        for name, nm, nv in self._pose_layout():
            raw_mean, raw_logvar = h[:, i:i + nm], h[:, i + nm:i + nm + nv]
            i += nm + nv
            prior = self._prior_std(name)
            logvar = (raw_logvar + 2 * math.log(prior) + _POSE_LOGVAR_OFFSET).clamp(-30, 20)
            std = torch.exp(0.5 * logvar)
            if name == "rotation" and self.config.rotation_mode == "full":
                mean = torch.atan2(raw_mean[:, 1], raw_mean[:, 0] + 1e-6)
            else:
                mean = prior * raw_mean
            if name in ("rotation", "scale", "shift"):
                mean, std = mean.reshape(-1), std.reshape(-1)
            means[name], stds[name] = mean, std
        pose = pose_std = None
        parts: dict[str, Tensor] = {}
        if "shift" in means:  # 1-D signals: the shift in samples, rendered as (2 s / L, 0) half widths
            length = self.config.image_shape[2]
            parts = {"shift": means["shift"], "shift_std": stds["shift"]}
            pose, pose_std = shift_pose(means["shift"], length), shift_pose(stds["shift"], length)
        elif means:
            pose = Pose(angle=means.get("rotation"), shift=means.get("translation"),
                        scale=None if "scale" not in means else torch.exp(means["scale"]))
            pose_std = Pose(angle=stds.get("rotation"), shift=stds.get("translation"), scale=stds.get("scale"))
        return Encoding(z_mean, torch.exp(0.5 * z_logvar.clamp(-30, 20)), pose, pose_std, parts)

    def _split_features(self, feats: EquivariantFeatures) -> "MixtureEncoding":
        """The equivariant encoder's outputs -> :class:`MixtureEncoding`.

        Content z from the invariant outputs; the angle posterior from the rotation heads
        (``pose.angle``: the most probable bin's centre plus its offset mean; ``pose_std.angle``:
        the mixture's circular standard deviation). With 'canonical' content the shift's mean is
        read in the canonical frame and turned by ``pose.angle`` into the image frame (so it turns
        with the image); with 'pooled' content it is the soft-argmax of the position map. The
        shift's log-variance and the scale come from the invariant outputs. Units as the pose:
        radians, half image widths.
        """
        h = feats.content.float()
        d = self.config.latent_dim
        z_mean, z_logvar = h[:, :d], h[:, d:2 * d]
        rot = RotationPosterior(feats.rotation_logits.float(), feats.offset_mean.float(), feats.offset_logstd.float())
        i = 2 * d
        shift = shift_std = scale = scale_std = None
        for name, nm, nv in self._pose_layout():
            raw_mean, raw_logvar = h[:, i:i + nm], h[:, i + nm:i + nm + nv]
            i += nm + nv
            prior = self._prior_std(name)
            std = torch.exp(0.5 * (raw_logvar + 2 * math.log(prior) + _POSE_LOGVAR_OFFSET).clamp(-30, 20))
            if name == "translation" and nm:  # canonical frame -> image frame: t = R(angle) t_c
                r = rotation_matrix(rot.mean_angle())
                shift, shift_std = (r @ (prior * raw_mean)[:, :, None])[:, :, 0], std
            elif name == "translation":
                shift, shift_std = feats.shift.float(), std
            else:
                scale, scale_std = torch.exp(prior * raw_mean.reshape(-1)), std.reshape(-1)
        pose = Pose(angle=rot.mean_angle(), shift=shift, scale=scale)
        pose_std = Pose(angle=rot.circular_std(), shift=shift_std, scale=scale_std)
        return MixtureEncoding(z_mean, torch.exp(0.5 * z_logvar.clamp(-30, 20)), pose, pose_std, rotation=rot)

    def draw(self, enc: Encoding, sample: bool = True, angle: bool = True) -> tuple[Tensor, Optional[Pose]]:
        """Reparameterised samples of z and of each pose latent (the log zoom for scale); the
        means (content and pose) when ``sample`` is False.

        A mixture angle posterior is sampled by a straight-through Gumbel-softmax draw; with
        ``angle=False`` the angle is not drawn (the pose's ``angle`` is None).

        Returns:
            ``(z, pose)``: z (N, D), and the pose (angle (N,) radians, shift (N, 2) half-widths,
            scale (N,) or (N, 2) zoom; the latents the model has) or None without pose latents.
        """
        z = self.draw_content(enc, sample)  # (through the content flow, where there is one)
        if not sample:
            return z, enc.pose
        if enc.pose is None:
            return z, None
        p, s = enc.pose, enc.pose_std
        rot = getattr(enc, "rotation", None)
        if not angle:
            angle = None
        elif rot is not None:
            angle = rot.sample_gumbel()
        else:
            angle = None if p.angle is None else p.angle + s.angle * torch.randn_like(s.angle)
        shift = None if p.shift is None else p.shift + s.shift * torch.randn_like(s.shift)
        scale = None if p.scale is None else torch.exp(torch.log(p.scale) + s.scale * torch.randn_like(s.scale))
        return z, Pose(angle=angle, shift=shift, scale=scale)

    def decode(self, z: Tensor, y: Optional[Tensor] = None, pose: Optional[Pose] = None, *,
               angle: Optional[Tensor] = None, shift: Optional[Tensor] = None,
               scale: Optional[Tensor] = None) -> Tensor:
        """As :meth:`LatentModel.decode`: mean images (N, C, H, W) of ``z`` (N, D) at ``angle`` (N,)
        radians, ``shift`` (N, 2) half-widths and ``scale`` (N,); for 1-D signals (image shape
        (C, 1, L)) ``shift`` is the shift along the signal in samples, a scalar or (N,), and the
        result (N, C, 1, L)."""
        if is_signal_shape(self.config.image_shape) and (angle is not None or scale is not None):
            raise AffineVAEError("decode: 1-D signals (image shape (C, 1, L)) take only a shift (in samples); "
                                 "angle and scale turn and scale images")
        if shift is not None and pose is None and is_signal_shape(self.config.image_shape):
            s = torch.as_tensor(shift, dtype=torch.float32, device=self.device).reshape(-1).expand(z.shape[0])
            pose = shift_pose(s, self.config.image_shape[2])
            shift = None
        return super().decode(z, y, pose, angle=angle, shift=shift, scale=scale)

    def generate(self, z: Tensor, y: Optional[Tensor] = None):
        """The canonical object of z (N, D) (and class y): the pose decoder's ``generate`` (a
        coordinate field for 'spatial', canonical likelihood parameters for 'warp')."""
        cond = self.onehot(y)
        return self.decoder.generate(z if cond is None else torch.cat([z, cond.to(z.dtype)], 1))

    # ------------------------------------------------------------------ pose anchor
    @contextlib.contextmanager
    def fit_context(self, x: Tensor, y: Optional[Tensor], index: Tensor, seed: int, store=None):
        """With ``pose_anchor`` > 0 (see :class:`RVAEConfig`): the training images ``x`` (N, C, H, W)
        are synchronised (:func:`~affinevae.pose.synchronise_angles` with ``seed``) and, if they
        agree well enough, their angles (radians) anchor the encoder's angle posterior while the fit
        runs (the term 'pose_anchor', looked up by the ``index`` (N,) the trainer passes to
        ``forward``); on leaving they are dropped. ``pose_sync_agreement`` keeps the agreement and
        ``pose_sync_symmetry`` the n-fold symmetry the angles were synchronised at (``anchor_symmetry``).
        With a ``store`` (:class:`~affinevae.io.TargetStore`, the run directory's) the angles, the
        agreement and the content targets are saved there, and a resume reads them instead of
        synchronising and embedding again."""
        if not (self.config.pose_anchor > 0 and len(x) >= 2):
            yield
            return
        c = self.config
        key = {"targets": "pose anchor", "model": self.describe(), "n": len(x)}
        kept = store.load(key) if store is not None else None
        if kept is None:
            observed = self.observe_cpu(x)
            sync = synchronise_angles(observed, seed=seed, symmetry=c.anchor_symmetry)
            kept = {"angles": torch.as_tensor(sync.angles, dtype=torch.float32),
                    "agreement": torch.tensor(float(sync.agreement), dtype=torch.float64),
                    "symmetry": torch.tensor(int(sync.symmetry))}
            if sync.agreement >= MIN_SYNC_AGREEMENT and c.content_anchor > 0:
                kept["content"] = torch.as_tensor(CONTENT_TARGETS[c.content_targets](
                    observed, torch.as_tensor(sync.angles), c.latent_dim, seed=seed), dtype=torch.float32)
            if store is not None:
                store.save(key, kept)
        self.pose_sync_agreement, self.pose_sync_symmetry = float(kept["agreement"]), int(kept["symmetry"])
        if self.pose_sync_agreement >= MIN_SYNC_AGREEMENT:
            table = torch.full((int(index.max()) + 1,), float("nan"))
            table[index.cpu()] = kept["angles"].to(table.dtype)
            self._anchor_table = table
            if "content" in kept:
                content = torch.full((int(index.max()) + 1, c.latent_dim), float("nan"))
                content[index.cpu()] = kept["content"].to(content.dtype)
                self._content_table = content
        try:
            yield
        finally:
            self._anchor_table = self._content_table = None

    def on_epoch_start(self, epoch: int, x: Tensor, y: Optional[Tensor], steps_done: int, seed: int) -> dict:
        """The epoch record's ``pose_sync_agreement`` and ``pose_sync_symmetry`` (see :meth:`fit_context`)
        when the fit synchronised.

        Arguments as :meth:`LatentModel.on_epoch_start` (``x`` (N, C, H, W) training images, ``y``
        (N,) labels or None; unused here). Returns ``{"pose_sync_agreement": float,
        "pose_sync_symmetry": int}`` (with ``content_anchor_embedded`` or ``content_anchor_components``
        1.0 when the content anchor's targets were made) or ``{}``."""
        if self.config.pose_anchor > 0 and self.pose_sync_agreement is not None:
            record = {"pose_sync_agreement": self.pose_sync_agreement, "pose_sync_symmetry": self.pose_sync_symmetry}
            if self._content_table is not None:  # the content anchor's targets were made: which
                record[f"content_anchor_{CONTENT_TARGET_RECORDS[self.config.content_targets]}"] = 1.0
            return record
        return {}

    def forward(self, x: Tensor, y: Optional[Tensor] = None, sample: bool = True,
                index: Optional[Tensor] = None) -> ModelOutput:
        """As :meth:`LatentModel.forward`; inside a fit with a pose anchor, ``index`` (N,) also
        picks the images' synchronised angles (radians) for the 'pose_anchor' term."""
        if self._anchor_table is not None and index is not None:
            self._batch_anchor = self._anchor_table[index.cpu()]
            if self._content_table is not None:
                self._batch_content = self._content_table[index.cpu()]
        try:
            return super().forward(x, y, sample, index)
        finally:
            self._batch_anchor = self._batch_content = None

    def anchor_terms(self, enc: Encoding) -> dict:
        """The named term 'pose_anchor' (weighted, lazy) of a training batch's posterior ``enc``:
        ``pose_anchor * mean_i(-log sum_m q(a_i + 2 pi m / S))`` over its images with a synchronised
        angle ``a_i`` (radians; :meth:`~affinevae.nn.circular.RotationPosterior.log_prob`, nats per
        radian), m = 0..S-1 with S the fit's ``pose_sync_symmetry`` (1: ``-log q(a_i)``).
        Empty outside a fit's training pass or without an anchor."""
        anchor = self._batch_anchor
        rot = getattr(enc, "rotation", None)
        if anchor is None or rot is None or not self.in_weight_step:
            return {}
        keep = torch.isfinite(anchor)
        if not bool(keep.any()):
            return {}
        w = self.config.pose_anchor
        mask = keep.to(rot.logits.device)
        target = anchor[keep].to(rot.logits.device)
        fold = self.pose_sync_symmetry or 1

        def term() -> Tensor:
            mine = rot.index(mask)
            log_q = torch.stack([mine.log_prob(target + m * (2 * math.pi / fold)) for m in range(fold)])
            return w * (-torch.logsumexp(log_q, 0)).mean()
        terms = {"pose_anchor": term}
        if self._batch_content is not None:
            goal = self._batch_content[keep].to(enc.z_mean.device, enc.z_mean.dtype)
            wc = self.config.content_anchor
            terms["content_anchor"] = lambda: wc * 0.5 * (enc.z_mean[mask] - goal).pow(2).sum(1).mean()
        return terms

    # ------------------------------------------------------------------ training pass
    def infer_for_loss(self, x: Tensor, y: Optional[Tensor]) -> tuple[Encoding, dict]:
        """:meth:`infer`; in training with an ``equivariance`` weight > 0 also the named term
        'equivariance' (weighted, see :class:`RVAEConfig`; computed when scored): each image is
        encoded again after a random extra pose, in the same encoder pass; and, inside a fit with
        a pose anchor, the term 'pose_anchor' (:meth:`anchor_terms`).

        ``x`` (N, C, H, W) checked images; ``y`` (N,) class labels (crVAE) or None. Returns the
        :class:`Encoding` (``z_mean``/``z_std`` (N, D), ``pose``: angle (N,) radians, shift (N, 2)
        half widths, scale (N,); those it infers) and ``{name: lazy weighted scalar}``."""
        w = self.config.equivariance_weight
        if not (self.in_weight_step and w > 0 and self.config.invariances):
            enc = self.infer(x, y)
            return enc, self.anchor_terms(enc)
        cond = self.onehot(y)
        n = x.shape[0]
        delta = self.random_pose(n, x.device)
        both = self.posterior(self.encoder(torch.cat([x, render(x, delta)]),
                                           None if cond is None else torch.cat([cond, cond])))
        enc, moved = both.index(slice(0, n)), both.index(slice(n, 2 * n))
        return enc, {"equivariance": lambda: w * self.consistency(enc, moved, delta).mean(), **self.anchor_terms(enc)}

    def run_stages(self, x: Tensor, y: Optional[Tensor], found=None, sample: bool = True,
                   canon: Optional[Tensor] = None) -> ModelOutput:
        """The stages of :class:`LatentModel`; with the mixture angle posterior and
        ``rotation_sampler='enumerate'`` the draw, render and score stages sum the rotation bin out
        exactly: every image is rendered at all N bins (one z, shift and scale sample per image,
        one offset sample per bin; the B*N renderings in one decoder batch) and
        ``recon = sum_k q(k) (-log p(x | z, angle_k))``; ``x_params`` and ``pose`` are those of each
        image's most probable bin.

        ``x`` (N, C, H, W) and ``y`` ((N,) labels or None) already checked; ``found`` the searched
        pose (None: identity); ``canon`` (N, C, H, W) ``canonicalise(x, found)`` if already computed.
        Returns a :class:`ModelOutput` (``elbo`` (N,) nats, ``x_params`` (N, C, H, W); angles radians)."""
        if not (sample and self.config.mixture and self.config.rotation_sampler == "enumerate"):
            return super().run_stages(x, y, found, sample, canon)
        found_pose = self.pose_of(found)
        if canon is None:
            canon = self.canonicalise(x, found_pose)
        enc, terms = self.infer_for_loss(canon, y)
        z, pose = self.draw(enc, sample, angle=False)
        angles, weights = enc.rotation.enumerate()  # (B, N) each
        b, n = angles.shape
        rep = lambda v: None if v is None else v.repeat_interleave(n, 0)  # noqa: E731
        poses = Pose(angle=angles.reshape(-1), shift=rep(pose.shift), scale=rep(pose.scale))
        poses = compose_poses(None if found_pose is None else rep_pose(found_pose, n), poses, b * n, x.device)
        params, weights = self.render_bins(z, y, enc, poses, weights)
        best = weights.argmax(1) % n  # rows are ordered (row, bin), bins fastest
        used = Pose(angle=angles.gather(1, best[:, None])[:, 0], shift=pose.shift, scale=pose.scale)
        return self.score_rows(x, params, enc, used, terms, weights)

    def render_bins(self, z: Tensor, y: Optional[Tensor], post: Encoding, poses: PoseLike, bin_weights: Tensor
                    ) -> tuple[Tensor, Tensor]:
        """The rotation-bin enumeration's decoder pass: ``z`` (B, D) (and class ``y``) rendered at
        ``poses`` (B*N, ordered image-major: image b's bin k is row b*N + k) in one batch.
        Returns params (B, M, C, H, W) and weights (B, M): here M = N, the weights ``bin_weights``
        (B, N) = q(bin). Families with more rows per image (a class expectation) override this,
        keeping the bins fastest (row m is bin m % N)."""
        b, n = bin_weights.shape
        params = self.render_rows_at_bins(z, y, poses, n)
        return params.view(b, n, *params.shape[1:]), bin_weights

    def render_rows_at_bins(self, z: Tensor, y, poses: PoseLike, n: int, rows: int = 1) -> Tensor:
        """Render ``rows`` decoder rows per image at each of the image's ``n`` bin poses.

        ``z`` (B*rows, D) and ``y`` (its class or code per row, or None) ordered image-major;
        ``poses`` (B*n) image-major. The canonical object is generated once per row when it does
        not depend on the pose (a canonical image), else once per row and bin. Returns params
        (B*rows*n, C, H, W) ordered (image, row, bin)."""
        rep = lambda v: None if v is None else v.repeat_interleave(n, 0)  # noqa: E731
        canonical = self.generate(z, y)
        if isinstance(canonical, Tensor):  # a canonical image does not depend on the pose: once per row
            canonical = rep(canonical)
        else:
            canonical = self.generate(rep(z), rep(y))
        if rows > 1:  # row r of image b at bin k takes image b's pose of bin k
            b = z.shape[0] // rows
            bins = (torch.arange(b, device=z.device)[:, None, None] * n
                    + torch.arange(n, device=z.device)[None, None, :]).expand(b, rows, n).reshape(-1)
            poses = repeat_pose(poses, bins)
        return self.render(canonical, poses)

    def row_likelihood(self, x: Tensor, params: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        """The reconstruction term of ``x`` (B, C, H, W) under rows of params (B, M, C, H, W)
        weighted by ``weights`` (B, M): ``recon_i = sum_m weights_m (-log p(x | params_m))`` (B,)
        nats, and each image's heaviest row of params (B, C, H, W)."""
        b, m = weights.shape
        xr = self.observe(x).repeat_interleave(m, 0)
        recon_m = -self.likelihood.log_prob(params.float().reshape(b * m, *params.shape[2:]), xr,
                                            self.pixel_log_sigma()).view(b, m)
        recon_i = (weights.float() * recon_m).sum(1)
        return recon_i, params[torch.arange(b, device=x.device), weights.argmax(1)]

    def score_rows(self, x: Tensor, params: Tensor, post: Encoding, pose: PoseLike, terms: dict,
                   weights: Tensor) -> ModelOutput:
        """Score of ``x`` (B, C, H, W) under rows of params (B, M, C, H, W) weighted by ``weights``
        (B, M) (:meth:`row_likelihood`) plus the KL of ``post``; the named ``terms`` are added;
        ``x_params`` is each image's heaviest row, ``pose`` as given."""
        recon_i, x_params = self.row_likelihood(x, params, weights)
        kl_i = self.kl(post)
        recon, kl = recon_i.mean(), kl_i.mean()
        out = ModelOutput(loss=recon + self.loss_beta() * kl, recon=recon, kl=kl, elbo=-(recon_i + kl_i),
                          z_mean=post.z_mean, z_logvar=post.z_logvar, pose=pose, x_params=x_params)
        return out.with_terms({k: v() if callable(v) else v for k, v in terms.items()})

    def random_pose(self, n: int, device) -> Pose:
        """(n,) random poses drawn from the pose priors (uniform angle in [-pi, pi) radians in 'full'
        mode): angle (n,) radians, shift (n, 2) half widths, scale (n,) zoom, for the latents the model has."""
        cfg = self.config
        inv = cfg.invariances
        angle = shift = scale = None
        if "rotation" in inv:
            if cfg.rotation_mode == "full":
                angle = (torch.rand(n, device=device) * 2 - 1) * math.pi
            else:
                angle = cfg.rotation_prior * torch.randn(n, device=device)
        if "translation" in inv:
            shift = cfg.translation_prior * torch.randn(n, 2, device=device)
        if "scale" in inv:
            scale = torch.exp(cfg.scale_prior * torch.randn(n, device=device))
        if "shift" in inv:
            return shift_pose(cfg.shift_prior * torch.randn(n, device=device), cfg.image_shape[2])
        return Pose(angle=angle, shift=shift, scale=scale)

    def consistency(self, enc: Encoding, moved: Encoding, delta: Pose) -> Tensor:
        """(N,) squared mismatch, in prior units, between the encoding of images moved by ``delta``
        and ``delta`` composed with the encoding of the originals (content: they should agree)."""
        cfg = self.config
        err = ((moved.z_mean - enc.z_mean) ** 2).sum(1)
        p, q = enc.pose, moved.pose
        if p.angle is not None:
            err = err + (wrap_angle(q.angle - p.angle - delta.angle) / cfg.rotation_prior) ** 2
        if "shift" in enc.parts:  # 1-D signals, in samples
            length = cfg.image_shape[2]
            err = err + ((moved.parts["shift"] - enc.parts["shift"] - pose_shift(delta, length)) / cfg.shift_prior) ** 2
        elif p.shift is not None:
            d = pose_matrix(delta)  # moved pose = delta o pose: t' = A_delta t + t_delta
            expect = (d[:, :, :2] @ p.shift[:, :, None])[:, :, 0] + d[:, :, 2]
            err = err + ((q.shift - expect) ** 2).sum(1) / cfg.translation_prior**2
        if p.scale is not None:
            err = err + ((torch.log(q.scale) - torch.log(p.scale) - torch.log(delta.scale)) / cfg.scale_prior) ** 2
        return err

    def kl(self, enc: Encoding) -> Tensor:
        """(N,) KL of content and pose posteriors from their priors, nats (the content's:
        :meth:`LatentModel.content_kl`, an estimate on the draw with a content flow)."""
        kl = self.content_kl(enc)
        if enc.pose is None:
            return kl
        p, s = enc.pose, enc.pose_std
        cfg = self.config
        rot = getattr(enc, "rotation", None)
        if rot is not None:  # the exact KL of the (bin, offset) mixture
            kl = kl + rot.kl()
        elif p.angle is not None:
            logvar = 2 * torch.log(s.angle)
            if cfg.rotation_mode == "full":
                kl = kl + (_LOG_2PI - 0.5 * (_LOG_2PI + 1 + logvar)).clamp_min(0)
            else:
                kl = kl + gaussian_kl(p.angle[:, None], logvar[:, None], cfg.rotation_prior)
        if "shift" in enc.parts:  # 1-D signals, in samples
            kl = kl + gaussian_kl(enc.parts["shift"][:, None], 2 * torch.log(enc.parts["shift_std"])[:, None],
                                  cfg.shift_prior)
        elif p.shift is not None:
            kl = kl + gaussian_kl(p.shift, 2 * torch.log(s.shift), cfg.translation_prior)
        if p.scale is not None:
            kl = kl + gaussian_kl(torch.log(p.scale)[:, None], 2 * torch.log(s.scale)[:, None], cfg.scale_prior)
        return kl


@dataclasses.dataclass
class MixtureEncoding(Encoding):
    """An :class:`Encoding` whose angle posterior is a bin-and-offset mixture.

    Attributes:
        rotation: the :class:`~affinevae.nn.circular.RotationPosterior` (logits (N, K), offset
            means and log-stds (N, K)); ``pose.angle`` is its posterior-mean angle.
    """

    rotation: Optional[RotationPosterior] = None

    def index(self, idx) -> "MixtureEncoding":
        """The sub-batch ``idx`` (slice, index tensor or mask), rotation posterior included."""
        sub = super().index(idx)
        return MixtureEncoding(sub.z_mean, sub.z_std, sub.pose, sub.pose_std, sub.parts,
                               rotation=None if self.rotation is None else self.rotation.index(idx))


def repeat_pose(pose: PoseLike, rows: Tensor) -> PoseLike:
    """The pose of every row in ``rows`` (M,) indices: a :class:`Pose`, (M, 2, 3) matrices or None."""
    if pose is None:
        return None
    if isinstance(pose, Tensor):
        return pose[rows]
    return pose.index(rows)


def rep_pose(pose, n: int):
    """Each row of a :class:`Pose` (or of (B, 2, 3) matrices) repeated ``n`` times (B*n rows)."""
    if isinstance(pose, Pose):
        return Pose(**{k: None if v is None else v.repeat_interleave(n, 0) for k, v in pose.items()})
    return pose.repeat_interleave(n, 0)


@dataclasses.dataclass(frozen=True)
class CRVAEConfig(RVAEConfig):
    """crVAE options: as :class:`RVAEConfig`, and ``num_classes`` >= 2 (default 10)."""

    num_classes: int = 10

    #: No content anchor by default: the crVAE's content is the style within a given class, which
    #: targets that gather images by class would fight.
    default_content_anchor: ClassVar[float] = 0.0

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        super().validate()
        check(self.num_classes >= 2, f"crvae needs num_classes >= 2, got {self.num_classes}")


@MODELS.register("crvae")
class CRVAE(RVAE):
    """Class-conditional rVAE: the one-hot class joins the encoder input and the decoder's
    content latents; ``encode``/``decode``/``sample``/training need labels ``y`` (N,)."""

    config_class = CRVAEConfig
    family = "crvae"
    conditional = True
