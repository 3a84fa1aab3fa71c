"""Self-play on turn-based games: an opponent pool of frozen snapshots (and scripted baselines).

With one shared policy (``algo.sharing=shared``) the learner plays every seat of every env copy, each seat seeing the
board from its own side as PettingZoo gives it. :class:`OpponentPool` (``cfg.selfplay``, see
:class:`marl.config.SelfPlayConfig`) hands the first ``round(pool_fraction * E)`` env copies to pool opponents: at
every episode start such a copy draws an opponent (a frozen snapshot, or a baseline with ``baseline_prob``) and the
learner's seat (alternating or random); the opponent plays all the other seats. The learner's on-policy ``collect``
calls :meth:`OpponentPool.override` after choosing actions for every seat: the pool replaces the actions of the
opponent's seats and clears their ``acting`` flags, so those transitions are never trained on and the returns treat
the opponent's moves as the other side's turn (the learner's seat gets the reward its own move led to).

Snapshots are deep copies of the learner's actors (``learner.manager``) and of its observation statistics
(``learner.obs_rms``, with ``algo.normalize_obs``) taken every ``snapshot_every`` env steps, frozen (no gradients) and
kept on CPU; the newest ``pool_size`` are kept. :meth:`OpponentPool.state_dict` holds them as plain tensors, so the
pool survives a checkpoint / resume.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from omegaconf import DictConfig

from marl.adapters.base import EnvSpec, StepOut
from marl.algos.base import Learner
from marl.algos.onpolicy import OnPolicyLearner
from marl.errors import ConfigError
from marl.opponents import BoardPlayer, FrozenPolicyPlayer, Player, make_baseline
from marl.rollout import Rollout

SEAT_MODES = ("alternate", "random")


def seat_rows(spec: EnvSpec, seat: np.ndarray, active: np.ndarray) -> dict[str, np.ndarray]:
    """Bool ``{g: [E, N_g]}``: True where env copy ``e`` is ``active`` and agent (group, n) IS seat ``seat[e]``
    (flat index into ``spec.agents``)."""
    out, flat = {}, 0
    for g in spec.groups:
        idx = flat + np.arange(g.n_agents)
        out[g.name] = active[:, None] & (idx[None, :] == seat[:, None])
        flat += g.n_agents
    return out


class OpponentPool:
    """Frozen snapshots + baselines playing the non-learner seats of some env copies (see the module docstring).

    ``opponent[e]``: index of copy ``e``'s current opponent in :attr:`players` (-1: a pure self-play copy);
    ``seat[e]``: the learner's seat in copy ``e`` (flat index into ``spec.agents``).
    """

    def __init__(self, learner: OnPolicyLearner, sp: DictConfig, seed: int, offset: int = 0,
                 run_envs: int | None = None):
        _check(sp)
        self.learner, self.spec = learner, learner.spec
        self.E, self.n_seats = learner.E, len(self.spec.agents)
        self.pool_size, self.every = int(sp.pool_size), int(sp.snapshot_every)
        self.baseline_prob, self.seat_mode = float(sp.baseline_prob), str(sp.seat)
        # the learner's copies are the run's copies offset .. offset + E - 1 (a Ray rollout worker's share of the
        # run's run_envs copies); the pool plays the run's first round(pool_fraction * run_envs)
        self.n_pool = int(round(float(sp.pool_fraction) * (self.E if run_envs is None else run_envs)))
        self.takes_snapshots = True  # a Ray worker's pool mirrors the learner's snapshots instead (mirror())
        self.mirrored = False  # whether the snapshots held are the learner's (a Ray worker's, after mirror())
        self.baselines: list[BoardPlayer] = [make_baseline(str(b), self.spec, seed + 7919 * (k + 1))
                                             for k, b in enumerate(sp.baselines)]
        self.gen = torch.Generator().manual_seed(int(seed) + 104_729)
        self.snapshots: list[FrozenPolicyPlayer] = []
        self.snapshot_steps: list[int] = []
        self.snapshot()
        self.next_snapshot = learner.env_steps + self.every
        self.opponent = np.full(self.E, -1, dtype=np.int64)
        copies = offset + np.arange(self.E, dtype=np.int64)
        self.seat = copies % self.n_seats
        self.pool_copies = copies < self.n_pool
        self._draw(self.pool_copies, first=True)

    # ------------------------------------------------------------------ opponents
    @property
    def players(self) -> list[Player]:
        """Snapshots (oldest first), then baselines."""
        return [*self.snapshots, *self.baselines]

    def _freeze(self, manager: torch.nn.Module) -> FrozenPolicyPlayer:
        """A frozen copy of ``manager`` playing with a copy of the learner's current observation statistics."""
        frozen = copy.deepcopy(manager).cpu().eval().requires_grad_(False)
        return FrozenPolicyPlayer(frozen, copy.deepcopy(self.learner.obs_rms), name="snapshot")

    def snapshot(self) -> None:
        """Add a frozen copy of the learner's current actors and observation statistics; drop the oldest beyond
        ``pool_size``."""
        self.snapshots.append(self._freeze(self.learner.manager))
        self.snapshot_steps.append(int(self.learner.env_steps))
        if len(self.snapshots) > self.pool_size:
            self.snapshots.pop(0)
            self.snapshot_steps.pop(0)

    def maybe_snapshot(self) -> None:
        """Take a snapshot where ``snapshot_every`` env steps have passed since the last (at a rollout's start)."""
        if self.learner.env_steps >= self.next_snapshot:
            self.snapshot()
            while self.next_snapshot <= self.learner.env_steps:
                self.next_snapshot += self.every

    @staticmethod
    def snapshot_state(player: FrozenPolicyPlayer) -> dict:
        """A snapshot's weights and frozen observation statistics as plain tensors (what a Ray worker gets)."""
        return {"manager": {k: v.detach().cpu().clone() for k, v in player.manager.state_dict().items()},
                "obs_rms": {g: r.state_dict() for g, r in (player.obs_rms or {}).items()}}

    def mirror(self, steps: list[int], fetch) -> None:
        """Hold the snapshots taken at env steps ``steps`` (the learner's pool, oldest first), as a Ray worker's pool
        does: those already held are kept, the others are built from ``fetch(step)`` (:meth:`snapshot_state`)."""
        held = dict(zip(self.snapshot_steps, self.snapshots, strict=True)) if self.mirrored else {}
        players = []
        for step in steps:
            player = held.get(step)
            if player is None:
                state = fetch(step)
                player = self._freeze(self.learner.manager)
                player.manager.load_state_dict(state["manager"])
                for g, rms in state["obs_rms"].items():
                    player.obs_rms[g].load_state_dict(rms)
            players.append(player)
        self.snapshots, self.snapshot_steps = players, [int(s) for s in steps]
        self.takes_snapshots, self.mirrored = False, True

    def _randint(self, high: int, size: int) -> np.ndarray:
        return torch.randint(high, (size,), generator=self.gen).numpy()

    def _draw(self, copies: np.ndarray, first: bool = False) -> None:
        """New opponent and learner seat for the pool copies flagged in ``copies`` (bool [E])."""
        idx = np.flatnonzero(copies & self.pool_copies)
        if idx.size == 0:
            return
        k = idx.size
        opp = self._randint(len(self.snapshots), k)
        if self.baselines:
            use_base = torch.rand(k, generator=self.gen).numpy() < self.baseline_prob
            opp = np.where(use_base, len(self.snapshots) + self._randint(len(self.baselines), k), opp)
        self.opponent[idx] = opp
        if self.seat_mode == "random":
            self.seat[idx] = self._randint(self.n_seats, k)
        elif not first:
            self.seat[idx] = (self.seat[idx] + 1) % self.n_seats

    # ------------------------------------------------------------------ the collect() hook
    def override(self, last: StepOut, actions: dict[str, torch.Tensor], buf: Rollout, t: int) -> dict:
        """Replace the opponents' actions ``{g: [E, N_g]}`` in pool copies and mark those seats not acting in
        ``buf`` at step ``t``. ``last`` is the StepOut the actions were chosen from."""
        if t == buf.carry and self.takes_snapshots:  # the rollout's first step
            self.maybe_snapshot()
        self._draw(last.done)
        if last.done.any():  # recurrent snapshots: new episodes start from zero states
            for player in self.players:
                player.reset(last.done)
        learner_seat = seat_rows(self.spec, self.seat, np.ones(self.E, dtype=bool))
        for k, player in enumerate(self.players):
            mine = self.opponent == k
            if not mine.any():
                continue
            rows = {g: mine[:, None] & ~learner_seat[g] & last.acting[g] for g in learner_seat}
            if not any(r.any() for r in rows.values()):
                continue
            chosen = player.act(last, rows)
            for g, r in rows.items():
                if r.any():
                    m = torch.from_numpy(r).to(actions[g].device)
                    a = torch.as_tensor(chosen[g], device=actions[g].device, dtype=actions[g].dtype)
                    actions[g] = torch.where(m, a, actions[g])
                    buf.groups[g].acting[t] &= ~m
        return actions

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Snapshots (actor state dicts and observation statistics, plain tensors), their env steps, assignments
        and RNG states."""
        return {
            "snapshots": [s.manager.state_dict() for s in self.snapshots],
            "snapshot_obs_rms": [{g: r.state_dict() for g, r in (s.obs_rms or {}).items()} for s in self.snapshots],
            "snapshot_steps": list(self.snapshot_steps),
            "snapshot_state": [{g: h.clone() for g, h in s.state.items()} for s in self.snapshots],
            "next_snapshot": int(self.next_snapshot),
            "opponent": torch.from_numpy(self.opponent.copy()),
            "seat": torch.from_numpy(self.seat.copy()),
            "gen": self.gen.get_state(),
            "baselines": [b.get_state() for b in self.baselines],
        }

    def load_state_dict(self, state: dict) -> None:
        template = self.snapshots[0].manager
        self.snapshots = []
        # a checkpoint from before the statistics were frozen: its snapshots play with the learner's restored ones
        stats = state.get("snapshot_obs_rms", [{}] * len(state["snapshots"]))
        for sd, obs_rms in zip(state["snapshots"], stats, strict=True):
            player = self._freeze(template)
            player.manager.load_state_dict(sd)
            for g, rms in obs_rms.items():
                player.obs_rms[g].load_state_dict(rms)
            self.snapshots.append(player)
        for player, st in zip(self.snapshots, state.get("snapshot_state", [{}] * len(self.snapshots)), strict=True):
            player.state = {g: h.clone() for g, h in st.items()}
        self.snapshot_steps = [int(s) for s in state["snapshot_steps"]]
        self.next_snapshot = int(state["next_snapshot"])
        self.opponent = state["opponent"].numpy().copy()
        self.seat = state["seat"].numpy().copy()
        self.gen.set_state(state["gen"])
        if len(state["baselines"]) != len(self.baselines):
            raise ConfigError(f"the checkpoint's opponent pool has {len(state['baselines'])} baselines, this config "
                              f"{len(self.baselines)}", "resume with the run's own selfplay.baselines")
        for b, s in zip(self.baselines, state["baselines"], strict=True):
            b.set_state(s)


def _check(sp: DictConfig) -> None:
    if not 0.0 <= float(sp.pool_fraction) <= 1.0:
        raise ConfigError(f"selfplay.pool_fraction={sp.pool_fraction} is out of range", "pass a value in [0, 1]")
    if int(sp.pool_size) < 1:
        raise ConfigError(f"selfplay.pool_size={sp.pool_size} must be >= 1", "pass selfplay.pool_size=1 or more")
    if int(sp.snapshot_every) < 1:
        raise ConfigError(f"selfplay.snapshot_every={sp.snapshot_every} must be >= 1", "pass a positive env-step count")
    if not 0.0 <= float(sp.baseline_prob) <= 1.0:
        raise ConfigError(f"selfplay.baseline_prob={sp.baseline_prob} is out of range", "pass a value in [0, 1]")
    if sp.seat not in SEAT_MODES:
        raise ConfigError(f"selfplay.seat='{sp.seat}' is not a valid choice", f"choose one of: {', '.join(SEAT_MODES)}")


def attach_pool(cfg: DictConfig, learner: Learner, offset: int = 0, seed: int | None = None
                ) -> OpponentPool | None:
    """Give ``learner`` an opponent pool when the env is a turn-based game of 2+ seats, the learner has the
    ``opponents`` hook (on-policy learners) and ``selfplay.pool_fraction`` selects at least one of the run's
    ``num_envs`` copies. A Ray rollout worker passes its copies' ``offset`` and its own ``seed``."""
    sp = cfg.get("selfplay")
    spec = learner.spec
    if sp is None or not hasattr(learner, "opponents") or not spec.turn_based or len(spec.agents) < 2:
        return None
    _check(sp)
    if int(round(float(sp.pool_fraction) * int(cfg.num_envs))) == 0:
        return None
    learner.opponents = OpponentPool(learner, sp, int(cfg.seed if seed is None else seed), offset, int(cfg.num_envs))
    return learner.opponents
