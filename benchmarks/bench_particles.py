"""Noisy particles with no preferred orientation, as a cryo-EM user's stack: the ``train`` defaults for float images.

Protocol (run by hand; prints a table): ``--n`` synthetic particles of 40 x 40 pixels, three shapes
(an asymmetric comma of three Gaussian blobs, a 3-fold trimer, a 2-fold dimer; each about 25 px
across, peak about 0.9 after a 1-px PSF) turned uniformly over 360 degrees and shifted by about 1 px,
with white Gaussian noise of standard deviation ``--noise`` (peak signal-to-noise 0.9 / noise),
each image made zero-mean, written as a float32 ``.mrcs`` stack (a cryo-EM particle stack). Each
row trains a full-circle rVAE through the ``train`` command (``--invariances rotation --set
rotation_mode=full --latent-dim 4`` (``--latent-dim``), ``--epochs``, seed 0) on the stack, which the loader min-max
scales onto [0, 1]:

- ``bernoulli``: ``--likelihood bernoulli`` (what ``train`` chose for float stacks before the float-image defaults);
- ``unfiltered``: ``--lowpass 0`` (the float-image defaults without their filter: a Gaussian
  likelihood whose sigma is the measured pixel noise);
- ``no-anchor``: ``--set content_anchor=0`` (the float-image defaults before the content anchor);
- ``defaults``: nothing more (the float-image defaults, :func:`affinevae.defaults.data_defaults`: that
  Gaussian behind a low-pass filter of 1.5 px on every image the model reads and scores,
  ``ModelConfig.lowpass``, which keeps the pixel noise's level, and the content anchor,
  ``RVAEConfig.content_anchor`` 10: the content latents start from the principal components of the
  particles turned into the pose anchor's synchronised frame).

Scores on the training particles: per-class concentration of the learned minus the true angle
modulo each shape's symmetry (1, 3, 2; the better of the two angle senses), k-means (3 clusters,
Hungarian matching) and 10-NN accuracy (5-fold) of the content latents, training images/s. The
reference is :func:`affinevae.pose.classes.aligned_kmeans` of the same particles (classes only),
which needs no training.

    python benchmarks/bench_particles.py                         # noise 0.1 and 0.5, 4 000 particles, 10 epochs
    python benchmarks/bench_particles.py --n 1000 --epochs 3 --noise 0.5   # a quick look
    python benchmarks/bench_particles.py --latent-dim 2 --rows defaults no-anchor   # 2 latents: t-SNE targets
    python benchmarks/bench_particles.py --n 500 --noise 0.3 --epochs 0 --invariances rotation,translation --rows defaults
        # a small stack at train's own batch and epochs (README Performance: small particle stacks)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np
import torch

import affinevae as av
from affinevae.cli import main as cli
from affinevae.evaluation import encode_dataset, offset_concentration
from affinevae.mapping import clustering_accuracy
from affinevae.pose.classes import aligned_kmeans

#: (x, y, sigma, amplitude) Gaussian blobs of each shape, pixels (x right, y up), and its symmetry.
SHAPES = {
    0: ([(0, 0, 4.0, 1.0), (7, 0, 2.5, 0.9), (7, 6, 2.0, 0.8)], 1),
    1: ([(6 * math.cos(a), 6 * math.sin(a), 2.6, 1.0) for a in np.deg2rad([90, 210, 330])], 3),
    2: ([(-6, 0, 3.0, 1.0), (6, 0, 3.0, 1.0), (0, 0, 2.2, 0.6)], 2),
}
SIZE = 40


def particles(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, 40, 40) float32 zero-mean noisy particles, their (n,) shapes and (n,) angles (radians,
    counter-clockwise on screen)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    cls = rng.integers(3, size=n)
    ang = rng.uniform(-math.pi, math.pi, n)
    shift = rng.normal(0, 1.0, (n, 2))
    rr, cc = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    out = np.zeros((n, SIZE, SIZE))
    for k, (blobs, _) in SHAPES.items():
        idx = np.flatnonzero(cls == k)
        ca, sa = np.cos(ang[idx])[:, None, None], np.sin(ang[idx])[:, None, None]
        for x, y, s, a in blobs:
            pr = SIZE / 2 + shift[idx, 0, None, None] - (sa * x + ca * y)
            pc = SIZE / 2 + shift[idx, 1, None, None] + (ca * x - sa * y)
            out[idx] += a * np.exp(-((rr - pr) ** 2 + (cc - pc) ** 2) / (2 * s * s))
    out = gaussian_filter(out, (0, 1.0, 1.0)) + rng.normal(0, noise, out.shape)
    out -= out.mean((1, 2), keepdims=True)
    return out.astype(np.float32), cls, ang


def scores(model, data, cls: np.ndarray, ang: np.ndarray, seed: int) -> dict:
    """Per-class angle concentration modulo each shape's symmetry, k-means and 10-NN of the content."""
    from sklearn.cluster import KMeans
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    enc = encode_dataset(model, data, seed=seed)
    per = max(([offset_concentration(enc["angle"][cls == k], sense * ang[cls == k], symmetry=SHAPES[k][1])
                for k in range(3)] for sense in (1, -1)), key=np.mean)
    z = enc["z_mean"]
    km = clustering_accuracy(KMeans(3, n_init=10, random_state=seed).fit_predict(z), cls)
    knn = cross_val_score(KNeighborsClassifier(10), z, cls, cv=StratifiedKFold(5, shuffle=True, random_state=seed))
    return {"per": per, "angle": float(np.mean(per)), "k-means": km, "10-NN": float(knn.mean())}


ROWS = {"bernoulli": ["--likelihood", "bernoulli"], "unfiltered": ["--lowpass", "0"],
        "no-anchor": ["--set", "content_anchor=0"], "defaults": []}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.5])
    p.add_argument("--epochs", type=int, default=10, help="epochs (0: what train chooses, e.g. about 1 000 steps in "
                                                          "batches of 32 below 2 500 particles)")
    p.add_argument("--invariances", default="rotation",
                   help="train's --invariances (the README's particle command: rotation,translation)")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latent-dim", type=int, default=4,
                   help="content latents (1-3: the content anchor's default targets are t-SNE's, weight 100)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for noise in args.noise:
            images, cls, ang = particles(args.n, noise, seed=5)
            stack = Path(tmp) / f"particles_{noise:g}.mrcs"
            with mrcfile.new(stack, overwrite=True) as f:
                f.set_data(images)

            t0 = time.perf_counter()
            ak = clustering_accuracy(np.asarray(aligned_kmeans(torch.as_tensor(images[:, None]), 3, seed=args.seed).labels), cls)
            print(f"noise {noise:g} (peak SNR {0.9 / noise:.1f}), {args.n} particles: aligned k-means {ak:.3f} "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
            for row in args.rows:
                out = Path(tmp) / f"run_{noise:g}_{row}"
                said, warned = io.StringIO(), io.StringIO()
                with contextlib.redirect_stdout(said), contextlib.redirect_stderr(warned):
                    epochs = ["--epochs", str(args.epochs)] if args.epochs else []
                    rc = cli(["train", "--model", "rvae", "--data", str(stack), "--invariances", args.invariances, "--set",
                              "rotation_mode=full", "--latent-dim", str(args.latent_dim), *epochs, "--seed",
                              str(args.seed), "--no-progress", "--out", str(out), *ROWS[row]])
                if rc != 0:
                    raise SystemExit(f"train failed ({rc}): {said.getvalue()}")
                chosen = [line for line in said.getvalue().splitlines() if "defaults:" in line]
                run = av.Run(out)
                speed = np.mean([json.loads(r)["images_per_s"] for r in (out / "metrics.jsonl").read_text().splitlines()])
                s = scores(run.model(), run.data(split="train", n=None), cls, ang, args.seed)
                print(f"  {row:9s} angle {s['angle']:.3f} (per shape {' / '.join(f'{v:.2f}' for v in s['per'])})  "
                      f"k-means {s['k-means']:.3f}  10-NN {s['10-NN']:.3f}  {speed:.0f} images/s"
                      + ("  (train warned: latents unused)" if "latents are unused" in warned.getvalue() else "")
                      + (f"   [{chosen[0].removeprefix('affinevae: ')}]" if chosen else ""), flush=True)


if __name__ == "__main__":
    main()
