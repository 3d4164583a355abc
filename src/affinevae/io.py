"""Safe persistence: atomic writes, safetensors weights, JSON configs. Nothing is unpickled."""

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


def load(directory: str | Path, device: str | torch.device = "cpu"):
    """Load a model saved with :meth:`LatentModel.save` (or a training run directory).

    Returns the model in eval mode on ``device``. Raises :class:`AffineVAEError` if the
    directory, its config or its weights are missing, corrupt or do not match.
    """
    from .registry import MODELS
    from . import models as _models  # noqa: F401  (registers the families)

    directory = Path(directory)
    if not directory.is_dir():
        raise AffineVAEError(f"{directory}: no such run or model directory")
    desc = read_json(directory / MODEL_JSON, "model config")
    if not isinstance(desc, dict) or "model" not in desc or "config" not in desc:
        raise AffineVAEError(f"{directory / MODEL_JSON}: not an affinevae model config")
    cls = MODELS.get(desc["model"])
    model = cls.from_config_dict(desc["config"])
    state = load_tensors(directory / MODEL_WEIGHTS)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or bad:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                  else f"shape mismatch for {bad[:3]}")
        raise AffineVAEError(f"{directory / MODEL_WEIGHTS}: weights do not match the config in {MODEL_JSON} ({detail})")
    model.load_state_dict(state)
    return model.to(device).eval()
