"""Safe persistence: atomic writes, safetensors weights, JSON configs. Nothing is unpickled.

A leaf of the package: it imports nothing of affinevae but :mod:`affinevae.errors`. Loading a
model (which needs the model registry) is :func:`affinevae.runs.load`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
try:
    from safetensors import SafetensorError as SafetensorsError
except ImportError:  # pragma: no cover
    SafetensorsError = Exception
from safetensors.torch import load_file, save_file

from .errors import AffineVAEError, user_stacklevel

MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"
#: A training run's record (training config, progress, data); :data:`affinevae.runs.TRAIN_JSON`.
TRAIN_JSON = "train.json"
#: A saved model's copy of the data record of the run it was written from (:meth:`affinevae.runs.Run.copy_data_record`).
DATA_JSON = "data.json"
#: The per-image training targets a model derived from its training data (:class:`TargetStore`).
FIT_TARGETS = "fit_targets.safetensors"
#: The files the CSV logger keeps in a run directory (:class:`affinevae.tracking.CSVLogger`): per-epoch metrics and
#: the run's options.
CSV_METRICS, CSV_HPARAMS = "metrics.csv", "hparams.csv"


_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
#: Bytes a file name may have on the common file systems (ext4, XFS, APFS, NTFS: 255).
NAME_MAX = 255
#: Bytes :func:`atomic_write`'s temporary adds to its target's stem: ``.``, ``.PID`` (up to 7 digits,
#: Linux's largest PID 4194304), mkstemp's ``.XXXXXXXX`` and ``.tmp``.
_TEMP_EXTRA = 1 + 8 + 9 + 4


def temp_stem(name: str) -> str:
    """The part of :func:`atomic_write`'s temporary ``.STEM.PID.XXXX.tmp`` that names its target ``name``:
    ``name`` itself, or for a name too long to fit :data:`NAME_MAX` with the rest, its start and ``~`` and
    8 hex digits of its hash (a name of 230 to 255 bytes is written, not refused)."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) + _TEMP_EXTRA <= NAME_MAX:
        return name
    digest = hashlib.sha1(raw).hexdigest()[:8]
    keep = raw[:NAME_MAX - _TEMP_EXTRA - 9].decode("utf-8", "ignore")  # whole characters only
    return f"{keep}~{digest}"


def _umask() -> int:
    """The process's umask (read without changing it where /proc tells it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temporaries(directory: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temporary files :func:`atomic_write` left in ``directory`` when its process was
    killed (``.NAME.PID.XXXX.tmp`` whose PID no longer runs); ``name``: only those of that target.

    Returns the removed paths. Temporaries of a live process are never touched.
    """
    directory = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if not m or (name is not None and m.group("name") != temp_stem(name)):
            continue
        pid = int(m.group("pid"))
        if pid != os.getpid() and not _pid_alive(pid):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def write_failure(path: str | Path, exc: OSError) -> AffineVAEError:
    """The one-line :class:`AffineVAEError` for an ``OSError`` while writing ``path`` (disk full,
    read-only directory, a directory in the way ...)."""
    reason = exc.strerror or exc.__class__.__name__
    if exc.errno == errno.ENOSPC:
        reason = "no space left on the device"
    return AffineVAEError(f"{path}: cannot write ({reason})")


def make_directory(path: str | Path) -> Path:
    """``mkdir -p path``; an ``OSError`` (read-only, a file in the way) is a one-line :class:`AffineVAEError`."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failure(path, exc) from None
    return path


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path`` (atomic on POSIX).

    The temporary ``.NAME.PID.XXXX.tmp`` lies beside ``path``; it is removed on any failure, and
    one left by a killed process is removed by the next write of the same target
    (:func:`clean_stale_temporaries`). The file is created with mode ``0o666 & ~umask`` like any
    file the user creates. An ``OSError`` (disk full, read-only directory, a directory in the way)
    becomes a one-line :class:`AffineVAEError`.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise AffineVAEError(f"{path}: is a directory; give a file name")
        make_directory(path.parent)
        clean_stale_temporaries(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{temp_stem(path.name)}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise write_failure(path, exc) from None
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # after the write: some writers (safetensors) recreate the file
        _flush_to_disk(tmp)  # a power loss after the rename leaves the new contents, not an empty file
        os.replace(tmp, path)
    except BaseException as exc:
        # a library's own error for a short write (torch.save, safetensors): judged before the temporary goes
        full = not isinstance(exc, OSError) and isinstance(exc, Exception) and _device_full(exc, path.parent)
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_failure(path, exc) from None
        if full:
            raise AffineVAEError(f"{path}: cannot write (no space left on the device)") from None
        raise
    return path


#: Free bytes under which a writer's failure (torch.save's "unexpected pos", safetensors' I/O error) counts as
#: a full device.
FULL_DEVICE_BYTES = 1 << 20


def _device_full(exc: Exception, directory: Path) -> bool:
    """Whether a writer's non-``OSError`` failure ``exc`` comes from a full device: its message says so
    (ENOSPC, "No space left") or the device holding ``directory`` has under :data:`FULL_DEVICE_BYTES` free."""
    text = str(exc)
    if "No space left" in text or "os error 28" in text:
        return True
    try:
        return shutil.disk_usage(directory).free < FULL_DEVICE_BYTES
    except OSError:
        return False


def _flush_to_disk(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # a file system that cannot sync (some network mounts): the rename is still atomic
        pass
    finally:
        os.close(fd)


def write_json(path: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON."""
    def w(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
    return atomic_write(path, w)


def read_json(path: str | Path, what: str = "file") -> Any:
    """Read JSON, raising a one-line :class:`AffineVAEError` on a missing or corrupt file."""
    path = Path(path)
    if not path.exists():
        raise AffineVAEError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AffineVAEError(f"{path}: corrupt {what} ({exc.__class__.__name__}: {exc})") from None


#: The key of a safetensors file's metadata that holds :func:`tensors_digest` of its tensors (written by
#: :func:`save_tensors`, checked by :func:`load_tensors`: a bit flipped on the disk is found at load).
TENSORS_DIGEST_KEY = "tensors_sha256"


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of named tensors: each one's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        v = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{v.dtype}|{tuple(v.shape)}|".encode("utf-8"))
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Atomically write a safetensors file of contiguous CPU tensors; its metadata also records their
    :func:`tensors_digest` (:data:`TENSORS_DIGEST_KEY`)."""
    t = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {**(metadata or {}), TENSORS_DIGEST_KEY: tensors_digest(t)}

    def write(tmp: Path) -> None:
        save_file(t, tmp, metadata=meta)
        sort_metadata(tmp)

    return atomic_write(path, write)


def sort_metadata(path: str | Path) -> None:
    """Put the metadata keys of the safetensors file at ``path`` in name order, in place.

    safetensors writes them in a hash map's order, which changes from one write to the next, so
    the same tensors and metadata gave files with other bytes (a file hash could not tell that two
    trainings with one seed gave the same model). The header keeps its length (the same JSON,
    reordered), so only its bytes are rewritten."""
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        raw = f.read(size)
        header = json.loads(raw)
        if not isinstance(header.get("__metadata__"), dict):
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        new = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(new) == len(raw.rstrip(b" ")):  # unless the writer escaped differently: then left as written
            f.seek(8)
            f.write(new)  # the padding after it stays


def load_tensors(path: str | Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """Load a safetensors file, with a one-line error if missing or corrupt, if its tensors do not
    match the digest :func:`save_tensors` recorded (a bit flipped on the disk), or if a floating-point
    tensor holds NaN or inf (the weights of a diverged training: every output would be NaN)."""
    path = Path(path)
    if not path.exists():
        raise AffineVAEError(f"{path}: {what} not found")
    try:
        tensors = load_file(str(path))
    except PermissionError:
        raise AffineVAEError(unreadable(path, what)) from None
    except (SafetensorsError, OSError, ValueError, RuntimeError) as exc:
        raise AffineVAEError(f"{path}: corrupt {what} ({str(exc).splitlines()[0]}); restore the file or retrain") from None
    recorded = tensor_header(path, what)[1].get(TENSORS_DIGEST_KEY)
    if recorded is not None and recorded != tensors_digest(tensors):  # (files written before it have none)
        raise AffineVAEError(f"{path}: damaged {what}: its tensors no longer match the checksum written with "
                             "them (a changed or failing disk?); restore the file or retrain")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise AffineVAEError(f"{path}: NaN or infinite values in the {what} ({', '.join(bad[:3])}{more}); "
                             "a diverged training? retrain, e.g. with a lower learning rate")
    return tensors


def tensor_shapes(path: str | Path, what: str = "weights") -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a safetensors file, read from its header only (no tensor
    data is read or allocated); a one-line :class:`AffineVAEError` if missing or corrupt."""
    return tensor_header(path, what)[0]


def unreadable(path: Path, what: str) -> str:
    """The one-line message for a ``what`` file at ``path`` this process may not read (its permissions): not
    corrupt, so nothing to restore or retrain."""
    return f"{path}: cannot read the {what} (permission denied: check the file's permissions)"


def tensor_header(path: str | Path, what: str = "weights") -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """(name -> shape of every tensor, the file's string metadata) of a safetensors file, read
    from its header only; a one-line :class:`AffineVAEError` if missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise AffineVAEError(f"{path}: {what} not found")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise ValueError("file too short for a safetensors header")
            n = int.from_bytes(head, "little")
            if n > min(size - 8, 100 * 1024 * 1024):
                raise ValueError(f"header length {n} exceeds the file")
            header = json.loads(f.read(n))
        shapes = {}
        end = 0
        for k, v in header.items():
            if k == "__metadata__":
                continue
            shapes[k] = tuple(int(d) for d in v["shape"])
            end = max(end, int(v["data_offsets"][1]))
        if 8 + n + end > size:
            raise ValueError("truncated: the header declares more data than the file holds")
    except PermissionError:
        raise AffineVAEError(unreadable(path, what)) from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError, json.JSONDecodeError,
            UnicodeDecodeError) as exc:
        raise AffineVAEError(f"{path}: corrupt {what} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                             "restore the file or retrain") from None
    meta = header.get("__metadata__") or {}
    return shapes, {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


#: The key of ``model.safetensors``' metadata that holds :func:`config_digest` of its ``model.json``.
CONFIG_DIGEST_KEY = "model_json_digest"


def config_digest(description: Any) -> str:
    """SHA-256 (hex) of a model description as JSON (sorted keys, no spaces): what ties the
    weights of :func:`save_model` to the ``model.json`` saved with them."""
    text = json.dumps(description, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save_model(model, directory: str | Path) -> Path:
    """Write ``model.json`` (family, config) and ``model.safetensors`` (state dict) to ``directory``.

    Each file is written atomically; the weights' metadata holds the digest of the config
    (:data:`CONFIG_DIGEST_KEY`), so a save interrupted between the two files is found at load."""
    directory = make_directory(directory)
    desc = model.describe()
    save_tensors(directory / MODEL_WEIGHTS, model.state_dict(),
                 metadata={CONFIG_DIGEST_KEY: config_digest(json.loads(json.dumps(desc)))})
    write_json(directory / MODEL_JSON, desc)
    return directory


class TargetStore:
    """The per-image training targets a model derives from its training data when a fit starts
    (an rVAE's synchronised angles and t-SNE targets: about a minute for 10 000 images), kept in
    the run directory (:data:`FIT_TARGETS`, safetensors) so that a resumed fit reads them instead
    of deriving them again: faster, and the same targets the weights were trained against even
    when the resume changes the seed.

    ``key`` (a JSON-able dict) names what the targets were derived from; the trainer adds the
    training data's fingerprint. :meth:`load` returns the tensors only when the file's key is the
    same and ``reuse`` is True (a resume); a missing, corrupt or other file gives None (derived
    again: nothing is lost). :meth:`save` writes atomically when ``writable`` (rank 0 of a
    distributed fit).
    """

    def __init__(self, path: str | Path, fingerprint: str, reuse: bool = True, writable: bool = True) -> None:
        self.path = Path(path)
        self.fingerprint = str(fingerprint)
        self.reuse = bool(reuse)
        self.writable = bool(writable)

    def _key(self, key: dict) -> str:
        return json.dumps({**key, "data_fingerprint": self.fingerprint}, sort_keys=True, separators=(",", ":"))

    def load(self, key: dict) -> dict[str, torch.Tensor] | None:
        """The tensors saved under ``key`` for these data, or None (not a resume, no file, another
        key, or a file that does not read: said in one warning)."""
        if not (self.reuse and self.path.is_file()):
            return None
        try:
            _, meta = tensor_header(self.path, "training targets")
            if meta.get("key") != self._key(key):
                return None
            return load_tensors(self.path, "training targets")
        except AffineVAEError as exc:
            warnings.warn(f"{exc}; they are derived again from the training images", UserWarning, stacklevel=user_stacklevel())
            return None

    def save(self, key: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Write ``tensors`` under ``key`` (atomically; nothing when not writable)."""
        if self.writable:
            save_tensors(self.path, tensors, metadata={"key": self._key(key)})
