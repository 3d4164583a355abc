"""The affine VAE (after Bidart & Wong 2019): a VAE behind a searched affine transform.

A VAE's negative ELBO says how unusual an image looks to it. The AVAE puts an affine
transform ``T(params)`` before the encoder and its exact inverse after the decoder, and for
every image searches the parameters that maximise the ELBO (:mod:`affinevae.pose_search`):

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

At ``params = 0`` the AVAE is its inner VAE (``elbo_before`` in :func:`align`).

Training (``pose_optimise=True``): in train mode :meth:`AVAE.forward` first searches every
image's pose without gradients (``train_search``: few restarts and steps), then takes the
gradient step on the images in their found pose. Found poses are recorded per training
image (the trainer's ``index``) and written each epoch to ``run_dir/poses.npz``
(:func:`load_pose_record`). A small pose head learns to predict the found pose from the
image (its squared error, weight ``head_weight``, is added to ``loss``) and serves as the
first restart (the amortised start), so that inference needs few restarts and steps;
:func:`affinevae.pose_search.fit_pose_head` trains it separately on search results.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import Tensor, nn

from ..config import Config, check, check_choice, check_positive
from ..errors import AffineVAEError
from ..io import atomic_write
from ..nn.affine import Pose, invert_affine, pose_matrix, warp
from ..nn.transforms import TRANSFORMS, Parameterisation, get_transform
from ..pose_search import (AlignResult, PoseHead, PoseRefiner, SearchConfig, SearchResult, align as _align, search_poses,
                           seeded)
from ..registry import MODELS
from .base import Encoding, LatentModel, ModelConfig, ModelOutput

POSES_FILE = "poses.npz"


def _search_config(value: Any, name: str) -> SearchConfig:
    if isinstance(value, SearchConfig):
        return value
    if isinstance(value, Mapping):
        return SearchConfig.from_dict(value, what=f"avae {name}")
    raise AffineVAEError(f"avae {name} must be a SearchConfig or a dict of its options, got {type(value).__name__}")


@dataclasses.dataclass(frozen=True)
class AVAEConfig(Config):
    """Options of the affine VAE.

    Attributes:
        inner: family name of the wrapped model ('vae', 'cvae', ...; not 'avae').
        inner_config: that model's config as a dict (its own options; see its config class).
        transform: parameterisation name (:data:`affinevae.nn.transforms.TRANSFORMS`).
        search: :class:`SearchConfig` for test time (eval-mode forward, :meth:`AVAE.align`).
        train_search: :class:`SearchConfig` used before each training step (cheaper).
        pose_optimise: search poses during training (False: train the inner VAE on the
            images as they are, the "no pose optimisation" baseline).
        pose_head: build the amortised pose head.
        head_channels: conv widths of the pose head.
        head_hidden: width of the pose head's hidden layer.
        head_hypotheses: poses the head proposes per image (winner-takes-all training).
        head_weight: weight of the head's squared error in ``loss`` (unitless error; small
            next to the nats of the ELBO).
        pose_refiner: build the pose refiner (the second stage of the amortised start,
            :class:`~affinevae.pose_search.PoseRefiner`; :func:`~affinevae.pose_search.fit_pose_refiner`
            builds it on demand and sets this).
        refiner_channels: conv widths of the refiner; refiner_hidden: its hidden width.
        warm_start: in training, also start each image's search from its last found pose
            (kept in memory: a resumed run restarts without it, so resume is then not exact).
        padding: how ``warp`` fills pixels from outside the observed image ('zeros' for a
            black background, 'border' to replicate the edge).
        record_poses: keep the found pose of every training image (``poses.npz``).
        interpolation: 'bilinear' or 'bicubic' grid sampling for the warps (bicubic blurs less).

    Options of the inner model may also be given at the top level of :meth:`from_dict`
    (e.g. ``latent_dim``); they are moved into ``inner_config``.
    """

    inner: str = "vae"
    inner_config: dict = dataclasses.field(default_factory=dict)
    transform: str = "rotation"
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    train_search: SearchConfig = dataclasses.field(default_factory=lambda: SearchConfig(restarts=8, keep=1, steps=3))
    pose_optimise: bool = True
    pose_head: bool = True
    head_channels: tuple = (16, 32)
    head_hidden: int = 64
    head_hypotheses: int = 2
    head_weight: float = 1.0
    pose_refiner: bool = False
    refiner_channels: tuple = (8, 16)
    refiner_hidden: int = 64
    warm_start: bool = False
    padding: str = "zeros"
    record_poses: bool = True
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "search", _search_config(self.search, "search"))
        object.__setattr__(self, "train_search", _search_config(self.train_search, "train_search"))
        check(isinstance(self.inner, str), f"avae inner must be a model family name, got {self.inner!r}")
        check(self.inner != "avae", "avae cannot wrap another avae")
        check(isinstance(self.inner_config, Mapping), f"avae inner_config must be a dict, got {type(self.inner_config).__name__}")
        cls = MODELS.get(self.inner)
        canonical = cls.config_class.from_dict(dict(self.inner_config), what=f"model '{self.inner}' (inside avae)")
        object.__setattr__(self, "inner_config", canonical.to_dict())
        super().__post_init__()

    def validate(self) -> None:
        check_choice("transform", self.transform, TRANSFORMS.names())
        for name in ("pose_optimise", "pose_head", "pose_refiner", "warm_start", "record_poses"):
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
        """JSON-able dict; ``search``/``train_search`` become dicts, ``inner_config`` a copy."""
        out = super().to_dict()
        out["search"] = self.search.to_dict()
        out["train_search"] = self.train_search.to_dict()
        out["inner_config"] = dict(self.inner_config)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, what: Optional[str] = None) -> "AVAEConfig":
        """Build from a dict; the inner model's own options may be given at the top level."""
        own = set(cls.field_names())
        data = dict(data)
        inner_name = data.get("inner", "vae")
        inner_fields = set(MODELS.get(inner_name).config_class.field_names()) if isinstance(inner_name, str) and inner_name in MODELS else set()
        moved = {k: data.pop(k) for k in list(data) if k not in own and k in inner_fields}
        if moved:
            inner_cfg = dict(data.get("inner_config") or {})
            clash = sorted(set(moved) & set(inner_cfg))
            if clash:
                raise AffineVAEError(f"avae option {clash[0]!r} given both at the top level and in inner_config")
            data["inner_config"] = {**inner_cfg, **moved}
        return super().from_dict(data, what=what or "model 'avae'")

    # ------------------------------------------------------------------ inner facts
    @property
    def inner_model_config(self) -> ModelConfig:
        """The inner model's config object."""
        return MODELS.get(self.inner).config_class.from_dict(self.inner_config)

    @property
    def image_shape(self) -> tuple:
        """(C, H, W) of the images (the inner model's)."""
        return tuple(self.inner_config["image_shape"])

    @property
    def num_classes(self) -> int:
        """Classes of the inner model (0 = unconditional)."""
        return int(self.inner_config["num_classes"])

    @property
    def latent_dim(self) -> int:
        """Content latents of the inner model."""
        return int(self.inner_config["latent_dim"])

    @property
    def beta(self) -> float:
        """KL weight of the inner model."""
        return float(self.inner_config["beta"])


@dataclasses.dataclass
class PoseRecord:
    """Found poses of the training images over training (``run_dir/poses.npz``).

    Attributes:
        epochs: (E,) epoch numbers.
        angle: (E, N) found angle of each training image per epoch, radians (NaN if unseen).
        labels: (N,) class labels (-1 where unknown), or None when training had no labels.
        params: (N, P) last found parameters.
        transform: parameterisation name.
        param_names: names of the ``params`` columns.
    """

    epochs: np.ndarray
    angle: np.ndarray
    labels: Optional[np.ndarray]
    params: np.ndarray
    transform: str
    param_names: tuple

    def histograms(self, bins: int = 36, true_angle: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """Angle histograms per epoch and class: counts (E, K, bins) and bin edges (bins + 1,) in radians.

        K = number of classes (1 without labels); bins span [-pi, pi). With ``true_angle`` (the
        training images' own rotations, radians, one per record column or more) the histogrammed
        angle is the *encoded orientation* ``true - found``: the rotation, from upright, at which
        the model encodes each digit. It gathers into peaks (one canonical orientation per class)
        as training converges, whatever the images' own rotations; the found angle alone follows
        the images' rotations.
        """
        edges = np.linspace(-np.pi, np.pi, bins + 1)
        angle = self.angle
        if true_angle is not None:
            true = np.asarray(true_angle, dtype=np.float64).reshape(-1)
            if len(true) < angle.shape[1]:
                raise AffineVAEError(f"true_angle has {len(true)} angles for a pose record of {angle.shape[1]} images")
            angle = true[None, :angle.shape[1]] - angle
        labels = self.labels if self.labels is not None else np.zeros(angle.shape[1], np.int64)
        k = max(int(labels.max()) + 1, 1) if len(labels) else 1
        counts = np.zeros((len(self.epochs), k, bins), np.int64)
        wrapped = np.mod(angle + np.pi, 2 * np.pi) - np.pi
        for c in range(k):  # loop over classes (few), vectorised over images
            sel = wrapped[:, labels == c]
            for e in range(len(self.epochs)):
                a = sel[e][np.isfinite(sel[e])]
                counts[e, c] = np.histogram(a, bins=edges)[0]
        return counts, edges


def load_pose_record(run_dir: str | Path) -> PoseRecord:
    """Read ``run_dir/poses.npz`` written during pose-optimised training (no unpickling)."""
    path = Path(run_dir) / POSES_FILE if Path(run_dir).is_dir() else Path(run_dir)
    if not path.is_file():
        raise AffineVAEError(f"{path}: no pose record (train an avae with pose_optimise and record_poses)")
    try:
        with np.load(path, allow_pickle=False) as f:
            d = {k: f[k] for k in f.files}
        labels = d["labels"] if bool(d["has_labels"]) else None
        return PoseRecord(epochs=d["epochs"], angle=d["angle"], labels=labels, params=d["params"],
                          transform=str(d["transform"]), param_names=tuple(str(v) for v in d["param_names"]))
    except (OSError, ValueError, KeyError) as exc:
        raise AffineVAEError(f"{path}: corrupt pose record ({exc.__class__.__name__}: {exc})") from None


@MODELS.register("avae")
class AVAE(LatentModel):
    """Affine VAE: wraps a VAE/cVAE (any registered family) and searches each image's pose.

    Example::

        avae = AVAE(trained_vae, transform="rotation")
        res = avae.align(x)                 # res.angle (N,) radians, res.elbo_after (N,) nats
        fit(AVAE(VAE(latent_dim=8)), data)  # pose-optimised training

    Args:
        vae: the model to wrap, or an :class:`AVAEConfig` (builds a fresh inner model), or
            None (defaults).
        transform, search, train_search, pose_optimise, pose_head: override those fields of
            ``config``.
        config: :class:`AVAEConfig` (its ``inner``/``inner_config`` are replaced by ``vae``'s).
    """

    config_class = AVAEConfig
    family = "avae"

    def __init__(self, vae: LatentModel | AVAEConfig | None = None, transform: Optional[str] = None,
                 search: Optional[SearchConfig] = None, train_search: Optional[SearchConfig] = None,
                 pose_optimise: Optional[bool] = None, pose_head: Optional[bool] = None,
                 config: Optional[AVAEConfig] = None) -> None:
        nn.Module.__init__(self)
        if isinstance(vae, AVAEConfig):
            if config is not None:
                raise AffineVAEError("AVAE: give the config either positionally or as config=, not both")
            config, vae = vae, None
        if config is not None and not isinstance(config, AVAEConfig):
            raise AffineVAEError(f"AVAE needs an AVAEConfig, got {type(config).__name__}")
        config = config or AVAEConfig()
        if vae is None:
            vae = MODELS.get(config.inner).from_config_dict(config.inner_config)
        else:
            if not isinstance(vae, LatentModel) or isinstance(vae, AVAE):
                raise AffineVAEError(f"AVAE wraps a VAE, cVAE or other LatentModel, got {type(vae).__name__}")
            config = config.replace(inner=vae.family, inner_config=vae.config.to_dict())
        changes = {"transform": transform, "search": search, "train_search": train_search,
                   "pose_optimise": pose_optimise, "pose_head": pose_head}
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes:
            config = config.replace(**changes)
        self.config = config
        self.vae = vae
        self.transform: Parameterisation = get_transform(config.transform)
        self.conditional = vae.conditional
        self.variational = vae.variational
        self.likelihood = vae.likelihood
        self.head: Optional[PoseHead] = None
        if config.pose_head:
            self.head = PoseHead(config.image_shape, self.transform, config.search.ranges(),
                                 channels=tuple(config.head_channels), hidden=config.head_hidden,
                                 hypotheses=config.head_hypotheses)
            # 1 once the head has been trained (by pose-optimised training or fit_pose_head).
            self.register_buffer("head_trained", torch.zeros((), dtype=torch.int64))
        self.refiner: Optional[PoseRefiner] = None
        if config.pose_refiner:
            self._build_refiner()
        self._rec_params: Optional[Tensor] = None   # (N, P) last found params per training image
        self._rec_labels: Optional[Tensor] = None   # (N,) labels, -1 unknown
        self._rec_epoch: Optional[Tensor] = None    # (N,) bool: seen this epoch
        self._rec_has_labels = False
        self._angle_history: list[tuple[int, np.ndarray]] = []

    def _build_refiner(self) -> None:
        cfg = self.config
        self.refiner = PoseRefiner(cfg.image_shape, self.transform, channels=tuple(cfg.refiner_channels),
                                   hidden=cfg.refiner_hidden).to(self.device)
        # 1 once the refiner has been trained (fit_pose_refiner)
        self.register_buffer("refiner_trained", torch.zeros((), dtype=torch.int64, device=self.device))

    def add_refiner(self) -> PoseRefiner:
        """The pose refiner, built (untrained, ``pose_refiner`` set in the config) if there is none."""
        if self.refiner is None:
            self.config = self.config.replace(pose_refiner=True)  # raises for a transform without an angle
            self._build_refiner()
        return self.refiner

    # ------------------------------------------------------------------ plumbing
    @property
    def log_sigma(self) -> Tensor:
        """The inner model's log pixel standard deviation (Gaussian likelihood)."""
        return self.vae.log_sigma

    def compile_targets(self) -> list[nn.Module]:
        """The inner model's networks (the search and the weight step both run them)."""
        return self.vae.compile_targets()

    def init_from_data(self, x: Tensor) -> None:
        """Start the inner model's decoder at the mean of the (N, C, H, W) training images ``x``."""
        self.vae.init_from_data(x)

    def build(self) -> None:  # pragma: no cover - the inner model is built by its own class
        """Unused: the AVAE's networks are the inner model's and the pose head."""

    def canonicalise(self, x: Tensor, params: Optional[Tensor]) -> Tensor:
        """Undo the pose ``params`` (N, P) on (N, C, H, W) observed images (``warp(x, T)``)."""
        if params is None:
            return x
        return warp(x, self.transform.matrix(params.to(x.dtype)), padding_mode=self.config.padding,
                    mode=self.config.interpolation)

    def _pass(self, x: Tensor, y: Optional[Tensor], params: Optional[Tensor], sample: bool,
              canon: Optional[Tensor] = None) -> ModelOutput:
        """One pass at given params (None = identity, exactly the inner model); inputs already checked.
        ``canon``: the canonical image ``canonicalise(x, params)`` if already computed."""
        vae = self.vae
        theta = None if params is None else self.transform.matrix(params.to(x.dtype))
        mode = self.config.interpolation
        if canon is None:
            canon = x if theta is None else warp(x, theta, padding_mode=self.config.padding, mode=mode)
        enc = vae._split_stats(vae.encoder(canon, vae.onehot(y)))
        if sample and vae.variational:
            z, inner_pose = vae._sample_latent(enc)
        else:
            z, inner_pose = enc.z_mean, enc.pose
        out_params = vae._render(z, y, inner_pose)
        if theta is not None:
            out_params = warp(out_params, invert_affine(theta).to(out_params.dtype), padding_mode="border", mode=mode)
        pose = None if params is None else self.transform.to_pose(params)
        return vae.score(x, out_params, enc, pose)

    def forward_at(self, x: Tensor, y: Optional[Tensor] = None, params: Optional[Tensor] = None,
                   sample: bool = True) -> ModelOutput:
        """The full pass with the pose fixed to ``params`` (N, P) (None = identity): no search."""
        x, y = self.check_input(x, y)
        if params is not None:
            params = self.transform.check(params).to(x.device, torch.float32)
            if len(params) != len(x):
                raise AffineVAEError(f"got {len(params)} poses for {len(x)} images")
        return self._pass(x, y, params, sample)

    def objective(self, x: Tensor, y: Optional[Tensor], params: Tensor) -> Tensor:
        """(N,) deterministic search objective: -ELBO (nats) with the latent at the posterior mean.

        ``x`` (N, C, H, W) and ``y`` must already be checked; ``params`` (N, P).
        """
        out = self._pass(x, y, params, sample=False)
        return -out.elbo

    def predict_pose(self, x: Tensor, k: int = 1, views: int = 1, confidence: bool = False):
        """(N, k, P) the head's ``k`` best poses for (N, C, H, W) images (the amortised start), or None
        if there is no trained head; ``views`` 2 or 4: quarter-turn test-time augmentation;
        ``confidence``: also the (N,) confidences in (0, 1] (see
        :meth:`~affinevae.pose_search.PoseHead.predict`)."""
        if self.head is None or int(self.head_trained) == 0:
            return None
        x = torch.as_tensor(x, dtype=torch.float32, device=self.device)
        if x.dim() == 3 and self.config.image_shape[0] == 1:
            x = x[:, None]
        if x.dim() != 4 or tuple(x.shape[1:]) != self.config.image_shape:
            raise AffineVAEError(f"images must have shape (N, {', '.join(map(str, self.config.image_shape))}), got {tuple(x.shape)}")
        return self.head.predict(x, k, views, confidence)

    @torch.no_grad()
    def refine_pose(self, x: Tensor, params: Tensor) -> Optional[Tensor]:
        """(N, P) poses ``params`` of (N, C, H, W) checked images ``x`` with the angle corrected by
        the trained refiner (one warp and one refiner pass), or None without a trained refiner."""
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
        with seeded(seed, x.device):
            for _ in range(samples):
                for i in range(0, len(x), chunk):
                    s = slice(i, i + chunk)
                    p = None if params is None else params[s]
                    total[s] += self._pass(x[s], None if y is None else y[s], p, sample=True, canon=canon[s]).elbo.float()
        return total / samples, canon

    # ------------------------------------------------------------------ search API
    def search(self, x: Tensor, y: Optional[Tensor] = None, config: Optional[SearchConfig] = None,
               starts: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> SearchResult:
        """Pose search on (N, C, H, W) images (see :func:`affinevae.pose_search.search_poses`)."""
        x, y = self.check_input(x, y)
        return search_poses(self, x, y, config or self.config.search, starts=starts, generator=generator)

    def align(self, x: Tensor, y: Optional[Tensor] = None, config: Optional[SearchConfig] = None,
              starts: Optional[Tensor] = None) -> AlignResult:
        """Found pose, ELBO before/after (nats) and canonical image of every image; see :func:`affinevae.pose_search.align`."""
        return _align(self, x, y, config or self.config.search, starts=starts)

    # ------------------------------------------------------------------ LatentModel API
    def _render(self, z: Tensor, y: Optional[Tensor], pose: Optional[Pose]) -> Tensor:
        params = self.vae._render(z, y, None)
        if pose is not None and not pose.is_identity():
            params = warp(params, invert_affine(pose_matrix(pose)).to(params.dtype), padding_mode="border",
                          mode=self.config.interpolation)
        return params

    def encode(self, x: Tensor, y: Optional[Tensor] = None) -> Encoding:
        """Search the pose, then encode the canonical image: content posterior and the found ``pose``."""
        x, y = self.check_input(x, y)
        found = search_poses(self, x, y, self.config.search, generator=torch.Generator().manual_seed(self.config.search.seed))
        enc = self.vae._split_stats(self.vae.encoder(self.canonicalise(x, found.params), self.vae.onehot(y)))
        enc.pose = self.transform.to_pose(found.params)
        return enc

    def forward(self, x: Tensor, y: Optional[Tensor] = None, sample: bool = True,
                index: Optional[Tensor] = None) -> ModelOutput:
        """Search each image's pose (no gradients), then the full pass in that pose.

        Train mode uses ``train_search`` (and records poses by ``index`` (N,), the images'
        positions in the training set); eval mode uses ``search``. With
        ``pose_optimise=False`` training uses the identity pose. ``loss`` adds
        ``head_weight`` times the pose head's error on the found poses when there is a head.
        """
        raw_y = y
        x, y = self.check_input(x, y)
        if self.training and not self.config.pose_optimise:
            return self._pass(x, y, None, sample)
        cfg = self.config.train_search if self.training else self.config.search
        extra = None
        if self.training and self.config.warm_start and index is not None:
            extra = self._warm_starts(index, len(x), x.device)
        # training draws restarts from torch's global generator (seeded and checkpointed by the
        # trainer); evaluation is reproducible with the search config's seed
        gen = None if self.training else torch.Generator().manual_seed(cfg.seed)
        params = search_poses(self, x, y, cfg, extra_starts=extra, generator=gen).params.detach()
        out = self._pass(x, y, params, sample)
        if self.head is not None and self.config.head_weight > 0:
            head_err = self.head.loss(self.head(x), params).mean()
            out.loss = out.loss + self.config.head_weight * head_err
            if self.training:
                self.head_trained.fill_(1)
        if self.training and index is not None and self.config.record_poses:
            self._record(index, params, raw_y)
        return out

    # ------------------------------------------------------------------ pose record
    def _grow(self, n: int) -> None:
        old = 0 if self._rec_params is None else len(self._rec_params)
        if n <= old:
            return
        params = torch.full((n, self.transform.dim), float("nan"))
        labels = torch.full((n,), -1, dtype=torch.int64)
        seen = torch.zeros(n, dtype=torch.bool)
        if old:
            params[:old], labels[:old], seen[:old] = self._rec_params, self._rec_labels, self._rec_epoch
        self._rec_params, self._rec_labels, self._rec_epoch = params, labels, seen

    def _record(self, index: Tensor, params: Tensor, labels: Optional[Tensor]) -> None:
        idx = torch.as_tensor(index).long().cpu().reshape(-1)
        if len(idx) != len(params):
            raise AffineVAEError(f"index has {len(idx)} entries for {len(params)} images")
        self._grow(int(idx.max()) + 1)
        self._rec_params[idx] = params.detach().float().cpu()
        self._rec_epoch[idx] = True
        if labels is not None:
            self._rec_labels[idx] = torch.as_tensor(labels).long().cpu().reshape(-1)
            self._rec_has_labels = True

    def _warm_starts(self, index: Tensor, n: int, device) -> Optional[Tensor]:
        if self._rec_params is None:
            return None
        idx = torch.as_tensor(index).long().cpu().reshape(-1)
        self._grow(int(idx.max()) + 1)
        prev = self._rec_params[idx]
        prev = torch.where(torch.isnan(prev), torch.zeros_like(prev), prev)
        return prev[:, None].to(device)

    def on_epoch_end(self, epoch: int, run_dir: Optional[Path]) -> dict[str, Any]:
        """Store this epoch's found angles; write ``run_dir/poses.npz`` (atomically) if given.

        Returns ``{"pose_images": number of training images whose pose was found this epoch}``.
        """
        if self._rec_epoch is None or not bool(self._rec_epoch.any()):
            return {}
        angle = self.transform.angle(self._rec_params).numpy().astype(np.float32)
        angle = np.where(self._rec_epoch.numpy(), angle, np.nan).astype(np.float32)
        seen = int(self._rec_epoch.sum())
        if run_dir is not None and not self._angle_history and epoch > 1 and (Path(run_dir) / POSES_FILE).exists():
            try:  # resumed run: keep the epochs recorded before the interruption
                old = load_pose_record(run_dir)
                self._angle_history = [(int(e), a) for e, a in zip(old.epochs, old.angle) if e < epoch]
            except AffineVAEError:
                self._angle_history = []
        self._angle_history = [(e, a) for e, a in self._angle_history if e != epoch] + [(epoch, angle)]
        self._rec_epoch.zero_()
        if run_dir is not None:
            self._write_poses(Path(run_dir) / POSES_FILE)
        return {"pose_images": seen}

    def _write_poses(self, path: Path) -> Path:
        n = max(len(a) for _, a in self._angle_history)
        table = np.full((len(self._angle_history), n), np.nan, np.float32)
        for i, (_, a) in enumerate(self._angle_history):
            table[i, :len(a)] = a
        arrays = {"epochs": np.array([e for e, _ in self._angle_history], np.int64), "angle": table,
                  "labels": self._rec_labels.numpy(), "has_labels": np.array(self._rec_has_labels),
                  "params": self._rec_params.numpy().astype(np.float32), "transform": np.array(self.transform.name),
                  "param_names": np.array(list(self.transform.kinds), dtype=str)}

        def w(tmp):
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
        return atomic_write(path, w)

    def pose_record(self) -> Optional[PoseRecord]:
        """The in-memory record of found training poses (None before the first epoch ends)."""
        if not self._angle_history:
            return None
        n = max(len(a) for _, a in self._angle_history)
        table = np.full((len(self._angle_history), n), np.nan, np.float32)
        for i, (_, a) in enumerate(self._angle_history):
            table[i, :len(a)] = a
        return PoseRecord(epochs=np.array([e for e, _ in self._angle_history]), angle=table,
                          labels=self._rec_labels.numpy().copy() if self._rec_has_labels else None,
                          params=self._rec_params.numpy().copy(), transform=self.transform.name,
                          param_names=tuple(self.transform.kinds))

    # ------------------------------------------------------------------ persistence
    @classmethod
    def from_config_dict(cls, config: dict[str, Any]) -> "AVAE":
        """Build a fresh AVAE (inner model included) from its saved config dict."""
        return cls(AVAEConfig.from_dict(config))
