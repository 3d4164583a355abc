"""The demo: the story of the seed articles on bundled data, end to end on a CPU.

:func:`run_demo` is what ``affinevae demo`` calls.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .data import load_mnist
from .evaluation import mean_elbo
from .models.base import build_model
from .plots import image_grid, save_image
from .training import TrainConfig, fit, seed_everything


def run_demo(out: str | Path = "affinevae-demo", quick: bool = False, seed: int = 0,
             log: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Train a VAE on MNIST briefly and write reconstructions and prior samples to ``out``.

    Returns a dict of the files written and the figures measured (test ELBO in nats/image).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_train, epochs = (3000, 2) if quick else (20000, 5)
    t0 = time.perf_counter()
    log(f"[1/2] training a VAE on {n_train} MNIST digits for {epochs} epochs ...")
    train = load_mnist("train", n=n_train)
    test = load_mnist("test", n=1000)
    seed_everything(seed)
    vae = build_model("vae", image_shape=train.image_shape, latent_dim=10)
    res = fit(vae, train, TrainConfig(epochs=epochs, batch_size=128, seed=seed, progress=progress), out=out / "vae")
    elbo = mean_elbo(vae, test)
    log(f"      test ELBO {elbo:.1f} nats/image, {res.history[-1]['images_per_s']:.0f} images/s")
    log("[2/2] writing reconstructions and samples ...")
    x = torch.as_tensor(test.images[:16])
    recon = vae.reconstruct(x).numpy()
    files = {
        "reconstructions": save_image(image_grid(np.concatenate([test.images[:16], recon]), ncol=16), out / "reconstructions.png", 3),
        "samples": save_image(image_grid(vae.sample(64, generator=torch.Generator().manual_seed(seed)).numpy()), out / "samples.png", 3),
    }
    log(f"done in {time.perf_counter() - t0:.0f} s: {', '.join(str(p) for p in files.values())}")
    return {"files": files, "test_elbo": elbo}
