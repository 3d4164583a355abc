"""affinevae.encoding: one batched loop and one rule for pose latents, for data sets and patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affinevae.data import ImageSet
from affinevae.data.patches import PatchSet
from affinevae.encoding import ObjectEncoding, encode_dataset, encode_patches, encode_patchset
from affinevae.errors import AffineVAEError
from affinevae.evaluation import encode_dataset as reexported

W = 12


def rvae(invariances):
    from affinevae.models.rvae import RVAE

    torch.manual_seed(0)
    return RVAE(image_shape=(1, W, W), latent_dim=2, invariances=invariances, hidden=(8, 8), encoder_hidden=(16,))


@pytest.fixture(scope="module")
def patches():
    return np.random.default_rng(0).random((7, W, W)).astype(np.float32)


@pytest.mark.parametrize("invariances", [(), ("rotation", "translation"), ("rotation", "translation", "scale")])
def test_pose_keys_are_exactly_the_models_pose_latents(patches, invariances):
    model = rvae(invariances).train()
    want = {"rotation": "angle", "translation": "shift", "scale": "scale"}
    pose = {want[i] for i in invariances}
    codes = encode_dataset(model, patches, batch_size=3, elbo=False)
    assert set(codes) == {"z_mean", "z_std"} | pose
    assert model.training                                          # the mode is restored
    shapes = {"angle": (7,), "shift": (7, 2), "scale": (7,)}
    for k in pose:
        assert codes[k].shape == shapes[k] and codes[k].dtype == np.float32 and np.isfinite(codes[k]).all()
    with torch.no_grad():
        enc = model.eval().encode(torch.from_numpy(patches)[:, None])
    np.testing.assert_allclose(codes["z_mean"], enc.z_mean.numpy(), atol=1e-6)
    if pose:
        np.testing.assert_allclose(codes["angle"], enc.pose.angle.numpy(), atol=1e-6)
    # patches follow the same rule through the same loop
    same = encode_patches(model, patches, batch_size=5)
    assert set(same) == set(codes)
    for k in codes:
        np.testing.assert_allclose(same[k], codes[k], atol=1e-6)
    # an ObjectEncoding, whose fields are fixed, stores the absent angle/shift as NaN
    centers = np.array([[10, 10], [20, 30], [6, 6], [15, 15], [40, 8], [9, 9], [30, 30]])
    ps = PatchSet(patches, centers, np.zeros(7, np.int64), W, (64, 64))
    obj = encode_patchset(model, ps, batch_size=4)
    assert obj.has_angle == ("angle" in pose) and obj.angle.shape == (7,) and obj.shift.shape == (7, 2)
    if "shift" in pose:
        sh = codes["shift"]
        np.testing.assert_allclose(obj.positions, centers + sh[:, ::-1] * (W / 2), atol=1e-5)
    else:
        assert np.isnan(obj.shift).all()
        np.testing.assert_allclose(obj.positions, centers)


def test_elbo_is_seeded_and_leaves_the_global_rng_alone(patches):
    model = rvae(("rotation",))
    torch.manual_seed(5)
    expect = torch.rand(3)
    torch.manual_seed(5)
    a = encode_dataset(model, ImageSet(patches), batch_size=4, seed=1)
    after = torch.rand(3)
    torch.testing.assert_close(after, expect)
    b = reexported(model, patches, batch_size=4, seed=1)            # evaluation re-exports the same function
    np.testing.assert_array_equal(a["elbo"], b["elbo"])
    assert a["elbo"].shape == (7,)
    assert not np.allclose(encode_dataset(model, patches, seed=2)["elbo"], a["elbo"])
    # a numpy integer seed (from np.arange, say) is the same seed; a float is one line
    np.testing.assert_array_equal(encode_dataset(model, ImageSet(patches), batch_size=4, seed=np.int64(1))["elbo"],
                                  a["elbo"])
    with pytest.raises(AffineVAEError, match=r"^seed must be an integer, got 1\.5$"):
        encode_dataset(model, patches, seed=1.5)


def test_input_errors():
    from affinevae.models import CVAE

    model = rvae(())
    with pytest.raises(AffineVAEError, match="model expects 1x12x12; cut patches with --window 12"):
        encode_patches(model, np.zeros((2, 10, 10), np.float32))
    with pytest.raises(AffineVAEError, match="model expects 1x12x12"):
        encode_dataset(model, np.zeros((2, 1, 10, 10), np.float32))
    with pytest.raises(AffineVAEError, match="batch_size must be an integer >= 1"):
        encode_dataset(model, np.zeros((2, W, W), np.float32), batch_size=0)
    cvae = CVAE(image_shape=(1, W, W), num_classes=2, latent_dim=2, encoder="mlp", decoder="mlp", hidden=(8,))
    with pytest.raises(AffineVAEError, match="encoding needs labels"):
        encode_dataset(cvae, np.zeros((2, W, W), np.float32))
    assert encode_dataset(cvae, np.zeros((2, W, W), np.float32), [0, 1])["labels"].tolist() == [0, 1]
    with pytest.raises(AffineVAEError, match="class-conditional; mapping needs"):
        encode_patches(cvae, np.zeros((2, W, W), np.float32))
    with pytest.raises(AffineVAEError, match="no patches"):
        encode_patchset(model, PatchSet(np.zeros((0, W, W), np.float32), np.zeros((0, 2), np.int64),
                                        np.zeros(0, np.int64), W))
    assert isinstance(ObjectEncoding.concat([encode_patchset(model, PatchSet(
        np.zeros((1, W, W), np.float32), np.array([[6, 6]]), np.zeros(1, np.int64), W))] * 2), ObjectEncoding)
