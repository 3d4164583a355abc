"""``affinevae info``: what a run directory holds."""

from __future__ import annotations

import argparse
import json
import math

from ..runs import Run
from . import COMMANDS


#: Config fields of the Gaussian likelihood only (info marks them unused under another).
SIGMA_OPTIONS = ("sigma", "learn_sigma", "sigma_radius")


@COMMANDS.register("info")
class Info:
    """``affinevae info`` (see :attr:`help`): ``add_arguments`` registers its options, ``run`` executes it."""

    help = "show a run's model, config, training progress and last metrics"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Register the command's options on ``p``."""
        p.add_argument("run_dir", help="run or model directory")
        p.add_argument("--json", action="store_true", help="print JSON")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Run the command; returns the exit status (user errors raise AffineVAEError)."""
        run = Run.open(args.run_dir)
        model = run.model()
        info = {"model": model.family, "parameters": sum(p.numel() for p in model.parameters()),
                "config": model.config.to_dict()}
        if run.has_training:
            info["epochs_done"] = run.epochs_done
            info["train_config"] = run.train_config
            info["data"] = run.meta.get("data")
        metrics = run.metrics
        if metrics:
            info["last_metrics"] = metrics[-1]
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        print(f"model       {info['model']} ({info['parameters']:,} parameters)")
        width = max((len(k) for k in info["config"]), default=0) + 2
        likelihood = info["config"].get("likelihood")
        for k, v in info["config"].items():
            unused = k in SIGMA_OPTIONS and likelihood is not None and likelihood != "gaussian"
            print(f"  {k:<{width}}{v}" + (f"  (unused: {likelihood} likelihood)" if unused else ""))
        if "epochs_done" in info:
            tc = info.get("train_config") or {}
            meta = run.meta
            data = ", ".join([str(info.get("data"))]
                             + ([f"key {meta['key']}"] if meta.get("key") is not None else [])
                             + ([f"stretch {meta['stretch']}"] if meta.get("stretch") else [])
                             + (["NaN pixels filled"] if meta.get("fill_nan") else [])
                             + ([f"n {meta['n']}"] if meta.get("n") is not None else [])
                             + ([f"max angle {math.degrees(meta['max_angle']):g} deg"]
                                if meta.get("max_angle") is not None else []))
            print(f"training    {info['epochs_done']}/{tc.get('epochs')} epochs on {data} ({meta.get('n_train', '?')} "
                  f"training images), batch {tc.get('batch_size')}, lr {tc.get('lr')}, seed {tc.get('seed')}")
            scaling = run.pixel_scaling
            if scaling is not None:
                how = {"minmax": "min-max range", "asinh": "asinh stretch"}.get(scaling.kind, "mean and standard deviation")
                print(f"pixels      {scaling} (the training data's {how}; other data are scaled alike)")
        if metrics:
            m = metrics[-1]
            print("last epoch  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()))
        return 0
