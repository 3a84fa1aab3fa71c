"""Mirror-image augmentation (env.symmetry + algo.augment): the board flip and move permutation by hand, and the
doubled on-policy batch a learner trains on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from marl.core.symmetry import Mirror
from marl.errors import ConfigError
from marl.train import build, make_learner

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


def test_augmented_batch_is_the_rollout_and_its_mirror_image(tiny_cfg) -> None:
    cfg = tiny_cfg("env=connect_four", "algo=ppo", "algo.augment=true", "algo.num_steps=24", "num_envs=3")
    env = build(cfg)
    try:
        learner = make_learner(cfg, env, "cpu")
        learner.reset_env(0)
        batch = learner.make_batch(learner.collect())
    finally:
        env.close()
    (g,) = batch.obs
    B = 24 * 3
    assert batch.size == 2 * B
    m = learner.mirrors[g]
    first = {k: getattr(batch, k)[g][:B] for k in ("obs", "mask", "action", "acting", "adv")}
    second = {k: getattr(batch, k)[g][B:] for k in ("obs", "mask", "action", "acting", "adv")}
    assert torch.equal(second["obs"], m.obs(first["obs"]))
    assert torch.equal(second["action"], m.action(first["action"]))
    assert torch.equal(second["mask"], m.mask(first["mask"]))
    assert torch.equal(second["acting"], first["acting"]) and torch.equal(second["adv"], first["adv"])
    assert torch.equal(batch.target[B:], batch.target[:B])
    # every mirrored move that is trained on is legal in the mirrored position
    acting = first["acting"]
    legal = second["mask"].gather(-1, second["action"].unsqueeze(-1)).squeeze(-1)
    assert acting.any() and legal[acting].all()
    # the mirrored samples' old log-probs are the current policy's (nothing has been updated yet)
    with torch.no_grad():
        lp = learner.manager.dist(g, second["obs"], second["mask"]).log_prob(second["action"])
    assert torch.allclose(batch.logp_old[g][B:], lp)
    # one PPO update runs on the doubled batch
    stats = learner.update(batch)
    assert np.isfinite(stats["policy_loss"])
