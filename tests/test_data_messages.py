"""What the data commands say about the data they are given: `info` on any data, many channels, no
contrast, bad coordinate rows, given objects dropped at the edge."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from affinevae.cli import main
from affinevae.data.objects import read_coordinates
from affinevae.data.stacks import open_stack
from affinevae.errors import AffineVAEError


def test_info_reads_folders_patterns_and_refuses_missing_and_complex_data(tmp_path, capsys):
    (tmp_path / "scans").mkdir()
    for i in range(2):
        tifffile.imwrite(tmp_path / "scans" / f"{i}.tif", np.full((16, 16), i + 0.5, np.float32))
    assert main(["info", str(tmp_path / "scans")]) == 0  # a folder of images: a data set, not a run
    assert "2 of 16 x 16 pixels" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "scans" / "*.tif")]) == 0  # a pattern: each file
    out = capsys.readouterr().out
    assert out.count("1 of 16 x 16 pixels") == 2 and "values 1.5 .. 1.5" in out
    assert main(["info", str(tmp_path / "none.tif")]) == 2
    assert capsys.readouterr().err.strip().endswith("none.tif: no such file, run or model directory")
    assert main(["info", str(tmp_path / "zz" / "*.tif")]) == 2
    assert "no file matches" in capsys.readouterr().err
    np.save(tmp_path / "c.npy", np.ones((8, 8), np.complex64))
    assert main(["info", str(tmp_path / "c.npy")]) == 2
    said = capsys.readouterr()
    assert "images must be real numbers, got dtype complex64" in said.err and "warning" not in said.err


def test_stacks_take_many_channels_either_side_when_fewer_than_the_pixels(tmp_path):
    first = np.random.default_rng(0).random((2, 5, 16, 12)).astype(np.float32)
    with open_stack(first) as src:
        assert (src.n_frames, src.channels, src.image_shape) == (2, 5, (16, 12))
    with open_stack(np.ascontiguousarray(first.transpose(0, 2, 3, 1))) as src:  # channels last
        assert (src.n_frames, src.channels, src.image_shape) == (2, 5, (16, 12))
        np.testing.assert_array_equal(src.read_raw(0, 2), first)
    with pytest.raises(AffineVAEError, match="fewer channels C than pixels on either side"):
        open_stack(np.zeros((2, 20, 16, 20), np.float32))


def test_an_image_without_contrast_is_said_so(tmp_path):
    from affinevae.data.imageset import choose_scaling

    scaling, why = choose_scaling(3.0, 3.0, np.full(100, 3.0))
    assert scaling.kind == "minmax" and why == "every value is 3: the images hold no contrast"
    np.save(tmp_path / "k.npy", np.full((32, 32), 3.0, np.float32))
    with pytest.warns(UserWarning, match="k.npy: every value is 3: the images hold no contrast; they all read as 0"):
        from affinevae.data.files import load_images

        assert float(load_images(str(tmp_path / "k.npy")).images.max()) == 0.0


@pytest.mark.parametrize("text, message", [
    ("row,col\n20,20\n30,abc\n40,40\n", "line 3: 'abc' is not a number"),
    ("row,col\n20,20,1,5\n", "line 2: 4 columns; coordinates need 2"),
    ("# picks\n20 20\n30 30 3\n", "line 3: 3 columns; coordinates need 2"),
])
def test_bad_coordinate_rows_are_named_by_line(tmp_path, text, message):
    (tmp_path / "c.csv").write_text(text)
    with pytest.raises(AffineVAEError, match=message):
        read_coordinates(tmp_path / "c.csv")


def test_given_objects_dropped_at_the_edge_are_said(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "s.tif", np.random.default_rng(0).random((40, 40)).astype(np.float32))
    (tmp_path / "c.csv").write_text("row,col\n2,2\n20,20\n")
    assert main(["patches", str(tmp_path / "s.tif"), "--window", "12", "--coords", str(tmp_path / "c.csv"),
                 "--no-progress", "--out", str(tmp_path / "p.npz")]) == 0
    out = capsys.readouterr().out
    assert "1 of the 2 coordinates in" in out and "lies within 6 pixels of an edge" in out
    assert "1 object from" in out


def test_a_key_for_a_file_without_arrays_is_refused(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((8, 8), np.float32))
    np.save(tmp_path / "a.npy", np.zeros((2, 8, 8), np.float32))
    for name in ("s.tif", "a.npy"):
        assert main(["info", str(tmp_path / name), "--key", "3"]) == 2
        assert f"{name}: key '3' applies only to .npz, HDF5, Zarr, FITS and .dm3/.dm4/.emd/.ser files" in capsys.readouterr().err


def test_long_label_and_coordinate_files_read_at_numpy_speed_with_the_same_values(tmp_path):
    """One number per line (labels) and numeric CSV rows (coordinates) are converted at once; a bad line
    is still named."""
    from affinevae.data.files import read_labels

    rng = np.random.default_rng(0)
    lab = rng.integers(-1, 10, 5000)
    (tmp_path / "l.txt").write_text("label\n" + "\n".join(map(str, lab)) + "\n# end\n")
    np.testing.assert_array_equal(read_labels(str(tmp_path / "l.txt"), 5000, "x"), lab)
    (tmp_path / "bad.txt").write_text("\n".join(["1"] * 10 + ["2.5"] + ["1"] * 10))
    with pytest.raises(AffineVAEError, match="line 11: '2.5' is not an integer label"):
        read_labels(str(tmp_path / "bad.txt"), None, "x")
    pts = np.round(rng.random((3000, 3)) * 100, 3)
    pts[:, 0] = np.floor(pts[:, 0] / 10)
    (tmp_path / "c.csv").write_text(" col, Row ,frame\n" + "\n".join(f"{c}, {r} ,{int(f)}" for f, r, c in pts))
    frames, centers = read_coordinates(tmp_path / "c.csv")
    np.testing.assert_array_equal(frames, pts[:, 0].astype(int))
    np.testing.assert_array_equal(centers, pts[:, 1:])


def test_neighbours_are_found_within_each_frame_only():
    """Objects of other frames at the same place are not neighbours; frames too small are left out."""
    from affinevae.data.objects import bond_orders, neighbour_spacing

    grid = np.stack(np.meshgrid(np.arange(6) * 10.0, np.arange(6) * 10.0, indexing="ij"), -1).reshape(-1, 2)
    grid += np.random.default_rng(0).normal(0, 1.5, grid.shape)  # no ties among the neighbours
    centers = np.concatenate([grid, grid + 0.5, [[500.0, 500.0]]])  # frame 1 sits 0.7 px from frame 0
    frames = np.array([0] * 36 + [1] * 36 + [2])
    assert neighbour_spacing(centers, frames) == pytest.approx(neighbour_spacing(grid)) and neighbour_spacing(grid) > 5
    assert neighbour_spacing(centers) == pytest.approx(0.5 * 2 ** 0.5)  # all in one frame
    orders = bond_orders(centers, frames)
    alone = bond_orders(grid)
    assert orders[4] == pytest.approx(alone[4]) and orders[6] == pytest.approx(alone[6])
    assert neighbour_spacing(centers[-1:], frames[-1:]) is None and bond_orders(centers[:3]) == {}


def test_first_images_of_a_float_stack_larger_than_the_memory_limit_are_read(tmp_path):
    """The range pass reads chunks sized to the memory limit (not 64 MiB, checked as 192 MiB), so -n 5 of a
    float .npy larger than --max-memory is read, equal to the first 5 of the whole file; a limit too small for
    one frame is one line naming the file and one frame."""
    from affinevae.data.files import load_images
    from affinevae.limits import memory_limit_set

    rng = np.random.default_rng(0)
    stack = (rng.random((3000, 28, 28), dtype=np.float32) * 2 - 0.5)  # 9.4 MB of float pixels outside [0, 1]
    path = tmp_path / "big.npy"
    np.save(path, stack)
    with pytest.warns(UserWarning, match="min-max scaling"):
        whole = load_images(str(path)).images[:5]
    with memory_limit_set("4M"), pytest.warns(UserWarning, match="min-max scaling"):
        first = load_images(str(path), n=5)  # the stack at 3 copies would need 27 MiB
    np.testing.assert_array_equal(first.images, whole)
    with memory_limit_set("8K"), open_stack(str(path)) as src:  # one 28x28 frame at 3 copies: 9.2 KiB
        with pytest.raises(AffineVAEError, match=r"^.*big\.npy: the declared frames \(1x28x28\) would need 9\.2 KiB, "
                                                 r"more than the 8\.0 KiB"):
            src.normalisation()


def test_float64_values_beyond_float32_are_said_to_overflow_not_to_be_nan(tmp_path, monkeypatch):
    """Finite float64 pixels over 3.4e38 are refused as too large for float32 (rescale them), with the count and
    the file, by every reader (whole, first n, with fill_nan, in memory); NaN pixels keep their message."""
    from affinevae.data import stacks
    from affinevae.data.files import load_images
    from affinevae.data.inputs import as_images

    big = np.full((20, 16, 16), 0.5)
    big[3, 2, 2:5] = 1e300
    big[7, 0, 0] = -2e39
    path = tmp_path / "f64.npy"
    np.save(path, big)
    for kw in ({}, {"n": 5}, {"fill_nan": True}, {"n": 5, "fill_nan": True}):
        with pytest.raises(AffineVAEError) as err:
            load_images(str(path), **kw)
        text = str(err.value)
        assert text.startswith(f"{path}: 4 pixel values overflow float32"), (kw, text)
        assert "first in image 3" in text and "rescale them" in text and "divide" in text, (kw, text)
        assert "NaN" not in text and "--fill-nan" not in text, (kw, text)
    with pytest.raises(AffineVAEError, match=r"^images: 4 pixel values overflow float32.*first in image 3.*rescale"):
        as_images(big)
    with pytest.raises(AffineVAEError, match=r"^images: 4 pixel values overflow float32.*first in image 3.*rescale"):
        as_images(torch.from_numpy(big))  # a float64 tensor: the same message
    half = np.full((6, 8, 8), 0.5, np.float32)
    half[2, 1, 1] = 1e5
    with pytest.raises(AffineVAEError, match=r"^images: 1 pixel value overflow float16.*1e\+05, first in image 2"):
        as_images(torch.from_numpy(half), dtype=torch.float16)
    with pytest.raises(AffineVAEError, match=r"^images: 1 pixel value overflow float16"):  # numpy has no bfloat16
        as_images(torch.from_numpy(half).to(torch.bfloat16), dtype=torch.float16)
    nan = np.full((20, 16, 16), 0.5)
    nan[4, 1, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    for kw in ({}, {"n": 5}):
        with pytest.raises(AffineVAEError, match=r"nan\.npy: 1 NaN or infinite pixel values \(first in image 4\).*--fill-nan"):
            load_images(str(tmp_path / "nan.npy"), **kw)
    monkeypatch.setattr(stacks, "SCAN_BYTES", 8 * 16 * 4)  # frames larger than a scan step: read in row bands
    with open_stack(str(path)) as src, pytest.raises(AffineVAEError, match=r"f64\.npy: 3 pixel values overflow "
                                                                           r"float32.*in frame 3 rows 0:8\)"):
        src.read(0, 1)


def test_labels_out_of_a_models_range_name_the_labels_file(tmp_path):
    """A labels file read with the images is recorded (meta['labels_source']) and named when as_images refuses
    its labels (a class beyond a cVAE's classes), whatever 'where' the caller gave; other labels are not."""
    from affinevae.data.files import load_images, set_labels
    from affinevae.data.inputs import as_images

    np.save(tmp_path / "im.npy", np.random.default_rng(0).random((30, 12, 12)).astype(np.float32))
    np.save(tmp_path / "lab.npy", np.arange(30) % 10)
    for n in (None, 20):  # read whole, or its first n
        data = load_images(str(tmp_path / "im.npy"), labels=str(tmp_path / "lab.npy"), n=n)
        assert data.meta["labels_source"] == str(tmp_path / "lab.npy")
        for where in ("images", data.source, "training images"):
            with pytest.raises(AffineVAEError, match=r"^" + str(tmp_path / "lab.npy").replace("\\", r"\\")
                               + r": labels must lie in \[0, 1\], got range \[0, 9\]$"):
                as_images(data, where=where, num_classes=2)
        with pytest.raises(AffineVAEError, match=r"^the set: labels must lie in \[0, 1\]"):  # labels given apart
            as_images(data, np.arange(len(data)) % 10, where="the set", num_classes=2)
    set_labels(data, np.arange(20) % 10, None)  # labels of no file: the record goes
    assert "labels_source" not in data.meta
    with pytest.raises(AffineVAEError, match=r"^the set: labels must lie in \[0, 1\]"):
        as_images(data, where="the set", num_classes=2)


def test_a_directory_given_as_labels_or_targets_is_said_to_be_one(tmp_path, capsys):
    from affinevae.data.files import read_labels, read_targets

    (tmp_path / "labs").mkdir()
    with pytest.raises(AffineVAEError, match=r"labs: a directory, not a labels file"):
        read_labels(str(tmp_path / "labs"), None, "x")
    with pytest.raises(AffineVAEError, match=r"labs: a directory, not a targets file"):
        read_targets(str(tmp_path / "labs"))
    np.save(tmp_path / "im.npy", np.random.default_rng(0).random((30, 12, 12)).astype(np.float32))
    assert main(["train", "--model", "vae", "--data", str(tmp_path / "im.npy"), "--labels", str(tmp_path / "labs"),
                 "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{tmp_path / 'labs'}: a directory, not a labels file (give the "
                                                    ".npy, .txt or .csv file itself)")
    with pytest.raises(AffineVAEError, match=r"nothing\.npy: labels file not found"):  # a missing file: as before
        read_labels(str(tmp_path / "nothing.npy"), None, "x")
