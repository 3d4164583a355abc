"""Analyses that produce images: reconstructions, prior samples (generation) and denoising.

Each is a compute function returning a dataclass of numpy arrays and a ``plot_*`` function
drawing it (a pyplot-free matplotlib Figure).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
import torch

from ..config import check_seed
from ..data.inputs import check_int
from ..errors import AffineVAEError
from ..evaluation import psnr
from ..plots import new_figure, show_images
from .common import (as_imageset, in_eval_mode, image_strips, labels_for, model_classes, model_label, one_or_more, pick_indices,
                     styled, to_numpy)

__all__ = ["Reconstructions", "reconstructions", "plot_reconstructions", "Generated", "generate", "plot_generation",
           "Denoising", "denoise", "plot_denoising"]


@dataclasses.dataclass
class Reconstructions:
    """Originals and their reconstructions.

    Attributes:
        indices: (n,) positions of the images in the data.
        originals: (n, C, H, W) input images in [0, 1].
        reconstructions: (n, C, H, W) mean reconstructions (posterior mean latents).
        psnr: PSNR in dB of the reconstructions against the originals (all n images).
        model: display name of the model.
    """

    indices: np.ndarray
    originals: np.ndarray
    reconstructions: np.ndarray
    psnr: float
    model: str = ""


@in_eval_mode
def reconstructions(model, data, n: int = 8, indices: Optional[Sequence[int]] = None, seed: int = 0,
                    labels=None) -> Reconstructions:
    """Reconstruct ``n`` images of ``data`` (ImageSet or (N, C, H, W) array), chosen by ``indices``
    or at random (seeded by ``seed``). Conditional models use the data's labels."""
    data = as_imageset(data, labels)
    idx = pick_indices(len(data), n, indices, np.random.default_rng(seed), "reconstructions")
    x = data.images[idx]
    rec = to_numpy(model.reconstruct(torch.as_tensor(x), labels_for(model, data, idx)))
    return Reconstructions(indices=idx, originals=x, reconstructions=rec, psnr=psnr(x, rec), model=model_label(model))


@styled
def plot_reconstructions(result: Reconstructions, title: Optional[str] = None):
    """Originals (top row) above their reconstructions (bottom row); PSNR in the title."""
    return image_strips([(result.originals, "originals"), (result.reconstructions, "reconstructions")],
                        title or f"{result.model} reconstructions (PSNR {result.psnr:.1f} dB)")


# ============================================================================ generation
@dataclasses.dataclass
class Generated:
    """Images decoded from prior samples z ~ N(0, I).

    Attributes:
        images: (n, C, H, W) mean images.
        labels: (n,) class of each image for conditional models, else None.
        ncol: images per row in the figure (per class for conditional models).
        model: display name.
    """

    images: np.ndarray
    labels: Optional[np.ndarray]
    ncol: int
    model: str = ""


@in_eval_mode
def generate(model, n: int = 64, classes: Optional[Sequence[int]] = None, per_class: int = 8,
             seed: int = 0) -> Generated:
    """Decode prior samples: ``n`` images, or for conditional models ``per_class`` per class
    (``classes``, default all). Pose models decode in the canonical pose. Seeded."""
    check_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    classes = model_classes(model, classes, "generation by class")
    if classes is not None:
        per_class = check_int("per_class", per_class, 1)
        y = torch.as_tensor(np.repeat(classes, per_class)).long()
        imgs = to_numpy(model.sample(len(y), y=y, generator=gen))
        return Generated(imgs, y.numpy(), per_class, model_label(model))
    n = check_int("n", n, 1)
    imgs = to_numpy(model.sample(n, generator=gen))
    return Generated(imgs, None, int(math.ceil(math.sqrt(n))), model_label(model))


@styled
def plot_generation(items: Generated | Sequence[Generated], title: Optional[str] = None,
                    names: Optional[Sequence[str]] = None):
    """Grid(s) of generated images: one panel per model; conditional models one row per class."""
    gens = one_or_more(items, Generated, "plot_generation")
    fig, axes = new_figure(1, len(gens), panel=(3.4, 3.4))
    for i, g in enumerate(gens):
        ax = axes[0, i]
        show_images(ax, g.images, ncol=g.ncol, axis_off=False)
        ax.set_xticks([])
        if g.labels is not None:
            rows = g.labels[::g.ncol]
            h = g.images.shape[-2] + 1
            ax.set_yticks([0.5 + h * (r + 0.5) for r in range(len(rows))])
            ax.set_yticklabels([str(int(c)) for c in rows])
            ax.set_ylabel("class")
            for s in ax.spines.values():
                s.set_visible(False)
        else:
            ax.set_axis_off()
        ax.set_title(names[i] if names else g.model)
    fig.suptitle(title or "samples from the prior N(0, I)")
    return fig


# ============================================================================ denoising
@dataclasses.dataclass
class Denoising:
    """Noisy inputs, their reconstructions and the clean originals.

    Attributes:
        clean: (n, C, H, W) originals.
        noisy: (n, C, H, W) originals + Gaussian noise (std ``noise_std``), clipped to [0, 1].
        denoised: (n, C, H, W) reconstructions of the noisy images.
        indices: (n,) positions in the data.
        noise_std: the noise standard deviation (image units).
        psnr_noisy: PSNR of ``noisy`` vs ``clean``, dB (:func:`affinevae.evaluation.psnr`).
        psnr_denoised: PSNR of ``denoised`` vs ``clean``, dB.
        model: display name.
    """

    clean: np.ndarray
    noisy: np.ndarray
    denoised: np.ndarray
    indices: np.ndarray
    noise_std: float
    psnr_noisy: float
    psnr_denoised: float
    model: str = ""


@in_eval_mode
def denoise(model, data, n: int = 8, noise_std: float = 0.3, seed: int = 0, indices: Optional[Sequence[int]] = None,
            labels=None) -> Denoising:
    """Add Gaussian noise (std ``noise_std``, seeded, clipped to [0, 1]) to ``n`` images and
    reconstruct them; PSNR before and after against the clean images.

    ``data``: an :class:`~affinevae.data.ImageSet` or (N, C, H, W) / (N, H, W) images in [0, 1];
    ``labels``: (N,) int class labels replacing the data's, needed when the model is
    class-conditional and ``data`` carries none. The k images are ``indices``, or min(n, N)
    drawn at random (seeded). Returns :class:`Denoising` (``clean``/``noisy``/``denoised``
    (k, C, H, W), PSNRs in dB).
    """
    data = as_imageset(data, labels)
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise AffineVAEError(f"noise_std must be >= 0, got {noise_std}")
    rng = np.random.default_rng(seed)
    idx = pick_indices(len(data), n, indices, rng, "denoising")
    clean = data.images[idx]
    noisy = np.clip(clean + noise_std * rng.standard_normal(clean.shape), 0, 1).astype(np.float32)
    den = to_numpy(model.reconstruct(torch.as_tensor(noisy), labels_for(model, data, idx)))
    return Denoising(clean, noisy, den, idx, float(noise_std), psnr(clean, noisy), psnr(clean, den), model_label(model))


@styled
def plot_denoising(d: Denoising, title: Optional[str] = None):
    """Rows: noisy input, reconstruction, clean original; PSNR of the first two in their labels."""
    return image_strips([(d.noisy, f"noisy input (noise std {d.noise_std:g}): PSNR {d.psnr_noisy:.1f} dB"),
                         (d.denoised, f"reconstruction: PSNR {d.psnr_denoised:.1f} dB"),
                         (d.clean, "clean original")], title or f"{d.model}: denoising")


