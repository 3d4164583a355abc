"""The command line: every foundation command on MNIST and on a user .npz; user errors exit 2 in one line."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import affinevae as av
from affinevae.cli import main

TINY = ["--latent-dim", "3", "--hidden", "32", "--channels", "8,16", "--no-progress", "--batch-size", "64"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "--model", "vae", "--data", "mnist", "-n", "400", "--epochs", "1", "--out", str(out), *TINY]) == 0
    return out


def test_train_encode_sample_info_on_mnist(run_dir, tmp_path, capsys):
    assert main(["encode", str(run_dir), "--data", "mnist", "-n", "50", "--out", str(tmp_path / "enc.npz")]) == 0
    with np.load(tmp_path / "enc.npz") as f:
        assert f["z_mean"].shape == (50, 3) and f["z_std"].shape == (50, 3) and f["elbo"].shape == (50,)
        assert np.all(f["elbo"] < 0) and np.all(f["z_std"] > 0)
    assert main(["sample", str(run_dir), "-n", "9", "--out", str(tmp_path / "s.png"), "--upscale", "1"]) == 0
    img = Image.open(tmp_path / "s.png")
    assert img.size == (3 * 29 + 1, 3 * 29 + 1)
    capsys.readouterr()
    assert main(["info", str(run_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "vae" and info["epochs_done"] == 1 and info["config"]["latent_dim"] == 3
    assert info["training_data"]["data"] == info["data"] and info["training_data"]["n_train"] >= 1  # as the text gives
    assert main(["info", str(run_dir)]) == 0  # a Bernoulli model: the Gaussian's sigma fields are marked unused
    out = capsys.readouterr().out
    assert "  sigma         1.0  (unused: bernoulli likelihood)" in out and "pixels" not in out  # MNIST: uint8 rule


def test_resume_continues_run(run_dir, tmp_path):
    import shutil

    run = tmp_path / "vae"
    shutil.copytree(run_dir, run)
    args = ["train", "--model", "vae", "--data", "mnist", "-n", "400", "--out", str(run), *TINY]
    assert main([*args, "--epochs", "2"]) == 2  # exists: refuses without --resume
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    assert av.training.read_run(run)["epochs_done"] == 2


def test_resume_on_other_data_is_refused_and_changes_nothing(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "vae"
    shutil.copytree(run_dir, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    # -n left out: all 60 000 digits, not the 400 the run was trained on
    assert main(["train", "--model", "vae", "--data", "mnist", "--out", str(run), *TINY, "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "trained on other data (360 training images" in err and "'n' 400" not in err, err
    assert "n 400" in err and "same data options" in err
    # the same count of other images (the test split) is refused as well: the fingerprint differs
    assert main(["train", "--model", "vae", "--data", "rotated-mnist", "-n", "400", "--out", str(run), *TINY,
                 "--epochs", "2", "--resume"]) == 2
    assert "other data (360 training images" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and not p.name.endswith(".lock")}
    assert after == {k: v for k, v in before.items() if not k.endswith(".lock")}


@pytest.mark.parametrize("argv, match", [
    (["train", "--model", "vae"], "the following arguments are required: --data, --out (see 'affinevae train --help')"),
    (["encode", "run", "--data", "mnist", "--out", "e.npz", "--bogus"],
     "unrecognized arguments: --bogus (see 'affinevae encode --help')"),
    (["train", "--model", "vae", "--data", "mnist", "--out", "r", "--epochs", "two"],
     "argument --epochs: invalid int value: 'two'"),
    (["nosuch"], "invalid choice: 'nosuch'"),
    (["train", "--model", "vae", "--data", "mnist", "--out", "r", "--seed", "-1"],
     "argument --seed: must be an integer >= 0, got '-1' (see 'affinevae train --help')"),
    ([], "the following arguments are required: COMMAND (see 'affinevae --help')"),
])
def test_command_lines_that_do_not_parse_are_one_line_exit_2(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and err.startswith("affinevae: error: ") and match in err, err
    assert "usage:" not in err and captured.out == ""
    assert not list(tmp_path.iterdir())  # nothing written


def test_cvae_on_user_npz(tmp_path, capsys):
    d = av.data.load_mnist("test", n=200)
    np.savez(tmp_path / "mine.npz", images=(d.images[:, 0] * 255).astype(np.uint8), labels=d.labels)
    out = tmp_path / "cvae"
    assert main(["train", "--model", "cvae", "--data", str(tmp_path / "mine.npz"), "--epochs", "1", "--out", str(out), *TINY]) == 0
    assert av.load(out).config.num_classes == 10
    assert main(["encode", str(out), "--data", str(tmp_path / "mine.npz"), "--out", str(tmp_path / "e.npz")]) == 0
    with np.load(tmp_path / "e.npz") as f:
        assert f["z_mean"].shape == (200, 3) and np.array_equal(f["labels"], d.labels)
    assert main(["sample", str(out), "-n", "4", "--class", "7", "--out", str(tmp_path / "s.png")]) == 0
    # cycling through the 10 classes: one column per class, 2 rows for 20 samples (28-pixel digits, 1-pixel gaps)
    assert main(["sample", str(out), "-n", "20", "--upscale", "1", "--out", str(tmp_path / "all.png")]) == 0
    from PIL import Image
    with Image.open(tmp_path / "all.png") as im:
        assert im.size == (10 * 29 + 1, 2 * 29 + 1)



@pytest.mark.parametrize("family, decoder, invariances, arrays", [
    ("rvae", "spatial", "rotation,translation", {"angle": (60,), "shift": (60, 2)}),
    ("rvae", "warp", "rotation,scale", {"angle": (60,), "scale": (60,)}),
    ("crvae", "spatial", "translation,scale,rotation", {"angle": (60,), "shift": (60, 2), "scale": (60,)}),
    ("rvae", "spatial", "none", {}),
])
def test_invariant_models_train_encode_and_sample(family, decoder, invariances, arrays, tmp_path, capsys):
    out = tmp_path / family
    argv = ["train", "--model", family, "--data", "rotated-mnist", "-n", "200", "--epochs", "1", "--out", str(out),
            "--latent-dim", "2", "--decoder", decoder, "--invariances", invariances, "--hidden", "16,16",
            "--set", "encoder_hidden=[32]", "--no-progress", "--batch-size", "50"]
    assert main(argv) == 0
    model = av.load(out)
    assert model.family == family and model.config.decoder == decoder
    assert ",".join(model.config.invariances) == ("" if invariances == "none" else
                                                  ",".join(v for v in ("rotation", "translation", "scale")
                                                           if v in invariances))
    assert main(["encode", str(out), "--data", "rotated-mnist", "-n", "60", "--out", str(tmp_path / "e.npz")]) == 0
    with np.load(tmp_path / "e.npz") as f:
        for name in ("angle", "shift", "scale"):
            assert (name in f.files) == (name in arrays), name
            if name in arrays:
                assert f[name].shape == arrays[name] and np.isfinite(f[name]).all()
        assert f["z_mean"].shape == (60, 2) and "labels" in f.files
        if "angle" in arrays:
            assert np.abs(f["angle"]).max() <= np.pi + 1e-6  # radians
    sample = ["sample", str(out), "-n", "4", "--out", str(tmp_path / "s.png")]
    assert main(sample + (["--class", "3"] if family == "crvae" else [])) == 0
    assert (tmp_path / "s.png").stat().st_size > 100

@pytest.mark.parametrize("argv,msg", [
    (["train", "--model", "vae", "--data", "nope.npz", "--out", "X"], "nope.npz: file not found"),
    (["train", "--model", "vea", "--data", "mnist", "--out", "X"], "unknown model 'vea'"),
    (["train", "--model", "vae", "--data", "mnist", "--out", "X", "--invariances", "rotation"], "unknown option 'invariances'"),
    (["train", "--model", "vae", "--data", "mnist", "--out", "X", "--epochs", "0"], "epochs must be"),
    (["train", "--model", "cvae", "--data", "BADNPZ", "--out", "X"], "need labels"),
    (["train", "--model", "vae", "--data", "mnist", "--out", "X", "--hidden", "a,b"], "--hidden must be"),
    (["train", "--model", "vae", "--data", "NANNPY", "--out", "X"], "NaN"),
    (["info", "missing_run"], "no such file, run or model directory"),
    (["train", "--model", "vae", "--data", "mnist", "--out", "X", "--val-data", "WRONGSHAPE"], "shape"),
    (["sample", "RUN", "-n", "0", "--out", "x.png"], "-n must be"),
    (["encode", "RUN", "--data", "WRONGSHAPE", "--out", "e.npz"], "shape"),
])
def test_user_errors_exit_2_with_one_line(argv, msg, tmp_path, run_dir, capsys):
    np.save(tmp_path / "nan.npy", np.full((3, 8, 8), np.nan, np.float32))
    np.savez(tmp_path / "bad.npz", images=np.zeros((5, 28, 28), np.uint8))
    np.save(tmp_path / "wrong.npy", np.zeros((5, 20, 20), np.uint8))
    subs = {"BADNPZ": str(tmp_path / "bad.npz"), "NANNPY": str(tmp_path / "nan.npy"), "RUN": str(run_dir),
            "WRONGSHAPE": str(tmp_path / "wrong.npy"), "X": str(tmp_path / "x"), "missing_run": str(tmp_path / "missing")}
    argv = [subs.get(a, a) for a in argv]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("affinevae: error:") and msg in err[0], err


def test_console_script_prints_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "affinevae", "encode", str(tmp_path / "none"), "--data", "mnist",
                        "--out", str(tmp_path / "e.npz")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def test_a_command_leaves_the_callers_warning_format_as_it_was(tmp_path, capsys):
    """main() prefixes its own warnings with 'affinevae: warning:' while it runs, and gives the
    process its format back afterwards (catch_warnings does not restore formatwarning)."""
    import warnings

    before = warnings.formatwarning
    assert main(["info", str(tmp_path / "no-such-run")]) == 2
    assert warnings.formatwarning is before
    assert "affinevae: warning" not in warnings.formatwarning("third-party", UserWarning, "f.py", 1)


def test_train_writes_one_line_per_epoch_when_no_bar_is_drawn(tmp_path, capsys):
    """stderr is not a terminal here (a batch job's log): no bar, one line per epoch; --no-progress: none."""
    small = ["train", "--model", "vae", "--data", "mnist", "-n", "100", "--epochs", "2", "--latent-dim", "2",
             "--hidden", "16", "--channels", "4,8", "--batch-size", "50"]
    assert main([*small, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err.splitlines()
    lines = [line for line in err if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all("train loss" in line and "val loss" in line and line.endswith("images/s") for line in lines)
    assert main([*small, "--no-progress", "--out", str(tmp_path / "b")]) == 0
    assert "epoch 1/2" not in capsys.readouterr().err


def test_the_epoch_line_and_the_summary_say_the_losses_alike():
    """Both name the training loss's extra terms (the epoch line left them out, so its train loss
    looked far above the val loss with a pose anchor)."""
    from affinevae.cli.train import epoch_line, losses_text

    record = {"epoch": 3, "train_loss": 268.18, "train_recon": 200.0, "train_kl": 31.0, "train_pose_anchor": 36.82,
              "val_loss": 231.5, "images_per_s": 1234.4, "lr": 0.003}
    assert losses_text(record) == "train loss 268.18 (with pose_anchor 36.82), val loss 231.50 nats/image"
    assert epoch_line(record, 10) == ("epoch 3/10: train loss 268.18 (with pose_anchor 36.82), val loss 231.50 "
                                      "nats/image, 1234 images/s")
    assert losses_text({"train_loss": 1.0}) == "train loss 1.00 nats/image"


def test_train_says_what_the_model_did_when_the_epoch_ends_once():
    """The pose anchor's synchronisation and the classifier's k-means start are said at the end of
    the epoch whose record shows them (they were said after the last epoch), each once a run."""
    from affinevae.cli.train import training_notes

    said: set = set()
    first = {"epoch": 1, "pose_sync_agreement": 0.91, "train_pose_anchor": 3.0}
    assert training_notes(first, said) == [
        "affinevae: pose anchor: the training images' angles synchronised with agreement 0.91; the encoder's angle is "
        "anchored to them (pose_anchor)"]
    assert training_notes({**first, "epoch": 2}, said) == []  # every epoch's record repeats the agreement
    assert training_notes({"epoch": 3, "class_kmeans_start": 1.0}, said) == [
        "affinevae: the classifier started from k-means of the training images before epoch 3 (class_init)"]
    assert training_notes({"epoch": 1, "pose_sync_agreement": 0.2}, set())[0].endswith("so the anchor is left off")
    assert training_notes({"epoch": 4, "class_kmeans_start": 1.0, "class_kmeans_aligned": 1.0}, set()) == [
        "affinevae: the classifier started from aligned k-means (compared at their best turns) of the training images "
        "before epoch 4 (class_init)"]
    from affinevae.cli.train import prefit_line
    full = dict(invariances=("rotation",), rotation_mode="full")
    assert prefit_line(av.build_model("rvae", latent_dim=2, **full).config) == (
        "affinevae: before the first step the training images are synchronised (pose anchor) and embedded by t-SNE "
        "(content anchor): about 50 s for 10 000 images on one CPU thread")
    assert "about 100 s" in prefit_line(av.build_model("rvae", latent_dim=3, **full).config)
    assert prefit_line(av.build_model("rvae", latent_dim=4, **full).config).endswith(
        "synchronised (pose anchor): about 23 s for 10 000 images on one CPU thread")
    # scaled to the data: the synchronisation grows as N * min(N, 10 000), t-SNE with the images it embeds
    assert prefit_line(av.build_model("rvae", latent_dim=2, **full).config, 40000).endswith(
        "about 120 s for 40 000 images on one CPU thread")
    assert prefit_line(av.build_model("rvae", latent_dim=2, **full).config, 500).endswith(
        "a few seconds for 500 images on one CPU thread")
    assert prefit_line(av.build_model("rvae", latent_dim=2, **full).config, 1).endswith("for 1 image on one CPU thread")
    assert prefit_line(av.build_model("rvae", latent_dim=2).config) is None
    assert prefit_line(av.build_model("vae", latent_dim=2).config) is None
    anchored = {"epoch": 1, "pose_sync_agreement": 0.96, "pose_sync_symmetry": 1, "train_pose_anchor": 1.0,
                "content_anchor_embedded": 1.0}
    said = set()
    assert training_notes(anchored, said)[1] == (
        "affinevae: content anchor: the content latents are held to a t-SNE embedding of the training images turned "
        "into that frame (--set content_anchor=0 turns it off)")
    assert training_notes({**anchored, "epoch": 2}, said) == []  # once
    components = {k: v for k, v in anchored.items() if k != "content_anchor_embedded"}
    assert "the principal components" in training_notes({**components, "content_anchor_components": 1.0}, set())[1]
    assert training_notes({"epoch": 3, "class_kmeans_start": 1.0, "class_kmeans_aligned": 1.0,
                           "class_kmeans_fallback": 1.0}, set())[0].endswith(
        "(class_init) (their views synchronised with agreement below 0.7, too faint for the embedding start)")
    assert training_notes({"epoch": 3, "class_kmeans_start": 1.0, "class_kmeans_embedded": 1.0}, set()) == [
        "affinevae: the classifier started from k-means of a t-SNE embedding (synchronised into one frame) of the "
        "training images before epoch 3 (class_init)"]
    rods = {"epoch": 1, "pose_sync_agreement": 0.96, "pose_sync_symmetry": 2, "train_pose_anchor": 3.0}
    assert training_notes(rods, set()) == [
        "affinevae: pose anchor: the training images' angles synchronised modulo 180 degrees (2-fold symmetric "
        "objects: chosen by the synchronisation unless --set anchor_symmetry=N sets it) with agreement 0.96; the "
        "encoder's angle is anchored to them (pose_anchor)"]


def test_train_a_full_circle_rvae_from_the_command_line(tmp_path, capsys):
    """The README's full-circle command: its defaults line, the pose anchor's line, the named anchor term."""
    assert main(["train", "--model", "rvae", "--data", "rotated-mnist", "--max-angle", "180", "-n", "200", "--epochs", "1",
                 "--latent-dim", "2", "--invariances", "rotation", "--set", "rotation_mode=full", "--set",
                 "group_channels=4,8", "--no-progress", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "affinevae: rvae over the full circle defaults: batch_size=100 lr=0.003 (override with --batch-size/--lr)"
    assert any(line.startswith("affinevae: pose anchor: the training images' angles synchronised with agreement")
               for line in out)
    assert "trained rvae on 180 images" in out[-1] and "(with pose_anchor " in out[-1]
    model = av.load(tmp_path / "r")
    assert model.config.encoder == "equivariant" and model.config.group_channels == (4, 8) and model.full_circle


def test_train_says_when_the_joint_models_classifier_started_from_kmeans(tmp_path, capsys):
    argv = ["train", "--model", "jrvae", "--data", "mnist", "-n", "60", "--latent-dim", "2", "--hidden", "8,8",
            "--set", "encoder_hidden=[16]", "--set", "classifier_hidden=[16]", "--classes", "3", "--epochs", "1",
            "--set", "class_init_epochs=0", "--set", "class_init_steps=5", "--no-progress", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "affinevae: the classifier started from k-means of the training images before epoch 1 (class_init)" in out


def test_a_run_scales_other_files_as_its_training_data(tmp_path, capsys):
    """The run keeps how its float training pixels were scaled (train.json 'pixel_scaling'), and
    encode scales another file with it, saying so: a subset of the training images gets the same
    latents as in the whole file (each file's own range gave other pixels and latents). A corrupt
    record is one line naming train.json."""
    import json

    rng = np.random.default_rng(0)
    a = (rng.normal(size=(120, 12, 12)) * 2 + 0.3).astype(np.float32)
    a[5, 1, 1], a[6, 1, 1] = 25.0, -20.0  # the range's extremes lie outside the subset
    np.save(tmp_path / "all.npy", a)
    np.save(tmp_path / "sub.npy", a[40:80])
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="min-max scaling"):
        assert main(["train", "--model", "vae", "--data", str(tmp_path / "all.npy"), "--latent-dim", "2", "--hidden",
                     "16", "--channels", "4,8", "--likelihood", "gaussian", "--epochs", "1", "--no-progress",
                     "--out", str(run)]) == 0
    assert json.loads((run / "train.json").read_text())["pixel_scaling"] == {"kind": "minmax", "offset": -20.0,
                                                                            "divisor": 45.0}
    assert av.Run.open(run).pixel_scaling.divisor == 45.0
    # the run's own file: its recorded scaling (no scan of the file's range, no warning)
    assert main(["encode", str(run), "--data", str(tmp_path / "all.npy"), "--out", str(tmp_path / "all.npz")]) == 0
    capsys.readouterr()
    assert main(["encode", str(run), "--data", str(tmp_path / "sub.npy"), "--out", str(tmp_path / "sub.npz")]) == 0
    assert (f"affinevae: {tmp_path / 'sub.npy'}: pixels scaled as the run's training data were, (x + 20) / 45"
            in capsys.readouterr().out)
    np.testing.assert_array_equal(np.load(tmp_path / "sub.npz")["z_mean"], np.load(tmp_path / "all.npz")["z_mean"][40:80])
    assert main(["amortise", str(run), "--data", str(tmp_path / "sub.npy"), "--epochs", "1", "--out",
                 str(tmp_path / "am")]) == 0  # amortise reads its data as the model was trained too
    assert "pixels scaled as the run's training data were, (x + 20) / 45" in capsys.readouterr().out
    # the model amortise writes keeps the run's data record (data.json): other data are read for it alike
    am = av.Run.open(tmp_path / "am")
    assert not am.has_training and am.meta == av.Run.open(run).meta and am.pixel_scaling.divisor == 45.0
    assert am.data_record["from"] == str(run.resolve())
    np.testing.assert_array_equal(am.data(source=str(tmp_path / "sub.npy"), n=None).images,
                                  av.Run.open(run).data(source=str(tmp_path / "sub.npy"), n=None).images)
    assert main(["encode", str(tmp_path / "am"), "--data", str(tmp_path / "sub.npy"), "--out",
                 str(tmp_path / "am.npz")]) == 0
    assert "pixels scaled as the run's training data were, (x + 20) / 45" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "am")]) == 0
    out = capsys.readouterr().out
    assert f"data        as {run.resolve()} was trained: {tmp_path / 'all.npy'}" in out and "(x + 20) / 45" in out
    with pytest.raises(av.AffineVAEError, match="holds a training run"):
        am.copy_data_record(run)
    assert main(["info", str(run)]) == 0  # info says the scaling; the sigma fields are used (Gaussian)
    out = capsys.readouterr().out
    assert "pixels      (x + 20) / 45 (the training data's min-max range; other data are scaled alike)" in out
    assert "unused" not in out
    # plot and report say it too (an audit: they read other files scaled alike, silently)
    assert main(["plot", str(run), "latent", "--data", str(tmp_path / "sub.npy"), "--out", str(tmp_path / "l.png")]) == 0
    assert capsys.readouterr().out.count("pixels scaled as the run's training data were, (x + 20) / 45") == 1
    assert main(["report", str(run), "--data", str(tmp_path / "sub.npy"), "--sweep-angles", "none", "--out",
                 str(tmp_path / "r.html")]) == 0
    assert "pixels scaled as the run's training data were, (x + 20) / 45" in capsys.readouterr().out
    assert "(x + 20) / 45" in (tmp_path / "r.html").read_text()  # the training data's table names the scaling
    info = json.loads((run / "train.json").read_text())
    info["pixel_scaling"] = {"kind": "minmax", "offset": 0, "divisor": -1}
    (run / "train.json").write_text(json.dumps(info))
    assert main(["encode", str(run), "--data", str(tmp_path / "sub.npy"), "--out", str(tmp_path / "bad.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.json: pixel_scaling must be" in err[0]


def test_partly_labelled_file_trains_a_model_that_takes_no_labels(tmp_path, capsys):
    """An .npz whose own labels are partly unknown (-1) trains an rvae/vae (which take no labels: they are left
    out, said in one line), in Python too; plots colour the unknown ones grey as 'unknown'. Labels given
    explicitly with --labels are checked as given."""
    d = av.data.load_mnist("train", n=120)
    labels = d.labels.copy()
    labels[40:] = -1
    np.savez(tmp_path / "part.npz", images=d.images, labels=labels)
    np.save(tmp_path / "part.npy", labels)
    out = tmp_path / "r"
    capsys.readouterr()
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "part.npz"), "--epochs", "1", "--out", str(out),
                 *TINY]) == 0
    said = capsys.readouterr().out
    assert "part.npz: its labels are -1 (unknown) for 80 of 120 images; 'vae' takes no labels, so they are left out" in said
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "part.npz"), "--labels", str(tmp_path / "part.npy"),
                 "--epochs", "1", "--out", str(tmp_path / "r2"), *TINY]) == 2
    assert "labels of -1 (unknown) are only allowed for semi-supervised class models" in capsys.readouterr().err
    model = av.build_model("vae", image_shape=(1, 28, 28), latent_dim=2, hidden=(16,), encoder="mlp", decoder="mlp")
    data = av.data.ImageSet(d.images, labels=labels)
    assert av.fit(model, data, av.TrainConfig(epochs=1, progress=False), check_learning=False).epochs_trained == 1
    from affinevae.analysis.latent import UNKNOWN_COLOR, latent_codes, plot_latent_scatter

    fig = plot_latent_scatter(latent_codes(av.load(out), data, method="pca"), color_by="class")
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()][:2] == ["unknown", "0"]
    from matplotlib.colors import to_hex

    assert to_hex(fig.axes[0].collections[0].get_facecolor()[0]) == UNKNOWN_COLOR


def test_info_of_a_folder_checks_every_file_s_size(tmp_path, capsys):
    """info FOLDER read the first image only and so said nothing of a file of another size, which train refuses
    (mixed image sizes): every file's size is now read from its header."""
    for name, side in (("a", 28), ("b", 28), ("c", 30)):
        Image.fromarray(np.zeros((28, side), np.uint8)).save(tmp_path / f"{name}.png")
    capsys.readouterr()
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mixed image sizes: c.png is 28 x 30, a.png 28 x 28 (train refuses the folder)" in out
    (tmp_path / "c.png").unlink()
    assert main(["info", str(tmp_path)]) == 0
    assert "all 2 files 28 x 28 pixels" in capsys.readouterr().out
