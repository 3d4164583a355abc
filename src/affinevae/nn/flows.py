"""Normalising flows on the latent posterior: amortised planar flows (Rezende & Mohamed 2015).

A flow VAE's encoder gives, beside the Gaussian base posterior q0(z0 | x) = N(mean, std^2), the
parameters of K planar maps ``f_k(z) = z + u_k tanh(w_k . z + b_k)`` for each image; the latent the
decoder sees is ``z_K = f_K(... f_1(z0))``, whose density is ``q0(z0) / prod_k |det df_k/dz|``.
The KL from the N(0, I) prior is then estimated on the drawn sample (:func:`flow_kl`): the flow
gives the posterior shapes a diagonal Gaussian cannot (skewed, bent, several-lobed), which tightens
the ELBO. Each ``u_k`` is moved along ``w_k`` so that ``f_k`` is invertible (``w_k . u_k > -1``, as in
the paper's appendix, with a map that leaves ``u_k`` alone at ``w_k . u_k = 0``: :func:`invertible_u`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import AffineVAEError
from .likelihoods import gaussian_kl

__all__ = ["flow_parameter_count", "split_flow_parameters", "planar_flow", "flow_kl", "flow_dtype", "check_flow_steps",
           "MAX_FLOW_STEPS"]

#: The most planar steps a model takes (``flow_steps``).
MAX_FLOW_STEPS = 64


def check_flow_steps(steps) -> None:
    """A one-line :class:`AffineVAEError` unless ``steps`` (a config's ``flow_steps``) is an integer in
    0..:data:`MAX_FLOW_STEPS`."""
    if not (isinstance(steps, int) and not isinstance(steps, bool) and 0 <= steps <= MAX_FLOW_STEPS):
        raise AffineVAEError(f"flow_steps must be an integer in 0..{MAX_FLOW_STEPS}, got {steps!r}")


def flow_parameter_count(steps: int, dim: int) -> int:
    """Encoder outputs the flow needs per image: ``steps * (2 * dim + 1)`` (u, w of ``dim`` and b per step)."""
    return int(steps) * (2 * int(dim) + 1)


def split_flow_parameters(h: Tensor, steps: int, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """(N, steps * (2 dim + 1)) encoder outputs -> ``u`` (N, steps, dim), ``w`` (N, steps, dim), ``b`` (N, steps)."""
    n = h.shape[0]
    h = h.reshape(n, steps, 2 * dim + 1)
    return h[..., :dim], h[..., dim:2 * dim], h[..., 2 * dim]


#: ``softplus(SHIFT) = 1``: :func:`invertible_u`'s map of ``w . u`` keeps 0 at 0.
SHIFT = math.log(math.e - 1)
#: :func:`invertible_u` keeps ``w . u_hat >= -1 + MARGIN``.
MARGIN = 1e-3


def invertible_u(u: Tensor, w: Tensor) -> Tensor:
    """``u`` (..., D) moved along ``w`` (..., D) so that ``w . u_hat >= -1 + MARGIN`` (each planar map
    invertible, with a margin that the dtype's rounding of the dot products, about ``|u| |w| eps``, must
    stay below: float32 keeps it to ``|u| |w|`` of about 1e3, float64 (as :func:`planar_flow` computes)
    to 1e12): ``u_hat = u + (m(w . u) - w . u) w / |w|^2`` (then corrected once more along ``w``, as the
    subtraction cancels when ``|w . u|`` is large), with
    ``m(a) = max(softplus(a + SHIFT) - 1, -1 + MARGIN)``. The paper's
    ``m(a) = softplus(a) - 1`` moves u by ``0.31 w / |w|^2`` even at ``w . u = 0``, without bound as w
    shrinks (a flow started near the identity began far from it); this m keeps ``m(0) = 0``, so the
    move is at most ``|u|`` (about ``0.37 |u|`` for ``w . u >= 0``, 0 at ``w . u = 0``)."""
    norm2 = w.pow(2).sum(-1, keepdim=True) + 1e-12
    wu = (w * u).sum(-1, keepdim=True)
    m = (F.softplus(wu + SHIFT) - 1).clamp_min(-1 + MARGIN)
    u_hat = u + ((m - wu) / norm2) * w
    return u_hat + ((m - (w * u_hat).sum(-1, keepdim=True)) / norm2) * w  # once more: float32's cancellation


def flow_dtype(device: torch.device) -> torch.dtype:
    """The dtype the flow computes in on ``device``: float64 (float32 on Apple's MPS, which has no
    float64). In float32 the rounding of ``w . u_hat`` is about ``|u| |w| 6e-8``, which passes
    :data:`MARGIN` once ``|u| |w|`` nears 1e4 (a map no longer invertible, its log-determinant wrong);
    in float64 not before 1e12. The flow's arithmetic is a few operations on (N, K, D): its cost is nil
    beside the decoder's."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def planar_flow(z0: Tensor, u: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Push ``z0`` (N, D) through the N images' own K planar maps.

    ``u``, ``w`` (N, K, D) and ``b`` (N, K) as :func:`split_flow_parameters` gives them (``u`` is made
    invertible here). Returns ``z_K`` (N, D) and ``log|det dz_K/dz0|`` (N,) in nats, in ``z0``'s dtype
    (at least float32: under bfloat16 autocast too). The maps are computed in :func:`flow_dtype`
    (float64 where the device has it), outside autocast, so each is invertible as
    :func:`invertible_u` makes it. The K steps run in sequence, every step on the whole batch."""
    out = torch.promote_types(z0.dtype, torch.float32)
    dtype = flow_dtype(z0.device)
    with torch.autocast(z0.device.type, enabled=False):
        z, u, w, b = z0.to(dtype), u.to(dtype), w.to(dtype), b.to(dtype)
        logdet = torch.zeros(z0.shape[0], dtype=dtype, device=z0.device)
        u_hat = invertible_u(u, w)
        for k in range(u.shape[1]):
            uk, wk = u_hat[:, k], w[:, k]
            t = torch.tanh((wk * z).sum(1) + b[:, k])
            z = z + uk * t[:, None]
            logdet = logdet + torch.log((1 + (1 - t * t) * (wk * uk).sum(1)).abs() + 1e-8)
    return z.to(out), logdet.to(out)


def flow_kl(z0: Tensor, mean: Tensor, std: Tensor, zk: Tensor, logdet: Tensor) -> Tensor:
    """(N,) one-sample estimate of KL(q_K(z | x) || N(0, I)) in nats, with ``z0`` (N, D) drawn from
    N(``mean``, ``std``^2) (N, D each) and ``z_K`` (N, D), ``logdet`` (N,) from :func:`planar_flow`:
    the base posterior's exact Gaussian KL plus ``log N(z0; 0, I) - log N(z_K; 0, I) - log|det dz_K/dz0|``.
    Its expectation over z0 is the exact KL (``E[log q0(z0) - log p(z0)]`` is the Gaussian KL), and
    with the identity flow it is the Gaussian KL itself, without the sampling noise of estimating
    ``log q0 - log p`` on the draw (which kept a flow VAE collapsed at the start of training).
    Computed in float32 at least (outside bfloat16 autocast)."""
    with torch.autocast(z0.device.type, enabled=False):
        z0, mean, std, zk, logdet = (t.to(torch.promote_types(t.dtype, torch.float32))
                                     for t in (z0, mean, std, zk, logdet))
        return gaussian_kl(mean, 2 * torch.log(std)) + 0.5 * (zk.pow(2) - z0.pow(2)).sum(1) - logdet
