"""The rotation posterior over the full circle: a discrete bin plus a Gaussian offset inside it.

The angle (radians, counter-clockwise on screen) is ``theta = 2 pi k / N + delta`` with the
bin k in {0..N-1} and the offset delta real:

- posterior ``q(k) = softmax(logits)_k`` and ``q(delta | k) = Normal(mu_k, sigma_k^2)``;
- prior ``p(k) = 1/N`` and ``p(delta | k) = Normal(0, s^2)`` with ``s = pi / N`` (half a bin)
  by default. The prior's marginal on the circle, a ring of N Gaussians two standard
  deviations apart, is uniform to within 1.5 % (its first Fourier coefficient is
  ``2 exp(-pi^2 / 2)``), and unlike a uniform-in-bin prior it keeps the KL finite for a
  Gaussian offset posterior, so the KL below is exact in closed form.

The KL of the joint (k, delta) is ``KL(q(k) || p(k)) + sum_k q(k) KL(q(delta|k) || p(delta|k))``,
an upper bound of the KL of the angle's marginal, so the ELBO with it is a true lower bound.

Two ways to take the expectation over k in the reconstruction term (:data:`SAMPLERS`):

- ``'gumbel'``: one bin per image drawn with the Gumbel-max trick; the gradient to the logits
  comes from the relaxed (softmax) weights, straight-through, via the angle's unit vector
  ``sum_k w_k (cos theta_k, sin theta_k)`` (exact on the forward pass, a circular first-order
  estimate backwards);
- ``'enumerate'``: every bin per image (B*N decoder rows in one batch), weighted by q(k):
  exact in k, N times the decoder cost.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch
from torch import Tensor

from ..errors import AffineVAEError
from .affine import wrap_angle

#: How the reconstruction term's expectation over the rotation bin is taken.
SAMPLERS = ("gumbel", "enumerate")


@dataclasses.dataclass
class RotationPosterior:
    """q(k, delta) for a batch of B images over N rotation bins.

    Attributes:
        logits: (B, N) unnormalised log q(k); bin k is centred on ``2 pi k / N`` radians.
        offset_mean: (B, N) mean of delta given k, radians.
        offset_logstd: (B, N) log standard deviation of delta given k.
    """

    logits: Tensor
    offset_mean: Tensor
    offset_logstd: Tensor

    @property
    def order(self) -> int:
        """N, the number of bins."""
        return self.logits.shape[1]

    @property
    def log_probs(self) -> Tensor:
        """(B, N) log q(k)."""
        return torch.log_softmax(self.logits.float(), 1)

    @property
    def probs(self) -> Tensor:
        """(B, N) q(k)."""
        return torch.softmax(self.logits.float(), 1)

    @property
    def offset_std(self) -> Tensor:
        """(B, N) standard deviation of delta given k, radians."""
        return torch.exp(self.offset_logstd)

    def bin_angles(self) -> Tensor:
        """(N,) centres of the bins, ``2 pi k / N`` radians."""
        n = self.order
        return torch.arange(n, device=self.logits.device, dtype=torch.float32) * (2 * math.pi / n)

    def default_prior_std(self) -> float:
        """The default prior standard deviation of the offset, ``pi / N`` radians (half a bin)."""
        return math.pi / self.order

    # ------------------------------------------------------------------ summaries
    def mean_angle(self) -> Tensor:
        """(B,) the posterior-mean angle: the most probable bin's centre plus its offset mean, in [-pi, pi)."""
        k = self.logits.argmax(1)
        angle = self.bin_angles()[k] + self.offset_mean.gather(1, k[:, None])[:, 0]
        return wrap_angle(angle)

    def resultant(self) -> Tensor:
        """(B,) complex E[exp(i theta)] of the mixture (exact: each offset is Gaussian)."""
        theta = self.bin_angles() + self.offset_mean
        weight = self.probs * torch.exp(-0.5 * self.offset_std**2)
        return torch.complex((weight * torch.cos(theta)).sum(1), (weight * torch.sin(theta)).sum(1))

    def circular_mean(self) -> Tensor:
        """(B,) the circular mean ``arg E[exp(i theta)]`` of the mixture, radians."""
        return torch.angle(self.resultant())

    def circular_std(self) -> Tensor:
        """(B,) the circular standard deviation ``sqrt(-2 ln |E[exp(i theta)]|)``, radians (0 = certain)."""
        r = self.resultant().abs().clamp(1e-12, 1.0)
        return torch.sqrt(-2 * torch.log(r))

    def log_prob(self, angle: Tensor) -> Tensor:
        """(B,) log density of the mixture on the circle at ``angle`` (B,) radians, per radian.

        ``log sum_k q(k) Normal(theta - 2 pi k / N; mu_k, sigma_k^2)`` with each offset Gaussian
        wrapped once each way round the circle (the terms at +-2 pi), which is exact to within
        ``exp(-2 (pi / sigma)^2)`` for offsets narrower than half the circle. Training a pose head
        on known angles maximises it (``benchmarks/bench_full_circle.py --oracle``).
        """
        angle = torch.as_tensor(angle, dtype=torch.float32, device=self.logits.device).reshape(-1, 1, 1)
        laps = torch.tensor([-2 * math.pi, 0.0, 2 * math.pi], device=self.logits.device)
        d = wrap_angle(angle[:, :, 0] - self.bin_angles())[:, :, None] + laps  # (B, N, 3)
        logstd = self.offset_logstd.float()[:, :, None]
        z = (d - self.offset_mean.float()[:, :, None]) * torch.exp(-logstd)
        log_normal = torch.logsumexp(-0.5 * z**2 - logstd, 2) - 0.5 * math.log(2 * math.pi)  # (B, N)
        return torch.logsumexp(self.log_probs + log_normal, 1)

    # ------------------------------------------------------------------ KL
    def kl(self, prior_std: Optional[float] = None) -> Tensor:
        """(B,) exact KL(q(k, delta) || p(k, delta)) in nats (prior: uniform k, Normal(0, prior_std^2) offsets).

        ``prior_std`` defaults to :meth:`default_prior_std` (pi / N).
        """
        s = self.default_prior_std() if prior_std is None else float(prior_std)
        logq = self.log_probs
        q = logq.exp()
        kl_bin = (q * logq).sum(1) + math.log(self.order)
        logstd = self.offset_logstd.float()
        mu = self.offset_mean.float()
        kl_off = math.log(s) - logstd + 0.5 * (torch.exp(2 * logstd) + mu**2) / s**2 - 0.5  # (B, N)
        return kl_bin + (q * kl_off).sum(1)

    # ------------------------------------------------------------------ sampling
    def sample_offsets(self, generator: Optional[torch.Generator] = None) -> Tensor:
        """(B, N) reparameterised offset draws, one per bin."""
        eps = torch.randn(self.offset_mean.shape, generator=generator, device=self.offset_mean.device,
                          dtype=self.offset_mean.dtype)
        return self.offset_mean + self.offset_std * eps

    def enumerate(self, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """Every bin at once: ``(angles (B, N), weights (B, N))``.

        ``angles[b, k] = 2 pi k / N + delta_k`` with delta_k reparameterised from q(delta | k), wrapped
        to [-pi, pi); ``weights = q(k)`` (differentiable). The reconstruction term is
        ``sum_k weights[:, k] * log p(x | angles[:, k])``.
        """
        return wrap_angle(self.bin_angles() + self.sample_offsets(generator)), self.probs

    def sample_gumbel(self, temperature: float = 1.0, hard: bool = True,
                      generator: Optional[torch.Generator] = None) -> Tensor:
        """(B,) one angle per image, radians in [-pi, pi).

        The bin is drawn by Gumbel-max on the logits; the relaxed weights
        ``w = softmax((logits + g) / temperature)`` carry the gradient. With ``hard`` the
        forward value is the drawn bin exactly (straight-through: ``onehot - w.detach() + w``);
        otherwise the angle is the circular mean of the bins under ``w``. Either way the angle is
        ``atan2(sum_k w_k sin theta_k, sum_k w_k cos theta_k)`` with ``theta_k`` the bin centre plus a
        reparameterised offset, so a bin's gradient is the loss's angular derivative times
        ``sin(theta_k - theta)``.
        """
        if not temperature > 0:
            raise AffineVAEError(f"the Gumbel-softmax temperature must be > 0, got {temperature!r}")
        u = torch.rand(self.logits.shape, generator=generator, device=self.logits.device)
        g = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
        w = torch.softmax((self.logits.float() + g) / temperature, 1)
        if hard:
            onehot = torch.nn.functional.one_hot(w.argmax(1), self.order).to(w.dtype)
            w = onehot - w.detach() + w
        theta = self.bin_angles() + self.sample_offsets(generator)
        return torch.atan2((w * torch.sin(theta)).sum(1), (w * torch.cos(theta)).sum(1))

    def roll(self, shift: int) -> "RotationPosterior":
        """The posterior turned by ``shift`` bins (every tensor rolled along the bin axis)."""
        return RotationPosterior(*(torch.roll(t, shift, 1) for t in (self.logits, self.offset_mean, self.offset_logstd)))

    def index(self, idx) -> "RotationPosterior":
        """The sub-batch ``idx`` (slice, index tensor or mask)."""
        return RotationPosterior(self.logits[idx], self.offset_mean[idx], self.offset_logstd[idx])
