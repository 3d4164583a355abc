"""``align``: search every image's pose, report the ELBO before and after, and the aligned-image file format."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ..errors import AffineVAEError
from ..io import atomic_write
from ..nn.transforms import Parameterisation
from .search import SearchConfig, check_search_work, search_poses

__all__ = ["AlignResult", "align", "load_alignment"]


@dataclasses.dataclass
class AlignResult:
    """Per-image output of :func:`align`.

    Attributes:
        params: (N, P) found transform parameters (``param_names`` order).
        angle: (N,) found rotation, radians (zeros if the transform has no angle).
        elbo_before: (N,) ELBO in the observed pose (identity), nats (NaN if not ``report_before``).
        elbo_after: (N,) ELBO in the found pose, nats.
        aligned: (N, C, H, W) images warped to the canonical pose.
        objective: (N,) deterministic search objective (-ELBO at the posterior mean), nats.
        transform: parameterisation name.
        param_names: names of the ``params`` columns.
    """

    params: Tensor
    angle: Tensor
    elbo_before: Tensor
    elbo_after: Tensor
    aligned: Tensor
    objective: Tensor
    transform: str
    param_names: tuple

    def save(self, path: str | Path, labels: Optional[np.ndarray] = None) -> Path:
        """Write an ``.npz`` with arrays params, angle (rad), elbo_before, elbo_after (nats),
        aligned, objective, transform, param_names (and labels if given), atomically."""
        arrays = {"params": self.params, "angle": self.angle, "elbo_before": self.elbo_before,
                  "elbo_after": self.elbo_after, "aligned": self.aligned, "objective": self.objective}
        arrays = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in arrays.items()}
        arrays["transform"] = np.array(self.transform)
        arrays["param_names"] = np.array(list(self.param_names), dtype=str)
        if labels is not None:
            arrays["labels"] = np.asarray(labels, dtype=np.int64)

        def w(tmp):
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
        return atomic_write(path, w)


def load_alignment(path: str | Path) -> dict[str, np.ndarray]:
    """Read an ``aligned.npz`` written by :meth:`AlignResult.save` (no unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise AffineVAEError(f"{path}: alignment file not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise AffineVAEError(f"{path}: corrupt alignment file ({exc.__class__.__name__})") from None


def align(model, x, y=None, config: Optional[SearchConfig] = None, starts: Optional[Tensor] = None) -> AlignResult:
    """Search every image's pose and report ELBOs before/after and the aligned images.

    Args:
        model: an :class:`~affinevae.models.avae.AVAE`.
        x: (N, C, H, W) images (or (N, H, W) for one channel); y: (N,) labels if conditional.
        config: :class:`SearchConfig` (default: the model's ``search`` config).
        starts: optional (N, R, P) explicit restarts.

    Returns:
        :class:`AlignResult`; ELBOs in nats, sampled with ``config.seed`` (the same noise
        before and after, ``config.elbo_samples`` draws averaged), angles in radians.

    Raises:
        AffineVAEError: among others, a search (with its ELBO samples) over
            :data:`affinevae.limits.MAX_SEARCH_EVALUATIONS_PER_IMAGE` model passes per image
            (:func:`~affinevae.pose.search.check_search_work`), before any work.
    """
    cfg = config or model.config.search
    x, y = model.check_input(x, y)
    given = int(starts.shape[1]) if getattr(starts, "ndim", 0) == 3 else None  # explicit starts (search_poses checks them)
    check_search_work(len(x), cfg, given, elbo=True)  # the search and its ELBO passes, before any work
    was_training = model.training
    model.eval()
    try:
        gen = torch.Generator().manual_seed(cfg.seed)
        found = search_poses(model, x, y, cfg, starts=starts, generator=gen)
        if cfg.report_before:
            before = model.elbo_at(x, y, None, seed=cfg.seed, samples=cfg.elbo_samples, chunk=cfg.chunk)
        else:
            before = torch.full((len(x),), math.nan, device=x.device)
        after, aligned = model.elbo_and_canonical(x, y, found.params, seed=cfg.seed, samples=cfg.elbo_samples,
                                                  chunk=cfg.chunk)
    finally:
        model.train(was_training)
    transform: Parameterisation = model.transform
    return AlignResult(params=found.params, angle=transform.angle(found.params), elbo_before=before, elbo_after=after,
                       aligned=aligned, objective=found.objective, transform=transform.name,
                       param_names=tuple(transform.kinds))
