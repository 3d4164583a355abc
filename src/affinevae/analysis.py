"""See what a model learned: analyses as data (dataclasses) plus the figure of each.

Every analysis is a pair: a function computing a dataclass of numpy arrays from a model and
data, and a ``plot_*`` function turning that dataclass into a matplotlib Figure (pyplot-free,
save it with :func:`affinevae.plots.save_figure`). Angles are radians in the dataclasses and
degrees on the plots; losses are nats per image.

==========================  ================================  ===============================
analysis                    data                              figure
==========================  ================================  ===============================
reconstructions             :func:`reconstructions`           :func:`plot_reconstructions`
latent space scatter        :func:`latent_codes`              :func:`plot_latent_scatter`
latent statistics           :func:`latent_stats`              :func:`plot_latent_stats`
generation (prior samples)  :func:`generate`                  :func:`plot_generation`
2-D latent manifold         :func:`latent_manifold`           :func:`plot_manifold`
interpolation (morphing)    :func:`interpolate`               :func:`plot_interpolation`
latent arithmetic a - b + c :func:`latent_arithmetic`         :func:`plot_arithmetic`
learned vs true angle       :func:`angle_comparison`          :func:`plot_angle_comparison`
loss vs rotation            :func:`loss_vs_rotation`          :func:`plot_loss_vs_rotation`
rotations during training   :func:`rotation_histograms`       :func:`plot_rotation_histograms`
anomaly scores              :func:`anomaly_scores`            :func:`plot_anomaly`
denoising                   :func:`denoise`                   :func:`plot_denoising`
training curves             :func:`training_curves`           :func:`plot_training_curves`
==========================  ================================  ===============================

Analyses that do not apply to a model (a learned angle of a plain VAE, a pose record of a
run without one) raise :class:`~affinevae.errors.AffineVAEError` with one line saying why.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from .data.imageset import ImageSet
from .errors import AffineVAEError
from .evaluation import circular_correlation, encode_dataset, psnr
from .nn.affine import Pose
from .plots import ANGLE_CMAP, ANGLE_DIVERGING_CMAP, CLASS_CMAP, angle_colorbar, new_figure, show_images, styled

__all__ = [
    "Reconstructions", "reconstructions", "plot_reconstructions",
    "LatentCodes", "latent_codes", "plot_latent_scatter",
    "LatentStats", "latent_stats", "latent_stats_from_codes", "plot_latent_stats",
    "Generated", "generate", "plot_generation",
    "Manifold", "latent_manifold", "plot_manifold",
    "Interpolation", "interpolate", "plot_interpolation",
    "Arithmetic", "latent_arithmetic", "plot_arithmetic",
    "AngleComparison", "angle_comparison", "plot_angle_comparison", "learned_angles",
    "loss_vs_rotation", "plot_loss_vs_rotation",
    "RotationHistograms", "rotation_histograms", "plot_rotation_histograms",
    "AnomalyScores", "anomaly_scores", "plot_anomaly",
    "Denoising", "denoise", "plot_denoising",
    "TrainingCurves", "training_curves", "plot_training_curves",
    "has_learned_angle", "model_label",
]

COLOR_BY = ("class", "true_angle", "learned_angle")


# ============================================================================ helpers
def as_imageset(data, labels=None) -> ImageSet:
    """An :class:`ImageSet` from an ImageSet or an (N, C, H, W) / (N, H, W) array (with optional labels)."""
    if isinstance(data, ImageSet):
        if labels is not None:
            return ImageSet(data.images, labels, data.angle, data.shift, data.scale, data.class_names, data.source)
        return data
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    return ImageSet(np.asarray(data, dtype=np.float32), labels)


def _take(data: ImageSet, n: Optional[int]) -> ImageSet:
    if n is None or n >= len(data):
        return data
    if n < 1:
        raise AffineVAEError(f"n must be >= 1, got {n}")
    return data.subset(slice(0, n))


def _labels_for(model, data: ImageSet, idx) -> Optional[torch.Tensor]:
    """Labels of the selected images as a tensor when the model is conditional (else None)."""
    if not model.conditional:
        return None
    if data.labels is None:
        raise AffineVAEError(f"model '{model.family}' is class-conditional: the data need labels")
    return torch.as_tensor(data.labels[idx]).long()


def _check_indices(indices, n_data: int, what: str) -> np.ndarray:
    idx = np.asarray(list(indices), dtype=np.int64).reshape(-1)
    if len(idx) == 0:
        raise AffineVAEError(f"{what}: no indices given")
    bad = idx[(idx < 0) | (idx >= n_data)]
    if len(bad):
        raise AffineVAEError(f"{what}: index {int(bad[0])} is out of range for {n_data} images")
    return idx


def _one_or_more(items, cls: type, where: str) -> list:
    """``items`` (one ``cls`` instance or a sequence of them) as a non-empty list; raises :class:`AffineVAEError`."""
    out = [items] if isinstance(items, cls) else list(items)
    if not out:
        raise AffineVAEError(f"{where} needs at least one {cls.__name__}")
    return out


def _np(t) -> np.ndarray:
    return t.detach().cpu().float().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def has_learned_angle(model) -> bool:
    """True if ``model.encode`` returns a rotation angle (rVAE/crVAE with rotation, AVAE with an angle)."""
    from .models.avae import AVAE

    if isinstance(model, AVAE):
        return bool(model.transform.has_angle)
    return "rotation" in tuple(getattr(model.config, "invariances", ()) or ())


def model_label(model) -> str:
    """Short display name of a model: its family, with the latent size (e.g. 'vae (d=10)')."""
    return f"{model.family} (d={model.config.latent_dim})"


def _encode(model, data: ImageSet, elbo: bool = False, seed: int = 0) -> dict:
    with torch.no_grad():
        return encode_dataset(model, data.images, data.labels, elbo=elbo, seed=seed)


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Angles (radians) wrapped into [-pi, pi)."""
    return np.mod(np.asarray(angle, dtype=np.float64) + np.pi, 2 * np.pi) - np.pi


# ============================================================================ reconstructions
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


def reconstructions(model, data, n: int = 8, indices: Optional[Sequence[int]] = None, seed: int = 0,
                    labels=None) -> Reconstructions:
    """Reconstruct ``n`` images of ``data`` (ImageSet or (N, C, H, W) array), chosen by ``indices``
    or at random (seeded by ``seed``). Conditional models use the data's labels."""
    data = as_imageset(data, labels)
    if indices is None:
        if n < 1:
            raise AffineVAEError(f"n must be >= 1, got {n}")
        idx = np.sort(np.random.default_rng(seed).choice(len(data), size=min(n, len(data)), replace=False))
    else:
        idx = _check_indices(indices, len(data), "reconstructions")
    x = data.images[idx]
    model.eval()
    rec = _np(model.reconstruct(torch.as_tensor(x), _labels_for(model, data, idx)))
    return Reconstructions(indices=idx, originals=x, reconstructions=rec, psnr=psnr(x, rec), model=model_label(model))


def _image_strips(strips: Sequence[tuple[np.ndarray, str]], title: str):
    """One figure of labelled rows of images: ``strips`` is [((n, C, H, W) images, row label), ...]."""
    n = len(strips[0][0])
    fig, axes = new_figure(len(strips), 1, panel=(max(3.0, 0.55 * n), 0.75))
    for ax, (images, label) in zip(axes[:, 0], strips):
        show_images(ax, images, ncol=n)
        ax.set_title(label, fontsize=8, loc="left")
    fig.suptitle(title)
    return fig


@styled
def plot_reconstructions(result: Reconstructions, title: Optional[str] = None):
    """Originals (top row) above their reconstructions (bottom row); PSNR in the title."""
    return _image_strips([(result.originals, "originals"), (result.reconstructions, "reconstructions")],
                         title or f"{result.model} reconstructions (PSNR {result.psnr:.1f} dB)")


# ============================================================================ latent scatter
@dataclasses.dataclass
class LatentCodes:
    """Latent means and a 2-D view of them.

    Attributes:
        z_mean: (N, D) posterior means.
        embedding: (N, 2) coordinates plotted (the latents themselves for D <= 2, else t-SNE/UMAP/PCA).
        method: 'latent' (D <= 2 or two chosen dims), 'tsne', 'umap' or 'pca'.
        axis_labels: names of the two plotted axes.
        labels: (N,) class labels, or None.
        true_angle: (N,) true rotation, radians, or None.
        learned_angle: (N,) rotation found/inferred by the model, radians, or None.
        model: display name of the model.
    """

    z_mean: np.ndarray
    embedding: np.ndarray
    method: str
    axis_labels: tuple
    labels: Optional[np.ndarray]
    true_angle: Optional[np.ndarray]
    learned_angle: Optional[np.ndarray]
    model: str = ""

    def available(self) -> list[str]:
        """The colourings this data supports, from ('class', 'true_angle', 'learned_angle')."""
        have = {"class": self.labels, "true_angle": self.true_angle, "learned_angle": self.learned_angle}
        return [k for k in COLOR_BY if have[k] is not None]


def embed_2d(z: np.ndarray, method: str = "auto", seed: int = 0, dims: Optional[Sequence[int]] = None
             ) -> tuple[np.ndarray, str, tuple]:
    """2-D view of latents ``z`` (N, D): returns (embedding (N, 2), method used, axis labels).

    ``method``: 'auto' (the latents for D <= 2, else UMAP when installed, else t-SNE),
    'latent' (two dims, ``dims``), 'tsne', 'umap' or 'pca'.
    """
    z = np.asarray(z, dtype=np.float64)
    n, d = z.shape
    if method not in ("auto", "latent", "tsne", "umap", "pca"):
        raise AffineVAEError(f"embedding method must be auto, latent, tsne, umap or pca, got {method!r}")
    if method == "auto":
        if d <= 2 or dims is not None:
            method = "latent"
        else:
            try:
                import umap  # noqa: F401

                method = "umap"
            except ImportError:
                method = "tsne"
    if method == "latent":
        if d == 1:
            return np.stack([z[:, 0], np.zeros(n)], 1), "latent", ("z[0]", "")
        i, j = (0, 1) if dims is None else tuple(int(v) for v in dims)
        if not (0 <= i < d and 0 <= j < d) or i == j:
            raise AffineVAEError(f"dims must be two different latent indices in [0, {d - 1}], got {dims}")
        return z[:, [i, j]].copy(), "latent", (f"z[{i}]", f"z[{j}]")
    if n < 5:
        raise AffineVAEError(f"a {method} embedding needs at least 5 images, got {n}")
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(2, random_state=seed).fit_transform(z), "pca", ("PC 1", "PC 2")
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise AffineVAEError("method 'umap' needs the umap-learn package (pip install umap-learn)") from None
        emb = umap.UMAP(n_components=2, random_state=seed).fit_transform(z)
        return np.asarray(emb, dtype=np.float64), "umap", ("UMAP 1", "UMAP 2")
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    emb = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)
    return emb, "tsne", ("t-SNE 1", "t-SNE 2")


def learned_angles(model, data, n: Optional[int] = None) -> np.ndarray:
    """(N,) rotation each image is seen in by the model, radians (rVAE/crVAE encoder or AVAE search)."""
    if not has_learned_angle(model):
        raise AffineVAEError(f"model '{model.family}' learns no rotation angle "
                             "(use an rvae/crvae with rotation, or an avae)")
    data = _take(as_imageset(data), n)
    return _encode(model, data)["angle"]


def latent_codes(model, data, n: Optional[int] = None, method: str = "auto", dims: Optional[Sequence[int]] = None,
                 seed: int = 0, labels=None) -> LatentCodes:
    """Encode the first ``n`` images of ``data`` and make a 2-D view of the latent means.

    For latent_dim <= 2 (or with ``dims``) the view is the latents themselves; otherwise
    t-SNE (or UMAP when installed; ``method`` forces one: 'tsne', 'umap', 'pca').
    True angles come from the data (rotated MNIST), learned angles from the model.
    """
    data = _take(as_imageset(data, labels), n)
    enc = _encode(model, data)
    emb, used, axis = embed_2d(enc["z_mean"], method, seed, dims)
    return LatentCodes(z_mean=enc["z_mean"], embedding=emb, method=used, axis_labels=axis,
                       labels=data.labels, true_angle=None if data.angle is None else np.asarray(data.angle, np.float64),
                       learned_angle=enc.get("angle"), model=model_label(model))


def angle_color_scale(degrees: np.ndarray) -> tuple[str, float]:
    """(colormap name, limit in degrees) for colouring by angle.

    Angles over the full circle get the cyclic map over [-180, 180] (so -180 and 180 share a
    colour; 0 is light, negative blue, positive red). Angles confined to +-L with L <= 120
    degrees (e.g. rotated MNIST's +-60; L is the 99th percentile of |angle|, rounded up to 15
    degrees, so that a few outliers do not wash out the rest) never wrap, so a diverging map
    over [-L, L] with the same colours shows them with more contrast.
    """
    deg = np.asarray(degrees, dtype=np.float64)
    deg = deg[np.isfinite(deg)]
    m = float(np.percentile(np.abs(deg), 99)) if deg.size else 180.0
    if m <= 120.0:
        return ANGLE_DIVERGING_CMAP, max(15.0, 15.0 * math.ceil(m / 15.0 - 1e-9))
    return ANGLE_CMAP, 180.0


def _scatter_panel(fig, ax, codes: LatentCodes, color_by: str, size: float):
    x, y = codes.embedding[:, 0], codes.embedding[:, 1]
    if color_by == "class":
        if codes.labels is None:
            raise AffineVAEError("colouring by class needs labelled data")
        classes = np.unique(codes.labels)
        import matplotlib

        cmap = matplotlib.colormaps[CLASS_CMAP]
        for k, c in enumerate(classes):
            sel = codes.labels == c
            ax.scatter(x[sel], y[sel], s=size, color=cmap(int(c) % 10), label=str(int(c)), alpha=0.8, linewidths=0)
        ax.legend(title="class", loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=max(1.0, 12 / size),
                  frameon=False, handletextpad=0.2, borderaxespad=0.3, ncol=1 if len(classes) <= 12 else 2)
        ax.set_title("coloured by class")
    else:
        values = codes.true_angle if color_by == "true_angle" else codes.learned_angle
        if values is None:
            raise AffineVAEError(f"colouring by {color_by.replace('_', ' ')} needs "
                                 + ("data with known angles (e.g. rotated-mnist)" if color_by == "true_angle"
                                    else "a model that learns the angle (rvae/crvae with rotation, avae)"))
        deg = np.degrees(_wrap(values))
        cmap, lim = angle_color_scale(deg)
        sc = ax.scatter(x, y, s=size, c=np.clip(deg, -lim, lim), cmap=cmap, vmin=-lim, vmax=lim, alpha=0.85,
                        linewidths=0)
        what = "true" if color_by == "true_angle" else "learned"
        angle_colorbar(fig, sc, ax, f"{what} angle (degrees)", limit=lim)
        ax.set_title(f"coloured by {what} angle")
    ax.set_xlabel(codes.axis_labels[0])
    ax.set_ylabel(codes.axis_labels[1])


@styled
def plot_latent_scatter(codes: LatentCodes | Sequence[LatentCodes], color_by: str | Sequence[str] = "auto",
                        title: Optional[str] = None):
    """Scatter of latent means; one panel per colouring ('class', 'true_angle', 'learned_angle').

    ``codes`` may be a list (one row per model). ``color_by='auto'`` uses every colouring
    the data support. Angles are shown in degrees on a cyclic colour map.
    """
    rows = _one_or_more(codes, LatentCodes, "plot_latent_scatter")
    if color_by == "auto":
        kinds = []
        for r in rows:
            kinds += [k for k in r.available() if k not in kinds]
        kinds = [k for k in COLOR_BY if k in kinds]
    else:
        kinds = [color_by] if isinstance(color_by, str) else list(color_by)
    for k in kinds:
        if k not in COLOR_BY:
            raise AffineVAEError(f"color_by must be one of {', '.join(COLOR_BY)}, got {k!r}")
        if not any(k in r.available() for r in rows):
            raise AffineVAEError(f"cannot colour by {k.replace('_', ' ')}: "
                                 + {"class": "the data have no labels",
                                    "true_angle": "the data have no known angles (e.g. use rotated-mnist)",
                                    "learned_angle": "no model here learns an angle (rvae/crvae with rotation, avae)"}[k])
    if not kinds:
        kinds = ["none"]
    fig, axes = new_figure(len(rows), len(kinds), panel=(3.9, 3.1))
    for r, codes_r in enumerate(rows):
        size = float(np.clip(3000 / max(len(codes_r.embedding), 1), 2, 25))
        for c, kind in enumerate(kinds):
            ax = axes[r, c]
            if kind == "none":
                ax.scatter(codes_r.embedding[:, 0], codes_r.embedding[:, 1], s=size, color="0.3", linewidths=0)
                ax.set_xlabel(codes_r.axis_labels[0])
                ax.set_ylabel(codes_r.axis_labels[1])
            elif kind not in codes_r.available():
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"{codes_r.model}:\nno {kind.replace('_', ' ')}", ha="center", va="center",
                        transform=ax.transAxes, color="0.4")
                continue
            else:
                _scatter_panel(fig, ax, codes_r, kind, size)
            if len(rows) > 1 or c == 0:
                ax.set_title(f"{codes_r.model}: {ax.get_title()}" if ax.get_title() else codes_r.model)
    method = {"latent": "latent means", "tsne": "t-SNE of latent means", "umap": "UMAP of latent means",
              "pca": "PCA of latent means"}[rows[0].method]
    fig.suptitle(title or f"latent space ({method}, {len(rows[0].embedding)} images)")
    return fig


# ============================================================================ latent statistics
@dataclasses.dataclass
class LatentStats:
    """Per-dimension statistics of latent means (the "is it near N(0, I)?" check).

    Attributes:
        name: model name.
        z: (N, D) latent means.
        min, max, mean, std: (D,) per-dimension statistics of ``z`` (std with ddof 0).
    """

    name: str
    z: np.ndarray
    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def table(self) -> list[dict]:
        """One dict per dimension: dim, min, max, mean, std."""
        return [{"dim": i, "min": float(self.min[i]), "max": float(self.max[i]), "mean": float(self.mean[i]),
                 "std": float(self.std[i])} for i in range(len(self.mean))]


def latent_stats_from_codes(z, name: str = "") -> LatentStats:
    """Statistics of given latent means ``z`` (N, D)."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or len(z) == 0:
        raise AffineVAEError(f"latent codes must be (N, D) with N >= 1, got shape {z.shape}")
    return LatentStats(name=name, z=z, min=z.min(0), max=z.max(0), mean=z.mean(0), std=z.std(0))


def latent_stats(model, data, n: Optional[int] = None, name: Optional[str] = None, labels=None) -> LatentStats:
    """Encode the first ``n`` images of ``data`` and compute per-dimension min/max/mean/std of the means."""
    data = _take(as_imageset(data, labels), n)
    return latent_stats_from_codes(_encode(model, data)["z_mean"], name or model_label(model))


@styled
def plot_latent_stats(stats: LatentStats | Sequence[LatentStats], title: Optional[str] = None, max_dims: int = 16):
    """Compare latent statistics of one or several models (one column each, shared axes).

    Top: per dimension, the range (min to max, thin line) and mean +- std (thick bar) with the
    N(0, 1) reference (+-1 dashed). Bottom: the density of each dimension's values (one line
    per dimension) against the N(0, 1) density (black dashed).
    """
    items = _one_or_more(stats, LatentStats, "plot_latent_stats")
    fig, axes = new_figure(2, len(items), panel=(3.6, 2.7), sharey="row", sharex="row")
    lo = min(float(s.min.min()) for s in items)
    hi = max(float(s.max.max()) for s in items)
    lo, hi = min(lo, -3.0), max(hi, 3.0)
    span = hi - lo
    bins = np.linspace(lo - 0.02 * span, hi + 0.02 * span, 61)
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    for c, s in enumerate(items):
        d = min(len(s.mean), max_dims)
        ax = axes[0, c]
        dims = np.arange(d)
        ax.vlines(dims, s.min[:d], s.max[:d], color="0.55", lw=1, label="min to max")
        ax.errorbar(dims, s.mean[:d], yerr=s.std[:d], fmt="o", color="C0", ms=3, lw=3, capsize=0,
                    label="mean +- std")
        ax.axhline(1, color="k", ls="--", lw=0.8)
        ax.axhline(-1, color="k", ls="--", lw=0.8, label="N(0, 1) +- 1")
        ax.axhline(0, color="k", lw=0.5, alpha=0.5)
        ax.set_title(s.name + (f" (first {d} of {len(s.mean)} dims)" if d < len(s.mean) else ""))
        ax.set_xlabel("latent dimension")
        ax.set_xticks(dims if d <= 12 else dims[::2])
        if c == 0:
            ax.set_ylabel("latent value")
            ax.legend(loc="upper center", frameon=False, fontsize=7, ncol=3, columnspacing=1.0)
        ax2 = axes[1, c]
        centers = 0.5 * (bins[1:] + bins[:-1])
        for i in range(d):
            h, _ = np.histogram(s.z[:, i], bins=bins, density=True)
            ax2.plot(centers, h, color=cmap(i / max(d - 1, 1)), lw=1, alpha=0.8)
        g = np.linspace(bins[0], bins[-1], 400)
        ax2.plot(g, np.exp(-0.5 * g**2) / math.sqrt(2 * math.pi), "k--", lw=1.2, label="N(0, 1)")
        ax2.set_xlabel("latent value")
        if c == 0:
            ax2.set_ylabel("density (one line per dimension)")
            ax2.legend(loc="upper right", frameon=False)
        ax2.set_title(f"overall mean {s.mean.mean():+.2f}, mean std {s.std.mean():.2f}", fontsize=9)
    top_lo = min(min(float(s.min.min()) for s in items), -1.0)
    top_hi = max(max(float(s.max.max()) for s in items), 1.0)
    axes[0, 0].set_ylim(top_lo - 0.05 * (top_hi - top_lo), top_hi + 0.3 * (top_hi - top_lo))  # room for the legend
    fig.suptitle(title or "latent statistics: is the latent space near N(0, I)?")
    return fig


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


def generate(model, n: int = 64, classes: Optional[Sequence[int]] = None, per_class: int = 8,
             seed: int = 0) -> Generated:
    """Decode prior samples: ``n`` images, or for conditional models ``per_class`` per class
    (``classes``, default all). Pose models decode in the canonical pose. Seeded."""
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    if model.conditional:
        k = model.config.num_classes
        classes = list(range(k)) if classes is None else [int(c) for c in classes]
        bad = [c for c in classes if not 0 <= c < k]
        if bad:
            raise AffineVAEError(f"class {bad[0]} is out of range [0, {k - 1}]")
        if per_class < 1:
            raise AffineVAEError(f"per_class must be >= 1, got {per_class}")
        y = torch.as_tensor(np.repeat(classes, per_class)).long()
        imgs = _np(model.sample(len(y), y=y, generator=gen))
        return Generated(imgs, y.numpy(), per_class, model_label(model))
    if classes is not None:
        raise AffineVAEError(f"model '{model.family}' is not class-conditional: generation by class needs a cvae/crvae")
    if n < 1:
        raise AffineVAEError(f"n must be >= 1, got {n}")
    imgs = _np(model.sample(n, generator=gen))
    return Generated(imgs, None, int(math.ceil(math.sqrt(n))), model_label(model))


@styled
def plot_generation(items: Generated | Sequence[Generated], title: Optional[str] = None,
                    names: Optional[Sequence[str]] = None):
    """Grid(s) of generated images: one panel per model; conditional models one row per class."""
    gens = _one_or_more(items, Generated, "plot_generation")
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


# ============================================================================ manifold
@dataclasses.dataclass
class Manifold:
    """Images decoded on a d x d grid over two latent dimensions (others 0).

    Attributes:
        images: (P, d*d, C, H, W): P panels (one per class for conditional models, else 1);
            row-major over the grid, top row = largest value of ``dims[1]``.
        grid: (d,) latent values along each axis (increasing).
        dims: the two latent dimensions varied (x axis, y axis).
        angle: rotation the images are decoded in, radians (0 = canonical).
        classes: class of each panel, or None.
        model: display name.
    """

    images: np.ndarray
    grid: np.ndarray
    dims: tuple
    angle: float
    classes: Optional[list]
    model: str = ""

    @property
    def d(self) -> int:
        """Grid size per axis."""
        return len(self.grid)


def latent_manifold(model, d: int = 12, bounds: tuple[float, float] = (-2.5, 2.5), dims: Sequence[int] = (0, 1),
                    angle: float = 0.0, classes: Optional[Sequence[int]] = None) -> Manifold:
    """Decode a ``d`` x ``d`` grid over latent dims ``dims`` in [bounds] (other dims 0).

    ``angle`` (radians) renders every image in that rotation (the rVAE's pose latent; for
    models without one the decoded image is rotated). Conditional models give one panel per
    class in ``classes`` (default: all).
    """
    D = model.config.latent_dim
    if D < 2:
        raise AffineVAEError(f"a 2-D manifold needs latent_dim >= 2; model '{model.family}' has {D}")
    if not (isinstance(d, int) and 2 <= d <= 64):
        raise AffineVAEError(f"d must be an integer in [2, 64], got {d!r}")
    lo, hi = (float(b) for b in bounds)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise AffineVAEError(f"bounds must be finite with low < high, got {tuple(bounds)}")
    i, j = (int(v) for v in dims)
    if not (0 <= i < D and 0 <= j < D) or i == j:
        raise AffineVAEError(f"dims must be two different latent indices in [0, {D - 1}], got {tuple(dims)}")
    grid = np.linspace(lo, hi, d)
    z = np.zeros((d * d, D), np.float32)
    xs, ys = np.meshgrid(grid, grid[::-1])   # row 0 = top = largest y
    z[:, i], z[:, j] = xs.ravel(), ys.ravel()
    if model.conditional:
        k = model.config.num_classes
        panels = list(range(k)) if classes is None else [int(c) for c in classes]
        bad = [c for c in panels if not 0 <= c < k]
        if bad:
            raise AffineVAEError(f"class {bad[0]} is out of range [0, {k - 1}]")
    else:
        if classes is not None:
            raise AffineVAEError(f"model '{model.family}' is not class-conditional: manifolds per class need a cvae/crvae")
        panels = [None]
    model.eval()
    zt = torch.as_tensor(z)
    ang = None if angle == 0 else torch.full((len(z),), float(angle))
    out = []
    with torch.no_grad():
        for c in panels:
            y = None if c is None else torch.full((len(z),), c, dtype=torch.long)
            out.append(_np(model.decode(zt, y, angle=ang)))
    return Manifold(np.stack(out), grid, (i, j), float(angle), None if panels == [None] else panels, model_label(model))


@styled
def plot_manifold(m: Manifold, title: Optional[str] = None, max_cols: int = 5):
    """The decoded grid(s) with the latent values on the axes (one panel per class)."""
    p = len(m.images)
    ncols = min(p, max_cols)
    nrows = int(math.ceil(p / ncols))
    size = 4.2 if p == 1 else 3.0
    fig, axes = new_figure(nrows, ncols, panel=(size, size))
    step = m.grid[1] - m.grid[0]
    extent = (m.grid[0] - step / 2, m.grid[-1] + step / 2, m.grid[0] - step / 2, m.grid[-1] + step / 2)
    for k in range(nrows * ncols):
        ax = axes[k // ncols, k % ncols]
        if k >= p:
            ax.set_axis_off()
            continue
        show_images(ax, m.images[k], ncol=m.d, pad=0, extent=extent)
        ax.set_xlabel(f"z[{m.dims[0]}]")
        ax.set_ylabel(f"z[{m.dims[1]}]")
        if m.classes is not None:
            ax.set_title(f"class {m.classes[k]}")
    pose = f" at {math.degrees(m.angle):.0f} degrees" if m.angle else ""
    fig.suptitle(title or f"{m.model}: {m.d} x {m.d} latent manifold{pose}")
    return fig


# ============================================================================ interpolation
@dataclasses.dataclass
class Interpolation:
    """A straight path through latent space between two images, decoded.

    Attributes:
        t: (steps,) positions along the path, 0 to 1.
        z: (steps, D) latents on the path.
        images: (steps, C, H, W) decoded images (t = 0 and 1 decode the two inputs' codes).
        endpoints: (2, C, H, W) the two input images.
        indices: (2,) their positions in the data.
        classes: (steps,) class decoded at each step (conditional models: the nearer
            end's class), or None.
        angle: (steps,) decoded rotation, radians (pose models: interpolated on the circle), or None.
        model: display name.
    """

    t: np.ndarray
    z: np.ndarray
    images: np.ndarray
    endpoints: np.ndarray
    indices: np.ndarray
    classes: Optional[np.ndarray]
    angle: Optional[np.ndarray]
    model: str = ""


def _lerp_pose(p: Optional[Pose], t: np.ndarray) -> Optional[Pose]:
    """Pose path between p[0] and p[1] at positions t (angles on the short arc, scale geometric)."""
    if p is None or p.is_identity():
        return None
    tt = torch.as_tensor(t, dtype=torch.float32)
    out = {}
    for name, v in p.items():
        if v is None:
            out[name] = None
            continue
        a, b = v[0].float(), v[1].float()
        w = tt.reshape(-1, *([1] * a.dim()))
        if name == "angle":
            delta = torch.remainder(b - a + math.pi, 2 * math.pi) - math.pi
            out[name] = a + w * delta
        elif name == "scale":
            out[name] = torch.exp(torch.log(a) + w * (torch.log(b) - torch.log(a)))
        else:
            out[name] = a + w * (b - a)
    return Pose(**out)


def interpolate(model, data, pair: Sequence[int] = (0, 1), steps: int = 10, labels=None) -> Interpolation:
    """Morph image ``pair[0]`` into ``pair[1]`` of ``data`` through the latent space in ``steps`` steps.

    The latent means are interpolated linearly; a model's pose (rVAE/AVAE) is interpolated
    too (angle along the shorter arc), so both ends are the inputs' reconstructions.
    Conditional models decode each step in the class of the nearer end.
    """
    data = as_imageset(data, labels)
    idx = _check_indices(pair, len(data), "interpolation")
    if len(idx) != 2:
        raise AffineVAEError(f"interpolation needs two image indices, got {len(idx)}")
    if not (isinstance(steps, int) and steps >= 2):
        raise AffineVAEError(f"steps must be an integer >= 2, got {steps!r}")
    model.eval()
    y = _labels_for(model, data, idx)
    x = torch.as_tensor(data.images[idx])
    with torch.no_grad():
        enc = model.encode(x, y)
        t = np.linspace(0.0, 1.0, steps)
        za, zb = enc.z_mean[0].float().cpu(), enc.z_mean[1].float().cpu()
        tt = torch.as_tensor(t, dtype=torch.float32)[:, None]
        z = za + tt * (zb - za)
        pose = _lerp_pose(None if enc.pose is None else enc.pose.to("cpu"), t)
        ys = None if y is None else torch.where(torch.as_tensor(t) < 0.5, y[0], y[1]).long()
        imgs = _np(model.decode(z, ys, pose=None if pose is None else pose.to(model.device)))
    return Interpolation(t=t, z=z.numpy(), images=imgs, endpoints=data.images[idx], indices=idx,
                         classes=None if ys is None else ys.numpy(),
                         angle=None if pose is None or pose.angle is None else pose.angle.numpy(),
                         model=model_label(model))


@styled
def plot_interpolation(items: Interpolation | Sequence[Interpolation], title: Optional[str] = None,
                       names: Optional[Sequence[str]] = None):
    """One row per interpolation: input A (green frame), the decoded path, input B (red frame)."""
    from matplotlib.patches import Rectangle

    rows = _one_or_more(items, Interpolation, "plot_interpolation")
    steps = max(len(r.t) for r in rows)
    fig, axes = new_figure(len(rows), 1, panel=(0.62 * (steps + 2) + 0.3, 1.0))
    for r, it in enumerate(rows):
        ax = axes[r, 0]
        tiles = np.concatenate([it.endpoints[:1], it.images, it.endpoints[1:]])
        show_images(ax, tiles, ncol=len(tiles), pad=2)
        h, w = tiles.shape[-2:]
        for k, color in ((0, "tab:green"), (len(tiles) - 1, "tab:red")):
            ax.add_patch(Rectangle((2 + k * (w + 2) - 1.5, 0.5), w + 2, h + 2, fill=False, edgecolor=color, lw=2))
        label = names[r] if names else it.model
        ax.set_title(f"{label}: input A | decoded path A -> B ({len(it.t)} steps) | input B", fontsize=9, loc="left")
    fig.suptitle(title or "interpolation through the latent space")
    return fig


# ============================================================================ arithmetic
@dataclasses.dataclass
class Arithmetic:
    """Latent arithmetic: decode(z_a - z_b + z_c).

    Attributes:
        inputs: (3, C, H, W) images a, b, c.
        decoded_inputs: (3, C, H, W) their reconstructions.
        result: (C, H, W) the decoded sum.
        z: (3, D) latent means of a, b, c; z_result: (D,) z_a - z_b + z_c.
        indices: (3,) positions in the data.
        model: display name.
    """

    inputs: np.ndarray
    decoded_inputs: np.ndarray
    result: np.ndarray
    z: np.ndarray
    z_result: np.ndarray
    indices: np.ndarray
    model: str = ""


def latent_arithmetic(model, data, triple: Sequence[int] = (0, 1, 2), labels=None) -> Arithmetic:
    """Decode z_a - z_b + z_c for images ``triple`` = (a, b, c) of ``data``.

    Decoded in the canonical pose; conditional models decode in the class of c.
    """
    data = as_imageset(data, labels)
    idx = _check_indices(triple, len(data), "latent arithmetic")
    if len(idx) != 3:
        raise AffineVAEError(f"latent arithmetic needs three image indices (a - b + c), got {len(idx)}")
    model.eval()
    y = _labels_for(model, data, idx)
    with torch.no_grad():
        enc = model.encode(torch.as_tensor(data.images[idx]), y)
        z = enc.z_mean.float()
        zr = (z[0] - z[1] + z[2])[None]
        decoded = _np(model.decode(z, y))
        res = _np(model.decode(zr, None if y is None else y[2:3]))[0]
    return Arithmetic(inputs=data.images[idx], decoded_inputs=decoded, result=res, z=_np(z), z_result=_np(zr)[0],
                      indices=idx, model=model_label(model))


@styled
def plot_arithmetic(items: Arithmetic | Sequence[Arithmetic], title: Optional[str] = None,
                    names: Optional[Sequence[str]] = None):
    """a - b + c = result, with the inputs above their canonical decodings (one block per item)."""
    rows = _one_or_more(items, Arithmetic, "plot_arithmetic")
    fig, axes = new_figure(2 * len(rows), 4, panel=(1.15, 1.15))
    for r, a in enumerate(rows):
        for k, (lab, op) in enumerate(zip("abc", ["", "- ", "+ "])):
            show_images(axes[2 * r, k], a.inputs[k:k + 1], title=f"{op}{lab}")
            show_images(axes[2 * r + 1, k], a.decoded_inputs[k:k + 1])
        show_images(axes[2 * r, 3], a.result[None], title="= a - b + c")
        axes[2 * r + 1, 3].set_axis_off()
        name = names[r] if names else a.model
        axes[2 * r, 0].text(-0.15, 0.5, f"{name}: inputs", transform=axes[2 * r, 0].transAxes,
                            rotation=90, ha="right", va="center", fontsize=8)
        axes[2 * r + 1, 0].text(-0.15, 0.5, "their decodings", transform=axes[2 * r + 1, 0].transAxes, rotation=90,
                                ha="right", va="center", fontsize=8)
        axes[2 * r + 1, 3].text(0.5, 0.5, "decode(z_a - z_b + z_c)\nfrom the latent means", ha="center",
                                va="center", fontsize=7, transform=axes[2 * r + 1, 3].transAxes)
    fig.suptitle(title or "latent arithmetic")
    return fig


# ============================================================================ angles
@dataclasses.dataclass
class AngleComparison:
    """Learned vs true rotation angles.

    Attributes:
        true_angle: (N,) true angles, radians.
        learned_angle: (N,) angles the model sees, radians (wrapped to [-pi, pi)).
        labels: (N,) classes, or None.
        correlation: circular correlation coefficient of the two (-1 to 1).
        model: display name.
    """

    true_angle: np.ndarray
    learned_angle: np.ndarray
    labels: Optional[np.ndarray]
    correlation: float
    model: str = ""


def angle_comparison(model, data, n: Optional[int] = None, labels=None) -> AngleComparison:
    """Compare the model's angles (rVAE/crVAE encoder, AVAE search) with the data's true angles."""
    if not has_learned_angle(model):
        raise AffineVAEError(f"model '{model.family}' learns no rotation angle "
                             "(use an rvae/crvae with rotation, or an avae)")
    data = _take(as_imageset(data, labels), n)
    if data.angle is None:
        raise AffineVAEError("learned-vs-true angles need data with known angles (e.g. rotated-mnist)")
    learned = _wrap(learned_angles(model, data))
    true = np.asarray(data.angle, np.float64)
    return AngleComparison(true, learned, data.labels, circular_correlation(learned, true), model_label(model))


@styled
def plot_angle_comparison(items: AngleComparison | Sequence[AngleComparison], title: Optional[str] = None):
    """Scatter of learned vs true angle (degrees), one panel per model, circular correlation in the title."""
    rows = _one_or_more(items, AngleComparison, "plot_angle_comparison")
    fig, axes = new_figure(1, len(rows), panel=(3.6, 3.4))
    import matplotlib

    cmap = matplotlib.colormaps[CLASS_CMAP]
    for i, a in enumerate(rows):
        ax = axes[0, i]
        tx, ly = np.degrees(a.true_angle), np.degrees(a.learned_angle)
        size = float(np.clip(2000 / max(len(tx), 1), 2, 20))
        colors = "C0" if a.labels is None else [cmap(int(c) % 10) for c in a.labels]
        ax.scatter(tx, ly, s=size, c=colors, alpha=0.6, linewidths=0)
        lim = max(180.0, float(np.abs(tx).max()) if len(tx) else 180.0)
        span = float(np.abs(tx).max()) if len(tx) else 180.0
        ax.plot([-span, span], [-span, span], "k--", lw=0.8, label="learned = true")
        ax.set_xlabel("true angle (degrees)")
        ax.set_ylabel("learned angle (degrees)")
        ax.set_ylim(-lim, lim)
        ax.set_yticks([-180, -90, 0, 90, 180])
        ax.set_title(f"{a.model}: circular r = {a.correlation:.2f}")
        ax.legend(loc="lower right", frameon=False)
    fig.suptitle(title or "learned vs true rotation")
    return fig


# ============================================================================ loss vs rotation
def loss_vs_rotation(models: Mapping[str, object], data, angles_deg: Sequence[float] = tuple(range(0, 361, 30)),
                     n: Optional[int] = None, seed: int = 0, search=None, labels=None,
                     binarize: Optional[float] = None):
    """Mean -ELBO (nats/image) of each model as the test images are rotated by ``angles_deg`` (degrees).

    A thin wrapper of :func:`affinevae.sweep.rotation_sweep` (AVAEs search each image's
    pose; ``search`` overrides their search options; ``binarize`` thresholds every rotated
    image, see :class:`~affinevae.sweep.SweepConfig`). Returns its
    :class:`~affinevae.sweep.SweepResult` ((M, A) ``neg_elbo``).
    """
    from .sweep import SweepConfig, rotation_sweep

    data = _take(as_imageset(data, labels), n)
    return rotation_sweep(dict(models), data.images, data.labels, list(angles_deg),
                          SweepConfig(seed=seed, search=search, binarize=binarize))


@styled
def plot_loss_vs_rotation(result, title: Optional[str] = None):
    """Loss-vs-rotation curves of a :class:`~affinevae.sweep.SweepResult` (any number of models)."""
    from .sweep import plot_sweep

    fig = plot_sweep(result, title=title)
    fig.set_size_inches(6.4, 4.0)
    ax = fig.axes[0]
    a = np.asarray(result.angles_deg, dtype=np.float64)
    span = float(a.max() - a.min()) if len(a) else 0.0
    if span >= 90:
        step = 45 if span > 180 else 30
        ax.set_xticks(np.arange(step * math.floor(a.min() / step), a.max() + 1e-9, step))
    return fig


# ============================================================================ rotation histograms
@dataclasses.dataclass
class RotationHistograms:
    """Found rotations of the training images per class over training (pose-optimised AVAE).

    Attributes:
        epochs: (E,) epoch numbers.
        counts: (E, K, B) images per angle bin, per epoch and class.
        edges_deg: (B + 1,) bin edges in degrees over [-180, 180].
        classes: (K,) class of each histogram row (0 when training had no labels).
        encoded: True when the angles are encoded orientations (true - found), False for found angles.
    """

    epochs: np.ndarray
    counts: np.ndarray
    edges_deg: np.ndarray
    classes: np.ndarray
    encoded: bool = False

    def fractions(self) -> np.ndarray:
        """(E, K, B) counts normalised per epoch and class (rows sum to 1; 0 where empty)."""
        tot = self.counts.sum(-1, keepdims=True)
        return np.where(tot > 0, self.counts / np.maximum(tot, 1), 0.0)


def rotation_histograms(record, bins: int = 36, true_angle=None) -> RotationHistograms:
    """Histograms of the found angles per class and epoch from a pose record.

    ``record``: a run directory (its ``poses.npz``), the file itself, a
    :class:`~affinevae.models.avae.PoseRecord` or an AVAE that trained in this process.
    ``true_angle``: (N,) rotations (radians) of the training images themselves, in the order of
    the data given to ``fit``; with them the histograms show the encoded orientation
    (true - found), which gathers into one peak per class (two for a digit that looks alike
    turned by 180 degrees) as the model settles on its canonical poses.
    """
    from .models.avae import AVAE, PoseRecord, load_pose_record

    if isinstance(record, AVAE):
        rec = record.pose_record()
        if rec is None:
            raise AffineVAEError("this avae has no pose record: it has not been trained with pose_optimise")
    elif isinstance(record, PoseRecord):
        rec = record
    else:
        rec = load_pose_record(record)
    if not (isinstance(bins, int) and 2 <= bins <= 720):
        raise AffineVAEError(f"bins must be an integer in [2, 720], got {bins!r}")
    counts, edges = rec.histograms(bins, true_angle)
    return RotationHistograms(np.asarray(rec.epochs), counts, np.degrees(edges), np.arange(counts.shape[1]),
                              encoded=true_angle is not None)


@styled
def plot_rotation_histograms(h: RotationHistograms, classes: Optional[Sequence[int]] = None,
                             title: Optional[str] = None, max_cols: int = 5):
    """Per class, the distribution of found angles (or encoded orientations) at each epoch (stacked, later epochs higher).

    ``classes``: which classes to show (default every class with images).
    """
    frac = h.fractions()
    present = [int(c) for c in h.classes if h.counts[:, c].sum() > 0]
    show = present if classes is None else [int(c) for c in classes]
    missing = [c for c in show if c not in present]
    if missing:
        raise AffineVAEError(f"class {missing[0]} has no recorded poses; classes with poses: "
                             f"{', '.join(map(str, present)) or 'none'}")
    if not show:
        raise AffineVAEError("the pose record holds no angles")
    ncols = min(len(show), max_cols)
    nrows = int(math.ceil(len(show) / ncols))
    E = len(h.epochs)
    fig, axes = new_figure(nrows, ncols, panel=(3.0, 0.45 * E + 1.4), sharey=True)
    centers = 0.5 * (h.edges_deg[1:] + h.edges_deg[:-1])
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    scale = 0.9 / max(float(frac[:, show].max()), 1e-9)
    for k in range(nrows * ncols):
        ax = axes[k // ncols, k % ncols]
        if k >= len(show):
            ax.set_axis_off()
            continue
        c = show[k]
        for e in range(E):
            col = cmap(e / max(E - 1, 1))
            y = e + scale * frac[e, c]
            ax.fill_between(centers, e, y, step="mid", color=col, alpha=0.55, lw=0)
            ax.step(centers, y, where="mid", color=col, lw=1)
        ax.set_xlim(-180, 180)
        ax.set_xticks([-180, -90, 0, 90, 180])
        ax.set_xlabel("encoded orientation (degrees)" if h.encoded else "found angle (degrees)")
        ax.set_title(f"class {c}")
        ax.set_yticks(np.arange(E))
        ax.set_yticklabels([str(int(v)) for v in h.epochs])
        if k % ncols == 0:
            ax.set_ylabel("epoch")
    fig.suptitle(title or ("orientation at which each training image is encoded (its rotation minus the found pose)"
                           if h.encoded else "found rotations of the training images during pose-optimised training"))
    return fig


# ============================================================================ anomaly
@dataclasses.dataclass
class AnomalyScores:
    """Per-image anomaly scores (-ELBO in nats; reconstruction loss for the AE).

    Attributes:
        scores: (N,) -ELBO per image, nats (higher = more unusual to the model).
        typical: (k,) indices of the k lowest scores (most typical first).
        atypical: (k,) indices of the k highest scores (most unusual first).
        typical_images, atypical_images: (k, C, H, W) those images.
        labels: (N,) classes, or None.
        model: display name.
    """

    scores: np.ndarray
    typical: np.ndarray
    atypical: np.ndarray
    typical_images: np.ndarray
    atypical_images: np.ndarray
    labels: Optional[np.ndarray]
    model: str = ""


def anomaly_scores(model, data, n: Optional[int] = None, k: int = 8, seed: int = 0, labels=None) -> AnomalyScores:
    """Score the first ``n`` images of ``data`` by -ELBO (one seeded posterior sample) and pick
    the ``k`` most and least typical."""
    data = _take(as_imageset(data, labels), n)
    if k < 1:
        raise AffineVAEError(f"k must be >= 1, got {k}")
    scores = -_encode(model, data, elbo=True, seed=seed)["elbo"].astype(np.float64)
    order = np.argsort(scores, kind="stable")
    k = min(k, len(scores))
    typical, atypical = order[:k], order[::-1][:k]
    return AnomalyScores(scores, typical, atypical, data.images[typical], data.images[atypical], data.labels,
                         model_label(model))


@styled
def plot_anomaly(a: AnomalyScores, title: Optional[str] = None):
    """Histogram of -ELBO with the most typical and most unusual images below it."""
    from matplotlib.figure import Figure
    import matplotlib

    k = len(a.typical)
    with matplotlib.rc_context({"font.size": 9}):
        fig = Figure(figsize=(max(5.5, 0.6 * k + 1), 5.2), layout="constrained")
        gs = fig.add_gridspec(3, 1, height_ratios=[3, 1, 1])
        ax = fig.add_subplot(gs[0])
        ax.hist(a.scores, bins=min(50, max(10, len(a.scores) // 10)), color="C0", alpha=0.8)
        lo, hi = a.scores[a.typical[-1]], a.scores[a.atypical[-1]]
        ax.axvline(lo, color="C2", ls="--", lw=1, label=f"{k} most typical below")
        ax.axvline(hi, color="C3", ls="--", lw=1, label=f"{k} most unusual above")
        ax.set_xlabel("-ELBO (nats / image)" if "ae (" not in a.model[:4] else "reconstruction loss (nats / image)")
        ax.set_ylabel("images")
        ax.legend(frameon=False)
        ax.set_title(f"{len(a.scores)} images, mean {a.scores.mean():.1f} nats")
        ax1 = fig.add_subplot(gs[1])
        show_images(ax1, a.typical_images, ncol=k)
        ax1.set_title("most typical (lowest -ELBO)", fontsize=8, loc="left")
        ax2 = fig.add_subplot(gs[2])
        show_images(ax2, a.atypical_images, ncol=k)
        ax2.set_title("most unusual (highest -ELBO)", fontsize=8, loc="left")
        fig.suptitle(title or f"{a.model}: anomaly scores")
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


def denoise(model, data, n: int = 8, noise_std: float = 0.3, seed: int = 0, indices: Optional[Sequence[int]] = None,
            labels=None) -> Denoising:
    """Add Gaussian noise (std ``noise_std``, seeded, clipped to [0, 1]) to ``n`` images and
    reconstruct them; PSNR before and after against the clean images."""
    data = as_imageset(data, labels)
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise AffineVAEError(f"noise_std must be >= 0, got {noise_std}")
    rng = np.random.default_rng(seed)
    if indices is None:
        if n < 1:
            raise AffineVAEError(f"n must be >= 1, got {n}")
        idx = np.sort(rng.choice(len(data), size=min(n, len(data)), replace=False))
    else:
        idx = _check_indices(indices, len(data), "denoising")
    clean = data.images[idx]
    noisy = np.clip(clean + noise_std * rng.standard_normal(clean.shape), 0, 1).astype(np.float32)
    model.eval()
    den = _np(model.reconstruct(torch.as_tensor(noisy), _labels_for(model, data, idx)))
    return Denoising(clean, noisy, den, idx, float(noise_std), psnr(clean, noisy), psnr(clean, den), model_label(model))


@styled
def plot_denoising(d: Denoising, title: Optional[str] = None):
    """Rows: noisy input, reconstruction, clean original; PSNR of the first two in their labels."""
    return _image_strips([(d.noisy, f"noisy input (noise std {d.noise_std:g}): PSNR {d.psnr_noisy:.1f} dB"),
                          (d.denoised, f"reconstruction: PSNR {d.psnr_denoised:.1f} dB"),
                          (d.clean, "clean original")], title or f"{d.model}: denoising")


# ============================================================================ training curves
@dataclasses.dataclass
class TrainingCurves:
    """Per-epoch metrics of a training run (``metrics.jsonl``).

    Attributes:
        epochs: (E,) epoch numbers.
        train: name ('loss', 'recon', 'kl') -> (E,) training values, nats/image.
        val: the same for the validation set (names present only).
        images_per_s: (E,) training throughput.
    """

    epochs: np.ndarray
    train: dict
    val: dict
    images_per_s: np.ndarray


def training_curves(run) -> TrainingCurves:
    """Curves from a run directory (its ``metrics.jsonl``) or a list of per-epoch metric dicts."""
    from .training import read_metrics

    history = read_metrics(run) if isinstance(run, (str, Path)) else list(run)
    if not history:
        raise AffineVAEError(f"{run}: no training metrics (metrics.jsonl is missing or empty)"
                             if isinstance(run, (str, Path)) else "no training metrics")

    def col(key):
        return np.array([float(h.get(key, np.nan)) for h in history])

    train = {k: col(f"train_{k}") for k in ("loss", "recon", "kl") if any(f"train_{k}" in h for h in history)}
    val = {k: col(f"val_{k}") for k in ("loss", "recon", "kl") if any(f"val_{k}" in h for h in history)}
    return TrainingCurves(col("epoch").astype(np.int64), train, val, col("images_per_s"))


@styled
def plot_training_curves(c: TrainingCurves | Mapping[str, TrainingCurves], title: Optional[str] = None):
    """Loss, reconstruction and KL per epoch (train solid, validation dashed), nats/image.

    ``c`` may be a mapping name -> :class:`TrainingCurves` to compare several runs (one colour each).
    """
    runs = {"": c} if isinstance(c, TrainingCurves) else dict(c)
    if not runs:
        raise AffineVAEError("plot_training_curves needs at least one TrainingCurves")
    names = [k for k in ("loss", "recon", "kl") if any(k in r.train or k in r.val for r in runs.values())]
    if not names:
        raise AffineVAEError("no loss, recon or kl metrics to plot")
    fig, axes = new_figure(1, len(names), panel=(3.0, 2.6))
    label = {"loss": "loss (recon + beta KL)", "recon": "reconstruction -E[log p(x|z)]", "kl": "KL(q || prior)"}
    for i, k in enumerate(names):
        ax = axes[0, i]
        for j, (run, cur) in enumerate(runs.items()):
            color = f"C{j % 10}"
            prefix = f"{run} " if run else ""
            if k in cur.train:
                ax.plot(cur.epochs, cur.train[k], "o-", ms=3, color=color, label=f"{prefix}train")
            if k in cur.val:
                ax.plot(cur.epochs, cur.val[k], "s--", ms=3, color=color, alpha=0.8,
                        label=f"{prefix}validation" if not run or j == 0 else None)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats / image")
        ax.set_title(label[k])
        epochs = np.unique(np.concatenate([r.epochs for r in runs.values()]))
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if len(runs) == 1:
        axes[0, 0].legend(frameon=False)
    else:
        labels = [lb.replace(" train", "") if lb.endswith(" train") else "dashed: validation" for lb in labels]
        fig.legend(handles, labels, loc="outside right center", frameon=False)
    fig.suptitle(title or "training curves")
    return fig
