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
from ..nn.modes import module_mode
from ..nn.transforms import Parameterisation
from ..config import as_config
from .search import SearchConfig, SearchResult, check_search_work, check_searched_model, search_poses

__all__ = ["AlignResult", "align", "load_alignment", "identity_objective"]


@dataclasses.dataclass
class AlignResult:
    """Per-image output of :func:`align`.

    Attributes:
        params: (N, P) found transform parameters (``param_names`` order).
        angle: (N,) found rotation, radians (zeros if the transform has no angle).
        elbo_before: (N,) ELBO in the observed pose (identity), nats (NaN if not ``report_before``).
        elbo_after: (N,) ELBO in the found pose, nats.
        aligned: (N, C, H, W) images warped to the canonical pose.
        objective: (N,) deterministic search objective (-ELBO at the posterior mean), nats, at
            ``params``.
        transform: parameterisation name.
        param_names: names of the ``params`` columns.
        objective_before: (N,) the same objective in the observed pose (identity), nats, where the
            search evaluated it as one of its starts (``include_identity``), else NaN (an image
            kept at its pose head's pose, or no identity start): no extra pass. The search can
            only lower it; the sampled ELBOs before and after differ also by their sampling noise,
            which for a small gain can show an ELBO lower after than before.
    """

    params: Tensor
    angle: Tensor
    elbo_before: Tensor
    elbo_after: Tensor
    aligned: Tensor
    objective: Tensor
    transform: str
    param_names: tuple
    objective_before: Optional[Tensor] = None

    def summary(self, elbo_samples: Optional[int] = None) -> str:
        """One line of means per image, e.g. ``mean ELBO -482.1 -> -481.8 nats/image (1 posterior sample);
        search objective (...) 494.71 -> 493.78 nats/image``: the sampled ELBO before -> after (only
        after when it was not computed before) and, over the images where both are known, the
        deterministic objective that the search lowers (the ELBO's sampling noise can hide a small
        gain). ``elbo_samples``: the draws averaged for the ELBO, named in the line when given."""
        after = float(self.elbo_after.mean())
        before = float(self.elbo_before.mean())
        line = f"mean ELBO {before:.2f} -> {after:.2f}" if math.isfinite(before) else f"mean ELBO {after:.2f}"
        line += " nats/image"
        if elbo_samples is not None:
            line += f" ({elbo_samples} posterior sample{'s' if elbo_samples != 1 else ''})"
        if self.objective_before is not None:
            both = torch.isfinite(self.objective_before) & torch.isfinite(self.objective)
            n = int(both.sum())
            if n:
                o0, o1 = float(self.objective_before[both].mean()), float(self.objective[both].mean())
                which = "" if n == len(both) else f" over the {n:,} images whose identity pose it tried"
                line += f"; search objective (-ELBO at the posterior mean) {o0:.2f} -> {o1:.2f} nats/image{which}"
        return line

    def save(self, path: str | Path, labels: Optional[np.ndarray] = None,
             image_file: Optional[np.ndarray] = None) -> Path:
        """Write an ``.npz`` with arrays params, angle (rad), elbo_before, elbo_after (nats),
        aligned, objective, objective_before (nats; NaN when not computed), transform, param_names
        (and ``labels`` (N,) int64, ``image_file`` (N,) str (each image's file: ``ImageSet.names``) if
        given), atomically."""
        before = self.objective_before
        if before is None:
            before = torch.full_like(self.objective, math.nan)
        arrays = {"params": self.params, "angle": self.angle, "elbo_before": self.elbo_before,
                  "elbo_after": self.elbo_after, "aligned": self.aligned, "objective": self.objective,
                  "objective_before": before}
        arrays = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in arrays.items()}
        arrays["transform"] = np.array(self.transform)
        arrays["param_names"] = np.array(list(self.param_names), dtype=str)
        if labels is not None:
            arrays["labels"] = np.asarray(labels, dtype=np.int64)
        if image_file is not None:
            arrays["image_file"] = np.asarray(image_file, dtype=str)

        def w(tmp):
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
        return atomic_write(path, w)


def load_alignment(path: str | Path) -> dict[str, np.ndarray]:
    """Read an ``aligned.npz`` written by :meth:`AlignResult.save` (no unpickling).

    Returns name -> array: ``params`` (N, P) float32 (the transform's units: angle radians,
    shifts half image widths, log scales); ``angle`` (N,) radians; ``elbo_before``,
    ``elbo_after``, ``objective`` and ``objective_before`` (N,) nats (NaN where not computed;
    ``objective_before`` is missing from files written before it was added); ``aligned``
    (N, C, H, W) float32; ``transform`` () and ``param_names`` (P,) strings; ``labels`` (N,) int64
    and ``image_file`` (N,) strings when saved with them.
    """
    path = Path(path)
    if not path.is_file():
        raise AffineVAEError(f"{path}: alignment file not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise AffineVAEError(f"{path}: corrupt alignment file ({exc.__class__.__name__})") from None


def identity_objective(found: SearchResult) -> Tensor:
    """(N,) the search objective (nats) at each image's identity pose, read from the starts the
    search evaluated (``found.starts`` (N, R, P), ``found.start_objective`` (N, R)); NaN for an
    image whose identity start was not evaluated."""
    is_identity = (found.starts == 0).all(-1) & torch.isfinite(found.start_objective)  # (N, R)
    values = torch.where(is_identity, found.start_objective, torch.full_like(found.start_objective, math.inf))
    best = values.min(1).values
    return torch.where(torch.isfinite(best), best, torch.full_like(best, math.nan))


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
    check_searched_model(model, "align")
    cfg = as_config(config, SearchConfig, "align") or model.config.search
    x, y = model.check_input(x, y)
    given = int(starts.shape[1]) if getattr(starts, "ndim", 0) == 3 else None  # explicit starts (search_poses checks them)
    check_search_work(len(x), cfg, given, elbo=True)  # the search and its ELBO passes, before any work
    with module_mode(model):
        gen = torch.Generator().manual_seed(cfg.seed)
        found = search_poses(model, x, y, cfg, starts=starts, generator=gen)
        if cfg.report_before:
            before = model.elbo_at(x, y, None, seed=cfg.seed, samples=cfg.elbo_samples, chunk=cfg.chunk)
        else:
            before = torch.full((len(x),), math.nan, device=x.device)
        after, aligned = model.elbo_and_canonical(x, y, found.params, seed=cfg.seed, samples=cfg.elbo_samples,
                                                  chunk=cfg.chunk)
    transform: Parameterisation = model.transform
    return AlignResult(params=found.params, angle=transform.angle(found.params), elbo_before=before, elbo_after=after,
                       aligned=aligned, objective=found.objective, transform=transform.name,
                       param_names=tuple(transform.kinds), objective_before=identity_objective(found))
