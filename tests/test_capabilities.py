"""Algorithm x env matrix driven by the capability flags in marl.config.ALGOS: every supported pair builds and runs
one tiny iteration; every unsupported pair is refused up front with a ConfigError that says why."""

import math

import pytest
import torch
from gymnasium import spaces

from marl.adapters.registry import resolve_env_config
from marl.config import ALGOS, compose
from marl.errors import ConfigError
from marl.train import build, make_learner

ENVS = {  # name: (env yaml, env overrides)
    "cartpole": ("cartpole", {}),
    "pendulum": ("pendulum", {}),
    "spread": ("simple_spread", {"kwargs": {"max_cycles": 10}}),
    "spread_continuous": ("simple_spread", {"kwargs": {"max_cycles": 10, "continuous_actions": True}}),
    "speaker_listener": ("simple_speaker_listener", {"kwargs": {"max_cycles": 10}}),
    "connect_four": ("connect_four", {}),
}
SMALL = {"on": {"num_steps": 4, "update_epochs": 1, "num_minibatches": 1, "hidden": [8], "group_size": 2},
         "off": {"learning_starts": 4, "batch_size": 4, "buffer_size": 64, "hidden": [8]}}


def supported(algo: str, spec) -> bool:
    info = ALGOS[algo]
    for g in spec.groups:
        box = isinstance(g.action_space, spaces.Box)
        if (box and not info.continuous) or (not box and not info.discrete):
            return False
    return info.turn_based or not spec.turn_based


@pytest.mark.parametrize("env_key", list(ENVS))
@pytest.mark.parametrize("algo", list(ALGOS))
def test_algo_env_matrix(algo, env_key):
    name, over = ENVS[env_key]
    env_cfg = resolve_env_config(name)
    env_cfg.merge_with(over)
    fields = ALGOS[algo].schema.__dataclass_fields__
    small = {k: v for k, v in SMALL["on" if ALGOS[algo].on_policy else "off"].items() if k in fields}
    cfg = compose({"env": env_cfg, "algo": {"name": algo, **small}, "num_envs": 2, "total_steps": 100})
    env = build(cfg)
    try:
        if not supported(algo, env.spec):
            with pytest.raises(ConfigError) as err:
                make_learner(cfg, env, "cpu")
            assert "fix:" in str(err.value)
            return
        torch.manual_seed(0)
        learner = make_learner(cfg, env, "cpu")
        learner.reset_env(0)
        metrics = {}
        while learner.env_steps < 16:
            metrics = learner.iteration()
        assert learner.env_steps >= 16
        assert metrics and all(math.isfinite(v) for k, v in metrics.items() if "explained_variance" not in k)
    finally:
        env.close()


def test_flags_cover_every_algorithm_config():
    for name, info in ALGOS.items():
        assert info.schema.__dataclass_fields__["name"] is not None, name
    assert not ALGOS["ddpg"].discrete and ALGOS["ddpg"].continuous and not ALGOS["ddpg"].on_policy
    assert ALGOS["mappo"].centralized_critic and ALGOS["happo"].needs_per_agent and not ALGOS["ippo"].centralized_critic
    assert not ALGOS["td3"].discrete and ALGOS["sac"].discrete and ALGOS["sac"].continuous
    assert all(ALGOS[a].centralized_critic and ALGOS[a].discrete and not ALGOS[a].turn_based
               for a in ("maddpg", "matd3"))
