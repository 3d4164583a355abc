"""Analyses of the latent space: codes and their 2-D view (scatter), per-dimension statistics,
the decoded manifold, interpolation and latent arithmetic.

Each is a compute function returning a dataclass of numpy arrays and a ``plot_*`` function
drawing it (a pyplot-free matplotlib Figure). Angles are radians in the dataclasses and
degrees on the plots.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
import torch

from ..data.inputs import check_latents
from ..errors import AffineVAEError
from ..limits import MANIFOLD_GRID_SIDE
from ..nn.affine import Pose, check_angle
from ..plots import ANGLE_CMAP, ANGLE_DIVERGING_CMAP, CLASS_CMAP, angle_colorbar, new_figure, show_images
from ..registry import Registry
from .common import (as_imageset, in_eval_mode, check_indices, class_name, class_title, encode, labels_for, model_classes,
                     model_label, one_or_more, styled, take, to_numpy, wrap_angles)

__all__ = ["LatentCodes", "latent_codes", "embed_2d", "EMBEDDINGS", "angle_color_scale", "plot_latent_scatter", "COLOR_BY",
           "UMAP_INSTALL", "LatentStats", "latent_stats", "latent_stats_from_codes", "plot_latent_stats",
           "Manifold", "latent_manifold", "plot_manifold", "Interpolation", "interpolate", "plot_interpolation",
           "Arithmetic", "latent_arithmetic", "plot_arithmetic"]

COLOR_BY = ("class", "inferred_class", "true_angle", "learned_angle")

#: What to run when the optional UMAP embedding is asked for but umap-learn is missing.
UMAP_INSTALL = 'pip install "affinevae[umap]"'


@dataclasses.dataclass
class LatentCodes:
    """Latent means and a 2-D (or 3-D) view of them.

    Attributes:
        z_mean: (N, D) posterior means.
        embedding: (N, 2) coordinates plotted (the latents themselves for D <= 2, else t-SNE/UMAP/PCA), or
            (N, 3): three latents themselves, drawn in 3-D.
        method: 'latent' (D <= 2 or two or three chosen dims), 'tsne', 'umap' or 'pca'.
        axis_labels: names of the two (or three) plotted axes.
        labels: (N,) class labels, or None.
        true_angle: (N,) true rotation, radians, or None.
        learned_angle: (N,) rotation found/inferred by the model, radians, or None.
        model: display name of the model.
        inferred_class: (N,) class inferred by a joint or semi-supervised model, or None.
        class_names: the K names of the classes ``labels`` number (labels given by name), or None:
            the legend shows them.
    """

    z_mean: np.ndarray
    embedding: np.ndarray
    method: str
    axis_labels: tuple
    labels: Optional[np.ndarray]
    true_angle: Optional[np.ndarray]
    learned_angle: Optional[np.ndarray]
    model: str = ""
    inferred_class: Optional[np.ndarray] = None
    class_names: Optional[list] = None

    def available(self) -> list[str]:
        """The colourings this data supports, from :data:`COLOR_BY`."""
        have = {"class": self.labels, "inferred_class": self.inferred_class, "true_angle": self.true_angle,
                "learned_angle": self.learned_angle}
        return [k for k in COLOR_BY if have[k] is not None]


def _umap():
    """The ``umap`` module of the optional umap-learn package, or None when it is not installed."""
    try:
        import umap
    except ImportError:
        return None
    return umap


#: 2-D embeddings of N >= 5 latents by name: ``fn(z (N, D), seed) -> ((N, 2) float64, axis labels)``.
EMBEDDINGS: Registry = Registry("embedding method")


@EMBEDDINGS.register("pca")
def _pca_embedding(z: np.ndarray, seed: int) -> tuple[np.ndarray, tuple]:
    from sklearn.decomposition import PCA

    return PCA(2, random_state=seed).fit_transform(z), ("PC 1", "PC 2")


@EMBEDDINGS.register("umap")
def _umap_embedding(z: np.ndarray, seed: int) -> tuple[np.ndarray, tuple]:
    umap = _umap()
    if umap is None:
        raise AffineVAEError(f"embedding method 'umap' needs the optional umap-learn package: {UMAP_INSTALL}")
    emb = umap.UMAP(n_components=2, random_state=seed).fit_transform(z)
    return np.asarray(emb, dtype=np.float64), ("UMAP 1", "UMAP 2")


@EMBEDDINGS.register("tsne")
def _tsne_embedding(z: np.ndarray, seed: int) -> tuple[np.ndarray, tuple]:
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(z) - 1) / 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z), ("t-SNE 1", "t-SNE 2")


def embed_2d(z: np.ndarray, method: str = "auto", seed: int = 0, dims: Optional[Sequence[int]] = None
             ) -> tuple[np.ndarray, str, tuple]:
    """2-D view of latents ``z`` (N, D), finite, N >= 1 (>= 5 for t-SNE, UMAP and PCA): returns
    (embedding (N, 2), or (N, 3) for three ``dims``, method used, axis labels).

    ``method``: 'auto' (the latents for D <= 2, else UMAP when installed, else t-SNE),
    'latent' (two or three dims, ``dims``), or one of :data:`EMBEDDINGS`: 'tsne', 'umap' or 'pca'.
    ``dims`` of three latent indices gives the 3-D slice of the latents themselves, (N, 3) (the
    notes' 3-D scatter; :func:`plot_latent_scatter` draws it in 3-D).
    """
    z = check_latents(z, "embed_2d")
    n, d = z.shape
    if method not in ("auto", "latent") and method not in EMBEDDINGS:
        raise AffineVAEError(f"embedding method must be auto, latent, tsne, umap or pca, got {method!r}")
    if dims is not None and (isinstance(dims, (str, bytes)) or not hasattr(dims, "__len__") or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in dims)):
        raise AffineVAEError(f"dims must be a sequence of two or three latent indices (integers), got {dims!r}")
    if dims is not None and method in EMBEDDINGS:
        raise AffineVAEError(f"dims pick latents to show as they are; method {method!r} embeds all of them: leave "
                             "dims out, or take method 'latent'")
    if method == "auto":
        method = "latent" if d <= 2 or dims is not None else "umap" if _umap() is not None else "tsne"
    if method == "latent":
        if d == 1 and dims is None:
            return np.stack([z[:, 0], np.zeros(n)], 1), "latent", ("z[0]", "")
        picked = (0, 1) if dims is None else tuple(int(v) for v in dims)
        if len(picked) not in (2, 3) or not all(0 <= v < d for v in picked) or len(set(picked)) < len(picked):
            raise AffineVAEError(f"dims must be two (or three, a 3-D view) different latent indices in [0, {d - 1}], "
                                 f"got {dims}")
        return z[:, list(picked)].copy(), "latent", tuple(f"z[{v}]" for v in picked)
    if n < 5:
        raise AffineVAEError(f"a {method} embedding needs at least 5 images, got {n}")
    emb, axes = EMBEDDINGS.get(method)(z, seed)
    return emb, method, axes


def latent_codes(model, data, n: Optional[int] = None, method: str = "auto", dims: Optional[Sequence[int]] = None,
                 seed: int = 0, labels=None) -> LatentCodes:
    """Encode the first ``n`` images of ``data`` and make a 2-D view of the latent means.

    For latent_dim <= 2 (or with ``dims``) the view is the latents themselves; otherwise
    t-SNE (or UMAP when installed; ``method`` forces one: 'tsne', 'umap', 'pca').
    True angles come from the data (rotated MNIST), learned angles from the model.

    ``data``: an :class:`~affinevae.data.ImageSet` or (N, C, H, W) / (N, H, W) images; ``labels``:
    (N,) int class labels replacing the data's, needed when the model is class-conditional and
    ``data`` carries none; they also colour the 'class' panel.
    ``dims``: two latent indices, or three for a 3-D view of the latents themselves.
    Returns :class:`LatentCodes` of the M = min(n, N) images used (N for ``n`` None): ``z_mean`` (M, D),
    ``embedding`` (M, 2) (or (M, 3)), ``true_angle``/``learned_angle`` (M,) radians or None.
    """
    data = take(as_imageset(data, labels), n)
    enc = encode(model, data)
    emb, used, axis = embed_2d(enc["z_mean"], method, seed, dims)
    return LatentCodes(z_mean=enc["z_mean"], embedding=emb, method=used, axis_labels=axis,
                       labels=data.labels, true_angle=None if data.angle is None else np.asarray(data.angle, np.float64),
                       learned_angle=enc.get("angle"), model=model_label(model), inferred_class=enc.get("class"),
                       class_names=None if data.class_names is None else [str(v) for v in data.class_names])


def angle_color_scale(degrees: np.ndarray) -> tuple[str, float]:
    """(colormap name, limit in degrees) for colouring by angle: ``degrees`` is an array of
    angles in degrees, any shape (NaN and infinite values are ignored), as plotted.

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


#: Colour of the points whose label is -1 (unknown) in the plots coloured by class.
UNKNOWN_COLOR = "#cccccc"


def _scatter_panel(fig, ax, codes: LatentCodes, color_by: str, size: float):
    cols = _columns(codes)
    if color_by in ("class", "inferred_class"):
        labels = codes.labels if color_by == "class" else codes.inferred_class
        names = codes.class_names if color_by == "class" else None  # (a joint model's classes have none)
        if labels is None:
            raise AffineVAEError("colouring by class needs labelled data" if color_by == "class"
                                 else "colouring by inferred class needs a joint or semi-supervised model")
        classes = np.unique(labels)
        import matplotlib

        cmap = matplotlib.colormaps[CLASS_CMAP]
        # labels of -1 (unknown: partly labelled data) drawn first, in light grey, under the known ones
        for c in sorted(classes, key=lambda c: (c >= 0, c)):
            sel = labels == c
            ax.scatter(*(v[sel] for v in cols), s=size, color=cmap(int(c) % 10) if c >= 0 else UNKNOWN_COLOR,
                       label=class_name(c, names) if c >= 0 else "unknown", alpha=0.8, linewidths=0)
        ax.legend(title="class" if color_by == "class" else "inferred", loc="center left",
                  bbox_to_anchor=(1.12 if ax.name == "3d" else 1.0, 0.5),  # clear of a 3-D panel's z label
                  markerscale=max(1.0, 12 / size), frameon=False, handletextpad=0.2, borderaxespad=0.3,
                  ncol=1 if len(classes) <= 12 else 2)
        ax.set_title("coloured by class" if color_by == "class" else "coloured by inferred class")
    else:
        values = codes.true_angle if color_by == "true_angle" else codes.learned_angle
        if values is None:
            raise AffineVAEError(f"colouring by {color_by.replace('_', ' ')} needs "
                                 + ("data with known angles (e.g. rotated-mnist, or an .npz with an 'angle' array)"
                                    if color_by == "true_angle"
                                    else "a model that learns the angle (rvae/crvae with rotation, avae)"))
        deg = np.degrees(wrap_angles(values))
        cmap, lim = angle_color_scale(deg)
        sc = ax.scatter(*cols, s=size, c=np.clip(deg, -lim, lim), cmap=cmap, vmin=-lim, vmax=lim, alpha=0.85,
                        linewidths=0)
        what = "true" if color_by == "true_angle" else "learned"
        angle_colorbar(fig, sc, ax, f"{what} angle (degrees)", limit=lim)
        ax.set_title(f"coloured by {what} angle")
    _axis_labels(ax, codes)


def _columns(codes: LatentCodes) -> list:
    return [codes.embedding[:, k] for k in range(codes.embedding.shape[1])]


def _axis_labels(ax, codes: LatentCodes) -> None:
    ax.set_xlabel(codes.axis_labels[0])
    ax.set_ylabel(codes.axis_labels[1])
    if codes.embedding.shape[1] == 3:
        ax.set_zlabel(codes.axis_labels[2])


@styled
def plot_latent_scatter(codes: LatentCodes | Sequence[LatentCodes], color_by: str | Sequence[str] = "auto",
                        title: Optional[str] = None):
    """Scatter of latent means; one panel per colouring ('class', 'true_angle', 'learned_angle').

    ``codes`` may be a list (one row per model). ``color_by='auto'`` uses every colouring
    the data support. Angles are shown in degrees on a cyclic colour map. Codes whose
    ``embedding`` is (N, 3) (:func:`latent_codes` with three ``dims``) are drawn on 3-D axes.
    """
    rows = one_or_more(codes, LatentCodes, "plot_latent_scatter")
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
                                 + {"class": "the data have no labels (give them: --labels FILE, or an .npz with a "
                                             "'labels' array)",
                                    "inferred_class": "no model here infers a class (jvae/jrvae/ssvae/ssrvae)",
                                    "true_angle": "the data have no known angles (e.g. use rotated-mnist)",
                                    "learned_angle": "no model here learns an angle (rvae/crvae with rotation, avae)"}[k])
    if not kinds:
        kinds = ["none"]
    widths = {r.embedding.shape[1] for r in rows}
    if len(widths) > 1:
        raise AffineVAEError("plot_latent_scatter: the codes mix 2-D and 3-D views; give every model the same dims")
    three = widths == {3}
    fig, axes = new_figure(len(rows), len(kinds), panel=(4.4, 3.8) if three else (3.9, 3.1),
                           subplot_kw={"projection": "3d"} if three else {})
    for r, codes_r in enumerate(rows):
        size = float(np.clip(3000 / max(len(codes_r.embedding), 1), 2, 25))
        for c, kind in enumerate(kinds):
            ax = axes[r, c]
            if kind == "none":
                ax.scatter(*_columns(codes_r), s=size, color="0.3", linewidths=0)
                _axis_labels(ax, codes_r)
            elif kind not in codes_r.available():
                ax.set_axis_off()
                write = ax.text2D if three else ax.text  # a 3-D panel's text in axes coordinates
                write(0.5, 0.5, f"{codes_r.model}:\nno {kind.replace('_', ' ')}", ha="center", va="center",
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
    """Statistics of given latent means ``z`` (N, D) (finite, N >= 1)."""
    z = check_latents(z, "latent_stats_from_codes")
    return LatentStats(name=name, z=z, min=z.min(0), max=z.max(0), mean=z.mean(0), std=z.std(0))


def latent_stats(model, data, n: Optional[int] = None, name: Optional[str] = None, labels=None) -> LatentStats:
    """Encode the first ``n`` images of ``data`` and compute per-dimension min/max/mean/std of the means.

    ``data``: an :class:`~affinevae.data.ImageSet` or (N, C, H, W) / (N, H, W) images; ``labels``:
    (N,) int class labels replacing the data's, needed when the model is class-conditional and
    ``data`` carries none. Returns :class:`LatentStats`: ``z`` (M, D) over the M = min(n, N)
    images used (N for ``n`` None), statistics (D,).
    """
    data = take(as_imageset(data, labels), n)
    return latent_stats_from_codes(encode(model, data)["z_mean"], name or model_label(model))


@styled
def plot_latent_stats(stats: LatentStats | Sequence[LatentStats], title: Optional[str] = None, max_dims: int = 16):
    """Compare latent statistics of one or several models (one column each, shared axes).

    Top: per dimension, the range (min to max, thin line) and mean +- std (thick bar) with the
    N(0, 1) reference (+-1 dashed). Bottom: the density of each dimension's values (one line
    per dimension) against the N(0, 1) density (black dashed).

    Args:
        stats: one :class:`LatentStats` (:func:`latent_stats`) or a sequence of them (one column each).
        title: figure title. max_dims: at most this many latent dimensions are drawn (the first).

    Returns:
        A matplotlib Figure (2 rows x one column per model).
    """
    items = one_or_more(stats, LatentStats, "plot_latent_stats")
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


@in_eval_mode
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
    lo_d, hi_d = MANIFOLD_GRID_SIDE
    if not (isinstance(d, int) and lo_d <= d <= hi_d):
        raise AffineVAEError(f"d must be an integer in [{lo_d}, {hi_d}], got {d!r}")
    lo, hi = (float(b) for b in bounds)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise AffineVAEError(f"bounds must be finite with low < high, got {tuple(bounds)}")
    angle = check_angle(angle, "latent_manifold")
    i, j = (int(v) for v in dims)
    if not (0 <= i < D and 0 <= j < D) or i == j:
        raise AffineVAEError(f"dims must be two different latent indices in [0, {D - 1}], got {tuple(dims)}")
    grid = np.linspace(lo, hi, d)
    z = np.zeros((d * d, D), np.float32)
    xs, ys = np.meshgrid(grid, grid[::-1])   # row 0 = top = largest y
    z[:, i], z[:, j] = xs.ravel(), ys.ravel()
    classes = model_classes(model, classes, "a manifold per class")
    panels = [None] if classes is None else classes
    zt = torch.as_tensor(z)
    ang = None if angle == 0 else torch.full((len(z),), float(angle))
    out = []
    with torch.no_grad():
        for c in panels:
            y = None if c is None else torch.full((len(z),), c, dtype=torch.long)
            out.append(to_numpy(model.decode(zt, y, angle=ang)))
    return Manifold(np.stack(out), grid, (i, j), float(angle), None if panels == [None] else panels, model_label(model))


@styled
def plot_manifold(m: Manifold, title: Optional[str] = None, max_cols: int = 5,
                  class_names: Optional[Sequence[str]] = None):
    """The decoded grid(s) with the latent values on the axes (one panel per class; ``class_names``:
    the K names of the classes when the labels named them, shown in the panels' titles)."""
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
            ax.set_title(class_title(m.classes[k], class_names))
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


@in_eval_mode
def interpolate(model, data, pair: Sequence[int] = (0, 1), steps: int = 10, labels=None) -> Interpolation:
    """Morph image ``pair[0]`` into ``pair[1]`` of ``data`` through the latent space in ``steps`` steps.

    The latent means are interpolated linearly; a model's pose (rVAE/AVAE) is interpolated
    too (angle along the shorter arc), so both ends are the inputs' reconstructions.
    Conditional models decode each step in the class of the nearer end.

    ``data``: an :class:`~affinevae.data.ImageSet` or (N, C, H, W) / (N, H, W) images; ``labels``:
    (N,) int class labels replacing the data's, needed when the model is class-conditional and
    ``data`` carries none. Returns :class:`Interpolation` (``images`` (steps, C, H, W),
    ``angle`` (steps,) radians or None).
    """
    data = as_imageset(data, labels)
    idx = check_indices(pair, len(data), "interpolation")
    if len(idx) != 2:
        raise AffineVAEError(f"interpolation needs two image indices, got {len(idx)}")
    if not (isinstance(steps, int) and steps >= 2):
        raise AffineVAEError(f"steps must be an integer >= 2, got {steps!r}")
    y = labels_for(model, data, idx)
    x = torch.as_tensor(data.images[idx])
    with torch.no_grad():
        enc = model.encode(x, y)
        t = np.linspace(0.0, 1.0, steps)
        za, zb = enc.z_mean[0].float().cpu(), enc.z_mean[1].float().cpu()
        tt = torch.as_tensor(t, dtype=torch.float32)[:, None]
        z = za + tt * (zb - za)
        pose = _lerp_pose(None if enc.pose is None else enc.pose.to("cpu"), t)
        ys = None if y is None else torch.where(torch.as_tensor(t) < 0.5, y[0], y[1]).long()
        imgs = to_numpy(model.decode(z, ys, pose=None if pose is None else pose.to(model.device)))
    return Interpolation(t=t, z=z.numpy(), images=imgs, endpoints=data.images[idx], indices=idx,
                         classes=None if ys is None else ys.numpy(),
                         angle=None if pose is None or pose.angle is None else pose.angle.numpy(),
                         model=model_label(model))


@styled
def plot_interpolation(items: Interpolation | Sequence[Interpolation], title: Optional[str] = None,
                       names: Optional[Sequence[str]] = None):
    """One row per interpolation: input A (green frame), the decoded path, input B (red frame)."""
    from matplotlib.patches import Rectangle

    rows = one_or_more(items, Interpolation, "plot_interpolation")
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
        decoded_inputs: (3, C, H, W) their content latents decoded at the canonical pose (for a pose model not
            reconstructions: the inputs turned back to the model's frame).
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


@in_eval_mode
def latent_arithmetic(model, data, triple: Sequence[int] = (0, 1, 2), labels=None) -> Arithmetic:
    """Decode z_a - z_b + z_c for images ``triple`` = (a, b, c) of ``data``.

    Decoded in the canonical pose; conditional models decode in the class of c.

    ``data``: an :class:`~affinevae.data.ImageSet` or (N, C, H, W) / (N, H, W) images; ``labels``:
    (N,) int class labels replacing the data's, needed when the model is class-conditional and
    ``data`` carries none. Returns :class:`Arithmetic` (``result`` (C, H, W), ``z`` (3, D)).
    """
    data = as_imageset(data, labels)
    idx = check_indices(triple, len(data), "latent arithmetic")
    if len(idx) != 3:
        raise AffineVAEError(f"latent arithmetic needs three image indices (a - b + c), got {len(idx)}")
    y = labels_for(model, data, idx)
    with torch.no_grad():
        enc = model.encode(torch.as_tensor(data.images[idx]), y)
        z = enc.z_mean.float()
        zr = (z[0] - z[1] + z[2])[None]
        decoded = to_numpy(model.decode(z, y))
        res = to_numpy(model.decode(zr, None if y is None else y[2:3]))[0]
    return Arithmetic(inputs=data.images[idx], decoded_inputs=decoded, result=res, z=to_numpy(z), z_result=to_numpy(zr)[0],
                      indices=idx, model=model_label(model))


@styled
def plot_arithmetic(items: Arithmetic | Sequence[Arithmetic], title: Optional[str] = None,
                    names: Optional[Sequence[str]] = None):
    """a - b + c = result, with the inputs above their canonical decodings (one block per item)."""
    rows = one_or_more(items, Arithmetic, "plot_arithmetic")
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


