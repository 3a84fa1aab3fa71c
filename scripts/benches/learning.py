"""Single-agent learning benchmark: REINFORCE, A2C, PPO (discrete + continuous), DDPG on gymnasium envs, 3 seeds.

`python scripts/bench.py learning [--cases ppo_cartpole,...] [--seeds 0 1 2]` -> benchmarks/single_agent.{json,md}.
The tuned hyperparameters of each case are its preset, configs/preset/<env>_<algo>.yaml (zoo-style, on top of
configs/algo/*.yaml), which `scripts/train.py env=ENV algo=ALGO` applies by default; the output names it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from benches.common import BENCH_DIR, finished_job, first_step_reaching, last, machine, preset_of, train_job, write

# name: (env, algo, steps, metric, target, extra overrides); the tuned values are the presets that
# `scripts/train.py env=ENV algo=ALGO` applies by default (configs/preset/<env>_<algo>.yaml)
CASES: dict[str, tuple[str, str, int, str, float, list[str]]] = {
    "ppo_cartpole": ("cartpole", "ppo", 100_000, "charts/recent_return", 475.0, []),
    "a2c_cartpole": ("cartpole", "a2c", 300_000, "charts/recent_return", 475.0, []),
    "reinforce_baseline_cartpole": ("cartpole", "reinforce", 300_000, "charts/recent_return", 450.0, []),
    "ddpg_pendulum": ("pendulum", "ddpg", 20_000, "eval/return", -200.0, ["eval_episodes=10"]),
    "ppo_pendulum": ("pendulum", "ppo", 200_000, "charts/recent_return", -300.0, []),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.py learning")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=None, help="run directory root (default: a temp dir)")
    ap.add_argument("--report", action="store_true", help="summarize finished runs under --out, run nothing")
    args = ap.parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp(prefix="marl_bench_learning_"))
    path = BENCH_DIR / "single_agent.json"
    results = json.loads(path.read_text())["results"] if path.exists() else {}  # other cases are kept
    for name in args.cases.split(","):
        env, algo, steps, metric, target, over = CASES[name]
        per_seed = []
        for seed in args.seeds:
            run_dir = root / f"{name}_s{seed}"
            if args.report and not (run_dir / "metrics.csv").exists():
                continue
            job = (
                finished_job(run_dir)
                if args.report
                else train_job(env, algo, seed, steps, [*over, "eval_every=0"], run_dir)
            )
            rows = job["rows"]
            per_seed.append(
                {
                    "seed": seed,
                    "final": last(rows, metric),
                    "eval_return": last(rows, "eval/return"),
                    "first_step_at_target": first_step_reaching(rows, metric, target),
                    "sps": last(rows, "charts/SPS"),
                    "wall_s": round(job["wall_s"], 1),
                    "peak_rss_mb": round(job["peak_rss_mb"], 1),
                }
            )
            print(name, per_seed[-1], flush=True)
        if not per_seed:
            continue
        finals = [s["final"] for s in per_seed]
        results[name] = {
            "env": env,
            "algo": algo,
            "steps": steps,
            "metric": metric,
            "target": target,
            "preset": preset_of(env, algo),
            "overrides": over,
            "seeds": per_seed,
            "mean": statistics.fmean(finals),
            "min": min(finals),
            "met": all(f >= target for f in finals),
        }
        results = {**json.loads(path.read_text())["results"], **results} if path.exists() else results
    rows = [
        "| case | env steps | metric | target | mean | min | per seed | met | wall s (mean) | SPS (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        seeds = ", ".join(f"{s['final']:.1f}" for s in r["seeds"])
        wall = statistics.fmean(s["wall_s"] for s in r["seeds"])
        sps = statistics.fmean(s["sps"] for s in r["seeds"])
        rows.append(
            f"| {name} | {r['steps']:,} | {r['metric']} | {r['target']:g} | {r['mean']:.1f} | {r['min']:.1f} | "
            f"{seeds} | {'yes' if r['met'] else 'no'} | {wall:.0f} | {sps:.0f} |"
        )
    md = (
        "# Single-agent learning benchmark\n\n"
        "`python scripts/bench.py learning` — seeds " + " ".join(map(str, args.seeds)) + "; `charts/recent_return` is "
        "the mean return of the last 20 training episodes at the end of the budget; `eval/return` the mean of "
        "deterministic evaluation episodes at the end. The preset (configs/preset/) and the extra overrides per case "
        "are in single_agent.json.\n\n"
        + "\n".join(rows)
        + f"\n\nMachine: {machine()}\n"
    )
    write("single_agent", {"machine": machine(), "results": results}, md)
    return 0
