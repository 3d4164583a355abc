"""Output-path safety: one policy every writing command applies to its ``--out`` before any work.

:func:`check_output` is called by each command with its output path(s), its input paths and its
kind of output, after its arguments are validated and before anything is read or written. It
refuses, with one line:

- a file output that is an existing directory, that is one of the command's inputs, that is a
  file a run or model directory owns (``model.json``, ``model.safetensors``, ``train.json``,
  ``metrics.jsonl``, ``poses.npz``, checkpoints, the lock), or that exists already (unless
  ``force``: ``--force``);
- a directory output that is a run or model directory (unless ``resume``: ``train --resume``
  continues its own run), that exists and is not a directory, or that holds other files (unless
  ``force``);
- an output whose directory cannot be written (read-only, not a directory).

:class:`RunLock` holds an exclusive ``flock`` on ``.affinevae.lock`` inside a run directory while
a process writes it, so that a second ``train`` on the same ``--out`` refuses instead of
interleaving its epochs. Disk-full and other ``OSError`` while writing are turned into one line
by :func:`affinevae.io.atomic_write`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Optional, Sequence

from .errors import AffineVAEError
from .io import CSV_HPARAMS, CSV_METRICS, FIT_TARGETS, MODEL_JSON, MODEL_WEIGHTS, NAME_MAX, clean_stale_temporaries
from .pose.record import POSES_FILE
from .runs import METRICS, TRAIN_JSON

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock
    fcntl = None

__all__ = ["check_output", "check_outputs", "is_run_directory", "is_run_file", "is_interrupted_start", "RunLock", "run_is_locked",
           "LOCK_FILE", "RUN_FILES", "LOGGER_FILES"]

#: The lock file inside a run directory held by the process writing it.
LOCK_FILE = ".affinevae.lock"
#: Names a run or model directory owns (besides the checkpoint patterns).
RUN_FILES = (MODEL_JSON, MODEL_WEIGHTS, TRAIN_JSON, METRICS, POSES_FILE, LOCK_FILE, FIT_TARGETS)
#: Files a logger keeps in a run directory: no command's output may replace them there (a folder holding
#: only a file of that name is not a run's leftover: it may be the user's own).
LOGGER_FILES = (CSV_METRICS, CSV_HPARAMS)
_RUN_FILE_PATTERN = re.compile(r"^(checkpoint|optimizer)-e\d+\.(safetensors|pt)$")
_TEMP_PATTERN = re.compile(r"^\..+\.\d+\.[A-Za-z0-9_]+\.tmp$")


def is_run_directory(path: str | Path) -> bool:
    """True when ``path`` is a directory holding a run or a saved model (``model.json``,
    ``model.safetensors`` or ``train.json``)."""
    p = Path(path)
    return p.is_dir() and any((p / name).exists() for name in (MODEL_JSON, MODEL_WEIGHTS, TRAIN_JSON))


def is_interrupted_start(path: str | Path) -> bool:
    """True when directory ``path`` holds a trainer's checkpoint files (``checkpoint-eNNNN``,
    ``optimizer-eNNNN``) but no ``train.json``: a training stopped while writing its first checkpoint
    (``train.json`` is written last), which a resume starts again from scratch (a saved model never
    has checkpoint files)."""
    p = Path(path)
    if not p.is_dir() or (p / TRAIN_JSON).is_file():
        return False
    try:
        return any(_RUN_FILE_PATTERN.match(n) for n in os.listdir(p))
    except OSError:
        return False


def is_run_file(name: str) -> bool:
    """True when a file called ``name`` belongs to a run directory's own record."""
    return name in RUN_FILES or bool(_RUN_FILE_PATTERN.match(name))


def _resolved(path: str | Path) -> Path:
    return Path(os.path.abspath(os.path.realpath(os.fspath(path))))


def _input_paths(inputs: Iterable[Optional[str | Path]]) -> list[Path]:
    """Existing input paths (a ``file.h5:dataset`` spec counts by its file; comma lists by each part)."""
    out: list[Path] = []
    for item in inputs:
        if item is None:
            continue
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            p = Path(part)
            if not p.exists() and ":" in part:
                p = Path(part.rsplit(":", 1)[0])
            if p.exists():
                out.append(_resolved(p))
    return out


def _check_writable(path: Path, option: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable directory."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise AffineVAEError(f"{option} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AffineVAEError(f"{option} {path}: cannot write in {parent} (permission denied or read-only)")


def _foreign_entries(directory: Path) -> list[str]:
    """Entries of ``directory`` other than a lock and stale temporaries."""
    try:
        names = os.listdir(directory)
    except OSError as exc:
        raise AffineVAEError(f"{directory}: cannot read the directory ({exc.strerror})") from None
    return sorted(n for n in names if n != LOCK_FILE and not _TEMP_PATTERN.match(n))


def check_output(out: str | Path, *, kind: str = "file", inputs: Sequence[Optional[str | Path]] = (),
                 force: bool = False, resume: bool = False, option: str = "--out", resumable: bool = False,
                 model_dir: bool = False, probe_lock: bool = True) -> Path:
    """Refuse (one-line :class:`AffineVAEError`) an output path the command must not write; return it.

    Call it before any work is done (after the arguments are validated).

    Args:
        out: the output path as given.
        kind: ``'file'`` (one file: .npz, .png, .csv, .html ...) or ``'dir'`` (a directory the
            command creates and fills: a run, a model, a folder of maps).
        inputs: every path the command reads (data, labels, run directories, patch files ...;
            None entries are skipped). The output may be none of them, nor inside a run among them
            under a name the run owns.
        force: ``--force``: an existing plain file (kind 'file') or a non-empty directory that is
            not a run (kind 'dir') may be replaced.
        resume: ``train --resume``: ``out`` may be an existing training run.
        option: the option's name in messages.
        resumable: the command has ``--resume`` (``train``): the refusal of an existing training
            run suggests it.
        model_dir: the output is itself a run or model directory (``train``, ``amortise``): it may not
            lie inside another one (a run inside a run's folder).
        probe_lock: with ``resumable``, refuse a run another live process holds (:func:`run_is_locked`).
            False for the non-zero ranks of a distributed training, whose rank 0 takes the lock: a probe
            there would find it held (or, taking it for an instant, make rank 0's acquisition fail).
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    path = Path(out)
    if not str(out).strip():
        raise AffineVAEError(f"{option} is empty")
    long = next((part for part in path.parts if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX), None)
    if long is not None:  # the file system's refusal, before the work rather than at the write after it
        raise AffineVAEError(f"{option} {out}: the name {long[:40]}... has {len(long.encode('utf-8', 'surrogateescape'))} "
                             f"bytes, more than a file name may have ({NAME_MAX})")
    real = _resolved(path)
    for inp in _input_paths(inputs):
        if real == inp:
            raise AffineVAEError(f"{option} {out}: is an input of this command; choose another output path")
        if kind == "dir" and inp.is_relative_to(real) and force:
            raise AffineVAEError(f"{option} {out}: holds an input of this command ({inp}); choose another directory")
    if kind == "file":
        if path.is_dir():
            raise AffineVAEError(f"{option} {out}: is a directory; give a file name")
        if is_run_directory(real.parent) and (is_run_file(real.name) or real.name in LOGGER_FILES):
            raise AffineVAEError(f"{option} {out}: is a file of the run or model directory {real.parent}; "
                                 "choose another output path")
        if path.exists() or path.is_symlink():
            if not real.is_file():
                raise AffineVAEError(f"{option} {out}: exists and is not a regular file")
            if not force:
                raise AffineVAEError(f"{option} {out}: exists; pass --force to overwrite it")
        _check_writable(real, option)
        clean_stale_temporaries(real.parent, real.name)
        return path
    if path.exists() and not path.is_dir():
        raise AffineVAEError(f"{option} {out}: exists and is not a directory")
    if model_dir:
        holder = next((p for p in real.parents if is_run_directory(p)), None)
        if holder is not None:
            raise AffineVAEError(f"{option} {out}: lies inside the run or model directory {holder}; choose a folder "
                                 "outside it")
    if path.is_dir():
        if resumable and probe_lock and run_is_locked(path):  # a live training (it was called interrupted)
            raise AffineVAEError(f"{option} {out}: another affinevae process is writing this run (it holds the "
                                 "lock); wait for it to finish or choose another directory")
        interrupted = resumable and is_interrupted_start(path)
        if resume:
            if not (path / TRAIN_JSON).is_file():  # nothing to resume: a start from scratch, into what?
                if is_run_directory(path) and not interrupted:
                    raise AffineVAEError(f"{option} {out}: holds a saved model, not a training run ({TRAIN_JSON}); "
                                         "--resume continues a run written by train: choose another directory")
                if any(not is_run_file(n) for n in _foreign_entries(path)):
                    raise AffineVAEError(f"{option} {out}: holds no training run to resume (no {TRAIN_JSON}) but "
                                         "other files; choose another directory")
        elif interrupted:
            raise AffineVAEError(f"{option} {out}: holds what a training stopped during its first checkpoint left "
                                 f"(no {TRAIN_JSON}); pass --resume to train it from the start, or choose a new directory")
        elif is_run_directory(path):
            raise AffineVAEError(f"{option} {out}: already holds a run or model (model.json/train.json); choose a "
                                 "new directory" + (" or pass --resume to continue its training"
                                                    if resumable and (path / TRAIN_JSON).is_file() else ""))
        elif _foreign_entries(path) and not force:
            left = resumable and all(is_run_file(n) for n in _foreign_entries(path))
            raise AffineVAEError(f"{option} {out}: exists and is not empty; choose a new or empty directory "
                                 + ("(it holds what an interrupted training left: --resume continues it)" if left else
                                    "(or pass --force where the command offers it)"))
        if not os.access(path, os.W_OK | os.X_OK):
            raise AffineVAEError(f"{option} {out}: cannot write in this directory (permission denied or read-only)")
        clean_stale_temporaries(path)
    else:
        _check_writable(real, option)
    return path


def check_outputs(outs: Sequence[str | Path], **kwargs) -> list[Path]:
    """:func:`check_output` on each of several outputs of one command (same keyword arguments);
    two outputs may not be the same path."""
    seen: set[Path] = set()
    paths = []
    for out in outs:
        real = _resolved(out)
        if real in seen:
            raise AffineVAEError(f"{kwargs.get('option', '--out')} {out}: two outputs of this command are the same file")
        seen.add(real)
        paths.append(check_output(out, **kwargs))
    return paths


def run_is_locked(directory: str | Path) -> bool:
    """Whether a live process holds ``directory``'s :class:`RunLock` (False where there is no lock file, or
    no ``flock`` on this system). Probing takes the lock for an instant and gives it back."""
    lock = Path(directory) / LOCK_FILE
    if fcntl is None or not lock.is_file():
        return False
    try:
        fd = os.open(lock, os.O_RDWR)  # as RunLock opens it (flock on NFS wants it open for writing)
    except OSError:
        try:
            fd = os.open(lock, os.O_RDONLY)  # another user's lock file: readable, and flock works on it locally
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class RunLock:
    """Context manager: an exclusive, non-blocking ``flock`` on ``.affinevae.lock`` in ``directory``.

    Entering creates the directory if needed and raises a one-line :class:`AffineVAEError` when
    another process holds the lock (a second ``train`` on the same ``--out``). The lock is released
    on exit and by the kernel when the process dies (even by ``kill -9``); the empty lock file stays.
    Stale temporaries of a killed writer are removed once the lock is held.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._fd: Optional[int] = None

    def __enter__(self) -> "RunLock":
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise AffineVAEError(f"{self.directory}: cannot create the run's lock file ({exc.strerror})") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise AffineVAEError(f"{self.directory}: another affinevae process is writing this run "
                                     "(it holds the lock); wait for it to finish or choose another --out") from None
        self._fd = fd
        clean_stale_temporaries(self.directory)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
