"""Seeded random draws that leave torch's global generators as they were.

:func:`seeded` is the one way the package runs a block on a seed of its own (a seeded ELBO
estimate, a model's initial weights, a pose search's restarts): it forks torch's CPU generator
and, for a CUDA device, that device's, and seeds only those, so nothing outside the block sees
the seed (``torch.manual_seed`` inside a fork would also reseed every unforked CUDA device for good).
"""

from __future__ import annotations

import contextlib
import operator
from typing import Iterator, Union

import torch

from .errors import AffineVAEError

__all__ = ["derived_seed", "seeded"]


@contextlib.contextmanager
def seeded(seed: int, device: Union[torch.device, str] = "cpu") -> Iterator[None]:
    """Run the block with torch's random draws seeded by ``seed`` (an integer >= 0, Python's or
    numpy's; anything else is one :class:`~affinevae.errors.AffineVAEError` line) on ``device``.

    The CPU generator and, for a CUDA ``device``, that device's generator are forked (restored on
    leaving) and seeded; other CUDA devices are not touched. Other device types (e.g. MPS), whose
    generators ``torch.random.fork_rng`` does not fork, are seeded by ``torch.manual_seed`` (and stay so).
    """
    try:
        seed = operator.index(seed)  # numpy integers too (a seed from np.arange); not floats
    except TypeError:
        raise AffineVAEError(f"seed must be an integer, got {seed!r}") from None
    if seed < 0 or isinstance(seed, bool):
        raise AffineVAEError(f"seed must be an integer >= 0, got {seed!r}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device.index or 0] if cuda else []):
        if device.type in ("cpu", "cuda"):
            torch.default_generator.manual_seed(seed)
            if cuda:
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(seed)
        else:
            torch.manual_seed(seed)
        yield


def derived_seed(seed: int, *keys: int) -> int:
    """A seed for one part of a seeded computation (a block of images, a posterior sample): the first
    63-bit word numpy's :class:`~numpy.random.SeedSequence` makes of ``(seed, *keys)``, so each part's
    draws depend on its own keys only, not on how many parts came before it."""
    import numpy as np

    try:
        entropy = [operator.index(seed), *(operator.index(k) for k in keys)]
    except TypeError:
        raise AffineVAEError(f"seed must be an integer, got {seed!r}") from None
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))
