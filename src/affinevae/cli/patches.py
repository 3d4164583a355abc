"""``affinevae patches``: cut patches around objects (or on a grid) out of a large image or stack."""

from __future__ import annotations

import argparse

from ..data.background import BACKGROUND_VARIATION
from ..data.objects import DETECT_THRESHOLD, read_coordinates
from ..data.patches import BACKGROUND_MODES, CENTRE_MODES, MASS_CENTRE_MIN_SHIFT, SPARSE_NOISE_FLOOR
from ..defaults import MIN_IMAGE_SIZE, patch_min_distance, patch_smoothing
from ..errors import AffineVAEError
from ..outputs import check_output
from . import COMMANDS
from .common import add_force_argument
from .image_options import add_image_options, expand_inputs, open_images, pixel_size_option


@COMMANDS.register("patches")
class Patches:
    """``affinevae patches`` (see :attr:`help`): ``add_arguments`` registers its options, ``run`` executes it."""

    help = "find objects in a large image or stack and cut a patch around each (or slide a window on a grid)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Register the command's options on ``p``."""
        p.add_argument("image", nargs="+",
                       help="large image or stack: .npy, .npz, multi-page .tif (OME-TIFF, ImageJ), file.h5:dataset, "
                            ".png/.jpg/.gif, a folder of frames; with affinevae[microscopy] also "
                            ".dm3/.dm4/.emd/.ser/.mrc/.mrcs and Zarr/OME-Zarr (.zarr). Several, or a glob pattern "
                            "such as 'scans/*.tif' (expanded here, sorted by name): their frames one after another, "
                            "numbered in that order")
        p.add_argument("--window", type=int, required=True, help="patch size in pixels (e.g. 24)")
        p.add_argument("--out", required=True, help="output .npz with patches, centers, frames")
        add_force_argument(p)
        find = p.add_argument_group("where the objects are (default: detect local maxima)")
        find.add_argument("--coords", help="CSV (row,col or frame,row,col; one header line allowed) or .npy "
                                           "(N,2)/(N,3) of object centres in pixels")
        find.add_argument("--stride", type=int, help="grid mode: slide the window with this step in pixels")
        find.add_argument("--min-distance", type=int, default=None,
                          help="detection: minimum distance between objects in pixels (default: a quarter of "
                               "--window, at least 1, printed)")
        find.add_argument("--threshold", type=float, default=None,
                          help="detection: minimum brightness, as a fraction of the way from the frame's "
                               f"minimum to its maximum (default {DETECT_THRESHOLD:g}; 0 on asinh-stretched frames, "
                               "a sparse field, where the noise floor decides); see --absolute")
        find.add_argument("--absolute", action="store_true", help="read --threshold as a pixel value after "
                                                                   "normalisation to [0, 1]")
        find.add_argument("--sigma", type=float, default=None,
                          help="detection: Gaussian smoothing in pixels before finding maxima (default a sixteenth "
                               "of --window, printed; 0: none)")
        find.add_argument("--invert", action="store_true",
                          help="dark objects on a bright background (raw cryo-EM contrast): read every pixel as 1 "
                               "minus its normalised value, so the objects are the bright maxima detection finds "
                               "and the patches show them bright")
        find.add_argument("--noise-floor", type=float, default=None, metavar="K",
                          help="detection: a relative --threshold is raised to at least K times the (smoothed) "
                               "pixel noise above the frame's median, so noise peaks on a sparse field (a sky) "
                               f"are not objects (default: {SPARSE_NOISE_FLOOR:g} when the frames are asinh-stretched, "
                               "a sparse field, else 0: off; printed)")
        find.add_argument("--centre", "--center", dest="centre", choices=CENTRE_MODES, default="auto",
                          help="where each detected object's patch is cut: 'auto' (default) around the objects' "
                               "brightness centres where they lie scattered and apart on frames that are not periodic "
                               "(not a lattice) and those centres lie a median of a tenth of the window (at least "
                               f"{MASS_CENTRE_MIN_SHIFT:g} px) or more from the peaks found (lobed particles found on "
                               "a lobe: the peaks of one object merged), printed; else around the peaks; "
                               "'peak' always around the maxima; 'mass' always around the brightness centres (also "
                               "--coords: rough picks moved onto their objects, the patches then in frame, row, column "
                               "order)")
        p.add_argument("--background", default="auto", metavar="auto|off|BOX",
                       help="uneven illumination, a thickness ramp, a vignette, a sky gradient: 'auto' (default) "
                            "flattens every frame (a quadratic surface through the sigma-clipped medians of boxes of "
                            "four windows, subtracted) when one of five evenly spaced frames' surface varies by "
                            "more than "
                            f"{BACKGROUND_VARIATION:g} noise sigma and explains its boxes, and says so; 'off' never; "
                            "a number of pixels always, with boxes of that side")
        p.add_argument("--edge", choices=["drop", "pad", "reflect"], default="drop",
                       help="patches reaching past the border: drop them (default), zero-pad or reflect")
        p.add_argument("--drop-masked", action="store_true",
                       help="leave out every patch whose window holds a NaN/inf pixel (a masked region, a mosaic's "
                            "empty border, a detector gap), counted in the last line; the frames are read as under "
                            "--fill-nan for the detection (--fill-nan alone keeps such patches, filled)")
        p.add_argument("--key", help="array name in an .npz, dataset in an HDF5 file or image HDU (EXTNAME or index) of a FITS file")
        p.add_argument("--chunk-frames", type=int, default=16, help="frames read at a time (memory bound)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        add_image_options(p, tile=True)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Find objects, cut patches, write the ``.npz`` atomically; returns the exit status."""
        from ..data.patches import cut_patches, detection_check, detection_levels, resolve_background, resolve_centring

        if args.coords and args.stride is not None:
            raise AffineVAEError("give --coords or --stride, not both")
        if args.stride is not None and args.centre == "mass":
            raise AffineVAEError("--centre mass moves detected objects or --coords onto their brightness centres; "
                                 "grid windows (--stride) stay where the grid puts them")
        if args.coords or args.stride is not None:  # detection's own options would be ignored
            unused = [flag for flag, given in (("--min-distance", args.min_distance is not None),
                                               ("--threshold", args.threshold is not None), ("--absolute", args.absolute),
                                               ("--sigma", args.sigma is not None),
                                               ("--noise-floor", args.noise_floor is not None)) if given]
            if unused:
                raise AffineVAEError(f"{unused[0]} applies to detection; with {'--coords' if args.coords else '--stride'} "
                                     "no objects are detected: it would be ignored")
        if not str(args.out).endswith(".npz"):
            raise AffineVAEError(f"--out must be a .npz file, got {args.out}")
        given = pixel_size_option(args)
        if args.tile < 0:
            raise AffineVAEError(f"--tile must be >= 0 pixels (0: never tile), got {args.tile}")
        check_patch_options(args)
        detecting = not args.coords and args.stride is None
        chosen = args.min_distance is None and detecting  # detection uses it
        smoothing = args.sigma is None and detecting
        if args.min_distance is None:
            args.min_distance = patch_min_distance(args.window)
        if args.sigma is None and detecting:
            args.sigma = patch_smoothing(args.window)
        images = expand_inputs(args.image)
        check_output(args.out, inputs=[*images, args.coords], force=args.force)
        if args.drop_masked:  # the frames are read filled for the detection; the masked windows are left out
            args.fill_nan = True
        with open_images(args, images, given) as src:
            box, flat = resolve_background(src, args.window, args.background,
                                           args.sigma if detecting else patch_smoothing(args.window))
            src.use_background(box)  # the detection note below reads the frames as the patches were cut
            centring, centred = args.centre, None  # coordinates and grids: as cut_patches reads the mode
            if detecting:  # resolved here, so that what 'auto' measured can be said below
                centring, centred = resolve_centring(src, args.window, args.centre, min_distance=args.min_distance,
                                                     threshold=args.threshold, absolute=args.absolute,
                                                     sigma=args.sigma, noise_floor=args.noise_floor)
            ps = cut_patches(src, args.window, coords=args.coords, stride=args.stride, background=box or "off",
                             centre=centring,
                             min_distance=args.min_distance, threshold=args.threshold, absolute=args.absolute,
                             sigma=args.sigma, noise_floor=args.noise_floor, edge=args.edge,
                             chunk_frames=args.chunk_frames, drop_masked=args.drop_masked,
                             progress=not args.no_progress, tile=args.tile or None)
            threshold, floor = detection_levels(src, args.threshold, args.noise_floor, args.absolute)
            check = (detection_check(src, args.window, args.min_distance, args.sigma)
                     if detecting and args.threshold is None and args.noise_floor is None and not args.absolute
                     else None)
        saved = ps.arrays()  # written, and read below: the noise estimate and the arrangement once
        path = ps.save(args.out, saved)
        if chosen:  # said once the patches are cut: an error above is then the only line
            print(f"affinevae: --min-distance {args.min_distance} (a quarter of --window {args.window}: maxima closer "
                  "than that are one object; give --min-distance to change it)")
        if smoothing:
            print(f"affinevae: --sigma {args.sigma:g} (a sixteenth of --window {args.window}: the frames are smoothed "
                  "that much before maxima are found, so noise peaks are not objects; --sigma 0 turns it off)")
        if not args.coords and args.stride is None and not args.absolute and floor > 0 and threshold > 0:
            why = " (asinh-stretched frames: a sparse field)" if args.noise_floor is None else ""
            print(f"affinevae: detection threshold: {threshold:g} of each frame's range or {floor:g} noise sigma "
                  f"above its median, whichever is higher{why} (--threshold, --noise-floor; 0 turns the floor off)")
        elif not args.coords and args.stride is None and not args.absolute and floor > 0:
            why = (" (asinh-stretched frames: a sparse field, where a fraction of the range drops faint objects)"
                   if args.threshold is None else "")
            print(f"affinevae: detection threshold: {floor:g} noise sigma above each frame's median{why} "
                  "(--threshold for a fraction of the range, --noise-floor)")
        if flat is not None and flat.variation > BACKGROUND_VARIATION:  # flattened, or uneven but left: said
            print(f"affinevae: background: {flat.sentence()}")
        if check is not None and check.advice:
            print(f"affinevae: note: {check.advice}")
        if centred is not None and centred.recentre:
            print(f"affinevae: centring: {centred.sentence()}")
        if ps.n_merged:
            what = "of the coordinates" if args.coords else "peaks"
            print(f"affinevae: {ps.n_merged} {what} lay within --min-distance {args.min_distance} of another's object "
                  "once re-centred (the lobes of one object, or one object picked twice): merged into it")
        if args.coords and args.edge == "drop":
            given_n = len(read_coordinates(args.coords)[0])
            if len(ps) + (ps.n_merged or 0) < given_n:
                lost = given_n - len(ps) - (ps.n_merged or 0)
                print(f"affinevae: {lost} of the {given_n} coordinates in {args.coords} {'lies' if lost == 1 else 'lie'} within "
                      f"{args.window // 2} pixels of an edge: no whole window there, dropped (--edge pad or reflect "
                      "keeps them)")
        n_fr = len(set(ps.frames.tolist()))
        noun = "object" if len(ps) == 1 else "objects"
        how = (f"{ps.grid_shape[0]}x{ps.grid_shape[1]} grid windows per frame (stride {ps.stride})"
               if ps.grid_shape is not None else noun + (" from " + args.coords if args.coords else " found"))
        files = f" of {len(images)} files" if len(images) > 1 else ""
        if ps.n_masked:
            files += f" ({ps.n_masked} whose window holds masked (NaN) pixels left out)"
        channels = f" of {ps.patches.shape[1]} channels" if ps.patches.ndim == 4 else ""
        spacing = ""
        if "spacing" in saved:  # the objects' spacing (a lattice's constant), in the pixel size's unit too
            phys = (f" = {saved['spacing'] * ps.pixel_size.value:.4g} {ps.pixel_size.unit}"
                    if ps.pixel_size is not None else "")
            spacing = f"; spacing {saved['spacing']:.2f} px{phys}"
        arrays = "centers, positions, frames" if ps.positions is not None else "centers, frames"
        print(f"{len(ps)} {how} in {n_fr} of {ps.n_frames} frame(s){channels}{files}; wrote {path} "
              f"(patches {tuple(ps.patches.shape)}, {arrays}; pixel noise ~{float(saved['noise_sigma']):.3g}; "
              f"pixel size {ps.pixel_size or 'unknown'}{spacing})")
        return 0


def check_patch_options(args: argparse.Namespace) -> None:
    """``patches``' numeric options, each refused in one line naming its flag: ``--window`` below
    :data:`~affinevae.defaults.MIN_IMAGE_SIZE` (``train`` could not learn such patches),
    ``--min-distance`` / ``--stride`` / ``--chunk-frames`` below 1, a ``--threshold`` that is not
    finite or (without ``--absolute``) outside 0..1, a negative ``--sigma`` or one wider than the window,
    a negative ``--noise-floor``."""
    import math

    from ..data.patches import check_smoothing

    if args.window < MIN_IMAGE_SIZE:
        raise AffineVAEError(f"--window must be >= {MIN_IMAGE_SIZE} pixels (the models need patches of at least "
                             f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}), got {args.window}")
    for flag, value in (("--min-distance", args.min_distance), ("--stride", args.stride),
                        ("--chunk-frames", args.chunk_frames)):
        if value is not None and value < 1:
            raise AffineVAEError(f"{flag} must be >= 1, got {value}")
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise AffineVAEError(f"--threshold must be a finite number, got {args.threshold}")
    if args.threshold is not None and not args.absolute and not 0 <= args.threshold <= 1:
        raise AffineVAEError(f"--threshold must lie in 0..1 (a fraction of the way from the frame's minimum to its "
                             f"maximum), got {args.threshold:g}; give --absolute for a pixel value")
    if args.sigma is not None and not (math.isfinite(args.sigma) and args.sigma >= 0):
        raise AffineVAEError(f"--sigma must be >= 0 pixels, got {args.sigma}")
    check_smoothing(args.sigma, args.window, "--sigma")
    if args.background not in BACKGROUND_MODES:
        try:
            args.background = int(args.background)
        except ValueError:
            raise AffineVAEError(f"--background must be auto, off or a box side in pixels, got {args.background!r}") from None
        if args.background < 4:
            raise AffineVAEError(f"--background must be a box side of at least 4 pixels, got {args.background}")
    if args.noise_floor is not None and not (math.isfinite(args.noise_floor) and args.noise_floor >= 0):
        raise AffineVAEError(f"--noise-floor must be a number >= 0 (noise sigma above the median; 0: off), "
                             f"got {args.noise_floor:g}")
