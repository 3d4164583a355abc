"""Spectra with shift invariance, and a hyperspectral cube against PCA, through the command line.

The protocol of issue 13 (part 3-4 targets), with the library's synthetic sets
(:mod:`affinevae.data.spectra`) and default training options:

1. Two overlapping peaks, randomly shifted (uniform +-12 samples), with a varying peak ratio::

       affinevae train --model rvae --data synthetic-peaks --latent-dim 2 --out peaks
       affinevae encode peaks --data synthetic-peaks --split test --out codes.npz

   scored on the test split (new spectra): the Pearson r of the encoded shift (samples) with the
   true shift, target >= 0.95; the largest |r| of one content latent with the true ratio, target >= 0.95.

2. A 32 x 32 cube (96 samples per spectrum) of three planted phase regions that differ only in
   their peak ratio, every pixel shifted at random (much more than the phases differ)::

       affinevae train --model rvae --data cube.npy --signal-axis 2 --latent-dim 2 --out cube
       affinevae map cube --cube cube.npy --signal-axis 2 --clusters 3 --baseline pca --out maps

   scored by the accuracy of the clusters of the content latents against the planted regions
   (Hungarian matching), target >= 0.90, beside k-means (3 clusters) on PCA's first two loadings
   (the baseline the rVAE article contrasts, which follows the shift and mixes the phases).

3. (section ``classes``) The same cube's phases as the model's own classes, with few or no labels:
   the semi-supervised rVAE given the region of 2 % of the pixels (-1 for the others) and the
   joint rVAE given none, at the spectra defaults::

       affinevae train --model ssrvae --data cube.npy --signal-axis 2 --labels few.npy --latent-dim 2 --out ss
       affinevae map ss --cube cube.npy --signal-axis 2 --out ss-maps       # class (H, W) in maps.npz

   scored by the accuracy of the inferred classes against the planted regions (the ssrVAE's class
   indices are the labels' own; the jrVAE's are matched by the Hungarian method). No target: a
   measure of the label-poor models on spectra.

    python benchmarks/bench_spectra.py                       # peaks and cube, defaults
    python benchmarks/bench_spectra.py --sections classes    # the label-poor models
    python benchmarks/bench_spectra.py --keep /tmp/spectra   # keep runs and maps
    python benchmarks/bench_spectra.py --figure docs/figures/spectra_cube_pca.png

Prints measured vs target, the commands it ran and, with ``--json``, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET = {"peaks_shift_r": 0.95, "peaks_ratio_r": 0.95, "cube_accuracy": 0.90}


def affinevae(*args: str) -> str:
    """Run ``python -m affinevae ARGS`` (this interpreter); echo and return its stdout."""
    print("$ affinevae " + " ".join(shlex.quote(a) for a in args), flush=True)
    out = subprocess.run([sys.executable, "-m", "affinevae", *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"affinevae {' '.join(args[:2])} failed ({out.returncode}):\n{out.stderr}")
    return out.stdout


def peaks(work: Path, train_args: list[str], seed: int) -> dict:
    """Section 1: shift and ratio recovered on the test split of synthetic-peaks."""
    from affinevae.data.spectra import synthetic_peaks

    t = time.perf_counter()
    affinevae("train", "--model", "rvae", "--data", "synthetic-peaks", "--latent-dim", "2", "--seed", str(seed),
              "--out", str(work / "peaks"), "--no-progress", *train_args)
    train_s = time.perf_counter() - t
    affinevae("encode", str(work / "peaks"), "--data", "synthetic-peaks", "--split", "test",
              "--out", str(work / "codes.npz"), "--seed", str(seed))
    truth = synthetic_peaks(2000, seed=seed + 1)  # the test split of synthetic-peaks
    with np.load(work / "codes.npz", allow_pickle=False) as f:
        shift, z = f["shift"], f["z_mean"]
    shift_r = float(np.corrcoef(shift, truth.shift)[0, 1])
    ratio_r = [float(np.corrcoef(z[:, j], truth.ratio)[0, 1]) for j in range(z.shape[1])]
    best = int(np.argmax(np.abs(ratio_r)))
    return {"peaks_shift_r": shift_r, "peaks_ratio_r": abs(ratio_r[best]), "peaks_ratio_latent": best,
            "peaks_train_s": train_s}


def cube(work: Path, train_args: list[str], seed: int, figure: Path | None) -> dict:
    """Section 2: phase regions of a cube by the rVAE's latents vs k-means on PCA's first two loadings."""
    from affinevae.data.spectra import synthetic_cube
    from affinevae.mapping import cluster_latents, clustering_accuracy

    c = synthetic_cube(seed=seed)
    np.save(work / "cube.npy", c.cube)
    t = time.perf_counter()
    affinevae("train", "--model", "rvae", "--data", str(work / "cube.npy"), "--signal-axis", "2", "--latent-dim", "2",
              "--seed", str(seed), "--out", str(work / "cube"), "--no-progress", *train_args)
    train_s = time.perf_counter() - t
    affinevae("map", str(work / "cube"), "--cube", str(work / "cube.npy"), "--signal-axis", "2", "--clusters", "3",
              "--baseline", "pca", "--seed", str(seed), "--out", str(work / "maps"))
    truth = c.regions.reshape(-1)
    with np.load(work / "maps" / "maps.npz", allow_pickle=False) as f:
        cluster, loads, shift = f["cluster"].reshape(-1), f["baseline_loadings"], f["shift"].reshape(-1)
    pca_clusters = cluster_latents(loads.reshape(len(truth), -1), 3, seed=seed)
    if figure is not None:
        figure.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / "maps" / "baseline_comparison.png", figure)
        print(f"figure: {figure}")
    return {"cube_accuracy": clustering_accuracy(cluster, truth),
            "cube_pca_accuracy": clustering_accuracy(pca_clusters, truth),
            "cube_majority": float(np.bincount(truth).max() / len(truth)),
            "cube_shift_r": float(np.corrcoef(shift, c.shift.reshape(-1))[0, 1]), "cube_train_s": train_s}


def classes(work: Path, train_args: list[str], seed: int, share: float = 0.02) -> dict:
    """Section 3: the cube's phases as the ssrVAE's classes (``share`` of the pixels labelled) and the jrVAE's."""
    from affinevae.data.spectra import synthetic_cube
    from affinevae.mapping import clustering_accuracy

    c = synthetic_cube(seed=seed)
    np.save(work / "cube.npy", c.cube)
    truth = c.regions.reshape(-1)
    rng = np.random.default_rng(seed)
    few = np.full(len(truth), -1)
    known = rng.choice(len(truth), max(int(share * len(truth)), 3 * 3), replace=False)
    few[known] = truth[known]
    np.save(work / "few.npy", few)
    out = {"classes_labelled": int(len(known))}
    for model, extra in (("ssrvae", ["--labels", str(work / "few.npy")]), ("jrvae", ["--classes", "3"])):
        t = time.perf_counter()
        affinevae("train", "--model", model, "--data", str(work / "cube.npy"), "--signal-axis", "2", "--latent-dim",
                  "2", "--seed", str(seed), "--out", str(work / model), "--no-progress", *extra, *train_args)
        out[f"{model}_train_s"] = time.perf_counter() - t
        affinevae("map", str(work / model), "--cube", str(work / "cube.npy"), "--signal-axis", "2",
                  "--out", str(work / f"{model}-maps"))
        with np.load(work / f"{model}-maps" / "maps.npz", allow_pickle=False) as f:
            klass = f["class"].reshape(-1)
        out[f"{model}_accuracy"] = (float(np.mean(klass == truth)) if model == "ssrvae"
                                    else clustering_accuracy(klass, truth))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default="peaks,cube", help="peaks, cube, classes (comma-separated)")
    ap.add_argument("--train-args", default="", help="extra `affinevae train` options, e.g. \"--epochs 40\"")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="folder to keep the runs and maps in (default: a temporary one)")
    ap.add_argument("--figure", help="copy the cube's latents-vs-PCA figure here")
    ap.add_argument("--json", action="store_true", help="also print the numbers as one JSON line")
    args = ap.parse_args(argv)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    extra = shlex.split(args.train_args)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        res: dict = {}
        if "peaks" in sections:
            res.update(peaks(work, extra, args.seed))
        if "cube" in sections:
            res.update(cube(work, extra, args.seed, Path(args.figure) if args.figure else None))
        if "classes" in sections:
            res.update(classes(work, extra, args.seed))
    print("\n| measure | measured | target |\n|---|---|---|")
    rows = [("peaks: r(shift, true shift), test split", "peaks_shift_r", ">= 0.95"),
            ("peaks: |r(one content latent, true ratio)|", "peaks_ratio_r", ">= 0.95"),
            ("cube: region accuracy, k-means of the rVAE latents", "cube_accuracy", ">= 0.90"),
            ("cube: region accuracy, k-means of PCA's first two loadings", "cube_pca_accuracy", "(mixes them)"),
            ("cube: share of the largest region (chance level)", "cube_majority", ""),
            ("cube: r(shift, true shift)", "cube_shift_r", ""),
            ("peaks: train seconds", "peaks_train_s", ""), ("cube: train seconds", "cube_train_s", ""),
            ("classes: pixels labelled for the ssrVAE", "classes_labelled", ""),
            ("classes: ssrVAE class accuracy (its own classes)", "ssrvae_accuracy", ""),
            ("classes: jrVAE class accuracy, no label (Hungarian)", "jrvae_accuracy", ""),
            ("classes: ssrVAE train seconds", "ssrvae_train_s", ""), ("classes: jrVAE train seconds", "jrvae_train_s", "")]
    for name, key, target in rows:
        if key in res:
            print(f"| {name} | {res[key] if isinstance(res[key], int) else format(res[key], '.3f')} | {target} |")
    ok = all(res[k] >= v for k, v in TARGET.items() if k in res)
    print(f"\ntargets {'met' if ok else 'NOT met'}")
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
