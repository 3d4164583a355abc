"""Fault campaign: every CLI command against a table of bad inputs, crafted files and unsafe outputs.

Each failing case must exit 2 with exactly one ``affinevae: error:`` line on stderr (warnings are
``affinevae: warning:`` lines), no traceback, and leave every pre-existing file unchanged (sha256
before/after) and no new file behind. Commands run in-process (``affinevae.cli.main``) with the
memory limit set to 2 GiB (``AFFINEVAE_MAX_MEMORY``), so the resource cases are the same on any
machine. The process-level cases (``kill -9`` during training and during a checkpoint write, then
``--resume``; two trainings on one ``--out``) use subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from affinevae.cli import main
from affinevae.errors import AffineVAEError
from affinevae.outputs import LOCK_FILE, RunLock, check_output

SRC = str(Path(__file__).resolve().parents[1] / "src")
TRAIN = ["--model", "vae", "--latent-dim", "2", "--encoder", "mlp", "--decoder", "mlp", "--hidden", "16",
         "--batch-size", "8", "--val-split", "0", "--device", "cpu", "--no-progress"]


def _tiff_bomb(path: Path, side: int = 60000) -> None:
    """A ~200-byte TIFF whose one deflate strip declares a side x side 8-bit page."""
    data = zlib.compress(b"\0" * 64)
    entries = [(256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 8), (262, 3, 1), (273, 4, 0),
               (277, 3, 1), (278, 4, side), (279, 4, len(data))]
    ifd_size = 2 + 12 * len(entries) + 4
    data_at = 8 + ifd_size
    body = struct.pack("<H", len(entries))
    for tag, typ, val in entries:
        val = data_at if tag == 273 else val
        body += struct.pack("<HHI", tag, typ, 1) + (struct.pack("<HH", val, 0) if typ == 3 else struct.pack("<I", val))
    path.write_bytes(b"II*\0" + struct.pack("<I", 8) + body + struct.pack("<I", 0) + data)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Inputs good and bad, a tiny CLI-trained run and crafted copies of it (module-wide, read-only)."""
    h5py = pytest.importorskip("h5py")
    root = tmp_path_factory.mktemp("faults")
    rng = np.random.default_rng(0)
    good = rng.random((24, 12, 12)).astype(np.float32)
    np.save(root / "good.npy", good)
    stack = np.zeros((1, 48, 48), np.float32)
    stack[0, 10:14, 10:14] = stack[0, 30:34, 28:32] = 1.0
    np.save(root / "stack.npy", stack)
    bad = {"nan": good.copy(), "inf": good.copy()}
    bad["nan"][0, 0, 0], bad["inf"][1, 1, 1] = np.nan, np.inf
    for name, arr in {**bad, "rank5": good[None, None], "empty": good[:0], "complex": good.astype(np.complex64)}.items():
        np.save(root / f"{name}.npy", arr)
    np.save(root / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (root / "corrupt.npy").write_bytes(b"\x93NUMPY garbage" + bytes(range(200)))
    full = (root / "good.npy").read_bytes()
    (root / "truncated.npy").write_bytes(full[: len(full) // 3])
    (root / "corrupt.npz").write_bytes(b"PK\x03\x04" + b"\0" * 50)
    _tiff_bomb(root / "bomb.tif")
    secret = root / "secret.bin"
    secret.write_bytes(bytes(range(256)) * 8)
    with h5py.File(root / "plain.h5", "w") as f:
        f["images"] = good
    with h5py.File(root / "external.h5", "w") as f:
        f.create_dataset("images", shape=(8, 16, 16), dtype="u1", external=[(str(secret), 0, 2048)])
    with h5py.File(root / "virtual.h5", "w") as f:
        layout = h5py.VirtualLayout(shape=good.shape, dtype="f4")
        layout[:] = h5py.VirtualSource(str(root / "plain.h5"), "images", shape=good.shape)
        f.create_virtual_dataset("images", layout)
    with h5py.File(root / "extlink.h5", "w") as f:
        f["images"] = h5py.ExternalLink(str(root / "plain.h5"), "/images")
    with h5py.File(root / "huge.h5", "w") as f:  # 64 TB declared, nothing written
        f.create_dataset("images", shape=(1000, 131072, 131072), dtype="f4", chunks=(1, 256, 256))
    (root / "coords.csv").write_text("row,col\n12,12\n32,30\n")
    assert main(["patches", str(root / "stack.npy"), "--window", "12", "--coords", str(root / "coords.csv"),
                 "--out", str(root / "patches.npz"), "--no-progress"]) == 0
    with np.load(root / "patches.npz") as f:
        arrays = dict(f)
    arrays["centers"] = arrays["centers"] + 1000
    np.savez(root / "outside.npz", **arrays)
    np.savez(root / "halfframe.npz", **{**arrays, "centers": arrays["centers"] - 1000, "frames": arrays["frames"] + 0.5})
    assert main(["train", *TRAIN, "--data", str(root / "good.npy"), "--out", str(root / "run"), "--epochs", "1"]) == 0
    shutil.copytree(root / "run", root / "other")
    crafted = {
        "huge": lambda d: d.update(latent_dim=100_000_000),
        "mismatch": lambda d: d.update(latent_dim=3),
        "widths": lambda d: d.update(hidden=[17]),
    }
    for name, change in crafted.items():
        shutil.copytree(root / "run", root / name)
        desc = json.loads((root / name / "model.json").read_text())
        change(desc["config"])
        (root / name / "model.json").write_text(json.dumps(desc))
    shutil.copytree(root / "run", root / "future")  # a model.json of a newer format
    desc = json.loads((root / "future" / "model.json").read_text())
    desc["format_version"] = 99
    (root / "future" / "model.json").write_text(json.dumps(desc))
    from safetensors.torch import load_file, save_file

    shutil.copytree(root / "run", root / "nanw")  # the weights of a diverged training
    weights = load_file(str(root / "nanw" / "model.safetensors"))
    weights = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, str(root / "nanw" / "model.safetensors"))
    shutil.copytree(root / "run", root / "truncw")
    w = (root / "truncw" / "model.safetensors").read_bytes()
    (root / "truncw" / "model.safetensors").write_bytes(w[: len(w) // 2])
    for name in ("traversal", "pickled_opt", "empty_opt"):
        shutil.copytree(root / "run", root / name)
    info = json.loads((root / "traversal" / "train.json").read_text())
    info["optimizer"] = "../../../../secret.bin"
    (root / "traversal" / "train.json").write_text(json.dumps(info))
    opt = json.loads((root / "run" / "train.json").read_text())["optimizer"]
    (root / "pickled_opt" / opt).write_bytes(pickle.dumps(shutil.rmtree))
    (root / "empty_opt" / opt).write_bytes(b"")
    (root / "saved").mkdir()  # a model written by model.save(): no train.json
    for f in ("model.json", "model.safetensors"):
        shutil.copy(root / "run" / f, root / "saved" / f)
    (root / "link.npz").symlink_to(root / "other" / "model.safetensors")
    (root / "existing.npz").write_bytes(b"keep me")
    (root / "adir").mkdir()
    (root / "adir" / "keep.txt").write_text("keep")
    return root


def _snapshot(root: Path) -> dict:
    """sha256 of every file under ``root`` (lock files, which a refused resume may create, aside)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


def _fails_cleanly(root: Path, argv: list[str], capsys, match: str = "") -> str:
    before = _snapshot(root)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("affinevae: error:")]
    assert code == 2, (argv, err)
    assert len(errors) == 1, err
    assert all(ln.startswith("affinevae: ") for ln in lines), err
    assert "Traceback" not in err
    assert match.lower() in errors[0].lower(), errors[0]
    assert _snapshot(root) == before, f"files changed by {argv}"
    return errors[0]


@pytest.fixture(autouse=True)
def _memory_limit(monkeypatch):
    monkeypatch.setenv("AFFINEVAE_MAX_MEMORY", "2G")


# ------------------------------------------------------------------ bad data for every command reading images
BAD_DATA = {
    "nan": ("nan.npy", "nan or infinite"),
    "inf": ("inf.npy", "nan or infinite"),
    "rank5": ("rank5.npy", "rank-5"),
    "empty": ("empty.npy", "zero images"),
    "corrupt": ("corrupt.npy", "cannot read"),
    "truncated": ("truncated.npy", "cannot read"),
    "corrupt-npz": ("corrupt.npz", "cannot read"),
    "complex": ("complex.npy", "complex"),
    "pickled": ("pickled.npy", "pickled"),
    "h5-external-storage": ("external.h5:images", "outside the file"),
    "h5-virtual": ("virtual.h5:images", "virtual"),
    "h5-external-link": ("extlink.h5:images", "link to another file"),
    "h5-huge": ("huge.h5:images", "declares"),
    "tiff-bomb": ("bomb.tif", "would need"),
    "missing": ("nothing.npy", "not found"),
}
DATA_COMMANDS = {
    "train": lambda r, d: ["train", *TRAIN, "--data", d, "--out", f"{r}/new_run", "--epochs", "1"],
    "encode": lambda r, d: ["encode", f"{r}/run", "--data", d, "--out", f"{r}/codes.npz"],
    "align": lambda r, d: ["align", f"{r}/run", "--data", d, "--out", f"{r}/al.npz", "--restarts", "2", "--steps", "0"],
}
SOME_DATA = ("nan", "corrupt", "complex", "h5-external-storage", "tiff-bomb")
MORE_COMMANDS = {
    "amortise": lambda r, d: ["amortise", f"{r}/run", "--data", d, "--out", f"{r}/am", "--epochs", "1"],
    "sweep": lambda r, d: ["sweep", f"{r}/run", "--data", d, "--out", f"{r}/sw.csv", "--angles", "0,90"],
    "plot": lambda r, d: ["plot", f"{r}/run", "reconstructions", "--data", d, "--out", f"{r}/p.png"],
    "report": lambda r, d: ["report", f"{r}/run", "--data", d, "--out", f"{r}/r.html", "--quiet"],
}
CASES = [(c, b) for c in DATA_COMMANDS for b in BAD_DATA] + [(c, b) for c in MORE_COMMANDS for b in SOME_DATA]


@pytest.mark.parametrize("command,bad", CASES, ids=[f"{c}-{b}" for c, b in CASES])
def test_bad_data(world, capsys, command, bad):
    spec, match = BAD_DATA[bad]
    build = DATA_COMMANDS.get(command) or MORE_COMMANDS[command]
    _fails_cleanly(world, build(world, str(world / spec)), capsys, match)


@pytest.mark.parametrize("shape,option,hint", [((10, 1, 1), "--data", False), ((10, 4, 7), "--data", False),
                                               ((10, 20, 7), "--data", False), ((10, 1, 40), "--data", True),
                                               ((10, 4, 4), "--val-data", False)])
def test_train_refuses_images_too_small_for_the_models(tmp_path, capsys, shape, option, hint):
    from affinevae.defaults import MIN_IMAGE_SIZE

    np.save(tmp_path / "small.npy", np.random.default_rng(0).random(shape, dtype=np.float32))
    np.save(tmp_path / "ok.npy", np.random.default_rng(1).random((10, 8, 8), dtype=np.float32))
    data = ["--data", str(tmp_path / "small.npy")] if option == "--data" else [
        "--data", str(tmp_path / "ok.npy"), "--val-data", str(tmp_path / "small.npy")]
    line = _fails_cleanly(tmp_path, ["train", *TRAIN, *data, "--out", str(tmp_path / "run"), "--epochs", "1"], capsys,
                          f"small.npy: images of {shape[1]}x{shape[2]} pixels (data shape ({shape[0]}, 1, "
                          f"{shape[1]}, {shape[2]}), N x C x H x W) are too small: the models need at least "
                          f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}")
    assert ("--signal-axis" in line) == hint
    assert not (tmp_path / "run").exists()


def test_train_takes_8x8_images_and_short_1d_signals(tmp_path, capsys):
    """The smallest images pass, and 1-D signals (C, 1, L) keep their own minimum length."""
    np.save(tmp_path / "ok.npy", np.random.default_rng(1).random((10, 8, 8), dtype=np.float32))
    assert main(["train", *TRAIN, "--data", str(tmp_path / "ok.npy"), "--out", str(tmp_path / "a"), "--epochs", "1"]) == 0
    np.save(tmp_path / "spectra.npy", np.random.default_rng(2).random((10, 12), dtype=np.float32))
    assert main(["train", *TRAIN, "--data", str(tmp_path / "spectra.npy"), "--signal-axis", "1", "--out",
                 str(tmp_path / "b"), "--epochs", "1"]) == 0
    assert "trained vae on 10 images" in capsys.readouterr().out


def test_fit_refuses_images_too_small_for_the_models_as_train_does(tmp_path):
    """No model is built for images under MIN_IMAGE_SIZE on a side (``build_model``'s config check),
    so ``affinevae.fit`` refuses such images, for arrays, tensors, pairs and ImageSets, before any run
    directory is made; 8x8 images and 1-D signals (C, 1, L) of any length still train."""
    import affinevae as av
    from affinevae.data import ImageSet
    from affinevae.defaults import MIN_IMAGE_SIZE

    cfg = av.TrainConfig(epochs=1, batch_size=8, val_split=0.0, progress=False)
    rng = np.random.default_rng(0)
    small = rng.random((10, 4, 7), dtype=np.float32)
    mlp = dict(latent_dim=2, encoder="mlp", decoder="mlp", hidden=[16])
    # the model itself cannot be built for such images (1-D signals of any length can)
    with pytest.raises(AffineVAEError, match=r"^image_shape \(1, 4, 7\): images of 4x7 pixels are too small: "
                                             rf"the models need at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}$"):
        av.build_model("vae", image_shape=[1, 4, 7], **mlp)
    # ... but a model saved with such a shape (before the rule) still loads: nothing is lost
    from affinevae.models.vae import VAE

    VAE(image_shape=(1, 4, 7), **mlp).save(tmp_path / "old")
    assert av.load(tmp_path / "old").config.image_shape == (1, 4, 7)
    model = av.build_model("vae", image_shape=[1, 8, 8], **mlp)
    for data, where in [(small, "training images"), (torch.as_tensor(small), "training images"),
                        ((small, np.zeros(10, np.int64)), "training images"), (ImageSet(small), "training images"),
                        (ImageSet(small, source="small.npy"), "training images")]:
        # the smallest model takes 8x8 images: the data's shape is refused first (no model could take it)
        with pytest.raises(AffineVAEError, match=f"^{where}: image shape 1x4x7 .C x H x W. but the model expects 1x8x8$"):
            av.fit(model, data, cfg, out=tmp_path / "run")
        assert not (tmp_path / "run").exists()
    ok = rng.random((10, 8, 8), dtype=np.float32)
    eight = av.build_model("vae", image_shape=[1, 8, 8], **mlp)
    res = av.fit(eight, ok, cfg)
    assert len(res.history) == 1 and res.n_train == 10
    # 1-D signals are not images: a length-5 signal model trains (tabular rows, as the Estimator makes them)
    rows = av.build_model("vae", image_shape=[1, 1, 5], likelihood="gaussian", **mlp)
    res = av.fit(rows, rng.random((10, 1, 1, 5), dtype=np.float32), cfg)
    assert len(res.history) == 1 and res.n_train == 10


STACK_CASES = {"nan": "nan.npy", "complex": "complex.npy", "h5-external-storage": "external.h5:images",
               "h5-virtual": "virtual.h5:images", "h5-external-link": "extlink.h5:images", "h5-huge": "huge.h5:images",
               "tiff-bomb": "bomb.tif", "corrupt": "corrupt.npy", "empty": "empty.npy"}


@pytest.mark.parametrize("bad", list(STACK_CASES))
def test_bad_stacks_for_patches_and_map(world, capsys, bad):
    img = str(world / STACK_CASES[bad])
    _fails_cleanly(world, ["patches", img, "--window", "8", "--out", f"{world}/pp.npz", "--no-progress"], capsys)
    _fails_cleanly(world, ["map", f"{world}/run", "--image", img, "--patches", f"{world}/patches.npz",
                           "--out", f"{world}/maps"], capsys)


# ------------------------------------------------------------------ crafted runs for every command loading a model
RUN_COMMANDS = {
    "encode": lambda r, run: ["encode", run, "--data", f"{r}/good.npy", "--out", f"{r}/codes.npz"],
    "sample": lambda r, run: ["sample", run, "-n", "4", "--out", f"{r}/s.png"],
    "info": lambda r, run: ["info", run],
    "align": lambda r, run: ["align", run, "--data", f"{r}/good.npy", "--out", f"{r}/al.npz"],
    "amortise": lambda r, run: ["amortise", run, "--data", f"{r}/good.npy", "--out", f"{r}/am"],
    "sweep": lambda r, run: ["sweep", run, "--data", f"{r}/good.npy", "--out", f"{r}/sw.csv"],
    "plot": lambda r, run: ["plot", run, "samples", "--out", f"{r}/p.png"],
    "report": lambda r, run: ["report", run, "--out", f"{r}/r.html"],
    "map": lambda r, run: ["map", run, "--image", f"{r}/stack.npy", "--patches", f"{r}/patches.npz", "--out", f"{r}/maps"],
}
CRAFTED_RUNS = {"huge": "would need", "mismatch": "do not match", "widths": "do not match", "truncw": "corrupt",
                "future": "format_version 99 is not one this affinevae reads", "nanw": "NaN or infinite values in the weights"}
RUN_CASES = [(c, k) for c in RUN_COMMANDS for k in CRAFTED_RUNS]


@pytest.mark.parametrize("command,crafted", RUN_CASES, ids=[f"{c}-{k}" for c, k in RUN_CASES])
def test_crafted_runs(world, capsys, command, crafted):
    _fails_cleanly(world, RUN_COMMANDS[command](world, str(world / crafted)), capsys, CRAFTED_RUNS[crafted])


def test_resume_refuses_a_saved_model(world, capsys, tmp_path):
    saved = tmp_path / "saved"
    saved.mkdir()
    for f in ("model.json", "model.safetensors"):
        shutil.copy(world / "run" / f, saved / f)
    _fails_cleanly(tmp_path, ["train", *TRAIN, "--data", f"{world}/good.npy", "--out", str(saved), "--epochs", "1",
                              "--resume"], capsys, "holds a saved model")


@pytest.mark.parametrize("crafted,match", [("traversal", "not a file name of the run"),
                                           ("pickled_opt", "corrupt optimizer state"),
                                           ("empty_opt", "corrupt optimizer state")])
def test_resume_refuses_crafted_training_state(world, capsys, crafted, match):
    _fails_cleanly(world, ["train", *TRAIN, "--data", f"{world}/good.npy", "--out", str(world / crafted),
                           "--epochs", "2", "--resume"], capsys, match)


# ------------------------------------------------------------------ unsafe outputs for every writing command
FILE_WRITERS = {
    "encode": lambda r, out: ["encode", f"{r}/run", "--data", f"{r}/good.npy", "--out", out],
    "sample": lambda r, out: ["sample", f"{r}/run", "-n", "4", "--out", out],
    "patches": lambda r, out: ["patches", f"{r}/stack.npy", "--window", "8", "--out", out, "--no-progress"],
    "align": lambda r, out: ["align", f"{r}/run", "--data", f"{r}/good.npy", "--out", out],
    "sweep": lambda r, out: ["sweep", f"{r}/run", "--data", f"{r}/good.npy", "--out", out],
    "report": lambda r, out: ["report", f"{r}/run", "--out", out],
    "plot": lambda r, out: ["plot", f"{r}/run", "samples", "--out", out],
}
FILE_OUTS = {
    "other-runs-weights": ("other/model.safetensors", "file of the run"),
    "other-runs-metrics": ("other/metrics.jsonl", "file of the run"),
    "symlink-to-a-run-file": ("link.npz", "file of the run"),
    "existing-dir": ("adir", "is a directory"),
    "existing-file": ("existing.npz", "pass --force"),
    "the-input": ("good.npy", "input of this command"),
}
FILE_CASES = [(c, o) for c in FILE_WRITERS for o in FILE_OUTS
              if not (o == "the-input" and c in ("sample", "report", "plot"))]


@pytest.mark.parametrize("command,out", FILE_CASES, ids=[f"{c}-{o}" for c, o in FILE_CASES])
def test_unsafe_file_outputs(world, capsys, command, out):
    path, match = FILE_OUTS[out]
    if out == "the-input" and command == "patches":
        path = "stack.npy"
    if command == "patches" and not path.endswith(".npz"):
        match = ""  # refused first for not being an .npz
    _fails_cleanly(world, FILE_WRITERS[command](world, str(world / path)), capsys, match)


DIR_WRITERS = {
    "train": lambda r, out: ["train", *TRAIN, "--data", f"{r}/good.npy", "--out", out, "--epochs", "1"],
    "amortise": lambda r, out: ["amortise", f"{r}/run", "--data", f"{r}/good.npy", "--out", out, "--epochs", "1"],
    "map": lambda r, out: ["map", f"{r}/run", "--image", f"{r}/stack.npy", "--patches", f"{r}/patches.npz", "--out", out],
    "demo": lambda r, out: ["demo", "--quick", "--out", out],
}
DIR_OUTS = {"other-run": ("other", "already holds a run or model"), "saved-model": ("saved", "already holds a run or model"),
            "a-file": ("existing.npz", "not a directory"),
            "non-empty-dir": ("adir", "not empty")}
DIR_CASES = [(c, o) for c in DIR_WRITERS for o in DIR_OUTS]


@pytest.mark.parametrize("command,out", DIR_CASES, ids=[f"{c}-{o}" for c, o in DIR_CASES])
def test_unsafe_directory_outputs(world, capsys, command, out):
    path, match = DIR_OUTS[out]
    line = _fails_cleanly(world, DIR_WRITERS[command](world, str(world / path)), capsys, match)
    if out == "other-run":  # only train has --resume to suggest
        assert ("pass --resume" in line) == (command == "train"), line


def _read_only_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return ro
    if not Path("/sys").is_dir():  # pragma: no cover
        pytest.skip("running as root without /sys: no read-only directory to try")
    return Path("/sys")  # root may write anywhere but in sysfs


@pytest.mark.parametrize("command", list(FILE_WRITERS))
def test_read_only_directory(world, capsys, tmp_path, command):
    out = _read_only_dir(tmp_path) / "affinevae-out" / "x.npz"
    _fails_cleanly(world, FILE_WRITERS[command](world, str(out)), capsys, "")
    assert not out.exists()


@pytest.mark.parametrize("command", [c for c in DIR_WRITERS if c != "demo"])
def test_read_only_directory_for_directory_outputs(world, capsys, tmp_path, command):
    out = _read_only_dir(tmp_path) / "affinevae-out" / "d"
    _fails_cleanly(world, DIR_WRITERS[command](world, str(out)), capsys, "")
    assert not out.exists()


def test_disk_full_is_one_line(tmp_path):
    import errno

    from affinevae.io import atomic_write

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(AffineVAEError, match="no space left on the device"):
        atomic_write(tmp_path / "x.npz", full)
    assert list(tmp_path.iterdir()) == []  # no temporary left


# ------------------------------------------------------------------ unbounded options, argument order, figures
@pytest.mark.parametrize("argv,match", [
    # 24 images x 900 000 candidates: under the compute bound (900 004 model passes each), over 64 MiB of memory
    (["align", "{r}/run", "--data", "{r}/good.npy", "--out", "{r}/al.npz", "--restarts", "900000", "--keep", "1",
      "--steps", "0", "--max-memory", "64M"], "would need"),
    # 100 000 000 restarts: hours of work even where the memory holds them, refused by the compute bound
    (["align", "{r}/run", "--data", "{r}/good.npy", "--out", "{r}/al.npz", "--restarts", "100000000"],
     "24 images x 100,000,065 model passes each"),
    (["align", "{r}/run", "--data", "{r}/good.npy", "--out", "{r}/al.npz", "--restarts", "2", "--keep", "5"],
     "exceeds the 2 restarts"),
    (["train", *TRAIN[:2], "--latent-dim", "100000000", "--data", "{r}/good.npy", "--out", "{r}/big"], "would need"),
    (["encode", "{r}/run", "--data", "{r}/good.npy", "--out", "{r}/c.npz", "--max-memory", "lots"], "--max-memory"),
    (["map", "{r}/run", "--image", "{r}/stack.npy", "--patches", "{r}/patches.npz", "--out", "{r}/maps",
      "--symmetry", "0"], "symmetry"),
    (["map", "{r}/run", "--image", "{r}/stack.npy", "--patches", "{r}/outside.npz", "--out", "{r}/maps"],
     "outside the 48x48 image"),
    (["map", "{r}/run", "--image", "{r}/stack.npy", "--patches", "{r}/patches.npz", "--out", "{r}/maps",
      "--frame", "3"], "--frame 3"),
    (["map", "{r}/run", "--image", "{r}/stack.npy", "--patches", "{r}/halfframe.npz", "--out", "{r}/maps"],
     "its frames must be whole numbers (pixels, frame indices), got 0.5"),  # it was taken as frame 0
    # a model that fits in 22 MiB whose training step on 24 images (about 27 MiB kept for the backward pass) does not
    (["train", "--model", "rvae", "--latent-dim", "2", "--invariances", "rotation", "--encoder", "mlp", "--hidden",
      "1024,1024", "--batch-size", "24", "--val-split", "0", "--no-progress", "--max-memory", "22M", "--data",
      "{r}/good.npy", "--out", "{r}/bigstep"], "--batch-size 24: a training step of 24 1x12x12 images (1.1 MiB each kept for the backward pass"),
    # the model (25.4 MiB for training) and a step of 128 digits (17.9 MiB) each fit in 30M, both together do not
    (["train", "--model", "vae", "--data", "mnist", "-n", "300", "--latent-dim", "2", "--epochs", "1", "--no-progress",
      "--max-memory", "30M", "--out", "{r}/bigstep"],
     "beside the model's 25.4 MiB (weights, gradients, optimizer state) would need 43.3 MiB"),
    # a QA audit: options that were ignored or half read, silently
    (["train", *TRAIN, "--hidden", "", "--data", "{r}/good.npy", "--out", "{r}/big"], "--hidden is empty"),
    (["train", *TRAIN, "--channels", "32,,64", "--data", "{r}/good.npy", "--out", "{r}/big"],
     "--channels has an empty item: '32,,64'"),
    (["patches", "{r}/stack.npy", "--window", "8", "--stride", "8", "--threshold", "0.5", "--out", "{r}/p.npz"],
     "--threshold applies to detection; with --stride no objects are detected"),
], ids=["align-restarts-bomb", "align-restarts-compute", "align-keep-over-restarts", "train-latent-bomb", "bad-max-memory", "map-symmetry-0",
        "map-centres-outside", "map-bad-frame", "map-fractional-frame", "train-batch-bomb", "train-step-and-model", "train-empty-hidden", "train-empty-width",
        "patches-grid-threshold"])
def test_unbounded_and_invalid_options(world, capsys, argv, match):
    _fails_cleanly(world, [a.format(r=world) for a in argv], capsys, match)
    assert not (world / "maps").exists() and not (world / "bigstep").exists()


def test_mathtext_names_are_drawn_literally(world, capsys, tmp_path):
    named = tmp_path / r"r$\frac$"
    shutil.copytree(world / "run", named)
    assert main(["sweep", str(named), "--model-b", str(world / "run"), "--data", f"{world}/good.npy", "-n", "4",
                 "--angles", "0,90", "--restarts", "2", "--steps", "0", "--out", str(tmp_path / "sw.csv")]) == 0
    assert (tmp_path / "sw.png").stat().st_size > 0
    assert main(["plot", str(world / "run"), "loss-vs-rotation", "--compare", str(named), "--data", f"{world}/good.npy",
                 "-n", "4", "--angles", "0,90", "--title", "$x^$", "--out", str(tmp_path / "l.png")]) == 0
    assert (tmp_path / "l.png").stat().st_size > 0


def test_force_overwrites_plain_files_only(world, tmp_path, capsys):
    out = tmp_path / "s.png"
    out.write_bytes(b"old")
    assert main(["sample", str(world / "run"), "-n", "4", "--out", str(out), "--force"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    mode = out.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # created with the user's umask, not 0600
    for f in ("model.safetensors", "model.json", "metrics.jsonl", "train.json"):
        assert (world / "run" / f).stat().st_mode & 0o777 == 0o666 & ~umask, f
    with pytest.raises(AffineVAEError, match="file of the run"):
        check_output(world / "other" / "model.json", force=True)
    with pytest.raises(AffineVAEError, match="already holds a run"):
        check_output(world / "other", kind="dir", force=True)


def test_stale_temporaries_are_cleaned(tmp_path):
    from affinevae.io import write_json

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".x.json.{int(dead.stdout)}.abcd1234.tmp"
    stale.write_text("half")
    mine = tmp_path / f".x.json.{os.getpid()}.live0000.tmp"  # a live process's temporary is left alone
    mine.write_text("busy")
    write_json(tmp_path / "x.json", {"a": 1})
    assert not stale.exists() and mine.exists()


def test_a_long_file_name_the_file_system_takes_is_written(tmp_path):
    """An audit: `encode --out` with a 250-byte name (one the OS accepts) failed 'File name too long' after the
    work: the temporary .NAME.PID.XXXX.tmp is 22 bytes longer. Its name is shortened (start, ~, hash) now, and a
    killed writer's shortened temporary is still cleaned by the next write of that target."""
    from affinevae.io import NAME_MAX, temp_stem, write_json

    name = "e" * 246 + ".json"
    assert len(name) <= NAME_MAX and temp_stem("x.json") == "x.json"
    stem = temp_stem(name)
    assert len(f".{stem}.4194304.abcdefgh.tmp".encode()) <= NAME_MAX and stem != temp_stem("f" + name[1:])
    assert len(temp_stem("é" * 127).encode()) <= NAME_MAX - 22  # cut between whole characters
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".{stem}.{int(dead.stdout)}.abcd1234.tmp"
    stale.write_text("half")
    write_json(tmp_path / name, {"a": 1})
    assert json.loads((tmp_path / name).read_text()) == {"a": 1} and not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == [name]
    from affinevae.outputs import check_output

    with pytest.raises(AffineVAEError, match=r"the name e{40}\.\.\. has 260 bytes, more than a file name may have .255."):
        check_output(tmp_path / ("e" * 256 + ".npz"))  # before the work, not at its write


# ------------------------------------------------------------------ processes: kill -9, resume, two trainings
def _cli(args: list[str], env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
           "MPLBACKEND": "Agg", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "affinevae", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def _result(run: Path) -> tuple:
    from safetensors.numpy import load_file

    weights = load_file(str(run / "model.safetensors"))
    metrics = [{k: v for k, v in m.items() if k != "images_per_s"}
               for m in (json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines())]
    return weights, metrics


def test_kill_during_training_and_checkpoint_then_resume(world, tmp_path):
    argv = [*TRAIN, "--data", str(world / "good.npy"), "--epochs", "3"]
    assert main(["train", *argv, "--out", str(tmp_path / "ref")]) == 0
    ref_w, ref_m = _result(tmp_path / "ref")
    run = tmp_path / "killed"
    killed = _cli(["train", *argv, "--out", str(run)], {"AFFINEVAE_FAULT": "epoch:2"})  # inside epoch 2
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert json.loads((run / "train.json").read_text())["epochs_done"] == 1
    killed = _cli(["train", *argv, "--out", str(run), "--resume"], {"AFFINEVAE_FAULT": "checkpoint:3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert any(p.name.endswith(".tmp") for p in run.iterdir())  # killed mid-write: a temporary is left
    assert json.loads((run / "train.json").read_text())["epochs_done"] == 2
    resumed = _cli(["train", *argv, "--out", str(run), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert not any(p.name.endswith(".tmp") for p in run.iterdir())  # cleaned on the next start
    w, m = _result(run)
    assert m == ref_m  # the uninterrupted run's metrics and weights, exactly
    assert set(w) == set(ref_w) and all(np.array_equal(w[k], ref_w[k]) for k in w)


def test_second_training_on_the_same_out_refuses(world, tmp_path):
    run = tmp_path / "busy"
    with RunLock(run):  # a first training holds the run
        before = _snapshot(run)
        second = _cli(["train", *TRAIN, "--data", str(world / "good.npy"), "--epochs", "1", "--out", str(run)])
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("affinevae: error:") and "another affinevae process" in lines[0]
        assert second.stdout.strip() == ""  # nothing said before the refusal
        assert _snapshot(run) == before
        # the live run has written its first files: it was said to hold "what an interrupted training left"
        # (--resume continues it), and --resume was then refused by the lock
        (run / "metrics.jsonl").write_text("")
        for extra in ([], ["--resume"]):
            third = _cli(["train", *TRAIN, "--data", str(world / "good.npy"), "--epochs", "1", "--out", str(run), *extra])
            assert third.returncode == 2 and "another affinevae process is writing this run" in third.stderr, third.stderr
            assert "interrupted" not in third.stderr
        (run / "metrics.jsonl").unlink()
    assert main(["train", *TRAIN, "--data", str(world / "good.npy"), "--epochs", "1", "--out", str(run)]) == 0
    # a resume refused for a damaged checkpoint: the one line, without the options it would have resumed with
    ckpt = next(run.glob("checkpoint-e*.safetensors"))
    raw = bytearray(ckpt.read_bytes())
    raw[-10] ^= 0xFF
    ckpt.write_bytes(bytes(raw))
    refused = _cli(["train", *TRAIN, "--data", str(world / "good.npy"), "--epochs", "2", "--out", str(run), "--resume"])
    assert refused.returncode == 2 and refused.stdout.strip() == "", refused.stdout
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "damaged checkpoint" in lines[0], lines


def test_sizes_and_limits(monkeypatch):
    from affinevae.limits import check_array, format_size, memory_limit, memory_limit_set, parse_size

    assert parse_size("4G") == 4 << 30 and parse_size("512M") == 512 << 20 and parse_size("1000") == 1000
    assert parse_size("1.5GiB") == 3 << 29 and format_size(13.4 * 2 ** 30) == "13.4 GiB"
    for bad in ("", "-1G", "4Q", "0"):
        with pytest.raises(AffineVAEError, match="--max-memory"):
            parse_size(bad)
    with memory_limit_set("1M"):
        assert memory_limit() == 1 << 20
        with pytest.raises(AffineVAEError, match=r"x.npy: the declared images \(1000x1000\) would need 3.8 MiB"):
            check_array((1000, 1000), "x.npy")
        check_array((100, 100), "x.npy")
    assert 1 << 20 < memory_limit() <= 2 << 30  # the fixture's AFFINEVAE_MAX_MEMORY again


def test_pose_search_compute_bound():
    """A pose search over MAX_SEARCH_EVALUATIONS_PER_IMAGE model passes per image is refused in one line
    with the estimate and the options to lower, before any work; normal searches are far below it."""
    import time

    import affinevae as av
    from affinevae.limits import MAX_SEARCH_EVALUATIONS_PER_IMAGE as LIMIT
    from affinevae.models.avae import AVAE
    from affinevae.pose.search import SearchConfig, check_search_work, search_evaluations

    # the default search, the benchmarks' exhaustive one, a 1-degree grid: all far below the bound
    assert search_evaluations(SearchConfig()) == 16 + 2 * (3 * 10 + 1) + 1
    assert search_evaluations(SearchConfig(restarts=30, keep=30, steps=20, use_head=False)) == 1860
    assert search_evaluations(SearchConfig(restarts=360, keep=10, steps=100)) * 100 < LIMIT
    assert search_evaluations(SearchConfig(), elbo=True) == 79 + 2  # align: ELBO before and after
    # the bound itself passes, one pass more is refused (steps=0: each kept start is evaluated once more)
    at = SearchConfig(restarts=LIMIT - 2, keep=2, steps=0, use_head=False)
    check_search_work(10 ** 6, at)
    with pytest.raises(AffineVAEError, match=r"^pose search \(--restarts, --keep, --steps\): 7 images x "
                                             r"1,000,001 model passes each \(999,999 restarts, 2 kept x 0 Adam steps\) "
                                             r"= about 7.00e\+06 passes, more than the 1,000,000 per image"):
        check_search_work(7, at.replace(restarts=LIMIT - 1))
    avae = AVAE(av.build_model("vae", image_shape=[1, 12, 12], latent_dim=2, encoder="mlp", decoder="mlp", hidden=[16]))
    x = torch.rand(5, 1, 12, 12)
    t = time.perf_counter()
    with pytest.raises(AffineVAEError) as info:  # align --restarts 100000000 on 5 images: hours, refused at once
        avae.align(x, config=SearchConfig(restarts=100_000_000))
    line = str(info.value)
    assert "\n" not in line and "5 images x 100,000,065 model passes each" in line and "about 5.00e+08 passes" in line
    assert "lower --restarts, --keep, --steps, --elbo-samples" in line and "MAX_SEARCH_EVALUATIONS_PER_IMAGE" in line
    with pytest.raises(AffineVAEError, match=r"2,000,000 ELBO samples"):
        avae.align(x, config=SearchConfig(elbo_samples=2_000_000))
    with pytest.raises(AffineVAEError, match=r"^pose search \(--restarts, --keep, --steps\): 5 images x 100,000,063"):
        avae.search(x, config=SearchConfig(restarts=100_000_000))  # the search alone (training, sweeps) too
    assert time.perf_counter() - t < 10
    assert avae.align(x, config=SearchConfig(restarts=4, keep=1, steps=1)).params.shape == (5, 1)


def test_a_damaged_train_json_or_a_foreign_optimizer_is_one_line(world, tmp_path, capsys):
    """train.json that is not an object or whose epochs_done is not a count, and an optimizer file of
    another model, are refused in one line naming the file (they were AttributeError / ValueError /
    a 31-line traceback inside Adam), and nothing is changed."""
    cases = {"list": lambda d: (d / "train.json").write_text("[]"),
             "epochs": lambda d: (d / "train.json").write_text(json.dumps({**json.loads((world / "run" / "train.json")
                                                                                        .read_text()), "epochs_done": "x"}))}
    for name, damage in cases.items():
        shutil.copytree(world / "run", tmp_path / name)
        damage(tmp_path / name)
        line = _fails_cleanly(tmp_path, ["info", str(tmp_path / name)], capsys, "train.json: corrupt training state")
        assert ("a JSON object was expected" if name == "list" else "epochs_done must be an integer >= 0") in line
    # a model.json edited by hand: the file is named with what is wrong in it
    shutil.copytree(world / "run", tmp_path / "edited")
    desc = json.loads((tmp_path / "edited" / "model.json").read_text())
    desc["config"]["latent_dim"] = -1
    (tmp_path / "edited" / "model.json").write_text(json.dumps(desc))
    line = _fails_cleanly(tmp_path, ["info", str(tmp_path / "edited")], capsys, "model.json: latent_dim must be")
    assert str(tmp_path / "edited" / "model.json") in line
    # an optimizer state from a wider model, in place of the run's own
    wider = tmp_path / "wider"
    assert main(["train", *TRAIN, "--data", f"{world}/good.npy", "--out", str(wider), "--epochs", "1",
                 "--hidden", "32"]) == 0
    shutil.copytree(world / "run", tmp_path / "foreign")
    opt = json.loads((world / "run" / "train.json").read_text())["optimizer"]
    wider_opt = json.loads((wider / "train.json").read_text())["optimizer"]
    shutil.copy(wider / wider_opt, tmp_path / "foreign" / opt)
    _fails_cleanly(tmp_path, ["train", *TRAIN, "--data", f"{world}/good.npy", "--out", str(tmp_path / "foreign"),
                              "--epochs", "2", "--resume"], capsys, "optimizer state of another model")
    # the weights of another model's checkpoint in place of the run's own: how they differ, not torch's header
    shutil.copytree(world / "run", tmp_path / "swapped")
    ckpt = json.loads((world / "run" / "train.json").read_text())["checkpoint"]
    wider_ckpt = json.loads((wider / "train.json").read_text())["checkpoint"]
    shutil.copy(wider / wider_ckpt, tmp_path / "swapped" / ckpt)
    line = _fails_cleanly(tmp_path, ["train", *TRAIN, "--data", f"{world}/good.npy", "--out",
                                     str(tmp_path / "swapped"), "--epochs", "2", "--resume"], capsys,
                          "does not match the vae model being resumed (shape mismatch for [")
    assert ckpt in line and "resume with the run's own checkpoint" in line


def test_resume_says_what_changed_and_applies_a_new_weight_decay(world, tmp_path, capsys):
    """A resume with other training options says so in one warning (and a weight decay given now is
    applied: it was read from the optimizer file and silently kept); a resume of a finished run says
    there is nothing to train."""
    from safetensors.torch import load_file

    for name in ("plain", "decayed", "wd_only"):
        shutil.copytree(world / "run", tmp_path / name)
    base = ["train", *TRAIN, "--data", f"{world}/good.npy", "--epochs", "2", "--resume"]
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert "resuming with" not in capsys.readouterr().err
    with pytest.warns(UserWarning, match=r"resuming with lr 0\.01 \(the run used 0\.001\), weight_decay 100\.0 "
                                         r"\(the run used 0\.0\): the epochs from here on differ"):
        assert main([*base, "--out", str(tmp_path / "decayed"), "--weight-decay", "100", "--lr", "0.01"]) == 0
    with pytest.warns(UserWarning, match="weight_decay 100.0"):   # the weight decay alone changes the weights now
        assert main([*base, "--out", str(tmp_path / "wd_only"), "--weight-decay", "100"]) == 0
    plain, decayed = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("plain", "wd_only"))
    assert any(not torch.equal(plain[k], decayed[k]) for k in plain)
    with pytest.warns(UserWarning, match=r"already trained for 2 epochs \(epochs 2\): nothing to train"):
        assert main([*base, "--out", str(tmp_path / "plain")]) == 0      # 2 of 2 epochs done


def test_resume_keeps_the_runs_bf16_and_fit_says_a_changed_one(world, tmp_path):
    """--resume without --bf16 trained the rest in float32 without a word (train.json then said bf16 false, and the
    weights differed from the uninterrupted run's); from Python a resume with another bf16 is said as a change."""
    import affinevae as av
    from affinevae.cli import build_parser
    from affinevae.cli.train import resume_options

    run = tmp_path / "b"
    assert main(["train", *TRAIN, "--data", str(world / "good.npy"), "--epochs", "1", "--bf16", "--out", str(run)]) == 0
    args = build_parser().parse_args(["train", *TRAIN, "--data", str(world / "good.npy"), "--out", str(run),
                                      "--resume"])
    line = resume_options(args)
    assert args.bf16 is True and "bf16=True" in line and "--bf16" not in line
    model = av.load(run)
    with pytest.warns(UserWarning, match=r"resuming with bf16 False \(the run used True\)"):
        av.fit(model, av.data.load_images(str(world / "good.npy")), av.TrainConfig(
            epochs=2, batch_size=8, val_split=0.0, progress=False, bf16=False), out=run, resume=True)


def test_resume_takes_the_runs_own_training_options(world, tmp_path, capsys):
    """``--resume`` without the training options continues with the run's own (read from train.json,
    said in one line), not today's defaults: the weights equal an uninterrupted run's bit for bit.
    Before, a run started with --seed 3 --lr 0.002 was refused as other data (the seed draws the
    validation split) and an lr left out became the current default."""
    from safetensors.torch import load_file

    opts = ["--model", "vae", "--latent-dim", "2", "--encoder", "mlp", "--decoder", "mlp", "--hidden", "16",
            "--device", "cpu", "--no-progress", "--data", f"{world}/good.npy"]
    custom = ["--batch-size", "6", "--lr", "0.002", "--seed", "3", "--val-split", "0.25", "--schedule", "cosine",
              "--kl-warmup", "0.2"]
    whole = _cli(["train", *opts, *custom, "--epochs", "3", "--out", str(tmp_path / "whole")])  # one thread, as below
    assert whole.returncode == 0, whole.stderr
    run = tmp_path / "cut"
    killed = _cli(["train", *opts, *custom, "--epochs", "3", "--out", str(run)], {"AFFINEVAE_FAULT": "epoch:2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert json.loads((run / "train.json").read_text())["epochs_done"] == 1
    resumed = _cli(["train", *opts, "--out", str(run), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    out, err = resumed.stdout, resumed.stderr
    said = [x for x in out.splitlines() if x.startswith("affinevae: resuming")]
    assert said == [f"affinevae: resuming {run} with its training options: epochs=3 batch_size=6 lr=0.002 "
                    "kl_warmup=0.2 weight_decay=0 schedule=cosine val_split=0.25 seed=3 (override with --epochs/"
                    "--batch-size/--lr/--kl-warmup/--weight-decay/--schedule/--val-split/--seed)"]
    assert "resuming with" not in err  # nothing changed
    ref, got = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert set(ref) == set(got) and all(torch.equal(ref[k], got[k]) for k in ref)
    # a value given again wins over the run's, and is said as a change
    shutil.copytree(tmp_path / "whole", tmp_path / "more")
    with pytest.warns(UserWarning, match=r"resuming with lr 0\.005 \(the run used 0\.002\)"):
        assert main(["train", *opts, "--out", str(tmp_path / "more"), "--resume", "--epochs", "4", "--lr", "0.005"]) == 0
    assert json.loads((tmp_path / "more" / "train.json").read_text())["train_config"]["seed"] == 3
    # a corrupt saved option is one line naming the file
    info = json.loads((tmp_path / "more" / "train.json").read_text())
    info["train_config"]["lr"] = -1
    (tmp_path / "more" / "train.json").write_text(json.dumps(info))
    _fails_cleanly(tmp_path, ["train", *opts, "--out", str(tmp_path / "more"), "--resume", "--epochs", "5"], capsys,
                   "corrupt training options")


def test_sigterm_stops_training_as_ctrl_c_does(tmp_path):
    """SIGTERM (timeout, SLURM, docker stop) in the first epoch exits 143 saying so and removes the
    run directory, as Ctrl-C does, so that the same command can run again (it left the lock and an
    empty metrics file, and the rerun was refused)."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "affinevae", "train", "--model", "vae", "--data", "mnist", "-n", "20000",
           "--latent-dim", "2", "--epochs", "2", "--no-progress", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / ".affinevae.lock").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "affinevae: terminated" and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("field,value,match", [
    ("seed", "x", "train_config seed must be an integer >= 0, got 'x'"),
    ("train_config", [1], "train_config must be a JSON object"),
    ("max_angle", "x", "max_angle must be radians in (0, pi]"),
    ("binarize", 7, "binarize must be a threshold in (0, 1)"),
    ("n", -3, "n must be an integer >= 1")])
@pytest.mark.parametrize("command", ["encode", "info", "report"])
def test_a_corrupt_field_of_train_json_is_one_line_naming_the_file(world, capsys, tmp_path, command, field, value,
                                                                     match):
    """A hand-edited train.json gave ValueError / TypeError tracebacks in encode, info, report, plot."""
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    info = json.loads((run / "train.json").read_text())
    if field == "seed":
        info["train_config"]["seed"] = value
    else:
        info[field] = value
    (run / "train.json").write_text(json.dumps(info))
    _fails_cleanly(tmp_path, RUN_COMMANDS[command](tmp_path, str(run)), capsys,
                   f"train.json: corrupt training state ({match}")


def test_the_other_data_fields_of_train_json_and_its_digest_are_checked(world, capsys, tmp_path):
    """n_train 'x' was a ValueError traceback in train --resume; data_fingerprint, fill_nan, centre, class_names
    and the others were taken as any value, and a digest that was not text turned the optimizer check off."""
    cases = [("n_train", "x", "n_train must be an integer >= 1"), ("fill_nan", "x", "fill_nan must be true or false"),
             ("data_fingerprint", 5, "data_fingerprint must be a fingerprint"),
             ("centre", [1.5, 2], "centre must be 'mass' or two whole pixels"),
             ("class_names", [1, 2], "class_names must be a list of names"),
             ("optimizer_sha256", 5, "optimizer_sha256 must be a SHA-256 digest")]
    for field, value, match in cases:
        run = tmp_path / field
        shutil.copytree(world / "run", run)
        info = json.loads((run / "train.json").read_text())
        info[field] = value
        (run / "train.json").write_text(json.dumps(info))
        argv = (["train", *TRAIN, "--data", str(world / "good.npy"), "--epochs", "2", "--out", str(run), "--resume"]
                if field in ("n_train", "optimizer_sha256") else ["info", str(run)])
        _fails_cleanly(tmp_path, argv, capsys, f"train.json: corrupt training state ({match}")
    run = tmp_path / "scaling"  # info printed 18 lines of the model before the scaling's error
    shutil.copytree(world / "run", run)
    info = json.loads((run / "train.json").read_text())
    (run / "train.json").write_text(json.dumps({**info, "pixel_scaling": "abc"}))
    assert main(["info", str(run)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "train.json: pixel_scaling must be" in err


def test_an_interrupted_train_says_what_it_kept_and_how_to_go_on(world, tmp_path, capsys, monkeypatch):
    """Ctrl-C (or SIGTERM) in train: a line says which epoch's checkpoint is kept and to run the same command
    with --resume, or that it stopped before the first checkpoint; then 'interrupted', exit 130."""
    import affinevae.cli.train as cli_train

    real_fit = cli_train.fit

    def stop_after(epoch):
        def fit(*args, callbacks=(), **kwargs):
            def stop(record):
                if int(record["epoch"]) == epoch:
                    raise KeyboardInterrupt
            if epoch == 0:
                raise KeyboardInterrupt
            return real_fit(*args, callbacks=[*callbacks, stop], **kwargs)
        return fit
    argv = ["train", *TRAIN, "--data", str(world / "good.npy"), "--epochs", "3"]
    monkeypatch.setattr(cli_train, "fit", stop_after(2))
    assert main([*argv, "--out", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err.splitlines()
    assert err[-2:] == [f"affinevae: {tmp_path / 'r'} keeps its checkpoint after epoch 2: run the same command with "
                        "--resume to go on from there", "affinevae: interrupted"]
    monkeypatch.setattr(cli_train, "fit", stop_after(0))
    assert main([*argv, "--out", str(tmp_path / "s")]) == 130
    assert capsys.readouterr().err.splitlines()[-2:] == [
        f"affinevae: stopped before the first checkpoint of {tmp_path / 's'}: nothing to resume", "affinevae: interrupted"]
    monkeypatch.setattr(cli_train, "fit", real_fit)
    assert main([*argv, "--out", str(tmp_path / "r"), "--resume"]) == 0


@pytest.mark.parametrize("family,missing,extra", [
    ("vae", "lowpass", []),
    ("rvae", "content_anchor", ["--invariances", "rotation", "--set", "rotation_mode=full", "--set", "group_channels=4,4"]),
])
def test_a_run_saved_before_a_config_field_existed_resumes(world, tmp_path, capsys, family, missing, extra):
    """A run whose model.json predates a field (lowpass, content_anchor) loads with that field's default and
    resumes from the command line: it had been refused as another model ('(unset) there, 0.0 here')."""
    argv = ["train", "--model", family, "--data", str(world / "good.npy"), "--latent-dim", "2", "--hidden", "8",
            "--no-progress", "--out", str(tmp_path / "r"), *extra]
    assert main([*argv, "--epochs", "1"]) == 0
    desc = json.loads((tmp_path / "r" / "model.json").read_text())
    desc["config"].pop(missing)
    (tmp_path / "r" / "model.json").write_text(json.dumps(desc))
    capsys.readouterr()
    assert main([*argv, "--epochs", "2", "--resume"]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "r" / "train.json").read_text())["epochs_done"] == 2


def test_an_avae_resumes_with_its_inner_models_options_not_given_again(world, tmp_path, capsys):
    argv = ["train", "--model", "avae", "--data", str(world / "good.npy"), "--no-progress", "--out", str(tmp_path / "a")]
    assert main([*argv, "--epochs", "1", "--latent-dim", "2", "--hidden", "8", "--channels", "4,8",
                 "--activation", "tanh"]) == 0
    capsys.readouterr()
    assert main([*argv, "--epochs", "2", "--resume"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if "with its model options: " in s)
    assert all(f" {o}" in line for o in ("activation=tanh", "channels=4,8", "hidden=8", "latent_dim=2"))


def test_a_changed_byte_of_the_optimizer_state_is_found_on_resume(world, tmp_path, capsys):
    """train.json records the optimizer file's SHA-256: a flipped bit in an Adam moment (which loaded
    silently and moved the resumed weights by 1e6) is one line naming the file, and nothing is trained."""
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    info = json.loads((run / "train.json").read_text())
    assert len(info["optimizer_sha256"]) == 64
    opt = run / info["optimizer"]
    raw = bytearray(opt.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    opt.write_bytes(bytes(raw))
    before = (run / "model.safetensors").read_bytes()
    _fails_cleanly(tmp_path, ["train", *TRAIN, "--data", f"{world}/good.npy", "--out", str(run), "--epochs", "2",
                              "--resume"], capsys, "damaged optimizer state: its bytes no longer match the SHA-256")
    assert (run / "model.safetensors").read_bytes() == before


def test_the_other_ranks_of_a_distributed_training_do_not_probe_rank_0_s_lock(tmp_path):
    """torchrun --resume failed now and then: rank 1 checked the output after rank 0 had taken the run's lock and
    was told 'another affinevae process is writing this run' (its probe could also make rank 0's take fail).
    Only rank 0 probes (probe_lock), the lock is still said to a second training on one process."""
    from affinevae.errors import AffineVAEError
    from affinevae.outputs import RunLock, check_output

    run = tmp_path / "run"
    with RunLock(run):
        with pytest.raises(AffineVAEError, match="another affinevae process is writing this run"):
            check_output(run, kind="dir", resumable=True, resume=True, model_dir=True)
        assert check_output(run, kind="dir", resumable=True, resume=True, model_dir=True, probe_lock=False) == run
