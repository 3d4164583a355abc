"""Objects moved to the image centre (data.centring, ImageSet.centred, ``train --centre``): turns are about the
image centre, so a stack whose objects sit off it read as upright and trained no angles (an audit's particles 5 px
off in 40 px: concentration 0.07; moved back in whole pixels: 0.99)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import affinevae as av
from affinevae.cli import main
from affinevae.data.centring import centre_images, mass_offsets, mean_offset, mean_shift, shift_images
from affinevae.data.imageset import ImageSet
from affinevae.errors import AffineVAEError


def blobs(n, down, right, size=32, seed=0, jitter=0.0):
    """(n, size, size) float32 two-lobed objects turned over the full circle about a point ``down``, ``right``
    pixels from the image centre (plus a random offset of sd ``jitter`` px each), in faint noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size]
    ang = rng.uniform(-np.pi, np.pi, n)[:, None, None]
    off = rng.normal(0, jitter, (n, 2)) if jitter else np.zeros((n, 2))
    r = rows - (size - 1) / 2 - down - off[:, 0, None, None]
    c = cols - (size - 1) / 2 - right - off[:, 1, None, None]
    u, v = np.cos(ang) * c + np.sin(ang) * r, -np.sin(ang) * c + np.cos(ang) * r
    return (np.exp(-((u - 4) ** 2 + v ** 2) / 8) + 0.6 * np.exp(-((u + 4) ** 2 + v ** 2) / 4)
            + rng.normal(0, 0.05, (n, size, size))).astype(np.float32)


def test_shift_images_moves_whole_pixels_wrapping_round():
    """Whole pixels keep the pixels' values (a bilinear move by a fraction averaged the particles' noise: angles
    0.99 -> 0.70); what leaves one side comes back on the other (the background the objects moved away from)."""
    x = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 1, 5, 6)
    moved = shift_images(x, -2, 1)  # 2 up, 1 right
    assert moved.shape == x.shape and moved.dtype == x.dtype
    assert np.array_equal(moved[..., :3, 1:], x[..., 2:, :5])  # the pixels themselves, not interpolated
    assert np.array_equal(moved[..., 3:, 1:], x[..., :2, :5]) and np.array_equal(moved[..., :3, 0], x[..., 2:, 5])
    assert shift_images(x, 0, 0) is x
    with pytest.raises(AffineVAEError, match=r"^a shift of \(5, 0\) px does not fit images of 5 x 6 pixels$"):
        shift_images(x, 5, 0)


def test_centred_moves_an_off_centre_stack_so_its_orientations_read_as_they_are():
    """The audit's failure: off-centre objects over the full circle read as upright. Moved by the mean's offset
    (whole pixels, recorded), they read as turned over the full circle."""
    from affinevae.pose.sync import off_centre, orientation_spread

    data = ImageSet(blobs(200, 4.0, -3.0), source="off.npy")
    assert off_centre(data.images) is not None
    assert mean_shift(data.images) == (-4, 3)
    before = orientation_spread(data.images)
    centred = data.centred("mean")
    assert centred.meta["centre"] == [-4, 3] and "centre" not in data.meta  # a copy, its move recorded
    assert np.array_equal(centred.images, shift_images(data.images, -4, 3))
    assert off_centre(centred.images) is None and max(map(abs, mean_offset(centred.images))) < 0.6
    after = orientation_spread(centred.images)
    assert not before.full_circle and after.full_circle, (before.sentence(), after.sentence())
    assert np.array_equal(data.centred([-4, 3]).images, centred.images)  # a recorded move made again


def test_mass_centring_moves_each_object_onto_its_brightness_centre():
    x = blobs(40, 0.0, 0.0, jitter=3.0, seed=1)[:, None]
    spread = np.abs(mass_offsets(x)).mean()
    moved = centre_images(x, "mass")
    assert moved.shape == x.shape and moved.dtype == np.float32
    assert spread > 1.5 and np.abs(mass_offsets(moved)).mean() < 0.5 * spread
    # whole pixels (a review: the bilinear move averaged the noise, its measured sigma 4x too small, and made
    # thresholded images grey again): each image holds the same values, moved
    assert all(np.array_equal(np.sort(a.ravel()), np.sort(b.ravel())) for a, b in zip(moved, x))
    binary = (x > 0.5).astype(np.float32)
    assert set(np.unique(centre_images(binary, "mass"))) <= {0.0, 1.0}


def test_a_nan_pixel_does_not_hide_the_offset():
    x = blobs(100, 4.0, -3.0)
    x[0, 5, 5] = np.nan
    assert mean_shift(x) == (-4, 3)


@pytest.mark.parametrize("mode, match", [
    ("middle", r"^s: centre must be one of mean, mass or a \(down, right\) shift in whole pixels, got 'middle'$"),
    ((1.5, 0), r"^s: a centring shift must be two whole pixels \(down, right\), got \(1\.5, 0\)$"),
    ((1, 2, 3), r"^s: a centring shift must be two whole pixels"),
])
def test_centre_images_refuses_what_is_not_a_move(mode, match):
    with pytest.raises(AffineVAEError, match=match):
        centre_images(np.zeros((2, 1, 8, 8), np.float32), mode, "s")


def test_centre_images_refuses_signals_and_small_images_for_mass():
    with pytest.raises(AffineVAEError, match=r"^s: --centre applies to images, not to 1-D signals$"):
        centre_images(np.zeros((2, 1, 1, 9), np.float32), "mean", "s")
    with pytest.raises(AffineVAEError, match=r"^s: --centre mass needs images of at least 7 x 7 pixels, got 5 x 5$"):
        centre_images(np.zeros((2, 1, 5, 5), np.float32), "mass", "s")


def test_train_centres_an_off_centre_stack_by_default_and_the_run_reads_its_data_alike(tmp_path, capsys):
    np.save(tmp_path / "off.npy", blobs(60, 4.0, -3.0, size=24))
    base = ["train", "--model", "rvae", "--data", str(tmp_path / "off.npy"), "--latent-dim", "2", "--hidden", "8",
            "--set", "rotation_mode=gaussian", "--epochs", "1", "--no-progress"]
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        assert main(base + ["--out", str(tmp_path / "r")]) == 0
    said = capsys.readouterr()
    assert ("affinevae: centring: the objects' mean sat " in said.out
            and "every image moved 4 px up, 3 px right (pixels wrapped round)" in said.out
            and "(--centre none keeps them as they are)" in said.out)
    assert not [w for w in warned if "off the image centre" in str(w.message)]  # moved: no warning left
    run = av.Run(tmp_path / "r")
    assert run.meta["centre"] == [-4, 3]
    assert json.loads((tmp_path / "r" / "train.json").read_text())["centre"] == [-4, 3]
    own = run.data(n=None)
    assert np.array_equal(own.images, shift_images(av.data.load_images(str(tmp_path / "off.npy")).images, -4, 3))
    np.save(tmp_path / "other.npy", blobs(9, 4.0, -3.0, size=24, seed=3))
    other = run.data(source=str(tmp_path / "other.npy"))  # other data: the run's move, not a new measurement
    assert other.meta["centre"] == [-4, 3]
    assert main(["encode", str(tmp_path / "r"), "--data", str(tmp_path / "other.npy"), "--out", str(tmp_path / "z.npz")]) == 0
    assert np.load(tmp_path / "z.npz")["z_mean"].shape == (9, 2)
    capsys.readouterr()
    # a resume makes the recorded move; another --centre is one line
    assert main(base[:-3] + ["--epochs", "2", "--no-progress", "--out", str(tmp_path / "r"), "--resume"]) == 0
    assert av.training.read_run(tmp_path / "r")["epochs_done"] == 2
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "r"), "--resume", "--epochs", "3", "--centre", "mass"]) == 2
    assert (f"--centre mass: {tmp_path / 'r'} was trained with its images moved -4, 3 px (down, right); resume it "
            "the same way" in capsys.readouterr().err)
    # --centre none: as they are, and the warning says what to do
    with pytest.warns(UserWarning, match=r"off the image centre .*move them to the centre first \(train --centre mean"):
        assert main(base + ["--out", str(tmp_path / "n"), "--centre", "none"]) == 0
    assert av.Run(tmp_path / "n").meta.get("centre") is None
    # a family that infers no angle: nothing moved
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "off.npy"), "--latent-dim", "2", "--hidden", "8",
                 "--epochs", "1", "--no-progress", "--out", str(tmp_path / "v")]) == 0
    assert "centring" not in capsys.readouterr().out and av.Run(tmp_path / "v").meta.get("centre") is None
    # a run moved by nothing ([0, 0]) resumes with --centre none
    np.save(tmp_path / "mid.npy", blobs(60, 0.0, 0.0, size=24))
    mid = ["train", "--model", "rvae", "--data", str(tmp_path / "mid.npy"), "--latent-dim", "2", "--hidden", "8",
           "--set", "rotation_mode=gaussian", "--no-progress", "--out", str(tmp_path / "z0")]
    assert main(mid + ["--epochs", "1", "--centre", "mean"]) == 0 and av.Run(tmp_path / "z0").meta["centre"] == [0, 0]
    assert main(mid + ["--epochs", "2", "--centre", "none", "--resume"]) == 0
    capsys.readouterr()
    # a patch set is cut around its objects: an explicit move is one line
    from affinevae.data.patches import PatchSet

    PatchSet(blobs(30, 4.0, -3.0, size=24), np.full((30, 2), 50, np.int64), np.zeros(30, np.int64), 24,
             (100, 100)).save(tmp_path / "ps.npz")
    assert main(["train", "--model", "rvae", "--data", str(tmp_path / "ps.npz"), "--centre", "mean", "--epochs", "1",
                 "--no-progress", "--out", str(tmp_path / "p")]) == 2
    assert "--centre mean: " in capsys.readouterr().err
    # --centre mass: each image on its own centre
    assert main(base + ["--out", str(tmp_path / "m"), "--centre", "mass"]) == 0
    assert "centring (--centre mass): each image moved onto its object's brightness centre" in capsys.readouterr().out
    assert av.Run(tmp_path / "m").meta["centre"] == "mass"
