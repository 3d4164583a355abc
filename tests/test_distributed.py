"""Data-parallel training under torchrun (gloo on the CPU): the README's command, its resume, rank 0 alone writing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

import affinevae as av

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")

TRAIN = ["train", "--model", "vae", "--data", "mnist", "-n", "128", "--latent-dim", "2", "--hidden", "16",
         "--channels", "4,8", "--batch-size", "16", "--no-progress", "--seed", "3"]


def torchrun(*args: str, cwd) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "affinevae", *TRAIN, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_torchrun_trains_once_on_rank_0_and_resumes_bit_exactly(tmp_path):
    first = torchrun("--epochs", "2", "--out", "runs/a", cwd=tmp_path)
    assert first.stdout.count("trained vae on") == 1  # one summary: rank 0 prints, the other rank is silent
    torchrun("--epochs", "3", "--out", "runs/a", "--resume", cwd=tmp_path)
    torchrun("--epochs", "3", "--out", "runs/b", cwd=tmp_path)
    run = tmp_path / "runs" / "a"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]  # rank 0 alone wrote, no epoch twice
    assert json.loads((run / "train.json").read_text())["epochs_done"] == 3
    a, b = av.load(run).state_dict(), av.load(tmp_path / "runs" / "b").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # resumed == uninterrupted
