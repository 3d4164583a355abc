"""Configs, registry, affine warps, likelihoods and the AE / VAE / cVAE model API."""

import math

import numpy as np
import pytest
import torch

import affinevae as av
from affinevae.encoding import encode_dataset
from affinevae.errors import AffineVAEError
from affinevae.models import gaussian_kl
from affinevae.nn import Pose, compose_affine, invert_affine, pose_matrix, render, canonicalise
from affinevae.nn.likelihoods import LIKELIHOODS


def test_unknown_option_is_an_error_with_suggestion():
    with pytest.raises(AffineVAEError, match="did you mean 'latent_dim'"):
        av.build_model("vae", latnt_dim=3)


@pytest.mark.parametrize("opts,msg", [
    ({"latent_dim": 0}, "latent_dim"),
    ({"encoder": "resnet"}, "encoder"),
    ({"likelihood": "poisson"}, "likelihood"),
    ({"beta": -1.0}, "beta"),
    ({"likelihood": "gaussian", "sigma": float("inf")}, "sigma must be a finite number > 0, got inf"),
    ({"image_shape": (28, 28)}, "image_shape"),
])
def test_invalid_option_values_raise_at_construction(opts, msg):
    with pytest.raises(AffineVAEError, match=msg):
        av.build_model("vae", **opts)


def test_unknown_keyword_of_any_config_is_an_affinevae_error():
    from affinevae.pose import HeadTrainConfig, SearchConfig

    for cls in (av.TrainConfig, SearchConfig, HeadTrainConfig, av.models.vae.VAEConfig):
        with pytest.raises(AffineVAEError, match=rf"unknown option 'epoch' for {cls.__name__}.*valid options: "):
            cls(epoch=3)
    import copy
    import dataclasses
    import pickle

    cfg = av.TrainConfig(epochs=3)  # copies and pickles (no keywords) still construct
    assert copy.deepcopy(cfg) == cfg == pickle.loads(pickle.dumps(cfg)) and dataclasses.replace(cfg, lr=0.1).lr == 0.1


def test_unknown_model_name():
    with pytest.raises(AffineVAEError, match="unknown model 'vea'.*did you mean 'vae'"):
        av.build_model("vea")


def test_config_is_frozen_and_round_trips_json():
    m = av.build_model("vae", latent_dim=3, hidden=[64])
    with pytest.raises(Exception):
        m.config.latent_dim = 5
    assert type(m.config).from_dict(m.config.to_dict()) == m.config


def test_kl_of_standard_normal_is_zero_and_known_value():
    mean = torch.zeros(4, 3)
    assert torch.allclose(gaussian_kl(mean, torch.zeros(4, 3)), torch.zeros(4))
    # KL(N(1, 1) || N(0, 1)) = 0.5 per dim
    assert torch.allclose(gaussian_kl(torch.ones(2, 3), torch.zeros(2, 3)), torch.full((2,), 1.5))


def test_likelihoods_on_known_inputs():
    x = torch.tensor([[[[0.0, 1.0]]]])
    logits = torch.zeros_like(x)
    bern = LIKELIHOODS.get("bernoulli")()
    assert torch.allclose(bern.log_prob(logits, x), torch.tensor([2 * math.log(0.5)]))
    gauss = LIKELIHOODS.get("gaussian")()
    lp = gauss.log_prob(torch.zeros_like(x), x, torch.tensor(0.0))
    assert torch.allclose(lp, torch.tensor([-math.log(2 * math.pi) - 0.5]))
    cb = LIKELIHOODS.get("cbernoulli")()
    # at lambda = 1/2 the continuous Bernoulli is uniform on [0, 1]: log density 0
    assert torch.allclose(cb.log_prob(torch.zeros(1, 1, 3, 3), torch.rand(1, 1, 3, 3)), torch.zeros(1), atol=1e-4)


def test_affine_inverse_and_composition():
    g = torch.Generator().manual_seed(0)
    pose = Pose(angle=torch.rand(5, generator=g) * 6, shift=torch.rand(5, 2, generator=g) * 0.2,
                scale=1 + torch.rand(5, generator=g) * 0.3, shear=torch.rand(5, generator=g) * 0.2)
    T = pose_matrix(pose)
    I = compose_affine(T, invert_affine(T))
    assert torch.allclose(I, torch.eye(2, 3).expand(5, 2, 3), atol=1e-5)
    T2 = pose_matrix(Pose(angle=torch.full((5,), 0.3)))
    full = lambda M: torch.cat([M, torch.tensor([[[0.0, 0.0, 1.0]]]).expand(len(M), 1, 3)], 1)
    assert torch.allclose(full(compose_affine(T, T2)), full(T2) @ full(T), atol=1e-5)


def test_render_rotates_counter_clockwise_and_canonicalise_undoes_it():
    img = torch.zeros(1, 1, 21, 21)
    img[0, 0, 10, 14:19] = 1.0  # a bar pointing right from the centre
    up = render(img, Pose(angle=torch.tensor([math.pi / 2])))
    # counter-clockwise by 90 degrees on screen: the bar now points up (smaller row index)
    rows, cols = torch.nonzero(up[0, 0] > 0.5, as_tuple=True)
    assert rows.float().mean() < 9 and abs(cols.float().mean() - 10) < 1
    back = canonicalise(up, Pose(angle=torch.tensor([math.pi / 2])))
    assert torch.allclose(back[..., 4:17, 4:17], img[..., 4:17, 4:17], atol=1e-4)


def test_rotated_mnist_is_reproducible_and_matches_true_angle():
    a = av.data.rotated_mnist("test", n=20, seed=3)
    b = av.data.rotated_mnist("test", n=20, seed=3)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.angle, b.angle)
    assert np.all(np.abs(a.angle) <= math.radians(60))
    upright = av.data.load_mnist("test", n=20)
    undone = canonicalise(torch.tensor(a.images), Pose(angle=torch.tensor(a.angle))).numpy()
    err_undone = np.abs(undone - upright.images)[..., 6:22, 6:22].mean()
    err_rotated = np.abs(a.images - upright.images)[..., 6:22, 6:22].mean()
    assert err_undone < 0.3 * err_rotated


@pytest.mark.parametrize("name,opts", [("ae", {}), ("vae", {}), ("vae", {"encoder": "mlp", "decoder": "mlp"}),
                                       ("vae", {"likelihood": "gaussian", "learn_sigma": True}),
                                       ("vae", {"likelihood": "cbernoulli"}), ("cvae", {"num_classes": 10})])
def test_model_api_shapes(name, opts):
    torch.manual_seed(0)
    m = av.build_model(name, latent_dim=3, hidden=[32], channels=[8, 16], **opts)
    x = torch.rand(6, 1, 28, 28)
    y = torch.arange(6) if m.conditional else None
    enc = m.encode(x, y)
    assert enc.z_mean.shape == (6, 3) and enc.z_std.shape == (6, 3)
    out = m(x, y)
    assert out.loss.dim() == 0 and out.elbo.shape == (6,) and out.x_params.shape == (6, 1, 28, 28)
    assert torch.allclose(out.loss, out.recon + m.config.beta * out.kl if m.variational else out.recon)
    assert m.decode(enc.z_mean, y).shape == (6, 1, 28, 28)
    assert m.reconstruct(x, y).shape == (6, 1, 28, 28)
    assert m.sample(4, y=torch.arange(4) if m.conditional else None).shape == (4, 1, 28, 28)
    assert m.elbo(x, y).shape == (6,)
    if name == "ae":
        assert torch.all(enc.z_std == 0) and float(out.kl) == 0.0


def test_cvae_requires_labels_and_checks_range():
    m = av.build_model("cvae", num_classes=3, latent_dim=2, hidden=[16], channels=[4])
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(AffineVAEError, match="labels are required"):
        m.encode(x)
    with pytest.raises(AffineVAEError, match="labels must lie in"):
        m.encode(x, torch.tensor([0, 5]))
    with pytest.raises(AffineVAEError, match="decoding needs a class"):
        m.decode(torch.zeros(2, 2))


def test_models_without_labels_refuse_a_given_y_but_train_and_encode_on_labelled_data():
    torch.manual_seed(0)
    m = av.build_model("vae", image_shape=(1, 28, 28), latent_dim=2, hidden=[16], channels=[4])
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([0, 1, 2])
    for where, call in [("encode", lambda: m.encode(x, y)), ("elbo", lambda: m.elbo(x, y)),
                        ("loss", lambda: m.loss(x, y)), ("reconstruct", lambda: m.reconstruct(x, y)),
                        ("decode", lambda: m.decode(torch.zeros(3, 2), y)), ("sample", lambda: m.sample(3, y=y))]:
        with pytest.raises(AffineVAEError, match=rf"^{where}: model 'vae' takes no class labels") as info:
            call()
        assert "\n" not in str(info.value)
    assert not m.takes_labels and av.build_model("cvae", num_classes=3, latent_dim=2).takes_labels
    # the internal paths keep working on data that carry labels (MNIST always does)
    data = av.data.load_mnist("test", n=40)
    assert data.labels is not None
    av.fit(m, data, av.TrainConfig(epochs=1, batch_size=20, val_split=0.0, progress=False, checkpoint=False))
    enc = encode_dataset(m, data, elbo=True)
    assert enc["z_mean"].shape == (40, 2) and enc["elbo"].shape == (40,) and np.array_equal(enc["labels"], data.labels)


def test_elbo_generator_fixes_the_estimate_and_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    m = av.build_model("vae", latent_dim=3, hidden=[16], channels=[4]).eval()
    x = torch.rand(5, 1, 28, 28)
    state = torch.get_rng_state()
    a = m.elbo(x, n_samples=2, generator=torch.Generator().manual_seed(7))
    b = m.elbo(x, n_samples=2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)  # the global generator did not advance
    assert torch.equal(a, b) and a.shape == (5,)
    c = m.elbo(x, n_samples=2, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(a, c)  # the estimate is sampled: another seed, another value
    m.elbo(x)
    assert not torch.equal(torch.get_rng_state(), state)  # without a generator: torch's global one
    with pytest.raises(AffineVAEError, match="generator must be a torch.Generator"):
        m.elbo(x, generator=7)


def test_elbo_generator_seeds_only_the_forked_generators(monkeypatch):
    """elbo(generator=) seeds the CPU generator it forked, not every CUDA device through torch.manual_seed
    (whose CUDA generators fork_rng(devices=[]) does not restore: a CPU model's estimate reseeded the GPUs)."""
    def reseed_all(seed):
        raise AssertionError("elbo(generator=) reseeded every CUDA device")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseed_all)
    with pytest.raises(AssertionError, match="reseeded every CUDA device"):
        torch.manual_seed(0)  # the probe works: torch.manual_seed reaches the CUDA generators
    m = av.build_model("vae", latent_dim=2, hidden=[16], channels=[4]).eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    a = m.elbo(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, m.elbo(x, generator=torch.Generator().manual_seed(3)))


def test_bad_model_inputs():
    m = av.build_model("vae", latent_dim=2, hidden=[16], channels=[4])
    with pytest.raises(AffineVAEError, match="shape"):
        m.encode(torch.rand(2, 1, 20, 20))
    bad = torch.rand(2, 1, 28, 28)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(AffineVAEError, match="NaN"):
        m.encode(bad)
    with pytest.raises(AffineVAEError, match="latents must have shape"):
        m.decode(torch.zeros(2, 5))


def test_save_load_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    m = av.build_model("cvae", num_classes=4, latent_dim=3, hidden=[32], channels=[8, 16]).eval()
    m.save(tmp_path / "m")
    m2 = av.load(tmp_path / "m")
    assert type(m2) is type(m) and m2.config == m.config
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([0, 1, 3])
    assert torch.equal(m.encode(x, y).z_mean, m2.encode(x, y).z_mean)


def test_load_errors(tmp_path):
    with pytest.raises(AffineVAEError, match="no such run"):
        av.load(tmp_path / "missing")
    m = av.build_model("vae", latent_dim=2, hidden=[16], channels=[4])
    m.save(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(AffineVAEError, match="corrupt weights"):
        av.load(tmp_path / "m")
    m.save(tmp_path / "m2")
    other = av.build_model("vae", latent_dim=3, hidden=[16], channels=[4])
    other.save(tmp_path / "m3")
    (tmp_path / "m2" / "model.safetensors").write_bytes((tmp_path / "m3" / "model.safetensors").read_bytes())
    with pytest.raises(AffineVAEError, match="do not match"):
        av.load(tmp_path / "m2")
    (tmp_path / "m2" / "model.json").write_text("{not json")
    with pytest.raises(AffineVAEError, match="corrupt model config"):
        av.load(tmp_path / "m2")


def test_sigma_radius_is_a_normalised_gaussian_with_a_centred_precision_window(tmp_path):
    from scipy.stats import norm

    from affinevae.errors import AffineVAEError
    from affinevae.models.base import pixel_sigma_window

    kw = dict(image_shape=(1, 8, 10), latent_dim=2, encoder="mlp", decoder="mlp", hidden=[16],
              likelihood="gaussian", sigma=0.2)
    model = av.build_model("vae", sigma_radius=0.5, **kw)
    sig = model.pixel_log_sigma().exp()
    assert sig.shape == (8, 10)
    # centre pixels are the most trusted; the middle of an edge row/column sits at r -> 1
    assert sig.min() == sig[3:5, 4:6].min() and torch.allclose(sig[3:5, 4:6], sig[3, 4].expand(2, 2))
    r2_edge = (1 - 1 / 8) ** 2 + (1 / 10) ** 2
    torch.testing.assert_close(sig[0, 4], torch.tensor(0.2 * math.exp(r2_edge / (2 * 0.25))))
    assert pixel_sigma_window((8, 10), 0.0).ndim == 0
    # the likelihood is the sum of per-pixel normal log densities with those sigmas
    gen = torch.Generator().manual_seed(0)
    x, params = torch.rand(3, 1, 8, 10, generator=gen), torch.rand(3, 1, 8, 10, generator=gen)
    want = norm.logpdf(x.numpy(), params.numpy(), sig.numpy()).reshape(3, -1).sum(1)
    got = model.likelihood.log_prob(params, x, model.pixel_log_sigma())
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
    assert av.build_model("vae", **kw).pixel_log_sigma().ndim == 0  # no window: one scalar sigma
    # saved and loaded: the window comes back from the config
    model.save(tmp_path / "m")
    torch.testing.assert_close(av.load(tmp_path / "m").pixel_log_sigma(), model.pixel_log_sigma(), rtol=0, atol=0)
    with pytest.raises(AffineVAEError, match="sigma_radius applies to the gaussian likelihood"):
        av.build_model("vae", sigma_radius=1.0)
    with pytest.raises(AffineVAEError, match="sigma_radius"):
        av.build_model("vae", sigma_radius=-1.0, likelihood="gaussian")


def test_pixels_outside_the_bernoulli_support_are_refused():
    m = av.build_model("vae", latent_dim=2, hidden=[16], channels=[4, 8], seed=0)
    x = torch.as_tensor(av.data.rotated_mnist("train", n=4).images)
    assert torch.isfinite(m.elbo(x)).all()
    with pytest.raises(AffineVAEError, match=r"^images: pixel values span \[0, 25\d\], but the bernoulli likelihood"):
        m.elbo((x * 255).to(torch.uint8))  # uint8 pixels 0..255: a meaningless ELBO before
    with pytest.raises(AffineVAEError, match=r"^training images: pixel values span"):
        av.fit(m, x * 2, av.TrainConfig(epochs=1, progress=False))
    with pytest.raises(AffineVAEError, match=r"^validation images: pixel values span"):
        av.fit(m, x, av.TrainConfig(epochs=1, progress=False), val=x - 1)
    g = av.build_model("vae", latent_dim=2, hidden=[16], channels=[4, 8], likelihood="gaussian", sigma=0.5)
    assert torch.isfinite(g.elbo(x * 255)).all()  # any real value under a Gaussian


def test_build_model_seed_fixes_the_initial_weights_without_touching_the_global_rng():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a = av.build_model("vae", latent_dim=2, hidden=[16], channels=[4, 8], seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    b = av.build_model("vae", latent_dim=2, hidden=[16], channels=[4, 8], seed=3)
    c = av.build_model("vae", latent_dim=2, hidden=[16], channels=[4, 8], seed=4)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())
    with pytest.raises(AffineVAEError, match="seed must be an integer >= 0"):
        av.build_model("vae", seed=-1)


@pytest.mark.parametrize("pose, msg", [
    ({"angle": float("nan")}, "angle must be finite"),
    ({"angle": torch.zeros(5)}, r"angle must have shape \(\) or \(3,\) for 3 latents, got \(5,\)"),
    ({"shift": torch.zeros(3)}, r"shift must have shape .* got \(3,\)"),
    ({"scale": 0.0}, "scale must be finite and > 0"),
    ({"angle": "a"}, "angle must be numbers"),
])
def test_decode_checks_the_pose_it_is_given(pose, msg):
    m = av.build_model("rvae", latent_dim=2, hidden=[16], invariances=("rotation", "translation", "scale"), seed=0)
    z = torch.zeros(3, 2)
    with pytest.raises(AffineVAEError, match=f"^decode: {msg}"):
        m.decode(z, **pose)
    assert m.decode(z, angle=0.5, shift=torch.zeros(2), scale=torch.ones(3)).shape == (3, 1, 28, 28)


def test_decode_checks_the_class_it_is_given():
    m = av.build_model("cvae", num_classes=10, latent_dim=2, hidden=[16], channels=[4, 8], seed=0)
    z = torch.zeros(3, 2)
    for y, msg in ((2.7, "the class must be integers, got 2.7"), ("a", "the class must be integers"),
                   (torch.tensor([1, 2]), "2 classes for 3 latents"), (12, r"class must lie in \[0, 9\]")):
        with pytest.raises(AffineVAEError, match=msg):
            m.decode(z, y)
    assert torch.equal(m.decode(z, 3), m.decode(z, torch.tensor([3.0, 3.0, 3.0])))


def test_public_methods_refuse_bad_arguments_in_one_line(tmp_path):
    """sample, elbo, decode, build_model, fit and loss_vs_rotation say what is wrong in one line
    instead of a torch/difflib/OS traceback, or silently wrong results (a non-positive sample count,
    NaN latents, degrees for an angle, a pose given by position)."""
    from affinevae import analysis as A

    m = av.build_model("rvae", image_shape=[1, 12, 12], latent_dim=2, invariances=("rotation",), hidden=[8], seed=0)
    x, z = torch.rand(3, 1, 12, 12), torch.zeros(2, 2)
    for call, match in [
        (lambda: m.sample(-1), r"^sample: n must be an integer >= 1, got -1$"),
        (lambda: m.sample(2.5), r"^sample: n must be an integer >= 1, got 2\.5$"),
        (lambda: m.sample(2, generator=3), r"^sample: generator must be a torch\.Generator or None, got int$"),
        (lambda: m.elbo(x, n_samples=0), r"^elbo: n_samples must be an integer >= 1, got 0$"),
        (lambda: m.decode(z, None, 0.5), r"^decode: pose must be a Pose .* keyword arguments: decode\(z, angle=\.\.\.\)\)$"),
        (lambda: m.decode(z, angle=90.0), r"^decode: an angle of 90 is more than a full turn in radians"),
        (lambda: m.decode(torch.full((2, 2), float("nan"))), r"^decode: 2 of 2 latent rows hold NaN or infinite values$"),
        (lambda: av.build_model("vae", hidden=16), r"^hidden takes a list of values, e\.g\. hidden=\(16,\), got the number 16$"),
        (lambda: av.build_model(None), r"^unknown model 'None'; choose from: "),
        (lambda: A.loss_vs_rotation(m, x), r"^loss_vs_rotation: models must be a non-empty dict of name -> model"),
    ]:
        with pytest.raises(AffineVAEError, match=match):
            call()
    assert m.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 12, 12)
    assert m.decode(z, angle=-2 * math.pi).shape == (2, 1, 12, 12)        # one full turn is still an angle
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(AffineVAEError, match="notes.txt: a file, not a run directory"):
        av.fit(m, x, av.TrainConfig(epochs=1, progress=False, val_split=0.0), out=tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["relu", "selu", "elu"])
def test_every_activation_builds_and_runs(name):
    """The AE-to-VAE notes' conv AE uses SELU (an audit of the articles: `--activation selu` was refused)."""
    from affinevae.nn.layers import ACTIVATIONS

    model = av.build_model("ae", image_shape=(1, 12, 12), latent_dim=2, hidden=(8,), channels=(4, 8), activation=name)
    assert any(isinstance(m, ACTIVATIONS[name]) for m in model.modules())
    out = model(torch.rand(3, 1, 12, 12))
    assert torch.isfinite(out.loss)
    with pytest.raises(AffineVAEError, match=r"activation.*selu"):
        av.build_model("ae", image_shape=(1, 12, 12), activation="swish")


def test_the_noise_injected_ae_decodes_noisy_codes_in_training_and_spreads_them():
    """The notes' noise-injected AE (``latent_noise``): in a training weight step the decoder sees each code
    plus N(0, sigma^2) noise, never in evaluation; trained so, the encoder spreads its codes apart (the notes'
    argument for the VAE's KL): on 1 000 digits their spread is over twice the plain AE's."""
    torch.manual_seed(0)
    m = av.build_model("ae", latent_dim=4, latent_noise=0.5, seed=0)
    post = m.infer(torch.rand(256, 1, 28, 28))
    noisy, _ = m.train().draw(post)
    assert 0.45 < float((noisy - post.z_mean).std()) < 0.55
    assert torch.equal(m.eval().draw(post)[0], post.z_mean) and torch.equal(m.train().draw(post, False)[0], post.z_mean)
    with torch.no_grad():  # a validation pass in train mode has no gradient: no noise either
        assert torch.equal(m.draw(post)[0], post.z_mean)
    with pytest.raises(av.AffineVAEError, match="latent_noise must be a finite number >= 0"):
        av.build_model("ae", latent_noise=-0.1)
    digits = av.data.load_mnist("train", n=1000)
    spread = []
    for noise in (0.0, 1.0):
        ae = av.build_model("ae", latent_dim=4, channels=[8, 16], hidden=[64], latent_noise=noise, seed=0)
        av.fit(ae, digits, av.TrainConfig(epochs=5, batch_size=64, seed=0, progress=False, checkpoint=False,
                                          val_split=0.0))
        spread.append(float(ae.encode(torch.as_tensor(digits.images[:300])).z_mean.std(0).mean()))
    assert spread[1] > 2 * spread[0], spread
