"""Tests for affinevae.data.files: every loader kind and every bad input."""

from __future__ import annotations

import re
import sys
import warnings

import numpy as np
import pytest

import affinevae as av
from affinevae.cli import main
from affinevae.data import load_dataset
from affinevae.data.files import load_images, load_quickdraw
from affinevae.errors import AffineVAEError

N, H, W = 5, 8, 8


def u8(*shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def check(data, shape, labels=None):
    assert data.images.shape == shape
    assert data.images.dtype == np.float32
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0
    if labels is None:
        assert data.labels is None
    else:
        assert data.labels.dtype == np.int64
        np.testing.assert_array_equal(data.labels, labels)


def raises(match_file, fn, *args, **kw):
    """Call fn and return the AffineVAEError message; it must be one line naming the file."""
    with pytest.raises(AffineVAEError) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert str(match_file) in msg, msg
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- .npy

def test_npy_uint8(tmp_path):
    arr = u8(N, H, W)
    p = tmp_path / "imgs.npy"
    np.save(p, arr)
    data = load_images(str(p))
    check(data, (N, 1, H, W))
    np.testing.assert_allclose(data.images[:, 0], arr / 255.0, atol=1e-6)
    assert data.source == str(p)


def test_npy_float_outside_range_scaled_or_standardised(tmp_path):
    p = tmp_path / "f.npy"
    np.save(p, np.linspace(-3, 7, N * H * W).reshape(N, H, W))
    with pytest.warns(UserWarning, match="min-max"):
        data = load_images(str(p))
    assert data.images.min() == 0.0 and data.images.max() == pytest.approx(1.0)
    std = load_images(str(p), standardise=True).images
    assert abs(std.mean()) < 1e-5 and std.std() == pytest.approx(1.0, abs=1e-4)


def test_npy_shapes(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, u8(N, H, W, 3))  # channels-last
    data = load_images(str(p))
    check(data, (N, 3, H, W))
    np.testing.assert_allclose(data.images[2, 1], np.load(p)[2, :, :, 1] / 255.0, atol=1e-6)
    np.save(p, u8(N, 3, H, W))  # channels-first stays
    check(load_images(str(p)), (N, 3, H, W))
    np.save(p, u8(N, H, W, 1))
    check(load_images(str(p)), (N, 1, H, W))
    np.save(p, u8(H, W))  # one image
    check(load_images(str(p)), (1, 1, H, W))


def test_quickdraw_single_npy_reshaped(tmp_path):
    p = tmp_path / "full_numpy_bitmap_cat.npy"
    arr = u8(4, 784)
    np.save(p, arr)
    data = load_images(str(p))
    check(data, (4, 1, 28, 28))
    np.testing.assert_allclose(data.images[1, 0], arr[1].reshape(28, 28) / 255.0, atol=1e-6)


# ---------------------------------------------------------------- .npz

def test_npz_default_key_labels_and_truth(tmp_path):
    p = tmp_path / "d.npz"
    lab = np.array([0, 1, 2, 1, 0])
    np.savez(p, images=u8(N, H, W), labels=lab, angle=np.linspace(0, 1, N), shift=np.zeros((N, 2)),
             scale=np.ones(N), other=np.zeros(3))
    data = load_images(str(p))
    check(data, (N, 1, H, W), lab)
    assert data.angle.shape == (N,) and data.shift.shape == (N, 2) and data.scale.shape == (N,)


def test_npz_patches_only_array_and_key(tmp_path):
    p = tmp_path / "p.npz"
    np.savez(p, patches=u8(N, H, W), x=u8(3, H, W))
    check(load_images(str(p)), (N, 1, H, W))
    check(load_images(str(p), key="x"), (3, 1, H, W))
    q = tmp_path / "one.npz"
    np.savez(q, stuff=u8(N, H, W), labels=np.arange(N))
    check(load_images(str(q)), (N, 1, H, W), np.arange(N))


def test_npz_errors(tmp_path):
    p = tmp_path / "two.npz"
    np.savez(p, a=u8(N, H, W), b=u8(N, H, W))
    msg = raises("two.npz", load_images, str(p))
    assert "a, b" in msg
    msg = raises("two.npz", load_images, str(p), key="zzz")
    assert "'zzz'" in msg and "a, b" in msg
    q = tmp_path / "badlab.npz"
    np.savez(q, images=u8(N, H, W), labels=np.arange(N - 1))
    assert "labels" in raises("badlab.npz", load_images, str(q))
    r = tmp_path / "obj.npz"
    np.savez(r, images=np.array([np.zeros(2), "x"], dtype=object))
    assert "pickled" in raises("obj.npz", load_images, str(r))
    g = tmp_path / "garbage.npz"
    g.write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    assert "cannot read" in raises("garbage.npz", load_images, str(g))


# ---------------------------------------------------------------- TIFF

def test_tiff_multipage_and_rgb(tmp_path):
    import tifffile

    p = tmp_path / "stack.tif"
    arr = u8(N, H, W)
    tifffile.imwrite(p, arr)
    data = load_images(str(p))
    check(data, (N, 1, H, W))
    np.testing.assert_allclose(data.images[:, 0], arr / 255.0, atol=1e-6)
    q = tmp_path / "rgb.tiff"
    rgb = u8(3, H, W, 3)
    tifffile.imwrite(q, rgb, photometric="rgb")
    data = load_images(str(q))
    check(data, (3, 3, H, W))
    np.testing.assert_allclose(data.images[1, 2], rgb[1, :, :, 2] / 255.0, atol=1e-6)
    one = tmp_path / "one_rgb.tif"
    tifffile.imwrite(one, rgb[0], photometric="rgb")
    check(load_images(str(one)), (1, 3, H, W))


def test_tiff_axes_make_frames_and_only_true_channels_channels(tmp_path):
    """ImageJ/OME hyperstacks, one-header ImageJ files and plain multi-page TIFFs: the planes along
    T/Z/Q (and a C axis tifffile writes for an unlabelled (T, Y, X) ImageJ array) are images, the
    same for the lazy stack reader and for load_images; RGB samples and a short C axis are channels."""
    import tifffile

    from affinevae.data.stacks import TIFF_MAX_CHANNELS, open_stack

    movie = u8(6, 16, 12, seed=1)
    two = u8(5, 2, 16, 12, seed=2)  # (T, C, Y, X)
    tz = u8(3, 2, 16, 12, seed=3)   # (T, Z, Y, X)
    cases = {  # name: (array, imwrite options, expected (N, C, H, W) pixels)
        "ij.tif": (movie, dict(imagej=True), movie[:, None]),  # tifffile labels it 'CYX' (6 channels)
        "ij_t.tif": (movie, dict(imagej=True, metadata={"axes": "TYX"}), movie[:, None]),
        "ij_one_header.tif": (movie, dict(imagej=True, truncate=True, metadata={"axes": "TYX"}), movie[:, None]),
        "ij_one_header_c.tif": (two, dict(imagej=True, truncate=True, metadata={"axes": "TCYX"}), two),
        "ij_tc.tif": (two, dict(imagej=True, metadata={"axes": "TCYX"}), two),
        "ij_tz.tif": (tz, dict(imagej=True, metadata={"axes": "TZYX"}), tz.reshape(6, 1, 16, 12)),
        "plain.tif": (movie, {}, movie[:, None]),
        "ome_c3.tif": (movie[:3], dict(ome=True, metadata={"axes": "CYX"}), movie[None, :3]),
        "single.tif": (movie[0], {}, movie[:1, None]),
    }
    for name, (arr, options, want) in cases.items():
        p = tmp_path / name
        tifffile.imwrite(p, arr, **options)
        with tifffile.TiffFile(p) as tf:
            axes = tf.series[0].axes
        assert name != "ij.tif" or axes == "CYX"  # the case: tifffile's own axes say channels
        assert name not in ("ij_one_header.tif", "ij_one_header_c.tif") or len(tf.pages) == 1
        data = load_images(str(p))
        check(data, want.shape)
        np.testing.assert_allclose(data.images, want / 255.0, atol=1e-6, err_msg=name)
        with open_stack(p) as src:
            assert src.n_frames == len(want) and src.channels == want.shape[1], name
            frames = src.read_raw(0, src.n_frames)
            np.testing.assert_array_equal(frames.reshape(want.shape), want, err_msg=name)
            lo, hi = min(1, len(want) - 1), min(3, len(want))  # a chunk from the middle
            np.testing.assert_array_equal(src.read_raw(lo, hi).reshape(hi - lo, *want.shape[1:]), want[lo:hi],
                                          err_msg=name)
    # a C axis longer than TIFF_MAX_CHANNELS counts images even when it is all there is
    assert TIFF_MAX_CHANNELS == 4 and load_images(str(tmp_path / "ij.tif")).images.shape[1] == 1


def test_train_reads_an_imagej_tiff_stack_as_images(tmp_path, capsys):
    import tifffile

    from affinevae.cli import main

    p = tmp_path / "movie.tif"
    tifffile.imwrite(p, u8(10, 16, 16, seed=4), imagej=True)  # (T, Y, X); tifffile's axes say 'CYX'
    assert main(["train", "--model", "vae", "--data", str(p), "--epochs", "1", "--latent-dim", "2", "--hidden", "16",
                 "--channels", "4,8", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert "trained vae on 9 images (" in capsys.readouterr().out  # 10 images, one held out; not one 10-channel image
    assert av.runs.Run.open(tmp_path / "run").model_config["image_shape"] == [1, 16, 16]


def test_tiff_pages_of_different_sizes(tmp_path):
    import tifffile

    p = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(p) as tw:
        tw.write(u8(H, W))
        tw.write(u8(H + 2, W))
    assert "mixed image sizes" in raises("mixed.tif", load_images, str(p))
    # pages of the same size in other pixel types were joined, the uint8 one divided by uint16's 65535
    q = tmp_path / "types.tif"
    with tifffile.TiffWriter(q) as tw:
        tw.write((u8(H, W).astype(np.uint16) * 200))
        tw.write(u8(H, W))
    assert "page series 1 holds uint8 pixels, the first uint16 (mixed pixel types" in raises("types.tif", load_images, str(q))
    assert "mixed pixel types" in raises("types.tif", load_images, str(q), n=1)  # the lazy first-N read alike


def test_tiff_truncated(tmp_path):
    import tifffile

    p = tmp_path / "full.tif"
    tifffile.imwrite(p, u8(N, 32, 32))
    t = tmp_path / "trunc.tif"
    t.write_bytes(p.read_bytes()[:100])
    assert "cannot read" in raises("trunc.tif", load_images, str(t))
    t.write_bytes(p.read_bytes()[:-3000])  # image data cut short
    assert "cannot read" in raises("trunc.tif", load_images, str(t))


# ---------------------------------------------------------------- HDF5

def test_hdf5(tmp_path):
    h5py = pytest.importorskip("h5py")
    p = tmp_path / "d.h5"
    with h5py.File(p, "w") as f:
        g = f.create_group("grp")
        g["data"] = u8(N, H, W)
        g["labels"] = np.array([1, 0, 1, 0, 1])
        f["other"] = np.zeros((3, H, W), np.float32)
    check(load_images(f"{p}:grp/data"), (N, 1, H, W), [1, 0, 1, 0, 1])
    check(load_images(f"{p}:/grp/data"), (N, 1, H, W), [1, 0, 1, 0, 1])
    check(load_images(str(p), key="other"), (3, 1, H, W))
    msg = raises("d.h5", load_images, str(p))  # two image datasets, none named
    assert "/grp/data" in msg and "/other" in msg
    assert "/nope" in raises("d.h5", load_images, f"{p}:nope")
    q = tmp_path / "only.hdf5"
    with h5py.File(q, "w") as f:
        f["x"] = u8(N, H, W, 3)
    check(load_images(str(q)), (N, 3, H, W))
    raises("missing.h5", load_images, str(tmp_path / "missing.h5") + ":x")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    assert "cannot read" in raises("bad.h5", load_images, str(bad))


def test_hdf5_without_h5py(tmp_path, monkeypatch):
    p = tmp_path / "d.h5"
    p.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "h5py", None)
    assert "pip install \"affinevae[hdf5]\"" in raises("d.h5", load_images, f"{p}:images")


# ---------------------------------------------------------------- folders of images

def _png(path, arr):
    from PIL import Image

    Image.fromarray(arr).save(path)


def test_folder_gray_rgb_rgba_sorted(tmp_path):
    from PIL import Image

    d = tmp_path / "gray"
    d.mkdir()
    arrs = [u8(H, W, seed=i) for i in range(N)]
    for i, a in enumerate(arrs):
        _png(d / f"img_{i}.png", a)
    (d / "notes.txt").write_text("ignored")
    data = load_images(str(d))
    check(data, (N, 1, H, W))
    np.testing.assert_allclose(data.images[3, 0], arrs[3] / 255.0, atol=1e-6)

    c = tmp_path / "rgb"
    c.mkdir()
    rgb = u8(H, W, 3)
    _png(c / "a.png", rgb)
    Image.fromarray(u8(H, W, 4)).save(c / "b.png")  # RGBA: alpha dropped
    Image.fromarray(u8(H, W, 3)).save(c / "c.jpg", quality=95)
    _png(c / "d.png", u8(H, W))  # grayscale among RGB: repeated
    data = load_images(str(c))
    check(data, (4, 3, H, W))
    np.testing.assert_allclose(data.images[0], rgb.transpose(2, 0, 1) / 255.0, atol=1e-6)
    np.testing.assert_allclose(data.images[3, 0], data.images[3, 2])

    t = tmp_path / "tifs"
    t.mkdir()
    import tifffile
    for i in range(3):
        tifffile.imwrite(t / f"{i}.tif", u8(H, W, seed=i))
    check(load_images(str(t)), (3, 1, H, W))


def test_folder_says_what_it_changes_and_in_which_order_it_reads(tmp_path, capsys):
    """An audit's folders: numbered names without leading zeros read img10 before img2 (labels then matched to
    other images, silently), transparency dropped and grayscale files repeated into RGB, all without a word;
    `info` read the first file only. Each is now a warning when read, and a clause of info's `files` line."""
    import warnings

    from PIL import Image

    from affinevae.cli import main

    d = tmp_path / "numbered"
    d.mkdir()
    for i in range(12):
        _png(d / f"img{i}.png", np.full((H, W), i * 20, np.uint8))
    with pytest.warns(UserWarning, match=r"12 files read in name order, which puts img11.png before img2.png"):
        data = load_images(str(d))
    assert np.round(np.asarray(data.images)[:, 0, 0, 0] * 255 / 20).astype(int).tolist() == [0, 1, 10, 11, *range(2, 10)]
    from affinevae.data.files import number_order_differs

    # names numbered otherwise, in order as they stand, are not said (a review's cases)
    for names in (["img_09", "img_0a", "img_0b", "img_10"], ["dose_0.25", "dose_0.5"], ["x-1", "x-2", "x0"],
                  ["a1\u00b22", "a1\u00b23"], ["2024-01-05", "2024-02-01"], ["a9b", "a10b"], ["b", "a"]):
        assert number_order_differs(names) is None, names
    assert number_order_differs(["f1_10.png", "f1_2.png"]) == ("f1_10.png", "f1_2.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a list the user wrote is read in the user's order: nothing to say
        load_images(f"{d / 'img11.png'},{d / 'img2.png'}")
    padded = tmp_path / "padded"
    padded.mkdir()
    for i in range(12):
        _png(padded / f"img{i:02d}.png", u8(H, W, seed=i))
    rgba = tmp_path / "rgba"
    rgba.mkdir()
    see_through = u8(H, W, 4)
    see_through[..., 3] = 0
    Image.fromarray(see_through).save(rgba / "a.png")
    opaque = u8(H, W, 4)
    opaque[..., 3] = 255
    Image.fromarray(opaque).save(rgba / "b.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # names padded with zeros, opaque alpha: nothing to say
        load_images(str(padded))
        load_images(str(rgba / "b.png"))
    with pytest.warns(UserWarning, match=r"1 of 2 images have transparency \(an alpha channel, e.g. a.png\), which is "
                                         "dropped"):
        assert tuple(load_images(str(rgba)).images.shape) == (2, 3, H, W)
    with pytest.warns(UserWarning, match="the image's transparency"):
        load_images(str(rgba / "a.png"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _png(mixed / "a.png", u8(H, W, 3))
    _png(mixed / "b.png", u8(H, W))
    with pytest.warns(UserWarning, match=r"1 grayscale image among 1 colour one \(e.g. b.png\) repeated into red"):
        load_images(str(mixed))
    capsys.readouterr()
    for folder, clause in ((d, "read in name order: img11.png before img2.png"), (rgba, "2 with an alpha channel"),
                           (mixed, "1 grayscale among 1 colour (train repeats them")):
        assert main(["info", str(folder)]) == 0
        assert clause in capsys.readouterr().out
    assert main(["info", str(padded)]) == 0
    assert "all 12 files 8 x 8 pixels\n" in capsys.readouterr().out
    # a palette image whose pixels use grays only (an unused red entry): one channel for train and for info
    palette = tmp_path / "palette"
    palette.mkdir()
    _png(palette / "a.png", u8(H, W, 3))
    grey = Image.fromarray(u8(H, W) // 64 * 64).convert("P")
    colours = grey.getpalette()
    colours[-3:] = [255, 0, 0]
    grey.putpalette(colours)
    grey.save(palette / "b.png")
    with pytest.warns(UserWarning, match="1 grayscale image among 1 colour one"):
        load_images(str(palette))
    assert main(["info", str(palette)]) == 0
    assert "1 grayscale among 1 colour" in capsys.readouterr().out


def test_single_png_and_glob_of_pngs(tmp_path):
    _png(tmp_path / "a.png", u8(H, W, 3))
    _png(tmp_path / "b.png", u8(H, W, 3))
    check(load_images(str(tmp_path / "a.png")), (1, 3, H, W))
    check(load_images(str(tmp_path / "*.png")), (2, 3, H, W))


def test_folder_errors(tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    _png(d / "a.png", u8(H, W))
    _png(d / "b.png", u8(H, W + 4))
    msg = raises("b.png", load_images, str(d))
    assert "8x12" in msg and "8x8" in msg and "a.png" in msg
    e = tmp_path / "empty_dir"
    e.mkdir()
    (e / "readme.txt").write_text("x")
    assert "no images" in raises("empty_dir", load_images, str(e))
    f = tmp_path / "fake"
    f.mkdir()
    (f / "text.png").write_text("I am not a PNG")
    assert "cannot read" in raises("text.png", load_images, str(f))
    assert "cannot read" in raises("text.png", load_images, str(f / "text.png"))
    _png(tmp_path / "full.png", u8(32, 32))
    (f / "text.png").unlink()
    (f / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:500])
    assert "cannot read" in raises("cut.png", load_images, str(f))


# ---------------------------------------------------------------- QuickDraw

def _quickdraw(tmp_path, names=("cat", "dog", "fish"), counts=(3, 4, 2)):
    d = tmp_path / "quickdraw"
    d.mkdir()
    paths = []
    for i, (name, n) in enumerate(zip(names, counts)):
        p = d / f"full_numpy_bitmap_{name}.npy"
        np.save(p, u8(n, 784, seed=i))
        paths.append(str(p))
    return d, paths


def test_quickdraw_multi_class(tmp_path):
    d, paths = _quickdraw(tmp_path)
    data = load_quickdraw([paths[1], paths[0], paths[2]])
    check(data, (9, 1, 28, 28), [0] * 4 + [1] * 3 + [2] * 2)
    assert data.class_names == ["dog", "cat", "fish"]
    data = load_quickdraw(paths, n_per_class=2)
    check(data, (6, 1, 28, 28), [0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(data.images[2, 0], np.load(paths[1])[0].reshape(28, 28) / 255.0, atol=1e-6)
    data = load_images(",".join(paths))
    assert data.class_names == ["cat", "dog", "fish"] and len(data) == 9
    data = load_images(str(d / "*.npy"))  # glob: sorted by name
    assert data.class_names == ["cat", "dog", "fish"]
    check(data, (9, 1, 28, 28), [0] * 3 + [1] * 4 + [2] * 2)


def test_quickdraw_errors(tmp_path):
    d, paths = _quickdraw(tmp_path)
    raises("nothere", load_images, str(d / "nothere*.npy"))
    raises("gone.npy", load_images, f"{paths[0]},{d / 'gone.npy'}")
    raises("missing.npy", load_quickdraw, [paths[0], str(d / "missing.npy")])
    np.save(d / "small.npy", u8(2, H, W))
    msg = raises("small.npy", load_quickdraw, [paths[0], str(d / "small.npy")])
    assert "28" in msg and "8x8" in msg
    with pytest.raises(AffineVAEError):
        load_quickdraw(paths, n_per_class=0)


# ---------------------------------------------------------------- labels files

@pytest.mark.parametrize("kind", ["npy", "txt", "csv"])
def test_labels_file_overrides(tmp_path, kind):
    p = tmp_path / "d.npz"
    np.savez(p, images=u8(N, H, W), labels=np.zeros(N, int))
    lab = np.array([3, 1, 4, 1, 5])
    lp = tmp_path / f"lab.{kind}"
    if kind == "npy":
        np.save(lp, lab)
    elif kind == "txt":
        lp.write_text("\n".join(map(str, lab)) + "\n")
    else:
        lp.write_text("label\n" + "\n".join(map(str, lab)) + "\n")
    check(load_images(str(p), labels=str(lp)), (N, 1, H, W), lab)


def test_labels_file_errors(tmp_path):
    p = tmp_path / "d.npy"
    np.save(p, u8(N, H, W))
    lp = tmp_path / "short.txt"
    lp.write_text("0\n1\n2\n")
    msg = raises("short.txt", load_images, str(p), labels=str(lp))
    assert "3 labels for 5 images" in msg
    raises("nolabels.txt", load_images, str(p), labels=str(tmp_path / "nolabels.txt"))
    bad = tmp_path / "bad.csv"
    bad.write_text("0\n1\nx\n2\n3\n")
    assert "line 3" in raises("bad.csv", load_images, str(p), labels=str(bad))
    for first in ("nan", "inf"):  # a number float() reads is a bad label on line 1, not a header dropped
        bad.write_text(first + "\n0\n1\n2\n3\n")
        assert f"line 1: '{first}' is not an integer label" in raises("bad.csv", load_images, str(p), labels=str(bad))
    for text in ("0\n1\n1e30\n2\n3\n", "0,1,99999999999999999999999,2,3\n"):  # past int64: a traceback, or
        bad.write_text(text)  # the label wrapped round to -2**63 in the message
        msg = raises("bad.csv", load_images, str(p), labels=str(bad))
        assert "is too large for a class label (at most 2,147,483,647" in msg and ("1e30" in msg) == ("1e30" in text)
    neg = tmp_path / "neg.npy"
    np.save(neg, np.array([0, 1, -2, 0, 1]))
    assert "-1 for unknown" in raises("neg.npy", load_images, str(p), labels=str(neg))
    np.save(neg, np.array([0, 1, -1, 0, 1]))  # -1: unknown (semi-supervised models)
    assert load_images(str(p), labels=str(neg)).labels.tolist() == [0, 1, -1, 0, 1]


def test_an_empty_line_between_labels_is_unknown_and_keeps_the_others_on_their_images(tmp_path):
    """An audit: a spreadsheet's CSV with empty cells for unknown labels lost its empty lines, so with -n the
    labels after the first gap landed on other images without a word (61.7 % right), and without -n the count
    refused '83 labels for 415 images' for a file of 415 rows. An empty line between labels is now -1; empty
    lines before the first label or after the last, and comment lines, are not labels."""
    p = tmp_path / "d.npy"
    np.save(p, u8(N, H, W))
    lp = tmp_path / "cells.csv"
    lp.write_text("\nlabel\n\n3\n\n1\n\n5\n\n\n")  # empty lines right after the header are not between labels
    assert load_images(str(p), labels=str(lp)).labels.tolist() == [3, -1, 1, -1, 5]
    lp.write_text("label\r\n\r\n3\r\n\r\n1\r\n\r\n5\r\n")  # CRLF alike
    assert load_images(str(p), labels=str(lp)).labels.tolist() == [3, -1, 1, -1, 5]
    lp.write_text("3\n1\n\n# two more\n\n5\n4\n2\f\n")  # with comments, empty lines are layout; a form feed space
    assert load_images(str(p), labels=str(lp)).labels.tolist() == [3, 1, 5, 4, 2]
    lp.write_text("3\n\n1\n\n5\n")  # no header: the fast reader's file
    assert load_images(str(p), labels=str(lp)).labels.tolist() == [3, -1, 1, -1, 5]
    lp.write_text("3\n\n1\n")  # with -n: the first three images, in place
    assert load_images(str(p), n=3, labels=str(lp)).labels.tolist() == [3, -1, 1]
    lp.write_text("3\n1 2\n\n1\n5\n")
    assert "line 2: expected one label per line" in raises("cells.csv", load_images, str(p), labels=str(lp))


def test_labels_given_by_name_are_numbered_in_sorted_order(tmp_path):
    """An audit: a biologist's labels file of class names ('wt', 'mutant') was refused ("'wt' is not an integer
    label"): now the names are numbered 0..K-1 in sorted order (label_names), -1 or an empty line is unknown,
    a header line that names no class is skipped, and a missing-value text (NA, ?) is one line."""
    from affinevae.data.files import read_labels

    p = tmp_path / "d.npy"
    np.save(p, u8(N, H, W))
    lp = tmp_path / "names.csv"
    lp.write_text("genotype\nwt\nmutant\n\nwt\n-1\n")
    data = load_images(str(p), labels=str(lp))
    assert data.labels.tolist() == [1, 0, -1, 1, -1] and data.meta["label_names"] == data.class_names == ["mutant", "wt"]
    # a review: R's write.csv quotes every field; a partly labelled file gives each class once, and its first
    # line is a label, not a header (it was dropped, shifting the labels by one with -n)
    lp.write_text('"genotype"\n"wt"\n"mutant"\n"-1"\n"wt"\n"mutant"\n')
    assert load_images(str(p), labels=str(lp)).labels.tolist() == [1, 0, -1, 1, 0]
    lp.write_text("ctrl\n-1\nwt\n-1\nmutant\n")
    assert load_images(str(p), n=4, labels=str(lp)).labels.tolist() == [0, -1, 2, -1]
    assert read_labels(str(lp), None, "d", with_names=True)[1] == ["ctrl", "mutant", "wt"]
    lp.write_text("genotype\nwt\nwt\nmutant\nmutant\nwt\n")  # without a count: a header no line repeats, said
    with pytest.warns(UserWarning, match="its first line 'genotype' is read as a header"):
        assert read_labels(str(lp), None, "d").tolist() == [1, 1, 0, 0, 1]
    lp.write_text("kras\nwt\nwt\nmutant\nmutant\n")  # five labels for five images: the count says no header
    assert load_images(str(p), labels=str(lp)).labels.tolist() == [0, 2, 2, 1, 1]
    lp.write_text("wt,mutant,wt,wt,mutant")  # one line of names, no header
    assert load_images(str(p), labels=str(lp)).labels.tolist() == [1, 0, 1, 1, 0]
    lp.write_text("wt\nNA\nmutant\nwt\nwt\n")
    assert "line 2: 'NA' reads as a missing value: write -1" in raises("names.csv", load_images, str(p), labels=str(lp))
    lp.write_text("0\n1\nx\n2\n3\n")  # numbers with a stray word: not names
    assert "line 3: 'x' is not an integer label" in raises("names.csv", load_images, str(p), labels=str(lp))
    np.save(tmp_path / "n.npy", np.arange(5))
    assert read_labels(str(tmp_path / "n.npy"), 5, "d", with_names=True)[1] is None


# ---------------------------------------------------------------- bad inputs

def test_missing_and_unknown(tmp_path):
    raises("nothing.npy", load_images, str(tmp_path / "nothing.npy"))
    p = tmp_path / "data.xyz"
    p.write_text("x")
    msg = raises("data.xyz", load_images, str(p))
    assert ".npy" in msg and ".tiff" in msg and ".h5" in msg


@pytest.mark.parametrize("shape", [(7,), (2, 2, 3, 8, 8)])
def test_wrong_rank(tmp_path, shape):
    p = tmp_path / "rank.npy"
    np.save(p, np.zeros(shape, np.float32))
    assert "rank" in raises("rank.npy", load_images, str(p))


def test_zero_images_and_nonfinite(tmp_path):
    p = tmp_path / "zero.npy"
    np.save(p, np.zeros((0, H, W), np.uint8))
    assert "zero images" in raises("zero.npy", load_images, str(p))
    q = tmp_path / "nan.npy"
    a = np.zeros((N, H, W), np.float32)
    a[1, 2, 3] = np.nan
    a[2, 2, 3] = np.inf
    np.save(q, a)
    assert "NaN" in raises("nan.npy", load_images, str(q))


def test_corrupt_and_pickled_npy(tmp_path):
    g = tmp_path / "garbage.npy"
    g.write_bytes(b"\x00\x01garbage bytes that are not an array")
    assert "cannot read" in raises("garbage.npy", load_images, str(g))
    t = tmp_path / "trunc.npy"
    np.save(t, u8(N, H, W))
    t.write_bytes(t.read_bytes()[:150])
    assert "cannot read" in raises("trunc.npy", load_images, str(t))
    o = tmp_path / "obj.npy"
    np.save(o, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    assert "pickled" in raises("obj.npy", load_images, str(o))


# ---------------------------------------------------------------- through load_dataset

def test_load_dataset_path(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, images=u8(N, H, W), labels=np.arange(N))
    data = load_dataset(str(p))
    check(data, (N, 1, H, W), np.arange(N))
    assert len(load_dataset(str(p), n=2)) == 2
    lp = tmp_path / "l.txt"
    lp.write_text("1 1 1 1 1")
    check(load_dataset(str(p), labels=str(lp)), (N, 1, H, W), [1] * N)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(str(p))


def test_binarized_sets_and_specs(tmp_path):
    d = av.data.load_mnist("test", n=50)
    b = d.binarized(0.5)
    assert set(np.unique(b.images)) <= {0.0, 1.0} and np.array_equal(b.labels, d.labels)
    assert np.array_equal(b.images, (d.images > 0.5).astype(np.float32)) and d.images.max() <= 1  # original untouched
    assert not np.array_equal(d.binarized(0.2).images, b.images)
    r = av.data.load_dataset("rotated-mnist", n=20, binarize=0.5)
    assert set(np.unique(r.images)) <= {0.0, 1.0} and r.angle is not None
    for bad in (0.0, 1.0, -1, "x", True):
        with pytest.raises(AffineVAEError, match="strictly between 0 and 1"):
            d.binarized(bad)
    np.save(tmp_path / "x.npy", d.images[:, 0])
    from affinevae.cli import main

    run = tmp_path / "run"
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "x.npy"), "--binarize", "--epochs", "1",
                 "--latent-dim", "2", "--hidden", "16", "--channels", "4,8", "--out", str(run), "--no-progress"]) == 0
    assert av.training.read_run(run)["binarize"] == 0.5


def test_split_must_be_train_or_test(capsys):
    for spec in ("mnist", "rotated-mnist", "synthetic-peaks"):
        with pytest.raises(AffineVAEError, match="split must be 'train' or 'test', got 'val'"):
            load_dataset(spec, split="val", n=5)
    from affinevae.cli import main

    assert main(["align", "run", "--data", "mnist", "--split", "val", "--out", "a.npz"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --split: invalid choice: 'val'" in err


@pytest.mark.parametrize("ext", ["npy", "npz", "tif", "png"])
def test_an_empty_file_is_said_to_be_empty(tmp_path, ext):
    """A 0-byte file is refused in one line saying so, by load_images and by open_stack (not a reader's
    complaint about its header)."""
    from affinevae.data.stacks import open_stack

    path = tmp_path / f"e.{ext}"
    path.write_bytes(b"")
    for read in (load_images, open_stack):
        with pytest.raises(AffineVAEError, match=rf"^{re.escape(str(path))}: empty file \(0 bytes\)$"):
            read(str(path))


def test_unsigned_images_that_use_few_bits_are_divided_by_their_bit_depth():
    """12-bit data in uint16 (a fluorescence camera's) were divided by 65535 and lay in [0, 0.0625]: an audit's
    jrVAE and ssrVAE then learnt no angle (concentration 0.12 / 0.10; 0.96 on the same pixels / 4095). They are
    now divided by 4095, said in a warning, in memory and streamed alike; the divisor is recorded ('bits') so
    that a run reads its other data with it (values beyond it clipped, said); 8-bit and full-range data as before."""
    import warnings

    from affinevae.data.imageset import PixelScaling, normalise_images, scale_images
    from affinevae.data.stacks import open_stack

    twelve = np.array([[[0, 1000], [4095, 17]]], dtype=np.uint16)
    with pytest.warns(UserWarning, match=r"uint16 values use 12 of 16 bits \(largest 4095\): divided by 4095 "
                                         r"\(12-bit data\), not 65535, so that they span \[0, 1\]"):
        np.testing.assert_allclose(normalise_images(twelve), twelve / 4095.0, rtol=1e-6)
    with pytest.warns(UserWarning, match="12 of 16 bits"), open_stack(twelve) as src:
        np.testing.assert_allclose(src.read(0, 1), twelve / 4095.0, rtol=1e-6)
        assert src.pixel_scaling == PixelScaling("bits", 0.0, 4095.0)
    with pytest.warns(UserWarning, match="12 of 16 bits"):
        _, used = scale_images(twelve, "twelve")
    assert used == PixelScaling("bits", 0.0, 4095.0) and str(used) == "x / 4095"
    brighter = np.array([[[0, 2000], [8190, 3]]], dtype=np.uint16)  # another file of the run, 13 bits
    with pytest.warns(UserWarning, match=r"1 of 4 pixel values \(25 %\) lie outside the training data's range \[0, 4095\]"):
        out, _ = scale_images(brighter, "brighter", scaling=used)
    np.testing.assert_allclose(out, np.minimum(brighter / 4095.0, 1.0), rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the run's divisor read quietly within its range; floats keep their rule
        np.testing.assert_allclose(scale_images(twelve, "t", scaling=used)[0], twelve / 4095.0, rtol=1e-6)
        np.testing.assert_allclose(scale_images(np.array([[[0.0, 0.5]]], np.float32), "f", scaling=used)[0],
                                   [[[0.0, 0.5]]])
        byte = np.array([[[0, 255]]], np.uint8)  # an 8-bit export of the run's data keeps 255 (a review)
        np.testing.assert_allclose(scale_images(byte, "u8", scaling=used)[0], [[[0.0, 1.0]]])
        with open_stack(byte) as src:
            src.use_scaling(used)
            np.testing.assert_allclose(src.read(0, 1), [[[0.0, 1.0]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # full-range 16-bit, all-zero and any 8-bit data: no warning
        full = np.array([[[0, 60000]]], np.uint16)
        np.testing.assert_allclose(normalise_images(full), [[[0, 60000 / 65535]]])
        assert scale_images(full, "full")[1] == PixelScaling("bits", 0.0, 65535.0)  # recorded: a run keeps 65535
        normalise_images(np.zeros((1, 2, 2), np.uint16))
        np.testing.assert_allclose(normalise_images(np.array([[[0, 3]]], np.uint8)), [[[0, 3 / 255]]])
        assert scale_images(np.array([[[0, 3]]], np.uint8), "u8")[1] is None


@pytest.mark.parametrize("dtype", ["float_out", "float_in", "uint8", "uint16", "int16", "bool", "nhwc"])
def test_n_reads_only_the_first_images_of_a_stack_with_the_whole_files_normalisation(tmp_path, dtype, monkeypatch):
    """``n`` keeps an .npy / .npz / .mrcs / HDF5 / TIFF stack's first images without holding the whole file: the
    memory check counts only those (a file over the limit loads with a small n), and the images
    equal the first n of the whole file's, bit for bit (the min-max range and the NaN check still
    cover every image). ``labels`` and the file's own per-image arrays still give one per image."""
    h5py = pytest.importorskip("h5py")
    mrcfile = pytest.importorskip("mrcfile")
    from affinevae.data import stacks
    from affinevae.limits import memory_limit_set

    monkeypatch.setattr(stacks, "SCAN_BYTES", 5 * 12 * 10 * 3 * 4)  # the range is read 5 images at a time
    rng = np.random.default_rng(1)
    shape = (60, 12, 10, 3) if dtype == "nhwc" else (60, 12, 10)
    arr = {"float_out": lambda: (rng.normal(size=shape) * 3).astype(np.float32),
           "float_in": lambda: rng.random(shape),
           "uint8": lambda: rng.integers(0, 256, shape).astype(np.uint8),
           "uint16": lambda: rng.integers(0, 60000, shape).astype(np.uint16),
           "int16": lambda: rng.integers(-300, 300, shape).astype(np.int16),
           "bool": lambda: rng.random(shape) > 0.5,
           "nhwc": lambda: rng.random(shape).astype(np.float32) * 2}[dtype]()
    arr[-1] = arr.max() if arr.dtype != bool else arr[-1]  # the range's extreme sits in the last image
    np.save(tmp_path / "s.npy", arr)
    np.save(tmp_path / "labels.npy", np.arange(60) % 7)
    paths = [str(tmp_path / "s.npy")]
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["images"] = arr
        f["angle"] = np.linspace(0.0, 1.0, 60)
    paths.append(f"{tmp_path / 's.h5'}:images")
    np.savez(tmp_path / "stored.npz", images=arr, angle=np.linspace(0.0, 1.0, 60))  # memory mapped in the archive
    np.savez_compressed(tmp_path / "deflated.npz", arr, angle=np.linspace(0.0, 1.0, 60))  # decompressed as a stream
    paths += [str(tmp_path / "stored.npz"), str(tmp_path / "deflated.npz")]
    if dtype not in ("bool", "nhwc"):  # a TIFF stack, read a few pages at a time
        import tifffile

        tifffile.imwrite(tmp_path / "s.tif", arr)
        paths.append(str(tmp_path / "s.tif"))
    if dtype in ("float_out", "int16"):  # MRC modes hold float32 and int16
        with mrcfile.new(tmp_path / "s.mrcs") as m:
            m.set_data(arr.astype(np.float32) if dtype == "float_out" else arr)
        paths.append(str(tmp_path / "s.mrcs"))
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the min-max scaling is announced either way
            whole = load_images(path, labels=str(tmp_path / "labels.npy"))
            with memory_limit_set(whole.images.nbytes):  # the whole file (x3) would not fit
                part = load_images(path, labels=str(tmp_path / "labels.npy"), n=7)
        assert part.images.shape == (7, *whole.images.shape[1:]), path
        assert np.array_equal(part.images, whole.images[:7]), path
        np.testing.assert_array_equal(part.labels, np.arange(7))
        if path.endswith((":images", ".npz")):
            np.testing.assert_array_equal(part.angle, whole.angle[:7])
        with memory_limit_set(whole.images.nbytes), pytest.raises(AffineVAEError, match="memory"):
            load_images(path)  # without n the same file is refused in one line
    with warnings.catch_warnings(), memory_limit_set(whole.images.nbytes):  # -n of the CLI takes the same path
        warnings.simplefilter("ignore")
        assert np.array_equal(load_dataset(paths[0], n=7).images, whole.images[:7])


def test_n_on_a_stack_still_refuses_bad_pixels_anywhere_and_bad_counts(tmp_path):
    """A NaN in an image past the first n is still refused (the normalisation reads every image);
    with n a labels file needs the first n labels at least, and no more than the file's images (as for the
    built-in sets; else one line); n < 1 is refused."""
    arr = np.random.default_rng(0).random((20, 8, 8)).astype(np.float32)
    arr[15, 2, 2] = np.nan
    np.save(tmp_path / "nan.npy", arr)
    with pytest.raises(AffineVAEError, match=r"nan.npy: 1 NaN or infinite pixel values \(first in image 15\)"):
        load_images(str(tmp_path / "nan.npy"), n=3)
    arr[15, 2, 2] = 0.5
    np.save(tmp_path / "ok.npy", arr)
    np.save(tmp_path / "lab.npy", np.arange(5, dtype=np.int64))
    for fill in (False, True):  # the lazy first-n read and the whole read (under fill_nan) alike
        got = load_images(str(tmp_path / "ok.npy"), labels=str(tmp_path / "lab.npy"), n=3, fill_nan=fill)
        np.testing.assert_array_equal(got.labels, [0, 1, 2])
        with pytest.raises(AffineVAEError, match=r"lab.npy: 5 labels for the first 8 of the 20 images in .*ok.npy "
                                                 r"\(give at least 8, at most 20\)"):
            load_images(str(tmp_path / "ok.npy"), labels=str(tmp_path / "lab.npy"), n=8, fill_nan=fill)
    with pytest.raises(AffineVAEError, match=r"lab.npy: 5 labels for 20 images in .*ok.npy"):
        load_images(str(tmp_path / "ok.npy"), labels=str(tmp_path / "lab.npy"))  # without n: one per image
    with pytest.raises(AffineVAEError, match="n must be an integer >= 1, got 0"):
        load_images(str(tmp_path / "ok.npy"), n=0)
    with pytest.warns(UserWarning, match=r"ok.npy: n=50 asks for more images than the 20 it holds; all 20 are used"):
        assert len(load_images(str(tmp_path / "ok.npy"), n=50)) == 20  # more than there are: all of them


def test_a_runs_pixel_scaling_gives_other_files_the_training_pixels(tmp_path):
    """Float files are min-max scaled per file; ``scaling=`` (a run's) scales another file as the
    training file was: a subset of the training particles gets the very pixels they had in training
    (without it, their own range gives other pixels). The scaling used is in meta; values outside
    the training range are clipped with a warning; the lazy -n path takes it too."""
    from affinevae.data.imageset import PixelScaling

    rng = np.random.default_rng(0)
    a = (rng.normal(size=(60, 10, 10)) * 2 + 0.3).astype(np.float32)
    a[5, 1, 1], a[6, 1, 1] = 25.0, -20.0  # the range's extremes lie outside the subset
    np.save(tmp_path / "all.npy", a)
    np.save(tmp_path / "sub.npy", a[20:40])
    with pytest.warns(UserWarning, match="min-max scaling"):
        whole = load_images(str(tmp_path / "all.npy"))
    scaling = whole.meta["pixel_scaling"]
    assert scaling == {"kind": "minmax", "offset": -20.0, "divisor": 45.0}
    assert str(PixelScaling.from_value(scaling)) == "(x + 20) / 45"
    with pytest.warns(UserWarning, match="min-max scaling"):
        own = load_images(str(tmp_path / "sub.npy"))
    assert not np.allclose(own.images, whole.images[20:40])  # its own range: other pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no min-max warning: the run's scaling is used
        sub = load_images(str(tmp_path / "sub.npy"), scaling=scaling)
        first = load_images(str(tmp_path / "all.npy"), n=30, scaling=PixelScaling.from_value(scaling))
    np.testing.assert_array_equal(sub.images, whole.images[20:40])
    np.testing.assert_array_equal(first.images, whole.images[:30])
    assert sub.meta["pixel_scaling"] == first.meta["pixel_scaling"] == scaling
    np.save(tmp_path / "bright.npy", a[:4] * 3)  # beyond the training range
    with pytest.warns(UserWarning, match=r"bright.npy: \d+ of 400 pixel values .* outside the training data's range "
                                         r"\[-20, 25\]; clipped to it"):
        bright = load_images(str(tmp_path / "bright.npy"), scaling=scaling)
    assert bright.images.min() >= 0.0 and bright.images.max() <= 1.0
    # the training data themselves, read again under an asinh stretch of their own: their minimum (many zero pixels)
    # lands a float32 hair below 0 and is not said to lie outside the range it defines
    shapes = np.zeros((40, 32, 32), np.float32)
    shapes[:, 4:28, 4:28] = np.random.default_rng(1).random((40, 24, 24)) ** 6 * 1.19  # 44 % zeros: median above 0
    np.save(tmp_path / "shapes.npy", shapes)
    with pytest.warns(UserWarning):
        trained = load_images(str(tmp_path / "shapes.npy"), stretch="asinh")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_images(str(tmp_path / "shapes.npy"), scaling=trained.meta["pixel_scaling"])
    np.testing.assert_allclose(again.images, trained.images, atol=1e-6)
    np.save(tmp_path / "u8.npy", np.full((3, 10, 10), 51, np.uint8))  # unsigned: their dtype's rule still
    u8 = load_images(str(tmp_path / "u8.npy"), scaling=scaling)
    assert np.allclose(u8.images, 0.2) and "pixel_scaling" not in u8.meta
    with pytest.raises(AffineVAEError, match="pixel_scaling must be 'minmax', 'standardise', 'asinh' or 'bits'"):
        PixelScaling.from_value({"kind": "minmax", "offset": 0.0, "divisor": 0.0}, "train.json")
    with pytest.raises(AffineVAEError, match="train.json: pixel_scaling must be"):
        PixelScaling.from_value({"kind": "minmax"}, "train.json")


def test_loading_a_float_stack_holds_about_two_copies_of_it(tmp_path):
    """The min-max scaling works in place on the one float32 copy: loading a float .npy peaks at
    about 2.25x the images' bytes (it was 4x: each arithmetic step made a new array)."""
    import tracemalloc

    np.save(tmp_path / "f.npy", np.random.default_rng(0).normal(size=(400, 32, 32)).astype(np.float32))
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = load_images(str(tmp_path / "f.npy"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * data.images.nbytes


@pytest.mark.parametrize("shape", [(10, 5, 8, 8), (10, 8, 8, 2), (10, 3, 8, 8), (3, 8, 8)])
@pytest.mark.parametrize("fmt", ["npy", "npz", "h5", "tif"])
def test_n_gives_what_the_whole_read_gives_for_layouts_the_frame_reader_refuses(tmp_path, shape, fmt):
    """Channel counts the lazy frame reader does not take (C > 4, channels-last 2) and a TCYX TIFF
    fell over with -n although the whole read takes them: -n now falls back to the whole read and
    cuts, and n >= N is all of them."""
    h5py = pytest.importorskip("h5py")
    import tifffile

    arr = np.random.default_rng(0).random(shape).astype(np.float32)
    path = str(tmp_path / f"s.{fmt}")
    if fmt == "npy":
        np.save(path, arr)
    elif fmt == "npz":
        np.savez_compressed(path, images=arr)
    elif fmt == "h5":
        with h5py.File(path, "w") as f:
            f["images"] = arr
    else:
        tifffile.imwrite(path, arr, metadata={"axes": "TCYX"[-arr.ndim:]} if arr.ndim == 4 else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = load_images(path)
        np.testing.assert_array_equal(load_images(path, n=2).images, whole.images[:2])
        np.testing.assert_array_equal(load_images(path, n=len(whole)).images, whole.images)


def test_an_npz_stack_is_read_lazily_and_its_damage_is_one_line(tmp_path):
    """open_stack reads an .npz's image array lazily: a stored member is memory mapped where it lies
    in the archive, a compressed one decompressed as a stream (forward, then again from the start),
    a Fortran-ordered compressed one read whole; frames and regions equal the array's. A stored
    member cut short, a member that is not the image array's, a pickled one and a patch set's
    scalars: one line each, or kept in meta."""
    from affinevae.data.stacks import NpzSource, open_stack

    rng = np.random.default_rng(0)
    arr = rng.random((30, 9, 11)).astype(np.float32)
    np.savez(tmp_path / "s.npz", images=arr)
    np.savez_compressed(tmp_path / "c.npz", other=arr)
    np.savez_compressed(tmp_path / "f.npz", images=np.asfortranarray(arr))
    from affinevae.data.stacks import _DeflatedMember

    for name, kind in [("s", np.memmap), ("c", _DeflatedMember), ("f", np.ndarray)]:
        with open_stack(str(tmp_path / f"{name}.npz")) as src:
            assert isinstance(src, NpzSource) and type(src.array) is kind
            np.testing.assert_array_equal(src.read_raw(20, 25), arr[20:25])
            np.testing.assert_array_equal(src.read_raw(2, 4), arr[2:4])  # before the last read: from the start
            np.testing.assert_array_equal(src.read_raw_region(7, slice(1, 8, 3), slice(2, 9)), arr[7, 1:8:3, 2:9])
            np.testing.assert_array_equal(src.read(0, 30), arr)
    with open_stack(str(tmp_path / "c.npz"), key="other") as src:
        assert src.key == "other" and src.n_frames == 30
    raw = (tmp_path / "s.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[:len(raw) // 2] + raw[-200:])  # the directory kept, the data cut
    with pytest.raises(AffineVAEError, match=r"cut.npz"):
        load_images(str(tmp_path / "cut.npz"), n=3)
    with pytest.raises(AffineVAEError, match=r"cut.npz"):
        open_stack(str(tmp_path / "cut.npz"))
    np.savez(tmp_path / "obj.npz", images=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(AffineVAEError, match="pickled object array, which is never loaded"):
        load_images(str(tmp_path / "obj.npz"), n=1)
    with pytest.raises(AffineVAEError, match="pickled object array"):
        open_stack(str(tmp_path / "obj.npz"))


def test_standardising_values_whose_moments_overflow_is_one_line():
    """float32 values near its limit: the standard deviation overflows; it was recorded as an
    infinite divisor that the run's train.json then refused."""
    from affinevae.data.imageset import normalise_images

    big = np.full((3, 4, 4), 3e38, np.float32) * np.array([1, -1, 1], np.float32)[:, None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow notes are not shown: the error says it
        with pytest.raises(AffineVAEError, match="values too large to standardise in float32"):
            normalise_images(big, standardise=True)


def _sky_with_stars(shape=(80, 16, 16), seed=0):
    """Sky-subtracted cut-outs: noise of sigma 10 around 0, faint objects of about 60, and a few
    saturated stars of 20 000 (as astronomers' float images are): min-max scaling would put 99 %
    of the values within 1 % of the range."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 10.0, shape).astype(np.float32)
    a[:, 6:10, 6:10] += 60.0
    a[::9, 2, 2] = 20000.0
    return a


def test_a_few_bright_pixels_get_an_asinh_stretch_said_and_kept_by_the_run(tmp_path, capsys):
    """Raw flux (a few stars at 20 000 over objects of 60) was min-max scaled: the objects lay in the
    lowest 0.3 % of [0, 1] and the models learnt nothing. 'auto' now stretches by asinh (said in the
    warning), the same in the lazy -n path bit for bit; 'linear' and 'asinh' force one; a run keeps
    the stretch (info says it) and scales other files alike, clipping brighter ones."""
    from affinevae.data.imageset import PixelScaling, choose_scaling

    a = _sky_with_stars()
    np.save(tmp_path / "sky.npy", a)
    with pytest.warns(UserWarning, match=r"sky.npy: values span \[-\d+\.?\d*, 20000\] and 99 % of them lie in the lowest "
                                         r"0\.\d+ % of that range .*; asinh stretch onto \[0, 1\]: \(asinh\(\(x "):
        data = load_images(str(tmp_path / "sky.npy"))
    sc = PixelScaling.from_value(data.meta["pixel_scaling"])
    assert sc.kind == "asinh" and abs(sc.offset) < 3 and 8 < sc.soft < 12  # the median and the noise's sigma
    x = data.images[:, 0]
    assert x.min() == 0.0 and x.max() == pytest.approx(1.0, abs=1e-6)
    assert x[:, 6:10, 6:10].mean() - x[:, 12:, 12:].mean() > 0.1  # the objects stand out (min-max: 0.003)
    np.testing.assert_allclose(x, (np.arcsinh((a - sc.offset) / sc.soft) - sc.floor) / sc.divisor, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(load_images(str(tmp_path / "sky.npy"), n=7).images, data.images[:7])
        linear = load_images(str(tmp_path / "sky.npy"), stretch="linear")
        assert linear.meta["pixel_scaling"]["kind"] == "minmax"
        asked = load_images(str(tmp_path / "sky.npy"), stretch="asinh")  # the same here, asked for
        np.testing.assert_array_equal(asked.images, data.images)
    np.save(tmp_path / "u16.npy", np.clip(a + 100, 0, 65535).astype(np.uint16))
    with pytest.warns(UserWarning, match="asinh asked for"):  # integers too, when asked
        u16 = load_images(str(tmp_path / "u16.npy"), stretch="asinh")
    assert u16.meta["pixel_scaling"]["kind"] == "asinh"
    normal = np.random.default_rng(1).normal(size=(20, 8, 8)) * 5  # no bright few: min-max, as before
    assert choose_scaling(float(normal.min()), float(normal.max()), normal)[0].kind == "minmax"
    with pytest.raises(AffineVAEError, match="stretch must be one of auto, linear, asinh, got 'log'"):
        load_images(str(tmp_path / "sky.npy"), stretch="log")
    with pytest.raises(AffineVAEError, match="standardise and the asinh stretch"):
        load_images(str(tmp_path / "sky.npy"), standardise=True, stretch="asinh")
    # a run keeps it: other files get the training pixels, brighter ones clipped with a warning
    run = str(tmp_path / "run")
    with pytest.warns(UserWarning, match="asinh stretch"):
        assert main(["train", "--model", "vae", "--data", str(tmp_path / "sky.npy"), "--latent-dim", "2", "--encoder",
                     "mlp", "--decoder", "mlp", "--hidden", "8", "--epochs", "1", "--no-progress", "--out", run]) == 0
    assert main(["info", run]) == 0
    assert "the training data's asinh stretch" in capsys.readouterr().out
    from affinevae.runs import Run

    np.save(tmp_path / "part.npy", a[10:30])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        part = load_images(str(tmp_path / "part.npy"), scaling=Run(run).pixel_scaling)
    np.testing.assert_array_equal(part.images, data.images[10:30])
    np.save(tmp_path / "brighter.npy", a[:3] * 3)
    with pytest.warns(UserWarning, match="outside the training data's range .*; clipped to it"):
        bright = load_images(str(tmp_path / "brighter.npy"), scaling=Run(run).pixel_scaling)
    assert bright.images.min() >= 0 and bright.images.max() <= 1
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "sky.npy"), "--latent-dim", "2", "--encoder", "mlp",
                 "--decoder", "mlp", "--hidden", "8", "--epochs", "2", "--no-progress", "--out", run, "--resume"]) == 0
    assert "stretch=auto" not in capsys.readouterr().out  # 'auto' was the default: nothing recorded to take
    lin = str(tmp_path / "lin")
    args = ["train", "--model", "vae", "--data", str(tmp_path / "sky.npy"), "--latent-dim", "2", "--encoder", "mlp",
            "--decoder", "mlp", "--hidden", "8", "--no-progress", "--out", lin]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*args, "--epochs", "1", "--stretch", "linear"]) == 0
        assert Run(lin).pixel_scaling.kind == "minmax"
        capsys.readouterr()
        assert main([*args, "--epochs", "2", "--resume"]) == 0  # the same pixels again: not refused as other data
    assert "stretch=linear" in capsys.readouterr().out
    import json

    record = json.loads((tmp_path / "lin" / "train.json").read_text())
    del record["stretch"]  # a run from before the stretch: min-max, recorded as its pixel scaling only
    (tmp_path / "lin" / "train.json").write_text(json.dumps(record))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*args, "--epochs", "3", "--resume"]) == 0  # 'auto' would stretch these: other data
    assert "stretch=linear" in capsys.readouterr().out


def test_masked_pixels_are_refused_with_a_hint_or_filled_by_their_images_median(tmp_path, capsys):
    """NaN-masked pixels (an astronomical cut-out's borders, bad columns) refused the whole file with no
    way out: the message now names --fill-nan, which fills each with its image's median; a run
    remembers it (its own and other data are filled alike, resume takes it)."""
    rng = np.random.default_rng(0)
    a = rng.random((30, 10, 10)).astype(np.float32) * 5
    a[3, :, :2] = np.nan
    a[7, 4, 4] = np.inf
    np.save(tmp_path / "masked.npy", a)
    with pytest.raises(AffineVAEError, match=r"masked.npy: 21 NaN or infinite pixel values \(first in image 3\) \(masked "
                                              r"pixels\? --fill-nan, fill_nan=True, replaces them by a median\)"):
        load_images(str(tmp_path / "masked.npy"))
    with pytest.raises(AffineVAEError, match="--fill-nan"):
        load_images(str(tmp_path / "masked.npy"), n=5)  # the lazy path says it too
    with pytest.warns(UserWarning, match=r"21 NaN or infinite pixel values in 2 images replaced by their image's median"):
        data = load_images(str(tmp_path / "masked.npy"), fill_nan=True, n=10)
    assert len(data) == 10 and np.isfinite(data.images).all()
    sc = data.meta["pixel_scaling"]
    expect = (np.nanmedian(np.where(np.isfinite(a[3]), a[3], np.nan)) - sc["offset"]) / sc["divisor"]
    np.testing.assert_allclose(data.images[3, 0, :, :2], expect, rtol=1e-5)
    np.testing.assert_array_equal(data.images[0, 0], ((a[0] - sc["offset"]) / np.float32(sc["divisor"])).astype(np.float32))
    a[5] = np.nan
    np.save(tmp_path / "empty.npy", a)
    with pytest.raises(AffineVAEError, match="image 5 has no finite pixel"):
        load_images(str(tmp_path / "empty.npy"), fill_nan=True)
    run = str(tmp_path / "run")
    args = ["train", "--model", "vae", "--data", str(tmp_path / "masked.npy"), "--latent-dim", "2", "--encoder", "mlp",
            "--decoder", "mlp", "--hidden", "8", "--no-progress", "--out", run]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*args, "--epochs", "1", "--fill-nan"]) == 0
        capsys.readouterr()
        assert main([*args, "--epochs", "2", "--resume"]) == 0
        assert "fill_nan=True" in capsys.readouterr().out
        assert main(["info", run]) == 0
        assert "NaN pixels filled" in capsys.readouterr().out
        assert main(["encode", run, "--data", str(tmp_path / "masked.npy"), "--out", str(tmp_path / "e.npz")]) == 0


def test_fill_nan_for_frames_gives_patches_and_tiles_one_fill_value(tmp_path, capsys, monkeypatch):
    """A field with bad columns and a masked region was refused whole by patches and map; --fill-nan
    (FrameSource.use_fill_nan) fills them with the stack's median of its finite values, the same value
    in whole frames and in tiles."""
    from affinevae.data.stacks import open_stack

    rng = np.random.default_rng(0)
    field = rng.normal(100.0, 5.0, (120, 130)).astype(np.float32)
    field[::10, ::10] += 400.0  # objects
    field[:, 50:53] = np.nan  # bad columns
    field[90:, 100:] = -np.inf  # a masked corner
    np.save(tmp_path / "field.npy", field)
    with pytest.raises(AffineVAEError, match=r"field.npy: .*NaN or infinite pixel values .*--fill-nan"):
        with open_stack(str(tmp_path / "field.npy")) as src:
            src.read(0, 1)
    with open_stack(str(tmp_path / "field.npy")) as src:
        src.use_fill_nan()
        with pytest.warns(UserWarning, match=r"field.npy: \d+ NaN or infinite pixel values replaced by the stack's median"):
            whole = src.read(0, 1)[0]
        tile = src.read_region(0, slice(80, 120), slice(40, 130))
        sc = src.pixel_scaling
    finite = field[np.isfinite(field)]
    from affinevae.data.imageset import apply_scaling

    fill = apply_scaling(np.array([np.median(finite)], np.float32), sc, own=True)[0]
    assert np.isfinite(whole).all() and np.allclose(whole[:, 50:53], fill, atol=1e-4)
    np.testing.assert_array_equal(tile, whole[80:120, 40:130])
    assert main(["patches", str(tmp_path / "field.npy"), "--window", "8", "--out", str(tmp_path / "p.npz"),
                 "--no-progress"]) == 2
    assert "--fill-nan" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["patches", str(tmp_path / "field.npy"), "--window", "8", "--out", str(tmp_path / "p.npz"),
                     "--no-progress", "--fill-nan"]) == 0
    with np.load(tmp_path / "p.npz") as f:
        assert len(f["patches"]) > 50 and np.isfinite(f["patches"]).all()
    # the fill is the median of every chunk's values, also when the holes come late and nothing is stretched
    from affinevae.data import stacks

    monkeypatch.setattr(stacks, "SCAN_BYTES", 2 * 16 * 16 * 4)  # two frames at a time
    movie = np.concatenate([np.full((6, 16, 16), 2.0), np.full((4, 16, 16), 9.0)]).astype(np.float32)
    movie[9, 0, 0] = np.nan
    np.save(tmp_path / "movie.npy", movie)
    with open_stack(str(tmp_path / "movie.npy")) as src:
        src.use_stretch("linear")
        src.use_fill_nan()
        with pytest.warns(UserWarning, match="replaced by the stack's median 2"):
            src.read(9, 10)


@pytest.mark.parametrize("shape", [(5, 0, 10), (0, 10, 10), (10, 0), (3, 10, 0)])
def test_a_stack_without_pixels_is_one_line(tmp_path, shape):
    """A stack of no frames, or of frames zero pixels wide or high, is refused when opened (a frame of zero
    width raised numpy's bare 'zero-size array' ValueError at the first read)."""
    from affinevae.data.stacks import open_stack

    np.save(tmp_path / "empty.npy", np.zeros(shape, np.float32))
    with pytest.raises(AffineVAEError, match=r"empty\.npy: holds no pixels \(\d+ frame\(s\) of \d+x\d+\)"):
        open_stack(tmp_path / "empty.npy")
    with pytest.raises(AffineVAEError, match="array: holds no pixels"):
        open_stack(np.zeros(shape, np.float32))


def test_a_tiff_whose_second_page_series_differs_says_that_it_is_not_read(tmp_path):
    """patches and map read a TIFF's first page series; a later one of another page size was dropped
    without a word (train refuses such a file as mixed image sizes)."""
    import tifffile

    from affinevae.data.stacks import open_stack

    a = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    with tifffile.TiffWriter(tmp_path / "mixed.tif") as w:
        w.write(a)
        w.write(a[:20, :16])
    with pytest.warns(UserWarning, match=r"mixed.tif: reads its first page series \(32x32 YX\); 1 other series "
                                         r"\(e.g. 20x16 YX\) differ in page shape, type or axes and are not read"):
        src = open_stack(str(tmp_path / "mixed.tif"))
    with src:
        assert src.n_frames == 1
    with tifffile.TiffWriter(tmp_path / "same.tif") as w:  # pages of one shape: one frame each, nothing said
        w.write(a)
        w.write(a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_stack(str(tmp_path / "same.tif")) as src:
            assert src.n_frames == 2


def test_a_folder_of_multi_plane_tiffs_says_how_it_reads_them_and_refuses_grey_among_fluorescence(tmp_path, capsys):
    """A cell audit: per-cell (3, H, W) TIFFs written with tifffile's defaults (axes QYX) were read as three images
    each without a word (info said one per file), and one-channel TIFFs among three-channel fluorescence ones (not
    RGB) were repeated into the three channels. Now a warning and an info clause say the first; the second is
    refused as other channel counts are (grayscale among RGB colour files is still repeated)."""
    import tifffile

    from affinevae.cli import main

    planes = tmp_path / "planes"
    planes.mkdir()
    for i in range(3):
        tifffile.imwrite(planes / f"c{i}.tif", np.stack([u8(H, W, seed=3 * i + j) for j in range(3)]),
                         photometric="minisblack")  # (tifffile's axes QYX: pages, not named channels)
    with pytest.warns(UserWarning, match=r"3 of 3 files hold several images each \(e.g. c0.tif: 3, read as "
                                         r"c0.tif\[0\] ... \[2\]\); planes are channels only where the TIFF names"):
        data = load_images(str(planes))
    assert data.images.shape == (9, 1, H, W) and data.names[:3].tolist() == ["c0.tif[0]", "c0.tif[1]", "c0.tif[2]"]
    assert main(["info", str(planes)]) == 0
    assert "3 hold several images each (e.g. c0.tif: 3 along axes QYX" in capsys.readouterr().out
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    tifffile.imwrite(mixed / "a.tif", np.stack([u8(H, W, seed=j) for j in range(3)]), metadata={"axes": "CYX"},
                     photometric="minisblack")
    tifffile.imwrite(mixed / "b.tif", u8(H, W, seed=9))
    with pytest.raises(AffineVAEError, match=r"b.tif: 1 channel, a.tif has 3 \(channels that are not RGB colour"):
        load_images(str(mixed))
    assert main(["info", str(mixed)]) == 0  # info says the refusal too
    assert "b.tif has 1 channel, a.tif several that are not RGB colour (train refuses the folder)" in \
        capsys.readouterr().out
    planar = tmp_path / "planar"  # planar RGB (3, H, W): info read its size as 3 x H and said train refuses it
    planar.mkdir()
    tifffile.imwrite(planar / "a.tif", u8(3, H, W + 2), photometric="rgb", planarconfig="separate")
    tifffile.imwrite(planar / "b.tif", u8(H, W + 2, 3), photometric="rgb")
    assert main(["info", str(planar)]) == 0
    assert f"all 2 files {H} x {W + 2} pixels" in capsys.readouterr().out
    assert load_images(str(planar)).images.shape == (2, 3, H, W + 2)
    tifffile.imwrite(mixed / "a.tif", u8(H, W, 3), photometric="rgb")  # RGB samples: colour, grey repeated
    with pytest.warns(UserWarning, match="1 grayscale image among 1 colour one"):
        assert load_images(str(mixed)).images.shape == (2, 3, H, W)


def test_data_objects_show_a_summary_not_their_arrays():
    """An audit: a notebook displaying an ImageSet of 200 digits printed 325 lines of pixel values (a PatchSet,
    an ObjectEncoding alike): their repr names each field's shape and dtype instead."""
    import affinevae as av
    from affinevae.data.imageset import summary_repr

    data = av.data.rotated_mnist("train", n=200)
    text = repr(data)
    assert text.startswith("ImageSet(images=(200, 1, 28, 28) float32, labels=(200,) int64, angle=(200,) float32")
    assert len(text) < 400 and "\n" not in text and "array(" not in text
    from affinevae.data.patches import PatchSet
    from affinevae.encoding import ObjectEncoding

    for cls in (PatchSet, ObjectEncoding):  # the same summary (its own __repr__, not the dataclass's)
        assert cls.__repr__ is not object.__repr__ and "summary_repr" in cls.__repr__.__code__.co_names
    assert summary_repr(data) == text


def test_data_layer_warnings_name_the_caller_s_line(tmp_path):
    """The data layer's warnings point at the user's call (errors.user_stacklevel), however deep the loaders go:
    fixed stacklevels named library lines (imageset.py, files.py) for some entry points."""
    np.save(tmp_path / "const.npy", np.full((5, 8, 8), 3.0, np.float32))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        av.data.load_images(str(tmp_path / "const.npy"))
        av.data.load_dataset(str(tmp_path / "const.npy"))
    hits = [w for w in said if "hold no contrast" in str(w.message)]
    assert len(hits) == 2 and {w.filename for w in hits} == {__file__}


def test_train_square_pads_or_crops_images_and_the_run_reads_its_data_alike(tmp_path, capsys):
    """An audit: non-square crops (40 x 56 particles) could not take the full circle (the equivariant encoder
    needs a square grid) and the advice, pad or crop them square, could not be followed with the tool."""
    import affinevae as av
    from affinevae.cli import main
    from affinevae.data.imageset import square_images

    x = np.random.default_rng(0).random((6, 1, 5, 8)).astype(np.float32)
    padded = square_images(x, "pad")
    assert padded.shape == (6, 1, 8, 8) and np.array_equal(padded[:, :, 1:6], x)  # 1 row above, 2 below
    assert np.array_equal(padded[:, :, 0], x[:, :, 1]) and np.array_equal(padded[:, :, 6], x[:, :, 3]) and np.array_equal(padded[:, :, 7], x[:, :, 2])  # mirrored
    assert np.array_equal(square_images(x, "crop"), x[:, :, :, 1:6])
    assert square_images(padded, "crop") is padded
    with pytest.raises(AffineVAEError, match=r"^im: square must be one of pad, crop, got 'fill'"):
        square_images(x, "fill", "im")
    with pytest.raises(AffineVAEError, match=r"^s: --square applies to images, not to 1-D signals"):
        square_images(np.zeros((3, 1, 1, 9), np.float32), "pad", "s")
    np.save(tmp_path / "wide.npy", np.random.default_rng(1).random((40, 12, 18)).astype(np.float32))
    argv = ["train", "--model", "vae", "--data", str(tmp_path / "wide.npy"), "--square", "pad", "--latent-dim", "2",
            "--hidden", "8", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    run = av.Run(tmp_path / "r")
    assert run.model().config.image_shape == (1, 18, 18) and run.meta["square"] == "pad"
    assert run.data(n=None).images.shape == (40, 1, 18, 18)  # its own data, squared as training did
    np.save(tmp_path / "other.npy", np.random.default_rng(2).random((7, 12, 18)).astype(np.float32))
    assert main(["encode", str(tmp_path / "r"), "--data", str(tmp_path / "other.npy"), "--out", str(tmp_path / "z.npz")]) == 0
    assert np.load(tmp_path / "z.npz")["z_mean"].shape == (7, 2)
    capsys.readouterr()
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "wide.npy"), "--epochs", "2", "--no-progress",
                 "--out", str(tmp_path / "r"), "--resume"]) == 0  # a resume without --square keeps it
    assert "square=pad" in capsys.readouterr().out and av.training.read_run(tmp_path / "r")["epochs_done"] == 2
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "wide.npy"), "--square", "crop", "--epochs", "3",
                 "--no-progress", "--out", str(tmp_path / "r"), "--resume"]) == 2  # another --square: said, not a shape
    assert f"--square crop: {tmp_path / 'r'} was trained with --square pad; resume it the same way" in capsys.readouterr().err
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "wide.npy"), "--square", "crop", "--latent-dim", "2",
                 "--hidden", "8", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "c")]) == 0
    assert av.Run(tmp_path / "c").model().config.image_shape == (1, 12, 12)
