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
