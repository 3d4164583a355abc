"""``affinevae info``: what a run directory holds, or what a data file holds."""

from __future__ import annotations

import argparse
import glob
import json
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..config import degrees_of
from ..data.imageset import RAW_UNITS
from ..errors import AffineVAEError
from ..io import MODEL_JSON
from ..outputs import is_interrupted_start, is_run_directory, run_is_locked
from ..runs import DATA_JSON, Run
from . import COMMANDS


#: Config fields of the Gaussian likelihood only (info marks them unused under another).
SIGMA_OPTIONS = ("sigma", "learn_sigma", "sigma_radius")


@COMMANDS.register("info")
class Info:
    """``affinevae info`` (see :attr:`help`): ``add_arguments`` registers its options, ``run`` executes it."""

    help = "show a run's model, config, training progress and last metrics, or a data file's frames, pixels and metadata"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Register the command's options on ``p``."""
        p.add_argument("run_dir", help="run or model directory, or data: a file (an image, stack, .npz patch set, "
                                       "file.h5:dataset, file.fits[SCI]), a folder of images, a .zarr store or "
                                       "a quoted pattern ('scans/*.tif': each file)")
        p.add_argument("--key", help="for a data file: array name in an .npz, dataset in an HDF5 file or image HDU of a "
                                     "FITS file")
        p.add_argument("--signal-axis", type=int, dest="signal_axis", metavar="AXIS",
                       help="for a data file: describe it as 1-D signals along AXIS (spectra, a cube, a spectrum "
                            "image), as train --signal-axis reads it")
        p.add_argument("--signal-channels", action="store_true", dest="signal_channels",
                       help="with --signal-axis: a rank-3 array holds (N, C, L) signals, as train reads it")
        p.add_argument("--level", type=int, help="for an OME-Zarr image: the resolution level to describe (0: finest, "
                                                 "the default), as patches --level reads it")
        p.add_argument("--json", action="store_true", help="print JSON")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Run the command; returns the exit status (user errors raise AffineVAEError)."""
        spec, path = args.run_dir, Path(args.run_dir)
        live = not (path / MODEL_JSON).is_file() and run_is_locked(path)
        if live or (not (path / MODEL_JSON).is_file() and is_interrupted_start(path)):
            # a live lock or checkpoint files, no model yet: not a folder of images
            state = ("a training is writing it, in its first epoch" if live else
                     "a training stopped before its first checkpoint was complete: train --resume starts it again")
            raise AffineVAEError(f"{spec}: an unfinished run with no model yet ({state})")
        if not is_run_directory(path):  # a data file, a folder of images, a Zarr store, a pattern of files
            if path.exists() or _is_dataset_spec(spec):
                specs = [spec]
            elif glob.has_magic(spec):
                specs = sorted(glob.glob(spec))
                if not specs:
                    raise AffineVAEError(f"{spec}: no file matches")
            else:
                raise AffineVAEError(f"{spec}: no such file, run or model directory")
            if args.signal_channels and args.signal_axis is None:
                raise AffineVAEError("--signal-channels needs --signal-axis")
            if args.level is not None and args.signal_axis is not None:
                raise AffineVAEError("--level applies to multiscale images (OME-Zarr), not to signals")
            infos = [data_info(s, key=args.key, level=args.level) if args.signal_axis is None else
                     signal_info(s, args.signal_axis, key=args.key, channels=args.signal_channels) for s in specs]
            if args.json:
                print(json.dumps(infos[0] if len(infos) == 1 else infos, indent=2))
                return 0
            for i, info in enumerate(infos):
                if i:
                    print()
                for k, v in info.items():
                    print(f"{k:<12}{v}")
            return 0
        run = Run.open(args.run_dir)
        model = run.model()
        info = {"model": model.family, "parameters": sum(p.numel() for p in model.parameters()),
                "config": model.config.to_dict()}
        if run.has_training:
            info["epochs_done"] = run.epochs_done
            info["train_config"] = run.train_config
        scaling = run.pixel_scaling  # read (and checked: one line) before anything is printed
        if run.has_training or run.meta:  # a run's record, or a saved model's copy of its run's (data.json)
            info["data"] = run.meta.get("data")
            info["training_data"] = run.meta  # all training recorded about its data: n, n_train, labels, key, ...
            if not run.has_training:
                info["data_record_from"] = run.data_record.get("from")
        metrics = run.metrics
        if metrics:
            info["last_metrics"] = metrics[-1]
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        print(f"model       {info['model']} ({info['parameters']:,} parameters)")
        width = max((len(k) for k in info["config"]), default=0) + 2
        likelihood = info["config"].get("likelihood")
        for k, v in info["config"].items():
            unused = k in SIGMA_OPTIONS and likelihood is not None and likelihood != "gaussian"
            degrees = degrees_of(k, v)  # an angle in radians: its degrees beside it, as the report gives them
            shown = v if degrees is None else f"{v} rad ({degrees:g}°)" if not isinstance(degrees, list) else \
                f"{v} rad ({', '.join(f'{d:g}°' for d in degrees)})"
            print(f"  {k:<{width}}{shown}" + (f"  (unused: {likelihood} likelihood)" if unused else ""))
        if "training_data" in info:
            tc = info.get("train_config") or {}
            meta = run.meta
            data = ", ".join([str(info["data"]) if info.get("data") else "data given from Python (no data spec)"]
                             + ([f"key {meta['key']}"] if meta.get("key") is not None else [])
                             + ([f"stretch {meta['stretch']}"] if meta.get("stretch") else [])
                             + (["NaN pixels filled"] if meta.get("fill_nan") else [])
                             + ([f"n {meta['n']}"] if meta.get("n") is not None else [])
                             + ([f"max angle {math.degrees(meta['max_angle']):g} deg"]
                                if meta.get("max_angle") is not None else []))
            if "epochs_done" in info:
                print(f"training    {info['epochs_done']}/{tc.get('epochs')} epochs on {data} ({meta.get('n_train', '?')} "
                      f"training images), batch {tc.get('batch_size')}, lr {tc.get('lr')}, seed {tc.get('seed')}")
            else:  # a saved model written from a run: its data record
                print(f"data        as {info['data_record_from']} was trained: {data} ({meta.get('n_train', '?')} "
                      f"training images), seed {run.seed} (its {DATA_JSON})")
            calibration = run.signal_calibration
            if calibration is not None:  # spectra: other data are compared with it (map --cube, encode)
                from ..data.spectra import describe_calibration

                print(f"signal axis {describe_calibration(calibration)} (the training signals'; data calibrated "
                      "otherwise are warned of)")
            if scaling == RAW_UNITS:
                print("pixels      unscaled: trained on an array in its own units; other data are read unscaled")
            elif scaling is not None:
                how = {"minmax": "min-max range", "asinh": "asinh stretch",
                       "bits": "bit depth"}.get(scaling.kind, "mean and standard deviation")
                print(f"pixels      {scaling} (the training data's {how}; other data are scaled alike)")
        if metrics:
            m = metrics[-1]
            print("last epoch  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()))
        return 0



def _is_dataset_spec(spec: str) -> bool:
    """``file.h5:dataset`` or ``file.fits[SCI]`` naming an existing file."""
    from ..data.formats import HDF5_SPEC, fits_hdu_spec

    m = HDF5_SPEC.match(spec)
    return bool((m and Path(m.group(1)).is_file()) or Path(fits_hdu_spec(spec, None)[0]).is_file())


def signal_info(spec: str, signal_axis: int, key: Optional[str] = None, channels: bool = False) -> dict:
    """What a file of 1-D signals holds, read as ``train --signal-axis`` reads it
    (:func:`affinevae.data.spectra.load_signals`, not divided by its largest value): ``file``,
    ``signals`` (count, samples, channels), ``cube`` (H x W, for a cube or spectrum image), ``signal
    axis`` (an instrument file's calibration), ``values`` (range, mean, standard deviation, in the
    file's units), ``noise`` (the estimate a Gaussian likelihood takes as sigma, in the file's units and
    after training's scaling) and ``labels`` (counts per class, when the file or its .npz carries them).

    Raises:
        AffineVAEError: what :func:`~affinevae.data.spectra.load_signals` refuses (one line).
    """
    from ..data.spectra import describe_calibration, load_signals, signal_calibration
    from ..defaults import SPECTRA_CLASS_SIGMA_FLOOR, SPECTRA_SIGMA_FLOOR, floored_sigma

    data = load_signals(spec, signal_axis, key=key, cube=False if channels else None, normalise=False)
    n, c, _, length = data.images.shape
    out: dict = {"file": spec, "signals": f"{n} of {length} samples, {c} channel(s) (axis {signal_axis})"}
    grid = data.meta.get("grid_shape")
    if grid is not None:
        out["cube"] = f"{grid[0]} x {grid[1]} pixels (spectrum i is pixel divmod(i, {grid[1]}))"
    calibration = signal_calibration(data.meta)
    if calibration is not None:
        out["signal axis"] = describe_calibration(calibration)
    vals = data.images.astype(np.float64)
    peak = float(np.abs(vals).max())
    out["values"] = f"{vals.min():.6g} .. {vals.max():.6g}, mean {vals.mean():.6g}, sd {vals.std():.6g}"
    noise = float(data.meta["noise_sigma"])
    if peak > 0:
        scaled, span = noise / peak, float(vals.max() - vals.min()) / peak  # as training sees them
        out["noise"] = (f"{noise:.4g} (second differences); {scaled:.3g} after training divides by the largest "
                        f"absolute value, {peak:.6g}: train's sigma {floored_sigma(scaled, span, SPECTRA_SIGMA_FLOOR):g}"
                        f" (jvae/jrvae {floored_sigma(scaled, span, SPECTRA_CLASS_SIGMA_FLOOR):g}; at least "
                        f"{SPECTRA_SIGMA_FLOOR:g} / {SPECTRA_CLASS_SIGMA_FLOOR:g} for signals spanning 0.5 or more)")
    else:
        out["noise"] = "none: every value is 0, the signals hold no contrast"
    if data.labels is not None:
        lab, counts = np.unique(data.labels, return_counts=True)
        out["labels"] = ", ".join(f"{'unknown' if v < 0 else int(v)}: {k}" for v, k in zip(lab, counts))
    return out


def folder_sizes(files: Sequence[Path]) -> str:
    """For the image files of a folder (:attr:`~affinevae.data.stacks.FolderSource.files`, at least one):
    ``'all N files H x W'``, or the first file whose size (from its header, no pixel decoded) differs from
    the first one's, as ``train`` would refuse the folder (mixed image sizes), or that cannot be opened."""
    from PIL import Image

    from ..data.files import name_order_swap
    from ..data.formats import TIFF_EXTS
    from ..data.stacks import TIFF_MAX_CHANNELS, tiff_channel_axes

    first = None
    grey, colour, alpha, stacked, fluorescence = [], [], [], [], []
    for f in files:
        try:
            if f.suffix.lower() in TIFF_EXTS:
                import tifffile

                with tifffile.TiffFile(f) as tif:
                    page = tif.pages[0]  # (its shape is (3, H, W) for planar RGB: the size is its length and width)
                    shape = (int(page.imagelength), int(page.imagewidth))
                    (grey if tif.pages[0].samplesperpixel == 1 else colour).append(f)
                    series = tif.series[0]  # images per file as train reads them (the reader's channel axes)
                    channels = tiff_channel_axes(series.axes, series.shape)
                    k = int(np.prod([n for a, n in zip(series.axes, series.shape) if a not in "YX" + channels]))
                    if k > 1:
                        stacked.append((f, k, series.axes))
                    if channels == "C" and series.shape[series.axes.index("C")] > 1:
                        fluorescence.append(f)  # channels that are not RGB colour
            else:
                with Image.open(f) as im:
                    shape = (int(im.size[1]), int(im.size[0]))
                    bands = im.getbands()
                    (alpha if "A" in bands or "transparency" in im.info else []).append(f)
                    grey_palette = False
                    if im.mode == "P":  # the colours its pixels use are grays: read as one channel (decoded, as train)
                        used = np.asarray(im.convert("RGB")).reshape(-1, 3)
                        grey_palette = bool((used == used[:, :1]).all())
                    (grey if (len([b for b in bands if b != "A"]) == 1 and im.mode != "P") or grey_palette
                     else colour).append(f)
        except Exception:  # noqa: BLE001 - a file that cannot be opened: train says why, in its words
            return f"{f.name} cannot be read as an image (train refuses the folder)"
        if first is None:
            first = (f, shape)
        elif shape != first[1]:
            return (f"mixed image sizes: {f.name} is {shape[0]} x {shape[1]}, {first[0].name} {first[1][0]} x "
                    f"{first[1][1]} (train refuses the folder)")
    notes = [f"all {len(files)} files {first[1][0]} x {first[1][1]} pixels"]
    single = [f for f in grey if f not in fluorescence]
    if fluorescence and single:
        return (f"{single[0].name} has 1 channel, {fluorescence[0].name} several that are not RGB colour "
                "(train refuses the folder)")
    grey = [f for f in grey if f not in fluorescence]
    if grey and colour:
        notes.append(f"{len(grey)} grayscale among {len(colour)} colour (train repeats them into red, green and blue)")
    if alpha:
        notes.append(f"{len(alpha)} with an alpha channel (train drops it)")
    if stacked:
        f, k, axes = stacked[0]
        notes.append(f"{len(stacked)} hold several images each (e.g. {f.name}: {k} along axes {axes}; train reads each "
                     "as one image, channels only along a C axis of at most "
                     f"{TIFF_MAX_CHANNELS} planes)")
    swapped = name_order_swap(files)
    if swapped:
        notes.append(f"read in name order: {swapped[0]} before {swapped[1]}")
    return "; ".join(notes)


def data_info(spec: str, key: Optional[str] = None, level: Optional[int] = None) -> dict:
    """What a data file holds, as ``affinevae info FILE`` prints it: ``file``, ``frames`` (count, size,
    channels, stored dtype), ``pixel size`` (when the file records one), ``first frame`` (the raw values'
    range, mean and standard deviation, and how many are NaN or infinite) and, for an ``.npz``, its
    scalar metadata (a patch set's ``kind``, ``window``, ``noise_sigma``, ``spacing``, ``lattice_order``)
    and arrays; for a FITS file ``hdus`` (what it holds) and, when it holds several image HDUs and
    no ``key`` names one, a ``note`` instead of the frames (``key='all'``: the stacked cut-outs); for an
    instrument file holding spectra (a Gatan/EMD spectrum image) ``spectra``: the ``--signal-axis`` that
    reads them, and its signals' shapes and calibrated axes; for one holding several images ``images``: each
    one's shape and axes by the index ``--key`` takes.
    Reads the first frame only (any size of stack; all of a FITS file's cut-outs for ``'all'``); ``level``: the
    resolution level of an OME-Zarr image (None: the finest; refused in one line for other files).

    Raises:
        AffineVAEError: the file cannot be read (one line, as the other commands say it).
    """
    from ..data.formats import FITS_EXTS, fits_hdu_spec, image_suffix
    from ..data.stacks import FolderSource, not_real_error, open_stack, real_pixels

    out: dict = {"file": spec}
    source = spec
    file, hdu = fits_hdu_spec(str(spec), key)
    if image_suffix(file) in FITS_EXTS and Path(file).is_file():  # a FITS file: say its HDUs
        from ..data.astro import ALL_HDUS, fits_contents, read_fits

        out["hdus"], n_images = fits_contents(file)
        if hdu is None and n_images > 1:  # which one is the user's to say: list them, read none
            out["note"] = ("several image HDUs: --key names one (EXTNAME or index); --key all stacks "
                           "one-cut-out HDUs as training images")
            return out
        if hdu is not None and str(hdu).strip().lower() == ALL_HDUS:
            source = read_fits(file, ALL_HDUS)  # (N, H, W): every cut-out, as training reads them
    from ..data.microscopy import RSCIIO_FORMATS, image_listing, lazy_signals, spectra_note

    instrument = image_suffix(file) in RSCIIO_FORMATS and Path(file).is_file()
    signals = lazy_signals(file) if instrument else None  # its header, read once for both notes
    note = spectra_note(file, key, signals) if signals is not None else None
    if note is not None:  # a spectrum image or line scan (beside any image the file holds)
        out["spectra"] = note
    listing = image_listing(file, signals) if signals is not None else None
    if listing is not None:  # several images: --key N picks one (the frames below are the one read)
        out["images"] = f"{listing} (--key N reads signal N; default: the first image)"
    try:
        opened = open_stack(source, key=key if source is spec else None, level=level)
    except AffineVAEError:
        if note is not None:  # spectra only: said above, no frame to describe
            return out
        raise
    with opened as src:
        if not real_pixels(src.dtype):
            raise not_real_error(spec, src.dtype)
        h, w = src.image_shape
        out["frames"] = (f"{src.n_frames} of {h} x {w} pixels, {src.channels} channel(s), "
                         f"{np.dtype(src.dtype).name}")
        size = src.pixel_size
        if size is None and source is not spec:  # FITS --key all: the cut-outs' own scale
            from ..data.astro import all_hdus_pixel_size

            size = all_hdus_pixel_size(file)
        if size is not None:
            out["pixel size"] = str(size)
        raw = np.asarray(src.read_raw(0, 1), dtype=np.float64)
        if isinstance(src, FolderSource):  # train reads every file: a size unlike the first is said here too
            out["files"] = folder_sizes(src.files)
    finite = np.isfinite(raw)
    bad = int(raw.size - finite.sum())
    vals = raw[finite]
    out["first frame"] = (f"values {vals.min():.6g} .. {vals.max():.6g}, mean {vals.mean():.6g}, sd {vals.std():.6g}"
                          if vals.size else "no finite value") + (f"; {bad} NaN or infinite" if bad else "")
    if str(spec).lower().endswith(".npz"):
        from ..data.formats import npz_member_headers, reading

        with reading(spec, ".npz"):
            headers = npz_member_headers(spec)  # shapes from the headers: no array is read but the scalars
            with np.load(spec, allow_pickle=False) as z:
                meta = {name: (z[name].item() if dtype.kind != "U" else str(z[name]))
                        for name, (shape, dtype) in headers.items() if shape == () and not dtype.hasobject}
        arrays = [f"{name} {shape} {dtype.name}" for name, (shape, dtype) in headers.items() if shape != ()]
        if meta:
            out["metadata"] = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in meta.items())
        out["arrays"] = "; ".join(arrays)
    return out
