"""Pose search for the affine VAE: find, per image, the transform that maximises the ELBO.

The search is batched over images *and* restarts, never a per-image Python loop:

1. **Restarts.** Each image gets ``restarts`` candidate parameter vectors: the amortised
   pose head's prediction (if the model has one and ``use_head``), any extra starts (e.g.
   last epoch's pose), the identity (``include_identity``) and random draws within the
   parameter ranges (angles stratified over the circle). All N*R candidates go through the
   network in one no-grad pass (chunked by ``chunk`` images to bound memory).
2. **Refinement.** The ``keep`` best candidates of every image are refined together by Adam
   for ``steps`` steps on the deterministic objective (one Adam over an (N*K, P) tensor:
   Adam is element-wise, so this equals N*K independent optimisers). After each step the
   parameters are projected into their ranges (angles wrapped).
3. **Choice.** The best value seen (over starts and steps) wins per image.

With ``head_trust``, images whose pose head is confident (its quarter-turn views agree) keep
the head's pose and skip steps 1-3: the search is spent where the amortised start is unsure.
A trained :class:`PoseRefiner` (``use_refiner``) corrects the head's first start: it sees
the image canonicalised at that pose and predicts the angle still left (a second, finer
stage of the amortised start, for one more head-sized pass).

Objective: the negative ELBO with the encoder mean as the latent (deterministic, so
candidates compare exactly), KL weight 1. The reported ELBO (:func:`align`) is the true,
sampled ELBO with a fixed seed, averaged over ``elbo_samples`` draws.

Any model with ``transform`` (a :class:`~affinevae.nn.transforms.Parameterisation`),
``objective(x, y, params) -> (N,)`` and ``predict_pose(x, k, views, confidence) -> (N, k, P) | ((N, k, P), (N,)) |
None`` (and optionally ``refine_pose(x, params) -> (N, P) | None``) can be searched
(:class:`affinevae.models.avae.AVAE` is the one in the package).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from .config import Config, check, check_choice, check_positive
from .errors import AffineVAEError
from .nn.affine import Pose, render, wrap_angle
from .nn.transforms import Parameterisation

__all__ = ["SearchConfig", "SearchResult", "AlignResult", "HeadTrainConfig", "PoseHead", "PoseRefiner", "search_poses",
           "align", "fit_pose_head", "fit_pose_refiner", "load_alignment", "seeded"]


def _check_range(name: str, value: Any) -> None:
    ok = (isinstance(value, tuple) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))
    check(ok and value[0] < value[1], f"{name} must be a pair (low, high) of finite numbers with low < high, got {value!r}")


def _check_views(name: str, value: Any) -> None:
    check(value in (1, 2, 4) and not isinstance(value, bool), f"{name} must be 1, 2 or 4, got {value!r}")


@dataclasses.dataclass(frozen=True)
class SearchConfig(Config):
    """Options of the pose search and of :func:`align`.

    Attributes:
        restarts: candidate poses per image (head prediction, extra starts, identity and
            random draws together; fixed starts take precedence).
        keep: best candidates per image refined by Adam.
        steps: Adam steps of the refinement (0 = restarts only).
        lr: Adam learning rate (radians for angles, natural units for the others).
        angle_range: (low, high) radians for random angles; a full circle wraps angles.
        log_scale_range: (low, high) natural-log zoom (bounds for draws and refinement).
        shear_range: (low, high) shear factor.
        shift_range: (low, high) half image widths.
        stratify: spread each image's random angles evenly over the range (random offset).
        include_identity: always try the identity pose.
        use_head: use the amortised pose head's prediction as a start (if the model has a trained one).
        head_starts: how many of the head's hypotheses (best-scored first) become starts.
        head_views: 1, or 2/4 exact quarter-turn views of each image for the head, whose
            predictions are combined into a consensus pose (test-time augmentation; see
            :meth:`PoseHead.predict`): more accurate starts for 2-4 head passes, which are
            cheap next to one pass of the inner model (about 0.15x each on MNIST).
        head_trust: None (off), or a share in [0, 1]: an image whose head is at least this
            confident keeps the head's pose as it is and skips the search; only the others
            are searched (their restarts include the head's ``head_starts`` hypotheses).
            Confidence: with ``head_views`` > 1, the score-weighted share of the views that
            agree with the consensus; with one view, the best hypothesis' softmax score.
            Spends the search where the amortised start is unsure (e.g. 0.9 with 4 views).
            Without a trained head (or with explicit ``starts``) every image is searched.
        use_refiner: correct the head's first start with the model's trained
            :class:`PoseRefiner`, if it has one (see :func:`fit_pose_refiner`).
        chunk: images per forward pass (bounds memory; N*R images are chunked).
        seed: seeds the random restarts and the ELBO noise in :func:`align`.
        elbo_samples: posterior samples averaged for the reported ELBO.
        report_before: :func:`align` also computes the ELBO in the observed pose
            (``elbo_before``; one more pass of the inner model); False leaves it NaN.
    """

    restarts: int = 16
    keep: int = 2
    steps: int = 10
    lr: float = 0.05
    angle_range: tuple = (-math.pi, math.pi)
    log_scale_range: tuple = (-0.3, 0.3)
    shear_range: tuple = (-0.3, 0.3)
    shift_range: tuple = (-0.2, 0.2)
    stratify: bool = True
    include_identity: bool = True
    use_head: bool = True
    head_starts: int = 1
    head_views: int = 1
    head_trust: Optional[float] = None
    use_refiner: bool = True
    chunk: int = 4096
    seed: int = 0
    elbo_samples: int = 1
    report_before: bool = True

    def validate(self) -> None:
        for name in ("restarts", "keep", "chunk", "elbo_samples", "head_starts"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{name} must be an integer >= 1, got {v!r}")
        check(isinstance(self.steps, int) and not isinstance(self.steps, bool) and self.steps >= 0,
              f"steps must be an integer >= 0, got {self.steps!r}")
        _check_views("head_views", self.head_views)
        check(self.head_trust is None or (isinstance(self.head_trust, (int, float)) and not isinstance(self.head_trust, bool)
                                          and 0 <= self.head_trust <= 1),
              f"head_trust must be None or a number in [0, 1], got {self.head_trust!r}")
        check_positive("lr", self.lr)
        for name in ("angle_range", "log_scale_range", "shear_range", "shift_range"):
            _check_range(name, getattr(self, name))
        check(self.angle_range[1] - self.angle_range[0] <= 2 * math.pi + 1e-6,
              f"angle_range spans more than a full circle: {self.angle_range!r} (radians)")
        for name in ("stratify", "include_identity", "use_head", "use_refiner", "report_before"):
            check(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")
        check(isinstance(self.seed, int) and not isinstance(self.seed, bool), f"seed must be an integer, got {self.seed!r}")

    def ranges(self) -> dict[str, tuple[float, float]]:
        """Range name -> (low, high), as :meth:`Parameterisation.bounds` expects."""
        return {"angle": self.angle_range, "log_scale": self.log_scale_range, "shear": self.shear_range,
                "shift": self.shift_range}


@dataclasses.dataclass
class SearchResult:
    """What :func:`search_poses` found.

    Attributes:
        params: (N, P) best transform parameters per image.
        objective: (N,) deterministic -ELBO (nats) at ``params``; NaN when nothing was
            evaluated (a single start and no refinement: there was nothing to choose).
        starts: (N, R, P) the restarts that were tried.
        start_objective: (N, R) their objective values (NaN when not evaluated).
    """

    params: Tensor
    objective: Tensor
    starts: Tensor
    start_objective: Tensor


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
        from .io import atomic_write

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


class seeded:
    """Context manager: fork the torch RNG (CPU and the current CUDA device) and seed it."""

    def __init__(self, seed: int, device: torch.device) -> None:
        devices = [device.index or 0] if device.type == "cuda" else []
        self._fork = torch.random.fork_rng(devices=devices)
        self.seed = seed

    def __enter__(self) -> None:
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc) -> None:
        self._fork.__exit__(*exc)


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def _take(y: Optional[Tensor], idx: Tensor) -> Optional[Tensor]:
    return None if y is None else y[idx]


@torch.no_grad()
def evaluate_candidates(model, x: Tensor, y: Optional[Tensor], params: Tensor, owner: Tensor, chunk: int) -> Tensor:
    """Objective (M,) of M candidates ``params`` (M, P) for images ``x[owner]``, no gradients, chunked."""
    out = torch.empty(len(params), device=x.device)
    for s in _chunks(len(params), chunk):
        out[s] = model.objective(x[owner[s]], _take(y, owner[s]), params[s]).float()
    return torch.nan_to_num(out, nan=math.inf)


def refine(model, x: Tensor, y: Optional[Tensor], params: Tensor, owner: Tensor, config: SearchConfig,
           init_objective: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Adam refinement of M candidates (M, P) for images ``x[owner]``, all at once.

    Returns the best parameters (M, P) and objective (M,) seen per candidate over the
    starting point, every step and the final point. ``init_objective`` (M,), the objective
    at ``params`` when already known, counts as a value seen.
    """
    transform: Parameterisation = model.transform
    ranges = config.ranges()
    p = params.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=config.lr)
    best = torch.full((len(p),), math.inf, device=p.device) if init_objective is None else init_objective.clone()
    best_p = params.detach().clone()
    for _ in range(config.steps):
        grad = torch.zeros_like(p)
        value = torch.empty(len(p), device=p.device)
        for s in _chunks(len(p), config.chunk):
            with torch.enable_grad():
                loss = model.objective(x[owner[s]], _take(y, owner[s]), p[s]).float()
                (g,) = torch.autograd.grad(loss.sum(), p)
            grad += g
            value[s] = loss.detach()
        value = torch.nan_to_num(value, nan=math.inf)
        better = value < best
        best = torch.where(better, value, best)
        best_p[better] = p.detach()[better]
        p.grad = torch.nan_to_num(grad)
        opt.step()
        with torch.no_grad():
            p.copy_(transform.project(p, ranges))
    final = evaluate_candidates(model, x, y, p.detach(), owner, config.chunk)
    better = final < best
    best = torch.where(better, final, best)
    best_p[better] = p.detach()[better]
    return best_p, best


def make_starts(model, x: Tensor, config: SearchConfig, extra_starts: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None) -> Tensor:
    """(N, R, P) restarts: head prediction, ``extra_starts`` (N, E, P), identity, random draws.

    Fixed starts come first and take precedence; random draws (CPU ``generator``, or the
    global generator if None) fill up to ``config.restarts``.
    """
    return _starts(model, x, config, extra_starts, generator)[0]


def _starts(model, x: Tensor, config: SearchConfig, extra_starts: Optional[Tensor],
            generator: Optional[torch.Generator]) -> tuple[Tensor, Optional[Tensor]]:
    """:func:`make_starts` and the (N,) confidence of the head's prediction (None without one)."""
    transform: Parameterisation = model.transform
    n = len(x)
    fixed: list[Tensor] = []
    conf = None
    if config.use_head:
        pred = model.predict_pose(x, config.head_starts, config.head_views, confidence=True)
        if pred is not None:
            poses = pred[0].detach().float()
            if config.use_refiner and hasattr(model, "refine_pose"):
                first = model.refine_pose(x, poses[:, 0])
                if first is not None:
                    poses = torch.cat([first.detach().float()[:, None], poses[:, 1:]], 1)
            fixed.append(poses)
            conf = pred[1].detach()
    if extra_starts is not None:
        extra = torch.as_tensor(extra_starts, dtype=torch.float32)
        if extra.dim() != 3 or extra.shape[0] != n or extra.shape[2] != transform.dim:
            raise AffineVAEError(f"extra_starts must have shape ({n}, E, {transform.dim}), got {tuple(extra.shape)}")
        fixed.append(extra.to(x.device))
    if config.include_identity:
        fixed.append(transform.identity(n, device=x.device)[:, None])
    n_fixed = sum(f.shape[1] for f in fixed)
    n_random = max(0, config.restarts - n_fixed)
    parts = fixed
    if n_random:
        parts = fixed + [transform.sample(n, n_random, config.ranges(), generator, config.stratify).to(x.device)]
    starts = torch.cat(parts, 1)[:, :config.restarts]
    starts = transform.project(starts.reshape(-1, transform.dim), config.ranges()).reshape(n, -1, transform.dim)
    return starts, conf


@torch.no_grad()
def search_poses(model, x: Tensor, y: Optional[Tensor] = None, config: Optional[SearchConfig] = None,
                 starts: Optional[Tensor] = None, extra_starts: Optional[Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> SearchResult:
    """Find, for each of the (N, C, H, W) images ``x``, the pose parameters minimising the objective.

    Args:
        model: an :class:`~affinevae.models.avae.AVAE` (or anything with ``transform``,
            ``objective`` and ``predict_pose``); ``x`` and ``y`` must already be checked.
        y: (N,) labels for class-conditional models, else None.
        config: :class:`SearchConfig` (defaults if None).
        starts: (N, R, P) explicit restarts; replaces the head/identity/random starts.
        extra_starts: (N, E, P) additional fixed starts (e.g. last epoch's poses).
        generator: CPU generator for the random restarts (None: torch's global one).

    Returns:
        :class:`SearchResult` with (N, P) ``params`` and (N,) ``objective`` (nats).
    """
    cfg = config or SearchConfig()
    transform: Parameterisation = model.transform
    n = len(x)
    if starts is None:
        starts, conf = _starts(model, x, cfg, extra_starts, generator)
        if cfg.head_trust is not None and conf is not None:
            return _trusting(model, x, y, cfg, starts, conf >= cfg.head_trust)
    else:
        starts = torch.as_tensor(starts, dtype=torch.float32)
        if starts.dim() != 3 or starts.shape[0] != n or starts.shape[2] != transform.dim or starts.shape[1] < 1:
            raise AffineVAEError(f"starts must have shape ({n}, R, {transform.dim}), got {tuple(starts.shape)}")
        starts = starts.to(x.device)
    r = starts.shape[1]
    if r == 1 and cfg.steps == 0:
        nan = torch.full((n,), math.nan, device=x.device)
        return SearchResult(starts[:, 0].clone(), nan, starts, nan[:, None].clone())
    owner = torch.arange(n, device=x.device).repeat_interleave(r)
    obj = evaluate_candidates(model, x, y, starts.reshape(n * r, -1), owner, cfg.chunk).reshape(n, r)
    k = min(cfg.keep, r)
    top_val, top_idx = obj.topk(k, dim=1, largest=False)
    cand = starts.gather(1, top_idx[:, :, None].expand(n, k, transform.dim))
    if cfg.steps > 0:
        owner_k = torch.arange(n, device=x.device).repeat_interleave(k)
        best_p, best_v = refine(model, x, y, cand.reshape(n * k, -1), owner_k, cfg, top_val.reshape(-1))
        cand, top_val = best_p.reshape(n, k, -1), best_v.reshape(n, k)
    j = top_val.argmin(1)
    rows = torch.arange(n, device=x.device)
    return SearchResult(cand[rows, j].clone(), top_val[rows, j].clone(), starts, obj)


def _trusting(model, x: Tensor, y: Optional[Tensor], cfg: SearchConfig, starts: Tensor, sure: Tensor) -> SearchResult:
    """Search only the images that are not ``sure`` (N,) bool; the sure ones keep their first start."""
    n = len(x)
    params = starts[:, 0].clone()
    objective = torch.full((n,), math.nan, device=x.device)
    start_obj = torch.full(starts.shape[:2], math.nan, device=x.device)
    unsure = (~sure).nonzero()[:, 0]
    if len(unsure):
        sub = search_poses(model, x[unsure], _take(y, unsure), cfg.replace(head_trust=None), starts=starts[unsure])
        params[unsure], objective[unsure], start_obj[unsure] = sub.params, sub.objective, sub.start_objective
    return SearchResult(params, objective, starts, start_obj)


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
    """
    cfg = config or model.config.search
    x, y = model.check_input(x, y)
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


# ---------------------------------------------------------------------- amortised start
def _conv_trunk(image_shape: tuple, channels: tuple) -> tuple[nn.Sequential, int]:
    """Stride-2 3x3 conv + ReLU layers on (N, C, H, W) images; returns them and the flattened output size."""
    c, h, w = image_shape
    layers: list[nn.Module] = []
    for ch in channels:
        layers += [nn.Conv2d(c, ch, 3, stride=2, padding=1), nn.ReLU()]
        c, h, w = ch, (h + 1) // 2, (w + 1) // 2
    return nn.Sequential(*layers), c * h * w


class PoseHead(nn.Module):
    """A small CNN predicting the searched pose from the observed image (the amortised start).

    It proposes ``hypotheses`` poses per image, each as (cos, sin) of the angle (if the
    parameterisation has one) and the other parameters directly, plus a score per
    hypothesis. Training is winner-takes-all: only the hypothesis closest to the target
    learns (the others a little, ``relax``), and the scores learn which one wins. Several
    hypotheses keep near-symmetric images (a '1' fits two poses 180 degrees apart) from
    being averaged into a meaningless angle; the best-scored hypothesis is the start.

    Args:
        image_shape: (C, H, W).
        transform: the parameterisation.
        ranges: the search ranges (their half-widths normalise the loss).
        channels: stride-2 conv widths; hidden: width of the fully connected layer.
        hypotheses: poses proposed per image (>= 1).
        relax: share of the loss given to the non-winning hypotheses.
    """

    def __init__(self, image_shape: tuple, transform: Parameterisation, ranges: dict[str, tuple[float, float]],
                 channels: tuple = (16, 32), hidden: int = 64, hypotheses: int = 2, relax: float = 0.05) -> None:
        super().__init__()
        self.transform = transform
        self.hypotheses = int(hypotheses)
        self.relax = float(relax)
        lo, hi = transform.bounds(ranges)
        # Half-widths of the parameter ranges: the loss divides errors by them (not saved).
        self.register_buffer("scale", (hi - lo) / 2, persistent=False)
        self.conv, flat = _conv_trunk(image_shape, channels)
        self.angle_col = transform.column("angle")
        self.width = transform.dim + (1 if self.angle_col is not None else 0)  # outputs per hypothesis
        n_out = self.hypotheses * (self.width + 1)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, M * (W + 1)) raw outputs (M hypotheses of W values, then M scores)."""
        return self.fc(self.conv(x))

    def _split(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        m = self.hypotheses
        return raw[:, :m * self.width].reshape(len(raw), m, self.width), raw[:, m * self.width:]

    def _others(self) -> list[int]:
        return [i for i in range(self.transform.dim) if i != self.angle_col]

    def to_params(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        """Raw outputs -> (N, M, P) hypotheses (angle = atan2(sin, cos), radians) and (N, M) scores."""
        hyp, scores = self._split(raw)
        if self.angle_col is None:
            return hyp, scores
        out = hyp.new_zeros(hyp.shape[0], hyp.shape[1], self.transform.dim)
        out[:, :, self.angle_col] = torch.atan2(hyp[:, :, 1], hyp[:, :, 0])
        others = self._others()
        if others:
            out[:, :, others] = hyp[:, :, 2:]
        return out, scores

    NEAR = math.cos(math.pi / 4)  # poses within 45 degrees agree

    def views(self, x: Tensor, views: int, raw: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Hypotheses from exact quarter-turn views of (N, C, H, W) images, in the observed frame.

        ``views`` 2: the image and its 180-degree turn; 4: also +-90 (square images only).
        ``raw``: the (V*N, ...) outputs of :meth:`view_outputs` if already computed.
        Returns (N, V, M, P) poses and (N, V, M) raw scores (comparable within a view).
        """
        if raw is None:
            raw = self.view_outputs(x, views)
        n, m, dim = len(x), self.hypotheses, self.transform.dim
        params, scores = self.to_params(raw)
        back = torch.tensor([-t * math.pi / 2 for t in self._turns(views)], dtype=params.dtype, device=x.device)
        params = self.transform.rotate(params.reshape(-1, dim), back.repeat_interleave(n * m))
        return (params.reshape(views, n, m, dim).transpose(0, 1),
                scores.reshape(views, n, m).transpose(0, 1))

    def view_outputs(self, x: Tensor, views: int) -> Tensor:
        """(V*N, M * (W + 1)) raw outputs for the quarter-turn views of (N, C, H, W) images, view
        by view (the first N are the image as it is)."""
        if self.angle_col is None:
            raise AffineVAEError("head views > 1 need a transform with an angle")
        if views not in (2, 4) or (views == 4 and x.shape[2] != x.shape[3]):
            raise AffineVAEError(f"head views must be 1, 2 or 4 (4 needs square images), got {views} for "
                                 f"{x.shape[2]}x{x.shape[3]} images")
        # render(x, Pose(angle=t * pi / 2)) == rot90(x, t): a view's pose p_v = rotate(p, t * pi / 2)
        # one head pass per view (N images each: faster on a CPU than one pass over all V*N)
        return torch.cat([self(torch.rot90(x, t, dims=(2, 3))) for t in self._turns(views)])

    @staticmethod
    def _turns(views: int) -> tuple:
        return (0, 2) if views == 2 else (0, 1, 2, 3)

    def consensus(self, params: Tensor, prob: Tensor, with_confidence: bool = False):
        """(N, P) consensus of (N, V, M) poses with (N, V, M) within-view probabilities: the
        best-scored poses of the views that agree (within 45 degrees) with the best-supported
        one, averaged with their probabilities as weights (angles as unit vectors).
        Differentiable in ``params`` and ``prob``. ``with_confidence``: also the (N,)
        probability-weighted share of the views that agree, in (0, 1]."""
        n, v, m, dim = params.shape
        best = prob.argmax(2)  # (N, V)
        p_best = params.gather(2, best[:, :, None, None].expand(-1, -1, 1, dim))[:, :, 0]  # (N, V, P)
        w = prob.gather(2, best[:, :, None])[:, :, 0]  # (N, V)
        a = p_best[:, :, self.angle_col]
        u = torch.stack([a.cos(), a.sin()], -1)  # (N, V, 2)
        close = (u @ u.transpose(1, 2) > self.NEAR).to(w.dtype).detach()  # (N, V, V)
        anchor = (close * w[:, None, :]).sum(2).argmax(1)  # the best-supported view
        member = close[torch.arange(n, device=params.device), anchor] * w  # (N, V) weights of the agreeing views
        mean = (p_best * member[:, :, None]).sum(1) / member.sum(1, keepdim=True)
        mean_u = (u * member[:, :, None]).sum(1)
        angle = torch.atan2(mean_u[:, 1], mean_u[:, 0])
        pose = torch.cat([mean[:, :self.angle_col], angle[:, None], mean[:, self.angle_col + 1:]], 1)
        if with_confidence:
            return pose, member.sum(1) / w.sum(1)
        return pose

    def predict(self, x: Tensor, k: int = 1, views: int = 1, confidence: bool = False):
        """(N, C, H, W) images -> (N, k, P) poses: the ``k`` best-scored hypotheses (k clipped to M).

        ``views`` > 1 (2 or 4, angle parameterisations only) is test-time augmentation with
        exact quarter turns: the head also sees the image turned by 180 degrees (and by
        +-90 for 4 views, square images only; pixel permutations, no resampling), every
        view's poses are mapped back to the observed frame, and the first pose returned is
        the consensus: the best-scored poses of the views that agree (within 45 degrees)
        with the best-supported one, averaged with their softmax scores as weights (angles
        as unit vectors). Poses 2..k are the best-scored hypotheses that disagree with it
        (e.g. the 180-degree flip of a '6'), filled up with agreeing ones.
        ``confidence``: also return (N,) confidences in (0, 1]: the share of the views that
        agree (views > 1), or the best hypothesis' softmax score (one view).
        """
        if views == 1:
            params, scores = self.to_params(self(x))
            k = min(max(1, k), self.hypotheses)
            order = scores.topk(k, dim=1).indices
            poses = params.gather(1, order[:, :, None].expand(-1, -1, params.shape[2]))
            return (poses, torch.softmax(scores, 1).max(1).values) if confidence else poses
        params, scores = self.views(x, views)
        prob = torch.softmax(scores, 2)
        consensus, conf = self.consensus(params, prob, with_confidence=True)
        n, m, dim = len(x), self.hypotheses, self.transform.dim
        k = min(max(1, k), views * m)
        poses = consensus[:, None]
        if k > 1:
            flat, p_flat = params.reshape(n, views * m, dim), prob.reshape(n, views * m)
            fa = flat[:, :, self.angle_col]
            ca = consensus[:, self.angle_col, None]
            far = (torch.cos(fa - ca) <= self.NEAR).to(p_flat.dtype)
            order = (p_flat + 2 * far).topk(k - 1, dim=1).indices  # disagreeing hypotheses first
            rest = flat.gather(1, order[:, :, None].expand(-1, -1, dim))
            poses = torch.cat([poses, rest], 1)
        return (poses, conf) if confidence else poses

    def errors(self, raw: Tensor, target: Tensor) -> Tensor:
        """(N, M) squared error of each hypothesis against target parameters (N, P).

        The angle is compared as a unit vector (cos, sin); the other parameters are divided
        by the half-widths of their ranges so that every term is unitless.
        """
        hyp, _ = self._split(raw)
        target = target.detach().to(hyp.dtype)
        scale = self.scale.to(hyp.dtype)
        if self.angle_col is None:
            return (((hyp - target[:, None]) / scale) ** 2).sum(2)
        a = target[:, self.angle_col]
        err = (hyp[:, :, 0] - torch.cos(a)[:, None]) ** 2 + (hyp[:, :, 1] - torch.sin(a)[:, None]) ** 2
        others = self._others()
        if others:
            err = err + (((hyp[:, :, 2:] - target[:, None, others]) / scale[others]) ** 2).sum(2)
        return err

    def winner_takes_all(self, err: Tensor, scores: Tensor, ce_weight: float) -> tuple[Tensor, Tensor]:
        """(N,) loss and (N,) best error from the (N, M) errors of the hypotheses: the best one's
        error, a ``relax`` share of the others', and ``ce_weight`` times the cross-entropy of the
        (N, M) ``scores`` against the winner."""
        win = err.detach().argmin(1)
        best = err.gather(1, win[:, None])[:, 0]
        m = self.hypotheses
        if m == 1:
            return best, best
        rest = (err.sum(1) - best) / (m - 1)
        ce = torch.nn.functional.cross_entropy(scores, win, reduction="none")
        return (1 - self.relax) * best + self.relax * rest + ce_weight * ce, best

    def loss(self, raw: Tensor, target: Tensor) -> Tensor:
        """(N,) winner-takes-all loss against target parameters (N, P) (see :meth:`winner_takes_all`)."""
        _, scores = self._split(raw)
        return self.winner_takes_all(self.errors(raw, target), scores, 0.1)[0]


class PoseRefiner(nn.Module):
    """The second stage of the amortised start: corrects the angle of the head's pose.

    It sees the image canonicalised at the head's pose (``canonicalise(x, params)``: nearly
    upright, whatever the image's turn) and predicts the angle still left, bounded by
    ``max_angle``. The head has to tell any angle of the circle; this only a few degrees
    around the canonical pose, and those few degrees cost about a nat per MNIST digit. It is
    trained on the model's own ELBO (:func:`fit_pose_refiner`); the output layer starts at
    zero, so an untrained refiner leaves every pose as it is.

    Args:
        image_shape: (C, H, W).
        transform: the parameterisation (needs an angle).
        channels: stride-2 conv widths; hidden: width of the fully connected layer.
        max_angle: largest correction, radians.
    """

    def __init__(self, image_shape: tuple, transform: Parameterisation, channels: tuple = (8, 16), hidden: int = 64,
                 max_angle: float = 0.5) -> None:
        super().__init__()
        self.angle_col = transform.column("angle")
        if self.angle_col is None:
            raise AffineVAEError(f"a pose refiner corrects the angle: transform '{transform.name}' has none")
        self.max_angle = float(max_angle)
        self.conv, flat = _conv_trunk(image_shape, channels)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.fc[-1].weight)
        nn.init.zeros_(self.fc[-1].bias)

    def forward(self, canonical: Tensor) -> Tensor:
        """(N, C, H, W) images canonicalised at the current pose -> (N,) angle corrections, radians."""
        return self.max_angle * torch.tanh(self.fc(self.conv(canonical))[:, 0])

    def corrected(self, params: Tensor, delta: Tensor) -> Tensor:
        """(N, P) poses with their angle moved by ``delta`` (N,) radians (wrapped)."""
        c = self.angle_col
        return torch.cat([params[:, :c], wrap_angle(params[:, c] + delta)[:, None], params[:, c + 1:]], 1)


@dataclasses.dataclass(frozen=True)
class HeadTrainConfig(Config):
    """Options of :func:`fit_pose_head`.

    Attributes:
        target: what the head learns from. ``'search'``: regress poses found by a search
            (``params`` given). ``'elbo'``: the model's own objective at the head's poses,
            no search and no targets: every hypothesis is scored by the -ELBO at the
            posterior mean, the best one's gradient flows through the warp into the head
            (winner-takes-all) and the scores learn which hypothesis wins.
        tune_model: (``target='elbo'`` only) also train the inner model, on the sampled
            ELBO of the images in the pose the head picks (its best-scored hypothesis, as
            an amortised ``align`` does): the VAE and the head adapt to each other, which
            closes most of the gap between the head's pose and a full search.
        epochs: passes over the images.
        batch_size: images per Adam step.
        lr: Adam learning rate (head and, with ``tune_model``, the inner model).
        augment_rotation: each step, rotate every image by a random angle (and, for
            ``target='search'``, its target pose accordingly; exact for every
            parameterisation with an angle), so a few images teach the head the whole circle.
        views: (``target='elbo'`` only) 1, or train the consensus of 2/4 quarter-turn views
            of each image, the pose an ``align`` with ``head_views`` of the same number
            starts from (see :meth:`PoseHead.predict`): the ELBO is taken there and its
            gradient flows through the consensus into every view's prediction; the scores
            learn from the first view's hypotheses.
        start_noise: (:func:`fit_pose_refiner` only) standard deviation, radians, of the
            random angle added to the head's pose before the refiner sees it, so that it
            learns corrections a little larger than the head's own errors.
        seed: data order and augmentation angles.
    """

    target: str = "search"
    tune_model: bool = False
    epochs: int = 20
    batch_size: int = 128
    lr: float = 2e-3
    augment_rotation: bool = False
    views: int = 1
    start_noise: float = 0.035
    seed: int = 0

    def validate(self) -> None:
        check_choice("target", self.target, ["search", "elbo"])
        check_positive("start_noise", self.start_noise, allow_zero=True)
        _check_views("views", self.views)
        check(self.views == 1 or self.target == "elbo", "views > 1 needs target='elbo'")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{name} must be an integer >= 1, got {v!r}")
        check_positive("lr", self.lr)
        for name in ("augment_rotation", "tune_model"):
            check(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")
        check(not self.tune_model or self.target == "elbo", "tune_model needs target='elbo'")
        check(isinstance(self.seed, int) and not isinstance(self.seed, bool), f"seed must be an integer, got {self.seed!r}")


def _elbo_head_loss(model, head: PoseHead, x: Tensor, y: Optional[Tensor], tune_model: bool,
                    views: int = 1) -> tuple[Tensor, Tensor]:
    """(loss, reported (N,) -ELBO in nats) of one batch for ``target='elbo'`` (see :class:`HeadTrainConfig`)."""
    if views > 1:
        raw_views = head.view_outputs(x, views)
        params, scores = head.views(x, views, raw_views)  # (N, V, M, P), (N, V, M)
        pose = head.consensus(params, torch.softmax(scores, 2))
        hyp, scores = params[:, 0], scores[:, 0]  # the first view's hypotheses teach the scores
        raw = raw_views[:len(x)]  # the first view is the image as it is
    else:
        raw = head(x)
        hyp, scores = head.to_params(raw)
        pose = None
    n, m, p = hyp.shape
    rows = torch.arange(n, device=x.device)
    owner = rows.repeat_interleave(m)
    if tune_model or pose is not None:
        obj = evaluate_candidates(model, x, y, hyp.detach().reshape(n * m, p), owner, len(owner)).reshape(n, m)
        if pose is None:  # the pose the head picks (its score), like an amortised align
            pose = hyp[rows, scores.argmax(1)]
        # tune_model: the inner model learns at that pose (sampled ELBO), and the head with it
        value = -model._pass(x, y, pose, sample=tune_model).elbo
        loss = value
        if m > 1:
            loss = loss + torch.nn.functional.cross_entropy(scores, obj.argmin(1), reduction="none")
    else:
        obj = model.objective(x[owner], _take(y, owner), hyp.reshape(n * m, p)).reshape(n, m)
        loss, value = head.winner_takes_all(obj, scores, 1.0)
    if head.angle_col is not None:  # keep each (cos, sin) output near the unit circle
        raw_hyp, _ = head._split(raw)
        loss = loss + ((raw_hyp[:, :, 0] ** 2 + raw_hyp[:, :, 1] ** 2 - 1) ** 2).sum(1)
    return loss.mean(), value.detach()


def _epoch_batches(x: Tensor, cfg: HeadTrainConfig, rng: torch.Generator):
    """One epoch of (idx (B,), images (B, C, H, W), phi (B,) radians or None): ``x`` shuffled by
    ``rng`` in batches of ``cfg.batch_size``, each image turned by a random angle ``phi`` when
    ``cfg.augment_rotation``."""
    order = torch.randperm(len(x), generator=rng).to(x.device)
    for s in _chunks(len(x), cfg.batch_size):
        idx = order[s]
        xb, phi = x[idx], None
        if cfg.augment_rotation:
            phi = ((torch.rand(len(idx), generator=rng) * 2 - 1) * math.pi).to(x.device)
            with torch.no_grad():
                xb = render(xb, Pose(angle=phi))
        yield idx, xb, phi


@contextlib.contextmanager
def _fitting(model: nn.Module, mode: bool, params: list, requires_grad: bool):
    """``model.train(mode)`` and ``requires_grad`` set on ``params``; both restored on exit."""
    was_training, saved = model.training, [p.requires_grad for p in params]
    model.train(mode)
    for p in params:
        p.requires_grad_(requires_grad)
    try:
        yield
    finally:
        for p, req in zip(params, saved):
            p.requires_grad_(req)
        model.train(was_training)


def fit_pose_head(model, x, params=None, config: Optional[HeadTrainConfig] = None, *, y=None) -> list[float]:
    """Train ``model.head`` (the amortised start) on images ``x`` (N, C, H, W).

    With ``config.target='search'`` the head regresses the searched poses ``params`` (N, P);
    with ``'elbo'`` it needs no poses and maximises the model's ELBO at its own predictions
    (and ``tune_model`` trains the inner model with it). ``y`` (N,): labels for a
    class-conditional inner model (``'elbo'`` only). Only the head's weights change unless
    ``tune_model``. Returns one figure per epoch: the mean head loss (``'search'``,
    unitless) or the mean -ELBO at the head's poses (``'elbo'``, nats/image, on the
    augmented images). Raises :class:`AffineVAEError` if the model has no head or the
    inputs disagree.
    """
    cfg = config or HeadTrainConfig()
    head: Optional[PoseHead] = getattr(model, "head", None)
    if head is None:
        raise AffineVAEError("this AVAE has no pose head (build it with pose_head=True)")
    by_elbo = cfg.target == "elbo"
    x, y = model.check_input(x, y if by_elbo else None)
    transform: Parameterisation = model.transform
    if by_elbo:
        if params is not None:
            raise AffineVAEError("target='elbo' learns from the model's ELBO: give no params")
    else:
        if params is None:
            raise AffineVAEError("target='search' needs the searched poses: params (N, P)")
        params = transform.check(torch.as_tensor(params, dtype=torch.float32), "params").to(x.device)
        if len(params) != len(x):
            raise AffineVAEError(f"got {len(params)} poses for {len(x)} images")
    if cfg.augment_rotation and not transform.has_angle:
        raise AffineVAEError(f"augment_rotation needs a transform with an angle, not '{transform.name}'")
    inner = [p for n, p in model.named_parameters() if not n.startswith(("head.", "refiner."))]
    trainable = list(head.parameters()) + (inner if cfg.tune_model else [])
    opt = torch.optim.Adam(trainable, lr=cfg.lr)
    rng = torch.Generator().manual_seed(cfg.seed)
    history = []
    with _fitting(model, True, inner, cfg.tune_model):
        for _ in range(cfg.epochs):
            total = 0.0
            for idx, xb, phi in _epoch_batches(x, cfg, rng):
                pb = None if params is None else params[idx]
                if pb is not None and phi is not None:
                    pb = transform.rotate(pb, phi)
                if by_elbo:
                    loss, value = _elbo_head_loss(model, head, xb, _take(y, idx), cfg.tune_model, cfg.views)
                    total += float(value.sum())
                else:
                    loss = head.loss(head(xb), pb).mean()
                    total += float(loss.detach()) * len(idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            history.append(total / len(x))
    if hasattr(model, "head_trained"):
        model.head_trained.fill_(1)
    return history


def fit_pose_refiner(model, x, config: Optional[HeadTrainConfig] = None, *, y=None) -> list[float]:
    """Train ``model.refiner`` (built if the model has none) on images ``x`` (N, C, H, W).

    Every step: the head's pose of each image (the consensus of ``config.views`` views, as
    an ``align`` with ``head_views`` of that number starts from), plus a random angle of
    ``config.start_noise`` radians; the refiner sees the image canonicalised there and its
    correction is scored by the model's -ELBO at the corrected pose (posterior mean), whose
    gradient flows through the warp into the refiner. Only the refiner's weights change.
    Needs a trained pose head and ``config.target='elbo'`` (the default config is used with
    it); ``augment_rotation`` turns the images by random angles as in :func:`fit_pose_head`.
    ``y`` (N,): labels for a class-conditional inner model. Returns the mean -ELBO at the
    corrected poses per epoch (nats/image). Raises :class:`AffineVAEError`.
    """
    cfg = config or HeadTrainConfig(target="elbo")
    if cfg.target != "elbo" or cfg.tune_model:
        raise AffineVAEError("fit_pose_refiner learns from the ELBO alone: use target='elbo' without tune_model")
    if getattr(model, "head", None) is None or int(getattr(model, "head_trained", 0)) == 0:
        raise AffineVAEError("fit_pose_refiner needs a trained pose head (fit_pose_head or pose-optimised training first)")
    x, y = model.check_input(x, y)
    refiner: PoseRefiner = model.add_refiner()
    opt = torch.optim.Adam(refiner.parameters(), lr=cfg.lr)
    rng = torch.Generator().manual_seed(cfg.seed)
    others = [p for n, p in model.named_parameters() if not n.startswith("refiner.")]
    history = []
    # the head's and the model's passes as at inference (eval mode, frozen); only the refiner learns
    with _fitting(model, False, others, False):
        for _ in range(cfg.epochs):
            total = 0.0
            for idx, xb, _ in _epoch_batches(x, cfg, rng):
                yb = _take(y, idx)
                with torch.no_grad():
                    start = model.predict_pose(xb, 1, cfg.views)[:, 0]
                    noise = torch.randn(len(idx), generator=rng).to(x.device) * cfg.start_noise
                    start = refiner.corrected(start, noise)
                    canon = model.canonicalise(xb, start)
                value = model.objective(xb, yb, refiner.corrected(start, refiner(canon)))
                opt.zero_grad(set_to_none=True)
                value.mean().backward()
                opt.step()
                total += float(value.detach().sum())
            history.append(total / len(x))
    model.refiner_trained.fill_(1)
    return history
