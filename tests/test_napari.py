"""The napari plugin: manifest, reader (maps.npz -> image + points with features), widget in a worker thread.

The reader and widget tests use napari's ``ViewerModel`` and real Qt widgets, which need no
OpenGL. The full-viewer test (``make_napari_viewer``) opens a real ``napari.Viewer`` window and
checks what its canvas draws, which needs an OpenGL context: ``pytest-xvfb`` (in the ``test``
extra) starts an Xvfb X server for the session when ``Xvfb`` is on the PATH, and Qt's xcb platform
then gets GLX on Mesa's software renderer (llvmpipe). Whether that works is probed once in a
subprocess (a failing Qt platform aborts its process); without it Qt runs on the ``offscreen``
platform and the full-viewer test is skipped with the probe's reason.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import pytest

#: Makes a QOpenGLWidget on the xcb platform and exits 0 when its OpenGL context is valid.
_GL_PROBE = """
import sys
from qtpy.QtWidgets import QApplication, QOpenGLWidget
app = QApplication([sys.argv[0]])
w = QOpenGLWidget()
w.resize(32, 32)
w.show()
app.processEvents()
ok = w.context() is not None and w.context().isValid() and not w.grabFramebuffer().isNull()
sys.exit(0 if ok else "the OpenGL context of a QOpenGLWidget is not valid")
"""


def _no_opengl_reason() -> str | None:
    """None when Qt's xcb platform makes a valid OpenGL context on ``$DISPLAY``, else why not."""
    platform = os.environ.get("QT_QPA_PLATFORM", "xcb")
    if platform != "xcb":
        return f"QT_QPA_PLATFORM={platform} is set"
    if not os.environ.get("DISPLAY"):
        return ("there is no X display (install Xvfb, e.g. `apt-get install xvfb`, and pytest-xvfb starts "
                "one for the session)")
    try:
        r = subprocess.run([sys.executable, "-c", _GL_PROBE], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "QT_QPA_PLATFORM": "xcb"})
    except subprocess.TimeoutExpired:
        return "opening an OpenGL window on the X display timed out"
    if r.returncode == 0:
        return None
    lines = r.stderr.strip().splitlines() or [f"exit status {r.returncode}"]
    why = next((x for x in lines if "Could not" in x or "could not" in x), lines[-1]).strip()
    return f"Qt could not open an OpenGL window on DISPLAY={os.environ['DISPLAY']} ({why})"


pytest.importorskip("napari", reason="napari not installed (pip install \"affinevae[napari]\")")
pytest.importorskip("pytestqt", reason="pytest-qt not installed")
#: Why napari's canvas cannot draw here (None: it can); decides the Qt platform before any QApplication exists.
NO_OPENGL = _no_opengl_reason()
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen" if NO_OPENGL else "xcb")

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
    # maps whose source image moved: the objects alone, and a warning saying why
    import shutil

    shutil.copytree(d / "maps", tmp_path / "moved")
    with np.load(tmp_path / "moved" / "maps.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["source_image"] = np.asarray(str(tmp_path / "gone.npy"))
    np.savez(tmp_path / "moved" / "maps.npz", **arrays)
    with pytest.warns(UserWarning, match="its source image is not shown .*gone.npy"):
        kinds = [kind for _, _, kind in get_reader(str(tmp_path / "moved"))(str(tmp_path / "moved" / "maps.npz"))]
    assert kinds == ["points"]


def test_reader_opens_a_cubes_maps_as_images_and_labels(tmp_path):
    """map --cube's maps.npz: one image layer per content latent, the shift, the baseline's loadings, and
    labels layers of the clusters and of the model's own classes (label = class + 1)."""
    from napari.components import ViewerModel
    from napari.layers import Layer

    from affinevae.analysis.spectra import spectral_maps, write_spectral_maps
    from affinevae.data.spectra import synthetic_cube
    from affinevae.models.base import build_model

    cube = synthetic_cube(height=6, width=7, length=32, seed=0)
    m = build_model("jrvae", image_shape=[1, 1, 32], latent_dim=2, num_classes=3, likelihood="gaussian", hidden=[8],
                    encoder_hidden=[8])
    maps = spectral_maps(m, cube.image_set(), n_clusters=2, baseline="pca")
    write_spectral_maps(maps, tmp_path / "maps")
    reader = get_reader(str(tmp_path / "maps"))
    assert reader is not None and reader.__name__ == "read_spectral_maps"
    viewer = ViewerModel()
    for data, kwargs, kind in reader(str(tmp_path / "maps" / "maps.npz")):
        viewer.add_layer(Layer.create(data, kwargs, kind))
    names = [layer.name for layer in viewer.layers]
    assert names == ["z0", "z1", "shift (samples)", "PCA 1", "PCA 2", "clusters", "model's classes"]
    np.testing.assert_allclose(viewer.layers["z1"].data, maps.z_mean[:, :, 1])
    np.testing.assert_array_equal(viewer.layers["clusters"].data, maps.cluster + 1)
    np.testing.assert_array_equal(viewer.layers["model's classes"].data, maps.klass + 1)
    assert type(viewer.layers["clusters"]).__name__ == "Labels" and viewer.layers["z0"].visible
    assert tuple(viewer.layers["z0"].scale) == (1.0, 1.0)  # no pixel size recorded: one per map pixel
    # a recorded map pixel (an instrument's calibration, map --pixel-size) is every layer's scale and unit, as for
    # object maps (the cube's layers had none)
    import dataclasses

    from affinevae.units import PixelSize

    write_spectral_maps(dataclasses.replace(maps, pixel_size=PixelSize(2.0, "nm")), tmp_path / "scaled")
    layers = reader(str(tmp_path / "scaled" / "maps.npz"))
    assert all(tuple(kwargs["scale"]) == (2.0, 2.0) for _, kwargs, _ in layers)
    viewer = ViewerModel()
    for data, kwargs, kind in layers:
        viewer.add_layer(Layer.create(data, kwargs, kind))
    if hasattr(viewer.layers["z0"], "units"):  # napari >= 0.6: the scale bar reads nm
        assert [str(u) for u in viewer.layers["clusters"].units] == ["nanometer", "nanometer"]


def test_reader_opens_maps_of_a_glob_of_frames_with_their_units(mapped, tmp_path, monkeypatch):
    """``map --image "frames/*.npy"`` keeps the pattern (made absolute), so the reader shows those frames
    from any folder; the layers carry the pixel size's unit (napari's scale bar shows it)."""
    from napari.components import ViewerModel
    from napari.layers import Layer

    img, d = mapped
    (tmp_path / "frames").mkdir()
    for i in range(2):
        np.save(tmp_path / "frames" / f"f{i}.npy", img)
    monkeypatch.chdir(tmp_path)
    assert main(["patches", "frames/*.npy", "--window", str(W), "--out", "p.npz", "--no-progress",
                 "--pixel-size", "0.05nm"]) == 0
    assert main(["map", str(d / "m"), "--image", "frames/*.npy", "--patches", "p.npz", "--out", "maps",
                 "--symmetry", "2"]) == 0
    monkeypatch.chdir(d)
    viewer = ViewerModel()
    for data, kwargs, kind in get_reader(str(tmp_path / "maps"))(str(tmp_path / "maps" / "maps.npz")):
        viewer.add_layer(Layer.create(data, kwargs, kind))
    image, points = viewer.layers
    assert image.data.shape == (2, *img.shape) and image.name == "*.npy"
    assert [str(u) for u in image.units] == ["pixel", "nanometer", "nanometer"] == [str(u) for u in points.units]


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


def test_widget_offers_only_patch_sizes_that_train(qtbot):
    """The patch-size box starts at the smallest images fit accepts (a 4-7 px patch set would be cut, then
    refused by training after the object search)."""
    from napari.components import ViewerModel

    from affinevae.defaults import MIN_IMAGE_SIZE
    from affinevae.napari_plugin.widget import LearnAndMapWidget

    widget = LearnAndMapWidget(ViewerModel())
    qtbot.addWidget(widget)
    assert widget.window.minimum() == MIN_IMAGE_SIZE == 8
    widget.window.setValue(4)
    assert widget.window.value() == MIN_IMAGE_SIZE


def test_learn_settings_refuse_patches_too_small_to_train():
    """The pipeline's settings (what the widget and Python callers pass) refuse a window under
    MIN_IMAGE_SIZE up front, in one line, rather than after the object search."""
    from affinevae.defaults import MIN_IMAGE_SIZE
    from affinevae.errors import AffineVAEError

    with pytest.raises(AffineVAEError, match=f"window must be an integer >= {MIN_IMAGE_SIZE}, got 6"):
        LearnSettings(window=6)
    assert LearnSettings(window=MIN_IMAGE_SIZE).window == MIN_IMAGE_SIZE


def test_learn_settings_refuse_bad_detection_and_filter_values_in_one_line():
    from affinevae.errors import AffineVAEError

    assert LearnSettings(sigma=0.0).sigma == 0.0  # 0: no smoothing (None: a sixteenth of the window)
    for kw, match in [(dict(sigma=-1.0), "sigma must be a number >= 0 pixels"), (dict(sigma=float("inf")), "sigma must be"),
                      (dict(lowpass=float("nan")), "lowpass must be a number >= 0 pixels"),
                      (dict(lowpass=True), "lowpass must be"), (dict(noise_floor=-0.5), "noise_floor must be a number >= 0"),
                      (dict(invert="yes"), "invert must be True or False"),
                      (dict(threshold="0.3"), "threshold must be a number in 0..1"), (dict(threshold=-0.1), "threshold must"),
                      (dict(threshold=True), "threshold must"), (dict(threshold=1.5), "threshold must"),
                      (dict(sigma=1e9), r"sigma 1e\+09 pixels is wider than the window \(16 pixels\)"),
                      (dict(device="tpu"), "device must be one of 'auto', 'cpu', 'cuda', got 'tpu'")] + (
                     [] if torch.cuda.is_available() else [(dict(device="cuda"), "no CUDA GPU is available")]):
        with pytest.raises(AffineVAEError, match=match):
            LearnSettings(**kw)
    # numpy numbers (a spin box's, an array's) are taken as Python ones
    s = LearnSettings(latent_dim=np.int64(2), lowpass=np.float32(2.0), threshold=np.float64(0.4))
    assert (s.latent_dim, s.lowpass, s.threshold) == (2, 2.0, 0.4) and type(s.latent_dim) is int
    from affinevae.napari_plugin.pipeline import learn_and_map
    with pytest.raises(AffineVAEError, match=r"\(C, H, W\) of at most 4 channels, got shape \(5, 32, 32\)"):
        learn_and_map(np.zeros((5, 32, 32)), LearnSettings())


def test_learn_and_map_inverts_dark_objects_and_takes_the_filter_given(mapped):
    """Dark atoms on a bright background (raw cryo-EM contrast) are found with ``invert`` as the bright
    ones are without it; a low-pass filter given is the model's, 'auto' leaves it to the patch-set defaults."""
    from affinevae.napari_plugin.pipeline import learn_and_map

    img, _ = mapped
    base = dict(window=W, epochs=1, latent_dim=2, clusters=None, symmetry=2)  # (estimated: a note on the windows)
    bright = learn_and_map(img, LearnSettings(**base, lowpass=2.0))
    dark = learn_and_map(img.max() - img, LearnSettings(**base, invert=True, device="cpu"))
    np.testing.assert_array_equal(dark["encoding"].centers, bright["encoding"].centers)
    # the device given is the model's ('auto': a GPU where torch sees one; it trained on the CPU always)
    assert dark["model"].device.type == "cpu"
    assert bright["model"].device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert bright["model"].config.lowpass == 2.0 and bright["model"].config.likelihood == "gaussian"
    assert dark["model"].config.lowpass == 0.0  # a lattice's bright atoms: the defaults take no filter
    assert len(learn_and_map(img.max() - img, LearnSettings(**base))["encoding"]) != len(bright["encoding"])
    smoothed = learn_and_map(img, LearnSettings(**base, sigma=1.0, noise_floor=3.0))
    assert 0 < len(smoothed["encoding"]) <= len(bright["encoding"])
    assert bright["note"] is None and smoothed["note"] is None


def test_learn_and_map_notes_a_sparse_field_that_the_default_threshold_misreads():
    """Faint spots on a noisy frame that is not stretched: the default threshold keeps noise peaks, and
    the result's note (the widget's status line) names the settings that keep the spots alone."""
    from affinevae.data.micrograph import render_gaussians
    from affinevae.napari_plugin.pipeline import learn_and_map

    rng = np.random.default_rng(0)
    img = render_gaussians((256, 256), rng.uniform(12, 244, (20, 2)), np.full(20, 6.0), 1.2) + rng.normal(0, 1, (256, 256))
    base = dict(window=10, epochs=1, latent_dim=2, clusters=None, model="vae")
    noisy = learn_and_map(img.astype(np.float32), LearnSettings(**base))
    assert "noise peaks" in noisy["note"] and "threshold 0 and noise floor 5" in noisy["note"]
    clean = learn_and_map(img.astype(np.float32), LearnSettings(**base, threshold=0.0, noise_floor=5.0))
    assert clean["note"] is None and 15 <= len(clean["encoding"]) <= 22 < len(noisy["encoding"])


def test_widget_detection_and_filter_fields_make_the_settings(qtbot):
    from napari.components import ViewerModel

    from affinevae.napari_plugin.widget import LOWPASS_CHOICES, LearnAndMapWidget

    widget = LearnAndMapWidget(ViewerModel())
    qtbot.addWidget(widget)
    s = widget.settings()
    assert (s.sigma, s.invert, s.noise_floor, s.lowpass, s.threshold) == (None, False, None, None, None)  # as `patches`, `train`
    widget.threshold.setValue(0.4)
    assert widget.settings().threshold == 0.4
    widget.sigma.setValue(2.0)
    widget.invert.setChecked(True)
    widget.noise_floor.setValue(3.0)
    widget.lowpass.setCurrentText("2.5")
    s = widget.settings()
    assert (s.sigma, s.invert, s.noise_floor, s.lowpass) == (2.0, True, 3.0, 2.5)
    widget.sigma.setValue(0.0)
    assert widget.settings().sigma == 0.0 and widget.sigma.text() != "auto"   # 0: no smoothing, not the default
    widget.lowpass.setCurrentText("none")
    assert widget.settings().lowpass == 0.0 and LOWPASS_CHOICES["auto"] is None
    widget.noise_floor.setValue(0.0)  # off, not the default (which an asinh-stretched sky takes at 3)
    assert widget.settings().noise_floor == 0.0
    widget.noise_floor.setValue(widget.noise_floor.minimum())
    assert widget.settings().noise_floor is None and widget.noise_floor.text() == "auto"
    assert widget.settings().background == "auto"  # as `patches --background`
    widget.background.setCurrentText("off")
    assert widget.settings().background == "off"
    assert widget.settings().masked == "drop"  # as `patches --drop-masked`
    widget.masked.setCurrentText("fill")
    assert widget.settings().masked == "fill"
    assert widget.settings().centre == "auto"  # as `patches --centre`
    widget.centre.setCurrentText("peak")
    assert widget.settings().centre == "peak"


def _registered() -> bool:
    from importlib.metadata import entry_points

    return any(e.value.startswith("affinevae.") for e in entry_points(group="napari.manifest"))


def _shot(viewer) -> np.ndarray:
    """The canvas fitted to the layers' extent (``export_figure``), (H, W, 3) uint8: pixel (i, j) shows
    image pixel (i, j) * rows / H."""
    return np.asarray(viewer.export_figure(scale_factor=4, flash=False))[..., :3]


def test_full_viewer_opens_the_maps_and_draws_the_points(make_napari_viewer, mapped):
    if NO_OPENGL:
        pytest.skip(f"napari's canvas needs an OpenGL context: {NO_OPENGL}")
    from scipy.ndimage import distance_transform_edt

    img, d = mapped
    viewer = make_napari_viewer(show=True)
    maps = str(d / "maps" / "maps.npz")
    if _registered():  # installed: napari finds the reader through the npe2 manifest
        viewer.open(maps, plugin="affinevae")
    else:  # sources on PYTHONPATH only: the same reader, called directly
        from napari.layers import Layer

        from affinevae.napari_plugin.reader import read_maps

        for t in read_maps(maps):
            viewer.add_layer(Layer.create(*t))
    assert [type(x).__name__ for x in viewer.layers] == ["Image", "Points"]
    image, points = viewer.layers
    with np.load(maps) as f:
        pos, cluster = f["positions"], f["cluster"]
    np.testing.assert_allclose(points.data, pos)
    assert {"angle_deg", "cluster", "frame", "z0", "z1"} == set(points.features.columns)
    # coloured by angle: each face colour is the colour map at the point's normalised angle
    assert points.metadata["colour_by"] == "angle_deg"
    a = points.features["angle_deg"].to_numpy()
    assert np.ptp(a) > 0
    expected = points.face_colormap.map((a - a.min()) / np.ptp(a))
    np.testing.assert_allclose(points.face_color, expected, atol=1e-6)

    # the canvas draws: the image alone, then the points over it at their positions in their colours
    points.visible = False
    bare = _shot(viewer)
    points.visible = True
    shot = _shot(viewer)
    assert bare.std() > 5  # the lattice is drawn, not a blank canvas
    h, w = shot.shape[:2]
    rows, cols = img.shape
    assert abs(h / rows - w / cols) < 0.1 * h / rows  # the fitted screenshot keeps the aspect ratio
    ij = np.floor((pos + 0.5) * [h / rows, w / cols]).astype(int)
    ij = np.clip(ij, 0, [h - 1, w - 1])
    changed = np.any(shot.astype(int) != bare, axis=-1)
    assert changed[ij[:, 0], ij[:, 1]].mean() > 0.9  # the points are drawn where they are
    centre = shot[ij[:, 0], ij[:, 1]].astype(float)
    close = np.abs(centre - 255 * np.asarray(points.face_color)[:, :3]).max(axis=1) < 40
    assert close.mean() > 0.8, close.mean()  # ... in their face colours
    # away from every point the canvas is the image alone
    centres = np.zeros((h, w), bool)
    centres[ij[:, 0], ij[:, 1]] = True
    far = distance_transform_edt(~centres) > points.size.max() * h / rows  # beyond a point's diameter
    assert far.any() and not changed[far].any()

    # colouring by another feature redraws the points in its colours
    points.face_color = "cluster"  # categorical: napari cycles its colours
    by_cluster = _shot(viewer)
    c = np.asarray(points.face_color)[:, :3]
    assert not np.allclose(c[cluster == 0][0], c[cluster == 1][0])
    centre = by_cluster[ij[:, 0], ij[:, 1]].astype(float)
    assert (np.abs(centre - 255 * c).max(axis=1) < 40).mean() > 0.8
    assert np.any(by_cluster != shot)


def test_widget_takes_full_resolution_one_frame_and_shows_errors(qtbot, monkeypatch):
    """A multiscale layer was learnt at its coarsest level (points at half their places), a stack
    as one frame of channels; an error in the worker was raised again in the main thread."""
    from napari.components import ViewerModel

    from affinevae.errors import AffineVAEError
    from affinevae.napari_plugin import widget as widget_module

    seen = []

    def fake(image, settings, report=None):
        seen.append(image.shape)
        raise AffineVAEError("no objects found")
    monkeypatch.setattr(widget_module, "learn_and_map", fake)
    img = np.random.default_rng(0).random((64, 48)).astype(np.float32)
    viewer = ViewerModel()
    viewer.add_image([img, img[::2, ::2]], multiscale=True, name="ms")
    viewer.add_image(np.stack([img, img * 0.5, img * 0.2]), name="stack")
    w = widget_module.LearnAndMapWidget(viewer)
    qtbot.addWidget(w)
    for name in ("ms", "stack"):
        w.layer_box.setCurrentText(name)
        worker = w.run()
        qtbot.waitUntil(w.run_button.isEnabled, timeout=10000)
        assert worker is not None and w.status.text() == "error: no objects found"
    assert seen == [(64, 48), (64, 48)]
    viewer.add_image(np.zeros((2, 2, 64, 48), np.float32), name="4d")
    w.layer_box.setCurrentText("4d")
    assert w.run() is None and "learning takes one 2-D frame" in w.status.text()


def test_widget_points_sit_on_their_objects_in_the_layers_world_and_frame(qtbot, monkeypatch):
    """The widget's points took the image layer's scale only: with a translated layer they sat beside
    the atoms, and on a stack (N, 2) points showed on every frame. Now they carry the layer's whole
    transform and, on a stack, the frame that was learnt: each point maps to the world where its
    position in that frame of the layer does."""
    from napari.components import ViewerModel

    from affinevae.napari_plugin import widget as widget_module

    positions = np.array([[10.0, 12.0], [30.5, 7.25], [50.0, 40.0]])

    class Found:  # the part of an ObjectEncoding the widget reads
        z_mean, angle, window, frames = np.zeros((3, 2)), np.zeros(3), 8, np.zeros(3, np.int64)

        def __len__(self):
            return 3

    Found.positions = positions

    monkeypatch.setattr(widget_module, "learn_and_map",
                        lambda image, settings, report=None: {"encoding": Found(), "cluster": np.zeros(3, np.int64),
                                                              "symmetry": 1})
    img = np.random.default_rng(0).random((64, 48)).astype(np.float32)
    viewer = ViewerModel()
    viewer.add_image(img, name="moved", translate=(100.0, 50.0), scale=(0.5, 0.25), rotate=30.0, units=("nm", "nm"))
    viewer.add_image(np.stack([img, img, img]), name="stack", translate=(2.0, 5.0, -3.0), scale=(1.0, 2.0, 2.0))
    viewer.add_image(np.zeros((10, 64, 48), np.float32), name="longer")  # the viewer's steps are not the stack's frames
    w = widget_module.LearnAndMapWidget(viewer)
    qtbot.addWidget(w)
    for name, frame in (("moved", None), ("stack", 1)):
        if frame is not None:
            viewer.dims.set_point(0, 3.0)  # world 3 = the stack's frame 1 (translated by 2), the viewer's step 3
        w.layer_box.setCurrentText(name)
        w.run()
        qtbot.waitUntil(w.run_button.isEnabled, timeout=10000)
        layer, points = viewer.layers[name], viewer.layers[-1]
        assert points.name == f"objects ({name})"
        expected = positions if frame is None else np.column_stack([np.full(3, frame), positions])
        np.testing.assert_allclose(points.data, expected)
        for p in expected:
            np.testing.assert_allclose(points.data_to_world(p), layer.data_to_world(p), atol=1e-9)
        if frame is not None:
            assert (points.features["frame"] == frame).all()
        else:  # an audit: the points kept 'pixel' units beside an image in nm, so the scale bars disagreed
            assert [str(u) for u in points.units] == [str(u) for u in layer.units] == ["nanometer", "nanometer"]


def test_learn_and_map_takes_a_symmetry_given_and_notes_windows_too_small_for_a_lattice():
    """An audit: on a lattice whose atoms lie closer than the windows reach, the widget settled on a 1-fold
    symmetry without the advice `map` gives, and offered no way to give the symmetry. Now the note says it and
    LearnSettings(symmetry=) (the widget's 'symmetry' field) gives it."""
    from affinevae.data.micrograph import synthetic_micrograph
    from affinevae.errors import AffineVAEError
    from affinevae.napari_plugin.pipeline import LearnSettings, learn_and_map

    img = synthetic_micrograph(size=(80, 112), spacing=8, seed=0)[0]
    found = learn_and_map(img, LearnSettings(window=12, epochs=1, device="cpu"))
    assert found["symmetry"] == 1 and "so the estimate sees single objects" in found["note"]
    assert "give the symmetry (LearnSettings.symmetry, the widget's 'symmetry')" in found["note"]
    given = learn_and_map(img, LearnSettings(window=12, epochs=1, device="cpu", symmetry=2))
    assert given["symmetry"] == 2 and "single objects" not in (given["note"] or "")
    # a symmetry found: no note, as map says it only where it finds none (the widget said 'sees single objects'
    # beside the 4-fold symmetry it had found)
    square = synthetic_micrograph(size=(128, 128), spacing=8.0, lattice="square", seed=0)[0]
    found = learn_and_map(square, LearnSettings(window=16, epochs=1, device="cpu"))
    assert found["symmetry"] == 4 and "single objects" not in (found["note"] or "")
    with pytest.raises(AffineVAEError, match="symmetry must be an integer in 1..12"):
        LearnSettings(symmetry=13)


def test_reader_declines_bad_archives_and_refuses_bad_maps(tmp_path, mapped):
    """napari's reader probe raised on a truncated or empty .npz; broken maps gave KeyError/IndexError."""
    from affinevae.errors import AffineVAEError
    from affinevae.napari_plugin.reader import get_reader, read_maps

    (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "empty.npz").write_bytes(b"")
    assert get_reader(str(tmp_path / "trunc.npz")) is None and get_reader(str(tmp_path / "empty.npz")) is None
    _, d_root = mapped
    with np.load(d_root / "maps" / "maps.npz") as f:
        d = {k: f[k] for k in f.files}
    for name, change, match in [("noangle", lambda d: d.pop("angle"), "maps without 'angle'"),
                                ("short", lambda d: d.update(angle=d["angle"][:-1]), "arrays of different lengths"),
                                ("flat", lambda d: d.update(z_mean=d["z_mean"][:, 0]), "'z_mean' must be a numeric")]:
        bad = dict(d)
        change(bad)
        np.savez(tmp_path / f"{name}.npz", **bad)
        with pytest.raises(AffineVAEError, match=match):
            read_maps(str(tmp_path / f"{name}.npz"))
    with pytest.raises(AffineVAEError, match=r"nowhere: no such file or folder$"):  # was: not a maps.npz written by
        read_maps(str(tmp_path / "nowhere"))


def test_object_features_fold_each_finite_angle_and_keep_nan():
    from affinevae.napari_plugin.layers import object_features

    angle = np.array([np.nan, np.pi / 2, -np.pi / 4])  # radians; one object without an angle
    feats = object_features(np.zeros((3, 2)), angle, np.zeros(3, int), np.zeros(3, int), symmetry=2)
    assert np.isnan(feats["angle_deg"][0])
    np.testing.assert_allclose(feats["angle_deg"][1:], [90.0, 135.0])  # degrees, folded into [0, 180)


def test_learn_and_map_flattens_an_uneven_frame_and_says_so():
    """A sparse field on a ramp: the pipeline flattens it ('auto', as ``patches``), its note says so, and
    'off' keeps the ramp's noise peaks; a bad background setting is one line."""
    from affinevae.data.micrograph import render_gaussians
    from affinevae.errors import AffineVAEError
    from affinevae.napari_plugin.pipeline import learn_and_map

    rng = np.random.default_rng(1)
    img = render_gaussians((256, 256), rng.uniform(12, 244, (20, 2)), np.full(20, 8.0), 2.5) + rng.normal(0, 1, (256, 256))
    img = (img + np.linspace(0, 3, 256)[None, :]).astype(np.float32)
    base = dict(window=16, epochs=1, latent_dim=2, clusters=None, model="vae", threshold=0.0, noise_floor=5.0)
    flat = learn_and_map(img, LearnSettings(**base))
    assert "flattened" in flat["note"] and "background 'off'" in flat["note"]
    assert 17 <= len(flat["encoding"]) <= 21
    kept = learn_and_map(img, LearnSettings(**base, background="off"))
    assert kept["note"] is None and len(kept["encoding"]) > len(flat["encoding"]) + 10
    for bad in ("yes", 2, True):
        with pytest.raises(AffineVAEError, match="background must be 'auto', 'off' or a box side"):
            LearnSettings(background=bad)
    assert LearnSettings(background=np.int64(48)).background == 48
    assert LearnSettings(background=None).background == "off"  # as iter_patches reads None


def test_learn_and_map_leaves_out_the_objects_at_masked_pixels():
    """An image layer with a NaN border (a mosaic's) is not refused: by default the objects whose window holds a
    masked pixel are left out and the note says how many; 'fill' keeps them filled; a NaN-free image is cut as
    before; a bad setting is one line."""
    from affinevae.data.micrograph import render_gaussians
    from affinevae.errors import AffineVAEError
    from affinevae.napari_plugin.pipeline import learn_and_map

    rng = np.random.default_rng(2)
    img = (render_gaussians((192, 192), rng.uniform(12, 180, (30, 2)), np.full(30, 8.0), 2.5)
           + rng.normal(0, 0.5, (192, 192))).astype(np.float32)
    base = dict(window=16, epochs=1, latent_dim=2, clusters=None, model="vae", background="off")
    plain = learn_and_map(img, LearnSettings(**base))
    masked = img.copy()
    masked[:, :60] = np.nan
    with pytest.warns(UserWarning, match="fill_nan"):
        dropped = learn_and_map(masked, LearnSettings(**base))
    with pytest.warns(UserWarning, match="fill_nan"):
        filled = learn_and_map(masked, LearnSettings(**base, masked="fill"))
    n = int(dropped["note"].split(" objects whose window holds masked (NaN) pixels left out")[0].rsplit(" ", 1)[-1])
    assert n > 0 and len(filled["encoding"]) == len(dropped["encoding"]) + n
    assert (dropped["encoding"].centers[:, 1] - 8 >= 60).all()
    assert filled["note"] is None or "left out" not in filled["note"]
    assert plain["note"] is None or "masked" not in plain["note"]
    assert len(plain["encoding"]) > len(dropped["encoding"])
    with pytest.raises(AffineVAEError, match="masked must be one of 'drop', 'fill'"):
        LearnSettings(masked="keep")


def test_learn_and_map_cuts_lobed_particles_once_and_says_so():
    """Trimers found on their lobes: the pipeline cuts each once around its centre ('auto', as ``patches``) and its
    note says so; 'peak' keeps a patch per lobe; a bad centre setting is one line."""
    from affinevae.data.micrograph import render_gaussians
    from affinevae.errors import AffineVAEError
    from affinevae.napari_plugin.pipeline import learn_and_map

    rng = np.random.default_rng(0)
    centres = []  # placed at random (particles on a grid would be a periodic frame: a lattice's, left alone)
    while len(centres) < 16:
        p = rng.uniform(30, 230, 2)
        if all(np.hypot(*(p - q)) > 44 for q in centres):
            centres.append(p)
    centres = np.array(centres)
    turns = rng.uniform(-np.pi, np.pi, (16, 1)) + 2 * np.pi * np.arange(3)[None] / 3
    lobes = (centres[:, None] + 9.0 * np.stack([np.sin(turns), np.cos(turns)], -1)).reshape(-1, 2)
    img = (render_gaussians((260, 260), lobes, np.ones(48), 3.2) + rng.normal(0, 0.1, (260, 260))).astype(np.float32)
    base = dict(window=40, epochs=1, latent_dim=2, clusters=None, model="vae")
    once = learn_and_map(img, LearnSettings(**base))
    assert "brightness centres" in once["note"] and "centre 'peak'" in once["note"]
    assert len(once["encoding"]) == 16
    peaks = learn_and_map(img, LearnSettings(**base, centre="peak"))
    assert peaks["note"] is None and len(peaks["encoding"]) >= 40
    with pytest.raises(AffineVAEError, match="centre must be one of 'auto', 'peak', 'mass'"):
        LearnSettings(centre="middle")
