"""Reference: Pythae's MNIST convolutional VAE, trained and scored with the protocol of bench_vae.py.

Run it in an environment that has ``pythae`` (``pip install pythae``) besides affinevae; it
is never imported by the package or the tests. It trains Pythae's own MNIST benchmark
networks (``Encoder_Conv_VAE_MNIST`` / ``Decoder_Conv_AE_MNIST``, 17 M parameters) with a
Bernoulli (BCE) likelihood, Adam and the same data, batch size and epochs as
``bench_vae.py``, and prints its training images/s and test -ELBO (nats/image, one
posterior sample: Pythae's own loss, recon summed over pixels + KL, averaged over images).

    python benchmarks/ref_pythae.py --n-train 10000 --epochs 2     # about 4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import time

import torch

import affinevae as av


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args()
    from pythae.models import VAE, VAEConfig
    from pythae.models.nn.benchmarks.mnist import Decoder_Conv_AE_MNIST, Encoder_Conv_VAE_MNIST

    train = torch.as_tensor(av.data.load_mnist("train", n=args.n_train).images)
    test = torch.as_tensor(av.data.load_mnist("test", n=args.n_test).images)
    torch.manual_seed(0)
    cfg = VAEConfig(input_dim=(1, 28, 28), latent_dim=args.latent_dim, reconstruction_loss="bce")
    model = VAE(cfg, encoder=Encoder_Conv_VAE_MNIST(cfg), decoder=Decoder_Conv_AE_MNIST(cfg))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    rates = []
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train))
        t0 = time.perf_counter()
        for i in range(0, len(train), args.batch_size):
            out = model({"data": train[order[i:i + args.batch_size]]})
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        rates.append(len(train) / (time.perf_counter() - t0))
        print(f"epoch {epoch + 1}: {rates[-1]:.0f} images/s, train loss {float(out.loss.detach()):.1f}", flush=True)
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(test), 500):
            xb = test[i:i + 500]
            total += float(model({"data": xb}).loss) * len(xb)
    print(f"protocol: MNIST, {args.n_train} train / {args.n_test} test images, {args.epochs} epochs, "
          f"batch {args.batch_size}, latent {args.latent_dim}, torch threads {torch.get_num_threads()}")
    print(f"Pythae conv VAE: {sum(rates) / len(rates):.0f} images/s, test -ELBO {total / len(test):.1f} nats/image")


if __name__ == "__main__":
    main()
