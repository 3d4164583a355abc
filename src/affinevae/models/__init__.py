"""Model families, registered by name in :data:`affinevae.registry.MODELS`."""

from .base import Encoding, LatentModel, LossParts, ModelConfig, ModelOutput, build_model, gaussian_kl
from .ae import AE, AEConfig
from .vae import VAE, VAEConfig
from .cvae import CVAE, CVAEConfig
from .avae import AVAE, AVAEConfig
from .rvae import CRVAE, CRVAEConfig, RVAE, RVAEConfig

__all__ = ["Encoding", "LatentModel", "LossParts", "ModelConfig", "ModelOutput", "build_model", "gaussian_kl",
           "AE", "AEConfig", "VAE", "VAEConfig", "CVAE", "CVAEConfig", "AVAE", "AVAEConfig",
           "RVAE", "RVAEConfig", "CRVAE", "CRVAEConfig"]
