"""Pixel likelihoods p(x | decoder output), each returning log-probabilities summed per image (nats), and
the Gaussian posterior's KL from its prior (:func:`gaussian_kl`), which every variational family scores."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import Registry


def gaussian_kl(mean: Tensor, logvar: Tensor, prior_std: float | Tensor = 1.0) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, prior_std^2)) summed over the last dim: (N, D) -> (N,)."""
    prior_var = torch.as_tensor(prior_std, dtype=mean.dtype, device=mean.device) ** 2
    kl = 0.5 * ((mean**2 + logvar.exp()) / prior_var - 1 - logvar + torch.log(prior_var))
    return kl.sum(-1)


LIKELIHOODS: Registry = Registry("likelihood")


def density_likelihoods() -> list[str]:
    """Names of the registered likelihoods that are normalised densities (:attr:`Likelihood.density`):
    those a variational model takes, e.g. ['bernoulli', 'cbernoulli', 'gaussian'] and any registered
    by the user (:data:`LIKELIHOODS`)."""
    return [name for name in LIKELIHOODS.names() if LIKELIHOODS.get(name).density]


class Likelihood:
    """Interface: ``log_prob(params, x, log_sigma)`` -> (N,) nats, ``mean(params)`` -> image."""

    name = ""
    #: (low, high) the pixels must lie in, or None for any real value.
    support: tuple[float, float] | None = None
    #: True when :meth:`log_prob` is a normalised density, as a variational model's ELBO needs (the AE's
    #: squared error is not one: the AE alone takes it).
    density: bool = True

    def log_prob(self, params: Tensor, x: Tensor, log_sigma: Tensor | None = None) -> Tensor:
        """(N,) log p(x | params) in nats, summed over every pixel of each image.

        Args:
            params: (N, C, H, W) decoder output (logits for the Bernoulli kinds, means otherwise).
            x: (N, C, H, W) images, in [0, 1] for the Bernoulli kinds.
            log_sigma: natural log of the Gaussian pixel standard deviation (others ignore it): a scalar,
                or (H, W) with a model's ``sigma_radius`` (:meth:`~affinevae.models.base.LatentModel.pixel_log_sigma`).
        """
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        """(N, C, H, W) expected image E[x | params] (pixel intensities)."""
        raise NotImplementedError

    def params_for_mean(self, mean: Tensor) -> Tensor:
        """Decoder output whose :meth:`mean` is (about) the image ``mean`` (any shape): identity here."""
        return mean


@LIKELIHOODS.register("bernoulli")
class Bernoulli(Likelihood):
    """Bernoulli pixels; ``params`` are logits, x in [0, 1] (soft targets allowed)."""

    name = "bernoulli"
    support = (0.0, 1.0)

    def log_prob(self, params, x, log_sigma=None):
        """(N,) log p(x | params) in nats of (N, C, H, W) ``x``: see :meth:`Likelihood.log_prob`."""
        return -F.binary_cross_entropy_with_logits(params, x, reduction="none").flatten(1).sum(1)

    def mean(self, params):
        """(N, C, H, W) expected image E[x | params]: see :meth:`Likelihood.mean`."""
        return torch.sigmoid(params)

    def params_for_mean(self, mean):
        """Logits of ``mean`` (clamped to [1e-3, 1 - 1e-3])."""
        return torch.logit(mean.clamp(1e-3, 1 - 1e-3))


def _cb_log_norm(logits: Tensor) -> Tensor:
    """log C(lambda) of the continuous Bernoulli, computed stably from logits."""
    lam = torch.sigmoid(logits).clamp(1e-6, 1 - 1e-6)
    near_half = (lam - 0.5).abs() < 1e-3
    safe = torch.where(near_half, torch.full_like(lam, 0.25), lam)
    log_norm = torch.log((torch.log1p(-safe) - torch.log(safe)).abs()) - torch.log((1 - 2 * safe).abs())
    # Taylor expansion around 1/2: log 2 + (4/3) (lam - 1/2)^2
    taylor = math.log(2.0) + 4.0 / 3.0 * (lam - 0.5) ** 2
    return torch.where(near_half, taylor, log_norm)


@LIKELIHOODS.register("cbernoulli")
class ContinuousBernoulli(Likelihood):
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019); ``params`` are logits."""

    name = "cbernoulli"
    support = (0.0, 1.0)

    def log_prob(self, params, x, log_sigma=None):
        """(N,) log p(x | params) in nats of (N, C, H, W) ``x``: see :meth:`Likelihood.log_prob`."""
        bce = F.binary_cross_entropy_with_logits(params, x, reduction="none")
        return (-bce + _cb_log_norm(params)).flatten(1).sum(1)

    def mean(self, params):
        """(N, C, H, W) expected image E[x | params]: see :meth:`Likelihood.mean`."""
        lam = torch.sigmoid(params).clamp(1e-6, 1 - 1e-6)
        mean = lam / (2 * lam - 1) + 1 / (2 * torch.atanh(1 - 2 * lam))
        return torch.where((lam - 0.5).abs() < 1e-3, torch.full_like(lam, 0.5), mean)

    # Logits of the mean, as for the Bernoulli: the mean of the continuous Bernoulli lies between its
    # parameter and 1/2, so this starts a little further from grey than asked.
    params_for_mean = Bernoulli.params_for_mean


@LIKELIHOODS.register("gaussian")
class Gaussian(Likelihood):
    """Gaussian pixels with mean ``params`` and standard deviation exp(log_sigma)."""

    name = "gaussian"

    def log_prob(self, params, x, log_sigma=None):
        """(N,) log p(x | params) in nats of (N, C, H, W) ``x``: see :meth:`Likelihood.log_prob`."""
        ls = log_sigma if log_sigma is not None else torch.zeros((), device=x.device)
        ll = -0.5 * ((x - params) * torch.exp(-ls)) ** 2 - ls - 0.5 * math.log(2 * math.pi)
        return ll.flatten(1).sum(1)

    def mean(self, params):
        """(N, C, H, W) expected image E[x | params]: see :meth:`Likelihood.mean`."""
        return params


@LIKELIHOODS.register("mse")
class SquaredError(Likelihood):
    """Plain sum of squared errors (negated): the AE's MSE loss; not a normalised density."""

    name = "mse"
    density = False

    def log_prob(self, params, x, log_sigma=None):
        """(N,) log p(x | params) in nats of (N, C, H, W) ``x``: see :meth:`Likelihood.log_prob`."""
        return -((x - params) ** 2).flatten(1).sum(1)

    def mean(self, params):
        """(N, C, H, W) expected image E[x | params]: see :meth:`Likelihood.mean`."""
        return params
