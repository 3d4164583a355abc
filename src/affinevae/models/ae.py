"""The deterministic convolutional autoencoder (the baseline that is a poor generator)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import torch
from torch import Tensor

from ..config import check_positive
from ..registry import MODELS
from .base import Encoding, LatentModel, ModelConfig


@dataclasses.dataclass(frozen=True)
class AEConfig(ModelConfig):
    """AE options: ``likelihood`` is 'bernoulli' (BCE loss), 'mse', or any other registered in
    :data:`~affinevae.nn.likelihoods.LIKELIHOODS` (its negative log-probability is the loss); no KL, so no beta.

    ``latent_noise`` (latent units, >= 0; default 0): the notes' noise-injected AE. In training the
    decoder sees each code plus Gaussian noise of this standard deviation, so that it learns to decode
    the neighbourhood of the codes, not only the codes; with nothing to hold them the encoder spreads
    its codes apart until the noise no longer matters (``plot latent-stats`` shows their range grow),
    which is the notes' argument for the VAE's KL term. Evaluation and encoding take no noise."""

    latent_noise: float = 0.0

    FORMER_DEFAULTS: ClassVar[dict] = {**ModelConfig.FORMER_DEFAULTS, "latent_noise": 0.0}

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        super().validate()
        check_positive("latent_noise", self.latent_noise, allow_zero=True)


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

    def draw(self, post: Encoding, sample: bool = True) -> tuple[Tensor, Optional[object]]:
        """The code (N, D) the decoder sees: the encoder's, plus N(0, ``latent_noise``^2) noise in a
        training weight step (:attr:`in_weight_step`) when ``sample`` (the noise-injected AE); no pose."""
        z = post.z_mean
        noise = self.config.latent_noise
        if noise > 0 and sample and self.in_weight_step:
            z = z + noise * torch.randn_like(z)
        return z, post.pose
