"""Experiment tracking: CSV files, TensorBoard event files and an MLflow file store, read back offline."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch

import affinevae as av
from affinevae import tracking
from affinevae.cli import main
from affinevae.errors import AffineVAEError
from affinevae.tracking import CSVLogger, MLflowLogger, TensorBoardLogger, image_grid, reconstruction_panel
from affinevae.training import TrainConfig, fit, read_metrics

TINY = dict(latent_dim=2, encoder="mlp", decoder="mlp", hidden=[16])
ALL = ("csv", "tensorboard", "mlflow")


@pytest.fixture(scope="module")
def digits():
    return av.data.load_mnist("train", n=80)


def make(name="vae", **kw):
    torch.manual_seed(0)
    return av.build_model(name, **{**TINY, **kw})


def cfg(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 32, "progress": False, "log_images_every": 1, **kw})


@pytest.fixture(scope="module")
def logged_run(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("tracked") / "run"
    result = fit(make(), digits, cfg(loggers=ALL), out=out)
    return out, result.history


def test_csv_logger_writes_metrics_hparams_and_panels(logged_run):
    out, history = logged_run
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row, rec in zip(rows, history):
        for key in ("train_loss", "train_recon", "train_kl", "val_loss", "images_per_s", "lr"):
            assert float(row[key]) == pytest.approx(rec[key], rel=1e-12), key
    with open(out / "hparams.csv") as f:
        hp = {r["name"]: r["value"] for r in csv.DictReader(f)}
    assert hp["model/family"] == "vae" and hp["model/latent_dim"] == "2" and hp["train/epochs"] == "2"
    from PIL import Image

    panel = np.asarray(Image.open(out / "reconstructions" / "epoch-0002.png"))
    assert panel.shape == (2 * 29 + 1, tracking.PANEL_IMAGES * 29 + 1, 3)
    assert (out / "reconstructions" / "epoch-0001.png").is_file()


def test_tensorboard_event_files_hold_scalars_hparams_and_images(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out, history = logged_run
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert {"train/loss", "train/recon", "train/kl", "val/loss", "lr", "images_per_s"} <= set(acc.Tags()["scalars"])
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2]
    assert [e.value for e in loss] == pytest.approx([h["train_loss"] for h in history], rel=1e-6)
    assert [e.value for e in acc.Scalars("val/kl")] == pytest.approx([h["val_kl"] for h in history], rel=1e-6)
    images = acc.Images("reconstructions")
    assert [e.step for e in images] == [1, 2] and images[0].width == tracking.PANEL_IMAGES * 29 + 1
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model/latent_dim"].number_value == 2
    assert start.hparams["model/family"].string_value == "vae"
    assert start.hparams["train/batch_size"].number_value == 32
    assert "_hparams_/session_end_info" in content  # closed as finished


def test_mlflow_file_store_holds_params_metrics_status_and_panels(logged_run):
    from mlflow.tracking import MlflowClient

    out, history = logged_run
    state = json.loads((out / "mlflow.json").read_text())
    assert state["tracking_uri"] == "file:" + str((out / "mlruns").resolve())
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    run = client.get_run(state["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["model/latent_dim"] == "2" and run.data.params["train/lr"] == "0.001"
    loss = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in loss] == [1, 2]
    assert [m.value for m in loss] == pytest.approx([h["train_loss"] for h in history], rel=1e-12)
    assert {"val_loss", "images_per_s", "lr"} <= set(run.data.metrics)
    panels = [a.path for a in client.list_artifacts(run.info.run_id, "reconstructions")]
    assert panels == ["reconstructions/epoch-0001.png", "reconstructions/epoch-0002.png"]


def test_logging_leaves_training_unchanged(digits, tmp_path):
    plain = fit(make(), digits, cfg()).model.state_dict()
    logged = fit(make(), digits, cfg(loggers=("csv",)), out=tmp_path / "r").model.state_dict()
    assert all(torch.equal(plain[k], logged[k]) for k in plain)


def test_named_loss_terms_are_logged(digits, tmp_path):
    model = make("rvae", invariances=["rotation"], decoder="spatial", hidden=[8])
    result = fit(model, digits.subset(np.arange(40)), cfg(epochs=1, loggers=("csv",), log_images_every=0), out=tmp_path / "r")
    assert "train_equivariance" in result.history[0]
    with open(tmp_path / "r" / "metrics.csv") as f:
        assert "train_equivariance" in next(csv.reader(f))
    assert not (tmp_path / "r" / "reconstructions").exists()  # log_images_every=0: no panels


def test_resume_continues_the_same_logs(digits, tmp_path):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "r"
    config = cfg(epochs=3, loggers=("csv", "mlflow"), log_images_every=0)

    def stop(rec):
        if rec["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(make(), digits, config, out=out, callbacks=[stop])
    state = json.loads((out / "mlflow.json").read_text())
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    assert client.get_run(state["run_id"]).info.status == "KILLED"  # stopped by the user (Ctrl-C), not failed
    fit(make(), digits, config, out=out, resume=True)
    assert json.loads((out / "mlflow.json").read_text())["run_id"] == state["run_id"]
    assert client.get_run(state["run_id"]).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(state["run_id"], "train_loss")] == [1, 2, 3]
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["train_loss"]) for r in rows] == pytest.approx([m["train_loss"] for m in read_metrics(out)])
    # an audit: a run directory moved (or copied) and resumed logged its next epochs to a new MLflow run,
    # silently (the stored URI was the old absolute path of the run's own store)
    moved = tmp_path / "moved"
    shutil.move(str(out), str(moved))
    fit(make(), digits, cfg(epochs=4, loggers=("mlflow",), log_images_every=0), out=moved, resume=True)
    again = json.loads((moved / "mlflow.json").read_text())
    assert again["run_id"] == state["run_id"] and again["store_in_run"] == "mlruns"
    client = MlflowClient(tracking_uri=again["tracking_uri"])
    assert [m.step for m in client.get_metric_history(state["run_id"], "train_loss")] == [1, 2, 3, 4]
    (moved / "mlflow.json").write_text(json.dumps({**again, "run_id": "0" * 32}))  # a store without that run
    with pytest.warns(UserWarning, match=r"MLflow: this run logged to .* \(run 0{32}\), which holds no such run .*: "
                                         r"the resumed epochs go to a new MLflow run there"):
        fit(make(), digits, cfg(epochs=5, loggers=("mlflow",), log_images_every=0), out=moved, resume=True)


def test_an_epoch_checkpointed_but_not_logged_is_logged_on_resume(digits, tmp_path, monkeypatch):
    """A kill after epoch 2's checkpoint but before the loggers took it left epoch 2's scalars out of TensorBoard and
    MLflow and its panel out of all three for good; the resume logs it (once: MLflow's steps are not repeated)."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "r"
    config = cfg(epochs=3, loggers=ALL, log_images_every=1)
    real = tracking.Tracker.epoch

    def killed(self, record, model):
        if record["epoch"] == 2:
            raise KeyboardInterrupt  # where a kill came: after the checkpoint, before the loggers
        return real(self, record, model)
    monkeypatch.setattr(tracking.Tracker, "epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        fit(make(), digits, config, out=out)
    monkeypatch.setattr(tracking.Tracker, "epoch", real)
    assert json.loads((out / "train.json").read_text())["epochs_done"] == 2
    fit(make(), digits, config, out=out, resume=True)
    history = read_metrics(out)
    state = json.loads((out / "mlflow.json").read_text())
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    loss = client.get_metric_history(state["run_id"], "train_loss")
    assert sorted(m.step for m in loss) == [1, 2, 3]
    assert [m.value for m in sorted(loss, key=lambda m: m.step)] == pytest.approx([h["train_loss"] for h in history])
    assert sorted(f.path for f in client.list_artifacts(state["run_id"], "reconstructions")) == [
        f"reconstructions/epoch-000{k}.png" for k in (1, 2, 3)]
    assert sorted(p.name for p in (out / "reconstructions").glob("*.png")) == [
        f"epoch-000{k}.png" for k in (1, 2, 3)]
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3]
    assert [e.step for e in acc.Images("reconstructions")] == [1, 2, 3]


def test_logger_options_and_errors(tmp_path, monkeypatch):
    c = TrainConfig(loggers=(CSVLogger(directory=str(tmp_path / "logs")), "tensorboard"))
    d = c.to_dict()
    json.dumps(d)
    assert d["loggers"] == [{"logger": "csv", "directory": str(tmp_path / "logs")}, "tensorboard"]
    again = TrainConfig.from_dict(d)
    assert [tracking.resolve_logger(e) for e in again.loggers] == [CSVLogger(directory=str(tmp_path / "logs")),
                                                                     TensorBoardLogger()]
    with pytest.raises(AffineVAEError, match="did you mean 'tensorboard'"):
        TrainConfig(loggers=("tensorbord",))
    with pytest.raises(AffineVAEError, match="tuple of logger names"):
        TrainConfig(loggers="csv")
    with pytest.raises(AffineVAEError, match="log_images_every"):
        TrainConfig(log_images_every=-1)
    with pytest.raises(AffineVAEError, match="logger 'csv' is given twice"):  # two loggers would write one file
        TrainConfig(loggers=("csv", "CSV"))
    TrainConfig(loggers=(CSVLogger(directory=str(tmp_path / "a")), CSVLogger(directory=str(tmp_path / "b"))))
    with pytest.raises(AffineVAEError, match="unknown option 'experimnt'"):
        tracking.resolve_logger({"logger": "mlflow", "experimnt": "x"})
    with pytest.raises(AffineVAEError, match="needs a run directory"):
        fit(make(), av.data.load_mnist("train", n=20), cfg(epochs=1, loggers=("csv",)))
    # a missing optional package: one line naming the extra, at configuration time
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(AffineVAEError, match=r'^logger .mlflow. needs the mlflow package: pip install "affinevae\[mlflow\]"$'):
        TrainConfig(loggers=(MLflowLogger(),))


def test_cli_log_option(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "vae", "--data", "mnist", "-n", "60", "--epochs", "1", "--latent-dim", "2",
            "--encoder", "mlp", "--decoder", "mlp", "--hidden", "16", "--no-progress", "--out"]
    assert main([*args, str(out), "--log", "csv,tensorboard", "--log", "mlflow", "--log-images-every", "1"]) == 0
    assert (out / "metrics.csv").is_file() and (out / "reconstructions" / "epoch-0001.png").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*")) and (out / "mlflow.json").is_file()
    capsys.readouterr()
    assert main([*args, str(tmp_path / "bad"), "--log", "wandb"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("affinevae: error: unknown logger 'wandb'")
    # panels without a tracker would go nowhere: refused before any data are read, nothing written
    assert main([*args, str(tmp_path / "nolog"), "--log-images-every", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--log-images-every" in err[0] and "give --log" in err[0]
    assert not (tmp_path / "nolog").exists()


def test_image_grid_and_panel_keep_mode_and_random_state():
    rows = np.stack([np.zeros((3, 1, 4, 5)), np.ones((3, 1, 4, 5))])
    grid = image_grid(rows)
    assert grid.shape == (2 * 5 + 1, 3 * 6 + 1, 3) and grid.dtype == np.uint8
    assert grid[1:5, 1:6].max() == 0 and grid[6:10, 1:6].min() == 255 and grid[0].min() == 255  # white padding
    wide = image_grid(np.full((1, 2, 3, 2, 2), 5.0) + np.arange(3)[None, None, :, None, None])  # RGB, min-max scaled
    assert wide[1, 1].tolist() == [0, 128, 255]
    with pytest.raises(AffineVAEError, match="rows, columns"):
        image_grid(np.zeros((2, 3, 4)))
    model = make().train()
    x = av.data.load_mnist("test", n=4).images
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    panel = reconstruction_panel(model, x)
    assert model.training and torch.equal(torch.rand(3), expected)
    assert panel.shape == (2 * 29 + 1, 4 * 29 + 1, 3)
    assert np.array_equal(panel[1:29, 1:29, 0], (x[0, 0] * 255 + 0.5).astype(np.uint8))


def test_mlflow_file_store_leaves_the_environment_as_it_was(digits, tmp_path, monkeypatch):
    """The logger sets MLFLOW_ALLOW_FILE_STORE for its own file store only while the run is open."""
    import os

    monkeypatch.delenv(tracking.ALLOW_FILE_STORE, raising=False)
    fit(make(), digits, cfg(epochs=1, loggers=("mlflow",), log_images_every=0), out=tmp_path / "a")
    assert tracking.ALLOW_FILE_STORE not in os.environ and (tmp_path / "a" / "mlflow.json").is_file()
    monkeypatch.setenv(tracking.ALLOW_FILE_STORE, "1")  # the user's own setting is kept
    fit(make(), digits, cfg(epochs=1, loggers=("mlflow",), log_images_every=0), out=tmp_path / "b")
    assert os.environ[tracking.ALLOW_FILE_STORE] == "1"


def test_cli_resume_keeps_the_runs_loggers_unless_told(tmp_path, capsys):
    """`train --resume` without --log stopped tracking silently (and train.json forgot its loggers):
    it now goes on with the run's loggers and panels, said in its resume line; `--log none` stops them."""
    out = tmp_path / "run"
    args = ["train", "--model", "vae", "--data", "mnist", "-n", "60", "--latent-dim", "2", "--encoder", "mlp",
            "--decoder", "mlp", "--hidden", "16", "--no-progress", "--out", str(out)]
    assert main([*args, "--epochs", "1", "--log", "csv", "--log-images-every", "1"]) == 0
    capsys.readouterr()
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    said = capsys.readouterr().out
    assert "log=csv log_images_every=1" in said and "--log/--log-images-every" in said
    with open(out / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]
    assert sorted(p.name for p in (out / "reconstructions").iterdir()) == ["epoch-0001.png", "epoch-0002.png"]
    assert json.loads((out / "train.json").read_text())["train_config"]["loggers"] == ["csv"]
    assert main([*args, "--epochs", "3", "--resume", "--log", "none"]) == 0
    with open(out / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]  # tracking stopped, as asked
    assert json.loads((out / "train.json").read_text())["train_config"]["loggers"] == []
    capsys.readouterr()
    assert main([*args, "--epochs", "4", "--resume", "--log", "none,csv"]) == 2
    assert "'none' turns tracking off" in capsys.readouterr().err


def test_a_logger_that_fails_in_training_is_dropped_and_training_goes_on(digits, tmp_path, monkeypatch):
    """A tracker outage ended the training (MLflow's error raised from the epoch's log call): the
    logger is now dropped with one warning, the others go on, and the model equals an unlogged one."""
    calls = []

    def flaky(self, run_id, *a, **kw):
        calls.append(1)
        if len(calls) >= 2:
            raise MlflowException("tracking server unavailable (503)")

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    real = MlflowClient.log_batch
    monkeypatch.setattr(MlflowClient, "log_batch",
                        lambda self, run_id, *a, **kw: real(self, run_id, *a, **kw) if "params" in kw else
                        flaky(self, run_id, *a, **kw))
    with pytest.warns(UserWarning, match=r"logger 'mlflow' failed at epoch 2 \(MLflow run \w+: tracking server "
                                         r"unavailable \(503\)\); training goes on without it"):
        result = fit(make(), digits, cfg(epochs=3, loggers=("csv", "mlflow"), log_images_every=0), out=tmp_path / "r")
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    with open(tmp_path / "r" / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]  # the CSV logger went on
    plain = fit(make(), digits, cfg(epochs=3)).model.state_dict()
    assert all(torch.equal(plain[k], v) for k, v in result.model.state_dict().items())


def test_a_logger_folder_never_mixes_fits_nor_writes_into_a_run(digits, tmp_path):
    """A logger folder shared by several fits (a grid search, a notebook cell run again) had each fit
    overwrite the CSV files and interleave TensorBoard steps; one pointed at a training run replaced
    that run's files. Later fits now write to fit-2, fit-3, ... (said), and a run is refused."""
    logs, tb = tmp_path / "logs", tmp_path / "tb"
    loggers = (CSVLogger(directory=str(logs)), TensorBoardLogger(directory=str(tb)))
    fit(make(), digits, cfg(epochs=1, loggers=loggers, log_images_every=0))
    with pytest.warns(UserWarning, match=r"logger 'csv': .*logs holds an earlier fit's logs; this fit's go to "
                                         r".*logs/fit-2") as said:
        fit(make(), digits, cfg(epochs=2, loggers=loggers, log_images_every=0))
    # an audit: the warning pointed at training.py's line; it names the caller's fit(...) line now
    assert {w.filename for w in said if "earlier fit's logs" in str(w.message)} == {__file__}
    with pytest.warns(UserWarning, match=r"fit-3"):
        fit(make(), digits, cfg(epochs=1, loggers=loggers, log_images_every=0))
    with open(logs / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 1  # the first fit's, untouched
    with open(logs / "fit-2" / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert (logs / "fit-3" / "metrics.csv").is_file() and list((tb / "fit-3").glob("events.out.tfevents*"))
    run = tmp_path / "run"
    fit(make(), digits, cfg(epochs=1), out=run)
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(AffineVAEError, match=r"logger 'csv': .*run is a training run \(or a saved model\); a logger "
                                             r"never writes into another run"):
        fit(make(), digits, cfg(epochs=1, loggers=(CSVLogger(directory=str(run)),)))
    assert sorted(p.name for p in run.iterdir()) == before


def test_mlflow_run_failed_by_an_error_is_marked_failed(digits, tmp_path):
    """An error in training marks the MLflow run FAILED (a Ctrl-C marks it KILLED, above)."""
    from mlflow.tracking import MlflowClient

    def boom(rec):
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        fit(make(), digits, cfg(epochs=2, loggers=("mlflow",), log_images_every=0), out=tmp_path / "r", callbacks=[boom])
    state = json.loads((tmp_path / "r" / "mlflow.json").read_text())
    assert MlflowClient(tracking_uri=state["tracking_uri"]).get_run(state["run_id"]).info.status == "FAILED"


def test_an_unreachable_tracking_server_is_said_in_seconds_and_leaves_no_files(digits, tmp_path):
    """A tracking server that cannot be reached refuses the fit before any logger writes (a TensorBoard
    folder was left behind), in seconds (MLflow's own retries took about 4 minutes), with MLflow's retry
    settings given back afterwards."""
    import os
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loggers = (TensorBoardLogger(directory=str(tmp_path / "tb")), MLflowLogger(tracking_uri=f"http://127.0.0.1:{port}"))
    start = time.perf_counter()
    with pytest.raises(AffineVAEError, match=rf"^MLflow at http://127.0.0.1:{port}: "):
        fit(make(), digits, cfg(epochs=1, loggers=loggers, log_images_every=0))
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "tb").exists()
    assert not any(k in os.environ for k in tracking.FIRST_CONTACT_ENV)


def test_angles_in_radians_are_also_given_in_degrees():
    """An audit: a researcher reading the HParams tab or the report saw rotation_prior 0.7854 and an AVAE's
    angle_range [-3.14159..., 3.14159...] with no unit; degrees are only at the CLI and plots, so trackers add
    <option>_deg and the report shows both."""
    from affinevae.report import HtmlReport
    from affinevae.training import TrainConfig

    hp = tracking.hyperparameters(TrainConfig(), av.build_model("rvae", invariances=("rotation",)))
    assert hp["model/rotation_prior"] == pytest.approx(0.785398) and hp["model/rotation_prior_deg"] == 45.0
    assert "model/latent_dim_deg" not in hp
    rep = HtmlReport("t")
    rep.key_values({"rotation_prior": 0.7853981633974483, "latent_dim": 2,
                    "search": {"angle_range": [-3.141592653589793, 3.141592653589793]}})
    page = rep.render()
    assert "0.7854 rad (45°)" in page and "[-3.142, 3.142] rad ([-180°, 180°])" in page
