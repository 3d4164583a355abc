"""Patches whose window holds a masked (NaN) pixel: left out under ``drop_masked`` / ``patches --drop-masked``."""
from __future__ import annotations

import numpy as np
import pytest

from affinevae.cli import main
from affinevae.data.micrograph import synthetic_micrograph
from affinevae.data.patches import cut_patches, extract_patches, touches_mask
from affinevae.data.stacks import open_stack
from affinevae.errors import AffineVAEError


def _masked_lattice(seed: int = 0) -> np.ndarray:
    """(2, 192, 192) float32 lattice frames: frame 0 with an empty left border of 40 columns and a
    4 x 3 hole, frame 1 with no masked pixel."""
    frames = np.stack([synthetic_micrograph(size=(192, 192), spacing=8.0, seed=seed + k)[0] for k in range(2)])
    frames = frames.astype(np.float32)
    frames[0, :, :40] = np.nan
    frames[0, 100:104, 150:153] = np.inf
    return frames


def test_touches_mask_is_whether_the_cut_patch_holds_a_masked_pixel():
    rng = np.random.default_rng(0)
    mask = rng.random((3, 40, 50)) < 0.004
    stack = np.where(mask, np.nan, 1.0)
    centers, frames = rng.integers(0, [40, 50], (600, 2)), rng.integers(0, 3, 600)
    for w in (4, 5, 8):
        patches, keep = extract_patches(stack, centers, w, frames, edge="pad")  # padding is 0, never NaN
        truth = np.isnan(patches).reshape(len(patches), -1).any(axis=1)
        got = touches_mask(mask, centers, w, frames)
        assert truth.any() and not truth.all()
        np.testing.assert_array_equal(got, truth)
    # frame_offset as extract_patches reads it; a single (H, W) mask
    np.testing.assert_array_equal(touches_mask(mask[1:], centers[frames >= 1], 5, frames[frames >= 1], frame_offset=1),
                                  touches_mask(mask, centers[frames >= 1], 5, frames[frames >= 1]))
    np.testing.assert_array_equal(touches_mask(mask[0], centers, 5), touches_mask(mask, centers, 5, np.zeros(600, int)))


def test_drop_masked_leaves_out_exactly_the_windows_that_hold_masked_pixels():
    frames = _masked_lattice()
    with pytest.raises(AffineVAEError, match="NaN or infinite"):
        cut_patches(frames, 16)
    src = open_stack(frames)
    src.use_fill_nan()
    with pytest.warns(UserWarning):
        filled = cut_patches(src, 16)
    src.use_fill_nan(False)
    with pytest.warns(UserWarning):
        dropped = cut_patches(src, 16, drop_masked=True)
    assert not src.fill_nan  # the caller's source reads as it did
    assert filled.n_masked is None
    bad = touches_mask(~np.isfinite(frames), filled.centers, 16, filled.frames)
    assert dropped.n_masked == int(bad.sum()) > 0 and len(dropped) == len(filled) - dropped.n_masked
    np.testing.assert_array_equal(dropped.centers, filled.centers[~bad])
    np.testing.assert_array_equal(dropped.patches, filled.patches[~bad])
    assert np.isfinite(dropped.patches).all()
    # every kept patch of frame 0 lies right of the border, frame 1 loses nothing
    assert (dropped.centers[dropped.frames == 0, 1] - 8 >= 40).all()
    assert (dropped.frames == 1).sum() == (filled.frames == 1).sum()
    # tiles give the same patches
    with pytest.warns(UserWarning):
        tiled = cut_patches(frames, 16, drop_masked=True, tile=64)
    np.testing.assert_array_equal(tiled.centers, dropped.centers)
    np.testing.assert_array_equal(tiled.patches, dropped.patches)
    assert tiled.n_masked == dropped.n_masked
    # a grid too, and integer frames (nothing can be masked) cut as without
    with pytest.warns(UserWarning):
        grid = cut_patches(frames, 16, stride=16, drop_masked=True)
    assert grid.n_masked == 12 * 3 + 1 and len(grid) == 2 * 144 - grid.n_masked
    ints = (np.nan_to_num(frames[1:], nan=0.0) * 60000).astype(np.uint16)
    plain, kept = cut_patches(ints, 16), cut_patches(ints, 16, drop_masked=True)
    assert kept.n_masked == 0
    np.testing.assert_array_equal(plain.patches, kept.patches)


def test_every_window_masked_is_one_line():
    frames = np.full((1, 64, 64), np.nan, np.float32)
    frames[0, 20:44, 20:44] = np.random.default_rng(0).random((24, 24))
    with pytest.warns(UserWarning), pytest.raises(AffineVAEError, match=r"every patch was left out: \d+ of the "
                                                                        r"objects' windows hold masked \(NaN\) pixels"):
        cut_patches(frames, 32, stride=8, drop_masked=True)


def test_patches_drop_masked_cli(tmp_path, capsys):
    np.save(tmp_path / "m.npy", _masked_lattice())
    assert main(["patches", str(tmp_path / "m.npy"), "--window", "16", "--out", str(tmp_path / "a.npz")]) == 2
    assert "--fill-nan" in capsys.readouterr().err
    assert main(["patches", str(tmp_path / "m.npy"), "--window", "16", "--drop-masked",
                 "--out", str(tmp_path / "b.npz")]) == 0
    out = capsys.readouterr().out
    n_masked = int(out.split(" whose window holds masked (NaN) pixels left out")[0].rsplit("(", 1)[1])
    saved = np.load(tmp_path / "b.npz")
    assert n_masked > 0 and np.isfinite(saved["patches"]).all()
    assert main(["patches", str(tmp_path / "m.npy"), "--window", "16", "--fill-nan",
                 "--out", str(tmp_path / "c.npz")]) == 0
    assert len(np.load(tmp_path / "c.npz")["patches"]) == len(saved["patches"]) + n_masked
    assert "left out" not in capsys.readouterr().out
    # the patch set records that the frames were filled, and map draws them alike without --fill-nan
    from affinevae.data.patches import PatchSet

    assert PatchSet.load(tmp_path / "b.npz").fill_nan and "fill_nan" in saved.files
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "b.npz"), "--epochs", "1", "--latent-dim", "2",
                 "--out", str(tmp_path / "run")]) == 0
    assert main(["map", str(tmp_path / "run"), "--image", str(tmp_path / "m.npy"), "--patches", str(tmp_path / "b.npz"),
                 "--out", str(tmp_path / "maps")]) == 0
    assert (tmp_path / "maps" / "maps.npz").is_file()
    np.save(tmp_path / "clean.npy", np.nan_to_num(_masked_lattice(), nan=0.0, posinf=0.0))
    assert main(["patches", str(tmp_path / "clean.npy"), "--window", "16", "--drop-masked",
                 "--out", str(tmp_path / "d.npz")]) == 0
    assert not PatchSet.load(tmp_path / "d.npz").fill_nan and "fill_nan" not in np.load(tmp_path / "d.npz").files


def test_a_grid_with_masked_windows_left_out_is_mapped_with_holes(tmp_path, capsys):
    """Grid windows left out for masked pixels leave holes in the grid maps (NaN), not an error; grid_cells
    places the kept windows on the whole grid, and centres on no such grid are one line."""
    from affinevae.data.patches import grid_centers
    from affinevae.mapping import grid_cells

    full, shape = grid_centers((96, 128), 16, 8)
    cells, stride = grid_cells(full, shape, 16, (96, 128))
    assert stride == 8 and np.array_equal(cells, np.arange(len(full)))
    kept = np.r_[3:20, 40:len(full)]
    assert np.array_equal(grid_cells(full[kept], shape, 16, (96, 128))[0], kept)
    assert grid_cells(full[[5]], shape, 16, (96, 128))[0].tolist() == [5]  # one window: the step is found
    with pytest.raises(AffineVAEError, match="lie on no"):
        grid_cells(full[kept] + 1, shape, 16, (96, 128))
    frames = _masked_lattice()
    np.save(tmp_path / "m.npy", frames)
    assert main(["patches", str(tmp_path / "m.npy"), "--window", "16", "--stride", "16", "--drop-masked",
                 "--out", str(tmp_path / "g.npz")]) == 0
    assert main(["train", "--model", "rvae", "--data", str(tmp_path / "g.npz"), "--epochs", "1", "--latent-dim", "2",
                 "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["map", str(tmp_path / "run"), "--image", str(tmp_path / "m.npy"), "--patches", str(tmp_path / "g.npz"),
                 "--clusters", "2", "--out", str(tmp_path / "maps")]) == 0
    for name in ("grid_latents.png", "grid_angle.png", "grid_clusters.png", "maps.npz"):
        assert (tmp_path / "maps" / name).is_file(), name
    with np.load(tmp_path / "maps" / "maps.npz") as f:
        assert len(f["z_mean"]) == 2 * 144 - (12 * 3 + 1) and tuple(f["grid_shape"]) == (12, 12)


def test_stream_encode_says_the_windows_were_masked(tmp_path):
    """Every window masked: iter_encode / stream_encode say so (the encodings count n_masked), as cut_patches does."""
    import affinevae as av
    from affinevae.encoding import stream_encode

    torch_model = av.build_model("vae", image_shape=(1, 16, 16), latent_dim=2, hidden=(8,))
    frame = synthetic_micrograph(size=(96, 96), spacing=8.0, seed=0)[0].astype(np.float32)
    frame[:, ::10] = np.nan  # every 16-pixel window holds a masked column
    with pytest.warns(UserWarning), pytest.raises(AffineVAEError, match="hold masked \\(NaN\\) pixels"):
        stream_encode(torch_model, frame, 16, drop_masked=True)
    frame[:, ::10] = 0.0
    frame[:, :20] = np.nan
    with pytest.warns(UserWarning):
        enc = stream_encode(torch_model, frame, 16, drop_masked=True)
    assert enc.n_masked > 0 and (enc.centers[:, 1] - 8 >= 20).all()
