"""The per-epoch record of the poses found for the training images (``run_dir/poses.npz``).

:class:`PoseRecorder` keeps, during pose-optimised training, the last found parameters of every
training image (by its index in the training data) and the angle found in each epoch;
:class:`PoseRecord` is what it writes and :func:`load_pose_record` reads (no unpickling).
"""

from __future__ import annotations

import dataclasses
import warnings
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ..errors import AffineVAEError, user_stacklevel
from ..io import atomic_write
from ..nn.transforms import Parameterisation

__all__ = ["POSES_FILE", "PoseRecord", "PoseRecorder", "load_pose_record"]

POSES_FILE = "poses.npz"


@dataclasses.dataclass
class PoseRecord:
    """Found poses of the training images over training (``run_dir/poses.npz``).

    Attributes:
        epochs: (E,) epoch numbers.
        angle: (E, N) found angle of each training image per epoch, radians (NaN if unseen).
        labels: (N,) class labels (-1 where unknown), or None when training had no labels.
        params: (N, P) last found parameters.
        transform: parameterisation name.
        param_names: names of the ``params`` columns.
    """

    epochs: np.ndarray
    angle: np.ndarray
    labels: Optional[np.ndarray]
    params: np.ndarray
    transform: str
    param_names: tuple

    def histograms(self, bins: int = 36, true_angle: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """Angle histograms per epoch and class: counts (E, K, bins) and bin edges (bins + 1,) in radians.

        K = number of classes (1 without labels); bins span [-pi, pi). With ``true_angle`` (the
        training images' own rotations, radians, one per record column or more) the histogrammed
        angle is the *encoded orientation* ``true - found``: the rotation, from upright, at which
        the model encodes each digit. It gathers into peaks (one canonical orientation per class)
        as training converges, whatever the images' own rotations; the found angle alone follows
        the images' rotations.
        """
        edges = np.linspace(-np.pi, np.pi, bins + 1)
        angle = self.angle
        if true_angle is not None:
            true = np.asarray(true_angle, dtype=np.float64).reshape(-1)
            if len(true) < angle.shape[1]:
                raise AffineVAEError(f"true_angle has {len(true)} angles for a pose record of {angle.shape[1]} images")
            angle = true[None, :angle.shape[1]] - angle
        labels = self.labels if self.labels is not None else np.zeros(angle.shape[1], np.int64)
        k = max(int(labels.max()) + 1, 1) if len(labels) else 1
        counts = np.zeros((len(self.epochs), k, bins), np.int64)
        wrapped = np.mod(angle + np.pi, 2 * np.pi) - np.pi
        for c in range(k):  # loop over classes (few), vectorised over images
            sel = wrapped[:, labels == c]
            for e in range(len(self.epochs)):
                a = sel[e][np.isfinite(sel[e])]
                counts[e, c] = np.histogram(a, bins=edges)[0]
        return counts, edges

    def save(self, path: str | Path) -> Path:
        """Write the record as an ``.npz`` (atomically) that :func:`load_pose_record` reads."""
        arrays = {"epochs": np.asarray(self.epochs, np.int64), "angle": np.asarray(self.angle, np.float32),
                  "labels": (np.full(self.angle.shape[1], -1, np.int64) if self.labels is None
                             else np.asarray(self.labels, np.int64)),
                  "has_labels": np.array(self.labels is not None),
                  "params": np.asarray(self.params, np.float32), "transform": np.array(self.transform),
                  "param_names": np.array(list(self.param_names), dtype=str)}

        def w(tmp):
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
        return atomic_write(path, w)


def load_pose_record(run_dir: str | Path) -> PoseRecord:
    """Read ``run_dir/poses.npz`` written during pose-optimised training (no unpickling)."""
    path = Path(run_dir) / POSES_FILE if Path(run_dir).is_dir() else Path(run_dir)
    if not path.is_file():
        raise AffineVAEError(f"{path}: no pose record (train an avae with pose_optimise and record_poses)")
    try:
        with np.load(path, allow_pickle=False) as f:
            d = {k: f[k] for k in f.files}
        labels = d["labels"] if bool(d["has_labels"]) else None
        return PoseRecord(epochs=d["epochs"], angle=d["angle"], labels=labels, params=d["params"],
                          transform=str(d["transform"]), param_names=tuple(str(v) for v in d["param_names"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # (an empty or truncated archive)
        raise AffineVAEError(f"{path}: corrupt pose record ({exc.__class__.__name__}: {exc})") from None


class PoseRecorder:
    """Keeps the found pose of every training image during pose-optimised training.

    ``record(index, params, labels)`` stores a batch's found parameters (N, P) under the images'
    positions ``index`` (N,) in the training data; ``end_epoch(epoch, run_dir)`` closes an epoch's
    angles (radians) and writes ``run_dir/poses.npz``; ``record_so_far()`` is the in-memory
    :class:`PoseRecord`.
    """

    def __init__(self, transform: Parameterisation) -> None:
        self.transform = transform
        self.params: Optional[Tensor] = None   # (N, P) last found params per training image
        self.labels: Optional[Tensor] = None   # (N,) labels, -1 unknown
        self.seen: Optional[Tensor] = None     # (N,) bool: seen this epoch
        self.has_labels = False
        self.history: list[tuple[int, np.ndarray]] = []
        self.searched = 0  # images searched (not trusted to the pose head) this epoch
        self.found = 0     # images whose pose was found this epoch

    def count(self, searched: int, found: int) -> None:
        """Count ``found`` images of a batch whose pose was found, ``searched`` of them by the search."""
        self.searched += int(searched)
        self.found += int(found)

    def _grow(self, n: int) -> None:
        old = 0 if self.params is None else len(self.params)
        if n <= old:
            return
        params = torch.full((n, self.transform.dim), float("nan"))
        labels = torch.full((n,), -1, dtype=torch.int64)
        seen = torch.zeros(n, dtype=torch.bool)
        if old:
            params[:old], labels[:old], seen[:old] = self.params, self.labels, self.seen
        self.params, self.labels, self.seen = params, labels, seen

    def record(self, index: Tensor, params: Tensor, labels: Optional[Tensor]) -> None:
        """Store found ``params`` (N, P) (and ``labels`` (N,)) of the training images ``index`` (N,)."""
        idx = torch.as_tensor(index).long().cpu().reshape(-1)
        if len(idx) != len(params):
            raise AffineVAEError(f"index has {len(idx)} entries for {len(params)} images")
        self._grow(int(idx.max()) + 1)
        self.params[idx] = params.detach().float().cpu()
        self.seen[idx] = True
        if labels is not None:
            self.labels[idx] = torch.as_tensor(labels).long().cpu().reshape(-1)
            self.has_labels = True

    def end_epoch(self, epoch: int, run_dir: Optional[Path]) -> dict:
        """Store this epoch's found angles; write ``run_dir/poses.npz`` (atomically) if given.

        The angles are (N,) radians, one per training image (the transform's angle column of the
        last found ``params``; zeros for a transform without an angle), NaN for an image not seen
        this epoch: a row of :attr:`PoseRecord.angle` (E, N).

        Returns ``{"pose_images": number of training images whose pose was found this epoch,
        "pose_searched": share of the found poses that were searched (not the pose head's, trusted)}``
        (only ``pose_searched`` when no pose was recorded by index, empty when none was found).
        """
        share = {"pose_searched": self.searched / self.found} if self.found else {}
        self.searched = self.found = 0
        if self.seen is None or not bool(self.seen.any()):
            return share
        angle = self.transform.angle(self.params).numpy().astype(np.float32)
        angle = np.where(self.seen.numpy(), angle, np.nan).astype(np.float32)
        n_seen = int(self.seen.sum())
        if run_dir is not None and not self.history and epoch > 1 and (Path(run_dir) / POSES_FILE).exists():
            try:  # resumed run: keep the epochs recorded before the interruption
                old = load_pose_record(run_dir)
                self.history = [(int(e), a) for e, a in zip(old.epochs, old.angle) if e < epoch]
            except AffineVAEError as exc:  # written again below with this epoch's angles
                warnings.warn(f"{exc}: the found angles of the epochs before {epoch} are dropped from it",
                              stacklevel=user_stacklevel())
                self.history = []
        self.history = [(e, a) for e, a in self.history if e != epoch] + [(epoch, angle)]
        self.seen.zero_()
        if run_dir is not None:
            self.record_so_far().save(Path(run_dir) / POSES_FILE)
        return {"pose_images": n_seen, **share}

    def record_so_far(self) -> Optional[PoseRecord]:
        """The :class:`PoseRecord` of the epochs ended so far (None before the first)."""
        if not self.history:
            return None
        n = max(len(a) for _, a in self.history)
        table = np.full((len(self.history), n), np.nan, np.float32)
        for i, (_, a) in enumerate(self.history):
            table[i, :len(a)] = a
        return PoseRecord(epochs=np.array([e for e, _ in self.history]), angle=table,
                          labels=self.labels.numpy().copy() if self.has_labels else None,
                          params=self.params.numpy().copy(), transform=self.transform.name,
                          param_names=tuple(self.transform.kinds))
