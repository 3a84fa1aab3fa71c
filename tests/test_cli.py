"""End to end through the real CLI: every algorithm on a tiny budget, and a Hydra multirun with its sweep summary.

Each run must exit 0 and leave a complete run directory: ``config.yaml``, ``metrics.csv`` (throughput, a loss and the
final evaluation) and ``checkpoints/final.pt``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from conftest import TINY, TINY_PPO, read_rows, run_cli
from omegaconf import OmegaConf

HAS_DDPG = importlib.util.find_spec("marl.algos.ddpg") is not None

# (id, overrides, a loss column that must be logged)
CASES = [
    ("reinforce-cartpole", ["env=cartpole", "algo=reinforce"], "losses/policy_loss"),
    ("a2c-cartpole", ["env=cartpole", "algo=a2c"], "losses/policy_loss"),
    *[
        (f"ppo_{v}-cartpole", ["env=cartpole", "algo=ppo", f"algo.variant={v}", *TINY_PPO], "losses/policy_loss")
        for v in ("clip", "kl", "adaptive_kl")
    ],
    *[
        (f"{a}-{e}", [f"env={e}", f"algo={a}", *TINY_PPO], "losses/policy_loss")
        for e in ("simple_spread", "simple_speaker_listener")
        for a in ("ippo", "mappo", "happo")
    ],
    ("mappo-connect_four", ["env=connect_four", "algo=mappo", *TINY_PPO], "losses/policy_loss"),
    ("grpo-cartpole", ["env=cartpole", "algo=grpo", "algo.group_size=2", *TINY_PPO], "losses/ref_kl"),
    ("trpo-pendulum", ["env=pendulum", "algo=trpo", *TINY_PPO], "losses/tr_accepted"),
    ("hatrpo-simple_spread", ["env=simple_spread", "algo=hatrpo", *TINY_PPO], "losses/tr_accepted"),
]


def check_run_dir(run_dir: Path, loss: str, algo: str, env: str) -> list[dict[str, str]]:
    assert (run_dir / "config.yaml").is_file()
    stored = OmegaConf.load(run_dir / "config.yaml")
    assert (stored.algo.name, stored.env.name) == (algo, env)
    assert (run_dir / "checkpoints" / "final.pt").is_file()
    rows = read_rows(run_dir / "metrics.csv", drop=())
    assert rows, "metrics.csv has no rows"
    columns = set(rows[0])
    for col in ("global_step", "charts/SPS", loss, "eval/return"):
        assert col in columns, f"{col} missing from metrics.csv columns {sorted(columns)}"
    assert any(r[loss] for r in rows), f"{loss} never logged"
    assert rows[-1]["eval/return"], "the final row carries no evaluation"
    assert int(rows[-1]["global_step"]) >= int(stored.total_steps)
    return rows


@pytest.mark.parametrize("overrides,loss", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_train_cli(overrides: list[str], loss: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    res = run_cli([*overrides, *TINY, "total_steps=64", f"run_dir={run_dir}"], tmp_path)
    assert res.returncode == 0, res
    assert ("final evaluation: vs random: win" if "env=connect_four" in overrides else "final eval/return:") in \
        res.stdout, res
    algo = next(o for o in overrides if o.startswith("algo=")).split("=")[1]
    env = next(o for o in overrides if o.startswith("env=")).split("=")[1]
    check_run_dir(run_dir, loss, algo, env)


@pytest.mark.skipif(not HAS_DDPG, reason="marl/algos/ddpg.py is not importable yet")
def test_train_cli_ddpg_pendulum(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["env=pendulum", "algo=ddpg", "num_envs=2", "total_steps=96", "algo.learning_starts=32",
            "algo.batch_size=16", "algo.hidden=[32,32]", "eval_episodes=2", "eval_every=0", f"run_dir={run_dir}"]
    res = run_cli(args, tmp_path)
    assert res.returncode == 0, res
    rows = check_run_dir(run_dir, "losses/qf_loss", "ddpg", "pendulum")
    assert any(r.get("losses/actor_loss") for r in rows)


def test_multirun_writes_sweep_summary(tmp_path: Path) -> None:
    res = run_cli(["-m", "seed=0,1", "env=cartpole", "algo=a2c", *TINY, "total_steps=32"], tmp_path)
    assert res.returncode == 0, res
    sweep = Path(next(a.split("=", 1)[1] for a in res.args if a.startswith("hydra.sweep.dir=")))
    for job in ("0", "1"):
        check_run_dir(sweep / job, "losses/policy_loss", "a2c", "cartpole")
    summary = (sweep / "summary.md").read_text()
    # one setting (the overrides minus seed) averaged over the two seeds
    assert "algo=a2c" in summary and "| 2 |" in summary, summary
    assert (sweep / "summary.csv").is_file()


def test_turn_based_run_reports_win_rates_and_rounds_total_steps_once(tmp_path: Path) -> None:
    """Tic-tac-toe self-play: total_steps=100 with rollouts of 16 x 2 = 32 steps is rounded up to 128 (said once, and
    trained exactly), and the final line gives the win / draw / loss rates against each evaluation opponent."""
    run = tmp_path / "run"
    res = run_cli(["env=tictactoe", "algo=ppo", *TINY, *TINY_PPO, "total_steps=100", "eval_episodes=4",
                   "selfplay.eval_opponents=[random,minimax]", f"run_dir={run}"], tmp_path)
    assert res.returncode == 0, res
    assert res.stderr.count("total_steps=100 is rounded up to 128") == 1, res
    assert int(read_rows(run / "metrics.csv")[-1]["global_step"]) == 128
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("final evaluation:"))
    assert "vs random: win" in line and "vs minimax: win 0.0%" in line and "ret" not in line


def test_progress_bar_shows_win_rates_of_a_turn_based_run(tiny_cfg, capsys) -> None:
    """The bar's postfix carries the last evaluation's win rate per opponent, not ret=."""
    from marl.train import run

    cfg = tiny_cfg("env=tictactoe", "algo=ppo", *TINY_PPO, "total_steps=96", "eval_every=64", "eval_episodes=4")
    cfg.progress = True
    run(cfg)
    bar = capsys.readouterr().err.replace("\r", "\n")
    assert re.search(r"win_random=\d+%", bar) and "ret=" not in bar


def test_a_gymnasium_run_keeps_its_return_in_the_bar(tiny_cfg, capsys) -> None:
    from marl.train import run

    cfg = tiny_cfg("env=cartpole", "algo=ppo", *TINY_PPO, "total_steps=64")
    cfg.progress = True
    run(cfg)
    assert re.search(r"ret=\d+\.\d\d", capsys.readouterr().err)
