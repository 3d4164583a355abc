"""Defaults that depend on the data: the one place ``affinevae train`` chooses them.

A patch set written by ``affinevae patches`` says so (``ImageSet.meta["kind"] == "patches"``)
and carries a robust estimate of its pixel noise (``meta["noise_sigma"]``, in the intensity
units ``train`` sees). For such data and a model family listed in :data:`PATCH_SET_DEFAULTS`
(``rvae``, ``crvae``), :func:`data_defaults` chooses micrograph-appropriate options: both
rotation and translation latents, a uniform prior on the angle (``rotation_mode=full``: the
objects have no preferred orientation) with the MLP encoder, a Gaussian likelihood whose ``sigma`` is the noise
estimate (floored at :data:`SIGMA_FLOOR`), and enough epochs for about :data:`MIN_STEPS`
optimiser steps (at most :data:`MAX_EPOCHS`). Every option the user gave wins. Any other data
or family gets exactly the options given and :data:`DEFAULT_EPOCHS`.

A set of 1-D signals (``meta["kind"] == "spectra"``, :mod:`affinevae.data.spectra`) gets
:data:`SPECTRA_DEFAULTS` the same way (a Gaussian likelihood with the estimated noise as sigma;
flat encoder and decoder for the vae/cvae/ae) and the same epoch rule.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

from .data.formats import PATCH_SET_KIND
from .data.imageset import ImageSet
from .data.inputs import check_int
from .data.spectra import SPECTRA_KIND
from .training import TrainConfig

__all__ = ["DEFAULT_EPOCHS", "MIN_STEPS", "MAX_EPOCHS", "SIGMA_FLOOR", "PATCH_SET_DEFAULTS", "data_defaults"]

#: Epochs when ``--epochs`` is not given and no data rule applies (TrainConfig's default).
DEFAULT_EPOCHS: int = TrainConfig.epochs
#: Optimiser steps a patch set's epoch count aims at (at least).
MIN_STEPS = 3000
#: Most epochs the patch-set rule chooses.
MAX_EPOCHS = 200
#: Smallest Gaussian sigma chosen from a noise estimate (intensity units; images span [0, 1]).
SIGMA_FLOOR = 0.01

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
    ("likelihood", lambda data, opts: "gaussian" if "noise_sigma" in data.meta else None),
    ("sigma", _estimated_sigma),
)

#: Model family -> the rules of its patch-set defaults.
PATCH_SET_DEFAULTS: dict[str, tuple[tuple[str, Rule], ...]] = {"rvae": POSE_PATCH_RULES, "crvae": POSE_PATCH_RULES}

#: Rules for 1-D signals (:mod:`affinevae.data.spectra`): a Gaussian likelihood whose sigma is the
#: noise estimate (the rVAE's default invariance there is the shift); flat encoders and decoders
#: for the families without a pose decoder.
_GAUSSIAN_RULES: tuple[tuple[str, Rule], ...] = (
    ("likelihood", lambda data, opts: "gaussian"),
    ("sigma", _estimated_sigma),
)
_FLAT_RULES: tuple[tuple[str, Rule], ...] = (("encoder", lambda data, opts: "mlp"), ("decoder", lambda data, opts: "mlp"))
SPECTRA_DEFAULTS: dict[str, tuple[tuple[str, Rule], ...]] = {
    "rvae": _GAUSSIAN_RULES, "crvae": _GAUSSIAN_RULES, "vae": _FLAT_RULES + _GAUSSIAN_RULES,
    "cvae": _FLAT_RULES + _GAUSSIAN_RULES, "ae": _FLAT_RULES + (("likelihood", lambda data, opts: "mse"),),
}

#: ``ImageSet.meta['kind']`` -> (the words naming such data in the printed line, family -> rules).
KIND_DEFAULTS: dict[str, tuple[str, dict]] = {PATCH_SET_KIND: ("patch-set", PATCH_SET_DEFAULTS),
                                              SPECTRA_KIND: ("spectra", SPECTRA_DEFAULTS)}

#: Where the user overrides each chosen option.
OVERRIDE_FLAGS = {"invariances": "--invariances", "rotation_mode": "--set", "encoder": "--encoder", "decoder": "--decoder",
                  "likelihood": "--likelihood",
                  "sigma": "--sigma", "epochs": "--epochs"}


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def data_defaults(data: ImageSet, model: str, given: dict, batch_size: int,
                  epochs: Optional[int]) -> tuple[dict, int, str]:
    """Model options and epochs for training ``model`` on ``data``, with the user's choices kept.

    Args:
        data: the training set; ``data.meta`` says whether it is a patch set.
        model: the model family name (e.g. ``"rvae"``).
        given: the model options the user gave (as passed to ``build_model``); they always win.
        batch_size: images per optimiser step (to count steps per epoch).
        epochs: ``--epochs`` if given, else None.

    Returns:
        ``(options, epochs, line)``: ``given`` plus the chosen options; the epochs to train
        (``epochs`` when given; for a patch set and a family of :data:`PATCH_SET_DEFAULTS`
        ``ceil(MIN_STEPS / ceil(len(data) / batch_size))`` clipped to [1, MAX_EPOCHS]; else
        :data:`DEFAULT_EPOCHS`); and one line naming what was chosen and how to override it,
        e.g. ``affinevae: patch-set defaults: invariances=rotation,translation rotation_mode=full
        likelihood=gaussian sigma=0.071 epochs=60 (override with --invariances/--set/--likelihood/
        --sigma/--epochs)``, or ``""`` when nothing was chosen.

    Raises:
        AffineVAEError: a ``batch_size`` below 1.
    """
    bs = check_int("batch_size", batch_size, 1)
    options = dict(given)
    words, by_family = KIND_DEFAULTS.get(data.meta.get("kind"), ("", {}))
    rules = by_family.get(model)
    if rules is None:
        return options, DEFAULT_EPOCHS if epochs is None else epochs, ""
    chosen: dict[str, Any] = {}
    for name, rule in rules:
        if name not in given:
            value = rule(data, options)
            if value is not None:
                options[name] = chosen[name] = value
    if epochs is None:
        steps_per_epoch = math.ceil(len(data) / bs)
        epochs = chosen["epochs"] = min(MAX_EPOCHS, max(1, math.ceil(MIN_STEPS / steps_per_epoch)))
    if not chosen:
        return options, epochs, ""
    flags = "/".join(dict.fromkeys(OVERRIDE_FLAGS[k] for k in chosen))
    shown = " ".join(f"{k}={_show(v)}" for k, v in chosen.items())
    return options, epochs, f"affinevae: {words} defaults: {shown} (override with {flags})"
