"""Train/eval modes of a module tree, set for a block and given back exactly."""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn

__all__ = ["module_mode"]


@contextlib.contextmanager
def module_mode(module: nn.Module, training: bool = False) -> Iterator[nn.Module]:
    """Run the block with ``module`` and all its submodules in training (True) or eval (False,
    the default) mode; on leaving, every submodule gets back the mode it had.

    ``module.train(flag)`` sets the whole tree alike, so restoring with ``module.train(was)``
    would also put a model wrapped by ``module`` (an AVAE's inner VAE, a frozen part) in the
    wrapper's mode; this gives each its own back.

    Yields:
        ``module``.
    """
    saved = [(m, m.training) for m in module.modules()]
    module.train(training)
    try:
        yield module
    finally:
        for m, mode in saved:
            m.training = mode
