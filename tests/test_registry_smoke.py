"""Every registered env YAML builds through make_vec_env (E=2) and steps with random legal actions."""

from __future__ import annotations

import numpy as np
import pytest

from marl.adapters import available_envs, make_vec_env, resolve_env_config
from marl.adapters.base import random_actions

STEPS = {"pistonball": 5, "cooperative_pong": 5}  # pixel envs with SuperSuit preprocessing: slower steps


@pytest.mark.parametrize("name", [n for n in available_envs() if n not in ("custom", "vmas")])  # templates
def test_env_yaml_smoke(name):
    env = make_vec_env(resolve_env_config(name), 2, seed=0)
    spec = env.spec
    out = env.reset()
    rng = np.random.default_rng(0)
    for _ in range(STEPS.get(name, 30)):
        for g in spec.groups:
            assert out.obs[g.name].shape == (2, g.n_agents, *g.obs_space.shape)
            assert str(out.obs[g.name].dtype).endswith("float32")  # numpy, or torch for a VMAS env
            assert np.isfinite(np.asarray(out.obs[g.name])).all()
            if spec.turn_based:
                assert out.acting[g.name].sum() <= 2
        assert out.state.shape == (2, *spec.state_shape)
        if spec.turn_based:
            assert sum(out.acting[g.name].sum(1) for g in spec.groups).tolist() == [1, 1]
        out = env.step(random_actions(env.spec, out, rng))
    env.close()
