"""Adaptive KL reads the KL of the policy after the update; observation statistics count every observation once."""

from __future__ import annotations

import pytest
import torch
from conftest import compose

from marl.algos.onpolicy import PGBatch
from marl.config import validate
from marl.train import build, make_learner


def learner(*overrides: str):
    cfg = validate(compose(["env=cartpole", "num_envs=2", "algo.num_steps=8", *overrides]))
    torch.manual_seed(0)
    L = make_learner(cfg, build(cfg), "cpu")
    L.reset_env(0)
    return L


def test_policy_kl_hand_computed():
    """Old policy 1/2 on each of two actions, new policy (1/4, 3/4): r = 0.5 for action 0 and 1.5 for action 1;
    KL estimates (r - 1) - log r = 0.19315 and 0.09453, mean 0.14384 (the non-acting entry is left out)."""
    L = learner("algo=ppo", "algo.variant=adaptive_kl")
    probs = torch.tensor([0.25, 0.75])
    L.manager.dist = lambda k, obs, mask: torch.distributions.Categorical(probs=probs.expand(*obs.shape[:-1], 2))
    b = 3
    batch = PGBatch(obs={"agent": torch.zeros(b, 1, 4)}, mask={"agent": None},
                    action={"agent": torch.tensor([[0], [1], [1]])},
                    logp_old={"agent": torch.full((b, 1), float(torch.log(torch.tensor(0.5))))},
                    acting={"agent": torch.tensor([[True], [True], [False]])}, adv={"agent": torch.zeros(b, 1)},
                    state=torch.zeros(b, 4), target=torch.zeros(b, 1), value_old=torch.zeros(b, 1),
                    vmask=torch.zeros(b, 1, dtype=torch.bool))
    expected = ((0.5 - 1 - torch.log(torch.tensor(0.5))) + (1.5 - 1 - torch.log(torch.tensor(1.5)))) / 2
    assert L.policy_kl(batch) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize(("kl", "factor"), [(0.05, 2.0), (0.001, 0.5), (0.01, 1.0)])
def test_adaptive_kl_follows_the_kl_after_the_update(kl, factor):
    """The coefficient doubles / halves / stays from the post-update KL (target 0.01), whatever the minibatches'
    pre-step KLs were (the first of which is always 0)."""
    L = learner("algo=ppo", "algo.variant=adaptive_kl", "algo.kl_target=0.01", "algo.kl_coef=0.2")
    seen = []
    L.policy_kl = lambda batch: (seen.append(batch.size), kl)[1]
    metrics = L.iteration()
    assert seen and L.kl_coef.beta == pytest.approx(0.2 * factor)
    assert metrics["losses/policy_kl"] == kl


def test_adaptive_kl_uses_the_real_final_policy():
    L = learner("algo=ppo", "algo.variant=adaptive_kl")
    batch = L.make_batch(L.collect())
    before = L.policy_kl(batch)
    stats = L.update(batch)
    assert before == pytest.approx(0.0, abs=1e-7)  # the batch's own policy
    assert stats["policy_kl"] == pytest.approx(L.policy_kl(batch)) and stats["policy_kl"] > 0


@pytest.mark.parametrize("algo", ["ppo", "mappo"])
def test_observation_statistics_count_each_observation_once(algo):
    """Rollout 1 counts its first observation and the T that follow; rollout 2 only its T new ones."""
    L = learner(f"algo={algo}", "algo.normalize_obs=true")
    eps = float(L.obs_rms["agent"].count[0])
    L.iteration()
    assert float(L.obs_rms["agent"].count[0]) == pytest.approx(eps + 2 * 9)
    L.iteration()
    assert float(L.obs_rms["agent"].count[0]) == pytest.approx(eps + 2 * 17)
    if algo == "mappo":
        assert float(L.state_rms.count.flatten()[0]) == pytest.approx(eps + 2 * 17)
