"""The variational autoencoder: Gaussian posterior, reparameterised sample, recon + KL loss."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch import Tensor

from ..config import check_choice
from ..nn.flows import check_flow_steps
from ..nn.likelihoods import density_likelihoods
from ..registry import MODELS
from .base import Encoding, LatentModel, ModelConfig


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
        check_flow_steps(self.flow_steps)


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
    def encoder_out_dim(self) -> int:
        """2 * latent_dim (means and log-variances of the base posterior), plus the K planar maps'
        parameters (K * (2 * latent_dim + 1)) with ``flow_steps`` K > 0."""
        return 2 * self.config.latent_dim + self.flow_outputs()

    def posterior(self, h: Tensor) -> Encoding:
        """Encoder output (N, :meth:`encoder_out_dim`) -> :class:`Encoding`; with a flow its ``z_mean``
        (N, D) is the base mean pushed through the image's flow and ``parts`` hold the flow
        (:meth:`LatentModel.with_flow`; its draw, KL and checks are :class:`LatentModel`'s)."""
        d = self.config.latent_dim
        if self.config.flow_steps == 0:
            return super().posterior(h)
        return self.with_flow(super().posterior(h[:, :2 * d]), h[:, 2 * d:])

