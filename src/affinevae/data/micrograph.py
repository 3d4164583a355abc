"""Synthetic atomic-resolution micrographs with known grains, orientations and defects.

The lattice is *rectangular* (lattice constants ``a`` = ``spacing`` and ``b`` =
``aspect * spacing``), so the orientation of the lattice is visible inside any patch of a
few atoms, and it has exactly 2-fold rotational symmetry: a lattice turned by ``angle``
looks the same as one turned by ``angle + pi``. Angles recovered from images can therefore
only be compared modulo ``pi`` (``MicrographTruth.symmetry == 2``).

Conventions (as in :mod:`affinevae.nn.affine`): positions are (row, col) in pixels with
pixel centres at integer coordinates; a grain angle rotates the lattice counter-clockwise
*as seen on screen* (rows run downwards), in radians.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
from scipy.spatial import cKDTree

from ..errors import AffineVAEError


@dataclasses.dataclass
class MicrographTruth:
    """Ground truth of a :func:`synthetic_micrograph`.

    Attributes:
        positions: (N, 2) float64 atom centres (row, col) in pixels (vacancies excluded).
        grain: (N,) int64 grain id of each atom.
        grain_angle: (N,) float64 lattice angle of each atom's grain, radians (counter-clockwise on screen).
        defect: (N,) int64 defect label: 0 lattice atom, 1 substitution.
        vacancies: (M, 2) float64 positions (row, col) of the empty lattice sites.
        vacancy_grain: (M,) int64 grain id of each vacancy.
        grain_angles: (G,) float64 angle of each grain, radians.
        spacing: (a, b) lattice constants in pixels.
        symmetry: rotational symmetry order of the lattice (2: angles are equal modulo pi).
        atom_sigma: Gaussian width of an atom in pixels.
    """

    positions: np.ndarray
    grain: np.ndarray
    grain_angle: np.ndarray
    defect: np.ndarray
    vacancies: np.ndarray
    vacancy_grain: np.ndarray
    grain_angles: np.ndarray
    spacing: tuple
    symmetry: int = 2
    atom_sigma: float = 1.0

    def __len__(self) -> int:
        return len(self.positions)


def _grain_of(points: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Voronoi grain id of (N, 2) points given (G, 2) seeds -> (N,) int64."""
    d = ((points[:, None, :] - seeds[None, :, :]) ** 2).sum(-1)
    return d.argmin(1).astype(np.int64)


def render_gaussians(shape: tuple[int, int], positions: np.ndarray, amplitude: np.ndarray,
                     sigma: float) -> np.ndarray:
    """Sum of isotropic Gaussian blobs, vectorised (no loop over atoms).

    Args:
        shape: (H, W) of the output image.
        positions: (N, 2) centres (row, col) in pixels.
        amplitude: (N,) peak value of each blob.
        sigma: blob standard deviation in pixels.

    Returns:
        (H, W) float64 image.
    """
    h, w = shape
    if len(positions) == 0:
        return np.zeros((h, w), dtype=np.float64)
    r = int(math.ceil(3.5 * sigma))
    offs = np.arange(-r, r + 1)
    base = np.rint(positions).astype(np.int64)                      # (N, 2) nearest pixel
    # Separable Gaussian: value = amp * g(row offset) * g(col offset), on a canvas padded by r
    # so that no stamp needs clipping (blobs centred outside the canvas are dropped first).
    keep = (base[:, 0] >= -r) & (base[:, 0] < h + r) & (base[:, 1] >= -r) & (base[:, 1] < w + r)
    base, positions, amplitude = base[keep], positions[keep], np.asarray(amplitude, dtype=np.float64)[keep]
    gr = np.exp(-((base[:, 0, None] + offs) - positions[:, 0, None]) ** 2 / (2.0 * sigma * sigma))  # (N, k)
    gc = np.exp(-((base[:, 1, None] + offs) - positions[:, 1, None]) ** 2 / (2.0 * sigma * sigma))  # (N, k)
    val = (amplitude[:, None, None] * gr[:, :, None]) * gc[:, None, :]                            # (N, k, k)
    wp = w + 4 * r
    flat = ((base[:, 0, None, None] + offs[:, None] + 2 * r) * wp
            + (base[:, 1, None, None] + offs[None, :] + 2 * r))                                   # (N, k, k)
    out = np.bincount(flat.ravel(), weights=val.ravel(), minlength=(h + 4 * r) * wp)
    return out.reshape(h + 4 * r, wp)[2 * r:2 * r + h, 2 * r:2 * r + w].copy()


def synthetic_micrograph(size: Sequence[int] = (256, 256), spacing: float = 8.0, grains: int = 2,
                         grain_angles: Optional[Sequence[float]] = (0.0, math.radians(30.0)),
                         vacancy_frac: float = 0.0, substitution_frac: float = 0.05,
                         substitution_intensity: float = 0.5, noise: float = 0.05,
                         aspect: float = 1.6, atom_sigma: Optional[float] = None,
                         seed: int = 0) -> tuple[np.ndarray, MicrographTruth]:
    """A synthetic micrograph of a polycrystal of Gaussian atoms, with its ground truth.

    Args:
        size: (H, W) in pixels.
        spacing: short lattice constant ``a`` in pixels (the long one is ``aspect * a``).
        grains: number of grains: 1 (single crystal), 2 (left / right halves) or more (Voronoi cells
            around random seeds).
        grain_angles: lattice angle of each grain in radians (counter-clockwise on screen); ``None``
            draws them uniformly from [0, pi). Must have ``grains`` entries.
        vacancy_frac: fraction of lattice sites left empty (listed in ``truth.vacancies``).
        substitution_frac: fraction of the remaining atoms replaced by a different species.
        substitution_intensity: peak brightness of a substituted atom (lattice atoms have 1).
        noise: standard deviation of additive Gaussian noise, relative to a lattice atom's peak.
        aspect: ratio b / a of the rectangular lattice (> 1 makes the orientation visible).
        atom_sigma: Gaussian width of an atom in pixels (default ``0.18 * spacing``).
        seed: random seed (lattice offsets, defects, noise, Voronoi seeds).

    Returns:
        ``(image, truth)``: image (H, W) float32 min-max scaled to [0, 1] (background near 0,
        lattice atoms near 1 before scaling), and a :class:`MicrographTruth`.

    Raises:
        AffineVAEError: on an invalid size, spacing, fraction or a wrong number of grain angles.
    """
    if len(size) != 2 or any(int(s) < 8 for s in size):
        raise AffineVAEError(f"synthetic_micrograph: size must be (H, W) with both >= 8, got {tuple(size)}")
    h, w = int(size[0]), int(size[1])
    if not spacing > 1.0:
        raise AffineVAEError(f"synthetic_micrograph: spacing must be > 1 pixel, got {spacing}")
    if not aspect >= 1.0:
        raise AffineVAEError(f"synthetic_micrograph: aspect must be >= 1, got {aspect}")
    if not (isinstance(grains, (int, np.integer)) and grains >= 1):
        raise AffineVAEError(f"synthetic_micrograph: grains must be an integer >= 1, got {grains!r}")
    for name, v in (("vacancy_frac", vacancy_frac), ("substitution_frac", substitution_frac)):
        if not 0.0 <= v < 1.0:
            raise AffineVAEError(f"synthetic_micrograph: {name} must lie in [0, 1), got {v}")
    if noise < 0:
        raise AffineVAEError(f"synthetic_micrograph: noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    if grain_angles is None:
        angles = rng.uniform(0.0, math.pi, size=grains)
    else:
        angles = np.asarray(grain_angles, dtype=np.float64).reshape(-1)
        if len(angles) != grains:
            raise AffineVAEError(f"synthetic_micrograph: {len(angles)} grain_angles for {grains} grains")
    sigma = float(atom_sigma) if atom_sigma is not None else 0.18 * spacing
    a, b = float(spacing), float(aspect * spacing)

    # Grain seeds (row, col): halves for two grains, random Voronoi cells otherwise.
    if grains == 2:
        seeds = np.array([[h / 2, w / 4], [h / 2, 3 * w / 4]])
    else:
        seeds = rng.uniform([0, 0], [h, w], size=(grains, 2))

    # Lattice of every grain over the whole field, then keep the sites in the grain's cell.
    half_diag = 0.5 * math.hypot(h, w) + 2 * b
    ii = np.arange(-int(half_diag / a) - 1, int(half_diag / a) + 2)
    jj = np.arange(-int(half_diag / b) - 1, int(half_diag / b) + 2)
    gi, gj = np.meshgrid(ii, jj, indexing="ij")
    lat = np.stack([gi.ravel() * a, gj.ravel() * b], 1)          # (K, 2) in lattice (u, v) before rotation
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    sites, site_grain = [], []
    for g, th in enumerate(angles):
        # u right, v down; counter-clockwise on screen: u' = c u + s v, v' = -s u + c v.
        c, s = math.cos(th), math.sin(th)
        offset = rng.uniform(0, 1, size=2) * [a, b]
        u, v = lat[:, 0] + offset[0], lat[:, 1] + offset[1]
        col = centre[1] + c * u + s * v
        row = centre[0] - s * u + c * v
        p = np.stack([row, col], 1)
        inside = (p[:, 0] >= 0) & (p[:, 0] <= h - 1) & (p[:, 1] >= 0) & (p[:, 1] <= w - 1)
        p = p[inside]
        p = p[_grain_of(p, seeds) == g]
        if sites and len(p):
            # Drop sites that crowd an atom of an earlier grain at the boundary.
            prev = np.concatenate(sites)
            d, _ = cKDTree(prev).query(p, k=1)
            p = p[d >= 0.7 * a]
        sites.append(p)
        site_grain.append(np.full(len(p), g, dtype=np.int64))
    pos = np.concatenate(sites)
    grain = np.concatenate(site_grain)

    # Vacancies, then substitutions among the remaining atoms.
    n_sites = len(pos)
    n_vac = int(round(vacancy_frac * n_sites))
    order = rng.permutation(n_sites)
    vac = np.zeros(n_sites, dtype=bool)
    vac[order[:n_vac]] = True
    vacancies, vacancy_grain = pos[vac], grain[vac]
    pos, grain = pos[~vac], grain[~vac]
    n_sub = int(round(substitution_frac * len(pos)))
    defect = np.zeros(len(pos), dtype=np.int64)
    defect[rng.permutation(len(pos))[:n_sub]] = 1

    amp = np.where(defect == 1, float(substitution_intensity), 1.0)
    img = render_gaussians((h, w), pos, amp, sigma)
    if noise > 0:
        img += rng.normal(0.0, noise, size=img.shape)
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo if hi > lo else 1.0)
    truth = MicrographTruth(positions=pos, grain=grain, grain_angle=angles[grain], defect=defect,
                            vacancies=vacancies, vacancy_grain=vacancy_grain, grain_angles=angles,
                            spacing=(a, b), symmetry=2, atom_sigma=sigma)
    return img.astype(np.float32), truth
