"""Safe persistence: atomic writes, safetensors weights, JSON configs. Nothing is unpickled.

A leaf of the package: it imports nothing of affinevae but :mod:`affinevae.errors`. Loading a
model (which needs the model registry) is :func:`affinevae.runs.load`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
try:
    from safetensors import SafetensorError as SafetensorsError
except ImportError:  # pragma: no cover
    SafetensorsError = Exception
from safetensors.torch import load_file, save_file

from .errors import AffineVAEError

MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Atomically write a safetensors file of contiguous CPU tensors."""
    t = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(t, tmp, metadata=metadata))


def load_tensors(path: str | Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """Load a safetensors file, with a one-line error if missing or corrupt."""
    path = Path(path)
    if not path.exists():
        raise AffineVAEError(f"{path}: {what} not found")
    try:
        return load_file(str(path))
    except (SafetensorsError, OSError, ValueError, RuntimeError) as exc:
        raise AffineVAEError(f"{path}: corrupt {what} ({str(exc).splitlines()[0]})") from None


def save_model(model, directory: str | Path) -> Path:
    """Write ``model.json`` (family, config) and ``model.safetensors`` (state dict) to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(directory / MODEL_WEIGHTS, model.state_dict())
    write_json(directory / MODEL_JSON, model.describe())
    return directory
