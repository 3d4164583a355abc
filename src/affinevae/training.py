"""One trainer for every model: Adam, seeded data order, atomic checkpoints, exact resume, DDP.

The run directory (everything a later ``affinevae.load(run_dir)`` or ``--resume`` needs) is
written through :class:`affinevae.runs.Run`, which knows its layout: the latest weights, the
``train.json`` record, the last complete epoch's checkpoint (weights, optimizer state with
tensors and numbers only, loaded with ``weights_only=True``, and RNG state; ``train.json`` is
written last, so a crash mid-write leaves the previous checkpoint usable) and ``metrics.jsonl``
(one JSON line per epoch: train/val loss, recon, kl, images/s, lr; rewritten atomically each epoch).
While :func:`fit` writes a run it holds the run's lock (:class:`affinevae.outputs.RunLock`): a
second process on the same directory refuses. A run killed at any point (even ``kill -9``)
resumes from its last complete epoch to the uninterrupted result.

Under ``torchrun`` (WORLD_SIZE > 1) the same call trains data-parallel: gloo on CPU, nccl
on GPU, data sharded per rank, gradients averaged, only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import inspect
import io
import json
import math
import os
import shutil
import signal
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .config import Config, as_config, check, check_choice, check_positive, check_seed, plain_scalar
from .data.imageset import RAW_UNITS, ImageSet
from .data.inputs import as_images, check_image_size
from .devices import DEVICE_CHOICES, resolve_device  # noqa: F401  (training.resolve_device, as before)
from .errors import AffineVAEError, user_stacklevel
from .io import FIT_TARGETS, TargetStore, atomic_write, load_tensors, save_model, save_tensors, write_json
from .limits import check_allocation, format_size
from .models.base import LatentModel
from .nn.modes import module_mode
from .nn.signal import is_signal_shape
from .outputs import LOCK_FILE, RunLock, is_interrupted_start, is_run_directory, is_run_file
from .rng import seeded
from .runs import Run, read_metrics, read_run, state_mismatch  # noqa: F401  (read_metrics, read_run: re-exported)
from .tracking import Tracker, check_loggers, describe_loggers


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """Training options.

    Attributes:
        epochs: passes over the training data.
        batch_size: images per step (per process under DDP).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        schedule: 'none' or 'cosine' (per-epoch cosine decay to 0).
        val_split: fraction of the data held out for validation when no validation set is given.
        seed: fixes data order, the validation split and sampling noise (and, in the CLI, initialisation).
        device: 'auto' (cuda if available), 'cpu' or 'cuda'.
        bf16: bfloat16 autocast for the network (likelihoods stay float32).
        grad_clip: clip the gradient norm to this value (0 = off).
        progress: show a tqdm progress bar: True, False, or None (default) for "when it can be
            seen": standard error is a terminal or the code runs in a Jupyter kernel.
        checkpoint: write a checkpoint every epoch (needs a run directory).
        compile: compile the model's hot modules (:meth:`LatentModel.compile_targets`) with
            ``torch.compile`` for the duration of :func:`fit` (static shapes; needs a C++
            compiler on a CPU; the first steps take a few seconds longer). Weights and
            checkpoints are the same as without it, up to floating-point rounding.
        loggers: experiment trackers (:mod:`affinevae.tracking`): names ('csv', 'tensorboard',
            'mlflow') or logger objects; they get the hyper-parameters, every epoch's record and
            reconstruction panels.
        log_images_every: a reconstruction panel every this many epochs and after the last (0: none).
        kl_warmup: KL warm-up, as a fraction of all optimiser steps (``epochs`` x steps per epoch) in
            [0, 1): the KL term's weight in the training loss rises linearly from 0 at the first step
            to the model's ``beta`` at this fraction of training and stays there (:func:`kl_weight`);
            0 (default): ``beta`` throughout. The factor reaches every KL weight of the model
            (:meth:`LatentModel.set_kl_factor`: also the joint models' class KL). ``train_loss`` is
            the loss optimised (with the factor); ``val_loss`` and the ELBO always use the full
            weights; each epoch's record has the mean factor used (``kl_weight``).
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "none"
    val_split: float = 0.1
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    grad_clip: float = 0.0
    progress: Optional[bool] = None
    checkpoint: bool = True
    compile: bool = False
    loggers: tuple = ()
    log_images_every: int = 5
    kl_warmup: float = 0.0

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{name} must be an integer >= 1, got {v!r}")
        check_positive("lr", self.lr)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_choice("schedule", self.schedule, ["none", "cosine"])
        check(0.0 <= self.val_split < 1.0, f"val_split must lie in [0, 1), got {self.val_split!r}")
        check_seed(self.seed)
        check_choice("device", self.device, DEVICE_CHOICES)
        check_positive("grad_clip", self.grad_clip, allow_zero=True)
        for name in ("bf16", "checkpoint", "compile"):
            check(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")
        check(self.progress is None or isinstance(self.progress, bool),
              f"progress must be true, false or null (auto), got {self.progress!r}")
        check_loggers(self.loggers)
        check(isinstance(self.log_images_every, int) and not isinstance(self.log_images_every, bool)
              and self.log_images_every >= 0, f"log_images_every must be an integer >= 0, got {self.log_images_every!r}")
        check(isinstance(self.kl_warmup, (int, float)) and not isinstance(self.kl_warmup, bool)
              and 0.0 <= self.kl_warmup < 1.0, f"kl_warmup must be a fraction in [0, 1), got {self.kl_warmup!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able values (logger objects as ``{"logger": name, **options}``)."""
        return {**super().to_dict(), "loggers": describe_loggers(self.loggers)}

    def keeps_progress(self) -> bool:
        """Whether each epoch's progress bar stays when the epoch ends, showing its training and
        validation loss: in a Jupyter kernel, where the bars are the only trace of the epochs (a
        terminal's bar is cleared; ``train`` then says the epoch's line itself when it is not drawn)."""
        import sys

        return "ipykernel" in sys.modules and not sys.stderr.isatty()

    def show_progress(self) -> bool:
        """Whether to draw the progress bar (``progress``, or when None: a terminal or a Jupyter kernel)."""
        if self.progress is not None:
            return self.progress
        import sys

        return sys.stderr.isatty() or "ipykernel" in sys.modules


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns: the trained model, per-epoch metrics, the run directory, and how
    many images it trained on (``n_train``) and validated on (``n_val``: held out of the data by
    ``val_split``, or the ``val`` set given), and how many epochs this call trained (``epochs_trained``)."""

    model: LatentModel
    history: list
    run_dir: Optional[Path]
    n_train: int = 0
    n_val: int = 0
    #: Epochs this call trained (0 for a resume of a finished run).
    epochs_trained: int = 0


class TrainingDiverged(AffineVAEError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def seed_everything(seed: int) -> None:
    """Seed torch's and numpy's legacy global generators with ``seed`` (an integer >= 0): for a
    caller's own script. The library never calls it: ``build_model(seed=)`` and
    ``TrainConfig.seed`` seed its own draws and leave the global state as it was."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device_name: str = "auto") -> tuple[int, int]:
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1); returns (rank, world)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        use_cuda = device_name != "cpu" and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return _dist_info()


def _pixel_kind(images) -> str:
    """numpy's kind of the pixels of images given as an array or tensor (or anything ``np.asarray`` reads):
    'f' floats, 'i' signed integers (files of both are scaled by their range), 'u' unsigned integers,
    'b' bools (files of these have a fixed rule)."""
    if isinstance(images, Tensor):
        dtype = images.dtype
        return ("f" if dtype.is_floating_point else "b" if dtype == torch.bool else "i" if dtype.is_signed
                else "u")
    return np.asarray(images).dtype.kind


def finish_distributed() -> None:
    """End a torchrun job's process group on every rank once each has done its work (a barrier, then
    ``destroy_process_group``); nothing outside torchrun. Without it a rank that returned while rank 0
    still worked (``train``'s summary and learning check) could abort at exit ("terminate called without an
    active exception", SIGABRT), and torchrun then killed rank 0."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _as_tensors(data, model: LatentModel, where: str = "training images") -> tuple[Tensor, Optional[Tensor]]:
    """Training images (N, C, H, W) float32 and labels (N,) int64 (None for unconditional models
    without labels, or whose labels are partly unknown, -1: those models ignore them), coerced and
    checked by :func:`affinevae.data.as_images`.

    A semi-supervised model (``model.semi_supervised``) checks its own labels with
    ``model.check_labels``: class labels with -1 where unknown, or float targets with NaN.
    """
    if getattr(model, "semi_supervised", False):
        if isinstance(data, ImageSet):
            images, raw = data.images, data.labels
        elif isinstance(data, tuple) and len(data) == 2:
            images, raw = data
        else:
            images, raw = data, None
        x, _ = as_images(images, image_shape=model.config.image_shape, where=where)
        model.check_pixels(x, where)
        if raw is None:
            return x, None
        try:
            return x, model.check_labels(raw, len(x))
        except AffineVAEError as exc:  # which images' labels: the training or the validation ones
            raise AffineVAEError(f"{where}: {exc}") from None
    conditional = model.conditional
    x, y = as_images(data, image_shape=model.config.image_shape, where=where,
                     num_classes=model.config.num_classes if conditional else None,
                     min_label=0 if conditional else -1)
    model.check_pixels(x, where)
    if conditional and y is None:
        raise AffineVAEError(f"model '{model.family}' is class-conditional: {where} need labels")
    if not conditional and y is not None and len(y) and int(y.min()) < 0:
        y = None  # partly known labels (-1), which a model that takes no labels ignores (only the ss* read -1)
    return x, y


def warn_targets_off_prior(y: Tensor, center: Tensor, scale: Tensor) -> None:
    """Warn (one line) when known training targets ``y`` (N, M) (NaN: unknown) lie far from the model's
    target prior N(``center``, ``scale``^2) ((M,) each): a mean more than 3 prior sds away or a spread
    outside 0.1-10 prior sds, where the prior would drown what the images say (``train`` and the
    Estimator set the prior from the targets; a model built by hand keeps N(0, 1) unless given it)."""
    for j in range(y.shape[1]):
        col = y[:, j].double()
        known = col[~torch.isnan(col)]
        if len(known) < 2:
            continue
        mean, sd = float(known.mean()), float(known.std(unbiased=False))
        c, s = float(center[j]), float(scale[j])
        if abs(mean - c) > 3 * s or (sd > 0 and not 0.1 * s <= sd <= 10 * s):  # constant targets: no spread to fit
            warnings.warn(f"fit: the known targets (mean {mean:.4g}, sd {sd:.4g}) lie far from the model's prior "
                          f"N({c:g}, {s:g}^2): build it with target_center=({mean:.4g},), target_scale=("
                          f"{sd if sd > 0 else 1.0:.4g},) (affinevae.models.semisupervised.target_prior_options(targets))",
                          UserWarning, stacklevel=user_stacklevel())
            return


def _check_image_size(data, x: Tensor, model: LatentModel, where: str) -> None:
    """Refuse images smaller than :data:`affinevae.data.inputs.MIN_IMAGE_SIZE` on a side, as ``train`` does
    (:func:`affinevae.data.inputs.check_image_size`, the one rule): ``x`` is the (N, C, H, W) tensor
    made of ``data`` as given to :func:`fit` (an :class:`ImageSet` is named by its ``source``). 1-D
    signals (a model of image shape (C, 1, L)) pass: their length is checked when they are read."""
    if is_signal_shape(model.config.image_shape):
        return
    source = data.source if isinstance(data, ImageSet) else ""
    check_image_size(x.shape, source if source not in ("", "array") else where)


def _save_checkpoint(run: Run, model: LatentModel, opt: torch.optim.Optimizer, epoch: int,
                     cfg: TrainConfig, meta: dict[str, Any]) -> None:
    weights, optim = run.state_files(epoch)
    save_tensors(weights, model.state_dict())
    state = {"optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
             "model_training_state": model.training_state()}
    device = model.device
    if device.type == "cuda":  # the model's draws on a GPU come from that device's generator
        state["cuda_rng"] = torch.cuda.get_rng_state(device)

    buffer = io.BytesIO()
    torch.save(state, buffer)
    raw = buffer.getvalue()  # its digest goes to train.json: a byte changed on the disk is found on resume

    def write_state(tmp):
        Path(tmp).write_bytes(raw)
        fault_point("checkpoint", epoch)  # a test's kill -9 here leaves a stray temporary
    atomic_write(optim, write_state)
    save_model(model, run.path)
    write_json(run.train_file, {"train_config": cfg.to_dict(), "epochs_done": epoch,
                                "checkpoint": weights.name, "optimizer": optim.name,
                                "optimizer_sha256": hashlib.sha256(raw).hexdigest(), **meta})
    _drop_former_states(run, (weights, optim))


def _drop_former_states(run: Run, keep: tuple[Path, Path]) -> None:
    """Remove every checkpoint and optimizer-state file of ``run`` but ``keep`` (the ones ``train.json``
    names): after a checkpoint is written, and on a resume after a stop between the two."""
    names = {p.name for p in keep}
    for old in run.all_state_files():
        if old.name not in names:
            old.unlink(missing_ok=True)


def data_fingerprint(x: Tensor, y: Optional[Tensor] = None) -> str:
    """A 32-hex-digit BLAKE2b digest of training images ``x`` (N, C, H, W) and labels ``y`` (N,)
    (shapes, dtypes and values): ``train.json`` keeps it so that a resume on other data is refused."""
    h = hashlib.blake2b(digest_size=16)
    for t in (x, y):
        if t is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(t.detach().cpu().numpy())
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _check_same_data(run: Run, n: int, fingerprint: str) -> None:
    """Refuse (one line) to resume ``run`` on training data other than those it was trained on."""
    info = run.info
    old_fp, old_n = info.get("data_fingerprint"), info.get("n_train")
    if (old_fp is None or old_fp == fingerprint) and (old_n is None or int(old_n) == n):
        return  # the same data (a checkpoint of an earlier version records only the count)
    spec = ", ".join(f"max_angle {math.degrees(float(info[k])):g} deg" if k == "max_angle" else f"{k} {info[k]!r}"
                     for k in ("data", "n", "key", "labels", "binarize", "max_angle", "stretch", "fill_nan")
                     if info.get(k) is not None)
    used = ", ".join(f"{k} {run.train_config[k]!r}" for k in ("seed", "val_split") if k in run.train_config)
    what = (f"{old_n} training images, these are {n}" if old_n is not None and int(old_n) != n else
            f"{n} training images, but other pixels or labels: their fingerprint differs")
    raise AffineVAEError(f"{run.train_file}: the run was trained on other data ({what}"
                         + "".join(f"; {part}" for part in (spec, used) if part)
                         + "); resume with the same data options (--data, -n, --key, --labels, --binarize, "
                         "--max-angle, --stretch, --fill-nan, --seed, --val-split) or choose another --out")


def _differences(old: dict, new: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for every key whose value differs between two config dicts, a
    nested dict's (an AVAE's ``inner_config``) key by key as ``inner_config.KEY``; '(unset)' for a
    missing key."""
    out = []
    for k in dict.fromkeys([*old, *new]):
        a, b = old.get(k, "(unset)"), new.get(k, "(unset)")
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_differences(a, b, f"{prefix}{k}."))
        elif a != b:
            out.append((f"{prefix}{k}", a, b))
    return out


def _load_checkpoint(run: Run, model: LatentModel, opt: torch.optim.Optimizer, n: int, fingerprint: str) -> int:
    saved = run.model_description
    if saved.get("model") != model.family:
        raise AffineVAEError(f"{run.path}: the checkpoint was made for a different model ({saved.get('model')}, not "
                             f"{model.family}); resume with the same options or choose another --out")
    old, new = type(model.config).loaded_dict(saved.get("config") or {}), model.config.to_dict()
    if old != new:
        keys = _differences(old, new)
        derived = type(model.config).resolved_fields()  # listed after the options they follow from
        keys.sort(key=lambda key: key[0].split(".")[0] in derived)
        diff = "; ".join(f"{k} {a} there, {b} here" for k, a, b in keys[:3])
        more = f"; and {len(keys) - 3} more" if len(keys) > 3 else ""
        raise AffineVAEError(f"{run.path}: the checkpoint was made for a different {model.family} model ({diff}{more}); "
                             "resume with the same options or choose another --out")
    weights_file, optim_file = run.checkpoint or (None, None)
    if weights_file is None:
        raise AffineVAEError(f"{run.train_file}: names no checkpoint; resume is not possible (choose another --out)")
    _check_same_data(run, n, fingerprint)
    weights = load_tensors(weights_file, "checkpoint")
    detail = state_mismatch({k: tuple(v.shape) for k, v in model.state_dict().items()},
                            {k: tuple(v.shape) for k, v in weights.items()})
    if detail:  # another model's checkpoint put in its place: say how it differs
        raise AffineVAEError(f"{weights_file}: does not match the {model.family} model being resumed ({detail}); "
                             "resume with the run's own checkpoint, or choose another --out")
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise AffineVAEError(f"{weights_file}: does not match the model ({str(exc).splitlines()[0]})") from None
    if not optim_file.is_file():
        raise AffineVAEError(f"{optim_file}: optimizer state not found; resume is not possible (choose another --out)")
    try:
        raw = optim_file.read_bytes()
    except OSError as exc:
        raise AffineVAEError(f"{optim_file}: cannot read the optimizer state ({exc.strerror or exc})") from None
    recorded = run.optimizer_digest
    damaged = AffineVAEError(f"{optim_file}: damaged optimizer state: its bytes no longer match the SHA-256 "
                             f"{run.train_file.name} recorded (a changed or failing disk?); restore the file, or "
                             "train again without --resume")
    intact = recorded is None or hashlib.sha256(raw).hexdigest() == recorded  # (runs before it: no digest)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on a foreign pickle: the error below says it
            state = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
        saved = state["optimizer"]["state"]
        params = [p for g in opt.param_groups for p in g["params"]]
        for i, moments in saved.items():  # Adam's moments must have the model's shapes (another model's file)
            if not 0 <= int(i) < len(params):
                raise AffineVAEError(f"{optim_file}: optimizer state of another model (parameter {i}; the model has "
                                     f"{len(params)})")
            for name, value in moments.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and tuple(value.shape) != tuple(params[int(i)].shape):
                    raise AffineVAEError(f"{optim_file}: optimizer state of another model (parameter {i} {name} has "
                                         f"shape {tuple(value.shape)}, the model's {tuple(params[int(i)].shape)})")
        if not intact:  # (another model's file is said above, as such); nothing is loaded from it
            raise damaged
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        device = model.device
        if device.type == "cuda" and isinstance(state.get("cuda_rng"), torch.Tensor):  # not on another device type
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        extra = state.get("model_training_state", {})  # absent in checkpoints of earlier versions
        if not isinstance(extra, dict) or not all(isinstance(v, torch.Tensor) for v in extra.values()):
            raise TypeError("model_training_state is not a dict of tensors")
    except (MemoryError, AffineVAEError):
        raise
    except Exception as exc:  # noqa: BLE001 - an unpickling error, EOF, a wrong structure: a bad user file
        changed = f"; nor do its bytes match the SHA-256 {run.train_file.name} recorded" if not intact else ""
        raise AffineVAEError(f"{optim_file}: corrupt optimizer state ({exc.__class__.__name__}); "
                             f"it is never unpickled beyond tensors and numbers{changed}") from None
    model.load_training_state(extra)
    return int(run.epochs_done or 0)


@contextlib.contextmanager
def compiled(model: LatentModel, enabled: bool = True):
    """Context manager: ``model``'s :meth:`~LatentModel.compile_targets` run compiled
    (``torch.compile``, static shapes) inside the block and eagerly again after it.

    A failure of the compiler inside the block (no C++ compiler, an unsupported op) becomes a
    one-line :class:`AffineVAEError`.
    """
    modules = list(model.compile_targets()) if enabled else []
    for m in modules:
        m.compile(dynamic=False)
    try:
        yield model
    except Exception as exc:
        if modules and type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AffineVAEError(f"torch.compile failed ({type(exc).__name__}: {first[:200]}); "
                                 "train without --compile (compile=False)") from None
        raise
    finally:
        for m in modules:  # nn.Module.compile has no public inverse: drop the compiled call
            m._compiled_call_impl = None


@contextlib.contextmanager
def full_kl_weights_after(model: LatentModel) -> Iterator[None]:
    """Context in which the trainer may scale the model's KL weights (KL warm-up); on leaving
    it, also by an exception or an interrupt, the model's factor is 1 again."""
    try:
        yield
    finally:
        model.set_kl_factor(1.0)


def kl_weight(step: int, total_steps: int, warmup: float) -> float:
    """Factor on the KL term at optimiser step ``step`` (0-based, counted over the whole run) of
    ``total_steps``: ``min(1, step / (warmup * total_steps))`` for ``warmup`` > 0 (0 at the first
    step, 1 from ``warmup * total_steps`` on), else 1. Dimensionless; multiplies the model's ``beta``."""
    span = warmup * total_steps
    return 1.0 if span <= 0 else min(1.0, step / span)


def _epoch_lr(cfg: TrainConfig, epoch: int) -> float:
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    return cfg.lr


@torch.no_grad()
def evaluate(model: LatentModel, x: Tensor, y: Optional[Tensor], batch_size: int = 512, seed: int = 0,
             bf16: bool = False) -> dict[str, float]:
    """Mean loss, recon and kl (nats/image) of ``model`` on (N, C, H, W) ``x``, and each named extra
    term the model adds outside training (the AVAE's 'pose_head'; they are in ``loss``), by name;
    seeded sampling noise."""
    totals = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
    device = model.device
    with module_mode(model), seeded(seed, device):
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device)
            yb = None if y is None else y[i:i + batch_size].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = model(xb, yb)
            for k in ("loss", "recon", "kl"):
                totals[k] += float(getattr(out, k)) * len(xb)
            for k, v in out.terms.items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(xb)
    return {k: v / len(x) for k, v in totals.items()}


def json_meta(meta: dict) -> dict:
    """``meta`` as ``train.json`` will hold it: numpy scalars as Python numbers (np.int64 from a count),
    checked JSON-able before any training (a one-line :class:`AffineVAEError` naming the entry otherwise)."""
    def plain(value):
        out = plain_scalar(value)
        if out is value:  # not a numpy scalar: not JSON
            raise TypeError(type(value).__name__)
        return out
    out = {}
    for key, value in meta.items():
        try:
            out[str(key)] = json.loads(json.dumps(value, default=plain, allow_nan=True))
        except (TypeError, ValueError) as exc:
            raise AffineVAEError(f"fit: meta[{key!r}] cannot be saved in train.json (a {exc} is not JSON)") from None
    return out


def fit(model: LatentModel, data: ImageSet | Tensor | tuple, config: Optional[TrainConfig] = None,
        out: Optional[str | Path] = None, val: Optional[ImageSet | Tensor | tuple] = None, resume: bool = False,
        callbacks: Sequence[Callable[[dict], None]] = (), meta: Optional[dict[str, Any]] = None,
        check_learning: bool = True, on_start: Optional[Callable[[int], None]] = None) -> FitResult:
    """Train ``model`` on ``data`` and return a :class:`FitResult`.

    The model is trained in place and left in eval mode (ready to encode); the caller's global random
    state is left as it was (the run's own draws come from ``config.seed``).

    Args:
        model: any registered model family.
        data: an :class:`ImageSet`, an (N, C, H, W) tensor/array, or an ``(images, labels)`` tuple.
        config: :class:`TrainConfig`, or a dict of its options (defaults if None).
        out: run directory for checkpoints, ``metrics.jsonl`` and the final model (optional).
        val: validation data; if None, ``config.val_split`` of ``data`` is held out (seeded).
        resume: continue from the last checkpoint in ``out``; gives the same weights as an
            uninterrupted run (on CPU). Refused when the training data (after the validation
            split) differ from the run's: ``train.json`` keeps their count and
            :func:`data_fingerprint`.
        callbacks: called with each epoch's metrics dict.
        on_start: called once with the number of training images (after the validation split) when the
            checks are passed (a resume's checkpoint and data included) and training is about to start,
            before the model prepares it (an rVAE's anchors:
            :meth:`~affinevae.models.base.LatentModel.fit_context`); not when nothing is left to train.
        check_learning: after a fit that trained, warn (one ``UserWarning`` each) of what the model
            failed to learn on (up to 2 000 of) its training images, as ``train`` says it
            (:func:`affinevae.analysis.quality.learning_warnings`: every content latent unused, a
            full-circle model's angles all alike, classes left empty); about a second per 2 000 images.
        meta: extra JSON-able facts stored in ``train.json``: the data spec that
            :meth:`affinevae.Run.data` loads again (``data``, e.g. 'rotated-mnist' or a file, and
            ``n``, ``key``, ``labels``, ``binarize``, ``max_angle`` in radians) and anything else.
            An :class:`~affinevae.data.ImageSet` ``data`` read from a file adds its
            ``meta['pixel_scaling']``, which :meth:`affinevae.Run.data` then applies to other data;
            float or signed-integer images given in their own units outside [0, 1] (an array or tensor, not
            an ImageSet) add :data:`~affinevae.data.imageset.RAW_UNITS`, so other such data are read unscaled too.

    Raises:
        AffineVAEError: bad data or options (images smaller than
            :data:`affinevae.data.inputs.MIN_IMAGE_SIZE` pixels on a side are refused as ``train``
            refuses them; 1-D signals are not images); :class:`TrainingDiverged` on a non-finite loss.
    """
    if not isinstance(model, LatentModel):
        raise AffineVAEError(f"fit: model must be a model of affinevae.build_model, got {type(model).__name__}")
    config = as_config(config, TrainConfig, "fit")
    if resume and out is None:
        raise AffineVAEError("fit: resume=True needs the run directory to resume (out=...)")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise AffineVAEError(f"{out}: a file, not a run directory (out= names a folder for the run)")
    if meta is not None and not isinstance(meta, dict):
        raise AffineVAEError(f"fit: meta must be a dict, got {type(meta).__name__}")
    if meta is not None:
        meta = json_meta(meta)
    if callable(callbacks):  # one callback given as it is
        callbacks = (callbacks,)
    if isinstance(callbacks, (str, bytes)) or not hasattr(callbacks, "__iter__"):
        raise AffineVAEError(f"fit: callbacks must be a list of callables (each called with the epoch's metrics "
                             f"dict), got {type(callbacks).__name__}")
    callbacks = tuple(callbacks)
    if not all(callable(cb) for cb in callbacks):
        raise AffineVAEError("fit: every callback must be callable (called with each epoch's metrics dict)")
    if on_start is not None and not callable(on_start):
        raise AffineVAEError(f"fit: on_start must be callable (called with the number of training images), "
                             f"got {type(on_start).__name__}")
    cfg = config or TrainConfig()
    scaling = (getattr(data, "meta", None) or {}).get("pixel_scaling")
    if scaling is not None:  # an ImageSet read from a file: the run keeps how its pixels were scaled
        meta = {"pixel_scaling": scaling, **(meta or {})}
    kind = (getattr(data, "meta", None) or {}).get("kind")
    if kind is not None:  # a patch set (or spectra): Run.warn_unlike tells other images from it
        meta = {"data_kind": kind, **(meta or {})}
    rank, world = init_distributed(cfg.device)
    device = resolve_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    run = Run(out) if out is not None else None
    x, y = _as_tensors(data, model)
    if len(x) and bool((x == x.reshape(-1)[0]).all()):  # the learning check blamed the noise
        raise AffineVAEError(f"training images: every pixel of all {len(x)} images holds the same value "
                             f"({float(x.reshape(-1)[0]):g}): there is nothing to learn")
    kind = "" if isinstance(data, ImageSet) or not len(x) else _pixel_kind(data[0] if isinstance(data, tuple) else data)
    if kind in ("f", "i", "u"):  # images as given (not an ImageSet): in their own units
        lo, hi = float(x.min()), float(x.max())
        if kind != "u" and "pixel_scaling" not in (meta or {}) and not (lo >= 0.0 and hi <= 1.0):
            # other data (Run.data, the commands) are read in those units too, not min-max scaled as such a
            # file outside [0, 1] otherwise is (unsigned files keep their rule)
            meta = {"pixel_scaling": RAW_UNITS.to_dict(), **(meta or {})}
        elif kind == "u" and hi > 1.0 and rank == 0:
            warnings.warn(f"fit: the training images are unsigned integers (up to {hi:g}) used as they are; "
                          "files of them are read divided by their type's maximum (255 for uint8), so divide the "
                          "array likewise for a model that reads them alike", UserWarning, stacklevel=user_stacklevel())
    if getattr(model, "semi_supervised", False) and y is not None and len(y) and (
            bool(torch.isnan(y).all()) if y.is_floating_point() else bool((y < 0).all())):
        raise AffineVAEError(f"model '{model.family}' is semi-supervised, but no training image has a known "
                             + ("target (all NaN)" if y.is_floating_point() else "label (all -1)")
                             + ": give some, or train its unsupervised family")
    prior = getattr(model, "target_prior", None)
    if prior is not None and y is not None and y.is_floating_point() and rank == 0:
        warn_targets_off_prior(y, *prior(y))
    if getattr(model, "semi_supervised", False) and y is None:  # as train --labels / --targets: never silently none
        raise AffineVAEError(f"model '{model.family}' is semi-supervised: the training images need labels (-1 for "
                             "unknown) or targets (NaN for unknown), e.g. fit(model, (images, labels))")
    _check_image_size(data, x, model, "training images")
    data_index = torch.arange(len(x))  # position of each training image in ``data`` (the model's ``index``)
    if val is not None:
        xv, yv = _as_tensors(val, model, "validation images")  # the model's shape: the size is checked above
    elif cfg.val_split > 0 and len(x) >= 10:
        perm = torch.as_tensor(np.random.default_rng([cfg.seed, 7]).permutation(len(x)))
        n_val = max(1, int(round(cfg.val_split * len(x))))
        if n_val >= len(x):
            raise AffineVAEError(f"val_split {cfg.val_split:g} of {len(x)} images holds out all of them: no training "
                                 "images are left (a smaller --val-split, or more images)")
        vi, ti = perm[:n_val], perm[n_val:]
        xv, yv = x[vi], (None if y is None else y[vi])
        x, y = x[ti], (None if y is None else y[ti])
        data_index = ti
    else:
        xv, yv = None, None
    model.to(device).train()
    if device.type == "cpu" and len(x):  # before anything is written
        check_training_memory(model, x, y, data_index, min(cfg.batch_size, len(x)))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # a run directory this fit makes (absent or empty before) is removed again if the fit stops before
    # its first checkpoint (a loss that diverges in epoch 1, an interrupt): nothing to resume, and a
    # leftover would make the same command refuse its --out
    existed = run is not None and run.path.exists()
    fresh = run is not None and rank == 0 and cfg.checkpoint and not (existed and any(run.path.iterdir()))
    with contextlib.ExitStack() as stack:
        if run is not None and rank == 0:
            stack.enter_context(RunLock(run.path))  # a second process on the same run directory refuses
        # from here this process holds the run: a failure cleans up what it made, still under the lock (a
        # fit refused by another's lock above leaves that process's directory alone)
        try:
            # the draws of the fit (noise, dropout) are seeded by cfg.seed on the CPU and the model's
            # device, and the caller's random state is restored on leaving
            with seeded(cfg.seed, device):
                result = _fit_locked(model, cfg, run, x, y, xv, yv, data_index, opt, resume, rank, world, device,
                                     callbacks, meta, on_start)
                if check_learning and rank == 0 and result.epochs_trained:
                    from .analysis.quality import learning_warnings
                    from .data.patches import lattice_patches

                    lattice = lattice_patches(getattr(data, "meta", None) or {})  # one grain's atoms share an angle
                    for line in learning_warnings(model, x.cpu().numpy(), seed=cfg.seed, lattice=lattice, python=True):
                        warnings.warn(f"fit: {line}", UserWarning, stacklevel=user_stacklevel())
            return result
        except BaseException:
            if fresh and run.path.is_dir() and not run.has_training:
                for child in (run.path.iterdir() if existed else [run.path]):  # an empty directory given stays
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            raise


def training_step_bytes(model: LatentModel, x: Tensor, y: Optional[Tensor] = None,
                        index: Optional[Tensor] = None) -> float:
    """Bytes a training step of ``model`` keeps for its backward pass, per image.

    Measured, not guessed: a copy of the model (so no state, RNG draw or pose cache of the
    model changes) runs a training forward pass on a copy of the first image of ``x`` (N, C, H,
    W), and every tensor autograd saves for the backward pass is counted once per storage (a
    view by its own bytes, at most its storage's), parameters left out. A step on B images keeps about B times that (a little less: a few
    saved tensors do not grow with B; the peak is somewhat higher: gradients, temporaries).
    ``y`` (N,) labels and ``index`` (N,) dataset positions as :func:`fit` passes them.
    """
    probe = copy.deepcopy(model).train()
    params = {p.untyped_storage().data_ptr() for p in probe.parameters()}
    device = next(probe.parameters()).device
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params:  # a view counts its own bytes, at most its storage's (an expanded tensor)
            seen[ptr] = max(seen.get(ptr, 0), min(storage.nbytes(), t.numel() * t.element_size()))
        return t

    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        probe(x[:1].clone().to(device), None if y is None else y[:1].clone().to(device),
              index=None if index is None else index[:1].clone())
    return float(sum(seen.values()))


def check_training_memory(model: LatentModel, x: Tensor, y: Optional[Tensor], index: Optional[Tensor],
                          batch_size: int) -> None:
    """Refuse in one line (:class:`AffineVAEError`, naming ``--batch-size``) a training step of
    ``batch_size`` images whose backward pass, with the model's weights, gradients and Adam state (4 copies of
    its parameters and buffers), would keep more than the memory available (:func:`training_step_bytes`,
    :func:`affinevae.limits.memory_limit`), before it is tried.

    ``x`` (N, C, H, W) the training images (only the first is run, on a copy of the model);
    ``y`` their (N,) labels or (N, M) targets, or None; ``index`` (N,) their positions in the data
    given to :func:`fit`, or None: as :func:`fit` passes them to the model."""
    per_image = training_step_bytes(model, x, y, index)
    shape = "x".join(str(int(v)) for v in x.shape[1:])
    # beside the model's weights, gradients and Adam's two moments (4 copies, as build_model plans them): the
    # step and the model were each checked alone, so a training needing both past the limit went ahead
    state = 4 * sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    check_allocation(batch_size * per_image + state,
                     f"a training step of {batch_size} {shape} images ({format_size(per_image)} each kept for the "
                     f"backward pass; a smaller --batch-size needs less) beside the model's {format_size(state)} "
                     "(weights, gradients, optimizer state)", f"--batch-size {batch_size}")


def kept_checkpoint(run_dir: Optional[Path], epochs_done: int) -> str:
    """The clause a :class:`TrainingDiverged` message adds when the run directory holds a checkpoint
    of an earlier epoch (``epochs_done`` > 0), else ''."""
    return f"; the last good checkpoint is kept in {run_dir}" if run_dir is not None and epochs_done > 0 else ""


#: Pixel values beyond this (in absolute value) make :func:`divergence_advice` name the data's scale.
LARGE_PIXELS = 100.0


def divergence_advice(x: torch.Tensor) -> str:
    """What a :class:`TrainingDiverged` message advises for a batch of training images ``x`` (B, C, H, W)
    (or (B, C, L) signals): the data's scale when its values reach beyond :data:`LARGE_PIXELS` (raw
    camera counts, say 0-4095, that the likelihoods' unit-scale noise does not suit), else a lower
    learning rate."""
    top = float(x.abs().max()) if x.numel() else 0.0
    if top > LARGE_PIXELS:
        return (f"the images' values reach {top:.4g}: scale them to about [0, 1] (e.g. divide 12-bit counts by 4095), "
                "or try a lower learning rate")
    return "try a lower learning rate"


def fault_point(point: str, epoch: int) -> None:
    """Test hook: ``kill -9`` this process at ``point`` ('epoch': inside epoch ``epoch``, after its first
    step; 'checkpoint': while writing that epoch's optimizer state, before the rename) when the
    environment variable ``AFFINEVAE_FAULT`` is ``POINT:EPOCH``. Does nothing otherwise."""
    if os.environ.get("AFFINEVAE_FAULT") == f"{point}:{epoch}":
        os.kill(os.getpid(), signal.SIGKILL)


#: Training options a resume may change, each said in one warning when it does (the seed orders the
#: remaining epochs' batches; the data and the model may not change: :func:`_load_checkpoint` refuses them).
RESUME_NOTED = ("lr", "batch_size", "weight_decay", "schedule", "kl_warmup", "seed", "bf16", "grad_clip")


def _fit_context(model: LatentModel, x: Tensor, y: Optional[Tensor], index: Tensor, seed: int,
                 store: Optional[TargetStore]):
    """``model.fit_context`` with the run's target ``store`` when the family's hook takes one (a
    family written before the store keeps its four-argument hook)."""
    if store is not None and "store" in inspect.signature(model.fit_context).parameters:
        return model.fit_context(x, y, index, seed, store=store)
    return model.fit_context(x, y, index, seed)


def _fit_locked(model, cfg, run, x, y, xv, yv, data_index, opt, resume, rank, world, device, callbacks,
                meta, on_start=None) -> "FitResult":
    run_dir = run.path if run is not None else None
    start = 0
    history: list[dict] = []
    fingerprint = data_fingerprint(x, y) if run is not None else None
    if run is not None and resume and run.has_training:
        before = run.train_config
        start = _load_checkpoint(run, model, opt, len(x), fingerprint)
        named = run.checkpoint if rank == 0 else None
        if named is not None:  # a stop between train.json and the clean-up left the former checkpoint: gone now
            _drop_former_states(run, named)
        history = run.metrics[:start]
        if rank == 0 and len(history) < start:  # metrics.jsonl deleted or cut: its records are not in the checkpoint
            warnings.warn(f"{run.metrics_file}: holds the records of {len(history)} of the {start} epochs trained; "
                          f"epochs {len(history) + 1}-{start} stay missing from it (and from the loggers' curves)")
        for g in opt.param_groups:  # the optimizer file holds the run's; a weight decay given now applies
            g["weight_decay"] = cfg.weight_decay
        changed = [f"{k} {getattr(cfg, k)!r} (the run used {before[k]!r})" for k in RESUME_NOTED
                   if k in before and before[k] != getattr(cfg, k)]
        if rank == 0 and start >= cfg.epochs:
            warnings.warn(f"{run_dir}: already trained for {start} epoch{'' if start == 1 else 's'} (epochs {cfg.epochs}): nothing to train; "
                          "give more epochs to continue it")
        elif rank == 0 and changed:
            warnings.warn(f"{run_dir}: resuming with {', '.join(changed)}: the epochs from here on differ from "
                          "an uninterrupted run's")
    elif run is not None and resume and is_interrupted_start(run.path):  # stopped in its first checkpoint
        if rank == 0:
            warnings.warn(f"{run_dir}: holds what a training stopped during its first checkpoint left (no train.json); "
                          "training from the start")
            for name in os.listdir(run.path):  # the run's own files only (a lock, temporaries and others stay)
                if is_run_file(name) and name not in (LOCK_FILE, FIT_TARGETS):  # (the targets are the data's)
                    (run.path / name).unlink(missing_ok=True)
        if world > 1:
            dist.barrier()
    elif run is not None and is_run_directory(run.path):  # a saved model (resume: nothing to resume)
        what = "a training run" if run.has_training else "a saved model"
        raise AffineVAEError(f"{run_dir} already holds {what}; " + ("pass resume=True (--resume) to continue it or "
                             if run.has_training else "") + "choose another output directory")
    if start == 0:
        model.init_from_data(x)
    if run_dir is not None and rank == 0 and start < cfg.epochs:  # (nothing to train: no file is touched)
        run.write_metrics(history)
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    n = len(x)
    per_rank = n // world if world > 1 else n
    steps = max(1, math.ceil(per_rank / cfg.batch_size))
    meta = dict(meta or {})
    meta.setdefault("n_train", n)
    if fingerprint is not None:
        meta["data_fingerprint"] = fingerprint
    panel = (x, y) if xv is None else (xv, yv)
    if on_start is not None and rank == 0 and start < cfg.epochs:
        on_start(len(x))
    # the targets a model derives from the data as the fit starts are kept in the run directory, and a
    # resume reads them (the same targets the weights learned, even under another seed)
    store = None if run is None else TargetStore(run.path / FIT_TARGETS, fingerprint, reuse=resume,
                                                 writable=rank == 0)
    with compiled(model, cfg.compile), full_kl_weights_after(model), \
            (_fit_context(model, x, y, data_index, cfg.seed, store) if start < cfg.epochs
             else contextlib.nullcontext()), \
            Tracker.start(cfg, model, run_dir, *panel, history=history, enabled=rank == 0) as tracker:
        for epoch in range(start + 1, cfg.epochs + 1):
            lr = _epoch_lr(cfg, epoch - 1)
            for g in opt.param_groups:
                g["lr"] = lr
            order = torch.as_tensor(np.random.default_rng([cfg.seed, epoch]).permutation(n))
            if world > 1:
                order = order[: per_rank * world][rank::world]
            versions = [p._version for p in model.parameters()]
            started = model.on_epoch_start(epoch, x, y, (epoch - 1) * steps, cfg.seed) or {}
            for p, version in zip(model.parameters(), versions):
                if p._version != version:  # set anew by the hook (a data-driven start): its Adam moments are stale
                    opt.state.pop(p, None)
            sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
            weight_sum = 0.0
            terms: dict[str, float] = {}
            seen = 0
            t0 = time.perf_counter()
            bar = None
            if rank == 0 and cfg.show_progress():
                from tqdm.auto import tqdm

                bar = tqdm(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", leave=cfg.keeps_progress(), dynamic_ncols=True)
            for b in range(steps):
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                if len(idx) == 0:
                    continue
                xb = x[idx].to(device, non_blocking=True)
                yb = None if y is None else y[idx].to(device)
                w = kl_weight((epoch - 1) * steps + b, cfg.epochs * steps, cfg.kl_warmup)
                weight_sum += w
                model.set_kl_factor(w)  # the model weights each of its KLs by it (1 once warmed up)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                    outb = net(xb, yb, index=data_index[idx])
                loss = outb.loss
                if b == 0:
                    fault_point("epoch", epoch)
                if not torch.isfinite(loss):
                    if bar is not None:
                        bar.close()
                    raise TrainingDiverged(f"non-finite loss ({float(loss.detach())}) at epoch {epoch}, batch {b + 1}"
                                           f"{kept_checkpoint(run_dir, start + len(history))}; "
                                           f"{divergence_advice(xb)}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                for k in sums:
                    sums[k] += float(getattr(outb, k).detach()) * len(idx)
                for k, v in outb.terms.items():  # named extra loss terms: this rank's mean
                    terms[k] = terms.get(k, 0.0) + float(v.detach()) * len(idx)
                seen += len(idx)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{sums['loss'] / seen:.2f}")
            elapsed = time.perf_counter() - t0
            bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
            if bad and bar is not None:
                bar.close()
            if bad:  # the last step's update overflowed (e.g. a huge learning rate): never checkpoint that
                raise TrainingDiverged(f"non-finite weights ({bad[0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}) "
                                       f"after epoch {epoch}{kept_checkpoint(run_dir, start + len(history))}; "
                                       f"{divergence_advice(xb)}")
            if world > 1:
                t = torch.tensor([sums["loss"], sums["recon"], sums["kl"], float(seen)], dtype=torch.float64, device=device)
                dist.all_reduce(t)
                sums = {"loss": float(t[0]), "recon": float(t[1]), "kl": float(t[2])}
                seen = int(t[3])
            record: dict[str, Any] = {"epoch": epoch, "lr": lr, "images_per_s": seen / max(elapsed, 1e-9),
                                      **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()},
                                      **{f"train_{k}": v / max(seen // world, 1) for k, v in terms.items()}, **started}
            if cfg.kl_warmup > 0:
                record["kl_weight"] = weight_sum / steps
            if xv is not None:
                record.update({f"val_{k}": v for k, v in evaluate(model, xv, yv, seed=cfg.seed + epoch, bf16=cfg.bf16).items()})
            if bar is not None:  # a kept bar (a notebook) ends as the epoch's line: its losses
                bar.set_postfix({"loss": f"{record['train_loss']:.2f}",
                                 **({"val loss": f"{record['val_loss']:.2f}"} if "val_loss" in record else {})})
                bar.close()
            record.update(model.on_epoch_end(epoch, run_dir if rank == 0 else None) or {})
            history.append(record)
            if rank == 0 and run is not None:
                run.write_metrics(history)  # atomically: a kill never leaves a torn line
                if cfg.checkpoint:
                    _save_checkpoint(run, model, opt, epoch, cfg, meta)
            tracker.epoch(record, model)
            for cb in callbacks:
                cb(record)
            if world > 1:
                dist.barrier()
    if rank == 0 and run_dir is not None and not cfg.checkpoint and start < cfg.epochs:
        save_model(model, run_dir)
    model.eval()
    return FitResult(model=model, history=history, run_dir=run_dir, n_train=n, n_val=0 if xv is None else len(xv),
                     epochs_trained=max(0, cfg.epochs - start))
