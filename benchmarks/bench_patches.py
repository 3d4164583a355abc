"""Micrograph patches: extraction + encoding throughput, and memory while streaming a stack.

Two measurements (issue 6):

1. ``throughput``: one synthetic 4096 x 4096 micrograph (Gaussian atoms, two grains). Times
   object detection, vectorised patch cutting (``window`` x ``window`` around every atom) and
   encoding with an rVAE (rotation + translation, 2 content latents), and reports patches/s.
2. ``stream``: a multi-page TIFF of ``--frames`` 2048 x 2048 frames written to disk frame by
   frame (never held in memory), then ``iter_encode`` over it in chunks of ``--chunk-frames``
   frames. Each frame count runs in a fresh process and reports its peak resident memory
   (``VmHWM``), the increase over the process's memory before streaming, and the peak of
   numpy's traced allocations (``tracemalloc``). With per-chunk results written out (the
   default here: only counts are kept), memory must not grow with the number of frames.
   ``--collect`` keeps every object's results (as ``stream_encode`` does), which grows by the
   size of those results only (~60 bytes per object).

    python benchmarks/bench_patches.py                                 # 4096^2 throughput + 200-frame stream
    python benchmarks/bench_patches.py --frames 10,20,40                # flat memory vs frame count
    python benchmarks/bench_patches.py --skip-throughput --frames 20 --dtype float32
    python benchmarks/bench_patches.py --lattice hexagonal --size 1024 --skip-stream

The two-grain lattice protocol (grain angles and substituted atoms through patches -> train -> map,
for square, hexagonal and rectangular lattices) is ``benchmarks/bench_lattice.py``.

The default stack (200 frames, uint16) is 1.6 GB on disk (3.2 GB as float32); it is written
to ``--dir`` (default: a temporary folder, removed afterwards).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch


def build_model(window: int):
    from affinevae.models.rvae import RVAE

    torch.manual_seed(0)
    return RVAE(image_shape=(1, window, window), latent_dim=2, invariances=("rotation", "translation"),
                rotation_mode="full", likelihood="gaussian", sigma=0.1, hidden=(32, 32)).eval()


def throughput(size: int, window: int, spacing: float, batch: int, lattice: str = "rectangular") -> dict:
    """Detection, extraction and encoding rates on one size x size synthetic micrograph of ``lattice``."""
    from affinevae.data.micrograph import synthetic_micrograph
    from affinevae.data.objects import detect_objects
    from affinevae.data.patches import extract_patches
    from affinevae.encoding import encode_patches

    t = time.perf_counter()
    img, truth = synthetic_micrograph(size=(size, size), spacing=spacing, seed=0, noise=0.05, lattice=lattice)
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    centers = detect_objects(img, min_distance=max(1, int(spacing / 2) - 1), threshold=0.3)
    t_det = time.perf_counter() - t
    t = time.perf_counter()
    patches, keep = extract_patches(img, centers, window, edge="drop")
    t_ext = time.perf_counter() - t
    model = build_model(window)
    t = time.perf_counter()
    enc = encode_patches(model, patches, batch_size=batch)
    t_enc = time.perf_counter() - t
    n = len(patches)
    assert enc["z_mean"].shape[0] == n
    return {"size": size, "atoms": len(truth), "found": len(centers), "patches": n, "generate_s": t_gen,
            "detect_s": t_det, "extract_s": t_ext, "encode_s": t_enc,
            "extract_patches_per_s": n / t_ext, "encode_patches_per_s": n / t_enc,
            "total_patches_per_s": n / (t_det + t_ext + t_enc)}


def write_stack(path: Path, frames: int, size: int, spacing: float, dtype: str, lattice: str = "rectangular") -> float:
    """Write a multi-page TIFF frame by frame (8 distinct synthetic frames, cycled); returns GB on disk."""
    import tifffile

    from affinevae.data.micrograph import synthetic_micrograph

    base = [synthetic_micrograph(size=(size, size), spacing=spacing, seed=s, noise=0.05, lattice=lattice)[0]
            for s in range(min(8, frames))]
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for i in range(frames):
            fr = base[i % len(base)]
            fr = (fr * 65535).astype(np.uint16) if dtype == "uint16" else (fr * 1000.0 - 50.0).astype(np.float32)
            tw.write(fr, contiguous=True, photometric="minisblack")
    return path.stat().st_size / 1e9


def _rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process in MB, from /proc; ru_maxrss where there is no /proc.

    ``ru_maxrss`` is not used on Linux: it survives exec, so a child would report its parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def stream_child(path: str, window: int, chunk: int, spacing: float, collect: bool) -> dict:
    """Stream-encode ``path`` in this process and measure memory (run in a fresh process)."""
    import warnings

    from affinevae.encoding import iter_encode

    warnings.simplefilter("ignore")  # a float stack outside [0, 1] warns that it is min-max scaled
    torch.set_num_threads(1)
    model = build_model(window)
    with torch.no_grad():  # warm up torch so its one-off allocations are in the baseline
        model.encode(torch.zeros(8, 1, window, window))
    base_rss = _rss_mb("VmRSS")
    tracemalloc.start()
    t = time.perf_counter()
    n, frames, kept = 0, 0, []
    for part in iter_encode(model, path, window, chunk_frames=chunk, batch_size=1024,
                            min_distance=max(1, int(spacing / 2) - 1), threshold=0.3, edge="drop"):
        n += len(part)
        frames += len(np.unique(part.frames))
        if collect:
            kept.append(part)
    dt = time.perf_counter() - t
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = _rss_mb("VmHWM")
    return {"objects": n, "frames_with_objects": frames, "seconds": dt, "rss_before_mb": base_rss,
            "peak_rss_mb": peak, "rss_increase_mb": peak - base_rss, "traced_peak_mb": traced_peak / 2**20,
            "patches_per_s": n / dt}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=4096, help="throughput image size (pixels)")
    p.add_argument("--window", type=int, default=24, help="patch size (pixels)")
    p.add_argument("--spacing", type=float, default=8.0, help="lattice constant of the synthetic atoms (pixels)")
    p.add_argument("--lattice", default="rectangular", choices=["rectangular", "square", "hexagonal"],
                   help="lattice of the synthetic micrographs (default rectangular)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--frames", default="200", help="stream: comma-separated frame counts, each in a fresh process")
    p.add_argument("--frame-size", type=int, default=2048)
    p.add_argument("--chunk-frames", type=int, default=4)
    p.add_argument("--dtype", choices=["uint16", "float32"], default="uint16")
    p.add_argument("--collect", action="store_true", help="keep all per-object results (as stream_encode does)")
    p.add_argument("--dir", help="where to write the TIFF stacks (default: a temporary folder)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-stream", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the throughput run")
    p.add_argument("--_child", nargs=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._child:
        print(json.dumps(stream_child(args._child[0], args.window, args.chunk_frames, args.spacing, args.collect)))
        return 0

    torch.set_num_threads(args.threads)
    if not args.skip_throughput:
        r = throughput(args.size, args.window, args.spacing, args.batch_size, args.lattice)
        print(f"\nThroughput on a {r['size']} x {r['size']} synthetic micrograph ({r['atoms']:,} atoms, "
              f"window {args.window}, torch threads {args.threads})")
        print("| step | seconds | patches/s |\n|---|---:|---:|")
        print(f"| generate image (not counted) | {r['generate_s']:.2f} | |")
        print(f"| detect ({r['found']:,} maxima) | {r['detect_s']:.2f} | |")
        print(f"| extract ({r['patches']:,} patches) | {r['extract_s']:.2f} | {r['extract_patches_per_s']:,.0f} |")
        print(f"| encode (rVAE, batch {args.batch_size}) | {r['encode_s']:.2f} | {r['encode_patches_per_s']:,.0f} |")
        print(f"| detect + extract + encode | {r['detect_s'] + r['extract_s'] + r['encode_s']:.2f} | "
              f"{r['total_patches_per_s']:,.0f} |")

    if not args.skip_stream:
        counts = [int(v) for v in args.frames.split(",") if v.strip()]
        tmp = tempfile.TemporaryDirectory(dir=args.dir) if args.dir is None else None
        folder = Path(tmp.name if tmp else args.dir)
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        try:
            for f in counts:
                path = folder / f"stack_{f}_{args.dtype}.tif"
                t = time.perf_counter()
                gb = write_stack(path, f, args.frame_size, args.spacing * 1.5, args.dtype, args.lattice)
                t_write = time.perf_counter() - t
                out = subprocess.run([sys.executable, __file__, "--_child", str(path), "--window", str(args.window),
                                      "--chunk-frames", str(args.chunk_frames), "--spacing", str(args.spacing * 1.5)]
                                     + (["--collect"] if args.collect else []),
                                     capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    print(out.stderr, file=sys.stderr)
                    return 1
                r = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append((f, gb, t_write, r))
                path.unlink()
        finally:
            if tmp:
                tmp.cleanup()
        print(f"\nStreaming a multi-page TIFF of {args.frame_size} x {args.frame_size} {args.dtype} frames, "
              f"chunks of {args.chunk_frames} frames, window {args.window}, "
              f"{'all results kept' if args.collect else 'results written out per chunk'}")
        print("| frames | stack on disk (GB) | objects | patches/s | peak RSS (MB) | RSS increase (MB) | "
              "numpy traced peak (MB) |\n|---:|---:|---:|---:|---:|---:|---:|")
        for f, gb, t_write, r in rows:
            print(f"| {f} | {gb:.2f} | {r['objects']:,} | {r['patches_per_s']:,.0f} | {r['peak_rss_mb']:.0f} | "
                  f"{r['rss_increase_mb']:.0f} | {r['traced_peak_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
