"""Returns against hand-computed arrays: GAE, reward-to-go, n-step; truncation vs termination; turn-based credit."""

import pytest
import torch
from conftest import collected

from marl.core.returns import discounted_returns, gae, nstep_returns

T3 = dict(reward=torch.tensor([1.0, 2.0, 3.0]), value=torch.tensor([0.5, 1.0, 1.5]))


def flags(*idx, n=3):
    x = torch.zeros(n, dtype=torch.bool)
    for i in idx:
        x[i] = True
    return x


def test_gae_no_episode_end_matches_hand_computation():
    # delta = r + 0.9 V' - V ; A_t = delta_t + 0.9 * 0.8 * A_{t+1}
    adv = gae(**T3, next_value=torch.tensor([1.0, 1.5, 2.0]), terminated=flags(), done=flags(), gamma=0.9, lam=0.8)
    expected = torch.tensor([1.4 + 0.72 * (2.35 + 0.72 * 3.3), 2.35 + 0.72 * 3.3, 3.3])
    torch.testing.assert_close(adv, expected)


def test_gae_termination_cuts_and_does_not_bootstrap():
    adv = gae(**T3, next_value=torch.tensor([1.0, 9.0, 2.0]), terminated=flags(1), done=flags(1), gamma=0.9, lam=0.8)
    # step 1 is terminal: delta_1 = 2 - 1.0 (the 9.0 final value is ignored); step 2 starts a new episode
    torch.testing.assert_close(adv, torch.tensor([1.4 + 0.72 * 1.0, 1.0, 3.3]))


def test_truncation_bootstraps_from_final_observation_and_changes_the_answer():
    nv = torch.tensor([1.0, 5.0, 2.0])  # V(final obs of the truncated episode) = 5
    trunc = gae(**T3, next_value=nv, terminated=flags(), done=flags(1), gamma=0.9, lam=0.8)
    term = gae(**T3, next_value=nv, terminated=flags(1), done=flags(1), gamma=0.9, lam=0.8)
    torch.testing.assert_close(trunc, torch.tensor([1.4 + 0.72 * 5.5, 2 + 0.9 * 5.0 - 1.0, 3.3]))
    assert trunc[1] != term[1] and trunc[0] != term[0]


def test_reward_to_go_with_episode_end_and_bootstrap():
    r = torch.ones(4)
    g = discounted_returns(r, torch.tensor([0.0, 0.0, 0.0, 4.0]), flags(1, n=4), flags(1, n=4), gamma=0.5)
    # episode 1: [1 + .5 * 1, 1]; episode 2 is cut by the rollout end and bootstraps from 4
    torch.testing.assert_close(g, torch.tensor([1.5, 1.0, 1 + 0.5 * 3.0, 3.0]))


def test_reward_to_go_pure_monte_carlo():
    r = torch.tensor([1.0, 0.0, 2.0])
    g = discounted_returns(r, torch.zeros(3), flags(2), flags(2), gamma=0.9)
    torch.testing.assert_close(g, torch.tensor([1 + 0.81 * 2, 0.9 * 2, 2.0]))


def test_gae_with_lambda_one_is_return_minus_value():
    nv = torch.tensor([1.0, 1.5, 2.0])
    adv = gae(**T3, next_value=nv, terminated=flags(), done=flags(), gamma=0.9, lam=1.0)
    ret = discounted_returns(T3["reward"], nv, flags(), flags(), gamma=0.9)
    torch.testing.assert_close(adv, ret - T3["value"])


@pytest.mark.parametrize(
    "terminated,done,nv1,expected",
    [
        ([], [], 20.0, [1 + 0.5 * 2 + 0.25 * 20, 2 + 0.5 * 3 + 0.25 * 30, 3 + 0.5 * 4 + 0.25 * 40, 4 + 0.5 * 40]),
        ([1], [1], 20.0, [1 + 0.5 * 2, 2.0, 3 + 0.5 * 4 + 0.25 * 40, 4 + 0.5 * 40]),
        ([], [1], 8.0, [1 + 0.5 * 2 + 0.25 * 8, 2 + 0.5 * 8, 3 + 0.5 * 4 + 0.25 * 40, 4 + 0.5 * 40]),
    ],
    ids=["no-end", "terminated", "truncated"],
)
def test_nstep_returns(terminated, done, nv1, expected):
    r = torch.tensor([1.0, 2.0, 3.0, 4.0])
    nv = torch.tensor([10.0, nv1, 30.0, 40.0])
    g = nstep_returns(r, torch.zeros(4), nv, flags(*terminated, n=4), flags(*done, n=4), gamma=0.5, n=2)
    torch.testing.assert_close(g, torch.tensor(expected))


def test_turn_based_credit_loser_gets_minus_one_on_own_move():
    # A moves at t=0 and t=2 (winning); B moves at t=1. The game ends on A's move: B's -1 arrives at t=2,
    # a step where B does not act; it must be credited to B's own move at t=1.
    z = torch.zeros(3)
    end = flags(2)
    adv_b = gae(torch.tensor([0.0, 0.0, -1.0]), z, z, end, end, gamma=0.9, lam=1.0, acting=flags(1))
    torch.testing.assert_close(adv_b, torch.tensor([0.0, -1.0, 0.0]))
    adv_a = gae(torch.tensor([0.0, 0.0, 1.0]), z, z, end, end, gamma=0.9, lam=1.0, acting=flags(0, 2))
    # one discount per own move: A's first move is worth 0.9 * 1
    torch.testing.assert_close(adv_a, torch.tensor([0.9, 0.0, 1.0]))


def test_turn_based_next_value_is_value_at_own_next_turn():
    # agent acts at 0 and 2; its value there is 1 and 3; the value at t=1 (opponent's turn) must be skipped
    v = torch.tensor([1.0, 100.0, 3.0])
    nv = torch.tensor([100.0, 3.0, 0.5])
    adv = gae(torch.tensor([0.5, 0.25, 0.0]), v, nv, flags(), flags(), gamma=1.0, lam=0.0, acting=flags(0, 2))
    # A_0 = (r0 + r1) + V(own next turn = 3) - V_0 ; A_2 = 0 + 0.5 - 3
    torch.testing.assert_close(adv, torch.tensor([0.75 + 3.0 - 1.0, 0.0, -2.5]))


def test_dead_agent_padding_contributes_nothing():
    acting = flags(0, 1, n=4)
    adv = gae(torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.zeros(4), torch.zeros(4), flags(1, n=4),
              flags(1, 3, n=4), gamma=0.9, lam=0.95, acting=acting)
    torch.testing.assert_close(adv, torch.tensor([1 + 0.9 * 0.95 * 1.0, 1.0, 0.0, 0.0]))


def test_batched_shapes_match_per_column_computation():
    torch.manual_seed(0)
    r, v, nv = torch.randn(6, 3, 2), torch.randn(6, 3, 2), torch.randn(6, 3, 2)
    term = torch.rand(6, 3, 2) < 0.2
    done = term | (torch.rand(6, 3, 2) < 0.1)
    act = torch.rand(6, 3, 2) < 0.7
    full = gae(r, v, nv, term, done, 0.99, 0.9, act)
    for e in range(3):
        for n in range(2):
            col = gae(r[:, e, n], v[:, e, n], nv[:, e, n], term[:, e, n], done[:, e, n], 0.99, 0.9, act[:, e, n])
            torch.testing.assert_close(full[:, e, n], col)


def test_learner_bootstraps_truncated_episodes_from_the_final_observation(tiny_cfg) -> None:
    """In the learner: at a truncated step the value target is ``r + gamma * V(final obs)`` (the value of the
    observation the episode was cut at, not of the next episode's first one); elsewhere GAE runs as usual."""
    cfg = tiny_cfg("env=cartpole", "algo=ppo", "env.max_episode_steps=5", "algo.num_steps=16", "num_envs=2",
                   "algo.gae_lambda=0.9")
    with collected(cfg) as (_, learner, buf):
        adv, target, _, _ = learner.advantages(buf)
        (g,) = buf.groups
        assert bool(buf.truncated.any())
        with torch.no_grad():
            v_final = learner.values({g: buf.groups[g].final_obs}, buf.final_state)  # [T, E, 1]
            v_next = learner.values({g: buf.groups[g].obs[1:]}, buf.state[1:])
        if learner.value_norm is not None:
            v_final, v_next = learner.value_norm.denormalize(v_final), learner.value_norm.denormalize(v_next)
            target = learner.value_norm.denormalize(target)
        r = buf.groups[g].reward[..., 0]
        trunc = buf.truncated
        torch.testing.assert_close(target[trunc][:, 0], r[trunc] + cfg.algo.gamma * v_final[trunc][:, 0])
        assert not torch.allclose(v_final[trunc], v_next[trunc])  # the next episode's first obs would differ


def test_learner_bootstraps_an_agent_truncated_on_its_own(tiny_cfg) -> None:
    """IPPO: an agent truncated while the others go on (``survivors`` with ``leave=trunc``: ``a_1`` leaves after step
    2 of 4) gets the target ``r + gamma * V(its final obs)`` at its last move, not the value of a padded observation
    further on; its teammates' trajectories are untouched."""
    cfg = tiny_cfg("env=custom", "env.entry_point=test_adapters_core:survivors", "+env.kwargs.leave=trunc",
                   "+env.kwargs.death=2", "+env.kwargs.max_cycles=4", "env.check=false", "algo=ippo",
                   "algo.num_steps=8", "num_envs=2", "algo.gae_lambda=0.9")
    with collected(cfg) as (_, learner, buf):
        (g,) = buf.groups
        gb = buf.groups[g]
        left = gb.left  # [T, E, 3]
        assert left[..., 1].sum() == 4 and not left[..., [0, 2]].any()  # a_1, twice per copy in 8 steps
        torch.testing.assert_close(gb.final_obs[left], torch.tensor([[2.0, 2.0]] * 4))  # its obs after step 2
        with torch.no_grad():  # before advantages(), which updates the value normalizer's statistics
            v_final = learner.values({g: gb.final_obs}, buf.state[1:])  # [T, E, 3]
            v_next = learner.values({g: gb.obs[1:]}, buf.state[1:])
        if learner.value_norm is not None:
            v_final, v_next = learner.value_norm.denormalize(v_final), learner.value_norm.denormalize(v_next)
        _, target, _, _ = learner.advantages(buf)
        if learner.value_norm is not None:
            target = learner.value_norm.denormalize(target)
        expected = gb.reward[left] + cfg.algo.gamma * v_final[left]
        torch.testing.assert_close(target[left], expected)
        assert not torch.allclose(v_final[left], v_next[left])  # the padded observation would give another target
