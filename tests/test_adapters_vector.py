"""Vectorization: subprocess == in-process, crashing envs -> EnvError naming copy and step (no hang), gymnasium."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from pettingzoo import ParallelEnv
from test_adapters_core import Survivors

from marl.adapters import make_vec_env, resolve_env_config
from marl.adapters.base import random_actions
from marl.errors import EnvError


class Crashy(Survivors):
    """Survivors whose copy seeded ``bad_seed`` fails at step ``at``: ``mode`` raise (an exception) or exit (dies)."""

    def __init__(self, bad_seed: int = 1, at: int = 3, mode: str = "raise"):
        super().__init__(death=100, max_cycles=100)
        self.bad_seed, self.at, self.mode, self.seed = bad_seed, at, mode, None

    def reset(self, seed=None, options=None):
        self.seed = seed
        return super().reset(seed, options)

    def step(self, actions):
        if self.seed == self.bad_seed and self.t + 1 == self.at:
            if self.mode == "exit":
                os._exit(3)
            raise RuntimeError("boom: the physics exploded")
        return super().step(actions)


def crashy(**kw) -> ParallelEnv:
    return Crashy(**kw)


def _cfg(name: str, backend: str, **extra) -> dict:
    if ":" not in name:
        cfg = dict(resolve_env_config(name))
    else:  # a synthetic env of the tests: its behaviour is the subject, not its API compliance
        cfg = {"name": name.split(":")[1], "entry_point": name, "check": False}
    return {**cfg, "backend": backend, "workers": 2, **extra}


def _compare(a, b, state: bool = True):
    for key in ("obs", "reward", "terminated", "alive", "acting", "final_obs", "action_mask"):
        for g in a.obs:
            x, y = getattr(a, key)[g], getattr(b, key)[g]
            if x is None:
                assert y is None
            else:
                np.testing.assert_array_equal(x, y, err_msg=f"{key}/{g}")
    for key in ("state", "final_state", "done", "truncated") if state else ("done", "truncated"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    assert [(e.env_index, e.returns, e.length) for e in a.episodes] == [
        (e.env_index, e.returns, e.length) for e in b.episodes
    ]


@pytest.mark.parametrize("name", ["simple_tag", "connect_four", "relay"])
def test_subprocess_matches_inprocess(name):
    envs = [make_vec_env(_cfg(name, backend), 3, seed=7) for backend in ("inprocess", "subprocess")]
    rng = [np.random.default_rng(1), np.random.default_rng(1)]
    outs = [e.reset() for e in envs]
    _compare(*outs)
    n_eps = 0
    for _ in range(40):
        outs = [e.step(random_actions(e.spec, o, r)) for e, o, r in zip(envs, outs, rng, strict=True)]
        _compare(*outs)
        n_eps += len(outs[0].episodes)
    assert n_eps > 0  # auto-reset was exercised
    for e in envs:
        e.close()


@pytest.mark.parametrize("backend", ["inprocess", "subprocess"])
def test_env_that_raises_names_copy_and_step(backend):
    env = make_vec_env(_cfg("test_adapters_vector:crashy", backend), 3, seed=0)
    out = env.reset()
    act = {"a": np.zeros((3, 3), np.int64)}
    for _ in range(2):
        out = env.step(act)
    msg = r"copy 1 at episode step 3 \(batch step 3\): RuntimeError: boom: the physics exploded"
    with pytest.raises(EnvError, match=msg) as err:
        env.step(act)
    assert "crashy" in str(err.value)
    env.close()
    assert out.obs["a"].shape == (3, 3, 2)


def test_worker_that_dies_raises_without_hanging():
    # one worker + the main process: the main process steps copies 0..1, the worker copies 2..3
    cfg = _cfg("test_adapters_vector:crashy", "subprocess", workers=1, kwargs={"mode": "exit", "bad_seed": 2})
    env = make_vec_env(cfg, 4, seed=0)
    env.reset()
    act = {"a": np.zeros((4, 3), np.int64)}
    env.step(act)
    env.step(act)
    start = time.monotonic()
    msg = r"worker 0 \(copies 2\.\.3\) exited with code 3 in copy 2 at episode step 3 during step at batch step 3"
    with pytest.raises(EnvError, match=msg):
        env.step(act)
    assert time.monotonic() - start < 10
    env.close()


def test_workers_start_while_the_caller_goes_on_and_a_failed_start_is_an_error_at_the_first_reset():
    env = make_vec_env(_cfg("bad_envs:fails_in_worker", "subprocess", workers=1), 4, seed=0)
    assert env.starting  # the constructor did not wait for the worker
    with pytest.raises(EnvError, match=r"building copy 2 in a worker process failed: .*RuntimeError: no licence"):
        env.reset()
    env.close()


def test_subprocess_main_process_share_raises_and_stops_the_workers():
    """A copy stepped by the main process itself fails: the error names it and the workers do not linger."""
    env = make_vec_env(_cfg("test_adapters_vector:crashy", "subprocess", workers=1, kwargs={"bad_seed": 0}), 4, seed=0)
    assert len(env.local.copies) == 2 and env.slices == [(2, 4)]
    procs = list(env.procs)
    env.reset()
    act = {"a": np.zeros((4, 3), np.int64)}
    env.step(act)
    env.step(act)
    with pytest.raises(EnvError, match=r"copy 0 at episode step 3 \(batch step 3\): RuntimeError: boom"):
        env.step(act)
    for p in procs:
        p.join(timeout=5)
        assert not p.is_alive()
    env.close()


def test_wrong_action_shape_is_an_error():
    env = make_vec_env(_cfg("simple_spread", "inprocess"), 2, seed=0)
    env.reset()
    with pytest.raises(EnvError, match=r"expected \(2, 3\)"):
        env.step({"agent": np.zeros((2, 2), np.int64)})
    env.close()


# ------------------------------------------------------------------------------------------- gymnasium


def test_gymnasium_truncation_keeps_final_obs():
    env = make_vec_env({**resolve_env_config("cartpole"), "max_episode_steps": 5}, 2, seed=0)
    (g,) = env.spec.groups
    assert (g.name, g.agents, g.obs_space.shape, env.spec.state_shape) == ("agent", ("agent",), (4,), (4,))
    out = env.reset()
    assert out.obs["agent"].shape == (2, 1, 4) and out.obs["agent"].dtype == np.float32
    prev = out
    for k in range(5):
        prev, out = out, env.step({"agent": np.zeros((2, 1), np.int64)})
        assert out.done.tolist() == [k == 4] * 2
    assert out.truncated.all() and not out.terminated["agent"].any()
    assert not np.allclose(out.final_obs["agent"], prev.obs["agent"])  # the step moved the cart
    assert not np.allclose(out.obs["agent"], out.final_obs["agent"])  # obs after done: the reset obs
    assert np.abs(out.obs["agent"]).max() <= 0.05  # CartPole resets near zero
    assert [(e.env_index, e.length, e.returns) for e in out.episodes] == [(i, 5, {"agent": 5.0}) for i in (0, 1)]
    env.close()


def test_gymnasium_subprocess_matches_inprocess_and_box_actions():
    cfgs = [{**resolve_env_config("pendulum"), "backend": b} for b in ("inprocess", "subprocess")]
    envs = [make_vec_env(c, 2, seed=3) for c in cfgs]
    outs = [e.reset() for e in envs]
    _compare(*outs)
    act = {"agent": np.full((2, 1, 1), 0.5, np.float32)}
    for _ in range(3):
        outs = [e.step(act) for e in envs]
        _compare(*outs)
    assert envs[0].spec.groups[0].action_space.shape == (1,)
    for e in envs:
        e.close()


@pytest.mark.parametrize("name", ["simple_spread", "multiwalker"])  # state from the observations / from env.state()
def test_state_off_leaves_state_zero_and_everything_else_equal(name):
    envs = [make_vec_env(_cfg(name, "inprocess"), 2, seed=3, state=s) for s in (True, False)]
    rng = [np.random.default_rng(0), np.random.default_rng(0)]
    outs = [e.reset() for e in envs]
    for _ in range(3):
        _compare(*outs, state=False)
        assert np.abs(outs[0].state).sum() > 0 and not outs[1].state.any()
        assert outs[0].state.shape == outs[1].state.shape
        outs = [e.step(random_actions(e.spec, o, r)) for e, o, r in zip(envs, outs, rng, strict=True)]
    for e in envs:
        e.close()


def test_only_centralized_critics_get_the_state():
    from marl.config import compose
    from marl.train import build

    for algo, has in (("ippo", False), ("mappo", True)):
        cfg = compose({"env": dict(resolve_env_config("simple_spread")), "algo": {"name": algo}, "num_envs": 2})
        env = build(cfg)
        assert bool(env.reset(seed=0).state.any()) == has
        env.close()
