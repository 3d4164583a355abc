"""Which torch device a name means, checked: one line for a name torch does not know or a device this machine
lacks (``training.resolve_device`` and ``runs.load`` read it)."""

from __future__ import annotations

from typing import Union

import torch

from .errors import AffineVAEError

__all__ = ["DEVICE_CHOICES", "resolve_device"]

#: The device names a training takes (``TrainConfig.device``, napari's ``LearnSettings.device``): 'auto' is
#: a GPU when torch sees one.
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: Union[str, torch.device]) -> torch.device:
    """The torch device ``name`` means: 'auto' -> cuda if available else cpu; a device name ('cpu', 'cuda',
    'cuda:1', 'mps', ...) or a :class:`torch.device` as it is.

    Raises:
        AffineVAEError: a name torch does not know, or a CUDA (or MPS) device this machine does not have.
    """
    if isinstance(name, str) and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise AffineVAEError(f"device must be 'auto', 'cpu', 'cuda' (or 'cuda:N') or another torch device name, "
                             f"got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AffineVAEError(f"device {str(device)!r} requested but no CUDA GPU is available (use device 'cpu': "
                                 "--device cpu on the command line)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise AffineVAEError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise AffineVAEError(f"device {str(device)!r} requested but MPS is not available here")
    return device
