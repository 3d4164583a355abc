"""``affinevae amortise``: train an AVAE's pose head (the amortised start) and save the model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.inputs import check_image_shape
from ..errors import AffineVAEError
from ..outputs import check_output
from ..runs import Run, load
from ..pose.amortise import AMORTISE_DEFAULTS, amortise
from ..training import resolve_device
from . import COMMANDS
from .common import add_data_arguments, add_force_argument, counted, load_scaled_like_run, refuse_signal_model, seed_arg


@COMMANDS.register("amortise")
class Amortise:
    """``affinevae amortise`` (see :attr:`help`): ``add_arguments`` registers its options, ``run`` executes it."""

    help = ("train the pose head that gives align its start (on the model's ELBO, or on searched poses), "
            "optionally tuning the VAE with it, or the refiner that corrects the head's angle; write the model to --out")

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Register the ``amortise`` options on ``p``."""
        p.add_argument("run_dir", help="run or model directory of an avae (or of another model, a vae or cvae usually: "
                       "wrapped, with a new head)")
        add_data_arguments(p)
        p.add_argument("--out", required=True, help="new directory for the model with its trained head (not run_dir, "
                                                   "nor any other run or model directory)")
        add_force_argument(p, "an existing, non-empty --out folder that holds no run or model")
        p.add_argument("--target", default=AMORTISE_DEFAULTS.target, choices=["elbo", "search"],
                       help="elbo: maximise the ELBO at the head's own poses (default); search: regress the poses "
                            "found by the model's search")
        p.add_argument("--tune-model", action="store_true", help="(elbo) also train the VAE at the head's poses")
        p.add_argument("--transform", help="parameterisation when wrapping a plain VAE/cVAE run (default rotation)")
        d = AMORTISE_DEFAULTS
        p.add_argument("--epochs", type=int, default=d.epochs, help=f"passes over the images (default {d.epochs})")
        p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"images per step (default {d.batch_size})")
        p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr:g})")
        p.add_argument("--augment-rotation", action="store_true", help="turn every image by a random angle each step")
        p.add_argument("--views", type=int, default=1, choices=[1, 2, 4],
                       help="(elbo) train the consensus of this many quarter-turn views of each image; the written "
                            "model's align then starts from it (its search gets head_views of the same number)")
        p.add_argument("--refiner", action="store_true",
                       help="train the pose refiner instead of the head (needs a trained head): it corrects the angle "
                            "of the head's pose, seen from the image canonicalised there; --views: the head's views")
        p.add_argument("--seed", type=seed_arg, default=0)
        p.add_argument("--device", default="cpu", help="cpu, cuda or auto")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Run ``affinevae amortise``; returns the exit status (user errors raise AffineVAEError)."""
        if Path(args.out).resolve() == Path(args.run_dir).resolve():
            raise AffineVAEError("--out must differ from run_dir (the run's checkpoints belong to its own model)")
        if args.tune_model and args.target != "elbo":  # the flags' names, before the config's Python ones
            raise AffineVAEError("--tune-model trains the VAE on the ELBO at the head's poses: it needs --target elbo")
        cfg = AMORTISE_DEFAULTS.replace(target=args.target, tune_model=args.tune_model, epochs=args.epochs,
                                        batch_size=args.batch_size, lr=args.lr, augment_rotation=args.augment_rotation,
                                        views=args.views, seed=args.seed)
        device = resolve_device(args.device)
        check_output(args.out, kind="dir", inputs=[args.run_dir, args.data, args.labels], force=args.force,
                     model_dir=True)
        loaded = load(args.run_dir, device=device)
        refuse_signal_model(loaded, args.run_dir, "a signal's shift is one of its latents (affinevae encode gives it)")
        source = Run(args.run_dir)
        data = load_scaled_like_run(args, source, "train", seed=args.seed)  # as the model was trained
        check_image_shape(data.images.shape[1:], loaded.config.image_shape, where=data.source or args.data)
        result = amortise(loaded, data.images, data.labels, cfg, refiner=args.refiner, transform=args.transform,
                          where=args.run_dir)
        model, history = result.model, result.history
        model.eval().save(args.out)
        source.copy_data_record(args.out)  # align / encode of --out read other data as the run's training did
        if args.refiner:
            what, unit = f"pose refiner on {len(data)} images (", "nats/image at the corrected poses"
        else:
            what = f"pose head on {len(data)} images ({args.target}{', VAE tuned' if args.tune_model else ''}, "
            unit = "nats/image at the head's poses" if args.target == "elbo" else "head loss"
        losses = (f"{history[0]:.2f} (epoch 1) -> {history[-1]:.2f} (epoch {len(history)})" if len(history) > 1
                  else f"{history[0]:.2f}" if history else "none")
        print(f"trained the {what}{counted(args.epochs, 'epoch')}): {unit} {losses}; wrote {args.out}")
        return 0
