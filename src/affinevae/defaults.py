"""Defaults that depend on the data: the one place ``affinevae train`` chooses them.

A patch set written by ``affinevae patches`` says so (``ImageSet.meta["kind"] == "patches"``)
and carries a robust estimate of its pixel noise (``meta["noise_sigma"]``, in the intensity
units ``train`` sees). For such data and a model family listed in :data:`PATCH_SET_DEFAULTS`
(``rvae``, ``crvae``, ``jrvae``), :func:`data_defaults` chooses micrograph-appropriate options: both
rotation and translation latents, a uniform prior on the angle (``rotation_mode=full``: the
objects have no preferred orientation) with the MLP encoder for a lattice's atoms and the
group-equivariant one for scattered objects (``meta["lattice_order"]`` under
:data:`LATTICE_ORDER`), 4 content latents and a small decoder (``hidden`` (32, 32): the spatial
decoder's per-pixel MLP, or with the equivariant encoder the warp decoder's head), a Gaussian likelihood
(behind the low-pass filter :data:`FLOAT_LOWPASS` for scattered objects fainter than the noise, :data:`LOWPASS_SNR`,
and for noisy hexagonal lattices, :data:`LOWPASS_LATTICE_SNR`)
whose ``sigma`` is the noise estimate (at least
:data:`SIGMA_FLOOR`) at the patch centre and grows towards its edges (``sigma_radius``
:data:`PATCH_SIGMA_RADIUS`: the centre object is described before its neighbours), batches of :data:`PATCH_BATCH_SIZE` at learning rate :data:`PATCH_LR`, a
KL warm-up over the first :data:`PATCH_KL_WARMUP` of the steps (``TrainConfig.kl_warmup``), and
enough epochs for about :data:`MIN_STEPS` optimiser steps (at most :data:`MAX_EPOCHS`).
Every option the user gave wins. Any other data or family gets exactly the options given,
:data:`DEFAULT_EPOCHS`, and the batch size and learning rate of :data:`FAMILY_TRAINING` for the
families listed there (jrvae: batches of 50 at 2e-3; rvae: 100 at 2e-3, at 3e-3 over the full circle;
crvae over the full circle: 100 at 3e-3),
else the trainer's.

Why these values (``benchmarks/bench_lattice.py``, two-grain lattices with 5 % substituted
atoms): with the pixel-noise sigma itself (about 0.04) or 2 content latents the latents
describe the neighbours around each atom and k-means misses the substituted atoms
(precision 0.03-0.43), and the former defaults (10 latents, batches of 128 at lr 1e-3, 3 000
steps) missed the grain angle by 21-26 degrees; with these it is within 1.2 degrees. Without the
KL warm-up the content latents often all collapsed at the sigma floor (substituted atoms found
with precision 0.02-0.83, recall 0.02-1.00 over seeds 0 and 1); with it they start in use and
one latent separates the substituted atoms in 5 of 6 runs (recall 0.98-1.00 there), though the
other latents describe bright neighbours and k-means still lumps some lattice atoms in
(precision 0.03-1.00): the 0.8 / 0.8 target was met in 1 of the 6 runs. The centred sigma window
(``sigma_radius`` 0.7: neighbours one lattice spacing away count with about a seventh of the
centre's precision) stops the latents from spending themselves on the neighbours: substituted
atoms are then found with precision and recall 1.00 in all of those 6 runs, grain angles within
1.6 degrees.

A set of 1-D signals (``meta["kind"] == "spectra"``, :mod:`affinevae.data.spectra`) gets
:data:`SPECTRA_DEFAULTS` the same way (a Gaussian likelihood with the estimated noise as sigma;
flat encoder and decoder for the vae/cvae/ae, the warp decoder for the pose families) the trainer's batch size and learning rate, and
about :data:`SPECTRA_MIN_STEPS` steps.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Callable, Mapping, Optional

import numpy as np

from .data.formats import PATCH_SET_KIND
from .data.imageset import ImageSet, PixelScaling
from .data.inputs import MIN_IMAGE_SIZE, check_int  # noqa: F401  (MIN_IMAGE_SIZE: re-exported)
from .data.inputs import check_image_size as check_image_shape_size
from .data.patches import patch_min_distance, patch_smoothing  # noqa: F401  (re-exported: the one rule)
from .data.patches import LATTICE_ORDER, lattice_patches, scattered_objects  # noqa: F401  (re-exported)
from .data.spectra import SPECTRA_KIND
from .errors import user_stacklevel
from .mapping import CLUSTER_SPACES  # noqa: F401  (re-exported: map's one list)
from .training import TrainConfig

__all__ = ["DEFAULT_EPOCHS", "MIN_STEPS", "MAX_EPOCHS", "SIGMA_FLOOR", "PATCH_LATENT_DIM", "PATCH_BATCH_SIZE", "PATCH_LR",
           "PATCH_KL_WARMUP", "PATCH_SIGMA_RADIUS", "LATTICE_ORDER", "FLOAT_KIND", "FLOAT_SCALINGS", "FLOAT_SIGMA_FLOOR", "SMALL_FLOAT_SET", "SMALL_FLOAT_BATCH", "SMALL_FLOAT_STEPS", "SMALL_FLOAT_LR", "FLOAT_LOWPASS", "FLOAT_LOWPASS_MIN_SIZE", "CONTENT_ANCHOR", "LOWPASS_SNR", "LOWPASS_LATTICE_FOLD", "LOWPASS_LATTICE_SNR", "centre_snr", "data_kind", "scattered_objects", "lattice_patches", "PATCH_SET_DEFAULTS", "FAMILY_TRAINING", "family_training", "defaults_family", "training_key", "data_defaults", "chosen_defaults", "orientation_default", "orientation_asked", "angle_rules_apply", "infers_rotation", "off_centre_offset", "off_centre_warning", "centring_default", "epochs_for_steps", "full_circle_encoder_warning", "floored_sigma",
           "MIN_IMAGE_SIZE", "check_image_size", "patch_min_distance", "patch_smoothing", "CLUSTER_SPACES"]

#: Epochs when ``--epochs`` is not given and no data rule applies (TrainConfig's default).
DEFAULT_EPOCHS: int = TrainConfig.epochs
#: Optimiser steps a patch set's epoch count aims at (at least).
MIN_STEPS = 6000
#: Most epochs the patch-set rule chooses.
MAX_EPOCHS = 200
#: Smallest Gaussian sigma chosen from a noise estimate (intensity units; images span [0, 1]): a
#: smaller sigma makes the latents spend themselves on neighbours and sub-pixel detail.
SIGMA_FLOOR = 0.1
#: Smallest sigma chosen for 1-D signals (their noise estimate is the sigma).
SPECTRA_SIGMA_FLOOR = 0.01
#: Content latents for a patch set when ``--latent-dim`` is not given.
PATCH_LATENT_DIM = 4
#: Batch size and Adam learning rate for a patch set when ``--batch-size``/``--lr`` are not given.
PATCH_BATCH_SIZE = 32
PATCH_LR = 3e-3
#: KL warm-up (fraction of the training steps, ``TrainConfig.kl_warmup``) for a patch set when
#: ``--kl-warmup`` is not given.
PATCH_KL_WARMUP = 0.3
#: Radius (half-widths of the patch) of the Gaussian likelihood's centred precision window for a
#: patch set (``ModelConfig.sigma_radius``) when ``--set sigma_radius=`` is not given.
PATCH_SIGMA_RADIUS = 0.7




#: A rule: (data, the options so far) -> the value of its option, or None to leave it unset.
Rule = Callable[[ImageSet, dict], Any]


def check_image_size(data: ImageSet, where: Optional[str] = None, hint: str = "") -> None:
    """Refuse images smaller than :data:`MIN_IMAGE_SIZE` x :data:`MIN_IMAGE_SIZE` pixels, before a model is built.

    Args:
        data: the set whose (N, C, H, W) images are checked; a set of 1-D signals
            (``meta['kind'] == 'spectra'``, images (C, 1, L)) passes: their length is checked when
            they are read.
        where: what the images are, starting the message (default: ``data.source``, the file).
        hint: appended to the message (e.g. how to read 1-D signals instead).

    Raises:
        AffineVAEError: ``"WHERE: images of HxW pixels (data shape (N, C, H, W), N x C x H x W) are
            too small: the models need at least 8x8"``.
    """
    if data.meta.get("kind") == SPECTRA_KIND:
        return
    check_image_shape_size(data.images.shape, where or data.source, hint)


def _invariances(options: dict) -> tuple:
    inv = options.get("invariances", ())
    if isinstance(inv, str):
        inv = [s.strip() for s in inv.split(",") if s.strip()]
    return tuple(inv)


def _meta_noise(data: ImageSet) -> Optional[float]:
    return data.meta.get("noise_sigma")


def _measured_noise(data: ImageSet) -> Optional[float]:
    from .data.imageset import noise_sigma

    return noise_sigma(data.images) if len(data) else None


def floored_sigma(noise: float, span: float, floor: float) -> float:
    """The Gaussian likelihood's sigma the data rules choose: max(``noise``, ``floor`` x min(1, 2 x ``span``)),
    to 3 significant digits (the value printed is the one used). ``noise``: the data's noise estimate and
    ``span``: their value span (max - min), both in the units training sees; a ``span`` of 0 (constant
    data, which say nothing of their scale) takes the whole floor."""
    scale = min(1.0, 2.0 * span) if span > 0 else 1.0
    return float(f"{max(float(noise), floor * scale):.3g}")


def _sigma_at_least(floor: float, noise: Callable[[ImageSet], Optional[float]] = _meta_noise) -> Rule:
    """The rule choosing sigma = max(noise estimate, ``floor`` x min(1, 2 x the images' value
    span)) for a Gaussian likelihood: the floor is for images that span [0, 1], and shrinks with
    images that use a small part of it (faint float patches). ``noise``:
    the estimate of the data (default: the one a patch set or spectra carry in ``meta['noise_sigma']``)."""
    def rule(data: ImageSet, options: dict) -> Optional[float]:
        if options.get("likelihood") != "gaussian":
            return None
        sigma = noise(data)
        if sigma is None:
            return None
        return floored_sigma(sigma, float(np.ptp(data.images)) if data.images.size else 0.0, floor)
    return rule


#: The low-pass filter (``ModelConfig.lowpass``, pixels) chosen for float images (and low-SNR patch sets of scattered objects) of at least
#: :data:`FLOAT_LOWPASS_MIN_SIZE` pixels a side (smaller ones: none, their objects are a few pixels).
FLOAT_LOWPASS = 1.5
FLOAT_LOWPASS_MIN_SIZE = 24

#: A patch set of scattered objects whose :func:`centre_snr` is below this takes the low-pass filter
#: (:data:`FLOAT_LOWPASS`): objects fainter than the pixel noise on average need it. Measured (seed 0): a
#: cryo-EM audit's 350 particle picks (centre SNR 0.27) learned nothing without it (angles 0.08, k-means of
#: the shapes 0.39) and angles 0.62, k-means 0.83 with it; an astronomer audit's galaxy field (3.05) lost
#: k-means with it (0.96 to 0.65), so it takes none.
LOWPASS_SNR = 1.0


def centre_snr(data: ImageSet) -> Optional[float]:
    """The objects' mean contrast per pixel against the noise: over the images (at most 2 000, evenly
    spread) the median of (the mean over the centred disc of radius a quarter of the image's height minus
    the image's median) / ``meta['noise_sigma']``. None without a noise estimate or images. Measured:
    particle picks at a signal-to-noise of about 1 per pixel 0.27, a galaxy field 3.05, synthetic
    particles at a peak SNR of 9 / 1.8 / 0.9 3.3 / 0.59 / 0.29."""
    noise = data.meta.get("noise_sigma")
    x = data.images
    if not noise or not len(x) or x.shape[-2] < 2:
        return None
    if len(x) > 2000:
        x = x[np.linspace(0, len(x) - 1, 2000).round().astype(np.int64)]
    x = np.asarray(x, dtype=np.float64).mean(1)  # (N, H, W): the channels' mean
    h, w = x.shape[-2:]
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 <= (h / 4) ** 2
    contrast = x[:, disc].mean(1) - np.median(x.reshape(len(x), -1), 1)
    return float(np.median(contrast) / float(noise))


def _lowpass(data: ImageSet, opts: dict) -> Optional[float]:
    """:data:`FLOAT_LOWPASS` for a Gaussian likelihood on images of at least :data:`FLOAT_LOWPASS_MIN_SIZE`
    pixels a side, else None (the float-image rule)."""
    wide = min(data.images.shape[-2:]) >= FLOAT_LOWPASS_MIN_SIZE
    return FLOAT_LOWPASS if opts.get("likelihood") == "gaussian" and wide else None


#: The content anchor (``RVAEConfig.content_anchor``) chosen with the low-pass filter, for a model with a pose
#: anchor (over the full circle, the equivariant encoder): the content latents start from the principal
#: components of the images turned into the synchronised frame. On ``bench_particles.py`` (seed 0; angle
#: concentration / k-means / 10-NN of the content) at a peak SNR of 0.9: 0.704 / 0.730 / 0.780 against
#: 0.718 / 0.426 / 0.541 without (content latents unused); at 1.8 0.924 / 0.962 / 0.980 against 0.923 /
#: 0.973 / 0.981; the cryo-EM audit's picks: angles 0.65, k-means 0.84 against 0.62 / 0.83. Not for digits
#: (full-circle MNIST: k-means 0.51 against 0.58: two principal components tell digits apart worse than
#: the ELBO does). The rVAE of 1 to 3 latents takes its own default instead (100, t-SNE targets:
#: ``RVAEConfig.content_targets``); the crVAE takes this weight with principal components at any
#: number of latents (:func:`_class_content_anchor`).
CONTENT_ANCHOR = 10.0


def _pose_anchored(opts: dict) -> bool:
    """Whether the options ``opts`` build a model with a pose anchor: ``rotation_mode`` 'full' with the
    equivariant encoder, ``pose_anchor`` not 0."""
    return (opts.get("rotation_mode") == "full" and opts.get("encoder") in (None, "equivariant")
            and opts.get("pose_anchor") != 0)


def _embedded_latents(opts: dict) -> bool:
    """Whether the content latents of ``opts`` (``latent_dim``, default the models' 10) are few enough for
    t-SNE to embed (the rVAE's default 'embedding' content targets)."""
    from .models.base import ModelConfig
    from .pose.classes import EMBEDDING_MAX_DIM
    dim = opts.get("latent_dim")
    return (ModelConfig.latent_dim if dim is None else dim) <= EMBEDDING_MAX_DIM


def _class_content_anchor(data: ImageSet, opts: dict) -> Optional[float]:
    """The crVAE's :func:`_content_anchor`: :data:`CONTENT_ANCHOR` with any number of latents (its
    default content anchor is off: targets that gather images by class would fight its given classes;
    principal components, :func:`_class_content_targets`, do not)."""
    return CONTENT_ANCHOR if _pose_anchored(opts) and opts.get("lowpass") else None


def _content_anchor(data: ImageSet, opts: dict) -> Optional[float]:
    """:data:`CONTENT_ANCHOR` where a low-pass filter is set (``opts['lowpass']``: chosen by the rules or given) for a model
    that will have a pose anchor (``rotation_mode`` 'full' with the equivariant encoder, ``pose_anchor``
    not 0) and more latents than t-SNE embeds in (``opts['latent_dim']``, default the models' 10: their
    content targets are the principal components), else None (fewer latents: the model's own default)."""
    return None if _embedded_latents(opts) else _class_content_anchor(data, opts)


def _class_content_targets(data: ImageSet, opts: dict) -> Optional[str]:
    """'components' where the crVAE's content anchor is on with 1 to 3 latents (whose targets would
    otherwise be t-SNE's), else None."""
    return "components" if opts.get("content_anchor") and _embedded_latents(opts) else None


def _for_classes(rules: tuple) -> tuple:
    """``rules`` for the crVAE: its content anchor (:func:`_class_content_anchor`) and targets."""
    out = []
    for name, rule in rules:
        if name == "content_anchor":
            out += [("content_anchor", _class_content_anchor), ("content_targets", _class_content_targets)]
        else:
            out.append((name, rule))
    return tuple(out)


#: The n-fold bonds (``meta["lattice_fold"]``, :func:`affinevae.data.objects.neighbour_fold`) of the lattices
#: whose noisy patch sets take the low-pass filter :data:`FLOAT_LOWPASS` (whatever their window): a hexagonal
#: lattice's, when its :func:`centre_snr` is below :data:`LOWPASS_LATTICE_SNR`. Without the filter such a set
#: learned nothing (both grains one angle, the content latents unused), and square and rectangular lattices
#: lose their substituted atoms with it (precision 0.17-0.31), so they take none (benchmarks/EXPERIMENTS.md,
#: "Noisy lattices").
LOWPASS_LATTICE_FOLD = 6
#: The centre SNR under which a hexagonal lattice's patch set takes the filter. Measured
#: (``bench_lattice.py --lattices hexagonal``; grain-angle error, substituted atoms' precision / recall; seed 0
#: unless said), without / with ``--lowpass 1.5``: spacing 6 px, noise 0.05 (centre SNR 0.94-0.96) 0.34 deg,
#: 1.00 / 1.00 / 0.54 deg, 1.00 / 0.98 (seed 3: 0.19 deg, 1.00 / 1.00 / 0.05 deg, **0.47** / 1.00); noise 0.1
#: (0.50) 0.27 deg, 1.00 / 1.00 / 0.62 deg, **0.56** / 0.99; noise 0.125 (0.36) 0.43 deg, 1.00 / 0.99 / 1.91 deg,
#: 0.98 / 0.99; noise 0.15 (0.26) **29.99 deg**, 1.00 / 1.00 / 1.22 deg, 1.00 / 0.97; spacing 8 px, window 16,
#: 10 % substituted, noise 0.1 (0.70) 0.02 deg without; 0.2 (0.21) **29.99 deg** / 0.17 deg, 1.00 / 0.99;
#: 0.3 (0.08) **29.96 deg** / 0.02 deg, 1.00 / 0.99.
LOWPASS_LATTICE_SNR = 0.3


def _patch_lowpass(data: ImageSet, opts: dict) -> Optional[float]:
    """:data:`FLOAT_LOWPASS` for a Gaussian likelihood on a noisy hexagonal lattice's patch set
    (:data:`LOWPASS_LATTICE_FOLD`, :data:`LOWPASS_LATTICE_SNR`) or, as :func:`_lowpass`, on a scattered-object patch set whose
    :func:`centre_snr` is below :data:`LOWPASS_SNR`; else None."""
    if (lattice_patches(data.meta) and data.meta.get("lattice_fold") == LOWPASS_LATTICE_FOLD
            and opts.get("likelihood") == "gaussian"):
        snr = centre_snr(data)
        return FLOAT_LOWPASS if snr is not None and snr < LOWPASS_LATTICE_SNR else None
    if not scattered_objects(data.meta) or _lowpass(data, opts) is None:
        return None
    snr = centre_snr(data)
    return FLOAT_LOWPASS if snr is not None and snr < LOWPASS_SNR else None


#: Rules for invariant models on a patch set, applied in order to the options not given
#: (a rule sees the user's options and the earlier rules' choices).
POSE_PATCH_RULES: tuple[tuple[str, Rule], ...] = (
    ("invariances", lambda data, opts: ["rotation", "translation"]),
    ("rotation_mode", lambda data, opts: "full" if "rotation" in _invariances(opts) else None),
    # the MLP encoder of the tuned micrograph recipe for a lattice's atoms: on the synthetic lattices of
    # the tests it separates substituted atoms better (> 0.9) than the equivariant encoder (0.86); for
    # scattered objects (galaxies, particles: LATTICE_ORDER) the equivariant one, as rotation_mode
    # 'full' takes elsewhere (an audit's galaxy field: angles 0.56 / 0.58 modulo 180 degrees against
    # 0.28 / 0.04, k-means of the classes 0.96 / 0.81 against 0.62 / 0.64, seeds 0 / 1)
    ("encoder", lambda data, opts: (None if opts.get("rotation_mode") != "full" else
                                    "equivariant" if scattered_objects(data.meta) else "mlp")),
    ("latent_dim", lambda data, opts: PATCH_LATENT_DIM),
    ("hidden", lambda data, opts: [32, 32]),
    ("likelihood", lambda data, opts: "gaussian" if "noise_sigma" in data.meta else None),
    ("lowpass", _patch_lowpass),
    ("content_anchor", _content_anchor),
    ("sigma", _sigma_at_least(SIGMA_FLOOR)),
    ("sigma_radius", lambda data, opts: PATCH_SIGMA_RADIUS if opts.get("likelihood") == "gaussian" else None),
)

#: Model family -> the rules of its patch-set defaults. The jrvae takes the crvae's (its default anchors are off):
#: ``bench_lattice.py --model jrvae`` (seed 0; grain-angle error, substituted atoms' precision / recall by its
#: own two classes, square / hexagonal / rectangular) 0.56 / 0.29 / 0.60 deg, 0.42 / 0.00 / 0.19, 0.95 / 0.00 /
#: 0.96, against 31.1 / 27.4 / 19.3 deg, 0.09 / 0.03 / 0.11, 0.95 / 0.26 / 0.69 without; class_balance 0, 1 or 3,
#: one content latent or no k-means start left its classes on one class or off the substituted atoms.
CLASS_POSE_PATCH_RULES = _for_classes(POSE_PATCH_RULES)
PATCH_SET_DEFAULTS: dict[str, tuple[tuple[str, Rule], ...]] = {"rvae": POSE_PATCH_RULES, "crvae": CLASS_POSE_PATCH_RULES,
                                                                "jrvae": CLASS_POSE_PATCH_RULES}

#: Rules for 1-D signals (:mod:`affinevae.data.spectra`): a Gaussian likelihood whose sigma is the
#: noise estimate (the rVAE's default invariance there is the shift); flat encoders and decoders
#: for the families without a pose decoder, the warp decoder for those with one.
_GAUSSIAN_RULES: tuple[tuple[str, Rule], ...] = (
    ("likelihood", lambda data, opts: "gaussian"),
    ("sigma", _sigma_at_least(SPECTRA_SIGMA_FLOOR)),
)
_FLAT_RULES: tuple[tuple[str, Rule], ...] = (("encoder", lambda data, opts: "mlp"), ("decoder", lambda data, opts: "mlp"))
#: Smallest sigma chosen for 1-D signals by the families that discover their classes (jvae, jrvae). At the
#: noise estimate (0.019 on ``bench_spectra.py``'s cube) the likelihood outweighs their class-balance term
#: and every pixel ends in one class (class accuracy 0.520 / 0.674 = the largest phase's share, seeds 0 / 1,
#: although the classifier's start was 0.96 right). Sigma 0.05: 1.000 / 0.674 (seed 1 still one class);
#: 0.1: 1.000 / 0.958 (seed 1's smallest phase, 43 of 1 024 pixels, merged into another); 0.2: 1.000 / 0.699.
SPECTRA_CLASS_SIGMA_FLOOR = 0.1
_CLASS_GAUSSIAN_RULES: tuple[tuple[str, Rule], ...] = (
    ("likelihood", lambda data, opts: "gaussian"),
    ("sigma", _sigma_at_least(SPECTRA_CLASS_SIGMA_FLOOR)),
)
#: The pose families' decoder for 1-D signals: 'warp' (a conv decoder renders the canonical spectrum once, the
#: shift warps it) rather than the per-sample coordinate MLP ('spatial'), which renders peaks a few samples
#: wide as broad piecewise-linear humps. Measured (a spectra audit: 300 Raman-like spectra of 128 samples,
#: Lorentzian peaks 3-5 samples wide, shifts +-4; rvae, 2 latents, spectra defaults): reconstruction PSNR
#: 29.9 dB against 22.3, mean ELBO +231 against -332 nats, within-class shift error sd 0.29-0.37 against
#: 0.55-0.70 samples; ``bench_spectra.py`` (seed 0): peaks' shift r 0.997 against 0.992, ratio |r| 0.999
#: against 0.967, cube accuracy 1.000 and classes 1.000 / 1.000 both; about 2.3x the time per step
#: (5 300 against 12 400 signals/s on 2 threads).
_POSE_DECODER_RULES: tuple[tuple[str, Rule], ...] = (("decoder", lambda data, opts: "warp"),)
SPECTRA_DEFAULTS: dict[str, tuple[tuple[str, Rule], ...]] = {
    "rvae": _POSE_DECODER_RULES + _GAUSSIAN_RULES, "crvae": _POSE_DECODER_RULES + _GAUSSIAN_RULES,
    "vae": _FLAT_RULES + _GAUSSIAN_RULES,
    "cvae": _FLAT_RULES + _GAUSSIAN_RULES, "ae": _FLAT_RULES + (("likelihood", lambda data, opts: "mse"),),
    # the rVAE's relatives with discovered or partly given classes or targets
    **{name: _GAUSSIAN_RULES for name in ("ssvae", "ssregvae")},
    **{name: _POSE_DECODER_RULES + _GAUSSIAN_RULES for name in ("ssrvae", "ssregrvae")},
    "jvae": _CLASS_GAUSSIAN_RULES, "jrvae": _POSE_DECODER_RULES + _CLASS_GAUSSIAN_RULES,
}

#: Optimiser steps a set of 1-D signals' epoch count aims at (at least).
SPECTRA_MIN_STEPS = 3000

#: The data kind :func:`data_kind` gives measurements that the loaders put onto [0, 1]
#: (``ImageSet.meta['pixel_scaling']`` of a kind in :data:`FLOAT_SCALINGS`: min-max scaled cryo-EM ``.mrcs``
#: particle stacks, float TIFF, HDF5, .npy; asinh-stretched raw flux, FITS, and integers given
#: ``--stretch asinh``), which carry no ``meta['kind']`` of their own.
FLOAT_KIND = "float-images"
#: Smallest Gaussian sigma chosen for float images (their noise estimate is the sigma).
FLOAT_SIGMA_FLOOR = 0.01
#: Float images over the full circle (the rvae; ``rotation_mode='full'``): a set of fewer than
#: :data:`SMALL_FLOAT_SET` images trains in batches of :data:`SMALL_FLOAT_BATCH` for at least
#: :data:`SMALL_FLOAT_STEPS` optimiser steps (at least :data:`DEFAULT_EPOCHS`, at most :data:`MAX_EPOCHS`
#: epochs) when ``--batch-size`` / ``--epochs`` are not given. An audit's particles (three shapes over the full
#: circle, 40 px, peak signal-to-noise about 3, `--invariances rotation,translation --latent-dim 4`; per-shape
#: angle concentration modulo its symmetry / k-means of the content): at batches of 100 for 10 epochs the content
#: latents went unused, 200 / 500 / 500 (another draw) / 2 000 particles 0.70 / 0.57, 0.83 / 0.62, 0.57 / 0.64,
#: 0.73 / 0.57; with this rule 0.99 / 0.99 (84 epochs), 0.98 / 1.00 (30), 0.99 / 1.00 (35), 0.99 / 1.00 (10);
#: 500 at batches of 100 for 90 epochs (as many steps) 0.74 / 0.66: the smaller batch, not only the steps;
#: 4 000 particles keep the family's batches (0.98 / 1.00; at 32: 0.95 / 1.00). 100 particles (given the full
#: circle): 0.98 / 0.99 (170 epochs, about 2 minutes on one thread). Digits are not float images: 500 full-circle
#: digits at 32 for 35 epochs k-means 0.83 against 0.98 at the family's batches. About 500 steps left one seed in
#: three short (500 particles seeds 0 / 1 / 2: 0.98 / 1.00, 0.99 / 1.00, 0.74 / 0.87; 40 x 56 crops cut square,
#: seed 0: 0.59 / 0.61); about 1 000 steps: 0.995 / 1.00, 0.996 / 1.00, 0.95 / 1.00; the crops 0.80 / 0.88;
#: 200 particles seed 1 0.99 / 0.995, 2 000 (18 epochs) 0.99 / 1.00 (about 350 images/s on one thread: 1-1.5
#: minutes for 200-2 000 particles). The steps are counted over the images given (a validation share included).
#: Measured for the rvae only: the crvae keeps its family's batches.
SMALL_FLOAT_SET = 2500
SMALL_FLOAT_BATCH = 32
SMALL_FLOAT_STEPS = 1000
#: ... at this Adam learning rate (the family's full-circle 3e-3 scaled to the smaller batch, about linearly) when
#: ``--lr`` is not given (also for a ``--batch-size`` of 32 or less given). At 3e-3 three runs in ten turned a third of one shape's particles over by half a turn, the
#: content splitting that shape (1 000 particles, the shapes above, centred or moved back to the centre, seeds 0-3:
#: 0.75 / 0.67, 0.65 / 0.71, 0.75 / 0.88; one more 0.89 / 1.00, six 0.99 / 1.00), while the pose anchor's targets held
#: the comma's angles 0.96 consistent (the model 0.26); at 1e-3 those four 0.99 / 1.00 each, 200 particles seed 1
#: 0.98 / 1.00, 500 seed 2 0.99 / 1.00 (0.95 at 3e-3), 2 000 seed 0 0.99 / 1.00; 900 galaxies (asinh floats, 18
#: epochs) angles / k-means 0.955 / 0.978 against 0.960 / 0.960 at 3e-3 (benchmarks/EXPERIMENTS.md "Off-centre stacks").
SMALL_FLOAT_LR = 1e-3


def data_kind(data: ImageSet) -> Optional[str]:
    """The kind of ``data`` whose defaults :func:`data_defaults` applies: ``meta['kind']`` (a patch set,
    spectra), else :data:`FLOAT_KIND` for measurements the loaders put onto [0, 1] (:data:`FLOAT_SCALINGS`:
    floats min-max scaled, or stretched by asinh), else None (images in [0, 1] as given, uint8/uint16
    files, built-in sets)."""
    kind = data.meta.get("kind")
    if kind is not None:
        return kind
    scaling = PixelScaling.from_value(data.meta.get("pixel_scaling"))
    return FLOAT_KIND if scaling is not None and scaling.kind in FLOAT_SCALINGS else None


#: The pixel scalings (:attr:`PixelScaling.kind`) of measurements whose images take the float-image rules.
#: The asinh stretch's too (stop 48): an astronomer's galaxy cut-outs as raw flux (900 x 48 px, elliptical /
#: barred / spiral over the full circle, 10 epochs, seed 0) took Bernoulli after the stretch, angle
#: concentration mod 180 per class 0.887 / 0.996 / 0.073 (the spirals' turn in the content), k-means 0.994;
#: with these rules 0.989 / 0.997 / 0.713, k-means 0.901. ``bench_galaxies.py`` (seeds 0 / 1): angles
#: 0.954 / 0.954 -> 0.961 / 0.959, k-means 0.938 / 0.942 -> 0.991 / 0.997.
FLOAT_SCALINGS = ("minmax", "asinh")


#: Rules for the rvae/crvae on float images: a Gaussian likelihood whose sigma is the measured pixel
#: noise, behind a low-pass filter of :data:`FLOAT_LOWPASS` pixels (which keeps the noise's level). On
#: 4 000 particles of three shapes over the full circle (``benchmarks/bench_particles.py``, 10 epochs,
#: seed 0; angle concentration / k-means / 10-NN of the content) at a peak signal-to-noise of 9:
#: Bernoulli (the former default, whose implicit noise of about half the range drowns zero-mean noisy
#: floats: content latents unused) 0.670 / 0.886 / 0.934, the Gaussian alone 0.886 / 0.965 / 0.975,
#: with the filter 0.983 / 0.994 / 0.999; at 1.8: 0.522 / 0.389 / 0.425, 0.415 / 0.377 / 0.430 (both
#: unused), 0.923 / 0.973 / 0.981.
FLOAT_RULES: tuple[tuple[str, Rule], ...] = (
    ("likelihood", lambda data, opts: "gaussian"),
    ("lowpass", _lowpass),
    ("content_anchor", _content_anchor),
    ("sigma", _sigma_at_least(FLOAT_SIGMA_FLOOR, _measured_noise)),  # the measured pixel noise (the filter keeps it)
)
CLASS_FLOAT_RULES = _for_classes(FLOAT_RULES)


@dataclasses.dataclass(frozen=True)
class KindDefaults:
    """What :func:`data_defaults` chooses for one kind of data (``ImageSet.meta['kind']``).

    Attributes:
        words: names such data in the printed line (e.g. 'patch-set').
        families: model family -> its rules (families not listed get no defaults).
        batch_size, lr, kl_warmup: chosen when not given (None: the trainer's, not announced).
        min_steps: optimiser steps the epoch count aims at when ``--epochs`` is not given (None:
            :data:`DEFAULT_EPOCHS`, not announced).
        family_training: the batch size and learning rate are :data:`FAMILY_TRAINING`'s, as for
            plain images (``batch_size``/``lr`` unused).
    """

    words: str
    families: dict
    batch_size: Optional[int]
    lr: Optional[float]
    min_steps: Optional[int]
    kl_warmup: Optional[float] = None
    family_training: bool = False


#: Model family -> (batch size, Adam learning rate) when ``--batch-size``/``--lr`` are not given
#: and no data-kind rule chose them (plain images): the settings its benchmark was tuned with.
#: With the trainer's (128, 1e-3) instead, on the benchmarks' rotated MNIST (10 epochs, seed 0):
#: jrvae class accuracy 0.43 / 0.45 (seeds 0 / 1) against 0.69 / 0.69 (10 000 digits,
#: bench_classes.py); rvae -ELBO 173.4, 10-NN 0.440, NMI 0.342 against 166.7, 0.524, 0.415
#: (20 000 digits, bench_rvae.py). The ssrvae is not listed: with 1 000 labels it reached
#: 0.947 at (128, 1e-3) and 0.943 at (50, 2e-3). A key ``"FAMILY:full"`` holds the family's
#: settings with ``rotation_mode='full'`` (:func:`family_training`): a full-circle rvae at lr 3e-3
#: against 2e-3 (bench_full_circle.py, seeds 0 / 1 / 2): k-means 0.629 / 0.612 / 0.586 against
#: 0.573 / 0.606 / 0.556, 10-NN 0.790 / 0.782 / 0.797 against 0.772 / 0.773 / 0.791, angle
#: concentration 0.845 / 0.853 / 0.859 against 0.847 / 0.857 / 0.858 (4e-3: 0.563 / 0.764 / 0.851, seed 0).
#: A full-circle crvae (same protocol with the labels, 2 content latents) at (100, 3e-3) against the
#: trainer's (128, 1e-3), seeds 0 / 1: per-class angle concentration 0.897 / 0.891 against 0.862 /
#: 0.869, test -ELBO 146.8 / 148.2 against 149.4 / 148.9 nats.
FAMILY_TRAINING: dict[str, tuple[int, float]] = {"jrvae": (50, 2e-3), "rvae": (100, 2e-3), "rvae:full": (100, 3e-3),
                                                 "crvae:full": (100, 3e-3)}


def training_key(model: str, options: Mapping[str, Any]) -> str:
    """The :data:`FAMILY_TRAINING` key for family ``model`` built with model ``options``:
    ``"model:full"`` when there is one and the options ask for ``rotation_mode='full'`` with the
    group-equivariant encoder (the default there; the one the entry was measured with), else ``model``."""
    full = options.get("rotation_mode") == "full" and options.get("encoder") in (None, "equivariant")
    return f"{model}:full" if full and f"{model}:full" in FAMILY_TRAINING else model


def family_training(model: str, options: Mapping[str, Any]) -> tuple[Optional[int], Optional[float]]:
    """(batch size, Adam learning rate) of :data:`FAMILY_TRAINING` for family ``model`` built with
    model ``options`` (its entry under :func:`training_key`); (None, None) for a family not listed
    (the trainer's then)."""
    return FAMILY_TRAINING.get(training_key(model, options), (None, None))

#: ``ImageSet.meta['kind']`` -> its :class:`KindDefaults`.
KIND_DEFAULTS: dict[str, KindDefaults] = {
    PATCH_SET_KIND: KindDefaults("patch-set", PATCH_SET_DEFAULTS, PATCH_BATCH_SIZE, PATCH_LR, MIN_STEPS, PATCH_KL_WARMUP),
    SPECTRA_KIND: KindDefaults("spectra", SPECTRA_DEFAULTS, None, None, SPECTRA_MIN_STEPS),
    FLOAT_KIND: KindDefaults("float-image", {"rvae": FLOAT_RULES, "crvae": CLASS_FLOAT_RULES}, None, None, None,
                             family_training=True),
}

#: Where the user overrides each chosen option.
OVERRIDE_FLAGS = {"invariances": "--invariances", "rotation_mode": "--set", "encoder": "--encoder", "decoder": "--decoder",
                  "latent_dim": "--latent-dim", "hidden": "--hidden", "likelihood": "--likelihood", "lowpass": "--lowpass", "content_anchor": "--set", "content_targets": "--set", "sigma": "--sigma", "sigma_radius": "--set",
                  "batch_size": "--batch-size", "lr": "--lr", "kl_warmup": "--kl-warmup", "epochs": "--epochs"}


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def orientation_default(data: ImageSet, model: str, options: Mapping[str, Any]):
    """Whether a model that infers the angle should take ``rotation_mode='full'`` on ``data``: the
    :class:`~affinevae.pose.sync.OrientationSpread` of its images (:func:`~affinevae.pose.sync.orientation_spread`,
    seed 0) when family ``model`` has a ``rotation_mode``, infers the rotation (``invariances`` among
    ``options`` or the family's own), is not told the mode, and ``data`` are images that no data kind's rules
    decide for (plain images and float measurements; not patch sets or spectra); else None. Objects turned
    over the full circle (particles, cells, galaxies; digits turned by more than about 100 degrees either
    way) are ``full_circle``, those with an upright are not (digits within +-60 degrees)."""
    from .pose.sync import orientation_spread

    return orientation_spread(data.images) if orientation_asked(data, model, options) else None


def orientation_asked(data: ImageSet, model: str, options: Mapping[str, Any]) -> bool:
    """Whether :func:`orientation_default` measures ``data``'s orientations for family ``model`` with
    ``options``: it has a ``rotation_mode``, infers the rotation, is not told the mode, and ``data`` are
    images that no data kind's rules decide for."""
    return "rotation_mode" not in options and angle_rules_apply(data, model, options)


def angle_rules_apply(data: ImageSet, model: str, options: Mapping[str, Any]) -> bool:
    """Whether the image rules for the angle (the orientation default, the off-centre and full-circle encoder
    warnings) apply: ``data`` are images that no data kind's rules decide for (plain images and float
    measurements; not patch sets or spectra) and family ``model`` with ``options`` infers the angle
    (:func:`infers_rotation`)."""
    return data_kind(data) in (None, FLOAT_KIND) and infers_rotation(model, options)


def infers_rotation(model: str, options: Mapping[str, Any]) -> bool:
    """Whether family ``model`` built with ``options`` infers the objects' angle: it has a ``rotation_mode``
    and ``rotation`` among its ``invariances`` (given, or the family's own)."""
    from .registry import MODELS

    if model not in MODELS:
        return False
    config_class = MODELS.get(model).config_class
    if "rotation_mode" not in config_class.field_names():
        return False
    invariances = options.get("invariances", config_class().invariances)
    if isinstance(invariances, str):
        invariances = [v.strip() for v in invariances.split(",")]
    return "rotation" in tuple(invariances or ())


def off_centre_offset(data: ImageSet, model: str, options: Mapping[str, Any]) -> Optional[tuple[float, float]]:
    """The (down, right) pixels the objects of ``data``'s images sit off the image centre
    (:func:`~affinevae.pose.sync.off_centre`) where that matters: family ``model`` with ``options`` infers their
    angle and they are plain or float images (not patch sets or spectra); else None."""
    from .pose.sync import off_centre

    if data.images.shape[-2] < 2 or not angle_rules_apply(data, model, options):
        return None
    return off_centre(data.images)


def off_centre_warning(data: ImageSet, model: str, options: Mapping[str, Any]) -> None:
    """Warn (one line, :func:`~affinevae.pose.sync.off_centre_note`) when family ``model`` with ``options``
    infers the angle of images (plain or float, not patch sets or spectra) whose objects sit off the image
    centre (:func:`off_centre_offset`): the orientation rules read them as upright, and angles over the full
    circle fail (an audit's particles 5 px off in 40 px: angles 0.08 whether the prior was kept or the full circle
    given)."""
    from .pose.sync import off_centre_sentence

    offset = off_centre_offset(data, model, options)
    if offset is not None:
        warnings.warn(f"{data.source}: {off_centre_sentence(offset)}", stacklevel=user_stacklevel())


def centring_default(data: ImageSet, model: str, options: Mapping[str, Any]) -> Optional[tuple[tuple[int, int], str]]:
    """``train --centre auto``: when family ``model`` with ``options`` infers the angle of ``data``'s images (plain
    or float, not patch sets or spectra) and their objects sit off the image centre (:func:`off_centre_offset`),
    the whole-pixel (down, right) move that brings their mean there
    (:func:`~affinevae.data.centring.whole_pixel_move`, as :func:`~affinevae.data.centring.mean_shift`) and one
    line saying so; else None. An audit's particles 5 px off in 40-px crops trained angles 0.07 (concentration)
    as they were, 0.99 moved so (benchmarks/EXPERIMENTS.md "Off-centre stacks")."""
    from .data.centring import offset_words, whole_pixel_move

    offset = off_centre_offset(data, model, options)
    if offset is None:
        return None
    move = whole_pixel_move(offset)
    return move, (f"affinevae: centring: the objects' mean sat {math.hypot(*offset):.1f} px off the image centre "
                  f"({offset_words(*offset)}): every image moved {offset_words(*move)} (pixels wrapped round), so that turns "
                  "are about the objects (--centre none keeps them as they are)")


def full_circle_encoder_warning(data: ImageSet, model: str, options: Mapping[str, Any]) -> None:
    """Warn (one line) when family ``model`` is to infer angles over the full circle (``rotation_mode='full'``)
    with an encoder other than the equivariant one on ``data``, plain or float images (a lattice's patch set takes
    the MLP by its own rule): it reads the angle as the former full mode did (MNIST over the full circle: angle
    concentration 0.06; an audit's non-square particles with ``--encoder conv``: 0.08, silently). For images that
    are not square it names ``train --square``."""
    encoder = options.get("encoder")
    if options.get("rotation_mode") != "full" or encoder in (None, "equivariant") or not angle_rules_apply(data, model, options):
        return
    h, w = data.images.shape[-2:]
    square = "" if h == w else f"; it needs square images: pad or crop these {h}x{w} ones square (train --square pad or crop)"
    warnings.warn(f"rotation_mode=full with encoder '{encoder}': only the equivariant encoder recovers angles over the "
                  f"full circle (the others learnt none on digits turned over it: concentration 0.06){square}",
                  stacklevel=user_stacklevel())


def epochs_for_steps(images: int, batch_size: int, steps: int, at_least: int = 1) -> int:
    """Epochs for about ``steps`` optimiser steps over ``images`` images in batches of ``batch_size``:
    ``ceil(steps / ceil(images / batch_size))``, at least ``at_least`` and at most :data:`MAX_EPOCHS`."""
    return min(MAX_EPOCHS, max(at_least, math.ceil(steps / math.ceil(images / batch_size))))


def defaults_family(model: str) -> str:
    """The family whose defaults family ``model`` takes: its own name where the defaults name it (or it is
    not registered), else the nearest base class's registered family that they name: a plugin registered as a
    subclass of the rVAE takes the rVAE's batch size, learning rate and data rules (it took the trainer's
    generic ones)."""
    from .registry import MODELS

    named = {key.split(":")[0] for key in FAMILY_TRAINING} | {name for kind in KIND_DEFAULTS.values()
                                                               for name in kind.families}
    if model in named or model not in MODELS:
        return model
    bases = (vars(base).get("family") for base in MODELS.get(model).__mro__[1:])
    return next((name for name in bases if name in named), model)


def data_defaults(data: ImageSet, model: str, given: dict, batch_size: Optional[int],
                  epochs: Optional[int], lr: Optional[float] = None,
                  kl_warmup: Optional[float] = None, python: bool = False) -> tuple[dict, dict, str]:
    """Model and training options for training ``model`` on ``data``: ``(options, train, line)`` of
    :func:`chosen_defaults` (see there), without what was chosen."""
    options, train, _, line = chosen_defaults(data, model, given, batch_size, epochs, lr, kl_warmup, python)
    return options, train, line


def chosen_defaults(data: ImageSet, model: str, given: dict, batch_size: Optional[int],
                    epochs: Optional[int], lr: Optional[float] = None,
                    kl_warmup: Optional[float] = None, python: bool = False) -> tuple[dict, dict, dict, str]:
    """Model and training options for training ``model`` on ``data``, with the user's choices kept.

    Args:
        data: the training set; ``data.meta`` says whether it is a patch set.
        model: the model family name (e.g. ``"rvae"``).
        given: the model options the user gave (as passed to ``build_model``); they always win.
        batch_size: images per optimiser step if given (``--batch-size``), else None.
        epochs: ``--epochs`` if given, else None.
        lr: the Adam learning rate if given (``--lr``), else None.
        kl_warmup: the KL warm-up fraction if given (``--kl-warmup``), else None.
        python: the line names the options as Python takes them (``build_model``'s and
            :class:`~affinevae.training.TrainConfig`'s keywords) instead of the ``train`` command's flags.

    Returns:
        ``(options, train, chosen, line)``: ``given`` plus the chosen model options; the training options
        ``{"batch_size", "lr", "kl_warmup", "epochs"}`` (the values given, else for a patch set and
        a family of :data:`PATCH_SET_DEFAULTS` :data:`PATCH_BATCH_SIZE`, :data:`PATCH_LR`,
        :data:`PATCH_KL_WARMUP` and ``ceil(MIN_STEPS / ceil(len(data) / batch_size))`` clipped to
        [1, MAX_EPOCHS], else :data:`FAMILY_TRAINING`'s batch size and learning rate for a family
        listed there, the trainer's defaults and :data:`DEFAULT_EPOCHS`); ``chosen``, the model and
        training options chosen from the data (by name; empty when none); and one line naming
        what was chosen and how to override it, e.g. ``affinevae: patch-set defaults:
        invariances=rotation,translation rotation_mode=full encoder=mlp (a lattice: lattice order 0.44)
        latent_dim=4 hidden=32,32 likelihood=gaussian sigma=0.1 sigma_radius=0.7 batch_size=32 lr=0.003 kl_warmup=0.3 epochs=116 (override
        with ...)`` or ``affinevae: jrvae defaults: batch_size=50 lr=0.002 (override with
        --batch-size/--lr)``, or ``""`` when nothing was chosen.

    Raises:
        AffineVAEError: a ``batch_size`` below 1.
    """
    if batch_size is not None:
        check_int("batch_size", batch_size, 1)
    model = defaults_family(model)  # a plugin subclass of a family: that family's defaults
    options = dict(given)
    kind = KIND_DEFAULTS.get(data_kind(data))
    rules = None if kind is None else kind.families.get(model)
    chosen: dict[str, Any] = {}
    why: dict[str, str] = {}
    from .pose.sync import orientation_spread, orientation_unmeasured

    asked = orientation_asked(data, model, options)  # (orientation_default's test, asked once)
    off_centre_warning(data, model, options)
    spread = orientation_spread(data.images) if asked else None
    # the prior kept, unmeasured: said why (non-square images, too few)
    unmeasured = orientation_unmeasured(data.images) if asked and spread is None else None
    if spread is not None and spread.full_circle:  # before the kind's rules, which read it
        options["rotation_mode"] = chosen["rotation_mode"] = "full"
        why["rotation_mode"] = f" ({spread.sentence()})"
    full_circle_encoder_warning(data, model, options)
    if rules is not None:
        for name, rule in rules:
            if name not in given:
                value = rule(data, options)
                if value is not None:
                    options[name] = chosen[name] = value
    train: dict[str, Any] = {}
    # what is chosen when not given: the data kind's values, else the family's (plain images), else the trainer's
    key = training_key(model, options)  # plain images: the family's entry (its full-circle one where it has one)
    preset = ((kind.batch_size, kind.lr, kind.kl_warmup) if rules is not None and not kind.family_training
              else (*FAMILY_TRAINING.get(key, (None, None)), None))
    for (name, value, default), chosen_value in zip((("batch_size", batch_size, TrainConfig.batch_size),
                                                     ("lr", lr, TrainConfig.lr),
                                                     ("kl_warmup", kl_warmup, TrainConfig.kl_warmup)), preset):
        if value is None and chosen_value is not None:
            value = chosen[name] = chosen_value
        train[name] = default if value is None else value
    small_float = (data_kind(data) == FLOAT_KIND and key == "rvae:full" and len(data) < SMALL_FLOAT_SET)
    if small_float and batch_size is None:  # a small float set over the full circle: smaller batches, more steps
        train["batch_size"] = chosen["batch_size"] = SMALL_FLOAT_BATCH
        why["batch_size"] = f" (fewer than {SMALL_FLOAT_SET} float images over the full circle)"
    if small_float and lr is None and train["batch_size"] <= SMALL_FLOAT_BATCH:  # small batches' learning rate
        train["lr"] = chosen["lr"] = SMALL_FLOAT_LR
    train["epochs"] = epochs
    if epochs is None and small_float:
        train["epochs"] = epochs_for_steps(len(data), train["batch_size"], SMALL_FLOAT_STEPS, DEFAULT_EPOCHS)
        if train["epochs"] != DEFAULT_EPOCHS:
            chosen["epochs"] = train["epochs"]
            why["epochs"] = f" (about {SMALL_FLOAT_STEPS} steps for {len(data)} images)"
    elif epochs is None and (rules is None or kind.min_steps is None):
        train["epochs"] = DEFAULT_EPOCHS
    elif epochs is None:
        train["epochs"] = chosen["epochs"] = epochs_for_steps(len(data), train["batch_size"], kind.min_steps)
    kept = (spread is not None and not spread.full_circle) or unmeasured is not None  # the prior kept: said too
    if not chosen and not kept:
        return options, train, {}, ""
    named = (["rotation_mode"] if kept else []) + list(chosen)
    flags = ("/".join(f"{k}=" for k in named) if python
             else "/".join(dict.fromkeys(OVERRIDE_FLAGS[k] for k in named)))
    if "lowpass" in chosen and rules in (POSE_PATCH_RULES, CLASS_POSE_PATCH_RULES):
        what = "objects fainter than the noise:" if scattered_objects(data.meta) else "a noisy hexagonal lattice: 6-fold bonds,"
        why["lowpass"] = f" ({what} centre SNR {centre_snr(data):.2f})"
    if "sigma" in chosen and rules in (FLOAT_RULES, CLASS_FLOAT_RULES):
        why["sigma"] = " (the pixel noise)"
    if "encoder" in chosen and "lattice_order" in data.meta and rules is not None:  # why this encoder
        what = "scattered objects" if chosen["encoder"] == "equivariant" else "a lattice"
        why["encoder"] = f" ({what}: lattice order {data.meta['lattice_order']:.2f})"
    elif "encoder" in chosen and "objects_per_frame" in data.meta and rules is not None:
        why["encoder"] = f" (scattered objects: at most {data.meta['objects_per_frame']:.0f} per frame)"
    reason = spread.sentence() if spread is not None else unmeasured
    shown = " ".join(([f"rotation_mode={options.get('rotation_mode', 'gaussian')} kept ({reason})"] if kept
                      else []) + [f"{k}={_show(v)}{why.get(k, '')}" for k, v in chosen.items()])
    words = (f"{model} over the full circle" if key.endswith(":full") else model) if rules is None else kind.words
    words += " defaults"
    if rules is not None and kind.family_training and key.endswith(":full"):
        words += f" ({model} over the full circle)"
    return options, train, dict(chosen), f"affinevae: {words}: {shown} (override with {flags})"
