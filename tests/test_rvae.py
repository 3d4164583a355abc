"""Tests for the rVAE / crVAE (affinevae.models.rvae) and the pose decoders (affinevae.nn.spatial).

Budgets are small: four short trainings on a few thousand 28x28 digits (about 12 s each on two
cores, shared by the tests through module fixtures) and otherwise untrained models.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import affinevae as av
from affinevae.errors import AffineVAEError
from affinevae.evaluation import circular_correlation
from affinevae.models import CRVAE, RVAE, CRVAEConfig, RVAEConfig
from affinevae.nn.affine import Pose, invert_affine, pose_matrix, render, rotation_matrix, transform_grid, wrap_angle
from affinevae.nn.spatial import SpatialDecoder

QUIET = dict(val_split=0.0, progress=False, checkpoint=False)
SHORT = av.TrainConfig(epochs=8, batch_size=64, lr=3e-3, seed=0, **QUIET)


def small(**options):
    """A small rVAE for fast tests (options override)."""
    base = dict(latent_dim=2, hidden=(32, 32), encoder_hidden=(128,))
    return av.build_model("rvae", **{**base, **options})


def same_outputs(a, b, x, y=None):
    """Posterior means, pose and mean reconstructions of two models agree exactly."""
    ea, eb = a.encode(x, y), b.encode(x, y)
    torch.testing.assert_close(ea.z_mean, eb.z_mean, rtol=0, atol=0)
    torch.testing.assert_close(ea.z_std, eb.z_std, rtol=0, atol=0)
    for (name, va), (_, vb) in zip(ea.pose.items(), eb.pose.items()):
        assert (va is None) == (vb is None), name
        if va is not None:
            torch.testing.assert_close(va, vb, rtol=0, atol=0)
    torch.testing.assert_close(a.reconstruct(x, y), b.reconstruct(x, y), rtol=0, atol=0)
    z = ea.z_mean
    torch.testing.assert_close(a.decode(z, y, angle=0.3), b.decode(z, y, angle=0.3), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------- config
def test_config_defaults_and_names():
    cfg = RVAEConfig()
    assert cfg.invariances == ("rotation", "translation", "scale")
    assert cfg.decoder == "spatial" and cfg.encoder == "mlp"
    assert cfg.rotation_mode == "gaussian"
    assert cfg.rotation_prior == pytest.approx(math.pi / 4) and cfg.translation_prior == 0.1 and cfg.scale_prior == 0.1
    # names in any order, or a comma-separated string, are stored in the canonical order
    assert RVAEConfig(invariances=("scale", "rotation")).invariances == ("rotation", "scale")
    assert RVAEConfig(invariances="translation, rotation").invariances == ("rotation", "translation")
    assert RVAEConfig(invariances=()).invariances == ()
    assert av.MODELS.get("rvae") is RVAE and av.MODELS.get("crvae") is CRVAE
    assert av.RVAE is RVAE and av.CRVAE is CRVAE


@pytest.mark.parametrize("options, match", [
    ({"invariance": ("rotation",)}, "unknown option 'invariance'.*did you mean 'invariances'"),
    ({"invariances": ("rotate",)}, "invariances entry must be one of"),
    ({"invariances": ("rotation", "rotation")}, "must not repeat"),
    ({"invariances": 3}, "invariances must be a tuple"),
    ({"decoder": "conv"}, "decoder must be one of"),
    ({"rotation_mode": "circle"}, "rotation_mode must be one of"),
    ({"rotation_prior": 0.0}, "rotation_prior must be a finite number > 0"),
    ({"translation_prior": -1.0}, "translation_prior must be a finite number > 0"),
    ({"scale_prior": "big"}, "scale_prior must be a finite number > 0"),
    ({"likelihood": "mse"}, "likelihood must be one of"),
    ({"hidden": ()}, "hidden must list at least one width"),
])
def test_bad_options_raise_one_line(options, match):
    for make in (lambda: av.build_model("rvae", **options), lambda: RVAE(**options)):
        with pytest.raises(AffineVAEError, match=match) as info:
            make()
        assert "\n" not in str(info.value)


def test_crvae_needs_two_classes():
    with pytest.raises(AffineVAEError, match="num_classes >= 2"):
        av.build_model("crvae", num_classes=1)
    assert CRVAEConfig().num_classes == 10


# ---------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("decoder", ["spatial", "warp", "broadcast"])
@pytest.mark.parametrize("invariances", [("rotation", "translation", "scale"), ("rotation",), ("translation", "scale"), ()])
def test_shapes_and_named_outputs(decoder, invariances):
    torch.manual_seed(0)
    model = small(decoder=decoder, invariances=invariances, encoder="conv" if decoder == "warp" else "mlp")
    x = torch.rand(6, 1, 28, 28)
    out = model(x)
    assert out.x_params.shape == (6, 1, 28, 28)
    assert out.elbo.shape == (6,) and out.z_mean.shape == (6, 2) and out.z_logvar.shape == (6, 2)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    # training adds the pose-consistency term (on by default in 'gaussian' mode) to the loss only
    if invariances:
        assert out.loss > out.recon + out.kl
    else:
        torch.testing.assert_close(out.loss, out.recon + out.kl)
    with torch.no_grad():
        ev = model.eval()(x)
        torch.testing.assert_close(ev.loss, ev.recon + ev.kl)
        torch.testing.assert_close(ev.elbo.mean(), -(ev.recon + ev.kl))
    model.train()
    enc = model.encode(x)
    assert enc.z_mean.shape == (6, 2) and (enc.z_std > 0).all()
    if not invariances:
        assert enc.pose is None and enc.pose_std is None and out.pose is None
    else:
        expect = {"angle": "rotation" in invariances, "shift": "translation" in invariances, "scale": "scale" in invariances}
        shapes = {"angle": (6,), "shift": (6, 2), "scale": (6,)}
        for name, present in expect.items():
            for p in (enc.pose, enc.pose_std, out.pose):
                v = getattr(p, name)
                assert (v is not None) == present, name
                if present:
                    assert v.shape == shapes[name]
        assert enc.pose.shear is None
        if "scale" in invariances:
            assert (enc.pose.scale > 0).all()
    # decode: canonical by default, any pose on request; probabilities in [0, 1]
    z = torch.randn(6, 2)
    canon = model.decode(z)
    posed = model.decode(z, angle=torch.full((6,), 0.5), shift=torch.tensor([0.2, -0.1]), scale=1.2)
    assert canon.shape == posed.shape == (6, 1, 28, 28)
    assert canon.min() >= 0 and canon.max() <= 1
    assert not torch.allclose(canon, posed)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_multichannel_images_one_output_per_channel():
    torch.manual_seed(0)
    model = small(image_shape=(3, 12, 16), channels=(8, 16))
    x = torch.rand(4, 3, 12, 16)
    out = model(x)
    assert out.x_params.shape == (4, 3, 12, 16)
    # channels are different functions of the same pixel
    assert not torch.allclose(out.x_params[:, 0], out.x_params[:, 1])
    assert model.decode(torch.zeros(2, 2), angle=1.0).shape == (2, 3, 12, 16)
    warp = small(image_shape=(3, 12, 16), channels=(8, 16), decoder="warp", encoder="conv")
    assert warp(x).x_params.shape == (4, 3, 12, 16)


def test_full_rotation_mode_kl_ignores_the_mean_angle():
    torch.manual_seed(0)
    model = small(invariances=("rotation",), rotation_mode="full", encoder="mlp")
    x = torch.rand(8, 1, 28, 28)
    enc = model.encode(x)
    assert (enc.pose.angle.abs() <= math.pi).all()
    kl = model.kl(enc)
    turned = dataclass_replace_angle(enc, wrap_angle(enc.pose.angle + 2.0))
    torch.testing.assert_close(model.kl(turned), kl)
    # whereas the gaussian mode's KL grows with the mean angle
    gauss = small(invariances=("rotation",))
    enc = gauss.encode(x)
    far = dataclass_replace_angle(enc, enc.pose.angle + 2.0)
    assert (gauss.kl(far) > gauss.kl(dataclass_replace_angle(enc, enc.pose.angle * 0))).all()


def dataclass_replace_angle(enc, angle):
    import dataclasses

    return dataclasses.replace(enc, pose=dataclasses.replace(enc.pose, angle=angle))


# ---------------------------------------------------------------------------------------- crVAE
def test_crvae_requires_labels():
    torch.manual_seed(0)
    model = av.build_model("crvae", latent_dim=2, num_classes=3, hidden=(16, 16), encoder_hidden=(32,),
                           invariances=("rotation",))
    x, y = torch.rand(5, 1, 28, 28), torch.tensor([0, 1, 2, 0, 1])
    for call in (lambda: model(x), lambda: model.encode(x), lambda: model.decode(torch.zeros(5, 2)),
                 lambda: av.fit(model, x, av.TrainConfig(epochs=1, **QUIET))):
        with pytest.raises(AffineVAEError, match="class-conditional"):
            call()
    with pytest.raises(AffineVAEError, match="labels must lie in"):
        model(x, torch.tensor([0, 1, 2, 3, 0]))
    out = model(x, y)
    assert out.x_params.shape == (5, 1, 28, 28) and out.pose.angle.shape == (5,)
    # the class changes the rendering of the same content latents
    z = torch.zeros(1, 2)
    assert not torch.allclose(model.decode(z, 0), model.decode(z, 1))
    assert model.decode(torch.zeros(4, 2), 2, angle=0.3).shape == (4, 1, 28, 28)


# ---------------------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("family, options", [
    ("rvae", {}),
    ("rvae", {"decoder": "warp", "encoder": "conv", "invariances": ("rotation", "scale"), "rotation_mode": "full"}),
    ("crvae", {"num_classes": 3, "invariances": ("translation",)}),
])
def test_save_load_round_trip(tmp_path, family, options):
    torch.manual_seed(0)
    model = av.build_model(family, latent_dim=2, hidden=(16, 16), encoder_hidden=(32,), **options).eval()
    x = torch.rand(4, 1, 28, 28)
    y = torch.tensor([0, 2, 1, 1]) if family == "crvae" else None
    model.save(tmp_path / "m")
    loaded = av.load(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    same_outputs(model, loaded, x, y)


def test_fit_writes_a_run_that_loads(tmp_path):
    torch.manual_seed(0)
    data = av.data.rotated_mnist("train", n=120, seed=3)
    model = small(invariances=("rotation", "translation"))
    res = av.fit(model, data, av.TrainConfig(epochs=1, batch_size=40, progress=False), out=tmp_path / "run")
    assert len(res.history) == 1 and np.isfinite(res.history[0]["val_loss"])
    loaded = av.load(tmp_path / "run")
    same_outputs(model, loaded, torch.as_tensor(data.images[:5]))


# ---------------------------------------------------------------------------------------- decoders
def test_factored_first_layer_equals_the_unfactored_layer():
    torch.manual_seed(0)
    dec = SpatialDecoder(5, (1, 10, 12), hidden=(24, 16))
    n = 7
    h = torch.randn(n, 5)
    pose = Pose(angle=torch.randn(n), shift=0.3 * torch.randn(n, 2), scale=torch.exp(0.2 * torch.randn(n)))
    for p in (pose, Pose(angle=torch.randn(n)), None):
        theta = invert_affine(pose_matrix(p)) if p is not None else torch.eye(2, 3).expand(n, 2, 3)
        coords = transform_grid(theta, 10, 12)  # (N, P, 2) canonical coordinates of each pixel
        inputs = torch.cat([coords, h[:, None, :].expand(n, coords.shape[1], 5)], 2)
        weight = torch.cat([dec.coord.weight, dec.latent.weight], 1)  # the full first Linear
        reference = F.linear(inputs, weight, dec.latent.bias)
        torch.testing.assert_close(dec.first_layer(h, p), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("decoder", ["spatial", "warp"])
def test_decoders_follow_the_render_convention(decoder):
    """Rendering z in a pose equals placing the canonical rendering in that pose with `render`.

    A quarter turn and a whole-pixel shift map pixel centres onto pixel centres, so the
    bilinear `render` is exact there and both must agree.
    """
    torch.manual_seed(0)
    model = small(decoder=decoder, encoder="conv" if decoder == "warp" else "mlp").eval()
    z = torch.randn(3, 2)
    with torch.no_grad():
        canon = model.decode_params(z)
        quarter = Pose(angle=torch.full((3,), math.pi / 2))
        torch.testing.assert_close(model.decode_params(z, pose=quarter), render(canon, quarter), rtol=1e-4, atol=1e-4)
        two_px = Pose(shift=torch.tensor([[4 / 28, -2 / 28]]).expand(3, 2))
        inner = (slice(None), slice(None), slice(3, -3), slice(5, -5))  # away from the padded border
        torch.testing.assert_close(model.decode_params(z, pose=two_px)[inner], render(canon, two_px)[inner],
                                   rtol=1e-4, atol=1e-4)
    # the anti-clockwise quarter turn on screen is numpy's rot90 of the (row, column) array
    torch.testing.assert_close(render(canon, quarter), torch.rot90(canon, 1, (2, 3)), rtol=1e-4, atol=1e-4)


def test_the_broadcast_decoder_renders_the_coordinates_it_is_given_through_3x3_convolutions():
    """The spatial-broadcast decoder (the rVAE article's convolutional one): with every 3 x 3 kernel made
    symmetric under quarter turns, rendering at a quarter turn is exactly its canonical rendering turned (the
    coordinates and the convolutions agree on the orientation); with its own kernels each pixel sees its
    neighbours (a change of one first-layer pixel moves the 3 x 3 block around it after one convolution)."""
    from affinevae.nn.spatial import BroadcastDecoder

    torch.manual_seed(0)
    model = small(decoder="broadcast", hidden=(8, 8)).eval()
    dec = model.decoder
    assert isinstance(dec, BroadcastDecoder)
    with torch.no_grad():
        for conv in (m for m in dec.pixel_mlp if isinstance(m, torch.nn.Conv2d)):
            w = conv.weight
            conv.weight.copy_(sum(torch.rot90(w, k, (2, 3)) for k in range(4)) / 4)
        z = torch.randn(3, 2)
        canon = model.decode_params(z)
        quarter = Pose(angle=torch.full((3,), math.pi / 2))
        torch.testing.assert_close(model.decode_params(z, pose=quarter), torch.rot90(canon, 1, (2, 3)),
                                   rtol=1e-4, atol=1e-4)
        one = BroadcastDecoder(2, (1, 9, 9), hidden=(4,))  # one convolution after the first layer
        h = torch.randn(1, 2)
        base = one(h)
        pre = one.first_layer(h, inverse=torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]))
        pre[0, 4 * 9 + 4] += 5.0  # the centre pixel of the first layer's map
        moved = one.after_first_layer(pre)
        changed = (moved - base).abs()[0, 0] > 1e-6
    assert changed[3:6, 3:6].all() and changed.sum() == 9


def test_equivariance_default_depends_on_the_rotation_mode():
    assert RVAEConfig().equivariance is None and RVAEConfig().equivariance_weight == 10.0
    assert RVAEConfig(rotation_mode="full").equivariance_weight == 0.0
    assert RVAEConfig(rotation_mode="full", equivariance=2.0).equivariance_weight == 2.0
    # an explicit 0 turns it off: the training loss is then exactly recon + kl
    torch.manual_seed(0)
    model = small(equivariance=0.0).train()
    out = model(torch.rand(5, 1, 28, 28))
    torch.testing.assert_close(out.loss, out.recon + out.kl)
    with pytest.raises(AffineVAEError, match="equivariance must be a finite number >= 0"):
        RVAEConfig(equivariance=-1.0)


# ---------------------------------------------------------------------------------------- proof: rotation
@pytest.fixture(scope="module")
def rotation_models():
    """An rVAE and a plain VAE trained with the same short budget on digits rotated in +-60 degrees."""
    train = av.data.rotated_mnist("train", n=6000, seed=0)
    torch.manual_seed(0)
    rvae = small(invariances=("rotation",), encoder_hidden=(128,))
    av.fit(rvae, train, SHORT)
    torch.manual_seed(0)
    vae = av.build_model("vae", latent_dim=2, encoder="mlp", decoder="mlp", hidden=(128,))
    av.fit(vae, train, SHORT)
    return rvae.eval(), vae.eval()


@pytest.fixture(scope="module")
def upright():
    """300 upright test digits (N, 1, 28, 28)."""
    return torch.as_tensor(av.data.load_mnist("test", n=300).images)


def _median_turn_deg(a1, a0):
    return float(np.median(np.degrees(wrap_angle(torch.as_tensor(a1 - a0)).numpy())))


def test_trained_rvae_recovers_the_angle_far_better_than_a_vae(rotation_models):
    rvae, vae = rotation_models
    test = av.data.rotated_mnist("test", n=1000, seed=1)
    with torch.no_grad():
        angle = rvae.encode(test.images).pose.angle.numpy()
        z = vae.encode(test.images).z_mean.numpy()
    r = circular_correlation(angle, test.angle)
    # the VAE has no angle: its best single latent as an angle read-out (|Pearson r|)
    vae_r = max(abs(np.corrcoef(z[:, j], test.angle)[0, 1]) for j in range(z.shape[1]))
    print(f"\nrVAE circular r {r:.3f}, VAE best latent |r| {vae_r:.3f}")
    assert r > 0.75
    assert r > vae_r + 0.15


@pytest.mark.parametrize("turn_deg", [30.0, -30.0])
def test_turning_a_digit_turns_its_encoded_angle_by_as_much(rotation_models, upright, turn_deg):
    rvae, _ = rotation_models
    turned = render(upright, Pose(angle=torch.full((len(upright),), math.radians(turn_deg))))
    with torch.no_grad():
        moved = _median_turn_deg(rvae.encode(turned).pose.angle, rvae.encode(upright).pose.angle)
    assert abs(moved - turn_deg) < 8.0, moved
    # the content code barely moves: the turn went into the pose
    with torch.no_grad():
        dz = (rvae.encode(turned).z_mean - rvae.encode(upright).z_mean).norm(dim=1).median()
        spread = rvae.encode(upright).z_mean.std(0).norm()
    assert dz < 0.5 * spread, (float(dz), float(spread))


def test_decoding_at_an_angle_then_encoding_recovers_it(rotation_models, upright):
    rvae, _ = rotation_models
    with torch.no_grad():
        z = rvae.encode(upright).z_mean
        n = len(z)
        base = rvae.encode(rvae.decode(z, angle=torch.zeros(n))).pose.angle
        assert abs(float(np.degrees(np.median(base.numpy())))) < 15.0  # the canonical pose reads as about 0
        # the short-trained encoder reads a decoded turn of 40 degrees as 26-34 degrees (training seeds 0-2): the
        # right way round and most of the way, not exactly
        for a in (-40.0, 40.0):
            got = rvae.encode(rvae.decode(z, angle=torch.full((n,), math.radians(a)))).pose.angle
            moved = _median_turn_deg(got, base)
            assert 0.5 * abs(a) < moved * np.sign(a) < 1.25 * abs(a), (a, moved)


def test_warp_decoder_rvae_recovers_the_angle_too():
    train = av.data.rotated_mnist("train", n=6000, seed=0)
    test = av.data.rotated_mnist("test", n=1000, seed=1)
    torch.manual_seed(0)
    model = small(invariances=("rotation",), decoder="warp", hidden=(128,), encoder_hidden=(128,), channels=(16, 32))
    av.fit(model, train, SHORT)
    with torch.no_grad():
        angle = model.eval().encode(test.images).pose.angle.numpy()
    assert circular_correlation(angle, test.angle) > 0.75


def test_broadcast_decoder_rvae_recovers_the_angle_too():
    """The spatial-broadcast decoder trains an rVAE whose angles follow the true ones (measured 0.83 here,
    the spatial decoder 0.81 with the same budget; 0.870 on bench_rvae.py's protocol)."""
    train = av.data.rotated_mnist("train", n=3000, seed=0)
    test = av.data.rotated_mnist("test", n=1000, seed=1)
    torch.manual_seed(0)
    model = small(invariances=("rotation",), decoder="broadcast", hidden=(16, 16))
    av.fit(model, train, SHORT.replace(epochs=5))
    with torch.no_grad():
        angle = model.eval().encode(test.images).pose.angle.numpy()
    assert circular_correlation(angle, test.angle) > 0.75


def test_crvae_trains_and_separates_class_from_pose():
    train = av.data.rotated_mnist("train", n=3000, seed=0)
    test = av.data.rotated_mnist("test", n=500, seed=1)
    torch.manual_seed(0)
    model = av.build_model("crvae", latent_dim=2, num_classes=10, invariances=("rotation",), hidden=(32, 32),
                           encoder_hidden=(128,))
    av.fit(model, train, av.TrainConfig(epochs=6, batch_size=64, lr=3e-3, seed=0, **QUIET))
    model.eval()
    with torch.no_grad():
        enc = model.encode(test.images, test.labels)
        assert circular_correlation(enc.pose.angle.numpy(), test.angle) > 0.7
        # one content manifold per class: the same code drawn as a 1 and as a 0 differs in ink
        ones, zeros = model.decode(torch.zeros(1, 2), 1), model.decode(torch.zeros(1, 2), 0)
        assert float(ones.sum()) < 0.8 * float(zeros.sum())


# ---------------------------------------------------------------------------------------- proof: shift and zoom
@pytest.fixture(scope="module")
def shift_scale_model():
    """An rVAE with translation and scale latents, trained on digits shifted by up to 0.2 half-widths
    and zoomed by 0.8 to 1.25."""
    train = av.data.rotated_mnist("train", n=6000, seed=0, max_angle=0.0, max_shift=0.2, scale_range=(0.8, 1.25))
    torch.manual_seed(0)
    model = small(invariances=("translation", "scale"), encoder_hidden=(128,))
    av.fit(model, train, SHORT)
    return model.eval()


def test_shift_and_scale_latents_follow_the_true_shift_and_zoom(shift_scale_model):
    test = av.data.rotated_mnist("test", n=500, seed=1, max_angle=0.0, max_shift=0.2, scale_range=(0.8, 1.25))
    with torch.no_grad():
        pose = shift_scale_model.encode(test.images).pose
    shift, scale = pose.shift.numpy(), pose.scale.numpy()
    for axis in (0, 1):
        assert np.corrcoef(shift[:, axis], test.shift[:, axis])[0, 1] > 0.85
        assert 0.7 < np.polyfit(test.shift[:, axis], shift[:, axis], 1)[0] < 1.3  # same units: half widths
    # digits differ in size by themselves, so the zoom is read with more noise than the shift
    assert np.corrcoef(np.log(scale), np.log(test.scale))[0, 1] > 0.6


def test_known_shift_and_zoom_move_the_pose_by_as_much(shift_scale_model, upright):
    n = len(upright)
    step = torch.tensor([[0.15, -0.1]]).expand(n, 2)
    with torch.no_grad():
        p0 = shift_scale_model.encode(upright).pose
        p1 = shift_scale_model.encode(render(upright, Pose(shift=step))).pose
        p2 = shift_scale_model.encode(render(upright, Pose(scale=torch.full((n,), 1.2)))).pose
    moved = np.median((p1.shift - p0.shift).numpy(), 0)
    np.testing.assert_allclose(moved, [0.15, -0.1], atol=0.04)
    assert abs(float(np.median((p2.scale / p0.scale).numpy())) - 1.2) < 0.06


# ---------------------------------------------------------------------------------------- full circle: equivariant
def test_full_mode_defaults_to_the_equivariant_encoder():
    assert RVAEConfig(rotation_mode="full").encoder == "equivariant"
    assert RVAEConfig(rotation_mode="full", invariances=("rotation",)).encoder == "equivariant"
    # no rotation to infer: a new model refuses 'full' (the angle's prior), a saved config with it still loads;
    # the gaussian mode or an explicit choice: the flat encoders as before
    saved = RVAEConfig(rotation_mode="full", invariances=("translation",))
    assert saved.encoder == "mlp" and RVAE(saved).config == saved
    with pytest.raises(AffineVAEError, match="infer no rotation: add 'rotation' to the invariances"):
        saved.check_new()
    with pytest.raises(AffineVAEError, match="infer no rotation"):
        av.build_model("rvae", rotation_mode="full", invariances=("translation",))
    with pytest.raises(AffineVAEError, match="1-D signals take no rotation"):
        av.build_model("rvae", image_shape=(1, 1, 32), rotation_mode="full", invariances=("shift",))
    assert RVAEConfig().encoder == "mlp" and RVAEConfig(rotation_mode="full", encoder="conv").encoder == "conv"
    cfg = RVAEConfig(rotation_mode="full")
    assert cfg.mixture and cfg.group_order in (4, 8, 16) and cfg.rotation_sampler in ("gumbel", "enumerate")
    assert not RVAEConfig(rotation_mode="full", encoder="mlp").mixture
    # the resolved name is stored: a saved config rebuilds the same encoder
    assert RVAEConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["encoder"] == "equivariant"
    # the decoder follows the encoder: 'warp' (one canonical image warped to every bin) with the equivariant one
    assert cfg.decoder == "warp" and cfg.to_dict()["decoder"] == "warp" and cfg.group_downsample == "pool"
    assert RVAEConfig().decoder == "spatial" and RVAEConfig(rotation_mode="full", encoder="mlp").decoder == "spatial"
    assert RVAEConfig(rotation_mode="full", decoder="spatial").decoder == "spatial"


@pytest.mark.parametrize("options, match", [
    ({"group_order": 6}, r"group_order must be one of \[4, 8, 16\], got 6"),
    ({"rotation_sampler": "exact"}, "rotation_sampler must be one of"),
    ({"group_downsample": "avg"}, "group_downsample must be one of"),
    ({"group_channels": ()}, "group_channels must be one or more positive integers"),
    ({"group_channels": (8, 0)}, "group_channels must be one or more positive integers"),
    ({"image_shape": (1, 12, 16)}, "needs square images.*got 12x16: for objects turned over the full circle pad or crop the images square.*encoder 'mlp' or 'conv' take them"),
    ({"rotation_mode": "gaussian", "encoder": "equivariant"}, "encoder 'equivariant' needs rotation_mode 'full'"),
    ({"invariances": ("translation",), "encoder": "equivariant"}, "needs rotation_mode 'full' and the rotation"),
])
def test_bad_full_circle_options_raise_one_line(options, match):
    opts = {"rotation_mode": "full", **options}
    with pytest.raises(AffineVAEError, match=match) as info:
        av.build_model("rvae", **opts)
    assert "\n" not in str(info.value)


def full(**options):
    """A small full-circle rVAE with the equivariant encoder (options override)."""
    base = dict(latent_dim=2, hidden=(16, 16), encoder_hidden=(32,), group_channels=(4, 4), invariances=("rotation",),
                rotation_mode="full")
    return av.build_model("rvae", **{**base, **options})


def test_quarter_turn_of_the_input_turns_the_angle_and_keeps_the_content():
    torch.manual_seed(0)
    model = full(invariances=("rotation", "translation", "scale")).eval()
    x = torch.as_tensor(av.data.load_mnist("test", n=8).images)
    with torch.no_grad():
        a = model.encode(x)
        for q in (1, 2, 3):
            b = model.encode(torch.rot90(x, q, (2, 3)))
            torch.testing.assert_close(b.z_mean, a.z_mean, rtol=0, atol=1e-5)
            torch.testing.assert_close(b.z_std, a.z_std, rtol=0, atol=1e-5)
            assert wrap_angle(b.pose.angle - a.pose.angle - q * math.pi / 2).abs().max() < 1e-4
            torch.testing.assert_close(b.pose.scale, a.pose.scale, rtol=0, atol=1e-5)
            # the shift turns with the image (read in the canonical frame, turned by the angle)
            turned = (rotation_matrix(torch.full((8,), q * math.pi / 2)) @ a.pose.shift[:, :, None])[:, :, 0]
            torch.testing.assert_close(b.pose.shift, turned, rtol=0, atol=1e-5)
    # pose.angle is the posterior-mean angle of the mixture; pose_std.angle its circular spread
    torch.testing.assert_close(a.pose.angle, a.rotation.mean_angle())
    assert a.pose.angle.shape == a.pose_std.angle.shape == (8,) and (a.pose_std.angle > 0).all()
    assert a.rotation.logits.shape == (8, model.config.group_order)


@pytest.mark.parametrize("sampler", ["gumbel", "enumerate"])
def test_the_elbo_holds_the_exact_mixture_kl(sampler):
    from affinevae.models.base import gaussian_kl

    torch.manual_seed(0)
    model = full(rotation_sampler=sampler, group_order=4)
    x = torch.as_tensor(av.data.rotated_mnist("train", n=6, full_circle=True).images)
    out = model(x)
    enc = model.encode(x)
    expect = gaussian_kl(enc.z_mean, enc.z_logvar) + enc.rotation.kl()
    torch.testing.assert_close(out.kl, expect.mean())
    torch.testing.assert_close(out.elbo.mean(), -(out.recon + out.kl))
    assert out.x_params.shape == (6, 1, 28, 28) and out.pose.angle.shape == (6,)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.encoder.attention.weight.grad.abs().sum() > 0  # the bin logits learn from the reconstruction


@pytest.mark.parametrize("decoder", ["spatial", "warp", "broadcast"])
def test_enumeration_sums_the_bins_exactly(decoder):
    """The enumerated reconstruction term is sum_k q(k) * (-log p(x | angle_k)) with one shared z
    (the warp decoder renders the canonical image once and warps it per bin: the same numbers)."""
    torch.manual_seed(0)
    model = full(rotation_sampler="enumerate", group_order=4, decoder=decoder).eval()
    x = torch.as_tensor(av.data.rotated_mnist("train", n=3, full_circle=True).images)
    with torch.no_grad():
        torch.manual_seed(5)
        out = model(x)
        enc = model.encode(x)
        torch.manual_seed(5)
        z, _ = model.draw(enc, True, angle=False)
        angles, weights = enc.rotation.enumerate()
        recon = torch.stack([-model.likelihood.log_prob(model.decode_params(z, pose=Pose(angle=angles[:, k])), x,
                                                        model.log_sigma) for k in range(4)], 1)
    torch.testing.assert_close(out.recon, (weights * recon).sum(1).mean(), rtol=1e-5, atol=1e-4)


def test_full_circle_model_round_trips(tmp_path):
    torch.manual_seed(0)
    model = full(invariances=("rotation", "translation")).eval()
    model.save(tmp_path / "m")
    loaded = av.load(tmp_path / "m")
    assert loaded.config == model.config and loaded.config.encoder == "equivariant"
    same_outputs(model, loaded, torch.rand(4, 1, 28, 28))


@pytest.mark.parametrize("name, options, match", [
    ("vae", {"hidden": (True,)}, r"hidden must be positive integers, got \(True,\)"),
    ("vae", {"channels": (True, 8)}, "channels must be one or more positive integers"),
    ("vae", {"image_shape": (True, 28, 28)}, r"image_shape must be \(C, H, W\) positive integers"),
    ("rvae", {"encoder_hidden": (False, 8)}, "encoder_hidden must be positive integers"),
    ("jrvae", {"classifier_hidden": (True,)}, "classifier_hidden must be positive integers"),
    ("rvae", {"rotation_prior": 45.0}, r"rotation_prior is in radians and at most 2 pi, got 45.0 .degrees\? 45.0 degrees "
                                       r"is 0.7854 radians"),
    ("jrvae", {"jitter_angle": 10}, "jitter_angle is in radians and at most 2 pi"),
    ("vae", {"num_classes": 5}, r"num_classes applies to the families with classes .*not 'vae': it would be ignored"),
    ("avae", {"num_classes": 3}, r"not 'avae' around a vae: it would be ignored"),
])
def test_widths_that_are_booleans_and_angle_spreads_in_degrees_are_refused_in_one_line(name, options, match):
    """A review: True among widths passed the checks (isinstance(True, int)) and torch failed with a traceback
    (the CLI's --set hidden=[true]: exit 1); rotation_prior=45 (degrees) trained with a flat prior, where every
    other angle of the API over 2 pi is refused as degrees."""
    with pytest.raises(AffineVAEError, match=match) as info:
        av.build_model(name, **options)
    assert "\n" not in str(info.value)
    from affinevae.pose.amortise import HeadTrainConfig

    with pytest.raises(AffineVAEError, match="start_noise is in radians"):
        HeadTrainConfig(start_noise=30.0)
    assert av.build_model("rvae", rotation_prior=2 * math.pi).config.rotation_prior == 2 * math.pi
