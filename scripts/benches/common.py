"""Benchmark helpers: run one training job in a subprocess (its own peak RSS via wait4), write JSON + markdown."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from marl import checkpoint as ckpt
from marl.config import compose
from marl.logging import read_metrics

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / "benchmarks"


def fmt(v: float | None, spec: str = ".1f") -> str:
    """A table cell: ``v`` formatted, or a dash where there is no figure."""
    return "—" if v is None else format(v, spec)


def preset_of(env: str, algo: str) -> str:
    """The preset ``scripts/train.py env=ENV algo=ALGO`` applies (``configs/preset/<env>_<algo>.yaml``, or none)."""
    return str(compose({"env": {"name": env}, "algo": {"name": algo}}).preset)


def train_job(env: str, algo: str, seed: int, steps: int, overrides: list[str], run_dir: Path) -> dict:
    """Run ``scripts/train.py env=ENV algo=ALGO`` (its tuned preset applies) plus ``overrides`` to completion; returns
    wall time, peak RSS (MB) and the metrics rows. A run already past ``steps`` is not run again; one with checkpoints
    is continued, its wall time added to the earlier segments' (``wall_from_step``: the step the timed segments start
    at, where an earlier segment was killed untimed)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    final = run_dir / ckpt.CKPT_DIR / "final.pt"
    if final.exists() and ckpt.load(final)["meta"]["env_steps"] >= steps:
        return finished_job(run_dir)
    # an existing run directory is continued from its newest checkpoint up to ``steps`` (extends a budget)
    resume = any((run_dir / ckpt.CKPT_DIR).glob("*.pt"))
    target = [f"resume={run_dir}"] if resume else [f"run_dir={run_dir}"]
    prev = run_dir / "bench_job.json"  # the timing of the segments run before, if they were not killed
    untimed = ckpt.load(ckpt.find_latest(run_dir))["meta"]["env_steps"] if resume and not prev.exists() else None
    args = [
        sys.executable,
        str(ROOT / "scripts" / "train.py"),
        f"env={env}",
        f"algo={algo}",
        f"seed={seed}",
        f"total_steps={steps}",
        *target,
        "progress=false",
        *overrides,
    ]
    log = open(run_dir.parent / f"{run_dir.name}.log", "a")
    t0 = time.perf_counter()
    # this checkout's marl, not whichever one is installed (a benchmark run from a git worktree)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": path})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    log.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"job failed ({' '.join(args)}); see {log.name}")
    job = {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}
    if untimed is not None:  # the segments before were not timed (a killed job): the wall time counts from here
        job["wall_from_step"] = untimed
    elif resume:  # a continued run: add up its segments (an earlier wall_from_step is kept)
        old = json.loads(prev.read_text())
        job = {**old, "wall_s": wall + old.get("wall_s", 0.0),
               "peak_rss_mb": max(job["peak_rss_mb"], old.get("peak_rss_mb", 0.0))}
    prev.write_text(json.dumps(job))
    return {**job, "rows": read_metrics(run_dir / "metrics.csv")}


def finished_job(run_dir: Path) -> dict:
    """A job already run by :func:`train_job` (``--report`` modes): its timing and metrics rows."""
    job = json.loads((run_dir / "bench_job.json").read_text()) if (run_dir / "bench_job.json").exists() else {}
    return {"wall_s": float("nan"), "peak_rss_mb": float("nan"), **job, "rows": read_metrics(run_dir / "metrics.csv")}


def last(rows: list[dict], key: str, max_step: float = float("inf")) -> float | None:
    """The last value of ``key`` logged at or before ``max_step``."""
    vals = [r[key] for r in rows if key in r and r["global_step"] <= max_step]
    return vals[-1] if vals else None


def first_step_reaching(rows: list[dict], key: str, target: float) -> float | None:
    for r in rows:
        if key in r and r[key] >= target:
            return r["global_step"]
    return None


def machine() -> dict:
    load = os.getloadavg()
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_at_end": [round(x, 2) for x in load],
    }


def interleaved(learners: dict, rounds: int, steps: int) -> dict[str, dict[str, float]]:
    """Wall time per env step of several learners in one process, ``rounds`` times ``steps`` env steps each in turn,
    so that the machine's load falls on all alike: ``{name: {env_steps, us_per_step, sps}}``."""
    used = {name: [0.0, 0] for name in learners}
    for _ in range(rounds):
        for name, learner in learners.items():
            s0, t0 = learner.env_steps, time.perf_counter()
            while learner.env_steps - s0 < steps:
                learner.iteration()
            used[name][0] += time.perf_counter() - t0
            used[name][1] += learner.env_steps - s0
    return {n: {"env_steps": k, "us_per_step": 1e6 * t / k, "sps": k / t} for n, (t, k) in used.items()}


def write(name: str, data: dict, markdown: str) -> None:
    BENCH_DIR.mkdir(exist_ok=True)
    (BENCH_DIR / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (BENCH_DIR / f"{name}.md").write_text(markdown)
    print(markdown)
