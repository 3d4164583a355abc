"""``affinevae sample``: a grid of images decoded from the prior."""

from __future__ import annotations

import argparse

import torch

from ..errors import AffineVAEError
from ..plots import image_grid, save_image
from ..outputs import check_output
from ..runs import Run
from . import COMMANDS
from .common import add_force_argument


@COMMANDS.register("sample")
class Sample:
    """``affinevae sample`` (see :attr:`help`): ``add_arguments`` registers its options, ``run`` executes it."""

    help = "decode -n samples from the prior into a PNG grid"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Register the command's options on ``p``."""
        p.add_argument("run_dir", help="run or model directory")
        p.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
        p.add_argument("--out", required=True, help="output PNG")
        add_force_argument(p)
        p.add_argument("--class", dest="cls", type=int, help="class for conditional and joint models (default: cycle through classes)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--upscale", type=int, default=3, help="pixel upscaling of the PNG (default 3)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Run the command; returns the exit status (user errors raise AffineVAEError)."""
        if args.n < 1:
            raise AffineVAEError(f"-n must be >= 1, got {args.n}")
        check_output(args.out, inputs=[args.run_dir], force=args.force)
        model = Run.open(args.run_dir).model()
        y, ncol = None, None
        if model.conditional or getattr(model, "discrete_classes", False):  # cvae/crvae; jvae/jrvae/ssvae/ssrvae
            k = model.config.num_classes
            if args.cls is not None and not 0 <= args.cls < k:
                raise AffineVAEError(f"--class must lie in [0, {k - 1}], got {args.cls}")
            y = torch.full((args.n,), args.cls) if args.cls is not None else torch.arange(args.n) % k
            ncol = None if args.cls is not None or args.n < k else k  # cycling: one column per class
        gen = torch.Generator().manual_seed(args.seed)
        imgs = model.sample(args.n, y=y, generator=gen).cpu().numpy()
        save_image(image_grid(imgs, ncol=ncol), args.out, upscale=args.upscale)
        print(f"wrote {args.n} samples to {args.out}")
        return 0
