"""Tests for the rotation-equivariant layers and encoder (affinevae.nn.equivariant) and the
bin-and-offset rotation posterior (affinevae.nn.circular). Untrained, tiny networks: < 1 s each."""

from __future__ import annotations

import math

import pytest
import torch

import affinevae as av
from affinevae.errors import AffineVAEError
from affinevae.nn.affine import Pose, render, wrap_angle
from affinevae.nn.circular import RotationPosterior
from affinevae.nn.equivariant import (EquivariantEncoder, GroupConv, LiftingConv, check_group, downsampling_kernel,
                                      filter_basis, group_angles)
from affinevae.nn.layers import ENCODERS, ConvEncoder


def blobs(n: int, size: int = 28, seed: int = 0) -> torch.Tensor:
    """(n, 1, size, size) smooth asymmetric test images: three Gaussian blobs (sd 2-3 px) each, inside the disc."""
    g = torch.Generator().manual_seed(seed)
    c = (torch.arange(size, dtype=torch.float32) - (size - 1) / 2) / (size / 2)
    v, u = torch.meshgrid(c, c, indexing="ij")
    centres = (torch.rand(n, 3, 2, generator=g) - 0.5) * 0.9
    widths = 0.15 + 0.08 * torch.rand(n, 3, generator=g)
    heights = torch.tensor([1.0, 0.7, 0.4])
    d2 = (u - centres[..., 0, None, None]) ** 2 + (v - centres[..., 1, None, None]) ** 2
    return (heights[:, None, None] * torch.exp(-d2 / (2 * widths[..., None, None] ** 2))).sum(1, keepdim=True)


def turn(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Images turned counter-clockwise on screen (bilinear, the package's convention)."""
    return render(x, Pose(angle=torch.full((len(x),), math.radians(degrees))))


# ---------------------------------------------------------------------------------------- layers
@pytest.mark.parametrize("order", [4, 8, 16])
@pytest.mark.parametrize("k", [1, 3, 4, 5, 6])
def test_filter_basis_quarter_turns_are_exact_rot90s(order, k):
    basis = filter_basis(k, group_angles(order))  # (N, k*k, nb)
    base = basis[0].T.reshape(-1, k, k)
    for q in (1, 2, 3):
        turned = basis[q * order // 4].T.reshape(-1, k, k)
        torch.testing.assert_close(turned, torch.rot90(base, q, (1, 2)), rtol=0, atol=1e-6)
    # a 45-degree turn is a different (not a permuted) sampling of the same functions: same norms
    if order >= 8 and k > 1:
        torch.testing.assert_close(basis[order // 8].norm(dim=0), basis[0].norm(dim=0), rtol=0.07, atol=0.0)


@pytest.mark.parametrize("order", [4, 8])
def test_lifting_and_group_convs_turn_with_the_input(order):
    torch.manual_seed(0)
    lift, gconv = LiftingConv(2, 3, 5, order), GroupConv(3, 2, 3, order)
    x = torch.randn(2, 2, 12, 12)
    with torch.no_grad():
        f = gconv(lift(x))  # (B, 2, N, 12, 12)
        for q in (1, 2, 3):
            g = gconv(lift(torch.rot90(x, q, (2, 3))))
            expect = torch.rot90(torch.roll(f, q * order // 4, 2), q, (3, 4))
            torch.testing.assert_close(g, expect, rtol=1e-4, atol=1e-4)
    assert f.shape == (2, 2, order, 12, 12)


@pytest.mark.parametrize("size", [12, 13])
def test_strided_layers_halve_the_grid_and_turn_with_the_input(size):
    """Stride-2 lifting and group convs (even kernels on even grids, odd on odd): outputs on the
    block centres (even) or even pixels (odd), so quarter turns still commute exactly."""
    torch.manual_seed(0)
    order = 8
    k1, p1 = downsampling_kernel(size, 5)
    half = (size + 1) // 2
    k2, p2 = downsampling_kernel(half, 3)
    assert k1 == (6 if size % 2 == 0 else 5) and k2 == (4 if half % 2 == 0 else 3)
    lift, gconv = LiftingConv(1, 3, k1, order, 2, p1), GroupConv(3, 2, k2, order, 2, p2)
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        f = gconv(lift(x))
        for q in (1, 2, 3):
            g = gconv(lift(torch.rot90(x, q, (2, 3))))
            torch.testing.assert_close(g, torch.rot90(torch.roll(f, q * order // 4, 2), q, (3, 4)), rtol=1e-4, atol=1e-4)
    assert lift(x).shape[-1] == half and f.shape[-1] == (half + 1) // 2


# ---------------------------------------------------------------------------------------- encoder
def tiny(order: int, cond_dim: int = 0, **kw) -> EquivariantEncoder:
    torch.manual_seed(0)
    return EquivariantEncoder((1, 28, 28), 5, hidden=(16,), cond_dim=cond_dim, channels=(4, 6, 6),
                              group_order=order, **kw).eval()


@pytest.mark.parametrize("downsample", ["stride", "pool"])
@pytest.mark.parametrize("content", ["canonical", "pooled"])
@pytest.mark.parametrize("order", [4, 8, 16])
def test_quarter_turns_leave_content_and_roll_the_rotation_logits(order, content, downsample):
    enc = tiny(order, cond_dim=3, content=content, downsample=downsample)
    x = torch.as_tensor(av.data.load_mnist("test", n=6).images)
    cond = torch.eye(3)[[0, 1, 2, 0, 1, 2]]
    with torch.no_grad():
        a = enc(x, cond)
        for q in (1, 2, 3):
            b = enc(torch.rot90(x, q, (2, 3)), cond)
            s = q * order // 4
            torch.testing.assert_close(b.content, a.content, rtol=0, atol=1e-5)
            torch.testing.assert_close(b.rotation_logits, torch.roll(a.rotation_logits, s, 1), rtol=0, atol=1e-4)
            torch.testing.assert_close(b.offset_mean, torch.roll(a.offset_mean, s, 1), rtol=0, atol=1e-5)
            torch.testing.assert_close(b.offset_logstd, torch.roll(a.offset_logstd, s, 1), rtol=0, atol=1e-5)
            # the mean angle moves by the turn, counter-clockwise on screen as nn.affine
            pa = RotationPosterior(a.rotation_logits, a.offset_mean, a.offset_logstd)
            pb = RotationPosterior(b.rotation_logits, b.offset_mean, b.offset_logstd)
            moved = wrap_angle(pb.mean_angle() - pa.mean_angle() - q * math.pi / 2)
            assert moved.abs().max() < 1e-4
            # the soft-argmax position turns with the image: (u, v) -> R (u, v), v down
            c, sn = math.cos(q * math.pi / 2), math.sin(q * math.pi / 2)
            expect = torch.stack([c * a.shift[:, 0] + sn * a.shift[:, 1], -sn * a.shift[:, 0] + c * a.shift[:, 1]], 1)
            torch.testing.assert_close(b.shift, expect, rtol=0, atol=1e-5)
    assert a.content.shape == (6, 5) and a.rotation_logits.shape == (6, order) and a.shift.shape == (6, 2)
    assert (a.offset_mean.abs() < math.pi / order).all()
    torch.testing.assert_close(a.position_logits.exp().sum((1, 2)), torch.ones(6))
    # the turn of a quarter is render's anti-clockwise turn (the sign convention above)
    torch.testing.assert_close(turn(x, 90.0), torch.rot90(x, 1, (2, 3)), rtol=0, atol=1e-4)


@pytest.mark.parametrize("content", ["canonical", "pooled"])
@pytest.mark.parametrize("images", ["blobs", "digits"])
def test_an_eighth_turn_is_nearly_invariant_with_eight_bins(images, content):
    """Images turned by 45 degrees (one bin of C_8): content moves by a small fraction of the spread
    between images (a plain conv encoder's features move 2.5-5x more), the logits follow by one bin.

    Blobs are smooth, so the bilinear turn itself is accurate, but nearly isotropic for an untrained
    encoder (its logits barely differ between bins); digits have the orientation."""
    if images == "blobs" and content == "canonical":
        pytest.skip("a nearly isotropic blob has no angle for an untrained encoder: 'canonical' content, turned back "
                    "by that arbitrary angle, is not expected to be invariant (measured 0.87 of the spread); "
                    "'pooled' is, and 'canonical' is checked on digits")
    # downsample 'pool' (the default): same-size convs then max-pools. The strided layers ('stride') alias more:
    # untrained, their 45-degree content change is 0.67-0.93 of the spread and the logit correlation 0.24-0.50
    enc = tiny(8, content=content, downsample="pool")
    torch.manual_seed(0)
    plain = ConvEncoder((1, 28, 28), 5, hidden=(16,), channels=(8, 16)).eval()
    x = blobs(32) if images == "blobs" else torch.as_tensor(av.data.load_mnist("test", n=32).images)
    with torch.no_grad():
        a, b = enc(x), enc(turn(x, 45.0))
        spread = (a.content - a.content.roll(1, 0)).norm(dim=1).median()
        err = (b.content - a.content).norm(dim=1).median() / spread
        pa, pb = plain(x), plain(turn(x, 45.0))
        plain_err = (pb - pa).norm(dim=1).median() / (pa - pa.roll(1, 0)).norm(dim=1).median()
        logits_a = torch.roll(a.rotation_logits, 1, 1)
        corr = torch.nn.functional.cosine_similarity(b.rotation_logits - b.rotation_logits.mean(1, keepdim=True),
                                                     logits_a - logits_a.mean(1, keepdim=True), dim=1)
    print(f"\n45-degree content change / spread: equivariant {float(err):.3f}, plain conv {float(plain_err):.3f}; "
          f"median logit correlation {float(corr.median()):.3f}")
    # digits: part of the change is the bilinear turn's blur itself (a turn there and back moves the content
    # by about 0.2 of the spread), so the bound is looser
    # measured with the attention gain 8 encoder: pooled 0.41 (blobs) / 0.60 (digits) of the spread against a
    # plain conv's 0.88 / 0.91; an eighth turn is not a pixel permutation, so only "clearly less than a plain
    # conv encoder" is asserted (the quarter-turn tests above check exact invariance)
    assert err < 0.75 * plain_err
    if images == "digits":
        assert corr.median() > 0.85


def test_encoder_is_registered_with_the_common_signature():
    assert ENCODERS.get("equivariant") is EquivariantEncoder
    enc = ENCODERS.get("equivariant")((1, 16, 16), 7, hidden=(8,), act="relu", cond_dim=2, channels=(4, 4),
                                      norm="none", group_order=4)
    out = enc(torch.rand(3, 1, 16, 16), torch.eye(2)[[0, 1, 0]])
    assert out.content.shape == (3, 7) and out.rotation_logits.shape == (3, 4)
    # odd grids pool symmetrically too: a quarter turn is still exact
    enc = EquivariantEncoder((1, 15, 15), 3, hidden=(8,), channels=(3, 3, 3), group_order=4).eval()
    x = torch.rand(2, 1, 15, 15)
    with torch.no_grad():
        torch.testing.assert_close(enc(torch.rot90(x, 1, (2, 3))).content, enc(x).content, rtol=0, atol=1e-5)


@pytest.mark.parametrize("order, shape, match", [
    (6, (1, 28, 28), r"group_order must be one of \[4, 8, 16\], got 6"),
    (32, (1, 28, 28), "group_order must be one of"),
    (True, (1, 28, 28), "group_order must be one of"),
    ("8", (1, 28, 28), "group_order must be one of"),
    (8, (1, 12, 16), "needs square images.*got 12x16"),
    (8, (1, 4, 4), "at least 5 pixels wide"),
])
def test_bad_group_order_or_grid_is_one_line(order, shape, match):
    for call in (lambda: check_group(order, shape),
                 lambda: EquivariantEncoder(shape, 4, group_order=order)):
        with pytest.raises(AffineVAEError, match=match) as info:
            call()
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------- posterior
def posterior(b: int = 4, n: int = 8, seed: int = 0, sharp: float = 1.0) -> RotationPosterior:
    g = torch.Generator().manual_seed(seed)
    return RotationPosterior(sharp * torch.randn(b, n, generator=g),
                             (math.pi / n) * torch.tanh(torch.randn(b, n, generator=g)),
                             math.log(math.pi / n) + 0.5 * torch.randn(b, n, generator=g))


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    for n in (4, 8, 16):
        prior = RotationPosterior(torch.zeros(3, n), torch.zeros(3, n), torch.full((3, n), math.log(math.pi / n)))
        torch.testing.assert_close(prior.kl(), torch.zeros(3), rtol=0, atol=1e-6)
        assert (posterior(50, n, seed=n).kl() > 0).all()
    # a sharper bin or a narrower offset costs more
    p = posterior(1, 8)
    assert posterior(1, 8, sharp=3.0).kl() > p.kl()
    narrower = RotationPosterior(p.logits, p.offset_mean, p.offset_logstd - 1.0)
    assert narrower.kl() > p.kl()


def test_kl_matches_a_monte_carlo_estimate():
    p = posterior(3, 8, seed=1, sharp=1.5)
    g = torch.Generator().manual_seed(0)
    m, n = 200_000, p.order
    s = math.pi / n
    for i in range(3):
        k = torch.multinomial(p.probs[i], m, replacement=True, generator=g)
        mu, sd = p.offset_mean[i, k], p.offset_std[i, k]
        d = mu + sd * torch.randn(m, generator=g)
        logq = p.log_probs[i, k] - torch.log(sd) - 0.5 * ((d - mu) / sd) ** 2
        logp = -math.log(n) - math.log(s) - 0.5 * (d / s) ** 2
        ratio = (logq - logp).double()
        mc, se = float(ratio.mean()), float(ratio.std() / math.sqrt(m))
        assert abs(mc - float(p.kl()[i])) < 4 * se + 1e-4, (mc, float(p.kl()[i]), se)


def test_log_prob_is_a_density_on_the_circle():
    # it integrates to 1 over the circle, also for offsets as wide as a few bins (the wrap-around counts)
    theta = torch.linspace(-math.pi, math.pi, 20_001)[:-1]
    for i, p in enumerate([posterior(3, 8, seed=4), posterior(2, 4, seed=5), RotationPosterior(
            torch.randn(2, 8), torch.zeros(2, 8), torch.full((2, 8), math.log(1.5)))]):
        for b in range(p.logits.shape[0]):
            one = p.index(slice(b, b + 1))
            wide = RotationPosterior(*(t.expand(len(theta), -1) for t in (one.logits, one.offset_mean, one.offset_logstd)))
            total = float(wide.log_prob(theta).exp().sum() * (2 * math.pi / len(theta)))
            assert abs(total - 1.0) < 1e-3, (i, b, total)
    # a posterior sure of bin 2 is that bin's offset Gaussian, centred on 2 * 45 deg + its mean
    sure = RotationPosterior(torch.tensor([[0.0, 0, 40, 0, 0, 0, 0, 0]]), torch.full((1, 8), -0.1),
                             torch.full((1, 8), math.log(0.05)))
    at = torch.tensor([math.pi / 2 - 0.1, math.pi / 2 - 0.1 + 0.05, math.pi / 2 - 0.1 + math.pi])
    expect = torch.tensor([0.0, -0.5, -float("inf")]) - math.log(0.05) - 0.5 * math.log(2 * math.pi)
    got = sure.log_prob(at)
    torch.testing.assert_close(got[:2], expect[:2])
    assert got[2] < -30  # only bin 6 (q = e^-40) reaches there
    # maximising it at known angles pulls the mean angle onto them (what the --oracle row trains)
    logits = torch.zeros(1, 8, requires_grad=True)
    offset = torch.zeros(1, 8, requires_grad=True)
    opt = torch.optim.Adam([logits, offset], 0.1)
    target = torch.tensor([2.0])
    for _ in range(200):
        loss = -RotationPosterior(logits, offset, torch.full((1, 8), math.log(0.1))).log_prob(target).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = RotationPosterior(logits.detach(), offset.detach(), torch.full((1, 8), math.log(0.1)))
    assert float(wrap_angle(final.mean_angle() - target).abs()) < 0.02


def test_gumbel_draws_follow_the_bin_probabilities_and_pass_gradients():
    n = 8
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5, -2.0, 0.0, 1.5]], requires_grad=True)
    p = RotationPosterior(logits.expand(40_000, n), torch.full((40_000, n), 0.05), torch.full((40_000, n), -12.0))
    torch.manual_seed(0)
    angle = p.sample_gumbel()
    # hard draws: each angle is a bin centre plus that bin's (here fixed) offset
    k = torch.round(wrap_angle(angle - 0.05) / (2 * math.pi / n)).long() % n
    torch.testing.assert_close(wrap_angle(angle), wrap_angle(p.bin_angles()[k] + 0.05), rtol=0, atol=1e-4)
    freq = torch.bincount(k, minlength=n).float() / len(k)
    torch.testing.assert_close(freq, torch.softmax(logits.detach()[0], 0), rtol=0, atol=0.01)
    # the relaxed weights carry a gradient to the logits
    torch.sin(angle).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # soft draws at a low temperature approach the hard ones
    soft = RotationPosterior(logits.detach().expand(5, n), torch.zeros(5, n), torch.full((5, n), -12.0))
    torch.manual_seed(1)
    hard = soft.sample_gumbel(hard=True)
    torch.manual_seed(1)
    cold = soft.sample_gumbel(temperature=0.01, hard=False)
    torch.testing.assert_close(wrap_angle(cold - hard), torch.zeros(5), rtol=0, atol=1e-3)
    with pytest.raises(AffineVAEError, match="temperature must be > 0"):
        soft.sample_gumbel(temperature=0.0)


def test_enumeration_mean_angle_and_spread():
    p = posterior(5, 8, seed=2)
    angles, weights = p.enumerate()
    assert angles.shape == weights.shape == (5, 8)
    torch.testing.assert_close(weights.sum(1), torch.ones(5))
    assert (angles >= -math.pi).all() and (angles < math.pi).all()
    # bin k's draws lie around 2 pi k / N + offset mean
    near = wrap_angle(angles - p.bin_angles() - p.offset_mean).abs()
    assert (near < 6 * p.offset_std).all()
    # a posterior sure of bin 3 with offset 0.1: the mean angle is 3 * 45 deg + 0.1 rad, the spread ~ its std
    sure = RotationPosterior(torch.tensor([[0.0, 0, 0, 30, 0, 0, 0, 0]]), torch.full((1, 8), 0.1),
                             torch.full((1, 8), math.log(0.02)))
    torch.testing.assert_close(sure.mean_angle(), torch.tensor([3 * math.pi / 4 + 0.1]))
    torch.testing.assert_close(sure.circular_mean(), torch.tensor([3 * math.pi / 4 + 0.1]), rtol=0, atol=1e-4)
    torch.testing.assert_close(sure.circular_std(), torch.tensor([0.02]), rtol=0.05, atol=0.0)
    # two opposite bins equally likely (a 180-degree symmetric object): the mixture is spread out,
    # the mean angle still names one of the two modes
    two = RotationPosterior(torch.tensor([[9.0, 0, 0, 0, 9, 0, 0, 0]]), torch.zeros(1, 8), torch.full((1, 8), -5.0))
    assert two.circular_std() > 2.0
    assert wrap_angle(two.mean_angle()).abs() < 1e-6 or (wrap_angle(two.mean_angle() - math.pi).abs() < 1e-6)
    # rolling by one bin turns the mean by 45 degrees
    torch.testing.assert_close(wrap_angle(sure.roll(1).mean_angle() - sure.mean_angle()), torch.tensor([math.pi / 4]))


@pytest.mark.parametrize("family", ["ae", "vae", "cvae"])
def test_models_with_flat_encoders_refuse_it_in_one_line(family):
    with pytest.raises(AffineVAEError, match="encoder 'equivariant' is for the rvae/crvae") as info:
        av.build_model(family, encoder="equivariant", decoder="mlp", **({"num_classes": 3} if family == "cvae" else {}))
    assert "\n" not in str(info.value)
