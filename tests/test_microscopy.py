"""Microscope files in (MRC, OME-Zarr, OME-TIFF, EMD, Gatan DM3/DM4, lazy arrays), tiles, physical units out."""

from __future__ import annotations

import warnings

import math
import sys

import numpy as np
import pytest
import torch

from affinevae.cli import main
from affinevae.data.micrograph import synthetic_micrograph
from affinevae.data.patches import cut_patches
from affinevae.data.stacks import open_stack
from affinevae.errors import AffineVAEError
from affinevae.units import PixelSize, parse_pixel_size

W = 12


@pytest.fixture(scope="module")
def micrograph():
    img, _ = synthetic_micrograph(size=(96, 120), spacing=8.0, grain_angles=(0.0, math.radians(35)),
                                  substitution_frac=0.1, noise=0.02, seed=2)
    return img


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("affinevae: error:") and "\n" not in err, err
    return err


def write_formats(img, d):
    """The same micrograph as .npy, .mrc (0.5 Å), OME-Zarr (0.05 nm, 2 levels), OME-TIFF (0.05 nm)."""
    mrcfile = pytest.importorskip("mrcfile")
    zarr = pytest.importorskip("zarr")
    ome_writer = pytest.importorskip("ome_zarr.writer")
    import tifffile

    np.save(d / "img.npy", img)
    with mrcfile.new(d / "img.mrc") as m:
        m.set_data(img)
        m.voxel_size = 0.5
    root = zarr.open_group(str(d / "img.zarr"), mode="w")
    ome_writer.write_image(img, root, scale_factors=(2,), axes="yx", scale={"y": 0.05, "x": 0.05},
                           axes_units={"y": "nanometer", "x": "nanometer"})
    tifffile.imwrite(d / "img.ome.tif", img, ome=True,
                     metadata={"PhysicalSizeX": 0.05, "PhysicalSizeXUnit": "nm",
                               "PhysicalSizeY": 0.05, "PhysicalSizeYUnit": "nm"})
    return {"img.npy": None, "img.mrc": PixelSize(0.5, "Å"), "img.zarr": PixelSize(0.05, "nm"),
            "img.ome.tif": PixelSize(0.05, "nm")}


def write_tiny_ser(path, img, delta_m):
    """A minimal FEI TIA ``.ser`` (series version 0x0210): one float32 image, ``delta_m`` metres a pixel,
    one size-1 navigation dimension, a time tag. TIA stores image rows bottom-up."""
    import struct

    h, w = img.shape
    dims = struct.pack("<IddIII", 1, 0.0, 1.0, 0, 0, 0)
    data_at = 30 + len(dims)
    elem = struct.pack("<ddIddIHII", 0.0, delta_m, 0, 0.0, delta_m, 0, 7, w, h) + img[::-1].astype("<f4").tobytes()
    tag = struct.pack("<HI", 0x4152, 0)
    offsets_at = data_at + len(elem) + len(tag)
    head = struct.pack("<HHHIIII", 0x4949, 0x0197, 0x0210, 0x4122, 0x4152, 1, 1) + struct.pack("<II", offsets_at, 1)
    path.write_bytes(head + dims + elem + tag + struct.pack("<II", data_at, data_at + len(elem)))


def test_units_parse_and_convert():
    assert parse_pixel_size("0.05nm") == PixelSize(0.05, "nm")
    assert parse_pixel_size("0.5 A") == PixelSize(0.5, "Å")
    assert parse_pixel_size("50pm/px").to("nm").value == pytest.approx(0.05)
    assert parse_pixel_size("0.001um").to("Å").value == pytest.approx(10.0)
    assert parse_pixel_size("0.05 millimetre").to("µm").value == pytest.approx(50.0)  # light microscopy, OME 'mm'
    assert parse_pixel_size(None) is None
    for bad in ("0.05", "0.05 furlong", "nm", "-1nm", "0nm", "1e400nm"):
        with pytest.raises(AffineVAEError, match="^--pixel-size: "):  # every refusal names the option
            parse_pixel_size(bad)


def test_scale_bar_has_a_round_physical_length():
    from matplotlib.figure import Figure

    from affinevae.scalebar import add_scale_bar
    from affinevae.units import nice_length

    assert [nice_length(v) for v in (5.12, 10.0, 26.0, 37.0, 0.9)] == [1.0, 2.0, 5.0, 10.0, 0.2]
    ax = Figure().add_subplot()
    assert add_scale_bar(ax, None, (256, 256)) is None and not ax.artists
    assert add_scale_bar(ax, PixelSize(0.02, "nm"), (256, 256)) == 1.0      # 5.12 nm wide: a 1 nm bar
    bar = ax.artists[0]
    assert bar.txt_label.get_text() == "1 nm" and bar.size_bar.get_children()[0].get_width() == pytest.approx(50)
    # labelled in a larger unit of the same kind once the frame spans 5 of it; Å stays Å below µm
    for ps, width, label, pixels in [(PixelSize(120, "arcsec"), 256, "2 deg", 60), (PixelSize(5, "nm"), 4096, "5 µm", 1000),
                                     (PixelSize(0.5, "Å"), 4096, "500 Å", 1000), (PixelSize(0.25, "arcsec"), 128, "5 arcsec", 20),
                                     (PixelSize(5e-5, "µm"), 192, "2 nm", 40)]:  # and down: 0.002 µm reads 2 nm
        ax = Figure().add_subplot()
        length = add_scale_bar(ax, ps, (width, width))
        bar = ax.artists[0]
        assert bar.txt_label.get_text() == label and bar.size_bar.get_children()[0].get_width() == pytest.approx(pixels)
        assert length == pytest.approx(pixels * ps.value)  # in the pixel size's own unit


def test_formats_give_identical_patches_and_maps(micrograph, tmp_path, capsys):
    """.npy, .mrc, OME-Zarr and OME-TIFF of one micrograph: the same patches, the same maps, their pixel sizes."""
    from affinevae.models import VAE

    expected = write_formats(micrograph, tmp_path)
    torch.manual_seed(0)
    VAE(image_shape=(1, W, W), latent_dim=2, encoder="mlp", decoder="mlp", hidden=(8,)).eval().save(tmp_path / "m")
    ref = None
    for name, ps in expected.items():
        with open_stack(tmp_path / name) as src:
            assert src.pixel_size == ps, name
        out = tmp_path / f"{name}.npz"
        assert main(["patches", str(tmp_path / name), "--window", str(W), "--out", str(out), "--no-progress"]) == 0
        assert main(["map", str(tmp_path / "m"), "--image", str(tmp_path / name), "--patches", str(out),
                     "--out", str(tmp_path / f"map_{name}"), "--clusters", "2", "--symmetry", "1"]) == 0
        with np.load(out) as f, np.load(tmp_path / f"map_{name}" / "maps.npz") as g:
            got = {k: f[k] for k in ("patches", "centers")} | {k: g[k] for k in ("z_mean", "positions", "cluster")}
            if ps is not None:
                assert float(g["pixel_size"]) == pytest.approx(ps.value) and str(g["unit"]) == ps.unit
                np.testing.assert_allclose(g["positions_phys"], g["positions"] * ps.value, rtol=1e-6)
            else:
                assert "pixel_size" not in g.files and "positions_phys" not in g.files
        if ref is None:
            ref = got
            assert len(got["patches"]) > 50
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"{name}: {k}")
    assert "positions also in Å" in capsys.readouterr().out


def test_ome_zarr_levels_and_pixel_size_option(micrograph, tmp_path, capsys):
    write_formats(micrograph, tmp_path)
    with open_stack(tmp_path / "img.zarr", level=1) as src:
        assert src.image_shape == (48, 60) and src.pixel_size == PixelSize(0.1, "nm")
    out = tmp_path / "p.npz"
    assert main(["patches", str(tmp_path / "img.npy"), "--window", str(W), "--out", str(out), "--no-progress",
                 "--pixel-size", "0.5A"]) == 0
    with np.load(out) as f:
        assert float(f["pixel_size"]) == 0.5 and str(f["unit"]) == "Å"
    # maps of those patches over an image that records another size: the patches' is taken, and said
    from affinevae.models import VAE

    VAE(image_shape=(1, W, W), latent_dim=2, encoder="mlp", decoder="mlp", hidden=(8,)).eval().save(tmp_path / "m")
    assert main(["patches", str(tmp_path / "img.npy"), "--window", str(W), "--out", str(tmp_path / "p2.npz"),
                 "--no-progress", "--pixel-size", "2A"]) == 0
    for patches, warned in (("p.npz", False), ("p2.npz", True)):  # the store's own: 0.05 nm, 0.5 Å
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert main(["map", str(tmp_path / "m"), "--image", str(tmp_path / "img.zarr"), "--patches",
                         str(tmp_path / patches), "--out", str(tmp_path / f"maps_{patches}"), "--symmetry", "1"]) == 0
        said = [str(w.message) for w in seen if "records a pixel size" in str(w.message)]
        assert said == ([f"{tmp_path / 'p2.npz'} records a pixel size of 2 Å, {tmp_path / 'img.zarr'} 0.05 nm: the maps "
                         "take the patches' (--pixel-size sets it)"] if warned else [])
    with np.load(tmp_path / "maps_p2.npz" / "maps.npz") as g:
        assert float(g["pixel_size"]) == 2.0 and str(g["unit"]) == "Å"
    # info describes a level of it too (it refused --level), and refuses it for other files as patches does
    capsys.readouterr()
    assert main(["info", str(tmp_path / "img.zarr"), "--level", "1"]) == 0
    assert "48 x 60 pixels" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "img.npy"), "--level", "1"]) == 2
    assert "--level applies to multiscale" in one_line_error(capsys)
    # an OME-Zarr store is training data too (its finest level, with its pixel size): it was "a folder with no images"
    from affinevae.data import load_images

    data = load_images(str(tmp_path / "img.zarr"))
    with open_stack(tmp_path / "img.zarr") as src:
        assert data.images.shape[0] == src.n_frames and data.images.shape[-2:] == tuple(src.image_shape)
    assert data.meta["pixel_size"] == 0.05 and data.meta["unit"] == "nm"
    import zarr

    stack = np.random.default_rng(0).random((6, 20, 24)).astype(np.float32) * 3  # -n N: the first N frames, read
    store = zarr.open(str(tmp_path / "stack.zarr"), mode="w", shape=stack.shape, dtype=stack.dtype, chunks=(2, 20, 24))
    store[:] = stack  # chunk by chunk and scaled as the whole store
    whole = load_images(str(tmp_path / "stack.zarr"))
    first = load_images(str(tmp_path / "stack.zarr"), n=2)
    assert whole.images.shape == (6, 1, 20, 24) and first.images.shape == (2, 1, 20, 24)
    np.testing.assert_array_equal(first.images, whole.images[:2])
    # bad input: one line, exit 2
    assert main(["patches", str(tmp_path / "img.zarr"), "--window", str(W), "--out", str(tmp_path / "bad.npz"), "--level", "5"]) == 2
    assert "no resolution level 5" in one_line_error(capsys)
    assert main(["patches", str(tmp_path / "img.npy"), "--window", str(W), "--out", str(tmp_path / "bad.npz"), "--level", "1"]) == 2
    assert "--level applies to multiscale" in one_line_error(capsys)
    assert main(["patches", str(tmp_path / "img.npy"), "--window", str(W), "--out", str(tmp_path / "bad.npz"),
                 "--pixel-size", "3 furlong"]) == 2
    assert "unknown unit 'furlong'; use a length: pm, Å, nm" in one_line_error(capsys)


def test_instrument_files_bad_and_missing_extra(micrograph, tmp_path, capsys, monkeypatch):
    """A Berkeley EMD (written by rosettasciio) and a hand-made TIA .ser read back with their pixel sizes and
    give the .npy's patches; a corrupt .dm4/.ser/.mrc, an unknown suffix, a missing library: one line."""
    emd = pytest.importorskip("rsciio.emd")
    axes = [{"name": n, "size": s, "scale": 0.02, "offset": 0.0, "units": "nm", "navigate": False}
            for n, s in zip("yx", micrograph.shape)]
    emd.file_writer(str(tmp_path / "img.emd"), {"data": micrograph, "axes": axes, "original_metadata": {},
                                                "metadata": {"General": {"title": "t"}, "Signal": {}}})
    with open_stack(tmp_path / "img.emd") as src:
        assert src.pixel_size == PixelSize(0.02, "nm")
        np.testing.assert_array_equal(src.read_raw(0, 1)[0], micrograph)
    write_tiny_ser(tmp_path / "img.ser", micrograph, 2e-11)
    with open_stack(tmp_path / "img.ser") as src:
        assert src.pixel_size == PixelSize(0.02, "nm")
        np.testing.assert_array_equal(src.read_raw(0, 1)[0], micrograph)
    ref = cut_patches(micrograph, W)
    for name in ("img.emd", "img.ser"):
        got = cut_patches(str(tmp_path / name), W)
        np.testing.assert_array_equal(got.centers, ref.centers)
        np.testing.assert_array_equal(got.patches, ref.patches)
        assert got.pixel_size == PixelSize(0.02, "nm")
    out = str(tmp_path / "p.npz")
    for name in ("bad.dm4", "bad.ser", "bad.mrc"):
        (tmp_path / name).write_bytes(b"not a microscope file" * 10)
        assert main(["patches", str(tmp_path / name), "--window", str(W), "--out", out]) == 2
        assert f"{name}: cannot read" in one_line_error(capsys)
    (tmp_path / "x.xyz").write_bytes(b"0")
    assert main(["patches", str(tmp_path / "x.xyz"), "--window", str(W), "--out", out]) == 2
    assert "unsupported image file suffix" in one_line_error(capsys)
    monkeypatch.setitem(sys.modules, "mrcfile", None)  # as if the extra were not installed
    assert main(["patches", str(tmp_path / "bad.mrc"), "--window", str(W), "--out", out]) == 2
    assert 'pip install "affinevae[microscopy]"' in one_line_error(capsys)


def test_gatan_dm3_dm4_read_back(micrograph, tmp_path, capsys):
    """Valid Gatan files made by tests/dm_writer.py: a .dm3 (0.05 nm, with a thumbnail image before the
    real one) and a .dm4 (0.5 Å) of the micrograph give the .npy's patches through ``affinevae patches``,
    with the file's pixel size and unit; a .dm4 with a 2-frame stack and a second image: 2 frames, --key 1;
    a file whose dimensions disagree with its data: one error line."""
    pytest.importorskip("rsciio.digitalmicrograph")
    from dm_writer import write_dm

    np.save(tmp_path / "img.npy", micrograph)
    write_dm(tmp_path / "img.dm3", micrograph, 0.05, "nm", version=3)
    write_dm(tmp_path / "img.dm4", micrograph, 0.5, "Å", version=4, thumbnail=False)
    write_dm(tmp_path / "two.dm4", [np.stack([micrograph, micrograph[::-1]]), micrograph[:40, :50]], 0.02, "µm",
             version=4)
    expected = {"img.dm3": PixelSize(0.05, "nm"), "img.dm4": PixelSize(0.5, "Å")}
    ref = None
    for name in ("img.npy", *expected):
        out = tmp_path / f"{name}.npz"
        assert main(["patches", str(tmp_path / name), "--window", str(W), "--out", str(out), "--no-progress"]) == 0
        with np.load(out) as f:
            got = {k: f[k] for k in ("patches", "centers", "frames")}
            if name in expected:   # DM stores the scale as float32
                assert float(f["pixel_size"]) == pytest.approx(expected[name].value, rel=1e-6)
                assert str(f["unit"]) == expected[name].unit
            else:
                assert "pixel_size" not in f.files
        ref = got if ref is None else ref
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"{name}: {k}")
    assert len(ref["patches"]) > 50 and "pixel size 0.05 nm" in capsys.readouterr().out
    with open_stack(tmp_path / "two.dm4") as src:
        assert src.n_frames == 2 and src.image_shape == micrograph.shape
        assert src.pixel_size.unit == "µm" and src.pixel_size.value == pytest.approx(0.02, rel=1e-6)
        np.testing.assert_array_equal(src.read_raw(1, 2)[0], micrograph[::-1])
    with open_stack(tmp_path / "two.dm4", key="1") as src:      # --key: the second image (the thumbnail skipped)
        assert src.n_frames == 1 and src.image_shape == (40, 50)
        np.testing.assert_array_equal(src.read_raw(0, 1)[0], micrograph[:40, :50])
    assert main(["patches", str(tmp_path / "two.dm4"), "--window", str(W), "--out", str(tmp_path / "bad.npz"),
                 "--key", "2"]) == 2
    assert "--key must be a signal index 0..1, got '2'" in one_line_error(capsys)
    # dimensions that disagree with the stored data (fewer pixels: a silent crop; more: other tags read as pixels)
    for dims in ((60, 96), (120, 97)):
        write_dm(tmp_path / "bad.dm3", micrograph, 0.05, "nm", dimensions=dims)
        assert main(["patches", str(tmp_path / "bad.dm3"), "--window", str(W), "--out", str(tmp_path / "bad.npz")]) == 2
        assert f"the image's dimensions {dims[::-1]} do not match its stored data (46080 bytes" in one_line_error(capsys)


def test_an_instrument_file_s_image_stack_is_training_data(tmp_path, capsys):
    """A .dm4 stack of particle images trains as an .npy of them does (the same images, scaled alike), with
    the pixel size the file records; --key takes its second image; a spectrum image is refused with the
    --signal-axis that reads it; encode reads the file as training did."""
    pytest.importorskip("rsciio.digitalmicrograph")
    from dm_writer import write_dm, write_dm_spectrum_image

    from affinevae.data.files import load_images

    rng = np.random.default_rng(0)
    stack = rng.random((12, 16, 16)).astype(np.float32) * 40 - 3   # floats outside [0, 1]: min-max scaled
    write_dm(tmp_path / "particles.dm4", [stack, stack[:5, :12, :12]], 0.25, "nm", version=4)
    np.save(tmp_path / "particles.npy", stack)
    got, ref = load_images(str(tmp_path / "particles.dm4")), load_images(str(tmp_path / "particles.npy"))
    np.testing.assert_array_equal(got.images, ref.images)
    assert got.meta["unit"] == "nm" and got.meta["pixel_size"] == pytest.approx(0.25, rel=1e-6)
    assert load_images(str(tmp_path / "particles.dm4"), key="1").images.shape == (5, 1, 12, 12)
    assert main(["info", str(tmp_path / "particles.dm4")]) == 0   # lists the file's images by --key index
    said = capsys.readouterr().out
    assert "images      0: (12, 16, 16) [" in said and "; 1: (5, 12, 12) [" in said and "--key N reads signal N" in said
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "particles.dm4"), "--epochs", "1", "--latent-dim",
                 "2", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["encode", str(tmp_path / "run"), "--data", str(tmp_path / "particles.dm4"), "--out",
                 str(tmp_path / "z.npz")]) == 0
    with np.load(tmp_path / "z.npz") as f:
        assert f["z_mean"].shape[1] == 2
    write_dm_spectrum_image(tmp_path / "si.dm4", rng.random((6, 7, 32)).astype(np.float32), version=4)
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "si.dm4"), "--out", str(tmp_path / "r2")]) == 2
    assert "spectra are read as 1-D signals with --signal-axis 0" in one_line_error(capsys)
    # a survey image beside a spectrum image (as Velox and DM files hold them): --key counts the file's signals
    # for images and spectra alike, as info lists them
    survey = rng.random((20, 24)).astype(np.float32)
    write_dm_spectrum_image(tmp_path / "mixed.dm4", rng.random((6, 7, 32)).astype(np.float32), version=4, survey=survey)
    assert main(["info", str(tmp_path / "mixed.dm4")]) == 0
    said = capsys.readouterr().out
    assert "--signal-axis 0 --key 1" in said and "0: (20, 24) [" in said
    np.testing.assert_array_equal(load_images(str(tmp_path / "mixed.dm4")).images[0, 0], survey)  # in [0, 1]: as is
    np.testing.assert_array_equal(load_images(str(tmp_path / "mixed.dm4"), key="0").images[0, 0], survey)
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "mixed.dm4"), "--key", "1",
                 "--out", str(tmp_path / "r3")]) == 2
    assert "signal 1 (32, 6, 7) is spectra (read them with --signal-axis 0 --key 1); its images: 0: (20, 24)" in \
        one_line_error(capsys)
    from affinevae.data.spectra import load_signals

    assert load_signals(str(tmp_path / "mixed.dm4"), 0, key="1").images.shape == (42, 1, 1, 32)


def test_lazy_arrays_are_read_as_needed(micrograph, tmp_path):
    """numpy, dask and zarr arrays open as stacks; a region read touches only its chunks; .npy regions
    (read row by row from the file) equal the array's, with steps too."""
    np.save(tmp_path / "one.npy", micrograph)
    np.save(tmp_path / "two.npy", np.stack([micrograph, micrograph[::-1, ::-1]]))
    for name, ref in (("one.npy", micrograph), ("two.npy", micrograph[::-1, ::-1])):
        with open_stack(tmp_path / name) as src:
            f = src.n_frames - 1
            for rows, cols in ((slice(3, 50), slice(7, 90)), (slice(None, None, 4), slice(1, None, 3)),
                               (slice(90, 200), slice(0, 5))):
                np.testing.assert_array_equal(src.read_raw_region(f, rows, cols), ref[rows, cols])
    da = pytest.importorskip("dask.array")
    zarr = pytest.importorskip("zarr")
    stack = np.stack([micrograph, micrograph[::-1]])
    z = zarr.create_array(store={}, shape=stack.shape, chunks=(1, 32, 32), dtype="float32")
    z[:] = stack
    ref = cut_patches(stack, W)
    for arr in (da.from_array(stack, chunks=(1, 32, 32)), z):
        with open_stack(arr) as src:
            assert src.n_frames == 2 and src.image_shape == micrograph.shape
            np.testing.assert_array_equal(src.read_region(1, slice(5, 20), slice(3, 9)), stack[1, 5:20, 3:9])
        got = cut_patches(arr, W)
        np.testing.assert_array_equal(got.centers, ref.centers)
        np.testing.assert_array_equal(got.patches, ref.patches)


@pytest.mark.parametrize("options", [{}, {"sigma": 1.5}, {"absolute": True, "threshold": 0.4},
                                     {"edge": "reflect"}, {"stride": 7}])
def test_tiles_find_every_object_once(micrograph, options):
    """A frame searched in overlapping tiles gives the whole frame's centres and patches (border objects once)."""
    whole = cut_patches(micrograph, W, tile=None, **options)
    for tile in (24, 50):
        tiled = cut_patches(micrograph, W, tile=tile, **options)
        np.testing.assert_array_equal(tiled.centers, whole.centers)
        np.testing.assert_array_equal(tiled.patches, whole.patches)
        assert tiled.n_found == whole.n_found
        if "stride" in options:  # a grid has no sub-pixel positions
            assert tiled.positions is None and whole.positions is None
        else:
            np.testing.assert_allclose(tiled.positions, whole.positions, rtol=0, atol=1e-9)  # float rounding at most
    assert len(whole) > 50


def test_tiles_keep_every_channel(micrograph):
    """A frame of three channels cut in tiles gives the whole frame's (N, 3, w, w) patches: a tile's
    (C, h, w) region is one frame of C channels, not C frames."""
    frame = np.stack([micrograph, 1 - micrograph, micrograph / 2])[None]  # (1, 3, H, W)
    whole = cut_patches(frame, W, tile=None)
    tiled = cut_patches(frame, W, tile=40)
    assert whole.patches.shape[1] == 3 and len(whole) > 50
    np.testing.assert_array_equal(tiled.centers, whole.centers)
    np.testing.assert_array_equal(tiled.patches, whole.patches)


def test_pixel_size_reaches_the_training_data_and_the_report(micrograph, tmp_path):
    """The patch set's pixel size is in the data's meta, and the report states it with the patch width."""
    from affinevae.data import load_dataset

    np.save(tmp_path / "img.npy", micrograph)
    out = tmp_path / "p.npz"
    assert main(["patches", str(tmp_path / "img.npy"), "--window", str(W), "--out", str(out), "--no-progress",
                 "--pixel-size", "0.5A"]) == 0
    data = load_dataset(str(out))
    assert data.meta["pixel_size"] == 0.5 and data.meta["unit"] == "Å" and data.meta["window"] == W
    run = tmp_path / "run"
    assert main(["train", "--model", "vae", "--data", str(out), "--latent-dim", "2", "--hidden", "8",
                 "--epochs", "1", "--no-progress", "--out", str(run)]) == 0
    assert main(["report", str(run), "--out", str(tmp_path / "r.html"), "-n", "60", "--sweep-n", "20", "--quiet"]) == 0
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "0.5 Å" in html and f"{W} px = {W * 0.5:g} Å" in html


def test_an_npz_of_several_arrays_is_read_by_one_rule(micrograph, tmp_path):
    """open_stack (patches, map) took the first array of an .npz silently, where load_images (train,
    encode) refuses an ambiguous archive: both now follow data.formats.npz_image_key."""
    from affinevae.data import load_dataset
    from affinevae.data.stacks import open_stack

    np.savez(tmp_path / "two.npz", a=micrograph, b=micrograph[::-1])
    for read in (lambda: open_stack(str(tmp_path / "two.npz")), lambda: load_dataset(str(tmp_path / "two.npz"))):
        with pytest.raises(AffineVAEError, match=r"several arrays and none called 'images' or 'patches'; pick one "
                                                 r"with --key \(key= in Python\), arrays: a, b"):
            read()
    with open_stack(str(tmp_path / "two.npz"), key="b") as src:
        np.testing.assert_array_equal(src.read(0, 1)[0], micrograph[::-1])
    np.savez(tmp_path / "lab.npz", labels=np.arange(3), foo=np.stack([micrograph] * 3))
    with open_stack(str(tmp_path / "lab.npz")) as src:  # the labels are ground truth, not the images
        assert src.n_frames == 3


def test_a_folder_or_glob_of_tiffs_keeps_the_pixel_size_they_record(micrograph, tmp_path, capsys):
    """An audit's folder of OME-TIFFs at 0.4 nm each: read one at a time they gave 0.4 nm, read as a folder or a
    glob none (info, load_images, so encode wrote no shift_phys). Now kept; a file recording none takes the
    others' and sizes that differ keep none, each said."""
    import tifffile

    from affinevae.data import load_images

    def ome(path, nm):
        tifffile.imwrite(path, micrograph.astype(np.float32), ome=True,
                         metadata={"axes": "YX", "PhysicalSizeX": nm, "PhysicalSizeY": nm,
                                   "PhysicalSizeXUnit": "nm", "PhysicalSizeYUnit": "nm"})

    folder = tmp_path / "fold"
    folder.mkdir()
    for i in range(3):
        ome(folder / f"im{i}.ome.tif", 0.4)
    for spec in (str(folder), str(folder / "*.tif")):
        data = load_images(spec)
        assert (data.meta["pixel_size"], data.meta["unit"]) == (pytest.approx(0.4), "nm"), spec
    with open_stack(str(folder)) as src:
        assert src.pixel_size is not None and src.pixel_size.value == pytest.approx(0.4)
    assert main(["info", str(folder)]) == 0
    assert "pixel size  0.4 nm" in capsys.readouterr().out
    tifffile.imwrite(folder / "im3.tif", micrograph.astype(np.float32))  # no size recorded
    with pytest.warns(UserWarning, match=r"1 of 4 files record no pixel size \(e.g. im3.tif\): they take im0.ome.tif's"):
        assert load_images(str(folder)).meta["pixel_size"] == pytest.approx(0.4)
    ome(folder / "im4.ome.tif", 0.8)
    with pytest.warns(UserWarning, match=r"the files record different pixel sizes \(im0.ome.tif 0.4 nm, im4.ome.tif "
                                         r"0.8 nm\): none is kept"):
        assert "pixel_size" not in load_images(str(folder)).meta


def test_a_folder_of_frames_skips_hidden_files_and_scales_each_bit_depth(micrograph, tmp_path):
    """A macOS ._name file beside the PNGs stopped `patches`; an 8-bit and a 16-bit PNG were both
    scaled by the first file's depth (patches in [0, 235]): each is now scaled by its own, as
    load_images (train) reads the folder."""
    from PIL import Image

    from affinevae.data.stacks import open_stack

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(2):
        Image.fromarray((micrograph * 255).astype(np.uint8)).save(folder / f"{i}.png")
    (folder / "._1.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    with open_stack(str(folder)) as src:
        assert src.n_frames == 2 and src.read(0, 2).max() <= 1.0
    Image.fromarray((micrograph * 60000).astype(np.uint16)).save(folder / "2.png")
    from affinevae.data import load_dataset

    with open_stack(str(folder)) as src:
        frames = src.read(0, 3)
    np.testing.assert_allclose(frames[2], (micrograph * 60000).astype(np.uint16) / 65535.0, rtol=1e-6)
    np.testing.assert_allclose(frames, load_dataset(str(folder)).images[:, 0], rtol=1e-6)
    Image.fromarray(micrograph.astype(np.float32)).save(folder / "3.tif")
    with open_stack(str(folder)) as src, pytest.raises(AffineVAEError, match=r"3.tif: pixels of dtype float32, but "
                                                                             r"the first image \(0.png\) has uint8"):
        src.read(0, 4)


def test_ome_zarr_axes_say_which_axis_holds_channels(micrograph, tmp_path):
    """An OME-Zarr image's axis names decide channels and frames (a c,y,x image of 2 channels was
    read as 2 frames; c,z,y,x as frames of z-planes taken for channels)."""
    zarr = pytest.importorskip("zarr")
    ome_writer = pytest.importorskip("ome_zarr.writer")
    from affinevae.data.stacks import open_stack

    cyx = np.stack([micrograph, 1 - micrograph]).astype(np.float32)
    czyx = np.stack([np.stack([micrograph * s for s in (1.0, 0.5, 0.25)]), np.stack([1 - micrograph] * 3)])
    zyx = np.stack([micrograph * s for s in (1.0, 0.5, 0.25)]).astype(np.float32)  # 3 z-planes: frames, not channels
    cases = {"cyx": (cyx, (1, 2), lambda f: cyx), "czyx": (czyx.astype(np.float32), (3, 2), lambda f: czyx[:, f]),
             "zyx": (zyx, (3, 1), lambda f: zyx[f][None])}
    for axes, (data, (frames, channels), frame_of) in cases.items():
        root = zarr.open_group(str(tmp_path / f"{axes}.zarr"), mode="w")
        ome_writer.write_image(data, root, scale_factors=(), axes=axes)
        with open_stack(str(tmp_path / f"{axes}.zarr")) as src:
            assert src.n_frames == frames and (src.frame_shape[0] if len(src.frame_shape) == 3 else 1) == channels, axes
            for f in range(frames):
                np.testing.assert_allclose(src.read_raw(f, f + 1).reshape(frame_of(f).shape), frame_of(f), rtol=0, atol=0)
            np.testing.assert_allclose(src.read_raw_region(frames - 1, slice(3, 9), slice(2, 7)).reshape(-1, 6, 5),
                                       frame_of(frames - 1)[:, 3:9, 2:7])


def test_the_frame_reader_says_what_a_bad_npy_is(tmp_path):
    """open_stack (patches, map) passed numpy's advice to unpickle a garbage or object .npy; it now
    says what load_images says: not an .npy, or a pickled array that is never loaded."""
    from affinevae.data.stacks import open_stack

    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "garb.npy").write_bytes(b"hello world garbage" * 10)
    with pytest.raises(AffineVAEError, match="obj.npy: holds a pickled object array, which is never loaded"):
        open_stack(str(tmp_path / "obj.npy"))
    with pytest.raises(AffineVAEError, match=r"garb.npy: cannot read .npy: not a NumPy .npy file \(bad header\)"):
        open_stack(str(tmp_path / "garb.npy"))


def test_a_particle_stack_mrcs_is_training_data(tmp_path, capsys, monkeypatch):
    """An .mrcs particle stack (N, H, W) loads as N images for train/encode/report (not only as frames
    for patches), with MRC's float values scaled by the one normalisation rule; broken files, one line."""
    mrcfile = pytest.importorskip("mrcfile")
    from affinevae.data.files import load_images

    rng = np.random.default_rng(0)
    stack = rng.normal(0.0, 1.0, (12, 16, 16)).astype(np.float32)  # cryo-EM values: any sign and scale
    with mrcfile.new(tmp_path / "particles.mrcs") as m:
        m.set_data(stack)
    with pytest.warns(UserWarning):  # the min-max scaling of out-of-range floats is announced
        data = load_images(str(tmp_path / "particles.mrcs"))
    assert data.images.shape == (12, 1, 16, 16) and data.images.dtype == np.float32
    expected = (stack - stack.min()) / (stack.max() - stack.min())
    np.testing.assert_allclose(data.images[:, 0], expected, atol=1e-6)
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "particles.mrcs"), "--epochs", "1",
                 "--latent-dim", "2", "--hidden", "8", "--channels", "4,8", "--no-progress",
                 "--likelihood", "gaussian", "--out", str(tmp_path / "run")]) == 0
    assert "trained vae on" in capsys.readouterr().out
    (tmp_path / "bad.mrcs").write_bytes(b"not a microscope file" * 10)
    with pytest.raises(AffineVAEError, match="bad.mrcs: cannot read"):
        load_images(str(tmp_path / "bad.mrcs"))
    monkeypatch.setitem(sys.modules, "mrcfile", None)  # as if the extra were not installed
    with pytest.raises(AffineVAEError, match=r'pip install "affinevae\[microscopy\]"'):
        load_images(str(tmp_path / "particles.mrcs"))


@pytest.mark.parametrize("shape", [(0, 40, 40), (5, 0, 40)])
def test_an_mrc_stack_without_pixels_is_one_line(tmp_path, capsys, shape):
    """An .mrcs declaring no frames, or frames of zero size, is refused in one line (mrcfile's voxel size
    divided by the zero first: a numpy warning line came before the error)."""
    mrcfile = pytest.importorskip("mrcfile")
    path = tmp_path / "empty.mrcs"
    with mrcfile.new(str(path)) as m:
        m.set_data(np.zeros(shape, np.float32))
    for argv in (["patches", str(path), "--window", "8", "--out", str(tmp_path / "p.npz")],
                 ["train", "--model", "vae", "--data", str(path), "--epochs", "1", "--out", str(tmp_path / "run")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"empty.mrcs: holds no pixels ({shape[0]} frame(s) of {shape[1]}x{shape[2]})" in err


def test_a_file_that_is_no_mrc_is_one_line_in_every_command(tmp_path, capsys):
    """An audit's PNG named .mrcs: info and patches printed three of mrcfile's warnings (from the header
    check's permissive read) before the one-line error; train printed the line alone."""
    pytest.importorskip("mrcfile")
    from PIL import Image

    path = tmp_path / "fake.mrcs"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (256, 256), dtype=np.uint8)).save(path, format="PNG")
    for argv in (["info", str(path)], ["patches", str(path), "--window", "16", "--out", str(tmp_path / "p.npz")],
                 ["train", "--model", "vae", "--data", str(path), "--epochs", "1", "--out", str(tmp_path / "run")]):
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("affinevae: error: ") and "fake.mrcs: cannot read MRC" in err, err
        assert not said, [str(w.message) for w in said]  # (the CLI prints warnings as lines of their own)


def test_images_trained_on_directly_keep_their_files_pixel_size(tmp_path, capsys, monkeypatch):
    """An MRC particle stack or an OME-TIFF read as images (not patches) carries its pixel size in
    ImageSet.meta, and `encode` adds the shifts in that unit (shift_phys, right and down)."""
    mrcfile = pytest.importorskip("mrcfile")
    import tifffile

    from affinevae.data.files import load_images
    from affinevae.models import RVAE

    stack = np.random.default_rng(0).random((6, 16, 16)).astype(np.float32)
    with mrcfile.new(tmp_path / "p.mrcs") as m:
        m.set_data(stack)
        m.voxel_size = 1.5
    tifffile.imwrite(tmp_path / "p.ome.tif", stack, ome=True,
                     metadata={"axes": "TYX", "PhysicalSizeX": 0.05, "PhysicalSizeXUnit": "nm",
                               "PhysicalSizeY": 0.05, "PhysicalSizeYUnit": "nm"})
    np.save(tmp_path / "p.npy", stack)
    assert {k: load_images(str(tmp_path / "p.mrcs")).meta[k] for k in ("pixel_size", "unit")} == \
        {"pixel_size": 1.5, "unit": "Å"}
    assert load_images(str(tmp_path / "p.mrcs"), n=2).meta["pixel_size"] == 1.5  # a first-n read too
    # ... which opens the stack once: its frame reader holds the pixel size (or that there is none)
    from affinevae.data import stacks
    opened = []
    real_open = stacks.open_stack
    monkeypatch.setattr(stacks, "open_stack", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    with mrcfile.new(tmp_path / "bare.mrcs") as m:
        m.set_data(stack)
    assert "pixel_size" not in load_images(str(tmp_path / "bare.mrcs"), n=2).meta
    assert load_images(str(tmp_path / "p.mrcs"), n=2).meta["pixel_size"] == 1.5
    assert [str(p).rsplit("/", 1)[-1] for p in opened] == ["bare.mrcs", "p.mrcs"], opened
    assert load_images(str(tmp_path / "p.ome.tif")).meta["unit"] == "nm"
    assert "pixel_size" not in load_images(str(tmp_path / "p.npy")).meta
    torch.manual_seed(0)
    RVAE(image_shape=(1, 16, 16), latent_dim=2, invariances=("translation",), hidden=(8,)).eval().save(tmp_path / "m")
    assert main(["encode", str(tmp_path / "m"), "--data", str(tmp_path / "p.mrcs"), "--out", str(tmp_path / "e.npz")]) == 0
    assert "shifts also in Å (pixel size 1.5 Å)" in capsys.readouterr().out
    with np.load(tmp_path / "e.npz") as f:
        assert float(f["pixel_size"]) == 1.5 and str(f["unit"]) == "Å"
        np.testing.assert_allclose(f["shift_phys"], f["shift"] * 8 * 1.5, rtol=1e-6)  # half widths of 16 px
    assert main(["encode", str(tmp_path / "m"), "--data", str(tmp_path / "p.npy"), "--out", str(tmp_path / "n.npz")]) == 0
    with np.load(tmp_path / "n.npz") as f:
        assert "shift_phys" not in f.files


def test_a_gatan_spectrum_image_reads_as_spectra_with_its_energy_axis(tmp_path, capsys):
    """An EELS spectrum image in a .dm4 (rosettasciio gives it as (E, H, W), the energy first): `info`
    says which --signal-axis reads it, image commands refuse it with that hint, and train/encode/map
    read it as a cube whose shifts encode also gives in eV."""
    pytest.importorskip("rsciio.digitalmicrograph")
    from dm_writer import write_dm_spectrum_image

    from affinevae.data.spectra import load_signals, synthetic_cube

    c = synthetic_cube(height=9, width=7, length=32, seed=1)
    path = write_dm_spectrum_image(tmp_path / "si.dm4", c.cube.astype(np.float32), energy_scale=0.25,
                                   energy_origin=-40.0, version=4)
    data = load_signals(str(path), 0)
    assert data.meta["grid_shape"] == [9, 7] and data.images.shape == (63, 1, 1, 32)
    np.testing.assert_allclose(data.images[:, 0, 0] * data.meta["intensity_scale"], c.cube.reshape(63, 32), atol=1e-6)
    assert (data.meta["sample_size"], data.meta["sample_offset"], data.meta["sample_unit"]) == (0.25, 10.0, "eV")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "read as 1-D signals with --signal-axis 0" in out and "Energy loss 32 x 0.25 eV" in out
    assert "frames" not in out  # not an image stack along the energy
    assert main(["patches", str(path), "--window", "8", "--out", str(tmp_path / "p.npz")]) == 2
    assert "holds no 2-D image" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["train", "--model", "rvae", "--data", str(path), "--signal-axis", "0", "--epochs", "1", "--latent-dim",
                 "2", "--hidden", "8", "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["encode", str(run), "--data", str(path), "--signal-axis", "0", "--out", str(tmp_path / "e.npz")]) == 0
    assert "shifts also in eV (sample size 0.25 eV)" in capsys.readouterr().out
    with np.load(tmp_path / "e.npz", allow_pickle=False) as f:
        np.testing.assert_allclose(f["shift_phys"], f["shift"] * 0.25)
        assert str(f["unit"]) == "eV"
    assert main(["map", str(run), "--cube", str(path), "--signal-axis", "0", "--out", str(tmp_path / "maps")]) == 0
    assert "mapped 9x7 spectra" in capsys.readouterr().out
    # another axis reads it, but says where the spectra run; a signal index the file lacks is refused
    with pytest.warns(UserWarning, match=r"--signal-axis 1 reads along y 9 x 1 nm; the file's spectra run along axis 0 "
                                          r"\(Energy loss 32 x 0.25 eV\): --signal-axis 0"):
        load_signals(str(path), 1)
    with pytest.raises(AffineVAEError, match=r"--signal-axis 2 is x 7 x 1 nm, too short for signals; the file's spectra "
                                             r"run along axis 0 \(Energy loss 32 x 0.25 eV\): --signal-axis 0"):
        load_signals(str(path), 2)
    assert main(["info", str(path), "--key", "1"]) == 2
    assert "--key must be a signal index 0..0, got '1'" in capsys.readouterr().err
    # an uncalibrated energy axis: still a spectrum image (its format tag), the energy first
    bare = write_dm_spectrum_image(tmp_path / "bare.dm3", c.cube.astype(np.float32), energy_unit="")
    assert main(["info", str(bare)]) == 0
    assert "read as 1-D signals with --signal-axis 0" in capsys.readouterr().out
    assert "sample_unit" not in load_signals(str(bare), 0).meta


def test_pixels_that_are_not_square_and_transposed_mrc_sections(tmp_path):
    """TIFF (OME, ImageJ) and MRC files whose pixels are not square took the X size silently (FITS refused it with
    a warning): no pixel size now, in one warning; an MRC whose sections are stored transposed (MAPC/MAPR 2/1)
    was read transposed: it is turned back, and other axis orders are one line."""
    tifffile = pytest.importorskip("tifffile")
    mrcfile = pytest.importorskip("mrcfile")
    img = np.zeros((40, 56), np.float32)
    img[10, 44] = 1.0
    stack = np.stack([img] * 3)
    tifffile.imwrite(tmp_path / "ome.ome.tif", stack, ome=True, metadata={
        "axes": "TYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.5, "PhysicalSizeXUnit": "nm", "PhysicalSizeYUnit": "nm"})
    tifffile.imwrite(tmp_path / "square.ome.tif", stack, ome=True, metadata={
        "axes": "TYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25, "PhysicalSizeXUnit": "nm", "PhysicalSizeYUnit": "nm"})
    tifffile.imwrite(tmp_path / "ij.tif", stack, imagej=True, resolution=(5.0, 2.5), metadata={"unit": "um", "axes": "TYX"})
    with mrcfile.new(tmp_path / "aniso.mrc") as m:
        m.set_data(img)
        m.voxel_size = (1.0, 0.8, 0.9)
    for name, size in (("ome.ome.tif", "0.25 x 0.5 nm"), ("ij.tif", "0.2 x 0.4 µm"), ("aniso.mrc", "1 x 0.8 Å")):
        with pytest.warns(UserWarning, match=rf"{name}: no pixel size taken: its pixels are not square \({size}\)"):
            assert open_stack(str(tmp_path / name)).pixel_size is None
    assert open_stack(str(tmp_path / "square.ome.tif")).pixel_size == PixelSize(0.25, "nm")
    with mrcfile.new(tmp_path / "perm.mrc") as m:
        m.set_data(img.T.copy())
        m.header.mapc, m.header.mapr, m.header.maps = 2, 1, 3
    frame = open_stack(str(tmp_path / "perm.mrc")).read(0, 1)[0].reshape(40, 56)
    assert np.unravel_index(np.argmax(frame), frame.shape) == (10, 44)
    with mrcfile.new(tmp_path / "perm2.mrc") as m:
        m.set_data(img.T.copy())
        m.header.mapc, m.header.mapr, m.header.maps = 3, 1, 2
    with pytest.raises(AffineVAEError, match=r"perm2.mrc: its axes are stored in the order MAPC/MAPR/MAPS = 3/1/2"):
        open_stack(str(tmp_path / "perm2.mrc"))


def test_berkeley_emd_image_stacks_and_spectrum_images(tmp_path, capsys):
    """rosettasciio's Berkeley (NCEM) reader marks no axis of a 3-D signal as navigation: an image stack was
    refused ('holds no 2-D image') and a spectrum image got no --signal-axis hint. The axes' units tell them apart."""
    emd = pytest.importorskip("rsciio.emd")
    pytest.importorskip("dask")
    md = {"General": {"title": "t"}, "Signal": {"signal_type": ""}}

    def ax(name, size, scale, units, nav):
        return {"name": name, "size": size, "scale": scale, "offset": 0.0, "units": units, "navigate": nav}

    frames = np.random.default_rng(0).random((6, 40, 56)).astype(np.float32)
    frames[:, 10, 44] = 5.0
    emd.file_writer(str(tmp_path / "stack.emd"), {"data": frames, "axes": [
        ax("frame", 6, 1, "", True), ax("y", 40, 0.12, "nm", False), ax("x", 56, 0.12, "nm", False)],
        "metadata": md, "original_metadata": {}})
    source = open_stack(str(tmp_path / "stack.emd"))
    assert source.n_frames == 6 and source.pixel_size == PixelSize(0.12, "nm")
    first = np.asarray(source.read(0, 1)[0]).reshape(40, 56)
    assert np.unravel_index(np.argmax(first), first.shape) == (10, 44)
    spectra = np.random.default_rng(1).random((12, 14, 64)).astype(np.float32)
    emd.file_writer(str(tmp_path / "si.emd"), {"data": spectra, "axes": [
        ax("y", 12, 0.5, "nm", True), ax("x", 14, 0.5, "nm", True), ax("Energy", 64, 0.5, "eV", False)],
        "metadata": md, "original_metadata": {}})
    assert main(["info", str(tmp_path / "si.emd")]) == 0
    assert "read as 1-D signals with --signal-axis 2" in capsys.readouterr().out


def test_a_zarr_key_that_names_no_array_is_said_as_for_npz(tmp_path):
    """--key zz on a group of arrays a, b said 'name the array with --key'; on a single-array store it was ignored."""
    zarr = pytest.importorskip("zarr")
    a = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    group = zarr.open_group(str(tmp_path / "grp.zarr"), mode="w")
    for name in ("a", "b"):
        group.create_array(name, shape=a.shape, dtype="f4")[:] = a
    one = zarr.open(str(tmp_path / "one.zarr"), mode="w", shape=a.shape, dtype="f4")
    one[:] = a
    with pytest.raises(AffineVAEError, match=r"grp.zarr: no array 'zz'; arrays: a, b"):
        open_stack(tmp_path / "grp.zarr", key="zz")
    with pytest.raises(AffineVAEError, match=r"one.zarr: --key 'zz' names an array in a Zarr group; this store is a "
                                             "single array"):
        open_stack(tmp_path / "one.zarr", key="zz")
    with open_stack(tmp_path / "grp.zarr", key="b") as src:
        assert src.image_shape == (32, 32)
