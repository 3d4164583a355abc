"""Uneven backgrounds: the box estimate, flattened frames (whole and in tiles), the 'auto' rule, the CLI."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from scipy.spatial import cKDTree

from affinevae.cli import main
from affinevae.data.background import (BACKGROUND_VARIATION, MAX_SCATTER, SMOOTH_RATIO, Background, check_box,
                                       frame_background, sample_step, surface_terms)
from affinevae.data.micrograph import render_gaussians, synthetic_micrograph
from affinevae.data.patches import PatchSet, background_check, checked_frames, cut_patches, resolve_background
from affinevae.data.stacks import open_stack
from affinevae.errors import AffineVAEError

SIZE = 384


def spots(seed=1, n=40, size=SIZE):
    """(size, size) unit-noise field with n Gaussian spots 2-3 px wide, peaks 4-10; their (n, 2) positions."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(24, size - 24, (n, 2))
    img = render_gaussians((size, size), pos, rng.uniform(4, 10, n), 2.5) + rng.standard_normal((size, size))
    return img.astype(np.float32), pos


def ramp(shape, amplitude, kind="linear"):
    """A smooth background of ``amplitude`` over the frame: a left-to-right ramp, or a vignette (bright centre)."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    if kind == "linear":
        g = xx / (w - 1)
    else:
        g = 1 - ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / ((h / 2) ** 2 + (w / 2) ** 2)
    return amplitude * g


def precision_recall(found, truth, radius=3.0):
    d, _ = cKDTree(truth).query(found)
    d2, _ = cKDTree(found).query(truth)
    return float((d <= radius).mean()), float((d2 <= radius).mean())


@pytest.mark.parametrize("kind", ["linear", "vignette"])
def test_the_box_estimate_recovers_a_smooth_background_under_objects(kind):
    img, _ = spots()
    true = ramp(img.shape, 3.0, kind)
    bg = frame_background(lambda r, c: (img + true)[r, c], img.shape, 64)
    est = bg.levels_at(np.arange(SIZE, dtype=float), np.arange(SIZE, dtype=float))[0]
    err = est - true
    rms = float(np.sqrt(np.mean((err - err.mean()) ** 2)))
    assert rms < 0.12, rms  # in noise sigma, with the spots clipped out of their boxes
    # the flattening's field is the same surface less its lowest (or median) level; the surface explains the boxes
    field = bg.field()[0]
    assert field.shape == img.shape and field.dtype == np.float32
    assert np.allclose(field, est - bg.low[0], atol=1e-4) and field.min() > -1e-3
    assert np.allclose(bg.field(to="median")[0], est - bg.typical[0], atol=1e-4)
    with pytest.raises(AffineVAEError, match="'low' or 'median'"):
        bg.field(to="mean")
    assert bg.low[0] <= bg.typical[0] <= bg.low[0] + bg.variation
    assert bg.variation == pytest.approx(3.0, abs=0.3) and bg.scatter < 0.1
    photutils = pytest.importorskip("photutils.background")
    from astropy.stats import SigmaClip

    ref = photutils.Background2D(img + true, 64, filter_size=3, sigma_clip=SigmaClip(3.0),
                                 bkg_estimator=photutils.MedianBackground()).background
    ref_err = ref - true
    # as close to the truth as photutils' Background2D with the same boxes, or closer
    assert rms <= float(np.sqrt(np.mean((ref_err - ref_err.mean()) ** 2))) + 0.02


def test_a_box_full_of_an_object_is_left_out_of_the_surface():
    rng = np.random.default_rng(0)
    img = rng.standard_normal((SIZE, SIZE)).astype(np.float32)
    img[128:192, 128:192] += 20.0  # one box covered by a bright object
    bg = frame_background(lambda r, c: img[r, c], img.shape, 64)
    assert bg.variation < 0.3  # not a background bump of 20 sigma
    assert not bg.used[0, 2, 2] and bg.used.sum() == 35


def test_structure_that_no_smooth_surface_explains_is_left_alone():
    """A gradient of 1 noise sigma under a checkerboard of 3 sigma in 64-px squares: the surface varies by more
    than 3 smoothed sigma, but the boxes scatter about it by nearly as much, so 'auto' does not flatten, and says
    how to flatten anyway."""
    img, _ = spots()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    board = img + ramp(img.shape, 1.0) + 3.0 * ((yy // 64 + xx // 64) % 2)
    check = background_check(board.astype(np.float32), 16)
    assert check.variation > BACKGROUND_VARIATION and check.variation < SMOOTH_RATIO * check.scatter
    assert not check.uneven and "left as it is; --background 64 flattens it anyway" in check.sentence()
    assert check.scatter >= MAX_SCATTER  # the surface does not follow the squares


def test_sampling_and_boxes_and_bad_boxes():
    assert sample_step(64) == 2 and sample_step(176) == 4 and sample_step(20) == 1
    assert check_box(64, (100, 200)) == 64
    for bad in (3, 2.5, True, "8"):
        with pytest.raises(AffineVAEError, match="whole number of pixels >= 4"):
            check_box(bad, (100, 100))
    with pytest.raises(AffineVAEError, match="larger than the frames"):
        check_box(300, (100, 200))
    # one row of boxes: a curve along the other side only
    assert surface_terms(1, 10) == ((0, 0), (0, 1), (0, 2)) and surface_terms(2, 2) == ((0, 0), (0, 1), (1, 0), (1, 1))
    assert len(surface_terms(5, 5)) == 6
    img = ramp((40, 400), 2.0).astype(np.float32)
    bg = frame_background(lambda r, c: img[r, c], img.shape, 40)
    assert isinstance(bg, Background) and bg.levels.shape[1] == 1
    assert np.allclose(bg.field()[0], img - img.min(), atol=0.05)


def test_flattened_frames_read_the_same_whole_and_in_tiles_and_per_channel():
    img, _ = spots()
    frames = np.stack([img + ramp(img.shape, 3.0), img + ramp(img.shape, 5.0, "vignette")])
    src = open_stack(frames)
    src.use_background(64)
    whole = src.read(0, 2)
    assert whole.min() >= 0.0 and whole.max() <= 1.0
    for f in range(2):
        tiles = np.concatenate([np.concatenate([src.read_region(f, slice(r, r + 128), slice(c, c + 128))
                                                for c in range(0, SIZE, 128)], axis=1)
                                for r in range(0, SIZE, 128)], axis=0)
        assert np.allclose(tiles, whole[f], atol=1e-6)
    # the ramp is gone: the background's median is the same on both sides of each frame
    for f in range(2):
        left, right = np.median(whole[f][:, :64]), np.median(whole[f][:, -64:])
        assert abs(left - right) < 0.01
    src.use_background(None)
    assert not np.allclose(src.read(0, 1), whole[:1])
    # channels are flattened each with its own background
    rgb = np.stack([img + ramp(img.shape, 3.0), img + ramp(img.shape, 6.0, "vignette")])[None]  # (1, 2, H, W)
    csrc = open_stack(rgb)
    csrc.use_background(64)
    out = csrc.read(0, 1)[0]
    for ch in range(2):
        assert abs(np.median(out[ch][:, :64]) - np.median(out[ch][:, -64:])) < 0.01


def test_auto_flattens_an_uneven_sparse_field_and_leaves_a_flat_one_alone(tmp_path):
    img, pos = spots()
    uneven = img + ramp(img.shape, 3.0)
    with pytest.warns(UserWarning, match="flattened"):
        ps = cut_patches(uneven, 16)
    assert ps.background_box == 64
    p, r = precision_recall(ps.positions, pos)
    assert p >= 0.95 and r >= 0.95, (p, r)
    off = cut_patches(uneven, 16, background="off")
    assert off.background_box is None and len(off) > 2 * len(pos)  # the ramp's noise peaks
    check = background_check(uneven, 16)
    assert check.uneven and check.variation > BACKGROUND_VARIATION and check.box == 64
    # a flat field: measured, not flattened, and cut exactly as without the rule
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        flat = cut_patches(np.clip(img / 12 + 0.2, 0, 1), 16)
    assert flat.background_box is None
    assert not background_check(np.clip(img / 12 + 0.2, 0, 1), 16).uneven
    same = cut_patches(np.clip(img / 12 + 0.2, 0, 1), 16, background="off")
    assert np.array_equal(flat.patches, same.patches)
    # the box travels with the patch set; a tiled frame gives the same patches as the whole one
    path = ps.save(tmp_path / "p.npz")
    back = PatchSet.load(path)
    assert back.background_box == 64 and np.array_equal(back.patches, ps.patches)
    with pytest.warns(UserWarning, match="flattened"):
        tiled = cut_patches(uneven, 16, tile=128)
    assert np.array_equal(tiled.centers, ps.centers) and np.allclose(tiled.patches, ps.patches, atol=1e-6)
    # a caller's own source reads as before once cut
    src = open_stack(uneven)
    with pytest.warns(UserWarning):
        cut_patches(src, 16)
    assert src.background_box is None
    with pytest.raises(AffineVAEError, match="'auto', 'off' or a box side"):
        cut_patches(uneven, 16, background="yes")
    assert resolve_background(open_stack(uneven), 16, 48) == (48, None)
    assert background_check(uneven[:100, :100], 16) is None  # under three boxes a side


def test_a_lattice_with_no_gradient_is_left_alone_and_one_with_a_ramp_keeps_its_atoms():
    img, truth = synthetic_micrograph(256, spacing=8, noise=0.1, lattice="square", substitution_frac=0.0)
    assert resolve_background(open_stack(img), 16)[0] is None
    tilted = (img + ramp(img.shape, 0.6)).astype(np.float32)
    box, check = resolve_background(open_stack(tilted), 16)
    assert box == 64 and check.uneven
    with pytest.warns(UserWarning, match="flattened"):
        ps = cut_patches(tilted, 16, edge="pad")
    inside = (truth.positions > 12).all(1) & (truth.positions < 244).all(1)
    found = ps.positions[(ps.positions > 12).all(1) & (ps.positions < 244).all(1)]
    p, r = precision_recall(found, truth.positions[inside], radius=3.0)
    assert p >= 0.97 and r >= 0.97, (p, r)


def test_a_corrupt_background_box_in_a_patch_set_is_refused(tmp_path):
    img, _ = spots()
    ps = cut_patches(img + ramp(img.shape, 3.0), 16, background=64)
    arrays = ps.arrays()
    arrays["background_box"] = np.float64(2.5)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(AffineVAEError, match="background_box must be one whole number"):
        PatchSet.load(bad)


def test_cli_patches_says_when_it_flattens_and_refuses_bad_boxes(tmp_path, capsys):
    img, pos = spots()
    np.save(tmp_path / "ramp.npy", img + ramp(img.shape, 3.0))
    assert main(["patches", str(tmp_path / "ramp.npy"), "--window", "16", "--out", str(tmp_path / "p.npz")]) == 0
    out = capsys.readouterr().out
    line = [s for s in out.splitlines() if s.startswith("affinevae: background:")]
    assert len(line) == 1 and "64-pixel box" in line[0] and "--background off" in line[0]
    ps = PatchSet.load(tmp_path / "p.npz")
    assert ps.background_box == 64 and precision_recall(ps.positions, pos)[0] >= 0.95
    assert main(["patches", str(tmp_path / "ramp.npy"), "--window", "16", "--out", str(tmp_path / "q.npz"),
                 "--background", "off"]) == 0
    assert "affinevae: background:" not in capsys.readouterr().out
    assert PatchSet.load(tmp_path / "q.npz").background_box is None
    assert main(["patches", str(tmp_path / "ramp.npy"), "--window", "16", "--out", str(tmp_path / "r.npz"),
                 "--background", "96"]) == 0
    assert PatchSet.load(tmp_path / "r.npz").background_box == 96
    capsys.readouterr()
    for bad, words in (("x", "--background must be auto, off or a box side"), ("3", "at least 4 pixels"),
                       ("5000", "larger than the frames")):
        assert main(["patches", str(tmp_path / "ramp.npy"), "--window", "16", "--out", str(tmp_path / "s.npz"),
                     "--background", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("affinevae: error:") and "\n" not in err and words in err, err
    assert not (tmp_path / "s.npz").exists()


def test_a_stretched_sky_is_flattened_before_its_stretch():
    """Spots beside saturated stars (asinh-stretched when read) on a sky ramp: the background comes off the stored
    values before the stretch, so the noise is the same on both sides and the noise floor finds the spots alone."""
    img, pos = spots(seed=3)
    sky = img + ramp(img.shape, 3.0)
    for r, c in ((30, 30), (30, 350), (350, 30), (350, 350)):
        sky[r - 1:r + 2, c - 1:c + 2] = 5000.0
    src = open_stack(sky.astype(np.float32))
    assert src.pixel_scaling is not None and src.pixel_scaling.kind == "asinh"
    src.use_background(64)
    flat = src.read(0, 1)[0]
    left, right = flat[60:320, 40:120], flat[60:320, 260:340]

    def mad(a):
        return float(np.median(np.abs(a - np.median(a))))
    assert abs(np.median(left) - np.median(right)) < 0.1 * mad(left)
    assert abs(mad(left) - mad(right)) < 0.1 * mad(left)
    with pytest.warns(UserWarning, match="flattened"):
        ps = cut_patches(sky.astype(np.float32), 16)
    stars = np.array([[30, 30], [30, 350], [350, 30], [350, 350]])
    found = ps.positions[cKDTree(stars).query(ps.positions)[0] > 6]
    p, r = precision_recall(found, pos)
    assert p >= 0.95 and r >= 0.95, (p, r)


def test_auto_looks_at_five_evenly_spaced_frames():
    """A stack whose first frame is flat and whose last is on a ramp is flattened (the check of its last frame
    decides, and says which); a stack of flat frames is not; of nine frames, the checked ones are 0, 2, 4, 6, 8."""
    img, pos = spots(seed=5)
    stack = np.stack([img, img, img + ramp(img.shape, 3.0)]).astype(np.float32)
    box, check = resolve_background(open_stack(stack), 16)
    assert box == 64 and check.region == "frame 2" and check.uneven
    with pytest.warns(UserWarning, match="frame 2"):
        ps = cut_patches(stack, 16)
    last = ps.positions[ps.frames == 2]
    p, r = precision_recall(last, pos)
    assert p >= 0.95 and r >= 0.95, (p, r)
    flat = np.stack([img, img, img]).astype(np.float32)
    box, check = resolve_background(open_stack(flat), 16)
    assert box is None and not check.uneven
    assert background_check(stack, 16, frame=1).region == "frame 1"
    # five evenly spaced frames: one at a quarter of nine is found, one between the checked ones is not
    assert checked_frames(9) == [0, 2, 4, 6, 8] and checked_frames(2) == [0, 1] and checked_frames(1) == [0]
    small = img[:256, :256]
    for uneven, found in ((2, True), (3, False)):
        nine = np.stack([small + (ramp(small.shape, 3.0) if k == uneven else 0) for k in range(9)]).astype(np.float32)
        box, check = resolve_background(open_stack(nine), 16)
        assert (box is not None) == found and (check.region == f"frame {uneven}") == found


def test_flattening_keeps_bright_objects_unsaturated():
    """The stack's scaling is taken from the flattened values: bright spots on the dark side of a ramp, raised to
    the background's median level, do not pass the scaling's maximum and clip at 1 (they did when the range was
    the unflattened one: 45 pixels at 1 against 1)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512]
    pos = np.array([[60 + 75 * k, 40] for k in range(6)], dtype=float)
    img = rng.standard_normal((512, 512)) + 30.0 * xx / 512 + render_gaussians((512, 512), pos, np.full(6, 40.0), 2.0)
    src = open_stack(img.astype(np.float32))
    raw = src.read(0, 1)[0]
    src.use_background(64)
    flat = src.read(0, 1)[0]
    assert int((raw >= 0.999).sum()) <= 1 and int((flat >= 0.999).sum()) <= 1  # no flat tops either way
    peaks = flat[pos[:, 0].astype(int), 40]
    assert float(peaks.mean()) > 0.8 and abs(float(np.median(flat[:, :64]) - np.median(flat[:, -64:]))) < 0.01


def test_nan_holes_filled_or_whole_are_left_out_of_the_background():
    """With fill_nan: a frame of NaN only is read as its fill (no error), and a ramp half masked by NaN is still
    measured as a smooth ramp (the filled pixels are left out of the boxes) and flattened."""
    img, pos = spots(seed=7)
    ramped = (img + ramp(img.shape, 4.0)).astype(np.float32)
    stack = np.stack([ramped, np.full(img.shape, np.nan, np.float32), ramped])
    src = open_stack(stack)
    src.use_fill_nan()
    src.use_background(64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        frames = src.read(0, 3)
    assert np.isfinite(frames).all() and np.ptp(frames[1]) == 0.0
    half = ramped.copy()
    half[:, :140] = np.nan
    hsrc = open_stack(half)
    hsrc.use_fill_nan()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check = background_check(hsrc, 16)
    assert check.uneven and check.scatter < 1.0, check


def test_map_draws_the_frame_flattened_as_the_patches_were_cut(tmp_path, monkeypatch):
    import affinevae.mapping as mapping
    from affinevae.models import VAE

    img, _ = spots()
    np.save(tmp_path / "ramp.npy", (img + ramp(img.shape, 3.0)).astype(np.float32))
    assert main(["patches", str(tmp_path / "ramp.npy"), "--window", "16", "--out", str(tmp_path / "p.npz")]) == 0
    VAE(image_shape=(1, 16, 16), latent_dim=2, encoder="mlp", decoder="mlp", hidden=(16,)).eval().save(tmp_path / "run")
    drawn = {}
    real = mapping.write_maps

    @functools.wraps(real)  # (map reads write_maps' defaults from its signature)
    def spy(enc, out_dir, image=None, **kw):
        drawn["image"] = image
        return real(enc, out_dir, image=image, **kw)
    monkeypatch.setattr(mapping, "write_maps", spy)
    assert main(["map", str(tmp_path / "run"), "--image", str(tmp_path / "ramp.npy"), "--patches",
                 str(tmp_path / "p.npz"), "--out", str(tmp_path / "maps")]) == 0
    frame = np.asarray(drawn["image"])
    assert abs(float(np.median(frame[:, :64]) - np.median(frame[:, -64:]))) < 0.01  # the ramp is gone


def test_the_scaling_warning_is_said_once_when_flattening(tmp_path):
    """The check reads the frame unflattened and its float scaling warns; flattened, the scaling is taken again
    and warns again: only the second (flattened) warning reaches the user, and an unflattened frame keeps its one."""
    img, _ = spots()
    np.save(tmp_path / "tilt.npy", (img + ramp(img.shape, 3.0)).astype(np.float32))
    np.save(tmp_path / "flat.npy", img)
    for name, flattened in (("tilt", True), ("flat", False)):
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            assert main(["patches", str(tmp_path / f"{name}.npy"), "--window", "16", "--out",
                         str(tmp_path / f"{name}.npz")]) == 0
        lines = [str(w.message) for w in said if "values span" in str(w.message)]
        assert len(lines) == 1 and ("(flattened)" in lines[0]) == flattened, lines
