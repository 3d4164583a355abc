"""The variational autoencoder: Gaussian posterior, reparameterised sample, recon + KL loss."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import torch
from torch import Tensor

from ..config import check, check_choice
from ..errors import AffineVAEError
from ..nn.affine import Pose
from ..nn.flows import MAX_FLOW_STEPS, flow_kl, flow_parameter_count, planar_flow, split_flow_parameters
from ..nn.likelihoods import density_likelihoods
from ..registry import MODELS
from .base import Encoding, LatentModel, ModelConfig, gaussian_kl


@dataclasses.dataclass(frozen=True)
class VAEConfig(ModelConfig):
    """VAE options (see :class:`ModelConfig`); the decoder is 'conv' or 'mlp'.

    ``flow_steps`` (0..64; default 0): K amortised planar flow steps on the posterior (the rVAE
    article's normalising-flow VAE; :mod:`affinevae.nn.flows`): the encoder also gives each image's
    K planar maps, the decoder sees the Gaussian sample pushed through them, and the KL is the
    one-sample estimate on that draw. 0: the plain Gaussian posterior with its exact KL."""

    flow_steps: int = 0

    FORMER_DEFAULTS: ClassVar[dict] = {**ModelConfig.FORMER_DEFAULTS, "flow_steps": 0}

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        super().validate()
        check_choice("likelihood", self.likelihood, density_likelihoods())  # (the AE's mse is no density)
        check(isinstance(self.flow_steps, int) and not isinstance(self.flow_steps, bool)
              and 0 <= self.flow_steps <= MAX_FLOW_STEPS,
              f"flow_steps must be an integer in 0..{MAX_FLOW_STEPS}, got {self.flow_steps!r}")


@MODELS.register("vae")
class VAE(LatentModel):
    """Variational autoencoder with a N(0, I) prior on ``latent_dim`` latents.

    Example::

        vae = VAE(image_shape=(1, 28, 28), latent_dim=10)
        parts = vae.loss(x)          # x: (N, 1, 28, 28) in [0, 1]
    """

    config_class = VAEConfig
    family = "vae"

    # ------------------------------------------------------------------ the planar flow (flow_steps > 0)
    def build(self, encoder=None, decoder=None) -> None:
        """:meth:`LatentModel.build`; with a flow (and the encoder built here, not injected) the encoder's
        outputs for it start small (its last linear layer's rows and biases scaled by 0.01), so the flow
        starts near the identity (a random flow at the start slowed the posterior's training; exactly zero
        is a saddle where no flow parameter gets a gradient)."""
        super().build(encoder, decoder)
        if self.config.flow_steps == 0 or encoder is not None:
            return
        linear = [m for m in self.encoder.modules() if isinstance(m, torch.nn.Linear)]
        if linear and linear[-1].out_features == self.encoder_out_dim():
            with torch.no_grad():
                linear[-1].weight[2 * self.config.latent_dim:] *= 0.01
                linear[-1].bias[2 * self.config.latent_dim:] *= 0.01

    def encoder_out_dim(self) -> int:
        """2 * latent_dim (means and log-variances of the base posterior), plus the K planar maps'
        parameters (K * (2 * latent_dim + 1)) with ``flow_steps`` K > 0."""
        cfg = self.config
        return 2 * cfg.latent_dim + flow_parameter_count(cfg.flow_steps, cfg.latent_dim)

    def posterior(self, h: Tensor) -> Encoding:
        """Encoder output (N, :meth:`encoder_out_dim`) -> :class:`Encoding`. With a flow its
        ``z_mean`` (N, D) is the base mean pushed through the image's flow (the latent the decoder
        reads for the posterior's centre: ``decode(encode(x).z_mean)`` reconstructs), ``z_std`` the
        base posterior's (the flowed posterior is not Gaussian: its spread about ``z_mean`` is not this
        std, which ``encode`` outputs still report), and ``parts`` hold 'base_mean' (N, D)
        and the flow's 'flow_u', 'flow_w' (N, K, D) and 'flow_b' (N, K)."""
        cfg = self.config
        d, k = cfg.latent_dim, cfg.flow_steps
        if k == 0:
            return super().posterior(h)
        base = super().posterior(h[:, :2 * d])
        u, w, b = split_flow_parameters(h[:, 2 * d:], k, d)
        mean, _ = planar_flow(base.z_mean, u, w, b)
        return Encoding(mean, base.z_std, parts={"base_mean": base.z_mean, "flow_u": u, "flow_w": w, "flow_b": b})

    def draw(self, post: Encoding, sample: bool = True) -> tuple[Tensor, Optional[Pose]]:
        """The latents (N, D) the decoder sees: without a flow as :meth:`LatentModel.draw`; with one, the
        base sample (its mean when ``sample`` is False) pushed through the image's flow. The draw's
        KL estimate (:func:`affinevae.nn.flows.flow_kl`, (N,) nats) is kept in ``post.parts['flow_kl']``
        for :meth:`kl` to score."""
        if "flow_u" not in post.parts:
            return super().draw(post, sample)
        mean, std = post.parts["base_mean"], post.z_std
        z0 = mean + std * torch.randn_like(std) if sample else mean
        zk, logdet = planar_flow(z0, post.parts["flow_u"], post.parts["flow_w"], post.parts["flow_b"])
        post.parts["flow_kl"] = flow_kl(z0, mean, std, zk, logdet)
        post.parts["flow_z"] = zk
        return zk, post.pose

    def decode_and_score(self, x: Tensor, y: Optional[Tensor], z: Tensor, pose, post: Encoding, terms: dict,
                         sample: bool):
        """:meth:`LatentModel.decode_and_score`; with a flow ``z`` (N, D) must be the latest draw from
        ``post`` (its KL estimate is that draw's): a one-line :class:`AffineVAEError` otherwise (draw once
        per :class:`Encoding` when composing the stages by hand, or infer again)."""
        drawn = post.parts.get("flow_z")
        if "flow_u" in post.parts and drawn is not None and drawn is not z:
            raise AffineVAEError("decode_and_score: z is not the latest draw from this posterior, whose KL "
                                 "estimate is that draw's; draw once per Encoding (or infer again)")
        return super().decode_and_score(x, y, z, pose, post, terms, sample)

    def kl(self, post: Encoding) -> Tensor:
        """(N,) KL of the posterior from the N(0, I) prior, nats: exact for the Gaussian posterior; with a
        flow, the estimate on the pass's draw (:meth:`draw`), or on the base mean when nothing was drawn."""
        if "flow_u" not in post.parts:
            return gaussian_kl(post.z_mean, post.z_logvar)
        if "flow_kl" not in post.parts:
            self.draw(post, sample=False)
        return post.parts["flow_kl"]
