"""Analyses (affinevae.analysis), their figures and the `affinevae plot` command, on the session's tiny
trained runs (``tiny_runs``, tests/conftest.py)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from affinevae import analysis as A
from affinevae.cli import main
from affinevae.data import load_mnist, rotated_mnist
from affinevae.errors import AffineVAEError
from affinevae.evaluation import circular_correlation, encode_dataset, psnr
from affinevae.models.base import build_model
from affinevae.plots import save_figure
from affinevae.runs import Run, read_metrics


@pytest.fixture(scope="module")
def test_data():
    return {"mnist": load_mnist("test", n=80), "rot": rotated_mnist("test", n=80, seed=1)}


def assert_png(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 50 and im.height > 30


# ------------------------------------------------------------------ reconstructions
def test_reconstructions_shapes_values_and_psnr(tiny_runs, test_data):
    vae, data = tiny_runs.model("vae"), test_data["mnist"]
    r = A.reconstructions(vae, data, n=6, seed=3)
    assert r.originals.shape == r.reconstructions.shape == (6, 1, 28, 28)
    assert len(set(r.indices.tolist())) == 6
    np.testing.assert_array_equal(r.originals, data.images[r.indices])
    np.testing.assert_allclose(r.reconstructions, vae.reconstruct(torch.as_tensor(r.originals)).numpy(), atol=1e-6)
    assert r.psnr == pytest.approx(psnr(r.originals, r.reconstructions))
    again = A.reconstructions(vae, data, n=6, seed=3)
    np.testing.assert_array_equal(again.indices, r.indices)
    chosen = A.reconstructions(vae, data, indices=[5, 1])
    assert chosen.indices.tolist() == [5, 1]
    with pytest.raises(AffineVAEError, match="out of range"):
        A.reconstructions(vae, data, indices=[80])


def test_conditional_models_use_labels_and_need_them(tiny_runs, test_data):
    cvae, data = tiny_runs.model("cvae"), test_data["mnist"]
    r = A.reconstructions(cvae, data, indices=[0, 1, 2])
    expected = cvae.reconstruct(torch.as_tensor(data.images[:3]), torch.as_tensor(data.labels[:3])).numpy()
    np.testing.assert_allclose(r.reconstructions, expected, atol=1e-6)
    with pytest.raises(AffineVAEError, match="labels"):
        A.reconstructions(cvae, data.images, n=3)


# ------------------------------------------------------------------ latent space
def test_latent_codes_2d_are_the_means(tiny_runs, test_data):
    vae, data = tiny_runs.model("vae"), test_data["mnist"]
    codes = A.latent_codes(vae, data, n=50)
    z = encode_dataset(vae, data.subset(slice(0, 50)), elbo=False)["z_mean"]
    assert codes.method == "latent" and codes.embedding.shape == (50, 2)
    np.testing.assert_allclose(codes.embedding, z, atol=1e-6)
    np.testing.assert_array_equal(codes.labels, data.labels[:50])
    assert codes.true_angle is None and codes.learned_angle is None
    assert codes.available() == ["class"]


def test_latent_codes_embed_higher_dims(tiny_runs, test_data):
    ae, data = tiny_runs.model("ae"), test_data["mnist"]
    codes = A.latent_codes(ae, data, n=40)
    assert codes.z_mean.shape == (40, 4) and codes.embedding.shape == (40, 2)
    assert codes.method in ("tsne", "umap") and np.all(np.isfinite(codes.embedding))
    pca = A.latent_codes(ae, data, n=40, method="pca")
    assert pca.method == "pca" and pca.axis_labels == ("PC 1", "PC 2")
    dims = A.latent_codes(ae, data, n=40, dims=(3, 1))
    np.testing.assert_allclose(dims.embedding, codes.z_mean[:, [3, 1]], atol=1e-6)
    with pytest.raises(AffineVAEError, match="dims"):
        A.latent_codes(ae, data, n=40, dims=(0, 9))
    with pytest.raises(AffineVAEError, match="method"):
        A.latent_codes(ae, data, n=40, method="mds")


def test_three_dims_give_the_notes_3d_scatter(tiny_runs, test_data, tmp_path, capsys):
    """The notes' 3-D scatter of a latent slice: three ``dims`` are the latents themselves, (N, 3), drawn on
    3-D axes (from the CLI too, ``plot latent --dims 0,1,2``); two dims and three do not mix in one figure, and
    four dims or a repeated one are one line."""
    ae, data = tiny_runs.model("ae"), test_data["mnist"]
    codes = A.latent_codes(ae, data, n=40, dims=(2, 0, 3))
    np.testing.assert_allclose(codes.embedding, codes.z_mean[:, [2, 0, 3]], atol=1e-6)
    assert codes.axis_labels == ("z[2]", "z[0]", "z[3]")
    fig = A.plot_latent_scatter(codes)
    ax = fig.axes[0]
    assert ax.name == "3d" and ax.get_zlabel() == "z[3]"
    drawn = np.concatenate([np.asarray(c._offsets3d).T for c in ax.collections])  # one scatter per class
    np.testing.assert_allclose(np.sort(drawn, 0), np.sort(codes.embedding, 0), atol=1e-5)  # the three latents
    with pytest.raises(AffineVAEError, match="mix 2-D and 3-D"):
        A.plot_latent_scatter([codes, A.latent_codes(ae, data, n=40, dims=(0, 1))])
    for bad in [(0, 1, 2, 3), (1, 1, 2)]:
        with pytest.raises(AffineVAEError, match="three, a 3-D view"):
            A.latent_codes(ae, data, n=40, dims=bad)
    for bad in [(0, 1.9), (0, "2"), (True, 2), 3, "01"]:  # they were truncated, or a TypeError
        with pytest.raises(AffineVAEError, match="dims must be a sequence of two or three latent indices"):
            A.embed_2d(np.random.default_rng(0).standard_normal((10, 4)), dims=bad)
    with pytest.raises(AffineVAEError, match="three, a 3-D view"):  # one latent: the dims are checked too
        A.embed_2d(np.random.default_rng(0).standard_normal((10, 1)), dims=(0, 1, 2))
    with pytest.raises(AffineVAEError, match="dims pick latents to show as they are; method 'pca' embeds"):
        A.latent_codes(ae, data, n=40, dims=(0, 1, 2), method="pca")  # it drew a 2-D PCA, silently
    import dataclasses  # a model with a learned angle beside one without (--compare): the other's panel says so

    turned = dataclasses.replace(codes, learned_angle=np.zeros(40), model="turned")
    fig = A.plot_latent_scatter([codes, turned], color_by=["learned_angle"])
    assert fig.axes[0].texts[0].get_text().endswith("no learned angle")  # it was a traceback on 3-D axes
    run = tiny_runs.path("ae")
    assert main(["plot", str(run), "latent", "--data", "mnist", "-n", "40", "--dims", "0,1,2", "--out",
                 str(tmp_path / "l3.png")]) == 0
    assert (tmp_path / "l3.png").stat().st_size > 0
    assert main(["plot", str(run), "latent", "--data", "mnist", "-n", "40", "--dims", "0,1,2,3", "--out",
                 str(tmp_path / "l4.png")]) == 2
    assert "--dims needs 2 comma-separated integers (3 for a 3-D view)" in capsys.readouterr().err
    assert main(["plot", str(run), "latent", "--data", "mnist", "-n", "40", "--dims", "-1,0", "--out",
                 str(tmp_path / "l5.png")]) == 2  # a negative index: the range line, not argparse's
    assert "different latent indices in [0, " in capsys.readouterr().err


def test_umap_without_its_extra_is_one_line_naming_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed: import fails
    z = np.random.default_rng(0).standard_normal((20, 4))
    assert A.embed_2d(z, "auto")[1] == "tsne"  # auto falls back to t-SNE
    with pytest.raises(AffineVAEError, match=r'umap-learn.*pip install "affinevae\[umap\]"') as info:
        A.embed_2d(z, "umap")
    assert "\n" not in str(info.value)


def test_latent_codes_angles(tiny_runs, test_data):
    rvae, data = tiny_runs.model("rvae"), test_data["rot"]
    codes = A.latent_codes(rvae, data, n=60)
    assert codes.available() == ["class", "true_angle", "learned_angle"]
    np.testing.assert_allclose(codes.true_angle, data.angle[:60], atol=1e-6)
    np.testing.assert_allclose(codes.learned_angle, A.learned_angles(rvae, data, n=60), atol=1e-6)
    with pytest.raises(AffineVAEError, match="learns no rotation"):
        A.learned_angles(tiny_runs.model("vae"), data)
    vae_codes = A.latent_codes(tiny_runs.model("vae"), data, n=60)
    with pytest.raises(AffineVAEError, match="no model here learns an angle"):
        A.plot_latent_scatter(vae_codes, color_by=["learned_angle"])
    fig = A.plot_latent_scatter([codes, vae_codes], color_by=["learned_angle"])  # the VAE's panel says why
    assert len(fig.axes) >= 2


def test_angle_color_scale():
    assert A.angle_color_scale(np.array([-59.0, 12.0, 58.0]))[1] == 60.0
    cmap, lim = A.angle_color_scale(np.array([-170.0, 150.0]))
    assert lim == 180.0 and cmap == "twilight_shifted"
    assert A.angle_color_scale(np.r_[np.zeros(200), 170.0])[1] == 15.0  # one outlier does not set the scale


def test_latent_stats_match_numpy(tiny_runs, test_data):
    for name in ("ae", "vae"):
        model = tiny_runs.model(name)
        st = A.latent_stats(model, test_data["mnist"], n=70, name=name)
        z = encode_dataset(model, test_data["mnist"].subset(slice(0, 70)), elbo=False)["z_mean"].astype(np.float64)
        np.testing.assert_allclose(st.min, z.min(0), rtol=1e-6)
        np.testing.assert_allclose(st.max, z.max(0), rtol=1e-6)
        np.testing.assert_allclose(st.mean, z.mean(0), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(st.std, z.std(0), rtol=1e-5, atol=1e-7)
        assert [row["dim"] for row in st.table()] == list(range(z.shape[1]))


# ------------------------------------------------------------------ generation and manifold
def test_generate(tiny_runs):
    vae, cvae = tiny_runs.model("vae"), tiny_runs.model("cvae")
    g = A.generate(vae, n=10, seed=1)
    assert g.images.shape == (10, 1, 28, 28) and g.labels is None
    np.testing.assert_array_equal(g.images, A.generate(vae, n=10, seed=1).images)
    assert not np.array_equal(g.images, A.generate(vae, n=10, seed=2).images)
    gc = A.generate(cvae, classes=[3, 7], per_class=4)
    assert gc.images.shape == (8, 1, 28, 28) and gc.labels.tolist() == [3] * 4 + [7] * 4 and gc.ncol == 4
    with pytest.raises(AffineVAEError, match="renders no classes"):
        A.generate(vae, classes=[1])
    with pytest.raises(AffineVAEError, match="out of range"):
        A.generate(cvae, classes=[10])
    # a joint model renders the classes it discovered when asked (plot samples --classes ignored them)
    joint = build_model("jvae", latent_dim=2, num_classes=3, encoder="mlp", hidden=[16]).eval()
    gj = A.generate(joint, classes=[2, 0], per_class=3)
    assert gj.labels.tolist() == [2] * 3 + [0] * 3 and A.generate(joint, n=5).labels is None
    with pytest.raises(AffineVAEError, match=r"class 3 is out of range \[0, 2\]"):
        A.generate(joint, classes=[3])
    assert A.latent_manifold(joint, d=3, classes=[1]).images.shape[:2] == (1, 9)  # one class, 3 x 3


def test_manifold_grid(tiny_runs):
    vae, cvae = tiny_runs.model("vae"), tiny_runs.model("cvae")
    m = A.latent_manifold(vae, d=5, bounds=(-2, 2))
    assert m.images.shape == (1, 25, 1, 28, 28) and m.classes is None and m.d == 5
    np.testing.assert_allclose(m.grid, np.linspace(-2, 2, 5))
    # top-left tile: smallest z[0], largest z[1]; centre tile: z = 0
    expected = vae.decode(torch.tensor([[-2.0, 2.0], [0.0, 0.0]])).detach().numpy()
    np.testing.assert_allclose(m.images[0, 0], expected[0], atol=1e-6)
    np.testing.assert_allclose(m.images[0, 12], expected[1], atol=1e-6)
    mc = A.latent_manifold(cvae, d=4, classes=[0, 2])
    assert mc.images.shape == (2, 16, 1, 28, 28) and mc.classes == [0, 2]
    rot = A.latent_manifold(vae, d=3, angle=math.pi / 2)
    assert rot.angle == pytest.approx(math.pi / 2) and not np.allclose(rot.images, A.latent_manifold(vae, d=3).images)
    with pytest.raises(AffineVAEError, match="dims"):
        A.latent_manifold(vae, dims=(0, 0))
    with pytest.raises(AffineVAEError, match="bounds"):
        A.latent_manifold(vae, bounds=(1, -1))
    with pytest.raises(AffineVAEError, match="latent_dim >= 2"):
        A.latent_manifold(build_model("vae", image_shape=[1, 28, 28], latent_dim=1))


# ------------------------------------------------------------------ interpolation and arithmetic
def test_interpolation_endpoints_decode_the_codes(tiny_runs, test_data):
    vae, data = tiny_runs.model("vae"), test_data["mnist"]
    it = A.interpolate(vae, data, (4, 9), steps=7)
    assert it.images.shape == (7, 1, 28, 28) and it.z.shape == (7, 2)
    with torch.no_grad():
        z = vae.encode(torch.as_tensor(data.images[[4, 9]])).z_mean
        decoded = vae.decode(z).numpy()
    np.testing.assert_allclose(it.z[[0, -1]], z.numpy(), atol=1e-6)
    np.testing.assert_allclose(it.images[[0, -1]], decoded, atol=1e-5)
    np.testing.assert_allclose(it.z[3], z.mean(0).numpy(), atol=1e-5)  # the midpoint
    np.testing.assert_array_equal(it.endpoints, data.images[[4, 9]])
    with pytest.raises(AffineVAEError, match="steps"):
        A.interpolate(vae, data, (0, 1), steps=1)
    with pytest.raises(AffineVAEError, match="two image indices"):
        A.interpolate(vae, data, (0, 1, 2))


def test_interpolation_with_pose_and_classes(tiny_runs, test_data):
    rvae, cvae = tiny_runs.model("rvae"), tiny_runs.model("cvae")
    data = test_data["rot"]
    it = A.interpolate(rvae, data, (0, 1), steps=5)
    rec = rvae.reconstruct(torch.as_tensor(data.images[:2])).numpy()  # decoded in the inferred pose
    np.testing.assert_allclose(it.images[[0, -1]], rec, atol=1e-5)
    assert it.angle is not None and len(it.angle) == 5
    ic = A.interpolate(cvae, test_data["mnist"], (0, 1), steps=4)
    assert ic.classes.tolist() == [test_data["mnist"].labels[0]] * 2 + [test_data["mnist"].labels[1]] * 2


def test_latent_arithmetic(tiny_runs, test_data):
    vae, data = tiny_runs.model("vae"), test_data["mnist"]
    a = A.latent_arithmetic(vae, data, (1, 2, 3))
    np.testing.assert_allclose(a.z_result, a.z[0] - a.z[1] + a.z[2], atol=1e-6)
    np.testing.assert_allclose(a.result, vae.decode(torch.as_tensor(a.z_result[None])).detach().numpy()[0], atol=1e-5)
    assert a.inputs.shape == a.decoded_inputs.shape == (3, 1, 28, 28)


# ------------------------------------------------------------------ angles and rotation
def test_angle_comparison(tiny_runs, test_data):
    rvae, rot = tiny_runs.model("rvae"), test_data["rot"]
    a = A.angle_comparison(rvae, rot)
    assert a.true_angle.shape == a.learned_angle.shape == (80,)
    assert np.all(np.abs(a.learned_angle) <= math.pi)
    assert a.correlation == pytest.approx(circular_correlation(a.learned_angle, a.true_angle))
    d = np.exp(1j * (a.learned_angle - a.true_angle))
    assert a.concentration == pytest.approx(abs(d.mean())) and 0 <= a.concentration <= 1
    per = [abs(d[a.labels == c].mean()) for c in np.unique(a.labels) if (a.labels == c).sum() >= 2]
    assert a.class_concentration == pytest.approx(np.mean(per))
    with pytest.raises(AffineVAEError, match="known angles"):
        A.angle_comparison(rvae, test_data["mnist"])
    with pytest.raises(AffineVAEError, match="learns no rotation"):
        A.angle_comparison(tiny_runs.model("vae"), rot)


def test_class_offset_concentration_scores_one_frame_per_class():
    """A full-circle model keeps an arbitrary frame per class: one offset per class scores 1 per class,
    while the pooled score (one offset for all) falls; without labels there is no per-class score."""
    from affinevae.evaluation import class_offset_concentration, offset_concentration

    rng = np.random.default_rng(0)
    true = rng.uniform(-math.pi, math.pi, 300)
    labels = np.repeat([0, 1, 2], 100)
    learned = true + np.array([0.0, 2.0, -2.5])[labels]  # each class in its own frame
    assert class_offset_concentration(learned, true, labels) == pytest.approx(1.0)
    assert offset_concentration(learned, true) < 0.5
    with pytest.raises(AffineVAEError, match="equal-length"):
        class_offset_concentration(learned, true, labels[:10])
    unknown = labels.copy()
    unknown[::2] = -1  # unknown labels are left out, not a class of their own
    assert class_offset_concentration(learned, true, unknown) == pytest.approx(1.0)
    singles = np.arange(300)  # one image per class would score 1 whatever the angles: no class to score
    assert np.isnan(class_offset_concentration(rng.uniform(-3, 3, 300), true, singles))
    fig = A.plot_angle_comparison(A.AngleComparison(true, learned, labels, 0.0, "m", 0.3, 1.0))
    assert "per class 1.00" in fig.axes[0].get_title()
    fig = A.plot_angle_comparison(A.AngleComparison(true, learned, None, 0.0, "m", 0.3))
    assert "per class" not in fig.axes[0].get_title()


def test_rotation_strip_turns_one_image_and_scores_each_turn(tiny_runs, test_data, tmp_path):
    """The AVAE article's picture: one digit turned, the VAE's reconstruction and loss at each turn."""
    from affinevae.sweep import rotate_images

    vae, data = tiny_runs.model("vae"), test_data["mnist"]
    s = A.rotation_strip(vae, data, index=5, angles=np.radians([0, 90, 180]), seed=1)
    assert s.images.shape == s.reconstructions.shape == (3, 1, 28, 28) and s.index == 5
    assert s.angles_deg.tolist() == [0.0, 90.0, 180.0] and np.all(np.isfinite(s.neg_elbo))
    x = torch.as_tensor(data.images[5:6])
    np.testing.assert_allclose(s.images[1], rotate_images(x, math.pi / 2)[0].numpy())
    np.testing.assert_allclose(s.reconstructions[2], vae.reconstruct(rotate_images(x, math.pi))[0].numpy(), atol=1e-6)
    again = A.rotation_strip(vae, data, index=5, angles=np.radians([0, 90, 180]), seed=1)
    assert np.array_equal(again.neg_elbo, s.neg_elbo)  # the seed fixes the ELBO's sample
    assert len(A.rotation_strip(vae, data, index=0).angles) == 12  # 0 to 330 degrees every 30
    with pytest.raises(AffineVAEError, match=r"^rotation_strip: index 80 is past the 80 images$"):
        A.rotation_strip(vae, data, index=80)
    save_figure(A.plot_rotation_strip(s), tmp_path / "strip.png")
    assert_png(tmp_path / "strip.png")
    run = str(tiny_runs.path("vae"))
    assert main(["plot", run, "rotation-strip", "--indices", "2", "--angles", "0:361:90", "--out", str(tmp_path / "c.png")]) == 0
    assert_png(tmp_path / "c.png")
    assert main(["plot", run, "rotation-strip", "--indices", "1,2", "--out", str(tmp_path / "d.png")]) == 2
    assert main(["plot", run, "rotation-strip", "-n", "5", "--indices", "10", "--out", str(tmp_path / "d.png")]) == 2
    # two channels are drawn in grey (their mean; a review: a traceback, in reconstructions too)
    two = A.RotationStrip(0, np.zeros(2), np.random.rand(2, 2, 8, 8), np.random.rand(2, 2, 8, 8), np.zeros(2))
    save_figure(A.plot_rotation_strip(two), tmp_path / "two.png")
    assert_png(tmp_path / "two.png")


def test_loss_vs_rotation(tiny_runs, test_data):
    from affinevae.models.avae import AVAE
    from affinevae.pose import SearchConfig

    vae = tiny_runs.model("vae")
    models = {"vae": vae, "avae": AVAE(vae, pose_head=False, search=SearchConfig(restarts=2, keep=1, steps=0)).eval()}
    res = A.loss_vs_rotation(models, test_data["mnist"], np.radians([0, 90, 180]), n=12)
    assert res.neg_elbo.shape == (2, 3) and res.names == ["vae", "avae"] and res.n_images == 12
    assert res.angles_deg.tolist() == [0.0, 90.0, 180.0]  # radians in, degrees on the result (its plots)
    assert np.all(np.isfinite(res.neg_elbo))
    again = A.loss_vs_rotation({"vae": vae}, test_data["mnist"], angles=[0, math.pi / 2, math.pi], n=12)
    np.testing.assert_allclose(again.neg_elbo[0], res.neg_elbo[0])
    default = A.loss_vs_rotation({"vae": vae}, test_data["mnist"], n=2)
    assert default.angles_deg.tolist() == list(range(0, 361, 30))
    with pytest.raises(AffineVAEError, match="^loss_vs_rotation: angles_deg .* is now angles, in radians"):
        A.loss_vs_rotation({"vae": vae}, test_data["mnist"], angles_deg=[0, 90], n=2)
    with pytest.raises(AffineVAEError, match="finite numbers"):
        A.loss_vs_rotation({"vae": vae}, test_data["mnist"], [0.0, np.nan], n=2)
    with pytest.raises(AffineVAEError, match="^loss_vs_rotation: an angle of 180 is more than a full turn in radians"):
        A.loss_vs_rotation({"vae": vae}, test_data["mnist"], [0, 90, 180], n=2)  # degrees by position
    # the search includes the identity pose, so the AVAE's -ELBO is never above the VAE's at 0 degrees by much
    assert res.neg_elbo[1, 0] <= res.neg_elbo[0, 0] + 5


def _record(labels, angles):
    from affinevae.models.avae import PoseRecord

    angle = np.asarray(angles, np.float32)
    return PoseRecord(epochs=np.arange(1, len(angle) + 1), angle=angle, labels=np.asarray(labels),
                      params=angle[-1][:, None], transform="rotation", param_names=("angle",))


def test_rotation_histograms_from_record():
    labels = [0, 0, 1, 1, 1]
    angles = [[0.1, -3.0, 1.0, 1.1, np.nan], [0.2, 0.25, 3.1, 3.1, 3.1]]
    h = A.rotation_histograms(_record(labels, angles), bins=12)
    assert h.counts.shape == (2, 2, 12) and h.edges_deg[0] == pytest.approx(-180) and h.edges_deg[-1] == pytest.approx(180)
    assert h.counts[0, 0].sum() == 2 and h.counts[0, 1].sum() == 2 and h.counts[1, 1].sum() == 3  # NaN = unseen
    assert h.counts[1, 1, 11] == 3  # 3.1 rad = 177.6 degrees: the last bin
    np.testing.assert_allclose(h.fractions().sum(-1), 1.0)
    save = A.plot_rotation_histograms(h, classes=[1])
    assert save is not None
    with pytest.raises(AffineVAEError, match="no recorded poses"):
        A.plot_rotation_histograms(h, classes=[5])
    with pytest.raises(AffineVAEError, match="pose record"):
        A.rotation_histograms("/nonexistent/run")


def test_encoded_orientation_histograms_gather_into_peaks():
    """Images rotated uniformly, found poses that undo the rotation up to a canonical orientation per class:
    the found angles are spread over the circle, the encoded orientations (true - found) are one peak per class."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    true = rng.uniform(-np.pi, np.pi, 400)
    canonical = np.where(labels == 0, np.radians(40.0), np.radians(-100.0))
    found = np.angle(np.exp(1j * (true - canonical + 0.05 * rng.standard_normal(400))))
    h_found = A.rotation_histograms(_record(labels, [found]), bins=36)
    h_enc = A.rotation_histograms(_record(labels, [found]), bins=36, true_angle=true)
    assert h_enc.encoded and not h_found.encoded
    assert h_found.counts[0, 0].max() < 25  # spread: about 200 / 36 per bin
    centres = 0.5 * (h_enc.edges_deg[1:] + h_enc.edges_deg[:-1])
    for k, c in ((0, 40.0), (1, -100.0)):
        assert h_enc.counts[0, k].max() > 60 and abs(centres[h_enc.counts[0, k].argmax()] - c) <= 10
    fig = A.plot_rotation_histograms(h_enc)
    assert "encoded orientation" in fig.axes[0].get_xlabel()


# ------------------------------------------------------------------ anomaly and denoising
def test_anomaly_scores(tiny_runs, test_data):
    vae, data = tiny_runs.model("vae"), test_data["mnist"]
    a = A.anomaly_scores(vae, data, n=50, k=5, seed=4)
    expected = -encode_dataset(vae, data.subset(slice(0, 50)), seed=4)["elbo"]
    np.testing.assert_allclose(a.scores, expected, rtol=1e-6)
    assert a.scores[a.typical].max() <= np.sort(a.scores)[4] + 1e-9
    assert a.scores[a.atypical[0]] == a.scores.max() and a.scores[a.typical[0]] == a.scores.min()
    np.testing.assert_array_equal(a.atypical_images, data.images[a.atypical])


def test_denoising_psnr(tiny_runs, test_data):
    vae, data = tiny_runs.model("vae"), test_data["mnist"]
    d = A.denoise(vae, data, n=6, noise_std=0.4, seed=2)
    assert d.noisy.shape == d.denoised.shape == d.clean.shape == (6, 1, 28, 28)
    assert d.noisy.min() >= 0 and d.noisy.max() <= 1
    assert d.psnr_noisy == pytest.approx(psnr(d.clean, d.noisy))
    assert d.psnr_denoised == pytest.approx(psnr(d.clean, d.denoised))
    np.testing.assert_allclose(d.denoised, vae.reconstruct(torch.as_tensor(d.noisy)).numpy(), atol=1e-6)
    clean = A.denoise(vae, data, indices=[0, 1], noise_std=0.0)
    np.testing.assert_array_equal(clean.noisy, clean.clean)
    with pytest.raises(AffineVAEError, match="noise_std"):
        A.denoise(vae, data, noise_std=-1)


def test_training_curves(tiny_runs):
    run = tiny_runs.path("vae")
    c = A.training_curves(run)
    hist = read_metrics(run)
    assert c.epochs.tolist() == [h["epoch"] for h in hist]
    np.testing.assert_allclose(c.train["loss"], [h["train_loss"] for h in hist])
    assert set(c.val) == {"loss", "recon", "kl"}
    again = A.training_curves(Run.open(run))  # a Run works as well as its directory
    np.testing.assert_array_equal(again.train["loss"], c.train["loss"])
    with pytest.raises(AffineVAEError, match="no training metrics"):
        A.training_curves([])
    with pytest.raises(AffineVAEError, match="no such run"):
        A.training_curves(run.parent / "missing")
    with pytest.raises(AffineVAEError, match=r"needs a Run, a run directory .* got a VAE$"):
        A.training_curves(tiny_runs.model("vae"))  # a model has no metrics: its run has
    with pytest.raises(AffineVAEError, match="got a list with an element of type int"):
        A.training_curves([1, 2])
    with pytest.raises(AffineVAEError, match="metric 'train_loss' must be a number"):
        A.training_curves([{"epoch": 1, "train_loss": "high"}])
    # metric dicts without 'epoch': numbered 1, 2, ... (not the int64 of NaN); some without it: refused
    assert A.training_curves([{"train_loss": 2.0}, {"train_loss": 1.0}]).epochs.tolist() == [1, 2]
    with pytest.raises(AffineVAEError, match="metric 'epoch' must be a whole number in every epoch"):
        A.training_curves([{"epoch": 1, "train_loss": 2.0}, {"train_loss": 1.0}])
    with pytest.raises(AffineVAEError, match="metric 'epoch' must be a whole number"):
        A.training_curves([{"epoch": 1.5, "train_loss": 2.0}])


@pytest.mark.parametrize("z,match", [
    (np.zeros(5), r"shape \(N, D\) with N >= 1 and D >= 1, got shape \(5,\)"),
    (np.zeros((0, 3)), r"got shape \(0, 3\)"),
    (np.array([[0.0, np.nan], [1.0, np.inf]]), "latents hold 2 NaN or infinite values"),
    ([[0.0, "a"]], r"must be an \(N, D\) array of numbers"),
])
def test_latent_helpers_refuse_nonsense_latents_in_one_line(z, match):
    for where, call in [("embed_2d", lambda: A.embed_2d(z)), ("latent_stats_from_codes", lambda: A.latent_stats_from_codes(z))]:
        with pytest.raises(AffineVAEError, match=f"^{where}: .*{match}") as info:
            call()
        assert "\n" not in str(info.value)


# ------------------------------------------------------------------ every figure is a PNG
def test_every_figure_saves_as_png(tiny_runs, test_data, tmp_path):
    m = {k: tiny_runs.model(k) for k in ("ae", "vae", "cvae", "rvae")}
    mn, rot = test_data["mnist"], test_data["rot"]
    figs = {
        "rec": lambda: A.plot_reconstructions(A.reconstructions(m["vae"], mn, n=5)),
        "scatter": lambda: A.plot_latent_scatter([A.latent_codes(m["rvae"], rot, n=60),
                                                  A.latent_codes(m["vae"], rot, n=60)]),
        "stats": lambda: A.plot_latent_stats([A.latent_stats(m["ae"], mn), A.latent_stats(m["vae"], mn)]),
        "gen": lambda: A.plot_generation([A.generate(m["vae"], n=9), A.generate(m["cvae"], per_class=2)]),
        "manifold": lambda: A.plot_manifold(A.latent_manifold(m["cvae"], d=4, classes=[0, 1, 2, 3, 4, 5])),
        "interp": lambda: A.plot_interpolation([A.interpolate(m["ae"], mn), A.interpolate(m["rvae"], rot)]),
        "arith": lambda: A.plot_arithmetic(A.latent_arithmetic(m["vae"], mn)),
        "angles": lambda: A.plot_angle_comparison(A.angle_comparison(m["rvae"], rot)),
        "sweep": lambda: A.plot_loss_vs_rotation(A.loss_vs_rotation({"vae": m["vae"]}, mn, np.radians([0, 120, 240]), n=8)),
        "hist": lambda: A.plot_rotation_histograms(A.rotation_histograms(_record([0, 1], [[0.0, 1.0], [0.1, 1.1]]))),
        "anomaly": lambda: A.plot_anomaly(A.anomaly_scores(m["ae"], mn, k=4)),
        "denoise": lambda: A.plot_denoising(A.denoise(m["vae"], mn, n=4)),
        "curves": lambda: A.plot_training_curves({"vae": A.training_curves(tiny_runs.path("vae")),
                                                  "ae": A.training_curves(tiny_runs.path("ae"))}),
    }
    for name, build in figs.items():
        path = save_figure(build(), tmp_path / f"{name}.png")
        assert_png(path)


# ------------------------------------------------------------------ the plot command
@pytest.mark.parametrize("kind,extra", [
    ("reconstructions", ["--show", "4"]),
    ("latent", ["--color-by", "class"]),
    ("latent-stats", []),
    ("samples", ["--show", "9"]),
    ("manifold", ["--d", "4", "--bounds=-2,2", "--angle", "30"]),
    ("interpolation", ["--pair", "2,3", "--steps", "4"]),
    ("arithmetic", ["--triple", "0,1,2"]),
    ("loss-vs-rotation", ["--angles", "0,180"]),
    ("anomaly", ["--show", "3"]),
    ("denoising", ["--noise", "0.2", "--show", "3"]),
    ("curves", []),
])
def test_plot_command(tiny_runs, tmp_path, kind, extra):
    out = tmp_path / f"{kind}.png"
    data = [] if kind in ("samples", "manifold", "curves") else ["-n", "40"]  # those draw no data: -n is refused
    assert main(["plot", str(tiny_runs.path("vae")), kind, "--out", str(out), *data, *extra]) == 0
    assert_png(out)


def test_plot_command_compare_and_angles(tiny_runs, tmp_path):
    runs = {k: tiny_runs.path(k) for k in ("ae", "vae", "rvae")}
    out = tmp_path / "stats.png"
    assert main(["plot", str(runs["ae"]), "latent-stats", "--compare", str(runs["vae"]), "--out", str(out), "-n", "30"]) == 0
    assert_png(out)
    out = tmp_path / "angles.png"
    assert main(["plot", str(runs["rvae"]), "angles", "--out", str(out), "-n", "40"]) == 0  # run's own rotated data
    assert_png(out)
    out = tmp_path / "latent.png"
    assert main(["plot", str(runs["rvae"]), "latent", "--color-by", "true-angle,learned-angle", "--out", str(out),
                 "-n", "40"]) == 0
    assert_png(out)


def test_plot_command_errors(tiny_runs, tmp_path, capsys):
    run = str(tiny_runs.path("vae"))
    out = str(tmp_path / "x.png")
    assert main(["plot", run, "spiral", "--out", out]) == 2
    assert "unknown plot kind 'spiral'" in capsys.readouterr().err
    assert main(["plot", run, "angles", "--out", out, "-n", "20"]) == 2
    assert "learns no rotation" in capsys.readouterr().err
    assert main(["plot", run, "rotation-histograms", "--out", out]) == 2
    assert "no pose record" in capsys.readouterr().err
    assert main(["plot", run, "manifold", "--bounds", "1", "--out", out]) == 2
    assert "--bounds" in capsys.readouterr().err
    assert main(["plot", run, "latent", "--color-by", "true-angle", "--out", out, "-n", "20"]) == 2
    assert "no known angles" in capsys.readouterr().err


def test_offset_concentration_reads_full_circle_angles():
    """One offset over the full circle gives 1 (the circular correlation need not), unrelated angles about 0."""
    from affinevae.evaluation import offset_concentration

    rng = np.random.default_rng(0)
    true = rng.uniform(-math.pi, math.pi, 2000)
    learned = np.angle(np.exp(1j * (true + 2.0 + 0.05 * rng.standard_normal(2000))))
    assert offset_concentration(learned, true) > 0.99
    assert offset_concentration(rng.uniform(-math.pi, math.pi, 2000), true) < 0.1
    with pytest.raises(AffineVAEError, match="equal-length angle arrays"):
        offset_concentration(true[:5], true)


def test_plot_labels_the_runs_own_images_and_reads_up_to_its_default_quietly(tmp_path, capsys):
    """`plot RUN latent --color-by class --labels FILE` without --data ignored the labels ("the data
    have no labels"); and the default -n (up to 1000 images) warned on a smaller run that n asked for
    more images than it holds."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "imgs.npy", rng.random((60, 12, 12)).astype(np.float32))
    np.save(tmp_path / "lab.npy", np.arange(60) % 3)
    run = str(tmp_path / "run")
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "imgs.npy"), "--latent-dim", "2", "--encoder", "mlp",
                 "--decoder", "mlp", "--hidden", "8", "--epochs", "1", "--no-progress", "--out", run]) == 0
    capsys.readouterr()
    out = tmp_path / "latent.png"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["plot", run, "latent", "--color-by", "class", "--labels", str(tmp_path / "lab.npy"),
                     "--out", str(out)]) == 0
    assert_png(out)
    assert not [w for w in seen if "asks for more images" in str(w.message)]
    np.save(tmp_path / "short.npy", np.arange(10) % 3)
    assert main(["plot", run, "latent", "--color-by", "class", "--labels", str(tmp_path / "short.npy"),
                 "--out", str(out), "--force"]) == 2
    assert "short.npy: 10 labels for 60 images" in capsys.readouterr().err


def test_angle_scores_fold_a_k_fold_symmetry():
    """2-fold symmetric objects (a galaxy, a rod) look the same turned by 180 degrees, so a model that
    is right modulo 180 scored near 0 ("0.02" for a model at 0.98 mod 180): ``symmetry=k`` counts
    offsets modulo 360/k; bad values are one line."""
    from affinevae.evaluation import class_offset_concentration, offset_concentration

    rng = np.random.default_rng(0)
    true = rng.uniform(-math.pi, math.pi, 4000)
    learned = true + 0.3 + math.pi * rng.integers(0, 2, 4000) + 0.05 * rng.standard_normal(4000)  # right mod 180
    labels = rng.integers(0, 3, 4000)
    assert offset_concentration(learned, true) < 0.1 and class_offset_concentration(learned, true, labels) < 0.1
    assert offset_concentration(learned, true, symmetry=2) > 0.99
    assert class_offset_concentration(learned, true, labels, symmetry=2) > 0.99
    assert offset_concentration(rng.uniform(-math.pi, math.pi, 4000), true, symmetry=2) < 0.1
    from affinevae.evaluation import circular_correlation

    small = rng.uniform(-0.6, 0.6, 4000)  # a correlation needs a spread within the folded range
    flipped = small + math.pi * rng.integers(0, 2, 4000) + 0.02 * rng.standard_normal(4000)
    assert abs(circular_correlation(flipped, small)) < 0.5 and circular_correlation(flipped, small, symmetry=2) > 0.95
    for bad in (0, 1.5, True, 13):
        with pytest.raises(AffineVAEError, match=r"symmetry must be an integer in 1\.\.12"):
            offset_concentration(learned, true, symmetry=bad)
        with pytest.raises(AffineVAEError, match=r"symmetry must be an integer in 1\.\.12"):
            circular_correlation(learned, true, symmetry=bad)


def test_plot_and_report_take_the_symmetry(tiny_runs, tmp_path, capsys):
    run = str(tiny_runs.path("rvae"))
    out = tmp_path / "angles.png"
    assert main(["plot", run, "angles", "--symmetry", "2", "--out", str(out), "-n", "40"]) == 0
    assert_png(out)
    assert main(["plot", run, "angles", "--symmetry", "0", "--out", str(out), "--force", "-n", "40"]) == 2
    assert "--symmetry must be an integer in 1..12" in capsys.readouterr().err
    html_out = tmp_path / "r.html"
    assert main(["report", run, "--out", str(html_out), "-n", "40", "--sweep-angles", "none", "--symmetry", "2",
                 "--quiet"]) == 0
    assert "1: one offset per class, mod 180 deg" in html_out.read_text() or "one offset, mod 180 deg" in \
        html_out.read_text()


def _silenced(model):
    """``model`` with every weight 0: it encodes every image alike (content at the prior, one angle, one class)."""
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def test_learning_warnings_say_what_a_model_failed_to_learn(tiny_runs, test_data):
    """A model that describes every image alike is named so: all content latents unused, a full-circle
    model's angles all alike (not for a lattice's atoms, which share their grain's angle), classes left
    unused; a trained model gets no warning."""
    from affinevae.analysis.quality import learning_warnings

    images = test_data["mnist"].images
    assert learning_warnings(tiny_runs.model("vae"), images) == []
    said = learning_warnings(_silenced(build_model("vae", latent_dim=3)), images)
    assert len(said) == 1 and said[0].startswith("all 3 content latents are unused")
    full = _silenced(build_model("rvae", latent_dim=2, invariances=("rotation",), rotation_mode="full",
                                 group_channels=(4, 4)))
    said = learning_warnings(full, images)
    assert any(s.startswith("the inferred angles hardly vary (resultant length 1.000") for s in said), said
    assert not any("angles" in s for s in learning_warnings(full, images, lattice=True))
    joint = _silenced(build_model("jrvae", latent_dim=2, num_classes=3, invariances=("rotation",)))
    said = learning_warnings(joint, images)
    assert "only 1 of the 3 classes are used on the training images" in said
    assert said[0].startswith("all 2 content latents are unused")
    assert learning_warnings(build_model("cvae", num_classes=10), images) == []  # needs labels: nothing said


def test_unused_content_is_not_said_of_a_model_whose_classes_tell_the_images_apart(monkeypatch, test_data):
    """A spectra audit: a jrVAE that found its 3 phases (class accuracy 1.0) was told its content latents were
    unused and that it 'describes every signal alike'. Its classes tell the signals apart: nothing said."""
    import affinevae.encoding as encoding
    from affinevae.analysis.quality import learning_warnings

    images = test_data["mnist"].images[:60]
    joint = build_model("jrvae", latent_dim=2, num_classes=3, invariances=("rotation",))

    def codes(used):
        def fake(model, x, **kw):
            n = len(x)
            prob = np.eye(3, dtype=np.float32)[np.arange(n) % used]
            return {"z_mean": np.zeros((n, 2), np.float32), "z_std": np.ones((n, 2), np.float32),
                    "class_prob": prob, "class": prob.argmax(1)}
        return fake

    monkeypatch.setattr(encoding, "encode_dataset", codes(3))
    assert learning_warnings(joint, images) == []
    monkeypatch.setattr(encoding, "encode_dataset", codes(1))  # one class and no content: both said
    said = learning_warnings(joint, images)
    assert said[0].startswith("all 2 content latents are unused") and "only 1 of the 3 classes" in said[1]


def test_train_warns_when_the_model_learned_nothing(tmp_path, capsys):
    """Noise under a likelihood sigma as large as the signal: the content latents fall back to the prior;
    train finishes and then says so in a stderr line of its own."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "noise.npy", rng.random((200, 16, 16), dtype=np.float32))
    assert main(["train", "--model", "rvae", "--data", str(tmp_path / "noise.npy"), "--latent-dim", "2",
                 "--invariances", "rotation", "--set", "rotation_mode=full", "--set", "group_channels=4,4",
                 "--likelihood", "gaussian", "--sigma", "1.0", "--epochs", "15", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "affinevae: warning: all 2 content latents are unused (their means vary across the images with a variance below 0.01)" in err


def test_true_angles_that_turn_clockwise_are_said_not_scored_as_a_failure():
    """An audit: a user's angle array turned clockwise on screen (the rotation formula with y the row index); the
    learned angles were its exact mirror (concentration of learned + true 0.999) while plot angles and report
    read 0.05 per class. mirror_note says so; angles as given, or unrelated, get no note."""
    from affinevae.evaluation import mirror_note

    rng = np.random.default_rng(0)
    true = rng.uniform(-np.pi, np.pi, 300)
    labels = np.arange(300) % 3
    learned = -true + labels * 1.0 + rng.normal(0, 0.05, 300)  # mirrored, one offset per class
    note = mirror_note(learned, true, labels)
    assert note is not None and note.startswith("the learned angles follow the true ones mirrored (concentration of "
                                                "learned + true 1.00")
    assert "turn counter-clockwise (negate them)" in note
    assert mirror_note(true + labels, true, labels) is None and mirror_note(rng.uniform(-3, 3, 300), true) is None


def test_angles_right_modulo_a_symmetry_not_given_are_said():
    """An astronomer's 2-fold galaxies scored 0.02 per class over the full turn in `plot angles` (0.65 with
    --symmetry 2), with no hint: evaluation.symmetry_note names the symmetry and the option."""
    from affinevae.evaluation import symmetry_note

    rng = np.random.default_rng(0)
    true = rng.uniform(-np.pi, np.pi, 400)
    labels = rng.integers(0, 2, 400)
    learned = true + 0.4 * labels + np.pi * rng.integers(0, 2, 400) + rng.normal(0, 0.05, 400)  # right mod 180
    note = symmetry_note(learned, true, labels)
    assert note is not None and note.startswith("the learned angles agree with the true ones modulo 180 degrees")
    assert note.endswith("give --symmetry 2 (symmetry=2)")
    assert symmetry_note(learned, true, labels, symmetry=2) is None  # given: nothing to say
    assert symmetry_note(true + 0.3, true, labels) is None  # right over the full turn
    assert symmetry_note(rng.uniform(-np.pi, np.pi, 400), true, labels) is None  # no agreement at all
