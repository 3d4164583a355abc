"""rVAE over the full circle: MNIST digits turned uniformly over 360 degrees (issue 12).

Protocol: 10 000 training digits (``rotated_mnist('train', full_circle=True, seed=0)``), 2 content
latents plus the rotation, ``rotation_mode='full'``, at most 10 epochs; evaluated on 5 000 test
digits turned the same way (seed 1). Metrics:

- k-means accuracy: KMeans(10) on the content latents (posterior means of the test digits),
  clusters matched to the digit labels one-to-one (Hungarian, ``mapping.clustering_accuracy``);
- 10-NN accuracy of the content latents (5-fold cross-validation), as ``bench_rvae.py``;
- angle concentration: per digit class, the mean resultant length of (learned - true angle),
  averaged over the classes (1 = every digit's angle is known up to one offset per class);
- training images/s (the trainer's mean over epochs: forward, backward and Adam step).

References: the rVAE's old full mode (MLP encoder, angle as a 2-vector) measured on this
protocol with 5 epochs (0.27 / 0.31 / 0.06) and the TARGET-VAE paper's ablation without its
equivariant encoder (Nasiri & Bepler, NeurIPS 2022: 33.8 % clustering accuracy on full-circle
MNIST). Two references trained here with the same budget: ``--oracle``, the rVAE's own encoder
trained alone on the TRUE training angles (what knowing every angle buys this encoder: the ceiling
of the angle concentration short of a larger encoder), and ``--upright``, a plain VAE with the same
latents on digits that are not turned (the content latents' reference); ``--oracle-sync``, the
same encoder trained alone on the synchronised angles the pose anchor uses (its targets without
the ELBO); ``--upright-same``, the main row's model and options on digits that are not turned (what
the same model's content latents reach with no turn to undo). Targets for the defaults:
k-means >= 0.70, 10-NN >= 0.80, concentration >= 0.90, >= 1 000 images/s eager on the project's
2-core CPU.

    python benchmarks/bench_full_circle.py                    # the defaults (a few minutes)
    python benchmarks/bench_full_circle.py --old              # add the old full mode (encoder mlp) row
    python benchmarks/bench_full_circle.py --oracle --upright # add the two references below
    python benchmarks/bench_full_circle.py --oracle-sync      # the encoder on the anchor's targets alone
    python benchmarks/bench_full_circle.py --upright-same     # the same model on digits not turned
    python benchmarks/bench_full_circle.py --crvae --crvae-train 128,1e-3   # the crvae, also at the trainer's
    python benchmarks/bench_full_circle.py --set group_order=4 --set rotation_sampler=enumerate
    python benchmarks/bench_full_circle.py --n-train 3000 --epochs 2   # a quick look
"""

from __future__ import annotations

import argparse
import ast
import time

import numpy as np
import torch

import affinevae as av
from affinevae.defaults import family_training
from affinevae.evaluation import class_offset_concentration, encode_dataset, offset_concentration
from affinevae.mapping import clustering_accuracy
from affinevae.pose import synchronise_angles

REFERENCE = [("old full mode (mlp, 5 epochs) ref", {"k-means acc": 0.27, "10-NN acc": 0.31, "angle conc": 0.06}),
             ("TARGET-VAE ablation, no equivariant encoder", {"k-means acc": 0.338})]
COLS = ["images/s", "-ELBO", "k-means acc", "10-NN acc", "angle conc", "wall s"]
FMT = {"images/s": "{:>11.0f}", "-ELBO": "{:>11.1f}", "k-means acc": "{:>12.3f}", "10-NN acc": "{:>10.3f}",
       "angle conc": "{:>11.3f}", "wall s": "{:>8.0f}"}


def class_concentrations(angle: np.ndarray, true: np.ndarray, labels: np.ndarray) -> list[float]:
    """``offset_concentration`` |mean(exp(i (angle - true)))| within each class, in the order of
    ``np.unique(labels)`` (angles (N,) radians)."""
    angle, true = np.asarray(angle), np.asarray(true)
    return [offset_concentration(angle[labels == c], true[labels == c]) for c in np.unique(labels)]


def angle_concentration(angle: np.ndarray, true: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of |mean(exp(i (angle - true)))| within the class (angles (N,) radians):
    :func:`affinevae.evaluation.class_offset_concentration`."""
    return class_offset_concentration(angle, true, labels)


def latent_scores(z: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """(k-means accuracy with Hungarian matching, 10-NN accuracy by 5-fold cross-validation) of latents z (N, D)."""
    from sklearn.cluster import KMeans
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    k = len(np.unique(labels))
    clusters = KMeans(k, n_init=10, random_state=seed).fit_predict(z)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    knn = cross_val_score(KNeighborsClassifier(10), z, labels, cv=folds).mean()
    return clustering_accuracy(clusters, labels), float(knn)


def run(name: str, options: dict, train, test, cfg: av.TrainConfig, seed: int) -> dict:
    """Train an rVAE with ``options`` and return its table row."""
    torch.manual_seed(seed)
    model = av.build_model("rvae", **options)
    t0 = time.perf_counter()
    res = av.fit(model, train, cfg)
    wall = time.perf_counter() - t0
    enc = encode_dataset(model, test, seed=0)
    acc, knn = latent_scores(enc["z_mean"], test.labels, seed)
    per = class_concentrations(enc["angle"], test.angle, test.labels)
    conc = angle_concentration(enc["angle"], test.angle, test.labels)
    ips = float(np.mean([h["images_per_s"] for h in res.history]))
    c = model.config
    desc = (f"encoder {c.encoder}" + (f", N={c.group_order}, fields {tuple(c.group_channels)}, downsample "
                                      f"{c.group_downsample}, sampler {c.rotation_sampler}"
                                      if c.encoder == "equivariant" else "")
            + f", encoder_hidden {tuple(c.encoder_hidden)}, decoder {c.decoder} {tuple(c.hidden)}")
    return {"name": name, "images/s": ips, "-ELBO": -float(enc["elbo"].mean()), "k-means acc": acc, "10-NN acc": knn,
            "angle conc": conc, "wall s": wall, "desc": desc, "per": " ".join(f"{k}:{v:.2f}" for k, v in enumerate(per))}


def oracle(options: dict, train, test, cfg: av.TrainConfig, seed: int, synchronised: bool = False) -> dict:
    """The supervised reference for the angle: the rVAE's own encoder (``options``) trained alone on
    the TRUE training angles (maximising its mixture posterior's density there,
    ``RotationPosterior.log_prob``) with the budget of ``cfg``; returns its table row.
    ``synchronised``: on the angles of ``synchronise_angles(train.images, seed=seed, symmetry=1)`` instead, the
    pose anchor's targets without the ELBO (what the anchor's targets allow this encoder)."""
    torch.manual_seed(seed)
    model = av.build_model("rvae", **options)
    x = torch.as_tensor(train.images)
    t_sync = time.perf_counter()
    found = synchronise_angles(train.images, seed=seed, symmetry=1).angles if synchronised else train.angle
    t_sync = time.perf_counter() - t_sync
    angle = torch.as_tensor(found, dtype=torch.float32)
    opt = torch.optim.Adam(model.encoder.parameters(), cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    t0 = time.perf_counter()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            loss = -model.posterior(model.encoder(x[idx])).rotation.log_prob(angle[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    wall = time.perf_counter() - t0
    enc = encode_dataset(model, test, seed=0, elbo=False)
    per = class_concentrations(enc["angle"], test.angle, test.labels)
    c = model.config
    which = "synchronised" if synchronised else "true"
    return {"name": f"supervised angle ({which}), same encoder", "images/s": cfg.epochs * len(x) / wall,
            "-ELBO": float("nan"), "k-means acc": float("nan"), "10-NN acc": float("nan"),
            "angle conc": angle_concentration(enc["angle"], test.angle, test.labels), "wall s": wall + t_sync,
            "desc": f"the rVAE's encoder ({c.encoder}, N={c.group_order}, fields {tuple(c.group_channels)}) alone, "
                    f"trained on the {which} angles", "per": " ".join(f"{k}:{v:.2f}" for k, v in enumerate(per))}


def upright(train_n: int, test_n: int, latent_dim: int, cfg: av.TrainConfig, seed: int) -> dict:
    """The content reference: a plain VAE with the same number of latents and budget on UPRIGHT digits."""
    tr = av.data.rotated_mnist("train", n=train_n, max_angle=0.0, seed=0)
    te = av.data.rotated_mnist("test", n=test_n, max_angle=0.0, seed=1)
    torch.manual_seed(seed)
    model = av.build_model("vae", latent_dim=latent_dim)
    t0 = time.perf_counter()
    res = av.fit(model, tr, cfg)
    wall = time.perf_counter() - t0
    enc = encode_dataset(model, te, seed=0)
    acc, knn = latent_scores(enc["z_mean"], te.labels, seed)
    return {"name": "plain VAE on upright digits", "images/s": float(np.mean([h["images_per_s"] for h in res.history])),
            "-ELBO": -float(enc["elbo"].mean()), "k-means acc": acc, "10-NN acc": knn, "angle conc": float("nan"),
            "wall s": wall, "desc": f"vae, {latent_dim} latents, digits not turned", "per": "-"}


def upright_same(options: dict, train_n: int, test_n: int, cfg: av.TrainConfig, seed: int) -> dict:
    """The main row's model and options trained and tested the same way on UPRIGHT digits (not turned):
    what this model's content latents reach when there is no turn to undo. Its angle concentration
    is that of the learned angles themselves within each class (the true angles are all 0): how far
    the model's own frame follows the handwriting's slant rather than the page."""
    tr = av.data.rotated_mnist("train", n=train_n, max_angle=0.0, seed=0)
    te = av.data.rotated_mnist("test", n=test_n, max_angle=0.0, seed=1)
    row = run("same model on upright digits", options, tr, te, cfg, seed)
    row["desc"] = "the main row's model and options, digits not turned; " + row["desc"]
    return row


def crvae(options: dict, train, test, cfg: av.TrainConfig, seed: int) -> dict:
    """The class-conditional rVAE (``crvae``) with the main row's options over the full circle, given
    the digit labels in training and test: its angle concentration and test -ELBO (its content
    latents hold the style within a class, so k-means and 10-NN against the class do not apply)."""
    model = av.build_model("crvae", seed=seed, num_classes=10, **options)
    t0 = time.perf_counter()
    res = av.fit(model, (train.images, train.labels), cfg)
    wall = time.perf_counter() - t0
    enc = encode_dataset(model, test, seed=0)
    per = class_concentrations(enc["angle"], test.angle, test.labels)
    return {"name": f"crvae full (batch {cfg.batch_size}, lr {cfg.lr:g})",
            "images/s": float(np.mean([h["images_per_s"] for h in res.history])), "-ELBO": -float(enc["elbo"].mean()),
            "k-means acc": float("nan"), "10-NN acc": float("nan"),
            "angle conc": angle_concentration(enc["angle"], test.angle, test.labels), "wall s": wall,
            "desc": "class-conditional, labels given", "per": " ".join(f"{k}:{v:.2f}" for k, v in enumerate(per))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per step (default: the train command's for the main row's rvae)")
    p.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (default: the train command's for the main row's rvae, "
                        "affinevae.defaults.family_training)")
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an rVAE option for the main row, e.g. --set group_order=4 (a Python literal; repeatable)")
    p.add_argument("--old", action="store_true", help="also train the old full mode (encoder mlp) with the same budget")
    p.add_argument("--oracle", action="store_true",
                   help="also train the main row's encoder alone on the TRUE angles (the supervised reference)")
    p.add_argument("--oracle-sync", action="store_true",
                   help="also train the main row's encoder alone on the synchronised angles (the anchor's targets)")
    p.add_argument("--upright", action="store_true",
                   help="also train a plain VAE with the same latents and budget on upright digits")
    p.add_argument("--upright-same", action="store_true",
                   help="also train the main row's model with the same options on upright digits")
    p.add_argument("--crvae", action="store_true",
                   help="also train the class-conditional crvae with the main row's options (labels given), at its "
                        "own train-command defaults unless --crvae-train gives BATCH,LR")
    p.add_argument("--crvae-train", default=None, metavar="BATCH,LR", help="the crvae row's batch size and lr")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train = av.data.rotated_mnist("train", n=args.n_train, full_circle=True, seed=0)
    test = av.data.rotated_mnist("test", n=args.n_test, full_circle=True, seed=1)
    base = {"latent_dim": args.latent_dim, "invariances": ("rotation",), "rotation_mode": "full"}
    extra = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            extra[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            extra[key.strip()] = value
    preset_batch, preset_lr = family_training("rvae", {**base, **extra})
    args.batch_size = preset_batch if args.batch_size is None else args.batch_size
    args.lr = preset_lr if args.lr is None else args.lr
    cfg = av.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, val_split=0.0, progress=False,
                         seed=args.seed, checkpoint=False)
    rows = [run("affinevae rVAE full (defaults)" if not extra else "affinevae rVAE full (--set)", {**base, **extra},
                train, test, cfg, args.seed)]
    if args.old:
        rows.append(run("old full mode (encoder mlp)", {**base, "encoder": "mlp"}, train, test, cfg, args.seed))
    if args.oracle:
        rows.append(oracle({**base, **extra}, train, test, cfg, args.seed))
    if args.oracle_sync:
        rows.append(oracle({**base, **extra}, train, test, cfg, args.seed, synchronised=True))
    if args.upright:
        rows.append(upright(args.n_train, args.n_test, args.latent_dim, cfg, args.seed))
    if args.upright_same:
        rows.append(upright_same({**base, **extra}, args.n_train, args.n_test, cfg, args.seed))
    if args.crvae:
        batch, lr = family_training("crvae", {**base, **extra})
        if args.crvae_train:
            batch_text, _, lr_text = args.crvae_train.partition(",")
            batch, lr = int(batch_text), float(lr_text)
        rows.append(crvae({**base, **extra}, train, test, cfg.replace(batch_size=batch or 128, lr=lr or 1e-3),
                          args.seed))
    print(f"protocol: MNIST turned uniformly over 360 deg, {args.n_train} train / {args.n_test} test, {args.epochs} "
          f"epochs, batch {args.batch_size}, lr {args.lr:g}, {args.latent_dim} content latents + rotation; torch threads "
          f"{torch.get_num_threads()}; options {extra or 'defaults'}")
    print(f"{'':46}" + "".join(f"{k:>{len(FMT[k].format(0))}}" for k in COLS))
    for r in rows:
        print(f"{r['name']:46}" + "".join(FMT[k].format(r[k]) if r[k] == r[k] else f"{'-':>{len(FMT[k].format(0))}}"
                                         for k in COLS))
    for name, ref in REFERENCE:
        print(f"{name:46}" + "".join(FMT[k].format(ref[k]) if k in ref else f"{'-':>{len(FMT[k].format(0))}}"
                                     for k in COLS))
    r = rows[0]
    print(f"targets: k-means >= 0.70: {r['k-means acc'] >= 0.70}; 10-NN >= 0.80: {r['10-NN acc'] >= 0.80}; "
          f"concentration >= 0.90: {r['angle conc'] >= 0.90}; >= 1000 images/s: {r['images/s'] >= 1000}")
    for r in rows:
        print(f"{r['name']}: {r['desc']}; per-class concentration {r['per']}")


if __name__ == "__main__":
    main()
