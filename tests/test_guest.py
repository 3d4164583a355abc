"""The library as a guest in the user's process (a notebook, a script, a test): what it changes there,
it gives back."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import affinevae as av
from affinevae import analysis as A
from affinevae.cli import main
from affinevae.nn.modes import module_mode


@pytest.fixture(scope="module")
def tiny():
    data = av.data.load_mnist("test", n=16)
    return av.build_model("vae", latent_dim=2, encoder="mlp", decoder="mlp", hidden=[16], seed=0), data


def test_importing_and_plotting_leave_the_matplotlib_backend_and_pyplot_alone(tmp_path):
    """A notebook's inline backend stays: the package never calls matplotlib.use nor imports pyplot."""
    code = f"""
import sys, matplotlib
matplotlib.use("svg")
import affinevae as av
from affinevae import analysis as A, mapping, plots, demo, report
from affinevae.cli import main, plot, train
model = av.build_model("vae", latent_dim=2, encoder="mlp", decoder="mlp", hidden=[16], seed=0)
data = av.data.load_mnist("test", n=8)
plots.save_figure(A.plot_reconstructions(A.reconstructions(model, data, n=4)), r"{tmp_path / 'r.png'}")
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["svg", "False"]
    assert (tmp_path / "r.png").stat().st_size > 0


def test_the_train_command_leaves_the_callers_random_state(tmp_path):
    torch.manual_seed(123)
    np.random.seed(123)
    expected_t, expected_n = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    assert main(["train", "--model", "vae", "--data", "mnist", "-n", "64", "--epochs", "1", "--latent-dim", "2",
                 "--hidden", "16", "--channels", "4,8", "--batch-size", "32", "--no-progress", "--seed", "5",
                 "--out", str(tmp_path / "r")]) == 0
    assert torch.equal(torch.rand(3), expected_t) and np.array_equal(np.random.rand(3), expected_n)
    # and the seed still fixes the run: the same command gives the same weights
    assert main(["train", "--model", "vae", "--data", "mnist", "-n", "64", "--epochs", "1", "--latent-dim", "2",
                 "--hidden", "16", "--channels", "4,8", "--batch-size", "32", "--no-progress", "--seed", "5",
                 "--out", str(tmp_path / "s")]) == 0
    a, b = av.load(tmp_path / "r").state_dict(), av.load(tmp_path / "s").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_module_mode_gives_every_submodule_its_own_mode_back():
    outer = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Linear(2, 2)))
    outer.train()
    outer[1].eval()  # a wrapped part kept in eval mode by its owner
    before = [m.training for m in outer.modules()]
    with module_mode(outer):
        assert not any(m.training for m in outer.modules())
    assert [m.training for m in outer.modules()] == before
    with pytest.raises(RuntimeError):
        with module_mode(outer, True):
            assert all(m.training for m in outer.modules())
            raise RuntimeError("inside")
    assert [m.training for m in outer.modules()] == before


@pytest.mark.parametrize("order", ["model first", "wrapper first"])
def test_a_sweep_of_a_model_and_a_search_around_it_gives_both_their_modes_back(tiny, order):
    """The README's rotation_sweep({"vae": model, "avae": av.AVAE(model)}): the wrapper is in training
    mode when made, the user's model in eval mode; each keeps its own."""
    from affinevae.sweep import rotation_sweep

    model, data = tiny
    model.eval()
    avae = av.AVAE(model, pose_head=False, search={"restarts": 2, "keep": 1, "steps": 1})
    models = {"vae": model, "avae": avae} if order == "model first" else {"avae": avae, "vae": model}
    rotation_sweep(models, data.images[:4], angles=np.radians([0, 90]))
    assert avae.training and not any(m.training for m in model.modules())


def test_align_leaves_a_wrapped_model_in_its_own_mode(tiny):
    model, data = tiny
    model.eval()
    avae = av.AVAE(model)  # a fresh wrapper is in training mode
    assert avae.training and not model.training
    avae.align(torch.as_tensor(data.images[:3]), config={"restarts": 2, "keep": 1, "steps": 1})
    assert avae.training and not model.training


@pytest.mark.parametrize("call", [
    lambda m, d: A.reconstructions(m, d, n=2),
    lambda m, d: A.generate(m, n=2),
    lambda m, d: A.denoise(m, d, n=2),
    lambda m, d: A.latent_manifold(m, d=2),
    lambda m, d: A.interpolate(m, d, steps=2),
    lambda m, d: A.latent_arithmetic(m, d),
], ids=["reconstructions", "generate", "denoise", "latent_manifold", "interpolate", "latent_arithmetic"])
def test_analyses_run_in_eval_mode_and_give_the_mode_back(tiny, call):
    model, data = tiny
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, _inputs: seen.append(mod.training)) for m in model.modules()]
    model.train()
    try:
        call(model, data)
        assert seen and not any(seen)  # every layer it ran was in eval mode
        assert model.training and all(m.training for m in model.modules())
    finally:
        for h in hooks:
            h.remove()
        model.eval()


def test_close_figure_closes_a_pyplot_figure_and_leaves_pyplot_unloaded_otherwise(tmp_path):
    """A caller's own pyplot figure, saved through the package, is closed in pyplot; without pyplot loaded
    the package's figures need nothing and pyplot is not imported for them (checked in a subprocess above)."""
    import matplotlib.pyplot as plt

    from affinevae.plots import close_figure, save_figure

    fig = plt.figure()
    assert plt.fignum_exists(fig.number)
    save_figure(fig, tmp_path / "mine.png")
    assert not plt.fignum_exists(fig.number) and (tmp_path / "mine.png").stat().st_size > 0
    close_figure(fig)  # twice is harmless
