"""``affinevae demo``: the main job on the bundled data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..demo import run_demo
from ..outputs import check_output
from . import COMMANDS
from .common import add_force_argument, seed_arg


@COMMANDS.register("demo")
class Demo:
    """``affinevae demo`` (see :attr:`help`): ``add_arguments`` registers its options, ``run`` executes it."""

    help = "run the demo on bundled MNIST and write its figures and report"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Register the command's options on ``p``."""
        p.add_argument("--out", default="affinevae-demo", help="output directory (default affinevae-demo)")
        p.add_argument("--quick", action="store_true", help="a small, fast version (about 15 seconds on 2 CPU cores)")
        p.add_argument("--seed", type=seed_arg, default=0)
        add_force_argument(p, "into an existing, non-empty --out folder that is not a previous demo's")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Run the command; returns the exit status (user errors raise AffineVAEError)."""
        out = Path(args.out)
        earlier = (out / "index.html").is_file() or (out / "runs").is_dir()  # a previous demo's: replaced
        check_output(out, kind="dir", force=args.force or earlier, model_dir=True)  # it writes runs: not inside one
        run_demo(args.out, quick=args.quick, seed=args.seed, progress=sys.stderr.isatty())
        return 0
