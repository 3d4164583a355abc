"""Analyses of quality: per-image anomaly scores (-ELBO) and a run's training curves.

Each is a compute function returning a dataclass of numpy arrays and a ``plot_*`` function
drawing it (a pyplot-free matplotlib Figure). Losses are nats per image.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Mapping, Optional

import numpy as np

from ..nn.signal import item_noun
from ..errors import AffineVAEError
from ..plots import new_figure, show_images
from ..runs import Run, named_loss_terms
from .common import as_imageset, encode, model_label, styled, take

__all__ = ["AnomalyScores", "anomaly_scores", "plot_anomaly", "TrainingCurves", "training_curves",
           "plot_training_curves", "learning_warnings", "ACTIVE_VARIANCE", "FIXED_ANGLE"]

#: A content latent whose posterior means vary across the images by a variance below this carries nothing
#: (Burda, Grosse & Salakhutdinov 2016's "active units" threshold; the prior's variance is 1). It catches
#: both forms of collapse: the posterior back at the prior (KL 0) and a posterior narrower than the prior
#: but the same for every image (KL about 1 nat per latent, seen on noisy particles under a Gaussian likelihood).
ACTIVE_VARIANCE = 0.01
#: Angles of a full-circle model whose resultant length (|mean exp(i angle)|) reaches this did not move
#: (all within about +-8 degrees of one value).
FIXED_ANGLE = 0.99


# ============================================================================ anomaly
@dataclasses.dataclass
class AnomalyScores:
    """Per-image anomaly scores (-ELBO in nats; reconstruction loss for the AE).

    Attributes:
        scores: (N,) -ELBO per image, nats (higher = more unusual to the model).
        typical: (k,) indices of the k lowest scores (most typical first).
        atypical: (k,) indices of the k highest scores (most unusual first).
        typical_images, atypical_images: (k, C, H, W) those images.
        labels: (N,) classes, or None.
        model: display name.
    """

    scores: np.ndarray
    typical: np.ndarray
    atypical: np.ndarray
    typical_images: np.ndarray
    atypical_images: np.ndarray
    labels: Optional[np.ndarray]
    model: str = ""


def anomaly_scores(model, data, n: Optional[int] = None, k: int = 8, seed: int = 0, labels=None) -> AnomalyScores:
    """Score the first ``n`` images of ``data`` by -ELBO (one seeded posterior sample) and pick
    the ``k`` most and least typical.

    ``data``: an :class:`~affinevae.data.ImageSet` or (N, C, H, W) / (N, H, W) images; ``labels``:
    (N,) int class labels replacing the data's, needed when the model is class-conditional and
    ``data`` carries none (kept in the result). Returns :class:`AnomalyScores`: ``scores`` (M,)
    nats over the M = min(n, N) images used, ``typical``/``atypical`` (k,) indices, their images
    (k, C, H, W).
    """
    data = take(as_imageset(data, labels), n)
    if k < 1:
        raise AffineVAEError(f"k must be >= 1, got {k}")
    scores = -encode(model, data, elbo=True, seed=seed)["elbo"].astype(np.float64)
    order = np.argsort(scores, kind="stable")
    k = min(k, len(scores))
    typical, atypical = order[:k], order[::-1][:k]
    return AnomalyScores(scores, typical, atypical, data.images[typical], data.images[atypical], data.labels,
                         model_label(model))


@styled
def plot_anomaly(a: AnomalyScores, title: Optional[str] = None):
    """Histogram of -ELBO with the most typical and most unusual images below it."""
    from matplotlib.figure import Figure
    import matplotlib

    k = len(a.typical)
    with matplotlib.rc_context({"font.size": 9}):
        fig = Figure(figsize=(max(5.5, 0.6 * k + 1), 5.2), layout="constrained")
        gs = fig.add_gridspec(3, 1, height_ratios=[3, 1, 1])
        ax = fig.add_subplot(gs[0])
        ax.hist(a.scores, bins=min(50, max(10, len(a.scores) // 10)), color="C0", alpha=0.8)
        lo, hi = a.scores[a.typical[-1]], a.scores[a.atypical[-1]]
        ax.axvline(lo, color="C2", ls="--", lw=1, label=f"{k} most typical below")
        ax.axvline(hi, color="C3", ls="--", lw=1, label=f"{k} most unusual above")
        ax.set_xlabel("-ELBO (nats / image)" if "ae (" not in a.model[:4] else "reconstruction loss (nats / image)")
        ax.set_ylabel("images")
        ax.legend(frameon=False)
        ax.set_title(f"{len(a.scores)} images, mean {a.scores.mean():.1f} nats")
        ax1 = fig.add_subplot(gs[1])
        show_images(ax1, a.typical_images, ncol=k)
        ax1.set_title("most typical (lowest -ELBO)", fontsize=8, loc="left")
        ax2 = fig.add_subplot(gs[2])
        show_images(ax2, a.atypical_images, ncol=k)
        ax2.set_title("most unusual (highest -ELBO)", fontsize=8, loc="left")
        fig.suptitle(title or f"{a.model}: anomaly scores")
    return fig


# ============================================================================ training curves
@dataclasses.dataclass
class TrainingCurves:
    """Per-epoch metrics of a training run (``metrics.jsonl``).

    Attributes:
        epochs: (E,) epoch numbers.
        train: name ('loss', 'recon', 'kl') -> (E,) training values, nats/image.
        val: the same for the validation set (names present only).
        images_per_s: (E,) training throughput.
        terms: names of the named training terms the training loss also holds (``train_equivariance``
            -> 'equivariance', ...; the validation loss holds none of them).
    """

    epochs: np.ndarray
    train: dict
    val: dict
    images_per_s: np.ndarray
    terms: tuple = ()


def training_curves(run) -> TrainingCurves:
    """Curves from a :class:`~affinevae.runs.Run` or run directory (its ``metrics.jsonl``) or a list
    of per-epoch metric dicts (numbers by name, e.g. ``epoch``, ``train_loss`` in nats/image; without
    ``epoch`` in any of them the epochs are numbered 1, 2, ... in order).

    Raises:
        AffineVAEError: anything else (e.g. a model: pass its run, ``fit(...).run_dir``), a run
            without metrics, a metric that is not a number, or an ``epoch`` that is not a whole
            number (missing from some epochs only, say).
    """
    if isinstance(run, (str, Path, Run)):
        run = Run.open(run)
        history = run.metrics
        if not history:
            raise AffineVAEError(f"{run.path}: no training metrics (metrics.jsonl is missing or empty)")
    else:
        what = type(run).__name__
        if isinstance(run, (Mapping, bytes)) or not isinstance(run, Iterable):
            raise AffineVAEError(f"training_curves needs a Run, a run directory or a list of per-epoch metric dicts, "
                                 f"got a {what}")
        history = list(run)
        if not history:
            raise AffineVAEError("no training metrics")
        bad = next((h for h in history if not isinstance(h, Mapping)), None)
        if bad is not None:
            raise AffineVAEError(f"training_curves needs a list of per-epoch metric dicts, got a {what} with an "
                                 f"element of type {type(bad).__name__}")

    def col(key):
        try:
            return np.array([float(h.get(key, np.nan)) for h in history])
        except (TypeError, ValueError):
            raise AffineVAEError(f"training_curves: metric {key!r} must be a number in every epoch") from None

    train = {k: col(f"train_{k}") for k in ("loss", "recon", "kl") if any(f"train_{k}" in h for h in history)}
    val = {k: col(f"val_{k}") for k in ("loss", "recon", "kl") if any(f"val_{k}" in h for h in history)}
    if all("epoch" not in h for h in history):
        epochs = np.arange(1, len(history) + 1, dtype=np.int64)  # numbered 1.. in order, as the trainer numbers them
    else:
        e = col("epoch")
        if not np.all(np.isfinite(e)) or not np.all(e == np.round(e)):
            raise AffineVAEError("training_curves: metric 'epoch' must be a whole number in every epoch "
                                 "(or left out of all of them: then they are numbered 1, 2, ...)")
        epochs = e.astype(np.int64)
    terms = tuple(dict.fromkeys(k for h in history for k in named_loss_terms(h)))
    return TrainingCurves(epochs, train, val, col("images_per_s"), terms)


@styled
def plot_training_curves(c: TrainingCurves | Mapping[str, TrainingCurves], title: Optional[str] = None):
    """Loss, reconstruction and KL per epoch (train solid, validation dashed), nats/image.

    ``c`` may be a mapping name -> :class:`TrainingCurves` to compare several runs (one colour each).
    """
    runs = {"": c} if isinstance(c, TrainingCurves) else dict(c)
    if not runs:
        raise AffineVAEError("plot_training_curves needs at least one TrainingCurves")
    names = [k for k in ("loss", "recon", "kl") if any(k in r.train or k in r.val for r in runs.values())]
    if not names:
        raise AffineVAEError("no loss, recon or kl metrics to plot")
    fig, axes = new_figure(1, len(names), panel=(3.0, 2.6))
    terms = sorted({t for r in runs.values() for t in r.terms})
    label = {"loss": "loss (recon + beta KL)" + ("\ntrain: + " + ", ".join(terms) if terms else ""),
             "recon": "reconstruction -E[log p(x|z)]", "kl": "KL(q || prior)"}
    for i, k in enumerate(names):
        ax = axes[0, i]
        for j, (run, cur) in enumerate(runs.items()):
            color = f"C{j % 10}"
            prefix = f"{run} " if run else ""
            if k in cur.train:
                ax.plot(cur.epochs, cur.train[k], "o-", ms=3, color=color, label=f"{prefix}train")
            if k in cur.val:
                ax.plot(cur.epochs, cur.val[k], "s--", ms=3, color=color, alpha=0.8,
                        label=f"{prefix}validation" if not run or j == 0 else None)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats / image")
        ax.set_title(label[k])
        epochs = np.unique(np.concatenate([r.epochs for r in runs.values()]))
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if len(runs) == 1:
        axes[0, 0].legend(frameon=False)
    else:
        labels = [lb.replace(" train", "") if lb.endswith(" train") else "dashed: validation" for lb in labels]
        fig.legend(handles, labels, loc="outside right center", frameon=False)
    fig.suptitle(title or "training curves")
    return fig


# ============================================================================ did it learn?
def _option(name: str, value: str, python: bool) -> str:
    """An option as the caller gives it: ``--lowpass 1.5`` (the train command; ``--set name=value`` for the
    options it has no flag for) or ``lowpass=1.5`` (Python: build_model's and the Estimator's keywords)."""
    if python:
        return f"{name}={value!r}" if not value.replace(".", "", 1).isdigit() else f"{name}={value}"
    return f"--{name.replace('_', '-')} {value}" if name in ("likelihood", "lowpass", "sigma") else f"--set {name}={value}"


def _filter_hint(model, python: bool = False) -> str:
    lowpass = float(getattr(model.config, "lowpass", 0.0) or 0.0)
    if getattr(model.config, "likelihood", "") in ("bernoulli", "cbernoulli"):
        return (f"a gaussian likelihood behind a low-pass filter, {_option('likelihood', 'gaussian', python)} "
                f"{_option('lowpass', '1.5', python)}")
    if lowpass > 0:
        return (f"a stronger low-pass filter than {_option('lowpass', f'{lowpass:g}', python)}, such as "
                f"{_option('lowpass', f'{lowpass + 1:g}', python)}")
    return f"a low-pass filter, {_option('lowpass', '1.5', python)}"


def learning_warnings(model, images, n: int = 2000, seed: int = 0, lattice: bool = False,
                      python: bool = False) -> list[str]:
    """Lines saying what a trained model failed to learn on its training ``images`` (N, C, H, W) (at most
    ``n`` of them, a seeded subset), each a sentence without a prefix; empty when nothing is wrong:

    - every content latent unused: its posterior means vary across the images by a variance below
      :data:`ACTIVE_VARIANCE` and below its mean posterior variance (the model describes every image
      alike, e.g. objects drowned in noise), unless the model's classes (a joint or semi-supervised
      model's) tell them apart (two or more used);
    - a full-circle model's angles all alike (resultant length at least :data:`FIXED_ANGLE`) although
      objects with no preferred orientation turn (not said for ``lattice``: one grain's atoms share
      their angle);
    - a model with classes using fewer of them than it has.

    The remedies are named as ``train``'s options (``--lowpass 1.5``), or with ``python`` as Python's keywords
    (``lowpass=1.5``: :func:`~affinevae.models.base.build_model`, the Estimator).

    Measured case (a cryo-EM user's audit, particles at a signal-to-noise of about 1 per pixel): the
    full-circle rVAE's angles all within 1 degree, three of its four content latents unused; the
    full-circle jrVAE using 2 of 3 classes. ``train`` prints them as warnings.
    """
    from ..encoding import encode_dataset
    from ..evaluation import offset_concentration

    if getattr(model, "conditional", False):
        return []  # a class-conditional model needs the labels to encode; nothing said here
    x = np.asarray(images)
    if len(x) > n:
        x = x[np.sort(np.random.default_rng([seed, 7]).choice(len(x), n, replace=False))]
    try:
        enc = encode_dataset(model, x, elbo=False, seed=seed)
    except AffineVAEError:
        return []
    lines = []
    variational = getattr(model, "variational", True)  # an AE's codes have no prior to measure their scale by
    spread = (np.asarray(enc["z_mean"], dtype=np.float64).var(0) if variational and len(enc["z_mean"]) > 1
              else np.zeros(0))  # (D,)
    # a latent whose means spread wider than its own posterior's width still tells the images apart, however
    # small both are (spectra at a small noise sigma: means varying by 0.008 with posteriors 0.005 wide)
    width = (np.square(np.asarray(enc["z_std"], dtype=np.float64)).mean(0) if spread.size
             else np.zeros(0))  # (D,)
    classes_used = len(np.unique(enc["class"])) if "class" in enc else 0
    # a joint or semi-supervised model whose classes tell the images apart does not describe them all alike
    if spread.size and bool(np.all(spread < np.minimum(ACTIVE_VARIANCE, width))) and classes_used < 2:
        noun = item_noun(model.config.image_shape)
        lines.append(f"all {spread.size} content latents are unused (their means vary across the {noun}s with a variance "
                     f"below {ACTIVE_VARIANCE:g}): the model describes every {noun} alike (a signal too weak against the "
                     f"noise? {_filter_hint(model, python)}"
                     + ("" if getattr(model.config, "likelihood", "") == "gaussian"
                        else f", a gaussian likelihood with the noise as {'sigma=' if python else '--sigma'}")
                     + ((f", a start from a t-SNE of the aligned images, {_option('content_anchor', '100', python)}"
                         if getattr(model.config, "content_targets", None) == "embedding" else
                         ", a start from the aligned images' principal components, "
                         f"{_option('content_anchor', '10', python)}")
                        if (getattr(model.config, "pose_anchor", 0) or 0) > 0
                        and not getattr(model.config, "content_anchor", 0) else "")
                     + f", or clearer {noun}s)")
    full = getattr(model.config, "rotation_mode", None) == "full" and "angle" in enc
    if full and not lattice and len(enc["angle"]) > 1:
        r = offset_concentration(enc["angle"], np.zeros_like(enc["angle"]))  # the angles' resultant length
        if r >= FIXED_ANGLE:
            lines.append(f"the inferred angles hardly vary (resultant length {r:.3f}: all within about "
                         f"{np.degrees(np.sqrt(max(0.0, 2 * (1 - r)))):.0f} degrees of one value) although rotation_mode "
                         "is 'full': the model learned no pose")
    if "class" in enc:
        used, k = classes_used, int(enc["class_prob"].shape[1])
        if used < k:
            lines.append(f"only {used} of the {k} classes are used on the training "
                         f"{item_noun(model.config.image_shape)}s")
    return lines
