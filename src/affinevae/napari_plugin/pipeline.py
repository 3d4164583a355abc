"""``patches`` -> ``train`` -> ``map`` on one in-memory image, for the napari widget (no napari or Qt needed)."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Union

import numpy as np

from ..config import check_seed, check_symmetry
from ..defaults import MIN_IMAGE_SIZE, PATCH_LATENT_DIM
from ..devices import DEVICE_CHOICES, resolve_device
from ..errors import AffineVAEError

__all__ = ["LearnSettings", "learn_and_map"]

#: Model families the widget offers (unconditional ones: patches have no labels).
FAMILIES = ("rvae", "vae", "avae", "ae")
#: What the widget does with an image's NaN/inf pixels (masked ones): 'drop' the patches whose window holds
#: one (``patches --drop-masked``), or keep them 'fill'ed with the frame's median (``patches --fill-nan``).
MASKED_MODES = ("drop", "fill")


@dataclasses.dataclass(frozen=True)
class LearnSettings:
    """What the widget runs, validated at construction.

    Attributes:
        window: patch size in pixels (>= :data:`~affinevae.defaults.MIN_IMAGE_SIZE`, 8: the smallest images ``fit`` trains on). model: family in :data:`FAMILIES`.
        latent_dim: content latents (>= 1). epochs: training epochs (None: the patch-set
            defaults of :func:`affinevae.defaults.data_defaults`). clusters: K for the classes,
            clusters as ``map --clusters`` makes them (:func:`affinevae.mapping.cluster_objects`)
            (None: none). min_distance, threshold: object detection (pixels, None: a quarter of the
            window as ``patches`` takes it, :func:`affinevae.defaults.patch_min_distance`; fraction of the range,
            None: as ``patches`` takes it, 0.3, or 0 on an asinh-stretched sparse field where the noise floor
            decides, :func:`affinevae.data.patches.default_threshold`).
        batch_size: images per step (None: the patch-set default). seed: training.
        sigma: detection's Gaussian smoothing in pixels before finding maxima (None: a sixteenth of the
            window, as ``patches`` takes it, :func:`affinevae.defaults.patch_smoothing`; 0: none; ``patches
            --sigma``: noisy micrographs need a few pixels). invert: dark objects on a bright background
            (raw cryo-EM contrast): every pixel read as 1 minus its normalised value (``patches
            --invert``). noise_floor: a relative threshold raised to at least this many noise sigma above
            the frame's median (None: the ``patches`` default, 5 on an asinh-stretched frame such as a
            sparse sky, else off; 0: off).
        lowpass: the model's low-pass filter in pixels (``train --lowpass``, ``ModelConfig.lowpass``;
            None: the patch-set defaults choose, 0: none).
        background: 'auto' (the frame flattened where its background is uneven, ``patches --background``,
            :func:`affinevae.data.patches.resolve_background`), 'off' (or None), or a box side in pixels (>= 4).
        masked: for an image with NaN/inf pixels (a mosaic's empty border, a masked region; :data:`MASKED_MODES`):
            'drop' (default) fills them for the detection and leaves out every patch whose window holds one
            (``patches --drop-masked``), 'fill' keeps those patches with the pixels filled by the frame's median
            (``patches --fill-nan``). An image without such pixels is cut the same either way.
        centre: where each object's patch is cut (``patches --centre``, :data:`~affinevae.data.patches.CENTRE_MODES`):
            'auto' (default; around the objects' brightness centres where scattered objects lie off their
            peaks, :func:`affinevae.data.patches.resolve_centring`), 'peak' or 'mass'.
        device: where the model trains: 'auto' (default: a GPU when torch sees one, as ``train`` does), 'cpu'
            or 'cuda' (``TrainConfig.device``).
        symmetry: the objects' n-fold rotational symmetry for the angles (``map --symmetry``, 1..12); None:
            estimated (:func:`affinevae.mapping.estimate_symmetry`), with a note when the windows are too
            small to show a lattice's arrangement (:func:`affinevae.mapping.small_window_note`).
    """

    window: int = 16
    model: str = "rvae"
    latent_dim: int = PATCH_LATENT_DIM
    epochs: Optional[int] = None
    clusters: Optional[int] = 2
    min_distance: Optional[int] = None
    threshold: Optional[float] = None
    batch_size: Optional[int] = None
    seed: int = 0
    sigma: Optional[float] = None
    invert: bool = False
    noise_floor: Optional[float] = None
    lowpass: Optional[float] = None
    background: Union[str, int, None] = "auto"
    masked: str = "drop"
    centre: str = "auto"
    device: str = "auto"
    symmetry: Optional[int] = None

    def __post_init__(self) -> None:
        if isinstance(self.symmetry, np.integer):
            object.__setattr__(self, "symmetry", int(self.symmetry))
        if self.symmetry is not None:
            check_symmetry(self.symmetry)
        for name in ("window", "latent_dim", "epochs", "clusters", "min_distance", "batch_size", "seed"):
            v = getattr(self, name)  # numpy integers (a spin box's, an array's) as Python ones
            if isinstance(v, np.integer):
                object.__setattr__(self, name, int(v))
        for name in ("threshold", "sigma", "noise_floor", "lowpass"):
            v = getattr(self, name)
            if isinstance(v, (np.floating, np.integer)) and not isinstance(v, np.bool_):
                object.__setattr__(self, name, float(v))
        if self.model not in FAMILIES:
            raise AffineVAEError(f"model must be one of {', '.join(FAMILIES)}, got {self.model!r}")
        for name, lo in (("window", MIN_IMAGE_SIZE), ("latent_dim", 1)) + (
                (("min_distance", 1),) if self.min_distance is not None else ()) + (
                (("batch_size", 1),) if self.batch_size is not None else ()):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise AffineVAEError(f"{name} must be an integer >= {lo}, got {v!r}")
        if self.epochs is not None and (isinstance(self.epochs, bool) or not (isinstance(self.epochs, (int, np.integer))
                                                                             and self.epochs >= 1)):
            raise AffineVAEError(f"epochs must be an integer >= 1 (or None for the defaults), got {self.epochs!r}")
        check_seed(self.seed)
        if self.clusters is not None and (isinstance(self.clusters, bool)
                                          or not (isinstance(self.clusters, (int, np.integer)) and self.clusters >= 1)):
            raise AffineVAEError(f"clusters must be an integer >= 1 (or None), got {self.clusters!r}")
        if self.threshold is not None and (isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float))
                                           or not math.isfinite(self.threshold) or not 0 <= self.threshold <= 1):
            raise AffineVAEError(f"threshold must be a number in 0..1 (a fraction of the way from the frame's minimum "
                                 f"to its maximum; None: the default), got {self.threshold!r}")
        if not isinstance(self.invert, (bool, np.bool_)):
            raise AffineVAEError(f"invert must be True or False, got {self.invert!r}")
        for name, what in (("sigma", "a number >= 0 pixels (or None: a sixteenth of the window; 0: none)"),
                           ("noise_floor", "a number >= 0 noise sigma (or None: the default)"),
                           ("lowpass", "a number >= 0 pixels (or None: the defaults; 0: none)")):
            v = getattr(self, name)
            ok = v is None or (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                               and math.isfinite(v) and v >= 0)
            if not ok:
                raise AffineVAEError(f"{name} must be {what}, got {v!r}")
        if isinstance(self.background, np.integer):
            object.__setattr__(self, "background", int(self.background))
        if self.background is None:  # as iter_patches reads it: off
            object.__setattr__(self, "background", "off")
        from ..data.patches import BACKGROUND_MODES, check_smoothing

        b = self.background
        if not ((isinstance(b, str) and b in BACKGROUND_MODES)
                or (isinstance(b, int) and not isinstance(b, bool) and b >= 4)):
            raise AffineVAEError(f"background must be 'auto', 'off' or a box side of at least 4 pixels, got {b!r}")
        check_smoothing(self.sigma, self.window)
        from ..data.patches import CENTRE_MODES

        if not isinstance(self.centre, str) or self.centre not in CENTRE_MODES:
            raise AffineVAEError(f"centre must be one of {', '.join(map(repr, CENTRE_MODES))}, got {self.centre!r}")
        if self.masked not in MASKED_MODES:
            raise AffineVAEError(f"masked must be one of {', '.join(map(repr, MASKED_MODES))}, got {self.masked!r}")
        if self.device not in DEVICE_CHOICES:
            raise AffineVAEError(f"device must be one of {', '.join(map(repr, DEVICE_CHOICES))}, got {self.device!r}")
        resolve_device(self.device)  # 'cuda' on a machine without one: one line now, not after the patches are cut


def learn_and_map(image: np.ndarray, settings: LearnSettings = LearnSettings(),
                  report: Optional[Callable[[float, str], None]] = None) -> dict:
    """Cut patches around the objects of ``image``, train a model on them and map it.

    Args:
        image: (H, W) or (C, H, W) frame (any numeric dtype; normalised as ``patches`` does).
        settings: :class:`LearnSettings`.
        report: called with ``(fraction done in [0, 1], what)`` after each stage and epoch (from
            the calling thread; the widget forwards it to its progress bar).

    Returns:
        dict: ``encoding`` (:class:`~affinevae.encoding.ObjectEncoding`), ``cluster`` (N,) labels
        (-1 when not clustered), ``symmetry`` (the estimated n of n-fold symmetry), ``model`` (the
        trained model), ``history`` (per-epoch records) and ``note``: how many objects were left out for
        masked pixels (``masked='drop'``), what the 'auto' background did where
        it flattened the frame (:meth:`~affinevae.data.patches.BackgroundCheck.sentence`), where the objects were
        cut around their brightness centres (:meth:`~affinevae.data.patches.CentringCheck.sentence`) and, where the
        settings leave threshold and noise floor at their defaults on a frame that is not stretched, the
        advice of :func:`~affinevae.data.patches.detection_check` (a sparse field's noise peaks or faint
        objects), joined by '; '; else None.

    Raises:
        AffineVAEError: no objects found, bad settings, training problems.
    """

    from ..data.background import BACKGROUND_VARIATION
    from ..data.patches import SPARSE_NOISE_FLOOR, cut_patches, detection_check, resolve_background, resolve_centring
    from ..data.stacks import open_stack
    from ..defaults import data_defaults
    from ..encoding import encode_patchset
    from ..mapping import cluster_objects, estimate_symmetry, small_window_note
    from ..models.base import build_model
    from ..training import TrainConfig, fit

    say = report or (lambda fraction, what: None)
    img = np.asarray(image)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[0] > 4):
        raise AffineVAEError(f"the image must be one (H, W) frame, or (C, H, W) of at most 4 channels, got shape "
                             f"{img.shape}")
    say(0.0, "finding objects")
    src = open_stack(img if img.ndim == 2 else img[None])
    if settings.invert:
        src.use_invert()
    masked = np.issubdtype(img.dtype, np.inexact) and not np.isfinite(img).all()
    if masked:  # filled for the detection (and, 'fill', in the patches): said in a warning
        src.use_fill_nan()
    box, flat = resolve_background(src, settings.window, settings.background, settings.sigma)
    src.use_background(box)  # the detection check below reads the frame as the patches were cut
    centring, centred = resolve_centring(src, settings.window, settings.centre, min_distance=settings.min_distance,
                                         threshold=settings.threshold, sigma=settings.sigma,
                                         noise_floor=settings.noise_floor)
    ps = cut_patches(src, settings.window, min_distance=settings.min_distance, threshold=settings.threshold,
                     sigma=settings.sigma, noise_floor=settings.noise_floor, background=box or "off",
                     drop_masked=masked and settings.masked == "drop", centre=centring)
    notes = []
    if ps.n_masked:
        notes.append(f"{ps.n_masked} objects whose window holds masked (NaN) pixels left out (masked 'fill' keeps "
                     "them, filled with the median)")
    if flat is not None and flat.variation > BACKGROUND_VARIATION:  # flattened, or uneven but left as it is
        notes.append(flat.sentence("background 'off'", f"background={flat.box}"))
    if centred is not None and centred.recentre:
        notes.append(centred.sentence("centre 'peak'"))
    if settings.threshold is None and settings.noise_floor is None:
        check = detection_check(src, settings.window, settings.min_distance, settings.sigma)
        advice = check.advice_for(f"threshold 0 and noise floor {SPARSE_NOISE_FLOOR:g}") if check is not None else None
        notes += [advice] if advice else []
    note = "; ".join(notes) or None
    data = ps.imageset("layer")
    given = {"latent_dim": settings.latent_dim, **({} if settings.lowpass is None else {"lowpass": settings.lowpass})}
    options, train, _ = data_defaults(data, settings.model, given, settings.batch_size, settings.epochs)
    epochs = train["epochs"]
    say(0.1, f"{len(ps)} objects; training {settings.model} for {epochs} epochs")
    model = build_model(settings.model, seed=settings.seed, image_shape=list(data.images.shape[1:]), **options)
    config = TrainConfig(epochs=epochs, batch_size=train["batch_size"], lr=train["lr"], kl_warmup=train["kl_warmup"],
                         seed=settings.seed, val_split=0.0, checkpoint=False, progress=False, device=settings.device)

    def epoch_done(record: dict) -> None:
        say(min(0.9, 0.1 + 0.8 * int(record["epoch"]) / epochs), f"epoch {record['epoch']}/{epochs}: "
            f"loss {record.get('train_loss', float('nan')):.4g}")
    result = fit(model, data, config, callbacks=[epoch_done])
    say(0.9, "mapping")
    enc = encode_patchset(result.model, ps)
    if not enc.has_angle:
        symmetry = 1
    elif settings.symmetry is not None:
        symmetry = settings.symmetry
    else:
        symmetry = estimate_symmetry(ps.patches, seed=settings.seed)
        small = None if symmetry != 1 else small_window_note(  # as map: only where no symmetry was found
            ps, "give the symmetry (LearnSettings.symmetry, the widget's 'symmetry')")
        if small is not None:  # as map says it: a lattice's atoms seen one by one
            note = "; ".join(filter(None, [note, small]))
    cluster = (cluster_objects(result.model, enc.z_mean, min(settings.clusters, len(enc)), seed=settings.seed)[0]
               if settings.clusters else np.full(len(enc), -1, np.int64))
    say(1.0, f"mapped {len(enc)} objects")
    return {"encoding": enc, "cluster": cluster, "symmetry": symmetry, "model": result.model,
            "history": result.history, "note": note}
