"""Angular synchronisation (affinevae.pose.synchronise_angles) and the rVAE's pose anchor built on it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import affinevae as av
from affinevae.errors import AffineVAEError
from affinevae.evaluation import offset_concentration as concentration  # 1: found = true + one offset
from affinevae.nn.affine import Pose, render
from affinevae.pose import SynchronisedAngles, synchronise_angles
from affinevae.pose.sync import SYMMETRY_MARGIN, SYNC_ORDERS

SIZE = 16


def styled_shapes(n: int, seed: int = 0, symmetric: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, 16, 16) images of one shape in n styles (blob sizes and spacing drawn per image), each
    turned by a random angle over the full circle; returns (images, angles radians).

    ``symmetric``: four equal blobs at the corners of a square instead (4-fold symmetric: its turns
    by 90 degrees cannot be told apart)."""
    gen = torch.Generator().manual_seed(seed)
    c = (torch.arange(SIZE, dtype=torch.float32) - (SIZE - 1) / 2) / (SIZE / 2)
    v, u = torch.meshgrid(c, c, indexing="ij")
    style = torch.rand(n, 3, generator=gen)
    if symmetric:
        r = 0.35 + 0.1 * style[:, 0]
        blobs = [(r, 0 * r, 0.15, 1.0), (-r, 0 * r, 0.15, 1.0), (0 * r, r, 0.15, 1.0), (0 * r, -r, 0.15, 1.0)]
    else:
        s = 0.8 + 0.4 * style[:, 0]
        blobs = [(-0.35 * s, -0.3 * s, 0.18 + 0.08 * style[:, 1], 1.0), (0.35 * s, -0.15 * s, 0.18, 0.8),
                 (0.0 * s, 0.4 * s, 0.12 + 0.06 * style[:, 2], 0.6)]
    img = 0
    for a, b, w, h in blobs:
        a, b, w = (torch.as_tensor(t, dtype=torch.float32).reshape(-1, 1, 1).expand(n, 1, 1) for t in (a, b, w))
        img = img + h * torch.exp(-((u - a) ** 2 + (v - b) ** 2) / (2 * w * w))
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.pi
    return render(img.clamp(0, 1)[:, None], Pose(angle=angle)), angle


def test_synchronised_angles_are_the_true_ones_up_to_one_offset():
    x, angle = styled_shapes(300)
    out = synchronise_angles(x, angles=32, neighbours=8, components=20, seed=0)
    assert isinstance(out, SynchronisedAngles)
    assert out.angles.shape == (300,) and out.angles.dtype == np.float32
    assert out.neighbours.shape == out.relative.shape == (300, 8)
    assert (out.neighbours != np.arange(300)[:, None]).all()  # never its own neighbour
    assert concentration(out.angles, angle) > 0.97
    assert out.agreement > 0.9 and out.components == 1
    # the pairwise turns are the true differences a_j - a_i (to within a turn step of 11.25 degrees)
    diff = angle.numpy()[out.neighbours] - angle.numpy()[:, None] - out.relative
    assert np.median(np.abs(np.angle(np.exp(1j * diff)))) < math.radians(11.25)
    # deterministic by seed, and a pool of references gives the same frame
    again = synchronise_angles(x, angles=32, neighbours=8, components=20, seed=0)
    np.testing.assert_array_equal(again.angles, out.angles)
    pooled = synchronise_angles(x, angles=32, neighbours=8, components=20, seed=0, pool=150)
    assert concentration(pooled.angles, angle) > 0.95
    assert set(np.unique(pooled.neighbours)) <= set(range(300)) and len(np.unique(pooled.neighbours)) <= 150


def test_each_connected_component_is_synchronised_on_its_own():
    """Two kinds of object that are never each other's neighbours make two components; within each,
    the angles are the true ones up to that component's own offset."""
    a, angle_a = styled_shapes(120, seed=1)
    b, angle_b = styled_shapes(120, seed=2)
    b = b * 3.0  # far brighter: no cross-kind neighbour at any turn
    out = synchronise_angles(torch.cat([a, b]), angles=32, neighbours=6, components=10, seed=0)
    assert out.components == 2
    assert (out.neighbours[:120] < 120).all() and (out.neighbours[120:] >= 120).all()
    assert concentration(out.angles[:120], angle_a) > 0.95
    assert concentration(out.angles[120:], angle_b) > 0.95


def test_consistency_flags_the_images_that_do_not_fit_the_frame():
    """Each image's consistency averages the agreement of its own neighbour pairs: noise images, which
    match nothing at any turn, score lower than the shapes, and the mean is the overall agreement."""
    x, angle = styled_shapes(300, seed=5)
    gen = torch.Generator().manual_seed(5)
    x[:30] = torch.rand(30, 1, SIZE, SIZE, generator=gen) * x.max()
    out = synchronise_angles(x, angles=32, neighbours=8, components=20, seed=0)
    assert out.consistency.shape == (300,) and out.consistency.dtype == np.float32
    assert (np.abs(out.consistency) <= 1 + 1e-6).all()
    assert out.consistency.mean() == pytest.approx(out.agreement, abs=1e-5)
    assert out.consistency[:30].mean() < out.consistency[30:].mean() - 0.2
    assert concentration(out.angles[30:], angle[30:]) > 0.95


def test_symmetric_objects_are_synchronised_modulo_their_symmetry():
    """A 4-fold symmetric shape has no angle over the full circle (its turns by 90 degrees cannot be told
    apart: agreement low at symmetry 1), but it has one modulo 90 degrees, which the synchronisation
    finds by itself; an asymmetric shape stays at 1 although a larger order agrees about as well."""
    x, angle = styled_shapes(200, symmetric=True)
    options = dict(angles=32, neighbours=8, components=20, seed=0)
    full = synchronise_angles(x, symmetry=1, **options)
    assert full.symmetry == 1 and full.agreement < 0.5 and set(full.agreements) == {1}
    out = synchronise_angles(x, **options)
    assert out.symmetry == 4 and out.agreement > 0.9 and set(out.agreements) == set(SYNC_ORDERS)
    assert out.agreements[1] == pytest.approx(full.agreement)
    assert concentration(out.angles, angle.numpy(), symmetry=4) > 0.95
    assert np.all(np.abs(out.angles) <= math.pi / 4 + 1e-6)  # known modulo 90 degrees only
    assert concentration(full.angles, angle.numpy(), symmetry=4) < 0.5
    plain, angle = styled_shapes(200)
    one = synchronise_angles(plain, **options)
    assert one.symmetry == 1 and one.agreements[2] > one.agreements[1] - SYMMETRY_MARGIN
    given = synchronise_angles(plain, symmetry=2, **options)  # a given order is taken as it is
    assert given.symmetry == 2 and concentration(given.angles, angle.numpy(), symmetry=2) > 0.95


@pytest.mark.parametrize("symmetry", [0, 13, 2.5, "2"])
def test_a_symmetry_that_does_not_exist_is_one_line(symmetry):
    x, _ = styled_shapes(10)
    with pytest.raises(AffineVAEError, match="synchronise_angles: symmetry must be an integer in 1..12"):
        synchronise_angles(x, symmetry=symmetry)
    with pytest.raises(AffineVAEError, match="anchor_symmetry must be an integer in 1..12"):
        small_rvae(anchor_symmetry=symmetry)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((5, 16, 16), np.float32), "shape \\(N, C, H, W\\)"),
    (np.zeros((1, 1, 16, 16), np.float32), "at least 2 images"),
    (np.full((4, 1, 16, 16), np.nan, np.float32), "NaN"),
])
def test_bad_input_is_one_line(bad, match):
    with pytest.raises(AffineVAEError, match=match):
        synchronise_angles(bad)


@pytest.mark.parametrize("option", [{"angles": 2}, {"neighbours": 0}, {"pool": 1}, {"components": 1.5}])
def test_bad_options_are_one_line(option):
    x, _ = styled_shapes(10)
    with pytest.raises(AffineVAEError, match=f"synchronise_angles: {next(iter(option))} must be an integer"):
        synchronise_angles(x, **option)


def small_rvae(**options):
    return av.build_model("rvae", image_shape=(1, SIZE, SIZE), latent_dim=1, invariances=("rotation",),
                          rotation_mode="full", group_channels=(4, 4, 4), encoder_hidden=(32,), hidden=(32,),
                          channels=(8, 16), **options)


def test_pose_anchor_defaults_and_refusals():
    full = dict(latent_dim=2, invariances=("rotation",), rotation_mode="full")
    rvae = av.build_model("rvae", **full).config
    assert rvae.encoder == "equivariant" and rvae.pose_anchor == 10.0 and rvae.group_channels == (4, 8, 8, 8, 8)
    assert av.build_model("crvae", num_classes=3, **full).config.pose_anchor == 10.0
    joint = av.build_model("jrvae", num_classes=3, **full).config
    assert joint.pose_anchor == 0.0 and joint.group_channels == (4, 8, 8)
    # the semi-supervised rVAE anchors (its labels keep the classes apart; full-circle MNIST angles 0.82 against 0.64)
    assert av.build_model("ssrvae", num_classes=3, **full).config.pose_anchor == 10.0
    assert av.build_model("ssrvae", num_classes=3, latent_dim=2, invariances=("rotation",)).config.pose_anchor == 0.0
    assert av.build_model("rvae", latent_dim=2).config.pose_anchor == 0.0  # the MLP encoder: off
    with pytest.raises(AffineVAEError, match="pose_anchor 5 needs encoder 'equivariant'"):
        av.build_model("rvae", latent_dim=2, pose_anchor=5.0)
    assert av.build_model("jrvae", num_classes=3, pose_anchor=1.0, **full).config.pose_anchor == 1.0
    with pytest.raises(AffineVAEError, match="pose_anchor 1 needs encoder 'equivariant'"):
        av.build_model("jrvae", num_classes=3, pose_anchor=1.0, latent_dim=2)
    with pytest.raises(AffineVAEError, match="pose_anchor"):
        av.build_model("rvae", pose_anchor=-1.0, **full)


def test_fit_anchors_the_angle_to_the_synchronised_frame_and_drops_it_after():
    x, angle = styled_shapes(300, seed=1)
    torch.manual_seed(0)
    model = small_rvae()
    res = av.fit(model, x.numpy(), av.TrainConfig(epochs=2, batch_size=50, lr=3e-3, val_split=0.2, progress=False,
                                                  seed=0, checkpoint=False))
    for record in res.history:
        assert record["pose_sync_agreement"] > 0.9
        assert record["train_pose_anchor"] > 0 or record["train_pose_anchor"] < 0  # a real number was added
    assert model._anchor_table is None  # dropped when the fit ends
    model.eval()
    with torch.no_grad():
        found = model.encode(x).pose.angle
    assert concentration(found, angle) > 0.9
    # outside a fit, forward with an index adds no anchor term
    model.train()
    out = model(x[:10], index=torch.arange(10))
    assert "pose_anchor" not in out.terms


def test_a_semi_supervised_rvae_fit_anchors_its_angles_by_default():
    """The ssrVAE over the full circle anchors its encoder's angles to the synchronised frame (as the rVAE)."""
    x, angle = styled_shapes(120, seed=3)
    labels = np.where(np.arange(120) % 4 == 0, np.arange(120) % 2, -1)
    torch.manual_seed(0)
    model = av.build_model("ssrvae", image_shape=(1, SIZE, SIZE), latent_dim=1, invariances=("rotation",),
                           rotation_mode="full", num_classes=2, group_channels=(4, 4, 4), encoder_hidden=(32,),
                           hidden=(32,), classifier_hidden=(16,), labelled_batch=8, labelled_memory=64)
    assert model.config.pose_anchor == 10.0
    res = av.fit(model, (x.numpy(), labels), av.TrainConfig(epochs=2, batch_size=40, lr=3e-3, val_split=0.0,
                                                              progress=False, seed=0, checkpoint=False))
    for record in res.history:
        assert record["pose_sync_agreement"] > 0.9 and np.isfinite(record["train_pose_anchor"])
    model.eval()
    with torch.no_grad():
        found = model.encode(x).pose.angle
    assert concentration(found, angle) > 0.8


def test_pose_anchor_zero_and_objects_that_do_not_agree_add_no_term():
    x, _ = styled_shapes(120, seed=2)
    model = small_rvae(pose_anchor=0.0)
    res = av.fit(model, x.numpy(), av.TrainConfig(epochs=1, batch_size=40, val_split=0.0, progress=False,
                                                  checkpoint=False))
    assert "train_pose_anchor" not in res.history[0] and "pose_sync_agreement" not in res.history[0]
    sym, _ = styled_shapes(120, seed=2, symmetric=True)  # over the full circle, a 4-fold shape does not agree
    model = small_rvae(anchor_symmetry=1)
    res = av.fit(model, sym.numpy(), av.TrainConfig(epochs=1, batch_size=40, val_split=0.0, progress=False,
                                                    checkpoint=False))
    assert res.history[0]["pose_sync_agreement"] < 0.5 and "train_pose_anchor" not in res.history[0]
    assert res.history[0]["pose_sync_symmetry"] == 1
    noise = np.random.default_rng(0).random((120, 1, SIZE, SIZE), dtype=np.float32)  # nothing to agree on
    res = av.fit(small_rvae(), noise, av.TrainConfig(epochs=1, batch_size=40, val_split=0.0, progress=False,
                                                      checkpoint=False))
    assert res.history[0]["pose_sync_agreement"] < 0.5 and "train_pose_anchor" not in res.history[0]


def test_symmetric_objects_are_anchored_modulo_their_symmetry():
    """Rods (2-fold) turned over the full circle: the fit synchronises them modulo 180 degrees, anchors
    the encoder to either of the two turns that look alike, and the learnt angles follow the rods'."""
    rng = np.random.default_rng(0)
    n = 300
    theta = rng.uniform(-math.pi, math.pi, n)
    v, u = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    a, b = u * c - v * s, u * s + v * c
    rods = (np.exp(-(a / 4.0) ** 2 - (b / 1.3) ** 2) + 0.05 * rng.standard_normal((n, SIZE, SIZE))).clip(0, 1)
    torch.manual_seed(0)
    model = small_rvae()
    res = av.fit(model, rods[:, None].astype(np.float32), av.TrainConfig(
        epochs=3, batch_size=50, lr=3e-3, val_split=0.0, progress=False, seed=0, checkpoint=False))
    assert res.history[0]["pose_sync_symmetry"] == 2 and res.history[0]["pose_sync_agreement"] > 0.9
    assert "train_pose_anchor" in res.history[0]
    model.eval()
    with torch.no_grad():
        found = model.encode(torch.as_tensor(rods[:, None], dtype=torch.float32)).pose.angle.numpy()
    assert concentration(found, theta, symmetry=2) > 0.9
    # the term accepts either turn: a posterior sure of a + pi costs what one sure of a does
    from affinevae.nn.circular import RotationPosterior
    logits = torch.full((2, 8), -20.0)
    logits[0, 0] = logits[1, 4] = 20.0  # bins 0 and 4 (0 and 180 degrees)
    post = RotationPosterior(logits=logits, offset_mean=torch.zeros(2, 8), offset_logstd=torch.full((2, 8), -3.0))
    model.train()
    model.pose_sync_symmetry, model._batch_anchor = 2, torch.zeros(2)
    term = model.anchor_terms(type("Enc", (), {"rotation": post})())["pose_anchor"]()
    model.pose_sync_symmetry = 1
    one = model.anchor_terms(type("Enc", (), {"rotation": post})())["pose_anchor"]()
    model._batch_anchor = None
    assert float(one) > float(term) + 100  # over the full circle the 180-degree posterior is far off


def test_a_resumed_fit_reads_the_targets_its_run_derived(tmp_path, monkeypatch):
    """The synchronised angles and content targets are kept in the run directory: a resume (even with
    another seed) anchors to the same ones without synchronising or embedding again; an unreadable
    file is said in one warning and derived again."""
    import affinevae.models.rvae as rvae_module
    from affinevae.io import FIT_TARGETS, load_tensors

    x, _ = styled_shapes(120, seed=3)
    cfg = dict(batch_size=40, val_split=0.0, progress=False)
    tables = []
    plain = rvae_module.RVAE.on_epoch_start

    def spy(self, *args):
        tables.append((self._anchor_table.clone(), self._content_table.clone()))
        return plain(self, *args)
    monkeypatch.setattr(rvae_module.RVAE, "on_epoch_start", spy)
    torch.manual_seed(0)
    av.fit(small_rvae(), x.numpy(), av.TrainConfig(epochs=1, seed=0, **cfg), out=tmp_path / "run")
    stored = {k: v.clone() for k, v in load_tensors(tmp_path / "run" / FIT_TARGETS).items()}
    assert stored["angles"].shape == (120,) and stored["content"].shape == (120, 1)
    assert float(stored["agreement"]) > 0.9 and torch.equal(tables[0][0], stored["angles"])

    def refused(*args, **kwargs):
        raise AssertionError("derived again")
    monkeypatch.setattr(rvae_module, "synchronise_angles", refused)
    with pytest.warns(UserWarning, match="resuming with seed 5"):
        res = av.fit(av.load(tmp_path / "run"), x.numpy(), av.TrainConfig(epochs=2, seed=5, **cfg),
                     out=tmp_path / "run", resume=True)
    assert [r["epoch"] for r in res.history] == [1, 2] and res.history[1]["pose_sync_agreement"] > 0.9
    assert "train_pose_anchor" in res.history[1] and "train_content_anchor" in res.history[1]
    assert torch.equal(tables[1][0], tables[0][0]) and torch.equal(tables[1][1], tables[0][1])
    monkeypatch.undo()
    (tmp_path / "run" / FIT_TARGETS).write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match=f"{FIT_TARGETS}: corrupt training targets.*derived again"):
        av.fit(av.load(tmp_path / "run"), x.numpy(), av.TrainConfig(epochs=3, seed=0, **cfg), out=tmp_path / "run",
               resume=True)
    again = load_tensors(tmp_path / "run" / FIT_TARGETS)  # written anew: the same seed gives the same targets
    assert torch.equal(again["angles"], stored["angles"]) and torch.equal(again["content"], stored["content"])


def test_a_run_from_before_anchor_symmetry_resumes_over_the_full_circle(tmp_path, monkeypatch):
    """A run written before ``anchor_symmetry`` existed (its model.json lacks it) loads with 1, as it was
    trained, and resumes so from Python and from the command line (it was refused as another model); so
    does an AVAE around such an rVAE. The shapes are 4-fold symmetric, so a new run would take 4."""
    import json

    from affinevae.cli import main
    from affinevae.cli.train import predated_options
    from affinevae.models.rvae import RVAE, RVAEConfig

    x, _ = styled_shapes(120, seed=3, symmetric=True)
    np.save(tmp_path / "x.npy", x.numpy())
    cfg = dict(batch_size=40, val_split=0.0, progress=False, seed=0)
    args = ["train", "--data", str(tmp_path / "x.npy"), "--model", "rvae", "--invariances", "rotation", "--set",
            "rotation_mode=full", "--set", "group_channels=4,4,4", "--hidden", "32", "--latent-dim", "1",
            "--batch-size", "40", "--no-progress", "--seed", "0"]
    plain = RVAEConfig.to_dict
    monkeypatch.setattr(RVAEConfig, "to_dict", lambda self: {k: v for k, v in plain(self).items() if k != "anchor_symmetry"})
    torch.manual_seed(0)
    av.fit(small_rvae(), x.numpy(), av.TrainConfig(epochs=1, **cfg), out=tmp_path / "run")
    assert main([*args, "--epochs", "1", "--out", str(tmp_path / "cli")]) == 0
    avae = av.build_model("avae", inner="rvae", image_shape=(1, SIZE, SIZE), latent_dim=1, pose_head=False,
                          inner_config=dict(invariances=["rotation"], rotation_mode="full", group_channels=[4, 4],
                                            encoder_hidden=[16], hidden=[16], channels=[8, 8]))
    av.fit(avae, x.numpy(), av.TrainConfig(epochs=1, **cfg), out=tmp_path / "avae")
    monkeypatch.undo()
    for run in ("run", "cli"):
        assert "anchor_symmetry" not in json.loads((tmp_path / run / "model.json").read_text())["config"]
    # the command line builds the model from its options: the option the run predates takes its former value
    assert predated_options(tmp_path / "run", RVAE, {"latent_dim": 1}) == {"latent_dim": 1, "anchor_symmetry": 1}
    assert predated_options(tmp_path / "run", RVAE, {"anchor_symmetry": 2}) == {"anchor_symmetry": 2}
    assert predated_options(tmp_path / "none", RVAE, {"latent_dim": 1}) == {"latent_dim": 1}
    model = av.load(tmp_path / "run")
    assert model.config.anchor_symmetry == 1
    res = av.fit(model, x.numpy(), av.TrainConfig(epochs=2, **cfg), out=tmp_path / "run", resume=True)
    assert [r["epoch"] for r in res.history] == [1, 2] and res.history[1]["pose_sync_symmetry"] == 1
    assert main([*args, "--epochs", "2", "--out", str(tmp_path / "cli"), "--resume"]) == 0
    records = [json.loads(line) for line in (tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[1]["pose_sync_symmetry"] == 1
    inner = av.load(tmp_path / "avae").vae
    assert inner.config.anchor_symmetry == 1
    from affinevae.models.avae import AVAE
    assert predated_options(tmp_path / "avae", AVAE, {"inner": "rvae"}) == {"inner": "rvae", "anchor_symmetry": 1}
    res = av.fit(av.load(tmp_path / "avae"), x.numpy(), av.TrainConfig(epochs=2, **cfg), out=tmp_path / "avae",
                 resume=True)
    assert [r["epoch"] for r in res.history] == [1, 2]
    torch.manual_seed(0)
    av.fit(small_rvae(), x.numpy(), av.TrainConfig(epochs=1, **cfg), out=tmp_path / "new")
    assert predated_options(tmp_path / "new", RVAE, {"latent_dim": 1}) == {"latent_dim": 1}
    new = av.load(tmp_path / "new")
    assert new.config.anchor_symmetry is None and new.pose_sync_symmetry is None  # chosen by the synchronisation
    res = av.fit(new, x.numpy(), av.TrainConfig(epochs=2, **cfg), out=tmp_path / "new", resume=True)
    assert res.history[1]["pose_sync_symmetry"] == 4


def test_the_joint_model_takes_the_anchor_when_given():
    x, _ = styled_shapes(120, seed=4)
    model = av.build_model("jrvae", image_shape=(1, SIZE, SIZE), latent_dim=1, num_classes=2, invariances=("rotation",),
                           rotation_mode="full", group_channels=(4, 4), encoder_hidden=(32,), hidden=(32,),
                           classifier_hidden=(32,), channels=(8, 16), class_init="none", pose_anchor=5.0)
    res = av.fit(model, x.numpy(), av.TrainConfig(epochs=1, batch_size=40, val_split=0.0, progress=False,
                                                  checkpoint=False))
    assert res.history[0]["pose_sync_agreement"] > 0.9 and "train_pose_anchor" in res.history[0]


def test_a_non_zero_background_does_not_make_quarter_turns_win():
    """Noisy rods on a grey background (a sky, a stretched stack): every neighbour's turn came out a
    multiple of 90 degrees, because a quarter turn moves the square frame's corners onto corners; the
    turned images are now compared inside their inscribed disc, and the angles are found (modulo the
    rods' half turn)."""

    rng = np.random.default_rng(0)
    n, w = 300, 24
    theta = rng.uniform(-math.pi, math.pi, n)
    v, u = np.mgrid[:w, :w] - (w - 1) / 2
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    a, b = u * c - v * s, u * s + v * c
    for sky in (0.3, 0.8):  # (0.8: the rim of the inscribed disc, dimmed by every turn but the quarter ones, did it)
        img = sky + 0.6 * np.exp(-(a / 6.0) ** 2 - (b / 2.0) ** 2) + 0.05 * rng.standard_normal((n, w, w))
        found = synchronise_angles(img[:, None].astype(np.float32))
        turns = np.degrees(np.angle(np.exp(1j * found.relative.ravel()))) % 90
        assert np.mean((turns < 1) | (turns > 89)) < 0.1  # was 1.0 (uniform turns over 32 steps: 0.125)
        assert concentration(found.angles, theta, symmetry=2) > 0.9  # was 0.60
    with pytest.raises(AffineVAEError, match="must be square"):
        synchronise_angles(np.zeros((4, 1, 20, 32), np.float32))


def test_aligned_components_separate_shapes_in_their_common_frame():
    """The content anchor's targets: principal components of the images turned into their frame, unit variance,
    the same for turned copies (turned back by their angles), and the shapes apart."""
    from sklearn.cluster import KMeans

    from affinevae.mapping import clustering_accuracy
    from affinevae.models.rvae import aligned_components

    a, angle_a = styled_shapes(100, seed=3)
    b, angle_b = styled_shapes(100, seed=4, symmetric=True)
    x, angle = torch.cat([a, b]), torch.cat([angle_a, angle_b])
    z = aligned_components(x, angle, 2)
    assert z.shape == (200, 2) and torch.allclose(z.std(0), torch.ones(2), atol=1e-4)
    labels = np.repeat([0, 1], 100)
    assert clustering_accuracy(KMeans(2, n_init=10, random_state=0).fit_predict(z.numpy()), labels) > 0.95
    assert torch.equal(aligned_components(x, angle, 2, chunk=7), z)  # projected chunk by chunk alike
    few = aligned_components(x, angle, 2, fit_at_most=100)  # fewer images than pixels: the Gram matrix's way
    assert (few * z).sum(0).abs().div(200).min() > 0.95
    three = aligned_components(x[:3], angle[:3], 5)  # fewer images than latents: the rest at the prior's mean
    assert three.shape == (3, 5) and torch.isfinite(three).all() and torch.equal(three[:, 3:], torch.zeros(3, 2))
    extra = torch.full((200,), 0.7)
    again = aligned_components(render(x, Pose(angle=extra)), angle + extra, 2)
    assert (again * z).sum(0).abs().div(200).min() > 0.95  # the same coordinates (up to each component's sign)


def test_aligned_embedding_gathers_shapes_and_places_the_images_it_did_not_embed():
    """The content anchor's default targets for a few latents: t-SNE of the images turned into their frame
    keeps the two shapes apart, unit variance, deterministic for a seed; images past ``fit_at_most`` take
    their embedded neighbours' place (their own shape's group)."""
    from sklearn.cluster import KMeans

    from affinevae.mapping import clustering_accuracy
    from affinevae.pose.classes import aligned_components, aligned_embedding

    a, angle_a = styled_shapes(100, seed=3)
    b, angle_b = styled_shapes(100, seed=4, symmetric=True)
    x, angle = torch.cat([a, b]), torch.cat([angle_a, angle_b])
    labels = np.repeat([0, 1], 100)
    z = aligned_embedding(x, angle, 2, seed=0, threads=1)
    assert z.shape == (200, 2) and z.dtype == torch.float32 and torch.isfinite(z).all()
    assert torch.allclose(z.mean(0), torch.zeros(2), atol=1e-4) and torch.allclose(z.std(0), torch.ones(2), atol=1e-2)
    assert clustering_accuracy(KMeans(2, n_init=10, random_state=0).fit_predict(z.numpy()), labels) == 1.0
    assert torch.equal(aligned_embedding(x, angle, 2, seed=0, threads=1), z)  # the seed fixes it
    part = aligned_embedding(x, angle, 1, seed=0, fit_at_most=60, threads=1)  # 60 embedded, 140 placed
    assert part.shape == (200, 1)
    assert clustering_accuracy(KMeans(2, n_init=10, random_state=0).fit_predict(part.numpy()), labels) == 1.0
    blank = aligned_embedding(torch.zeros(64, 1, SIZE, SIZE), torch.zeros(64), 2)  # t-SNE crashed (SIGSEGV) on these
    assert torch.equal(blank, torch.zeros(64, 2))
    copies = aligned_embedding(a[:1].repeat(64, 1, 1, 1), angle_a[:1].repeat(64), 2)  # identical images: all at 0
    assert torch.equal(copies, torch.zeros(64, 2))
    few = aligned_embedding(x[:5], angle[:5], 2)  # no neighbourhoods to keep: the principal components
    assert few.shape == (5, 2) and torch.isfinite(few).all()
    with pytest.raises(AffineVAEError, match="t-SNE embeds in 1 to 3"):
        aligned_embedding(x, angle, 4)
    as_numpy = aligned_embedding(x.numpy(), angle.numpy(), 2, seed=0, threads=1)  # arrays as the README gives them
    assert torch.equal(as_numpy, z)
    with pytest.raises(AffineVAEError, match=r"aligned_embedding: \(5,\) angles for 200 images \(one per image\)"):
        aligned_embedding(x, angle[:5], 2)
    with pytest.raises(AffineVAEError, match="aligned_components: the angles hold NaN"):
        aligned_components(x, torch.full((200,), float("nan")), 2)
    with pytest.raises(AffineVAEError, match=r"needs images of shape \(N, C, H, W\)"):
        aligned_components(x[:, 0], angle, 2)
    with pytest.raises(AffineVAEError, match="must be square, got 16x12"):
        aligned_components(x[..., :12], angle, 2)


def test_synchronised_kmeans_finds_shapes_whatever_their_turn():
    """The joint model's full-circle start: synchronise, embed, k-means; the labels match the shapes,
    the angles put each shape in one frame, the centres are the shapes' means in it."""
    from affinevae.mapping import clustering_accuracy
    from affinevae.pose import synchronised_kmeans

    a, angle_a = styled_shapes(100, seed=3)
    b, angle_b = styled_shapes(100, seed=4, symmetric=True)
    x = torch.cat([a, b])
    labels = np.repeat([0, 1], 100)
    found = synchronised_kmeans(x, 2, seed=0)
    assert found.labels.dtype == np.int64 and clustering_accuracy(found.labels, labels) == 1.0
    assert found.angles.shape == (200,) and found.centres.shape == (2, 1, SIZE, SIZE) and found.inertia > 0
    assert concentration(found.angles[:100], angle_a.numpy()) > 0.9  # the asymmetric shape: one frame
    again = synchronised_kmeans(x, 2, seed=0)
    assert np.array_equal(again.labels, found.labels) and np.array_equal(again.angles, found.angles)
    with pytest.raises(AffineVAEError, match="synchronised_kmeans: 3 images cannot make 4 classes"):
        synchronised_kmeans(x[:3], 4)
    given = synchronised_kmeans(x, 2, seed=0, angles=found.angles)  # angles already synchronised: the same
    assert np.array_equal(given.labels, found.labels)
    with pytest.raises(AffineVAEError, match=r"synchronised_kmeans: \(5,\) angles for 200 images"):
        synchronised_kmeans(x, 2, angles=np.zeros(5))


def test_the_embedding_start_falls_back_to_aligned_kmeans_when_the_views_do_not_synchronise():
    """Faint objects (pure noise here: agreement about 0.35) whose synchronisation agrees below 0.7 get the
    aligned k-means start; shapes that synchronise get the embedding's."""
    from affinevae.models.joint import EMBEDDING_START_AGREEMENT, embedding_start

    model = av.build_model("jrvae", image_shape=(1, SIZE, SIZE), latent_dim=1, num_classes=2, invariances=("rotation",),
                           rotation_mode="full", group_channels=(4, 4))
    noise = torch.rand(120, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    assert synchronise_angles(noise, seed=0, symmetry=1).agreement < EMBEDDING_START_AGREEMENT
    labels, used = embedding_start(model, noise, 0)
    assert used == "aligned" and labels.shape == (120,)
    a, _ = styled_shapes(60, seed=3)
    b = styled_shapes(60, seed=5)[0].flip(-1)  # its mirror image: no turn makes one the other
    labels, used = embedding_start(model, torch.cat([a, b]), 0)
    assert used == "embedded" and sorted(np.bincount(labels)) == [60, 60]


def test_joint_start_space_is_chosen_and_refused_in_one_line():
    full = dict(latent_dim=2, num_classes=3, invariances=("rotation",), rotation_mode="full")
    assert av.build_model("jrvae", **full).config.class_init_space == "embedding"
    assert av.build_model("jrvae", class_init_space="aligned", **full).config.class_init_space == "aligned"
    with pytest.raises(AffineVAEError, match="class_init_space"):
        av.build_model("jrvae", class_init_space="tsne", **full)


def test_content_anchor_defaults_by_family_and_latents():
    """100 with t-SNE targets for an anchored rVAE of 1-3 latents; off with 4 (principal components) and
    for the crVAE and the joint model; t-SNE targets for 4 latents are refused in one line."""
    full = dict(invariances=("rotation",), rotation_mode="full")
    two = av.build_model("rvae", latent_dim=2, **full).config
    assert (two.content_anchor, two.content_targets) == (100.0, "embedding")
    four = av.build_model("rvae", latent_dim=4, **full).config
    assert (four.content_anchor, four.content_targets) == (0.0, "components")
    assert av.build_model("rvae", latent_dim=2, pose_anchor=0.0, **full).config.content_anchor == 0.0
    assert av.build_model("rvae", latent_dim=2).config.content_anchor == 0.0  # no equivariant encoder: no anchor
    assert av.build_model("crvae", latent_dim=2, num_classes=3, **full).config.content_anchor == 0.0
    assert av.build_model("jrvae", latent_dim=2, num_classes=3, **full).config.content_anchor == 0.0
    given = av.build_model("rvae", latent_dim=4, content_anchor=5.0, **full).config
    assert (given.content_anchor, given.content_targets) == (5.0, "components")
    with pytest.raises(AffineVAEError, match=r"content_targets 'embedding' embeds in 1 to 3 dimensions .* latent_dim is 4"):
        av.build_model("rvae", latent_dim=4, content_targets="embedding", **full)
    with pytest.raises(AffineVAEError, match="content_targets"):
        av.build_model("rvae", latent_dim=2, content_targets="tsne", **full)
    # targets asked for turn their anchor on at their measured weight
    asked = av.build_model("rvae", latent_dim=2, content_targets="components", **full).config
    assert (asked.content_anchor, asked.content_targets) == (10.0, "components")
    assert av.build_model("crvae", latent_dim=2, num_classes=3, content_targets="embedding", **full).config.content_anchor == 100.0
    # a config of 1-3 latents without the anchor takes more latents by replace (its resolved targets do not refuse it)
    plain = av.build_model("rvae", latent_dim=2).config
    assert plain.replace(latent_dim=5).latent_dim == 5
    assert av.build_model("rvae", latent_dim=5, content_targets="embedding", content_anchor=0.0, **full).config.latent_dim == 5
    # options resolved from others follow a replace; given ones stay and are checked
    anchored = av.build_model("rvae", latent_dim=2, **full).config
    off = anchored.replace(pose_anchor=0.0)
    assert (off.pose_anchor, off.content_anchor, off.content_targets) == (0.0, 0.0, "embedding")
    more = anchored.replace(latent_dim=5)
    assert (more.content_anchor, more.content_targets) == (0.0, "components")
    assert more.replace(latent_dim=2).content_anchor == 100.0
    gaussian = anchored.replace(rotation_mode="gaussian")
    assert (gaussian.encoder, gaussian.pose_anchor) == (av.build_model("rvae", latent_dim=2).config.encoder, 0.0)
    kept = av.build_model("rvae", latent_dim=2, content_anchor=30.0, **full).config
    assert kept.replace(latent_dim=3).content_anchor == 30.0
    with pytest.raises(AffineVAEError, match="content_anchor 30 needs the pose anchor"):
        kept.replace(pose_anchor=0.0)


def test_a_finished_run_resumed_makes_no_anchor_targets(tmp_path, monkeypatch):
    """Nothing left to train: the synchronisation and the t-SNE (a minute for 10 000 images) are not run."""
    import affinevae.models.rvae as rvae_module

    x, _ = styled_shapes(80, seed=5)
    cfg = av.TrainConfig(epochs=1, batch_size=40, val_split=0.0, progress=False)
    av.fit(small_rvae(), x.numpy(), cfg, out=tmp_path / "run")
    calls = []
    monkeypatch.setattr(rvae_module, "synchronise_angles", lambda *a, **k: calls.append(1))
    with pytest.warns(UserWarning, match="nothing to train"):
        av.fit(small_rvae(), x.numpy(), cfg, out=tmp_path / "run", resume=True)
    assert calls == []


def test_content_anchor_adds_its_named_term_in_a_fit_only_and_needs_the_pose_anchor():
    x, _ = styled_shapes(120, seed=5)
    model = small_rvae(content_anchor=10.0)
    res = av.fit(model, x.numpy(), av.TrainConfig(epochs=1, batch_size=40, val_split=0.0, progress=False,
                                                  checkpoint=False))
    assert res.history[0]["train_content_anchor"] > 0 and "val_content_anchor" not in res.history[0]
    assert res.history[0]["content_anchor_embedded"] == 1.0  # 1 latent: t-SNE targets, said in the record
    assert model._content_table is None and model._anchor_table is None  # dropped when the fit ends
    model.train()
    assert "content_anchor" not in model(x[:10], index=torch.arange(10)).terms
    res = av.fit(small_rvae(content_anchor=0.0), x.numpy(), av.TrainConfig(epochs=1, batch_size=40, val_split=0.0,
                                                                           progress=False, checkpoint=False))
    assert "train_content_anchor" not in res.history[0]  # off when 0
    with pytest.raises(AffineVAEError, match=r"content_anchor 10 needs the pose anchor \(pose_anchor > 0\)"):
        small_rvae(content_anchor=10.0, pose_anchor=0.0)
    with pytest.raises(AffineVAEError, match="content_anchor"):
        small_rvae(content_anchor=-1.0)


def test_aligned_embedding_takes_the_faster_barnes_hut_angle_for_large_sets(monkeypatch):
    """Barnes-Hut's angle 0.8 (t-SNE of 10 000 digits in 27 s against 44 s, the embedding alike) from
    EMBEDDING_FAST_FROM embedded images on; scikit-learn's 0.5 for fewer (seconds anyway)."""
    import sklearn.manifold

    from affinevae.pose.classes import EMBEDDING_ANGLE, EMBEDDING_FAST_FROM, aligned_embedding

    seen = []

    class Spy:
        def __init__(self, k, **kw):
            seen.append(kw["angle"])
            self.k = k

        def fit_transform(self, x):
            return np.random.default_rng(0).standard_normal((len(x), self.k))

    monkeypatch.setattr(sklearn.manifold, "TSNE", Spy)
    x = torch.rand(EMBEDDING_FAST_FROM, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    aligned_embedding(x, torch.zeros(len(x)), 2, fit_at_most=EMBEDDING_FAST_FROM)
    aligned_embedding(x, torch.zeros(len(x)), 2, fit_at_most=EMBEDDING_FAST_FROM - 1)
    assert seen == [EMBEDDING_ANGLE, 0.5] and EMBEDDING_ANGLE == 0.8
