"""Joint (jvae, jrvae) and semi-supervised (ssvae, ssrvae, ssregvae, ssregrvae) invariant VAEs."""

import argparse
import math
import warnings
import re

import numpy as np
import pytest
import torch

import affinevae as av
from affinevae.cli import main
from affinevae.errors import AffineVAEError
from affinevae.mapping import clustering_accuracy
from affinevae.models.joint import CLASS_EXPECTATIONS, class_kl
from affinevae.data.files import read_targets

SMALL = dict(latent_dim=2, hidden=(16, 16), encoder_hidden=(64, 32), classifier_hidden=(64,))
TINY_CLI = ["--latent-dim", "2", "--hidden", "16,16", "--set", "encoder_hidden=[32]", "--no-progress", "--batch-size", "32",
            "--epochs", "1"]
CLASSIFIER = ["--set", "classifier_hidden=[32]", "--set", "classifier_net=mlp"]


def _fit(model, data, epochs, seed=0, batch_size=25, lr=3e-3):
    cfg = av.TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, val_split=0.0, progress=False, checkpoint=False,
                         seed=seed)
    return av.fit(model, data, cfg)


# ---------------------------------------------------------------------------------------- joint model
def test_families_registered_and_configs_validated():
    for name in ("jvae", "jrvae", "ssvae", "ssrvae", "ssregvae", "ssregrvae"):
        assert name in av.registry.MODELS
    assert av.build_model("jvae").config.invariances == ()
    assert set(CLASS_EXPECTATIONS.names()) == {"enumerate", "gumbel", "straight"}
    for bad, msg in [(dict(num_classes=1), "num_classes (--classes) must be an integer >= 2"),
                     (dict(discrete="sample"), "discrete must be one of"),
                     (dict(class_balance=-1.0), "class_balance must be"),
                     (dict(classifier="cnn"), "classifier must be one of")]:
        with pytest.raises(AffineVAEError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            av.build_model("jrvae", **bad)
    with pytest.raises(AffineVAEError, match="target_dim"):
        av.build_model("ssregrvae", target_dim=0)
    # rotation_mode 'full': the class models with a canonical classifier take the group-equivariant
    # encoder as the rVAE does; where the encoder's flat output carries class logits or targets it
    # stays the MLP, and the equivariant one is refused in one line
    for family in ("jrvae", "ssrvae"):
        config = av.build_model(family, rotation_mode="full").config
        assert (config.encoder, config.decoder, config.mixture) == ("equivariant", "warp", True)
    # the classifier's k-means start takes more steps over the full circle; a given value wins
    assert av.build_model("jrvae").config.class_init_steps == 200
    assert av.build_model("jrvae", rotation_mode="full").config.class_init_steps == 3000
    assert av.build_model("jrvae", rotation_mode="full", class_init_steps=50).config.class_init_steps == 50
    assert av.build_model("jrvae", rotation_mode="full", classifier="shared").config.encoder == "mlp"
    assert av.build_model("ssregrvae", rotation_mode="full").config.encoder == "mlp"
    for options in (dict(family="jrvae", classifier="shared"), dict(family="ssregrvae")):
        with pytest.raises(AffineVAEError, match="has no flat output for the class logits or targets"):
            av.build_model(options.pop("family"), rotation_mode="full", encoder="equivariant", **options)


@pytest.mark.parametrize("family", ["jvae", "jrvae"])
def test_evaluation_elbo_is_the_exact_expectation_over_classes(family):
    torch.manual_seed(0)
    model = av.build_model(family, num_classes=3, **SMALL).eval()
    x = torch.as_tensor(av.data.rotated_mnist("test", n=5, seed=1).images)
    with torch.no_grad():
        out = model(x, sample=False)
        enc = model.encode(x)
        q = enc.parts["class_prob"]
        assert q.shape == (5, 3) and torch.allclose(q.sum(1), torch.ones(5))
        loglik = torch.stack([model.likelihood.log_prob(model.decode_params(enc.z_mean, k, pose=enc.pose), x)
                              for k in range(3)], 1)
        kl_class = (q * torch.log(q * 3)).sum(1)
        kl_cont = av.models.RVAE.kl(model, enc)
        expected = (q * loglik).sum(1) - kl_cont - kl_class
    assert torch.allclose(out.elbo, expected, atol=1e-3, rtol=1e-5)
    assert torch.allclose(class_kl(q), kl_class, atol=1e-5)


@pytest.mark.parametrize("discrete,rows", [("enumerate", 4 * 3), ("gumbel", 4), ("straight", 4)])
def test_training_decodes_every_class_in_one_batched_pass(discrete, rows):
    torch.manual_seed(0)
    model = av.build_model("jrvae", num_classes=3, discrete=discrete, invariances=("rotation",), **SMALL).train()
    calls = []
    model.decoder.pixel_mlp.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    out = model(torch.rand(4, 1, 28, 28))
    assert calls == [rows * 28 * 28]  # one decoder pass: N*K rows (enumerate) or N rows (gumbel)
    assert set(out.terms) == {"equivariance", "class_consistency", "discrete_kl_correction", "class_balance"}
    # not a KL: (discrete_beta 0 - beta 1) times the class KL (>= 0), i.e. <= 0 with the defaults
    assert float(out.terms["discrete_kl_correction"].detach()) <= 0
    assert torch.isclose(out.loss, out.recon + out.kl + sum(out.terms.values()))
    out.loss.backward()
    assert model.classifier.net[0].weight.grad.abs().sum() > 0  # the class posterior is trained through the decoder


def test_straight_through_class_decodes_one_hot_codes_with_relaxed_gradients():
    torch.manual_seed(0)
    model = av.build_model("jrvae", num_classes=3, discrete="straight", **SMALL).train()
    post = model.infer(torch.rand(6, 1, 28, 28))
    codes, weights = CLASS_EXPECTATIONS.get("straight")(model, post)
    assert codes.shape == (6, 1, 3) and torch.equal(weights, torch.ones(6, 1))
    code = codes[:, 0]
    assert torch.allclose(code.detach(), torch.nn.functional.one_hot(code.argmax(1), 3).float(), atol=1e-6)  # one-hot
    params = model.decode_rows(post.z_mean, codes, post.pose)
    assert params.shape == (6, 1, 1, 28, 28)
    params.sum().backward()
    assert model.classifier.net[0].weight.grad.abs().sum() > 0  # the gradient of the relaxed sample


def test_content_warmup_ramps_the_content_latents_the_decoder_sees_in_training():
    torch.manual_seed(0)
    model = av.build_model("jrvae", num_classes=3, invariances=("rotation",), content_warmup=100, **SMALL)
    assert [model.content_scale(s) for s in (0, 25, 100, 500)] == [0.0, 0.25, 1.0, 1.0]
    assert av.build_model("jrvae", **SMALL).content_scale(0) == 1.0  # off by default
    seen, generate = [], model.generate
    model.generate = lambda z, y=None: seen.append(z.detach()) or generate(z, y)
    x = torch.as_tensor(av.data.rotated_mnist("test", n=4, seed=1).images)
    model.train()
    model(x, sample=False)  # step 0: the decoder sees z = 0
    assert torch.equal(seen[-1], torch.zeros_like(seen[-1])) and int(model.train_steps) == 1
    model.train_steps.fill_(50)
    model(x, sample=False)
    z_half = seen[-1]
    model.eval()
    with torch.no_grad():
        model(x, sample=False)  # evaluation: z as inferred (every class, K rows per image)
        z_mean = model.encode(x).z_mean
    assert torch.allclose(seen[-1][::3], z_mean, atol=1e-6)
    assert torch.allclose(z_half, 0.5 * z_mean, atol=1e-6) and z_half.abs().sum() > 0  # step 50 of 100: half
    with pytest.raises(AffineVAEError, match="content_warmup must be an integer >= 0"):
        av.build_model("jrvae", content_warmup=-1)


def test_joint_model_recovers_two_digit_classes_without_labels():
    train = av.data.rotated_mnist("train", n=200, digits=(0, 1), seed=0)
    torch.manual_seed(0)
    model = av.build_model("jvae", num_classes=2, **SMALL)
    _fit(model, train, epochs=6, batch_size=20)
    test = av.data.rotated_mnist("test", n=200, digits=(0, 1), seed=1)
    codes = av.evaluation.encode_dataset(model, test, elbo=False)
    assert codes["class_prob"].shape == (200, 2) and codes["class"].dtype == np.int64
    assert clustering_accuracy(codes["class"], test.labels) >= 0.85  # chance: about 0.5


def test_kmeans_start_fits_the_classifier_to_clusters_of_the_canonical_views():
    train = av.data.rotated_mnist("train", n=300, digits=(0, 1, 7), max_angle=math.radians(30), seed=0)
    x = torch.as_tensor(train.images)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(av.build_model("jrvae", num_classes=3, invariances=("rotation",), class_init_steps=100, **SMALL))
    rng = torch.get_rng_state()
    clusters = models[0].kmeans_start(x, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)          # torch's global RNG is left alone
    assert clustering_accuracy(clusters.numpy(), train.labels) > 0.9    # k-means finds 0 / 1 / 7
    with torch.no_grad():
        models[0].eval()
        predicted = models[0].encode(x).parts["class"].numpy()
    assert (predicted == clusters.numpy()).mean() > 0.9     # the classifier learnt the clusters
    assert torch.equal(models[1].kmeans_start(x, seed=3), clusters)   # deterministic by seed
    for a, b in zip(models[0].classifier.parameters(), models[1].classifier.parameters()):
        assert torch.equal(a, b)
    assert av.build_model("jrvae", **SMALL).config.class_init == "kmeans"
    assert av.build_model("jrvae", classifier="shared", **SMALL).config.class_init == "none"
    assert av.build_model("ssrvae", **SMALL).config.class_init == "none"
    with pytest.raises(AffineVAEError, match="class_init 'kmeans' fits the 'canonical' classifier"):
        av.build_model("jrvae", classifier="shared", class_init="kmeans")
    for bad in ({"class_init": "gmm"}, {"class_init_steps": 0}, {"class_init_epochs": -1}, {"class_init_components": 1.5}):
        with pytest.raises(AffineVAEError, match=next(iter(bad))):
            av.build_model("jrvae", **bad)


def test_the_trainer_runs_the_kmeans_start_once_after_the_warm_epochs_and_resumes_exactly(tmp_path, monkeypatch):
    from affinevae.models.joint import JRVAE

    data = av.data.rotated_mnist("train", n=60, digits=(0, 1), seed=0)
    calls = []
    original = JRVAE.kmeans_start

    def spy(self, x, seed=0, **kw):
        calls.append((int(self.train_steps), len(x), seed))
        return original(self, x, seed, **kw)
    monkeypatch.setattr(JRVAE, "kmeans_start", spy)

    def make(**kw):
        torch.manual_seed(0)
        return av.build_model("jrvae", num_classes=2, invariances=("rotation",), class_init_steps=20, **SMALL, **kw)

    cfg = av.TrainConfig(epochs=3, batch_size=20, lr=3e-3, val_split=0.0, progress=False, seed=5)
    fitted = av.fit(make(), data, cfg, out=tmp_path / "full")
    full = fitted.model
    assert calls == [(6, 60, 5)]                   # before epoch 3: 6 steps taken, the run's seed
    assert [r.get("class_kmeans_start") for r in fitted.history] == [None, None, 1.0]  # the epoch record says so
    assert "class_kmeans_aligned" not in fitted.history[2]  # plain k-means within the prior's turns
    one = av.fit(make(), data, cfg.replace(epochs=1), out=tmp_path / "one").model
    none = av.fit(make(class_init="none"), data, cfg.replace(epochs=1), out=tmp_path / "none").model
    assert len(calls) == 1 and all(torch.equal(a, b) for a, b in zip(one.parameters(), none.parameters()))
    av.fit(full, data, cfg.replace(checkpoint=False))     # training a trained model further: no new start
    assert len(calls) == 1
    with pytest.warns(UserWarning, match="1 training image for 2 classes: no k-means start"):
        av.fit(make(), data.images[:1], cfg.replace(checkpoint=False, batch_size=1))   # fewer images than classes
    assert len(calls) == 1

    def stop(rec):
        if rec["epoch"] >= 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        av.fit(make(), data, cfg, out=tmp_path / "part", callbacks=[stop])
    resumed = av.fit(make(), data, cfg, out=tmp_path / "part", resume=True).model
    assert len(calls) == 2 and calls[1] == (6, 60, 5)
    reference = av.load(tmp_path / "full")
    for k, v in reference.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_decode_and_sample_in_a_class():
    torch.manual_seed(0)
    model = av.build_model("jrvae", num_classes=3, **SMALL).eval()
    z = torch.zeros(2, 2)
    a, b = model.decode(z, 0), model.decode(z, torch.tensor([1, 2]))
    assert a.shape == b.shape == (2, 1, 28, 28)
    mixture = model.decode(z)  # the mean image over the classes
    assert torch.allclose(mixture, torch.stack([model.decode(z, k) for k in range(3)]).mean(0), atol=1e-6)
    assert model.sample(5, generator=torch.Generator().manual_seed(0)).shape == (5, 1, 28, 28)
    with pytest.raises(AffineVAEError, match=r"class must lie in \[0, 2\]"):
        model.decode(z, 3)
    # a class is an integer: fractions were truncated (2.9 -> 2, -0.5 -> 0), bools taken as 0/1,
    # strings crashed; class weights must be finite and >= 0 (NaN weights gave NaN images)
    for bad, match in [(2.9, "got 2.9"), (-0.5, "got -0.5"), (True, "got true/false"), ("2", "got '2'"),
                       (float("nan"), "got nan"), (torch.tensor([True, False]), "got true/false")]:
        with pytest.raises(AffineVAEError, match=r"^model 'jrvae': the class must be integers, " + re.escape(match)):
            model.decode(z, bad)
    with pytest.raises(AffineVAEError, match="the class must be integers, got 2.5"):
        model.sample(3, 2.5)
    for weights in (torch.full((2, 3), float("nan")), -torch.ones(2, 3)):
        with pytest.raises(AffineVAEError, match="class weights must be finite and >= 0"):
            model.decode(z, weights)
    assert torch.equal(model.decode(z, np.int64(1)), model.decode(z, 1))
    # inside an AVAE the same: no class is the mean over the classes, a sample draws its class
    wrapped = av.AVAE(model).eval()
    assert torch.allclose(wrapped.decode(z), mixture, atol=1e-6)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.allclose(wrapped.sample(4, generator=gen()), model.sample(4, generator=gen()), atol=1e-6)
    # and its pose search scores the model's own ELBO, the sum over the classes ("generates in a class:
    # give y" before): at the identity pose exactly the inner model's
    x = torch.as_tensor(av.data.rotated_mnist("test", n=4, seed=1).images)
    torch.testing.assert_close(wrapped.forward_at(x, None, torch.zeros(4, 1), sample=False).elbo,
                               model(x, sample=False).elbo)
    found = wrapped.align(x)
    assert found.params.shape == (4, 1) and torch.isfinite(found.params).all()
    assert torch.allclose(model.decode(z, torch.tensor([[0.0, 1.0, 0.0]] * 2)), model.decode(z, 1))


def test_joint_model_refuses_given_labels_and_the_semi_supervised_one_takes_them():
    torch.manual_seed(0)
    x, y = torch.as_tensor(av.data.rotated_mnist("test", n=4, seed=1).images), torch.tensor([0, 1, 2, 0])
    joint = av.build_model("jrvae", num_classes=3, **SMALL).eval()
    assert not joint.takes_labels
    for where, call in [("encode", lambda: joint.encode(x, y)), ("elbo", lambda: joint.elbo(x, y)),
                        ("reconstruct", lambda: joint.reconstruct(x, y))]:
        with pytest.raises(AffineVAEError, match=rf"^{where}: model 'jrvae' takes no class labels"):
            call()
    assert joint.encode(x).parts["class_prob"].shape == (4, 3)
    assert joint.decode(torch.zeros(4, 2), y).shape == (4, 1, 28, 28)  # decoding takes the class to render
    semi = av.build_model("ssrvae", num_classes=3, **SMALL).eval()
    assert semi.takes_labels
    g = torch.Generator
    with torch.no_grad():  # known labels change the ELBO (each image decoded in its class)
        assert not torch.allclose(semi.elbo(x, y, generator=g().manual_seed(0)), semi.elbo(x, generator=g().manual_seed(0)))
        assert semi.encode(x, y).z_mean.shape == (4, 2)
    # the trainer passes the data's labels to a joint model, which ignores them
    data = av.data.ImageSet(x.numpy(), labels=y.numpy())
    _fit(joint, data, epochs=1, batch_size=2)


def test_classifier_jitter_moves_the_canonical_view_in_one_warp_in_training_only():
    from affinevae.nn.affine import Pose, canonicalise

    x = torch.as_tensor(av.data.rotated_mnist("test", n=6, seed=1).images)
    model = av.build_model("jrvae", num_classes=3, invariances=("rotation",), jitter_angle=0.3, jitter_shift=0.05,
                           **SMALL)
    pose, jit = Pose(angle=torch.linspace(-1, 1, 6)), Pose(angle=torch.full((6,), 0.4))
    # one warp: canonicalised at the pose, then turned by the jitter = canonicalised at pose - jitter
    assert torch.allclose(model.classifier_view(x, pose, jit), canonicalise(x, Pose(angle=pose.angle - 0.4)),
                          atol=1e-5)
    shifted = model.classifier_view(x, None, Pose(shift=torch.tensor([[0.5, 0.0]]).expand(6, 2)))
    assert torch.allclose(shifted[..., 7:], x[..., :-7], atol=1e-5)  # half a width = 7 pixels to the right
    model.train()
    torch.manual_seed(3)
    a = model.classifier_view(x, pose)
    torch.manual_seed(3)
    assert torch.equal(a, model.classifier_view(x, pose))  # the jitter is drawn from torch's seeded RNG
    assert not torch.allclose(a, canonicalise(x, pose), atol=1e-3)
    torch.manual_seed(0)
    j = model.jitter(20000, x.device)
    assert j.angle.std().item() == pytest.approx(0.3, rel=0.03) and j.shift.std().item() == pytest.approx(0.05, rel=0.03)
    model.eval()
    assert model.jitter(6, x.device) is None
    assert torch.equal(model.classifier_view(x, pose), canonicalise(x, pose))  # evaluation never jitters
    with pytest.raises(AffineVAEError, match="jitter_angle must be"):
        av.build_model("jrvae", jitter_angle=-0.1)


# ---------------------------------------------------------------------------------------- semi-supervised
def test_labelled_images_are_decoded_in_their_class():
    torch.manual_seed(0)
    model = av.build_model("ssrvae", num_classes=3, **SMALL).eval()
    x = torch.as_tensor(av.data.rotated_mnist("test", n=4, seed=1).images)
    with torch.no_grad():
        enc = model.encode(x)
        known = model(x, torch.tensor([2, 2, 2, 2]), sample=False).elbo
        loglik = model.likelihood.log_prob(model.decode_params(enc.z_mean, 2, pose=enc.pose), x)
        assert torch.allclose(known, loglik - av.models.RVAE.kl(model, enc) - math.log(3), atol=1e-3)
        unknown = model(x, torch.tensor([-1, -1, -1, -1]), sample=False).elbo
        assert torch.allclose(unknown, model(x, sample=False).elbo)
    with pytest.raises(AffineVAEError, match=r"labels must lie in \[-1, 2\]"):
        model(x, torch.tensor([0, 1, 3, -1]))
    with pytest.raises(AffineVAEError, match="3 labels for 4 images"):
        model(x, torch.tensor([0, 1, 2]))


def test_labelled_memory_remembers_each_labelled_image_once_and_is_saved(tmp_path):
    torch.manual_seed(0)
    model = av.build_model("ssrvae", num_classes=3, labelled_memory=3, labelled_batch=5, **SMALL).train()
    x = torch.rand(6, 1, 28, 28)
    y = torch.tensor([0, -1, 1, -1, 2, 1])
    out = model(x, y, index=torch.arange(10, 16))
    assert "classifier" in out.terms
    assert model.memory_index.tolist() == [10, 12, 14] and model.memory_labels.tolist() == [0, 1, 2]
    model(x, y, index=torch.arange(10, 16))  # seen again: nothing new, and the memory is full
    assert model.memory_index.tolist() == [10, 12, 14]
    assert torch.equal(model.memory_images[1], x[2])
    xr, yr = model.replay(torch.device("cpu"))
    assert xr.shape == (5, 1, 28, 28) and set(yr.tolist()) <= {0, 1, 2}
    model.save(tmp_path / "m")
    assert torch.equal(av.load(tmp_path / "m").memory_index, model.memory_index)


def test_semi_supervised_classifier_learns_from_a_few_labels():
    digits = (0, 1, 7)
    train = av.data.rotated_mnist("train", n=240, digits=digits, seed=0)
    y = np.array([digits.index(v) for v in train.labels])
    y[30:] = -1  # 30 labelled images, 210 unlabelled
    test = av.data.rotated_mnist("test", n=150, digits=digits, seed=1)
    truth = np.array([digits.index(v) for v in test.labels])
    val_y = truth.copy()
    torch.manual_seed(0)
    model = av.build_model("ssrvae", num_classes=3, invariances=("rotation",), classifier_net="mlp", **SMALL)
    res = av.fit(model, (train.images, y), av.TrainConfig(epochs=4, batch_size=24, lr=3e-3, progress=False,
                                                          checkpoint=False, seed=0), val=(test.images, val_y))
    acc = float((av.evaluation.encode_dataset(model, test.images, elbo=False)["class"] == truth).mean())
    assert acc >= 0.7  # chance: 1/3
    assert res.history[-1]["val_accuracy"] == pytest.approx(acc, abs=1e-6)
    assert res.history[-1]["val_labelled"] == 150


def test_regression_form_learns_targets_from_half_the_images(tmp_path):
    train = av.data.load_mnist("train", n=200, digits=(0, 1))
    t = np.where(train.labels == 1, 1.0, -1.0).astype(np.float32)
    t_known = t.copy()
    t_known[::2] = np.nan
    torch.manual_seed(0)
    model = av.build_model("ssregvae", **{k: v for k, v in SMALL.items() if k != "classifier_hidden"})
    _fit(model, (train.images, t_known), epochs=3)
    enc = av.evaluation.encode_dataset(model, train.images[::2], elbo=False)
    assert enc["target_mean"].shape == (100, 1) and np.all(enc["target_std"] > 0)
    assert np.corrcoef(enc["target_mean"][:, 0], t[::2])[0, 1] > 0.8
    model.eval()
    with torch.no_grad():  # a known target costs -log N(t; 0, 1) instead of the regressor's KL
        x = torch.as_tensor(train.images[:2])
        post = model.infer(x)
        post_k, _ = model.infer_for_loss(x, torch.tensor([[0.5], [float("nan")]]))
        kl = model.kl(post_k) - av.models.RVAE.kl(model, post_k)
        m, s = post.parts["target_mean"][1, 0], post.parts["target_std"][1, 0]
        assert torch.isclose(kl[0], torch.tensor(0.125 + 0.5 * math.log(2 * math.pi)))
        assert torch.isclose(kl[1], 0.5 * (m**2 + s**2 - 1) - torch.log(s))
    (tmp_path / "t.csv").write_text("target\n0.5\n\n-1\n")
    assert np.array_equal(np.isnan(read_targets(str(tmp_path / "t.csv"), 3)), [False, True, False])
    with pytest.raises(AffineVAEError, match="3 targets for 4 images"):
        read_targets(str(tmp_path / "t.csv"), 4)


def test_regression_targets_in_their_own_units(tmp_path, capsys):
    """Targets far from N(0, 1) (the README's: mean pixel values, 0.13 +- 0.04) left the regressor unused
    (correlation 0.03 on the unlabelled images): the prior is now N(target_center, target_scale^2), which train
    and the Estimator set from the known targets (one line), and a hand-built model is warned of."""
    from affinevae.models.semisupervised import target_prior_options

    train = av.data.load_mnist("train", n=200, digits=(0, 1))
    t = np.where(train.labels == 1, 1.0, -1.0).astype(np.float32) * 0.05 + 0.2  # 0.15 / 0.25
    known = t.copy()
    known[::2] = np.nan
    opts = target_prior_options(known)
    assert opts["target_center"][0] == pytest.approx(float(np.nanmean(known)), rel=1e-3)
    assert opts["target_scale"][0] == pytest.approx(float(np.nanstd(known)), rel=1e-3)
    base = {k: v for k, v in SMALL.items() if k != "classifier_hidden"}
    with pytest.warns(UserWarning, match=r"the known targets \(mean 0.2.*lie far from the model's prior N\(0, 1\^2\)"):
        _fit(av.build_model("ssregvae", **base), (train.images, known), epochs=1)
    torch.manual_seed(0)
    model = av.build_model("ssregvae", **base, **opts)
    _fit(model, (train.images, known), epochs=3)
    enc = av.evaluation.encode_dataset(model, train.images[::2], elbo=False)
    assert np.corrcoef(enc["target_mean"][:, 0], t[::2])[0, 1] > 0.8
    assert abs(float(enc["target_mean"].mean()) - 0.2) < 0.03  # in the targets' units
    model.eval()
    with torch.no_grad():  # a known target costs -log N(t; c, s^2); an unknown one KL(q || N(c, s^2))
        c, sd = opts["target_center"][0], opts["target_scale"][0]
        x = torch.as_tensor(train.images[:2])
        post_k, _ = model.infer_for_loss(x, torch.tensor([[0.3], [float("nan")]]))
        kl = model.kl(post_k) - av.models.RVAE.kl(model, post_k)
        m, s = post_k.parts["target_mean"][1, 0], post_k.parts["target_std"][1, 0]
        expected = 0.5 * ((0.3 - c) / sd) ** 2 + math.log(sd) + 0.5 * math.log(2 * math.pi)
        assert kl[0].item() == pytest.approx(expected, rel=1e-5)
        assert kl[1].item() == pytest.approx((math.log(sd / s) + (s**2 + (m - c) ** 2) / (2 * sd**2) - 0.5).item(), rel=1e-4)
    with pytest.raises(AffineVAEError, match="target_scale must be > 0"):
        av.build_model("ssregvae", **base, target_scale=(0.0,))
    # the command line sets the prior from the known targets and says so
    np.save(tmp_path / "d.npy", train.images[:64])
    np.save(tmp_path / "t.npy", known[:64])
    capsys.readouterr()
    assert main(["train", "--model", "ssregvae", "--data", str(tmp_path / "d.npy"), "--targets", str(tmp_path / "t.npy"),
                 "--latent-dim", "2", "--encoder", "mlp", "--hidden", "16", "--epochs", "1", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 0
    assert "the targets' prior N(mean, sd^2) from the known ones: (0.2" in capsys.readouterr().out
    cfg = av.load(tmp_path / "run").config
    assert cfg.target_center == target_prior_options(known[:64])["target_center"]
    # a run built with another prior (as every run saved before the prior was chosen: N(0, 1)) resumes with its own
    common = ["train", "--model", "ssregvae", "--data", str(tmp_path / "d.npy"), "--targets", str(tmp_path / "t.npy"),
              "--latent-dim", "2", "--encoder", "mlp", "--hidden", "16", "--no-progress", "--out", str(tmp_path / "old")]
    assert main([*common, "--epochs", "1", "--set", "target_center=0", "--set", "target_scale=1"]) == 0
    capsys.readouterr()
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    said = capsys.readouterr().out
    assert "with its model options: target_center=0 target_scale=1" in said and "the targets' prior" not in said
    assert av.load(tmp_path / "old").config.target_center == (0.0,)
    # constant known targets: the prior's scale stays 1 and fit does not suggest a scale of 0
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _fit(av.build_model("ssregvae", **base, **target_prior_options(np.where(np.isnan(known), np.nan, 7.0))),
             (train.images, np.where(np.isnan(known), np.nan, 7.0)), epochs=1)
    assert not [w for w in seen if "lie far from the model's prior" in str(w.message)]


# ---------------------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    d = av.data.rotated_mnist("test", n=64, seed=1)
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, images=d.images, labels=d.labels)
    labels = d.labels.copy()
    labels[16:] = -1
    np.save(path.parent / "partial.npy", labels)
    np.savetxt(path.parent / "short.txt", labels[:10], fmt="%d")
    np.save(path.parent / "over.npy", np.where(labels == 9, 12, labels))
    np.save(path.parent / "below.npy", np.where(labels == 9, -2, labels))
    np.save(path.parent / "targets.npy", np.where(np.arange(64) < 32, d.angle, np.nan).astype(np.float32))
    np.save(path.parent / "targets_short.npy", d.angle[:10].astype(np.float32))
    np.save(path.parent / "targets_inf.npy", np.where(np.arange(64) == 5, np.inf, d.angle).astype(np.float32))
    return path


def test_cli_trains_and_encodes_joint_and_semi_supervised_models(digits_npz, tmp_path):
    data = str(digits_npz)
    for model, extra in [("jrvae", ["--classes", "4", "--invariances", "rotation", *CLASSIFIER]),
                         ("ssrvae", ["--labels", str(digits_npz.parent / "partial.npy"), "--invariances", "rotation",
                                     *CLASSIFIER]),
                         ("ssregvae", ["--targets", str(digits_npz.parent / "targets.npy")])]:
        out = tmp_path / model
        assert main(["train", "--model", model, "--data", data, *extra, "--out", str(out), *TINY_CLI]) == 0
        assert main(["encode", str(out), "--data", data, "--out", str(tmp_path / f"{model}.npz")]) == 0
        with np.load(tmp_path / f"{model}.npz") as f:
            if model == "ssregvae":
                assert f["target_mean"].shape == (64, 1)
            else:
                k = 4 if model == "jrvae" else 10
                assert f["class_prob"].shape == (64, k) and f["class"].shape == (64,)
                assert np.array_equal(f["class"], f["class_prob"].argmax(1))
    # the report of the semi-supervised run on its own file says its accuracy is on the labels it was trained with,
    # also when --fill-nan makes the command read the images itself
    for extra in ([], ["--fill-nan"]):
        out = tmp_path / f"ss{len(extra)}.html"
        assert main(["report", str(tmp_path / "ssrvae"), "--data", data, "--out", str(out), "--sweep-angles", "none",
                     "--quiet", *extra]) == 0
        assert "labelled it was trained with, not held out" in out.read_text()


@pytest.mark.parametrize("argv,msg", [
    (["--model", "ssrvae", "--labels", "over.npy", "--classes", "10"], "labels must lie in [-1, 9] for --classes 10"),
    (["--model", "ssrvae", "--labels", "below.npy"], "labels must be >= 0 (or -1 for unknown), got -2"),
    (["--model", "ssrvae", "--labels", "short.txt"], "10 labels for 64 images"),
    (["--model", "jrvae", "--classes", "1"], "--classes must be an integer >= 2, got 1"),
    (["--model", "ssrvae", "--labels", "partial.npy", "--classes", "1"], "--classes must be an integer >= 2, got 1"),
    (["--model", "cvae", "--labels", "partial.npy"], "labels of -1 (unknown) are only allowed for semi-supervised"),
    (["--model", "vae", "--classes", "3"], "--classes applies to jvae, jrvae, ssvae and ssrvae"),
    (["--model", "ssregrvae"], "give --targets"),
    (["--model", "ssregvae", "--targets", "targets_short.npy"], "10 targets for 64 images"),
    (["--model", "ssregvae", "--targets", "targets_inf.npy"], "targets_inf.npy: row 6 holds an infinite target (use NaN for unknown)"),
    (["--model", "jrvae", "--targets", "targets.npy"], "--targets applies to ssregvae and ssregrvae, not 'jrvae'"),
])
def test_cli_bad_labels_and_classes_are_one_line_errors(argv, msg, digits_npz, tmp_path, capsys):
    argv = [str(digits_npz.parent / a) if a.endswith((".npy", ".txt")) else a for a in argv]
    capsys.readouterr()
    assert main(["train", "--data", str(digits_npz), "--out", str(tmp_path / "x"), *argv, *TINY_CLI]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("affinevae: error:") and msg in err[0], err


def test_report_scatter_and_maps_colour_by_the_inferred_class(tmp_path):
    from affinevae import analysis as A
    from affinevae.encoding import ObjectEncoding
    from affinevae.mapping import write_maps

    torch.manual_seed(0)
    model = av.build_model("jrvae", num_classes=3, **SMALL).eval()
    codes = A.latent_codes(model, av.data.rotated_mnist("test", n=40, seed=1))
    assert codes.inferred_class.shape == (40,) and "inferred_class" in codes.available()
    fig = A.plot_latent_scatter(codes)
    assert any(ax.get_title().endswith("coloured by inferred class") for ax in fig.axes)
    n = 6
    enc = ObjectEncoding(z_mean=np.zeros((n, 2), np.float32), z_std=np.ones((n, 2), np.float32),
                         angle=np.zeros(n, np.float32), shift=np.zeros((n, 2), np.float32),
                         positions=np.full((n, 2), 8.0, np.float32), centers=np.full((n, 2), 8, np.int64),
                         frames=np.zeros(n, np.int64), window=8, image_shape=(16, 16),
                         model_class=np.array([0, 2, 2, 1, 0, 2]))
    res = write_maps(enc, tmp_path, image=np.zeros((16, 16), np.float32))
    assert res["counts"].tolist() == [2, 1, 3] and (tmp_path / "clusters.png").is_file()
    with np.load(tmp_path / "maps.npz") as f:
        assert f["cluster"].tolist() == [0, 2, 2, 1, 0, 2]


def test_cli_map_draws_the_classes_a_joint_model_infers(tmp_path, capsys):
    from affinevae.data.micrograph import synthetic_micrograph
    from affinevae.data.patches import cut_patches

    img, _ = synthetic_micrograph(size=(64, 64), spacing=8.0, lattice="square", noise=0.05, seed=0)
    np.save(tmp_path / "img.npy", img)
    cut_patches(img, 16, min_distance=3, threshold=0.3).save(tmp_path / "p.npz")
    torch.manual_seed(0)
    av.build_model("jrvae", image_shape=(1, 16, 16), num_classes=3, invariances=("rotation",), **SMALL).save(tmp_path / "run")
    capsys.readouterr()
    assert main(["map", str(tmp_path / "run"), "--image", str(tmp_path / "img.npy"), "--patches", str(tmp_path / "p.npz"),
                 "--out", str(tmp_path / "maps"), "--symmetry", "1"]) == 0
    assert "classes (inferred by the model):" in capsys.readouterr().out
    with np.load(tmp_path / "maps" / "maps.npz", allow_pickle=False) as f:
        assert np.array_equal(f["cluster"], f["class"]) and f["class"].dtype == np.int64
        assert f["class"].min() >= 0 and f["class"].max() < 3
    assert (tmp_path / "maps" / "clusters.png").stat().st_size > 0


def test_report_colours_by_and_scores_the_inferred_class(tmp_path):
    from affinevae.report import class_metrics, write_report

    torch.manual_seed(0)
    av.build_model("jrvae", num_classes=3, **SMALL).save(tmp_path / "run")
    data = av.data.rotated_mnist("test", n=30, digits=(0, 1, 7), seed=1)
    data = av.data.ImageSet(data.images, np.array([(0, 1, 7).index(v) for v in data.labels]), source="digits")
    res = write_report(tmp_path / "run", tmp_path / "r.html", data=data, n=30, sweep_rotations=())
    text = (tmp_path / "r.html").read_text()
    assert "Latent space" in res.sections and "coloured by the class the model infers" in text
    assert "cluster accuracy of the inferred class (Hungarian, 30 labelled)" in text
    assert "accuracy of the inferred class<" not in text  # a joint model's class indices are its own
    rows = class_metrics(np.array([1, 1, 0, 2]), 3, np.array([0, 0, 1, -1]), supervised=True)
    assert rows["inferred classes in use"] == "3 of 3"
    assert rows["cluster accuracy of the inferred class (Hungarian, 3 labelled)"] == 1.0
    assert rows["accuracy of the inferred class"] == 0.0
    rows = class_metrics(np.array([1, 1, 0, 2]), 3, np.array([0, 0, 1, -1]), supervised=True, trained_on=True)
    assert rows["cluster accuracy of the inferred class (Hungarian, 3 labelled it was trained with, not held out)"] == 1.0
    assert rows["accuracy of the inferred class (on the labels it was trained with)"] == 0.0


def test_cli_ssrvae_logs_the_held_out_labelled_accuracy(digits_npz, tmp_path):
    out = tmp_path / "ss"
    assert main(["train", "--model", "ssrvae", "--data", str(digits_npz), "--labels", str(digits_npz.parent / "partial.npy"),
                 "--val-data", str(digits_npz), *CLASSIFIER, "--out", str(out), *TINY_CLI]) == 0
    from affinevae.runs import Run

    last = Run.open(out).metrics[-1]
    assert last["val_labelled"] == 64 and 0.0 <= last["val_accuracy"] <= 1.0  # every validation image is labelled


def test_train_says_when_labels_leave_most_classes_empty(tmp_path, capsys):
    """One stray label 99 built a 100-class model silently; all-unknown labels without --classes
    said '--classes must be >= 2, got 0' though no --classes was given."""
    import warnings

    images = av.data.load_mnist("train", n=40).images
    np.save(tmp_path / "d.npy", images)
    stray = np.arange(40) % 4
    stray[3] = 99
    np.save(tmp_path / "stray.npy", stray)
    np.save(tmp_path / "unknown.npy", np.full(40, -1))
    tiny = ["--latent-dim", "2", "--encoder", "mlp", "--hidden", "16", "--epochs", "1", "--no-progress"]
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        assert main(["train", "--model", "cvae", "--decoder", "mlp", "--data", str(tmp_path / "d.npy"), "--labels",
                     str(tmp_path / "stray.npy"), *tiny, "--out", str(tmp_path / "c")]) == 0
    assert any("the labels use 5 of the 100 classes" in str(w.message) for w in shown)
    capsys.readouterr()
    stray[3] = 99999  # a model with 100 000 classes (a weight row each): refused, before anything is written
    np.save(tmp_path / "stray.npy", stray)
    assert main(["train", "--model", "cvae", "--decoder", "mlp", "--data", str(tmp_path / "d.npy"), "--labels",
                 str(tmp_path / "stray.npy"), *tiny, "--out", str(tmp_path / "c2")]) == 2
    assert ("stray.npy: the labels use 5 values but run to 99999 (a stray label?): the model would have 100000 "
            "classes; relabel them 0..K-1") in capsys.readouterr().err
    assert not (tmp_path / "c2").exists()
    assert main(["train", "--model", "ssvae", "--data", str(tmp_path / "d.npy"), "--labels",
                 str(tmp_path / "unknown.npy"), *tiny, "--out", str(tmp_path / "s")]) == 2
    assert ("every label is -1 (unknown): a semi-supervised model learns its classes from some labelled images; to "
            "discover classes without labels, train the joint model (jvae --classes K)") in capsys.readouterr().err
    # an audit: the first message said --classes, which then met fit's refusal (no known label): the same line now
    assert main(["train", "--model", "ssvae", "--data", str(tmp_path / "d.npy"), "--labels",
                 str(tmp_path / "unknown.npy"), "--classes", "2", *tiny, "--out", str(tmp_path / "s")]) == 2
    assert "train the joint model (jvae --classes K)" in capsys.readouterr().err
    # the user's own label values 3 and 7 (partly known) made an 8-class semi-supervised model whose six classes
    # without a labelled image took unlabelled ones: refused, unless --classes asks for them
    partial = np.where(np.arange(40) < 10, np.where(np.arange(40) % 2, 7, 3), -1)
    np.save(tmp_path / "p37.npy", partial)
    assert main(["train", "--model", "ssvae", "--data", str(tmp_path / "d.npy"), "--labels", str(tmp_path / "p37.npy"),
                 *tiny, "--out", str(tmp_path / "s37")]) == 2
    err = capsys.readouterr().err
    assert ("the known labels use 2 of the classes 0..7 (3, 7): the model would give the 6 classes without a labelled "
            "image to unlabelled images; number the classes 0..1, or give --classes 8 to keep them") in err
    assert not (tmp_path / "s37").exists()
    assert main(["train", "--model", "ssvae", "--data", str(tmp_path / "d.npy"), "--labels", str(tmp_path / "p37.npy"),
                 "--classes", "8", *tiny, "--out", str(tmp_path / "s37")]) == 0
    capsys.readouterr()
    partial01 = np.where(np.arange(40) < 10, np.arange(40) % 2, -1)  # K from the labels: said
    np.save(tmp_path / "p01.npy", partial01)
    assert main(["train", "--model", "ssvae", "--data", str(tmp_path / "d.npy"), "--labels", str(tmp_path / "p01.npy"),
                 *tiny, "--out", str(tmp_path / "s01")]) == 0
    assert ("affinevae: ssvae with 2 classes, 0..1: the largest known label + 1 (override with --classes K)"
            in capsys.readouterr().out)
    assert main(["train", "--model", "ssvae", "--data", str(tmp_path / "d.npy"), "--labels", str(tmp_path / "p01.npy"),
                 "--set", "num_classes=4", *tiny, "--out", str(tmp_path / "s04")]) == 0
    assert "the largest known label + 1" not in capsys.readouterr().out  # K given, not taken from the labels


def test_label_messages_say_whose_labels():
    """'model avae is class-conditional' did not say around what, nor that --labels gives labels; a
    semi-supervised model's bad validation labels were not said to be the validation ones."""
    x = torch.as_tensor(av.data.load_mnist("train", n=20).images)
    wrapped = av.AVAE(av.build_model("cvae", latent_dim=2, num_classes=3, encoder="mlp", decoder="mlp", hidden=[16]))
    with pytest.raises(AffineVAEError, match=r"^model 'avae around a cvae' is class-conditional: labels are required "
                                             r"\(--labels"):
        wrapped.encode(x)
    ss = av.build_model("ssvae", latent_dim=2, num_classes=3, encoder="mlp", hidden=[16])
    y = torch.tensor([0, 1, 2, -1] * 5)
    with pytest.raises(AffineVAEError, match=r"^validation images: labels must lie in \[-1, 2\]"):
        av.fit(ss, (x, y), av.TrainConfig(epochs=1, progress=False), val=(x[:4], torch.tensor([0, 1, 12, -1])))


def test_labels_by_name_train_encode_and_map_to_the_run_s_numbering(tmp_path, capsys):
    """An audit: `--labels` of class names ('wt', 'mutant') was refused; now train numbers them in sorted order,
    says so and records them, encode writes class_names, and another labels file's names (a test file without
    one of the classes, whose own sorted numbering differs) are numbered as the run's."""
    images = av.data.load_mnist("train", n=40).images
    np.save(tmp_path / "d.npy", images)
    names = np.where(np.arange(40) % 2, "wt", "mutant").astype(object)
    names[10:] = "-1"
    (tmp_path / "names.csv").write_text("genotype\n" + "\n".join(names) + "\n")
    tiny = ["--latent-dim", "2", "--encoder", "mlp", "--hidden", "16", "--epochs", "1", "--no-progress"]
    assert main(["train", "--model", "ssvae", "--data", str(tmp_path / "d.npy"), "--labels", str(tmp_path / "names.csv"),
                 *tiny, "--out", str(tmp_path / "run")]) == 0
    assert "names.csv names the classes: mutant=0, wt=1 (sorted; encode writes class_names)" in capsys.readouterr().out
    (tmp_path / "wt.csv").write_text("\n".join(["wt"] * 40) + "\n")  # alone its own numbering would make wt 0
    assert main(["encode", str(tmp_path / "run"), "--data", str(tmp_path / "d.npy"), "--labels", str(tmp_path / "wt.csv"),
                 "--out", str(tmp_path / "codes.npz")]) == 0
    with np.load(tmp_path / "codes.npz") as z:
        assert z["class_names"].tolist() == ["mutant", "wt"] and set(z["labels"].tolist()) == {1}
    (tmp_path / "ko.csv").write_text("\n".join(["ko"] * 40) + "\n")
    capsys.readouterr()
    assert main(["encode", str(tmp_path / "run"), "--data", str(tmp_path / "d.npy"), "--labels", str(tmp_path / "ko.csv"),
                 "--out", str(tmp_path / "ko.npz")]) == 2
    assert "ko.csv: class 'ko' is not one of the run's (mutant, wt)" in capsys.readouterr().err
    np.save(tmp_path / "num.npy", np.where(np.arange(40) < 10, np.arange(40) % 2, -1))
    assert main(["train", "--model", "ssvae", "--data", str(tmp_path / "d.npy"), "--labels", str(tmp_path / "num.npy"),
                 *tiny, "--out", str(tmp_path / "numbered")]) == 0
    capsys.readouterr()
    assert main(["encode", str(tmp_path / "numbered"), "--data", str(tmp_path / "d.npy"), "--labels",
                 str(tmp_path / "wt.csv"), "--out", str(tmp_path / "n.npz")]) == 2
    assert "was trained on numbered classes: give their numbers" in capsys.readouterr().err
    # an audit: a model trained without labels (here a vae) refused named labels given only to score it
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "d.npy"), *tiny, "--decoder", "mlp",
                 "--out", str(tmp_path / "plain")]) == 0
    (tmp_path / "kinds.csv").write_text("\n".join(np.where(np.arange(40) % 2, "rod", "bent")) + "\n")
    assert main(["encode", str(tmp_path / "plain"), "--data", str(tmp_path / "d.npy"), "--labels",
                 str(tmp_path / "kinds.csv"), "--out", str(tmp_path / "plain.npz")]) == 0
    with np.load(tmp_path / "plain.npz") as z:
        assert z["class_names"].tolist() == ["bent", "rod"] and z["labels"].tolist() == (np.arange(40) % 2).tolist()


def test_class_names_reach_the_plots_and_survive_a_resume_with_numbers(tmp_path, capsys):
    """Labels given by name: the latent scatter's legend and the panels' titles show the names (they showed
    the numbers), a later labels file's names are the run's after its renumbering, and `train --resume` with
    the same labels as a numbered .npy keeps the run's class_names (it dropped them)."""
    from affinevae.cli.common import labels_by_run_names
    from affinevae.runs import Run

    images = av.data.load_mnist("train", n=40).images
    np.save(tmp_path / "d.npy", images)
    names = np.where(np.arange(40) % 2, "wt", "mutant").astype(object)
    names[10:] = "-1"
    (tmp_path / "names.csv").write_text("\n".join(names) + "\n")
    tiny = ["--model", "ssvae", "--data", str(tmp_path / "d.npy"), "--latent-dim", "2", "--encoder", "mlp", "--hidden",
            "16", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(["train", *tiny, "--labels", str(tmp_path / "names.csv"), "--epochs", "1"]) == 0
    run = Run(tmp_path / "run")
    assert run.class_names == ["mutant", "wt"]
    data = av.data.load_images(str(tmp_path / "d.npy"))
    (tmp_path / "wt.csv").write_text("\n".join(["wt"] * 40) + "\n")  # alone: wt would be class 0, named 'wt'
    data = av.data.files.set_labels(data, *av.data.files.read_labels(str(tmp_path / "wt.csv"), 40, "d",
                                                                      with_names=True))
    data = labels_by_run_names(argparse.Namespace(labels=str(tmp_path / "wt.csv")), run, data)
    assert set(data.labels.tolist()) == {1} and data.class_names == ["mutant", "wt"]
    codes = av.analysis.latent_codes(run.model(), data)
    fig = av.analysis.plot_latent_scatter(codes, ["class"])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["wt"]
    man = av.analysis.latent_manifold(run.model(), d=3, classes=[0, 1])
    fig = av.analysis.plot_manifold(man, class_names=run.class_names)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["mutant (class 0)", "wt (class 1)"]
    assert av.analysis.common.class_title(3, ["0", "1", "2", "3"]) == "class 3"  # digits named by their numbers
    np.save(tmp_path / "num.npy", np.where(np.arange(40) < 10, np.arange(40) % 2, -1))  # the same labels, numbered
    capsys.readouterr()
    assert main(["train", *tiny, "--labels", str(tmp_path / "num.npy"), "--epochs", "2", "--resume"]) == 0
    assert "names the classes" not in capsys.readouterr().out
    assert Run(tmp_path / "run").epochs_done == 2 and Run(tmp_path / "run").class_names == ["mutant", "wt"]
    # its own data now read with the numbered file: still named (the legend of `plot latent` took the numbers)
    assert Run(tmp_path / "run").data(split="train", n=None).class_names == ["mutant", "wt"]
