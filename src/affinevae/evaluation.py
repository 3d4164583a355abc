"""Evaluation helpers: batched encoding of data sets, per-image ELBO, circular statistics."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .data.imageset import ImageSet
from .errors import AffineVAEError


def circular_correlation(a, b) -> float:
    """Circular correlation coefficient (Jammalamadaka & SenGupta) of two angle arrays (N,) in radians.

    1 means the angles move together, -1 opposite, ~0 unrelated.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size < 2:
        raise AffineVAEError(f"circular_correlation needs two equal-length angle arrays, got {a.shape} and {b.shape}")
    ma = np.angle(np.mean(np.exp(1j * a)))
    mb = np.angle(np.mean(np.exp(1j * b)))
    sa, sb = np.sin(a - ma), np.sin(b - mb)
    den = np.sqrt((sa**2).sum() * (sb**2).sum())
    return float((sa * sb).sum() / den) if den > 0 else 0.0


@torch.no_grad()
def encode_dataset(model, data: ImageSet | np.ndarray | torch.Tensor, labels=None, batch_size: int = 512,
                   elbo: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """Encode every image of ``data`` in batches.

    Returns a dict of numpy arrays: ``z_mean`` and ``z_std`` (N, D); ``elbo`` (N,) in nats
    (one posterior sample, seeded by ``seed``) if ``elbo``; and, for models with pose latents,
    ``angle`` (N,) radians, ``shift`` (N, 2) half-widths, ``scale`` (N,) for the invariances
    the model has; ``labels`` (N,) if known.
    """
    if isinstance(data, ImageSet):
        x, labels = data.images, (data.labels if labels is None else labels)
    else:
        x = data
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    y = None if labels is None else torch.as_tensor(np.asarray(labels)).long()
    if model.conditional and y is None:
        raise AffineVAEError(f"model '{model.family}' is class-conditional: encoding needs labels")
    model.eval()
    parts: dict[str, list] = {}

    def add(name, value):
        if value is not None:
            parts.setdefault(name, []).append(value.detach().cpu().float().numpy())

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            yb = None if y is None else y[i:i + batch_size]
            enc = model.encode(xb, yb if model.conditional else None)
            add("z_mean", enc.z_mean)
            add("z_std", enc.z_std)
            if enc.pose is not None:
                add("angle", enc.pose.angle)
                add("shift", enc.pose.shift)
                add("scale", enc.pose.scale if enc.pose.scale is None or enc.pose.scale.dim() == 1 else enc.pose.scale)
            if elbo:
                add("elbo", model.elbo(xb, yb if model.conditional else None))
    out = {k: np.concatenate(v) for k, v in parts.items()}
    if y is not None:
        out["labels"] = y.numpy()
    return out


def mean_elbo(model, data: ImageSet, batch_size: int = 512, seed: int = 0) -> float:
    """Mean per-image ELBO (nats) of ``model`` on ``data`` (one seeded posterior sample)."""
    return float(encode_dataset(model, data, batch_size=batch_size, seed=seed)["elbo"].mean())


def psnr(clean, other, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB between two image arrays of equal shape."""
    clean, other = np.asarray(clean, dtype=np.float64), np.asarray(other, dtype=np.float64)
    mse = float(np.mean((clean - other) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))
