"""Maps of a hyperspectral cube: each pixel's content latents and shift, clusters, and a PCA/NMF baseline.

A cube (H, W, E) is encoded as its H*W spectra (:mod:`affinevae.data.spectra`); the results are
drawn back over (H, W): one map per content latent, the shift map (samples), the clusters of
the content latents and, when asked, the loading maps and components of a linear baseline
(:mod:`affinevae.analysis.baseline`) next to the latent maps. ``affinevae map RUN --cube`` calls
:func:`spectral_maps` and :func:`write_spectral_maps`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
from matplotlib.figure import Figure

from ..data.imageset import ImageSet
from ..errors import AffineVAEError
from ..io import atomic_write
from ..scalebar import add_scale_bar
from ..units import PixelSize
from .baseline import Baseline, component_title, fit_baseline, plot_components

__all__ = ["SpectralMaps", "check_signal_model", "spectral_maps", "plot_value_map", "plot_baseline_comparison",
           "write_spectral_maps"]


@dataclasses.dataclass
class SpectralMaps:
    """Per-pixel results of a cube.

    Attributes:
        z_mean: (H, W, D) float32 content posterior means.
        shift: (H, W) float32 shift in samples, or None for a model without a shift latent.
        cluster: (H, W) int64 cluster of the content latents (0 largest), or None.
        baseline: the :class:`Baseline` fitted to the same spectra (loadings (H*W, K)), or None.
        klass: (H, W) int64 class the model infers for each pixel's spectrum (a model with classes
            of its own: jvae/jrvae, ssvae/ssrvae), or None.
        class_prob: (H, W, K) float32 the model's class probabilities, or None.
        sample_size: the signal axis's units per sample where the cube's file calibrates it (an
            instrument file's energy axis: ``ImageSet.meta['sample_size']``), or None.
        sample_unit: that axis's unit (e.g. 'eV'), or None.
        pixel_size: the map pixel's edge, a :class:`~affinevae.units.PixelSize` (an instrument file's
            spatial calibration, ``ImageSet.meta['pixel_size']`` / ``['pixel_unit']``, or ``map --pixel-size``),
            or None: ``maps.npz`` then holds it and the PNG maps get a scale bar.
    """

    z_mean: np.ndarray
    shift: Optional[np.ndarray] = None
    cluster: Optional[np.ndarray] = None
    baseline: Optional[Baseline] = None
    klass: Optional[np.ndarray] = None
    class_prob: Optional[np.ndarray] = None
    sample_size: Optional[float] = None
    sample_unit: Optional[str] = None
    pixel_size: Optional[PixelSize] = None

    @property
    def shift_phys(self) -> Optional[np.ndarray]:
        """(H, W) float64 shift in :attr:`sample_unit` (samples times :attr:`sample_size`) where both the
        shift and the calibration are known, else None."""
        if self.shift is None or self.sample_size is None or not self.sample_unit:
            return None
        return np.asarray(self.shift, np.float64) * float(self.sample_size)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.z_mean.shape[0]), int(self.z_mean.shape[1])

    def baseline_maps(self) -> Optional[np.ndarray]:
        """(H, W, K) baseline loadings, or None."""
        if self.baseline is None:
            return None
        return self.baseline.loadings.reshape(*self.grid_shape, -1)

    def arrays(self) -> dict[str, np.ndarray]:
        """What ``maps.npz`` holds: ``z_mean`` (H, W, D), ``grid_shape`` (2,), ``shift`` (H, W) samples
        (NaN without a shift latent), ``cluster`` (H, W) (-1 without clustering), the model's own
        ``class`` (H, W) and ``class_prob`` (H, W, K) where it infers classes, ``shift_phys`` (H, W) with
        ``sample_size`` and ``unit`` where the signal axis is calibrated (:attr:`shift_phys`), the map
        pixel's ``pixel_size`` () float64 and ``pixel_unit`` () string where known (``unit`` is the signal
        axis's), and the baseline's arrays (:meth:`Baseline.arrays`, loadings as (H, W, K))."""
        h, w = self.grid_shape
        out = {"z_mean": self.z_mean, "grid_shape": np.asarray([h, w], np.int64),
               "shift": self.shift if self.shift is not None else np.full((h, w), np.nan, np.float32),
               "cluster": self.cluster if self.cluster is not None else np.full((h, w), -1, np.int64)}
        if self.klass is not None:
            out["class"] = self.klass
            out["class_prob"] = self.class_prob
        if self.shift_phys is not None:
            out.update(shift_phys=self.shift_phys, sample_size=np.float64(self.sample_size),
                       unit=np.asarray(str(self.sample_unit)))
        if self.pixel_size is not None:
            out.update(pixel_size=np.float64(self.pixel_size.value), pixel_unit=np.asarray(self.pixel_size.unit))
        if self.baseline is not None:
            out.update(self.baseline.arrays())
            out["baseline_loadings"] = self.baseline_maps()
        return out


def check_signal_model(model, data: ImageSet, where: str = "spectra") -> None:
    """Raise :class:`AffineVAEError` unless ``model`` encodes the 1-D signals of ``data``: an
    unconditional model for (C, 1, L) signals of the same C and L (a different L usually means a
    wrong ``--signal-axis``)."""
    want = tuple(int(v) for v in model.config.image_shape)
    got = tuple(int(v) for v in data.image_shape)
    if want[1] != 1:
        raise AffineVAEError(f"model '{model.family}' was trained on {want[1]}x{want[2]} images, not on 1-D signals")
    if got[2] != want[2]:
        raise AffineVAEError(f"{where}: the spectra have {got[2]} samples but the model expects {want[2]}; "
                             "check --signal-axis")
    if got[0] != want[0]:
        raise AffineVAEError(f"{where}: {got[0]} channels per signal but the model expects {want[0]}")
    if model.conditional:
        raise AffineVAEError(f"model '{model.family}' is class-conditional; mapping needs an unconditional model")


def spectral_maps(model, data: ImageSet, n_clusters: Optional[int] = None, cluster_method: str = "kmeans",
                  baseline: Optional[str] = None, n_components: int = 2, nonnegative: str = "error",
                  batch_size: int = 512, seed: int = 0) -> SpectralMaps:
    """Encode a cube's spectra and arrange the results over its (H, W) grid.

    Args:
        model: a trained unconditional model of 1-D signals (e.g. the rVAE with the shift invariance).
        data: spectra with ``meta['grid_shape']`` (:func:`affinevae.data.spectra.load_signals` of a cube).
        n_clusters: K for clustering the content latents (:func:`affinevae.mapping.cluster_latents`); None: none.
        cluster_method: 'kmeans' or 'gmm'.
        baseline: 'pca' or 'nmf' fitted to the same spectra (None: none); ``n_components`` of them.
        nonnegative: NMF on negative data, see :func:`~affinevae.analysis.baseline.fit_baseline`.
        batch_size: spectra per forward pass. seed: clustering and baseline seed.

    Raises:
        AffineVAEError: data without a grid (not a cube), a model that does not fit the spectra
            (:func:`check_signal_model`), or the clustering's and baseline's own checks.
    """
    from ..encoding import encode_dataset
    from ..mapping import cluster_latents

    grid = data.meta.get("grid_shape")
    if grid is None:
        raise AffineVAEError(f"{data.source}: not a cube (H, W, E): no map grid to draw on")
    h, w = int(grid[0]), int(grid[1])
    if h * w != len(data):
        raise AffineVAEError(f"{data.source}: {len(data)} spectra for a {h}x{w} grid")
    check_signal_model(model, data, data.source)
    codes = encode_dataset(model, data.images, batch_size=batch_size, elbo=False, where=data.source)
    z = codes["z_mean"]
    shift = codes.get("shift")
    if shift is not None and shift.ndim != 1:
        shift = None  # not a 1-D shift latent
    cluster = None if n_clusters is None else cluster_latents(z, n_clusters, cluster_method, seed).reshape(h, w)
    base = None
    if baseline is not None:
        base = fit_baseline(data.images, baseline, n_components, seed, nonnegative, where=data.source)
    klass = prob = None
    if "class" in codes:  # a model that infers classes itself
        klass = np.asarray(codes["class"], dtype=np.int64).reshape(h, w)
        prob = np.asarray(codes["class_prob"], dtype=np.float32).reshape(h, w, -1)
    size, unit = data.meta.get("sample_size"), data.meta.get("sample_unit")
    px, px_unit = data.meta.get("pixel_size"), data.meta.get("pixel_unit")
    return SpectralMaps(z.reshape(h, w, -1), None if shift is None else shift.reshape(h, w), cluster, base,
                        klass, prob, sample_size=None if size is None else float(size),
                        sample_unit=str(unit) if unit else None,
                        pixel_size=PixelSize(float(px), str(px_unit)) if px is not None and px_unit else None)


def _map_axes(fig: Figure, ax, values: np.ndarray, title: str, cmap: str = "viridis", label: str = "",
              pixel_size: Optional[PixelSize] = None) -> None:
    if cmap == "classes":  # integer labels 0..K-1: one colour each
        import matplotlib
        from matplotlib.colors import BoundaryNorm, ListedColormap

        k = int(values.max()) + 1
        colors = matplotlib.colormaps["tab10"].colors
        im = ax.imshow(values, cmap=ListedColormap([colors[j % 10] for j in range(k)]),
                       norm=BoundaryNorm(np.arange(-0.5, k + 0.5), k), interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8, ticks=np.arange(k), label=label or "cluster")
    else:
        im = ax.imshow(values, cmap=cmap, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8, label=label)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    add_scale_bar(ax, pixel_size, values.shape, color="black")


def plot_value_map(values: np.ndarray, title: str, cmap: str = "viridis", label: str = "",
                   pixel_size: Optional[PixelSize] = None) -> Figure:
    """One (H, W) map (a latent, the shift in samples, a loading) with its colour bar; ``cmap``
    'classes' draws integer labels 0..K-1 in one colour each; ``pixel_size`` (the map pixel's edge):
    a scale bar (:func:`affinevae.scalebar.add_scale_bar`)."""
    fig = Figure(figsize=(4.6, 3.8), dpi=110, layout="constrained")
    _map_axes(fig, fig.add_subplot(), np.asarray(values), title, cmap, label, pixel_size)
    return fig


def plot_baseline_comparison(maps: SpectralMaps, max_latents: int = 4) -> Figure:
    """Side by side: the content-latent maps (and the shift map, and clusters) on the top row, the
    baseline's loading maps and its components on the bottom row."""
    if maps.baseline is None:
        raise AffineVAEError("no baseline fitted: give baseline='pca' or 'nmf'")
    z = maps.z_mean
    dims = sorted(np.argsort(-z.reshape(-1, z.shape[-1]).var(0))[:max_latents].tolist())
    top = [(z[:, :, d], f"latent z{d}", "viridis", "") for d in dims]
    if maps.shift is not None:
        top.append((maps.shift, "shift (samples)", "coolwarm", "samples"))
    if maps.cluster is not None:
        top.append((maps.cluster, "clusters of the latents", "classes", ""))
    loads = maps.baseline_maps()
    base = maps.baseline
    bottom = [(loads[:, :, k], f"{component_title(base, k)} loading", "viridis", "") for k in range(base.n_components)]
    cols = max(len(top), len(bottom) + 1)
    fig = Figure(figsize=(3.2 * cols, 6.2), dpi=100, layout="constrained")
    axes = fig.subplots(2, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (v, t, cm, lab) in zip(axes[0], top):
        ax.set_axis_on()
        _map_axes(fig, ax, v, t, cm, lab)
    for ax, (v, t, cm, lab) in zip(axes[1], bottom):
        ax.set_axis_on()
        _map_axes(fig, ax, v, t, cm, lab)
    ax = axes[1][len(bottom)]
    ax.set_axis_on()
    for k, c in enumerate(base.components[:, 0, 0, :] if base.components.ndim == 4 else base.components):
        ax.plot(np.arange(c.size), np.ravel(c), label=component_title(base, k))
    ax.set_title(f"{base.method.upper()} components", fontsize=10)
    ax.set_xlabel("sample (channel)")
    ax.legend(fontsize=7)
    fig.suptitle(f"learned latents (top) vs {base.method.upper()} (bottom)")
    return fig


def write_spectral_maps(maps: SpectralMaps, out_dir: str | Path) -> dict[str, Path]:
    """Write ``maps.npz`` (:meth:`SpectralMaps.arrays`) and the PNGs into ``out_dir`` (created):
    ``latent_{d}.png`` per content latent, ``shift.png`` (a shift latent), ``clusters.png``
    (clustered), ``classes.png`` (a model's own classes) and, with a baseline, ``baseline_{k}.png`` per loading map,
    ``baseline_components.png`` and ``baseline_comparison.png``; each map with a scale bar when
    :attr:`SpectralMaps.pixel_size` is known. Every write is atomic.
    Returns name -> path of everything written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    arrays = maps.arrays()
    ps = maps.pixel_size  # a scale bar on each map

    def w(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    files["maps"] = atomic_write(out / "maps.npz", w)

    def save(name: str, fig: Figure) -> None:
        files[name] = atomic_write(out / f"{name}.png", lambda tmp: fig.savefig(tmp, format="png"))

    for d in range(maps.z_mean.shape[-1]):
        save(f"latent_{d}", plot_value_map(maps.z_mean[:, :, d], f"content latent z{d}", pixel_size=ps))
    if maps.shift_phys is not None:  # a calibrated axis: the map in its unit (the arrays hold both)
        save("shift", plot_value_map(maps.shift_phys, f"shift ({maps.sample_unit})", "coolwarm", maps.sample_unit, ps))
    elif maps.shift is not None:
        save("shift", plot_value_map(maps.shift, "shift (samples)", "coolwarm", "samples", ps))
    if maps.cluster is not None:
        save("clusters", plot_value_map(maps.cluster, "clusters of the content latents", "classes", pixel_size=ps))
    if maps.klass is not None:
        save("classes", plot_value_map(maps.klass, "the model's classes", "classes", "class", ps))
    if maps.baseline is not None:
        loads = maps.baseline_maps()
        for k in range(maps.baseline.n_components):
            save(f"baseline_{k}", plot_value_map(loads[:, :, k], f"{component_title(maps.baseline, k)} loading", pixel_size=ps))
        save("baseline_components", plot_components(maps.baseline))
        save("baseline_comparison", plot_baseline_comparison(maps))
    return files
