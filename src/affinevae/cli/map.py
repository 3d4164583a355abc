"""``affinevae map``: encode patches with a trained model and draw latent/angle/class maps over the image."""

from __future__ import annotations

import argparse
from typing import Optional

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
        p.add_argument("--clusters", type=int, default=None,
                       help="cluster the content latents into K classes (default: no clustering; a joint or "
                            "semi-supervised model's maps show the classes it infers)")
        p.add_argument("--cluster-method", choices=["kmeans", "gmm"], default="kmeans")
        p.add_argument("--symmetry", metavar="N",
                       help="n-fold rotational symmetry of the objects (1..12; 1 for none): angles are shown modulo "
                            "360/N degrees (default: estimated from the patches and printed)")
        p.add_argument("--frame", type=int, default=0, help="frame drawn in the PNG maps (default 0)")
        p.add_argument("--key", help="array name in an .npz or dataset in an HDF5 image file")
        p.add_argument("--batch-size", type=int, default=256, help="patches per forward pass")
        p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where to encode (default cpu)")
        p.add_argument("--seed", type=int, default=0, help="clustering seed")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Encode, cluster, write ``maps.npz`` and the PNG maps; returns the exit status."""
        from ..data.patches import PatchSet
        from ..data.stacks import open_stack
        from ..encoding import encode_patchset
        from ..runs import load
        from ..mapping import estimate_symmetry, write_maps
        from ..training import resolve_device

        symmetry = parse_symmetry(args.symmetry)  # before anything is read or written
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
        if symmetry is None:
            symmetry = 1
            if enc.has_angle:  # the symmetry only folds angles
                symmetry = estimate_symmetry(ps.patches, centred=ps.grid_shape is None, seed=args.seed)
                print(f"affinevae: estimated {symmetry}-fold rotational symmetry from the patches "
                      "(override with --symmetry)")
        res = write_maps(enc, args.out, image=background, n_clusters=args.clusters, frame=args.frame,
                         symmetry=symmetry, cluster_method=args.cluster_method, seed=args.seed)
        names = ", ".join(p.name for p in res["files"].values())
        extra = ""
        if res["counts"] is not None:
            whose = " (inferred by the model)" if args.clusters is None else ""
            extra = f"; classes{whose}: " + ", ".join(f"{j}: {c}" for j, c in enumerate(res["counts"]))
        angle = "" if enc.has_angle else f" (model '{model.family}' has no rotation: no angle map)"
        print(f"mapped {len(enc)} objects with {model.family}{angle}{extra}; wrote {names} to {args.out}")
        return 0


def parse_symmetry(text: Optional[str]) -> Optional[int]:
    """``--symmetry N`` as an int in 1..12 (:func:`affinevae.mapping.check_symmetry`); None when not given."""
    from ..mapping import check_symmetry

    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        value = text
    return check_symmetry(value, "--symmetry")
