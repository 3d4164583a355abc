"""The class-conditional VAE: the one-hot class joins encoder input and decoder input."""

from __future__ import annotations

import dataclasses

from ..config import check
from ..registry import MODELS
from .vae import VAE, VAEConfig


@dataclasses.dataclass(frozen=True)
class CVAEConfig(VAEConfig):
    """cVAE options: ``num_classes`` >= 2 is required."""

    num_classes: int = 10

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        super().validate()
        check(self.num_classes >= 2, f"cvae needs num_classes >= 2, got {self.num_classes}")


@MODELS.register("cvae")
class CVAE(VAE):
    """Class-conditional VAE: one latent space per class; ``encode``/``decode``/``sample`` need ``y``."""

    config_class = CVAEConfig
    family = "cvae"
    conditional = True
