"""Self-play: turn-based credit assignment on a game with a known answer, the opponent pool (frozen snapshots, only
the learner's moves trained on, seat alternation) and its checkpoint round-trip through train.run."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from gymnasium import spaces
from pettingzoo import AECEnv

from marl import checkpoint as ckpt
from marl.adapters import resolve_env_config
from marl.config import compose
from marl.errors import ConfigError
from marl.selfplay import OpponentPool, attach_pool
from marl.train import build, make_learner, run

TRAP = {"name": "trap", "entry_point": "test_selfplay:trap_env", "check": False}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small MLPs run fastest single-threaded


class TrapGame(AECEnv):
    """Two moves. player_0 picks one of 4 actions; 0-2 are traps, 3 is safe. Then player_1 moves (either of 2
    actions) and the game ends: after a trap player_1 wins (+1, player_0 -1), after the safe move it is a draw.

    player_0's -1 arrives on player_1's move, so player_0 learns to play 3 only if that reward is credited to
    its own earlier move. Observation: one-hot phase (0: start, 1: after a trap, 2: after the safe move).
    """

    metadata = {"name": "trap_v0", "render_modes": [], "is_parallelizable": False}

    def __init__(self, render_mode: str | None = None):
        super().__init__()
        self.possible_agents = ["player_0", "player_1"]
        self.render_mode = render_mode
        self._obs = spaces.Dict({"observation": spaces.Box(0.0, 1.0, (3,), np.float32),
                                 "action_mask": spaces.Box(0, 1, (4,), np.int8)})
        self._act = spaces.Discrete(4)

    def observation_space(self, agent):
        return self._obs

    def action_space(self, agent):
        return self._act

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.phase = 0
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {a: {} for a in self.agents}
        self.agent_selection = "player_0"

    def observe(self, agent):
        obs = np.zeros(3, np.float32)
        obs[self.phase] = 1.0
        mask = np.zeros(4, np.int8)
        if agent == self.agent_selection:
            mask[:] = (1, 1, 1, 1) if self.phase == 0 else (1, 1, 0, 0)
        return {"observation": obs, "action_mask": mask}

    def step(self, action):
        sel = self.agent_selection
        if self.terminations[sel] or self.truncations[sel]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[sel] = 0.0
        if self.phase == 0:
            self.phase = 1 if action < 3 else 2
            self.rewards = dict.fromkeys(self.agents, 0.0)
            self.agent_selection = "player_1"
        else:
            lost = self.phase == 1
            self.rewards = {"player_0": -1.0 if lost else 0.0, "player_1": 1.0 if lost else 0.0}
            self.terminations = dict.fromkeys(self.agents, True)
        self._accumulate_rewards()


def trap_env(**kwargs) -> TrapGame:
    return TrapGame(**kwargs)


def trap_cfg(seed: int = 0, **selfplay):
    return compose({"env": TRAP, "algo": {"name": "ppo", "num_steps": 16, "lr": 0.01, "update_epochs": 4,
                                           "num_minibatches": 1, "ent_coef": 0.0},
                     "num_envs": 8, "seed": seed, "total_steps": 4000,
                     "selfplay": {"pool_fraction": 0.0, **selfplay}})


def learner_for(cfg, seed: int):
    torch.manual_seed(seed)
    learner = make_learner(cfg, build(cfg), "cpu")
    attach_pool(cfg, learner)
    learner.reset_env(seed)
    return learner


def p_safe(learner) -> float:
    """player_0's probability of the safe move at the start."""
    g = learner.spec.groups[0].name
    obs = torch.tensor([[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    mask = torch.tensor([[[True] * 4, [True] * 4]])
    with torch.no_grad():
        return float(learner.manager.dist(g, obs, mask).probs[0, 0, 3])


def train_trap(seed: int, drop_credit: bool = False, **selfplay) -> float:
    cfg = trap_cfg(seed, **selfplay)
    learner = learner_for(cfg, seed)
    collect = learner.collect
    if drop_credit:  # what a broken adapter would do: keep only the rewards received on the agent's own move
        def collect_own_move_rewards():
            buf = collect()
            for gb in buf.groups.values():
                gb.reward *= gb.acting
            C = buf.carry  # the reward that enters the advantage: each agent's (value unit's) own
            buf.unit_reward[C:] = learner.units.reduce({k: gb.reward[C:] for k, gb in buf.groups.items()})
            return buf

        learner.collect = collect_own_move_rewards
    while learner.env_steps < cfg.total_steps:
        learner.iteration()
    return p_safe(learner)


@pytest.mark.parametrize("seed", [0, 1])
def test_loser_learns_to_avoid_the_trap_because_the_win_is_credited_to_its_move(seed):
    assert train_trap(seed) > 0.9


def test_without_the_opponent_turn_credit_the_trap_is_not_learned():
    assert train_trap(0, drop_credit=True) < 0.5  # no signal reaches player_0: it stays near uniform (0.25)


def test_pool_against_random_trains_only_the_learner_seat_and_still_learns():
    cfg = trap_cfg(0, pool_fraction=1.0, baselines=["random"], baseline_prob=1.0)
    learner = learner_for(cfg, 0)
    pool = learner.opponents
    assert isinstance(pool, OpponentPool) and pool.n_pool == 8
    g = learner.spec.groups[0].name
    seats: list[np.ndarray] = []  # the learner's seat per env copy, as the pool saw it at each step
    override = pool.override

    def recording_override(last, actions, buf, t):
        out = override(last, actions, buf, t)
        seats.append(pool.seat.copy())
        return out

    pool.override = recording_override
    seats_seen = set()
    while learner.env_steps < cfg.total_steps:
        seats.clear()
        buf = learner.collect()
        acting = buf.groups[g].acting[buf.carry :]  # [T, E, 2] (the steps of this rollout, carry rows left out)
        assert acting.sum(-1).max() <= 1  # one seat per step at most: the opponent's moves are never trained on
        for t in range(len(acting)):
            for e in range(8):
                if acting[t, e].any():
                    assert int(acting[t, e].nonzero()[0, 0]) == seats[t][e]
        assert acting.sum() > 0.4 * acting.numel() / 2  # the learner's own moves are all kept (about half)
        seats_seen |= {int(s) for s in np.concatenate(seats)}
        learner.update(learner.make_batch(buf))
        learner.iterations += 1
    assert seats_seen == {0, 1}  # the learner's seat alternates
    assert p_safe(learner) > 0.9


def test_snapshots_are_frozen_cpu_copies_and_the_pool_round_trips_through_weights_only():
    cfg = trap_cfg(0, pool_fraction=0.5, snapshot_every=128, pool_size=3)
    learner = learner_for(cfg, 0)
    pool = learner.opponents
    first = {k: v.clone() for k, v in pool.snapshots[0].manager.state_dict().items()}
    for _ in range(6):
        learner.iteration()
    snap = pool.snapshots[0].manager
    assert all(not p.requires_grad and p.device.type == "cpu" for p in snap.parameters())
    live = learner.manager.state_dict()
    assert any(not torch.equal(live[k], first[k]) for k in first)  # the learner moved on ...
    assert len(pool.snapshots) == 3 and pool.snapshot_steps == sorted(pool.snapshot_steps)
    oldest = pool.snapshot_steps[0]
    assert oldest > 0  # the initial snapshot was dropped once more than pool_size were taken
    before = {k: v.clone() for k, v in snap.state_dict().items()}
    learner.iteration()
    assert all(torch.equal(before[k], v) for k, v in snap.state_dict().items())  # ... the snapshot did not

    f = io.BytesIO()
    torch.save(pool.state_dict(), f)
    f.seek(0)
    state = torch.load(f, weights_only=True)
    other = learner_for(cfg, 5).opponents
    other.load_state_dict(state)
    assert other.snapshot_steps == pool.snapshot_steps
    assert np.array_equal(other.opponent, pool.opponent) and np.array_equal(other.seat, pool.seat)
    for a, b in zip(other.snapshots, pool.snapshots, strict=True):
        sa, sb = a.manager.state_dict(), b.manager.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sb)


def test_snapshots_keep_the_observation_statistics_they_were_taken_with():
    """With algo.normalize_obs=true a snapshot normalizes with a copy of the learner's statistics at snapshot time:
    the learner's statistics moving on later changes neither its action probabilities nor its (seeded) actions."""
    cfg = trap_cfg(0, pool_fraction=0.5, snapshot_every=10**6)
    cfg.algo.normalize_obs = True
    learner = learner_for(cfg, 0)
    pool = learner.opponents
    for _ in range(3):
        learner.iteration()
    pool.snapshot()
    snap, g, last = pool.snapshots[-1], learner.spec.groups[0].name, learner.last
    rows = {g: np.ones(last.obs[g].shape[:2], dtype=bool)}
    mask = torch.as_tensor(last.action_mask[g])

    def probs(obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return snap.manager.dist(g, obs, mask).probs

    def actions() -> np.ndarray:
        torch.manual_seed(7)
        return snap.act(last, rows)[g]

    before_probs, before_actions = probs(snap.obs_tensor(last.obs[g], g)), actions()
    live_before = probs(learner.obs_tensors(last.obs)[g])
    torch.testing.assert_close(before_probs, live_before)  # taken with the learner's statistics of that moment
    learner.obs_rms[g].update(torch.randn(500, 3, dtype=torch.float64) * 4.0 + 2.0)  # the learner's stats move on
    assert not torch.allclose(probs(learner.obs_tensors(last.obs)[g]), live_before)  # live stats would change it
    assert torch.equal(probs(snap.obs_tensor(last.obs[g], g)), before_probs)
    assert np.array_equal(actions(), before_actions)

    f = io.BytesIO()
    torch.save(pool.state_dict(), f)
    f.seek(0)
    other = learner_for(cfg, 5).opponents
    other.load_state_dict(torch.load(f, weights_only=True))
    for a, b in zip(other.snapshots, pool.snapshots, strict=True):
        assert all(torch.equal(a.obs_rms[g].state_dict()[k], v) for k, v in b.obs_rms[g].state_dict().items())
    assert not torch.equal(other.snapshots[-1].obs_rms[g].mean, learner.obs_rms[g].mean)


def test_train_run_checkpoints_the_pool_and_resumes_it(tmp_path):
    cfg = {"env": TRAP, "algo": {"name": "ppo", "num_steps": 16}, "num_envs": 4, "seed": 0, "total_steps": 256,
           "progress": False, "eval_every": 0, "eval_episodes": 2, "run_dir": str(tmp_path / "run"),
           "selfplay": {"pool_fraction": 0.5, "snapshot_every": 64, "baselines": ["random"]}}
    run(cfg)
    payload = ckpt.load(tmp_path / "run" / "checkpoints" / "final.pt")
    pool = payload["learner"]["opponents"]
    assert len(pool["snapshots"]) == 4 and pool["snapshot_steps"][0] == 0
    run({**cfg, "resume": str(tmp_path / "run"), "total_steps": 384}, explicit_total_steps=True)
    resumed = ckpt.load(tmp_path / "run" / "checkpoints" / "final.pt")["learner"]["opponents"]
    assert resumed["snapshot_steps"][:4] == pool["snapshot_steps"] and len(resumed["snapshots"]) == 6


def test_pool_is_off_for_parallel_envs_and_zero_fraction():
    cfg = compose({"env": {"name": "exclusive", "entry_point": "matrix_games:exclusive_parallel_env", "check": False},
                    "algo": {"name": "ippo"}, "num_envs": 4, "selfplay": {"pool_fraction": 1.0}})
    learner = make_learner(cfg, build(cfg), "cpu")
    assert attach_pool(cfg, learner) is None and learner.opponents is None
    cfg = trap_cfg(0)
    assert attach_pool(cfg, make_learner(cfg, build(cfg), "cpu")) is None


def test_evaluation_plays_every_configured_baseline_and_refuses_unknown_ones(tmp_path):
    cfg = {"env": dict(resolve_env_config("tictactoe")), "algo": {"name": "ppo", "num_steps": 16}, "num_envs": 2,
           "seed": 0, "total_steps": 64, "progress": False, "eval_every": 0, "eval_episodes": 4, "checkpoint_every": 0,
           "run_dir": str(tmp_path / "run"), "selfplay": {"eval_opponents": ["random", "minimax"]}}
    final = run(cfg)
    for name in ("random", "minimax"):
        rates = [final[f"eval/{name}/{k}"] for k in ("win_rate", "draw_rate", "loss_rate")]
        assert sum(rates) == pytest.approx(1.0)
    assert final["eval/win_rate"] == final["eval/random/win_rate"] and final["eval/episodes"] == 4
    assert final["eval/minimax/win_rate"] == 0.0  # nobody beats minimax at tic-tac-toe
    bad = {**cfg, "run_dir": str(tmp_path / "bad"), "selfplay": {"eval_opponents": ["heuristic"]}}
    with pytest.raises(ConfigError, match="baseline 'heuristic' plays connect_four"):
        run(bad)
    assert not (tmp_path / "bad" / "metrics.csv").exists()


def test_pool_opponent_moves_are_dropped_from_the_batch_without_changing_the_losses(monkeypatch):
    """Rows where only a pool opponent moved are left out of the update batch; every loss term is the same as on
    the full batch (they are all masked by ``acting``), so this only saves compute."""
    from marl.algos import onpolicy

    cfg = trap_cfg(0, pool_fraction=1.0, baselines=["random"], baseline_prob=1.0)
    learner = learner_for(cfg, 0)
    buf = learner.collect()
    small = learner.make_batch(buf)
    monkeypatch.setattr(onpolicy, "drop_idle", lambda b: b)
    full = learner.make_batch(buf)
    g = learner.spec.groups[0].name
    idle = ~full.acting[g].any(-1)
    assert idle.sum() > 0.3 * full.size  # the opponent's moves: about half the steps
    assert small.size == full.size - int(idle.sum())
    assert bool(small.acting[g].any(-1).all())
    with torch.no_grad():
        (a_small, st_small), (a_full, st_full) = learner.actor_loss(small), learner.actor_loss(full)
        torch.testing.assert_close(a_small, a_full)
        torch.testing.assert_close(learner.critic_loss(small), learner.critic_loss(full))
    assert st_small.keys() == st_full.keys()
    for k in st_small:
        torch.testing.assert_close(torch.as_tensor(st_small[k]), torch.as_tensor(st_full[k]))
