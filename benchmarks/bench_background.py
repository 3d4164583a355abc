"""Uneven backgrounds: object detection on fields under a ramp or a vignette, with the frames flattened or not.

Protocol (run by hand; prints a table): synthetic fields (numpy, seeded), each flat and under backgrounds of
``--amplitude`` raw noise sigma from their lowest to their highest point (``--kinds``: a linear ramp, a quadratic
vignette, natural cos^4 vignetting, a Gaussian illumination spot a third of the frame wide, off centre);
``cut_patches`` with the defaults (``background='auto'``) against ``background='off'``; detections matched within
a radius (3 px for spots, a particle's 12 px, half a spacing for atoms), objects within a window of the
edge left out. Also printed: ``background_check``'s variation and scatter (noise sigma after the detection's
smoothing) and the box 'auto' chose (- where it left the frame alone).

    python benchmarks/bench_background.py                       # all fields, amplitude 3
    python benchmarks/bench_background.py --fields spots_small,particles --amplitude 10

Fields: ``spots_small`` (512^2, 60 spots 2-3 px wide, peaks 3-10, unit noise, window 20), ``spots`` (1000^2, 250
spots 1-3 px, peaks 3-30, window 16), ``particles`` (1024^2, 60 particles about 30 px across, blobs, dumbbells and
rings, per-pixel SNR 3, window 44), ``faint_particles`` (the same at SNR 1), ``square``/``hexagonal``/``rectangular``
(``synthetic_micrograph`` 512^2, atoms 4 / 6 / 8 px apart, noise 0.3 / 0.05 / 0.3 of an atom, windows of two
spacings), ``random_atoms`` (atoms placed at random at least 0.85 x 6 px apart, noise 0.3, window 12),
``galaxies`` / ``faint_galaxies`` (1000^2: 250 of ``bench_galaxies.py``'s cut-outs at full flux / 0.4 times it on a
Poisson sky of 200 counts, 4 saturated stars; asinh-stretched when read; window 40, matched within 8 px).
"""
import argparse
import time
import warnings

import numpy as np
from affinevae.data.micrograph import synthetic_micrograph, render_gaussians


def spots(size, n, wlo, whi, plo, phi, seed):
    """(size, size) unit-noise field with n Gaussian spots (widths wlo-whi px, peaks plo-phi); their (n, 2) centres."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(20, size - 20, (n, 2))
    img = rng.standard_normal((size, size))
    yy, xx = np.mgrid[:size, :size]
    for (r, c), s, a in zip(pos, rng.uniform(wlo, whi, n), rng.uniform(plo, phi, n)):
        sl = (slice(max(0, int(r) - 15), int(r) + 16), slice(max(0, int(c) - 15), int(c) + 16))
        img[sl] += a * np.exp(-((yy[sl] - r) ** 2 + (xx[sl] - c) ** 2) / (2 * s * s))
    return img.astype(np.float32), pos


def particles(size, n, snr, seed):
    """(size, size) field of n particles (blobs, dumbbells, rings; peak 1) 50+ px apart at per-pixel SNR ``snr``."""
    rng = np.random.default_rng(seed)
    pos = []
    while len(pos) < n:
        p = rng.uniform(40, size - 40, 2)
        if all(np.hypot(*(p - q)) > 50 for q in pos):
            pos.append(p)
    pos = np.array(pos)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    img = np.zeros((size, size), np.float32)
    for k, (r, c) in enumerate(pos):
        sl = (slice(int(r) - 25, int(r) + 26), slice(int(c) - 25, int(c) + 26))
        d2 = (yy[sl] - r) ** 2 + (xx[sl] - c) ** 2
        if k % 3 == 0:
            img[sl] += np.exp(-d2 / (2 * 7.0 ** 2))
        elif k % 3 == 1:
            a = rng.uniform(0, np.pi)
            for sgn in (-1, 1):
                img[sl] += np.exp(-((yy[sl] - r - sgn * 7 * np.sin(a)) ** 2 + (xx[sl] - c - sgn * 7 * np.cos(a)) ** 2) / (2 * 4.5 ** 2))
        else:
            img[sl] += np.exp(-(np.sqrt(d2) - 9) ** 2 / (2 * 3.0 ** 2))
    img += rng.standard_normal(img.shape).astype(np.float32) / snr
    return img, pos


def lattice(kind, spacing, noise, seed=0, size=512):
    """A two-grain ``synthetic_micrograph`` lattice and its atoms' (N, 2) positions."""
    img, t = synthetic_micrograph(size, spacing=spacing, noise=noise, lattice=kind, seed=seed, substitution_frac=0.0)
    return img, t.positions


def rsa(spacing, noise, seed=0, size=512):
    """Atoms placed at random at least 0.85 spacings apart (random sequential adsorption), noise ``noise``."""
    rng = np.random.default_rng(seed)
    cand = rng.uniform(5, size - 5, (40000, 2))
    keep = []
    for p in cand:
        if len(keep) == 0 or np.min(np.hypot(*(np.array(keep) - p).T)) > 0.85 * spacing:
            keep.append(p)
        if len(keep) > (size / spacing) ** 2 * 0.9:
            break
    pos = np.array(keep)
    img = render_gaussians((size, size), pos, np.ones(len(pos)), 0.18 * spacing)
    img = img + noise * rng.standard_normal(img.shape)
    return img.astype(np.float32), pos


def galaxy_field(scale, seed=0, size=1000):
    """``bench_galaxies.py``'s 250 cut-outs (40 px, Poisson sky of 200 counts, sky-subtracted) times ``scale``,
    at least 36 px apart on a sky of the same noise, with 4 saturated stars: float counts, asinh-stretched when
    read (a sparse field)."""
    from bench_galaxies import galaxies

    rng = np.random.default_rng(seed)
    cut = galaxies(250, 40, 0.0, seed)[0]
    pos = []
    while len(pos) < 250:
        p = rng.uniform(30, size - 30, 2)
        if all(np.hypot(*(p - q)) > 36 for q in pos):
            pos.append(p)
    pos = np.array(pos)
    img = np.zeros((size, size))
    covered = np.zeros((size, size), bool)
    for (r, c), g in zip(pos.astype(int), cut):
        img[r - 20:r + 20, c - 20:c + 20] += scale * g
        covered[r - 20:r + 20, c - 20:c + 20] = True
    img += np.where(covered, 0.0, rng.normal(0, np.sqrt(200.0), (size, size)))
    for _ in range(4):
        y, x = rng.integers(10, size - 10, 2)
        img[y - 2:y + 3, x - 2:x + 3] += 20000.0
    return img.astype(np.float32), pos


def ramp(img, amp, kind="linear"):
    """``img`` plus a background of height ``amp`` (pixel units): a left-to-right ramp ('linear'), a quadratic
    bowl ('vignette'), natural cos^4 vignetting ('cos4') or a Gaussian illumination spot off centre ('beam')."""
    h, w = img.shape
    yy, xx = np.mgrid[:h, :w]
    r2 = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / ((h / 2) ** 2 + (w / 2) ** 2)  # 1 at the corners
    if kind == "linear":
        g = xx / (w - 1)
    elif kind == "vignette":  # a quadratic bowl: bright centre, dark corners
        g = 1 - r2
    elif kind == "cos4":  # natural vignetting, cos^4 of the field angle (focal length 0.8 half-diagonals)
        g = (1 / (1 + r2 / 0.64)) ** 2
        g = (g - g.min()) / (g.max() - g.min())
    else:  # "beam": a Gaussian illumination spot off centre, a third of the frame wide
        g = np.exp(-((yy - 0.4 * h) ** 2 + (xx - 0.6 * w) ** 2) / (2 * (h / 3) ** 2))
        g = (g - g.min()) / (g.max() - g.min())
    return (img + amp * g).astype(np.float32)


FIELDS = {
    "spots_small": lambda: (*spots(512, 60, 2, 3, 3, 10, 1), 20, 3),
    "spots": lambda: (*spots(1000, 250, 1, 3, 3, 30, 2), 16, 3),
    "particles": lambda: (*particles(1024, 60, 3.0, 3), 44, 12),
    "faint_particles": lambda: (*particles(1024, 60, 1.0, 3), 44, 12),
    "square": lambda: (*lattice("square", 4, 0.3), 8, 2),
    "hexagonal": lambda: (*lattice("hexagonal", 6, 0.05), 12, 3),
    "rectangular": lambda: (*lattice("rectangular", 8, 0.3), 16, 4),
    "random_atoms": lambda: (*rsa(6, 0.3), 12, 3),
    "galaxies": lambda: (*galaxy_field(1.0), 40, 8),
    "faint_galaxies": lambda: (*galaxy_field(0.4), 40, 8),
}


def precision_recall(found, truth, radius):
    """Share of detections within ``radius`` px of an object, and of objects within it of a detection."""
    from scipy.spatial import cKDTree

    if len(found) == 0:
        return 0.0, 0.0
    return (float((cKDTree(truth).query(found)[0] <= radius).mean()),
            float((cKDTree(found).query(truth)[0] <= radius).mean()))


def inside(points, shape, margin):
    return points[(points[:, 0] > margin) & (points[:, 0] < shape[0] - margin)
                  & (points[:, 1] > margin) & (points[:, 1] < shape[1] - margin)]


def main() -> None:
    from affinevae.data.patches import background_check, cut_patches

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", default=",".join(FIELDS), help="comma-separated: " + ", ".join(FIELDS))
    ap.add_argument("--amplitude", type=float, default=3.0, help="the background's height in raw noise sigma")
    ap.add_argument("--kinds", default="linear,vignette,cos4,beam", help="backgrounds besides flat: linear, "
                    "vignette (a quadratic bowl), cos4 (natural vignetting), beam (a Gaussian spot off centre)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    print(f"{'field':16s} {'background':10s} {'variation':>9s} {'scatter':>7s} {'box':>4s}  {'auto P / R (n)':>20s}  "
          f"{'off P / R (n)':>20s}  {'s':>5s}")
    for name in args.fields.split(","):
        img0, truth, window, radius = FIELDS[name]()
        d = img0[1:, 1:] - img0[:-1, 1:] - img0[1:, :-1] + img0[:-1, :-1]
        raw_sigma = float(np.median(np.abs(d)) / 0.6745 / 2)  # the field's own noise, its unit for the ramp
        t_in = inside(truth, img0.shape, window)
        for kind, amp in (("flat", 0.0), *((k, args.amplitude) for k in args.kinds.split(","))):
            img = ramp(img0, amp * raw_sigma, "linear" if kind == "flat" else kind)
            t = time.time()
            auto = cut_patches(img, window, edge="pad")
            dt = time.time() - t
            off = cut_patches(img, window, edge="pad", background="off")
            check = background_check(img, window)
            row = []
            for ps in (auto, off):
                found = inside(ps.positions, img.shape, window)
                p, r = precision_recall(found, t_in, radius)
                row.append(f"{p:.2f} / {r:.2f} ({len(found)})")
            print(f"{name:16s} {kind:10s} {check.variation:9.1f} {check.scatter:7.1f} {auto.background_box or '-':>4}  {row[0]:>20s}  "
                  f"{row[1]:>20s}  {dt:5.1f}", flush=True)


if __name__ == "__main__":
    main()
