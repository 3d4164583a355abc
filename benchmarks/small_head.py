"""Give an AVAE a cheaper pose head and a pose refiner (run by hand; section 3 of bench_avae.py then times it).

Starting from an AVAE whose head and VAE were tuned together (``bench_avae.py --sections 3``
caches one as ``avae-posed-amortised-n60000-e24-v4``), this

1. distils a smaller head (``--channels``, default 8,16: about half the cost of a 16,32 head
   per view) from the old head's 4-view consensus on the upright training digits, turned
   anew every step (``fit_pose_head(target='search', augment_rotation=True)``);
2. trains it on the model's ELBO at its 4-view consensus (``target='elbo'``, ``views=4``),
   the VAE fixed, with a decreasing learning rate (``--elbo-epochs`` at ``--elbo-lrs``);
3. trains a pose refiner (:func:`affinevae.pose.amortise.fit_pose_refiner`) on the same digits;

and saves the model to ``--out``. The VAE is not changed, so an exhaustive search of the
result is that of the input model. Timings: about 11 min with 2 threads.

    python benchmarks/small_head.py /tmp/bench/avae_cache/avae-posed-amortised-n60000-e24-v4 --out /tmp/bench/small
"""

from __future__ import annotations

import argparse
import time

import torch

import affinevae as av
from affinevae.pose import HeadTrainConfig, PoseHead, fit_pose_head, fit_pose_refiner


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a saved AVAE with a trained head")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=60000, help="upright training digits")
    p.add_argument("--channels", default="8,16")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--distil-epochs", type=int, default=8)
    p.add_argument("--elbo-epochs", default="6,8,10", help="epochs of each learning-rate phase")
    p.add_argument("--elbo-lrs", default="1e-3,5e-4,3e-4")
    p.add_argument("--refiner-epochs", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    m = av.load(args.model).eval()
    x = av.data.load_mnist("train", n=args.n).images
    xt = m.check_input(x)[0]
    t = time.perf_counter()
    with torch.no_grad():
        target = torch.cat([m.predict_pose(xt[i:i + 4096], 1, 4)[:, 0] for i in range(0, len(xt), 4096)])
    ch = tuple(int(v) for v in args.channels.split(","))
    m.config = m.config.replace(head_channels=ch, head_hidden=args.hidden)
    torch.manual_seed(0)
    m.head = PoseHead(m.config.image_shape, m.transform, m.config.search.ranges(), channels=ch, hidden=args.hidden,
                      hypotheses=m.config.head_hypotheses)
    h = fit_pose_head(m, x, target, HeadTrainConfig(epochs=args.distil_epochs, augment_rotation=True, lr=2e-3))
    print(f"distilled a {ch} head: loss {h[0]:.3f} -> {h[-1]:.3f} ({time.perf_counter() - t:.0f} s)", flush=True)
    for seed, (epochs, lr) in enumerate(zip(args.elbo_epochs.split(","), args.elbo_lrs.split(","))):
        t = time.perf_counter()
        h = fit_pose_head(m, x, None, HeadTrainConfig(target="elbo", epochs=int(epochs), augment_rotation=True,
                                                      lr=float(lr), views=4, seed=seed))
        print(f"ELBO at the 4-view consensus, {epochs} epochs at lr {lr}: {h[0]:.2f} -> {h[-1]:.2f} nats "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
    t = time.perf_counter()
    h = fit_pose_refiner(m, x, HeadTrainConfig(target="elbo", epochs=args.refiner_epochs, augment_rotation=True,
                                               lr=1e-3, views=4))
    print(f"refiner: {h[0]:.2f} -> {h[-1]:.2f} nats ({time.perf_counter() - t:.0f} s)", flush=True)
    m.config = m.config.replace(search=m.config.search.replace(head_views=4))
    m.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
