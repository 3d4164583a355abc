"""Argument helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import json
import math
import warnings
from typing import Any, Optional

import numpy as np

from ..data import ImageSet, load_dataset
from ..data.files import read_labels, set_labels
from ..data.imageset import LABELS_SOURCE
from ..data.inputs import check_image_shape
from ..data.sources import BUILTIN
from ..errors import AffineVAEError


def add_data_arguments(p: argparse.ArgumentParser, required: bool = True, default: Optional[str] = None,
                       max_angle_option: str = "--max-angle") -> None:
    """--data SPEC, --labels, --key, -n, --binarize and the rotated-mnist ``--max-angle DEG``: where the images come from.

    ``max_angle_option`` names the max-angle option, for a command whose ``--max-angle`` means
    something else (its value is ``args.data_max_angle`` either way).
    """
    p.add_argument("--data", required=required and default is None, default=default,
                   help="'mnist', 'rotated-mnist', 'synthetic-peaks', 'synthetic-cube' (spectra), or a path: .npy/.npz (--key), TIFF stack, file.h5:dataset, .mrcs stack, .fits cube (--key: HDU), "
                        "a folder of PNG/JPEG/TIFF, QuickDraw .npy bitmaps (comma-separated or a glob)")
    p.add_argument("--labels", help="file of integer labels (.npy/.txt/.csv), one per image")
    p.add_argument("--key", help="array name inside an .npz (default: images, else patches, else the only array; with --signal-axis: spectra, else cube, else signals, else the only array); dataset of an HDF5 file; image HDU of a FITS file (EXTNAME or index; all: one cut-out per HDU, stacked)")
    p.add_argument("-n", "--n", type=int, dest="n", help="use only the first N images (of an .npy, .npz, .mrcs, TIFF, HDF5 or FITS stack "
                                                             "only those are read into memory)")
    p.add_argument("--signal-axis", type=int, dest="signal_axis", metavar="AXIS",
                   help="read --data (.npy/.npz/file.h5:dataset) as 1-D signals along AXIS: spectra (N, L) or a "
                        "hyperspectral cube (H, W, E) whose H*W spectra are mapped back by `map --cube`")
    p.add_argument("--signal-channels", action="store_true", dest="signal_channels",
                   help="with --signal-axis: a rank-3 array holds (N, C, L) signals of C channels (of the other two "
                        "axes the first counts the signals), not a cube")
    add_fill_nan_argument(p)
    add_binarize_argument(p, "threshold the images: pixels above T (default 0.5) become 1, the others 0")
    add_data_max_angle_argument(p, max_angle_option)


def add_fill_nan_argument(p: argparse.ArgumentParser) -> None:
    """``--fill-nan`` (``args.fill_nan``): NaN/inf pixels of image files filled instead of refused."""
    p.add_argument("--fill-nan", action="store_true", dest="fill_nan",
                   help="replace NaN/inf pixels (masked ones) by their image's median instead of refusing the file "
                        "(a run remembers it: its other data are filled alike)")


def add_data_max_angle_argument(p: argparse.ArgumentParser, option: str = "--max-angle") -> None:
    """The rotated-mnist angle range ``option DEG`` (``args.data_max_angle``, degrees; its name in
    ``args.data_max_angle_option``); a command working on a run takes the run's own range when it is
    not given (:func:`load_run_data`)."""
    p.add_argument(option, type=float, dest="data_max_angle", metavar="DEG",
                   help="--data rotated-mnist only: turn the digits uniformly in [-DEG, DEG] degrees, 0 < DEG <= 180 "
                        "(180: the full circle; default 60, or the run's own range for its own --data)")
    p.set_defaults(data_max_angle_option=option)


def check_split(split: Optional[str], data: Optional[str]) -> str:
    """The ``--split`` to load ('train' or 'test', default 'test'; argparse refuses other values); an
    :class:`AffineVAEError` for a ``--split`` given with ``--data`` that is not a built-in set (a file
    has no splits)."""
    if split is None:
        return "test"
    if data is not None and data not in BUILTIN:
        raise AffineVAEError(f"--split applies to the built-in data sets ({', '.join(BUILTIN)}), not to "
                             f"--data {data} (a file has no splits)")
    return split


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun`` for a summary line: '1 epoch', '3 epochs'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def require_npz(out: str, command: str) -> None:
    """Refuse (one line naming ``--out``) an output file name of ``command`` that does not end in
    ``.npz``: the command writes a NumPy archive, which another name would hide."""
    from pathlib import Path

    if Path(out).suffix.lower() != ".npz":
        raise AffineVAEError(f"--out {out}: {command} writes a NumPy .npz archive; give a file name ending in .npz")


def default_of(func, name: str):
    """The default of parameter ``name`` in ``func``'s signature: the command line's default is the
    Python function's, from one source."""
    import inspect

    value = inspect.signature(func).parameters[name].default
    if value is inspect.Parameter.empty:
        raise TypeError(f"{func.__qualname__}() has no default for {name!r}")
    return value


def seed_arg(text: str) -> int:
    """argparse type of ``--seed``: an integer >= 0 (one-line error otherwise)."""
    from ..config import MAX_SEED

    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def add_force_argument(p: argparse.ArgumentParser, what: str = "an existing output file") -> None:
    """``--force``: allow replacing ``what`` (never a file of a run, nor an input; see :mod:`affinevae.outputs`)."""
    p.add_argument("--force", action="store_true", help=f"overwrite {what} (never a run's own files or an input)")


def add_binarize_argument(p, help: str) -> None:
    """``--binarize [T]``: a threshold in (0, 1), 0.5 when given without a value, None when absent."""
    p.add_argument("--binarize", nargs="?", type=float, const=0.5, default=None, metavar="T", help=help)


def load_data_from_args(args: argparse.Namespace, split: str = "train", seed: int = 0,
                        binarize: bool = True, scaling=None, fill_nan: bool = False,
                        stretch: Optional[str] = None, square: Optional[str] = None, centre=None) -> ImageSet:
    """Load the data named by :func:`add_data_arguments`' options (``binarize=False`` ignores ``--binarize``;
    ``scaling``: a run's pixel scaling, :func:`affinevae.data.files.load_images`; ``--stretch``
    where the command has it, else ``stretch``, else 'auto'; ``fill_nan`` or ``--fill-nan``: NaN pixels filled;
    ``--square`` where the command has it, else ``square``: images made square; ``centre``: their objects moved
    to the centre, :meth:`~affinevae.data.imageset.ImageSet.centred`).

    A ``--max-angle`` given (degrees) is passed on in radians and recorded in the returned set's
    ``meta['max_angle']`` (radians), which a run keeps to load the same digits again.
    """
    if args.n is not None and args.n < 1:
        raise AffineVAEError(f"-n must be >= 1, got {args.n}")
    max_angle = data_max_angle(args)
    if getattr(args, "key", None) is not None and args.data in BUILTIN:
        raise AffineVAEError(f"--key applies to image files (.npz, HDF5, zarr), not to the data {args.data!r}")
    return load_dataset(args.data, split=split, n=args.n, seed=seed, key=args.key, labels=args.labels,
                        binarize=getattr(args, "binarize", None) if binarize else None, max_angle=max_angle,
                        signal_axis=getattr(args, "signal_axis", None),
                        signal_cube=False if getattr(args, "signal_channels", False) else None, scaling=scaling,
                        stretch=getattr(args, "stretch", None) or stretch or "auto",
                        fill_nan=fill_nan or getattr(args, "fill_nan", False),
                        square=getattr(args, "square", None) or square, centre=centre)


def data_noun(model) -> str:
    """What a command's summary calls ``model``'s data: ``'signals'`` for a model of 1-D signals
    (image shape (C, 1, L)), else ``'images'``."""
    from ..nn.signal import item_noun

    return item_noun(model.config.image_shape) + "s"


def refuse_signal_model(model, run_dir, what: str) -> None:
    """Raise :class:`AffineVAEError` (one line) when ``model`` was trained on 1-D signals (image shape
    (C, 1, L)) and the command turns images: ``what`` says what to do instead."""
    from ..nn.signal import is_signal_shape

    shape = tuple(model.config.image_shape)
    if is_signal_shape(shape):
        raise AffineVAEError(f"{run_dir}: a model of 1-D signals (C x 1 x L = {'x'.join(map(str, shape))}): "
                             f"signals are not turned; {what}")


def names_run_data(args: argparse.Namespace, run) -> bool:
    """Whether ``--data`` names ``run``'s own data (:class:`~affinevae.runs.Run`; the spec ``train.json``
    records, or ``--data`` not given) with none of the options that would change it: ``--key``,
    ``--labels``, the rotated-mnist angle range, ``--signal-axis``/``--signal-channels``. (Without
    ``--data``, ``--labels`` labels the run's own images: :func:`load_run_data`.)"""
    if args.data is None:
        return True
    return (run.names_own_data(args.data)
            and all(getattr(args, k, None) is None or getattr(args, k) is False  # not `in (None, False)`: 0 == False
                    for k in ("key", "labels", "data_max_angle", "signal_axis", "signal_channels")))


def load_run_data(args: argparse.Namespace, run, split: str = "test", seed: int = 0,
                  binarize: bool = True, announce: bool = True, expect: Optional[tuple] = None,
                  announce_scaling: Optional[bool] = None) -> ImageSet:
    """The images :func:`add_data_arguments`' options name, for a command working on ``run``.

    When ``--data`` names the run's own data (:func:`names_run_data`), they come from
    :meth:`affinevae.runs.Run.data`, so that what training recorded is kept: rotated-mnist's angle
    range (then one line says so, naming the option that overrides it), the run's seed, at most its
    ``n`` images of the train split, its key and labels, and its ``--binarize`` threshold (a
    ``--binarize`` given replaces it: the run's grey images are thresholded at the given value, not
    thresholded twice). Otherwise :func:`load_data_from_args` with ``seed``.
    ``binarize=False`` thresholds neither (the caller does, e.g. after turning the images).
    ``announce=False`` leaves out the angle-range line (``plot``, which draws rather than reports), and
    the line saying that other data take the run's pixel scaling unless ``announce_scaling`` (None: as
    ``announce``) asks for it.
    ``expect``: the model's (C, H, W); images of another shape are then refused in one line before
    the loader's warnings (e.g. its min-max scaling) are shown, so that the error is the only line.

    Returns:
        ImageSet of float32 (N, C, H, W) images, N at most ``-n``.
    """
    scaling = announce if announce_scaling is None else announce_scaling
    if expect is None:
        return labels_by_run_names(args, run, _load_run_data(args, run, split, seed, binarize, announce, scaling))
    with warnings.catch_warnings(record=True) as held:
        warnings.simplefilter("always")
        data = labels_by_run_names(args, run, _load_run_data(args, run, split, seed, binarize, announce, scaling))
    check_image_shape(data.images.shape[1:], expect, where=data.source or args.data or "images")
    shown = set()
    for w in held:  # once each, as the 'default' filter would have shown them (a streamed loader repeats itself)
        key = (str(w.message), w.category, w.filename, w.lineno)
        if key not in shown:
            shown.add(key)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return data


def run_took_labels(run) -> bool:
    """Whether the model of ``run`` took labels in training (the class-conditional and semi-supervised
    families, also inside an AVAE): then labels given later must be numbered as its training's were."""
    from ..registry import MODELS

    description = run.model_description
    family = MODELS.get(description.get("model")).labelled_as(dict(description.get("config") or {}))
    return bool(getattr(family, "conditional", False) is True or getattr(family, "semi_supervised", False) is True)


def labels_by_run_names(args: argparse.Namespace, run, data: ImageSet) -> ImageSet:
    """``data`` with the labels of ``args.labels``, when that file names its classes, numbered as the run
    numbered its own (``class_names`` of its record; a file's own sorted numbering may differ: a test
    file without one of the classes), the run's names as its ``class_names``. A name the run does not
    know, or names for a run whose model took numbered classes in training, is one line; a run whose model took no
    labels (an rVAE, a joint model) keeps the file's own numbering and names (they only score it)."""
    names = data.meta.get("label_names")
    if names is None or data.labels is None:
        return data
    path = getattr(args, "labels", None) or run.meta.get("labels")
    known = list(run.meta.get("class_names") or [])
    if not known and not run_took_labels(run):  # labels to score a model that trained without any: the file's own
        return data  # numbering (sorted names), its names as class_names
    if not known:
        raise AffineVAEError(f"{path}: names the classes ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}), "
                             f"but {run.path} was trained on numbered classes: give their numbers")
    stray = [name for name in names if name not in known]
    if stray:
        raise AffineVAEError(f"{path}: class {stray[0]!r} is not one of the run's ({', '.join(known[:12])})")
    lookup = np.asarray([known.index(name) for name in names], dtype=np.int64)
    return set_labels(data, np.where(data.labels >= 0, lookup[np.clip(data.labels, 0, None)], -1), known,
                      source=data.meta.get(LABELS_SOURCE))


def _load_run_data(args: argparse.Namespace, run, split: str, seed: int, binarize: bool, announce: bool,
                   announce_scaling: bool) -> ImageSet:
    if not names_run_data(args, run):  # other data: scaled as the run's training data were
        return load_scaled_like_run(args, run, split, seed, binarize, announce_scaling)
    if args.n is not None and args.n < 1:
        raise AffineVAEError(f"-n must be >= 1, got {args.n}")
    meta = run.meta
    if announce and meta.get("data") == "rotated-mnist" and meta.get("max_angle") is not None:
        option = getattr(args, "data_max_angle_option", "--max-angle")
        print(f"affinevae: {option} {math.degrees(float(meta['max_angle'])):g} from the run's training data "
              f"(override with {option})")
    given = getattr(args, "binarize", None) if binarize else None
    # a given threshold replaces the run's (thresholding the run's binary images again would keep the run's)
    data = run.data(split=split, n=args.n, source=args.data, binarize=binarize and given is None,
                    fill_nan=True if getattr(args, "fill_nan", False) else None)
    if getattr(args, "labels", None) is not None:  # --labels without --data: for the run's own images
        labels, names = read_labels(args.labels, None, data.source or "the run's data", with_names=True)
        if len(labels) < len(data):
            raise AffineVAEError(f"{args.labels}: {len(labels)} labels for {len(data)} images in "
                                 f"{data.source or 'the run data'}")
        set_labels(data, labels[:len(data)], names, source=args.labels)
    return data if given is None else data.binarized(given)


def load_scaled_like_run(args: argparse.Namespace, run, split: str = "train", seed: int = 0, binarize: bool = True,
                         announce: bool = True) -> ImageSet:
    """:func:`load_data_from_args` with ``run``'s pixel scaling (:attr:`affinevae.runs.Run.pixel_scaling`)
    for float image files, saying so in one line when it applies (``announce``)."""
    scaling = run.pixel_scaling
    signals = run.signal_reading()
    if signals and getattr(args, "signal_axis", None) is None and args.data not in BUILTIN:
        # a run of 1-D signals reads other signal files along its own axis (a command may have no --signal-axis)
        args = argparse.Namespace(**{**vars(args), "signal_axis": signals["signal_axis"],
                                     "signal_channels": signals["signal_cube"] is False})
        if announce:
            print(f"affinevae: {args.data}: read as signals along the run's --signal-axis {signals['signal_axis']}")
    data = load_data_from_args(args, split, seed=seed, binarize=binarize, scaling=scaling,
                               fill_nan=bool(run.meta.get("fill_nan")), stretch=run.meta.get("stretch"),
                               square=run.meta.get("square"), centre=run.meta.get("centre"))
    if announce and scaling is not None and data.meta.get("pixel_scaling") is not None:
        print(f"affinevae: {args.data}: pixels scaled as the run's training data were, {scaling}")
    run.warn_unlike(data, str(args.data))
    return data


def data_max_angle(args: argparse.Namespace) -> Optional[float]:
    """``--max-angle DEG`` of :func:`add_data_arguments` checked (rotated-mnist only, 0 < DEG <= 180) and
    converted to radians; None when not given."""
    deg = getattr(args, "data_max_angle", None)
    if deg is None:
        return None
    option = getattr(args, "data_max_angle_option", "--max-angle")
    if args.data != "rotated-mnist":
        raise AffineVAEError(f"{option} only applies to --data rotated-mnist, not to {args.data!r}")
    if not (math.isfinite(deg) and 0.0 < deg <= 180.0):
        raise AffineVAEError(f"{option} must lie in (0, 180] degrees (180: the full circle), got {deg:g}")
    return math.radians(deg)


def parse_int_list(text: str, name: str) -> tuple[int, ...]:
    """'256,128' -> (256, 128) with a clear error: not integers, empty, or an empty item ('32,,64': a
    width lost to a typo; one trailing comma is allowed)."""
    items = [v.strip() for v in text.split(",")]
    if len(items) > 1 and items[-1] == "":
        items = items[:-1]
    if not any(items):
        raise AffineVAEError(f"--{name} is empty")
    if "" in items:
        raise AffineVAEError(f"--{name} has an empty item: {text!r} (comma-separated integers, e.g. 32,64)")
    try:
        return tuple(int(v) for v in items)
    except ValueError:
        raise AffineVAEError(f"--{name} must be comma-separated integers, got {text!r}") from None


def parse_set_options(items: list[str]) -> dict[str, Any]:
    """['key=value', ...] -> dict; values parsed as JSON when possible (``[4,8,8]``, ``0.5``, ``true``),
    comma-separated numbers as a tuple (``4,8,8`` -> (4, 8, 8), as ``--hidden`` takes them; ``64,`` and
    Python's ``(64,)`` -> (64,)), else
    kept as strings (``rotation,translation``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise AffineVAEError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = _set_value(v)
    return out


def _set_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    inner = text.strip()
    if len(inner) >= 2 and inner[0] == "(" and inner[-1] == ")":  # Python's tuple, as the config's hints write it
        inner = inner[1:-1]
    parts = [p.strip() for p in inner.split(",")]
    one = len(parts) == 2 and parts[1] == "" and parts[0] != ""  # '64,' or '(64,)': a list of one
    if one:
        parts = parts[:1]
    if len(parts) > 1 or one:
        try:
            values = [json.loads(p) for p in parts]
        except json.JSONDecodeError:
            return text
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return tuple(values)
    return text
