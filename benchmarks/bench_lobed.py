"""Lobed particles in micrographs: ``patches`` with its default centring (``--centre auto``) against the peaks.

Protocol (run by hand; prints a table): ``--frames`` micrographs of 1024 x 1024 pixels, each with about
``--per-frame`` particles placed at random at least 44 px apart and turned uniformly over 360 degrees; the
three shapes of ``bench_particles.py`` (an asymmetric comma of three Gaussian blobs, a 3-fold trimer and a
2-fold dimer, lobes 6-7 px from the centre, peak about 1), white noise of ``--noise`` (default 0.1 of the
peak). For each ``--centre`` mode: ``affinevae patches --window 40`` (defaults otherwise), then ``affinevae train
--model rvae --data patches.npz`` at the patch-set defaults (printed: full rotation, translation, ...) with
``--epochs`` if given, seed 0. Scored: patches per particle and the distance of each patch's position to its
particle's centre (each patch matched to the nearest particle within 20 px); on the matched patches the
per-shape concentration of the learned minus the true angle modulo the shape's symmetry (the better of the two
angle senses) and k-means (3 clusters, Hungarian matching) of the content latents; training images/s.

    python benchmarks/bench_lobed.py                           # 4 frames, both modes
    python benchmarks/bench_lobed.py --frames 2 --epochs 20    # a quicker look
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_particles import SHAPES  # noqa: E402  (the same three shapes)

import affinevae as av  # noqa: E402
from affinevae.cli import main as cli  # noqa: E402
from affinevae.data.patches import PatchSet  # noqa: E402
from affinevae.evaluation import encode_dataset, offset_concentration  # noqa: E402
from affinevae.mapping import clustering_accuracy  # noqa: E402

SIZE = 1024


def micrograph(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(SIZE, SIZE) float32 frame of about ``n`` particles, their (M, 2) centres (row, col), (M,) shapes and
    (M,) angles (radians, counter-clockwise on screen, as ``bench_particles.py``)."""
    rng = np.random.default_rng(seed)
    centres = []
    for p in rng.uniform(30, SIZE - 30, (40 * n, 2)):
        if len(centres) == n:
            break
        if not centres or np.min(np.hypot(*(np.asarray(centres) - p).T)) > 44:
            centres.append(p)
    c = np.asarray(centres)
    cls = rng.integers(3, size=len(c))
    ang = rng.uniform(-math.pi, math.pi, len(c))
    rr, cc = np.mgrid[0:SIZE, 0:SIZE]
    img = np.zeros((SIZE, SIZE))
    for (r0, c0), k, a in zip(c, cls, ang):
        ca, sa = math.cos(a), math.sin(a)
        box = (slice(int(r0) - 20, int(r0) + 21), slice(int(c0) - 20, int(c0) + 21))
        for x, y, s, amp in SHAPES[k][0]:
            pr, pc = r0 - (sa * x + ca * y), c0 + (ca * x - sa * y)
            img[box] += amp * np.exp(-((rr[box] - pr) ** 2 + (cc[box] - pc) ** 2) / (2 * s * s))
    img += rng.normal(0, noise, img.shape)
    return img.astype(np.float32), c, cls, ang


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--per-frame", type=int, default=250)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the patch-set defaults')")
    p.add_argument("--centre", nargs="+", default=["auto", "peak"], choices=["auto", "peak", "mass"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        frames, truth = [], []
        for f in range(args.frames):
            img, c, cls, ang = micrograph(args.per_frame, args.noise, seed=100 + f)
            frames.append(img)
            truth.append((np.full(len(c), f), c, cls, ang))
        stack = Path(tmp) / "micrographs.npy"
        np.save(stack, np.stack(frames))
        tf = np.concatenate([t[0] for t in truth])
        tc, tcls, tang = (np.concatenate([t[i] for t in truth]) for i in (1, 2, 3))
        print(f"{len(tc)} particles in {args.frames} frames of {SIZE}^2, noise {args.noise:g}", flush=True)
        for mode in args.centre:
            out, runs = Path(tmp) / f"p_{mode}.npz", Path(tmp) / f"run_{mode}"
            said = io.StringIO()
            with contextlib.redirect_stdout(said), contextlib.redirect_stderr(io.StringIO()):
                rc = cli(["patches", str(stack), "--window", "40", "--centre", mode, "--out", str(out), "--no-progress"])
            if rc != 0:
                raise SystemExit(f"patches failed ({rc}): {said.getvalue()}")
            ps = PatchSet.load(out)
            # each patch matched to the nearest particle of its frame (frames far apart in one tree)
            tree = cKDTree(np.column_stack([tf * 4 * SIZE, tc]))
            dist, which = tree.query(np.column_stack([ps.frames * 4 * SIZE, ps.positions]))
            ok = dist < 20
            per = np.bincount(which[ok], minlength=len(tc))
            t0 = time.perf_counter()
            said = io.StringIO()
            with contextlib.redirect_stdout(said), contextlib.redirect_stderr(io.StringIO()):
                rc = cli(["train", "--model", "rvae", "--data", str(out), "--seed", str(args.seed), "--no-progress",
                          "--out", str(runs), *(["--epochs", str(args.epochs)] if args.epochs else [])])
            if rc != 0:
                raise SystemExit(f"train failed ({rc}): {said.getvalue()}")
            wall = time.perf_counter() - t0
            chosen = [line for line in said.getvalue().splitlines() if "defaults:" in line]
            run = av.Run(runs)
            speed = np.mean([json.loads(r)["images_per_s"] for r in (runs / "metrics.jsonl").read_text().splitlines()])
            enc = encode_dataset(run.model(), run.data(split="train", n=None), seed=args.seed)
            a, k, t = enc["angle"][ok], tcls[which[ok]], tang[which[ok]]
            conc = max(([offset_concentration(a[k == s], sense * t[k == s], symmetry=SHAPES[s][1]) for s in range(3)]
                        for sense in (1, -1)), key=np.mean)
            from sklearn.cluster import KMeans

            km = clustering_accuracy(KMeans(3, n_init=10, random_state=args.seed).fit_predict(enc["z_mean"][ok]), k)
            print(f"  --centre {mode:4s}: {len(ps)} patches ({ok.mean():.2f} matched), particles with 0 / 1 / 2+ patches "
                  f"{(per == 0).sum()} / {(per == 1).sum()} / {(per >= 2).sum()}, position error median "
                  f"{np.median(dist[ok]):.2f} px; angle {np.mean(conc):.3f} (per shape "
                  f"{' / '.join(f'{v:.2f}' for v in conc)}), k-means {km:.3f}; {speed:.0f} images/s, {wall:.0f} s"
                  + (f"   [{chosen[0].removeprefix('affinevae: ')}]" if chosen else ""), flush=True)


if __name__ == "__main__":
    main()
