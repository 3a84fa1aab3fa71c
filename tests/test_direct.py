"""The direct stepping of ``parallel_wrapper_fn`` envs (marl/adapters/direct.py) gives exactly what PettingZoo's
``aec_to_parallel_wrapper`` gives: observations, rewards, flags, infos and agents, step by step, across resets."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.utils.conversions import aec_to_parallel_wrapper

from marl.adapters import make_env, resolve_env_config
from marl.adapters.direct import CHECKS, DirectParallel, direct

# (env, steps): every shipped env built on PettingZoo's conversion; dying agents (knights_archers_zombies, multiwalker),
# competing teams, communication actions, Box actions behind ClipOutOfBoundsWrapper, SuperSuit-preprocessed pixels
CASES = [("simple_spread", 120), ("simple_tag", 120), ("simple_world_comm", 60), ("simple_speaker_listener", 60),
         ("simple_reference", 60), ("multiwalker", 300), ("pursuit", 60), ("knights_archers_zombies", 300),
         ("cooperative_pong", 40), ("simple_adversary+pad", 60)]


def _same(a, b, what: str) -> None:
    if isinstance(a, dict):
        assert list(a) == list(b), what
        for k in a:
            _same(a[k], b[k], f"{what}[{k}]")
    elif isinstance(a, tuple | list):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{what}[{i}]")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=what)
        assert a.dtype == b.dtype, what
    else:
        assert a == b and type(a) is type(b), what


@pytest.mark.parametrize("name,steps", CASES)
def test_direct_stepping_equals_the_wrapper(name, steps):
    base, _, pad = name.partition("+")
    cfg = {**resolve_env_config(base), "pad": bool(pad)}  # pad: SuperSuit's wrappers inside a conversion of its own
    ref, env = make_env(cfg), direct(make_env(cfg))
    assert type(ref) is aec_to_parallel_wrapper and isinstance(env, DirectParallel)
    assert type(env.aec) not in CHECKS  # the checking wrappers are gone (subclasses that transform stay)
    rng = np.random.default_rng(0)
    episodes, seed = 0, 3
    out_ref, out = ref.reset(seed=seed), env.reset(seed=seed)
    _same(out_ref, out, "reset")
    for t in range(steps):
        actions = {}
        for a in ref.agents:
            space = ref.action_space(a)
            space.seed(int(rng.integers(2**31)))
            actions[a] = space.sample()
        out_ref, out = ref.step(actions), env.step(actions)
        _same(out_ref, out, f"step {t}")
        assert ref.agents == env.agents, f"agents after step {t}"
        if not ref.agents:
            episodes, seed = episodes + 1, seed + 1
            _same(ref.reset(seed=seed), env.reset(seed=seed), f"reset after step {t}")
    if base in ("simple_spread", "simple_tag"):
        assert episodes >= 3  # resets were exercised
        np.testing.assert_array_equal(ref.state(), env.state())
    ref.close()
    env.close()


def test_a_native_parallel_env_is_stepped_as_it_is():
    from test_adapters_core import Survivors

    native = Survivors()
    assert direct(native) is native


def test_direct_env_renders_and_gives_the_state():
    cfg = resolve_env_config("simple_spread")
    ref, env = make_env(cfg, render_mode="rgb_array"), direct(make_env(cfg, render_mode="rgb_array"))
    ref.reset(seed=1)
    env.reset(seed=1)
    np.testing.assert_array_equal(ref.render(), env.render())  # the wrapper's order check is not in the way
    np.testing.assert_array_equal(ref.state(), env.state())
    assert env.observation_space("agent_0") is env.wrapped.observation_space("agent_0")  # the rest: the wrapper's
    ref.close()
    env.close()
