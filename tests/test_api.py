"""The Python API (marl.train / marl.load / marl.evaluate): the README example runs; the same config and errors as the
CLI; policy.act on raw PettingZoo and gymnasium observations gives the learner's own actions and honours masks."""

from __future__ import annotations

import re
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from conftest import ROOT

import marl
from marl.errors import ConfigError
from marl.train import build

TINY = {"num_envs": 2, "eval_episodes": 2, "progress": False, "algo.num_steps": 16}


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs(tmp_path: Path, monkeypatch) -> None:
    """The README's example, with a tiny budget: train, load, act in a PettingZoo loop, evaluate."""
    code = readme_example()
    assert "total_steps=50_000" in code and "episodes=20" in code
    code = code.replace("total_steps=50_000", "total_steps=200, num_envs=2, eval_episodes=2, progress=False, "
                                              "**{'algo.num_steps': 25}").replace("episodes=20", "episodes=2")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the project's own README
    run = scope["run"]
    assert run.dir.is_dir() and (run.dir / "checkpoints" / "final.pt").is_file()
    assert "eval/return" in run.metrics and run.config.algo.lr == 1e-3 and run.config.algo.critic_lr == 5e-4
    assert scope["table"].summary["n"] == 2


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory) -> marl.Run:
    out = tmp_path_factory.mktemp("api")
    return marl.train(env="cartpole", algo="ppo", total_steps=64, run_dir=str(out / "cp"), **TINY)


def test_train_composes_like_the_cli(cartpole_run) -> None:
    cfg = cartpole_run.config
    assert cfg.preset == "cartpole_ppo" and cfg.algo.gamma == 0.98  # the tuned preset applies, as on the CLI
    assert cfg.total_steps == 64 and cfg.num_envs == 2  # and the overrides win over it
    assert (cartpole_run.dir / "config.yaml").is_file() and "preset: cartpole_ppo" in (
        cartpole_run.dir / "config.yaml").read_text()


def test_train_raises_the_cli_errors_and_creates_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="algo=ddpg needs continuous"):
        marl.train(env="cartpole", algo="ddpg", total_steps=64)
    with pytest.raises(ConfigError, match="unknown env 'cartpol'"):
        marl.train(env="cartpol", algo="ppo")
    with pytest.raises(ConfigError, match="unknown config key 'algo.lrr'"):
        marl.train(env="cartpole", algo="ppo", **{"algo.lrr": 1.0})
    assert not list(tmp_path.iterdir())


def test_gym_policy_acts_as_the_learner(cartpole_run) -> None:
    policy = marl.load(cartpole_run.dir)
    env = gymnasium.make("CartPole-v1")
    obs, _ = env.reset(seed=3)
    for _ in range(20):
        action = policy.act(obs)
        want = policy.learner.act({"agent": torch.as_tensor(obs, dtype=torch.float32)[None, None]},
                                  {"agent": None}, True)["agent"]
        assert isinstance(action, int) and action == int(want)
        obs, *_ = env.step(action)
    policy.reset()


def test_policy_of_a_checkpoint_file_and_unknown_agents(tmp_path: Path) -> None:
    run = marl.train(env="tictactoe", algo="ppo", total_steps=64, run_dir=str(tmp_path / "ttt"), **TINY)
    policy = marl.load(run.dir / "checkpoints" / "final.pt")
    assert policy.agents == ("player_1", "player_2")
    with pytest.raises(ConfigError, match="'nobody' is not an agent of env 'tictactoe'"):
        policy.act({"nobody": np.zeros(3)})


def test_aec_policy_honours_action_masks(tmp_path: Path) -> None:
    """Every move the policy picks in real tic-tac-toe games is legal, and equals the learner's batched choice."""
    from pettingzoo.classic import tictactoe_v3

    run = marl.train(env="tictactoe", algo="ppo", total_steps=64, run_dir=str(tmp_path / "ttt"), **TINY)
    policy = marl.load(run.dir)
    env = tictactoe_v3.env()
    for seed in range(3):
        env.reset(seed=seed)
        for agent in env.agent_iter():
            obs, _, term, trunc, _ = env.last()
            action = None if term or trunc else policy.act({agent: obs})[agent]
            if action is not None:
                assert obs["action_mask"][action] == 1
            env.step(action)


def test_parallel_policy_matches_the_adapter_batch(tmp_path: Path) -> None:
    """On simple_spread the actions of policy.act(obs dict) are the learner's actions on the adapter's own batch."""
    run = marl.train(env="simple_spread", algo="mappo", total_steps=100, run_dir=str(tmp_path / "sp"),
                     **{**TINY, "algo.num_steps": 25})
    policy = marl.load(run.dir)
    vec = build(run.config, num_envs=1, seed=5)
    try:
        last = vec.reset(seed=5)
        want = policy.learner.act(last.obs, last.action_mask, True)["agent"][0].numpy()
    finally:
        vec.close()
    from mpe2 import simple_spread_v3

    env = simple_spread_v3.parallel_env()
    obs, _ = env.reset(seed=5)
    got = policy.act(obs)
    assert [got[a] for a in env.possible_agents] == list(want)


def test_evaluate_returns_the_table_the_script_prints(cartpole_run, capsys) -> None:
    import runpy

    result = marl.evaluate(cartpole_run.dir, episodes=3)
    capsys.readouterr()
    script = runpy.run_path(str(ROOT / "scripts" / "evaluate.py"))
    assert script["main"]([f"run={cartpole_run.dir}", "episodes=3"]) == 0
    assert result.text == capsys.readouterr().out
    assert result.summary["n"] == 3
    with pytest.raises(ConfigError, match="opponent=random applies to turn-based games"):
        marl.evaluate(cartpole_run.dir, episodes=3, opponent="random")


def test_module_names_stay_modules() -> None:
    """marl.train / marl.evaluate are the API functions and still the modules they were."""
    import marl.evaluate
    import marl.train

    assert callable(marl.train) and callable(marl.train.run) and callable(marl.evaluate.run_episodes)
    assert callable(marl.evaluate) and marl.load is marl.api.load
