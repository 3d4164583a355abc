"""Defaults that depend on the data: the one place ``affinevae train`` chooses them.

A patch set written by ``affinevae patches`` says so (``ImageSet.meta["kind"] == "patches"``)
and carries a robust estimate of its pixel noise (``meta["noise_sigma"]``, in the intensity
units ``train`` sees). For such data and a model family listed in :data:`PATCH_SET_DEFAULTS`
(``rvae``, ``crvae``), :func:`data_defaults` chooses micrograph-appropriate options: both
rotation and translation latents, a uniform prior on the angle (``rotation_mode=full``: the
objects have no preferred orientation) with the MLP encoder, 4 content latents and a small
spatial decoder (32, 32), a Gaussian likelihood whose ``sigma`` is the noise estimate (at least
:data:`SIGMA_FLOOR`), batches of :data:`PATCH_BATCH_SIZE` at learning rate :data:`PATCH_LR`,
and enough epochs for about :data:`MIN_STEPS` optimiser steps (at most :data:`MAX_EPOCHS`).
Every option the user gave wins. Any other data or family gets exactly the options given,
the trainer's batch size and learning rate, and :data:`DEFAULT_EPOCHS`.

Why these values (``benchmarks/bench_lattice.py``, two-grain lattices with 5 % substituted
atoms): with the pixel-noise sigma itself (about 0.04) or 2 content latents the latents
describe the neighbours around each atom and k-means misses the substituted atoms
(precision 0.03-0.43); with sigma >= 0.1 and 4 latents one latent separates them (ROC AUC 1.0).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

from .data.formats import PATCH_SET_KIND
from .data.imageset import ImageSet
from .data.inputs import check_int
from .training import TrainConfig

__all__ = ["DEFAULT_EPOCHS", "MIN_STEPS", "MAX_EPOCHS", "SIGMA_FLOOR", "PATCH_BATCH_SIZE", "PATCH_LR",
           "PATCH_SET_DEFAULTS", "data_defaults"]

#: Epochs when ``--epochs`` is not given and no data rule applies (TrainConfig's default).
DEFAULT_EPOCHS: int = TrainConfig.epochs
#: Optimiser steps a patch set's epoch count aims at (at least).
MIN_STEPS = 6000
#: Most epochs the patch-set rule chooses.
MAX_EPOCHS = 200
#: Smallest Gaussian sigma chosen from a noise estimate (intensity units; images span [0, 1]): a
#: smaller sigma makes the latents spend themselves on neighbours and sub-pixel detail.
SIGMA_FLOOR = 0.1
#: Batch size and Adam learning rate for a patch set when ``--batch-size``/``--lr`` are not given.
PATCH_BATCH_SIZE = 32
PATCH_LR = 3e-3

#: A rule: (data, the options so far) -> the value of its option, or None to leave it unset.
Rule = Callable[[ImageSet, dict], Any]


def _invariances(options: dict) -> tuple:
    inv = options.get("invariances", ())
    if isinstance(inv, str):
        inv = [s.strip() for s in inv.split(",") if s.strip()]
    return tuple(inv)


def _estimated_sigma(data: ImageSet, options: dict) -> Optional[float]:
    sigma = data.meta.get("noise_sigma")
    if sigma is None or options.get("likelihood") != "gaussian":
        return None
    return float(f"{max(float(sigma), SIGMA_FLOOR):.3g}")  # the value printed is the value used


#: Rules for invariant models on a patch set, applied in order to the options not given
#: (a rule sees the user's options and the earlier rules' choices).
POSE_PATCH_RULES: tuple[tuple[str, Rule], ...] = (
    ("invariances", lambda data, opts: ["rotation", "translation"]),
    ("rotation_mode", lambda data, opts: "full" if "rotation" in _invariances(opts) else None),
    # the MLP encoder of the tuned micrograph recipe: on the synthetic lattices of the tests it
    # separates substituted atoms better (> 0.9) than the equivariant encoder (0.86) that
    # rotation_mode 'full' takes otherwise
    ("encoder", lambda data, opts: "mlp" if opts.get("rotation_mode") == "full" else None),
    ("latent_dim", lambda data, opts: 4),
    ("hidden", lambda data, opts: [32, 32]),
    ("likelihood", lambda data, opts: "gaussian" if "noise_sigma" in data.meta else None),
    ("sigma", _estimated_sigma),
)

#: Model family -> the rules of its patch-set defaults.
PATCH_SET_DEFAULTS: dict[str, tuple[tuple[str, Rule], ...]] = {"rvae": POSE_PATCH_RULES, "crvae": POSE_PATCH_RULES}

#: Where the user overrides each chosen option.
OVERRIDE_FLAGS = {"invariances": "--invariances", "rotation_mode": "--set", "encoder": "--encoder",
                  "latent_dim": "--latent-dim", "hidden": "--hidden", "likelihood": "--likelihood", "sigma": "--sigma",
                  "batch_size": "--batch-size", "lr": "--lr", "epochs": "--epochs"}


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def data_defaults(data: ImageSet, model: str, given: dict, batch_size: Optional[int],
                  epochs: Optional[int], lr: Optional[float] = None) -> tuple[dict, dict, str]:
    """Model and training options for training ``model`` on ``data``, with the user's choices kept.

    Args:
        data: the training set; ``data.meta`` says whether it is a patch set.
        model: the model family name (e.g. ``"rvae"``).
        given: the model options the user gave (as passed to ``build_model``); they always win.
        batch_size: images per optimiser step if given (``--batch-size``), else None.
        epochs: ``--epochs`` if given, else None.
        lr: the Adam learning rate if given (``--lr``), else None.

    Returns:
        ``(options, train, line)``: ``given`` plus the chosen model options; the training options
        ``{"batch_size", "lr", "epochs"}`` (the values given, else for a patch set and a family of
        :data:`PATCH_SET_DEFAULTS` :data:`PATCH_BATCH_SIZE`, :data:`PATCH_LR` and
        ``ceil(MIN_STEPS / ceil(len(data) / batch_size))`` clipped to [1, MAX_EPOCHS], else the
        trainer's defaults and :data:`DEFAULT_EPOCHS`); and one line naming what was chosen and
        how to override it, e.g. ``affinevae: patch-set defaults: invariances=rotation,translation
        rotation_mode=full encoder=mlp latent_dim=4 hidden=32,32 likelihood=gaussian sigma=0.1
        batch_size=32 lr=0.003 epochs=116 (override with ...)``, or ``""`` when nothing was chosen.

    Raises:
        AffineVAEError: a ``batch_size`` below 1.
    """
    train: dict[str, Any] = {"batch_size": batch_size, "lr": lr, "epochs": epochs}
    if batch_size is not None:
        check_int("batch_size", batch_size, 1)
    options = dict(given)
    rules = PATCH_SET_DEFAULTS.get(model) if data.meta.get("kind") == PATCH_SET_KIND else None
    if rules is None:
        train = {"batch_size": TrainConfig.batch_size if batch_size is None else batch_size,
                 "lr": TrainConfig.lr if lr is None else lr, "epochs": DEFAULT_EPOCHS if epochs is None else epochs}
        return options, train, ""
    chosen: dict[str, Any] = {}
    for name, rule in rules:
        if name not in given:
            value = rule(data, options)
            if value is not None:
                options[name] = chosen[name] = value
    for name, value in (("batch_size", PATCH_BATCH_SIZE), ("lr", PATCH_LR)):
        if train[name] is None:
            train[name] = chosen[name] = value
    if epochs is None:
        steps_per_epoch = math.ceil(len(data) / train["batch_size"])
        train["epochs"] = chosen["epochs"] = min(MAX_EPOCHS, max(1, math.ceil(MIN_STEPS / steps_per_epoch)))
    flags = "/".join(dict.fromkeys(OVERRIDE_FLAGS[k] for k in chosen))
    shown = " ".join(f"{k}={_show(v)}" for k, v in chosen.items())
    return options, train, f"affinevae: patch-set defaults: {shown} (override with {flags})" if chosen else ""
