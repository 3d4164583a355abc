"""``affinevae map``: encode patches with a trained model and draw latent/angle/class maps over the image,
or (``--cube``) the spectra of a hyperspectral cube and draw latent/shift/class maps over its pixels;
``--baseline pca|nmf`` adds the linear baseline's loading maps and components."""

from __future__ import annotations

import argparse
import warnings
from typing import Optional

import numpy as np

from ..data.sources import BUILTIN
from ..defaults import CLUSTER_SPACES
from ..encoding import encode_patchset
from ..errors import AffineVAEError
from ..outputs import check_output
from . import COMMANDS
from .common import add_force_argument, default_of, refuse_signal_model, seed_arg
from ..units import same_pixel_size
from .image_options import add_image_options, expand_inputs, open_images, pixel_size_option

#: The background drawn under the maps is read with a step so that its longer side is at most this
#: (pixels): the PNG maps are about 700 pixels wide, and matplotlib resamples the image through RGBA
#: float64 copies (32 bytes a pixel), so a larger one costs memory and time without showing more.
MAX_BACKGROUND = 1024


@COMMANDS.register("map")
class Map:
    """``affinevae map`` (see :attr:`help`): ``add_arguments`` registers its options, ``run`` executes it."""

    help = "encode the patches of an image with a trained model and map latents, angles and classes onto it"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Register the command's options on ``p``."""
        p.add_argument("run_dir", help="trained run or model directory (affinevae train --out)")
        p.add_argument("--image", help="the image or stack the patches were cut from (background; drawn flattened "
                                       "where patches flattened it, as its patch set records); several files "
                                       "cut as one stack by patches: the same glob pattern, quoted (e.g. 'mic*.mrc')")
        p.add_argument("--patches", help="patches .npz written by `affinevae patches`")
        p.add_argument("--cube", help="instead of --image/--patches: a hyperspectral cube (.npy/.npz/file.h5:dataset) "
                                      "whose spectra run along --signal-axis; maps over its (H, W) pixels")
        p.add_argument("--signal-axis", type=int, metavar="AXIS",
                       help="--cube: the axis of the spectra (required, but for the run's own data: its axis)")
        p.add_argument("--baseline", choices=["pca", "nmf"],
                       help="also fit scikit-learn's PCA or NMF and draw its loading maps and components")
        p.add_argument("--components", type=int, metavar="K", help="--baseline components (default 2)")
        p.add_argument("--nmf-shift", action="store_true",
                       help="--baseline nmf on data with negative values: subtract the minimum first (else an error)")
        p.add_argument("--out", required=True, help="output folder for maps.npz and the PNG maps")
        add_force_argument(p, "files in an existing, non-empty --out folder")
        p.add_argument("--clusters", type=int, default=None,
                       help="cluster the objects into K classes, by what --cluster-on says (by default the "
                            "patches the model decodes them into, or their content latents; no clustering unless "
                            "given: a joint or semi-supervised model's maps show the classes it infers)")
        p.add_argument("--cluster-method", help="--clusters: kmeans (default) or gmm: mapping.CLUSTER_METHODS")
        p.add_argument("--cluster-on", choices=list(CLUSTER_SPACES),
                       help="what --clusters clusters: 'images', the patches the model decodes the objects' content "
                            "latents into (canonical pose), in units of its pixel noise, so that what differs at the "
                            "patch centre counts most; 'latents', the content latents scaled to unit variance; "
                            "'auto' (default): images for a model without classes trained with a centred pixel-sigma "
                            "window (sigma_radius > 0, train's patch-set default), else latents (printed)")
        p.add_argument("--symmetry", metavar="N",
                       help="n-fold rotational symmetry of the objects (1..12; 1 for none): angles are shown modulo "
                            "360/N degrees (default: estimated from the patches and printed)")
        p.add_argument("--frame", type=int, default=0, help="frame drawn in the PNG maps (default 0)")
        p.add_argument("--key", help="array name in an .npz, dataset in an HDF5 image file or image HDU (EXTNAME or index) of a FITS file")
        p.add_argument("--batch-size", type=int, default=default_of(encode_patchset, "batch_size"),
                       help="patches per forward pass")
        p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where to encode (default cpu)")
        p.add_argument("--seed", type=seed_arg, default=0, help="clustering seed")
        add_image_options(p)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Encode, cluster, write ``maps.npz`` and the PNG maps; returns the exit status."""
        from ..data.patches import PatchSet
        from ..runs import load
        from ..mapping import (CLUSTER_METHODS, check_cluster_count, cluster_space, estimate_symmetry,
                               lattice_orientation, write_maps)
        from ..training import resolve_device

        symmetry = parse_symmetry(args.symmetry)  # before anything is read or written
        given = pixel_size_option(args)
        if args.clusters is not None and args.clusters < 1:
            raise AffineVAEError(f"--clusters must be >= 1, got {args.clusters}")
        check_sources(args)
        try:
            CLUSTER_METHODS.get(args.cluster_method)
        except AffineVAEError as exc:
            raise AffineVAEError(f"--cluster-method: {exc}") from None
        images = expand_inputs([args.image]) if args.image else []  # a pattern: the files patches read as one stack
        check_output(args.out, kind="dir", inputs=[p for p in (args.run_dir, *images, args.patches, args.cube) if p],
                     force=args.force)
        model = load(args.run_dir, device=resolve_device(args.device))
        if args.cube:
            return map_cube(args, model)
        refuse_signal_model(model, args.run_dir, "map its spectra with --cube CUBE --signal-axis AXIS")
        ps = PatchSet.load(args.patches)
        if len(ps) == 0:
            raise AffineVAEError(f"{args.patches}: holds no patches")
        # before the patches are encoded: the cluster count, and a --cluster-on the model cannot take
        # (images for a model with classes)
        if args.clusters is not None:
            check_cluster_count(args.clusters, len(ps), "--clusters")
            cluster_space(model, args.cluster_on)
        if args.baseline:  # (before anything is written: a refusal after the maps left them behind)
            from ..analysis.baseline import check_components, check_nonnegative

            check_components(args.components, len(ps), int(np.prod(ps.patches.shape[1:])), f"{args.patches}: --components")
            check_nonnegative(float(ps.patches.min()), args.baseline, "shift" if args.nmf_shift else "error", args.patches)
        with open_images(args, images, given) as src:
            if ps.image_shape != (0, 0) and tuple(ps.image_shape) != tuple(src.image_shape):
                raise AffineVAEError(f"{args.patches}: patches were cut from a {ps.image_shape[0]}x{ps.image_shape[1]} "
                                     f"image, but {args.image} is {src.image_shape[0]}x{src.image_shape[1]}")
            if ps.image_shape != (0, 0) and ps.n_frames != src.n_frames:
                raise AffineVAEError(f"{args.patches}: patches were cut from {ps.n_frames} frame(s), but {args.image} "
                                     f"has {src.n_frames}: give the image or stack they were cut from")
            if not 0 <= args.frame < src.n_frames:
                raise AffineVAEError(f"--frame {args.frame} outside 0..{src.n_frames - 1} of {args.image}")
            if ps.fill_nan and not src.fill_nan:  # drawn as the patches were cut: NaN pixels filled (said)
                src.use_fill_nan()
            if ps.background_box is not None and ps.background_box <= max(src.image_shape):
                src.use_background(ps.background_box)  # drawn as the patches were cut: flattened
            step = max(1, -(-max(src.image_shape) // MAX_BACKGROUND))  # a huge frame: a strided view
            background = src.read_region(args.frame, slice(None, None, step), slice(None, None, step))
            pixel_size = given or ps.pixel_size or src.pixel_size
            if given is None and ps.pixel_size is not None and src.pixel_size is not None and \
                    not same_pixel_size(ps.pixel_size, src.pixel_size):
                warnings.warn(f"{args.patches} records a pixel size of {ps.pixel_size}, {args.image} {src.pixel_size}: "
                              f"the maps take the patches' (--pixel-size sets it)", UserWarning, stacklevel=2)
        enc = encode_patchset(model, ps, batch_size=args.batch_size, where=args.patches)
        grid = ps.grid_shape is not None
        if symmetry is None:
            symmetry = 1
            if enc.has_angle or grid:  # the symmetry folds angles, and gives a grid's lattice angles
                symmetry = estimate_symmetry(ps.patches, centred=not grid, seed=args.seed)
                print(f"affinevae: estimated {symmetry}-fold rotational symmetry from the patches "
                      "(override with --symmetry)")
                if symmetry == 1 and not grid:
                    print(symmetry_hint(ps) or "", end="")
        lattice = None
        if grid and symmetry >= 2:
            lattice = lattice_orientation(ps.patches, symmetry)
            print(f"affinevae: lattice angle of each window from its Fourier peaks ({lattice.fold}-fold; median "
                  f"strength {float(np.median(lattice.strength)):.2f} of 1): grid_lattice_angle.png, lattice_angle "
                  "in maps.npz (a grid window's model angle does not follow a lattice's grain)")
        elif grid and args.symmetry is not None:
            print("affinevae: no lattice angles: --symmetry 1 (a 1-fold pattern has none; give the lattice's "
                  "symmetry, 2, 3, 4 or 6, for them)")
        elif grid:
            print("affinevae: no lattice angles: the windows show no 2-, 3-, 4- or 6-fold pattern (give --symmetry "
                  "if they hold a lattice)")
        res = write_maps(enc, args.out, image=background, n_clusters=args.clusters, frame=args.frame,
                         symmetry=symmetry, cluster_method=args.cluster_method, seed=args.seed, pixel_size=pixel_size,
                         source={"image": image_location(images[0] if len(images) == 1 else args.image),
                                 "key": args.key, "level": args.level},
                         model=model, cluster_on=args.cluster_on, batch_size=args.batch_size, lattice=lattice)
        if args.baseline:
            from ..analysis.baseline import write_patch_baseline

            res["files"].update(write_patch_baseline(ps.patches, ps.centers, ps.frames, args.out, args.baseline,
                                                     args.components, background, args.frame,
                                                     "shift" if args.nmf_shift else "error", args.seed))
        names = ", ".join(p.name for p in res["files"].values())
        extra = ""
        if res["counts"] is not None:
            whose = " (inferred by the model)"
            if args.clusters is not None:
                thing = "decoded patches" if res["clustered"] == "images" else "content latents"
                chosen = ", chosen by --cluster-on auto" if args.cluster_on == "auto" else ""
                whose = f" ({args.cluster_method} of the {thing}{chosen})"
            extra = f"; classes{whose}: " + ", ".join(f"{j}: {c}" for j, c in enumerate(res["counts"]))
        angle = "" if enc.has_angle else f" (model '{model.family}' has no rotation: no angle map)"
        units = f"; positions also in {pixel_size.unit} (pixel size {pixel_size})" if pixel_size is not None else ""
        print(f"mapped {len(enc)} objects with {model.family}{angle}{extra}{units}; wrote {names} to {args.out}")
        return 0


def check_sources(args: argparse.Namespace) -> None:
    """Either --cube with --signal-axis, or --image with --patches (one-line errors otherwise); --cube
    refuses the options of an image's objects and frames (--symmetry, --frame, --stretch, --level,
    --cluster-on images); the options of --baseline and --clusters are refused without them (they would
    be ignored), and those not given take the library's defaults (``write_patch_baseline``'s
    ``n_components``, ``write_maps``' ``cluster_method`` and ``cluster_on``)."""
    if args.cube:
        if args.image or args.patches:
            raise AffineVAEError("--cube maps a hyperspectral cube; it does not take --image/--patches")
        if args.signal_axis is None and args.cube not in BUILTIN:
            args.signal_axis = _run_signal_axis(args)  # the run's own cube: read as training read it
        if args.symmetry is not None:
            raise AffineVAEError("--symmetry applies to --image/--patches (the objects' angles); --cube maps spectra")
        image_only = [name for name, given in (("--frame", args.frame != 0), ("--stretch", args.stretch is not None),
                                               ("--level", args.level is not None)) if given]
        if image_only:
            raise AffineVAEError(f"{', '.join(image_only)} appl{'ies' if len(image_only) == 1 else 'y'} to "
                                 "--image/--patches (the image's frames and pixels); --cube maps a cube's spectra")
    else:
        if args.signal_axis is not None:
            raise AffineVAEError("--signal-axis applies to --cube only")
        if not (args.image and args.patches):
            raise AffineVAEError("map needs --image and --patches (patches of an image), or --cube and --signal-axis")
    if args.cube and args.cluster_on == "images":
        raise AffineVAEError("--cluster-on images applies to --image/--patches; --cube clusters the latents")
    orphans = [(flag, parent) for flag, given, parent, has in (
        ("--components", args.components is not None, "--baseline", args.baseline),
        ("--nmf-shift", args.nmf_shift, "--baseline nmf", args.baseline == "nmf"),
        ("--cluster-method", args.cluster_method is not None, "--clusters", args.clusters is not None),
        ("--cluster-on", args.cluster_on is not None, "--clusters", args.clusters is not None)) if given and not has]
    if orphans:  # it would be ignored
        raise AffineVAEError(f"{orphans[0][0]} applies with {orphans[0][1]}, which is not given: it would be ignored")
    from ..analysis.baseline import write_patch_baseline
    from ..mapping import write_maps

    # the library's defaults for those not given (one source)
    args.components = default_of(write_patch_baseline, "n_components") if args.components is None else args.components
    args.cluster_method = args.cluster_method or default_of(write_maps, "cluster_method")
    args.cluster_on = args.cluster_on or default_of(write_maps, "cluster_on")
    if args.components < 1:
        raise AffineVAEError(f"--components must be >= 1, got {args.components}")


def _run_signal_axis(args: argparse.Namespace) -> int:
    """The ``--signal-axis`` the run recorded, for a ``--cube`` given without one (one line says so: the
    run's own training data, or another cube read as the run read its own); the one-line refusal asking
    for it when the run records none (or read its signals with ``--signal-channels``, not as a cube)."""
    from ..runs import Run

    try:
        run = Run.open(args.run_dir)
    except AffineVAEError:
        run = None
    signals = run.signal_reading() if run is not None else {}
    if not signals or signals["signal_cube"] is False:
        raise AffineVAEError("--cube needs --signal-axis AXIS (the axis along which each spectrum runs)")
    axis = signals["signal_axis"]
    print(f"affinevae: --cube is the run's own data: read along its --signal-axis {axis}" if run.names_own_data(args.cube)
          else f"affinevae: {args.cube}: read along the run's --signal-axis {axis} (override with --signal-axis)")
    return axis


def map_cube(args: argparse.Namespace, model) -> int:
    """``map --cube``: encode the cube's spectra and write the (H, W) maps
    (:func:`affinevae.analysis.spectra.write_spectral_maps`); returns the exit status."""
    from ..analysis.spectra import spectral_maps, write_spectral_maps
    from ..data.spectra import load_signals

    if args.cube in BUILTIN:  # a built-in cube (synthetic-cube), drawn as the run drew it (its seed)
        from ..runs import Run

        if args.signal_axis is not None or args.key is not None:
            raise AffineVAEError(f"--cube {args.cube} is a built-in cube: it takes no --signal-axis or --key")
        data = Run.open(args.run_dir).data(split="train", n=None, source=args.cube)
        if data.meta.get("grid_shape") is None:
            raise AffineVAEError(f"--cube {args.cube}: a built-in set of images or spectra, not a cube (H, W, E)")
    else:
        from ..runs import Run

        try:  # a run trained with --fill-nan fills its other data alike, as encode does
            run = Run.open(args.run_dir)
        except AffineVAEError:  # a model directory: no training record
            run = None
        remembered = run is not None and bool(run.meta.get("fill_nan"))
        data = load_signals(args.cube, args.signal_axis, key=args.key, fill_nan=args.fill_nan or remembered)
        if run is not None:  # a cube whose energy axis is calibrated otherwise than the run's: said in one line
            run.warn_unlike(data, args.cube)
    given = pixel_size_option(args)
    if given is not None:  # --pixel-size: the cube's map pixels, over the file's own (as map --image takes it)
        data.meta.update(pixel_size=given.value, pixel_unit=given.unit)
    maps = spectral_maps(model, data, n_clusters=args.clusters, cluster_method=args.cluster_method,
                         baseline=args.baseline, n_components=args.components,
                         nonnegative="shift" if args.nmf_shift else "error", batch_size=args.batch_size, seed=args.seed)
    files = write_spectral_maps(maps, args.out)
    h, w = maps.grid_shape
    extra = ""
    if maps.cluster is not None:
        extra = "; clusters: " + ", ".join(f"{j}: {c}" for j, c in enumerate(np.bincount(maps.cluster.ravel())))
    if maps.klass is not None:
        k = maps.class_prob.shape[-1]
        extra += "; the model's classes: " + ", ".join(
            f"{j}: {c}" for j, c in enumerate(np.bincount(maps.klass.ravel(), minlength=k)))
    shift = "" if maps.shift is not None else f" (model '{model.family}' has no shift latent: no shift map)"
    if maps.shift_phys is not None:
        shift = f" (shifts also in {maps.sample_unit}: {maps.sample_size:g} {maps.sample_unit} per sample)"
    print(f"mapped {h}x{w} spectra of {args.cube} with {model.family}{shift}{extra}; "
          f"wrote {', '.join(p.name for p in files.values())} to {args.out}")
    return 0


def image_location(spec: str) -> str:
    """``spec`` as an absolute path when it names an existing file or folder, or is a glob pattern (its
    matches then read from anywhere, as the napari reader does), else as given (e.g. ``file.h5:dataset``)."""
    from pathlib import Path

    from ..data.files import is_pattern

    p = Path(spec)
    return str(p.resolve()) if p.exists() else str(p.absolute()) if is_pattern(spec) else spec


def symmetry_hint(ps) -> Optional[str]:
    """``map``'s line (with its newline) of :func:`affinevae.mapping.small_window_note` for the patch set
    ``ps``, naming ``--symmetry``; None when the windows show the objects' arrangement."""
    from ..mapping import small_window_note

    note = small_window_note(ps, "give --symmetry (e.g. 2, 4 or 6)", " (a model trained on patches cut with "
                             "--window {wide}, or affinevae.mapping.estimate_symmetry on such patches in Python)")
    return None if note is None else f"affinevae: {note}\n"


def parse_symmetry(text: Optional[str]) -> Optional[int]:
    """``--symmetry N`` as an int in 1..12 (:func:`affinevae.mapping.check_symmetry`); None when not given."""
    from ..mapping import check_symmetry

    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        value = text
    return check_symmetry(value, "--symmetry")
