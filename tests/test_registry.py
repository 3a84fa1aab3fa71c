"""Registry: config loading, custom entry points and their errors, the API check, make_env."""

from __future__ import annotations

import copy

import gymnasium
import numpy as np
import pytest
from omegaconf import OmegaConf
from pettingzoo import AECEnv, ParallelEnv

from envs.relay import Relay
from marl.adapters import available_envs, make_env, make_vec_env, resolve_env_config
from marl.adapters.registry import wants_check
from marl.config import EnvConfig
from marl.errors import ConfigError, EnvError


class BadObs(Relay):
    """Breaks the API: a new observation-space object on every call (PettingZoo requires the same object)."""

    def observation_space(self, agent):
        return copy.deepcopy(super().observation_space(agent))


def bad_obs() -> ParallelEnv:
    return BadObs()


def raises(**kw):
    raise RuntimeError("cannot open the simulator")


def not_an_env(**kw):
    return object()


def gym_env(**kw):
    return gymnasium.make("CartPole-v1")


def _custom(entry_point: str, **extra) -> dict:
    return OmegaConf.merge(resolve_env_config("custom"), {"entry_point": entry_point, **extra})


def test_every_yaml_loads_into_the_schema():
    names = available_envs()
    assert {"cartpole", "simple_spread", "connect_four", "pistonball", "nim", "relay", "custom"} <= set(names)
    for name in names:
        if name == "custom":
            continue
        cfg = resolve_env_config(name)
        expected = f"vmas_{cfg.scenario}" if name == "vmas" else name  # env=vmas is named after its scenario
        assert cfg.name == expected and ":" in cfg.entry_point or cfg.kind == "gymnasium"


def test_unknown_env_name():
    with pytest.raises(ConfigError, match="unknown env 'simple_sprad'") as err:
        resolve_env_config("simple_sprad")
    assert "simple_spread" in err.value.fix


def test_custom_without_entry_point_is_a_clear_error():
    with pytest.raises(ConfigError, match="no entry point") as err:
        make_vec_env(resolve_env_config("custom"), 1)
    assert "env.entry_point=" in err.value.fix


@pytest.mark.parametrize(
    ("entry_point", "match"),
    [
        ("no_such_pkg.envs:env", "module 'no_such_pkg.envs' does not import: ModuleNotFoundError"),
        ("test_registry:no_such_factory", "has no attribute 'no_such_factory'"),
        ("test_registry", "not of the form 'module.path:factory'"),
        ("test_registry:raises", "raised while building the env .*cannot open the simulator"),
        ("test_registry:not_an_env", "returned a object, not a PettingZoo AECEnv or ParallelEnv"),
        ("test_registry:gym_env", "returned a TimeLimit"),
    ],
)
def test_custom_entry_point_errors(entry_point, match):
    with pytest.raises(EnvError, match=match) as err:
        make_vec_env(_custom(entry_point, check=False), 1)
    assert entry_point in str(err.value) and err.value.fix


def test_api_check_failure_quotes_the_assertion():
    msg = r"'test_registry:bad_obs' fails PettingZoo's parallel_api_test: AssertionError: observation_space should"
    with pytest.raises(EnvError, match=msg):
        make_vec_env(_custom("test_registry:bad_obs"), 1)
    env = make_vec_env(_custom("test_registry:bad_obs", check=False), 1)  # unchecked, it builds
    env.close()


def test_api_check_passes_for_good_envs():
    env = make_vec_env(_custom("envs.nim:env"), 1, seed=0)
    assert env.spec.turn_based
    env.close()


def test_max_episode_steps_is_gymnasium_only():
    with pytest.raises(ConfigError, match="only applies to gymnasium") as err:
        make_vec_env({**resolve_env_config("simple_spread"), "max_episode_steps": 10}, 1)
    assert "max_cycles" in err.value.fix


def test_unknown_env_key():
    with pytest.raises(ConfigError, match="invalid env config"):
        make_vec_env({**resolve_env_config("simple_spread"), "nmae": "x"}, 1)


def test_accepts_env_config_dataclass_and_kwargs_pass_through():
    cfg = EnvConfig(name="spread5", entry_point="mpe2.simple_spread_v3:parallel_env", kwargs={"N": 5, "max_cycles": 4})
    env = make_vec_env(cfg, 2, seed=0)
    assert env.spec.groups[0].n_agents == 5
    out = env.reset()
    for _ in range(4):
        out = env.step({"agent": np.zeros((2, 5), np.int64)})
    assert out.done.all() and out.truncated.all() and [e.length for e in out.episodes] == [4, 4]
    env.close()


def test_make_env_returns_one_preprocessed_raw_env():
    cfg = OmegaConf.merge(resolve_env_config("pistonball"), {"kwargs": {"n_pistons": 4}})
    env = make_env(cfg)
    assert isinstance(env, ParallelEnv)
    space = env.observation_space(env.possible_agents[0])
    assert space.shape == (32, 32, 3) and space.dtype == np.float32
    obs, _ = env.reset(seed=0)
    assert 0.0 <= obs["piston_0"].min() and obs["piston_0"].max() <= 1.0
    env.close()
    assert isinstance(make_env(resolve_env_config("connect_four")), AECEnv)
    assert isinstance(make_env(resolve_env_config("cartpole")), gymnasium.Env)


def test_render_through_the_vec_env():
    env = make_vec_env(resolve_env_config("nim"), 2, seed=0, render_mode="ansi")
    env.reset()
    assert "pile" in env.render(1)
    env.close()


@pytest.mark.parametrize(("entry_point", "check", "expected"), [
    ("my_pkg.my_env:parallel_env", None, True),  # a user's own env: checked unless told otherwise
    ("envs.relay:parallel_env", None, True),
    ("mpe2.simple_spread_v3:parallel_env", None, False),  # PettingZoo's own envs: covered by PettingZoo's tests
    ("pettingzoo.classic.connect_four_v3:env", None, False),
    ("my_pkg.my_env:parallel_env", False, False),
    ("mpe2.simple_spread_v3:parallel_env", True, True),
])
def test_api_check_defaults_on_for_user_envs(entry_point, check, expected):
    assert wants_check({"name": "x", "entry_point": entry_point, "check": check}) is expected


def test_drop_in_yaml_without_check_key_runs_the_api_check():
    """A user's YAML that leaves out ``check`` still gets PettingZoo's api_test on load."""
    with pytest.raises(EnvError, match="fails PettingZoo's parallel_api_test"):
        make_vec_env({"name": "bad", "entry_point": "bad_envs:breaks_api"}, 1)
