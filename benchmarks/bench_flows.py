"""The normalising-flow VAE (``flow_steps``) beside the same conv VAE without a flow: test -ELBO and
training images/s, the protocol of benchmarks/EXPERIMENTS.md "Normalising flows".

Each row trains the default conv VAE (``av.build_model("vae", latent_dim=D, flow_steps=K, seed=S)``) on the
first MNIST training digits, batch 128, lr 1e-3, seed S for the weights and the batches, and scores the test
digits with one seeded posterior sample. Measured on the project's 2-core CPU, 1 thread (10 000 digits x 10
epochs): 2 latents 150.39 / 149.64 nats with 8 steps against 152.57 / 152.80 without (seeds 0 / 1); 16
latents 106.33 / 106.07 / 109.02 against 106.33 / 108.82 / 107.76 (seeds 0-2).

    OMP_NUM_THREADS=1 python benchmarks/bench_flows.py --threads 1 --latent-dim 2 --seeds 0 1
"""

from __future__ import annotations

import argparse
import time

import torch

import affinevae as av


def run(steps: int, latent_dim: int, seed: int, train, test, epochs: int) -> dict:
    """Train one VAE with ``steps`` planar flow steps and return its row: test -ELBO (nats), images/s, wall s."""
    t0 = time.perf_counter()
    model = av.build_model("vae", latent_dim=latent_dim, flow_steps=steps, seed=seed)
    result = av.fit(model, train, av.TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, seed=seed, progress=False,
                                                  checkpoint=False, val_split=0.0))
    with torch.no_grad():
        elbo = float(model.elbo(test, generator=torch.Generator().manual_seed(0)).mean())
    speed = sum(h["images_per_s"] for h in result.history) / len(result.history)
    return {"-ELBO": -elbo, "images/s": speed, "wall s": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument("--flow-steps", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train = av.data.load_mnist("train", n=args.n_train)
    test = torch.as_tensor(av.data.load_mnist("test", n=args.n_test).images)
    print(f"protocol: MNIST, {args.n_train} train / {args.n_test} test, {args.epochs} epochs, batch 128, lr 1e-3, "
          f"{args.latent_dim} latents, torch threads {torch.get_num_threads()}")
    print(f"{'':28}{'-ELBO':>10}{'images/s':>10}{'wall s':>8}")
    for seed in args.seeds:
        for steps in (0, args.flow_steps):
            r = run(steps, args.latent_dim, seed, train, test, args.epochs)
            name = f"seed {seed}, " + (f"{steps} planar steps" if steps else "no flow (plain VAE)")
            print(f"{name:28}{r['-ELBO']:>10.2f}{r['images/s']:>10.0f}{r['wall s']:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
