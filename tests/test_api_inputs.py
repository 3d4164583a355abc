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
    with pytest.raises(AffineVAEError, match=r"decoder must be one of \['broadcast', 'spatial', 'warp'\], got 'conv'"):
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
        with pytest.raises(AffineVAEError, match="pixel_scaling must be 'minmax', 'standardise', 'asinh' or 'bits'"):
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


# ---------------------------------------------------------------- an audit's bad inputs to the public functions
def one_line(call, match):
    with pytest.raises(AffineVAEError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_angle_scores_refuse_what_would_score_silently():
    """NaN angles scored 0.0 ('unrelated') or NaN; a negative or zero data range gave a PSNR; complex angles lost
    their imaginary part; string labels raised numpy's own error; huge label values allocated a k x k matrix."""
    from affinevae import evaluation as E, mapping as M

    a = np.linspace(0, 1, 10)
    one_line(lambda: E.circular_correlation(np.where(a > 0.5, np.nan, a), a), "circular_correlation: angles: holds 5 NaN")
    one_line(lambda: E.offset_concentration([np.nan, 1.0], [1.0, 2.0]), "offset_concentration: angles: holds 1 NaN")
    one_line(lambda: E.class_offset_concentration(a, a, np.where(a > 0.5, np.nan, 0)), "labels: holds 5 NaN")
    assert E.class_offset_concentration(a, a + 1, list("abababab" + "ab")) == pytest.approx(1.0)  # names as labels
    one_line(lambda: E.psnr(a, a, data_range=-1), "data_range must be a finite number > 0")
    one_line(lambda: E.psnr(a + 1j, a), "complex numbers")
    one_line(lambda: E.psnr([], []), "at least 1 value")
    one_line(lambda: M.fold_angle(a + 1j), "fold_angle: angles: must be angles in radians, got complex")
    one_line(lambda: M.clustering_accuracy(np.array([0.5, 1.5]), np.array([0, 1])), "labels must be whole numbers")
    one_line(lambda: M.clustering_accuracy(np.array([np.nan, 1]), np.array([0, 1])), "labels: holds 1 NaN")
    assert M.clustering_accuracy(np.array([0, 10**9, 10**9]), np.array([5, 1, 1])) == 1.0  # renumbered, no huge matrix
    np.testing.assert_allclose(M.angle_difference(np.array([3.0, 0.1]), np.array([0.0, 0.2]), 2),
                               [3.0 - np.pi, -0.1], atol=1e-12)
    assert isinstance(M.angle_difference(0.3, 0.1), float)
    one_line(lambda: M.symmetry_reach(0), "symmetry_reach: window must be a whole number >= 3")
    one_line(lambda: M.cluster_latents(np.random.rand(10, 2), 2, seed=-1), "seed must be an integer >= 0")


def test_patch_cutting_refuses_coordinates_and_frames_that_do_not_fit():
    """A frames array shorter than the centres dropped a centre silently (longer: numpy's IndexError); frame -1
    read the last frame; NaN centres were dropped; sub-pixel refinement returned -9e18 for a NaN centre and
    fitted outside the frame; an all-NaN frame found nothing without a word; a torch tensor was refused raw."""
    from affinevae.data import objects as O, patches as P

    st = np.random.default_rng(0).random((2, 64, 64))
    ctr = np.array([[10, 10], [30, 40], [50, 20]])
    one_line(lambda: P.cut_patches(st, 8, coords=(np.zeros(2, int), ctr)), "2 frame indices for 3 centres")
    one_line(lambda: P.cut_patches(st, 8, coords=(np.array([0, 1, 0, 1, 1]), ctr)), "5 frame indices for 3 centres")
    one_line(lambda: O.check_coordinates(np.array([0.5]), np.array([[5, 5.0]]), 1, (64, 64)), "whole numbers")
    one_line(lambda: P.extract_patches(st, ctr, 8, frames=np.array([0, -1, 0])), "frame indices must lie in 0..1")
    one_line(lambda: P.extract_patches(st, ctr, 8, frames=np.array([0, 1, 5])), "frame indices must lie in 0..1")
    one_line(lambda: P.extract_patches(st, np.array([[np.nan, 1]]), 8), "centres: holds 1 NaN")
    one_line(lambda: P.extract_patches(st, np.ones((2, 3)), 8), r"centres must be \(N, 2\)")
    one_line(lambda: O.refine_positions(st[0], np.array([[np.nan, 3]])), "centres: holds 1 NaN")
    one_line(lambda: O.refine_positions(st[0], np.array([[100, 100]])), "1 centres outside the 64x64 frame")
    one_line(lambda: O.refine_positions(np.full((64, 64), np.nan), np.array([[10, 10]])), "NaN or infinite pixels")
    one_line(lambda: O.detect_objects(np.full((64, 64), np.nan)), "NaN or infinite pixels")
    one_line(lambda: O.detect_objects(st[0], value_range=(1, 0)), "lo <= hi")
    one_line(lambda: O.detect_objects(st[0], sigma=np.inf), "sigma must be a finite number")
    one_line(lambda: O.detect_objects(st[0], threshold="0.3"), "threshold must be a finite number")
    one_line(lambda: O.neighbour_spacing(np.array([[np.nan, 1], [2, 3]])), "centers: holds 1 NaN")
    one_line(lambda: O.object_arrangement(np.random.rand(10, 2), np.zeros(3)), "3 frame indices for 10 centers")
    one_line(lambda: P.grid_centers((64,), 4, 2), r"image shape must be \(H, W\)")
    one_line(lambda: P.mass_centred(np.zeros((3, 9, 9)), np.zeros((2, 2))), r"offsets must be \(3, 2\)")
    assert P.mass_offsets(np.zeros((0, 1, 9, 9))).shape == (0, 2)
    from_tensor = P.cut_patches(torch.as_tensor(st), 8, centre="peak")
    np.testing.assert_array_equal(from_tensor.centers, P.cut_patches(st, 8, centre="peak").centers)


def test_pose_helpers_refuse_bad_counts_seeds_and_numbers():
    """aligned_components took k = 0 or -1; orientation_spread returned None for (N, H, W)
    images and raised torch's errors for sample 0 and seed -1; seeded(-1) ran; complex images lost their
    imaginary part; a t-SNE perplexity of 0 raised scikit-learn's error."""
    from affinevae.pose import classes as C, sync as S
    from affinevae.rng import seeded

    x = torch.rand(40, 1, 8, 8)
    one_line(lambda: C.aligned_components(x, torch.zeros(40), 0), "k must be an integer >= 1")
    one_line(lambda: C.aligned_embedding(x, torch.zeros(40), 2, perplexity=0), "perplexity must be a finite number")
    one_line(lambda: C.aligned_kmeans(np.ones((20, 1, 8, 8)) + 1j, 2), "complex numbers")
    one_line(lambda: C.turn_mask(-3, 4), "height must be an integer >= 1")
    one_line(lambda: C.turned_components(x, 0, 5), "angles must be an integer >= 1")
    one_line(lambda: S.orientation_spread(np.zeros((300, 8, 8)), sample=0), "sample must be an integer >= 2")
    one_line(lambda: S.orientation_spread(np.zeros((300, 8, 8)), seed=-1), "seed must be an integer >= 0")
    spread = S.orientation_spread(np.random.default_rng(0).random((250, 16, 16)).astype(np.float32))
    assert spread is not None and spread.images == 250  # (N, H, W): one channel
    with pytest.raises(AffineVAEError, match="seed must be an integer >= 0"):
        with seeded(-1):
            pass


def test_models_load_only_on_devices_there_are_and_analyses_take_arrays(tiny_runs):
    """load(device='tpu') raised torch's RuntimeError, 'cuda' on a CPU-only machine an AssertionError;
    latent_vs_baseline took no array (AttributeError), generate('5') compared a string, encode_dataset(None) read
    None.config; as_imageset dropped complex numbers' imaginary part."""
    from affinevae import runs
    from affinevae.analysis import as_imageset, generate, latent_vs_baseline
    from affinevae.encoding import encode_dataset

    path = tiny_runs.path("vae")
    one_line(lambda: runs.load(path, device="tpu"), "device must be 'auto', 'cpu', 'cuda'")
    if not torch.cuda.is_available():
        one_line(lambda: runs.load(path, device="cuda"), "no CUDA GPU is available")
    model = runs.load(path, device="auto")
    shape = model.config.image_shape
    x = np.random.default_rng(0).random((12, *shape)).astype(np.float32)
    res = latent_vs_baseline(model, x)
    assert res.z.shape == (12, model.config.latent_dim)
    one_line(lambda: generate(model, "5"), "n must be an integer >= 1")
    one_line(lambda: encode_dataset(None, x), "model must be a trained affinevae model")
    one_line(lambda: as_imageset(np.full((3, 8, 8), 1j)), "images must be real numbers, got complex")


def test_pose_sweep_report_and_maps_refuse_bad_inputs(tiny_runs, tmp_path):
    """A second audit: NaN target poses trained the pose head to NaN weights, NaN starts gave NaN poses, a VAE passed
    to align / search_poses or None to amortise raised AttributeError, a dict config was refused raw; the sweep
    scored uint8 images clipped to [0, 1] and a model of signals; write_report took seed -1 (numpy's error), an array
    as a file name and n=-1 as 'all but the last'; class_map raised numpy's errors on -1 labels and truncated
    fractional ones; write_maps drew a bad background after making its folder; lattice_orientation gave NaN
    angles for NaN windows; stream_encode took coordinates only from a file or a tuple, truncated fractional frames
    and raised Python's TypeError on an unknown option; spectra_set and the synthetic sets took anything."""
    from affinevae import mapping as M
    from affinevae.data import load_images
    from affinevae.data.spectra import spectra_set, synthetic_cube, synthetic_peaks
    from affinevae.encoding import encode_patchset, stream_encode
    from affinevae.pose import HeadTrainConfig, align, fit_pose_head
    from affinevae.pose.amortise import amortise, as_avae
    from affinevae.pose.search import SearchConfig, search_poses
    from affinevae.report import write_report
    from affinevae.sweep import plot_sweep, rotation_sweep

    vae = tiny_runs.model("vae")
    x = torch.as_tensor(np.random.default_rng(0).random((6, 1, 28, 28)), dtype=torch.float32)
    avae = as_avae(vae, pose_head=True)
    one_line(lambda: fit_pose_head(avae, x, torch.full((6, 1), float("nan")),
                                   config=HeadTrainConfig(target="search", epochs=1, batch_size=6)),
             "6 of the searched poses are NaN")
    one_line(lambda: align(avae, x, config=SearchConfig(restarts=2, steps=1), starts=torch.full((6, 2, 1), float("nan"))),
             "starts hold 12 NaN")
    one_line(lambda: align(vae, x), "align: needs an AVAE")
    one_line(lambda: search_poses(vae, x), "search_poses: needs an AVAE")
    one_line(lambda: amortise(None, x), "model must be a trained affinevae model, got NoneType")
    one_line(lambda: align(avae, x, config=["restarts"]), "config must be a SearchConfig")
    assert align(avae, x, config={"restarts": 2, "steps": 1}).params.shape == (6, 1)  # a dict, as fit takes one
    angles = np.radians([0, 30])
    one_line(lambda: rotation_sweep({"v": vae}, x * 255, angles=angles), r"rotation_sweep: images: .*span \[0.*, 25")
    one_line(lambda: rotation_sweep({"v": None}, x, angles=angles), r"models\['v'\] must be a trained affinevae model")
    signals = av.build_model("vae", image_shape=(1, 1, 32), encoder="mlp", decoder="mlp")
    one_line(lambda: rotation_sweep({"s": signals}, torch.rand(3, 1, 1, 32), angles=angles), "1-D signals")
    one_line(lambda: plot_sweep({"a": 1}), "plot_sweep: needs a SweepResult")
    run = tiny_runs.path("vae")
    one_line(lambda: write_report(run, tmp_path / "r.html", data=x, seed=-1), "seed must be an integer >= 0")
    one_line(lambda: write_report(run, tmp_path / "r.html", data=x, n=-1), "n must be an integer >= 1")
    one_line(lambda: load_images(np.zeros((3, 28, 28))), "load_images reads files")
    one_line(lambda: M.class_map(None, np.zeros((3, 2)), np.array([0, -1, 1])), "leave out the objects marked -1")
    one_line(lambda: M.class_map(None, np.zeros((2, 2)), np.array([0.5, 1.0])), "whole numbers >= 0")
    one_line(lambda: M.lattice_orientation(np.full((5, 28, 28), np.nan), 4), "patches: holds 3920 NaN")
    one_line(lambda: M.grid_maps(np.zeros(12), (-3, -4), 28, 14), "grid_shape must be two whole numbers")
    one_line(lambda: M.decoded_features(None, np.zeros((2, 2))), "model must be a trained affinevae model")
    one_line(lambda: M.write_maps({"z_mean": np.zeros((2, 2))}, tmp_path / "m"), "enc must be an ObjectEncoding")
    frame = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    one_line(lambda: stream_encode(vae, frame, 28, foo=1), "unknown option 'foo'")
    one_line(lambda: stream_encode(vae, frame[None], 28, coords=(np.array([0.5]), np.array([[32, 32]]))),
             "frame indices must be whole numbers")
    enc = stream_encode(vae, frame, 28, coords=[[30, 30], [34, 33]])  # a list of (row, col), as a CSV holds them
    assert len(enc) == 2 and enc.centers.tolist() == [[30, 30], [34, 33]]
    one_line(lambda: encode_patchset(vae, np.zeros((2, 28, 28))), "encode_patchset needs a PatchSet")
    one_line(lambda: spectra_set(np.zeros((4, 8))), "signals: must be 3-D")
    one_line(lambda: spectra_set(np.full((2, 1, 8), np.nan)), "signals: holds 16 NaN")
    one_line(lambda: synthetic_peaks(ratio_range=(1, 0.2)), "low <= high")
    one_line(lambda: synthetic_peaks(noise=float("nan")), "noise must be a finite number >= 0")
    one_line(lambda: synthetic_cube(seed=-1), "seed must be an integer >= 0")


def test_what_worked_before_the_checks_still_works(tiny_runs):
    """A review of the checks above: the pose search runs without gradients (its decorator had slid onto a helper),
    a Gaussian model's sweep takes images in their own units, one centre of shape (2,) and 0-d arrays or tensors as
    numbers are taken, and runs.load(device=None) loads on the CPU, as before."""
    from affinevae import evaluation as E, runs
    from affinevae.data import objects as O, patches as P
    from affinevae.pose.amortise import as_avae
    from affinevae.pose.search import SearchConfig, search_poses
    from affinevae.sweep import rotation_sweep

    vae = tiny_runs.model("vae")
    avae = as_avae(vae, pose_head=True)
    avae.head_trained.fill_(1)  # its (untrained) head taken as the search's start
    seen = []
    real = avae.head.predict

    def spy(*args, **kwargs):
        seen.append(torch.is_grad_enabled())
        return real(*args, **kwargs)

    avae.head.predict = spy
    x = torch.as_tensor(np.random.default_rng(0).random((4, 1, 28, 28)), dtype=torch.float32)
    found = search_poses(avae, x, config=SearchConfig(restarts=2, steps=1, use_head=True))
    assert seen and not any(seen) and not found.params.requires_grad
    gauss = av.build_model("vae", image_shape=(1, 16, 16), latent_dim=2, hidden=(8,), encoder="mlp", decoder="mlp",
                           likelihood="gaussian", sigma=0.5)
    raw = np.random.default_rng(1).normal(0, 2, (3, 1, 16, 16)).astype(np.float32)  # its own units, not [0, 1]
    assert rotation_sweep({"g": gauss}, raw, angles=np.radians([0, 90])).neg_elbo.shape == (1, 2)
    f = np.random.default_rng(2).random((32, 32))
    assert P.extract_patches(f, np.array([10, 12]), 8)[0].shape == (1, 8, 8)
    assert O.refine_positions(f, np.array([10, 12])).shape == (1, 2)
    assert E.psnr(f, 0.9 * f, data_range=torch.tensor(1.0)) == pytest.approx(E.psnr(f, 0.9 * f))
    np.testing.assert_array_equal(O.detect_objects(f, 3, threshold=np.array(0.3)), O.detect_objects(f, 3, threshold=0.3))
    assert O.smoothing_radius(np.array(1.5)) == 6 and P.patch_smoothing(16.0) == 1.0
    assert runs.load(tiny_runs.path("vae"), device=None).device.type == "cpu"


def test_estimator_refuses_labels_of_another_length_even_when_it_ignores_them():
    """An audit: Estimator('vae').fit(X, y) took 5 labels for 30 images (the family ignores y, the slip went unseen)."""
    from affinevae.estimator import Estimator

    est = Estimator("vae", epochs=1, latent_dim=2, hidden=(8,), encoder="mlp", decoder="mlp")
    one_line(lambda: est.fit(images(30), np.zeros(5)), r"5 labels \(y\) for 30 images")
    assert est.fit(images(30), np.zeros(30)) is est
