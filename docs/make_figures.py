"""Regenerate the README's figures (run by hand from the repository root).

    python docs/make_figures.py                         # runs the full demo (about 5 minutes) first
    python docs/make_figures.py --demo-dir affinevae-demo   # reuse an existing demo output
    python docs/make_figures.py --only napari              # just the napari screenshot (about a minute)
    python docs/make_figures.py --only micrograph          # just the two micrograph maps (about a minute)

It copies a few of the demo's figures and makes the micrograph maps by running the README's
three commands (``patches``, ``train``, ``map``) on a synthetic two-grain micrograph with
substituted atoms, and the hyperspectral-cube maps (latents beside PCA) with the README's
``train``/``map --cube`` commands on the synthetic cube, and a screenshot of napari showing a
micrograph's ``maps.npz`` through the plugin (on an Xvfb display it starts when there is no
``$DISPLAY``; needs ``".[napari]"`` and Xvfb). PNGs are re-encoded with a 256-colour palette to keep the repository small.
"""

from __future__ import annotations

import argparse
import math
import os
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
    # the README's commands: the patch-set defaults, printed by train
    affinevae("train", "--model", "rvae", "--data", str(work / "patches.npz"), "--no-progress",
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


class XServer:
    """A private Xvfb X server as ``$DISPLAY`` while in the ``with`` block (when none is set already).

    Qt's xcb platform on it gets OpenGL from Mesa's software renderer, so napari draws without a
    screen or a GPU. ``size``: (width, height) of the screen in pixels.
    """

    def __init__(self, size: tuple[int, int] = (1600, 1200)) -> None:
        self.size = size
        self.proc: subprocess.Popen | None = None
        self.previous = os.environ.get("DISPLAY")

    def __enter__(self) -> "XServer":
        if self.previous:
            return self
        if shutil.which("Xvfb") is None:
            sys.exit("make_figures: the napari screenshot needs Xvfb (apt-get install xvfb) or a $DISPLAY")
        read, write = os.pipe()
        self.proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0",
                                      f"{self.size[0]}x{self.size[1]}x24", "-nolisten", "tcp"],
                                     pass_fds=(write,), stderr=subprocess.DEVNULL)
        os.close(write)
        with os.fdopen(read) as f:
            number = f.readline().strip()  # Xvfb writes its display number once it accepts clients
        if not number:
            self.proc.kill()
            sys.exit("make_figures: Xvfb did not start")
        os.environ["DISPLAY"] = f":{number}"
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            os.environ.pop("DISPLAY", None)


def napari_screenshot(work: Path) -> None:
    """``patches`` -> ``train`` (a minute) -> ``map`` on a small synthetic two-grain lattice, the
    ``maps.npz`` opened in a napari window with the plugin's reader, points coloured by angle;
    the window saved as docs/figures/napari_maps.png (the canvas alone if the window cannot be grabbed)."""
    from affinevae.data.micrograph import synthetic_micrograph

    image, _ = synthetic_micrograph(size=(160, 200), spacing=8.0, grain_angles=(0.2, 0.2 + math.radians(30)),
                                    noise=0.05, seed=1)
    np.save(work / "lattice.npy", image)
    affinevae("patches", str(work / "lattice.npy"), "--window", "12", "--min-distance", "4", "--threshold", "0.1",
              "--pixel-size", "0.05nm", "--out", str(work / "lattice-patches.npz"), "--no-progress")
    affinevae("train", "--model", "rvae", "--data", str(work / "lattice-patches.npz"), "--latent-dim", "2",
              "--invariances", "rotation,translation", "--likelihood", "gaussian", "--sigma", "0.1", "--hidden", "32,32",
              "--set", "rotation_mode=full", "--epochs", "60", "--batch-size", "32", "--lr", "3e-3", "--no-progress",
              "--out", str(work / "runs" / "lattice"))
    affinevae("map", str(work / "runs" / "lattice"), "--image", str(work / "lattice.npy"), "--patches",
              str(work / "lattice-patches.npz"), "--clusters", "2", "--symmetry", "2", "--out", str(work / "lattice-maps"))
    with XServer():  # napari in a child process, so that its Qt connection closes before the X server stops
        subprocess.run([sys.executable, __file__, "--napari-window", str(work / "lattice-maps" / "maps.npz"),
                        str(work / "napari_maps.png")], check=True, env={**os.environ, "QT_QPA_PLATFORM": "xcb"})
    compact_png(work / "napari_maps.png", FIGURES / "napari_maps.png")


def napari_window(maps: Path, png: Path) -> None:
    """Open ``maps`` (a ``maps.npz``) with the plugin's reader in a napari window on ``$DISPLAY``,
    colour the points by ``angle_deg`` and save the window (RGB) as ``png``; the canvas alone if
    the window cannot be grabbed."""
    import napari
    from napari.layers import Layer

    from affinevae.napari_plugin.reader import read_maps

    viewer = napari.Viewer(title="napari: affinevae maps.npz", show=True)
    viewer.window.resize(1100, 720)
    for data, kwargs, kind in read_maps(str(maps)):
        viewer.add_layer(Layer.create(data, kwargs, kind))
    points = viewer.layers[-1]
    points.face_color = "angle_deg"
    viewer.layers.selection.active = points
    viewer.reset_view()
    try:
        shot = viewer.screenshot(canvas_only=False, flash=False)
    except Exception as e:  # noqa: BLE001 - any failure to grab the window: fall back to the canvas
        print(f"the napari window could not be grabbed ({e}); saving the canvas only", flush=True)
        shot = viewer.screenshot(canvas_only=True, flash=False)
    viewer.close()
    Image.fromarray(np.asarray(shot)[..., :3]).save(png)


def noise_injected_ae(work: Path) -> None:
    """The notes' argument for the KL term: latent statistics of an AE, the same AE with noise injected
    into its codes (``latent_noise``) and a VAE, the README's articles commands on 10 000 digits."""
    common = ["--data", "mnist", "-n", "10000", "--latent-dim", "10", "--epochs", "5", "--no-progress"]
    affinevae("train", "--model", "ae", *common, "--out", str(work / "runs" / "ae"))
    affinevae("train", "--model", "ae", *common, "--set", "latent_noise=1", "--out", str(work / "runs" / "ae-noise"))
    affinevae("train", "--model", "vae", *common, "--out", str(work / "runs" / "vae"))
    affinevae("plot", str(work / "runs" / "ae"), "latent-stats", "--compare", str(work / "runs" / "ae-noise"),
              str(work / "runs" / "vae"), "--out", str(work / "noise_stats.png"))
    compact_png(work / "noise_stats.png", FIGURES / "noise_injected_ae_stats.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo-dir", help="an existing `affinevae demo` output (default: run the full demo)")
    p.add_argument("--only", choices=["napari", "micrograph", "noise-ae"], help="make only this figure (or these two)")
    p.add_argument("--napari-window", nargs=2, metavar=("MAPS", "PNG"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.napari_window:  # the child process of napari_screenshot
        napari_window(*map(Path, args.napari_window))
        return
    FIGURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only == "napari":
            napari_screenshot(work)
            return
        if args.only == "micrograph":
            micrograph_maps(work)
            return
        if args.only == "noise-ae":
            noise_injected_ae(work)
            return
        demo = Path(args.demo_dir) if args.demo_dir else work / "demo"
        if not args.demo_dir:
            affinevae("demo", "--out", str(demo))
        for name in DEMO_FIGURES:
            compact_png(demo / f"{name}.png", FIGURES / f"{name}.png")
        micrograph_maps(work)
        spectra_maps(work)
        noise_injected_ae(work)
        napari_screenshot(work)
    for f in sorted(FIGURES.glob("*.png")):
        print(f"{f.relative_to(ROOT)}: {f.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
