"""Rotation-aligned k-means: classes of objects that have no preferred orientation.

Plain k-means on images turned over the full circle splits them by orientation as much as by
shape (rotated MNIST, 10 000 digits: cluster accuracy 0.25). :func:`aligned_kmeans` compares
every image with every class centre at each of ``angles`` turns and keeps the best turn, as the
reference-free 2-D classification of single-particle cryo-EM does: an image's distance to a
class is ``min_m ||P(turn_m x) - c_k||^2`` in the space of ``components`` principal components
P, and each centre is the mean of its images turned by their best turn (0.56-0.62 on those
digits, see :func:`aligned_kmeans`). The joint model's k-means start over the full circle
(``JRVAEConfig.class_init``) uses it.

Units: angles in radians, counter-clockwise on screen (as :mod:`affinevae.nn.affine`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ..config import check_seed
from ..data.inputs import check_int, real_array
from ..errors import AffineVAEError
from ..nn.affine import Pose, canonicalise, render

__all__ = ["AlignedClusters", "aligned_kmeans", "shift_invariant_features", "aligned_components", "aligned_embedding", "EMBEDDING_ANGLE", "EMBEDDING_FAST_FROM", "EMBEDDING_FIT_AT_MOST",
           "EMBEDDING_COMPONENTS", "EMBEDDING_MAX_DIM", "checked_images", "checked_turns", "turn_mask", "turned_components",
           "ALIGNED_FIT_BYTES"]


@dataclasses.dataclass
class AlignedClusters:
    """The result of :func:`aligned_kmeans`.

    Attributes:
        labels: (N,) int64 class of each image, 0..K-1.
        angles: (N,) float32 radians: the turn that brings each image onto its class centre.
        centres: (K, C, H, W) float32 class averages: the mean of each class's images turned by
            their ``angles`` (zeros for a class left empty).
        inertia: sum over the images of the squared distance to their centre in the principal
            components (the restart kept is the one with the least).
    """

    labels: np.ndarray
    angles: np.ndarray
    centres: np.ndarray
    inertia: float


def shift_invariant_features(x) -> np.ndarray:
    """Features of 1-D signals ``x`` (N, C, 1, L) that do not change when a signal shifts along its
    length: the magnitudes of its Fourier transform, zero-padded to 2L so that a shift within the
    signal barely wraps around. Returns (N, C * (L + 1)) float64.

    Two overlapping peaks of height ratio r give ``|G(f)| |1 + r exp(-2 pi i f d)|``, which tells
    the ratio apart wherever they lie: on a synthetic cube of three phases that differ only in their
    peak ratio, every pixel shifted at random, k-means of these features recovers the phases with
    accuracy 1.000 (seeds 0 / 1) against 0.375 / 0.379 on the spectra themselves.
    """
    a = real_array(x, "shift_invariant_features: signals", ndim=(3, 4), what="(N, C, 1, L) or (N, C, L) signals")
    if a.shape[0] == 0 or a.shape[-1] == 0:
        raise AffineVAEError(f"shift_invariant_features: needs at least one signal of at least one value, got shape "
                             f"{a.shape}")
    length = a.shape[-1]
    return np.abs(np.fft.rfft(a.reshape(len(a), -1, length), n=2 * length, axis=-1)).reshape(len(a), -1)


def _turned(x: Tensor, angle) -> Tensor:
    """Images ``x`` (N, C, H, W) turned by ``angle`` radians (a number or (N,)) about their centre and
    masked to a disc inside them (:func:`turn_mask`), as (N, C*H*W). The mask keeps the square frame out of the
    comparison: images whose background is not 0 (a sky, a stretched or zero-mean particle stack)
    otherwise match best at quarter turns, which move the corners onto corners (measured on noisy
    galaxy cut-outs: all of the neighbours' turns were multiples of 90 degrees, 7-11 % with the mask,
    as for digits)."""
    turn = torch.as_tensor(angle, dtype=torch.float32).expand(x.shape[0])
    out = render(x, Pose(angle=turn))
    return (out * turn_mask(*out.shape[-2:])).reshape(x.shape[0], -1)


def turn_mask(height: int, width: int) -> Tensor:
    """(H, W) float mask of the pixels whose centres lie within ``(min(H, W) - 1) / 2 - 0.5`` of the
    image centre: every point a turn samples for them lies among the pixel centres, so the zero
    padding outside dims none of them at any turn (the inscribed disc of radius min(H, W) / 2 keeps a
    rim that it dims at every turn but the quarter turns)."""
    height, width = check_int("turn_mask: height", height, 1), check_int("turn_mask: width", width, 1)
    r = (min(height, width) - 1) / 2 - 0.5
    v = torch.arange(height, dtype=torch.float32) - (height - 1) / 2
    u = torch.arange(width, dtype=torch.float32) - (width - 1) / 2
    return ((v[:, None] ** 2 + u[None, :] ** 2) <= r * r).float()


def aligned_kmeans(x, k: int, angles: int = 16, components: int = 50, n_init: int = 4, iters: int = 30,
                   seed: int = 0, fit_on: int = 20000, standardise: bool = True) -> AlignedClusters:
    """Split images into ``k`` classes regardless of their orientation.

    Args:
        x: (N, C, H, W) images (array or tensor), N >= k.
        k: number of classes, >= 2.
        angles: M turns compared, 2 pi m / M radians (m = 0..M-1), >= 1 (1: plain k-means).
        components: principal components (scikit-learn's PCA, fitted on at most ``fit_on``
            images, each at a turn drawn with ``seed``) every turned image is reduced to.
        n_init, iters: restarts (k-means++ seeding over the turns) and iterations of each; the
            restart with the least inertia is kept.
        seed: fixes the PCA subset, the seeding and so the result.
        standardise: compare each image after scaling it to zero mean and unit standard deviation
            (cryo-EM's particle normalisation), so that offsets and contrast that differ between
            images do not make the classes; the centres are means of the images as given.

    Returns:
        :class:`AlignedClusters`. Measured (rotated MNIST over the full circle, 10 000 digits,
        M 16, 1 CPU thread, 3-12 s): cluster accuracy 0.581 / 0.631 (seeds 0 / 1; 0.575 / 0.625
        before the comparison inside a disc, 0.557 / 0.625 also without ``standardise``) against 0.25 for
        plain k-means of the same components; three
        particle shapes turned over the full circle (3 000 zero-mean noisy images of 48 px, a
        user audit's): 1.000 (0.68 without ``standardise``: the images' offsets split the classes).

    Memory: N * M * components floats for the reduced turns, one turned copy of ``x`` at a time.
    """
    check_seed(seed)
    x = checked_images(x, "aligned_kmeans", (("k", k, 2), ("angles", angles, 1), ("components", components, 1),
                                             ("n_init", n_init, 1), ("iters", iters, 1), ("fit_on", fit_on, 1)))
    n = x.shape[0]
    if n < k:
        raise AffineVAEError(f"aligned_kmeans: {n} images cannot make {k} classes")
    turns = [2 * math.pi * m / angles for m in range(angles)]
    compared = x
    if standardise:
        flat = x.reshape(n, -1)
        compared = ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-8)).reshape(x.shape)
    feats = turned_components(compared, angles, components, seed, fit_on)
    sq = (feats ** 2).sum(-1)  # (N, M)
    gen = torch.Generator().manual_seed(seed)
    best = None
    for _ in range(n_init):
        labels, turn, inertia = _one_run(feats, sq, k, iters, gen)
        if best is None or inertia < best[2]:
            best = (labels, turn, inertia)
    labels, turn, inertia = best
    centres = torch.zeros(k, *x.shape[1:])
    counts = torch.bincount(labels, minlength=k).clamp_min(1).float()
    onto = torch.as_tensor(turns, dtype=torch.float32)[turn]  # (N,) the turn onto each centre
    centres.index_add_(0, labels, render(x, Pose(angle=onto)))
    centres /= counts[:, None, None, None]
    return AlignedClusters(labels=labels.numpy().astype(np.int64),
                           angles=onto.numpy(),
                           centres=centres.numpy(), inertia=float(inertia))


def checked_images(x, where: str, options: tuple = ()) -> Tensor:
    """``x`` as a float32 CPU tensor (N, C, H, W) after the checks that ``where`` (the function's
    name, for messages) shares: the shape, each ``(name, value, least)`` of ``options`` an integer
    of at least ``least``, and finite values. Raises :class:`AffineVAEError` in one line."""
    if isinstance(x, Tensor) and (x.is_complex() or x.dtype == torch.bool):
        x = x.detach().cpu().numpy()
    if not isinstance(x, Tensor):
        x = real_array(x, where, finite=False, what="(N, C, H, W) images of real numbers")
    x = torch.as_tensor(x).float().cpu()
    if x.dim() != 4:
        raise AffineVAEError(f"{where} needs images of shape (N, C, H, W), got {tuple(x.shape)}")
    for name, value, low in options:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise AffineVAEError(f"{where}: {name} must be an integer >= {low}, got {value!r}")
    if not torch.isfinite(x).all():
        raise AffineVAEError(f"{where}: the images hold NaN or infinite values")
    return x


def checked_turns(images, angles, where: str) -> tuple[Tensor, Tensor]:
    """``images`` (N, C, H, W) (any array; :func:`checked_images`) and their ``angles`` (N,) radians (any
    array) as float32 CPU tensors; one-line :class:`AffineVAEError` for other shapes, non-square images
    or angles that are not finite."""
    images = checked_images(images, where)
    angles = torch.as_tensor(real_array(angles, f"{where}: angles", finite=False, what="angles in radians"),
                             dtype=torch.float32)
    if angles.shape != (images.shape[0],):
        raise AffineVAEError(f"{where}: {tuple(angles.shape)} angles for {images.shape[0]} images (one per image)")
    if not torch.isfinite(angles).all():
        raise AffineVAEError(f"{where}: the angles hold NaN or infinite values")
    if images.shape[-2] != images.shape[-1]:
        raise AffineVAEError(f"{where}: images turned into one frame must be square, got "
                             f"{images.shape[-2]}x{images.shape[-1]}")
    return images, angles


def turned_components(x: Tensor, angles: int, components: int, seed: int = 0, fit_on: int = 20000) -> Tensor:
    """Every image of ``x`` (N, C, H, W) float tensor turned by each of ``angles`` turns ``2 pi m / M``,
    masked to a disc inside it (:func:`_turned`) and reduced to ``components`` principal
    components: (N, M, d) float32, d = min(components, ...). Images must be square when M > 1.

    The PCA (scikit-learn) is fitted on at most ``fit_on`` images (a subset drawn with ``seed``),
    each at a turn drawn with ``seed``, so the components do not favour any orientation.
    """
    from sklearn.decomposition import PCA

    angles = check_int("turned_components: angles", angles, 1)
    components = check_int("turned_components: components", components, 1)
    check_seed(seed)
    n = x.shape[0]
    if n == 0:
        raise AffineVAEError("turned_components: needs at least one image")
    if angles > 1 and x.shape[-2] != x.shape[-1]:
        raise AffineVAEError(f"images turned for comparison must be square (a turn of a {x.shape[-2]}x{x.shape[-1]} "
                             "image is not rigid); got H != W")
    rng = np.random.default_rng(seed)
    turns = [2 * math.pi * m / angles for m in range(angles)]
    subset = rng.choice(n, min(n, fit_on), replace=False)
    sub_turn = torch.as_tensor(rng.choice(np.asarray(turns, np.float32), len(subset)))
    sample = _turned(x[subset], sub_turn).numpy()
    comps = max(1, min(components, sample.shape[0], sample.shape[1]))
    pca = PCA(comps, random_state=seed).fit(sample)
    return torch.stack([torch.as_tensor(pca.transform(_turned(x, a).numpy()), dtype=torch.float32) for a in turns], 1)


#: Bytes the turned images that :func:`aligned_components` fits its components on may take (float64).
ALIGNED_FIT_BYTES = 256 << 20


def aligned_components(images: Tensor, angles: Tensor, k: int, fit_at_most: int = 4000,
                       chunk: int = 1024, whiten: bool = True) -> Tensor:
    """(N, k) coordinates of ``images`` (N, C, H, W) turned back by ``angles`` (N,) radians (into their
    common frame) on the first ``k`` principal components of those turned images inside the disc they
    all share (:func:`turn_mask`: the corners a turn brings in would otherwise vary with the angle), each
    scaled to unit variance (the prior's; ``whiten=False``: in the images' intensity units, so that
    distances are the turned images' own); the components are fitted on at most ``fit_at_most`` evenly spaced images
    (fewer for large images: at most :data:`ALIGNED_FIT_BYTES` of them, at least 100), through the
    smaller of the pixels' covariance and the images' Gram matrix (deterministic: no random projection),
    and every image is projected ``chunk`` at a time (the turned stack is never held whole)."""
    images, angles = checked_turns(images, angles, "aligned_components")
    n = images.shape[0]
    k = check_int("aligned_components: k", k, 1)  # more than the images have: the others are 0
    disc = turn_mask(*images.shape[-2:]).reshape(-1) > 0

    def turned(idx: Tensor) -> Tensor:
        out = canonicalise(images[idx], Pose(angle=angles[idx].to(images.dtype)), padding="border")
        return out.reshape(len(idx), images.shape[1], -1)[:, :, disc].reshape(len(idx), -1)
    pixels = int(disc.sum()) * images.shape[1]
    fit = torch.linspace(0, n - 1, min(n, fit_at_most, max(100, ALIGNED_FIT_BYTES // (8 * pixels)))).round().long()
    sample = turned(fit.unique()).double()
    mean = sample.mean(0)
    centred = sample - mean
    if centred.shape[1] <= centred.shape[0]:  # (P, P) covariance; ascending eigenvalues: the last k are the components
        basis = torch.linalg.eigh(centred.T @ centred)[1][:, -k:].flip(1)  # (P, k)
    else:  # more pixels than images: the (m, m) Gram matrix, its eigenvectors taken back to pixels
        _, vectors = torch.linalg.eigh(centred @ centred.T)
        basis = centred.T @ vectors[:, -k:].flip(1)
        basis = basis / basis.norm(dim=0).clamp_min(1e-12)
    out = torch.cat([(turned(torch.arange(i, min(i + chunk, n))).double() - mean) @ basis
                     for i in range(0, n, chunk)])
    if whiten:
        out = out / out.std(0).clamp_min(1e-12) if n > 1 else out * 0
    if out.shape[1] < k:  # fewer images than components: the rest are 0, the prior's mean
        out = torch.cat([out, out.new_zeros(n, k - out.shape[1])], 1)
    return out.float()


#: Images :func:`aligned_embedding` runs t-SNE on (evenly spaced; the others take their neighbours'
#: coordinates): 10 000 take about 50 s on one CPU thread.
EMBEDDING_FIT_AT_MOST = 10000
#: Principal components of the turned images that :func:`aligned_embedding` measures distances in.
EMBEDDING_COMPONENTS = 50
#: Most dimensions :func:`aligned_embedding` embeds in (scikit-learn's Barnes-Hut t-SNE: < 4).
EMBEDDING_MAX_DIM = 3
#: Barnes-Hut's accuracy (scikit-learn's ``angle``, its default 0.5) of :func:`aligned_embedding`'s t-SNE:
#: on 10 000 full-circle digits turned by their synchronised angles (1 thread) 27 s against 44 s in 2-D,
#: the embedding's k-means / 10-NN accuracy 0.897 / 0.931 against 0.896 / 0.930 (0.7: 31 s, 0.899 / 0.930);
#: in 3-D 77 s against 146 s, 0.907 / 0.933 against 0.908 / 0.934. Taken from :data:`EMBEDDING_FAST_FROM`
#: embedded images on (fewer embed in seconds at 0.5, which placed 60 images of two shapes in 1-D without a
#: mistake where 0.8 made one).
EMBEDDING_ANGLE = 0.8
EMBEDDING_FAST_FROM = 2000
#: Least spread (intensity units, the largest range of a principal component) the images need for
#: :func:`aligned_embedding` to embed them; below it (identical or blank images) they all sit at 0.
EMBEDDING_MIN_SPREAD = 1e-6


def aligned_embedding(images: Tensor, angles: Tensor, k: int, seed: int = 0,
                      fit_at_most: int = EMBEDDING_FIT_AT_MOST, components: int = EMBEDDING_COMPONENTS,
                      perplexity: float = 30.0, threads: Optional[int] = None) -> Tensor:
    """(N, k) float32 t-SNE coordinates of ``images`` (N, C, H, W) turned back by ``angles`` (N,) radians
    into their common frame, each dimension scaled to zero mean and unit variance (the prior's).

    The turned images are reduced to their first ``components`` principal components inside the disc
    they all share (:func:`aligned_components` with ``whiten=False``: distances in intensity units),
    and scikit-learn's Barnes-Hut t-SNE (``init='pca'``, ``random_state=seed``, ``angle``
    :data:`EMBEDDING_ANGLE` from :data:`EMBEDDING_FAST_FROM` images on, else 0.5; ``perplexity`` at most
    (n - 1) / 3) embeds at most ``fit_at_most`` evenly spaced images in ``k`` dimensions (1 <= k <=
    :data:`EMBEDDING_MAX_DIM`). Every other image takes the mean coordinates of its 3 nearest embedded
    images in those components. t-SNE keeps each image's neighbours near it, so that images that look
    alike (the same digit, the same particle) gather into separate groups, where the first principal
    components mix them (10 000 full-circle digits turned by their synchronised angles: k-means
    accuracy 0.90 on this embedding in 2-D, 0.35 on the first two components). Deterministic for a
    given ``seed`` and data; ``threads``: scikit-learn's ``n_jobs`` for the neighbour search (None:
    torch's thread count; t-SNE's gradient takes OpenMP's threads, ``OMP_NUM_THREADS``).
    Fewer than 8 images have no neighbourhoods to keep: their whitened principal components are
    returned instead; images that do not differ (identical or blank) all get 0."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= EMBEDDING_MAX_DIM:
        raise AffineVAEError(f"aligned_embedding: {k!r} dimensions; t-SNE embeds in 1 to {EMBEDDING_MAX_DIM}")
    if isinstance(perplexity, bool) or not isinstance(perplexity, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(perplexity) and perplexity > 0):
        raise AffineVAEError(f"aligned_embedding: perplexity must be a finite number > 0, got {perplexity!r}")
    check_seed(seed)
    images, angles = checked_turns(images, angles, "aligned_embedding")
    n = images.shape[0]
    if n < 8:
        return aligned_components(images, angles, k)
    from sklearn.manifold import TSNE
    from sklearn.neighbors import NearestNeighbors
    reduced = aligned_components(images, angles, components, whiten=False).double().numpy()  # (N, d)
    fit = np.unique(np.linspace(0, n - 1, min(n, fit_at_most)).round().astype(np.int64))
    if np.ptp(reduced[fit], axis=0).max() < EMBEDDING_MIN_SPREAD:  # images alike: nothing to embed (t-SNE's
        return torch.zeros(n, k)                                  # PCA start divides by 0 and crashes), the prior's mean
    tsne = TSNE(k, perplexity=min(perplexity, (len(fit) - 1) / 3), init="pca", random_state=seed % 2**32,
                n_jobs=threads or torch.get_num_threads(), method="barnes_hut" if k < 4 else "exact",
                angle=EMBEDDING_ANGLE if len(fit) >= EMBEDDING_FAST_FROM else 0.5)
    fitted = tsne.fit_transform(reduced[fit])  # (M, k)
    out = np.empty((n, k))
    out[fit] = fitted
    rest = np.setdiff1d(np.arange(n), fit)
    if len(rest):
        near = NearestNeighbors(n_neighbors=min(3, len(fit))).fit(reduced[fit]).kneighbors(reduced[rest])[1]
        out[rest] = fitted[near].mean(1)
    out = (out - out.mean(0)) / np.maximum(out.std(0), 1e-12)
    return torch.as_tensor(out, dtype=torch.float32)


def _one_run(feats: Tensor, sq: Tensor, k: int, iters: int, gen: torch.Generator) -> tuple[Tensor, Tensor, float]:
    """One restart of aligned k-means on reduced turns ``feats`` (N, M, d) with squared norms ``sq``
    (N, M): k-means++ seeding (distances minimised over the turns), then ``iters`` rounds of
    assignment and update. Returns labels (N,), best turn index (N,) and the inertia."""
    n, m, d = feats.shape
    first = int(torch.randint(n, (1,), generator=gen))
    centres = feats[first, 0][None].clone()
    for _ in range(1, k):
        dist = _distances(feats, sq, centres).amin((1, 2)).clamp_min(0)  # (N,)
        p = dist / dist.sum() if float(dist.sum()) > 0 else torch.full((n,), 1.0 / n)
        pick = int(torch.multinomial(p, 1, generator=gen))
        turn = int(torch.randint(m, (1,), generator=gen))
        centres = torch.cat([centres, feats[pick, turn][None]])
    labels = turn = None
    for _ in range(iters):
        dist = _distances(feats, sq, centres)  # (N, M, k)
        per_class, turn_k = dist.min(1)  # (N, k)
        closest, new_labels = per_class.min(1)
        turn = turn_k.gather(1, new_labels[:, None])[:, 0]
        aligned = feats[torch.arange(n), turn]  # (N, d)
        sums = torch.zeros(k, d).index_add_(0, new_labels, aligned)
        counts = torch.bincount(new_labels, minlength=k)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None].float(), centres)
        if labels is not None and torch.equal(new_labels, labels):
            labels = new_labels
            break
        labels = new_labels
    return labels, turn, float(closest.clamp_min(0).sum())


def _distances(feats: Tensor, sq: Tensor, centres: Tensor) -> Tensor:
    """(N, M, k) squared distances between every turn of every image (``feats`` (N, M, d), squared
    norms ``sq`` (N, M)) and each centre (k, d)."""
    return sq[:, :, None] - 2 * feats @ centres.T + (centres ** 2).sum(1)[None, None]
