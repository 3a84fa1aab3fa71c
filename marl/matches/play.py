"""Matches between two players on a batched turn-based env, the subject's seat alternating match by match."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from marl.adapters.base import VecMultiEnv
from marl.opponents import Player
from marl.selfplay import seat_rows


@dataclass
class MatchResult:
    """One finished match: the subject's seat (an agent name), everyone's return, the number of moves."""

    seat: str
    returns: dict[str, float]
    length: int

    @property
    def payoff(self) -> float:
        return self.returns[self.seat]

    @property
    def outcome(self) -> str:
        """win | draw | loss: the subject's return against the best other seat's."""
        best_other = max(v for a, v in self.returns.items() if a != self.seat)
        if self.payoff > best_other:
            return "win"
        return "loss" if self.payoff < best_other else "draw"


def play_matches(env: VecMultiEnv, subject: Player, opponent: Player, episodes: int, seed: int,
                 first_seat: int = 0, on_start: Callable[[int, str], None] | None = None,
                 on_result: Callable[[int, MatchResult], None] | None = None) -> list[MatchResult]:
    """Play ``episodes`` matches on the turn-based ``env``; match ``j`` seats the subject at agent
    ``(first_seat + j) % n_agents`` and the opponent at every other seat. Every env copy starts a new match when
    its previous one ends until all are assigned; copies with no match left play on unrecorded.
    ``on_start(j, seat)`` is called before match ``j``'s first move, ``on_result(j, result)`` when it ends."""
    spec = env.spec
    E, n_seats = spec.num_envs, len(spec.agents)
    match_of = np.full(E, -1, dtype=np.int64)  # match index each copy is playing (-1: none)
    seat = np.zeros(E, dtype=np.int64)
    results: list[MatchResult | None] = [None] * episodes
    started = 0

    def start(e: int) -> None:
        nonlocal started
        match_of[e] = started if started < episodes else -1
        seat[e] = (first_seat + started) % n_seats
        if on_start is not None and match_of[e] >= 0:
            on_start(started, spec.agents[seat[e]])
        started += 1

    last = env.reset(seed=seed)
    subject.reset()
    opponent.reset()
    for e in range(E):
        start(e)
    while any(r is None for r in results):
        mine = seat_rows(spec, seat, np.ones(E, dtype=bool))
        a_sub = subject.act(last, {g: m & last.acting[g] for g, m in mine.items()})
        a_opp = opponent.act(last, {g: ~m & last.acting[g] for g, m in mine.items()})
        actions = {g: np.where(mine[g], a_sub[g], a_opp[g]) for g in mine}
        last = env.step(actions)
        if last.done.any():  # recurrent players: new matches start from zero states
            subject.reset(last.done)
            opponent.reset(last.done)
        for ep in last.episodes:
            e = ep.env_index
            if match_of[e] >= 0:
                results[match_of[e]] = MatchResult(spec.agents[seat[e]], dict(ep.returns), ep.length)
                if on_result is not None:
                    on_result(int(match_of[e]), results[match_of[e]])
            start(e)
    return [r for r in results if r is not None]
