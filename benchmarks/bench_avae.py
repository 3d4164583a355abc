"""Affine VAE benchmark (run by hand; prints tables).

1. Rotation sweep: a VAE trained on upright digits vs its AVAE, mean test -ELBO every 30
   degrees over 0..360. Goal: the AVAE within 3% of its 0-degree value at every angle; the
   plain VAE climbing to a peak (near 120 degrees in the paper).
2. Training on randomly rotated digits, mean test -ELBO over random rotations, every model
   searched with the same search options: the pose-optimised AVAE vs (a) an AVAE around a VAE
   trained on random rotations without pose search vs (b) an AVAE around the upright VAE of 1.
   Goal: pose-optimised lowest.
3. Cost: ``align`` with the amortised start (pose head) vs a plain VAE ELBO evaluation of the
   same images (goal: at most 3x), and its mean ELBO vs an exhaustive search (30 restarts x
   20 Adam steps; goal: within 1 nat/image); first with the head fitted on searched poses, then
   after tuning head and VAE together on the ELBO at the head's own poses (the consensus of
   ``--amortise-views`` quarter-turn views, on ``--amortise-n`` upright digits turned anew every
   epoch; about 70 s an epoch on one thread; cached in ``--cache``). ``--model DIR`` times a
   saved AVAE instead, e.g. the one ``benchmarks/small_head.py`` makes from that tuned model
   (a cheaper head and a pose refiner)::

       python benchmarks/bench_avae.py --sections 3 --model /tmp/bench/small --repeats 5

Quick run::

    python benchmarks/bench_avae.py --n-train 3000 --n-test 200 --epochs 4

Timings use ``--threads`` intra-op threads (default 1: the CPU of a shared machine).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import affinevae as av
from affinevae.models.avae import AVAE, AVAEConfig
from affinevae.pose import load_pose_record
from affinevae.pose import HeadTrainConfig, PoseHead, SearchConfig, fit_pose_head, seeded
from affinevae.sweep import SweepConfig, rotate_images, rotation_sweep
from affinevae.training import TrainConfig, fit


def vae_options(args) -> dict:
    if args.arch == "mlp":
        return dict(encoder="mlp", decoder="mlp", hidden=[512, 256], latent_dim=args.latent_dim)
    return dict(encoder="conv", decoder="conv", channels=[16, 32], hidden=[256], latent_dim=args.latent_dim)


def train(model, data, args, epochs=None, out=None):
    t = time.perf_counter()
    res = fit(model, data, TrainConfig(epochs=epochs or args.epochs, batch_size=args.batch_size, lr=args.lr,
                                       progress=False, checkpoint=False, val_split=0.0, seed=args.seed), out=out)
    last = res.history[-1]
    print(f"    trained {model.family} on {len(data)} images, {len(res.history)} epochs in {time.perf_counter() - t:.0f} s "
          f"(last train loss {last['train_loss']:.1f})", flush=True)
    return model.eval()


def trained(name: str, build, data, args, epochs=None):
    """Train ``build()`` on ``data``, or load it from ``--cache DIR/name`` when saved there by an earlier run."""
    if args.cache:
        path = Path(args.cache) / name
        if (path / "model.json").exists():
            print(f"    loaded {name} from {path}")
            return av.load(path).eval()
    return train(build(), data, args, epochs, out=Path(args.cache) / name if args.cache else None)


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def time_ratio(fn, base, repeats: int) -> float:
    """min time of ``fn`` / min time of ``base``, the two run alternately (a shared machine's
    slow spells then hit both rather than one)."""
    fn(), base()  # warm-up
    t_fn, t_base = [], []
    for _ in range(repeats):
        for f, acc in ((base, t_base), (fn, t_fn)):
            t = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t)
    return min(t_fn) / min(t_base)


def maybe_binarized(data, args):
    """``data`` thresholded at ``--binarize`` (after any rotation), or unchanged."""
    return data.binarized(args.binarize) if args.binarize is not None else data


def upright_train(args):
    return maybe_binarized(av.data.load_mnist("train", n=args.n_train), args)


def rotated_train(args):
    return maybe_binarized(av.data.rotated_mnist("train", n=args.n_train, full_circle=True, seed=args.seed), args)


def rotated_test(args, seed_offset=1):
    return maybe_binarized(av.data.rotated_mnist("test", n=args.n_test, full_circle=True, seed=args.seed + seed_offset),
                           args)


def tag(args) -> str:
    """Cache-name suffix for the options that change the trained models."""
    return "-bin" if args.binarize is not None else ""


def section_sweep(args, out: dict):
    print("\n== 1. rotation sweep: VAE trained on upright digits vs its AVAE ==", flush=True)
    torch.manual_seed(args.seed)
    vae = trained("vae-upright" + tag(args), lambda: av.build_model("vae", **vae_options(args)), upright_train(args),
                  args)
    search = SearchConfig(restarts=args.restarts, keep=args.keep, steps=args.steps)
    models = {"vae": vae, "avae": AVAE(vae, pose_head=False, search=search)}
    test = av.data.load_mnist("test", n=args.n_test)
    angles = list(range(0, 361, 30))  # degrees, as printed
    t = time.perf_counter()
    res = rotation_sweep(models, test.images, test.labels, angles=np.radians(angles),
                         config=SweepConfig(seed=args.seed, binarize=args.binarize))
    print(f"    swept in {time.perf_counter() - t:.0f} s ({args.n_test} test images, search {args.restarts} restarts, "
          f"keep {args.keep}, {args.steps} steps)")
    rel = res.relative()
    print(f"{'angle':>6} {'vae':>9} {'avae':>9} {'vae/0deg':>9} {'avae/0deg':>10}")
    for j, a in enumerate(angles):
        print(f"{a:6d} {res.neg_elbo[0, j]:9.2f} {res.neg_elbo[1, j]:9.2f} {rel[0, j]:9.3f} {rel[1, j]:10.3f}")
    # blur control: the plain VAE on upright digits that went through the same interpolation
    # (rotated by the angle and back): how much of any rise is interpolation blur, not pose
    x = torch.as_tensor(test.images)
    control = []
    for a in angles:
        xb = rotate_images(rotate_images(x, math.radians(a)), -math.radians(a))
        if args.binarize is not None:
            xb = (xb > args.binarize).float()
        with torch.no_grad(), seeded(args.seed, xb.device):
            control.append(-float(vae(xb).elbo.mean()))
    print("    blur control (plain VAE, upright digits rotated by the angle and back, i.e. interpolated twice like "
          "the AVAE's canonical view): " + " ".join(f"{a}:{c:.1f}" for a, c in zip(angles, control)))
    out["sweep_blur_control"] = control
    worst = float(np.abs(rel[1] - 1).max())
    peak = angles[int(np.argmax(res.neg_elbo[0]))]
    print(f"    AVAE worst deviation from 0 deg: {100 * worst:.1f}% (goal <= 3%); plain VAE peaks at {peak} deg")
    if args.bicubic_too:
        res_b = rotation_sweep(models, test.images, test.labels, angles=np.radians(angles),
                               config=SweepConfig(seed=args.seed, interpolation="bicubic", binarize=args.binarize))
        rb = res_b.relative()
        print("    same with bicubic-rotated test images (less interpolation blur):")
        print("    " + " ".join(f"{a}:{100 * (rb[1, j] - 1):+.1f}%" for j, a in enumerate(angles)))
        out["sweep_bicubic_avae_worst_pct"] = float(100 * np.abs(rb[1] - 1).max())
    out["sweep"] = {"angles": angles, "vae": res.neg_elbo[0].tolist(), "avae": res.neg_elbo[1].tolist(),
                    "avae_worst_pct": 100 * worst, "vae_peak_deg": peak}
    return vae


def section_training(args, out: dict, upright_vae):
    print("\n== 2. training on randomly rotated digits (test: random rotations) ==", flush=True)
    data = rotated_train(args)
    train_search = SearchConfig(restarts=args.train_restarts, keep=1, steps=args.train_steps, lr=args.train_lr)
    search = SearchConfig(restarts=args.restarts, keep=args.keep, steps=args.steps)

    def build_posed():
        return AVAE(av.build_model("vae", **vae_options(args)),
                    config=AVAEConfig(search=search, train_search=train_search, warm_start=args.warm_start))

    torch.manual_seed(args.seed)
    posed_name = (f"avae-posed{tag(args)}-r{args.train_restarts}-s{args.train_steps}-lr{args.train_lr:g}"
                  f"{'-ws' if args.warm_start else ''}-e{args.avae_epochs or args.epochs}")
    posed = trained(posed_name, build_posed, data, args, epochs=args.avae_epochs or args.epochs)
    torch.manual_seed(args.seed)
    rot_vae = trained("vae-rotated" + tag(args), lambda: av.build_model("vae", **vae_options(args)), data, args)
    if upright_vae is None:
        torch.manual_seed(args.seed)
        upright_vae = trained("vae-upright" + tag(args), lambda: av.build_model("vae", **vae_options(args)),
                              upright_train(args), args)
    test = rotated_test(args)
    x = torch.as_tensor(test.images)
    rows = [("pose-optimised AVAE", posed),
            ("(a) AVAE of VAE trained on rotations", AVAE(rot_vae, pose_head=False, search=search)),
            ("(b) AVAE of VAE trained upright", AVAE(upright_vae, pose_head=False, search=search))]
    print(f"{'model':40} {'-ELBO searched':>15} {'-ELBO as is':>12}")
    results = {}
    for name, model in rows:
        cfg = search.replace(use_head=False)  # the same search for every model
        r = model.align(x, None, cfg)
        results[name] = (-float(r.elbo_after.mean()), -float(r.elbo_before.mean()))
        print(f"{name:40} {results[name][0]:15.2f} {results[name][1]:12.2f}", flush=True)
    best = min(results, key=lambda k: results[k][0])
    print(f"    lowest: {best} (goal: pose-optimised)")
    rec = posed.pose_record()
    if rec is None and args.cache and (Path(args.cache) / posed_name / "poses.npz").exists():
        rec = load_pose_record(Path(args.cache) / posed_name)
    if rec is not None:
        # learned canonical orientation = found angle minus the true rotation of the training image
        learned = np.degrees(np.angle(np.exp(1j * (rec.angle - data.angle[None, :rec.angle.shape[1]]))))
        print("    learned rotation (found - true angle) per class at epochs "
              f"{rec.epochs[0]}, {rec.epochs[len(rec.epochs) // 2]}, {rec.epochs[-1]}: counts in 30-degree bins from -180")
        for c in range(10):
            sel = data.labels[:rec.angle.shape[1]] == c
            rows = [np.histogram(learned[e][sel], bins=12, range=(-180, 180))[0].tolist()
                    for e in (0, len(rec.epochs) // 2, len(rec.epochs) - 1)]
            print(f"      {c}: " + "  ->  ".join(" ".join(f"{v:3d}" for v in r) for r in rows))
    out["training"] = {k: {"searched": v[0], "as_is": v[1]} for k, v in results.items()}
    # the pose-optimised AVAE has seen interpolated (rotated) digits: its sweep on upright test digits
    up = av.data.load_mnist("test", n=args.n_test)
    angles = list(range(0, 361, 30))  # degrees, as printed
    res = rotation_sweep({"posed": posed}, up.images, up.labels, angles=np.radians(angles),
                         config=SweepConfig(seed=args.seed, search=search.replace(use_head=False), binarize=args.binarize))
    rel = res.relative()[0]
    print("    sweep of the pose-optimised AVAE on upright test digits (-ELBO, change vs 0 deg):")
    print("    " + " ".join(f"{a}:{v:.1f}({100 * (r - 1):+.1f}%)" for a, v, r in zip(angles, res.neg_elbo[0], rel)))
    print(f"    worst deviation {100 * np.abs(rel - 1).max():.1f}% (goal <= 3%)")
    out["posed_sweep"] = {"angles": angles, "neg_elbo": res.neg_elbo[0].tolist(), "worst_pct": float(100 * np.abs(rel - 1).max())}
    return posed, data


def section_cost(args, out: dict, posed: AVAE, data):
    print("\n== 3. cost of align with the amortised start vs plain VAE evaluation ==", flush=True)
    if args.head_channels or args.head_hidden or args.head_hypotheses:
        changes = {}
        if args.head_channels:
            changes["head_channels"] = tuple(int(v) for v in args.head_channels.split(","))
        if args.head_hidden:
            changes["head_hidden"] = args.head_hidden
        if args.head_hypotheses:
            changes["head_hypotheses"] = args.head_hypotheses
        cfg = posed.config.replace(**changes)
        posed.config = cfg
        torch.manual_seed(args.seed)
        posed.head = PoseHead(cfg.image_shape, posed.transform, cfg.search.ranges(), channels=tuple(cfg.head_channels),
                              hidden=cfg.head_hidden, hypotheses=cfg.head_hypotheses)
        posed.head_trained.fill_(0)
        print(f"    new pose head: channels {cfg.head_channels}, hidden {cfg.head_hidden}, {cfg.head_hypotheses} "
              f"hypotheses, {sum(p.numel() for p in posed.head.parameters())} parameters")
    if args.head_fit_n:
        t = time.perf_counter()
        sub = data.subset(slice(0, args.head_fit_n))
        found = posed.align(sub.images, None, SearchConfig(restarts=args.restarts, keep=args.keep, steps=args.steps,
                                                          report_before=False))
        torch.manual_seed(args.seed)
        losses = fit_pose_head(posed, sub.images, found.params, HeadTrainConfig(epochs=args.head_epochs, augment_rotation=True))
        print(f"    fit_pose_head on {len(sub)} searched training images (rotation-augmented, {args.head_epochs} epochs): "
              f"loss {losses[0]:.3f} -> {losses[-1]:.3f} in {time.perf_counter() - t:.0f} s")
    test = rotated_test(args, seed_offset=2)
    x = torch.as_tensor(test.images)
    out["cost"] = {"search-fitted head": cost_table(posed, x, args)}
    if args.amortise_epochs:
        name = f"avae-posed{tag(args)}-amortised-n{args.amortise_n}-e{args.amortise_epochs}-v{args.amortise_views}"
        path = Path(args.cache) / name if args.cache else None
        if path is not None and (path / "model.json").exists():
            posed = av.load(path).eval()
            print(f"\n    loaded {name} from {path}; the same table for the tuned model:")
        else:
            t = time.perf_counter()
            upright = maybe_binarized(av.data.load_mnist("train", n=args.amortise_n), args)
            torch.manual_seed(args.seed)
            hist = fit_pose_head(posed, upright.images,
                                 config=HeadTrainConfig(target="elbo", tune_model=True, epochs=args.amortise_epochs,
                                                        lr=1e-3, seed=args.seed, augment_rotation=True,
                                                        views=args.amortise_views))
            print(f"\n    fit_pose_head(target='elbo', tune_model=True, augment_rotation=True, views={args.amortise_views}) "
                  f"on {len(upright)} upright "
                  f"training digits, {args.amortise_epochs} epochs in {time.perf_counter() - t:.0f} s: -ELBO at the "
                  f"head's poses {hist[0]:.1f} -> {hist[-1]:.1f}; the same table for the tuned model:", flush=True)
            if path is not None:
                posed.save(path)
        out["cost"]["ELBO-tuned head and VAE"] = cost_table(posed, x, args)


def cost_table(model: AVAE, x, args) -> dict:
    """Time ``align`` configurations on ``x`` against a plain evaluation of the inner VAE and
    compare their mean ELBO with an exhaustive search; prints and returns the table."""
    chunk = 4096
    t = time.perf_counter()
    exhaustive = model.align(x, None, SearchConfig(restarts=30, keep=args.exhaustive_keep, steps=20, use_head=False,
                                                   report_before=False, chunk=chunk))
    t_ex = time.perf_counter() - t
    ref = float(exhaustive.elbo_after.mean())
    vae = model.vae

    def plain():
        with torch.no_grad(), seeded(0, x.device):
            for i in range(0, len(x), chunk):
                vae(x[i:i + chunk])

    t_plain = best_time(plain, args.repeats)
    print(f"    {len(x)} rotated test images; plain VAE ELBO evaluation {1e3 * t_plain:.1f} ms; exhaustive search "
          f"(30 restarts, keep {args.exhaustive_keep}, 20 steps) {t_ex:.1f} s, mean ELBO {ref:.2f}")
    refined = getattr(model, "refiner", None) is not None and int(model.refiner_trained) == 1
    configs = [
        ("head only (best hypothesis)", SearchConfig(restarts=1, steps=0, include_identity=False)),
        ("head only, 4 views", SearchConfig(restarts=1, steps=0, include_identity=False, head_views=4)),
        ("head, 2 hypotheses", SearchConfig(restarts=2, keep=1, steps=0, include_identity=False, head_starts=2)),
        ("head, 4 views, 2 hypotheses", SearchConfig(restarts=2, keep=1, steps=0, include_identity=False,
                                                     head_starts=2, head_views=4)),
        ("head, 4 views, 3 hypotheses", SearchConfig(restarts=3, keep=1, steps=0, include_identity=False,
                                                     head_starts=3, head_views=4)),
        ("4 views, 2 hyp. if unsure (0.9)", SearchConfig(restarts=2, keep=1, steps=0, include_identity=False,
                                                         head_starts=2, head_views=4, head_trust=0.9)),
        ("4 views, 3 hyp. if unsure (0.9)", SearchConfig(restarts=3, keep=1, steps=0, include_identity=False,
                                                         head_starts=3, head_views=4, head_trust=0.9)),
        ("4 views, 2 hyp.+1 step if unsure", SearchConfig(restarts=2, keep=1, steps=1, include_identity=False,
                                                          head_starts=2, head_views=4, head_trust=0.9)),
        ("4 views, search if unsure (0.9)", SearchConfig(restarts=8, keep=1, steps=5, head_views=4, head_trust=0.9)),
        ("head 2 hyp. + identity, 3 steps", SearchConfig(restarts=3, keep=1, steps=3, head_starts=2)),
        ("no head: 8 restarts, 5 steps", SearchConfig(restarts=8, keep=1, steps=5, use_head=False)),
    ]
    if refined:  # the rows above correct the head's first start with the refiner; these do not
        configs[1:1] = [
            ("head only, 4 views, no refiner", SearchConfig(restarts=1, steps=0, include_identity=False, head_views=4,
                                                            use_refiner=False)),
            ("4 views, 2 hyp. if unsure, no ref.", SearchConfig(restarts=2, keep=1, steps=0, include_identity=False,
                                                                head_starts=2, head_views=4, head_trust=0.9,
                                                                use_refiner=False))]
        print("    (the model has a trained pose refiner: every row with a head start uses it unless it says "
              "'no refiner')")
    print(f"{'align config':36} {'time/plain':>10} {'w/o before':>11} {'ELBO gap (nats)':>16} {'>30deg off':>11}")
    rows = {}
    for name, cfg in configs:
        cfg = cfg.replace(chunk=chunk)
        r_full = time_ratio(lambda: model.align(x, None, cfg), plain, args.repeats)
        r_nob = time_ratio(lambda: model.align(x, None, cfg.replace(report_before=False)), plain, args.repeats)
        r = model.align(x, None, cfg)
        gap = ref - float(r.elbo_after.mean())
        off = np.degrees(np.abs(np.angle(np.exp(1j * (r.angle.numpy() - exhaustive.angle.numpy())))))
        rows[name] = {"ratio": r_full, "ratio_without_before": r_nob, "gap": gap,
                      "neg_elbo": -float(r.elbo_after.mean()), "frac_off_30": float((off > 30).mean())}
        print(f"{name:36} {r_full:9.2f}x {r_nob:10.2f}x {gap:16.2f} {100 * (off > 30).mean():10.1f}%",
              flush=True)
    print("    goal: <= 3x plain and within 1 nat/image of the exhaustive search "
          "('w/o before' skips elbo_before, itself one plain evaluation)")
    return {"plain_ms": 1e3 * t_plain, "exhaustive_elbo": ref, "configs": rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--epochs", type=int, default=10, help="epochs of the plain VAEs")
    p.add_argument("--avae-epochs", type=int, default=0, help="epochs of the pose-optimised AVAE (0: --epochs)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--arch", default="conv", choices=["conv", "mlp"])
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--restarts", type=int, default=16, help="test-time search restarts (sections 1, 2)")
    p.add_argument("--keep", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--train-restarts", type=int, default=8)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--train-lr", type=float, default=0.05, help="Adam lr of the training search (radians)")
    p.add_argument("--warm-start", action="store_true", help="the training search also starts from each image's "
                                                            "pose found in the previous epoch")
    p.add_argument("--binarize", nargs="?", type=float, const=0.5, default=None,
                   help="threshold every image (after rotating) at this value (default 0.5): removes resampling blur")
    p.add_argument("--head-fit-n", type=int, default=2000, help="searched training images for fit_pose_head (0: skip)")
    p.add_argument("--head-epochs", type=int, default=30)
    p.add_argument("--amortise-n", type=int, default=60000,
                   help="section 3: upright training digits (turned at random every epoch) for the ELBO tuning")
    p.add_argument("--amortise-views", type=int, default=4, choices=[1, 2, 4],
                   help="section 3: quarter-turn views whose consensus the ELBO tuning trains")
    p.add_argument("--amortise-epochs", type=int, default=16,
                   help="section 3: then tune head and VAE on the ELBO at the head's poses for this many epochs "
                        "(fit_pose_head target='elbo', tune_model=True) and time again (0: skip)")
    p.add_argument("--head-channels", help="section 3: replace the pose head by one with these conv widths, e.g. 32,64")
    p.add_argument("--head-hidden", type=int, default=0, help="section 3: hidden width of the replacement head")
    p.add_argument("--head-hypotheses", type=int, default=0, help="section 3: hypotheses of the replacement head")
    p.add_argument("--model", help="section 3: time this saved AVAE instead (e.g. benchmarks/small_head.py's output)")
    p.add_argument("--exhaustive-keep", type=int, default=30, help="restarts refined in the exhaustive search")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats (best of)")
    p.add_argument("--sections", default="1,2,3")
    p.add_argument("--bicubic-too", action="store_true", help="section 1 also with bicubic-rotated test images")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--cache", help="save trained models here and reuse them on the next run (same sizes!)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sections = {int(s) for s in args.sections.split(",") if s.strip()}
    print(f"bench_avae: torch {torch.__version__}, {args.threads} thread(s), arch {args.arch}, n_train {args.n_train}, "
          f"n_test {args.n_test}, epochs {args.epochs}, binarize {args.binarize}, training search {args.train_restarts} "
          f"restarts, {args.train_steps} steps, lr {args.train_lr:g}, warm start {args.warm_start}")
    out: dict = {"args": vars(args)}
    t0 = time.perf_counter()
    upright = section_sweep(args, out) if 1 in sections else None
    if args.model and 3 in sections:  # only the cost table of a saved model (e.g. from small_head.py)
        print(f"\n== 3. cost of align with the amortised start vs plain VAE evaluation: {args.model} ==", flush=True)
        x = torch.as_tensor(rotated_test(args, seed_offset=2).images)
        out["cost"] = {args.model: cost_table(av.load(args.model).eval(), x, args)}
        sections -= {3}
    if sections & {2, 3}:  # section 3 times the pose-optimised AVAE that section 2 trains
        posed, data = section_training(args, out, upright)
    if 3 in sections:
        section_cost(args, out, posed, data)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
