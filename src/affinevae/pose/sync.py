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
0.905 without the degree normalisation; re-measured with the disc and the choice of symmetry, which
takes 1 here: 0.9155, agreement 0.957), where the rVAE trained on the ELBO alone reaches 0.70 on
test digits, and 0.85-0.86 anchored to these angles (``RVAEConfig.pose_anchor``;
benchmarks/bench_full_circle.py). Aligning each upright digit to its own class's mean (labels known)
scores 0.952: the writers' slant is part of the true angle, and no shape alignment can know it.

Each image's :attr:`SynchronisedAngles.consistency` tells how well its angle fits its neighbours;
the 93 % of those digits at >= 0.8 are at 0.947. Measured without gain (same digits): reweighting
or dropping the edges that disagree with a first solution and solving again (0.910-0.912), sub-turn
interpolation of the pairwise turns (0.916), pairwise turns from the full images instead of the
components (0.916), refining against cluster means in the common frame (0.81-0.91).

Symmetric objects: an object with n-fold rotational symmetry (a rod or an elliptical galaxy: 2;
a square lattice: 4) looks the same turned by 360 / n degrees, so its pairwise turns are known only
modulo that and its angles over the full circle do not agree (noisy rods: 0.29, no better than pairs
with random turns, 0.31). The same pairs are therefore also synchronised modulo 360 / S for every S in
:data:`SYNC_ORDERS` (``H_ij = exp(-i S theta_ij)``; cheap: the neighbour search is shared) and the
smallest S whose agreement is within :data:`SYMMETRY_MARGIN` of the best is taken: an object that
looks alike under turns of 360 / n agrees at every multiple of n too, and an S above an object's own
symmetry can even agree a little better (S = 2 for 1-fold digits: 0.976 against 0.934; it forgives
their half-turn confusions), hence the smallest near the best. Measured (agreement at S = 1 / 2 / 3 /
4 / 6; per-class concentration modulo 360 / n of the chosen angles): 3 000 full-circle digits 0.93 /
0.98 / 0.93 / 0.93 / 0.85, S = 1, 0.893; noisy rods 0.32 / 0.96 / 0.33 / 0.85 / 0.72, S = 2, 0.975
(0.42 at S = 1); 3 000 stretched galaxy cut-outs (benchmarks/bench_galaxies.py) 0.27 / 0.91 / 0.27 /
0.91 / 0.87, S = 2, 0.743 (0.368 at S = 1); faint ones (sky-limited, signal-to-noise about 10) 0.63 /
0.88 / 0.56 / 0.76 / 0.65, S = 2, 0.727 (0.161); a 4-fold toy shape 0.37 / 0.34 / 0.37 / 1.00 / 0.36,
S = 4, 0.999; pure noise 0.35 / 0.35 / 0.35 / 0.37 / 0.34, S = 1.

Units: angles in radians, counter-clockwise on screen (as :mod:`affinevae.nn.affine`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np
import torch

from ..config import check_seed, check_symmetry
from ..data.centring import brightness_centre, mean_offset, offset_words
from ..data.inputs import check_int
from ..errors import AffineVAEError
from ..nn.affine import Pose, render
from .classes import AlignedClusters, aligned_embedding, checked_images, checked_turns, turned_components

__all__ = ["FULL_CIRCLE_SHARE", "ISOTROPIC_RATIO", "ORIENTED_EFFECT", "OrientationSpread", "mean_isotropy", "mean_offset", "off_centre", "off_centre_note", "off_centre_sentence", "OFF_CENTRE_SHARE", "neighbour_turns", "SYMMETRY_MARGIN", "SYNC_ORDERS", "SynchronisedAngles", "orientation_spread", "orientation_unmeasured",
           "synchronise_angles", "synchronised_kmeans"]

# Rows of the (rows, M, pool) distance block computed at once (memory: rows * M * pool floats).
_ROWS = 256
#: The orders of rotational symmetry :func:`synchronise_angles` chooses among when not told (1: none).
SYNC_ORDERS = (1, 2, 3, 4, 6)
#: The smallest order whose agreement is within this of the best order's is chosen (module docstring).
SYMMETRY_MARGIN = 0.15


@dataclasses.dataclass
class SynchronisedAngles:
    """The result of :func:`synchronise_angles`.

    Attributes:
        angles: (N,) float32 radians: each image's orientation in the common frame (turning image i
            by ``-angles[i]`` puts every image in that frame); one arbitrary offset per component.
            With ``symmetry`` S > 1 they are known modulo ``2 pi / S`` only and lie in [-pi / S, pi / S].
        neighbours: (N, K) int64 the K nearest neighbours of each image (indices into the set).
        relative: (N, K) float32 radians: the turn of image i that best matches each neighbour.
        agreement: mean over the neighbour pairs of ``cos(S (angles[j] - angles[i] - relative[i, j]))``
            at the chosen ``symmetry`` S (1: every pair agrees with the common frame; about 0.3 for
            pure noise, and for objects whose turns by 360 / S degrees cannot be told apart when
            synchronised at an S they do not have, such as a 4-fold lattice at S = 1).
        components: connected components of the neighbour graph (each has its own offset).
        consistency: (N,) float32 in [-1, 1]: each image's own agreement, the mean over its K
            neighbours of ``cos(S (angles[j] - angles[i] - relative[i, j]))``. It tells which angles to
            trust: on 10 000 full-circle digits the 93 % with consistency >= 0.8 have per-class
            concentration 0.947 (all: 0.916; the 8s 0.92 against 0.81).
        symmetry: S, the n of the n-fold rotational symmetry the angles were synchronised at (given,
            or chosen from ``agreements``).
        agreements: {S: agreement} for every order tried (only the given one when ``symmetry`` was given).
    """

    angles: np.ndarray
    neighbours: np.ndarray
    relative: np.ndarray
    agreement: float
    components: int
    consistency: np.ndarray
    symmetry: int = 1
    agreements: dict = dataclasses.field(default_factory=dict)


def synchronise_angles(x, angles: int = 32, neighbours: int = 10, components: int = 50, seed: int = 0,
                       pool: int = 10000, fit_on: int = 20000, symmetry: Optional[int] = None) -> SynchronisedAngles:
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
        symmetry: the n of the objects' n-fold rotational symmetry (1..12; 1: none): their angles are
            synchronised modulo 360 / n degrees. None (default): chosen among :data:`SYNC_ORDERS` from the
            same neighbour pairs (module docstring, "Symmetric objects").

    Returns:
        :class:`SynchronisedAngles`. Measured: 10 000 digits 28 x 28, M 32, K 10, 2 CPU threads:
        about 30 s, nearly all of it the neighbour search. Memory: N * M * components floats for
        the reduced turns (10 000 digits: 64 MB).

    Raises:
        AffineVAEError: on a shape other than (N, C, H, W), N < 2, NaN or infinite values, or an
            option out of range.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    check_seed(seed)
    if symmetry is not None:
        symmetry = check_symmetry(symmetry, "synchronise_angles: symmetry")
    x = checked_images(x, "synchronise_angles", (("angles", angles, 4), ("neighbours", neighbours, 1),
                                                 ("components", components, 1), ("pool", pool, 2), ("fit_on", fit_on, 1)))
    n = x.shape[0]
    if n < 2:
        raise AffineVAEError(f"synchronise_angles needs at least 2 images, got {n}")
    feats = turned_components(x, angles, components, seed, fit_on)  # (N, M, d)
    nbr, turn = neighbour_turns(feats, neighbours, pool, seed)
    k = nbr.shape[1]
    relative = (turn.float() * (2 * math.pi / angles)).numpy()  # (N, K) theta_ij ~ a_j - a_i
    rows = np.repeat(np.arange(n), k)
    cols = nbr.reshape(-1).numpy()
    n_comp, comp = connected_components(csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)), directed=False)
    order = np.argsort(comp, kind="stable")  # each component's members in ascending order, grouped once
    groups = np.split(order, np.cumsum(np.bincount(comp, minlength=n_comp))[:-1])
    frames = {s: _frame(rows, cols, relative.reshape(-1), n, s, groups) for s in ((symmetry,) if symmetry else SYNC_ORDERS)}
    agreements = {s: float(residual.mean()) for s, (_, residual) in frames.items()}
    chosen = symmetry or min(s for s in SYNC_ORDERS if agreements[s] >= max(agreements.values()) - SYMMETRY_MARGIN)
    ang, residual = frames[chosen]
    return SynchronisedAngles(angles=ang, neighbours=nbr.numpy(), relative=relative, agreement=agreements[chosen],
                              components=int(n_comp), consistency=residual.reshape(n, k).mean(1).astype(np.float32),
                              symmetry=chosen, agreements=agreements)


def neighbour_turns(feats: torch.Tensor, neighbours: int = 10, pool: int = 10000,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's nearest neighbours under its best turn, from :func:`turned_components`' features.

    Args:
        feats: (N, M, d) each image at M turns ``2 pi m / M`` (turn 0 first), reduced to d components.
        neighbours: K per image (fewer when the pool is smaller).
        pool: neighbours are searched among at most this many images (a subset drawn with ``seed``;
            all when N <= pool), each at turn 0.
        seed: fixes the pool.

    Returns:
        ``(nbr, turn)``: (N, K) int64 the neighbours' indices and (N, K) int64 the turn index m of
        image i that best matches each (``2 pi m / M`` radians, approximately ``a_j - a_i``).
    """
    n = feats.shape[0]
    sq = (feats ** 2).sum(-1)  # (N, M)
    refs = (torch.arange(n) if n <= pool
            else torch.as_tensor(np.sort(np.random.default_rng([seed, 1]).choice(n, pool, replace=False))))
    ref_f, ref_sq = feats[refs, 0], sq[refs, 0]  # the references at turn 0
    k = min(neighbours, len(refs) - 1)
    nbr = torch.empty(n, k, dtype=torch.long)
    turn = torch.empty(n, k, dtype=torch.long)
    is_ref = torch.full((n,), -1, dtype=torch.long)
    is_ref[refs] = torch.arange(len(refs))
    m, d_ = feats.shape[1:]
    for s in range(0, n, _ROWS):
        rows = torch.arange(s, min(n, s + _ROWS))
        # |f_im|^2 - 2 f_im . r_j in one matrix product (rows * M, pool); |r_j|^2, the same for every turn,
        # is added after the min over the turns (2.6x faster than the three (rows, M, pool) temporaries)
        d = torch.addmm(sq[rows].reshape(-1, 1), feats[rows].reshape(-1, d_), ref_f.T, alpha=-2).view(len(rows), m, -1)
        best, arg = d.min(1)  # (rows, pool): the best turn of each image against each reference
        best += ref_sq
        own = is_ref[rows]
        mine = own >= 0
        best[torch.nonzero(mine)[:, 0], own[mine]] = float("inf")  # not its own neighbour
        _, j = best.topk(k, 1, largest=False)
        nbr[rows], turn[rows] = refs[j], arg.gather(1, j)
    return nbr, turn


def _frame(rows: np.ndarray, cols: np.ndarray, relative: np.ndarray, n: int, symmetry: int,
           groups: list) -> tuple[np.ndarray, np.ndarray]:
    """Synchronise the angles modulo ``2 pi / symmetry`` from the neighbour pairs (``rows``, ``cols``)
    (E,) and their turns ``relative`` (E,) radians: the phases of the leading eigenvector of the
    degree-normalised ``H_ij = exp(-i S theta_ij)`` per connected component (``groups``: each one's
    members), divided by S. Returns the angles (n,) float32 in [-pi / S, pi / S] and each pair's
    ``cos(S (a_j - a_i - theta_ij))`` (E,)."""
    from scipy.sparse import csr_matrix, diags

    phase = np.exp(-1j * symmetry * relative.astype(np.float64))
    h = csr_matrix((np.concatenate([phase, phase.conj()]), (np.concatenate([rows, cols]), np.concatenate([cols, rows]))),
                   shape=(n, n))  # duplicate pairs add up: both directions vote
    deg = np.asarray(abs(h).sum(1)).ravel()  # > 0: every image has neighbours
    scale = diags(1.0 / np.sqrt(deg))
    h = (scale @ h @ scale).tocsr()  # degree-normalised: hubs do not dominate the eigenvector
    out = np.zeros(n)
    for members in groups:
        out[members] = _leading_phase(h[members][:, members])
    ang = (np.angle(np.exp(1j * out)) / symmetry).astype(np.float32)
    return ang, np.cos(symmetry * (ang[cols] - ang[rows] - relative))


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


def synchronised_kmeans(x, k: int, seed: int = 0, n_init: int = 10, symmetry: Optional[int] = 1,
                        angles=None) -> AlignedClusters:
    """Classes of images that turn over the full circle: the images ``x`` (N, C, H, W) are put in one
    frame by :func:`synchronise_angles` (``seed``, ``symmetry``), embedded in 2-D by t-SNE in that frame
    (:func:`~affinevae.pose.classes.aligned_embedding`: images that look alike gather) and split into
    ``k`` classes by k-means there (scikit-learn, ``n_init`` restarts, ``random_state=seed``).
    ``symmetry`` defaults to 1 (over the full circle): classes may differ in their symmetry, and a
    synchronisation modulo the turns of one (None lets it choose) leaves the others' frames apart (an
    asymmetric and a 4-fold toy shape: modulo 90 degrees chosen, classes 0.68 right; over the full
    circle 1.00). ``angles`` (N,) radians: the images' synchronised angles when already known (then
    ``symmetry`` is unused).

    On 10 000 full-circle MNIST digits the embedding's k-means labels 0.88 of them right, against
    0.58-0.63 for :func:`~affinevae.pose.classes.aligned_kmeans`, which compares each image with each
    class centre at its best turn (a centre of a few principal components blurs a class's styles
    together; t-SNE keeps each image's own neighbours). The joint model's k-means start over the full
    circle uses it (``JRVAEConfig.class_init_space``). Deterministic for a given ``seed``.

    Returns an :class:`~affinevae.pose.classes.AlignedClusters`: ``labels`` (N,) int64, ``angles``
    (N,) float32 radians (the synchronised angles: turning each image back by its angle puts it in the
    common frame), ``centres`` (k, C, H, W) the classes' mean images in that frame (zeros for an empty
    class), ``inertia`` k-means' in the embedding (unit variance per axis)."""
    from sklearn.cluster import KMeans

    from ..nn.affine import Pose, canonicalise

    x = checked_images(x, "synchronised_kmeans", (("k", k, 2), ("n_init", n_init, 1)))
    check_seed(seed)
    if x.shape[0] < k:
        raise AffineVAEError(f"synchronised_kmeans: {x.shape[0]} images cannot make {k} classes")
    if angles is None:
        angles = synchronise_angles(x, seed=seed, symmetry=symmetry).angles
    x, angles = checked_turns(x, angles, "synchronised_kmeans")
    embedded = aligned_embedding(x, angles, 2, seed=seed).numpy()
    km = KMeans(k, n_init=n_init, random_state=seed % 2**32).fit(embedded)
    labels = km.labels_.astype(np.int64)
    sums = torch.zeros((k,) + tuple(x.shape[1:]))
    for i in range(0, x.shape[0], 1024):  # the turned stack is never held whole
        turned = canonicalise(x[i:i + 1024], Pose(angle=angles[i:i + 1024]), padding="border")
        sums.index_add_(0, torch.as_tensor(labels[i:i + 1024]), turned)
    counts = torch.bincount(torch.as_tensor(labels), minlength=k).clamp_min(1).float()
    centres = (sums / counts.view(-1, *([1] * (x.dim() - 1)))).numpy()
    return AlignedClusters(labels=labels, angles=angles.numpy(), centres=centres, inertia=float(km.inertia_))


#: A neighbour pair is "far turned" when its best relative turn exceeds this (radians: 120 degrees).
FAR_TURN = 2 * math.pi / 3
#: Share of far-turned neighbour pairs from which :func:`orientation_spread` calls the objects' orientations
#: spread over the full circle. Measured on 2 000 images (seed 0): MNIST upright 0.066, turned uniformly in
#: +-30 / 60 / 90 / 120 / 180 degrees 0.061 / 0.061 / 0.155 / 0.266 / 0.343 (two objects turned independently
#: over the full circle: 1/3); noisy particles of three shapes (1-, 2- and 3-fold) over the full circle
#: (benchmarks/bench_particles.py, noise 0.1 / 0.5 / 1.0) 0.229 / 0.256 / 0.312; galaxy cut-outs 0.346. Under
#: noise as strong as the objects no turn matches better than another: upright digits with Gaussian pixel noise
#: of 0.6 / 1.0 times their strokes' brightness 0.167 / 0.304 (blurring them first by 1-1.5 px: no better).
FULL_CIRCLE_SHARE = 0.2
#: Images :func:`orientation_spread` compares at most (a seeded subset), and the fewest it decides on.
ORIENTATION_SAMPLE = 2000
ORIENTATION_MIN_IMAGES = 200
#: The fewest images whose orientations are measured at all: from these to :data:`ORIENTATION_MIN_IMAGES` by
#: their mean alone (:data:`SMALL_SET_ISOTROPIC_RATIO`), too few for the neighbour pairs.
ORIENTATION_MEAN_MIN_IMAGES = 50
#: Larger images are averaged down to this side for the comparison (the cost and memory of the turns).
ORIENTATION_SIDE = 48
#: Turns :func:`orientation_spread` compares each pair at (every 11.25 degrees).
ORIENTATION_TURNS = 32
#: A neighbour pair whose distance at turn 0 is within this share of the way from its best turn's to its
#: median turn's counts as upright, whatever its best turn: the equivalent turns of symmetric objects
#: (upright rods and triangles read 50 % and 87 % turned without it; turned objects lose 0-4 points).
ORIENTATION_TIE = 0.2


#: The mean image's non-radial energy, against that of the images turned at random (:func:`mean_isotropy`),
#: below which the orientations are taken to be spread over the full circle, whatever the neighbour pairs
#: say. Measured (8 draws, seeds 0-2; benchmarks/EXPERIMENTS.md "The mean image's roundness"): objects turned
#: over the full circle 0.4-1.6 at 600 and 2 000 images (digits, particles at noise 0.1 and 1.0, cells with
#: sharp edges whose neighbour pairs read 13-20 % turned), up to 2.7 at 200; digits within +-90 / +-120
#: degrees 1.7-2.2 at 200 images, 3.1-4.2 at 600, 8-12 at 2 000.
ISOTROPIC_RATIO = 1.7
#: (ratio - 1) / images (:attr:`OrientationSpread.effect`) from which the mean image keeps so clear an
#: orientation that the objects have an upright, whatever the neighbour pairs say (noise as strong as the
#: objects blurs those): digits upright, at pixel noise 1.0 and within +-60 degrees 0.02-0.11, upright
#: particles at noise 0.4 0.07-0.08, cells within +-30 degrees 0.19-0.24; digits within +-90 / +-120
#: degrees 0.004-0.005, objects over the full circle below 0.005.
ORIENTED_EFFECT = 0.01
#: Random turns :func:`mean_isotropy` averages over.
ISOTROPY_DRAWS = 8
#: With :data:`ORIENTATION_MEAN_MIN_IMAGES` to :data:`ORIENTATION_MIN_IMAGES` images the mean alone decides:
#: below this ratio the full circle, from it an upright. Measured (8 draws, seeds 0-2, 50 / 75 / 100 / 150
#: images; benchmarks/EXPERIMENTS.md "Small full-circle stacks"): objects over the full circle 0.65-1.81 (digits,
#: digits 0 / 1 / 7, particles at noise 0.3 and 1.0, rods); digits within +-60 degrees 2.45-5.5 (2.0-2.1 at 30
#: images), upright digits, particles and rods 6.7-47; digits within +-90 / +-120 degrees 1.1-2.7 (either way).
SMALL_SET_ISOTROPIC_RATIO = 2.2


#: :func:`off_centre_note` speaks from this offset of the images' mean from their centre: the larger of 2 px and
#: this share of the smaller side (an audit's particles 5 px off in 40 px read upright, their angles 0.08;
#: MNIST's digits sit 0.7 px off, particles jittered by 1 px under 0.3).
OFF_CENTRE_SHARE = 0.06


def off_centre(x) -> Optional[tuple[float, float]]:
    """The (down, right) pixels the objects of the images ``x`` (as :func:`mean_offset`) sit off the image
    centre when that is more than the larger of 2 px and :data:`OFF_CENTRE_SHARE` of the smaller side, else
    None: turns are about the image centre, so off-centre objects read as upright to the orientation rules,
    and a model over the full circle (its synchronisation, its equivariant encoder) finds angles that are not
    theirs."""
    offset = mean_offset(x)
    if offset is None:
        return None
    h, w = np.shape(x)[-2:]
    return offset if math.hypot(*offset) > max(2.0, OFF_CENTRE_SHARE * min(h, w)) else None


def off_centre_note(x) -> Optional[str]:
    """One sentence when the objects of the images ``x`` sit off the image centre (:func:`off_centre`), else
    None."""
    offset = off_centre(x)
    return None if offset is None else off_centre_sentence(offset)


def off_centre_sentence(offset: tuple[float, float]) -> str:
    """:func:`off_centre_note`'s sentence for objects whose mean sits ``offset`` (down, right) pixels off the
    image centre."""
    return (f"the objects' mean sits {math.hypot(*offset):.1f} px off the image centre ({offset_words(*offset)}): "
            "turns are about the centre, so off-centre objects read as upright and their angles over the full "
            "circle fail; move them to the centre first (train --centre mean; in Python ImageSet.centred('mean'))")


def _nonradial_energy(mean: np.ndarray) -> Optional[float]:
    """The energy of the angular Fourier modes m >= 1 of the (H, W) image ``mean`` about its brightness
    centre (:func:`brightness_centre`), on a polar grid inside the disc that a turn's corners do not reach,
    weighted by the radius; None for an image without contrast."""
    from scipy.ndimage import map_coordinates

    h, w = mean.shape
    centre = brightness_centre(mean)
    if centre is None:
        return None
    cy, cx = centre
    c0 = (min(h, w) - 1) / 2
    reach = c0 - max(abs(cy - (h - 1) / 2), abs(cx - (w - 1) / 2)) - 1.5  # its bilinear reads stay in the disc
    if reach < 2:
        return None
    radius = np.arange(0.5, reach, 0.5)
    phi = np.linspace(0, 2 * np.pi, 128, endpoint=False)
    polar = map_coordinates(mean.astype(np.float64), [cy + radius[:, None] * np.sin(phi), cx + radius[:, None] * np.cos(phi)],
                            order=1)
    modes = np.fft.rfft(polar, axis=1)[:, 1:] / len(phi)
    return float((np.abs(modes) ** 2 * radius[:, None]).sum())


def mean_isotropy(x, seed: int = 0, draws: int = ISOTROPY_DRAWS) -> Optional[float]:
    """How much shape the mean of the images ``x`` keeps, against the mean of the same images each turned at
    random: about 1 when the objects' orientations are spread over the full circle (their mean is round up to
    its sampling noise), far above 1 when they share an upright (the ratio grows with the number of images).

    The mean of all images turned by one common random angle (its shape is that of the plain mean, and the
    resampling smooths it as it smooths the others) is compared with the mean of the images turned each by an
    angle of its own, over ``draws`` draws: the ratio of the energies of their angular Fourier modes m >= 1
    about their brightness centres (:func:`_nonradial_energy`). Pixel noise averages out of both means, so
    noisy upright objects keep their upright here where their neighbour pairs (:func:`orientation_spread`) do
    not; objects that sit off the image centre are measured about their own mean's centre.

    Resampled images keep the resampling's fixed pattern in their mean (area averaging from 64 to 48 px: objects
    over the full circle read 4-23x), so give them at their own size or shrunk by a whole factor
    (:func:`orientation_spread` does).

    Args:
        x: (N, C, H, W) images (array or tensor; (N, H, W) read as one channel), square (the channels are
            averaged).
        seed: fixes the random turns (an integer >= 0).
        draws: pairs of means compared (an integer >= 1).

    Returns:
        The ratio (a float >= 0), or None for images whose means have no contrast.

    Raises:
        AffineVAEError: images of another shape, not square, or holding NaN or infinite values.
    """
    check_seed(seed)
    draws = check_int("mean_isotropy: draws", draws, 1)
    if isinstance(x, torch.Tensor) and x.dim() == 3 or not isinstance(x, torch.Tensor) and np.ndim(x) == 3:
        x = x[:, None]
    x = checked_images(x, "mean_isotropy", ())
    if x.shape[-1] != x.shape[-2] or not len(x):
        raise AffineVAEError(f"mean_isotropy: needs square images, at least one, got shape {tuple(x.shape)}")
    x = x.mean(1, keepdim=True)
    mean = x.mean(0, keepdim=True)  # all images turned by one angle average to their mean turned by it (a linear warp)
    rng = np.random.default_rng([seed, 3])
    same, own = 0.0, 0.0
    for _ in range(draws):
        angle = torch.as_tensor(rng.uniform(-math.pi, math.pi, len(x)), dtype=torch.float32)
        a = _nonradial_energy(render(mean, Pose(angle=angle[:1]), padding="border")[0, 0].numpy())
        b = _nonradial_energy(render(x, Pose(angle=angle), padding="border").mean(0)[0].numpy())
        if a is None or b is None:
            return None
        same, own = same + a, own + b
    return same / own if own > 0 else None


@dataclasses.dataclass(frozen=True)
class OrientationSpread:
    """How far the objects of an image set are turned against each other (:func:`orientation_spread`).

    Attributes:
        far: the share of neighbour pairs (each image's nearest under any turn) whose best relative turn
            exceeds :data:`FAR_TURN` (120 degrees) and that do not match nearly as well unturned
            (:data:`ORIENTATION_TIE`): about 1/3 for objects turned over the full circle, below 0.1 for
            objects within +-60 degrees of upright, symmetric or not; None for fewer than
            :data:`ORIENTATION_MIN_IMAGES` images (not compared: the mean alone decides).
        images: how many images were compared.
        isotropy: :func:`mean_isotropy` of the images (None for means without contrast).
    """

    far: Optional[float]
    images: int
    isotropy: Optional[float] = None

    @property
    def effect(self) -> Optional[float]:
        """How clearly the mean image keeps an orientation, independent of the number of images:
        ``(isotropy - 1) / images`` (None without ``isotropy``)."""
        return None if self.isotropy is None else (self.isotropy - 1) / self.images

    @property
    def decided_by(self) -> str:
        """'round mean' (``isotropy`` < :data:`ISOTROPIC_RATIO`: full circle), 'oriented mean' (``effect`` >=
        :data:`ORIENTED_EFFECT`: an upright) or 'pairs' (``far`` against :data:`FULL_CIRCLE_SHARE`); for a set
        too small for the pairs (``far`` None) the mean alone: 'round mean' below
        :data:`SMALL_SET_ISOTROPIC_RATIO`, else 'oriented mean' ('no contrast' for a mean without any: the
        prior kept)."""
        if self.far is None:
            if self.isotropy is None:
                return "no contrast"
            return "round mean" if self.isotropy < SMALL_SET_ISOTROPIC_RATIO else "oriented mean"
        if self.isotropy is not None and self.isotropy < ISOTROPIC_RATIO:
            return "round mean"
        if self.effect is not None and self.effect >= ORIENTED_EFFECT:
            return "oriented mean"
        return "pairs"

    @property
    def full_circle(self) -> bool:
        """Whether the orientations spread over the full circle: the images' mean is as round as that of
        the images turned at random, or (where the mean decides nothing, :attr:`decided_by`) ``far`` >=
        :data:`FULL_CIRCLE_SHARE`."""
        rule = self.decided_by
        return rule == "round mean" or (rule == "pairs" and self.far >= FULL_CIRCLE_SHARE)

    def sentence(self) -> str:
        """Why, in words: e.g. ``"orientations over the full circle: 31 % of 2000 images' neighbour pairs
        turned by more than 120 degrees"`` or ``"orientations over the full circle: the mean of 600 images is
        as round as theirs turned at random (1.1x)"``; an upright by the mean with :data:`FULL_CIRCLE_SHARE`
        or more of the pairs turned adds that some objects may be turned (a stack of upright and turned
        objects: an audit's half-turned particles read 58x and 25 %)."""
        what = "orientations over the full circle" if self.full_circle else "a preferred orientation"
        rule = self.decided_by
        if rule == "round mean":
            return f"{what}: the mean of {self.images} images is as round as theirs turned at random ({self.isotropy:.1f}x)"
        if rule == "no contrast":
            return (f"{what} assumed: the mean of {self.images} images has no contrast to measure, and they are too "
                    f"few to compare by neighbour pairs ({ORIENTATION_MIN_IMAGES} needed); give rotation_mode=full "
                    "for objects turned over the full circle")
        if rule == "oriented mean":
            turned = ("" if self.far is None or self.far < FULL_CIRCLE_SHARE else  # a stack of upright objects and turned ones, say
                      f"; yet {100 * self.far:.0f} % of the neighbour pairs are turned by more than "
                      f"{math.degrees(FAR_TURN):.0f} degrees: if some of the objects are turned, give rotation_mode=full")
            return (f"{what}: the mean of {self.images} images keeps a shape ({self.isotropy:.0f}x that of "
                    f"theirs turned at random){turned}")
        return (f"{what}: {100 * self.far:.0f} % of {self.images} images' neighbour pairs turned by more than "
                f"{math.degrees(FAR_TURN):.0f} degrees")


def orientation_unmeasured(x) -> Optional[str]:
    """Why :func:`orientation_spread` cannot measure the orientations of the images ``x`` (N, C, H, W)
    (not square; fewer than :data:`ORIENTATION_MEAN_MIN_IMAGES`: too few to tell), said where the angle
    prior is kept; None when it can."""
    n, (h, w) = len(x), tuple(np.shape(x)[-2:])
    if h != w:
        return (f"{h}x{w} images: the orientations are measured, and the full circle's equivariant encoder works, on "
                "square images only; crop or pad them square for objects turned over the full circle (train --square pad or "
                "crop)")
    if n < ORIENTATION_MEAN_MIN_IMAGES:
        return (f"{n} image{'s are' if n != 1 else ' is'} too few to measure the orientations ({ORIENTATION_MEAN_MIN_IMAGES} needed): give "
                "rotation_mode=full for objects turned over the full circle")
    return None


def orientation_spread(x, seed: int = 0, sample: int = ORIENTATION_SAMPLE) -> Optional[OrientationSpread]:
    """Whether the objects of ``x`` have a preferred orientation or are turned over the full circle.

    Each of at most ``sample`` images (a subset drawn with ``seed``; larger images averaged down to
    :data:`ORIENTATION_SIDE` pixels) is compared with the others at 32 turns, as
    :func:`synchronise_angles` does, and keeps its 10 nearest neighbours under their best turn. Objects
    with an upright (digits within +-60 degrees, faces) match their neighbours at small turns; objects
    turned at random over the full circle at any turn, so a third of the pairs are turned by more than
    120 degrees (:class:`OrientationSpread`). A pair that matches nearly as well unturned (its distance at
    turn 0 within :data:`ORIENTATION_TIE` of the way from its best turn's to its median turn's) is not
    counted, whatever its best turn: upright symmetric objects (rods, triangles) tie at their equivalent
    turns. The images' mean decides first where it can (:func:`mean_isotropy`, :attr:`OrientationSpread.decided_by`):
    as round as the images turned at random, the full circle (sharp-edged objects, whose neighbours the
    comparison finds mostly at small turns: cells read 13-20 % by their pairs); a clear shape, an upright
    (noisy upright objects, whose pairs read turned); it reads the images at their own size up to 95 px and
    larger ones shrunk by a whole factor (to 48-95 px), not area-averaged to 48 px as the pairs do (that
    resampling's fixed pattern stays in a mean). A mark that every
    image carries at the same place (a scale bar, a fixed illumination gradient) keeps the mean oriented:
    such objects read upright. About 2-11 s for 2 000 images on one CPU thread (28-128 px; the most just under
    96 px, whose mean is measured at full size).

    Args:
        x: (N, C, H, W) images (array or tensor; (N, H, W) read as one channel), square.
        seed: fixes the subset and so the result (an integer >= 0).
        sample: images compared at most (an integer >= 2).

    With :data:`ORIENTATION_MEAN_MIN_IMAGES` to :data:`ORIENTATION_MIN_IMAGES` images compared (too few pairs
    to tell; also a ``sample`` below :data:`ORIENTATION_MIN_IMAGES`) the mean alone decides, at
    :data:`SMALL_SET_ISOTROPIC_RATIO` (``far`` None).

    Returns:
        :class:`OrientationSpread`, or None when the images are not square or fewer than
        :data:`ORIENTATION_MEAN_MIN_IMAGES` (:func:`orientation_unmeasured` says which).
    """
    import torch.nn.functional as F

    check_seed(seed)
    sample = check_int("orientation_spread: sample", sample, 2)
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise AffineVAEError(f"orientation_spread: images must be (N, C, H, W) or (N, H, W), got shape {tuple(x.shape)}")
    if orientation_unmeasured(x) is not None:
        return None
    if len(x) > sample:
        x = x[torch.as_tensor(np.sort(np.random.default_rng([seed, 2]).choice(len(x), sample, replace=False)))]
    if x.is_complex() or x.dtype == torch.bool:  # refused as such by checked_images
        x = checked_images(x, "orientation_spread", ())
    x = x.float()
    factor = x.shape[-1] // ORIENTATION_SIDE  # the mean's roundness: shrunk by a whole factor, no fixed pattern
    whole = checked_images(F.avg_pool2d(x, factor) if factor > 1 else x, "orientation_spread", ())
    if len(x) < ORIENTATION_MIN_IMAGES:  # too few for the neighbour pairs: the mean alone
        return OrientationSpread(far=None, images=len(x), isotropy=mean_isotropy(whole, seed))
    if x.shape[-1] > ORIENTATION_SIDE:  # (NaN and infinities stay in the averages: checked on the small ones)
        x = F.interpolate(x, size=(ORIENTATION_SIDE, ORIENTATION_SIDE), mode="area")
    x = checked_images(x, "orientation_spread", ())
    feats = turned_components(x, ORIENTATION_TURNS, 50, seed)  # (N, M, d), as synchronise_angles compares them
    nbr, turn = neighbour_turns(feats, 10, len(x), seed)
    other = feats[nbr, 0]  # (N, K, d) each neighbour at turn 0
    d = ((feats ** 2).sum(-1)[:, :, None] + (other ** 2).sum(-1)[:, None, :]
         - 2 * torch.einsum("imd,ikd->imk", feats, other))  # (N, M, K) each pair at every turn
    best, upright, typical = d.min(1).values, d[:, 0], d.median(1).values
    # upright symmetric objects match their neighbours as well at 0 as at 180 degrees (a rod) or +-120 (a
    # triangle), and the best of those near-equal turns is the noise's pick: such a pair is not turned
    tie = upright - best <= ORIENTATION_TIE * (typical - best)
    turns = np.angle(np.exp(1j * turn.numpy().astype(np.float64) * (2 * np.pi / ORIENTATION_TURNS)))
    far = (np.abs(turns) > FAR_TURN + 1e-9) & ~tie.numpy()
    return OrientationSpread(far=float(far.mean()), images=len(x), isotropy=mean_isotropy(whole, seed))
