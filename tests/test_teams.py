"""Teams: who shares a reward objective, independent of the policy groups (issue: competitive envs trained on the
sum of all teams' rewards). MAPPO / HAPPO's joint GAE, team value, value normalization and reward scaling are per
team; a team of one is that agent's own reward; learners that ignore a team reward refuse ``team_reward``."""

from __future__ import annotations

import pytest
import torch
from conftest import compose, run_cli_inprocess
from omegaconf import OmegaConf

from marl.adapters.base import infer_teams
from marl.adapters.registry import resolve_teams
from marl.config import validate
from marl.core.normalization import RewardScaler
from marl.errors import ConfigError
from marl.train import build, make_learner, run

ADV = ("adversary_0", "adversary_1", "adversary_2")


def learner(*overrides: str, seed: int = 0):
    cfg = validate(compose(["num_envs=1", "progress=false", *overrides]))
    env = build(cfg)
    torch.manual_seed(seed)
    L = make_learner(cfg, env, "cpu")
    L.reset_env(seed)
    return L


def test_teams_inferred_from_name_prefixes():
    assert infer_teams([*ADV, "agent_0"]) == (("adversary", ADV), ("agent", ("agent_0",)))
    assert infer_teams(["red_0", "blue_0", "red_1"]) == (("red", ("red_0", "red_1")), ("blue", ("blue_0",)))
    assert infer_teams(["agent_0", "agent_1"]) == (("agent", ("agent_0", "agent_1")),)
    # PettingZoo's classic games name opposing players player_*: each is a team of its own
    assert infer_teams(["player_0", "player_1"]) == (("player_0", ("player_0",)), ("player_1", ("player_1",)))


def test_declared_teams_are_checked_against_the_agents():
    agents = ["a_0", "a_1", "b_0"]
    assert resolve_teams({"x": ["a_0", "b_0"], "y": ["a_1"]}, agents, "e") == (("x", ("a_0", "b_0")), ("y", ("a_1",)))
    with pytest.raises(ConfigError, match="names agent 'c_0'"):
        resolve_teams({"x": ["a_0", "c_0"], "y": ["a_1", "b_0"]}, agents, "e")
    with pytest.raises(ConfigError, match="in two teams"):
        resolve_teams({"x": ["a_0", "a_1"], "y": ["a_1", "b_0"]}, agents, "e")
    with pytest.raises(ConfigError, match="leaves out agent"):
        resolve_teams({"x": ["a_0", "a_1"]}, agents, "e")
    assert resolve_teams({"x": ["a_*"], "y": ["b_0"]}, agents, "e") == (("x", ("a_0", "a_1")), ("y", ("b_0",)))
    assert resolve_teams({"all": ["*"]}, agents, "e") == (("all", tuple(agents)),)


@pytest.mark.parametrize(("env", "teams"), [
    ("simple_tag", {"adversary": list(ADV), "agent": ["agent_0"]}),
    ("simple_adversary", {"adversary": ["adversary_0"], "agent": ["agent_0", "agent_1"]}),
    ("simple_speaker_listener", {"team": ["speaker_0", "listener_0"]}),
    ("simple_spread", {"agent": ["agent_0", "agent_1", "agent_2"]}),
    ("connect_four", {"player_0": ["player_0"], "player_1": ["player_1"]}),
])
def test_shipped_envs_have_their_teams(env, teams):
    cfg = validate(compose([f"env={env}", "algo=mappo", "num_envs=1"]))
    e = build(cfg)
    try:
        assert {t: list(ms) for t, ms in e.spec.teams} == teams
    finally:
        e.close()


def _rollout_with_rewards(L, per_agent: dict[str, list[float]]):
    """Collect 2 steps of one copy, then set every agent's reward per step and clear the episode ends."""
    buf = L.collect()
    C = buf.carry
    rewards = {}
    for gname, gb in buf.groups.items():
        agents = L.spec.group(gname).agents
        r = torch.tensor([per_agent[a] for a in agents], dtype=torch.float32).T[:, None, :]  # [T, 1, N_g]
        gb.reward[C:] = r
        gb.acting[C:] = True
        gb.terminated[:] = False
        rewards[gname] = r
    buf.unit_reward[C:] = L.units.reduce(rewards, L.team_reduce)
    buf.done[:] = False
    buf.truncated[:] = False
    return buf


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_mappo_competing_teams_get_their_own_advantage(reduce):
    """simple_tag, a catch at step 1: each predator +10, the prey -10. The predators' team reward is their sum (or
    mean), the prey's its own; hand-computed joint GAE per team (gamma 0.9, lambda 1, V = 0.5 everywhere)."""
    L = learner("env=simple_tag", "algo=mappo", "algo.num_steps=2", "algo.value_norm=false", "algo.gamma=0.9",
                "algo.gae_lambda=1.0", f"algo.team_reward={reduce}")
    assert L.units.U == 2 and L.units.names == ("adversary", "agent")
    L.values = lambda obs, state: torch.full((*state.shape[:-1], 2), 0.5)
    buf = _rollout_with_rewards(L, {**{a: [0.0, 10.0] for a in ADV}, "agent_0": [0.0, -10.0]})
    adv, target, _, vmask = L.advantages(buf)
    team_r = 30.0 if reduce == "sum" else 10.0
    # A_1 = r_1 + 0.9 * 0.5 - 0.5 ; A_0 = 0 + 0.9 * 0.5 - 0.5 + 0.9 * A_1
    pred = torch.tensor([-0.05 + 0.9 * (team_r - 0.05), team_r - 0.05])
    prey = torch.tensor([-0.05 + 0.9 * (-10.0 - 0.05), -10.0 - 0.05])
    C = buf.carry
    for k in range(3):
        torch.testing.assert_close(adv["adversary"][C:, 0, k], pred)
    torch.testing.assert_close(adv["agent"][C:, 0, 0], prey)
    torch.testing.assert_close(target[C:, 0], torch.stack([pred, prey], -1) + 0.5)


def test_team_of_one_per_agent_values_and_separate_statistics():
    """connect_four: every player is its own team, so MAPPO's units are the players; value normalization keeps one
    statistic per unit."""
    L = learner("env=connect_four", "algo=mappo", "algo.num_steps=8", "num_envs=2")
    assert L.units.U == 2 and not L.units.per_team
    L.make_batch(L.collect())
    assert L.value_norm.mean.shape == (2,)


def test_value_norm_and_reward_scaling_per_team():
    L = learner("env=simple_tag", "algo=mappo", "algo.num_steps=16", "algo.normalize_reward=true", "num_envs=2")
    assert L.value_norm.mean.shape == (2,) and L.reward_scaler.rms.mean.shape == (2,)
    buf = L.collect()
    C = buf.carry
    raw = L.units.reduce({k: gb.reward[C:] for k, gb in buf.groups.items()}, "sum")
    scale = raw / buf.unit_reward[C:]
    ok = raw.abs() > 1e-3
    # the reward that enters the advantage is the team's reward scaled by that team's own statistic: within a
    # team the scale is one number per step, and the two teams' scales differ
    assert torch.all(scale[ok].isfinite())
    assert not torch.allclose(scale[..., 0][ok[..., 0]].mean(), scale[..., 1][ok[..., 1]].mean())


def test_reward_scaler_keeps_one_statistic_per_unit():
    s = RewardScaler(0.99, (2,))
    for _ in range(50):
        out = s(torch.tensor([[100.0, 1.0]]), torch.tensor([False]))
    ratio = out[0, 0] / out[0, 1]
    assert 0.5 < float(ratio) < 2.0  # each unit divided by its own return std, not one shared scalar


@pytest.mark.parametrize("algo", ["ippo", "ppo", "a2c", "reinforce"])
def test_team_reward_refused_where_it_is_ignored(algo):
    cfg = compose(["env=simple_spread", f"algo={algo}"])
    OmegaConf.set_struct(cfg, False)
    cfg.algo.team_reward = "sum"
    with pytest.raises(ConfigError, match=f"does not apply to algo={algo}"):
        validate(cfg)


def test_team_reward_refused_on_the_command_line(tmp_path):
    res = run_cli_inprocess(["env=simple_spread", "algo=ippo", "+algo.team_reward=sum"], tmp_path)
    assert res.returncode == 2, res
    assert "algo.team_reward does not apply to algo=ippo" in res.stderr and "Traceback" not in res.stderr


def test_run_prints_and_records_its_teams(tiny_cfg, capsys):
    cfg = tiny_cfg("env=simple_tag", "algo=mappo", "total_steps=32")
    final = run(cfg)
    assert final["eval/team/agent/return"] == final["eval/return/agent_0"]
    assert final["eval/team/adversary/return"] == pytest.approx(sum(final[f"eval/return/{a}"] for a in ADV))
    out = capsys.readouterr().out
    assert "teams: adversary (adversary_0, adversary_1, adversary_2) vs agent (agent_0)" in out
    stored = OmegaConf.load(f"{cfg.run_dir}/config.yaml")
    assert OmegaConf.to_container(stored.env.teams) == {"adversary": list(ADV), "agent": ["agent_0"]}
