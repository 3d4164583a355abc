"""affinevae: learn what is in images regardless of how it is turned, shifted or scaled.

One idea carries the design: an image is ``x = warp(render(z, class), pose)``. The model
families differ only in how the pose is obtained: identity (AE, VAE, cVAE), inferred by
the encoder (rVAE, crVAE) or searched to maximise the ELBO (AVAE).

Quick use::

    import affinevae as av
    data = av.data.rotated_mnist("train", n=2000)
    model = av.build_model("vae", image_shape=data.image_shape, latent_dim=8)
    av.fit(model, data, av.TrainConfig(epochs=2), out="runs/vae")
    model = av.load("runs/vae")
    run = av.Run.open("runs/vae")          # the run directory: run.metrics, run.meta, run.data("test")
"""

__version__ = "0.1.0"

from . import data, evaluation, models, nn, training  # noqa: E402
from .errors import AffineVAEError  # noqa: E402
from .models import AE, AVAE, CRVAE, CVAE, RVAE, VAE, build_model  # noqa: E402
from .registry import MODELS  # noqa: E402
from .runs import Run, load  # noqa: E402
from .training import FitResult, TrainConfig, fit  # noqa: E402


def __getattr__(name: str):
    """``affinevae.Estimator`` (the scikit-learn estimator) is imported on first use, so that
    ``import affinevae`` does not load scikit-learn."""
    if name == "Estimator":
        from .estimator import Estimator

        return Estimator
    raise AttributeError(f"module 'affinevae' has no attribute {name!r}")


__all__ = ["fit", "TrainConfig", "FitResult", "Estimator", "evaluation", "training", "AffineVAEError", "load", "Run", "build_model", "MODELS", "AE", "VAE", "CVAE", "RVAE", "CRVAE", "AVAE", "data", "models", "nn", "__version__"]
