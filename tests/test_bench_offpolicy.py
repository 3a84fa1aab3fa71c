"""The off-policy bench keeps a case's earlier seeds when other seeds are added, and recomputes its summary."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from benches.offpolicy import merge_seeds  # noqa: E402


def _case(steps: int, seeds: dict[int, float], target: float | None = -200.0) -> dict:
    return {"steps": steps, "target": target, "seeds": [{"seed": k, "eval_return": v} for k, v in seeds.items()]}


def test_new_seeds_join_the_earlier_ones_and_replace_the_same_seed():
    merged = merge_seeds(_case(300, {0: -150.0, 1: -300.0}), _case(300, {1: -180.0, 2: -120.0}))
    assert [s["seed"] for s in merged["seeds"]] == [0, 1, 2]
    assert [s["eval_return"] for s in merged["seeds"]] == [-150.0, -180.0, -120.0]  # seed 1 rerun: the new run
    assert merged["mean"] == pytest.approx(-150.0) and merged["min"] == -180.0 and merged["met"] is True


def test_another_budget_or_no_earlier_case_keeps_only_the_new_runs():
    new = _case(1000, {1: -250.0}, target=None)
    assert merge_seeds(_case(300, {0: -150.0}), new) is new
    assert merge_seeds(None, new) is new


def test_a_run_resumed_after_an_untimed_segment_says_where_its_wall_time_starts(tmp_path):
    from benches.common import finished_job, train_job
    from benches.offpolicy import _wall

    run = tmp_path / "ddpg_s0"
    over = ["algo.learning_starts=50", "algo.batch_size=16", "eval_episodes=1"]
    train_job("pendulum", "ddpg", 0, 200, over, run)
    assert "wall_from_step" not in finished_job(run)  # timed from the start
    (run / "bench_job.json").unlink()  # as a job killed before it could write its timing
    first = train_job("pendulum", "ddpg", 0, 400, over, run)
    assert first["wall_from_step"] == 200 and first["rows"][-1]["global_step"] == 400
    again = train_job("pendulum", "ddpg", 0, 600, over, run)  # a timed continuation adds up, same start
    assert again["wall_from_step"] == 200 and again["wall_s"] > first["wall_s"]
    seeds = [{"wall_s": 10.0, "wall_from_step": 200}, {"wall_s": 20.0}]
    assert _wall(seeds) == "15 (timed from step 200)" and _wall([{"wall_s": 4.0}]) == "4"
