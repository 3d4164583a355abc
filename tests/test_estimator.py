"""The scikit-learn estimator: scikit-learn's own checks, image layouts, pose columns, Pipeline and GridSearchCV."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

import affinevae as av
from affinevae.errors import AffineVAEError
from affinevae.estimator import NOT_APPLICABLE_CHECKS, Estimator

# small enough for scikit-learn's ~45 checks in seconds; Gaussian: the checks' data are not in [0, 1]
TINY = dict(latent_dim=2, epochs=1, batch_size=32, encoder="mlp", decoder="mlp", hidden=(8,), likelihood="gaussian",
            device="cpu")
MLP = dict(encoder="mlp", decoder="mlp", hidden=(32,), device="cpu")
SS = dict(encoder="mlp", hidden=(32,), device="cpu")  # the joint and semi-supervised families' decoders are their own


@parametrize_with_checks([Estimator("vae", **TINY)], expected_failed_checks=lambda est: NOT_APPLICABLE_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@torch.no_grad()
def decode(est, z, **pose):
    return est.model_.decode(torch.as_tensor(z), **pose).numpy()


@pytest.fixture(scope="module")
def digits():
    d = av.data.load_mnist("train", n=240, digits=(0, 1))
    return d.images[:, 0], d.labels  # (N, 28, 28) in [0, 1]


def test_layouts_give_the_same_codes_and_inverse_keeps_the_fit_layout(digits):
    x, _ = digits
    est = Estimator("vae", latent_dim=3, epochs=1, **MLP).fit(x)
    assert est.image_shape_ == (1, 28, 28) and est.n_features_in_ == 784
    z = est.transform(x[:10])
    assert z.shape == (10, 3) and z.dtype == np.float32
    assert np.array_equal(est.transform(x[:10, None]), z)
    assert np.array_equal(est.transform(x[:10].reshape(10, -1).astype(np.float64)), z.astype(np.float64))
    assert est.transform(x[:10].astype(np.float64)).dtype == np.float64
    back = est.inverse_transform(z)
    assert back.shape == (10, 28, 28) and back.dtype == np.float32
    assert np.allclose(back[:, None], decode(est, z), atol=1e-6)
    flat = Estimator("vae", image_shape=(28, 28), latent_dim=3, epochs=1, **MLP).fit(x.reshape(len(x), -1))
    assert flat.image_shape_ == (1, 28, 28) and flat.inverse_transform(z).shape == (10, 784)
    assert np.array_equal(flat.transform(x[:10]), z)  # same seed, same data: the same model
    with pytest.raises(AffineVAEError, match="flat rows have 784 values, image_shape"):
        Estimator("vae", image_shape=(20, 20), **MLP).fit(x.reshape(len(x), -1))
    for bad in ("abc", 28, (28.5, 28), (True, 28), (28,), (0, 28, 28)):  # one line, not int()'s ValueError
        with pytest.raises(AffineVAEError, match="image_shape must be"):
            Estimator("vae", image_shape=bad, **MLP).fit(x.reshape(len(x), -1))
    with pytest.raises(AffineVAEError, match="the fitted model expects"):
        est.transform(np.zeros((2, 1, 16, 49), np.float32))
    with pytest.raises(ValueError, match="X has 100 features, but Estimator is expecting 784"):
        est.transform(np.zeros((2, 100), np.float32))


def test_pose_columns_of_an_rvae(digits):
    x, _ = digits
    est = Estimator("rvae", latent_dim=2, pose=True, epochs=1, invariances=("rotation", "translation"),
                    hidden=(16,), device="cpu").fit(x[:64])
    z = est.transform(x[:8])
    assert list(est.get_feature_names_out()) == ["z0", "z1", "angle", "shift_x", "shift_y"] and z.shape == (8, 5)
    codes = av.evaluation.encode_dataset(est.model_, x[:8], elbo=False)
    assert np.allclose(z[:, 2], codes["angle"]) and np.allclose(z[:, 3:], codes["shift"])
    turned = est.inverse_transform(z)
    expected = decode(est, z[:, :2], angle=torch.as_tensor(z[:, 2]), shift=torch.as_tensor(z[:, 3:]))[:, 0]
    assert np.allclose(turned, expected, atol=1e-6)
    upright = est.inverse_transform(z[:, :2])  # content only: the canonical pose
    assert np.allclose(upright, decode(est, z[:, :2])[:, 0], atol=1e-6)
    assert not np.allclose(upright, turned, atol=1e-3)
    with pytest.raises(AffineVAEError, match="Z must have 2 or 5 columns"):
        est.inverse_transform(z[:, :4])
    with pytest.raises(AffineVAEError, match="pose=True needs a model with a pose"):
        Estimator("vae", pose=True, **MLP).fit(x[:8])


def test_an_avaes_affine_pose_columns_round_trip_and_reversed_views_are_read(digits):
    """transform="affine": the (N, 2) scale went to decode's scale keyword (refused) and the shear was no column,
    so inverse_transform(transform(X)) failed or rendered without it (0.53 off the model's reconstruction);
    X[::-1] was torch's negative-stride error."""
    x, _ = digits
    est = Estimator("avae", inner="vae", transform="affine", pose=True, latent_dim=2, epochs=1, batch_size=32,
                    **MLP).fit(x[:64])
    assert est.pose_columns_ == ["angle", "shift_x", "shift_y", "scale_u", "scale_v", "shear"]
    z = est.transform(x[:8])
    with torch.no_grad():
        want = est.model_.reconstruct(torch.as_tensor(x[:8, None])).numpy()[:, 0]
        shear = est.model_.encode(torch.as_tensor(x[:8, None])).pose.shear
    assert float(shear.abs().max()) > 0 and np.allclose(z[:, -1], shear.numpy(), atol=1e-6)
    np.testing.assert_allclose(est.inverse_transform(z), want, atol=1e-5)
    np.testing.assert_array_equal(est.transform(x[:8][::-1]), est.transform(np.ascontiguousarray(x[:8][::-1])))


def test_score_is_the_mean_elbo(digits):
    x, _ = digits
    est = Estimator("vae", latent_dim=2, epochs=2, seed=3, **MLP).fit(x)
    expected = av.evaluation.encode_dataset(est.model_, x, seed=3)["elbo"].mean()
    assert est.score(x) == pytest.approx(float(expected), rel=1e-6)
    assert est.score(x) == est.score(x) and est.score(x) > Estimator("vae", latent_dim=2, epochs=1, lr=1e-6, **MLP).fit(x).score(x)
    assert len(est.history_) == 2 and "val_loss" not in est.history_[0]  # val_split 0 by default
    with pytest.raises(AffineVAEError, match=r"likelihood 'bernoulli' needs pixel values in \[0, 1\]"):
        est.score(x * 2)


def test_params_clone_and_extra_options():
    est = Estimator("rvae", latent_dim=4, invariances=("rotation",), beta=2.0)
    params = est.get_params()
    assert params["invariances"] == ("rotation",) and params["beta"] == 2.0 and params["latent_dim"] == 4
    twin = clone(est)
    assert twin.get_params() == params and twin is not est
    est.set_params(latent_dim=6, rotation_prior=1.0)
    assert est.latent_dim == 6 and est.get_params()["rotation_prior"] == 1.0
    assert "rotation_prior" not in twin.get_params()
    assert "invariances=('rotation',)" in repr(est)
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(model__beta=1.0)
    with pytest.raises(AffineVAEError, match="did you mean 'beta'"):
        Estimator("vae", betta=1.0, **MLP).fit(np.zeros((4, 8, 8), np.float32))
    # a misspelt training option: the list named the model's options only, so the right name was never shown
    with pytest.raises(AffineVAEError, match="did you mean 'weight_decay'") as err:
        Estimator("vae", weight_decy=1e-4, **MLP).fit(np.zeros((4, 8, 8), np.float32))
    assert "Estimator('vae')" in str(err.value) and "kl_warmup" in str(err.value) and "hidden" in str(err.value)
    # an avae takes its inner model's options at the top level (a review found the check above refusing them)
    fitted = Estimator("avae", inner="rvae", rotation_prior=0.5, epochs=1, latent_dim=2).fit(
        np.random.default_rng(0).random((8, 1, 16, 16), np.float32))
    assert fitted.model_.config.inner_config["rotation_prior"] == 0.5


def test_conditional_model_takes_labels(digits):
    x, labels = digits
    names = np.where(labels == 0, "zero", "one")
    est = Estimator("cvae", latent_dim=2, epochs=1, **MLP).fit(x[:64], names[:64])
    assert list(est.classes_) == ["one", "zero"] and est.model_.config.num_classes == 2
    assert est.transform(x[:5], names[:5]).shape == (5, 2)
    assert est.inverse_transform(np.zeros((2, 2)), ["zero", "one"]).shape == (2, 28, 28)
    with pytest.raises(AffineVAEError, match="class-conditional: transform needs y"):
        est.transform(x[:5])
    with pytest.raises(AffineVAEError, match=r"labels the model was not fitted with \(known: \['one', 'zero'\]\)"):
        est.transform(x[:2], ["zero", "two"])
    # a fitted Estimator is saved as scikit-learn estimators are (pickle, joblib): the same latents after loading
    import pickle

    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.transform(x[:5], names[:5]), est.transform(x[:5], names[:5]))
    with pytest.raises(AffineVAEError, match="class-conditional: fit needs y .*requires y to be passed, but the target y is None"):
        Estimator("cvae", **MLP).fit(x[:8])


def test_sklearn_tags_require_labels_for_the_conditional_families_only():
    """The tags read the registered families' own ``conditional`` flag (an AVAE: its inner model's):
    the semi-supervised and joint families take no required y."""
    required = {m: Estimator(m).__sklearn_tags__().target_tags.required
                for m in ("vae", "cvae", "crvae", "rvae", "ssrvae", "jrvae", "avae")}
    assert required == {"vae": False, "cvae": True, "crvae": True, "rvae": False, "ssrvae": False,
                        "jrvae": False, "avae": False}
    assert Estimator("avae", inner="cvae").__sklearn_tags__().target_tags.required


def test_semi_supervised_models_take_partial_labels_and_targets(digits):
    """The semi-supervised families train on the known labels (-1 unknown, as scikit-learn's
    semi-supervised estimators take them) or targets (NaN unknown); they were dropped silently."""
    x, labels = digits
    names = np.where(labels[:64] == 0, "zero", "one").astype(object)
    names[20:] = -1
    ss = {"encoder": "mlp", "hidden": (16,), "device": "cpu"}  # a pose decoder: no decoder='mlp'
    est = Estimator("ssvae", latent_dim=2, epochs=1, **ss).fit(x[:64], names)
    assert list(est.classes_) == ["one", "zero"] and est.model_.config.num_classes == 2
    assert "train_classifier" in est.history_[0] and est.transform(x[:3]).shape == (3, 2)
    targets = np.full(64, np.nan)
    targets[:20] = labels[:20] / 9
    reg = Estimator("ssregvae", latent_dim=2, epochs=1, likelihood="gaussian", **ss).fit(x[:64], targets)
    assert "train_regressor" in reg.history_[0] and reg.classes_ is None and reg.model_.config.target_dim == 1
    with pytest.raises(AffineVAEError, match="semi-supervised: fit needs y"):
        Estimator("ssvae", **ss).fit(x[:8])
    for model, y, match in [("ssregvae", np.array(["a"] * 8), "y must be numeric targets"),
                            ("ssvae", np.array([None] + [1] * 7, dtype=object), r"y holds a missing label \(None at image 0\)"),
                            ("ssvae", np.array([np.nan] + [1.0] * 7), "y holds NaN")]:
        with pytest.raises(AffineVAEError, match=match):  # not a ValueError/TypeError from numpy
            Estimator(model, latent_dim=2, epochs=1, **ss).fit(x[:8], y)
    # the Python API refuses what `train` refuses: no labels at all, labels that are not numbers
    model = av.build_model("ssvae", latent_dim=2, num_classes=2, encoder="mlp", hidden=[16])
    with pytest.raises(AffineVAEError, match="semi-supervised: the training images need labels"):
        av.fit(model, x[:20], av.TrainConfig(epochs=1, progress=False))
    with pytest.raises(AffineVAEError, match="labels must be integers .-1 for unknown., got dtype <U"):
        model.loss(torch.as_tensor(x[:4]), np.array(["a"] * 4))
    with pytest.raises(AffineVAEError, match=r"labels must have shape \(N,\), got \(4, 2\)"):
        model.loss(torch.as_tensor(x[:4]), np.zeros((4, 2)))


def test_pipeline_with_kmeans_separates_digits(digits):
    x, labels = digits
    pipe = make_pipeline(Estimator("vae", latent_dim=2, epochs=3, batch_size=32, **MLP), KMeans(2, n_init=5, random_state=0))
    clusters = pipe.fit_predict(x)
    assert adjusted_rand_score(labels, clusters) > 0.8


def test_grid_search_over_latent_dim(digits):
    x, _ = digits
    search = GridSearchCV(Estimator("vae", epochs=1, **MLP), {"latent_dim": [1, 4]}, cv=2).fit(x)
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores)) and np.all(scores < 0)  # mean ELBO, nats per image
    assert search.best_params_["latent_dim"] == [1, 4][int(np.argmax(scores))]
    assert search.best_estimator_.model_.config.latent_dim == search.best_params_["latent_dim"]
    assert search.best_estimator_.transform(x[:3]).shape == (3, search.best_params_["latent_dim"])


def test_a_signal_models_shift_is_one_column_in_samples_and_inverse_transform_takes_it_back():
    """Flat rows are 1-D signals (1, 1, F): an rVAE's pose is one shift in samples, named 'shift'."""
    rng = np.random.default_rng(0)
    t = np.arange(48)
    centres = rng.uniform(16, 32, 96)
    X = np.exp(-0.5 * ((t[None] - centres[:, None]) / 2.0) ** 2).astype(np.float32)  # peaks at random places
    est = Estimator("rvae", latent_dim=2, epochs=1, batch_size=32, likelihood="gaussian", pose=True, seed=0).fit(X)
    assert est.pose_columns_ == ["shift"]
    assert list(est.get_feature_names_out()) == ["z0", "z1", "shift"]
    Z = est.transform(X)
    assert Z.shape == (96, 3)
    with torch.no_grad():
        codes = est.model_.encode(torch.as_tensor(X[:4]).reshape(4, 1, 1, 48))
    np.testing.assert_allclose(Z[:4, 2], codes.parts["shift"].numpy(), rtol=1e-5, atol=1e-5)  # samples
    back = est.inverse_transform(Z[:4])
    assert back.shape == (4, 48)
    expected = decode(est, Z[:4, :2], shift=codes.parts["shift"]).reshape(4, 48)  # decode takes samples here
    np.testing.assert_allclose(back, expected, rtol=1e-4, atol=1e-5)


def test_a_failed_fit_leaves_the_estimator_as_it_was(digits):
    """A fit refused mid-way set the fitted attributes first: a fresh estimator then passed
    check_is_fitted and transform raised AttributeError; a fitted one got the new data's shape with
    the old model, so transform refused both. Now a failed fit changes nothing."""
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    x = digits[0][:40]
    est = Estimator("vae", latent_dim=2, epochs=1, **MLP)
    with pytest.raises(AffineVAEError, match="needs pixel values in"):
        est.fit(x * 255)
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    codes = est.fit(x).transform(x[:5])
    fitted = {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_")}
    with pytest.raises(AffineVAEError, match="needs pixel values in"):
        est.fit(np.random.default_rng(0).random((20, 32, 32)).astype(np.float32) * 255)
    assert {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_")}.keys() == fitted.keys()
    assert est.image_shape_ == fitted["image_shape_"] and est.model_ is fitted["model_"]
    np.testing.assert_array_equal(est.transform(x[:5]), codes)
    with pytest.raises(AffineVAEError, match=r"the random seed is the option seed .*: give seed=3"):
        Estimator("vae", random_state=3).fit(x)


def test_refusals_are_one_line_and_a_model_that_learned_nothing_is_said():
    """scikit-learn's refusals come without their array dumps; a fit whose content latents are unused warns
    as `train` does (float particles without the float defaults learned nothing, silently)."""
    import warnings

    est = Estimator(model="vae", latent_dim=2, epochs=1)
    for X, said in [(np.zeros(10), "Expected 2D array, got 1D array instead: Reshape your data"),
                    (np.ones((4, 8, 8)) + 1j, "Complex data not supported")]:
        with pytest.raises(ValueError) as info:
            est.fit(X)
        assert "\n" not in str(info.value) and str(info.value).startswith(said) and "array=" not in str(info.value)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        est.fit(np.random.default_rng(0).random((50, 8, 8)).astype(np.float32))
    assert any(str(w.message).startswith("Estimator: all 2 content latents are unused") for w in seen)


def test_predict_before_fit_channels_last_and_a_non_boolean_pose_are_said(digits):
    """An audit: predict / predict_proba before fit raised AttributeError (scikit-learn says NotFittedError);
    (N, H, W, 3) images were refused as 28x3-pixel images without a word of the layout; pose='no' was True."""
    from sklearn.exceptions import NotFittedError

    x, _ = digits
    for family, methods in [("ssvae", ("predict", "predict_proba")), ("jrvae", ("predict", "predict_proba")),
                            ("ssregvae", ("predict",))]:
        for method in methods:
            with pytest.raises(NotFittedError):
                getattr(Estimator(family), method)(x)
    assert not hasattr(Estimator("ssregvae"), "predict_proba") and not hasattr(Estimator("vae"), "predict")
    rgb = np.repeat(x[:10, :, :, None], 3, axis=3)
    with pytest.raises(AffineVAEError, match=r"images of 28x3 pixels are too small: the models need at least 8x8 "
                                             r"\(channels last\? images of 28x28 pixels with 3 channels are given as "
                                             r"\(N, C, H, W\): numpy.moveaxis\(X, -1, 1\)\)"):
        Estimator("vae", latent_dim=2, epochs=1).fit(rgb)
    for pose in ("no", 2):
        with pytest.raises(AffineVAEError, match=f"Estimator: pose must be True or False, got {pose!r}"):
            Estimator("rvae", invariances=("rotation",), pose=pose, epochs=1).fit(x[:20])


def test_a_patch_set_fitted_from_python_records_its_kind_for_warn_unlike(tmp_path):
    from affinevae.data import ImageSet

    x = np.random.default_rng(0).random((20, 1, 8, 8)).astype(np.float32)
    data = ImageSet(x, meta={"kind": "patches", "window": 8, "noise_sigma": 0.1})
    model = av.build_model("vae", image_shape=(1, 8, 8), latent_dim=2, encoder="mlp", decoder="mlp", hidden=(8,))
    av.fit(model, data, av.TrainConfig(epochs=1, progress=False, val_split=0.0), out=tmp_path / "r")
    assert av.Run.open(tmp_path / "r").meta["data_kind"] == "patches"


def test_an_imageset_of_spectra_gets_train_s_spectra_defaults(capsys):
    """An ImageSet whose meta names its kind (here spectra) gets the model options `train` chooses for it,
    printed in one line and kept in data_defaults_; the options given win; arrays and data_defaults=False
    get none."""
    from affinevae.data.spectra import synthetic_peaks
    from affinevae.defaults import data_defaults

    data = synthetic_peaks(n=64, length=32, seed=0).image_set()
    est = Estimator("rvae", latent_dim=2, epochs=1, batch_size=32, seed=0).fit(data)
    line = capsys.readouterr().out
    expected, _, _ = data_defaults(data, "rvae", {"image_shape": list(data.image_shape), "latent_dim": 2}, 32, 1, 1e-3)
    assert est.data_defaults_ and est.data_defaults_["likelihood"] == "gaussian"
    assert {k: expected[k] for k in est.data_defaults_} == est.data_defaults_
    assert est.model_.config.likelihood == "gaussian" and est.model_.config.sigma == pytest.approx(expected["sigma"])
    assert line.startswith("affinevae Estimator: ") and "likelihood=gaussian" in line and line.count("\n") == 1
    given = Estimator("rvae", latent_dim=2, epochs=1, batch_size=32, seed=0, sigma=0.5).fit(data)
    assert given.model_.config.sigma == 0.5 and "sigma" not in given.data_defaults_
    off = Estimator("rvae", latent_dim=2, epochs=1, batch_size=32, seed=0, data_defaults=False,
                    likelihood="gaussian").fit(data)
    assert off.data_defaults_ == {} and off.model_.config.sigma != pytest.approx(expected["sigma"])
    assert Estimator("rvae", latent_dim=2, epochs=1, batch_size=32, seed=0,
                     likelihood="gaussian").fit(data.images).data_defaults_ == {}
    assert "data_defaults" in clone(est).get_params()
    # an audit: raw spectra given to transform gave other latents than the set, silently; the scale is kept
    peaks = synthetic_peaks(n=64, length=32, seed=0)
    assert est.intensity_scale_ == pytest.approx(data.meta["intensity_scale"]) != 1.0 and off.intensity_scale_ != 1.0
    raw = peaks.spectra[:, None, None, :] if peaks.spectra.ndim == 2 else peaks.spectra[:, :, None, :]
    assert np.allclose(est.transform(raw / est.intensity_scale_), est.transform(data), atol=1e-5)
    assert Estimator("vae", latent_dim=2, epochs=1, encoder="mlp", decoder="mlp", likelihood="gaussian").fit(
        data.images).intensity_scale_ == 1.0


def test_a_patch_set_gets_train_s_latents_and_training_options_unless_given(capsys):
    """latent_dim, epochs, batch_size and lr left at None take what `train` chooses for a patch set (4 latents, its
    batch size, learning rate, KL warm-up and step count); given ones win; arrays take 10 / 10 / 128 / 1e-3. The
    Bernoulli refusal of 1-D signal arrays names a call that runs."""
    from affinevae.data.micrograph import synthetic_micrograph
    from affinevae.data.patches import cut_patches
    from affinevae.data.spectra import spectra_set, synthetic_peaks
    from affinevae.defaults import chosen_defaults
    from affinevae.estimator import ESTIMATOR_DEFAULTS

    data = cut_patches(synthetic_micrograph(size=(64, 64), seed=0)[0], 12).imageset()
    options, train, chosen, _ = chosen_defaults(data, "rvae", {"image_shape": list(data.image_shape)}, None, None)
    assert chosen["latent_dim"] == 4 and {"epochs", "batch_size", "lr", "kl_warmup"} <= set(chosen)
    est = Estimator("rvae", epochs=1, seed=0).fit(data)
    assert est.model_.config.latent_dim == 4 and est.data_defaults_["latent_dim"] == 4
    assert est.data_defaults_["batch_size"] == train["batch_size"] and est.data_defaults_["lr"] == train["lr"]
    assert "epochs" not in est.data_defaults_ and len(est.history_) == 1          # given: kept
    assert "latent_dim=4" in capsys.readouterr().out
    plain = Estimator("vae", epochs=1, encoder="mlp", decoder="mlp").fit(data.images)
    assert plain.model_.config.latent_dim == ESTIMATOR_DEFAULTS["latent_dim"] == 10 and plain.data_defaults_ == {}
    X = synthetic_peaks(n=32, length=16, seed=0).image_set().images.reshape(32, 16) * 3 - 1
    with pytest.raises(AffineVAEError) as info:
        Estimator("vae", epochs=1).fit(X)
    call = str(info.value).split("fit affinevae.data.spectra.")[1].split(" to get")[0]
    assert call == "spectra_set(numpy.reshape(X, (len(X), 1, 16)))"
    assert eval(call, {"spectra_set": spectra_set, "numpy": np, "X": X}).meta["kind"] == "spectra"


def test_an_array_of_images_gets_train_s_orientation_default(capsys):
    """A cell audit: Estimator('rvae') on (N, C, H, W) cells turned over the full circle kept the Gaussian angle
    prior ('arrays get none': angles 0.045, k-means 0.378; 0.994 / 1.000 with rotation_mode='full'). Arrays of
    images now get what train chooses for an .npy of them; flat rows (tabular data) still get none."""
    import math

    from affinevae.data import load_dataset

    digits = load_dataset("rotated-mnist", n=400, max_angle=math.pi, seed=0).images
    est = Estimator("rvae", latent_dim=2, epochs=1, seed=0, invariances=("rotation",)).fit(digits)
    line = capsys.readouterr().out
    assert est.model_.config.rotation_mode == "full" and est.data_defaults_["rotation_mode"] == "full"
    assert line.startswith("affinevae Estimator: ") and "rotation_mode=full (orientations over the full circle" in line
    flat = Estimator("vae", latent_dim=2, epochs=1, seed=0, encoder="mlp", decoder="mlp").fit(digits.reshape(400, -1))
    assert flat.data_defaults_ == {} and "defaults" not in capsys.readouterr().out  # rows: nothing chosen, nothing said


def test_unsigned_integer_images_are_divided_as_train_divides_them(digits):
    """A review: Estimator('rvae', likelihood='gaussian') on a 12-bit camera's raw uint16 images (0-4095) diverged
    ('non-finite loss ... try a lower learning rate'), and uint8 digits were refused by the Bernoulli likelihood,
    where `train` divides both (by 4095 and 255). Now the Estimator divides unsigned integer images as train
    does (`pixel_divisor_`), in transform and score too, and inverse_transform gives images in X's units."""
    import warnings

    x, _ = digits  # float32 in [0, 1], 255ths
    raw12 = np.round(x[:100] * 4095).astype(np.uint16)
    with pytest.warns(UserWarning, match="uint16 values use 12 of 16 bits .largest 4095.: divided by 4095") as said:
        est = Estimator("rvae", latent_dim=2, epochs=1, likelihood="gaussian", hidden=(32,)).fit(raw12)
    assert {w.filename for w in said if "12 of 16 bits" in str(w.message)} == {__file__}  # the caller's line
    assert est.pixel_divisor_ == 4095.0 and np.isfinite(est.history_[-1]["train_loss"])
    scaled = Estimator("rvae", latent_dim=2, epochs=1, likelihood="gaussian", hidden=(32,)).fit(
        (raw12 / 4095).astype(np.float32))
    assert scaled.pixel_divisor_ == 1.0
    z = est.transform(raw12[:20])
    assert np.allclose(z, scaled.transform((raw12[:20] / 4095).astype(np.float32)), atol=1e-4)
    assert np.isclose(est.score(raw12), scaled.score((raw12 / 4095).astype(np.float32)), rtol=1e-4)
    back = est.inverse_transform(z[:, :2])
    assert np.allclose(back / 4095, scaled.inverse_transform(z[:, :2]), atol=1e-4) and back.max() > 2  # X's units
    raw8 = np.round(x * 255).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 8-bit: the dtype's own range, nothing to say
        vae = Estimator("vae", latent_dim=2, epochs=1, **MLP).fit(raw8)  # Bernoulli: was refused (0-255)
    assert vae.pixel_divisor_ == 255.0
    assert np.allclose(vae.transform(raw8[:20]), vae.transform(raw8[:20] / 255.0), atol=1e-5)  # floats as given
    off = Estimator("vae", latent_dim=2, epochs=1, likelihood="gaussian", data_defaults=False, **MLP).fit(raw8)
    assert off.pixel_divisor_ == 1.0  # data_defaults=False: X as given


def test_predict_and_predict_proba_give_classes_in_the_user_s_names_and_inverse_transform_renders_y(digits):
    """An audit: the Estimator kept classes_ but had no predict / predict_proba, inverse_transform(Z, y) ignored y
    on joint and semi-supervised models (any y, even 'junk', gave the same images), and '' or 'NA' as the unknown
    marker became a class of its own, silently."""
    x, truth = digits
    names = np.where(truth == 0, "wt", "mutant").astype(object)
    y = names.copy()
    y[np.arange(len(y)) % 4 != 0] = "-1"
    est = Estimator("ssvae", latent_dim=2, epochs=2, **SS).fit(x, y)
    assert est.predicts_ == "class" and list(est.classes_) == ["mutant", "wt"]
    pred, prob = est.predict(x), est.predict_proba(x)
    assert pred.shape == (len(x),) and set(pred) <= {"mutant", "wt"} and (pred == names).mean() > 0.8
    assert prob.shape == (len(x), 2) and np.allclose(prob.sum(1), 1, atol=1e-5)
    assert np.array_equal(est.classes_[prob.argmax(1)], pred)
    z = est.transform(x[:4])
    wt, mutant = est.inverse_transform(z, ["wt"] * 4), est.inverse_transform(z, ["mutant"] * 4)
    assert np.abs(wt - mutant).max() > 1e-4  # the class rendered is the one asked for
    assert np.allclose(wt[:, None], decode(est, z, y=torch.ones(4, dtype=torch.long)), atol=1e-6)
    with pytest.raises(AffineVAEError, match="y holds labels the model was not fitted with"):
        est.inverse_transform(z, ["junk"] * 4)
    for missing in ("", " NA ", np.nan, None, "?", np.float32("nan")):
        bad = y.copy()
        bad[3] = missing
        with pytest.raises(AffineVAEError, match=r"y holds a missing label \(.* at image 3\): mark an unknown label with -1"):
            Estimator("ssvae", epochs=1, **SS).fit(x, bad)
    one = Estimator("ssvae", latent_dim=2, epochs=1, **SS).fit(x, np.where(y == "wt", "wt", "-1"))
    assert list(one.classes_) == ["wt", "class 1"]  # K = 2: the class no label names
    joint = Estimator("jvae", latent_dim=2, epochs=1, num_classes=2, **SS).fit(x)
    # an audit: a joint model's classes_ was None, though predict_proba's columns are its classes 0..K-1
    assert list(joint.classes_) == [0, 1] and set(joint.predict(x)) <= {0, 1}
    assert joint.predict_proba(x).shape == (len(x), 2)
    with pytest.raises(AffineVAEError, match=r"y must be classes 0..1 of the joint model"):
        joint.inverse_transform(z, [0, 1, 2, 0])
    vae = Estimator("vae", latent_dim=2, epochs=1, **SS).fit(x)
    assert not hasattr(vae, "predict") and not hasattr(vae, "predict_proba")
    with pytest.raises(AffineVAEError, match="model 'vae' renders no class or target, but y was given"):
        vae.inverse_transform(vae.transform(x[:2]), [0, 1])
    reg = Estimator("ssregvae", latent_dim=2, epochs=1, **SS).fit(
        x, np.where(np.arange(len(x)) % 4 == 0, x.mean((1, 2)), np.nan))
    assert reg.predicts_ == "target" and reg.predict(x[:3]).shape == (3,) and not hasattr(reg, "predict_proba")
    with pytest.raises(AffineVAEError, match=r"y must hold 4 finite targets of 1 value \(\(4,\)\), got shape \(4, 5\)"):
        reg.inverse_transform(z, np.zeros((4, 5)))
    with pytest.raises(AffineVAEError, match="y holds labels of mixed types"):
        Estimator("cvae", epochs=1, **SS).fit(x[:40], np.array([1, "a"] * 20, dtype=object))


def test_the_divisor_follows_the_pixels_dtype_and_data_frames_are_read_alike(digits):
    """An audit: after fitting on uint8, transform and score divided float images already in [0, 1] by 255 again
    (score -132 against -217: GridSearchCV misled); a DataFrame of uint8 pixels was refused where the array was
    divided; a NaN in a DataFrame gave scikit-learn's cut-off advice instead of the image's index."""
    import pandas as pd

    x, _ = digits
    u8 = np.round(x[:80] * 255).astype(np.uint8)
    est = Estimator("vae", latent_dim=2, epochs=1, **MLP).fit(u8)
    assert est.pixel_divisor_ == 255.0
    floats = (u8 / 255.0).astype(np.float32)
    assert np.allclose(est.transform(u8), est.transform(floats), atol=1e-5)
    assert np.isclose(est.score(u8), est.score(floats), rtol=1e-5)
    raw = Estimator("vae", latent_dim=2, epochs=1, likelihood="gaussian", **MLP).fit(u8.astype(np.float32))
    assert raw.pixel_divisor_ == 1.0  # a review: fitted on floats, integer images were divided per call by their
    assert np.array_equal(raw.transform(u8), raw.transform(u8.astype(np.float32)))  # batch's own largest value
    old = Estimator("vae", latent_dim=2, epochs=1, likelihood="gaussian", **MLP).fit(u8)
    del old.pixel_divisor_  # a pickle of the Estimator before the divisor: every X as given, as it was
    assert np.array_equal(old.transform(u8), old.transform(u8.astype(np.float32)))
    rows = pd.DataFrame(u8.reshape(len(u8), -1))
    flat = Estimator("vae", image_shape=(28, 28), latent_dim=2, epochs=1, **MLP).fit(rows)
    assert flat.pixel_divisor_ == 255.0
    rows = rows.astype(np.float64)
    rows.iloc[5, 3] = np.nan
    with pytest.raises(AffineVAEError, match=r"^X holds NaN or infinite values \(first in image 5\)"):
        Estimator("vae", image_shape=(28, 28), epochs=1, **MLP).fit(rows)
