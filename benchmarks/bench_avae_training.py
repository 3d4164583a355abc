"""Cost of pose-optimised AVAE training vs a VAE epoch (run by hand; prints a table).

Protocol (issue 12, target: an AVAE epoch at most 3x a VAE epoch, test -ELBO within 1 nat of the
former default training, the search of every image): MNIST digits turned uniformly over the full
circle, ``--n-train`` training digits, the conv VAE of ``bench_avae.py`` (16-32 channels, 10
latents), ``--epochs`` epochs at batch 128 and lr 2e-3, seed 0, ``--threads`` torch threads. Rows:

- ``vae``: the plain VAE (the time reference);
- ``old``, ``avae (search every image)``: pose-optimised training with the first default
  ``train_search`` (8 restarts, 3 Adam steps, for every image), no pose cache;
- ``trusted``, ``avae (trusted head)``: the second default: the pose head (trained on the searched
  poses during training) gives each image a pose from its 4 quarter-turn views; images whose views
  agree (``head_trust`` 0.9) keep it, only the others are searched (8 restarts, 3 steps); no cache;
- ``default``, ``avae (default)``: the current default (:data:`TRAIN_SEARCH` with ``warm_start``):
  also the per-image pose cache, refined by the training step's pose gradient; an image whose head
  agrees with its cached pose (``warm_trust``) keeps it; the searched ones get 8 scored starts, no
  Adam steps;
- ``custom``: the default with the ``--search`` / ``--avae`` changes.

Test: ``--n-test`` full-circle test digits, each model's mean -ELBO after the same search (16
restarts, 2 kept, 10 steps, no head). Prints the wall and CPU time (the process's, which a busy
machine disturbs less than the wall time), images/s per epoch, the ratios to the VAE, the share of
images searched per epoch, and the test -ELBO.

    python benchmarks/bench_avae_training.py --n-train 10000 --epochs 10
"""

from __future__ import annotations

import argparse
import ast
import time

import torch

import affinevae as av
from affinevae.models.avae import AVAE, TRAIN_SEARCH, AVAEConfig
from affinevae.pose import SearchConfig

OLD_TRAIN_SEARCH = SearchConfig(restarts=8, keep=1, steps=3)
TRUSTED_TRAIN_SEARCH = SearchConfig(restarts=8, keep=1, steps=3, head_views=4, head_trust=0.9)
TEST_SEARCH = SearchConfig(restarts=16, keep=2, steps=10, use_head=False)


def vae(args):
    return av.build_model("vae", encoder="conv", decoder="conv", channels=[16, 32], hidden=[256],
                          latent_dim=args.latent_dim)


def run(name: str, model, train, test, args) -> dict:
    torch.manual_seed(args.seed)
    t, cpu = time.perf_counter(), time.process_time()
    res = av.fit(model, train, av.TrainConfig(epochs=args.epochs, batch_size=128, lr=2e-3, progress=False,
                                              checkpoint=False, val_split=0.0, seed=args.seed))
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    model.eval()
    if isinstance(model, AVAE):
        r = model.align(torch.as_tensor(test.images), None, TEST_SEARCH.replace(report_before=False))
    else:
        r = AVAE(model, pose_head=False).align(torch.as_tensor(test.images), None, TEST_SEARCH.replace(report_before=False))
    speeds = [h["images_per_s"] for h in res.history]
    searched = [h.get("pose_searched", float("nan")) for h in res.history]
    row = {"name": name, "wall": wall, "cpu": cpu, "speeds": speeds, "searched": searched,
           "neg_elbo": -float(r.elbo_after.mean()), "train_loss": res.history[-1]["train_loss"]}
    print(f"  {name:28} {wall:7.0f} s ({cpu:.0f} s CPU)  images/s per epoch {' '.join(f'{v:.0f}' for v in speeds)}  "
          f"searched {' '.join(f'{v:.2f}' for v in searched)}  test -ELBO {row['neg_elbo']:.2f}", flush=True)
    return row


def parse_changes(items: list) -> dict:
    """KEY=VALUE strings (values as Python literals) -> dict."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key.strip()] = ast.literal_eval(value)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", default="vae,old,trusted,default",
                   help="which rows to run, comma-separated: vae, old, trusted, default, custom (the default "
                        "with the --search and --avae changes)")
    p.add_argument("--search", action="append", default=[], metavar="KEY=VALUE",
                   help="a change to the default train_search for the 'custom' row, e.g. --search head_trust=0.75")
    p.add_argument("--avae", action="append", default=[], metavar="KEY=VALUE",
                   help="a change to the AVAE config for the 'custom' row, e.g. --avae warm_start=True")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train = av.data.rotated_mnist("train", n=args.n_train, full_circle=True, seed=args.seed)
    test = av.data.rotated_mnist("test", n=args.n_test, full_circle=True, seed=args.seed + 1)
    print(f"== AVAE pose-optimised training cost: {args.n_train} full-circle digits, {args.epochs} epochs, "
          f"{args.threads} threads ==")
    rows = {}
    wanted = args.rows.split(",")
    if "vae" in wanted:
        rows["vae"] = run("vae", vae(args), train, test, args)
    if "old" in wanted:
        torch.manual_seed(args.seed)
        rows["old"] = run("avae (search every image)",
                          AVAE(vae(args), config=AVAEConfig(train_search=OLD_TRAIN_SEARCH, warm_start=False)),
                          train, test, args)
    if "trusted" in wanted:
        torch.manual_seed(args.seed)
        rows["trusted"] = run("avae (trusted head)",
                              AVAE(vae(args), config=AVAEConfig(train_search=TRUSTED_TRAIN_SEARCH, warm_start=False)),
                              train, test, args)
    if "default" in wanted:
        torch.manual_seed(args.seed)
        rows["default"] = run("avae (default)", AVAE(vae(args)), train, test, args)
    if "custom" in wanted:
        changes, avae_changes = parse_changes(args.search), parse_changes(args.avae)
        torch.manual_seed(args.seed)
        search = TRAIN_SEARCH.replace(**changes)
        rows["custom"] = run(f"avae ({', '.join(args.search + args.avae) or 'default'})",
                             AVAE(vae(args), config=AVAEConfig(train_search=search, **avae_changes)), train, test, args)
    if "vae" in rows:
        ref = rows["vae"]["wall"]
        ref_cpu = rows["vae"]["cpu"]
        print(f"\n{'row':28} {'time':>7} {'/ VAE':>7} {'CPU / VAE':>10} {'test -ELBO':>11}")
        for r in rows.values():
            print(f"{r['name']:28} {r['wall']:6.0f}s {r['wall'] / ref:6.2f}x {r['cpu'] / ref_cpu:9.2f}x {r['neg_elbo']:11.2f}")
        print("targets: the default <= 3x the VAE; its test -ELBO within 1 nat of 'search every image'")


if __name__ == "__main__":
    main()
