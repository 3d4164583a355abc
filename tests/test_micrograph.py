"""Micrographs to maps: synthetic generator, stack readers, detection, patches, streaming, maps, CLI."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from affinevae.cli import main
from affinevae.data.imageset import normalise_images
from affinevae.data.micrograph import render_gaussians, synthetic_micrograph
from affinevae.data.objects import check_coordinates, detect_objects, neighbour_spacing, read_coordinates, refine_positions
from affinevae.data.patches import PatchSet, cut_patches, default_noise_floor, extract_patches, grid_centers, iter_patches
from affinevae.data.stacks import open_stack
from affinevae.encoding import iter_encode, stream_encode
from affinevae.errors import AffineVAEError
from affinevae import mapping

W = 16  # patch window used by most tests


@pytest.fixture(scope="module")
def micrograph():
    return synthetic_micrograph(size=(128, 160), spacing=8.0, grain_angles=(0.0, math.radians(35)),
                                vacancy_frac=0.03, substitution_frac=0.1, noise=0.02, seed=1)


def tiny_vae(window=W, channels=1, latent=3):
    from affinevae.models import VAE

    torch.manual_seed(0)
    return VAE(image_shape=(channels, window, window), latent_dim=latent, encoder="mlp", decoder="mlp",
               hidden=(16,)).eval()


def slow_patch(stack, f, r, c, w, mode):
    """Reference: pad one frame and slice one patch."""
    fr = stack[f]
    h = w // 2
    pad = [(0, 0)] * (fr.ndim - 2) + [(h, w - 1 - h)] * 2
    fr = np.pad(fr, pad, mode="constant" if mode == "pad" else "reflect")
    return fr[..., r:r + w, c:c + w]


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("affinevae: error:") and "\n" not in err, err
    return err


# ============================================================================ generator
def test_generator_ground_truth_is_consistent(micrograph):
    img, t = micrograph
    assert img.shape == (128, 160) and img.dtype == np.float32 and img.min() == 0 and img.max() == 1
    n, m = len(t.positions), len(t.vacancies)
    assert m == round(0.03 * (n + m)) and t.defect.sum() == round(0.1 * n)
    assert set(np.unique(t.defect)) == {0, 1} and set(np.unique(t.grain)) == {0, 1}
    np.testing.assert_allclose(t.grain_angle, t.grain_angles[t.grain])
    # two grains = left / right halves
    assert np.all(t.positions[t.grain == 0, 1] < 80 + 1) and np.all(t.positions[t.grain == 1, 1] > 80 - 1)
    # substitutions are dimmer than lattice atoms at their centres
    peak = img[tuple(np.rint(t.positions).astype(int).T)]
    assert peak[t.defect == 1].mean() < 0.7 * peak[t.defect == 0].mean()
    # vacancies are dark; no two atoms closer than 0.7 lattice constants
    assert img[tuple(np.rint(t.vacancies).astype(int).T)].mean() < 0.3
    d, _ = cKDTree(t.positions).query(t.positions, k=2)
    assert d[:, 1].min() >= 0.7 * 8.0 - 1e-9
    # the lattice really is turned by the grain angle, counter-clockwise on screen (mod pi):
    # the nearest-neighbour bond (length a) points along the lattice's short axis
    tree = cKDTree(t.positions)
    for g, want in enumerate(t.grain_angles):
        p = t.positions[t.grain == g]
        _, j = tree.query(p, k=2)
        v = t.positions[j[:, 1]] - p
        bond = np.hypot(v[:, 0], v[:, 1])
        v = v[np.abs(bond - 8.0) < 0.5]
        ang = np.arctan2(-v[:, 0], v[:, 1])  # screen angle: up is positive
        assert abs(mapping.angle_difference(mapping.circular_mean(ang, 2), want, 2)) < math.radians(1)
    # reproducible, and different seeds differ
    img2, t2 = synthetic_micrograph(size=(128, 160), spacing=8.0, grain_angles=(0.0, math.radians(35)),
                                    vacancy_frac=0.03, substitution_frac=0.1, noise=0.02, seed=1)
    np.testing.assert_array_equal(img, img2)
    assert not np.array_equal(img, synthetic_micrograph(size=(128, 160), seed=2)[0])


def test_generator_rendering_and_bad_arguments():
    pos = np.array([[3.3, 4.6], [-1.0, 2.0], [9.5, 11.0]])
    amp = np.array([1.0, 0.5, 2.0])
    rr, cc = np.mgrid[0:10, 0:12]
    ref = sum(a * np.exp(-((rr - p[0]) ** 2 + (cc - p[1]) ** 2) / (2 * 1.2 ** 2)) for p, a in zip(pos, amp))
    np.testing.assert_allclose(render_gaussians((10, 12), pos, amp, 1.2), ref, atol=5e-3)
    _, t3 = synthetic_micrograph(size=(96, 96), grains=3, grain_angles=None, seed=0)
    assert len(t3.grain_angles) == 3 and np.all((t3.grain_angles >= 0) & (t3.grain_angles < math.pi))
    square, _ = synthetic_micrograph(size=40, seed=0)  # one int: a square image, the same as (40, 40)
    np.testing.assert_array_equal(square, synthetic_micrograph(size=(40, 40), seed=0)[0])
    for kw in ({"grains": 2, "grain_angles": (0.1,)}, {"vacancy_frac": 1.2}, {"size": (4, 4)}, {"spacing": 0.5},
               {"size": (64,)}, {"size": 4}):
        with pytest.raises(AffineVAEError):
            synthetic_micrograph(**kw)


# ============================================================================ detection
def test_detection_finds_the_atoms(micrograph):
    img, t = micrograph
    found = detect_objects(img, min_distance=3, threshold=0.25)
    assert found.dtype == np.int64 and found.shape[1] == 2
    d_prec, _ = cKDTree(t.positions).query(found)
    d_rec, _ = cKDTree(found).query(t.positions)
    precision, recall = (d_prec < 1.5).mean(), (d_rec < 1.5).mean()
    assert precision > 0.9 and recall > 0.9, (precision, recall)
    # a higher threshold keeps lattice atoms and drops the dim substitutions
    bright = detect_objects(img, min_distance=3, threshold=0.75)
    d, j = cKDTree(t.positions).query(bright)
    assert (t.defect[j[d < 1.5]] == 0).mean() > 0.97
    # smoothing copes with heavy noise, and so does the noise floor; absolute thresholds; plateaus give one centre
    noisy, tn = synthetic_micrograph(size=(96, 96), noise=0.3, substitution_frac=0.0, seed=4)
    raw = detect_objects(noisy, min_distance=3, threshold=0.5)  # no noise floor by default
    f = detect_objects(noisy, min_distance=3, threshold=0.5, sigma=1.0)
    floored = detect_objects(noisy, min_distance=3, threshold=0.5, noise_floor=3)
    d, _ = cKDTree(tn.positions).query(f)
    d_raw, _ = cKDTree(tn.positions).query(raw)
    d_floor, _ = cKDTree(tn.positions).query(floored)
    recall_floor = (cKDTree(floored).query(tn.positions)[0] < 2).mean()
    assert (d < 2).mean() > 0.9 and (d_raw < 2).mean() < 0.7
    assert (d_floor < 2).mean() > 0.85 and recall_floor > 0.8  # noise peaks left out, the atoms kept
    flat = np.zeros((20, 20), np.float32)
    flat[5:8, 5:8] = 1.0
    flat[14, 14] = 0.4
    np.testing.assert_array_equal(detect_objects(flat, 2, 0.5, absolute=True), [[6, 6]])
    np.testing.assert_array_equal(detect_objects(flat, 2, 0.3, absolute=True), [[6, 6], [14, 14]])
    assert len(detect_objects(np.zeros((20, 20)), 2, 0.3)) == 0


# ============================================================================ patches
def test_vectorised_extraction_equals_slow_reference():
    rng = np.random.default_rng(0)
    stack = rng.random((3, 30, 40)).astype(np.float32)
    centers = np.array([[15, 20], [0, 0], [29, 39], [8, 37], [12, 5]])
    frames = np.array([0, 1, 2, 2, 1])
    for mode in ("pad", "reflect"):
        p, keep = extract_patches(stack, centers, 9, frames, edge=mode)
        assert p.shape == (5, 9, 9) and p.dtype == np.float32
        np.testing.assert_array_equal(keep, np.arange(5))
        for i, (f, (r, c)) in enumerate(zip(frames, centers)):
            np.testing.assert_array_equal(p[i], slow_patch(stack, f, r, c, 9, mode))
        assert p[0, 4, 4] == stack[0, 15, 20]  # the centre pixel is at index window // 2
    p, keep = extract_patches(stack, centers, 8, frames, edge="drop")
    np.testing.assert_array_equal(keep, [0, 4])  # near-edge objects dropped
    np.testing.assert_array_equal(p[1], stack[1, 12 - 4:12 + 4, 5 - 4:5 + 4])
    # channels: (F, C, H, W) -> (N, C, w, w)
    rgb = rng.random((2, 3, 20, 22)).astype(np.float32)
    p, _ = extract_patches(rgb, np.array([[10, 11], [1, 20]]), 6, np.array([1, 0]), edge="reflect")
    assert p.shape == (2, 3, 6, 6)
    np.testing.assert_array_equal(p[0], rgb[1, :, 7:13, 8:14])
    np.testing.assert_array_equal(p[1], slow_patch(rgb, 0, 1, 20, 6, "reflect"))
    with pytest.raises(AffineVAEError, match="edge"):
        extract_patches(stack, centers, 9, frames, edge="wrap")


def test_patch_sets_and_grid_mode(micrograph, tmp_path):
    img, t = micrograph
    ps = cut_patches(img, W, min_distance=3, threshold=0.25)
    assert ps.patches.shape == (len(ps), W, W) and ps.centers.shape == (len(ps), 2) and (ps.frames == 0).all()
    half = W // 2
    assert (ps.centers >= half).all() and (ps.centers[:, 0] <= 128 - half).all()
    for i in (0, len(ps) // 2, len(ps) - 1):
        r, c = ps.centers[i]
        np.testing.assert_array_equal(ps.patches[i], img[r - half:r + half, c - half:c + half])
    padded = cut_patches(img, W, min_distance=3, threshold=0.25, edge="pad")
    assert len(padded) > len(ps) and padded.n_found == len(padded)
    # grid mode: (H - w) // stride + 1 windows per axis, row-major, every frame
    stack = np.stack([img, img[::-1]])
    g = cut_patches(stack, W, stride=5)
    gh, gw = (128 - W) // 5 + 1, (160 - W) // 5 + 1
    assert g.grid_shape == (gh, gw) and g.patches.shape == (2 * gh * gw, W, W)
    np.testing.assert_array_equal(g.frames, np.repeat([0, 1], gh * gw))
    c, shape = grid_centers((128, 160), W, 5)
    np.testing.assert_array_equal(g.centers[:gh * gw], c)
    np.testing.assert_array_equal(c[1] - c[0], [0, 5])
    np.testing.assert_array_equal(g.patches[gh * gw + 3], stack[1, 0:W, 15:15 + W])
    g.save(tmp_path / "g.npz")
    back = PatchSet.load(tmp_path / "g.npz")
    assert back.grid_shape == (gh, gw) and back.stride == 5 and back.window == W and back.n_frames == 2
    np.testing.assert_array_equal(back.patches, g.patches)


# ============================================================================ sub-pixel positions
def test_refined_positions_find_a_gaussian_peak_to_a_fraction_of_a_pixel():
    """The quadratic fit around each integer maximum moves it to the peak's true centre (a tenth of a
    pixel for Gaussians 1.5 px wide), channels averaged; a flat patch keeps its centre."""
    rng = np.random.default_rng(0)
    truth = np.column_stack([np.repeat([8.0, 20.0, 32.0], 4) + rng.uniform(-0.5, 0.5, 12),
                             np.tile([8.0, 18.0, 28.0, 38.0], 3) + rng.uniform(-0.5, 0.5, 12)])
    img = render_gaussians((44, 48), truth, np.ones(12), 1.5).astype(np.float32)
    found = detect_objects(img, 3)
    assert len(found) == 12
    pos = refine_positions(img, found)
    assert pos.dtype == np.float64 and pos.shape == (12, 2)
    err_int = cKDTree(truth).query(found)[0]
    err = cKDTree(truth).query(pos)[0]
    assert err.max() < 0.1 < err_int.mean()
    np.testing.assert_array_equal(refine_positions(np.stack([img, img]), found), pos)  # (C, H, W): channels averaged
    np.testing.assert_array_equal(refine_positions(np.zeros((10, 10)), np.array([[5, 5]])), [[5.0, 5.0]])
    assert refine_positions(img, np.zeros((0, 2), np.int64)).shape == (0, 2)


def test_wide_objects_are_refined_at_the_detection_s_smoothing():
    """Blobs 6 px wide in noise, found after a 3-px smoothing: the fit at that smoothing lies closer to them
    than the integer maxima and than a fit at the fixed 1-px smoothing."""
    rng = np.random.default_rng(1)
    truth = np.column_stack([np.repeat(np.arange(30.0, 300, 40), 7), np.tile(np.arange(30.0, 300, 40), 7)])[:49]
    truth = truth + rng.uniform(-0.5, 0.5, truth.shape)
    img = (render_gaussians((320, 320), truth, np.full(len(truth), 3.0), 6.0) + rng.standard_normal((320, 320))).astype(np.float32)
    found = detect_objects(img, 10, sigma=3.0)
    err = {name: cKDTree(truth).query(pos)[0].mean() for name, pos in
           (("int", found.astype(float)), ("fit1", refine_positions(img, found)), ("fit3", refine_positions(img, found, sigma=3.0)))}
    assert len(found) == len(truth) and err["fit3"] < min(err["int"], err["fit1"]), err


def test_a_noisy_lattice_s_spacing_is_its_lattice_constant():
    """The spacing recorded for a patch set is the lattice constant: sub-pixel positions and the first
    shell's median distance (the nearest neighbour alone, at integer maxima, read 8 px as 7.2)."""
    for lattice, spacing in (("square", 8.0), ("hexagonal", 6.0), ("rectangular", 8.0)):
        img, truth = synthetic_micrograph(size=(160, 160), spacing=spacing, lattice=lattice, noise=0.15, seed=1)
        ps = cut_patches(img, int(2 * spacing))
        assert ps.positions.shape == (len(ps), 2)
        got = ps.arrangement()["spacing"]
        assert abs(got - spacing) < 0.02 * spacing, (lattice, got)
        assert np.mean(cKDTree(truth.positions).query(ps.positions)[0]) < \
            0.6 * np.mean(cKDTree(truth.positions).query(ps.centers)[0])
    # a few objects (no frame of more than six) give the nearest-neighbour median
    assert neighbour_spacing(np.array([[0.0, 0.0], [0.0, 3.0], [4.0, 0.0]])) == 3.0
    # frames kept apart: a 3 px lattice of 49 objects and a frame of three objects 40 px apart (their
    # nearest distances count in the median that sets the shell, their neighbours are not a shell),
    # a frame of one object (no neighbour) left out; each frame's own positions anywhere on the frame
    grid = np.stack(np.meshgrid(np.arange(7.0), np.arange(7.0)), -1).reshape(-1, 2) * 3.0
    few = np.array([[0.0, 0.0], [0.0, 40.0], [40.0, 0.0]])
    centers = np.concatenate([grid + 500.0, few, [[7.0, 7.0]]])
    frames = np.concatenate([np.zeros(49), np.ones(3), [2]]).astype(int)
    assert neighbour_spacing(centers, frames) == 3.0
    assert neighbour_spacing(few, np.zeros(3, int)) == 40.0
    assert neighbour_spacing(np.array([[1.0, 1.0]]), np.array([0])) is None


def test_positions_round_trip_and_coordinates_keep_their_fractions(tmp_path):
    img, _ = synthetic_micrograph(size=(96, 96), spacing=8.0, seed=2)
    ps = cut_patches(img, 16)
    ps.save(tmp_path / "p.npz")
    back = PatchSet.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(back.positions, ps.positions)
    assert back.arrangement() == ps.arrangement()
    (tmp_path / "c.csv").write_text("row,col\n40.25,41.75\n50.5,60.4\n")
    given = cut_patches(img, 16, coords=tmp_path / "c.csv")
    np.testing.assert_array_equal(given.centers, [[40, 42], [50, 60]])
    np.testing.assert_allclose(given.positions, [[40.25, 41.75], [50.5, 60.4]])
    arrays = ps.arrays()
    arrays["positions"] = arrays["positions"][:-1]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(AffineVAEError, match=r"bad.npz: positions \(\d+, 2\) must be"):
        PatchSet.load(tmp_path / "bad.npz")
    # a NaN centre (cast to an integer it became -2**63) and a window that is not the patches' size
    arrays = ps.arrays()
    arrays["centers"] = arrays["centers"].astype(np.float64)
    arrays["centers"][0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(AffineVAEError, match=r"nan.npz: 1 of its centers are NaN or infinite"):
        PatchSet.load(tmp_path / "nan.npz")
    arrays = ps.arrays()
    arrays["window"] = np.int64(99)
    np.savez(tmp_path / "win.npz", **arrays)
    with pytest.raises(AffineVAEError, match=r"win.npz: window 99 does not match its 16x16 px patches"):
        PatchSet.load(tmp_path / "win.npz")


# ============================================================================ coordinates
def test_reading_coordinates(tmp_path):
    (tmp_path / "a.csv").write_text("row,col\n10,12\n20.4,30\n")
    fr, c = read_coordinates(tmp_path / "a.csv")
    np.testing.assert_array_equal(fr, [0, 0])
    np.testing.assert_allclose(c, [[10, 12], [20.4, 30]])
    (tmp_path / "b.csv").write_text("x,y,frame\n12,10,1\n30,20,0\n")  # header names reorder columns
    fr, c = read_coordinates(tmp_path / "b.csv")
    np.testing.assert_array_equal(fr, [1, 0])
    np.testing.assert_allclose(c, [[10, 12], [20, 30]])
    (tmp_path / "c.txt").write_text("2 5 6\n0 7 8\n")
    fr, c = read_coordinates(tmp_path / "c.txt")
    np.testing.assert_array_equal(fr, [2, 0])
    np.save(tmp_path / "d.npy", np.array([[1.0, 2.0], [3.0, 4.0]]))
    fr, c = read_coordinates(tmp_path / "d.npy")
    np.testing.assert_allclose(c, [[1, 2], [3, 4]])
    np.save(tmp_path / "e.npy", np.array([[0, 1, 2]]))
    assert read_coordinates(tmp_path / "e.npy")[0].tolist() == [0]
    bad = {"f.csv": "a,b,c,d\n1,2,3,4\n", "g.csv": "5\n6\n", "h.csv": "1,2\n3,4,5\n", "i.csv": "1.5,2,3\n",
           "j.csv": "row,col\n1,zz\n", "k.csv": "frame,col\n1,2\n"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
    np.save(tmp_path / "l.npy", np.zeros((3, 4)))
    for name, pattern in [("f.csv", "line 2: 4 columns"), ("g.csv", "line 1: 1 columns; coordinates need 2"),
                          ("h.csv", "line 2: 3 columns"), ("i.csv", "integers"), ("j.csv", "line 2: 'zz' is not a number"),
                          ("k.csv", "must name"),
                          ("l.npy", r"\(N, 2\)"), ("missing.csv", "not found")]:
        with pytest.raises(AffineVAEError, match=pattern) as e:
            read_coordinates(tmp_path / name)
        assert name in str(e.value) and "\n" not in str(e.value)


# ============================================================================ bad input
def test_bad_inputs_raise_one_line_errors(micrograph, tmp_path):
    img, _ = micrograph
    with pytest.raises(AffineVAEError, match="smaller than the 200x200 window"):
        cut_patches(img, 200)
    with pytest.raises(AffineVAEError, match="outside the 128x160 image"):
        check_coordinates(np.zeros(2, int), np.array([[5.0, 5.0], [130.0, 5.0]]), 1, (128, 160), "c.csv")
    (tmp_path / "far.csv").write_text("row,col\n10,10\n10,500\n")
    with pytest.raises(AffineVAEError, match="far.csv: 1 coordinates outside"):
        cut_patches(img, W, coords=tmp_path / "far.csv")
    (tmp_path / "fr.csv").write_text("3,10,10\n")
    with pytest.raises(AffineVAEError, match="frame indices outside 0..0"):
        cut_patches(img, W, coords=tmp_path / "fr.csv")
    with pytest.raises(AffineVAEError, match="no objects found.*lower the threshold"):
        cut_patches(np.zeros((40, 40), np.float32), W)
    with pytest.raises(AffineVAEError, match="within 8 pixels of the edge"):
        cut_patches(img, W, coords=(np.array([0]), np.array([[1.0, 1.0]])))
    with pytest.raises(AffineVAEError, match="not both"):
        cut_patches(img, W, coords=tmp_path / "far.csv", stride=4)
    with pytest.raises(AffineVAEError, match="min_distance"):
        detect_objects(img, min_distance=0)
    with pytest.raises(AffineVAEError, match="file not found"):
        open_stack(tmp_path / "nope.tif")
    with pytest.raises(AffineVAEError, match="unsupported"):
        (tmp_path / "x.doc").write_text("x")
        open_stack(tmp_path / "x.doc")
    nan = img.copy()
    nan[3, 3] = np.nan
    with pytest.raises(AffineVAEError, match="NaN"):
        cut_patches(nan, W)


# ============================================================================ stacks and streaming
def test_stack_formats_are_read_lazily(micrograph, tmp_path):
    import h5py
    import tifffile
    from PIL import Image

    img, _ = micrograph
    u8 = (np.stack([img, img[:, ::-1], img[::-1]]) * 255).astype(np.uint8)   # (3, 128, 160)
    want = normalise_images(u8)
    np.save(tmp_path / "s.npy", u8)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f.create_dataset("grp/movie", data=u8)
    tifffile.imwrite(tmp_path / "s.tif", u8, photometric="minisblack")
    (tmp_path / "frames").mkdir()
    for i, fr in enumerate(u8):
        Image.fromarray(fr).save(tmp_path / "frames" / f"f{i:02d}.png")
    for spec in ("s.npy", "s.h5:grp/movie", "s.tif", "frames"):
        with open_stack(str(tmp_path / spec)) as src:
            assert src.n_frames == 3 and src.frame_shape == (128, 160), spec
            np.testing.assert_array_equal(src.read(1, 3), want[1:3])
            if spec == "s.npy":
                assert isinstance(src.array, np.memmap)  # nothing loaded up front
    # colour: RGB PNG -> (1, 3, H, W) frames and (N, 3, w, w) patches
    rgb = np.stack([u8[0], u8[1], u8[2]], -1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    with open_stack(tmp_path / "rgb.png") as src:
        assert src.frame_shape == (3, 128, 160)
    ps = cut_patches(str(tmp_path / "rgb.png"), W, stride=40)
    assert ps.patches.shape[1:] == (3, W, W)
    with pytest.raises(AffineVAEError, match="name the dataset"):
        with h5py.File(tmp_path / "two.h5", "w") as f:
            f["a"], f["b"] = u8, u8
        open_stack(tmp_path / "two.h5")
    # float stacks outside [0, 1] follow the package rule stack-wide (one min/max for all frames)
    fl = np.stack([img * 300 - 20, img * 100]).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", fl)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = normalise_images(fl)
        with open_stack(tmp_path / "f.tif") as src:
            np.testing.assert_allclose(src.read(1, 2), want[1:2], atol=1e-6)


def test_streaming_a_tiff_equals_in_memory_chunk_by_chunk(tmp_path):
    import tifffile

    frames = [synthetic_micrograph(size=(64, 64), spacing=8.0, seed=s, noise=0.03)[0] for s in range(5)]
    u16 = (np.stack(frames) * 65535).astype(np.uint16)
    with tifffile.TiffWriter(tmp_path / "movie.tif") as tw:  # written frame by frame
        for fr in u16:
            tw.write(fr, contiguous=True)
    mem = normalise_images(u16)                                   # (5, 64, 64) in memory
    model = tiny_vae()
    opts = dict(min_distance=3, threshold=0.3)
    chunks = list(iter_encode(model, str(tmp_path / "movie.tif"), W, chunk_frames=2, **opts))
    assert len(chunks) == 3
    for k, ch in enumerate(chunks):                               # frames 0-1, 2-3, 4
        ref = cut_patches(mem[2 * k:2 * k + 2], W, **opts)
        np.testing.assert_array_equal(ch.frames, ref.frames + 2 * k)
        np.testing.assert_array_equal(ch.centers, ref.centers)
        with torch.no_grad():
            z = model.encode(torch.from_numpy(ref.patches)).z_mean.numpy()
        np.testing.assert_allclose(ch.z_mean, z, atol=1e-5)
        assert np.isnan(ch.angle).all()                           # a plain VAE has no angle
    whole = stream_encode(model, str(tmp_path / "movie.tif"), W, chunk_frames=2, **opts)
    ref = cut_patches(mem, W, **opts)
    np.testing.assert_array_equal(whole.centers, ref.centers)
    np.testing.assert_array_equal(whole.frames, ref.frames)
    np.testing.assert_allclose(whole.z_mean, np.concatenate([c.z_mean for c in chunks]))
    # no shift latent: the patch set's sub-pixel positions (the fit around each maximum, within a pixel of it)
    np.testing.assert_allclose(whole.positions, ref.positions.astype(np.float32))
    assert np.abs(whole.positions - ref.centers).max() <= 1.0 and not np.array_equal(whole.positions, ref.centers)
    # patches streamed from disk equal those cut in memory, also with coordinates and grids
    (tmp_path / "c.csv").write_text("frame,row,col\n4,30,30\n0,20,20\n3,10,50\n")
    disk = cut_patches(str(tmp_path / "movie.tif"), W, coords=tmp_path / "c.csv", edge="reflect", chunk_frames=2)
    np.testing.assert_array_equal(disk.frames, [0, 3, 4])
    np.testing.assert_array_equal(disk.patches[2], mem[4, 22:38, 22:38])
    n_parts = sum(1 for _ in iter_patches(str(tmp_path / "movie.tif"), W, stride=16, chunk_frames=1))
    assert n_parts == 5
    with pytest.raises(AffineVAEError, match="model expects 1x16x16"):
        stream_encode(model, str(tmp_path / "movie.tif"), 20, **opts)


# ============================================================================ maps
def test_clustering_and_angle_helpers():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0, 0.1, (60, 2)), rng.normal(3, 0.1, (20, 2))])
    truth = np.r_[np.zeros(60, int), np.ones(20, int)]
    for method in ("kmeans", "gmm"):
        lab = mapping.cluster_latents(z, 2, method)
        np.testing.assert_array_equal(lab, truth)          # 0 is the largest cluster
    assert mapping.clustering_accuracy(1 - truth, truth) == 1.0
    assert mapping.clustering_accuracy(np.r_[np.zeros(70, int), np.ones(10, int)], truth) == 70 / 80
    with pytest.raises(AffineVAEError, match="non-negative labels"):  # -1 (not clustered) would count as the last cluster
        mapping.clustering_accuracy(np.r_[-np.ones(10, int), np.zeros(70, int)], truth)
    assert mapping.angle_difference(math.radians(179), math.radians(1), 2) == pytest.approx(math.radians(-2))
    assert mapping.circular_mean(np.radians([178, 2, 180, 0]), 2) == pytest.approx(0, abs=1e-9) or \
        mapping.circular_mean(np.radians([178, 2, 180, 0]), 2) == pytest.approx(math.pi, abs=1e-9)
    with pytest.raises(AffineVAEError, match="clusters"):
        mapping.cluster_latents(z, 0)
    z_nan = z.copy()
    z_nan[5, 1] = np.nan
    with pytest.raises(AffineVAEError, match="^cluster_latents: latents hold 1 NaN or infinite value$"):
        mapping.cluster_latents(z_nan, 3)
    with pytest.raises(AffineVAEError, match=r"^cluster_latents: latents must have shape \(N, D\)"):
        mapping.cluster_latents(z[:, 0], 2)
    with pytest.raises(AffineVAEError, match="symmetry"):
        mapping.fold_angle([0.1], 0)
    # the methods are a registry: both cluster, in size order, and an unknown name is one line
    assert set(mapping.CLUSTER_METHODS.names()) >= {"kmeans", "gmm"}
    for method in ("kmeans", "gmm"):
        lab = mapping.cluster_latents(z, 3, method=method)
        assert set(lab) == {0, 1, 2} and (np.diff(np.bincount(lab)) <= 0).all()
    with pytest.raises(AffineVAEError, match=r"unknown cluster method 'gm' \(did you mean 'gmm'\?\)"):
        mapping.cluster_latents(z, 3, method="gm")


def test_objects_are_clustered_by_what_their_latents_change_at_the_patch_centre():
    """The dim substitutions of bench_lattice: a rare kind of object that differs at the patch
    centre is one class, though a heavy-tailed latent (the neighbours of grain-boundary atoms,
    moving only the patch edges a little) dominates the standardised latents that k-means read."""
    from types import SimpleNamespace

    from affinevae.models.base import build_model

    model = build_model("vae", image_shape=(1, 12, 12), latent_dim=2, encoder="mlp", decoder="mlp", hidden=(),
                        likelihood="gaussian", sigma=0.1, sigma_radius=0.7, seed=0).eval()
    r = np.hypot(*(np.mgrid[:12, :12] - 5.5)) / 6                  # distance from the centre, half-widths
    with torch.no_grad():                                           # a linear decoder: image = W z + b
        out = model.decoder.net[-1]
        out.weight.zero_()
        out.bias.fill_(0.2)
        out.weight[:, 0] = torch.as_tensor(0.02 * (r > 0.8).ravel())   # z0: the edges (neighbours)
        out.weight[:, 1] = torch.as_tensor(0.5 * (r < 0.25).ravel())   # z1: the centre object
    rng = np.random.default_rng(0)
    z = np.c_[rng.normal(0, 0.1, 300), rng.normal(0, 0.05, 300)]
    z[:30, 0] = rng.uniform(4, 8, 30)                               # boundary atoms: far out on z0
    z[-12:, 1] = -1.0                                               # substituted atoms: dim centres
    truth = np.r_[np.zeros(288, int), np.ones(12, int)]
    assert mapping.clustering_accuracy(mapping.cluster_latents(z, 2), truth) < 0.95   # the former default
    feats = mapping.decoded_features(model, z, batch_size=64)
    assert feats.shape == (300, 32)
    # distances are the likelihood's: the centre counts with its sigma (0.1), the edges far less
    sub, bnd = np.linalg.norm(feats[-12:] - feats[40], axis=1), np.linalg.norm(feats[:30] - feats[40], axis=1)
    assert sub.min() > 1.5 * bnd.max()
    for method in ("kmeans", "gmm"):
        labels, space = mapping.cluster_objects(model, z, 2, method)
        assert space == "images"
        np.testing.assert_array_equal(labels, truth)               # 0 is the largest cluster
    labels, space = mapping.cluster_objects(model, z, 2, on="latents")
    assert space == "latents" and np.array_equal(labels, mapping.cluster_latents(z, 2))
    # 'auto': the decoded patches when the likelihood trusts the patch centre most (train's patch-set default)
    uniform = build_model("vae", image_shape=(1, 12, 12), latent_dim=2, encoder="mlp", decoder="mlp", hidden=(),
                          likelihood="gaussian", sigma=0.1)
    assert mapping.cluster_space(uniform) == "latents" and mapping.cluster_space(uniform, "images") == "images"
    with_classes = SimpleNamespace(config=SimpleNamespace(num_classes=3, likelihood="gaussian", sigma_radius=0.7),
                                   family="jrvae")
    assert mapping.cluster_space(with_classes) == "latents"
    with pytest.raises(AffineVAEError, match="needs a model without classes"):
        mapping.cluster_space(with_classes, "images")
    with pytest.raises(AffineVAEError, match="latent_dim 2"):
        mapping.decoded_features(model, z[:, :1])
    from affinevae.cli.map import CLUSTER_SPACES  # the CLI's copy (it imports no matplotlib to parse options)
    assert CLUSTER_SPACES == mapping.CLUSTER_SPACES


def test_write_maps_scatter_and_grid(micrograph, tmp_path):
    img, t = micrograph
    vae = tiny_vae()
    enc = stream_encode(vae, img, W, min_distance=3, threshold=0.25)
    _, j = cKDTree(t.positions).query(enc.centers)
    enc.angle = t.grain_angle[j].astype(np.float32)            # pretend the model found the true angles
    res = mapping.write_maps(enc, tmp_path / "m", image=img, n_clusters=2, symmetry=2)
    assert {p.name for p in res["files"].values()} == {"maps.npz", "latents.png", "angle.png", "clusters.png"}
    with np.load(tmp_path / "m" / "maps.npz", allow_pickle=False) as f:
        assert {"z_mean", "angle", "shift", "cluster", "centers", "frames"} <= set(f.files)
        np.testing.assert_array_equal(f["centers"], enc.centers)
        assert f["cluster"].shape == (len(enc),) and res["counts"].sum() == len(enc)
    assert res["clustered"] == "latents"
    # with the model, the clusters are cluster_objects' (one rule; the decoded patches when asked)
    for on in ("images", "latents"):
        got = mapping.write_maps(enc, tmp_path / on, image=img, n_clusters=2, symmetry=2, model=vae, cluster_on=on)
        labels, space = mapping.cluster_objects(vae, enc.z_mean, 2, on=on)
        assert got["clustered"] == space == on
        np.testing.assert_array_equal(got["cluster"], labels)
        assert got["counts"].tolist() == np.bincount(labels).tolist()
    from affinevae.models.base import build_model

    wider = build_model("vae", image_shape=(1, W, W), latent_dim=4, encoder="mlp", decoder="mlp", hidden=[8])
    for kw, match in [(dict(model=vae, cluster_on="pixels"), "cluster on must be one of"),
                      (dict(cluster_on="pixels"), "cluster on must be one of"),
                      (dict(cluster_on="images"), r"cluster_on='images'\) needs the model"),
                      (dict(model=wider, cluster_on="images"), "the objects have 3 content latents, model 'vae' has latent_dim 4")]:
        with pytest.raises(AffineVAEError, match=match):
            mapping.write_maps(enc, tmp_path / "bad", image=img, n_clusters=2, **kw)
        assert not (tmp_path / "bad").exists()  # refused before anything is written
    deg, fig = mapping.angle_map(img, enc.centers, enc.angle, symmetry=2)
    assert deg.max() < 180 and len(fig.axes) == 2                # map + colour wheel
    g = stream_encode(tiny_vae(), img, W, stride=8)
    g.angle = np.where(g.centers[:, 1] < 80, 0.0, 0.6).astype(np.float32)
    res = mapping.write_maps(g, tmp_path / "g", image=img, n_clusters=3, symmetry=2)
    assert {"grid_latents", "grid_angle", "grid_clusters"} <= set(res["files"])
    maps, _ = mapping.grid_maps(g.z_mean, g.grid_shape, W, 8)
    assert maps.shape == (3, *g.grid_shape)
    np.testing.assert_allclose(maps[1, 2, 3], g.z_mean[2 * g.grid_shape[1] + 3, 1])
    # with a pixel size every grid map gets its scale bar, as the object maps do
    from affinevae import scalebar
    from affinevae.units import PixelSize

    bars = []
    real = scalebar.add_scale_bar
    try:
        scalebar.add_scale_bar = lambda ax, *a, **k: bars.append(ax.figure) or real(ax, *a, **k)
        mapping.write_maps(g, tmp_path / "gs", image=img, n_clusters=3, symmetry=2, pixel_size=PixelSize(0.05, "nm"))
    finally:
        scalebar.add_scale_bar = real
    assert len({id(f) for f in bars}) == 3  # grid_latents, grid_angle, grid_clusters
    # a downsampled background is stretched over the frame, under the windows (as the object maps draw it)
    small = img[::2, ::2]
    _, fig = mapping.grid_angle_map(g.angle, g.grid_shape, W, 8, 2, small, image_shape=img.shape)
    ax = fig.axes[0]
    assert ax.images[0].get_extent() == [-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5]
    assert ax.get_xlim() == (-0.5, img.shape[1] - 0.5)


# ============================================================================ CLI
def test_cli_patches_and_map(micrograph, tmp_path, capsys):
    img, _ = micrograph
    np.save(tmp_path / "img.npy", img)
    out = tmp_path / "p.npz"
    assert main(["patches", str(tmp_path / "img.npy"), "--window", str(W), "--min-distance", "3",
                 "--threshold", "0.25", "--out", str(out), "--no-progress"]) == 0
    said = capsys.readouterr().out
    with np.load(out, allow_pickle=False) as f:
        n = len(f["patches"])
        assert f["patches"].shape == (n, W, W) and f["centers"].shape == (n, 2) and f["frames"].shape == (n,)
    lines = said.splitlines()   # the smoothing chosen, then what was found (not stretched: no noise floor line)
    assert lines[0].startswith(f"affinevae: --sigma 1 (a sixteenth of --window {W}") and lines[1].startswith(f"{n} objects found")
    assert "centers, positions, frames;" in lines[1]
    with np.load(out, allow_pickle=False) as f:  # the objects' spacing, as the file records it
        assert f"spacing {float(f['spacing']):.2f} px)" in lines[1]
    assert main(["patches", str(tmp_path / "img.npy"), "--window", str(W), "--stride", "8", "--edge", "pad",
                 "--out", str(tmp_path / "g.npz")]) == 0
    with np.load(tmp_path / "g.npz", allow_pickle=False) as f:
        assert tuple(f["grid_shape"]) == ((128 - W) // 8 + 1, (160 - W) // 8 + 1)
    capsys.readouterr()
    # bad input: one stderr line, exit 2
    (tmp_path / "bad.csv").write_text("1,2,3,4\n")
    cases = (["--window", "500"], ["--window", str(W), "--coords", str(tmp_path / "bad.csv")],
             ["--window", str(W), "--threshold", "2"])
    for argv in cases:
        assert main(["patches", str(tmp_path / "img.npy"), *argv, "--out", str(tmp_path / "x.npz")]) == 2
        one_line_error(capsys)
    assert not (tmp_path / "x.npz").exists()
    # map with a saved (untrained) model
    tiny_vae().save(tmp_path / "run")
    assert main(["map", str(tmp_path / "run"), "--image", str(tmp_path / "img.npy"), "--patches", str(out),
                 "--out", str(tmp_path / "maps"), "--clusters", "2"]) == 0
    said = capsys.readouterr().out
    assert "no angle map" in said and "classes (kmeans of the content latents, chosen by --cluster-on auto): " in said
    assert main(["map", str(tmp_path / "run"), "--image", str(tmp_path / "img.npy"), "--patches", str(out),
                 "--out", str(tmp_path / "maps"), "--clusters", "2", "--cluster-on", "images", "--force"]) == 0
    assert "classes (kmeans of the decoded patches): " in capsys.readouterr().out
    assert main(["map", str(tmp_path / "run"), "--cube", str(tmp_path / "img.npy"), "--signal-axis", "1",
                 "--cluster-on", "images", "--out", str(tmp_path / "cube")]) == 2
    assert "--cluster-on images applies to --image/--patches" in one_line_error(capsys)
    # a QA audit: --components beyond the patches' count was refused after the maps were written (left behind, so
    # the same command could not run again), and options of --baseline / --clusters were ignored without them
    mapping_of = ["map", str(tmp_path / "run"), "--image", str(tmp_path / "img.npy"), "--patches", str(out)]
    assert main([*mapping_of, "--baseline", "pca", "--components", "5000", "--out", str(tmp_path / "m2")]) == 2
    assert "--components: baseline components must be an integer in 1.." in one_line_error(capsys)
    assert not (tmp_path / "m2").exists()
    for extra, said in ((["--components", "3"], "--components applies with --baseline, which is not given"),
                        (["--baseline", "pca", "--nmf-shift"], "--nmf-shift applies with --baseline nmf"),
                        (["--cluster-method", "gmm"], "--cluster-method applies with --clusters"),
                        (["--cluster-on", "images"], "--cluster-on applies with --clusters")):
        assert main([*mapping_of, *extra, "--out", str(tmp_path / "m3")]) == 2
        assert said in one_line_error(capsys)
    assert not (tmp_path / "m3").exists()
    with np.load(tmp_path / "maps" / "maps.npz", allow_pickle=False) as f:
        assert f["z_mean"].shape == (n, 3) and f["cluster"].max() == 1
    assert (tmp_path / "maps" / "clusters.png").stat().st_size > 0
    assert main(["map", str(tmp_path / "run"), "--image", str(tmp_path / "img.npy"), "--patches",
                 str(tmp_path / "img.npy"), "--out", str(tmp_path / "maps2")]) == 2  # (an existing maps/ is refused)
    assert "not a patches file" in one_line_error(capsys)


def test_encoding_raw_images_with_a_patch_run_warns_that_they_are_not_scaled_as_its_patches(micrograph, tmp_path, capsys):
    img, _ = micrograph
    np.save(tmp_path / "img.npy", img)
    assert main(["patches", str(tmp_path / "img.npy"), "--window", str(W), "--min-distance", "3", "--threshold", "0.25",
                 "--out", str(tmp_path / "p.npz"), "--no-progress"]) == 0
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "p.npz"), "--latent-dim", "2", "--hidden", "8",
                 "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    with np.load(tmp_path / "p.npz") as f:
        np.save(tmp_path / "raw.npy", 5.0 * f["patches"][:8] - 2.0)  # the same objects in other units
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert main(["encode", str(tmp_path / "run"), "--data", str(tmp_path / "p.npz"), "--out", str(tmp_path / "e.npz")]) == 0
    assert not [w for w in said if "not a patch set" in str(w.message)]
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert main(["encode", str(tmp_path / "run"), "--data", str(tmp_path / "raw.npy"), "--out", str(tmp_path / "e2.npz")]) == 0
    said = [str(w.message) for w in said if "not a patch set" in str(w.message)]
    assert len(said) == 1 and "`affinevae patches`" in said[0]
    assert said[0].startswith(f"{tmp_path / 'raw.npy'} is not a patch set, but the run was trained on patches cut from frames")

    def warned(argv, what):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert main(argv) == 0
        return [str(w.message) for w in seen if what in str(w.message)]
    with np.load(tmp_path / "p.npz") as f:
        np.save(tmp_path / "same.npy", f["patches"][:8])  # the patches themselves, in [0, 1]: read as they are
    assert warned(["encode", str(tmp_path / "run"), "--data", str(tmp_path / "same.npy"), "--out", str(tmp_path / "e3.npz")],
                  "not a patch set") == []
    # report reads other data through Run.data: the same warning
    assert len(warned(["report", str(tmp_path / "run"), "--data", str(tmp_path / "raw.npy"), "--out",
                       str(tmp_path / "r.html"), "--sweep-angles", "none", "--quiet"], "not a patch set")) == 1
    # report's default -n is "up to 500": no news that 8 images are fewer; an -n given is said
    assert warned(["report", str(tmp_path / "run"), "--data", str(tmp_path / "raw.npy"), "--out", str(tmp_path / "r2.html"),
                   "--sweep-angles", "none", "--quiet"], "asks for more images") == []
    assert len(warned(["report", str(tmp_path / "run"), "--data", str(tmp_path / "raw.npy"), "--out",
                       str(tmp_path / "r3.html"), "--sweep-angles", "none", "--quiet", "-n", "1000"],
                      "n=1000 asks for more images than the 8 it holds")) == 1
    # the converse: a run trained on float images the loader scaled, given a patch set
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "raw.npy"), "--latent-dim", "2", "--hidden", "8",
                 "--epochs", "1", "--out", str(tmp_path / "run2"), "--no-progress"]) == 0
    said = warned(["encode", str(tmp_path / "run2"), "--data", str(tmp_path / "p.npz"), "--out", str(tmp_path / "e4.npz")],
                  "is a patch set")
    assert len(said) == 1 and "whose pixels were scaled as" in said[0] and "train on patches to encode patches" in said[0]


def test_cli_patches_default_min_distance_keeps_dim_atoms_beside_bright_ones(tmp_path, capsys):
    """Without --min-distance, patches detects at a quarter of the window and says so: on
    synthetic_micrograph's defaults (atoms 8 px apart, substituted atoms at half brightness) with
    --window 16 every substituted atom gets a patch (the former fixed distance 5 lost a third of them
    here: the 11 x 11 maximum filter reached the flanks of their brighter neighbours)."""
    from affinevae.defaults import patch_min_distance

    assert [patch_min_distance(w) for w in (1, 7, 12, 16, 64)] == [1, 1, 3, 4, 16]
    img, truth = synthetic_micrograph(size=128, lattice="hexagonal", seed=0)
    np.save(tmp_path / "img.npy", img)
    out = tmp_path / "p.npz"
    assert main(["patches", str(tmp_path / "img.npy"), "--window", "16", "--edge", "pad", "--out", str(out)]) == 0
    assert "--min-distance 4 (a quarter of --window 16" in capsys.readouterr().out
    with np.load(out) as f:
        centers = f["centers"]
    d, _ = cKDTree(centers).query(truth.positions)
    sub = truth.defect == 1
    assert sub.sum() >= 5 and (d[sub] < 1.5).all() and (d[~sub] < 1.5).mean() > 0.99
    old = detect_objects(img, 5, 0.3)
    assert (cKDTree(old).query(truth.positions[sub])[0] < 1.5).mean() < 0.9  # what the former default found
    # Python takes the same default (one rule): cut_patches without min_distance gives patches' very patches
    ps = cut_patches(img, 16, edge="pad")
    np.testing.assert_array_equal(ps.centers, centers)


def test_cli_patches_expands_glob_patterns_in_name_order(micrograph, tmp_path, capsys):
    """Shells on Windows pass '*.tif' on as written: patches expands it (sorted by name) and reads the
    files' frames one after another, as it reads the files given one by one or stacked in one array."""
    import tifffile

    img, _ = micrograph
    u8 = (np.stack([img, img[::-1], img[:, ::-1]]) * 255).astype(np.uint8)  # three different frames
    scans = tmp_path / "scans"
    scans.mkdir()
    for i, name in ((2, "c.tif"), (0, "a.tif"), (1, "b.tif")):  # written out of name order
        tifffile.imwrite(scans / name, u8[i])
    opts = ["--window", str(W), "--min-distance", "3", "--threshold", "0.25", "--no-progress"]
    assert main(["patches", str(scans / "*.tif"), *opts, "--out", str(tmp_path / "glob.npz")]) == 0
    assert "in 3 of 3 frame(s) of 3 files" in capsys.readouterr().out
    assert main(["patches", *(str(scans / n) for n in ("a.tif", "b.tif", "c.tif")), *opts,
                 "--out", str(tmp_path / "listed.npz")]) == 0
    ref = cut_patches(u8, W, min_distance=3, threshold=0.25)
    with np.load(tmp_path / "glob.npz") as g, np.load(tmp_path / "listed.npz") as li:
        assert set(g["frames"].tolist()) == {0, 1, 2}
        for k in ("patches", "centers", "frames"):
            np.testing.assert_array_equal(g[k], li[k])
            np.testing.assert_array_equal(g[k], getattr(ref, k))
    capsys.readouterr()
    # a pattern matching nothing, and files whose frames differ: one line each, nothing written
    assert main(["patches", str(scans / "*.png"), *opts, "--out", str(tmp_path / "x.npz")]) == 2
    assert one_line_error(capsys) == f"affinevae: error: {scans / '*.png'}: no file matches this pattern"
    tifffile.imwrite(scans / "d.tif", u8[0, :64])
    assert main(["patches", str(scans / "[a-d].tif"), *opts, "--out", str(tmp_path / "x.npz")]) == 2
    err = one_line_error(capsys)
    assert "d.tif: frames of shape (64, 160), but" in err and "a.tif has (128, 160)" in err
    assert not (tmp_path / "x.npz").exists()


# ============================================================================ science: rVAE on a polycrystal
DELTA = math.radians(30.0)


@pytest.fixture(scope="module")
def polycrystal_rvae():
    """A small rVAE trained on the atoms of a two-grain micrograph (~350 patches, ~10 s on one core)."""
    from affinevae.data.imageset import ImageSet
    from affinevae.encoding import encode_patchset
    from affinevae.models.rvae import RVAE
    from affinevae.training import TrainConfig, fit

    img, t = synthetic_micrograph(size=(160, 160), spacing=6.0, grain_angles=(0.2, 0.2 + DELTA),
                                  substitution_frac=0.15, substitution_intensity=2.0, noise=0.05, seed=0)
    ps = cut_patches(img, 12, min_distance=3, threshold=0.1)
    d, j = cKDTree(t.positions).query(ps.centers)
    assert (d < 1.5).all()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matmuls: one thread is ~10x faster than two contended ones
    try:
        torch.manual_seed(0)
        model = RVAE(image_shape=(1, 12, 12), latent_dim=2, invariances=("rotation", "translation"),
                     rotation_mode="full", encoder="mlp", likelihood="gaussian", sigma=0.1, hidden=(32, 32))
        fit(model, ImageSet(ps.patches), TrainConfig(epochs=120, batch_size=32, lr=3e-3, val_split=0.0, seed=0,
                                                      device="cpu", progress=False, checkpoint=False))
        enc = encode_patchset(model.eval(), ps)
    finally:
        torch.set_num_threads(threads)
    return img, ps, model, enc, t.grain[j], t.defect[j]


def test_rvae_angles_separate_grains_and_latents_separate_defects(polycrystal_rvae):
    img, ps, model, enc, grain, defect = polycrystal_rvae
    lattice = defect == 0
    # the lattice has 2-fold symmetry: compare angles modulo 180 degrees
    m0 = mapping.circular_mean(enc.angle[lattice & (grain == 0)], 2)
    m1 = mapping.circular_mean(enc.angle[lattice & (grain == 1)], 2)
    diff = mapping.angle_difference(m1, m0, 2)
    print(f"\nrVAE grain angle difference {math.degrees(diff):.2f} deg (true {math.degrees(DELTA):.0f})")
    assert abs(math.degrees(diff - DELTA)) < 3.0
    nearer_1 = (np.abs([mapping.angle_difference(a, m1, 2) for a in enc.angle])
                < np.abs([mapping.angle_difference(a, m0, 2) for a in enc.angle]))
    grain_acc = (nearer_1 == (grain == 1)).mean()
    assert grain_acc > 0.97, grain_acc
    cluster = mapping.cluster_latents(enc.z_mean, 2)
    acc = mapping.clustering_accuracy(cluster, defect)
    print(f"defect vs lattice clustering accuracy {acc:.3f} (majority class {1 - defect.mean():.3f}), "
          f"grain accuracy from the angle {grain_acc:.3f}")
    assert acc > 0.9 and acc > 1 - defect.mean() + 0.05


def test_cli_map_with_the_rvae(polycrystal_rvae, tmp_path, capsys):
    img, ps, model, enc, grain, defect = polycrystal_rvae
    model.save(tmp_path / "run")
    np.save(tmp_path / "img.npy", img)
    ps.save(tmp_path / "p.npz")
    assert main(["map", str(tmp_path / "run"), "--image", str(tmp_path / "img.npy"), "--patches",
                 str(tmp_path / "p.npz"), "--out", str(tmp_path / "maps"), "--clusters", "2", "--symmetry", "2"]) == 0
    said = capsys.readouterr().out
    assert f"mapped {len(ps)} objects with rvae" in said and "no angle map" not in said
    with np.load(tmp_path / "maps" / "maps.npz", allow_pickle=False) as f:
        np.testing.assert_allclose(f["angle"], enc.angle, atol=1e-5)
        np.testing.assert_array_equal(f["centers"], ps.centers)
        assert mapping.clustering_accuracy(f["cluster"], defect) > 0.9
        assert np.abs(f["positions"] - ps.centers).max() < 3  # shift-refined positions stay near the atoms
        # ... and closer than the integer centres: a shift is relative to the centre pixel (index w // 2), where the
        # model learned its canonical atom; from the even window's geometric centre they missed by 0.65 px
        _, truth = synthetic_micrograph(size=(160, 160), spacing=6.0, grain_angles=(0.2, 0.2 + DELTA),
                                        substitution_frac=0.15, substitution_intensity=2.0, noise=0.05, seed=0)
        true = truth.positions[cKDTree(truth.positions).query(ps.centers)[1]]
        refined, centred = (np.linalg.norm(q - true, axis=1).mean() for q in (f["positions"], ps.centers))
        assert refined < 0.8 * centred < 0.4, (refined, centred)
    for name in ("angle.png", "latents.png", "clusters.png"):
        assert (tmp_path / "maps" / name).stat().st_size > 10_000
    assert main(["map", str(tmp_path / "run"), "--image", str(tmp_path / "img.npy"), "--patches",
                 str(tmp_path / "p.npz"), "--out", str(tmp_path / "maps"), "--frame", "3", "--force"]) == 2
    assert "--frame 3" in capsys.readouterr().err
    # the image must be the one the patches were cut from: frames too, not only their size
    np.save(tmp_path / "stack.npy", np.stack([img, img, img]))
    assert main(["map", str(tmp_path / "run"), "--image", str(tmp_path / "stack.npy"), "--patches",
                 str(tmp_path / "p.npz"), "--out", str(tmp_path / "m3")]) == 2
    assert f"{tmp_path / 'p.npz'}: patches were cut from 1 frame(s), but {tmp_path / 'stack.npy'} has 3" in \
        one_line_error(capsys)
    assert not (tmp_path / "m3").exists()
    # patches of another size: the patch-set file is named, with the window to cut
    cut_patches(img, 16, min_distance=3, threshold=0.1).save(tmp_path / "p16.npz")
    assert main(["map", str(tmp_path / "run"), "--image", str(tmp_path / "img.npy"), "--patches",
                 str(tmp_path / "p16.npz"), "--out", str(tmp_path / "m16")]) == 2
    assert one_line_error(capsys).startswith(f"affinevae: error: {tmp_path / 'p16.npz'}: image shape 1x16x16")
    assert main(["encode", str(tmp_path / "run"), "--data", str(tmp_path / "p16.npz"), "--out",
                 str(tmp_path / "codes.npz")]) == 2
    assert one_line_error(capsys).startswith(f"affinevae: error: {tmp_path / 'p16.npz'}: image shape 1x16x16")


def test_patchset_imageset_is_what_train_reads_back(micrograph, tmp_path):
    """PatchSet.imageset() holds the images and meta load_images reads from the saved patch set, so
    data_defaults chooses the patch-set defaults in Python as train does for the file."""
    from affinevae.data.files import load_images
    from affinevae.defaults import data_defaults
    from affinevae.units import PixelSize

    img, _ = micrograph
    ps = cut_patches(img, W, min_distance=3, threshold=0.25)
    ps.pixel_size = PixelSize(0.05, "nm")
    ps.save(tmp_path / "p.npz")
    mine, read = ps.imageset(), load_images(str(tmp_path / "p.npz"))
    np.testing.assert_array_equal(mine.images, read.images)
    assert mine.meta == read.meta and mine.meta["kind"] == "patches" and mine.meta["unit"] == "nm"
    assert data_defaults(mine, "rvae", {}, None, None) == data_defaults(read, "rvae", {}, None, None)
    assert data_defaults(mine, "rvae", {}, None, None)[0]["rotation_mode"] == "full"
    empty = PatchSet(np.zeros((0, W, W), np.float32), np.zeros((0, 2), np.int64), np.zeros(0, np.int64), W)
    with pytest.raises(AffineVAEError, match="^patches: holds no patches$"):
        empty.imageset()


def test_cli_patches_refuses_bad_detection_options_in_one_line_naming_the_flag(micrograph, tmp_path, capsys):
    """Each option out of range is one stderr line naming its flag, nothing on stdout, nothing written:
    a window under 8 (train could not learn it), a relative threshold outside 0..1, a negative sigma..."""
    img, _ = micrograph
    np.save(tmp_path / "img.npy", img)
    out = tmp_path / "p.npz"
    for extra, said in [(["--window", "7"], "--window must be >= 8 pixels (the models need patches of at least 8x8), got 7"),
                        (["--window", "12", "--threshold", "-0.5"], "--threshold must lie in 0..1"),
                        (["--window", "12", "--threshold", "1.5"], "give --absolute for a pixel value"),
                        (["--window", "12", "--threshold", "nan"], "--threshold must be a finite number"),
                        (["--window", "12", "--sigma", "-1"], "--sigma must be >= 0 pixels, got -1"),
                        (["--window", "12", "--sigma", "1e9"], "--sigma 1e+09 pixels is wider than the window (12 pixels)"),
                        (["--window", "12", "--noise-floor", "-1"], "--noise-floor must be a number >= 0"),
                        (["--window", "12", "--min-distance", "0"], "--min-distance must be >= 1, got 0"),
                        (["--window", "12", "--stride", "0"], "--stride must be >= 1, got 0"),
                        (["--window", "200"], "img.npy: the 128x160 image is smaller than the 200x200 window")]:
        assert main(["patches", str(tmp_path / "img.npy"), *extra, "--out", str(out)]) == 2, extra
        captured = capsys.readouterr()
        assert captured.out == "" and said in captured.err and captured.err.count("\n") == 1, (extra, captured)
        assert not out.exists()
    # --absolute reads the threshold as a pixel value: 1.5 is above every pixel, so nothing is found
    assert main(["patches", str(tmp_path / "img.npy"), "--window", "12", "--threshold", "1.5", "--absolute",
                 "--out", str(out)]) == 2
    assert "no objects found above threshold 1.5" in one_line_error(capsys)
    # a constant image: no threshold finds anything, and the message does not ask for a lower one
    np.save(tmp_path / "flat.npy", np.full((64, 64), 0.5, np.float32))
    assert main(["patches", str(tmp_path / "flat.npy"), "--window", "12", "--threshold", "0", "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert "no objects found even at threshold 0" in err and "constant image" in err and "lower" not in err
    # Python refuses a relative threshold outside 0..1 too
    with pytest.raises(AffineVAEError, match=r"^threshold must lie in 0\.\.1 .*absolute=True"):
        detect_objects(img, 3, -0.5)
    assert len(detect_objects(img, 3, 0.3, absolute=True)) > 0
    # channels are said: an RGB-like frame gives patches of 3 channels
    np.save(tmp_path / "rgb.npy", np.stack([img] * 3, -1)[None])   # (1, H, W, 3)
    assert main(["patches", str(tmp_path / "rgb.npy"), "--window", "12", "--out", str(out)]) == 0
    assert "in 1 of 1 frame(s) of 3 channels" in capsys.readouterr().out


def test_mapping_and_data_helpers_refuse_bad_arguments_in_one_line():
    """The small public helpers say what is wrong instead of returning NaN / 0 or raising from numpy,
    and take one pose for every image where that is what the user means."""
    from affinevae.data.imageset import ImageSet
    from affinevae.data.mnist import transform_images
    from affinevae.evaluation import psnr

    images = np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32)
    d = ImageSet(images[:, 0], source="set.npy")
    arrays = {"window": 8, "positions": np.zeros((1, 2)), "centers": np.zeros((1, 2)), "shift": np.zeros((1, 2))}
    for call, match in [
        (lambda: mapping.circular_mean([]), r"^circular_mean needs one or more finite angles"),
        (lambda: mapping.circular_mean([0.1, np.nan]), r"\(1 not finite\)$"),
        (lambda: mapping.neighbour_spacing(np.zeros(4)), r"^neighbour_spacing: centers must be \(N, 2\)"),
        (lambda: mapping.grid_angle_map(np.zeros(4), (2, 2), 8, 0), r"^grid_angle_map: stride must be an integer >= 1"),
        (lambda: mapping.grid_maps(np.zeros(4), (2, 2), 0, 4), r"^grid_maps: window must be an integer >= 1"),
        (lambda: mapping.physical_arrays(arrays, "abc"), r"^physical_arrays: pixel_size must be a PixelSize"),
        (lambda: d.subset(np.arange(5)), r"^set\.npy: subset index 4 outside the 3 images$"),
        (lambda: d.subset(np.ones(2, bool)), r"^set\.npy: a subset mask needs 3 entries"),
        (lambda: psnr(np.zeros(3), np.zeros(4)), r"^psnr: the two image arrays differ in shape"),
        (lambda: transform_images(images, angle=[90.0, 0, 0]), r"^transform_images: an angle of 90 is more than a full turn"),
        (lambda: transform_images(images, angle=[0.1, 0.2]), r"^transform_images: angle must be finite, of shape \(3,\)"),
    ]:
        with pytest.raises(AffineVAEError, match=match):
            call()
    # one angle (or shift) for every image is broadcast; an empty or NaN-holding angle map still draws
    np.testing.assert_array_equal(transform_images(images, angle=0.5), transform_images(images, angle=np.full(3, 0.5)))
    np.testing.assert_array_equal(transform_images(images, shift=[0.1, 0.0]),
                                  transform_images(images, shift=np.tile([0.1, 0.0], (3, 1))))
    assert mapping.angle_map(None, np.zeros((2, 2)), np.array([np.nan, 0.3]), 2)[0].shape == (2,)
    # a model's angle may pass a full turn (an rVAE's Gaussian angle is unbounded): folded, not refused
    deg, _ = mapping.angle_map(None, np.zeros((2, 2)), np.array([0.5 + 2 * math.pi, 0.5]), 1)
    np.testing.assert_allclose(deg, [math.degrees(0.5)] * 2)
    # a mean just under the folded range's end reads as its start (0.0°, not 180.0°)
    _, fig = mapping.angle_map(None, np.zeros((2, 2)), np.radians([179.97, 179.99]), 2)
    assert any(t.get_text().endswith("mean 0.0°") for t in fig.texts)
    np.testing.assert_allclose(mapping.fold_angle([-math.pi / 2, 2 * math.pi, np.nan], 4), [0, 0, np.nan], atol=1e-12)
    assert mapping.neighbour_spacing(np.zeros((0, 2))) is None


def sparse_field(seed: int = 0, size: int = 200, n: int = 12):
    """(size, size) float32: ``n`` faint round blobs (peak 0.6, sigma 2.5 px) on a noisy sky (0.2 + noise 0.1)
    with one bright star (1.0): 0.3 of the range lies within the noise. Returns (frame, blob centres (n, 2))."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(20, size - 20, (n, 2))
    v, u = np.mgrid[:size, :size]
    img = 0.2 + 0.1 * rng.standard_normal((size, size))
    for r, c in centres:
        img += 0.6 * np.exp(-((v - r) ** 2 + (u - c) ** 2) / (2 * 2.5 ** 2))
    img[5:7, 5:7] = 1.0
    return img.astype(np.float32), centres


def test_the_noise_floor_keeps_noise_peaks_out_of_a_sparse_field():
    """On a sky with a few faint objects and a bright star, 0.3 of the range lies in the noise: without the
    floor nearly every detection is a noise peak; with the default floor (3 sigma above the median) the
    objects are found and the noise peaks fall more than five-fold; smoothing lowers the floor by the
    noise it removes, and most of the rest go."""
    frame, centres = sparse_field()
    tree = cKDTree(centres)

    def share(found):
        return (tree.query(found)[0] < 3).mean(), (cKDTree(found).query(centres)[0] < 3).mean()

    bare = detect_objects(frame, 5, 0.3)
    assert share(bare)[0] < 0.1  # nearly all noise peaks (300 of them)
    floored = detect_objects(frame, 5, 0.3, noise_floor=3)
    precision, recall = share(floored)
    assert (1 - precision) * len(floored) < (1 - share(bare)[0]) * len(bare) / 5 and recall > 0.9, (precision, recall)
    precision, recall = share(detect_objects(frame, 5, 0.3, sigma=2.0, noise_floor=3))
    assert precision > 0.8 and recall > 0.9, (precision, recall)
    # the floor never applies to an absolute threshold
    np.testing.assert_array_equal(detect_objects(frame, 5, 0.45, absolute=True),
                                  detect_objects(frame, 5, 0.45, absolute=True, noise_floor=3))
    with pytest.raises(AffineVAEError, match="noise_floor must be a finite number >= 0"):
        detect_objects(frame, 5, 0.3, noise_floor=-1)


def test_the_noise_level_is_the_smoothed_noise_and_tiles_measure_the_whole_frame():
    from affinevae.data.objects import level_samples, level_step, noise_level, smoothed_pair

    rng = np.random.default_rng(1)
    noise = rng.standard_normal((400, 400)).astype(np.float32)
    for sigma in (None, 1.0, 2.0):
        raw, smooth = smoothed_pair(noise, sigma)
        median, sd = noise_level(*level_samples(raw, smooth, 1), sigma)
        assert sd == pytest.approx(float(np.std(smooth[20:-20, 20:-20])), rel=0.08) and abs(median) < 0.05
    assert level_step((1000, 1000)) == 1 and level_step((3000, 3000)) == 3
    counts = rng.poisson(0.3, (300, 300)).astype(np.float32)  # most Haar details exactly 0: the median says 0
    assert 0.4 < noise_level(*level_samples(counts, counts, 1))[1] < 1.0  # the Poisson deviation is 0.55
    # tiles (with a pixel of margin) sample exactly the pixels and blocks the whole frame does
    frame = rng.random((61, 47)).astype(np.float32)
    raw, smooth = smoothed_pair(frame, 1.5)
    whole = level_samples(raw, smooth, 3)
    parts = []
    for r0, r1 in ((0, 25), (25, 61)):
        for c0, c1 in ((0, 20), (20, 47)):
            rr, rc = slice(max(0, r0 - 1), min(61, r1 + 1)), slice(max(0, c0 - 1), min(47, c1 + 1))
            core = (slice(r0 - rr.start, r1 - rr.start), slice(c0 - rc.start, c1 - rc.start))
            parts.append(level_samples(raw[rr, rc], smooth[rr, rc], 3, core, (rr.start, rc.start), frame.shape))
    for k in range(2):
        np.testing.assert_array_equal(np.sort(np.concatenate([p[k] for p in parts])), np.sort(whole[k]))


def raw_sky(seed: int, size: int, centres: bool = False):
    """A sparse field as raw flux (sky 200 counts with Poisson noise, faint blobs, one saturated star): the
    float pixels outside [0, 1] get the automatic asinh stretch, and with it the sparse field's threshold
    (the noise floor alone); with ``centres`` also the blobs' (n, 2) centres."""
    frame, where = sparse_field(seed=seed, size=size, n=size // 15)
    rng = np.random.default_rng(seed)
    flux = 200.0 + 300.0 * (frame - 0.2)  # blobs of up to 180 counts over the sky
    flux[5:7, 5:7] = 50000.0
    sky = (rng.poisson(np.clip(flux, 0, None)) - 200.0).astype(np.float32)
    return (sky, where) if centres else sky


def test_tiles_find_what_the_whole_frame_finds_under_the_noise_floor(tmp_path):
    """On a stretched sparse field the default threshold is the noise floor alone (5 sigma above the median):
    every faint blob and hardly anything else, as tiles find it too; with the floor off (0.3 of the range, as
    given) over five times as many, mostly noise peaks."""
    from affinevae.data.patches import SPARSE_NOISE_FLOOR, default_threshold

    sky, centres = raw_sky(2, 300, centres=True)
    np.save(tmp_path / "sky.npy", sky)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stretch is said
        whole = cut_patches(tmp_path / "sky.npy", 16, tile=None, edge="pad")
        tiled = cut_patches(tmp_path / "sky.npy", 16, tile=100, edge="pad")
        bare = cut_patches(tmp_path / "sky.npy", 16, tile=None, noise_floor=0, edge="pad")
        with open_stack(tmp_path / "sky.npy") as src:
            src.read(0, 1)
            assert src.pixel_scaling.kind == "asinh" and default_noise_floor(src) == SPARSE_NOISE_FLOOR == 5.0
            assert default_threshold(src) == 0.0
    np.testing.assert_array_equal(whole.centers, tiled.centers)
    found = whole.positions[(whole.positions > 12).all(1)]            # the star's corner left out
    assert np.mean(cKDTree(centres).query(found)[0] < 3) >= 0.9          # precision
    assert np.mean(cKDTree(found).query(centres)[0] < 3) >= 0.9          # recall
    assert len(whole) < len(bare) / 5
    # the floor turned off on a stretched field: back to 0.3 of the range, not no threshold at all
    ranged = cut_patches(tmp_path / "sky.npy", 16, tile=None, noise_floor=0, threshold=0.3, edge="pad")
    np.testing.assert_array_equal(bare.centers, ranged.centers)
    with pytest.raises(AffineVAEError, match="noise_floor must be"):
        cut_patches(tmp_path / "sky.npy", 16, noise_floor=float("nan"))


def test_tiles_measure_the_whole_frames_noise_level(tmp_path, monkeypatch):
    """Every tile's detection gets the whole frame's median and noise, measured tile by tile on the frame's
    pixel subgrid (step 2 above a million pixels) with the smoothing's margin: the same numbers as the frame's."""
    import affinevae.data.patches as patches_module
    from affinevae.data.objects import level_samples, level_step, noise_level, smoothed_pair

    rng = np.random.default_rng(4)
    frame = (0.3 + 0.05 * rng.standard_normal((1101, 1037))).astype(np.float32)
    frame[:550] += 0.05 * rng.standard_normal((550, 1037)).astype(np.float32)  # one half noisier: tiles differ
    frame[200:203, 300:303] = 1.0
    frame = np.clip(frame, 0, 1)
    np.save(tmp_path / "f.npy", frame)
    assert level_step(frame.shape) == 2
    seen = []
    real = patches_module.find_objects  # detection (and the sub-pixel fit) as patches calls it

    def spy(*args, **kwargs):
        seen.append(kwargs.get("level"))
        return real(*args, **kwargs)

    monkeypatch.setattr(patches_module, "find_objects", spy)
    # centre='peak': the centring check's own detection on a central crop measures the crop (not a tile)
    tiled = cut_patches(tmp_path / "f.npy", 16, tile=400, sigma=1.5, noise_floor=3, centre="peak")
    with open_stack(tmp_path / "f.npy") as src:
        raw, smooth = smoothed_pair(src.read(0, 1)[0], 1.5)
    expected = noise_level(*level_samples(raw, smooth, 2), 1.5)
    assert len(seen) > 4 and all(level == pytest.approx(expected, rel=1e-12) for level in seen)
    seen.clear()
    whole = cut_patches(tmp_path / "f.npy", 16, tile=None, sigma=1.5, noise_floor=3, centre="peak")
    assert seen == [None]  # a whole frame measures its own
    np.testing.assert_array_equal(whole.centers, tiled.centers)


def test_cli_patches_says_the_detection_threshold(tmp_path, capsys):
    np.save(tmp_path / "sky.npy", raw_sky(3, 200))
    assert main(["patches", str(tmp_path / "sky.npy"), "--window", "16", "--no-progress", "--out",
                 str(tmp_path / "p.npz")]) == 0
    out = capsys.readouterr().out
    assert ("detection threshold: 5 noise sigma above each frame's median (asinh-stretched frames: a sparse field, "
            "where a fraction of the range drops faint objects)") in out
    assert main(["patches", str(tmp_path / "sky.npy"), "--window", "16", "--noise-floor", "0", "--no-progress",
                 "--out", str(tmp_path / "q.npz")]) == 0
    assert "detection threshold" not in capsys.readouterr().out
    assert len(np.load(tmp_path / "q.npz")["centers"]) > 2 * len(np.load(tmp_path / "p.npz")["centers"])
    assert main(["patches", str(tmp_path / "sky.npy"), "--window", "16", "--noise-floor", "2.5",
                 "--no-progress", "--out", str(tmp_path / "r.npz")]) == 0
    assert "detection threshold: 2.5 noise sigma above each frame's median (asinh-stretched" in capsys.readouterr().out
    assert main(["patches", str(tmp_path / "sky.npy"), "--window", "16", "--threshold", "0.3",
                 "--no-progress", "--out", str(tmp_path / "s.npz")]) == 0
    assert "0.3 of each frame's range or 5 noise sigma above its median, whichever is higher (asinh-stretched" in \
        capsys.readouterr().out


def test_patches_invert_finds_dark_objects(tmp_path, capsys):
    """Dark objects on a bright background (raw cryo-EM contrast): detection looks for bright maxima, so
    without --invert it finds the gaps between them; with it, the objects, with the patches the bright
    image gives."""
    img, truth = synthetic_micrograph(size=(96, 96), spacing=8.0, noise=0.02, seed=3)
    np.save(tmp_path / "bright.npy", img)
    np.save(tmp_path / "dark.npy", (1.0 - img).astype(np.float32))
    base = ["--window", "16", "--no-progress"]
    assert main(["patches", str(tmp_path / "bright.npy"), *base, "--out", str(tmp_path / "b.npz")]) == 0
    assert main(["patches", str(tmp_path / "dark.npy"), *base, "--invert", "--out", str(tmp_path / "i.npz")]) == 0
    assert main(["patches", str(tmp_path / "dark.npy"), *base, "--out", str(tmp_path / "d.npz")]) in (0, 2)
    capsys.readouterr()
    bright, inverted = np.load(tmp_path / "b.npz"), np.load(tmp_path / "i.npz")
    np.testing.assert_array_equal(bright["centers"], inverted["centers"])
    np.testing.assert_allclose(bright["patches"], inverted["patches"], atol=1e-6)
    if (tmp_path / "d.npz").exists():  # the dark frame read as it is: its maxima are the gaps, not the atoms
        near = cKDTree(truth.positions).query(np.load(tmp_path / "d.npz")["centers"])[0] < 1.5
        assert near.mean() < 0.2
    with open_stack(tmp_path / "dark.npy") as src:
        src.use_invert()
        np.testing.assert_allclose(src.read(0, 1)[0], img, atol=1e-6)


# ============================================================================ lattice angles of grid windows
def test_lattice_orientation_reads_each_grain_s_angle_from_grid_windows():
    """Grid windows' lattice angles from their Fourier peaks follow the grains (30 deg apart) to a fraction of a
    degree, in synthetic_micrograph's own angle convention, for square, hexagonal and rectangular lattices; a
    window mirrored left-right reads the opposite angle; a symmetry of 1 is refused."""
    from scipy.spatial import cKDTree

    for lattice, n in (("square", 4), ("hexagonal", 6), ("rectangular", 2)):
        img, truth = synthetic_micrograph(size=(160, 160), spacing=8.0, lattice=lattice, noise=0.1, seed=0,
                                          grain_angles=(0.3, 0.3 + math.radians(30)))
        ps = cut_patches(img, 32, stride=8)
        got = mapping.lattice_orientation(ps.patches, n)
        assert got.fold == n and got.angle.shape == got.strength.shape == (len(ps),)
        assert np.all((got.angle >= 0) & (got.angle < 2 * np.pi / n)) and np.all((got.strength >= 0) & (got.strength <= 1))
        tree = cKDTree(truth.positions)
        share = np.array([truth.grain[tree.query_ball_point(c, 14.0)].mean() for c in ps.centers])
        for grain, want in ((0, 0.3), (1, 0.3 + math.radians(30))):
            inside = share == grain
            assert inside.sum() > 10
            off = math.degrees(mapping.angle_difference(mapping.circular_mean(got.angle[inside], n), want, n))
            assert abs(off) < 1.0, (lattice, grain, off)
        mirrored = mapping.lattice_orientation(ps.patches[:, :, ::-1], n)
        diff = np.degrees(np.abs(np.angle(np.exp(1j * n * (mirrored.angle + got.angle))))) / n
        assert np.median(diff) < 1.0
    assert mapping.lattice_orientation(np.stack([ps.patches[:3]] * 2, 1), 2).angle.shape == (3,)  # channels averaged
    with pytest.raises(AffineVAEError, match="symmetry of 2 or more"):
        mapping.lattice_orientation(ps.patches, 1)


def test_map_of_grid_windows_draws_their_lattice_angles(tmp_path, capsys):
    img, truth = synthetic_micrograph(size=(128, 128), spacing=8.0, lattice="square", noise=0.05, seed=1,
                                      grain_angles=(0.0, math.radians(30)))
    np.save(tmp_path / "img.npy", img)
    assert main(["patches", str(tmp_path / "img.npy"), "--window", "32", "--stride", "8",
                 "--out", str(tmp_path / "g.npz")]) == 0
    from affinevae.models.base import build_model

    build_model("vae", image_shape=(1, 32, 32), latent_dim=2, encoder="mlp", decoder="mlp", hidden=[8]).save(tmp_path / "run")
    capsys.readouterr()
    assert main(["map", str(tmp_path / "run"), "--image", str(tmp_path / "img.npy"), "--patches", str(tmp_path / "g.npz"),
                 "--out", str(tmp_path / "maps")]) == 0
    said = capsys.readouterr().out
    assert "estimated 4-fold rotational symmetry" in said and "lattice angle of each window from its Fourier peaks (4-fold" in said
    assert (tmp_path / "maps" / "grid_lattice_angle.png").stat().st_size > 0
    ps = PatchSet.load(tmp_path / "g.npz")
    with np.load(tmp_path / "maps" / "maps.npz", allow_pickle=False) as f:
        angle, fold = f["lattice_angle"], int(f["lattice_fold"])
        assert fold == 4 and angle.shape == (len(ps),) and f["lattice_strength"].shape == (len(ps),)
    from affinevae.napari_plugin.reader import read_maps   # the napari reader shows them as a feature

    points = read_maps(str(tmp_path / "maps" / "maps.npz"))[-1]
    np.testing.assert_allclose(points[1]["features"]["lattice_angle_deg"], np.degrees(angle))
    left, right = ps.centers[:, 1] < 40, ps.centers[:, 1] > 88   # grain 0 left of the boundary, grain 1 right
    gap = math.degrees(mapping.angle_difference(mapping.circular_mean(angle[right], 4), mapping.circular_mean(angle[left], 4), 4))
    assert abs(abs(gap) - 30) < 1.5
    assert main(["map", str(tmp_path / "run"), "--image", str(tmp_path / "img.npy"), "--patches", str(tmp_path / "g.npz"),
                 "--symmetry", "1", "--out", str(tmp_path / "maps1")]) == 0
    said = capsys.readouterr().out
    assert "no lattice angles: --symmetry 1" in said and not (tmp_path / "maps1" / "grid_lattice_angle.png").exists()


def test_angles_folded_into_a_period_never_reach_its_end():
    """np.mod of a tiny negative angle gives the period itself; the folds take it as 0."""
    assert mapping.circular_mean(np.array([-1e-17]), 4) == 0.0
    assert mapping.fold_angle(np.array([-1e-17]), 4)[0] == 0.0 and np.isnan(mapping.fold_angle(np.array([np.nan]), 4)[0])
    assert -math.pi / 4 <= mapping.angle_difference(1e-17, math.pi / 4 + 1e-17, 2) < math.pi / 4


def test_maps_carry_the_patch_sets_sub_pixel_positions(tmp_path):
    """maps.npz holds the patch set's own sub-pixel positions beside the model's shift-refined ones (and in
    physical units with a pixel size); a grid has none."""
    from affinevae.units import PixelSize

    img, _ = synthetic_micrograph(size=(96, 96), spacing=8.0, seed=3)
    ps = cut_patches(img, W)
    enc = stream_encode(tiny_vae(), img, W)
    np.testing.assert_array_equal(enc.peak_positions, ps.positions)
    mapping.write_maps(enc, tmp_path / "m", image=img, pixel_size=PixelSize(0.5, "nm"))
    with np.load(tmp_path / "m" / "maps.npz") as f:
        np.testing.assert_array_equal(f["peak_positions"], ps.positions)
        np.testing.assert_allclose(f["peak_positions_phys"], ps.positions * 0.5)
    assert stream_encode(tiny_vae(), img, W, stride=8).peak_positions is None


def _spot_field(size: int = 384, n: int = 40, peak: float = 6.0, width: float = 1.2, seed: int = 0) -> np.ndarray:
    """Faint Gaussian spots (peak ``peak`` noise sigma, ``width`` px) scattered on unit Gaussian noise:
    a sparse field that no bright source stretches."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(12, size - 12, (n, 2))
    img = render_gaussians((size, size), pos, np.full(n, peak), width) + rng.normal(0, 1, (size, size))
    return img.astype(np.float32)


def test_frame_periodicity_tells_a_lattice_from_objects_placed_at_random():
    from affinevae.data.objects import PERIODIC_RATIO, frame_periodicity

    for lattice in ("square", "hexagonal", "rectangular"):
        img, _ = synthetic_micrograph(256, spacing=6.0, noise=0.3, lattice=lattice, seed=1)
        assert frame_periodicity(img) >= PERIODIC_RATIO, lattice
    assert frame_periodicity(_spot_field()) < PERIODIC_RATIO / 2
    assert frame_periodicity(np.random.default_rng(0).normal(size=(2, 300, 300))) < PERIODIC_RATIO / 2  # (C, H, W)
    assert frame_periodicity(np.ones((64, 64))) == 0.0
    with pytest.raises(AffineVAEError, match="at least 16 x 16"):
        frame_periodicity(np.zeros((8, 8)))


def test_detection_check_speaks_on_sparse_fields_and_not_on_lattices():
    from affinevae.data.patches import SPARSE_NOISE_FLOOR, detection_check

    field = _spot_field()
    noisy = detection_check(field, 10, min_distance=2, sigma=0.6)  # a window of 10: spots among noise maxima
    assert noisy.found > 5 * noisy.floor_only and noisy.below_floor > 0.5 * noisy.found
    assert 30 <= noisy.floor_only <= 45  # the floor alone keeps about the 40 spots
    assert "noise peaks" in noisy.advice and f"--noise-floor {SPARSE_NOISE_FLOOR:g}" in noisy.advice
    # 40 faint spots beside 8 bright ones (not bright enough to stretch the frame): 0.3 of the range drops the faint
    rng = np.random.default_rng(1)
    pos = rng.uniform(12, 372, (48, 2))
    mixed = render_gaussians((384, 384), pos, np.r_[np.full(40, 6.0), np.full(8, 30.0)], 2.0) + rng.normal(0, 1, (384, 384))
    faint = detection_check(mixed.astype(np.float32), 16, min_distance=4, sigma=1.0)
    assert faint.found <= 10 and faint.faint >= 35 and "faint objects left out" in faint.advice
    lattice, _ = synthetic_micrograph(384, spacing=4.0, noise=0.3, lattice="square", seed=1)
    check = detection_check(lattice, 8, min_distance=2, sigma=0.5)
    assert check.lattice and check.advice is None and check.below_floor > 0.5 * check.found  # the floor would drop atoms
    assert detection_check(field[:200, :200], 10, min_distance=2, sigma=0.6) is None  # too small to tell a lattice
    stars = field + render_gaussians(field.shape, np.array([[50.0, 50.0], [300.0, 120.0]]), np.full(2, 5000.0), 3.0)
    assert detection_check(stars, 10) is None  # asinh-stretched: the floor is already the default there


def test_patches_notes_a_sparse_field_that_the_default_threshold_misreads(tmp_path, capsys):
    np.save(tmp_path / "spots.npy", _spot_field())
    out = tmp_path / "p.npz"
    assert main(["patches", str(tmp_path / "spots.npy"), "--window", "10", "--out", str(out)]) == 0
    note = [line for line in capsys.readouterr().out.splitlines() if "note:" in line]
    assert len(note) == 1 and "--threshold 0 --noise-floor 5" in note[0] and "noise peaks" in note[0]
    assert main(["patches", str(tmp_path / "spots.npy"), "--window", "10", "--threshold", "0", "--noise-floor", "5",
                 "--out", str(out), "--force"]) == 0
    assert "note:" not in capsys.readouterr().out and 30 <= len(np.load(out)["centers"]) <= 45
    img, _ = synthetic_micrograph(320, spacing=6.0, noise=0.3, lattice="hexagonal", seed=2)
    np.save(tmp_path / "lattice.npy", img)
    assert main(["patches", str(tmp_path / "lattice.npy"), "--window", "12", "--out", str(tmp_path / "l.npz")]) == 0
    assert "note:" not in capsys.readouterr().out


# ============================================================================ lobed objects: cut around their centre
def lobed_field(fold, n=12, size=256, radius=9.0, width=3.2, noise=0.1, seed=0):
    """(size, size) float32 frame of ``n`` particles of ``fold`` Gaussian lobes ``radius`` px from their centre,
    turned at random, placed at random at least 44 px apart, with Gaussian noise; their (n, 2) centres."""
    rng = np.random.default_rng(seed)
    centres = []
    while len(centres) < n:
        p = rng.uniform(30, size - 30, 2)
        if all(np.hypot(*(p - q)) > 44 for q in centres):
            centres.append(p)
    centres = np.array(centres)
    turns = rng.uniform(-np.pi, np.pi, n)[:, None] + 2 * np.pi * np.arange(fold)[None] / fold  # (n, fold)
    lobes = (centres[:, None, :] + radius * np.stack([np.sin(turns), np.cos(turns)], -1)).reshape(-1, 2)
    img = render_gaussians((size, size), lobes, np.ones(len(lobes)), width) + rng.normal(0, noise, (size, size))
    return img.astype(np.float32), centres


@pytest.mark.parametrize("fold", [2, 3])
def test_lobed_particles_are_cut_once_around_their_centre(tmp_path, fold):
    """Detection finds each lobe of a dimer or trimer (one peak per lobe, 9 px off the particle's centre): an
    audit's particles came out as 2-3 patches each, none centred. 'auto' re-centres them on their brightness
    and merges the peaks of one particle, says so in one warning, and the tiles find the same."""
    img, centres = lobed_field(fold)
    np.save(tmp_path / "f.npy", img)
    peaks = cut_patches(tmp_path / "f.npy", 40, centre="peak")
    assert len(peaks) >= fold * len(centres) - 2 and not peaks.recentred
    assert np.median(cKDTree(centres).query(peaks.positions)[0]) > 8
    with pytest.warns(UserWarning, match=r"brightness centres lie a median .*\(centre=\"peak\" cuts"):
        ps = cut_patches(tmp_path / "f.npy", 40)
    assert ps.recentred and len(ps) == len(centres) and ps.n_merged == len(peaks) - len(ps)
    dist, which = cKDTree(centres).query(ps.positions)
    assert sorted(which) == list(range(len(centres))) and dist.max() < 2.0
    np.testing.assert_array_equal(ps.centers, np.rint(ps.positions).astype(np.int64))
    assert ps.patches.shape == (len(centres), 40, 40)
    mass = mapping.mass_offsets(ps.patches)
    assert np.median(np.hypot(*mass.T)) < 1.0  # the patches are centred on their objects
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tiled = cut_patches(tmp_path / "f.npy", 40, tile=100)
    np.testing.assert_array_equal(tiled.centers, ps.centers)
    np.testing.assert_allclose(tiled.positions, ps.positions, atol=1e-9)
    back = PatchSet.load(ps.save(tmp_path / "p.npz"))
    assert back.recentred and not PatchSet.load(peaks.save(tmp_path / "q.npz")).recentred


def test_lattices_and_dense_or_round_objects_keep_their_peaks(tmp_path):
    """'auto' leaves alone what is centred where it was found: a lattice cut with windows of three spacings, whose
    neighbours pull a brightness centre (periodic frame), atoms placed at random 6 px apart (not periodic, but each
    patch's brightness is centred), and round blobs."""
    from affinevae.data.patches import centring_check

    lattice, _ = synthetic_micrograph(size=(256, 256), spacing=6.0, lattice="rectangular", noise=0.15, seed=1)
    rng = np.random.default_rng(2)
    atoms = []
    for p in rng.uniform(4, 252, (6000, 2)):
        if len(atoms) < 1200 and all(np.hypot(*(p - q)) > 6 for q in atoms[-400:]):
            atoms.append(p)
    dense = render_gaussians((256, 256), np.array(atoms), np.ones(len(atoms)), 1.2) + rng.normal(0, 0.1, (256, 256))
    blobs, _ = lobed_field(1, radius=0.0)
    for name, img, w in (("lattice", lattice, 24), ("dense", dense, 12), ("blobs", blobs, 40)):
        np.save(tmp_path / f"{name}.npy", np.asarray(img, np.float32))
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no centring said
            warnings.filterwarnings("ignore", message=".*min-max scaling")
            ps = cut_patches(tmp_path / f"{name}.npy", w)
            check = centring_check(tmp_path / f"{name}.npy", w)
        assert not ps.recentred and ps.n_merged is None and not check.recentre, (name, check)
        np.testing.assert_array_equal(ps.centers, cut_patches(tmp_path / f"{name}.npy", w, centre="peak").centers)


def test_patches_centre_on_the_command_line(tmp_path, capsys):
    """`patches` prints what 'auto' chose and how many peaks it merged; --centre peak keeps the peaks; --centre mass
    moves rough --coords picks onto their particles; --centre mass on a grid and a bad mode are one line, exit 2."""
    img, centres = lobed_field(3, seed=3)
    np.save(tmp_path / "f.npy", img)
    out = tmp_path / "p.npz"
    assert main(["patches", str(tmp_path / "f.npy"), "--window", "40", "--out", str(out), "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "centring: the objects' brightness centres lie a median" in said and "--centre peak" in said
    assert "merged into it" in said and said.strip().splitlines()[-1].startswith(f"{len(centres)} objects found")
    assert main(["patches", str(tmp_path / "f.npy"), "--window", "40", "--out", str(out), "--force",
                 "--centre", "peak", "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "centring" not in said and len(PatchSet.load(out)) >= 3 * len(centres) - 2
    rough = np.rint(centres + np.random.default_rng(0).uniform(-6, 6, centres.shape))
    np.savetxt(tmp_path / "picks.csv", rough, delimiter=",", fmt="%d")
    assert main(["patches", str(tmp_path / "f.npy"), "--window", "40", "--out", str(out), "--force",
                 "--coords", str(tmp_path / "picks.csv"), "--centre", "mass", "--no-progress"]) == 0
    capsys.readouterr()
    moved = PatchSet.load(out)
    assert moved.recentred and len(moved) == len(centres)
    assert cKDTree(centres).query(moved.positions)[0].max() < 2.0 < cKDTree(centres).query(rough)[0].max()
    assert main(["patches", str(tmp_path / "f.npy"), "--window", "40", "--out", str(out), "--force",
                 "--stride", "20", "--centre", "mass"]) == 2
    assert "grid windows (--stride) stay" in one_line_error(capsys)
    assert main(["patches", str(tmp_path / "f.npy"), "--window", "40", "--out", str(out), "--centre", "middle"]) == 2
    assert "invalid choice: 'middle'" in capsys.readouterr().err
    for options in ({}, {"stride": 20}):  # a grid's mode is checked too (it was let through)
        with pytest.raises(AffineVAEError, match="centre must be one of auto, peak, mass"):
            cut_patches(tmp_path / "f.npy", 40, centre="middle", **options)


def test_lobed_particles_at_the_border_are_centred_once(tmp_path):
    """A trimer whose upper lobe lies a few pixels from the frame's top (edge 'pad'): the pixels past the border
    weigh nothing in its brightness centre (zeros there read as background and held the lobe where it was found,
    or split the particle in two); it is one object at its centre, like the trimers inside the frame."""
    rng = np.random.default_rng(0)
    for row in (12, 14, 16, 18):
        centres = np.array([[row, 128.0], [128, 60], [128, 190], [200, 128]])
        up = -np.pi / 2 + 2 * np.pi * np.arange(3) / 3  # one lobe straight up, 9 px above the centre
        lobes = (centres[:, None] + 9.0 * np.stack([np.sin(up), np.cos(up)], -1)[None]).reshape(-1, 2)
        img = render_gaussians((256, 256), lobes, np.ones(len(lobes)), 3.2) + rng.normal(0, 0.1, (256, 256))
        np.save(tmp_path / "f.npy", img.astype(np.float32))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for tile in (None, 100):
                ps = cut_patches(tmp_path / "f.npy", 40, centre="mass", edge="pad", tile=tile)
                dist, which = cKDTree(centres).query(ps.positions)
                assert len(ps) == 4 and sorted(which) == [0, 1, 2, 3] and dist.max() < 1.5, (row, tile, ps.positions)


def test_dense_atoms_placed_at_random_keep_their_peaks(tmp_path):
    """Atoms placed at random about 10 px apart (amorphous, not periodic) cut with windows of three and four
    spacings: their brightness centres lie 6-8 px off, between the atoms, and an audit saw 'auto' move and merge
    them (window 30: 550 atoms became 311 patches, 88 % off every atom); re-centred they would lie 0.4 windows
    apart (CentringCheck.isolation), so they keep their peaks."""
    from affinevae.data.patches import CENTRING_ISOLATION, centring_check

    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 256, (700, 2))
    keep = np.ones(len(pts), bool)
    for a, b in sorted(cKDTree(pts).query_pairs(8.0)):
        if keep[a] and keep[b]:
            keep[b] = False
    img = render_gaussians((256, 256), pts[keep], np.ones(keep.sum()), 1.8) + rng.normal(0, 0.05, (256, 256))
    np.save(tmp_path / "a.npy", img.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for w in (30, 40):
            check = centring_check(tmp_path / "a.npy", w)
            assert check.scattered and check.shift > 4 and check.isolation < CENTRING_ISOLATION, check
            assert not check.recentre and not cut_patches(tmp_path / "a.npy", w).recentred


def test_coordinates_merged_by_centring_are_not_said_to_lie_at_an_edge(tmp_path, capsys):
    """Two rough picks of each particle, all far from the edges, --centre mass: the picks of one particle merge, and
    the edge line (which counted the merged ones as dropped at an edge) is not printed."""
    img, centres = lobed_field(3, seed=4)
    np.save(tmp_path / "f.npy", img)
    rng = np.random.default_rng(1)
    picks = np.rint(np.concatenate([centres + rng.uniform(-5, 5, centres.shape) for _ in range(2)]))
    np.savetxt(tmp_path / "picks.csv", picks, delimiter=",", fmt="%d")
    assert main(["patches", str(tmp_path / "f.npy"), "--window", "40", "--coords", str(tmp_path / "picks.csv"),
                 "--centre", "mass", "--out", str(tmp_path / "p.npz"), "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert f"{len(centres)} of the coordinates lay within --min-distance 10" in said and "edge" not in said
    assert len(PatchSet.load(tmp_path / "p.npz")) == len(centres)
