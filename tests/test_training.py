"""The trainer: learning, determinism, checkpoints, exact resume, divergence, DDP, CLI runs."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import affinevae as av
from affinevae.errors import AffineVAEError
from affinevae.training import TrainConfig, TrainingDiverged, fit, read_metrics, read_run

SMALL = dict(latent_dim=4, hidden=[64], channels=[8, 16])


@pytest.fixture(scope="module")
def digits():
    return av.data.load_mnist("train", n=600)


def make(seed=0, name="vae", **kw):
    torch.manual_seed(seed)
    return av.build_model(name, **{**SMALL, **kw})


def cfg(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 64, "progress": False, "lr": 2e-3, **kw})


def test_short_training_lowers_test_loss(digits):
    test = av.data.load_mnist("test", n=300)
    m = make()
    before = av.evaluation.mean_elbo(m, test)
    res = fit(m, digits, cfg(epochs=3))
    after = av.evaluation.mean_elbo(m, test)
    assert after > before + 100  # ELBO rises (loss falls) by a lot from random init
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert {"train_loss", "train_recon", "train_kl", "val_loss", "images_per_s"} <= set(res.history[0])


def test_same_seed_same_weights(digits):
    a = fit(make(), digits, cfg(epochs=1)).model
    b = fit(make(), digits, cfg(epochs=1)).model
    c = fit(make(), digits, cfg(epochs=1, seed=1)).model
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    # the fit's draws are its own: the caller's random state is as it was, and does not change the fit
    model = make()
    torch.manual_seed(5)
    before = torch.get_rng_state()
    d = fit(model, digits, cfg(epochs=1)).model
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(sa[k], v) for k, v in d.state_dict().items())


def test_resume_equals_uninterrupted(digits, tmp_path):
    full = fit(make(), digits, cfg(epochs=3), out=tmp_path / "full").model
    # interrupted run: train 1 epoch of a 3-epoch schedule, then resume in a fresh model
    part_cfg = cfg(epochs=3)
    with pytest.raises(KeyboardInterrupt):
        fit(make(), digits, part_cfg, out=tmp_path / "part", callbacks=[_stop_after(1)])
    assert read_run(tmp_path / "part")["epochs_done"] == 1
    resumed = fit(make(seed=123), digits, part_cfg, out=tmp_path / "part", resume=True).model
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert [m["epoch"] for m in read_metrics(tmp_path / "part")] == [1, 2, 3]
    loaded = av.load(tmp_path / "part")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in full.state_dict().items())


def test_resume_says_when_the_epoch_records_were_lost(digits, tmp_path):
    """metrics.jsonl deleted before a resume: the records of the epochs already trained are not in the
    checkpoint, so the file would start again at the next epoch with no word; now it is said."""
    with pytest.raises(KeyboardInterrupt):
        fit(make(), digits, cfg(epochs=3), out=tmp_path / "part", callbacks=[_stop_after(2)])
    (tmp_path / "part" / "metrics.jsonl").unlink()
    with pytest.warns(UserWarning, match=r"metrics.jsonl: holds the records of 0 of the 2 epochs trained; epochs 1-2 "
                                         r"stay missing from it"):
        fit(make(), digits, cfg(epochs=3), out=tmp_path / "part", resume=True)
    assert [m["epoch"] for m in read_metrics(tmp_path / "part")] == [3]


def test_resume_on_other_data_is_refused(digits, tmp_path):
    part_cfg = cfg(epochs=3)
    with pytest.raises(KeyboardInterrupt):
        fit(make(), digits, part_cfg, out=tmp_path / "part", callbacks=[_stop_after(1)])
    record = read_run(tmp_path / "part")
    assert record["n_train"] == 540 and len(record["data_fingerprint"]) == 32
    other = digits.images.copy()
    other[:, 0, 0, 0] += 0.5  # one corner pixel of each image differs
    model = make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AffineVAEError, match=r"trained on other data \(540 training images, but other pixels or labels: "
                                             r"their fingerprint differs; seed 0, val_split 0\.1\); resume with the same "
                                             r"data options \(--data, -n, --key, --labels, --binarize, --max-angle, --stretch, --fill-nan, --seed, "
                                             r"--val-split\)"):
        fit(model, (other, digits.labels), part_cfg, out=tmp_path / "part", resume=True)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # nothing loaded into it
    assert read_run(tmp_path / "part") == record
    res = fit(make(), digits, part_cfg, out=tmp_path / "part", resume=True)  # the same data resume
    assert (res.n_train, res.n_val) == (540, 60) and res.history[-1]["epoch"] == 3


def test_weights_that_overflow_stop_training_and_a_fresh_run_directory_is_removed(digits, tmp_path):
    # lr 1e30: the first steps' updates overflow the weights; the trainer stops instead of checkpointing them
    with pytest.raises(TrainingDiverged, match=r"non-finite (loss|weights).* epoch 1.*try a lower learning rate"):
        fit(make(), digits, cfg(epochs=2, lr=1e30), out=tmp_path / "new")
    assert not (tmp_path / "new").exists()  # nothing to resume: the same command may run again
    (tmp_path / "given").mkdir()
    with pytest.raises(TrainingDiverged):
        fit(make(), digits, cfg(epochs=2, lr=1e30), out=tmp_path / "given")
    assert (tmp_path / "given").is_dir() and not list((tmp_path / "given").iterdir())  # emptied, kept
    fit(make(), digits, cfg(epochs=1), out=tmp_path / "new")  # the same --out now trains


def test_weights_with_nan_are_refused_at_load_and_bad_numbers_at_construction(tiny_runs, tmp_path):
    from safetensors.torch import load_file, save_file

    run = tmp_path / "nan"
    shutil.copytree(tiny_runs.path("vae"), run)
    weights = load_file(str(run / "model.safetensors"))
    name = sorted(k for k, v in weights.items() if v.is_floating_point())[0]
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(run / "model.safetensors"))
    with pytest.raises(AffineVAEError, match=rf"model.safetensors: NaN or infinite values in the weights \({name}\)"):
        av.load(run)
    for kw, msg in (({"lr": float("inf")}, "lr must be a finite number > 0"),
                    ({"weight_decay": float("inf")}, "weight_decay must be a finite number >= 0"),
                    ({"seed": -1}, "seed must be an integer >= 0, got -1")):
        with pytest.raises(AffineVAEError, match=msg):
            TrainConfig(**kw)
    with pytest.raises(AffineVAEError, match=r"val_split 0.99 of 20 images holds out all of them"):
        fit(make(), av.data.load_mnist("train", n=20), cfg(epochs=1, val_split=0.99))


def test_a_nan_pose_does_not_crash_the_warp():
    # torch's grid_sample backward crashes the process on NaN coordinates with border padding: in a child process
    code = ("import torch\nfrom affinevae.nn.affine import warp\nx = torch.rand(2, 1, 8, 8, requires_grad=True)\n"
            "th = torch.full((2, 2, 3), float('nan'), requires_grad=True)\n"
            "for pad in ('border', 'zeros'):\n    warp(x, th, padding_mode=pad).sum().backward()\n"
            "assert torch.isfinite(th.grad).all() and torch.isfinite(x.grad).all()\nprint('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-300:])


def _stop_after(n):
    def cb(rec):
        if rec["epoch"] >= n:
            raise KeyboardInterrupt
    return cb


def test_existing_run_needs_resume_and_matching_model(digits, tiny_runs, tmp_path):
    shutil.copytree(tiny_runs.path("vae"), tmp_path / "r")  # a finished 1-epoch run of another vae
    with pytest.raises(AffineVAEError, match="already holds a training run"):
        fit(make(), digits, cfg(epochs=1), out=tmp_path / "r")
    with pytest.raises(AffineVAEError, match=r"different vae model \(hidden \[256\] there, \[64\] here; latent_dim 2 there, 5 here\)"):
        fit(make(latent_dim=5), digits, cfg(epochs=2), out=tmp_path / "r", resume=True)
    record = json.loads((tmp_path / "r" / "train.json").read_text())
    del record["checkpoint"]
    (tmp_path / "r" / "train.json").write_text(json.dumps(record))
    same = av.build_model("vae", image_shape=[1, 28, 28], latent_dim=2, channels=[8, 16])  # the run's own model
    with pytest.raises(AffineVAEError, match="names no checkpoint"):
        fit(same, digits, cfg(epochs=2), out=tmp_path / "r", resume=True)


def test_non_finite_loss_stops_and_keeps_last_checkpoint(digits, tmp_path):
    m = make()

    def poison(rec):
        if rec["epoch"] == 1:
            with torch.no_grad():
                next(m.decoder.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"epoch 2, batch 1.*last good checkpoint"):
        fit(m, digits, cfg(epochs=3), out=tmp_path / "r", callbacks=[poison])
    assert read_run(tmp_path / "r")["epochs_done"] == 1
    kept = av.load(tmp_path / "r")
    assert all(torch.isfinite(v).all() for v in kept.state_dict().values())


def test_bad_training_data(digits):
    with pytest.raises(AffineVAEError, match="model expects"):
        fit(make(), np.zeros((10, 1, 20, 20), np.float32), cfg())
    bad = digits.images[:20].copy()
    bad[3, 0, 5, 5] = np.nan
    with pytest.raises(AffineVAEError, match="NaN"):
        fit(make(), bad, cfg())
    with pytest.raises(AffineVAEError, match="training images need labels"):
        fit(make(name="cvae", num_classes=10), digits.images[:20], cfg())
    # one value in every pixel of every image: refused (it trained, and the learning check blamed the noise)
    for value in (0.0, 0.5):
        with pytest.raises(AffineVAEError, match=rf"every pixel of all 10 images holds the same value \({value:g}\)"):
            fit(make(), np.full((10, *digits.images.shape[1:]), value, np.float32), cfg())
    one = np.full((10, *digits.images.shape[1:]), 0.5, np.float32)
    one[4, 0, 3, 3] = 0.6  # a single pixel that differs: trained
    fit(make(), one, cfg(epochs=1))


def test_bf16_and_cosine_schedule_train(digits):
    res = fit(make(), digits, cfg(epochs=2, bf16=True, schedule="cosine"))
    assert np.isfinite(res.history[-1]["train_loss"])
    assert res.history[1]["lr"] < res.history[0]["lr"]


def test_cvae_and_ae_train(tiny_runs):
    """The session's cVAE and AE were trained by fit: finite losses, and the AE's KL is zero."""
    for name in ("cvae", "ae"):
        history = tiny_runs.run(name).metrics
        assert len(history) == 1 and np.isfinite(history[-1]["train_loss"]) and np.isfinite(history[-1]["val_loss"])
    assert tiny_runs.run("ae").metrics[-1]["train_kl"] == 0.0


def test_ddp_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "affinevae",
           "train", "--model", "vae", "--data", "mnist", "-n", "400", "--epochs", "2", "--batch-size", "50",
           "--latent-dim", "3", "--hidden", "32", "--channels", "8", "--device", "cpu", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("trained vae") == 1  # only rank 0 reports and writes
    metrics = read_metrics(out)
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    model = av.load(out)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_decoder_starts_at_the_mean_image_once(digits, tiny_runs):
    x = torch.as_tensor(digits.images)
    for decoder in ("conv", "mlp"):
        m = make(decoder=decoder)
        m.init_from_data(x)
        with torch.no_grad():
            # with the latent at 0 the untrained decoder's output is dominated by the bias: the mean digit
            start = m.decode(torch.zeros(1, SMALL["latent_dim"]))[0]
        mean = x.mean(0)
        corr = np.corrcoef(start.flatten().numpy(), mean.flatten().numpy())[0, 1]
        assert corr > 0.9, (decoder, corr)
        assert int(m.data_initialised) == 1
    # a trained model (here loaded from a run fit wrote) keeps its output bias: no second initialisation
    m = tiny_runs.run("vae").model()
    assert int(m.data_initialised) == 1
    bias = m.decoder.out_bias.detach().clone()
    m.init_from_data(torch.zeros_like(x))  # would set a very different bias if it ran again
    assert torch.equal(m.decoder.out_bias, bias)


def test_group_norm_keeps_each_image_independent_of_its_batch():
    m = make().eval()
    assert any(isinstance(mod, torch.nn.GroupNorm) for mod in m.modules())
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        alone = m.encode(x[:1]).z_mean
        together = m.encode(x).z_mean[:1]
        torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-5)
    plain = make(norm="none")
    assert not any(isinstance(mod, torch.nn.GroupNorm) for mod in plain.modules())
    with pytest.raises(AffineVAEError, match="norm must be one of"):
        make(norm="batch")


def test_compile_trains_and_leaves_the_model_eager(digits):
    pytest.importorskip("torch._inductor")
    m = make(encoder="mlp", decoder="mlp")
    eager = make(encoder="mlp", decoder="mlp")
    res = fit(m, digits, cfg(epochs=1, val_split=0.0, compile=True))
    fit(eager, digits, cfg(epochs=1, val_split=0.0))
    assert np.isfinite(res.history[0]["train_loss"])
    # the same training up to floating-point rounding of the fused kernels
    compiled_loss, eager_loss = -av.evaluation.mean_elbo(m, digits), -av.evaluation.mean_elbo(eager, digits)
    assert abs(compiled_loss - eager_loss) < 0.05 * eager_loss
    for mod in m.compile_targets():
        assert getattr(mod, "_compiled_call_impl", None) is None  # eager again after fit


def test_a_failing_compile_is_a_one_line_error(digits):
    pytest.importorskip("torch._inductor")
    import torch._dynamo
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()  # no compiled graph from an earlier test may be reused
    m = make(encoder="mlp", decoder="mlp", hidden=[48])
    with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/g++")}):
        with pytest.raises(AffineVAEError, match="torch.compile failed .*train without --compile") as info:
            fit(m, digits, cfg(epochs=1, val_split=0.0, compile=True))
    assert "\n" not in str(info.value)
    torch._dynamo.reset()
    for mod in m.compile_targets():
        assert getattr(mod, "_compiled_call_impl", None) is None  # eager again after the failure


def test_training_step_memory_is_measured_without_touching_the_model():
    from affinevae.training import training_step_bytes

    torch.manual_seed(0)
    model = av.build_model("jrvae", image_shape=(1, 32, 32), latent_dim=2, num_classes=3, invariances=("rotation",),
                           hidden=[16], encoder_hidden=[32], classifier_hidden=[16])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    big = torch.rand(500, 1, 32, 32)
    rng = torch.get_rng_state()
    per_image = training_step_bytes(model, big)
    # the first image of a large set counts as one image, not as the storage it is a view of
    # (equal up to a few bytes: small temporaries freed during the pass may reuse an address, counted once)
    assert per_image == pytest.approx(training_step_bytes(model, big[:1].clone()), rel=1e-3)
    assert per_image < big.numel() * 4 / 10
    # at least the spatial decoder's hidden layer (16 wide) over the 32x32 pixels
    assert per_image > 32 * 32 * 16 * 4
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # train_steps too


def test_in_a_notebook_each_epoch_leaves_its_bar_with_its_losses(monkeypatch, digits):
    """In a Jupyter kernel the epochs' bars are kept and end with the epoch's training and validation loss
    (they were cleared, so a notebook kept no trace of the epochs); in a terminal they are cleared."""
    import types

    import tqdm.auto

    bars = []

    class Bar:
        def __init__(self, total, desc, leave, dynamic_ncols):
            self.desc, self.leave, self.postfix, self.closed = desc, leave, None, False
            bars.append(self)

        def update(self, n):
            pass

        def set_postfix(self, values=None, **kw):
            self.postfix = dict(values or {}, **kw)

        def close(self):
            self.closed = True

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    res = fit(make(), digits, TrainConfig(epochs=2, batch_size=64, val_split=0.2, progress=True, checkpoint=False))
    assert [b.desc for b in bars] == ["epoch 1/2", "epoch 2/2"] and all(b.leave and b.closed for b in bars)
    for bar, record in zip(bars, res.history):
        assert bar.postfix == {"loss": f"{record['train_loss']:.2f}", "val loss": f"{record['val_loss']:.2f}"}
    monkeypatch.delitem(sys.modules, "ipykernel")
    bars.clear()
    fit(make(), digits, TrainConfig(epochs=1, batch_size=64, val_split=0.0, progress=True, checkpoint=False))
    assert len(bars) == 1 and not bars[0].leave and bars[0].closed and set(bars[0].postfix) == {"loss"}


def test_fit_warns_in_python_what_the_model_failed_to_learn(recwarn, tmp_path):
    """As `train` says it: a model whose content latents describe every image alike is named in a warning
    after av.fit (identical images: nothing to tell apart); check_learning=False keeps fit silent."""
    x = np.tile(np.random.default_rng(0).random((1, 1, 12, 12)).astype(np.float32), (16, 1, 1, 1))
    cfg = av.TrainConfig(epochs=1, batch_size=8, val_split=0.0, progress=False)
    with pytest.warns(UserWarning, match=r"^fit: all 2 content latents are unused") as said:
        av.fit(av.build_model("vae", image_shape=(1, 12, 12), latent_dim=2), x, cfg, out=tmp_path / "run")
    assert any(w.filename == __file__ for w in said if "content latents" in str(w.message))  # the caller's line
    line = next(str(w.message) for w in said if "content latents" in str(w.message))
    assert "likelihood='gaussian' lowpass=1.5" in line and "--" not in line  # remedies as Python's keywords
    recwarn.clear()
    av.fit(av.build_model("vae", image_shape=(1, 12, 12), latent_dim=2), x, cfg, check_learning=False)
    assert not [w for w in recwarn if "content latents" in str(w.message)]
    recwarn.clear()  # a resume with nothing left to train checks nothing
    result = av.fit(av.build_model("vae", image_shape=(1, 12, 12), latent_dim=2), x, cfg, out=tmp_path / "run",
                    resume=True)
    assert result.epochs_trained == 0 and not [w for w in recwarn if "content latents" in str(w.message)]
    # on_start: once, with the number of training images (after the validation split), only when training starts
    seen = []
    more = av.TrainConfig(epochs=2, batch_size=8, val_split=0.25, progress=False)
    av.fit(av.build_model("vae", image_shape=(1, 12, 12), latent_dim=2), x, more, on_start=seen.append,
           check_learning=False)
    assert seen == [12]
    with pytest.raises(av.AffineVAEError, match="on_start must be callable"):
        av.fit(av.build_model("vae", image_shape=(1, 12, 12), latent_dim=2), x, more, on_start="go")


def test_a_divergence_on_raw_counts_names_the_data_s_scale(digits):
    """A review: a Gaussian rVAE on raw 12-bit counts (0-4095) diverged with 'try a lower learning rate' alone;
    the message now names the images' scale when their values reach beyond LARGE_PIXELS."""
    from affinevae.training import LARGE_PIXELS, divergence_advice

    assert divergence_advice(torch.full((2, 1, 4, 4), 4095.0)).startswith("the images' values reach 4095: scale them")
    assert divergence_advice(torch.full((2, 1, 4, 4), LARGE_PIXELS)) == "try a lower learning rate"
    counts = torch.as_tensor(digits.images[:128]) * 4095
    with pytest.raises(TrainingDiverged, match=r"non-finite (loss|weights).*the images' values reach 4\d\d\d: scale"):
        fit(make(likelihood="gaussian"), counts, cfg(epochs=2, lr=1e30))


def test_a_fit_refused_by_another_s_lock_leaves_that_run_directory_alone(digits, tmp_path, monkeypatch):
    """An audit: two identical jobs on a new --out: the second, refused by the first's lock, deleted the whole
    directory on its way out (the first's checkpoints and lock file) while the first trained on. The clean-up of
    a fresh run directory now runs only in the process that holds its lock."""
    import affinevae.training as T
    from affinevae.outputs import RunLock

    out = tmp_path / "race"
    other = []

    class FirstJobWins(RunLock):  # the other job takes the lock in the gap before this one's
        def __enter__(self):
            holder = RunLock(self.directory).__enter__()
            other.append(holder)
            (self.directory / "checkpoint-e0001.safetensors").write_bytes(b"the other job's")
            return super().__enter__()

    monkeypatch.setattr(T, "RunLock", FirstJobWins)
    with pytest.raises(AffineVAEError, match="another affinevae process is writing this run"):
        fit(make(), digits, cfg(epochs=1), out=out)
    assert (out / "checkpoint-e0001.safetensors").read_bytes() == b"the other job's" and (out / ".affinevae.lock").exists()
    other[0].__exit__(None, None, None)
