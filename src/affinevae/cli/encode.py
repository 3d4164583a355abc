"""``affinevae encode``: latent codes, pose and per-image ELBO of a data set."""

from __future__ import annotations

import argparse

import numpy as np

from .. import encoding
from ..evaluation import encode_dataset
from ..io import atomic_write
from ..outputs import check_output
from ..runs import Run, load
from . import COMMANDS
from .common import (add_data_arguments, check_split, add_force_argument, data_noun, default_of, load_run_data, require_npz,
                     seed_arg)


@COMMANDS.register("encode")
class Encode:
    """``affinevae encode`` (see :attr:`help`): ``add_arguments`` registers its options, ``run`` executes it."""

    help = "encode images with a trained model: z_mean, z_std, elbo (nats) and pose arrays to an .npz"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Register the command's options on ``p``."""
        p.add_argument("run_dir", help="run or model directory")
        add_data_arguments(p)
        p.add_argument("--out", required=True, help="output .npz")
        add_force_argument(p)
        p.add_argument("--split", default=None, choices=["train", "test"],
                       help="train or test, for built-in data sets only (default test)")
        p.add_argument("--batch-size", type=int, default=default_of(encoding.encode_dataset, "batch_size"))
        p.add_argument("--seed", type=seed_arg, default=0, help="seed of the ELBO's posterior sample")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Run the command; returns the exit status (user errors raise AffineVAEError)."""
        split = check_split(args.split, args.data)
        check_output(args.out, inputs=[args.run_dir, args.data, args.labels], force=args.force)
        require_npz(args.out, "encode")
        model = load(args.run_dir)
        run = Run.open(args.run_dir)
        data = load_run_data(args, run, split, seed=args.seed,  # a run's own: its options
                             expect=model.config.image_shape)
        out = encode_dataset(model, data, batch_size=args.batch_size, seed=args.seed, where=data.source or "images")
        out.update(physical_shift(out, data))
        names = run.meta.get("class_names") if model.takes_labels else data.meta.get("label_names")
        if names and data.meta.get("label_names"):  # labels by name: numbered as the run's where its model took
            out["class_names"] = np.asarray([str(name) for name in names])  # labels, else as the file's own: label k's

        def w(tmp):
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **out)
        atomic_write(args.out, w)
        size = out.get("pixel_size", out.get("sample_size"))
        units = (f"; shifts also in {out['unit']} ({'pixel' if 'pixel_size' in out else 'sample'} size "
                 f"{float(size):g} {out['unit']})" if "shift_phys" in out else "")
        print(f"encoded {len(data)} {data_noun(model)}: arrays {', '.join(sorted(out))} -> {args.out} "
              f"(mean ELBO {out['elbo'].mean():.2f} nats/{data_noun(model)[:-1]}{units})")
        return 0


def physical_shift(out: dict, data) -> dict:
    """``pixel_size`` () float64, ``unit`` () and ``shift_phys`` (N, 2) (right, down) in that unit, for
    ``encode_dataset``'s arrays ``out`` whose ``shift`` (N, 2) is in half image widths, when the images
    ``data`` (an ImageSet) record a pixel size (``meta['pixel_size']``, ``meta['unit']``: an MRC stack's
    voxel size, a FITS pixel scale, a patch set's); for 1-D signals whose ``shift`` (N,) is in samples,
    ``sample_size``, ``unit`` and ``shift_phys`` (N,) when the spectra record their sample size
    (``meta['sample_size']``, ``meta['sample_unit']``: an instrument file's energy axis); else {}."""
    meta = getattr(data, "meta", None) or {}
    shift = out.get("shift")
    if shift is not None and np.ndim(shift) == 1 and meta.get("sample_size") is not None and meta.get("sample_unit"):
        size = float(meta["sample_size"])  # spectra: a shift in samples, e.g. 0.5 eV each
        return {"sample_size": np.float64(size), "unit": np.asarray(str(meta["sample_unit"])),
                "shift_phys": np.asarray(shift, np.float64) * size}
    if meta.get("pixel_size") is None or not meta.get("unit") or shift is None or np.ndim(shift) != 2:
        return {}
    half = data.images.shape[-1] / 2.0
    size = float(meta["pixel_size"])
    return {"pixel_size": np.float64(size), "unit": np.asarray(str(meta["unit"])),
            "shift_phys": np.asarray(shift, np.float64) * half * size}
