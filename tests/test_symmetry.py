"""Mirror-equivariant networks (env.symmetry + algo.symmetric): the board flip and move permutation by hand, and a
learner whose policy and value treat a position and its mirror image alike, before and after training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import collected
from gymnasium import spaces

from marl.core.symmetry import Mirror
from marl.errors import ConfigError
from marl.train import make_learner

C4_PERM = [6, 5, 4, 3, 2, 1, 0]


def test_connect_four_mirror_by_hand() -> None:
    m = Mirror((6, 7, 2), 1, C4_PERM)
    board = torch.zeros(6, 7, 2)
    board[5, 0, 0] = 1.0  # own piece, bottom left
    board[5, 1, 1] = 1.0  # opponent piece next to it
    board[4, 0, 0] = 1.0
    x = torch.cat([board.reshape(-1), torch.tensor([1.0, 0.0])])  # + a 2-entry agent id, passed through
    y = m.obs(x)
    mb = y[:84].reshape(6, 7, 2)
    assert mb[5, 6, 0] == 1 and mb[5, 5, 1] == 1 and mb[4, 6, 0] == 1 and mb.sum() == 3
    assert torch.equal(y[84:], torch.tensor([1.0, 0.0]))
    assert torch.equal(m.obs(y), x)  # a mirror is its own inverse
    assert m.action(torch.tensor([0, 2, 3, 6])).tolist() == [6, 4, 3, 0]
    legal = torch.tensor([True, True, False, True, True, True, False])  # columns 2 and 6 full
    assert m.mask(legal).tolist() == [False, True, True, True, False, True, True]  # now columns 4 and 0 full
    # batched: [B, N, D]
    xs = torch.stack([x, x]).unsqueeze(1)
    assert torch.equal(m.obs(xs)[1, 0], y)


def test_mirror_rejects_what_does_not_fit() -> None:
    obs = spaces.Box(0, 1, (6, 7, 2))
    with pytest.raises(ConfigError, match="not a permutation"):
        Mirror.for_space("p", obs, spaces.Discrete(7), 1, [0, 1, 2, 3, 4, 5, 5], "c4")
    with pytest.raises(ConfigError, match="maps Discrete actions"):
        Mirror.for_space("p", obs, spaces.Box(-1, 1, (2,)), 1, [0, 1], "c4")
    with pytest.raises(ConfigError, match="not an axis"):
        Mirror.for_space("p", obs, spaces.Discrete(7), 3, C4_PERM, "c4")
    with pytest.raises(ConfigError, match="declares no symmetry"):
        Mirror.for_space("p", obs, spaces.Discrete(7), None, None, "c4")


def _check_equivariant(learner, m: Mirror, obs: torch.Tensor, mask: torch.Tensor) -> None:
    """pi(perm[a] | mirror(s)) == pi(a | s) for every legal a, then V(mirror(s)) == V(s)."""
    (g,) = learner.manager.policies
    with torch.no_grad():
        p = learner.manager.dist(g, obs, mask).probs
        pm = learner.manager.dist(g, m.obs(obs), m.mask(mask)).probs
        v = learner.critic({g: obs}, torch.zeros(obs.shape[0], 1))
        vm = learner.critic({g: m.obs(obs)}, torch.zeros(obs.shape[0], 1))
    assert torch.allclose(m.logits_back(pm), p, atol=1e-6)
    assert torch.allclose(vm, v, atol=1e-5)


@pytest.mark.parametrize("extra", [(), ("algo.sharing=per_agent",), ("algo.conv=[[8,4]]",)])
def test_symmetric_networks_are_mirror_equivariant(tiny_cfg, extra: tuple[str, ...]) -> None:
    cfg = tiny_cfg("env=connect_four", "algo=ppo", "algo.symmetric=true", "algo.num_steps=24", "num_envs=3",
                   "algo.update_epochs=2", *extra)
    with collected(cfg) as (env, learner, buf):
        (g,) = buf.groups
        obs, mask = buf.groups[g].obs[:24].reshape(72, 2, -1), buf.groups[g].mask[:24].reshape(72, 2, -1)
        asym = make_learner(tiny_cfg("env=connect_four", "algo=ppo", "algo.symmetric=false", "algo.num_steps=24",
                                     "num_envs=3", *extra), env, "cpu")  # symmetric=false: the preset turns it on
        m = learner.manager.policies[g].mirror
        with pytest.raises(AssertionError, match="logits_back"):  # a plain policy is not symmetric
            _check_equivariant(asym, m, obs, mask)
        _check_equivariant(learner, m, obs, mask)
        before = [p.clone() for p in learner.manager.parameters()]
        stats = learner.update(learner.make_batch(buf))  # a PPO update keeps it equivariant
        assert np.isfinite(stats["policy_loss"])
        assert any(not torch.equal(a, b) for a, b in zip(before, learner.manager.parameters(), strict=True))
        _check_equivariant(learner, m, obs, mask)

