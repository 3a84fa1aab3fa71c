"""Play a trained policy yourself, in the terminal.

    python scripts/play.py run=<run dir or checkpoint> [seat=first|second] [seed=0] [deterministic=true]

Works for any turn-based (AEC) game. Connect Four and tic-tac-toe show the board after every move (X moves first);
type a column number 1-7 (Connect Four) or a cell number 1-9 as shown on the board (tic-tac-toe); other games list
the legal action indices and your observation. An illegal or malformed move is asked again; ``q``, end of input
(Ctrl-D) or Ctrl-C quits (Ctrl-C with exit code 130). After each game: ``r`` for a rematch in the same seat, ``s``
to swap seats, ``q`` to stop. The policy plays its most likely move unless ``deterministic=false``. A user mistake
prints the problem and a fix and exits with code 2.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import numpy as np
import torch

from marl.adapters.base import StepOut
from marl.errors import ConfigError, MarlError
from marl.matches import Watcher, as_bool, load_policy, make_policy, parse_kv, play_matches, single_env, text_board
from marl.opponents import Player, PolicyPlayer

USAGE = "usage: python scripts/play.py run=<run dir or checkpoint> [seat=first|second] [seed=0]"
ARGS = {"run": str, "seat": str, "seed": int, "deterministic": as_bool, "debug": as_bool}
SEATS = ("first", "second")


class Quit(Exception):
    """The person typed q or closed the input."""


class HumanPlayer(Player):
    """Reads moves from stdin for the one seat marked in ``rows``; re-asks until the move is legal."""

    name = "you"

    def __init__(self, watcher: Watcher, read=input):
        self.watcher, self.read = watcher, read

    def _game(self) -> tuple[str, int]:
        """(what to type, offset between the typed number and the action index)."""
        name = str(self.watcher.env.metadata.get("name", ""))
        if name.startswith("connect_four"):
            return "a column number 1-7", 1
        if name.startswith("tictactoe"):
            return "a cell number 1-9 (as shown on the board)", 1
        return "an action index", 0

    def act(self, last: StepOut, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {g: np.zeros(r.shape, dtype=np.int64) for g, r in rows.items()}
        for g, r in rows.items():
            for e, n in np.argwhere(r):
                out[g][e, n] = self.ask(last, g, int(e), int(n))
        return out

    def ask(self, last: StepOut, g: str, e: int, n: int) -> int:
        what, offset = self._game()
        mask = last.action_mask.get(g)
        legal = np.flatnonzero(mask[e, n]) if mask is not None else None
        if text_board(self.watcher.env) is None:
            obs = last.obs[g][e, n].ravel()
            print(f"your observation (non-zero entries index:value): "
                  f"{ {int(i): round(float(obs[i]), 3) for i in np.flatnonzero(obs)} }")
        shown = ", ".join(str(int(a) + offset) for a in legal) if legal is not None else "any"
        while True:
            try:
                text = self.read(f"your move: type {what} (legal: {shown}), or q to quit > ").strip()
            except EOFError:
                raise Quit from None
            if text.lower() in ("q", "quit", "exit"):
                raise Quit
            try:
                action = int(text) - offset
            except ValueError:
                print(f"'{text}' is not a number: type {what}")
                continue
            if legal is not None and action not in legal:
                print(f"{text} is not a legal move now; legal: {shown}")
                continue
            return action


def play(a: dict[str, Any], read=input) -> list[str]:
    """Games between the person and the policy of ``a["run"]``, with a rematch or a seat swap offered after each;
    returns the outcomes from the person's side."""
    torch.set_num_threads(1)
    cfg, payload, path = load_policy(a["run"])
    watcher = Watcher("text", games=1)
    env = single_env(cfg, None, watcher, a["seed"])
    spec = env.spec
    outcomes: list[str] = []
    try:
        if not spec.turn_based or len(spec.agents) < 2:
            raise ConfigError(f"env '{spec.name}' is not a turn-based game of two or more players",
                              "play.py plays AEC games such as connect_four or tictactoe")
        policy = PolicyPlayer(make_policy(cfg, payload, path, env), name="policy", deterministic=a["deterministic"])
        seat = SEATS.index(a["seat"])
        human = HumanPlayer(watcher, read)
        board_game = cfg.env.name in ("connect_four", "tictactoe")
        while True:
            marks = " (X, moves first)" if seat == 0 else " (O, moves second)"
            print(f"{path.name} on {spec.name}: you are {spec.agents[seat]}{marks if board_game else ''}; "
                  f"the policy plays {', '.join(x for i, x in enumerate(spec.agents) if i != seat)}.")
            watcher.watch(1)
            watcher.roles = {x: "you" if i == seat else "policy" for i, x in enumerate(spec.agents)}
            result = play_matches(env, human, policy, 1, a["seed"] + len(outcomes), first_seat=seat)[0]
            outcomes.append(result.outcome)
            verdict = {"win": "You win!", "loss": "You lose.", "draw": "Draw."}[result.outcome]
            print(f"{verdict} (returns: {result.returns}, {result.length} moves)")
            choice = again(read)
            if choice == "q":
                return outcomes
            if choice == "s":
                seat = (seat + 1) % len(spec.agents)
    finally:
        env.close()


def again(read=input) -> str:
    """Ask for r (rematch, same seat), s (swap seats) or q (stop); end of input is q."""
    while True:
        try:
            text = read("play again? r = rematch, s = swap seats, q = quit > ").strip().lower()
        except EOFError:
            return "q"
        if text in ("r", "s", "q"):
            return text
        print(f"'{text}' is not one of r, s, q")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(x in ("-h", "--help", "help") for x in argv):
        print(__doc__.strip())
        return 0
    debug = any(x.lower() in ("debug=true", "debug=1", "debug=yes") for x in argv)
    try:
        a = parse_kv(argv, ARGS, USAGE)
        if "run" not in a:
            raise ConfigError("no policy given", "pass run=<run directory or checkpoint file>; " + USAGE)
        a.setdefault("seat", "first")
        a.setdefault("seed", 0)
        a.setdefault("deterministic", True)
        if a["seat"] not in SEATS:
            raise ConfigError(f"seat='{a['seat']}' is not valid", "choose seat=first or seat=second")
        play(a)
    except Quit:
        print("\nbye (game abandoned)")
        return 0
    except KeyboardInterrupt:
        print("\nbye (interrupted)")
        return 130
    except MarlError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
