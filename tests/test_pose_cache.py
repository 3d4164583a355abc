"""The per-image pose cache of pose-optimised AVAE training: warm starts, the warm-trust rule of the
search, the free Rprop refinement by the training step, determinism and exact resume."""

from __future__ import annotations

import math

import pytest
import torch

import affinevae as av
from affinevae.errors import AffineVAEError
from affinevae.models.avae import AVAE
from affinevae.nn.transforms import get_transform
from affinevae.pose import PoseCache, SearchConfig, search_poses
from affinevae.pose.search import agrees
from affinevae.runs import read_run
from affinevae.training import TrainConfig, fit

RANGES = SearchConfig().ranges()


def test_cache_stores_by_index_and_offers_nan_where_nothing_is_known():
    cache = PoseCache(get_transform("rotation-scale"), RANGES)
    assert len(cache) == 0
    cache.store(torch.tensor([4, 1]), torch.tensor([[0.5, 0.1], [-1.0, 0.0]]))
    assert len(cache) == 5
    starts = cache.starts(torch.tensor([1, 2, 4, 7]))  # 7 grows the cache
    assert starts.shape == (4, 1, 2) and len(cache) == 8
    torch.testing.assert_close(starts[[0, 2], 0], torch.tensor([[-1.0, 0.0], [0.5, 0.1]]))
    assert torch.isnan(starts[[1, 3]]).all()
    assert cache.known(torch.tensor([1, 2, 4])).tolist() == [True, False, True]
    with pytest.raises(AffineVAEError, match="2 indices for 1 poses"):
        cache.store(torch.tensor([0, 1]), torch.zeros(1, 2))
    with pytest.raises(AffineVAEError, match="negative image index"):
        cache.starts(torch.tensor([-1]))
    with pytest.raises(AffineVAEError, match="min_step <= step"):
        PoseCache(get_transform("rotation"), RANGES, step=1.0, max_step=0.1)


def test_rprop_steps_grow_while_the_sign_holds_shrink_when_it_flips_and_wrap_angles():
    cache = PoseCache(get_transform("rotation"), RANGES, step=0.1, min_step=0.01, max_step=0.5, grow=2.0, shrink=0.25)
    idx = torch.tensor([0, 1])
    p = torch.tensor([[0.0], [math.pi - 0.05]])
    cache.store(idx, p)
    cache.descend(idx, p, torch.tensor([[3.0], [-1e-3]]))  # no sign yet: the initial size, against the sign
    torch.testing.assert_close(cache.params[:, 0], torch.tensor([-0.1, -math.pi + 0.05]))  # wrapped over pi
    assert cache.steps[:, 0].tolist() == pytest.approx([0.1, 0.1]) and cache.signs[:, 0].tolist() == [1.0, -1.0]
    p = cache.params.clone()
    cache.descend(idx, p, torch.tensor([[0.5], [2.0]]))  # the same sign: x2; a flip: x0.25
    assert cache.steps[:, 0].tolist() == pytest.approx([0.2, 0.025])
    torch.testing.assert_close(cache.params[:, 0], p[:, 0] - torch.tensor([0.2, 0.025]))
    for _ in range(3):  # the size stays within [min_step, max_step]
        cache.descend(idx, cache.params.clone(), torch.tensor([[1.0], [0.0]]))
    assert cache.steps[:, 0].tolist() == pytest.approx([0.5, 0.025])  # a zero gradient keeps the size


def test_attached_pose_is_refined_by_the_backward_of_the_loss_that_uses_it():
    cache = PoseCache(get_transform("rotation"), RANGES, step=0.05)
    idx = torch.tensor([3, 0])
    found = torch.tensor([[0.4], [-0.4]])
    cache.store(idx, found)
    leaf = cache.attach(idx, found)
    assert leaf.requires_grad and torch.equal(leaf.detach(), found)
    assert torch.equal(cache.params[[3, 0]], found)  # nothing moves before the backward
    (leaf ** 2).sum().backward()  # minimum at 0: both move 0.05 towards it
    torch.testing.assert_close(cache.params[[3, 0], 0], torch.tensor([0.35, -0.35]))
    for _ in range(3):  # the same sign again: the step grows by 1.2 each time
        leaf = cache.attach(idx, cache.params[idx])
        (leaf ** 2).sum().backward()
    torch.testing.assert_close(cache.steps[[3, 0], 0], torch.full((2,), 0.05 * 1.2 ** 3))
    assert bool((cache.params[[3, 0], 0].abs() < 0.35 - 0.05 * 3).all())


def test_cache_moves_with_the_model_but_is_not_saved_with_it():
    cache = PoseCache(get_transform("rotation"), RANGES)
    cache.store(torch.arange(5), torch.linspace(-1, 1, 5)[:, None])
    assert cache.state_dict() == {}
    assert cache.to(torch.float64).params.dtype == torch.float64  # a buffer: follows the module


def test_agreement_is_an_angle_in_radians_and_a_share_of_the_other_ranges():
    rs = get_transform("rotation-scale")  # log_scale range (-0.3, 0.3): half-width 0.3
    a = torch.tensor([[3.1, 0.0], [0.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[-3.1, 0.0], [0.2, 0.0], [0.0, 0.009]])
    # 3.1 and -3.1 are 0.08 apart; 0.1 rad is a log_scale difference of 0.1 / pi * 0.3 = 0.0095
    assert agrees(rs, a, b, 0.1, RANGES).tolist() == [True, False, True]
    assert agrees(rs, a, b, 0.005 * math.pi / 0.3, RANGES).tolist() == [False, False, False]  # 0.009 > 0.005
    tr = get_transform("translation")  # shift range (-0.2, 0.2): 0.1 rad is 0.1 / pi of 0.2
    shift = torch.tensor([[0.0, 0.006], [0.0, -0.007]])
    assert agrees(tr, shift, torch.zeros(2, 2), 0.1, RANGES).tolist() == [True, False]


def _avae_with_flagged_head(**search):
    model = AVAE(av.VAE(latent_dim=2, encoder="mlp", decoder="mlp", hidden=[16])).eval()
    model.head_trained.fill_(1)  # an untrained head, flagged trained: its poses are arbitrary but fixed
    return model, SearchConfig(restarts=4, keep=1, steps=1, head_views=1, **search)


def test_warm_trust_keeps_the_warm_start_where_the_head_agrees_and_searches_the_rest():
    model, cfg = _avae_with_flagged_head(warm_trust=0.1)
    torch.manual_seed(0)
    x = torch.rand(6, 1, 28, 28)
    head = model.predict_pose(x)[:, 0]
    warm = head.clone()
    warm[:2] += 0.05           # agree (within 0.1 rad)
    warm[2:4] += math.pi / 2   # disagree
    warm[4:] = float("nan")    # nothing cached
    res = search_poses(model, x, None, cfg, extra_starts=warm[:, None], generator=torch.Generator().manual_seed(0))
    assert res.searched.tolist() == [False, False, True, True, True, True]
    torch.testing.assert_close(res.params[:2], warm[:2])  # the cached pose, not the head's
    assert torch.isfinite(res.objective[2:]).all() and torch.isnan(res.objective[:2]).all()
    assert torch.isfinite(res.starts).all()  # unknown warm starts became the identity
    # head_trust and warm_trust together: an image is left alone when either says so
    both = search_poses(model, x, None, cfg.replace(head_trust=0.0), extra_starts=warm[:, None])
    assert not bool(both.searched.any())
    torch.testing.assert_close(both.params[:2], warm[:2])
    torch.testing.assert_close(both.params[2:], head[2:])
    with pytest.raises(AffineVAEError, match="warm_trust must be None or an angle"):
        SearchConfig(warm_trust=4.0)


def _fit_cached(data, epochs, out=None, resume=False, callbacks=(), **opts):
    torch.manual_seed(0)
    model = av.build_model("avae", latent_dim=2, encoder="mlp", decoder="mlp", hidden=[32], warm_start=True,
                           train_search={"restarts": 4, "keep": 1, "steps": 1, "head_views": 4, "head_trust": 0.9,
                                         "warm_trust": 0.5}, **opts)
    return fit(model, data, TrainConfig(epochs=epochs, batch_size=50, progress=False, val_split=0.0, seed=0),
               out=out, resume=resume, callbacks=list(callbacks))


def test_cached_poses_are_reused_and_refined_by_the_training_step():
    data = av.data.rotated_mnist("train", n=200, full_circle=True)
    res = _fit_cached(data, 2)
    searched = [h["pose_searched"] for h in res.history]
    assert searched[0] > 0.9 and searched[1] < searched[0] - 0.2  # the second epoch reuses the cache
    cache = res.model.cache
    assert len(cache) == 200 and torch.isfinite(cache.params).all()
    assert (cache.signs != 0).float().mean() > 0.9  # every image's pose got a gradient step ...
    record = res.model.pose_record()  # ... so the cache is not just the poses the search found
    assert not torch.allclose(cache.params[:, 0], torch.as_tensor(record.params[:, 0]))
    off = _fit_cached(data, 2, cache_refine=False).model.cache
    assert (off.signs == 0).all()
    torch.testing.assert_close(off.params[:, 0], torch.as_tensor(_fit_cached(data, 2, cache_refine=False)
                                                                 .model.pose_record().params[:, 0]))


def test_cached_training_is_deterministic_and_resumes_exactly_with_its_cache(tmp_path):
    data = av.data.rotated_mnist("train", n=100, full_circle=True)
    full = _fit_cached(data, 3, out=tmp_path / "full")
    again = _fit_cached(data, 3).model
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in full.model.state_dict().items())
    assert torch.equal(full.model.cache.params, again.cache.params)
    assert not any(k.startswith("cache.") for k in full.model.state_dict())  # not saved with the model

    def stop(rec):
        if rec["epoch"] >= 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        _fit_cached(data, 3, out=tmp_path / "part", callbacks=[stop])
    assert read_run(tmp_path / "part")["epochs_done"] == 2
    resumed = _fit_cached(data, 3, out=tmp_path / "part", resume=True)
    # the checkpoint carries the cache: the resumed epoch searches as the uninterrupted third epoch did ...
    first, third = full.history[0]["pose_searched"], full.history[2]["pose_searched"]
    assert resumed.history[-1]["epoch"] == 3 and third < first
    assert resumed.history[-1]["pose_searched"] == third
    # ... and ends with the uninterrupted run's exact weights and cache
    assert all(torch.equal(v, resumed.model.state_dict()[k]) for k, v in full.model.state_dict().items())
    assert torch.equal(resumed.model.cache.params, full.model.cache.params)
    assert torch.equal(resumed.model.cache.steps, full.model.cache.steps)
    assert av.load(tmp_path / "part").cache is not None  # the saved model loads (an empty cache)


def test_cache_state_round_trips_and_refuses_a_wrong_shape():
    cache = PoseCache(get_transform("rotation-scale"), RANGES)
    cache.store(torch.tensor([0, 2]), torch.tensor([[0.5, 0.1], [-1.0, 0.0]]))
    other = PoseCache(get_transform("rotation-scale"), RANGES)
    other.load_state(cache.state())
    for a, b in zip(other.state().values(), cache.state().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)  # row 1: NaN, no pose yet
    with pytest.raises(AffineVAEError, match="saved state shapes"):
        other.load_state({"params": torch.zeros(3, 2), "steps": torch.zeros(3, 1), "signs": torch.zeros(3, 2)})
    with pytest.raises(AffineVAEError, match="lacks 'signs'"):
        other.load_state({"params": torch.zeros(3, 2), "steps": torch.zeros(3, 2)})
