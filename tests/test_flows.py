"""The normalising-flow VAE and rVAE (``flow_steps``): amortised planar flows on the content posterior."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import affinevae as av
from affinevae.cli import main
from affinevae.errors import AffineVAEError
from affinevae.models import gaussian_kl
from affinevae.nn.flows import flow_kl, invertible_u, planar_flow, split_flow_parameters


def test_planar_flow_log_determinant_is_the_jacobians():
    """log|det dz_K/dz0| of K planar steps equals the log-determinant of the autograd Jacobian, image by image,
    and every step is invertible (w . u_hat >= -1) whatever u and w the encoder gives."""
    g = torch.Generator().manual_seed(0)
    n, k, d = 4, 5, 3
    u, w, b = torch.randn(n, k, d, generator=g) * 2, torch.randn(n, k, d, generator=g), torch.randn(n, k, generator=g)
    z0 = torch.randn(n, d, generator=g, dtype=torch.float64)
    zk, logdet = planar_flow(z0, u.double(), w.double(), b.double())
    for i in range(n):
        jac = torch.autograd.functional.jacobian(
            lambda z: planar_flow(z[None], u[i:i + 1].double(), w[i:i + 1].double(), b[i:i + 1].double())[0][0], z0[i])
        torch.testing.assert_close(logdet[i], torch.linalg.slogdet(jac)[1], rtol=1e-6, atol=1e-6)
    for scale in (1.0, 30.0, 1e3):  # w . u far below -1 too, where float32 rounded the map onto -1
        u_far = -scale * w + torch.randn(n, k, d, generator=g)
        assert bool(((w * invertible_u(u_far, w)).sum(-1) > -1).all())
    wide = torch.randn(100000, 3, generator=g) * 10 ** torch.empty(100000, 1).uniform_(-4, 2, generator=g)
    assert bool(((wide * invertible_u(torch.randn(100000, 3, generator=g) * 10, wide)).sum(-1) > -1).all())
    first = split_flow_parameters(torch.arange(2 * 2 * 7.0).reshape(2, 14), 2, 3)
    assert [t.shape for t in first] == [(2, 2, 3), (2, 2, 3), (2, 2)] and float(first[2][0, 1]) == 13.0


def test_planar_flow_stays_invertible_for_large_parameters_and_under_bfloat16():
    """The maps are computed in float64 outside autocast: float32 rounded w . u_hat below -1 once |u| |w| neared
    1e4 (8.6 % of such steps, the log-determinant wrong behind its abs), and bfloat16 autocast ran the flow in a
    dtype that cannot hold -1 + 1e-3 (14.5 % of ordinary steps not invertible)."""
    from affinevae.nn.flows import MARGIN

    g = torch.Generator().manual_seed(0)
    u, w = torch.randn(10000, 1, 16, generator=g) * 100, torch.randn(10000, 1, 16, generator=g) * 10
    _, logdet = planar_flow(torch.zeros(10000, 16), u, w, torch.zeros(10000, 1))  # t = 0: log(1 + w . u_hat)
    assert logdet.dtype == torch.float32 and float(logdet.min()) >= math.log(MARGIN) - 1e-4
    u, w = torch.randn(2000, 2, 8, generator=g) * 3, torch.randn(2000, 2, 8, generator=g)
    z0, b = torch.randn(2000, 8, generator=g), torch.randn(2000, 2, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        zk, logdet = planar_flow(z0.bfloat16(), u.bfloat16(), w.bfloat16(), b.bfloat16())
    assert zk.dtype == logdet.dtype == torch.float32
    inputs = [t.bfloat16().double() for t in (z0, u, w, b)]  # the same (bf16-rounded) inputs, computed in float64
    torch.testing.assert_close(logdet.double(), planar_flow(*inputs)[1], rtol=1e-5, atol=1e-5)


def test_flow_kl_is_the_gaussian_kl_without_a_flow_and_the_kl_in_expectation_with_one():
    """With the identity flow (u = w = 0) the estimate is the exact Gaussian KL on every draw; with a flow its
    mean over draws is that of the plain one-sample estimate log q0(z0) - log|det| - log p(z_K)."""
    import math

    g = torch.Generator().manual_seed(1)
    n = 40000
    mean, std = torch.randn(1, 3, generator=g).expand(n, 3), (torch.rand(1, 3, generator=g) + 0.3).expand(n, 3)
    z0 = mean + std * torch.randn(n, 3, generator=g)
    zero = torch.zeros(n, 2, 3)
    zk, logdet = planar_flow(z0, zero, zero, torch.randn(n, 2, generator=g))
    assert torch.equal(zk, z0) and float(logdet.abs().max()) < 1e-6
    torch.testing.assert_close(flow_kl(z0, mean, std, zk, logdet), gaussian_kl(mean, 2 * torch.log(std)))
    u = torch.randn(1, 2, 3, generator=g).expand(n, 2, 3)
    w = torch.randn(1, 2, 3, generator=g).expand(n, 2, 3)
    zk, logdet = planar_flow(z0, u, w, torch.zeros(n, 2))
    log_q0 = (-0.5 * ((z0 - mean) / std).pow(2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(1)
    log_p = (-0.5 * zk.pow(2) - 0.5 * math.log(2 * math.pi)).sum(1)
    plain = (log_q0 - logdet - log_p).mean()
    assert abs(float(flow_kl(z0, mean, std, zk, logdet).mean() - plain)) < 0.03


def test_a_flow_vae_decodes_its_encoded_latent_and_round_trips(tmp_path):
    """``encode``'s ``z_mean`` is the base mean pushed through the flow, so decoding it is the reconstruction
    at the posterior's centre; the flow's parameters are in ``parts``; the KL is the draw's estimate; saved and
    loaded, the model gives the same numbers; 0 steps is the plain VAE (2 D encoder outputs, no parts)."""
    torch.manual_seed(0)
    x = torch.as_tensor(av.data.load_mnist("test", n=6).images)
    model = av.build_model("vae", latent_dim=3, flow_steps=4, seed=0, hidden=[32], channels=[8, 16]).eval()
    assert model.encoder_out_dim() == 2 * 3 + 4 * 7
    with torch.no_grad():
        enc = model.encode(x)
        assert enc.parts["flow_u"].shape == (6, 4, 3) and enc.parts["flow_b"].shape == (6, 4)
        assert not torch.allclose(enc.z_mean, enc.parts["base_mean"])
        torch.testing.assert_close(model.decode_params(enc.z_mean), model(x, sample=False).x_params)
        torch.manual_seed(1)
        out = model(x)
        post = model.infer(x)  # the pass by hand: the ELBO scores the draw's own KL estimate
        torch.manual_seed(1)
        z, _ = model.draw(post)
        recon = -model.likelihood.log_prob(model.decode_params(z), x, model.pixel_log_sigma())
        torch.testing.assert_close(out.elbo, -(recon + post.parts["flow_kl"]))
        model.draw(post)  # a second draw: decoding the first would score it with the second's KL
        with pytest.raises(AffineVAEError, match="z is not the latest draw from this posterior"):
            model.decode_and_score(x, None, z, None, post, {}, True)
    model.save(tmp_path / "m")
    again = av.load(tmp_path / "m")
    assert again.config.flow_steps == 4
    with torch.no_grad():
        torch.testing.assert_close(again.encode(x).z_mean, enc.z_mean, rtol=0, atol=0)
    plain = av.build_model("vae", latent_dim=3, seed=0)
    assert plain.encoder_out_dim() == 6 and plain.encode(x).parts == {}
    with pytest.raises(AffineVAEError, match=r"flow_steps must be an integer in 0\.\.64"):
        av.build_model("vae", flow_steps=65)


def test_a_flow_vae_trains_and_its_flow_leaves_the_identity(tmp_path):
    """Trained, the flow VAE's ELBO rises and its flow moves away from the near-identity start (its maps
    bend the posterior: benchmarks/EXPERIMENTS.md "Normalising flows" for the ELBO against the plain VAE's);
    from the CLI too, for a cVAE."""
    train = av.data.load_mnist("train", n=1000)
    test = torch.as_tensor(av.data.load_mnist("test", n=200).images)
    model = av.build_model("vae", latent_dim=2, flow_steps=4, seed=0, hidden=[64], channels=[8, 16])
    with torch.no_grad():
        before = float(model.elbo(test, generator=torch.Generator().manual_seed(0)).mean())
        start = model.eval().encode(test).parts["flow_u"].abs().mean()
    av.fit(model, train, av.TrainConfig(epochs=3, batch_size=64, lr=2e-3, seed=0, progress=False,
                                        checkpoint=False, val_split=0.0))
    with torch.no_grad():
        after = float(model.elbo(test, generator=torch.Generator().manual_seed(0)).mean())
        moved = model.eval().encode(test).parts["flow_u"].abs().mean()
    assert after > before + 100 and moved > 10 * start, (before, after, float(start), float(moved))
    assert main(["train", "--model", "cvae", "--data", "mnist", "-n", "64", "--latent-dim", "2", "--epochs", "1",
                 "--set", "flow_steps=2", "--no-progress", "--out", str(tmp_path / "c")]) == 0
    assert av.load(tmp_path / "c").config.flow_steps == 2
    assert np.isfinite(av.Run.open(tmp_path / "c").metrics[-1]["train_loss"])


def test_an_rvae_flows_its_content_and_keeps_the_equivariant_encoders_invariance(tmp_path):
    """rvae/crvae take flow_steps (the rVAE article's "(r)VAE with normalising flows"): the flow's parameters
    are the encoder's last (invariant) outputs, so quarter turns of the input leave the flowed content means
    unchanged; the content KL is the draw's estimate (the Gaussian KL for the near-identity start, to 1e-3);
    the model trains, round-trips bit-exactly and runs from the CLI; the joint and semi-supervised models
    refuse it in one line."""
    x = torch.as_tensor(av.data.load_mnist("test", n=8).images)
    for opts in ({"invariances": "rotation"}, {"invariances": "rotation", "rotation_mode": "full",
                                               "group_channels": (4, 4)}):
        model = av.build_model("rvae", latent_dim=2, flow_steps=3, seed=0, **opts).eval()
        plain = av.build_model("rvae", latent_dim=2, seed=0, **opts)
        assert model.encoder_out_dim() == plain.encoder_out_dim() + 3 * 5
        with torch.no_grad():
            post = model.infer(x)
            z, _ = model.draw(post, sample=False)
            base_kl = gaussian_kl(post.parts["base_mean"], post.z_logvar)
            torch.testing.assert_close(model.content_kl(post), base_kl, rtol=1e-3, atol=1e-3)
            assert torch.equal(z, post.parts["flow_z"]) and post.parts["flow_u"].shape == (8, 3, 2)
            if model.config.encoder == "equivariant":
                for q in (1, 2, 3):
                    turned = model.infer(torch.rot90(x, q, (2, 3)))
                    torch.testing.assert_close(turned.z_mean, post.z_mean, rtol=0, atol=1e-4)
                    torch.testing.assert_close(turned.parts["flow_w"], post.parts["flow_w"], rtol=0, atol=1e-4)
    train = av.data.rotated_mnist("train", n=200, seed=0)
    model = av.build_model("crvae", latent_dim=2, flow_steps=2, num_classes=10, invariances="rotation", seed=0)
    av.fit(model, train, av.TrainConfig(epochs=1, batch_size=50, seed=0, progress=False, checkpoint=False,
                                        val_split=0.0))
    y = torch.as_tensor(train.labels[:8])
    model.save(tmp_path / "cr")
    again = av.load(tmp_path / "cr")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        torch.testing.assert_close(again.encode(x, y).z_mean, model.encode(x, y).z_mean, rtol=0, atol=0)
        elbo = model.elbo(x, y, generator=torch.Generator().manual_seed(0))
        assert torch.equal(again.elbo(x, y, generator=g), elbo) and bool(torch.isfinite(elbo).all())
    for family in ("jrvae", "ssrvae"):
        with pytest.raises(AffineVAEError, match="the joint and semi-supervised models have no content flow"):
            av.build_model(family, latent_dim=2, num_classes=3, flow_steps=2)
    assert main(["train", "--model", "rvae", "--data", "rotated-mnist", "-n", "64", "--latent-dim", "2", "--epochs",
                 "1", "--set", "flow_steps=2", "--no-progress", "--out", str(tmp_path / "r")]) == 0
    assert main(["encode", str(tmp_path / "r"), "--data", "rotated-mnist", "-n", "16", "--out",
                 str(tmp_path / "r.npz")]) == 0
    assert np.load(tmp_path / "r.npz")["z_mean"].shape == (16, 2)
