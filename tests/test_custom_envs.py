"""Custom envs as users write them: modules next to you, gymnasium factories, env.check's extra checks, unbounded
continuous actions."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY, read_rows, run_cli


@pytest.mark.parametrize("bound", ["clip", "squash"])
def test_ppo_learns_on_unbounded_box_actions(bound: str, tmp_path: Path) -> None:
    """Box(-inf, inf) actions, reward -|a - 0.5| per agent and step: a policy at its initial mean (a = 0) scores -10
    per episode (2 agents x 10 steps); PPO gets far above that, without NaN, with either action bound."""
    run = tmp_path / "run"
    res = run_cli(["env=custom", "algo=ppo", "env.entry_point=bad_envs:unbounded_actions", f"algo.action_bound={bound}",
                   *TINY, "num_envs=4", "algo.num_steps=64", "total_steps=4096", "eval_episodes=4",
                   f"run_dir={run}"], tmp_path)
    assert res.returncode == 0, res
    assert float(read_rows(run / "metrics.csv")[-1]["eval/return"]) > -4.0


GYM_MODULE = '''
import gymnasium
import numpy as np
from gymnasium import spaces


class Coin(gymnasium.Env):
    """Reward 1 for action 1, episodes of `length` steps."""

    metadata = {"render_modes": []}

    def __init__(self, length=4):
        self.observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.length = length

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), float(action), False, self.t >= self.length, {}


def make(length=4):
    return Coin(length)


def not_an_env():
    return 42
'''

PZ_MODULE = '''
from bad_envs import Walk


def parallel_env(**kwargs):
    return Walk(**kwargs)
'''


def test_a_gymnasium_factory_next_to_you_trains_without_pythonpath(tmp_path: Path) -> None:
    """`my_coin.py` in the working directory (not on PYTHONPATH): env.kind=gymnasium env.entry_point=my_coin:make,
    its kwargs passed; the episode length (5) shows in the metrics."""
    (tmp_path / "my_coin.py").write_text(GYM_MODULE)
    run = tmp_path / "run"
    res = run_cli(["env=custom", "env.kind=gymnasium", "env.entry_point=my_coin:make", "+env.kwargs.length=5",
                   "algo=ppo", *TINY, "total_steps=64", f"run_dir={run}"], tmp_path)
    assert res.returncode == 0, res
    assert float(read_rows(run / "metrics.csv")[-1]["eval/length"]) == 5.0


def test_a_pettingzoo_module_next_to_you_imports_without_pythonpath(tmp_path: Path) -> None:
    (tmp_path / "my_walk.py").write_text(PZ_MODULE)
    res = run_cli(["env=custom", "env.entry_point=my_walk:parallel_env", "algo=ppo", *TINY, "total_steps=64",
                   f"run_dir={tmp_path / 'run'}"], tmp_path)
    assert res.returncode == 0, res


def test_gymnasium_factory_errors_and_ids(tmp_path: Path, monkeypatch) -> None:
    from marl.adapters.gym import make_gym_env
    from marl.errors import EnvError

    (tmp_path / "my_coin2.py").write_text(GYM_MODULE)
    monkeypatch.chdir(tmp_path)
    env = make_gym_env({"entry_point": "my_coin2:make", "kwargs": {"length": 3}, "max_episode_steps": 2})
    env.reset(seed=0)
    assert env.step(1)[3] is False and env.step(1)[3] is True  # the time limit (2) cuts the episode of 3
    with pytest.raises(EnvError, match="returned a int, not a gymnasium.Env"):
        make_gym_env({"entry_point": "my_coin2:not_an_env"})
    assert make_gym_env({"entry_point": "CartPole-v1"}).spec.id == "CartPole-v1"  # registered ids still work


@pytest.mark.parametrize(("factory", "expected"), [
    ("walk", None),
    ("obs_off_space", "agent 'agent_1''s observation at step 3 is outside its observation space"),
    ("reward_misses_agent", "at step 2 its rewards dict has no entry for live agent 'agent_1'"),
    ("stranger_agent", "it reports rewards for agent 'intruder', which is not in possible_agents"),
])
def test_check_episode_names_the_agent_and_step(factory: str, expected: str | None) -> None:
    import bad_envs

    from marl.adapters.registry import check_episode

    problem = check_episode(getattr(bad_envs, factory)())
    assert problem == expected if expected is None else expected in problem


def test_check_episode_on_a_turn_based_game() -> None:
    """AEC: the shipped nim passes; a nim whose observation leaves its space is named, with the agent and move."""
    from envs.nim import env as nim_env
    from marl.adapters.registry import check_episode

    assert check_episode(nim_env()) is None
    broken = nim_env()
    observe = broken.unwrapped.observe
    broken.unwrapped.observe = lambda agent: {**observe(agent), "observation": observe(agent)["observation"] + 9}
    assert "observation at step 0 is outside its observation space" in check_episode(broken)
