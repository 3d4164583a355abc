"""napari dock widget: learn and map the objects of the current image layer, in a worker thread."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QLabel, QProgressBar, QPushButton, QSpinBox, QDoubleSpinBox,
                            QWidget)

from ..data.patches import BACKGROUND_MODES, CENTRE_MODES
from ..defaults import MIN_IMAGE_SIZE
from ..errors import AffineVAEError
from .layers import object_features, points_layer
from .pipeline import FAMILIES, MASKED_MODES, LearnSettings, learn_and_map

__all__ = ["LearnAndMapWidget", "layer_transform", "LOWPASS_CHOICES"]

#: The low-pass filter box's entries -> :attr:`LearnSettings.lowpass` (pixels; None: the patch-set defaults choose).
LOWPASS_CHOICES: dict[str, Optional[float]] = {"auto": None, "none": 0.0, "1": 1.0, "1.5": 1.5, "2": 2.0, "2.5": 2.5,
                                               "3": 3.0}


def _shown_frame(viewer: Any, layer: Any) -> int:
    """The frame (first data index) of a stack ``layer`` that ``viewer`` shows: the viewer's point
    mapped into the layer's data coordinates (its translate and scale along the frames), else the
    viewer's step (a viewer without world coordinates)."""
    point = getattr(getattr(viewer, "dims", None), "point", None)
    to_data = getattr(layer, "world_to_data", None)
    if point is not None and to_data is not None and len(point) >= layer.ndim:
        return int(round(float(np.asarray(to_data(tuple(point)[-layer.ndim:]))[0])))
    step = getattr(getattr(viewer, "dims", None), "current_step", ())
    return int(step[0]) if len(step) == 3 else 0


def layer_transform(layer: Any, ndim: int) -> dict[str, Any]:
    """The world transform of a napari ``layer`` as keyword arguments for another layer of ``ndim``
    data dimensions: ``scale``, ``translate``, ``rotate``, ``shear`` and ``affine`` when the two have
    the same dimensions, else the last ``ndim`` entries of its scale and translation; and its ``units``
    (napari 0.5+: nm beside a scale in nm), so that both layers' scale bars agree."""
    if int(getattr(layer, "ndim", -1)) == ndim:
        out = {name: np.asarray(getattr(layer, name)) for name in ("scale", "translate", "rotate", "shear")
               if getattr(layer, name, None) is not None}
        affine = getattr(getattr(layer, "affine", None), "affine_matrix", None)
        if affine is not None:
            out["affine"] = np.asarray(affine)
    else:
        out = {name: tuple(float(v) for v in np.asarray(getattr(layer, name))[-ndim:])
               for name in ("scale", "translate") if getattr(layer, name, None) is not None}
    units = getattr(layer, "units", None)
    if units is not None and len(units) >= ndim:
        out["units"] = tuple(str(u) for u in tuple(units)[-ndim:])
    return out


class _Progress(QObject):
    """Carries ``(fraction, message)`` from the worker thread to the widget (a queued Qt signal)."""

    changed = Signal(float, str)


class LearnAndMapWidget(QWidget):
    """Dock widget: ``patches`` -> ``train`` -> ``map`` on an image layer, then a points layer of the objects.

    The work runs in napari's ``thread_worker`` (the viewer stays responsive); a progress bar
    follows the stages and epochs. The result is added as a points layer named
    ``objects (LAYER)`` with the features of :func:`~.layers.object_features`, coloured by angle
    (or class), over the image layer (same scale).

    Args:
        napari_viewer: the viewer (napari passes it); anything with ``layers`` and ``add_layer``.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.layer_box = QComboBox()
        # train refuses images under MIN_IMAGE_SIZE pixels a side: a smaller patch could never be learnt
        self.window = QSpinBox(minimum=MIN_IMAGE_SIZE, maximum=256, value=LearnSettings.window)
        self.model = QComboBox()
        self.model.addItems(list(FAMILIES))
        self.latent_dim = QSpinBox(minimum=1, maximum=64, value=LearnSettings.latent_dim)
        self.epochs = QSpinBox(minimum=0, maximum=10000, value=0)
        self.epochs.setSpecialValueText("auto")
        self.clusters = QSpinBox(minimum=0, maximum=20, value=LearnSettings.clusters)
        self.clusters.setSpecialValueText("none")
        self.min_distance = QSpinBox(minimum=0, maximum=1000, value=0)
        self.min_distance.setSpecialValueText("auto")  # a quarter of the patch size, as `patches` takes it
        # below 0: "auto" (patches' default: 0.3 of the range, or the noise floor alone on a sparse sky); 0..1 given
        self.threshold = QDoubleSpinBox(minimum=-0.05, maximum=1.0, singleStep=0.05, value=-0.05)
        self.threshold.setSpecialValueText("auto")
        # detection's smoothing, as `patches --sigma`; below 0: "auto" (a sixteenth of the patch size); 0: none
        self.sigma = QDoubleSpinBox(minimum=-0.5, maximum=50.0, singleStep=0.5, value=-0.5)
        self.sigma.setSpecialValueText("auto")
        self.invert = QCheckBox("dark objects on a bright background")
        # below 0: "auto" (patches' default: 5 on an asinh-stretched sky, else off); 0: off
        self.noise_floor = QDoubleSpinBox(minimum=-0.5, maximum=100.0, singleStep=0.5, value=-0.5)
        self.noise_floor.setSpecialValueText("auto")
        self.background = QComboBox()  # uneven backgrounds, as `patches --background`: flattened where needed, or not
        self.background.addItems(list(BACKGROUND_MODES))
        self.centre = QComboBox()  # where each object's patch is cut, as `patches --centre`
        self.centre.addItems(list(CENTRE_MODES))
        self.masked = QComboBox()  # NaN/inf pixels: their patches dropped (`patches --drop-masked`) or kept filled
        self.masked.addItems(list(MASKED_MODES))
        self.lowpass = QComboBox()  # the model's low-pass filter, as `train --lowpass`
        self.lowpass.addItems(list(LOWPASS_CHOICES))
        self.symmetry = QSpinBox(minimum=0, maximum=12, value=0)  # the objects' n-fold symmetry, as `map --symmetry`
        self.symmetry.setSpecialValueText("auto")  # estimated from the patches
        self.run_button = QPushButton("Learn and map")
        self.progress = QProgressBar(minimum=0, maximum=100, value=0)
        self.status = QLabel("")
        form = QFormLayout(self)
        for label, w in (("image layer", self.layer_box), ("patch size (px)", self.window), ("model", self.model),
                         ("content latents", self.latent_dim), ("epochs", self.epochs), ("classes", self.clusters),
                         ("min distance (px)", self.min_distance), ("threshold", self.threshold),
                         ("smoothing (px)", self.sigma), ("invert", self.invert), ("noise floor (sigma; 0: off)", self.noise_floor),
                         ("uneven background", self.background), ("patch centre", self.centre),
                         ("masked (NaN) pixels", self.masked),
                         ("low-pass filter (px)", self.lowpass), ("symmetry (n-fold)", self.symmetry)):
            form.addRow(label, w)
        form.addRow(self.run_button)
        form.addRow(self.progress)
        form.addRow(self.status)
        self._signals = _Progress()
        self._signals.changed.connect(self._on_progress)
        self.run_button.clicked.connect(self.run)
        self.worker = None
        self.refresh_layers()
        events = getattr(getattr(self.viewer, "layers", None), "events", None)
        if events is not None:
            events.inserted.connect(self.refresh_layers)
            events.removed.connect(self.refresh_layers)

    def refresh_layers(self, *_: Any) -> None:
        """List the viewer's image layers in the layer box (keeping the selection when it remains)."""
        current = self.layer_box.currentText()
        names = [layer.name for layer in self.viewer.layers if type(layer).__name__ == "Image"]
        self.layer_box.clear()
        self.layer_box.addItems(names)
        if current in names:
            self.layer_box.setCurrentText(current)

    def settings(self) -> LearnSettings:
        """The :class:`~.pipeline.LearnSettings` the controls hold."""
        return LearnSettings(window=self.window.value(), model=self.model.currentText(),
                             latent_dim=self.latent_dim.value(), epochs=self.epochs.value() or None,
                             clusters=self.clusters.value() or None, min_distance=self.min_distance.value() or None,
                             threshold=None if self.threshold.value() < 0 else float(self.threshold.value()), sigma=None if self.sigma.value() < 0 else float(self.sigma.value()),
                             invert=self.invert.isChecked(), noise_floor=None if self.noise_floor.value() < 0 else float(self.noise_floor.value()),
                             lowpass=LOWPASS_CHOICES[self.lowpass.currentText()],
                             background=self.background.currentText(), masked=self.masked.currentText(),
                             centre=self.centre.currentText(), symmetry=self.symmetry.value() or None)

    def run(self, *_: Any):
        """Start learning on the selected image layer in a worker thread; returns the worker (or None)."""
        from napari.qt.threading import thread_worker

        name = self.layer_box.currentText()
        if not name:
            self.status.setText("no image layer")
            return None
        layer = self.viewer.layers[name]
        # a multiscale layer: its full-resolution level (the points are drawn at the layer's scale)
        image = np.asarray(layer.data[0] if getattr(layer, "multiscale", False) else layer.data)
        if getattr(layer, "rgb", False):
            image = image.mean(-1)
        frame: Optional[int] = None
        if image.ndim == 3:  # a stack of frames: the one the viewer shows, in the layer's own frame index
            frame = _shown_frame(self.viewer, layer)
            frame = min(max(frame, 0), len(image) - 1)
            image = image[frame]
        elif image.ndim != 2:
            self.status.setText(f"error: the layer has shape {image.shape}; learning takes one 2-D frame")
            return None
        settings = self.settings()
        self.run_button.setEnabled(False)
        self.progress.setValue(0)
        emit = self._signals.changed.emit
        # errors are shown in the status line (_failed), not raised again in the main thread
        worker = thread_worker(learn_and_map, start_thread=False, ignore_errors=True)(image, settings, report=emit)
        worker.returned.connect(lambda result: self._show(result, layer, frame))
        worker.errored.connect(self._failed)
        worker.finished.connect(lambda: self.run_button.setEnabled(True))
        self.worker = worker
        worker.start()
        return worker

    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress.setValue(int(round(100 * fraction)))
        self.status.setText(message)

    def _failed(self, exc: BaseException) -> None:
        msg = str(exc) if isinstance(exc, AffineVAEError) else f"{type(exc).__name__}: {exc}"
        self.status.setText(f"error: {msg}")

    def _show(self, result: dict, layer: Any, frame: Optional[int] = None) -> Optional[Any]:
        """Add the points layer of ``result`` over ``layer``: in its data coordinates ((row, col), or
        (frame, row, col) on the stack's ``frame`` that was learnt) with its world transform (scale,
        translate, rotate, shear, affine), so that every point sits on its object."""
        enc = result["encoding"]
        frames = np.full(len(enc), frame if frame is not None else 0, dtype=np.int64)
        feats = object_features(enc.z_mean, enc.angle, result["cluster"], frames, result["symmetry"])
        data, kwargs, _ = points_layer(enc.positions, feats, enc.window, 1, None, None, name=f"objects ({layer.name})")
        if frame is not None:
            data = np.column_stack([frames, data])
        kwargs.update(layer_transform(layer, data.shape[1]))
        from napari.layers import Points

        points = Points(data, **kwargs)
        self.viewer.add_layer(points)
        note = f"; note: {result['note']}" if result.get("note") else ""
        self.status.setText(f"mapped {len(enc)} objects; {result['symmetry']}-fold symmetry; colour by any feature "
                            f"({', '.join(feats)}){note}")
        return points
