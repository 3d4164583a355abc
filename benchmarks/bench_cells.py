"""Fluorescence cells from a 12-bit camera, through the command line at the defaults.

Synthetic single-cell crops (48 px, three channels: nucleus, membrane and a protein pattern) of three
phenotypes (a polarised crescent, puncta, a perinuclear ring), each turned uniformly over the full circle
and shifted up to 2 px, with Poisson (shot) noise, stored as a uint16 OME-TIFF whose values reach 4095 (a
12-bit camera's). Then, at `train`'s defaults::

    affinevae train --model rvae --data cells.ome.tif --out rvae
    affinevae train --model jrvae --classes 3 --data cells.ome.tif --out jrvae
    affinevae encode RUN --data cells.ome.tif --out codes.npz

scored by the per-class angle concentration of the learned against the true angles (1: recovered up to
a per-class offset), k-means (3) accuracy of the rVAE's content latents and the jrVAE's class accuracy
(Hungarian matching). The reference is the same run with the pixels divided by 65535 (`--as-16-bit`: the
rule before 12-bit data were divided by the bits they use), which the fluorescence audit measured at
0.993 / 0.852 (rVAE) and angles 0.123 (jrVAE).

    python benchmarks/bench_cells.py                 # rvae and jrvae at the defaults
    python benchmarks/bench_cells.py --as-16-bit     # the data divided by 65535 (saved as float32 first)
    python benchmarks/bench_cells.py --models rvae --n 600 --keep /tmp/cells

Prints measured figures and the commands it ran; ``--json`` adds one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_spectra import affinevae  # noqa: E402  (the same runner: echoes each command, stops on a failure)

SIZE = 48
#: (semi-axes a, b; nucleus centre u, v and semi-axes) of each phenotype in the cell's own frame, pixels.
SHAPES = {0: (17.0, 10.0, (-8.0, 0.0, 6.0, 5.0)), 1: (14.0, 13.0, (-4.0, 3.0, 6.0, 6.0)),
          2: (17.0, 9.0, (0.0, -3.0, 5.0, 4.0))}


def cell(rng: np.random.Generator, kind: int, theta: float, dx: float, dy: float) -> np.ndarray:
    """One (3, SIZE, SIZE) uint16 cell of phenotype ``kind`` turned by ``theta`` radians (counter-clockwise on
    screen) and shifted by (dx, dy) pixels (right, down), with shot noise, values in [0, 4095]."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    c = (SIZE - 1) / 2
    x, y = xx - c - dx, -(yy - c - dy)
    u, v = np.cos(theta) * x + np.sin(theta) * y, -np.sin(theta) * x + np.cos(theta) * y  # the cell's frame
    a, b, (nu, nv, na, nb) = SHAPES[kind]
    a, b = a * rng.uniform(0.92, 1.08), b * rng.uniform(0.92, 1.08)
    r = np.hypot(u / a, v / b)
    body = 1 / (1 + np.exp((r - 1) * 25))
    membrane = np.exp(-((r - 1) * 12) ** 2)
    nucleus = 1 / (1 + np.exp((np.hypot((u - nu) / na, (v - nv) / nb) - 1) * 8))
    if kind == 0:  # a crescent at the front
        protein = body * (np.exp(-((u - 0.75 * a) / 4.0) ** 2) + 0.08)
    elif kind == 1:  # puncta in the cytoplasm, away from the nucleus
        protein = 0.05 * body
        for _ in range(int(rng.integers(10, 16))):
            while True:
                pu, pv = rng.uniform(-a, a), rng.uniform(-b, b)
                if (pu / a) ** 2 + (pv / b) ** 2 < 0.7 and ((pu - nu) / na) ** 2 + ((pv - nv) / nb) ** 2 > 1.3:
                    break
            protein = protein + 0.9 * np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / 2.0)
    else:  # a ring on one side of the nucleus
        protein = body * (0.15 + 0.8 * np.exp(-((np.hypot(u - nu, v - nv) - 7.5) / 2.5) ** 2) * (v > nv))
    mean = np.stack([100 + 2600 * nucleus * rng.uniform(0.8, 1.2),
                     100 + 1800 * membrane * rng.uniform(0.8, 1.2) + 150 * body,
                     100 + 2400 * protein * rng.uniform(0.8, 1.2)])
    counts = rng.poisson(mean / 6.0) * 6.0 + rng.normal(0, 8, mean.shape)  # shot noise at a gain of 6, read noise
    return np.clip(counts, 0, 4095).astype(np.uint16)


def make_cells(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3, SIZE, SIZE) uint16 cells, their phenotypes (N,) and true angles (N,) radians."""
    rng = np.random.default_rng(seed)
    kinds = rng.permutation(np.arange(n) % 3)
    angles = rng.uniform(-np.pi, np.pi, n)
    shifts = rng.uniform(-2, 2, (n, 2))
    return np.stack([cell(rng, k, t, *s) for k, t, s in zip(kinds, angles, shifts)]), kinds, angles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="rvae,jrvae", help="rvae, jrvae (comma-separated)")
    ap.add_argument("--n", type=int, default=1200, help="cells (a multiple of 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--as-16-bit", action="store_true", help="the reference: pixels / 65535, saved as float32")
    ap.add_argument("--keep", help="folder to keep the data and runs in (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import tifffile

    from affinevae.evaluation import class_offset_concentration
    from affinevae.mapping import cluster_latents, clustering_accuracy

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_cells_"))
    work.mkdir(parents=True, exist_ok=True)
    images, kinds, angles = make_cells(args.n, args.seed)
    if args.as_16_bit:
        data = work / "cells.npy"
        np.save(data, (images / 65535.0).astype(np.float32))
    else:
        data = work / "cells.ome.tif"
        tifffile.imwrite(data, images, ome=True, metadata={"axes": "TCYX"}, photometric="minisblack")
    print(f"{args.n} cells of {SIZE} px, 3 channels, largest value {int(images.max())} -> {data}")
    results: dict = {}
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        run = work / model
        extra = ["--classes", "3"] if model == "jrvae" else []
        t = time.perf_counter()
        affinevae("train", "--model", model, *extra, "--data", str(data), "--seed", str(args.seed), "--out", str(run),
                  "--no-progress")
        results[f"{model}_train_s"] = time.perf_counter() - t
        affinevae("encode", str(run), "--data", str(data), "--out", str(work / f"{model}.npz"), "--seed", str(args.seed))
        with np.load(work / f"{model}.npz", allow_pickle=False) as f:
            codes = {k: f[k] for k in f.files}
        results[f"{model}_angle_concentration"] = class_offset_concentration(codes["angle"], angles, kinds)
        if "class" in codes:
            results[f"{model}_class_accuracy"] = clustering_accuracy(codes["class"], kinds)
        else:
            found = cluster_latents(codes["z_mean"], 3, seed=args.seed)
            results[f"{model}_kmeans_accuracy"] = clustering_accuracy(found, kinds)
    print("\n| measure | measured |\n|---|---|")
    for k, v in results.items():
        print(f"| {k} | {v:.3f} |")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
