"""Truncated, corrupt and non-TIFF ``.tif`` files: one-line refusals naming the file, nothing written.

``train`` (the in-memory loader, :func:`affinevae.data.files.load_images`) and ``patches`` (the
lazy page-by-page stack reader, :class:`affinevae.data.stacks.TiffSource`) both refuse them in
exactly one ``affinevae: error:`` line, without tifffile's own log lines; valid stacks still work.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from affinevae.cli import main

tifffile = pytest.importorskip("tifffile")

TRAIN = ["--model", "vae", "--epochs", "1", "--latent-dim", "2", "--hidden", "16", "--channels", "4,8", "--no-progress"]
PATCHES = ["--window", "12", "--min-distance", "3", "--threshold", "0.1"]


def _stack(n: int = 20) -> np.ndarray:
    return (np.random.default_rng(0).random((n, 64, 64)) * 255).astype(np.uint8)


def _bad_file(d: Path, kind: str) -> Path:
    """A damaged TIFF of the given kind in ``d`` (for a folder of frames: the folder)."""
    good = d / "good_src.tif"
    tifffile.imwrite(good, _stack())
    raw = good.read_bytes()
    good.unlink()
    rng = np.random.default_rng(1)
    if kind == "truncated":
        p = d / "trunc.tif"
        p.write_bytes(raw[: len(raw) // 2])
    elif kind == "garbage":
        p = d / "garbage.tif"
        p.write_bytes(rng.bytes(5000))
    elif kind == "header-garbage":
        p = d / "hdrgarbage.tif"
        p.write_bytes(b"II*\x00" + rng.bytes(5000))
    elif kind == "pages-truncated":  # page by page (IFD after IFD): the cut breaks the page chain
        p = d / "pagecut.tif"
        with tifffile.TiffWriter(p) as tw:
            for frame in _stack():
                tw.write(frame, contiguous=False)
        b = p.read_bytes()
        p.write_bytes(b[: len(b) * 2 // 3])
    elif kind == "bad-compressed-page":  # within the file's size, but a page's data does not decode
        p = d / "badzip.tif"
        tifffile.imwrite(p, _stack(), compression="zlib")
        with tifffile.TiffFile(p) as tf:
            off, count = tf.pages[5].dataoffsets[0], tf.pages[5].databytecounts[0]
        b = bytearray(p.read_bytes())
        b[off:off + count] = rng.bytes(count)
        p.write_bytes(bytes(b))
    elif kind == "one-header-truncated":  # an ImageJ stack with one page header, its planes cut short
        p = d / "ijcut.tif"
        tifffile.imwrite(p, _stack(), imagej=True, truncate=True, metadata={"axes": "TYX"})
        b = p.read_bytes()
        p.write_bytes(b[: len(b) * 2 // 3])
    elif kind == "folder-frame-truncated":
        p = d / "frames"
        p.mkdir()
        for i, frame in enumerate(_stack(3)):
            tifffile.imwrite(p / f"f{i}.tiff", frame)
        last = p / "f2.tiff"
        last.write_bytes(last.read_bytes()[:2000])
        return p / "f2.tiff"  # the file the message must name
    else:  # pragma: no cover
        raise ValueError(kind)
    return p


def _input_of(bad: Path) -> Path:
    return bad.parent if bad.parent.name == "frames" else bad


def _files(d: Path) -> set:
    return {str(q.relative_to(d)) for q in d.rglob("*")}


def _refused(capsys, argv: list, name: str, d: Path, before: set) -> str:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1, err  # no tifffile log line, no traceback
    assert lines[0].startswith("affinevae: error:"), err
    assert name in lines[0] and "TIFF" in lines[0], lines[0]
    assert out == ""
    assert _files(d) == before, "nothing may be written on refusal"
    return lines[0]


BAD = ["truncated", "garbage", "header-garbage", "pages-truncated", "bad-compressed-page", "one-header-truncated",
       "folder-frame-truncated"]


@pytest.mark.parametrize("kind", BAD)
def test_train_refuses_damaged_tiff(tmp_path, capsys, kind):
    bad = _bad_file(tmp_path, kind)
    before = _files(tmp_path)
    msg = _refused(capsys, ["train", *TRAIN, "--data", _input_of(bad), "--out", tmp_path / "run"], bad.name, tmp_path, before)
    if kind not in ("garbage", "bad-compressed-page"):
        assert "corrupt or truncated" in msg
    assert "zero images" not in msg and "list index" not in msg


@pytest.mark.parametrize("kind", BAD)
def test_patches_refuses_damaged_tiff(tmp_path, capsys, kind):
    bad = _bad_file(tmp_path, kind)
    before = _files(tmp_path)
    msg = _refused(capsys, ["patches", _input_of(bad), *PATCHES, "--out", tmp_path / "p.npz"], bad.name, tmp_path, before)
    if kind not in ("garbage", "bad-compressed-page"):
        assert "corrupt or truncated" in msg
    assert "list index" not in msg


def test_truncated_tiff_message_names_the_cut(tmp_path):
    from affinevae.data.stacks import open_stack
    from affinevae.errors import AffineVAEError

    bad = _bad_file(tmp_path, "truncated")
    expected = r"trunc\.tif: cannot read TIFF: corrupt or truncated file \(image data ends at byte \d+, the file has \d+ bytes\)"
    with pytest.raises(AffineVAEError, match=expected):
        open_stack(bad)


def test_tifffile_logger_restored_after_refusal(tmp_path):
    from affinevae.data.files import load_images
    from affinevae.errors import AffineVAEError

    log = logging.getLogger("tifffile")
    handlers, propagate = list(log.handlers), log.propagate
    bad = _bad_file(tmp_path, "header-garbage")
    with pytest.raises(AffineVAEError):
        load_images(str(bad))
    assert log.handlers == handlers and log.propagate == propagate


def test_valid_multipage_tiff_still_works(tmp_path, capsys):
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, _stack())
    capsys.readouterr()
    assert main(["patches", str(good), *PATCHES, "--out", str(tmp_path / "p.npz")]) == 0
    out, err = capsys.readouterr()
    assert "20 of 20 frame(s)" in out and err.strip() == ""
    assert (tmp_path / "p.npz").is_file()
    assert main(["train", *TRAIN, "--data", str(good), "--out", str(tmp_path / "run")]) == 0
    out, err = capsys.readouterr()
    assert "tifffile" not in err and "error" not in err
    assert (tmp_path / "run").is_dir()


def test_page_by_page_tiff_reads_every_frame(tmp_path):
    """Pages written one by one form several tifffile series: the lazy reader reads them all, like load_images."""
    from affinevae.data.files import load_images
    from affinevae.data.stacks import open_stack

    p = tmp_path / "pages.tif"
    arr = _stack(5)
    with tifffile.TiffWriter(p) as tw:
        for frame in arr:
            tw.write(frame, contiguous=False)
    with open_stack(p) as src:
        assert src.n_frames == 5
        np.testing.assert_array_equal(src.read_raw(0, 5), arr)
        np.testing.assert_array_equal(src.read_raw(2, 4), arr[2:4])
    assert load_images(str(p)).images.shape == (5, 1, 64, 64)


def test_compressed_tiffs_read_and_a_missing_codec_is_not_called_damage(tmp_path, capsys, monkeypatch):
    """LZW- and zstd-compressed stacks (common from instruments; their codecs come with imagecodecs, in the
    microscopy extra) read as uncompressed ones do, lazily too; without the codec the line names the
    package and the extra instead of calling the file corrupt."""
    pytest.importorskip("imagecodecs")
    from affinevae.data.files import load_images
    from affinevae.data.stacks import corrupt_tiff, open_stack

    stack = _stack(6)
    tifffile.imwrite(tmp_path / "plain.tif", stack)
    for codec in ("lzw", "zstd"):
        tifffile.imwrite(tmp_path / f"{codec}.tif", stack, compression=codec)
        np.testing.assert_array_equal(load_images(str(tmp_path / f"{codec}.tif")).images,
                                      load_images(str(tmp_path / "plain.tif")).images)
        with open_stack(str(tmp_path / f"{codec}.tif")) as src:
            np.testing.assert_array_equal(src.read_raw(2, 4), stack[2:4])
    line = str(corrupt_tiff("scan.tif", "<COMPRESSION.LZW: 5> requires the 'imagecodecs' package"))
    assert line == ("scan.tif: its pixels are LZW-compressed, which needs the imagecodecs package: "
                    "pip install 'affinevae[microscopy]' (or pip install imagecodecs)")
    # the whole path, as a machine without imagecodecs reads it: tifffile's own message, then ours
    import tifffile.tifffile as tf

    def no_codec(*args, **kwargs):
        raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(tf.TiffPage, "decode", property(lambda self: no_codec))
    assert main(["info", str(tmp_path / "lzw.tif")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "its pixels are LZW-compressed, which needs the imagecodecs package" in err, err
