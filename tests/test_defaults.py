"""Patch sets carry what `train` needs for its defaults; affinevae.defaults.data_defaults chooses them."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import affinevae as av
from affinevae.cli import main
from affinevae.data import ImageSet, load_dataset
from affinevae.data.files import load_images
from affinevae.data.imageset import noise_sigma
from affinevae.data.micrograph import synthetic_micrograph
from affinevae.data.patches import PatchSet, cut_patches
from affinevae.defaults import (DEFAULT_EPOCHS, MAX_EPOCHS, MIN_STEPS, PATCH_BATCH_SIZE, PATCH_KL_WARMUP, PATCH_SIGMA_RADIUS, PATCH_LR,
                                LATTICE_ORDER, SIGMA_FLOOR, data_defaults)
from affinevae.training import TrainConfig
from affinevae.errors import AffineVAEError

NOISE = 0.05


@pytest.fixture(scope="module")
def noisy_patches():
    """Patches of a micrograph with Gaussian noise NOISE added, and that noise in the patches' units."""
    clean, _ = synthetic_micrograph(size=(96, 96), spacing=8.0, noise=0.0, seed=0)
    img = 0.1 + 0.8 * clean + np.random.default_rng(0).normal(0.0, NOISE, clean.shape)
    lo, hi = img.min(), img.max()
    true = NOISE if lo >= 0 and hi <= 1 else NOISE / (hi - lo)   # min-max scaling shrinks the noise with the range
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ps = cut_patches(img.astype(np.float32), 12, min_distance=3, threshold=0.3)
    return ps, true


def test_noise_estimate_and_patch_metadata_round_trip(noisy_patches, tmp_path):
    ps, true = noisy_patches
    assert abs(ps.noise_sigma() / true - 1) < 0.3
    assert noise_sigma(np.zeros((3, 8, 8))) == 0.0
    ramp = np.add.outer(np.arange(8.0), np.arange(8.0))[None] / 20    # linear intensity: no noise
    assert noise_sigma(ramp) == pytest.approx(0.0, abs=1e-12)
    ps.save(tmp_path / "p.npz")
    data = load_images(str(tmp_path / "p.npz"))
    assert data.meta == {"kind": "patches", "window": 12, "noise_sigma": pytest.approx(ps.noise_sigma()),
                         **{k: pytest.approx(v) for k, v in ps.arrangement().items()}}
    assert set(ps.arrangement()) == {"spacing", "lattice_order", "lattice_fold"}
    np.testing.assert_array_equal(data.images[:, 0], ps.patches)
    assert load_dataset(str(tmp_path / "p.npz"), n=5).meta == data.meta           # -n keeps it
    assert "noise_sigma" not in data.binarized().meta and data.binarized().meta["kind"] == "patches"
    assert "noise_sigma" not in load_images(str(tmp_path / "p.npz"), standardise=True).meta
    back = PatchSet.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(back.centers, ps.centers)
    # a patch set in other units: the estimate is in the units load_images gives it
    scaled = PatchSet((ps.patches * 255).astype(np.uint8), ps.centers, ps.frames, 12)
    assert scaled.noise_sigma() == pytest.approx(ps.noise_sigma(), rel=0.1)
    # files from before: still loadable, as plain data
    np.savez(tmp_path / "old.npz", patches=ps.patches, centers=ps.centers, frames=ps.frames, window=12)
    assert load_images(str(tmp_path / "old.npz")).meta == {}
    assert len(PatchSet.load(tmp_path / "old.npz")) == len(ps)
    np.savez(tmp_path / "bad.npz", patches=ps.patches, kind=np.array("patches"), noise_sigma=np.array([1.0, 2.0]))
    with pytest.raises(AffineVAEError, match="bad.npz: noise_sigma must be a scalar"):
        load_images(str(tmp_path / "bad.npz"))


def patch_set(n=100, sigma=0.04):
    return ImageSet(np.zeros((n, 1, 8, 8), np.float32), meta={"kind": "patches", "window": 8, "noise_sigma": sigma})


def test_data_defaults_for_patch_sets_and_what_wins():
    given = {"image_shape": [1, 8, 8], "latent_dim": 2}
    opts, train, line = data_defaults(patch_set(), "rvae", given, None, None)
    assert opts == {**given, "invariances": ["rotation", "translation"], "rotation_mode": "full", "encoder": "mlp",
                    "hidden": [32, 32], "likelihood": "gaussian", "sigma": SIGMA_FLOOR,
                    "sigma_radius": PATCH_SIGMA_RADIUS}
    assert train == {"batch_size": PATCH_BATCH_SIZE, "lr": PATCH_LR, "kl_warmup": PATCH_KL_WARMUP,
                     "epochs": MAX_EPOCHS}  # 4 steps an epoch: capped
    assert line == ("affinevae: patch-set defaults: invariances=rotation,translation rotation_mode=full "
                    "encoder=mlp hidden=32,32 likelihood=gaussian sigma=0.1 sigma_radius=0.7 batch_size=32 lr=0.003 kl_warmup=0.3 "
                    "epochs=200 (override with --invariances/--set/--encoder/--hidden/--likelihood/--sigma/"
                    "--batch-size/--lr/--kl-warmup/--epochs)")
    assert data_defaults(patch_set(), "rvae", {"image_shape": [1, 8, 8]}, None, None)[0]["latent_dim"] == 4
    assert data_defaults(patch_set(n=6000), "crvae", given, 64, None)[1]["epochs"] == math.ceil(MIN_STEPS / 94)
    assert data_defaults(patch_set(n=6000), "crvae", given, None, None)[1]["epochs"] == math.ceil(MIN_STEPS / 188)
    assert data_defaults(patch_set(n=10 ** 4), "rvae", given, 10 ** 4, None)[1]["epochs"] == MAX_EPOCHS
    assert data_defaults(patch_set(n=10 ** 5), "rvae", given, 1, None)[1]["epochs"] == 1
    assert data_defaults(patch_set(sigma=0.0), "rvae", given, 32, None)[0]["sigma"] == SIGMA_FLOOR
    assert data_defaults(patch_set(sigma=0.171234), "rvae", given, 32, None)[0]["sigma"] == 0.171
    # patches that span a small part of [0, 1] (12-bit data in uint16) get a floor scaled with their span
    dim = patch_set(sigma=0.003)
    dim.images[:, :, 4, 4] = 0.0625
    assert data_defaults(dim, "rvae", given, 32, None)[0]["sigma"] == pytest.approx(SIGMA_FLOOR * 0.125)
    # every option given explicitly wins, and is not announced
    mine = {**given, "likelihood": "bernoulli", "invariances": ["translation"], "rotation_mode": "gaussian",
            "hidden": [8], "encoder": "conv"}
    opts, train, line = data_defaults(patch_set(), "rvae", mine, 16, 7, 1e-4, 0.0)
    assert opts == mine and train == {"batch_size": 16, "lr": 1e-4, "kl_warmup": 0.0, "epochs": 7} and line == ""
    opts, train, line = data_defaults(patch_set(), "rvae", {**given, "sigma": 0.3, "invariances": "rotation"}, 32, 3,
                                      1e-3, 0.5)
    assert opts["sigma"] == 0.3 and opts["invariances"] == "rotation" and opts["rotation_mode"] == "full"
    assert train["kl_warmup"] == 0.5
    assert line == ("affinevae: patch-set defaults: rotation_mode=full encoder=mlp hidden=32,32 likelihood=gaussian "
                    "sigma_radius=0.7 (override with --set/--encoder/--hidden/--likelihood)")
    # the centred sigma window only comes with a Gaussian likelihood, and a given radius wins
    assert "sigma_radius" not in data_defaults(patch_set(), "rvae", {**given, "likelihood": "bernoulli"}, 32, 3)[0]
    assert data_defaults(patch_set(), "rvae", {**given, "sigma_radius": 0.0}, 32, 3)[0]["sigma_radius"] == 0.0
    opts, _, _ = data_defaults(patch_set(), "rvae", {**given, "invariances": []}, 32, 3)
    assert "rotation_mode" not in opts                               # no rotation, no rotation prior
    binary = patch_set()
    binary.meta.pop("noise_sigma")
    assert "likelihood" not in data_defaults(binary, "rvae", given, 32, 3)[0]
    # plain data and other families: exactly the options given, the trainer's defaults
    plain = {"batch_size": TrainConfig.batch_size, "lr": TrainConfig.lr, "kl_warmup": 0.0, "epochs": DEFAULT_EPOCHS}
    for data, family in ((ImageSet(np.zeros((100, 1, 8, 8), np.float32)), "crvae"), (patch_set(), "vae")):
        assert data_defaults(data, family, given, None, None)[:2] == (given, plain)
        assert data_defaults(data, family, given, 32, 4)[1] == {**plain, "batch_size": 32, "epochs": 4}
    with pytest.raises(AffineVAEError, match="batch_size"):
        data_defaults(patch_set(), "rvae", given, 0, None)


def test_cli_train_on_a_patch_set_prints_its_defaults(noisy_patches, tmp_path, capsys):
    import affinevae as av

    ps, _ = noisy_patches
    ps.save(tmp_path / "p.npz")
    argv = ["train", "--model", "rvae", "--data", str(tmp_path / "p.npz"), "--out", str(tmp_path / "run"),
            "--latent-dim", "2", "--hidden", "8,8", "--set", "encoder_hidden=[16]", "--no-progress", "--epochs", "1"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    sigma = max(float(f"{ps.noise_sigma():.3g}"), SIGMA_FLOOR)
    order = ps.arrangement()["lattice_order"]
    assert lines[0] == ("affinevae: patch-set defaults: invariances=rotation,translation rotation_mode=full "
                        f"encoder=mlp (a lattice: lattice order {order:.2f}) likelihood=gaussian sigma={sigma:.3g} "
                        "sigma_radius=0.7 batch_size=32 lr=0.003 kl_warmup=0.3 "
                        "(override with --invariances/--set/--encoder/--likelihood/--sigma/--batch-size/--lr/--kl-warmup)")
    assert "for 1 epoch: " in lines[1]
    cfg = av.load(tmp_path / "run").config
    assert (cfg.invariances, cfg.rotation_mode, cfg.likelihood, cfg.sigma) == (("rotation", "translation"), "full",
                                                                              "gaussian", sigma)
    assert cfg.encoder == "mlp" and cfg.sigma_radius == PATCH_SIGMA_RADIUS
    train = av.training.read_run(tmp_path / "run")["train_config"]
    assert (train["epochs"], train["batch_size"], train["lr"], train["kl_warmup"]) == (1, PATCH_BATCH_SIZE, PATCH_LR,
                                                                                      PATCH_KL_WARMUP)


def test_family_training_defaults_for_plain_images(tmp_path, capsys):
    import affinevae as av
    from affinevae.defaults import FAMILY_TRAINING

    given = {"latent_dim": 2}
    plain = ImageSet(np.zeros((100, 1, 8, 8), np.float32))
    few = ("rotation_mode=gaussian kept (a preferred orientation assumed: the mean of 100 images has no contrast to "
           "measure, and they are too few to compare by neighbour pairs (200 needed); give rotation_mode=full for "
           "objects turned over the full circle) ")  # the orientation default, unmeasured
    bs, lr = FAMILY_TRAINING["jrvae"]
    assert (bs, lr) == (50, 2e-3) and FAMILY_TRAINING["rvae"] == (100, 2e-3) and "ssrvae" not in FAMILY_TRAINING
    # over the full circle the rvae trains at 3e-3 (bench_full_circle.py), and says so
    full = {"latent_dim": 2, "rotation_mode": "full"}
    assert data_defaults(plain, "rvae", full, None, None)[1:] == (
        {"batch_size": 100, "lr": 3e-3, "kl_warmup": 0.0, "epochs": DEFAULT_EPOCHS},
        "affinevae: rvae over the full circle defaults: batch_size=100 lr=0.003 (override with --batch-size/--lr)")
    assert data_defaults(plain, "rvae", full, None, None, python=True)[2] == (  # for Python: its keywords
        "affinevae: rvae over the full circle defaults: batch_size=100 lr=0.003 (override with batch_size=/lr=)")
    assert data_defaults(plain, "rvae", given, None, None)[1]["lr"] == 2e-3
    # the full-circle crvae too (the trainer's 128 / 1e-3 over the ±60 degrees)
    assert data_defaults(plain, "crvae", {**full, "num_classes": 10}, None, None)[1:] == (
        {"batch_size": 100, "lr": 3e-3, "kl_warmup": 0.0, "epochs": DEFAULT_EPOCHS},
        "affinevae: crvae over the full circle defaults: batch_size=100 lr=0.003 (override with --batch-size/--lr)")
    assert data_defaults(plain, "crvae", {"num_classes": 10}, None, None)[1:] == (
        {"batch_size": 128, "lr": 1e-3, "kl_warmup": 0.0, "epochs": DEFAULT_EPOCHS},
        f"affinevae: crvae defaults: {few}(override with --set)")
    # the full-circle entry was measured with the equivariant encoder: the MLP one keeps the family's
    assert data_defaults(plain, "rvae", {**full, "encoder": "mlp"}, None, None)[1]["lr"] == 2e-3
    opts, train, line = data_defaults(plain, "jrvae", given, None, None)
    assert opts == given and train == {"batch_size": bs, "lr": lr, "kl_warmup": 0.0, "epochs": DEFAULT_EPOCHS}
    assert line == f"affinevae: jrvae defaults: {few}batch_size=50 lr=0.002 (override with --set/--batch-size/--lr)"
    # what the user gives wins and is not announced; a patch-set rule of the family would come first
    assert data_defaults(plain, "jrvae", given, 32, None, 1e-3)[1:] == (
        {"batch_size": 32, "lr": 1e-3, "kl_warmup": 0.0, "epochs": DEFAULT_EPOCHS},
        f"affinevae: jrvae defaults: {few}(override with --set)")
    assert data_defaults(plain, "rvae", given, None, None, 1e-3)[2] == (
        f"affinevae: rvae defaults: {few}batch_size=100 (override with --set/--batch-size)")
    # on a patch set the jrvae takes the rvae's patch-set defaults (its grain angles were 19-31 degrees off without)
    patch_opts, patch_train, said = data_defaults(patch_set(), "jrvae", {**given, "num_classes": 2}, None, None)
    assert said.startswith("affinevae: patch-set defaults: invariances=rotation,translation rotation_mode=full "
                           "encoder=mlp hidden=32,32 likelihood=gaussian sigma=0.1 sigma_radius=0.7 batch_size=32")
    assert patch_train["batch_size"] == PATCH_BATCH_SIZE and "content_anchor" not in patch_opts  # anchors stay off
    assert av.build_model("jrvae", **{**patch_opts, "image_shape": (1, 8, 8)}).config.likelihood == "gaussian"
    # the CLI prints the line and trains with them
    argv = ["train", "--model", "jrvae", "--data", "mnist", "-n", "60", "--latent-dim", "2", "--hidden", "8,8",
            "--set", "encoder_hidden=[16]", "--set", "classifier_hidden=[16]", "--classes", "3", "--epochs", "1",
            "--no-progress", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    said = capsys.readouterr().out.splitlines()[0]  # mnist -n 60: upright digits, by their mean
    assert said.startswith("affinevae: jrvae defaults: rotation_mode=gaussian kept (a preferred orientation: the mean "
                           "of 60 images keeps a shape (") and said.endswith(line[line.index(") batch_size=50"):])
    train = av.training.read_run(tmp_path / "run")["train_config"]
    assert (train["batch_size"], train["lr"]) == (bs, lr)


def test_scattered_objects_take_the_equivariant_encoder_and_a_lattice_the_mlp(tmp_path):
    """A patch set records how its objects lie (median nearest-neighbour distance and the bond-orientational
    order of their neighbours above chance); scattered objects (galaxies, particles, even kept a minimum
    distance apart, which made the spread of their distances look like a lattice's) get the group-equivariant
    encoder over the full circle, a lattice's atoms the MLP one of the tuned micrograph recipe."""
    from affinevae.data.objects import neighbour_order

    rng = np.random.default_rng(0)
    size = 300
    v, u = np.mgrid[:size, :size].astype(np.float64)
    sky = 0.02 * rng.standard_normal((size, size))
    kept = []
    while len(kept) < 40:  # particles at least 30 px apart: a hard core, as picked particles have
        q = rng.uniform(12, size - 12, 2)
        if all(np.hypot(*(q - p)) >= 30 for p in kept):
            kept.append(q)
    for r, c in kept:
        sky += np.exp(-((v - r) ** 2 + (u - c) ** 2) / 8.0)
    scattered = cut_patches(np.clip(sky, 0, 1).astype(np.float32), 16)
    lattice = cut_patches(synthetic_micrograph(size=(128, 128), spacing=8.0, grain_angles=(0.0, math.radians(30)),
                                               seed=1)[0], 16)
    assert scattered.arrangement()["lattice_order"] < LATTICE_ORDER < 0.25 < lattice.arrangement()["lattice_order"]
    assert abs(neighbour_order(rng.uniform(0, 1000, (400, 2)))) < 0.05  # a Poisson scatter: chance
    assert cut_patches(np.clip(sky, 0, 1).astype(np.float32), 16, stride=16).arrangement() == {}  # a grid: none
    for ps, encoder in ((scattered, "equivariant"), (lattice, "mlp")):
        ps.save(tmp_path / "p.npz")
        data = load_images(tmp_path / "p.npz")
        assert data.meta["lattice_order"] == pytest.approx(ps.arrangement()["lattice_order"])
        for images in (data, ps.imageset()):
            options, _, line = data_defaults(images, "rvae", {"image_shape": list(images.image_shape)}, None, None,
                                             None, None)
            assert options["encoder"] == encoder and f"encoder={encoder} (" in line and "lattice order" in line
        assert av.build_model("rvae", **options).config.encoder == encoder
    # a patch set written before the arrangement was recorded gets it from its centres when read
    arrays = {k: v for k, v in scattered.arrays().items() if k not in ("spacing", "lattice_order")}
    np.savez(tmp_path / "old.npz", **arrays)
    assert load_images(tmp_path / "old.npz").meta["lattice_order"] == pytest.approx(scattered.arrangement()["lattice_order"])


def test_one_object_per_frame_counts_as_scattered_objects_and_takes_the_equivariant_encoder(tmp_path):
    """A stack of frames holding one particle (or cell) each has no neighbours to measure a lattice order
    by; no frame can hold a lattice, so its patch set records ``objects_per_frame`` and gets the
    equivariant encoder over the full circle (it had the MLP one, which learns no full-circle angle)."""
    rng = np.random.default_rng(0)
    v, u = np.mgrid[:48, :48].astype(np.float64)
    frames = np.stack([np.exp(-((v - 24 - dr) ** 2 + (u - 24 - dc) ** 2) / 18.0)
                       for dr, dc in rng.uniform(-3, 3, (12, 2))]) + 0.01 * rng.standard_normal((12, 48, 48))
    np.save(tmp_path / "stack.npy", np.clip(frames, 0, 1).astype(np.float32))
    ps = cut_patches(str(tmp_path / "stack.npy"), 24)
    assert len(ps) == 12 and ps.arrangement() == {"objects_per_frame": 1.0}
    ps.save(tmp_path / "p.npz")
    data = load_images(tmp_path / "p.npz")
    assert data.meta["objects_per_frame"] == 1.0 and "lattice_order" not in data.meta
    for images in (data, ps.imageset()):
        options, _, line = data_defaults(images, "rvae", {"image_shape": list(images.image_shape)}, None, None)
        assert options["encoder"] == "equivariant" and options["rotation_mode"] == "full"
        assert "encoder=equivariant (scattered objects: at most 1 per frame)" in line
    # a grid's windows and a lattice's atoms share their grain's angle (train's angle warning is off); these not
    from affinevae.defaults import lattice_patches
    assert not lattice_patches(data.meta) and not lattice_patches({})
    assert lattice_patches({"kind": "patches", "window": 8}) and lattice_patches({"kind": "patches", "lattice_order": 0.4})
    # a patch set of such frames written before objects_per_frame was recorded gets it when read
    np.savez(tmp_path / "old.npz", **{k: v for k, v in ps.arrays().items() if k != "objects_per_frame"})
    assert load_images(tmp_path / "old.npz").meta["objects_per_frame"] == 1.0


def test_a_noisy_hexagonal_lattice_takes_the_low_pass_filter_and_a_square_one_does_not(tmp_path):
    """A patch set records the n of its objects' n-fold bonds (lattice_fold): 6 for a hexagonal lattice, whose
    noisy patches (centre SNR below 0.3) learned nothing without the 1.5-px low-pass filter (both grains one
    angle) and whose clean ones lose substituted atoms with it, 4 for square and rectangular ones, whose
    substituted atoms the filter loses at any noise; train's defaults line says why."""
    from affinevae.data.objects import neighbour_fold
    from affinevae.defaults import LOWPASS_LATTICE_SNR, centre_snr

    g = np.mgrid[:12, :12].reshape(2, -1).T.astype(np.float64) * 10.0
    assert neighbour_fold(g) == 4
    hexagon = np.stack([g[:, 0] * math.sqrt(3) / 2, g[:, 1] + 5.0 * (np.round(g[:, 0] / 10.0) % 2)], 1)
    assert neighbour_fold(hexagon) == 6 and neighbour_fold(g[:3]) is None
    for lattice, fold, noise, filtered in (("hexagonal", 6, 0.3, True), ("hexagonal", 6, 0.05, False),
                                           ("square", 4, 0.3, False)):
        image = synthetic_micrograph(size=(128, 128), spacing=8.0, grain_angles=(0.0, math.radians(30)), seed=1,
                                     lattice=lattice, noise=noise)[0]
        ps = cut_patches(image, 16)
        assert ps.arrangement()["lattice_fold"] == fold
        ps.save(tmp_path / "p.npz")
        data = load_images(tmp_path / "p.npz")
        assert data.meta["lattice_fold"] == fold
        options, _, line = data_defaults(data, "rvae", {"image_shape": list(data.image_shape)}, None, None, None, None)
        assert options["encoder"] == "mlp"
        snr = centre_snr(data)
        assert (snr < LOWPASS_LATTICE_SNR) == (noise == 0.3)
        if filtered:
            assert options["lowpass"] == 1.5
            assert f"lowpass=1.5 (a noisy hexagonal lattice: 6-fold bonds, centre SNR {snr:.2f})" in line
        else:
            assert "lowpass" not in options
    # a patch set written before the fold was recorded gets it from its centres when read
    np.savez(tmp_path / "old.npz", **{k: v for k, v in ps.arrays().items() if k != "lattice_fold"})
    assert load_images(tmp_path / "old.npz").meta["lattice_fold"] == 4


def _cells(n, max_turn, noise, seed=0, size=32):
    """(n, 1, size, size) dark sharp-edged cells (an ellipse with a nucleus at one end) on a bright background,
    turned uniformly within +-max_turn radians, their centres 0.5 px off the image centre and jittered by 0.7 px."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    out = np.full((n, size, size), 0.85)
    for i in range(n):
        a = rng.uniform(-max_turn, max_turn)
        dy, dx = yy - size / 2 - rng.normal(0, 0.7), xx - size / 2 - rng.normal(0, 0.7)
        u, v = dx * np.cos(a) + dy * np.sin(a), -dx * np.sin(a) + dy * np.cos(a)
        long, short = (0.38, 0.16) if i % 2 else (0.26, 0.22)
        out[i][(u / (long * size)) ** 2 + (v / (short * size)) ** 2 < 1] = 0.35
        out[i][(u - 0.18 * size) ** 2 + v ** 2 < (0.07 * size) ** 2] = 0.05
    return (out + rng.normal(0, noise, out.shape))[:, None].astype(np.float32)


def test_the_mean_image_decides_the_orientation_where_it_can():
    """Sharp-edged cells turned over the full circle match their neighbours mostly at small turns (their pairs
    read under 20 % turned, so rvae kept the prior and learnt nothing: an audit's angle concentration 0.06
    against 0.99 in full mode); their mean is round, and that decides. Cells as noisy as they are bright read
    as turned by their pairs; their mean keeps its shape, and that decides the other way."""
    from affinevae.pose.sync import FULL_CIRCLE_SHARE, ISOTROPIC_RATIO, ORIENTED_EFFECT, mean_isotropy, orientation_spread

    turned = orientation_spread(_cells(300, np.pi, 0.02))
    assert turned.far < FULL_CIRCLE_SHARE  # the pairs alone would keep the prior
    assert turned.decided_by == "round mean" and turned.isotropy < ISOTROPIC_RATIO and turned.full_circle
    assert "the mean of 300 images is as round as theirs turned at random" in turned.sentence()
    upright = orientation_spread(_cells(300, np.radians(20), 0.02))
    assert upright.decided_by == "oriented mean" and upright.effect >= ORIENTED_EFFECT and not upright.full_circle
    noisy = orientation_spread(_cells(300, 0.0, 0.5))
    assert noisy.far >= FULL_CIRCLE_SHARE  # the pairs alone would call them turned
    assert noisy.decided_by == "oriented mean" and not noisy.full_circle
    assert "keeps a shape" in noisy.sentence()
    # the ratio: about 1 over the full circle, far above it upright; None for images without contrast
    x = torch.as_tensor(_cells(300, np.pi, 0.02))
    assert 0.3 < mean_isotropy(x) < ISOTROPIC_RATIO and mean_isotropy(x, seed=1) != mean_isotropy(x)
    assert mean_isotropy(torch.as_tensor(_cells(300, 0.0, 0.02))) > 50
    assert mean_isotropy(torch.full((300, 1, 32, 32), 0.5)) is None
    # arrays and (N, H, W) as orientation_spread takes them; other shapes in one line
    assert mean_isotropy(x.numpy()[:, 0]) == mean_isotropy(x)
    for bad, match in ((x[:, :, :, :20], "square"), (x[0, 0], "shape"), (x * float("nan"), "NaN")):
        with pytest.raises(AffineVAEError, match=match):
            mean_isotropy(bad)
    # images shrunk to 48 px by area averaging kept its fixed pattern in their mean: 64 px objects over the
    # full circle read oriented (a stress test: galaxies 9.9x, nuclei 8.9x); they are shrunk by whole factors now
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64] - 31.5
    turn = rng.uniform(-np.pi, np.pi, 400)[:, None, None]  # a blob with a bump, 64 px
    blobs = (np.exp(-(xx ** 2 + yy ** 2) / 128) + 0.8 * np.exp(-((xx - 10 * np.cos(turn)) ** 2 + (yy - 10 * np.sin(turn)) ** 2)
                                                               / 18) + rng.normal(0, 0.05, (400, 64, 64))).astype(np.float32)
    shrunk = F.interpolate(torch.as_tensor(blobs)[:, None], size=(48, 48), mode="area")
    assert mean_isotropy(shrunk) > ISOTROPIC_RATIO  # the former way: read as not round (2.9x)
    assert orientation_spread(blobs).decided_by == "round mean" and orientation_spread(blobs).isotropy < 1.2


def test_the_rotation_mode_is_chosen_from_the_objects_orientations(tmp_path, capsys):
    """A model that infers the angle, not told its rotation_mode, takes 'full' where the objects' orientations
    spread over the full circle (a third of the neighbour pairs turned by more than 120 degrees), and says why;
    digits within +-60 degrees keep the prior; what is given, models without a rotation, too few images and
    patch sets are left as they were."""
    from affinevae.pose.sync import FULL_CIRCLE_SHARE, orientation_spread

    full = av.data.rotated_mnist("train", n=400, seed=0, max_angle=math.pi)
    upright = av.data.rotated_mnist("train", n=400, seed=0)  # +-60 degrees
    spread, kept = orientation_spread(full.images), orientation_spread(upright.images)
    assert spread.full_circle and 0.25 < spread.far < 0.45 and spread.images == 400
    assert not kept.full_circle and kept.far < FULL_CIRCLE_SHARE / 2
    assert orientation_spread(full.images[:49]) is None and orientation_spread(full.images[:, :, :, :20]) is None
    # upright symmetric objects match their neighbours as well at 180 degrees (a rod) as at 0: not turned (they read
    # 50 % turned before the tie rule); the same rods turned over the full circle are
    yy, xx = np.mgrid[:32, :32] - 15.5
    rng = np.random.default_rng(0)

    def rods(turns):
        u = np.cos(turns)[:, None, None] * xx + np.sin(turns)[:, None, None] * yy
        v = -np.sin(turns)[:, None, None] * xx + np.cos(turns)[:, None, None] * yy
        ends = np.exp(-((np.abs(u) - 8) ** 2 + v ** 2) / 12)
        return (ends + rng.normal(0, 0.1, ends.shape))[:, None].astype(np.float32)

    assert orientation_spread(rods(np.zeros(300))).far < 0.05
    assert orientation_spread(rods(rng.uniform(-np.pi, np.pi, 300))).full_circle
    assert orientation_spread(full.images, sample=300).images == 300
    opts, train, line = data_defaults(full, "rvae", {"latent_dim": 2}, None, None)
    assert opts["rotation_mode"] == "full" and train["lr"] == 3e-3  # and the full-circle rvae's training
    assert line.startswith(f"affinevae: rvae over the full circle defaults: rotation_mode=full ({spread.sentence()}) "
                           "batch_size=100 lr=0.003 (override with --set/--batch-size/--lr)"), line
    kept_opts, _, kept_line = data_defaults(upright, "rvae", {"latent_dim": 2}, None, None)
    assert "rotation_mode" not in kept_opts
    # what was measured is said also where the prior is kept (the audit's cells trained silently without it)
    assert kept_line.startswith(f"affinevae: rvae defaults: rotation_mode=gaussian kept ({kept.sentence()}) batch_size=100")
    assert kept_line.endswith("(override with --set/--batch-size/--lr)")
    for family, given in (("rvae", {"rotation_mode": "gaussian"}), ("rvae", {"invariances": ["translation"]}),
                          ("vae", {}), ("rvae", {"invariances": "translation,scale"})):
        assert data_defaults(full, family, given, None, None)[0].get("rotation_mode") == given.get("rotation_mode")
    assert "rotation_mode=full" in data_defaults(full, "crvae", {"num_classes": 10}, None, None)[2]
    # the command trains with it and records it
    np.savez(tmp_path / "turned.npz", images=full.images)
    assert main(["train", "--model", "rvae", "--data", str(tmp_path / "turned.npz"), "--latent-dim", "2", "--epochs",
                 "1", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert "rotation_mode=full (orientations over the full circle" in capsys.readouterr().out
    assert av.load(tmp_path / "run").config.rotation_mode == "full"
    # an audit: 150 particles, or non-square crops, kept the prior without a word (angles 0.057 and 0.139, 0.92-1.0
    # with rotation_mode=full): the line now says why the orientations were not measured (below 50 images; from
    # 50 to 200 the mean alone decides: test_fewer_than_200_images_are_decided_by_their_mean)
    few_line = data_defaults(av.data.ImageSet(full.images[:40]), "rvae", {"latent_dim": 2}, None, None)[2]
    assert ("rotation_mode=gaussian kept (40 images are too few to measure the orientations (50 needed): give "
            "rotation_mode=full for objects turned over the full circle)") in few_line
    one_line = data_defaults(av.data.ImageSet(full.images[:1]), "rvae", {"latent_dim": 2}, None, None)[2]
    assert "rotation_mode=gaussian kept (1 image is too few to measure the orientations (50 needed)" in one_line
    wide_line = data_defaults(av.data.ImageSet(full.images[:, :, 2:26]), "rvae", {"latent_dim": 2}, None, None)[2]
    assert "rotation_mode=gaussian kept (24x28 images: the orientations are measured, and the full circle's" in wide_line


def test_fewer_than_200_images_are_decided_by_their_mean():
    """An audit: full-circle sets of 50-199 images kept the prior as 'too few to measure' (digits 0 / 1 / 7: angles
    0.14 / 0.17 and k-means 0.62 / 0.44 at 50 / 100 images, against 0.74 / 0.77 and 0.90 / 0.75 with
    rotation_mode=full). Their mean tells: about 1 over the full circle, 2.5 or more within +-60 degrees."""
    import affinevae as av
    from affinevae.pose.sync import SMALL_SET_ISOTROPIC_RATIO, orientation_spread

    for n in (60, 120, 199):
        turned = av.data.rotated_mnist("train", n=n, digits=[0, 1, 7], full_circle=True, seed=3)
        spread = orientation_spread(turned.images)
        assert spread.far is None and spread.images == n and spread.isotropy < SMALL_SET_ISOTROPIC_RATIO
        assert spread.decided_by == "round mean" and spread.full_circle
        line = data_defaults(turned, "rvae", {"latent_dim": 2}, None, None)[2]
        assert (f"rotation_mode=full (orientations over the full circle: the mean of {n} images is as round as theirs "
                "turned at random (") in line
        for angle in (math.radians(60), 0.0):
            upright = av.data.rotated_mnist("train", n=n, max_angle=angle, seed=3) if angle else av.data.ImageSet(
                av.data.rotated_mnist("train", n=n, max_angle=1e-9, seed=3).images)
            kept = orientation_spread(upright.images)
            assert kept.decided_by == "oriented mean" and not kept.full_circle, (n, angle, kept)
            line = data_defaults(upright, "rvae", {"latent_dim": 2}, None, None)[2]
            assert f"rotation_mode=gaussian kept (a preferred orientation: the mean of {n} images keeps a shape (" in line


def test_an_upright_mean_with_many_pairs_turned_says_some_objects_may_be_turned():
    """An audit: 1 500 particles, half upright and half turned over the full circle, kept the prior by their mean
    (58x) and the turned half's angles failed (0.088; 0.999 with rotation_mode=full, the upright half 1.000
    either way). The sentence now adds the pairs turned beyond 120 degrees when they are FULL_CIRCLE_SHARE or more."""
    from affinevae.pose.sync import FULL_CIRCLE_SHARE, OrientationSpread

    mixed = OrientationSpread(far=0.25, images=1500, isotropy=58.0)
    assert mixed.decided_by == "oriented mean" and not mixed.full_circle
    assert mixed.sentence() == ("a preferred orientation: the mean of 1500 images keeps a shape (58x that of theirs "
                                "turned at random); yet 25 % of the neighbour pairs are turned by more than 120 degrees: "
                                "if some of the objects are turned, give rotation_mode=full")
    upright = OrientationSpread(far=FULL_CIRCLE_SHARE / 3, images=2000, isotropy=45.0)
    assert upright.sentence().endswith("(45x that of theirs turned at random)")


def test_objects_off_the_image_centre_are_said_to_be():
    """An audit: particles 5 px off the centre of their 40-px crops read as upright ('0 % of the pairs turned',
    stated as a fact) and trained angles 0.08, also given the full circle (its synchronisation claiming agreement
    0.99). A warning names the offset and what to do, for every family that infers the angle."""
    from affinevae.pose.sync import mean_offset, off_centre_note

    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:40, 0:40]

    def blobs(down, right):
        ang = rng.uniform(-np.pi, np.pi, 60)[:, None, None]
        r, c = rows - 19.5 - down, cols - 19.5 - right
        u, v = np.cos(ang) * c + np.sin(ang) * r, -np.sin(ang) * c + np.cos(ang) * r
        return (np.exp(-((u - 4) ** 2 + v ** 2) / 8) + 0.6 * np.exp(-((u + 4) ** 2 + v ** 2) / 4)
                + rng.normal(0, 0.05, (60, 40, 40))).astype(np.float32)

    off = ImageSet(blobs(4.0, -3.0), source="off.mrcs")
    down, right = mean_offset(off.images)
    assert 3.0 < down <= 4.0 and -3.0 <= right < -2.0  # the mean's brightness centre: about where they sit
    assert off_centre_note(blobs(0.0, 0.0)) is None and off_centre_note(blobs(1.5, 0.0)) is None
    for given in ({"latent_dim": 2}, {"latent_dim": 2, "rotation_mode": "full"}):
        with pytest.warns(UserWarning, match=r"^off\.mrcs: the objects' mean sits [45]\.\d px off the image centre "
                                             r"\([34]\.\d px down, [23]\.\d px left\): turns are about the centre.*move "
                                             r"them to the centre first \(train --centre mean; in Python "
                                             r"ImageSet\.centred\('mean'\)\)$"):
            data_defaults(off, "rvae", given, None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data_defaults(off, "rvae", {"invariances": ["translation"]}, None, None)  # no angle inferred: nothing said
        data_defaults(off, "vae", {}, None, None)
        data_defaults(ImageSet(blobs(0.0, 0.0)), "rvae", {"latent_dim": 2}, None, None)


def test_the_full_circle_with_another_encoder_is_said_to_recover_no_angle():
    """An audit: non-square particles, refused by the equivariant encoder, trained with --encoder conv as its
    message advised; the angles were 0.08 and nothing said so. The message now says to pad them square, and
    train warns of the full circle with another encoder."""
    data = ImageSet(np.random.default_rng(0).random((20, 1, 12, 12)).astype(np.float32))
    wide = ImageSet(np.random.default_rng(0).random((20, 1, 12, 16)).astype(np.float32))
    for encoder in ("conv", "mlp"):
        with pytest.warns(UserWarning, match=rf"^rotation_mode=full with encoder '{encoder}': only the equivariant "
                                             r"encoder recovers angles over the full circle \(.*0\.06\)$"):
            data_defaults(data, "rvae", {"rotation_mode": "full", "encoder": encoder}, None, None)
        with pytest.warns(UserWarning, match=r"0\.06\); it needs square images: pad or crop these 12x16 ones square "
                                             r"\(train --square pad or crop\)$"):
            data_defaults(wide, "rvae", {"rotation_mode": "full", "encoder": encoder}, None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for given in ({"rotation_mode": "full"}, {"rotation_mode": "full", "encoder": "equivariant"},
                      {"encoder": "conv"}, {"rotation_mode": "full", "encoder": "conv", "invariances": ["translation"]}):
            data_defaults(data, "rvae", given, None, None)
        # a lattice's patch set takes the MLP by its own rule: not warned of (a review found it was)
        data_defaults(patch_set(), "rvae", {"rotation_mode": "full", "encoder": "mlp"}, None, None)
