"""``affinevae sweep``: mean test -ELBO per rotation angle, for a run (and its AVAE) and optionally a second run."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import AffineVAEError
from ..outputs import check_outputs
from ..runs import Run, load
from ..models.avae import AVAE
from ..sweep import SweepConfig, parse_angles, plot_sweep, rotation_sweep
from ..training import resolve_device
from . import COMMANDS
from .align import add_search_arguments, refuse_head_options, search_config_from_args
from .common import (add_binarize_argument, add_data_max_angle_argument, add_fill_nan_argument, add_force_argument,
                     check_split, counted,
                     load_run_data, names_run_data, refuse_signal_model)


def _models_of(run_dir: str, transform, device) -> dict:
    """Label -> model for one run: a plain model and its AVAE, or the AVAE alone."""
    model = load(run_dir, device=device)
    refuse_signal_model(model, run_dir, "the rotation sweep is for images (affinevae encode scores signals)")
    if model.pose_source == "searched":
        if transform is not None and transform != model.config.transform:
            raise AffineVAEError(f"{run_dir} holds an avae with transform '{model.config.transform}'; "
                                 "--transform only applies when wrapping a plain model")
        return {"avae": model}
    return {model.family: model, "avae": AVAE(model, transform=transform or "rotation", pose_head=False).eval()}


@COMMANDS.register("sweep")
class Sweep:
    """``affinevae sweep`` (see :attr:`help`): ``add_arguments`` registers its options, ``run`` executes it."""

    help = ("rotation sweep: mean test -ELBO (nats/image) per angle for a model and its affine VAE; "
            "writes a CSV (angle_deg, one column per model) and the loss-vs-rotation PNG beside it")

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Register the ``sweep`` options on ``p``."""
        p.add_argument("run_dir", help="run or model directory (a plain vae/cvae is swept with its AVAE)")
        p.add_argument("--model-b", help="a second run to compare (columns are then prefixed by run name)")
        p.add_argument("--angles", default="0:360:15", help="degrees: start:stop:step (stop excluded) or a,b,c "
                                                            "(default 0:360:15)")
        p.add_argument("--data", default=None, help="upright test images: 'mnist', 'rotated-mnist' or a path (default "
                                                    "mnist for a model of 28x28 images, else the run's own data)")
        p.add_argument("--labels", help="file of integer labels (.npy/.txt/.csv), one per image")
        p.add_argument("--key", help="array name inside an .npz")
        p.add_argument("-n", "--n", type=int, dest="n", default=500, help="test images (default 500)")
        p.add_argument("--split", default=None, choices=["train", "test"], help="train or test for built-in data sets (default test)")
        add_fill_nan_argument(p)
        add_data_max_angle_argument(p, "--data-max-angle")  # --max-angle is the search's
        p.add_argument("--interpolation", default="bilinear", choices=["bilinear", "bicubic", "nearest"],
                       help="how test images are rotated (default bilinear; nearest keeps the pixel values)")
        p.add_argument("--no-progress", action="store_true",
                       help="no progress bar (shown on a terminal only: an AVAE's search at every angle takes minutes)")
        add_binarize_argument(p, "threshold every rotated image at T (default 0.5): for models trained on binarized "
                                 "images (train --binarize), so that resampling blur does not mix with the pose; "
                                 "the run's own --data takes the run's threshold when not given")
        p.add_argument("--out", default="sweep.csv", help="output CSV, the PNG beside it (default sweep.csv)")
        add_force_argument(p, "an existing CSV and PNG")
        add_search_arguments(p)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Run ``affinevae sweep``; returns the exit status (user errors raise AffineVAEError)."""
        angles = parse_angles(args.angles)  # degrees on the command line
        check_outputs([args.out, str(Path(args.out).with_suffix(".png"))],
                      inputs=[args.run_dir, args.model_b, args.data, args.labels], force=args.force)
        if not str(args.out).lower().endswith(".csv"):
            raise AffineVAEError(f"--out must be a .csv file (the PNG is written beside it), got {args.out}")
        device = resolve_device(args.device)
        runs = [args.run_dir] + ([args.model_b] if args.model_b else [])
        per_run = [_models_of(r, args.transform, device) for r in runs]
        models: dict = {}
        if len(per_run) == 1:
            models = per_run[0]
        else:
            prefixes = [Path(r).resolve().name for r in runs]
            if prefixes[0] == prefixes[1]:
                prefixes = ["a", "b"]
            for prefix, ms in zip(prefixes, per_run):
                models.update({f"{prefix}:{k}": v for k, v in ms.items()})
        search = None  # each AVAE's own search options, unless some are given here
        if _search_overridden(args):
            searched = [m for m in models.values() if m.pose_source == "searched"]
            refuse_head_options(args, searched, " and ".join(runs))
            search = search_config_from_args(args, searched[0].config.search)
        run = Run.open(args.run_dir)
        shape = tuple(next(iter(models.values())).config.image_shape)
        if args.data is None and shape == (1, 28, 28):  # digits for a digit model (the sweep's reference)
            args.data = "mnist"
        elif args.data is None:  # else the run's own images
            print(f"affinevae: sweeping the run's own data ({run.meta.get('data')}); give --data for others")
        data = load_run_data(args, run, check_split(args.split, args.data), seed=args.seed, binarize=False,  # thresholded after rotating
                             expect=shape)  # a run's own: its options
        threshold = args.binarize
        if threshold is None and run.binarize is not None and names_run_data(args, run):
            threshold = run.binarize  # the run's own data as training saw it: binarized (after each turn)
            print(f"affinevae: --binarize {threshold:g} from the run's training data (every rotated image is "
                  "thresholded; give --binarize T for another threshold)")
        cfg = SweepConfig(seed=args.seed, interpolation=args.interpolation, search=search, binarize=threshold,
                          progress=not args.no_progress)
        result = rotation_sweep(models, data.images, data.labels, angles=np.radians(angles), config=cfg)
        out = Path(args.out)
        result.to_csv(out)
        png = out.with_suffix(".png")
        plot_sweep(result, png)
        print(result.table())
        print(f"swept {counted(len(models), 'model')} over {counted(len(angles), 'angle')} on {len(data)} images; "
              f"wrote {out} and {png}")
        return 0


def _search_overridden(args: argparse.Namespace) -> bool:
    """Whether any pose-search option was given on the command line."""
    return any(getattr(args, k, None) is not None for k in ("restarts", "keep", "steps", "lr", "elbo_samples", "chunk",
                                                             "max_angle", "head_starts", "head_views", "head_trust"))
