"""Restoring env copies mid-episode (marl.adapters.replay): every backend rebuilds its copies from the recorded seeds
and actions so that the restored env continues bit for bit like the original; auto-resets are seeded; what cannot be
restored says why."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from test_adapters_vector import _cfg, _compare

from marl.adapters import make_vec_env
from marl.adapters.base import random_actions
from marl.adapters.replay import History, NotRestorable, episode_seed, plans

CASES = [("simple_spread", "inprocess"), ("connect_four", "inprocess"), ("simple_spread", "subprocess"),
         ("cartpole", "inprocess"), ("cartpole", "subprocess"), ("pendulum", "inprocess")]


def valid_final(out):
    """``out`` with the final observations zeroed where they carry no meaning (stale rows of earlier episodes): only
    copies that ended their episode and agents that are gone keep theirs."""
    for g, f in out.final_obs.items():
        f[~(out.done[:, None] | ~out.alive[g])] = 0.0
    out.final_state[~out.done] = 0.0
    return out


def saved(state: dict) -> dict:
    """``state`` through torch.save / torch.load(weights_only=True), as a checkpoint holds it."""
    blob = io.BytesIO()
    torch.save(state, blob)
    blob.seek(0)
    return torch.load(blob, weights_only=True)


@pytest.mark.parametrize(("name", "backend"), CASES, ids=[f"{n}-{b}" for n, b in CASES])
def test_restored_env_continues_exactly(name: str, backend: str) -> None:
    """Step an env past several episode ends, restore a fresh env from its record: same observation now, and the
    same outcomes (episodes included) for the same actions from here on."""
    extra = {"max_episode_steps": 30} if name in ("cartpole", "pendulum") else {"workers": 1}
    env, twin = (make_vec_env(_cfg(name, backend, **extra), 3, seed=5) for _ in range(2))
    try:
        rng = np.random.default_rng(0)
        out, n_eps = env.reset(), 0
        for _ in range(70):
            out = env.step(random_actions(env.spec, out, rng))
            n_eps += len(out.episodes)
        assert n_eps > 0 and (env.history.episode > 0).any() and (env.history.length > 0).all()
        again = twin.restore(saved(env.history.state_dict()))
        for key in ("obs", "alive", "acting", "action_mask"):
            for g in out.obs:
                x, y = getattr(out, key)[g], getattr(again, key)[g]
                assert (x is None and y is None) or np.array_equal(x, y), (key, g)
        np.testing.assert_array_equal(out.state, again.state)
        for _ in range(40):
            acts = random_actions(env.spec, out, rng)
            out, again = env.step(acts), twin.step(acts)
            _compare(valid_final(out), valid_final(again))
    finally:
        env.close()
        twin.close()


def test_auto_resets_are_seeded_from_run_seed_copy_and_episode() -> None:
    """Two runs with the same seed see the same later episodes; episode k of copy e gets its own seed."""
    seeds = {episode_seed(3, e, k) for e in range(4) for k in range(50)}
    assert len(seeds) == 200 and episode_seed(3, 2, 0) == 5 and episode_seed(None, 1, 4) is None
    firsts = []
    for _ in range(2):
        env = make_vec_env(_cfg("simple_spread", "inprocess"), 2, seed=0)
        env.reset(seed=11)
        acts = {g.name: np.zeros((2, g.n_agents), np.int64) for g in env.spec.groups}
        starts = []
        for _ in range(80):  # 25-step episodes: three auto-resets per copy
            out = env.step(acts)
            if out.done[0]:
                starts.append(out.obs[env.spec.groups[0].name][0].copy())
        env.close()
        firsts.append(starts)
    assert len(firsts[0]) == 3
    np.testing.assert_array_equal(np.stack(firsts[0]), np.stack(firsts[1]))
    assert not np.array_equal(firsts[0][0], firsts[0][1])  # each episode has a seed of its own


def test_history_records_since_each_reset_and_bounds_the_record() -> None:
    h = History(2, max_steps=3)
    h.reset(7)
    for t in range(5):
        h.record({"g": np.array([[t], [10 + t]])}, np.array([t == 1, False]))
    s = h.state_dict()
    assert s["seed"] == 7 and s["episode"].tolist() == [1, 0] and s["length"].tolist() == [3, 5]
    assert s["actions"][0]["g"].ravel().tolist() == [2, 3, 4]  # copy 0 reset after step 1
    assert s["actions"][1]["g"].ravel().tolist() == [10, 11, 12]  # copy 1: only the first 3 of 5 steps kept
    with pytest.raises(NotRestorable, match="copy 1 was 5 steps into its episode"):
        plans(s, 2)
    h.reset(None)
    h.record({"g": np.array([[1], [1]])}, np.array([False, False]))
    with pytest.raises(NotRestorable, match="without a seed"):
        plans(h.state_dict(), 2)
