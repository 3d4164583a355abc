"""The deterministic convolutional autoencoder (the baseline that is a poor generator)."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ..registry import MODELS
from .base import Encoding, LatentModel, ModelConfig


@dataclasses.dataclass(frozen=True)
class AEConfig(ModelConfig):
    """AE options: ``likelihood`` is 'bernoulli' (BCE loss), 'mse', or any other registered in
    :data:`~affinevae.nn.likelihoods.LIKELIHOODS` (its negative log-probability is the loss); no KL, so no beta."""


@MODELS.register("ae")
class AE(LatentModel):
    """Autoencoder with a deterministic latent code (``z_std`` is zero, ``kl`` is zero).

    Its latent space is unbounded and irregular: :meth:`sample` decodes N(0, I) draws,
    which mostly land where no training image was encoded (the point of the comparison).
    """

    config_class = AEConfig
    family = "ae"
    variational = False

    def encoder_out_dim(self) -> int:
        """Width of the encoder's output: the latent code itself (an AE's code is deterministic)."""
        return self.config.latent_dim

    def posterior(self, h: Tensor) -> Encoding:
        """Encoder output (N, latent_dim) -> the deterministic code (``z_std`` zeros)."""
        return Encoding(h, torch.zeros_like(h))
