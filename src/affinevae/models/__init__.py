"""Model families, registered by name in :data:`affinevae.registry.MODELS`."""

from .base import Encoding, LatentModel, LossParts, ModelConfig, ModelOutput, build_model, gaussian_kl
from .ae import AE, AEConfig
from .vae import VAE, VAEConfig
from .cvae import CVAE, CVAEConfig
from .avae import AVAE, AVAEConfig
from .rvae import CRVAE, CRVAEConfig, RVAE, RVAEConfig
from .joint import JRVAE, JRVAEConfig, JVAE, JVAEConfig
from .semisupervised import SSRVAE, SSRVAEConfig, SSRegRVAE, SSRegRVAEConfig, SSRegVAE, SSVAE

__all__ = ["Encoding", "LatentModel", "LossParts", "ModelConfig", "ModelOutput", "build_model", "gaussian_kl",
           "AE", "AEConfig", "VAE", "VAEConfig", "CVAE", "CVAEConfig", "AVAE", "AVAEConfig",
           "RVAE", "RVAEConfig", "CRVAE", "CRVAEConfig",
           "JRVAE", "JRVAEConfig", "JVAE", "JVAEConfig",
           "SSRVAE", "SSRVAEConfig", "SSVAE", "SSRegRVAE", "SSRegRVAEConfig", "SSRegVAE"]
