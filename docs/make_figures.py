"""Regenerate the README's figures (run by hand from the repository root).

    python docs/make_figures.py                         # runs the full demo (about 5 minutes) first
    python docs/make_figures.py --demo-dir affinevae-demo   # reuse an existing demo output

It copies a few of the demo's figures and makes the micrograph maps by running the README's
three commands (``patches``, ``train``, ``map``) on a synthetic two-grain micrograph with
substituted atoms, and the hyperspectral-cube maps (latents beside PCA) with the README's
``train``/``map --cube`` commands on the synthetic cube. PNGs are re-encoded with a 256-colour palette to keep the repository small.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"
DEMO_FIGURES = ["rotated_latent_space", "loss_vs_rotation_binary", "avae_rotation_histograms"]


def compact_png(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` as a palette PNG (256 colours), much smaller for plots."""
    with Image.open(src) as im:
        im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)
    return dst


def affinevae(*args: str) -> None:
    """Run one ``affinevae`` command, echoing it; stop on failure."""
    print("$ affinevae " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "affinevae", *args], check=True)


def micrograph_maps(work: Path) -> None:
    """The README's micrograph workflow on a synthetic micrograph; maps copied into docs/figures."""
    from affinevae.data.micrograph import synthetic_micrograph

    image, _ = synthetic_micrograph(size=(256, 256), spacing=6.0, grain_angles=(0.2, 0.2 + math.radians(30)),
                                    substitution_frac=0.15, substitution_intensity=2.0, noise=0.05, seed=0)
    tifffile.imwrite(work / "scan.tif", (image * 65535).astype(np.uint16))
    affinevae("patches", str(work / "scan.tif"), "--window", "12", "--min-distance", "3", "--threshold", "0.1",
              "--out", str(work / "patches.npz"))
    affinevae("train", "--model", "rvae", "--data", str(work / "patches.npz"), "--latent-dim", "2",
              "--invariances", "rotation,translation", "--likelihood", "gaussian", "--sigma", "0.1", "--hidden", "32,32",
              "--set", "rotation_mode=full", "--epochs", "120", "--batch-size", "32", "--lr", "3e-3", "--no-progress",
              "--out", str(work / "runs" / "scan"))
    affinevae("map", str(work / "runs" / "scan"), "--image", str(work / "scan.tif"), "--patches",
              str(work / "patches.npz"), "--clusters", "2", "--symmetry", "2", "--out", str(work / "maps"))
    for name in ("angle", "clusters"):
        compact_png(work / "maps" / f"{name}.png", FIGURES / f"micrograph_{name}.png")


def spectra_maps(work: Path) -> None:
    """The README's hyperspectral-cube commands on ``synthetic_cube(seed=0)`` (as benchmarks/bench_spectra.py
    runs them); the latents-vs-PCA figure copied into docs/figures."""
    from affinevae.data.spectra import synthetic_cube

    np.save(work / "cube.npy", synthetic_cube(seed=0).cube)
    affinevae("train", "--model", "rvae", "--data", str(work / "cube.npy"), "--signal-axis", "2", "--latent-dim", "2",
              "--out", str(work / "cube"), "--no-progress")
    affinevae("map", str(work / "cube"), "--cube", str(work / "cube.npy"), "--signal-axis", "2", "--clusters", "3",
              "--baseline", "pca", "--out", str(work / "cube-maps"))
    compact_png(work / "cube-maps" / "baseline_comparison.png", FIGURES / "spectra_cube_vs_pca.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo-dir", help="an existing `affinevae demo` output (default: run the full demo)")
    args = p.parse_args()
    FIGURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        demo = Path(args.demo_dir) if args.demo_dir else work / "demo"
        if not args.demo_dir:
            affinevae("demo", "--out", str(demo))
        for name in DEMO_FIGURES:
            compact_png(demo / f"{name}.png", FIGURES / f"{name}.png")
        micrograph_maps(work)
        spectra_maps(work)
    for f in sorted(FIGURES.glob("*.png")):
        print(f"{f.relative_to(ROOT)}: {f.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
