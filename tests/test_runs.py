"""affinevae.runs: a run directory as a :class:`Run`, and :func:`load` of its model."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil

import numpy as np
import pytest
import torch

import affinevae as av
from affinevae.data import load_mnist, rotated_mnist
from affinevae.errors import AffineVAEError
from affinevae.runs import Run, load


def test_a_training_run(tiny_runs):
    run = Run.open(tiny_runs.path("vae"))
    assert run.has_training and run.epochs_done == 1 and run.seed == 0 and run.binarize is None
    assert run.train_config["epochs"] == 1 and run.train_config["batch_size"] == 64
    meta = dict(run.meta)
    assert len(meta.pop("data_fingerprint")) == 32
    assert meta == {"data": "mnist", "labels": None, "key": None, "n": 500, "n_train": 450}
    assert [m["epoch"] for m in run.metrics] == [1] and {"train_loss", "val_loss"} <= set(run.metrics[0])
    model = run.model()
    trained = tiny_runs.model("vae")
    assert not model.training and all(torch.equal(v, trained.state_dict()[k]) for k, v in model.state_dict().items())
    assert run.model_config == trained.config.to_dict() and run.model_description["model"] == "vae"
    weights, optim = run.checkpoint
    assert (weights, optim) == run.state_files(1) and weights.is_file() and optim.is_file()
    assert sorted(run.all_state_files()) == sorted([weights, optim])
    assert run.pose_record() is None and run.training_angles() is None  # upright MNIST: no rotations


def test_run_data_is_what_training_used(tiny_runs):
    run = tiny_runs.run("rvae")
    test = run.data(n=30)  # default: the test split of the run's own spec, drawn with its seed
    expected = rotated_mnist("test", n=30, seed=1)
    np.testing.assert_array_equal(test.images, expected.images)
    np.testing.assert_allclose(test.angle, expected.angle)
    np.testing.assert_allclose(run.training_angles(), rotated_mnist("train", n=400, seed=0).angle)
    assert len(run.data(split="train", n=None)) == 400
    other = run.data(n=10, source="mnist")  # another spec replaces the run's own
    assert other.angle is None and len(other) == 10
    given = load_mnist("test", n=20)
    assert run.data(n=5, source=given).images.shape == (5, 1, 28, 28) and run.data(n=None, source=given) is given


def test_a_saved_model_opens_as_a_run_without_training(tmp_path):
    torch.manual_seed(0)
    model = av.build_model("vae", latent_dim=2, channels=[8], hidden=[16])
    model.save(tmp_path / "m")
    run = Run.open(tmp_path / "m")
    assert not run.has_training and run.metrics == [] and run.info == {} and run.meta == {}
    assert run.epochs_done is None and run.seed == 0 and run.checkpoint is None and run.train_config == {}
    loaded = run.model()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(AffineVAEError, match=r"a saved model \(no train.json\) records no data"):
        run.data()
    assert run.data(n=4, source="mnist").images.shape == (4, 1, 28, 28)


def test_a_saved_model_with_its_runs_data_record_reads_the_runs_data(tiny_runs, tmp_path):
    """A model saved from a run with :meth:`Run.copy_data_record` (as ``amortise --out`` does) reads the run's
    own data, drawn with its seed, and other data as the run's training did; a corrupt record is one line."""
    source = tiny_runs.run("rvae")
    model = source.model()
    model.save(tmp_path / "m")
    assert Run.open(tmp_path / "m").meta == {}
    written = source.copy_data_record(tmp_path / "m")
    run = Run.open(tmp_path / "m")
    assert written == tmp_path / "m" / "data.json" and not run.has_training
    assert run.meta == source.meta and run.seed == source.seed and run.info == {}
    np.testing.assert_array_equal(run.data(n=30).images, source.data(n=30).images)
    np.testing.assert_allclose(run.training_angles(), source.training_angles())
    model.save(tmp_path / "again")  # a model written from the saved one (amortise of amortise's) keeps the record,
    # whose 'from' still names the run that was trained (absolute: it is read from anywhere)
    run.copy_data_record(tmp_path / "again")
    again = Run.open(tmp_path / "again")
    assert again.meta == source.meta and again.data_record["from"] == str(source.path.resolve())  # the trained run, not the copy
    with pytest.raises(AffineVAEError, match="holds no saved model"):
        source.copy_data_record(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
    for bad, why in [("[1, 2]", "not an affinevae data record"), ('{"meta": {}, "seed": -1}', "not an affinevae"),
                     ('{"meta": {}, "seed": 0, "from": 7}', "'from', the run's directory"),
                     ('{"meta": {"n": 0}, "seed": 0}', r"corrupt data record \(n must be an integer >= 1"),
                     ("{", "data record")]:
        (tmp_path / "m" / "data.json").write_text(bad)
        with pytest.raises(AffineVAEError, match=why):
            Run.open(tmp_path / "m").meta
    empty = tmp_path / "e"
    model.save(empty)
    assert Run.open(empty).copy_data_record(tmp_path / "m") is None  # a saved model without a record has none,
    assert not (tmp_path / "m" / "data.json").exists()  # and leaves none describing other data
    source.copy_data_record(tmp_path / "m")
    model.save(tmp_path / "m", overwrite=True)  # another model saved there: the record was the replaced one's
    assert Run.open(tmp_path / "m").meta == {}


def test_open_and_errors(tiny_runs, tmp_path):
    with pytest.raises(AffineVAEError, match="no such run or model directory"):
        Run.open(tmp_path / "missing")
    handle = Run(tmp_path / "later")  # a handle reads nothing: the trainer writes through one
    assert not handle.has_training and repr(handle).startswith("Run(")
    with pytest.raises(AffineVAEError, match="later: no such run or model directory"):  # a mistyped path: said
        handle.metrics
    run = Run.open(tiny_runs.path("vae"))
    assert Run.open(run) is run
    broken = tmp_path / "broken"
    shutil.copytree(run.path, broken)
    (broken / "train.json").write_text("{not json")
    good = (broken / "metrics.jsonl").read_text().splitlines()
    with (broken / "metrics.jsonl").open("a") as f:
        f.write("{oops")  # a torn last line (a write cut short) is dropped with a warning
    with pytest.warns(UserWarning, match="ignored a broken last line"):
        assert len(Run.open(broken).metrics) == len(good)
    with pytest.raises(AffineVAEError, match="corrupt training state"):
        Run.open(broken).meta
    with (broken / "metrics.jsonl").open("a") as f:
        f.write("\n" + good[-1] + "\n")  # the broken line is no longer the last: an error
    with pytest.raises(AffineVAEError, match=f"metrics.jsonl: corrupt line {len(good) + 1}"):
        Run.open(broken).metrics
    # an audit: '"epoch": "x"' passed (report then failed without naming the file; resume rewrote it as it was)
    for bad, said in [('"x"', "epoch must be a whole number >= 1, got 'x'"), ("0", "epoch must be a whole number >= 1"),
                      ("true", "epoch must be a whole number >= 1, got True")]:
        (broken / "metrics.jsonl").write_text(good[0].replace('"epoch": 1', f'"epoch": {bad}', 1) + "\n" + good[-1] + "\n")
        with pytest.raises(AffineVAEError, match=f"metrics.jsonl: line 1: {re.escape(said)}"):
            Run.open(broken).metrics
    (broken / "metrics.jsonl").write_text(good[0].replace('"epoch": 1', '"epoch": 1, "val_extra": [1]', 1) + "\n")
    with pytest.raises(AffineVAEError, match=r"metrics.jsonl: line 1: val_extra must be a number, got \[1\]"):
        Run.open(broken).metrics
    (broken / "metrics.jsonl").write_text("\n".join(good) + "\n")
    (broken / "model.json").unlink()
    with pytest.raises(AffineVAEError, match="model config not found"):
        Run.open(broken).model()


def test_load_lives_in_runs_and_io_is_a_leaf():
    import affinevae.io
    import affinevae.training

    assert av.load is load and av.Run is Run
    assert not hasattr(affinevae.io, "load")
    assert affinevae.training.read_run is av.runs.read_run and affinevae.training.read_metrics is av.runs.read_metrics


def test_run_data_named_again_keeps_the_recorded_options_and_a_missing_file_says_whose(tiny_runs, tmp_path):
    import json
    import math
    import shutil

    run_dir = tmp_path / "r360"
    shutil.copytree(tiny_runs.path("rvae"), run_dir)
    info = json.loads((run_dir / "train.json").read_text())
    info["max_angle"] = math.pi  # as `train --data rotated-mnist --max-angle 180` records it
    (run_dir / "train.json").write_text(json.dumps(info))
    run = Run.open(run_dir)
    own, named = run.data(n=300), run.data(n=300, source="rotated-mnist")
    np.testing.assert_array_equal(own.images, named.images)  # the full circle, not the default +-60 degrees
    assert np.abs(named.angle).max() > math.radians(150)
    from argparse import Namespace

    from affinevae.cli.plot import plot_data

    args = Namespace(data="rotated-mnist", key=None, labels=None, split="test", n=300, seed=0, binarize=None)
    np.testing.assert_array_equal(plot_data(args, run).images, own.images)  # `plot --data rotated-mnist` too
    other = plot_data(Namespace(**{**vars(args), "data": "mnist"}), run)
    assert other.angle is None and len(other) == 300  # another spec: loaded as given
    info["data"] = "gone.npy"
    (run_dir / "train.json").write_text(json.dumps(info))
    with pytest.raises(AffineVAEError, match=r"gone.npy.*the data .*train.json records, as given to train from its "
                                             r"working directory; give the data to analyse with --data"):
        Run.open(run_dir).data(n=10)


def test_info_aligns_long_keys_and_a_closed_pipe_ends_quietly(tiny_runs, capsys, monkeypatch):
    import io
    import sys

    from affinevae.cli import main

    assert main(["info", str(tiny_runs.path("rvae"))]) == 0
    lines = capsys.readouterr().out.splitlines()
    config = [line for line in lines if line.startswith("  ")]
    starts = {len(line) - len(line[2:].split(" ", 1)[1].lstrip()) for line in config}
    assert len(starts) == 1 and all(" " in line[2:] for line in config)  # one value column, keys never run on
    assert any(line.startswith("training    1/1 epochs on rotated-mnist, n 400 (360 training images)") for line in lines)

    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    monkeypatch.setattr("os.dup2", lambda *a: None)
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    assert main(["info", str(tiny_runs.path("rvae")), "--json"]) == 141
    assert capsys.readouterr().err == ""
    if fds is not None:  # the /dev/null descriptor opened to replace stdout's is closed again
        assert len(os.listdir("/proc/self/fd")) == fds


def test_encode_takes_the_runs_angle_range_for_its_own_data(tiny_runs, tmp_path, capsys):
    import json
    import math
    import shutil

    from affinevae.cli import main

    run_dir = tmp_path / "r360"
    shutil.copytree(tiny_runs.path("rvae"), run_dir)
    info = json.loads((run_dir / "train.json").read_text())
    info["max_angle"] = math.pi
    (run_dir / "train.json").write_text(json.dumps(info))
    assert main(["encode", str(run_dir), "--data", "rotated-mnist", "-n", "200", "--out", str(tmp_path / "e.npz")]) == 0
    assert "--max-angle 180 from the run's training data (override with --max-angle)" in capsys.readouterr().out
    assert main(["encode", str(run_dir), "--data", "rotated-mnist", "-n", "200", "--max-angle", "30",
                 "--out", str(tmp_path / "e30.npz")]) == 0
    assert "from the run's training data" not in capsys.readouterr().out
    # plot draws rather than reports: no angle-range line (a review: it came back with plot's scaling note)
    assert main(["plot", str(run_dir), "latent", "--data", "rotated-mnist", "-n", "50", "--out", str(tmp_path / "l.png")]) == 0
    assert "from the run's training data" not in capsys.readouterr().out


def _full_circle_copy(tiny_runs, tmp_path, **changes):
    """A copy of the tiny vae run whose train.json says it trained on full-circle rotated digits."""
    import json
    import math

    run_dir = tmp_path / "r360"
    shutil.copytree(tiny_runs.path("vae"), run_dir)
    info = json.loads((run_dir / "train.json").read_text())
    info.update({"data": "rotated-mnist", "max_angle": math.pi, "n": 400, **changes})
    (run_dir / "train.json").write_text(json.dumps(info))
    return run_dir


def test_align_and_sweep_take_the_runs_angle_range_for_its_own_data(tiny_runs, tmp_path, capsys, monkeypatch):
    """align and sweep on a run's own --data go through Run.data: its angle range, seed and n are kept (and
    said), as plot and encode do; an explicit --data-max-angle wins; sweep thresholds only after turning."""
    import math

    from affinevae.cli import main
    from affinevae.cli import sweep as sweep_cli
    from affinevae.models.avae import AVAE

    run_dir = _full_circle_copy(tiny_runs, tmp_path, binarize=0.5)
    seen = {"align": [], "sweep": []}  # the images each command hands on (the sweep's AVAE also aligns)
    align = AVAE.align
    monkeypatch.setattr(AVAE, "align", lambda self, x, *a, **k: (seen["align"].append(np.asarray(x)),
                                                                  align(self, x, *a, **k))[1])
    sweep = sweep_cli.rotation_sweep
    monkeypatch.setattr(sweep_cli, "rotation_sweep", lambda m, x, *a, **k: (seen["sweep"].append(np.asarray(x)),
                                                                            sweep(m, x, *a, **k))[1])
    full = rotated_mnist("test", n=20, seed=1, max_angle=math.pi)  # the run's seed 0: the test split draws with 1
    assert np.abs(full.angle).max() > math.radians(120)
    search = ["--restarts", "1", "--steps", "0"]
    assert main(["align", str(run_dir), "--data", "rotated-mnist", "-n", "20", *search,
                 "--out", str(tmp_path / "a.npz")]) == 0
    assert "affinevae: --data-max-angle 180 from the run's training data (override with --data-max-angle)" in \
        capsys.readouterr().out
    np.testing.assert_array_equal(seen["align"][-1], full.binarized(0.5).images)  # thresholded as training was
    assert main(["sweep", str(run_dir), "--data", "rotated-mnist", "-n", "20", "--angles", "0,90", *search,
                 "--out", str(tmp_path / "s.csv")]) == 0
    assert "affinevae: --data-max-angle 180 from the run's training data" in capsys.readouterr().out
    np.testing.assert_array_equal(seen["sweep"][-1], full.images)  # not thresholded before the sweep turns them
    # an explicit range wins, without the line; another source is loaded as given
    for cmd, extra in (("align", []), ("sweep", ["--angles", "0,90"])):
        assert main([cmd, str(run_dir), "--data", "rotated-mnist", "-n", "20", "--data-max-angle", "30", *extra, *search,
                     "--out", str(tmp_path / f"{cmd}30.{'npz' if cmd == 'align' else 'csv'}")]) == 0
        assert "from the run's training data" not in capsys.readouterr().out
        narrow = rotated_mnist("test", n=20, seed=1, max_angle=math.radians(30))
        np.testing.assert_array_equal(seen[cmd][-1], narrow.images)  # drawn with --seed 0 as before
    assert main(["align", str(run_dir), "--data", "mnist", "-n", "20", *search, "--out", str(tmp_path / "m.npz")]) == 0
    assert "from the run's training data" not in capsys.readouterr().out
    np.testing.assert_array_equal(seen["align"][-1], load_mnist("test", n=20).images)


def test_encode_reads_the_runs_own_data_through_run_data(tiny_runs, tmp_path, capsys):
    """encode on the run's own --data: Run.data's images (the run's range, seed and threshold), the same
    line as before; an explicit --max-angle loads the digits with encode's --seed as before."""
    import math

    from affinevae.cli import main
    from affinevae.data import load_dataset
    from affinevae.evaluation import encode_dataset

    run_dir = _full_circle_copy(tiny_runs, tmp_path, binarize=0.5)
    run = Run.open(run_dir)
    model = run.model()
    assert main(["encode", str(run_dir), "--data", "rotated-mnist", "-n", "20", "--out", str(tmp_path / "e.npz")]) == 0
    assert capsys.readouterr().out.startswith("affinevae: --max-angle 180 from the run's training data "
                                              "(override with --max-angle)\nencoded 20 images")
    want = encode_dataset(model, run.data(n=20), seed=0)
    with np.load(tmp_path / "e.npz") as f:
        np.testing.assert_allclose(f["z_mean"], want["z_mean"], atol=1e-6)
    assert main(["encode", str(run_dir), "--data", "rotated-mnist", "-n", "20", "--max-angle", "30", "--seed", "3",
                 "--out", str(tmp_path / "e30.npz")]) == 0
    assert "from the run's training data" not in capsys.readouterr().out
    given = load_dataset("rotated-mnist", split="test", n=20, seed=3, max_angle=math.radians(30))
    with np.load(tmp_path / "e30.npz") as f:
        np.testing.assert_allclose(f["z_mean"], encode_dataset(model, given, seed=3)["z_mean"], atol=1e-6)


def _binarized_copy(tiny_runs, tmp_path):
    """A copy of the tiny vae run (MNIST) whose train.json says it trained on images binarized at 0.5."""
    import json

    run_dir = tmp_path / "rbin"
    shutil.copytree(tiny_runs.path("vae"), run_dir)
    info = json.loads((run_dir / "train.json").read_text())
    info["binarize"] = 0.5
    (run_dir / "train.json").write_text(json.dumps(info))
    return run_dir


def test_a_given_binarize_replaces_the_runs_threshold_on_its_own_data(tiny_runs, tmp_path, monkeypatch):
    """encode/align/plot on a binarized run's own --data: --binarize T thresholds the grey images at T (it was
    applied on top of the run's 0.5, where it changes nothing, so T was silently ignored); without it the run's."""
    import argparse

    from affinevae.cli import encode as encode_cli
    from affinevae.cli import main
    from affinevae.cli.plot import plot_data

    run_dir = _binarized_copy(tiny_runs, tmp_path)
    grey = load_mnist("test", n=20).images
    seen = []
    encode = encode_cli.encode_dataset
    monkeypatch.setattr(encode_cli, "encode_dataset", lambda model, data, **k: (seen.append(data.images.copy()),
                                                                                encode(model, data, **k))[1])
    for given, threshold in ((None, 0.5), ("0.2", 0.2), ("0.8", 0.8)):
        extra = [] if given is None else ["--binarize", given]
        assert main(["encode", str(run_dir), "--data", "mnist", "-n", "20", *extra,
                     "--out", str(tmp_path / f"e{given}.npz")]) == 0
        np.testing.assert_array_equal(seen[-1], (grey > threshold).astype(np.float32), err_msg=str(given))
        args = argparse.Namespace(data=None, key=None, labels=None, split="test", n=20, seed=0,
                                  binarize=None if given is None else float(given))
        np.testing.assert_array_equal(plot_data(args, Run.open(run_dir)).images, (grey > threshold).astype(np.float32))
    assert not np.array_equal(grey > 0.2, grey > 0.5)  # the thresholds differ on these digits


def test_sweep_thresholds_the_runs_own_data_as_the_run_was_trained(tiny_runs, tmp_path, capsys, monkeypatch):
    """sweep on a binarized run's own --data thresholds every turned image at the run's threshold unless --binarize
    is given (it swept grey images, which the model never saw); other data keep --binarize alone."""
    from affinevae.cli import main
    from affinevae.cli import sweep as sweep_cli

    run_dir = _binarized_copy(tiny_runs, tmp_path)
    configs = []
    sweep = sweep_cli.rotation_sweep
    monkeypatch.setattr(sweep_cli, "rotation_sweep", lambda m, x, *a, **k: (configs.append(k["config"]),
                                                                            sweep(m, x, *a, **k))[1])
    base = ["sweep", str(run_dir), "-n", "8", "--angles", "0,90", "--restarts", "1", "--steps", "0"]
    assert main([*base, "--data", "mnist", "--out", str(tmp_path / "a.csv")]) == 0
    assert configs[-1].binarize == 0.5
    assert "affinevae: --binarize 0.5 from the run's training data" in capsys.readouterr().out
    assert main([*base, "--data", "mnist", "--binarize", "0.3", "--out", str(tmp_path / "b.csv")]) == 0
    assert configs[-1].binarize == 0.3 and "from the run's training data" not in capsys.readouterr().out
    assert main([*base, "--data", "rotated-mnist", "--out", str(tmp_path / "c.csv")]) == 0  # not the run's data
    assert configs[-1].binarize is None and "--binarize" not in capsys.readouterr().out
    plain = Run.open(tiny_runs.path("vae"))  # trained on grey images: nothing changes
    assert plain.binarize is None
    assert main(["sweep", str(plain.path), "-n", "8", "--angles", "0", "--restarts", "1", "--steps", "0",
                 "--data", "mnist", "--out", str(tmp_path / "d.csv")]) == 0
    assert configs[-1].binarize is None


def test_plot_and_report_sweeps_threshold_after_turning_like_sweep(tiny_runs, tmp_path, monkeypatch):
    """plot loss-vs-rotation and the report's sweep on a binarized run turn the GREY images and threshold after
    each turn at the run's threshold, as the sweep command does (they turned images already thresholded, so
    the same run gave other curves there than in `sweep`)."""
    from affinevae import analysis
    from affinevae.cli import main
    from affinevae.report import write_report

    run_dir = _binarized_copy(tiny_runs, tmp_path)
    seen = []
    real = analysis.loss_vs_rotation

    def spy(models, data, *a, **k):
        seen.append((np.asarray(data.images if hasattr(data, "images") else data), k.get("binarize")))
        return real(models, data, *a, **k)

    monkeypatch.setattr(analysis, "loss_vs_rotation", spy)
    assert main(["plot", str(run_dir), "loss-vs-rotation", "-n", "8", "--angles", "0,90",
                 "--out", str(tmp_path / "l.png")]) == 0
    images, threshold = seen[-1]
    assert threshold == 0.5 and ((images > 0) & (images < 1)).any()  # grey in, thresholded after each turn
    write_report(run_dir, tmp_path / "r.html", n=8, sweep_rotations=np.radians([0, 90]), sweep_n=8)
    images, threshold = seen[-1]
    assert threshold == 0.5 and ((images > 0) & (images < 1)).any()


def test_a_save_interrupted_between_its_two_files_is_found_at_load(tmp_path, monkeypatch):
    """model.safetensors carries the digest of the model.json saved with it: new weights beside the
    old config (a kill between the two atomic writes) are refused in one line, not loaded as a
    model of the wrong config; weights without the digest (earlier versions) still load."""
    from affinevae import io

    a = av.build_model("vae", latent_dim=2, encoder="mlp", decoder="mlp", hidden=[16], beta=1.0)
    b = av.build_model("vae", latent_dim=2, encoder="mlp", decoder="mlp", hidden=[16], beta=4.0, seed=1)
    a.save(tmp_path / "m")
    assert io.tensor_header(tmp_path / "m" / io.MODEL_WEIGHTS)[1][io.CONFIG_DIGEST_KEY]

    def killed(path, data):
        raise KeyboardInterrupt
    monkeypatch.setattr(io, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        b.save(tmp_path / "m", overwrite=True)
    monkeypatch.undo()
    with pytest.raises(AffineVAEError, match=r"m: model.safetensors was saved with another model.json \(a save "
                                             r"interrupted"):
        load(tmp_path / "m")
    b.save(tmp_path / "m", overwrite=True)  # saved again: whole
    back = load(tmp_path / "m")
    assert back.config.beta == 4.0 and all(torch.equal(v, back.state_dict()[k]) for k, v in b.state_dict().items())
    io.save_tensors(tmp_path / "m" / io.MODEL_WEIGHTS, b.state_dict())  # no digest: an earlier version's file
    assert load(tmp_path / "m").config.beta == 4.0


def test_info_on_a_data_file_says_what_it_holds(tmp_path, capsys):
    """info on a data file (it said 'a file, not a run'): frames, pixels of the first frame, an .npz's metadata;
    a damaged file is one line."""
    import json

    from affinevae.cli import main
    from affinevae.data.patches import cut_patches

    stack = np.arange(3 * 8 * 10, dtype=np.float32).reshape(3, 8, 10)
    stack[0, 0, 0] = np.nan
    np.save(tmp_path / "s.npy", stack)
    assert main(["info", str(tmp_path / "s.npy")]) == 0
    out = capsys.readouterr().out
    assert "frames      3 of 8 x 10 pixels, 1 channel(s), float32" in out
    assert "first frame values 1 .. 79, mean 40, sd" in out and "; 1 NaN or infinite" in out
    img = np.zeros((64, 64), np.float32)
    img[20:23, 20:23] = img[40:43, 30:33] = 1.0
    cut_patches(img, 12).save(tmp_path / "p.npz")
    assert main(["info", str(tmp_path / "p.npz"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["frames"].startswith("2 of 12 x 12 pixels") and "kind patches" in info["metadata"]
    assert "window 12" in info["metadata"] and info["arrays"].startswith("patches (2, 12, 12) float32")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    assert main(["info", str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.npy" in err


#: Every model config field as of the content anchor (stop 34). A field added later must say, in its
#: config's FORMER_DEFAULTS, what runs saved before it did, or those runs count as another model.
KNOWN_CONFIG_FIELDS = (
    'activation', 'anchor_symmetry', 'beta', 'cache_refine', 'capacity_steps', 'capacity_weight', 'channels',
    'class_balance', 'class_consistency', 'class_entropy', 'class_init', 'class_init_components',
    'class_init_epochs', 'class_init_steps', 'classifier', 'classifier_hidden', 'classifier_net',
    'classifier_weight', 'content_anchor', 'content_warmup', 'continuous_capacity', 'decoder', 'discrete',
    'discrete_beta', 'discrete_capacity', 'encoder', 'encoder_hidden', 'equivariance', 'group_channels',
    'group_content', 'group_downsample', 'group_order', 'head_channels', 'head_hidden', 'head_hypotheses',
    'head_weight', 'hidden', 'image_shape', 'inner', 'inner_config', 'interpolation', 'invariances', 'jitter_angle',
    'jitter_shift', 'labelled_batch', 'labelled_memory', 'latent_dim', 'learn_sigma', 'likelihood', 'lowpass',
    'norm', 'num_classes', 'padding', 'pose_anchor', 'pose_head', 'pose_optimise', 'pose_refiner', 'record_poses',
    'refiner_channels', 'refiner_hidden', 'regressor_weight', 'rotation_mode', 'rotation_prior', 'rotation_sampler',
    'scale_prior', 'search', 'shift_prior', 'sigma', 'sigma_radius', 'target_dim', 'temperature', 'train_search',
    'transform', 'translation_prior', 'warm_start')


def test_a_new_config_field_says_what_runs_saved_before_it_did():
    """The guard for the next field someone adds: a config field not in KNOWN_CONFIG_FIELDS has a former
    value (FORMER_DEFAULTS), so runs saved before it resume as they were trained (lowpass and content_anchor
    had none, and every older run was refused as another model)."""
    from affinevae.registry import MODELS

    for name in MODELS.names():
        cls = MODELS.get(name).config_class
        new = {f.name for f in dataclasses.fields(cls)} - set(KNOWN_CONFIG_FIELDS) - set(cls.FORMER_DEFAULTS)
        assert not new, (f"{cls.__name__}: new field(s) {sorted(new)}: give their former value in "
                         "FORMER_DEFAULTS (what a run saved before them did)")


@pytest.mark.parametrize("family,options", [
    ("vae", {}), ("cvae", {"num_classes": 3}), ("rvae", {"rotation_mode": "full", "invariances": ["rotation"]}),
    ("jrvae", {"num_classes": 3}), ("ssrvae", {"num_classes": 3}), ("avae", {"inner": "rvae"}),
])
def test_a_saved_config_without_a_field_loads_at_its_former_value_or_counts_as_another(family, options):
    """A saved config lacking a field with a former value (lowpass, content_anchor, anchor_symmetry, ...) is
    compared at that value; lacking any other field, it stays unset, so the run counts as another model
    (today's default might turn on what it never trained with: a jrvae's k-means start, an ssrvae's jitter)."""
    from affinevae.registry import MODELS

    cls = MODELS.get(family).config_class
    whole = av.build_model(family, image_shape=(1, 16, 16), **options).config.to_dict()
    assert cls.loaded_dict(whole) == whole
    for name in whole:
        if name in ("image_shape", "inner", "inner_config"):
            continue
        loaded = cls.loaded_dict({k: v for k, v in whole.items() if k != name})
        if name in cls.FORMER_DEFAULTS:
            assert loaded[name] == cls.FORMER_DEFAULTS[name], name
        else:
            assert name not in loaded, name
    if family == "avae":  # the inner model's fields: its own family's former values
        inner = {k: v for k, v in whole["inner_config"].items() if k != "lowpass"}
        assert cls.loaded_dict({**whole, "inner_config": inner})["inner_config"]["lowpass"] == 0.0


def test_a_run_trained_on_an_array_in_its_own_units_reads_other_data_in_them(tmp_path, capsys):
    """fit on a float array outside [0, 1] records that its units were kept (RAW_UNITS): Run.data of the same
    values in a file gives them back unscaled (not min-max scaled as the file alone would be) and `info` says
    so; an array within [0, 1] records nothing (the file rule leaves it alike)."""
    from affinevae.cli import main
    from affinevae.data.imageset import RAW_UNITS

    x = np.random.default_rng(0).normal(5.0, 2.0, (24, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    cfg = av.TrainConfig(epochs=1, batch_size=12, val_split=0.0, progress=False)
    av.fit(av.build_model("vae", image_shape=(1, 16, 16), latent_dim=2, likelihood="gaussian"), x, cfg,
           out=tmp_path / "raw")
    run = Run(tmp_path / "raw")
    assert run.pixel_scaling == RAW_UNITS
    again = run.data(source=tmp_path / "x.npy", n=None)
    np.testing.assert_array_equal(again.images[:, 0], x)
    assert main(["info", str(tmp_path / "raw")]) == 0
    assert "pixels      unscaled: trained on an array in its own units" in capsys.readouterr().out
    unit = np.clip(x / 10.0, 0.0, 1.0)
    av.fit(av.build_model("vae", image_shape=(1, 16, 16), latent_dim=2), unit, cfg, out=tmp_path / "unit")
    assert Run(tmp_path / "unit").pixel_scaling is None
    # integer images keep their files' rule (unsigned / 255), and an ImageSet (a built-in set) records its own
    counts = (unit * 200).astype(np.uint8)
    with pytest.warns(UserWarning, match=r"^fit: the training images are unsigned integers \(up to 200\) used as they are"):
        av.fit(av.build_model("vae", image_shape=(1, 16, 16), latent_dim=2, likelihood="gaussian"), counts, cfg,
               out=tmp_path / "u8")
    assert Run(tmp_path / "u8").pixel_scaling is None
    signed = (x * 100).astype(np.int16)  # signed integers: their files are scaled by range, as floats
    av.fit(av.build_model("vae", image_shape=(1, 16, 16), latent_dim=2, likelihood="gaussian"), signed, cfg,
           out=tmp_path / "i16", check_learning=False)
    assert Run(tmp_path / "i16").pixel_scaling == RAW_UNITS
    np.save(tmp_path / "i16.npy", signed)
    np.testing.assert_array_equal(Run(tmp_path / "i16").data(source=tmp_path / "i16.npy", n=None).images[:, 0], signed)
    peaks = av.data.load_dataset("synthetic-peaks", n=24)
    assert float(peaks.images.min()) < 0.0  # outside [0, 1], yet the loader's own units
    av.fit(av.build_model("vae", image_shape=peaks.image_shape, latent_dim=2, likelihood="gaussian"), peaks, cfg,
           out=tmp_path / "peaks", check_learning=False)
    assert Run(tmp_path / "peaks").pixel_scaling is None


def test_a_cut_or_empty_pose_record_is_one_line_and_a_resume_rewrites_it(tmp_path):
    """A QA audit: a truncated poses.npz gave zipfile.BadZipFile tracebacks (plot rotation-histograms, report) and an
    empty one an EOFError at the end of a resumed epoch, each retry losing the epoch; now one line, and a resume
    drops the unreadable history with a warning and writes the record again."""
    from affinevae.nn.transforms import get_transform
    from affinevae.pose.record import POSES_FILE, PoseRecorder, load_pose_record

    recorder = PoseRecorder(get_transform("rotation"))
    recorder.record(torch.arange(4), torch.zeros(4, 1), None)
    recorder.end_epoch(1, tmp_path)
    whole = (tmp_path / POSES_FILE).read_bytes()
    for cut in (whole[:len(whole) // 2], b""):
        (tmp_path / POSES_FILE).write_bytes(cut)
        with pytest.raises(AffineVAEError, match=r"poses.npz: corrupt pose record \((BadZipFile|EOFError)"):
            load_pose_record(tmp_path)
    resumed = PoseRecorder(get_transform("rotation"))
    resumed.record(torch.arange(4), torch.ones(4, 1), None)
    with pytest.warns(UserWarning, match=r"corrupt pose record .*: the found angles of the epochs before 2 are dropped"):
        resumed.end_epoch(2, tmp_path)
    assert load_pose_record(tmp_path).epochs.tolist() == [2]


def test_a_model_json_that_is_not_an_object_is_one_line(tmp_path):
    """A QA audit: model.json holding JSON that is not an object ([] , 5, null) gave an AttributeError traceback in
    train --resume (the other commands said 'not an affinevae model config')."""
    av.VAE(latent_dim=2, hidden=[16], channels=[4, 8]).save(tmp_path / "m")
    for text in ("[]", "5", "null", '{"model": "vae"}', '{"model": 5, "config": {}}', '{"model": "vae", "config": []}'):
        (tmp_path / "m" / "model.json").write_text(text)
        with pytest.raises(AffineVAEError, match=r"model.json: not an affinevae model config$"):
            Run(tmp_path / "m").model_config
        with pytest.raises(AffineVAEError, match=r"model.json: not an affinevae model config$"):
            av.load(tmp_path / "m")  # load() reads it through the same check


def test_unreadable_weights_are_not_called_corrupt(tmp_path, monkeypatch):
    """A QA audit: weights the user may not read (chmod 000) were 'corrupt ...; restore the file or retrain',
    advice that could throw a good model away."""
    import affinevae.io as io_mod

    av.VAE(latent_dim=2, hidden=[16], channels=[4, 8]).save(tmp_path / "m")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(io_mod, "load_file", denied)
    with pytest.raises(AffineVAEError, match=r"model.safetensors: cannot read the weights \(permission denied"):
        io_mod.load_tensors(tmp_path / "m" / "model.safetensors")
    monkeypatch.setattr(io_mod, "open", denied, raising=False)
    with pytest.raises(AffineVAEError, match=r"cannot read the weights \(permission denied"):
        io_mod.tensor_header(tmp_path / "m" / "model.safetensors")


def test_the_csv_loggers_files_in_a_run_are_the_runs_own(tmp_path):
    """A QA audit: `sweep --out RUN/metrics.csv --force` overwrote the CSV logger's file in a run directory (not in
    the protected list, unlike metrics.jsonl)."""
    from affinevae.outputs import check_output

    av.VAE(latent_dim=2, hidden=[16], channels=[4, 8]).save(tmp_path / "run")
    for name in ("metrics.csv", "hparams.csv", "metrics.jsonl"):
        (tmp_path / "run" / name).write_text("epoch\n1\n")
        with pytest.raises(AffineVAEError, match=rf"{name}: is a file of the run or model directory"):
            check_output(tmp_path / "run" / name, force=True)
    check_output(tmp_path / "run" / "sweep.csv", force=True)  # the user's own file beside them


def test_a_folder_holding_the_users_own_metrics_csv_is_not_a_runs_leftover(tmp_path):
    """A review: with metrics.csv among a run's files, a folder holding the user's own metrics.csv read as an
    interrupted training's leftovers (train suggested --resume, which then replaced the file)."""
    from affinevae.outputs import check_output

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.csv").write_text("sample,intensity\na,1\n")
    with pytest.raises(AffineVAEError, match=r"exists and is not empty.*\(or pass --force") as err:
        check_output(tmp_path / "r", kind="dir", resumable=True)
    assert "--resume" not in str(err.value)
    with pytest.raises(AffineVAEError, match=r"holds no training run to resume \(no train.json\) but other files"):
        check_output(tmp_path / "r", kind="dir", resume=True, resumable=True)


def test_info_gives_an_angle_option_in_degrees_beside_its_radians(tiny_runs, capsys):
    """info printed rotation_prior 0.7853981633974483 alone (the report gave '0.7854 rad (45°)')."""
    from affinevae.cli import main

    assert main(["info", str(tiny_runs.path("rvae"))]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("rotation_prior")]
    assert len(line) == 1 and line[0].rstrip().endswith("0.7853981633974483 rad (45°)")


def test_sweep_without_data_sweeps_a_non_digit_run_on_its_own_images(tmp_path, capsys):
    """An audit: sweep's --data defaulted to mnist for every run, so a patch run (16x16) was refused with
    'mnist-test: image shape 1x28x28 ... the model expects 1x16x16'; it now takes the run's own images
    (said), and a digit model still mnist's."""
    from affinevae.cli import main

    images = np.random.default_rng(0).random((24, 16, 16)).astype(np.float32)
    np.save(tmp_path / "p.npy", images)
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "p.npy"), "--latent-dim", "2", "--encoder", "mlp",
                 "--decoder", "mlp", "--hidden", "8", "--likelihood", "gaussian", "--epochs", "1", "--no-progress",
                 "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert main(["sweep", str(tmp_path / "r"), "-n", "6", "--angles", "0,90", "--restarts", "1", "--steps", "0",
                 "--no-progress", "--out", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr().out
    assert f"affinevae: sweeping the run's own data ({tmp_path / 'p.npy'}); give --data for others" in out
    assert "on 6 images" in out
