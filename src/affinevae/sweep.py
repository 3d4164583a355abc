"""Rotation sweep: mean test -ELBO of several models as the test images turn.

:func:`rotation_sweep` rotates the same test images by each angle (radians) and reports, per
model and angle, the mean negative ELBO in nats per image (its :class:`SweepResult`, table,
CSV and plot give the angles in degrees). A plain model is scored in the pose
the image has; an :class:`~affinevae.models.avae.AVAE` first searches each image's pose
(its ELBO in the found pose). Sampling noise is seeded, so repeated sweeps agree.

:func:`plot_sweep` draws the loss-vs-rotation figure; :func:`parse_angles` reads the CLI's
``start:stop:step`` degrees (the CLI converts them to radians).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .config import Config, check, check_choice, check_seed
from .data.imageset import check_threshold
from .data.inputs import as_images
from .errors import AffineVAEError, refuse_removed_keywords
from .io import atomic_write
from .nn.affine import FULL_TURN, Pose, check_angle, check_full_turn, render  # noqa: F401  (FULL_TURN, check_full_turn: re-exported)
from .nn.modes import module_mode
from .models.base import check_model
from .nn.signal import is_signal_shape
from .pose.search import SearchConfig, seeded

__all__ = ["SweepConfig", "SweepResult", "rotation_sweep", "plot_sweep", "parse_angles", "rotate_images", "check_angles", "check_models", "check_full_turn",
           "load_sweep_csv", "SWEEP_ANGLES"]

MAX_ANGLES = 3600
SWEEP_ANGLES = tuple(float(a) for a in np.radians(np.arange(0, 360, 30)))
"""Default rotations of :func:`rotation_sweep`: 0 to 330 degrees every 30, in radians."""


@dataclasses.dataclass(frozen=True)
class SweepConfig(Config):
    """Options of :func:`rotation_sweep`.

    Attributes:
        seed: seeds the ELBO sampling noise (and the AVAE's random restarts).
        chunk: images per forward pass of a plain model.
        interpolation: how the rotated test images are made: 'bilinear' (the package's
            convention, as :func:`affinevae.data.transform_images`), 'bicubic' (sharper,
            clipped to [0, 1]) or 'nearest' (every pixel takes the value of the nearest source
            pixel: no blur, jagged edges). Off-grid bilinear rotation blurs the digits, which
            raises every model's loss at angles that are not multiples of 90 degrees.
        search: search options for every AVAE (None: each AVAE's own ``search`` config,
            with this sweep's ``seed``).
        binarize: threshold each rotated image at this value (pixels above become 1, the
            others 0), or None. Rotating by an angle that is not a multiple of 90 degrees
            resamples the pixels and greys the strokes; under a Bernoulli likelihood grey pixels
            carry entropy that no pose can remove (about 27 nats per MNIST digit), so a sweep on
            grey images mixes that blur with the pose. Thresholding the rotated images (with
            models trained on thresholded digits) leaves only the pose.
        progress: show a progress bar over the (angle, model) passes, on a terminal only (tqdm; never
            in logs or pipes): an AVAE's search at every angle takes minutes on a CPU.
    """

    seed: int = 0
    chunk: int = 2048
    interpolation: str = "bilinear"
    search: Optional[SearchConfig] = None
    binarize: Optional[float] = None
    progress: bool = False

    def validate(self) -> None:
        """Check the fields beyond their types; a bad value raises a one-line :class:`AffineVAEError` naming it (run at construction)."""
        check_seed(self.seed)
        check(isinstance(self.chunk, int) and self.chunk >= 1, f"chunk must be an integer >= 1, got {self.chunk!r}")
        check_choice("interpolation", self.interpolation, ["bilinear", "bicubic", "nearest"])
        check(self.search is None or isinstance(self.search, SearchConfig),
              f"search must be a SearchConfig or None, got {type(self.search).__name__}")
        if self.binarize is not None:
            check_threshold(self.binarize, "sweep")
        check(isinstance(self.progress, bool), f"progress must be true or false, got {self.progress!r}")

    def to_dict(self) -> dict:
        """JSON-able dict (``search`` as a dict or None)."""
        out = super().to_dict()
        out["search"] = None if self.search is None else self.search.to_dict()
        return out


@dataclasses.dataclass
class SweepResult:
    """Mean test -ELBO per angle per model.

    Attributes:
        angles_deg: (A,) rotation angles, degrees (counter-clockwise on screen).
        names: the M model names (CSV column order).
        neg_elbo: (M, A) mean negative ELBO, nats per image.
        sem: (M, A) standard error of those means (NaN when read back from a CSV).
        n_images: test images per angle.
    """

    angles_deg: np.ndarray
    names: list
    neg_elbo: np.ndarray
    sem: np.ndarray
    n_images: int

    @property
    def angles(self) -> np.ndarray:
        """(A,) the rotation angles in radians."""
        return np.radians(np.asarray(self.angles_deg, dtype=np.float64))

    def column(self, name: str) -> np.ndarray:
        """(A,) mean -ELBO of model ``name``."""
        if name not in self.names:
            raise AffineVAEError(f"no model {name!r} in the sweep; models: {', '.join(self.names)}")
        return self.neg_elbo[self.names.index(name)]

    def relative(self) -> np.ndarray:
        """(M, A) each model's -ELBO divided by its value at the first angle (usually 0 degrees)."""
        return self.neg_elbo / self.neg_elbo[:, :1]

    def table(self) -> str:
        """A plain-text table: one row per angle, its first column ``angle_deg`` in degrees (as
        :attr:`angles_deg`), then one column per model (mean -ELBO, nats/image)."""
        width = max([9] + [len(n) for n in self.names]) + 2
        lines = ["angle_deg".rjust(9) + "".join(n.rjust(width) for n in self.names)]
        for j, a in enumerate(self.angles_deg):
            lines.append(f"{a:9g}" + "".join(f"{self.neg_elbo[i, j]:{width}.2f}" for i in range(len(self.names))))
        return "\n".join(lines)

    def to_csv(self, path: str | Path) -> Path:
        """Write columns angle_deg, then one per model (mean -ELBO, nats/image), atomically."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["angle_deg", *self.names])
        for j, a in enumerate(self.angles_deg):
            w.writerow([f"{a:g}", *(f"{self.neg_elbo[i, j]:.4f}" for i in range(len(self.names)))])
        text = buf.getvalue()
        return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def load_sweep_csv(path: str | Path) -> SweepResult:
    """Read a sweep CSV written by :meth:`SweepResult.to_csv` (``sem`` is NaN, ``n_images`` 0)."""
    path = Path(path)
    if not path.is_file():
        raise AffineVAEError(f"{path}: sweep CSV not found")
    rows = list(csv.reader(path.read_text().splitlines()))
    if not rows or rows[0][:1] != ["angle_deg"] or len(rows[0]) < 2:
        raise AffineVAEError(f"{path}: not a sweep CSV (first column must be angle_deg)")
    try:
        data = np.array([[float(v) for v in r] for r in rows[1:] if r], dtype=np.float64).reshape(-1, len(rows[0]))
    except ValueError as exc:
        raise AffineVAEError(f"{path}: bad number in sweep CSV ({exc})") from None
    return SweepResult(angles_deg=data[:, 0], names=rows[0][1:], neg_elbo=data[:, 1:].T.copy(),
                       sem=np.full((len(rows[0]) - 1, len(data)), np.nan), n_images=0)


def parse_angles(spec: str, option: str = "--angles") -> np.ndarray:
    """Angles in degrees from ``start:stop:step`` (stop excluded), ``a,b,c`` or one number: (A,)
    float64, each within -360..360 degrees (one full turn).

    The spec is the command line's, in degrees, and so is the result: convert it with
    ``np.radians(...)`` before passing it to the radian functions (:func:`rotation_sweep`).

    Raises :class:`AffineVAEError` naming ``option`` (the command-line option the spec came from)
    and the offending spec on bad input.
    """
    text = str(spec).strip()
    where = f"{option} {spec!r}"
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise AffineVAEError(f"{where}: expected start:stop:step in degrees, e.g. 0:360:15")
        try:
            start, stop, step = (float(p) for p in parts)
        except ValueError:
            raise AffineVAEError(f"{where}: start, stop and step must be numbers (degrees)") from None
        if not all(math.isfinite(v) for v in (start, stop, step)):
            raise AffineVAEError(f"{where}: start, stop and step must be finite")
        if step <= 0:
            raise AffineVAEError(f"{where}: step must be > 0 degrees")
        if stop <= start:
            raise AffineVAEError(f"{where}: stop must be greater than start (stop is excluded)")
        count = math.ceil((stop - start) / step - 1e-9)
        if count > MAX_ANGLES:
            raise AffineVAEError(f"{where}: {count} angles is too many (at most {MAX_ANGLES})")
        values = start + step * np.arange(count, dtype=np.float64)
        check_degrees(values, where)
        return values
    try:
        values = np.array([float(p) for p in text.split(",")], dtype=np.float64)
    except ValueError:
        raise AffineVAEError(f"{where}: expected start:stop:step or a comma-separated list of degrees") from None
    if not np.all(np.isfinite(values)):
        raise AffineVAEError(f"{where}: angles must be finite")
    if len(values) > MAX_ANGLES:
        raise AffineVAEError(f"{where}: {len(values)} angles is too many (at most {MAX_ANGLES})")
    check_degrees(values, where)
    return values


def check_degrees(values, where: str) -> None:
    """Degrees (a number or (A,) array) within one full turn (-360..360), the range the radian
    functions take; else one line starting with ``where`` (the option)."""
    values = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if len(values) and float(np.max(np.abs(values))) > 360 + 1e-9:
        raise AffineVAEError(f"{where}: angles must lie within -360..360 degrees (one full turn), "
                             f"got {float(values[np.argmax(np.abs(values))]):g}")


def check_angles(angles, where: str, what: str = "angles", allow_empty: bool = False) -> np.ndarray:
    """Sweep ``angles`` (A,) as float64 radians: one or more (none with ``allow_empty``) finite
    numbers within one full turn, else a one-line :class:`AffineVAEError` starting with ``where``
    (the public function checking them) and naming its argument ``what``."""
    try:
        radians = np.asarray(list(angles), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise AffineVAEError(f"{where}: {what} must be numbers (radians), got {angles!r}") from None
    if not np.all(np.isfinite(radians)) or (len(radians) == 0 and not allow_empty):
        raise AffineVAEError(f"{where}: {what} must be {'finite' if allow_empty else 'one or more finite'} "
                             "numbers (radians)")
    check_full_turn(radians, where, what)
    return radians


def check_models(models, where: str) -> None:
    """Refuse in one line starting with ``where`` anything but a non-empty dict of name -> model."""
    if not isinstance(models, Mapping):
        raise AffineVAEError(f"{where}: models must be a non-empty dict of name -> model (e.g. {{'vae': model}}), "
                             f"got {type(models).__name__}")
    if not models:
        raise AffineVAEError(f"{where} needs at least one model")
    for name, model in models.items():
        check_model(model, f"{where}: models[{name!r}]")
        if is_signal_shape(model.config.image_shape):
            raise AffineVAEError(f"{where}: models[{name!r}] is a model of 1-D signals {tuple(model.config.image_shape)}: "
                                 "a rotation sweep turns images")


def rotate_images(images: Tensor, angle: Optional[float] = None, interpolation: str = "bilinear",
                  **removed) -> Tensor:
    """Rotate (N, C, H, W) images counter-clockwise on screen by ``angle`` radians about the centre.

    ``images``: anything :func:`affinevae.data.as_images` takes (a tensor or array, (N, H, W) read as one
    channel; integers become float32 as they are, so give uint8 pixels divided by 255). ``angle`` is
    required (radians; ``np.radians(...)`` converts degrees); ``interpolation``: 'bilinear', 'bicubic' or
    'nearest'. Returns a float32 tensor (N, C, H, W), clipped to [0, 1]. The former keyword ``angle_deg``
    (degrees) is refused in one line, as are bad images and an unknown interpolation.
    """
    refuse_removed_keywords("rotate_images", removed, {
        "angle_deg": "angle_deg (degrees) is now angle, in radians (e.g. angle=np.radians(30))"})
    if angle is None:
        raise AffineVAEError("rotate_images needs an angle, in radians (e.g. angle=np.radians(30))")
    value = check_angle(angle, "rotate_images")
    check_choice("rotate_images: interpolation", interpolation, ("bilinear", "bicubic", "nearest"))
    images, _ = as_images(images, where="rotate_images")
    turn = torch.full((len(images),), value, dtype=torch.float32, device=images.device)
    return render(images, Pose(angle=turn), mode=interpolation).clamp(0, 1)


def _as_images(images, labels) -> tuple[Tensor, Optional[Tensor]]:
    """Sweep images (N, C, H, W) float32 and labels, by :func:`affinevae.data.as_images`."""
    return as_images(images, labels, where="sweep images")


@torch.no_grad()
def _neg_elbo(model, x: Tensor, y: Optional[Tensor], cfg: SweepConfig) -> Tensor:
    """(N,) -ELBO of ``model``: AVAEs search their pose first; plain models score x as it is."""
    if model.pose_source == "searched":
        search = cfg.search or model.config.search.replace(seed=cfg.seed)
        return -model.align(x, y if model.takes_labels else None, search).elbo_after
    xs, ys = model.check_input(x, y)
    parts = []
    with seeded(cfg.seed, xs.device):
        for i in range(0, len(xs), cfg.chunk):
            parts.append(model(xs[i:i + cfg.chunk], None if ys is None else ys[i:i + cfg.chunk]).elbo.float())
    return -torch.cat(parts)


def rotation_sweep(models: Mapping[str, object], images, labels=None, *positional,
                   angles: Sequence[float] = SWEEP_ANGLES, config: Optional[SweepConfig] = None,
                   **removed) -> SweepResult:
    """Mean test -ELBO (nats/image) of each model for the test images rotated by each angle.

    Args:
        models: name -> model (any LatentModel; AVAEs search the pose).
        images: (N, C, H, W) images (array, tensor or :class:`~affinevae.data.ImageSet`), upright
            (grey, even with ``config.binarize``: they are thresholded after rotating).
        labels: (N,) labels (needed by class-conditional models; taken from an ImageSet).
        angles: (A,) rotation angles in radians, counter-clockwise on screen (keyword only;
            default :data:`SWEEP_ANGLES`, 0 to 330 degrees every 30; ``np.radians(...)``
            converts degrees).
        config: :class:`SweepConfig` (keyword only).

    The former keyword ``angles_deg`` (degrees), and angles or a config passed by position
    (which were degrees), are refused in one line.

    Returns:
        :class:`SweepResult` with (M, A) ``neg_elbo`` and its standard error; its
        ``angles_deg`` are the angles in degrees (rounded to 1e-9), as its table, CSV and
        plot show them.
    """
    refuse_removed_keywords("rotation_sweep", removed, {
        "angles_deg": "angles_deg (degrees) is now angles, in radians "
                      "(e.g. angles=np.radians(range(0, 360, 30)))"})
    if positional:
        raise AffineVAEError("rotation_sweep: angles and config are keyword-only, angles in radians "
                             "(e.g. rotation_sweep(models, images, labels, angles=np.radians(range(0, 360, 30)), "
                             "config=SweepConfig()))")
    cfg = config or SweepConfig()
    if not isinstance(cfg, SweepConfig):
        raise AffineVAEError(f"rotation_sweep: config must be a SweepConfig, got {type(cfg).__name__}")
    check_models(models, "rotation_sweep")
    radians = check_angles(angles, "rotation_sweep")
    degrees = np.round(np.degrees(radians), 9)  # the result (table, CSV, plots) in degrees: 30.0, not 30.000000000000004
    x, y = _as_images(images, labels)
    for m in models.values():  # upright images outside a model's pixel range (uint8 for a Bernoulli): one line, as
        m.check_pixels(x, "rotation_sweep: images")  # its elbo says, not scored after the turn clipped them
    names = list(models)
    mean = np.zeros((len(names), len(radians)))
    sem = np.zeros_like(mean)
    from tqdm.auto import tqdm

    with contextlib.ExitStack() as modes:  # every submodule of every model gets its own mode back (a wrapped model too)
        for m in models.values():
            modes.enter_context(module_mode(m))
        bar = modes.enter_context(tqdm(total=len(radians) * len(names), unit="pass", desc="sweep", leave=False,
                                       disable=None if cfg.progress else True))
        for j, a in enumerate(radians):
            for i, name in enumerate(names):
                model = models[name]
                xr = rotate_images(x.to(model.device), float(a), cfg.interpolation)
                if cfg.binarize is not None:
                    xr = (xr > cfg.binarize).float()
                v = _neg_elbo(model, xr, y, cfg).double().cpu().numpy()
                mean[i, j] = v.mean()
                sem[i, j] = v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
                bar.update(1)
    return SweepResult(angles_deg=degrees, names=names, neg_elbo=mean, sem=sem, n_images=len(x))


def plot_sweep(result: SweepResult, path: Optional[str | Path] = None, title: Optional[str] = None):
    """Loss-vs-rotation figure (mean -ELBO with a +-1 s.e. band per model); saved as PNG if ``path``.

    Returns the :class:`matplotlib.figure.Figure` (no pyplot state is touched).
    """
    from matplotlib.figure import Figure

    if not isinstance(result, SweepResult):
        raise AffineVAEError(f"plot_sweep: needs a SweepResult (rotation_sweep, load_sweep_csv), got {type(result).__name__}")

    from .plots import literal_texts

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for i, name in enumerate(result.names):
        ax.plot(result.angles_deg, result.neg_elbo[i], marker="o", ms=3, label=name)
        if np.all(np.isfinite(result.sem[i])):
            ax.fill_between(result.angles_deg, result.neg_elbo[i] - result.sem[i], result.neg_elbo[i] + result.sem[i],
                            alpha=0.2)
    ax.set_xlabel("rotation of the test images (degrees)")
    ax.set_ylabel("mean -ELBO (nats / image)")
    ax.set_title(title or (f"rotation sweep ({result.n_images} images)" if result.n_images else "rotation sweep"))
    ax.grid(alpha=0.3)
    ax.legend()
    literal_texts(fig)  # model names are shown as typed (no mathtext)
    fig.tight_layout()
    if path is not None:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return fig
