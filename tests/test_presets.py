"""Tuned presets: configs/preset/<env>_<algo>.yaml applies by default on the CLI and from Python alike, preset=none
turns it off, command-line values win over it, and the benchmark cases run the presets instead of copies of them."""

from __future__ import annotations

import sys

import pytest
import yaml
from conftest import CONFIGS, ROOT, run_cli_inprocess
from omegaconf import OmegaConf

from marl.config import compose
from marl.errors import ConfigError

PRESETS = sorted(p.stem for p in (CONFIGS / "preset").glob("*.yaml"))
TUNED = [p for p in PRESETS if p != "none"]


def pair(name: str) -> tuple[str, str]:
    env, algo = name.rsplit("_", 1)
    return env, algo


@pytest.mark.parametrize("name", PRESETS)
def test_preset_is_a_documented_global_yaml_naming_itself(name: str) -> None:
    text = (CONFIGS / "preset" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert yaml.safe_load(text)["preset"] == name
    if name != "none":
        assert "Figures" in text and "benchmarks/" in text  # where its figures come from


@pytest.mark.parametrize("name", TUNED)
def test_preset_applies_by_default_and_preset_none_turns_it_off(name: str) -> None:
    env, algo = pair(name)
    tuned = compose({"env": {"name": env}, "algo": {"name": algo}})
    plain = compose({"env": {"name": env}, "algo": {"name": algo}, "preset": "none"})
    assert tuned.preset == name and plain.preset == "none"
    own = yaml.safe_load((CONFIGS / "preset" / f"{name}.yaml").read_text())
    for key, value in own.get("algo", {}).items():
        assert tuned.algo[key] == value
    algo_yaml = yaml.safe_load((CONFIGS / "algo" / f"{algo}.yaml").read_text())
    assert all(plain.algo[k] == v for k, v in algo_yaml.items() if not str(v).startswith("${"))
    assert tuned != plain


def test_cli_and_python_apply_the_same_preset(tmp_path) -> None:
    """The resolved config.yaml of a CLI run equals compose() of the same values, preset line included."""
    res = run_cli_inprocess(["env=cartpole", "algo=ppo", "total_steps=64", "num_envs=2", "eval_episodes=2",
                             f"run_dir={tmp_path / 'r'}"], tmp_path)
    assert res.returncode == 0, res
    assert "preset: cartpole_ppo (configs/preset/cartpole_ppo.yaml" in res.stdout
    stored = OmegaConf.load(tmp_path / "r" / "config.yaml")
    api = compose({"env": {"name": "cartpole"}, "algo": {"name": "ppo"}, "total_steps": 64, "num_envs": 2,
                   "eval_episodes": 2, "run_dir": str(tmp_path / "r"), "progress": False})
    assert stored.preset == api.preset == "cartpole_ppo"
    assert OmegaConf.to_container(stored.algo) == OmegaConf.to_container(api.algo)


def test_overrides_win_and_another_preset_can_be_chosen() -> None:
    cfg = compose({"env": {"name": "cartpole"}, "algo": {"name": "ppo", "lr": 0.01}, "total_steps": 5})
    assert cfg.preset == "cartpole_ppo" and cfg.algo.lr == 0.01 and cfg.total_steps == 5 and cfg.algo.gamma == 0.98
    cfg = compose({"env": {"name": "connect_four"}, "algo": {"name": "ppo"}, "preset": "tictactoe_ppo"})
    assert cfg.preset == "tictactoe_ppo" and list(cfg.algo.hidden) == [128, 128]
    assert compose({"env": {"name": "simple_spread"}, "algo": {"name": "ippo"}}).preset == "none"  # none known
    with pytest.raises(ConfigError, match="(?s)unknown preset 'cartpole_pp'.*did you mean 'cartpole_ppo'"):
        compose({"env": {"name": "cartpole"}, "algo": {"name": "ppo"}, "preset": "cartpole_pp"})


def test_bench_cases_run_the_presets() -> None:
    """The learning cases add nothing to their preset but evaluation settings; every bench env x algo with tuned
    values has a preset."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from benches import games, learning

    for env, algo, _, _, _, extra in learning.CASES.values():
        assert f"{env}_{algo}" in TUNED
        assert all(o.startswith("eval_") for o in extra), extra
    for name, case in games.CASES.items():
        assert f"{case.env}_{case.algo}" in TUNED, name
        assert not any(o.startswith(("algo.lr=", "algo.hidden=", "num_envs=")) for o in case.overrides), name
