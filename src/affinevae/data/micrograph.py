"""Synthetic atomic-resolution micrographs with known grains, orientations and defects.

Three lattices (:data:`LATTICES`), each with a known rotational symmetry: a lattice with
n-fold symmetry turned by ``angle`` looks the same as one turned by ``angle + 2 pi / n``, so
angles recovered from images can only be compared modulo ``2 pi / n``
(``MicrographTruth.symmetry``):

- ``rectangular`` (the default): lattice constants ``a`` = ``spacing`` and ``b`` =
  ``aspect * spacing`` (aspect 1.6 by default), 2-fold symmetric;
- ``square``: ``a`` = ``b`` = ``spacing``, 4-fold symmetric;
- ``hexagonal``: a triangular lattice of atoms (every atom has six neighbours at ``spacing``),
  6-fold symmetric.

Conventions (as in :mod:`affinevae.nn.affine`): positions are (row, col) in pixels with
pixel centres at integer coordinates; a grain angle rotates the lattice counter-clockwise
*as seen on screen* (rows run downwards), in radians.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import numpy as np
from scipy.spatial import cKDTree

from ..errors import AffineVAEError
from ..registry import Registry


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
        spacing: (a, b) lengths of the two lattice vectors in pixels (hexagonal: both ``a``).
        symmetry: rotational symmetry order of the lattice (2 rectangular, 4 square, 6 hexagonal):
            angles are equal modulo ``2 pi / symmetry``.
        atom_sigma: Gaussian width of an atom in pixels.
        lattice: the lattice's name in :data:`LATTICES`.
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
    lattice: str = "rectangular"

    def __len__(self) -> int:
        return len(self.positions)


@dataclasses.dataclass(frozen=True)
class Lattice:
    """A 2-D Bravais lattice of :func:`synthetic_micrograph`.

    Attributes:
        symmetry: order of its rotational symmetry about an atom (2, 4 or 6).
        basis: ``basis(a, aspect) -> (2, 2)`` float64 lattice vectors as rows, in the lattice's
            own (u right, v down) pixel frame before the grain's rotation; ``a`` is the spacing.
        takes_aspect: whether ``aspect`` (b / a) applies to it.
    """

    symmetry: int
    basis: Callable[[float, float], np.ndarray]
    takes_aspect: bool = False


#: The lattices by name (register one to add a lattice).
LATTICES: Registry = Registry("lattice")
LATTICES.register("rectangular")(
    Lattice(2, lambda a, aspect: np.array([[a, 0.0], [0.0, aspect * a]]), takes_aspect=True))
LATTICES.register("square")(Lattice(4, lambda a, aspect: np.array([[a, 0.0], [0.0, a]])))
LATTICES.register("hexagonal")(
    Lattice(6, lambda a, aspect: np.array([[a, 0.0], [0.5 * a, 0.5 * math.sqrt(3.0) * a]])))

#: The rectangular lattice's b / a when ``aspect`` is not given.
DEFAULT_ASPECT = 1.6


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
                         aspect: Optional[float] = None, atom_sigma: Optional[float] = None,
                         seed: int = 0, lattice: str = "rectangular") -> tuple[np.ndarray, MicrographTruth]:
    """A synthetic micrograph of a polycrystal of Gaussian atoms, with its ground truth.

    Args:
        size: (H, W) in pixels, or one int for a square image.
        spacing: nearest-neighbour distance ``a`` in pixels (rectangular: the short lattice
            constant; the long one is ``aspect * a``).
        grains: number of grains: 1 (single crystal), 2 (left / right halves) or more (Voronoi cells
            around random seeds).
        grain_angles: lattice angle of each grain in radians (counter-clockwise on screen); ``None``
            draws them uniformly from [0, pi). Must have ``grains`` entries.
        vacancy_frac: fraction of lattice sites left empty (listed in ``truth.vacancies``).
        substitution_frac: fraction of the remaining atoms replaced by a different species.
        substitution_intensity: peak brightness of a substituted atom (lattice atoms have 1).
        noise: standard deviation of additive Gaussian noise, relative to a lattice atom's peak.
        aspect: ratio b / a of the rectangular lattice (default 1.6; > 1 makes the orientation
            visible); only the rectangular lattice takes it.
        atom_sigma: Gaussian width of an atom in pixels (default ``0.18 * spacing``).
        seed: random seed (lattice offsets, defects, noise, Voronoi seeds).
        lattice: 'rectangular' (2-fold symmetric), 'square' (4-fold) or 'hexagonal' (a
            triangular lattice of atoms, 6-fold); see :data:`LATTICES`.

    Returns:
        ``(image, truth)``: image (H, W) float32 min-max scaled to [0, 1] (background near 0,
        lattice atoms near 1 before scaling), and a :class:`MicrographTruth`.

    Raises:
        AffineVAEError: on an invalid size, spacing, fraction, lattice, an aspect for a lattice
            other than the rectangular one, or a wrong number of grain angles.
    """
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if not isinstance(size, (tuple, list)) or len(size) != 2 or any(int(s) < 8 for s in size):
        raise AffineVAEError(f"synthetic_micrograph: size must be (H, W) (or one int) with both >= 8, got {size!r}")
    h, w = int(size[0]), int(size[1])
    if not spacing > 1.0:
        raise AffineVAEError(f"synthetic_micrograph: spacing must be > 1 pixel, got {spacing}")
    kind = LATTICES.get(str(lattice))
    if aspect is not None and not kind.takes_aspect:
        raise AffineVAEError(f"synthetic_micrograph: aspect applies to the rectangular lattice only, "
                             f"not the {lattice} one (got aspect={aspect})")
    aspect = DEFAULT_ASPECT if aspect is None else aspect
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
    a = float(spacing)
    basis = kind.basis(a, float(aspect))                          # (2, 2) lattice vectors (u, v) as rows
    b = float(np.hypot(basis[1, 0], basis[1, 1]))

    # Grain seeds (row, col): halves for two grains, random Voronoi cells otherwise.
    if grains == 2:
        seeds = np.array([[h / 2, w / 4], [h / 2, 3 * w / 4]])
    else:
        seeds = rng.uniform([0, 0], [h, w], size=(grains, 2))

    # Lattice of every grain over the whole field, then keep the sites in the grain's cell.
    # Site i * basis[0] + j * basis[1] lies within half_diag of the centre only if |i| <= half_diag / d_i,
    # d_i the distance between the lattice lines of constant i (|det| / |other vector|).
    half_diag = 0.5 * math.hypot(h, w) + 2 * b
    det = abs(float(np.linalg.det(basis)))
    ni = int(half_diag * b / det) + 2
    nj = int(half_diag * float(np.hypot(basis[0, 0], basis[0, 1])) / det) + 2
    gi, gj = np.meshgrid(np.arange(-ni, ni + 1), np.arange(-nj, nj + 1), indexing="ij")
    gi, gj = gi.ravel(), gj.ravel()
    lat_u = gi * basis[0, 0] + gj * basis[1, 0]                   # (K,) sites in lattice (u, v) before rotation
    lat_v = gi * basis[0, 1] + gj * basis[1, 1]
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    sites, site_grain = [], []
    for g, th in enumerate(angles):
        # u right, v down; counter-clockwise on screen: u' = c u + s v, v' = -s u + c v.
        c, s = math.cos(th), math.sin(th)
        frac = rng.uniform(0, 1, size=2)                          # a random offset within one unit cell
        offset = (frac[0] * basis[0, 0] + frac[1] * basis[1, 0], frac[0] * basis[0, 1] + frac[1] * basis[1, 1])
        u, v = lat_u + offset[0], lat_v + offset[1]
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
                            spacing=(a, b), symmetry=kind.symmetry, atom_sigma=sigma, lattice=lattice)
    return img.astype(np.float32), truth
