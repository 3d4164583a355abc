"""Self-contained HTML reports: a run's config, training curves, metrics and every analysis that applies.

:class:`HtmlReport` builds one HTML page whose figures are embedded as base64 PNG (the page
opens offline and links to nothing outside itself; navigation uses in-page anchors). Every
piece of text is HTML-escaped. :func:`write_report` fills one for a training run; the demo
(:mod:`affinevae.demo`) uses the same builder for its ``index.html``.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .config import check_seed, degrees_of
from .nn.signal import item_noun
from .data.imageset import ImageSet
from .data.inputs import check_image_shape
from .data.mnist import ROTATED_MNIST_MAX_ANGLE
from .data.sources import BUILTIN
from .errors import AffineVAEError, refuse_removed_keywords
from .mapping import check_symmetry
from .io import atomic_write
from .runs import Run

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1.2em 2em 3em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.3em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
h3 { font-size: 1.08em; margin-top: 1.3em; }
p.sub { color: #666; margin-top: 0; }
nav { background: #f6f7f9; border: 1px solid #e2e4e8; padding: 0.6em 1em; border-radius: 4px; }
nav ol { margin: 0.2em 0; padding-left: 1.4em; columns: 2; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.92em; margin-top: 0.3em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f4f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #8a5a00; background: #fff8e6; border-left: 3px solid #f0b429; padding: 0.3em 0.8em; }
pre { background: #f6f7f9; padding: 0.6em; overflow-x: auto; font-size: 0.88em; }
details summary { cursor: pointer; color: #333; }
"""


def _slug(text: str, taken: set) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, k = base, 2
    while slug in taken:
        slug, k = f"{base}-{k}", k + 1
    taken.add(slug)
    return slug


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _with_degrees(name: str, value: Any) -> Any:
    """``value`` of option ``name``, nested dicts included, with each angle in radians shown as
    ``'0.7854 rad (45°)'`` (:func:`~affinevae.config.degrees_of`); other values as they are."""
    if isinstance(value, dict):
        return {k: _with_degrees(k, v) for k, v in value.items()}
    degrees = degrees_of(name, value)
    if degrees is None:
        return value
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(f'{v:.4g}' for v in value)}] rad ([{', '.join(f'{d:g}°' for d in degrees)}])"
    return f"{value:.4g} rad ({degrees:g}°)"


class HtmlReport:
    """Builder of one self-contained HTML page (figures inline as base64 PNG, text escaped).

    Example::

        rep = HtmlReport("my analysis", subtitle="VAE on MNIST")
        rep.section("Latent space")
        rep.figure(fig, "latent means coloured by class")
        rep.table([{"model": "vae", "-ELBO": 101.2}])
        rep.write("report.html")
    """

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self._parts: list[str] = []
        self._toc: list[tuple[int, str, str]] = []
        self._ids: set = set()

    # ------------------------------------------------------------------ content
    def section(self, text: str, level: int = 2) -> str:
        """Start a section (h2, or h3 for ``level=3``); returns its anchor id (listed in the contents)."""
        if level not in (2, 3):
            raise AffineVAEError(f"section level must be 2 or 3, got {level}")
        anchor = _slug(text, self._ids)
        self._toc.append((level, anchor, text))
        self._parts.append(f'<h{level} id="{anchor}">{html.escape(text)}</h{level}>')
        return anchor

    def paragraph(self, text: str) -> None:
        """A paragraph of plain text (escaped)."""
        self._parts.append(f"<p>{html.escape(text)}</p>")

    def note(self, text: str) -> None:
        """A highlighted note (e.g. why an analysis was skipped)."""
        self._parts.append(f'<p class="note">{html.escape(text)}</p>')

    def preformatted(self, text: str) -> None:
        """Preformatted text (escaped), e.g. a JSON config."""
        self._parts.append(f"<pre>{html.escape(text)}</pre>")

    def figure(self, fig_or_png, caption: str = "", alt: Optional[str] = None, dpi: int = 96) -> None:
        """Embed a matplotlib Figure (rendered, then closed), PNG bytes or a PNG file path, as base64."""
        if isinstance(fig_or_png, (bytes, bytearray)):
            png = bytes(fig_or_png)
        elif isinstance(fig_or_png, (str, Path)):
            path = Path(fig_or_png)
            if not path.is_file():
                raise AffineVAEError(f"{path}: figure file not found")
            png = path.read_bytes()
        else:
            from .plots import figure_png_bytes

            png = figure_png_bytes(fig_or_png, dpi=dpi)
        if not png.startswith(b"\x89PNG"):
            raise AffineVAEError("figure is not a PNG image")
        data = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._parts.append(f'<figure><img alt="{html.escape(alt or caption or "figure", quote=True)}" '
                           f'src="data:image/png;base64,{data}">{cap}</figure>')

    def table(self, rows: Sequence[dict] | Sequence[Sequence], header: Optional[Sequence[str]] = None,
              caption: str = "") -> None:
        """A table from dicts (keys = columns, union in first-seen order) or from lists with ``header``."""
        rows = list(rows)
        if rows and isinstance(rows[0], dict):
            cols: list = list(header or [])
            if not cols:
                for r in rows:
                    cols += [k for k in r if k not in cols]
            body = [[r.get(c, "") for c in cols] for r in rows]
        else:
            cols, body = list(header or []), [list(r) for r in rows]
        out = ["<table>"]
        if caption:
            out.append(f"<caption>{html.escape(caption)}</caption>")
        if cols:
            out.append("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in cols) + "</tr>")
        for r in body:
            cells = []
            for v in r:
                num = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                cells.append(f'<td class="num">{html.escape(_fmt(v))}</td>' if num else f"<td>{html.escape(_fmt(v))}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</table>")
        self._parts.append("".join(out))

    def key_values(self, mapping: dict, caption: str = "") -> None:
        """A two-column table of a dict (values JSON-formatted when nested; an angle in radians,
        :data:`~affinevae.config.RADIAN_OPTIONS`, also in degrees: ``0.7854 rad (45°)``)."""
        self.table([[k, _with_degrees(k, v)] for k, v in mapping.items()], header=["option", "value"], caption=caption)

    def details(self, summary: str, build: Callable[["HtmlReport"], None]) -> None:
        """A collapsible block: ``build`` adds its content to this report between <details> tags."""
        self._parts.append(f"<details><summary>{html.escape(summary)}</summary>")
        build(self)
        self._parts.append("</details>")

    # ------------------------------------------------------------------ output
    def render(self) -> str:
        """The whole page as a string."""
        toc = ""
        if self._toc:
            items = "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>' for lvl, a, t in self._toc if lvl == 2)
            toc = f"<nav><strong>Contents</strong><ol>{items}</ol></nav>"
        sub = f'<p class="sub">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>{html.escape(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
                f"<h1>{html.escape(self.title)}</h1>\n{sub}\n{toc}\n" + "\n".join(self._parts) + "\n</body>\n</html>\n")

    def write(self, path: str | Path) -> Path:
        """Write the page to ``path`` atomically (UTF-8)."""
        text = self.render()
        return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# ============================================================================ run report
@dataclasses.dataclass
class ReportResult:
    """What :func:`write_report` wrote.

    Attributes:
        path: the HTML file.
        sections: titles of the analyses included.
        skipped: analysis title -> why it is left out: every analysis of ``inapplicable`` and
            ``unavailable``.
        seconds: wall time.
        inapplicable: title -> why the analysis does not apply to this run or data.
        unavailable: title -> what went wrong when it was tried (not available).
    """

    path: Path
    sections: list
    skipped: dict
    seconds: float
    inapplicable: dict = dataclasses.field(default_factory=dict)
    unavailable: dict = dataclasses.field(default_factory=dict)


def _rotation_figure(rep: "HtmlReport", A, run: Run) -> None:
    """The rotation histograms of a pose-optimised run: encoded orientations when the training
    images' own rotations are known, else the found angles."""
    h = A.rotation_histograms(run, true_angle=run.training_angles())
    rep.figure(A.plot_rotation_histograms(h, class_names=run.class_names), "orientation at which each training image is encoded (its own rotation "
               "minus the found pose), per class and epoch" if h.encoded else
               "found angles of the training images, per class and epoch (the training data's own rotations are "
               "unknown, so the encoded orientation cannot be shown)")


def class_metrics(inferred: np.ndarray, k: int, labels: Optional[np.ndarray], supervised: bool,
                  trained_on: bool = False) -> dict:
    """Report rows for the classes a joint or semi-supervised model infers.

    Args:
        inferred: (N,) int64 inferred classes (argmax of q(class | x)); k: the model's K classes.
        labels: (N,) true labels of the same images (-1: unknown), or None.
        supervised: True for a semi-supervised model, whose class indices are the labels' own
            (its accuracy is reported as well as the cluster accuracy).
        trained_on: the known labels are the ones a semi-supervised model was trained with (the run's own
            data): the rows say so, since they are not held out.

    Returns:
        dict of metric name -> value: classes in use, and with known labels the cluster accuracy
        (best one-to-one matching of classes to labels, Hungarian) and, if ``supervised``, the
        plain accuracy, both in [0, 1].
    """
    from .mapping import clustering_accuracy

    out: dict = {"inferred classes in use": f"{len(np.unique(inferred))} of {k}"}
    if labels is None:
        return out
    known = np.asarray(labels) >= 0
    if not known.any():
        return out
    truth, got = np.asarray(labels)[known], np.asarray(inferred)[known]
    whose = " it was trained with, not held out" if trained_on else ""
    out[f"cluster accuracy of the inferred class (Hungarian, {int(known.sum())} labelled{whose})"] = \
        clustering_accuracy(got, truth)
    if supervised:
        out["accuracy of the inferred class" + (" (on the labels it was trained with)" if trained_on else "")] = \
            float((got == truth).mean())
    return out


#: Default rotations of the report's loss-vs-rotation sweep: 0 to 360 degrees every
#: :data:`REPORT_SWEEP_STEP` degrees, in radians.
REPORT_SWEEP_STEP = 30
REPORT_SWEEP_ROTATIONS = tuple(float(a) for a in np.radians(np.arange(0, 361, REPORT_SWEEP_STEP)))
#: Default images analysed by the report, and images in its sweep.
REPORT_N = 500
REPORT_SWEEP_N = 200


def write_report(run_dir: str | Path, out: str | Path, data=None, n: int = REPORT_N, seed: int = 0,
                 sweep_rotations: Sequence[float] = REPORT_SWEEP_ROTATIONS, sweep_n: int = REPORT_SWEEP_N,
                 log: Optional[Callable[[str], None]] = None, symmetry: int = 1, **removed) -> ReportResult:
    """Write one self-contained HTML report for the run in ``run_dir``.

    Args:
        run_dir: a training run (or model) directory, or its :class:`~affinevae.runs.Run`.
        out: the HTML file to write.
        data: the images to analyse: an :class:`~affinevae.data.ImageSet`, a ``--data`` spec, or
            None for the run's own data (``train.json``; test split for built-in sets).
        n: images used by the analyses (the first ``n``).
        seed: seeds the random choices (images shown, prior samples, noise).
        sweep_rotations: (A,) rotations of the loss-vs-rotation sweep in radians (default
            :data:`REPORT_SWEEP_ROTATIONS`, 0 to 360 degrees every 30; ``np.radians(...)``
            converts degrees); empty to skip it. The former keyword ``sweep_angles``
            (degrees) is refused in one line.
        sweep_n: images in the sweep.
        log: called with a line per analysis (e.g. ``print``).
        symmetry: k: the objects' k-fold rotational symmetry (2 for a galaxy or particle that looks
            the same turned by 180 degrees); the angle scores count offsets modulo 360/k degrees.

    Returns:
        :class:`ReportResult`. Raises :class:`AffineVAEError` for a missing/corrupt run or data.
    """
    from . import analysis as A
    from .models.avae import AVAE
    from .sweep import check_angles

    refuse_removed_keywords("write_report", removed, {
        "sweep_angles": "sweep_angles (degrees) is now sweep_rotations, in radians "
                        "(e.g. sweep_rotations=np.radians(range(0, 361, 30)))"})
    rotations = check_angles(sweep_rotations, "write_report", "sweep_rotations", allow_empty=True)
    symmetry = check_symmetry(symmetry, "write_report symmetry")
    check_seed(seed)
    t0 = time.perf_counter()
    run = Run.open(run_dir)
    say = log or (lambda msg: None)
    model = run.model()
    info = run.info
    ds = run.data(split="test", n=n, source=data)
    if isinstance(data, (str, Path)) and not run.names_own_data(data) and ds.meta.get("pixel_scaling") is not None \
            and run.pixel_scaling is not None:  # other float images: scaled as the run's were (encode says it too)
        say(f"affinevae: {data}: pixels scaled as the run's training data were, {run.pixel_scaling}")
    check_image_shape(ds.image_shape, model.config.image_shape, ds.source)  # before any analysis
    desc = model.describe()
    noun = item_noun(model.config.image_shape)  # what the captions count
    rep = HtmlReport(f"affinevae report: {run.path.resolve().name}",
                     f"{model.family} model, {model.config.latent_dim} latent dims, "
                     f"{info.get('epochs_done', '?')} epoch{'' if info.get('epochs_done') == 1 else 's'}; analysed on "
                     f"{len(ds)} {noun}s of {ds.source}")
    sections: list = []
    skipped: dict = {}
    unavailable: dict = {}

    def attempt(title: str, build: Callable[[], None], caption: str = "") -> None:
        t = time.perf_counter()
        try:
            build()
            sections.append(title)
            say(f"  {title}: {time.perf_counter() - t:.1f} s")
        except AffineVAEError as exc:
            unavailable[title] = skipped[title] = str(exc)
            rep.note(f"{title}: not available ({exc})")
            say(f"  {title}: not available ({exc})")

    inapplicable: dict = {}

    def not_applicable(title: str, why: str) -> None:
        """An analysis that does not apply to this run or data: listed, with why, at the end."""
        inapplicable[title] = skipped[title] = why
        say(f"  {title}: does not apply ({why})")

    # ---- configuration
    rep.section("Configuration")
    rep.key_values({"model": desc["model"], **desc["config"]}, caption="model (model.json)")
    if info:
        rep.key_values(info.get("train_config", {}), caption="training (train.json)")
        shown = {k: info.get(k) for k in ("data", "labels", "key", "n", "n_train", "epochs_done", "val_data") if k in info}
        if info.get("max_angle") is not None:  # rotated-mnist's range, radians in train.json
            shown["max angle (deg)"] = round(math.degrees(float(info["max_angle"])), 3)
        elif str(info.get("data") or "").startswith("rotated-mnist"):  # none given: the set's own (it was left out)
            shown["max angle (deg)"] = f"{math.degrees(ROTATED_MNIST_MAX_ANGLE):g} (rotated-mnist's default)"
        if run.pixel_scaling is not None:  # what the pixels went through (other data are read alike)
            shown["pixels"] = str(run.pixel_scaling)
        if info.get("fill_nan"):
            shown["NaN pixels"] = "filled with each image's median (--fill-nan)"
        rep.key_values(shown, caption="training data")
    if ds.meta.get("pixel_size") is not None and ds.meta.get("unit"):
        size, unit = ds.meta["pixel_size"], ds.meta["unit"]
        scale = {"pixel size": f"{size:g} {unit}"}
        if ds.meta.get("window"):
            w = int(ds.meta["window"])
            scale["patch width"] = f"{w} px = {w * size:g} {unit}"
        rep.key_values(scale, caption="physical scale (recorded by the data: a patch set, an MRC, TIFF or FITS "
                                      "file; shifts and positions in pixels times the pixel size)")

    # ---- training curves
    rep.section("Training")
    history = run.metrics
    if history:
        rep.figure(A.plot_training_curves(A.training_curves(history)),
                   "per-epoch training (solid) and validation (dashed) loss, reconstruction and KL, nats/image "
                   "(the training loss also holds the named training terms, listed by name in the table; the "
                   "validation loss holds only those the model adds outside training, val_<name>)")
        first = ("epoch", "train_loss", "train_recon", "train_kl")
        seen = list(dict.fromkeys(k for h in history for k in h))
        cols = [c for c in first if c in seen] + [c for c in seen if c.startswith("train_") and c not in first] \
            + [c for c in seen if c.startswith("val_")] + [c for c in seen if c not in first and
                                                            not c.startswith(("train_", "val_"))]
        rep.table([{c: h.get(c, "") for c in cols} for h in history], caption="metrics.jsonl")
    else:
        rep.note("no metrics.jsonl in this directory (a saved model, not a training run)")

    # ---- metrics
    rep.section("Metrics")
    metrics: dict = {}

    def do_metrics():
        from .evaluation import encode_dataset, psnr

        enc = encode_dataset(model, ds.images, ds.labels, elbo=True, seed=seed)
        metrics[f"{noun}s evaluated"] = len(ds)
        metrics[f"mean ELBO (nats/{noun})"] = float(enc["elbo"].mean())
        import torch

        k = min(len(ds), 256)
        y = None if not model.conditional else torch.as_tensor(ds.labels[:k])
        rec = model.reconstruct(torch.as_tensor(ds.images[:k]), y).cpu().numpy()
        metrics[f"reconstruction PSNR (dB, first {k})"] = psnr(ds.images[:k], rec)
        metrics["latent mean of |z| (posterior means)"] = float(np.abs(enc["z_mean"]).mean())
        if "angle" in enc and ds.angle is not None:
            from .evaluation import circular_correlation, class_offset_concentration, offset_concentration

            mod = "" if symmetry == 1 else f", mod {360 / symmetry:g} deg"
            metrics[f"circular correlation, learned vs true angle{mod}"] = circular_correlation(enc["angle"], ds.angle,
                                                                                                symmetry)
            metrics[f"offset concentration, learned minus true angle (1: one offset{mod})"] = offset_concentration(
                enc["angle"], ds.angle, symmetry)
            if ds.labels is not None:  # a full-circle model keeps one frame per class: this is its score
                metrics[f"offset concentration per class (mean over the classes; 1: one offset per class{mod})"] = \
                    class_offset_concentration(enc["angle"], ds.angle, ds.labels, symmetry)
            from .evaluation import mirror_note, symmetry_note

            # the user's angles turn the other way, or symmetric objects scored over the full turn: said, not
            # scored as a failure
            for what, note_of in (("the true angles", mirror_note), ("the symmetry", symmetry_note)):
                note = note_of(enc["angle"], ds.angle, ds.labels, symmetry)
                if note is not None:
                    metrics[f"note on {what}"] = note
                    say(f"  note: {note}")
        if "class" in enc:  # joint / semi-supervised models: the class they infer, against the labels
            semi = getattr(model, "semi_supervised", False)
            spec = data.source if isinstance(data, ImageSet) else data  # report --fill-nan passes the set it read
            own = (data is None or run.names_own_data(spec)) \
                and str(run.meta.get("data")) not in BUILTIN  # a file's labels: the ones training read
            metrics.update(class_metrics(enc["class"], enc["class_prob"].shape[1], ds.labels, semi,
                                         trained_on=semi and own))
        metrics["parameters"] = int(sum(p.numel() for p in model.parameters()))
        rep.table([{"metric": k, "value": v} for k, v in metrics.items()])

    attempt("Metrics", do_metrics)

    # ---- analyses
    rng_pick = np.random.default_rng(seed)

    def pick(k: int) -> list:
        return [int(v) for v in rng_pick.choice(len(ds), size=min(k, len(ds)), replace=False)]

    rep.section("Reconstructions")
    attempt("Reconstructions", lambda: rep.figure(A.plot_reconstructions(A.reconstructions(model, ds, n=12, seed=seed)),
                                                  f"random {noun}s of the evaluated data (top) and their "
                                                  "reconstructions (bottom)"))

    rep.section("Latent space")

    def do_latent():
        codes = A.latent_codes(model, ds, seed=seed)
        rep.figure(A.plot_latent_scatter(codes), "posterior means"
                   + (" (t-SNE/UMAP of all dimensions)" if codes.method != "latent" else "")
                   + ("; coloured by the class the model infers (argmax of q(class | x))"
                      if codes.inferred_class is not None else "")
                   + ("; angles in degrees" if codes.learned_angle is not None or codes.true_angle is not None
                      else ""))

    attempt("Latent space", do_latent)

    rep.section("Latent statistics")

    def do_stats():
        st = A.latent_stats(model, ds)
        rep.figure(A.plot_latent_stats(st), "per-dimension range, mean +- std and density of the latent means vs N(0, 1)")
        rep.table(st.table())

    attempt("Latent statistics", do_stats)

    rep.section("Generation")
    attempt("Generation", lambda: rep.figure(A.plot_generation(A.generate(model, n=64, per_class=8, seed=seed)),
                                             "images decoded from z ~ N(0, I)"
                                             + (" for each class" if model.conditional else "")))

    rep.section("Latent manifold")

    def do_manifold():
        classes = None
        if model.conditional:
            classes = sorted(set(int(c) for c in ds.labels))[:4] if ds.labels is not None else [0, 1, 2]
        m = A.latent_manifold(model, d=12 if not model.conditional else 8, classes=classes)
        rep.figure(A.plot_manifold(m, class_names=run.class_names), "images decoded on a grid over the first two latent dims (others 0)"
                   + ("; canonical pose" if A.has_learned_angle(model) else ""))

    attempt("Latent manifold", do_manifold)

    rep.section("Interpolation and latent arithmetic")
    attempt("Interpolation", lambda: rep.figure(A.plot_interpolation([A.interpolate(model, ds, pick(2), steps=10)
                                                                       for _ in range(3)]),
                                                "straight lines in latent space between pairs of the evaluated images"))
    attempt("Latent arithmetic", lambda: rep.figure(A.plot_arithmetic(A.latent_arithmetic(model, ds, pick(3))),
                                                    "decode(z_a - z_b + z_c)"))

    if A.has_learned_angle(model) and ds.angle is None:  # the data hold no true angles: nothing to compare with
        not_applicable("Learned vs true angle", "the data hold no true angles (an .npz 'angle' array, or rotated-mnist)")
    elif A.has_learned_angle(model):
        rep.section("Learned vs true angle")
        attempt("Learned vs true angle", lambda: rep.figure(A.plot_angle_comparison(A.angle_comparison(model, ds,
                                                                                                  symmetry=symmetry)),
                                                            "the model's angle against the data's true rotation (degrees)"))
    else:
        not_applicable("Learned vs true angle", f"the {model.family} model learns no angle")

    rep.section("Linear baseline (PCA)")

    def do_baseline():
        from .data.spectra import is_spectra

        full = run.data(split="test", n=None, source=data) if is_spectra(ds) else None
        if full is not None and full.meta.get("grid_shape"):  # a cube: latent maps over PCA's loading maps
            rep.figure(A.plot_baseline_comparison(A.spectral_maps(model, full, baseline="pca", seed=seed)),
                       "each pixel's content latents and shift (top) beside PCA's loading maps and components (bottom)")
        else:
            rep.figure(A.plot_latent_vs_baseline(A.latent_vs_baseline(model, ds, "pca", seed=seed)),
                       "content latents beside the first two PCA loadings of the same images, and PCA's components")

    attempt("Linear baseline (PCA)", do_baseline)

    if len(rotations) and ds.image_shape[1] > 1:  # no rotations of 1-D signals
        rep.section("Loss vs rotation")

        def do_sweep():
            models = {model.family: model}
            alone = ""
            # a full-circle equivariant model infers every turn itself: a search around it costs most of the report
            if model.pose_source != "searched" and not model.full_circle:
                from .pose.search import SearchConfig

                try:
                    models["avae (search around it)"] = AVAE(model, pose_head=False,
                                                             search=SearchConfig(restarts=8, keep=1, steps=5)).eval()
                except AffineVAEError as exc:  # a family no AVAE wraps (the semi-supervised ones): the model alone
                    alone = f"; the model alone: {exc}"
            grey = ds if run.binarize is None else run.data(split="test", n=n, source=data, binarize=False)
            res = A.loss_vs_rotation(models, grey, rotations, n=sweep_n, seed=seed,
                                     binarize=run.binarize)  # thresholded after each turn, as `sweep` does
            rep.figure(A.plot_loss_vs_rotation(res),
                       f"mean -ELBO of {res.n_images} images rotated by each angle{alone}")

        attempt("Loss vs rotation", do_sweep)
    elif ds.image_shape[1] == 1:
        not_applicable("Loss vs rotation", "1-D signals are not rotated")
    else:
        not_applicable("Loss vs rotation", "no rotations asked for (--sweep-angles none)")

    if run.poses_file.is_file():
        rep.section("Rotations during training")
        attempt("Rotations during training", lambda: _rotation_figure(rep, A, run))
    else:
        not_applicable("Rotations during training", "the run keeps no poses.npz: only pose-optimised training "
                                                    "(avae) records its training images' angles")

    rep.section("Anomaly scores")
    attempt("Anomaly scores", lambda: rep.figure(A.plot_anomaly(A.anomaly_scores(model, ds, seed=seed)),
                                                 "per-image -ELBO; the most typical and most unusual images"))

    rep.section("Denoising")
    attempt("Denoising", lambda: rep.figure(A.plot_denoising(A.denoise(model, ds, n=10, seed=seed)),
                                            "Gaussian noise (std 0.3) removed by reconstruction; PSNR against the clean images"))

    if skipped:  # one list at the end, each with its status as the progress lines said it
        rep.section("Analyses left out")
        rep.table([{"analysis": t, "status": "does not apply" if t in inapplicable else "not available", "why": w}
                   for t, w in skipped.items()])

    path = rep.write(out)
    return ReportResult(path=path, sections=sections, skipped=skipped, seconds=time.perf_counter() - t0,
                        inapplicable=inapplicable, unavailable=unavailable)
