"""The low-pass filter of noisy data (ModelConfig.lowpass) and the train defaults for float images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

import affinevae as av
from affinevae.cli import main
from affinevae.data import ImageSet
from affinevae.data.imageset import noise_sigma
from affinevae.io import FIT_TARGETS
from affinevae.defaults import (CONTENT_ANCHOR, DEFAULT_EPOCHS, FLOAT_KIND, FLOAT_LOWPASS, FLOAT_SIGMA_FLOOR, MAX_EPOCHS,
                                SMALL_FLOAT_BATCH, SMALL_FLOAT_LR, SMALL_FLOAT_SET, SMALL_FLOAT_STEPS, data_defaults,
                                data_kind)
from affinevae.errors import AffineVAEError
from affinevae.nn.lowpass import GaussianLowpass, noise_gain


def test_the_filter_is_scipys_gaussian_and_keeps_flat_images_and_signals_1d():
    x = torch.rand(3, 2, 10, 13, generator=torch.Generator().manual_seed(0))
    for sigma in (0.6, 1.5, 6.0):  # 6: the kernel is wider than the image (mirrored again)
        ref = gaussian_filter(x.double().numpy(), (0, 0, sigma, sigma), mode="reflect",
                              truncate=np.ceil(3 * sigma) / sigma)
        np.testing.assert_allclose(GaussianLowpass(sigma)(x).numpy(), ref, atol=2e-6)
    flat = torch.full((2, 1, 9, 9), 0.37)
    torch.testing.assert_close(GaussianLowpass(2.0)(flat), flat)
    sig = torch.rand(4, 1, 1, 50)  # 1-D signals (C, 1, L): along their length only
    ref = gaussian_filter(sig.double().numpy(), (0, 0, 0, 1.5), mode="reflect", truncate=np.ceil(4.5) / 1.5)
    np.testing.assert_allclose(GaussianLowpass(1.5)(sig).numpy(), ref, atol=2e-6)
    noise = torch.randn(1, 1, 300, 300, generator=torch.Generator().manual_seed(1))
    assert float(GaussianLowpass(1.5)(noise).std()) == pytest.approx(noise_gain(1.5), rel=0.05)
    assert noise_gain(0) == 1.0 and noise_gain(1.0) == pytest.approx(0.28, abs=0.01)


def test_a_model_observes_its_images_filtered_with_the_noise_level_kept():
    """observe: the low-passed image, its contrast around each image's mean scaled by 1 / noise_gain, so
    white noise keeps its level while a smooth object gains that much against it; linear; the identity
    without a filter."""
    model = av.build_model("vae", image_shape=(1, 64, 64), latent_dim=2, likelihood="gaussian", lowpass=1.5)
    noise = 0.5 + 0.1 * torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    seen = model.observe(noise)
    torch.testing.assert_close(seen.mean((-2, -1)), noise.mean((-2, -1)))
    assert float(seen.std()) == pytest.approx(0.1, rel=0.08)
    blob = torch.exp(-((torch.arange(64.0) - 32) ** 2)[:, None] / 72 - ((torch.arange(64.0) - 32) ** 2)[None] / 72)
    gain = float((model.observe(blob[None, None])[0, 0] - blob.mean()).max() / (blob.max() - blob.mean()))
    # a Gaussian blob of 6 px keeps 36 / (36 + 1.5^2) of its peak through the blur, then gains 1 / noise_gain
    assert gain == pytest.approx(36 / (36 + 2.25) / noise_gain(1.5), rel=0.01)
    a, b = torch.rand(2, 3, 1, 64, 64)
    torch.testing.assert_close(model.observe(2 * a - b), 2 * model.observe(a) - model.observe(b), atol=1e-5, rtol=0)
    plain = av.build_model("vae", image_shape=(1, 64, 64), latent_dim=2)
    assert plain.observe(a) is a


def _pair(family="rvae", **options):
    """The same weights built with and without a low-pass filter of 1.5 px."""
    torch.manual_seed(0)
    base = dict(image_shape=(1, 16, 16), latent_dim=2, likelihood="gaussian", sigma=0.1, **options)
    plain = av.build_model(family, seed=0, **base)
    lp = av.build_model(family, seed=0, lowpass=1.5, **base)
    lp.load_state_dict(plain.state_dict())
    return plain.eval(), lp.eval()


@pytest.mark.parametrize("family,options", [
    ("vae", {"encoder": "mlp", "decoder": "mlp", "hidden": (16,)}),
    ("rvae", {"invariances": ("rotation",), "rotation_mode": "full", "group_channels": (4, 4)}),
    ("jrvae", {"num_classes": 3, "invariances": ("rotation",), "rotation_mode": "full", "group_channels": (4, 4)}),
])
def test_a_filtered_model_is_the_same_model_on_filtered_images_once(family, options):
    """Encoder, classifier and likelihood see the images filtered exactly once, whichever method runs:
    the model with lowpass on x gives what the same weights without it give on the filtered x."""
    plain, lp = _pair(family, **options)
    x = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    xf = lp.observe(x)
    assert set(lp.state_dict()) == set(plain.state_dict())  # the filter holds no saved state
    with torch.no_grad():
        a, b = lp.encode(x), plain.encode(xf)
        torch.testing.assert_close(a.z_mean, b.z_mean)
        torch.testing.assert_close(lp(x, sample=False).elbo, plain(xf, sample=False).elbo)
        if family == "jrvae":
            torch.testing.assert_close(a.parts["class_prob"], b.parts["class_prob"])


def test_lowpass_round_trips_and_bad_values_are_one_line(tmp_path):
    _, lp = _pair("vae", encoder="mlp", decoder="mlp", hidden=(16,))
    lp.save(tmp_path / "m")
    back = av.load(tmp_path / "m")
    assert back.config.lowpass == 1.5
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(back.encode(x).z_mean, lp.encode(x).z_mean, rtol=0, atol=0)
    for bad, words in ((-1.0, "lowpass must be a finite number >= 0"), (float("nan"), "lowpass must be a finite"),
                       (40.0, "lowpass must be at most the image size (16 px)")):
        with pytest.raises(AffineVAEError, match=words.replace("(", r"\(").replace(")", r"\)")):
            av.build_model("vae", image_shape=(1, 16, 16), likelihood="gaussian", lowpass=bad)
    with pytest.raises(AffineVAEError, match="lowpass needs a real-valued likelihood"):
        av.build_model("rvae", image_shape=(1, 16, 16), lowpass=1.0)
    avae = av.build_model("avae", image_shape=(1, 16, 16), latent_dim=2, likelihood="gaussian", lowpass=1.0)
    assert avae.config.inner_config["lowpass"] == 1.0 and avae.lowpass_filter is avae.vae.lowpass_filter
    seen = []  # the pose head and a refiner added later read the observed images
    x = torch.rand(2, 1, 16, 16)
    avae.head.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    avae.add_refiner().register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        avae.head(x), avae.refiner(x)
    torch.testing.assert_close(seen[0], avae.observe(x))
    torch.testing.assert_close(seen[1], avae.observe(x))


def float_set(n=40, noise=0.2, seed=0, size=12):
    """Zero-mean noisy floats as a loader leaves them: min-max scaled onto [0, 1], saying so (fewer than 50 by
    default: too few for train to measure their orientations)."""
    raw = np.random.default_rng(seed).normal(0.0, noise, (n, 1, size, size)).astype(np.float32)
    lo, span = float(raw.min()), float(np.ptp(raw))
    return ImageSet((raw - lo) / span, meta={"pixel_scaling": {"kind": "minmax", "offset": lo, "divisor": span}})


def test_float_images_get_a_gaussian_likelihood_with_the_measured_noise():
    data = float_set()
    assert data_kind(data) == FLOAT_KIND and data_kind(ImageSet(data.images)) is None
    # asinh-stretched measurements too (an astronomer's raw-flux galaxies took Bernoulli: spirals' angles 0.07);
    # 12-bit cameras' integers divided by their range are not floats
    stretched = {"kind": "asinh", "offset": 8.0, "soft": 19.3, "floor": -2.2, "divisor": 9.8}
    assert data_kind(ImageSet(data.images, meta={"pixel_scaling": stretched})) == FLOAT_KIND
    assert data_kind(ImageSet(data.images, meta={"pixel_scaling": {"kind": "bits", "offset": 0.0, "divisor": 4095.0}})) is None
    full = {"latent_dim": 2, "rotation_mode": "full"}
    big = float_set(n=SMALL_FLOAT_SET)
    opts, train, line = data_defaults(big, "rvae", full, None, None)
    sigma = float(f"{noise_sigma(big.images):.3g}")
    assert opts == {**full, "likelihood": "gaussian", "sigma": sigma}
    assert train == {"batch_size": 100, "lr": 3e-3, "kl_warmup": 0.0, "epochs": DEFAULT_EPOCHS}  # the family's
    assert line == (f"affinevae: float-image defaults (rvae over the full circle): likelihood=gaussian sigma={sigma:.3g} "
                    "(the pixel noise) batch_size=100 lr=0.003 (override with --likelihood/--sigma/--batch-size/--lr)")
    # an audit: fewer float images over the full circle (200-2 000 particles) left the content unused at batches
    # of 100 for 10 epochs (k-means 0.57-0.64; 0.87-1.00 in batches of 32 for about 500 steps, 0.88-1.00 for 1 000)
    for n, epochs in ((SMALL_FLOAT_SET - 1, 13), (400, 77), (200, 143), (50, 500)):
        small = float_set(n=n)
        opts, train, line = data_defaults(small, "rvae", full, None, None)
        assert train == {"batch_size": SMALL_FLOAT_BATCH, "lr": SMALL_FLOAT_LR, "kl_warmup": 0.0,
                         "epochs": min(epochs, MAX_EPOCHS)}
        assert f"batch_size=32 (fewer than {SMALL_FLOAT_SET} float images over the full circle) lr=0.001" in line
        assert (f"epochs={train['epochs']} (about {SMALL_FLOAT_STEPS} steps for {n} images) (override with "
                in line) == (epochs != DEFAULT_EPOCHS)
    assert data_defaults(small, "rvae", full, 64, 3)[1] == {"batch_size": 64, "lr": 3e-3, "kl_warmup": 0.0, "epochs": 3}
    assert data_defaults(small, "rvae", full, None, 3)[1]["batch_size"] == SMALL_FLOAT_BATCH  # given epochs: kept
    # at 3e-3 in batches of 32 one run in four to six turned a third of one shape over (the content splitting it)
    assert data_defaults(small, "rvae", full, None, None, lr=2e-3)[1]["lr"] == 2e-3  # a given --lr wins
    assert data_defaults(small, "rvae", full, 32, None)[1]["lr"] == SMALL_FLOAT_LR  # the same batch given: the same lr
    for given in ({"rotation_mode": "gaussian"}, {**full, "encoder": "mlp"}):  # not the full circle's equivariant model
        assert data_defaults(small, "rvae", given, None, None)[1]["batch_size"] == 100
    assert data_defaults(ImageSet(small.images), "rvae", full, None, None)[1]["batch_size"] == 100  # not float images
    assert data_defaults(small, "crvae", {**full, "num_classes": 2}, None, None)[1]["batch_size"] == 100  # not measured
    sigma = float(f"{noise_sigma(data.images):.3g}")
    assert data_defaults(data, "rvae", full, None, None)[0] == {**full, "likelihood": "gaussian", "sigma": sigma}
    # with a low-pass filter: the same (the filter keeps the noise's level)
    assert data_defaults(data, "crvae", {"num_classes": 2, "lowpass": 1.5}, None, None)[0]["sigma"] == sigma
    # what the user gives wins; a Bernoulli asked for gets no sigma; a floor for noiseless data
    assert data_defaults(data, "rvae", {"likelihood": "bernoulli"}, None, None)[0] == {"likelihood": "bernoulli"}
    assert data_defaults(data, "rvae", {"sigma": 0.3}, None, None)[0]["sigma"] == 0.3
    # images of 24 px or more: behind the low-pass filter (not with a Bernoulli asked for)
    wide = float_set(n=10, size=24)
    opts, _, line = data_defaults(wide, "rvae", {}, None, None)
    assert opts == {"likelihood": "gaussian", "lowpass": FLOAT_LOWPASS, "sigma": float(f"{noise_sigma(wide.images):.3g}")}
    assert line.startswith("affinevae: float-image defaults: rotation_mode=gaussian kept (10 images are too few to "
                           "measure the orientations")  # and said why the angle prior is kept
    assert "likelihood=gaussian lowpass=1.5 sigma=" in line
    assert "(override with --set/--likelihood/--lowpass/--sigma/--batch-size/--lr)" in line
    assert data_defaults(wide, "rvae", {"likelihood": "bernoulli"}, None, None)[0] == {"likelihood": "bernoulli"}
    assert data_defaults(wide, "rvae", {"lowpass": 0}, None, None)[0]["lowpass"] == 0
    # over the full circle (the equivariant encoder's pose anchor) the filter comes with the content anchor
    four = {**full, "latent_dim": 4}
    full_opts, _, line = data_defaults(wide, "rvae", four, None, None)
    assert full_opts["content_anchor"] == CONTENT_ANCHOR == 10.0 and "lowpass=1.5 content_anchor=10 sigma=" in line
    config = av.build_model("rvae", image_shape=[1, 24, 24], **full_opts).config
    assert (config.content_anchor, config.content_targets) == (10.0, "components")
    assert data_defaults(wide, "rvae", {"rotation_mode": "full"}, None, None)[0]["content_anchor"] == 10.0  # 10 latents
    for given in ({"encoder": "mlp"}, {"pose_anchor": 0.0}, {"lowpass": 0}, {"content_anchor": 0.0}):
        assert data_defaults(wide, "rvae", {**four, **given}, None, None)[0].get("content_anchor", 0.0) == 0.0
    # 1-3 latents: no rule; the model's own default (100, t-SNE targets)
    assert "content_anchor" not in data_defaults(wide, "rvae", full, None, None)[0]
    # the crVAE (no content anchor of its own): 10 on principal components at any number of latents
    two_c, _, line = data_defaults(wide, "crvae", {**full, "num_classes": 2}, None, None)
    assert (two_c["content_anchor"], two_c["content_targets"]) == (10.0, "components")
    assert "content_anchor=10 content_targets=components" in line
    four_c = data_defaults(wide, "crvae", {**four, "num_classes": 2}, None, None)[0]
    assert four_c["content_anchor"] == 10.0 and "content_targets" not in four_c  # components already
    flat = ImageSet(np.full((4, 1, 8, 8), 0.5, np.float32), meta=data.meta)
    assert data_defaults(flat, "rvae", {}, None, None)[0]["sigma"] == FLOAT_SIGMA_FLOOR
    # other families keep theirs (the joint model's classes collapsed under the Gaussian: bench_particles.py)
    assert "likelihood" not in data_defaults(data, "jrvae", {"num_classes": 3}, None, None)[0]
    assert "likelihood" not in data_defaults(data, "vae", {}, None, None)[0]


def test_cli_train_with_lowpass_on_a_float_stack(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "p.npy", rng.normal(0.0, 1.0, (40, 16, 16)).astype(np.float32))
    argv = ["train", "--model", "rvae", "--data", str(tmp_path / "p.npy"), "--invariances", "rotation", "--latent-dim",
            "2", "--hidden", "8,8", "--epochs", "1", "--lowpass", "1.5", "--no-progress", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "affinevae: float-image defaults: rotation_mode=gaussian kept (40 images are too few" in out
    assert "likelihood=gaussian sigma=" in out
    cfg = av.load(tmp_path / "r").config
    assert (cfg.lowpass, cfg.likelihood) == (1.5, "gaussian") and 0.05 <= cfg.sigma < 0.3
    assert main([*argv[:-2], "--lowpass", "-1", "--out", str(tmp_path / "r2")]) == 2
    assert "lowpass must be a finite number >= 0, got -1.0" in capsys.readouterr().err


def test_a_posterior_narrower_than_the_prior_but_the_same_for_every_image_is_unused():
    """The collapse seen on noisy particles under a Gaussian likelihood: every image's posterior is
    N(0, 0.2^2), a KL of about 1 nat per latent, yet it says nothing of the image."""
    from affinevae.analysis.quality import learning_warnings

    images = av.data.load_dataset("mnist", split="test", n=60).images
    model = av.build_model("vae", latent_dim=3, encoder="mlp", decoder="mlp", hidden=(16,))
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.zero_()
        model.encoder.net[-1].bias[3:] = 2 * np.log(0.2)  # the log-variances
    enc = av.evaluation.encode_dataset(model, images)
    assert np.allclose(enc["z_std"], 0.2, atol=1e-5)
    said = learning_warnings(model, images)
    assert said and said[0].startswith("all 3 content latents are unused") and "--lowpass 1.5" in said[0]


def test_a_run_from_before_the_float_defaults_resumes_as_it_was_built(tmp_path, capsys):
    """A float stack trained with the Bernoulli likelihood (the default until the float-image defaults):
    --resume without options keeps its likelihood, sigma and (no) filter, says so, and continues."""
    np.save(tmp_path / "p.npy", np.random.default_rng(0).normal(0.0, 1.0, (40, 24, 24)).astype(np.float32))
    argv = ["train", "--model", "rvae", "--data", str(tmp_path / "p.npy"), "--invariances", "rotation", "--latent-dim",
            "2", "--hidden", "8,8", "--no-progress", "--out", str(tmp_path / "r")]
    assert main([*argv, "--epochs", "1", "--likelihood", "bernoulli"]) == 0
    capsys.readouterr()
    assert main([*argv, "--epochs", "2", "--resume"]) == 0
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if s.startswith(f"affinevae: resuming {tmp_path / 'r'} with its model options: "))
    assert line.endswith("(a resumed run keeps them)")  # an audit: it said 'override with', which is refused
    assert all(f" {o}" in line for o in ("likelihood=bernoulli", "lowpass=0.0", "sigma=1.0"))
    assert "float-image defaults" not in out
    assert av.load(tmp_path / "r").config.likelihood == "bernoulli"
    assert av.training.read_run(tmp_path / "r")["epochs_done"] == 2
    # a run at today's defaults: their line on resume is the run's own, without an override hint
    argv[-1] = str(tmp_path / "d")
    assert main([*argv, "--epochs", "1"]) == 0
    assert "(override with " in capsys.readouterr().out
    assert main([*argv, "--epochs", "2", "--resume"]) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if "float-image defaults" in s)
    assert line.endswith("(the run's own: a resumed run keeps them)") and "override" not in line


def test_the_float_defaults_content_anchor_trains_on_fewer_images_than_latents(tmp_path, capsys):
    """The content anchor's principal components on 8 images for 10 latents: the rest at 0, no crash."""
    np.save(tmp_path / "f.npy", np.random.default_rng(0).normal(0.0, 1.0, (8, 24, 24)).astype(np.float32))
    assert main(["train", "--model", "rvae", "--data", str(tmp_path / "f.npy"), "--set", "rotation_mode=full",
                 "--set", "group_channels=4,4", "--hidden", "8", "--epochs", "1", "--val-split", "0", "--no-progress",
                 "--out", str(tmp_path / "r")]) == 0
    assert "content_anchor=10" in capsys.readouterr().out
    assert av.load(tmp_path / "r").config.latent_dim > 8


def test_resume_without_the_first_commands_options_continues_the_run_as_it_was_built(tmp_path, capsys):
    """train --resume with only --data and --out takes every model option the first command gave (not
    today's defaults, which would build another model and be refused), says which, and continues."""
    np.save(tmp_path / "p.npy", np.random.default_rng(0).normal(0.0, 1.0, (40, 24, 24)).astype(np.float32))
    base = ["train", "--model", "rvae", "--data", str(tmp_path / "p.npy"), "--no-progress", "--out", str(tmp_path / "r")]
    assert main([*base, "--epochs", "1", "--set", "rotation_mode=full", "--set", "group_channels=4,4",
                 "--invariances", "rotation,translation", "--latent-dim", "3", "--lowpass", "2.5", "--hidden", "8"]) == 0
    first = av.load(tmp_path / "r").config
    capsys.readouterr()
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if s.startswith(f"affinevae: resuming {tmp_path / 'r'} with its model options: "))
    for shown in ("rotation_mode=full", "latent_dim=3", "lowpass=2.5", "invariances=rotation,translation"):
        assert shown in line
    assert av.load(tmp_path / "r").config == first and av.training.read_run(tmp_path / "r")["epochs_done"] == 2
    # an option given again that differs is still another model: refused in one line
    assert main([*base, "--epochs", "3", "--resume", "--latent-dim", "5"]) == 2
    said = capsys.readouterr()  # the option given first, then what follows from it (the t-SNE targets of 3 latents)
    assert "different rvae model (latent_dim 3 there, 5 here;" in said.err
    assert "before the first step" not in said.out  # refused before it would start
    assert main([*base, "--epochs", "3", "--resume", "-n", "30"]) == 2  # other data: refused alike
    said = capsys.readouterr()
    assert "trained on other data" in said.err and "before the first step" not in said.out
    assert main([*base, "--epochs", "3", "--resume"]) == 0  # it reads the targets the run derived: no wait said
    assert "before the first step" not in capsys.readouterr().out and (tmp_path / "r" / FIT_TARGETS).is_file()
    (tmp_path / "r" / FIT_TARGETS).unlink()  # without them, it derives them again and says so
    assert main([*base, "--epochs", "4", "--resume"]) == 0
    assert "affinevae: before the first step the training images are synchronised" in capsys.readouterr().out


def test_the_filters_outputs_units_and_checks():
    """Signals keep their noise level too (the 1-D gain); decode/reconstruct give images in the data's
    units (the contrast scaling undone); the memory check still plans a filtered model; under bf16 the
    likelihood's target stays float32; observe takes an array as any input."""
    from affinevae.models.base import planned_state

    sig = av.build_model("vae", image_shape=(1, 1, 256), latent_dim=2, likelihood="gaussian", lowpass=1.5,
                         encoder="mlp", decoder="mlp", hidden=(8,))
    noise = 0.5 + 0.1 * torch.randn(1, 1, 1, 20000, generator=torch.Generator().manual_seed(0))
    assert float(sig.observe(noise).std()) == pytest.approx(0.1, rel=0.05)
    model = av.build_model("vae", image_shape=(1, 16, 16), latent_dim=2, likelihood="gaussian", lowpass=1.5,
                           encoder="mlp", decoder="mlp", hidden=(8,))
    x = torch.rand(3, 1, 16, 16)
    torch.testing.assert_close(model.unobserve(model.observe(x)), GaussianLowpass(1.5)(x), atol=1e-5, rtol=0)
    with torch.no_grad():  # reconstruct/decode: the decoder's mean image in the data's units
        torch.testing.assert_close(model.reconstruct(x), model.unobserve(model(x, sample=False).x_params))
    assert planned_state(lambda: av.build_model("vae", image_shape=(1, 32, 32), likelihood="gaussian", lowpass=1.5),
                         "here") is not None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.observe(x).dtype == torch.float32
    torch.testing.assert_close(model.observe(x.numpy()[:, 0]), model.observe(x))


def test_patch_sets_of_faint_scattered_objects_get_the_filter():
    """centre_snr: the objects' mean contrast in the centred disc per noise sigma. Below 1 a scattered
    patch set of windows >= 24 px takes lowpass 1.5 (said why); bright objects, lattices, small windows
    and a Bernoulli asked for take none."""
    from affinevae.defaults import LOWPASS_SNR, centre_snr

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    blob = np.exp(-((yy - 15.5) ** 2 + (xx - 15.5) ** 2) / (2 * 4.0 ** 2))

    def patches(amplitude, lattice_order=-0.01, size=32):
        x = 0.5 + amplitude * blob[:size, :size] + 0.05 * rng.standard_normal((60, 1, size, size))
        return ImageSet(x.astype(np.float32), meta={"kind": "patches", "window": size, "noise_sigma": 0.05,
                                                     "lattice_order": lattice_order})

    faint, bright = patches(0.03), patches(0.5)
    assert centre_snr(faint) < LOWPASS_SNR < centre_snr(bright)
    opts, _, line = data_defaults(faint, "rvae", {}, None, None)
    assert opts["lowpass"] == FLOAT_LOWPASS and opts["content_anchor"] == CONTENT_ANCHOR  # scattered: equivariant
    assert "content_anchor" not in data_defaults(bright, "rvae", {}, None, None)[0]
    assert f"lowpass=1.5 (objects fainter than the noise: centre SNR {centre_snr(faint):.2f})" in line
    assert "lowpass" not in data_defaults(bright, "rvae", {}, None, None)[0]
    assert "lowpass" not in data_defaults(patches(0.03, lattice_order=0.4), "rvae", {}, None, None)[0]
    assert "lowpass" not in data_defaults(patches(0.03, size=16), "rvae", {}, None, None)[0]
    assert "lowpass" not in data_defaults(faint, "rvae", {"likelihood": "bernoulli"}, None, None)[0]
