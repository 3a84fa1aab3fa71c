"""Training speed: MAPPO on VMAS (torch end to end) vs VMAS's own random-action rate, and marl on mpe2 (PettingZoo).

Side by side in one run (the ratios are what to read on a shared machine):

* VMAS ``simple_spread`` (3 agents, 25 steps): VMAS's random-action rate (``vmas.make_env`` + ``get_random_actions``,
  no marl) and marl's MAPPO training rate (whole process: env steps / wall time, start-up and evaluation included;
  and the loop's own ``charts/SPS``) at each ``num_envs``; their ratio; peak RSS; the evaluation return at the end.
* mpe2 ``simple_spread``: its single-process random-action rate (one raw PettingZoo env, no marl) and marl's MAPPO
  with the default ``env.backend=auto``.

Writes ``benchmarks/speed.json`` and ``benchmarks/speed.md``::

    python scripts/bench.py speed            # about 10 minutes
    python scripts/bench.py speed --quick    # a tiny run, to check the script
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from benches.adapters import RawLoop
from benches.common import last, machine, train_job, write

NUM_ENVS = (64, 512, 2048)
RUNS = Path("outputs/bench_speed")


def vmas_random_rate(num_envs: int, seconds: float, scenario: str = "simple_spread", max_steps: int = 25) -> float:
    """Env steps/s of VMAS alone (random actions, finished copies reset in bulk when all end together)."""
    import vmas

    torch.set_num_threads(1)
    env = vmas.make_env(scenario, num_envs=num_envs, device="cpu", continuous_actions=False, max_steps=max_steps,
                        seed=0)
    env.reset()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, done, _ = env.step(env.get_random_actions())
        steps += 1
        if bool(done.all()):
            env.reset()
    return steps * num_envs / (time.perf_counter() - t0)


def mpe2_random_rate(seconds: float) -> float:
    """Env steps/s of one raw mpe2 simple_spread env in this process (random actions, no marl)."""
    loop = RawLoop("simple_spread")
    return loop.run(seconds)


def train_rate(env: str, steps: int, overrides: list[str], tag: str) -> dict:
    job = train_job(env, "mappo", 0, steps, overrides, RUNS / tag)
    rows = job["rows"]
    reached = int(rows[-1]["global_step"])
    return {"env_steps": reached, "wall_s": round(job["wall_s"], 1), "steps_per_s": reached / job["wall_s"],
            "loop_sps": last(rows, "charts/SPS"), "peak_rss_mb": round(job["peak_rss_mb"]),
            "eval_return": last(rows, "eval/return"), "overrides": overrides}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, to check the script")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each random-action measurement")
    parser.add_argument("--steps", type=int, default=1_000_000, help="MAPPO env steps per VMAS num_envs")
    parser.add_argument("--num-envs", type=int, nargs="+", default=list(NUM_ENVS))
    parser.add_argument("--scenarios", nargs="*", default=["navigation", "balance"],
                        help="more VMAS scenarios, MAPPO with their preset (num_envs=512)")
    parser.add_argument("--mpe-steps", type=int, default=100_000, help="env steps of the mpe2 MAPPO run")
    args = parser.parse_args(argv)
    seconds = 1.0 if args.quick else args.seconds
    vmas_steps = 20_000 if args.quick else args.steps
    # long enough for env.backend=auto to consider worker processes (it keeps runs under AUTO_MIN_RUN in-process)
    mpe_steps = 8_000 if args.quick else args.mpe_steps
    load_before = round(os.getloadavg()[0], 2)
    vmas_rows = {}
    for E in args.num_envs:
        steps = max(vmas_steps, E * 25 * 4)  # at least four updates
        if not args.quick and E <= 64:
            steps = min(steps, 200_000)  # the slowest setting: enough for a rate, not for a return at 1M
        rnd = vmas_random_rate(E, seconds)
        tr = train_rate("vmas_simple_spread", steps, [f"num_envs={E}", f"checkpoint_every={steps}"], f"vmas_E{E}")
        tr["random_steps_per_s"] = rnd
        tr["ratio_to_random"] = tr["steps_per_s"] / rnd
        vmas_rows[str(E)] = tr
        print(f"vmas E={E}: train {tr['steps_per_s']:,.0f}/s, random {rnd:,.0f}/s, return {tr['eval_return']}",
              flush=True)
    others = {}
    for sc in args.scenarios:  # the preset's num_envs (512)
        rnd = vmas_random_rate(512, seconds, sc, 100)
        tr = train_rate(f"vmas_{sc}", vmas_steps, [f"checkpoint_every={vmas_steps}"], f"vmas_{sc}")
        tr["random_steps_per_s"], tr["ratio_to_random"] = rnd, tr["steps_per_s"] / rnd
        others[sc] = tr
        print(f"vmas {sc}: train {tr['steps_per_s']:,.0f}/s, random {rnd:,.0f}/s, return {tr['eval_return']}",
              flush=True)
    mpe_random = mpe2_random_rate(seconds)
    mpe = train_rate("simple_spread", mpe_steps, [f"eval_every={mpe_steps}", "eval_episodes=8",
                                                  f"checkpoint_every={mpe_steps}"], "mpe2_default")
    log = (RUNS / "mpe2_default.log").read_text() if (RUNS / "mpe2_default.log").exists() else ""
    mpe["backend"] = next((ln.split(":", 1)[1].strip() for ln in reversed(log.splitlines())
                           if ln.startswith("env backend:")), "?")  # the log is appended to: its last run
    mpe["random_steps_per_s"] = mpe_random
    mpe["ratio_to_random"] = mpe["steps_per_s"] / mpe_random
    best = max(vmas_rows.values(), key=lambda r: r["steps_per_s"])
    report = {"meta": {"command": "python scripts/bench.py speed" + (" --quick" if args.quick else ""),
                       "date": time.strftime("%Y-%m-%d %H:%M:%S"), "load_before": load_before, **machine()},
              "vmas_simple_spread": vmas_rows, "vmas_others": others, "mpe2_simple_spread": mpe,
              "vmas_over_mpe2_training": best["steps_per_s"] / mpe["steps_per_s"]}
    md = ["# Training speed: VMAS (torch end to end) and mpe2", "",
          f"`{report['meta']['command']}`, {report['meta']['date']}, {os.cpu_count()} CPUs, load average "
          f"{load_before} before / {report['meta']['loadavg_at_end'][0]} after"
          + (": the machine was otherwise idle." if load_before < 1.0 else  # (the load after includes this run's)
             ": the machine was shared with other jobs, so absolute rates are low and noisy; the ratios (measured "
             "side by side in this run) are what to read."),
          "", "## MAPPO on VMAS simple_spread (3 agents, 25 steps, CPU; training with the default threads=0: every "
          f"core for VMAS, {os.cpu_count()} here; the random-action rate with one thread, as two do not help it)", "",
          "| num_envs | env steps | train steps/s (whole process) | loop SPS | VMAS random steps/s | ratio "
          "| peak RSS MB "
          "| eval return (64 ep.) |", "|---|---|---|---|---|---|---|---|"]
    for E, r in vmas_rows.items():
        md.append(f"| {E} | {r['env_steps']:,} | {r['steps_per_s']:,.0f} | {r['loop_sps']:,.0f} | "
                  f"{r['random_steps_per_s']:,.0f} | {r['ratio_to_random']:.2f} | {r['peak_rss_mb']} | "
                  f"{r['eval_return']:.1f} |")
    md += ["", "Each run uses the preset `configs/preset/vmas_simple_spread_mappo.yaml` (lr 1e-4, 4 epochs of one "
           "minibatch) with the num_envs of its row. Random actions score about -437 on this scale (summed over the "
           "3 agents). 10M env steps per setting did not fit the time of this run.", "",
           "## MAPPO on other VMAS scenarios (their presets: num_envs=512)", "",
           "| scenario | env steps | train steps/s | VMAS random steps/s (max_steps 100) | ratio | peak RSS MB "
           "| eval return |", "|---|---|---|---|---|---|---|"]
    md += [f"| {sc} | {r['env_steps']:,} | {r['steps_per_s']:,.0f} | {r['random_steps_per_s']:,.0f} | "
           f"{r['ratio_to_random']:.2f} | {r['peak_rss_mb']} | {r['eval_return']:.2f} |" for sc, r in others.items()]
    md += ["",
           "## mpe2 simple_spread (PettingZoo), MAPPO with the default env.backend=auto", "",
           "| env steps | train steps/s | mpe2 single-process random steps/s | ratio | backend chosen |",
           "|---|---|---|---|---|",
           f"| {mpe['env_steps']:,} | {mpe['steps_per_s']:,.0f} | {mpe_random:,.0f} | {mpe['ratio_to_random']:.2f} | "
           f"{mpe['backend']} |", "",
           f"VMAS MAPPO (best num_envs) / mpe2 MAPPO training rate: {report['vmas_over_mpe2_training']:.1f}x.", ""]
    write("speed", report, "\n".join(md))
    return report
