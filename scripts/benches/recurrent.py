"""Recurrent policies (algo.rnn) against feed-forward ones, the same settings otherwise.

`python scripts/bench.py recurrent [--cases memory_gru,...] [--seeds 0 1 2] [--steps N] [--jobs 2] [--out DIR]
[--speed]` -> benchmarks/recurrent.{json,md}. A run with some ``--cases`` / ``--seeds`` replaces those entries and
keeps the others; ``--steps`` shortens every case's budget (recorded per case). Cases (from the issue): the memory env
(envs/memory.py) with a GRU and without, 3 seeds; simple_spread and simple_speaker_listener with MAPPO, rnn=gru vs
feed-forward (300k in the issue); leduc hold'em PPO self-play, gru vs feed-forward, vs random. ``--speed``: the wall
time per env step of MAPPO on simple_spread with and without a GRU, interleaved in one process so the machine's load
falls on both alike (target: the recurrent run at >= 0.5x the feed-forward speed), and each one's peak memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benches.common import BENCH_DIR, finished_job, interleaved, last, machine, train_job, write

OUT = BENCH_DIR / "recurrent.json"
# the memory env: a small network, a high learning rate (the learning test's settings)
MEMORY = ["num_envs=8", "algo.num_steps=16", "algo.num_minibatches=2", "algo.update_epochs=4", "algo.lr=6e-3",
          "algo.critic_lr=3e-3",
          "algo.hidden=[32]", "algo.rnn_hidden=32", "algo.rnn_chunk=16", "eval_every=5000", "eval_episodes=100"]
MPE = ["eval_every=50000", "eval_episodes=50"]
LEDUC = ["eval_every=50000", "eval_episodes=400", "algo.rnn_chunk=16"]
GRU = ["algo.rnn=gru"]

# name: (env, algo, steps, metric, overrides)
CASES: dict[str, tuple[str, str, int, str, list[str]]] = {
    "memory_gru": ("memory", "ppo", 20_000, "eval/return", [*MEMORY, *GRU]),
    "memory_ff": ("memory", "ppo", 20_000, "eval/return", MEMORY),
    "spread_mappo_gru": ("simple_spread", "mappo", 300_000, "eval/return", [*MPE, *GRU]),
    "spread_mappo_ff": ("simple_spread", "mappo", 300_000, "eval/return", MPE),
    "speaker_listener_mappo_gru": ("simple_speaker_listener", "mappo", 300_000, "eval/return", [*MPE, *GRU]),
    "speaker_listener_mappo_ff": ("simple_speaker_listener", "mappo", 300_000, "eval/return", MPE),
    "leduc_ppo_gru": ("leduc_holdem", "ppo", 200_000, "eval/random/return", [*LEDUC, *GRU]),
    "leduc_ppo_ff": ("leduc_holdem", "ppo", 200_000, "eval/random/return", LEDUC),
}


def summarize(name: str, seed: int, job: dict) -> dict:
    metric = CASES[name][3]
    rows = job["rows"]
    end = rows[-1]["global_step"] if rows else float("nan")
    return {
        "seed": seed,
        "final": last(rows, metric),
        "evals": {int(r["global_step"]): r[metric] for r in rows if metric in r},
        "env_steps": end,
        "sps": last(rows, "charts/SPS"),
        "wall_s": round(job["wall_s"], 1),
        "peak_rss_mb": round(job["peak_rss_mb"], 1),
    }


def speed(rounds: int = 4, steps: int = 4000) -> dict[str, dict[str, float]]:
    """Wall time per env step of MAPPO on simple_spread (8 copies, the mappo defaults), feed-forward and with a GRU,
    in one process, interleaved ``rounds`` times ``steps`` env steps each (peak memory: the training cases, each a
    process of its own)."""
    import torch

    from marl.config import compose
    from marl.train import build, make_learner

    torch.set_num_threads(1)
    learners = {}
    for name, rnn in (("feed-forward", None), ("gru", "gru")):
        cfg = compose({"env": {"name": "simple_spread"}, "algo": {"name": "mappo", "rnn": rnn}, "seed": 0,
                       "total_steps": 10**7, "preset": "none"})
        learner = make_learner(cfg, build(cfg), "cpu")
        learner.reset_env(0)
        learner.iteration()  # warm up (and the first buffers)
        learners[name] = learner
    out = interleaved(learners, rounds, steps)
    out["gru"]["speed_vs_ff"] = out["gru"]["sps"] / out["feed-forward"]["sps"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.py recurrent")
    ap.add_argument("--cases", default="memory_gru,memory_ff,spread_mappo_gru,spread_mappo_ff")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=None, help="budget of every case (default: the case's own)")
    ap.add_argument("--jobs", type=int, default=1, help="training runs at a time")
    ap.add_argument("--out", default=None, help="run directory root (default: a temp dir)")
    ap.add_argument("--speed", action="store_true", help="only measure the interleaved MAPPO speed and memory")
    args = ap.parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp(prefix="marl_bench_recurrent_"))
    stored = json.loads(OUT.read_text()) if OUT.exists() else {}
    results, timing = stored.get("results", {}), stored.get("speed", {})
    if args.speed:
        timing = speed()
        write("recurrent", {"machine": machine(), "results": results, "speed": timing}, markdown(results, timing))
        return 0
    todo = [(n, s) for n in args.cases.split(",") for s in args.seeds]

    def one(item: tuple[str, int]) -> tuple[str, int, dict]:
        name, seed = item
        env, algo, steps, _, over = CASES[name]
        steps = args.steps or steps
        run_dir = root / f"{name}_{steps}_s{seed}"
        job = finished_job(run_dir) if (run_dir / "checkpoints" / "final.pt").exists() else \
            train_job(env, algo, seed, steps, over, run_dir)
        out = summarize(name, seed, job)
        print(name, out, flush=True)
        return name, steps, out

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        done = list(pool.map(one, todo))
    for name, steps, out in done:
        env, algo, _, metric, over = CASES[name]
        r = results.get(name)
        if r is None or r["steps"] != steps:
            r = results[name] = {"env": env, "algo": algo, "steps": steps, "metric": metric, "overrides": over,
                                 "seeds": []}
        r["seeds"] = sorted([s for s in r["seeds"] if s["seed"] != out["seed"]] + [out], key=lambda s: s["seed"])
        finals = [s["final"] for s in r["seeds"] if s["final"] is not None]
        r["mean"] = statistics.fmean(finals) if finals else None
    write("recurrent", {"machine": machine(), "results": results, "speed": timing}, markdown(results, timing))
    return 0


def markdown(results: dict, timing: dict) -> str:
    rows = ["| case | env | algo | env steps | metric | mean | per seed | SPS | peak RSS (MB) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        ss = r["seeds"]
        per = ", ".join(f"s{s['seed']}: {s['final']:.3g}" for s in ss if s["final"] is not None)
        sps = statistics.fmean(s["sps"] for s in ss)
        rss = max(s["peak_rss_mb"] for s in ss)
        mean = "-" if r["mean"] is None else f"{r['mean']:.3g}"
        rows.append(f"| {name} | {r['env']} | {r['algo']} | {r['steps']:,} | {r['metric']} | {mean} | {per} | "
                    f"{sps:.0f} | {rss:.0f} |")
    md = ("# Recurrent policies (algo.rnn=gru) vs feed-forward\n\n"
          "`python scripts/bench.py recurrent` (cases and overrides: scripts/benches/recurrent.py and recurrent.json). "
          "Every `_gru` case is its `_ff` case plus `algo.rnn=gru` (MAPPO defaults otherwise: `rnn_hidden=64`, "
          "`rnn_chunk=10`). `eval/return`: deterministic evaluation, the sum over agents (memory env: 2 agents, "
          "chance 1.0, solved 2.0). The runs shared 2 CPU cores with other jobs (load average in the machine line), so "
          "SPS is indicative only; the interleaved speed table compares the two networks under the same load. A budget "
          "below the case's own (`scripts/benches/recurrent.py`: MPE 300k, leduc 200k) was shortened with `--steps` "
          "to fit the session. On the memory env (a 32-unit network, 16-step chunks, a trivial env) the update's "
          "step-by-step replay dominates the run time, so its GRU / feed-forward speed ratio is the worst case; on "
          "simple_spread the env's own cost dilutes it.\n\n"
          + "\n".join(rows) + "\n")
    evals = [f"| {n} | s{s['seed']} | " + ", ".join(f"{int(k):,}: {v:.3g}" for k, v in s["evals"].items()) + " |"
             for n, r in results.items() for s in r["seeds"] if s["evals"]]
    if evals:
        md += "\n## Evaluations during training\n\n| case | seed | env steps: value |\n|---|---|---|\n"
        md += "\n".join(evals) + "\n"
    if timing:
        md += ("\n## MAPPO on simple_spread, interleaved in one process (`--speed`)\n\n"
               "| network | env steps | µs / env step | env steps/s | speed vs feed-forward |\n"
               "|---|---|---|---|---|\n"
               + "\n".join(f"| {n} | {t['env_steps']:,} | {t['us_per_step']:.0f} | {t['sps']:.0f} | "
                           f"{t.get('speed_vs_ff', 1.0):.2f}x |" for n, t in timing.items())
               + "\n")
    missing = [n for n in CASES if n not in results]
    if missing:
        cmd = "`python scripts/bench.py recurrent --cases {} --seeds 0 1 2`"
        md += "\n## Not run\n\n" + "\n".join(f"- {n}: {cmd.format(n)}" for n in missing) + "\n"
    return md + f"\nMachine: {machine()}\n"
