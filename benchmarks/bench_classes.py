"""Class discovery (jrVAE) and semi-supervised classification (ssrVAE) on rotated MNIST.

Protocol (issue 13, parts 1-2): MNIST digits rotated by angles uniform in +-60 degrees; 2
content latents plus the rotation latent and 10 classes; 10 000 training images, 10 epochs;
evaluated on 5 000 rotated test images.

- ``joint``: the jrVAE trained without labels. Cluster accuracy of the inferred ``class``
  against the digit labels (best one-to-one matching, Hungarian), its NMI, test -ELBO
  (nats/image, exact over the classes, one posterior sample of z and pose) and training
  images/s (the trainer's mean over epochs). Targets: accuracy >= 0.70, >= 20x the images/s
  of pyroVED 0.3.0's jiVAE.
- ``semi``: the ssrVAE trained on the same images with 100 and with 1 000 of them labelled (the
  same number per digit, chosen with the seed), the others -1. Test accuracy of ``class``
  against the digit labels. Targets: >= 0.85 with 100 labels, >= 0.93 with 1 000.
- ``--max-angle 180``: the digits turned uniformly over the full circle instead, and the models
  in ``rotation_mode='full'`` (their default there: the group-equivariant encoder, the warp
  decoder and the enumeration over the rotation bins). No target; the ±60 degree figures are
  the reference.
- ``--enumerate-steps S``: also time S training steps of the jrVAE with ``discrete='enumerate'``
  (the exact expectation over the 10 classes, one batched decoder pass of N*K rows).

Reference (from the issue, measured on the project's 2-core CPU): pyroVED 0.3.0
``jiVAE(latent_dim=2, discrete_dim=10, invariances=['r'])`` trains at 16 images/s (parallel
enumeration over the 10 classes) and after one epoch of 2 000 rotated digits its discrete
latent is at chance (cluster accuracy 0.15). pyroVED is not installed here.

    python benchmarks/bench_classes.py                              # the full protocol
    python benchmarks/bench_classes.py --sections joint --n-train 5000 --epochs 5   # a quick look
    python benchmarks/bench_classes.py --sections semi --labels 100
    python benchmarks/bench_classes.py --max-angle 180              # over the full circle
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

import affinevae as av
from affinevae.evaluation import class_offset_concentration, encode_dataset
from affinevae.mapping import clustering_accuracy

PYROVED_JIVAE = {"images/s": 16.0, "cluster accuracy": 0.15}


def balanced_labels(labels: np.ndarray, n_labelled: int, num_classes: int, seed: int) -> np.ndarray:
    """Labels with ``n_labelled`` of them kept (n_labelled / K per class, chosen with ``seed``), -1 elsewhere."""
    rng = np.random.default_rng(seed)
    out = np.full_like(labels, -1)
    per = n_labelled // num_classes
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        keep = rng.choice(idx, size=min(per, len(idx)), replace=False)
        out[keep] = c
    return out


def train(model, data, args) -> tuple[float, float]:
    """Train with the protocol's settings; returns (mean training images/s, wall seconds)."""
    cfg = av.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                         val_split=0.0, progress=False, checkpoint=False, seed=args.seed)
    t0 = time.perf_counter()
    res = av.fit(model, data, cfg)
    return float(np.mean([h["images_per_s"] for h in res.history])), time.perf_counter() - t0


def time_steps(model, x: torch.Tensor, steps: int, batch_size: int) -> float:
    """Training images/s of ``steps`` Adam steps on batches of ``x`` (after one warm-up step)."""
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    t0 = 0.0
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        xb = x[(i * batch_size) % len(x):][:batch_size]
        out = model(xb)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="joint,semi", help="joint, semi or both (comma-separated)")
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--schedule", default="none", help="learning-rate schedule: none or cosine")
    p.add_argument("--labels", default="100,1000", help="labelled images for the semi-supervised runs")
    p.add_argument("--enumerate-steps", type=int, default=0, help="time this many steps of discrete='enumerate'")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-angle", type=float, default=60.0,
                   help="digits turned uniformly in +-DEG degrees (180: the full circle, rotation_mode 'full')")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a model option for both models (JSON value, e.g. --set class_balance=10); repeatable")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    if not 0 < args.max_angle <= 180:
        p.error(f"--max-angle must lie in (0, 180] degrees, got {args.max_angle:g}")
    train_set = av.data.rotated_mnist("train", n=args.n_train, max_angle=math.radians(args.max_angle), seed=0)
    test = av.data.rotated_mnist("test", n=args.n_test, max_angle=math.radians(args.max_angle), seed=1)
    opts = dict(latent_dim=2, invariances=("rotation",), num_classes=10)
    if args.max_angle == 180:
        opts["rotation_mode"] = "full"
    for item in args.set:
        key, _, value = item.partition("=")
        opts[key.strip()] = json.loads(value)
    print(f"protocol: rotated MNIST (+-{args.max_angle:g} deg), {args.n_train} train / {args.n_test} test images, {args.epochs} epochs, "
          f"batch {args.batch_size}, lr {args.lr:g} ({args.schedule}), 2 latents + rotation + 10 classes; torch threads "
          f"{torch.get_num_threads()}, seed {args.seed}" + (f"; options {' '.join(args.set)}" if args.set else ""))
    if "joint" in sections:
        torch.manual_seed(args.seed)
        model = av.build_model("jrvae", **opts)
        ips, wall = train(model, train_set, args)
        enc = encode_dataset(model, test, seed=0)
        from sklearn.metrics import normalized_mutual_info_score

        acc = clustering_accuracy(enc["class"], test.labels)
        nmi = normalized_mutual_info_score(test.labels, enc["class"])
        used = len(np.unique(enc["class"]))
        print(f"\njoint (jrvae, discrete={model.config.discrete}, no labels): {wall:.0f} s")
        print(f"{'':28s}{'affinevae':>12s}{'pyroVED jiVAE':>15s}")
        print(f"{'training images/s':28s}{ips:12.0f}{PYROVED_JIVAE['images/s']:15.0f}   ({ips / PYROVED_JIVAE['images/s']:.0f}x)")
        print(f"{'cluster accuracy (test)':28s}{acc:12.3f}{PYROVED_JIVAE['cluster accuracy']:15.2f}   "
              f"(pyroVED: 1 epoch of 2 000)")
        print(f"{'NMI (test)':28s}{nmi:12.3f}")
        print(f"{'classes used (test)':28s}{used:12d}")
        print(f"{'test -ELBO (nats/image)':28s}{-enc['elbo'].mean():12.1f}")
        print(f"{'angle concentration (test)':28s}{class_offset_concentration(enc['angle'], test.angle, test.labels):12.3f}"
              "   (per digit class, bench_full_circle.py's)")
        if args.enumerate_steps:
            torch.manual_seed(args.seed)
            x = torch.as_tensor(train_set.images)
            rates = {d: time_steps(av.build_model("jrvae", discrete=d, **opts), x, args.enumerate_steps, args.batch_size)
                     for d in ("gumbel", "enumerate")}
            print(f"{args.enumerate_steps} timed steps: gumbel {rates['gumbel']:.0f} images/s, enumerate "
                  f"{rates['enumerate']:.0f} images/s ({rates['gumbel'] / rates['enumerate']:.1f}x slower)")
    if "semi" in sections:
        for n_lab in [int(v) for v in args.labels.split(",") if v.strip()]:
            y = balanced_labels(train_set.labels, n_lab, 10, args.seed)
            torch.manual_seed(args.seed)
            model = av.build_model("ssrvae", **opts)
            ips, wall = train(model, (train_set.images, y), args)
            enc = encode_dataset(model, test, elbo=False)
            acc = float((enc["class"] == test.labels).mean())
            target = 0.85 if n_lab <= 100 else 0.93
            conc = class_offset_concentration(enc["angle"], test.angle, test.labels)
            print(f"\nsemi-supervised (ssrvae, {int((y >= 0).sum())} labelled): test accuracy {acc:.3f} "
                  f"(target >= {target}), angle concentration {conc:.3f}, {ips:.0f} training images/s, {wall:.0f} s")


if __name__ == "__main__":
    main()
