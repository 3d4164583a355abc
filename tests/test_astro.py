"""FITS files (astronomy, extra [astro]): a cube of cut-outs as training data, an image as a stack."""

from __future__ import annotations

import argparse
import math
import sys
import warnings

import numpy as np
import pytest

from affinevae.cli import main
from affinevae.data.files import load_images
from affinevae.data.stacks import open_stack
from affinevae.errors import AffineVAEError
from affinevae.runs import Run

fits = pytest.importorskip("astropy.io.fits")


def _cube(n=40, size=16, seed=0):
    """Galaxy-like cut-outs: an elongated blob turned at random, sky noise, float32 around zero."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    out = np.empty((n, size, size), np.float32)
    for i, t in enumerate(rng.uniform(-np.pi, np.pi, n)):
        u, v = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
        out[i] = 50.0 * np.exp(-(u / 4.0) ** 2 - (v / 1.5) ** 2) + rng.normal(0, 2.0, (size, size))
    return out


def test_a_fits_cube_is_training_data_by_hdu(tmp_path, capsys):
    """A FITS cube (N, H, W) of big-endian floats loads as N images, scaled as any float data; --key
    names the image HDU by EXTNAME or index (default: the first image HDU with data); -n reads the
    first images only, bit for bit the whole file's; train takes it."""
    cube = _cube()
    fits.writeto(tmp_path / "cut.fits", cube)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(cube, name="SCI"),
                  fits.BinTableHDU.from_columns([fits.Column(name="flux", format="E", array=np.zeros(3))])]
                 ).writeto(tmp_path / "multi.fits")
    with pytest.warns(UserWarning, match="min-max scaling"):
        data = load_images(str(tmp_path / "cut.fits"))
    assert data.images.shape == (40, 1, 16, 16) and data.images.dtype == np.float32
    np.testing.assert_allclose(data.images[:, 0], (cube - cube.min()) / (cube.max() - cube.min()), atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key in (None, "SCI", "sci", "1"):
            np.testing.assert_array_equal(load_images(str(tmp_path / "multi.fits"), key=key).images, data.images)
        np.testing.assert_array_equal(load_images(str(tmp_path / "cut.fits"), n=7).images, data.images[:7])
    with pytest.raises(AffineVAEError, match=r"multi.fits: no HDU named 'RAW'; the file holds 0:PRIMARY\(PrimaryHDU\), "
                                              r"1:SCI\(ImageHDU 40 16 16\), 2:-\(BinTableHDU\)"):
        load_images(str(tmp_path / "multi.fits"), key="RAW")
    with pytest.raises(AffineVAEError, match="HDU '2' is not an image of 2 or more axes"):
        load_images(str(tmp_path / "multi.fits"), key="2")
    assert main(["train", "--model", "rvae", "--data", str(tmp_path / "multi.fits"), "--key", "SCI", "--latent-dim",
                 "2", "--invariances", "rotation", "--hidden", "16", "--epochs", "1", "--likelihood", "gaussian",
                 "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert "trained rvae on 36 images (" in capsys.readouterr().out


def test_a_fits_image_is_a_stack_for_patches(tmp_path):
    """A 2-D FITS image (a field) opens as one frame for patches and map (open_stack by suffix)."""
    field = np.zeros((64, 64), np.float32)
    field[::8, ::8] = 1.0
    fits.writeto(tmp_path / "field.fits", field)
    with open_stack(str(tmp_path / "field.fits")) as src:
        assert (src.n_frames, tuple(src.frame_shape)) == (1, (64, 64)) and src.pixel_size is None
        np.testing.assert_array_equal(src.read(0, 1)[0], field)
    assert main(["patches", str(tmp_path / "field.fits"), "--window", "8", "--out", str(tmp_path / "p.npz"),
                 "--no-progress"]) == 0
    with np.load(tmp_path / "p.npz") as f:
        assert len(f["patches"]) > 20


def test_a_fits_pixel_scale_on_the_sky_becomes_the_stacks_pixel_size(tmp_path, capsys):
    """A celestial WCS (CDELT, or a rotated CD matrix, in degrees) or a PIXSCALE keyword gives the pixel size in
    arcsec, which patches and map carry (maps in arcsec); non-square pixels or a plain header give none."""
    from affinevae.data.astro import sky_pixel_size
    from affinevae.units import PixelSize, parse_pixel_size

    def header(**cards):
        h = fits.Header()
        h.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0, "CRPIX1": 32.0,
                  "CRPIX2": 32.0, **cards})
        return h
    assert sky_pixel_size(header(CDELT1=-0.2 / 3600, CDELT2=0.2 / 3600)) == PixelSize(0.2, "arcsec")
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    cd = header(CD1_1=-0.396 / 3600 * c, CD1_2=0.396 / 3600 * s, CD2_1=0.396 / 3600 * s, CD2_2=0.396 / 3600 * c)
    assert sky_pixel_size(cd).value == pytest.approx(0.396, rel=1e-9)  # turned by 30 degrees: the same scale
    assert sky_pixel_size(header(CDELT1=-0.2 / 3600, CDELT2=0.3 / 3600)) is None  # not square
    assert sky_pixel_size(fits.Header({"PIXSCALE": 0.262})) == PixelSize(0.262, "arcsec")
    assert sky_pixel_size(fits.Header({"OBJECT": "M51"})) is None and sky_pixel_size(fits.Header({"SECPIX": "x"})) is None
    # celestial axes without a written scale: astropy's default of 1 degree is not taken; the keyword is
    assert sky_pixel_size(header(PIXSCALE=0.2)) == PixelSize(0.2, "arcsec")
    assert sky_pixel_size(header(CDELT1="x", CDELT2=0.2 / 3600)) is None
    assert sky_pixel_size(fits.Header({"PIXSCALE": True})) is None  # a flag, not a scale
    assert sky_pixel_size(fits.Header({"PIXSCALE": 0, "SECPIX": 0.3})) == PixelSize(0.3, "arcsec")
    assert sky_pixel_size(header(CD1_1=1e-4, CD1_2=1e-4, CD2_1=1e-4, CD2_2=1e-4)) is None  # singular: no area
    # a scale the header gives but that is not taken is said, for a file (where=)
    with pytest.warns(UserWarning, match=r"^x.fits: no pixel size taken: its pixels are not square \(0.2 x 0.3 arcsec\)"):
        assert sky_pixel_size(header(CDELT1=-0.2 / 3600, CDELT2=0.3 / 3600), where="x.fits") is None
    with pytest.warns(UserWarning, match=r"^y.fits: no pixel size taken: its celestial WCS maps no area"):
        assert sky_pixel_size(header(CD1_1=1e-4, CD1_2=1e-4, CD2_1=1e-4, CD2_2=1e-4), where="y.fits") is None
    field = np.zeros((64, 64), np.float32)
    field[4::8, 4::8] = 1.0
    fits.writeto(tmp_path / "field.fits", field, header=header(CDELT1=-0.2 / 3600, CDELT2=0.2 / 3600))
    with open_stack(str(tmp_path / "field.fits")) as src:
        assert src.pixel_size == PixelSize(0.2, "arcsec") and src.pixel_size.dimension == "angle"
    assert main(["patches", str(tmp_path / "field.fits"), "--window", "8", "--out", str(tmp_path / "p.npz"),
                 "--no-progress"]) == 0
    assert "pixel size 0.2 arcsec" in capsys.readouterr().out
    with np.load(tmp_path / "p.npz") as f:
        assert float(f["pixel_size"]) == pytest.approx(0.2) and str(f["unit"]) == "arcsec"
    # given by hand in any angular unit; lengths and angles never convert into each other
    assert parse_pixel_size('0.2"') == parse_pixel_size("0.2 arcsec") == PixelSize(200, "mas").to("arcsec")
    assert parse_pixel_size("0.2 arcsec/pix") == parse_pixel_size("0.2asec") == PixelSize(np.float64(0.2), "arcsec")
    assert PixelSize(np.float32(0.2), "arcsec").value == pytest.approx(0.2) and PixelSize(np.int64(2), "nm").value == 2.0
    with pytest.raises(AffineVAEError, match=r"--pixel-size: pixel size must be a finite number > 0, got -1.0"):
        parse_pixel_size("-1arcsec")
    assert parse_pixel_size("1 NM") == PixelSize(1, "nm") and parse_pixel_size("2 ARCSEC") == PixelSize(2, "arcsec")
    for capital in ("1 Mm", "1 PM"):  # a megametre, a petametre: never read as mm or pm
        with pytest.raises(AffineVAEError, match="unknown unit"):
            parse_pixel_size(capital)
    assert parse_pixel_size("1.5arcmin").to("deg").value == pytest.approx(0.025)
    with pytest.raises(AffineVAEError, match=r"a pixel size of 0.2 arcsec \(an angle\) has no value in nm \(a length\)"):
        PixelSize(0.2, "arcsec").to("nm")


def test_fits_files_read_together_with_others_and_their_scales(tmp_path):
    """Big-endian FITS pixels read beside native float32 ones (one pixel type); scales within 0.1 % are one; a
    file without a scale takes the others' and says so; an angle beside a length is refused in one line."""
    from affinevae.cli.image_options import open_images
    from affinevae.units import PixelSize

    field = np.zeros((32, 32), np.float32)
    field[8::8, 8::8] = 1.0
    cards = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CDELT2": 0.2 / 3600}
    fits.writeto(tmp_path / "a.fits", field, header=fits.Header({**cards, "CDELT1": -0.2 / 3600}))
    fits.writeto(tmp_path / "b.fits", field, header=fits.Header({**cards, "CDELT1": -0.20002 / 3600}))
    fits.writeto(tmp_path / "plain.fits", field)
    np.save(tmp_path / "n.npy", field)
    import mrcfile
    with mrcfile.new(tmp_path / "m.mrc") as f:
        f.set_data(field)
        f.voxel_size = 2.0
    args = argparse.Namespace(stretch=None, fill_nan=False, invert=False, key=None, level=None)
    with open_images(args, [str(tmp_path / "a.fits"), str(tmp_path / "b.fits"), str(tmp_path / "n.npy")]) as src:
        assert src.n_frames == 3 and src.pixel_size == PixelSize(0.2, "arcsec") and src.dtype == np.float32
    with pytest.warns(UserWarning, match=r"plain.fits records no pixel size: it takes .*a.fits's, 0.2 arcsec"):
        open_images(args, [str(tmp_path / "a.fits"), str(tmp_path / "plain.fits")]).close()
    with pytest.raises(AffineVAEError, match=r"m.mrc: pixel size 2 Å, but .*a.fits has 0.2 arcsec"):
        open_images(args, [str(tmp_path / "a.fits"), str(tmp_path / "m.mrc")])


def test_broken_fits_files_are_one_line_each(tmp_path, capsys, monkeypatch):
    """A truncated file, one that is no FITS, one with tables only, an empty one; astropy missing."""
    fits.writeto(tmp_path / "cut.fits", _cube())
    whole = (tmp_path / "cut.fits").read_bytes()
    (tmp_path / "short.fits").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "junk.fits").write_bytes(b"not a telescope file" * 200)
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column(name="x", format="E",
                                                                                array=np.zeros(3))])]
                 ).writeto(tmp_path / "table.fits")
    (tmp_path / "empty.fits").write_bytes(b"")
    # a header declaring 40 TB in a 6 kB file: the system refused the seek ("[Errno 22] Invalid argument")
    huge = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 3), ("NAXIS1", 100000), ("NAXIS2", 100000),
                        ("NAXIS3", 1000)])
    (tmp_path / "huge.fits").write_bytes(huge.tostring().encode() + b"\0" * 2880)
    ext = fits.Header([("XTENSION", "IMAGE"), ("BITPIX", -32), ("NAXIS", 3), ("NAXIS1", 100000), ("NAXIS2", 100000),
                       ("NAXIS3", 1000), ("PCOUNT", 0), ("GCOUNT", 1)])  # the same in an extension's header
    primary = fits.PrimaryHDU(np.zeros((4, 4), np.float32))
    (tmp_path / "hugext.fits").write_bytes(primary.header.tostring().encode() + np.zeros((4, 4), ">f4").tobytes()
                                           + b"\0" * (2880 - 64) + ext.tostring().encode() + b"\0" * 2880)
    for name, match in [("short.fits", r"short.fits: truncated or damaged: File may have been truncated"),
                        ("huge.fits", r"huge.fits: truncated or damaged: its primary header declares \(1000, 100000, "
                                      r"100000\) values of 4 bytes \(40000000000000 bytes\), the file holds 5760 bytes"),
                        ("hugext.fits", r"hugext.fits: truncated or damaged: its header of HDU 1 declares \(1000, "
                                        r"100000, 100000\) values of 4 bytes"),
                        ("junk.fits", "junk.fits: cannot read FITS"),
                        ("table.fits", "table.fits: no image HDU of 2 or more axes"),
                        ("empty.fits", "empty.fits: empty file")]:
        with pytest.raises(AffineVAEError, match=match):
            load_images(str(tmp_path / name))
        assert main(["train", "--model", "vae", "--data", str(tmp_path / name), "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("affinevae: error:") and "\n" not in err and name in err
    monkeypatch.setitem(sys.modules, "astropy.io.fits", None)  # as if the extra were not installed
    with pytest.raises(AffineVAEError, match=r"cut.fits: reading FITS files needs the Python package 'astropy' "
                                              r"\(pip install \"affinevae\[astro\]\"\)"):
        load_images(str(tmp_path / "cut.fits"))


def test_scaled_and_multiband_fits_cubes_load_as_astropy_reads_them(tmp_path):
    """FITS keeps 16-bit unsigned data as int16 with BZERO 32768 and may scale with BSCALE: astropy
    applies both (they could not be memory mapped, and were refused as damaged); five-band cut-outs
    (N, 5, H, W) are N images of five channels (the frame reader takes at most four); -n takes the
    same path for them."""
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 65535, (6, 8, 8)).astype(np.uint16)
    fits.PrimaryHDU(counts).writeto(tmp_path / "u16.fits")
    assert fits.getheader(tmp_path / "u16.fits")["BZERO"] == 32768
    np.testing.assert_allclose(load_images(str(tmp_path / "u16.fits")).images[:, 0], counts / 65535.0, rtol=1e-6)
    hdu = fits.PrimaryHDU(rng.integers(-100, 100, (6, 8, 8)).astype(np.int16))
    hdu.header["BSCALE"], hdu.header["BZERO"] = 0.5, 10.0
    hdu.writeto(tmp_path / "scaled.fits")
    raw = fits.getdata(tmp_path / "scaled.fits")  # astropy's scaled values: 0.5 * stored + 10
    with pytest.warns(UserWarning, match=r"values span \[-?\d"):
        got = load_images(str(tmp_path / "scaled.fits")).images[:, 0]
    np.testing.assert_allclose(got, (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-6)
    bands = rng.random((7, 5, 8, 8)).astype(np.float32)
    fits.writeto(tmp_path / "ugriz.fits", bands)
    data = load_images(str(tmp_path / "ugriz.fits"))
    assert data.images.shape == (7, 5, 8, 8)
    np.testing.assert_array_equal(data.images, bands)
    np.testing.assert_array_equal(load_images(str(tmp_path / "ugriz.fits"), n=3).images, bands[:3])


def test_a_fits_file_cut_inside_a_later_header_says_so(tmp_path):
    """Cut short inside the image extension's header: truncated, not 'no image HDU' (astropy had
    stopped at the primary HDU quietly)."""
    cube = _cube(n=4)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(cube, name="SCI")]).writeto(tmp_path / "whole.fits")
    (tmp_path / "cut.fits").write_bytes((tmp_path / "whole.fits").read_bytes()[:2880 + 1000])
    for key in (None, "SCI"):
        with pytest.raises(AffineVAEError, match=r"cut.fits: truncated or damaged: Error validating header for HDU #1"):
            load_images(str(tmp_path / "cut.fits"), key=key)


def test_a_closed_fits_or_mrc_stack_holds_no_file_open(tmp_path):
    """Leaving ``with open_stack(...)`` closes the file and drops its memory map (the map held the
    file open until the source was garbage-collected)."""
    import os

    mrcfile = pytest.importorskip("mrcfile")
    fits.writeto(tmp_path / "s.fits", _cube(n=4))
    with mrcfile.new(tmp_path / "s.mrcs") as m:
        m.set_data(_cube(n=4))

    def open_files():
        return len(os.listdir("/proc/self/fd"))

    for name in ("s.fits", "s.mrcs"):
        before = open_files()
        with open_stack(str(tmp_path / name)) as src:
            src.read(0, 2)
            assert open_files() > before
        assert open_files() == before, name


def test_several_image_hdus_need_a_key_and_all_stacks_one_cutout_per_hdu(tmp_path, capsys):
    """A cut-out service's file (one 2-D cut-out per HDU) trained on its first cut-out only ("trained
    on 1 image"), and a science image beside its weight map gave whichever came first: several image
    HDUs now need --key, and --key all stacks one-cut-out HDUs as training images (not as a frame)."""
    rng = np.random.default_rng(0)
    cuts = rng.random((12, 16, 16)).astype(np.float32)
    fits.HDUList([fits.PrimaryHDU(), *[fits.ImageHDU(c.astype(">f4")) for c in cuts]]).writeto(tmp_path / "cuts.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(cuts[0], name="WHT"), fits.ImageHDU(cuts[1], name="SCI")]
                 ).writeto(tmp_path / "field.fits")
    with pytest.raises(AffineVAEError, match=r"cuts.fits: holds 12 image HDUs; name one with --key \(EXTNAME or index\) "
                                              r"or --key all to stack them as images .*, \.\.\. 5 more$"):
        load_images(str(tmp_path / "cuts.fits"))
    data = load_images(str(tmp_path / "cuts.fits"), key="all")
    np.testing.assert_array_equal(data.images[:, 0], cuts)
    np.testing.assert_array_equal(load_images(str(tmp_path / "cuts.fits"), key="ALL", n=5).images, data.images[:5])
    with pytest.raises(AffineVAEError, match=r"field.fits: holds 2 image HDUs; name one with --key \(EXTNAME or "
                                              r"index\); the file holds"):
        open_stack(str(tmp_path / "field.fits"))  # a frame: no 'all' offered
    with pytest.raises(AffineVAEError, match="a frame for patches or map is one HDU"):
        open_stack(str(tmp_path / "field.fits"), key="all")
    with open_stack(str(tmp_path / "field.fits"), key="SCI") as src:
        np.testing.assert_array_equal(src.read_raw(0, 1)[0], cuts[1])
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(cuts[0]), fits.ImageHDU(cuts[:2, :8])]).writeto(tmp_path / "mix.fits")
    with pytest.raises(AffineVAEError, match="each hold one 2-D cut-out of one shape"):
        load_images(str(tmp_path / "mix.fits"), key="all")
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "cuts.fits"), "--key", "all", "--latent-dim", "2",
                 "--hidden", "8", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert "trained vae on " in capsys.readouterr().out and Run(tmp_path / "run").meta["key"] == "all"
    assert main(["info", str(tmp_path / "run")]) == 0
    assert "cuts.fits, key all" in capsys.readouterr().out  # info says which HDUs it trained on
    # info on such a file lists its HDUs (it used to refuse), and reads the stack --key all names
    assert main(["info", str(tmp_path / "field.fits")]) == 0
    out = capsys.readouterr().out
    assert "1:WHT(ImageHDU 16 16), 2:SCI(ImageHDU 16 16)" in out and "several image HDUs: --key names one" in out
    assert "frames" not in out
    assert main(["info", str(tmp_path / "cuts.fits"), "--key", "all"]) == 0
    out = capsys.readouterr().out
    assert "12 of 16 x 16 pixels" in out and "pixel size" not in out  # (none recorded)
    # cut-outs that each record a scale keep it (an audit: --key all dropped it); scales that differ keep none
    def cut(c, scale):
        hdu = fits.ImageHDU(c)
        hdu.header["PIXSCALE"] = scale
        return hdu

    fits.HDUList([fits.PrimaryHDU(), *[cut(c, 0.15) for c in cuts[:3]]]).writeto(tmp_path / "scaled.fits")
    assert load_images(str(tmp_path / "scaled.fits"), key="all").meta["pixel_size"] == pytest.approx(0.15)
    assert main(["info", str(tmp_path / "scaled.fits"), "--key", "all"]) == 0
    assert "pixel size  0.15 arcsec" in capsys.readouterr().out
    fits.HDUList([fits.PrimaryHDU(), cut(cuts[0], 0.15), cut(cuts[1], 0.3)]).writeto(tmp_path / "two.fits")
    with pytest.warns(UserWarning, match=r"two.fits: its cut-outs record different pixel scales \(HDU 1 0.15 arcsec, "
                                         r"HDU 2 0.3 arcsec\): none is kept"):
        assert "pixel_size" not in load_images(str(tmp_path / "two.fits"), key="all").meta
    assert main(["info", str(tmp_path / "field.fits") + "[SCI]"]) == 0
    out = capsys.readouterr().out
    assert "1 of 16 x 16 pixels" in out and f"values {cuts[1].min():.6g}" in out
    # HDUs sharing a name: EXTNAME,EXTVER picks one (the name alone is refused, naming the versions)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(cuts[0], name="SCI", ver=1), fits.ImageHDU(cuts[1], name="SCI", ver=2)]
                 ).writeto(tmp_path / "dup.fits")
    with open_stack(str(tmp_path / "dup.fits") + "[SCI,2]") as src:
        np.testing.assert_array_equal(src.read_raw(0, 1)[0], cuts[1])
    with pytest.raises(AffineVAEError, match=r"2 HDUs are named 'SCI': name one with its version \(SCI,1, SCI,2\)"):
        open_stack(str(tmp_path / "dup.fits"), key="SCI")


def test_gzipped_and_fpacked_fits_and_the_bracket_hdu_notation(tmp_path):
    """.fits.gz and .fits.fz were "unsupported file type" although astropy reads both, and the
    astronomers' file.fits[SCI] was "no file matches this pattern"."""
    import gzip

    cube = _cube()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(cube, name="SCI")]).writeto(tmp_path / "c.fits")
    (tmp_path / "c.fits.gz").write_bytes(gzip.compress((tmp_path / "c.fits").read_bytes()))
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(cube, name="SCI", compression_type="GZIP_2",
                                                       quantize_level=0.0)]).writeto(tmp_path / "c.fits.fz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = load_images(str(tmp_path / "c.fits"), key="SCI")
        for spec, key in [("c.fits.gz", "SCI"), ("c.fits.fz", None), ("c.fits[SCI]", None), ("c.fits[1]", None),
                          ("c.fits.gz[sci]", None)]:
            np.testing.assert_array_equal(load_images(str(tmp_path / spec), key=key).images, whole.images, err_msg=spec)
        with open_stack(str(tmp_path / "c.fits[SCI]")) as src:
            assert src.n_frames == len(cube)
    with pytest.raises(AffineVAEError, match=r"c.fits\[SCI\]: the HDU is named twice, \[SCI\] and --key 1"):
        load_images(str(tmp_path / "c.fits[SCI]"), key="1")


def test_a_folder_or_glob_of_single_cutout_fits_files_is_training_data(tmp_path, capsys):
    """An astronomer's 900 cut-outs, one FITS file each (as archives deliver them), were refused as a folder
    ('holds no png/jpg/...') and as a glob ('must be all .npy or all image files'), though `info` listed them:
    they load in name order, named by file, with the files' common sky scale, and train takes the folder."""
    cube = _cube(n=30, size=16)
    folder = tmp_path / "cutouts"
    folder.mkdir()
    h = fits.Header({"PIXSCALE": 0.262})
    for i, image in enumerate(cube):
        fits.writeto(folder / f"gal_{i:03d}.fits", image, h)
    (folder / "README.txt").write_text("not an image")
    data = load_images(str(folder))
    assert data.images.shape == (30, 1, 16, 16) and data.names[0] == "gal_000.fits" and data.names[-1] == "gal_029.fits"
    fits.writeto(tmp_path / "cube.fits", cube)
    np.testing.assert_array_equal(data.images, load_images(str(tmp_path / "cube.fits")).images)
    assert (data.meta["pixel_size"], data.meta["unit"]) == (0.262, "arcsec")
    globbed = load_images(str(folder / "gal_01*.fits"))
    assert len(globbed) == 10 and globbed.names[0].endswith("gal_010.fits")
    assert main(["train", "--model", "vae", "--data", str(folder), "--latent-dim", "2", "--hidden", "16", "--channels",
                 "4,8", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    fits.writeto(folder / "odd.fits", np.zeros((12, 12), np.float32))
    with pytest.raises(AffineVAEError, match=r"odd.fits: image size 12x12 \(HxW\) differs from 16x16 of gal_000.fits"):
        load_images(str(folder))
