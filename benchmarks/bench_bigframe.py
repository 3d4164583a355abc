"""One frame larger than memory wants: `patches` + `map` on a 16384 x 16384 float32 frame (1 GiB).

The frame (a 4096^2 synthetic micrograph tiled 4 x 4, so both cases hold the same objects per
pixel) is written as a memory-mapped ``.npy`` (or a chunked Zarr store with ``--store zarr``),
then ``affinevae patches`` (tiled, ``--tile``) and ``affinevae map`` run in subprocesses, each
timed and its peak resident memory read with ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``.
The reference is the 4096^2 case: the same commands on the 4096^2 frame (64 MiB, small enough
to be read whole, untiled). Each command is timed inside its process after the imports, so
Python's start-up is not counted. Throughput is frame pixels per second of patches + map.

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
from pathlib import Path

import numpy as np

TILE_SRC = 4096
WINDOW = 16
SPACING = 24.0


def cli(args: list[str]) -> tuple[float, float]:
    """Run ``affinevae ARGS`` in a fresh interpreter: (seconds inside the command, after the imports;
    peak resident memory of that process in GiB, from ``getrusage(RUSAGE_SELF).ru_maxrss``)."""
    code = ("import json, resource, time\n"
            "import torch, scipy.ndimage, matplotlib.figure, sklearn.cluster\n"   # imports are not the work timed
            "import affinevae.data, affinevae.encoding, affinevae.mapping\n"
            "from affinevae.cli import main\n"
            f"t = time.perf_counter()\nrc = main({args!r})\nwall = time.perf_counter() - t\nassert rc == 0, rc\n"
            "print(json.dumps({'wall': wall, 'peak_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"affinevae {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return out["wall"], out["peak_kib"] / 2 ** 20


def run_case(frame: Path, work: Path, name: str, tile: int) -> dict:
    """``patches`` then ``map`` on ``frame``; times (s), peaks (GiB) and the object count."""
    pt, pm = cli(["patches", str(frame), "--window", str(WINDOW), "--out", str(work / f"{name}_patches.npz"),
                  "--tile", str(tile), "--no-progress"])
    mt, mm = cli(["map", str(work / "model"), "--image", str(frame), "--patches", str(work / f"{name}_patches.npz"),
                  "--out", str(work / f"maps_{name}"), "--clusters", "2", "--symmetry", "2"])
    with np.load(work / f"{name}_patches.npz") as f:
        n = len(f["centers"])
    return {"patches_s": pt, "patches_gib": pm, "map_s": mt, "map_gib": mm, "n": n}


def prepare(work: Path, size: int, store: str) -> Path:
    """Write the 4096^2 frame (small.npy), the size^2 frame tiled from it (big.npy or big.zarr) and a tiny VAE."""
    import torch

    from affinevae.data.micrograph import synthetic_micrograph
    from affinevae.models import VAE

    small, _ = synthetic_micrograph((TILE_SRC, TILE_SRC), spacing=SPACING, grains=2, seed=0)
    np.save(work / "small.npy", small)
    reps = size // TILE_SRC
    big_path = work / ("big.npy" if store == "npy" else "big.zarr")
    if store == "npy":
        big = np.lib.format.open_memmap(big_path, mode="w+", dtype=np.float32, shape=(size, size))
    else:
        import zarr

        big = zarr.create_array(str(big_path), shape=(size, size), chunks=(1024, 1024), dtype="float32",
                                overwrite=True)
    for i in range(reps):
        for j in range(reps):
            big[i * TILE_SRC:(i + 1) * TILE_SRC, j * TILE_SRC:(j + 1) * TILE_SRC] = small
    if store == "npy":
        big.flush()
    del big
    torch.manual_seed(0)
    VAE(image_shape=(1, WINDOW, WINDOW), latent_dim=4, encoder="mlp", decoder="mlp", hidden=(64,)).save(work / "model")
    return big_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=16384, help="side of the big frame (a multiple of 4096)")
    ap.add_argument("--store", choices=["npy", "zarr"], default="npy")
    ap.add_argument("--tile", type=int, default=4096)
    ap.add_argument("--workdir", default=None, help="where the frame, patches and maps go (default a temp dir)")
    ap.add_argument("--prepare", metavar="DIR", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.prepare:
        prepare(Path(a.prepare), a.size, a.store)
        return
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bigframe_"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", "Agg")

    # The frames and the model are made in a child process: a child started from this one
    # (fork/vfork + exec) reports at least this process's peak in ru_maxrss, so this one stays small.
    prep = subprocess.run([sys.executable, __file__, "--prepare", str(work), "--size", str(a.size), "--store", a.store])
    if prep.returncode:
        sys.exit("preparing the frames failed")
    big_path = work / ("big.npy" if a.store == "npy" else "big.zarr")
    # reference: the 4096^2 frame (64 MiB) read whole (not tiled), the same commands
    ref = run_case(work / "small.npy", work, "small", a.tile)
    big = run_case(big_path, work, "big", a.tile)
    tp = {}
    for name, r, side in (("small", ref, TILE_SRC), ("big", big, a.size)):
        tp[name] = side ** 2 / (r["patches_s"] + r["map_s"])
        print(f"{name} {side}^2 ({'whole frame' if name == 'small' else a.store + ', tiles of ' + str(a.tile)}): "
              f"{r['n']} objects; patches {r['patches_s']:.1f} s (peak {r['patches_gib']:.2f} GiB), "
              f"map {r['map_s']:.1f} s (peak {r['map_gib']:.2f} GiB); {tp[name] / 1e6:.2f} Mpixel/s")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    print(f"throughput ratio big / small: {tp['big'] / tp['small']:.2f} (target >= 0.80); "
          f"peak memory of the big case {max(big['patches_gib'], big['map_gib']):.2f} GiB (target <= 1.50)")
    print(f"work dir: {work}")


if __name__ == "__main__":
    main()
