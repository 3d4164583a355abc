"""The shared model base: x = warp(render(z, class), pose).

Every family (AE, VAE, cVAE, rVAE, crVAE, AVAE) subclasses :class:`LatentModel` and
differs only in how the pose is obtained: fixed identity (AE, VAE, cVAE), inferred by the
encoder (rVAE, crVAE), or searched to maximise the ELBO (AVAE). Subclasses override the
small hooks ``_split_stats``, ``_sample_latent``, ``_render`` and ``_kl``.

Units: losses are nats per image (summed over pixels, averaged over the batch); angles in
radians; shifts in half image widths.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config, check, check_choice, check_positive
from ..errors import AffineVAEError
from ..nn.affine import Pose, render
from ..nn.layers import ACTIVATIONS, DECODERS, ENCODERS, NORMS
from ..nn.likelihoods import LIKELIHOODS
from ..registry import MODELS

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
        beta: weight of the KL term in the training loss (the reported ELBO uses 1).
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
    beta: float = 1.0

    def validate(self) -> None:
        check(len(self.image_shape) == 3 and all(isinstance(v, int) and v > 0 for v in self.image_shape),
              f"image_shape must be (C, H, W) positive integers, got {self.image_shape}")
        check(isinstance(self.latent_dim, int) and self.latent_dim >= 1, f"latent_dim must be an integer >= 1, got {self.latent_dim!r}")
        check(isinstance(self.num_classes, int) and self.num_classes >= 0, f"num_classes must be an integer >= 0, got {self.num_classes!r}")
        check_choice("encoder", self.encoder, ENCODERS.names())
        check_choice("activation", self.activation, list(ACTIVATIONS))
        check_choice("norm", self.norm, list(NORMS))
        check_choice("likelihood", self.likelihood, LIKELIHOODS.names())
        check(all(isinstance(h, int) and h > 0 for h in self.hidden), f"hidden must be positive integers, got {self.hidden}")
        check(len(self.channels) >= 1 and all(isinstance(c, int) and c > 0 for c in self.channels),
              f"channels must be one or more positive integers, got {self.channels}")
        check_positive("sigma", self.sigma)
        check_positive("beta", self.beta, allow_zero=True)


@dataclasses.dataclass
class Encoding:
    """What the encoder says about a batch.

    Attributes:
        z_mean: (N, D) posterior means of the content latents.
        z_std: (N, D) posterior standard deviations (zeros for the deterministic AE).
        pose: posterior mean pose (angle rad, shift half-widths, scale), or ``None``.
        pose_std: posterior standard deviations of the pose latents, or ``None``.
    """

    z_mean: Tensor
    z_std: Tensor
    pose: Optional[Pose] = None
    pose_std: Optional[Pose] = None

    @property
    def z_logvar(self) -> Tensor:
        """(N, D) log-variance of the content posterior."""
        return 2 * torch.log(self.z_std.clamp_min(1e-12))


@dataclasses.dataclass
class LossParts:
    """Batch-mean loss terms in nats per image: ``loss = recon + beta * kl``."""

    loss: Tensor
    recon: Tensor
    kl: Tensor


@dataclasses.dataclass
class ModelOutput:
    """Everything one forward pass computes.

    Attributes:
        loss: scalar training loss (recon + beta * kl), nats/image.
        recon: scalar mean reconstruction term -E[log p(x|z)], nats/image.
        kl: scalar mean KL term, nats/image.
        elbo: (N,) per-image ELBO (beta = 1), nats.
        z_mean, z_logvar: (N, D) content posterior.
        pose: the pose used to render (None for identity).
        x_params: (N, C, H, W) decoder output (logits for Bernoulli likelihoods).
    """

    loss: Tensor
    recon: Tensor
    kl: Tensor
    elbo: Tensor
    z_mean: Tensor
    z_logvar: Tensor
    pose: Optional[Pose]
    x_params: Tensor


def gaussian_kl(mean: Tensor, logvar: Tensor, prior_std: float | Tensor = 1.0) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, prior_std^2)) summed over the last dim: (N, D) -> (N,)."""
    prior_var = torch.as_tensor(prior_std, dtype=mean.dtype, device=mean.device) ** 2
    kl = 0.5 * ((mean**2 + logvar.exp()) / prior_var - 1 - logvar + torch.log(prior_var))
    return kl.sum(-1)


class LatentModel(nn.Module):
    """Base of every model family. Subclasses set ``config_class`` and register with ``MODELS``."""

    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    family: ClassVar[str] = "base"
    conditional: ClassVar[bool] = False
    variational: ClassVar[bool] = True

    def __init__(self, config: Optional[ModelConfig] = None, **options: Any) -> None:
        super().__init__()
        if config is None:
            config = self.config_class.from_dict(options, what=f"model '{self.family}'")
        elif options:
            config = config.replace(**options)
        if not isinstance(config, self.config_class):
            raise AffineVAEError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.likelihood = LIKELIHOODS.get(config.likelihood)()
        log_sigma = torch.tensor(math.log(config.sigma))
        if config.learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)
        self.build()
        # 1 once init_from_data has run (saved with the weights, so it runs once in a model's life)
        self.register_buffer("data_initialised", torch.zeros((), dtype=torch.int64))

    # ------------------------------------------------------------------ construction
    @property
    def cond_dim(self) -> int:
        """Width of the one-hot class vector fed to encoder and decoder (0 if unconditional)."""
        return self.config.num_classes if self.conditional else 0

    def encoder_out_dim(self) -> int:
        """Number of encoder outputs (means and log-variances of all latents)."""
        return 2 * self.config.latent_dim

    def build(self) -> None:
        """Create ``self.encoder`` and ``self.decoder`` from the config."""
        cfg = self.config
        check(getattr(ENCODERS.get(cfg.encoder), "flat_output", True),
              f"encoder '{cfg.encoder}' is for the rvae/crvae in rotation_mode 'full'; model '{self.family}' takes 'mlp' or 'conv'")
        self.encoder = ENCODERS.get(cfg.encoder)(cfg.image_shape, self.encoder_out_dim(), hidden=cfg.hidden,
                                                 act=cfg.activation, cond_dim=self.cond_dim, channels=cfg.channels,
                                                 norm=cfg.norm)
        self.decoder = DECODERS.get(cfg.decoder)(cfg.latent_dim + self.cond_dim, cfg.image_shape,
                                                 hidden=tuple(reversed(cfg.hidden)), act=cfg.activation,
                                                 channels=tuple(reversed(cfg.channels)), norm=cfg.norm)

    @property
    def device(self) -> torch.device:
        """Device of the model parameters."""
        return next(self.parameters()).device

    # ------------------------------------------------------------------ input checks
    def check_input(self, x: Tensor, y: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """Validate and convert inputs: x -> (N, C, H, W) float on the model device, y -> (N,) long.

        Accepts (N, H, W) for single-channel models. Raises :class:`AffineVAEError`.
        """
        x = torch.as_tensor(x)
        shape = tuple(self.config.image_shape)
        if x.dim() == 3 and shape[0] == 1:
            x = x[:, None]
        if x.dim() != 4 or tuple(x.shape[1:]) != shape:
            raise AffineVAEError(f"images must have shape (N, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
        x = x.to(self.device, torch.float32)
        if not torch.isfinite(x).all():
            raise AffineVAEError("images contain NaN or infinite values")
        if self.conditional:
            if y is None:
                raise AffineVAEError(f"model '{self.family}' is class-conditional: labels are required")
        if y is not None and self.conditional:
            y = torch.as_tensor(y).to(self.device).long().reshape(-1)
            if y.shape[0] != x.shape[0]:
                raise AffineVAEError(f"got {y.shape[0]} labels for {x.shape[0]} images")
            if len(y) and (y.min() < 0 or y.max() >= self.config.num_classes):
                raise AffineVAEError(f"labels must lie in [0, {self.config.num_classes - 1}], got range [{int(y.min())}, {int(y.max())}]")
        else:
            y = None
        return x, y

    def onehot(self, y: Optional[Tensor]) -> Optional[Tensor]:
        """(N,) class indices -> (N, num_classes) one-hot floats, or None if unconditional."""
        if not self.conditional or y is None:
            return None
        return F.one_hot(y.long(), self.config.num_classes).float()

    # ------------------------------------------------------------------ hooks
    def _split_stats(self, h: Tensor) -> Encoding:
        """Encoder output (N, 2D) -> :class:`Encoding`. Subclasses with pose latents override."""
        mean, logvar = h.chunk(2, dim=1)
        return Encoding(mean, torch.exp(0.5 * logvar.clamp(-30, 20)))

    def _sample_latent(self, enc: Encoding) -> tuple[Tensor, Optional[Pose]]:
        """Reparameterised sample of the content latents (and the pose, if any)."""
        z = enc.z_mean + enc.z_std * torch.randn_like(enc.z_std)
        return z, enc.pose

    def _render(self, z: Tensor, y: Optional[Tensor], pose: Optional[Pose]) -> Tensor:
        """Decoder output (likelihood parameters, (N, C, H, W)) of latents ``z`` in ``pose``."""
        cond = self.onehot(y)
        h = z if cond is None else torch.cat([z, cond.to(z.dtype)], 1)
        params = self.decoder(h)
        if pose is not None and not pose.is_identity():
            params = render(params, pose)
        return params

    def _kl(self, enc: Encoding) -> Tensor:
        """(N,) KL divergence of the posterior from the prior, nats."""
        return gaussian_kl(enc.z_mean, enc.z_logvar)

    # ------------------------------------------------------------------ public API
    def encode(self, x: Tensor, y: Optional[Tensor] = None) -> Encoding:
        """Posterior of (N, C, H, W) images: content ``z_mean``/``z_std`` (N, D) and ``pose``."""
        x, y = self.check_input(x, y)
        return self._split_stats(self.encoder(x, self.onehot(y)))

    def decode_params(self, z: Tensor, y: Optional[Tensor] = None, pose: Optional[Pose] = None) -> Tensor:
        """Likelihood parameters (N, C, H, W) of content latents ``z`` (N, D) in ``pose``."""
        z = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise AffineVAEError(f"latents must have shape (N, {self.config.latent_dim}), got {tuple(z.shape)}")
        if self.conditional:
            if y is None:
                raise AffineVAEError(f"model '{self.family}' is class-conditional: decoding needs a class")
            y = torch.as_tensor(y, device=self.device).long().reshape(-1)
            if y.numel() == 1 and z.shape[0] > 1:
                y = y.expand(z.shape[0])
            if (y < 0).any() or (y >= self.config.num_classes).any():
                raise AffineVAEError(f"class must lie in [0, {self.config.num_classes - 1}]")
        return self._render(z, y, pose)

    def decode(self, z: Tensor, y: Optional[Tensor] = None, pose: Optional[Pose] = None, *,
               angle: Optional[Tensor] = None, shift: Optional[Tensor] = None,
               scale: Optional[Tensor] = None) -> Tensor:
        """Mean image (N, C, H, W) of content latents ``z`` (N, D).

        The pose is ``pose`` or built from ``angle`` (N,) radians, ``shift`` (N, 2) half-widths
        and ``scale`` (N,); default canonical (identity).
        """
        if pose is None and any(v is not None for v in (angle, shift, scale)):
            n = z.shape[0]

            def bt(v, shape):
                return None if v is None else torch.as_tensor(v, dtype=torch.float32, device=self.device).expand(*shape).clone()

            pose = Pose(angle=bt(angle, (n,)), shift=bt(shift, (n, 2)), scale=bt(scale, (n,)))
        return self.likelihood.mean(self.decode_params(z, y, pose))

    def forward(self, x: Tensor, y: Optional[Tensor] = None, sample: bool = True,
                index: Optional[Tensor] = None) -> ModelOutput:
        """Full pass: encode, sample (or take the mean if ``sample`` is False), decode, score.

        ``index`` (N,) are the images' positions in the data given to :func:`affinevae.fit` (before any
        validation split); the trainer passes
        them so that models which keep per-image state (the AVAE's found poses) can use them.
        """
        x, y = self.check_input(x, y)
        enc = self._split_stats(self.encoder(x, self.onehot(y)))
        if sample and self.variational:
            z, pose = self._sample_latent(enc)
        else:
            z, pose = enc.z_mean, enc.pose
        params = self._render(z, y, pose)
        return self.score(x, params, enc, pose)

    def score(self, x: Tensor, params: Tensor, enc: Encoding, pose: Optional[Pose]) -> ModelOutput:
        """Combine the likelihood of ``x`` under ``params`` with the KL of ``enc``."""
        recon_i = -self.likelihood.log_prob(params.float(), x, self.log_sigma)
        kl_i = self._kl(enc) if self.variational else torch.zeros_like(recon_i)
        recon, kl = recon_i.mean(), kl_i.mean()
        beta = self.config.beta if self.variational else 0.0
        return ModelOutput(loss=recon + beta * kl, recon=recon, kl=kl, elbo=-(recon_i + kl_i),
                           z_mean=enc.z_mean, z_logvar=enc.z_logvar, pose=pose, x_params=params)

    def loss(self, x: Tensor, y: Optional[Tensor] = None) -> LossParts:
        """Batch-mean training loss and its parts (nats/image)."""
        out = self(x, y)
        return LossParts(out.loss, out.recon, out.kl)

    def elbo(self, x: Tensor, y: Optional[Tensor] = None, n_samples: int = 1) -> Tensor:
        """(N,) per-image ELBO in nats (Monte Carlo over ``n_samples`` posterior samples)."""
        total = 0.0
        for _ in range(max(1, n_samples)):
            total = total + self(x, y).elbo
        return total / max(1, n_samples)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """Mean reconstruction (N, C, H, W) from the posterior mean."""
        out = self(x, y, sample=False)
        return self.likelihood.mean(out.x_params)

    @torch.no_grad()
    def sample(self, n: int, y: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` images (n, C, H, W) decoded from the prior N(0, I) (class ``y`` if conditional)."""
        z = torch.randn(n, self.config.latent_dim, generator=generator).to(self.device)
        if self.conditional and y is None:
            raise AffineVAEError(f"model '{self.family}' is class-conditional: sampling needs a class")
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
        mean = torch.as_tensor(x, dtype=torch.float32).mean(0)
        init(self.likelihood.params_for_mean(mean).to(self.device))
        self.data_initialised.fill_(1)

    def compile_targets(self) -> list[nn.Module]:
        """The modules where training spends its time, compiled by ``TrainConfig(compile=True)``."""
        return [self.encoder, self.decoder]

    def on_epoch_end(self, epoch: int, run_dir: Optional[Path]) -> dict[str, Any]:
        """Trainer hook after each epoch; may write files to ``run_dir`` and return extra metrics."""
        return {}

    # ------------------------------------------------------------------ persistence
    def describe(self) -> dict[str, Any]:
        """JSON-able description: model name, config and format version."""
        return {"model": self.family, "config": self.config.to_dict(), "format_version": FORMAT_VERSION}

    def save(self, directory: str | Path) -> Path:
        """Write ``model.json`` and ``model.safetensors`` into ``directory`` (atomically)."""
        from ..io import save_model

        return save_model(self, directory)

    @classmethod
    def from_config_dict(cls, config: dict[str, Any]) -> "LatentModel":
        """Build a fresh model from a saved config dict (unknown keys raise)."""
        return cls(cls.config_class.from_dict(config, what=f"model '{cls.family}'"))

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "LatentModel":
        """Build from flat user options (CLI / :func:`build_model`); unknown options raise.

        Families whose config nests another model's (the AVAE) override this.
        """
        return cls.from_config_dict(options)


def build_model(name: str, **options: Any) -> LatentModel:
    """Build a registered model by ``name`` ('ae', 'vae', 'cvae', ...) with validated options."""
    return MODELS.get(name).from_options(options)
