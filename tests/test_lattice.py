"""Square / hexagonal / rectangular lattices, symmetry estimation for `map`, full-circle rotated MNIST from the CLI."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from affinevae import mapping
from affinevae.cli import main
from affinevae.data import load_dataset, load_mnist, rotated_mnist
from affinevae.data.micrograph import LATTICES, synthetic_micrograph
from affinevae.data.patches import PatchSet, cut_patches, extract_patches
from affinevae.errors import AffineVAEError

SYMMETRY = {"rectangular": 2, "square": 4, "hexagonal": 6}


def lattice_patches(lattice, noise=0.05, seed=0, window=16):
    """Patches (N, w, w) cut around the atoms (truth.positions to the pixel) of a two-grain micrograph
    (grains 30 degrees apart)."""
    img, t = synthetic_micrograph(size=(128, 128), spacing=8.0, lattice=lattice, noise=noise,
                                  substitution_frac=0.05, vacancy_frac=0.02, seed=seed)
    patches, _ = extract_patches(img, np.rint(t.positions).astype(np.int64), window, edge="drop")
    return img, t, patches


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("affinevae: error:") and "\n" not in err, err
    return err


# ============================================================================ lattices
@pytest.mark.parametrize("lattice", ["square", "hexagonal", "rectangular"])
def test_lattice_geometry_symmetry_and_defects(lattice):
    img, t = synthetic_micrograph(size=(128, 160), spacing=8.0, lattice=lattice, grain_angles=(0.1, 0.1 + math.radians(30)),
                                  vacancy_frac=0.04, substitution_frac=0.1, noise=0.02, seed=3)
    n_fold = SYMMETRY[lattice]
    assert t.lattice == lattice and t.symmetry == n_fold == LATTICES.get(lattice).symmetry
    n, m = len(t.positions), len(t.vacancies)
    assert m == round(0.04 * (n + m)) and t.defect.sum() == round(0.1 * n) and set(np.unique(t.grain)) == {0, 1}
    peak = img[tuple(np.rint(t.positions).astype(int).T)]
    assert peak[t.defect == 1].mean() < 0.7 * peak[t.defect == 0].mean()
    # neighbours: 4 at a (square), 6 at a (hexagonal), 2 at a then 2 at 1.6 a (rectangular)
    sites = np.concatenate([t.positions, t.vacancies])
    grain = np.concatenate([t.grain, t.vacancy_grain])
    tree = cKDTree(sites)
    inner = np.all((sites > 20) & (sites < np.array([108, 140])), 1) & (np.abs(sites[:, 1] - 80) > 20)
    d, j = tree.query(sites[inner], k=8)
    n_near = {"square": 4, "hexagonal": 6, "rectangular": 2}[lattice]
    np.testing.assert_allclose(d[:, 1:n_near + 1], 8.0, atol=1e-6)
    assert d[:, n_near + 1].min() > 8.0 + 1e-3
    if lattice == "rectangular":
        np.testing.assert_allclose(d[:, 3:5], 12.8, atol=1e-6)
        assert t.spacing == (8.0, 12.8)
    else:
        assert t.spacing == (8.0, 8.0)
    # each grain's bonds point along its angle, modulo the lattice's symmetry (counter-clockwise on screen)
    v = sites[j[:, 1:n_near + 1]] - sites[inner][:, None]
    ang = np.arctan2(-v[..., 0], v[..., 1])                               # (K, n_near) screen angles
    for g, want in enumerate(t.grain_angles):
        a = ang[grain[inner] == g].ravel()
        assert abs(mapping.angle_difference(mapping.circular_mean(a, n_fold), want, n_fold)) < math.radians(0.5)
    # 6-fold really is finer than 2-fold: a hexagonal lattice turned by 60 degrees is the same lattice
    if lattice == "hexagonal":
        assert abs(mapping.angle_difference(mapping.circular_mean(ang[grain[inner] == 0].ravel(), 2), 0.1, 2)) > 0.05


def test_default_lattice_is_the_rectangular_one_and_bad_lattices_are_refused():
    a, ta = synthetic_micrograph(size=(64, 80), seed=5)
    b, tb = synthetic_micrograph(size=(64, 80), seed=5, lattice="rectangular", aspect=1.6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ta.positions, tb.positions)
    assert ta.lattice == "rectangular" and ta.symmetry == 2
    assert not np.array_equal(a, synthetic_micrograph(size=(64, 80), seed=5, aspect=1.3)[0])
    with pytest.raises(AffineVAEError, match="unknown lattice 'hex'.*hexagonal"):
        synthetic_micrograph(lattice="hex")
    with pytest.raises(AffineVAEError, match="aspect applies to the rectangular lattice only"):
        synthetic_micrograph(lattice="square", aspect=1.2)
    _, t = synthetic_micrograph(size=(96, 96), grains=4, grain_angles=None, lattice="hexagonal", seed=1)
    assert len(t.grain_angles) == 4 and set(np.unique(t.grain)) == {0, 1, 2, 3}


# ============================================================================ symmetry estimation
@pytest.mark.parametrize("lattice", ["square", "hexagonal", "rectangular"])
def test_estimate_symmetry_of_lattice_patches(lattice):
    for noise in (0.05, 0.25):
        img, _, patches = lattice_patches(lattice, noise=noise)
        res = mapping.symmetry_scores(patches)
        assert res.order == mapping.estimate_symmetry(patches) == SYMMETRY[lattice], (noise, res)
        assert res.score[SYMMETRY[lattice]] > 0.5
    # channels add up; a sliding-window grid (not centred on atoms) is read from its spectrum
    assert mapping.estimate_symmetry(np.repeat(patches[:, None], 2, 1)) == SYMMETRY[lattice]
    grid = cut_patches(img, 24, stride=6)
    assert mapping.estimate_symmetry(grid.patches, centred=False) == SYMMETRY[lattice]


def test_estimate_symmetry_finds_none_in_digits_and_noise_and_three_fold_in_a_honeycomb():
    digits = load_mnist("test", n=600).images
    res = mapping.symmetry_scores(digits)
    assert res.order == 1 and max(res.score.values()) < 0.35, res
    assert mapping.estimate_symmetry(rotated_mnist("test", n=300, full_circle=True).images) == 1
    assert mapping.estimate_symmetry(np.random.default_rng(0).normal(size=(300, 16, 16))) == 1
    # honeycomb (graphene-like): every atom has three neighbours 120 degrees apart -> 3-fold, not 6
    from affinevae.data.micrograph import render_gaussians

    _, t = synthetic_micrograph(size=(128, 128), spacing=8.0 * math.sqrt(3), lattice="hexagonal", grains=1,
                                grain_angles=(0.3,), substitution_frac=0.0, seed=0)
    bond = 8.0 * np.array([-math.sin(0.3 + math.pi / 6), math.cos(0.3 + math.pi / 6)])
    atoms = np.concatenate([t.positions, t.positions + bond])
    img = render_gaussians((128, 128), atoms, np.ones(len(atoms)), 1.4)
    img += np.random.default_rng(1).normal(0, 0.05, img.shape)
    ps = cut_patches(((img - img.min()) / (img.max() - img.min())).astype(np.float32), 16, min_distance=3,
                     threshold=0.4)
    assert mapping.estimate_symmetry(ps.patches) == 3


def test_symmetry_checks():
    for bad in (0, -2, 13, 2.5, "4", True, None):
        with pytest.raises(AffineVAEError, match="integer in 1..12"):
            mapping.check_symmetry(bad)
    assert mapping.check_symmetry(np.int64(6)) == 6
    with pytest.raises(AffineVAEError, match="7x7"):
        mapping.estimate_symmetry(np.zeros((4, 5, 5)))
    with pytest.raises(AffineVAEError, match="orders"):
        mapping.estimate_symmetry(np.zeros((4, 9, 9)), orders=(1, 2))
    bad = np.zeros((4, 9, 9))
    bad[0, 0, 0] = np.nan
    with pytest.raises(AffineVAEError, match="NaN"):
        mapping.estimate_symmetry(bad)


def test_cli_map_estimates_and_validates_the_symmetry(tmp_path, capsys):
    from affinevae.models.rvae import RVAE

    img, _ = synthetic_micrograph(size=(128, 128), spacing=8.0, lattice="square", noise=0.05, seed=0)
    ps = cut_patches(img, 16, min_distance=3, threshold=0.3)              # as `affinevae patches` cuts them
    np.save(tmp_path / "img.npy", img)
    ps.save(tmp_path / "p.npz")
    torch.manual_seed(0)
    RVAE(image_shape=(1, 16, 16), latent_dim=2, invariances=("rotation", "translation"), rotation_mode="full",
         likelihood="gaussian", sigma=0.1, hidden=(16,)).save(tmp_path / "run")
    base = ["map", str(tmp_path / "run"), "--image", str(tmp_path / "img.npy"), "--patches", str(tmp_path / "p.npz")]
    assert main([*base, "--out", str(tmp_path / "maps")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "affinevae: estimated 4-fold rotational symmetry from the patches (override with --symmetry)"
    with np.load(tmp_path / "maps" / "maps.npz", allow_pickle=False) as f:
        assert int(f["symmetry"]) == 4
    assert main([*base, "--out", str(tmp_path / "maps2"), "--symmetry", "2"]) == 0
    assert "estimated" not in capsys.readouterr().out
    with np.load(tmp_path / "maps2" / "maps.npz", allow_pickle=False) as f:
        assert int(f["symmetry"]) == 2
    for bad in ("0", "-1", "13", "2.5", "four"):
        assert main([*base, "--out", str(tmp_path / "bad"), "--symmetry", bad]) == 2
        assert "--symmetry must be an integer in 1..12" in one_line_error(capsys)
    assert not (tmp_path / "bad").exists()                                # refused before anything is written
    assert main([*base, "--out", str(tmp_path / "bad"), "--clusters", str(len(ps) + 1)]) == 2
    assert f"error: --clusters must be an integer in 1..{len(ps)} (the number of objects)" in one_line_error(capsys)
    assert not (tmp_path / "bad").exists()
    # windows too small to show the lattice (reach 4 px, atoms 8 px apart): the estimate finds none and says why
    narrow = cut_patches(img, 12, min_distance=3, threshold=0.3)
    assert mapping.symmetry_reach(12) == 4 and mapping.symmetry_reach(16) == 6
    assert mapping.neighbour_spacing(narrow.centers, narrow.frames) == pytest.approx(8.0, abs=0.6)
    narrow.save(tmp_path / "narrow.npz")
    torch.manual_seed(0)
    RVAE(image_shape=(1, 12, 12), latent_dim=2, invariances=("rotation", "translation"), rotation_mode="full",
         likelihood="gaussian", sigma=0.1, hidden=(16,)).save(tmp_path / "run12")
    assert main(["map", str(tmp_path / "run12"), "--image", str(tmp_path / "img.npy"), "--patches",
                 str(tmp_path / "narrow.npz"), "--out", str(tmp_path / "maps12")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("affinevae: estimated 1-fold")
    assert re.match(r"affinevae: the 12-pixel windows reach 4 px from each centre but the objects are [78]\.\d px apart",
                    out[1]), out[1]
    assert out[1].endswith("give --symmetry (e.g. 2, 4 or 6); windows of 20 px would show it (a model trained on "
                           "patches cut with --window 20, or affinevae.mapping.estimate_symmetry on such patches in Python)")
    assert not any("windows reach" in line for line in capsys.readouterr().out.splitlines())


# ============================================================================ full-circle rotated MNIST
def test_load_dataset_max_angle_and_its_checks():
    full = load_dataset("rotated-mnist", n=300, seed=2, max_angle=math.pi)
    ref = rotated_mnist("train", n=300, seed=2, full_circle=True)
    np.testing.assert_array_equal(full.images, ref.images)               # pi is the full circle, same draws
    np.testing.assert_array_equal(full.angle, ref.angle)
    assert full.meta == {"max_angle": math.pi} and full.subset(slice(0, 5)).meta == {"max_angle": math.pi}
    assert np.abs(full.angle).max() > math.radians(170) and (np.abs(full.angle) > math.radians(90)).mean() > 0.4
    narrow = load_dataset("rotated-mnist", split="test", n=200, max_angle=math.radians(20), binarize=0.5)
    assert np.abs(narrow.angle).max() <= math.radians(20) + 1e-6 and narrow.meta["max_angle"] == math.radians(20)
    default = load_dataset("rotated-mnist", n=50)
    assert default.meta == {} and np.abs(default.angle).max() <= math.radians(60) + 1e-6
    with pytest.raises(AffineVAEError, match="max_angle only applies to 'rotated-mnist', not to the data 'mnist'"):
        load_dataset("mnist", max_angle=1.0)
    for bad in (0.0, -1.0, 4.0, float("nan")):
        with pytest.raises(AffineVAEError, match=r"max_angle must lie in \(0, pi\]"):
            load_dataset("rotated-mnist", n=5, max_angle=bad)
    with pytest.raises(AffineVAEError, match=r"must lie in \[0, pi\]"):
        rotated_mnist(n=5, max_angle=7.0)


def test_cli_max_angle_trains_on_the_full_circle(tmp_path, capsys):
    import argparse

    from affinevae.cli.common import add_data_arguments, load_data_from_args

    p = argparse.ArgumentParser()
    add_data_arguments(p)
    data = load_data_from_args(p.parse_args(["--data", "rotated-mnist", "-n", "200", "--max-angle", "180"]))
    assert data.meta["max_angle"] == math.pi and np.abs(data.angle).max() > math.radians(170)
    assert load_data_from_args(p.parse_args(["--data", "rotated-mnist", "-n", "20"])).meta == {}
    out = tmp_path / "rvae"
    assert main(["train", "--model", "rvae", "--data", "rotated-mnist", "--max-angle", "180", "-n", "64", "--epochs", "1",
                 "--latent-dim", "2", "--encoder", "mlp", "--hidden", "16", "--batch-size", "32", "--no-progress",
                 "--out", str(out)]) == 0
    assert "trained rvae on" in capsys.readouterr().out
    from affinevae.runs import Run

    again = Run(out).data(split="train", n=None)  # the run remembers the full circle (report, info)
    assert len(again) == 64 and np.abs(again.angle).max() > math.radians(150)
    np.testing.assert_array_equal(again.angle, data.angle[:64])
    tiny = ["--epochs", "1", "--out", str(tmp_path / "x"), "--no-progress"]
    for argv, msg in ((["--data", "mnist", "--max-angle", "90"], "--max-angle only applies to --data rotated-mnist"),
                      (["--data", "rotated-mnist", "--max-angle", "200"], r"--max-angle must lie in \(0, 180\] degrees"),
                      (["--data", "rotated-mnist", "--max-angle", "0"], r"--max-angle must lie in \(0, 180\] degrees")):
        assert main(["train", "--model", "rvae", *argv, *tiny]) == 2
        assert msg.replace("\\", "") in one_line_error(capsys)
    assert not (tmp_path / "x").exists()


def test_estimate_symmetry_of_isolated_objects_with_neighbours_and_stars_in_their_windows():
    """Rods (2-fold) scattered over a noisy field with round stars among them: each window also holds
    parts of its neighbours. Pooled over the windows, that power spread over every order (2-fold score
    0.20-0.40: none found); scored window by window (the median), the rods' symmetry is found."""
    rng = np.random.default_rng(0)
    size, rods, stars = 400, 60, 25
    v, u = np.mgrid[:size, :size].astype(np.float64)
    img = 0.05 * rng.standard_normal((size, size))
    pos = rng.uniform(14, size - 14, (rods + stars, 2))
    for i, (r, c) in enumerate(pos):
        if i < rods:
            t = rng.uniform(0, np.pi)
            a, b = (u - c) * np.cos(t) + (v - r) * np.sin(t), -(u - c) * np.sin(t) + (v - r) * np.cos(t)
            img += np.exp(-(a / 4.0) ** 2 - (b / 1.5) ** 2)
        else:
            img += 1.5 * np.exp(-((u - c) ** 2 + (v - r) ** 2) / 2.0)
    patches, _ = extract_patches(img.astype(np.float32), np.rint(pos).astype(np.int64), 24, edge="drop")
    res = mapping.symmetry_scores(patches)
    assert res.order == 2 and res.score[2] > 0.8, res


@pytest.mark.parametrize("fold", [2, 3, 4, 6])
def test_lobed_objects_cut_around_a_lobe_are_re_centred_for_their_symmetry(fold):
    """Particles of `fold` lobes 8-9 px from their centre, cut (as detection with a small smoothing cuts them)
    around one lobe: read 1-fold as cut (an audit's map said '1-fold' for 2-, 3-, 4- and 6-fold particles);
    estimate_symmetry re-centres them on their brightness (mapping.mass_centred) when it finds none."""
    rng = np.random.default_rng(fold)
    w, n = 40, 120
    v, u = np.mgrid[:w, :w].astype(np.float64) - w // 2
    turns = rng.uniform(-np.pi, np.pi, n)
    radius, sigma = (8.0, 2.0) if fold == 6 else (9.0, 3.2)  # six narrower lobes apart from each other, not a ring
    lobes = np.stack([turns + 2 * np.pi * k / fold for k in range(fold)], 1)  # (n, fold)
    centre = -radius * np.stack([np.sin(lobes[:, 0]), np.cos(lobes[:, 0])], 1)  # the first lobe at the window centre
    img = np.zeros((n, w, w))
    for k in range(fold):
        r = centre[:, 0] + radius * np.sin(lobes[:, k])
        c = centre[:, 1] + radius * np.cos(lobes[:, k])
        img += np.exp(-((v[None] - r[:, None, None]) ** 2 + (u[None] - c[:, None, None]) ** 2) / (2 * sigma ** 2))
    img += rng.normal(0, 0.1, img.shape)
    assert mapping.symmetry_scores(img).order == 1  # as cut
    assert mapping.estimate_symmetry(img) == fold
    moved = mapping.mass_centred(img)
    assert moved.shape == (n, 1, w, w)
    assert mapping.estimate_symmetry(rng.normal(size=(n, w, w))) == 1  # noise stays none


def test_the_narrow_window_hint_is_for_lattices_not_for_scattered_objects():
    """map's hint that windows are too small to show the objects' arrangement is lattice advice: for
    scattered objects (particles, galaxies) each object's own symmetry is what the estimate should see."""
    from affinevae.cli.map import symmetry_hint

    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(10, 200, 20), np.arange(10, 200, 20), indexing="ij"), -1).reshape(-1, 2)
    scattered = rng.uniform(10, 400, (len(grid), 2)).round()
    for centers, hinted in ((grid, True), (scattered, False)):
        ps = PatchSet(np.zeros((len(centers), 12, 12), np.float32), centers.astype(np.int64),
                      np.zeros(len(centers), np.int64), 12)
        assert (symmetry_hint(ps) is not None) == hinted, centers[:3]


def test_map_takes_the_pattern_of_files_patches_read_as_one_stack(tmp_path, capsys):
    """patches reads several files (a glob pattern) as one stack; map's --image takes the same pattern
    (it was 'file not found', and one of the files was refused as another stack)."""
    from affinevae.models.rvae import RVAE

    for i in range(2):
        img, _ = synthetic_micrograph(size=(64, 64), spacing=8.0, seed=10 + i)
        np.save(tmp_path / f"mic{i}.npy", img)
    pattern = str(tmp_path / "mic*.npy")
    assert main(["patches", pattern, "--window", "16", "--no-progress", "--out", str(tmp_path / "p.npz")]) == 0
    ps = PatchSet.load(tmp_path / "p.npz")
    assert set(ps.frames.tolist()) == {0, 1}
    torch.manual_seed(0)
    RVAE(image_shape=(1, 16, 16), latent_dim=2, invariances=("rotation",), rotation_mode="full", hidden=(16,),
         group_channels=(4, 4)).save(tmp_path / "run")
    capsys.readouterr()
    assert main(["map", str(tmp_path / "run"), "--image", pattern, "--patches", str(tmp_path / "p.npz"),
                 "--symmetry", "4", "--frame", "1", "--out", str(tmp_path / "maps")]) == 0, capsys.readouterr().err
    with np.load(tmp_path / "maps" / "maps.npz") as m:
        assert str(m["source_image"]) == pattern and len(m["frames"]) == len(ps)
