"""KL warm-up (TrainConfig.kl_warmup): the schedule, the weight the optimiser actually sees, exact resume."""

from __future__ import annotations

import pytest
import torch

import affinevae as av
from affinevae.errors import AffineVAEError
from affinevae.training import TrainConfig, fit, kl_weight, read_metrics

SMALL = dict(latent_dim=2, hidden=[16], channels=[4, 8])


@pytest.fixture(scope="module")
def digits():
    return av.data.load_mnist("train", n=64)


def make(**kw):
    torch.manual_seed(0)
    return av.build_model("vae", **{**SMALL, **kw})


def cfg(**kw):
    # one step per epoch (the whole set in one batch, nothing held out): step s is epoch s + 1
    return TrainConfig(**{"epochs": 4, "batch_size": 64, "val_split": 0.0, "progress": False, "lr": 3e-3, **kw})


def same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_schedule():
    assert [kl_weight(s, 10, 0.4) for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert kl_weight(0, 10, 0.0) == 1.0 and kl_weight(7, 1000, 0.0) == 1.0
    assert kl_weight(1, 3, 0.5) == pytest.approx(1 / 1.5)
    for bad in (1.0, -0.1, True, "0.2"):
        with pytest.raises(AffineVAEError, match="kl_warmup must be a fraction in"):
            TrainConfig(kl_warmup=bad)


def test_the_optimiser_sees_the_scheduled_kl_weight(digits):
    # 4 steps, warm-up over half: weights 0, 0.5, 1, 1. The first step is a beta = 0 step exactly;
    # a run with warm-up then differs from the plain one, and reports the weight of each epoch
    warm = fit(make(), digits, cfg(epochs=1, kl_warmup=0.5)).model   # 1 step of a 1-step run: weight 0
    free = fit(make(beta=0.0), digits, cfg(epochs=1)).model
    plain = fit(make(), digits, cfg(epochs=1)).model
    assert same(warm, free) and not same(warm, plain)
    res = fit(make(), digits, cfg(kl_warmup=0.5))
    assert [r["kl_weight"] for r in res.history] == [0.0, 0.5, 1.0, 1.0]
    assert not same(res.model, fit(make(), digits, cfg()).model)
    assert "kl_weight" not in fit(make(), digits, cfg(epochs=1)).history[0]
    # the KL weight is a factor on beta: with beta = 0 a warm-up changes nothing
    assert same(fit(make(beta=0.0), digits, cfg(kl_warmup=0.5)).model, fit(make(beta=0.0), digits, cfg()).model)


def test_resume_mid_warmup_equals_uninterrupted(digits, tmp_path):
    c = cfg(epochs=3, batch_size=16, kl_warmup=0.9)          # 4 steps an epoch, warm-up ends in epoch 3
    full = fit(make(), digits, c, out=tmp_path / "full").model

    def stop(rec):
        if rec["epoch"] >= 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        fit(make(), digits, c, out=tmp_path / "part", callbacks=[stop])
    resumed = fit(make(), digits, c, out=tmp_path / "part", resume=True).model
    assert same(full, resumed)
    assert [m["kl_weight"] for m in read_metrics(tmp_path / "part")] == [m["kl_weight"] for m in read_metrics(tmp_path / "full")]


def test_cli_kl_warmup_option(digits, tmp_path, capsys):
    from affinevae.cli import main

    assert main(["train", "--model", "vae", "--data", "mnist", "-n", "64", "--latent-dim", "2", "--hidden", "16",
                 "--epochs", "1", "--kl-warmup", "0.5", "--no-progress", "--out", str(tmp_path / "r")]) == 0
    assert av.training.read_run(tmp_path / "r")["train_config"]["kl_warmup"] == 0.5
    assert read_metrics(tmp_path / "r")[0]["kl_weight"] < 1.0
    assert main(["train", "--model", "vae", "--data", "mnist", "-n", "64", "--kl-warmup", "1.5",
                 "--out", str(tmp_path / "s")]) == 2
    assert "kl_warmup must be a fraction in [0, 1)" in capsys.readouterr().err


@pytest.mark.parametrize("discrete_beta", [0.0, 1.0])
def test_the_warmup_factor_weights_every_kl_of_a_joint_model_never_below_zero(digits, discrete_beta):
    # jrvae: loss = recon + f * (beta * KL_content + discrete_beta * KL_class) (+ named terms, off here).
    # The warm-up once subtracted (1 - f) * beta * (KL_content + KL_class) on top of the model's loss,
    # which gave the class KL the weight (f - 1) * beta < 0 when discrete_beta = 0.
    torch.manual_seed(0)
    model = av.build_model("jrvae", num_classes=3, invariances=("rotation",), class_balance=0.0, class_consistency=0.0,
                           equivariance=0.0, discrete_beta=discrete_beta, **SMALL).train()
    x = torch.as_tensor(digits.images[:16])
    losses = {}
    for f in (0.0, 0.5, 1.0):
        model.set_kl_factor(f)
        torch.manual_seed(1)
        out = model(x)
        losses[f] = out.loss.item() - out.recon.item()
        if discrete_beta == 1.0:  # both weights 1: the whole KL, times f
            assert out.loss.item() == pytest.approx(out.recon.item() + f * out.kl.item(), rel=1e-5, abs=1e-4)
    assert losses[0.0] == pytest.approx(0.0, abs=1e-5)        # no KL weight at all at the first warm-up step
    assert 0.0 < losses[0.5] == pytest.approx(losses[1.0] / 2, rel=1e-4)
    model.eval()  # evaluation (a validation loss) has the full weights whatever the factor
    model.set_kl_factor(0.0)
    with torch.no_grad():
        out = model(x)
    assert out.loss.item() > out.recon.item()


def test_the_factor_reaches_the_avae_inner_model_and_is_reset_after_training(digits):
    model = make()
    avae = av.build_model("avae", **SMALL)
    avae.set_kl_factor(0.25)
    assert {m.kl_factor for m in avae.modules() if isinstance(m, av.models.base.LatentModel)} == {0.25}
    seen = []
    fit(model, digits, cfg(epochs=2, kl_warmup=0.5), callbacks=[lambda rec: seen.append(model.kl_factor)])
    assert seen == [0.0, 1.0] and model.kl_factor == 1.0

    def stop(rec):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        fit(model, digits, cfg(epochs=4, kl_warmup=0.9), callbacks=[stop])
    assert model.kl_factor == 1.0   # an interrupted run does not leave its warm-up factor behind
