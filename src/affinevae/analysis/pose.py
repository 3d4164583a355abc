"""Analyses of pose: the angles a model sees (learned vs true), loss vs rotation, and the
rotations found during pose-optimised training.

Each is a compute function returning a dataclass of numpy arrays and a ``plot_*`` function
drawing it (a pyplot-free matplotlib Figure). Angles are radians in the dataclasses and
degrees on the plots; losses are nats per image.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence

import numpy as np

from ..errors import AffineVAEError, refuse_removed_keywords
from ..config import check_symmetry
from ..evaluation import (circular_correlation, class_offset_concentration, mirror_note, offset_concentration,
                          symmetry_note)
from ..limits import ANGLE_HISTOGRAM_BINS
from ..nn.signal import is_signal_shape
from ..plots import CLASS_CMAP, image_grid, new_figure
from ..runs import PoseRecord, Run, load_pose_record
from .common import (as_imageset, class_title, encode, has_learned_angle, in_eval_mode, labels_for, model_label,
                     one_or_more, styled, take, to_numpy, wrap_angles)

__all__ = ["RotationStrip", "rotation_strip", "plot_rotation_strip", "learned_angles", "AngleComparison", "angle_comparison", "plot_angle_comparison", "loss_vs_rotation",
           "plot_loss_vs_rotation", "RotationHistograms", "rotation_histograms", "plot_rotation_histograms"]


def _require_angle(model) -> None:
    """Raise :class:`AffineVAEError` unless ``model`` sees images at a rotation angle."""
    if not has_learned_angle(model) and is_signal_shape(model.config.image_shape):
        shift = ("shift" in (getattr(model.config, "invariances", None) or ()))
        raise AffineVAEError(f"model '{model.family}' is a model of 1-D signals: they have no rotation angle"
                             + (", only a shift (encode writes it, map --cube draws it)" if shift else
                                " (an rvae with --invariances shift learns their shift)"))
    if not has_learned_angle(model):
        raise AffineVAEError(f"model '{model.family}' learns no rotation angle "
                             "(use an rvae/crvae with rotation, or an avae)")


def learned_angles(model, data, n: Optional[int] = None) -> np.ndarray:
    """(N,) rotation each image is seen in by the model, radians (rVAE/crVAE encoder or AVAE search)."""
    _require_angle(model)
    data = take(as_imageset(data), n)
    return encode(model, data)["angle"]


# ============================================================================ angles
@dataclasses.dataclass
class AngleComparison:
    """Learned vs true rotation angles.

    Attributes:
        true_angle: (N,) true angles, radians.
        learned_angle: (N,) angles the model sees, radians (wrapped to [-pi, pi)).
        labels: (N,) classes, or None.
        correlation: circular correlation coefficient of the two (-1 to 1; of k times them for k-fold
            symmetric objects, ``symmetry``).
        model: display name.
        concentration: :func:`~affinevae.evaluation.offset_concentration` of the two (0 to 1; 1: the
            learned angle is the true one plus one offset; meaningful over the full circle too).
        class_concentration: with ``labels``, :func:`~affinevae.evaluation.class_offset_concentration`
            (one offset per class: the score of a full-circle model, which keeps a frame per class);
            NaN without labels.
        symmetry: k: the objects' k-fold rotational symmetry; both concentrations count offsets
            modulo 360/k degrees (1: the full turn).
        mirror: :func:`~affinevae.evaluation.mirror_note` (the true angles fit mirrored: they turn
            clockwise?), or None.
        fold: :func:`~affinevae.evaluation.symmetry_note` (the angles agree modulo a symmetry that was not
            given), or None.
    """

    true_angle: np.ndarray
    learned_angle: np.ndarray
    labels: Optional[np.ndarray]
    correlation: float
    model: str = ""
    concentration: float = float("nan")
    class_concentration: float = float("nan")
    symmetry: int = 1
    mirror: Optional[str] = None
    fold: Optional[str] = None


def angle_comparison(model, data, n: Optional[int] = None, labels=None, symmetry: int = 1) -> AngleComparison:
    """Compare the model's angles (rVAE/crVAE encoder, AVAE search) with the data's true angles.

    ``data``: an :class:`~affinevae.data.ImageSet` with known ``angle`` (N,) radians (e.g. rotated
    MNIST); ``labels``: (N,) int class labels replacing the data's, needed when the model is
    class-conditional and ``data`` carries none (they also colour the scatter); ``symmetry``: k for
    objects with k-fold rotational symmetry (a 2-fold galaxy or particle turned by 180 degrees looks
    the same, so its angle is known modulo 180: the concentrations count offsets so). Returns
    :class:`AngleComparison` over the first ``n`` images: true and learned angles (min(n, N),) radians.
    """
    symmetry = check_symmetry(symmetry, "angle_comparison symmetry")
    _require_angle(model)
    data = take(as_imageset(data, labels), n)
    if data.angle is None:
        raise AffineVAEError("learned-vs-true angles need data with known angles (e.g. rotated-mnist, or an .npz "
                             "with an 'angle' array (N,) in radians beside the images)")
    learned = wrap_angles(learned_angles(model, data))
    true = np.asarray(data.angle, np.float64)
    per_class = (float("nan") if data.labels is None
                 else class_offset_concentration(learned, true, data.labels, symmetry))
    return AngleComparison(true, learned, data.labels, circular_correlation(learned, true, symmetry), model_label(model),
                           offset_concentration(learned, true, symmetry), per_class, symmetry,
                           mirror_note(learned, true, data.labels, symmetry),
                           symmetry_note(learned, true, data.labels, symmetry))


@styled
def plot_angle_comparison(items: AngleComparison | Sequence[AngleComparison], title: Optional[str] = None):
    """Scatter of learned vs true angle (degrees), one panel per model, the circular correlation and the
    offset concentration in the title (with labels also the concentration per class, the score of a
    full-circle model, which keeps one frame per class)."""
    rows = one_or_more(items, AngleComparison, "plot_angle_comparison")
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
        per_class = "" if np.isnan(a.class_concentration) else f", per class {a.class_concentration:.2f}"
        mod = "" if a.symmetry == 1 else f", angles mod {360 / a.symmetry:g}°"  # (both scores are folded)
        flipped = ("\n(the true angles fit mirrored: clockwise?)" if a.mirror else
                   "\n(they agree modulo a symmetry: give it?)" if a.fold else "")
        ax.set_title(f"{a.model}{mod}: circular r = {a.correlation:.2f}\noffset conc. = {a.concentration:.2f}"
                     f"{per_class}{flipped}")
        ax.legend(loc="lower right", frameon=False)
    fig.suptitle(title or "learned vs true rotation")
    return fig


# ============================================================================ loss vs rotation
ROTATION_SWEEP_ANGLES = tuple(float(a) for a in np.radians(np.arange(0, 361, 30)))
"""Default rotations of :func:`loss_vs_rotation`: 0 to 2 pi radians every 30 degrees."""


def loss_vs_rotation(models: Mapping[str, object], data, angles: Sequence[float] = ROTATION_SWEEP_ANGLES,
                     n: Optional[int] = None, seed: int = 0, search=None, labels=None,
                     binarize: Optional[float] = None, **removed):
    """Mean -ELBO (nats/image) of each model as the test images are rotated by ``angles``.

    ``angles``: (A,) rotations in radians, counter-clockwise on screen (default 0 to 2 pi every
    30 degrees; ``np.radians(...)`` converts degrees). The former keyword ``angles_deg``
    (degrees) is refused in one line. ``models``: name -> model. ``data``: an
    :class:`~affinevae.data.ImageSet` or (N, C, H, W) / (N, H, W) upright test images (the first
    ``n`` are used); ``labels``: (N,) int class labels replacing the data's, needed by
    class-conditional models when ``data`` carries none.

    A thin wrapper of :func:`affinevae.sweep.rotation_sweep` (AVAEs search each image's
    pose; ``search`` overrides their search options; ``binarize`` thresholds every rotated
    image, see :class:`~affinevae.sweep.SweepConfig`). Returns its
    :class:`~affinevae.sweep.SweepResult` ((M, A) ``neg_elbo``; its ``angles_deg`` are the
    angles in degrees, as the plots label them).
    """
    from ..sweep import SweepConfig, check_angles, check_models, rotation_sweep

    refuse_removed_keywords("loss_vs_rotation", removed, {
        "angles_deg": "angles_deg (degrees) is now angles, in radians (e.g. angles=np.radians(range(0, 361, 30)))"})
    a = check_angles(angles, "loss_vs_rotation")
    check_models(models, "loss_vs_rotation")
    data = take(as_imageset(data, labels), n)
    return rotation_sweep(dict(models), data.images, data.labels, angles=a,
                          config=SweepConfig(seed=seed, search=search, binarize=binarize))


@styled
def plot_loss_vs_rotation(result, title: Optional[str] = None):
    """Loss-vs-rotation curves of a :class:`~affinevae.sweep.SweepResult` (any number of models)."""
    from ..sweep import plot_sweep

    fig = plot_sweep(result, title=title)
    fig.set_size_inches(6.4, 4.0)
    ax = fig.axes[0]
    a = np.asarray(result.angles_deg, dtype=np.float64)
    span = float(a.max() - a.min()) if len(a) else 0.0
    if span >= 90:
        step = 45 if span > 180 else 30
        ax.set_xticks(np.arange(step * math.floor(a.min() / step), a.max() + 1e-9, step))
    return fig


# ============================================================================ one image turned
@dataclasses.dataclass
class RotationStrip:
    """One image turned by a series of angles, and what the model makes of each turn.

    Attributes:
        index: the image's position in the data.
        angles: (A,) turns, radians, counter-clockwise on screen.
        images: (A, C, H, W) the image turned by each angle.
        reconstructions: (A, C, H, W) the model's mean reconstruction of each.
        neg_elbo: (A,) -ELBO of each turned image, nats (posterior means' pass; a searched pose for the AVAE).
        model: display name.
    """

    index: int
    angles: np.ndarray
    images: np.ndarray
    reconstructions: np.ndarray
    neg_elbo: np.ndarray
    model: str = ""

    @property
    def angles_deg(self) -> np.ndarray:
        """(A,) the turns in degrees, as the figure labels them."""
        return np.degrees(self.angles)


@in_eval_mode
def rotation_strip(model, data, index: int = 0, angles: Sequence[float] = ROTATION_SWEEP_ANGLES[:-1],
                   labels=None, seed: int = 0) -> RotationStrip:
    """The image ``index`` of ``data`` (an ImageSet or (N, C, H, W) / (N, H, W) images) turned by each of
    ``angles`` ((A,) radians; default 0 to 330 degrees every 30), its reconstructions and -ELBO (nats) at each
    turn: the AVAE article's picture of a VAE that reconstructs an upright digit and loses it as it turns.
    ``labels``: (N,) classes for a class-conditional model when ``data`` has none; ``seed`` fixes the ELBO's
    sample (and an AVAE's search)."""
    import torch

    from ..data.inputs import check_int
    from ..sweep import check_angles, rotate_images

    data = as_imageset(data, labels)
    index = check_int("rotation_strip: index", index, 0)
    if index >= len(data):
        raise AffineVAEError(f"rotation_strip: index {index} is past the {len(data)} images")
    a = np.asarray(check_angles(angles, "rotation_strip"), dtype=np.float64)
    x = torch.as_tensor(data.images[index:index + 1])
    turned = torch.cat([rotate_images(x, float(v)) for v in a])  # A small turns of one image
    y = labels_for(model, data, np.full(len(a), index))
    rec = model.reconstruct(turned, y)
    with torch.no_grad():
        neg = -model.elbo(turned, y, generator=torch.Generator().manual_seed(seed))
    return RotationStrip(index=index, angles=a, images=turned.numpy(), reconstructions=to_numpy(rec),
                         neg_elbo=to_numpy(neg).astype(np.float64), model=model_label(model))


@styled
def plot_rotation_strip(strip: RotationStrip, title: Optional[str] = None):
    """The turned image (top row) above its reconstructions (bottom row), each column titled with its angle
    (degrees) and -ELBO (nats)."""
    n = len(strip.angles)
    fig, axes = new_figure(2, n, panel=(0.9, 0.95))
    for k in range(n):
        for row, images in enumerate((strip.images, strip.reconstructions)):
            ax = axes[row, k]
            ax.imshow(image_grid(images[k:k + 1], ncol=1, pad=0), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, k].set_title(f"{strip.angles_deg[k]:.0f}°\n{strip.neg_elbo[k]:.0f} nats", fontsize=7)
    axes[0, 0].set_ylabel("turned", fontsize=8)
    axes[1, 0].set_ylabel("reconstructed", fontsize=8)
    fig.suptitle(title or f"{strip.model}: image {strip.index} turned (-ELBO per turn)")
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

    ``record``: a :class:`~affinevae.runs.Run` or a run directory (its ``poses.npz``), the file
    itself, a :class:`~affinevae.runs.PoseRecord` or an AVAE that trained in this process.
    ``true_angle``: (N,) rotations (radians) of the training images themselves, in the order of
    the data given to ``fit``; with them the histograms show the encoded orientation
    (true - found), which gathers into one peak per class (two for a digit that looks alike
    turned by 180 degrees) as the model settles on its canonical poses.
    """
    if getattr(record, "pose_source", None) == "searched":  # an AVAE: its record
        rec = record.pose_record()
        if rec is None:
            raise AffineVAEError("this avae has no pose record: it has not been trained with pose_optimise")
    elif isinstance(record, PoseRecord):
        rec = record
    else:
        rec = load_pose_record(record.path if isinstance(record, Run) else record)
    lo, hi = ANGLE_HISTOGRAM_BINS
    if not (isinstance(bins, int) and lo <= bins <= hi):
        raise AffineVAEError(f"bins must be an integer in [{lo}, {hi}], got {bins!r}")
    counts, edges = rec.histograms(bins, true_angle)
    return RotationHistograms(np.asarray(rec.epochs), counts, np.degrees(edges), np.arange(counts.shape[1]),
                              encoded=true_angle is not None)


@styled
def plot_rotation_histograms(h: RotationHistograms, classes: Optional[Sequence[int]] = None,
                             title: Optional[str] = None, max_cols: int = 5,
                             class_names: Optional[Sequence[str]] = None):
    """Per class, the distribution of found angles (or encoded orientations) at each epoch (stacked, later epochs higher).

    The angle axis is in degrees, -180 to 180 (the bins ``h.edges_deg``; the record itself holds
    radians). ``classes``: which classes to show (default every class with images); ``class_names``:
    the K names of the classes when the labels named them (a run's ``class_names``), shown in the titles.
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
        ax.set_title(class_title(c, class_names))
        ax.set_yticks(np.arange(E))
        ax.set_yticklabels([str(int(v)) for v in h.epochs])
        if k % ncols == 0:
            ax.set_ylabel("epoch")
    fig.suptitle(title or ("orientation at which each training image is encoded (its rotation minus the found pose)"
                           if h.encoded else "found rotations of the training images during pose-optimised training"))
    return fig


