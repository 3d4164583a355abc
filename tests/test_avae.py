"""Tests for the affine VAE: parameterisations, batched pose search, pose-optimised training,
the amortised start, save/load, the rotation sweep and the align/sweep commands."""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
import torch

import affinevae as av
from affinevae.cli import main
from affinevae.errors import AffineVAEError
from affinevae.models.avae import AVAE, AVAEConfig
from affinevae.pose import load_pose_record
from affinevae.nn.affine import Pose, affine_grid, compose_affine, identity_affine, pose_matrix, warp
from affinevae.nn.transforms import TRANSFORMS, get_transform
from affinevae.pose import HeadTrainConfig, SearchConfig, fit_pose_head, fit_pose_refiner, load_alignment
from affinevae.sweep import SweepConfig, load_sweep_csv, parse_angles, rotate_images, rotation_sweep
from affinevae.training import TrainConfig, fit


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The CPU is shared: one intra-op thread is much faster here than two contending ones."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def vae():
    """A small MLP VAE trained briefly on 3000 upright MNIST digits (a few seconds)."""
    torch.manual_seed(0)
    model = av.build_model("vae", latent_dim=8, encoder="mlp", decoder="mlp", hidden=[256])
    fit(model, av.data.load_mnist("train", n=3000), TrainConfig(epochs=8, batch_size=64, lr=2e-3, progress=False,
                                                                 checkpoint=False, val_split=0.0))
    return model.eval()


@pytest.fixture(scope="module")
def test_digits():
    return av.data.load_mnist("test", n=200)


@pytest.fixture(scope="module")
def vae_run(vae, tmp_path_factory):
    path = tmp_path_factory.mktemp("vae_run")
    vae.save(path)
    return path


def smooth_images(n=3, size=32, seed=0):
    """(n, 1, size, size) sums of broad Gaussian blobs near the centre, peak 1 (smooth: small interpolation error)."""
    g = torch.Generator().manual_seed(seed)
    c = (torch.arange(size) + 0.5) / size * 2 - 1
    vv, uu = torch.meshgrid(c, c, indexing="ij")
    out = torch.zeros(n, 1, size, size)
    for _ in range(3):
        mu = (torch.rand(n, 2, generator=g) - 0.5) * 0.6
        out[:, 0] += torch.exp(-((uu - mu[:, 0, None, None]) ** 2 + (vv - mu[:, 1, None, None]) ** 2) / (2 * 0.25**2))
    return out / out.amax((1, 2, 3), keepdim=True)


def circular_error_deg(a, b):
    return np.degrees(np.abs(np.angle(np.exp(1j * (np.asarray(a) - np.asarray(b))))))


# ---------------------------------------------------------------------- parameterisations
@pytest.mark.parametrize("name", TRANSFORMS.names())
def test_every_parameterisation_inverts_exactly_and_round_trips_images(name):
    t = get_transform(name)
    g = torch.Generator().manual_seed(1)
    cfg = SearchConfig(log_scale_range=(-0.2, 0.2), shear_range=(-0.2, 0.2), shift_range=(-0.1, 0.1))
    params = t.sample(3, 1, cfg.ranges(), g)[:, 0]
    # matrices: T^-1 T = identity, and identity params give the identity
    ident = compose_affine(t.matrix(params), t.inverse_matrix(params))
    torch.testing.assert_close(ident, identity_affine(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(t.matrix(t.identity(3)), identity_affine(3))
    # images: render(canonicalise(x)) = x inside the frame, up to interpolation error
    x = smooth_images()
    back = t.render(t.canonicalise(x, params), params)
    inner = (slice(None), slice(None), slice(8, 24), slice(8, 24))
    err = (back - x)[inner].abs().max()
    assert err < 0.03, f"{name}: round trip error {err:.3f}"
    # and the round trip differs from the identity only by interpolation, not by a wrong inverse
    wrong = t.render(t.canonicalise(x, params), -params)
    assert (wrong - x)[inner].abs().max() > 3 * err or name == "translation" and float(params.abs().max()) < 0.02


def test_parameters_build_the_documented_pose():
    t = get_transform("affine")
    p = torch.tensor([[0.3, math.log(1.2), math.log(0.9), 0.1, 0.05, -0.02]])
    t.to_pose(p)
    expected = pose_matrix(Pose(angle=torch.tensor([0.3]), scale=torch.tensor([[1.2, 0.9]]), shear=torch.tensor([0.1]),
                                shift=torch.tensor([[0.05, -0.02]])))
    torch.testing.assert_close(t.matrix(p), expected)
    assert t.angle(p).item() == pytest.approx(0.3)
    sim = get_transform("similarity").to_pose(torch.tensor([[0.5, 0.0, 0.1, 0.2]]))
    assert sim.scale.item() == pytest.approx(1.0) and sim.shift[0].tolist() == pytest.approx([0.1, 0.2])


def homogeneous(m):
    out = torch.zeros(m.shape[0], 3, 3)
    out[:, :2] = m
    out[:, 2, 2] = 1
    return out


def test_composition_matches_matrix_products_and_warps():
    t = get_transform("affine")
    g = torch.Generator().manual_seed(3)
    cfg = SearchConfig(log_scale_range=(-0.2, 0.2), shear_range=(-0.2, 0.2), shift_range=(-0.1, 0.1))
    a, b = t.sample(4, 2, cfg.ranges(), g).unbind(1)
    composed = t.compose(a, b)  # apply a, then b
    torch.testing.assert_close(homogeneous(composed), homogeneous(t.matrix(b)) @ homogeneous(t.matrix(a)), atol=1e-6, rtol=0)
    # warping twice samples through both matrices: warp(warp(x, A), B) = warp(x, A then-composed B)
    x = smooth_images(4)
    twice = warp(warp(x, t.matrix(a)), t.matrix(b))
    once = warp(x, compose_affine(t.matrix(b), t.matrix(a)))
    assert (twice - once)[:, :, 8:24, 8:24].abs().max() < 0.05
    # rotating the observed image composes a rotation onto the pose, exactly
    phi = torch.tensor([0.4, -1.0, 2.5, 3.0])
    rot = pose_matrix(Pose(angle=phi))
    for name in ("rotation", "similarity", "affine", "rotation-scale-shear"):
        tt = get_transform(name)
        p = tt.sample(4, 1, cfg.ranges(), g)[:, 0]
        torch.testing.assert_close(tt.matrix(tt.rotate(p, phi)), compose_affine(tt.matrix(p), rot), atol=1e-5, rtol=0)


def test_fast_affine_grid_equals_torchs_and_passes_gradients():
    # warp builds its grid with three broadcast products instead of F.affine_grid's batched
    # matrix product: the same pixel-centre convention (align_corners=False), any size
    g = torch.Generator().manual_seed(5)
    for n, h, w in [(6, 28, 28), (3, 13, 20), (2, 1, 5)]:
        theta = torch.randn(n, 2, 3, generator=g, dtype=torch.float64)
        ref = torch.nn.functional.affine_grid(theta, (n, 1, h, w), align_corners=False)
        torch.testing.assert_close(affine_grid(theta, h, w), ref, atol=1e-12, rtol=0)
    theta = torch.randn(2, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: affine_grid(t, 4, 5), (theta,))


def test_bad_options_and_shapes_raise_one_line_errors():
    with pytest.raises(AffineVAEError, match="unknown transform 'rotaton'.*did you mean 'rotation'"):
        get_transform("rotaton")
    with pytest.raises(AffineVAEError, match="keep must be an integer >= 1"):
        SearchConfig(keep=0)
    with pytest.raises(AffineVAEError, match="angle_range"):
        SearchConfig(angle_range=(1.0, -1.0))
    with pytest.raises(AffineVAEError, match="unknown option 'restart'"):
        SearchConfig.from_dict({"restart": 3})
    with pytest.raises(AffineVAEError, match="unknown option 'transfrom'"):
        AVAEConfig.from_dict({"transfrom": "affine"})
    with pytest.raises(AffineVAEError, match="needs shape"):
        get_transform("similarity").matrix(torch.zeros(3, 2))
    with pytest.raises(AffineVAEError, match="cannot wrap another avae"):
        AVAEConfig(inner="avae")
    for inner in ("ssvae", "ssregrvae"):  # their label terms would not run: refused, not trained without them
        with pytest.raises(AffineVAEError, match=f"avae cannot wrap '{inner}': a semi-supervised model's label terms"):
            AVAEConfig(inner=inner)
    with pytest.raises(AffineVAEError, match="labels are required"):
        AVAE(av.build_model("cvae", latent_dim=2, encoder="mlp", decoder="mlp", hidden=[16])).align(torch.rand(2, 1, 28, 28))


# ---------------------------------------------------------------------- the AVAE on a trained VAE
def test_avae_at_the_identity_is_the_inner_vae(vae, test_digits):
    avae = AVAE(vae)
    x = torch.as_tensor(test_digits.images[:50])
    plain = vae(x, sample=False).elbo
    at_zero = avae.forward_at(x, params=torch.zeros(50, 1), sample=False).elbo
    torch.testing.assert_close(at_zero, plain, atol=1e-2, rtol=1e-4)
    torch.testing.assert_close(avae.elbo_at(x, None, None, seed=3), avae.elbo_at(x, None, None, seed=3))


def rotated(images, deg):
    return torch.as_tensor(np.clip(av.data.transform_images(images, np.full(len(images), math.radians(deg))), 0, 1))


def test_avae_loss_barely_moves_with_rotation_while_the_vae_loss_climbs(vae, test_digits):
    avae = AVAE(vae)
    cfg = SearchConfig(restarts=16, keep=2, steps=8)
    loss = {}
    for deg in (0, 90):
        res = avae.align(rotated(test_digits.images, deg), config=cfg)
        loss[deg] = (-res.elbo_before.mean().item(), -res.elbo_after.mean().item())
    vae0, avae0 = loss[0]
    vae90, avae90 = loss[90]
    assert abs(avae90 - avae0) / avae0 < 0.03, loss
    assert (vae90 - vae0) / vae0 > 0.25, loss
    assert avae0 <= vae0 + 0.5  # the search never does worse than the identity it starts from


def test_found_angle_undoes_a_known_rotation(vae, test_digits):
    keep = ~np.isin(test_digits.labels, [0, 1, 8])  # symmetric digits have several good angles
    imgs = test_digits.images[keep][:100]
    true = np.random.default_rng(5).uniform(-math.pi, math.pi, len(imgs))
    x = torch.as_tensor(np.clip(av.data.transform_images(imgs, true), 0, 1))
    res = AVAE(vae).align(x, config=SearchConfig(restarts=16, keep=2, steps=8))
    err = circular_error_deg(res.angle.numpy(), true)
    assert np.median(err) < 15 and (err < 30).mean() > 0.75, np.sort(err)
    # the aligned images look like the upright originals
    up = torch.as_tensor(imgs)
    good = torch.as_tensor(err < 30)
    corr = torch.nn.functional.cosine_similarity(res.aligned[good].flatten(1), up[good].flatten(1)).mean()
    assert corr > 0.75
    assert (res.elbo_after > res.elbo_before).float().mean() > 0.9


def reference_search(model, x, starts, cfg):
    """Slow reference: one image, one candidate, one Adam at a time (the same algorithm)."""
    t = model.transform
    best_params, best_values = [], []
    for i in range(len(x)):
        xi = x[i:i + 1]
        with torch.no_grad():
            vals = [model.objective(xi, None, starts[i, r:r + 1]).item() for r in range(starts.shape[1])]
        chosen = np.argsort(vals, kind="stable")[:cfg.keep]
        bv, bp = math.inf, None
        for r in chosen:
            p = starts[i, r:r + 1].clone().requires_grad_(True)
            opt = torch.optim.Adam([p], lr=cfg.lr)
            cv, cp = vals[r], p.detach().clone()
            for _ in range(cfg.steps):
                loss = model.objective(xi, None, p)
                if loss.item() < cv:
                    cv, cp = loss.item(), p.detach().clone()
                (p.grad,) = torch.autograd.grad(loss.sum(), p)
                opt.step()
                with torch.no_grad():
                    p.copy_(t.project(p, cfg.ranges()))
            with torch.no_grad():
                final = model.objective(xi, None, p).item()
            if final < cv:
                cv, cp = final, p.detach().clone()
            if cv < bv:
                bv, bp = cv, cp
        best_params.append(bp[0])
        best_values.append(bv)
    return torch.stack(best_params), torch.tensor(best_values)


def test_batched_search_equals_a_slow_reference_loop(vae, test_digits):
    avae = AVAE(vae, transform="similarity", pose_head=False)
    x = rotated(test_digits.images[:4], 70)
    cfg = SearchConfig(restarts=6, keep=2, steps=5, lr=0.05, chunk=7)  # a chunk that splits candidates
    starts = avae.transform.sample(4, 6, cfg.ranges(), torch.Generator().manual_seed(0))
    found = avae.search(x, config=cfg, starts=starts)
    ref_p, ref_v = reference_search(avae, x, starts, cfg)
    torch.testing.assert_close(found.objective, ref_v, atol=2e-3, rtol=1e-5)
    torch.testing.assert_close(found.params, ref_p, atol=1e-3, rtol=0)
    assert found.start_objective.shape == (4, 6)
    assert torch.all(found.objective <= found.start_objective.min(1).values + 1e-4)


def test_align_results_do_not_depend_on_the_chunk(head_avae, head_test_digits):
    """--chunk bounds memory only: the poses, objectives and sampled ELBOs are the same for every chunk of at least
    SEARCH_BLOCK candidates (the search's passes are the same blocks; the posterior samples are drawn per block of
    NOISE_BLOCK images on derived seeds; multithreaded kernels round by the batch size, and a near tie between
    restarts turned on that: 0.058 rad apart with chunks of 256 and 333 on two threads, a conv VAE, 300 digits);
    and a new seed draws new samples."""
    from affinevae.models.avae import NOISE_BLOCK
    from affinevae.pose.search import SEARCH_BLOCK

    assert SEARCH_BLOCK >= NOISE_BLOCK
    avae, x = head_avae[0], head_test_digits[0][:150]
    base = dict(restarts=4, keep=1, steps=2, seed=3, elbo_samples=2)
    runs = [avae.align(x, config=SearchConfig(**base, chunk=c)) for c in (4096, SEARCH_BLOCK, 333, 1000)]
    for other in runs[1:]:
        for name in ("params", "objective", "elbo_before", "elbo_after", "aligned"):
            torch.testing.assert_close(getattr(other, name), getattr(runs[0], name), rtol=0, atol=1e-5,
                                       equal_nan=True, msg=name)
    reseeded = avae.align(x, config=SearchConfig(**{**base, "seed": 4}))
    assert not torch.allclose(reseeded.elbo_before, runs[0].elbo_before)


def test_the_angle_range_bounds_every_found_angle(head_avae, head_test_digits):
    """SearchConfig.angle_range (align --max-angle) keeps every angle in it: the random restarts, the pose head's
    start and the refinement; the full circle wraps instead."""
    avae, x = head_avae[0], head_test_digits[0][:40]  # turned over the full circle
    a = math.radians(10)
    head_only = avae.align(x, config=SearchConfig(restarts=1, steps=0, angle_range=(-a, a)))
    searched = avae.align(x, config=SearchConfig(restarts=4, steps=3, angle_range=(-a, a)))
    for found in (head_only, searched):
        assert float(found.angle.abs().max()) <= a + 1e-6
    free = avae.align(x, config=SearchConfig(restarts=1, steps=0))
    assert float(free.angle.abs().max()) > a  # the head alone puts most of them beyond 10 degrees


def test_an_avae_of_signals_is_refused():
    from affinevae.models.base import build_model

    with pytest.raises(AffineVAEError, match=r"image_shape \(1, 1, 96\) is of 1-D signals"):
        build_model("avae", image_shape=(1, 1, 96), latent_dim=2)


def test_single_start_without_refinement_skips_evaluation(vae, test_digits):
    avae = AVAE(vae, pose_head=False)
    x = torch.as_tensor(test_digits.images[:5])
    start = torch.full((5, 1, 1), 0.5)
    res = avae.search(x, config=SearchConfig(restarts=1, steps=0), starts=start)
    assert torch.all(res.params == 0.5) and torch.isnan(res.objective).all()


HEAD_SEED = 0
HEAD_DIGITS = [2, 3, 4, 5, 6, 7, 9]


@pytest.fixture(scope="module")
def head_avae(vae):
    """An AVAE around ``vae`` whose pose head was fitted on searched poses of 600 upright digits."""
    torch.manual_seed(HEAD_SEED)
    avae = AVAE(vae)  # the head starts untrained and is not used
    assert avae.predict_pose(torch.rand(2, 1, 28, 28)) is None
    train = av.data.load_mnist("train", n=600, digits=HEAD_DIGITS, seed=1)
    found = avae.align(train.images, config=SearchConfig(restarts=8, keep=1, steps=4))
    losses = fit_pose_head(avae, train.images, found.params, HeadTrainConfig(epochs=20, augment_rotation=True))
    return avae, losses


@pytest.fixture(scope="module")
def head_test_digits():
    """(300, 1, 28, 28) test digits turned by known random angles (radians, (300,))."""
    test = av.data.load_mnist("test", n=300, digits=HEAD_DIGITS)
    true = np.random.default_rng(2).uniform(-math.pi, math.pi, len(test))
    return torch.as_tensor(np.clip(av.data.transform_images(test.images, true), 0, 1)), true


HEAD_ONLY = SearchConfig(restarts=1, steps=0, include_identity=False)


def test_amortised_start_from_a_head_fitted_on_search_results(head_avae, head_test_digits):
    avae, losses = head_avae
    assert int(avae.head_trained) == 1 and avae.predict_pose(torch.rand(3, 1, 28, 28), 2).shape == (3, 2, 1)
    assert losses[-1] < 0.5 * losses[0]
    x, true = head_test_digits
    # the head alone (one start, no refinement, nothing evaluated) already recovers most angles
    fast = avae.align(x, config=HEAD_ONLY)
    err = circular_error_deg(fast.angle.numpy(), true)
    assert np.median(err) < 30, np.median(err)
    # at the same small budget (2 starts, 3 Adam steps) the head's start gets much closer to a full search's ELBO
    full = avae.align(x, config=SearchConfig(restarts=16, keep=2, steps=8, use_head=False))
    with_head = avae.align(x, config=SearchConfig(restarts=2, keep=1, steps=3))
    without = avae.align(x, config=SearchConfig(restarts=2, keep=1, steps=3, use_head=False))
    gap_head = (full.elbo_after - with_head.elbo_after).mean().item()
    gap_plain = (full.elbo_after - without.elbo_after).mean().item()
    assert gap_head < 0.5 * gap_plain, (gap_head, gap_plain)


def test_head_views_are_exactly_equivariant_to_quarter_turns_and_help(head_avae, head_test_digits):
    avae = head_avae[0]
    x, true = head_test_digits
    with torch.no_grad():
        one = avae.predict_pose(x, 1, views=1)
        four = avae.predict_pose(x, 3, views=4)
        turned = avae.predict_pose(torch.rot90(x, 1, dims=(2, 3)), 3, views=4)
        two = avae.predict_pose(x, 1, views=2)
        two_flipped = avae.predict_pose(torch.rot90(x, 2, dims=(2, 3)), 1, views=2)
    assert four.shape == (len(x), 3, 1) and two.shape == (len(x), 1, 1)
    # the consensus of the four views of a turned image is the consensus of the image, turned (exactly:
    # the views are the same images); rot90 turns by +90 degrees
    diff = np.degrees(np.angle(np.exp(1j * (turned[:, 0, 0] - four[:, 0, 0]).numpy())))
    np.testing.assert_allclose(diff, 90.0, atol=1e-3)
    diff2 = np.degrees(np.angle(np.exp(1j * (two_flipped[:, 0, 0] - two[:, 0, 0]).numpy())))
    np.testing.assert_allclose(np.abs(diff2), 180.0, atol=1e-3)
    # poses 2..k disagree with the consensus first (e.g. the flip)
    assert (np.cos((four[:, 1, 0] - four[:, 0, 0]).numpy()) <= math.cos(math.pi / 4) + 1e-6).mean() > 0.5
    # the consensus is the better start: closer to the true angle than a single view's
    err1 = circular_error_deg(one[:, 0, 0].numpy(), true)
    err4 = circular_error_deg(four[:, 0, 0].numpy(), true)
    assert np.mean(err4) < np.mean(err1), (np.mean(err4), np.mean(err1))
    views = avae.align(x, config=HEAD_ONLY.replace(head_views=4))
    np.testing.assert_allclose(views.params.numpy(), four[:, 0].numpy(), atol=1e-6)
    with pytest.raises(AffineVAEError, match="head_views must be 1, 2 or 4"):
        SearchConfig(head_views=3)
    with pytest.raises(AffineVAEError, match="4 needs square images"):
        avae.head.predict(torch.rand(2, 1, 28, 20), 1, views=4)


def test_head_trust_searches_only_the_images_whose_head_is_unsure(head_avae, head_test_digits):
    avae = head_avae[0]
    x, _ = head_test_digits
    with torch.no_grad():
        poses, conf = avae.predict_pose(x, 2, 4, confidence=True)
    assert conf.shape == (len(x),) and bool(((conf > 0) & (conf <= 1 + 1e-6)).all())
    unsure = conf < 0.9
    assert 0 < int(unsure.sum()) < len(x)  # the fixture's head is sure of some images only
    cfg = SearchConfig(restarts=6, keep=1, steps=3, head_starts=2, head_views=4, head_trust=0.9)
    res = avae.search(x, config=cfg)
    # sure images keep the consensus and were not evaluated; the unsure ones were searched from the same starts
    np.testing.assert_allclose(res.params[~unsure].numpy(), poses[~unsure, 0].numpy(), atol=1e-6)
    assert bool(res.objective[~unsure].isnan().all()) and not bool(res.objective[unsure].isnan().any())
    alone = avae.search(x[unsure], config=cfg.replace(head_trust=None), starts=res.starts[unsure])
    np.testing.assert_allclose(res.params[unsure].numpy(), alone.params.numpy(), atol=1e-6)
    # the ELBO lies between the head's alone and a search of every image
    elbo = {t: avae.align(x, config=cfg.replace(head_trust=t)).elbo_after.mean().item() for t in (0.0, 0.9, None)}
    assert elbo[0.0] < elbo[0.9] <= elbo[None] + 1e-4, elbo
    with pytest.raises(AffineVAEError, match="head_trust must be None or a number in"):
        SearchConfig(head_trust=1.5)


@pytest.mark.parametrize("views", [1, 4])
def test_head_trained_on_the_elbo_changes_only_the_head(head_avae, views):
    avae = copy.deepcopy(head_avae[0])
    inner = {k: v.clone() for k, v in avae.vae.state_dict().items()}
    head = {k: v.clone() for k, v in avae.head.state_dict().items()}
    train = av.data.load_mnist("train", n=300, digits=HEAD_DIGITS, seed=1)
    torch.manual_seed(HEAD_SEED)
    hist = fit_pose_head(avae, train.images, config=HeadTrainConfig(target="elbo", epochs=2, lr=1e-3,
                                                                     augment_rotation=True, views=views))
    assert len(hist) == 2 and all(50 < v < 400 for v in hist)  # nats/image at the head's own poses
    assert all(torch.equal(v, avae.vae.state_dict()[k]) for k, v in inner.items())  # the VAE is untouched
    assert any(not torch.equal(v, avae.head.state_dict()[k]) for k, v in head.items())
    assert all(p.requires_grad for p in avae.vae.parameters())  # and left trainable


def test_tuning_model_and_head_together_closes_the_gap_to_a_full_search(head_avae, head_test_digits):
    avae = copy.deepcopy(head_avae[0])
    x, _ = head_test_digits
    full = SearchConfig(restarts=16, keep=2, steps=8, use_head=False)

    def gap():
        return (avae.align(x, config=full).elbo_after - avae.align(x, config=HEAD_ONLY).elbo_after).mean().item()

    gap_before = gap()
    train = av.data.load_mnist("train", n=600, digits=HEAD_DIGITS, seed=1)
    rotations = np.random.default_rng(3).uniform(-math.pi, math.pi, len(train))
    images = np.clip(av.data.transform_images(train.images, rotations), 0, 1)
    torch.manual_seed(HEAD_SEED)
    hist = fit_pose_head(avae, images, config=HeadTrainConfig(target="elbo", tune_model=True, epochs=10, lr=1e-3))
    assert hist[-1] < hist[0] - 5  # the sampled -ELBO at the head's poses, nats/image
    original = head_avae[0].vae.state_dict()
    assert any(not torch.equal(v, original[k]) for k, v in avae.vae.state_dict().items())  # the VAE learned too
    gap_after = gap()
    assert gap_after < 0.85 * gap_before, (gap_before, gap_after)


def test_fit_pose_head_rejects_bad_arguments(head_avae):
    avae = head_avae[0]
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(AffineVAEError, match="target must be one of"):
        HeadTrainConfig(target="elb")
    with pytest.raises(AffineVAEError, match="tune_model needs target='elbo'"):
        HeadTrainConfig(tune_model=True)
    with pytest.raises(AffineVAEError, match="views must be 1, 2 or 4"):
        HeadTrainConfig(target="elbo", views=3)
    with pytest.raises(AffineVAEError, match="views > 1 needs target='elbo'"):
        HeadTrainConfig(views=4)
    with pytest.raises(AffineVAEError, match="needs the searched poses"):
        fit_pose_head(avae, x)
    with pytest.raises(AffineVAEError, match="give no params"):
        fit_pose_head(avae, x, torch.zeros(4, 1), HeadTrainConfig(target="elbo"))
    with pytest.raises(AffineVAEError, match="got 3 poses for 4 images"):
        fit_pose_head(avae, x, torch.zeros(3, 1))
    with pytest.raises(AffineVAEError, match="no pose head"):
        fit_pose_head(AVAE(avae.vae, pose_head=False), x, torch.zeros(4, 1))


def test_pose_refiner_corrects_the_angle_of_the_heads_pose(head_avae, head_test_digits, tmp_path):
    avae = copy.deepcopy(head_avae[0])
    x, true = head_test_digits
    head_only = HEAD_ONLY.replace(head_views=4)
    before = avae.align(x, config=head_only)
    assert avae.refiner is None and avae.refine_pose(x, before.params) is None
    state = {k: v.clone() for k, v in avae.state_dict().items()}
    train = av.data.load_mnist("train", n=600, digits=HEAD_DIGITS, seed=1)
    hist = fit_pose_refiner(avae, train.images, HeadTrainConfig(target="elbo", epochs=4, lr=1e-3,
                                                                augment_rotation=True, views=4))
    assert len(hist) == 4 and hist[-1] < hist[0]  # nats/image at the corrected poses
    assert all(torch.equal(v, avae.state_dict()[k]) for k, v in state.items())  # only the refiner learned
    assert avae.config.pose_refiner and int(avae.refiner_trained) == 1
    after = avae.align(x, config=head_only)
    # the correction is small (at most max_angle) and moves the head's pose towards the ELBO's optimum
    delta = np.angle(np.exp(1j * (after.angle - before.angle).numpy()))
    assert np.abs(delta).max() <= avae.refiner.max_angle + 1e-5 and np.abs(delta).mean() > math.radians(0.5)
    # on the digits it was fitted on, turned at random, the corrected poses score better (nats/image; the
    # fixture's 600 digits and 4 epochs do not carry it to unseen digits: there -0.2 to +0.6 over fixture seeds)
    seen = torch.as_tensor(np.clip(av.data.transform_images(
        train.images[:300], np.random.default_rng(3).uniform(-math.pi, math.pi, 300)), 0, 1))
    gain = (avae.align(seen, config=head_only).elbo_after
            - avae.align(seen, config=head_only.replace(use_refiner=False)).elbo_after).mean().item()
    assert gain > 0.3, gain
    # use_refiner=False is the head's pose as before; save/load keeps the refiner bit for bit
    off = avae.align(x, config=head_only.replace(use_refiner=False))
    torch.testing.assert_close(off.params, before.params)
    avae.save(tmp_path / "refined")
    again = av.load(tmp_path / "refined")
    assert torch.equal(again.align(x, config=head_only).params, after.params)


def test_fit_pose_refiner_rejects_bad_arguments(head_avae, vae):
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(AffineVAEError, match="needs a trained pose head"):
        fit_pose_refiner(AVAE(vae), x)
    with pytest.raises(AffineVAEError, match="target='elbo' without tune_model"):
        fit_pose_refiner(head_avae[0], x, HeadTrainConfig(target="search"))
    with pytest.raises(AffineVAEError, match="transform 'translation' has none"):
        AVAE(vae, transform="translation").add_refiner()
    with pytest.raises(AffineVAEError, match="pose_refiner corrects the angle"):
        AVAEConfig(transform="translation", pose_refiner=True)
    with pytest.raises(AffineVAEError, match="start_noise"):
        HeadTrainConfig(start_noise=-1.0)


# ---------------------------------------------------------------------- training, saving, loading
def test_pose_optimised_training_runs_and_records_angles(tmp_path):
    data = av.data.rotated_mnist("train", n=240, full_circle=True)
    torch.manual_seed(0)
    model = av.build_model("avae", latent_dim=4, encoder="mlp", decoder="mlp", hidden=[64],
                           train_search={"restarts": 4, "keep": 1, "steps": 1}, search={"restarts": 4, "steps": 1})
    result = fit(model, data, TrainConfig(epochs=2, batch_size=60, progress=False), out=tmp_path / "run")
    assert [h["pose_images"] for h in result.history] == [216, 216]
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in result.history)
    rec = load_pose_record(tmp_path / "run")
    # columns are the images' positions in `data`; the 24 held out for validation stay NaN
    n = rec.angle.shape[1]
    assert rec.angle.shape == (2, n) and 216 <= n <= 240 and rec.epochs.tolist() == [1, 2]
    seen = np.isfinite(rec.angle[-1])
    assert seen.sum() == 216 and np.abs(rec.angle[:, seen]).max() <= math.pi
    assert rec.angle[:, seen].std() > 0.3  # the search moved poses away from the identity
    assert rec.labels is not None
    np.testing.assert_array_equal(rec.labels[seen], data.labels[:n][seen])  # recorded where they are in `data`
    assert (rec.labels[~seen] == -1).all()
    counts, edges = rec.histograms(bins=12)
    assert counts.shape == (2, 10, 12) and counts.sum() == 2 * 216 and len(edges) == 13
    enc, _ = rec.histograms(bins=12, true_angle=data.angle)  # encoded orientations: same images, other angles
    assert enc.sum() == 2 * 216
    with pytest.raises(AffineVAEError, match="true_angle has 3 angles"):
        rec.histograms(true_angle=data.angle[:3])
    assert int(model.head_trained) == 1
    # the recorded angles are the found poses of those images
    assert rec.params.shape == (n, 1)
    np.testing.assert_allclose(rec.angle[-1][seen], rec.params[seen, 0], atol=1e-6)


def test_resumed_training_keeps_the_pose_record(tmp_path):
    data = av.data.rotated_mnist("train", n=100, full_circle=True)
    opts = dict(latent_dim=2, encoder="mlp", decoder="mlp", hidden=[32], train_search={"restarts": 2, "steps": 0})
    torch.manual_seed(0)
    fit(av.build_model("avae", **opts), data, TrainConfig(epochs=1, batch_size=50, progress=False, val_split=0.0),
        out=tmp_path / "run")
    torch.manual_seed(0)
    fit(av.build_model("avae", **opts), data, TrainConfig(epochs=2, batch_size=50, progress=False, val_split=0.0),
        out=tmp_path / "run", resume=True)
    rec = load_pose_record(tmp_path / "run")
    assert rec.epochs.tolist() == [1, 2] and rec.angle.shape == (2, 100) and np.isfinite(rec.angle).all()


def test_eval_forward_searches_reproducibly_and_reports_the_pose(vae, test_digits):
    avae = AVAE(vae, search=SearchConfig(restarts=4, keep=1, steps=1), config=AVAEConfig(interpolation="bicubic")).eval()
    x = rotated(test_digits.images[:8], 90)
    a, b = avae(x), avae(x)
    torch.testing.assert_close(a.pose.angle, b.pose.angle)
    assert a.x_params.shape == (8, 1, 28, 28) and a.elbo.shape == (8,)
    enc = avae.encode(x)
    assert enc.z_mean.shape == (8, 8) and enc.pose.angle.shape == (8,)
    with pytest.raises(AffineVAEError, match="interpolation must be one of"):
        AVAEConfig(interpolation="nearest")


def test_training_without_pose_optimisation_uses_the_identity():
    data = av.data.load_mnist("train", n=64)
    model = AVAE(av.build_model("vae", latent_dim=2, encoder="mlp", decoder="mlp", hidden=[32]), pose_optimise=False)
    fit(model, data, TrainConfig(epochs=1, batch_size=64, progress=False, val_split=0.0))
    assert model.pose_record() is None and int(model.head_trained) == 0


def test_save_and_load_round_trip(tmp_path, test_digits):
    inner = av.build_model("cvae", latent_dim=3, encoder="mlp", decoder="mlp", hidden=[32])
    model = AVAE(inner, transform="similarity", search=SearchConfig(restarts=5, keep=1, steps=2))
    model.save(tmp_path / "m")
    loaded = av.load(tmp_path / "m")
    assert isinstance(loaded, AVAE) and loaded.config == model.config and loaded.config.inner == "cvae"
    assert loaded.config.search.restarts == 5 and loaded.transform.name == "similarity"
    assert set(loaded.state_dict()) == set(model.state_dict()) and any(k.startswith("vae.") for k in loaded.state_dict())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    x, y = test_digits.images[:6], test_digits.labels[:6]
    a, b = model.align(x, y), loaded.align(x, y)
    torch.testing.assert_close(a.params, b.params)
    torch.testing.assert_close(a.elbo_after, b.elbo_after)
    # flat options route into the inner config; build_model builds the same thing
    built = av.build_model("avae", inner="cvae", latent_dim=3, encoder="mlp", decoder="mlp", hidden=[32],
                           transform="similarity")
    assert built.config.inner_config == model.config.inner_config


# ---------------------------------------------------------------------- sweep
def test_rotation_sweep_table_and_csv(vae, test_digits, tmp_path):
    models = {"vae": vae, "avae": AVAE(vae, pose_head=False)}
    cfg = SweepConfig(search=SearchConfig(restarts=8, keep=1, steps=3))
    res = rotation_sweep(models, test_digits.images[:60], None, angles=np.radians([0, 90, 180]), config=cfg)
    assert res.neg_elbo.shape == (2, 3) and res.names == ["vae", "avae"]
    assert res.angles_deg.tolist() == [0.0, 90.0, 180.0]  # radians in, degrees on the result (table, CSV, plot)
    np.testing.assert_allclose(res.angles, [0, np.pi / 2, np.pi])
    assert res.column("vae")[1] > 1.2 * res.column("vae")[0]
    assert np.all(np.abs(res.relative()[1] - 1) < 0.05)
    res.to_csv(tmp_path / "s.csv")
    back = load_sweep_csv(tmp_path / "s.csv")
    assert back.names == res.names and np.allclose(back.neg_elbo, res.neg_elbo, atol=1e-3)


@pytest.fixture(scope="module")
def binary_vae():
    """The `vae` fixture's recipe on binarized upright digits (pixels > 0.5 become 1, the others 0)."""
    torch.manual_seed(0)
    model = av.build_model("vae", latent_dim=8, encoder="mlp", decoder="mlp", hidden=[256])
    fit(model, av.data.load_mnist("train", n=3000).binarized(0.5),
        TrainConfig(epochs=8, batch_size=64, lr=2e-3, progress=False, checkpoint=False, val_split=0.0))
    return model.eval()


def test_off_grid_rise_is_resampling_blur_which_binarizing_removes(binary_vae, test_digits):
    """Grey digits turned by 30 or 120 degrees are resampled (greyer strokes: more entropy), so even the AVAE's
    loss rises there but not at 90 or 180 degrees; thresholded after turning, it stays flat at every angle."""
    models = {"vae": binary_vae, "avae": AVAE(binary_vae, pose_head=False)}
    angles = np.radians([0, 30, 90, 120, 180])
    search = SearchConfig(restarts=16, keep=2, steps=10)
    flat = rotation_sweep(models, test_digits.images[:100], None, angles=angles,
                          config=SweepConfig(search=search, binarize=0.5))
    grey = rotation_sweep(models, test_digits.images[:100], None, angles=angles, config=SweepConfig(search=search))
    assert np.all(np.abs(flat.relative()[1] - 1) < 0.03)  # the AVAE: within 3 % of 0 degrees everywhere
    assert flat.relative()[0].max() > 1.3  # while the plain VAE's loss climbs
    off_grid, on_grid = grey.relative()[1][[1, 3]], grey.relative()[1][[2, 4]]
    assert np.all(off_grid > 1.04) and np.all(np.abs(on_grid - 1) < 0.02)
    with pytest.raises(AffineVAEError, match="strictly between 0 and 1"):
        SweepConfig(binarize=1.5)


def test_sweep_shows_its_progress_on_a_terminal_only(vae, test_digits, monkeypatch):
    """SweepConfig(progress=True) (the sweep command's default) draws a bar over the (angle, model) passes on a
    terminal, nothing elsewhere, and changes no number."""
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    angles = np.radians([0, 90, 180])
    quiet = rotation_sweep({"vae": vae}, test_digits.images[:20], None, angles=angles)
    for progress, shown in ((True, True), (False, False)):
        term = Terminal()
        monkeypatch.setattr(sys, "stderr", term)
        got = rotation_sweep({"vae": vae}, test_digits.images[:20], None, angles=angles,
                             config=SweepConfig(progress=progress))
        monkeypatch.undo()
        assert ("sweep:" in term.getvalue() and "/3 [" in term.getvalue()) == shown, term.getvalue()
        np.testing.assert_array_equal(got.neg_elbo, quiet.neg_elbo)
    with pytest.raises(AffineVAEError, match="progress must be true or false"):
        SweepConfig(progress="yes")


def test_nearest_rotation_keeps_the_pixel_values_and_their_entropy(test_digits):
    x = torch.as_tensor(test_digits.images[:50])
    x = x[:, None] if x.dim() == 3 else x

    def entropy(im):  # mean Bernoulli entropy of the grey pixels, nats/image
        p = im.clamp(1e-6, 1 - 1e-6)
        return float(-(p * p.log() + (1 - p) * (1 - p).log()).sum((1, 2, 3)).mean())

    near, blur = rotate_images(x, math.radians(30), "nearest"), rotate_images(x, math.radians(30))
    assert np.isin(near.numpy(), x.numpy()).all()  # every pixel copies a source pixel
    assert abs(entropy(near) - entropy(x)) < 0.05 * entropy(x) < entropy(blur) - entropy(x)
    torch.testing.assert_close(rotate_images(x, math.pi / 2, "nearest"), torch.rot90(x, 1, dims=(2, 3)))
    with pytest.raises(AffineVAEError, match="interpolation"):
        SweepConfig(interpolation="lanczos")


def test_sweep_takes_radians_and_refuses_the_former_degree_arguments():
    """rotation_sweep and rotate_images take radians; their former degree arguments (the keywords
    angles_deg / angle_deg, angles or config by position) are refused in one line naming the new form."""
    model = av.build_model("vae", image_shape=[1, 12, 12], latent_dim=2, encoder="mlp", decoder="mlp", hidden=[16])
    x = torch.rand(4, 1, 12, 12)
    res = rotation_sweep({"vae": model}, x, angles=np.radians([0, 30, 90]))
    assert res.angles_deg.tolist() == [0.0, 30.0, 90.0] and res.neg_elbo.shape == (1, 3)
    assert rotation_sweep({"vae": model}, x).angles_deg.tolist() == list(range(0, 360, 30))  # default: every 30 degrees
    # a quarter turn in radians is a quarter turn (90 would be 90 radians: about 116.6 degrees)
    torch.testing.assert_close(rotate_images(x, np.pi / 2, "nearest"), torch.rot90(x, 1, dims=(2, 3)))
    # one full turn (either way) is the largest angle taken: it gives the images back
    torch.testing.assert_close(rotate_images(x, -2 * np.pi, "nearest"), x)
    for call, match in [
        (lambda: rotation_sweep({"vae": model}, x, angles_deg=[0, 90]),
         r"^rotation_sweep: angles_deg \(degrees\) is now angles, in radians \(e\.g\. angles=np\.radians\("),
        (lambda: rotation_sweep({"vae": model}, x, None, [0, 90]),
         r"^rotation_sweep: angles and config are keyword-only, angles in radians"),
        (lambda: rotation_sweep({"vae": model}, x, angles=["a"]), r"^rotation_sweep: angles must be numbers \(radians\)"),
        (lambda: rotation_sweep({"vae": model}, x, angles=[np.nan]), r"^rotation_sweep: angles must be one or more finite numbers \(radians\)"),
        (lambda: rotate_images(x, angle_deg=90), r"^rotate_images: angle_deg \(degrees\) is now angle, in radians"),
        (lambda: rotate_images(x, np.inf), r"^rotate_images: angle must be finite \(radians\)"),
        # degrees given where radians are taken (by position, as before): more than a full turn, refused
        (lambda: rotate_images(x, -30), r"^rotate_images: an angle of -30 is more than a full turn in radians "
                                        r"\(2 pi = 6\.283\); angle is taken in radians \(degrees\? use np\.radians\)$"),
        (lambda: rotation_sweep({"vae": model}, x, angles=[0, 30, 90]),
         r"^rotation_sweep: an angle of 90 is more than a full turn in radians"),
    ]:
        with pytest.raises(AffineVAEError, match=match) as info:
            call()
        assert "\n" not in str(info.value)
    with pytest.raises(TypeError, match="unexpected keyword argument 'angels'"):  # any other keyword: as Python says
        rotation_sweep({"vae": model}, x, angels=[0.0])


def test_parse_angles():
    assert parse_angles("0:360:90").tolist() == [0, 90, 180, 270]
    assert parse_angles("0:100:30").tolist() == [0, 30, 60, 90]
    assert parse_angles("10,20").tolist() == [10, 20]
    assert parse_angles("-360:361:360").tolist() == [-360, 0, 360]  # one full turn either way
    for bad, msg in [("0:360", "start:stop:step"), ("0:x:10", "numbers"), ("0:360:0", "step must be > 0"),
                     ("90:0:10", "stop must be greater"), ("0:1e9:0.001", "too many"), ("a,b", "comma-separated"),
                     ("0:720:90", "within -360..360 degrees .one full turn., got 630"), ("-400,0", "got -400")]:
        with pytest.raises(AffineVAEError, match=msg):
            parse_angles(bad)


# ---------------------------------------------------------------------- CLI
def test_cli_sweep_binarize(vae_run, tmp_path, capsys):
    out = tmp_path / "b.csv"
    assert main(["sweep", str(vae_run), "--angles", "0,45", "-n", "10", "--binarize", "--restarts", "4",
                 "--steps", "1", "--out", str(out)]) == 0
    assert load_sweep_csv(out).neg_elbo.shape == (2, 2)
    assert main(["sweep", str(vae_run), "--angles", "0,45", "-n", "10", "--binarize", "2", "--out", str(out),
                 "--force"]) == 2  # (without --force the existing b.csv is refused first)
    err = capsys.readouterr().err
    assert "binarize threshold must lie strictly between 0 and 1" in err and len(err.strip().splitlines()) == 1


def test_cli_align_writes_the_documented_arrays(vae_run, tmp_path, capsys):
    out = tmp_path / "aligned.npz"
    rc = main(["align", str(vae_run), "--data", "rotated-mnist", "-n", "20", "--out", str(out),
               "--restarts", "6", "--steps", "2"])
    assert rc == 0
    arrays = load_alignment(out)
    assert {"params", "angle", "elbo_before", "elbo_after", "aligned"} <= set(arrays)
    assert arrays["params"].shape == (20, 1) and arrays["angle"].shape == (20,)
    assert arrays["aligned"].shape == (20, 1, 28, 28)
    assert np.all(np.abs(arrays["angle"]) <= math.pi)
    assert arrays["elbo_after"].mean() > arrays["elbo_before"].mean()
    # the deterministic objective at the identity start, which the search can only lower
    before, after = arrays["objective_before"], arrays["objective"]
    assert before.shape == (20,) and np.isfinite(before).all()
    assert np.all(after <= before + 1e-4) and after.mean() < before.mean()
    out_text = capsys.readouterr().out
    assert "aligned 20 images" in out_text and "(1 posterior sample)" in out_text
    assert f"search objective (-ELBO at the posterior mean) {before.mean():.2f} -> {after.mean():.2f}" in out_text


def test_align_objective_before_is_the_objective_in_the_observed_pose(vae, test_digits):
    x = torch.as_tensor(test_digits.images[:12])
    model = AVAE(vae)
    res = model.align(x, config=SearchConfig(restarts=4, keep=1, steps=2))
    with torch.no_grad():
        at_identity = model.objective(model.check_input(x, None)[0], None, model.transform.identity(len(x)))
    torch.testing.assert_close(res.objective_before, at_identity, rtol=1e-5, atol=1e-3)
    # without an identity start nothing is known in the observed pose: NaN, and the summary leaves it out
    res = model.align(x, config=SearchConfig(restarts=4, keep=1, steps=2, include_identity=False))
    assert torch.isnan(res.objective_before).all() and "search objective" not in res.summary(1)


def test_cli_align_bad_path_exits_2_with_one_line(tmp_path, capsys):
    rc = main(["align", str(tmp_path / "missing"), "--data", "mnist", "--out", str(tmp_path / "a.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "missing" in err and err.startswith("affinevae: error:")
    assert not (tmp_path / "a.npz").exists()


def test_cli_align_bad_search_option_exits_2(vae_run, tmp_path, capsys):
    rc = main(["align", str(vae_run), "--data", "mnist", "-n", "4", "--out", str(tmp_path / "a.npz"), "--keep", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "keep" in err


def test_cli_amortise_trains_a_head_that_align_then_starts_from(vae_run, tmp_path, capsys):
    out = tmp_path / "fast"
    rc = main(["amortise", str(vae_run), "--data", "rotated-mnist", "-n", "64", "--epochs", "2", "--tune-model",
               "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0 and "trained the pose head on 64 images (elbo, VAE tuned, 2 epochs)" in printed
    assert re.search(r"nats/image at the head's poses \d+\.\d\d \(epoch 1\) -> \d+\.\d\d \(epoch 2\); wrote", printed)
    model = av.load(out)
    assert isinstance(model, AVAE) and int(model.head_trained) == 1
    x = torch.as_tensor(av.data.load_dataset("rotated-mnist", split="test", n=8, seed=0).images)  # as the CLI loads it
    assert model.predict_pose(x).shape == (8, 1, 1)
    # the saved head is the start of a one-start, no-refinement align: the found pose is exactly its prediction
    rc = main(["align", str(out), "--data", "rotated-mnist", "-n", "8", "--out", str(tmp_path / "a.npz"),
               "--restarts", "1", "--steps", "0"])
    assert rc == 0
    found = load_alignment(tmp_path / "a.npz")
    np.testing.assert_allclose(found["params"], model.predict_pose(x)[:, 0].detach().numpy(), atol=1e-5)
    # searched targets work too; --out may not overwrite the run
    rc = main(["amortise", str(vae_run), "--data", "mnist", "-n", "32", "--epochs", "1", "--target", "search",
               "--out", str(tmp_path / "fast2")])
    assert rc == 0 and int(av.load(tmp_path / "fast2").head_trained) == 1
    # a head trained for its 4-view consensus: the written model's align starts from that consensus
    rc = main(["amortise", str(out), "--data", "mnist", "-n", "32", "--epochs", "1", "--augment-rotation",
               "--views", "4", "--tune-model", "--out", str(tmp_path / "fast4")])
    model4 = av.load(tmp_path / "fast4")
    assert rc == 0 and model4.config.search.head_views == 4
    assert any(not torch.equal(v, model.vae.state_dict()[k]) for k, v in model4.vae.state_dict().items())
    rc = main(["align", str(tmp_path / "fast4"), "--data", "rotated-mnist", "-n", "8", "--out", str(tmp_path / "b.npz"),
               "--restarts", "1", "--steps", "0"])
    assert rc == 0
    np.testing.assert_allclose(load_alignment(tmp_path / "b.npz")["params"],
                               model4.predict_pose(x, 1, 4)[:, 0].detach().numpy(), atol=1e-5)
    capsys.readouterr()
    rc = main(["align", str(tmp_path / "fast4"), "--data", "rotated-mnist", "-n", "8", "--out", str(tmp_path / "c.npz"),
               "--restarts", "1", "--steps", "0", "--head-views", "1", "--no-before"])
    single = load_alignment(tmp_path / "c.npz")
    np.testing.assert_allclose(single["params"], model4.predict_pose(x, 1, 1)[:, 0].detach().numpy(), atol=1e-5)
    assert np.isnan(single["elbo_before"]).all() and np.isfinite(single["elbo_after"]).all()
    assert "->" not in capsys.readouterr().out
    # a refiner on top of that head: align corrects the consensus, --no-refiner leaves it as it was
    rc = main(["amortise", str(tmp_path / "fast4"), "--data", "mnist", "-n", "32", "--epochs", "1", "--augment-rotation",
               "--views", "4", "--refiner", "--out", str(tmp_path / "fast4r")])
    printed = capsys.readouterr().out
    assert rc == 0 and re.search(r"trained the pose refiner on 32 images \(1 epoch\): nats/image at the corrected "
                                 r"poses \d+\.\d\d; wrote", printed), printed  # one epoch: one value, no arrow
    refined = av.load(tmp_path / "fast4r")
    assert int(refined.refiner_trained) == 1 and refined.config.search.head_views == 4
    for flag, name in ((["--no-refiner"], "d.npz"), ([], "e.npz")):
        rc = main(["align", str(tmp_path / "fast4r"), "--data", "rotated-mnist", "-n", "8", "--out", str(tmp_path / name),
                   "--restarts", "1", "--steps", "0", *flag])
        assert rc == 0
    np.testing.assert_allclose(load_alignment(tmp_path / "d.npz")["params"], load_alignment(tmp_path / "b.npz")["params"],
                               atol=1e-5)
    xc = refined.check_input(x)[0]
    with torch.no_grad():
        expect = refined.refine_pose(xc, refined.predict_pose(xc, 1, 4)[:, 0])
    np.testing.assert_allclose(load_alignment(tmp_path / "e.npz")["params"], expect.numpy(), atol=1e-5)
    capsys.readouterr()
    rc = main(["amortise", str(tmp_path / "fast4"), "--data", "mnist", "-n", "8", "--refiner", "--tune-model",
               "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--refiner learns from the ELBO alone" in err
    rc = main(["amortise", str(out), "--data", "mnist", "-n", "8", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--out must differ" in err


def test_cli_sweep_writes_csv_columns_and_png(vae_run, tmp_path, capsys):
    out = tmp_path / "sweep.csv"
    rc = main(["sweep", str(vae_run), "--angles", "0:360:120", "-n", "20", "--out", str(out),
               "--restarts", "4", "--steps", "1"])
    assert rc == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "angle_deg,vae,avae" and [ln.split(",")[0] for ln in lines[1:]] == ["0", "120", "240"]
    assert (tmp_path / "sweep.png").stat().st_size > 1000
    rc = main(["sweep", str(vae_run), "--model-b", str(vae_run), "--angles", "0", "-n", "5",
               "--out", str(tmp_path / "two.csv"), "--restarts", "2", "--steps", "0"])
    assert rc == 0
    assert (tmp_path / "two.csv").read_text().splitlines()[0] == "angle_deg,a:vae,a:avae,b:vae,b:avae"
    rc = main(["sweep", str(vae_run), "--angles", "0:360:-5", "--out", str(out)])
    assert rc == 2 and "step must be > 0" in capsys.readouterr().err


def test_an_avae_renders_the_classes_of_a_joint_model_it_wraps():
    """decode/sample take the class to render wherever the inner model does: a joint model's (as before the
    label refusal), not a plain VAE's, whose refusal names the models that take one."""
    torch.manual_seed(0)
    y = torch.tensor([0, 1, 2, 0])
    joint = av.build_model("jrvae", image_shape=(1, 16, 16), latent_dim=2, num_classes=3).eval()
    wrapped = AVAE(joint, pose_head=False).eval()
    with torch.no_grad():
        z = torch.zeros(4, 2)
        torch.testing.assert_close(wrapped.decode(z, y), joint.decode(z, y))
        assert wrapped.sample(4, y=y, generator=torch.Generator().manual_seed(0)).shape == (4, 1, 16, 16)
    assert not wrapped.takes_labels and wrapped.renders_classes and joint.renders_classes
    with pytest.raises(AffineVAEError, match=r"^encode: model 'avae' takes no class labels"):
        wrapped.encode(torch.rand(4, 1, 16, 16), y)  # inference takes none: the joint model infers its classes
    plain = AVAE(av.build_model("vae", image_shape=(1, 16, 16), latent_dim=2), pose_head=False).eval()
    assert not plain.renders_classes
    with pytest.raises(AffineVAEError, match=r"^decode: model 'avae' takes no class labels, but y was given \(leave y "
                                              r"out; only cvae/crvae, the semi-supervised and the joint models take a "
                                              r"class to render\)$"):
        plain.decode(torch.zeros(4, 2), y)
    for where in ("align", "search"):  # the pose search took labels and dropped them silently
        with pytest.raises(AffineVAEError, match=rf"^{where}: model 'avae' takes no class labels"):
            getattr(plain, where)(torch.rand(4, 1, 16, 16), y)
    assert plain.align(torch.rand(4, 1, 16, 16)).angle.shape == (4,)


def test_an_avae_trains_its_inner_joint_model_with_the_joint_models_own_terms_and_start():
    """An AVAE around a jrVAE takes the inner model's named inference terms ('class_consistency',
    'equivariance') in its weight steps and its k-means start of the classifier (they were left out);
    the search's scoring passes take no training term and count no training step, even with
    gradient refinement (the jrVAE's step counter drives its schedules)."""
    from affinevae.pose.search import SearchConfig

    x = torch.rand(24, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    joint = av.build_model("jrvae", image_shape=(1, 16, 16), latent_dim=2, num_classes=3, class_consistency=1.0,
                           class_init_epochs=1, seed=0, hidden=(16, 16), encoder_hidden=(32,), classifier_hidden=(32,))
    wrapped = AVAE(joint, pose_head=False, train_search=SearchConfig(restarts=2, steps=2)).train()
    out = wrapped(x)
    assert {"class_consistency", "equivariance", "discrete_kl_correction"} <= set(out.terms)
    assert int(joint.train_steps) == 1  # one weight step, however many scoring passes the search made
    assert not joint._search_pass and not wrapped._search_pass  # the search's state is given back
    with torch.enable_grad():
        params = torch.zeros(24, 1, requires_grad=True)
        value = wrapped.objective(x, None, params)
        (grad,) = torch.autograd.grad(value.sum(), params)  # the pose still gets its gradient
    assert torch.isfinite(grad).all() and int(joint.train_steps) == 1
    # a model trained from its first step gets the inner model's k-means start (after class_init_epochs)
    joint = av.build_model("jrvae", image_shape=(1, 16, 16), latent_dim=2, num_classes=3, class_consistency=1.0,
                           class_init_epochs=1, seed=0, hidden=(16, 16), encoder_hidden=(32,), classifier_hidden=(32,))
    wrapped = AVAE(joint, pose_head=False, train_search=SearchConfig(restarts=2, steps=0))
    fitted = av.fit(wrapped, x, av.TrainConfig(epochs=2, batch_size=12, val_split=0.0, progress=False,
                                               checkpoint=False))
    assert [r.get("class_kmeans_start") for r in fitted.history] == [None, 1.0]
    assert all("train_class_consistency" in r for r in fitted.history)


def test_cli_avae_follows_its_inner_familys_label_rules(tmp_path, capsys):
    """`train --model avae` on unlabelled images trains (it refused them: the class-level
    `conditional` property read as true); labelled data do not give a plain inner VAE classes; an
    AVAE around a cvae needs labels."""
    from affinevae.models.cvae import CVAE
    from affinevae.models.vae import VAE

    assert AVAE.labelled_as({}) is VAE and AVAE.labelled_as({"inner": "cvae"}) is CVAE
    with pytest.raises(AffineVAEError, match="inner must be a model family name other than 'avae'"):
        AVAE.labelled_as({"inner": "avae"})
    np.save(tmp_path / "digits.npy", av.data.load_mnist("train", n=40).images)
    tiny = ["--latent-dim", "2", "--encoder", "mlp", "--decoder", "mlp", "--hidden", "16", "--epochs", "1",
            "--no-progress", "--set", "pose_head=false"]
    assert main(["train", "--model", "avae", "--data", str(tmp_path / "digits.npy"), *tiny,
                 "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--model", "avae", "--data", "mnist", "-n", "40", *tiny, "--out", str(tmp_path / "b")]) == 0
    assert av.load(tmp_path / "b").vae.config.num_classes == 0
    capsys.readouterr()
    assert main(["train", "--model", "avae", "--data", str(tmp_path / "digits.npy"), *tiny, "--set", "inner=cvae",
                 "--out", str(tmp_path / "c")]) == 2
    assert "class-conditional: the data need labels" in capsys.readouterr().err


def test_an_avae_wrapping_a_full_circle_rvae_keeps_its_anchors_off():
    """The rVAE's pose and content anchors need its own fit (the synchronisation at fit start), which the
    AVAE's pose search does not run: inside an AVAE they are 0 (asked for or not), and a wrapped rVAE's own
    config says the same as the AVAE's."""
    from affinevae.models.avae import AVAE

    full = {"rotation_mode": "full", "invariances": ["rotation"]}
    inner = av.build_model("avae", inner="rvae", latent_dim=2, inner_config=full).config.inner_config
    assert (inner["encoder"], inner["pose_anchor"], inner["content_anchor"]) == ("equivariant", 0.0, 0.0)
    asked = av.build_model("avae", inner="rvae", latent_dim=2, inner_config={**full, "pose_anchor": 5.0})
    assert asked.config.inner_config["pose_anchor"] == 0.0
    assert av.build_model("avae", inner="vae", latent_dim=2).config.inner_config.get("pose_anchor") is None
    rvae = av.build_model("rvae", latent_dim=2, **full)
    assert (rvae.config.pose_anchor, rvae.config.content_anchor) == (10.0, 100.0)
    wrapped = AVAE(rvae)
    assert wrapped.vae.config.to_dict() == wrapped.config.inner_config and wrapped.vae.config.pose_anchor == 0.0


def test_an_avae_runs_its_inner_familys_own_pass():
    """The AVAE's pass after the search is its inner model's own (one forward pass for every model): around a
    full-circle rVAE it sums the rotation bins out exactly (the rVAE's ``score_rows``; it drew one bin before),
    so its ELBO at the identity is the rVAE's own rendered with the AVAE's interpolation; the inner model
    renders with its own again outside the pass."""
    wrapped = av.build_model("avae", image_shape=(1, 16, 16), latent_dim=2, inner="rvae", pose_head=False,
                             interpolation="bicubic", inner_config={"rotation_mode": "full", "hidden": [16],
                                                                    "invariances": ["rotation"]}, seed=0).eval()
    rvae = wrapped.vae
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    calls = []
    own = rvae.score_rows
    rvae.score_rows = lambda *a, **k: calls.append(1) or own(*a, **k)
    with torch.no_grad():
        torch.manual_seed(3)
        via_avae = wrapped.pass_at(x, None, None, sample=True).elbo
        assert calls == [1] and "render_mode" not in rvae.__dict__
        with rvae.rendering("border", "bicubic"):
            assert (rvae.render_padding, rvae.render_mode) == ("border", "bicubic")
            torch.manual_seed(3)
            alone = rvae(x).elbo
        torch.manual_seed(3)
        bilinear = rvae(x).elbo  # the rVAE's own interpolation: another value, so the rendering was the AVAE's
    torch.testing.assert_close(via_avae, alone)
    assert not torch.allclose(via_avae, bilinear)
    with pytest.raises(RuntimeError), rvae.rendering("zeros", "bicubic"):  # given back on an error too
        raise RuntimeError
    assert (rvae.render_padding, rvae.render_mode) == ("border", "bilinear")


@pytest.mark.parametrize("value", [5, [1], True, "abc"])
def test_an_inner_config_that_is_not_a_dict_is_one_line(value):
    """A QA audit: `train --model avae --set inner_config=5` (and build_model) gave a TypeError/ValueError traceback."""
    with pytest.raises(AffineVAEError, match=r"^avae inner_config must be a dict of the inner model's options, got "):
        av.build_model("avae", image_shape=(1, 28, 28), inner_config=value)


def test_head_starts_beyond_the_restarts_are_refused():
    """A QA audit: `align --head-starts 100` with 16 restarts was accepted and cut down silently."""
    import argparse

    from affinevae.cli.align import search_config_from_args
    from affinevae.pose.search import SearchConfig

    args = argparse.Namespace(restarts=16, head_starts=100, seed=0)
    with pytest.raises(AffineVAEError, match=r"^--head-starts 100 exceeds the 16 restarts \(--restarts\)"):
        search_config_from_args(args, SearchConfig())
    assert search_config_from_args(argparse.Namespace(restarts=16, head_starts=4, seed=0), SearchConfig()).head_starts == 4
