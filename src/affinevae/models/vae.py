"""The variational autoencoder: Gaussian posterior, reparameterised sample, recon + KL loss."""

from __future__ import annotations

import dataclasses

from ..config import check_choice
from ..nn.likelihoods import density_likelihoods
from ..registry import MODELS
from .base import LatentModel, ModelConfig


@dataclasses.dataclass(frozen=True)
class VAEConfig(ModelConfig):
    """VAE options (see :class:`ModelConfig`); the decoder is 'conv' or 'mlp'."""

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        super().validate()
        check_choice("likelihood", self.likelihood, density_likelihoods())  # (the AE's mse is no density)


@MODELS.register("vae")
class VAE(LatentModel):
    """Variational autoencoder with a N(0, I) prior on ``latent_dim`` latents.

    Example::

        vae = VAE(image_shape=(1, 28, 28), latent_dim=10)
        parts = vae.loss(x)          # x: (N, 1, 28, 28) in [0, 1]
    """

    config_class = VAEConfig
    family = "vae"
