"""User image files (placeholder: .npy/.npz only; full loaders in progress)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import AffineVAEError
from .imageset import ImageSet, normalise_images


def load_images(path: str, key: Optional[str] = None, labels: Optional[str] = None) -> ImageSet:
    """Load images from ``path`` (.npy or .npz)."""
    p = Path(path)
    if not p.exists():
        raise AffineVAEError(f"{path}: file not found")
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
        return ImageSet(normalise_images(arr, str(p)), source=str(p))
    with np.load(p, allow_pickle=False) as f:
        k = key or ("images" if "images" in f.files else "patches" if "patches" in f.files else f.files[0])
        lab = f["labels"] if "labels" in f.files else None
        return ImageSet(normalise_images(f[k], str(p)), lab, source=str(p))
