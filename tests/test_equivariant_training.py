"""Full-circle toy sets (issue 12): asymmetric shapes turned uniformly over 360 degrees. The rVAE
with the equivariant encoder recovers the angle, the joint model the classes and their angles
(tiny models, a few epochs), and aligned k-means the classes without a model."""

from __future__ import annotations

import math

import pytest
import torch

import affinevae as av
from affinevae.nn.affine import Pose, render


def shape(size: int) -> torch.Tensor:
    """(1, size, size) an asymmetric shape: three Gaussian blobs of different sizes and heights."""
    c = (torch.arange(size, dtype=torch.float32) - (size - 1) / 2) / (size / 2)
    v, u = torch.meshgrid(c, c, indexing="ij")
    blobs = [(-0.35, -0.3, 0.22, 1.0), (0.35, -0.15, 0.18, 0.8), (0.0, 0.4, 0.15, 0.6)]
    img = sum(h * torch.exp(-((u - a) ** 2 + (v - b) ** 2) / (2 * w * w)) for a, b, w, h in blobs)
    return img.clamp(0, 1)[None]


def test_full_circle_toy_angles_are_recovered_by_training():
    """Learned minus true angle is one constant (concentration 0.998 measured; 0.80 untrained, whose
    bins already follow the turns of the group but not the turns between them)."""
    size, n = 16, 400
    angle = (torch.rand(n, generator=torch.Generator().manual_seed(0)) * 2 - 1) * math.pi
    x = render(shape(size).expand(n, -1, -1, -1), Pose(angle=angle))
    torch.manual_seed(0)
    model = av.build_model("rvae", image_shape=(1, size, size), latent_dim=1, invariances=("rotation",),
                           rotation_mode="full", group_channels=(4, 4), encoder_hidden=(32,), hidden=(32,),
                           channels=(8, 16), group_order=8)

    def concentration() -> float:
        model.eval()
        with torch.no_grad():
            learned = model.encode(x).pose.angle
        return float(torch.exp(1j * (learned - angle).double()).mean().abs())

    before = concentration()
    av.fit(model, x.numpy(), av.TrainConfig(epochs=3, batch_size=50, lr=3e-3, val_split=0.0, progress=False, seed=0,
                                            checkpoint=False))
    after = concentration()
    assert after > 0.95 and after > before + 0.1, (before, after)


def other_shape(size: int) -> torch.Tensor:
    """(1, size, size) a second asymmetric shape: a bar with a blob at one end."""
    c = (torch.arange(size, dtype=torch.float32) - (size - 1) / 2) / (size / 2)
    v, u = torch.meshgrid(c, c, indexing="ij")
    bar = torch.exp(-(u / 0.5) ** 8 - (v / 0.12) ** 2)
    blob = 0.9 * torch.exp(-((u - 0.45) ** 2 + (v - 0.3) ** 2) / (2 * 0.15**2))
    return (bar + blob).clamp(0, 1)[None]


def test_full_circle_joint_model_finds_the_classes_and_their_angles():
    """The jrVAE with the group-equivariant encoder (its default in rotation_mode 'full'): two shapes
    turned uniformly over 360 degrees, no labels; the classes are found and, per class, the learned
    minus true angle is one constant (measured: accuracy 1.000, concentration 0.99 / 0.99)."""
    size, n = 16, 200
    gen = torch.Generator().manual_seed(0)
    angle = (torch.rand(2 * n, generator=gen) * 2 - 1) * math.pi
    labels = torch.arange(2).repeat_interleave(n)
    x = render(torch.cat([shape(size).expand(n, -1, -1, -1), other_shape(size).expand(n, -1, -1, -1)]),
               Pose(angle=angle))
    torch.manual_seed(0)
    model = av.build_model("jrvae", image_shape=(1, size, size), latent_dim=1, num_classes=2, invariances=("rotation",),
                           rotation_mode="full", group_channels=(4, 4), encoder_hidden=(32,), hidden=(32,),
                           classifier_hidden=(32,), channels=(8, 16), class_init_epochs=1)
    assert model.config.encoder == "equivariant"
    res = av.fit(model, x.numpy(), av.TrainConfig(epochs=4, batch_size=50, lr=3e-3, val_split=0.0, progress=False,
                                                  seed=0, checkpoint=False))
    assert [r.get("class_kmeans_embedded") for r in res.history] == [None, 1.0, None, None]  # the start: embedding
    model.eval()
    with torch.no_grad():
        enc = model.encode(x)
    found = enc.parts["class"]
    accuracy = max(float((found == labels).float().mean()), float((found != labels).float().mean()))
    conc = [float(torch.exp(1j * (enc.pose.angle - angle).double())[labels == c].mean().abs()) for c in (0, 1)]
    assert accuracy > 0.95 and min(conc) > 0.9, (accuracy, conc)


def test_full_circle_joint_model_class_posterior_ignores_quarter_turns():
    """The class posterior of the full-circle jrVAE does not move when the input turns by an element
    of the group (the classifier sees the image turned back by the equivariant angle)."""
    torch.manual_seed(0)
    model = av.build_model("jrvae", latent_dim=2, num_classes=4, invariances=("rotation",), rotation_mode="full",
                           group_channels=(4, 6, 6), encoder_hidden=(32,), hidden=(16,), classifier_hidden=(32,)).eval()
    x = torch.as_tensor(av.data.load_mnist("test", n=6).images)
    with torch.no_grad():
        a = model.encode(x)
        for q in (1, 2, 3):
            b = model.encode(torch.rot90(x, q, (2, 3)))
            torch.testing.assert_close(b.parts["class_prob"], a.parts["class_prob"], rtol=0, atol=1e-4)
            torch.testing.assert_close(b.z_mean, a.z_mean, rtol=0, atol=1e-4)
            moved = torch.remainder(b.pose.angle - a.pose.angle - q * math.pi / 2 + math.pi, 2 * math.pi) - math.pi
            assert moved.abs().max() < 1e-4


def test_joint_model_enumerates_every_class_at_every_rotation_bin():
    """In evaluation the jrVAE's bin enumeration renders each class at each bin: row r*N + k is class
    r rendered at bin k's angle, weighted q(r) q(k); the weights of an image sum to 1."""
    torch.manual_seed(0)
    model = av.build_model("jrvae", latent_dim=2, num_classes=3, invariances=("rotation",), rotation_mode="full",
                           group_channels=(4, 4), group_order=4, encoder_hidden=(32,), hidden=(16,),
                           classifier_hidden=(32,)).eval()
    x = torch.as_tensor(av.data.load_mnist("test", n=5).images)
    with torch.no_grad():
        post = model.infer(x)
        angles, bin_weights = post.rotation.enumerate()
        poses = Pose(angle=angles.reshape(-1))
        params, weights = model.render_bins(post.z_mean, None, post, poses, bin_weights)
        assert params.shape == (5, 3 * 4, 1, 28, 28) and weights.shape == (5, 12)
        torch.testing.assert_close(weights.sum(1), torch.ones(5))
        for r in range(3):
            for k in range(4):
                expect = model.decode_params(post.z_mean, r, pose=Pose(angle=angles[:, k]))
                torch.testing.assert_close(params[:, r * 4 + k], expect, rtol=0, atol=1e-5)
                torch.testing.assert_close(weights[:, r * 4 + k], post.parts["class_prob"][:, r] * bin_weights[:, k])
        out = model(x)  # sample=True in evaluation: the same enumeration, scored
        assert torch.isfinite(out.elbo).all() and out.x_params.shape == (5, 1, 28, 28)


def test_aligned_kmeans_finds_classes_that_turn_over_the_full_circle():
    """Two shapes turned uniformly over 360 degrees: aligned k-means separates them and the turn it
    finds undoes each image's angle up to one offset per class (the turns are 2 pi / 16 apart);
    plain k-means of the same images (one turn) splits them by orientation instead."""
    from affinevae.mapping import clustering_accuracy
    from affinevae.pose.classes import aligned_kmeans

    size, n = 16, 150
    angle = (torch.rand(2 * n, generator=torch.Generator().manual_seed(1)) * 2 - 1) * math.pi
    labels = torch.arange(2).repeat_interleave(n).numpy()
    x = render(torch.cat([shape(size).expand(n, -1, -1, -1), other_shape(size).expand(n, -1, -1, -1)]),
               Pose(angle=angle))
    found = aligned_kmeans(x, 2, angles=16, components=20, seed=0)
    assert clustering_accuracy(found.labels, labels) == 1.0
    assert found.labels.shape == (2 * n,) and found.centres.shape == (2, 1, size, size)
    for c in (0, 1):
        turn = torch.as_tensor(found.angles)[torch.as_tensor(labels == c)] + angle[labels == c]
        assert float(torch.exp(1j * turn.double()).mean().abs()) > 0.95
    plain = aligned_kmeans(x, 2, angles=1, components=20, seed=0)
    assert clustering_accuracy(plain.labels, labels) < 0.8
    again = aligned_kmeans(x, 2, angles=16, components=20, seed=0)
    assert (again.labels == found.labels).all() and again.inertia == found.inertia  # the seed fixes the result


def test_aligned_kmeans_compares_standardised_images_so_offsets_do_not_make_the_classes():
    """Each image of two turned shapes gets its own intensity offset and contrast (as particles cut
    from micrographs do): compared as given, the brightness splits the images, not the shape;
    standardised per image (the default), the shapes are found. The centres stay in the images' units."""
    from affinevae.mapping import clustering_accuracy
    from affinevae.pose.classes import aligned_kmeans

    size, n = 16, 150
    gen = torch.Generator().manual_seed(2)
    angle = (torch.rand(2 * n, generator=gen) * 2 - 1) * math.pi
    labels = torch.arange(2).repeat_interleave(n).numpy()
    x = render(torch.cat([shape(size).expand(n, -1, -1, -1), other_shape(size).expand(n, -1, -1, -1)]),
               Pose(angle=angle))
    bright = (torch.rand(2 * n, generator=gen) < 0.5).float()[:, None, None, None]
    x = x * (0.5 + 1.5 * bright) + 2.0 * bright  # half of each class brighter and with more contrast
    assert clustering_accuracy(aligned_kmeans(x, 2, components=20, standardise=False).labels, labels) < 0.8
    found = aligned_kmeans(x, 2, components=20)
    assert clustering_accuracy(found.labels, labels) == 1.0
    assert float(found.centres.min()) >= 0.0 and float(found.centres.max()) > 2.0  # means of the images as given


def test_aligned_kmeans_refuses_bad_input_in_one_line():
    from affinevae.errors import AffineVAEError
    from affinevae.pose.classes import aligned_kmeans

    x = torch.rand(6, 1, 8, 8)
    bad_nan = x.clone()
    bad_nan[2, 0, 3, 3] = float("nan")
    for args, match in [((x[:, 0], 2), "needs images of shape"), ((x, 7), "6 images cannot make 7 classes"),
                        ((x, 1), "k must be an integer >= 2"), ((bad_nan, 2), "NaN or infinite")]:
        with pytest.raises(AffineVAEError, match=match):
            aligned_kmeans(*args)
    with pytest.raises(AffineVAEError, match="angles must be an integer >= 1"):
        aligned_kmeans(x, 2, angles=0)
