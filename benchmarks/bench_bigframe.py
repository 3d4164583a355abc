"""One frame larger than memory wants: `patches` + `map` on a 16384 x 16384 float32 frame (1 GiB).

The frame (a 4096^2 synthetic micrograph tiled 4 x 4, so both cases hold the same objects per
pixel) is written as a memory-mapped ``.npy`` (or a chunked Zarr store with ``--store zarr``),
then ``affinevae patches`` (tiled, ``--tile``) and ``affinevae map`` run in subprocesses, each
timed and its peak resident memory read with ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``.
The reference is the in-memory 4096^2 case: the same steps through the Python API on an array
already in RAM, in a subprocess. Throughput is frame pixels per second of patches + map.

Targets (issue 15): peak memory <= 1.5 GiB per step, throughput within 20 % of the 4096^2 case.
Run by hand (never in CI); the model is an untrained tiny VAE (encoding cost, not quality, is timed).

    python benchmarks/bench_bigframe.py [--size 16384] [--store npy|zarr] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TILE_SRC = 4096
WINDOW = 16
SPACING = 24.0


def child(code: str) -> tuple[float, float]:
    """Run Python ``code`` in a fresh interpreter; (wall seconds, its peak RSS in GiB)."""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"child failed:\n{r.stdout}\n{r.stderr}")
    peak = json.loads(r.stdout.strip().splitlines()[-1])["peak_kib"] / 2 ** 20
    return wall, peak


def cli(args: list[str]) -> tuple[float, float]:
    """Run ``affinevae ARGS`` in a subprocess: (wall seconds, peak RSS of that process in GiB)."""
    code = ("import json, resource, sys\nfrom affinevae.cli import main\n"
            f"rc = main({args!r})\nassert rc == 0, rc\n"
            "print(json.dumps({'peak_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))")
    return child(code)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=16384, help="side of the big frame (a multiple of 4096)")
    ap.add_argument("--store", choices=["npy", "zarr"], default="npy")
    ap.add_argument("--tile", type=int, default=4096)
    ap.add_argument("--workdir", default=None, help="where the frame, patches and maps go (default a temp dir)")
    a = ap.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bigframe_"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", "Agg")

    import torch

    from affinevae.data.micrograph import synthetic_micrograph
    from affinevae.models import VAE

    small, _ = synthetic_micrograph((TILE_SRC, TILE_SRC), spacing=SPACING, grains=2, seed=0)
    np.save(work / "small.npy", small)
    reps = a.size // TILE_SRC
    big_path = work / ("big.npy" if a.store == "npy" else "big.zarr")
    if a.store == "npy":
        big = np.lib.format.open_memmap(big_path, mode="w+", dtype=np.float32, shape=(a.size, a.size))
    else:
        import zarr

        big = zarr.create_array(str(big_path), shape=(a.size, a.size), chunks=(1024, 1024), dtype="float32",
                                overwrite=True)
    for i in range(reps):
        for j in range(reps):
            big[i * TILE_SRC:(i + 1) * TILE_SRC, j * TILE_SRC:(j + 1) * TILE_SRC] = small
    if a.store == "npy":
        big.flush()
    del big
    torch.manual_seed(0)
    VAE(image_shape=(1, WINDOW, WINDOW), latent_dim=4, encoder="mlp", decoder="mlp", hidden=(64,)).save(work / "model")

    # in-memory reference: the 4096^2 array already in RAM, Python API, one process
    ref_code = f"""
import json, resource, time, numpy as np
from affinevae.data.patches import cut_patches
from affinevae.encoding import encode_patchset
from affinevae.mapping import write_maps
from affinevae.runs import load
img = np.load({str(work / 'small.npy')!r})
model = load({str(work / 'model')!r})
t = time.perf_counter()
ps = cut_patches(img, {WINDOW}, tile=None)
t1 = time.perf_counter()
enc = encode_patchset(model, ps)
write_maps(enc, {str(work / 'maps_small')!r}, image=img, n_clusters=2, symmetry=2)
t2 = time.perf_counter()
print(json.dumps({{"n": len(ps), "patches_s": t1 - t, "map_s": t2 - t1,
                  "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""
    r = subprocess.run([sys.executable, "-c", ref_code], capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr)
    ref = json.loads(r.stdout.strip().splitlines()[-1])
    ref_s = ref["patches_s"] + ref["map_s"]
    ref_tp = TILE_SRC ** 2 / ref_s

    pt, pm = cli(["patches", str(big_path), "--window", str(WINDOW), "--out", str(work / "big_patches.npz"),
                  "--tile", str(a.tile), "--no-progress"])
    mt, mm = cli(["map", str(work / "model"), "--image", str(big_path), "--patches", str(work / "big_patches.npz"),
                  "--out", str(work / "maps_big"), "--clusters", "2", "--symmetry", "2"])
    with np.load(work / "big_patches.npz") as f:
        n_big = len(f["centers"])
    big_tp = a.size ** 2 / (pt + mt)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs; store {a.store}")
    print(f"in-memory {TILE_SRC}^2: {ref['n']} objects, patches {ref['patches_s']:.1f} s + map {ref['map_s']:.1f} s "
          f"(in-process, no interpreter start) = {ref_tp / 1e6:.2f} Mpixel/s, peak {ref['peak_kib'] / 2**20:.2f} GiB")
    print(f"{a.store} {a.size}^2: {n_big} objects, patches {pt:.1f} s (peak {pm:.2f} GiB) + map {mt:.1f} s "
          f"(peak {mm:.2f} GiB) = {big_tp / 1e6:.2f} Mpixel/s (each CLI step includes starting Python)")
    print(f"throughput ratio big / in-memory: {big_tp / ref_tp:.2f} (target >= 0.80); "
          f"peak memory {max(pm, mm):.2f} GiB (target <= 1.50)")
    print(f"work dir: {work}")


if __name__ == "__main__":
    main()
