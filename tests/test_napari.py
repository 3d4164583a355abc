"""The napari plugin: manifest, reader (maps.npz -> image + points with features), widget in a worker thread.

Runs headless (``QT_QPA_PLATFORM=offscreen``). The reader and widget tests use napari's
``ViewerModel`` and real Qt widgets, which need no OpenGL; the full-viewer test
(``make_napari_viewer``) also draws the canvas and is skipped, with the reason, where no OpenGL
context can be made (e.g. a machine without a display or a GPU driver).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
napari = pytest.importorskip("napari", reason="napari not installed (pip install \"affinevae[napari]\")")
pytest.importorskip("pytestqt", reason="pytest-qt not installed")

from affinevae.cli import main  # noqa: E402
from affinevae.data.micrograph import synthetic_micrograph  # noqa: E402
from affinevae.napari_plugin.pipeline import LearnSettings  # noqa: E402
from affinevae.napari_plugin.reader import get_reader  # noqa: E402

W = 12
PLUGIN = Path(__file__).resolve().parents[1] / "src" / "affinevae" / "napari_plugin"


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    """A small lattice -> patches (with a pixel size) -> an untrained tiny rVAE -> map: (image path, map dir)."""
    import torch

    from affinevae.models import RVAE

    d = tmp_path_factory.mktemp("napari")
    img, _ = synthetic_micrograph(size=(80, 96), spacing=8.0, grain_angles=(0.0, math.radians(35)), seed=4)
    np.save(d / "img.npy", img)
    torch.manual_seed(0)
    RVAE(image_shape=(1, W, W), latent_dim=2, encoder="mlp", hidden=(8,)).eval().save(d / "m")
    assert main(["patches", str(d / "img.npy"), "--window", str(W), "--out", str(d / "p.npz"), "--no-progress",
                 "--pixel-size", "0.05nm"]) == 0
    assert main(["map", str(d / "m"), "--image", str(d / "img.npy"), "--patches", str(d / "p.npz"),
                 "--out", str(d / "maps"), "--clusters", "2", "--symmetry", "2"]) == 0
    return img, d


def test_manifest_is_valid_and_points_at_real_objects():
    npe2 = pytest.importorskip("npe2")
    import importlib

    pm = npe2.PluginManifest.from_file(PLUGIN / "napari.yaml")
    assert {c.id for c in pm.contributions.commands} == {"affinevae.get_reader", "affinevae.learn_and_map_widget"}
    for c in pm.contributions.commands:
        module, attr = c.python_name.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), c.python_name
    text = (PLUGIN.parents[2] / "pyproject.toml").read_text()
    assert '[project.entry-points."napari.manifest"]' in text and "affinevae.napari_plugin:napari.yaml" in text


def test_reader_opens_maps_as_image_and_points(mapped, tmp_path):
    from napari.components import ViewerModel
    from napari.layers import Layer

    img, d = mapped
    assert get_reader(str(tmp_path)) is None and get_reader(str(d / "p.npz")) is None  # not maps
    reader = get_reader(str(d / "maps"))  # the folder, or maps.npz itself
    assert reader is not None and get_reader(str(d / "maps" / "maps.npz")) is not None
    viewer = ViewerModel()
    for data, kwargs, kind in reader(str(d / "maps" / "maps.npz")):
        viewer.add_layer(Layer.create(data, kwargs, kind))
    image, points = viewer.layers
    assert image.name == "img.npy" and image.data.shape == img.shape
    with np.load(d / "maps" / "maps.npz") as f:
        n, pos, cluster, z = len(f["z_mean"]), f["positions"], f["cluster"], f["z_mean"]
    assert len(points.data) == n > 20
    np.testing.assert_allclose(points.data, pos)
    assert set(points.features.columns) == {"angle_deg", "cluster", "frame", "z0", "z1"}
    np.testing.assert_array_equal(points.features["cluster"], cluster)
    np.testing.assert_allclose(points.features["z1"], z[:, 1], rtol=1e-6)
    assert points.features["angle_deg"].between(0, 180).all()  # folded by the 2-fold symmetry
    assert tuple(points.scale) == tuple(image.scale) == (0.05, 0.05)
    # colourable by any feature: the face colours follow the chosen one
    points.face_color = "cluster"
    c = np.asarray(points.face_color)
    assert not np.allclose(c[cluster == 0][0], c[cluster == 1][0])


def test_widget_learns_and_maps_in_a_worker_thread(qtbot, mapped):
    from napari.components import ViewerModel

    from affinevae.napari_plugin.widget import LearnAndMapWidget

    img, _ = mapped
    viewer = ViewerModel()
    viewer.add_image(img, name="lattice")
    widget = LearnAndMapWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.layer_box.currentText() == "lattice"
    widget.window.setValue(W)
    widget.epochs.setValue(1)
    widget.latent_dim.setValue(2)
    seen = []
    widget.progress.valueChanged.connect(seen.append)
    worker = widget.run()
    assert worker is not None and not widget.run_button.isEnabled()
    qtbot.waitUntil(lambda: len(viewer.layers) == 2, timeout=60000)
    qtbot.waitUntil(widget.run_button.isEnabled, timeout=5000)
    points = viewer.layers[1]
    assert points.name == "objects (lattice)" and len(points.data) > 20
    assert {"angle_deg", "cluster", "z0", "z1"} <= set(points.features.columns)
    assert set(points.features["cluster"]) == {0, 1}
    assert seen and max(seen) == 100 and widget.progress.value() == 100
    assert widget.settings() == LearnSettings(window=W, epochs=1, latent_dim=2, batch_size=None)


def _opengl_available() -> tuple[bool, str]:
    code = ("import os; os.environ['QT_QPA_PLATFORM']='offscreen'\nimport numpy as np, napari\n"
            "v = napari.Viewer(show=False)\nv.add_image(np.zeros((4, 4)))\nv.close()\n")
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False, "starting a napari viewer timed out"
    last = (r.stderr.strip().splitlines() or [""])[-1]
    return r.returncode == 0, last


def test_full_viewer_opens_the_maps(make_napari_viewer, mapped):
    ok, why = _opengl_available()
    if not ok:
        pytest.skip(f"napari's canvas needs an OpenGL context, which this machine cannot make offscreen ({why})")
    img, d = mapped
    viewer = make_napari_viewer()
    layers = viewer.open(str(d / "maps" / "maps.npz"), plugin="affinevae") if _registered() else []
    if not layers:
        from affinevae.napari_plugin.reader import read_maps
        from napari.layers import Layer

        layers = [viewer.add_layer(Layer.create(*t)) for t in read_maps(str(d / "maps" / "maps.npz"))]
    assert [type(x).__name__ for x in viewer.layers] == ["Image", "Points"]
    shot = viewer.screenshot(canvas_only=True)
    assert shot.ndim == 3 and shot.shape[-1] == 4 and shot[..., :3].std() > 0


def _registered() -> bool:
    from importlib.metadata import entry_points

    return any(e.value.startswith("affinevae.") for e in entry_points(group="napari.manifest"))
