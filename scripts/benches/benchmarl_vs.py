"""BenchMARL's MAPPO next to marl's on the same VMAS task, one run, side by side (the ``speed --benchmarl`` part).

BenchMARL is never imported here: it runs in its own virtual environment (``--benchmarl PYTHON``, the interpreter of
that venv, e.g. ``python -m venv /work/bmvenv && /work/bmvenv/bin/pip install torch==2.13.0 benchmarl vmas``) as a
subprocess of its own CLI (``python -m benchmarl.run``), and its CSV logs are read afterwards.

The task is marl's ``vmas_simple_spread``: VMAS ``simple_spread``, 3 agents, 25 steps, discrete actions. BenchMARL
keeps its own MAPPO defaults (lr 5e-5, 6,000 frames per batch, 45 minibatches of 400, GAE lambda 0.9, ...) except
the three settings that make it the same task and batch layout: ``task.max_steps=25``,
``experiment.prefer_continuous_actions=False`` and 240 copies (6,000 frames = 25 steps of every copy, one episode
each, as marl's 25-step rollouts). Its evaluation return is per agent (the mean over agents of their episode
returns; every agent gets the same shared reward in this scenario), multiplied by 3 here to compare with marl's
return summed over the agents.
"""

from __future__ import annotations

import csv
import os
import subprocess
import time
from pathlib import Path

BATCH = 6000  # BenchMARL's on_policy_collected_frames_per_batch (its default)
COPIES = 240  # BATCH / 25: one 25-step episode per copy and batch
N_AGENTS = 3


def _scalar(folder: Path, name: str) -> list[tuple[int, float]]:
    """One of BenchMARL's CSV scalars: ``(iteration, value)`` rows (empty when the file is absent)."""
    files = list(folder.rglob(f"scalars/{name}.csv"))
    if not files:
        return []
    with open(files[0]) as f:
        return [(int(float(r[0])), float(r[1])) for r in csv.reader(f) if r]


def run_benchmarl(python: str, frames: int, out: Path, eval_every: int, seed: int = 0,
                  timeout_s: float = 3600.0) -> dict:
    """Train BenchMARL's MAPPO for ``frames`` env steps; returns its wall time, frames/s (whole process), its share
    of the time in training, and its evaluation returns ``[(env steps, return summed over agents)]``."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("mappo_*"):  # a previous run's folder would be read instead of this one's
        subprocess.run(["rm", "-rf", str(old)], check=False)
    args = [python, "-m", "benchmarl.run", "algorithm=mappo", "task=vmas/simple_spread", "task.max_steps=25",
            "experiment.prefer_continuous_actions=False", f"experiment.on_policy_n_envs_per_worker={COPIES}",
            f"experiment.max_n_frames={frames}", f"experiment.evaluation_interval={eval_every}",
            "experiment.evaluation_episodes=64", "experiment.loggers=[csv]", "experiment.render=False",
            "experiment.create_json=False", f"experiment.save_folder={out.resolve()}", f"seed={seed}"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # its own venv's packages only
    t0 = time.perf_counter()
    with open(out.parent / f"{out.name}.log", "w") as log:
        proc = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout_s, cwd=out)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"BenchMARL failed ({' '.join(args)}); see {out.parent / (out.name + '.log')}")
    frames_at = dict(_scalar(out, "counters_total_frames"))
    train_t = sum(v for _, v in _scalar(out, "timers_training_time"))
    iter_t = sum(v for _, v in _scalar(out, "timers_iteration_time"))
    # iteration i collects a batch, trains on it, then evaluates: after frames_at[i] env steps
    evals = [(int(frames_at.get(i, (i + 1) * BATCH)), v * N_AGENTS)
             for i, v in _scalar(out, "eval_reward_episode_reward_mean")]
    return {"frames": int(max(frames_at.values(), default=0)), "wall_s": round(wall, 1),
            "steps_per_s": max(frames_at.values(), default=0) / wall,
            "training_share": train_t / iter_t if iter_t else None, "eval": evals, "command": " ".join(args)}
