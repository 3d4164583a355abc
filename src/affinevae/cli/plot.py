"""``affinevae plot``: any analysis of :mod:`affinevae.analysis` as a PNG, from a run directory."""

from __future__ import annotations

import argparse
import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import AffineVAEError
from ..nn.signal import is_signal_shape
from ..mapping import check_symmetry
from ..limits import ANGLE_HISTOGRAM_BINS, MANIFOLD_GRID_SIDE, check_allocation
from ..registry import Registry
from ..sweep import check_degrees
from . import COMMANDS
from .common import add_binarize_argument, add_fill_nan_argument, add_force_argument, check_split, load_run_data, parse_int_list, seed_arg



@dataclasses.dataclass
class PlotContext:
    """What a plot kind draws from: the parsed options, the loaded runs and the data.

    Attributes:
        args: the parsed command line.
        runs: the run (:class:`~affinevae.runs.Run`), then those of ``--compare``.
        models: the run's model, then those of ``--compare``.
        names: a label per model (run directory names).
        data: the images to analyse (None for kinds that need none).
        show: images shown (``--show``, or the kind's default).
    """

    args: argparse.Namespace
    runs: list
    models: list
    names: list
    data: Any
    show: int

    @property
    def model(self):
        """The first run's model."""
        return self.models[0]

    @property
    def run(self):
        """The first run."""
        return self.runs[0]


@dataclasses.dataclass(frozen=True)
class PlotKind:
    """One ``affinevae plot`` kind: its help line, whether it reads images, and how it draws."""

    help: str
    needs_data: bool
    draw: Callable[[PlotContext], Any]
    compares: bool = False
    """Whether it draws the ``--compare`` runs beside the run."""


PLOT_KINDS: Registry = Registry("plot kind")

#: ``--dpi`` accepted: from a thumbnail to print resolution.
DPI_RANGE = (10, 1200)
#: The integer kind options accepted, checked before any run or data is loaded: option -> (lowest,
#: highest, what the number counts). ``--d`` and ``--bins`` as :func:`affinevae.analysis.latent_manifold`
#: and :func:`affinevae.analysis.rotation_histograms` take them; the others bound the images drawn
#: (a figure of more would be unreadable, and a huge count would be decoded before it is drawn).
OPTION_RANGES: dict[str, tuple[int, int, str]] = {
    "--show": (1, 1024, "images"),
    "--d": (*MANIFOLD_GRID_SIDE, "images per side of the manifold grid"),
    "--per-class": (1, 256, "samples per class"),
    "--steps": (2, 256, "interpolation steps"),
    "--bins": (*ANGLE_HISTOGRAM_BINS, "angle bins over 360 degrees"),
}
#: Figure formats ``--out`` may name, by lower-case extension -> matplotlib format.
FIGURE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff", ".pdf": "pdf",
                  ".svg": "svg"}


def figure_format(out: str) -> str:
    """The matplotlib format ``--out`` names by its extension ('png', 'jpeg', 'tiff', 'pdf', 'svg');
    an :class:`AffineVAEError` for any other extension."""
    suffix = Path(out).suffix
    if suffix.lower() not in FIGURE_FORMATS:
        kind = f"'{suffix}'" if suffix else "no extension"
        raise AffineVAEError(f"--out {out}: {kind} is not a figure format plot writes; use .png, .jpg/.jpeg, "
                             ".tif/.tiff, .pdf or .svg")
    return FIGURE_FORMATS[suffix.lower()]


def _range(option: str) -> str:
    """``OPTION_RANGES[option]`` for a help text: '2..64'."""
    lo, hi, _ = OPTION_RANGES[option]
    return f"{lo}..{hi}"


def check_dpi(dpi: int) -> None:
    """Refuse in one line a ``--dpi`` outside :data:`DPI_RANGE`."""
    lo, hi = DPI_RANGE
    if not lo <= dpi <= hi:
        raise AffineVAEError(f"--dpi must lie in [{lo}, {hi}] dots per inch, got {dpi}")


def check_option_ranges(args: argparse.Namespace) -> None:
    """Refuse in one line an integer kind option outside its :data:`OPTION_RANGES` entry (options not
    given, None, are left to their defaults), ``--dpi`` outside :data:`DPI_RANGE`, and a ``--noise``
    (pixel intensity units) or ``--angle`` (degrees) that is not a finite number (``--noise`` < 0 too)."""
    for option, (lo, hi, what) in OPTION_RANGES.items():
        value = getattr(args, option[2:].replace("-", "_"), None)
        if value is not None and not lo <= value <= hi:
            raise AffineVAEError(f"{option} must lie in [{lo}, {hi}] {what}, got {value}")
    check_dpi(args.dpi)
    if not (math.isfinite(args.noise) and args.noise >= 0):
        raise AffineVAEError(f"--noise must be a finite standard deviation >= 0 (pixel intensity units), "
                             f"got {args.noise:g}")
    if not math.isfinite(args.angle):
        raise AffineVAEError(f"--angle must be a finite number of degrees, got {args.angle:g}")
    check_degrees(args.angle, "--angle")


def check_figure_memory(fig, dpi: int) -> None:
    """Refuse in one line (:func:`affinevae.limits.check_allocation`, naming ``--dpi``), and close
    ``fig``, when its pixels at ``dpi`` would not fit in memory."""
    from ..plots import close_figure

    w, h = (float(v) * dpi for v in fig.get_size_inches())
    try:
        check_allocation(4.0 * w * h, f"a {w:.0f}x{h:.0f}-pixel figure (RGBA)", f"--dpi {dpi}")
    except AffineVAEError:
        close_figure(fig)
        raise


def plot_data(args: argparse.Namespace, run, grey: bool = False, expect: Optional[tuple] = None,
              announce: bool = True) -> Any:
    """The images ``plot`` draws for ``run``: :func:`~affinevae.cli.common.load_run_data` with
    ``--split`` and ``--seed`` (the run's own data with the options training recorded, e.g.
    rotated-mnist's angle range, when ``--data`` is not given or names the run's own spec without
    ``--key``/``--labels``; ``--binarize`` applies to either and on the run's own data replaces the
    run's threshold). ``grey``: no threshold at all (for a kind that turns the images and thresholds
    them after, as ``sweep`` does). ``expect``: the model's (C, H, W); images of another shape are
    refused in one line naming the file. ``announce``: say in one line when other data take the run's
    pixel scaling (once a command)."""
    return load_run_data(args, run, check_split(args.split, args.data), seed=args.seed, binarize=not grey,
                         announce=False, announce_scaling=announce, expect=expect)  # (no angle-range line)


#: Images ``plot`` reads at most when ``-n`` is not given.
PLOT_IMAGES = 1000


def comparing_kinds() -> str:
    """The plot kinds that draw ``--compare`` runs (:attr:`PlotKind.compares`), comma-separated."""
    return ", ".join(n for n in PLOT_KINDS.in_order() if PLOT_KINDS.get(n).compares)


#: The kind options (``args`` names) and the plot kinds that read them; given to another kind they would be
#: ignored, so they are refused in one line (:func:`refuse_other_kinds_options`).
OPTION_KINDS = {
    "show": ("reconstructions", "samples", "anomaly", "denoising"), "indices": ("reconstructions", "denoising", "rotation-strip"),
    "color_by": ("latent",), "method": ("latent",), "dims": ("latent", "manifold"), "d": ("manifold",),
    "bounds": ("manifold",), "angle": ("manifold",), "classes": ("samples", "manifold", "rotation-histograms"),
    "per_class": ("samples",), "pair": ("interpolation",), "steps": ("interpolation",), "triple": ("arithmetic",),
    "angles": ("loss-vs-rotation", "rotation-strip"), "with_avae": ("loss-vs-rotation",), "bins": ("rotation-histograms",),
    "noise": ("denoising",), "symmetry": ("angles",),
}


#: The data options (``args`` names), read only by the kinds that draw images (:attr:`PlotKind.needs_data`).
DATA_OPTIONS = ("data", "labels", "key", "n", "split", "fill_nan", "binarize")


def refuse_other_kinds_options(args: argparse.Namespace) -> None:
    """One line for a kind option given (other than its default, read from :meth:`Plot.add_arguments`, the one
    source) to a plot kind that does not read it (``plot reconstructions --angle 30`` drew as if not given)."""
    parser = argparse.ArgumentParser(add_help=False)
    Plot.add_arguments(parser)
    defaults = vars(parser.parse_args([str(args.run_dir), args.kind, "--out", "x"]))
    for name, kinds in OPTION_KINDS.items():
        if args.kind not in kinds and getattr(args, name) != defaults[name]:
            option = "--" + name.replace("_", "-")
            raise AffineVAEError(f"{option} applies to {', '.join(kinds)}, not to {args.kind}")
    if not PLOT_KINDS.get(args.kind).needs_data:  # it draws from the model or the run's records alone
        for name in DATA_OPTIONS:
            if getattr(args, name) != defaults[name]:
                option = "-n" if name == "n" else "--" + name.replace("_", "-")
                readers = ", ".join(n for n in PLOT_KINDS.in_order() if PLOT_KINDS.get(n).needs_data)
                raise AffineVAEError(f"{option} applies to the kinds that read images ({readers}), "
                                     f"not to {args.kind}, which draws no data")


def plot_kind(name: str, help: str, needs_data: bool = True, compares: bool = False):
    """Decorator registering ``draw(ctx) -> Figure`` as the plot kind ``name`` (``compares``: it
    draws the ``--compare`` runs too)."""

    def deco(draw: Callable[[PlotContext], Any]):
        PLOT_KINDS.register(name)(PlotKind(help, needs_data, draw, compares))
        return draw

    return deco


def _floats(text: str, name: str, count: int) -> tuple:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise AffineVAEError(f"--{name} must be {count} comma-separated numbers, got {text!r}") from None
    if len(vals) != count:
        raise AffineVAEError(f"--{name} must be {count} comma-separated numbers, got {text!r}")
    return vals


def _ints(text: Optional[str], name: str, count: Optional[int] = None) -> Optional[tuple]:
    if text is None:
        return None
    vals = parse_int_list(text, name)
    if count is not None and len(vals) != count:
        raise AffineVAEError(f"--{name} needs {count} comma-separated integers, got {text!r}")
    return vals


def _label(run_dir) -> str:
    return Path(run_dir).resolve().name or str(run_dir)



def _analysis():
    from .. import analysis

    return analysis


@plot_kind("reconstructions", "originals above reconstructions (--show K random or --indices)")
def _reconstructions(c: PlotContext):
    A = _analysis()
    return A.plot_reconstructions(A.reconstructions(c.model, c.data, n=c.show, indices=_ints(c.args.indices, "indices"),
                                                    seed=c.args.seed), c.args.title)


@plot_kind("latent", "scatter of latent means by class / inferred class / true angle / learned angle (--color-by, --method, --dims)", compares=True)
def _latent(c: PlotContext):
    A = _analysis()
    a = c.args
    color = "auto" if a.color_by == "auto" else [v.strip().replace("-", "_") for v in a.color_by.split(",")]
    if color != "auto":
        bad = next((v for v in color if v not in A.COLOR_BY), None)
        if bad is not None:
            raise AffineVAEError(f"--color-by must be auto or any of {','.join(k.replace('_', '-') for k in A.COLOR_BY)}, "
                                 f"got {bad.replace('_', '-')!r}")
    dims = _ints(a.dims, "dims")
    if dims is not None and len(dims) not in (2, 3):
        raise AffineVAEError(f"--dims needs 2 comma-separated integers (3 for a 3-D view), got {a.dims!r}")
    codes = [A.latent_codes(m, c.data, method=a.method, dims=dims, seed=a.seed) for m in c.models]
    for code, name in zip(codes, c.names):
        code.model = name
    return A.plot_latent_scatter(codes, color, a.title)


@plot_kind("latent-stats", "per-dimension min/max/mean/std and densities vs N(0, 1); --compare RUN ... on one figure", compares=True)
def _latent_stats(c: PlotContext):
    A = _analysis()
    return A.plot_latent_stats([A.latent_stats(m, c.data, name=nm) for m, nm in zip(c.models, c.names)], c.args.title)


@plot_kind("samples", "grid of prior samples (--show N; conditional models: --per-class, --classes)", needs_data=False,
           compares=True)
def _samples(c: PlotContext):
    A = _analysis()
    classes = _ints(c.args.classes, "classes")
    from ..analysis.common import rendered_classes

    takes = [bool(rendered_classes(m)) for m in c.models]
    if classes is not None and not any(takes):  # it was ignored silently
        raise AffineVAEError(f"--classes: {c.names[0]} renders no classes (a cvae/crvae or a joint or semi-supervised "
                             "classification model does)")
    gens = [A.generate(m, n=c.show, classes=classes if t else None, per_class=c.args.per_class,
                       seed=c.args.seed) for m, t in zip(c.models, takes)]
    return A.plot_generation(gens, c.args.title, names=c.names)


@plot_kind("manifold", "decoded d x d grid over two latent dims (--d, --bounds, --dims, --angle DEG, --classes)",
           needs_data=False)
def _manifold(c: PlotContext):
    A = _analysis()
    a = c.args
    m = A.latent_manifold(c.model, d=a.d, bounds=_floats(a.bounds, "bounds", 2), dims=_ints(a.dims, "dims", 2) or (0, 1),
                          angle=math.radians(a.angle), classes=_ints(a.classes, "classes"))
    return A.plot_manifold(m, a.title, class_names=c.run.class_names)


@plot_kind("interpolation", "morph image i into j through the latent space (--pair i,j --steps)", compares=True)
def _interpolation(c: PlotContext):
    A = _analysis()
    pair = _ints(c.args.pair, "pair", 2)
    return A.plot_interpolation([A.interpolate(m, c.data, pair, steps=c.args.steps) for m in c.models], c.args.title,
                                c.names)


@plot_kind("arithmetic", "decode z_a - z_b + z_c (--triple a,b,c)", compares=True)
def _arithmetic(c: PlotContext):
    A = _analysis()
    triple = _ints(c.args.triple, "triple", 3)
    return A.plot_arithmetic([A.latent_arithmetic(m, c.data, triple) for m in c.models], c.args.title, c.names)


@plot_kind("angles", "learned vs true angle with the circular correlation (rvae/crvae/avae on rotated data)", compares=True)
def _angles(c: PlotContext):
    A = _analysis()
    items = [A.angle_comparison(m, c.data, symmetry=c.args.symmetry) for m in c.models]
    for it, nm in zip(items, c.names):
        it.model = nm
        for note in (it.mirror, it.fold):  # what the title can only hint at
            if note:
                print(f"affinevae: {nm}: {note}")
    return A.plot_angle_comparison(items, c.args.title)


@plot_kind("loss-vs-rotation", "mean -ELBO vs rotation of the test images (--angles; --compare RUN ...; --with-avae)", compares=True)
def _loss_vs_rotation(c: PlotContext):
    from ..models.avae import AVAE
    from ..sweep import parse_angles

    A = _analysis()
    if is_signal_shape(c.models[0].config.image_shape):
        raise AffineVAEError(f"{c.args.run_dir}: loss-vs-rotation turns images; a model of 1-D signals has no rotation "
                             "(plot its latents or reconstructions)")
    models = {}
    for m, nm in zip(c.models, c.names):
        models[nm] = m
        if c.args.with_avae and m.pose_source != "searched":
            models[f"{nm} + pose search (avae)"] = AVAE(m, pose_head=False).eval()
    binarize = c.args.binarize if c.args.binarize is not None else c.run.binarize
    angles = [math.radians(a) for a in parse_angles(c.args.angles)]  # --angles: degrees
    data = (plot_data(c.args, c.run, grey=True, expect=tuple(c.models[0].config.image_shape), announce=False)
            if binarize is not None else c.data)  # thresholded after each turn (read again: said once already)
    res = A.loss_vs_rotation(models, data, angles, seed=c.args.seed, binarize=binarize)
    return A.plot_loss_vs_rotation(res, c.args.title)


@plot_kind("rotation-strip", "one image turned by each of --angles above its reconstructions, with the -ELBO of each "
           "turn (--indices I: the image, default 0)")
def _rotation_strip(c: PlotContext):
    from ..sweep import parse_angles

    A = _analysis()
    if is_signal_shape(c.model.config.image_shape):
        raise AffineVAEError(f"{c.args.run_dir}: rotation-strip turns images; a model of 1-D signals has no rotation "
                             "(plot its latents or reconstructions)")
    degrees = parse_angles(c.args.angles)
    if len(degrees) > 1 and abs(degrees[-1] - degrees[0]) % 360 < 1e-9:  # 0:361:30 ends where it started
        degrees = degrees[:-1]
    if len(degrees) > 36:
        raise AffineVAEError(f"--angles: rotation-strip draws at most 36 turns, got {len(degrees)}")
    indices = _ints(c.args.indices, "indices")
    if indices is not None and len(indices) != 1:
        raise AffineVAEError(f"--indices: rotation-strip draws one image, got {len(indices)}")
    if indices and indices[0] >= len(c.data):
        raise AffineVAEError(f"--indices {indices[0]}: past the {len(c.data)} images read")
    strip = A.rotation_strip(c.model, c.data, index=indices[0] if indices else 0,
                             angles=[math.radians(a) for a in degrees], seed=c.args.seed)
    return A.plot_rotation_strip(strip, c.args.title)


@plot_kind("rotation-histograms", "orientation at which each training image is encoded (its own rotation minus the "
           "found pose; found angles when its rotation is unknown) per class over pose-optimised training "
           "(avae run; --classes, --bins)", needs_data=False)
def _rotation_histograms(c: PlotContext):
    A = _analysis()
    h = A.rotation_histograms(c.run, bins=c.args.bins, true_angle=c.run.training_angles())
    return A.plot_rotation_histograms(h, classes=_ints(c.args.classes, "classes"), title=c.args.title,
                                      class_names=c.run.class_names)


@plot_kind("anomaly", "-ELBO histogram and the most / least typical images (--show K)")
def _anomaly(c: PlotContext):
    A = _analysis()
    return A.plot_anomaly(A.anomaly_scores(c.model, c.data, k=c.show, seed=c.args.seed), c.args.title)


@plot_kind("denoising", "noisy input, reconstruction, clean original with PSNR (--noise, --show)")
def _denoising(c: PlotContext):
    A = _analysis()
    a = c.args
    return A.plot_denoising(A.denoise(c.model, c.data, n=c.show, noise_std=a.noise, seed=a.seed,
                                      indices=_ints(a.indices, "indices")), a.title)


@plot_kind("curves", "training loss, reconstruction and KL per epoch (metrics.jsonl)", needs_data=False)
def _curves(c: PlotContext):
    A = _analysis()
    return A.plot_training_curves(A.training_curves(c.run), c.args.title)


@COMMANDS.register("plot")
class Plot:
    """``affinevae plot`` (see :attr:`help`): ``add_arguments`` registers its options, ``run`` executes it."""

    help = "draw one analysis of a run as a PNG: " + ", ".join(PLOT_KINDS.in_order())

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Register the command's options on ``p``."""
        p.formatter_class = argparse.RawDescriptionHelpFormatter
        p.description = "draw one analysis of a run as a PNG\n\nkinds:\n" + "\n".join(
            f"  {k:20} {PLOT_KINDS.get(k).help}" for k in PLOT_KINDS.in_order())
        p.add_argument("run_dir", help="run or model directory")
        p.add_argument("kind", help="what to draw: " + ", ".join(PLOT_KINDS.in_order()))
        p.add_argument("--out", required=True, help="output figure: .png, .jpg/.jpeg, .tif/.tiff, .pdf or .svg "
                                                     "(by extension)")
        add_force_argument(p)
        d = p.add_argument_group("data (default: the run's own data, test split for built-in sets)")
        d.add_argument("--data", help="'mnist', 'rotated-mnist' or a path")
        d.add_argument("--labels", help="file of integer labels, one per image")
        d.add_argument("--key", help="array name inside an .npz")
        d.add_argument("-n", "--n", type=int, default=None, dest="n",
                       help=f"use the first N images (default: up to {PLOT_IMAGES})")
        d.add_argument("--split", default=None, choices=["train", "test"], help="train or test for built-in sets (default test)")
        add_fill_nan_argument(d)
        add_binarize_argument(d, "threshold the images at T (default 0.5; default: as the run was trained); "
                                 "loss-vs-rotation thresholds each rotated image")
        k = p.add_argument_group("kind options")
        k.add_argument("--compare", nargs="+", default=[], metavar="RUN", help="more runs on the same figure "
                       f"({comparing_kinds()})")
        k.add_argument("--show", type=int, help=f"images shown, {_range('--show')} (default 8; samples: 64)")
        k.add_argument("--indices", help="reconstructions/denoising: comma-separated image indices")
        k.add_argument("--color-by", default="auto", help="latent: auto or any of class,inferred-class,true-angle,learned-angle")
        k.add_argument("--method", default="auto", help="latent: auto (t-SNE/UMAP above 2 dims), latent, tsne, umap, pca")
        k.add_argument("--dims", help="latent/manifold: two latent dims to show, e.g. 0,1 (latent: three, 0,1,2, "
                                      "draws a 3-D scatter)")
        k.add_argument("--d", type=int, default=12, help=f"manifold: grid size, {_range('--d')} (default 12)")
        k.add_argument("--bounds", default="-2.5,2.5", help="manifold: latent range low,high, e.g. --bounds -3,3 (default -2.5,2.5)")
        k.add_argument("--angle", type=float, default=0.0, help="manifold: decode at this rotation, degrees (default 0)")
        k.add_argument("--classes", help="samples/manifold/rotation-histograms: comma-separated classes")
        k.add_argument("--per-class", type=int, default=8,
                       help=f"samples of conditional models per class, {_range('--per-class')} (default 8)")
        k.add_argument("--pair", default="0,1", help="interpolation: two image indices (default 0,1)")
        k.add_argument("--steps", type=int, default=10, help=f"interpolation steps, {_range('--steps')} (default 10)")
        k.add_argument("--triple", default="0,1,2", help="arithmetic: image indices a,b,c (default 0,1,2)")
        k.add_argument("--angles", default="0:361:30", help="loss-vs-rotation, rotation-strip: degrees start:stop:step or a,b,c")
        k.add_argument("--with-avae", action="store_true", help="loss-vs-rotation: add an AVAE (pose search) "
                                                                "around each plain model")
        k.add_argument("--bins", type=int, default=36,
                       help=f"rotation-histograms: angle bins over 360 degrees, {_range('--bins')} (default 36)")
        k.add_argument("--noise", type=float, default=0.3, help="denoising: Gaussian noise std (default 0.3)")
        k.add_argument("--symmetry", type=int, default=1, metavar="K",
                       help="angles: the objects' K-fold rotational symmetry; the concentration counts offsets "
                            "modulo 360/K degrees (default 1)")
        k.add_argument("--seed", type=seed_arg, default=0)
        k.add_argument("--title", help="figure title")
        k.add_argument("--dpi", type=int, default=120,
                       help=f"resolution, dots per inch in [{DPI_RANGE[0]}, {DPI_RANGE[1]}] (default 120)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Run ``affinevae plot``; returns the exit status (user errors raise AffineVAEError)."""
        from ..outputs import check_output
        from ..plots import save_figure
        from ..runs import Run

        kind = PLOT_KINDS.get(args.kind)
        if args.compare and not kind.compares:  # it was ignored silently
            raise AffineVAEError(f"--compare applies to {comparing_kinds()}, not to {args.kind}")
        refuse_other_kinds_options(args)
        if args.n is not None and args.n < 1:
            raise AffineVAEError(f"-n must be >= 1, got {args.n}")
        check_option_ranges(args)
        check_symmetry(args.symmetry, "--symmetry")
        show = args.show or (64 if args.kind == "samples" else 8)
        check_output(args.out, inputs=[args.run_dir, *args.compare, args.data, args.labels], force=args.force)
        fmt = figure_format(args.out)
        runs = [Run.open(r) for r in [args.run_dir, *args.compare]]
        models = [r.model() for r in runs]
        first = tuple(models[0].config.image_shape)
        for run, m in zip(runs[1:], models[1:]):  # they see the run's images: one image shape
            if kind.needs_data and tuple(m.config.image_shape) != first:
                raise AffineVAEError(f"--compare {run.path}: a model of {'x'.join(map(str, m.config.image_shape))} "
                                     f"images, the run's takes {'x'.join(map(str, first))} (C x H x W)")
        names = [_label(r.path) for r in runs]
        if len(set(names)) < len(names):
            names = [f"{i + 1}: {n}" for i, n in enumerate(names)]
        data = None
        if kind.needs_data:
            with warnings.catch_warnings():
                if args.n is None:  # the default is "up to PLOT_IMAGES": a smaller data set is no news
                    args.n = PLOT_IMAGES
                    warnings.filterwarnings("ignore", message=r".*asks for more images than the \d+ it holds")
                data = plot_data(args, runs[0], expect=first)
        fig = kind.draw(PlotContext(args=args, runs=runs, models=models, names=names, data=data, show=show))
        check_figure_memory(fig, args.dpi)
        save_figure(fig, args.out, dpi=args.dpi, fmt=fmt)
        print(f"wrote {args.kind} figure to {args.out}")
        return 0
