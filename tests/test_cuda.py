"""CUDA: learners keep every tensor of the hot path on ``device`` (no CPU condition in a ``torch.where`` on CUDA
tensors, no CPU index into a CUDA buffer). Skipped where no CUDA device exists; run on a GPU machine with
``python -m pytest tests/test_cuda.py``."""

from __future__ import annotations

import pytest
import torch
from conftest import compose

from marl.config import validate
from marl.core.normalization import RewardScaler, RunningMeanStd
from marl.train import build, make_learner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CASES = [
    ("cartpole", "ppo", ["algo.normalize_obs=true", "algo.normalize_reward=true"]),
    ("cartpole", "a2c", []),
    ("cartpole", "reinforce", []),
    ("simple_tag", "mappo", ["algo.normalize_obs=true", "algo.normalize_reward=true"]),
    ("simple_spread", "ippo", ["algo.normalize_reward=true"]),
    ("simple_speaker_listener", "happo", ["algo.variant=adaptive_kl"]),
    ("nim", "ppo", ["env.check=false"]),
    ("pendulum", "ddpg", ["algo.learning_starts=16", "algo.batch_size=8", "algo.normalize_obs=true"]),
]


@pytest.mark.parametrize(("env", "algo", "extra"), CASES, ids=[f"{e}-{a}" for e, a, _ in CASES])
def test_learner_iterations_on_cuda(env, algo, extra):
    on_policy = algo != "ddpg"
    cfg = validate(compose([f"env={env}", f"algo={algo}", "num_envs=2", "device=cuda", *extra,
                            *(["algo.num_steps=8"] if on_policy else [])]))
    e = build(cfg)
    try:
        L = make_learner(cfg, e, "cuda")
        L.reset_env(0)
        for _ in range(3 if on_policy else 20):
            metrics = L.iteration()
        assert all(torch.isfinite(torch.tensor(v)) or "explained" in k for k, v in metrics.items())
    finally:
        e.close()


def test_normalizers_take_cuda_tensors():
    x = torch.randn(64, 3, device="cuda")
    rms = RunningMeanStd((3,))
    rms.update(x, x > 0)
    assert rms.normalize(x).device.type == "cuda"
    s = RewardScaler(0.99, (3,))
    out = s(x[:4], torch.tensor([True, False, True, False], device="cuda"))
    assert out.device.type == "cuda"
