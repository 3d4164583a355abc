"""Training the amortised start: the pose head (:func:`fit_pose_head`) and the refiner
(:func:`fit_pose_refiner`), as library functions the CLI calls; :class:`HeadTrainConfig` holds their
one set of defaults."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..config import Config, check, check_angle_spread, check_choice, check_positive, check_seed
from ..errors import AffineVAEError
from ..nn.affine import Pose, render
from ..nn.modes import module_mode
from ..nn.transforms import Parameterisation
from ..registry import MODELS
from ..rng import seeded
from .nets import PoseHead, PoseRefiner
from ..config import as_config
from .search import check_searched_model, check_views, chunks, evaluate_candidates, take

__all__ = ["HeadTrainConfig", "AMORTISE_DEFAULTS", "AmortiseResult", "amortise", "as_avae", "fit_pose_head", "fit_pose_refiner"]


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
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        check_choice("target", self.target, ["search", "elbo"])
        check_angle_spread("start_noise", self.start_noise, allow_zero=True)
        check_views("views", self.views)
        check(self.views == 1 or self.target == "elbo", "views > 1 needs target='elbo'")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{name} must be an integer >= 1, got {v!r}")
        check_positive("lr", self.lr)
        for name in ("augment_rotation", "tune_model"):
            check(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")
        check(not self.tune_model or self.target == "elbo", "tune_model needs target='elbo'")
        check_seed(self.seed)


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
        value = -model.pass_at(x, y, pose, sample=tune_model).elbo
        loss = value
        if m > 1:
            loss = loss + torch.nn.functional.cross_entropy(scores, obj.argmin(1), reduction="none")
    else:
        obj = model.objective(x[owner], take(y, owner), hyp.reshape(n * m, p)).reshape(n, m)
        loss, value = head.winner_takes_all(obj, scores, 1.0)
    if head.angle_col is not None:  # keep each (cos, sin) output near the unit circle
        raw_hyp, _ = head.split(raw)
        loss = loss + ((raw_hyp[:, :, 0] ** 2 + raw_hyp[:, :, 1] ** 2 - 1) ** 2).sum(1)
    return loss.mean(), value.detach()


def _epoch_batches(x: Tensor, cfg: HeadTrainConfig, rng: torch.Generator):
    """One epoch of (idx (B,), images (B, C, H, W), phi (B,) radians or None): ``x`` shuffled by
    ``rng`` in batches of ``cfg.batch_size``, each image turned by a random angle ``phi`` when
    ``cfg.augment_rotation``."""
    order = torch.randperm(len(x), generator=rng).to(x.device)
    for s in chunks(len(x), cfg.batch_size):
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
    saved = [p.requires_grad for p in params]
    with module_mode(model, mode):
        for p in params:
            p.requires_grad_(requires_grad)
        try:
            yield
        finally:
            for p, req in zip(params, saved):
                p.requires_grad_(req)


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
    check_searched_model(model, "fit_pose_head")
    cfg = as_config(config, HeadTrainConfig, "fit_pose_head") or HeadTrainConfig()
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
        if not torch.isfinite(params).all():
            raise AffineVAEError(f"params: {int((~torch.isfinite(params)).sum())} of the searched poses are NaN or "
                                 "infinite")
        if len(params) != len(x):
            raise AffineVAEError(f"got {len(params)} poses for {len(x)} images")
    if cfg.augment_rotation and not transform.has_angle:
        raise AffineVAEError(f"augment_rotation needs a transform with an angle, not '{transform.name}'")
    inner = list(model.inner_parameters())
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
                    loss, value = _elbo_head_loss(model, head, xb, take(y, idx), cfg.tune_model, cfg.views)
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
    check_searched_model(model, "fit_pose_refiner")
    cfg = as_config(config, HeadTrainConfig, "fit_pose_refiner") or HeadTrainConfig(target="elbo")
    if cfg.target != "elbo" or cfg.tune_model:
        raise AffineVAEError("fit_pose_refiner learns from the ELBO alone: use target='elbo' without tune_model")
    if getattr(model, "head", None) is None or int(getattr(model, "head_trained", 0)) == 0:
        raise AffineVAEError("fit_pose_refiner needs a trained pose head (fit_pose_head or pose-optimised training first)")
    x, y = model.check_input(x, y)
    refiner: PoseRefiner = model.add_refiner()
    opt = torch.optim.Adam(refiner.parameters(), lr=cfg.lr)
    rng = torch.Generator().manual_seed(cfg.seed)
    others = [*model.inner_parameters(), *model.head.parameters()]
    history = []
    # the head's and the model's passes as at inference (eval mode, frozen); only the refiner learns
    with _fitting(model, False, others, False):
        for _ in range(cfg.epochs):
            total = 0.0
            for idx, xb, _ in _epoch_batches(x, cfg, rng):
                yb = take(y, idx)
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


def _check_model(model, where: str) -> None:
    """One line for anything but a model (a module with a config): ``models.base.check_model``'s test, which this
    package cannot import (the models import the pose search)."""
    if not (isinstance(model, nn.Module) and hasattr(model, "config")):
        raise AffineVAEError(f"{where} must be a trained affinevae model, got {type(model).__name__}")


def as_avae(model: nn.Module, transform: Optional[str] = None, where: str = "model", pose_head: bool = False):
    """An AVAE from a loaded model: a plain model is wrapped (``transform``, default 'rotation';
    with a new, untrained pose head if ``pose_head``) on its device in eval mode; a model whose
    pose is searched (an AVAE) is returned as it is, after checking that ``transform`` (if given)
    is its own. ``where`` names the model in the one-line error."""
    _check_model(model, where)
    if getattr(model, "pose_source", None) == "searched":
        if transform is not None and transform != model.config.transform:
            raise AffineVAEError(f"{where} holds an avae with transform '{model.config.transform}'; "
                                 "--transform only applies when wrapping a plain model")
        return model
    return MODELS.get("avae")(model, transform=transform or "rotation", pose_head=pose_head).to(model.device).eval()


AMORTISE_DEFAULTS = HeadTrainConfig(target="elbo", epochs=16, lr=1e-3)
"""The defaults of :func:`amortise` and of ``affinevae amortise`` (one source for both): the head
learns from the model's own ELBO, 16 epochs at Adam learning rate 1e-3."""


@dataclasses.dataclass
class AmortiseResult:
    """What :func:`amortise` did.

    Attributes:
        model: the AVAE with its trained head (or refiner), in eval mode.
        history: per-epoch figure of the training (nats/image at the head's or the corrected
            poses for ``target='elbo'``; the unitless head loss for ``'search'``).
        trained: 'head' or 'refiner'.
    """

    model: nn.Module
    history: list
    trained: str


def amortise(model, images, labels=None, config: Optional[HeadTrainConfig] = None, *, refiner: bool = False,
             transform: Optional[str] = None, where: str = "model") -> AmortiseResult:
    """Train the amortised start of ``model`` on (N, C, H, W) ``images``: what ``affinevae amortise`` runs.

    A plain model is wrapped in an AVAE (``transform``, default rotation) with a new pose head.
    ``config`` (default :data:`AMORTISE_DEFAULTS`): ``target='search'`` first aligns the images
    with the model's own search and regresses those poses; ``'elbo'`` maximises the ELBO at the
    head's poses (``tune_model`` also trains the VAE). ``refiner``: train the pose refiner instead
    of the head (needs a trained head; ELBO target without ``tune_model``). With ``views`` > 1 the
    model's search starts from the consensus of that many views (``head_views``), as trained.
    ``labels`` (N,): for class-conditional models. ``config.seed`` fixes everything drawn (a new
    head's weights, the batch order, the model's noise); the caller's random state is left as it
    was. Raises :class:`AffineVAEError`.
    """
    cfg = as_config(config, HeadTrainConfig, "amortise") or AMORTISE_DEFAULTS
    if refiner and (cfg.target != "elbo" or cfg.tune_model):
        raise AffineVAEError("--refiner learns from the ELBO alone: no --target search, no --tune-model")
    _check_model(model, where)
    with seeded(cfg.seed, next(model.parameters()).device):
        return _amortise(model, images, labels, cfg, refiner, transform, where)


def _amortise(model, images, labels, cfg: HeadTrainConfig, refiner: bool, transform: Optional[str],
              where: str) -> AmortiseResult:
    avae = as_avae(model, transform, where, pose_head=True)
    if avae.head is None:
        raise AffineVAEError(f"{where}: this avae was built without a pose head (pose_head=false)")
    labels = labels if avae.conditional else None
    if refiner and int(avae.head_trained) == 0:  # in the words of amortise (and its command), not fit_pose_refiner's
        raise AffineVAEError(f"{where}: the refiner corrects a trained pose head's poses, and this model's head is "
                             "untrained; train the head first (amortise without --refiner / refiner=False, or "
                             "pose-optimised training)")
    if refiner:
        history = fit_pose_refiner(avae, images, cfg, y=labels)
    else:
        params = None
        if cfg.target == "search":
            params = avae.align(images, labels, avae.config.search.replace(report_before=False)).params
        history = fit_pose_head(avae, images, params, cfg, y=labels)
    if cfg.views > 1:  # align starts from the consensus the head was trained for
        avae.config = avae.config.replace(search=avae.config.search.replace(head_views=cfg.views))
    return AmortiseResult(model=avae.eval(), history=history, trained="refiner" if refiner else "head")
