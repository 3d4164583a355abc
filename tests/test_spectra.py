"""1-D signals with shift invariance, hyperspectral cubes and the PCA/NMF baseline (issue 13, parts 3-4)."""

import importlib.util
import warnings

import numpy as np
import pytest
import torch

from affinevae.analysis.baseline import fit_baseline
from affinevae.analysis.spectra import spectral_maps, write_spectral_maps
from affinevae.cli import main
from affinevae.data import as_images, load_dataset
from affinevae.data.spectra import (MIN_SIGNAL_LENGTH, SPECTRA_KIND, as_spectra, load_signals, synthetic_cube,
                                    synthetic_peaks)
from affinevae.encoding import encode_dataset
from affinevae.errors import AffineVAEError
from affinevae.runs import load as load_run
from affinevae.models.base import build_model
from affinevae.training import TrainConfig, fit


@pytest.fixture(scope="module")
def small_cube():
    return synthetic_cube(height=10, width=12, length=32, max_shift=4.0, separation=5.0, peak_width=2.0, smoothness=2.0,
                          seed=2)


# ------------------------------------------------------------------ data
def test_synthetic_peaks_truth():
    s = synthetic_peaks(50, length=40, max_shift=5.0, noise=0.0, seed=3)
    assert s.spectra.shape == (50, 1, 40) and s.spectra.dtype == np.float32
    assert np.all(np.abs(s.shift) <= 5.0) and np.all((s.ratio >= 0.2) & (s.ratio <= 1.0))
    # noise-free: the centre of mass is the centre + the shift + the ratio's pull towards the second peak
    u = np.arange(40)
    com = (s.spectra[:, 0] * u).sum(1) / s.spectra[:, 0].sum(1)
    expected = 19.5 + s.shift + 5.0 * (s.ratio - 1) / (s.ratio + 1)  # separation 10
    np.testing.assert_allclose(com, expected, atol=0.1)
    ds = s.image_set()
    assert ds.images.shape == (50, 1, 1, 40) and ds.meta["kind"] == SPECTRA_KIND
    assert np.abs(ds.images).max() == pytest.approx(1.0)


def test_synthetic_cube_layout(small_cube):
    c = small_cube
    assert c.cube.shape == (10, 12, 32) and c.regions.shape == (10, 12) and c.shift.shape == (10, 12)
    assert set(np.unique(c.regions)) == {0, 1, 2}
    ds = c.image_set()
    assert ds.images.shape == (120, 1, 1, 32) and ds.meta["grid_shape"] == [10, 12]
    # row-major: spectrum i is pixel divmod(i, W)
    np.testing.assert_allclose(ds.images[12 * 3 + 5, 0, 0] * ds.meta["intensity_scale"], c.cube[3, 5], rtol=1e-5)


def test_as_spectra_axes_and_errors():
    cube = np.random.default_rng(0).random((4, 5, 20))
    sig, grid = as_spectra(np.moveaxis(cube, 2, 0), signal_axis=0)
    assert sig.shape == (20, 1, 20) and grid == (4, 5)
    np.testing.assert_allclose(sig[7, 0], cube[1, 2])
    sig, grid = as_spectra(cube.reshape(20, 20), signal_axis=1)
    assert sig.shape == (20, 1, 20) and grid is None
    sig, _ = as_spectra(np.zeros((3, 2, 16)), signal_axis=2, cube=False)
    assert sig.shape == (3, 2, 16)
    with pytest.raises(AffineVAEError, match="only 4 samples.*--signal-axis"):
        as_spectra(cube, signal_axis=0)
    with pytest.raises(AffineVAEError, match="outside the 3 axes"):
        as_spectra(cube, signal_axis=3)
    with pytest.raises(AffineVAEError, match="got rank 4"):
        as_spectra(cube[None], signal_axis=3)
    bad = cube.copy()
    bad[1, 2, 3] = np.nan
    bad[3, 0, 0] = np.inf
    with pytest.raises(AffineVAEError, match=r"2 of 20 spectra hold NaN.*pixel \(1, 2\).*--fill-nan fills them"):
        as_spectra(bad, signal_axis=2)
    with pytest.raises(AffineVAEError, match=r"signals of several channels \(--signal-channels\) need a rank-3"):
        as_spectra(cube.reshape(20, 20), signal_axis=1, cube=False)  # (it was read as (N, L) without a word)
    assert MIN_SIGNAL_LENGTH == 8


def test_fill_nan_interpolates_a_dead_channel_and_gives_an_empty_spectrum_the_median():
    """An audit's spectrum image with one dead detector channel (NaN at one energy in every pixel): --fill-nan
    was accepted and ignored (every pixel refused). Gaps are now interpolated along the signal, ends take
    their nearest finite sample, a pixel without any finite sample the others' median; one warning says so."""
    rng = np.random.default_rng(0)
    cube = rng.random((4, 5, 20)).astype(np.float32)
    bad = cube.copy()
    bad[..., 7] = np.nan  # a dead channel
    bad[0, 0, :2] = np.inf  # a signal's start
    bad[1, 2] = np.nan  # a masked pixel
    with pytest.warns(UserWarning, match=r"cube.npy: 41 NaN or infinite samples in 20 of 20 signals filled along the "
                                         r"signal.*1 signal without any finite sample \(first: pixel \(1, 2\)\) takes"):
        sig, grid = as_spectra(bad, signal_axis=2, where="cube.npy", fill_nan=True)
    assert grid == (4, 5) and np.isfinite(sig).all()
    keep = np.ones(20, bool)
    keep[7] = False
    rows = np.delete(np.arange(20), [0, 7])
    np.testing.assert_array_equal(sig[rows, 0][:, keep], cube.reshape(20, 20)[rows][:, keep])  # finite ones kept
    np.testing.assert_allclose(sig[3, 0, 7], (cube[0, 3, 6] + cube[0, 3, 8]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(sig[0, 0, :2], cube[0, 0, [2, 2]])
    others = np.delete(sig[:, 0], 7, axis=0)
    np.testing.assert_allclose(sig[7, 0], np.median(others, axis=0), rtol=1e-6)
    with pytest.raises(AffineVAEError, match="no signal holds a finite value"):
        as_spectra(np.full((3, 12), np.nan), signal_axis=1, fill_nan=True)
    two = rng.random((3, 2, 16)).astype(np.float32)  # signals of two channels, one channel of signal 0 empty
    two[0, 1] = np.nan
    with pytest.warns(UserWarning, match=r"1 signal channel without any finite sample \(first: signal 0\) takes"):
        sig, _ = as_spectra(two, signal_axis=2, cube=False, fill_nan=True)
    np.testing.assert_array_equal(sig[0, 0], two[0, 0])
    np.testing.assert_allclose(sig[0, 1], np.median(two[1:, 1], axis=0), rtol=1e-6)


def test_a_run_trained_with_fill_nan_fills_the_cube_map_reads(tmp_path, small_cube):
    """A review: encode filled a run's own NaN cube as the run remembered (--fill-nan), map --cube refused it."""
    cube = small_cube.cube.copy()
    cube[..., 5] = np.nan
    np.save(tmp_path / "nan.npy", cube)
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="filled along the signal"):
        assert main(["train", "--model", "rvae", "--data", str(tmp_path / "nan.npy"), "--signal-axis", "2", "--fill-nan",
                     "--latent-dim", "2", "--hidden", "16", "--epochs", "1", "--no-progress", "--out", str(run)]) == 0
    with pytest.warns(UserWarning, match="120 NaN or infinite samples in 120 of 120 signals filled"):
        assert main(["map", str(run), "--cube", str(tmp_path / "nan.npy"), "--out", str(tmp_path / "maps")]) == 0
    with np.load(tmp_path / "maps" / "maps.npz", allow_pickle=False) as f:
        assert np.isfinite(f["z_mean"]).all()


def test_load_signals_npy_npz_hdf5(tmp_path, small_cube):
    np.save(tmp_path / "c.npy", small_cube.cube)
    np.savez(tmp_path / "c.npz", cube=np.moveaxis(small_cube.cube, 2, 0), other=np.zeros(3))
    a = load_signals(str(tmp_path / "c.npy"), 2)
    b = load_signals(str(tmp_path / "c.npz"), 0)
    np.testing.assert_allclose(a.images, b.images)
    assert a.meta["grid_shape"] == [10, 12] and a.meta["signal_axis"] == 2
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["data/cube"] = small_cube.cube
    c = load_signals(str(tmp_path / "c.h5") + ":data/cube", 2)
    np.testing.assert_allclose(a.images, c.images)
    with pytest.raises(AffineVAEError, match="no array 'nope'"):
        load_signals(str(tmp_path / "c.npz"), 0, key="nope")
    # the --data path: a file read as signals, and the built-in synthetic sources
    d = load_dataset(str(tmp_path / "c.npy"), signal_axis=2)
    assert d.image_shape == (1, 1, 32)
    assert load_dataset("synthetic-peaks", n=20).image_shape == (1, 1, 96)
    with pytest.raises(AffineVAEError, match="--signal-axis applies to signal files"):
        load_dataset("mnist", signal_axis=1)


def test_as_images_reads_signals_for_1d_shapes():
    x = np.zeros((5, 16), np.float32)
    assert as_images(x, image_shape=(1, 1, 16))[0].shape == (5, 1, 1, 16)
    assert as_images(np.zeros((5, 2, 16)), image_shape=(2, 1, 16))[0].shape == (5, 2, 1, 16)
    assert as_images(np.zeros((5, 28, 28)), image_shape=(1, 28, 28))[0].shape == (5, 1, 28, 28)  # images unchanged


# ------------------------------------------------------------------ model
def test_rvae_shift_config_rules():
    m = build_model("rvae", image_shape=[1, 1, 32], latent_dim=2)
    assert m.config.invariances == ("shift",)
    assert build_model("rvae", image_shape=[1, 28, 28]).config.invariances == ("rotation", "translation", "scale")
    with pytest.raises(AffineVAEError, match="take only the 'shift' invariance"):
        build_model("rvae", image_shape=[1, 1, 32], invariances=["translation"])
    with pytest.raises(AffineVAEError, match="'shift' invariance is for 1-D signals"):
        build_model("rvae", image_shape=[1, 28, 28], invariances=["shift"])


def test_spatial_decoder_renders_at_u_minus_s():
    """A shift of k samples moves the rendered signal by exactly k samples: f(u - s, z)."""
    torch.manual_seed(0)
    m = build_model("rvae", image_shape=[1, 1, 32], latent_dim=2, likelihood="gaussian").eval()
    z = torch.randn(3, 2)
    base = m.decode(z)[:, 0, 0]
    moved = m.decode(z, shift=3.0)[:, 0, 0]  # +3 samples
    torch.testing.assert_close(moved, m.decode(z, shift=torch.full((3,), 3.0))[:, 0, 0])
    torch.testing.assert_close(moved[:, 3:], base[:, :-3], atol=1e-5, rtol=1e-5)
    enc = m.encode(torch.zeros(4, 32))  # (N, L) input
    assert enc.parts["shift"].shape == (4,) and enc.pose.shift.shape == (4, 2)
    torch.testing.assert_close(enc.pose.shift[:, 0] * 16, enc.parts["shift"])
    assert torch.all(enc.pose.shift[:, 1] == 0)


def test_rvae_learns_shift_and_ratio():
    s = synthetic_peaks(600, length=48, max_shift=6.0, separation=6.0, width=2.5, seed=0)
    torch.manual_seed(0)
    m = build_model("rvae", image_shape=[1, 1, 48], latent_dim=2, likelihood="gaussian", sigma=0.05,
                    encoder_hidden=[64, 32], hidden=[32, 32])
    fit(m, s.image_set(), TrainConfig(epochs=10, batch_size=64, progress=False, seed=0, checkpoint=False))
    codes = encode_dataset(m, s.image_set(), elbo=False)
    assert codes["shift"].shape == (600,)
    assert np.corrcoef(codes["shift"], s.shift)[0, 1] > 0.9
    assert max(abs(np.corrcoef(codes["z_mean"][:, j], s.ratio)[0, 1]) for j in range(2)) > 0.8


@pytest.mark.parametrize("family,options", [("vae", {"encoder": "conv1d", "decoder": "mlp", "likelihood": "gaussian"}),
                                             ("ae", {"encoder": "mlp", "decoder": "mlp", "likelihood": "mse"}),
                                             ("rvae", {"encoder": "conv1d", "decoder": "warp", "likelihood": "gaussian"})])
def test_other_families_and_encoders_on_signals(family, options):
    s = synthetic_peaks(64, length=32, seed=0).image_set()  # noisy spectra dip below 0: not for a Bernoulli
    m = build_model(family, image_shape=[1, 1, 32], latent_dim=2, hidden=[16], channels=[4, 8], **options)
    fit(m, s, TrainConfig(epochs=1, batch_size=32, progress=False, checkpoint=False))
    codes = encode_dataset(m, s.images[:, 0, 0], elbo=False)  # (N, L) signals
    assert codes["z_mean"].shape == (64, 2) and np.isfinite(codes["z_mean"]).all()
    assert ("shift" in codes) == (family == "rvae")


# ------------------------------------------------------------------ baseline and maps
def test_fit_baseline_pca_nmf():
    rng = np.random.default_rng(0)
    basis = np.stack([np.sin(np.linspace(0, 3, 20)) ** 2, np.linspace(0, 1, 20)])
    w = rng.random((200, 2))
    x = (w @ basis)[:, None, None, :]
    pca = fit_baseline(x, "pca", 2)
    assert pca.loadings.shape == (200, 2) and pca.components.shape == (2, 1, 1, 20)
    assert pca.explained.sum() > 0.999
    nmf = fit_baseline(x, "nmf", 2)
    recon = nmf.loadings @ nmf.components.reshape(2, -1)
    assert np.abs(recon - x.reshape(200, -1)).max() < 0.05
    with pytest.raises(AffineVAEError, match="NMF needs non-negative data"):
        fit_baseline(x - 0.5, "nmf", 2)
    shifted = fit_baseline(x - 0.5, "nmf", 2, nonnegative="shift")
    assert shifted.offset == pytest.approx(-0.5, abs=1e-6)
    with pytest.raises(AffineVAEError, match="baseline"):
        fit_baseline(x, "ica", 2)
    with pytest.raises(AffineVAEError, match="components must be an integer in 1..20"):
        fit_baseline(x, "pca", 30)


def test_spectral_maps_files(tmp_path, small_cube):
    ds = small_cube.image_set()
    m = build_model("rvae", image_shape=[1, 1, 32], latent_dim=2, likelihood="gaussian", hidden=[16], encoder_hidden=[16])
    maps = spectral_maps(m, ds, n_clusters=3, baseline="pca")
    assert maps.z_mean.shape == (10, 12, 2) and maps.shift.shape == (10, 12) and maps.cluster.shape == (10, 12)
    files = write_spectral_maps(maps, tmp_path / "maps")
    assert {"maps", "latent_0", "latent_1", "shift", "clusters", "baseline_0", "baseline_1", "baseline_components",
            "baseline_comparison"} <= set(files)
    with np.load(files["maps"], allow_pickle=False) as f:
        assert f["baseline_loadings"].shape == (10, 12, 2) and f["baseline_components"].shape == (2, 1, 1, 32)
        assert str(f["baseline_method"]) == "pca"
    with pytest.raises(AffineVAEError, match="not a cube"):
        spectral_maps(m, synthetic_peaks(20, length=32).image_set())
    assert "shift_phys" not in maps.arrays()  # no calibration: samples only
    # a calibrated energy axis (an instrument file's, 0.5 eV per sample): the shift also in eV (an audit: encode
    # gave shift_phys in eV on the same file, map --cube samples only)
    ds.meta.update(sample_size=0.5, sample_offset=100.0, sample_unit="eV")
    calibrated = spectral_maps(m, ds)
    arrays = calibrated.arrays()
    np.testing.assert_allclose(arrays["shift_phys"], calibrated.shift * 0.5)
    assert str(arrays["unit"]) == "eV" and float(arrays["sample_size"]) == 0.5
    assert "shift" in write_spectral_maps(calibrated, tmp_path / "ev")


# ------------------------------------------------------------------ command line
def test_cli_cube_train_map_and_bad_input(tmp_path, small_cube, capsys):
    cube = tmp_path / "cube.npy"
    np.save(cube, small_cube.cube)
    run = tmp_path / "run"
    tiny = ["--latent-dim", "2", "--hidden", "16", "--no-progress", "--batch-size", "32", "--epochs", "1"]
    assert main(["train", "--model", "rvae", "--data", str(cube), "--signal-axis", "2", "--out", str(run), *tiny]) == 0
    assert "spectra defaults: decoder=warp likelihood=gaussian" in capsys.readouterr().out
    assert load_run(run).config.decoder == "warp"
    out = tmp_path / "maps"
    assert main(["map", str(run), "--cube", str(cube), "--signal-axis", "2", "--clusters", "2", "--baseline", "nmf",
                 "--nmf-shift", "--out", str(out)]) == 0
    assert "mapped 10x12 spectra" in capsys.readouterr().out
    assert (out / "maps.npz").is_file() and (out / "shift.png").is_file() and (out / "baseline_comparison.png").is_file()
    assert main(["encode", str(run), "--data", str(cube), "--signal-axis", "2", "--out", str(tmp_path / "e.npz")]) == 0
    with np.load(tmp_path / "e.npz", allow_pickle=False) as f:
        assert f["shift"].shape == (120,)

    def error(args, match):
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("affinevae: error:") and "\n" not in err and match in err, err

    nan = small_cube.cube.copy()
    nan[2, 3, 4] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "rank4.npy", small_cube.cube[None])
    np.save(tmp_path / "short.npy", small_cube.cube[:, :, :5])
    train = ["train", "--model", "rvae", "--out", str(tmp_path / "bad"), *tiny]
    error([*train, "--data", str(tmp_path / "nan.npy"), "--signal-axis", "2"], "1 of 120 spectra hold NaN")
    error(["map", str(run), "--cube", str(tmp_path / "nan.npy"), "--signal-axis", "2", "--out",
           str(tmp_path / "nanmap")], "1 of 120 spectra hold NaN")
    with pytest.warns(UserWarning, match="1 NaN or infinite sample in 1 of 120 signals filled"):  # --fill-nan: filled
        assert main(["map", str(run), "--cube", str(tmp_path / "nan.npy"), "--signal-axis", "2", "--fill-nan",
                     "--out", str(tmp_path / "nanmap")]) == 0
    with np.load(tmp_path / "nanmap" / "maps.npz", allow_pickle=False) as f:
        assert np.isfinite(f["z_mean"]).all() and f["z_mean"].shape == (10, 12, 2)
    error(["plot", str(run), "angles", "--out", str(tmp_path / "angles.png")],  # (it said: use an rvae with rotation)
          "is a model of 1-D signals: they have no rotation angle, only a shift")
    from affinevae.analysis.pose import learned_angles

    with pytest.raises(AffineVAEError, match=r"model 'vae' is a model of 1-D signals: they have no rotation angle "
                                             r"\(an rvae with --invariances shift learns their shift\)$"):
        learned_angles(build_model("vae", image_shape=[1, 1, 32], latent_dim=2), np.zeros((2, 1, 1, 32), np.float32))
    error([*train, "--data", str(tmp_path / "rank4.npy"), "--signal-axis", "2"], "got rank 4")
    error([*train, "--data", str(tmp_path / "short.npy"), "--signal-axis", "2"], "only 5 samples")
    error([*train, "--data", str(cube), "--signal-axis", "3"], "signal axis 3 outside")
    error(["map", str(run), "--cube", str(cube), "--signal-axis", "1", "--out", str(tmp_path / "no-maps")],
          "the spectra have 12 samples but the model expects 32; check --signal-axis")
    # another cube than the run's own needs its axis; the run's own is read along the recorded one
    np.save(tmp_path / "other.npy", small_cube.cube)
    assert main(["map", str(run), "--cube", str(tmp_path / "other.npy"), "--out", str(tmp_path / "other-maps")]) == 0
    assert "other.npy: read along the run's --signal-axis 2 (override with --signal-axis)" in capsys.readouterr().out
    assert main(["map", str(run), "--cube", str(cube), "--out", str(tmp_path / "own-maps")]) == 0
    assert "--cube is the run's own data: read along its --signal-axis 2" in capsys.readouterr().out
    assert (tmp_path / "own-maps" / "maps.npz").is_file()
    # info describes a file as signals, as train reads it
    assert main(["info", str(cube), "--signal-axis", "2"]) == 0
    out = capsys.readouterr().out
    assert "120 of 32 samples, 1 channel(s) (axis 2)" in out and "10 x 12 pixels" in out and "noise" in out
    error(["map", str(run), "--cube", str(cube), "--signal-axis", "2", "--baseline", "nmf", "--out", str(tmp_path / "no-maps")],
          "NMF needs non-negative data")
    # the run's own data with another --signal-axis is read with that axis (0 was taken for "not given")
    error(["encode", str(run), "--data", str(cube), "--signal-axis", "0", "--out", str(tmp_path / "e0.npz")],
          "the signals have 10 samples but the model expects 32; check --signal-axis")
    # another file without --signal-axis is read as the run read its signals (a model of signals encodes no images),
    # in the file's own units (divided by their largest value, as training's were)
    np.save(tmp_path / "bright.npy", small_cube.cube * 300 + 5)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        assert main(["encode", str(run), "--data", str(tmp_path / "bright.npy"), "--out", str(tmp_path / "e1.npz")]) == 0
    assert "bright.npy: read as signals along the run's --signal-axis 2" in capsys.readouterr().out
    assert not [w for w in shown if "min-max" in str(w.message)]
    with np.load(tmp_path / "e1.npz") as f:
        assert f["z_mean"].shape[0] == 120
    # a stack of images is refused in one line: its last axis is not the model's signal length
    np.save(tmp_path / "stack.npy", np.random.default_rng(0).random((5, 20, 20)))
    error(["encode", str(run), "--data", str(tmp_path / "stack.npy"), "--out", str(tmp_path / "e2.npz")],
          "the signals have 20 samples but the model expects 32")
    # commands that turn images refuse a model of signals, and map takes its data with --cube only
    for args, what in [(["align", str(run), "--data", str(cube), "--signal-axis", "2", "--out", str(tmp_path / "a.npz")],
                        "a signal's shift is one of its latents"),
                       (["sweep", str(run), "--out", str(tmp_path / "s.csv")], "the rotation sweep is for images"),
                       (["amortise", str(run), "--data", str(cube), "--signal-axis", "2", "--out", str(tmp_path / "am")],
                        "a signal's shift is one of its latents"),
                       (["map", str(run), "--image", str(cube), "--patches", str(cube), "--out", str(tmp_path / "m")],
                        "map its spectra with --cube")]:
        error(args, f"a model of 1-D signals (C x 1 x L = 1x1x32): signals are not turned; {what}")
    error(["map", str(run), "--cube", str(cube), "--signal-axis", "2", "--symmetry", "2", "--out", str(tmp_path / "m")],
          "--symmetry applies to --image/--patches")
    error(["train", "--model", "avae", "--data", str(cube), "--signal-axis", "2", "--epochs", "1", "--out",
           str(tmp_path / "av")], "avae searches the pose of images")
    for name in ("a.npz", "s.csv", "m", "e0.npz", "e2.npz", "am", "av"):
        assert not (tmp_path / name).exists()
    # the decoder of a signal model takes a shift only
    from affinevae.runs import load

    with pytest.raises(AffineVAEError, match="take only a shift"):
        load(run).decode(torch.zeros(1, 2), angle=0.5)


def test_map_patches_with_baseline(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "img.npy", rng.random((48, 40)).astype(np.float32))
    assert main(["patches", str(tmp_path / "img.npy"), "--window", "8", "--stride", "8", "--out",
                 str(tmp_path / "p.npz")]) == 0
    build_model("vae", image_shape=[1, 8, 8], latent_dim=2, encoder="mlp", decoder="mlp", hidden=[16]).save(tmp_path / "run")
    base = ["map", str(tmp_path / "run"), "--image", str(tmp_path / "img.npy"), "--patches", str(tmp_path / "p.npz"),
            "--out", str(tmp_path / "maps")]
    assert main([*base, "--baseline", "pca", "--components", "3"]) == 0
    assert "baseline_loadings.png" in capsys.readouterr().out
    with np.load(tmp_path / "maps" / "baseline.npz", allow_pickle=False) as f:
        assert f["baseline_loadings"].shape == (30, 3) and f["baseline_components"].shape == (3, 8, 8)
        assert f["baseline_explained"][0] >= f["baseline_explained"][2]
    assert (tmp_path / "maps" / "baseline_components.png").stat().st_size > 0
    assert main([*base, "--baseline", "nmf", "--force"]) == 0  # patches in [0, 1]: no shift needed
    assert main([*base, "--signal-axis", "2"]) == 2
    assert "--signal-axis applies to --cube only" in capsys.readouterr().err


def test_report_of_a_spectra_run(tmp_path, small_cube, monkeypatch, capsys):
    from affinevae.report import write_report

    np.save(tmp_path / "cube.npy", small_cube.cube)
    run = tmp_path / "run"
    assert main(["train", "--model", "rvae", "--data", str(tmp_path / "cube.npy"), "--signal-axis", "2", "--out", str(run),
                 "--latent-dim", "2", "--hidden", "16", "--no-progress", "--epochs", "1"]) == 0
    res = write_report(run, tmp_path / "r.html", n=60)
    assert "Linear baseline (PCA)" in res.sections and "Loss vs rotation" not in res.sections, res.skipped
    assert "PCA&#x27;s loading maps" in (tmp_path / "r.html").read_text() or "loading maps" in (tmp_path / "r.html").read_text()
    # another cube (report and plot have no --signal-axis) and the run's own cube spelled otherwise, from another
    # working directory: read along the run's signal axis
    other = synthetic_cube(height=6, width=7, length=32, seed=5).cube
    np.save(tmp_path / "other.npy", other)
    sub = tmp_path / "sub"
    sub.mkdir()
    with monkeypatch.context() as m:
        m.chdir(sub)
        assert main(["report", str(run), "--data", "../other.npy", "--out", "r2.html", "--sweep-angles", "none"]) == 0
        assert main(["plot", str(run), "reconstructions", "--data", "../other.npy", "--out", "p.png"]) == 0
        assert main(["encode", str(run), "--data", "../other.npy", "--out", "e.npz"]) == 0
        assert "read as signals along the run's --signal-axis 2" in capsys.readouterr().out
        with np.load("e.npz") as f:
            assert f["z_mean"].shape == (42, 2)
    # sample draws signals as curves (it drew 1-pixel-high strips)
    from PIL import Image

    assert main(["sample", str(run), "-n", "6", "--out", str(tmp_path / "s.png")]) == 0
    drawn = np.asarray(Image.open(tmp_path / "s.png").convert("L"))
    assert drawn.shape[0] > 100 and (drawn < 128).any(axis=1).sum() > 20  # dark curve pixels on many rows
    assert main(["sample", str(run), "-n", "100", "--upscale", "3000", "--out", str(tmp_path / "s2.png")]) == 0  # n/a
    with monkeypatch.context() as m:
        m.chdir(tmp_path)
        capsys.readouterr()
        assert main(["encode", str(run), "--data", "./cube.npy", "--out", "own.npz"]) == 0  # the run's own, respelled
        assert "read as signals" not in capsys.readouterr().out
        with np.load("own.npz") as f:
            assert f["z_mean"].shape == (120, 2)


def test_cli_multichannel_signals(tmp_path, capsys):
    """(N, C, L) signals of C channels from the command line (--signal-channels), with the axes in any order."""
    peaks = synthetic_peaks(64, length=32, seed=0).image_set().images[:, 0, 0]  # (64, 32)
    two = np.stack([peaks, peaks[:, ::-1]], 2)                                   # (N, L, C): signal axis 1
    np.save(tmp_path / "sig.npy", two)
    run = tmp_path / "run"
    tiny = ["--latent-dim", "2", "--hidden", "16", "--no-progress", "--batch-size", "32", "--epochs", "1"]
    assert main(["train", "--model", "rvae", "--data", str(tmp_path / "sig.npy"), "--signal-axis", "1",
                 "--signal-channels", "--out", str(run), *tiny]) == 0
    from affinevae.runs import Run
    assert Run.open(run).model().config.image_shape == (2, 1, 32)
    data = Run.open(run).data()                                                 # the run reloads the same layout
    assert data.images.shape == (64, 2, 1, 32)
    np.testing.assert_allclose(data.images[:, 1, 0, ::-1], data.images[:, 0, 0], atol=1e-6)
    assert main(["encode", str(run), "--data", str(tmp_path / "sig.npy"), "--signal-axis", "1", "--signal-channels",
                 "--out", str(tmp_path / "e.npz")]) == 0
    with np.load(tmp_path / "e.npz", allow_pickle=False) as f:
        assert f["shift"].shape == (64,) and f["z_mean"].shape == (64, 2)
    capsys.readouterr()
    assert main(["train", "--model", "rvae", "--data", str(tmp_path / "sig.npy"), "--signal-channels",
                 "--out", str(tmp_path / "r2"), *tiny]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "affinevae: error: --signal-channels needs --signal-axis"


def test_cli_map_takes_the_builtin_cube_drawn_as_the_run_drew_it(tmp_path, capsys):
    """map --cube synthetic-cube maps the built-in cube (with the run's seed, no --signal-axis) that a
    run was trained on; train says it trained on signals."""
    run = tmp_path / "run"
    assert main(["train", "--model", "rvae", "--data", "synthetic-cube", "--latent-dim", "2", "--hidden", "16",
                 "--epochs", "1", "--seed", "3", "--no-progress", "--out", str(run)]) == 0
    assert "trained rvae on 922 signals (synthetic-cube" in capsys.readouterr().out
    assert main(["map", str(run), "--cube", "synthetic-cube", "--clusters", "3", "--out", str(tmp_path / "m")]) == 0
    assert "mapped 32x32 spectra of synthetic-cube with rvae" in capsys.readouterr().out
    with np.load(tmp_path / "m" / "maps.npz", allow_pickle=False) as f:
        assert f["shift"].shape == (32, 32)
        mapped = f["z_mean"].reshape(-1, 2)
    own = load_dataset("synthetic-cube", split="train", seed=3)        # the run's cube (seed 3), not seed 0's
    codes = encode_dataset(load_run(run), own, elbo=False)
    np.testing.assert_allclose(mapped, codes["z_mean"], atol=1e-5)
    assert main(["map", str(run), "--cube", "synthetic-cube", "--signal-axis", "2", "--out", str(tmp_path / "m2")]) == 2
    assert "is a built-in cube: it takes no --signal-axis" in capsys.readouterr().err


# ------------------------------------------------------------------ classes of spectra
def test_signal_files_carry_labels(tmp_path, small_cube):
    """Labels for 1-D signals: an .npz's own labels array, a --labels file, a cube's (H, W) labels."""
    s = synthetic_peaks(30, length=32, seed=0)
    lab = np.arange(30) % 3
    np.savez(tmp_path / "own.npz", spectra=s.spectra[:, 0], labels=lab)
    assert np.array_equal(load_signals(str(tmp_path / "own.npz"), 1).labels, lab)
    np.savez(tmp_path / "bare.npz", spectra=s.spectra[:, 0])
    np.save(tmp_path / "lab.npy", lab[::-1].copy())
    got = load_dataset(str(tmp_path / "bare.npz"), signal_axis=1, labels=str(tmp_path / "lab.npy"))
    assert np.array_equal(got.labels, lab[::-1]) and load_signals(str(tmp_path / "bare.npz"), 1).labels is None
    # a labels file replaces the file's own; -n keeps the first labels with the first signals
    got = load_dataset(str(tmp_path / "own.npz"), signal_axis=1, labels=str(tmp_path / "lab.npy"), n=5)
    assert np.array_equal(got.labels, lab[::-1][:5])
    # a cube: one label per pixel, as (H, W) or in row-major order
    np.save(tmp_path / "cube.npy", small_cube.cube)
    np.save(tmp_path / "grid.npy", small_cube.regions)
    cube = load_signals(str(tmp_path / "cube.npy"), 2, labels=str(tmp_path / "grid.npy"))
    assert np.array_equal(cube.labels, small_cube.regions.reshape(-1))
    with pytest.raises(AffineVAEError, match=r"labels must be a 1-D array, or \(10, 12\) for the cube's pixels"):
        np.save(tmp_path / "turned.npy", small_cube.regions.T)
        load_signals(str(tmp_path / "cube.npy"), 2, labels=str(tmp_path / "turned.npy"))
    with pytest.raises(AffineVAEError, match="29 labels for 30 signals"):
        np.save(tmp_path / "short.npy", lab[:29])
        load_signals(str(tmp_path / "bare.npz"), 1, labels=str(tmp_path / "short.npy"))
    np.savez(tmp_path / "badown.npz", spectra=s.spectra[:, 0], labels=lab[:4])
    with pytest.raises(AffineVAEError, match=r"its 'labels' array has shape \(4,\), not one label per signal \(30\)"):
        load_signals(str(tmp_path / "badown.npz"), 1)


def test_cli_semi_supervised_spectra(tmp_path, capsys):
    """ssvae on a signal file with partial labels: spectra defaults (Gaussian), signal words, classes mapped."""
    s = synthetic_peaks(120, length=32, seed=1)
    lab = np.where(np.arange(120) < 40, (s.ratio > 0.6).astype(int), -1)
    np.savez(tmp_path / "sp.npz", spectra=s.spectra[:, 0], labels=lab)
    run = tmp_path / "run"
    assert main(["train", "--model", "ssvae", "--data", str(tmp_path / "sp.npz"), "--signal-axis", "1", "--epochs", "1",
                 "--latent-dim", "2", "--hidden", "16", "--batch-size", "32", "--no-progress", "--out", str(run)]) == 0
    cap = capsys.readouterr()
    assert "spectra defaults: likelihood=gaussian" in cap.out
    assert "nats/signal" in cap.out and "nats/image" not in cap.err + cap.out
    assert load_run(run).config.likelihood == "gaussian"
    from affinevae.cli.train import epoch_line  # the line per epoch in a batch job's log

    line = epoch_line({"epoch": 1, "train_loss": 2.0, "val_loss": 1.0, "images_per_s": 50.0}, 3, "signal")
    assert line == "epoch 1/3: train loss 2.00, val loss 1.00 nats/signal, 50 signals/s"
    # the AE's spectra default is a plain sum of squared errors, not nats
    np.save(tmp_path / "bare.npy", s.spectra[:, 0])
    assert main(["train", "--model", "ae", "--data", str(tmp_path / "bare.npy"), "--signal-axis", "1", "--epochs", "1",
                 "--latent-dim", "2", "--hidden", "8", "--no-progress", "--out", str(tmp_path / "ae")]) == 0
    out = capsys.readouterr().out
    assert "likelihood=mse" in out and "squared error/signal" in out and "nats" not in out
    assert main(["encode", str(run), "--data", str(tmp_path / "sp.npz"), "--signal-axis", "1",
                 "--out", str(tmp_path / "e.npz")]) == 0
    assert "nats/signal" in capsys.readouterr().out


def test_spectral_maps_show_a_models_own_classes(tmp_path, small_cube):
    m = build_model("jrvae", image_shape=[1, 1, 32], latent_dim=2, num_classes=3, likelihood="gaussian",
                    hidden=[16], encoder_hidden=[16])
    maps = spectral_maps(m, small_cube.image_set())
    assert maps.klass.shape == (10, 12) and maps.class_prob.shape == (10, 12, 3)
    assert np.allclose(maps.class_prob.sum(-1), 1, atol=1e-5)
    assert np.array_equal(maps.klass, maps.class_prob.argmax(-1))
    files = write_spectral_maps(maps, tmp_path / "maps")
    assert "classes" in files
    with np.load(files["maps"], allow_pickle=False) as f:
        assert np.array_equal(f["class"], maps.klass)
    plain = spectral_maps(build_model("rvae", image_shape=[1, 1, 32], latent_dim=2, likelihood="gaussian",
                                      hidden=[16], encoder_hidden=[16]), small_cube.image_set())
    assert plain.klass is None and "class" not in plain.arrays()


def test_unused_latent_warning_is_relative_to_the_posterior_width(monkeypatch):
    """Latent means varying by 0.008 say much when each posterior is 0.005 wide (spectra at a small
    sigma), nothing when it is 1 wide (the prior)."""
    import affinevae.encoding as encoding
    from affinevae.analysis.quality import learning_warnings

    m = build_model("vae", image_shape=[1, 1, 32], latent_dim=2, encoder="mlp", decoder="mlp", likelihood="gaussian")
    rng = np.random.default_rng(0)
    means = (rng.standard_normal((50, 2)) * np.sqrt(0.008)).astype(np.float32)
    for width, warned in ((0.005, False), (1.0, True)):
        monkeypatch.setattr(encoding, "encode_dataset", lambda *a, width=width, **k: {
            "z_mean": means, "z_std": np.full_like(means, width)})
        lines = learning_warnings(m, np.zeros((50, 1, 1, 32), np.float32))
        assert any("content latents are unused" in line for line in lines) == warned, lines


def test_spectra_defaults_of_the_class_families():
    """Every family but the AVAE gets a Gaussian likelihood on spectra; those that discover their classes
    (jvae, jrvae) a sigma of at least SPECTRA_CLASS_SIGMA_FLOOR (at the noise their classes collapse)."""
    from affinevae.defaults import SPECTRA_CLASS_SIGMA_FLOOR, data_defaults

    s = synthetic_peaks(200, length=32, noise=0.02, seed=0).image_set()
    noise = s.meta["noise_sigma"]
    assert noise < SPECTRA_CLASS_SIGMA_FLOOR
    given = {"image_shape": [1, 1, 32]}
    for family, floor in (("ssvae", 0.01), ("ssrvae", 0.01), ("ssregrvae", 0.01), ("jvae", SPECTRA_CLASS_SIGMA_FLOOR),
                          ("jrvae", SPECTRA_CLASS_SIGMA_FLOOR)):
        opts, _, line = data_defaults(s, family, dict(given), None, None)
        assert opts["likelihood"] == "gaussian", family
        assert opts["sigma"] == pytest.approx(max(noise, floor), rel=1e-2), (family, opts["sigma"])
        assert f"sigma={opts['sigma']:.3g}" in line
        # the families with a shift render peaks with the warp decoder (the coordinate MLP blurred them)
        assert opts.get("decoder") == ("warp" if family.endswith("rvae") else None), family
    assert data_defaults(s, "rvae", dict(given), None, None)[0]["decoder"] == "warp"
    assert data_defaults(s, "rvae", {**given, "decoder": "spatial"}, None, None)[0]["decoder"] == "spatial"
    assert data_defaults(s, "jrvae", {**given, "sigma": 0.02}, None, None)[0]["sigma"] == 0.02  # given wins


def test_train_on_one_image_says_how_a_table_of_spectra_is_read(tmp_path, capsys):
    """An audit's (300, 128) table of spectra given without --signal-axis trained on one image without a word."""
    table = np.random.default_rng(0).random((40, 32)).astype(np.float32)
    np.save(tmp_path / "table.npy", table)
    # and a micrograph given to train whole (an audit): patches is named
    with pytest.warns(UserWarning, match=r"table.npy: one image \(40 x 32 pixels\) to train on; a micrograph is cut "
                                         r"into patches of its objects first \(affinevae patches .*table.npy --window W\); "
                                         r"a table of spectra, one per row, is read as 40 signals of 32 samples with "
                                         r"--signal-axis 1"):
        assert main(["train", "--model", "vae", "--data", str(tmp_path / "table.npy"), "--epochs", "1", "--latent-dim",
                     "2", "--no-progress", "--out", str(tmp_path / "one")]) == 0


def _emd_cube(path, cube, scale, offset, pixel=2.0):
    """Write (H, W, E) ``cube`` as a Berkeley EMD spectrum image: ``pixel`` nm map pixels, ``scale`` eV per
    channel from ``offset`` eV."""
    emd = pytest.importorskip("rsciio.emd")
    h, w, e = cube.shape
    axes = [dict(name="y", scale=pixel, offset=0.0, units="nm", size=h, navigate=True),
            dict(name="x", scale=pixel, offset=0.0, units="nm", size=w, navigate=True),
            dict(name="Energy loss", scale=scale, offset=offset, units="eV", size=e, navigate=False)]
    emd.file_writer(str(path), {"data": cube.astype(np.float32), "axes": axes, "original_metadata": {},
                                "metadata": {"General": {"title": "si"}, "Signal": {"signal_type": "EELS"}}})


def test_a_run_records_its_signals_calibration_and_warns_of_a_cube_calibrated_otherwise(tmp_path, small_cube, capsys):
    pytest.importorskip("dask")
    cube = small_cube.cube * 100 + 5
    _emd_cube(tmp_path / "a.emd", cube, 0.25, 280.0)
    _emd_cube(tmp_path / "b.emd", cube, 0.5, 260.0)
    run = tmp_path / "run"
    assert main(["train", "--model", "rvae", "--data", str(tmp_path / "a.emd"), "--signal-axis", "2", "--out", str(run),
                 "--latent-dim", "2", "--hidden", "16", "--no-progress", "--batch-size", "64", "--epochs", "1"]) == 0
    import json

    assert json.loads((run / "train.json").read_text())["signal_calibration"] == {
        "sample_size": 0.25, "sample_offset": 280.0, "sample_unit": "eV"}
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    assert "signal axis 0.25 eV per sample, from 280 eV" in capsys.readouterr().out
    for args in (["map", str(run), "--cube", str(tmp_path / "b.emd"), "--signal-axis", "2", "--out", str(tmp_path / "m")],
                 ["encode", str(run), "--data", str(tmp_path / "b.emd"), "--out", str(tmp_path / "e.npz")]):
        with warnings.catch_warnings(record=True) as held:
            warnings.simplefilter("always")
            assert main(args) == 0
        said = [str(w.message) for w in held if "per sample, from" in str(w.message)]
        assert len(said) == 1 and "\n" not in said[0], said
        assert "0.5 eV per sample, from 260 eV" in said[0] and "0.25 eV per sample, from 280 eV" in said[0]
    with warnings.catch_warnings(record=True) as held:
        warnings.simplefilter("always")
        assert main(["map", str(run), "--cube", str(tmp_path / "a.emd"), "--out", str(tmp_path / "own")]) == 0  # its own
    assert not [w for w in held if "per sample, from" in str(w.message)]


def test_spectra_readers_refuse_a_declared_size_over_the_memory_limit(tmp_path, small_cube, capsys):
    with open(tmp_path / "huge.npy", "wb") as f:  # a header declaring 8.9 TiB (as float32, 3 copies), no data
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (20000, 20000, 2048)})
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("si", data=small_cube.cube)
    np.savez(tmp_path / "c.npz", cube=small_cube.cube)
    cases = [["info", str(tmp_path / "huge.npy"), "--signal-axis", "2"],
             ["info", f"{tmp_path / 'c.h5'}:si", "--signal-axis", "2", "--max-memory", "10K"],
             ["info", str(tmp_path / "c.npz"), "--signal-axis", "2", "--max-memory", "10K"]]
    if importlib.util.find_spec("rsciio") is not None and importlib.util.find_spec("dask") is not None:
        _emd_cube(tmp_path / "c.emd", small_cube.cube, 0.25, 280.0)
        cases.append(["train", "--model", "rvae", "--data", str(tmp_path / "c.emd"), "--signal-axis", "2",
                      "--max-memory", "10K", "--out", str(tmp_path / "run")])
    for args in cases:
        capsys.readouterr()
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "the declared " in err and "of memory available (--max-memory" in err, err


def test_map_cube_refuses_image_options_and_keeps_the_files_pixel_size(tmp_path, small_cube, capsys):
    cube = tmp_path / "cube.npy"
    np.save(cube, small_cube.cube)
    run = tmp_path / "run"
    assert main(["train", "--model", "rvae", "--data", str(cube), "--signal-axis", "2", "--out", str(run),
                 "--latent-dim", "2", "--hidden", "16", "--no-progress", "--batch-size", "64", "--epochs", "1"]) == 0
    for extra, named in ((["--frame", "1"], "--frame"), (["--stretch", "asinh"], "--stretch"), (["--level", "1"], "--level")):
        capsys.readouterr()
        assert main(["map", str(run), "--cube", str(cube), *extra, "--out", str(tmp_path / "m")]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith(f"affinevae: error: {named} appl") and "--cube" in err, err
    assert not (tmp_path / "m").exists()
    if importlib.util.find_spec("rsciio") is not None:  # a spectrum image's 2 nm map pixels are read
        _emd_cube(tmp_path / "c.emd", small_cube.cube, 0.25, 280.0, pixel=2.0)
        meta = load_signals(tmp_path / "c.emd", 2).meta
        assert (meta["pixel_size"], meta["pixel_unit"], meta["sample_size"]) == (2.0, "nm", 0.25)


def test_map_cube_keeps_the_pixel_size_in_maps_npz(tmp_path, small_cube):
    pytest.importorskip("dask")
    _emd_cube(tmp_path / "c.emd", small_cube.cube, 0.25, 280.0, pixel=2.0)
    np.save(tmp_path / "c.npy", small_cube.cube)
    run = tmp_path / "run"
    assert main(["train", "--model", "rvae", "--data", str(tmp_path / "c.emd"), "--signal-axis", "2", "--out", str(run),
                 "--latent-dim", "2", "--hidden", "16", "--no-progress", "--batch-size", "64", "--epochs", "1"]) == 0
    assert main(["map", str(run), "--cube", str(tmp_path / "c.emd"), "--out", str(tmp_path / "m1")]) == 0
    assert main(["map", str(run), "--cube", str(tmp_path / "c.npy"), "--pixel-size", "0.5nm", "--out", str(tmp_path / "m2")]) == 0
    with np.load(tmp_path / "m1" / "maps.npz") as z:
        assert (float(z["pixel_size"]), str(z["pixel_unit"]), str(z["unit"])) == (2.0, "nm", "eV")
    with np.load(tmp_path / "m2" / "maps.npz") as z:
        assert (float(z["pixel_size"]), str(z["pixel_unit"])) == (0.5, "nm")


def test_a_calibration_in_another_prefix_of_the_same_unit_is_the_same_axis():
    """A review: an axis of 0.00025 keV per sample from 0.28 keV was warned of as calibrated otherwise than
    0.25 eV from 280 eV (the same axis); another size, offset or unit still differs."""
    from affinevae.data.spectra import calibration_differs, in_base_unit

    ev = dict(sample_size=0.25, sample_offset=280.0, sample_unit="eV")
    assert not calibration_differs(ev, dict(sample_size=0.00025, sample_offset=0.28, sample_unit="keV"))
    assert calibration_differs(ev, dict(ev, sample_size=0.5)) and calibration_differs(ev, dict(ev, sample_offset=270.0))
    assert calibration_differs(ev, dict(ev, sample_unit="cm-1")) and not calibration_differs(ev, None)
    assert in_base_unit(2.0, "cm-1") == (2.0, "cm-1") and in_base_unit(0.5, "µm") == (0.5e-6, "m")
