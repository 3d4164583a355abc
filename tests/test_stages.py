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
    with pytest.raises(TypeError):
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
