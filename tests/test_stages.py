"""The one forward pass of public stages shared by every family, named loss terms, injectable
networks, the AVAE as a LatentModel composing its inner model's stages, and the one warp."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import affinevae as av
from affinevae.errors import AffineVAEError
from affinevae.models.avae import AVAE, AVAEConfig, TRAIN_SEARCH
from affinevae.models.base import LatentModel, ModelConfig
from affinevae.nn.affine import Pose, canonicalise, compose_poses, pose_matrix, render
from affinevae.nn.layers import MLPEncoder
from affinevae.pose import AMORTISE_DEFAULTS, amortise, as_avae

torch.manual_seed(0)
X = torch.rand(6, 1, 28, 28)


@pytest.mark.parametrize("make", [lambda: av.VAE(latent_dim=3), lambda: av.AE(latent_dim=3),
                                  lambda: av.RVAE(latent_dim=2, equivariance=0.0)])
def test_forward_is_the_stages_in_order(make):
    model = make().eval()
    torch.manual_seed(1)
    out = model(X, sample=False)
    post = model.infer(X)
    z, pose = model.draw(post, sample=False)
    params = model.render(model.generate(z), pose)
    by_hand = model.score(X, params, post, pose)
    torch.testing.assert_close(out.elbo, by_hand.elbo)
    torch.testing.assert_close(out.x_params, params)
    assert out.terms == {} and torch.equal(out.loss, out.recon + model.config.beta * out.kl * model.variational)


def test_rvae_equivariance_is_a_named_term_outside_the_elbo():
    model = av.RVAE(latent_dim=2, equivariance=5.0).train()
    torch.manual_seed(2)
    out = model(X)
    assert set(out.terms) == {"equivariance"} and float(out.terms["equivariance"].detach()) > 0
    torch.testing.assert_close(out.loss, out.recon + out.kl + out.terms["equivariance"])
    torch.testing.assert_close(-out.elbo.mean(), out.recon + out.kl)  # the ELBO never holds it
    parts = model.loss(X)
    assert set(parts.terms) == {"equivariance"}
    model.eval()
    assert model(X).terms == {}  # only in training


def test_injected_networks_are_used():
    enc = MLPEncoder((1, 28, 28), 2 * 3, hidden=(16,))
    model = av.VAE(latent_dim=3, networks={"encoder": enc})
    assert model.encoder is enc
    with pytest.raises(AffineVAEError, match="not 'encodr'"):
        av.VAE(latent_dim=3, networks={"encodr": enc})


def test_avae_is_a_latent_model_whose_config_mirrors_the_inner_model():
    inner = av.RVAE(latent_dim=2, invariances=("rotation",))
    avae = AVAE(inner, pose_head=False)
    assert isinstance(avae, LatentModel) and isinstance(avae.config, ModelConfig)
    assert avae.config.latent_dim == 2 and avae.config.image_shape == (1, 28, 28) and avae.pose_source == "searched"
    saved = avae.config.to_dict()
    assert "latent_dim" not in saved and saved["inner_config"]["latent_dim"] == 2  # one place for the inner options
    again = AVAEConfig.from_dict({"inner": "vae", "latent_dim": 4})  # top-level inner options move inside
    assert again.inner_config["latent_dim"] == 4 and again.latent_dim == 4
    assert AVAEConfig(latent_dim=5).inner_config["latent_dim"] == 5
    with pytest.raises(AffineVAEError, match="both at the top level"):
        AVAEConfig.from_dict({"latent_dim": 4, "inner_config": {"latent_dim": 3}})
    assert avae.likelihood is inner.likelihood and avae.log_sigma is inner.log_sigma


def test_avae_at_the_identity_is_its_inner_model_and_composes_an_inferred_pose():
    vae = av.VAE(latent_dim=3).eval()
    avae = AVAE(vae, pose_head=False).eval()
    zero = torch.zeros(len(X), 1)
    torch.testing.assert_close(avae.pass_at(X, None, zero, sample=False).elbo, vae(X, sample=False).elbo,
                               rtol=1e-4, atol=1e-3)
    rvae = av.RVAE(latent_dim=2, invariances=("rotation",)).eval()
    outer = AVAE(rvae, pose_head=False).eval()
    params = torch.full((len(X), 1), 0.4)
    out = outer.pass_at(X, None, params, sample=False)
    post = rvae.infer(outer.canonicalise(X, params))
    expect = Pose(angle=torch.full((len(X),), 0.4) + post.pose.angle)  # found o inferred = one turn
    torch.testing.assert_close(out.x_params, rvae.render(rvae.generate(post.z_mean), expect), rtol=1e-4, atol=1e-4)


def test_one_warp_renders_images_and_fields_and_composes():
    torch.manual_seed(3)
    img = torch.rand(3, 1, 16, 16)
    a, b = Pose(angle=torch.tensor([0.3, -1.0, 2.0])), Pose(angle=torch.tensor([0.5, 0.2, -0.7]))
    both = compose_poses(b, a, 3)
    once = render(img, both)
    ref = render(img, Pose(angle=a.angle + b.angle))
    torch.testing.assert_close(once, ref, rtol=1e-5, atol=1e-5)
    assert render(img, None) is img and canonicalise(img, Pose()) is img
    torch.testing.assert_close(canonicalise(img, pose_matrix(a)), canonicalise(img, a))
    border = render(img, a, padding="border")
    assert not torch.allclose(border, render(img, a))  # padding is explicit
    dec = av.RVAE(latent_dim=2).decoder  # a coordinate field renders exactly at the pose
    h = torch.randn(3, 2)
    torch.testing.assert_close(render(dec.generate(h), a), dec(h, a))


def test_trusted_training_search_searches_only_the_unsure_images():
    vae = av.VAE(latent_dim=3)
    avae = AVAE(vae).train()
    assert avae.config.train_search == TRAIN_SEARCH and TRAIN_SEARCH.head_trust == 0.9
    assert avae.config.warm_start and avae.cache is not None and TRAIN_SEARCH.warm_trust == 0.3  # the pose cache
    idx = torch.arange(len(X))
    found = avae.find_pose(X, None, idx)
    assert found.searched is None  # untrained head: every image searched
    out = avae(X, index=idx)
    assert "pose_head" in out.terms and int(avae.head_trained) == 1
    avae.config = avae.config.replace(train_search=avae.config.train_search.replace(head_trust=0.0))
    found = avae.find_pose(X, None, idx)
    assert not bool(found.searched.any())  # everyone trusted: the head's own pose, no search
    assert avae.pose_terms(X, found) == {}  # and nothing for the head to learn from itself
    assert avae.on_epoch_end(1, None)["pose_searched"] == pytest.approx(2 / 3)  # 2 of 3 batches searched
    rect = AVAEConfig.from_dict({"image_shape": [1, 28, 20]})
    assert rect.train_search.head_views == 2  # 4 quarter-turn views need square images
    assert AVAEConfig(transform="translation").train_search.head_views == 1


def test_amortise_library_function_and_cli_share_defaults():
    from affinevae.cli import build_parser

    args = build_parser().parse_args(["amortise", "run", "--data", "mnist", "--out", "o"])
    assert (args.epochs, args.lr, args.batch_size, args.target) == (
        AMORTISE_DEFAULTS.epochs, AMORTISE_DEFAULTS.lr, AMORTISE_DEFAULTS.batch_size, AMORTISE_DEFAULTS.target)
    torch.manual_seed(4)
    vae = av.VAE(latent_dim=3)
    res = amortise(vae, X, config=AMORTISE_DEFAULTS.replace(epochs=1, views=4))
    assert res.trained == "head" and len(res.history) == 1 and math.isfinite(res.history[0])
    assert int(res.model.head_trained) == 1 and res.model.config.search.head_views == 4
    assert as_avae(res.model) is res.model
    with pytest.raises(AffineVAEError, match="transform 'rotation'"):
        as_avae(res.model, "translation", "run")
    with pytest.raises(AffineVAEError, match="ELBO alone"):
        amortise(vae, X, config=AMORTISE_DEFAULTS.replace(target="search"), refiner=True)
    # the config's seed fixes the new head's weights and the training; the caller's state is kept
    heads = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        out = amortise(copy.deepcopy(vae), X, config=AMORTISE_DEFAULTS.replace(epochs=1, target="elbo"))
        assert torch.equal(torch.get_rng_state(), before)
        heads.append(out.model.head.state_dict())
    assert all(torch.equal(v, heads[1][k]) for k, v in heads[0].items())


def test_code_outside_the_models_asks_a_model_what_it_does():
    """The analyses, sweep, report and commands ask ``pose_source`` / ``learns_angle`` instead of
    testing for the AVAE class (a new searched family needs no edits there)."""
    import ast
    from pathlib import Path

    import affinevae

    root = Path(affinevae.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if "models" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2
                    and getattr(node.args[1], "id", None) == "AVAE"):
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
    vae, rvae = av.VAE(latent_dim=2), av.RVAE(latent_dim=2, invariances=("rotation",))
    assert not vae.learns_angle and rvae.learns_angle
    assert AVAE(vae, pose_head=False).learns_angle and not AVAE(vae, transform="translation", pose_head=False).learns_angle


def _by_hand(model, x, y=None, sample=True):
    """forward's pass composed from the documented public calls (README, Architecture)."""
    x, y = model.check_input(x, y)
    found = model.find_pose(x, y, None, y)
    found_pose = model.pose_of(found)
    canon = model.canonicalise(x, found_pose)
    post, terms = model.infer_for_loss(canon, y)
    z, inferred = model.draw(post, sample)
    pose = compose_poses(found_pose, inferred, x.shape[0], x.device)
    out = model.decode_and_score(x, y, z, pose, post, terms, sample)
    return out.with_terms(model.pose_terms(x, found))


@pytest.mark.parametrize("make, train", [
    (lambda: av.RVAE(latent_dim=2, equivariance=3.0), True),
    (lambda: av.build_model("jrvae", latent_dim=2, num_classes=3, hidden=[16], class_consistency=2.0), True),
    (lambda: av.build_model("ssrvae", latent_dim=2, num_classes=3, hidden=[16]), True),
    (lambda: AVAE(av.VAE(latent_dim=3), pose_head=True), False),
    (lambda: AVAE(av.build_model("jrvae", latent_dim=2, num_classes=3, hidden=[16]), pose_head=False), False)])
def test_the_documented_calls_compose_to_forward_exactly(make, train):
    """An audit carrying the core on: the README's seven stages did not add up to forward's loss (the
    rVAE's equivariance term, the AVAE's pose_head, the joint model's class draw live in infer_for_loss,
    pose_terms and decode_and_score); composed as the README now says, they give forward's numbers."""
    torch.manual_seed(0)
    model = make().train(train)
    y = torch.tensor([0, 1, -1, 2, -1, 0]) if model.semi_supervised else None
    torch.manual_seed(3)
    out = model(X, y)
    torch.manual_seed(3)
    hand = _by_hand(model, X, y)
    assert torch.equal(out.loss, hand.loss) and torch.equal(out.elbo, hand.elbo)
    assert sorted(out.terms) == sorted(hand.terms) and all(torch.equal(out.terms[k], hand.terms[k]) for k in out.terms)
    assert out.terms or not train  # the training pass's named terms are there to compare


def test_loss_terms_with_a_taken_name_or_not_scalar_are_refused():
    """A term named 'kl' overwrote train_kl in metrics.jsonl (848.7 for a KL of 0.54), and an (N,) term crashed
    training with torch's 'Boolean value of Tensor' traceback: both are one line now."""
    from affinevae.models.base import check_terms

    out = av.VAE(latent_dim=3).eval()(X)
    with pytest.raises(AffineVAEError, match=r"^loss term 'kl': a term needs a name of its own"):
        out.with_terms({"kl": torch.tensor(1.0)})
    with pytest.raises(AffineVAEError, match=r"^loss term 'l1' must be a scalar tensor .*got \(6,\)"):
        av.VAE(latent_dim=3).score(X, out.x_params, av.VAE(latent_dim=3).infer(X), terms={"l1": torch.ones(6)})
    check_terms({"l1": torch.tensor(0.5)})  # a scalar with its own name is fine


def _l1vae():
    """A plugin family: a VAE with an L1 term on its content means (the same definition each call)."""
    from affinevae.models.vae import VAE

    class L1VAE(VAE):
        def infer_for_loss(self, x, y):
            post, terms = super().infer_for_loss(x, y)
            return post, {**terms, "l1": 0.01 * post.z_mean.abs().sum(1).mean()}
    return L1VAE


def test_a_registered_subclass_takes_its_name_and_loads_back_as_itself(tmp_path):
    """A subclass of VAE registered as 'l1vae' kept family 'vae' and loaded back as a plain VAE, its term lost;
    registering again (a notebook cell run twice) raised a bare RuntimeError."""
    from affinevae.models.vae import VAE
    from affinevae.registry import MODELS

    L1VAE = MODELS.register("test_l1vae")(_l1vae())
    try:
        assert L1VAE.family == "test_l1vae" and VAE.family == "vae"
        model = L1VAE(latent_dim=2, hidden=[16])
        result = av.fit(model, X.repeat(4, 1, 1, 1), av.TrainConfig(epochs=1, batch_size=8, progress=False),
                        out=tmp_path / "r", check_learning=False)
        assert "train_l1" in result.history[-1]
        back = av.load(tmp_path / "r")
        assert type(back) is L1VAE and torch.equal(back(X, sample=False).elbo, model.eval()(X, sample=False).elbo)
        again = MODELS.register("test_l1vae")(_l1vae())  # the same definition again: it replaces the first
        assert MODELS.get("test_l1vae") is again
        with pytest.raises(AffineVAEError, match=r"^model 'test_l1vae' is registered already \(by .*L1VAE\); "):
            MODELS.register("test_l1vae")(type("Other", (VAE,), {}))
        with pytest.raises(AffineVAEError, match=r"sets family = 'vae' but is registered as 'test_x'"):
            MODELS.register("test_x")(type("Named", (VAE,), {"family": "vae"}))
    finally:
        MODELS.unregister("test_l1vae")
    assert "test_l1vae" not in MODELS and "test_x" not in MODELS


def test_a_model_with_its_own_networks_loads_with_them_again(tmp_path):
    """Injected networks were saved as if the config built them: load failed with 'weights do not match the
    config' (as if the files were corrupt). model.json records them now and load(networks=) takes them again."""
    def nets():
        return {"encoder": MLPEncoder((1, 28, 28), 6, hidden=(8,)), "decoder": torch.nn.Sequential(
            torch.nn.Linear(3, 784), torch.nn.Unflatten(1, (1, 28, 28)))}

    torch.manual_seed(0)
    model = av.VAE(latent_dim=3, networks=nets())
    model.save(tmp_path / "m")
    with pytest.raises(AffineVAEError, match=r"built with networks of its own \(decoder, encoder\), which its config "
                                             r"does not build: load it with networks=\{'decoder': \.\.\., 'encoder'"):
        av.load(tmp_path / "m")
    back = av.load(tmp_path / "m", networks=nets())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    with pytest.raises(AffineVAEError, match=r"was built from its config alone; load it without networks="):
        av.VAE(latent_dim=3).save(tmp_path / "plain") and None or av.load(tmp_path / "plain", networks=nets())
    with pytest.raises(AffineVAEError, match=r"^networks: model 'vae' builds encoder, decoder, not 'encodr'$"):
        av.VAE(latent_dim=3, networks={"encodr": nets()["encoder"]})


def test_a_registered_likelihood_is_taken_by_the_families(tmp_path):
    """A likelihood registered in LIKELIHOODS was refused by vae, rvae and ae (their own fixed lists)."""
    from affinevae.nn.likelihoods import LIKELIHOODS, Gaussian

    @LIKELIHOODS.register("test_laplace")
    class Laplace(Gaussian):
        name = "test_laplace"

        def log_prob(self, params, x, log_sigma=None):
            b = torch.exp(log_sigma) if log_sigma is not None else torch.tensor(1.0)
            return (-(x - params).abs() / b - torch.log(2 * b)).flatten(1).sum(1)

    try:
        for family in ("vae", "rvae", "ae", "jrvae"):
            model = av.build_model(family, latent_dim=2, hidden=[16], likelihood="test_laplace")
            assert torch.isfinite(model(X).loss)
    finally:
        LIKELIHOODS.unregister("test_laplace")
    with pytest.raises(AffineVAEError, match=r"likelihood must be one of .*got 'mse'"):
        av.build_model("vae", likelihood="mse")  # no density: the AE's alone


def test_validation_metrics_name_the_terms_in_the_validation_loss():
    """val_loss held the AVAE's pose_head term (215.67 against recon + kl 215.01) that no val_ metric named."""
    from affinevae.training import evaluate

    model = AVAE(av.VAE(latent_dim=3), pose_head=True)
    got = evaluate(model, X, None)
    assert "pose_head" in got
    assert got["loss"] == pytest.approx(got["recon"] + got["kl"] + got["pose_head"], rel=1e-5)


def test_a_plugin_subclass_takes_its_family_s_defaults():
    """An audit: a registered subclass of the rVAE got the trainer's generic batch and learning rate (128, 1e-3), none
    of the rVAE's (defaults were keyed by the family's name)."""
    from affinevae.defaults import data_defaults, defaults_family
    from affinevae.registry import MODELS

    MODELS.register("test_widervae")(type("WiderRVAE", (av.RVAE,), {}))
    try:
        assert defaults_family("test_widervae") == "rvae" and defaults_family("vae") == "vae"
        data = av.data.load_mnist("train", n=20)
        assert (data_defaults(data, "test_widervae", {}, None, None)[1]
                == data_defaults(data, "rvae", {}, None, None)[1])
    finally:
        MODELS.unregister("test_widervae")


def test_registries_of_objects_refuse_a_second_entry_under_a_taken_name():
    """A review: the same-definition rule (module and qualified name) took two instances of one class for the same
    definition, so a second plot kind or transform under a taken name replaced the first silently."""
    from affinevae.registry import Registry

    kinds = Registry("plot kind")
    first = kinds.register("angles")(dict(a=1))
    with pytest.raises(AffineVAEError, match=r"^plot kind 'angles' is registered already"):
        kinds.register("angles")(dict(a=2))
    assert kinds.get("angles") is first
    kinds.register("angles")(first)  # the very same object again: kept


def test_the_joint_families_refuse_bad_terms_too():
    """A review: JRVAE.score builds its output itself and skipped check_terms, so a term named 'kl' or an (N,) term
    passed (the loss became (N,), and fit failed later in backward)."""
    from affinevae.models.joint import JRVAE

    class Bad(JRVAE):
        def infer_for_loss(self, x, y):
            post, terms = super().infer_for_loss(x, y)
            return post, {**terms, "kl": torch.ones(len(x))}

    model = Bad(av.build_model("jrvae", latent_dim=2, num_classes=3, hidden=[16]).config)
    with pytest.raises(AffineVAEError, match=r"^loss term 'kl': a term needs a name of its own"):
        model.train()(X)


def test_an_avae_around_injected_networks_is_one_line_with_or_without_them(tmp_path):
    """A review: load(avae_dir, networks={'vae.encoder': ...}) reached AVAE(config, networks=...), a TypeError."""
    inner = av.VAE(latent_dim=3, networks={"encoder": MLPEncoder((1, 28, 28), 6, hidden=(8,))})
    AVAE(inner).save(tmp_path / "a")
    for given in (None, {"vae.encoder": MLPEncoder((1, 28, 28), 6, hidden=(8,))}):
        with pytest.raises(AffineVAEError, match=r"its inner model was built with networks of its own \(vae.encoder\)"):
            av.load(tmp_path / "a", networks=given)


def test_build_model_takes_networks_of_the_callers_own(tmp_path):
    """An audit: build_model had no networks= (injected models lost its seeded start and its checks): now it
    passes them on, seeded, and the model saves and loads with them; the AVAE, which wraps a model, refuses them."""
    def enc():
        return MLPEncoder((1, 28, 28), 6, hidden=(8,))

    a = av.build_model("vae", seed=3, latent_dim=3, networks={"encoder": enc()})
    b = av.build_model("vae", seed=3, latent_dim=3, networks={"encoder": enc()})
    assert a.injected_networks == ("encoder",)
    assert all(torch.equal(u, v) for u, v in zip(a.decoder.state_dict().values(), b.decoder.state_dict().values()))
    a.save(tmp_path / "m")
    back = av.load(tmp_path / "m", networks={"encoder": enc()})
    assert torch.equal(back(X, sample=False).elbo, a.eval()(X, sample=False).elbo)
    with pytest.raises(AffineVAEError, match=r"^networks: model 'avae' takes none \(an AVAE wraps a model"):
        av.build_model("avae", networks={"encoder": enc()})
