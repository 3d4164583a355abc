"""Bad options of ``sample``, ``plot`` and ``encode``: refused in one line (exit 2, nothing written),
memory-heavy requests before allocation; the valid forms still work."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import affinevae as av
from affinevae.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny untrained vae saved as a model directory (the commands accept one)."""
    out = tmp_path_factory.mktemp("models") / "vae"
    av.build_model("vae", image_shape=[1, 28, 28], latent_dim=2, hidden=[16], channels=[4, 8]).save(out)
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Ten 28x28 images in [0, 1] as an .npy file."""
    path = tmp_path_factory.mktemp("data") / "imgs.npy"
    np.save(path, np.random.default_rng(0).random((10, 28, 28), dtype=np.float32))
    return path


def _refused(argv, capsys, option: str, out: Path, match: str = "") -> str:
    """Run ``argv``: exit 2, one stderr line 'affinevae: error: ...' naming ``option`` (and ``match``),
    no traceback, ``out`` not written."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("affinevae: error:"), err
    assert option in lines[0] and match in lines[0], err
    assert "Traceback" not in err
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*"))  # no temporary left either
    return lines[0]


# ------------------------------------------------------------------ sample
def test_sample_refuses_too_many_samples_before_decoding(model_dir, tmp_path, capsys):
    out = tmp_path / "s.png"
    line = _refused(["sample", model_dir, "-n", "100000000", "--out", out, "--max-memory", "1G"], capsys,
                    "-n 100000000", out, "would need")
    assert "memory available" in line


def test_sample_refuses_huge_upscale_before_resizing(model_dir, tmp_path, capsys):
    out = tmp_path / "s.png"
    _refused(["sample", model_dir, "-n", "4", "--upscale", "100000", "--out", out, "--max-memory", "1G"], capsys,
             "--upscale 100000", out, "would need")


@pytest.mark.parametrize("upscale", ["0", "-2"])
def test_sample_refuses_upscale_below_one(model_dir, tmp_path, capsys, upscale):
    out = tmp_path / "s.png"
    _refused(["sample", model_dir, "-n", "4", "--upscale", upscale, "--out", out], capsys, "--upscale", out, upscale)


def test_sample_refuses_class_for_a_plain_vae(model_dir, tmp_path, capsys):
    out = tmp_path / "s.png"
    line = _refused(["sample", model_dir, "-n", "4", "--class", "3", "--out", out], capsys, "--class", out,
                    "class-conditional")
    assert "'vae'" in line and "cvae" in line and "jvae" in line


def test_sample_takes_a_class_by_the_models_own_rule(tmp_path, capsys):
    """``--class`` follows ``renders_classes`` and a class count: an AVAE around a joint model renders
    the class it is given (column k of the cycling grid is class k); a regression model, which renders
    continuous targets, refuses a class."""
    opts = dict(image_shape=[1, 16, 16], latent_dim=2, hidden=[16], channels=[4, 8])
    avae = av.build_model("avae", inner="jrvae", num_classes=3, seed=0, **opts)
    avae.save(tmp_path / "avae-j")
    for cls in ("0", "2"):
        out = tmp_path / f"c{cls}.png"
        assert main(["sample", str(tmp_path / "avae-j"), "-n", "2", "--class", cls, "--upscale", "1",
                     "--out", str(out)]) == 0
    # the two classes render differently from the same seed: the class reached the decoder
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "c0.png")), np.asarray(Image.open(tmp_path / "c2.png")))
    line = _refused(["sample", tmp_path / "avae-j", "-n", "2", "--class", "3", "--out", tmp_path / "c3.png"],
                    capsys, "--class", tmp_path / "c3.png", "[0, 2]")
    av.build_model("ssregrvae", seed=0, **opts).save(tmp_path / "reg")
    line = _refused(["sample", tmp_path / "reg", "-n", "2", "--class", "0", "--out", tmp_path / "r.png"],
                    capsys, "--class", tmp_path / "r.png", "class-conditional")
    assert "'ssregrvae'" in line


@pytest.mark.parametrize("name", ["s.npz", "s.txt", "samples"])
def test_sample_refuses_an_output_that_is_no_image_format(model_dir, tmp_path, capsys, name):
    out = tmp_path / name
    _refused(["sample", model_dir, "-n", "4", "--out", out], capsys, "--out", out, ".png")


@pytest.mark.parametrize("name,fmt", [("s.png", "PNG"), ("s.jpg", "JPEG"), ("s.JPEG", "JPEG"), ("s.tif", "TIFF"),
                                      ("s.tiff", "TIFF")])
def test_sample_writes_the_format_its_extension_names(model_dir, tmp_path, capsys, name, fmt):
    out = tmp_path / name
    assert main(["sample", str(model_dir), "-n", "4", "--upscale", "2", "--out", str(out)]) == 0
    with Image.open(out) as img:
        assert img.format == fmt
        assert img.size == (2 * 59, 2 * 59)  # 2x2 tiles of 28 + 3 one-pixel pads, upscaled twice
        grid = np.asarray(img)
    if fmt == "TIFF":  # compressed with deflate, which tifffile reads without imagecodecs
        import tifffile

        with tifffile.TiffFile(out) as tif:
            assert tif.pages[0].compression.name == "ADOBE_DEFLATE"
        from affinevae.data.files import load_images

        np.testing.assert_array_equal(load_images(str(out)).images[0, 0], grid / np.float32(255))


def test_sample_upscale_one_and_seed_unchanged(model_dir, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for out in (a, b):
        assert main(["sample", str(model_dir), "-n", "9", "--upscale", "1", "--seed", "3", "--out", str(out)]) == 0
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    assert Image.open(a).size == (88, 88)


# ------------------------------------------------------------------ plot
@pytest.mark.parametrize("dpi", ["0", "-5", "9", "1201", "100000"])
def test_plot_refuses_dpi_out_of_range(model_dir, tmp_path, capsys, dpi):
    out = tmp_path / "p.png"
    _refused(["plot", model_dir, "samples", "--dpi", dpi, "--out", out], capsys, "--dpi", out, dpi)


@pytest.mark.parametrize("kind,option,value,match", [
    ("samples", "--show", "1000000000", "[1, 1024] images"), ("reconstructions", "--show", "0", "[1, 1024] images"),
    ("manifold", "--d", "100000", "[2, 128] images per side"), ("manifold", "--d", "1", "[2, 128]"),
    ("samples", "--per-class", "10000000", "[1, 256] samples per class"),
    ("interpolation", "--steps", "99999999", "[2, 256] interpolation steps"),
    ("rotation-histograms", "--bins", "100000", "[2, 720] angle bins"),
    ("denoising", "--noise", "nan", "finite"), ("denoising", "--noise", "-1", ">= 0"),
    ("manifold", "--angle", "inf", "finite number of degrees"),
    ("manifold", "--angle", "1000", "within -360..360 degrees")])  # not a message in radians
def test_plot_refuses_kind_options_out_of_range_up_front(model_dir, tmp_path, capsys, monkeypatch, kind, option,
                                                          value, match):
    import affinevae.runs

    def never(*a, **k):
        raise AssertionError("the run was opened before the options were checked")

    monkeypatch.setattr(affinevae.runs.Run, "open", never)
    out = tmp_path / "p.png"
    line = _refused(["plot", model_dir, kind, f"{option}={value}", "--out", out], capsys, option, out, match)
    assert value in line or value in ("nan", "inf")


def test_plot_option_bounds_still_draw(model_dir, tmp_path):
    out = tmp_path / "m.png"
    assert main(["plot", str(model_dir), "manifold", "--d", "100", "--dpi", "20", "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")


def test_plot_refuses_a_figure_too_large_for_memory(model_dir, tmp_path, capsys):
    out = tmp_path / "p.png"
    _refused(["plot", model_dir, "samples", "--dpi", "1200", "--show", "4", "--out", out, "--max-memory", "2M"],
             capsys, "--dpi 1200", out, "would need")


def test_plot_refuses_an_unknown_split(model_dir, tmp_path, capsys):
    out = tmp_path / "p.png"
    _refused(["plot", model_dir, "reconstructions", "--data", "mnist", "--split", "foo", "--out", out], capsys,
             "--split", out, "'foo'")


@pytest.mark.parametrize("name", ["p.npz", "p"])
def test_plot_refuses_an_output_that_is_no_figure_format(model_dir, tmp_path, capsys, name):
    out = tmp_path / name
    _refused(["plot", model_dir, "samples", "--out", out], capsys, "--out", out, ".png")


@pytest.mark.parametrize("name,magic", [("p.png", b"\x89PNG"), ("p.jpg", b"\xff\xd8\xff"), ("p.pdf", b"%PDF"),
                                        ("p.svg", b"<?xml")])
def test_plot_writes_the_format_its_extension_names(model_dir, tmp_path, name, magic):
    out = tmp_path / name
    assert main(["plot", str(model_dir), "samples", "--show", "4", "--dpi", "30", "--out", str(out)]) == 0
    assert out.read_bytes().startswith(magic)


# ------------------------------------------------------------------ encode
@pytest.mark.parametrize("name", ["e.txt", "e"])
def test_encode_refuses_an_output_that_is_no_npz(model_dir, images, tmp_path, capsys, name):
    out = tmp_path / name
    _refused(["encode", model_dir, "--data", images, "--out", out], capsys, "--out", out, ".npz")
    assert not (tmp_path / f"{name}.npz").exists()


def test_encode_refuses_an_unknown_split(model_dir, tmp_path, capsys):
    out = tmp_path / "e.npz"
    _refused(["encode", model_dir, "--data", "mnist", "-n", "5", "--split", "foo", "--out", out], capsys,
             "--split", out, "'foo'")


@pytest.mark.parametrize("split", ["test", "train", "foo"])
def test_encode_refuses_a_split_for_a_file(model_dir, images, tmp_path, capsys, split):
    out = tmp_path / "e.npz"
    _refused(["encode", model_dir, "--data", images, "--split", split, "--out", out], capsys, "--split", out)


def test_encode_writes_npz_for_a_file_and_a_split(model_dir, images, tmp_path):
    out = tmp_path / "e.npz"
    assert main(["encode", str(model_dir), "--data", str(images), "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["z_mean"].shape == (10, 2)
    out2 = tmp_path / "t.npz"
    assert main(["encode", str(model_dir), "--data", "mnist", "-n", "5", "--split", "train", "--out", str(out2)]) == 0
    with np.load(out2) as f:
        assert f["elbo"].shape == (5,)


def test_encode_records_each_image_s_file_for_a_folder_or_a_pattern(model_dir, images, tmp_path):
    """A folder's rows were in name order (img10 before img2) with nothing to say which file each came from;
    `encode` now writes `image_file`, a file of several pages as name[i], and -n / subsets keep them."""
    import tifffile

    folder = tmp_path / "imgs"
    folder.mkdir()
    pixels = np.load(images)
    for i, k in enumerate((1, 2, 10)):
        Image.fromarray((pixels[i] * 255).astype(np.uint8)).save(folder / f"img{k}.png")
    tifffile.imwrite(folder / "stack.tif", (pixels[3:8] * 255).astype(np.uint8))
    with pytest.warns(UserWarning, match="name order"):
        data = av.data.load_images(str(folder))
    want = ["img1.png", "img10.png", "img2.png"] + [f"stack.tif[{i}]" for i in range(5)]
    assert data.names.tolist() == want
    assert data.subset([7, 0]).names.tolist() == ["stack.tif[4]", "img1.png"]
    np.testing.assert_allclose(data.images[1, 0], (pixels[2] * 255).astype(np.uint8) / 255, atol=1e-6)  # img10: the third
    out = tmp_path / "e.npz"
    with pytest.warns(UserWarning, match="name order"):
        assert main(["encode", str(model_dir), "--data", str(folder), "-n", "4", "--out", str(out)]) == 0
    with np.load(out) as f:  # plain strings: np.load reads them without pickle
        assert f["image_file"].tolist() == want[:4] and f["z_mean"].shape == (4, 2)
    assert main(["encode", str(model_dir), "--data", str(folder / "img1*.png"), "--out", str(tmp_path / "g.npz")]) == 0
    with np.load(tmp_path / "g.npz") as f:
        assert f["image_file"].tolist() == [str(folder / "img1.png"), str(folder / "img10.png")]
    with pytest.warns(UserWarning, match="name order"):  # align's file says the same
        assert main(["align", str(model_dir), "--data", str(folder), "--restarts", "2", "--steps", "0",
                     "--out", str(tmp_path / "a.npz")]) == 0
    assert av.pose.load_alignment(tmp_path / "a.npz")["image_file"].tolist() == want
    from affinevae.encoding import encode_dataset

    assert "image_file" not in encode_dataset(av.load(model_dir), np.load(images))  # arrays name no files
    with pytest.raises(av.AffineVAEError, match="names must be 2 strings"):
        av.data.ImageSet(pixels[:2], names=np.arange(2))


def test_an_angle_range_may_start_with_a_minus_sign():
    """`--angles -90:90:30` was 'expected one argument' (argparse took the value for an option)."""
    from affinevae.cli import build_parser, join_dash_values

    assert join_dash_values(["sweep", "r", "--angles", "-90:90:30", "-n", "5"]) == ["sweep", "r", "--angles=-90:90:30",
                                                                                      "-n", "5"]
    assert join_dash_values(["plot", "r", "manifold", "--bounds", "-3,3"])[-1] == "--bounds=-3,3"
    # a negative latent index reaches --dims' own range check, not argparse's 'expected one argument'
    assert join_dash_values(["plot", "r", "latent", "--dims", "-1,0"])[-1] == "--dims=-1,0"
    assert join_dash_values(["sweep", "r", "--angles", "-n"]) == ["sweep", "r", "--angles", "-n"]  # not a value
    for value in ("-1arcsec", "-1\"", "-1nm/px", "-0.5 nm", "-5", "-2µm", "-1Å"):
        assert join_dash_values(["patches", "i.tif", "--pixel-size", value])[-1] == f"--pixel-size={value}"
    for other in ("-n", "-h", "--out"):
        assert join_dash_values(["patches", "i.tif", "--pixel-size", other])[-1] == other
    assert join_dash_values(["patches", "i.tif", "--pixel-size", "-n"])[-2:] == ["--pixel-size", "-n"]
    args = build_parser().parse_args(join_dash_values(["report", "r", "--out", "x.html", "--sweep-angles", "-30,0,30"]))
    assert args.sweep_angles == "-30,0,30"


@pytest.mark.parametrize("command", ["align", "patches"])
def test_npz_writers_refuse_another_file_name(model_dir, tmp_path, capsys, command):
    """align wrote a zip archive named x.png; every .npz writer refuses another name, as encode and
    patches did."""
    np.save(tmp_path / "img.npy", np.random.default_rng(0).random((1, 32, 32)).astype(np.float32))
    out = tmp_path / "x.png"
    argv = (["align", model_dir, "--data", tmp_path / "img.npy", "--out", out] if command == "align" else
            ["patches", tmp_path / "img.npy", "--window", "8", "--out", out])
    _refused(argv, capsys, "--out", out, ".npz")


def test_plot_refuses_compare_and_classes_that_a_kind_would_ignore(model_dir, tmp_path, capsys):
    """`plot reconstructions --compare RUN` drew the first run alone; `plot samples --classes` of a
    plain VAE drew unconditional samples: both are refused in one line now."""
    out = tmp_path / "p.png"
    _refused(["plot", model_dir, "reconstructions", "--compare", model_dir, "--out", out], capsys, "--compare", out,
             "not to reconstructions")
    _refused(["plot", model_dir, "samples", "--classes", "3", "--out", out], capsys, "--classes", out,
             "renders no classes")
    # every kind option given to a kind that does not read it (they were ignored)
    for argv, option, kinds in ((["reconstructions", "--angle", "30"], "--angle", "manifold"),
                                (["samples", "--noise", "0.5"], "--noise", "denoising"),
                                (["curves", "--bins", "10"], "--bins", "rotation-histograms"),
                                (["manifold", "--indices", "1,2"], "--indices", "reconstructions, denoising, rotation-strip")):
        _refused(["plot", model_dir, *argv, "--out", out], capsys, option, out, f"applies to {kinds}, not to {argv[0]}")


@pytest.mark.parametrize("argv, option", [(["samples", "--data", "mnist"], "--data"), (["curves", "-n", "5"], "-n"),
                                          (["manifold", "--split", "train"], "--split"),
                                          (["samples", "--binarize"], "--binarize"),
                                          (["curves", "--fill-nan"], "--fill-nan")])
def test_plot_refuses_data_options_for_kinds_that_draw_no_data(model_dir, tmp_path, capsys, argv, option):
    """`plot samples --data X -n 5` drew prior samples as if no data were named: the kinds that draw no
    images refuse the data options in one line, naming the kinds that read them."""
    out = tmp_path / "p.png"
    line = _refused(["plot", model_dir, *argv, "--out", out], capsys, option, out, f"not to {argv[0]}, which draws no data")
    assert "reconstructions" in line and "samples" not in line.split("(")[1].split(")")[0]


@pytest.mark.parametrize("command", ["align", "sweep", "plot"])
def test_split_with_a_file_is_refused_as_encode_refuses_it(model_dir, tmp_path, capsys, command):
    """align, sweep and plot ignored --split with a file (no splits) silently; encode refused it."""
    np.save(tmp_path / "g.npy", np.random.default_rng(0).random((4, 28, 28)).astype(np.float32))
    out = tmp_path / ("a.npz" if command == "align" else "s.csv" if command == "sweep" else "p.png")
    argv = {"align": ["align", model_dir], "sweep": ["sweep", model_dir], "plot": ["plot", model_dir, "latent"]}[command]
    _refused([*argv, "--data", tmp_path / "g.npy", "--split", "train", "--out", out], capsys, "--split", out,
             "a file has no splits")


def test_amortise_refusals_name_its_own_options(model_dir, tmp_path, capsys):
    """They named Python functions and config fields (fit_pose_refiner, tune_model, target='elbo')."""
    out = tmp_path / "am"
    line = _refused(["amortise", model_dir, "--data", "mnist", "-n", "20", "--refiner", "--out", out], capsys,
                    "--refiner", out, "head is untrained")
    assert "fit_pose" not in line
    _refused(["amortise", model_dir, "--data", "mnist", "-n", "20", "--target", "search", "--tune-model", "--out", out],
             capsys, "--tune-model", out, "needs --target elbo")


def test_plot_compare_names_a_run_of_another_image_size(model_dir, tmp_path, capsys):
    """The error was 'images: image shape 1x28x28 ... expects 1x32x32', naming no run."""
    other = tmp_path / "v32"
    av.build_model("vae", image_shape=[1, 32, 32], latent_dim=2, encoder="mlp", decoder="mlp", hidden=[8]).save(other)
    out = tmp_path / "p.png"
    _refused(["plot", model_dir, "latent-stats", "--data", "mnist", "-n", "20", "--compare", other, "--out", out],
             capsys, "--compare", out, "v32: a model of 1x32x32 images")


def test_key_with_a_builtin_set_is_refused_on_the_command_line(tmp_path, capsys):
    """--key names an array of a file; with a built-in set it is refused (load_dataset ignores it, so
    a --key for the training file still reaches a built-in --val-data harmlessly)."""
    out = tmp_path / "run"
    _refused(["train", "--model", "vae", "--data", "mnist", "--key", "x", "--out", out], capsys, "--key", out,
             "not to the data 'mnist'")
    from affinevae.data import load_dataset

    assert len(load_dataset("mnist", "test", n=5, key="images")) == 5


def test_load_run_data_shows_each_held_loader_warning_once(monkeypatch):
    """With ``expect`` the loader's warnings are held until the shape check passes, then shown once
    each, as warnings' own 'default' filter would (a streamed loader may repeat one per chunk)."""
    import argparse
    import warnings

    from affinevae.cli import common

    def loader(*_a, **_k):
        for _ in range(3):
            warnings.warn("scaled by the range", UserWarning)  # the same place, three times
        warnings.warn("another thing", UserWarning)
        return av.data.ImageSet(np.zeros((2, 1, 8, 8), np.float32))

    monkeypatch.setattr(common, "_load_run_data", loader)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        data = common.load_run_data(argparse.Namespace(data="x.npz"), None, expect=(1, 8, 8))
    assert data.images.shape == (2, 1, 8, 8)
    assert [str(w.message) for w in seen] == ["scaled by the range", "another thing"]
    with pytest.raises(av.AffineVAEError, match="8"):  # another shape: refused before any warning is shown
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            common.load_run_data(argparse.Namespace(data="x.npz"), None, expect=(1, 16, 16))
    assert seen == []


def test_set_takes_comma_separated_numbers_as_a_tuple():
    """--set group_channels=4,8,8 as the README writes it (JSON lists and strings as before)."""
    from affinevae.cli.common import parse_set_options

    got = parse_set_options(["group_channels=4,8,8", "invariances=rotation,translation", "hidden=[16, 16]",
                             "beta=0.5", "flag=true", "mixed=4,a", "pair=0.1, 2"])
    assert got == {"group_channels": (4, 8, 8), "invariances": "rotation,translation", "hidden": [16, 16],
                   "beta": 0.5, "flag": True, "mixed": "4,a", "pair": (0.1, 2)}
    model = av.build_model("rvae", latent_dim=2, invariances="rotation", rotation_mode="full",
                           group_channels=got["group_channels"])
    assert model.config.group_channels == (4, 8, 8)
    # a list of one, as the config's own hint writes it ('hidden takes a list of values, e.g. hidden=(64,)')
    assert parse_set_options(["hidden=(64,)", "channels=8,", "name=(x)"]) == {"hidden": (64,), "channels": (8,),
                                                                            "name": "(x)"}


def test_set_that_disagrees_with_its_own_option_is_one_line(tmp_path, capsys):
    """--latent-dim 2 --set latent_dim=3 trained a 3-latent model without a word (--set won)."""
    for extra, line in [(["--latent-dim", "2", "--set", "latent_dim=3"], "--latent-dim 2 and --set latent_dim=3"),
                        (["--hidden", "32,16", "--set", "hidden=32,8"], "--hidden 32,16 and --set hidden=32,8")]:
        assert main(["train", "--model", "vae", "--data", "mnist", "-n", "64", *extra, "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{line} disagree: give one" in err and not (tmp_path / "r").exists()
    assert main(["train", "--model", "vae", "--data", "mnist", "-n", "64", "--latent-dim", "2", "--set", "latent_dim=2",
                 "--hidden", "16", "--set", "hidden=16,", "--epochs", "1", "--no-progress", "--out",
                 str(tmp_path / "same")]) == 0  # the same value twice is no conflict


def test_rotation_mode_full_without_a_rotation_is_one_line(tmp_path, capsys):
    with pytest.raises(av.AffineVAEError, match="rotation_mode 'full'.*infer no rotation"):
        av.build_model("rvae", latent_dim=2, invariances="translation", rotation_mode="full")
    assert main(["train", "--model", "rvae", "--data", "mnist", "-n", "64", "--invariances", "translation",
                 "--set", "rotation_mode=full", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "infer no rotation" in err and not (tmp_path / "r").exists()


def test_plot_with_images_of_another_size_names_the_file(tiny_runs, tmp_path, capsys):
    np.save(tmp_path / "odd45.npy", np.random.default_rng(0).random((5, 45, 45), dtype=np.float32))
    for kind in ("latent", "reconstructions"):
        assert main(["plot", str(tiny_runs.path("vae")), kind, "--data", str(tmp_path / "odd45.npy"),
                     "--out", str(tmp_path / f"{kind}.png")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "odd45.npy: image shape 1x45x45" in err
        assert not (tmp_path / f"{kind}.png").exists()


def test_align_head_options_need_a_trained_pose_head(model_dir, tmp_path, capsys):
    """--head-starts/--head-views/--head-trust on a wrapped VAE (no trained head) were accepted and did nothing."""
    np.save(tmp_path / "g.npy", np.random.default_rng(0).random((4, 28, 28)).astype(np.float32))
    out = tmp_path / "a.npz"
    line = _refused(["align", model_dir, "--data", tmp_path / "g.npy", "--head-starts", "2", "--head-trust", "0.9",
                     "--out", out], capsys, "--head-starts --head-trust", out, "has no trained pose head")
    assert "affinevae amortise" in line
    _refused(["sweep", model_dir, "--data", tmp_path / "g.npy", "--head-views", "4", "--out", tmp_path / "s.csv"],
             capsys, "--head-views", tmp_path / "s.csv", "has no trained pose head")  # sweep alike


def test_train_refusal_of_small_images_is_the_only_line(tmp_path, capsys):
    """-n beyond the file's images warned before the size refusal: two lines on stderr."""
    np.save(tmp_path / "tiny.npy", np.random.default_rng(0).random((5, 4, 4)).astype(np.float32))
    out = tmp_path / "run"
    _refused(["train", "--model", "vae", "--data", tmp_path / "tiny.npy", "-n", "200", "--out", out], capsys,
             "tiny.npy", out, "too small")
