"""``affinevae train``: train any registered model on built-in or user data."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..analysis.quality import learning_warnings
from ..defaults import (DEFAULT_EPOCHS, centring_default, FAMILY_TRAINING, MAX_EPOCHS, MIN_IMAGE_SIZE, MIN_STEPS, PATCH_BATCH_SIZE,
                        PATCH_KL_WARMUP, PATCH_LR, check_image_size, data_defaults, lattice_patches)
from ..data.files import read_targets
from ..data.inputs import check_image_shape
from ..errors import AffineVAEError
from ..io import FIT_TARGETS
from ..models.base import build_model
from ..data.centring import CENTRE_MODES, offset_words
from ..data.formats import PATCH_SET_KIND
from ..data.imageset import SQUARE_MODES
from .image_options import add_stretch_option
from ..models.joint import EMBEDDING_START_AGREEMENT
from ..models.rvae import MIN_SYNC_AGREEMENT
from ..models.semisupervised import target_prior_options
from ..outputs import check_output, is_interrupted_start
from ..registry import MODELS
from ..runs import Run, named_loss_terms
from ..training import TrainConfig, finish_distributed, fit, init_distributed
from . import COMMANDS
from .common import (add_data_arguments, counted, data_noun, load_data_from_args, parse_int_list, parse_set_options,
                     seed_arg)


def loss_unit(model) -> str:
    """What ``model``'s losses are counted in: 'nats', or 'squared error' for the AE's plain sum of
    squared errors (likelihood 'mse', not a density)."""
    return "squared error" if getattr(model.config, "likelihood", "") == "mse" else "nats"


def losses_text(record: dict, noun: str = "image", unit: str = "nats") -> str:
    """An epoch record's losses as ``train`` says them: ``train loss 268.18 (with pose_anchor 36.82),
    val loss 158.90 nats/image`` (``noun``: 'signal' for 1-D signal models; ``unit``: :func:`loss_unit`).
    The training loss holds the model's named extra terms (the validation loss does not), so they are
    named beside it."""
    extra = named_loss_terms(record).items()
    terms = f" (with {', '.join(f'{k} {v:.2f}' for k, v in extra)})" if extra else ""
    val = f", val loss {record['val_loss']:.2f}" if "val_loss" in record else ""
    return f"train loss {record.get('train_loss', float('nan')):.2f}{terms}{val} {unit}/{noun}"


#: Seconds the fit's start takes for 10 000 28 x 28 images on one CPU thread (measured on full-circle MNIST):
#: the synchronisation (its neighbour search grows as N times min(N, 10 000)), t-SNE in 2-D and in 3-D
#: (grows with the min(N, 10 000) images it embeds).
PREFIT_SECONDS = {"sync": 23.0, "embed2": 27.0, "embed3": 77.0}


def prefit_line(config, n: int = 10000) -> Optional[str]:
    """The line ``train`` prints before a fit whose model config (``config``) prepares its anchors when
    the fit starts (the pose anchor's synchronisation, the content anchor's t-SNE), which takes a while
    before the first step, with an estimate for ``n`` training images (:data:`PREFIT_SECONDS`, scaled;
    "a few seconds" under 5 s); None for other models."""
    if not getattr(config, "pose_anchor", 0):
        return None
    embed = getattr(config, "content_anchor", 0) and getattr(config, "content_targets", None) == "embedding"
    m = min(n, 10000) / 1e4  # the synchronisation's pool and t-SNE's embedded images are at most 10 000
    seconds = PREFIT_SECONDS["sync"] * (n / 1e4) * m
    if embed:
        seconds += PREFIT_SECONDS["embed3" if config.latent_dim == 3 else "embed2"] * m
    when = "a few seconds" if seconds < 5 else f"about {round(seconds, -1 if seconds >= 60 else 0):.0f} s"
    images = counted(n, "image").replace(str(n), f"{n:,}".replace(",", " "))  # 10 000 images
    what = ("synchronised (pose anchor) and embedded by t-SNE (content anchor)" if embed else
            "synchronised (pose anchor)") + f": {when} for {images} on one CPU thread"
    return f"affinevae: before the first step the training images are {what}"


#: What :func:`training_notes` says of each kind of content-anchor target (the epoch record's key).
CONTENT_ANCHOR_NOTES = {"content_anchor_embedded": "a t-SNE embedding",
                        "content_anchor_components": "the principal components"}


def training_notes(record: dict, said: set) -> list[str]:
    """The lines ``train`` prints when an epoch's ``record`` shows something the model did before
    or during it, each once per run (``said`` keeps which were printed): the pose anchor's
    synchronisation (before the first epoch), the content anchor's targets and the joint model's
    k-means start of its classifier."""
    lines = []
    if "pose_sync_agreement" in record and "sync" not in said:
        said.add("sync")
        agree = record["pose_sync_agreement"]
        fold = record.get("pose_sync_symmetry") or 1
        modulo = (f" modulo {360 / fold:g} degrees ({fold}-fold symmetric objects: chosen by the synchronisation "
                  "unless --set anchor_symmetry=N sets it)" if fold > 1 else "")
        lines.append(f"affinevae: pose anchor: the training images' angles synchronised{modulo} with agreement {agree:.2f}; "
                     + ("the encoder's angle is anchored to them (pose_anchor)" if "train_pose_anchor" in record else
                        f"below {MIN_SYNC_AGREEMENT:g} (objects whose turns cannot be told apart), so the anchor "
                        "is left off"))
    for key, what in CONTENT_ANCHOR_NOTES.items():
        if key in record and "content" not in said:
            said.add("content")
            lines.append(f"affinevae: content anchor: the content latents are held to {what} of the training images "
                         "turned into that frame (--set content_anchor=0 turns it off)")
    if "class_kmeans_start" in record and "kmeans" not in said:
        said.add("kmeans")
        how = ("aligned k-means (compared at their best turns)" if record.get("class_kmeans_aligned") else
               "k-means of the signals' Fourier magnitudes (whatever their shift)" if record.get("class_kmeans_spectrum") else
               "k-means of a t-SNE embedding (synchronised into one frame)" if record.get("class_kmeans_embedded")
               else "k-means")
        why = (f" (their views synchronised with agreement below {EMBEDDING_START_AGREEMENT:g}, too faint for "
               "the embedding start)" if record.get("class_kmeans_fallback") else "")
        lines.append(f"affinevae: the classifier started from {how} of the training images before epoch "
                     f"{record['epoch']} (class_init){why}")
    return lines


def epoch_line(record: dict, epochs: int, noun: str = "image", unit: str = "nats") -> str:
    """The line ``train`` writes for each finished epoch when no progress bar is drawn (stderr is not a
    terminal): ``epoch 3/10: train loss 160.21, val loss 158.90 nats/image, 1234 images/s`` (the
    losses as :func:`losses_text` says them; ``noun``: 'signal' for 1-D signal models)."""
    return (f"epoch {record['epoch']}/{epochs}: {losses_text(record, noun, unit)}, "
            f"{record.get('images_per_s', float('nan')):.0f} {noun}s/s")


#: ``train --centre``: :data:`affinevae.data.centring.CENTRE_MODES` plus 'auto' (the default,
#: :func:`affinevae.defaults.centring_default`) and 'none'.
TRAIN_CENTRE_MODES = ("auto", "none", *CENTRE_MODES)


def centred_data(args: argparse.Namespace, data, given: dict) -> tuple[Any, str]:
    """``data`` (an :class:`~affinevae.data.imageset.ImageSet`) with its objects moved to the image centre as
    ``args.centre`` says, for ``args.model`` with the model options ``given``, and the line that says what was
    done ('' when nothing was). 'auto': :func:`affinevae.defaults.centring_default`; 'mean' / 'mass':
    :meth:`~affinevae.data.imageset.ImageSet.centred`; 'none': as they are. A resumed run (``args.resume``) makes
    the move its training recorded (``meta['centre']``), and none if it recorded none."""
    mode = getattr(args, "centre", "auto") or "auto"
    run = Run(args.out) if args.resume else None
    if run is not None and run.has_training:
        recorded = run.meta.get("centre")
        return (data, "") if recorded is None else (data.centred(recorded), "")
    if mode == "none":
        return data, ""
    if mode != "auto" and data.meta.get("kind") == PATCH_SET_KIND:
        raise AffineVAEError(f"--centre {mode}: {data.source} is a patch set, cut around its objects (patches --centre "
                             "decides where); leave --centre out")
    if mode == "auto":
        decided = centring_default(data, args.model, given)
        return (data, "") if decided is None else (data.centred(decided[0]), decided[1])
    out = data.centred(mode)
    if mode == "mass":
        return out, "affinevae: centring (--centre mass): each image moved onto its object's brightness centre"
    move = out.meta["centre"]
    return out, (f"affinevae: centring (--centre mean): every image moved {offset_words(*move)} (pixels wrapped round)"
                 if any(move) else "affinevae: centring (--centre mean): the objects' mean sits at the centre already")


def _signal_hint(data) -> str:
    """check_image_size's hint for images one pixel high (or wide) and long: perhaps 1-D signals."""
    h, w = data.image_shape[1:]
    return "; for 1-D signals (spectra) give --signal-axis" if min(h, w) == 1 and max(h, w) >= MIN_IMAGE_SIZE else ""


@COMMANDS.register("train")
class Train:
    """``affinevae train`` (see :attr:`help`): ``add_arguments`` registers its options, ``run`` executes it."""

    help = "train a model (ae, vae, cvae, rvae, crvae, avae, jvae, jrvae, ssvae, ssrvae, ...) and write a run directory"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Register the command's options on ``p``."""
        from .. import models  # noqa: F401  (register the families)

        p.add_argument("--model", required=True, help=f"model family: {', '.join(MODELS.names())}")
        add_data_arguments(p)
        add_stretch_option(p)
        p.add_argument("--square", choices=SQUARE_MODES, default=None,
                       help="make images that are not square square, for objects turned over the full circle (its "
                            "equivariant encoder needs a square grid): pad (the short side mirrored outwards) or crop "
                            "(the long side cut about the centre); the run remembers it for its other data")
        p.add_argument("--centre", "--center", dest="centre", choices=TRAIN_CENTRE_MODES, default="auto",
                       help="move the objects to the image centre, about which turns are made: auto (default: every "
                            "image moved by the same whole pixels when their mean sits off the centre and the model "
                            "infers angles; said), mean (that move always), mass (each image onto its own object's "
                            "brightness centre) or none; the run remembers the move for its other data")
        p.add_argument("--out", required=True, help="run directory (checkpoints, metrics.jsonl, model)")
        p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
        p.add_argument("--val-data", help="validation data (same forms as --data; built-ins use their test split); "
                                          "default: hold out --val-split of --data")
        g = p.add_argument_group("model options (only those given are passed; unknown ones for a model are errors)")
        g.add_argument("--latent-dim", type=int, help="content latent variables (default 10)")
        g.add_argument("--encoder", help="conv or mlp (conv1d for 1-D signals); rvae/crvae/jrvae/ssrvae: also equivariant "
                                         "(the default with --set rotation_mode=full)")
        g.add_argument("--decoder", help="conv or mlp; rvae: spatial, broadcast or warp")
        g.add_argument("--hidden", help="fully connected widths, e.g. 256,128")
        g.add_argument("--channels", help="conv feature maps, e.g. 32,64")
        g.add_argument("--activation", help="relu, tanh, gelu, silu, softplus, elu, selu")
        g.add_argument("--likelihood", help="bernoulli, cbernoulli, gaussian (ae: bernoulli or mse)")
        g.add_argument("--sigma", type=float, help="Gaussian pixel sigma")
        g.add_argument("--learn-sigma", action="store_true", default=None, help="learn the Gaussian sigma")
        g.add_argument("--beta", type=float, help="KL weight")
        g.add_argument("--lowpass", type=float, metavar="PX",
                       help="Gaussian low-pass filter of PX pixels (standard deviation) on every image the model "
                            "sees, for noisy data such as cryo-EM particles (default 0: none; try 1.5)")
        g.add_argument("--classes", type=int, help="jvae/jrvae/ssvae/ssrvae: number of classes K of the discrete latent "
                                                   "(jvae/jrvae default 10; ss*: 1 + the largest label)")
        g.add_argument("--targets", help="ssregvae/ssregrvae: file of continuous targets (.npy/.txt/.csv), one row "
                                         "per image, nan where unknown")
        g.add_argument("--invariances", help="rvae/crvae: comma-separated subset of rotation,translation,scale "
                                             "('none' for none); shift for 1-D signals")
        g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any other model option, e.g. --set rotation_prior=1.0 (repeatable)")
        t = p.add_argument_group("training options")
        t.add_argument("--epochs", type=int, default=None,
                       help=f"passes over the data (default {DEFAULT_EPOCHS}; for a patch set and rvae/crvae/jrvae enough "
                            f"for about {MIN_STEPS} steps, at most {MAX_EPOCHS})")
        named = {k.replace(":full", " over the full circle"): v for k, v in FAMILY_TRAINING.items()}
        family_bs = "".join(f", {v[0]} for {k}" for k, v in named.items())
        family_lr = "".join(f", {v[1]:g} for {k}" for k, v in named.items())
        t.add_argument("--batch-size", type=int, default=None,
                       help=f"images per step (default {TrainConfig.batch_size}{family_bs}; {PATCH_BATCH_SIZE} for a "
                            "patch set and rvae/crvae/jrvae)")
        t.add_argument("--lr", type=float, default=None,
                       help=f"Adam learning rate (default {TrainConfig.lr:g}{family_lr}; {PATCH_LR:g} for a patch set "
                            "and rvae/crvae/jrvae)")
        t.add_argument("--kl-warmup", type=float, default=None, metavar="FRACTION",
                       help="raise the KL weight linearly from 0 to --beta over this fraction of the training steps "
                            f"(default 0: none; {PATCH_KL_WARMUP:g} for a patch set and rvae/crvae/jrvae)")
        t.add_argument("--weight-decay", type=float, default=None,
                       help=f"Adam weight decay (default {TrainConfig.weight_decay:g})")
        t.add_argument("--schedule", default=None, help=f"none or cosine (default {TrainConfig.schedule})")
        t.add_argument("--val-split", type=float, default=None,
                       help=f"fraction held out for validation (default {TrainConfig.val_split:g})")
        t.add_argument("--seed", type=seed_arg, default=None, help=f"data order, split, initialisation and sampling "
                                                                   f"(default {TrainConfig.seed})")
        t.add_argument("--device", default="auto", help="auto, cpu or cuda")
        t.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
        t.add_argument("--compile", action="store_true", help="torch.compile the networks while training "
                                                              "(faster after a few seconds' start; needs a C++ compiler on CPU)")
        t.add_argument("--no-progress", action="store_true",
                       help="no progress bar (when stderr is not a terminal: no line per epoch)")
        t.add_argument("--log", action="append", default=None, metavar="NAME",
                       help="experiment tracking: csv, tensorboard or mlflow (repeatable or comma-separated; "
                            "none: no tracking, e.g. to stop a resumed run's)")
        t.add_argument("--log-images-every", type=int, default=None, metavar="N",
                       help=f"with --log: a reconstruction panel every N epochs (0: none; default "
                            f"{TrainConfig.log_images_every})")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Run the command; returns the exit status (user errors raise AffineVAEError)."""
        # every option but the epochs is checked before the data are read; the epochs may depend on them
        resumed = resume_options(args)  # --resume: the run's own training options for those not given again
        loggers = logger_entries(args.log)
        if args.log_images_every is not None and not loggers:
            raise AffineVAEError("--log-images-every: the reconstruction panels go to an experiment tracker; "
                                 "give --log csv, tensorboard or mlflow")
        cfg = TrainConfig(batch_size=TrainConfig.batch_size if args.batch_size is None else args.batch_size,
                          lr=TrainConfig.lr if args.lr is None else args.lr, weight_decay=args.weight_decay,
                          schedule=args.schedule, val_split=args.val_split, seed=args.seed, device=args.device,
                          bf16=args.bf16, compile=args.compile, progress=False if args.no_progress else None,
                          loggers=loggers, log_images_every=(TrainConfig.log_images_every if args.log_images_every
                                                             is None else args.log_images_every),
                          kl_warmup=0.0 if args.kl_warmup is None else args.kl_warmup)
        rank, _ = init_distributed(cfg.device)
        # What was chosen is said once fit's checks have passed, as training starts: a refusal (a damaged
        # checkpoint, a held lock, other data) is then the only line.
        pending: list[str] = []
        if resumed and rank == 0:
            pending.append(resumed)
        check_output(args.out, kind="dir", inputs=[args.data, args.labels, args.val_data], resume=args.resume,
                     resumable=True, model_dir=True, probe_lock=rank == 0)  # (rank 0 takes the lock)
        if args.resume and rank == 0 and not Run(args.out).has_training and not is_interrupted_start(args.out):
            pending.append(f"affinevae: {args.out} holds no run yet: nothing to resume, training from the start")
        with warnings.catch_warnings(record=True) as held:  # the loader's notes wait for the size check: a refusal
            warnings.simplefilter("always")                 # is then the only line
            data = load_data_from_args(args, "train", seed=args.seed)
            check_image_size(data, hint=_signal_hint(data))
            if len(data) == 1 and args.signal_axis is None:  # a 2-D array: one image, or a table of spectra?
                h, w = data.image_shape[1:]
                warnings.warn(f"{data.source}: one image ({h} x {w} pixels) to train on; a micrograph is cut into "
                              f"patches of its objects first (affinevae patches {data.source} --window W); a table of "
                              f"spectra, one per row, is read as {h} signals of {w} samples with --signal-axis 1",
                              stacklevel=1)
        for key in dict.fromkeys((str(w.message), w.category, w.filename, w.lineno) for w in held):  # once each
            warnings.warn_explicit(*key)
        cls = MODELS.get(args.model)
        targets = None
        if args.targets:
            targets = read_targets(args.targets)
            if args.n is not None and len(targets) > len(data):  # one row per image of the file, as --labels
                targets = targets[:len(data)]
            if len(targets) != len(data):
                raise AffineVAEError(f"{args.targets}: {len(targets)} targets for {len(data)} images")
        data, left_out = file_labels_left_out(args, cls, data)
        if left_out and rank == 0:
            pending.append(left_out)
        given = model_options(args, cls, data, targets)
        data, centred = centred_data(args, data, given)
        if centred and rank == 0:
            pending.append(centred)
        # targets in their own units: their prior on the known ones' mean and spread (a default, not given: a
        # resumed run keeps the prior it was built with)
        prior = (target_prior_options(targets) if targets is not None and "target_center" not in given
                 and "target_scale" not in given else {})
        options, train, chosen = data_defaults(data, args.model, given, args.batch_size, args.epochs, args.lr,
                                               args.kl_warmup)
        options = {**options, **prior}
        cfg = cfg.replace(**train)
        if args.resume:
            options, kept = resumed_model_options(args.out, cls, given, options)
            if kept:  # options not given again (or defaults changed since it started): it goes on as it was built
                chosen = f"affinevae: resuming {args.out} with its model options: {kept} (a resumed run keeps them)"
            elif chosen:  # the data's defaults are the run's own: no override (another value is refused)
                chosen = chosen.rpartition(" (override with ")[0] + " (the run's own: a resumed run keeps them)"
        if prior and rank == 0 and all(_as_saved(options.get(k)) == _as_saved(v) for k, v in prior.items()):
            shown = ", ".join(f"({c:g}, {s:g})" for c, s in zip(prior["target_center"], prior["target_scale"]))
            pending.append(f"affinevae: the targets' prior N(mean, sd^2) from the known ones: {shown} (override with "
                           "--set target_center=C --set target_scale=S)")
        model = build_model(args.model, seed=args.seed, **options)  # the caller's global RNG is left as it was
        k = model.mixed_classes if getattr(model, "semi_supervised", False) else 0
        if rank == 0 and not args.resume and args.classes is None and k and k == int(data.num_classes):
            # K from the labels (not --set num_classes=): said, as every default taken from the data
            pending.append(f"affinevae: {args.model} with {k} classes, 0..{k - 1}: the largest known label + 1 "
                           "(override with --classes K)")
        if chosen and rank == 0:  # once the options build a model: a refused one is the only line
            pending.append(chosen)
        # (a resume reads the targets the run derived: nothing to wait for)
        waits = prefit_line(model.config) is not None and not (args.resume and (Path(args.out) / FIT_TARGETS).is_file())

        def announce(n: int) -> None:
            """What was chosen, then what happens before the first step, for the ``n`` images it trains on."""
            for line in pending:
                print(line, flush=True)
            if waits:
                print(prefit_line(model.config, n), flush=True)
        max_angle = data.meta.get("max_angle")  # radians, rotated-mnist --max-angle
        from ..data.spectra import signal_calibration

        meta = {"data": args.data, "labels": args.labels, "key": args.key, "n": args.n, "binarize": args.binarize,
                "max_angle": max_angle, "signal_axis": args.signal_axis,
                "signal_cube": False if args.signal_channels else None,
                "pixel_scaling": data.meta.get("pixel_scaling"),  # other data are scaled alike later
                "data_kind": data.meta.get("kind"),  # a patch set: other images are not scaled as its patches
                "stretch": args.stretch, "fill_nan": bool(args.fill_nan) or None, "square": args.square,
                "centre": data.meta.get("centre"),  # the move made (whole pixels, or 'mass'): other data alike
                "signal_calibration": signal_calibration(data.meta)}  # spectra: their axis's sample size, offset, unit
        names = data.meta.get("label_names") if args.labels else None
        if names is None and args.labels and args.resume and Run(args.out).has_training:
            names = Run(args.out).class_names  # the same labels as numbers (the data's fingerprint holds them)
        if names is not None:  # labels by name: their numbering, for encode and the commands' other labels files
            meta["class_names"] = names
            if rank == 0 and data.meta.get("label_names") is not None:
                shown = ", ".join(f"{name}={k}" for k, name in enumerate(names[:12])) + (", ..." if len(names) > 12 else "")
                pending.append(f"affinevae: {args.labels} names the classes: {shown} (sorted; encode writes "
                               "class_names)")
        source = data.source
        if targets is not None:
            data = (data.images, targets)
            meta["targets"] = args.targets
        val = None
        if args.val_data:
            from ..data import load_dataset
            from ..data.sources import BUILTIN

            val = load_dataset(args.val_data, split="test", seed=args.seed + 1, key=args.key, binarize=args.binarize,
                               max_angle=max_angle if args.val_data == "rotated-mnist" else None,
                               signal_axis=None if args.val_data in BUILTIN else args.signal_axis,
                               signal_cube=None if args.val_data in BUILTIN or not args.signal_channels else False,
                               scaling=meta["pixel_scaling"], stretch=args.stretch or "auto",
                               fill_nan=args.fill_nan and args.val_data not in BUILTIN, square=args.square,
                               centre=meta["centre"])
            check_image_size(val, hint=_signal_hint(val))
            check_image_shape(val.images.shape[1:], model.config.image_shape, where=args.val_data)
            meta["val_data"] = args.val_data
        callbacks = []
        if rank == 0:  # what the model did before or in an epoch, said when that epoch ends (not after the last)
            said: set = set()
            callbacks.append(lambda record: [print(line, flush=True) for line in training_notes(record, said)])
        if rank == 0 and not args.no_progress and not cfg.show_progress():
            # no bar to draw (stderr is a log file: a batch job): one line per epoch instead
            noun = data_noun(model)[:-1]
            unit = loss_unit(model)
            callbacks.append(lambda record: print(epoch_line(record, cfg.epochs, noun, unit), file=sys.stderr,
                                                  flush=True))
        try:
            result = fit(model, data, cfg, out=args.out, val=val, resume=args.resume, meta=meta, callbacks=callbacks,
                         check_learning=False,  # said below, with the command's words
                         on_start=announce)
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM: say what is kept before main's one line
            if rank == 0:
                print(interrupted_line(args.out, cfg.epochs), file=sys.stderr)
            raise
        if rank == 0 and result.epochs_trained:  # (a resume with nothing left: said in fit's warning)
            last = result.history[-1] if result.history else {}
            held = (f"; {result.n_val} more held out for validation" if result.n_val and not args.val_data else "")
            print(f"trained {args.model} on {counted(result.n_train, data_noun(model)[:-1])} ({source}{held}) for "
                  f"{counted(cfg.epochs, 'epoch')}: {losses_text(last, data_noun(model)[:-1], loss_unit(model))}; run in {args.out}")
            meta = getattr(data, "meta", None) or {}
            for line in learning_warnings(model, data.images if hasattr(data, "images") else data[0], seed=args.seed,
                                          lattice=lattice_patches(meta)):
                print(f"affinevae: warning: {line}", file=sys.stderr)
        finish_distributed()  # every rank waits for rank 0's summary before the process group ends
        return 0


def interrupted_line(out, epochs: Optional[int] = None) -> str:
    """What an interrupted ``train`` kept in ``out``: its last checkpoint's epoch and how to go on (the
    same command with ``--resume``), that all its ``epochs`` were trained (stopped after the last
    checkpoint), or that it stopped before its first checkpoint (nothing to resume)."""
    try:
        done = Run(out).epochs_done or 0 if Path(out).is_dir() else 0
    except (AffineVAEError, OSError, ValueError):
        done = 0
    if done and epochs is not None and done >= epochs:
        return f"affinevae: {out} holds all its trained epochs ({done}): the run is complete"
    if done:
        return (f"affinevae: {out} keeps its checkpoint after epoch {done}: run the same command with --resume "
                "to go on from there")
    return f"affinevae: stopped before the first checkpoint of {out}: nothing to resume"


#: Training options that ``train --resume`` takes from the run's ``train.json`` when they are not given
#: again, so that a resumed run continues with its own settings (not with defaults that may have
#: changed since it started, nor with a seed that would draw another validation split).
RESUMED_OPTIONS = ("epochs", "batch_size", "lr", "kl_warmup", "weight_decay", "schedule", "val_split", "seed")


#: Options whose default (when neither given nor resumed) is TrainConfig's own; the others of
#: RESUMED_OPTIONS may also come from the data (:func:`affinevae.defaults.data_defaults`).
TRAINER_DEFAULTS = ("weight_decay", "schedule", "val_split", "seed")


def logger_entries(log: Optional[list]) -> tuple:
    """``TrainConfig.loggers`` from ``--log`` values (names, repeatable or comma-separated; ``none``
    for no tracking) or a resumed run's saved entries (names or logger dicts, kept as they are)."""
    out: list = []
    for v in log or []:
        if isinstance(v, str) and not v.strip(" ,"):
            raise AffineVAEError("--log needs a logger name (csv, tensorboard, mlflow or none), got an empty value")
        out += [n.strip() for n in v.split(",") if n.strip()] if isinstance(v, str) else [v]
    if any(isinstance(n, str) and n.lower() == "none" for n in out):
        if len(out) > 1:
            raise AffineVAEError(f"--log: 'none' turns tracking off and takes no other logger, got {','.join(map(str, out))}")
        return ()
    return tuple(out)


def resume_options(args: argparse.Namespace) -> str:
    """For ``--resume`` of a run directory that holds a training record: set each of
    :data:`RESUMED_OPTIONS` not given on the command line (None in ``args``) to the run's value,
    in place; then each of :data:`TRAINER_DEFAULTS` still None to :class:`TrainConfig`'s. Returns the line saying what was taken (``""`` when nothing was), e.g.
    ``affinevae: resuming runs/rvae with its training options: epochs=10 batch_size=100 lr=0.002 ...
    (override with --epochs/--batch-size/...)``.

    Raises:
        AffineVAEError: the run's ``train.json`` is corrupt (one line naming it).
    """
    taken = {}
    if args.resume and Run(args.out).has_training:
        run = Run(args.out)
        saved = run.train_config
        taken = {k: saved[k] for k in RESUMED_OPTIONS if getattr(args, k) is None and k in saved}
        try:
            TrainConfig(**taken)
        except (AffineVAEError, TypeError, ValueError) as exc:
            raise AffineVAEError(f"{run.train_file}: corrupt training options ({exc})") from None
        for k, v in taken.items():
            setattr(args, k, v)
        if getattr(args, "stretch", "") is None and run.meta.get("stretch"):  # the same pixels, or other data
            args.stretch = taken["stretch"] = run.meta["stretch"]
        elif (getattr(args, "stretch", "") is None and "stretch" not in run.meta
              and (run.meta.get("pixel_scaling") or {}).get("kind") == "minmax"):
            args.stretch = taken["stretch"] = "linear"  # a run from before the stretch: min-max, as it was trained
        if (getattr(args, "data_max_angle", "") is None and args.data == run.meta.get("data") == "rotated-mnist"
                and run.meta.get("max_angle") is not None):  # the same digits: their angle range too
            args.data_max_angle = taken["max_angle"] = round(math.degrees(float(run.meta["max_angle"])), 6)
        if getattr(args, "fill_nan", True) is False and run.meta.get("fill_nan"):
            args.fill_nan = taken["fill_nan"] = True
        if getattr(args, "bf16", True) is False and saved.get("bf16"):  # the same arithmetic (it was dropped)
            args.bf16 = taken["bf16"] = True
        if getattr(args, "square", "") is None and run.meta.get("square"):  # the same images made square alike
            args.square = taken["square"] = run.meta["square"]
        elif getattr(args, "square", None) is not None and args.square != run.meta.get("square"):
            was = f"--square {run.meta['square']}" if run.meta.get("square") else "its images as they are (no --square)"
            raise AffineVAEError(f"--square {args.square}: {args.out} was trained with {was}; resume it the same way "
                                 "(leave --square out), or train a new run")
        if getattr(args, "centre", "auto") not in ("auto", None):  # the recorded move stands (resume_centre)
            recorded = run.meta.get("centre")
            same = ((args.centre == "none" and recorded in (None, [0, 0])) or (args.centre == "mass" and recorded == "mass")
                    or (args.centre == "mean" and isinstance(recorded, list)))
            if not same:
                was = ("its images as they were" if recorded is None else "each image on its object's brightness centre"
                       if recorded == "mass" else f"its images moved {recorded[0]}, {recorded[1]} px (down, right)")
                raise AffineVAEError(f"--centre {args.centre}: {args.out} was trained with {was}; resume it the same "
                                     "way (leave --centre out), or train a new run")
        if getattr(args, "log", []) is None and saved.get("loggers"):  # the same logs go on (a resumed run's own)
            args.log = list(saved["loggers"])
            taken["log"] = ",".join(e if isinstance(e, str) else e.get("logger", "?") for e in args.log)
            if args.log_images_every is None and "log_images_every" in saved:
                args.log_images_every = taken["log_images_every"] = saved["log_images_every"]
    for name in TRAINER_DEFAULTS:  # the rest: the trainer's own (TrainConfig, the one source of them)
        if getattr(args, name) is None:
            setattr(args, name, getattr(TrainConfig, name))
    if not taken:
        return ""
    shown = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in taken.items())
    flags = "/".join(f"--{k.replace('_', '-')}" for k in taken if k not in ("fill_nan", "bf16"))  # (no flag turns those off)
    return (f"affinevae: resuming {args.out} with its training options: {shown}"
            + (f" (override with {flags})" if flags else ""))


def _saved_configs(out, cls) -> tuple[Optional[dict], Optional[dict]]:
    """The model config saved in the run in ``out`` and the same filled by :meth:`~affinevae.config.Config.loaded_dict`
    of ``cls``' config; (None, None) without a saved model."""
    from ..io import MODEL_JSON
    run = Run(out)
    saved = run.model_config if (run.path / MODEL_JSON).is_file() else None
    return (saved, cls.config_class.loaded_dict(saved)) if saved else (None, None)


def _predated(saved: dict, filled: dict, options: dict) -> dict:
    former = {k: v for k, v in filled.items() if k not in saved and k not in options}
    inner_saved, inner_filled = saved.get("inner_config"), filled.get("inner_config")
    if isinstance(inner_saved, dict) and isinstance(inner_filled, dict):  # an AVAE: its inner model's, given flat
        given_inner = options.get("inner_config") or {}
        former.update({k: v for k, v in inner_filled.items()
                       if k not in inner_saved and k not in options and k not in given_inner})
    return {**options, **former} if former else options


def predated_options(out, cls, options: dict) -> dict:
    """For ``--resume`` of the run in ``out``: ``options`` with each model option that the run's saved
    config predates (:meth:`~affinevae.config.Config.saved_dict` of ``cls``' config; an AVAE's inner
    model's too, given at the top level as the command line gives them) and that is not given set to
    its former value, so that a run written by an earlier affinevae resumes as it
    was trained (a full-circle rVAE from before ``anchor_symmetry`` anchors over the full circle)."""
    saved, filled = _saved_configs(out, cls)
    return options if saved is None else _predated(saved, filled, options)


def resumed_model_options(out, cls, given: dict, options: dict) -> tuple[dict, str]:
    """For ``--resume`` of the run in ``out``: :func:`predated_options`, then every model option not in
    ``given`` (the options of the command line now) set to the run's own value where the run's saved
    config (filled by :meth:`~affinevae.config.Config.loaded_dict`) differs from what would be built
    otherwise (``options``: the data's defaults, else the config's defaults), so that ``train --resume``
    continues the run as it was built: with the options its first command gave (``--lowpass 2.5``,
    ``--set rotation_mode=full``) and with the data's defaults of the day it started (a float stack
    trained with the Bernoulli likelihood), instead of being refused as another model. The run's
    config is read once. Returns the options and the changed ones as ``"key=value ..."`` (``""`` when none)."""
    saved, filled = _saved_configs(out, cls)
    if saved is None:
        return options, ""
    options = _predated(saved, filled, options)
    try:  # what the command line would build (None defaults resolved), else the config's plain defaults
        would = cls.config_class.from_dict(options).to_dict()
    except AffineVAEError:
        would = {f.name: f.default for f in dataclasses.fields(cls.config_class) if f.default is not dataclasses.MISSING}
    own = {k: v for k, v in filled.items()
           if k not in given and k != "inner_config" and _as_saved(v) != _as_saved(would.get(k))}
    inner = filled.get("inner_config")
    if isinstance(inner, dict):  # an AVAE: its inner model's options, given flat as the command line gives them
        would_inner = would.get("inner_config") or {}
        own.update({k: v for k, v in inner.items()
                    if k not in given and _as_saved(v) != _as_saved(would_inner.get(k))})
    if not own:
        return options, ""
    try:  # the options given again may not go with the run's own (--latent-dim 5 with its t-SNE content targets)
        cls.config_class.from_dict({**options, **own})
    except AffineVAEError:  # keep the run's own but those resolved from others (None defaults: resolved anew)
        own = {k: v for k, v in own.items() if k not in cls.config_class.resolved_fields()}
        try:
            cls.config_class.from_dict({**options, **own})
        except AffineVAEError:  # another model, which the checkpoint's check refuses in its words
            return options, ""
    shown = " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in own.items())
    return {**options, **own}, shown


def _as_saved(value):
    """``value`` as a saved config holds it (JSON: tuples as lists, also inside an AVAE's inner config)."""
    return json.loads(json.dumps(value))


def file_labels_left_out(args: argparse.Namespace, cls, data) -> tuple[Any, str]:
    """``data`` without the labels its own file holds when they are partly unknown (-1) and the
    model takes no labels (neither class-conditional nor semi-supervised: they would be ignored, and
    only the semi-supervised models read -1), and the line that says so; else ``data`` and ''.
    Labels given with ``--labels`` are the user's explicit choice and are checked as given."""
    kind = cls.labelled_as(parse_set_options(args.set))
    takes = getattr(kind, "conditional", False) is True or getattr(kind, "semi_supervised", False) is True
    labels = getattr(data, "labels", None)
    if args.labels or takes or labels is None or not len(labels) or labels.min() >= 0:
        return data, ""
    unknown = int((labels < 0).sum())
    return (dataclasses.replace(data, labels=None),
            f"affinevae: {args.data}: its labels are -1 (unknown) for {unknown} of {len(labels)} images; "
            f"'{args.model}' takes no labels, so they are left out (ssvae/ssrvae learn from partly known labels)")


MAX_SPARSE_CLASSES = 1000
"""Labels running above this many classes (and above 10 times the values they use) are refused as a stray label."""


def model_options(args: argparse.Namespace, cls, data, targets=None) -> dict:
    """Model options from the CLI: those given, plus image_shape (and num_classes) from the data
    (and target_dim from the (N,) or (N, M) ``targets`` of a semi-supervised regression model).

    Data-dependent defaults for the options not given are :func:`affinevae.defaults.data_defaults`' job.
    """
    opts: dict = {"image_shape": list(data.image_shape)}
    set_options = parse_set_options(args.set)
    kind = cls.labelled_as(set_options)  # an avae follows its inner family's label rules
    semi = getattr(kind, "semi_supervised", False) is True
    classes = getattr(kind, "discrete_classes", False) is True  # jvae, jrvae, ssvae, ssrvae
    conditional = getattr(kind, "conditional", False) is True  # cvae, crvae
    if conditional:
        if data.labels is None:
            raise AffineVAEError(f"model '{args.model}' is class-conditional: the data need labels (--labels)")
        opts["num_classes"] = max(data.num_classes, 2)
    if data.labels is not None and len(data.labels) and data.labels.min() < 0 and not (semi and classes):
        hint = ("; a semi-supervised regression model takes --targets (NaN for unknown)" if semi else "")
        raise AffineVAEError(f"labels of -1 (unknown) are only allowed for semi-supervised class models (ssvae, "
                             f"ssrvae), not '{args.model}'{hint}")
    if conditional and len(np.unique(data.labels)) == 1:
        raise AffineVAEError(f"{args.labels or args.data}: every label is {int(data.labels[0])}: a class-conditional "
                             "model needs two classes or more (for one class, an unconditional model: vae, rvae)")
    if args.classes is not None:
        if args.classes < 2:
            raise AffineVAEError(f"--classes must be an integer >= 2, got {args.classes}")
        if not classes or conditional:
            raise AffineVAEError(f"--classes applies to jvae, jrvae, ssvae and ssrvae, not '{args.model}'")
        opts["num_classes"] = args.classes
    if semi and classes:
        if data.labels is None:
            raise AffineVAEError(f"model '{args.model}' is semi-supervised: give --labels (-1 for unknown)")
        if data.num_classes == 0:  # with --classes too: fit refuses a semi-supervised model without a known label
            raise AffineVAEError(f"{args.labels or args.data}: every label is -1 (unknown): a semi-supervised model "
                                 f"learns its classes from some labelled images; to discover classes without labels, "
                                 f"train the joint model ({'jrvae' if args.model.endswith('rvae') else 'jvae'} --classes K)")
        used = np.unique(data.labels[data.labels >= 0])
        if "num_classes" not in opts and len(used) == 1:
            raise AffineVAEError(f"{args.labels or args.data}: the known labels hold one class ({int(used[0])}): give "
                                 "the number of classes with --classes K (K >= 2)")
        opts.setdefault("num_classes", data.num_classes)
        if args.classes is None and len(used) and (len(used) < opts["num_classes"] / 2 or used[0] > 0):
            # K from the largest label: classes without a labelled image (the user's own values such as 3 and 7, or
            # labels from 1) would be the unlabelled images' to fill; a class left unlabelled by chance is not refused
            k, names = opts["num_classes"], ", ".join(str(int(v)) for v in used[:8]) + (", ..." if len(used) > 8 else "")
            raise AffineVAEError(
                f"{args.labels or args.data}: the known labels use {len(used)} of the classes 0..{k - 1} ({names}): the "
                f"model would give the {k - len(used)} classes without a labelled image to unlabelled images; number "
                f"the classes 0..{len(used) - 1}, or give --classes {k} to keep them")
        if data.num_classes > opts["num_classes"]:
            raise AffineVAEError(f"{args.labels or args.data}: labels must lie in [-1, {opts['num_classes'] - 1}] for "
                                 f"--classes {opts['num_classes']}, got {data.num_classes - 1}")
    known = data.labels[data.labels >= 0] if data.labels is not None and "num_classes" in opts else None
    if known is not None and len(known) and args.classes is None:
        k, used = opts["num_classes"], len(np.unique(known))
        if k > max(MAX_SPARSE_CLASSES, 10 * used):
            # a stray label such as 99999 among 0..3 would build a model with a weight row per class (GBs)
            raise AffineVAEError(f"{args.labels or args.data}: the labels use {used} values but run to {k - 1} (a "
                                 f"stray label?): the model would have {k} classes; relabel them 0..K-1")
        if used < k / 2:
            warnings.warn(f"{args.labels or args.data}: the labels use {used} of the {k} classes 0..{k - 1} (one stray "
                          "label?); the model has them all (relabel them 0..K-1)")
    if semi and not classes and targets is None:
        raise AffineVAEError(f"model '{args.model}' is semi-supervised regression: give --targets")
    if targets is not None:
        if not (semi and not classes):
            raise AffineVAEError(f"--targets applies to ssregvae and ssregrvae, not '{args.model}'")
        opts["target_dim"] = 1 if targets.ndim == 1 else int(targets.shape[1])
    simple = {"latent_dim": args.latent_dim, "encoder": args.encoder, "decoder": args.decoder,
              "activation": args.activation, "likelihood": args.likelihood, "sigma": args.sigma,
              "learn_sigma": args.learn_sigma, "beta": args.beta, "lowpass": args.lowpass}
    opts.update({k: v for k, v in simple.items() if v is not None})
    if args.hidden is not None:  # ("" is refused: it trained with the defaults, silently)
        opts["hidden"] = list(parse_int_list(args.hidden, "hidden"))
    if args.channels is not None:
        opts["channels"] = list(parse_int_list(args.channels, "channels"))
    if args.invariances is not None:
        inv = [] if args.invariances.strip().lower() in ("", "none") else [v.strip() for v in args.invariances.split(",")]
        opts["invariances"] = inv
    given = {**{k: (f"--{k.replace('_', '-')}", v, v) for k, v in simple.items() if v is not None},
             **{k: (f"--{k}", getattr(args, k), opts[k]) for k in ("hidden", "channels", "invariances")
                if getattr(args, k) is not None}}
    for key, value in set_options.items():  # --set latent_dim=3 beside --latent-dim 2 silently won
        if key in given and _as_list(value) != _as_list(given[key][2]):
            flag, text, _ = given[key]
            raise AffineVAEError(f"{flag} {text} and --set {key}={_shown(value)} disagree: give one")
    opts.update(set_options)
    return opts


def _as_list(value):
    """An option's value as a list, to compare (``--hidden 64,32`` and ``--set hidden=64,32``; ``--latent-dim 2``
    and ``--set latent_dim=2`` are equal); a text is split at its commas ('rotation,scale')."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",")]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _shown(value) -> str:
    """A ``--set`` value as the command line writes it (a tuple as ``64,32``)."""
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
