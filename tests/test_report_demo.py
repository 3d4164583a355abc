"""The HTML report (affinevae.report, `affinevae report`) and the demo (`affinevae demo --quick`)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import affinevae as av
from affinevae.cli import main
from affinevae.errors import AffineVAEError
from affinevae.models.base import build_model
from affinevae.report import HtmlReport, write_report
from affinevae.runs import Run
from affinevae.sweep import load_sweep_csv

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Checker(HTMLParser):
    """Collects tags, checks they balance, and records every src/href."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.links, self.images, self.text = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href"):
                self.links.append(value or "")
                if tag == "img" and name == "src":
                    self.images.append(value or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def check_html(path) -> _Checker:
    """Parse an HTML file: balanced tags, self-contained (no external or file links), every image decodes."""
    text = Path(path).read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    c = _Checker()
    c.feed(text)
    c.close()
    assert not c.errors, c.errors[:3]
    assert c.stack == [], f"unclosed tags: {c.stack}"
    for link in c.links:
        assert link.startswith("#") or link.startswith("data:image/png;base64,"), f"external or file link: {link[:60]}"
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|file:|//)", text, re.I)
    for src in c.images:
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(png)) as im:
            im.verify()
        with Image.open(io.BytesIO(png)) as im:
            assert im.format == "PNG" and im.width > 20
    return c


@pytest.fixture(scope="module")
def runs(tiny_runs, tmp_path_factory):
    """The session's tiny VAE run on MNIST, copied into a directory whose name needs HTML escaping, and its
    rVAE run on rotated MNIST."""
    vae = tmp_path_factory.mktemp("report") / "r&d <vae>"
    shutil.copytree(tiny_runs.path("vae"), vae)
    return {"vae": vae, "rvae": tiny_runs.path("rvae")}


def test_html_report_builder_escapes_and_embeds(tmp_path):
    from affinevae.plots import new_figure

    rep = HtmlReport("a <b> & c", subtitle="<script>alert(1)</script>")
    rep.section("One & two")
    rep.paragraph("x < y")
    rep.table([{"name": "<i>", "value": 1.5}, {"name": "z", "extra": True}])
    fig, ax = new_figure(1, 1)
    ax[0, 0].plot([0, 1], [1, 0])
    rep.figure(fig, caption="a 'line' \"here\"")
    rep.details("more", lambda r: r.preformatted("{\"a\": \"<b>\"}"))
    path = rep.write(tmp_path / "r.html")
    text = path.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text and "a &lt;b&gt; &amp; c" in text
    assert "&lt;i&gt;" in text and 'href="#one-two"' in text
    c = check_html(path)
    assert len(c.images) == 1
    with pytest.raises(AffineVAEError, match="not a PNG"):
        rep.figure(b"GIF89a")


def test_write_report(runs, tmp_path):
    out = tmp_path / "report.html"
    lines = []
    res = write_report(runs["vae"], out, n=60, sweep_rotations=np.radians([0, 90, 180]), sweep_n=10, log=lines.append)
    assert res.path == out and out.exists()
    c = check_html(out)
    text = "".join(c.text)
    assert "r&d <vae>" in text  # the run name, escaped in the source, reads back intact
    for title in ("Reconstructions", "Latent space", "Latent statistics", "Generation", "Latent manifold", "Interpolation",
                  "Latent arithmetic", "Loss vs rotation", "Anomaly scores", "Denoising", "Metrics"):
        assert title in res.sections, (title, res.skipped)
    # what does not apply to a VAE says why, in the log and in a closing table
    assert "Learned vs true angle" not in res.sections
    assert res.skipped == {"Learned vs true angle": "the vae model learns no angle",
                           "Rotations during training": "the run keeps no poses.npz: only pose-optimised training "
                                                        "(avae) records its training images' angles"}
    assert "Analyses left out" in text and "does not apply" in text and "the vae model learns no angle" in text
    assert res.inapplicable == res.skipped and res.unavailable == {}
    assert "Training" in text and "Configuration" in text and "mean ELBO (nats/image)" in text
    # one figure per analysis section (the Metrics section is a table) plus the training curves
    assert len(c.images) == len(res.sections) - 1 + 1 and len(lines) == len(res.sections) + len(res.skipped)
    assert any(line.startswith("  Learned vs true angle: does not apply (") for line in lines)


def test_report_for_rvae_and_cli(runs, tmp_path, capsys):
    out = tmp_path / "rvae.html"
    assert main(["report", str(runs["rvae"]), "--out", str(out), "-n", "60", "--sweep-angles", "none", "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    c = check_html(out)
    text = "".join(c.text)
    assert "Learned vs true angle" in text and "circular correlation, learned vs true angle" in text
    assert 'id="loss-vs-rotation"' not in out.read_text()  # no such section: a row of the closing table
    assert "no rotations asked for (--sweep-angles none)" in text
    assert "60 (rotated-mnist's default)" in text  # the data's angle range (train.json has none: the default)


def test_a_report_on_data_without_true_angles_says_the_comparison_does_not_apply(runs, tmp_path):
    """An audit: an rVAE's report on images without true angles listed 'Learned vs true angle' as not
    available (an error), where it does not apply to such data."""
    res = write_report(runs["rvae"], tmp_path / "r.html", n=40, data="mnist", sweep_rotations=np.zeros(0))
    assert "Learned vs true angle" not in res.sections and "Learned vs true angle" not in res.unavailable
    assert res.inapplicable["Learned vs true angle"] == ("the data hold no true angles (an .npz 'angle' array, or "
                                                         "rotated-mnist)")


def test_report_cli_passes_its_degrees_as_radians(runs, tmp_path, monkeypatch):
    """--sweep-angles takes degrees on the command line; write_report gets them in radians."""
    from affinevae.cli import report as report_cli

    seen = {}

    def stop(run_dir, out, **kw):
        seen.update(kw)
        raise AffineVAEError("stopped here")
    monkeypatch.setattr(report_cli, "write_report", stop)
    assert main(["report", str(runs["vae"]), "--out", str(tmp_path / "x.html"), "--sweep-angles", "0:181:90"]) == 2
    np.testing.assert_allclose(seen["sweep_rotations"], [0.0, np.pi / 2, np.pi])
    assert main(["report", str(runs["vae"]), "--out", str(tmp_path / "x.html"), "--sweep-angles", "none"]) == 2
    assert len(seen["sweep_rotations"]) == 0


def test_report_errors(runs, tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "x.html")]) == 2
    assert "no such run" in capsys.readouterr().err
    assert main(["report", str(runs["vae"]), "--out", str(tmp_path / "x.html"), "--sweep-angles", "0:10:0"]) == 2
    assert "--sweep-angles '0:10:0': step must be > 0" in capsys.readouterr().err  # its own option named
    assert main(["report", str(runs["vae"]), "--out", str(tmp_path / "x.html"), "--sweep-angles", "0:721:30"]) == 2
    assert "--sweep-angles '0:721:30': angles must lie within -360..360 degrees" in capsys.readouterr().err
    small = tmp_path / "small.npy"  # 16x16 images for a model of 28x28 ones: refused before any analysis
    np.save(small, np.random.default_rng(0).random((20, 16, 16), dtype=np.float32))
    assert main(["report", str(runs["vae"]), "--data", str(small), "--out", str(tmp_path / "s.html")]) == 2
    assert "image shape 1x16x16 (C x H x W) but the model expects 1x28x28" in capsys.readouterr().err
    assert not (tmp_path / "s.html").exists()
    model_only = tmp_path / "model_only"
    build_model("vae", image_shape=[1, 28, 28], latent_dim=2).save(model_only)
    with pytest.raises(AffineVAEError, match="records no data"):
        write_report(model_only, tmp_path / "y.html")
    # the rotations are radians; the former degree keyword is refused in one line naming the new one
    with pytest.raises(AffineVAEError, match=r"^write_report: sweep_angles \(degrees\) is now sweep_rotations, in "
                                             r"radians \(e\.g\. sweep_rotations=np\.radians\(range\(0, 361, 30\)\)\)$"):
        write_report(model_only, tmp_path / "y.html", data="mnist", n=30, sweep_angles=[0, 90])
    with pytest.raises(AffineVAEError, match=r"^write_report: sweep_rotations must be finite numbers \(radians\)"):
        write_report(model_only, tmp_path / "y.html", data="mnist", n=30, sweep_rotations=[0.0, np.inf])
    with pytest.raises(AffineVAEError, match=r"^write_report: an angle of 90 is more than a full turn in radians"):
        write_report(model_only, tmp_path / "y.html", data="mnist", n=30, sweep_rotations=[0, 90])  # degrees
    assert not (tmp_path / "y.html").exists()
    res = write_report(model_only, tmp_path / "y.html", data="mnist", n=30, sweep_rotations=[])
    check_html(res.path)


def test_demo_quick(tmp_path, capsys):
    torch.set_num_threads(2)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"\[15/15\] write the report", printed) and "done in" in printed and "demo finished" in printed
    c = check_html(out / "index.html")
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) >= 15 and len(c.images) >= len(pngs)
    for p in pngs:
        with Image.open(p) as im:
            im.verify()
    for name in ("ae_vs_vae_latent_stats", "ae_vs_vae_samples", "ae_vs_vae_morphing", "rotated_latent_space",
                 "manifold_rvae", "manifold_crvae", "rotated_learned_vs_true_angle", "loss_vs_rotation_binary",
                 "loss_vs_rotation_grey", "avae_rotation_histograms"):
        assert (out / f"{name}.png").exists(), name
    text = "".join(c.text)
    for section in ("Autoencoder vs variational autoencoder", "Rotated digits", "Loss vs rotation",
                    "Rotations found during pose-optimised training", "Training curves"):
        assert section in text
    assert (out / "runs" / "avae" / "poses.npz").exists() and (out / "runs" / "rot_crvae" / "train.json").exists()
    # the binarized VAE's run remembers its data and threshold, so `affinevae report` analyses the right images
    binary = Run.open(out / "runs" / "vae_binary")
    assert binary.binarize == 0.5 and binary.meta["data"] == "mnist"
    assert set(np.unique(binary.data(n=20).images)) <= {0.0, 1.0}
    # the pose-optimised AVAE's run holds its found poses: one row per epoch, a column per training image
    avae = Run.open(out / "runs" / "avae")
    record = avae.pose_record()
    assert record is not None and record.angle.shape[0] == avae.epochs_done == 2
    assert 150 < record.angle.shape[1] <= avae.meta["n"] == 200 and binary.pose_record() is None
    assert binary.training_angles() is None  # upright MNIST: no rotations to recover
    # the story of part 3 holds even at the quick budget: the AVAE's loss moves less with rotation than the VAE's
    sweep = load_sweep_csv(out / "loss_vs_rotation_binary.csv")
    rel = sweep.relative()
    assert sweep.names[0] == "VAE" and np.abs(rel[1] - 1).max() < np.abs(rel[0] - 1).max()


def test_demo_never_replaces_a_run_it_did_not_make(tmp_path, capsys):
    """`demo --force` into a folder whose runs/ holds a user's run was deleting that run; the demo
    now replaces only runs whose train.json says a demo made them, and refuses before writing."""
    from affinevae.demo import DEMO_RUN_KEY, is_demo_run

    user = tmp_path / "exp" / "runs" / "vae"
    user.mkdir(parents=True)
    (user / "train.json").write_text(json.dumps({"epochs_done": 3, "data": "mnist"}))
    (user / "NOTES.txt").write_text("mine")
    before = sorted(p.name for p in (tmp_path / "exp").rglob("*"))
    assert main(["demo", "--quick", "--out", str(tmp_path / "exp"), "--force"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds vae, not made by a demo" in err[0]
    assert sorted(p.name for p in (tmp_path / "exp").rglob("*")) == before
    assert not is_demo_run(user)
    (user / "train.json").write_text(json.dumps({"epochs_done": 3, DEMO_RUN_KEY: True}))
    assert is_demo_run(user)
    # nor writes its runs inside a run directory (as train and amortise refuse to)
    (user / "model.json").write_text("{}")
    assert main(["demo", "--quick", "--out", str(user / "demo")]) == 2
    assert "lies inside the run or model directory" in capsys.readouterr().err
    # a QA audit: a demo refused at its first step (a memory limit) left an empty --out folder behind
    assert main(["demo", "--quick", "--max-memory", "10M", "--out", str(tmp_path / "fresh")]) == 2
    assert "more than the 10.0 MiB of memory available" in capsys.readouterr().err
    assert not (tmp_path / "fresh").exists()
    assert not (user / "demo").exists()


def test_a_full_circle_model_is_swept_without_a_search_around_it(tmp_path, monkeypatch):
    """Its loss is the same at every turn by construction: the report's sweep leaves out the AVAE row
    (most of the report's time on a full-circle run), and keeps it for a model with a preferred orientation."""
    from affinevae import analysis

    full = av.build_model("rvae", latent_dim=2, invariances=("rotation",), rotation_mode="full", seed=0)
    assert full.full_circle and not av.build_model("rvae", latent_dim=2, invariances=("rotation",)).full_circle
    assert not av.build_model("vae", latent_dim=2).full_circle
    data = av.data.rotated_mnist("train", n=64, full_circle=True, seed=0)
    av.fit(full, data, av.TrainConfig(epochs=1, batch_size=32, progress=False, val_split=0.0),
           out=tmp_path / "run", meta={"data": "rotated-mnist", "n": 64, "max_angle": 3.141592653589793})
    swept = []
    real = analysis.loss_vs_rotation
    monkeypatch.setattr(analysis, "loss_vs_rotation", lambda models, *a, **k: (swept.append(list(models)),
                                                                              real(models, *a, **k))[1])
    res = write_report(tmp_path / "run", tmp_path / "r.html", n=20, sweep_rotations=np.radians([0, 90]), sweep_n=4)
    assert "Loss vs rotation" in res.sections and swept == [["rvae"]]
