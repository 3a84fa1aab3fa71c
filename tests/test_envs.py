"""The shipped custom envs (envs/): PettingZoo API and seed tests, their rules, and how the adapters see them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test
from pettingzoo.utils.conversions import parallel_to_aec

from envs import nim, relay
from marl.adapters import make_vec_env, resolve_env_config


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PettingZoo's tests warn about Dict observations and unlike agents
        yield


def test_nim_pettingzoo_api_and_seed():
    api_test(nim.env(render_mode="ansi"), num_cycles=300)
    seed_test(nim.env)


def test_relay_pettingzoo_api_and_seed():
    parallel_api_test(relay.parallel_env(render_mode="rgb_array"), num_cycles=300)
    parallel_seed_test(relay.parallel_env)
    api_test(parallel_to_aec(relay.parallel_env()), num_cycles=300)


def test_nim_rules_and_render():
    env = nim.env(n_stones=5, min_stones=5, render_mode="ansi")
    env.reset(seed=0)
    assert env.render().startswith("pile  5 | ooooo")
    obs, *_ = env.last()
    assert obs["action_mask"].tolist() == [1, 1, 1] and obs["observation"][5] == 1
    env.step(0)  # player_0 takes 1 -> 4 left
    env.step(2)  # player_1 takes 3 -> 1 left
    obs, *_ = env.last()
    assert obs["action_mask"].tolist() == [1, 0, 0]  # only one stone left to take
    assert env.observe("player_1")["action_mask"].tolist() == [0, 0, 0]  # not its turn
    env.step(0)  # player_0 takes the last stone and wins
    assert env.rewards == {"player_0": 1.0, "player_1": -1.0}
    assert all(env.terminations.values())


def test_nim_through_the_adapter_loser_is_paid_on_the_winners_move():
    env = make_vec_env(resolve_env_config("nim"), 4, seed=0)
    (g,) = env.spec.groups
    assert g.name == "player" and g.has_action_mask and env.spec.turn_based
    out = env.reset()
    rng = np.random.default_rng(0)
    finished = 0
    for _ in range(60):
        mask = out.action_mask["player"]
        acting = out.acting["player"]
        assert (acting.sum(1) == 1).all()
        assert mask[~acting].all()  # the waiting player's mask is all-legal (its action is ignored)
        act = (rng.random(mask.shape) * mask).argmax(-1)
        mover = acting.argmax(1)
        out = env.step({"player": act})
        for e in np.flatnonzero(out.done):  # the mover won: +1 for it, -1 for the other, in the same step
            r = out.reward["player"][e]
            assert r[mover[e]] == 1.0 and r[1 - mover[e]] == -1.0 and out.terminated["player"][e].all()
            finished += 1
        assert sorted(sum(ep.returns.values()) for ep in out.episodes) == [0.0] * len(out.episodes)
    assert finished >= 4


def test_relay_scout_leaves_and_runners_go_on():
    env = make_vec_env(resolve_env_config("relay"), 2, seed=0)
    assert [(g.name, g.n_agents) for g in env.spec.groups] == [("scout", 1), ("runner", 2)]
    assert env.spec.has_state and env.spec.state_shape == (4,)
    out = env.reset()
    stay = {"scout": np.zeros((2, 1), np.int64), "runner": np.ones((2, 2), np.int64)}
    for t in range(1, 5):
        out = env.step(stay)
        assert out.terminated["scout"][:, 0].tolist() == [t == 3] * 2
        assert out.alive["scout"][:, 0].tolist() == [t < 3] * 2
        assert out.alive["runner"].all()
        if t > 3:
            assert (out.obs["scout"] == 0).all() and (out.reward["scout"] == 0).all()
    np.testing.assert_allclose(out.reward["runner"], -0.02)
    env.close()


def test_relay_rgb_render():
    env = relay.parallel_env(render_mode="rgb_array")
    env.reset(seed=0)
    img = env.render()
    assert img.shape == (24, 12 * 9, 3) and img.dtype == np.uint8
