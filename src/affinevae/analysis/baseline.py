"""Linear baselines beside the latents: scikit-learn's PCA and NMF of the same images or spectra.

:func:`fit_baseline` decomposes (N, ...) samples (patches (N, C, w, w), spectra (N, C, 1, L) or
(N, L)) into ``loadings`` (N, K) times ``components`` (K, ...) with
:class:`sklearn.decomposition.PCA` or :class:`sklearn.decomposition.NMF` (registered by name in
:data:`BASELINES`). The loadings are drawn as maps where the latents are (object positions,
cube pixels) and the components as images or curves (:func:`plot_components`), so the learned
latents and the linear decomposition can be compared side by side
(:mod:`affinevae.analysis.spectra`, ``affinevae map --baseline``, the report).

NMF needs non-negative data. ``nonnegative='error'`` (default) refuses data with negative
values in one line; ``'shift'`` subtracts the data's minimum first (recorded as
:attr:`Baseline.offset`, so ``loadings @ components + offset`` approximates the data).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
from matplotlib.figure import Figure

from ..errors import AffineVAEError
from ..registry import Registry

__all__ = ["BASELINES", "NONNEGATIVE", "Baseline", "fit_baseline", "check_components", "check_nonnegative", "component_title", "plot_components",
           "write_patch_baseline", "LatentVsBaseline", "latent_vs_baseline", "plot_latent_vs_baseline"]

#: Baseline name -> ``make(n_components, seed) -> sklearn estimator`` (fit_transform, components_).
BASELINES: Registry = Registry("baseline")
#: How NMF treats negative data: refuse it, or subtract the minimum.
NONNEGATIVE = ("error", "shift")


@BASELINES.register("pca")
def _pca(n_components: int, seed: int):
    """Principal component analysis (centred; components orthonormal, by decreasing variance)."""
    from sklearn.decomposition import PCA

    return PCA(n_components=n_components, random_state=seed)


@BASELINES.register("nmf")
def _nmf(n_components: int, seed: int):
    """Non-negative matrix factorisation (NNDSVDa start, deterministic for a seed)."""
    from sklearn.decomposition import NMF

    return NMF(n_components=n_components, init="nndsvda", max_iter=500, random_state=seed)


@dataclasses.dataclass
class Baseline:
    """A fitted linear decomposition ``X ~ loadings @ components (+ mean for PCA, + offset)``.

    Attributes:
        method: 'pca' or 'nmf'.
        loadings: (N, K) float32 per-sample weights (PCA scores, NMF activations).
        components: (K, *sample_shape) float32 basis images or spectra, in the data's units.
        explained: (K,) PCA's explained-variance ratios; None for NMF.
        offset: what was subtracted from the data before NMF ('shift'), else 0.
    """

    method: str
    loadings: np.ndarray
    components: np.ndarray
    explained: Optional[np.ndarray] = None
    offset: float = 0.0

    @property
    def n_components(self) -> int:
        """K."""
        return int(self.loadings.shape[1])

    def arrays(self, prefix: str = "baseline_") -> dict[str, np.ndarray]:
        """The arrays for an ``.npz``: ``{prefix}loadings`` (N, K), ``{prefix}components`` (K, *sample_shape),
        ``{prefix}method`` (a 0-d string array), ``{prefix}offset`` (a float32 scalar) and, for PCA,
        ``{prefix}explained`` (K,)."""
        out = {f"{prefix}loadings": self.loadings, f"{prefix}components": self.components,
               f"{prefix}method": np.asarray(self.method), f"{prefix}offset": np.float32(self.offset)}
        if self.explained is not None:
            out[f"{prefix}explained"] = self.explained
        return out


def check_components(n_components: int, n_samples: int, n_features: int, where: str = "data") -> None:
    """Refuse (one :class:`AffineVAEError` line naming ``where``) a baseline component count K that is not an
    integer in 1..min(``n_samples``, ``n_features``): what :func:`fit_baseline` can fit for N samples of F
    values each (a command checks it before any work)."""
    k_max = min(int(n_samples), int(n_features))
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or not 1 <= n_components <= k_max:
        raise AffineVAEError(f"{where}: baseline components must be an integer in 1..{k_max}, got {n_components!r}")


def check_nonnegative(minimum: float, method: str, nonnegative: str, where: str = "data") -> None:
    """Refuse (one :class:`AffineVAEError` line naming ``where``) NMF (``method`` 'nmf') on data whose
    ``minimum`` value is below 0 when ``nonnegative`` is 'error' (with 'shift' :func:`fit_baseline`
    subtracts it); a command checks it before any work."""
    if method == "nmf" and nonnegative == "error" and minimum < 0:
        raise AffineVAEError(f"{where}: NMF needs non-negative data, the minimum is {minimum:.3g}; use "
                             "--baseline pca, or --nmf-shift to subtract the minimum first")


def fit_baseline(samples: np.ndarray, method: str = "pca", n_components: int = 2, seed: int = 0,
                 nonnegative: str = "error", where: str = "data") -> Baseline:
    """Fit PCA or NMF to ``samples`` (N, ...) flattened per sample.

    Args:
        samples: (N, ...) images, patches or spectra; each sample is flattened.
        method: a name in :data:`BASELINES` ('pca', 'nmf').
        n_components: K, 1 <= K <= min(N, features).
        seed: random state of the estimator.
        nonnegative: NMF on data with negative values: 'error' or 'shift' (subtract the minimum).
        where: names the data in error messages.

    Returns:
        :class:`Baseline` with ``components`` reshaped to the sample shape.

    Raises:
        AffineVAEError: an unknown method, a bad K, non-finite values, or (NMF, 'error') negative data.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim < 2 or len(x) == 0:
        raise AffineVAEError(f"{where}: a baseline needs (N, ...) samples, got shape {x.shape}")
    make: Callable = BASELINES.get(method)
    if nonnegative not in NONNEGATIVE:
        raise AffineVAEError(f"nonnegative must be one of {list(NONNEGATIVE)}, got {nonnegative!r}")
    shape = x.shape[1:]
    flat = x.reshape(len(x), -1)
    check_components(n_components, *flat.shape, where=where)
    if not np.isfinite(flat).all():
        raise AffineVAEError(f"{where}: NaN or infinite values; a baseline needs finite data")
    offset = 0.0
    if method == "nmf":
        lowest = float(flat.min())
        check_nonnegative(lowest, method, nonnegative, where)
        if lowest < 0:  # ('shift': subtracted)
            offset = lowest
            flat = flat - offset
    est = make(int(n_components), seed)
    loadings = est.fit_transform(flat)
    explained = getattr(est, "explained_variance_ratio_", None)
    return Baseline(method, loadings.astype(np.float32), est.components_.reshape(-1, *shape).astype(np.float32),
                    None if explained is None else np.asarray(explained, dtype=np.float32), offset)


def component_title(base: Baseline, k: int) -> str:
    """'PC1 (43 %)' for PCA (with its explained variance), 'NMF 1' for NMF."""
    if base.method == "pca":
        share = "" if base.explained is None else f" ({100 * float(base.explained[k]):.0f} %)"
        return f"PC{k + 1}{share}"
    return f"{base.method.upper()} {k + 1}"


def plot_components(base: Baseline, title: Optional[str] = None) -> Figure:
    """The baseline's components: curves for 1-D signals ((C, 1, L) or (L,) samples, x in samples),
    images for 2-D samples ((C, H, W) or (H, W); the first channel)."""
    comps = base.components
    signal = comps.ndim == 2 or (comps.ndim == 4 and comps.shape[2] == 1)
    if signal:
        curves = comps.reshape(len(comps), -1) if comps.ndim == 2 else comps[:, 0, 0, :]
        fig = Figure(figsize=(6.4, 3.4), dpi=110, layout="constrained")
        ax = fig.add_subplot()
        for k, c in enumerate(curves):
            ax.plot(np.arange(len(c)), c, label=component_title(base, k))
        ax.set_xlabel("sample (channel)")
        ax.set_ylabel("component")
        ax.legend(fontsize=8)
        ax.set_title(title or f"{base.method.upper()} components")
        return fig
    imgs = comps if comps.ndim == 3 else comps[:, 0]
    k = len(imgs)
    fig = Figure(figsize=(1.8 * k + 0.6, 2.3), dpi=110, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, k))
    for j, (ax, im) in enumerate(zip(axes, imgs)):
        lim = float(np.abs(im).max()) or 1.0
        ax.imshow(im, cmap="RdBu_r" if base.method == "pca" else "viridis",
                  vmin=-lim if base.method == "pca" else 0, vmax=lim)
        ax.set_title(component_title(base, j), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"{base.method.upper()} components")
    return fig


def write_patch_baseline(patches: np.ndarray, centers: np.ndarray, frames: np.ndarray, out_dir,
                         method: str = "pca", n_components: int = 2, image: Optional[np.ndarray] = None,
                         frame: int = 0, nonnegative: str = "error", seed: int = 0) -> dict:
    """The baseline of a patch set beside its latent maps (``affinevae map --baseline``).

    Fits ``method`` to the (N, w, w) or (N, C, w, w) ``patches`` and writes into ``out_dir``:
    ``baseline.npz`` (:meth:`Baseline.arrays`, loadings (N, K) in patch order),
    ``baseline_loadings.png`` (each loading drawn at the objects' ``centers`` (N, 2) (row, col)
    pixels of frame ``frame`` over ``image``, as the latent maps are) and
    ``baseline_components.png`` (the components as w x w images). Returns name -> path.
    """
    from pathlib import Path

    from ..io import atomic_write
    from ..mapping import latent_maps

    base = fit_baseline(patches, method, n_components, seed, nonnegative, where="patches")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays = base.arrays()

    def w(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    files = {"baseline": atomic_write(out / "baseline.npz", w)}
    sel = np.asarray(frames) == frame
    names = ", ".join(component_title(base, k) for k in range(base.n_components))
    fig = latent_maps(image, np.asarray(centers)[sel], base.loadings[sel], dims=list(range(base.n_components)),
                      title=f"{method.upper()} loadings ({names}; panel zK = component K+1)")[1]
    files["baseline_loadings"] = atomic_write(out / "baseline_loadings.png", lambda tmp: fig.savefig(tmp, format="png"))
    comp = plot_components(base)
    files["baseline_components"] = atomic_write(out / "baseline_components.png",
                                                lambda tmp: comp.savefig(tmp, format="png"))
    return files


@dataclasses.dataclass
class LatentVsBaseline:
    """Posterior means and a baseline's loadings of the same samples (for :func:`plot_latent_vs_baseline`).

    Attributes:
        z: (N, D) content posterior means. baseline: the :class:`Baseline` of the same N samples.
        labels: (N,) int class labels to colour by, or None (then coloured by the first loading).
    """

    z: np.ndarray
    baseline: Baseline
    labels: Optional[np.ndarray] = None


def latent_vs_baseline(model, data, method: str = "pca", n_components: int = 2, seed: int = 0,
                       nonnegative: str = "error") -> LatentVsBaseline:
    """Encode ``data`` (an :class:`~affinevae.data.ImageSet` of images, patches or spectra, or an (N, C, H, W) /
    (N, H, W) array or tensor) and fit ``method`` to the same samples."""
    from ..encoding import encode_dataset
    from .common import as_imageset

    data = as_imageset(data)
    codes = encode_dataset(model, data.images, data.labels if model.conditional else None, elbo=False)
    base = fit_baseline(data.images, method, n_components, seed, nonnegative, where=data.source)
    return LatentVsBaseline(codes["z_mean"], base, data.labels)


def plot_latent_vs_baseline(res: LatentVsBaseline) -> Figure:
    """Side by side: the two most varying content latents, the baseline's first two loadings (both
    coloured by class, else by the first loading) and the baseline's components."""
    z, base = res.z, res.baseline
    dims = sorted(np.argsort(-z.var(0))[:2].tolist())
    colour = res.labels if res.labels is not None else base.loadings[:, 0]
    cmap = "tab10" if res.labels is not None else "viridis"
    fig = Figure(figsize=(12.5, 3.9), dpi=100, layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, pts, names in ((axes[0], z[:, dims], [f"z{d}" for d in dims]),
                           (axes[1], base.loadings[:, :2], [component_title(base, k) for k in range(min(2, base.n_components))])):
        y = pts[:, 1] if pts.shape[1] > 1 else np.zeros(len(pts))
        sc = ax.scatter(pts[:, 0], y, c=colour, cmap=cmap, s=6, linewidths=0)
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1] if len(names) > 1 else "")
    axes[0].set_title("content latents (posterior means)")
    axes[1].set_title(f"{base.method.upper()} loadings")
    fig.colorbar(sc, ax=axes[1], shrink=0.8, label="class" if res.labels is not None else "first loading")
    comps = base.components
    if comps.ndim == 4 and comps.shape[2] == 1 or comps.ndim == 2:  # 1-D signals: curves
        for k, c in enumerate(comps.reshape(len(comps), -1) if comps.ndim == 2 else comps[:, 0, 0, :]):
            axes[2].plot(np.arange(c.size), c, label=component_title(base, k))
        axes[2].set_xlabel("sample (channel)")
        axes[2].legend(fontsize=7)
    else:  # images: the components side by side in one strip
        imgs = comps if comps.ndim == 3 else comps[:, 0]
        axes[2].imshow(np.concatenate(list(imgs), axis=1), cmap="RdBu_r" if base.method == "pca" else "viridis")
        axes[2].set_xticks([])
        axes[2].set_yticks([])
    axes[2].set_title(f"{base.method.upper()} components")
    return fig
