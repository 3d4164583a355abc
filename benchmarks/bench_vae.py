"""VAE training throughput (images/s) and test -ELBO on MNIST, beside Pythae's reference.

Reference (measured on the project's 2-core CPU): Pythae's MNIST convolutional VAE trains at
about 80 images/s. Target: affinevae's default conv VAE at least 20x faster at an equal or
better test -ELBO after the same number of epochs.

    python benchmarks/bench_vae.py                 # 60 000 images, 5 epochs, batch 128
    python benchmarks/bench_vae.py --n-train 10000 --epochs 2   # the protocol Pythae was measured at (ref_pythae.py)
"""

from __future__ import annotations

import argparse
import time

import torch

import affinevae as av

PYTHAE_IMAGES_PER_S = 80.0
#: Pythae's conv VAE measured with ref_pythae.py on this machine: (n_train, epochs, batch, latent) -> (images/s, test -ELBO)
PYTHAE_MEASURED = {(10000, 2, 128, 16): (69.0, 132.1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=60000)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train = av.data.load_mnist("train", n=args.n_train)
    test = av.data.load_mnist("test", n=args.n_test)
    torch.manual_seed(0)
    model = av.build_model("vae", latent_dim=args.latent_dim)
    cfg = av.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, val_split=0.0, progress=False, bf16=args.bf16)
    t0 = time.perf_counter()
    res = av.fit(model, train, cfg)
    wall = time.perf_counter() - t0
    ips = sum(h["images_per_s"] for h in res.history) / len(res.history)
    neg_elbo = -av.evaluation.mean_elbo(model, test)
    print(f"protocol: MNIST, {args.n_train} train / {args.n_test} test images, {args.epochs} epochs, batch {args.batch_size}, "
          f"latent {args.latent_dim}, torch threads {torch.get_num_threads()}, bf16 {args.bf16}")
    print(f"{'':28}{'images/s':>12}{'test -ELBO':>14}")
    print(f"{'affinevae conv VAE':28}{ips:>12.0f}{neg_elbo:>14.1f}")
    ref = PYTHAE_MEASURED.get((args.n_train, args.epochs, args.batch_size, args.latent_dim))
    if ref is not None:
        print(f"{'Pythae conv VAE (measured)':28}{ref[0]:>12.0f}{ref[1]:>14.1f}")
        print(f"speed-up {ips / ref[0]:.1f}x (target >= 20x); test -ELBO {neg_elbo:.1f} vs {ref[1]:.1f} "
              f"(target: equal or better); wall time {wall:.0f} s")
    else:
        print(f"{'Pythae conv VAE (ref)':28}{PYTHAE_IMAGES_PER_S:>12.0f}{'':>14}")
        print(f"speed-up {ips / PYTHAE_IMAGES_PER_S:.1f}x (target >= 20x); wall time {wall:.0f} s. Pythae's test -ELBO "
              "for this protocol: run benchmarks/ref_pythae.py with the same sizes in an environment with pythae")


if __name__ == "__main__":
    main()
