"""``affinevae map``: encode patches with a trained model and draw latent/angle/class maps over the image."""

from __future__ import annotations

import argparse

from ..errors import AffineVAEError
from . import COMMANDS


@COMMANDS.register("map")
class Map:
    """``affinevae map`` (see :attr:`help`): ``add_arguments`` registers its options, ``run`` executes it."""

    help = "encode the patches of an image with a trained model and map latents, angles and classes onto it"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Register the command's options on ``p``."""
        p.add_argument("run_dir", help="trained run or model directory (affinevae train --out)")
        p.add_argument("--image", required=True, help="the image or stack the patches were cut from (background)")
        p.add_argument("--patches", required=True, help="patches .npz written by `affinevae patches`")
        p.add_argument("--out", required=True, help="output folder for maps.npz and the PNG maps")
        p.add_argument("--clusters", type=int, default=None, help="cluster the content latents into K classes")
        p.add_argument("--cluster-method", choices=["kmeans", "gmm"], default="kmeans")
        p.add_argument("--symmetry", type=int, default=1,
                       help="n-fold rotational symmetry of the objects: angles are shown modulo 360/n degrees")
        p.add_argument("--frame", type=int, default=0, help="frame drawn in the PNG maps (default 0)")
        p.add_argument("--key", help="array name in an .npz or dataset in an HDF5 image file")
        p.add_argument("--batch-size", type=int, default=256, help="patches per forward pass")
        p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where to encode (default cpu)")
        p.add_argument("--seed", type=int, default=0, help="clustering seed")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Encode, cluster, write ``maps.npz`` and the PNG maps; returns the exit status."""
        from ..data.patches import PatchSet, encode_patchset, open_stack
        from ..runs import load
        from ..mapping import write_maps
        from ..training import resolve_device

        if args.clusters is not None and args.clusters < 1:
            raise AffineVAEError(f"--clusters must be >= 1, got {args.clusters}")
        model = load(args.run_dir, device=resolve_device(args.device))
        ps = PatchSet.load(args.patches)
        if len(ps) == 0:
            raise AffineVAEError(f"{args.patches}: holds no patches")
        with open_stack(args.image, key=args.key) as src:
            if ps.image_shape != (0, 0) and tuple(ps.image_shape) != tuple(src.image_shape):
                raise AffineVAEError(f"{args.patches}: patches were cut from a {ps.image_shape[0]}x{ps.image_shape[1]} "
                                     f"image, but {args.image} is {src.image_shape[0]}x{src.image_shape[1]}")
            if not 0 <= args.frame < src.n_frames:
                raise AffineVAEError(f"--frame {args.frame} outside 0..{src.n_frames - 1} of {args.image}")
            background = src.read(args.frame, args.frame + 1)[0]
        enc = encode_patchset(model, ps, batch_size=args.batch_size)
        res = write_maps(enc, args.out, image=background, n_clusters=args.clusters, frame=args.frame,
                         symmetry=args.symmetry, cluster_method=args.cluster_method, seed=args.seed)
        names = ", ".join(p.name for p in res["files"].values())
        extra = ""
        if res["counts"] is not None:
            extra = "; classes: " + ", ".join(f"{j}: {c}" for j, c in enumerate(res["counts"]))
        angle = "" if enc.has_angle else f" (model '{model.family}' has no rotation: no angle map)"
        print(f"mapped {len(enc)} objects with {model.family}{angle}{extra}; wrote {names} to {args.out}")
        return 0
