"""Galaxy cut-outs with no preferred orientation, as raw flux: the pixel stretch and the full-circle rVAE.

Protocol (run by hand; prints a table): ``--n`` synthetic cut-outs of ``--size`` pixels, three
2-fold symmetric classes turned uniformly over 360 degrees: an elliptical (an elongated exponential
profile), an edge-on disk with a round bulge and a two-armed spiral (nearly round); blurred by a
Gaussian PSF (sigma 1 px), on a sky of 200 counts with Poisson noise, sky-subtracted, and a saturated
star (20 000 counts) beside ``--stars`` of them. The raw float32 flux is scaled by each ``--stretch``
(:func:`affinevae.data.imageset.scale_images`: 'linear' is min-max, 'auto' the asinh stretch it picks
here) and the rVAE (``invariances=('rotation',)``) is trained with what the ``train`` command chooses for those
pixels (:func:`affinevae.defaults.data_defaults`: the full circle, and for scaled floats the float-image
rules: a Gaussian likelihood at the measured noise behind a 1.5-px low-pass filter, the content anchor;
printed), ``--epochs`` epochs, ``--latent-dim`` content latents.
Scores on the training cut-outs: per-class concentration of 2 x (learned - true angle) (angles of a
2-fold object are known modulo 180 degrees; ``class_offset_concentration(symmetry=2)``, per class E / D / S),
k-means (3 clusters, Hungarian matching) and 10-NN accuracy (5-fold) of the content latents, and
training images/s. 'anchor' says what the pose anchor's synchronisation took: the n-fold symmetry
(2 here, found by itself; ``--anchor-symmetry 1`` synchronises over the full circle, the rule before
the symmetry was chosen, where the galaxies' agreement falls below 0.5 and the anchor is left off)
and its agreement.

    python benchmarks/bench_galaxies.py                      # linear and auto, 3 000 cut-outs of 40 px, 8 epochs
    python benchmarks/bench_galaxies.py --n 1000 --epochs 3   # a quick look
"""

from __future__ import annotations

import argparse
import math
import warnings

import numpy as np
import torch

import affinevae as av
from affinevae.data.imageset import scale_images
from affinevae.defaults import data_defaults
from affinevae.evaluation import class_offset_concentration, encode_dataset, offset_concentration
from affinevae.models.rvae import MIN_SYNC_AGREEMENT
from affinevae.mapping import clustering_accuracy

CLASSES = ("elliptical", "edge-on disk", "spiral")


def galaxies(n: int, size: int, stars: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (n, size, size) float32 sky-subtracted counts, labels (n,), true angles (n,) radians)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    theta = rng.uniform(-math.pi, math.pi, n)
    c = (size - 1) / 2
    v, u = np.mgrid[:size, :size] - c
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    a, b = u * cos - v * sin, u * sin + v * cos  # the galaxy's own axes
    scale = rng.uniform(0.8, 1.2, n)[:, None, None] * size / 40
    flux = rng.uniform(150, 400, n)[:, None, None]
    r_ell = np.hypot(a / (6 * scale), b / (6 * scale * rng.uniform(0.35, 0.6, n)[:, None, None]))
    ell = np.exp(-2 * r_ell)
    disk = np.exp(-np.hypot(a / (9 * scale), b / (1.5 * scale))) + 0.6 * np.exp(-np.hypot(a, b) / (2 * scale))
    r = np.hypot(a, b) / scale + 1e-6
    arms = 1 + 0.9 * np.cos(2 * (np.arctan2(b, a) - 2.2 * np.log(r)))
    spiral = np.exp(-r / 6) * arms * 0.8
    model = flux * np.where(labels[:, None, None] == 0, ell, np.where(labels[:, None, None] == 1, disk, spiral))
    model = gaussian_filter(model, (0, 1, 1))
    with_star = rng.random(n) < stars
    for i in np.flatnonzero(with_star):  # a few images: one saturated star off-centre
        y, x = rng.integers(2, size - 2, 2)
        model[i, y - 1:y + 2, x - 1:x + 2] += 20000.0
    sky = 200.0
    counts = rng.poisson(np.clip(model, 0, 20000) + sky).astype(np.float32) - sky
    return counts, labels, theta


def scores(model, images: np.ndarray, labels: np.ndarray, theta: np.ndarray, seed: int) -> dict:
    """Per-class angle concentration modulo 180 degrees, k-means and 10-NN accuracy of the content latents."""
    from sklearn.cluster import KMeans
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    enc = encode_dataset(model, images, seed=seed)
    per = [offset_concentration(enc["angle"][labels == k], theta[labels == k], symmetry=2) for k in range(3)]
    z = enc["z_mean"]
    km = clustering_accuracy(KMeans(3, n_init=10, random_state=seed).fit_predict(z), labels)
    knn = cross_val_score(KNeighborsClassifier(10), z, labels, cv=StratifiedKFold(5, shuffle=True, random_state=seed))
    return {"per": per, "conc": class_offset_concentration(enc["angle"], theta, labels, symmetry=2), "k-means": km,
            "10-NN": float(knn.mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--size", type=int, default=40)
    p.add_argument("--stars", type=float, default=0.04, help="share of cut-outs with a saturated star")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--stretch", default="linear,auto", help="comma-separated: linear, auto, asinh")
    p.add_argument("--anchor-symmetry", type=int, default=None,
                   help="the rVAE's anchor_symmetry (default: chosen by the synchronisation)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    raw, labels, theta = galaxies(args.n, args.size, args.stars, args.seed)
    share = (np.percentile(raw, 99) - raw.min()) / (raw.max() - raw.min())
    print(f"protocol: {args.n} cut-outs of {args.size} px ({', '.join(CLASSES)}), raw counts span "
          f"[{raw.min():g}, {raw.max():g}], 99 % of them in the lowest {100 * share:.2g} %; rvae full circle, "
          f"{args.latent_dim} content latents, {args.epochs} epochs, seed {args.seed}, torch threads {torch.get_num_threads()}")
    given = {"latent_dim": args.latent_dim, "invariances": ("rotation",), "image_shape": (1, args.size, args.size),
             **({} if args.anchor_symmetry is None else {"anchor_symmetry": args.anchor_symmetry})}
    print(f"{'stretch':10}{'pixel scaling':52}{'anchor':>14}{'E / D / S (mod 180)':>22}{'mean':>7}{'k-means':>9}"
          f"{'10-NN':>8}{'images/s':>10}")
    for stretch in [s.strip() for s in args.stretch.split(",") if s.strip()]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the table says the scaling
            images, used = scale_images(raw[:, None], "galaxies", stretch=stretch)
        data = av.data.ImageSet(images, meta={"pixel_scaling": used.to_dict()})
        options, train, line = data_defaults(data, "rvae", given, None, args.epochs, python=True)
        print(line)
        torch.manual_seed(args.seed)
        model = av.build_model("rvae", seed=args.seed, **options)
        cfg = av.TrainConfig(epochs=train["epochs"], batch_size=train["batch_size"], lr=train["lr"],
                             kl_warmup=train["kl_warmup"], val_split=0.0, progress=False, seed=args.seed, checkpoint=False)
        res = av.fit(model, data, cfg)
        s = scores(model, images, labels, theta, args.seed)
        ips = float(np.mean([h["images_per_s"] for h in res.history]))
        per = " / ".join(f"{v:.2f}" for v in s["per"])
        agree = model.pose_sync_agreement
        anchor = (f"{model.pose_sync_symmetry}-fold {agree:.2f}" + ("" if agree >= MIN_SYNC_AGREEMENT else " off")
                  if agree is not None else "off")
        print(f"{stretch:10}{str(used):52}{anchor:>14}{per:>22}{s['conc']:>7.3f}{s['k-means']:>9.3f}{s['10-NN']:>8.3f}{ips:>10.0f}")


if __name__ == "__main__":
    main()
