"""The affine VAE (after Bidart & Wong 2019): a VAE behind a searched affine transform.

A VAE's negative ELBO says how unusual an image looks to it. The AVAE puts an affine
transform ``T(params)`` before the encoder and its exact inverse after the decoder, and for
every image searches the parameters that maximise the ELBO (:mod:`affinevae.pose`):

    canonical = warp(x, T)                     # undo the pose (grid sampling)
    z ~ q(z | canonical);  p = decoder(z)      # the inner VAE, in the canonical frame
    x_params = warp(p, T^-1)                   # likelihood parameters back in the observed frame
    ELBO(x; params) = E_q[log p(x | x_params)] - KL(q || prior)

**Scored in the observed frame, on purpose.** Every pixel of the original ``x`` is
explained, whatever the pose, so the ELBO of different poses compare like with like and a
pose cannot "win" by warping content out of the frame (scoring in the canonical frame
would drop whatever a zoom or shift pushes outside and reward it). Observed pixels that
map outside the canonical frame take the decoder's border values (``padding_mode='border'``
for the rendered likelihood parameters: background stays background, e.g. the corners
uncovered by a 45 degree rotation), so a rotation costs nothing by itself. Each pose thus
defines a proper density p(x | z, pose) and the ELBO is a valid bound for it.

At ``params = 0`` the AVAE is its inner VAE (``elbo_before`` in :func:`align`), exactly so where the
AVAE's ``interpolation`` is the inner model's own (bilinear, both defaults): otherwise a pose the inner
model renders itself (an rVAE's inferred angle) is rendered with the AVAE's interpolation.

Training (``pose_optimise=True``): in train mode :meth:`AVAE.forward` first finds every
image's pose without gradients (``train_search``), then takes the gradient step on the images in
their found pose. Found poses are recorded per training image (the trainer's ``index``) and
written each epoch to ``run_dir/poses.npz`` (:func:`load_pose_record`). A small pose head
learns to predict the searched pose from the image (its squared error, weight ``head_weight``,
is added to ``loss``) and serves as the first restart (the amortised start), so that inference
needs few restarts and steps; :func:`affinevae.pose.amortise.fit_pose_head` trains it separately
on search results. With ``warm_start`` (default) every image's found pose is cached
(:class:`~affinevae.pose.cache.PoseCache`) and refined by the weight step's own gradient with
respect to the pose; an image whose head agrees with its cached pose, or whose head views agree,
is not searched (:data:`TRAIN_SEARCH`), so that after the first epoch only a few images are.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional

import torch
from torch import Tensor, nn

from ..config import check, check_choice, check_positive
from ..data.inputs import as_images
from ..errors import AffineVAEError
from ..nn.affine import PoseLike, canonicalise, render
from ..nn.signal import is_signal_shape
from ..nn.transforms import TRANSFORMS, Parameterisation, get_transform
from ..pose.align import AlignResult, align as align_poses
from ..pose.cache import PoseCache
from ..pose.nets import PoseHead, PoseRefiner
from ..pose.record import POSES_FILE, PoseRecord, PoseRecorder, load_pose_record
from ..pose.search import SearchConfig, SearchResult, search_poses
from ..rng import derived_seed, seeded
from ..registry import MODELS
from .base import Encoding, LatentModel, ModelConfig, ModelOutput

__all__ = ["AVAE", "AVAEConfig", "POSES_FILE", "PoseRecord", "load_pose_record"]
_MIRRORED = tuple(f.name for f in dataclasses.fields(ModelConfig))
TRAIN_SEARCH = SearchConfig(restarts=8, keep=1, steps=0, head_views=4, head_trust=0.9, warm_trust=0.3)
"""The default search before each training step. An image keeps, unsearched, its cached pose
(last epoch's, refined by the training step; ``warm_start``) when the pose head agrees with it
within 0.3 rad (``warm_trust``), or the head's pose (the consensus of its 4 quarter-turn views;
2 views for non-square images, 1 for transforms without an angle) when those views agree
(``head_trust``). Only the others are searched: 8 starts (the head's pose, the cached pose, the
identity, random angles) scored in one batched pass, the best kept without Adam steps (the
training step refines it through the cache). Until the head is trained every image is searched."""
_DEFAULTS = ModelConfig()


def _search_config(value: Any, name: str) -> SearchConfig:
    if isinstance(value, SearchConfig):
        return value
    if isinstance(value, Mapping):
        return SearchConfig.from_dict(value, what=f"avae {name}")
    raise AffineVAEError(f"avae {name} must be a SearchConfig or a dict of its options, got {type(value).__name__}")


#: The inner model's named anchor terms (an rVAE's, :class:`~affinevae.models.rvae.RVAEConfig`): they need
#: the model's own fit (its ``fit_context``), which the AVAE's pose search does not run, so they are 0 inside it.
_INNER_ANCHORS = ("pose_anchor", "content_anchor")


@dataclasses.dataclass(frozen=True)
class AVAEConfig(ModelConfig):
    """Options of the affine VAE.

    It is a :class:`ModelConfig` whose shared fields (``image_shape``, ``latent_dim``,
    ``num_classes``, ``likelihood``, ``beta`` ...) mirror the inner model's: they are read from
    ``inner_config`` (a value given for one of them at the top level moves there), and are not
    written by :meth:`to_dict` (``inner_config`` holds them).

    Attributes:
        inner: family name of the wrapped model ('vae', 'cvae', ...; not 'avae').
        inner_config: that model's config as a dict (its own options; see its config class).
        transform: parameterisation name (:data:`affinevae.nn.transforms.TRANSFORMS`).
        search: :class:`SearchConfig` for test time (eval-mode forward, :meth:`AVAE.align`).
        train_search: :class:`SearchConfig` used before each training step (default
            :data:`TRAIN_SEARCH`: the pose head's pose where its views agree, a search elsewhere).
        pose_optimise: search poses during training (False: train the inner VAE on the
            images as they are, the "no pose optimisation" baseline).
        pose_head: build the amortised pose head.
        head_channels: conv widths of the pose head.
        head_hidden: width of the pose head's hidden layer.
        head_hypotheses: poses the head proposes per image (winner-takes-all training).
        head_weight: weight of the head's squared error in ``loss`` (unitless error; small
            next to the nats of the ELBO).
        pose_refiner: build the pose refiner (the second stage of the amortised start,
            :class:`~affinevae.pose.nets.PoseRefiner`; :func:`~affinevae.pose.amortise.fit_pose_refiner`
            builds it on demand and sets this).
        refiner_channels: conv widths of the refiner; refiner_hidden: its hidden width.
        warm_start: in training, keep every image's found pose (a :class:`~affinevae.pose.cache.PoseCache`,
            in memory) and start its next search from it; with ``train_search.warm_trust`` an
            image whose pose head agrees with it keeps it without a search. The cache is not
            saved with the model; the trainer keeps it in each checkpoint
            (:meth:`training_state`), so a resumed run continues exactly.
        cache_refine: (with ``warm_start``) the training step's own gradient with respect to the
            pose moves each cached pose by one adaptive-size (Rprop) step: a free refinement per epoch.
        padding: how ``warp`` fills pixels from outside the observed image ('zeros' for a
            black background, 'border' to replicate the edge).
        record_poses: keep the found pose of every training image (``poses.npz``).
        interpolation: 'bilinear' or 'bicubic' grid sampling for the warps (bicubic blurs less).

    Options of the inner model may also be given at the top level of :meth:`from_dict`
    (e.g. ``latent_dim``); they are moved into ``inner_config``.
    """

    DECODER_NAMES: ClassVar = None  # the inner model's config checks its decoder

    inner: str = "vae"
    inner_config: dict = dataclasses.field(default_factory=dict)
    transform: str = "rotation"
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    train_search: SearchConfig = dataclasses.field(default_factory=lambda: TRAIN_SEARCH)
    pose_optimise: bool = True
    pose_head: bool = True
    head_channels: tuple = (16, 32)
    head_hidden: int = 64
    head_hypotheses: int = 2
    head_weight: float = 1.0
    pose_refiner: bool = False
    refiner_channels: tuple = (8, 16)
    refiner_hidden: int = 64
    warm_start: bool = True
    cache_refine: bool = True
    padding: str = "zeros"
    record_poses: bool = True
    interpolation: str = "bilinear"

    #: The shared fields (``lowpass`` among them) live in ``inner_config``, whose family fills its own.
    FORMER_DEFAULTS: ClassVar[dict] = {}

    def __post_init__(self) -> None:
        object.__setattr__(self, "search", _search_config(self.search, "search"))
        object.__setattr__(self, "train_search", _search_config(self.train_search, "train_search"))
        check(isinstance(self.inner, str), f"avae inner must be a model family name, got {self.inner!r}")
        check(self.inner != "avae", "avae cannot wrap another avae")
        check(isinstance(self.inner_config, Mapping), f"avae inner_config must be a dict, got {type(self.inner_config).__name__}")
        inner_config = dict(self.inner_config)
        for name in _MIRRORED:  # shared fields given at the top level belong to the inner model
            value = getattr(self, name)
            value = tuple(value) if isinstance(value, list) else value
            if value != getattr(_DEFAULTS, name):
                given = inner_config.get(name, value)
                if (tuple(given) if isinstance(given, list) else given) != value:
                    raise AffineVAEError(f"avae option {name!r} given both at the top level and in inner_config")
                inner_config[name] = value
        cls = MODELS.get(self.inner)
        check(not getattr(cls, "semi_supervised", False),
              f"avae cannot wrap '{self.inner}': a semi-supervised model's label terms (classifier or regressor, "
              "labelled memory) do not run inside the pose search; train it with its own pose (e.g. ssrvae)")
        # off inside the pose search (an anchored rVAE's defaults would record them on; saved runs read alike)
        inner_config.update({name: 0.0 for name in _INNER_ANCHORS if name in cls.config_class.field_names()})
        canonical = cls.config_class.from_dict(inner_config, what=f"model '{self.inner}' (inside avae)")
        object.__setattr__(self, "inner_config", canonical.to_dict())
        for name in _MIRRORED:
            object.__setattr__(self, name, getattr(canonical, name))
        check(not is_signal_shape(tuple(self.image_shape)),
              f"avae searches the pose of images (turns, zooms, shifts); image_shape {tuple(self.image_shape)} is "
              "of 1-D signals (C x 1 x L), which are not turned: a signal's shift is a latent of the rvae "
              "(model rvae, invariances shift)")
        if self.train_search == TRAIN_SEARCH and isinstance(self.transform, str) and self.transform in TRANSFORMS:
            views = 1 if TRANSFORMS.get(self.transform).column("angle") is None else (
                4 if self.image_shape[1] == self.image_shape[2] else 2)
            object.__setattr__(self, "train_search", TRAIN_SEARCH.replace(head_views=views))
        super().__post_init__()

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        check_choice("transform", self.transform, TRANSFORMS.names())
        for name in ("pose_optimise", "pose_head", "pose_refiner", "warm_start", "cache_refine", "record_poses"):
            check(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")
        for net in ("head", "refiner"):
            channels, hidden = getattr(self, f"{net}_channels"), getattr(self, f"{net}_hidden")
            check(len(channels) >= 1 and all(isinstance(c, int) and c > 0 for c in channels),
                  f"{net}_channels must be one or more positive integers, got {channels!r}")
            check(isinstance(hidden, int) and hidden >= 1, f"{net}_hidden must be an integer >= 1, got {hidden!r}")
        check(not self.pose_refiner or TRANSFORMS.get(self.transform).column("angle") is not None,
              f"pose_refiner corrects the angle: transform '{self.transform}' has none")
        check(isinstance(self.head_hypotheses, int) and self.head_hypotheses >= 1,
              f"head_hypotheses must be an integer >= 1, got {self.head_hypotheses!r}")
        check_positive("head_weight", self.head_weight, allow_zero=True)
        check_choice("padding", self.padding, ["zeros", "border"])
        check_choice("interpolation", self.interpolation, ["bilinear", "bicubic"])

    # ------------------------------------------------------------------ nested configs
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the AVAE's own fields; ``search``/``train_search`` become dicts,
        ``inner_config`` a copy (it holds the mirrored shared fields)."""
        out = {k: v for k, v in super().to_dict().items() if k not in _MIRRORED}
        out["search"] = self.search.to_dict()
        out["train_search"] = self.train_search.to_dict()
        out["inner_config"] = dict(self.inner_config)
        return out

    @classmethod
    def _inner_fields(cls, data: Mapping[str, Any]) -> list[str]:
        """The fields of the inner model ``data`` names (``inner``, default 'vae'); none for an unknown one."""
        inner_name = data.get("inner", "vae")
        known = isinstance(inner_name, str) and inner_name in MODELS
        return MODELS.get(inner_name).config_class.field_names() if known else []

    @classmethod
    def option_names(cls, data: Mapping[str, Any]) -> list[str]:
        """Its fields and its inner model's (given at the top level, :meth:`from_dict` moves them inside)."""
        own = cls.field_names()
        return own + [name for name in cls._inner_fields(data) if name not in own]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, what: Optional[str] = None) -> "AVAEConfig":
        """Build from a dict; the inner model's own options may be given at the top level."""
        own = set(cls.field_names()) - set(_MIRRORED)
        data = dict(data)
        given = data.get("inner_config")
        check(given is None or isinstance(given, Mapping),
              f"avae inner_config must be a dict of the inner model's options, got {type(given).__name__} {given!r}")
        inner_fields = set(cls._inner_fields(data))
        moved = {k: data.pop(k) for k in list(data) if k not in own and k in inner_fields}
        if moved:
            inner_cfg = dict(data.get("inner_config") or {})
            clash = sorted(set(moved) & set(inner_cfg))
            if clash:
                raise AffineVAEError(f"avae option {clash[0]!r} given both at the top level and in inner_config")
            data["inner_config"] = {**inner_cfg, **moved}
        return super().from_dict(data, what=what or "model 'avae'")

    @classmethod
    def saved_dict(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """A saved AVAE config's dict with the fields it predates filled (:attr:`FORMER_DEFAULTS`), its
        ``inner_config``'s by the inner family's own (a full-circle rVAE inside: ``anchor_symmetry`` 1)."""
        out = super().saved_dict(data)
        inner = out.get("inner", "vae")
        if isinstance(out.get("inner_config"), Mapping) and isinstance(inner, str) and inner in MODELS:
            out["inner_config"] = MODELS.get(inner).config_class.saved_dict(out["inner_config"])
        return out

    # ------------------------------------------------------------------ inner facts
    @property
    def inner_model_config(self) -> ModelConfig:
        """The inner model's config object."""
        return MODELS.get(self.inner).config_class.from_dict(self.inner_config)


#: Images per block whose ELBO posterior samples share one derived seed (:meth:`AVAE.elbo_and_canonical`):
#: the sampled ELBO of an image is the same for every ``chunk`` of at least this many images.
NOISE_BLOCK = 64


@MODELS.register("avae")
class AVAE(LatentModel):
    """Affine VAE: wraps a VAE/cVAE (any registered family) and searches each image's pose.

    Example::

        avae = AVAE(trained_vae, transform="rotation")
        res = avae.align(x)                 # res.angle (N,) radians, res.elbo_after (N,) nats
        fit(AVAE(VAE(latent_dim=8)), data)  # pose-optimised training

    Args:
        vae: the model to wrap, or an :class:`AVAEConfig` (builds a fresh inner model), or
            None (defaults). A wrapped rVAE's ``pose_anchor`` and ``content_anchor`` are set to 0 in its
            own config too (they need its own fit, which the pose search does not run): fitting that
            object alone afterwards runs without them.
        transform, search, train_search, pose_optimise, pose_head: override those fields of
            ``config``.
        config: :class:`AVAEConfig` (its ``inner``/``inner_config`` are replaced by ``vae``'s).
    """

    config_class = AVAEConfig
    family = "avae"
    pose_source = "searched"
    render_padding = "border"

    def __init__(self, vae: LatentModel | AVAEConfig | None = None, transform: Optional[str] = None,
                 search: Optional[SearchConfig] = None, train_search: Optional[SearchConfig] = None,
                 pose_optimise: Optional[bool] = None, pose_head: Optional[bool] = None,
                 config: Optional[AVAEConfig] = None) -> None:
        if isinstance(vae, AVAEConfig):
            if config is not None:
                raise AffineVAEError("AVAE: give the config either positionally or as config=, not both")
            config, vae = vae, None
        if config is not None and not isinstance(config, AVAEConfig):
            raise AffineVAEError(f"AVAE needs an AVAEConfig, got {type(config).__name__}")
        config = config or AVAEConfig()
        if vae is not None:
            if not isinstance(vae, LatentModel) or isinstance(vae, AVAE):
                raise AffineVAEError(f"AVAE wraps a VAE, cVAE or other LatentModel, got {type(vae).__name__}")
            config = config.replace(inner=vae.family, inner_config=vae.config.to_dict())
            if vae.config.to_dict() != config.inner_config:  # its anchors, off inside the search: the model says so too
                vae.config = type(vae.config).from_dict(config.inner_config)
        changes = {"transform": transform, "search": search, "train_search": train_search,
                   "pose_optimise": pose_optimise, "pose_head": pose_head}
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes:  # none of them touches the inner model
            config = config.replace(**changes)
        super().__init__(config, networks=None if vae is None else {"vae": vae})

    # ------------------------------------------------------------------ construction
    @property
    def injected_networks(self) -> tuple[str, ...]:
        """The inner model's injected networks, as ``vae.<name>`` (the inner model itself is
        described by the config)."""
        return tuple(f"vae.{name}" for name in self.vae.injected_networks)

    def build_observation(self) -> None:
        """Nothing: the likelihood, its sigma and the low-pass filter are the inner model's."""

    def install_observation(self) -> None:
        """The inner model's networks observe their images themselves; with its ``lowpass`` the pose
        head (and the refiner, :meth:`_build_refiner`) read theirs through :meth:`observe` too."""
        if self.lowpass_filter is not None and self.head is not None:
            self.head.register_forward_pre_hook(self._observe_first)

    @property
    def lowpass_filter(self):
        """The inner model's low-pass filter (``lowpass``), or None."""
        return self.vae.lowpass_filter

    def observe(self, x: Tensor) -> Tensor:
        """The inner model's :meth:`~affinevae.models.base.LatentModel.observe`: (N, C, H, W) -> (N, C, H, W)."""
        return self.vae.observe(x)

    def unobserve(self, x: Tensor) -> Tensor:
        """The inner model's :meth:`~affinevae.models.base.LatentModel.unobserve`: (N, C, H, W) -> (N, C, H, W)."""
        return self.vae.unobserve(x)

    def build(self, vae: Optional[LatentModel] = None) -> None:
        """The inner model (from ``inner``/``inner_config``, or the given one), the transform,
        the pose networks and the pose recorder."""
        cfg = self.config
        self.vae = vae if vae is not None else MODELS.get(cfg.inner).from_config_dict(cfg.inner_config)
        self.build_pose_networks()

    def build_pose_networks(self) -> None:
        """The transform, the pose head (if ``pose_head``), the refiner (if ``pose_refiner``) and the recorder."""
        cfg = self.config
        self.transform: Parameterisation = get_transform(cfg.transform)
        self.head: Optional[PoseHead] = None
        if cfg.pose_head:
            self.head = PoseHead(cfg.image_shape, self.transform, cfg.search.ranges(),
                                 channels=tuple(cfg.head_channels), hidden=cfg.head_hidden,
                                 hypotheses=cfg.head_hypotheses)
            # 1 once the head has been trained (by pose-optimised training or fit_pose_head).
            self.register_buffer("head_trained", torch.zeros((), dtype=torch.int64))
        self.refiner: Optional[PoseRefiner] = None
        if cfg.pose_refiner:
            self._build_refiner()
        self.recorder = PoseRecorder(self.transform)
        # per training image: the last found pose (warm starts; training state, not saved)
        self.cache: Optional[PoseCache] = PoseCache(self.transform, cfg.train_search.ranges()) if cfg.warm_start else None

    def _build_refiner(self) -> None:
        cfg = self.config
        self.refiner = PoseRefiner(cfg.image_shape, self.transform, channels=tuple(cfg.refiner_channels),
                                   hidden=cfg.refiner_hidden).to(self.device)
        if self.lowpass_filter is not None:  # built now or later (add_refiner): it reads observed images
            self.refiner.register_forward_pre_hook(self._observe_first)
        # 1 once the refiner has been trained (fit_pose_refiner)
        self.register_buffer("refiner_trained", torch.zeros((), dtype=torch.int64, device=self.device))

    def add_refiner(self) -> PoseRefiner:
        """The pose refiner, built (untrained, ``pose_refiner`` set in the config) if there is none."""
        if self.refiner is None:
            self.config = self.config.replace(pose_refiner=True)  # raises for a transform without an angle
            self._build_refiner()
        return self.refiner

    def inner_parameters(self):
        """The inner model's parameters (not the pose head's or the refiner's)."""
        return self.vae.parameters()

    # ------------------------------------------------------------------ what the inner model owns
    @property
    def likelihood(self):
        """The inner model's likelihood."""
        return self.vae.likelihood

    @property
    def log_sigma(self) -> Tensor:
        """The inner model's natural log of the Gaussian pixel standard deviation (pixel-value
        units): a 0-d tensor (shape ()), without the ``sigma_radius`` window (see :meth:`pixel_log_sigma`)."""
        return self.vae.log_sigma

    def pixel_log_sigma(self) -> Tensor:
        """The inner model's log pixel standard deviation, with its window (scalar or (H, W))."""
        return self.vae.pixel_log_sigma()

    @property
    def conditional(self) -> bool:
        """Whether the inner model is class-conditional."""
        return self.vae.conditional

    @classmethod
    def labelled_as(cls, options: Mapping[str, Any]) -> type:
        """The inner family's class (``options['inner']``, default :attr:`AVAEConfig.inner`): the
        wrapper follows its label rules. An unknown name is refused in one line, as the config does."""
        inner = options.get("inner", AVAEConfig.inner)
        if not isinstance(inner, str) or inner == "avae":
            raise AffineVAEError(f"avae inner must be a model family name other than 'avae', got {inner!r}")
        return MODELS.get(inner)

    @property
    def takes_labels(self) -> bool:
        """Whether the public methods take labels ``y``: those of the inner model."""
        return self.vae.takes_labels

    @property
    def learns_angle(self) -> bool:
        """Whether the searched pose has an angle (its transform's)."""
        return bool(self.transform.has_angle)

    @property
    def family_label(self) -> str:
        """'avae around a cvae' and the like: what messages name."""
        return f"avae around a {self.vae.family}"

    @property
    def mixed_classes(self) -> int:
        """The inner model's (a joint one's K: decode averages over them, sample draws one)."""
        return self.vae.mixed_classes

    @property
    def renders_classes(self) -> bool:
        """Whether :meth:`decode`/:meth:`sample` take a class ``y``: as the inner model's (a joint one renders its classes)."""
        return self.vae.renders_classes

    @property
    def variational(self) -> bool:
        """Whether the inner model is variational."""
        return self.vae.variational

    def compile_targets(self) -> list[nn.Module]:
        """The inner model's networks (the search and the weight step both run them)."""
        return self.vae.compile_targets()

    def init_from_data(self, x: Tensor) -> None:
        """Start the inner model's decoder at the mean of the (N, C, H, W) training images ``x``."""
        self.vae.init_from_data(x)

    # ------------------------------------------------------------------ stages (the inner model's, in the found pose)
    def canonicalise(self, x: Tensor, pose) -> Tensor:
        """Undo ``pose`` (a :class:`Pose`, parameters (N, P) or a search result) on (N, C, H, W) observed images
        (``warp(x, T)`` with the config's padding and interpolation); ``x`` itself for None."""
        return canonicalise(x, self.pose_of(pose), padding=self.config.padding, mode=self.config.interpolation)

    def posterior(self, h: Tensor) -> Encoding:
        """The inner model's posterior of its encoder output ``h``, (N, ``encoder_out_dim``) of the
        inner model (an equivariant encoder's features as they come): an :class:`Encoding` with
        ``z_mean``/``z_std`` (N, D)."""
        return self.vae.posterior(h)

    def infer(self, x: Tensor, y: Optional[Tensor] = None) -> Encoding:
        """The inner model's posterior of canonical (N, C, H, W) images."""
        return self.vae.infer(x, y)

    def infer_for_loss(self, x: Tensor, y: Optional[Tensor]) -> tuple[Encoding, dict]:
        """The inner model's own (what :meth:`run_stages` runs): its posterior of the canonical (N, C,
        H, W) images ``x`` and, in a training weight step (:attr:`in_weight_step`) only, its named
        inference terms (the rVAE's 'equivariance', the joint model's 'class_consistency'); the pose
        search's passes (:meth:`objective`, inside :meth:`search_passes`) and evaluation get none (the
        search scores the ELBO alone). The inner rVAE's pose anchor does not apply (its weight is 0
        inside an AVAE): its targets are angles of the images as given, and the inner model sees
        them in their searched pose."""
        return self.vae.infer_for_loss(x, y)

    def on_epoch_start(self, epoch: int, x: Tensor, y: Optional[Tensor], steps_done: int, seed: int) -> dict:
        """The inner model's trainer hook (the joint model's k-means start of its classifier, on the
        (N, C, H, W) training images ``x`` as given); arguments and record as
        :meth:`LatentModel.on_epoch_start`."""
        return self.vae.on_epoch_start(epoch, x, y, steps_done, seed)

    def draw(self, post: Encoding, sample: bool = True):
        """The inner model's latent sample (and its inferred pose, if it has one)."""
        return self.vae.draw(post, sample)

    def generate(self, z: Tensor, y: Optional[Tensor] = None):
        """The inner model's canonical object of latents ``z`` (N, D)."""
        return self.vae.generate(z, y)

    def render(self, canonical, pose) -> Tensor:
        """(N, C, H, W) likelihood parameters of ``canonical`` put in ``pose`` (a :class:`Pose`, (N, 2, 3)
        forward matrices or None): a canonical (N, C, H, W) image is warped by ``T^-1`` with border
        padding (uncovered corners take the decoder's background edge) and the config's
        interpolation; a :class:`~affinevae.nn.affine.Canonical` renders itself there."""
        return render(canonical, pose, padding="border", mode=self.config.interpolation)

    def run_stages(self, x: Tensor, y: Optional[Tensor], found=None, sample: bool = True,
                   canon: Optional[Tensor] = None) -> ModelOutput:
        """The pass after the search: ``x`` canonicalised at the found pose (the config's padding and
        interpolation), then the inner model's own pass (:meth:`LatentModel.run_stages`: its inference
        terms, its draw, its rendering of rotation bins or classes and its ``score``) with the found
        pose composed into every pose it renders, rendered with border padding and the config's
        interpolation (:meth:`LatentModel.rendering`).

        ``x`` (N, C, H, W) and ``y`` ((N,) labels or None) checked; ``found`` a search result, pose
        parameters (N, P) or a :class:`Pose` (None: the identity, the inner model's pass, to the bit where
        the AVAE's ``interpolation`` is the inner model's, bilinear by default);
        ``canon`` ``canonicalise(x, found)`` when already computed. Returns the inner model's
        :class:`ModelOutput` (``elbo`` (N,) nats, ``x_params`` (N, C, H, W), ``pose`` the composed pose)."""
        found_pose = self.pose_of(found)
        if canon is None:
            canon = self.canonicalise(x, found_pose)
        with self.vae.rendering("border", self.config.interpolation):
            return self.vae.run_stages(x, y, found_pose, sample, canon)

    def decode_and_score(self, x: Tensor, y: Optional[Tensor], z: Tensor, pose, post: Encoding, terms: dict,
                         sample: bool) -> ModelOutput:
        """The inner model's own tail of the pass (its generate -> render -> score, or its class
        expectation), rendered as the AVAE renders (border padding, the config's interpolation), so the
        stages composed by hand give :meth:`run_stages`'s output. Arguments and result as
        :meth:`LatentModel.decode_and_score` (``z`` (N, D), ``pose`` the composed pose, ``elbo`` (N,) nats)."""
        with self.vae.rendering("border", self.config.interpolation):
            return self.vae.decode_and_score(x, y, z, pose, post, terms, sample)

    def kl(self, post: Encoding) -> Tensor:
        """The inner model's (N,) KL, nats."""
        return self.vae.kl(post)

    def find_pose(self, x: Tensor, y: Optional[Tensor], index: Optional[Tensor] = None,
                  labels: Optional[Tensor] = None) -> Optional[SearchResult]:
        """The search result (its ``params`` (N, P) are the found pose) of checked images (None:
        the identity, for training with ``pose_optimise=False``). Train mode uses ``train_search``
        (restarts from torch's global generator, seeded and checkpointed by the trainer; with
        ``head_trust`` the images whose pose head is confident keep its pose and only the others
        are searched; the pose cache (warm starts, ``warm_trust``) and the pose record by ``index``
        (N,), the images' positions in the training set, with their raw ``labels``; with
        ``cache_refine`` the returned ``params`` are a leaf whose gradient in the weight step's
        backward refines the cached poses); eval mode uses ``search``, reproducible with its seed."""
        if not self.training:
            return self.inference_pose(x, y)
        if not self.config.pose_optimise:
            return None
        cfg = self.config.train_search
        cache = self.cache if index is not None else None
        extra = cache.starts(index, x.device) if cache is not None else None
        found = search_poses(self, x, y, cfg, extra_starts=extra).detach()
        self.recorder.count(len(x) if found.searched is None else int(found.searched.sum()), len(x))
        if index is not None and self.config.record_poses:
            self.recorder.record(index, found.params, labels)
        if cache is not None:
            cache.store(index, found.params)
            if self.config.cache_refine and torch.is_grad_enabled():  # the step's backward refines the cache
                found = dataclasses.replace(found, params=cache.attach(index, found.params))
        return found

    def inference_pose(self, x: Tensor, y: Optional[Tensor]) -> SearchResult:
        """The search result of the ``search`` config with its seed (``params`` (N, P); used by ``encode``)."""
        cfg = self.config.search
        return search_poses(self, x, y, cfg, generator=torch.Generator().manual_seed(cfg.seed)).detach()

    def pose_of(self, found) -> PoseLike:
        """The :class:`Pose` of a :class:`~affinevae.pose.search.SearchResult` or of parameters (N, P)
        (None stays None; a Pose or (N, 2, 3) matrices pass through)."""
        if isinstance(found, SearchResult):
            found = found.params
        if isinstance(found, Tensor) and found.dim() == 2:
            return self.transform.to_pose(found)
        return found

    def pose_terms(self, x: Tensor, found) -> dict:
        """'pose_head': ``head_weight`` times the pose head's error on the searched poses (the images
        that kept the head's own pose teach it nothing and are left out); marks the head trained
        in training. Empty without a head, a searched pose or a searched image.

        ``x`` (N, C, H, W) checked images; ``found`` the :class:`SearchResult` of :meth:`find_pose`
        (``params`` (N, P), ``searched`` (N,) bool or None) or None. Returns ``{name: scalar tensor}``
        (the head's error is unitless, see ``head_weight``)."""
        if found is None or self.head is None or self.config.head_weight <= 0:
            return {}
        if self.training:
            self.head_trained.fill_(1)
        params, xs = found.params, x
        if found.searched is not None:
            if not bool(found.searched.any()):
                return {}
            params, xs = params[found.searched], x[found.searched]
        return {"pose_head": self.config.head_weight * self.head.loss(self.head(xs), params).mean()}

    # ------------------------------------------------------------------ passes at given poses
    def pass_at(self, x: Tensor, y: Optional[Tensor], params: Optional[Tensor], sample: bool = True,
                canon: Optional[Tensor] = None) -> ModelOutput:
        """The pass at pose parameters ``params`` (N, P) (None = identity, the inner model)
        on checked inputs (the identity renders with the config's ``interpolation``: see :meth:`run_stages`);
        ``canon``: ``canonicalise(x, params)`` if already computed. Gradients
        flow into ``params``."""
        return self.run_stages(x, y, params, sample, canon)

    def forward_at(self, x: Tensor, y: Optional[Tensor] = None, params: Optional[Tensor] = None,
                   sample: bool = True) -> ModelOutput:
        """The full pass with the pose fixed to ``params`` (N, P) (None = identity): no search."""
        x, y = self.check_input(x, y)
        if params is not None:
            params = self.transform.check(params).to(x.device, torch.float32)
            if len(params) != len(x):
                raise AffineVAEError(f"got {len(params)} poses for {len(x)} images")
        return self.pass_at(x, y, params, sample)

    def objective(self, x: Tensor, y: Optional[Tensor], params: Tensor) -> Tensor:
        """(N,) deterministic search objective: -ELBO (nats) with the latent at the posterior mean.

        ``x`` (N, C, H, W) and ``y`` must already be checked; ``params`` (N, P).
        """
        with self.search_passes():  # a search's scoring pass: no training terms, no training step counted
            return -self.pass_at(x, y, params, sample=False).elbo

    @property
    def has_trained_head(self) -> bool:
        """Whether the model has a pose head that was trained (by pose-optimised training or ``amortise``):
        the search's amortised start and the head options (``head_starts``, ``head_views``, ``head_trust``)
        apply only then."""
        return self.head is not None and int(self.head_trained) != 0

    def predict_pose(self, x: Tensor, k: int = 1, views: int = 1, confidence: bool = False):
        """(N, k, P) the head's ``k`` best poses for (N, C, H, W) images (the amortised start), or None
        if there is no trained head; ``views`` 2 or 4: quarter-turn test-time augmentation;
        ``confidence``: also the (N,) confidences in (0, 1] (see
        :meth:`~affinevae.pose.nets.PoseHead.predict`)."""
        if not self.has_trained_head:
            return None
        x = as_images(x, image_shape=self.config.image_shape)[0].to(self.device)
        return self.head.predict(x, k, views, confidence)

    @torch.no_grad()
    def refine_pose(self, x: Tensor, params: Tensor) -> Optional[Tensor]:
        """(N, P) poses ``params`` of (N, C, H, W) checked images ``x`` with the angle corrected by
        the trained refiner (one warp and one refiner pass), or None without a trained refiner.

        ``params`` columns are in the transform's units (:mod:`affinevae.nn.transforms`): angle in
        radians, log scales (natural log of the zoom), shear factor, shifts in half image widths.
        Only the angle column changes (moved by at most the refiner's ``max_angle`` radians, then
        wrapped to [-pi, pi))."""
        if self.refiner is None or int(self.refiner_trained) == 0:
            return None
        params = params.to(x.device, torch.float32)
        return self.refiner.corrected(params, self.refiner(self.canonicalise(x, params)))

    @torch.no_grad()
    def elbo_at(self, x: Tensor, y: Optional[Tensor], params: Optional[Tensor], seed: int = 0, samples: int = 1,
                chunk: int = 4096) -> Tensor:
        """(N,) sampled ELBO (nats) at pose ``params`` (N, P) (None = identity), seeded, ``samples`` averaged."""
        return self.elbo_and_canonical(x, y, params, seed, samples, chunk)[0]

    @torch.no_grad()
    def elbo_and_canonical(self, x: Tensor, y: Optional[Tensor], params: Optional[Tensor], seed: int = 0,
                           samples: int = 1, chunk: int = 4096) -> tuple[Tensor, Tensor]:
        """(N,) sampled ELBO (nats) at pose ``params`` (N, P) (None = identity), as :meth:`elbo_at`,
        and the (N, C, H, W) canonical images it encoded (``canonicalise(x, params)``, warped once)."""
        total = torch.zeros(len(x), device=x.device)
        if params is None:
            canon = x
        else:
            canon = torch.cat([self.canonicalise(x[i:i + chunk], params[i:i + chunk]) for i in range(0, len(x), chunk)])
        # Each block of NOISE_BLOCK images draws its posterior samples on a seed of its own (derived from
        # ``seed``, the sample and the block), so ``chunk`` (memory) changes no value for chunks >= the block.
        step = min(int(chunk), NOISE_BLOCK)
        for k in range(samples):
            for b, start in enumerate(range(0, len(x), NOISE_BLOCK)):
                with seeded(derived_seed(seed, k, b), x.device):
                    for i in range(start, min(start + NOISE_BLOCK, len(x)), step):
                        s = slice(i, min(i + step, start + NOISE_BLOCK))
                        p = None if params is None else params[s]
                        total[s] += self.pass_at(x[s], None if y is None else y[s], p, sample=True,
                                                 canon=canon[s]).elbo.float()
        return total / samples, canon

    # ------------------------------------------------------------------ search API
    def search(self, x: Tensor, y: Optional[Tensor] = None, config: Optional[SearchConfig] = None,
               starts: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> SearchResult:
        """Pose search on (N, C, H, W) images (see :func:`affinevae.pose.search.search_poses`); labels
        ``y`` (N,) only for a class-conditional inner model (others refuse them in one line)."""
        self.refuse_labels(y, "search")
        x, y = self.check_input(x, y)
        return search_poses(self, x, y, config or self.config.search, starts=starts, generator=generator)

    def align(self, x: Tensor, y: Optional[Tensor] = None, config: Optional[SearchConfig] = None,
              starts: Optional[Tensor] = None) -> AlignResult:
        """Found pose, ELBO before/after (nats) and canonical image of every image; see :func:`affinevae.pose.align.align`.

        ``x``: (N, C, H, W) images, or (N, H, W) for one channel; ``y``: (N,) int class labels when
        the inner model takes them (:attr:`takes_labels`; else None); ``config``: a :class:`SearchConfig` or a
        dict of its options (default: the model's); ``starts``: optional (N, R, P) explicit restarts
        in the transform's units (angle radians, shifts half image widths, log scales).
        Returns an :class:`~affinevae.pose.align.AlignResult`: ``params`` (N, P), ``angle`` (N,)
        radians, ``elbo_before``/``elbo_after``/``objective``/``objective_before`` (N,) nats, ``aligned``
        (N, C, H, W). Labels given to a model that takes none are refused in one line."""
        self.refuse_labels(y, "align")
        if isinstance(config, dict):
            config = SearchConfig.from_dict(config)
        if config is not None and not isinstance(config, SearchConfig):
            raise AffineVAEError(f"align: config must be a SearchConfig or a dict of its options, got "
                                 f"{type(config).__name__}")
        return align_poses(self, x, y, config or self.config.search, starts=starts)

    # ------------------------------------------------------------------ LatentModel API
    def training_state(self) -> dict[str, Tensor]:
        """The pose cache's tensors (``pose_cache.params``/``steps``/``signs``, each (N, P)); none without ``warm_start``."""
        if self.cache is None:
            return {}
        return {f"pose_cache.{k}": v for k, v in self.cache.state().items()}

    def load_training_state(self, state: dict[str, Tensor]) -> None:
        """Restore the pose cache from :meth:`training_state` (a checkpoint without one leaves the cache empty)."""
        cached = {k[len("pose_cache."):]: v for k, v in state.items() if k.startswith("pose_cache.")}
        if self.cache is not None and cached:
            self.cache.load_state(cached)

    def on_epoch_end(self, epoch: int, run_dir: Optional[Path]) -> dict[str, Any]:
        """Store this epoch's found angles ((N,) radians per training image, NaN for an image not
        seen this epoch; zeros for a transform without an angle); write ``run_dir/poses.npz``
        (atomically) if given. See :meth:`~affinevae.pose.record.PoseRecorder.end_epoch`.

        Returns ``{"pose_images": number of training images whose pose was found this epoch,
        "pose_searched": share of those that were searched rather than kept at the pose head's
        pose}`` (only ``pose_searched`` when no pose was recorded by index, empty when none was found).
        """
        return self.recorder.end_epoch(epoch, run_dir)

    def pose_record(self) -> Optional[PoseRecord]:
        """The in-memory record of found training poses (None before the first epoch ends)."""
        return self.recorder.record_so_far()

    # ------------------------------------------------------------------ persistence
    @classmethod
    def from_config_dict(cls, config: dict[str, Any], networks: Optional[Mapping[str, nn.Module]] = None) -> "AVAE":
        """Build a fresh AVAE (inner model included) from its saved config dict (fields it predates take
        their former values, :meth:`AVAEConfig.saved_dict`); ``networks`` as the base's (the AVAE takes none:
        :meth:`~affinevae.models.base.LatentModel.with_networks` refuses them)."""
        return cls.with_networks(AVAEConfig.from_saved(config), networks)

