"""The pose networks of the amortised start: the pose head (a pose from the observed image) and the
refiner (the angle still left, from the image canonicalised at the head's pose)."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..errors import AffineVAEError
from ..nn.affine import wrap_angle
from ..nn.transforms import Parameterisation

__all__ = ["PoseHead", "PoseRefiner", "conv_trunk"]


def conv_trunk(image_shape: tuple, channels: tuple) -> tuple[nn.Sequential, int]:
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
        self.conv, flat = conv_trunk(image_shape, channels)
        self.angle_col = transform.column("angle")
        self.width = transform.dim + (1 if self.angle_col is not None else 0)  # outputs per hypothesis
        n_out = self.hypotheses * (self.width + 1)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, M * (W + 1)) raw outputs (M hypotheses of W values, then M scores)."""
        return self.fc(self.conv(x))

    def split(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        """Raw outputs (N, M * (W + 1)) -> (N, M, W) hypotheses (raw: (cos, sin) of the angle first) and (N, M) scores."""
        m = self.hypotheses
        return raw[:, :m * self.width].reshape(len(raw), m, self.width), raw[:, m * self.width:]

    def _others(self) -> list[int]:
        return [i for i in range(self.transform.dim) if i != self.angle_col]

    def to_params(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        """Raw outputs -> (N, M, P) hypotheses (angle = atan2(sin, cos), radians) and (N, M) scores."""
        hyp, scores = self.split(raw)
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
        hyp, _ = self.split(raw)
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
        _, scores = self.split(raw)
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
        self.conv, flat = conv_trunk(image_shape, channels)
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


