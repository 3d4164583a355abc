"""``affinevae report``: one self-contained HTML page about a training run."""

from __future__ import annotations

import argparse
import warnings

from ..errors import AffineVAEError
from ..mapping import check_symmetry
from ..report import REPORT_N, REPORT_SWEEP_N, REPORT_SWEEP_STEP, write_report
from ..outputs import check_output
from . import COMMANDS
from ..runs import Run
from .common import add_fill_nan_argument, add_force_argument, seed_arg


@COMMANDS.register("report")
class Report:
    """``affinevae report`` (see :attr:`help`): ``add_arguments`` registers its options, ``run`` executes it."""

    help = ("write a self-contained HTML report of a run: config, training curves, metrics and every analysis "
            "that applies (figures embedded, opens offline)")

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Register the command's options on ``p``."""
        p.add_argument("run_dir", help="run or model directory")
        p.add_argument("--out", required=True, help="output HTML file")
        add_force_argument(p)
        p.add_argument("--data", help="images to analyse: 'mnist', 'rotated-mnist' or a path "
                                      "(default: the run's own data, test split for built-in sets)")
        p.add_argument("-n", "--n", type=int, default=None, dest="n",
                       help=f"images analysed (default up to {REPORT_N})")
        add_fill_nan_argument(p)
        p.add_argument("--sweep-angles", default=f"0:361:{REPORT_SWEEP_STEP}",
                       help="degrees of the loss-vs-rotation sweep, start:stop:step or a,b,c; 'none' to skip "
                            f"(default 0:361:{REPORT_SWEEP_STEP})")
        p.add_argument("--sweep-n", type=int, default=None,
                       help=f"images in the sweep (default up to {REPORT_SWEEP_N})")
        p.add_argument("--seed", type=seed_arg, default=0)
        p.add_argument("--symmetry", type=int, default=1, metavar="K",
                       help="the objects' K-fold rotational symmetry: angle scores count offsets modulo 360/K "
                            "degrees (default 1)")
        p.add_argument("--quiet", action="store_true", help="no per-analysis progress lines")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Run the command; returns the exit status (user errors raise AffineVAEError)."""
        import numpy as np

        from ..sweep import parse_angles

        if args.n is not None and args.n < 1:
            raise AffineVAEError(f"-n must be >= 1, got {args.n}")
        if args.sweep_n is not None and args.sweep_n < 1:
            raise AffineVAEError(f"--sweep-n must be >= 1, got {args.sweep_n}")
        degrees = [] if args.sweep_angles.strip().lower() == "none" else list(parse_angles(args.sweep_angles, "--sweep-angles"))
        check_symmetry(args.symmetry, "--symmetry")
        check_output(args.out, inputs=[args.run_dir, args.data], force=args.force)
        if not str(args.out).lower().endswith((".html", ".htm")):
            raise AffineVAEError(f"--out must be an .html file (the report is one HTML page), got {args.out}")
        with warnings.catch_warnings():
            for given, default in ((args.n, REPORT_N), (args.sweep_n, REPORT_SWEEP_N)):
                if given is None:  # a default is "up to": a smaller data set is no news
                    warnings.filterwarnings("ignore", message=rf".*: n={default} asks for more images than the \d+ it holds")
            data = args.data
            if args.fill_nan:  # the images read with their NaN pixels filled (write_report reads them as training did)
                data = Run.open(args.run_dir).data(split="test", n=args.n or REPORT_N, source=args.data, fill_nan=True)
            res = write_report(args.run_dir, args.out, data=data, n=args.n or REPORT_N, seed=args.seed,
                               sweep_rotations=np.radians(degrees),  # degrees -> radians
                               sweep_n=args.sweep_n or REPORT_SWEEP_N, log=None if args.quiet else print,
                               symmetry=args.symmetry)
        extra = "".join(f"; {what}: {', '.join(titles)}" for what, titles in
                        (("does not apply", res.inapplicable), ("not available", res.unavailable)) if titles)
        print(f"wrote {res.path} ({len(res.sections)} analyses in {res.seconds:.0f} s{extra})")
        return 0
