"""Angular synchronisation: one common frame for images that have no preferred orientation.

Objects turned over the full circle (particles, cells, digits) have no "upright": each model or
clustering picks its own frame per object, and nothing forces two similar objects into the same
one. :func:`synchronise_angles` finds one frame for a whole set without labels, as single-particle
cryo-EM does for its class averages (A. Singer, "Angular synchronization by eigenvectors and
semidefinite programming", Appl. Comput. Harmon. Anal. 30, 2011):

1. every image is compared with every other at M turns, inside a disc within it, in principal
   components (:func:`~affinevae.pose.classes.turned_components`; without the disc a background
   that is not 0, such as a sky, made every best turn a quarter turn, which moves the square
   frame's corners onto corners); each keeps its K nearest neighbours under
   the best turn, and that turn: ``x_j ~ turn(x_i, theta_ij)``, so ``theta_ij ~ a_j - a_i`` where
   ``a`` are the unknown orientations;
2. the Hermitian matrix ``H_ij = exp(-i theta_ij)`` (symmetrised) is ``~ v v*`` with
   ``v_i = exp(i a_i)``: the leading eigenvector (scipy's ``eigsh``) of its degree-normalised form
   ``D^-1/2 H D^-1/2``, per connected component of the neighbour graph, gives every ``a_i`` at once
   (the phases of the eigenvector), up to one offset per component.

Neighbours connect similar shapes, and similar shapes connect the styles of a class, so the frame
is shared across a class's styles; pairwise errors (a near-symmetric shape matched turned by
180 degrees) are outvoted. Measured on 10 000 MNIST digits turned uniformly over 360 degrees
(M 32, K 10): per-class concentration of the angles 0.916 (digits 2, 5, 8 at 0.87, 0.91, 0.81;
0.905 without the degree normalisation), where the rVAE trained on the ELBO alone reaches 0.70 on
test digits, and 0.85-0.86 anchored to these angles (``RVAEConfig.pose_anchor``;
benchmarks/bench_full_circle.py). Aligning each upright digit to its own class's mean (labels known)
scores 0.952: the writers' slant is part of the true angle, and no shape alignment can know it.

Each image's :attr:`SynchronisedAngles.consistency` tells how well its angle fits its neighbours;
the 93 % of those digits at >= 0.8 are at 0.947. Measured without gain (same digits): reweighting
or dropping the edges that disagree with a first solution and solving again (0.910-0.912), sub-turn
interpolation of the pairwise turns (0.916), pairwise turns from the full images instead of the
components (0.916), refining against cluster means in the common frame (0.81-0.91).

Units: angles in radians, counter-clockwise on screen (as :mod:`affinevae.nn.affine`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ..config import check_seed
from ..errors import AffineVAEError
from .classes import checked_images, turned_components

__all__ = ["SynchronisedAngles", "synchronise_angles"]

# Rows of the (rows, M, pool) distance block computed at once (memory: rows * M * pool floats).
_ROWS = 256


@dataclasses.dataclass
class SynchronisedAngles:
    """The result of :func:`synchronise_angles`.

    Attributes:
        angles: (N,) float32 radians: each image's orientation in the common frame (turning image i
            by ``-angles[i]`` puts every image in that frame); one arbitrary offset per component.
        neighbours: (N, K) int64 the K nearest neighbours of each image (indices into the set).
        relative: (N, K) float32 radians: the turn of image i that best matches each neighbour.
        agreement: mean over the neighbour pairs of ``cos(angles[j] - angles[i] - relative[i, j])``
            (1: every pair agrees with the common frame; near 0 for objects whose turns cannot be
            told apart, such as a lattice with its own rotational symmetry).
        components: connected components of the neighbour graph (each has its own offset).
        consistency: (N,) float32 in [-1, 1]: each image's own agreement, the mean over its K
            neighbours of ``cos(angles[j] - angles[i] - relative[i, j])``. It tells which angles to
            trust: on 10 000 full-circle digits the 93 % with consistency >= 0.8 have per-class
            concentration 0.947 (all: 0.916; the 8s 0.92 against 0.81).
    """

    angles: np.ndarray
    neighbours: np.ndarray
    relative: np.ndarray
    agreement: float
    components: int
    consistency: np.ndarray


def synchronise_angles(x, angles: int = 32, neighbours: int = 10, components: int = 50, seed: int = 0,
                       pool: int = 10000, fit_on: int = 20000) -> SynchronisedAngles:
    """Orientations of images in one common frame, without labels (module docstring).

    Args:
        x: (N, C, H, W) images (array or tensor), N >= 2.
        angles: M turns compared, ``2 pi m / M`` radians, >= 4.
        neighbours: K neighbours per image, >= 1 (fewer when N is smaller).
        components: principal components the turned images are reduced to.
        seed: fixes the PCA subset, the pool and so the result.
        pool: neighbours are searched among at most this many images (a seeded subset; all when
            N <= pool): the cost is N * pool * M * components multiply-adds.
        fit_on: images the PCA is fitted on (at most).

    Returns:
        :class:`SynchronisedAngles`. Measured: 10 000 digits 28 x 28, M 32, K 10, 2 CPU threads:
        about 30 s, nearly all of it the neighbour search. Memory: N * M * components floats for
        the reduced turns (10 000 digits: 64 MB).

    Raises:
        AffineVAEError: on a shape other than (N, C, H, W), N < 2, NaN or infinite values, or an
            option out of range.
    """
    from scipy.sparse import csr_matrix, diags
    from scipy.sparse.csgraph import connected_components

    check_seed(seed)
    x = checked_images(x, "synchronise_angles", (("angles", angles, 4), ("neighbours", neighbours, 1),
                                                 ("components", components, 1), ("pool", pool, 2), ("fit_on", fit_on, 1)))
    n = x.shape[0]
    if n < 2:
        raise AffineVAEError(f"synchronise_angles needs at least 2 images, got {n}")
    feats = turned_components(x, angles, components, seed, fit_on)  # (N, M, d)
    sq = (feats ** 2).sum(-1)  # (N, M)
    refs = (torch.arange(n) if n <= pool
            else torch.as_tensor(np.sort(np.random.default_rng([seed, 1]).choice(n, pool, replace=False))))
    ref_f, ref_sq = feats[refs, 0], sq[refs, 0]  # the references at turn 0
    k = min(neighbours, len(refs) - 1)
    nbr = torch.empty(n, k, dtype=torch.long)
    turn = torch.empty(n, k, dtype=torch.long)
    is_ref = torch.full((n,), -1, dtype=torch.long)
    is_ref[refs] = torch.arange(len(refs))
    for s in range(0, n, _ROWS):
        rows = torch.arange(s, min(n, s + _ROWS))
        d = sq[rows, :, None] + ref_sq[None, None, :] - 2 * torch.einsum("imd,jd->imj", feats[rows], ref_f)
        best, arg = d.min(1)  # (rows, pool): the best turn of each image against each reference
        own = is_ref[rows]
        mine = own >= 0
        best[torch.nonzero(mine)[:, 0], own[mine]] = float("inf")  # not its own neighbour
        _, j = best.topk(k, 1, largest=False)
        nbr[rows], turn[rows] = refs[j], arg.gather(1, j)
    relative = (turn.float() * (2 * math.pi / angles)).numpy()  # (N, K) theta_ij ~ a_j - a_i
    rows = np.repeat(np.arange(n), k)
    cols = nbr.reshape(-1).numpy()
    rel = relative.reshape(-1)
    phase = np.exp(-1j * rel.astype(np.float64))
    h = csr_matrix((np.concatenate([phase, phase.conj()]), (np.concatenate([rows, cols]), np.concatenate([cols, rows]))),
                   shape=(n, n))  # duplicate pairs add up: both directions vote
    deg = np.asarray(abs(h).sum(1)).ravel()  # > 0: every image has neighbours
    scale = diags(1.0 / np.sqrt(deg))
    h = (scale @ h @ scale).tocsr()  # degree-normalised: hubs do not dominate the eigenvector
    n_comp, comp = connected_components(csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)), directed=False)
    out = np.zeros(n)
    order = np.argsort(comp, kind="stable")  # each component's members in ascending order, grouped once
    for members in np.split(order, np.cumsum(np.bincount(comp, minlength=n_comp))[:-1]):
        out[members] = _leading_phase(h[members][:, members])
    ang = np.angle(np.exp(1j * out)).astype(np.float32)
    residual = np.cos(ang[cols] - ang[rows] - rel).reshape(n, k)
    return SynchronisedAngles(angles=ang, neighbours=nbr.numpy(), relative=relative,
                              agreement=float(residual.mean()), components=int(n_comp),
                              consistency=residual.mean(1).astype(np.float32))


def _leading_phase(h) -> np.ndarray:
    """Phases (m,) of the leading eigenvector of a Hermitian (m, m) sparse matrix, the first member's
    phase set to 0 (the offset of a component is arbitrary; this makes it reproducible)."""
    m = h.shape[0]
    if m == 1:
        return np.zeros(1)
    if m <= 64:
        _, vecs = np.linalg.eigh(h.toarray())
        v = vecs[:, -1]
    else:
        from scipy.sparse.linalg import eigsh

        _, vecs = eigsh(h, k=1, which="LA", v0=np.ones(m, dtype=np.complex128), tol=1e-6)
        v = vecs[:, 0]
    v = v * np.exp(-1j * np.angle(v[0])) if abs(v[0]) > 0 else v
    return np.angle(v)
