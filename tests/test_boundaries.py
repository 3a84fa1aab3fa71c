"""Rollout boundaries are invisible in turn-based games: an agent whose transition is still open when a rollout
ends (the opponent is to move) is completed by the next rollout, at its own next turn, instead of bootstrapping from
a value at a position where the opponent moves (one the critic never trains on)."""

from __future__ import annotations

import pytest
import torch
from conftest import compose

from marl.config import validate
from marl.rollout import carry_over
from marl.train import build, make_learner

TOTAL = 48  # steps per copy in every setting


def learner(num_steps: int, lam: float, algo: str = "ippo", *extra: str):
    cfg = validate(compose(["env=nim", f"algo={algo}", "num_envs=2", f"algo.num_steps={num_steps}",
                            f"algo.gae_lambda={lam}", "algo.value_norm=false", "algo.norm_adv=false",
                            "env.check=false", *extra]))
    env = build(cfg)
    torch.manual_seed(0)
    L = make_learner(cfg, env, "cpu")
    L.reset_env(0)
    return L


def advantages_by_step(num_steps: int, lam: float, perturb: bool = False) -> dict[tuple[int, int, int], float]:
    """Collect TOTAL steps per copy in rollouts of ``num_steps`` with a fixed policy and critic (no update); return
    ``{(global step, copy, agent): advantage}`` of every transition a rollout completed."""
    L = learner(num_steps, lam)
    if perturb:  # +100 on every value of a position where the agent is NOT to move (nim's last feature: my turn)
        real = L.values
        L.values = lambda obs, state: real(obs, state) + 100.0 * (1.0 - obs["player"][..., -1])
    origin: dict[tuple[int, int], int] = {}  # (copy, unit) -> global step of the transition in carry row `unit`
    out: dict[tuple[int, int, int], float] = {}
    for it in range(TOTAL // num_steps):
        buf = L.collect()
        batch_adv, _, _, _ = L.advantages(buf)
        C, adv = buf.carry, batch_adv["player"]
        acting = buf.groups["player"].acting & ~L.units.broadcast(L._stop)["player"]
        for r, e, n in acting.nonzero().tolist():
            step = it * num_steps + r - C if r >= C else origin[(e, r)]
            key = (step, e, n)
            assert key not in out, f"transition {key} trained twice"
            out[key] = float(adv[r, e, n])
        last_row, open_ = L._pending
        for e, u in open_.nonzero().tolist():
            r = int(last_row[e, u])
            origin[(e, u)] = it * num_steps + r - C if r >= C else origin[(e, u)]
        carry_over(buf, L.units.unit_of, last_row, open_)
    return out


@pytest.mark.parametrize("cut", [24, 12, 8, 3])
def test_cut_rollouts_give_the_uncut_td_errors(cut):
    """lambda = 0: every transition's advantage is its own TD error, which depends only on the transition; cut into
    rollouts of any length, every transition is completed exactly once, with the advantage of the uncut rollout."""
    whole = advantages_by_step(TOTAL, 0.0)
    parts = advantages_by_step(cut, 0.0)
    assert parts.keys() == whole.keys()
    for k, v in whole.items():
        assert parts[k] == pytest.approx(v, abs=1e-5), k


def test_each_transition_is_trained_once_with_gae():
    whole = advantages_by_step(TOTAL, 0.95)
    parts = advantages_by_step(8, 0.95)
    assert parts.keys() == whole.keys()


@pytest.mark.parametrize("num_steps", [TOTAL, 7])
def test_values_where_the_agent_does_not_move_are_never_read(num_steps):
    """Adding 100 to the value of every position where the agent is not to move changes no advantage (before the fix,
    the agent that moved last before the cut bootstrapped from exactly such a value)."""
    base = advantages_by_step(num_steps, 0.95)
    pert = advantages_by_step(num_steps, 0.95, perturb=True)
    assert pert.keys() == base.keys()
    for k, v in base.items():
        assert pert[k] == pytest.approx(v, abs=1e-4), k


def test_carry_survives_a_checkpoint_round_trip():
    L = learner(7, 0.95, "mappo")
    L.iteration()
    state = L.state_dict()
    fresh = learner(7, 0.95, "mappo")
    fresh.load_state_dict(state)
    C = L.buf.carry
    for k, gb in L.buf.groups.items():
        for f in ("obs", "action", "logp", "acting"):
            torch.testing.assert_close(getattr(fresh.buf.groups[k], f)[:C], getattr(gb, f)[:C])
    torch.testing.assert_close(fresh.buf.unit_reward[:C], L.buf.unit_reward[:C])
    assert bool(L.buf.groups["player"].acting[:C].any())  # a 7-step rollout of alternating moves leaves one open
