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
