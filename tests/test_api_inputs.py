"""The Python API takes what numpy and scikit-learn hand it and refuses the rest in one line, early."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import affinevae as av
from affinevae.errors import AffineVAEError

TINY = dict(image_shape=(1, 16, 16), latent_dim=2, hidden=(8,), encoder="mlp", decoder="mlp")


def images(n=40, seed=0):
    return np.random.default_rng(seed).random((n, 1, 16, 16)).astype(np.float32)


def test_numpy_scalars_are_taken_as_the_numbers_they_hold():
    """np.int64 from np.arange (a grid search), np.float32 learning rates: accepted, stored as Python numbers."""
    cfg = av.TrainConfig(epochs=np.int64(3), lr=np.float32(1e-3), batch_size=np.int64(32), seed=np.int64(1))
    assert (cfg.epochs, cfg.batch_size, cfg.seed) == (3, 32, 1) and type(cfg.epochs) is int
    assert type(cfg.lr) is float and cfg.lr == pytest.approx(1e-3)
    model = av.build_model("vae", **{**TINY, "image_shape": tuple(np.int64(v) for v in (1, 16, 16)),
                                     "latent_dim": np.int64(3)}, seed=np.int64(1))
    assert model.config.latent_dim == 3 and type(model.config.latent_dim) is int
    assert all(type(v) is int for v in model.config.image_shape)
    from sklearn.model_selection import GridSearchCV

    search = GridSearchCV(av.Estimator("vae", epochs=1, hidden=(8,), encoder="mlp", decoder="mlp"),
                          {"latent_dim": np.arange(2, 4)}, cv=2).fit(images(20).reshape(20, -1))
    assert search.best_params_["latent_dim"] in (2, 3)


@pytest.mark.parametrize("options, message", [
    (dict(likelihood="gaussian", learn_sigma="no"), "learn_sigma must be True or False, got 'no'"),
    (dict(latent_dim=True), "latent_dim must be an integer"),
    (dict(hidden=True), "hidden takes a list of values, got True"),
])
def test_options_of_the_wrong_type_are_refused(options, message):
    with pytest.raises(AffineVAEError, match=message):
        av.build_model("vae", **{**TINY, **options})


def test_train_config_values_of_the_wrong_type_are_refused_in_one_line():
    for value in ("0.1", None):
        with pytest.raises(AffineVAEError, match="val_split must be a number"):
            av.TrainConfig(val_split=value)


def test_every_config_refuses_bad_values_at_construction():
    """Configs checked where they are made: the decoder of any family (and of the shared base
    config), a negative or non-integer seed of a sweep or of the napari widget's settings, booleans
    as counts, and a pixel scaling made by hand."""
    from affinevae.data.imageset import PixelScaling
    from affinevae.models.base import ModelConfig
    from affinevae.napari_plugin.pipeline import LearnSettings
    from affinevae.sweep import SweepConfig

    with pytest.raises(AffineVAEError, match=r"decoder must be one of \['conv', 'mlp'\], got 'bogus'"):
        ModelConfig(image_shape=(1, 16, 16), decoder="bogus")
    with pytest.raises(AffineVAEError, match=r"decoder must be one of \['spatial', 'warp'\], got 'conv'"):
        av.build_model("rvae", image_shape=(1, 16, 16), decoder="conv")
    with pytest.raises(AffineVAEError, match="decoder must be one of"):
        av.build_model("avae", image_shape=(1, 16, 16), decoder="bogus")  # the inner model's config checks it
    for seed in (-1, float("nan"), "abc", True):
        with pytest.raises(AffineVAEError, match="seed must be an integer >= 0"):
            SweepConfig(seed=seed)
        with pytest.raises(AffineVAEError, match="seed must be an integer >= 0"):
            LearnSettings(seed=seed)
    for name in ("epochs", "clusters"):
        with pytest.raises(AffineVAEError, match=f"{name} must be an integer >= 1"):
            LearnSettings(**{name: True})
    for args in (("bogus", 0.0, 1.0), ("minmax", float("nan"), 1.0), ("minmax", 0.0, 0.0), ("asinh", 0.0, 1.0, 0.0)):
        with pytest.raises(AffineVAEError, match="pixel_scaling must be 'minmax', 'standardise' or 'asinh'"):
            PixelScaling(*args)
    assert str(PixelScaling("minmax", np.float32(1), np.float64(2))) == "(x - 1) / 2"  # numpy numbers are numbers


def test_fit_meta_is_checked_before_training_and_numpy_scalars_saved_as_numbers(tmp_path):
    model = av.build_model("vae", **TINY)
    with pytest.raises(AffineVAEError, match=r"meta\['x'\] cannot be saved in train.json"):
        av.fit(model, images(), dict(epochs=1, progress=False), out=tmp_path / "bad", meta={"x": object()})
    assert not (tmp_path / "bad").exists()  # refused before anything was written
    seen = []
    av.fit(model, images(), dict(epochs=1, progress=False), out=tmp_path / "run",
           meta={"count": np.int64(60), "level": np.float32(0.5)}, callbacks=seen.append, check_learning=False)
    run = av.Run(tmp_path / "run")
    assert run.meta["count"] == 60 and run.meta["level"] == 0.5 and len(seen) == 1  # one callable as callbacks
    with pytest.raises(AffineVAEError, match="callbacks must be a list of callables"):
        av.fit(model, images(), dict(epochs=1, progress=False), callbacks=3)


def test_save_never_writes_over_a_training_run_and_over_a_model_only_when_asked(tmp_path):
    model = av.build_model("vae", **TINY, seed=0)
    av.fit(model, images(), dict(epochs=1, progress=False), out=tmp_path / "run", check_learning=False)
    trained = av.load(tmp_path / "run").state_dict()
    with pytest.raises(AffineVAEError, match="holds a training run"):
        av.build_model("vae", **TINY, seed=1).save(tmp_path / "run")
    assert all(torch.equal(v, av.load(tmp_path / "run").state_dict()[k]) for k, v in trained.items())
    model.save(tmp_path / "model")
    with pytest.raises(AffineVAEError, match="already holds a saved model; pass overwrite=True"):
        av.build_model("vae", **TINY, seed=1).save(tmp_path / "model")
    other = av.build_model("vae", **TINY, seed=1)
    other.save(tmp_path / "model", overwrite=True)
    assert torch.equal(av.load(tmp_path / "model").state_dict()["decoder.net.0.weight"],
                       other.state_dict()["decoder.net.0.weight"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(AffineVAEError, match="a file, not a directory"):
        model.save(tmp_path / "file")


def test_a_run_handle_on_a_missing_directory_refuses_to_read():
    run = av.Run("no/such/run")
    for read in (lambda: run.seed, lambda: run.metrics, lambda: run.meta, lambda: run.data()):
        with pytest.raises(AffineVAEError, match="no/such/run: no such run or model directory"):
            read()


def test_estimator_refusals_are_one_line_without_the_array():
    est = av.Estimator("vae", epochs=1, latent_dim=2, hidden=(8,), encoder="mlp", decoder="mlp")
    with pytest.raises(AffineVAEError) as info:
        est.fit(np.random.default_rng(0).random(256))
    said = str(info.value)
    assert "\n" not in said and "Expected 2D array" in said and "Reshape your data" in said
    assert not re.search(r"\d\.\d", said)  # no pixel value of the array
    with pytest.raises(AffineVAEError, match=r"X holds NaN or infinite values \(first in image 2\)"):
        est.fit(np.concatenate([images(2), np.full((1, 1, 16, 16), np.nan, np.float32)]))
    est.fit(av.data.ImageSet(images(30)))  # an ImageSet, as fit and encode_dataset take it
    assert est.image_shape_ == (1, 16, 16)
    with pytest.raises(AffineVAEError) as info:
        est.inverse_transform(np.zeros(2))
    assert "\n" not in str(info.value) and "Expected 2D array" in str(info.value)
    with pytest.raises(AffineVAEError, match="fit_transform: fit takes only X and y, not sample_weight"):
        est.fit_transform(images(30), sample_weight=None)


def test_estimator_labels_that_name_no_class_are_refused():
    x = images(30).reshape(30, -1)
    y = np.r_[np.zeros(15), np.ones(14), np.nan]
    with pytest.raises(AffineVAEError, match=r"y holds NaN or infinite labels \(first at image 29\)"):
        av.Estimator("cvae", epochs=1, latent_dim=2, hidden=(8,), image_shape=(16, 16)).fit(x, y)
    with pytest.raises(AffineVAEError, match="y holds no known label"):
        av.Estimator("ssvae", epochs=1, latent_dim=2, hidden=(8,), image_shape=(16, 16)).fit(x, np.full(30, -1))


def test_rotate_images_takes_arrays_and_refuses_bad_input():
    from affinevae.sweep import rotate_images

    x = images(3)[:, 0]
    out = rotate_images(x, np.pi / 2)
    assert out.shape == (3, 1, 16, 16) and out.dtype == torch.float32
    assert torch.allclose(rotate_images(torch.as_tensor(x[:, None]), np.pi / 2), out)
    with pytest.raises(AffineVAEError, match="interpolation must be one of"):
        rotate_images(x, 0.3, interpolation="lanczos")
    with pytest.raises(AffineVAEError, match=r"rotate_images: images must have shape \(N, H, W\)"):
        rotate_images(np.zeros(16), 0.3)


def test_align_refuses_a_config_that_is_not_one():
    model = av.build_model("avae", image_shape=(1, 16, 16), inner_config={"latent_dim": 2, "hidden": [8]})
    with pytest.raises(AffineVAEError, match="align: config must be a SearchConfig or a dict"):
        model.align(torch.rand(2, 1, 16, 16), config=5)


def test_elbo_is_the_eval_mode_elbo_and_counts_no_training_step():
    """A fresh model is in train mode: its ELBO is still the reported one (the joint model's exact class
    expectation), the mode is kept, and a look before fit leaves the fit's k-means start alone."""
    x = torch.as_tensor(images(8, seed=1))
    model = av.build_model("jrvae", image_shape=(1, 16, 16), latent_dim=2, num_classes=3, hidden=(8,),
                           invariances=("rotation",), seed=0)
    assert model.training
    in_train = model.elbo(x, generator=torch.Generator().manual_seed(0))
    model.eval()
    in_eval = model.elbo(x, generator=torch.Generator().manual_seed(0))
    model.train()
    assert torch.equal(in_train, in_eval) and model.training and int(model.train_steps) == 0


def test_an_images_pose_search_does_not_depend_on_its_batch():
    from affinevae.evaluation import encode_dataset
    from affinevae.nn.transforms import image_keys, keyed_uniform

    x = images(24, seed=2)
    keys = image_keys(torch.as_tensor(x))
    assert torch.equal(image_keys(torch.as_tensor(x[5:9])), keys[5:9]) and len(set(keys.tolist())) == 24
    u = keyed_uniform(torch.arange(2000), 50, 3)
    assert 0 <= float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.01
    vae = av.build_model("vae", **TINY, seed=0)
    avae = av.AVAE(vae).eval()
    whole = encode_dataset(avae, x, batch_size=24, elbo=False)
    parts = encode_dataset(avae, x, batch_size=5, elbo=False)
    np.testing.assert_array_equal(whole["angle"], parts["angle"])
    np.testing.assert_array_equal(whole["z_mean"], parts["z_mean"])


def test_estimator_reads_text_minus_one_as_an_unknown_label():
    from affinevae.estimator import Estimator

    est = Estimator(model="ssvae", epochs=1)
    idx = est._partial_labels(np.array(["a", "b", "-1", " -1", "a"]), 5)
    assert idx.tolist() == [0, 1, -1, -1, 0] and list(est.classes_) == ["a", "b"]


def test_the_same_tensors_and_metadata_give_the_same_file_bytes(tmp_path):
    """Two trainings with one seed write byte-identical weights: the metadata keys, which safetensors
    writes in a hash map's changing order, are put in name order (the file still loads, with them)."""
    import hashlib

    import torch
    from safetensors import safe_open

    from affinevae.io import load_tensors, save_tensors

    t = {"b": torch.ones(3), "a": torch.arange(4.0).reshape(2, 2)}
    meta = {k: f"value {k} é" for k in "qwertyuiop"}
    digests = {hashlib.sha256(save_tensors(tmp_path / f"w{i}.safetensors", t, meta).read_bytes()).hexdigest()
               for i in range(6)}
    assert len(digests) == 1
    with safe_open(str(tmp_path / "w0.safetensors"), "pt") as f:
        assert {k: v for k, v in f.metadata().items() if k in meta} == meta
    assert all(torch.equal(load_tensors(tmp_path / "w0.safetensors")[k], t[k]) for k in t)


def test_damaged_weights_are_refused_at_load(tmp_path):
    """save_tensors records a digest of the tensors; a flipped bit is found at load, in one line."""
    import torch

    from affinevae.errors import AffineVAEError
    from affinevae.io import TENSORS_DIGEST_KEY, load_tensors, save_tensors, tensor_header

    t = {"w": torch.randn(64, 64), "b": torch.zeros(0), "n": torch.tensor(3), "h": torch.ones(4, dtype=torch.bfloat16)}
    path = save_tensors(tmp_path / "w.safetensors", t)
    assert TENSORS_DIGEST_KEY in tensor_header(path)[1]
    got = load_tensors(path)
    assert all(torch.equal(got[k], t[k]) for k in t)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x10  # one bit of the last tensor's data
    path.write_bytes(bytes(raw))
    with pytest.raises(AffineVAEError, match=r"w.safetensors: damaged weights: its tensors no longer match the checksum"):
        load_tensors(path)
    from safetensors.torch import save_file

    save_file(t, str(tmp_path / "old.safetensors"))  # written before the digest: loads as before
    assert torch.equal(load_tensors(tmp_path / "old.safetensors")["w"], t["w"])
