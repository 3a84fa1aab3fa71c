"""One source of defaults: the YAMLs under configs/ hold every value, the schemas none that compete, and the Python
API resolves the same config as the CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, ROOT, TINY, TINY_PPO, compose, run_cli
from omegaconf import MISSING, OmegaConf

from marl import config as C
from marl.adapters.registry import available_envs, wants_check
from marl.errors import ConfigError
from marl.train import run

# what an env YAML describes
ENV_FACTS = ("name", "kind", "entry_point", "scenario", "kwargs", "check", "preprocess", "symmetry", "teams")
PAIRS = [("cartpole", "a2c"), ("cartpole", "reinforce"), ("simple_spread", "mappo"), ("simple_tag", "ippo"),
         ("simple_speaker_listener", "happo"), ("pendulum", "ddpg"), ("tictactoe", "ppo")]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def defaults(schema: type) -> dict:
    """Field -> dataclass default (MISSING where the schema gives none), nested dataclasses as dicts."""
    out = {}
    for f in dataclasses.fields(schema):
        if f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        else:
            out[f.name] = f.default
    return out


@pytest.mark.parametrize("algo", list(C.ALGOS))
def test_algo_yaml_sets_exactly_the_schema_keys_and_the_schema_no_values(algo: str) -> None:
    schema = C.ALGOS[algo].schema
    assert set(load(CONFIGS / "algo" / f"{algo}.yaml")) == {f.name for f in dataclasses.fields(schema)}
    competing = {k: v for k, v in defaults(schema).items() if v is not MISSING}
    assert not competing, f"{schema.__name__} has defaults competing with configs/algo/{algo}.yaml: {competing}"


def test_config_yaml_sets_every_run_selfplay_and_ray_key_and_the_schema_no_values() -> None:
    top = load(CONFIGS / "config.yaml")
    sections = ("selfplay", "ray")
    run_keys = {k for k, v in defaults(C.TrainConfig).items() if k not in ("env", "algo", "logger", *sections)}
    assert set(top) - {"defaults", "hydra", *sections} == run_keys
    assert set(top["selfplay"]) == {f.name for f in dataclasses.fields(C.SelfPlayConfig)}
    assert set(top["ray"]) == {f.name for f in dataclasses.fields(C.RayConfig)}
    for schema, keys in ((C.TrainConfig, run_keys), (C.SelfPlayConfig, set(top["selfplay"])),
                         (C.RayConfig, set(top["ray"]))):
        assert all(defaults(schema)[k] is MISSING for k in keys), schema.__name__


def test_logger_yamls_only_switch_their_logger_on() -> None:
    """The logger schema's defaults are the off state; an option YAML turns its logger on and repeats no other
    value differently."""
    base = defaults(C.LoggerConfig)
    for path in sorted((CONFIGS / "logger").glob("*.yaml")):
        for key, value in load(path).items():
            if isinstance(value, dict):
                assert value.get("enabled", True) is True, path
                assert {k: v for k, v in value.items() if k != "enabled"} == {
                    k: v for k, v in base[key].items() if k in value and k != "enabled"}, path
            else:
                assert value == base[key], (path, key)


def test_custom_env_template_is_the_env_schema_defaults() -> None:
    """configs/env/custom.yaml (the template users copy, and the start of a Python-API env without a YAML) lists
    every env key with the schema's default, so a user's own env YAML that leaves a key out gets the same value."""
    template, base = load(CONFIGS / "env" / "custom.yaml"), defaults(C.EnvConfig)
    assert set(template) == set(base)
    assert {k: v for k, v in template.items() if k not in ("name", "entry_point")} == {
        k: v for k, v in base.items() if k not in ("name", "entry_point")}


@pytest.mark.parametrize("env", available_envs())
def test_shipped_env_yamls_set_only_env_facts_away_from_the_schema_defaults(env: str) -> None:
    """Run-time env keys (backend, workers, pad, max_episode_steps) keep the schema default in every shipped YAML;
    an explicit ``check`` says what the null default would decide for that entry point."""
    spec, base = load(CONFIGS / "env" / f"{env}.yaml"), defaults(C.EnvConfig)
    assert set(spec) <= set(base)
    differ = {k for k, v in spec.items() if v != base[k] and k not in ENV_FACTS}
    assert not differ, f"configs/env/{env}.yaml sets {differ} away from the EnvConfig defaults"
    if spec.get("check") is not None:
        assert spec["check"] == wants_check({**spec, "check": None})


@pytest.mark.parametrize(("env", "algo"), PAIRS)
def test_python_api_resolves_the_cli_config(env: str, algo: str) -> None:
    cli = C.validate(compose([f"env={env}", f"algo={algo}", "seed=3"]))
    api = C.compose({"env": {"name": env}, "algo": {"name": algo}, "seed": 3})
    assert OmegaConf.to_container(api, resolve=True) == OmegaConf.to_container(cli, resolve=True)


def test_python_run_and_cli_run_write_the_same_config(tmp_path: Path) -> None:
    """The resolved ``config.yaml`` of ``run({...})`` and of ``scripts/train.py ...`` with the same values."""
    over = [*TINY, *TINY_PPO, "total_steps=64"]
    res = run_cli(["env=cartpole", "algo=ppo", *over, f"run_dir={tmp_path / 'cli'}"], tmp_path)
    assert res.returncode == 0, res
    values: dict = {"env": {"name": "cartpole"}, "algo": {"name": "ppo"}, "progress": False,
                    "run_dir": str(tmp_path / "api")}
    for o in over:
        key, value = o.split("=")
        node = values
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = int(value)
    run(values)
    cli, api = (OmegaConf.load(tmp_path / d / "config.yaml") for d in ("cli", "api"))
    assert cli.pop("run_dir") != api.pop("run_dir")
    assert cli == api


def test_a_yaml_lacking_a_key_fails_loudly() -> None:
    with pytest.raises(ConfigError, match=r"missing required config value\(s\): algo.gae_lambda") as err:
        C.compose({"algo": {"name": "ppo"}}, overrides=["~algo.gae_lambda"])
    assert "marl.config.compose" in str(err.value)


def test_python_api_unknown_env_names_the_closest() -> None:
    """docs/errors.md, Python API row ``api-unknown-env``."""
    with pytest.raises(ConfigError, match="unknown env 'simple_sprad'") as err:
        C.compose({"env": {"name": "simple_sprad"}, "algo": {"name": "mappo"}})
    assert "did you mean 'simple_spread'?" in str(err.value) and "entry_point" in str(err.value)
    doc = (ROOT / "docs" / "errors.md").read_text()
    assert "| api-unknown-env |" in doc and "run({\"env\": {\"name\": \"simple_sprad\"}" in doc


def test_python_api_unknown_algo() -> None:
    """docs/errors.md, Python API row ``api-unknown-algo``."""
    with pytest.raises(ConfigError, match="unknown algorithm 'mapo'") as err:
        C.compose({"algo": {"name": "mapo"}})
    assert "mappo" in str(err.value)
    assert "| api-unknown-algo |" in (ROOT / "docs" / "errors.md").read_text()


def test_python_api_custom_env_starts_from_the_custom_template() -> None:
    cfg = C.compose({"env": {"name": "exclusive", "entry_point": "matrix_games:exclusive_parallel_env"},
                     "algo": {"name": "ippo"}})
    template = OmegaConf.load(CONFIGS / "env" / "custom.yaml")
    assert cfg.env.name == "exclusive" and cfg.env.backend == template.backend and cfg.env.check is None
