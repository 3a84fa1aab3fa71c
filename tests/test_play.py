"""scripts/play.py driven through stdin: whole games, bad input asked again, clean exits on q and end of input."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from test_evaluate import ROOT, load_script, script_env, train_tiny

PLAY = ROOT / "scripts" / "play.py"
VERDICTS = ("You win!", "You lose.", "Draw.")


@pytest.fixture(scope="module")
def ttt_run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("play_ttt") / "run", "tictactoe")


@pytest.fixture(scope="module")
def c4_run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("play_c4") / "run", "connect_four")


def play(*args: str, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PLAY), *args], input=stdin, capture_output=True, text=True,
                          timeout=300, env=script_env(), cwd=ROOT)


@pytest.fixture
def play_here(capsys, monkeypatch):
    """play.py's main() in this process with ``stdin`` as the person's input -> (exit code, stdout, stderr)."""
    main = load_script("play").main

    def call(*args: str, stdin: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


def test_whole_connect_four_game_survives_bad_input(c4_run):
    # "x", "99" and "0" are rejected, then the columns in turn until the game ends (a full column is asked again:
    # the occupied-square case is checked on tic-tac-toe below)
    moves = ["x", "99", "0"] + ["1", "2", "3", "4", "5", "6", "7"] * 7
    p = play(f"run={c4_run}", "seed=3", stdin="\n".join(moves) + "\n")
    assert p.returncode == 0, p.stderr
    assert "'x' is not a number" in p.stdout
    assert "99 is not a legal move now" in p.stdout and "0 is not a legal move now" in p.stdout
    assert "type a column number 1-7" in p.stdout and "1 2 3 4 5 6 7" in p.stdout
    assert any(v in p.stdout for v in VERDICTS)


def test_whole_tictactoe_game_as_second_player_rejects_occupied_cells(ttt_run, play_here):
    # the policy moves first; "5" then "5" again (occupied by now), then every cell in turn
    moves = ["5", "5", "1", "2", "3", "4", "6", "7", "8", "9"]
    code, out, err = play_here(f"run={ttt_run}", "seat=second", stdin="\n".join(moves) + "\n")
    assert code == 0, err
    assert "you are player_2 (O, moves second)" in out
    assert "5 is not a legal move now" in out
    assert out.index("player_1 (policy) plays cell") < out.index("player_2 (you) plays cell")  # the policy opened
    assert any(v in out for v in VERDICTS)


@pytest.mark.parametrize("stdin", ["", "3\n", "q\n"])
def test_end_of_input_or_q_exits_cleanly(ttt_run, play_here, stdin):
    code, out, err = play_here(f"run={ttt_run}", stdin=stdin)
    assert code == 0, err
    assert "bye" in out and not any(v in out for v in VERDICTS)


def test_user_errors_exit_2(ttt_run, play_here, tmp_path):
    code, _, err = play_here(f"run={ttt_run}", "seat=third", stdin="")
    assert code == 2 and "seat=first or seat=second" in err
    code, _, err = play_here(f"run={tmp_path / 'missing'}", stdin="")
    assert code == 2 and "does not exist" in err and "Traceback" not in err


def test_ctrl_c_at_the_prompt_exits_130_quietly(ttt_run, capsys, monkeypatch):
    """Ctrl-C while the person is asked for a move: exit code 130, a short line, no traceback."""

    class CtrlC(io.StringIO):
        def readline(self, *args) -> str:
            raise KeyboardInterrupt

    monkeypatch.setattr(sys, "stdin", CtrlC())
    code = load_script("play").main([f"run={ttt_run}"])
    out = capsys.readouterr()
    assert code == 130
    assert "bye (interrupted)" in out.out and "Traceback" not in out.out + out.err


def test_rematch_and_seat_swap(ttt_run, play_here):
    """Game 1 as first player, "s" swaps seats for game 2 (the policy opens), "q" then stops; every cell is typed in
    turn (occupied ones are asked again) so each game ends."""
    cells = [str(c) for c in range(1, 10)]
    code, out, err = play_here(f"run={ttt_run}", stdin="\n".join([*cells, "x", "s", *cells, "q"]) + "\n")
    assert code == 0, err
    assert sum(out.count(v) for v in VERDICTS) == 2 and "'x' is not one of r, s, q" in out
    end_of_first = min(out.index(v) for v in VERDICTS if v in out)
    first, second = out[:end_of_first], out[end_of_first:]
    assert "you are player_1 (X, moves first)" in first and "you are player_2 (O, moves second)" in second
    assert second.index("player_1 (policy) plays cell") < second.index("player_2 (you) plays cell")
