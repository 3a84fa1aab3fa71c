"""Baseline opponents: minimax is perfect at tic-tac-toe, the Connect Four heuristic wins and blocks, masks are
honoured, and an opponent that does not fit the env is a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from marl.adapters import make_vec_env, resolve_env_config
from marl.errors import ConfigError
from marl.matches import play_matches
from marl.opponents import ConnectFourHeuristic, RandomPlayer, TicTacToeMinimax, baselines_for, make_baseline


def vec(name: str, num_envs: int = 8, seed: int = 0):
    return make_vec_env(resolve_env_config(name), num_envs, seed=seed)


@pytest.mark.parametrize("seed", [0, 1])
def test_minimax_never_loses_to_random_in_either_seat(seed):
    env = vec("tictactoe", 16, seed)
    res = play_matches(env, TicTacToeMinimax(seed), RandomPlayer(seed + 100), 300, seed)
    outcomes = [r.outcome for r in res]
    assert outcomes.count("loss") == 0
    assert {r.seat for r in res} == set(env.spec.agents)
    env.close()
    assert outcomes.count("win") > 200  # random blunders a lot; a player that merely never loses would draw more


def test_minimax_against_itself_always_draws():
    env = vec("tictactoe", 8, 3)
    res = play_matches(env, TicTacToeMinimax(1), TicTacToeMinimax(2), 60, 3)
    env.close()
    assert [r.outcome for r in res] == ["draw"] * 60


def test_minimax_takes_the_win_and_blocks():
    p = TicTacToeMinimax(0)

    def obs(own: list[int], opp: list[int]) -> tuple[np.ndarray, np.ndarray]:
        o = np.zeros((3, 3, 2), np.float32)
        for i in own:
            o.reshape(9, 2)[i, 0] = 1
        for i in opp:
            o.reshape(9, 2)[i, 1] = 1
        legal = o.reshape(9, 2).sum(1) == 0
        return o, legal

    assert p.choose(*obs([0, 1], [3, 4])) == 2  # own row 0 completes (and beats blocking row 1)
    assert p.choose(*obs([0, 8], [3, 4])) == 5  # block the opponent's row 1


def c4(own: list[tuple[int, int]], opp: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """A Connect Four observation [6, 7, 2] (row 0 = top) and the legal columns (not full)."""
    o = np.zeros((6, 7, 2), np.float32)
    for r, c in own:
        o[r, c, 0] = 1
    for r, c in opp:
        o[r, c, 1] = 1
    legal = o[0].sum(-1) == 0
    return o, legal


@pytest.mark.parametrize("seed", range(5))
def test_heuristic_wins_immediately(seed):
    p = ConnectFourHeuristic(seed)
    # horizontal: own at bottom columns 1-3 -> 0 or 4 wins; opponent stacked elsewhere
    o, legal = c4([(5, 1), (5, 2), (5, 3)], [(4, 1), (4, 2), (4, 3)])
    assert p.choose(o, legal) in (0, 4)
    # vertical: three own in column 6 -> play column 6
    o, legal = c4([(5, 6), (4, 6), (3, 6)], [(5, 0), (5, 1), (5, 3)])
    assert p.choose(o, legal) == 6
    # diagonal: own at (5,0), (4,1), (3,2); (2,3) lands when column 3 holds 3 pieces
    o, legal = c4([(5, 0), (4, 1), (3, 2), (5, 3)], [(5, 1), (5, 2), (4, 2), (4, 3), (3, 3)])
    assert p.choose(o, legal) == 3
    # a win beats a block: both sides threaten; take ours
    o, legal = c4([(5, 0), (4, 0), (3, 0)], [(5, 6), (4, 6), (3, 6)])
    assert p.choose(o, legal) == 0


@pytest.mark.parametrize("seed", range(5))
def test_heuristic_blocks_an_immediate_loss(seed):
    p = ConnectFourHeuristic(seed)
    o, legal = c4([(5, 0), (4, 0)], [(5, 2), (5, 3), (5, 4)])  # opponent threatens 1 and 5 -> block one of them
    assert p.choose(o, legal) in (1, 5)
    o, legal = c4([(5, 0), (5, 1)], [(5, 5), (4, 5), (3, 5)])  # vertical threat in column 5
    assert p.choose(o, legal) == 5


def test_heuristic_does_not_give_away_the_cell_above():
    p = ConnectFourHeuristic(0)
    # opponent has (4,0),(4,1),(4,2) on row 4; (4,3) becomes playable only once column 3 has one piece:
    # playing column 3 now would let the opponent win on top of it (no immediate win for either side here)
    o, legal = c4([(5, 0), (5, 1), (3, 1)], [(5, 2), (4, 0), (4, 1), (4, 2)])
    for _ in range(50):
        assert p.choose(o, legal) != 3


def test_heuristic_beats_random_and_honours_masks():
    env = vec("connect_four", 8, 0)
    res = play_matches(env, ConnectFourHeuristic(0), RandomPlayer(1), 80, 0)
    env.close()
    wins = sum(r.outcome == "win" for r in res)
    assert wins >= 72  # an illegal move would end the game as a loss (PettingZoo's illegal-move rule)


def test_random_player_only_plays_legal_moves():
    p = RandomPlayer(0)
    legal = np.array([False, True, False, False, True, False, False])
    assert {p.choose(np.zeros((6, 7, 2)), legal) for _ in range(200)} == {1, 4}


def test_baselines_fit_only_their_games():
    spec = {n: vec(n, 1).spec for n in ("connect_four", "tictactoe", "leduc_holdem")}
    assert baselines_for(spec["connect_four"]) == ["random", "heuristic"]
    assert baselines_for(spec["tictactoe"]) == ["random", "minimax"]
    assert baselines_for(spec["leduc_holdem"]) == ["random"]
    with pytest.raises(ConfigError, match=r"plays tictactoe, not env 'connect_four'(.|\n)*random, heuristic"):
        make_baseline("minimax", spec["connect_four"])
    with pytest.raises(ConfigError, match="unknown baseline opponent 'alphazero'"):
        make_baseline("alphazero", spec["tictactoe"])
