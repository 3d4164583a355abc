"""A run directory as an object: :class:`Run`, and :func:`load` of the model it holds.

A training run directory (written by :func:`affinevae.training.fit`) holds:

- ``model.json`` / ``model.safetensors``: the latest weights (:func:`load`, :meth:`Run.model`);
- ``train.json``: the training config, progress (epochs done, the latest checkpoint's files)
  and what training recorded about its data (``meta``: data spec, labels, key, n, binarize ...);
- ``checkpoint-eNNNN.safetensors`` + ``optimizer-eNNNN.pt``: the last complete epoch's state;
- ``metrics.jsonl``: one JSON line per epoch;
- ``poses.npz``: the found poses of a pose-optimised AVAE (:meth:`Run.pose_record`).

A model directory written by ``model.save(dir)`` holds only the first two; it opens as a
:class:`Run` too, with no training record (empty ``metrics`` and ``info``). One written from a run
(``affinevae amortise --out``, or :meth:`Run.copy_data_record`) also holds ``data.json``, the run's
data record (its ``meta`` and seed), so that other data are read for it as training read them
(pixel scaling, ``--square``, ``--centre`` ...).
Everything that knows these file names lives here.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from . import models  # noqa: F401  (registers the model families that load() builds)
from .data.inputs import check_int
from .devices import resolve_device
from .errors import AffineVAEError, user_stacklevel
from .io import (CONFIG_DIGEST_KEY, DATA_JSON, MODEL_JSON, MODEL_WEIGHTS, TRAIN_JSON, atomic_write, config_digest, load_tensors, read_json,
                 tensor_header, write_json)
from .pose.record import POSES_FILE, PoseRecord, load_pose_record
from .models.base import FORMAT_VERSION, planned_state
from .registry import MODELS

__all__ = ["Run", "load", "read_run", "DATA_JSON", "read_metrics", "write_metrics", "PLAIN_LOSS_KEYS", "named_loss_terms", "TRAIN_JSON", "METRICS", "POSES_FILE", "PoseRecord",
           "load_pose_record", "read_model_description"]

METRICS = "metrics.jsonl"
CHECKPOINT_NAME = "checkpoint-e{epoch:04d}.safetensors"
OPTIMIZER_NAME = "optimizer-e{epoch:04d}.pt"
#: ``train.json`` keys written by the trainer itself; every other key is what training recorded (``meta``).
_PROGRESS_KEYS = ("train_config", "epochs_done", "checkpoint", "optimizer", "optimizer_sha256")


def load(directory: str | Path, device: str | torch.device = "cpu",
         networks: Optional[Mapping[str, torch.nn.Module]] = None):
    """Load a model saved with :meth:`LatentModel.save` (or a training run directory).

    ``networks``: for a model built with networks of the caller's own (``Family(config,
    networks={...})``, recorded as ``networks`` in ``model.json``), the same networks again, freshly
    built (their weights are loaded into them); None for every other model.

    Returns the model in eval mode on ``device``. Raises :class:`AffineVAEError` if the
    directory, its config or its weights are missing, corrupt or do not match, or if ``networks``
    are missing, unneeded or other than the recorded ones.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise AffineVAEError(not_a_run(directory))
    desc = read_model_description(directory)
    version = desc.get("format_version", FORMAT_VERSION)  # absent in the first files written
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise AffineVAEError(f"{directory / MODEL_JSON}: format_version {version!r} is not one this affinevae reads "
                             f"(1..{FORMAT_VERSION}); written by a newer affinevae? upgrade it")
    try:
        cls = MODELS.get(desc["model"])
    except AffineVAEError as exc:
        raise AffineVAEError(f"{directory / MODEL_JSON}: {exc}") from None
    try:  # the config alone (a bad value is the file's fault: it is named)
        cls.config_class.from_saved(desc["config"], what=f"model '{cls.family}'")
    except AffineVAEError as exc:
        raise AffineVAEError(f"{directory / MODEL_JSON}: {exc}") from None
    injected = check_injected(directory / MODEL_JSON, desc, networks)
    # the config against the weights' header, before any tensor is allocated
    shapes, meta = tensor_header(directory / MODEL_WEIGHTS)
    planned = None if injected else planned_state(lambda: cls.from_config_dict(desc["config"]),
                                                  f"{directory / MODEL_JSON}", copies=2)
    if planned is not None:
        _check_state(directory, planned, shapes)
    saved_with = meta.get(CONFIG_DIGEST_KEY)  # absent in files of earlier versions
    if saved_with is not None and saved_with != config_digest(desc):  # same shapes, another config
        raise AffineVAEError(f"{directory}: {MODEL_WEIGHTS} was saved with another {MODEL_JSON} (a save interrupted "
                             f"between the two files, or a hand-edited {MODEL_JSON}?); save the model again, or "
                             "resume its training")
    model = cls.from_config_dict(desc["config"], injected or None)
    state = load_tensors(directory / MODEL_WEIGHTS)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _check_state(directory, own, {k: tuple(v.shape) for k, v in state.items()})
    model.load_state_dict(state)
    return model.to(resolve_device("cpu" if device is None else device)).eval()


def read_model_description(directory: Path) -> dict[str, Any]:
    """``directory``'s ``model.json``: {'model': family name, 'config': {...}, ...}; one
    :class:`AffineVAEError` line naming the file where it is missing, not JSON, or JSON that is not
    such an object."""
    desc = read_json(Path(directory) / MODEL_JSON, "model config")
    if not isinstance(desc, dict) or not isinstance(desc.get("model"), str) or not isinstance(desc.get("config"), dict):
        raise AffineVAEError(f"{Path(directory) / MODEL_JSON}: not an affinevae model config")
    return desc


def check_injected(where: Path, desc: dict, networks: Optional[Mapping[str, torch.nn.Module]]) -> dict:
    """The ``networks`` to build the model of ``desc`` (its ``model.json`` at ``where``) with: {} for a model built from its config alone; one :class:`AffineVAEError` line where the file
    records networks of the caller's own (``desc['networks']``) and ``networks`` does not give those
    names, or gives networks to a model that had none."""
    recorded = desc.get("networks") or []
    if not isinstance(recorded, list) or not all(isinstance(v, str) for v in recorded):
        raise AffineVAEError(f"{where}: 'networks' must list the names of injected networks, got {recorded!r}")
    given = dict(networks or {})
    if any("." in name for name in recorded):  # an AVAE around a model built with them: its constructor takes none
        raise AffineVAEError(f"{where}: its inner model was built with networks of its own ({', '.join(recorded)}): "
                             "build the model again with them and load model.safetensors into it (load_state_dict)")
    if sorted(given) == sorted(recorded):
        return given
    if not recorded:
        raise AffineVAEError(f"{where}: model '{desc['model']}' was built from its config alone; load it without "
                             "networks=")
    raise AffineVAEError(f"{where}: model '{desc['model']}' was built with networks of its own ({', '.join(recorded)}), "
                         f"which its config does not build: load it with networks={{{', '.join(repr(n) + ': ...' for n in recorded)}}}"
                         + (f" (got {', '.join(sorted(given))})" if given else ""))


def not_a_run(path: Path) -> str:
    """The one-line message for a ``path`` given as a run or model directory that is none: a file
    (e.g. the data instead of the run) or nothing at all."""
    if path.is_file():
        return (f"{path}: a file, not a run or model directory (give the folder that train --out or "
                "model.save wrote)")
    return f"{path}: no such run or model directory"


def state_mismatch(own: Mapping[str, tuple], saved: Mapping[str, tuple]) -> str:
    """How saved weights differ from a model's, by name and shape: ``own`` and ``saved`` map each
    tensor's name to its shape. Returns e.g. ``"missing ['encoder.0.weight', ...] (12 in all);
    unexpected ['head.bias']"``, or ``""`` when they match."""
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    bad = [k for k in own if k in saved and tuple(own[k]) != tuple(saved[k])]
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch for", bad)):
        if keys:
            parts.append(f"{what} {keys[:3]}" + (f" ({len(keys)} in all)" if len(keys) > 3 else ""))
    return "; ".join(parts)


def _check_state(directory: Path, own: dict[str, tuple], saved: dict[str, tuple]) -> None:
    """One line when the weights' names or shapes differ from the model's."""
    detail = state_mismatch(own, saved)
    if detail:
        raise AffineVAEError(f"{directory / MODEL_WEIGHTS}: weights do not match the config in {MODEL_JSON} ({detail})")


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The contents of a run's ``train.json`` (training config, epochs done, data description); an
    :class:`AffineVAEError` when it is missing or corrupt."""
    path = Path(run_dir) / TRAIN_JSON
    info = read_json(path, "training state")
    if not isinstance(info, dict):
        raise AffineVAEError(f"{path}: corrupt training state (a JSON object was expected, got {type(info).__name__})")
    check_data_fields(path, info, "training state")  # what commands read back: one line naming the file
    cfg = info.get("train_config")
    if cfg is not None and not isinstance(cfg, dict):
        raise AffineVAEError(f"{path}: corrupt training state (train_config must be a JSON object, got {cfg!r})")
    seed = (cfg or {}).get("seed")
    if seed is not None and not _is_count(seed):
        raise AffineVAEError(f"{path}: corrupt training state (train_config seed must be an integer >= 0, got {seed!r})")
    return info


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


#: ``train.json`` fields that commands read back: (name, check, what it must be). None is always allowed.
_RUN_FIELDS = (
    ("epochs_done", _is_count, "an integer >= 0"),
    ("data", lambda v: isinstance(v, str), "a data spec (text)"),
    ("labels", lambda v: isinstance(v, str), "a file name"),
    ("key", lambda v: isinstance(v, str), "an array name"),
    ("targets", lambda v: isinstance(v, str), "a file name"),
    ("n", lambda v: _is_count(v) and v >= 1, "an integer >= 1"),
    ("binarize", lambda v: _is_number(v) and 0 < v < 1, "a threshold in (0, 1)"),
    ("max_angle", lambda v: _is_number(v) and 0 < v <= math.pi + 1e-9, "radians in (0, pi]"),
    ("signal_axis", lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    ("n_train", lambda v: _is_count(v) and v >= 1, "an integer >= 1"),
    ("data_fingerprint", lambda v: isinstance(v, str), "a fingerprint (text)"),
    ("fill_nan", lambda v: isinstance(v, bool), "true or false"),
    ("data_kind", lambda v: isinstance(v, str), "a kind of data (text)"),
    ("signal_cube", lambda v: isinstance(v, bool), "true or false"),
    ("signal_calibration", lambda v: isinstance(v, dict), "a calibration (a JSON object)"),
    ("stretch", lambda v: isinstance(v, str), "a stretch's name"),
    ("square", lambda v: isinstance(v, str), "'pad' or 'crop'"),
    ("class_names", lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v), "a list of names"),
    ("centre", lambda v: v in ("mass", "mean") or (isinstance(v, list) and len(v) == 2 and all(
        isinstance(i, int) and not isinstance(i, bool) for i in v)), "'mass' or two whole pixels [down, right]"),
)


def check_data_fields(path: Path, record: Mapping[str, Any], what: str) -> None:
    """One :class:`AffineVAEError` line naming ``path`` (a ``train.json`` or ``data.json``, its ``what``) where a
    field of the data ``record`` that commands read back is not what it must be (:data:`_RUN_FIELDS`)."""
    for name, ok, want in _RUN_FIELDS:
        value = record.get(name)
        if value is not None and not ok(value):
            raise AffineVAEError(f"{path}: corrupt {what} ({name} must be {want}, got {value!r})")


#: The keys of an epoch record (``metrics.jsonl``) that every model writes: the loss and its two parts.
PLAIN_LOSS_KEYS = ("train_loss", "train_recon", "train_kl")


def named_loss_terms(record: Mapping[str, Any]) -> dict[str, float]:
    """A model's named extra loss terms in one epoch record (nats per image): the ``train_``-prefixed
    numbers other than :data:`PLAIN_LOSS_KEYS` (e.g. ``train_pose_anchor``), by name without the
    prefix, in the record's order."""
    return {k[len("train_"):]: v for k, v in record.items() if k.startswith("train_") and k not in PLAIN_LOSS_KEYS
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Per-epoch metrics of a run (list of dicts from ``metrics.jsonl``); [] if none.

    The trainer rewrites the file atomically, so it is never torn by a crash; a broken *last*
    line (a file from an older version appended in place, or a copy cut short) is dropped with a
    warning, while a broken line before it is an :class:`AffineVAEError` naming the line.
    """
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AffineVAEError(f"{path}: cannot read the metrics ({exc.__class__.__name__})") from None
    numbered = [(i, line) for i, line in enumerate(lines) if line.strip()]
    out = []
    for j, (i, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            if j == len(numbered) - 1:
                warnings.warn(f"{path}: ignored a broken last line ({i + 1}; a write cut short)", stacklevel=user_stacklevel())
                break
            raise AffineVAEError(f"{path}: corrupt line {i + 1}") from None
        epoch = record.get("epoch", 1)
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:  # what resume and the curves count by
            raise AffineVAEError(f"{path}: line {i + 1}: epoch must be a whole number >= 1, got {epoch!r}")
        bad = next((k for k, v in record.items() if not (v is None or isinstance(v, (int, float, str)))), None)
        if bad is not None:  # the trainer writes numbers (and null); a list or object is a damaged record
            raise AffineVAEError(f"{path}: line {i + 1}: {bad} must be a number, got {record[bad]!r}")
        out.append(record)
    return out


def write_metrics(run_dir: str | Path, records: list[dict[str, Any]]) -> Path:
    """Write ``metrics.jsonl`` (one JSON line per record) atomically: a reader or a kill never sees
    half a line."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    return atomic_write(Path(run_dir) / METRICS, lambda tmp: Path(tmp).write_text(text))


def _own_file(run_dir: Path, name: Any, pattern: str, key: str) -> Path:
    """``run_dir / name`` when ``name`` (from ``train.json``) is a plain file name of the expected
    form; a one-line error otherwise (no path may lead out of the run directory)."""
    regex = "^" + re.escape(pattern).replace(re.escape("{epoch:04d}"), r"\d+") + "$"
    if not isinstance(name, str) or not re.match(regex, name) or Path(name).name != name:
        raise AffineVAEError(f"{run_dir / TRAIN_JSON}: {key} {name!r} is not a file name of the run directory "
                             f"(expected {pattern.replace('{epoch:04d}', 'NNNN')}); refused")
    return run_dir / name


class Run:
    """A training run (or saved model) directory.

    ``Run(path)`` is a handle that reads nothing (the trainer writes through one);
    :meth:`Run.open` checks that the directory exists. Every property reads the files anew,
    so a handle follows a run that is still training.

    Example::

        run = Run.open("runs/vae")
        model = run.model()                    # eval mode, on the CPU
        test = run.data(split="test", n=500)   # the run's own data set, test split
        history = run.metrics                  # [{'epoch': 1, 'train_loss': ...}, ...]
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def open(cls, path: "str | Path | Run") -> "Run":
        """A :class:`Run` of an existing directory (a Run is returned as is); an :class:`AffineVAEError` otherwise."""
        run = path if isinstance(path, Run) else cls(path)
        if not run.path.is_dir():
            raise AffineVAEError(not_a_run(run.path))
        return run

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # ------------------------------------------------------------------ file names
    @property
    def train_file(self) -> Path:
        """``train.json``: training config, progress and data description."""
        return self.path / TRAIN_JSON

    @property
    def metrics_file(self) -> Path:
        """``metrics.jsonl``: one JSON line per epoch."""
        return self.path / METRICS

    @property
    def poses_file(self) -> Path:
        """``poses.npz``: the found poses of a pose-optimised AVAE."""
        return self.path / POSES_FILE

    def state_files(self, epoch: int) -> tuple[Path, Path]:
        """(weights, optimizer state) file paths of the checkpoint after ``epoch``."""
        return self.path / CHECKPOINT_NAME.format(epoch=epoch), self.path / OPTIMIZER_NAME.format(epoch=epoch)

    def all_state_files(self) -> list[Path]:
        """Every checkpoint weights and optimizer-state file present, any epoch."""
        return sorted(self.path.glob(CHECKPOINT_NAME.replace("{epoch:04d}", "*"))) + \
            sorted(self.path.glob(OPTIMIZER_NAME.replace("{epoch:04d}", "*")))

    @property
    def optimizer_digest(self) -> Optional[str]:
        """SHA-256 (hex) of the latest checkpoint's optimizer-state file as ``train.json`` records it
        (None for runs written before it was recorded, and for saved models)."""
        value = self.info.get("optimizer_sha256")
        if value is not None and not (isinstance(value, str) and len(value) == 64):
            raise AffineVAEError(f"{self.train_file}: corrupt training state (optimizer_sha256 must be a SHA-256 "
                                 f"digest, 64 hex digits, got {value!r})")  # not taken for a run from before digests
        return value

    @property
    def checkpoint(self) -> Optional[tuple[Path, Path]]:
        """(weights, optimizer state) of the latest checkpoint named in ``train.json``, or None."""
        info = self.info
        if "checkpoint" not in info or "optimizer" not in info:
            return None
        return (_own_file(self.path, info["checkpoint"], CHECKPOINT_NAME, "checkpoint"),
                _own_file(self.path, info["optimizer"], OPTIMIZER_NAME, "optimizer"))

    # ------------------------------------------------------------------ the model
    def model(self, device: str | torch.device = "cpu", networks: Optional[Mapping[str, torch.nn.Module]] = None):
        """The model (``model.json`` + ``model.safetensors``) in eval mode on ``device``; ``networks`` as
        :func:`load` takes them (a model built with networks of the caller's own)."""
        return load(self.path, device, networks)

    @property
    def model_description(self) -> dict[str, Any]:
        """``model.json``: {'model': family, 'config': {...}}; a file that is JSON but not such an object
        is one :class:`AffineVAEError` line naming it."""
        return read_model_description(self.path)

    @property
    def model_config(self) -> dict[str, Any]:
        """The model's config as saved (a dict; ``run.model().config`` is the dataclass)."""
        return dict(self.model_description.get("config") or {})

    # ------------------------------------------------------------------ the training record
    @property
    def has_training(self) -> bool:
        """True when the directory holds a training record (``train.json``), False for a saved model."""
        return self.train_file.is_file()

    @property
    def info(self) -> dict[str, Any]:
        """``train.json`` as written by the trainer, or {} for a saved model without one; a one-line
        :class:`AffineVAEError` where the directory does not exist (a mistyped path reads as nothing)."""
        self._check_exists()
        return read_run(self.path) if self.has_training else {}

    def _check_exists(self) -> None:
        if not self.path.is_dir():
            raise AffineVAEError(not_a_run(self.path))

    @property
    def train_config(self) -> dict[str, Any]:
        """The training options (:class:`~affinevae.training.TrainConfig` as a dict), {} when unknown."""
        return dict(self.info.get("train_config") or {})

    @property
    def epochs_done(self) -> Optional[int]:
        """Complete epochs recorded in ``train.json`` (None for a saved model)."""
        value = self.info.get("epochs_done")
        return None if value is None else int(value)

    @property
    def meta(self) -> dict[str, Any]:
        """What training recorded about its data: ``data`` (the ``--data`` spec), ``labels``,
        ``key``, ``n``, ``binarize``, ``max_angle`` (radians), ``n_train`` ... For a saved model, the
        record of the run it was written from (``data.json``, :meth:`copy_data_record`), or {}."""
        if not self.has_training:
            return dict(self.data_record.get("meta") or {})
        return {k: v for k, v in self.info.items() if k not in _PROGRESS_KEYS}

    @property
    def record_file(self) -> Path:
        """The file that records this run's data: ``train.json``, or a saved model's ``data.json``."""
        return self.train_file if self.has_training else self.path / DATA_JSON

    @property
    def data_record(self) -> dict[str, Any]:
        """A saved model's ``data.json``: {'from': the absolute path of the training run it
        came from (through any saved model it was copied from), 'seed': that
        run's seed, 'meta': its :attr:`meta`}; {} where there is none (a training run keeps its record in
        ``train.json``). A file that is not such a record is one :class:`AffineVAEError` line naming it."""
        self._check_exists()
        path = self.path / DATA_JSON
        if self.has_training or not path.is_file():
            return {}
        record = read_json(path, "data record")
        if not isinstance(record, dict) or not isinstance(record.get("meta"), dict) \
                or not _is_count(record.get("seed", 0)) or not isinstance(record.get("from", ""), str):
            raise AffineVAEError(f"{path}: not an affinevae data record (a JSON object with 'meta', 'seed' and "
                                 "'from', the run's directory)")
        check_data_fields(path, record["meta"], "data record")
        return record

    def copy_data_record(self, directory: str | Path) -> Optional[Path]:
        """Write this run's data record (:attr:`meta` and :attr:`seed`) as ``data.json`` into the saved
        model ``directory`` (atomically), so that :meth:`data` and the commands read other data for that
        model as this run's training read them: its pixel scaling, ``--square``, ``--centre``, signal
        axis, thresholds and its own data set. Returns the file, or None where this run records nothing
        (a saved model without a record; a record left in ``directory`` is then removed). A run trained
        from Python records what :func:`affinevae.fit` knew of its data (the number of images, their
        fingerprint, the ``meta`` given to it). Refused (one line) where ``directory`` holds a training
        run (its record is its own ``train.json``) or no saved model (``model.json``: save it first)."""
        target = Path(directory)
        if (target / TRAIN_JSON).is_file():
            raise AffineVAEError(f"{target}: holds a training run, whose data record is its own {TRAIN_JSON}")
        if not (target / MODEL_JSON).is_file():
            raise AffineVAEError(f"{target}: holds no saved model ({MODEL_JSON}); save the model there first "
                                 "(model.save), then copy the run's data record beside it")
        meta = self.meta
        if not meta:
            (target / DATA_JSON).unlink(missing_ok=True)  # a record left there would describe other data
            return None
        source = self.data_record.get("from") or str(self.path.resolve())  # a copy's copy names the trained run
        return write_json(target / DATA_JSON, {"from": source, "seed": self.seed, "meta": meta})

    def write_metrics(self, records: list[dict[str, Any]]) -> Path:
        """Replace ``metrics.jsonl`` by ``records`` atomically (:func:`write_metrics`)."""
        return write_metrics(self.path, records)

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """Per-epoch metrics (``metrics.jsonl``), [] when none (an error where the directory does not exist)."""
        self._check_exists()
        return read_metrics(self.path)

    @property
    def seed(self) -> int:
        """The training seed (0 when unknown; a saved model's: its data record's); built-in data sets are
        drawn from it."""
        if not self.has_training:
            return int(self.data_record.get("seed", 0))
        return int(self.train_config.get("seed", 0))

    @property
    def class_names(self) -> Optional[list[str]]:
        """The K names of the classes when the training labels named them (class k is the k-th, in sorted
        order), else None."""
        names = self.meta.get("class_names")
        return None if not names else [str(v) for v in names]

    @property
    def binarize(self) -> Optional[float]:
        """The ``--binarize`` threshold training used, or None."""
        value = self.meta.get("binarize")
        return None if value is None else float(value)

    def pose_record(self) -> Optional[PoseRecord]:
        """The found poses of pose-optimised training (``poses.npz``), or None when there are none."""
        return load_pose_record(self.path) if self.poses_file.is_file() else None

    # ------------------------------------------------------------------ the data
    def data(self, split: str = "test", n: Optional[int] = 500, source=None, binarize: bool = True,
             fill_nan: Optional[bool] = None):
        """The images to analyse this run on, an :class:`~affinevae.data.ImageSet` of the first ``n``.

        ``source``: None for the run's own data spec from ``train.json`` (``split`` of a
        built-in set, binarized as training was, its labels and key; the train split holds at
        most the ``n`` images training used; the same when ``source`` names that spec again, so
        ``rotated-mnist`` keeps the angle range training used), another ``--data`` spec (drawn
        with the run's seed), an ImageSet (used as is) or an (N, C, H, W) / (N, H, W) array or tensor of images in
        the model's pixel units. ``n=None``: all of them.
        ``binarize=False`` leaves the run's own images unthresholded (for a caller that thresholds
        them itself, after turning them). Image files are scaled with :attr:`pixel_scaling`.
        ``fill_nan``: True fills NaN/inf pixels of image files with their image's median (as ``--fill-nan``)
        where they would be refused; None (default) does as training did. Images are made square and their
        objects moved to the centre as training's were (``train --square`` and ``--centre``, ``meta['square']``
        and ``meta['centre']``; not an ImageSet or array given).
        Raises :class:`AffineVAEError` when the run records no data spec and none is given.
        """
        from .data import ImageSet, load_dataset
        from .data.sources import BUILTIN

        if n is not None:
            check_int("n", n, 1)
        if not isinstance(source, (ImageSet, str, Path, type(None))):  # an array or tensor of images
            from .data.inputs import as_images

            source = ImageSet(as_images(source, where="data")[0].numpy())
        if isinstance(source, ImageSet):
            return source if n is None or n >= len(source) else source.subset(slice(0, n))
        meta = self.meta
        fill = bool(meta.get("fill_nan")) if fill_nan is None else bool(fill_nan)
        if source is not None and not self.names_own_data(source):
            signals = {} if str(source) in BUILTIN else self.signal_reading()  # other signals: read as training read
            other = load_dataset(str(source), split=split, n=n, seed=self.seed, scaling=self.pixel_scaling,
                                 stretch=meta.get("stretch") or "auto", fill_nan=fill, square=meta.get("square"),
                                 centre=meta.get("centre"), **signals)
            self.warn_unlike(other, str(source))
            return other
        # the run's own data (also when given again by name: rotated-mnist keeps its recorded angle range)
        if not meta.get("data"):
            why = ("no data spec in train.json (a run trained from Python)" if self.has_training else
                   f"a saved model (no train.json) records no data spec ({DATA_JSON}: none, or none given to "
                   "the run it came from)")
            raise AffineVAEError(f"{self.path}: {why}; give the data to analyse (--data, or data= in Python)")
        if split == "train" and meta.get("n") is not None:
            n = int(meta["n"]) if n is None else min(n, int(meta["n"]))
        builtin = str(meta["data"]) in BUILTIN
        # a labels file given with a built-in set labels its train split only (the test split keeps its own)
        labels = meta.get("labels") if not builtin or split == "train" else None
        try:
            data = load_dataset(str(meta["data"]), split=split, n=n, seed=self.seed,
                                key=None if builtin else meta.get("key"), labels=labels, binarize=meta.get("binarize") if binarize else None,
                                max_angle=meta.get("max_angle"), signal_axis=meta.get("signal_axis"),
                                signal_cube=meta.get("signal_cube"), scaling=self.pixel_scaling,
                                fill_nan=fill and not builtin, square=meta.get("square"),
                                centre=meta.get("centre"))
            if labels is not None and data.labels is not None and self.class_names is not None:
                data.class_names = self.class_names  # the run's numbering, whatever file now holds it (a resume's .npy)
            return data
        except AffineVAEError as exc:
            if source is not None:
                raise
            raise AffineVAEError(f"{exc} (the data {self.record_file} records, as given to train from its working "
                                 "directory; give the data to analyse with --data)") from None

    def names_own_data(self, source) -> bool:
        """Whether the data spec ``source`` names the data ``train.json`` records: the same spec, or the
        same file spelled otherwise (``./cube.npy``, an absolute path) from this working directory."""
        recorded = self.meta.get("data")
        if not recorded or source is None:
            return False
        if str(source) == str(recorded):
            return True
        from .data.sources import BUILTIN

        if str(source) in BUILTIN or str(recorded) in BUILTIN:
            return False
        try:
            return Path(str(source)).resolve() == Path(str(recorded)).resolve()
        except (OSError, RuntimeError, ValueError):  # an unreadable path, a loop of links
            return False

    def signal_reading(self) -> dict:
        """How the run read its data as 1-D signals, as :func:`affinevae.data.load_dataset` keywords
        (``signal_axis``, ``signal_cube``), or {} for a run of images: other signal files given to
        analyse this run are read along the same axis."""
        axis = self.meta.get("signal_axis")
        if axis is None:
            return {}
        return {"signal_axis": int(axis), "signal_cube": self.meta.get("signal_cube")}

    @property
    def signal_calibration(self) -> Optional[dict]:
        """The calibration of the training signals' axis that ``train.json`` records
        (:func:`affinevae.data.spectra.signal_calibration`: ``sample_size`` units per sample,
        ``sample_offset`` the first sample's value, ``sample_unit``), or None: a run of images, of
        uncalibrated signals, or from before runs recorded it."""
        from .data.spectra import CALIBRATION_KEYS

        recorded = self.meta.get("signal_calibration")
        if not isinstance(recorded, dict) or not all(recorded.get(k) is not None for k in CALIBRATION_KEYS):
            return None
        return recorded

    def warn_unlike(self, data, where: str) -> None:
        """Warn (one line) when other images ``data`` (an :class:`~affinevae.data.ImageSet` read for this
        run, named ``where``) cannot be in the units the model was trained in: images that are not a patch
        set, scaled on their own range (``meta['pixel_scaling']``), for a run trained on patches (which
        ``patches`` scaled frame by frame); or a patch set for a run trained on float images that the
        loader scaled (:attr:`pixel_scaling`). Runs from before ``train.json`` recorded ``data_kind`` warn
        only in the second case. Spectra whose signal axis is calibrated otherwise than the run's training
        signals (:attr:`signal_calibration`; :func:`affinevae.data.spectra.calibration_differs`) warn too,
        naming both."""
        from .data.formats import PATCH_SET_KIND
        from .data.spectra import calibration_differs, describe_calibration, signal_calibration

        found = signal_calibration(data.meta)
        if calibration_differs(self.signal_calibration, found):
            warnings.warn(f"{where}: its signal axis is {describe_calibration(found)}, but that of the run's training "
                          f"signals ({self.meta.get('data')}) is {describe_calibration(self.signal_calibration)}: the model "
                          "reads each sample as theirs, so its shifts and maps are off; resample the signals onto "
                          "the run's axis", stacklevel=user_stacklevel())

        trained, kind = self.meta.get("data_kind"), data.meta.get("kind")
        if trained == PATCH_SET_KIND and kind != PATCH_SET_KIND and data.meta.get("pixel_scaling") is not None:
            warnings.warn(f"{where} is not a patch set, but the run was trained on patches cut from frames "
                          f"({self.meta.get('data')}): these images are scaled on their own range, not as the "
                          "patches were; cut them with `affinevae patches`, or map whole frames with "
                          "`affinevae map`", stacklevel=user_stacklevel())
        elif kind == PATCH_SET_KIND and trained != PATCH_SET_KIND and self.pixel_scaling is not None:
            warnings.warn(f"{where} is a patch set (its patches scaled frame by frame as `patches` cut them), but "
                          f"the run was trained on {self.meta.get('data')}, whose pixels were scaled as "
                          f"{self.pixel_scaling}: the model reads them in other units; train on patches to "
                          "encode patches", stacklevel=user_stacklevel())

    @property
    def pixel_scaling(self):
        """How the training images' pixels were scaled (:class:`~affinevae.data.imageset.PixelScaling`
        from ``train.json``: min-max, standardised or the asinh stretch), or None when their rule
        needed none (unsigned or bool pixels without ``--stretch asinh``, floats in [0, 1], a built-in
        set); :data:`~affinevae.data.imageset.RAW_UNITS` (the identity) for a run trained from Python on
        an array in its own units outside [0, 1]. :meth:`data` and the commands scale other data with it."""
        from .data.imageset import PixelScaling

        return PixelScaling.from_value(self.meta.get("pixel_scaling"), str(self.record_file))

    def training_angles(self) -> Optional[np.ndarray]:
        """The true rotations (N,) in radians of the training images, when the data spec in ``train.json``
        loads again and carries them (``rotated-mnist``, an ``.npz`` with an ``angle`` array); else None."""
        try:
            data = self.data(split="train", n=None)
        except AffineVAEError:
            return None
        return None if data.angle is None else np.asarray(data.angle, dtype=np.float64)
