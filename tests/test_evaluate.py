"""scripts/evaluate.py end to end on tiny checkpoints (video, tables, terminal rendering, user errors) and the
statistics behind its tables."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from marl.matches import MatchResult, duel_summary, mean_ci, wilson
from marl.train import run

ROOT = Path(__file__).resolve().parents[1]
EVALUATE = ROOT / "scripts" / "evaluate.py"


def train_tiny(run_dir: Path, env: str, algo: str = "ppo", steps: int = 256) -> Path:
    """A finished tiny run of ``env`` (the weights barely trained; enough to load and play)."""
    from marl.adapters.registry import resolve_env_config

    run({"env": resolve_env_config(env), "algo": {"name": algo, "num_steps": 16, "update_epochs": 1},
         "num_envs": 4, "seed": 0, "total_steps": steps, "progress": False, "eval_every": 0, "eval_episodes": 2,
         "run_dir": str(run_dir), "threads": 1})
    return run_dir


@pytest.fixture(scope="session")
def tictactoe_run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("ttt") / "run", "tictactoe")


@pytest.fixture(scope="session")
def connect_four_run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("c4") / "run", "connect_four")


def script_env(**extra: str) -> dict[str, str]:
    env = os.environ.copy()
    env.update(WANDB_MODE="disabled", OMP_NUM_THREADS="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def evaluate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """scripts/evaluate.py ARGS in a subprocess: the real command line."""
    return subprocess.run([sys.executable, str(EVALUATE), *args], capture_output=True, text=True, timeout=300,
                          env=env or script_env(), cwd=ROOT)


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def evaluate_here(capsys):
    """scripts/evaluate.py's main() in this process (no interpreter start-up): ARGS -> (exit code, stdout, stderr)."""
    main = load_script("evaluate").main

    def call(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


def test_gif_of_matches_and_result_table(connect_four_run, tmp_path):
    video = tmp_path / "match.gif"
    p = evaluate(f"run={connect_four_run}", "episodes=6", "opponent=heuristic", "render=rgb_array",
                 f"video={video}", "seed=1")
    assert p.returncode == 0, p.stderr
    frames = iio.imread(video, index=None)
    assert video.stat().st_size > 1000 and frames.shape[0] > 10 and frames.shape[-1] == 3
    diffs = [not np.array_equal(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
    assert sum(diffs) >= 10  # the board changes as the pieces fall
    assert "policy vs heuristic" in p.stdout and "Wilson" in p.stdout
    rows = {line.split()[0]: line.split() for line in p.stdout.splitlines() if line.startswith(("player_", "all"))}
    assert set(rows) == {"player_0", "player_1", "all"}
    assert rows["all"][1] == "6" and rows["player_0"][1] == rows["player_1"][1] == "3"  # seats alternate


def test_mp4_video(tictactoe_run, tmp_path, evaluate_here):
    video = tmp_path / "match.mp4"
    code, _, err = evaluate_here(f"run={tictactoe_run}", "episodes=2", "opponent=minimax", "render=rgb_array",
                                 f"video={video}")
    assert code == 0, err
    assert video.stat().st_size > 1000 and video.read_bytes()[4:8] == b"ftyp"  # an MP4 container


def test_ansi_prints_moves_and_boards(tictactoe_run, evaluate_here):
    code, out, err = evaluate_here(f"run={tictactoe_run}", "episodes=2", "opponent=minimax", "render=ansi",
                                   "deterministic=true")
    assert code == 0, err
    assert "player_1 (policy) plays cell" in out and "---+---+---" in out and "game 2/2 over" in out
    assert "policy vs minimax" in out


def test_ansi_shows_the_very_games_that_were_scored(tictactoe_run, evaluate_here):
    """Each printed result is one of the scored matches (the table's counts are the printed ones), seats alternate,
    and within each game the policy's seat is the one marked (policy)."""
    code, out, err = evaluate_here(f"run={tictactoe_run}", "episodes=4", "opponent=random", "render=ansi", "seed=2")
    assert code == 0, err
    results = re.findall(r"game (\d)/4 over: policy as (player_\d): (win|draw|loss)", out)
    assert [r[0] for r in results] == ["1", "2", "3", "4"]
    assert [r[1] for r in results] == ["player_1", "player_2", "player_1", "player_2"]
    games = re.split(r"game \d/4 over", out)[:4]
    for (_, seat, _), text in zip(results, games, strict=True):
        other = "player_2" if seat == "player_1" else "player_1"
        assert f"{seat} (policy) plays" in text and f"{other} (opponent) plays" in text
        assert f"{seat} (opponent)" not in text
    all_row = next(ln for ln in out.splitlines() if ln.startswith("all"))
    counts = [int(c) for c in re.findall(r"(\d+)\s+[\d.]+%", all_row)]
    assert counts == [sum(r[2] == k for r in results) for k in ("win", "draw", "loss")]


@pytest.fixture(scope="session")
def cartpole_run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("cartpole") / "run", "cartpole", steps=64)


@pytest.mark.parametrize(("fps", "duration_ms"), [(None, 20), ("5", 200)])
def test_video_plays_at_the_env_render_fps_or_fps(cartpole_run, tmp_path, evaluate_here, fps, duration_ms):
    """CartPole declares render_fps 50: 20 ms a frame (not 2 fps); fps=5 overrides it; max_frames caps the video."""
    from PIL import Image

    video = tmp_path / "cartpole.gif"
    args = [f"run={cartpole_run}", "episodes=2", f"video={video}", "max_frames=10", *([f"fps={fps}"] if fps else [])]
    code, out, err = evaluate_here(*args)
    assert code == 0, err
    with Image.open(video) as im:  # GIF writers merge repeated frames (adding up their durations): sum them
        durations = []
        for k in range(im.n_frames):
            im.seek(k)
            durations.append(im.info["duration"])
    assert sum(durations) == 10 * duration_ms and all(d % duration_ms == 0 for d in durations)
    assert "10 frames at" in out


def test_actions_are_greedy_by_default_and_sampled_on_request(tictactoe_run, evaluate_here):
    """One default with training evaluation and play.py: greedy, said at start; deterministic=false samples."""
    args = (f"run={tictactoe_run}", "episodes=6", "opponent=random", "num_envs=2")
    code, default, err = evaluate_here(*args)
    assert code == 0, err
    assert default.splitlines()[0] == "actions: greedy (deterministic=true)"
    code, greedy, err = evaluate_here(*args, "deterministic=true")
    assert code == 0 and greedy == default, err
    code, sampled, err = evaluate_here(*args, "deterministic=false")
    assert code == 0, err
    assert sampled.splitlines()[0] == "actions: sampled (deterministic=false)"


def test_human_render_without_a_display_is_a_clear_error(tictactoe_run, evaluate_here, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code, _, err = evaluate_here(f"run={tictactoe_run}", "episodes=2", "render=human")
    assert code == 2 and "needs a display" in err and "render=ansi" in err and "Traceback" not in err


def test_checkpoint_from_another_env_is_refused(tictactoe_run, connect_four_run, evaluate_here):
    p = evaluate(f"run={tictactoe_run}", "episodes=2", "env=connect_four")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "trained on env 'tictactoe', not on 'connect_four'" in p.stderr and "fix:" in p.stderr
    code, _, err = evaluate_here(f"run={connect_four_run}", "episodes=2", f"opponent={tictactoe_run}")
    assert code == 2 and "trained on env 'tictactoe', not on 'connect_four'" in err


@pytest.mark.parametrize(("args", "message"), [
    (["opponent=minimax"], "valid opponents for env 'connect_four': random, heuristic, self"),
    (["opponent=alphazero"], "unknown opponent 'alphazero'"),
    (["render=rgb_array"], "needs a video file"),
    (["video=x.avi"], "must end in .gif or .mp4"),
    (["episodes=zero"], "bad value for 'episodes'"),
    (["colour=red"], "unknown argument 'colour'"),
])
def test_user_errors_exit_2_with_a_fix(connect_four_run, args, message, evaluate_here):
    code, _, err = evaluate_here(f"run={connect_four_run}", "episodes=2", *args)
    assert code == 2 and message in err and "fix:" in err and "Traceback" not in err


def test_missing_run_is_a_clear_error(tmp_path, evaluate_here):
    code, _, err = evaluate_here(f"run={tmp_path / 'nope'}")
    assert code == 2 and "does not exist" in err


def test_cooperative_env_prints_team_and_agent_returns(tmp_path, evaluate_here):
    run_dir = train_tiny(tmp_path / "relay", "relay", algo="mappo", steps=128)
    code, out, err = evaluate_here(f"run={run_dir}", "episodes=4")
    assert code == 0, err
    assert "team" in out and "return (mean ± 95% CI)" in out
    code, _, err = evaluate_here(f"run={run_dir}", "episodes=4", "opponent=random")
    assert code == 2 and "applies to turn-based games" in err


def test_wilson_interval_matches_hand_computed_values():
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson(100, 100)
    assert hi == 1.0 and lo == pytest.approx(0.9630, abs=1e-4)
    m, half = mean_ci([1.0, -1.0, 1.0, -1.0])
    assert m == 0.0 and half == pytest.approx(1.96 * np.std([1, -1, 1, -1], ddof=1) / 2, rel=1e-3)


def test_outcomes_and_per_seat_summary():
    res = [MatchResult("player_0", {"player_0": 1.0, "player_1": -1.0}, 7),
           MatchResult("player_1", {"player_0": 1.0, "player_1": -1.0}, 9),
           MatchResult("player_1", {"player_0": 0.0, "player_1": 0.0}, 42)]
    assert [r.outcome for r in res] == ["win", "loss", "draw"]
    s = duel_summary(res, ("player_0", "player_1"))
    assert s["all"]["n"] == 3 and s["seats"]["player_0"]["win"]["count"] == 1
    assert s["seats"]["player_1"]["loss"]["count"] == 1 and s["seats"]["player_1"]["draw"]["count"] == 1
    assert s["all"]["payoff"]["mean"] == pytest.approx(0.0)


def test_help_prints_the_usage_and_exits_zero():
    for script in (EVALUATE, EVALUATE.parent / "play.py"):
        p = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and "run=<run dir or checkpoint>" in p.stdout and not p.stderr
