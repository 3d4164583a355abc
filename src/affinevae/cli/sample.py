"""``affinevae sample``: a grid of images decoded from the prior."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Optional

import torch

from ..errors import AffineVAEError
from ..limits import check_allocation, format_size
from ..nn.signal import is_signal_shape
from ..plots import image_grid, new_figure, save_figure, save_image, show_signals
from ..outputs import check_output
from ..registry import MODELS
from ..runs import Run
from . import COMMANDS
from .common import add_force_argument, seed_arg

#: Image formats ``--out`` may name, by lower-case extension -> PIL format.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
#: Largest side of a JPEG image (the format's 16-bit dimensions).
JPEG_MAX_SIDE = 65535
#: Largest classic (non-Big) TIFF file PIL writes.
TIFF_MAX_BYTES = (1 << 32) - 1
#: Grid-sized float32 arrays held at once while tiling and quantising the samples
#: (:func:`affinevae.plots.image_grid` and the conversion to 8 bits), besides the samples themselves.
GRID_COPIES = 3


def output_format(out: str) -> str:
    """The PIL format ``--out`` names by its extension ('PNG', 'JPEG', 'TIFF'); an
    :class:`AffineVAEError` for any other extension."""
    ext = Path(out).suffix.lower()
    if ext not in IMAGE_FORMATS:
        kind = f"'{Path(out).suffix}'" if Path(out).suffix else "no extension"
        raise AffineVAEError(f"--out {out}: {kind} is not an image format sample writes; "
                             "use .png, .jpg/.jpeg or .tif/.tiff")
    return IMAGE_FORMATS[ext]


def class_taking_families() -> list[str]:
    """Registered model families whose ``sample`` takes a class: the class-conditional ones and
    the joint / semi-supervised ones with a discrete class latent."""
    out = []
    for name in MODELS.in_order():
        cls = MODELS.get(name)
        if getattr(cls, "conditional", False) is True or getattr(cls, "discrete_classes", False) is True:
            out.append(name)
    return out


def grid_shape(n: int, h: int, w: int, ncol: Optional[int], pad: int = 1) -> tuple[int, int]:
    """(height, width) in pixels of the grid :func:`affinevae.plots.image_grid` tiles ``n`` h x w images into."""
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    return nrow * (h + pad) + pad, ncol * (w + pad) + pad


def decode_probe(model, y: Optional[torch.Tensor]) -> tuple[float, tuple[int, ...]]:
    """Decode one prior sample of ``model`` (``y``: its class, shape (1,), or None) with a private
    generator and return ``(bytes, shape)``: the bytes decoding one sample keeps at its peak (the
    largest output of any module, twice, as a layer's input and output live together, plus the
    latent code) and the shape (C, H, W) of one decoded sample."""
    largest = [0]

    def hook(module, inputs, output):
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                largest[0] = max(largest[0], t.numel() * t.element_size())

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        with torch.no_grad():
            out = model.sample(1, y=y, generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    largest[0] = max(largest[0], out.numel() * out.element_size())
    return 2.0 * largest[0] + 4.0 * model.config.latent_dim, tuple(int(s) for s in out.shape[1:])


def check_sample_memory(model, n: int, y: Optional[torch.Tensor], ncol: Optional[int], upscale: int,
                        fmt: str, out: str) -> None:
    """``y``: the class of one sample, shape (1,), or None. Refuse in one line, before anything is decoded, ``-n`` samples or an ``--upscale`` grid that
    would not fit in memory (:func:`affinevae.limits.check_allocation`), and a grid larger than
    the ``--out`` format can hold (JPEG: 65535 pixels a side; TIFF: 4 GiB)."""
    per_sample, shape = decode_probe(model, y)
    c, h, w = (1,) * (3 - len(shape)) + shape
    image_bytes = 4.0 * math.prod(shape)  # float32
    gh, gw = grid_shape(n, h, w, ncol)
    channels = 1 if c == 1 else min(c, 3)
    grid_bytes = 4.0 * gh * gw * channels
    dims = "x".join(str(s) for s in shape)
    check_allocation(max(n * per_sample, n * image_bytes + GRID_COPIES * grid_bytes),
                     f"decoding {n:,} samples of {dims} and tiling them into a {gh}x{gw} grid "
                     f"({format_size(per_sample)} a sample while decoding)", f"-n {n}")
    uh, uw = gh * upscale, gw * upscale
    up_bytes = float(uh) * uw * channels  # 8-bit pixels
    check_allocation(n * image_bytes + gh * gw * channels + up_bytes,
                     f"the {gh}x{gw} grid upscaled {upscale}x ({uh}x{uw} pixels)", f"--upscale {upscale}")
    if fmt == "JPEG" and max(uh, uw) > JPEG_MAX_SIDE:
        raise AffineVAEError(f"--out {out}: a JPEG holds at most {JPEG_MAX_SIDE} pixels a side, the grid "
                             f"would be {uh}x{uw}; lower --upscale or -n, or write a .png")
    if fmt == "TIFF" and up_bytes > TIFF_MAX_BYTES:
        raise AffineVAEError(f"--out {out}: the {uh}x{uw} grid would take {format_size(up_bytes)}, more than "
                             "the 4 GiB a TIFF holds; lower --upscale or -n, or write a .png")


@COMMANDS.register("sample")
class Sample:
    """``affinevae sample`` (see :attr:`help`): ``add_arguments`` registers its options, ``run`` executes it."""

    help = "decode -n samples from the prior into an image grid (.png, .jpg or .tif by --out's extension)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Register the command's options on ``p``."""
        p.add_argument("run_dir", help="run or model directory")
        p.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
        p.add_argument("--out", required=True, help="output image: .png, .jpg/.jpeg or .tif/.tiff (by extension)")
        add_force_argument(p)
        p.add_argument("--class", dest="cls", type=int, help="class for conditional and joint models (default: cycle through classes)")
        p.add_argument("--seed", type=seed_arg, default=0)
        p.add_argument("--upscale", type=int, default=3, help="pixel upscaling of the image, >= 1 (default 3; a model of 1-D signals draws curves instead)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Run the command; returns the exit status (user errors raise AffineVAEError)."""
        if args.n < 1:
            raise AffineVAEError(f"-n must be >= 1, got {args.n}")
        if args.upscale < 1:
            raise AffineVAEError(f"--upscale must be >= 1, got {args.upscale}")
        check_output(args.out, inputs=[args.run_dir], force=args.force)
        fmt = output_format(args.out)
        model = Run.open(args.run_dir).model()
        y, ncol = None, None
        if model.renders_classes and model.config.num_classes > 0:  # cvae/crvae, jvae/jrvae, ssvae/ssrvae, an AVAE around one
            k = model.config.num_classes
            if args.cls is not None and not 0 <= args.cls < k:
                raise AffineVAEError(f"--class must lie in [0, {k - 1}], got {args.cls}")
            ncol = None if args.cls is not None or args.n < k else k  # cycling: one column per class
            y = torch.full((1,), args.cls if args.cls is not None else 0)  # for the memory check
        elif args.cls is not None:
            raise AffineVAEError(f"--class applies to class-conditional and joint/semi-supervised models ({', '.join(class_taking_families())}), "
                                 f"not to this '{model.family}' model")
        signals = is_signal_shape(model.config.image_shape)  # drawn as curves: --upscale does not apply
        check_sample_memory(model, args.n, y, ncol, 1 if signals else args.upscale, fmt, args.out)
        if y is not None:
            y = torch.full((args.n,), args.cls) if args.cls is not None else torch.arange(args.n) % k
        gen = torch.Generator().manual_seed(args.seed)
        imgs = model.sample(args.n, y=y, generator=gen).cpu().numpy()
        if signals:  # 1-D signals: curves, not strips one pixel high
            save_signal_grid(imgs, args.out, fmt, ncol)
        else:
            save_image(image_grid(imgs, ncol=ncol), args.out, upscale=args.upscale, fmt=fmt)
        print(f"wrote {args.n} samples to {args.out}")
        return 0


#: matplotlib's name of each PIL format ``sample`` writes.
FIGURE_FORMATS = {"PNG": "png", "JPEG": "jpeg", "TIFF": "tiff"}


def save_signal_grid(signals, out: str, fmt: str, ncol: Optional[int] = None) -> None:
    """Write (N, C, 1, L) sampled 1-D signals as curves tiled ``ncol`` per row (default about sqrt(N)), one
    common intensity scale (:func:`affinevae.plots.show_signals`), as the PIL format ``fmt`` at ``out``."""
    n = len(signals)
    ncol = ncol or max(1, math.ceil(math.sqrt(n)))
    nrow = math.ceil(n / ncol)
    fig, ax = new_figure(1, 1, panel=(min(1.6 * ncol, 40.0), min(1.0 * nrow, 40.0)), squeeze=True)
    show_signals(ax, signals, ncol=ncol)
    save_figure(fig, out, fmt=FIGURE_FORMATS[fmt])
