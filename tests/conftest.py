"""Shared fixtures: tiny models trained once per test session and kept as run directories.

``tiny_runs`` trains each model on first use (about a second each on two CPU cores) with
:func:`affinevae.fit`, into a run directory that records its data spec, so the analyses, the
report, the ``plot``/``info`` commands and :class:`affinevae.Run` all work on it. Tests must not
change these runs or models; copy a run directory (``shutil.copytree``) to modify it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from affinevae.data import load_mnist, rotated_mnist
from affinevae.models.base import build_model
from affinevae.runs import Run
from affinevae.training import TrainConfig, fit

#: name -> (family, data spec, n training images, model options); 1 epoch, batch 64, lr 2e-3, seed 0.
TINY_SPECS = {
    "ae": ("ae", "mnist", 500, {"latent_dim": 4, "channels": [8, 16]}),
    "vae": ("vae", "mnist", 500, {"latent_dim": 2, "channels": [8, 16]}),
    "cvae": ("cvae", "mnist", 500, {"latent_dim": 2, "num_classes": 10, "channels": [8, 16]}),
    "rvae": ("rvae", "rotated-mnist", 400, {"latent_dim": 2, "invariances": ["rotation"]}),
}


class TinyRuns:
    """Tiny trained runs by name (:data:`TINY_SPECS`), trained on first request and then shared."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._models: dict = {}

    def _train(self, name: str) -> None:
        family, spec, n, opts = TINY_SPECS[name]
        data = load_mnist("train", n=n) if spec == "mnist" else rotated_mnist("train", n=n, seed=0)
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            torch.manual_seed(0)
            model = build_model(family, image_shape=[1, 28, 28], **opts)
            fit(model, data, TrainConfig(epochs=1, batch_size=64, lr=2e-3, progress=False, val_split=0.1),
                out=self.root / name, meta={"data": spec, "labels": None, "key": None, "n": n})
        finally:
            torch.set_num_threads(threads)
        self._models[name] = model.eval()

    def path(self, name: str) -> Path:
        """The run directory of ``name`` (trained now if needed)."""
        if name not in self._models:
            self._train(name)
        return self.root / name

    def run(self, name: str) -> Run:
        """The :class:`Run` of ``name``."""
        return Run.open(self.path(name))

    def model(self, name: str):
        """The trained model of ``name`` (eval mode; the instance ``fit`` trained, shared by all tests)."""
        self.path(name)
        return self._models[name]


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> TinyRuns:
    """Session-wide tiny trained runs: ``tiny_runs.path('vae')``, ``.run('rvae')``, ``.model('cvae')``."""
    return TinyRuns(tmp_path_factory.mktemp("tiny_runs"))
