"""Experiment tracking: send a training run to CSV files, TensorBoard or MLflow.

:func:`affinevae.fit` opens one :class:`Tracker` per run (``TrainConfig.loggers``; on the
command line ``affinevae train --log csv,tensorboard,mlflow``). Each logger receives

- the hyper-parameters once at the start (:func:`hyperparameters`: ``model/...`` and
  ``train/...`` keys, plus ``model/family``);
- every epoch's record, as scalars indexed by the epoch: ``train_loss``, ``train_recon``,
  ``train_kl`` and every named extra loss term (``train_equivariance``, ``train_pose_head``),
  ``val_*``, ``images_per_s``, ``lr`` and the model's own epoch metrics (nats per image for the
  losses, images per second, the learning rate);
- a reconstruction panel (:func:`reconstruction_panel`: a few validation images, or training
  images without a validation set, above their reconstructions) every
  ``TrainConfig.log_images_every`` epochs and after the last one;
- the end of training (finished, or failed when training raised).

Loggers are registered by name in :data:`LOGGERS` ('csv', 'tensorboard', 'mlflow'); a name
stands for the logger's defaults, a logger object (:class:`CSVLogger`,
:class:`TensorBoardLogger`, :class:`MLflowLogger`) sets its options. The CSV logger needs
nothing more; TensorBoard needs ``pip install "affinevae[tensorboard]"`` and MLflow
``pip install "affinevae[mlflow]"``, and a missing package is one line naming the extra.
Logging never changes the training: the panels are computed in evaluation mode with the
random state saved and restored, and a logger that fails during training (a tracking server
that went away, a full disk) is dropped with a one-line warning while training goes on; a
logger that cannot start is refused before training.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.util
import io
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .config import Config, check, degrees_of
from .errors import AffineVAEError, user_stacklevel
from .io import CSV_HPARAMS, CSV_METRICS, atomic_write, read_json, write_json
from .nn.modes import module_mode
from .registry import Registry
from .rng import seeded

__all__ = ["LOGGERS", "LoggerConfig", "CSVLogger", "TensorBoardLogger", "MLflowLogger", "Sink", "Tracker",
           "check_loggers", "describe_loggers", "hyperparameters", "image_grid", "png_bytes", "reconstruction_panel",
           "resolve_logger", "scalars_of", "tensorboard_tag", "PANEL_IMAGES"]

LOGGERS: Registry = Registry("logger")
"""Logger name -> :class:`LoggerConfig` subclass ('csv', 'tensorboard', 'mlflow')."""

PANEL_IMAGES = 8
"""Images (columns) of a reconstruction panel."""

Scalar = Union[int, float, str, bool]


class Sink:
    """An open logger of one run: what :meth:`LoggerConfig.open` returns.

    Subclasses override the methods they support; the defaults do nothing. ``name``: the
    logger's name in messages. ``interrupted``: set True before :meth:`close` when the user
    stopped the training (Ctrl-C), so that a tracker can tell that from a failure.
    """

    name: ClassVar[str] = "logger"
    interrupted: bool = False

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record the scalar ``metrics`` (name -> float) of epoch ``step``."""

    def log_image(self, step: int, tag: str, image: np.ndarray) -> None:
        """Record the (H, W, 3) uint8 ``image`` named ``tag`` at epoch ``step``."""

    def missing(self, step: int, tag: str) -> tuple[bool, bool]:
        """For a resumed run: whether this logger lacks the scalars, and the image ``tag``, of epoch
        ``step`` (the checkpointed epoch it resumes from; a kill between its checkpoint and its logging
        left them out). (False, False) by default: nothing is replayed."""
        return False, False

    def close(self, failed: bool = False) -> None:
        """Flush and close; ``failed``: training ended with an exception."""


@dataclasses.dataclass(frozen=True)
class LoggerConfig(Config):
    """Base of the logger options: a frozen config that :meth:`open` turns into a :class:`Sink`.

    Class attributes:
        name: the registered name.
        package: the module that must be importable (None: nothing beyond affinevae).
        extra: the affinevae extra that installs ``package``.
    """

    name: ClassVar[str] = ""
    package: ClassVar[Optional[str]] = None
    extra: ClassVar[Optional[str]] = None

    @classmethod
    def check_installed(cls) -> None:
        """Raise a one-line :class:`AffineVAEError` naming the extra when ``package`` is missing."""
        if cls.package is not None and importlib.util.find_spec(cls.package) is None:
            raise AffineVAEError(f"logger '{cls.name}' needs the {cls.package} package: "
                                 f"pip install \"affinevae[{cls.extra}]\"")

    def open(self, run_dir: Optional[Path], hparams: Mapping[str, Scalar], history: Sequence[Mapping[str, Any]] = ()) -> Sink:
        """Start logging a run in ``run_dir`` (may be None) with the flat ``hparams``;
        ``history``: the epoch records of an interrupted run being resumed (else empty)."""
        raise NotImplementedError

    def directory_in(self, run_dir: Optional[Path], default: str, directory: Optional[str],
                     resuming: bool = False) -> Path:
        """``directory`` if given, else ``run_dir / default``; an error without either.

        A ``directory`` given that is another training run (or saved model) is refused: a logger
        never writes into another run. One that already holds this kind of logger's files from an
        earlier fit (:meth:`holds_logs`; a grid search's fits, a notebook cell run again) gives, unless
        ``resuming``, its first free subfolder ``fit-2``, ``fit-3``, ..., said in a warning, so that
        no fit's logs overwrite or interleave with another's.
        """
        if directory is None:
            if run_dir is None:
                raise AffineVAEError(f"logger '{self.name}' needs a run directory: pass out= to fit (--out) "
                                     f"or give the logger a directory (CSVLogger(directory=...))")
            return Path(run_dir) / default if default else Path(run_dir)
        from .outputs import is_run_directory

        path = Path(directory)
        own = run_dir is not None and path.resolve() == Path(run_dir).resolve()
        if is_run_directory(path) and not own:
            raise AffineVAEError(f"logger '{self.name}': {path} is a training run (or a saved model); a logger never "
                                 "writes into another run: give it a folder of its own")
        if resuming or own or not self.holds_logs(path):
            return path
        i = 2
        while self.holds_logs(path / f"fit-{i}"):
            i += 1
        warnings.warn(f"logger '{self.name}': {path} holds an earlier fit's logs; this fit's go to {path / f'fit-{i}'}",
                      stacklevel=user_stacklevel())  # the user's fit(...) line, not the trainer's
        return path / f"fit-{i}"

    @classmethod
    def holds_logs(cls, directory: Path) -> bool:
        """True when ``directory`` holds this kind of logger's files (the base: never)."""
        return False


# ---------------------------------------------------------------------------------- CSV


@LOGGERS.register("csv")
@dataclasses.dataclass(frozen=True)
class CSVLogger(LoggerConfig):
    """Plain files, no extra package: ``metrics.csv`` (one row per epoch, one column per
    scalar; rewritten atomically every epoch, so new columns are added as they appear),
    ``hparams.csv`` (name,value) and ``reconstructions/epoch-NNNN.png``.

    Attributes:
        directory: where to write (default: the run directory).
    """

    name: ClassVar[str] = "csv"
    directory: Optional[str] = None

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        check(self.directory is None or isinstance(self.directory, (str, os.PathLike)),
              f"CSVLogger directory must be a path or None, got {self.directory!r}")

    def open(self, run_dir, hparams, history=()) -> Sink:
        """See :meth:`LoggerConfig.open`."""
        return _CSVSink(self.directory_in(run_dir, "", self.directory, resuming=bool(history)), hparams, history)

    @classmethod
    def holds_logs(cls, directory: Path) -> bool:
        """True when ``directory`` holds a ``metrics.csv`` or ``hparams.csv``."""
        return (directory / CSV_METRICS).exists() or (directory / CSV_HPARAMS).exists()


class _CSVSink(Sink):
    name = "csv"

    def __init__(self, directory: Path, hparams: Mapping[str, Scalar], history: Sequence[Mapping[str, Any]]) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        rows = [["name", "value"]] + [[k, v] for k, v in hparams.items()]
        atomic_write(directory / CSV_HPARAMS, lambda tmp: _write_csv(tmp, rows))
        self.rows: list[dict[str, Any]] = [{"epoch": r.get("epoch"), **scalars_of(r)} for r in history]
        if self.rows:
            self._write()

    def _write(self) -> None:
        columns: dict[str, None] = {}
        for r in self.rows:
            columns.update(dict.fromkeys(r))
        header = list(columns)
        table = [header] + [[r.get(c, "") for c in header] for r in self.rows]
        atomic_write(self.directory / CSV_METRICS, lambda tmp: _write_csv(tmp, table))

    def log_metrics(self, step, metrics):
        self.rows.append({"epoch": step, **metrics})
        self._write()

    def log_image(self, step, tag, image):
        png = png_bytes(image)
        atomic_write(self.directory / tag / f"epoch-{step:04d}.png", lambda tmp: Path(tmp).write_bytes(png))

    def missing(self, step, tag):
        return False, not (self.directory / tag / f"epoch-{step:04d}.png").is_file()  # (scalars: from the history)


def _write_csv(path, rows) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


# ---------------------------------------------------------------------------------- TensorBoard


@LOGGERS.register("tensorboard")
@dataclasses.dataclass(frozen=True)
class TensorBoardLogger(LoggerConfig):
    """TensorBoard event files (``torch.utils.tensorboard``): scalars under ``train/...``,
    ``val/...`` and their own names (``lr``, ``images_per_s``), the hyper-parameters in the
    HPARAMS tab, the panels as image ``reconstructions``. View with
    ``tensorboard --logdir RUN/tensorboard``. Needs ``pip install "affinevae[tensorboard]"``.

    Attributes:
        directory: the event file directory (default: ``tensorboard/`` in the run directory).
    """

    name: ClassVar[str] = "tensorboard"
    package: ClassVar[Optional[str]] = "tensorboard"
    extra: ClassVar[Optional[str]] = "tensorboard"
    directory: Optional[str] = None

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        check(self.directory is None or isinstance(self.directory, (str, os.PathLike)),
              f"TensorBoardLogger directory must be a path or None, got {self.directory!r}")

    def open(self, run_dir, hparams, history=()) -> Sink:
        """See :meth:`LoggerConfig.open`."""
        self.check_installed()
        return _TensorBoardSink(self.directory_in(run_dir, "tensorboard", self.directory, resuming=bool(history)),
                                hparams, len(history))

    @classmethod
    def holds_logs(cls, directory: Path) -> bool:
        """True when ``directory`` holds TensorBoard event files."""
        return directory.is_dir() and any(directory.glob("events.out.tfevents*"))


def tensorboard_tag(name: str) -> str:
    """The TensorBoard tag of a record key: 'train_loss' -> 'train/loss', 'val_kl' -> 'val/kl', others as they are."""
    for prefix in ("train_", "val_"):
        if name.startswith(prefix):
            return prefix[:-1] + "/" + name[len(prefix):]
    return name


class _TensorBoardSink(Sink):
    name = "tensorboard"

    def __init__(self, directory: Path, hparams: Mapping[str, Scalar], start_epoch: int) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams as hparam_summaries

        # a resume purges the epoch it resumes from too, and logs it again (Tracker.start): a kill between its
        # checkpoint and its logging had left it out for good
        self.writer = SummaryWriter(log_dir=str(directory), purge_step=start_epoch if start_epoch else None)
        exp, ssi, self.end_info = hparam_summaries(dict(hparams), {"train/loss": None, "val/loss": None})
        self.writer.file_writer.add_summary(exp)
        self.writer.file_writer.add_summary(ssi)

    def log_metrics(self, step, metrics):
        for k, v in metrics.items():
            self.writer.add_scalar(tensorboard_tag(k), v, step)
        self.writer.flush()

    def log_image(self, step, tag, image):
        self.writer.add_image(tag, image, step, dataformats="HWC")
        self.writer.flush()

    def missing(self, step, tag):
        return True, True  # purged on opening (purge_step)

    def close(self, failed=False):
        if not failed:
            self.writer.file_writer.add_summary(self.end_info)
        self.writer.close()


# ---------------------------------------------------------------------------------- MLflow


@LOGGERS.register("mlflow")
@dataclasses.dataclass(frozen=True)
class MLflowLogger(LoggerConfig):
    """An MLflow run: the hyper-parameters as params, the scalars as metrics (step = epoch),
    the panels as artifacts ``reconstructions/epoch-NNNN.png``; status FINISHED, FAILED, or KILLED
    when the user stopped the training (Ctrl-C).
    Needs ``pip install "affinevae[mlflow]"`` (mlflow-skinny; no server).

    By default the run goes to a local file store in the run directory (``mlruns/``; view with
    ``mlflow ui --backend-store-uri RUN/mlruns``), which MLflow 3 only opens with
    ``MLFLOW_ALLOW_FILE_STORE=true``: this logger sets that variable (unless already set) while
    it writes to a file store, and removes it again when the run closes. A resumed run continues the same MLflow run (its id is kept in
    ``mlflow.json`` in the run directory). A tracking server that does not answer: MLflow itself
    retries each request for minutes (its ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and
    ``MLFLOW_HTTP_REQUEST_TIMEOUT`` shorten that); at the start the run is then refused in one line,
    during training the logger is dropped with a warning (:class:`Tracker`).

    Attributes:
        tracking_uri: MLflow tracking URI (default: ``$MLFLOW_TRACKING_URI`` if set, else
            ``file:RUN/mlruns``).
        experiment: experiment name (created when missing).
        run_name: MLflow run name (default: the run directory's name).
    """

    name: ClassVar[str] = "mlflow"
    package: ClassVar[Optional[str]] = "mlflow"
    extra: ClassVar[Optional[str]] = "mlflow"
    tracking_uri: Optional[str] = None
    experiment: str = "affinevae"
    run_name: Optional[str] = None

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        check(self.tracking_uri is None or isinstance(self.tracking_uri, str),
              f"MLflowLogger tracking_uri must be a string or None, got {self.tracking_uri!r}")
        check(isinstance(self.experiment, str) and self.experiment != "",
              f"MLflowLogger experiment must be a non-empty string, got {self.experiment!r}")
        check(self.run_name is None or isinstance(self.run_name, str),
              f"MLflowLogger run_name must be a string or None, got {self.run_name!r}")

    def resolved_uri(self, run_dir: Optional[Path]) -> str:
        """The tracking URI this logger writes to (see ``tracking_uri``)."""
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            return uri
        return "file:" + str(self.directory_in(run_dir, "mlruns", None).resolve())

    def open(self, run_dir, hparams, history=()) -> Sink:
        """See :meth:`LoggerConfig.open`."""
        self.check_installed()
        uri = self.resolved_uri(run_dir)
        own_env = (uri.startswith("file:") or "://" not in uri) and ALLOW_FILE_STORE not in os.environ
        if own_env:  # for this run only: the caller's process gets its environment back at close
            os.environ[ALLOW_FILE_STORE] = "true"
        name = self.run_name or (Path(run_dir).name if run_dir is not None else None)
        try:
            with _first_contact(uri):
                sink = _MLflowSink(uri, self.experiment, name, run_dir, hparams, resume=bool(history))
        except BaseException:
            if own_env:
                os.environ.pop(ALLOW_FILE_STORE, None)
            raise
        sink.own_env = own_env
        return sink


#: The variable MLflow 3 needs to open a local file store (see :class:`MLflowLogger`).
ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"

#: MLflow's HTTP retry settings while the logger first contacts a tracking server (those the user did not
#: set): a server that cannot be reached is said in seconds, not after MLflow's default of minutes of
#: retries (measured: 248 s for a closed port); later requests keep MLflow's own retries.
FIRST_CONTACT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


@contextlib.contextmanager
def _first_contact(uri: str):
    """:data:`FIRST_CONTACT_ENV` set (where unset) for an http(s) ``uri`` while the block runs, then removed."""
    set_here = [k for k in FIRST_CONTACT_ENV if k not in os.environ] if uri.startswith(("http://", "https://")) else []
    for k in set_here:
        os.environ[k] = FIRST_CONTACT_ENV[k]
    try:
        yield
    finally:
        for k in set_here:
            os.environ.pop(k, None)


def _store_in_run(uri: str, run_dir: Optional[Path]) -> Optional[str]:
    """The path, relative to ``run_dir``, of a ``file:`` MLflow store inside the run directory (its
    default ``mlruns``), else None: such a store moves with the directory."""
    if run_dir is None or not uri.startswith("file:"):
        return None
    try:
        return Path(uri[len("file:"):]).resolve().relative_to(Path(run_dir).resolve()).as_posix()
    except ValueError:
        return None


class _MLflowSink(Sink):
    name = "mlflow"
    STATE = "mlflow.json"
    own_env = False  # set by MLflowLogger.open: this run set ALLOW_FILE_STORE and removes it at close

    def __init__(self, uri: str, experiment: str, run_name: Optional[str], run_dir: Optional[Path],
                 hparams: Mapping[str, Scalar], resume: bool) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.errors = MlflowException
        try:
            self.client = MlflowClient(tracking_uri=uri)
            state = Path(run_dir) / self.STATE if run_dir is not None else None
            self.run_id = None
            inside = _store_in_run(uri, run_dir)
            if resume and state is not None and state.exists():
                saved = read_json(state, "MLflow run record")
                # the run's own store (under its directory) matches wherever the directory has moved to
                same = saved.get("tracking_uri") == uri or (inside is not None and saved.get("store_in_run") == inside)
                if same and self._has_run(saved.get("run_id")):
                    self.run_id = saved.get("run_id")
                    self.client.update_run(self.run_id, status="RUNNING")
                    if saved.get("tracking_uri") != uri:  # the directory moved: the record follows it
                        write_json(state, {"tracking_uri": uri, "run_id": self.run_id, "store_in_run": inside})
                else:
                    warnings.warn(f"MLflow: this run logged to {saved.get('tracking_uri')} (run {saved.get('run_id')}), "
                                  f"which {'holds no such run' if same else 'is not'} {uri}: the resumed epochs go to a "
                                  "new MLflow run there", UserWarning, stacklevel=user_stacklevel())
            if self.run_id is None:
                exp = self.client.get_experiment_by_name(experiment)
                exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
                self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
                params = [Param(k, str(v)[:6000]) for k, v in hparams.items()]
                for i in range(0, len(params), 100):
                    self.client.log_batch(self.run_id, params=params[i:i + 100])
                if state is not None:
                    write_json(state, {"tracking_uri": uri, "run_id": self.run_id, "store_in_run": inside})
        except MlflowException as exc:
            raise AffineVAEError(f"MLflow at {uri}: {_first_line(exc)}") from None

    def _has_run(self, run_id: Any) -> bool:
        """Whether the store holds the run ``run_id`` (a store copied without it, or another one: no)."""
        if not isinstance(run_id, str) or not run_id:
            return False
        try:
            self.client.get_run(run_id)
            return True
        except self.errors:
            return False

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``self.client.method(run_id, ...)`` with MLflow's errors as one-line AffineVAEErrors."""
        try:
            return getattr(self.client, method)(self.run_id, *args, **kwargs)
        except self.errors as exc:
            raise AffineVAEError(f"MLflow run {self.run_id}: {_first_line(exc)}") from None

    def log_metrics(self, step, metrics):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._call("log_batch", metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_image(self, step, tag, image):
        self._call("log_image", image, artifact_file=f"{tag}/epoch-{step:04d}.png")

    def missing(self, step, tag):
        steps = {m.step for m in self._call("get_metric_history", "train_loss")}
        files = {f.path for f in self._call("list_artifacts", tag)}
        return step not in steps, f"{tag}/epoch-{step:04d}.png" not in files

    def close(self, failed=False):
        try:
            self._call("set_terminated", status=("KILLED" if self.interrupted else "FAILED") if failed else "FINISHED")
        finally:
            if self.own_env:
                os.environ.pop(ALLOW_FILE_STORE, None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


# ---------------------------------------------------------------------------------- resolution


def resolve_logger(entry: Union[str, LoggerConfig, Mapping[str, Any]]) -> LoggerConfig:
    """A :class:`LoggerConfig` from a registered name, a logger object, or its JSON form
    (``{"logger": name, **options}``, what :func:`describe_loggers` writes)."""
    if isinstance(entry, LoggerConfig):
        return entry
    if isinstance(entry, str):
        return LOGGERS.get(entry.strip().lower())()
    if isinstance(entry, Mapping) and isinstance(entry.get("logger"), str):
        options = {k: v for k, v in entry.items() if k != "logger"}
        cls = LOGGERS.get(entry["logger"])
        return cls.from_dict(options, what=f"logger '{cls.name}'")
    raise AffineVAEError(f"a logger is a name ({', '.join(LOGGERS.names())}) or a logger object "
                         f"(CSVLogger, TensorBoardLogger, MLflowLogger), got {entry!r}")


def check_loggers(loggers: Any) -> None:
    """Validate ``TrainConfig.loggers``: a tuple of names / logger objects, each known and installed.

    Raises:
        AffineVAEError: a bare string, an unknown name (with a suggestion), the same logger
            twice, or a missing package (naming the extra to install).
    """
    check(isinstance(loggers, tuple),
          f"loggers must be a tuple of logger names or objects, e.g. ('csv', 'tensorboard'), got {loggers!r}")
    seen: list = []
    for entry in loggers:
        logger = resolve_logger(entry)
        check(logger not in seen, f"logger '{logger.name}' is given twice (loggers {describe_loggers(loggers)}); "
                                  "each writes its files once")
        seen.append(logger)
        type(logger).check_installed()


def describe_loggers(loggers: Sequence[Any]) -> list:
    """JSON form of ``TrainConfig.loggers``: names stay names, logger objects become
    ``{"logger": name, **options}`` (which :func:`resolve_logger` reads back)."""
    out: list = []
    for entry in loggers:
        if isinstance(entry, LoggerConfig):
            out.append({"logger": entry.name, **{k: (os.fspath(v) if isinstance(v, os.PathLike) else v)
                                                 for k, v in entry.to_dict().items()}})
        else:
            out.append(entry)
    return out


def _flatten(prefix: str, value: Any, out: dict) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}/{k}", v, out)
        return
    degrees = degrees_of(prefix, value)  # an angle in radians: also in degrees, as <option>_deg
    if degrees is not None:
        _flatten(f"{prefix}_deg", degrees, out)
    if value is None:
        out[prefix] = "none"
    elif isinstance(value, (bool, int, float, str)):
        out[prefix] = value
    elif isinstance(value, (list, tuple)):
        out[prefix] = json.dumps(list(value), default=str)
    else:
        out[prefix] = str(value)


def hyperparameters(config: Any, model: Any) -> dict[str, Scalar]:
    """Flat hyper-parameters of a run: ``model/family``, ``model/<option>`` (nested configs
    joined by '/'; lists as JSON text) and ``train/<option>`` (``config.to_dict()``, loggers left out);
    an angle in radians (:data:`~affinevae.config.RADIAN_OPTIONS`) also as ``<option>_deg`` in degrees."""
    out: dict[str, Scalar] = {"model/family": model.family}
    _flatten("model", model.config.to_dict(), out)
    train = {k: v for k, v in config.to_dict().items() if k != "loggers"}
    _flatten("train", train, out)
    return out


def scalars_of(record: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of an epoch record except ``epoch`` (bools left out), as floats."""
    return {k: float(v) for k, v in record.items()
            if k != "epoch" and isinstance(v, (int, float, np.number)) and not isinstance(v, bool)}


# ---------------------------------------------------------------------------------- panels


def image_grid(rows: Union[np.ndarray, Tensor], pad: int = 1) -> np.ndarray:
    """Tile (R, K, C, H, W) images into one (R*(H+pad)+pad, K*(W+pad)+pad, 3) uint8 image.

    One channel is shown grey, three as RGB, others by their first channel. Values in [0, 1]
    are kept; otherwise the whole grid is min-max scaled to [0, 1]. Padding is white.
    """
    a = rows.detach().cpu().float().numpy() if isinstance(rows, Tensor) else np.asarray(rows, dtype=np.float32)
    if a.ndim != 5:
        raise AffineVAEError(f"image_grid needs (rows, columns, C, H, W) images, got shape {a.shape}")
    r, k, c, h, w = a.shape
    a = a[:, :, :3] if c == 3 else np.repeat(a[:, :, :1], 3, axis=2)
    a = np.nan_to_num(a)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 1.0)
    if lo < 0 or hi > 1:
        a = (a - lo) / max(hi - lo, 1e-12)
    a = np.pad(a, ((0, 0), (0, 0), (0, 0), (pad, 0), (pad, 0)), constant_values=1.0)
    grid = a.transpose(0, 3, 1, 4, 2).reshape(r * (h + pad), k * (w + pad), 3)
    grid = np.pad(grid, ((0, pad), (0, pad), (0, 0)), constant_values=1.0)
    return (np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8)


@torch.no_grad()
def reconstruction_panel(model: Any, images: Union[np.ndarray, Tensor], labels: Optional[Union[np.ndarray, Tensor]] = None,
                         seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 panel: ``images`` (K, C, H, W) in the top row, ``model``'s mean
    reconstructions below (:meth:`LatentModel.reconstruct`; labels for conditional models).

    Runs in evaluation mode with the random state forked (seeded by ``seed``), so it changes
    neither the model's mode nor the caller's random numbers.
    """
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images, dtype=torch.float32)
    y = None if labels is None or not model.conditional else torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels)
    with module_mode(model), seeded(seed, model.device):
        rec = model.reconstruct(x.to(model.device), None if y is None else y.to(model.device))
    return image_grid(torch.stack([x.cpu(), rec.float().cpu()]))


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of an (H, W, 3) uint8 image (Pillow)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------- tracker


class Tracker:
    """The open loggers of one training run; a context manager (closing marks the run failed
    when the block raised).

    Args:
        sinks: the open loggers (empty: logging is off and every call returns at once).
        images: (K, C, H, W) panel images, or None for no panels.
        labels: (K,) their labels (conditional models).
        images_every: a panel every this many epochs (0: never); one after the last epoch too.
        epochs: the run's last epoch.
    """

    def __init__(self, sinks: Sequence[Sink] = (), images: Optional[Tensor] = None, labels: Optional[Tensor] = None,
                 images_every: int = 0, epochs: int = 0) -> None:
        self.sinks = list(sinks)
        self.images, self.labels = images, labels
        self.images_every, self.epochs = images_every, epochs

    @classmethod
    def start(cls, config: Any, model: Any, run_dir: Optional[Union[str, Path]], images: Optional[Tensor] = None,
              labels: Optional[Tensor] = None, history: Sequence[Mapping[str, Any]] = (), enabled: bool = True) -> "Tracker":
        """Open ``config.loggers`` (a :class:`~affinevae.training.TrainConfig`) for a run of
        ``model`` in ``run_dir`` and log the hyper-parameters.

        Args:
            images: (N, C, H, W) images whose first :data:`PANEL_IMAGES` make the panels.
            labels: (N,) their labels, or None.
            history: epoch records of the interrupted run being resumed.
            enabled: False (e.g. on DDP ranks other than 0) opens nothing.
        """
        loggers = [resolve_logger(e) for e in config.loggers] if enabled else []
        if not loggers:
            return cls()
        hparams = hyperparameters(config, model)
        run = None if run_dir is None else Path(run_dir)
        sinks: list[Sink] = []
        try:
            # a tracking server that refuses (unreachable, a bad URI) is asked first, before the local
            # loggers write their first files: a refused start leaves nothing behind
            for lg in sorted(loggers, key=lambda lg: lg.name != MLflowLogger.name):
                sinks.append(lg.open(run, hparams, list(history)))
        except BaseException:
            for s in sinks:
                s.close(failed=True)
            raise
        panel = None if images is None else images[:PANEL_IMAGES]
        panel_y = None if labels is None or panel is None else labels[:PANEL_IMAGES]
        tracker = cls(sinks, panel, panel_y, config.log_images_every, config.epochs)
        if history:
            tracker.replay(history[-1], model)
        return tracker

    def replay(self, record: Mapping[str, Any], model: Any) -> None:
        """For a resumed run: log the checkpointed epoch's ``record`` (and its panel, when due, of ``model``
        as loaded from that checkpoint) to the loggers that lack it (:meth:`Sink.missing`), so that each
        epoch is logged once whatever moment a kill came at."""
        step = int(record["epoch"])
        wanted: dict = {}
        self._each(f"epoch {step} (resumed)", lambda s: wanted.__setitem__(s, s.missing(step, "reconstructions")))
        self._log(record, model, wanted, f"epoch {step} (resumed)")

    def epoch(self, record: Mapping[str, Any], model: Any) -> None:
        """Log one epoch's ``record`` (its scalars, step = ``record['epoch']``) and, when due,
        a reconstruction panel of ``model``. A logger that fails (a tracking server gone, a full
        disk) is dropped with a warning and training goes on: logging never stops the training."""
        if self.sinks:
            self._log(record, model, {s: (True, True) for s in self.sinks}, f"epoch {int(record['epoch'])}")

    def _log(self, record: Mapping[str, Any], model: Any, wanted: Mapping[Sink, tuple[bool, bool]], when: str) -> None:
        """Log ``record``'s scalars to the loggers ``wanted`` says (sink -> (scalars, panel)) and, when due,
        one reconstruction panel of ``model`` to those that take it."""
        step = int(record["epoch"])
        scalars = scalars_of(record)
        for s, (metrics, _) in wanted.items():
            if metrics:
                self._one(s, when, lambda t: t.log_metrics(step, scalars))
        due = self.images_every > 0 and (step % self.images_every == 0 or step == self.epochs)
        takers = [s for s, (_, image) in wanted.items() if image and s in self.sinks]
        if due and takers and self.images is not None and len(self.images):
            panel = reconstruction_panel(model, self.images, self.labels)
            for s in takers:
                self._one(s, when, lambda t: t.log_image(step, "reconstructions", panel))

    def _each(self, when: str, call) -> None:
        """``call(sink)`` for every open logger; one that raises is closed (as failed) and dropped
        with a one-line warning."""
        for s in list(self.sinks):
            self._one(s, when, call)

    def _one(self, sink: Sink, when: str, call) -> None:
        """``call(sink)`` for one open logger (nothing where it was dropped already), dropped as :meth:`_each` says."""
        if sink not in self.sinks:
            return
        try:
            call(sink)
        except Exception as exc:  # noqa: BLE001 - any logger failure: the training is what matters
            self.sinks.remove(sink)
            warnings.warn(f"logger '{sink.name}' failed at {when} ({_first_line(exc)}); training goes on without it",
                          stacklevel=user_stacklevel())
            with contextlib.suppress(Exception):
                sink.close(failed=True)

    def close(self, failed: bool = False) -> None:
        """Close every logger (``failed``: the run ended with an exception). A logger that fails to
        close is said in a warning (the training's result stands)."""
        sinks, self.sinks = self.sinks, []
        for s in sinks:
            try:
                s.close(failed=failed)
            except Exception as exc:  # noqa: BLE001
                if not failed:  # after an exception in training, that exception is the one to see
                    warnings.warn(f"logger '{s.name}' failed to close ({_first_line(exc)})", stacklevel=user_stacklevel())

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            for s in self.sinks:
                s.interrupted = True
        self.close(failed=exc_type is not None)
        return False
