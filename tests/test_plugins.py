"""Plugins: a model family of another package (entry point) or the user's own module (AFFINEVAE_PLUGINS)
works from the command line and loads back by name, without the user importing it first."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import affinevae as av
from affinevae import plugins
from affinevae.cli import main
from affinevae.errors import AffineVAEError
from affinevae.registry import MODELS

PLUGIN = textwrap.dedent('''
    from affinevae.models import VAE
    from affinevae.registry import MODELS


    @MODELS.register("{name}")
    class L1VAE(VAE):
        """A VAE with an L1 penalty on its content means (the named term 'l1')."""

        def infer_for_loss(self, x, y):
            enc, terms = super().infer_for_loss(x, y)
            return enc, {{**terms, "l1": lambda: 0.1 * enc.z_mean.abs().sum(1).mean()}}
''')


@pytest.fixture
def fresh_plugins(monkeypatch):
    """Plugins tried in this test only: the record of tried plugins emptied, restored afterwards."""
    monkeypatch.setattr(plugins, "_loaded", {})
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    return monkeypatch


def write_plugin(folder: Path, module: str, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(PLUGIN.format(name=name))


def images(tmp_path: Path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, (np.random.default_rng(0).random((40, 12, 12)) > 0.7).astype(np.float32))
    return path


def test_a_module_named_in_the_environment_trains_from_the_cli_and_loads_back_by_name(tmp_path, fresh_plugins, capsys):
    """AFFINEVAE_PLUGINS=module: `train --model <its family>` works, the run records the family, and a registry
    asked for the name later imports the plugin itself (affinevae.load without an import)."""
    write_plugin(tmp_path / "lib", "plug_env_a", "test_plug_a")
    fresh_plugins.syspath_prepend(str(tmp_path / "lib"))
    fresh_plugins.setenv(plugins.ENV_VAR, "plug_env_a")
    try:
        assert main(["train", "--model", "test_plug_a", "--data", str(images(tmp_path)), "--epochs", "1",
                     "--hidden", "16", "--batch-size", "8", "--out", str(tmp_path / "run")]) == 0
        assert "with l1" in capsys.readouterr().out  # the plugin's own term was trained
        assert [(p.module, p.source, p.error) for p in plugins.loaded_plugins()] == [("plug_env_a", "AFFINEVAE_PLUGINS", None)]
        assert Run_family(tmp_path / "run") == "test_plug_a"
    finally:
        MODELS.unregister("test_plug_a")
    fresh_plugins.setattr(plugins, "_loaded", {})  # a new process: nothing imported yet
    sys.modules.pop("plug_env_a")
    model = av.load(tmp_path / "run")  # MODELS.get misses, loads the plugins, finds it
    try:
        assert type(model).__name__ == "L1VAE" and model.family == "test_plug_a"
    finally:
        MODELS.unregister("test_plug_a")


def Run_family(run: Path) -> str:
    return av.Run(run).model_description["model"]


def test_an_unknown_family_says_where_plugins_come_from(fresh_plugins):
    with pytest.raises(AffineVAEError, match=r"^unknown model 'test_nowhere'; choose from: .*vae \(a plugin's\? install "
                                             r"its package, or name its module in AFFINEVAE_PLUGINS\)$"):
        av.build_model("test_nowhere")


def test_a_broken_plugin_is_one_warning_and_the_rest_works(tmp_path, fresh_plugins, capsys):
    """A plugin that raises on import (or is not there) is said once per process, naming it and its error;
    the command runs on and the good plugin beside it is loaded."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "plug_broken_b.py").write_text("raise ValueError('needs scipy 9')\n")
    write_plugin(tmp_path / "lib", "plug_good_b", "test_plug_b")
    fresh_plugins.syspath_prepend(str(tmp_path / "lib"))
    fresh_plugins.setenv(plugins.ENV_VAR, " plug_broken_b, plug_missing_b ,plug_good_b,")
    try:
        assert main(["info", str(images(tmp_path))]) == 0
        err = capsys.readouterr().err.splitlines()
        assert err[:2] == [
            "affinevae: warning: plugin 'plug_broken_b' (AFFINEVAE_PLUGINS, module plug_broken_b) did not import "
            "(ValueError: needs scipy 9); what it registers is not available",
            "affinevae: warning: plugin 'plug_missing_b' (AFFINEVAE_PLUGINS, module plug_missing_b) did not import "
            "(ModuleNotFoundError: No module named 'plug_missing_b'); what it registers is not available"]
        assert "test_plug_b" in MODELS
        assert main(["info", str(images(tmp_path))]) == 0  # tried once: no second warning
        assert "plugin" not in capsys.readouterr().err
        assert plugins.load_plugins() == []
    finally:
        MODELS.unregister("test_plug_b")


def test_an_installed_packages_entry_point_is_loaded_by_the_command_line(tmp_path):
    """A package declaring `[project.entry-points."affinevae.plugins"]` (here a distribution's metadata on the
    path, as pip installs it): a fresh process's `train --model` takes its family, `--version` names it, and
    `encode` of the run works with no import by the user."""
    site = tmp_path / "site"
    write_plugin(site, "plug_ep_c", "test_plug_c")
    info = site / "plugc-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugc\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[affinevae.plugins]\nl1 = plug_ep_c\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    env.pop(plugins.ENV_VAR, None)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "affinevae", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=300)

    version = cli("--version")
    assert version.returncode == 0 and version.stdout.strip().endswith("(plugins: l1)"), version
    r = cli("train", "--model", "test_plug_c", "--data", str(images(tmp_path)), "--epochs", "1", "--hidden", "16",
            "--batch-size", "8", "--out", str(tmp_path / "run"))
    assert r.returncode == 0 and "with l1" in r.stdout, r.stderr
    r = cli("encode", str(tmp_path / "run"), "--data", str(images(tmp_path)), "--out", str(tmp_path / "z.npz"))
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "z.npz")["z_mean"].shape[0] == 40


def test_the_readmes_plugin_example_is_a_plugin(tmp_path, fresh_plugins, capsys):
    """The README's `mymodels.py` trains as `--model l1vae` with AFFINEVAE_PLUGINS=mymodels, its term named."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("the environment variable `AFFINEVAE_PLUGINS`", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "mymodels.py").write_text(code)
    fresh_plugins.syspath_prepend(str(tmp_path / "lib"))
    fresh_plugins.setenv(plugins.ENV_VAR, "mymodels")
    fresh_plugins.delitem(sys.modules, "mymodels", raising=False)
    try:
        assert main(["train", "--model", "l1vae", "--data", str(images(tmp_path)), "--epochs", "1", "--hidden", "16",
                     "--batch-size", "8", "--out", str(tmp_path / "run")]) == 0
        assert "with l1 " in capsys.readouterr().out
    finally:
        MODELS.unregister("l1vae")


def test_a_module_in_the_working_directory_is_found_by_the_console_script(tmp_path):
    """A review: `AFFINEVAE_PLUGINS=mymodels affinevae ...` (the installed console script, which unlike
    `python -m` does not put the working directory on the path) did not find mymodels.py beside the user."""
    write_plugin(tmp_path, "plug_cwd_d", "test_plug_d")
    script = ("import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; "
              "from affinevae.cli import main; sys.exit(main(['--version']))")
    env = {**os.environ, plugins.ENV_VAR: "plug_cwd_d", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("(plugins: plug_cwd_d)"), r


def test_a_plugin_family_is_known_to_membership_tests_and_its_defaults(tmp_path, fresh_plugins):
    """A review: `name in MODELS` did not import the plugins (only MODELS.get did), so data_defaults gave a
    plugin subclass of the rVAE no defaults until it was imported."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "plug_rvae_e.py").write_text(
        "from affinevae.models import RVAE\nfrom affinevae.registry import MODELS\n\n\n"
        "@MODELS.register('test_plug_e')\nclass MyRVAE(RVAE):\n    pass\n")
    fresh_plugins.syspath_prepend(str(tmp_path / "lib"))
    fresh_plugins.setenv(plugins.ENV_VAR, "plug_rvae_e")
    try:
        from affinevae.defaults import data_defaults

        turned = av.data.rotated_mnist("train", n=300, full_circle=True, seed=0)
        line = data_defaults(turned, "test_plug_e", {"latent_dim": 2}, None, None)[2]
        assert "rotation_mode=full" in line and "batch_size=100 lr=0.003" in line
        assert "test_plug_e" in MODELS and "test_nowhere_e" not in MODELS
    finally:
        MODELS.unregister("test_plug_e")
