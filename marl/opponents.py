"""Players: who chooses the actions of some seats of a batched env, in training (the opponent pool) and in matches.

A :class:`Player` maps the batched observation the env gave (:class:`~marl.adapters.base.StepOut`, per group
``obs [E, N_g, *obs]`` and ``action_mask [E, N_g, A]``) and the seats it must play (``rows[g]`` bool ``[E, N_g]``)
to actions ``{g: int64 [E, N_g]}``; entries outside ``rows`` are ignored by the caller.

Baselines (scripted, read the board from the observation PettingZoo gives the seat they play and honour the mask):

* ``random``: uniform over the legal moves (any discrete-action env);
* ``heuristic`` (Connect Four, obs ``[6, 7, 2]``, plane 0 = own pieces, row 0 = top): win now if possible, else
  block the opponent's immediate win, else avoid moves that hand the opponent a win in the cell above, choosing
  among the rest at random with weights favouring the center columns;
* ``minimax`` (tic-tac-toe, obs ``[3, 3, 2]``, action = row-major cell index): perfect play by memoized negamax,
  a random choice among the optimal moves (preferring faster wins).

:class:`PolicyPlayer` wraps a trained :class:`~marl.algos.base.Learner`; :class:`FrozenPolicyPlayer` acts with a
frozen copy of a learner's actors (the opponent-pool snapshots).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from gymnasium import spaces

from marl.adapters.base import EnvSpec, StepOut
from marl.algos.base import Learner
from marl.core.normalization import RunningMeanStd
from marl.errors import ConfigError


class Player(ABC):
    """Chooses actions for the seats marked in ``rows``."""

    name: str = "player"

    @abstractmethod
    def act(self, last: StepOut, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Actions ``{g: int64 [E, N_g]}`` for the entries where ``rows[g]`` (bool ``[E, N_g]``) is True."""

    def reset(self, starts: np.ndarray | None = None) -> None:
        """New episodes start in the copies flagged in ``starts [E]`` (None: all): a recurrent player clears its
        state there. Callers call it after every env reset and step; memoryless players ignore it."""
        return None


class BoardPlayer(Player):
    """A scripted player deciding one seat at a time from that seat's observation and legal-move mask."""

    def __init__(self, seed: int | None = None):
        self.rng = np.random.default_rng(seed)

    @abstractmethod
    def choose(self, obs: np.ndarray, legal: np.ndarray) -> int:
        """One move for one seat: ``obs [*obs_shape]``, ``legal`` bool ``[A]`` (at least one True)."""

    def act(self, last: StepOut, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for g, r in rows.items():
            acts = np.zeros(r.shape, dtype=np.int64)
            mask = last.action_mask[g]  # baselines only play envs with action masks (Baseline.fits)
            for e, n in np.argwhere(r):
                legal = mask[e, n] if mask[e, n].any() else np.ones_like(mask[e, n])
                acts[e, n] = self.choose(last.obs[g][e, n], legal)
            out[g] = acts
        return out

    def get_state(self) -> dict:
        """The RNG state (plain data, weights_only-safe)."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


class RandomPlayer(BoardPlayer):
    """Uniform over the legal moves."""

    name = "random"

    def choose(self, obs: np.ndarray, legal: np.ndarray) -> int:
        return int(self.rng.choice(np.flatnonzero(legal)))


# ----------------------------------------------------------------------------------------------- connect four

C4_ROWS, C4_COLS = 6, 7
_C4_CENTER = np.array([1.0, 2.0, 3.0, 4.0, 3.0, 2.0, 1.0])


def c4_drop_row(filled: np.ndarray, col: int) -> int:
    """Row where a piece dropped in ``col`` lands (row 0 = top), -1 if the column is full. ``filled`` bool [6, 7]."""
    empty = np.flatnonzero(~filled[:, col])
    return int(empty[-1]) if empty.size else -1


def c4_wins(pieces: np.ndarray, r: int, c: int) -> bool:
    """Whether a piece at (r, c) completes four in a row for the player owning ``pieces`` (bool [6, 7])."""
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        count = 1
        for sign in (1, -1):
            rr, cc = r + sign * dr, c + sign * dc
            while 0 <= rr < C4_ROWS and 0 <= cc < C4_COLS and pieces[rr, cc]:
                count += 1
                rr, cc = rr + sign * dr, cc + sign * dc
        if count >= 4:
            return True
    return False


class ConnectFourHeuristic(BoardPlayer):
    """Win now; else block the opponent's immediate win; else a safe move, center-weighted at random."""

    name = "heuristic"

    def choose(self, obs: np.ndarray, legal: np.ndarray) -> int:
        own, opp = obs[..., 0] > 0.5, obs[..., 1] > 0.5
        filled = own | opp
        cols = [c for c in np.flatnonzero(legal) if c4_drop_row(filled, c) >= 0]
        land = {c: c4_drop_row(filled, c) for c in cols}
        for pieces in (own, opp):  # first a winning move of ours, then the opponent's winning cell to block
            for c in cols:
                if c4_wins(pieces, land[c], c):
                    return int(c)
        safe = [c for c in cols if not (land[c] > 0 and c4_wins(opp, land[c] - 1, c))]
        choice = np.array(safe or cols)
        w = _C4_CENTER[choice]
        return int(self.rng.choice(choice, p=w / w.sum()))


# -------------------------------------------------------------------------------------------------- tic-tac-toe

_TTT_LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))


def ttt_winner(board: tuple[int, ...]) -> int:
    """+1 / -1 if that side has three in a row on ``board`` (9 cells of +1 own, -1 opponent, 0 empty), else 0."""
    for a, b, c in _TTT_LINES:
        if board[a] != 0 and board[a] == board[b] == board[c]:
            return board[a]
    return 0


@functools.cache
def ttt_negamax(board: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """Value for the side to move (+1 own) of ``board`` and its optimal moves.

    Value = ``sign * (1 + empty cells left)`` for a forced win / loss (faster wins score higher), 0 for a draw.
    """
    empty = [i for i, v in enumerate(board) if v == 0]
    best, moves = -100, []
    for i in empty:
        child = list(board)
        child[i] = 1
        if ttt_winner(tuple(child)) == 1:
            v = len(empty)  # win now: 1 + (len(empty) - 1) empty cells left
        elif len(empty) == 1:
            v = 0
        else:
            v = -ttt_negamax(tuple(-x for x in child))[0]
        if v > best:
            best, moves = v, [i]
        elif v == best:
            moves.append(i)
    return (best if empty else 0), tuple(moves)


class TicTacToeMinimax(BoardPlayer):
    """Perfect tic-tac-toe: a uniformly random choice among the negamax-optimal legal moves."""

    name = "minimax"

    def choose(self, obs: np.ndarray, legal: np.ndarray) -> int:
        flat = obs.reshape(9, 2)
        board = tuple(int(flat[i, 0] > 0.5) - int(flat[i, 1] > 0.5) for i in range(9))
        _, moves = ttt_negamax(board)
        moves = [m for m in moves if legal[m]] or list(np.flatnonzero(legal))
        return int(self.rng.choice(moves))


# ------------------------------------------------------------------------------------------------ policies


class PolicyPlayer(Player):
    """A learner's policies (its ``act``: normalization and action masks applied) for the seats in ``rows``."""

    def __init__(self, learner: Learner, name: str = "policy", deterministic: bool = False):
        self.learner, self.name, self.deterministic = learner, name, deterministic

    @torch.no_grad()
    def act(self, last: StepOut, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        actions = self.learner.act(last.obs, last.action_mask, self.deterministic, rows)  # recurrent: rows advance
        return {g: a.cpu().numpy() for g, a in actions.items()}

    def reset(self, starts: np.ndarray | None = None) -> None:
        self.learner.reset_memory(starts)


class FrozenPolicyPlayer(Player):
    """A frozen copy of a learner's actors (an :class:`~marl.multi.manager.AgentManager` on CPU, no gradients).

    Observations are normalized with ``obs_rms`` (per group, the learner's statistics frozen with the snapshot;
    None: no normalization), so later changes to the learner's statistics leave its play unchanged; actions are
    sampled. Only the env copies with a seat in ``rows`` are evaluated.
    """

    def __init__(self, manager: torch.nn.Module, obs_rms: dict[str, RunningMeanStd] | None, name: str = "snapshot"):
        self.manager, self.obs_rms, self.name = manager, obs_rms, name
        # recurrent actors: this snapshot's own state per copy and seat {g: [E, N_g, S]} (sized on first use)
        self.state: dict[str, torch.Tensor] = {}

    def obs_tensor(self, raw: np.ndarray, group: str) -> torch.Tensor:
        """Env obs ``[E, N, *obs]`` -> flat ``[E, N, D]``, normalized with the frozen statistics."""
        x = torch.as_tensor(raw, dtype=torch.float32).reshape(*raw.shape[:2], -1)
        return self.obs_rms[group].normalize(x) if self.obs_rms is not None else x

    @torch.no_grad()
    def act(self, last: StepOut, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        need = np.flatnonzero(np.any([r.any(axis=1) for r in rows.values()], axis=0))
        out = {g: np.zeros(r.shape, dtype=np.int64) for g, r in rows.items()}
        if need.size == 0:
            return out
        if self.manager.recurrent:
            return self._act_recurrent(last, rows, need, out)
        for g in rows:
            m = last.action_mask.get(g)
            mask = torch.as_tensor(m[need]) if m is not None else None
            a = self.manager.dist(g, self.obs_tensor(last.obs[g][need], g), mask).sample()
            out[g][need] = a.numpy()
        return out

    def _act_recurrent(self, last: StepOut, rows: dict[str, np.ndarray], need: np.ndarray, out: dict) -> dict:
        """As :meth:`act` from this snapshot's states; the states of the seats in ``rows`` advance."""
        if not self.state:
            self.state = self.manager.initial_state(len(next(iter(rows.values()))))
        for g in rows:
            m = last.action_mask.get(g)
            mask = torch.as_tensor(m[need]) if m is not None else None
            d, new = self.manager.policies[g].step(self.obs_tensor(last.obs[g][need], g), self.state[g][need], mask)
            out[g][need] = d.sample().numpy()
            on = torch.from_numpy(rows[g][need]).unsqueeze(-1)
            self.state[g][need] = torch.where(on, new, self.state[g][need])
        return out

    def reset(self, starts: np.ndarray | None = None) -> None:
        if not self.state:
            return
        if starts is None:
            self.state = {}
            return
        keep = torch.from_numpy(~np.asarray(starts, dtype=bool))[:, None, None]
        self.state = {g: h * keep for g, h in self.state.items()}


# ------------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class Baseline:
    """A scripted opponent and the envs it can play (checked on the observation / action spaces)."""

    factory: Callable[[int | None], BoardPlayer]
    obs_shape: tuple[int, ...] | None  # required per-seat observation shape (None: any)
    n_actions: int | None  # required Discrete size (None: any Discrete)
    game: str  # what it plays, for messages

    def fits(self, spec: EnvSpec) -> bool:
        if not spec.turn_based or len(spec.agents) < 2:
            return False
        for g in spec.groups:
            if not isinstance(g.action_space, spaces.Discrete) or not g.has_action_mask:
                return False
            if self.obs_shape is not None and tuple(g.obs_space.shape) != self.obs_shape:
                return False
            if self.n_actions is not None and int(g.action_space.n) != self.n_actions:
                return False
        return True


BASELINES: dict[str, Baseline] = {
    "random": Baseline(RandomPlayer, None, None, "any turn-based game with discrete, masked actions"),
    "heuristic": Baseline(ConnectFourHeuristic, (C4_ROWS, C4_COLS, 2), C4_COLS, "connect_four"),
    "minimax": Baseline(TicTacToeMinimax, (3, 3, 2), 9, "tictactoe"),
}


def baselines_for(spec: EnvSpec) -> list[str]:
    """Names of the baselines that can play the env described by ``spec``."""
    return [name for name, b in BASELINES.items() if b.fits(spec)]


def make_baseline(name: str, spec: EnvSpec, seed: int | None = None) -> BoardPlayer:
    """The scripted opponent ``name`` for ``spec``'s env, or a :class:`ConfigError` listing the valid ones."""
    valid = baselines_for(spec)
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline opponent '{name}'",
                          f"valid baselines for env '{spec.name}': {', '.join(valid) or 'none'}")
    if name not in valid:
        raise ConfigError(f"baseline '{name}' plays {BASELINES[name].game}, not env '{spec.name}'",
                          f"valid baselines for env '{spec.name}': {', '.join(valid) or 'none'}")
    return BASELINES[name].factory(seed)
