"""affinevae.data.as_images: the one coercion of in-memory inputs, and its one-line errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from affinevae.data import ImageSet, as_images
from affinevae.errors import AffineVAEError


def test_accepted_forms_give_float32_nchw_and_int64_labels(tmp_path):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (4, 5, 6), dtype=np.uint8)
    x, y = as_images(u8)
    assert x.shape == (4, 1, 5, 6) and x.dtype == torch.float32 and y is None
    np.testing.assert_array_equal(x[:, 0].numpy(), u8)                # cast, never rescaled
    s = ImageSet(u8 / 255.0, labels=[0, 1, 2, 1])
    x, y = as_images(s)
    assert y.dtype == torch.int64 and y.tolist() == [0, 1, 2, 1]
    assert as_images(s, labels=np.array([3, 3, 3, 3]))[1].tolist() == [3, 3, 3, 3]   # given labels win
    x, y = as_images((torch.rand(4, 3, 5, 6), [1.0, 0.0, 2.0, 0.0]), image_shape=(3, 5, 6))
    assert x.shape == (4, 3, 5, 6) and y.tolist() == [1, 0, 2, 0]
    assert as_images(torch.rand(2, 1, 3, 3, dtype=torch.float64), dtype=None)[0].dtype == torch.float64
    assert as_images(torch.rand(2, 1, 3, 3, dtype=torch.float64))[0].dtype == torch.float32
    # no copy: a tensor in shape is returned as it is, a float32 array is shared
    t = torch.rand(3, 1, 4, 4)
    assert as_images(t, image_shape=(1, 4, 4))[0] is t
    a = np.random.default_rng(1).random((3, 4, 4)).astype(np.float32)
    assert np.shares_memory(as_images(a)[0].numpy(), a)
    # read-only memory maps and reversed views are read without torch warnings
    np.save(tmp_path / "m.npy", a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x, _ = as_images(np.load(tmp_path / "m.npy", mmap_mode="r"))
        np.testing.assert_array_equal(x[:, 0].numpy(), a)
        np.testing.assert_array_equal(as_images(a[::-1])[0][:, 0].numpy(), a[::-1])


@pytest.mark.parametrize("data,kw,match", [
    (np.zeros((2, 3)), {}, "must have shape"),
    (np.zeros((1, 1, 1, 2, 2)), {}, "must have shape"),
    (np.zeros((0, 1, 4, 4)), {}, "no images"),
    (np.zeros((2, 1, 0, 4)), {}, "empty"),
    (np.zeros((2, 4, 4)), {"image_shape": (1, 5, 5)}, r"image shape 1x4x4 .* model expects 1x5x5"),
    (np.zeros((2, 4, 4)), {"image_shape": (3, 4, 4)}, "model expects 3x4x4"),
    (np.array([[[np.nan, 0.0]]]), {}, "1 NaN or infinite"),
    (np.array([[[np.inf, 0.0]]]), {}, "NaN or infinite"),
    (np.stack([np.zeros((2, 2)), np.zeros((2, 2)), np.full((2, 2), np.nan)]), {}, r"4 NaN or infinite pixel values \(first in image 2\)"),
    (np.array([[["a", "b"]]]), {}, "must be numeric"),
    ((np.zeros((2, 4, 4)), [0, 1], [0, 1]), {}, "must be \\(images, labels\\)"),
    (np.zeros((2, 4, 4)), {"labels": [0, 1, 2]}, "3 labels for 2 images"),
    (np.zeros((2, 4, 4)), {"labels": [0.5, 1]}, "labels must be integers"),
    (np.zeros((2, 4, 4)), {"labels": [0, np.nan]}, "labels must be integers"),
    (np.zeros((2, 4, 4)), {"labels": [-1, 1]}, "labels must be >= 0"),
    (np.zeros((2, 4, 4)), {"labels": [[0, 1], [1, 0]]}, r"labels must have shape \(N,\)"),
    (np.zeros((2, 4, 4)), {"labels": [0, 3], "num_classes": 3}, r"labels must lie in \[0, 2\]"),
])
def test_each_bad_input_is_one_error_line_naming_where(data, kw, match):
    with pytest.raises(AffineVAEError, match=match) as info:
        as_images(data, where="my images", **kw)
    msg = str(info.value)
    assert msg.startswith("my images: ") and "\n" not in msg


@pytest.mark.parametrize("kw,match", [
    ({"angle": [0.0, np.nan, 1.0]}, "angle holds 1 NaN or infinite value$"),
    ({"angle": [0.0, np.inf, -np.inf]}, "angle holds 2 NaN or infinite values"),
    ({"angle": [[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]]}, r"angle must have shape \(N,\), got \(3, 2\)"),
    ({"angle": 0.5}, r"angle must have shape \(N,\), got \(\)"),
    ({"angle": ["a", "b", "c"]}, "angle must be numbers"),
    ({"shift": [[0.0, 0.0], [1.0], [0.0, 0.0]]}, r"shift must be an array of shape \(N, 2\) .* ragged"),
    ({"shift": np.zeros((3, 3))}, r"shift must have shape \(N, 2\), got \(3, 3\)"),
    ({"shift": [[0.0, 0.0], [np.nan, 0.0], [0.0, 0.0]]}, "shift holds 1 NaN"),
    ({"shift": np.zeros((2, 2))}, "2 values of shift for 3 images"),
    ({"scale": [1.0, 0.0, 1.0]}, "scale must be > 0"),
    ({"scale": [1.0, np.nan, 1.0]}, "scale holds 1 NaN"),
    ({"labels": [[0, 1], [1], [2]]}, r"labels must be an array of shape \(N,\) .* ragged"),
    ({"labels": [[0, 1], [1, 0], [2, 2]]}, r"labels must have shape \(N,\), got \(3, 2\)"),
    ({"labels": [0, 1]}, "2 labels for 3 images"),
    ({"labels": [0.5, 1, 2]}, "labels must be integers"),
])
def test_imageset_refuses_bad_per_image_arrays_naming_the_field(kw, match):
    with pytest.raises(AffineVAEError, match=f"^my set: .*{match}") as info:
        ImageSet(np.zeros((3, 4, 4)), source="my set", **kw)
    assert "\n" not in str(info.value)


def test_imageset_keeps_good_per_image_arrays():
    s = ImageSet(np.zeros((3, 4, 4)), labels=[[0], [1], [-1]], angle=np.zeros((3, 1), np.float32),
                 shift=np.zeros((3, 2)), scale=[1.0, 1.5, 0.5])
    assert s.labels.dtype == np.int64 and s.labels.tolist() == [0, 1, -1]
    assert s.angle.shape == (3,) and s.angle.dtype == np.float32 and s.shift.shape == (3, 2) and s.scale.shape == (3,)
    sub = s.subset([0, 2])
    assert sub.labels.tolist() == [0, -1] and sub.shift.shape == (2, 2)


def test_a_labels_file_replaces_a_builtin_sets_labels(tmp_path):
    """--labels with a built-in set (it was ignored: a "semi-supervised" run trained on every true
    label): one label per image of the split, or with n at least the first n; the key of a file
    does not apply."""
    from affinevae.data import load_dataset

    partial = np.full(300, -1)
    partial[:30] = np.arange(30) % 10
    np.save(tmp_path / "partial.npy", partial)
    data = load_dataset("mnist", n=200, labels=str(tmp_path / "partial.npy"))
    np.testing.assert_array_equal(data.labels, partial[:200])
    rot = load_dataset("rotated-mnist", n=300, labels=str(tmp_path / "partial.npy"))
    np.testing.assert_array_equal(rot.labels, partial)
    for kw, match in [({"n": 400}, r"300 labels for 400 images in mnist \(train split, -n 400: the first 400"),
                      ({}, r"300 labels for 60000 images in mnist \(train split\)$"),
                      ({"n": 10, "labels": str(tmp_path / "none.npy")}, "none.npy: labels file not found")]:
        with pytest.raises(AffineVAEError, match=match):
            load_dataset("mnist", **{"labels": str(tmp_path / "partial.npy"), **kw})
    # a run trained so labels its train split with the file; its test split keeps the true labels
    import json

    from affinevae.runs import Run

    run = tmp_path / "run"
    run.mkdir()
    (run / "train.json").write_text(json.dumps({"epochs_done": 1, "data": "mnist", "n": 300,
                                                "labels": str(tmp_path / "partial.npy"), "key": "images"}))
    np.testing.assert_array_equal(Run(run).data("train").labels, partial)
    np.testing.assert_array_equal(Run(run).data("test", n=50).labels, load_dataset("mnist", "test", n=50).labels)
