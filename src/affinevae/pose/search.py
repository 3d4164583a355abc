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
With ``warm_trust`` (training, see :class:`~affinevae.pose.cache.PoseCache`), images whose head
pose agrees with their warm start (last epoch's pose) keep the warm start and skip them too.
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

import dataclasses
import math
from typing import Any, Optional

import torch
from torch import Tensor

from ..config import Config, as_config, check, check_positive, check_seed
from ..errors import AffineVAEError
from ..limits import MAX_SEARCH_EVALUATIONS_PER_IMAGE, check_allocation
from ..nn.transforms import Parameterisation, image_keys
from ..rng import seeded  # noqa: F401  (re-exported: pose.seeded)

__all__ = ["SearchConfig", "SearchResult", "search_poses", "make_starts", "evaluate_candidates", "refine", "seeded",
           "SEARCH_BLOCK", "chunks", "take", "check_views", "check_search_memory", "search_evaluations", "check_search_work",
           "agrees", "check_searched_model"]


def check_range(name: str, value: Any) -> None:
    """Refuse (one line naming ``name``) a search range that is not a pair (low, high) of finite
    numbers with low < high (in the parameter's units: radians, half-widths, log-scale)."""
    ok = (isinstance(value, tuple) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))
    check(ok and value[0] < value[1], f"{name} must be a pair (low, high) of finite numbers with low < high, got {value!r}")


def check_views(name: str, value: Any) -> None:
    """Refuse (:class:`~affinevae.errors.AffineVAEError`, one line naming ``name``) a head view count
    other than 1, 2 or 4 (the turns by multiples of 90 degrees the pose head is evaluated on)."""
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
        angle_range: (low, high) radians: the random angles are drawn in it, and every start (the pose
            head's too) and refined angle is kept in it (clamped); a full circle wraps angles instead.
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
        warm_trust: None (off), or an angle in [0, pi] radians: an image whose head pose (its
            first start) agrees within it with its warm start (the first of ``extra_starts``,
            e.g. its pose found in the last epoch; NaN rows: none known) keeps the warm start
            and skips the search (other parameters: the same share of their range's
            half-width, see :func:`agrees`). Combined with ``head_trust``, an image is left
            alone when either says so. Needs a trained head.
        use_refiner: correct the head's first start with the model's trained
            :class:`PoseRefiner`, if it has one (see :func:`fit_pose_refiner`).
        chunk: images per forward pass (bounds memory; N*R candidate images are chunked, in passes of at most
            :data:`SEARCH_BLOCK`; any chunk of at least that many gives the same results).
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
    warm_trust: Optional[float] = None
    use_refiner: bool = True
    chunk: int = 4096
    seed: int = 0
    elbo_samples: int = 1
    report_before: bool = True

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        for name in ("restarts", "keep", "chunk", "elbo_samples", "head_starts"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{name} must be an integer >= 1, got {v!r}")
        check(isinstance(self.steps, int) and not isinstance(self.steps, bool) and self.steps >= 0,
              f"steps must be an integer >= 0, got {self.steps!r}")
        check_views("head_views", self.head_views)
        check(self.head_trust is None or (isinstance(self.head_trust, (int, float)) and not isinstance(self.head_trust, bool)
                                          and 0 <= self.head_trust <= 1),
              f"head_trust must be None or a number in [0, 1], got {self.head_trust!r}")
        check(self.warm_trust is None or (isinstance(self.warm_trust, (int, float)) and not isinstance(self.warm_trust, bool)
                                          and 0 <= self.warm_trust <= math.pi),
              f"warm_trust must be None or an angle in [0, pi] radians, got {self.warm_trust!r}")
        check_positive("lr", self.lr)
        for name in ("angle_range", "log_scale_range", "shear_range", "shift_range"):
            check_range(name, getattr(self, name))
        check(self.angle_range[1] - self.angle_range[0] <= 2 * math.pi + 1e-6,
              f"angle_range spans more than a full circle: {self.angle_range!r} (radians)")
        for name in ("stratify", "include_identity", "use_head", "use_refiner", "report_before"):
            check(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")
        check_seed(self.seed)

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
        searched: (N,) bool: the images that went through the search (False: kept the pose
            head's pose, trusted with ``head_trust``); None when every image was searched.
    """

    params: Tensor
    objective: Tensor
    starts: Tensor
    start_objective: Tensor
    searched: Optional[Tensor] = None

    def detach(self) -> "SearchResult":
        """The same result with every tensor detached."""
        return SearchResult(self.params.detach(), self.objective.detach(), self.starts.detach(),
                            self.start_objective.detach(), None if self.searched is None else self.searched.detach())


#: Candidate rows per model pass of the search at most (:func:`evaluate_candidates`, :func:`refine`): the passes are
#: the same blocks of rows for every ``chunk`` of at least this many, so their floating-point rounding, and the
#: poses a near tie between restarts turns on, do not change with ``chunk`` (which only bounds memory).
SEARCH_BLOCK = 256


def chunks(n: int, size: int):
    """Slices ``[i, min(i + size, n))`` covering ``range(n)`` in order (``size`` >= 1 rows each)."""
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def check_search_memory(n: int, restarts: int, dim: int, image_shape: tuple, chunk: int) -> None:
    """Refuse in one line a search whose candidates would not fit in memory, before any is made:
    ``n`` images x ``restarts`` candidates of ``dim`` parameters (starts, owners, objectives,
    about 16 + 4 * dim bytes each) plus ``chunk`` candidate images of ``image_shape`` (C, H, W)
    rendered at a time (about 16 float32 copies each for the model's activations)."""
    pixels = 1
    for s in image_shape:
        pixels *= int(s)
    nbytes = n * restarts * (16 + 4 * dim) + min(chunk, n * restarts) * pixels * 4 * 16
    check_allocation(nbytes, f"a pose search of {n} images x {restarts} restarts (chunks of {chunk})",
                     "pose search (--restarts, --chunk)")


def search_evaluations(config: SearchConfig, restarts: Optional[int] = None, elbo: bool = False) -> int:
    """Model passes per image of a pose search with ``config``: the work it does for each image.

    Counted in passes of one image through the model: the ``restarts`` candidates (one each),
    the ``keep`` best of them refined by ``steps`` Adam steps (a forward and a backward pass,
    about 3 passes, per step) and evaluated once more at the end, and the pose head's
    ``head_views`` views (with ``use_head``; a head pass costs less than a model pass). With
    ``elbo`` (:func:`~affinevae.pose.align.align`) also its ELBO passes: ``elbo_samples`` in the
    found pose and, with ``report_before``, as many in the observed one. ``restarts`` (explicit
    starts, no head) overrides ``config.restarts``. Returns an int (passes per image).
    """
    r = config.restarts if restarts is None else int(restarts)
    k = min(config.keep, r)
    passes = r + k * (3 * config.steps + 1)
    if restarts is None and config.use_head:
        passes += config.head_views
    if elbo:
        passes += config.elbo_samples * (2 if config.report_before else 1)
    return passes


def check_search_work(n: int, config: SearchConfig, restarts: Optional[int] = None, elbo: bool = False) -> None:
    """Refuse in one line a pose search of ``n`` images that would spend more than
    :data:`affinevae.limits.MAX_SEARCH_EVALUATIONS_PER_IMAGE` model passes on each image
    (:func:`search_evaluations`; ``restarts`` and ``elbo`` as there), before any work is done.

    Raises:
        AffineVAEError: naming the estimate (passes per image, and in all), the limit, and the
            options that lower it (``--restarts``, ``--keep``, ``--steps``, ``--elbo-samples``:
            the :class:`SearchConfig` fields of the same names).
    """
    per_image = search_evaluations(config, restarts, elbo)
    if per_image <= MAX_SEARCH_EVALUATIONS_PER_IMAGE:
        return
    r = config.restarts if restarts is None else int(restarts)
    parts = [f"{r:,} restarts", f"{min(config.keep, r):,} kept x {config.steps:,} Adam steps"]
    options = ["--restarts", "--keep", "--steps"]
    if elbo:
        parts.append(f"{config.elbo_samples:,} ELBO sample{'s' if config.elbo_samples != 1 else ''}")
        options.append("--elbo-samples")
    d = SearchConfig()
    raise AffineVAEError(f"pose search ({', '.join(options)}): {n:,} images x {per_image:,} model passes each "
                         f"({', '.join(parts)}) = about {n * per_image:.2e} passes, more than the "
                         f"{MAX_SEARCH_EVALUATIONS_PER_IMAGE:,} per image that any search needs "
                         f"(affinevae.limits.MAX_SEARCH_EVALUATIONS_PER_IMAGE); lower {', '.join(options)} "
                         f"(the default search: {d.restarts} restarts, {d.keep} kept x {d.steps} steps, "
                         f"{search_evaluations(d, elbo=elbo)} passes per image)")


def take(y: Optional[Tensor], idx: Tensor) -> Optional[Tensor]:
    """Rows ``idx`` (K,) of labels ``y`` (N, ...), or None when there are no labels."""
    return None if y is None else y[idx]


@torch.no_grad()
def evaluate_candidates(model, x: Tensor, y: Optional[Tensor], params: Tensor, owner: Tensor, chunk: int) -> Tensor:
    """Objective (M,) of M candidates ``params`` (M, P) for images ``x[owner]``, no gradients.

    ``params`` are transform parameters (P of them: ``model.transform``'s, e.g. the angle in
    radians, shifts in half widths, log scale), ``owner`` (M,) int64 the image of each candidate,
    ``chunk`` the candidates scored per model pass (at most :data:`SEARCH_BLOCK`). The objective is ``model.objective``: the
    -ELBO in nats at the posterior mean (lower is better); NaN is returned as +inf, never the best."""
    out = torch.empty(len(params), device=x.device)
    for s in chunks(len(params), min(chunk, SEARCH_BLOCK)):
        out[s] = model.objective(x[owner[s]], take(y, owner[s]), params[s]).float()
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
        for s in chunks(len(p), min(config.chunk, SEARCH_BLOCK)):
            with torch.enable_grad():
                loss = model.objective(x[owner[s]], take(y, owner[s]), p[s]).float()
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
    """(N, R, P) restarts: head prediction, ``extra_starts`` (N, E, P), identity, random draws,
    as transform parameters (P: ``model.transform``'s, e.g. the angle in radians, shifts in half
    widths; R = ``config.restarts``) for N images ``x`` (N, C, H, W).

    Fixed starts come first and take precedence; random draws (CPU ``generator``, or the
    global generator if None) fill up to ``config.restarts``: outside training (``model`` in eval mode)
    each image's from one number drawn from the generator and a hash of its own pixels
    (:func:`~affinevae.nn.transforms.image_keys`), so an image searched alone or in any batch starts
    alike; in training straight from the generator.
    """
    return _starts(model, x, config, extra_starts, generator)[0]


def _starts(model, x: Tensor, config: SearchConfig, extra_starts: Optional[Tensor],
            generator: Optional[torch.Generator]) -> tuple[Tensor, Optional[Tensor], int]:
    """:func:`make_starts`, the (N,) confidence of the head's prediction (None without one) and
    the number of head poses that come first in the starts. NaN rows of ``extra_starts`` (no
    pose known) become the identity."""
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
        fixed.append(torch.nan_to_num(extra, nan=0.0).to(x.device))
    if config.include_identity:
        fixed.append(transform.identity(n, device=x.device)[:, None])
    n_head = fixed[0].shape[1] if conf is not None else 0
    n_fixed = sum(f.shape[1] for f in fixed)
    n_random = max(0, config.restarts - n_fixed)
    parts = fixed
    if n_random:
        # outside training each image's random starts hang on its own pixels and one draw of the generator, not on
        # the batch it is in (encode, align); training's searches draw them from the generator as they always did
        keys = None if getattr(model, "training", False) else image_keys(x)
        parts = fixed + [transform.sample(n, n_random, config.ranges(), generator, config.stratify,
                                          keys=keys).to(x.device)]
    starts = torch.cat(parts, 1)[:, :config.restarts]
    starts = transform.project(starts.reshape(-1, transform.dim), config.ranges()).reshape(n, -1, transform.dim)
    return starts, conf, n_head


def check_searched_model(model, where: str) -> None:
    """Refuse in one line starting with ``where`` anything but a model whose pose is searched (an AVAE:
    ``affinevae.pose.as_avae`` wraps a plain model)."""
    if getattr(model, "pose_source", None) != "searched" or not hasattr(model, "transform"):
        kind = getattr(model, "family_label", None) or type(model).__name__
        raise AffineVAEError(f"{where}: needs an AVAE (a model whose pose is searched), got {kind}; "
                             "affinevae.pose.as_avae(model) wraps a plain model")


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

    Raises:
        AffineVAEError: ``starts`` of another shape; a search over
            :data:`affinevae.limits.MAX_SEARCH_EVALUATIONS_PER_IMAGE` model passes per image
            (:func:`check_search_work`) or over the memory limit (:func:`check_search_memory`),
            refused before any work.
    """
    check_searched_model(model, "search_poses")
    cfg = as_config(config, SearchConfig, "search_poses") or SearchConfig()
    transform: Parameterisation = model.transform
    n = len(x)
    if starts is not None:
        starts = torch.as_tensor(starts, dtype=torch.float32)
        if starts.dim() != 3 or starts.shape[0] != n or starts.shape[2] != transform.dim or starts.shape[1] < 1:
            raise AffineVAEError(f"starts must have shape ({n}, R, {transform.dim}), got {tuple(starts.shape)}")
        if not torch.isfinite(starts).all():
            raise AffineVAEError(f"starts hold {int((~torch.isfinite(starts)).sum())} NaN or infinite values")
    given = None if starts is None else int(starts.shape[1])
    check_search_work(n, cfg, given)  # compute, then memory, before anything is made
    check_search_memory(n, cfg.restarts if given is None else given, transform.dim, tuple(x.shape[1:]), cfg.chunk)
    if starts is None:
        starts, conf, n_head = _starts(model, x, cfg, extra_starts, generator)
        if conf is not None and (cfg.head_trust is not None or cfg.warm_trust is not None):
            sure = conf >= cfg.head_trust if cfg.head_trust is not None else torch.zeros_like(conf, dtype=torch.bool)
            first = starts[:, 0]
            if cfg.warm_trust is not None and extra_starts is not None and n_head < starts.shape[1]:
                known = torch.isfinite(torch.as_tensor(extra_starts)[:, 0]).all(1).to(x.device)
                warm = starts[:, n_head]
                agree = known & agrees(transform, first, warm, cfg.warm_trust, cfg.ranges())
                first = torch.where(agree[:, None], warm, first)
                sure = sure | agree
            return _trusting(model, x, y, cfg, starts, sure, first)
    else:
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


def agrees(transform: Parameterisation, a: Tensor, b: Tensor, tolerance: float, ranges: dict) -> Tensor:
    """(N,) bool: poses ``a`` and ``b`` (N, P) agree within ``tolerance``: their angles (wrapped) differ
    by at most ``tolerance`` radians, and every other parameter by at most the same share
    (``tolerance / pi``) of its range's half-width; ``ranges``: range name -> (low, high) in the parameters'
    units (:meth:`~affinevae.nn.transforms.Parameterisation.sample`)."""
    lo, hi = transform.bounds(ranges, device=a.device)
    limit = tolerance / math.pi * (hi - lo) / 2
    diff = (a - b).abs()
    c = transform.column("angle")
    if c is not None:
        limit[c] = tolerance
        diff[:, c] = (torch.remainder(a[:, c] - b[:, c] + math.pi, 2 * math.pi) - math.pi).abs()
    return (diff <= limit).all(1)


def _trusting(model, x: Tensor, y: Optional[Tensor], cfg: SearchConfig, starts: Tensor, sure: Tensor,
              first: Tensor) -> SearchResult:
    """Search only the images that are not ``sure`` (N,) bool; the sure ones keep ``first`` (N, P)."""
    n = len(x)
    params = first.clone()
    objective = torch.full((n,), math.nan, device=x.device)
    start_obj = torch.full(starts.shape[:2], math.nan, device=x.device)
    unsure = (~sure).nonzero()[:, 0]
    if len(unsure):
        sub = search_poses(model, x[unsure], take(y, unsure), cfg.replace(head_trust=None, warm_trust=None),
                           starts=starts[unsure])
        params[unsure], objective[unsure], start_obj[unsure] = sub.params, sub.objective, sub.start_objective
    return SearchResult(params, objective, starts, start_obj, ~sure)


