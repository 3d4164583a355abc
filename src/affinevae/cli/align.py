"""``affinevae align``: search every image's pose that maximises the ELBO; write poses, ELBOs and aligned images."""

from __future__ import annotations

import argparse
from ..errors import AffineVAEError
from ..outputs import check_output
from ..runs import Run, load
from ..pose.amortise import as_avae
from ..pose.search import SearchConfig
from ..training import resolve_device
from . import COMMANDS
from .common import add_data_arguments, add_force_argument, check_split, load_run_data, refuse_signal_model, require_npz, seed_arg


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """--transform and the pose-search options (only those given override the model's)."""
    g = p.add_argument_group("pose search (defaults: the AVAE's own search options)")
    g.add_argument("--transform", help="parameterisation used when wrapping a plain VAE/cVAE run: rotation (default), "
                                       "rotation-scale, rotation-scale-shear, translation, similarity, affine")
    g.add_argument("--restarts", type=int, help="candidate poses per image, evaluated together")
    g.add_argument("--keep", type=int, help="best candidates per image refined by Adam")
    g.add_argument("--steps", type=int, help="Adam refinement steps (0 = restarts only)")
    g.add_argument("--lr", type=float, help="Adam learning rate of the refinement")
    g.add_argument("--head-starts", type=int, help="how many of the pose head's hypotheses become starts")
    g.add_argument("--head-views", type=int, choices=[1, 2, 4],
                   help="the pose head also sees the image turned by 180 (2) or by 90, 180, 270 degrees (4) and "
                        "starts from their consensus (more accurate starts for a few cheap head passes)")
    g.add_argument("--head-trust", type=float,
                   help="images whose pose head is at least this confident (share of agreeing views, 0-1) keep its "
                        "pose and skip the search; e.g. 0.9 with --head-views 4")
    g.add_argument("--no-refiner", action="store_true",
                   help="do not correct the head's pose with the model's pose refiner (amortise --refiner)")
    g.add_argument("--max-angle", type=float, help="the search keeps every angle in [-A, A] degrees: random restarts, the pose head's start and "
                                                    "the refinement (default 180: the full circle)")
    g.add_argument("--elbo-samples", type=int, help="posterior samples averaged for the reported ELBO")
    g.add_argument("--chunk", type=int, help="images per forward pass (bounds memory)")
    g.add_argument("--seed", type=seed_arg, default=0, help="seed of the random restarts and of the ELBO noise")
    g.add_argument("--device", default="cpu", help="cpu, cuda or auto")


def refuse_head_options(args: argparse.Namespace, models: list, where: str) -> None:
    """One line when ``--head-starts``/``--head-views``/``--head-trust`` are given and none of the AVAEs
    ``models`` has a trained pose head, whose poses they choose from (they would do nothing)."""
    given = [f"--{k.replace('_', '-')}" for k in ("head_starts", "head_views", "head_trust")
             if getattr(args, k, None) is not None]
    if given and not any(getattr(m, "has_trained_head", False) for m in models):
        raise AffineVAEError(f"{' '.join(given)}: {where} has no trained pose head, whose poses they choose from "
                             "(train one with `affinevae amortise`, or leave them out)")


def search_config_from_args(args: argparse.Namespace, base: SearchConfig) -> SearchConfig:
    """``base`` with the options given on the command line applied (validated)."""
    import math

    changes = {k: getattr(args, k) for k in ("restarts", "keep", "steps", "lr", "elbo_samples", "chunk",
                                                   "head_starts", "head_views", "head_trust")
               if getattr(args, k, None) is not None}
    changes["seed"] = args.seed
    if getattr(args, "no_refiner", False):
        changes["use_refiner"] = False
    if getattr(args, "max_angle", None) is not None:
        if not (0 < args.max_angle <= 180):
            raise AffineVAEError(f"--max-angle must lie in (0, 180] degrees, got {args.max_angle}")
        a = math.radians(args.max_angle)
        changes["angle_range"] = (-a, a)
    cfg = base.replace(**changes)
    if getattr(args, "keep", None) is not None and args.keep > cfg.restarts:
        raise AffineVAEError(f"--keep {args.keep} exceeds the {cfg.restarts} restarts (--restarts): "
                             "only restarts can be kept")
    if getattr(args, "head_starts", None) is not None and args.head_starts > cfg.restarts:  # (cut down silently)
        raise AffineVAEError(f"--head-starts {args.head_starts} exceeds the {cfg.restarts} restarts (--restarts): the "
                             "head's hypotheses become some of the restarts")
    return cfg


@COMMANDS.register("align")
class Align:
    """``affinevae align`` (see :attr:`help`): ``add_arguments`` registers its options, ``run`` executes it."""

    help = ("find each image's pose maximising the ELBO (affine VAE search); write params, angle (rad), "
            "elbo_before, elbo_after (nats) and aligned images to an .npz")

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Register the ``align`` options on ``p``."""
        p.add_argument("run_dir", help="run or model directory of an avae, or of another model to wrap (a vae or cvae "
                       "usually; any family but the semi-supervised ones: an ae's ELBO is its log-likelihood, an rvae's "
                       "own angle is searched further)")
        add_data_arguments(p, max_angle_option="--data-max-angle")  # --max-angle is the search's
        p.add_argument("--split", default=None, choices=["train", "test"], help="train or test for built-in data sets (default test)")
        p.add_argument("--out", required=True, help="output .npz")
        add_force_argument(p)
        p.add_argument("--no-before", action="store_true",
                       help="skip elbo_before (NaN in the output): one plain pass of the VAE less")
        add_search_arguments(p)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Run ``affinevae align``; returns the exit status (user errors raise AffineVAEError)."""
        check_output(args.out, inputs=[args.run_dir, args.data, args.labels], force=args.force)
        require_npz(args.out, "align")
        device = resolve_device(args.device)
        loaded = load(args.run_dir, device=device)
        refuse_signal_model(loaded, args.run_dir, "a signal's shift is one of its latents (affinevae encode gives it)")
        model = as_avae(loaded, args.transform, args.run_dir)
        refuse_head_options(args, [model], args.run_dir)
        cfg = search_config_from_args(args, model.config.search)
        if args.no_before:
            cfg = cfg.replace(report_before=False)
        data = load_run_data(args, Run.open(args.run_dir), check_split(args.split, args.data), seed=args.seed,  # a run's own: its options
                             expect=model.config.image_shape)
        labels = data.labels if model.conditional else None
        result = model.align(data.images, labels, cfg)
        result.save(args.out, labels=data.labels, image_file=data.names)
        print(f"aligned {len(data)} images ({model.transform.name}, {cfg.restarts} restart{'s' if cfg.restarts != 1 else ''}, {cfg.steps} step{'s' if cfg.steps != 1 else ''}): "
              f"{result.summary(cfg.elbo_samples)}; wrote {args.out}")
        return 0
