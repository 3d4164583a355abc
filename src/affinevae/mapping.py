"""Map per-object latents and angles back onto the image they came from.

Every figure function returns ``(data, figure)``: the numbers it plotted and a
:class:`matplotlib.figure.Figure` (no pyplot state, no backend chosen; save it with
``fig.savefig(path)``). Positions are (row, col) pixels; angles are radians in the arrays and
degrees on every label. A lattice (or object) with ``symmetry``-fold rotational symmetry looks
the same turned by ``360 / symmetry`` degrees, so angles are folded into
``[0, 360 / symmetry)`` degrees before colouring with a cyclic colormap.

:func:`write_maps` does it all for one :class:`~affinevae.encoding.ObjectEncoding`: it
clusters the objects (given their model, as :func:`cluster_objects` does: the patches the model
decodes them into, :func:`decoded_features`, or their content latents; ``affinevae map`` passes
the model), writes ``maps.npz`` atomically and draws the PNG maps.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Optional, Sequence

import matplotlib
import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure

from .config import MAX_SYMMETRY, check_seed, check_symmetry  # noqa: F401  (mapping.check_symmetry, as before)
from .data.inputs import check_latents
from .data.inputs import as_number, real_array
from .data.objects import neighbour_spacing  # noqa: F401  (mapping.neighbour_spacing, as before)
from .data.patches import MASS_CENTRE_MIN_SHIFT, MASS_CENTRE_REACH, mass_centred, mass_offsets  # noqa: F401  (as before)
from .errors import AffineVAEError
from .io import atomic_write, make_directory
from .registry import Registry

#: What ``map --clusters`` clusters (``--cluster-on``; :func:`cluster_space`).
CLUSTER_SPACES = ("auto", "images", "latents")

ANGLE_CMAP = "twilight"
LATENT_CMAP = "viridis"
CLASS_CMAP = "tab10"


# ============================================================================ numbers
def fold_angle(angle: np.ndarray, symmetry: int = 1) -> np.ndarray:
    """Fold radians (any shape, any value: a model's angle may pass a full turn) into one symmetry
    period: ``angle mod (2 pi / symmetry)``, in [0, 2 pi / symmetry), same shape; NaN stays NaN."""
    a = real_array(angle, "fold_angle: angles", finite=False, what="angles in radians")
    return _in_period(a, 2 * math.pi / check_symmetry(symmetry))


def _in_period(angle: np.ndarray, period: float) -> np.ndarray:
    """``angle mod period`` in [0, period): np.mod of a tiny negative angle rounds up to the period itself
    (``np.mod(-1e-17, pi / 2) == pi / 2``), which is taken as 0 here."""
    out = np.mod(angle, period)
    return np.where(out >= period, 0.0, out)


def circular_mean(angle: np.ndarray, symmetry: int = 1) -> float:
    """Mean direction of radians modulo ``2 pi / symmetry`` (the n-fold angle trick: the direction of
    mean(exp(i n angle)) / n, n = ``symmetry``), in [0, 2 pi / symmetry) radians.

    ``angle``: radians, any shape (flattened), one or more, all finite. Returns a float.
    """
    n = check_symmetry(symmetry)
    a = real_array(angle, "circular_mean: angles", finite=False, what="angles in radians").reshape(-1)
    if len(a) == 0 or not np.all(np.isfinite(a)):
        raise AffineVAEError(f"circular_mean needs one or more finite angles (radians), got {len(a)} "
                             f"({int((~np.isfinite(a)).sum())} not finite)")
    m = np.angle(np.mean(np.exp(1j * n * a)))
    return float(_in_period(m / n, 2 * math.pi / n))


def angle_difference(a, b, symmetry: int = 1):
    """Signed smallest difference ``a - b`` (radians: two numbers, or arrays of one shape, or broadcasting)
    modulo ``2 pi / symmetry``, in [-pi / symmetry, pi / symmetry): a float for two numbers, else an array."""
    period = 2 * math.pi / check_symmetry(symmetry)
    a = real_array(a, "angle_difference: a", finite=False, what="angles in radians")
    b = real_array(b, "angle_difference: b", finite=False, what="angles in radians")
    try:
        d = _in_period(a - b + period / 2, period) - period / 2
    except ValueError:
        raise AffineVAEError(f"angle_difference: shapes {a.shape} and {b.shape} do not broadcast") from None
    return float(d) if d.ndim == 0 else d


# ============================================================================ symmetry estimation
#: The orders :func:`estimate_symmetry` chooses from (besides 1, no symmetry).
SYMMETRY_ORDERS = (2, 3, 4, 6)


@dataclasses.dataclass(frozen=True)
class SymmetryScores:
    """What :func:`symmetry_scores` measured on a set of patches.

    Attributes:
        order: the estimated n of n-fold rotational symmetry (1: none found).
        score: order n -> the share of a patch's angular (non-rotation-invariant) power, above
            the noise floor, that is n-fold symmetric, rescaled so that 0 is what noise gives and 1
            is a perfectly n-fold symmetric pattern (it equals the mean correlation of a patch with
            itself turned by ``360 k / n`` degrees, k = 1..n-1, once the noise is taken out): the
            median over the patches for centred ones, of the pooled power for spectra.
        contrast: order n -> mean power of the n-fold symmetric angular harmonics over the noise
            floor (1: nothing above the noise).
        harmonic_power: (M,) mean power of the angular harmonics 1..M over the patches, whitened so
            that white pixel noise gives the same value at every harmonic.
    """

    order: int
    score: dict
    contrast: dict
    harmonic_power: np.ndarray


def _ring_samples(stack: np.ndarray, centres: np.ndarray, radii: np.ndarray, n_angles: int) -> np.ndarray:
    """Bilinear samples of (K, h, w) images on circles around (K, 2) (row, col) centres -> (K, R, n_angles)."""
    from scipy import ndimage

    th = 2.0 * math.pi * np.arange(n_angles) / n_angles
    rows = centres[:, 0, None, None] - radii[None, :, None] * np.sin(th)   # counter-clockwise on screen
    cols = centres[:, 1, None, None] + radii[None, :, None] * np.cos(th)
    k = np.broadcast_to(np.arange(len(stack), dtype=np.float64)[:, None, None], rows.shape)
    return ndimage.map_coordinates(stack, np.stack([k, rows, cols]), order=1, mode="nearest")


def _symmetry_centres(stack: np.ndarray, radii: np.ndarray, n_angles: int, iters: int = 4,
                      max_offset: float = 1.0) -> np.ndarray:
    """Sub-pixel centres (K, 2) of (K, h, w) patches about which they are most nearly symmetric.

    Starting at pixel (h // 2, w // 2), Gauss-Newton steps drive the first angular harmonic to
    zero (no n-fold symmetric pattern with n >= 2 has one about its centre): a centre off by
    ``d`` adds ``(dx - i dy) / 2 * dI0/dr`` to the first harmonic at radius r, I0 the ring mean.
    Offsets are kept within ``max_offset`` pixels.
    """
    k, h, w = stack.shape
    start = np.tile(np.array([h // 2, w // 2], dtype=np.float64), (k, 1))
    c = start.copy()
    for _ in range(iters):
        ring = _ring_samples(stack, c, radii, n_angles)
        a1 = np.fft.rfft(ring, axis=-1)[..., 1] / n_angles                 # (K, R)
        slope = np.gradient(ring.mean(-1), radii, axis=1)                   # (K, R) dI0/dr
        z = -2.0 * (a1 * slope * radii).sum(1) / np.maximum((slope * slope * radii).sum(1), 1e-12)
        c[:, 1] += z.real                                                   # dx (columns)
        c[:, 0] += z.imag                                                   # -dy: rows grow downwards
        off = c - start
        c = start + off * np.minimum(1.0, max_offset / np.maximum(np.hypot(off[:, 0], off[:, 1]), 1e-12))[:, None]
    return c


def _amplitude_spectra(x: np.ndarray) -> np.ndarray:
    """|FFT| of (..., h, w) windows (mean removed, Hann-tapered), zero frequency at (h // 2, w // 2)."""
    hann = np.outer(np.hanning(x.shape[-2]), np.hanning(x.shape[-1]))
    f = np.fft.fft2((x - x.mean((-2, -1), keepdims=True)) * hann)
    return np.abs(np.fft.fftshift(f, axes=(-2, -1)))


#: Zero-padding factor of the windows' Fourier transforms in :func:`lattice_orientation` (a finer grid
#: of frequencies: at 2 the square lattice's angle in 24-px windows read 1.4 deg off, at 4 0.1 deg).
LATTICE_PAD = 4
#: Width of the ring of frequencies :func:`lattice_orientation` reads, as a fraction of the strongest
#: peak's frequency (the peaks of its own order, not the next ones).
LATTICE_RING = 0.15
# Windows whose spectra are computed at once (bounds the memory to about 256 x (4 w)^2 floats).
_LATTICE_CHUNK = 256


@dataclasses.dataclass(frozen=True)
class LatticeOrientation:
    """The lattice angle of each window, read from its Fourier peaks (:func:`lattice_orientation`).

    Attributes:
        angle: (N,) radians, counter-clockwise on screen, in [0, 2 pi / fold): the direction of the
            rows of atoms whose spacing gives the window's strongest Fourier peak.
        strength: (N,) in [0, 1]: how ``fold``-fold the power on that peak's ring is (1: all of it in
            the lattice's peaks; near 0 where there is no lattice, e.g. amorphous or a boundary).
        fold: the angles' period is 2 pi / fold: the symmetry, or twice an odd one (a spectrum is
            centrosymmetric, so a 3-fold lattice shows 6-fold peaks).
    """

    angle: np.ndarray
    strength: np.ndarray
    fold: int


def lattice_orientation(patches: np.ndarray, symmetry: int) -> LatticeOrientation:
    """Each window's lattice angle from its power spectrum, vectorised over the windows.

    The window (mean removed, Hann-tapered, zero-padded :data:`LATTICE_PAD` times) is Fourier
    transformed; on the ring of frequencies within :data:`LATTICE_RING` of its strongest peak (from 1.5
    cycles per window to the Nyquist frequency), the power's n-fold circular mean gives the angle of
    the peaks (n = 4 for a 2-fold lattice, whose two axes then decide the half turn by the power
    along them; 6 for 3- and 6-fold ones), and the lattice angle is perpendicular to it: the rows of
    atoms. This needs no model, and it follows a lattice's grain where an rVAE's angle of grid
    windows does not (a materials audit's two square grains 30 deg apart, ``--window 32 --stride 8``:
    the rVAE 12, 1.5 and 0.1 deg off over three seeds). Measured on ``synthetic_micrograph``'s two grains
    30 deg apart (the first at 0, 0.2 or 0.3 rad), atoms 8 px apart, windows of 24 and 32 px on a grid of
    stride 8, noise 0.05 and 0.2: grain-angle error under 1 deg (hexagonal 0.00-0.04, square 0.03-0.83,
    rectangular 0.06-0.84), within-grain spread 0.1-2.7 deg; windows of 16 px (two spacings): hexagonal
    0.06-0.11, square 0.0-0.5, rectangular 2-12 deg (too few rows of its long side).

    Args:
        patches: (N, w, w) or (N, C, w, w) windows (channels averaged).
        symmetry: the lattice's rotational symmetry n >= 2 (e.g. from :func:`estimate_symmetry`).

    Returns:
        :class:`LatticeOrientation`.

    Raises:
        AffineVAEError: a symmetry below 2 or above :data:`MAX_SYMMETRY`, patches of another rank.
    """
    n = check_symmetry(symmetry)
    if n < 2:
        raise AffineVAEError("lattice_orientation needs a symmetry of 2 or more (a 1-fold pattern has no "
                             "lattice angle)")
    x = real_array(patches, "lattice_orientation: patches", what="(N, w, w) windows").astype(np.float32)
    if x.ndim == 4:
        x = x.mean(1)
    if x.ndim != 3 or x.shape[-1] < 4:
        raise AffineVAEError(f"lattice_orientation expects (N, w, w) or (N, C, w, w) windows, got shape "
                             f"{np.shape(patches)}")
    fold = n if n % 2 == 0 else 2 * n
    read = 4 if fold == 2 else fold  # the two axes of a 2-fold lattice together, then which is which
    h, w = x.shape[-2:]
    H, W = LATTICE_PAD * h, LATTICE_PAD * w
    taper = np.outer(np.hanning(h + 2)[1:-1], np.hanning(w + 2)[1:-1]).astype(np.float32)
    fy = np.fft.fftfreq(H)[:, None] * h                      # cycles per window
    fx = np.fft.rfftfreq(W)[None, :] * w
    radius = np.hypot(fy, fx)
    phase = np.arctan2(-fy, fx)                              # counter-clockwise on screen (rows run down)
    half = np.where((fx == 0) | (fx == fx.max()), 0.5, 1.0)  # rfft's half plane: its edge columns count once
    valid = (radius >= 1.5) & (radius <= min(h, w) / 2.0)
    turn_read = np.exp(1j * read * phase).astype(np.complex64)
    turn_two = np.exp(2j * phase).astype(np.complex64)
    angle = np.empty(len(x), np.float64)
    strength = np.empty(len(x), np.float64)
    for s in range(0, len(x), _LATTICE_CHUNK):
        c = x[s:s + _LATTICE_CHUNK]
        c = (c - c.mean((-2, -1), keepdims=True)) * taper
        power = np.abs(np.fft.rfft2(c, s=(H, W))) ** 2 * half            # (n, H, W // 2 + 1)
        peak = radius.ravel()[np.where(valid, power, 0).reshape(len(c), -1).argmax(1)]
        ring = valid & (np.abs(radius - peak[:, None, None]) <= LATTICE_RING * peak[:, None, None])
        weight = power * ring
        total = weight.sum((1, 2))
        z = (weight * turn_read).sum((1, 2))
        a = np.angle(z) / read
        if fold == 2:  # the axis with more power on the ring is the peak's
            z2 = (weight * turn_two).sum((1, 2))
            a = np.where(np.real(z2 * np.exp(-2j * a)) < 0, a + np.pi / 2, a)
        angle[s:s + len(c)] = _in_period(a + np.pi / 2, 2 * np.pi / fold)    # the rows lie across the peak
        strength[s:s + len(c)] = np.where(total > 0, np.abs(z) / np.maximum(total, 1e-30), 0.0)
    return LatticeOrientation(angle, strength, fold)


#: Patches :func:`symmetry_scores` analyses at most (a subset drawn with its seed).
SYMMETRY_MAX_PATCHES = 2000


def symmetry_scores(patches: np.ndarray, orders: Sequence[int] = SYMMETRY_ORDERS, centred: bool = True,
                    smooth: float = 1.0, max_harmonic: int = 12, min_score: float = 0.4,
                    min_contrast: float = 1.3, agreement: float = 0.8, max_patches: int = SYMMETRY_MAX_PATCHES,
                    seed: int = 0) -> SymmetryScores:
    """Measure the rotational symmetry of the objects in a set of patches (circular harmonics).

    Each patch (lightly smoothed) is sampled on circles around its centre, refined to the
    sub-pixel point about which it is most nearly symmetric (within 1 pixel of the window's
    centre pixel ``w // 2``, where ``affinevae patches`` puts the object); the power of each
    angular harmonic m = 1..``max_harmonic`` is summed over the circles (weighted by radius: a
    circular mask) and averaged over the patches. An n-fold symmetric pattern has power only at
    multiples of n; white pixel noise spreads evenly once the spectrum is whitened by that of
    noise patches sampled the same way, and the lowest whitened harmonic is taken as the noise
    floor and subtracted (per patch for centred patches). ``score[n]`` is then the share of the
    remaining power at multiples of n (0 for noise, 1 for a perfect n-fold pattern; the median
    over centred patches, so that neighbours and stray peaks in some windows do not decide; see
    :class:`SymmetryScores`).

    The order is the largest n whose score is at least ``agreement`` times the best score, among
    those with ``score >= min_score`` and ``contrast >= min_contrast`` (the symmetric harmonics
    clearly above the noise); 1 when none qualifies (asymmetric objects, or noise too strong).
    An order every analysed harmonic is a multiple of (2 for spectra) scores 1 by construction
    and is chosen only when no other order qualifies and its contrast does.

    Args:
        patches: (N, w, w) or (N, C, w, w) windows, each centred on one object (channels add power).
        orders: candidate n (each in 2..12).
        centred: False for windows not centred on objects (a sliding-window grid): their
            amplitude spectra (Hann-windowed, translation invariant) are analysed instead. A
            spectrum is always 2-fold symmetric, so there 3-fold reads as 6 and 2-fold is the least
            found; windows should span several repeats of the pattern (e.g. 3 lattice constants).
        smooth: Gaussian smoothing of the patches in pixels before sampling (0: none), for noise.
        max_harmonic: highest angular harmonic used (>= the largest order).
        max_patches: at most this many patches (drawn with ``seed``) are analysed.
        seed: fixes the subsample and the noise patches used for whitening.

    Returns:
        :class:`SymmetryScores` (``order`` is what :func:`estimate_symmetry` returns).

    Raises:
        AffineVAEError: on patches of the wrong rank, smaller than 7 x 7 pixels or holding NaN/inf,
            or an order outside 2..12.
    """
    from scipy import ndimage

    p = np.asarray(patches, dtype=np.float64)
    p = p[:, None] if p.ndim == 3 else p
    if p.ndim != 4 or len(p) == 0 or min(p.shape[-2:]) < 7:
        raise AffineVAEError(f"estimate_symmetry expects (N, w, w) or (N, C, w, w) patches of at least 7x7 pixels, "
                             f"got shape {np.shape(patches)}")
    if not np.all(np.isfinite(p)):
        raise AffineVAEError("estimate_symmetry: the patches hold NaN or infinite values")
    orders = tuple(check_symmetry(n, "symmetry order") for n in orders)
    if any(n < 2 for n in orders) or not orders or max_harmonic < max(orders):
        raise AffineVAEError(f"symmetry orders must lie in 2..{MAX_SYMMETRY} and not exceed max_harmonic "
                             f"({max_harmonic}), got {orders}")
    rng = np.random.default_rng(seed)
    if len(p) > max_patches:
        p = p[np.sort(rng.choice(len(p), max_patches, replace=False))]
    n, ch, h, w = p.shape
    noise = rng.normal(size=p.shape)
    if centred:
        if smooth > 0:
            p = ndimage.gaussian_filter(p, (0, 0, smooth, smooth))
            noise = ndimage.gaussian_filter(noise, (0, 0, smooth, smooth))
    else:
        p, noise = _amplitude_spectra(p), _amplitude_spectra(noise)
    rmax = min(symmetry_reach(h), symmetry_reach(w)) + (0 if centred else 1)
    radii = np.arange(1.0, rmax + 1e-9)
    n_angles = 4 * max_harmonic + 16
    if centred:
        centres = _symmetry_centres(p.mean(1), radii, n_angles)
    else:
        centres = np.tile(np.array([h // 2, w // 2], dtype=np.float64), (n, 1))
    centres = np.repeat(centres, ch, 0)

    # Harmonics analysed: 1..M; a spectrum is centrosymmetric, so only its even ones carry anything.
    m = np.arange(1, max_harmonic + 1) if centred else np.arange(2, max_harmonic + 1, 2)

    def power(x: np.ndarray) -> np.ndarray:
        ring = _ring_samples(x.reshape(n * ch, h, w), centres, radii, n_angles)
        f = np.fft.rfft(ring, axis=-1)[..., m]                              # (N C, R, len(m))
        return (np.abs(f) ** 2 * radii[:, None]).sum(1).reshape(n, ch, -1).sum(1)  # (N, len(m))

    noise_power = np.maximum(power(noise).mean(0), 1e-300)
    each = power(p) / noise_power                                           # (N, len(m)) whitened, per patch
    white = each.mean(0)
    # The noise floor: the weakest harmonic, leaving out the first, which centring drives down.
    floor = float(white[m > 1].min())
    # Centred patches are scored one by one (the median of their shares): a neighbour, a star or a noise
    # peak in some windows then does not spread power over every order (a galaxy field's patches:
    # 2-fold 0.77 against 0.33 from the pooled power); a spectrum's windows are pooled.
    if centred:
        ex_each = np.clip(each - floor, 0.0, None)
        total_each = ex_each.sum(1)
        alive = total_each > 1e-9 * each.sum(1)
    excess = np.clip(white - floor, 0.0, None)
    score, contrast, trivial = {}, {}, set()
    for k in orders:
        sym = m % k == 0
        chance = float(sym.mean())                                          # the share noise would give
        if chance >= 1.0:                                                   # every harmonic analysed is k-fold
            score[k] = 1.0
            trivial.add(k)
        elif centred:
            share = np.where(alive, ex_each[:, sym].sum(1) / np.maximum(total_each, 1e-300), chance)
            score[k] = float((np.median(share) - chance) / (1.0 - chance))
        else:
            share = excess[sym].sum() / excess.sum() if excess.sum() > 1e-9 * white.sum() else chance
            score[k] = float((share - chance) / (1.0 - chance))
        contrast[k] = float(white[sym].mean() / floor) if floor > 0 else float("inf")
    ok = [k for k in orders if score[k] >= min_score and contrast[k] >= min_contrast]
    telling = [k for k in ok if k not in trivial]
    order = 1
    if telling:
        best = max(score[k] for k in telling)
        order = max(k for k in telling if score[k] >= agreement * best)
    elif ok:                                                                # a spectrum with structure: 2-fold
        order = max(ok)
    return SymmetryScores(order=order, score=score, contrast=contrast, harmonic_power=white)


def small_window_note(ps, give: str, wider: str = "") -> Optional[str]:
    """Why a symmetry estimate on the patch set ``ps`` (:class:`~affinevae.data.patches.PatchSet`) is not to
    be trusted, saying ``give`` (how to give the symmetry) and the window that would show it, followed by
    ``wider`` formatted with ``wide`` (that window, pixels), or None: its windows reach less than 3/4 of
    the objects' spacing (:func:`~affinevae.data.objects.neighbour_spacing`, pixels) from each centre, so
    the estimate sees single objects, and those objects lie as a lattice's atoms do
    (:func:`~affinevae.data.patches.scattered_objects`; for scattered objects, particles or galaxies, each
    object's own symmetry is the one that matters)."""
    from .data.patches import scattered_objects

    arrangement = ps.arrangement()  # the spacing and how lattice-like, measured once (at the sub-pixel positions)
    spacing = arrangement.get("spacing")  # none for frames of at most 4 objects: scattered, no note
    reach = symmetry_reach(ps.window)
    if spacing is None or reach >= 0.75 * spacing or scattered_objects(arrangement):
        return None
    wide = 2 * math.ceil(round(spacing, 1)) + 4  # reaches the neighbours one spacing away (8.003 px: 8)
    return (f"the {ps.window}-pixel windows reach {reach} px from each centre but the objects are {spacing:.1f} px "
            f"apart (their first neighbours' median distance), so the estimate sees single objects, not their "
            f"arrangement: {give}; windows of {wide} px would show it{wider.format(wide=wide)}")


def estimate_symmetry(patches: np.ndarray, centred: bool = True, **options) -> int:
    """The n of the objects' n-fold rotational symmetry (2, 3, 4 or 6; 1 if none) from their patches.

    Args:
        patches: (N, w, w) or (N, C, w, w) windows centred on the objects (as ``affinevae patches``
            cuts them); ``centred=False`` for sliding-window grids (see :func:`symmetry_scores`).
        **options: passed to :func:`symmetry_scores` (orders, smooth, thresholds, seed).

    Returns:
        int: the estimated order; e.g. 2 for a rectangular lattice, 4 square, 6 hexagonal.
    """
    order = symmetry_scores(patches, centred=centred, **options).order
    if centred and order == 1:  # lobed objects (a dumbbell, a trimer) are cut around a lobe, off their centre
        p = np.asarray(patches)
        most = options.get("max_patches", SYMMETRY_MAX_PATCHES)
        if len(p) > most:  # the subset symmetry_scores reads (its first draw): a micrograph's 10^5 patches are not moved
            p = p[np.sort(np.random.default_rng(options.get("seed", 0)).choice(len(p), most, replace=False))]
        offsets = mass_offsets(p)
        if offsets is not None and float(np.median(np.hypot(*offsets.T))) >= MASS_CENTRE_MIN_SHIFT:
            order = symmetry_scores(mass_centred(p, offsets), centred=True, **options).order
    return order


def symmetry_reach(window: int) -> int:
    """How far from a centred ``window`` x ``window`` patch's centre (pixels) :func:`symmetry_scores`
    reads it: the largest circle it samples. ``window``: an integer >= 3 pixels."""
    w = as_number(window)
    if w is None or w != int(w) or w < 3:
        raise AffineVAEError(f"symmetry_reach: window must be a whole number >= 3 pixels, got {window!r}")
    window = int(w)
    return int(min(window // 2, window - 1 - window // 2) - 1)


def active_latents(z: np.ndarray, rel: float = 0.05) -> np.ndarray:
    """Indices (K,) of the latents in use among the D columns of ``z`` (N, D) posterior means: those
    that vary across objects by at least ``rel`` times the most varying one's standard deviation
    (collapsed latents sit at ~0)."""
    sd = np.asarray(z, dtype=np.float64).std(0)
    return np.flatnonzero(sd >= rel * sd.max()) if sd.max() > 0 else np.arange(sd.size)


def check_cluster_count(n_clusters, n_objects: int, name: str = "clusters") -> None:
    """Raise :class:`AffineVAEError` unless ``n_clusters`` is an integer in 1..``n_objects``; ``name``
    starts the message (e.g. the command-line flag ``--clusters``)."""
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or not 1 <= n_clusters <= n_objects:
        raise AffineVAEError(f"{name} must be an integer in 1..{n_objects} (the number of objects), got {n_clusters!r}")


#: Clustering methods of :func:`cluster_latents`: name -> ``fit(z (N, D), K, seed) -> (N,) labels``.
CLUSTER_METHODS: Registry = Registry("cluster method")


@CLUSTER_METHODS.register("kmeans")
def _kmeans(z: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(z)


@CLUSTER_METHODS.register("gmm")
def _gmm(z: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A full-covariance Gaussian mixture."""
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(n_components=k, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(z).predict(z)


def cluster_latents(z: np.ndarray, n_clusters: int, method: str = "kmeans", seed: int = 0,
                    standardise: bool = True) -> np.ndarray:
    """Cluster objects by their content latents.

    Args:
        z: (N, D) latent means (finite, N >= 1). n_clusters: K >= 1 (at most N).
        method: a name of :data:`CLUSTER_METHODS`: 'kmeans' or 'gmm' (full-covariance Gaussian mixture).
        seed: random seed.
        standardise: cluster the active latents (:func:`active_latents`) scaled to unit variance,
            so a latent used with a small spread still counts; collapsed latents are left out
            rather than having their noise blown up.

    Returns:
        (N,) int64 labels in 0..K-1, numbered by decreasing cluster size (0 is the largest).
    """
    fit = CLUSTER_METHODS.get(method)  # an unknown name: one line, with a suggestion
    check_seed(seed)
    z = check_latents(z, "cluster_latents")
    check_cluster_count(n_clusters, len(z))
    if standardise:
        z = z[:, active_latents(z)]
        sd = z.std(0)
        z = (z - z.mean(0)) / np.where(sd > 0, sd, 1.0)
    lab = fit(z, int(n_clusters), seed)
    counts = np.bincount(lab, minlength=n_clusters)
    rank = np.empty(n_clusters, dtype=np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(n_clusters)
    return rank[lab]


#: Principal axes of the decoded patches kept by :func:`decoded_features`.
DECODED_COMPONENTS = 32
#: At most this many decoded patches are held at once to fit those axes (fewer when a patch has
#: more than 2**22 / 4096 = 1024 values: at most 2**22 values in all, at least 256 patches).
DECODED_FIT = 4096


def cluster_space(model, on: str = "auto") -> str:
    """What :func:`cluster_objects` clusters for ``model``: ``'images'`` or ``'latents'``.

    Args:
        model: a trained :class:`~affinevae.models.base.LatentModel`.
        on: 'images' (:func:`decoded_features`), 'latents' (the content latents, standardised) or
            'auto': 'images' for a model whose decoder needs nothing but the content latents (no
            classes, ``config.num_classes == 0``) and whose Gaussian likelihood trusts the patch
            centre most (``config.sigma_radius > 0``, what ``train`` chooses for a patch set:
            the decoded patches then tell the centre objects apart, not their neighbours); else
            'latents' (a class-conditional, joint or semi-supervised model decodes through a
            class; under a uniform likelihood the whole window counts alike, neighbours as much
            as the object in the middle).

    Raises:
        AffineVAEError: an unknown ``on``, or 'images' for a model with classes.
    """
    if on not in CLUSTER_SPACES:
        raise AffineVAEError(f"cluster on must be one of {', '.join(CLUSTER_SPACES)}, got {on!r}")
    classes = int(getattr(model.config, "num_classes", 0) or 0)
    if on == "images" and classes:
        raise AffineVAEError(f"clustering the decoded patches needs a model without classes; model "
                             f"'{model.family}' decodes through one of its {classes} classes: cluster its latents")
    if on == "auto":
        centred = getattr(model.config, "likelihood", None) == "gaussian" and \
            float(getattr(model.config, "sigma_radius", 0.0) or 0.0) > 0
        return "images" if centred and not classes else "latents"
    return on


def decoded_features(model, z: np.ndarray, batch_size: int = 256, n_components: int = DECODED_COMPONENTS,
                     seed: int = 0) -> np.ndarray:
    """The objects as their model describes them: content latents decoded in the canonical pose,
    in units of the likelihood's pixel standard deviation, on their leading principal axes.

    Each row of ``z`` is decoded into its mean image (C, H, W) at the identity pose (no rotation,
    shift or scale: the object itself, whatever its pose in the image). Under a Gaussian
    likelihood every pixel is divided by its standard deviation (``sigma``, times the centred
    window of ``sigma_radius`` when the model has one), so the Euclidean distance between two
    rows is the Mahalanobis distance the likelihood measures image differences with: a change at
    the centre of a patch, where a patch-set model trusts the pixels most, outweighs the same
    change at its edges, where the neighbouring objects are; and a latent counts by how much it
    changes the image, not by its spread over the objects. Other likelihoods: pixels unweighted.
    The images are centred and projected on their ``n_components`` leading principal axes,
    fitted on at most :data:`DECODED_FIT` of them (drawn with ``seed``): distances are kept up to
    the variance left out, and the (N, C*H*W) images are never held at once.

    Args:
        model: a trained model without classes (``config.num_classes == 0``; see :func:`cluster_space`).
        z: (N, D) content latent means (e.g. ``ObjectEncoding.z_mean``), N >= 1.
        batch_size: latents decoded at a time (>= 1).
        n_components: principal axes kept (>= 1; at most C*H*W and the number of patches fitted).
        seed: draws the patches the axes are fitted on when N exceeds that number.

    Returns:
        (N, K) float64, K = min(n_components, C*H*W, patches fitted), in pixel standard deviations.

    Raises:
        AffineVAEError: latents that are not (N, D) finite numbers, D other than the model's
            ``latent_dim``, a model with classes, or a ``batch_size`` / ``n_components`` below 1.
    """
    import torch

    from .data.inputs import check_int

    from .models.base import check_model

    check_model(model, "decoded_features: model")
    z = check_latents(z, "decoded_features")
    batch_size = check_int("batch_size", batch_size, 1)
    n_components = check_int("n_components", n_components, 1)
    cluster_space(model, "images")
    if z.shape[1] != model.config.latent_dim:
        raise AffineVAEError(f"decoded_features: latents have {z.shape[1]} columns, model '{model.family}' has "
                             f"latent_dim {model.config.latent_dim}")
    n, size = len(z), int(np.prod(model.config.image_shape))
    gaussian = model.config.likelihood == "gaussian"

    def decode(rows: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            inv = torch.exp(-model.pixel_log_sigma()) if gaussian else None  # scalar or (H, W)
            for i in range(0, len(rows), batch_size):
                x = model.decode(torch.as_tensor(rows[i:i + batch_size], dtype=torch.float32, device=model.device))
                out.append((x * inv if inv is not None else x).reshape(len(x), -1).double().cpu().numpy())
        return np.concatenate(out)

    fit = min(n, max(256, min(DECODED_FIT, 2 ** 22 // size)))
    pick = np.sort(np.random.default_rng(seed).choice(n, fit, replace=False)) if fit < n else np.arange(n)
    sample = decode(z[pick])
    mean = sample.mean(0)
    axes = np.linalg.svd(sample - mean, full_matrices=False)[2][:n_components]   # (K, C*H*W)
    if fit == n:
        return (sample - mean) @ axes.T
    return np.concatenate([(decode(z[i:i + batch_size]) - mean) @ axes.T for i in range(0, n, batch_size)])


def cluster_objects(model, z: np.ndarray, n_clusters: int, method: str = "kmeans", seed: int = 0,
                    on: str = "auto", batch_size: int = 256) -> tuple[np.ndarray, str]:
    """Cluster objects by their decoded patches (:func:`decoded_features`) or their content latents.

    Args:
        model: the trained model that encoded them. z: (N, D) content latent means.
        n_clusters, method, seed: as :func:`cluster_latents`.
        on: 'auto', 'images' or 'latents' (:func:`cluster_space`). 'images' clusters the
            decoded patches as they are (they are in the likelihood's units), 'latents' the
            standardised active latents (:func:`cluster_latents`).
        batch_size: latents decoded at a time.

    Returns:
        ``(labels, space)``: (N,) int64 labels in 0..K-1 numbered by decreasing cluster size, and
        the space clustered ('images' or 'latents').
    """
    space = cluster_space(model, on)
    check_cluster_count(n_clusters, len(check_latents(z, "cluster_objects")))
    if space == "images":
        return cluster_latents(decoded_features(model, z, batch_size, seed=seed), n_clusters, method, seed,
                               standardise=False), space
    return cluster_latents(z, n_clusters, method, seed), space


def clustering_accuracy(labels: np.ndarray, truth: np.ndarray) -> float:
    """Accuracy of cluster ``labels`` against ``truth`` under the best one-to-one matching (Hungarian).

    ``labels``, ``truth``: non-negative integer arrays of the same shape, e.g. (N,) cluster and
    true class of each object (the two label sets need not have the same number of values, nor be
    numbered 0..K-1: each is renumbered by its distinct values).
    Returns the fraction in [0, 1] of objects whose matched cluster is their class.
    """
    from scipy.optimize import linear_sum_assignment

    lf = real_array(labels, "clustering_accuracy: labels", what="integer labels")
    tf = real_array(truth, "clustering_accuracy: truth", what="integer labels")
    for name, v in (("labels", lf), ("truth", tf)):
        if (v != np.rint(v)).any():
            raise AffineVAEError(f"clustering_accuracy: {name} must be whole numbers, got {v[v != np.rint(v)].flat[0]:g}")
    labels, truth = lf.astype(np.int64), tf.astype(np.int64)
    if labels.shape != truth.shape or labels.size == 0:
        raise AffineVAEError(f"clustering_accuracy needs two equal-length label arrays, got {labels.shape} and {truth.shape}")
    if labels.min() < 0 or truth.min() < 0:  # e.g. -1 for 'not clustered': leave those objects out first
        raise AffineVAEError("clustering_accuracy needs non-negative labels (leave out the objects marked -1 first), "
                             f"got minimum {int(min(labels.min(), truth.min()))}")
    labels, truth = np.unique(labels, return_inverse=True)[1], np.unique(truth, return_inverse=True)[1]
    k = int(max(labels.max(), truth.max())) + 1  # at most N: distinct values, however large they were
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (labels.ravel(), truth.ravel()), 1)
    r, c = linear_sum_assignment(-m)
    return float(m[r, c].sum() / labels.size)


# ============================================================================ figure helpers
def _gray(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = img.mean(0)
    if img.ndim != 2:
        raise AffineVAEError(f"background image must be (H, W) or (C, H, W), got shape {img.shape}")
    return img


def _check_points(centers: np.ndarray, n: int, what: str) -> np.ndarray:
    c = np.asarray(centers, dtype=np.float64)
    if c.shape != (n, 2):
        raise AffineVAEError(f"{what}: centers must be ({n}, 2) (row, col) to match {n} values, got {c.shape}")
    return c


def _marker_size(shape: Sequence[int], n: int, axes_inches: float) -> float:
    """Scatter marker area (points^2) that roughly fills the spacing between n points in an image."""
    h, w = shape
    spacing_px = math.sqrt(h * w / max(n, 1))
    pts_per_px = axes_inches * 72.0 / max(h, w)
    return float(np.clip((0.8 * spacing_px * pts_per_px) ** 2, 0.3, 150.0))


def _image_axes(fig: Figure, ax, image: Optional[np.ndarray], shape: Sequence[int], title: str) -> None:
    if image is not None:
        img = _gray(image)
        lo, hi = np.percentile(img, [1, 99.5]) if img.size else (0, 1)
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="antialiased", alpha=0.6)
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(shape[0] - 0.5, -0.5)
    ax.set_xlabel("column (pixels)")
    ax.set_ylabel("row (pixels)")
    ax.set_title(title)
    ax.set_aspect("equal")


def _shape_of(image: Optional[np.ndarray], centers: np.ndarray) -> tuple[int, int]:
    if image is not None:
        g = np.asarray(image)
        return int(g.shape[-2]), int(g.shape[-1])
    if len(centers) == 0:
        return (1, 1)
    return int(centers[:, 0].max()) + 1, int(centers[:, 1].max()) + 1


def _add_angle_wheel(fig: Figure, rect: Sequence[float], symmetry: int, cmap: str = ANGLE_CMAP) -> None:
    """A colour wheel: direction theta (counter-clockwise from the +column axis) in its folded colour."""
    wax = fig.add_axes(rect, projection="polar")
    period = 360.0 / symmetry
    th = np.linspace(0, 2 * math.pi, 361)
    r = np.array([0.55, 1.0])
    T, R = np.meshgrid(th, r)
    C = np.mod(np.degrees(T[:-1, :-1] + np.diff(th)[0] / 2), period)
    wax.pcolormesh(T, R, C, cmap=cmap, vmin=0, vmax=period, shading="flat")
    wax.set_yticks([])
    wax.set_ylim(0, 1)
    wax.set_xticks(np.radians([0, 90, 180, 270]))
    wax.set_xticklabels(["0°", "90°", "180°", "270°"], fontsize=7)
    wax.tick_params(pad=0)
    wax.grid(False)
    wax.spines["polar"].set_visible(False)
    wax.set_title(f"angle (deg){'' if symmetry == 1 else f', mod {period:g}'}", fontsize=8, pad=10)


# ============================================================================ scatter maps
def angle_map(image: Optional[np.ndarray], centers: np.ndarray, angle: np.ndarray, symmetry: int = 1,
              title: str = "Object orientation") -> tuple[np.ndarray, Figure]:
    """Objects over the image coloured by their rotation angle (cyclic colormap + colour wheel).

    Args:
        image: (H, W) or (C, H, W) background (None for none).
        centers: (N, 2) (row, col) pixels. angle: (N,) radians, counter-clockwise on screen.
        symmetry: n of the objects' n-fold rotational symmetry (angles folded mod 360/n degrees).

    Returns:
        ``(degrees, fig)``: (N,) angles in **degrees** (for display) folded into [0, 360 / symmetry),
        and the figure. For radians use ``fold_angle(angle, symmetry)`` (or ``np.radians(degrees)``).
    """
    n = check_symmetry(symmetry)
    ang = np.asarray(angle, dtype=np.float64).reshape(-1)
    c = _check_points(centers, len(ang), "angle_map")
    deg = np.degrees(fold_angle(ang, n))
    shape = _shape_of(image, c)
    fig = Figure(figsize=(8.2, 6.6), dpi=130)
    ax = fig.add_axes([0.08, 0.08, 0.68, 0.84])
    _image_axes(fig, ax, image, shape, title)
    ax.scatter(c[:, 1], c[:, 0], c=deg, cmap=ANGLE_CMAP, vmin=0, vmax=360.0 / n,
               s=_marker_size(shape, len(c), 5.6), linewidths=0)
    _add_angle_wheel(fig, [0.79, 0.55, 0.18, 0.3], n)
    finite = ang[np.isfinite(ang)]
    mean = f"{round(math.degrees(circular_mean(finite, n)), 1) % (360.0 / n):.1f}°" if len(finite) else "-"  # 179.96: 0.0
    fig.text(0.88, 0.45, f"{len(c)} objects\nmean {mean}", ha="center", va="top", fontsize=8)
    return deg, fig


def latent_maps(image: Optional[np.ndarray], centers: np.ndarray, z: np.ndarray,
                dims: Optional[Sequence[int]] = None, max_panels: int = 6,
                title: str = "Content latents") -> tuple[np.ndarray, Figure]:
    """One panel per content latent: objects over the image coloured by that latent's value.

    Args:
        image: (H, W) or (C, H, W) background or None. centers: (N, 2) (row, col) pixels.
        z: (N, D) finite latent means. dims: latents to show (default the ``max_panels`` with the largest variance).

    Returns:
        ``(values, fig)``: (N, len(dims)) plotted latent values, and the figure.
    """
    z = check_latents(z, "latent_maps", min_rows=0)
    c = _check_points(centers, len(z), "latent_maps")
    if dims is None:
        dims = sorted(np.argsort(-z.var(0))[:max_panels].tolist()) if len(z) else list(range(min(z.shape[1], max_panels)))
    dims = [int(d) for d in dims]
    if not dims or any(not 0 <= d < z.shape[1] for d in dims):
        raise AffineVAEError(f"latent dims must lie in 0..{z.shape[1] - 1}, got {dims}")
    shape = _shape_of(image, c)
    k = len(dims)
    cols = min(3, k)
    rows = math.ceil(k / cols)
    fig = Figure(figsize=(4.4 * cols, 3.9 * rows + 0.4), dpi=110, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, d in enumerate(dims):
        ax = axes[i // cols][i % cols]
        _image_axes(fig, ax, image, shape, f"z{d}")
        v = z[:, d]
        lo, hi = (np.percentile(v, [1, 99]) if len(v) else (0.0, 1.0))
        sc = ax.scatter(c[:, 1], c[:, 0], c=v, cmap=LATENT_CMAP, vmin=lo, vmax=hi if hi > lo else lo + 1e-6,
                        s=_marker_size(shape, len(c), 3.0), linewidths=0)
        fig.colorbar(sc, ax=ax, shrink=0.8, label=f"z{d} (posterior mean)")
    for j in range(k, rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    fig.suptitle(f"{title} ({len(c)} objects)")
    return z[:, dims], fig


def class_map(image: Optional[np.ndarray], centers: np.ndarray, labels: np.ndarray,
              title: str = "Object classes (clusters of the content latents)") -> tuple[np.ndarray, Figure]:
    """Objects over the image coloured by class (cluster) label, with a legend of class sizes.

    Args:
        image: background or None. centers: (N, 2) (row, col) pixels. labels: (N,) ints >= 0.

    Returns:
        ``(counts, fig)``: (K,) objects per class, and the figure.
    """
    lf = real_array(labels, "class_map: labels", what="integer class labels").reshape(-1)
    if len(lf) and ((lf != np.rint(lf)).any() or lf.min() < 0):
        raise AffineVAEError("class_map: labels must be whole numbers >= 0 (leave out the objects marked -1, not "
                             f"clustered, first), got {lf[(lf != np.rint(lf)) | (lf < 0)][0]:g}")
    lab = lf.astype(np.int64)
    c = _check_points(centers, len(lab), "class_map")
    k = int(lab.max()) + 1 if len(lab) else 0
    counts = np.bincount(lab, minlength=k) if len(lab) else np.zeros(0, np.int64)
    shape = _shape_of(image, c)
    fig = Figure(figsize=(8.2, 6.6), dpi=130)
    ax = fig.add_axes([0.08, 0.08, 0.68, 0.84])
    _image_axes(fig, ax, image, shape, title)
    colors = matplotlib.colormaps[CLASS_CMAP].colors
    s = _marker_size(shape, len(c), 5.6)
    for j in range(k):
        m = lab == j
        ax.scatter(c[m, 1], c[m, 0], color=colors[j % len(colors)], s=s, linewidths=0,
                   label=f"class {j}: {counts[j]} ({100.0 * counts[j] / max(len(lab), 1):.1f}%)")
    if k:
        fig.legend(loc="upper left", bbox_to_anchor=(0.77, 0.92), fontsize=8, markerscale=max(1.0, 6 / math.sqrt(s)),
                   title="class: objects", title_fontsize=8, frameon=False)
    return counts, fig


# ============================================================================ grid maps
def _grid_extent(grid_shape: Sequence[int], window: int, stride: int) -> list[float]:
    gh, gw = grid_shape
    half = window // 2
    return [half - stride / 2, half + (gw - 1) * stride + stride / 2,
            half + (gh - 1) * stride + stride / 2, half - stride / 2]


def _check_grid_step(window, stride, where: str) -> None:
    """The sliding-window grid's ``window`` and ``stride`` (pixels): integers >= 1."""
    from .data.inputs import check_int

    check_int(f"{where}: window", window, 1)
    check_int(f"{where}: stride", stride, 1)


def grid_maps(values: np.ndarray, grid_shape: Sequence[int], window: int, stride: int,
              names: Optional[Sequence[str]] = None, image: Optional[np.ndarray] = None,
              title: str = "Content latents over the field of view",
              image_shape: Optional[Sequence[int]] = None) -> tuple[np.ndarray, Figure]:
    """Images of per-window values laid out on the sliding-window grid of one frame.

    Args:
        values: (gh * gw,) or (gh * gw, D) values, grid row-major. grid_shape: (gh, gw).
        window, stride: patch size and grid step in pixels (to place the maps in image pixels).
        names: D panel names (default z0, z1, ...). image: optional (H, W) frame drawn first for context.
        image_shape: (H, W) of the frame, to draw the maps on the frame's full extent.

    Returns:
        ``(maps, fig)``: (D, gh, gw) images, and the figure.
    """
    v = real_array(values, "grid_maps: values", finite=False, what="per-window values")
    v = v[:, None] if v.ndim == 1 else v
    sides = [as_number(g) for g in grid_shape]
    if len(sides) != 2 or any(g is None or g != int(g) or g < 1 for g in sides):
        raise AffineVAEError(f"grid_maps: grid_shape must be two whole numbers >= 1 (rows, columns), got {grid_shape!r}")
    gh, gw = (int(grid_shape[0]), int(grid_shape[1]))
    _check_grid_step(window, stride, "grid_maps")
    if v.ndim != 2 or len(v) != gh * gw:
        raise AffineVAEError(f"grid_maps: {len(v)} values do not fill a {gh}x{gw} grid")
    maps = v.T.reshape(-1, gh, gw)
    names = list(names) if names is not None else [f"z{i}" for i in range(len(maps))]
    extent = _grid_extent((gh, gw), window, stride)
    k = len(maps) + (image is not None)
    cols = min(3, k)
    rows = math.ceil(k / cols)
    fig = Figure(figsize=(4.4 * cols, 3.9 * rows + 0.4), dpi=110, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    panels = ([("image", None)] if image is not None else []) + list(zip(names, maps))
    for i, (name, m) in enumerate(panels):
        ax = axes[i // cols][i % cols]
        if m is None:
            g = _gray(image)
            ax.imshow(g, cmap="gray")
            ax.set_title("image")
        else:
            lo, hi = np.nanpercentile(m, [1, 99]) if np.isfinite(m).any() else (0.0, 1.0)
            im = ax.imshow(m, cmap=LATENT_CMAP, extent=extent, vmin=lo, vmax=hi if hi > lo else lo + 1e-6,
                           interpolation="nearest")
            fig.colorbar(im, ax=ax, shrink=0.8, label=name)
            ax.set_title(name)
            if image_shape is not None:
                ax.set_xlim(-0.5, image_shape[1] - 0.5)
                ax.set_ylim(image_shape[0] - 0.5, -0.5)
        ax.set_xlabel("column (pixels)")
        ax.set_ylabel("row (pixels)")
    for j in range(k, rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    fig.suptitle(f"{title} ({gh}x{gw} windows of {window} px, stride {stride} px)")
    return maps, fig


def grid_angle_map(angle: np.ndarray, grid_shape: Sequence[int], window: int, stride: int, symmetry: int = 1,
                   image: Optional[np.ndarray] = None,
                   title: str = "Orientation over the field of view",
                   image_shape: Optional[Sequence[int]] = None) -> tuple[np.ndarray, Figure]:
    """Image of the per-window angle on the sliding-window grid (cyclic colormap + colour wheel).

    Args:
        angle: (gh * gw,) radians (counter-clockwise on screen), grid row-major. grid_shape: (gh, gw).
        window, stride: patch size and grid step in pixels. symmetry: n of the n-fold rotational
            symmetry (angles folded mod 360/n degrees). image: optional (H, W) or (C, H, W) frame.
        image_shape: (H, W) of the frame in pixels when ``image`` is a downsampled copy of it (it is then
            stretched over the frame, under the windows; default: the image's own shape).

    Returns:
        ``(degrees, fig)``: (gh, gw) angles in **degrees** (for display) folded into
        [0, 360 / symmetry), and the figure. For radians use
        ``fold_angle(angle, symmetry).reshape(gh, gw)`` (or ``np.radians(degrees)``).
    """
    n = check_symmetry(symmetry)
    gh, gw = int(grid_shape[0]), int(grid_shape[1])
    _check_grid_step(window, stride, "grid_angle_map")
    a = np.asarray(angle, dtype=np.float64).reshape(-1)
    if len(a) != gh * gw:
        raise AffineVAEError(f"grid_angle_map: {len(a)} angles do not fill a {gh}x{gw} grid")
    deg = np.degrees(fold_angle(a, n)).reshape(gh, gw)
    fig = Figure(figsize=(8.2, 6.6), dpi=130)
    ax = fig.add_axes([0.08, 0.08, 0.68, 0.84])
    extent = _grid_extent((gh, gw), window, stride)
    if image is not None:
        g = _gray(image)
        h, w = (g.shape if image_shape is None else (int(image_shape[0]), int(image_shape[1])))
        ax.imshow(g, cmap="gray", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    ax.imshow(deg, cmap=ANGLE_CMAP, vmin=0, vmax=360.0 / n, extent=extent, interpolation="nearest",
              alpha=0.85 if image is not None else 1.0)
    if image is not None:
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
    ax.set_title(title)
    ax.set_xlabel("column (pixels)")
    ax.set_ylabel("row (pixels)")
    _add_angle_wheel(fig, [0.79, 0.55, 0.18, 0.3], n)
    return deg, fig


# ============================================================================ everything
def physical_arrays(arrays: dict, pixel_size) -> dict[str, np.ndarray]:
    """The physical-unit arrays ``maps.npz`` adds when the pixel size is known.

    Args:
        arrays: :meth:`~affinevae.encoding.ObjectEncoding.arrays` (``positions``, ``centers``,
            ``shift`` (right, down) in half patch widths, ``window``).
        pixel_size: a :class:`~affinevae.units.PixelSize`.

    Returns:
        ``pixel_size`` () float64 in ``unit``, ``unit`` () string, ``positions_phys`` and
        ``centers_phys`` (N, 2) (row, col) and ``shift_phys`` (N, 2) (right, down), in ``unit``
        (NaN shifts stay NaN); ``peak_positions_phys`` (N, 2) when ``arrays`` has ``peak_positions``.
    """
    from .units import PixelSize

    if not isinstance(pixel_size, PixelSize):
        raise AffineVAEError(f"physical_arrays: pixel_size must be a PixelSize (affinevae.units.parse_pixel_size("
                             f"'0.05nm')), got {pixel_size!r}")
    ps = float(pixel_size.value)
    half = float(arrays["window"]) / 2.0
    out = {"pixel_size": np.float64(ps), "unit": np.asarray(pixel_size.unit),
           "positions_phys": np.asarray(arrays["positions"], np.float64) * ps,
           "centers_phys": np.asarray(arrays["centers"], np.float64) * ps,
           "shift_phys": np.asarray(arrays["shift"], np.float64) * half * ps}
    if "peak_positions" in arrays:
        out["peak_positions_phys"] = np.asarray(arrays["peak_positions"], np.float64) * ps
    return out


def write_maps(enc, out_dir: str | Path, image: Optional[np.ndarray] = None, n_clusters: Optional[int] = None,
               frame: int = 0, symmetry: int = 1, cluster_method: str = "kmeans", seed: int = 0,
               pixel_size=None, source: Optional[dict] = None, model=None, cluster_on: str = "auto",
               batch_size: int = 256, lattice: Optional[LatticeOrientation] = None) -> dict:
    """Cluster, save and draw the maps of an :class:`~affinevae.encoding.ObjectEncoding`.

    Writes to ``out_dir`` (created): ``maps.npz`` (``z_mean``, ``z_std`` (N, D); ``angle`` (N,) radians,
    NaN without a rotation latent; ``shift`` (N, 2) half patch widths; ``positions`` (N, 2) refined
    (row, col) pixels; ``peak_positions`` (N, 2) the patch set's sub-pixel positions when it has them; ``cluster`` (N,) labels, -1 without clustering; ``centers`` (N, 2) (row, col)
    pixels; ``frames`` (N,); ``symmetry`` () the n the angles were folded with; ``grid_shape`` in grid
    mode; ``class`` (N,) the classes a joint or semi-supervised model inferred), and PNGs for frame
    ``frame``: ``latents.png``, ``angle.png`` (models with a rotation) and ``clusters.png`` (with
    ``n_clusters``, or, when it is None, coloured by the classes a joint or semi-supervised model
    inferred: ``cluster`` is then those classes);
    in grid mode ``grid_latents.png``, ``grid_angle.png`` and ``grid_clusters.png`` as images. With
    ``lattice`` also ``lattice_angle`` (N,) radians, ``lattice_strength`` (N,) and ``lattice_fold`` () in
    ``maps.npz``, and ``grid_lattice_angle.png`` (``lattice_angle.png`` for objects).

    Args:
        enc: per-object results. out_dir: output folder. image: frame ``frame`` as (H, W) or (C, H, W)
        (the background; None for none). n_clusters: K for clustering the content latents (None: skip).
        symmetry: n-fold symmetry (1..12) for folding angles, e.g. from :func:`estimate_symmetry` on
        the patches; checked before anything is written. cluster_method: 'kmeans' or 'gmm'.
        ``image`` may be a downsampled copy of the frame (e.g. read with a step for a huge frame):
        it is then stretched over the frame's ``enc.image_shape``.
        pixel_size: the frame's :class:`~affinevae.units.PixelSize` (None: unknown): ``maps.npz``
        then also holds :func:`physical_arrays` and the scatter maps get a scale bar.
        source: where the image is, saved as ``source_*`` strings/ints so that viewers (the napari
        reader) can show the maps over it: ``{"image": path, "key": name or "", "level": int or -1}``.
        model: the trained model that encoded ``enc``: ``n_clusters`` then clusters what
        :func:`cluster_objects` chooses by ``cluster_on`` ('auto', 'images': the decoded patches,
        'latents'), decoding ``batch_size`` latents at a time; None: the standardised content latents
        ('auto' and 'latents' only: 'images' needs the model).
        lattice: the windows' lattice angles from their Fourier peaks (:func:`lattice_orientation` of
        the same patches, in their order), or None.

    Returns:
        dict: ``cluster`` (N,) labels, ``counts`` (K,) objects per cluster (or None), ``clustered``
        (the space clustered: 'images', 'latents', 'model' for a model's own classes, or None) and
        ``files`` (name -> path of everything written).
    """
    symmetry = check_symmetry(symmetry)
    from .encoding import ObjectEncoding

    if not isinstance(enc, ObjectEncoding):
        raise AffineVAEError(f"write_maps: enc must be an ObjectEncoding (encode_patchset, stream_encode), got "
                             f"{type(enc).__name__}")
    if image is not None:  # checked before the directory is made
        _gray(image)
    n = len(enc)
    if n == 0:
        raise AffineVAEError("no objects to map")
    if lattice is not None and np.shape(lattice.angle) != (n,):
        raise AffineVAEError(f"write_maps: {np.shape(lattice.angle)[0] if np.ndim(lattice.angle) else 0} lattice "
                             f"angles for {n} objects")
    sel = enc.frames == frame
    if not sel.any():
        raise AffineVAEError(f"frame {frame}: no objects there (frames with objects: "
                             f"{', '.join(map(str, np.unique(enc.frames)[:5]))}...)")
    cells = stride = None
    if enc.grid_shape is not None:  # where each window of the frame lies on its grid (checked before anything is written)
        cells, stride = grid_cells(enc.centers[sel], enc.grid_shape, enc.window, enc.image_shape)
    if n_clusters is not None:  # checked before the directory is made
        check_cluster_count(n_clusters, len(enc.z_mean))
        if model is None:
            if cluster_on not in CLUSTER_SPACES:
                raise AffineVAEError(f"cluster on must be one of {', '.join(CLUSTER_SPACES)}, got {cluster_on!r}")
            if cluster_on == "images":
                raise AffineVAEError("write_maps: clustering the decoded patches (cluster_on='images') needs the "
                                     "model (model=)")
        elif cluster_space(model, cluster_on) == "images" and enc.z_mean.shape[1] != model.config.latent_dim:
            raise AffineVAEError(f"write_maps: the objects have {enc.z_mean.shape[1]} content latents, model "
                                 f"'{model.family}' has latent_dim {model.config.latent_dim}")
    out = make_directory(out_dir)
    cluster = np.full(n, -1, dtype=np.int64)
    space = None
    if n_clusters is not None and model is not None:
        cluster, space = cluster_objects(model, enc.z_mean, n_clusters, cluster_method, seed, on=cluster_on,
                                         batch_size=batch_size)
    elif n_clusters is not None:
        cluster, space = cluster_latents(enc.z_mean, n_clusters, cluster_method, seed), "latents"
    elif enc.model_class is not None:  # a joint / semi-supervised model's own classes
        cluster, n_clusters, space = enc.model_class, int(enc.model_class.max()) + 1, "model"
    what = {"images": "clusters of the decoded patches", "model": "inferred by the model"}.get(
        space, "clusters of the content latents")
    arrays = enc.arrays()
    arrays["cluster"] = cluster
    arrays["symmetry"] = np.int64(symmetry)
    if lattice is not None:
        arrays.update(lattice_angle=np.asarray(lattice.angle, np.float64),
                      lattice_strength=np.asarray(lattice.strength, np.float64), lattice_fold=np.int64(lattice.fold))
    if pixel_size is not None:
        arrays.update(physical_arrays(arrays, pixel_size))
    if source is not None:
        arrays.update(source_image=np.asarray(str(source.get("image", ""))), source_key=np.asarray(source.get("key") or ""),
                      source_level=np.int64(-1 if source.get("level") is None else source["level"]),
                      source_frame=np.int64(frame))
    files: dict[str, Path] = {}
    from .scalebar import add_scale_bar, draw_background

    full = tuple(int(v) for v in enc.image_shape)
    small = image is not None and full[0] > 0 and tuple(np.shape(image)[-2:]) != full
    scatter_bg = None if small else image

    def finish(fig: Figure, background: bool = True) -> Figure:
        """The map's panels (drawn on the frame's pixels) with the frame under them where it was downsampled
        (``background``; a grid map draws its own) and the scale bar."""
        for ax in fig.axes:
            if ax.get_xlabel() != "column (pixels)":  # colour bars, the angle wheel
                continue
            if small and background:
                draw_background(ax, image, full)
            if pixel_size is not None and full[0] > 0:
                add_scale_bar(ax, pixel_size, full)
        return fig

    def w(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    files["maps"] = atomic_write(out / "maps.npz", w)

    c = enc.centers[sel]
    suffix = f" — frame {frame}" if enc.n_frames > 1 else ""

    def save(name: str, fig: Figure) -> None:
        files[name] = atomic_write(out / f"{name}.png", lambda tmp: fig.savefig(tmp, format="png"))

    counts = np.bincount(cluster, minlength=n_clusters) if n_clusters is not None else None
    if enc.grid_shape is not None:
        gh, gw = enc.grid_shape

        def on_grid(values: np.ndarray) -> np.ndarray:
            """The frame's per-window values on the whole (gh * gw) grid, NaN where a window was left out."""
            v = np.asarray(values, dtype=np.float64)
            out = np.full((gh * gw, *v.shape[1:]), np.nan)
            out[cells] = v
            return out

        z = enc.z_mean[sel]
        dims = sorted(np.argsort(-z.var(0))[:6].tolist())
        save("grid_latents", finish(grid_maps(on_grid(z[:, dims]), (gh, gw), enc.window, stride,
                                              [f"z{d}" for d in dims], title="Content latents" + suffix,
                                              image_shape=enc.image_shape)[1], background=False))
        if enc.has_angle:
            save("grid_angle", finish(grid_angle_map(on_grid(enc.angle[sel]), (gh, gw), enc.window, stride, symmetry,
                                                     image, title="Orientation" + suffix,
                                                     image_shape=full if full[0] > 0 else None)[1], background=False))
        if lattice is not None:
            save("grid_lattice_angle", finish(grid_angle_map(on_grid(lattice.angle[sel]), (gh, gw), enc.window, stride,
                                                             lattice.fold, image,
                                                             title="Lattice orientation (Fourier peaks)" + suffix,
                                                             image_shape=full if full[0] > 0 else None)[1],
                                              background=False))
        if n_clusters is not None:
            save("grid_clusters", finish(_grid_class_figure(on_grid(cluster[sel]), (gh, gw), enc.window, stride,
                                                            n_clusters, counts, f"Classes ({what})" + suffix,
                                                            enc.image_shape), background=False))
    else:
        save("latents", finish(latent_maps(scatter_bg, c, enc.z_mean[sel], title="Content latents" + suffix)[1]))
        if enc.has_angle:
            save("angle", finish(angle_map(scatter_bg, c, enc.angle[sel], symmetry,
                                           title="Object orientation" + suffix)[1]))
        if lattice is not None:
            save("lattice_angle", finish(angle_map(scatter_bg, c, lattice.angle[sel], lattice.fold,
                                                   title="Lattice orientation (Fourier peaks)" + suffix)[1]))
        if n_clusters is not None:
            save("clusters", finish(class_map(scatter_bg, c, cluster[sel],
                                              title=f"Object classes ({what})" + suffix)[1]))
    return {"cluster": cluster, "counts": counts, "clustered": space, "files": files}


def grid_cells(centers: np.ndarray, grid_shape: Sequence[int], window: int,
               image_shape: Sequence[int]) -> tuple[np.ndarray, int]:
    """Where the windows of one frame lie on its sliding-window grid (:func:`~affinevae.data.patches.grid_centers`).

    Args:
        centers: (M, 2) int (row, col) pixel centres of the frame's windows, M <= gh * gw (windows may have been
            left out, e.g. for masked pixels). grid_shape: (gh, gw). window: patch size. image_shape: (H, W).

    Returns:
        ``(cells, stride)``: (M,) int64 row-major index of each window on the grid, and the grid step in pixels.

    Raises:
        AffineVAEError: centres that lie on no grid of that shape (a patch set edited by hand).
    """
    from .data.patches import grid_centers

    gh, gw = int(grid_shape[0]), int(grid_shape[1])
    c = np.asarray(centers, dtype=np.int64).reshape(-1, 2)
    steps = [np.diff(np.unique(c[:, k])) for k in (0, 1)]
    steps = np.concatenate([d[d > 0] for d in steps])
    strides = [int(steps.min())] if len(steps) else range(1, max(1, int(max(image_shape))) + 1)
    for stride in strides:  # one window alone: the step that gives this grid shape
        try:
            full, shape = grid_centers(image_shape, window, stride)
        except AffineVAEError:
            continue
        if tuple(shape) != (gh, gw):
            continue
        grid_rows, grid_cols = full[::gw, 0], full[:gw, 1]  # the grid's row and column centres, ascending
        i = np.minimum(np.searchsorted(grid_rows, c[:, 0]), gh - 1)
        j = np.minimum(np.searchsorted(grid_cols, c[:, 1]), gw - 1)
        cells = i * gw + j
        if (np.array_equal(grid_rows[i], c[:, 0]) and np.array_equal(grid_cols[j], c[:, 1])
                and len(np.unique(cells)) == len(cells)):
            return cells.astype(np.int64), int(stride)
    raise AffineVAEError(f"grid mode: the frame's {len(c)} window centres lie on no {gh}x{gw} grid of {window}-pixel "
                         f"windows over {image_shape[0]}x{image_shape[1]} pixels")


def _grid_class_figure(labels: np.ndarray, grid_shape, window: int, stride: int, k: int, counts, title: str,
                       image_shape: Optional[Sequence[int]] = None) -> Figure:
    gh, gw = grid_shape
    colors = matplotlib.colormaps[CLASS_CMAP].colors
    cmap = ListedColormap([colors[j % len(colors)] for j in range(k)])
    fig = Figure(figsize=(7.5, 6.2), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(labels.reshape(gh, gw), cmap=cmap, norm=BoundaryNorm(np.arange(-0.5, k + 0.5), k),
                   extent=_grid_extent(grid_shape, window, stride), interpolation="nearest")
    cb = fig.colorbar(im, ax=ax, ticks=np.arange(k), shrink=0.8)
    cb.ax.set_yticklabels([f"class {j} ({counts[j]})" for j in range(k)])
    if image_shape is not None and image_shape[0] > 0:
        ax.set_xlim(-0.5, image_shape[1] - 0.5)
        ax.set_ylim(image_shape[0] - 0.5, -0.5)
    ax.set_title(title)
    ax.set_xlabel("column (pixels)")
    ax.set_ylabel("row (pixels)")
    return fig


__all__ = ["fold_angle", "circular_mean", "angle_difference", "check_symmetry", "MAX_SYMMETRY", "SYMMETRY_ORDERS",
           "SymmetryScores", "SYMMETRY_MAX_PATCHES", "symmetry_scores", "LatticeOrientation", "lattice_orientation", "LATTICE_PAD", "LATTICE_RING", "estimate_symmetry", "symmetry_reach", "neighbour_spacing", "active_latents", "check_cluster_count", "cluster_latents",
           "CLUSTER_SPACES", "MASS_CENTRE_REACH", "MASS_CENTRE_MIN_SHIFT", "mass_offsets", "mass_centred", "DECODED_COMPONENTS", "DECODED_FIT", "cluster_space", "decoded_features", "cluster_objects",
           "clustering_accuracy", "angle_map",
           "latent_maps", "class_map", "grid_cells", "grid_maps", "grid_angle_map", "physical_arrays", "write_maps"]
