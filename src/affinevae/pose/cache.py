"""The per-image pose cache of pose-optimised training (the AVAE's ``warm_start``).

During training every image's found pose is kept under its index in the training data and
offered as a start of its next search (a warm start): last epoch's pose is usually still nearly
right, so an image whose pose head agrees with it needs no search at all
(:attr:`~affinevae.pose.search.SearchConfig.warm_trust`).

The cached poses are also refined for free by the training step itself: the gradient of the
training loss with respect to the pose (one backward through the two warps, which the step
runs anyway) moves each image's cached pose by a per-image, per-parameter step whose size
adapts as in Rprop (Riedmiller & Braun 1993): it grows by ``grow`` while the gradient keeps its
sign and shrinks by ``shrink`` when it flips, between ``min_step`` and ``max_step``. Only the
gradient's sign is used, so the loss scale (batch mean, sampled ELBO, bf16) does not matter.

The cache is an ``nn.Module`` whose buffers (poses, step sizes, last signs) move with the model
(``.to(device)``) but are *not* in its state dict: they are training state sized by the data, which
a saved model does not need (and :func:`affinevae.load` checks every saved tensor's shape against a
fresh model). A resumed run therefore starts with an empty cache: its first epoch searches like
the first epoch of training, and it does not continue bit-exactly (an uninterrupted run is
deterministic by seed).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import AffineVAEError
from ..nn.transforms import Parameterisation

__all__ = ["PoseCache"]


class PoseCache(nn.Module):
    """Last found pose (N, P) of every training image, by index, with its Rprop refinement state.

    Args:
        transform: the parameterisation (P parameters per pose).
        ranges: the search ranges; refined poses are projected into them (angles wrapped).
        step: initial step size (radians for angles, natural units otherwise).
        min_step, max_step: bounds of the per-image step size.
        grow, shrink: step-size factors when the gradient keeps / flips its sign.

    Buffers (not in the state dict; N grows with the largest index seen): ``params`` (N, P) (NaN: no pose yet),
    ``steps`` (N, P) step sizes, ``signs`` (N, P) the sign of the last gradient (0: none).
    """

    def __init__(self, transform: Parameterisation, ranges: dict, step: float = 0.02, min_step: float = 1e-3,
                 max_step: float = 0.1, grow: float = 1.2, shrink: float = 0.5) -> None:
        super().__init__()
        if not (0 < min_step <= step <= max_step and 0 < shrink < 1 <= grow):
            raise AffineVAEError(f"pose cache: need 0 < min_step <= step <= max_step and 0 < shrink < 1 <= grow, got "
                                 f"{min_step}, {step}, {max_step}, {shrink}, {grow}")
        self.transform = transform
        self.ranges = dict(ranges)
        self.step0, self.min_step, self.max_step, self.grow, self.shrink = step, min_step, max_step, grow, shrink
        p = transform.dim
        # training state, not saved with the model (see the module docstring)
        self.register_buffer("params", torch.zeros(0, p), persistent=False)
        self.register_buffer("steps", torch.zeros(0, p), persistent=False)
        self.register_buffer("signs", torch.zeros(0, p), persistent=False)

    def __len__(self) -> int:
        return len(self.params)

    def grow_to(self, n: int) -> None:
        """Make room for indices < ``n`` (new rows: no pose, initial step, no sign)."""
        old = len(self.params)
        if n <= old:
            return
        dev, p = self.params.device, self.transform.dim
        self.params = torch.cat([self.params, torch.full((n - old, p), float("nan"), device=dev)])
        self.steps = torch.cat([self.steps, torch.full((n - old, p), self.step0, device=dev)])
        self.signs = torch.cat([self.signs, torch.zeros(n - old, p, device=dev)])

    def _rows(self, index: Tensor) -> Tensor:
        idx = torch.as_tensor(index).long().reshape(-1).to(self.params.device)
        if len(idx) and int(idx.min()) < 0:
            raise AffineVAEError("pose cache: negative image index")
        if len(idx):
            self.grow_to(int(idx.max()) + 1)
        return idx

    def starts(self, index: Tensor, device=None) -> Tensor:
        """(N, 1, P) cached poses of the images ``index`` (N,) (NaN rows: none yet), as warm starts."""
        idx = self._rows(index)
        return self.params[idx][:, None].to(device or self.params.device)

    def known(self, index: Tensor) -> Tensor:
        """(N,) bool: whether the images ``index`` (N,) have a cached pose."""
        idx = self._rows(index)
        return torch.isfinite(self.params[idx]).all(1)

    @torch.no_grad()
    def store(self, index: Tensor, params: Tensor) -> None:
        """Cache the found poses ``params`` (N, P) of the images ``index`` (N,)."""
        idx = self._rows(index)
        if len(idx) != len(params):
            raise AffineVAEError(f"pose cache: {len(idx)} indices for {len(params)} poses")
        self.params[idx] = params.detach().to(self.params.device, self.params.dtype)

    @torch.no_grad()
    def descend(self, index: Tensor, params: Tensor, grad: Tensor) -> None:
        """One Rprop step on the cached poses of ``index`` (N,): from ``params`` (N, P) (the poses the
        gradient was taken at) against the sign of ``grad`` (N, P), the loss gradient there."""
        idx = self._rows(index)
        g = torch.nan_to_num(grad.detach().to(self.params.device, torch.float32)).sign()
        same = g * self.signs[idx]
        steps = torch.where(same > 0, self.steps[idx] * self.grow,
                            torch.where(same < 0, self.steps[idx] * self.shrink, self.steps[idx]))
        steps = steps.clamp(self.min_step, self.max_step)
        moved = params.detach().to(self.params.device, torch.float32) - steps * g
        self.params[idx] = self.transform.project(moved, self.ranges)
        self.steps[idx] = steps
        self.signs[idx] = g

    def state(self) -> dict[str, Tensor]:
        """The cache's tensors by name (``params``, ``steps``, ``signs``; each (N, P), on the CPU)."""
        return {name: getattr(self, name).detach().cpu().clone() for name in ("params", "steps", "signs")}

    @torch.no_grad()
    def load_state(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state` (each (N, P) with this cache's P), replacing what the cache holds."""
        p = self.transform.dim
        try:
            tensors = [torch.as_tensor(state[name]) for name in ("params", "steps", "signs")]
        except KeyError as exc:
            raise AffineVAEError(f"pose cache: the saved state lacks {exc.args[0]!r}") from None
        n = len(tensors[0])
        if any(t.shape != (n, p) for t in tensors):
            raise AffineVAEError(f"pose cache: saved state shapes {[tuple(t.shape) for t in tensors]}, "
                                 f"expected ({n}, {p}) each")
        dev = self.params.device
        self.params, self.steps, self.signs = (t.to(dev, torch.float32).clone() for t in tensors)

    def attach(self, index: Tensor, params: Tensor) -> Tensor:
        """``params`` (N, P) as a leaf that requires grad: the backward of whatever uses it calls
        :meth:`descend` for the images ``index`` (N,). Returns that leaf (use it for the pass)."""
        leaf = params.detach().clone().requires_grad_(True)
        idx = torch.as_tensor(index).long().reshape(-1).clone()
        start = leaf.detach().clone()
        leaf.register_hook(lambda g: self.descend(idx, start, g))
        return leaf
