"""The demo: the story of the seed articles on the bundled MNIST, end to end on a CPU.

:func:`run_demo` (what ``affinevae demo`` calls) trains eight small models and writes the
figures of four stories, then one self-contained report, ``index.html``, that shows them all:

1. **AE vs VAE** (upright MNIST, 10 latents): the autoencoder's latent space is unbounded and
   irregular, the VAE's is close to N(0, I); so prior samples and straight-line morphs
   decode to digits for the VAE and mostly to blots for the AE.
2. **VAE vs cVAE vs rVAE vs crVAE** (MNIST rotated in +-60 degrees, 2 latents): the VAE spends
   its latents on the angle; the class-conditional cVAE separates the angle from the
   class; the rVAE/crVAE infer the angle as a separate pose latent (learned vs true angle)
   and keep their content latents for the shape.
3. **VAE vs AVAE, loss vs rotation**: a VAE trained on upright digits gets worse as the test
   digits turn; the affine VAE (the same VAE behind an ELBO-maximising rotation search)
   stays flat. Shown on binarized digits (rotated, then thresholded), where only the pose
   changes, and on grey digits, where resampling blur adds a floor off the pixel grid.
4. **Pose-optimised training** (AVAE on digits 1, 6, 9 rotated over the full circle): the
   found rotations of each class gather into peaks as training goes on (two peaks 180
   degrees apart for the symmetric '1').

Everything is seeded. ``quick=True`` shrinks every stage (a few hundred images, one or two
epochs) to run in well under two minutes on two CPU cores; the full demo takes about ten.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from . import analysis as A
from .data import load_mnist, rotated_mnist
from .errors import AffineVAEError
from .io import atomic_write, make_directory
from .models.base import build_model
from .plots import figure_png_bytes
from .training import TrainConfig, fit


def _epochs(n: int) -> str:
    """'1 epoch', '3 epochs' (the demo's progress lines)."""
    return f"{n} epoch{'' if n == 1 else 's'}"


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """Sizes of the demo's stages.

    ``sweep_step`` is in degrees, as the sweep's figure, table and CSV show the angles (a
    plot-facing setting); :func:`run_demo` converts the angles to radians (``np.radians``)
    before calling :func:`affinevae.analysis.loss_vs_rotation`.

    Attributes:
        n_mnist: upright training digits for the AE and VAE.
        n_rotated: rotated training digits for the VAE/cVAE/rVAE/crVAE.
        n_test: test images for the analyses.
        epochs: epochs of the AE/VAE and of the rotated-MNIST models.
        n_avae: training digits (1, 6, 9, full-circle rotations) of the pose-optimised AVAE.
        avae_epochs: its epochs (one histogram row per epoch).
        avae_restarts, avae_steps: its per-batch pose search (candidates, Adam steps).
        sweep_n: test images in the loss-vs-rotation sweep.
        sweep_step: degrees between the sweep's angles (0, step, ... up to 360 inclusive).
        search_restarts, search_steps: the AVAE's test-time search in the sweep.
        manifold_d: grid size of the manifolds.
        batch_size: training batch size.
    """

    n_mnist: int
    n_rotated: int
    n_test: int
    epochs: int
    n_avae: int
    avae_epochs: int
    avae_restarts: int
    avae_steps: int
    sweep_n: int
    sweep_step: int
    search_restarts: int
    search_steps: int
    manifold_d: int
    batch_size: int = 128


QUICK = DemoPlan(n_mnist=400, n_rotated=400, n_test=150, epochs=1, n_avae=200, avae_epochs=2, avae_restarts=4,
                 avae_steps=0, sweep_n=20, sweep_step=60, search_restarts=4, search_steps=1, manifold_d=8,
                 batch_size=32)
FULL = DemoPlan(n_mnist=10000, n_rotated=10000, n_test=1000, epochs=8, n_avae=3000, avae_epochs=8, avae_restarts=8,
                avae_steps=1, sweep_n=300, sweep_step=30, search_restarts=8, search_steps=5, manifold_d=12,
                batch_size=32)

#: Small convolutional nets for the AE, VAE and cVAE (fast on a CPU).
CONV = {"channels": [16, 32], "hidden": [256]}


@dataclasses.dataclass
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes:
        out: the output directory.
        report: the report page (``out/index.html``).
        figures: figure name -> PNG path.
        runs: model name -> run directory (``affinevae report RUN`` works on each).
        metrics: model name -> {family, data, n_train, epochs, train_s, test_neg_elbo, images_per_s}.
        timings: step description -> seconds.
        total_s: wall time of the whole demo, seconds.
        quick: whether the quick plan ran.
    """

    out: Path
    report: Path
    figures: dict
    runs: dict
    metrics: dict
    timings: dict
    total_s: float
    quick: bool


class _Steps:
    """Numbered progress lines with timings: '[k/N] what ...' then '      done in S s (detail)'."""

    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.total, self.k, self.log = total, 0, log
        self.timings: dict = {}

    def run(self, what: str, fn: Callable[[], Optional[str]]):
        self.k += 1
        self.log(f"[{self.k:2d}/{self.total}] {what} ...")
        t = time.perf_counter()
        detail = fn()
        dt = time.perf_counter() - t
        self.timings[what] = dt
        self.log(f"        done in {dt:.1f} s" + (f" ({detail})" if detail else ""))
        return dt


#: Recorded in the ``train.json`` of every run the demo trains: only such runs are replaced.
DEMO_RUN_KEY = "demo"


def is_demo_run(path: str | Path) -> bool:
    """Whether ``path`` is a run directory an earlier demo trained (its ``train.json`` says so)."""
    try:
        info = json.loads((Path(path) / "train.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get(DEMO_RUN_KEY) is True


def run_demo(out: str | Path = "affinevae-demo", quick: bool = False, seed: int = 0,
             log: Callable[[str], None] = print, progress: bool = True) -> DemoResult:
    """Run the whole demo and write its figures, run directories and ``index.html`` into ``out``.

    Args:
        out: output directory (created; existing demo runs inside it are replaced; a folder this call
            created is removed again when the demo fails before writing anything into it).
        quick: the small plan (:data:`QUICK`, well under two minutes on two cores) instead of
            :data:`FULL` (about ten minutes).
        seed: seeds data order, initialisation, sampling and searches.
        log: receives one line per step (with its timing).
        progress: show tqdm progress bars while training.

    Returns:
        :class:`DemoResult`.
    """
    created = not Path(out).exists()
    try:
        return _run_demo(out, quick, seed, log, progress)
    except BaseException:
        if created and Path(out).is_dir() and not any(Path(out).iterdir()):
            Path(out).rmdir()  # (a memory limit refused the first step: an empty folder was left behind)
        raise


def _run_demo(out: str | Path, quick: bool, seed: int, log: Callable[[str], None], progress: bool) -> DemoResult:
    """:func:`run_demo`'s work."""
    import shutil

    from .models.avae import AVAE
    from .pose.search import SearchConfig
    from .report import HtmlReport

    plan = QUICK if quick else FULL
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AffineVAEError(f"{out}: exists and is not a directory")
    runs_dir = out / "runs"
    if runs_dir.is_dir():  # before anything is written: only an earlier demo's runs are replaced
        foreign = sorted(p.name for p in runs_dir.iterdir() if not p.name.startswith(".") and not is_demo_run(p))
        if foreign:
            raise AffineVAEError(f"{runs_dir}: holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, "
                                 "not made by a demo; the demo replaces only its own runs (choose another --out; "
                                 "a demo of an affinevae before 2026-11-30 is not marked: remove its runs/ first)")
    make_directory(out)
    t_start = time.perf_counter()
    steps = _Steps(15, log)
    figures: dict = {}
    pngs: dict = {}
    runs: dict = {}
    metrics: dict = {}
    models: dict = {}
    curves: dict = {}

    def save(name: str, fig) -> Path:
        png = figure_png_bytes(fig, dpi=100)
        path = atomic_write(out / f"{name}.png", lambda tmp: Path(tmp).write_bytes(png))
        figures[name], pngs[name] = path, png
        return path

    def train(name: str, family: str, data, test, data_name: str, binarize: Optional[float] = None, **opts) -> str:
        run = runs_dir / name
        if run.exists():
            shutil.rmtree(run)  # an earlier demo's (checked at the start)
        model = build_model(family, seed=seed, image_shape=list(data.image_shape), **opts)
        t = time.perf_counter()
        searched = model.pose_source == "searched"  # pose-optimised training: the plan's own epochs
        res = fit(model, data, TrainConfig(epochs=plan.avae_epochs if searched else plan.epochs,
                                           batch_size=plan.batch_size, lr=2e-3, seed=seed, progress=progress, val_split=0.1),
                  out=run, meta={"data": data_name, "labels": None, "key": None, "n": len(data), "binarize": binarize,
                                 DEMO_RUN_KEY: True})
        train_s = time.perf_counter() - t
        model.eval()
        from .evaluation import encode_dataset

        neg = -float(encode_dataset(model, test, seed=seed)["elbo"].mean())
        models[name], runs[name], curves[name] = model, run, res.history
        metrics[name] = {"model": name, "family": family,
                         "data": data_name + (" (binarized)" if binarize is not None else ""), "n_train": len(data),
                         "epochs": len(res.history), "train_s": round(train_s, 1), "test_neg_elbo": round(neg, 2),
                         "images_per_s": round(float(np.mean([h["images_per_s"] for h in res.history])), 1)}
        return f"test -ELBO {neg:.1f} nats/image, {metrics[name]['images_per_s']:.0f} images/s"

    # ------------------------------------------------------------------ stage 1: AE vs VAE
    mnist = load_mnist("train", n=plan.n_mnist)
    mnist_test = load_mnist("test", n=plan.n_test)
    steps.run(f"train an AE on {plan.n_mnist} MNIST digits (10 latents, {_epochs(plan.epochs)})",
              lambda: train("ae", "ae", mnist, mnist_test, "mnist", latent_dim=10, **CONV))
    steps.run(f"train a VAE on {plan.n_mnist} MNIST digits (10 latents, {_epochs(plan.epochs)})",
              lambda: train("vae", "vae", mnist, mnist_test, "mnist", latent_dim=10, **CONV))
    ae, vae = models["ae"], models["vae"]
    stats: dict = {}

    def stage1_stats():
        stats["ae"] = A.latent_stats(ae, mnist_test, name="AE")
        stats["vae"] = A.latent_stats(vae, mnist_test, name="VAE")
        save("ae_vs_vae_latent_stats", A.plot_latent_stats([stats["ae"], stats["vae"]],
                                                           title="latent statistics of the test digits: AE vs VAE"))
        return (f"AE latent range [{stats['ae'].min.min():.1f}, {stats['ae'].max.max():.1f}], "
                f"VAE [{stats['vae'].min.min():.1f}, {stats['vae'].max.max():.1f}]")

    steps.run("AE vs VAE: latent statistics", stage1_stats)

    def stage1_samples():
        gens = [A.generate(ae, n=36, seed=seed), A.generate(vae, n=36, seed=seed)]
        save("ae_vs_vae_samples", A.plot_generation(gens, names=["AE", "VAE"],
                                                    title="decoding samples of N(0, I): AE vs VAE"))
        pairs = [(0, 1), (2, 3), (4, 5)]
        rows, names = [], []
        for p in pairs:
            for m, nm in ((ae, "AE"), (vae, "VAE")):
                rows.append(A.interpolate(m, mnist_test, p, steps=10))
                names.append(nm)
        save("ae_vs_vae_morphing", A.plot_interpolation(rows, names=names,
                                                        title="morphing one test digit into another: AE vs VAE"))
        save("vae_arithmetic", A.plot_arithmetic([A.latent_arithmetic(vae, mnist_test, (0, 1, 2)),
                                                  A.latent_arithmetic(vae, mnist_test, (3, 4, 5))],
                                                 names=["VAE", "VAE"], title="VAE latent arithmetic"))
        return None

    steps.run("AE vs VAE: prior samples, morphing, latent arithmetic", stage1_samples)

    def stage1_more():
        save("vae_reconstructions", A.plot_reconstructions(A.reconstructions(vae, mnist_test, n=12, seed=seed)))
        save("vae_anomaly", A.plot_anomaly(A.anomaly_scores(vae, mnist_test, seed=seed)))
        save("vae_denoising", A.plot_denoising(A.denoise(vae, mnist_test, n=12, seed=seed)))
        return None

    steps.run("VAE: reconstructions, anomaly scores, denoising", stage1_more)

    # ------------------------------------------------------------------ stage 2: rotated MNIST
    rot = rotated_mnist("train", n=plan.n_rotated, seed=seed)
    rot_test = rotated_mnist("test", n=plan.n_test, seed=seed + 1)
    rot_models = [("rot_vae", "vae", dict(latent_dim=2, **CONV)),
                  ("rot_cvae", "cvae", dict(latent_dim=2, num_classes=10, **CONV)),
                  ("rot_rvae", "rvae", dict(latent_dim=2, invariances=["rotation"])),
                  ("rot_crvae", "crvae", dict(latent_dim=2, num_classes=10, invariances=["rotation"]))]
    display = {"rot_vae": "VAE", "rot_cvae": "cVAE", "rot_rvae": "rVAE", "rot_crvae": "crVAE"}
    for name, family, opts in rot_models:
        steps.run(f"train a {display[name]} on {plan.n_rotated} digits rotated "
                  f"in +-60 degrees (2 latents, {_epochs(plan.epochs)})",
                  lambda name=name, family=family, opts=opts: train(name, family, rot, rot_test, "rotated-mnist", **opts))

    def stage2_latents():
        codes = []
        for name, _, _ in rot_models:
            c = A.latent_codes(models[name], rot_test, seed=seed)
            c.model = display[name]
            codes.append(c)
        save("rotated_latent_space", A.plot_latent_scatter(codes, title="latent means of rotated test digits"))
        return None

    steps.run("rotated MNIST: latent spaces by class, true and learned angle", stage2_latents)
    angle_r: dict = {}

    def stage2_manifolds():
        d = plan.manifold_d
        for name, _, _ in rot_models:
            m = models[name]
            classes = [0, 1, 2] if m.conditional else None
            man = A.latent_manifold(m, d=d, classes=classes)
            pose = " (canonical pose)" if A.has_learned_angle(m) else ""
            save(f"manifold_{name[4:]}", A.plot_manifold(man, title=f"{display[name]}: {d} x {d} latent manifold{pose}"))
        items = []
        for name in ("rot_rvae", "rot_crvae"):
            a = A.angle_comparison(models[name], rot_test)
            a.model = display[name]
            angle_r[name] = a.correlation
            items.append(a)
        save("rotated_learned_vs_true_angle", A.plot_angle_comparison(items))
        return ", ".join(f"{display[k]} circular r = {v:.2f}" for k, v in angle_r.items())

    steps.run("rotated MNIST: manifolds and learned vs true angle", stage2_manifolds)

    # ------------------------------------------------------------------ stage 3: loss vs rotation
    sweep: dict = {}
    binary = mnist.binarized(0.5)
    steps.run(f"train a VAE on {plan.n_mnist} binarized MNIST digits (10 latents, {_epochs(plan.epochs)})",
              lambda: train("vae_binary", "vae", binary, mnist_test.binarized(0.5), "mnist", binarize=0.5, latent_dim=10,
                            **CONV))

    def stage3():
        search = SearchConfig(restarts=plan.search_restarts, keep=1, steps=plan.search_steps, seed=seed)
        angles = list(range(0, 361, plan.sweep_step))
        details = []
        for key, model, threshold, what in (("binary", models["vae_binary"], 0.5, "binarized"), ("grey", vae, None, "grey")):
            avae = AVAE(model, pose_head=False, search=search).eval()
            res = A.loss_vs_rotation({"VAE": model, "AVAE (same VAE + rotation search)": avae}, mnist_test,
                                     np.radians(angles),
                                     n=plan.sweep_n, seed=seed, binarize=threshold)
            sweep[key] = res
            res.to_csv(out / f"loss_vs_rotation_{key}.csv")
            save(f"loss_vs_rotation_{key}", A.plot_loss_vs_rotation(
                res, title=f"VAE trained on upright {what} digits vs its AVAE ({res.n_images} test digits)"))
            peak = int(np.argmax(res.neg_elbo[0]))
            details.append(f"{what}: VAE {res.neg_elbo[0, 0]:.0f} -> {res.neg_elbo[0, peak]:.0f} nats at "
                           f"{res.angles_deg[peak]:.0f} deg, AVAE within "
                           f"{100 * float(np.abs(res.relative()[1] - 1).max()):.1f}% of its 0-degree value")
        return "; ".join(details)

    steps.run(f"VAE vs AVAE: loss vs rotation ({plan.sweep_n} digits, every {plan.sweep_step} degrees)", stage3)

    # ------------------------------------------------------------------ stage 4: pose-optimised training
    def stage4():
        data = rotated_mnist("train", n=plan.n_avae, seed=seed, full_circle=True, digits=(1, 6, 9))
        test = rotated_mnist("test", n=max(60, plan.n_test // 4), seed=seed + 1, full_circle=True, digits=(1, 6, 9))
        train_search = SearchConfig(restarts=plan.avae_restarts, keep=1, steps=plan.avae_steps)
        search = SearchConfig(restarts=plan.search_restarts, keep=1, steps=plan.search_steps, seed=seed)
        inner = {"inner": "vae", "latent_dim": 8, **CONV}
        detail = train("avae", "avae", data, test, "rotated-mnist (1, 6, 9; full circle)",
                       train_search=train_search.to_dict(), search=search.to_dict(), **inner)
        h = A.rotation_histograms(runs["avae"], bins=36, true_angle=data.angle)
        save("avae_rotation_histograms", A.plot_rotation_histograms(
            h, classes=[1, 6, 9], title="orientation at which each training digit is encoded during pose-optimised "
                                        "training"))
        return detail

    steps.run(f"train a pose-optimised AVAE on {plan.n_avae} digits 1, 6, 9 rotated over the full circle "
              f"({_epochs(plan.avae_epochs)})", stage4)

    # ------------------------------------------------------------------ report
    def write_index():
        rep = HtmlReport("affinevae demo: content and pose of MNIST digits",
                         f"{'quick' if quick else 'full'} demo, seed {seed}; every figure below is also a PNG file "
                         f"in {out}; each model's run directory is under runs/")
        rep.section("Models")
        rep.paragraph("Eight small models trained on the bundled MNIST on this machine. Losses are nats per image "
                      "(-ELBO; the AE's is its reconstruction loss), evaluated on held-out test digits.")
        rep.table(list(metrics.values()), caption="models trained by the demo")
        rep.section("1. Autoencoder vs variational autoencoder")
        rep.paragraph("Both models have the same networks and 10 latent variables. The AE only has to reconstruct, so "
                      "its codes can sit anywhere: their ranges and spreads differ from dimension to dimension. The "
                      "VAE's KL term pulls its codes towards N(0, I) (dashed).")
        rep.figure(pngs["ae_vs_vae_latent_stats"], "per-dimension range (thin), mean +- std (thick) and densities "
                   "of the latent means of the test digits; dashed: N(0, 1)")
        rep.table([{"model": s.name, "min": float(s.min.min()), "max": float(s.max.max()),
                    "mean of means": float(s.mean.mean()), "mean std": float(s.std.mean())} for s in stats.values()],
                  caption="latent statistics over all dimensions")
        rep.paragraph("Hence decoding draws from N(0, I) gives digits for the VAE but mostly blots for the AE, and a "
                      "straight line between two codes stays among digits only for the VAE.")
        rep.figure(pngs["ae_vs_vae_samples"], "36 prior samples decoded by each model")
        rep.figure(pngs["ae_vs_vae_morphing"], "three test digits morphed into three others (rows alternate AE, VAE)")
        rep.figure(pngs["vae_arithmetic"], "latent arithmetic with the VAE: decode(z_a - z_b + z_c)")
        rep.figure(pngs["vae_reconstructions"], "VAE reconstructions of random test digits")
        rep.figure(pngs["vae_anomaly"], "anomaly scores: the test digits the VAE finds most and least typical")
        rep.figure(pngs["vae_denoising"], "denoising by reconstruction: PSNR before and after")
        rep.section("2. Rotated digits: VAE, cVAE, rVAE and crVAE")
        rep.paragraph("MNIST digits turned by random angles in +-60 degrees; every model has two content latents. "
                      "The VAE's latent space mixes digit and angle (the angle runs across it). The cVAE is given "
                      "the class, so its latents hold the angle and the style. The rVAE and crVAE infer the angle as "
                      "an extra pose latent: their content latents no longer follow the angle, and the learned angle "
                      "tracks the true one.")
        rep.figure(pngs["rotated_latent_space"], "latent means of rotated test digits, coloured by class, true angle "
                   "and learned angle (degrees)")
        for name, _, _ in rot_models:
            rep.figure(pngs[f"manifold_{name[4:]}"], f"{display[name]}: images decoded on a grid over the two latents"
                       + (" (classes 0, 1, 2)" if models[name].conditional else ""))
        rep.figure(pngs["rotated_learned_vs_true_angle"], "learned vs true angle on the test digits; r is the "
                   "circular correlation")
        rep.section("3. Loss vs rotation: VAE vs affine VAE")
        rep.paragraph("A VAE trained on upright digits scores the same test digits turned by every angle. Its loss "
                      "climbs as the digits turn (and falls again near 180 degrees, where some digits look alike). "
                      "The affine VAE wraps the very same VAE and, for every image, searches the rotation that "
                      "maximises the ELBO, so its loss stays flat.")
        rep.figure(pngs["loss_vs_rotation_binary"], "binarized digits (every rotated image thresholded at 0.5; the VAE "
                   "trained on thresholded digits): mean -ELBO, nats/image (band: +-1 standard error)")
        for key, what in (("binary", "binarized"), ("grey", "grey")):
            res = sweep[key]
            rep.table([[f"{a:g}", *[float(v) for v in res.neg_elbo[:, j]], f"{100 * (res.relative()[1, j] - 1):+.1f}%"]
                       for j, a in enumerate(res.angles_deg)],
                      header=["angle (degrees)", *res.names, "AVAE change vs 0 degrees"],
                      caption=f"{what} digits: mean -ELBO, nats/image (also loss_vs_rotation_{key}.csv)")
        rep.paragraph("Why binarized digits: turning a 28 x 28 image by an angle that is not a multiple of 90 degrees "
                      "resamples its pixels and greys the strokes. Under a Bernoulli likelihood grey pixels carry "
                      "entropy that no pose can remove (about 27 nats per MNIST digit, against about 45 upright), so "
                      "on grey digits the AVAE's curve rises at every angle off the pixel grid and is flat again at "
                      "90, 180 and 270 degrees, where turning only permutes pixels. That rise is resampling blur, "
                      "not pose; thresholding the turned images removes it.")
        rep.figure(pngs["loss_vs_rotation_grey"], "the same sweep on grey digits with the VAE of part 1")
        rep.section("4. Rotations found during pose-optimised training")
        rep.paragraph("An AVAE trained on digits 1, 6 and 9 turned over the whole circle, searching every training "
                      "image's rotation before each gradient step. For each digit, its own rotation minus the found "
                      "pose is the orientation, from upright, at which the model encodes it. Each row is one epoch: "
                      "these orientations start spread over the circle and gather into peaks as the model settles "
                      "on one canonical orientation per shape (two peaks 180 degrees apart where a digit looks alike "
                      "upside down, as the 1 does; the 6 and the 9 end about 180 degrees apart).")
        rep.figure(pngs["avae_rotation_histograms"], "distribution of the encoded orientation of the training digits, "
                   "per class, one row per epoch (later epochs higher)")
        rep.section("Training curves")
        groups = (("part 1 (upright MNIST; part 3's binarized VAE)", ("ae", "vae", "vae_binary")),
                  ("part 2 (rotated MNIST)", ("rot_vae", "rot_cvae", "rot_rvae", "rot_crvae")),
                  ("part 4 (pose-optimised AVAE)", ("avae",)))
        for label, names in groups:
            rep.figure(A.plot_training_curves({n: A.training_curves(curves[n]) for n in names},
                                              title=f"training curves, {label}"),
                       "loss, reconstruction and KL per epoch, nats/image (solid: training, dashed: validation)")
        rep.section("Files and timings")
        rep.table([[k, round(v, 1)] for k, v in steps.timings.items()], header=["step", "seconds"])
        rep.paragraph("Figures: " + ", ".join(sorted(p.name for p in figures.values())) + ". Each run directory "
                      "under runs/ can be analysed further, e.g. 'affinevae report " + str(runs_dir / "rot_rvae")
                      + " --out rvae.html' or 'affinevae plot " + str(runs_dir / "rot_crvae")
                      + " manifold --classes 6,9 --out m.png'.")
        rep.write(out / "index.html")
        return f"{out / 'index.html'}"

    steps.run("write the report index.html", write_index)
    total = time.perf_counter() - t_start
    log(f"demo finished in {total:.0f} s: open {out / 'index.html'}")
    return DemoResult(out=out, report=out / "index.html", figures=figures, runs=runs, metrics=metrics,
                      timings=dict(steps.timings), total_s=total, quick=quick)
